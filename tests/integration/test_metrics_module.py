"""metrics module: request budget, normalisation, history without duplicates, check mode."""
import sqlite3
import time

from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone, metrics
from lab.modrun import run_module
from lab.shop import SCALED_SHOP as TEMPLATE, plan_of

GIB = 1024 ** 3


def test_metrics_budget_normalisation_and_history(pvesim, pve_conn, tmp_path):
    plan = plan_of(TEMPLATE)
    run_module(linked_clone, dict(pve_conn, plan=plan, state='started'))
    vms = dict((vm.name, vm) for vm in pvesim.pve.vms if vm.name and vm.name.startswith('shop-'))
    end = int(time.time()) // 60 * 60
    pvesim.pve.rrd_now = end + 30
    for name, vm in vms.items():
        pts = [{'time': end - 60 * (9 - i), 'cpu': 0.5, 'maxcpu': 2, 'mem': GIB, 'maxmem': 2 * GIB,
                'netin': 25e6, 'netout': 1e6} for i in range(10)]
        pvesim.pve.inject_rrd(vm.vmid, pts)
    history = str(tmp_path / 'hist' / 'h.sqlite')
    mark = pvesim.mark()
    first = run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    sent = pvesim.requests(mark)
    assert len(sent) <= len(vms) + 5 and first['requests'] == len(vms) + 1
    assert sum(1 for r in sent if r[1].endswith('/rrddata')) == len(vms)   # the request log has no query strings
    assert pvesim.writes(mark) == []
    (svc,) = first['services']
    assert svc['instances'] == 2 and svc['cpu'] == 0.5 and svc['mem'] == 0.5
    assert svc['net'] == 0.25  # 25 MB/s = 200 Mbit/s of the 800 Mbit/s high
    assert svc['shadow']['name'] == 'shop-web-shadow'
    assert first['appended'] == 3 * 10 * 6 and not first['changed']
    db = sqlite3.connect(history)
    count = db.execute('select count(*) from points').fetchone()[0]
    # The same hour again: nothing new.
    again = run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    assert again['appended'] == 0
    assert db.execute('select count(*) from points').fetchone()[0] == count
    # A new minute: only its points are added; the earlier ones survive.
    pvesim.pve.rrd_now = end + 90
    for name, vm in vms.items():
        pvesim.pve.inject_rrd(vm.vmid, [{'time': end - 60 * (9 - i), 'cpu': 0.5, 'maxcpu': 2, 'mem': GIB,
                                         'maxmem': 2 * GIB, 'netin': 25e6, 'netout': 1e6} for i in range(11)])
    third = run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    assert third['appended'] == 3 * 6
    assert db.execute('select count(*) from points').fetchone()[0] == count + 18
    # Check mode reads PVE, writes neither PVE nor the history.
    mark = pvesim.mark()
    dry = run_module(metrics, dict(pve_conn, templates=['shop'], history_path=str(tmp_path / 'dry.sqlite')),
                     check_mode=True)
    assert dry['appended'] == 0 and pvesim.writes(mark) == []
    assert not (tmp_path / 'dry.sqlite').exists()

"""The scale module in check mode with several services scaling out: each placement read is made once per run.

Every acting decision places its new instances (core/vm.py resolve_placements reads /storage, the node capacities
and the golden template's config). Check mode changes nothing, so all decisions read the same cluster: a reconcile
of thousands of VMs whose services scale together must not pay those reads per service (issue 15's benchmark:
<= 10 PVE requests for a reconcile of 5,000 VMs with the prometheus history backend).
"""
import collections
import re

from ansible_collections.shadownet.proxmox.plugins.modules import forecast, scale
from lab.modrun import run_module
from lab.shop import CACHE, DB, RISING, build, plan_of, series, shop_template

SERVICES = [dict(CACHE, instances=2), dict(DB, instances=2)]
TEMPLATE = shop_template(services=shop_template()['services'] + SERVICES,
                         scaling={'instances': {'min': 1, 'max': 4}, 'cooldown': {'up': '3m', 'down': '10m'}})


def shape(path):
    path = path.split('?')[0].replace('/api2/json', '')
    return re.sub(r'/qemu/\d+', '/qemu/{vmid}', re.sub(r'/nodes/pve\d+', '/nodes/{node}', path))


def test_check_mode_reads_the_placement_inputs_once_for_all_decisions(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    vms = build(pvesim, pve_conn, plan)
    for name, vm in vms.items():
        if not name.endswith('-shadow'):
            pvesim.pve.inject_rrd(vm.vmid, series(RISING, cores=vm.config.get('cores', 2)))
    decisions = run_module(forecast, dict(pve_conn, plans={'shop': plan}), check_mode=True)['decisions']
    acting = [d for d in decisions if d['action'] == 'scale_up' and d['act']]
    assert len(acting) == 3, [d['line'] for d in decisions]
    mark = pvesim.mark()
    result = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=decisions), check_mode=True)
    assert [r['created'] for r in result['results']] == [['shop-web-3'], ['shop-cache-3'], ['shop-db-3']]
    requests = pvesim.requests(mark)
    assert not [r for r in requests if r[0] != 'GET']
    reads = collections.Counter(shape(p) for m, p, b in requests)
    assert reads['/storage'] == 1, reads
    assert reads['/cluster/resources'] == 2, reads  # the VM listing and the node capacities
    assert reads['/nodes/{node}/qemu/{vmid}/config'] <= 3, reads  # the golden template's copies, once each
    assert sum(reads.values()) <= 10, reads

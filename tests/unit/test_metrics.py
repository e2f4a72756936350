"""module_utils/metrics: classification by tags, normalisation, history keys, plans option."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from lab.rrd import END, rows

RES = [
    {'type': 'qemu', 'vmid': 101, 'name': 'shop-web-1', 'node': 'pve1', 'tags': 'shadownet;sn-shop;sn-web;sn-primary',
     'maxcpu': 2, 'maxmem': 2 * 1024 ** 3, 'status': 'running'},
    {'type': 'qemu', 'vmid': 103, 'name': 'shop-web-shadow', 'node': 'pve3',
     'tags': 'shadownet;sn-shop;sn-web;sn-shadow', 'maxcpu': 1, 'maxmem': 1024 ** 3},
    {'type': 'qemu', 'vmid': 104, 'name': 'api-api-1', 'node': 'pve1', 'tags': 'shadownet;sn-api;sn-primary'},
    {'type': 'qemu', 'vmid': 105, 'name': 'other', 'node': 'pve1', 'tags': 'sn-shop;sn-web;sn-primary'},
    {'type': 'qemu', 'vmid': 9000, 'name': 'golden', 'node': 'pve1', 'template': 1,
     'tags': 'shadownet;sn-shop;sn-web;sn-primary'},
    {'type': 'lxc', 'vmid': 200, 'name': 'ct', 'node': 'pve1', 'tags': 'shadownet;sn-shop;sn-web;sn-primary'},
]


def test_managed_vms_by_tags_only():
    vms = metrics_utils.managed_vms(RES, ['shop', 'api'])
    assert [(v['name'], v['service'], v['role']) for v in vms] == [
        ('api-api-1', 'api', 'primary'), ('shop-web-1', 'web', 'primary'), ('shop-web-shadow', 'web', 'shadow')]


def test_normalise_point_to_capacity():
    p = metrics_utils.normalise_point({'time': 120, 'cpu': 0.5, 'mem': 1024 ** 3, 'netin': 12.5e6, 'netout': 1e6},
                                      maxcpu=4, maxmem=2 * 1024 ** 3, net_high_bps=200e6)
    assert p['cpu'] == 0.5 and p['cpu_cores'] == 2.0
    assert p['mem'] == 0.5 and p['mem_mib'] == 1024
    assert p['netin_bps'] == 100e6 and p['netout_bps'] == 8e6
    assert p['net'] == 0.5
    gap = metrics_utils.normalise_point({'time': 180})
    assert gap['cpu'] is None and gap['net'] is None and gap['mem'] is None


def test_point_capacity_wins_over_resources():
    p = metrics_utils.normalise_point({'time': 0, 'cpu': 0.25, 'maxcpu': 8, 'mem': 0, 'maxmem': 1024}, maxcpu=2, maxmem=4096)
    assert p['cpu_cores'] == 2.0 and p['mem'] == 0.0


def test_history_points_and_keys():
    vm = {'template': 'shop', 'service': 'web', 'name': 'shop-web-1'}
    pts = metrics_utils.history_points(vm, [metrics_utils.normalise_point({'time': 60, 'cpu': 0.1, 'maxcpu': 2}), {'time': 120}])
    assert pts == [('shop/web/shop-web-1/cpu', 60, 0.1), ('shop/web/shop-web-1/cpu_cores', 60, 0.2)]


def test_plans_option_shapes():
    plan = {'plan_version': 1, 'template': 'shop', 'scaling': []}
    assert metrics_utils.plans_from_option(plan) == {'shop': plan}
    assert metrics_utils.plans_from_option({'shop': plan}) == {'shop': plan}
    assert metrics_utils.plans_from_option([plan]) == {'shop': plan}
    with pytest.raises(ValueError):
        metrics_utils.plans_from_option({'shop': 'nope'})


def test_summarise_groups_primaries_and_shadow():
    vms = metrics_utils.managed_vms(RES, ['shop'])
    for vm in vms:
        vm['points'] = [metrics_utils.normalise_point({'time': 60, 'cpu': 0.4 if vm['role'] == 'primary' else 0.8,
                                                       'mem': 1024 ** 3}, vm['maxcpu'], vm['maxmem'])]
    (svc,) = metrics_utils.summarise(vms)
    assert svc['instances'] == 1 and svc['cpu'] == 0.4 and svc['mem'] == 0.5
    assert svc['shadow']['name'] == 'shop-web-shadow' and svc['shadow']['cpu'] == 0.8


# ----------------------------------------------------------------------- rrddata shapes (pve-cluster RRD.pm)


def test_merge_pve9_day_holds_the_hour():
    day, hour = rows(60, 1440), rows(60, 60)
    fine, filled = metrics_utils.merge_rrd([day])
    assert len(fine) == 1440 and filled == [] and not metrics_utils.needs_coarse_check(day)
    fine2, filled2 = metrics_utils.merge_rrd([day, hour])
    assert fine2 == fine and filled2 == []


def test_merge_pve8_spreads_half_hours_where_no_minute_is_known():
    day = rows(1800, 70, value=lambda t: 0.2)
    hour = rows(60, 70, value=lambda t: 0.7, gaps=(END,))  # PVE 8 keeps the empty newest row
    assert metrics_utils.needs_coarse_check(day) and not metrics_utils.needs_coarse_check(hour)
    fine, filled = metrics_utils.merge_rrd([day, hour])
    assert len(fine) == 70 and fine[-1] == {'time': END}
    assert all(p['time'] % 60 == 0 and p['cpu'] == 0.2 for p in filled)
    # Minutes with a one-minute value keep it; the gap row (no data) is filled from its half-hour.
    known = set(p['time'] for p in fine if 'cpu' in p)
    assert not known & set(p['time'] for p in filled) and END in set(p['time'] for p in filled)
    # Each half-hour row covers the 30 minutes up to its label: 70 x 30 minutes less the 69 known minutes.
    assert len(filled) == 70 * 30 - 69 and filled[0]['time'] == END - 70 * 1800 + 60


def test_merge_pve9_answer_joining_an_old_pve8_file():
    """PVE 9's first day after the upgrade: old half-hour rows up to the old file's last update, then minutes."""
    old = rows(1800, 4, end=END - 3600)
    new = rows(60, 60, value=lambda t: 0.9)
    fine, filled = metrics_utils.merge_rrd([old + new])
    assert len(fine) == 60 and all(p['cpu'] == 0.9 for p in fine)
    assert len(filled) == 4 * 30 and all(p['cpu'] == 0.5 for p in filled)


def test_filled_points_go_to_their_own_history_append():
    vm = dict(template='shop', service='web', name='shop-web-1')
    pts = [metrics_utils.normalise_point({'time': 60, 'cpu': 0.1, 'maxcpu': 2}),
           dict(metrics_utils.normalise_point({'time': 120, 'cpu': 0.2, 'maxcpu': 2}), filled=True)]
    assert [t[1] for t in metrics_utils.history_points(vm, pts)] == [60, 60]
    assert [t[1] for t in metrics_utils.history_points(vm, pts, filled=True)] == [120, 120]

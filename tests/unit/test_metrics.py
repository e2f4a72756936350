"""module_utils/metrics: classification by tags, normalisation, history keys, plans option."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import metrics as m

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
    vms = m.managed_vms(RES, ['shop', 'api'])
    assert [(v['name'], v['service'], v['role']) for v in vms] == [
        ('api-api-1', 'api', 'primary'), ('shop-web-1', 'web', 'primary'), ('shop-web-shadow', 'web', 'shadow')]


def test_normalise_point_to_capacity():
    p = m.normalise_point({'time': 120, 'cpu': 0.5, 'mem': 1024 ** 3, 'netin': 12.5e6, 'netout': 1e6},
                          maxcpu=4, maxmem=2 * 1024 ** 3, net_high_bps=200e6)
    assert p['cpu'] == 0.5 and p['cpu_cores'] == 2.0
    assert p['mem'] == 0.5 and p['mem_mib'] == 1024
    assert p['netin_bps'] == 100e6 and p['netout_bps'] == 8e6
    assert p['net'] == 0.5
    gap = m.normalise_point({'time': 180})
    assert gap['cpu'] is None and gap['net'] is None and gap['mem'] is None


def test_point_capacity_wins_over_resources():
    p = m.normalise_point({'time': 0, 'cpu': 0.25, 'maxcpu': 8, 'mem': 0, 'maxmem': 1024}, maxcpu=2, maxmem=4096)
    assert p['cpu_cores'] == 2.0 and p['mem'] == 0.0


def test_history_points_and_keys():
    vm = {'template': 'shop', 'service': 'web', 'name': 'shop-web-1'}
    pts = m.history_points(vm, [m.normalise_point({'time': 60, 'cpu': 0.1, 'maxcpu': 2}), {'time': 120}])
    assert pts == [('shop/web/shop-web-1/cpu', 60, 0.1), ('shop/web/shop-web-1/cpu_cores', 60, 0.2)]


def test_plans_option_shapes():
    plan = {'plan_version': 1, 'template': 'shop', 'scaling': []}
    assert m.plans_from_option(plan) == {'shop': plan}
    assert m.plans_from_option({'shop': plan}) == {'shop': plan}
    assert m.plans_from_option([plan]) == {'shop': plan}
    with pytest.raises(ValueError):
        m.plans_from_option({'shop': 'nope'})


def test_summarise_groups_primaries_and_shadow():
    vms = m.managed_vms(RES, ['shop'])
    for vm in vms:
        vm['points'] = [m.normalise_point({'time': 60, 'cpu': 0.4 if vm['role'] == 'primary' else 0.8,
                                           'mem': 1024 ** 3}, vm['maxcpu'], vm['maxmem'])]
    (svc,) = m.summarise(vms)
    assert svc['instances'] == 1 and svc['cpu'] == 0.4 and svc['mem'] == 0.5
    assert svc['shadow']['name'] == 'shop-web-shadow' and svc['shadow']['cpu'] == 0.8

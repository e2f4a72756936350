"""linked_clone with a whole plan: concurrent clones, placement, idempotence, check mode, pruning."""
import copy

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import ModuleFailed, run_module

TEMPLATE = {
    'name': 'shop',
    'nodes': ['pve1', 'pve2', 'pve3'],
    'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/24',
                  'gateway': '10.10.0.1'}],
    'services': [
        {'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048, 'networks': ['front'],
         'vip': '10.10.0.100/24', 'critical': True},
        {'name': 'cache', 'template': 9000, 'instances': 1, 'cores': 1, 'memory': 1024, 'networks': ['front'],
         'critical': False},
    ],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/var/lib/app']}},
}


def plan_of(template):
    return plan_from_template(copy.deepcopy(template))[1]


def managed(pvesim):
    return dict((vm.name, vm) for vm in pvesim.pve.vms if 'shadownet' in str(vm.config.get('tags', '')))


def test_plan_builds_primaries_then_shadows_and_converges(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    mark = pvesim.mark()
    dry = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary']), check_mode=True)
    assert dry['changed'] and len(dry['vms']) == 3 and all(r['created'] for r in dry['vms'])
    assert pvesim.writes(mark) == []
    first = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary'], state='started'))
    assert first['changed']
    shadows = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow'], state='started'))
    assert [r['name'] for r in shadows['vms']] == ['shop-web-shadow']
    vms = managed(pvesim)
    assert sorted(vms) == ['shop-cache-1', 'shop-web-1', 'shop-web-2', 'shop-web-shadow']
    assert vms['shop-web-1'].status == 'running'
    # The shadow is half a primary and on a node neither primary uses.
    assert int(vms['shop-web-shadow'].config['cores']) == 1
    assert vms['shop-web-shadow'].node not in (vms['shop-web-1'].node, vms['shop-web-2'].node)
    assert set(vms['shop-web-shadow'].config['tags'].split(';')) == {'shadownet', 'sn-shop', 'sn-web', 'sn-shadow'}
    mark = pvesim.mark()
    again = run_module(linked_clone, dict(pve_conn, plan=plan, state='started'))
    assert not again['changed']
    assert pvesim.writes(mark) == []


def test_plan_change_and_prune(pvesim, pve_conn):
    run_module(linked_clone, dict(pve_conn, plan=plan_of(TEMPLATE)))
    changed = copy.deepcopy(TEMPLATE)
    changed['services'][0]['instances'] = 3
    changed['services'][0]['cores'] = 4
    del changed['services'][1]
    result = run_module(linked_clone, dict(pve_conn, plan=plan_of(changed), prune=True))
    assert result['pruned'] == ['shop-cache-1']
    assert result['diff']['after']['shop-web-1']['cores'] == 4
    vms = managed(pvesim)
    assert sorted(vms) == ['shop-web-1', 'shop-web-2', 'shop-web-3', 'shop-web-shadow']
    assert int(vms['shop-web-3'].config['cores']) == 4
    assert not run_module(linked_clone, dict(pve_conn, plan=plan_of(changed), prune=True))['changed']


def test_prune_of_ha_managed_vms(pvesim, pve_conn, make_ha):
    # qemu-server vm_stop only queues the stop of an HA resource (a 'hastop' task that ends at once) and
    # destroy_vm refuses a running VM: the prune waits until the HA manager has stopped the VM.
    plan = plan_of(TEMPLATE)
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary'], state='started'))
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow'], state='started'))
    make_ha('shop', ('shop-web-1', 'shop-web-shadow'), ('shop-cache-1', 'shop-web-1'))
    pve = pvesim.pve
    cache = managed(pvesim)['shop-cache-1']
    assert 'vm:{0}'.format(cache.vmid) in pve.ha_resources and cache.status == 'running'
    changed = copy.deepcopy(TEMPLATE)
    del changed['services'][1]
    result = run_module(linked_clone, dict(pve_conn, plan=plan_of(changed), prune=True))
    assert result['pruned'] == ['shop-cache-1']
    assert sorted(managed(pvesim)) == ['shop-web-1', 'shop-web-2', 'shop-web-shadow']
    # destroy_vm with purge took it out of HA and out of its rule (HA/Config.pm delete_service_from_config).
    assert 'vm:{0}'.format(cache.vmid) not in pve.ha_resources
    web1 = managed(pvesim)['shop-web-1']
    assert pve.ha_rules['sn_shop_cache_1_anti']['resources'] == 'vm:{0}'.format(web1.vmid)
    assert pve.ha_dangling() == []
    mark = pvesim.mark()
    assert not run_module(linked_clone, dict(pve_conn, plan=plan_of(changed), prune=True))['changed']
    assert pvesim.writes(mark) == []


def test_offline_preferred_node_is_skipped(pvesim, pve_conn):
    pvesim.pve.set_node_offline('pve3')
    run_module(linked_clone, dict(pve_conn, plan=plan_of(TEMPLATE)))
    vms = managed(pvesim)
    assert all(vm.node != 'pve3' for vm in vms.values())
    assert len(vms) == 4


def test_offline_template_node_is_named(pvesim, pve_conn):
    pvesim.pve.set_node_offline('pve1')  # the golden template lives there
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, dict(pve_conn, plan=plan_of(TEMPLATE)))
    assert "node 'pve1' is offline" in info.value.result['msg']
    assert managed(pvesim) == {}
    assert [w for w in pvesim.writes(mark) if 'clone' not in w[1]] == []


def test_build_keeps_an_active_shadow_at_its_failover_size(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    run_module(linked_clone, dict(pve_conn, plan=plan))
    shadow = managed(pvesim)['shop-web-shadow']
    # What the failover module does when it activates the shadow: full size, marked active.
    shadow.config['cores'] = 2
    shadow.config['description'] = shadow.config['description'].replace('"index":1', '"failover":{"active":true},"index":1')
    result = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow']))
    assert not result['changed']
    assert int(shadow.config['cores']) == 2


def test_build_keeps_the_scaling_modules_last_action_tag(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    run_module(linked_clone, dict(pve_conn, plan=plan))
    web1 = managed(pvesim)['shop-web-1']
    web1.config['tags'] += ';sn-last.scale_up.1795490000'
    mark = pvesim.mark()
    assert not run_module(linked_clone, dict(pve_conn, plan=plan))['changed']
    assert pvesim.writes(mark) == []
    assert 'sn-last.scale_up.1795490000' in web1.config['tags']

"""linked_clone with a whole plan: concurrent clones, placement, idempotence, check mode, pruning."""
import copy

import pytest

from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import ModuleFailed, run_module
from lab.shop import CACHE, DB, SHOP, plan_of, shop_template

TEMPLATE = shop_template(services=SHOP['services'] + [CACHE])


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


# --------------------------------------------------------------------------------- placement without `nodes`

DEFAULT = {
    'name': 'shop',
    'networks': TEMPLATE['networks'],
    'services': [
        {'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048, 'networks': ['front'],
         'vip': '10.10.0.100/24', 'critical': True},
        {'name': 'app', 'template': 'alpine-3-golden', 'instances': 2, 'cores': 1, 'memory': 1024,
         'networks': ['front'], 'vip': '10.10.0.101/24', 'critical': True},
    ],
    'shadow': TEMPLATE['shadow'],
}
GiB = 1024 ** 3


def spread_ok(vms, service, instances=2):
    primaries = [vms['shop-%s-%d' % (service, i)].node for i in range(1, instances + 1)]
    return len(set(primaries)) == instances and vms['shop-%s-shadow' % service].node not in primaries


def test_default_placement_spreads_and_keeps_shadows_off_their_primaries(pvesim, pve_conn):
    plan = plan_of(DEFAULT)
    assert plan['nodes'] == [] and all(vm['node'] is None for vm in plan['vms'])
    mark = pvesim.mark()
    dry = run_module(linked_clone, dict(pve_conn, plan=plan), check_mode=True)
    assert pvesim.writes(mark) == []
    planned = dict((r['name'], r['node']) for r in dry['vms'])
    assert len({planned['shop-web-1'], planned['shop-web-2']}) == 2
    assert planned['shop-web-shadow'] not in (planned['shop-web-1'], planned['shop-web-2'])
    # The build as the role runs it: primaries, then shadows in a run of their own.
    first = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary'], state='started'))
    second = run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow'], state='started'))
    vms = managed(pvesim)
    assert spread_ok(vms, 'web') and spread_ok(vms, 'app')
    assert dict((n, vm.node) for n, vm in vms.items()) == planned  # check mode told the truth
    for res in first['vms'] + second['vms']:
        assert res['placement'].startswith(res['node'] + ': default placement'), res
    assert 'off ' in second['vms'][0]['placement']
    # app clones come from the alpine copy on their own node, web clones from the shared 9000 with target.
    copies = {'pve1': 9001, 'pve2': 9002, 'pve3': 9003}
    for name in ('shop-app-1', 'shop-app-2', 'shop-app-shadow'):
        vm = vms[name]
        assert any(p.endswith('/nodes/{0}/qemu/{1}/clone'.format(vm.node, copies[vm.node])) and 'target=' not in b
                   and 'name=' + name in b for m, p, b in pvesim.requests(mark)), name
    mark = pvesim.mark()
    again = run_module(linked_clone, dict(pve_conn, plan=plan, state='started'))
    assert not again['changed'] and pvesim.writes(mark) == []
    mark = pvesim.mark()
    assert not run_module(linked_clone, dict(pve_conn, plan=plan, state='started'), check_mode=True)['changed']
    assert pvesim.writes(mark) == []


def test_default_placement_keeps_off_a_node_the_golden_templates_storage_does_not_serve(pvesim, pve_conn):
    """The shared storage of debian-12-golden is configured for pve1 and pve2 only (`nodes` in storage.cfg). PVE
    would clone a VM to pve3 and then fail to start it there (the simulator does as PVE: pve-storage
    activate_storage); the default placement keeps web's VMs on pve1 and pve2 and every VM starts."""
    pvesim.pve.storages['ceph-vm']['nodes'] = 'pve1,pve2'
    result = run_module(linked_clone, dict(pve_conn, plan=plan_of(DEFAULT), state='started'))
    vms = managed(pvesim)
    web = dict((n, vm.node) for n, vm in vms.items() if n.startswith('shop-web'))
    assert sorted(web) == ['shop-web-1', 'shop-web-2', 'shop-web-shadow'] and 'pve3' not in web.values(), web
    assert all(vm.status == 'running' for vm in vms.values()), dict((n, vm.status) for n, vm in vms.items())
    placed = dict((r['name'], r['placement']) for r in result['vms'])
    assert "pve3 out of the golden template's reach" in placed['shop-web-1'], placed['shop-web-1']
    # the shadow cannot keep off both primaries' nodes on two nodes: it shares one, and the run says so
    assert "shop-web-shadow shares node" in str(result.get('warnings'))
    assert "no other online node in the golden template's reach can hold it" in str(result.get('warnings'))


def test_a_node_that_cannot_hold_the_vm_is_avoided(pvesim, pve_conn):
    # pve2 has 1.5 GiB left: no 2 GiB web primary and no 1 GiB app primary after the first fits there.
    pvesim.pve.set_node_size('pve2', maxmem=int(3.5 * GiB), mem=2 * GiB)
    result = run_module(linked_clone, dict(pve_conn, plan=plan_of(DEFAULT), state='started'))
    vms = managed(pvesim)
    on_pve2 = [n for n, vm in vms.items() if vm.node == 'pve2']
    assert sum(int(vms[n].config['memory']) for n in on_pve2) <= 1536, on_pve2
    assert 'shop-web-1' not in on_pve2 and 'shop-web-2' not in on_pve2
    web1 = next(r for r in result['vms'] if r['name'] == 'shop-web-1')
    assert 'pve2: needs 2048 MiB memory, 1536 MiB free' in web1['placement']
    assert spread_ok(vms, 'web')


def test_listed_node_without_room_warns_naming_vm_node_and_shortfall(pvesim, pve_conn):
    pvesim.pve.set_node_size('pve2', maxmem=3 * GiB, mem=2 * GiB)
    result = run_module(linked_clone, dict(pve_conn, plan=plan_of(TEMPLATE), roles=['primary']))
    assert managed(pvesim)['shop-web-2'].node != 'pve2'
    warnings = str(result.get('warnings'))
    assert 'listed node pve2 cannot hold shop-web-2 (needs 2048 MiB memory, 1024 MiB free)' in warnings, warnings


def test_no_node_can_hold_the_plan_fails_before_any_write(pvesim, pve_conn):
    for name in ('pve1', 'pve2', 'pve3'):
        pvesim.pve.set_node_size(name, maxmem=3 * GiB, mem=2 * GiB)
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, dict(pve_conn, plan=plan_of(DEFAULT), roles=['primary']))
    assert 'shop-web-1: no node can hold it (pve1: needs 2048 MiB memory, 1024 MiB free' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_listed_nodes_with_a_local_golden_template_are_refused_before_any_write(pvesim, pve_conn):
    from lab.pvesim import _add_template
    _add_template(pvesim.pve, {'vmid': 9100, 'name': 'local-golden', 'node': 'pve1', 'disk_gib': 2,
                               'config': {'cores': 1, 'memory': 512, 'scsi0': 'local-lvm:base-9100-disk-0'}})
    local = copy.deepcopy(TEMPLATE)
    local['services'][0]['template'] = 'local-golden'
    for check in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(linked_clone, dict(pve_conn, plan=plan_of(local), roles=['primary']), check_mode=check)
        msg = info.value.result['msg']
        assert "shop-web-2: golden template 'local-golden' (vmid 9100 on pve1) has disks on storage 'local-lvm'" in msg
        assert "can't clone VM to node 'pve2' (VM uses local storage)" in msg
        assert pvesim.writes(mark) == []
    assert managed(pvesim) == {}


def test_a_node_in_ha_maintenance_gets_no_new_vm(pvesim, pve_conn, proxmoxer_api):
    """pve-manager API2/Cluster.pm resources: node entries carry the CRM's node_status as `hastate`. A node in HA
    maintenance is being emptied by the CRM (pve-ha-manager Manager.pm next_state_started), so it has the most free
    memory; the default placement would fill it."""
    pve = pvesim.pve
    # an HA-managed guest on pve2, so PVE's CRM is active; the maintenance moves it off pve2
    guest = pve.add_vm(500, 'other-db', node='pve2', status='running', config={'memory': 1024, 'cores': 1})
    pve.ha_resources['vm:500'] = {'state': 'started'}
    pve._ha_vm_state('vm:500')
    for name in ('pve1', 'pve3'):
        pve.set_node_size(name, maxmem=64 * GiB, mem=24 * GiB)
    pve.set_node_maintenance('pve2')
    nodes = dict((n['node'], n.get('hastate')) for n in proxmoxer_api.cluster.resources.get(type='node'))
    assert nodes == {'pve1': 'online', 'pve2': 'maintenance', 'pve3': 'online'}
    assert guest.node != 'pve2' and pve.ha_migrations == [('vm:500', 'pve2', guest.node)]
    mark = pvesim.mark()
    dry = run_module(linked_clone, dict(pve_conn, plan=plan_of(DEFAULT)), check_mode=True)
    assert pvesim.writes(mark) == []
    assert 'pve2' not in [r['node'] for r in dry['vms']], dry['vms']
    assert all('skipped pve2 in HA maintenance mode' in r['placement'] for r in dry['vms']), dry['vms']
    run_module(linked_clone, dict(pve_conn, plan=plan_of(DEFAULT)))
    assert [n for n, vm in managed(pvesim).items() if vm.node == 'pve2'] == []
    # listed nodes: skipped too, with a warning naming the node
    listed = run_module(linked_clone, dict(pve_conn, plan=plan_of(TEMPLATE), roles=['primary']))
    assert [n for n, vm in managed(pvesim).items() if vm.node == 'pve2'] == []
    assert 'listed node pve2 is in HA maintenance mode' in str(listed.get('warnings')), listed.get('warnings')
    # out of maintenance: the CRM moves the guest back (maintenance_node), and pve2 takes VMs again
    pve.set_node_maintenance('pve2', enable=False)
    proxmoxer_api.cluster.resources.get(type='node')
    assert guest.node == 'pve2' and pve.ha_node_status['pve2'] == 'online'


def test_prune_reports_a_protected_vm_and_removes_a_paused_one(pvesim, pve_conn, proxmoxer_api):
    three = shop_template(services=SHOP['services'] + [CACHE, DB])
    run_module(linked_clone, dict(pve_conn, plan=plan_of(three), state='started'))
    vms = managed(pvesim)
    cache, db = vms['shop-cache-1'], vms['shop-db-1']
    cache.config['protection'] = 1
    proxmoxer_api.nodes(db.node).qemu(db.vmid).status.suspend.post()
    assert db.qmpstatus == 'paused'
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(linked_clone, dict(pve_conn, plan=plan_of(SHOP), prune=True), check_mode=check_mode)
        msg = info.value.result['msg']
        assert msg.startswith('1 of ') and "shop-cache-1: 'shop-cache-1' (vmid {0} on {1}) has protection " \
            "enabled".format(cache.vmid, cache.node) in msg, msg
        assert 'shop-db-1' in info.value.result['pruned'], info.value.result['pruned']
        writes = [(m, p) for m, p, b in pvesim.writes(mark)]
        if check_mode:
            assert writes == []
        else:
            assert not [w for w in writes if '/qemu/{0}'.format(cache.vmid) in w[1]], writes
    # the protected VM was not touched; the paused one was stopped and destroyed
    assert cache.status == 'running' and 'shop-cache-1' in managed(pvesim)
    assert 'shop-db-1' not in managed(pvesim)

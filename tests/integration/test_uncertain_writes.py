"""Writes whose outcome is uncertain: the connection dropped before PVE handled them, or after PVE carried them out
(the answer lost; tests/lab/pvesim_faults.py). Each is resolved by looking again: no duplicate VM, rule or resource,
no orphan, no half-applied SDN, and nothing sent twice that PVE had already done."""
import copy
import os
import re

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import ha_rule, linked_clone, shadow_refresh, vnet
from lab.modrun import ModuleFailed, run_module
from lab.playbook import ROOT, ansible_playbook, recap

CLONE = r'^nodes/[^/]+/qemu/9000/clone$'
FAULTS = ('lost', 'before')


def inject(pvesim, fault, method, path, times=1):
    if fault == 'lost':
        pvesim.pve.lose_answer(method, path, times=times)
    else:
        pvesim.pve.drop_request(method, path, times=times)


def sent(pvesim, method, path, mark=0):
    """Requests PVE handled (a request dropped before handling is not recorded, one whose answer was lost is)."""
    return [r for r in pvesim.requests(mark) if r[0] == method and re.search(path, r[1].split('/api2/json/', 1)[-1])]


def warned(result, text):
    """A warning of a module result (plain strings, or ansible-core 2.19's warning summaries) containing text."""
    return any(text in str(w) for w in result.get('warnings') or [])


def vms_named(pvesim, name):
    return [vm for vm in pvesim.pve.vms if vm.name == name]


def locked(pvesim):
    return [(vm.vmid, vm.name, vm.lock) for vm in pvesim.pve.vms if vm.lock]


def clone_args(pve_conn, **kwargs):
    out = dict(pve_conn, name='shop-web-1', template=9000, node='pve2', pool='shadownet', cores=2, memory=2048,
               nets=[{'bridge': 'vmbr0'}], tags=['shadownet', 'sn-shop', 'sn-web', 'sn-primary'])
    out.update(kwargs)
    return out


@pytest.fixture
def root_conn(pvesim, pve_conn):
    """root@pam itself (a password login): the only login PVE lets remove a locked VM (skiplock)."""
    conn = dict((k, v) for k, v in pve_conn.items() if not k.startswith('api_token'))
    conn.update(api_user='root@pam', api_password=pvesim.password)
    return conn


# ------------------------------------------------------------------------------------------- simulator


def test_simulator_carries_out_a_write_whose_answer_it_loses_and_drops_another_unhandled(pvesim, proxmoxer_api):
    requests = pytest.importorskip('requests')
    pve = pvesim.pve
    pve.add_vm(101, 'web', node='pve1')
    pve.lose_answer('POST', r'^cluster/ha/resources$')
    with pytest.raises(requests.exceptions.ConnectionError):
        proxmoxer_api.cluster.ha.resources.post(sid='vm:101', state='started')
    assert 'vm:101' in pve.ha_resources  # carried out
    pve.drop_request('POST', r'^nodes/pve1/qemu/101/clone$')
    mark = pvesim.mark()
    with pytest.raises(requests.exceptions.ConnectionError):
        proxmoxer_api.nodes('pve1').qemu(101).clone.post(newid=102, name='copy')
    assert pvesim.requests(mark) == [] and [vm.vmid for vm in pve.vms if vm.vmid == 102] == []
    pve.lose_answer('POST', r'^nodes/pve1/qemu/101/clone$')
    with pytest.raises(requests.exceptions.ConnectionError):
        proxmoxer_api.nodes('pve1').qemu(101).clone.post(newid=102, name='copy')
    assert [vm.name for vm in pve.vms if vm.vmid == 102] == ['copy']  # the task ran
    assert [t['type'] for t in pve.tasklog][-1] == 'qmclone'
    assert pve.fault_log == [('lost', 'POST', 'cluster/ha/resources'), ('before', 'POST', 'nodes/pve1/qemu/101/clone'),
                             ('lost', 'POST', 'nodes/pve1/qemu/101/clone')]
    pve.flaky_writes(1.0, lost_share=0.0, seed=1)
    with pytest.raises(requests.exceptions.ConnectionError):
        proxmoxer_api.cluster.ha.resources.post(sid='vm:102', state='started')
    assert proxmoxer_api.cluster.ha.resources.get()  # reads are left alone
    pve.flaky_writes(0)
    proxmoxer_api.cluster.ha.resources.post(sid='vm:102', state='started')
    assert sorted(pve.ha_resources) == ['vm:101', 'vm:102']


# ------------------------------------------------------------------------------------------------ clone


@pytest.mark.parametrize('fault', FAULTS)
def test_clone_with_uncertain_outcome_makes_exactly_one_vm(pvesim, pve_conn, fault):
    inject(pvesim, fault, 'POST', CLONE)
    result = run_module(linked_clone, clone_args(pve_conn, state='started'))
    assert result['created'] and result['changed']
    assert [vm.vmid for vm in vms_named(pvesim, 'shop-web-1')] == [result['vmid']]
    assert locked(pvesim) == []
    assert vms_named(pvesim, 'shop-web-1')[0].status == 'running'
    assert pvesim.pve.fault_log == [(fault, 'POST', 'nodes/pve1/qemu/9000/clone')]
    # Carried out: looked again and found, never sent twice. Dropped before: sent again once.
    assert len(sent(pvesim, 'POST', CLONE)) == 1
    mark = pvesim.mark()
    assert not run_module(linked_clone, clone_args(pve_conn, state='started'))['changed']
    assert pvesim.writes(mark) == []


def test_clone_task_killed_leaves_a_locked_vm_that_root_removes(pvesim, root_conn):
    pvesim.pve.kill_clone_task()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, clone_args(root_conn))
    assert 'unexpected status' in info.value.result['msg']
    assert vms_named(pvesim, 'shop-web-1') == [] and locked(pvesim) == []
    # One destroy, of a VM locked 'clone': PVE (and the simulator) refuse it without skiplock.
    assert len(sent(pvesim, 'DELETE', r'^nodes/[^/]+/qemu/\d+$')) == 1
    result = run_module(linked_clone, clone_args(root_conn))
    assert result['created'] and len(vms_named(pvesim, 'shop-web-1')) == 1


def test_clone_task_killed_with_a_token_says_how_to_remove_the_locked_vm(pvesim, pve_conn):
    pvesim.pve.kill_clone_task()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, clone_args(pve_conn))
    orphan = vms_named(pvesim, 'shop-web-1')
    assert len(orphan) == 1 and orphan[0].lock == 'clone'
    msg = info.value.result['msg']
    assert 'half-made clone' in msg and 'qm unlock {0}'.format(orphan[0].vmid) in msg
    # Never a destroy PVE would refuse (the lock) or one with skiplock a token may not give.
    assert sent(pvesim, 'DELETE', r'^nodes/[^/]+/qemu/\d+$') == []


def test_lost_clone_answer_of_a_killed_task_removes_the_orphan_and_clones_again(pvesim, root_conn):
    pvesim.pve.kill_clone_task()
    pvesim.pve.lose_answer('POST', CLONE)
    result = run_module(linked_clone, clone_args(root_conn))
    assert result['created']
    assert len(vms_named(pvesim, 'shop-web-1')) == 1 and locked(pvesim) == []
    assert len(sent(pvesim, 'POST', CLONE)) == 2
    assert warned(result, 'half-made clone'), result.get('warnings')


def test_clone_refused_for_a_lock_is_tried_once_more_only(pvesim, pve_conn):
    pvesim.pve.fail('POST', '/nodes/pve1/qemu/9000/clone', 500, 'VM is locked (suspended)', times=1)
    result = run_module(linked_clone, clone_args(pve_conn))
    assert result['created'] and warned(result, 'tried once more'), result.get('warnings')
    pvesim.pve.fail('POST', '/nodes/pve1/qemu/9000/clone', 500, 'VM is locked (suspended)', times=2)
    with pytest.raises(ModuleFailed):
        run_module(linked_clone, clone_args(pve_conn, name='shop-web-2'))
    assert vms_named(pvesim, 'shop-web-2') == []
    pvesim.pve.fail('POST', '/nodes/pve1/qemu/9000/clone', 500, 'boom', times=1)
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed):
        run_module(linked_clone, clone_args(pve_conn, name='shop-web-3'))
    assert len(sent(pvesim, 'POST', CLONE, mark)) == 1


# ---------------------------------------------------------------------------------------- config, start


@pytest.mark.parametrize('fault', FAULTS)
def test_config_update_with_uncertain_outcome_is_read_back(pvesim, pve_conn, fault):
    run_module(linked_clone, clone_args(pve_conn))
    inject(pvesim, fault, 'PUT', r'^nodes/[^/]+/qemu/\d+/config$')
    mark = pvesim.mark()
    result = run_module(linked_clone, clone_args(pve_conn, cores=4, memory=4096))
    assert result['changed'] and sorted(result['changes']) == ['cores', 'memory']
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert int(vm.config['cores']) == 4 and int(vm.config['memory']) == 4096
    assert len(sent(pvesim, 'PUT', r'/config$', mark)) == 1


@pytest.mark.parametrize('fault', FAULTS)
def test_start_with_uncertain_outcome_is_read_back(pvesim, pve_conn, fault):
    run_module(linked_clone, clone_args(pve_conn))
    inject(pvesim, fault, 'POST', r'/status/start$')
    mark = pvesim.mark()
    result = run_module(linked_clone, clone_args(pve_conn, state='started'))
    assert result['changed'] and vms_named(pvesim, 'shop-web-1')[0].status == 'running'
    assert len(sent(pvesim, 'POST', r'/status/start$', mark)) == 1


# ---------------------------------------------------------------------------------------- shadow_refresh

REFRESH_TEMPLATE = {
    'name': 'shop', 'nodes': ['pve1', 'pve2', 'pve3'],
    'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/24',
                  'gateway': '10.10.0.1'}],
    'services': [{'name': 'web', 'template': 'alpine-3-golden', 'instances': 1, 'cores': 2, 'memory': 2048,
                  'networks': ['front'], 'vip': '10.10.0.100/24', 'critical': True}],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'full', 'interval': '1h'}},
}


@pytest.mark.parametrize('fault', FAULTS)
def test_refresh_clone_with_uncertain_outcome_keeps_the_shadow(pvesim, pve_conn, fault):
    plan = plan_from_template(copy.deepcopy(REFRESH_TEMPLATE))[1]
    for role in ('primary', 'shadow'):
        run_module(linked_clone, dict(pve_conn, plan=plan, roles=[role], state='started'))
    primary, shadow = vms_named(pvesim, 'shop-web-1')[0], vms_named(pvesim, 'shop-web-shadow')[0]
    svmid = shadow.vmid
    path = r'^nodes/{0}/qemu/{1}/clone$'.format(primary.node, primary.vmid)
    inject(pvesim, fault, 'POST', path)
    result = run_module(shadow_refresh, dict(pve_conn, primary='shop-web-1', shadow='shop-web-shadow', timeout=120))
    assert result['changed']
    assert [vm.vmid for vm in vms_named(pvesim, 'shop-web-shadow')] == [svmid]
    assert locked(pvesim) == [] and primary.snapshots == {}
    assert len(sent(pvesim, 'POST', path)) == 1


# ------------------------------------------------------------------------------------------------- SDN

NETWORK = {'name': 'front', 'type': 'vnet', 'zone': 'shopk2x1', 'zone_type': 'simple', 'vnet': 'front9q0',
           'alias': 'shop-front', 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1'}
SDN_WRITES = [('POST', r'^cluster/sdn/lock$'), ('POST', r'^cluster/sdn/zones$'), ('POST', r'^cluster/sdn/vnets$'),
              ('POST', r'^cluster/sdn/vnets/front9q0/subnets$'), ('PUT', r'^cluster/sdn$')]


@pytest.mark.parametrize('fault', FAULTS)
@pytest.mark.parametrize('method,path', SDN_WRITES, ids=[p for m, p in SDN_WRITES])
def test_sdn_write_with_uncertain_outcome_is_resolved_in_the_same_run(pvesim, pve_conn, fault, method, path):
    inject(pvesim, fault, method, path)
    result = run_module(vnet, dict(pve_conn, networks=[dict(NETWORK)]))
    assert result['changed']
    pve = pvesim.pve
    assert pve.fault_log and pve.fault_log[0][0] == fault
    assert pve.sdn_lock is None and not pve.sdn_has_pending()
    assert list(pve.sdn_running['zones']) == ['shopk2x1'] and list(pve.sdn_running['vnets']) == ['front9q0']
    assert pve.sdn_running['subnets']['shopk2x1-10.10.0.0-24']['gateway'] == '10.10.0.1'
    if fault == 'lost' and method == 'POST' and path != r'^cluster/sdn/lock$':
        assert len(sent(pvesim, method, path)) == 1  # found by looking again, not created twice
    mark = pvesim.mark()
    assert not run_module(vnet, dict(pve_conn, networks=[dict(NETWORK)]))['changed']
    assert pvesim.writes(mark) == []


# -------------------------------------------------------------------------------------------------- HA

HA_RULES = [
    {'rule': 'sn_shop_web_1_anti', 'type': 'resource-affinity', 'resources': ['shop-web-1', 'shop-web-shadow'],
     'affinity': 'negative', 'nodes': None, 'strict': False,
     'comment': "shadownet shop: keep shop-web-shadow off shop-web-1's node"},
    {'rule': 'sn_shop_web_1_node', 'type': 'node-affinity', 'resources': ['shop-web-1'], 'affinity': None,
     'nodes': [{'node': 'pve1', 'priority': 1}], 'strict': False, 'comment': 'shadownet shop: shop-web-1 prefers pve1'},
]
# (method, path, how many such writes the run needs)
HA_WRITES = [('POST', r'^cluster/ha/resources$', 2), ('POST', r'^cluster/ha/rules$', 2),
             ('PUT', r'^cluster/ha/rules/sn_shop_web_1_node$', 1)]


@pytest.mark.parametrize('fault', FAULTS)
@pytest.mark.parametrize('method,path,needed', HA_WRITES, ids=[p for m, p, n in HA_WRITES])
def test_ha_write_with_uncertain_outcome_is_resolved_in_the_same_run(pvesim, pve_conn, fault, method, path, needed):
    pve = pvesim.pve
    pve.add_vm(101, 'shop-web-1', node='pve1')
    pve.add_vm(103, 'shop-web-shadow', node='pve3')
    rules = copy.deepcopy(HA_RULES)
    if method == 'PUT':
        run_module(ha_rule, dict(pve_conn, template='shop', rules=rules))
        rules[1]['nodes'] = [{'node': 'pve2', 'priority': 1}]
    mark = pvesim.mark()
    inject(pvesim, fault, method, path)
    result = run_module(ha_rule, dict(pve_conn, template='shop', rules=rules))
    assert result['changed'] and pve.fault_log[0][0] == fault
    assert sorted(pve.ha_resources) == ['vm:101', 'vm:103']
    assert sorted(pve.ha_rules) == ['sn_shop_web_1_anti', 'sn_shop_web_1_node']
    assert pve.ha_rules['sn_shop_web_1_node']['nodes'] == rules[1]['nodes'][0]['node'] + ':1'
    if fault == 'lost':
        assert len(sent(pvesim, method, path, mark)) == needed  # found by looking again, not written twice
    mark = pvesim.mark()
    assert not run_module(ha_rule, dict(pve_conn, template='shop', rules=rules))['changed']
    assert pvesim.writes(mark) == []


# ----------------------------------------------------------------------------------------- whole build


@pytest.mark.slow
def test_build_under_dropped_connections_converges_within_three_runs(pvesim):
    """site.yml while 30% of the writes are dropped, half before PVE handles them and half after it carried them
    out (a seeded sequence): within three runs the build is complete, and it is the same build as without faults."""
    pve = pvesim.pve
    pve.flaky_writes(0.3, lost_share=0.5, seed=12)
    hosts = os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml')
    runs = []
    for attempt in range(3):
        proc = ansible_playbook(['-i', hosts, 'site.yml'], sim=pvesim, timeout=900)
        runs.append(proc)
        if recap(proc)['failed'] == 0:
            break
    assert recap(runs[-1])['failed'] == 0, '\n\n'.join(p.stdout[-2500:] for p in runs)
    kinds = set(f[0] for f in pve.fault_log)
    assert kinds == {'before', 'lost'} and len(pve.fault_log) >= 5, pve.fault_log
    pve.flaky_writes(0)
    names = sorted(vm.name for vm in pve.vms if 'shadownet' in str(vm.config.get('tags', '')))
    assert names == ['shop-db-1', 'shop-db-2', 'shop-db-shadow', 'shop-web-1', 'shop-web-2', 'shop-web-shadow',
                     'shop-worker-1', 'shop-worker-2']
    assert locked(pvesim) == [] and all(vm.status == 'running' for vm in pve.vms if not vm.template)
    assert pve.sdn_lock is None and not pve.sdn_has_pending()
    managed = set('vm:{0}'.format(vm.vmid) for vm in pve.vms if not vm.template)
    assert set(pve.ha_resources) <= managed
    mark = pvesim.mark()
    again = ansible_playbook(['-i', hosts, 'site.yml'], sim=pvesim)
    assert recap(again)['changed'] == 0 and recap(again)['failed'] == 0, again.stdout[-3000:]
    assert pvesim.writes(mark) == []

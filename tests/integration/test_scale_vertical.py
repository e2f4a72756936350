"""Vertical scaling against the simulator's PVE rules for resizing: memory hot-plug's DIMM grid and minimum
(qemu-server Memory.pm), the node's CPUs (config_to_command), vCPU hot-plug (qemu_cpu_hotplug), the balloon
(update_vm_api) and a paused primary (pvestatd's QMP status)."""
import copy
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling_apply
from ansible_collections.shadownet.proxmox.plugins.modules import forecast, metrics, scale
from lab.modrun import ModuleFailed, run_module
from lab.shop import RISING, SCALED_SHOP, build, inject, plan_of

HOTPLUG = dict(hotplug='network,disk,cpu,memory', numa='1')


def vertical_plan(**scaling):
    template = copy.deepcopy(SCALED_SHOP)
    template['scaling'].update(scaling, mode='vertical')
    return plan_of(template)


def connect(pve_conn):
    def make_api():
        return api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                                token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                                ca_path=pve_conn['ca_path'])
    return make_api


def resize(make_api, plan, action='scale_up', **target):
    """Act on a vertical decision made now (after any recorded action)."""
    decision = {'template': plan['template'], 'service': 'web', 'action': action, 'act': True, 'reason': 'test',
                'basis_time': time.time() + 1, 'target': target}
    return scaling_apply.apply_decision(make_api(), make_api, plan, decision)


def test_memory_follows_the_dimm_grid_and_the_static_minimum(pvesim, pve_conn):
    """With memory hot-plug PVE runs 1024 MiB static memory plus 512 MiB DIMMs: a start with another size dies, a
    hot-add ends at the first DIMM step at or above the target, a hot-remove at or below it. The resize writes the
    size PVE applies, so a stopped primary starts again, both primaries agree, and a rerun writes nothing."""
    plan = vertical_plan()
    vms = build(pvesim, pve_conn, plan)
    web1, web2 = vms['shop-web-1'], vms['shop-web-2']
    for vm in (web1, web2):
        vm.config.update(HOTPLUG)
    make_api = connect(pve_conn)
    api = make_api()
    api.stop_vm(web1.node, web1.vmid)
    res = resize(make_api, plan, cores=2, memory=2200)
    assert res['applied'], res
    assert str(web1.config['memory']) == '2560' and str(web2.config['memory']) == '2560', res['resized']
    assert not web2.pending and [r['after']['memory'] for r in res['resized']] == [2560, 2560], res['resized']
    assert any('memory 2200 MiB rounded to 2560 MiB' in n for n in res['notes']), res['notes']
    api.start_vm(web1.node, web1.vmid)           # 2200 would die: must be aligned to 512 for hotplugging
    # The same target again: already in place as PVE applies it, nothing claimed or written.
    mark = pvesim.mark()
    again = resize(make_api, plan, cores=2, memory=2200)
    assert again['skipped'] == 'in_place' and not again['changed'] and pvesim.writes(mark) == [], again
    # Down to the plan's floor below the static memory: 1024, not 512 ("memory can't be lower than 1024 MB").
    api.stop_vm(web1.node, web1.vmid)
    down = resize(make_api, plan, action='scale_down', cores=2, memory=512)
    assert str(web1.config['memory']) == '1024' and str(web2.config['memory']) == '1024', down['resized']
    assert not web2.pending, web2.pending
    api.start_vm(web1.node, web1.vmid)           # 512 would die: minimum memory must be 1024MB


def test_cores_stop_at_the_nodes_cpus(pvesim, pve_conn, tmp_path):
    """PVE starts no VM with more sockets x cores than its node's CPUs: the decision caps the cores there and says
    so, and the primaries start with the new size."""
    # 62% of 2 cores against high 35%: about 4 cores wanted (max_cores 8), the nodes have 3 CPUs
    plan = vertical_plan(cpu={'high': 0.35, 'low': 0.1, 'duration': '5m'})
    vms = build(pvesim, pve_conn, plan)
    for node in list(pvesim.pve.nodes):
        pvesim.pve.set_node_size(node, maxcpu=3)
    inject(pvesim, vms, RISING)
    history = str(tmp_path / 'h.sqlite')
    run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    decision = run_module(forecast, dict(pve_conn, plans={'shop': plan}, history_path=history))['decisions'][0]
    assert decision['action'] == 'scale_up' and decision['target']['cores'] == 3, decision['line']
    assert decision['capped_by']['cores'] == 3 and 'cores capped at 3, the CPUs of node' in decision['reason']
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=[decision]))
    assert s['results'][0]['applied'], s
    api = connect(pve_conn)()
    for name in ('shop-web-1', 'shop-web-2'):
        vm = vms[name]
        assert int(vm.pending['cores']) == 3, vm.pending
        api.stop_vm(vm.node, vm.vmid)
        api.start_vm(vm.node, vm.vmid)           # more than 3 would die: MAX 3 vcpus allowed per VM on this node
        assert int(vm.config['cores']) == 3


def test_vcpus_are_not_hot_plugged_above_the_running_cores(pvesim, pve_conn):
    """qemu_cpu_hotplug counts against the running sockets x cores: a vcpus above it fails the whole PUT (400). The
    resize raises cores (pending) and removes vcpus, which hot-plugs up to the running cores at once."""
    plan = vertical_plan()
    vms = build(pvesim, pve_conn, plan)
    for vm in vms.values():
        if vm.name in ('shop-web-1', 'shop-web-2'):
            vm.config.update(HOTPLUG, cores='2', vcpus='1')
    res = resize(connect(pve_conn), plan, cores=4, memory=2048)
    web2 = vms['shop-web-2']
    assert res['applied'] and [r.get('deletes') for r in res['resized']] == [['vcpus'], ['vcpus']], res['resized']
    assert 'vcpus' not in web2.config and int(web2.config['cores']) == 2 and int(web2.pending['cores']) == 4
    assert sorted(res['restart_needed']) == ['shop-web-1', 'shop-web-2'], res


def test_the_balloon_follows_the_memory_down(pvesim, pve_conn):
    """update_vm_api refuses a memory below the balloon ("balloon value too large"): the resize lowers both."""
    plan = vertical_plan()
    vms = build(pvesim, pve_conn, plan)
    for name in ('shop-web-1', 'shop-web-2'):
        vms[name].config.update(balloon='2048')
    res = resize(connect(pve_conn), plan, action='scale_down', cores=2, memory=1536)
    assert res['applied'], res
    for name in ('shop-web-1', 'shop-web-2'):
        values = dict(vms[name].config, **vms[name].pending)
        assert (int(values['memory']), int(values['balloon'])) == (1536, 1536), values


def test_a_paused_primary_keeps_its_resize_pending(pvesim, pve_conn):
    """/cluster/resources lists a paused VM as paused (its QMP status); PVE keeps its resize pending as for any
    running VM, and the result says it needs a restart."""
    plan = vertical_plan()
    vms = build(pvesim, pve_conn, plan)
    web2 = vms['shop-web-2']
    api = connect(pve_conn)()
    api.run_task('POST', 'nodes/{0}/qemu/{1}/status/suspend'.format(web2.node, web2.vmid), timeout=30)
    pvesim.pve.statd_round()            # a while later: pvestatd has listed it paused
    listing = dict((r['name'], r['status']) for r in api.resources('vm'))
    assert listing['shop-web-2'] == 'paused', listing
    res = resize(connect(pve_conn), plan, cores=2, memory=3072)
    assert int(web2.pending['memory']) == 3072 and 'shop-web-2' in res['restart_needed'], res
    assert any(n.startswith('shop-web-2: memory 3072 MiB pending') for n in res['notes']), res['notes']


def test_a_max_cores_below_one_is_refused_by_name(pve_conn):
    plan = vertical_plan()
    with pytest.raises(ModuleFailed) as failed:
        run_module(forecast, dict(pve_conn, plans={'shop': plan}, max_cores=0))
    assert 'max_cores must be at least 1 (cores), got 0' in str(failed.value), failed.value

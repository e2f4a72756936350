"""shadownet.proxmox.linked_clone against the simulator (HTTPS, token, certificate verification on)."""
import urllib.parse

import pytest

from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import ModuleFailed, run_module


def vms_named(pvesim, name):
    return [vm for vm in pvesim.pve.vms if vm.name == name]


def args(pve_conn, **kwargs):
    out = dict(pve_conn)
    out.update(name='shop-web-1', template=9000, node='pve2', pool='shadownet', cores=2, memory=2048,
               nets=[{'bridge': 'vmbr0'}], tags=['shadownet', 'sn-shop', 'sn-web', 'sn-primary'])
    out.update(kwargs)
    return out


def test_clone_then_idempotent(pvesim, pve_conn):
    first = run_module(linked_clone, args(pve_conn))
    assert first['changed'] and first['created']
    vm = vms_named(pvesim, 'shop-web-1')
    assert len(vm) == 1 and vm[0].node == 'pve2'
    assert first['vmid'] == vm[0].vmid
    assert set(vm[0].config['tags'].split(';')) == {'shadownet', 'sn-shop', 'sn-web', 'sn-primary'}
    clones = [body for method, path, body in pvesim.requests() if path.endswith('/qemu/9000/clone')]
    assert len(clones) == 1 and 'full=0' in clones[0]  # a linked clone, not a full copy
    mark = pvesim.mark()
    second = run_module(linked_clone, args(pve_conn))
    assert not second['changed']
    assert pvesim.writes(mark) == []


def test_rerun_against_what_pve_reads_back_writes_nothing(pvesim, pve_conn):
    """PVE strips trailing whitespace from the description, sorts and lower-cases tags, re-prints NICs and types
    values (the simulator does as PVE): a rerun and a check-mode run still find nothing to change."""
    kwargs = dict(tags=['shadownet', 'sn-shop', 'sn-web', 'Owner.Shop'], meta={'v': 1, 'role': 'primary'},
                  nets=[{'bridge': 'vmbr0', 'firewall': True}], state='started')
    first = run_module(linked_clone, args(pve_conn, **kwargs))
    assert first['changed']
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert vm.config['tags'] == 'owner.shop;shadownet;sn-shop;sn-web'
    assert not vm.config['description'].endswith('\n')
    mark = pvesim.mark()
    for check_mode in (False, True):
        again = run_module(linked_clone, args(pve_conn, **kwargs), check_mode=check_mode)
        assert not again['changed'], again.get('changes')
    assert pvesim.writes(mark) == []


def test_check_mode_on_absent_vm_writes_nothing(pvesim, pve_conn):
    mark = pvesim.mark()
    result = run_module(linked_clone, args(pve_conn), check_mode=True)
    assert result['changed'] and result['created'] and result['vmid'] is None
    assert result['diff']['after']['cores'] == 2
    assert pvesim.writes(mark) == []
    assert vms_named(pvesim, 'shop-web-1') == []


def test_converge_keeps_mac_changes_tag_and_link(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn, nets=[{'bridge': 'vmbr0', 'tag': 10}]))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    mac = vm.config['net0'].split(',')[0].split('=')[1]
    result = run_module(linked_clone, args(pve_conn, cores=4, nets=[{'bridge': 'vmbr0'},
                                                                    {'bridge': 'vmbr0', 'link_down': True}]))
    assert result['changed'] and set(result['changes']) == {'cores', 'net0', 'net1'}
    assert result['diff']['before']['cores'] == 2 and result['diff']['after']['cores'] == 4
    assert vm.config['net0'] == 'virtio={0},bridge=vmbr0'.format(mac)  # tag gone, MAC kept
    assert 'link_down=1' in vm.config['net1']
    again = run_module(linked_clone, args(pve_conn, cores=4, nets=[{'bridge': 'vmbr0'},
                                                                   {'bridge': 'vmbr0', 'link_down': True}]))
    assert not again['changed']


def test_running_vm_reports_pending(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert vm.status == 'running'
    result = run_module(linked_clone, args(pve_conn, cores=3, tags=['shadownet', 'sn-shop', 'sn-web', 'sn-primary',
                                                                    'x'], state='started'))
    assert result['changed'] and result['pending'] == ['cores']   # tags apply at once ($fast_plug_option)
    warnings = [str(w.get('event', {}).get('msg') if isinstance(w, dict) else w) for w in result.get('warnings', [])]
    assert any('cores pending until the VM restarts' in w and 'needs a reboot' in w for w in warnings), warnings
    assert int(vm.config['cores']) == 2 and str(vm.pending['cores']) == '3' and 'x' in vm.config['tags']
    # The rerun compares with the pending value (GET config, as PVE answers it): nothing is rewritten.
    mark = pvesim.mark()
    again = run_module(linked_clone, args(pve_conn, cores=3, tags=['shadownet', 'sn-shop', 'sn-web', 'sn-primary',
                                                                   'x'], state='started'))
    assert not again['changed'] and pvesim.writes(mark) == []


def test_an_ha_vm_that_ha_cannot_start_fails_the_run(pvesim, pve_conn):
    """state=started on an HA resource only asks HA (a 'hastart' task, OK at once). When HA cannot start the VM it
    holds it in its error state, where every later start does nothing: the run fails with how to clear it, not
    'changed' on every run while the VM stays stopped. Cleared as the message says, the next run starts it."""
    first = run_module(linked_clone, args(pve_conn, state='stopped'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    sid = 'vm:{0}'.format(vm.vmid)
    pvesim.pve.ha_resources[sid] = {'state': 'started'}
    pvesim.pve._ha_vm_state(sid)
    vm.start_error = 'QEMU exited with code 1'
    for dummy in range(2):                   # the start that fails, then the start of a VM already in error
        with pytest.raises(ModuleFailed) as info:
            run_module(linked_clone, args(pve_conn, state='started'))
        msg = info.value.result['msg']
        assert "HA holds shop-web-1 (vm:{0}, on {1}) in its error state".format(first['vmid'], vm.node) in msg, msg
        assert 'ha-manager set {0} --state disabled'.format(sid) in msg and vm.status == 'stopped'
    vm.start_error = None
    for state in ('disabled', 'started'):
        pvesim.pve.ha_resources[sid]['state'] = state
        pvesim.pve._ha_vm_state(sid)
    assert run_module(linked_clone, args(pve_conn, state='started'))['changed'] and vm.status == 'running'


def test_an_ha_vm_is_followed_to_the_node_ha_starts_it_on(pvesim, pve_conn):
    """Its storage is not on its node (pve2) and pve3 is offline: HA's start fails there and the CRM relocates the
    VM to pve1, where it runs. The start waits for it there (the status read on pve2 fails once it has moved), and a
    rerun changes nothing."""
    run_module(linked_clone, args(pve_conn, state='stopped'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    sid = 'vm:{0}'.format(vm.vmid)
    pvesim.pve.ha_resources[sid] = {'state': 'started'}
    pvesim.pve._ha_vm_state(sid)
    pvesim.pve.storages['ceph-vm']['nodes'] = 'pve1'
    pvesim.pve.set_node_offline('pve3')
    result = run_module(linked_clone, args(pve_conn, state='started'))
    assert result['changed'] and (vm.node, vm.status) == ('pve1', 'running')
    assert pvesim.pve.ha_relocations == [(sid, 'pve2', 'pve1')]
    mark = pvesim.mark()
    assert not run_module(linked_clone, args(pve_conn, state='started'))['changed']
    assert pvesim.writes(mark) == []


def test_refuses_a_source_that_is_not_a_template(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn))
    vmid = vms_named(pvesim, 'shop-web-1')[0].vmid
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn, name='other', template=vmid))
    assert 'not a template' in info.value.result['msg']


def test_refused_clone_request_is_reported_and_rerun_converges(pvesim, pve_conn):
    # Refused before any task: nothing was made.
    pvesim.pve.fail('POST', '/nodes/pve1/qemu/9000/clone', 500, 'clone failed: storage local-lvm is full',
                    times=1)
    count = len(pvesim.pve.vms)
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn))
    assert 'storage local-lvm is full' in info.value.result['msg']
    assert len(pvesim.pve.vms) == count
    result = run_module(linked_clone, args(pve_conn))
    assert result['created']
    assert len(vms_named(pvesim, 'shop-web-1')) == 1


def test_failed_clone_task_leaves_no_orphan_and_rerun_converges(pvesim, pve_conn):
    # The clone TASK fails after its config was moved to the target node (qemu-server clone_vm: add_vm_to_pool
    # died): PVE leaves the half-made VM there, unlocked, its disks freed. The module removes it, then fails.
    pvesim.pve.fail_clone_pool_add(times=1)
    count = len(pvesim.pve.vms)
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn))     # node pve2: the shared golden template on pve1, target pve2
    assert "can't add VM" in info.value.result['msg'] and "to pool 'shadownet'" in info.value.result['msg']
    clone_post = next(b for m, p, b in pvesim.requests(mark) if m == 'POST' and p.endswith('/qemu/9000/clone'))
    vmid = int(clone_post.split('newid=')[1].split('&')[0])
    assert [(m, p) for m, p, b in pvesim.requests(mark) if m == 'DELETE'] == [
        ('DELETE', '/api2/json/nodes/pve2/qemu/{0}'.format(vmid))]       # the orphan, where PVE left it
    assert vms_named(pvesim, 'shop-web-1') == [] and len(pvesim.pve.vms) == count
    result = run_module(linked_clone, args(pve_conn))
    assert result['created'] and result['node'] == 'pve2'
    assert len(vms_named(pvesim, 'shop-web-1')) == 1
    assert not run_module(linked_clone, args(pve_conn))['changed']


def test_offline_node_named_and_nothing_written(pvesim, pve_conn):
    pvesim.pve.set_node_offline('pve3')
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn, node='pve3'))
    assert "'pve3'" in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_lost_quorum_stops_before_any_write(pvesim, pve_conn):
    pvesim.pve.lose_quorum()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn))
    assert 'quorum' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_absent_destroys(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn, state='started'))
    result = run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'))
    assert result['changed']
    assert vms_named(pvesim, 'shop-web-1') == []
    assert not run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'))['changed']


def test_paused_vm_is_stopped_before_it_is_destroyed(pvesim, pve_conn, proxmoxer_api):
    """/cluster/resources shows the QMP status (pve-manager pvestatd.pm update_qemu_status), so a paused VM is
    'paused', not 'running'; destroy_vm still refuses it ("VM <vmid> is running - destroy failed")."""
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    proxmoxer_api.nodes(vm.node).qemu(vm.vmid).status.suspend.post()
    assert vm.status == 'running' and vm.qmpstatus == 'paused'
    pvesim.pve.statd_round()            # a while later: pvestatd has listed it since
    listed = [r for r in proxmoxer_api.cluster.resources.get(type='vm') if r['vmid'] == vm.vmid]
    assert listed[0]['status'] == 'paused'
    # state=stopped stops it too; state=started does not try to start it again (PVE would refuse), it warns
    started = run_module(linked_clone, args(pve_conn, state='started'))
    assert not started['changed'] and 'is paused, not running' in str(started.get('warnings'))
    mark = pvesim.mark()
    result = run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'))
    assert result['changed'] and vms_named(pvesim, 'shop-web-1') == []
    writes = [(m, p) for m, p, b in pvesim.writes(mark)]
    # qemu-server vm_shutdown refuses a paused VM without forceStop and stops it with: the module always sends it
    assert writes == [('POST', '/api2/json/nodes/{0}/qemu/{1}/status/shutdown'.format(vm.node, vm.vmid)),
                      ('DELETE', '/api2/json/nodes/{0}/qemu/{1}'.format(vm.node, vm.vmid))], writes


def test_paused_vm_shutdown_without_force_is_refused_as_pve_does(pvesim, pve_conn, proxmoxer_api):
    """The simulator follows qemu-server vm_shutdown: "VM is paused - cannot shutdown" unless forceStop."""
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    status = proxmoxer_api.nodes(vm.node).qemu(vm.vmid).status
    status.suspend.post()
    with pytest.raises(Exception) as info:
        status.shutdown.post(timeout=5)
    assert 'VM is paused - cannot shutdown' in str(info.value)
    assert vm.status == 'running' and vm.qmpstatus == 'paused'


def _stop_writes(pvesim, mark, vm):
    return [(p.rsplit('/', 1)[-1], dict((k, v[0]) for k, v in urllib.parse.parse_qs(b).items()))
            for m, p, b in pvesim.writes(mark)
            if p.endswith('/qemu/{0}/status/shutdown'.format(vm.vmid)) or p.endswith('/qemu/{0}/status/stop'.format(
                vm.vmid))]


def test_stopped_shuts_the_guest_down_first(pvesim, pve_conn):
    """state=stopped asks the guest to shut down (qm shutdown --timeout 60 --forceStop 1), as an operator would,
    not a power cut; a guest that ignores ACPI is terminated by PVE after the timeout and named in a warning."""
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    mark = pvesim.mark()
    result = run_module(linked_clone, args(pve_conn, state='stopped'))
    assert result['changed'] and vm.status == 'stopped'
    sent = _stop_writes(pvesim, mark, vm)
    assert [w for w, b in sent] == ['shutdown'], sent
    assert str(sent[0][1].get('timeout')) == '60' and str(sent[0][1].get('forceStop')) in ('1', 'True', 'true'), sent
    assert 'did not shut down' not in str(result.get('warnings'))
    assert not run_module(linked_clone, args(pve_conn, state='stopped'))['changed']

    run_module(linked_clone, args(pve_conn, state='started'))
    vm.acpi = False                      # the guest ignores the power button
    result = run_module(linked_clone, args(pve_conn, state='stopped', shutdown_timeout=7))
    assert vm.status == 'stopped'
    assert "'shop-web-1' (vmid {0}) did not shut down within 7s: PVE terminated it".format(vm.vmid) in str(
        result.get('warnings')), result.get('warnings')

    run_module(linked_clone, args(pve_conn, state='started'))
    mark = pvesim.mark()
    run_module(linked_clone, args(pve_conn, state='stopped', shutdown_timeout=0))
    assert [w for w, b in _stop_writes(pvesim, mark, vm)] == ['stop'] and vm.status == 'stopped'


def test_negative_shutdown_timeout_is_refused_before_any_request(pvesim, pve_conn):
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn, state='stopped', shutdown_timeout=-5))
    assert 'shutdown_timeout must be 0 (stop at once) or more seconds (got -5)' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_protected_vm_is_refused_before_any_write(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    vm.config['protection'] = 1
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'), check_mode=check_mode)
        msg = info.value.result['msg']
        assert "'shop-web-1' (vmid {0} on pve2) has protection enabled".format(vm.vmid) in msg, msg
        assert '`qm set {0} --protection 0`'.format(vm.vmid) in msg and 'nothing was changed' in msg, msg
        assert pvesim.writes(mark) == []
    assert vm.status == 'running' and vms_named(pvesim, 'shop-web-1') == [vm]  # not stopped, not destroyed
    del vm.config['protection']
    assert run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'))['changed']


def test_a_clone_of_a_protected_template_warns_that_it_is_protected(pvesim, pve_conn):
    # qemu-server clone_vm copies every key it does not skip: protection too
    pvesim.pve.vm(9000).config['protection'] = 1
    result = run_module(linked_clone, args(pve_conn))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert str(vm.config.get('protection')) == '1'
    assert 'inherited protection from its golden template' in str(result.get('warnings')), result.get('warnings')
    assert '`qm set {0} --protection 0`'.format(vm.vmid) in str(result.get('warnings'))


def test_destroy_warnings_are_reported(pvesim, pve_conn):
    """qemu-server destroy_vm: a disk it cannot free is a log_warn ("Could not remove disk '<volid>', check
    manually"), the VM goes and the task ends WARNINGS."""
    run_module(linked_clone, args(pve_conn))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    sid = vm.config['scsi0'].split(':')[0]
    pvesim.pve.fail_vdisk_free(sid)
    result = run_module(linked_clone, dict(pve_conn, name='shop-web-1', state='absent'))
    assert result['changed'] and vms_named(pvesim, 'shop-web-1') == []
    warnings = str(result.get('warnings'))
    assert "destroy of vmid {0}: WARN: Could not remove disk '{1}".format(vm.vmid, sid) in warnings, warnings
    assert 'check manually' in warnings


def test_duplicate_names_are_an_error(pvesim, pve_conn):
    pvesim.pve.add_vm(500, 'dup', node='pve1')
    pvesim.pve.add_vm(501, 'dup', node='pve2')
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn, name='dup'))
    assert 'never guesses' in info.value.result['msg']


# ------------------------------------------------------------------ golden template layouts (clone_vm's target rules)

def clone_posts(pvesim, mark=0):
    return [(path, body) for method, path, body in pvesim.requests(mark) if method == 'POST' and path.endswith('/clone')]


def test_per_node_copy_is_cloned_on_its_node_without_target(pvesim, pve_conn):
    # alpine-3-golden is copied to each node on local-lvm (9001 pve1, 9002 pve2, 9003 pve3): by name, and by the
    # vmid of another node's copy, the clone is made from the copy on the node, without `target`.
    by_name = run_module(linked_clone, args(pve_conn, name='a1', template='alpine-3-golden', node='pve3', tags=None))
    by_vmid = run_module(linked_clone, args(pve_conn, name='a2', template=9001, node='pve2', tags=None))
    assert by_name['node'] == 'pve3' and by_vmid['node'] == 'pve2'
    posts = clone_posts(pvesim)
    assert [p for p, b in posts] == ['/api2/json/nodes/pve3/qemu/9003/clone', '/api2/json/nodes/pve2/qemu/9002/clone']
    assert all('target=' not in b for p, b in posts)
    assert vms_named(pvesim, 'a1')[0].node == 'pve3' and vms_named(pvesim, 'a2')[0].node == 'pve2'


def test_shared_template_is_cloned_with_target(pvesim, pve_conn):
    run_module(linked_clone, args(pve_conn, node='pve3'))
    (path, body), = clone_posts(pvesim)
    assert path.endswith('/nodes/pve1/qemu/9000/clone') and 'target=pve3' in body
    assert vms_named(pvesim, 'shop-web-1')[0].node == 'pve3'


def test_local_template_without_a_copy_is_refused_before_any_write(pvesim, pve_conn):
    from lab.pvesim import _add_template
    _add_template(pvesim.pve, {'vmid': 9100, 'name': 'local-golden', 'node': 'pve1', 'disk_gib': 2,
                               'config': {'cores': 1, 'memory': 512, 'scsi0': 'local-lvm:base-9100-disk-0'}})
    for check in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(linked_clone, args(pve_conn, template='local-golden', node='pve2'), check_mode=check)
        msg = info.value.result['msg']
        assert "'local-golden' (vmid 9100 on pve1)" in msg and "'local-lvm'" in msg and "node 'pve2'" in msg, msg
        assert pvesim.writes(mark) == []
    # On its own node it is a plain local clone.
    assert run_module(linked_clone, args(pve_conn, template='local-golden', node='pve1'))['created']


def test_simulator_refuses_target_clone_of_local_storage_vm_as_pve(pvesim, proxmoxer_api):
    from proxmoxer.core import ResourceException
    with pytest.raises(ResourceException) as info:
        proxmoxer_api.nodes('pve1').qemu(9001).clone.post(newid=500, name='x', target='pve2')
    assert info.value.status_code == 500
    assert "can't clone VM to node 'pve2' (VM uses local storage)" in str(info.value)
    with pytest.raises(ResourceException) as info:
        proxmoxer_api.nodes('pve1').qemu(9001).clone.post(newid=500, name='x', target='pve2', full=1)
    assert 'VM uses local storage' in str(info.value)
    assert not [vm for vm in pvesim.pve.vms if vm.vmid == 500]
    # Shared storage (rbd): allowed.
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=501, name='y', target='pve2')
    assert [vm.node for vm in pvesim.pve.vms if vm.vmid == 501] == ['pve2']


def test_memory_below_the_templates_balloon_lowers_the_balloon(pvesim, pve_conn):
    # clone_vm copies the template's balloon; update_vm_api refuses memory below it ("balloon value too large").
    pvesim.pve.vm(9000).config['balloon'] = 2048
    result = run_module(linked_clone, args(pve_conn, memory=1024))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert result['changed'] and int(vm.config['memory']) == 1024 and int(vm.config['balloon']) == 1024
    assert not run_module(linked_clone, args(pve_conn, memory=1024))['changed']


def test_a_vm_pve_forgot_the_name_of_on_a_dead_node_is_not_cloned_twice(pvesim, pve_conn):
    # pmxcfs drops a VM's status (name included) 5 minutes after its node went silent; /cluster/resources still
    # gives its config's tags. Cloning 'shop-web-1' again would make a second one when the node is back.
    run_module(linked_clone, args(pve_conn, state='started'))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    pvesim.pve.set_node_offline(vm.node)
    pvesim.pve.statd_expire_offline()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, args(pve_conn, node='pve1', state='started'))
    msg = info.value.result['msg']
    assert 'vmid {0} on {1}'.format(vm.vmid, vm.node) in msg and 'no second' in msg, msg
    assert pvesim.writes(mark) == [] and len(vms_named(pvesim, 'shop-web-1')) == 1
    # Another VM, with other tags, is still made.
    other = run_module(linked_clone, args(pve_conn, name='db-9', node='pve1', tags=['shadownet', 'sn-db']))
    assert other['created']


def test_a_vm_pvestatd_still_lists_as_vm_vmid_is_found_by_its_name(pvesim, pve_conn):
    # qemu-server vmstatus names a config without a name "VM <vmid>" (a clone's temporary config); pvestatd's
    # listing keeps that for up to 10 s after the clone named it. A rerun then must find the VM, not clone again.
    kwargs = dict(state='started')
    run_module(linked_clone, args(pve_conn, **kwargs))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    pve = pvesim.pve
    pve.statd_round()
    pve._statd[vm.vmid] = dict(pve._statd[vm.vmid], name='VM {0}'.format(vm.vmid))
    pve.statd_lag_reads = 1000                          # the stale name stays for the whole run
    mark = pvesim.mark()
    again = run_module(linked_clone, args(pve_conn, **kwargs))
    assert not again['changed'] and again['vmid'] == vm.vmid, again
    assert pvesim.writes(mark) == [] and len(vms_named(pvesim, 'shop-web-1')) == 1


HOOK = 'local:snippets/shadownet-hook.py'


def test_hookscript_with_a_token_builds_the_vm_and_names_the_fix(pvesim, pve_conn):
    """PVE refuses hookscript to every API token (qemu-server API2/Qemu.pm $check_vm_modify_config_perm): the rest of
    the VM is configured, the hookscript is left unset with a warning naming it and the fix, in check mode too."""
    pvesim.pve.add_snippet(HOOK)
    kwargs = dict(cores=3, memory=3072, nets=[{'bridge': 'vmbr0', 'tag': 10}], hookscript=HOOK, state='started')
    mark = pvesim.mark()
    planned = run_module(linked_clone, args(pve_conn, **kwargs), check_mode=True)
    assert pvesim.writes(mark) == [] and planned['created']
    assert 'hookscript not set to ' + HOOK in str(planned['warnings'])
    first = run_module(linked_clone, args(pve_conn, **kwargs))
    vm = vms_named(pvesim, 'shop-web-1')[0]
    assert (vm.config['cores'], int(vm.config['memory']), vm.status) == (3, 3072, 'running'), vm.config
    assert 'tag=10' in vm.config['net0'] and 'sn-web' in vm.config['tags']
    assert 'hookscript' not in vm.config
    assert not any('hookscript' in body for method, body in
                   ((m, b) for m, p, b in pvesim.requests(mark) if m != 'GET'))  # never sent: it would be refused
    warning = str(first['warnings'])
    assert 'hookscript not set to ' + HOOK in warning and 'only root@pam' in warning, warning
    assert 'qm set {0} --hookscript {1}'.format(vm.vmid, HOOK) in warning and 'api_password' in warning
    assert first['diff']['after'].get('hookscript', '') == ''
    # A rerun changes nothing and says it again (never silent); check mode agrees with the real run (no change:
    # this user never sends it) and gives the warning.
    mark = pvesim.mark()
    again = run_module(linked_clone, args(pve_conn, **kwargs))
    assert not again['changed'] and 'hookscript not set' in str(again['warnings'])
    checked = run_module(linked_clone, args(pve_conn, **kwargs), check_mode=True)
    assert not checked['changed'] and 'hookscript not set' in str(checked['warnings'])
    assert pvesim.writes(mark) == []
    # root@pam itself (a password login) sets it, in its own update.
    as_root = dict((k, v) for k, v in pve_conn.items() if not k.startswith('api_token'))
    as_root.update(api_user='root@pam', api_password=pvesim.pve.password)
    done = run_module(linked_clone, args(as_root, **kwargs))
    assert done['changed'] and vm.config['hookscript'] == HOOK and not done.get('warnings'), done.get('warnings')
    assert not run_module(linked_clone, args(pve_conn, **kwargs)).get('warnings')


def test_simulator_refuses_a_token_hookscript_as_pve_does(pvesim, proxmoxer_api):
    """qemu-server $check_vm_modify_config_perm: a plain die (500), and nothing of the PUT is written."""
    import proxmoxer
    pvesim.pve.add_snippet(HOOK)
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    with pytest.raises(proxmoxer.core.ResourceException) as err:
        node.qemu(100).config.put(cores=4, hookscript=HOOK)
    assert err.value.status_code == 500 and "only root can set 'hookscript' config" in str(err.value)
    assert 'hookscript' not in node.qemu(100).config.get() and node.qemu(100).config.get().get('cores') != 4

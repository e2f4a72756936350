"""placement.py: capacity placement with reasons, and the clone routes PVE's clone_vm allows."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import placement as placement_utils

GiB = 1024 ** 3


def node(name, maxmem_gib=64, mem_gib=2, maxcpu=16, cpu=0.02, status='online', hastate=None):
    item = {'type': 'node', 'node': name, 'status': status}
    if hastate:
        item['hastate'] = hastate
    if status == 'online':
        item.update(maxmem=maxmem_gib * GiB, mem=mem_gib * GiB, maxcpu=maxcpu, cpu=cpu)
    return item


def caps(*items, vms=(), plan_names=()):
    return placement_utils.node_capacities(list(items), list(vms), plan_names)


def primary(name, memory=2048, vcpus=2, listed=(), group='web', **extra):
    return dict(name=name, memory=memory, vcpus=vcpus, group=group, group_label='web primaries', listed=list(listed),
                avoid_vms=[], **extra)


def shadow(name, of, memory=512, vcpus=1, listed=()):
    return dict(name=name, memory=memory, vcpus=vcpus, group='web-shadow', listed=list(listed), avoid_vms=list(of))


THREE = caps(node('pve1'), node('pve2'), node('pve3'))


def test_default_spreads_primaries_and_keeps_the_shadow_off_them():
    reqs = [primary('web-1'), primary('web-2'), shadow('web-shadow', ['web-1', 'web-2'])]
    out = placement_utils.place(reqs, THREE)
    nodes = [out[r['name']]['node'] for r in reqs]
    assert len(set(nodes[:2])) == 2
    assert nodes[2] not in nodes[:2]
    assert all(out[r['name']]['error'] is None and out[r['name']]['warnings'] == [] for r in reqs)
    assert 'default placement' in out['web-1']['reason'] and 'free after it' in out['web-1']['reason']
    assert 'off ' in out['web-shadow']['reason'] and 'web-1' in out['web-shadow']['reason']
    # Deterministic: the same inputs give the same answer.
    assert placement_utils.place(reqs, THREE) == out


def test_more_primaries_than_nodes_go_round_and_a_shadow_shares_with_a_warning():
    reqs = [primary('web-%d' % i) for i in range(1, 4)] + [shadow('web-shadow', ['web-1', 'web-2', 'web-3'])]
    out = placement_utils.place(reqs, THREE)
    assert sorted(out['web-%d' % i]['node'] for i in range(1, 4)) == ['pve1', 'pve2', 'pve3']
    assert out['web-shadow']['node'] in ('pve1', 'pve2', 'pve3')
    assert any('shares node' in w for w in out['web-shadow']['warnings'])


def test_existing_vms_count_and_are_not_moved():
    reqs = [dict(name='web-1', node='pve3', group='web'), primary('web-2'),
            shadow('web-shadow', ['web-1', 'web-2'])]
    out = placement_utils.place(reqs, THREE)
    assert out['web-1']['node'] == 'pve3' and out['web-1']['reason'] == 'exists on pve3'
    assert out['web-2']['node'] != 'pve3'
    assert out['web-shadow']['node'] not in ('pve3', out['web-2']['node'])


def test_a_node_that_cannot_hold_the_vm_is_not_chosen_and_the_reason_says_why():
    small = caps(node('pve1', maxmem_gib=3), node('pve2', maxmem_gib=64, mem_gib=40), node('pve3'))
    out = placement_utils.place([primary('db-1', memory=4096), primary('db-2', memory=4096)], small)
    assert 'pve1' not in (out['db-1']['node'], out['db-2']['node'])
    assert out['db-1']['node'] == 'pve3'  # most free memory
    assert 'pve1: needs 4096 MiB memory, 1024 MiB free' in out['db-1']['reason']


def test_vcpus_beyond_the_node_are_a_shortfall():
    out = placement_utils.place([primary('big', vcpus=8)], caps(node('pve1', maxcpu=4), node('pve2', maxcpu=8)))
    assert out['big']['node'] == 'pve2'
    assert 'needs 8 vCPUs, the node has 4' in out['big']['reason']


def test_memory_planned_in_the_same_run_counts():
    two = caps(node('pve1', maxmem_gib=8), node('pve2', maxmem_gib=8))
    reqs = [primary('a-%d' % i, memory=2048, group='a-%d' % i) for i in range(1, 7)]
    out = placement_utils.place(reqs, two)
    assert [out['a-%d' % i]['error'] for i in range(1, 7)] == [None] * 6
    over = placement_utils.place(reqs + [primary('a-7', memory=2048, group='x')], two)
    assert over['a-7']['node'] is None and 'a-7: no node can hold it' in over['a-7']['error']
    assert 'needs 2048 MiB memory' in over['a-7']['error']


def test_offline_nodes_are_never_chosen():
    out = placement_utils.place([primary('web-1'), primary('web-2')], caps(node('pve1', status='offline'), node('pve2')))
    assert out['web-1']['node'] == 'pve2' and out['web-2']['node'] == 'pve2'
    listed = placement_utils.place([primary('web-1', listed=['pve1', 'pve2'])], caps(node('pve1', status='offline'), node('pve2')))
    assert listed['web-1']['node'] == 'pve2' and 'pve1 offline' in listed['web-1']['reason']
    none = placement_utils.place([primary('web-1')], caps(node('pve1', status='offline')))
    assert none['web-1']['node'] is None and 'no online node' in none['web-1']['error']


def test_a_node_in_ha_maintenance_is_skipped_though_it_has_the_most_free_memory():
    # pve-manager API2/Cluster.pm resources: node entries carry the CRM's node_status as hastate; the CRM moves the
    # HA services off a node in maintenance (pve-ha-manager Manager.pm next_state_started), so it looks emptiest.
    drained = caps(node('pve1', mem_gib=30, hastate='online'), node('pve2', mem_gib=1, hastate='maintenance'),
                   node('pve3', mem_gib=20, hastate='online'))
    out = placement_utils.place([primary('web-1'), primary('web-2')], drained)
    assert out['web-1']['node'] == 'pve3' and out['web-2']['node'] == 'pve1'
    assert 'skipped pve2 in HA maintenance mode' in out['web-1']['reason']
    assert out['web-1']['warnings'] == []
    # fence, unknown, gone on a node pmxcfs sees online: not trusted (an idle CRM stops writing its status, CRM.pm),
    # the node is placed on as without HA
    fenced = placement_utils.place([primary('web-1')], caps(node('pve1', hastate='fence'), node('pve2', mem_gib=40)))
    assert fenced['web-1']['node'] == 'pve1' and 'fence' not in fenced['web-1']['reason']
    none = placement_utils.place([primary('web-1')], caps(node('pve1', hastate='maintenance')))
    assert none['web-1']['node'] is None
    assert 'no online node' in none['web-1']['error'] and 'pve1 in HA maintenance mode' in none['web-1']['error']


def test_a_listed_node_in_ha_maintenance_is_skipped_with_a_warning_naming_it():
    drained = caps(node('pve1'), node('pve2', hastate='maintenance'), node('pve3'))
    out = placement_utils.place([primary('web-1', listed=['pve2', 'pve3', 'pve1'])], drained)
    assert out['web-1']['node'] == 'pve3'
    assert out['web-1']['warnings'] == ['listed node pve2 is in HA maintenance mode (hastate maintenance: the HA '
                                        'manager is moving guests off it): web-1 placed on pve3 instead']
    assert 'skipped pve2 in HA maintenance mode' in out['web-1']['reason']
    # listed after the node chosen: skipped silently, as it would not have been taken
    later = placement_utils.place([primary('web-1', listed=['pve1', 'pve2'])], drained)
    assert later['web-1']['node'] == 'pve1' and later['web-1']['warnings'] == []


def test_listed_nodes_keep_their_order_and_warn_naming_vm_node_and_shortfall():
    small = caps(node('pve1'), node('pve2', maxmem_gib=3), node('pve3'))
    out = placement_utils.place([primary('web-2', memory=4096, listed=['pve2', 'pve3', 'pve1'])], small)
    assert out['web-2']['node'] == 'pve3'
    assert out['web-2']['warnings'] == ['listed node pve2 cannot hold web-2 (needs 4096 MiB memory, 1024 MiB free); '
                                        'placed on pve3 instead']
    none = placement_utils.place([primary('web-2', memory=99999, listed=['pve2', 'pve3'])], small)
    assert 'web-2: no node can hold it' in none['web-2']['error'] and 'pve2: needs 99999 MiB' in none['web-2']['error']


def test_listed_shadow_goes_to_a_node_without_its_primaries():
    reqs = [primary('web-1', listed=['pve1', 'pve2', 'pve3']), primary('web-2', listed=['pve2', 'pve3', 'pve1']),
            shadow('web-shadow', ['web-1', 'web-2'], listed=['pve3', 'pve1', 'pve2'])]
    out = placement_utils.place(reqs, THREE)
    assert [out[r['name']]['node'] for r in reqs] == ['pve1', 'pve2', 'pve3']


def test_reach_limits_the_default_and_refuses_a_listed_node():
    reqs = [primary('web-1', reach={'pve1'}, reach_note={'pve2': 'not shared', 'pve3': 'not shared'}),
            primary('web-2', reach={'pve1'}, reach_note={'pve2': 'not shared', 'pve3': 'not shared'})]
    out = placement_utils.place(reqs, THREE)
    assert out['web-1']['node'] == out['web-2']['node'] == 'pve1'
    assert "out of the golden template's reach" in out['web-2']['reason']
    listed = placement_utils.place([primary('web-2', listed=['pve2', 'pve1'], reach={'pve1'}, reach_note={'pve2': 'PVE refuses'})],
                                   THREE)
    assert listed['web-2']['node'] is None and listed['web-2']['error'] == 'PVE refuses'


def test_node_capacities_count_running_vms_at_their_size_and_stopped_plan_vms():
    vms = [{'type': 'qemu', 'node': 'pve1', 'name': 'a', 'status': 'running', 'maxmem': 4 * GiB, 'mem': GiB},
           {'type': 'qemu', 'node': 'pve1', 'name': 'b', 'status': 'stopped', 'maxmem': 2 * GiB, 'mem': 0},
           {'type': 'qemu', 'node': 'pve1', 'name': 'c', 'status': 'stopped', 'maxmem': 2 * GiB, 'mem': 0},
           {'type': 'qemu', 'node': 'pve1', 'name': 't', 'status': 'stopped', 'maxmem': 2 * GiB, 'template': 1}]
    # mem 3 GiB (2 host + 1 used by a); a may grow by 3 GiB; b is in the plan and will be started.
    out = caps(node('pve1', mem_gib=3), vms=vms, plan_names=['b'])
    assert out['pve1']['committed'] == (3 + 3 + 2) * 1024 and out['pve1']['maxmem'] == 64 * 1024


def test_node_capacities_count_a_paused_vm_as_running():
    # /cluster/resources status is pvestatd's qmpstatus: a paused (or io-error, prelaunch, ...) VM keeps its process
    vms = [{'type': 'qemu', 'node': 'pve1', 'name': 'p', 'status': status, 'maxmem': 4 * GiB, 'mem': GiB}
           for status in ('paused', 'io-error', 'prelaunch', 'postmigrate')]
    out = caps(node('pve1', mem_gib=6), vms=vms)
    assert out['pve1']['committed'] == (6 + 4 * 3) * 1024
    assert [placement_utils.process_runs(s) for s in ('running', 'paused', 'stopped', 'unknown', None)] == [
        True, True, False, None, None]


# ------------------------------------------------------------------------------------------------ clone routes

STORAGES = placement_utils.storage_table([
    {'storage': 'local-lvm', 'type': 'lvmthin', 'content': 'images,rootdir'},
    {'storage': 'local', 'type': 'dir', 'content': 'iso,vztmpl'},
    {'storage': 'ceph-vm', 'type': 'rbd', 'content': 'images'},
    {'storage': 'nfs-half', 'type': 'nfs', 'nodes': 'pve1,pve2', 'content': 'images'},
    {'storage': 'san', 'type': 'lvm', 'shared': 1, 'content': 'images'},
])


def tmpl(vmid, node, disk, name='golden', **more):
    config = dict(scsi0='{0},iothread=1,size=8G'.format(disk), **more)
    return placement_utils.clone_reach({'vmid': vmid, 'node': node, 'name': name}, config, STORAGES)


def test_storage_table_marks_pve_shared_types_shared():
    assert STORAGES['ceph-vm']['shared'] and STORAGES['nfs-half']['shared'] and STORAGES['san']['shared']
    assert not STORAGES['local-lvm']['shared'] and not STORAGES['local']['shared']
    assert STORAGES['nfs-half']['nodes'] == {'pve1', 'pve2'} and STORAGES['ceph-vm']['nodes'] is None


def test_shared_template_clones_with_target():
    reach = tmpl(9000, 'pve1', 'ceph-vm:base-9000-disk-0')
    assert placement_utils.clone_route([reach], 'pve1') == (reach, None)
    assert placement_utils.clone_route([reach], 'pve3') == (reach, 'pve3')


def test_local_template_uses_the_copy_on_the_node_without_target():
    copies = [tmpl(9001, 'pve1', 'local-lvm:base-9001-disk-0'), tmpl(9002, 'pve2', 'local-lvm:base-9002-disk-0')]
    assert placement_utils.clone_route(copies, 'pve2') == (copies[1], None)
    assert placement_utils.clone_route(copies, 'pve1', prefer_vmid=9002) == (copies[0], None)
    with pytest.raises(placement_utils.PlacementError) as info:
        placement_utils.clone_route(copies, 'pve3')
    text = str(info.value)
    assert "golden template 'golden' (vmid 9001 on pve1)" in text and "'local-lvm'" in text and "'pve3'" in text
    assert "can't clone VM to node 'pve3' (VM uses local storage)" in text and 'vmids [9001, 9002]' in text


def test_a_local_iso_in_the_cdrom_pins_the_template_to_its_node():
    reach = tmpl(9000, 'pve1', 'ceph-vm:base-9000-disk-0', ide2='local:iso/debian.iso,media=cdrom')
    assert not reach['shared'] and reach['local'] == ['local']
    assert placement_utils.clone_route([reach], 'pve1') == (reach, None)
    with pytest.raises(placement_utils.PlacementError):
        placement_utils.clone_route([reach], 'pve2')
    empty = tmpl(9000, 'pve1', 'ceph-vm:base-9000-disk-0', ide2='none,media=cdrom')
    assert empty['shared']


def test_shared_storage_limited_to_some_nodes_is_not_a_route_elsewhere():
    reach = tmpl(9000, 'pve1', 'nfs-half:9000/base-9000-disk-0.qcow2')
    assert placement_utils.clone_route([reach], 'pve2') == (reach, 'pve2')
    with pytest.raises(placement_utils.PlacementError) as info:
        placement_utils.clone_route([reach], 'pve3')
    assert 'not enabled on node' in str(info.value)


def test_thick_lvm_cannot_make_linked_clones_even_shared():
    reach = tmpl(9000, 'pve1', 'san:base-9000-disk-0')
    with pytest.raises(placement_utils.PlacementError) as info:
        placement_utils.clone_route([reach], 'pve1')
    assert 'cannot make linked clones' in str(info.value) and "'san'" in str(info.value)


def test_two_copies_on_one_node_are_an_error():
    copies = [tmpl(9001, 'pve1', 'local-lvm:base-9001-disk-0'), tmpl(9011, 'pve1', 'local-lvm:base-9011-disk-0')]
    with pytest.raises(placement_utils.PlacementError) as info:
        placement_utils.clone_route(copies, 'pve1')
    assert 'vmids [9001, 9011]' in str(info.value)


@pytest.mark.parametrize('kind,disk,problem', [
    ('lvmthin', 'st:vm-1-disk-0', None),
    ('rbd', 'st:vm-1-disk-0', None),
    ('btrfs', 'st:1/vm-1-disk-0.raw', None),
    ('dir', 'st:1/vm-1-disk-0.qcow2', None),
    ('lvm', 'st:vm-1-disk-0.qcow2', None),
    ('zfspool', 'st:vm-1-disk-0', 'cannot make a full clone of a snapshot'),
    ('zfs', 'st:vm-1-disk-0', 'cannot make a full clone of a snapshot'),
    ('dir', 'st:1/vm-1-disk-0.raw', 'cannot snapshot a raw volume'),
    ('lvm', 'st:vm-1-disk-0', 'cannot snapshot a raw volume'),
    ('iscsi', 'st:0.0.1.scsi-x', 'cannot snapshot'),
    ('thirdparty', 'st:vm-1-disk-0', None),
])
def test_snapshot_clone_problem_follows_pve_storage_features(kind, disk, problem):
    storages = placement_utils.storage_table([{'storage': 'st', 'type': kind}, {'storage': 'zfs2', 'type': 'zfspool'}])
    found = placement_utils.snapshot_clone_problem({'scsi0': disk + ',size=8G'}, storages)
    assert (found is None) if problem is None else (problem in found and 'scsi0' in found), found


def test_snapshot_clone_problem_walks_cloud_init_but_not_plain_cdroms():
    storages = placement_utils.storage_table([{'storage': 'rbd', 'type': 'rbd'}, {'storage': 'zfs2', 'type': 'zfspool'}])
    base = {'scsi0': 'rbd:vm-1-disk-0,size=8G'}
    assert placement_utils.snapshot_clone_problem(dict(base, ide2='zfs2:iso/x.iso,media=cdrom'), storages) is None
    found = placement_utils.snapshot_clone_problem(dict(base, ide2='zfs2:vm-1-cloudinit,media=cdrom'), storages)
    assert found.startswith('cloud-init drive ide2'), found
    assert 'path' in placement_utils.snapshot_clone_problem({'scsi0': '/dev/sdb,size=8G'}, storages)

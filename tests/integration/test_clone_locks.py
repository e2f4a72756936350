"""Concurrent linked clones and PVE's storage lock (tests/lab/pvesim_locks.py, vm.ensure_many's CLONE_LOCK_SLOTS).

qemu-server clone_vm lets clones of one template run concurrently (shared lock on the source), but pve-storage
vdisk_clone runs each disk's clone_image under the storage's lock (cluster-wide for shared storage), and a clone
that waits for it over 10 s fails. These tests run the simulator at a small time scale with a long clone_image.
"""
import asyncio
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone
from lab.modrun import run_module

SCALE = 0.1   # real seconds per PVE second


def _clone(proxmoxer_api, node, vmid, newid, **extra):
    return proxmoxer_api.nodes(node).qemu(vmid).clone.post(newid=newid, name='c%d' % newid, **extra)


def _wait(proxmoxer_api, upid, limit=60):
    node = upid.split(':')[1]
    deadline = time.time() + limit
    while time.time() < deadline:
        status = proxmoxer_api.nodes(node).tasks(upid).status.get()
        if status['status'] == 'stopped':
            return status['exitstatus']
        time.sleep(0.05)
    raise AssertionError('task %s did not end' % upid)


def test_sim_shared_storage_clones_queue_on_one_lock_and_time_out(pvesim, proxmoxer_api):
    # pve-storage Storage.pm vdisk_clone -> Plugin.pm cluster_lock_storage -> pve-cluster cfs_lock_storage: one
    # clone_image at a time on ceph-vm (shared), whatever node the clone goes to; over 10 s of waiting fails.
    pve = pvesim.pve
    pve.time_scale = SCALE
    pve.clone_lock_secs = 3.0
    upids = [_clone(proxmoxer_api, 'pve1', 9000, 200 + i, target=['pve1', 'pve2', 'pve3'][i % 3]) for i in range(6)]
    results = [_wait(proxmoxer_api, upid) for upid in upids]
    assert results.count('OK') >= 3, results
    failed = [r for r in results if r != 'OK']
    assert failed, results   # 6 x 3 s of clone_image cannot all get the lock within 10 s
    assert all("clone failed: cfs-lock 'storage-ceph-vm' error: got lock request timeout" in r for r in failed)
    names = set(vm.name for vm in pve.vms)
    # clone_vm's error path leaves nothing of a failed clone behind.
    assert len([n for n in names if n.startswith('c2')]) == results.count('OK')


def test_sim_local_storage_locks_are_per_node(pvesim, proxmoxer_api):
    # Plugin.pm cluster_lock_storage for a local storage: a file lock on the node that runs the clone, so clones of
    # the per-node alpine copies (local-lvm on pve1, pve2, pve3) do not wait for each other.
    pve = pvesim.pve
    pve.time_scale = SCALE
    pve.clone_lock_secs = 3.0
    start = time.time()
    upids = [_clone(proxmoxer_api, node, vmid, 300 + i) for i, (node, vmid) in
             enumerate([('pve1', 9001), ('pve2', 9002), ('pve3', 9003)])]
    assert [_wait(proxmoxer_api, upid) for upid in upids] == ['OK'] * 3
    assert time.time() - start < 2 * 3.0 * SCALE + 1.0
    assert max(secs for lock, secs in pve.storage_lock_waits) < 0.5 * 3.0 * SCALE


def _web_plan(instances):
    template = {'name': 'lk', 'nodes': ['pve1', 'pve2', 'pve3'],
                'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/24',
                              'gateway': '10.10.0.1'}],
                'services': [{'name': 'web', 'template': 9000, 'instances': instances, 'cores': 1, 'memory': 512,
                              'networks': ['front'], 'critical': False}],
                'shadow': {'enabled': False}}
    return plan_from_template(template)[1]


def test_plan_runs_at_most_four_clones_per_storage_lock(pvesim, pve_conn):
    # Eight new VMs of a template on shared storage with parallel 8: the VM engine lets at most CLONE_LOCK_SLOTS
    # clones wait for or hold the storage lock at once (eight would queue 14 s or more of clone_image behind the
    # lock, past PVE's 10 s timeout), and all eight are built and started.
    pve = pvesim.pve
    pve.time_scale = SCALE
    pve.clone_lock_secs = 2.0
    result = run_module(linked_clone, dict(pve_conn, plan=_web_plan(8), state='started', parallel=8, timeout=120))
    assert result['changed'] and len(result['vms']) == 8
    vms = [vm for vm in pve.vms if vm.name.startswith('lk-web-')]
    assert len(vms) == 8 and all(vm.status == 'running' for vm in vms)
    assert pve.storage_lock_peak['storage-ceph-vm'] <= 4, pve.storage_lock_peak


def test_plan_retries_a_clone_that_timed_out_on_the_storage_lock(pvesim, pve_conn):
    # Another task holds ceph-vm's lock until the clone has given up (after 10 s of waiting; PVE removes what it
    # made, clone_vm's error path), and the engine clones again once the lock is free. (Held for a fixed 11 s, the
    # clone had to start within 0.1 real seconds of the holder, which a loaded machine missed.)
    pve = pvesim.pve
    pve.time_scale = SCALE
    pve.clone_lock_secs = 0.5

    def clone_timed_out():
        return any(t['type'] == 'qmclone' and 'got lock request timeout' in (t.get('exitstatus') or '')
                   for t in pve.tasklog)
    holder = asyncio.run_coroutine_threadsafe(pve.hold_storage_lock('storage-ceph-vm', 60.0, until=clone_timed_out),
                                              pvesim.loop)
    try:
        result = run_module(linked_clone, dict(pve_conn, plan=_web_plan(1), state='started', timeout=120))
    finally:
        holder.result(30)
    assert result['changed'] and [r['name'] for r in result['vms']] == ['lk-web-1']
    assert [vm.status for vm in pve.vms if vm.name == 'lk-web-1'] == ['running']
    clones = [t for t in pve.tasklog if t['type'] == 'qmclone']
    assert len(clones) == 2 and 'got lock request timeout' in clones[0]['exitstatus'] and clones[1]['exitstatus'] == 'OK'

"""The storage lock of a linked clone, for ShadowPve: what keeps concurrent clones from one storage apart.

qemu-server src/PVE/API2/Qemu.pm clone_vm locks the source shared (lock_config_shared, when it is not running) and
the new vmid exclusively (lock_config_full), so clones of one template may run at the same time. The disk itself is
cloned by QemuServer.pm clone_disk -> pve-storage src/PVE/Storage.pm vdisk_clone, which runs the plugin's
clone_image (rbd clone, lvcreate -s, ...) under Plugin.pm cluster_lock_storage: for a shared storage the cluster-wide
pve-cluster Cluster.pm cfs_lock_storage ("storage-<sid>": mkdir in pmxcfs, retried after sleeping
min(remaining, 10) x 0.1 s, "got lock request timeout" after 10 s), for a local one a file lock on the node
(pve-common Tools.pm lock_file_full on /var/lock/pve-manager/pve-storage-<sid>: flock, 10 s timeout). So the
clone_image steps of one storage (one node's, for local storage) run one at a time, and a clone that waits longer
than 10 s fails: clone_vm's "clone failed: <error>".

`clone_lock_secs` is the PVE seconds each disk's clone_image holds that lock (scaled by time_scale; 0, the default,
holds no lock, and at time_scale 0 every task is over before the next request anyway).
"""

import asyncio

from fakepve.model import TaskError
from fakepve.qemu import drives_of, volume_ref

__all__ = ['CloneStorageLocks', 'LOCK_TIMEOUT']

# pve-cluster Cluster.pm $cfs_lock and pve-common Tools.pm lock_file_full: `$timeout = 10 if !$timeout`.
LOCK_TIMEOUT = 10.0


class CloneStorageLocks(object):
    """Mixin of ShadowPve: qmclone tasks take their disks' storage locks while clone_image runs."""

    def _init_storage_locks(self):
        self.clone_lock_secs = 0.0
        # Lock id -> holder (UPID) for the held storage locks; waiters of file locks wait on the event.
        self._storage_lock_holder = {}
        self._storage_lock_free = {}
        # (lock id, seconds waited) of every acquisition, for tests and benchmarks.
        self.storage_lock_waits = []
        # Lock id -> clones waiting for or holding it now, and the most there ever were at once.
        self._storage_lock_users = {}
        self.storage_lock_peak = {}

    async def hold_storage_lock(self, lock_id, secs, until=None):
        """Hold a storage lock (``storage-<sid>``, or ``<node>:/var/lock/pve-manager/pve-storage-<sid>``) for secs
        PVE seconds, as another task of the cluster would; with ``until`` (a callable), only until it returns true
        (checked every tenth of a PVE second) and at most secs.

        In PVE a holder keeps the lock for as long as its own locked code runs, whatever that takes: pve-cluster
        src/PVE/Cluster.pm ``$cfs_lock`` (behind cfs_lock_storage) runs ``&$code(@param)`` after its mkdir and
        only then ``rmdir $filename if $got_lock``; pve-common src/PVE/Tools.pm lock_file_full runs
        ``&$code(@param)`` holding the flocked ``$local_fh``, closed when it returns. ``until`` stands for such code
        ending on an event of the cluster."""
        await (self._cfs_lock(lock_id) if lock_id.startswith('storage-') else self._file_lock(lock_id))
        try:
            if until is None:
                await self.pause(secs)
            else:
                for dummy in range(int(secs * 10)):
                    if until():
                        break
                    await self.pause(0.1)
        finally:
            self._storage_lock_release(lock_id)

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        source = self.vm(int(tid)) if ttype == 'qmclone' and str(tid).isdigit() else None
        if source is not None and self.clone_lock_secs and self.time_scale:
            work = body
            sids = []
            for dummy, volume, dummy2 in drives_of(source.config, skip_cdrom=True):
                sid = volume_ref(volume)[0]
                if sid is not None:
                    sids.append(sid)

            async def body():
                # QemuServer.pm clone_disk, once per disk in drive order: vdisk_clone under the storage's lock.
                try:
                    for sid in sids:
                        await self._clone_image_locked(node, sid)
                except TaskError:
                    # clone_vm's error path: the new VM's config file is unlinked, nothing of it is left.
                    if vm is not None and vm in self.vms:
                        self.vms.remove(vm)
                    raise
                return await work()
        return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)

    async def _clone_image_locked(self, node, sid):
        shared = self.storage_shared(sid)
        lock_id = 'storage-{0}'.format(sid) if shared else '{0}:/var/lock/pve-manager/pve-storage-{1}'.format(node, sid)
        users = self._storage_lock_users
        users[lock_id] = users.get(lock_id, 0) + 1
        self.storage_lock_peak[lock_id] = max(self.storage_lock_peak.get(lock_id, 0), users[lock_id])
        try:
            await (self._cfs_lock(lock_id) if shared else self._file_lock(lock_id))
            try:
                await self.pause(self.clone_lock_secs)
            finally:
                self._storage_lock_release(lock_id)
        finally:
            users[lock_id] -= 1

    def _storage_lock_release(self, lock_id):
        self._storage_lock_holder.pop(lock_id, None)
        event = self._storage_lock_free.pop(lock_id, None)
        if event is not None:
            event.set()

    async def _cfs_lock(self, lock_id):
        """pve-cluster Cluster.pm $cfs_lock: try mkdir; else sleep min(remaining, 10) x 100 ms and retry."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        slept = 0.0   # PVE seconds
        while lock_id in self._storage_lock_holder:
            remaining = max(LOCK_TIMEOUT - int(slept), 1)
            nap = min(remaining, 10) * 0.1
            if int(slept + nap) >= LOCK_TIMEOUT:
                raise TaskError("clone failed: cfs-lock '{0}' error: got lock request timeout".format(lock_id))
            await self.pause(nap)
            slept += nap
        self._storage_lock_holder[lock_id] = True
        self.storage_lock_waits.append((lock_id, loop.time() - started))

    async def _file_lock(self, lock_id):
        """pve-common Tools.pm lock_file_full: flock (woken when the holder closes it), 10 s timeout."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + LOCK_TIMEOUT * self.time_scale
        while lock_id in self._storage_lock_holder:
            event = self._storage_lock_free.setdefault(lock_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise TaskError("clone failed: can't lock file '{0}' - got timeout".format(
                    lock_id.split(':', 1)[1])) from None
        self._storage_lock_holder[lock_id] = True
        self.storage_lock_waits.append((lock_id, loop.time() - started))

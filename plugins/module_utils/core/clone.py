# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One clone request, carried through to a listed, unlocked VM whatever happened to PVE's answer.

The only code that posts ``/nodes/{node}/qemu/{vmid}/clone``: the linked-clone engine (``vm.VmEngine``) and the
full refresh of a shadow (``refresh.ShadowRefresher``) both call :func:`clone_vm`.

What PVE does (qemu-server src/PVE/API2/Qemu.pm ``clone_vm``): the request checks (``config file already exists``
for a taken vmid), answers with a task, and the task writes a temporary config ``lock: clone`` for the new vmid,
without a name until the first disk is cloned, copies the disks, then writes the config without the lock. A failed
task frees the volumes and removes the config; only a task that dies without its cleanup (killed, node crash)
leaves a half-made VM with ``lock: clone``. The task checks the vmid again inside, so a vmid taken between the
request and the task fails the task with the same message.

What this does about it:

- an uncertain answer (the connection dropped after the request was sent: ``PveUncertainError``) is resolved by
  looking again, by vmid and by name, never by sending blindly: a VM of that vmid (our name, or none yet) is the
  clone, and its ``clone`` lock is waited for; a VM of that name made by someone else is taken as it is (never a
  second one); nothing found means the request never arrived, and it is sent again;
- a vmid another VM took (``already exists``, before or inside the task) is retried with a new vmid from
  ``/cluster/nextid``, unless the vmid is fixed (a refresh keeps the shadow's vmid): then it is an error;
- a half-made VM left by a failed or dead clone task (this vmid, ``lock: clone``, this name or none, and no clone
  task of the source still running; or unlocked right after our own task failed, as clone_vm leaves a VM whose
  pool add died after its config moved to the target node) is removed; PVE only lets ``root@pam`` itself remove a
  locked VM (``skiplock``), so with any other login the error says how to remove it.
"""


import re
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import (
    PveApiError, PveTaskError, PveTimeoutError, PveUncertainError)

# qemu-server clone_vm: "unable to create VM $newid: config file already exists" (checked on the local node before
# the task); in the task, a vmid taken on another node meanwhile fails pmxcfs' rename of the new config ("close
# (rename) atomic file '.../<newid>.conf' failed: File exists", memdb.c vmlist_different_vm_exists), and a vmid
# another clone holds fails its config lock (lock_config_full, 1 s: "can't lock file
# '/var/lock/qemu-server/lock-<newid>.conf' - got timeout"); fakepve: "VM $newid already exists on node '...'".
COLLISION = (r"config file already exists|already exists on node|atomic file '[^']*' failed: File exists|"
             r"lock-{vmid}\.conf' - got timeout")
# Errors of a clone request worth one more try: PVE refused before doing anything (a lock that did not clear within
# the API client's lock wait) or never got the request (connection refused).
RETRYABLE_KINDS = ('lock', 'connection', 'server')
# Requests per clone: lost answers and vmid collisions are resolved within these; a refusal is tried once more.
ATTEMPTS = 5
REFUSED_RETRIES = 1


def _vmid(entry):
    return int(entry.get('vmid', -1))


def find_by_vmid(resources, vmid):
    """The /cluster/resources entry of a qemu guest with this vmid, or None."""
    found = [r for r in resources if r.get('type', 'qemu') == 'qemu' and _vmid(r) == int(vmid)]
    return found[0] if found else None


def find_by_name(resources, name):
    found = [r for r in resources if r.get('type') == 'qemu' and r.get('name') == name and not r.get('template')]
    return sorted(found, key=_vmid)


def ours(entry, name):
    """A VM of our vmid is ours if it carries our name, or none yet (the temporary config of a running clone, which
    qemu-server's vmstatus and so /cluster/resources name "VM <vmid>")."""
    return entry.get('name') in (name, None, '', 'VM {0}'.format(_vmid(entry)))


def collision(message, vmid):
    """Does PVE's error say that ``vmid`` is taken (see COLLISION)?"""
    return bool(re.search(COLLISION.replace('{vmid}', str(int(vmid))), message or '', re.I))


class Cloner(object):
    """State of one :func:`clone_vm` call (the API, the route, the deadline and the warnings)."""

    def __init__(self, api, source_node, source_vmid, name, params, timeout, poll, fixed_vmid):
        self.api = api
        self.source_node = source_node
        self.source_vmid = int(source_vmid)
        self.name = name
        self.params = dict((k, v) for k, v in (params or {}).items() if v is not None)
        self.timeout = timeout
        self.poll = poll
        self.fixed_vmid = fixed_vmid
        self.warnings = []
        self.path = 'nodes/{0}/qemu/{1}/clone'.format(source_node, self.source_vmid)

    # ------------------------------------------------------------------ looking

    def clone_task_running(self):
        """Is a clone task of the source still running on its node (qmclone tasks carry the SOURCE vmid)?"""
        try:
            items = self.api.get('nodes/{0}/tasks'.format(self.source_node), typefilter='qmclone',
                                 vmid=self.source_vmid, source='active') or []
        except PveApiError:
            return True  # cannot tell: never treat a VM as abandoned on a guess
        return any(i.get('status', 'running') == 'running' for i in items)

    def settle(self, vmid, deadline):
        """Wait until the VM of ``vmid`` is listed without a lock, or has gone. Returns ('made' | 'gone' | 'taken' |
        'orphan', entry). A ``clone`` lock with no clone task of the source running is an orphan."""
        while True:
            entry = find_by_vmid(self.api.resources('vm'), vmid)
            if entry is None:
                return 'gone', None
            if not ours(entry, self.name):
                return 'taken', entry
            if not entry.get('lock'):
                # a name the listing still lacks (pvestatd's "VM <vmid>") was read from the VM (PveApi.resources)
                return ('made' if entry.get('name') == self.name else 'taken'), entry
            if entry.get('lock') == 'clone' and not self.clone_task_running():
                # Read once more: the task may have ended between the two reads.
                entry = find_by_vmid(self.api.resources('vm'), vmid)
                if entry is None:
                    return 'gone', None
                if entry.get('lock') == 'clone' and ours(entry, self.name):
                    return 'orphan', entry
                continue
            if time.monotonic() >= deadline:
                msg = ('the clone of {0!r} (vmid {1}) is still locked ({2}) after {3}s; check the clone task on {4} and '
                       'run again'.format(self.name, vmid, entry.get('lock'), self.timeout, self.source_node))
                raise PveTimeoutError(msg, kind='timeout', node=entry.get('node'))
            time.sleep(self.poll)

    def look_again(self, vmid, deadline):
        """After an uncertain clone request: ('made' | 'absent' | 'taken' | 'orphan', entry).

        By vmid first; then by name (another run may have made the VM meanwhile: never make a second). PVE writes the
        new config inside the task, after answering: while a clone task of the source runs and nothing is listed
        yet, wait for it before calling the request lost.
        """
        while True:
            resources = self.api.resources('vm')
            if find_by_vmid(resources, vmid) is not None:
                state, entry = self.settle(vmid, deadline)
                if state != 'gone':
                    return state, entry
                resources = self.api.resources('vm')
            named = find_by_name(resources, self.name)
            if named and not self.fixed_vmid:
                state, entry = self.settle(_vmid(named[0]), deadline)
                if state == 'made':
                    return 'made', entry
            if not self.clone_task_running():
                return 'absent', None
            if time.monotonic() >= deadline:
                raise PveTimeoutError('a clone task of vmid {0} on {1} is still running {2}s after the answer to the '
                                      'clone request of {3!r} was lost; check it and run again'.format(
                                          self.source_vmid, self.source_node, self.timeout, self.name),
                                      kind='timeout', node=self.source_node)
            time.sleep(self.poll)

    def collision(self, vmid, why, deadline):
        """PVE says the vmid exists: (entry, None) when it is our own clone (a lost answer's), else (None, new vmid)."""
        entry = find_by_vmid(self.api.resources('vm'), vmid)
        if entry is not None and ours(entry, self.name):
            state, entry = self.settle(vmid, deadline)
            if state == 'made':
                return entry, None
        return None, self.new_vmid(vmid, why)

    # ----------------------------------------------------------------- repairs

    def remove_orphan(self, vmid, task_failed=False):
        """Remove the half-made VM a failed or dead clone task left (vmid ours, our name or none, no clone task
        running): one with ``lock: clone``, or, right after our own clone task failed, one without a lock (qemu-server
        clone_vm: when add_vm_to_pool dies after the config was moved to the target node, the cleanup frees the disks
        and unlinks the config at its old path, so the VM stays listed on the target, unlocked, without its disks).
        Returns None when removed or nothing was there, else why it was left."""
        entry = find_by_vmid(self.api.resources('vm'), vmid)
        if entry is None or not ours(entry, self.name) or self.clone_task_running():
            return None
        if entry.get('node') not in (self.source_node, self.params.get('target')):
            return None     # not where our clone puts its VM: someone else's
        locked = entry.get('lock') == 'clone'
        if not locked and (entry.get('lock') or not task_failed):
            return None
        if not locked and entry.get('name') != self.name:
            # unlocked: only the VM our failed task left with our name (add_vm_to_pool's failure) is removed
            return ('vmid {0} on {1} is unlocked and not named {2!r}: left by the failed clone or someone else\'s; '
                    'check it before removing it'.format(vmid, entry['node'], self.name))
        what = 'a half-made clone{0}'.format(' (lock: clone)' if locked else '')
        how = ('remove it as root@pam: `qm unlock {0} && qm destroy {0} --purge` on {1}'.format(vmid, entry['node']))
        if locked and not self.api.is_root:
            # qemu-server destroy_vm checks the lock unless skiplock, which only root@pam itself may give.
            return 'vmid {0} is {1} left by a failed clone task; {2}'.format(vmid, what, how)
        params = {'purge': 1, 'destroy-unreferenced-disks': 1}
        if locked:
            params['skiplock'] = 1
        try:
            self.api.run_task('DELETE', 'nodes/{0}/qemu/{1}'.format(entry['node'], vmid), params, timeout=self.timeout)
        except PveApiError as exc:
            return 'vmid {0} is {1} that could not be removed ({2}); {3}'.format(vmid, what, exc.message, how)
        self.warnings.append('removed vmid {0} on {1}: {2} left by a failed clone task'.format(
            vmid, entry['node'], what))
        return None

    def new_vmid(self, vmid, why):
        if self.fixed_vmid:
            raise PveApiError('cannot clone {0!r} to vmid {1}: {2}'.format(self.name, vmid, why), kind='config',
                              method='POST', path=self.path, node=self.source_node)
        fresh = self.api.next_vmid()
        self.warnings.append('vmid {0} was taken ({1}); cloning {2!r} to vmid {3}'.format(vmid, why, self.name, fresh))
        return fresh

    # --------------------------------------------------------------------- run

    def run(self, vmid, attempts):
        deadline = time.monotonic() + self.timeout
        refused = 0
        for attempt in range(1, attempts + 1):
            last = attempt == attempts
            try:
                upid = self.api.post(self.path, newid=vmid, name=self.name, **self.params)
            except PveUncertainError as exc:
                state, entry = self.look_again(vmid, deadline)
                if state == 'made':
                    self.warnings.append('the answer to the clone request of {0!r} was lost; the VM was found '
                                         '(vmid {1}), nothing was cloned twice'.format(self.name, _vmid(entry)))
                    return entry
                if state == 'taken':
                    vmid = self.new_vmid(vmid, 'another VM, {0!r}, has it'.format(entry.get('name')))
                elif state == 'orphan':
                    problem = self.remove_orphan(vmid)
                    if problem:
                        raise PveApiError('{0} ({1})'.format(exc.message, problem), kind='orphan', method='POST',
                                          path=self.path, node=self.source_node) from exc
                if last:
                    raise
                continue
            except PveApiError as exc:
                if collision(exc.message, vmid) and not last:
                    entry, vmid = self.collision(vmid, exc.message, deadline)
                    if entry is not None:
                        return entry
                    continue
                if exc.kind in RETRYABLE_KINDS and refused < REFUSED_RETRIES and not last:
                    refused += 1
                    self.warnings.append('the clone request of {0!r} failed ({1}); tried once more'.format(
                        self.name, exc.message))
                    continue
                raise
            try:
                task = self.api.wait_task(upid, timeout=max(1, deadline - time.monotonic()))
            except PveTaskError as exc:
                if collision(exc.message, vmid) and not last:
                    # clone_vm checks the vmid again inside the task: another clone took it meanwhile.
                    entry, vmid = self.collision(vmid, exc.message, deadline)
                    if entry is not None:
                        return entry
                    continue
                problem = self.remove_orphan(vmid, task_failed=True)
                if problem:
                    exc.message = '{0}; {1}'.format(exc.message, problem)
                    exc.args = (exc.message,)
                raise
            self.warnings.extend(task.get('warnings') or [])
            state, entry = self.settle(vmid, deadline)
            if state == 'made':
                return entry
            raise PveApiError('the clone of {0!r} to vmid {1} finished but {2}'.format(
                self.name, vmid, 'no VM of that vmid is listed' if entry is None else
                'vmid {0} is {1!r} ({2})'.format(vmid, entry.get('name'), entry.get('lock') or state)),
                kind='error', method='POST', path=self.path, node=self.source_node)
        raise AssertionError('unreachable')  # pragma: no cover


def clone_vm(api, source_node, source_vmid, name, vmid=None, fixed_vmid=False, timeout=900, params=None, poll=1.0,
             attempts=ATTEMPTS):
    """Clone ``source_vmid`` (on ``source_node``) to a VM named ``name``; returns (entry, warnings).

    ``entry``: the new VM's /cluster/resources entry, listed and unlocked. ``vmid``: the vmid to use (None: one from
    ``/cluster/nextid``); ``fixed_vmid``: the VM must get exactly this vmid (no retry with another). ``params``: the
    other clone parameters (full, target, pool, snapname, description ...). ``timeout``: wall-clock seconds for the
    task and for a lock to clear. Raises PveApiError (PveTaskError with PVE's message for a failed task).
    """
    cloner = Cloner(api, source_node, source_vmid, name, params, timeout, poll, fixed_vmid)
    if vmid is None:
        vmid = api.next_vmid()
    try:
        entry = cloner.run(int(vmid), attempts)
    except PveApiError as exc:
        exc.warnings = cloner.warnings
        raise
    return entry, cloner.warnings

"""Connection faults of writes for ShadowPve: dropped before PVE handles the request, or carried out and the answer lost.

fakepve's `flaky_network` drops a connection BEFORE the request is handled, so nothing happened and a client that
simply sends the write again is right by luck. On a real cluster the connection can also break AFTER pveproxy /
pvedaemon carried the write out (the config is written, the task is forked: qemu-server API2/Qemu.pm clone_vm
answers with the UPID of a worker that already runs; pve-network API2/Network/SDN/*.pm write the section config
under the SDN lock, then answer; pve-ha-manager API2/HA/Rules.pm and Resources.pm write under lock_ha_domain,
then answer). A client cannot tell the two apart from the error: it must look again.

- `lose_answer(method, path, times=1)`: the next `times` requests whose method is `method` and whose path (under
  /api2/json) matches the regular expression `path` are handled completely (recorded, checked, carried out, tasks
  started), then the connection is closed without any answer.
- `drop_request(method, path, times=1)`: the same requests are dropped before anything is done (not recorded).
- `flaky_writes(rate, lost_share=0.5, seed=None, paths=None)`: every write (POST, PUT, DELETE; `paths` a regular
  expression to limit them) is, with probability `rate`, dropped before handling or (a share `lost_share` of those)
  carried out with its answer lost; `seed` makes the sequence repeatable. Reads are left alone: their retries are
  fakepve's `flaky_network` business. `flaky_writes(0)` ends it.
- `kill_clone_task(times=1)`: the next `times` clone tasks die as a killed worker does (SIGKILL, a node crash):
  qemu-server clone_vm wrote the new VM's temporary config (`lock: clone`) and never reached the cleanup that
  frees the volumes and unlinks the config, so the half-made VM stays, locked; the task ends 'unexpected status'.
- `fault_log`: (what, method, path) of every fault made ('before' or 'lost'), for tests.
"""
import random
import re

from aiohttp import web
from fakepve.model import TaskError

API_PREFIX = '/api2/json/'
WRITES = ('POST', 'PUT', 'DELETE')


class WriteFaults(object):
    """Mixin of ShadowPve: writes dropped before handling, or handled with their answer lost."""

    def _init_faults(self):
        self.fault_rules = []
        self.flaky = None
        self.fault_log = []
        self.clone_kills = 0

    def kill_clone_task(self, times=1):
        """The next `times` clone tasks die before their cleanup, leaving the new VM with `lock: clone`."""
        self.clone_kills += times

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        if ttype == 'qmclone' and self.clone_kills > 0:
            self.clone_kills -= 1

            async def body():
                # qemu-server API2/Qemu.pm clone_vm: the worker died after writing the config with `lock: clone` and
                # before its eval's cleanup (vdisk_free, unlink $conffile): nothing removes the VM.
                raise TaskError('unexpected status')
        return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)

    def lose_answer(self, method, path, times=1):
        """Carry out the next `times` matching requests, then close the connection without an answer."""
        self.fault_rules.append(dict(method=method.upper(), path=re.compile(path), times=times, what='lost'))

    def drop_request(self, method, path, times=1):
        """Drop the next `times` matching requests before they are handled."""
        self.fault_rules.append(dict(method=method.upper(), path=re.compile(path), times=times, what='before'))

    def flaky_writes(self, rate, lost_share=0.5, seed=None, paths=None):
        """Drop a share `rate` of the writes, `lost_share` of them after carrying them out (rate 0: stop)."""
        self.flaky = None if not rate else dict(rate=float(rate), lost=float(lost_share), rng=random.Random(seed),
                                                paths=re.compile(paths) if paths else None)

    def clear_write_faults(self):
        self.fault_rules = []
        self.flaky = None
        self.clone_kills = 0

    def _write_fault(self, method, path):
        """'before', 'lost' or None for this request."""
        for rule in list(self.fault_rules):
            if rule['method'] == method and rule['path'].search(path):
                rule['times'] -= 1
                if rule['times'] <= 0:
                    self.fault_rules.remove(rule)
                return rule['what']
        flaky = self.flaky
        if flaky and method in WRITES and (flaky['paths'] is None or flaky['paths'].search(path)):
            if flaky['rng'].random() < flaky['rate']:
                return 'lost' if flaky['rng'].random() < flaky['lost'] else 'before'
        return None

    @web.middleware
    async def write_fault_middleware(self, request, handler):
        if not request.path.startswith(API_PREFIX) or not (self.fault_rules or self.flaky):
            return await handler(request)
        path = request.path[len(API_PREFIX):]
        what = self._write_fault(request.method, path)
        if what is None:
            return await handler(request)
        self.fault_log.append((what, request.method, path))
        if what == 'before':
            request.transport.close()
            raise ConnectionResetError('pvesim: connection dropped before the request was handled')
        response = await handler(request)
        # Carried out (tasks started, state changed); the answer never leaves.
        request.transport.close()
        raise ConnectionResetError('pvesim: connection dropped after the request was carried out: {0}'.format(
            getattr(response, 'status', '?')))

"""VM behaviour fakepve leaves out, for ShadowPve: rrddata, migrate, hookscripts, MACs, hot-plug and read-back.

Follows qemu-server's PVE/API2/Qemu.pm (update_vm_api, migrate_vm, rrddata) and PVE::QemuServer's
vmconfig_hotplug_pending, write_vm_config and parse_vm_config: a config value reads back as PVE's config file
gives it back (see `readback_value`), not as it was sent. Usage of a VM (what /cluster/resources, status/current and a default rrddata point
show) comes from fakepve's `vm.stats`; `set_stats` sets it.
"""

import contextvars
import json
import re
import time

from fakepve import schema as pve_schema
from fakepve.model import PveError, TaskError
from fakepve.qemu import with_mac
from fakepve.routing import die, split_list
from fakepve.server import ok

from .pvesim_hotplug import (NET_KEY, applies_at_once, cpu_hotplug_problem, memory_hotplug, memory_mib,
                             memory_start_problem)
from .pvesim_rrd import RRD_FORMATS, rrd_fetch
from .pvesim_tasks import finish_task, launch, new_task

__all__ = ['QemuExtras', 'readback_value', 'readback_description', 'unique_tags']

DRIVE_KEY = re.compile(r'(ide|sata|scsi|virtio|efidisk|tpmstate|unused)\d+$')
RRD_FIELDS = ('cpu', 'maxcpu', 'mem', 'maxmem', 'disk', 'maxdisk', 'diskread', 'diskwrite', 'netin', 'netout')
# Perl's \s on a decoded (character) string: what parse_vm_config's s/\s+$// strips.
PERL_TRAILING_SPACE = re.compile(r'[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+\Z')
CONFIG_PATH = '/nodes/{node}/qemu/{vmid}/config'
# Keys update_vm_api handles outside the config schema.
NOT_CONFIG = ('delete', 'revert', 'digest', 'skiplock', 'force', 'background_delay', 'skip_cloud_init',
              'import-working-storage', 'node', 'vmid')


# ------------------------------------------------------------------- read-back: what PVE's config file gives back

def readback_description(text):
    r"""The description PVE reads back after storing `text`; None when the config ends up without one.

    qemu-server src/PVE/QemuServer.pm write_vm_config: a description is written as '#' comment lines
    (split(/\n/), so trailing empty lines vanish; nothing at all for '' or '0', which Perl takes as false);
    parse_vm_config joins the comment lines with '\n' and strips trailing whitespace (finish_description,
    s/\s+$//). encode_text/decode_text keep every other character.
    """
    text = str(text)
    if text in ('', '0'):
        return None
    lines = text.split('\n')
    while lines and lines[-1] == '':
        lines.pop()
    if not lines:
        return None
    return PERL_TRAILING_SPACE.sub('', '\n'.join(lines))


def unique_tags(text, style=None):
    r"""pve-guest-common src/PVE/GuestHelpers.pm get_unique_tags, which update_vm_api and create_vm store tags with.

    PVE::Tools::split_list (',', ';' and whitespace separate); then, unless datacenter.cfg `tag-style` has
    ordering=config, sorted case-insensitively; lower-cased unless it has case-sensitive=1; duplicates dropped;
    joined with ';'.
    """
    style = style or {}
    tags = [t for t in re.split(r'[,;\s]+', str(text or '')) if t]
    case_sensitive = bool(style.get('case-sensitive'))
    if style.get('ordering') != 'config':
        tags = sorted(tags, key=lambda t: t if case_sensitive else t.lower())
    out, seen = [], set()
    for tag in tags:
        tag = tag if case_sensitive else tag.lower()
        if tag not in seen:
            seen.add(tag)
            out.append(tag)
    return ';'.join(out)


def print_net(value):
    """qemu-server src/PVE/QemuServer/Network.pm parse_net + print_net (pve-common JSONSchema.pm
    parse_property_string / print_property_string): model=MAC first (a MAC kept in the case it was given),
    the other keys sorted, booleans as 1/0 (parse_boolean)."""
    out = []
    for part in with_mac(value).split(','):
        key, eq, val = part.partition('=')
        if eq and key in ('firewall', 'link_down', 'host-tunnel'):
            val = pve_schema.parse_boolean(val) or val
        out.append(key + eq + val)
    return ','.join(out)


def _config_schema(key):
    paths = pve_schema.load().paths
    props = paths[CONFIG_PATH]['PUT']['parameters']['properties']
    return pve_schema._prop(props, key)


def option_exists(key):
    """qemu-server src/PVE/QemuServer.pm option_exists: the key is in the VM config schema."""
    return key not in NOT_CONFIG and _config_schema(key) is not None


def readback_value(key, value, tag_style=None):
    """`value` of `key` as GET config gives it back once PVE stored it; None: the key is not in the config.

    update_vm_api (src/PVE/API2/Qemu.pm) re-prints netN (parse_net/print_net) and tags (get_unique_tags);
    write_vm_config/parse_vm_config (src/PVE/QemuServer.pm) strip the description and type every other value
    with check_type: booleans 1/0 and integers as JSON numbers, numbers and strings as the text written
    (a string without a format loses surrounding double quotes).
    """
    if value is None:
        return None
    if key == 'description':
        return readback_description(value)
    if NET_KEY.match(key):
        return print_net(value)
    if key == 'tags':
        return unique_tags(value, tag_style) or None
    sch = _config_schema(key)
    if sch is None:
        return value
    kind = sch.get('type')
    text = ('1' if value else '0') if isinstance(value, bool) else str(value)
    if kind == 'boolean':
        flag = pve_schema.parse_boolean(text)
        return int(flag) if flag is not None else value
    if kind == 'integer':
        return int(text) if re.fullmatch(r'\d+', text) else value
    if kind == 'number':
        return text
    if kind in (None, 'string') and not sch.get('format') and key != 'args':
        found = re.fullmatch(r'"(.*)"', text, re.S)
        return found.group(1) if found else text
    return text


# pve-storage src/PVE/Storage/Plugin.pm @SHARED_STORAGE: parse_config marks storages of these types shared.
SHARED_TYPES = ('iscsi', 'nfs', 'cifs', 'rbd', 'cephfs', 'iscsidirect', 'zfs', 'drbd', 'pbs')
# Storage types whose volume_has_feature has no 'clone' for a base volume (LVMPlugin, ISCSIPlugin,
# ISCSIDirectPlugin; cephfs and pbs hold no images).
NO_LINKED_CLONE = ('lvm', 'iscsi', 'iscsidirect', 'cephfs', 'pbs')
# qemu-server PVE::QemuServer::Drive::valid_drive_names: what QemuConfig->foreach_volume walks.
CLONE_DRIVE_KEY = re.compile(r'^(?:ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$')


def _volume_storages(config):
    """The storage id of each volume of a VM config, as PVE::QemuConfig->foreach_volume walks them: drives whose
    volume is on a storage (not `none`, the host's `cdrom` or a plain path)."""
    for key in sorted(config):
        volume = str(config[key]).split(',')[0]
        if CLONE_DRIVE_KEY.match(key) and volume not in ('none', 'cdrom') and ':' in volume:
            yield volume.split(':')[0]


GiB = 1024 ** 3
# A node's size when the cluster file does not give one (fakepve's fixed figures).
# The record of the qmdestroy task running in this context (see QemuExtras._qm_free): its log gets the warnings.
_DESTROYING = contextvars.ContextVar('pvesim_destroying', default=None)
NODE_DEFAULTS = {'maxcpu': 4, 'maxmem': 8 * GiB, 'mem': 2 * GiB, 'cpu': 0.02}


class QemuExtras(object):
    """Mixin of ShadowPve (in front of FakePve): VM routes and overrides."""

    def _init_qemu_extras(self):
        # vmid -> raw rrd points (dicts with time and fields).
        self.rrd = {}
        # Which PVE answers rrddata: 'pve9' (pve-vm-9.0 RRD files) or 'pve8' (pve2-vm; cluster file `rrd_format`).
        self.rrd_format = 'pve9'
        # The clock rrddata cuts its window at (None: the wall clock), for tests that inject a fixed time.
        self.rrd_now = None
        # PVE 9 only: when the cluster was upgraded from PVE 8 (epoch seconds; None: no old pve2-vm files). Samples up to
        # then are in the old file, which RRD.pm still reads for the part of a window before it.
        self.rrd_upgraded_at = None
        # PVE seconds a migration takes (scaled by time_scale).
        self.migrate_secs = 5
        # datacenter.cfg `tag-style` (ordering, case-sensitive) as get_unique_tags reads it; {}: PVE's default.
        self.tag_style = {}
        # fail_clone_pool_add: [message, clones left to fail]; newid -> (pool, target) of the clones it fails.
        self.clone_pool_fault = None
        self._clone_pool_failing = {}
        # newid -> the node a clone runs on (its volumes are cloned or allocated there; see _qm_alloc)
        self._clone_node = {}
        # pvestatd (see _statd_view): reads of /cluster/resources before a VM's name, status and usage show there;
        # 0 shows them at once (fakepve's way). vmid -> the fields the last round published.
        self.statd_lag_reads = 1
        self._statd = {}
        self._statd_pending = {}
        # vmids whose status pmxcfs dropped (statd_expire_offline): listed nameless while their node is offline
        self._statd_expired = set()
        # fail_vdisk_free: storage id -> [message, removals left to fail (None: all)].
        self.vdisk_free_faults = {}

    # ------------------------------------------------------------ test helpers

    def fail_vdisk_free(self, sid, message=None, times=None):
        """Make pve-storage vdisk_free fail for volumes on storage ``sid`` (``times`` removals; None: until
        ``vdisk_free_faults`` is cleared). qemu-server QemuServer.pm
        destroy_vm catches it: `log_warn("Could not remove disk '$volid', check manually: $@")`, the volume stays,
        the VM is destroyed and its task ends "WARNINGS: n" (pve-common RESTEnvironment fork_worker counts
        log_warn). The storage's own error text is this simulator's (PVE shows the plugin's)."""
        self.vdisk_free_faults[sid] = [message or "volume deactivation failed: device or resource busy", times]

    def _qm_free(self, volid):
        sid = volid.split(':', 1)[0] if ':' in str(volid) else None
        fault = self.vdisk_free_faults.get(sid)
        record = _DESTROYING.get()
        if fault is None or record is None:
            return super()._qm_free(volid)
        if fault[1] is not None:
            fault[1] -= 1
            if fault[1] <= 0:
                del self.vdisk_free_faults[sid]
        line = "WARN: Could not remove disk '{0}', check manually: {1}".format(volid, fault[0])
        if line not in record['log']:  # destroy_vm frees each volume once ($volids)
            record['log'].append(line)
            record['_warnings'] = record.get('_warnings', 0) + 1

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        if ttype != 'qmdestroy':
            return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)
        # qemu-server destroy_vm logs a disk it cannot free with log_warn and goes on; the worker then ends
        # "WARNINGS: n" (pve-common RESTEnvironment fork_worker), which fakepve's task runner cannot end with.
        upid, record = new_task(self, node, ttype, tid, user, log)

        async def run():
            token = _DESTROYING.set(record)
            error = None
            try:
                if vm is not None and lock:
                    await self.acquire(vm, upid)
                try:
                    note = await body()
                    if note:
                        record['log'].append(note)
                finally:
                    if vm is not None and lock:
                        self.release(vm, upid)
            except TaskError as exc:
                error = str(exc)
                record['log'].append(error)
            finally:
                _DESTROYING.reset(token)
            finish_task(record, error, record.pop('_warnings', 0))

        await launch(self, run)
        return upid

    def inject_rrd(self, vmid, points):
        """Serve this series from rrddata for the VM: points are dicts with `time` (epoch seconds) and fields
        (cpu, maxcpu, mem, maxmem, netin, netout, ...). Replaces any earlier series; [] goes back to the default."""
        self.rrd[int(vmid)] = sorted((dict(p) for p in points), key=lambda p: p['time'])

    def set_stats(self, vmid, **stats):
        """Set the VM's current usage (cpu as a fraction of maxcpu, mem bytes, netin/netout bytes, ...)."""
        vm = self.vm(int(vmid))
        if vm is None:
            raise KeyError('no VM {0}'.format(vmid))
        vm.stats.update(stats)

    def add_snippet(self, volid, size=512):
        """Place a file on snippets storage ('local:snippets/name.py'), as an operator copies it there."""
        sid, _, name = str(volid).partition(':')
        if not name.startswith('snippets/') or '/' in name[len('snippets/'):]:
            raise ValueError('a snippet volume looks like <storage>:snippets/<file>, not {0!r}'.format(volid))
        self.store_file(sid, name[len('snippets/'):], size, content='snippets')

    def fail_clone_pool_add(self, times=1, message="cfs lock 'file-user_cfg' error: got lock request timeout"):
        """The next `times` clones into a pool fail where qemu-server clone_vm adds the new VM to the pool, after the
        disks are cloned and the config is written (and, with `target`, already moved to the target node): the
        worker's cleanup frees the new volumes and unlinks the config at its old path, so a clone with `target`
        leaves the VM on the target node, unlocked, its disks gone; the task ends "clone failed: can't add VM <id>
        to pool '<pool>': <message>"."""
        self.clone_pool_fault = [message, int(times)]

    def set_node_size(self, node, maxcpu=None, maxmem=None, mem=None, cpu=None):
        """A node's CPUs, memory (bytes), the memory its host uses besides the VMs (bytes) and its CPU load."""
        state = self.nodes[node]
        for key, value in (('maxcpu', maxcpu), ('maxmem', maxmem), ('mem', mem), ('cpu', cpu)):
            if value is not None:
                state[key] = value

    def node_usage(self, node):
        """The usage fields of an online node: its size, and memory = the host's own + its running VMs' (as PVE's
        pvestatd reports the host's used memory, which the VMs' memory is part of)."""
        state = self.nodes.get(node, {})
        size = dict((k, state.get(k, v)) for k, v in NODE_DEFAULTS.items())
        used = sum(int(self._vm_usage(vm).get('mem') or 0) for vm in self.vms
                   if vm.node == node and vm.status == 'running')
        return {'cpu': size['cpu'], 'maxcpu': int(size['maxcpu']), 'mem': int(size['mem']) + used,
                'maxmem': int(size['maxmem']), 'disk': 4 * GiB, 'maxdisk': 64 * GiB, 'uptime': 3600}

    def storage_shared(self, sid):
        """pve-storage Plugin.pm parse_config: `shared` as set, or by type (@SHARED_STORAGE)."""
        store = self.storages.get(sid) or {}
        return bool(store.get('shared')) or store.get('type') in SHARED_TYPES

    def _vm_usage(self, vm):
        # qemu-server QemuServer.pm vmstatus: `cpus` (maxcpu) is the running config's vcpus when set, else
        # sockets x cores; maxmem its memory. Pending values do not count until the next start.
        use = super()._vm_usage(vm)
        if vm.config.get('vcpus') not in (None, '') and 'maxcpu' not in vm.stats:
            use['maxcpu'] = int(vm.config['vcpus'])
        return use

    # ------------------------------------------------------------------ routes

    def _routes_shadow_qemu(self):
        one = '/nodes/{node}/qemu/{vmid}'
        return [('GET', one + '/rrddata', self._qm_rrddata), ('POST', one + '/migrate', self._qm_migrate)]

    # ------------------------------------------------------------ node usage

    def _with_node_usage(self, response):
        body = json.loads(response.text)
        for item in body.get('data') or []:
            if isinstance(item, dict) and item.get('type') == 'node' and item.get('status') == 'online':
                item.update(self.node_usage(item['node']))
        return ok(body.get('data'))

    async def _nodes(self, request):
        return self._with_node_usage(await super()._nodes(request))

    async def _resources(self, request):
        response = self._with_node_usage(await super()._resources(request))
        # pve-manager PVE/Service/pvestatd.pm update_qemu_status records `$d->{qmpstatus} || $d->{status}` for
        # each VM, and PVE/API2/Cluster.pm resources (PVE/API2Tools.pm extract_vm_stats) answers that as the VM's
        # `status`: a VM whose process runs shows QEMU's own status (paused, io-error, prelaunch, postmigrate, ...).
        body = json.loads(response.text)
        for item in body.get('data') or []:
            if isinstance(item, dict) and item.get('type') == 'qemu' and item.get('status') == 'running':
                vm = self.vm(int(item['vmid']))
                if vm is not None:
                    item['status'] = self._listed_status(vm)
        if not self.statd_lag_reads:
            return ok(body.get('data'))
        return ok([self._statd_view(item) for item in body.get('data') or []])

    # Fields of a VM's /cluster/resources entry that come from the status pvestatd broadcasts, not from the config.
    STATD_FIELDS = ('name', 'status', 'template', 'uptime', 'maxcpu', 'cpu', 'maxmem', 'mem', 'maxdisk', 'disk',
                    'netin', 'netout', 'diskread', 'diskwrite', 'memhost')

    @staticmethod
    def _listed_status(vm):
        """The status pvestatd records: `$d->{qmpstatus} || $d->{status}` (a running VM's QMP status)."""
        return vm.qmpstatus if vm.status == 'running' and vm.qmpstatus else vm.status

    def _config_fields(self, item):
        """What of a VM's entry PVE gives without pvestatd's status (Cluster.pm reads lock and tags from the config)."""
        return dict((k, v) for k, v in item.items() if k not in self.STATD_FIELDS)

    def _statd_view(self, item):
        """A VM's entry as PVE lists it: pve-manager PVE/API2/Cluster.pm ``resources`` takes only ``lock`` and
        ``tags`` from the config (``get_guest_config_properties``); name, status, template and usage come from
        API2Tools.pm ``extract_vm_stats``, i.e. from the status pvestatd broadcasts every 10 s (PVE/Service/pvestatd.pm
        ``$updatetime``; qemu-server ``vmstatus`` gives ``name``). A VM made since the last round is listed with
        status ``unknown`` and no name; a new VM that reuses a vmid shows the old one's fields (pmxcfs keeps an
        entry 5 minutes). Modelled by reads: a change shows after ``statd_lag_reads`` reads of the list."""
        if item.get('type') != 'qemu':
            return item
        vmid = int(item['vmid'])
        if vmid in self._statd_expired:
            if not self.nodes.get(item.get('node'), {}).get('online', True):
                return dict(self._config_fields(item), status='unknown')
            self._statd_expired.discard(vmid)
        live = dict((k, item[k]) for k in self.STATD_FIELDS if k in item)
        shown = self._statd.get(vmid)
        if shown is not None and all(shown.get(k) == live.get(k) for k in ('name', 'status', 'template')):
            self._statd[vmid] = live                   # usage moves on; what identifies the VM did not change
            self._statd_pending.pop(vmid, None)
            return item
        waited = self._statd_pending.get(vmid, 0) + 1
        if waited > self.statd_lag_reads:
            self._statd[vmid] = live
            self._statd_pending.pop(vmid, None)
            return item
        self._statd_pending[vmid] = waited
        return dict(self._config_fields(item), **(shown if shown is not None else {'status': 'unknown'}))

    def statd_expire_offline(self):
        """Five minutes after a node went silent: pmxcfs (status.c) has dropped its VMs' status, so they are listed
        with their config's lock and tags only, status 'unknown' and no name, until the node is back."""
        for vm in self.vms:
            if not self.nodes.get(vm.node, {}).get('online', True):
                self._statd_expired.add(int(vm.vmid))
                self._statd.pop(int(vm.vmid), None)

    def statd_round(self):
        """Publish every VM's current fields at once (a pvestatd round: the cluster as loaded, before any request)."""
        for vm in self.vms:
            item = {'name': vm.name, 'status': self._listed_status(vm), 'template': 1 if vm.template else 0}
            item.update(self._vm_usage(vm))
            self._statd[int(vm.vmid)] = dict((k, v) for k, v in item.items() if k in self.STATD_FIELDS)
        self._statd_pending.clear()

    async def _do_start(self, vm, user, p):
        problem = self.start_problem(vm, vm.node)
        if vm.ha_managed and not vm.template:
            # PVE's API only asks HA to start it (see HaApi.ha_start); the LRM's start then fails as the task below
            # would, and the CRM relocates it or puts it in its error state
            if problem and vm.status != 'running' and not self.ha_in_error(vm):
                return await self.ha_start(vm, user, problem)
        elif problem:
            async def body():
                raise TaskError(problem)
            return await self.task(vm.node, 'qmstart', vm.vmid, user, body, vm=vm)
        return await super()._do_start(vm, user, p)

    def start_problem(self, vm, node):
        """Why the start worker would fail for ``vm`` on ``node``, or None. qemu-server QemuServer.pm
        config_to_command (vm_start): "MAX n vcpus allowed per VM on this node" when sockets * cores exceed the
        node's CPUs; with memory hot-plug, Memory.pm config's "NUMA needs to be enabled for memory hotplug",
        "minimum memory must be 1024MB" and "memory size (M) must be aligned to D for hotplugging" (see
        pvesim_hotplug.memory_start_problem), all on the config with the pending values applied; the volumes (see
        _volumes_unavailable); and fakepve's `start_error` fault for an HA-managed VM (fakepve's own HA start does
        not look at it)."""
        if vm.template:
            return None
        # vm_start applies the pending changes first (vmconfig_apply_pending), then builds the command line
        config = self.next_start_config(vm)
        cpus = self.node_usage(node)['maxcpu']
        if int(config.get('sockets') or 1) * int(config.get('cores') or 1) > cpus:
            return 'MAX {0} vcpus allowed per VM on this node'.format(cpus)
        problem = memory_start_problem(config) or self._volumes_unavailable(vm, node)
        if problem is None and vm.ha_managed and vm.start_error:
            problem = vm.start_error
        return problem

    @staticmethod
    def next_start_config(vm):
        """The config a start uses: the config with the pending values applied (deletes removed)."""
        config = dict(vm.config)
        for key, value in vm.pending.items():
            if value is None:
                config.pop(key, None)
            else:
                config[key] = value
        return config

    def _volumes_unavailable(self, vm, node=None):
        """Why the start worker cannot activate the VM's volumes on its node, or None. qemu-server vm_start
        activates every volume (PVE::Storage::activate_volumes); pve-storage Storage.pm activate_storage calls
        storage_check_enabled for the local node: "storage 'X' is disabled", or, for a storage whose `nodes` does not
        list the node, "storage 'X' is not available on node 'Y'" (a clone with `target` does not check this: the
        VM is cloned there and fails here)."""
        for sid in _volume_storages(vm.config):
            if sid in self.storages:
                try:
                    self._check_enabled(sid, node or vm.node)
                except PveError as exc:
                    return exc.message
        return None

    # ------------------------------------------------------------------- clone

    def _qm_alloc(self, sid, vmid, fmt, size, linked_from=None):
        # pve-storage Storage.pm vdisk_clone / vdisk_alloc run activate_storage on the node the clone runs on, whose
        # storage_check_enabled fails the clone task for a storage disabled or not configured there ("clone failed:
        # storage 'X' is disabled"; qemu-server clone_vm's worker then removes what it made).
        new = self.vm(int(vmid))
        node = self._clone_node.get(int(vmid)) if new is not None and new.lock == 'clone' else None
        if node is not None and sid in self.storages:
            self._check_enabled(sid, node)          # fakepve's storage_check_enabled: PVE's two messages
        return super()._qm_alloc(sid, vmid, fmt, size, linked_from=linked_from)

    async def _qm_clone(self, v, user):
        node, target = v['node'], v.get('target')
        self._clone_node[int(v['newid'])] = node       # the task may run later (time_scale): read by _qm_alloc
        src = self.vm(int(v['vmid']))
        if target and target not in (node, 'localhost') and src is not None and src.node == node:
            # qemu-server src/PVE/API2/Qemu.pm clone_vm ($check_storage_access_clone): a `target` clone needs every
            # volume of the source (disks, and CD-ROM images on a storage) on shared storage, full clones too.
            config = src.snapshots.get(v['snapname'], src.config) if v.get('snapname') else src.config
            if not all(self.storage_shared(sid) for sid in _volume_storages(config)):
                raise die("can't clone VM to node '{0}' (VM uses local storage)".format(target))
        full = v.get('full')
        if src is not None and v.get('snapname') and v['snapname'] in src.snapshots:
            self._check_snapshot_copy(src.snapshots[v['snapname']])
        if src is not None and (full is None and src.template or full in (0, '0', False, 'false')):
            for key in sorted(src.config):
                text = str(src.config[key])
                volume = text.split(',')[0]
                if not CLONE_DRIVE_KEY.match(key) or 'media=cdrom' in text or ':' not in volume or key == 'tpmstate0' \
                        or 'cloudinit' in volume:
                    continue
                store = self.storages.get(volume.split(':')[0]) or {}
                if store.get('type') in NO_LINKED_CLONE:
                    # qemu-server clone_vm: "Linked clone feature is not supported for '$volid' ($opt)" when the
                    # storage plugin's volume_has_feature(..., 'clone', ...) is false (LVMPlugin: no clone).
                    raise die("Linked clone feature is not supported for '{0}' ({1})".format(volume, key))
        if self.clone_pool_fault and v.get('pool') and not self._qm_taken(int(v['newid'])):
            self.clone_pool_fault[1] -= 1
            self._clone_pool_failing[int(v['newid'])] = (v['pool'], target if target not in (node, 'localhost') else None,
                                                         self.clone_pool_fault[0])
            if self.clone_pool_fault[1] <= 0:
                self.clone_pool_fault = None
        # clone_vm: the new config (with `description` when given) goes through write_vm_config.
        return await super()._qm_clone(self._readback_params(v), user)

    def _check_snapshot_copy(self, config):
        # qemu-server src/PVE/API2/Qemu.pm clone_vm ($load_and_check, before the task): a clone of a snapshot copies
        # every disk and cloud-init drive (plain CD-ROMs are copied as configuration) and dies "Full clone feature
        # is not supported for a snapshot of '$volid' ($opt)" where pve-storage volume_has_feature('copy', $volid,
        # $snapname) is false: ZFSPoolPlugin.pm and ZFSPlugin.pm offer `copy => { base => 1, current => 1 }` only;
        # Plugin.pm (dir, nfs, cifs) and LVMPlugin.pm copy a snapshot of a qcow2 volume only.
        for key in sorted(config):
            text = str(config[key])
            volume = text.split(',')[0]
            if not CLONE_DRIVE_KEY.match(key) or ':' not in volume or \
                    ('media=cdrom' in text and 'cloudinit' not in volume):
                continue
            store = self.storages.get(volume.split(':')[0]) or {}
            kind = store.get('type')
            if kind in ('zfspool', 'zfs') or \
                    (kind in ('dir', 'nfs', 'cifs', 'lvm') and not volume.endswith('.qcow2')):
                raise die("Full clone feature is not supported for a snapshot of '{0}' ({1})".format(volume, key))

    def _pool_join(self, name, vmid):
        failing = self._clone_pool_failing.pop(int(vmid), None)
        if failing is None:
            return super()._pool_join(name, vmid)
        # qemu-server src/PVE/API2/Qemu.pm clone_vm: with `target` the config file was renamed to the target node
        # before PVE::AccessControl::add_vm_to_pool (lock_user_config: "can't add VM <id> to pool '<pool>': ...")
        # died; the eval's cleanup frees the new volumes (vdisk_free) and unlinks $conffile, the OLD path: the
        # moved config stays. Without `target` the unlink removes it.
        pool, target, message = failing
        vm = self.vm(int(vmid))
        own = re.compile(r'(?:^|/)vm-{0}-disk-\d+'.format(int(vmid)))
        for key in sorted(vm.config):
            if CLONE_DRIVE_KEY.match(key):
                volume = str(vm.config[key]).split(',')[0]
                if ':' in volume and own.search(volume.split(':', 1)[1]):
                    self._qm_free(volume)
        if target:
            vm.node = target
        else:
            self.vms.remove(vm)
        raise TaskError("clone failed: can't add VM {0} to pool '{1}': {2}".format(vmid, pool, message))

    # ----------------------------------------------------------------- rrddata

    async def _qm_rrddata(self, v, user):
        # qemu-server API2/Qemu.pm rrddata -> pve-cluster RRD.pm create_rrd_data("pve-vm-9.0/<vmid>") (PVE 9) or
        # ("pve2-vm/<vmid>") (PVE 8): the window ends at the current time, whatever the series holds.
        vm = self.find(v['node'], v['vmid'])
        if self.rrd_format not in RRD_FORMATS:
            raise PveError(500, 'simulator: rrd_format must be one of {0}'.format(', '.join(RRD_FORMATS)))
        now = time.time() if self.rrd_now is None else self.rrd_now
        series = self.rrd.get(vm.vmid)
        if not series:
            # No injected series: the VM's current usage as its newest complete minute.
            use = self._vm_usage(vm)
            point = {'time': int(now) // 60 * 60}
            point.update((k, use[k]) for k in RRD_FIELDS if k in use)
            series = [point]
        return rrd_fetch(series, v['timeframe'], v.get('cf') or 'AVERAGE', now=now, fmt=self.rrd_format,
                         upgraded_at=self.rrd_upgraded_at)

    # ----------------------------------------------------------------- migrate

    async def _qm_migrate(self, v, user):
        node, target = v['node'], v['target']
        vm = self.find(node, v['vmid'])
        if target == node:
            raise PveError(400, 'Parameter verification failed.', {'target': 'target is local node.'})
        self.need_quorum()
        if target not in self.nodes:
            raise PveError(500, "no such cluster node '{0}'".format(target))
        if vm.status == 'running' and not v.get('online'):
            raise PveError(500, "can't migrate running VM without --online")
        self._check_lock(vm)
        offline = not self.nodes[target].get('online', True)

        async def body():
            started = time.time()
            if offline:
                raise TaskError('migration aborted')
            self._qm_lock(vm, 'migrate')
            try:
                await self.pause(self.migrate_secs)
                vm.node = target
            finally:
                self._qm_lock(vm, None)
            return 'migration finished successfully (duration {0})'.format(
                time.strftime('%H:%M:%S', time.gmtime(time.time() - started)))
        log = ['starting migration of VM {0} to node {1!r} (192.0.2.x)'.format(vm.vmid, target)]
        if offline:
            log.append("ERROR: migration aborted (duration 00:00:03): Can't connect to destination address using "
                       'public key')
        if vm.ha_managed:
            return await self.task(node, 'hamigrate', vm.vmid, user, body, vm=vm,
                                   log=['Requesting HA migration for VM {0} to node {1}'.format(vm.vmid, target)])
        return await self.task(node, 'qmigrate', vm.vmid, user, body, vm=vm, log=log)

    # ------------------------------------------------------- config: hookscript

    def _check_hookscript(self, values):
        """PVE::GuestHelpers::check_hookscript, raised as PVE raises it: a 400 on `hookscript`."""
        volid = values.get('hookscript')
        if not volid:
            return
        sid, _, name = str(volid).partition(':')
        if sid not in self.storages:
            raise PveError(400, 'Parameter verification failed.',
                           {'hookscript': "storage '{0}' does not exist".format(sid)})
        if not name.startswith('snippets/'):
            raise PveError(400, 'Parameter verification failed.',
                           {'hookscript': "'{0}' is not in the snippets directory".format(volid)})
        if name not in self.storages[sid].get('volumes', {}):
            raise PveError(400, 'Parameter verification failed.',
                           {'hookscript': "script '{0}' does not exist".format(volid)})

    async def _config_get(self, request):
        # PVE answers with the pending changes applied unless current=1 asks for the running values
        # (fakepve always gives the running ones).
        from fakepve.server import ok
        if str(request.query.get('current', '0')).lower() in ('1', 'true', 'yes', 'on') \
                or request.query.get('snapshot'):
            return await super()._config_get(request)
        vm = self._vm(request, 'VM.Audit')
        cfg = self.next_start_config(vm)
        if 'memory' in cfg:
            cfg['memory'] = str(cfg['memory'])
        cfg['digest'] = vm.digest()
        return ok(cfg)

    async def _config_put(self, request):
        from fakepve.server import params
        values = await params(request)
        self._check_hookscript(values)
        self._check_balloon(self._vm(request), values)
        return await super()._config_put(request)

    async def _config_post(self, request):
        from fakepve.server import params
        values = await params(request)
        self._check_hookscript(values)
        self._check_balloon(self._vm(request), values)
        return await super()._config_post(request)

    @staticmethod
    def _check_balloon(vm, values):
        """qemu-server API2/Qemu.pm update_vm_api `$load_and_check_config` (before anything is written): with
        memory or balloon set, "balloon value too large (must be smaller than assigned memory)" when the balloon
        (the one sent, else the pending or configured one) exceeds the memory (sent, else pending, else configured).
        A plain die: HTTP 500."""
        if not values.get('memory') and values.get('balloon') in (None, ''):
            return
        memory = values.get('memory') or vm.pending.get('memory') or vm.config.get('memory')
        if values.get('balloon') not in (None, ''):
            balloon = values['balloon']
        else:
            balloon = vm.pending.get('balloon') or vm.config.get('balloon')
        if balloon not in (None, '') and int(balloon) and int(balloon) > memory_mib(memory):
            raise PveError(500, 'balloon value too large (must be smaller than assigned memory)')

    async def _qm_create(self, v, user):
        self._check_hookscript(v)
        # create_vm stores the parameters through write_vm_config and tags through get_unique_tags.
        return await super()._qm_create(self._readback_params(v), user)

    def add_vm(self, *args, **kwargs):
        # A VM put in place (the lab's golden templates) reads back from its config file like any other.
        vm = super().add_vm(*args, **kwargs)
        self._readback_config(vm, list(vm.config))
        return vm

    # -------------------------------------------------------- config: read-back

    def _readback_params(self, values):
        out = {}
        for key, value in values.items():
            if option_exists(key):
                value = readback_value(key, value, self.tag_style)
                if value is None:
                    continue
            out[key] = value
        return out

    def _readback_config(self, vm, keys):
        """The config (and pending values) of `keys` as parse_vm_config gives them back after write_vm_config."""
        for key in keys:
            if key in vm.config:
                value = readback_value(key, vm.config[key], self.tag_style)
                if value is None:
                    vm.config.pop(key)
                else:
                    vm.config[key] = value
            if vm.pending.get(key) is not None:
                value = readback_value(key, vm.pending[key], self.tag_style)
                vm.pending[key] = '' if value is None else value

    @staticmethod
    def _check_delete(updates):
        """src/PVE/API2/Qemu.pm update_vm_api's checks of `delete`, made before anything is written. Deleting a
        key the config does not have is no error there: it warns ("cannot delete '...' - not set in current
        configuration!") and goes on, as fakepve's delete does."""
        for key in split_list(str(updates.get('delete') or '')):
            key = 'ide2' if key == 'cdrom' else key
            if updates.get(key) is not None:
                raise PveError(400, 'Parameter verification failed.',
                               {'delete': "you can't use '-{0}' and -delete {0}' at the same time".format(key)})
            if not option_exists(key):
                raise PveError(400, 'Parameter verification failed.', {'delete': "unknown option '{0}'".format(key)})

    # ---------------------------------------------------- config: MAC, hot-plug

    async def _apply_config(self, vm, user, p):
        # Lab guests bound to devices (pvesim_links.py) get their link state from the resulting config.
        links = self._link_states(vm) if hasattr(self, '_link_states') else None
        try:
            await self._apply_config_hot(vm, user, p)
        finally:
            if links is not None:
                self._sync_links(vm, links)

    async def _apply_config_hot(self, vm, user, p):
        updates = dict(p)
        self._check_delete(updates)
        for key in list(updates):
            if NET_KEY.match(key) and updates[key] is not None:
                # parse_net: a NIC given without a MAC gets a new one; a given MAC is kept.
                updates[key] = print_net(updates[key])
        running = vm.status == 'running'
        before = dict(vm.config)
        await super()._apply_config(vm, user, updates)
        touched = [k for k in updates if k not in NOT_CONFIG] + split_list(str(updates.get('delete') or ''))
        if not running:
            self._readback_config(vm, touched)
            return
        # qemu-server API2/Qemu.pm update_vm_api writes every change to [PENDING], then
        # QemuServer.pm vmconfig_hotplug_pending moves what the running VM takes at once into the config (judged
        # against the running config as it was); the rest stays pending until the next start.
        deletes = [k for k in str(updates.get('delete', '') or '').split(',') if k]
        sets = [k for k in updates if k not in ('delete', 'digest', 'skiplock', 'revert')]
        errors = {}
        for key in sets + deletes:
            if DRIVE_KEY.match(key):
                continue  # disk hot-plug is not modelled: fakepve's choice stands
            deleting = key in deletes and key not in sets
            value = None if deleting else (vm.pending[key] if key in vm.pending else vm.config.get(key))
            hot = applies_at_once(key, value, before, deleting=deleting)
            if hot and key in ('memory', 'vcpus'):
                value, problem = self._hot_resize(key, value, before)
                if problem:
                    # vmconfig_hotplug_pending's $add_error: the value stays pending, update_vm_api raises them all
                    errors[key] = 'hotplug problem - ' + problem
                    hot = False
            if hot:
                vm.pending.pop(key, None)
                if deleting:
                    vm.config.pop(key, None)
                else:
                    vm.config[key] = value
            else:
                # fakepve writes some keys (agent, startup) straight into the config: PVE keeps them pending.
                vm.pending[key] = value
                if key in before:
                    vm.config[key] = before[key]
                else:
                    vm.config.pop(key, None)
        self._readback_config(vm, touched)
        # guest-common AbstractConfig.pm cleanup_pending: a pending value equal to the running one, or a pending
        # delete of an absent key, is no change.
        for key, value in list(vm.pending.items()):
            if (value is None and key not in vm.config) or \
                    (value is not None and key in vm.config and str(value) == str(vm.config[key])):
                del vm.pending[key]
        if errors:
            raise PveError(400, 'Parameter verification failed.', errors)

    @staticmethod
    def _hot_resize(key, value, running):
        """(value written, problem) of a memory or vcpus hot-plug into a VM running with config `running`:
        Memory.pm qemu_memory_hotplug (DIMM steps; the minimum) and QemuServer.pm qemu_cpu_hotplug (maxcpus)."""
        if key == 'vcpus':
            return value, cpu_hotplug_problem(running, value)
        try:
            return str(memory_hotplug(running, value)), None
        except ValueError as exc:
            return value, str(exc)

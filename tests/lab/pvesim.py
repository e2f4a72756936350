"""The PVE simulator of the shadownet.proxmox tests and lab: fakepve, extended with what the collection touches.

`ShadowPve` subclasses `fakepve.FakePve` (which validates every request against the real PVE 9 API schema and
models tasks, config locks, VMs, linked clones, pools, storage, permissions and faults) and adds state where
fakepve only checks the schema. Everything runs on loopback with a real TLS certificate.

What is modelled on top of fakepve
----------------------------------
- SDN (pvesim_sdn.py): zones (simple, vlan with `bridge`, and the other types stored as sent), vnets (`alias`,
  `tag`, `zone` must exist, vlan zones need a tag), subnets (`<zone>-<net>-<prefix>` ids, gateway inside the
  subnet). Changes are pending until `PUT /cluster/sdn` applies them: GET lists the pending-inclusive config,
  `pending=1` adds `state` (new/changed/deleted) and `pending` values, `running=1` shows the applied config.
  Duplicate ids, missing zones or vnets, a zone or vnet still in use and a vnet id longer than 8 characters fail
  with PVE's messages. The PVE 9 global SDN lock: `POST /cluster/sdn/lock` gives a token; while it is held,
  every SDN write, apply and rollback needs `lock-token`; `DELETE /cluster/sdn/lock` (or `release-lock=1` on
  apply/rollback) releases it; `POST /cluster/sdn/rollback` discards pending changes.
- Node networks (pvesim_cluster.py): `/nodes/{node}/network` with eno1 and vmbr0 on each node; interfaces
  created, updated and deleted go to a pending config (PVE's interfaces.new); `PUT /nodes/{node}/network`
  applies it (a `srvreload` task), `DELETE /nodes/{node}/network` reverts it. GET shows the pending-inclusive
  config; an interface not applied yet has no `active` flag, as on PVE.
- HA (pvesim_cluster.py): `/cluster/ha/resources` (`vm:<id>` of an existing VM; sets the VM's HA state so
  start/stop go through HA as fakepve models it; delete with purge takes it out of rules) and the PVE 9 rules
  `/cluster/ha/rules` of type `node-affinity` (nodes, strict) and `resource-affinity` (resources, affinity),
  with `digest` and `order`; duplicate ids, unmanaged resources, unknown nodes and stale digests fail. Every
  feasibility check of pve-ha-manager's `check_feasibility` refuses a written rule that fails it ("Rule '<id>'
  is invalid.", as a plain 500 like PVE's lock_ha_domain), and GET lists each rule's `errors`; negative rules
  are counted against the CRM's node list (`/cluster/ha/status/manager_status` `node_status`), empty until a CRM
  is master: `ha_crm_start_secs` PVE seconds after the first HA resource (never while `ha_crm_running` is
  False). `disable=0` is dropped on create and update, as PVE does; `delete=disable` enables a rule.
  HA groups not migrated yet (`ha_groups`): rule writes refused, `/cluster/ha/groups` listed (refused once
  migrated), each used group listed as rule `ha-group-<group>`; `ha_migrate_groups()` is the CRM's migration.
  With `enable_ha_recovery`, VMs of an offline node show `hastate` fence, then recovery (no allowed node, or
  `ha_recovery_blocked`) or move (started: running; stopped: kept stopped); `/cluster/resources` lists `hastate`.
  A stop or shutdown of an HA-managed VM is a `hastop` task that ends at once with the VM still running (qemu-server vm_stop); the
  VM stops, and its resource's state becomes `stopped`, once `ha_crm_polls` later requests have read its state
  (status/current, /cluster/resources, the node's VM list) and `ha_delay` PVE seconds have passed, at every
  time scale; a resource removed meanwhile drops the stop. destroy refuses the running VM; with purge its
  task takes the VM out of HA and its rules. Node entries of `/cluster/resources` carry `hastate` (the CRM's
  node_status, pve-manager Cluster.pm resources) once the CRM has node status; `set_node_maintenance(node)` is
  `ha-manager crm-command node-maintenance enable`: the node's state becomes `maintenance` at the CRM's next
  round and its started HA services move to another online node, and back once it is disabled (pve-ha-manager
  NodeStatus.pm update, Manager.pm next_state_started; `ha_migrations`).
- Guest agent (pvesim_agent.py): every agent command first checks, as qemu-server Agent.pm assert_agent_available
  does, that the config has `agent` ("No QEMU guest agent configured"), the VM runs ("VM <id> is not running") and
  the agent answers ("QEMU guest agent is not running"); `file-read` reads files put into the guest
  (`put_guest_file`, `POST /_sim/guest_file`) with offset, count, decode, `bytes-read` and `truncated` as
  API2/Qemu/Agent.pm gives them, a missing file failing with the agent's error.
- VM status and destroy (pvesim_qemu.py): `/cluster/resources` gives a running VM's QMP status as its `status`
  (paused, ...; pve-manager pvestatd.pm update_qemu_status); `fail_vdisk_free(sid)` makes the removal of volumes on
  a storage fail in destroy, which logs "WARN: Could not remove disk '<volid>', check manually: ..." and ends
  "WARNINGS: n" with the VM gone (qemu-server QemuServer.pm destroy_vm log_warn). Protection and a running process
  refuse the destroy (fakepve, as qemu-server destroy_vm).
- VMs (pvesim_qemu.py, pvesim_rrd.py): `rrddata` as pve-cluster RRD.pm create_rrd_data answers it, from a series
  of raw samples injected per VM (`inject_rrd`), else one minute of the VM's current usage (`set_stats`): PVE 9's
  shapes by default (hour 60 x 60 s, day 1440 x 60 s, week 336 x 30 min, month 1440 x 30 min, year 1440 x 6 h;
  the newest row dropped while it is still empty), PVE 8's with `rrd_format: pve8` in the cluster file (70 rows
  each: hour 60 s, day 30 min, week 3 h, month 12 h, year 7 days; the empty newest row kept); rows are labelled
  with the end of the interval they consolidate, AVERAGE or MAX over one-minute data points with xff 0.5, a gap
  is a row with only `time`, and the window ends at the current time (`rrd_now` fixes that clock for a test);
  `POST .../migrate` moves the VM (a task; refused for the same node or a running VM
  without `online`, TASK ERROR when the target is offline); `hookscript` must name an existing snippet
  (`add_snippet`; only root@pam itself may set it, as on PVE); a net device without a MAC gets a new one on
  config PUT/POST, a given MAC is kept; on a running VM (pvesim_hotplug.py, qemu-server
  vmconfig_hotplug_pending) `$fast_plug_option` keys and cloud-init keys apply at once, NIC changes need
  `network` in `hotplug` (the default) unless only bridge, tag, rate, firewall or link_down change, `vcpus`
  needs `cpu` and no more than the running sockets x cores (qemu_cpu_hotplug, else 400 "hotplug problem", the value
  left pending), `memory` needs `memory` and `numa` on and goes in DIMM steps from 1024 MiB, never below it
  (Memory.pm qemu_memory_hotplug), `agent` applies only when the agent is already on and only
  `fstrim_cloned_disks` changes, and `cores`, `sockets` and the rest stay pending until the next start, as in PVE;
  GET config shows the pending values unless `current=1` asks for the running ones, as PVE does; a pending
  value equal to the running one is dropped (cleanup_pending). A config reads back as PVE's config file gives it
  back (write_vm_config/parse_vm_config): the description without trailing whitespace (and none for '' or '0'),
  tags through get_unique_tags, NICs re-printed (booleans 1/0), booleans and integers typed; `delete` of an
  unknown key or of a key also set is refused (update_vm_api), and a balloon above the memory (500, "balloon
  value too large"); a start with memory hot-plug is refused without numa, below 1024 MiB or off the DIMM grid
  (Memory.pm config); /cluster/resources lists a running VM by its QMP status (`paused`; pvestatd).
- Clones and nodes (pvesim_qemu.py): `POST .../clone` with `target` (another node) is refused with PVE's "can't
  clone VM to node 'X' (VM uses local storage)" when a volume of the source is on a storage that is not shared
  (rbd, nfs, cifs, zfs, iscsi, ... are shared by type, as pve-storage's parse_config sets it), full clones too;
  a linked clone of a disk on thick LVM (and iscsi) fails "Linked clone feature is not supported". Nodes have the
  size the cluster file gives (`maxcpu`, `maxmem_gib`, `mem_gib` the host's own use); a node's `mem` is that plus
  its running VMs' memory; a start with more vCPUs than the node has is a task error, as on PVE.
  `fail_clone_pool_add(times)`: the next clones into a pool fail where clone_vm adds the VM to the pool; with
  `target` PVE's cleanup misses the moved config, so the VM stays on the target node without its disks.
- Clone storage locks (pvesim_locks.py): clones of one template run concurrently (clone_vm locks the source
  shared and the new vmid exclusively), but each disk's clone_image holds the storage's lock for
  `clone_lock_secs` PVE seconds (pve-storage vdisk_clone / cluster_lock_storage): cluster-wide for a shared storage
  (pve-cluster cfs_lock: mkdir retried every min(remaining, 10) x 100 ms), per node for a local one (flock); a clone
  that waits over 10 s fails "clone failed: cfs-lock 'storage-<sid>' error: got lock request timeout" (or "can't
  lock file ... - got timeout"), as on PVE. 0 (the default) holds no lock.
- Link state (pvesim_links.py): a NIC bound to a lab device (`bind_link`, or `POST /_sim/link`) follows its
  `link_down` as the guest's carrier follows QEMU's set_link on real PVE (`ip link set <dev> down|up`); a NIC
  without a binding: nothing happens.
- Permissions (pvesim_perms.py): PVE 9's privilege names (a role naming VM.Monitor or any other unknown
  privilege is refused, in the cluster file and through `/access/roles`), PVE's built-in roles, ACL entries
  without propagation, and the permission checks PVE makes inside the methods the collection calls (VM config
  keys, `startup`, bridges and vnets, clone storage, SDN vnets and subnets, listings).
- The lab cluster (inventories/lab/cluster.yml): nodes and their sizes, storages, snippets, pools, golden templates
  with base volumes (one on shared RBD storage, one copied to each node's local-lvm), users, roles, ACLs and API
  tokens (`load_cluster`).
- Faults of writes (pvesim_faults.py): a write carried out with its answer lost (`lose_answer`: handled, tasks
  started, then the connection closed without a response), or dropped before handling (`drop_request`), or a
  seeded share of all writes either way (`flaky_writes`); a clone task that dies before its cleanup and leaves the
  new VM locked `clone` (`kill_clone_task`, as qemu-server clone_vm does for a killed worker). fakepve's own
  `flaky_network` only drops requests before they are handled.
- The launcher (`python tests/lab/pvesim.py serve ...`) and, for a launched simulator, the control channel
  under `/_sim/` (documented in `ControlChannel`). `start_in_thread()` serves one inside a test process.

Known differences from real PVE
-------------------------------
- Property strings other than net devices (drives aside) are stored as sent, as PVE stores them; the
  datacenter.cfg `tag-style` is a simulator attribute (`tag_style`), not read from /cluster/options; deleting a
  key the config lacks is silently ignored (PVE logs a warning, which a POST's task would count).
- SDN: no IPAM, DNS, controllers or fabrics; only simple, vlan and vxlan zones are checked (other types are
  stored as sent); a vnet in a missing zone fails with "unknown section type ''" as the PVE code reads;
  "invalid lock token provided!" carries a made-up Perl line number. Deleting a vnet that VMs still use
  succeeds, as on PVE (only subnets block it). Applying (`PUT /cluster/sdn`) is a reloadnetworkall task that
  starts a srvreload task (as root@pam) on every node and only logs a node it cannot reach (offline, or
  `fail_sdn_reload(node)`); each srvreload skips, with a log line, a vnet of a vlan/qinq zone whose bridge is
  not up on the node, and fails for `fail_sdn_reload(node, how='ifreload')` or an interface name over 15
  characters. Warnings leave a task "OK", as under pvedaemon; `sdn_warnings_counted = True` makes them
  "WARN: ..." lines and the task end "WARNINGS: n" (RESTEnvironment log_warn). The node task list honours
  `typefilter`, `since`/`until`, `userfilter` and `source` (default: finished tasks only), as PVE does.
- Node networks: no `/etc/network/interfaces` rendering; GET does not return PVE's `changes` diff attribute.
- HA: no CRM/LRM beyond the node list and the delayed stop above (HA start is fakepve's: done when its task is,
  at time_scale 0); a stop queued before the CRM knows a new resource is not dropped as on PVE; rules are not
  enforced when VMs start or migrate. Nodes removed from the cluster stay in the CRM's node list (PVE marks them
  gone and drops them an hour later). HA groups are not modelled (PVE refuses rule writes until they are migrated
  to rules). Only recovery is modelled, and only after
  `enable_ha_recovery()`: an HA resource on an offline node moves to an online node and runs there once the
  fence time has passed (no fencing, watchdog or LRM states).
- rrddata: the transition after an upgrade to PVE 9 (`rrd_upgraded_at`: the old pve2 file read for the part of a window
  they still cover) is not modelled; injected samples are the only history (a VM has none before its series).
- migrate: a VM is moved instantly at time_scale 0; storage is not checked at all (real PVE refuses some
  moves of local disks, e.g. linked clones whose base is on non-shared storage; check on a real cluster);
  `with-local-disks` is not required.
- Clones: storages created through the API are shared only when `shared` is given (PVE also marks them by type);
  a storage's `nodes` restriction is not checked on clone (PVE does not either, but the clone cannot start
  there); node memory is not checked on start (PVE leaves that to QEMU and the kernel).
- Hook scripts are never run; only their existence on snippets storage is checked (not the executable bit).
- Disk hot-plug is not modelled: disk changes on a running VM stay pending (fakepve's behaviour).
"""

if __name__ == '__main__' and not __package__:
    # Run as a script: import the package form of this module, so there is only one copy of its classes.
    import os as _os
    import sys as _sys
    _sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))
    from lab.pvesim import main as _main
    _sys.exit(_main())

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import threading
import time

import yaml
from aiohttp import web
from fakepve import FakePve
from fakepve.certs import make_cert
from fakepve.server import ok, params, settle

from .pvesim_agent import GuestAgentFiles
from .pvesim_cluster import HaApi, NodeNetworkApi
from .pvesim_faults import WriteFaults
from .pvesim_links import LinkBindings
from .pvesim_locks import CloneStorageLocks
from .pvesim_perms import PermissionChecks, verify_privileges
from .pvesim_qemu import SHARED_TYPES, QemuExtras
from .pvesim_rrd import RRD_FORMATS
from .pvesim_sdn import SdnApi

__all__ = ['ShadowPve', 'SimServer', 'ControlChannel', 'load_cluster', 'start_in_thread', 'DEFAULT_CLUSTER',
           'main']

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_CLUSTER = os.path.join(ROOT, 'inventories', 'lab', 'cluster.yml')
START_TIMEOUT = 30
GiB = 1024 ** 3


class ShadowPve(WriteFaults, PermissionChecks, SdnApi, NodeNetworkApi, HaApi, LinkBindings, GuestAgentFiles,
                QemuExtras, CloneStorageLocks, FakePve):
    """fakepve with SDN, node networks, HA, rrddata, migrate, hookscripts and hot-plug kept as PVE keeps them."""

    def __init__(self, user='root@pam', password='secret', host=None, port=0):
        super().__init__(user, password, host=host, port=port)
        self._init_perms()
        self.nodes = {}
        self.cluster_name = 'shadownet-lab'
        # Number of requests recorded since the start (pve.requests drops the oldest beyond max_requests).
        self.request_count = 0
        self.control = None
        # PVE seconds a task of each type takes (qmclone, qmstart, reloadnetworkall, ...), scaled by time_scale
        # like every other duration; fakepve's own per-VM start/stop times add to it. Empty: tasks take no time.
        self.task_secs = {}
        self._init_sdn()
        self._init_network()
        self._init_ha()
        self._init_qemu_extras()
        self._init_links()
        self._init_faults()
        self._init_storage_locks()

    def _record(self, request, body):
        super()._record(request, body)
        self.request_count += 1

    async def _task_log(self, request):
        # pve-manager PVE/API2/Tasks.pm read_task_log -> pve-common Tools.pm dump_logfile_by_filehandle: `limit`
        # lines from `start` (default 50), `limit=0` to the end (fakepve answered nothing for 0).
        p = self._verify(request, await params(request))
        lines = self._get_task(request)['log']
        start, limit = int(p.get('start', 0)), int(p.get('limit', 50))
        entries = [{'n': n + 1, 't': t} for n, t in enumerate(lines)][start:]
        return ok(entries if limit == 0 else entries[:limit])

    def requests_since(self, mark=0):
        """Requests (method, path, body bytes) recorded after `mark` (a `request_count` taken earlier)."""
        first = self.request_count - len(self.requests)
        return list(self.requests[max(0, mark - first):])

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        secs = self.task_secs.get(ttype)
        if secs:
            work = body

            async def body():
                await self.pause(secs)
                return await work()
        return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)

    def add_node(self, name, online=True):
        super().add_node(name, online)
        self._network_for(name)

    def _build_app(self):
        app = super()._build_app()
        app.middlewares.insert(0, self.network_changes_middleware)
        app.middlewares.insert(0, self.ha_recovery_middleware)
        app.middlewares.insert(0, self.write_fault_middleware)
        if self.control is not None:
            # First, so control requests skip PVE's authentication and the request log.
            app.middlewares.insert(0, self.control.middleware)
        return app


# --------------------------------------------------------------------------------------------- cluster file

def _priv_list(pve, entry):
    """The privileges of one `acl` entry of the cluster file: its role's, or its own `privs` (checked as PVE does)."""
    if entry.get('role'):
        name = entry['role']
        if name not in pve.roles:
            raise ValueError('cluster file: unknown role {0!r}'.format(name))
        return sorted(pve.roles[name])
    try:
        return verify_privileges(entry.get('privs') or [])
    except ValueError as exc:
        raise ValueError('cluster file: acl {0}: {1} (pve-access-control AccessControl.pm verify_privname)'.format(
            entry.get('path'), exc)) from None


def load_cluster(pve, source):
    """Set up `pve` from a cluster file (a path, or the parsed dict). Returns the parsed dict.

    Keys: cluster_name, time_scale, rrd_format (pve9, the default, or pve8), task_secs {task type: PVE seconds},
    clone_lock_secs (PVE seconds a disk's clone holds its storage lock), root_password, nodes [{name, online,
    maxcpu, maxmem_gib, mem_gib (the host's own use)}],
    storages {id: options}, snippets [volid], pools [{poolid, comment}], templates [{vmid, name, node, pool, disk_gib, config}], roles
    {name: [privs]}, users [{userid, password, tokens {name: secret}, acl [{path, role | privs, propagate}]}].
    A role or acl entry with a privilege PVE 9 does not know (VM.Monitor, ...) is refused, as `pveum` refuses it.
    """
    if isinstance(source, dict):
        data = source
    else:
        with open(source) as stream:
            data = yaml.safe_load(stream) or {}
    pve.cluster_name = data.get('cluster_name', pve.cluster_name)
    pve.time_scale = float(data.get('time_scale', 0) or 0)
    if data.get('rrd_format') is not None:
        if data['rrd_format'] not in RRD_FORMATS:
            raise ValueError('cluster file: rrd_format must be one of {0}, not {1!r}'.format(
                ', '.join(RRD_FORMATS), data['rrd_format']))
        pve.rrd_format = data['rrd_format']
    pve.task_secs = dict((str(k), float(v)) for k, v in (data.get('task_secs') or {}).items())
    pve.clone_lock_secs = float(data.get('clone_lock_secs', 0) or 0)
    if data.get('root_password'):
        pve.password = str(data['root_password'])
    for node in data.get('nodes') or [{'name': 'pve1'}]:
        pve.add_node(node['name'], online=node.get('online', True))
        pve.set_node_size(node['name'], maxcpu=node.get('maxcpu'),
                          maxmem=int(float(node['maxmem_gib']) * GiB) if node.get('maxmem_gib') else None,
                          mem=int(float(node['mem_gib']) * GiB) if node.get('mem_gib') else None)
    if data.get('storages'):
        pve.storages = {}
        for sid, options in data['storages'].items():
            store = dict(options)
            store.setdefault('type', 'dir')
            store.setdefault('active', 1)
            store['files'] = set()
            if store['type'] in SHARED_TYPES:
                store['shared'] = 1  # pve-storage Plugin.pm parse_config: @SHARED_STORAGE types are shared
            if store['type'] == 'dir':
                store.setdefault('avail', 50 * GiB)
            pve.storages[sid] = store
    for volid in data.get('snippets') or []:
        pve.add_snippet(volid)
    for pool in data.get('pools') or []:
        pve.pools.setdefault(pool['poolid'], set())
        pve.pool_info[pool['poolid']] = {'comment': pool.get('comment'), 'storage': set()}
    for tmpl in data.get('templates') or []:
        _add_template(pve, tmpl)
    pve.statd_round()
    for name, privs in sorted((data.get('roles') or {}).items()):
        # `pveum role add` (API2/Role.pm create_role, AccessControl.pm add_role_privs) refuses an unknown privilege.
        try:
            pve.define_role(str(name), privs)
        except ValueError as exc:
            raise ValueError('cluster file: role {0!r}: {1}'.format(name, exc)) from None
    for user in data.get('users') or []:
        userid = user['userid']
        if user.get('password') and userid != pve.user:
            pve.users[userid] = str(user['password'])
        for name, secret in (user.get('tokens') or {}).items():
            pve.apitokens['{0}!{1}'.format(userid, name)] = str(secret)
        for entry in user.get('acl') or []:
            # `pveum acl modify --propagate 0`: the privileges hold on the path itself only.
            grant = pve.grant if entry.get('propagate', True) else pve.grant_exact
            grant(userid, entry['path'], *_priv_list(pve, entry))
    return data


def _add_template(pve, tmpl):
    """A golden template: the VM, marked template, with its base volumes allocated on their storages."""
    vmid = int(tmpl['vmid'])
    config = dict((k, v) for k, v in (tmpl.get('config') or {}).items())
    size = int(float(tmpl.get('disk_gib', 8)) * GiB)
    for key, value in list(config.items()):
        volume = str(value).split(',')[0]
        if key.startswith(('scsi', 'virtio', 'sata', 'ide', 'efidisk')) and key[-1].isdigit() and ':' in volume \
                and 'media=cdrom' not in str(value):
            sid, _, name = volume.partition(':')
            store = pve.storages.setdefault(sid, {'type': 'lvmthin', 'active': 1, 'content': 'images,rootdir',
                                                  'files': set()})
            store.setdefault('volumes', {})[name] = {'content': 'images', 'format': 'raw', 'size': size,
                                                     'vmid': vmid, 'ctime': int(time.time())}
            if 'size=' not in str(value):
                config[key] = '{0},size={1}G'.format(value, int(size // GiB))
    config['template'] = 1
    config.setdefault('smbios1', 'uuid=00000000-0000-4000-8000-{0:012d}'.format(vmid))
    vm = pve.add_vm(vmid, tmpl['name'], node=tmpl.get('node', 'pve1'), config=config, template=True,
                    pool=tmpl.get('pool'))
    if vm.pool:
        pve.pool_info.setdefault(vm.pool, {'comment': None, 'storage': set()})
    return vm


# ------------------------------------------------------------------------------------------ control channel

class ControlChannel(object):
    """JSON endpoints under /_sim/ on the simulator's own address, to drive a separately launched simulator.

    Only the launcher enables them. Every call needs root@pam's credentials, as for the API (an
    `Authorization: PVEAPIToken=root@pam!<id>=<secret>` header, or a root@pam ticket cookie); control calls are
    not recorded in the request log. Bodies and answers are JSON; errors answer {"error": message}.

      GET  /_sim/                     the endpoint list
      GET  /_sim/requests?since=N     {"next": M, "requests": [{"method", "path", "body"}]} recorded after mark N
                                      (take "next" as the mark for the next call; N=0: everything kept)
      POST /_sim/rrd                  {"vmid": 100, "points": [{"time": t, "cpu": 0.5, ...}]} replace the series
      POST /_sim/stats                {"vmid": 100, "stats": {"cpu": 0.4, "mem": 1073741824, ...}} current usage
      POST /_sim/snippet              {"volid": "local:snippets/shadownet-hook.py"} place a snippet file
      POST /_sim/link                 {"vmid": 100, "nic": "net0", "dev": "tap100i0", "ns": "<netns>"} bind a NIC's
                                      link_down to a lab device; {"vmid": 100, "unbind": true} drops the VM's
      POST /_sim/fault                {"kind": ..., ...} with kind one of
                                        fail      {"method", "path", "status", "message"} or {"error"}; "times"
                                        clear     forget every injected failure
                                        hold_lock {"vmid", "secs"} (secs null: until release_lock)
                                        release_lock {"vmid"}
                                        node_offline / node_online {"node"}
                                        lose_quorum / regain_quorum
                                        sdn_reload_fail {"node", "how": "pvesh" | "ifreload", "message", "times"}:
                                          the next SDN apply's reload fails on that node (ShadowPve
                                          .fail_sdn_reload); "clear" forgets these too
                                        lose_answer / drop_request {"method", "path" (a regex), "times"}: carry
                                          the request out and lose its answer / drop it unhandled
                                        flaky_writes {"rate", "lost_share", "seed", "paths"}: that share of the
                                          writes dropped, before or after handling (rate 0 stops it)
                                        kill_clone_task {"times"}: a clone task dies leaving its VM locked
                                        (pvesim_faults.py; "clear" forgets these too)
      POST /_sim/guest_file           {"vmid": 100, "path": "/run/x.json", "content": "..."} put a file in the guest
                                      (its agent runs); "content": null removes it; {"vmid", "agent": false}
                                      stops the guest's agent (pvesim_agent.py)
      GET  /_sim/state                nodes, VMs (vmid, node, status, lock), SDN and HA summaries
    """

    PREFIX = '/_sim/'

    def __init__(self, pve):
        self.pve = pve

    @web.middleware
    async def middleware(self, request, handler):
        if not request.path.startswith(self.PREFIX) and request.path != self.PREFIX.rstrip('/'):
            return await handler(request)
        # Any authentication failure answers HTTP 401 below.
        try:
            user = self.pve._authenticate(request)
        except Exception:  # noqa: BLE001
            user = None
        if user is None or user.split('!')[0] != 'root@pam':
            return web.json_response({'error': 'authentication failure (root@pam needed)'}, status=401)
        name = request.path[len(self.PREFIX):].strip('/') or 'index'
        method = getattr(self, '_{0}_{1}'.format(request.method.lower(), name), None)
        if method is None:
            return web.json_response({'error': 'no such control endpoint'}, status=404)
        try:
            body = await request.json() if request.can_read_body else {}
            return web.json_response(await method(request, body or {}))
        except (KeyError, TypeError, ValueError) as exc:
            return web.json_response({'error': 'bad control request: {0!r}'.format(exc)}, status=400)

    async def _get_index(self, request, body):
        return {'endpoints': ['GET /_sim/requests', 'POST /_sim/rrd', 'POST /_sim/stats', 'POST /_sim/snippet',
                              'POST /_sim/link', 'POST /_sim/fault', 'POST /_sim/guest_file', 'GET /_sim/state']}

    async def _get_requests(self, request, body):
        since = int(request.query.get('since', 0))
        items = [{'method': m, 'path': p, 'body': b.decode('utf-8', 'replace')}
                 for m, p, b in self.pve.requests_since(since)]
        return {'next': self.pve.request_count, 'requests': items}

    async def _post_rrd(self, request, body):
        self.pve.inject_rrd(int(body['vmid']), body['points'])
        return {'ok': True}

    async def _post_stats(self, request, body):
        self.pve.set_stats(int(body['vmid']), **body['stats'])
        return {'ok': True}

    async def _post_snippet(self, request, body):
        self.pve.add_snippet(body['volid'])
        return {'ok': True}

    async def _post_link(self, request, body):
        if body.get('unbind'):
            self.pve.unbind_links(int(body['vmid']))
        else:
            self.pve.bind_link(int(body['vmid']), body['nic'], body['dev'], ns=body.get('ns'))
        return {'ok': True}

    async def _post_guest_file(self, request, body):
        if body.get('agent') is False:
            self.pve.stop_guest_agent(int(body['vmid']))
        else:
            self.pve.put_guest_file(int(body['vmid']), body['path'], body.get('content'))
        return {'ok': True}

    async def _post_fault(self, request, body):
        pve, kind = self.pve, body['kind']
        if kind == 'fail':
            if body.get('error'):
                pve.fail(body['method'], body['path'], error=body['error'], times=body.get('times'))
            else:
                pve.fail(body['method'], body['path'], int(body['status']), body['message'], times=body.get('times'))
        elif kind == 'clear':
            pve.failures.clear()
            pve.clear_sdn_reload_faults()
            pve.clear_write_faults()
        elif kind == 'lose_answer':
            pve.lose_answer(body['method'], body['path'], times=int(body.get('times') or 1))
        elif kind == 'drop_request':
            pve.drop_request(body['method'], body['path'], times=int(body.get('times') or 1))
        elif kind == 'flaky_writes':
            pve.flaky_writes(float(body['rate']), lost_share=float(body.get('lost_share', 0.5)), seed=body.get('seed'),
                             paths=body.get('paths'))
        elif kind == 'kill_clone_task':
            pve.kill_clone_task(int(body.get('times') or 1))
        elif kind == 'sdn_reload_fail':
            pve.fail_sdn_reload(body['node'], how=body.get('how', 'pvesh'), message=body.get('message'),
                                times=body.get('times'))
        elif kind == 'hold_lock':
            await pve.hold_config_lock(int(body['vmid']), body.get('secs'))
        elif kind == 'release_lock':
            pve.release_config_lock(int(body['vmid']))
        elif kind in ('node_offline', 'node_online'):
            pve.set_node_offline(body['node'], kind == 'node_offline')
        elif kind == 'lose_quorum':
            pve.lose_quorum()
        elif kind == 'regain_quorum':
            pve.regain_quorum()
        else:
            raise ValueError('unknown fault kind {0!r}'.format(kind))
        return {'ok': True}

    async def _get_state(self, request, body):
        pve = self.pve
        return {'nodes': dict((n, s.get('online', True)) for n, s in sorted(pve.nodes.items())),
                'quorate': pve.quorate,
                'vms': [{'vmid': vm.vmid, 'name': vm.name, 'node': vm.node, 'status': vm.status, 'lock': vm.lock,
                         'template': bool(vm.template)} for vm in sorted(pve.vms, key=lambda v: v.vmid)],
                'sdn': pve.sdn_summary(), 'ha': pve.ha_summary()}


# ------------------------------------------------------------------------------------------ serving

class SimServer(object):
    """A ShadowPve served on a private event loop in a daemon thread (as fakepve's pytest plugin does).

    Attributes for clients: url, host, port, cafile, token_id, token_secret, user, password, pve.
    """

    def __init__(self, pve, certfile, keyfile, token_id=None, token_secret=None):
        self.pve = pve
        self.cafile = certfile
        self.token_id = token_id
        self.token_secret = token_secret
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, name='pvesim-' + str(id(pve)), daemon=True)
        self.thread.start()
        try:
            self.call(pve.start(certfile, keyfile))
        except BaseException:
            self._halt()
            raise

    host = property(lambda self: self.pve.host)
    port = property(lambda self: self.pve.port)
    url = property(lambda self: self.pve.url)
    user = property(lambda self: self.pve.user)
    password = property(lambda self: self.pve.password)

    def _run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout=START_TIMEOUT):
        """Run a coroutine on the simulator's loop (e.g. pve.hold_config_lock(100, 30)) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def _halt(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(START_TIMEOUT)
        if not self.thread.is_alive():
            self.loop.close()

    def stop(self):
        """Stop serving and end the thread."""
        if self.loop.is_closed():
            return
        try:
            self.call(settle())
            self.call(self.pve.stop())
        finally:
            self._halt()

    def mark(self):
        """A mark in the request log: pass it to writes() or requests()."""
        return self.pve.request_count

    def requests(self, since=0):
        """(method, path, body) of the requests after the mark, bodies as text."""
        return [(m, p, b.decode('utf-8', 'replace')) for m, p, b in self.pve.requests_since(since)]

    def writes(self, since=0):
        """The non-GET requests after the mark (what a check-mode run must not send)."""
        return [r for r in self.requests(since) if r[0] not in ('GET', 'HEAD')]

    def environ(self):
        """The PROXMOX_* variables that point the collection's modules and inventory at this simulator."""
        user, dummy, token = self.token_id.partition('!')
        return {'PROXMOX_HOST': self.host, 'PROXMOX_PORT': str(self.port), 'PROXMOX_USER': user,
                'PROXMOX_TOKEN_ID': token, 'PROXMOX_TOKEN_SECRET': self.token_secret,
                'PROXMOX_CA_PATH': self.cafile}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _first_token(pve, user='root@pam'):
    for tokenid, secret in sorted(pve.apitokens.items()):
        if tokenid.split('!')[0] == user:
            return tokenid, secret
    return None, None


def start_in_thread(cluster_file=DEFAULT_CLUSTER, host='127.0.0.1', port=0, time_scale=0, certs_dir=None,
                    control=False):
    """Start a ShadowPve with the cluster loaded in a background thread; returns a started SimServer.

    The port 0 lets the system choose. time_scale overrides the cluster file's (None: keep the file's).
    certs_dir: where the certificate goes (a new temporary directory by default). Call .stop() when done.
    """
    pve = ShadowPve(host=host, port=port)
    if cluster_file:
        load_cluster(pve, cluster_file)
    if time_scale is not None:
        pve.time_scale = time_scale
    if control:
        pve.control = ControlChannel(pve)
    certs_dir = certs_dir or tempfile.mkdtemp(prefix='pvesim-')
    os.makedirs(certs_dir, exist_ok=True)
    certfile, keyfile, _der = make_cert(certs_dir, name='pvesim', hosts=(host,))
    token_id, secret = _first_token(pve)
    return SimServer(pve, certfile, keyfile, token_id, secret)


# ------------------------------------------------------------------------------------------ launcher

async def _serve(args):
    pve = ShadowPve(host=args.host, port=args.port)
    load_cluster(pve, args.cluster)
    if args.time_scale is not None:
        pve.time_scale = args.time_scale
    pve.control = ControlChannel(pve)
    os.makedirs(args.certs, exist_ok=True)
    certfile, keyfile, _der = make_cert(args.certs, name='pvesim', hosts=(args.host,))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await pve.start(certfile, keyfile)
    try:
        sys.stdout.write('ready {0} ca={1}\n'.format(pve.url, certfile))
        sys.stdout.flush()
        await stop.wait()
    finally:
        await settle()
        await pve.stop()
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog='pvesim', description='Serve the shadownet PVE simulator.')
    sub = parser.add_subparsers(dest='command', required=True)
    serve = sub.add_parser('serve', help='serve until SIGTERM; prints "ready https://HOST:PORT ca=CA_PATH"')
    serve.add_argument('--host', default='127.0.0.1', help='loopback address to listen on (default 127.0.0.1)')
    serve.add_argument('--port', type=int, default=8006, help='port (0: the system picks one; default 8006)')
    serve.add_argument('--cluster', default=DEFAULT_CLUSTER, help='cluster file (default: the lab cluster)')
    serve.add_argument('--certs', required=True, help='directory for the certificate and key')
    serve.add_argument('--time-scale', type=float, default=None, help="override the cluster file's time_scale")
    args = parser.parse_args(argv)
    if not args.host.startswith('127.'):
        parser.error('--host must be a loopback address (127.0.0.0/8)')
    return asyncio.run(_serve(args))

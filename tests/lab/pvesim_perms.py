"""PVE 9's privilege names, roles and the permission checks fakepve does not make, for ShadowPve.

fakepve checks each method's schema rule (`permissions.check`) and a per-key table for VM config writes. PVE
checks more inside the methods' code; this mixin adds those checks for the calls the collection makes, each
naming the PVE file and sub it follows:

- privilege names: PVE 9 knows exactly the privileges of pve-access-control AccessControl.pm `$privgroups`
  (VM.Monitor is gone since 9.0); a role with another name is refused (cluster file, `/access/roles`).
- roles: `POST /access/roles`, `PUT /access/roles/{roleid}`, `GET /access/roles[/{roleid}]` (API2/Role.pm),
  with PVE's built-in roles (AccessControl.pm `create_roles`).
- ACL entries without propagation (`propagate: false` in the cluster file): they hold on their own path only.
- VM config (qemu-server API2/Qemu.pm `$check_vm_modify_config_perm`, `check_bridge_access`): the privilege of
  each key as PVE maps it (cloud-init keys: VM.Config.Cloudinit or VM.Config.Network), `startup` also needs
  Sys.Modify on /, and a NIC needs SDN.Use on its bridge or vnet (and on the one it replaces or deletes); a key no
  privilege covers (hookscript, args, ...) is refused to anyone but root@pam itself, API tokens included, with
  PVE's 500 "only root can set '<key>' config" and nothing of the update written.
- clone (Qemu.pm `clone_vm`): Datastore.AllocateSpace on the storage of every disk it copies and SDN.Use on the
  bridges of the source config.
- SDN (pve-network API2/Network/SDN/Vnets.pm, Subnets.pm `$check_vnet_access`): vnet update/delete and every
  subnet call check SDN.Allocate (reads: SDN.Audit or SDN.Allocate) on /sdn/zones/<zone>/<vnet>.
- listings: `/cluster/status` needs Sys.Audit on / (pve-manager API2/Cluster.pm `get_status`); `/nodes` and
  `/cluster/resources` hide node usage without Sys.Audit on the node, `/cluster/resources` hides storages
  without Datastore.Audit and a VM's pool without Pool.Audit (Cluster.pm `resources`); `/nodes/{node}/network`
  hides bridges without SDN.Audit or SDN.Use on /sdn/zones/localnetwork/<bridge> (API2/Network.pm `index`).
"""

import json
import re

from fakepve.model import PveError
from fakepve.routing import split_list

__all__ = ['PermissionChecks', 'PRIVILEGES', 'BUILTIN_ROLES', 'verify_privileges']

# pve-access-control src/PVE/AccessControl.pm $privgroups: category -> (root, admin, user, audit) privileges.
PRIV_GROUPS = {
    'VM': ((), ('VM.Config.Disk', 'VM.Config.CPU', 'VM.Config.Memory', 'VM.Config.Network', 'VM.Config.HWType',
                'VM.Config.Options', 'VM.Allocate', 'VM.Clone', 'VM.GuestAgent.Unrestricted', 'VM.Migrate',
                'VM.Replicate', 'VM.Snapshot', 'VM.Snapshot.Rollback'),
           ('VM.Config.CDROM', 'VM.Config.Cloudinit', 'VM.Console', 'VM.Backup', 'VM.GuestAgent.FileRead',
            'VM.GuestAgent.FileSystemMgmt', 'VM.GuestAgent.FileWrite', 'VM.PowerMgmt'),
           ('VM.Audit', 'VM.GuestAgent.Audit')),
    'Sys': (('Sys.PowerMgmt', 'Sys.Modify', 'Sys.Incoming', 'Sys.AccessNetwork'), ('Sys.Console', 'Sys.Syslog'), (),
            ('Sys.Audit',)),
    'Datastore': ((), ('Datastore.Allocate', 'Datastore.AllocateTemplate'), ('Datastore.AllocateSpace',),
                  ('Datastore.Audit',)),
    'SDN': ((), ('SDN.Allocate', 'SDN.Audit'), ('SDN.Use',), ('SDN.Audit',)),
    'User': (('Realm.Allocate',), ('User.Modify', 'Group.Allocate', 'Realm.AllocateUser'), (), ()),
    'Pool': ((), ('Pool.Allocate',), ('Pool.Audit',), ('Pool.Audit',)),
    'Mapping': ((), ('Mapping.Modify',), ('Mapping.Use',), ('Mapping.Audit',)),
}
# Every privilege PVE 9 accepts ($valid_privs: the groups plus Permissions.Modify).
PRIVILEGES = frozenset(p for groups in PRIV_GROUPS.values() for group in groups for p in group) | {
    'Permissions.Modify'}


def _builtin_roles():
    """AccessControl.pm create_roles: the roles every PVE has (special: they cannot be changed)."""
    roles = {'NoAccess': set(), 'Administrator': set(PRIVILEGES), 'PVEAdmin': set(), 'PVEAuditor': set(),
             'PVETemplateUser': {'VM.Clone', 'VM.Audit'}}
    for cat, (dummy, admin, user, audit) in PRIV_GROUPS.items():
        roles['PVE{0}Admin'.format(cat)] = set(admin + user + audit)
        roles['PVEAdmin'].update(admin + user + audit)
        if user:
            roles['PVE{0}User'.format(cat)] = set(user + audit)
        roles['PVEAuditor'].update(audit)
    roles['PVEAdmin'].discard('Mapping.Modify')
    return roles


BUILTIN_ROLES = _builtin_roles()


def verify_privileges(privs):
    """The privileges of a list (PVE's split_list of a string, or a list); ValueError naming the first unknown.

    AccessControl.pm verify_privname (format pve-priv) / add_role_privs: "invalid privilege '<name>'".
    """
    names = split_list(privs) if isinstance(privs, str) else [str(p) for p in privs or []]
    for name in names:
        if name not in PRIVILEGES:
            raise ValueError("invalid privilege '{0}'".format(name))
    return names


# qemu-server src/PVE/API2/Qemu.pm: the option tables $check_vm_modify_config_perm maps to privileges.
CPU_OPTIONS = ('cores', 'cpu', 'runningcpu', 'cpulimit', 'cpuunits', 'numa', 'smp', 'sockets', 'vcpus')
MEMORY_OPTIONS = ('memory', 'balloon', 'shares', 'allow-ksm')
HWTYPE_OPTIONS = ('acpi', 'hotplug', 'kvm', 'machine', 'runningmachine', 'scsihw', 'smbios1', 'tablet', 'vga',
                  'watchdog', 'audio0', 'rng0')
GENERAL_OPTIONS = ('agent', 'autostart', 'bios', 'description', 'keyboard', 'localtime', 'migrate_downtime',
                   'migrate_speed', 'name', 'onboot', 'ostype', 'protection', 'reboot', 'startdate', 'startup', 'tdf',
                   'template')
DISK_OPTIONS = ('boot', 'bootdisk', 'vmstatestorage')
CLOUDINIT_OPTIONS = ('cicustom', 'cipassword', 'citype', 'ciuser', 'ciupgrade', 'nameserver', 'searchdomain',
                     'sshkeys')
DRIVE_KEY = re.compile(r'^(?:ide|sata|scsi|virtio|efidisk|tpmstate)\d+$')
NET_KEY = re.compile(r'^net\d+$')
# Request keys of a config write that are not config keys.
NOT_CONFIG = ('digest', 'delete', 'skiplock', 'revert', 'background_delay', 'node', 'vmid')
NODE_STATS = ('uptime', 'cpu', 'mem', 'disk', 'maxcpu', 'maxmem', 'maxdisk')


def _props(value):
    out = {}
    for part in str(value or '').split(','):
        key, sep, val = part.partition('=')
        if sep:
            out[key.strip()] = val.strip()
    return out


def _trunk_tags(trunks):
    """pve-guest-common GuestHelpers.pm get_tags_from_trunk: '10;20-22' -> [10, 20, 21, 22]."""
    tags = set()
    for part in str(trunks).split(';'):
        low, dummy, high = part.partition('-')
        if low.strip().isdigit():
            tags.update(range(int(low), int(high or low) + 1))
    return sorted(tags)


class PermissionChecks(object):
    """Mixin of ShadowPve, first in its bases: the checks above, on top of fakepve's and the other mixins'."""

    def _init_perms(self):
        self.roles = dict((name, set(privs)) for name, privs in BUILTIN_ROLES.items())
        # userid -> [(path, {privs})] of ACL entries without propagation.
        self.acl_exact = {}

    # ------------------------------------------------------------------ roles, ACL

    def define_role(self, name, privs):
        """A role as `pveum role add` makes it; ValueError for a bad or duplicate name or an unknown privilege."""
        if name in self.roles:
            raise ValueError("role '{0}' already exists".format(name))
        if re.match(r'^pve', name, re.I):
            raise ValueError("cannot use role ID starting with the (case-insensitive) 'PVE' namespace")
        self.roles[name] = set(verify_privileges(privs))
        return self.roles[name]

    def grant_exact(self, user, path, *privs):
        """An ACL entry with propagate=0: the privileges hold on `path` itself, not below it."""
        if self.acl is None:
            self.acl = {}
        self.acl_exact.setdefault(user, []).append((path.rstrip('/') or '/', set(privs)))

    def allowed(self, user, path, priv):
        # 'A|B': either privilege (PVE's check_any), as a few checks below need.
        if '|' in priv:
            return any(self.allowed(user, path, p) for p in priv.split('|'))
        if super().allowed(user, path, priv):
            return True
        path = path.rstrip('/') or '/'
        for user_id in (user, user.split('!')[0]):
            for granted, privs in self.acl_exact.get(user_id, []):
                if granted == path and priv in privs:
                    return True
        return False

    def _routes_access_roles(self):
        return [('GET', '/access/roles', self._role_list), ('POST', '/access/roles', self._role_create),
                ('GET', '/access/roles/{roleid}', self._role_read),
                ('PUT', '/access/roles/{roleid}', self._role_update)]

    @staticmethod
    def _role_privs(v):
        # The schema's format pve-priv-list runs verify_privname on each name: a parameter error, as PVE answers.
        try:
            return verify_privileges(v.get('privs') or '')
        except ValueError as exc:
            raise PveError(400, 'Parameter verification failed.', {'privs': 'invalid format - {0}'.format(exc)})

    async def _role_list(self, v, user):
        return [{'roleid': name, 'privs': ','.join(sorted(privs)), 'special': 1 if name in BUILTIN_ROLES else 0}
                for name, privs in sorted(self.roles.items())]

    async def _role_read(self, v, user):
        # pve-access-control API2/Role.pm read_role
        if v['roleid'] not in self.roles:
            raise PveError(500, "role '{0}' does not exist".format(v['roleid']))
        return dict.fromkeys(sorted(self.roles[v['roleid']]), 1)

    async def _role_create(self, v, user):
        # pve-access-control API2/Role.pm create_role
        privs = self._role_privs(v)
        name = v['roleid']
        if re.match(r'^pve', name, re.I):
            raise PveError(400, 'Parameter verification failed.', {
                'roleid': "cannot use role ID starting with the (case-insensitive) 'PVE' namespace"})
        if name in self.roles:
            raise PveError(500, "create role failed: role '{0}' already exists".format(name))
        self.roles[name] = set(privs)

    async def _role_update(self, v, user):
        # pve-access-control API2/Role.pm update_role
        privs = self._role_privs(v)
        name = v['roleid']
        if name in BUILTIN_ROLES:
            raise PveError(500, "auto-generated role '{0}' cannot be modified".format(name))
        if name not in self.roles:
            raise PveError(500, "update role failed: role '{0}' does not exist".format(name))
        if not v.get('append'):
            self.roles[name] = set()
        self.roles[name].update(privs)

    # ------------------------------------------------------------------ VM config

    def _config_priv(self, key):
        # qemu-server API2/Qemu.pm $check_vm_modify_config_perm: the privilege of each option (drives, serial,
        # usb, hostpci are checked by value elsewhere: fakepve's own table for those).
        if DRIVE_KEY.match(key) or re.match(r'^(?:unused|serial|usb|hostpci|virtiofs)\d+$', key) or key == 'cdrom':
            return super()._config_priv(key)
        if key in CPU_OPTIONS or re.match(r'^numa\d+$', key):
            return 'VM.Config.CPU'
        if key in MEMORY_OPTIONS:
            return 'VM.Config.Memory'
        if key in HWTYPE_OPTIONS:
            return 'VM.Config.HWType'
        if key in GENERAL_OPTIONS or key == 'tags':  # tags: GuestHelpers.pm assert_tag_permissions
            return 'VM.Config.Options'
        if key == 'freeze':
            return 'VM.PowerMgmt'
        if key in DISK_OPTIONS:
            return 'VM.Config.Disk'
        if NET_KEY.match(key) or key == 'running-nets-host-mtu':
            return 'VM.Config.Network'
        if key in CLOUDINIT_OPTIONS or re.match(r'^ipconfig\d+$', key):
            return 'VM.Config.Cloudinit|VM.Config.Network'
        if key == 'vmstate':
            return 'VM.Config.Disk'
        return 'root'  # "only root can set '<key>' config"

    def check_bridge_access(self, user, config):
        """qemu-server QemuServer.pm check_bridge_access -> pve-guest-common GuestHelpers.pm check_vnet_access:
        SDN.Use on /sdn/zones/<zone>/<bridge> (zone of the vnet, else localnetwork), per VLAN tag when tagged."""
        if user == 'root@pam':
            return
        for key in sorted(k for k in config if NET_KEY.match(k)):
            net = _props(config[key])
            bridge = net.get('bridge')
            if not bridge:
                continue
            zone = (self.sdn_config['vnets'].get(bridge) or {}).get('zone') or 'localnetwork'
            path = '/sdn/zones/{0}/{1}'.format(zone, bridge)
            tags = ([net['tag']] if net.get('tag') else []) + (_trunk_tags(net['trunks']) if net.get('trunks') else [])
            for tag in tags:
                self.require(user, '{0}/{1}'.format(path, tag), 'SDN.Use')
            if not tags:
                self.require(user, path, 'SDN.Use')

    def _check_modify_config(self, vm, user, p):
        """Qemu.pm update_vm_api: the key privileges, then startup's Sys.Modify, then the bridges, old and new."""
        deletes = [k for k in split_list(str(p.get('delete') or ''))]
        keys = [k for k in p if k not in NOT_CONFIG]
        vmpath = '/vms/{0}'.format(vm.vmid)
        for key in deletes + keys:
            priv = self._config_priv(key)
            if priv == 'root':
                # Qemu.pm $check_vm_modify_config_perm: `die "only root can set '$opt' config\n"`, a plain die, so
                # PVE answers 500 (fakepve answers 403)
                raise PveError(500, "only root can set '{0}' config".format(key))
            if not DRIVE_KEY.match(key):
                self.require(user, vmpath, priv)
            if key == 'startup':
                # $check_vm_modify_config_perm: "special case for startup since it changes host behaviour"
                self.require(user, '/', 'Sys.Modify')
            if key == 'vmstate':
                self.require(user, vmpath, 'VM.PowerMgmt')
        self.check_bridge_access(user, dict((k, p[k]) for k in keys if NET_KEY.match(k)))
        # update_vm_api: replacing or deleting a NIC checks the bridge it had as well.
        self.check_bridge_access(user, dict((k, vm.config[k]) for k in deletes + keys
                                            if NET_KEY.match(k) and vm.config.get(k)))

    async def _apply_config(self, vm, user, p):
        if user != 'root@pam':
            if hasattr(self, '_check_delete'):
                self._check_delete(dict(p))  # update_vm_api checks `delete` (unknown options: 400) before the privileges
            self._check_modify_config(vm, user, p)
        return await super()._apply_config(vm, user, p)

    # ------------------------------------------------------------------ clone

    def _check_clone_access(self, user, conf, storage):
        """Qemu.pm $check_storage_access_clone and check_bridge_access on the config being cloned."""
        for key in sorted(conf):
            if not DRIVE_KEY.match(key):
                continue
            value = str(conf[key])
            volume = value.split(',')[0]
            if volume in ('', 'none'):
                continue
            if 'media=cdrom' in value:
                if volume == 'cdrom':
                    self.require(user, '/', 'Sys.Console')
                continue
            sid = storage or volume.partition(':')[0]
            self.require(user, '/storage/' + sid, 'Datastore.AllocateSpace')
        if conf.get('vmstatestorage'):
            self.require(user, '/storage/' + str(conf['vmstatestorage']), 'Datastore.AllocateSpace')
        self.check_bridge_access(user, conf)

    async def _qm_clone(self, v, user):
        src = self.vm(int(v['vmid']))
        if user != 'root@pam' and src is not None and src.node == v['node']:
            conf = src.snapshots.get(v['snapname']) if v.get('snapname') else src.config
            if conf is not None:  # a missing snapshot: clone_vm's own error
                self._check_clone_access(user, conf, v.get('storage'))
        return await super()._qm_clone(v, user)

    # ------------------------------------------------------------------ SDN

    def _vnet_perm(self, user, vid, privs):
        """pve-network API2/Network/SDN/Vnets.pm, Subnets.pm $check_vnet_access (check_any on the vnet's path)."""
        vnet = self.sdn_config['vnets'].get(vid)
        if vnet is None:
            raise PveError(500, "sdn '{0}' does not exist".format(vid))
        self.require(user, '/sdn/zones/{0}/{1}'.format(vnet.get('zone'), vid), privs)

    async def _sdn_vnet_read(self, v, user):
        if v['vnet'] in self.sdn_config['vnets']:  # a deleted vnet (pending=1) is read from the running config
            self._vnet_perm(user, v['vnet'], 'SDN.Audit|SDN.Allocate')
        return await super()._sdn_vnet_read(v, user)

    async def _sdn_vnet_update(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Allocate')
        return await super()._sdn_vnet_update(v, user)

    async def _sdn_vnet_delete(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Allocate')
        return await super()._sdn_vnet_delete(v, user)

    async def _sdn_subnet_list(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Audit|SDN.Allocate')
        return await super()._sdn_subnet_list(v, user)

    async def _sdn_subnet_read(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Audit|SDN.Allocate')
        return await super()._sdn_subnet_read(v, user)

    async def _sdn_subnet_create(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Allocate')
        return await super()._sdn_subnet_create(v, user)

    async def _sdn_subnet_update(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Allocate')
        return await super()._sdn_subnet_update(v, user)

    async def _sdn_subnet_delete(self, v, user):
        self._vnet_perm(user, v['vnet'], 'SDN.Allocate')
        return await super()._sdn_subnet_delete(v, user)

    # ------------------------------------------------------------------ listings

    async def _cluster_status(self, request):
        # pve-manager PVE/API2/Cluster.pm get_status: check => ['perm', '/', ['Sys.Audit']]
        from fakepve.server import USER
        self.require(request[USER], '/', 'Sys.Audit')
        return await super()._cluster_status(request)

    def _filtered(self, response, keep):
        from fakepve.server import ok
        body = json.loads(response.text)
        return ok([item for item in (keep(dict(i)) for i in body.get('data') or []) if item is not None])

    def _node_view(self, user, item):
        # pve-manager PVE/API2Tools.pm extract_node_stats($exclude_stats) without Sys.Audit on /nodes/<node>
        if item.get('type', 'node') == 'node' and not self.allowed(user, '/nodes/' + str(item.get('node')),
                                                                   'Sys.Audit'):
            for key in NODE_STATS:
                item.pop(key, None)
        return item

    async def _nodes(self, request):
        # pve-manager PVE/API2/Nodes.pm index: node usage only with Sys.Audit on the node.
        from fakepve.server import USER
        user = request[USER]
        return self._filtered(await super()._nodes(request), lambda item: self._node_view(user, item))

    async def _resources(self, request):
        # pve-manager PVE/API2/Cluster.pm resources: a VM's pool needs Pool.Audit on it, a storage Datastore.Audit,
        # a node's usage Sys.Audit (VMs without VM.Audit are left out by fakepve already).
        from fakepve.server import USER
        user = request[USER]

        def keep(item):
            kind = item.get('type')
            if kind == 'storage' and not self.allowed(user, '/storage/' + str(item.get('storage')), 'Datastore.Audit'):
                return None
            if kind == 'node':
                return self._node_view(user, item)
            if item.get('pool') and not self.allowed(user, '/pool/' + str(item['pool']), 'Pool.Audit'):
                item.pop('pool')
            return item
        return self._filtered(await super()._resources(request), keep)

    async def _nn_list(self, v, user):
        # pve-manager PVE/API2/Network.pm index: a bridge is listed only with SDN.Audit or SDN.Use on
        # /sdn/zones/localnetwork/<bridge> (RPCEnvironment.pm check_sdn_bridge: or on one of its VLANs).
        items = await super()._nn_list(v, user)
        if user == 'root@pam':
            return items
        return [i for i in items if i.get('type') not in ('bridge', 'OVSBridge')
                or self._sdn_bridge_visible(user, i['iface'])]

    def _sdn_bridge_visible(self, user, bridge):
        path = '/sdn/zones/localnetwork/' + bridge
        if self.allowed(user, path, 'SDN.Audit|SDN.Use'):
            return True
        for user_id in (user, user.split('!')[0]):
            for granted, privs in (self.acl or {}).get(user_id, []) + self.acl_exact.get(user_id, []):
                if granted.startswith(path + '/') and privs & {'SDN.Audit', 'SDN.Use'}:
                    return True
        return False

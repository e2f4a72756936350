"""SDN zones, vnets and subnets for ShadowPve, with PVE 9's pending/apply model and global lock.

Follows pve-network's PVE/API2/Network/SDN*.pm and PVE/Network/SDN.pm: the config files (zones.cfg,
vnets.cfg, subnets.cfg) change at once; `PUT /cluster/sdn` copies them into the running config (a
`reloadnetworkall` task); `pending_config` compares the two. Every write runs under `lock_sdn_config`, which
refuses a caller without the global lock's token while the lock is held, and prefixes errors with the
operation ("create sdn zone object failed: ...").
"""

import copy
import hashlib
import ipaddress
import json
import uuid

from fakepve.model import PveError, TaskError
from fakepve.routing import split_list
from fakepve.server import USER, ok, params

from .pvesim_tasks import finish_task, launch, new_task

__all__ = ['SdnApi']

KINDS = ('zones', 'vnets', 'subnets')
# What GET shows for each kind besides the stored keys.
ID_KEY = {'zones': 'zone', 'vnets': 'vnet', 'subnets': 'subnet'}
LOCK_LINE = ' at /usr/share/perl5/PVE/Network/SDN.pm line 312.'
# Keys `pending_config` shows at the top level of a pending item rather than under `pending`.
TOP_KEYS = ('type', 'vnet')
# Zone keys a simple zone refuses (its plugin has no such option).
NOT_SIMPLE = ('bridge', 'tag', 'vlan-protocol', 'peers', 'controller', 'vrf-vxlan')
# Zone keys a vxlan zone refuses (PVE's VxlanPlugin options are peers, mtu, nodes, ipam, dns...).
NOT_VXLAN = ('bridge', 'tag', 'vlan-protocol', 'controller', 'vrf-vxlan')
# pve-network Zones/Plugin.pm find_bridge: `die "can't find bridge $bridge"` (no newline: Perl adds the place).
FIND_BRIDGE_AT = ' at /usr/share/perl5/PVE/Network/SDN/Zones/Plugin.pm line 323.'
# Zone types whose vnets hang off a node bridge (VlanPlugin.pm, QinQPlugin.pm generate_sdn_config).
BRIDGE_ZONES = ('vlan', 'qinq')
# Linux: interface names of at most 15 characters (IFNAMSIZ); PVE's API accepts up to 20 (pve-iface).
IFNAMSIZ_MAX = 15


def _die(message):
    return PveError(500, message)


def _param_error(**fields):
    return PveError(400, 'Parameter verification failed.', fields)


def _digest(section):
    return hashlib.sha1(json.dumps(section, sort_keys=True).encode()).hexdigest()


def _encode(value):
    return str(value)


def subnet_id(zone, cidr):
    """The section id PVE gives a subnet: <zone>-<network>-<prefix>."""
    return '{0}-{1}'.format(zone, str(cidr).replace('/', '-'))


class SdnApi(object):
    """Mixin of ShadowPve: /cluster/sdn (zones, vnets, subnets, apply, lock, rollback)."""

    def _init_sdn(self):
        # The config files (pending-inclusive) and the running config: kind -> {id: {key: value}}.
        self.sdn_config = dict((k, {}) for k in KINDS)
        self.sdn_running = dict((k, {}) for k in KINDS)
        self.sdn_version = 0
        # The global lock's token, or None.
        self.sdn_lock = None
        # Faults of the per-node network reload an apply starts: node -> dict(how, message, times).
        self.sdn_reload_faults = {}
        # How a warning inside a reload task shows. pvedaemon's __WARN__ handler (pve-manager bin/pvedaemon) only
        # prints it, so PVE's task ends "OK" with the warning in its log (the default here); True models a
        # warning that goes through RESTEnvironment log_warn ("WARN: ..." and a task ending "WARNINGS: n").
        self.sdn_warnings_counted = False

    def _routes_sdn(self):
        z, v = '/cluster/sdn/zones', '/cluster/sdn/vnets'
        s = v + '/{vnet}/subnets'
        return [('GET', z, self._sdn_zone_list), ('POST', z, self._sdn_zone_create),
                ('GET', z + '/{zone}', self._sdn_zone_read), ('PUT', z + '/{zone}', self._sdn_zone_update),
                ('DELETE', z + '/{zone}', self._sdn_zone_delete),
                ('GET', v, self._sdn_vnet_list), ('POST', v, self._sdn_vnet_create),
                ('GET', v + '/{vnet}', self._sdn_vnet_read), ('PUT', v + '/{vnet}', self._sdn_vnet_update),
                ('DELETE', v + '/{vnet}', self._sdn_vnet_delete),
                ('GET', s, self._sdn_subnet_list), ('POST', s, self._sdn_subnet_create),
                ('GET', s + '/{subnet}', self._sdn_subnet_read), ('PUT', s + '/{subnet}', self._sdn_subnet_update),
                ('DELETE', s + '/{subnet}', self._sdn_subnet_delete),
                ('PUT', '/cluster/sdn', self._sdn_apply), ('POST', '/cluster/sdn/lock', self._sdn_lock_take),
                ('DELETE', '/cluster/sdn/lock', self._sdn_lock_release),
                ('POST', '/cluster/sdn/rollback', self._sdn_rollback)]

    # ------------------------------------------------------------------ state

    def sdn_pending(self, kind):
        """PVE::Network::SDN::pending_config for one kind: {id: item with state and pending}."""
        running, config = self.sdn_running[kind], self.sdn_config[kind]
        out = {}
        for sid in sorted(running):
            run, cfg = running[sid], config.get(sid)
            item = out.setdefault(sid, {})
            for key in sorted(run):
                item[key] = run[key]
                if not cfg:
                    item['state'] = 'deleted'
                elif key not in cfg:
                    item.setdefault('pending', {})[key] = 'deleted'
                    item['state'] = 'changed'
                elif _encode(run[key]) != _encode(cfg[key]):
                    item['state'] = 'changed'
            if item.get('state') and 'pending' not in item:
                item['pending'] = {}
        for sid in sorted(config):
            run, cfg = running.get(sid) or {}, config[sid]
            item = out.setdefault(sid, {})
            for key in sorted(cfg):
                if key in TOP_KEYS:
                    item[key] = cfg[key]
                elif key not in run or _encode(run[key]) != _encode(cfg[key]):
                    item.setdefault('pending', {})[key] = cfg[key]
                if not run:
                    item['state'] = 'new'
                elif key not in run:
                    item['state'] = 'changed'
            if item.get('state') and 'pending' not in item:
                item['pending'] = {}
        return out

    def sdn_has_pending(self):
        return any(item.get('pending') is not None for kind in KINDS for item in self.sdn_pending(kind).values())

    def sdn_summary(self):
        """Ids per kind in the config and the running config, and whether the lock is held."""
        return {'config': dict((k, sorted(self.sdn_config[k])) for k in KINDS),
                'running': dict((k, sorted(self.sdn_running[k])) for k in KINDS),
                'locked': self.sdn_lock is not None, 'version': self.sdn_version}

    def _sdn_locked(self, values, errmsg):
        """lock_sdn_config: refuse a write without the global lock's token while the lock is held."""
        self.need_quorum()
        if self.sdn_lock is not None and values.get('lock-token') != self.sdn_lock:
            raise _die('{0}: invalid lock token provided!{1}'.format(errmsg, LOCK_LINE))

    def _sdn_view(self, kind, values, sid=None):
        """The items GET answers: the config, `running=1` the applied config, `pending=1` the comparison."""
        if values.get('pending'):
            section = self.sdn_pending(kind)
            digest = _digest(self.sdn_config[kind])
        elif values.get('running'):
            section = self.sdn_running[kind]
            digest = _digest(section)
        else:
            section = self.sdn_config[kind]
            digest = _digest(section)
        items = []
        for key in sorted(section):
            if sid is not None and key != sid:
                continue
            item = copy.deepcopy(section[key])
            item[ID_KEY[kind]] = key
            item['digest'] = digest
            if kind == 'subnets':
                zone, network, mask = key.rsplit('-', 2)
                item.update(zone=zone, network=network, mask=mask, cidr='{0}/{1}'.format(network, mask), id=key)
            items.append(item)
        return items

    def _sdn_one(self, kind, values, sid, label):
        items = self._sdn_view(kind, values, sid)
        if not items:
            raise _die("sdn '{0}' does not exist".format(sid) if label is None else
                       "{0} '{1}' does not exist".format(label, sid))
        return items[0]

    def _sdn_update_keys(self, current, values, skip, errmsg):
        digest = values.get('digest')
        if digest and digest != _digest(current[1]):
            raise _die('{0}: detected modified configuration - file changed by other user? Try again.'.format(
                errmsg))
        item = current[0]
        for key in split_list(values.get('delete')):
            item.pop(key, None)
        for key, val in values.items():
            if key in skip or key in ('digest', 'delete', 'lock-token'):
                continue
            item[key] = val

    # ------------------------------------------------------------------ zones

    async def _sdn_zone_list(self, v, user):
        items = self._sdn_view('zones', v)
        return [i for i in items if v.get('type') in (None, i.get('type'))
                and self._sdn_can_see(user, '/sdn/zones/' + i['zone'])]

    def _sdn_can_see(self, user, path):
        return self.allowed(user, path, 'SDN.Audit') or self.allowed(user, path, 'SDN.Allocate')

    async def _sdn_zone_read(self, v, user):
        return self._sdn_one('zones', v, v['zone'], None)

    def _sdn_check_zone(self, zid, zone):
        kind = zone.get('type')
        if kind == 'vlan' and not zone.get('bridge'):
            raise _param_error(bridge='property is missing and it is not optional')
        if kind == 'vxlan' and not zone.get('peers'):
            raise _param_error(peers='property is missing and it is not optional')
        if kind in ('simple', 'vxlan'):
            extra = sorted(k for k in zone if k in (NOT_SIMPLE if kind == 'simple' else NOT_VXLAN))
            if extra:
                raise _param_error(**dict((k, "property is not defined in schema and the schema does not allow "
                                           "additional properties") for k in extra))
        if len(zid) > 8:
            raise _param_error(zone='zone ID too long (max 8 characters)')

    async def _sdn_zone_create(self, v, user):
        errmsg = 'create sdn zone object failed'
        self._sdn_locked(v, errmsg)
        zid = v['zone']
        zone = dict((k, x) for k, x in v.items() if k not in ('zone', 'lock-token', 'digest'))
        self._sdn_check_zone(zid, zone)
        if zid in self.sdn_config['zones']:
            raise _die("{0}: sdn zone object ID '{1}' already defined".format(errmsg, zid))
        self.sdn_config['zones'][zid] = zone

    async def _sdn_zone_update(self, v, user):
        errmsg = 'update sdn zone object failed'
        self._sdn_locked(v, errmsg)
        zid = v['zone']
        zones = self.sdn_config['zones']
        if zid not in zones:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, zid))
        updated = copy.deepcopy(zones[zid])
        self._sdn_update_keys((updated, zones), v, ('zone', 'type'), errmsg)
        self._sdn_check_zone(zid, updated)
        zones[zid] = updated

    async def _sdn_zone_delete(self, v, user):
        errmsg = 'delete sdn zone object failed'
        self._sdn_locked(v, errmsg)
        zid = v['zone']
        if zid not in self.sdn_config['zones']:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, zid))
        for vid, vnet in sorted(self.sdn_config['vnets'].items()):
            if vnet.get('zone') == zid:
                raise _die('{0}: zone {1} is used by vnet {2}'.format(errmsg, zid, vid))
        del self.sdn_config['zones'][zid]

    # ------------------------------------------------------------------ vnets

    async def _sdn_vnet_list(self, v, user):
        out = []
        for item in self._sdn_view('vnets', v):
            zone = item.get('zone') or item.get('pending', {}).get('zone')
            if self._sdn_can_see(user, '/sdn/zones/{0}/{1}'.format(zone, item['vnet'])):
                out.append(item)
        return out

    async def _sdn_vnet_read(self, v, user):
        return self._sdn_one('vnets', v, v['vnet'], None)

    def _sdn_check_vnet(self, vid, vnet, errmsg):
        zid = vnet.get('zone')
        zone = self.sdn_config['zones'].get(zid)
        if zone is None:
            # PVE looks the zone's plugin up by the type of a zone it did not find.
            raise _die("{0}: unknown section type ''".format(errmsg))
        tag = vnet.get('tag')
        if zone.get('type') == 'simple' and tag is not None:
            raise _param_error(tag='vlan tag is not allowed on simple zone')
        if zone.get('type') == 'vxlan':
            if tag is None:
                raise _param_error(tag='missing vxlan tag')
            if int(tag) > 16777216:
                raise _param_error(tag='vxlan tag max value is 16777216')
            for other, cfg in sorted(self.sdn_config['vnets'].items()):  # VNIs are unique cluster-wide
                other_zone = self.sdn_config['zones'].get(cfg.get('zone')) or {}
                if other != vid and other_zone.get('type') == 'vxlan' and str(cfg.get('tag')) == str(tag):
                    raise _param_error(tag='tag {0} already exist in vnet {1}'.format(tag, other))
        if zone.get('type') == 'vlan':
            if tag is None:
                raise _param_error(tag='missing vlan tag')
            if int(tag) > 4096:
                raise _param_error(tag='vlan tag max value is 4096')
            for other, cfg in sorted(self.sdn_config['vnets'].items()):
                if other != vid and cfg.get('zone') == zid and str(cfg.get('tag')) == str(tag):
                    raise _param_error(tag='tag {0} already exist in vnet {1}'.format(tag, other))

    async def _sdn_vnet_create(self, v, user):
        errmsg = 'create sdn vnet object failed'
        self._sdn_locked(v, errmsg)
        vid = v['vnet']
        vnet = dict((k, x) for k, x in v.items() if k not in ('vnet', 'lock-token', 'digest'))
        vnet['type'] = 'vnet'
        if vid in self.sdn_config['vnets']:
            raise _die("{0}: sdn vnet object ID '{1}' already defined".format(errmsg, vid))
        self._sdn_check_vnet(vid, vnet, errmsg)
        self.sdn_config['vnets'][vid] = vnet

    async def _sdn_vnet_update(self, v, user):
        errmsg = 'update sdn vnet object failed'
        self._sdn_locked(v, errmsg)
        vid = v['vnet']
        vnets = self.sdn_config['vnets']
        if vid not in vnets:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, vid))
        updated = copy.deepcopy(vnets[vid])
        self._sdn_update_keys((updated, vnets), v, ('vnet', 'type'), errmsg)
        self._sdn_check_vnet(vid, updated, errmsg)
        vnets[vid] = updated

    async def _sdn_vnet_delete(self, v, user):
        errmsg = 'delete sdn vnet object failed'
        self._sdn_locked(v, errmsg)
        vid = v['vnet']
        if vid not in self.sdn_config['vnets']:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, vid))
        # pve-network VnetPlugin.pm on_delete_hook: only subnets block the delete. PVE does not look at the guests'
        # NICs: a vnet a VM still uses is deleted, and the VM loses its bridge at the next apply.
        if any(s.get('vnet') == vid for s in self.sdn_config['subnets'].values()):
            raise _param_error(vnet="Can't delete vnet if subnets exists")
        del self.sdn_config['vnets'][vid]

    # ---------------------------------------------------------------- subnets

    def _sdn_vnet_zone(self, vid):
        vnet = self.sdn_config['vnets'].get(vid)
        if vnet is None:
            raise _die("sdn '{0}' does not exist".format(vid))
        return vnet.get('zone')

    def _sdn_subnet_key(self, vid, given):
        """The section id of a subnet from its path value: the id itself or a CIDR."""
        if '/' in given:
            return subnet_id(self._sdn_vnet_zone(vid), given)
        return given

    async def _sdn_subnet_list(self, v, user):
        if v['vnet'] not in self.sdn_config['vnets'] and v['vnet'] not in self.sdn_running['vnets']:
            raise _die("sdn '{0}' does not exist".format(v['vnet']))
        return [i for i in self._sdn_view('subnets', v) if i.get('vnet') == v['vnet']]

    async def _sdn_subnet_read(self, v, user):
        item = self._sdn_one('subnets', v, self._sdn_subnet_key(v['vnet'], v['subnet']), None)
        if item.get('vnet') != v['vnet']:
            raise _die("sdn '{0}' does not exist".format(v['subnet']))
        return item

    @staticmethod
    def _sdn_check_subnet(cidr, subnet):
        try:
            net = ipaddress.ip_network(str(cidr), strict=True)
        except ValueError:
            raise _param_error(subnet='invalid format - invalid CIDR {0}'.format(cidr)) from None
        gateway = subnet.get('gateway')
        if gateway:
            try:
                inside = ipaddress.ip_address(str(gateway)) in net
            except ValueError:
                inside = False
            if not inside:
                raise _param_error(gateway='gateway {0} is not in subnet {1}'.format(gateway, cidr))
        return net

    async def _sdn_subnet_create(self, v, user):
        errmsg = 'create sdn subnet object failed'
        self._sdn_locked(v, errmsg)
        vid = v['vnet']
        zone = self._sdn_vnet_zone(vid)
        cidr = v['subnet']
        net = self._sdn_check_subnet(cidr, v)
        sid = subnet_id(zone, net.with_prefixlen)
        subnet = dict((k, x) for k, x in v.items() if k not in ('subnet', 'lock-token', 'digest'))
        subnet['type'] = 'subnet'
        if sid in self.sdn_config['subnets']:
            raise _die("{0}: sdn subnet object ID '{1}' already defined".format(errmsg, sid))
        self.sdn_config['subnets'][sid] = subnet

    async def _sdn_subnet_update(self, v, user):
        errmsg = 'update sdn subnet object failed'
        self._sdn_locked(v, errmsg)
        sid = self._sdn_subnet_key(v['vnet'], v['subnet'])
        subnets = self.sdn_config['subnets']
        if sid not in subnets or subnets[sid].get('vnet') != v['vnet']:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, sid))
        updated = copy.deepcopy(subnets[sid])
        self._sdn_update_keys((updated, subnets), v, ('subnet', 'vnet', 'type'), errmsg)
        self._sdn_check_subnet('/'.join(sid.rsplit('-', 2)[1:]), updated)
        subnets[sid] = updated

    async def _sdn_subnet_delete(self, v, user):
        errmsg = 'delete sdn subnet object failed'
        self._sdn_locked(v, errmsg)
        sid = self._sdn_subnet_key(v['vnet'], v['subnet'])
        subnets = self.sdn_config['subnets']
        if sid not in subnets or subnets[sid].get('vnet') != v['vnet']:
            raise _die("{0}: sdn '{1}' does not exist".format(errmsg, sid))
        del subnets[sid]

    # --------------------------------------------------- apply, lock, rollback

    async def _sdn_apply(self, v, user):
        # pve-network API2/Network/SDN.pm reload: commit under the lock, then a reloadnetworkall task that runs
        # `pvesh set /nodes/<node>/network` for every cluster node (get_nodelist, online or not) and only warns
        # (`warn $@`) when one fails; each node's reload is its own srvreload task, started as root@pam.
        self._sdn_locked(v, 'could not commit SDN config')
        self.sdn_running = copy.deepcopy(self.sdn_config)
        self.sdn_version += 1
        if v.get('lock-token') and v.get('release-lock', 1) not in (0, '0', False):
            self.sdn_lock = None

        async def work(log):
            warned = 0
            for node in sorted(self.nodes):
                log.append('{0}: reloading network config'.format(node))
                fault = self._sdn_reload_fault(node, 'pvesh')
                if not self.nodes[node].get('online', True):
                    fault = fault or 'proxy handler failed: 595 No route to host'  # this simulator's wording
                if fault:
                    log.append(fault)
                    log.append(self._sdn_warning("command 'pvesh set /nodes/{0}/network --regenerate-frr 0' "
                                                 "failed: exit code 255".format(node)))
                    warned += 1
                    continue
                await self.start_network_reload(node, 'root@pam')
            return warned
        return await self.sdn_task(sorted(self.nodes)[0], 'reloadnetworkall', '', user, work)

    def _sdn_warning(self, text):
        return 'WARN: ' + text if self.sdn_warnings_counted else text

    def fail_sdn_reload(self, node, how='pvesh', message=None, times=None):
        """Make the next SDN apply's reload fail on ``node``.

        how ``pvesh``: the apply cannot start the node's reload (as when the node is unreachable), a warning in
        the reloadnetworkall log; ``ifreload``: the node's srvreload task fails (TASK ERROR). ``times``: how many
        reloads fail (None: all until :meth:`clear_sdn_reload_faults`).
        """
        if how not in ('pvesh', 'ifreload'):
            raise ValueError('how must be pvesh or ifreload')
        default = ('500 Can\'t connect to {0}:8006 (Connection refused)' if how == 'pvesh' else
                   "command 'ifreload -a' failed: exit code 1")
        self.sdn_reload_faults[node] = dict(how=how, message=message or default.format(node), times=times)

    def clear_sdn_reload_faults(self):
        self.sdn_reload_faults.clear()

    def _sdn_reload_fault(self, node, how):
        fault = self.sdn_reload_faults.get(node)
        if not fault or fault['how'] != how:
            return None
        if fault['times'] is not None:
            fault['times'] -= 1
            if fault['times'] <= 0:
                del self.sdn_reload_faults[node]
        return fault['message']

    async def start_network_reload(self, node, user):
        """A node's srvreload task (pve-manager API2/Network.pm reload_network_config); returns its UPID."""
        async def work(log):
            return self.sdn_node_reload(node, log)
        return await self.sdn_task(node, 'srvreload', 'networking', user, work)

    def sdn_node_reload(self, node, log):
        """One node's network reload; appends to ``log`` and returns the number of warnings.

        pve-manager API2/Network.pm reload_network_config: interfaces.new becomes interfaces, then pve-network
        Zones.pm generate_etc_network_config writes the vnets (warning and skipping a vnet whose plugin dies:
        VlanPlugin/QinQPlugin find_bridge when the zone's bridge is not up, i.e. not in /sys/class/net *before*
        this reload), then `ifreload -a`.
        """
        net = self._network_for(node)
        up = set(net['running'])
        warned = 0
        zones, vnets = self.sdn_running['zones'], self.sdn_running['vnets']
        for vid in sorted(vnets):
            zid = vnets[vid].get('zone')
            zone = zones.get(zid)
            if not zid:
                log.append(self._sdn_warning("can't generate vnet '{0}': no zone assigned!".format(vid)))
                warned += 1
                continue
            if zone is None:
                log.append(self._sdn_warning("can't generate vnet '{0}': zone {1} don't exist".format(vid, zid)))
                warned += 1
                continue
            if zone.get('nodes') and node not in split_list(zone['nodes']):
                continue
            if zone.get('type') in BRIDGE_ZONES and zone.get('bridge') not in up:
                log.append(self._sdn_warning("zone {0} : vnet {1} : can't find bridge {2}{3}".format(
                    zid, vid, zone.get('bridge'), FIND_BRIDGE_AT)))
                warned += 1
        net['running'] = copy.deepcopy(net['config'])
        fault = self._sdn_reload_fault(node, 'ifreload')
        # Linux refuses interface names longer than IFNAMSIZ; ifreload fails (this simulator's wording).
        too_long = sorted(i for i in net['running'] if len(i) > IFNAMSIZ_MAX)
        if too_long and not fault:
            log.append('{0} : error: {0}: interface name longer than {1} characters'.format(too_long[0],
                                                                                            IFNAMSIZ_MAX))
            fault = "command 'ifreload -a' failed: exit code 1"
        if fault:
            raise TaskError(fault)
        return warned

    async def sdn_task(self, node, ttype, tid, user, work):
        """A task whose work(log) appends to its log and returns its warning count (pve-common RESTEnvironment
        fork_worker: "TASK OK", "TASK WARNINGS: n" when warnings were counted, "TASK ERROR: ..." when it died)."""
        upid, record = new_task(self, node, ttype, tid, user)

        async def run():
            try:
                await self.pause(self.task_secs.get(ttype))
                warned = await work(record['log'])
                finish_task(record, warned=warned if self.sdn_warnings_counted else 0)
            except TaskError as exc:
                finish_task(record, str(exc))

        await launch(self, run)
        return upid

    async def _task_list(self, request):
        # pve-manager API2/Tasks.pm node_tasks: typefilter, since/until (start time), vmid, userfilter, and
        # `source` (default `archive`: finished tasks only; `active` running ones; `all` both), newest first.
        node = request.match_info['node']
        user = request[USER]
        p = self._verify(request, await params(request))
        audit = self.allowed(user, '/nodes/' + node, 'Sys.Audit')
        source = p.get('source') or 'archive'
        out = []
        for task in self.tasklog:
            if task['node'] != node or not (audit or self._task_owner(user, task)):
                continue
            running = task['status'] == 'running'
            if (source == 'archive' and running) or (source == 'active' and not running):
                continue
            if p.get('typefilter') and task['type'] != p['typefilter']:
                continue
            if p.get('vmid') is not None and task['id'] != str(p['vmid']):
                continue
            if p.get('userfilter') and p['userfilter'].lower() not in task['user'].lower():
                continue
            if p.get('since') is not None and task['starttime'] < int(p['since']):
                continue
            if p.get('until') is not None and task['starttime'] > int(p['until']):
                continue
            out.append(self._task_view(task, True))
        out.sort(key=lambda t: -t['starttime'])
        start = p.get('start', 0)
        return ok(out[start:start + p.get('limit', 50)])

    async def _sdn_lock_take(self, v, user):
        errmsg = 'could not acquire lock for SDN config'
        self._sdn_locked(v, errmsg)
        if not v.get('allow-pending') and self.sdn_has_pending():
            raise _die('{0}: configuration has pending changes at /usr/share/perl5/PVE/API2/Network/SDN.pm '
                       'line 152.'.format(errmsg))
        self.sdn_lock = str(uuid.uuid4())
        return self.sdn_lock

    async def _sdn_lock_release(self, v, user):
        if not v.get('force'):
            self._sdn_locked(v, 'could not release lock')
        self.sdn_lock = None

    async def _sdn_rollback(self, v, user):
        self._sdn_locked(v, 'could not rollback SDN configuration')
        self.sdn_config = copy.deepcopy(self.sdn_running)
        if v.get('lock-token') and v.get('release-lock', 1) not in (0, '0', False):
            self.sdn_lock = None

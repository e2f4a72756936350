# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""SDN networks (zone + vnet + subnet) and node Linux bridges as one desired state.

The pure part (:func:`normalise_network`, :func:`plan_sdn`, :func:`plan_bridges`) turns the desired networks and
what PVE shows into a list of writes and a before/after view; the :class:`NetworkEngine` reads PVE, and when
something differs takes PVE 9's global SDN lock, makes every write with its token, applies once and releases the
lock. Any failure after the lock was taken rolls the pending SDN config back, so no half-built network is left.

Node bridges follow PVE's staged model the same way: every change goes into the node's pending
``interfaces.new``, each touched node is applied once (a task), and on a failure the pending changes of the nodes
not yet applied are reverted.
"""

from __future__ import annotations

import ipaddress
import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.api import PveApiError, PveTaskError

SDN_ID_RE = re.compile(r'^[a-z][a-z0-9]{1,7}$')
BRIDGE_RE = re.compile(r'^[a-zA-Z][a-zA-Z0-9_.]{0,14}$')
ZONE_TYPES = ('simple', 'vlan', 'vxlan')
VXLAN_TAG_MAX = 16777215


class NetworkError(Exception):
    """A desired network that cannot be built as given (a message for the operator)."""


# --------------------------------------------------------------------------------------- desired state


def _truthy(value):
    return str(value).lower() in ('1', 'true', 'yes', 'on')


# Keys a network entry may carry: the module's options plus the plan's informational keys.
KNOWN_KEYS = frozenset(('name', 'role', 'twin_of', 'type', 'zone', 'zone_type', 'zone_bridge', 'vnet', 'alias', 'tag',
                        'vlan', 'cidr', 'gateway', 'snat', 'isolated', 'bridge', 'nodes', 'bridge_ports', 'comment',
                        'autostart', 'state', 'vxlan_tag', 'peers'))


def unknown_keys(entry):
    """Keys of a network entry this module does not know (ignored, as the plan format asks of consumers)."""
    return sorted(k for k in entry if k not in KNOWN_KEYS)


def _bool(value, default=False):
    if value is None or value == '':
        return default
    if isinstance(value, bool):
        return value
    return _truthy(value)


def _list(value, where, key):
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(',', ' ').split()
    if not isinstance(value, (list, tuple)):
        raise NetworkError('{0}.{1} must be a list'.format(where, key))
    return [str(v) for v in value]


def normalise_network(entry, index=0):
    """One desired network (a plan ``networks`` entry or the module's options) as a checked, canonical dict."""
    where = 'networks[{0}]'.format(index)
    kind = entry.get('type') or 'vnet'
    state = entry.get('state') or 'present'
    if state not in ('present', 'absent'):
        raise NetworkError('{0}.state must be present or absent'.format(where))
    if kind == 'bridge':
        bridge = entry.get('bridge')
        if not bridge or not BRIDGE_RE.match(bridge):
            raise NetworkError('{0}: type bridge needs bridge, a Linux bridge name such as vmbr10 (got {1!r})'.format(
                where, bridge))
        ports = _list(entry.get('bridge_ports'), where, 'bridge_ports')
        return dict(kind='bridge', bridge=bridge, nodes=_list(entry.get('nodes'), where, 'nodes'),
                    ports=sorted(ports),
                    comment=entry.get('comment') if entry.get('comment') is not None else entry.get('alias'),
                    autostart=_bool(entry.get('autostart'), True), state=state, name=entry.get('name'))
    if kind != 'vnet':
        raise NetworkError('{0}.type must be vnet or bridge (got {1!r})'.format(where, kind))
    zone, vnet = entry.get('zone'), entry.get('vnet')
    for key, value in (('zone', zone), ('vnet', vnet)):
        if not value or not SDN_ID_RE.match(str(value)):
            raise NetworkError('{0}.{1} must be a PVE SDN id, 2-8 lowercase letters and digits starting with a '
                               'letter (got {2!r})'.format(where, key, value))
    zone_type = entry.get('zone_type') or 'simple'
    if zone_type not in ZONE_TYPES:
        raise NetworkError('{0}.zone_type must be simple or vlan, or vxlan (got {1!r})'.format(where, zone_type))
    isolated = _bool(entry.get('isolated'))
    tag = entry.get('tag') if entry.get('tag') is not None else entry.get('vlan')
    if tag is None and zone_type == 'vxlan':
        tag = entry.get('vxlan_tag')
    try:
        tag = int(tag) if tag not in (None, '') else None
    except (TypeError, ValueError):
        raise NetworkError('{0}.tag must be a VLAN number or VXLAN VNI (got {1!r})'.format(where, tag)) from None
    peers = None
    if zone_type == 'vxlan':
        if tag is None or not 1 <= tag <= VXLAN_TAG_MAX:
            raise NetworkError('{0}: a vnet in a vxlan zone needs a tag (the VNI) between 1 and {1} (got {2!r}); '
                               'without a VNI, zone_type must be simple or vlan'.format(where, VXLAN_TAG_MAX, tag))
        if entry.get('peers') not in (None, '', []):
            peers = _peers(_list(entry.get('peers'), where, 'peers'), where)
    elif entry.get('peers') not in (None, '', []):
        raise NetworkError('{0}: peers only apply to a vxlan zone'.format(where))
    if zone_type == 'vlan':
        if not entry.get('zone_bridge'):
            raise NetworkError('{0}: a vlan zone needs zone_bridge (the node bridge it rides on)'.format(where))
        if tag is None or not 1 <= tag <= 4094:
            raise NetworkError('{0}: a vnet in a vlan zone needs a tag between 1 and 4094 (got {1!r})'.format(
                where, tag))
    elif tag is not None and zone_type == 'simple':
        raise NetworkError('{0}: a simple zone carries no VLAN tag; use zone_type vlan or drop tag'.format(where))
    cidr, gateway = entry.get('cidr'), entry.get('gateway')
    if cidr:
        try:
            cidr = ipaddress.ip_network(str(cidr), strict=False).with_prefixlen
        except ValueError:
            raise NetworkError('{0}.cidr {1!r} is not a network in CIDR form'.format(where, cidr)) from None
    if isolated:
        gateway = None  # an isolated (shadow) network never routes: no gateway, no SNAT
    if gateway:
        if not cidr:
            raise NetworkError('{0}: gateway needs cidr'.format(where))
        try:
            inside = ipaddress.ip_address(str(gateway)) in ipaddress.ip_network(cidr)
        except ValueError:
            inside = False
        if not inside:
            raise NetworkError('{0}.gateway {1} is not inside {2}'.format(where, gateway, cidr))
    out = dict(kind='vnet', zone=zone, zone_type=zone_type,
               zone_bridge=entry.get('zone_bridge') if zone_type == 'vlan' else None,
               vnet=vnet, alias=entry.get('alias'), tag=tag, cidr=cidr, gateway=str(gateway) if gateway else None,
               snat=_bool(entry.get('snat')) and not isolated, isolated=isolated, state=state,
               name=entry.get('name'))
    if zone_type == 'vxlan':
        out['peers'] = peers  # None: every cluster node's address, filled in by NetworkEngine
    return out


def _peers(values, where):
    """VXLAN peer addresses, canonical and sorted (PVE keeps them as a comma-separated string)."""
    out = set()
    for value in values:
        try:
            out.add(str(ipaddress.ip_address(str(value).strip())))
        except ValueError:
            raise NetworkError('{0}.peers: {1!r} is not an IP address'.format(where, value)) from None
    return sorted(out, key=lambda a: (ipaddress.ip_address(a).version, ipaddress.ip_address(a)))


def check_consistent(networks):
    """Networks sharing a zone must agree on it; a vnet or bridge appears once."""
    zones, seen = {}, set()
    for net in networks:
        key = (net['kind'], net.get('vnet') or net.get('bridge'))
        if key in seen:
            raise NetworkError('{0} {1!r} is listed twice'.format(net['kind'], key[1]))
        seen.add(key)
        if net['kind'] != 'vnet' or net['state'] != 'present':
            continue
        want = (net['zone_type'], net['zone_bridge'], tuple(net.get('peers') or ()))
        if zones.setdefault(net['zone'], want) != want:
            raise NetworkError('zone {0!r} is given as {1} and as {2}'.format(net['zone'], zones[net['zone']], want))


# ------------------------------------------------------------------------------------ compare (pure)


def current_zone(item):
    out = dict(type=item.get('type'), bridge=item.get('bridge'))
    if item.get('type') == 'vxlan':
        peers = item.get('peers')
        try:
            out['peers'] = _peers(_list(peers, 'zone', 'peers'), 'zone') if peers else []
        except NetworkError:
            out['peers'] = _list(peers, 'zone', 'peers')  # compares unequal; the update rewrites it
    return out


def current_vnet(item):
    tag = item.get('tag')
    return dict(zone=item.get('zone'), alias=item.get('alias'), tag=int(tag) if tag not in (None, '') else None)


def current_subnet(item):
    return dict(cidr=item.get('cidr'), gateway=item.get('gateway') or None, snat=_truthy(item.get('snat', 0)))


def desired_zone(net):
    out = dict(type=net['zone_type'], bridge=net['zone_bridge'])
    if net['zone_type'] == 'vxlan':
        out['peers'] = list(net.get('peers') or [])
    return out


def desired_vnet(net):
    return dict(zone=net['zone'], alias=net['alias'], tag=net['tag'])


def desired_subnet(net):
    return dict(cidr=net['cidr'], gateway=net['gateway'], snat=net['snat'])


def field_changes(current, desired, keys):
    """(set, delete) for ``keys``: a desired None removes a value that is set; booleans go as 0/1."""
    changes, deletes = {}, []
    for key in keys:
        want, have = desired.get(key), current.get(key)
        if want == have:
            continue
        if want is None or want is False and key == 'snat':
            if have not in (None, False):
                deletes.append(key)
            continue
        changes[key] = int(want) if isinstance(want, bool) else want
    return changes, deletes


def _params(changes, deletes):
    params = dict(changes)
    if deletes:
        params['delete'] = ','.join(sorted(deletes))
    return params


def subnet_id(zone, cidr):
    return '{0}-{1}'.format(zone, cidr.replace('/', '-'))


def plan_sdn(networks, live):
    """The SDN writes that bring ``live`` to ``networks``, in a safe order, with a before/after view.

    ``live``: {'zones': {id: item}, 'vnets': {id: item}, 'subnets': {vnet: [item, ...]}} as PVE lists them.
    Returns (ops, before, after); an op is dict(method, path, params, what).
    """
    zones, vnets, subnets = live['zones'], live['vnets'], live['subnets']
    ops_zone, ops_vnet, ops_subnet, ops_remove = [], [], [], []
    before, after = {}, {}
    present = [n for n in networks if n['kind'] == 'vnet' and n['state'] == 'present']
    absent = [n for n in networks if n['kind'] == 'vnet' and n['state'] == 'absent']
    done_zones = set()
    for net in present:
        zid, vid = net['zone'], net['vnet']
        have_zone, have_vnet = zones.get(zid), vnets.get(vid)
        have_subnets = subnets.get(vid) or []
        before[vid] = _view(have_zone, have_vnet, have_subnets)
        after[vid] = dict(zone=dict(id=zid, **desired_zone(net)), vnet=dict(id=vid, **desired_vnet(net)),
                          subnets=[desired_subnet(net)] if net['cidr'] else [])
        if zid not in done_zones:
            done_zones.add(zid)
            want = desired_zone(net)
            if have_zone is None:
                params = dict(zone=zid, type=want['type'])
                if want['bridge']:
                    params['bridge'] = want['bridge']
                if want.get('peers'):
                    params['peers'] = ','.join(want['peers'])
                ops_zone.append(dict(method='POST', path='cluster/sdn/zones', params=params,
                                     what='create zone {0}'.format(zid)))
            else:
                have = current_zone(have_zone)
                if have['type'] != want['type']:
                    raise NetworkError('zone {0!r} is a {1} zone, wanted {2}; PVE cannot change a zone type: '
                                       'remove the zone (state absent) or choose another zone id'.format(
                                           zid, have['type'], want['type']))
                changes, deletes = field_changes(have, want, ('bridge', 'peers') if 'peers' in want else ('bridge',))
                if isinstance(changes.get('peers'), list):
                    changes['peers'] = ','.join(changes['peers'])
                if changes or deletes:
                    ops_zone.append(dict(method='PUT', path='cluster/sdn/zones/' + zid,
                                         params=_params(changes, deletes), what='update zone {0}'.format(zid)))
        want = desired_vnet(net)
        if have_vnet is None:
            params = dict(vnet=vid, zone=zid)
            if want['alias']:
                params['alias'] = want['alias']
            if want['tag'] is not None:
                params['tag'] = want['tag']
            ops_vnet.append(dict(method='POST', path='cluster/sdn/vnets', params=params,
                                 what='create vnet {0}'.format(vid)))
        else:
            have = current_vnet(have_vnet)
            if have['zone'] != zid and have_subnets:
                raise NetworkError('vnet {0!r} is in zone {1!r}, wanted {2!r}; remove its subnets (state absent) '
                                   'before moving it'.format(vid, have['zone'], zid))
            changes, deletes = field_changes(have, want, ('zone', 'alias', 'tag'))
            if changes or deletes:
                ops_vnet.append(dict(method='PUT', path='cluster/sdn/vnets/' + vid,
                                     params=_params(changes, deletes), what='update vnet {0}'.format(vid)))
        matched = None
        for item in have_subnets:
            cur = current_subnet(item)
            if net['cidr'] and cur['cidr'] == net['cidr']:
                matched = item
                continue
            # The vnet belongs to this network: a subnet it does not describe goes.
            ops_subnet.append(dict(method='DELETE', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
                vid, _subnet_key(item, have_vnet)), params={}, what='remove subnet {0} of {1}'.format(
                    cur['cidr'], vid)))
        if net['cidr']:
            want = desired_subnet(net)
            if matched is None:
                params = dict(subnet=net['cidr'], type='subnet')
                if want['gateway']:
                    params['gateway'] = want['gateway']
                if want['snat']:
                    params['snat'] = 1
                ops_subnet.append(dict(method='POST', path='cluster/sdn/vnets/{0}/subnets'.format(vid),
                                       params=params, what='create subnet {0} on {1}'.format(net['cidr'], vid)))
            else:
                changes, deletes = field_changes(current_subnet(matched), want, ('gateway', 'snat'))
                if changes or deletes:
                    ops_subnet.append(dict(method='PUT', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
                        vid, _subnet_key(matched, have_vnet)), params=_params(changes, deletes),
                        what='update subnet {0} on {1}'.format(net['cidr'], vid)))
    # Zones still used after this run: every vnet that stays, and every vnet this run creates.
    gone_vnets = set(n['vnet'] for n in absent if n['vnet'] in vnets)
    used = set(current_vnet(v)['zone'] for k, v in vnets.items() if k not in gone_vnets)
    used.update(n['zone'] for n in present)
    removed_zones = set()
    for net in absent:
        vid, zid = net['vnet'], net['zone']
        have_vnet = vnets.get(vid)
        have_subnets = subnets.get(vid) or []
        before[vid] = _view(zones.get(zid), have_vnet, have_subnets)
        after[vid] = {}
        for item in have_subnets:
            ops_remove.append(dict(method='DELETE', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
                vid, _subnet_key(item, have_vnet)), params={}, what='remove subnet {0} of {1}'.format(
                    item.get('cidr'), vid)))
        if have_vnet is not None:
            ops_remove.append(dict(method='DELETE', path='cluster/sdn/vnets/' + vid, params={},
                                   what='remove vnet {0}'.format(vid)))
        if zid in zones and zid not in used and zid not in removed_zones:
            removed_zones.add(zid)
            ops_remove.append(dict(method='DELETE', path='cluster/sdn/zones/' + zid, params={},
                                   what='remove zone {0}'.format(zid)))
        else:
            after[vid] = dict(zone=before[vid].get('zone')) if zid in zones else {}
    return ops_zone + ops_vnet + ops_subnet + ops_remove, before, after


def _subnet_key(item, vnet_item):
    if item.get('subnet') or item.get('id'):
        return item.get('subnet') or item.get('id')
    return subnet_id(current_vnet(vnet_item or {})['zone'], item['cidr'])


def _view(zone_item, vnet_item, subnet_items):
    if zone_item is None and vnet_item is None:
        return {}
    view = {}
    if zone_item is not None:
        view['zone'] = dict(id=zone_item.get('zone'), **current_zone(zone_item))
    if vnet_item is not None:
        view['vnet'] = dict(id=vnet_item.get('vnet'), **current_vnet(vnet_item))
    view['subnets'] = [current_subnet(s) for s in subnet_items]
    return view


# ------------------------------------------------------------------------------------- node bridges


def current_bridge(item):
    ports = item.get('bridge_ports') or ''
    return dict(type=item.get('type'), ports=sorted(str(ports).split()),
                comment=(item.get('comments') or '').strip() or None, autostart=_truthy(item.get('autostart', 0)))


def plan_bridges(bridges, live):
    """Writes for node bridges. ``live``: {node: {iface: item}}. Returns (ops, before, after, checks).

    A present bridge without ``nodes`` is only checked (the plan's ``type: bridge``: an existing bridge that is
    not created); ``checks`` lists (node, bridge) pairs where it is missing.
    """
    ops, before, after, missing = [], {}, {}, []
    for net in bridges:
        iface = net['bridge']
        if not net['nodes']:
            if net['state'] == 'present':
                missing.extend((node, iface) for node in sorted(live) if iface not in live[node])
            continue
        for node in net['nodes']:
            key = '{0}/{1}'.format(node, iface)
            have = (live.get(node) or {}).get(iface)
            before[key] = current_bridge(have) if have else {}
            path = 'nodes/{0}/network'.format(node)
            if net['state'] == 'absent':
                after[key] = {}
                if have is not None:
                    ops.append(dict(method='DELETE', path=path + '/' + iface, params={}, node=node,
                                    what='remove bridge {0} on {1}'.format(iface, node)))
                continue
            want = dict(type='bridge', ports=net['ports'], comment=net['comment'], autostart=net['autostart'])
            after[key] = want
            if have is None:
                params = dict(iface=iface, type='bridge', autostart=int(want['autostart']))
                if want['ports']:
                    params['bridge_ports'] = ' '.join(want['ports'])
                if want['comment']:
                    params['comments'] = want['comment']
                ops.append(dict(method='POST', path=path, params=params, node=node,
                                what='create bridge {0} on {1}'.format(iface, node)))
                continue
            cur = current_bridge(have)
            if cur['type'] != 'bridge':
                raise NetworkError('{0} on {1} is a {2}, not a bridge'.format(iface, node, cur['type']))
            params, deletes = {}, []
            if cur['ports'] != want['ports']:
                if want['ports']:
                    params['bridge_ports'] = ' '.join(want['ports'])
                else:
                    deletes.append('bridge_ports')
            if cur['comment'] != want['comment']:
                if want['comment']:
                    params['comments'] = want['comment']
                else:
                    deletes.append('comments')
            if cur['autostart'] != want['autostart']:
                params['autostart'] = int(want['autostart'])
            if params or deletes:
                params['type'] = 'bridge'
                ops.append(dict(method='PUT', path=path + '/' + iface, params=_params(params, deletes), node=node,
                                what='update bridge {0} on {1}'.format(iface, node)))
    return ops, before, after, missing


# ----------------------------------------------------------------------------------------- engine


class NetworkEngine(object):
    """Reads PVE, computes the writes, and makes them under the SDN lock (check mode: reads only)."""

    def __init__(self, api, check_mode=False, timeout=300):
        self.api = api
        self.check_mode = check_mode
        self.timeout = timeout
        self.token = None

    # ------------------------------------------------------------ reading

    def read_sdn(self, networks):
        zones = dict((z['zone'], z) for z in self.api.get('cluster/sdn/zones') or [])
        vnets = dict((v['vnet'], v) for v in self.api.get('cluster/sdn/vnets') or [])
        subnets = {}
        for net in networks:
            if net['vnet'] in vnets:
                subnets[net['vnet']] = list(self.api.get('cluster/sdn/vnets/{0}/subnets'.format(net['vnet'])) or [])
        return dict(zones=zones, vnets=vnets, subnets=subnets)

    def read_bridges(self, bridges, online):
        nodes = set()
        for net in bridges:
            nodes.update(net['nodes'] or online)
        live = {}
        for node in sorted(nodes):
            if node not in online:
                continue
            live[node] = dict((i['iface'], i) for i in self.api.get('nodes/{0}/network'.format(node)) or [])
        return live

    # ------------------------------------------------------------ converge

    def converge(self, networks):
        check_consistent(networks)
        vnet_nets = [n for n in networks if n['kind'] == 'vnet']
        bridge_nets = [n for n in networks if n['kind'] == 'bridge']
        result = dict(changed=False, changes=[], diff=dict(before={}, after={}), warnings=[])
        nodes = self.api.nodes()
        online = sorted(n for n, s in nodes.items() if s == 'online')
        for net in bridge_nets:
            unknown = [n for n in net['nodes'] if n not in nodes]
            if unknown:
                raise NetworkError('bridge {0}: node(s) {1} are not in the cluster (nodes: {2})'.format(
                    net['bridge'], ', '.join(unknown), ', '.join(sorted(nodes))))
        self._fill_peers(vnet_nets)
        sdn_ops, sdn_before, sdn_after = [], {}, {}
        if vnet_nets:
            sdn_ops, sdn_before, sdn_after = plan_sdn(vnet_nets, self.read_sdn(vnet_nets))
        br_ops, br_before, br_after, missing = [], {}, {}, []
        if bridge_nets:
            br_ops, br_before, br_after, missing = plan_bridges(bridge_nets, self.read_bridges(bridge_nets, online))
        if missing:
            raise NetworkError('bridge(s) missing on nodes: {0}. A network of type bridge without nodes names an '
                               'existing node bridge; create it (give nodes) or fix the name'.format(
                                   ', '.join('{1} on {0}'.format(n, b) for n, b in missing)))
        result['diff']['before'] = dict(sdn=sdn_before, bridges=br_before)
        result['diff']['after'] = dict(sdn=sdn_after, bridges=br_after)
        result['changes'] = [op['what'] for op in sdn_ops + br_ops]
        result['changed'] = bool(result['changes'])
        if not result['changed'] or self.check_mode:
            return result
        # Preflight: every refusal before the first write.
        self.api.require_quorum()
        offline = sorted(n for n, s in nodes.items() if s != 'online')
        if sdn_ops and offline:
            raise NetworkError('node(s) {0} are offline: an SDN apply reloads the network on every node, so no '
                               'change was made. Bring them back (or remove them from the cluster) and run '
                               'again'.format(', '.join(offline)))
        touched = sorted(set(op['node'] for op in br_ops))
        down = [n for n in touched if n not in online]
        if down:
            raise NetworkError('node(s) {0} are offline: no bridge change was made'.format(', '.join(down)))
        if sdn_ops:
            result['sdn_apply'] = self._run_sdn(sdn_ops)
            result['warnings'].extend(result['sdn_apply'].get('warnings') or [])
        if br_ops:
            result['bridge_apply'] = self._run_bridges(br_ops, touched)
        return result

    def _fill_peers(self, networks):
        """VXLAN zones given without peers get every cluster node's address (``/cluster/status`` ``ip``)."""
        todo = [n for n in networks if n['zone_type'] == 'vxlan' and n['state'] == 'present' and not n.get('peers')]
        if not todo:
            return
        nodes = [i for i in self.api.get('cluster/status') or [] if i.get('type') == 'node']
        missing = sorted(i.get('name') for i in nodes if not i.get('ip'))
        if not nodes or missing:
            raise NetworkError('vxlan zone {0}: cannot find the address of node(s) {1} in /cluster/status; give '
                               'peers'.format(todo[0]['zone'], ', '.join(missing) or '(none listed)'))
        peers = _peers([i['ip'] for i in nodes], 'cluster/status')
        for net in todo:
            net['peers'] = list(peers)

    def _run_sdn(self, ops):
        try:
            self.token = self.api.post('cluster/sdn/lock')
        except PveApiError as exc:
            raise self._lock_error(exc) from exc
        if not self.token:
            raise PveApiError('PVE gave no SDN lock token: this PVE has no global SDN lock (PVE 9 or later is '
                              'needed); no change was made', kind='config')
        done = None
        try:
            for op in ops:
                done = op['what']
                params = dict(op['params'])
                params['lock-token'] = self.token
                self.api.request(op['method'], op['path'], params)
            done = 'apply'
            # One apply; it releases the lock together with the commit.
            upid = self.api.put('cluster/sdn', **{'lock-token': self.token, 'release-lock': 1})
        except PveApiError as exc:
            self._rollback(exc, done)
            raise
        self.token = None
        if not upid:
            return dict(upid=None, exitstatus='OK', warnings=[])
        try:
            return self.api.wait_task(upid, timeout=self.timeout)
        except PveTaskError as exc:
            exc.message = ('{0}. The SDN configuration was committed but reloading the network failed on at least '
                           'one node; fix the node and apply again (pvesh set /cluster/sdn)'.format(exc.message))
            exc.args = (exc.message,)
            raise

    def _rollback(self, exc, step):
        """Discard every pending SDN change of this run and release the lock; say so in the error."""
        notes = []
        try:
            self.api.post('cluster/sdn/rollback', **{'lock-token': self.token, 'release-lock': 1})
            notes.append('the pending SDN changes were rolled back and the lock released')
        except PveApiError as rollback_exc:
            notes.append('rolling back failed too ({0})'.format(rollback_exc.message))
            try:
                self.api.delete('cluster/sdn/lock', **{'lock-token': self.token})
                notes.append('the lock was released')
            except PveApiError as release_exc:
                notes.append('releasing the lock failed ({0}); release it with `pvesh delete /cluster/sdn/lock '
                             '--force 1` after checking nobody else holds it'.format(release_exc.message))
        self.token = None
        exc.message = '{0} (at step: {1}); {2}'.format(exc.message, step, '; '.join(notes))
        exc.args = (exc.message,)

    @staticmethod
    def _lock_error(exc):
        text = exc.message
        if exc.status == 501 or 'not implemented' in text.lower():
            msg = ('this PVE has no global SDN lock (PVE 9 or later is needed): no change was made ({0})'.format(text))
        elif 'pending changes' in text:
            msg = ('the SDN configuration has pending changes that are not this run\'s: apply them (pvesh set '
                   '/cluster/sdn) or roll them back (pvesh create /cluster/sdn/rollback) first; no change was made '
                   '({0})'.format(text))
        elif 'lock' in text.lower():
            msg = ('the SDN configuration is locked by another client (another run or an operator in the GUI): '
                   'wait for it and run again; if a crashed client left the lock, release it with `pvesh delete '
                   '/cluster/sdn/lock --force 1`. No change was made ({0})'.format(text))
        else:
            return exc
        return PveApiError(msg, kind='lock', status=exc.status, method=exc.method, path=exc.path)

    def _run_bridges(self, ops, nodes):
        applied, step = [], None
        try:
            for op in ops:
                step = op['what']
                self.api.request(op['method'], op['path'], dict(op['params']))
            out = {}
            for node in nodes:
                step = 'apply network on {0}'.format(node)
                out[node] = self.api.run_task('PUT', 'nodes/{0}/network'.format(node), timeout=self.timeout)
                applied.append(node)
            return out
        except PveApiError as exc:
            reverted = []
            for node in nodes:
                if node in applied:
                    continue
                try:
                    self.api.delete('nodes/{0}/network'.format(node))
                    reverted.append(node)
                except PveApiError:
                    pass
            exc.message = '{0} (at step: {1}); pending network changes reverted on {2}{3}'.format(
                exc.message, step, ', '.join(reverted) or 'no node',
                '; already applied on {0}'.format(', '.join(applied)) if applied else '')
            exc.args = (exc.message,)
            raise

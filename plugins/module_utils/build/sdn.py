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
import time
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import (
    UNCERTAIN_ATTEMPTS, PveApiError, PveTaskError, PveUncertainError)

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi

ZONE_TYPES = ('simple', 'vlan', 'vxlan')
VXLAN_TAG_MAX = 16777215
# Log lines read from the apply task and each node's reload task (PVE's log can hold one line per vnet and node).
RELOAD_LOG_LINES = 2000
# Seconds (wall clock) to look for a node's reload task after the apply task ended.
NODE_TASK_WAIT = 10


class NetworkError(Exception):
    """A desired network that cannot be built as given (a message for the operator)."""


# --------------------------------------------------------------------------------------- desired state


def _truthy(value):
    return str(value).lower() in ('1', 'true', 'yes', 'on')


# Keys a network entry may carry: the module's options plus the plan's informational keys.
KNOWN_KEYS = frozenset(('name', 'role', 'twin_of', 'type', 'zone', 'zone_type', 'zone_bridge', 'vnet', 'alias', 'tag',
                        'vlan', 'cidr', 'gateway', 'snat', 'isolated', 'bridge', 'nodes', 'bridge_ports', 'comment',
                        'autostart', 'state', 'vxlan_tag', 'peers'))


def unknown_keys(entry: Mapping[str, t.Any]) -> list[str]:
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


def normalise_network(entry: Mapping[str, t.Any], index: int = 0) -> dict[str, t.Any]:
    """One desired network (a plan ``networks`` entry or the module's options) as a checked, canonical dict."""
    where = 'networks[{0}]'.format(index)
    kind = entry.get('type') or 'vnet'
    state = entry.get('state') or 'present'
    if state not in ('present', 'absent'):
        raise NetworkError('{0}.state must be present or absent'.format(where))
    if kind == 'bridge':
        bridge = entry.get('bridge')
        if not bridge:
            raise NetworkError('{0}: type bridge needs bridge, a Linux bridge name such as vmbr10'.format(where))
        problem = naming.bridge_name_problem(bridge)
        if problem:
            raise NetworkError('{0}.bridge: {1}; give {2}'.format(where, problem, naming.BRIDGE_NAME_HELP))
        ports = _list(entry.get('bridge_ports'), where, 'bridge_ports')
        return dict(kind='bridge', bridge=bridge, nodes=_list(entry.get('nodes'), where, 'nodes'),
                    ports=sorted(ports),
                    comment=entry.get('comment') if entry.get('comment') is not None else entry.get('alias'),
                    autostart=_bool(entry.get('autostart'), True), state=state, name=entry.get('name'))
    if kind != 'vnet':
        raise NetworkError('{0}.type must be vnet or bridge (got {1!r})'.format(where, kind))
    zone, vnet = entry.get('zone'), entry.get('vnet')
    for key, value in (('zone', zone), ('vnet', vnet)):
        if not naming.is_sdn_id(value):
            raise NetworkError('{0}.{1} must be a PVE SDN id (pve-sdn-{1}-id), {2} (got {3!r})'.format(
                where, key, naming.SDN_ID_HELP, value))
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
        problem = (naming.bridge_name_problem(entry['zone_bridge'])
                   or naming.vlan_bridge_problem(entry['zone_bridge'], tag))
        if problem:
            raise NetworkError('{0}.zone_bridge: {1}'.format(where, problem))
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


def check_consistent(networks: Iterable[Mapping[str, t.Any]]) -> None:
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


def current_zone(item: Mapping[str, t.Any]) -> dict[str, t.Any]:
    out = dict(type=item.get('type'), bridge=item.get('bridge'))
    if item.get('type') == 'vxlan':
        peers = item.get('peers')
        try:
            out['peers'] = _peers(_list(peers, 'zone', 'peers'), 'zone') if peers else []
        except NetworkError:
            out['peers'] = _list(peers, 'zone', 'peers')  # compares unequal; the update rewrites it
    return out


def current_vnet(item: Mapping[str, t.Any]) -> dict[str, t.Any]:
    tag = item.get('tag')
    return dict(zone=item.get('zone'), alias=item.get('alias'), tag=int(tag) if tag not in (None, '') else None)


def current_subnet(item: Mapping[str, t.Any]) -> dict[str, t.Any]:
    return dict(cidr=item.get('cidr'), gateway=item.get('gateway') or None, snat=_truthy(item.get('snat', 0)))


def desired_zone(net: Mapping[str, t.Any]) -> dict[str, t.Any]:
    out = dict(type=net['zone_type'], bridge=net['zone_bridge'])
    if net['zone_type'] == 'vxlan':
        out['peers'] = list(net.get('peers') or [])
    return out


def desired_vnet(net: Mapping[str, t.Any]) -> dict[str, t.Any]:
    return dict(zone=net['zone'], alias=net['alias'], tag=net['tag'])


def desired_subnet(net: Mapping[str, t.Any]) -> dict[str, t.Any]:
    return dict(cidr=net['cidr'], gateway=net['gateway'], snat=net['snat'])


def field_changes(current: Mapping[str, t.Any], desired: Mapping[str, t.Any],
                  keys: Iterable[str]) -> tuple[dict[str, t.Any], list[str]]:
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


def subnet_id(zone: str, cidr: str) -> str:
    return '{0}-{1}'.format(zone, cidr.replace('/', '-'))


def plan_sdn(networks: list[dict[str, t.Any]], live: Mapping[str, t.Any]
             ) -> tuple[list[dict[str, t.Any]], dict[str, t.Any], dict[str, t.Any]]:
    """The SDN writes that bring ``live`` to ``networks``, in a safe order, with a before/after view.

    ``live``: {'zones': {id: item}, 'vnets': {id: item}, 'subnets': {vnet: [item, ...]}} as PVE lists them.
    Returns (ops, before, after); an op is dict(method, path, params, what). The order: zones, then vnets, then
    subnets of the present networks, then the removals.
    """
    zones, vnets, subnets = live['zones'], live['vnets'], live['subnets']
    before, after = {}, {}
    present = [n for n in networks if n['kind'] == 'vnet' and n['state'] == 'present']
    absent = [n for n in networks if n['kind'] == 'vnet' and n['state'] == 'absent']
    ops_zone, ops_vnet, ops_subnet = _present_ops(present, zones, vnets, subnets, before, after)
    ops_remove = _removal_ops(absent, present, zones, vnets, subnets, before, after)
    return ops_zone + ops_vnet + ops_subnet + ops_remove, before, after


def _present_ops(present, zones, vnets, subnets, before, after):
    """Zone, vnet and subnet writes (three lists) for the present networks; fills in their before/after views."""
    ops_zone, ops_vnet, ops_subnet = [], [], []
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
            ops_zone.extend(_zone_ops(net, have_zone))
        ops_vnet.extend(_vnet_ops(net, have_vnet, have_subnets))
        ops_subnet.extend(_subnet_ops(net, have_vnet, have_subnets))
    return ops_zone, ops_vnet, ops_subnet


def _zone_ops(net, have_zone):
    """Create the network's zone, or update its bridge and peers; PVE cannot change a zone's type."""
    zid = net['zone']
    want = desired_zone(net)
    if have_zone is None:
        params = dict(zone=zid, type=want['type'])
        if want['bridge']:
            params['bridge'] = want['bridge']
        if want.get('peers'):
            params['peers'] = ','.join(want['peers'])
        return [dict(method='POST', path='cluster/sdn/zones', params=params, what='create zone {0}'.format(zid))]
    have = current_zone(have_zone)
    if have['type'] != want['type']:
        raise NetworkError('zone {0!r} is a {1} zone, wanted {2}; PVE cannot change a zone type: '
                           'remove the zone (state absent) or choose another zone id'.format(
                               zid, have['type'], want['type']))
    changes, deletes = field_changes(have, want, ('bridge', 'peers') if 'peers' in want else ('bridge',))
    if isinstance(changes.get('peers'), list):
        changes['peers'] = ','.join(changes['peers'])
    if changes or deletes:
        return [dict(method='PUT', path='cluster/sdn/zones/' + zid, params=_params(changes, deletes),
                     what='update zone {0}'.format(zid))]
    return []


def _vnet_ops(net, have_vnet, have_subnets):
    """Create the vnet, or update its zone, alias and tag (a vnet with subnets does not move to another zone)."""
    zid, vid = net['zone'], net['vnet']
    want = desired_vnet(net)
    if have_vnet is None:
        params = dict(vnet=vid, zone=zid)
        if want['alias']:
            params['alias'] = want['alias']
        if want['tag'] is not None:
            params['tag'] = want['tag']
        return [dict(method='POST', path='cluster/sdn/vnets', params=params, what='create vnet {0}'.format(vid))]
    have = current_vnet(have_vnet)
    if have['zone'] != zid and have_subnets:
        raise NetworkError('vnet {0!r} is in zone {1!r}, wanted {2!r}; remove its subnets (state absent) '
                           'before moving it'.format(vid, have['zone'], zid))
    changes, deletes = field_changes(have, want, ('zone', 'alias', 'tag'))
    if changes or deletes:
        return [dict(method='PUT', path='cluster/sdn/vnets/' + vid, params=_params(changes, deletes),
                     what='update vnet {0}'.format(vid))]
    return []


def _subnet_ops(net, have_vnet, have_subnets):
    """The vnet's one subnet (the network's cidr): created or updated; every other subnet of the vnet goes."""
    vid = net['vnet']
    ops, matched = [], None
    for item in have_subnets:
        cur = current_subnet(item)
        if net['cidr'] and cur['cidr'] == net['cidr']:
            matched = item
            continue
        # The vnet belongs to this network: a subnet it does not describe goes.
        ops.append(dict(method='DELETE', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
            vid, _subnet_key(item, have_vnet)), params={}, what='remove subnet {0} of {1}'.format(cur['cidr'], vid)))
    if not net['cidr']:
        return ops
    want = desired_subnet(net)
    if matched is None:
        params = dict(subnet=net['cidr'], type='subnet')
        if want['gateway']:
            params['gateway'] = want['gateway']
        if want['snat']:
            params['snat'] = 1
        ops.append(dict(method='POST', path='cluster/sdn/vnets/{0}/subnets'.format(vid),
                        params=params, what='create subnet {0} on {1}'.format(net['cidr'], vid)))
        return ops
    changes, deletes = field_changes(current_subnet(matched), want, ('gateway', 'snat'))
    if changes or deletes:
        ops.append(dict(method='PUT', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
            vid, _subnet_key(matched, have_vnet)), params=_params(changes, deletes),
            what='update subnet {0} on {1}'.format(net['cidr'], vid)))
    return ops


def _removal_ops(absent, present, zones, vnets, subnets, before, after):
    """Writes that remove the absent networks (subnets, vnet, then the zone once nothing else uses it); fills in
    their before/after views."""
    # Zones still used after this run: every vnet that stays, and every vnet this run creates.
    gone_vnets = set(n['vnet'] for n in absent if n['vnet'] in vnets)
    used = set(current_vnet(v)['zone'] for k, v in vnets.items() if k not in gone_vnets)
    used.update(n['zone'] for n in present)
    # Zones go last: pve-network Zones/Plugin.pm on_delete_hook refuses a zone that any vnet still uses.
    ops, zone_ops, removed_zones = [], [], set()
    for net in absent:
        vid, zid = net['vnet'], net['zone']
        have_vnet = vnets.get(vid)
        have_subnets = subnets.get(vid) or []
        before[vid] = _view(zones.get(zid), have_vnet, have_subnets)
        after[vid] = {}
        for item in have_subnets:
            ops.append(dict(method='DELETE', path='cluster/sdn/vnets/{0}/subnets/{1}'.format(
                vid, _subnet_key(item, have_vnet)), params={}, what='remove subnet {0} of {1}'.format(
                    item.get('cidr'), vid)))
        if have_vnet is not None:
            ops.append(dict(method='DELETE', path='cluster/sdn/vnets/' + vid, params={},
                            what='remove vnet {0}'.format(vid)))
        if zid in zones and zid not in used:
            if zid not in removed_zones:
                removed_zones.add(zid)
                zone_ops.append(dict(method='DELETE', path='cluster/sdn/zones/' + zid, params={},
                                     what='remove zone {0}'.format(zid)))
        else:
            after[vid] = dict(zone=before[vid].get('zone')) if zid in zones else {}
    return ops + zone_ops


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


def current_bridge(item: Mapping[str, t.Any]) -> dict[str, t.Any]:
    ports = item.get('bridge_ports') or ''
    return dict(type=item.get('type'), ports=sorted(str(ports).split()),
                comment=(item.get('comments') or '').strip() or None, autostart=_truthy(item.get('autostart', 0)))


def _zone_on(zone: Mapping[str, t.Any], node: str) -> bool:
    """Whether an SDN zone is generated on ``node`` (Zones.pm: every node unless the zone lists ``nodes``)."""
    nodes = zone.get('nodes')
    listed = nodes if isinstance(nodes, list) else str(nodes or '').replace(';', ',').split(',')
    listed = [n.strip() for n in listed if n and n.strip()]
    return not listed or node in listed


def _cidr(item: Mapping[str, t.Any], key: str) -> str | None:
    """A node interface's ``cidr`` (or ``cidr6``) as the listing gives it, else from its address and netmask."""
    if item.get(key):
        return str(item[key])
    suffix = key[len('cidr'):]
    address, netmask = item.get('address' + suffix), item.get('netmask' + suffix)
    if not address:
        return None
    return '{0}/{1}'.format(address, netmask) if netmask not in (None, '') else str(address)


def _addresses(item: Mapping[str, t.Any]) -> list[str]:
    """What makes a node bridge part of the node's own networking: its addresses and gateways."""
    out = ['address {0}'.format(_cidr(item, key)) for key in ('cidr', 'cidr6') if _cidr(item, key)]
    out += ['gateway {0}'.format(item[key]) for key in ('gateway', 'gateway6') if item.get(key)]
    return out + _dynamic(item)


def _dynamic(item: Mapping[str, t.Any]) -> list[str]:
    """The address methods an update through the API cannot keep, as ``inet dhcp`` / ``inet6 auto``:
    update_network writes static or manual only."""
    return ['{0} {1}'.format(family, item[key]) for key, family in (('method', 'inet'), ('method6', 'inet6'))
            if item.get(key) not in (None, '', 'static', 'manual')]


def plan_bridges(bridges: list[dict[str, t.Any]], live: Mapping[str, Mapping[str, Mapping[str, t.Any]]]
                 ) -> tuple[list[dict[str, t.Any]], dict[str, t.Any], dict[str, t.Any], list[tuple[str, str]]]:
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
            addressed = _addresses(have)
            if cur['ports'] != want['ports'] and addressed:
                raise NetworkError('{0} on {1} carries {2}: its ports ({3}) are not changed to ({4}), since a bridge '
                                   'with an address or gateway may be how the node is reached, and a new port list '
                                   'could cut it off. Give bridge_ports as they are, or use a bridge of its own; no '
                                   'change was made'.format(iface, node, ', '.join(addressed),
                                                            ' '.join(cur['ports']) or 'none',
                                                            ' '.join(want['ports']) or 'none'))
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
            if (params or deletes) and _dynamic(have):
                raise NetworkError('{0} on {1} gets its address by {2}: PVE\'s update would rewrite it as manual '
                                   '(API2/Network.pm update_network sets static or manual only) and the node could lose '
                                   'that address. Change {3} on the node by hand; no change was made'.format(
                                       iface, node, ' and '.join(_dynamic(have)),
                                       ', '.join(sorted(set(params) | set(deletes)))))
            if params or deletes:
                params['type'] = 'bridge'
                # pve-manager API2/Network.pm update_network sets method/method6 and families from this request alone
                # ($param->{method} = $param->{address} ? 'static' : 'manual'): without its addresses a comment
                # change would turn a static bridge manual and drop its inet6 stanza. Send them back as they are.
                for key in ('cidr', 'cidr6'):
                    if _cidr(have, key):
                        params[key] = _cidr(have, key)
                ops.append(dict(method='PUT', path=path + '/' + iface, params=_params(params, deletes), node=node,
                                what='update bridge {0} on {1}'.format(iface, node)))
    return ops, before, after, missing


# ------------------------------------------------------------------------------- VMs on a network


def vm_bridges(items: Mapping[str, t.Any] | Iterable[Mapping[str, t.Any]] | None) -> set[str]:
    """The bridges a guest's NICs are on: ``bridge=`` of every ``netN``, current and pending.

    ``items``: a config dict, or PVE's ``/pending`` list (key, value, pending, delete). Works for qemu and lxc.
    """
    if isinstance(items, dict):
        items = [dict(key=k, value=v) for k, v in items.items()]
    out = set()
    for item in items or []:
        if not propstr.NET_KEY.match(str(item.get('key', ''))):
            continue
        for value in (item.get('value'), item.get('pending')):
            bridge = propstr.parse(value).get('bridge') if value else None
            if bridge:
                out.add(bridge)
    return out


def describe_vm(vm: Mapping[str, t.Any]) -> str:
    name = ' ({0})'.format(vm['name']) if vm.get('name') else ''
    kind = 'template' if vm.get('template') else ('CT' if vm.get('type') == 'lxc' else 'VM')
    return '{0} {1}{2} on {3}'.format(kind, vm['vmid'], name, vm.get('node'))


def network_users(vms: Iterable[Mapping[str, t.Any]], vnets: Iterable[str] = (),
                  bridges: Mapping[str, Iterable[str]] | None = None) -> dict[str, list[str]]:
    """Guests that use a network about to be removed. Pure.

    ``vms``: dicts with vmid, name, node, type, template and ``bridges`` (see :func:`vm_bridges`); ``vnets``: vnet
    ids to remove (a vnet is a bridge on every node); ``bridges``: {node: [bridge, ...]} node bridges to remove
    (only guests on that node use them). Returns {'vnet X' | 'bridge X on N': [guest, ...]}, sorted.
    """
    out = {}
    for vm in sorted(vms, key=lambda v: int(v['vmid'])):
        for vid in sorted(set(vnets) & vm['bridges']):
            out.setdefault('vnet {0}'.format(vid), []).append(describe_vm(vm))
        for bridge in sorted(set((bridges or {}).get(vm.get('node')) or ()) & vm['bridges']):
            out.setdefault('bridge {0} on {1}'.format(bridge, vm['node']), []).append(describe_vm(vm))
    return out


# ----------------------------------------------------------------------------- the apply's task logs

# pve-network API2/Network/SDN.pm reload (task reloadnetworkall): per cluster node it prints
# "<node>: reloading network config" and runs `pvesh set /nodes/<node>/network`; a failure is only warned.
# A warning is a plain line (pvedaemon's __WARN__ handler), or "WARN: ..." when it goes through log_warn.
RELOAD_NODE_RE = re.compile(r'^(\S+): reloading network config\s*$')
RELOAD_FAILED_RE = re.compile(r"^(?:WARN: )?command 'pvesh set /nodes/([^/\s']+)/network[^']*' failed: (.*)$")
# pve-network Network/SDN/Zones.pm generate_etc_network_config, in each node's srvreload task: a vnet that
# cannot be generated there (a vlan zone's bridge missing, ...) is skipped with a warning.
VNET_SKIPPED_RE = re.compile(r'^(?:WARN: )?zone (\S+) : vnet (\S+) : (.*?)\s*$')
VNET_NOT_GENERATED_RE = re.compile(r"^(?:WARN: )?can't generate vnet '([^']+)': (.*?)\s*$")
PERL_AT_RE = re.compile(r' at /usr/share/perl5/\S+ line \d+\.?$')


def _clean(text):
    return PERL_AT_RE.sub('', text.strip())


def parse_reload_log(lines: Iterable[t.Any]) -> tuple[list[str], dict[str, str], list[tuple[str | None, str]]]:
    """The reloadnetworkall task log: (nodes started, {node: why it failed}, other lines)."""
    started, failed, other, current = [], {}, [], None
    for line in lines:
        line = str(line)
        found = RELOAD_NODE_RE.match(line)
        if found:
            current = found.group(1)
            started.append(current)
            continue
        found = RELOAD_FAILED_RE.match(line)
        if found:
            failed[found.group(1)] = _clean(found.group(2))
            continue
        if not line.strip() or line.startswith('TASK '):
            continue
        if current and current not in failed:
            other.append((current, _clean(line)))
        else:
            other.append((None, _clean(line)))
    # pvesh's own error output precedes the failure line: keep it as the reason.
    for node in failed:
        said = [text for who, text in other if who == node]
        if said:
            failed[node] = '{0} ({1})'.format('; '.join(said), failed[node])
    other = [(who, text) for who, text in other if who not in failed]
    return started, failed, other


def parse_node_reload_log(lines: Iterable[t.Any]) -> dict[str, str]:
    """A node's srvreload task log: {vnet: why PVE skipped it on that node}."""
    out = {}
    for line in lines:
        line = str(line)
        found = VNET_SKIPPED_RE.match(line)
        if found:
            out[found.group(2)] = 'zone {0}: {1}'.format(found.group(1), _clean(found.group(3)))
            continue
        found = VNET_NOT_GENERATED_RE.match(line)
        if found:
            out[found.group(1)] = _clean(found.group(2))
    return out


def vlan_bridges_missing(vlan_nets: Iterable[Mapping[str, t.Any]], live: Mapping[str, Mapping[str, Mapping[str, t.Any]]],
                         bridge_nets: Iterable[Mapping[str, t.Any]] = ()) -> str:
    """Where a vlan zone's bridge is not up: '<bridge> (zone Z, vnets ...) is missing on node N, ...' or ''.

    ``live``: {node: {iface: item}} of every online node (PVE's ``active`` marks an interface that is up); a bridge
    that ``bridge_nets`` creates on a node in the same run counts as up (it is applied before SDN).
    """
    created = set()
    for net in bridge_nets:
        if net['state'] == 'present':
            created.update((node, net['bridge']) for node in net['nodes'])
    found = {}
    for net in vlan_nets:
        bridge = net['zone_bridge']
        for node in sorted(live):
            item = live[node].get(bridge)
            if (item and _truthy(item.get('active', 0))) or (node, bridge) in created:
                continue
            key = (bridge, net['zone'])
            found.setdefault(key, dict(nodes=set(), vnets=set()))
            found[key]['nodes'].add(node)
            found[key]['vnets'].add(net['vnet'])
    return ', '.join('bridge {0} of vlan zone {1} (vnets {2}) is missing or not up on node(s) {3}'.format(
        bridge, zone, ', '.join(sorted(v['vnets'])), ', '.join(sorted(v['nodes'])))
        for (bridge, zone), v in sorted(found.items()))


def _upid_field(upid, index):
    try:
        return int(str(upid).split(':')[index], 16)
    except (IndexError, ValueError):
        return None


def upid_starttime(upid: str | None) -> int | None:
    """The start time (epoch) in a UPID (UPID:node:pid:pstart:starttime:type:id:user:)."""
    return _upid_field(upid, 4)


def upid_pstart(upid: str | None) -> int:
    """The process start (clock ticks since the node booted) in a UPID; 0 when unreadable."""
    return _upid_field(upid, 3) or 0


# ----------------------------------------------------------------------------------------- engine


class NetworkEngine(object):
    """Reads PVE, computes the writes, and makes them under the SDN lock (check mode: reads only)."""

    def __init__(self, api: PveApi, check_mode: bool = False, timeout: float = 300) -> None:
        self.api = api
        self.check_mode = check_mode
        self.timeout = timeout
        self.token = None
        self.notes = []  # lost answers resolved by looking again: warnings of the result

    # ------------------------------------------------------------ reading

    def read_sdn(self, networks: Iterable[Mapping[str, t.Any]]) -> dict[str, t.Any]:
        zones = dict((z['zone'], z) for z in self.api.get('cluster/sdn/zones') or [])
        vnets = dict((v['vnet'], v) for v in self.api.get('cluster/sdn/vnets') or [])
        subnets = {}
        for net in networks:
            if net['vnet'] in vnets:
                subnets[net['vnet']] = list(self.api.get('cluster/sdn/vnets/{0}/subnets'.format(net['vnet'])) or [])
        return dict(zones=zones, vnets=vnets, subnets=subnets)

    def read_bridges(self, bridges: Iterable[Mapping[str, t.Any]], online: list[str],
                     every_node: bool = False) -> dict[str, dict[str, dict[str, t.Any]]]:
        nodes = set(online) if every_node else set()
        for net in bridges:
            nodes.update(net['nodes'] or online)
        live = {}
        for node in sorted(nodes):
            if node not in online:
                continue
            live[node] = dict((i['iface'], i) for i in self.api.get('nodes/{0}/network'.format(node)) or [])
        return live

    def read_guests(self) -> list[dict[str, t.Any]]:
        """Every guest (/cluster/resources) with the bridges its NICs use, current and pending."""
        out = []
        for res in self.api.resources('vm'):
            kind = res.get('type')
            if kind not in ('qemu', 'lxc') or res.get('vmid') is None:
                continue
            vm = dict(vmid=res['vmid'], name=res.get('name'), node=res.get('node'), type=kind,
                      template=_truthy(res.get('template', 0)))
            base = 'nodes/{0}/{1}/{2}'.format(res.get('node'), kind, res['vmid'])
            try:
                vm['bridges'] = vm_bridges(self.api.get(base + '/pending'))
            except PveApiError as exc:
                try:
                    vm['bridges'] = vm_bridges(self.api.get(base + '/config'))
                except PveApiError:
                    raise NetworkError('cannot read the config of {0} to check which networks it uses ({1}); no '
                                       'change was made'.format(describe_vm(vm), exc.message)) from exc
            out.append(vm)
        return out

    # ------------------------------------------------------------ converge

    def converge(self, networks: list[dict[str, t.Any]]) -> dict[str, t.Any]:
        check_consistent(networks)
        vnet_nets = [n for n in networks if n['kind'] == 'vnet']
        bridge_nets = [n for n in networks if n['kind'] == 'bridge']
        vlan_nets = [n for n in vnet_nets if n['state'] == 'present' and n['zone_type'] == 'vlan']
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
        live = self.read_bridges(bridge_nets, online, every_node=bool(vlan_nets)) if bridge_nets or vlan_nets else {}
        if bridge_nets:
            br_ops, br_before, br_after, missing = plan_bridges(bridge_nets, live)
        if missing:
            raise NetworkError('bridge(s) missing on nodes: {0}. A network of type bridge without nodes names an '
                               'existing node bridge; create it (give nodes) or fix the name'.format(
                                   ', '.join('{1} on {0}'.format(n, b) for n, b in missing)))
        result['diff']['before'] = dict(sdn=sdn_before, bridges=br_before)
        result['diff']['after'] = dict(sdn=sdn_after, bridges=br_after)
        result['changes'] = [op['what'] for op in sdn_ops + br_ops]
        result['changed'] = bool(result['changes'])
        # A vlan zone's vnets exist on a node only if the zone's bridge is up there when SDN is applied.
        no_bridge = vlan_bridges_missing(vlan_nets, live, bridge_nets)
        if no_bridge and not sdn_ops:
            result['warnings'].append('{0}: PVE skips these vnets on those nodes; create the bridge(s) and apply SDN '
                                      'again (pvesh set /cluster/sdn)'.format(no_bridge))
        elif no_bridge:
            raise NetworkError('{0}: PVE would skip these vnets there when applying SDN (Zones.pm '
                               'generate_etc_network_config). Create the bridge(s) on those nodes (a network of type '
                               'bridge with nodes, in this run or before) or fix zone_bridge; no change was '
                               'made'.format(no_bridge))
        if not result['changed']:
            if vnet_nets:
                self._refuse_unapplied(vnet_nets)
            # The node listing shows interfaces.new: a bridge written and never applied (an interrupted run) looks
            # present; the staged diff tells.
            self._refuse_staged_node_changes(sorted(set(n for net in bridge_nets if net['state'] == 'present'
                                                        for n in net['nodes'] if n in online)), None)
            return result
        # what the apply reloads: every node for an SDN apply, else the nodes of this run's bridges
        touched = sorted(set(op['node'] for op in br_ops))
        reloaded, reload_kind = (online, 'sdn') if sdn_ops else (touched, 'bridges')
        if self.check_mode:
            self._refuse_removing_used(sdn_ops, br_ops)
            self._refuse_staged_node_changes(reloaded, reload_kind)
            return result
        # Preflight: every refusal before the first write.
        self.api.require_quorum()
        offline = sorted(n for n, s in nodes.items() if s != 'online')
        if sdn_ops and offline:
            raise NetworkError('node(s) {0} are offline: an SDN apply reloads the network on every node, so no '
                               'change was made. Bring them back (or remove them from the cluster) and run '
                               'again'.format(', '.join(offline)))
        down = [n for n in touched if n not in online]
        if down:
            raise NetworkError('node(s) {0} are offline: no bridge change was made'.format(', '.join(down)))
        self._refuse_removing_used(sdn_ops, br_ops)
        self._refuse_staged_node_changes(reloaded, reload_kind)
        # Node bridges first: the SDN apply generates a vlan zone's vnets only where the zone's bridge is up.
        if br_ops:
            result['bridge_apply'] = self._run_bridges(br_ops, touched, bridge_nets)
        if sdn_ops:
            known = set(t.get('upid') for t in (result.get('bridge_apply') or {}).values() if t.get('upid'))
            needed = dict((n['vnet'], n) for n in vnet_nets if n['state'] == 'present')
            result['sdn_apply'] = self._run_sdn(sdn_ops, needed, known, networks=vnet_nets)
            result['warnings'].extend(result['sdn_apply'].get('warnings') or [])
        result['warnings'].extend(self.notes)
        return result

    def _refuse_removing_used(self, sdn_ops, br_ops):
        """Stop before removing a vnet or node bridge that a guest still uses (PVE does not check it)."""
        vnets = [op['path'].rsplit('/', 1)[1] for op in sdn_ops
                 if op['method'] == 'DELETE' and re.match(r'^cluster/sdn/vnets/[^/]+$', op['path'])]
        bridges = {}
        for op in br_ops:
            if op['method'] == 'DELETE':
                bridges.setdefault(op['node'], []).append(op['path'].rsplit('/', 1)[1])
        if not vnets and not bridges:
            return
        if bridges:
            # pve-network Zones/VlanPlugin.pm (and QinQ) find_bridge dies for a zone whose bridge is gone, and
            # Zones.pm generate_etc_network_config then only warns and skips its vnets at the next reload.
            going = set(op['path'].rsplit('/', 1)[1] for op in sdn_ops
                        if op['method'] == 'DELETE' and re.match(r'^cluster/sdn/zones/[^/]+$', op['path']))
            riders = sorted('zone {0} ({1} on {2})'.format(z['zone'], z.get('type'), z['bridge'])
                            for z in self.api.get('cluster/sdn/zones') or []
                            if z.get('bridge') and z.get('zone') not in going
                            and any(z['bridge'] in names and _zone_on(z, node) for node, names in bridges.items()))
            if riders:
                raise NetworkError('cannot remove a node bridge that SDN zones ride on: {0}. PVE would drop their '
                                   'vnets from that node at the next network reload; move or remove the zones first; '
                                   'no change was made'.format(', '.join(riders)))
        users = network_users(self.read_guests(), vnets, bridges)
        if users:
            raise NetworkError('cannot remove a network that guests still use: {0}. PVE would remove it anyway and '
                               'these guests would lose their NIC\'s bridge at the next network apply. Move their '
                               'NICs to another network or remove the guests first; no change was made'.format(
                                   '; '.join('{0} is used by {1}'.format(k, ', '.join(v))
                                             for k, v in sorted(users.items()))))

    def _refuse_staged_node_changes(self, nodes, sdn):
        """Stop before an apply on ``nodes`` would carry out, or a failed one's revert throw away, node network changes
        staged and not applied (by someone else, or by an interrupted run). ``sdn``: 'sdn' (the SDN apply reloads
        every node), 'bridges' (this run's bridges), None (nothing to write: a bridge staged, never applied).

        A node's network edits go to /etc/network/interfaces.new until applied; pve-manager API2/Network.pm
        reload_network_config renames that file into place (all of it, whoever wrote it) and revert_network_changes
        unlinks it. An SDN apply reloads every node's network that way (pve-network API2/Network/SDN.pm reload:
        `pvesh set /nodes/<node>/network` per node). The listing's ``changes`` is the staged diff.
        """
        staged = []
        for node in nodes:
            diff = self.api.result_attrib('nodes/{0}/network'.format(node), 'changes')
            if diff:
                lines = [line for line in str(diff).splitlines() if line[:1] in '+-' and line[:3] not in ('+++', '---')]
                added = [line for line in lines if line.startswith('+')] or lines
                staged.append('{0} ({1} changed line(s){2})'.format(
                    node, len(lines), ', e.g. {0!r}'.format(added[0].strip()[:160]) if added else ''))
        if staged:
            why = {'sdn': 'The SDN apply reloads every node\'s network, which would apply them too (and a failed '
                          'apply\'s revert would discard them).',
                   'bridges': 'Applying this run\'s bridges reloads those nodes\' network, which would apply them too '
                              '(and a failed apply\'s revert would discard them).',
                   None: 'This run has nothing to write, but its bridges may be among them: written, never applied, '
                         'so not there.'}[sdn]
            raise NetworkError('node network changes are staged but not applied on {0} (by someone else, or by an '
                               'interrupted run). {1} Apply them (`pvesh set /nodes/<node>/network`, or Apply '
                               'Configuration in the GUI) or revert them (`pvesh delete /nodes/<node>/network`), then '
                               'run again; no change was made'.format('; '.join(staged), why))

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

    def _run_sdn(self, ops, needed=None, known_upids=(), networks=()):
        self.token = self._take_lock()
        if not self.token:
            raise PveApiError('PVE gave no SDN lock token: this PVE has no global SDN lock (PVE 9 or later is '
                              'needed); no change was made', kind='config')
        done = None
        try:
            for op in ops:
                done = op['what']
                params = dict(op['params'])
                params['lock-token'] = self.token
                self.api.settle_write(op['method'], op['path'], params, what=op['what'],
                                      settled=lambda op=op: self._sdn_settled(op, networks))
            done = 'apply'
            # One apply; it releases the lock together with the commit. pve-network API2/Network/SDN.pm reload
            # commits the config (running = pending) and starts the reload: after a lost answer it is sent again,
            # which commits nothing new and reloads once more (the lock file is gone, so the token still passes).
            upid = self.api.settle_write('PUT', 'cluster/sdn', {'lock-token': self.token, 'release-lock': 1},
                                         settled=lambda: False, what='the SDN apply')
        except PveApiError as exc:
            self._rollback(exc, done)
            raise
        self.token = None
        if not upid:
            return dict(upid=None, exitstatus='OK', warnings=[])
        deadline = time.monotonic() + self.timeout
        try:
            task = self.api.wait_task(upid, timeout=self.timeout, log_lines=RELOAD_LOG_LINES)
        except PveTaskError as exc:
            exc.message = ('{0}. The SDN configuration was committed but reloading the network failed on at least '
                           'one node; fix the node and apply again (pvesh set /cluster/sdn)'.format(exc.message))
            exc.args = (exc.message,)
            raise
        return self._verify_apply(task, needed or {}, set(known_upids), deadline)

    def _take_lock(self):
        """PVE 9's global SDN lock; its token. A lost answer is resolved by asking again.

        pve-network Network/SDN.pm create_global_lock writes the token to a file and answers it; nothing reads it
        back. When a request was lost and the next one finds a lock held while no SDN change is pending, that lock is
        the one the lost request took (another client holding it would have written nothing yet either, and would
        get "invalid lock token" at its next write: it fails, nothing is half-made): it is released (force, as
        `pvesh delete /cluster/sdn/lock --force 1`) and taken again, with a warning.
        """
        lost = False
        for attempt in range(1, UNCERTAIN_ATTEMPTS + 1):
            try:
                return self.api.post('cluster/sdn/lock')
            except PveUncertainError:
                lost = True
                if attempt == UNCERTAIN_ATTEMPTS:
                    raise
            except PveApiError as exc:
                if lost and 'invalid lock token' in exc.message and attempt < UNCERTAIN_ATTEMPTS and \
                        not self._sdn_pending():
                    self.api.settle_write('DELETE', 'cluster/sdn/lock', {'force': 1}, settled=lambda: False,
                                          what='the release of the SDN lock')
                    self.notes.append('the answer to the SDN lock request was lost, so its token never arrived; '
                                      'that lock was released (force) and taken again')
                    continue
                raise self._lock_error(exc) from exc
        raise AssertionError('unreachable')  # pragma: no cover

    def _unapplied(self, zones=None, vnets=None):
        """Zones, vnets and subnets written but not applied, as 'kind id (state)' (``pending=1`` listings: PVE marks
        what differs from the running config with a ``state``, pve-network Network/SDN.pm pending_config); only those
        of ``zones`` / ``vnets`` (and their subnets) when given."""
        found = ['zone {0} ({1})'.format(z.get('zone'), z['state']) for z in self.api.get('cluster/sdn/zones', pending=1)
                 or [] if z.get('state') and (zones is None or z.get('zone') in zones)]
        listed = [v for v in self.api.get('cluster/sdn/vnets', pending=1) or [] if vnets is None or v.get('vnet') in vnets]
        found += ['vnet {0} ({1})'.format(v.get('vnet'), v['state']) for v in listed if v.get('state')]
        for vnet in listed:
            # PVE's subnet listing of a vnet that exists only as pending (new) or is being deleted dies
            # (check_vnet_access): its state already says it
            if vnet.get('state') not in ('new', 'deleted'):
                found += ['subnet {0} ({1})'.format(sub.get('subnet') or sub.get('cidr'), sub['state'])
                          for sub in self.api.get('cluster/sdn/vnets/{0}/subnets'.format(vnet['vnet']), pending=1)
                          or [] if sub.get('state')]
        return found

    def _sdn_pending(self):
        """Does the SDN configuration have pending (not applied) changes?"""
        return bool(self._unapplied())

    def _refuse_unapplied(self, networks):
        """With nothing to write: is any of these networks' zone, vnet or subnet written but not applied?

        The listings show the written (pending) configuration (pve-network API2/Network/SDN/Zones.pm index without
        `running`), so a run interrupted between its writes and the apply (a cancelled job, a lost controller) leaves
        the next run with nothing to write while PVE runs without it.
        """
        found = self._unapplied(set(n['zone'] for n in networks), set(n['vnet'] for n in networks))
        if found:
            raise NetworkError('SDN changes of these networks are written but not applied: {0} (an interrupted run, '
                               'or another client). Apply them (`pvesh set /cluster/sdn`, releasing a lock a dead '
                               'run left with `pvesh delete /cluster/sdn/lock --force 1`) or roll them back (`pvesh '
                               'create /cluster/sdn/rollback`), then run again; no change was made'.format(
                                   ', '.join(found)))

    def _sdn_settled(self, op, networks):
        """After a lost answer: is this SDN write in place? The SDN config is read again (we hold the lock: nobody
        else wrote it) and planned again; the write is in place when the new plan no longer holds it."""
        ops, dummy, dummy2 = plan_sdn(networks, self.read_sdn(networks))
        return op['what'] not in set(o['what'] for o in ops)

    def _verify_apply(self, task, needed, known_upids, deadline):
        """Read the apply's task logs (PVE only warns) and fail when a vnet this run needs is not on a node.

        pve-network API2/Network/SDN.pm ``reload`` starts a network reload (a ``srvreload`` task) on every node
        and only warns when one cannot be started; each node's reload skips, with a warning, a vnet it cannot
        generate (Zones.pm ``generate_etc_network_config``). Both leave the apply task's status OK (or
        ``WARNINGS: n``), so the logs are what tells.
        """
        started, failed, other = parse_reload_log(task.get('log') or [])
        start = upid_starttime(task.get('upid'))
        problems, warnings, nodes = [], [], {}
        vnets = ', '.join(sorted(needed)) or 'none of this run'
        for node in sorted(failed):
            problems.append('node {0}: the network reload could not be started ({1}), so vnets {2} are not applied '
                            'there'.format(node, failed[node], vnets))
        for node, text in other:
            warnings.append('SDN apply{0}: {1}'.format(' on ' + node if node else '', text))
        if task.get('exitstatus', 'OK') != 'OK' and not failed:
            problems.append('the apply task ended with {0}: {1}'.format(
                task.get('exitstatus'), '; '.join(t for n, t in other) or 'see its log'))
        for node in started:
            if node in failed:
                continue
            found = self._node_reload_task(node, start, known_upids, deadline)
            if found is None:
                warnings.append('SDN apply: no network reload task (srvreload) found on node {0} after the apply, so '
                                'its vnets were not checked (reading it needs Sys.Audit on /nodes/{0})'.format(node))
                continue
            known_upids.add(found)
            try:
                reload = self.api.wait_task(found, timeout=max(1, deadline - time.monotonic()),
                                            log_lines=RELOAD_LOG_LINES)
            except PveTaskError as exc:
                problems.append('node {0}: the network reload failed ({1}), so vnets {2} may not be applied '
                                'there'.format(node, exc.message, vnets))
                continue
            nodes[node] = dict(upid=found, exitstatus=reload.get('exitstatus'))
            for vid, why in sorted(parse_node_reload_log(reload.get('log') or []).items()):
                if vid in needed:
                    problems.append('vnet {0} was not applied on node {1}: {2}'.format(vid, node, why))
                else:
                    warnings.append('SDN apply: vnet {0} (not managed by this run) is skipped on node {1}: '
                                    '{2}'.format(vid, node, why))
        task = dict(task, warnings=list(task.get('warnings') or []) + warnings, nodes=nodes)
        if problems:
            raise NetworkError('The SDN configuration was committed and applied, but PVE did not apply it '
                               'everywhere: {0}. Fix it and apply SDN again (pvesh set /cluster/sdn, or Apply in '
                               'the GUI\'s SDN view): a rerun of this module sees no difference in the '
                               'configuration and does not apply again'.format('; '.join(problems)))
        return task

    def _node_reload_task(self, node, start, known_upids, deadline):
        """The newest srvreload task on ``node`` that started with or after the apply and is not a bridge apply of
        this run. UPID start times have one-second steps, so ties go by the process start (``pstart``, the
        node's clock ticks since boot); a reload that started even later applies the same committed config."""
        params = dict(typefilter='srvreload', source='all', limit=50)
        if start is not None:
            params['since'] = start
        wait_until = min(deadline, time.monotonic() + NODE_TASK_WAIT)
        while True:
            try:
                items = self.api.get('nodes/{0}/tasks'.format(node), **params) or []
            except PveApiError:
                items = []
            mine = sorted((upid_starttime(i.get('upid')) or 0, upid_pstart(i.get('upid')), i.get('upid'))
                          for i in items if i.get('type') == 'srvreload' and i.get('upid') not in known_upids
                          and (start is None or (upid_starttime(i.get('upid')) or 0) >= start))
            if mine:
                return mine[-1][2]
            if time.monotonic() >= wait_until:
                return None
            time.sleep(0.5)

    def _rollback(self, exc, step):
        """Discard every pending SDN change of this run and release the lock; say so in the error."""
        notes = []
        try:
            # Rolling back twice restores the running config twice: a lost answer is simply followed by another.
            self.api.settle_write('POST', 'cluster/sdn/rollback', {'lock-token': self.token, 'release-lock': 1},
                                  settled=lambda: False, what='the SDN rollback')
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

    def _bridge_settled(self, op, bridges):
        """After a lost answer: is this bridge write in the node's pending config (read again, planned again)?"""
        live = self.read_bridges([b for b in bridges if op['node'] in b['nodes']], [op['node']])
        ops = plan_bridges(bridges, live)[0]
        return op['what'] not in set(o['what'] for o in ops if o['node'] == op['node'])

    def _apply_node(self, node):
        """Apply a node's pending network config (a task). pve-manager API2/Network.pm reload_network_config renames
        interfaces.new if it exists and reloads: after a lost answer it is sent again, which reloads once more."""
        path = 'nodes/{0}/network'.format(node)
        for attempt in range(1, UNCERTAIN_ATTEMPTS + 1):
            try:
                return self.api.run_task('PUT', path, timeout=self.timeout)
            except PveUncertainError:
                if attempt == UNCERTAIN_ATTEMPTS:
                    raise
                self.notes.append('the answer to the network apply on {0} was lost; applied again'.format(node))
        raise AssertionError('unreachable')  # pragma: no cover

    def _run_bridges(self, ops, nodes, bridges=()):
        applied, step = [], None
        try:
            for op in ops:
                step = op['what']
                self.api.settle_write(op['method'], op['path'], dict(op['params']), what=op['what'],
                                      settled=lambda op=op: self._bridge_settled(op, bridges))
            out = {}
            for node in nodes:
                step = 'apply network on {0}'.format(node)
                out[node] = self._apply_node(node)
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

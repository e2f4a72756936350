# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""VRRP (keepalived) model for the ``vip_failover`` role and the failover playbook.

Pure functions, stdlib only:

* :func:`derive_vrid`: a stable ``virtual_router_id`` from an instance name (same name -> same id on every
  host and every run, so the primaries and their shadow agree without coordination).
* :func:`build_model`: the role's simple list form (``vip_failover_instances``) plus the role settings ->
  a normalised list of instances the keepalived template renders, and a list of readable errors.
* :func:`cluster_errors`: checks across hosts (same VIP -> same VRID, VRID unique per network, every
  primary above every shadow, no equal priorities).
* :func:`instances_from_plan`: the instances of one host taken from the plan's ``vrrp`` section.
* :func:`parse_transitions` / :func:`parse_state` / :func:`instance_state`: read what the role's notify script
  writes (JSON lines, one object per transition) and its health file, for the failover module and the tests.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import is_finite_number

if t.TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    'STATES',
    'DEFAULT_SETTINGS',
    'derive_vrid',
    'build_model',
    'cluster_errors',
    'instances_from_plan',
    'watchdog_config',
    'parse_transitions',
    'parse_state',
    'instance_state',
    'current_states',
    'count_transitions',
    'cleanup_entries',
    'interfaces_from_facts',
]

STATES = ('MASTER', 'BACKUP', 'FAULT', 'STOP', 'DELETED')

# Role-wide settings; the role passes its vip_failover_* variables under these names.
DEFAULT_SETTINGS = {
    'vrrp_version': 3,
    'advert_int': 0.03,
    'primary_priority': 150,
    'shadow_priority': 100,
    'failback': 'auto',
    'preempt_delay': 5,
    'garp_master_delay': 1,
    'garp_master_repeat': 3,
    'garp_master_refresh': 2,
    'garp_master_refresh_repeat': 1,
    'garp_lower_prio_repeat': 3,
    'check_interval': 0.05,
    'check_timeout': 0.1,
    'check_fall': 2,
    'check_rise': 3,
    'state_dir': '/var/lib/shadownet-vip',
}

_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$')
_IFACE_RE = re.compile(r'^[^\s/:]{1,15}$')
_INSTANCE_KEYS = frozenset((
    'name', 'interface', 'vip', 'virtual_router_id', 'role', 'priority', 'rank', 'unicast_src_ip', 'peers',
    'check', 'advert_int', 'failback', 'preempt_delay', 'track_interfaces', 'auth',
))
_CHECK_KEYS = {
    'tcp': frozenset(('type', 'port', 'host', 'interval', 'timeout', 'fall', 'rise')),
    'command': frozenset(('type', 'command', 'interval', 'timeout', 'fall', 'rise')),
    'none': frozenset(('type',)),
}


def derive_vrid(name: t.Any) -> int:
    """Return a VRID in 1..255 derived from ``name`` (stable across hosts, runs and Python versions)."""
    digest = hashlib.sha256(str(name).encode('utf-8')).digest()
    return int.from_bytes(digest[:4], 'big') % 255 + 1


def _int_in(value, low, high):
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _check_advert_int(value, version, where, errors):
    if not is_finite_number(value):
        errors.append('%s: advert_int must be a number of seconds, got %r' % (where, value))
        return
    if version == 3:
        centis = round(value * 100)
        if not 1 <= centis <= 4095 or abs(centis - value * 100) > 1e-6:
            errors.append('%s: advert_int %r is invalid for VRRPv3: use 0.01 to 40.95 seconds in steps of '
                          '0.01' % (where, value))
    elif not (float(value).is_integer() and 1 <= value <= 255):
        errors.append('%s: advert_int %r is invalid for VRRPv2: use whole seconds 1 to 255 (or VRRPv3 for '
                      'sub-second adverts)' % (where, value))


def _parse_vip(vip, where, errors):
    if not isinstance(vip, str) or '/' not in vip:
        errors.append('%s: vip must be an address with its prefix length (CIDR), e.g. 10.10.0.100/24, got %r'
                      % (where, vip))
        return None
    try:
        iface = ipaddress.ip_interface(vip)
    except ValueError as exc:
        errors.append('%s: vip %r is not a valid address/prefix: %s' % (where, vip, exc))
        return None
    net = iface.network
    if iface.version == 4 and net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        errors.append('%s: vip %s is the network or broadcast address of %s' % (where, iface.ip, net))
    return iface


def _parse_addr(value, family, net, what, where, errors):
    try:
        addr = ipaddress.ip_address(value)
    except ValueError:
        errors.append('%s: %s %r is not an IP address' % (where, what, value))
        return None
    if addr.version != family:
        errors.append('%s: %s %s is IPv%d but the vip is IPv%d' % (where, what, addr, addr.version, family))
        return None
    if net is not None and addr not in net:
        errors.append('%s: %s %s is outside the vip network %s (VRRP peers must share the layer-2 network)'
                      % (where, what, addr, net))
    return addr


def _normalise_check(raw, settings, where, errors):
    if raw is None:
        raw = {'type': 'none'}
    if not isinstance(raw, dict):
        errors.append('%s: check must be a mapping such as {type: tcp, port: 80}, got %r' % (where, raw))
        return {'type': 'none'}
    kind = raw.get('type', 'tcp' if 'port' in raw else 'command' if 'command' in raw else None)
    if kind not in _CHECK_KEYS:
        errors.append('%s: check.type must be one of tcp, command, none, got %r' % (where, kind))
        return {'type': 'none'}
    unknown = sorted(set(raw) - _CHECK_KEYS[kind])
    if unknown:
        errors.append('%s: unknown check keys for type %s: %s' % (where, kind, ', '.join(unknown)))
    if kind == 'none':
        return {'type': 'none'}
    check = {
        'type': kind,
        'interval': raw.get('interval', settings['check_interval']),
        'timeout': raw.get('timeout', settings['check_timeout']),
        'fall': raw.get('fall', settings['check_fall']),
        'rise': raw.get('rise', settings['check_rise']),
    }
    for key in ('interval', 'timeout'):
        if not is_finite_number(check[key]) or not 0.01 <= check[key] <= 60:
            errors.append('%s: check.%s must be 0.01 to 60 seconds, got %r' % (where, key, check[key]))
    for key in ('fall', 'rise'):
        if not _int_in(check[key], 1, 100):
            errors.append('%s: check.%s must be a whole number 1 to 100, got %r' % (where, key, check[key]))
    if kind == 'tcp':
        check['port'] = raw.get('port')
        check['host'] = raw.get('host', '127.0.0.1')
        if not _int_in(check['port'], 1, 65535):
            errors.append('%s: check.port must be a TCP port 1 to 65535, got %r' % (where, check['port']))
        try:
            ipaddress.ip_address(check['host'])
        except ValueError:
            errors.append('%s: check.host must be an IP address, got %r' % (where, check['host']))
    else:
        check['command'] = raw.get('command')
        if not isinstance(check['command'], str) or not check['command'].strip():
            errors.append('%s: check.command must be a non-empty shell command string' % where)
    return check


def _normalise_auth(raw, version, where, errors):
    if not raw:
        return None
    if version == 3:
        errors.append('%s: auth is not part of VRRPv3 (RFC 5798 removed it): drop auth or set vrrp_version 2'
                      % where)
        return None
    if not isinstance(raw, dict):
        errors.append('%s: auth must be a mapping {type: PASS, pass: secret}' % where)
        return None
    kind = str(raw.get('type', 'PASS')).upper()
    secret = raw.get('pass')
    if kind not in ('PASS', 'AH'):
        errors.append('%s: auth.type must be PASS or AH, got %r' % (where, raw.get('type')))
    if not isinstance(secret, str) or not 1 <= len(secret) <= 8 or not secret.isprintable() or ' ' in secret:
        errors.append('%s: auth.pass must be 1 to 8 printable characters without spaces (keepalived uses only '
                      'the first 8)' % where)
    return {'type': kind, 'pass': secret}


def _merged_settings(settings):
    merged = dict(DEFAULT_SETTINGS)
    merged.update({k: v for k, v in (settings or {}).items() if v is not None})
    return merged


def build_model(instances: t.Any, settings: Mapping[str, t.Any] | None = None,
                interfaces: Mapping[str, list[str] | None] | None = None) -> dict[str, list[t.Any]]:
    """Normalise the simple list form.

    ``instances``: list of mappings (see the role's argument spec). ``settings``: role-wide values, keys as in
    :data:`DEFAULT_SETTINGS`. ``interfaces``: optional ``{ifname: [cidr, ...]}`` from facts; when given, each
    instance's interface must exist and one of its networks must contain the VIP.

    Returns ``{'instances': [...], 'errors': [...]}``; the instances are only meaningful when errors is empty.
    """
    settings = _merged_settings(settings)
    errors = []
    version = _check_settings(settings, errors)
    if not isinstance(instances, list):
        return {'instances': [], 'errors': errors + ['instances must be a list, got %s' % type(instances).__name__]}
    out = []
    seen_names = set()
    vrids = {}  # (network, vrid) -> instance name, for the uniqueness check on this host
    for index, raw in enumerate(instances):
        if not isinstance(raw, dict):
            errors.append('instances[%d]: must be a mapping, got %r' % (index, raw))
            continue
        out.append(_build_instance(index, raw, settings, version, interfaces, seen_names, vrids, errors))
    return {'instances': out, 'errors': errors}


def _check_settings(settings, errors):
    """Check the role-wide settings; return the VRRP version to build with (3 when the given one is invalid)."""
    version = settings['vrrp_version']
    if version not in (2, 3):
        errors.append('vrrp_version must be 2 or 3, got %r' % (version,))
        version = 3
    for key in ('primary_priority', 'shadow_priority'):
        if not _int_in(settings[key], 1, 254):
            errors.append('%s must be 1 to 254 (255 is reserved for the address owner), got %r'
                          % (key, settings[key]))
    if (_int_in(settings['primary_priority'], 1, 254) and _int_in(settings['shadow_priority'], 1, 254)
            and settings['primary_priority'] <= settings['shadow_priority']):
        errors.append('primary_priority (%s) must be higher than shadow_priority (%s)'
                      % (settings['primary_priority'], settings['shadow_priority']))
    return version


def _build_instance(index, raw, settings, version, interfaces, seen_names, vrids, errors):
    """One instance of the simple form, checked (errors appended, in the order of the steps) and normalised."""
    name, where = _instance_name(index, raw, seen_names, errors)
    interface = raw.get('interface')
    if not isinstance(interface, str) or not _IFACE_RE.match(interface):
        errors.append('%s: interface must be a network interface name (1-15 characters), got %r'
                      % (where, interface))
        interface = 'invalid'
    vip = _parse_vip(raw.get('vip'), where, errors)
    family = vip.version if vip else 4
    net = vip.network if vip else None
    inst_version = 3 if family == 6 else version
    vrid = _instance_vrid(raw, name, where, errors)
    role, priority = _role_and_priority(raw, settings, where, errors)
    src, peers = _unicast(raw, vip, interface, where, errors)
    advert_int, failback, preempt_delay = _timers(raw, settings, inst_version, where, errors)
    track = _track_interfaces(raw, interface, where, errors)
    check = _normalise_check(raw.get('check'), settings, where, errors)
    auth = _normalise_auth(raw.get('auth'), inst_version, where, errors)
    if interfaces is not None and vip is not None:
        _check_on_host(vip, interface, interfaces, where, errors)
    if net is not None and _int_in(vrid, 1, 255):
        _claim_vrid(vrids, net, vrid, name, where, errors)
    state_dir = settings['state_dir']
    return {
        'name': name,
        'interface': interface,
        'vip': str(vip) if vip else None,
        'vip_address': str(vip.ip) if vip else None,
        'prefixlen': vip.network.prefixlen if vip else None,
        'network': str(net) if net else None,
        'family': family,
        'version': inst_version,
        'virtual_router_id': vrid,
        'role': role,
        'priority': priority,
        'unicast_src_ip': str(src) if src else None,
        'peers': [str(p) for p in peers],
        'advert_int': advert_int,
        'failback': failback,
        'nopreempt': failback == 'manual',
        'preempt_delay': preempt_delay,
        'track_interfaces': track,
        'check': check,
        'auth': auth,
        'health_file': '%s/%s.health' % (state_dir, name),
        'beat_file': '%s/%s.beat' % (state_dir, name),
        'hold_file': '%s/%s.hold' % (state_dir, name),
        'state_file': '%s/%s.state' % (state_dir, name),
    }


def _instance_name(index, raw, seen_names, errors):
    """``(name, where)``: the instance's name (a placeholder when invalid) and how errors name the instance."""
    where = 'instances[%d]' % index
    name = raw.get('name')
    if isinstance(name, str) and _NAME_RE.match(name):
        where = 'instances[%d] (%s)' % (index, name)
    else:
        errors.append('%s: name must match %s (it names files and the keepalived instance), got %r'
                      % (where, _NAME_RE.pattern, name))
        name = 'invalid%d' % index
    unknown = sorted(set(raw) - _INSTANCE_KEYS)
    if unknown:
        errors.append('%s: unknown keys: %s' % (where, ', '.join(unknown)))
    if name in seen_names:
        errors.append('%s: duplicate instance name %s' % (where, name))
    seen_names.add(name)
    return name, where


def _instance_vrid(raw, name, where, errors):
    vrid = raw.get('virtual_router_id')
    if vrid is None:
        return derive_vrid(name)
    if not _int_in(vrid, 1, 255):
        errors.append('%s: virtual_router_id must be 1 to 255, got %r' % (where, vrid))
    return vrid


def _role_and_priority(raw, settings, where, errors):
    """``(role, priority)``: the priority from the role and rank unless given; the role from the priority unless
    given (above shadow_priority is a primary)."""
    primary, shadow = settings['primary_priority'], settings['shadow_priority']
    role = raw.get('role')
    priority = raw.get('priority')
    if role is None and priority is None:
        errors.append('%s: set role (primary or shadow) or priority' % where)
    if role is not None and role not in ('primary', 'shadow'):
        errors.append('%s: role must be primary or shadow, got %r' % (where, role))
    rank = raw.get('rank', 0)
    if not _int_in(rank, 0, 100):
        errors.append('%s: rank must be 0 to 100, got %r' % (where, rank))
        rank = 0
    if priority is None:
        priority = (primary - rank) if role == 'primary' else shadow
    if not _int_in(priority, 1, 254):
        errors.append('%s: priority must be 1 to 254, got %r' % (where, priority))
    elif role == 'primary' and _int_in(shadow, 1, 254) and priority <= shadow:
        errors.append('%s: a primary needs a priority above shadow_priority (%s), got %s'
                      % (where, shadow, priority))
    elif role == 'shadow' and _int_in(primary, 1, 254) and priority >= primary:
        errors.append('%s: a shadow needs a priority below primary_priority (%s), got %s'
                      % (where, primary, priority))
    if role is None and _int_in(priority, 1, 254):
        role = 'primary' if priority > shadow else 'shadow'
    return role, priority


def _unicast(raw, vip, interface, where, errors):
    """``(unicast_src_ip, [peer, ...])`` as addresses: both set (unicast) or neither (multicast)."""
    family = vip.version if vip else 4
    net = vip.network if vip else None
    src = None
    if raw.get('unicast_src_ip') is not None:
        src = _parse_addr(raw['unicast_src_ip'], family, net, 'unicast_src_ip', where, errors)
    peers = raw.get('peers') or []
    if not isinstance(peers, list):
        errors.append('%s: peers must be a list of addresses' % where)
        peers = []
    peer_addrs = []
    for peer in peers:
        addr = _parse_addr(peer, family, net, 'peer', where, errors)
        if addr is None:
            continue
        if addr in peer_addrs:
            errors.append('%s: peer %s is listed twice' % (where, addr))
        if src is not None and addr == src:
            errors.append('%s: peer %s is this host\'s own unicast_src_ip' % (where, addr))
        if vip is not None and addr == vip.ip:
            errors.append('%s: peer %s is the vip itself' % (where, addr))
        peer_addrs.append(addr)
    if src is not None and vip is not None and src == vip.ip:
        errors.append('%s: unicast_src_ip must be the host\'s own address, not the vip' % where)
    if peer_addrs and src is None:
        errors.append('%s: unicast peers need unicast_src_ip (this host\'s address on %s)'
                      % (where, interface))
    if src is not None and not peer_addrs:
        errors.append('%s: unicast_src_ip is set but peers is empty (keepalived would fall back to '
                      'multicast): list the other members\' addresses' % where)
    return src, peer_addrs


def _timers(raw, settings, version, where, errors):
    """``(advert_int, failback, preempt_delay)``, each from the instance or the role's settings."""
    advert_int = raw.get('advert_int', settings['advert_int'])
    _check_advert_int(advert_int, version, where, errors)
    failback = raw.get('failback', settings['failback'])
    if failback not in ('auto', 'manual'):
        errors.append('%s: failback must be auto (preempt after preempt_delay) or manual (nopreempt), got %r'
                      % (where, failback))
    preempt_delay = raw.get('preempt_delay', settings['preempt_delay'])
    if not is_finite_number(preempt_delay) or not 0 <= preempt_delay <= 1000:
        errors.append('%s: preempt_delay must be 0 to 1000 seconds, got %r' % (where, preempt_delay))
    return advert_int, failback, preempt_delay


def _track_interfaces(raw, interface, where, errors):
    # keepalived always tracks the instance's own interface (and warns, failing `keepalived -t`, when it
    # is listed): keep only the extra ones.
    track = raw.get('track_interfaces') or []
    if not isinstance(track, list) or not all(isinstance(t, str) and _IFACE_RE.match(t) for t in track):
        errors.append('%s: track_interfaces must be a list of interface names' % where)
        track = []
    return [t for t in dict.fromkeys(track) if t != interface]


def _check_on_host(vip, interface, interfaces, where, errors):
    """The instance's interface exists on this host (gathered facts) and one of its networks holds the vip."""
    if interface not in interfaces:
        errors.append('%s: interface %s does not exist on this host (found: %s)'
                      % (where, interface, ', '.join(sorted(interfaces)) or 'none'))
        return
    nets = []
    for cidr in interfaces[interface] or []:
        try:
            nets.append(ipaddress.ip_interface(cidr).network)
        except ValueError:
            continue
    if not any(vip.ip in n for n in nets if n.version == vip.version and n.prefixlen > 0):
        errors.append('%s: vip %s is not inside any network of %s (%s): VRRP needs the vip on the '
                      'interface\'s own layer-2 network'
                      % (where, vip, interface, ', '.join(str(n) for n in nets) or 'no address'))


def _claim_vrid(vrids, net, vrid, name, where, errors):
    """Record ``vrid`` on ``net`` for ``name``; an error when another instance of this host has it already."""
    key = (str(net), vrid)
    if key in vrids:
        errors.append('%s: virtual_router_id %s is already used by %s on %s; set virtual_router_id '
                      'explicitly (free ids on this host: e.g. %s)'
                      % (where, vrid, vrids[key], net, _free_vrid(vrids, net)))
    else:
        vrids[key] = name


def _free_vrid(used, net):
    taken = {vrid for (n, vrid) in used if n == str(net)}
    for vrid in range(1, 256):
        if vrid not in taken:
            return vrid
    return None


def cluster_errors(members: Iterable[Mapping[str, t.Any]]) -> list[str]:
    """Check one VRRP deployment across hosts.

    ``members``: list of ``{'host', 'name', 'network', 'virtual_router_id', 'priority', 'role', 'vip'}``
    (the role passes each play host's model instances). Returns a list of readable errors.
    """
    errors = []
    by_name = {}
    for m in members:
        by_name.setdefault(m['name'], []).append(m)
    owners = {}
    for name in sorted(by_name):
        group = by_name[name]
        for key in ('vip', 'virtual_router_id'):
            values = sorted({str(m[key]) for m in group})
            if len(values) > 1:
                errors.append('%s: hosts disagree on %s: %s' % (
                    name, key, ', '.join('%s=%s' % (m['host'], m[key]) for m in group)))
        prio = {}
        for m in group:
            if m['priority'] in prio:
                errors.append('%s: %s and %s have the same priority %s (keepalived then elects by address; '
                              'give each member its own priority or rank)'
                              % (name, prio[m['priority']], m['host'], m['priority']))
            prio[m['priority']] = m['host']
        primaries = [m for m in group if m['role'] == 'primary']
        shadows = [m for m in group if m['role'] == 'shadow']
        if primaries and shadows:
            low = min(primaries, key=lambda m: m['priority'])
            high = max(shadows, key=lambda m: m['priority'])
            if high['priority'] >= low['priority']:
                errors.append('%s: shadow %s (priority %s) is not below primary %s (priority %s)'
                              % (name, high['host'], high['priority'], low['host'], low['priority']))
        for m in group:
            key = (m['network'], m['virtual_router_id'])
            if key in owners and owners[key] != name:
                errors.append('%s: virtual_router_id %s on %s is also used by %s; VRIDs must be unique per network'
                              % (name, m['virtual_router_id'], m['network'], owners[key]))
                break
            owners[key] = name
    return errors


def instances_from_plan(plan: Mapping[str, t.Any] | None, host: str, addresses: Mapping[str, str] | None = None,
                        interface_pattern: str = 'eth{nic}', checks: Mapping[str, Mapping[str, t.Any]] | None = None
                        ) -> list[dict[str, t.Any]]:
    """Return the simple-form instances of ``host`` (a VM name) from the plan's ``vrrp`` groups (docs/plan.md).

    The plan gives the VRID, the priorities and the NIC index of each member but no addresses: ``addresses``
    (``{vm name: address}``, e.g. the inventory's ``ansible_host``) turns the group into unicast when every
    member has an address inside the VIP network; otherwise it stays multicast. ``interface_pattern`` maps a
    NIC index to the guest's interface name. ``checks``: ``{service: check}`` (the plan has no health check).
    """
    out = []
    addresses = addresses or {}
    checks = checks or {}
    template = (plan or {}).get('template')
    for group in (plan or {}).get('vrrp', []) or []:
        members = group.get('members') or []
        mine = [m for m in members if m.get('vm') == host]
        for member in mine:
            name = '%s-%s' % (template, group['service']) if template else group['service']
            inst = {'name': name, 'vip': group['vip'], 'virtual_router_id': group['vrid'],
                    'interface': interface_pattern.format(nic=member.get('nic', 0)),
                    'role': member.get('role', 'primary'), 'priority': member['priority']}
            if group['service'] in checks:
                inst['check'] = checks[group['service']]
            try:
                net = ipaddress.ip_interface(group['vip']).network
                addrs = {m['vm']: ipaddress.ip_address(addresses[m['vm']]) for m in members}
            except (KeyError, ValueError):
                addrs = None
            if addrs and all(a in net for a in addrs.values()):
                inst['unicast_src_ip'] = str(addrs[host])
                inst['peers'] = [str(addrs[m['vm']]) for m in members if m['vm'] != host]
            out.append(inst)
    return out


def watchdog_config(model: Iterable[Mapping[str, t.Any]]) -> dict[str, t.Any]:
    """The JSON document the guest's watchdog reads: one fast health check per instance that has one, the file
    it writes its verdict to, and the file whose modification time says it is alive (keepalived's backstop runs
    the check itself only when that file is stale)."""
    return {'instances': [
        {'name': i['name'], 'health_file': i['health_file'], 'beat_file': i['beat_file'], 'check': i['check']}
        for i in model if i['check']['type'] != 'none'
    ]}


def cleanup_entries(model: Iterable[Mapping[str, t.Any]]) -> list[str]:
    """Lines of the VIP list the stale-VIP cleanup script reads: ``name interface vip/prefix``."""
    return ['%s %s %s' % (i['name'], i['interface'], i['vip']) for i in model]


def parse_transitions(text: str | None) -> list[dict[str, t.Any]]:
    """Parse ``transitions.log`` (JSON lines written by the notify script) into a list sorted by time.

    Each item: ``{'time': float, 'instance': str, 'state': str, 'priority': int}``. Malformed lines (a
    partial line from a crash) are skipped, never raised: the failover playbook must not fail on them.
    """
    events = []
    for line in (text or '').splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or obj.get('state') not in STATES or not isinstance(obj.get('instance'), str):
            continue
        try:
            events.append({'time': float(obj['time']), 'instance': obj['instance'], 'state': obj['state'],
                           'priority': int(obj.get('priority', 0))})
        except (KeyError, TypeError, ValueError):
            continue
    events.sort(key=lambda e: e['time'])
    return events


def parse_state(text: str | None) -> dict[str, t.Any] | None:
    """Parse one ``<instance>.state`` file (the last transition); None when empty or malformed."""
    events = parse_transitions(text)
    return events[-1] if events else None


def instance_state(value: t.Any) -> tuple[str | None, int | None]:
    """``(state, health)`` of one instance from what its notify files say; ``(None, None)`` when nothing is known.

    ``value`` is a state name (``MASTER``), the text of ``<instance>.state`` (a JSON line, read by
    :func:`parse_state`), or a dict with ``state`` (either of those, or a parsed line) and optionally ``health``
    (the ``<instance>.health`` file: 0 healthy, 1 failing). The failover module reads its ``state_dir_facts``
    with this.
    """
    health = None
    if isinstance(value, dict):
        try:
            health = int(str(value['health']).strip()) if value.get('health') is not None else None
        except ValueError:
            health = None
        value = value.get('state')
    if isinstance(value, str) and value.strip().startswith('{'):
        value = parse_state(value)
    if isinstance(value, dict):
        value = value.get('state')
    return (str(value).strip().upper() if value else None), health


def current_states(events: Iterable[Mapping[str, t.Any]]) -> dict[str, str]:
    """``{instance: last state}`` from parsed transitions."""
    states = {}
    for event in events:
        states[event['instance']] = event['state']
    return states


def count_transitions(events: Iterable[Mapping[str, t.Any]], instance: str | None = None, state: str | None = None,
                      since: float | None = None) -> int:
    """How many transitions (optionally of one instance, into one state, at or after ``since``)."""
    return sum(1 for e in events
               if (instance is None or e['instance'] == instance)
               and (state is None or e['state'] == state)
               and (since is None or e['time'] >= since))


def interfaces_from_facts(facts: t.Any) -> dict[str, list[str]] | None:
    """``{ifname: [cidr, ...]}`` from gathered ``ansible_facts`` (None when no interface facts were gathered)."""
    if not isinstance(facts, dict) or not facts.get('interfaces'):
        return None
    out = {}
    for name in facts['interfaces']:
        data = facts.get(name.replace('-', '_').replace('.', '_')) or facts.get(name) or {}
        cidrs = []
        v4 = [data.get('ipv4')] if isinstance(data.get('ipv4'), dict) else []
        for entry in v4 + list(data.get('ipv4_secondaries') or []):
            if entry.get('address') and (entry.get('prefix') or entry.get('netmask')):
                cidrs.append('%s/%s' % (entry['address'], entry.get('prefix') or entry['netmask']))
        for entry in data.get('ipv6') or []:
            if entry.get('address') and entry.get('prefix'):
                cidrs.append('%s/%s' % (entry['address'], entry['prefix']))
        out[name] = cidrs
    return out

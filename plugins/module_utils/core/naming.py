# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Names and PVE ids: what PVE accepts, and stable, collision-free derivation from logical names.

Template, service and network names are logical (``shopnet``); PVE's ids are narrow (SDN zone and vnet ids:
2-8 lowercase letters and digits starting with a letter). The plan derives ids here so that the same template
always yields the same ids, and modules that add objects later (scaling) compute identical names.
"""


import hashlib
import re

__all__ = [
    'LOGICAL_NAME_RE', 'DNS_LABEL_RE', 'TAG_RE', 'SDN_ID_RE', 'HA_RULE_ID_RE', 'RESERVED_NAMES',
    'is_logical_name', 'is_dns_label', 'is_tag', 'is_sdn_id', 'is_node_name',
    'primary_vm_name', 'shadow_vm_name', 'vm_tags', 'common_tags',
    'sdn_id', 'assign_sdn_ids', 'ha_rule_id', 'assign_vrids', 'vrid_seed',
    'network_alias', 'IFACE_RE', 'IFNAMSIZ_MAX', 'bridge_name_problem', 'vlan_bridge_problem',
]

# Template, service and network names: lowercase DNS-label-like, no trailing hyphen.
LOGICAL_NAME_RE = re.compile(r'^[a-z](?:[a-z0-9-]*[a-z0-9])?$')
LOGICAL_NAME_HELP = 'lowercase letters, digits and hyphens, starting with a letter, not ending with a hyphen'
# PVE VM names are DNS names; we produce single lowercase labels (max 63 chars).
DNS_LABEL_RE = re.compile(r'^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$')
# PVE tag format (pve-tag).
TAG_RE = re.compile(r'^[a-zA-Z0-9_][a-zA-Z0-9_+.-]*$')
# PVE SDN zone and vnet ids: 2-8 chars, letter first, letters and digits only. PVE lowercases nothing for us,
# so we accept and produce lowercase only.
SDN_ID_RE = re.compile(r'^[a-z][a-z0-9]{1,7}$')
SDN_ID_HELP = '2-8 lowercase letters and digits, starting with a letter (no hyphen)'
# Network interface names as PVE accepts them: pve-common JSONSchema.pm pve_verify_iface (case-insensitive;
# the `pve-iface` standard option adds minLength 2, maxLength 20).
IFACE_RE = re.compile(r'^[a-z][a-z0-9_]{1,20}([:.]\d+)?$', re.I)
IFACE_MAX = 20
# Linux refuses longer interface names (IFNAMSIZ 16 with the NUL): PVE's API takes them, ifreload fails.
IFNAMSIZ_MAX = 15
BRIDGE_NAME_HELP = ('a Linux bridge name as PVE accepts it (pve_verify_iface): a letter, then letters, digits or _, '
                    '2-%d characters in all, such as vmbr1' % IFNAMSIZ_MAX)
# PVE node names: a DNS label (hostnames may have uppercase).
NODE_NAME_RE = re.compile(r'^[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$')
# PVE config ids (HA rule ids): letter first, letters, digits, underscore.
HA_RULE_ID_RE = re.compile(r'^[a-z][a-z0-9_]+$')

# Service and template names that would make the role tags ambiguous (sn-primary, sn-shadow).
RESERVED_NAMES = frozenset(('primary', 'shadow', 'shadownet'))

_B36 = '0123456789abcdefghijklmnopqrstuvwxyz'
SDN_ID_LEN = 8
_HASH_CHARS = 4
# Bump only with a new plan_version: changing it renames every derived object.
_ID_NAMESPACE = 'shadownet:v1'


def is_logical_name(name):
    return isinstance(name, str) and bool(LOGICAL_NAME_RE.match(name))


def is_dns_label(name):
    return isinstance(name, str) and bool(DNS_LABEL_RE.match(name))


def is_tag(tag):
    return isinstance(tag, str) and bool(TAG_RE.match(tag))


def is_sdn_id(value):
    return isinstance(value, str) and bool(SDN_ID_RE.match(value))


def is_node_name(value):
    return isinstance(value, str) and bool(NODE_NAME_RE.match(value))


def bridge_name_problem(value):
    """Why ``value`` cannot name a node bridge, or None.

    PVE's check is pve_verify_iface (pve-common JSONSchema.pm) with the `pve-iface` length limits; on top of it
    Linux allows at most 15 characters, and a ``.N`` / ``:N`` suffix names a VLAN or alias interface, not a bridge.
    """
    if not isinstance(value, str) or not value:
        return 'is not a bridge name'
    if not IFACE_RE.match(value) or len(value) > IFACE_MAX:
        return '%r is not an interface name PVE accepts (pve_verify_iface)' % value
    if re.search(r'[:.]\d+$', value):
        return '%r names a VLAN (.N) or alias (:N) interface, not a bridge' % value
    if len(value) > IFNAMSIZ_MAX:
        return '%r is %d characters; Linux interface names have at most %d' % (value, len(value), IFNAMSIZ_MAX)
    return None


def vlan_bridge_problem(bridge, tag):
    """Why a vlan zone on ``bridge`` cannot carry VLAN ``tag``, or None.

    pve-network Zones/VlanPlugin.pm generate_sdn_config makes ``<bridge>v<tag>`` (a bridge that is not VLAN-aware)
    or ``<bridge>.<tag>`` (a VLAN-aware one); Linux refuses either beyond 15 characters.
    """
    if not isinstance(bridge, str) or tag is None:
        return None
    name = '%sv%s' % (bridge, tag)
    if len(name) > IFNAMSIZ_MAX:
        return ('with VLAN %s on bridge %s, PVE makes the interface %s (%d characters), longer than Linux allows '
                '(%d): use a bridge name of at most %d characters' % (tag, bridge, name, len(name), IFNAMSIZ_MAX,
                                                                      IFNAMSIZ_MAX - 1 - len(str(tag))))
    return None


def primary_vm_name(template, service, index):
    """``<template>-<service>-<index>``, index from 1."""
    if not isinstance(index, int) or isinstance(index, bool) or index < 1:
        raise ValueError('instance index must be an integer >= 1, got %r' % (index,))
    return '%s-%s-%d' % (template, service, index)


def shadow_vm_name(template, service):
    """``<template>-<service>-shadow``: one shadow per critical service."""
    return '%s-%s-shadow' % (template, service)


def common_tags(template):
    return ['shadownet', 'sn-%s' % template]


def vm_tags(template, service, role):
    """The identity tags of a managed VM (DESIGN.md "Identity lives in PVE")."""
    if role not in ('primary', 'shadow'):
        raise ValueError("role must be 'primary' or 'shadow', got %r" % (role,))
    return common_tags(template) + ['sn-%s' % service, 'sn-%s' % role]


def network_alias(template, network, role='primary'):
    """The vnet alias PVE shows: the logical name, marked for shadows."""
    alias = '%s-%s' % (template, network)
    if role == 'shadow':
        alias += ' (shadow)'
    return alias


def _digest(*parts):
    text = '\x1f'.join((_ID_NAMESPACE,) + tuple(str(p) for p in parts))
    return int.from_bytes(hashlib.sha256(text.encode('utf-8')).digest(), 'big')


def _base36(number, width):
    out = []
    for dummy in range(width):
        number, rem = divmod(number, 36)
        out.append(_B36[rem])
    return ''.join(out)


def _readable(text, width):
    """The first ``width`` letters/digits of ``text`` (lowercased); starts with a letter or is empty."""
    chars = re.sub(r'[^a-z0-9]', '', str(text).lower())
    chars = chars.lstrip('0123456789')
    return chars[:width]


def sdn_id(prefix, *parts, salt=0):
    """An 8-char SDN id: a readable prefix (letter first) plus a base36 hash of ``parts``.

    ``prefix`` is the human hint ('shop', 'sfront'); only its first letters are kept. ``salt`` picks another
    hash for collision resolution.
    """
    readable = _readable(prefix, SDN_ID_LEN - _HASH_CHARS) or 'n'
    hashed = _base36(_digest(*(parts + (salt,))) if salt else _digest(*parts), SDN_ID_LEN - len(readable))
    result = readable + hashed
    if not is_sdn_id(result):  # pragma: no cover - guarded by construction
        raise ValueError('derived SDN id %r is invalid' % result)
    return result


def assign_sdn_ids(requests, reserved=()):
    """Derive ids for many objects at once, collision-free among themselves and against ``reserved``.

    ``requests``: iterable of ``(key, prefix, parts)`` where ``key`` is any hashable identifying the object and
    ``parts`` the tuple hashed. Returns ``{key: id}``. Requests are resolved in sorted key order, so the
    result does not depend on the order they were given in; a collision (rare: 36**4 hashes per prefix)
    re-hashes the later key with a salt.
    """
    taken = set(reserved)
    result = {}
    for key, prefix, parts in sorted(requests, key=lambda r: repr(r[0])):
        salt = 0
        candidate = sdn_id(prefix, *parts)
        while candidate in taken:
            salt += 1
            candidate = sdn_id(prefix, *parts, salt=salt)
        taken.add(candidate)
        result[key] = candidate
    return result


def ha_rule_id(*parts):
    """``sn_<part>_<part>...``; hyphens become underscores (logical names never contain underscores, so the
    mapping is injective)."""
    text = 'sn_' + '_'.join(str(p).replace('-', '_') for p in parts)
    if not HA_RULE_ID_RE.match(text):
        raise ValueError('cannot derive an HA rule id from %r' % (parts,))
    return text


def vrid_seed(template, service):
    """The preferred virtual_router_id (1..255) of a service before collision resolution."""
    return 1 + _digest('vrid', template, service) % 255


def assign_vrids(template, groups):
    """Assign VRRP virtual_router_ids, unique per network.

    ``groups``: iterable of ``(service, network, fixed)`` where ``fixed`` is a user-set vrid or None.
    Fixed ids are taken first; the others start at :func:`vrid_seed` and probe upwards (wrapping 255 -> 1)
    in service-name order. Returns ``{service: vrid}``; raises ValueError when a network has more than
    255 groups or two fixed ids clash.
    """
    groups = list(groups)
    used = {}
    result = {}
    for service, network, fixed in groups:
        if fixed is not None:
            if fixed in used.setdefault(network, set()):
                raise ValueError('virtual_router_id %d is used twice on network %s' % (fixed, network))
            used[network].add(fixed)
            result[service] = fixed
    for service, network, fixed in sorted(groups, key=lambda g: g[0]):
        if fixed is not None:
            continue
        taken = used.setdefault(network, set())
        if len(taken) >= 255:
            raise ValueError('more than 255 VRRP groups on network %s' % network)
        vrid = vrid_seed(template, service)
        while vrid in taken:
            vrid = vrid % 255 + 1
        taken.add(vrid)
        result[service] = vrid
    return result

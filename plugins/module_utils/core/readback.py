# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What PVE reads back for a VM config value the collection writes, and comparison as PVE normalises. Pure.

PVE does not hand back a config value as it was sent. What GET /nodes/{node}/qemu/{vmid}/config returns is
the config file as qemu-server parses it, so:

- ``description``: ``write_vm_config`` (qemu-server src/PVE/QemuServer.pm) writes it as ``#`` comment lines
  and ``parse_vm_config`` joins them and strips trailing whitespace (``s/\\s+$//``); an empty description (or
  ``'0'``, false in Perl) is not stored at all.
- ``tags``: ``update_vm_api`` and ``create_vm`` (src/PVE/API2/Qemu.pm) store them through ``get_unique_tags``
  (pve-guest-common src/PVE/GuestHelpers.pm): split on ``,`` ``;`` and spaces, sorted case-insensitively,
  lower-cased and de-duplicated unless datacenter.cfg ``tag-style`` says ``case-sensitive`` or
  ``ordering=config``. Tags are compared here as a case-insensitive set, which holds under every tag-style.
- ``netN``: ``update_vm_api`` re-prints them with ``parse_net``/``print_net`` (src/PVE/QemuServer/Network.pm):
  model=MAC first, the rest sorted, booleans as 1/0, a MAC kept in the case given (PVE makes upper-case ones).
- Everything else: ``parse_vm_config`` types each value with ``check_type``: booleans come back as 1/0 and
  integers as JSON numbers (``onboot=true`` reads back ``1``, ``cores='4'`` reads back ``4``); ``memory``
  (a property string since PVE 8) and ``startup`` come back as the text written.

:func:`same` / :func:`differs` compare a value read from PVE with a wanted one after both are brought to that
form; :func:`stored` is what to send so that the config then holds exactly what was asked. Every module that
compares a VM config goes through them, so a rerun against PVE finds nothing to change.
"""


import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr

__all__ = ['description', 'tags', 'is_true', 'canonical', 'same', 'differs', 'stored', 'BOOLEAN_KEYS', 'INTEGER_KEYS']

# Perl's \s on a character string: what parse_vm_config's s/\s+$// strips from a description.
_TRAILING_SPACE = re.compile(r'[\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+\Z')
# Config keys of type boolean and integer in qemu-server's $confdesc (check_type gives 1/0 and numbers).
BOOLEAN_KEYS = ('acpi', 'allow-ksm', 'autostart', 'ciupgrade', 'freeze', 'keephugepages', 'kvm', 'localtime', 'numa',
                'onboot', 'protection', 'reboot', 'tablet', 'tdf', 'template')
INTEGER_KEYS = ('balloon', 'cores', 'cpuunits', 'migrate_speed', 'shares', 'smp', 'sockets', 'vcpus')
_TRUE = ('1', 'on', 'yes', 'true')
_FALSE = ('0', 'off', 'no', 'false')


def description(text):
    """The description PVE keeps for ``text`` ('' when it keeps none)."""
    if text is None:
        return ''
    text = str(text)
    if text == '0':
        return ''
    return _TRAILING_SPACE.sub('', text)


def tags(value):
    """The tags of a ``tags`` value (text or iterable) as a set, compared case-insensitively as PVE stores them."""
    return frozenset(t.lower() for t in propstr.parse_tags(value))


def _boolean(value):
    if isinstance(value, bool):
        return '1' if value else '0'
    text = str(value).lower()
    return '1' if text in _TRUE else '0' if text in _FALSE else str(value)


def is_true(value):
    """A PVE boolean (pve-common JSONSchema.pm parse_boolean: 1/on/yes/true, any case) that is true."""
    return _boolean(value) == '1'


def _net(value):
    net = propstr.parse_net(value)
    for key, default in propstr.NET_DEFAULTS.items():
        if net.get(key) == default:
            # 'link_down=0' and no link_down are the same NIC.
            del net[key]
    return net


def canonical(key, value):
    """``value`` of config key ``key`` in the form PVE reads it back in, for comparison; None: not set."""
    if value is None:
        return None
    if key == 'description':
        return description(value) or None
    if key == 'tags':
        return tags(value) or None
    if propstr.NET_KEY.match(key):
        return _net(value)
    if key == 'memory':
        return propstr.parse_memory(value)
    if key == 'startup':
        return tuple(sorted(propstr.parse(value).items()))
    if key in BOOLEAN_KEYS:
        return _boolean(value)
    if key in INTEGER_KEYS and re.match(r'^\d+$', str(value)):
        return int(value)
    return str(value)


def same(key, current, wanted):
    """True when PVE, asked for ``wanted``, would read back what it reads back for ``current``."""
    return canonical(key, current) == canonical(key, wanted)


def differs(key, current, wanted):
    return not same(key, current, wanted)


def stored(key, value):
    """What to send for ``key`` so that the config holds ``value`` exactly as PVE would store it."""
    if key == 'description':
        return description(value)
    if key == 'tags':
        return propstr.format_tags(propstr.parse_tags(value))
    return value

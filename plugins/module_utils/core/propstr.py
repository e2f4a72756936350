# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PVE property strings (``net0``, ``scsi0``, ``memory``, ``tags``) parsed and compared as structures.

Raw string comparison of property strings is how other tools report "changed" on every run (key order,
MAC addresses PVE generated, ``1`` vs ``true``). Everything here is pure.
"""


import re

NET_MODELS = ('e1000', 'e1000-82540em', 'e1000-82544gc', 'e1000-82545em', 'e1000e', 'i82551', 'i82557b',
              'i82559er', 'ne2k_isa', 'ne2k_pci', 'pcnet', 'rtl8139', 'virtio', 'vmxnet3')
BOOLEAN_KEYS = ('firewall', 'link_down', 'discard', 'ssd', 'iothread', 'backup', 'replicate', 'ro')
TAG_SPLIT = re.compile(r'[;,\s]+')
TAG_RE = re.compile(r'^[a-zA-Z0-9_][a-zA-Z0-9_+.-]*$')
NET_KEY = re.compile(r'^net(\d+)$')
# qemu-server PVE::QemuServer::Drive::valid_drive_names: the drive keys QemuConfig->foreach_volume walks.
DRIVE_KEY = re.compile(r'^(?:ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$')


def parse(text, default_key=None):
    """'a=1,b=2' -> {'a': '1', 'b': '2'}; a bare first item is stored under ``default_key``."""
    out = {}
    if text is None:
        return out
    for index, part in enumerate(str(text).split(',')):
        if not part:
            continue
        key, sep, value = part.partition('=')
        if not sep:
            if index == 0 and default_key:
                out[default_key] = key
                continue
            out[key] = ''
            continue
        out[key.strip()] = value.strip()
    return out


def _norm_value(key, value):
    if value is None:
        return None
    if isinstance(value, bool):
        return '1' if value else '0'
    text = str(value)
    if key in BOOLEAN_KEYS and text.lower() in ('true', 'yes', 'on'):
        return '1'
    if key in BOOLEAN_KEYS and text.lower() in ('false', 'no', 'off'):
        return '0'
    return text


def parse_net(text):
    """'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10' -> {'model': 'virtio', 'macaddr': 'BC:...', ...}."""
    raw = parse(text)
    out = {}
    for key, value in raw.items():
        if key in NET_MODELS:
            out['model'] = key
            if value:
                out['macaddr'] = value.upper()
        elif key == 'macaddr':
            out['macaddr'] = value.upper()
        else:
            out[key] = _norm_value(key, value)
    return out


def nic_macs(config):
    """{mac (lower case): NIC index} of the ``netN`` entries of a VM config."""
    out = {}
    for key, value in config.items():
        found = NET_KEY.match(key)
        if found:
            mac = parse_net(value).get('macaddr')
            if mac:
                out[mac.lower()] = int(found.group(1))
    return out


def format_net(net):
    """The inverse of parse_net, in PVE's own order: model=MAC first, the rest sorted."""
    net = dict((k, v) for k, v in net.items() if v is not None)
    model = net.pop('model', 'virtio')
    mac = net.pop('macaddr', None)
    head = '{0}={1}'.format(model, mac) if mac else model
    rest = ['{0}={1}'.format(k, _norm_value(k, net[k])) for k in sorted(net)]
    return ','.join([head] + rest)


# What a NIC is when a key is absent, so that {'link_down': '0'} and {} compare equal.
NET_DEFAULTS = {'link_down': '0', 'firewall': '0'}


def net_differs(current, desired):
    """True if the NIC ``current`` (parsed) does not have every property ``desired`` (parsed) asks for.

    Keys absent from ``desired`` are not managed (MAC addresses PVE generated, rate limits set by hand), except
    ``tag``, which is removed when ``desired`` names a bridge and no tag (a VLAN tag must never linger).
    """
    for key, want in desired.items():
        if want is None:
            if key in current:
                return True
            continue
        have = current.get(key, NET_DEFAULTS.get(key))
        if key == 'macaddr':
            if have is None or have.upper() != str(want).upper():
                return True
        elif _norm_value(key, have) != _norm_value(key, want):
            return True
    return False


def merge_net(current, desired):
    """The NIC to write: ``current`` with ``desired`` applied; keeps the MAC unless one is asked for."""
    out = dict(current)
    for key, want in desired.items():
        if want is None or _norm_value(key, want) == NET_DEFAULTS.get(key):
            # PVE stores a default as the key's absence; writing it would read back as a change.
            out.pop(key, None)
        else:
            out[key] = _norm_value(key, want)
    return out


def parse_tags(text):
    """PVE tags ('a;b', 'a,b' or 'a b') as a set."""
    if text is None:
        return set()
    if isinstance(text, (list, tuple, set)):
        return set(str(t) for t in text if str(t))
    return set(t for t in TAG_SPLIT.split(str(text)) if t)


def format_tags(tags):
    """As PVE stores them with its default tag-style (pve-guest-common GuestHelpers.pm get_unique_tags):
    lower-cased, without duplicates, sorted, ';'-joined."""
    return ';'.join(sorted(set(str(t).lower() for t in tags)))


def invalid_tags(tags):
    return sorted(t for t in tags if not TAG_RE.match(t))


def parse_memory(value):
    """PVE 8+ ``memory`` is a property string ('[current=]2048', or 'current=2048'); MiB as int."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    parsed = parse(value, default_key='current')
    return int(parsed.get('current', 0))


def parse_drive(text):
    """'local-lvm:base-9000-disk-0/vm-101-disk-0,size=8G' -> {'volume': ..., 'size': '8G', ...}."""
    return parse(text, default_key='volume')

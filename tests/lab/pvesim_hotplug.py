"""Which config changes PVE applies to a running VM at once, for ShadowPve; the rest stay pending.

Follows qemu-server src/PVE/QemuServer.pm: `$fast_plug_option`, vmconfig_hotplug_pending (its add/change and
delete loops), vmconfig_update_agent, vmconfig_update_net, parse_hotplug_features; and
src/PVE/QemuServer/Agent.pm parse_guest_agent. Disk changes are not modelled here (they stay pending).
"""

import re

from fakepve.routing import split_list

__all__ = ['HOTPLUG_DEFAULT', 'hotplug_features', 'applies_at_once']

# qemu-server QemuServer.pm $confdesc->{hotplug}{default}: what `hotplug` means when the config has none (or '1').
HOTPLUG_DEFAULT = 'network,disk,usb'
# qemu-server QemuServer.pm $fast_plug_option, plus every key of $confdesc_cloudinit: written at once, whatever
# the hotplug setting.
FAST_PLUG = ('description', 'hookscript', 'lock', 'migrate_downtime', 'migrate_speed', 'name', 'onboot',
             'protection', 'shares', 'startup', 'tags', 'vmstatestorage',
             'citype', 'ciuser', 'cipassword', 'ciupgrade', 'cicustom', 'searchdomain', 'nameserver', 'sshkeys')
CLOUDINIT_KEY = re.compile(r'ipconfig\d+$')
NET_KEY = re.compile(r'net\d+$')
# vmconfig_update_agent: the only agent sub-option a running VM takes at once.
AGENT_HOT = ('fstrim_cloned_disks',)


def hotplug_features(config):
    """parse_hotplug_features: the set `hotplug` enables ('0' none, '1' or no key the default list)."""
    value = str(config.get('hotplug', '1'))
    if value == '0':
        return set()
    if value == '1':
        value = HOTPLUG_DEFAULT
    return set(split_list(value))


def _props(value, default_key):
    """A PVE property string as a dict (the default key for a bare value)."""
    out = {}
    for part in str(value).split(','):
        if not part:
            continue
        key, sep, val = part.partition('=')
        if not sep:
            key, val = default_key, part
        out[key.strip()] = val.strip()
    return out


def _agent(value):
    """Agent.pm parse_guest_agent: {} when absent or disabled, else the options (enabled=1 normalised)."""
    if value is None:
        return {}
    parsed = _props(value, 'enabled')
    if str(parsed.get('enabled', '0')).lower() not in ('1', 'yes', 'on', 'true'):
        return {}
    parsed['enabled'] = '1'
    return parsed


def _agent_at_once(old, new):
    """vmconfig_update_agent: only with the agent already on, and only fstrim_cloned_disks may differ."""
    if not old or str(old) == '0':
        return False
    before, after = _agent(old), _agent(new)
    return all(before.get(k) == after.get(k) for k in set(before) | set(after) if k not in AGENT_HOT)


def _net_at_once(old, new, features):
    """vmconfig_update_net: bridge, tag, rate, firewall, link_down of an existing NIC change live; a new NIC or a
    model, MAC, queues or MTU change needs `network` hot-plug."""
    if not old:
        return 'network' in features
    before, after = _props(old, 'model'), _props(new, 'model')

    def model(props):
        for key in ('virtio', 'e1000', 'e1000e', 'rtl8139', 'vmxnet3', 'model'):
            if key in props:
                return key, props[key]
        return None, None
    same = (model(before) == model(after) and before.get('queues') == after.get('queues')
            and before.get('mtu') == after.get('mtu') and before.get('bridge') and after.get('bridge'))
    return bool(same) or 'network' in features


def applies_at_once(key, new, config, deleting=False):
    """True when PVE writes this change of a running VM with running config `config` into the config at once.

    `new` is the value set (ignored when `deleting`). qemu-server vmconfig_hotplug_pending: the features come from
    the running config's `hotplug` as it was before this update.
    """
    features = hotplug_features(config)
    if key in FAST_PLUG or CLOUDINIT_KEY.match(key):
        return True
    current = config.get(key)
    if key == 'hotplug':
        # Changing hot-plug of cpu or memory needs a restart.
        if deleting:
            return not re.search(r'cpu|memory', str(current or ''))
        return not (re.search(r'cpu|memory', str(new)) or re.search(r'cpu|memory', str(current or '')))
    if key == 'tablet':
        return 'usb' in features
    if key == 'vcpus':
        return 'cpu' in features
    if key == 'memory':
        # qemu_memory_hotplug; a VM started without numa cannot take DIMMs, so PVE keeps the value pending.
        return 'memory' in features and str(config.get('numa', '0')) in ('1', 'true')
    if key in ('cpuunits', 'cpulimit'):
        return True
    if key == 'balloon':
        if deleting:
            return str(current) != '0'
        return (current is None or str(current) != '0') == (str(new) != '0')
    if key == 'agent':
        # The delete loop has no case for agent: a removal waits for the next start.
        return False if deleting else _agent_at_once(current, new)
    if NET_KEY.match(key):
        return 'network' in features if deleting else _net_at_once(current, new, features)
    return False

"""Which config changes PVE applies to a running VM at once, for ShadowPve; the rest stay pending.

Follows qemu-server src/PVE/QemuServer.pm: `$fast_plug_option`, vmconfig_hotplug_pending (its add/change and
delete loops), vmconfig_update_agent, vmconfig_update_net, parse_hotplug_features; and
src/PVE/QemuServer/Agent.pm parse_guest_agent; memory and vCPU hot-plug and the start checks of memory hot-plug
follow src/PVE/QemuServer/Memory.pm (config, foreach_dimm, qemu_memory_hotplug) and QemuServer.pm qemu_cpu_hotplug.
Disk changes are not modelled here (they stay pending).
"""

import re

from fakepve.routing import split_list

__all__ = ['HOTPLUG_DEFAULT', 'hotplug_features', 'applies_at_once', 'memory_mib', 'static_memory', 'memory_start_problem',
           'memory_hotplug', 'cpu_hotplug_problem']

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


# ------------------------------------------------------------------- memory and vCPUs (qemu-server Memory.pm, QemuServer.pm)

# qemu-server src/PVE/QemuServer/Memory.pm $STATICMEM
STATIC_MEMORY = 1024
# Memory.pm `die "memory can't be lower than $static_memory MB"` has no newline: Perl appends where it died.
MEMORY_PM_LOWER_AT = ' at /usr/share/perl5/PVE/QemuServer/Memory.pm line 219.'


def memory_mib(value, default=512):
    """Memory.pm get_current_memory: the MiB of a `memory` value ('2048' or 'current=2048'), 512 when absent."""
    if value in (None, ''):
        return default
    text = str(value)
    for part in text.split(','):
        key, sep, val = part.partition('=')
        if not sep:
            return int(key)
        if key.strip() == 'current':
            return int(val)
    return default


def static_memory(config):
    """Memory.pm config / qemu_memory_hotplug: $STATICMEM, times the sockets with 1 GiB hugepages."""
    if str(config.get('hugepages', '')) == '1024':
        return STATIC_MEMORY * int(config.get('sockets') or 1)
    return STATIC_MEMORY


def dimm_sizes(config):
    """Memory.pm foreach_dimm: the total after each DIMM, from the static memory: 8 rounds of 32 DIMMs of 512 MiB
    (1024 with 1 GiB hugepages), the DIMM size doubling every round."""
    size = 1024 if str(config.get('hugepages', '')) == '1024' else 512
    total = static_memory(config)
    for dummy in range(8):
        for dummy2 in range(32):
            total += size
            yield total, size
        size *= 2


def memory_start_problem(config):
    """Memory.pm config (vm_start's config_to_command) with `memory` hot-plug: why the start dies, or None."""
    if 'memory' not in hotplug_features(config):
        return None
    if str(config.get('numa', '0')) not in ('1', 'true'):
        return 'NUMA needs to be enabled for memory hotplug'
    memory, static = memory_mib(config.get('memory')), static_memory(config)
    if memory < static:
        return 'minimum memory must be {0}MB'.format(static)
    if memory == static:
        return None
    for total, size in dimm_sizes(config):
        if total > memory:
            return 'memory size ({0}) must be aligned to {1} for hotplugging'.format(memory, size)
        if total == memory:
            return None
    return None


def memory_hotplug(config, value):
    """Memory.pm qemu_memory_hotplug on a running VM with running config `config`: the memory (MiB) it ends at, or
    raises ValueError with PVE's message. A hot-add plugs DIMMs until the total reaches `value` and writes that
    total; a hot-remove unplugs the highest DIMMs while the total is above `value` (it ends at or below it)."""
    old, new = memory_mib(config.get('memory')), memory_mib(value)
    if new == old:
        return old
    static = static_memory(config)
    if new < static:
        raise ValueError("memory can't be lower than {0} MB{1}".format(static, MEMORY_PM_LOWER_AT))
    grid = [static] + [total for total, dummy in dimm_sizes(config)]
    if new > old:
        return next((total for total in grid if total >= new), grid[-1])
    # the DIMMs the VM has are those up to its memory; unplugged from the highest while above the value
    below = [total for total in grid if total <= old]
    current = below[-1] if below else old
    for total in reversed(below[:-1]):
        if current <= new:
            break
        current = total
    return current


def cpu_hotplug_problem(config, vcpus):
    """QemuServer.pm qemu_cpu_hotplug against the running config: "you can't add more vcpus than maxcpus" when
    `vcpus` exceeds sockets x cores; None when it plugs (a delete, vcpus None, plugs up to sockets x cores)."""
    maxcpus = int(config.get('sockets') or 1) * int(config.get('cores') or 1)
    if vcpus not in (None, '') and int(vcpus) > maxcpus:
        return "you can't add more vcpus than maxcpus"
    return None

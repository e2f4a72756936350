# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure logic of the ``shadownet.proxmox.pve`` inventory plugin: from raw PVE answers to hosts, groups, vars.

The plugin fetches (through ``PveApi``) and caches the raw answers; everything here is deterministic and has
no I/O, so the grouping rules are unit-tested without a cluster:

- ``raw`` is a dict: ``cluster_status`` (``/cluster/status``), ``nodes`` (``/nodes``), ``resources``
  (``/cluster/resources?type=vm``), ``configs`` ({vmid: ``/nodes/N/qemu/V/config``}) and ``agent``
  ({vmid: the ``result`` list of ``agent/network-get-interfaces``}). vmids may be int or str keys (JSON caches
  turn them into strings).
- ``build_inventory(raw, ...)`` returns ``{'hosts': {name: vars}, 'groups': {name: {'hosts': [...],
  'children': [...]}}, 'warnings': [...]}`` with every list sorted.
"""


import ipaddress
import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import readback
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.meta import MetaError
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.propstr import (
    nic_macs, parse, parse_memory, parse_tags)

MANAGED_TAG = 'shadownet'
ROLE_TAGS = {'sn-primary': 'primary', 'sn-shadow': 'shadow'}
ROLES = ('primary', 'shadow')
NODES_GROUP = 'pve_nodes'
MANAGED_GROUP = 'shadownet'
NODE_GROUP_PREFIX = 'pve_node_'
MiB = 1024 * 1024
_UNSAFE = re.compile(r'[^A-Za-z0-9_]')


def parse_meta(description, ignored=None):
    """The metadata block of a VM description (module_utils/core/meta.py's parser); ``{}`` when there is none.

    Raises meta.MetaError when a block is there but is not a JSON object, so a damaged block is reported, not
    silently treated as "unmanaged". Fields of the wrong type are left out and named in ``ignored`` (a list).
    """
    if not description:
        return {}
    dummy, meta = meta_utils.parse_description(str(description), strict=True, ignored=ignored)
    return meta or {}


def group_name(*parts):
    """An Ansible-safe group name: parts joined by ``_``, anything but letters, digits and ``_`` mapped to ``_``."""
    return _UNSAFE.sub('_', '_'.join(str(p) for p in parts if p not in (None, '')))


def node_group(node):
    return NODE_GROUP_PREFIX + group_name(node)


def template_group(template):
    return group_name('sn', template)


def service_group(template, service):
    return group_name('sn', template, service)


def identity(name, tags, meta):
    """(template, service, role) of a managed VM: from the metadata block first, else from tags and name.

    The tags ``sn-<template>`` and ``sn-<service>`` do not say which is which; the VM name
    (``<template>-<service>-<index>`` or ``<template>-<service>-shadow``) does.
    """
    template = meta.get('template')
    service = meta.get('service')
    role = meta.get('role') if meta.get('role') in ROLES else None
    if role is None:
        roles = [ROLE_TAGS[t] for t in tags if t in ROLE_TAGS]
        role = roles[0] if len(roles) == 1 else None
    if template and service:
        return template, service, role
    labels = sorted(t[3:] for t in tags if t.startswith('sn-') and t not in ROLE_TAGS)
    for first in labels:
        for second in labels:
            if first == second:
                continue
            if template and first != template:
                continue
            if (name or '').startswith('{0}-{1}-'.format(first, second)):
                return first, second, role
    if template is None and len(labels) == 1:
        template = labels[0]
    return template, service, role


# ------------------------------------------------------------------------------------------------ addresses

def _usable(address):
    try:
        ip = ipaddress.ip_address(str(address).split('%', maxsplit=1)[0])
    except ValueError:
        return None
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return None
    return ip


def agent_addresses(interfaces):
    """[(interface, mac, address)] from a guest agent's ``network-get-interfaces``; loopback and link-local
    addresses are skipped, MACs are lower case (None when the agent gave none)."""
    out = []
    for iface in interfaces or []:
        if not isinstance(iface, dict) or iface.get('name') == 'lo':
            continue
        mac = str(iface.get('hardware-address') or '').lower() or None
        for entry in iface.get('ip-addresses') or []:
            ip = _usable(entry.get('ip-address'))
            if ip is not None:
                out.append((iface.get('name'), mac, str(ip)))
    return out


def config_addresses(config):
    """[(NIC index, address)] of static cloud-init addresses (``ipconfigN: ip=10.0.0.5/24,...``) in a config."""
    out = []
    keys = sorted((k for k in config if re.match(r'^ipconfig\d+$', k)), key=lambda k: int(k[8:]))
    for key in keys:
        values = parse(config[key])
        for field in ('ip', 'ip6'):
            value = values.get(field)
            if not value or value in ('dhcp', 'auto'):
                continue
            ip = _usable(value.split('/')[0])
            if ip is not None:
                out.append((int(key[8:]), str(ip)))
    return out


def parse_networks(networks):
    """ip_network objects from the ``networks`` option; ValueError names the bad entry."""
    out = []
    for text in networks or []:
        try:
            out.append(ipaddress.ip_network(str(text), strict=False))
        except ValueError as exc:
            raise ValueError('networks: {0!r} is not a network in CIDR form: {1}'.format(text, exc))
    return out


# The NIC of a shadow that is on a primary network (plan.md: NIC 1 carries VRRP); its other NICs sit on isolated
# twins of the primary networks and carry the primaries' own addresses, which nothing outside can reach.
SHADOW_REACHABLE_NICS = (1,)


def reachable_addresses(role, agent, static, macs):
    """The candidate addresses for ``ansible_host``, agent ones first, without a shadow's mirror-NIC addresses.

    ``agent`` as agent_addresses returns, ``static`` as config_addresses, ``macs`` as nic_macs.
    """
    out = []
    for dummy, mac, address in agent:
        nic = macs.get(mac) if mac else None
        if role == 'shadow' and nic is not None and nic not in SHADOW_REACHABLE_NICS:
            continue
        if address not in out:
            out.append(address)
    for nic, address in static:
        if role == 'shadow' and nic not in SHADOW_REACHABLE_NICS:
            continue
        if address not in out:
            out.append(address)
    return out


def choose_address(addresses, networks=()):
    """The address for ``ansible_host``: the first one inside a given network (networks in the order given);
    with none inside, the first IPv4 address, then the first IPv6 one; None when there is nothing usable."""
    ips = [ipaddress.ip_address(a) for a in addresses]
    for net in networks:
        for ip in ips:
            if ip.version == net.version and ip in net:
                return str(ip)
    for version in (4, 6):
        for ip in ips:
            if ip.version == version:
                return str(ip)
    return None


# ------------------------------------------------------------------------------------------------ inventory

def _by_vmid(mapping):
    return dict((str(k), v) for k, v in (mapping or {}).items())


def _cores(config, resource):
    if config.get('cores') is not None:
        return int(config.get('cores', 1)) * int(config.get('sockets', 1) or 1)
    if resource.get('maxcpu') is not None:
        return int(resource['maxcpu'])
    return None


def _memory(config, resource):
    if config.get('memory') is not None:
        return parse_memory(config['memory'])
    if resource.get('maxmem'):
        return int(resource['maxmem']) // MiB
    return None


def is_managed(tags):
    return MANAGED_TAG in tags


def guests_to_read(resources, managed_only=True):
    """The (node, vmid) of the guests whose config the plugin must read, sorted by vmid."""
    out = []
    for res in resources or []:
        if res.get('type') != 'qemu' or res.get('template'):
            continue
        if managed_only and not is_managed(parse_tags(res.get('tags'))):
            continue
        out.append((res['node'], int(res['vmid'])))
    return sorted(out, key=lambda item: item[1])


def wants_agent(resource, config):
    """Ask the guest agent only where it can answer: a running VM with the agent enabled."""
    if resource.get('status') != 'running':
        return False
    # qemu-server Agent.pm agent_fmt: `enabled` is the default key, anywhere in the string when named; PVE stores
    # the text as written, so '1', 'enabled=1' and 'fstrim_cloned_disks=1,enabled=true' all occur.
    value = parse(config.get('agent', '0'), default_key='enabled').get('enabled', '0')
    return readback.is_true(value)


class _Groups(object):
    def __init__(self):
        self.data = {}

    def group(self, name):
        return self.data.setdefault(name, {'hosts': set(), 'children': set()})

    def host(self, group, host):
        self.group(group)['hosts'].add(host)

    def child(self, parent, child):
        self.group(child)
        self.group(parent)['children'].add(child)

    def result(self):
        return dict((name, {'hosts': sorted(g['hosts']), 'children': sorted(g['children'])})
                    for name, g in sorted(self.data.items()))


def build_inventory(raw, managed_only=True, networks=(), add_nodes=True):
    """Hosts, groups and host variables for the raw API answers (see the module docstring)."""
    nets = parse_networks(networks)
    configs = _by_vmid(raw.get('configs'))
    agent = _by_vmid(raw.get('agent'))
    groups = _Groups()
    hosts = {}
    warnings = []
    node_guests = {}

    guests = [r for r in raw.get('resources') or [] if r.get('type') == 'qemu' and not r.get('template')]
    guests.sort(key=lambda r: int(r['vmid']))
    seen_names = {}
    for res in guests:
        vmid = int(res['vmid'])
        tags = parse_tags(res.get('tags'))
        managed = is_managed(tags)
        if managed_only and not managed:
            continue
        config = configs.get(str(vmid))
        if config is None:
            config = {}
            if res.get('status') != 'unknown':
                warnings.append('VM {0} ({1}): its configuration could not be read; metadata and addresses are '
                                'missing'.format(vmid, res.get('name')))
        else:
            tags = parse_tags(config.get('tags', res.get('tags')))
        name = res.get('name') or config.get('name') or 'vm{0}'.format(vmid)
        if name in seen_names:
            warnings.append('VM name {0!r} is used by vmids {1} and {2}; the second is listed as {0}-{2}'.format(
                name, seen_names[name], vmid))
            name = '{0}-{1}'.format(name, vmid)
        seen_names[name] = vmid
        meta = {}
        if managed:
            ignored = []
            try:
                meta = parse_meta(config.get('description'), ignored)
            except MetaError as exc:
                warnings.append('VM {0} ({1}): {2}; grouped by its tags only'.format(vmid, name, exc))
            if ignored:
                warnings.append('VM {0} ({1}): metadata field(s) {2} of the wrong type (edited by hand?) are ignored; '
                                'the next build rewrites them'.format(vmid, name, ', '.join(ignored)))
        node = res.get('node') or config.get('node')
        hostvars = {
            'pve_vmid': vmid,
            'pve_name': res.get('name') or config.get('name'),
            'pve_node': node,
            'pve_status': res.get('status', 'unknown'),
            'pve_cores': _cores(config, res),
            'pve_memory': _memory(config, res),
            'pve_tags': sorted(tags),
            'pve_lock': res.get('lock') or config.get('lock'),
            'sn_managed': managed,
        }
        template, service, role = identity(name, tags, meta) if managed else (None, None, None)
        found = agent_addresses(agent.get(str(vmid)))
        hostvars['pve_agent_addresses'] = [a for dummy, dummy2, a in found]
        candidates = reachable_addresses(role, found, config_addresses(config), nic_macs(config))
        address = choose_address(candidates, nets)
        if address:
            hostvars['ansible_host'] = address

        if managed:
            hostvars.update({
                'sn_template': template,
                'sn_service': service,
                'sn_role': role,
                'sn_index': meta.get('index'),
                'sn_vip': meta.get('vip'),
                'sn_shadows': list(meta.get('shadows') or []),
                'sn_shadowed_by': meta.get('shadowed_by'),
                'sn_meta': meta,
            })
            if template:
                groups.child(MANAGED_GROUP, template_group(template))
                if service:
                    groups.child(template_group(template), service_group(template, service))
                    groups.host(service_group(template, service), name)
                else:
                    groups.host(template_group(template), name)
            else:
                groups.host(MANAGED_GROUP, name)
            if role:
                groups.host(role, name)
        if node:
            groups.host(node_group(node), name)
            node_guests.setdefault(node, []).append(name)
        hosts[name] = hostvars

    if add_nodes:
        ips = dict((item.get('name'), item.get('ip')) for item in raw.get('cluster_status') or []
                   if item.get('type') == 'node')
        for item in sorted(raw.get('nodes') or [], key=lambda n: n.get('node', '')):
            node = item.get('node')
            if not node:
                continue
            if node in hosts:
                warnings.append('node {0!r} has the name of a VM; the node is not listed as a host'.format(node))
                continue
            hostvars = {
                'pve_node': node,
                'pve_node_status': item.get('status', 'unknown'),
                'pve_cpus': item.get('maxcpu'),
                'pve_memory': int(item['maxmem']) // MiB if item.get('maxmem') else None,
                'pve_guests': sorted(node_guests.get(node, [])),
            }
            if ips.get(node):
                hostvars['ansible_host'] = ips[node]
            hosts[node] = hostvars
            groups.host(NODES_GROUP, node)
    return {'hosts': dict(sorted(hosts.items())), 'groups': groups.result(), 'warnings': warnings}

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The plan: the desired state one validated template describes. Pure and deterministic.

``build_plan(normalised_template)`` returns primary and shadow networks, VMs (names, tags, NICs, preferred
nodes, description metadata), mirror pairs, VRRP groups, HA rules, replication and scaling settings. The format
is specified in ``docs/plan.md``; keep the two in step. No API calls, no clock, no randomness: the same
template yields the same plan, byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.template import (
    TemplateIssue, normalise_template, validate_template,
)

__all__ = [
    'PLAN_VERSION', 'build_plan', 'vxlan_tags', 'plan_from_template', 'template_digest', 'shadow_size', 'vrrp_priority',
    'primary_placement', 'plan_templates', 'failure_result', 'not_a_plan', 'SHADOW_MIN_CORES', 'SHADOW_MIN_MEMORY',
    'VRRP_PRIORITY_BASE', 'VRRP_SHADOW_PRIORITY',
]

PLAN_VERSION = 1
SHADOW_MIN_CORES = 1
SHADOW_MIN_MEMORY = 512
VRRP_PRIORITY_BASE = 200
VRRP_SHADOW_PRIORITY = 50
VRRP_VERSION = 3
NIC_MODEL = 'virtio'
# A replay counters file older than this (or 4 stats intervals, if longer) is stale: the agent (or the guest) stopped.
CANARY_MIN_STALE_SECONDS = 30
# VNIs of shadow twins in vxlan transport: a stable hash of (template, network) in this range, away from the low
# numbers people pick by hand; collisions inside one template are resolved by probing upwards.
VXLAN_TAG_MIN = 1000000
VXLAN_TAG_MAX = 16777215


def not_a_plan(plan: t.Any) -> str | None:
    """The message for a value that is not a plan from the template module (None when it looks like one)."""
    if isinstance(plan, dict) and isinstance(plan.get('vms'), list) and 'template' in plan:
        return None
    return ('plan must be a plan from shadownet.proxmox.template (result.plans.<template>): it has no "vms" list or '
            'no "template" name')


def template_digest(tpl: dict[str, t.Any]) -> str:
    """``sha256:<hex>`` of the canonical JSON of a normalised template."""
    text = json.dumps(tpl, sort_keys=True, separators=(',', ':'))
    return 'sha256:' + hashlib.sha256(text.encode('utf-8')).hexdigest()


def shadow_size(cores: int, memory: int, size: float) -> tuple[int, int]:
    """Shadow cores and memory (MiB) for one primary of ``cores``/``memory`` at fraction ``size``."""
    shadow_cores = max(SHADOW_MIN_CORES, int(cores * size + 0.5))
    shadow_memory = max(SHADOW_MIN_MEMORY, int(memory * size))
    return shadow_cores, shadow_memory


def vrrp_priority_step(max_instances: int) -> int:
    """Priority distance between consecutive primaries: all of 1..max_instances stay distinct and above 100."""
    if max_instances <= 10:
        return 10
    return max(1, 100 // max_instances)


def vrrp_priority(index: int, max_instances: int) -> int:
    """VRRP priority of primary ``index`` (1-based); the scaling module uses it for instances it adds."""
    return VRRP_PRIORITY_BASE - vrrp_priority_step(max_instances) * (index - 1)


def _rotate(nodes, start):
    if not nodes:
        return []
    start %= len(nodes)
    return list(nodes[start:]) + list(nodes[:start])


def primary_placement(nodes: list[str], service_position: int, index: int) -> list[str]:
    """Preferred nodes of primary ``index`` (1-based) of the service at ``service_position`` (0-based)."""
    return _rotate(nodes, service_position + index - 1)


def _shadow_placement(nodes, primary_nodes, placement):
    """(preferred_nodes, avoid_nodes, fully_spread) for a shadow whose primaries run on ``primary_nodes``."""
    if not nodes:
        return [], [], True
    if placement == 'any':
        first = nodes.index(primary_nodes[0]) if primary_nodes else 0
        return _rotate(nodes, first + 1), [], True
    last = nodes.index(primary_nodes[-1]) if primary_nodes else -1
    order = _rotate(nodes, last + 1)
    used = set(primary_nodes)
    free = [n for n in order if n not in used]
    counts = {n: primary_nodes.count(n) for n in used}
    busy = sorted((n for n in order if n in used), key=lambda n: (counts[n], order.index(n)))
    avoid = [n for n in nodes if n in used]
    return free + busy, avoid, bool(free)


def vxlan_tags(template: str, keys: t.Iterable[str], taken: t.Iterable[int] = ()) -> dict[str, int]:
    """Stable VNIs for ``keys`` of ``template`` (a shadow twin's key is its network's name, a primary vxlan
    network's ``network:<name>``), none of them in ``taken``."""
    span = VXLAN_TAG_MAX - VXLAN_TAG_MIN + 1
    used = set(taken)
    out = {}
    for key in keys:
        digest = hashlib.sha256(('shadownet-vxlan:%s:%s' % (template, key)).encode('utf-8')).hexdigest()
        offset = int(digest[:12], 16) % span
        while VXLAN_TAG_MIN + offset in used:
            offset = (offset + 1) % span
        out[key] = VXLAN_TAG_MIN + offset
        used.add(out[key])
    return out


def _network_entry(tpl, net, role, ids, vxlan_tag=None):
    key = net['name']
    if role == 'primary':
        is_vnet = net['type'] == 'vnet'
        zone = (net['zone'] or ids[('zone',)]) if is_vnet else None
        vnet = (net['vnet'] or ids[('vnet', key)]) if is_vnet else None
        return {
            'name': key, 'role': 'primary', 'twin_of': None, 'type': net['type'],
            'zone': zone, 'zone_type': net['zone_type'] if is_vnet else None,
            'zone_bridge': net['zone_bridge'] if is_vnet else None, 'vnet': vnet,
            'alias': naming.network_alias(tpl['name'], key),
            'bridge': vnet if is_vnet else net['bridge'], 'vlan': net['vlan'],
            'cidr': net['cidr'], 'gateway': net['gateway'], 'isolated': False, 'vxlan_tag': vxlan_tag,
        }
    vnet = ids[('shadow-vnet', key)]
    return {
        'name': key, 'role': 'shadow', 'twin_of': key, 'type': 'vnet',
        'zone': ids[('shadow-zone', key)], 'zone_type': 'vxlan' if vxlan_tag else 'simple', 'zone_bridge': None,
        'vnet': vnet, 'alias': naming.network_alias(tpl['name'], key, role='shadow'),
        'bridge': vnet, 'vlan': None, 'cidr': net['cidr'], 'gateway': None, 'isolated': True,
        'vxlan_tag': vxlan_tag,
    }


def _derive_ids(tpl, shadowed_networks):
    name = tpl['name']
    requests = []
    reserved = set()
    for net in tpl['networks']:
        if net['type'] != 'vnet':
            continue
        if net['zone']:
            reserved.add(net['zone'])
        elif not any(r[0] == ('zone',) for r in requests):
            requests.append((('zone',), name, ('zone', name)))
        if net['vnet']:
            reserved.add(net['vnet'])
        else:
            requests.append((('vnet', net['name']), net['name'], ('vnet', name, net['name'])))
    for key in shadowed_networks:
        requests.append((('shadow-zone', key), 's' + name, ('shadow-zone', name, key)))
        requests.append((('shadow-vnet', key), 's' + key, ('shadow-vnet', name, key)))
    return naming.assign_sdn_ids(requests, reserved=reserved)


def _nic(index, network, purpose):
    return {
        'index': index, 'network': network['name'], 'network_role': network['role'], 'bridge': network['bridge'],
        'vlan': network['vlan'] if network['type'] == 'bridge' else None, 'model': NIC_MODEL, 'purpose': purpose,
    }


def build_plan(tpl: dict[str, t.Any]) -> dict[str, t.Any]:
    """The plan for a *normalised* template (see :func:`plan_from_template` for raw input)."""
    name = tpl['name']
    nodes = list(tpl['nodes'])
    shadow_cfg = tpl['shadow']
    services = tpl['services']
    critical = [s for s in services if s['critical']]
    shadow_enabled = bool(shadow_cfg['enabled'] and critical)
    warnings = []
    if shadow_cfg['enabled'] and not critical:
        warnings.append('shadow.enabled is true but no service is critical: no shadows are planned')
    shadowed_networks = _shadowed_networks(critical) if shadow_enabled else []
    networks, nets = _plan_networks(tpl, shadowed_networks)
    vrids = naming.assign_vrids(name, [(s['name'], s['vip_network'], s['vrid']) for s in services if s['vip']])
    sections = {key: [] for key in ('vms', 'mirrors', 'vrrp', 'ha_rules', 'replication', 'scaling')}
    for position, svc in enumerate(services):
        entries, service_warnings = _plan_service(tpl, nodes, position, svc, shadow_enabled and svc['critical'],
                                                  nets, vrids)
        for key, items in entries.items():
            sections[key].extend(items)
        warnings.extend(service_warnings)
    return {
        'plan_version': PLAN_VERSION,
        'template': name,
        'template_digest': template_digest(tpl),
        'shadow_enabled': shadow_enabled,
        'shadow_transport': shadow_cfg['transport'],
        'nodes': nodes,
        'pool': tpl['pool'],
        'common_tags': naming.common_tags(name),
        'networks': networks,
        'vms': sections['vms'],
        'mirrors': sections['mirrors'],
        'vrrp': sections['vrrp'],
        'ha_rules': sections['ha_rules'],
        'replication': sections['replication'],
        'scaling': sections['scaling'],
        'warnings': warnings,
    }


def _shadowed_networks(critical):
    """The networks that get a shadow twin: every network of a critical service, in service order."""
    out = []
    for svc in critical:
        for key in svc['networks']:
            if key not in out:
                out.append(key)
    return out


def _plan_networks(tpl, shadowed_networks):
    """The ``networks`` section (primaries, then the shadow twins) and ``(primary, shadow)`` entries by name."""
    ids = _derive_ids(tpl, shadowed_networks)
    vxlan_nets = [n for n in tpl['networks'] if n['type'] == 'vnet' and n['zone_type'] == 'vxlan']
    given = [n['vni'] for n in vxlan_nets if n.get('vni') is not None]
    # The twins' VNIs first, as before primary networks could be vxlan, so existing twins keep theirs.
    tags = vxlan_tags(tpl['name'], shadowed_networks, given) if tpl['shadow']['transport'] == 'vxlan' else {}
    primary_tags = vxlan_tags(tpl['name'], ['network:' + n['name'] for n in vxlan_nets if n.get('vni') is None],
                              given + list(tags.values()))
    primary_nets, shadow_nets, networks = {}, {}, []
    for net in tpl['networks']:
        tag = net.get('vni') if net.get('vni') is not None else primary_tags.get('network:' + net['name'])
        entry = _network_entry(tpl, net, 'primary', ids, vxlan_tag=tag)
        primary_nets[net['name']] = entry
        networks.append(entry)
    for net in tpl['networks']:
        if net['name'] in shadowed_networks:
            entry = _network_entry(tpl, net, 'shadow', ids, vxlan_tag=tags.get(net['name']))
            shadow_nets[net['name']] = entry
            networks.append(entry)
    return networks, (primary_nets, shadow_nets)


def _plan_service(tpl, nodes, position, svc, has_shadow, nets, vrids):
    """Every plan entry of one service, by section, and its warnings."""
    name, sname, shadow_cfg = tpl['name'], svc['name'], tpl['shadow']
    shadow_name = naming.shadow_vm_name(name, sname) if has_shadow else None
    primaries = [_primary_vm(tpl, nodes, position, svc, index, shadow_name, nets[0])
                 for index in range(1, svc['instances'] + 1)]
    entries = {'vms': list(primaries), 'mirrors': [], 'vrrp': [], 'ha_rules': [], 'replication': [], 'scaling': []}
    warnings = []
    shadow_vm = None
    if has_shadow:
        shadow_vm, warning = _shadow_vm(tpl, nodes, svc, shadow_name, primaries, nets)
        warnings.extend([warning] if warning else [])
        entries['vms'].append(shadow_vm)
        entries['mirrors'] = _mirrors(sname, primaries, shadow_name, shadow_cfg['mirror'])
        entries['replication'] = [_replication_entry(svc, shadow_name, [p['name'] for p in primaries])]
    entries['ha_rules'] = _ha_rules(name, sname, primaries, shadow_vm, shadow_cfg['placement'])
    if svc['vip']:
        entries['vrrp'] = [_vrrp_group(svc, primaries, shadow_vm, vrids[sname])]
    entries['scaling'] = [_scaling_entry(name, svc, shadow_name)]
    entries['scaling'][0]['canary'] = _canary_entry(svc.get('replay') or shadow_cfg.get('replay') or {}, shadow_name)
    if shadow_name and entries['scaling'][0]['latency']['p95_ms'] is not None and entries['scaling'][0]['canary'] is None:
        # A service without a shadow has no canary by design (not critical); a shadow without replay is an oversight.
        warnings.append('service %s: scaling.latency.p95_ms is set but its shadow replays nothing (set '
                        'shadow.replay.port): no latency signal' % sname)
    return entries, warnings


def _canary_entry(replay, shadow_name):
    """What the reconciler needs to read the shadow's replay counters from the service's effective shadow.replay
    (None: no shadow or no replay)."""
    if not shadow_name or replay.get('port') is None:
        return None
    interval = replay['stats_interval']
    return {
        'shadow': shadow_name, 'mode': replay['mode'], 'port': replay['port'],
        'target_port': replay['target_port'] if replay.get('target_port') is not None else replay['port'],
        'methods': replay['methods'], 'concurrency': replay['concurrency'], 'stats_path': replay['stats_path'],
        'stats_interval_seconds': interval, 'stale_after_seconds': max(4 * interval, CANARY_MIN_STALE_SECONDS),
    }


def _primary_vm(tpl, nodes, position, svc, index, shadow_name, primary_nets):
    name, sname = tpl['name'], svc['name']
    preferred = primary_placement(nodes, position, index)
    meta = {'v': 1, 'role': 'primary', 'template': name, 'service': sname, 'index': index}
    if shadow_name:
        meta['shadowed_by'] = shadow_name
    return {
        'name': naming.primary_vm_name(name, sname, index), 'role': 'primary', 'service': sname, 'index': index,
        'golden': _golden(svc['template']), 'linked': True,
        'cores': svc['cores'], 'memory': svc['memory'],
        'node': preferred[0] if preferred else None, 'preferred_nodes': preferred, 'avoid_nodes': [],
        'pool': tpl['pool'], 'tags': naming.vm_tags(name, sname, 'primary'),
        'nics': [_nic(i, primary_nets[key], 'service') for i, key in enumerate(svc['networks'])],
        'meta': meta, 'shadows': [], 'shadowed_by': shadow_name,
    }


def _shadow_vm(tpl, nodes, svc, shadow_name, primaries, nets):
    """The shadow of one service (NIC 0 and 2.. mirror the service's networks, NIC 1 joins the VIP network), and
    the warning when spread placement cannot keep it off every node of its primaries."""
    name, sname, shadow_cfg = tpl['name'], svc['name'], tpl['shadow']
    primary_nets, shadow_nets = nets
    primary_names = [p['name'] for p in primaries]
    cores, memory = shadow_size(svc['cores'], svc['memory'], shadow_cfg['size'])
    primary_nodes = [p['node'] for p in primaries if p['node']]
    preferred, avoid, spread_ok = _shadow_placement(nodes, primary_nodes, shadow_cfg['placement'])
    warning = None
    if shadow_cfg['placement'] == 'spread' and not spread_ok:
        warning = ('%s: every node in nodes runs a primary of %s; the shadow will share a node with one (add a node '
                   'to nodes for full spread)' % (shadow_name, sname))
    nics = [_nic(0, shadow_nets[svc['networks'][0]], 'mirror'), _nic(1, primary_nets[svc['vip_network']], 'vrrp')]
    for offset, key in enumerate(svc['networks'][1:]):
        nics.append(_nic(offset + 2, shadow_nets[key], 'mirror'))
    return {
        'name': shadow_name, 'role': 'shadow', 'service': sname, 'index': 1,
        'golden': _golden(svc['template']), 'linked': True, 'cores': cores, 'memory': memory,
        'node': preferred[0] if preferred else None, 'preferred_nodes': preferred, 'avoid_nodes': avoid,
        'pool': tpl['pool'], 'tags': naming.vm_tags(name, sname, 'shadow'), 'nics': nics,
        'meta': {'v': 1, 'role': 'shadow', 'template': name, 'service': sname, 'index': 1,
                 'shadows': list(primary_names)},
        'shadows': list(primary_names), 'shadowed_by': None,
    }, warning


def _mirrors(sname, primaries, shadow_name, mirror_cfg):
    """One mirror per primary NIC: NIC 0 to the shadow's NIC 0, NIC i > 0 to its NIC i + 1 (NIC 1 is VRRP)."""
    out = []
    for primary in primaries:
        for nic in primary['nics']:
            target_nic = 0 if nic['index'] == 0 else nic['index'] + 1
            out.append({
                'service': sname,
                'source': {'vm': primary['name'], 'nic': nic['index'], 'network': nic['network']},
                'target': {'vm': shadow_name, 'nic': target_nic, 'network': nic['network']},
                'mode': mirror_cfg['mode'],
                'rate': 1.0 if mirror_cfg['mode'] == 'full' else float(mirror_cfg['rate']),
                'sampling': mirror_cfg['sampling'],
                'direction': mirror_cfg['direction'],
            })
    return out


def _replication_entry(svc, shadow_name, primary_names):
    repl = svc['replication']
    fidelity = repl['fidelity']
    interval = repl['interval'] if fidelity != 'event' else None
    return {
        'service': svc['name'], 'shadow': shadow_name, 'primaries': list(primary_names), 'fidelity': fidelity,
        'interval_seconds': interval, 'rpo_seconds': interval,
        'paths': list(repl['paths']) if fidelity == 'differential' else [],
        'hook': repl['hook'] if fidelity == 'event' else None,
    }


def _vrrp_group(svc, primaries, shadow_vm, vrid):
    max_instances = svc['scaling']['instances']['max']
    members = []
    for primary in primaries:
        members.append({
            'vm': primary['name'], 'role': 'primary', 'index': primary['index'],
            'nic': svc['networks'].index(svc['vip_network']),
            'priority': vrrp_priority(primary['index'], max_instances),
        })
    if shadow_vm:
        members.append({'vm': shadow_vm['name'], 'role': 'shadow', 'index': 1, 'nic': 1,
                        'priority': VRRP_SHADOW_PRIORITY})
    return {
        'service': svc['name'], 'network': svc['vip_network'], 'vip': svc['vip'], 'vrid': vrid,
        'version': VRRP_VERSION, 'priority_base': VRRP_PRIORITY_BASE,
        'priority_step': vrrp_priority_step(max_instances), 'shadow_priority': VRRP_SHADOW_PRIORITY,
        'members': members,
    }


def _scaling_entry(name, svc, shadow_name):
    sc = svc['scaling']
    return {
        'service': svc['name'], 'mode': sc['mode'],
        'cpu': {'high': sc['cpu']['high'], 'low': sc['cpu']['low'], 'duration_seconds': sc['cpu']['duration']},
        'memory': {'high': sc['memory']['high'], 'low': sc['memory']['low'],
                   'duration_seconds': sc['memory']['duration']},
        'net': {'high_bps': sc['net']['high'], 'low_bps': sc['net']['low'],
                'duration_seconds': sc['net']['duration']},
        'horizon_seconds': sc['horizon'],
        'provision_seconds': sc['provision'],
        'instances': {'min': sc['instances']['min'], 'max': sc['instances']['max'], 'current': svc['instances']},
        'cooldown': {'up_seconds': sc['cooldown']['up'], 'down_seconds': sc['cooldown']['down']},
        'cores': svc['cores'], 'memory_mib': svc['memory'],
        'name_prefix': '%s-%s-' % (name, svc['name']), 'shadow': shadow_name,
        'latency': {'p95_ms': sc['latency']['p95_ms'], 'for_seconds': sc['latency']['for']},
    }


def _ha_rules(name, sname, primaries, shadow, placement):
    """The HA rules of one service: a rule set PVE 9 accepts (pve-ha-manager HA/Rules.pm check_feasibility).

    - Each primary and its shadow: a negative resource-affinity rule (spread placement), which the CRM must keep
      wherever HA moves either VM.
    - Each placed primary: a non-strict node-affinity rule to its node, one priority. PVE refuses a VM in a
      resource-affinity rule in a node-affinity rule with several priorities
      (check_single_priority_node_affinity_in_resource_affinity_rules); non-strict, the CRM adds every other node
      below it (NodeAffinity.pm plugin_compile), so the primary still runs elsewhere when its node is down.
    - The shadow (spread, placed on a node free of its primaries): a non-strict node-affinity rule to the free
      nodes of the template, one priority, so a recovered shadow stays on the template's nodes.
    Each VM is in one node-affinity rule at most (check_single_resource_reference), and every rule lists at least
    one node, so negative rules never run short of nodes (check_negative_resource_affinity_node_affinity_consistency).
    """
    rules = []
    spread = shadow is not None and placement == 'spread'
    for primary in primaries if spread else []:
        rules.append({
            'rule': naming.ha_rule_id(name, sname, primary['index'], 'anti'),
            'type': 'resource-affinity', 'resources': [primary['name'], shadow['name']],
            'affinity': 'negative', 'nodes': None, 'strict': False,
            'comment': 'shadownet %s: keep %s off the node of %s' % (name, shadow['name'], primary['name']),
        })
    for primary in primaries:
        if primary['node']:
            rules.append({
                'rule': naming.ha_rule_id(name, sname, primary['index'], 'node'),
                'type': 'node-affinity', 'resources': [primary['name']], 'affinity': None,
                'nodes': [{'node': primary['node'], 'priority': 1}], 'strict': False,
                'comment': 'shadownet %s: %s prefers %s' % (name, primary['name'], primary['node']),
            })
    free = [n for n in shadow['preferred_nodes'] if n not in shadow['avoid_nodes']] if spread else []
    if free and shadow['node'] in free:
        rules.append({
            'rule': naming.ha_rule_id(name, sname, 'shadow', 'node'),
            'type': 'node-affinity', 'resources': [shadow['name']], 'affinity': None,
            'nodes': [{'node': n, 'priority': 1} for n in sorted(free)], 'strict': False,
            'comment': 'shadownet %s: %s prefers the nodes free of its primaries' % (name, shadow['name']),
        })
    return rules


def _golden(ref):
    if isinstance(ref, int):
        return {'vmid': ref, 'name': None}
    return {'vmid': None, 'name': ref}


def plan_from_template(data: t.Any, source: str | None = None) -> tuple[dict[str, t.Any], dict[str, t.Any]]:
    """Validate + normalise raw template data, then plan. Raises TemplateValidationError with every issue."""
    tpl = normalise_template(data, source)
    return tpl, build_plan(tpl)


def plan_templates(entries: t.Iterable[tuple[t.Any, str | None]],
                   fail_on_warnings: bool = False) -> tuple[dict[str, t.Any], list[TemplateIssue]]:
    """Validate and plan several templates: ``entries`` is a list of ``(data, source)``.

    Returns ``(result, issues)``: ``result`` has ``changed`` (always False), ``names`` (template names in the
    order given), ``templates`` and ``plans`` (by name) and ``warnings`` (if any); ``issues`` lists every
    validation error of every template (and the plans' warnings when ``fail_on_warnings``). Template names
    must be unique across entries.
    """
    templates, plans, names, issues, warnings = {}, {}, [], [], []
    first_seen = {}
    for data, source in entries:
        tpl, found = validate_template(data, source=source)
        if found:
            issues.extend(found)
            continue
        name = tpl['name']
        if name in first_seen:
            issues.append(TemplateIssue(name, 'name', 'template %s is defined twice (%s and %s)'
                                        % (name, first_seen[name], source), 'unique template names'))
            continue
        first_seen[name] = source
        plan = build_plan(tpl)
        names.append(name)
        templates[name] = tpl
        plans[name] = plan
        for text in plan['warnings']:
            warnings.append('template %s: %s' % (name, text))
            if fail_on_warnings:
                issues.append(TemplateIssue(name, '', 'plan warning: %s' % text, 'fail_on_warnings: false'))
    result = {'changed': False, 'names': names, 'templates': templates, 'plans': plans}
    if warnings:
        result['warnings'] = warnings
    return result, issues


def failure_result(result: dict[str, t.Any], issues: list[TemplateIssue]) -> dict[str, t.Any]:
    """The task result for failed validation: every issue in ``msg`` (one per line) and in ``errors``."""
    out = {key: value for key, value in result.items() if key not in ('templates', 'plans', 'names')}
    out['failed'] = True
    out['errors'] = [issue.as_dict() for issue in issues]
    out['msg'] = '%d error(s) in shadownet templates:\n%s' % (len(issues), '\n'.join('- %s' % i for i in issues))
    return out

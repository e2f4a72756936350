# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PVE 9 HA rules (``/cluster/ha/rules``) of one template, converged as a set.

Ownership: a rule belongs to the collection's template ``T`` when its id starts with the template's prefix
(``sn_<T with - as _>_``) *and* its comment starts with the marker ``shadownet <T>:``. Only such rules are ever
updated or deleted; a user's rule is never touched, and a desired rule whose id is taken by a rule without the
marker is an error. The prefix alone is not enough: templates ``shop`` and ``shop-x`` share ``sn_shop_``.

Rules name VMs; they are resolved to ``vm:<vmid>`` through ``/cluster/resources``. PVE only accepts HA-managed
resources in rules, so the VMs are made HA resources first (``/cluster/ha/resources``, state ``started`` by
default); existing HA resources are left as they are, and none is removed when a rule goes.
"""

from __future__ import annotations

import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.api import PveApiError

RULE_TYPES = ('resource-affinity', 'node-affinity')
RULE_ID_RE = re.compile(r'^[a-z][a-z0-9_]*$')
SID_RE = re.compile(r'^(?:(vm|ct):)?(\d+)$')


class HaRuleError(Exception):
    """A desired rule set that cannot be converged as given."""


def rule_prefix(template):
    return 'sn_{0}_'.format(template.replace('-', '_'))


def marker(template):
    return 'shadownet {0}:'.format(template)


def _truthy(value):
    return str(value).lower() in ('1', 'true', 'yes', 'on')


def _flag(value):
    return value if isinstance(value, bool) else _truthy(value) if value is not None else False


def parse_nodes(value):
    """{node: priority or None} from PVE's ``pve1:2,pve2``, a list of such strings, or plan dicts."""
    if value in (None, '', []):
        return {}
    items = value.split(',') if isinstance(value, str) else list(value)
    out = {}
    for item in items:
        if isinstance(item, dict):
            node, prio = item.get('node'), item.get('priority')
        else:
            node, sep, prio = str(item).strip().partition(':')
            prio = prio if sep else None
        if not node:
            raise HaRuleError('a node-affinity entry has no node: {0!r}'.format(item))
        out[str(node)] = int(prio) if prio not in (None, '') else None
    return out


def format_nodes(nodes):
    return ','.join(n if p is None else '{0}:{1}'.format(n, p) for n, p in sorted(nodes.items()))


def sid_key(sid):
    kind, num = sid.split(':')
    return (kind, int(num))


def normalise_rule(entry, template, index=0):
    """A desired rule (a plan ``ha_rules`` entry), checked; resources are still names here."""
    where = 'rules[{0}]'.format(index)
    rule_id = entry.get('rule')
    prefix = rule_prefix(template)
    if not rule_id or not RULE_ID_RE.match(rule_id):
        raise HaRuleError('{0}.rule {1!r} is not a valid rule id (lowercase letters, digits and _, starting with a '
                          'letter)'.format(where, rule_id))
    if not rule_id.startswith(prefix):
        raise HaRuleError('{0}.rule {1!r} must start with {2!r}, the prefix of template {3!r}'.format(
            where, rule_id, prefix, template))
    kind = entry.get('type')
    if kind not in RULE_TYPES:
        raise HaRuleError('{0}.type must be resource-affinity or node-affinity (got {1!r})'.format(where, kind))
    resources = entry.get('resources') or []
    if isinstance(resources, str):
        resources = resources.split(',')
    if not isinstance(resources, (list, tuple)):
        raise HaRuleError('{0}.resources must be a list of VM names'.format(where))
    resources = [str(r).strip() for r in resources if str(r).strip()]
    if not resources:
        raise HaRuleError('{0} ({1}) has no resources'.format(where, rule_id))
    comment = (entry.get('comment') or '').strip()
    if not comment.startswith(marker(template)):
        comment = '{0} {1}'.format(marker(template), comment or rule_id).strip()
    out = dict(rule=rule_id, type=kind, resources=resources, comment=comment)
    if kind == 'resource-affinity':
        affinity = entry.get('affinity') or 'negative'
        if affinity not in ('positive', 'negative'):
            raise HaRuleError('{0}.affinity must be positive or negative'.format(where))
        if len(set(resources)) < 2:
            raise HaRuleError('{0} ({1}): a resource-affinity rule needs at least two resources'.format(
                where, rule_id))
        out['affinity'] = affinity
    else:
        nodes = parse_nodes(entry.get('nodes'))
        if not nodes:
            raise HaRuleError('{0} ({1}): a node-affinity rule needs nodes'.format(where, rule_id))
        out['nodes'] = nodes
        out['strict'] = _flag(entry.get('strict'))
    if entry.get('disable') is not None:
        out['disable'] = _flag(entry.get('disable'))
    return out


def resolve_resources(refs, vm_resources):
    """VM names (or ``vm:<id>`` / vmids) to sorted ``vm:<vmid>`` sids; missing or ambiguous names are errors."""
    by_name = {}
    for res in vm_resources:
        if res.get('type') == 'qemu' and not res.get('template') and res.get('name'):
            by_name.setdefault(res['name'], []).append(int(res['vmid']))
    sids = set()
    for ref in refs:
        found = SID_RE.match(ref)
        if found:
            sids.add('{0}:{1}'.format(found.group(1) or 'vm', found.group(2)))
            continue
        vmids = by_name.get(ref, [])
        if not vmids:
            raise HaRuleError('VM {0!r} is not in the cluster: create the VMs before their HA rules'.format(ref))
        if len(vmids) > 1:
            raise HaRuleError('{0} VMs are named {1!r} (vmids {2}); this module never guesses which one a rule '
                              'means'.format(len(vmids), ref, sorted(vmids)))
        sids.add('vm:{0}'.format(vmids[0]))
    return sorted(sids, key=sid_key)


def current_rule(item):
    """A rule as PVE lists it, in the shape of a desired rule (sorted sids, nodes dict, booleans)."""
    resources = [s.strip() for s in str(item.get('resources') or '').split(',') if s.strip()]
    out = dict(rule=item.get('rule'), type=item.get('type'), resources=sorted(resources, key=sid_key),
               comment=(item.get('comment') or '').strip())
    if item.get('type') == 'resource-affinity':
        out['affinity'] = item.get('affinity')
    else:
        out['nodes'] = parse_nodes(item.get('nodes'))
        out['strict'] = _truthy(item.get('strict', 0))
    out['disable'] = _truthy(item.get('disable', 0))
    return out


def owned(item, template):
    return str(item.get('rule', '')).startswith(rule_prefix(template)) and \
        (item.get('comment') or '').strip().startswith(marker(template))


def _payload(rule, keys):
    params = {}
    for key in keys:
        value = rule[key]
        if key == 'resources':
            value = ','.join(value)
        elif key == 'nodes':
            value = format_nodes(value)
        elif isinstance(value, bool):
            value = int(value)
        params[key] = value
    return params


def _fields(rule):
    keys = ['resources', 'comment'] + (['affinity'] if rule['type'] == 'resource-affinity' else ['nodes', 'strict'])
    if 'disable' in rule:
        keys.append('disable')
    return keys


def plan_rules(desired, live, template):
    """Writes that make the template's rules exactly ``desired`` (resources already resolved to sids).

    ``live``: the items of ``GET /cluster/ha/rules``. Returns (ops, before, after); an op is
    dict(method, path, params, what, rule).
    """
    live_by_id = dict((item['rule'], item) for item in live)
    ops_delete, ops_update, ops_create = [], [], []
    before, after = {}, {}
    wanted = set()
    for rule in desired:
        rid = rule['rule']
        if rid in wanted:
            raise HaRuleError('rule {0!r} is listed twice'.format(rid))
        wanted.add(rid)
        view = dict((k, v) for k, v in rule.items() if k != 'rule')
        after[rid] = view
        item = live_by_id.get(rid)
        create = dict(method='POST', path='cluster/ha/rules', rule=rid, what='create rule {0}'.format(rid),
                      params=dict(rule=rid, type=rule['type'], **_payload(rule, _fields(rule))))
        if item is None:
            before[rid] = {}
            ops_create.append(create)
            continue
        if not owned(item, template):
            raise HaRuleError('HA rule {0!r} exists but is not managed by shadownet for template {1!r} (its comment '
                              'does not start with {2!r}); rename or remove it, this module never takes over a '
                              'rule it did not make'.format(rid, template, marker(template)))
        cur = current_rule(item)
        before[rid] = dict((k, v) for k, v in cur.items() if k != 'rule')
        if cur['type'] != rule['type']:
            # PVE cannot change a rule's type: delete and create again.
            ops_delete.append(dict(method='DELETE', path='cluster/ha/rules/' + rid, params={}, rule=rid,
                                   what='remove rule {0} (type change)'.format(rid)))
            ops_create.append(create)
            continue
        changed = [k for k in _fields(rule) if cur.get(k) != rule[k]]
        if changed:
            params = dict(type=rule['type'], **_payload(rule, changed))
            ops_update.append(dict(method='PUT', path='cluster/ha/rules/' + rid, params=params, rule=rid,
                                   what='update rule {0} ({1})'.format(rid, ', '.join(changed))))
    for item in sorted(live, key=lambda i: i['rule']):
        if item['rule'] not in wanted and owned(item, template):
            cur = current_rule(item)
            before[item['rule']] = dict((k, v) for k, v in cur.items() if k != 'rule')
            after[item['rule']] = {}
            ops_delete.append(dict(method='DELETE', path='cluster/ha/rules/' + item['rule'], params={},
                                   rule=item['rule'], what='remove rule {0}'.format(item['rule'])))
    return ops_delete + ops_update + ops_create, before, after


class HaRuleEngine(object):
    """Converge one template's HA rules (and the HA resources they need)."""

    def __init__(self, api, check_mode=False, ensure_resources=True, resource_state='started'):
        self.api = api
        self.check_mode = check_mode
        self.ensure_resources = ensure_resources
        self.resource_state = resource_state

    def converge(self, template, rules):
        result = dict(changed=False, changes=[], rules={}, ha_resources_added=[], diff=dict(before={}, after={}))
        resolved = []
        if rules:
            vms = self.api.resources('vm')
            nodes = self.api.nodes()
            for rule in rules:
                rule = dict(rule)
                rule['resources'] = resolve_resources(rule['resources'], vms)
                unknown = sorted(n for n in rule.get('nodes', {}) if n not in nodes)
                if unknown:
                    raise HaRuleError('rule {0}: node(s) {1} are not in the cluster (nodes: {2})'.format(
                        rule['rule'], ', '.join(unknown), ', '.join(sorted(nodes))))
                resolved.append(rule)
                result['rules'][rule['rule']] = rule['resources']
        live = self.api.get('cluster/ha/rules') or []
        ops, before, after = plan_rules(resolved, live, template)
        needed = sorted(set(s for r in resolved for s in r['resources']), key=sid_key)
        missing = []
        if needed:
            have = set(item.get('sid') for item in self.api.get('cluster/ha/resources') or [])
            missing = [s for s in needed if s not in have]
        if missing and not self.ensure_resources:
            raise HaRuleError('VM(s) {0} are not HA resources, and PVE accepts only HA resources in rules; add them '
                              '(ha-manager add) or set ensure_resources'.format(', '.join(missing)))
        changes = ['add HA resource {0} (state {1})'.format(s, self.resource_state) for s in missing]
        changes.extend(op['what'] for op in ops)
        result.update(changes=changes, changed=bool(changes), ha_resources_added=missing,
                      diff=dict(before=before, after=after))
        if not changes or self.check_mode:
            return result
        self.api.require_quorum()
        for sid in missing:
            self.api.post('cluster/ha/resources', sid=sid, state=self.resource_state,
                          comment='shadownet {0}'.format(template))
        for op in ops:
            params = dict(op['params'])
            if op['method'] == 'PUT':
                # A fresh digest per update: every write to rules.cfg changes it.
                current = self.api.get(op['path'])
                if current.get('digest'):
                    params['digest'] = current['digest']
            try:
                self.api.request(op['method'], op['path'], params)
            except PveApiError as exc:
                done = changes[:len(missing) + ops.index(op)]
                exc.message = '{0} (at step: {1}; done before it: {2})'.format(
                    exc.message, op['what'], ', '.join(done) or 'nothing')
                exc.args = (exc.message,)
                raise
        return result

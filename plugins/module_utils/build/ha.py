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

PVE checks every rule it writes against the whole rule set (pve-ha-manager ``API2/HA/Rules.pm``
``$assert_feasibility`` -> ``HA/Rules.pm`` ``check_feasibility``) and refuses a rule that is infeasible; the CRM
drops rules that became infeasible later. :func:`feasibility` follows those checks, so the whole sequence of
writes is validated before the first one (the HA resources included). Negative resource-affinity rules are
counted against the CRM's node list (``manager_status`` ``node_status``), which is empty until a CRM is master:
after adding HA resources, the engine waits for it.
"""


import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError

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
        # PVE reads a missing priority as 0 and writes 0 as no priority (Tools.pm parse_node_priority,
        # NodeAffinity.pm encode_plugin_value): both are None here.
        out[str(node)] = (int(prio) or None) if prio not in (None, '') else None
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
        if key == 'disable' and not value:
            # API2/HA/Rules.pm create_rule and update_rule drop disable=0 (`delete $param->{disable} if
            # !$param->{disable}`): only `delete=disable` enables a rule again; a new rule is enabled anyway.
            params['delete'] = 'disable'
            continue
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
        params = dict(rule=rid, type=rule['type'], **_payload(rule, _fields(rule)))
        params.pop('delete', None)
        create = dict(method='POST', path='cluster/ha/rules', rule=rid, what='create rule {0}'.format(rid),
                      params=params)
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


# What to do about each of PVE's feasibility errors (the messages are PVE's, HA/Rules.pm and Rules/*.pm).
FIXES = {
    'already used in another node affinity rule': 'a VM can be in one node-affinity rule only',
    'less than two resources': 'a resource-affinity rule needs two VMs',
    'more resources than available nodes': 'a negative resource-affinity rule needs at least as many nodes in '
                                           "the HA manager's node list as it has VMs: add nodes, or set the "
                                           "template's shadow.placement to any",
    'shares two or more resources': 'two VMs cannot be kept together and apart: change one of the rules',
    'multiple priorities': 'a VM in a resource-affinity rule can only be in a node-affinity rule whose nodes '
                           'all have the same priority',
    'multiple node affinity rules': 'VMs kept together may share one node-affinity rule only',
    'other node affinity rule already': 'VMs kept together may share one node-affinity rule only',
    'less nodes than available': 'the node-affinity rules of VMs kept apart must list at least as many nodes '
                                 'as there are such VMs',
}


def _disjoint_groups(rules):
    """Rules/Helpers.pm find_disjoint_rules_resource_sets: rules by their lowest sid (as strings), each joining
    the first group it overlaps (one pass, as PVE does)."""
    groups = []
    for rule in sorted(sorted(rules, key=lambda r: r['rule']), key=lambda r: min(r['resources'] or [''])):
        res = set(rule['resources'])
        for group in groups:
            if group[1] & res:
                group[0].append(rule['rule'])
                group[1].update(res)
                break
        else:
            groups.append(([rule['rule']], res))
    return groups


def feasibility(rules, nodes):
    """PVE's ``check_feasibility`` (HA/Rules.pm) over ``rules`` (desired/current rule shape, sids resolved) and
    ``nodes`` (the CRM's node list). Disabled rules take no part. Returns {rule id: [(message, [other rule
    ids])]}: every rule PVE would refuse to write, and the CRM would drop."""
    active = [r for r in rules if not r.get('disable')]
    node_aff = [r for r in active if r['type'] == 'node-affinity']
    res_aff = [r for r in active if r['type'] == 'resource-affinity']
    positive = [r for r in res_aff if r.get('affinity') == 'positive']
    negative = [r for r in res_aff if r.get('affinity') == 'negative']
    out = {}

    def blame(rid, message, others=()):
        entry = (message, sorted(set(others) - set([rid])))
        if entry not in out.setdefault(rid, []):
            out[rid].append(entry)

    users = {}
    for rule in node_aff:
        for sid in set(rule['resources']):
            users.setdefault(sid, []).append(rule['rule'])
    for sid, ids in users.items():
        for rid in ids if len(ids) > 1 else []:
            blame(rid, "resource '{0}' is already used in another node affinity rule".format(sid), ids)
    for rule in res_aff:
        if len(set(rule['resources'])) < 2:
            blame(rule['rule'], 'rule is ineffective as there are less than two resources')
    for rule in negative:
        if len(set(rule['resources'])) > len(nodes):
            blame(rule['rule'], 'rule defines more resources than available nodes')
    for ids, res in _disjoint_groups(positive):
        for rule in negative:
            if len(res & set(rule['resources'])) >= 2:
                blame(rule['rule'], 'rule shares two or more resources with a positive resource affinity rule', ids)
                for pid in ids:
                    blame(pid, 'rule shares two or more resources with a negative resource affinity rule',
                          [rule['rule']])
    for rule in res_aff:
        paired = [n for n in node_aff if set(n['resources']) & set(rule['resources'])]
        multi = [n['rule'] for n in paired if len(set(p or 0 for p in n['nodes'].values())) > 1]
        if multi:
            blame(rule['rule'], 'resources are in node affinity rules with multiple priorities', multi)
            for other in paired:
                blame(other['rule'], 'resources are in a resource affinity rule and cannot be in a node affinity '
                                     'rule with multiple priorities', [rule['rule']])
    for ids, res in _disjoint_groups(positive):
        paired = [n['rule'] for n in node_aff if set(n['resources']) & res]
        if len(paired) > 1:
            for pid in ids:
                blame(pid, 'resources are in multiple node affinity rules', paired)
            for nid in paired:
                blame(nid, 'at least one resource is in a positive resource affinity rule and there are other '
                           'resources in at least one other node affinity rule already', ids + paired)
    for rule in negative:
        located, allowed, paired = set(), set(), []
        for other in node_aff:
            common = set(rule['resources']) & set(other['resources'])
            if common:
                located |= common
                allowed |= set(other['nodes'])
                paired.append(other['rule'])
        if len(allowed) < len(located):
            blame(rule['rule'], 'two or more resources are restricted to less nodes than available to the '
                                'resources', paired)
            for nid in paired:
                blame(nid, 'at least one resource is in a negative resource affinity rule and this rule would '
                           'restrict these to less nodes than available to the resources', [rule['rule']])
    return out


def describe_errors(rid, errors, nodes=None):
    """One line per PVE error of rule ``rid``, with the rules it conflicts with and what to change."""
    lines = []
    for message, others in errors:
        fix = next((text for key, text in FIXES.items() if key in message), '')
        if 'available nodes' in message and nodes is not None:
            fix = "{0} (the HA manager's node list: {1})".format(fix, ', '.join(sorted(nodes)) or 'empty')
        lines.append('HA rule {0}: PVE refuses it: "{1}"{2}{3}'.format(
            rid, message, ' (with rule {0})'.format(', '.join(others)) if others else '',
            '; {0}'.format(fix) if fix else ''))
    return lines


def _apply(state, op, desired):
    rid = op['rule']
    if op['method'] == 'DELETE':
        state.pop(rid, None)
        return
    rule = dict(desired[rid])
    if 'disable' not in rule:
        # Unset: a new rule is enabled, an updated one keeps its setting.
        rule['disable'] = bool(state.get(rid, {}).get('disable')) if op['method'] == 'PUT' else False
    state[rid] = rule


def check_writes(ops, desired, live, nodes):
    """Replay ``ops`` on the live rule set as PVE would take them, before any write. Returns the problems (one
    string each): a write PVE refuses (``$assert_feasibility`` checks the written rule against the set at that
    moment), and any desired rule that is infeasible once all writes are done (the CRM would drop it)."""
    state = dict((item['rule'], current_rule(item)) for item in live)
    wanted = dict((r['rule'], r) for r in desired)
    problems = []
    for op in ops:
        _apply(state, op, wanted)
        if op['method'] == 'DELETE':
            continue
        errors = feasibility(list(state.values()), nodes).get(op['rule'])
        if errors:
            problems.extend(line + ' (at step: {0})'.format(op['what']) for line in
                            describe_errors(op['rule'], errors, nodes))
            return problems
    final = feasibility(list(state.values()), nodes)
    for rid in sorted(wanted):
        if rid in final:
            problems.extend(describe_errors(rid, final[rid], nodes))
    return problems


class HaRuleEngine(object):
    """Converge one template's HA rules (and the HA resources they need)."""

    def __init__(self, api, check_mode=False, ensure_resources=True, resource_state='started', crm_timeout=180):
        self.api = api
        self.check_mode = check_mode
        self.ensure_resources = ensure_resources
        self.resource_state = resource_state
        self.crm_timeout = crm_timeout

    def node_status(self):
        """The CRM's node list (``manager_status`` ``node_status``): {node: state}; empty before a CRM is master."""
        status = self.api.get('cluster/ha/status/manager_status') or {}
        return dict((status.get('manager_status') or {}).get('node_status') or {})

    def converge(self, template, rules):
        result = dict(changed=False, changes=[], rules={}, ha_resources_added=[], diff=dict(before={}, after={}))
        resolved = []
        nodes = {}
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
        # Every write as PVE will check it, before the first one. Before a CRM is master its node list is empty;
        # it will list the nodes online then.
        status = self.node_status() if resolved else {}
        online = sorted(n for n, state in nodes.items() if state == 'online')
        problems = check_writes(ops, resolved, live, sorted(status) or online)
        touched = set(op['rule'] for op in ops)
        named = set(line.split(':')[0] for line in problems)
        for item in live:
            if item['rule'] in result['rules'] and item['rule'] not in touched and item.get('errors') and \
                    'HA rule {0}'.format(item['rule']) not in named:
                problems.append('PVE marks HA rule {0} invalid, so the HA manager ignores it: {1}'.format(
                    item['rule'], _pve_errors(item['errors'])))
        if missing or any(op['method'] != 'DELETE' for op in ops):
            groups = self.unmigrated_groups()
            if groups:
                problems.insert(0, groups_message(groups))
        if problems:
            raise HaRuleError('\n'.join(problems + ['nothing was changed']))
        changes = ['add HA resource {0} (state {1})'.format(s, self.resource_state) for s in missing]
        changes.extend(op['what'] for op in ops)
        result.update(changes=changes, changed=bool(changes), ha_resources_added=missing,
                      diff=dict(before=before, after=after))
        if not changes or self.check_mode:
            return result
        self.api.require_quorum()
        for sid in missing:
            self.api.settle_write('POST', 'cluster/ha/resources', dict(sid=sid, state=self.resource_state,
                                                                       comment='shadownet {0}'.format(template)),
                                  settled=lambda sid=sid: self.has_resource(sid), what='add HA resource ' + sid)
        wanted = dict((r['rule'], r) for r in resolved)
        if not status and any(op['method'] != 'DELETE' and wanted[op['rule']].get('affinity') == 'negative'
                              for op in ops):
            status = self._wait_for_crm(missing)
            problems = check_writes(ops, resolved, live, sorted(status))
            if problems:
                raise HaRuleError('\n'.join(problems + ['done before: {0}'.format(
                    ', '.join(changes[:len(missing)]) or 'nothing')]))
        for op in ops:
            params = dict(op['params'])
            if op['method'] == 'PUT':
                # A fresh digest per update: every write to rules.cfg changes it.
                current = self.api.get(op['path'])
                if current.get('digest'):
                    params['digest'] = current['digest']
            try:
                self.api.settle_write(op['method'], op['path'], params, what=op['what'],
                                      settled=lambda op=op: self.rule_settled(op, resolved, template))
            except PveApiError as exc:
                done = changes[:len(missing) + ops.index(op)]
                exc.message = '{0} (at step: {1}; done before it: {2})'.format(
                    exc.message, op['what'], ', '.join(done) or 'nothing')
                exc.args = (exc.message,)
                raise
        if ops:
            invalid = [item for item in self.api.get('cluster/ha/rules') or []
                       if item.get('rule') in wanted and item.get('errors')]
            if invalid:
                raise HaRuleError('PVE accepted these HA rules but marks them invalid, so the HA manager ignores '
                                  'them: {0}'.format('; '.join('{0}: {1}'.format(i['rule'], _pve_errors(i['errors']))
                                                               for i in invalid)))
        return result

    def unmigrated_groups(self):
        """The HA groups PVE has not migrated to rules yet (``GET /cluster/ha/groups``, which pve-ha-manager
        API2/HA/Groups.pm ``index`` refuses once groups.cfg has no entries: a fresh PVE 9, or after the
        migration)."""
        try:
            groups = self.api.get('cluster/ha/groups') or []
        except PveApiError as exc:
            if exc.kind == 'migrated':
                return []
            raise
        return sorted(str(g.get('group')) for g in groups if isinstance(g, dict) and g.get('group'))

    def has_resource(self, sid):
        """Is ``sid`` an HA resource now (read back after a lost answer)?"""
        return any(item.get('sid') == sid for item in self.api.get('cluster/ha/resources') or [])

    def rule_settled(self, op, desired, template):
        """Is the effect of a rule write in place (read back after a lost answer)? API2/HA/Rules.pm writes rules.cfg
        under lock_ha_domain before answering: a deleted rule is gone, a created or updated one needs no more write."""
        live = self.api.get('cluster/ha/rules') or []
        if op['method'] == 'DELETE':
            return op['rule'] not in set(item.get('rule') for item in live)
        if op['rule'] not in set(item.get('rule') for item in live):
            return False
        ops, dummy, dummy2 = plan_rules(desired, live, template)
        return not any(o['rule'] == op['rule'] for o in ops)

    def _wait_for_crm(self, added):
        """Wait (wall clock, ``crm_timeout`` seconds) for the CRM's node list; PVE counts the nodes of negative
        resource-affinity rules from it (ResourceAffinity.pm check_negative_resource_affinity_resources_count)."""
        deadline = self.api._clock() + self.crm_timeout
        delay = 0.5
        while True:
            status = self.node_status()
            if status:
                return status
            if self.api._clock() >= deadline:
                raise HaRuleError(
                    'the HA manager has no node list {0}s after {1}: PVE counts the nodes of negative '
                    'resource-affinity rules from it (manager_status node_status, written by the active CRM) and '
                    'refuses them while it is empty. Check that pve-ha-crm runs and a master is active '
                    '(ha-manager status), then run again; no rule was written.'.format(
                        self.crm_timeout, 'adding HA resource(s) {0}'.format(', '.join(added)) if added else
                        'the HA resources were configured'))
            self.api._sleep(min(delay, max(0.0, deadline - self.api._clock())))
            delay = min(delay * 1.5, 3.0)


def groups_message(groups):
    """Why no HA rule can be written while HA groups are not migrated, and what lets PVE migrate them."""
    return ('HA group(s) {0} have not been migrated to HA rules yet, and PVE refuses every HA rule write until they '
            'are (pve-ha-manager API2/HA/Rules.pm: "cannot create ha rule: ha groups have not been migrated yet"). '
            'The active CRM migrates them itself, retrying about every minute (HA/Manager.pm '
            'try_persistent_group_migration), once every cluster node is online, every LRM is active or idle and not '
            'in maintenance mode, and every node runs pve-manager 9.0.0~16 or newer: fix what `journalctl -u '
            'pve-ha-crm` on the master logs after "ha groups migration", wait until `ha-manager groupconfig` is '
            'refused, then run again'.format(', '.join(groups)))


def _pve_errors(errors):
    if isinstance(errors, dict):
        return '; '.join('{0}: {1}'.format(k, ', '.join(v) if isinstance(v, list) else v)
                         for k, v in sorted(errors.items()))
    return str(errors)

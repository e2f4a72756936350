# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Templates the project does not have: the lab template with one to three random edits (a key deleted, a list
item repeated, a value replaced by one of many wrong or odd values: null, YAML's .nan and .inf, negative and huge
numbers, wrong types, an IPv6 network under an IPv4 VIP, names PVE refuses...), a fixed seed.

validate_template() promises never to raise on bad input: every edit ends either in issues that name a field and
what is valid there, or in a template whose plan is strict JSON, the same twice, and keeps the plan's own rules
(unique VM names, SDN ids PVE accepts, VRRP ids in range, a shadow for every critical service).
"""
import copy
import json
import os
import random

import jinja2
import yaml

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import template as template_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')
EDITS = 2000
ODD = [None, 0, -1, 1, 2, 10 ** 12, 0.5, -0.5, float('nan'), float('inf'), float('-inf'), '', 'x', 'Web_1', 'a' * 300,
       '10.0.0.0/8', '10.10.0.0/24', '10.10.0.100', '::1', 'fd00::/64', '5m', '0s', '-5m', '1G', '0', 'true', True,
       False, [], [1], ['front'], {}, {'a': 1}, 'pve1', 'vmbr0', 'é', '9000', 9000, 99999999, '800Mbit', 'spread',
       'full', 'http', 'vxlan']


def _lab():
    with open(LAB) as handle:
        return yaml.safe_load(jinja2.Environment().from_string(handle.read()).render())


def _paths(obj, prefix=()):
    yield prefix
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


def _edit(rnd, data):
    for dummy in range(rnd.randint(1, 3)):
        path = rnd.choice(list(_paths(data))[1:])
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        roll = rnd.random()
        if roll < 0.25 and isinstance(parent, dict):
            del parent[path[-1]]
        elif roll < 0.3 and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[path[-1]]))
        else:
            parent[path[-1]] = copy.deepcopy(rnd.choice(ODD))
    return data


def _plan_rules(plan, tpl):
    names = [vm['name'] for vm in plan['vms']]
    assert len(names) == len(set(names))
    assert all(naming.DNS_LABEL_RE.match(n) for n in names), names
    ids = [(n['zone'], n['vnet']) for n in plan['networks'] if n['type'] == 'vnet']
    assert all(naming.SDN_ID_RE.match(z) and naming.SDN_ID_RE.match(v) for z, v in ids), ids
    vnets = [v for dummy, v in ids]
    assert len(vnets) == len(set(vnets))
    assert all(1 <= g['vrid'] <= 255 for g in plan['vrrp'])
    assert len(set((g['network'], g['vrid']) for g in plan['vrrp'])) == len(plan['vrrp'])
    if plan['shadow_enabled']:
        shadowed = set(vm['service'] for vm in plan['vms'] if vm['role'] == 'shadow')
        assert shadowed == set(s['name'] for s in tpl['services'] if s['critical'])


def test_edited_templates_end_in_issues_or_in_a_sound_plan():
    base = _lab()
    outcomes = {'issues': 0, 'planned': 0}
    for seed in range(EDITS):
        data = _edit(random.Random(seed), copy.deepcopy(base))
        tpl, issues = template_utils.validate_template(copy.deepcopy(data))      # never raises
        if issues:
            outcomes['issues'] += 1
            assert tpl is None
            for issue in issues:
                assert issue.message and str(issue).startswith('template '), (seed, str(issue))
            continue
        outcomes['planned'] += 1
        plan = plan_utils.build_plan(tpl)
        text = json.dumps(plan, allow_nan=False, sort_keys=True)          # strict JSON: no NaN or infinity
        assert json.dumps(plan_utils.plan_from_template(copy.deepcopy(data))[1], sort_keys=True) == text, seed
        _plan_rules(plan, tpl)
    # both ends are reached: most edits are refused, and enough of them still plan
    assert outcomes['issues'] > EDITS // 2 and outcomes['planned'] > EDITS // 20, outcomes

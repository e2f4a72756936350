#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: ha_rule
short_description: The PVE 9 HA rules of one template (resource and node affinity), converged as a set
version_added: 0.1.0
description:
  - Takes the complete list of HA rules the collection owns for one O(template) (for example the C(ha_rules) of
    a shadownet plan, passed as they are) and makes PVE's rules (C(/cluster/ha/rules)) match it. Rules are
    created, updated (digest-checked, only the fields that differ) and deleted, with a before/after diff.
  - C(resource-affinity) rules keep resources together (C(positive)) or apart (C(negative), a primary and its
    shadow). C(node-affinity) rules say which nodes the resources prefer (C(strict=false)) or must run on.
  - Ownership. A rule belongs to the template when its id starts with C(sn_<template>_) (with C(-) as C(_)) and
    its comment starts with C(shadownet <template>:); the module adds that marker to a comment that lacks it.
    Only such rules are updated or deleted; the user's own rules are never touched, and a desired rule whose id
    is taken by a rule without the marker is refused.
  - Rules name VMs. Names are resolved to C(vm:<vmid>) through C(/cluster/resources); a VM that does not exist
    or a name used by two VMs is an error. C(vm:<vmid>) and plain vmids are accepted as they are.
  - HA resources. PVE accepts only HA-managed resources in rules, so every VM a rule names is made an HA
    resource (C(/cluster/ha/resources), C(vm:<vmid>)) with O(resource_state) (C(started) by default) when it is
    not one yet. From then on the HA manager starts and stops the VM. Existing HA resources are left as they
    are, and no HA resource is removed when a rule goes. Set O(ensure_resources=false) to refuse instead.
  - Feasibility. PVE checks each rule it writes against all enabled rules (pve-ha-manager C(HA/Rules.pm)
    C(check_feasibility)) and refuses an infeasible one ("Rule '...' is invalid."). The module runs the same
    checks on the whole sequence of writes before the first one (adding HA resources included) and fails naming
    the rule, PVE's reason, the conflicting rules and the fix. Among them, a VM in a resource-affinity rule cannot
    be in a node-affinity rule whose nodes have different priorities, a VM can be in one node-affinity rule only,
    and a negative resource-affinity rule cannot have more VMs than the HA manager has nodes. After writing, a rule
    PVE lists with C(errors) (one the HA manager ignores) fails the module.
  - The HA manager's node list. PVE counts the nodes of negative rules from the active CRM's node list, which is
    empty until a CRM is master, and a CRM becomes master only once HA resources exist. When the list is empty,
    the module adds the HA resources, then waits up to O(crm_timeout) seconds for it before writing the rules.
  - C(disable=false) enables a disabled rule with C(delete=disable), as PVE drops C(disable=0) on create and update.
  - HA groups. On a cluster upgraded from PVE 8, PVE refuses every rule write until its CRM has migrated the HA
    groups to rules. The module reads C(/cluster/ha/groups) before any write (also in check mode) and, while any
    group is listed, fails naming them and what the migration needs, without writing.
  - A cluster without quorum stops the module before the first write. Check mode makes no write.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads only; writes nothing.
    support: full
  diff_mode:
    description: Before and after, by object.
    support: full
options:
  template:
    description: The template the rules belong to; it gives the rule id prefix and the comment marker.
    type: str
    required: true
  rules:
    description:
      - The complete set of the template's rules (a plan's C(ha_rules) as they are). Owned rules not in the list
        are deleted.
      - Each rule has C(rule) (the id, starting with C(sn_<template>_)), C(type) (C(resource-affinity) or
        C(node-affinity)), C(resources) (VM names, or C(vm:<vmid>)) and C(comment) (the marker
        C(shadownet <template>:) is prepended when missing).
      - A C(resource-affinity) rule has C(affinity), C(negative) (keep apart, the default) or C(positive).
      - A C(node-affinity) rule has C(nodes), as the plan gives them (dicts with C(node) and C(priority)) or as
        PVE writes them (C(pve1:2)), and C(strict) (a hard constraint instead of a preference, default false).
      - C(disable) disables a rule (V(false) enables it again); unset leaves the rule's current setting alone.
      - Other keys are ignored, as the plan format asks of its consumers.
    type: list
    elements: dict
    default: []
  state:
    description: C(present) converges to O(rules); C(absent) deletes every rule the template owns.
    type: str
    choices: [present, absent]
    default: present
  ensure_resources:
    description: Make the VMs the rules name HA resources when they are not.
    type: bool
    default: true
  resource_state:
    description: The HA state of HA resources this module adds.
    type: str
    choices: [started, stopped, ignored]
    default: started
  crm_timeout:
    description:
      - Seconds (wall clock) to wait for the HA manager's node list before writing negative resource-affinity
        rules, when it is empty (no CRM has been master yet). The module fails with what to check when it runs out.
    type: int
    default: 180
'''

EXAMPLES = r'''
- name: The HA rules of a plan
  shadownet.proxmox.ha_rule:
    template: "{{ sn.plans.shop.template }}"
    rules: "{{ sn.plans.shop.ha_rules }}"

- name: Keep a shadow off its primary's node
  shadownet.proxmox.ha_rule:
    template: shop
    rules:
      - rule: sn_shop_web_1_anti
        type: resource-affinity
        resources: [shop-web-1, shop-web-shadow]
        affinity: negative
        comment: "shadownet shop: keep shop-web-shadow off shop-web-1's node"

- name: Remove every rule of a template
  shadownet.proxmox.ha_rule:
    template: shop
    state: absent
'''

RETURN = r'''
changes:
  description: What was (or, in check mode, would be) changed.
  returned: always
  type: list
  elements: str
  sample: [add HA resource vm:101 (state started), create rule sn_shop_web_1_anti]
rules:
  description: The desired rules with their resources resolved to sids.
  returned: always
  type: dict
  sample: {sn_shop_web_1_anti: [vm:101, vm:103]}
ha_resources_added:
  description: HA resources that were (or would be) added.
  returned: always
  type: list
  elements: str
diff:
  description: The template's rules before and after, by rule id.
  returned: always
  type: dict
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        template=dict(type='str', required=True),
        # No suboptions: plan entries may carry keys added later, which consumers must ignore (docs/plan.md).
        rules=dict(type='list', elements='dict', default=[]),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        ensure_resources=dict(type='bool', default=True),
        resource_state=dict(type='str', choices=['started', 'stopped', 'ignored'], default='started'),
        crm_timeout=dict(type='int', default=180),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    try:
        rules = [] if p['state'] == 'absent' else [ha.normalise_rule(r, p['template'], i)
                                                   for i, r in enumerate(p['rules'] or [])]
    except ha.HaRuleError as exc:
        module.fail_json(msg=str(exc))
    try:
        api = api_utils.PveApi.from_module(module)
        engine = ha.HaRuleEngine(api, check_mode=module.check_mode, ensure_resources=p['ensure_resources'],
                                 resource_state=p['resource_state'], crm_timeout=p['crm_timeout'])
        result = engine.converge(p['template'], rules)
    except ha.HaRuleError as exc:
        module.fail_json(msg=str(exc))
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

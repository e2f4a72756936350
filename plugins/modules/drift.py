#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: drift
short_description: Which build steps of a plan would change the cluster (read-only, one pass)
version_added: 0.1.0
description:
  - Compares a plan from M(shadownet.proxmox.template) with the cluster, step by step as the
    C(shadownet.proxmox.shadow_network) role builds it, primary networks (M(shadownet.proxmox.vnet)), primaries
    and shadows (M(shadownet.proxmox.linked_clone) with the plan, including pruning), shadow networks and HA rules
    (M(shadownet.proxmox.ha_rule)).
  - It runs those modules' own logic in check mode, in one process, so RV(in_sync) is true exactly when each of
    them would report no change. The role uses it to confirm a converged template with one module run and skip
    the five build tasks.
  - Never writes, in check mode or not, and always reports C(changed=false).
  - HA rules name VMs by vmid. While a VM of the plan is still to be created, the C(ha_rules) step is reported
    out of sync without being compared.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Runs the same reads as outside check mode; it never writes either way.
    support: full
  diff_mode:
    description: Not applicable; RV(steps) lists what differs.
    support: none
options:
  plan:
    description: A plan from M(shadownet.proxmox.template) (C(result.plans.<template>)).
    type: dict
    required: true
  state:
    description: The power state the build gives every VM (as O(shadownet.proxmox.linked_clone#module:state)).
    type: str
    choices: [present, started, stopped]
    default: started
  hookscript:
    description: The hook script volume the build sets on primaries; not given, hookscripts are not compared.
    type: str
  prune:
    description: Count managed VMs the plan no longer has as drift (as the build's O(shadownet.proxmox.linked_clone#module:prune)).
    type: bool
    default: true
  ha_rules:
    description: Compare the plan's HA rules too.
    type: bool
    default: true
  parallel:
    description: How many API connections read VM configurations at once.
    type: int
    default: 4
notes:
  - Needs the same read privileges as the build modules (C(VM.Audit), C(SDN.Audit), C(Sys.Audit)).
'''

EXAMPLES = r'''
- name: Is the shop template built as planned?
  shadownet.proxmox.drift:
    plan: "{{ sn.plans.shop }}"
  register: shop_drift

- name: Show what differs
  ansible.builtin.debug:
    msg: "{{ shop_drift.steps | dict2items | rejectattr('value.in_sync') | map(attribute='key') | list }}"
'''

RETURN = r'''
in_sync:
  description: True when no build step would change anything.
  returned: always
  type: bool
  sample: true
steps:
  description:
    - Per build step (C(primary_networks), C(primaries), C(shadow_networks), C(shadows), C(ha_rules)), whether it is
      in sync and the changes it would make, one line each.
  returned: always
  type: dict
  sample: {primaries: {in_sync: false, changes: ["update shop-web-1 (cores)"]}}
vms:
  description: The check-mode result of every VM of the plan (name, vmid, node, created, placement, changes,
    pending); a VM to be created has the node it would be placed on and why (C(placement)).
  returned: always
  type: list
  elements: dict
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import drift
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import sdn
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import not_a_plan


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plan=dict(type='dict', required=True),
        state=dict(type='str', default='started', choices=['present', 'started', 'stopped']),
        hookscript=dict(type='str'),
        prune=dict(type='bool', default=True),
        ha_rules=dict(type='bool', default=True),
        parallel=dict(type='int', default=4),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    plan = p['plan']
    if not_a_plan(plan):
        module.fail_json(msg=not_a_plan(plan))
    try:
        result = drift.plan_drift(lambda: api_utils.PveApi.from_module(module), plan, state=p['state'],
                                  hookscript=p['hookscript'], prune=p['prune'], ha_rules=p['ha_rules'],
                                  parallel=max(1, p['parallel']))
    except (sdn.NetworkError, ha.HaRuleError) as exc:
        module.fail_json(msg=str(exc))
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc)
    for res in result['vms']:
        res.pop('diff', None)
        for warning in res.pop('warnings', None) or []:
            module.warn('{0}: {1}'.format(res.get('name'), warning))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()

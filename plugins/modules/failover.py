#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r'''
module: failover
short_description: Fail a service over to its shadow and back, through the PVE API
version_added: 0.1.0
description:
  - The PVE side of a failover for one O(service) of a plan. keepalived moves the service VIP to the shadow on
    its own; this module detects which primaries are down, grows the shadow, repairs the primaries and shrinks
    the shadow again once they are healthy.
  - C(detect) reads, for each primary and the shadow (found by name in C(/cluster/resources)), the VM status and
    QEMU's C(qmpstatus) (C(status/current)), whether its node is online (C(/nodes)) and its HA state
    (C(/cluster/ha/resources)). A primary is down when it is missing, its node is offline, it is stopped, or it
    runs while QEMU does not (hung, paused or crashed guest). It also says whether the service runs on its
    shadow (from O(state_dir_facts) when given, else when every primary is down and the shadow is up).
  - C(activate) grows the shadow to the size of its largest primary (plan and actual configs; never shrinks it)
    with one digest-checked update, marks it active in the metadata block of its description (key C(failover)
    with C(active) true and C(since), Unix seconds) and starts it if it is stopped. Sizes PVE cannot hot-plug
    stay pending until the shadow's next start; they are listed in C(pending) of RV(activate) and the shadow is not
    restarted, because it is serving.
  - C(remediate) starts a stopped primary, resets one that runs while QEMU does not (then resumes it if QEMU
    stays paused after the reset), resumes a paused one, and waits until QEMU runs. A VM that fails to start
    fails the module with the VM's name and PVE's own message. A locked VM is not touched.
  - A primary whose node is offline cannot be started or migrated through the API (PVE migrates from the source
    node, which is unreachable). When HA manages it, the result says that HA recovers it once the node is fenced;
    otherwise it is reported as unresolved, with the node's name and what an operator has to do. Neither case
    writes anything.
  - C(failback) shrinks the shadow back to its plan size and removes the active mark, once every primary runs,
    has been up for O(min_uptime) seconds and, with O(state_dir_facts), its VRRP health check passes. Called as
    the only step, it fails when that is not the case; in C(auto) it is deferred and the reasons are returned.
  - C(auto) runs detect, activate when a primary is down, remediate, detect again, and failback when healthy.
  - Every step writes only what differs, so a second run changes nothing. Before any write the cluster must be
    quorate; without quorum the module stops before its first write with a clear message.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads the cluster and reports what each step would do; sends no write request.
    support: full
  diff_mode:
    description: The shadow's size and C(failover) mark before and after.
    support: full
options:
  plan:
    description: A plan from M(shadownet.proxmox.template) (C(result.plans.<template>)).
    type: dict
    required: true
  service:
    description: The service of the plan to act on.
    type: str
    required: true
  step:
    description:
      - Which step to run. C(detect) never writes.
    type: str
    choices: [detect, activate, remediate, failback, auto]
    default: auto
  state_dir_facts:
    description:
      - Optional VRRP state from the keepalived state directories of the service's guests (see the
        C(vip_failover) role, files C(<instance>.state) and C(<instance>.health)), keyed by VM name.
      - A value is the state as a string (C(MASTER), C(BACKUP), C(FAULT)), or a dict with C(state) (for example a
        parsed C(<instance>.state) line) and optionally C(health) (0 healthy, 1 failing).
      - Used to report which VM holds the VIP and to hold back a failback while a primary's health check fails.
    type: dict
  min_uptime:
    description:
      - Seconds every primary must have been running before the shadow is shrunk back (no flapping). In C(auto),
        a primary started by this very run therefore defers the failback to a later run.
    type: int
    default: 60
  timeout:
    description: Seconds (wall clock) to wait for each PVE task and for a started VM to run.
    type: int
    default: 300
'''

EXAMPLES = r'''
- name: Validate the templates
  shadownet.proxmox.template:
    templates: "{{ shadownet_templates }}"
  register: sn

- name: Fail the web service over if needed, repair it, fail back when healthy
  shadownet.proxmox.failover:
    api_host: pve1.example.com
    api_token_id: automation@pve!failover
    api_token_secret: "{{ vault_pve_token }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    plan: "{{ sn.plans.shop }}"
    service: web
    step: auto
  register: fo

- name: Only look
  shadownet.proxmox.failover:
    plan: "{{ sn.plans.shop }}"
    service: web
    step: detect
    state_dir_facts:
      shop-web-1: {state: FAULT, health: 1}
      shop-web-shadow: MASTER
'''

RETURN = r'''
steps:
  description: The steps that ran and acted or checked something, in order.
  returned: always
  type: list
  elements: str
  sample: [detect, activate, remediate]
lines:
  description: One human line per step (and per remediated primary).
  returned: always
  type: list
  elements: str
  sample: ["detect: shop-web-1 down (stopped); shop-web-2 up; shadow shop-web-shadow up"]
detect:
  description:
    - What detect found. C(primaries) and C(shadow) have per VM C(name), C(vmid), C(node), C(node_online),
      C(status), C(qmpstatus), C(lock), C(uptime), C(ha_state), C(healthy) and C(problem) (null, missing,
      node_offline, stopped, paused or hung); the shadow also C(cores), C(memory) and C(active).
    - Also C(primaries_down) (names), C(all_primaries_down), C(vip_master), C(runs_on_shadow), C(quorate) and
      C(nodes) (node to status).
  returned: always
  type: dict
after_remediation:
  description: Detect again after remediation (C(auto), not in check mode), the state the failback decision used.
  returned: when primaries were remediated in auto
  type: dict
activate:
  description: The shadow's C(name), C(vmid), C(node), C(size) it grew to, C(changes), C(pending) and C(started).
  returned: when activate ran
  type: dict
remediation:
  description:
    - One entry per down primary with C(name), C(vmid), C(node), C(problem), C(action) (start, reset, resume,
      ha_recovery, none), C(result) (done, would, failed, waiting, unresolved) and C(msg).
  returned: when remediate ran
  type: list
  elements: dict
failback:
  description: The shadow's C(changes), C(pending) and C(size), or C(deferred) with the reasons.
  returned: when failback was considered
  type: dict
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils import api as pveapi
from ansible_collections.shadownet.proxmox.plugins.module_utils import failover as fo


def main():
    argument_spec = pveapi.api_argument_spec()
    argument_spec.update(
        plan=dict(type='dict', required=True),
        service=dict(type='str', required=True),
        step=dict(type='str', default='auto', choices=list(fo.STEPS)),
        state_dir_facts=dict(type='dict'),
        min_uptime=dict(type='int', default=60),
        timeout=dict(type='int', default=300),
    )
    module = pveapi.api_module(argument_spec)
    p = module.params
    runner = None
    try:
        api = pveapi.PveApi.from_module(module)
        runner = fo.Failover(api, p['plan'], p['service'], check_mode=module.check_mode, timeout=p['timeout'],
                             state_facts=p['state_dir_facts'], min_uptime=max(0, p['min_uptime']))
        result = runner.run(p['step'])
    except pveapi.PveApiError as exc:
        partial = dict(runner.result) if runner is not None else {}
        for warning in partial.pop('warnings', []):
            module.warn(warning)
        pveapi.fail_json_from(module, exc, **partial)
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: failover
short_description: Fail a service over to its shadow and back, through the PVE API
version_added: 0.1.0
description:
  - The PVE side of a failover for one O(service) of a plan. keepalived moves the service VIP to the shadow on
    its own; this module detects which primaries are down, grows the shadow, repairs the primaries and shrinks
    the shadow again once they are healthy.
  - C(detect) reads, for each primary and the shadow (found by name in C(/cluster/resources)), the VM status and
    QEMU's C(qmpstatus) (C(status/current)), whether its node is online (C(/nodes)), its HA state
    (C(/cluster/ha/resources), the requested one) and the HA manager's state of it (C(ha) of C(status/current),
    for example C(error)). A primary is down when it is missing, its node is offline, it is stopped, or its
    QEMU reports another state than running (paused, io-error, internal-error, guest-panicked, ...). PVE sees no
    more. A QEMU whose monitor does not answer within 2 seconds reads as running (qemu-server C(vmstatus) then
    gives the process's status), and so does a guest that hangs or panics inside a running QEMU (PVE adds no
    pvpanic device); keepalived's own checks (vip_failover) move the VIP for those. It also says whether the
    service runs on its shadow (from O(state_dir_facts) when given, else when every primary is down and the shadow is up).
  - C(activate) grows the shadow to the size of its largest primary (plan and actual configs; never shrinks it)
    with one digest-checked update, marks it active in the metadata block of its description (key C(failover)
    with C(active) true and C(since), Unix seconds) and starts it if it is stopped. Sizes PVE cannot hot-plug
    stay pending until the shadow's next start; they are listed in C(pending) of RV(activate) and the shadow is not
    restarted, because it is serving.
  - C(remediate) starts a stopped primary, resets one that runs while QEMU does not (then resumes it if QEMU
    stays paused after the reset), resumes a paused one, and waits until QEMU runs. A VM that fails to start
    fails the module with the VM's name and PVE's own message. A locked VM is not touched. For an HA-managed
    primary PVE only asks HA to start it; when HA cannot (its service goes to HA's error state, in which HA neither
    starts nor moves it again) the module fails at once with what to check and how to clear the state, and a primary
    already in that state is reported unresolved with the same text instead of being started in vain.
  - A primary whose node is offline cannot be started or migrated through the API (PVE migrates from the source
    node, which is unreachable); PVE's HA recovers it on another node once it has fenced the node. By default
    (O(offline_recovery=wait)) the module waits for that when HA manages the primary, and reports an unmanaged
    one as unresolved, with the node's name and what an operator has to do; see O(offline_recovery).
  - C(failback) shrinks the shadow back to its plan size and removes the active mark, once every primary runs,
    has been up for O(min_uptime) seconds, with O(state_dir_facts) its VRRP health check passes, and its state has
    caught up with the shadow's (O(catch_up)). Called as
    the only step, it fails when that is not the case; in C(auto) it is deferred and the reasons are returned.
  - C(auto) runs detect, activate when a primary is down, remediate, detect again, and failback when healthy.
  - C(drill) runs a controlled failover and fail-back of the service and measures the gap a client sees. It refuses
    to start unless the service is healthy (every primary up and unlocked, the shadow running, not active and
    unlocked, the VIP answering and not from the shadow). It sets C(link_down=1) on the NIC of every primary that
    sits on the VIP's network (digest-checked, the MAC and every other NIC property kept), waits until the VIP
    answers again from the shadow, lets the shadow serve for O(drill.hold) seconds, writes the primaries' previous
    NIC strings back (their links come up and keepalived gives the VIP back to the primary) and watches
    O(drill.settle) seconds for flapping. The links are restored whatever happens, also when the VIP never answers.
    The shadow is not resized; C(activate) and C(failback) do that in a real failover.
  - While the drill runs, the module probes O(drill.port) on the VIP every O(drill.interval) milliseconds from
    where it runs (a TCP connect, or a UDP datagram the service echoes back). It tells the responders apart by the
    MAC address the VIP resolves to in that host's neighbour table, so run it from a host on the VIP's network to
    measure the fail-back; elsewhere only the failover gap is measured and the fail-back is timed over
    O(drill.settle).
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
      - Which step to run. C(detect) never writes. C(drill) needs O(drill).
    type: str
    choices: [detect, activate, remediate, failback, auto, drill]
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
    description:
      - Seconds (wall clock) to wait for each PVE task and for a started VM to run, and, with
        O(offline_recovery=wait) or O(offline_recovery=ha), for HA to recover a primary from an offline node
        (PVE's HA fences a node and recovers its VMs in about 2 to 4 minutes).
    type: int
    default: 300
  offline_recovery:
    description:
      - What C(remediate) does about a primary whose node is offline. The API cannot start or migrate it (PVE
        migrates from the source node); PVE's HA recovers it on another node once it has fenced the node.
      - C(wait) waits up to O(timeout) for HA to recover an HA-managed primary (the C(shadow_network) role makes
        every VM of a plan an HA resource with its HA rules) and reports an unmanaged one as unresolved. An HA
        resource without a stored state is C(started) (PVE's default). One in HA state C(stopped) is recovered by HA
        but kept stopped; the module starts it once HA moved it. HA never recovers a C(disabled) resource and does
        not manage an C(ignored) one; both are reported unresolved with the command that lets HA recover them.
        While waiting, the HA state in C(/cluster/resources) is read; HA's error state fails at once, a recovery
        that finds no allowed node for more than about two CRM rounds fails naming the rules that exclude the
        online nodes (for example the shadow's negative resource-affinity rule), and a wait that ends while HA is
        still fencing the node says so.
      - C(ha) first adds an unmanaged primary to HA (C(state=started)), then waits. Use it only when the node is
        certainly off (powered down or fenced) - a node that was cut off the network while the VM still runs there
        would otherwise end up with the VM running twice on the same disks.
      - C(report) never waits and never writes for it; it only reports what HA will do or what an operator has to.
    type: str
    choices: [wait, ha, report]
    default: wait
  catch_up:
    description:
      - Which primaries must have caught up with the state the shadow took while it served, before C(failback)
        shrinks the shadow. Applies when the shadow carries the active mark and the service's replication fidelity
        can copy state back (C(differential), C(event)); C(full) has no way back and is never gated.
      - C(first) the first primary (the one that feeds the shadow, as C(state_replication_sources=first)),
        C(all) every primary, C(skip) no gate (the state the shadow took is left behind).
      - A primary has caught up when O(catch_up_facts) gives it a time at or after the shadow became active.
        In C(auto) a missing catch-up defers the failback and C(failback.catch_up_needed) in the result names the
        primaries; playbooks/failover.yml then runs the catch-up and fails back.
    type: str
    choices: [first, all, skip]
    default: first
  catch_up_facts:
    description:
      - Epoch seconds of the last completed catch-up into each primary, keyed by VM name, for example the
        C(caught_up) marker files the C(state_replication) role writes in its C(catch_up) direction. A value may
        be a number, a numeric string, or a dict with C(caught_up_at).
    type: dict
  drill:
    description:
      - How O(step=drill) probes the VIP and how long it waits. Required with O(step=drill).
    type: dict
    suboptions:
      port:
        description: The service port on the VIP to probe.
        type: int
        required: true
      protocol:
        description:
          - C(tcp) counts a completed TCP connect as an answer; C(udp) sends a datagram and counts an answer that
            contains it (an echo service).
        type: str
        choices: [tcp, udp]
        default: tcp
      interval:
        description: Milliseconds between two probes.
        type: int
        default: 10
      probe_timeout:
        description: Milliseconds after which a probe without an answer counts as unanswered.
        type: int
        default: 250
      hold:
        description: Seconds the shadow serves before the primaries' links come back.
        type: float
        default: 2.0
      settle:
        description: Seconds to watch after the fail-back (a second change of the VIP's owner is a flap).
        type: float
        default: 2.0
      timeout:
        description:
          - Seconds to wait for the VIP to answer before the drill, for the shadow to answer after the links went
            down and for a primary to take the VIP back after they came up (each). Longer than keepalived's
            C(preempt_delay).
        type: float
        default: 30.0
      payload:
        description: The text a UDP probe carries (followed by a space and a sequence number).
        type: str
        default: shadownet-drill
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

- name: Drill - fail web over to its shadow and back, measure what a client sees
  shadownet.proxmox.failover:
    plan: "{{ sn.plans.shop }}"
    service: web
    step: drill
    drill:
      port: 443
      interval: 10
  register: drill

- name: Show the measured gap
  ansible.builtin.debug:
    msg: "failover gap {{ drill.drill.failover_gap_ms }} ms, fail-back gap {{ drill.drill.failback_gap_ms }} ms"
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
      C(status), C(qmpstatus), C(lock), C(uptime), C(ha_state) (the requested HA state; C(started) for an HA
      resource without a stored state), C(ha_service) (the HA manager's state of the VM, for example C(started)
      or C(error); null when HA does not manage it or its node is offline), C(healthy) and C(problem) (null, missing,
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
      ha_wait, ha_add, ha_recovery, none), C(result) (done, would, failed, waiting, unresolved), C(msg) and, after an
      HA recovery, C(recovered_on).
  returned: when remediate ran
  type: list
  elements: dict
failback:
  description:
    - The shadow's C(changes), C(pending) and C(size), or C(deferred) with the reasons and C(catch_up_needed), the
      primaries whose state has still to catch up with the shadow's (see O(catch_up)).
  returned: when failback was considered
  type: dict
drill:
  description:
    - What the drill did and measured. Always C(vip), C(port), C(protocol), C(interval_ms), C(shadow), C(primaries)
      and C(links) (per primary C(name), C(vmid), C(node), C(nic), C(before), the NIC string before the drill and
      restored after it, and C(down), the string with C(link_down=1)); in check mode C(would) and nothing else.
    - C(failover_gap_ms) the longest silence a client saw from the link-down request until the shadow answered;
      C(takeover_ms) from that request to the shadow's first answer; C(failover_answered_by).
    - C(failback_gap_ms) the longest silence from the restore until a primary answered (over O(drill.settle) when
      the responder cannot be told apart); C(failback_ms); C(failback_answered_by); C(failbacks) (changes from
      the shadow to a primary, 1 in a clean drill) and C(flaps) (changes after it, 0 in a clean drill);
      C(after_failback_silence_ms).
    - C(probes), C(answered), C(failures) (unanswered probes), C(failover_failures), C(failback_failures),
      C(answered_by) (answers per VM name, C(unknown) when not told apart), C(shadow_answered), C(switches) (each
      change of the responder, C(at_ms) after the link-down request, C(from), C(to)), C(identified) (whether the
      responder was told apart), C(owner_before) and C(restored).
  returned: when step is drill and the drill started
  type: dict
  sample:
    vip: 10.10.0.100
    port: 443
    protocol: tcp
    failover_gap_ms: 182.4
    failback_gap_ms: 12.1
    failbacks: 1
    flaps: 0
    probes: 612
    failures: 14
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import drill as drill_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import failover as failover_utils


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plan=dict(type='dict', required=True),
        service=dict(type='str', required=True),
        step=dict(type='str', default='auto', choices=list(failover_utils.STEPS) + ['drill']),
        state_dir_facts=dict(type='dict'),
        min_uptime=dict(type='int', default=60),
        timeout=dict(type='int', default=300),
        offline_recovery=dict(type='str', default='wait', choices=list(failover_utils.OFFLINE_RECOVERY)),
        catch_up=dict(type='str', default='first', choices=list(failover_utils.CATCH_UP)),
        catch_up_facts=dict(type='dict'),
        drill=dict(type='dict', options=dict(
            port=dict(type='int', required=True),
            protocol=dict(type='str', default='tcp', choices=list(drill_utils.PROTOCOLS)),
            interval=dict(type='int', default=10),
            probe_timeout=dict(type='int', default=250),
            hold=dict(type='float', default=2.0),
            settle=dict(type='float', default=2.0),
            timeout=dict(type='float', default=30.0),
            payload=dict(type='str', default='shadownet-drill'),
        )),
    )
    module = api_utils.api_module(argument_spec, required_if=[('step', 'drill', ['drill'])])
    p = module.params
    runner = None
    try:
        api = api_utils.PveApi.from_module(module)
        runner = failover_utils.Failover(api, p['plan'], p['service'], check_mode=module.check_mode, timeout=p['timeout'],
                                         state_facts=p['state_dir_facts'], min_uptime=max(0, p['min_uptime']),
                                         offline_recovery=p['offline_recovery'], catch_up=p['catch_up'],
                                         catch_up_facts=p['catch_up_facts'])
        if p['step'] == 'drill':
            result = drill_utils.Drill(api, runner, p['drill'], check_mode=module.check_mode).run()
        else:
            result = runner.run(p['step'])
    except api_utils.PveApiError as exc:
        partial = dict(runner.result) if runner is not None else {}
        for warning in partial.pop('warnings', []):
            module.warn(warning)
        api_utils.fail_json_from(module, exc, **partial)
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

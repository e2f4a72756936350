#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: scale
short_description: Apply scaling decisions - add or remove linked-clone instances, or resize them
version_added: 0.1.0
description:
  - Acts on the decisions of M(shadownet.proxmox.forecast), one per service.
  - Horizontal mode adds instances through the same linked-clone engine as M(shadownet.proxmox.linked_clone),
    named C(name_prefix) plus the next free index, tagged like the other primaries, with the metadata of the
    first primary plus C(scaled) true, placed off the shadow's node when possible (never on a node in HA
    maintenance mode). Scale-in destroys the instances with the highest indexes, stopping them first when their
    process runs (paused ones too); an instance with C(protection) set fails the scale-in before any write to it,
    naming the VM and C(qm set <vmid> --protection 0). The result lists the mirrors and VRRP members that the port_mirror and
    vip_failover roles must add or drop, so that the service's shadow keeps covering every primary.
  - Vertical mode resizes cores and memory of every primary within bounds. PVE hot-plugs C(vcpus) only when the
    VM's C(hotplug) has C(cpu), and memory only when C(hotplug) has C(memory) and C(numa) is 1; otherwise the
    change is pending until the next restart, and RV(results[].notes) and RV(results[].restart_needed) say so.
    While a resize is still pending, later reconciles do not resize again (the forecast sees the size the VM runs
    with); they report C(skipped=pending_restart) and write nothing. A primary whose status is not C(stopped) or
    C(unknown) counts as running (a C(paused) one too, as PVE lists a running VM by its QMP status).
  - Vertical mode follows PVE's rules for a size. With C(memory) in C(hotplug), memory is rounded up to what memory
    hot-plug can run (qemu-server Memory.pm) - 1024 MiB of static memory (times the sockets with 1 GiB hugepages)
    plus whole DIMMs of 512 MiB (1 GiB with 1 GiB hugepages; the DIMM size doubles after every 32) - so a stopped
    primary starts again, a hot-add and a hot-remove end at the same size, and a rerun finds it in place
    (C(skipped=in_place)). Cores stop at the CPUs of the primary's node (PVE starts no VM with more sockets x
    cores); the forecast's decision is capped at the smallest node of the primaries and says so. A running
    primary with cpu hot-plug that is asked for more vCPUs than the cores it runs with gets the new cores
    pending and its C(vcpus) removed (it hot-plugs up to its running cores at once). A C(balloon) above the new
    memory is lowered to it in the same update. Hot-plug is judged by the running config (GET config
    C(current=1)), as PVE does. C(after) of RV(results[].resized) is the size PVE wrote, read back.
  - Before acting, the action and the cooldown deadlines are recorded in PVE (the C(scaling) key of the metadata
    block in the description of the service's first primary) with a digest-checked update. A decision made before
    another reconciler's recorded action is not acted on, and of two runs that race, PVE's digest check lets only
    one record (and so perform) the action.
  - Decisions that are forecast-only (O(forecast_only), or marked so by the forecast) are reported, never acted on.
  - In check mode nothing is written to PVE; the result says what would be done.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Writes nothing to PVE; the results say what would be done.
    support: full
  diff_mode:
    description: Not supported; the results list what changed.
    support: none
options:
  plans:
    description:
      - The plans, as M(shadownet.proxmox.template) returns them (C(result.plans)), one plan, or a list of plans.
        New instances are built from the plan's first primary of the service.
    type: raw
    required: true
  decisions:
    description: The RV(shadownet.proxmox.forecast#module:decisions) list of M(shadownet.proxmox.forecast).
    type: list
    elements: dict
    required: true
  forecast_only:
    description: Report the decisions, act on none.
    type: bool
    default: false
  state:
    description: Power state of added instances.
    type: str
    choices: [present, started]
    default: started
  hookscript:
    description:
      - Hook script volume set on added instances (as M(shadownet.proxmox.linked_clone) sets on primaries).
      - PVE lets only root@pam itself (a password login) set it; with an API token the instance is still built and
        started without it, and a warning names the C(qm set <vmid> --hookscript ...) to run as root on a node.
    type: str
  parallel:
    description: How many instances are cloned at the same time.
    type: int
    default: 4
  timeout:
    description: Seconds (wall clock) to wait for each PVE task, and for an instance being removed to be off (an HA
      resource is stopped by the HA manager after the stop task has ended).
    type: int
    default: 900
  shutdown_timeout:
    description:
      - Seconds an instance being removed (scale-in) gets to shut down cleanly, as PVE's own
        C(qm shutdown --timeout N --forceStop 1) (the ACPI power button, or the guest agent's shutdown), so that
        requests in flight can finish; then PVE terminates it and a warning names it. V(0) stops it at once.
      - For an HA resource this is the timeout of HA's stop, carried out by the HA manager the same way. O(timeout)
        is waited on top of it.
    type: int
    default: 60
'''

EXAMPLES = r'''
- name: Decide
  shadownet.proxmox.forecast:
    plans: "{{ shadownet_result.plans }}"
  register: shadownet_forecast

- name: Act
  shadownet.proxmox.scale:
    plans: "{{ shadownet_result.plans }}"
    decisions: "{{ shadownet_forecast.decisions }}"
    hookscript: local:snippets/shadownet-hook.py
  register: shadownet_scale
'''

RETURN = r'''
results:
  description: One result per decision.
  returned: always
  type: list
  elements: dict
  contains:
    template:
      description: Template name.
      type: str
    service:
      description: Service name.
      type: str
    action:
      description: The decision's action (C(scale_up), C(scale_down), C(none)).
      type: str
    changed:
      description: Whether something was (or in check mode would be) changed.
      type: bool
    applied:
      description: Whether the action was carried out (false in check mode, forecast-only, cooldown or lost race).
      type: bool
    skipped:
      description: C(superseded) (another action was recorded after the decision), C(claimed) (another run won
        the digest-checked claim), C(pending_restart) (vertical mode, an earlier resize of a running primary is
        still pending until its next restart; nothing is written until it has been restarted) or C(in_place)
        (vertical mode, every primary already has the target size as PVE applies it, e.g. memory on the DIMM grid).
      type: str
      returned: when the action was not taken because of another reconciler or a pending resize
    created:
      description: Names of the instances added.
      type: list
      elements: str
    removed:
      description: Names of the instances destroyed.
      type: list
      elements: str
    resized:
      description: Vertical mode, per VM the config changes (C(changes)), the keys removed (C(deletes), e.g.
        C(vcpus)), the size before (C(before)) and the size PVE wrote (C(after), cores and memory MiB, read back
        with the pending values).
      type: list
      elements: dict
    pending:
      description: Vertical mode, per VM the keys PVE keeps pending until the next restart.
      type: list
      elements: dict
    restart_needed:
      description: Vertical mode, the primaries whose new size takes effect only at their next start (reboot them
        through PVE, one at a time).
      type: list
      elements: str
    notes:
      description: Vertical mode, what is pending and why (missing hotplug, numa), and where PVE's rules changed
        the target (memory rounded to the DIMM grid, cores capped at the node's CPUs, vcpus removed, balloon
        lowered).
      type: list
      elements: str
      returned: vertical mode, when acted on
    warnings:
      description: Per new or removed instance, what the run should know (a node skipped by placement, protection
        inherited from the template, a disk a destroy could not free), prefixed by the VM's name; also shown as the
        run's warnings.
      type: list
      elements: str
    mirrors_to_add:
      description: Mirror entries (plan format) the port_mirror role must add for the new instances.
      type: list
      elements: dict
    mirrors_to_remove:
      description: Mirror entries of removed instances.
      type: list
      elements: dict
    vrrp_members_to_add:
      description: VRRP members (vm, index, nic, priority, network, vip, vrid) the vip_failover role must add.
      type: list
      elements: dict
    vrrp_members_to_remove:
      description: VRRP members of removed instances.
      type: list
      elements: dict
    record:
      description: The scaling record written to PVE (action, time, by, from/to or cores/memory, cooldown_until).
      type: dict
      returned: when acted on or in check mode
    reason:
      description: What was done and why, or why not.
      type: str
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling_apply


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plans=dict(type='raw', required=True),
        decisions=dict(type='list', elements='dict', required=True),
        forecast_only=dict(type='bool', default=False),
        state=dict(type='str', default='started', choices=['present', 'started']),
        hookscript=dict(type='str'),
        parallel=dict(type='int', default=4),
        timeout=dict(type='int', default=900),
        shutdown_timeout=dict(type='int', default=60),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    if vm_utils.shutdown_timeout_problem(p['shutdown_timeout']):
        module.fail_json(msg=vm_utils.shutdown_timeout_problem(p['shutdown_timeout']))
    try:
        plans, dummy = scaling.plans_and_templates(p['plans'], None)
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    for decision in p['decisions']:
        if decision.get('template') not in plans or not decision.get('service'):
            module.fail_json(msg='decision {0!r}/{1!r} names no template of the given plans: pass the decisions of '
                                 'shadownet.proxmox.forecast with the same plans'.format(decision.get('template'),
                                                                                         decision.get('service')))

    # Check mode: every decision reads the same unchanged cluster, so each GET is made once per run.
    reads = scaling_apply.CheckModeReads() if module.check_mode else None

    def make_api():
        api = api_utils.PveApi.from_module(module)
        return reads.wrap(api) if reads is not None else api

    results = []
    try:
        api = make_api()
        # One listing for every decision in check mode; a real action re-reads it.
        acting = [d for d in p['decisions'] if d.get('action') not in (None, 'none')]
        listing = api.resources('vm') if module.check_mode and acting else None
        nodes = api.nodes() if module.check_mode and acting else None
        for decision in p['decisions']:
            results.append(scaling_apply.apply_decision(
                api, make_api, plans[decision['template']], decision, check_mode=module.check_mode,
                forecast_only=p['forecast_only'], state=p['state'], hookscript=p['hookscript'],
                timeout=p['timeout'], parallel=max(1, p['parallel']), resources=listing, nodes=nodes,
                shutdown_timeout=p['shutdown_timeout']))
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc, results=results)
    except scaling.ScalingError as exc:
        module.fail_json(msg=str(exc), results=results)
    for result in results:
        for warning in result.get('warnings') or []:
            module.warn('{0}/{1}: {2}'.format(result['template'], result['service'], warning))
    module.exit_json(changed=any(r['changed'] for r in results), results=results)


if __name__ == '__main__':
    main()

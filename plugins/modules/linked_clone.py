#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: linked_clone
short_description: A VM that is a linked clone of a golden template, converged to its desired size, NICs and tags
version_added: 0.1.0
description:
  - Finds the VM by its O(name) (never by guessing; two VMs of that name are an error). When it is absent, clones
    it from the golden O(template) as a linked clone, with a new vmid from C(/cluster/nextid), on O(node) and in
    O(pool). When it is present, converges O(cores), O(memory), the NICs in O(nets), O(tags) (as a set), the
    metadata block in the description (O(meta)) and O(hookscript), with one digest-checked update and a
    before/after diff.
  - NICs are compared as structures, not strings. Existing MAC addresses are kept; a VLAN C(tag) that is not asked
    for is removed; C(link_down) is honoured.
  - On a running VM, PVE applies hot-pluggable changes at once and keeps the others pending until the next start;
    the module lists the pending ones in RV(pending) and warns that they need a reboot (C(cores) always;
    C(memory) without C(memory) hot-plug and NUMA; NIC model or MAC changes without C(network) hot-plug). A rerun
    compares with the pending values, as PVE's GET config answers them, and does not write them again.
  - A failed clone task is reported with PVE's own message, and the half-made VM is removed, so a rerun converges
    without a duplicate or an orphan. If the connection drops while the clone request is in flight, the module
    looks the VM up again instead of cloning a second time.
  - O(state=absent) stops the VM and destroys it with its disks (purge). Any VM whose process runs is stopped
    first (C(running), and also C(paused), C(io-error), C(prelaunch) and the other QMP states, which
    C(/cluster/resources) shows and qemu-server C(destroy_vm) refuses all the same). The stop of an HA resource only asks PVE's
    HA manager, so the module waits (wall clock, O(timeout)) until the VM is off before the destroy, which also
    takes it out of HA and out of the HA rules that name it. Templates are never modified, and a source that is
    not a template is refused.
  - A VM with C(protection) set is refused before any write (PVE's C(destroy_vm) refuses it), naming the VM and the
    fix, C(qm set <vmid> --protection 0), in check mode too, also for O(prune). Warnings of the destroy task (a disk
    PVE could not remove, "check manually") are returned as warnings. A clone of a golden template with
    C(protection) set inherits it (qemu-server C(clone_vm) copies it); the module warns that PVE will refuse to
    destroy that VM.
  - With O(state=started), a VM that is paused (or in another QMP state than C(running)) is not started again
    (PVE refuses it); the module warns. O(state=stopped) stops it.
  - The golden template may live on shared storage that makes linked clones (RBD, NFS, CIFS, ZFS over iSCSI), and the
    clone is made with C(target) on the chosen node. Or it may be copied to each node under the same name (found
    by name, or by the vmid of any copy), and the clone is made from the copy on the chosen node. PVE refuses
    C(target) for a source on non-shared storage (qemu-server C(clone_vm)); such a placement is refused before any write,
    naming the template, its storage and the node, in check mode too.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads only; reports what would be cloned, changed or destroyed and writes nothing.
    support: full
  diff_mode:
    description: Shows the managed settings (cores, memory, NICs, tags, description, hookscript) before and after.
    support: full
options:
  name:
    description:
      - VM name (a DNS label). The identity of the VM.
      - Exactly one of O(name) and O(plan) is required.
    type: str
  plan:
    description:
      - A plan from M(shadownet.proxmox.template) (C(result.plans.<template>)). Every VM of the plan whose role is
        in O(roles) is ensured, independent clones concurrently (O(parallel)).
      - New VMs are placed before the first write, the whole plan at once (VMs of other roles that are missing
        too, virtually), from C(/cluster/resources) node capacity (C(maxmem), C(mem), C(maxcpu), C(cpu)) plus what
        the run places. With the template's C(nodes), the first online node of C(preferred_nodes) that can hold
        the VM (a warning names the VM, the skipped node and the shortfall); without, the online node with the
        fewest VMs of the same service, then the most free memory. A shadow keeps off the nodes its primaries are
        (or will be) on. Offline nodes are never chosen, nor a node in HA maintenance mode (C(hastate) in
        C(/cluster/resources)), which the HA manager is emptying (named in the C(placement) reason; a warning for
        a listed node); when no node can hold a VM, the module fails before any write. RV(vms) gives each new VM's C(placement) reason.
      - The per-VM options (O(template), O(cores), O(nets), ...) then come from the plan and must not be given.
    type: dict
  roles:
    description: With O(plan), which VMs to ensure.
    type: list
    elements: str
    choices: [primary, shadow]
    default: [primary, shadow]
  prune:
    description:
      - With O(plan), destroy the managed VMs of the plan's template (tags C(shadownet) and C(sn-<template>)) that
        the plan no longer has, for the roles in O(roles). Primaries the scaling module added, up to the
        service's C(instances.max), are kept.
    type: bool
    default: false
  parallel:
    description:
      - With O(plan), how many VMs are cloned or converged at the same time; as many more workers start (or stop)
        each VM as soon as it is converged (qemu-server C(vm_start) locks only that VM).
      - At most 4 clones wait for one storage lock at a time. qemu-server C(clone_vm) lets clones of one template
        run concurrently, but pve-storage C(vdisk_clone) clones one disk at a time per storage (cluster-wide for
        shared storage) and a clone that waits over 10 seconds fails; such a clone is tried again (twice).
    type: int
    default: 4
  template:
    description:
      - The golden template, by vmid or by name. Required to create the VM.
    type: raw
  node:
    description:
      - Node to place a new clone on. Defaults to the golden template's node (with a copy per node, the node of
        the copy named by vmid, else the lowest vmid, or the next copy's node when that node has no room).
        Existing VMs are not moved.
    type: str
  pool:
    description: Resource pool for a new clone.
    type: str
  cores:
    description: CPU cores.
    type: int
  memory:
    description: Memory in MiB.
    type: int
  nets:
    description:
      - The VM's NICs; the position in the list is the NIC index (C(net0), C(net1), ...). NICs beyond the list
        are removed. Omit the option to leave NICs alone.
    type: list
    elements: dict
    suboptions:
      bridge:
        description: Bridge or SDN vnet.
        type: str
        required: true
      model:
        description: NIC model.
        type: str
        default: virtio
      tag:
        description: VLAN tag. Omitted means no tag (an existing tag is removed).
        type: int
      link_down:
        description: Disconnect the NIC.
        type: bool
        default: false
      firewall:
        description: Enable the PVE firewall on the NIC.
        type: bool
      macaddr:
        description: MAC address. Omitted keeps the current one (or lets PVE generate one).
        type: str
  tags:
    description: PVE tags, converged as a set (exactly these tags).
    type: list
    elements: str
  meta:
    description:
      - The collection's metadata for this VM, stored as a JSON block between markers in the description.
        Text outside the markers (an operator's notes) is kept.
    type: dict
  hookscript:
    description:
      - Hook script volume, for example C(local:snippets/shadownet-hook.py). An empty string removes it.
      - With O(plan), it is set on primaries only (the hook re-applies their mirrors when they start).
      - PVE lets only root@pam itself set or remove a hookscript, not an API token (qemu-server API2/Qemu.pm
        C($check_vm_modify_config_perm)). So it is sent in its own update after the rest of the VM's settings; with
        an API token nothing of it is sent, the VM is still built and configured, and a warning (in check mode
        too) names the C(qm set <vmid> --hookscript ...) to run as root on a node, or says to run as root@pam with
        O(api_password). The C(shadownet.proxmox.port_mirror) role sets it that way on the mirrored VMs.
    type: str
  state:
    description:
      - C(present) creates and converges; C(started) and C(stopped) also set the power state; C(absent) destroys.
      - For an HA resource PVE only asks the HA manager to start or stop the VM; the module waits until the VM runs
        or is off. A VM that HA holds in its error state (a start failed on every node HA tried) fails the run with
        how to clear that state.
    type: str
    choices: [present, started, stopped, absent]
    default: present
  timeout:
    description: Seconds (wall clock) to wait for each PVE task (clone, start, stop, destroy), and for a stopped VM
      to be off or, for an HA resource, running (the HA manager starts and stops it after its task has ended).
    type: int
    default: 900
  shutdown_timeout:
    description:
      - Seconds a running VM gets to shut down cleanly before it is stopped or destroyed (O(state=stopped),
        O(state=absent), O(prune)), as PVE's own C(qm shutdown --timeout N --forceStop 1) - the ACPI power button,
        or the guest agent's shutdown when the agent is enabled and running - after which PVE terminates it.
        A VM that had to be terminated is named in a warning.
      - V(0) stops the VM at once (C(qm stop)), as a power cut.
      - For an HA resource this is the timeout of HA's stop (C(ha-manager crm-command stop <sid> <timeout>)), which
        the HA manager carries out the same way. O(timeout) is waited on top of it.
    type: int
    default: 60
'''

EXAMPLES = r'''
- name: A primary instance of the web service
  shadownet.proxmox.linked_clone:
    api_host: pve1.example.com
    api_token_id: automation
    api_token_secret: "{{ vault_pve_token }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    name: shop-web-1
    template: 9000
    node: pve1
    pool: shadownet
    cores: 4
    memory: 8192
    nets:
      - bridge: shopnet
    tags: [shadownet, sn-shop, sn-web, sn-primary]
    meta: {role: primary, template: shop, service: web, index: 1}
    state: started

- name: All primaries of a template's plan, cloned four at a time, surplus ones removed
  shadownet.proxmox.linked_clone:
    plan: "{{ shadownet_result.plans.shop }}"
    roles: [primary]
    hookscript: local:snippets/shadownet-hook.py
    prune: true
    state: started

- name: Remove an instance
  shadownet.proxmox.linked_clone:
    name: shop-web-3
    state: absent
'''

RETURN = r'''
vmid:
  description: The VM's id (null in check mode when it would be created).
  returned: always
  type: int
  sample: 101
node:
  description: The node the VM is on (or would be created on).
  returned: always
  type: str
  sample: pve2
placement:
  description: Why a new VM goes (or would go) on RV(node), for example the placement policy, free memory after it
    and the nodes skipped for lack of room.
  returned: when created
  type: str
  sample: "pve2: default placement over the online nodes, fewest web primaries there (0), then most free memory, 61440 MiB free after it"
created:
  description: Whether the VM was (or, in check mode, would be) cloned.
  returned: always
  type: bool
changes:
  description: Config keys that were (or would be) changed.
  returned: when changed
  type: list
  elements: str
  sample: [cores, net1]
pending:
  description: Keys PVE keeps pending until the VM's next start (not hot-pluggable).
  returned: always
  type: list
  elements: str
  sample: [cores]
diff:
  description: Managed settings before and after.
  returned: always
  type: dict
vms:
  description: With O(plan), one result per VM (name, vmid, node, created, placement, changes, pending, or failed
    and msg).
  returned: when plan is given
  type: list
  elements: dict
pruned:
  description: With O(plan) and O(prune), the VMs that were (or would be) destroyed.
  returned: when plan is given
  type: list
  elements: str
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import not_a_plan


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        name=dict(type='str'),
        plan=dict(type='dict'),
        roles=dict(type='list', elements='str', choices=['primary', 'shadow'], default=['primary', 'shadow']),
        prune=dict(type='bool', default=False),
        parallel=dict(type='int', default=4),
        template=dict(type='raw'),
        node=dict(type='str'),
        pool=dict(type='str'),
        cores=dict(type='int'),
        memory=dict(type='int'),
        nets=dict(type='list', elements='dict', options=dict(
            bridge=dict(type='str', required=True),
            model=dict(type='str', default='virtio'),
            tag=dict(type='int'),
            link_down=dict(type='bool', default=False),
            firewall=dict(type='bool'),
            macaddr=dict(type='str'),
        )),
        tags=dict(type='list', elements='str'),
        meta=dict(type='dict'),
        hookscript=dict(type='str'),
        state=dict(type='str', default='present', choices=['present', 'started', 'stopped', 'absent']),
        timeout=dict(type='int', default=900),
        shutdown_timeout=dict(type='int', default=60),
    )
    per_vm = ('name', 'template', 'node', 'pool', 'cores', 'memory', 'nets', 'tags', 'meta')
    module = api_utils.api_module(argument_spec, mutually_exclusive=[('plan', k) for k in per_vm], required_one_of=[('name', 'plan')])
    p = module.params
    if vm_utils.shutdown_timeout_problem(p['shutdown_timeout']):
        module.fail_json(msg=vm_utils.shutdown_timeout_problem(p['shutdown_timeout']))
    if p['plan'] is not None:
        run_plan(module)
    bad_tags = pveapi_tags_error(p['tags'])
    if bad_tags:
        module.fail_json(msg=bad_tags)
    if p['cores'] is not None and p['cores'] < 1:
        module.fail_json(msg='cores must be at least 1 (got {0})'.format(p['cores']))
    if p['memory'] is not None and p['memory'] < 16:
        module.fail_json(msg='memory is in MiB and must be at least 16 (got {0})'.format(p['memory']))
    nets = None
    if p['nets'] is not None:
        nets = []
        for net in p['nets']:
            nets.append(dict((k, v) for k, v in net.items() if v is not None or k == 'tag'))
    spec = vm_utils.VmSpec(p['name'], template=p['template'], node=p['node'], pool=p['pool'], cores=p['cores'],
                           memory=p['memory'], nets=nets, tags=p['tags'], meta=p['meta'], hookscript=p['hookscript'],
                           state=p['state'], timeout=p['timeout'], shutdown_timeout=p['shutdown_timeout'])
    try:
        api = api_utils.PveApi.from_module(module)
        result = vm_utils.VmEngine(api, check_mode=module.check_mode).ensure(spec)
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc)
    warnings = result.pop('warnings', [])
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)


def run_plan(module):
    """Ensure (and optionally prune) every VM of a plan for the selected roles, then exit."""
    p = module.params
    plan = p['plan']
    if not_a_plan(plan):
        module.fail_json(msg=not_a_plan(plan))
    state = 'present' if p['state'] == 'absent' else p['state']
    # Every VM of the plan is placed (the others of roles virtually, where missing), so a shadow built in its own
    # run keeps off where its primaries are or will be, and an infeasible plan fails before its first write.
    everyone = [(vm, vm_utils.spec_from_plan(vm, state=state, hookscript=p['hookscript'], timeout=p['timeout'],
                                             shutdown_timeout=p['shutdown_timeout']))
                for vm in plan['vms']]
    specs = [spec for vm, spec in everyone if vm.get('role') in p['roles']]

    def make_api():
        return api_utils.PveApi.from_module(module)

    try:
        api = make_api()
        if not module.check_mode:
            api.require_quorum()
        results = vm_utils.ensure_many(make_api, specs, check_mode=module.check_mode,
                                       parallel=max(1, p['parallel']), context=[spec for vm, spec in everyone])
        pruned = []
        if p['prune']:
            gone = vm_utils.prune_candidates(api.resources('vm'), plan, p['roles'])
            pruned = vm_utils.remove_many(make_api, gone, check_mode=module.check_mode, timeout=p['timeout'],
                                          shutdown_timeout=p['shutdown_timeout'])
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc)
    diff = dict(before={}, after={})
    for res in results + pruned:
        for warning in res.pop('warnings', []) or []:
            module.warn('{0}: {1}'.format(res.get('name'), warning))
        res_diff = res.pop('diff', None) or {}
        if res.get('changed'):
            diff['before'][res['name']] = res_diff.get('before', {})
            diff['after'][res['name']] = res_diff.get('after', {})
    changed = any(r.get('changed') for r in results + pruned)
    failed = [r for r in results + pruned if r.get('failed')]
    out = dict(changed=changed, vms=results, pruned=[r['name'] for r in pruned if r.get('changed')], diff=diff)
    if failed:
        module.fail_json(msg='{0} of {1} VMs failed: {2}'.format(
            len(failed), len(results) + len(pruned), '; '.join('{0}: {1}'.format(r['name'], r.get('msg'))
                                                               for r in failed)), **out)
    module.exit_json(**out)


def pveapi_tags_error(tags):
    if not tags:
        return None
    bad = propstr.invalid_tags(tags)
    if bad:
        return ('tags {0} are not valid PVE tags: use letters, digits, "_", "+", ".", "-" and start with a letter, '
                'digit or "_"'.format(', '.join(bad)))
    return None


if __name__ == '__main__':
    main()

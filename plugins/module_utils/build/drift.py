# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Drift of a plan against the cluster: what each build step of the shadow_network role would change.

:func:`plan_drift` runs the very engines the build modules run (``sdn.NetworkEngine``, ``vm.ensure_many`` and
``vm.prune_candidates``, ``ha.HaRuleEngine``), all in check mode, in one process and over one set of listings.
So "in sync" here means exactly "every build module would report changed=false", and a converged template is
confirmed with one module run instead of five. Reads only; never writes.
"""


from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import sdn
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils

__all__ = ['STEPS', 'plan_drift']

# The build steps, in the order the shadow_network role runs them.
STEPS = ('primary_networks', 'primaries', 'shadow_networks', 'shadows', 'ha_rules')


def _networks(plan, role):
    return [sdn.normalise_network(n, i) for i, n in enumerate(plan.get('networks') or []) if n.get('role') == role]


def _vm_step(make_api, api, plan, role, resources, nodes, state, hookscript, prune, parallel):
    everyone = [(vm, vm_utils.spec_from_plan(vm, state=state, hookscript=hookscript if vm.get('role') == 'primary'
                                             else None)) for vm in plan.get('vms') or []]
    specs = [spec for vm, spec in everyone if vm.get('role') == role]
    results = vm_utils.ensure_many(make_api, specs, check_mode=True, parallel=parallel,
                                   resources=resources, nodes=nodes, context=[spec for vm, spec in everyone])
    pruned = []
    if prune:
        gone = vm_utils.prune_candidates(resources, plan, [role])
        pruned = vm_utils.remove_many(lambda: api, gone, check_mode=True)
    changes = []
    for what, batch in (('update', results), ('destroy', pruned)):
        for res in batch:
            if res.get('failed'):
                changes.append('{0}: {1}'.format(res.get('name'), res.get('msg')))
            elif res.get('changed'):
                detail = ', '.join(str(c) for c in res.get('changes') or [])
                verb = 'create' if res.get('created') else what
                changes.append('{0} {1}{2}'.format(verb, res.get('name'), ' ({0})'.format(detail) if detail else ''))
    return dict(in_sync=not changes, changes=changes), results


def plan_drift(make_api, plan, state='started', hookscript=None, prune=True, ha_rules=True, parallel=4):
    """Compare a plan (docs/plan.md) with the cluster (VM configs read by ``parallel`` connections). Returns a dict:

    ``in_sync`` (every step in sync), ``steps`` ({step: {in_sync, changes}} for :data:`STEPS`; a step that does not
    apply is in sync with no changes), ``vms`` (the per-VM check-mode results, primaries then shadows).
    """
    api = make_api()
    resources = api.resources('vm')
    nodes = api.nodes()
    steps = {}
    vms = []
    for step, role in (('primary_networks', 'primary'), ('shadow_networks', 'shadow')):
        networks = _networks(plan, role)
        if not networks:
            steps[step] = dict(in_sync=True, changes=[])
            continue
        res = sdn.NetworkEngine(api, check_mode=True).converge(networks)
        steps[step] = dict(in_sync=not res['changed'], changes=list(res['changes']))
    for step, role in (('primaries', 'primary'), ('shadows', 'shadow')):
        steps[step], results = _vm_step(make_api, api, plan, role, resources, nodes, state, hookscript, prune,
                                        parallel)
        vms.extend(results)
    if not ha_rules:
        steps['ha_rules'] = dict(in_sync=True, changes=[])
    elif any(r.get('created') or r.get('failed') for r in vms):
        # Rules name VMs by vmid; VMs still to be created have none, so the rules cannot be compared yet.
        steps['ha_rules'] = dict(in_sync=False, changes=['resolved once the missing VMs exist'])
    else:
        rules = [ha.normalise_rule(r, plan['template'], i) for i, r in enumerate(plan.get('ha_rules') or [])]
        res = ha.HaRuleEngine(api, check_mode=True).converge(plan['template'], rules)
        steps['ha_rules'] = dict(in_sync=not res['changed'], changes=list(res['changes']))
    return dict(in_sync=all(s['in_sync'] for s in steps.values()), steps=steps, vms=vms)

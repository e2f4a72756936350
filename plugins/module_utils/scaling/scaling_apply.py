# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Predictive scaling, acting: one decision of ``scaling.forecast_plan`` carried out in PVE (the ``scale`` module).

``scaling.py`` reads PVE and the history and decides; this module acts. State that another controller needs lives
in PVE: the last scaling action and the cooldown deadlines are the ``scaling`` key of the metadata block in the
description of the service's primaries (module_utils/core/meta.py). Before acting, ``scale`` *claims* the action on the
anchor primary (the lowest-index one) with a digest-checked config update whose computation re-checks that no other
action was recorded since the decision was made. Two reconcilers that race both read the same digest; PVE accepts
only the first update, the second is re-read, finds the first one's record and stands down. Only the claim winner
clones, destroys or resizes.
"""

from __future__ import annotations

import copy
import math
import os
import re
import socket
import threading
import time
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import placement as placement_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.scaling import (
    LAST_TAG, ScalingError, capacity_from_resources, instance_index, last_action_tag, node_cpus, read_state,
    scaling_entry, service_vms, state_from_tags,
)

if t.TYPE_CHECKING:
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi

__all__ = ['apply_decision', 'claim', 'new_instance_vm', 'wiring_for', 'vertical_changes', 'pending_resizes',
           'hotplug_features', 'effective_cores', 'is_running', 'static_memory', 'dimm_grid', 'hotplug_memory',
           'applied_size', 'node_cpus', 'ScalingError']

FORECAST_ONLY = '[forecast-only: not acted on] '


# ------------------------------------------------------------------------------------ what to change (pure)

def effective_cores(cfg: dict[str, t.Any]) -> int:
    """The vCPUs a VM config gives: ``vcpus`` when set, else cores x sockets."""
    if cfg.get('vcpus') not in (None, ''):
        return int(cfg['vcpus'])
    return int(cfg.get('cores', 1)) * int(cfg.get('sockets', 1))


def _base_vm(plan, service, prim_names):
    candidates = [v for v in plan.get('vms') or [] if v.get('service') == service and v.get('role') == 'primary']
    if not candidates:
        raise ScalingError('the plan has no primary of service {0!r} to copy'.format(service))
    return sorted(candidates, key=lambda v: v['index'])[0]


def new_instance_vm(plan: dict[str, t.Any], entry: dict[str, t.Any], base: dict[str, t.Any],
                    index: int) -> dict[str, t.Any]:
    """The plan-style vm entry of added instance ``index``: as the first primary, renamed, meta scaled: true."""
    vm = dict(base)
    vm['name'] = entry['name_prefix'] + str(index)
    vm['index'] = index
    vm['meta'] = dict(base.get('meta') or {}, index=index, scaled=True)
    nodes = list(base.get('preferred_nodes') or [])
    if nodes:
        shift = (index - base['index']) % len(nodes)
        vm['preferred_nodes'] = nodes[shift:] + nodes[:shift]
        vm['node'] = vm['preferred_nodes'][0]
    vm['shadows'] = []
    return vm


def wiring_for(plan: dict[str, t.Any], service: str, base_name: str,
               added: list[tuple[str, int]]) -> tuple[list[dict[str, t.Any]], list[dict[str, t.Any]]]:
    """Mirrors and VRRP members the port_mirror / vip_failover roles must add (or drop) for these instances."""
    mirrors, members = [], []
    for name, index in added:
        for m in plan.get('mirrors') or []:
            if m.get('service') == service and m['source']['vm'] == base_name:
                mirrors.append(dict(m, source=dict(m['source'], vm=name)))
        for group in plan.get('vrrp') or []:
            if group.get('service') != service:
                continue
            proto = next((x for x in group['members'] if x['vm'] == base_name), None)
            if proto is None:
                continue
            members.append(dict(vm=name, role='primary', index=index, nic=proto['nic'], network=group['network'],
                                vip=group['vip'], vrid=group['vrid'],
                                priority=group['priority_base'] - group['priority_step'] * (index - 1)))
    return mirrors, members


# qemu-server src/PVE/QemuServer/Memory.pm: $STATICMEM, the memory a VM with memory hot-plug boots with before
# its DIMMs (times the sockets with 1 GiB hugepages).
STATIC_MEMORY = 1024
# Memory.pm foreach_dimm: 8 rounds of 32 DIMMs, 512 MiB each in the first (1024 MiB with 1 GiB hugepages), the
# DIMM size doubling every round.
DIMM_ROUNDS, DIMMS_PER_ROUND = 8, 32


def is_running(vm: dict[str, t.Any]) -> bool:
    """True for a VM whose QEMU process runs (``placement.process_runs``: a paused VM reads ``paused``), into which
    PVE hot-plugs (or keeps changes pending) as into any running VM (qemu-server check_running)."""
    return bool(placement_utils.process_runs(vm.get('status')))


def _hugepages_1g(cfg):
    return str(cfg.get('hugepages', '')).strip() == '1024'


def static_memory(cfg: dict[str, t.Any]) -> int:
    """The memory (MiB) a VM with memory hot-plug has before its DIMMs; also its minimum (Memory.pm ``config``:
    "minimum memory must be ...MB"; qemu_memory_hotplug: "memory can't be lower than ... MB")."""
    return STATIC_MEMORY * int(cfg.get('sockets') or 1) if _hugepages_1g(cfg) else STATIC_MEMORY


def dimm_grid(cfg: dict[str, t.Any]) -> list[int]:
    """The memory sizes (MiB) a VM with memory hot-plug can have: the static memory plus whole DIMMs in
    Memory.pm foreach_dimm's order. A start with another size dies ("memory size (M) must be aligned to D for
    hotplugging"); a hot-add on a running VM adds DIMMs up to the first size at or above the value asked for and
    writes that size; a hot-remove unplugs DIMMs down to the first size at or below it."""
    size = 1024 if _hugepages_1g(cfg) else 512
    current = static_memory(cfg)
    out = [current]
    for dummy in range(DIMM_ROUNDS):
        for dummy2 in range(DIMMS_PER_ROUND):
            current += size
            out.append(current)
        size *= 2
    return out


def hotplug_memory(cfg: dict[str, t.Any], memory: int) -> int:
    """``memory`` (MiB) rounded up to the DIMM grid of ``cfg`` (at least its static memory): the size PVE starts a
    VM with memory hot-plug with, and the size a hot-add or hot-remove to it ends at, so a rerun finds it in place."""
    for size in dimm_grid(cfg):
        if size >= memory:
            return size
    raise ScalingError('memory {0} MiB is above the largest size memory hot-plug reaches ({1} MiB, qemu-server '
                       'Memory.pm foreach_dimm): lower the scaling max_memory'.format(memory, dimm_grid(cfg)[-1]))


def _numa(cfg):
    return str(cfg.get('numa', '0')) in ('1', 'true')


def vertical_changes(cfg: dict[str, t.Any], running: bool, cores: int, memory: int,
                     current: dict[str, t.Any] | None = None,
                     node_cpus: int | None = None) -> tuple[dict[str, int], list[str], list[str]]:
    """``(changes, deletes, notes)`` to resize one VM to ``cores`` vCPUs and ``memory`` MiB; notes say what PVE
    applies instead of the target, and what stays pending until a restart and why.

    ``cfg`` is GET config (PVE's pending values applied: what the next start uses); ``current`` the running config
    (GET config with ``current=1``; ``cfg`` when not given), which qemu-server's hot-plug decisions look at
    (vmconfig_hotplug_pending); ``node_cpus`` the CPUs of the VM's node (no start with more: qemu-server
    config_to_command "MAX n vcpus allowed per VM on this node").
    """
    current = cfg if current is None else current
    changes, deletes, notes = {}, [], []
    live = hotplug_features(current) if running else set()
    sockets = int(cfg.get('sockets') or 1)
    if node_cpus and int(math.ceil(cores / float(sockets))) * sockets > int(node_cpus) >= sockets:
        cap = int(node_cpus) // sockets * sockets
        notes.append('cores {0} capped at {1}: the node has {2} CPUs and PVE starts no VM with more sockets x cores '
                     '("MAX {2} vcpus allowed per VM on this node", qemu-server config_to_command)'.format(
                         cores, cap, node_cpus))
        cores = cap
    # qemu_cpu_hotplug counts against the running sockets x cores ("you can't add more vcpus than maxcpus")
    running_max = int(current.get('cores') or 1) * int(current.get('sockets') or 1)
    configured = min(int(cfg.get('cores') or 1) * sockets, running_max)
    if effective_cores(cfg) != cores:
        if running and 'cpu' in live and cores <= configured:
            changes['vcpus'] = cores
        else:
            changes['cores'] = int(math.ceil(cores / float(sockets)))
            if 'vcpus' in cfg:
                if running and 'cpu' in live:
                    # A vcpus above the running maxcpus fails the whole PUT (400, hotplug problem); deleting it
                    # hot-plugs up to the running maxcpus now and runs cores x sockets after the restart.
                    deletes.append('vcpus')
                else:
                    changes['vcpus'] = cores
            if changes.get('cores') == int(cfg.get('cores') or 1) and not deletes and 'vcpus' not in changes:
                # sockets x cores cannot give the target without vcpus (3 on 2 sockets): it has the nearest above
                del changes['cores']
            elif running:
                notes.append('cores {0} pending until the next restart, needs a reboot ({1})'.format(
                    changes['cores'] * sockets if deletes else cores, 'hotplug lacks cpu' if 'cpu' not in live
                    else 'more than the {0} cores it runs with; {1}'.format(
                        running_max, 'vcpus removed: it hot-plugs up to {0} now'.format(running_max) if deletes
                        else 'raise cores and set vcpus to hot-plug later')))
    want = memory
    grid_cfg = current if running and 'memory' in live else cfg
    if 'memory' in hotplug_features(cfg) or 'memory' in live:
        want = hotplug_memory(grid_cfg, memory)
        if want != memory:
            notes.append('memory {0} MiB rounded to {1} MiB: with memory hot-plug PVE runs {2} MiB static memory '
                         'plus whole DIMMs (qemu-server Memory.pm foreach_dimm)'.format(memory, want,
                                                                                        static_memory(grid_cfg)))
    if propstr.parse_memory(cfg.get('memory', 512)) != want:
        changes['memory'] = want
        if running and not ('memory' in live and _numa(current)):
            notes.append('memory {0} MiB pending until the next restart, needs a reboot (hot-plug needs hotplug with '
                         'memory and numa=1)'.format(want))
    balloon = cfg.get('balloon')
    if balloon not in (None, '') and int(balloon) > want:
        # qemu-server API2/Qemu.pm update_vm_api: "balloon value too large (must be smaller than assigned memory)"
        changes['balloon'] = want
        notes.append('balloon {0} MiB lowered to the new memory {1} MiB'.format(int(balloon), want))
    return changes, deletes, notes


def applied_size(cfg: dict[str, t.Any], changes: dict[str, int], deletes: list[str]) -> dict[str, int]:
    """The size (cores, memory MiB) ``cfg`` gives once ``changes`` and ``deletes`` are written."""
    after = dict(cfg, **changes)
    for key in deletes:
        after.pop(key, None)
    return dict(cores=effective_cores(after), memory=propstr.parse_memory(after.get('memory', 512)))


def pending_resizes(primaries: list[dict[str, t.Any]],
                    configs: dict[str, dict[str, t.Any]]) -> list[tuple[str, list[str], str]]:
    """``[(name, keys, what)]`` of running primaries whose configuration (GET config, with PVE's pending values)
    has another size than the one they run with (/cluster/resources ``maxcpu``, ``maxmem``: the running config, as
    qemu-server ``vmstatus`` reports it): a resize PVE keeps pending until the VM's next start."""
    out = []
    for vm in primaries:
        cfg = configs.get(vm['name'])
        if cfg is None or not is_running(vm):
            continue
        cores, memory = capacity_from_resources(vm)
        keys, what = [], []
        if effective_cores(cfg) != cores:
            keys.append('cores')
            what.append('cores {0} -> {1}'.format(cores, effective_cores(cfg)))
        want_memory = propstr.parse_memory(cfg.get('memory', 512))
        if want_memory != memory:
            keys.append('memory')
            what.append('memory {0} -> {1} MiB'.format(memory, want_memory))
        if keys:
            out.append((vm['name'], keys, ', '.join(what)))
    return out


def hotplug_features(cfg: dict[str, t.Any]) -> set[str]:
    """The hot-plug features a VM config enables (PVE's default: network, disk, usb)."""
    value = str(cfg.get('hotplug', 'network,disk,usb'))
    if value == '0':
        return set()
    if value == '1':
        value = 'network,disk,usb'
    return set(v for v in re.split(r'[,;\s]+', value) if v)


def _iso(ts):
    if ts is None:
        return 'unknown time'
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(ts)))


def _run_id():
    return '{0}:{1}'.format(socket.gethostname(), os.getpid())


# ------------------------------------------------------------------------------------------------ acting

def claim(api: PveApi, anchor: dict[str, t.Any], decision: dict[str, t.Any],
          record: dict[str, t.Any]) -> dict[str, t.Any] | None:
    """Record ``record`` as the service's last action on the anchor primary, only if nothing else was recorded
    since the decision's basis. Digest-checked: a concurrent writer makes PVE refuse our PUT; the re-read then
    shows its record and we stand down.

    Returns None when this run owns the action (its record is written), else the competing record (a dict with
    ``action``, ``time`` and ``by``) that was written after the decision's basis: the caller stands down."""
    basis = decision.get('basis_time')
    outcome = {}

    def compute(cfg):
        dummy, meta = meta_utils.parse_description(cfg.get('description', ''))
        rec = (meta or {}).get('scaling') or {}
        seen = rec.get('time') if isinstance(rec, dict) else None
        if seen is not None and (basis is None or float(seen) > float(basis)):
            outcome['lost'] = rec
            return {}, []
        new, dummy, changed = meta_utils.merge_description(cfg.get('description', ''), {'scaling': record})
        tags = set(tag for tag in propstr.parse_tags(cfg.get('tags')) if not LAST_TAG.match(tag))
        tags.add(last_action_tag(record['action'], record['time']))
        updates = {'tags': propstr.format_tags(tags)}
        if changed:
            updates['description'] = new
        return updates, []

    api.update_vm_config(anchor['node'], anchor['vmid'], compute)
    return outcome.get('lost')


class CheckModeReads(object):
    """One answer per GET for every decision of a check-mode run (nothing changes in PVE in check mode).

    Each acting decision places its new instances (core/vm.py ``resolve_placements``: ``/storage``, the node
    capacities, the golden templates' configs); in check mode every decision reads the same unchanged cluster, so
    those reads are made once per run instead of once per service (a reconcile of 5,000 VMs in which 20 services
    scale: 6 PVE requests instead of 63). :meth:`wrap` makes a PveApi's ``get`` answer from the shared cache; the
    answers are deep copies, so no caller sees another's changes. Never used for a real run.
    """

    def __init__(self):
        self._answers = {}
        self._lock = threading.Lock()

    def wrap(self, api: PveApi) -> PveApi:
        read = api.get

        def get(path, **params):
            key = (str(path).strip('/'), tuple(sorted((k, str(v)) for k, v in params.items() if v is not None)))
            with self._lock:
                if key in self._answers:
                    return copy.deepcopy(self._answers[key])
            answer = read(path, **params)
            with self._lock:
                self._answers.setdefault(key, answer)
            return copy.deepcopy(answer)
        api.get = get
        return api


def apply_decision(api: PveApi, make_api: t.Callable[[], PveApi], plan: dict[str, t.Any], decision: dict[str, t.Any],
                   check_mode: bool = False, forecast_only: bool = False, state: str = 'started',
                   hookscript: str | None = None, timeout: int = 900, parallel: int = 4, now: float | None = None,
                   resources: list[dict[str, t.Any]] | None = None,
                   nodes: list[dict[str, t.Any]] | None = None, shutdown_timeout: int = 0) -> dict[str, t.Any]:
    """Act on one decision of forecast_plan. Returns a result dict (changed, applied, reason, ...).

    ``resources`` / ``nodes``: listings to reuse in check mode; a real action always reads them afresh.
    ``shutdown_timeout``: seconds a removed instance gets to shut down before PVE stops it (0: stop at once).
    """
    now = time.time() if now is None else now
    service = decision['service']
    entry = scaling_entry(plan, service)
    res = dict(template=plan['template'], service=service, mode=entry['mode'], action=decision.get('action'),
               changed=False, applied=False, created=[], removed=[], resized=[], pending=[], restart_needed=[],
               mirrors_to_add=[], mirrors_to_remove=[], vrrp_members_to_add=[], vrrp_members_to_remove=[],
               warnings=[], reason=decision.get('reason', ''))
    if decision.get('action') in (None, 'none'):
        return res
    if forecast_only or decision.get('forecast_only') or not decision.get('act'):
        res['reason'] = FORECAST_ONLY + res['reason'].replace(FORECAST_ONLY, '')
        return res
    if resources is None or not check_mode:
        resources = api.resources('vm')
    prim, dummy = service_vms(resources, plan, service)
    if not prim:
        res['reason'] = 'no primaries of this service in the cluster: nothing to scale'
        return res
    st, configs = _recorded_state(api, prim, entry, check_mode)
    if _superseded(res, decision, st):
        return res
    want = int((decision.get('target') or {}).get('instances', len(prim))) if entry['mode'] == 'horizontal' else None
    if _nothing_to_do(res, entry, prim, configs, want):
        return res
    cpus = node_cpus(api.get('nodes')) if entry['mode'] == 'vertical' else {}
    if _vertical_in_place(res, entry, prim, configs, decision, cpus):
        return res
    record = _action_record(decision, entry, now, len(prim), want)
    res['changed'] = True
    res['record'] = record
    if not check_mode and _claim_lost(api, prim[0], decision, record, res):
        return res
    if entry['mode'] == 'horizontal':
        _apply_horizontal(api, make_api, plan, entry, prim, want, res, check_mode, state, hookscript,
                          (timeout, shutdown_timeout), parallel,
                          listings=(resources, nodes) if check_mode else (None, None))
    else:
        _apply_vertical(api, prim, configs, decision.get('target') or {}, res, check_mode, cpus)
    res['applied'] = not check_mode
    return res


def _recorded_state(api, prim, entry, check_mode):
    """(last recorded action, configs of the primaries): from the listing's tags in check mode, where nothing will
    be written (a vertical decision still needs the configs), else from the metadata blocks."""
    if check_mode:
        configs = {}
        if entry['mode'] == 'vertical':
            configs = dict((vm['name'], api.vm_config(vm['node'], vm['vmid'])[0]) for vm in prim)
        return state_from_tags(prim, entry), configs
    return read_state(api, prim)


def _superseded(res, decision, st):
    """True, with the reason in ``res``, when another run recorded an action after the decision's basis."""
    basis = decision.get('basis_time')
    if st.get('time') is not None and (basis is None or float(st['time']) > float(basis)):
        res['reason'] = ('not acted on: another reconciler recorded {0} at {1} after this decision was based on '
                         'PVE state ({2})'.format(st.get('action'), _iso(st['time']), st.get('by', 'unknown')))
        res['skipped'] = 'superseded'
        return True
    return False


def _nothing_to_do(res, entry, prim, configs, want):
    """True, with the reason in ``res``, when the service already has ``want`` instances or, vertical, when an
    earlier resize is still pending."""
    if entry['mode'] == 'horizontal':
        if want == len(prim):
            res['reason'] = 'already {0} instances'.format(len(prim))
            return True
        return False
    waiting = pending_resizes(prim, configs)
    if waiting:
        # The forecast sees the size the primaries run with; another resize would only rewrite a pending one.
        res['pending'] = [dict(name=name, keys=keys) for name, keys, dummy in waiting]
        res['restart_needed'] = [name for name, dummy, dummy2 in waiting]
        res['skipped'] = 'pending_restart'
        res['reason'] = ('not acted on: an earlier resize is still pending until the next restart (needs a reboot): '
                         '{0}; restart these primaries (one at a time) to apply it'.format(
                             '; '.join('{0}: {1}'.format(name, what) for name, dummy, what in waiting)))
        return True
    return False


def _vertical_in_place(res, entry, prim, configs, decision, cpus):
    """True, with the reason in ``res``, when a vertical target changes no primary once PVE's rules are applied (a
    memory target rounded to the DIMM grid the primaries already have, cores capped at the node's CPUs): nothing is
    claimed or written."""
    if entry['mode'] != 'vertical' or not configs:
        return False
    target = decision.get('target') or {}
    cores, memory = int(target['cores']), int(target['memory'])
    for vm in prim:
        cfg = configs.get(vm['name'])
        if cfg is None or any(vertical_changes(cfg, is_running(vm), cores, memory,
                                               node_cpus=cpus.get(vm.get('node')))[:2]):
            return False
    res['skipped'] = 'in_place'
    res['reason'] = '{0}; not acted on: every primary already has this size as PVE applies it (memory hot-plug ' \
        'takes whole DIMMs)'.format(res['reason'])
    return True


def _action_record(decision, entry, now, n, want):
    """The record of this action: written on the anchor by the claim, and returned as ``record``."""
    now = int(now)  # whole seconds: the record's time is also in the anchor's sn-last tag
    record = dict(action=decision['action'], time=now, by=_run_id(), mode=entry['mode'],
                  cooldown_until={'up': now + entry['cooldown']['up_seconds'],
                                  'down': now + entry['cooldown']['down_seconds']})
    if entry['mode'] == 'horizontal':
        record.update({'from': n, 'to': want})
    else:
        target = decision.get('target') or {}
        record.update(cores=int(target['cores']), memory=int(target['memory']))
    return record


def _claim_lost(api, anchor, decision, record, res):
    """Claim the action (after a quorum check); True, with the reason in ``res``, when another run claimed it."""
    api.require_quorum()
    lost = claim(api, anchor, decision, record)
    if lost:
        res.update(changed=False, skipped='claimed', reason='not acted on: another reconciler claimed this '
                   'scaling action first ({0} at {1} by {2})'.format(lost.get('action'), _iso(lost.get('time')),
                                                                     lost.get('by', 'unknown')))
    return bool(lost)


def _apply_horizontal(api, make_api, plan, entry, prim, want, res, check_mode, state, hookscript, timeouts, parallel,
                      listings=(None, None)):
    """``timeouts``: (each PVE task's, a removed instance's shutdown)."""
    timeout, shutdown_timeout = timeouts
    service = entry['service']
    indexed = [(instance_index(v['name'], plan, service), v) for v in prim]
    base = _base_vm(plan, service, [v['name'] for v in prim])
    if want > len(prim):
        _scale_out(make_api, plan, entry, base, indexed, want - len(prim), res, check_mode,
                   dict(state=state, hookscript=hookscript, timeout=timeout), parallel, listings)
    else:
        _scale_in(api, make_api, plan, entry, base, indexed, len(prim) - want, res, check_mode, timeouts, listings)


def _scale_out(make_api, plan, entry, base, indexed, count, res, check_mode, spec_options, parallel, listings):
    """Clone ``count`` instances after the highest index, as copies of the service's first primary."""
    service = entry['service']
    top = max([i for i, v in indexed if i is not None] or [0])
    added = [(entry['name_prefix'] + str(top + k), top + k) for k in range(1, count + 1)]
    specs = []
    for name, index in added:
        spec = vm_utils.spec_from_plan(new_instance_vm(plan, entry, base, index), **spec_options)
        if entry.get('shadow'):
            spec.avoid_vms = [entry['shadow']]  # keep the shadow's spread: not on the shadow's node
        specs.append(spec)
    results = vm_utils.ensure_many(make_api, specs, check_mode=check_mode, parallel=parallel,
                                   resources=listings[0], nodes=listings[1])
    failed = [r for r in results if r.get('failed')]
    res['warnings'].extend(_warnings_of(results))
    res['created'] = [r['name'] for r in results if r.get('created') and not r.get('failed')]
    res['instances'] = [dict(name=r['name'], vmid=r.get('vmid'), node=r.get('node')) for r in results]
    res['mirrors_to_add'], res['vrrp_members_to_add'] = wiring_for(plan, service, base['name'], added)
    if failed:
        raise ScalingError('scale-out of {0}/{1} failed for {2}'.format(
            plan['template'], service, '; '.join('{0}: {1}'.format(r['name'], r.get('msg')) for r in failed)))
    res['reason'] = '{0}: added {1}'.format(res['reason'], ', '.join(n for n, i in added))


def _scale_in(api, make_api, plan, entry, base, indexed, count, res, check_mode, timeouts, listings):
    """Remove the ``count`` highest indexes (the anchor, the lowest index, stays), each shut down first."""
    timeout, shutdown_timeout = timeouts
    service = entry['service']
    order = sorted(indexed, key=lambda iv: (iv[0] is None, iv[0] or 0), reverse=True)
    gone = [v for i, v in order[:count]]
    removed = [(v['name'], instance_index(v['name'], plan, service) or 0) for v in gone]
    listing = listings[0] if listings[0] is not None else api.resources('vm')
    resources = [r for r in listing if r.get('name') in set(v['name'] for v in gone)]
    results = vm_utils.remove_many(make_api, resources, check_mode=check_mode, timeout=timeout,
                                   shutdown_timeout=shutdown_timeout)
    failed = [r for r in results if r.get('failed')]
    res['warnings'].extend(_warnings_of(results))
    res['removed'] = [r['name'] for r in results if r.get('changed')]
    res['mirrors_to_remove'], res['vrrp_members_to_remove'] = wiring_for(plan, service, base['name'], removed)
    if failed:
        raise ScalingError('scale-in of {0}/{1} failed for {2}'.format(
            plan['template'], service, '; '.join('{0}: {1}'.format(r['name'], r.get('msg')) for r in failed)))
    res['reason'] = '{0}: removed {1}'.format(res['reason'], ', '.join(n for n, i in removed))


def _warnings_of(results: list[dict[str, t.Any]]) -> list[str]:
    """Each VM's warnings (placement skips, protection inherited, a disk a destroy left), named by VM."""
    return [w if str(w).startswith(str(r.get('name'))) else '{0}: {1}'.format(r.get('name'), w)
            for r in results for w in r.get('warnings') or []]


def _apply_vertical(api, prim, configs, target, res, check_mode, cpus):
    cores, memory = int(target['cores']), int(target['memory'])
    notes = []
    for vm in prim:
        running = is_running(vm)
        path = 'nodes/{0}/qemu/{1}'.format(vm['node'], vm['vmid'])
        # qemu-server's hot-plug decisions look at the running config, GET config without current=1 has the
        # pending values applied
        current = api.get(path + '/config', current=1) if running else None

        def compute(cfg, running=running, current=current, vm=vm):
            changes, deletes, vm_notes = vertical_changes(cfg, running, cores, memory, current=current,
                                                          node_cpus=cpus.get(vm['node']))
            compute.notes = vm_notes
            compute.size = applied_size(cfg, changes, deletes)
            return changes, deletes
        compute.notes, compute.size = [], None
        before, changes, deletes = api.update_vm_config(vm['node'], vm['vmid'], compute, check_mode=check_mode)
        if changes or deletes:
            entry = dict(name=vm['name'], changes=changes,
                         before=dict(cores=effective_cores(before),
                                     memory=propstr.parse_memory(before.get('memory', 512))),
                         after=compute.size)
            if deletes:
                entry['deletes'] = sorted(deletes)
            res['resized'].append(entry)
            notes.extend('{0}: {1}'.format(vm['name'], note) for note in compute.notes)
            if not check_mode:
                _read_back(api, path, vm, running, entry, res, notes)
    res['notes'] = notes
    if notes:
        res['reason'] = '{0}; {1}'.format(res['reason'], '; '.join(notes))


def _read_back(api, path, vm, running, entry, res, notes):
    """The size PVE wrote (GET pending: the config and its pending values), into ``entry['after']``; a running
    VM's pending keys into ``res``."""
    pending = api.get(path + '/pending') or []
    values = dict((p['key'], p.get('pending', p.get('value'))) for p in pending if not p.get('delete'))
    after = dict(cores=effective_cores(values), memory=propstr.parse_memory(values.get('memory', 512)))
    if after != entry['after']:
        notes.append('{0}: PVE wrote {1} cores, {2} MiB (asked for {3} cores, {4} MiB)'.format(
            vm['name'], after['cores'], after['memory'], entry['after']['cores'], entry['after']['memory']))
    entry['after'] = after
    keys = sorted(p['key'] for p in pending if 'pending' in p or p.get('delete'))
    if running and keys:
        res['pending'].append(dict(name=vm['name'], keys=keys))
        res['restart_needed'].append(vm['name'])

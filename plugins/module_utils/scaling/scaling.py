# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Predictive scaling, reading and deciding: PVE metrics -> history -> forecast -> policy per service.

Used by the ``metrics`` and ``forecast`` modules, and by ``scaling_apply`` (the ``scale`` module), which acts on
the decisions. The decision itself is ``policy.decide`` and the forecast ``forecast.forecast_series``; this module
gathers their inputs (the VMs of a service, the last recorded action, the history) and summarises their output.
Nothing here writes to PVE.

The last scaling action and its cooldown deadlines live in PVE: the ``scaling`` key of the metadata block in the
description of the service's primaries (module_utils/core/meta.py), and a ``sn-last.<action>.<epoch>`` tag on the
anchor primary; ``scaling_apply`` writes both when it claims an action.
"""

from __future__ import annotations

import os
import re
import time
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import canary as canary_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr

if t.TYPE_CHECKING:
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import HistoryStore

DEFAULT_HISTORY = os.path.join('~', '.local', 'share', 'shadownet', 'history.sqlite')
HISTORY_ENV = 'SHADOWNET_HISTORY'
STEP = metrics_utils.RRD_STEP
DEFAULT_WINDOW = 7 * 86400
POLICY_SERIES = '_policy'
MIB = 1024 * 1024
# The metrics the seed rule compares between the live canary (the shadow) and the primaries.
CANARY_METRICS = ('cpu',)


class ScalingError(Exception):
    """Inputs that cannot be used (bad plans, history store problems); the message says what to fix."""


# ---------------------------------------------------------------------------------------------- inputs

def history_path(option: str | None = None) -> str:
    return os.path.expanduser(option or os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY)


def open_history(path: str) -> HistoryStore:
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history
    try:
        return history.open_store(path)
    except history.HistoryError as exc:
        raise ScalingError(str(exc))


def plans_and_templates(plans_option: t.Any,
                        templates_option: list[str] | None) -> tuple[dict[str, dict[str, t.Any]], list[str]]:
    plans = metrics_utils.plans_from_option(plans_option)
    templates = list(templates_option or sorted(plans))
    if not templates:
        raise ValueError('no template given: pass plans (result.plans of shadownet.proxmox.template) or templates')
    return plans, templates


# --------------------------------------------------------------------------------------------- metrics

def history_complete(store: HistoryStore, now: float | None = None) -> t.Callable[[dict[str, t.Any]], bool]:
    """``complete(vm)`` for metrics.collect: True when the store already holds the VM's last day of cpu points
    without a hole PVE's ``hour`` would not fill (then reading ``hour`` is enough)."""
    now = time.time() if now is None else now
    day = metrics_utils.HISTORY_SECONDS

    def complete(vm):
        first, last, count = store.span(metrics_utils.series_key(vm['template'], vm['service'], vm['name'], 'cpu'),
                                        since=now - day)
        if first is None:
            return False
        return (last >= now - 45 * 60 and first <= now - day + 2 * 3600
                and count >= 0.9 * (last - first) / STEP)
    return complete


def run_metrics(api: PveApi, templates: list[str], plans: dict[str, dict[str, t.Any]], path: str | None,
                parallel: int = 4, check_mode: bool = False, backend: str = 'sqlite') -> dict[str, t.Any]:
    """Collect, append to history (backend sqlite, not in check mode), summarise.

    With a stateless backend (pve, prometheus: the forecast reads its own history) nothing is kept, and every VM is
    read with ``hour`` only (the newest values are all the summary needs)."""
    if backend != 'sqlite':
        vms, errors = metrics_utils.collect(api, templates, plans, parallel=parallel, complete=lambda vm: True)
        return dict(services=metrics_utils.summarise(vms), appended=0, history_path=None, backend=backend,
                    requests=len(api.calls), errors=errors)
    if check_mode:
        # The history is not opened (it would be created): every VM is read with its full day.
        vms, errors = metrics_utils.collect(api, templates, plans, parallel=parallel)
        appended = 0
    else:
        with open_history(path) as store:
            vms, errors = metrics_utils.collect(api, templates, plans, parallel=parallel,
                                                complete=history_complete(store))
            fine, filled = [], []
            for vm in vms:
                fine.extend(metrics_utils.history_points(vm, vm['points']))
                filled.extend(metrics_utils.history_points(vm, vm['points'], filled=True))
            appended = store.append(fine) + store.append(filled, replace=False)
    return dict(services=metrics_utils.summarise(vms), appended=appended, history_path=path, backend=backend,
                requests=len(api.calls), errors=errors)


def forecast_with_history(api: PveApi, plans: dict[str, dict[str, t.Any]], config: dict[str, t.Any],
                          window: int = DEFAULT_WINDOW, parallel: int = 4, check_mode: bool = False,
                          now: float | None = None, services: list[str] | None = None,
                          **options: t.Any) -> tuple[list[dict[str, t.Any]], dict[str, t.Any]]:
    """The forecast module's run: list the VMs once, load the window of history of the services' VMs from the
    configured backend (history_backends), decide per service, say in each line how much history it had.

    The services are taken in batches of about ``history_backends.BATCH_VMS`` VMs (all at once for prometheus, one
    query per metric): a batch's history is loaded, decided on and dropped before the next, so memory stays bounded
    however many VMs the cluster has. Returns ``(decisions, summary)``; summary is the loaders' (summed) plus
    ``path`` (the SQLite file, backend sqlite). The recommendation of every run is recorded in the store (kept only
    by the sqlite backend; not in check mode).
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends
    now = time.time() if now is None else now
    since = now - window
    resources = api.resources('vm')
    vms = metrics_utils.managed_vms(resources, sorted(plans), plans)
    keys = [(name, entry['service']) for name in sorted(plans) for entry in plans[name].get('scaling') or []
            if not services or entry['service'] in services]
    # the nodes' CPUs bound a vertical resize (one listing for every plan)
    vertical = [key for key in keys if scaling_entry(plans[key[0]], key[1])['mode'] == 'vertical']
    nodes = (api.get('nodes') or []) if vertical else None
    decisions = []
    summary = history_backends.empty_summary(config['backend'])
    cache = None
    try:
        if config['backend'] == 'sqlite' and not check_mode:
            cache = history_backends.open_store(config)
        for batch in history_backends.batches(keys, vms, config):
            wanted = set(batch)
            batch_vms = [vm for vm in vms if (vm['template'], vm['service']) in wanted]
            store = cache or history_backends.open_store(
                config, check_mode=check_mode, prefixes=['{0}/{1}/'.format(*key) for key in batch],
                since=since - DEFAULT_WINDOW)
            try:
                complete = history_complete(store, now) if config['backend'] == 'sqlite' else None
                part = history_backends.load_history(store, batch_vms, since, now, config, now=now, api=api,
                                                     plans=plans, parallel=parallel, complete=complete)
                history_backends.add_summary(summary, part)
                made = []
                for name in sorted(set(key[0] for key in batch)):
                    made.extend(forecast_plan(api, plans[name], store, now=now, window=window, resources=resources,
                                              nodes=nodes, services=[key[1] for key in batch if key[0] == name],
                                              **options))
                history_backends.annotate(made, store, part, resources, plans, since, now)
                _hold_on_partial_history(made, part, batch_vms)
                if not check_mode:
                    record_recommendations(store, made)
                decisions.extend(made)
            finally:
                if store is not cache:
                    store.close()
    except history.HistoryError as exc:
        raise ScalingError(str(exc))
    finally:
        if cache is not None:
            cache.close()
    summary = dict(summary, path=config.get('path'))
    return decisions, summary


def _hold_on_partial_history(decisions: list[dict[str, t.Any]], summary: dict[str, t.Any],
                             vms: list[dict[str, t.Any]]) -> None:
    """A service with a primary whose history could not be read decides nothing: its demand would be the others'
    alone, spread over every instance (too low), so the decision becomes ``none`` and says which VM and why."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy
    failed = dict((e['name'], e['msg']) for e in summary.get('errors') or [])
    if not failed:
        return
    for d in decisions:
        names = [vm['name'] for vm in vms if vm['template'] == d['template'] and vm['service'] == d['service']
                 and vm['role'] == 'primary' and vm['name'] in failed]
        if not names:
            continue
        why = 'history of {0} could not be read ({1}): no scaling decision on partial data'.format(
            ', '.join(names), failed[names[0]])
        d.update(action=policy.NONE, act=False, reason=why, blocked_by='history')
        if isinstance(d.get('target'), dict) and 'instances' in d['target']:
            d['target'] = dict(d['target'], instances=d.get('instances'))
        d['line'] = '{0}/{1}: decision none: {2} ({3})'.format(d['template'], d['service'], why,
                                                               (d.get('history') or {}).get('text', ''))


# ------------------------------------------------------------------------------------------ PVE state

def service_vms(resources: list[dict[str, t.Any]], plan: dict[str, t.Any],
                service: str) -> tuple[list[dict[str, t.Any]], dict[str, t.Any] | None]:
    vms = metrics_utils.managed_vms(resources, [plan['template']], {plan['template']: plan})
    prim = [v for v in vms if v['service'] == service and v['role'] == 'primary']
    shadows = [v for v in vms if v['service'] == service and v['role'] == 'shadow']
    return sorted(prim, key=lambda v: (instance_index(v['name'], plan, service) or 10 ** 6, v['name'])), \
        (shadows[0] if shadows else None)


def scaling_entry(plan: dict[str, t.Any], service: str) -> dict[str, t.Any]:
    for entry in plan.get('scaling') or []:
        if entry['service'] == service:
            return entry
    raise ScalingError('template {0!r} has no service {1!r}'.format(plan.get('template'), service))


def instance_index(name: str | None, plan: dict[str, t.Any], service: str) -> int | None:
    prefix = scaling_entry(plan, service)['name_prefix']
    found = re.match(re.escape(prefix) + r'(\d+)$', name or '')
    return int(found.group(1)) if found else None


# The last scaling action is also kept as a tag on the anchor primary, ``sn-last.<action>.<epoch>``, because
# /cluster/resources (read once per run anyway) lists tags but not descriptions: decisions then need no per-VM
# config read, which keeps a reconcile within "VMs + a few" API requests. The description block keeps the full
# record (cooldown deadlines, who acted); the digest-checked claim re-reads it before any action.
LAST_TAG = re.compile(r'^sn-last\.(scale_up|scale_down)\.(\d+)$')


def last_action_tag(action: str, when: float) -> str:
    return 'sn-last.{0}.{1}'.format(action, int(when))


def state_from_tags(primaries: list[dict[str, t.Any]], entry: dict[str, t.Any]) -> dict[str, t.Any]:
    """The newest last-action tag among the primaries, as a state dict with its cooldown deadlines."""
    best = None
    for vm in primaries:
        for tag in propstr.parse_tags(vm.get('tags')):
            found = LAST_TAG.match(tag)
            if found and (best is None or int(found.group(2)) > best[1]):
                best = (found.group(1), int(found.group(2)))
    if best is None:
        return {}
    action, when = best
    return dict(action=action, time=float(when), cooldown_until={'up': when + entry['cooldown']['up_seconds'],
                                                                 'down': when + entry['cooldown']['down_seconds']})


def capacity_from_resources(vm: dict[str, t.Any]) -> tuple[int, int]:
    """(cores, memory MiB) of one primary from its /cluster/resources entry (maxcpu, maxmem)."""
    cores = int(vm.get('maxcpu') or 1)
    memory = int(float(vm.get('maxmem') or 0) / 1048576) or 512
    return cores, memory


def anchor_capacity(prim: list[dict[str, t.Any]], plan: dict[str, t.Any]) -> tuple[int, int]:
    """(cores, memory MiB) the service's primaries run with: the first one the listing gives a size for (the anchor,
    unless its node went silent: pmxcfs drops a VM's sizes 5 minutes after its node stopped sending them, and
    pve-manager Cluster.pm resources then lists it without maxcpu/maxmem), else the plan's size for the anchor, never
    a made-up 1 core / 512 MiB."""
    for vm in prim:
        if vm.get('maxcpu') and vm.get('maxmem'):
            return capacity_from_resources(vm)
    planned = next((v for v in plan.get('vms') or [] if v.get('name') == prim[0].get('name')), None) or {}
    return capacity_from_resources({'maxcpu': planned.get('cores'), 'maxmem': (planned.get('memory') or 0) * 1048576})


def read_state(api: PveApi, primaries: list[dict[str, t.Any]]) -> tuple[dict[str, t.Any], dict[str, dict[str, t.Any]]]:
    """Configs of the primaries and the newest ``scaling`` record among their metadata blocks.

    Returns ``(state, configs)``: state is ``{}`` when no action was ever recorded.
    """
    configs = {}
    state = {}
    for vm in primaries:
        cfg, digest = api.vm_config(vm['node'], vm['vmid'])
        configs[vm['name']] = cfg
        dummy, meta = meta_utils.parse_description(cfg.get('description', ''))
        rec = (meta or {}).get('scaling')
        if isinstance(rec, dict) and rec.get('time') is not None and \
                float(rec['time']) > float(state.get('time', float('-inf'))):
            state = dict(rec)
    return state, configs


# ---------------------------------------------------------------------------------------------- history

def _since(store, key, since, until):
    return store.series(key, since=since, until=until)


def _series_names(store, prefix):
    """{vm name: {metric}} of the series under ``prefix`` (``<template>/<service>/``; ``_policy`` left out)."""
    names = {}
    for key in store.keys():
        if not key.startswith(prefix):
            continue
        name, dummy, metric = key[len(prefix):].partition('/')
        if name.startswith('_'):
            continue
        names.setdefault(name, set()).add(metric)
    return names


def _read_series(store, prefix, names, shadow_name, since, until):
    """({(vm name, metric): points}, the newest time any primary has a cpu value, or None)."""
    raw = {}
    end = None
    for name, metrics in names.items():
        for metric in metrics:
            pts = _since(store, prefix + name + '/' + metric, since, until)
            raw[(name, metric)] = pts
            if metric == 'cpu' and name != shadow_name and pts:
                last = max(ts for ts, v in pts if v is not None) if any(v is not None for ts, v in pts) else None
                if last is not None and (end is None or last > end):
                    end = last
    return raw, end


def service_series(store: HistoryStore, template: str, service: str, shadow_name: str | None, since: float | None,
                   until: float) -> tuple[int | None, dict[str, dict[str, list[float | None]]],
                                          dict[str, list[float | None]]]:
    """Regularised history of one service on a common one-minute grid.

    Returns ``(end, metrics, shadow)``: metrics maps ``cpu``/``memory``/``net`` to
    ``{'demand': [...], 'primary': [...]}`` (demand = total of the primaries: cores, MiB, bits/s; primary = their
    mean utilisation, a fraction for cpu/memory and bits/s for net), shadow maps them to the shadow's utilisation.
    The grid ends at the newest minute any primary has a cpu value (PVE's still-filling minute is left out).
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import regularize
    prefix = '{0}/{1}/'.format(template, service)
    names = _series_names(store, prefix)
    raw, end = _read_series(store, prefix, names, shadow_name, since, until)
    if end is None:
        return None, {}, {}
    end = end // STEP * STEP
    start = max(int(since), end - (int(until) - int(since))) // STEP * STEP if since is not None else end

    def grid(name, metric):
        dummy, values = regularize(raw.get((name, metric), []), STEP, start=start, end=end)
        return values

    size = (end - start) // STEP + 1
    primaries = sorted(n for n in names if n != shadow_name)

    def total(metric_of):
        out = []
        rows = [metric_of(n) for n in primaries]
        for i in range(size):
            vals = [r[i] for r in rows if r[i] is not None]
            out.append(sum(vals) if vals else None)
        return out

    def mean(metric_of):
        out = []
        rows = [metric_of(n) for n in primaries]
        for i in range(size):
            vals = [r[i] for r in rows if r[i] is not None]
            out.append(sum(vals) / len(vals) if vals else None)
        return out

    def net_of(name):
        ins, outs = grid(name, 'netin_bps'), grid(name, 'netout_bps')
        return [None if a is None and b is None else max(v for v in (a, b) if v is not None) for a, b in zip(ins, outs)]

    metrics = {}
    if any(v is not None for v in total(lambda n: grid(n, 'cpu_cores'))):
        metrics['cpu'] = {'demand': total(lambda n: grid(n, 'cpu_cores')), 'primary': mean(lambda n: grid(n, 'cpu'))}
    if any(v is not None for v in total(lambda n: grid(n, 'mem_mib'))):
        metrics['memory'] = {'demand': total(lambda n: grid(n, 'mem_mib')), 'primary': mean(lambda n: grid(n, 'mem'))}
    if any(v is not None for v in total(net_of)):
        metrics['net'] = {'demand': total(net_of), 'primary': mean(net_of)}
    shadow = {}
    if shadow_name and shadow_name in names:
        shadow = {'cpu': grid(shadow_name, 'cpu'), 'memory': grid(shadow_name, 'mem'), 'net': net_of(shadow_name)}
    return end, metrics, shadow


def policy_scaling(entry: dict[str, t.Any], forecast_only: bool = False) -> dict[str, t.Any]:
    """The policy's ``scaling`` block from a plan's ``scaling`` entry."""
    block = {
        'cpu': {'high': entry['cpu']['high'], 'low': entry['cpu']['low'], 'duration': entry['cpu']['duration_seconds']},
        'memory': {'high': entry['memory']['high'], 'low': entry['memory']['low'],
                   'duration': entry['memory']['duration_seconds']},
        'net': {'high': float(entry['net']['high_bps']), 'low': float(entry['net']['low_bps']),
                'duration': entry['net']['duration_seconds']},
        'horizon': entry['horizon_seconds'],
        'instances': {'min': entry['instances']['min'], 'max': entry['instances']['max']},
        'cooldown': {'up': entry['cooldown']['up_seconds'], 'down': entry['cooldown']['down_seconds']},
        'mode': entry['mode'],
    }
    if entry.get('provision_seconds') is not None:      # plans made before scaling.provision: the policy's default
        block['provision'] = entry['provision_seconds']
    return block


def shadow_params(plan: dict[str, t.Any], entry: dict[str, t.Any], primaries_count: int) -> dict[str, float]:
    rate = 1.0
    for mirror in plan.get('mirrors') or []:
        if mirror.get('service') == entry['service']:
            rate = float(mirror.get('rate') or 1.0)
            break
    size = 1.0
    for vm in plan.get('vms') or []:
        if vm.get('service') == entry['service'] and vm.get('role') == 'shadow' and entry.get('cores'):
            size = float(vm['cores']) / float(entry['cores'])
    return {'size': size, 'rate': rate, 'mirrored_instances': max(1, primaries_count)}


def vertical_bounds(entry: dict[str, t.Any], max_cores: int | None = None,
                    max_memory: int | None = None, node_cpus: int | None = None) -> dict[str, int]:
    """The sizes a vertical decision stays within: the plan's size up to ``instances.max`` times it (or the
    module's max_cores / max_memory), and no more cores than ``node_cpus``, the fewest CPUs of the primaries' nodes
    (qemu-server config_to_command refuses to start a VM with more: "MAX n vcpus allowed per VM on this node")."""
    top = int(entry['instances']['max'])
    out = dict(min_cores=int(entry['cores']), max_cores=int(max_cores or entry['cores'] * top),
               min_memory=int(entry['memory_mib']), max_memory=int(max_memory or entry['memory_mib'] * top))
    if node_cpus and int(node_cpus) < out['max_cores']:
        out['max_cores'] = max(int(node_cpus), 1)
    return out


def node_cpus(nodes: list[dict[str, t.Any]] | None) -> dict[str, int]:
    """``{node: CPUs}`` of the nodes of a /nodes or /cluster/resources listing that report ``maxcpu``."""
    out = {}
    for n in nodes or []:
        if n.get('node') and n.get('maxcpu') and n.get('type', 'node') == 'node':
            out[n['node']] = int(n['maxcpu'])
    return out


def primaries_node_cpus(prim: list[dict[str, t.Any]], nodes: list[dict[str, t.Any]] | None) -> tuple[int, str] | None:
    """``(CPUs, node)`` of the primaries' node with the fewest CPUs (/nodes ``maxcpu``), or None when unknown."""
    cpus = node_cpus(nodes)
    known = sorted((cpus[vm['node']], vm['node']) for vm in prim if vm.get('node') in cpus)
    return known[0] if known else None


# --------------------------------------------------------------------------------------------- forecast

def forecast_plan(api: PveApi, plan: dict[str, t.Any], store: HistoryStore, now: float | None = None,
                  window: int = DEFAULT_WINDOW, level: float | None = None, models: list[str] | None = None,
                  forecast_only: bool = False, services: list[str] | None = None, max_cores: int | None = None,
                  max_memory: int | None = None,
                  resources: list[dict[str, t.Any]] | None = None, nodes: list[dict[str, t.Any]] | None = None,
                  report: dict[tuple[str, str], dict[str, t.Any]] | None = None) -> list[dict[str, t.Any]]:
    """One decision per service of the plan (nothing is changed in PVE).

    ``report``: a dict that collects, per ``(template, service)``, what each decision was made from for the HTML
    report (module_utils/scaling/report.py): the demand series, their end, the full forecasts and the horizon. It
    stays in the process; the decisions keep only the forecast summary. ``nodes``: the /nodes listing (read here
    when a vertical service needs the nodes' CPUs and none is given).
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import forecast as forecast_utils
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy

    now = time.time() if now is None else now
    resources = api.resources('vm') if resources is None else resources

    if level is None:
        level = policy.DEFAULT_LEVEL

    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.report import OUTER_LEVEL

    def forecaster_for(entry):
        def forecaster(values, step, horizon, level=0.8):
            if report is None:
                return forecast_utils.forecast_series(values, step, horizon, level=level, models=models)
            # a report draws the wider OUTER_LEVEL interval around the policy's (the same calibration, no other fit)
            # and what the forecast said one horizon before each point of the last day
            return forecast_utils.forecast_series(
                values, step, horizon, level=level, models=models, bands=[OUTER_LEVEL] if level < OUTER_LEVEL else [],
                hindcast_steps=policy.steps(entry['horizon_seconds'], step))    # the policy's horizon in steps
        return forecaster

    out = []
    for entry in plan.get('scaling') or []:
        if services and entry['service'] not in services:
            continue
        if entry['mode'] == 'vertical' and nodes is None:
            nodes = api.get('nodes') or []
        only = bool(forecast_only or entry.get('forecast_only') or plan.get('forecast_only'))
        out.append(_decide_service(plan, entry, store, resources, now, window, only, (max_cores, max_memory, nodes),
                                   dict(level=level, forecaster=forecaster_for(entry)),
                                   canary_state(api, plan, entry, resources, now), report=report))
    return out


def canary_state(api: PveApi, plan: dict[str, t.Any], entry: dict[str, t.Any], resources: list[dict[str, t.Any]],
                 now: float) -> dict[str, t.Any]:
    """The service's canary: its replay counters read from the shadow through the guest agent (one request), or
    why there is none (``live`` False and ``reason``)."""
    conf = entry.get('canary')
    if not entry.get('shadow'):
        return {'live': False, 'reason': 'no canary: the service has no shadow'}
    if not conf:
        return {'live': False, 'shadow': entry['shadow'],
                'reason': 'no canary: shadow.replay.port is not set (the shadow replays no requests)'}
    dummy, shadow_vm = service_vms(resources, plan, entry['service'])
    if shadow_vm is None:
        return {'live': False, 'shadow': entry['shadow'],
                'reason': 'no canary: the shadow {0} was not found in the cluster'.format(entry['shadow'])}
    status = shadow_vm.get('status')
    if status not in (None, 'running'):
        # The listing's status is pvestatd's, up to 10 s old (a shadow started just before): ask the VM.
        status = api.vm_status(shadow_vm['node'], shadow_vm['vmid']) or status
    if status not in (None, 'running'):
        return {'live': False, 'shadow': entry['shadow'],
                'reason': 'no canary: the shadow {0} is {1}'.format(entry['shadow'], status)}
    content, error = canary_utils.read_counters(api, shadow_vm, conf['stats_path'])
    return canary_utils.status(content, error, now, conf['stale_after_seconds'], entry['shadow'], conf['stats_path'])


def _decide_service(plan, entry, store, resources, now, window, only, bounds, decide_options, canary=None,
                    report=None):
    """The decision for one service: its VMs and last action from the listing, its history, then policy.decide."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy

    service = entry['service']
    prim, shadow_vm = service_vms(resources, plan, service)
    base = dict(template=plan['template'], service=service, mode=entry['mode'], made_at=now,
                instances=len(prim), forecast_only=only, act=False, action=policy.NONE)
    if not prim:
        base.update(reason='no primaries of this service were found in the cluster (build it first)',
                    basis_time=None, target={'instances': 0})
        return base
    state = state_from_tags(prim, entry)
    anchor_cores, anchor_memory = anchor_capacity(prim, plan)
    end, metrics, shadow = service_series(store, plan['template'], service, entry.get('shadow'),
                                          now - window, now)
    inputs = {}
    canary = canary or {'live': False, 'reason': 'no canary'}
    for metric, data in metrics.items():
        item = dict(data, step_seconds=STEP, end=end)
        # The seed rule only while the canary is live (without replayed requests the shadow's CPU measures an idle
        # VM), and on CPU only: the shadow's memory is mostly its own baseline, which the flow sample rate does not
        # scale (normalised, a 512 MiB shadow at 60% would read as 150% of a primary).
        if canary['live'] and metric in CANARY_METRICS and shadow.get(metric) and \
                any(v is not None for v in shadow[metric]):
            item['shadow'] = shadow[metric]
        inputs[metric] = item
    current = {'instances': len(prim), 'capacity': {'cpu': anchor_cores, 'memory': anchor_memory}}
    node_cap = None
    if entry['mode'] == 'vertical':
        node_cap = primaries_node_cpus(prim, bounds[2])
        current.update(cores=anchor_cores, memory=anchor_memory,
                       **vertical_bounds(entry, bounds[0], bounds[1], node_cap[0] if node_cap else None))
    last = {'action': state.get('action'), 'time': state.get('time')} if state else None
    recs = recommendations(store, plan['template'], service, now, entry)
    if not inputs:
        base.update(reason='no metrics history yet for this service (run shadownet.proxmox.metrics first)',
                    basis_time=state.get('time'), target={'instances': len(prim)}, current=current)
        return base
    decision = policy.decide(_with_latency(policy_scaling(entry), entry), current, inputs, now, last_action=last,
                             cooldown_until=state.get('cooldown_until'), recommendations=recs,
                             shadow=_canary_shadow_params(plan, entry, prim, shadow_vm, anchor_cores),
                             forecast_only=only, latency=_canary_latency(store, plan, entry, canary, now),
                             **decide_options)
    decision.update(template=plan['template'], service=service, made_at=now, basis_time=state.get('time'),
                    instances=len(prim), last_action=state or None, canary=canary)
    _note_node_cap(decision, entry, bounds, node_cap)
    if report is not None:
        report[(plan['template'], service)] = report_inputs(store, plan['template'], service, entry, now, window,
                                                            metrics, end, decision.get('forecast'))
    decision['utilisation'] = latest_utilisation(metrics, len(prim), current['capacity'], entry)
    decision['forecast'] = summarise_forecast(decision.get('forecast') or {}, len(prim), current['capacity'],
                                              entry)
    decision['line'] = decision_line(decision)
    return decision


def _with_latency(block, entry):
    """The policy's scaling block with ``latency`` (the canary latency signal) when the plan sets a threshold."""
    if (entry.get('latency') or {}).get('p95_ms') is not None:
        block['latency'] = {'p95_ms': entry['latency']['p95_ms'], 'for': entry['latency']['for_seconds']}
    return block


def _canary_shadow_params(plan, entry, prim, shadow_vm, anchor_cores):
    """shadow_params with the size from the VMs as they run (shadow cores / the anchor primary's cores)."""
    params = shadow_params(plan, entry, len(prim))
    params['size'] = canary_utils.shadow_size(shadow_vm, anchor_cores, params['size'])
    return params


def _canary_latency(store, plan, entry, canary, now):
    """The latency signal's readings, or None without a live canary: the agent's per-minute ``recent`` when its
    counters file has it, else (an older agent) the history store's earlier readings and the current one."""
    if not canary.get('live') or (entry.get('latency') or {}).get('p95_ms') is None:
        return None
    recent = canary_utils.recent_observations(canary['counters'])
    if recent is not None:                  # the agent's own per-minute history: no store needed between runs
        return recent
    current = canary_utils.observation(canary)
    since = now - entry['latency']['for_seconds'] - canary_utils.MAX_LATENCY_GAP - 3600
    earlier = [o for o in canary_utils.history_observations(store, plan['template'], entry['service'], since, now)
               if o[0] < current[0]]
    return earlier + [current]


def report_inputs(store: HistoryStore, template: str, service: str, entry: dict[str, t.Any], now: float, window: int,
                  metrics: dict[str, dict[str, t.Any]], end: int | None,
                  forecasts: dict[str, dict[str, t.Any]] | None) -> dict[str, t.Any]:
    """What the HTML report plots for one service: the demand the decision used and the full forecasts. The
    report shows the last two days; when the decision used less history, the store is read again for them."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.report import REPORT_HISTORY_SECONDS
    if window < REPORT_HISTORY_SECONDS:
        longer_end, longer, dummy = service_series(store, template, service, entry.get('shadow'),
                                                   now - REPORT_HISTORY_SECONDS, now)
        if longer_end is not None and longer_end == end:
            metrics = longer
    return dict(series=dict((m, d['demand']) for m, d in metrics.items()), end=end, forecasts=dict(forecasts or {}),
                horizon=entry['horizon_seconds'], window=window)


def _note_node_cap(decision, entry, bounds, node_cap):
    """Say so in the reason when the cores of a vertical decision stop at the CPUs of a primary's node."""
    if node_cap is None or (decision.get('target') or {}).get('cores') is None:
        return
    configured = vertical_bounds(entry, bounds[0], bounds[1])['max_cores']
    cpus, node = node_cap
    at_cap = int(decision['target']['cores']) >= cpus or (decision.get('wanted') or {}).get('cores', 0) >= cpus
    if cpus < configured and at_cap and decision.get('action') != 'scale_down':
        decision['capped_by'] = {'cores': cpus, 'node': node}
        why = ('cores capped at {0}, the CPUs of node {1} (max_cores {2}; PVE starts no VM with more: "MAX {0} vcpus '
               'allowed per VM on this node")'.format(cpus, node, configured))
        decision['reason'] = '{0}; {1}'.format(decision.get('reason', ''), why)


def recommendations(store: HistoryStore, template: str, service: str, now: float,
                    entry: dict[str, t.Any]) -> list[dict[str, t.Any]]:
    """Recent recommendations (for the stabilisation window) from the history store."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy
    since = now - max(policy.normalise_scaling(policy_scaling(entry))['stabilization'], 60)
    prefix = '{0}/{1}/{2}/'.format(template, service, POLICY_SERIES)
    if entry['mode'] == 'vertical':
        cores = dict(store.series(prefix + 'cores', since=since))
        memory = dict(store.series(prefix + 'memory', since=since))
        return [{'time': ts, 'cores': int(c), 'memory': int(memory[ts])} for ts, c in sorted(cores.items())
                if c is not None and memory.get(ts) is not None]
    return [{'time': ts, 'instances': int(v)} for ts, v in store.series(prefix + 'instances', since=since)
            if v is not None]


def record_recommendations(store: HistoryStore, decisions: list[dict[str, t.Any]]) -> int:
    points = []
    for d in decisions:
        rec = (d.get('recommendations') or [])
        if not rec:
            continue
        last = rec[-1]
        prefix = '{0}/{1}/{2}/'.format(d['template'], d['service'], POLICY_SERIES)
        for key in ('instances', 'cores', 'memory'):
            if key in last:
                points.append((prefix + key, int(last['time']), last[key]))
        points.extend(_canary_points(d))
    return store.append(points) if points else 0


def _canary_points(decision):
    return canary_utils.history_points(decision)


def latest_utilisation(metrics: dict[str, dict[str, t.Any]], n: int, capacity: dict[str, float],
                       entry: dict[str, t.Any]) -> dict[str, float]:
    out = {}
    for metric, data in metrics.items():
        vals = [v for v in data['primary'] if v is not None]
        if not vals:
            continue
        value = vals[-1]
        out[metric] = round(value / float(entry['net']['high_bps']), 4) if metric == 'net' else round(value, 4)
    return out


def relative_mae(fc: dict[str, t.Any]) -> float | None:
    """How the forecast did lately against the last value: its mean absolute error over naive's on the calibration
    window (forecast.py's ``backtest``: out of sample, recent origins weighing more). Below 1 it beat the last
    value; None when the history was too short to calibrate."""
    bt = fc.get('backtest') or {}
    own = bt.get('combination', bt.get(fc.get('model')))
    naive = bt.get('naive')
    return round(own / naive, 3) if own is not None and naive else None


def summarise_forecast(forecasts: dict[str, dict[str, t.Any]], n: int, capacity: dict[str, float],
                       entry: dict[str, t.Any]) -> dict[str, dict[str, t.Any]]:
    """Per metric: model, the peak of the upper bound over the horizon and the mean at its end, per instance, as a
    utilisation, and the forecast's :func:`relative_mae`."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy
    out = {}
    steps = policy.steps(entry['horizon_seconds'], STEP)
    for metric, fc in forecasts.items():
        if not fc:
            continue
        cap = float(entry['net']['high_bps']) if metric == 'net' else float(capacity.get(metric) or 1)
        upper = fc['upper'][:steps]
        mean = fc['mean'][:steps]
        out[metric] = dict(model=fc.get('model'), peak_upper=round(max(upper) / n / cap, 4),
                           mean_at_horizon=round(mean[-1] / n / cap, 4), relative_mae=relative_mae(fc))
    return out


def decision_line(d: dict[str, t.Any]) -> str:
    cur = ', '.join('{0} {1:.0f}%'.format(k, 100 * v) for k, v in sorted((d.get('utilisation') or {}).items()))
    fc = ', '.join('{0} {1:.0f}%'.format(k, 100 * v['peak_upper']) for k, v in sorted((d.get('forecast') or {}).items()))
    if d.get('mode') == 'vertical':
        target = d.get('target') or {}
        what = '{0} -> {1} cores/{2} MiB'.format(d['action'], target.get('cores'), target.get('memory'))
    else:
        target = (d.get('target') or {}).get('instances')
        what = '{0} {1} -> {2} instances'.format(d['action'], d.get('instances'), target)
    return '{0}/{1}: current [{2}] forecast peak [{3}]{6} decision {4}: {5}'.format(
        d['template'], d['service'], cur or 'no data', fc or 'none', what, d.get('reason', ''), canary_text(d))


def canary_text(d: dict[str, t.Any]) -> str:
    """`` canary [...]`` for the decision line: the replayed requests and the shadow's CPU next to the primaries',
    or why there is no canary; empty for a service without a shadow."""
    canary = d.get('canary') or {}
    if not canary.get('shadow'):
        return ''
    if not canary.get('live'):
        return ' canary [{0}]'.format(canary.get('reason', 'no canary'))
    c = canary['counters']
    cpu = next((i for i in d.get('signals') or [] if i.get('metric') == 'cpu' and 'shadow_now' in i), None)
    parts = ['{0} requests replayed ({1} in {2:.0f}s)'.format(c['requests_replayed'], c['window_requests'],
                                                              c['window_seconds']),
             'p95 {0}'.format(canary_utils.fmt_ms(c['p95_seconds']))]
    if cpu is not None:
        parts.append('shadow cpu {0:.0f}% = {1:.0f}% of a primary vs primaries {2:.0f}%'.format(
            100 * cpu['shadow_now'], 100 * cpu['shadow_normalised'], 100 * cpu['primary_now']))
    return ' canary [{0}]'.format(', '.join(parts))

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Predictive scaling glue: PVE metrics -> history -> forecast -> policy per service, and applying decisions.

Used by the ``metrics``, ``forecast`` and ``scale`` modules. The decision itself is ``policy.decide`` and the
forecast ``forecast.forecast_series``; this module only gathers their inputs and acts on their output.

State that another controller needs lives in PVE: the last scaling action and the cooldown deadlines are the
``scaling`` key of the metadata block in the description of the service's primaries (module_utils/meta.py).
Before acting, ``scale`` *claims* the action on the anchor primary (the lowest-index one) with a digest-checked
config update whose computation re-checks that no other action was recorded since the decision was made. Two
reconcilers that race both read the same digest; PVE accepts only the first update, the second is re-read,
finds the first one's record and stands down. Only the claim winner clones, destroys or resizes.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils import meta as metablock
from ansible_collections.shadownet.proxmox.plugins.module_utils import metrics as metricsmod
from ansible_collections.shadownet.proxmox.plugins.module_utils import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils import vm as vmengine

DEFAULT_HISTORY = os.path.join('~', '.local', 'share', 'shadownet', 'history.sqlite')
HISTORY_ENV = 'SHADOWNET_HISTORY'
STEP = metricsmod.RRD_STEP
DEFAULT_WINDOW = 86400
POLICY_SERIES = '_policy'
MIB = 1024 * 1024


class ScalingError(Exception):
    """Inputs that cannot be used (bad plans, history store problems); the message says what to fix."""


# ---------------------------------------------------------------------------------------------- inputs

def history_path(option=None):
    return os.path.expanduser(option or os.environ.get(HISTORY_ENV) or DEFAULT_HISTORY)


def open_history(path):
    from ansible_collections.shadownet.proxmox.plugins.module_utils import history
    try:
        return history.open_store(path)
    except history.HistoryError as exc:
        raise ScalingError(str(exc))


def plans_and_templates(plans_option, templates_option):
    plans = metricsmod.plans_from_option(plans_option)
    templates = list(templates_option or sorted(plans))
    if not templates:
        raise ValueError('no template given: pass plans (result.plans of shadownet.proxmox.template) or templates')
    return plans, templates


# --------------------------------------------------------------------------------------------- metrics

def history_complete(store, now=None):
    """``complete(vm)`` for metrics.collect: True when the store already holds the VM's last day of cpu points
    without a hole PVE's ``hour`` would not fill (then reading ``hour`` is enough)."""
    now = time.time() if now is None else now
    day = metricsmod.HISTORY_SECONDS

    def complete(vm):
        first, last, count = store.span(metricsmod.series_key(vm['template'], vm['service'], vm['name'], 'cpu'),
                                        since=now - day)
        if first is None:
            return False
        return (last >= now - 45 * 60 and first <= now - day + 2 * 3600
                and count >= 0.9 * (last - first) / STEP)
    return complete


def run_metrics(api, templates, plans, path, parallel=4, check_mode=False):
    """Collect, append to history (not in check mode), summarise."""
    if check_mode:
        # The history is not opened (it would be created): every VM is read with its full day.
        vms, errors = metricsmod.collect(api, templates, plans, parallel=parallel)
        appended = 0
    else:
        with open_history(path) as store:
            vms, errors = metricsmod.collect(api, templates, plans, parallel=parallel,
                                             complete=history_complete(store))
            fine, filled = [], []
            for vm in vms:
                fine.extend(metricsmod.history_points(vm, vm['points']))
                filled.extend(metricsmod.history_points(vm, vm['points'], filled=True))
            appended = store.append(fine) + store.append(filled, replace=False)
    return dict(services=metricsmod.summarise(vms), appended=appended, history_path=path,
                requests=len(api.calls), errors=errors)


# ------------------------------------------------------------------------------------------ PVE state

def service_vms(resources, plan, service):
    vms = metricsmod.managed_vms(resources, [plan['template']], {plan['template']: plan})
    prim = [v for v in vms if v['service'] == service and v['role'] == 'primary']
    shadows = [v for v in vms if v['service'] == service and v['role'] == 'shadow']
    return sorted(prim, key=lambda v: (instance_index(v['name'], plan, service) or 10 ** 6, v['name'])), \
        (shadows[0] if shadows else None)


def scaling_entry(plan, service):
    for entry in plan.get('scaling') or []:
        if entry['service'] == service:
            return entry
    raise ScalingError('template {0!r} has no service {1!r}'.format(plan.get('template'), service))


def instance_index(name, plan, service):
    prefix = scaling_entry(plan, service)['name_prefix']
    found = re.match(re.escape(prefix) + r'(\d+)$', name or '')
    return int(found.group(1)) if found else None


# The last scaling action is also kept as a tag on the anchor primary, ``sn-last.<action>.<epoch>``, because
# /cluster/resources (read once per run anyway) lists tags but not descriptions: decisions then need no per-VM
# config read, which keeps a reconcile within "VMs + a few" API requests. The description block keeps the full
# record (cooldown deadlines, who acted); the digest-checked claim re-reads it before any action.
LAST_TAG = re.compile(r'^sn-last\.(scale_up|scale_down)\.(\d+)$')


def last_action_tag(action, when):
    return 'sn-last.{0}.{1}'.format(action, int(when))


def state_from_tags(primaries, entry):
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


def capacity_from_resources(vm):
    """(cores, memory MiB) of one primary from its /cluster/resources entry (maxcpu, maxmem)."""
    cores = int(vm.get('maxcpu') or 1)
    memory = int(float(vm.get('maxmem') or 0) / 1048576) or 512
    return cores, memory


def read_state(api, primaries):
    """Configs of the primaries and the newest ``scaling`` record among their metadata blocks.

    Returns ``(state, configs)``: state is ``{}`` when no action was ever recorded.
    """
    configs = {}
    state = {}
    for vm in primaries:
        cfg, digest = api.vm_config(vm['node'], vm['vmid'])
        configs[vm['name']] = cfg
        dummy, meta = metablock.parse_description(cfg.get('description', ''))
        rec = (meta or {}).get('scaling')
        if isinstance(rec, dict) and rec.get('time') is not None and \
                float(rec['time']) > float(state.get('time', float('-inf'))):
            state = dict(rec)
    return state, configs


def effective_cores(cfg):
    if cfg.get('vcpus') not in (None, ''):
        return int(cfg['vcpus'])
    return int(cfg.get('cores', 1)) * int(cfg.get('sockets', 1))


# ---------------------------------------------------------------------------------------------- history

def _since(store, key, since, until):
    return store.series(key, since=since, until=until)


def service_series(store, template, service, shadow_name, since, until):
    """Regularised history of one service on a common one-minute grid.

    Returns ``(end, metrics, shadow)``: metrics maps ``cpu``/``memory``/``net`` to
    ``{'demand': [...], 'primary': [...]}`` (demand = total of the primaries: cores, MiB, bits/s; primary = their
    mean utilisation, a fraction for cpu/memory and bits/s for net), shadow maps them to the shadow's utilisation.
    The grid ends at the newest minute any primary has a cpu value (PVE's still-filling minute is left out).
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.history import regularize
    prefix = '{0}/{1}/'.format(template, service)
    names = {}
    for key in store.keys():
        if not key.startswith(prefix):
            continue
        name, dummy, metric = key[len(prefix):].partition('/')
        if name.startswith('_'):
            continue
        names.setdefault(name, set()).add(metric)
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


def policy_scaling(entry, forecast_only=False):
    """The policy's ``scaling`` block from a plan's ``scaling`` entry."""
    return {
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


def shadow_params(plan, entry, primaries_count):
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


def vertical_bounds(entry, max_cores=None, max_memory=None):
    top = int(entry['instances']['max'])
    return dict(min_cores=int(entry['cores']), max_cores=int(max_cores or entry['cores'] * top),
                min_memory=int(entry['memory_mib']), max_memory=int(max_memory or entry['memory_mib'] * top))


# --------------------------------------------------------------------------------------------- forecast

def forecast_plan(api, plan, store, now=None, window=DEFAULT_WINDOW, level=None, models=None, forecast_only=False,
                  services=None, max_cores=None, max_memory=None, resources=None):
    """One decision per service of the plan (nothing is changed in PVE)."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils import forecast as fc
    from ansible_collections.shadownet.proxmox.plugins.module_utils import policy

    now = time.time() if now is None else now
    resources = api.resources('vm') if resources is None else resources

    if level is None:
        level = policy.DEFAULT_LEVEL

    def forecaster(values, step, horizon, level=0.8):
        return fc.forecast_series(values, step, horizon, level=level, models=models)

    out = []
    for entry in plan.get('scaling') or []:
        service = entry['service']
        if services and service not in services:
            continue
        plan_forecast_only = bool(entry.get('forecast_only') or plan.get('forecast_only'))
        only = bool(forecast_only or plan_forecast_only)
        prim, shadow_vm = service_vms(resources, plan, service)
        base = dict(template=plan['template'], service=service, mode=entry['mode'], made_at=now,
                    instances=len(prim), forecast_only=only, act=False, action=policy.NONE)
        if not prim:
            base.update(reason='no primaries of this service were found in the cluster (build it first)',
                        basis_time=None, target={'instances': 0})
            out.append(base)
            continue
        state = state_from_tags(prim, entry)
        anchor_cores, anchor_memory = capacity_from_resources(prim[0])
        end, metrics, shadow = service_series(store, plan['template'], service, entry.get('shadow'),
                                              now - window, now)
        inputs = {}
        for metric, data in metrics.items():
            item = dict(data, step_seconds=STEP, end=end)
            if shadow.get(metric) and any(v is not None for v in shadow[metric]):
                item['shadow'] = shadow[metric]
            inputs[metric] = item
        current = {'instances': len(prim), 'capacity': {'cpu': anchor_cores, 'memory': anchor_memory}}
        if entry['mode'] == 'vertical':
            current.update(cores=anchor_cores, memory=anchor_memory, **vertical_bounds(entry, max_cores, max_memory))
        last = {'action': state.get('action'), 'time': state.get('time')} if state else None
        recs = recommendations(store, plan['template'], service, now, entry)
        if not inputs:
            base.update(reason='no metrics history yet for this service (run shadownet.proxmox.metrics first)',
                        basis_time=state.get('time'), target={'instances': len(prim)}, current=current)
            out.append(base)
            continue
        decision = policy.decide(policy_scaling(entry), current, inputs, now, last_action=last,
                                 cooldown_until=state.get('cooldown_until'), recommendations=recs,
                                 shadow=shadow_params(plan, entry, len(prim)), forecast_only=only, level=level,
                                 forecaster=forecaster)
        decision.update(template=plan['template'], service=service, made_at=now, basis_time=state.get('time'),
                        instances=len(prim), last_action=state or None)
        decision['utilisation'] = latest_utilisation(metrics, len(prim), current['capacity'], entry)
        decision['forecast'] = summarise_forecast(decision.get('forecast') or {}, len(prim), current['capacity'],
                                                  entry)
        decision['line'] = decision_line(decision)
        out.append(decision)
    return out


def recommendations(store, template, service, now, entry):
    """Recent recommendations (for the stabilisation window) from the history store."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils import policy
    since = now - max(policy.normalise_scaling(policy_scaling(entry))['stabilization'], 60)
    prefix = '{0}/{1}/{2}/'.format(template, service, POLICY_SERIES)
    if entry['mode'] == 'vertical':
        cores = dict(store.series(prefix + 'cores', since=since))
        memory = dict(store.series(prefix + 'memory', since=since))
        return [{'time': t, 'cores': int(c), 'memory': int(memory[t])} for t, c in sorted(cores.items())
                if c is not None and memory.get(t) is not None]
    return [{'time': t, 'instances': int(v)} for t, v in store.series(prefix + 'instances', since=since)
            if v is not None]


def record_recommendations(store, decisions):
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
    return store.append(points) if points else 0


def latest_utilisation(metrics, n, capacity, entry):
    out = {}
    for metric, data in metrics.items():
        vals = [v for v in data['primary'] if v is not None]
        if not vals:
            continue
        value = vals[-1]
        out[metric] = round(value / float(entry['net']['high_bps']), 4) if metric == 'net' else round(value, 4)
    return out


def summarise_forecast(forecasts, n, capacity, entry):
    """Per metric: model and the peak of the upper bound over the horizon, per instance, as a utilisation."""
    out = {}
    steps = max(1, int(math.ceil(entry['horizon_seconds'] / float(STEP))))
    for metric, fc in forecasts.items():
        if not fc:
            continue
        cap = float(entry['net']['high_bps']) if metric == 'net' else float(capacity.get(metric) or 1)
        upper = fc['upper'][:steps]
        mean = fc['mean'][:steps]
        out[metric] = dict(model=fc.get('model'), peak_upper=round(max(upper) / n / cap, 4),
                           mean_at_horizon=round(mean[-1] / n / cap, 4))
    return out


def decision_line(d):
    cur = ', '.join('{0} {1:.0f}%'.format(k, 100 * v) for k, v in sorted((d.get('utilisation') or {}).items()))
    fc = ', '.join('{0} {1:.0f}%'.format(k, 100 * v['peak_upper']) for k, v in sorted((d.get('forecast') or {}).items()))
    if d.get('mode') == 'vertical':
        target = d.get('target') or {}
        what = '{0} -> {1} cores/{2} MiB'.format(d['action'], target.get('cores'), target.get('memory'))
    else:
        target = (d.get('target') or {}).get('instances')
        what = '{0} {1} -> {2} instances'.format(d['action'], d.get('instances'), target)
    return '{0}/{1}: current [{2}] forecast peak [{3}] decision {4}: {5}'.format(
        d['template'], d['service'], cur or 'no data', fc or 'none', what, d.get('reason', ''))


# ------------------------------------------------------------------------------------------------ apply

def _run_id():
    return '{0}:{1}'.format(socket.gethostname(), os.getpid())


def claim(api, anchor, decision, record):
    """Record ``record`` as the service's last action on the anchor primary, only if nothing else was recorded
    since the decision's basis. Digest-checked: a concurrent writer makes PVE refuse our PUT; the re-read then
    shows its record and we stand down.

    Returns None when this run owns the action (its record is written), else the competing record (a dict with
    ``action``, ``time`` and ``by``) that was written after the decision's basis: the caller stands down."""
    basis = decision.get('basis_time')
    outcome = {}

    def compute(cfg):
        dummy, meta = metablock.parse_description(cfg.get('description', ''))
        rec = (meta or {}).get('scaling') or {}
        seen = rec.get('time') if isinstance(rec, dict) else None
        if seen is not None and (basis is None or float(seen) > float(basis)):
            outcome['lost'] = rec
            return {}, []
        new, dummy, changed = metablock.merge_description(cfg.get('description', ''), {'scaling': record})
        tags = set(t for t in propstr.parse_tags(cfg.get('tags')) if not LAST_TAG.match(t))
        tags.add(last_action_tag(record['action'], record['time']))
        updates = {'tags': propstr.format_tags(tags)}
        if changed:
            updates['description'] = new
        return updates, []

    api.update_vm_config(anchor['node'], anchor['vmid'], compute)
    return outcome.get('lost')


def _base_vm(plan, service, prim_names):
    candidates = [v for v in plan.get('vms') or [] if v.get('service') == service and v.get('role') == 'primary']
    if not candidates:
        raise ScalingError('the plan has no primary of service {0!r} to copy'.format(service))
    return sorted(candidates, key=lambda v: v['index'])[0]


def new_instance_vm(plan, entry, base, index):
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


def wiring_for(plan, service, base_name, added):
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


def apply_decision(api, make_api, plan, decision, check_mode=False, forecast_only=False, state='started',
                   hookscript=None, timeout=900, parallel=4, now=None, resources=None, nodes=None):
    """Act on one decision of forecast_plan. Returns a result dict (changed, applied, reason, ...).

    ``resources`` / ``nodes``: listings to reuse in check mode; a real action always reads them afresh.
    """
    now = time.time() if now is None else now
    service = decision['service']
    entry = scaling_entry(plan, service)
    res = dict(template=plan['template'], service=service, mode=entry['mode'], action=decision.get('action'),
               changed=False, applied=False, created=[], removed=[], resized=[], pending=[], restart_needed=[],
               mirrors_to_add=[], mirrors_to_remove=[], vrrp_members_to_add=[], vrrp_members_to_remove=[],
               reason=decision.get('reason', ''))
    if decision.get('action') in (None, 'none'):
        return res
    if forecast_only or decision.get('forecast_only') or not decision.get('act'):
        res['reason'] = '[forecast-only: not acted on] ' + res['reason'].replace('[forecast-only: not acted on] ', '')
        return res
    if resources is None or not check_mode:
        resources = api.resources('vm')
    prim, dummy = service_vms(resources, plan, service)
    if not prim:
        res['reason'] = 'no primaries of this service in the cluster: nothing to scale'
        return res
    if check_mode:
        # Nothing will be written: the tags in the listing tell whether another run acted since the decision.
        st, configs = state_from_tags(prim, entry), {}
        if entry['mode'] == 'vertical':
            configs = dict((vm['name'], api.vm_config(vm['node'], vm['vmid'])[0]) for vm in prim)
    else:
        st, configs = read_state(api, prim)
    basis = decision.get('basis_time')
    if st.get('time') is not None and (basis is None or float(st['time']) > float(basis)):
        res['reason'] = ('not acted on: another reconciler recorded {0} at {1} after this decision was based on '
                         'PVE state ({2})'.format(st.get('action'), _iso(st['time']), st.get('by', 'unknown')))
        res['skipped'] = 'superseded'
        return res
    n = len(prim)
    target = decision.get('target') or {}
    if entry['mode'] == 'horizontal':
        want = int(target.get('instances', n))
        if want == n:
            res['reason'] = 'already {0} instances'.format(n)
            return res
    else:
        waiting = pending_resizes(prim, configs)
        if waiting:
            # The forecast sees the size the primaries run with; another resize would only rewrite a pending one.
            res['pending'] = [dict(name=name, keys=keys) for name, keys, dummy in waiting]
            res['restart_needed'] = [name for name, dummy, dummy2 in waiting]
            res['skipped'] = 'pending_restart'
            res['reason'] = ('not acted on: an earlier resize is still pending until the next restart (needs a reboot): '
                             '{0}; restart these primaries (one at a time) to apply it'.format(
                                 '; '.join('{0}: {1}'.format(name, what) for name, dummy, what in waiting)))
            return res
    now = int(now)  # whole seconds: the record's time is also in the anchor's sn-last tag
    record = dict(action=decision['action'], time=now, by=_run_id(), mode=entry['mode'],
                  cooldown_until={'up': now + entry['cooldown']['up_seconds'],
                                  'down': now + entry['cooldown']['down_seconds']})
    if entry['mode'] == 'horizontal':
        record.update({'from': n, 'to': want})
    else:
        record.update(cores=int(target['cores']), memory=int(target['memory']))
    res['changed'] = True
    res['record'] = record
    if not check_mode:
        api.require_quorum()
        lost = claim(api, prim[0], decision, record)
        if lost:
            res.update(changed=False, skipped='claimed', reason='not acted on: another reconciler claimed this '
                       'scaling action first ({0} at {1} by {2})'.format(lost.get('action'), _iso(lost.get('time')),
                                                                         lost.get('by', 'unknown')))
            return res
    if entry['mode'] == 'horizontal':
        _apply_horizontal(api, make_api, plan, entry, prim, want, res, check_mode, state, hookscript, timeout,
                          parallel, listings=(resources, nodes) if check_mode else (None, None))
    else:
        _apply_vertical(api, prim, configs, target, res, check_mode)
    res['applied'] = not check_mode
    return res


def _iso(ts):
    if ts is None:
        return 'unknown time'
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(float(ts)))


def _apply_horizontal(api, make_api, plan, entry, prim, want, res, check_mode, state, hookscript, timeout, parallel,
                      listings=(None, None)):
    service = entry['service']
    n = len(prim)
    indexed = [(instance_index(v['name'], plan, service), v) for v in prim]
    base = _base_vm(plan, service, [v['name'] for v in prim])
    if want > n:
        top = max([i for i, v in indexed if i is not None] or [0])
        added = [(entry['name_prefix'] + str(top + k), top + k) for k in range(1, want - n + 1)]
        specs = []
        for name, index in added:
            spec = vmengine.spec_from_plan(new_instance_vm(plan, entry, base, index), state=state,
                                           hookscript=hookscript, timeout=timeout)
            if entry.get('shadow'):
                spec.avoid_vms = [entry['shadow']]  # keep the shadow's spread: not on the shadow's node
            specs.append(spec)
        results = vmengine.ensure_many(make_api, specs, check_mode=check_mode, parallel=parallel, resources=listings[0], nodes=listings[1])
        failed = [r for r in results if r.get('failed')]
        res['created'] = [r['name'] for r in results if r.get('created') and not r.get('failed')]
        res['instances'] = [dict(name=r['name'], vmid=r.get('vmid'), node=r.get('node')) for r in results]
        res['mirrors_to_add'], res['vrrp_members_to_add'] = wiring_for(plan, service, base['name'], added)
        if failed:
            raise ScalingError('scale-out of {0}/{1} failed for {2}'.format(
                plan['template'], service, '; '.join('{0}: {1}'.format(r['name'], r.get('msg')) for r in failed)))
        res['reason'] = '{0}: added {1}'.format(res['reason'], ', '.join(n for n, i in added))
    else:
        # Scale in: the highest indexes go (the anchor, the lowest index, stays).
        order = sorted(indexed, key=lambda iv: (iv[0] is None, iv[0] or 0), reverse=True)
        gone = [v for i, v in order[:n - want]]
        removed = [(v['name'], instance_index(v['name'], plan, service) or 0) for v in gone]
        listing = listings[0] if listings[0] is not None else api.resources('vm')
        resources = [r for r in listing if r.get('name') in set(v['name'] for v in gone)]
        results = vmengine.remove_many(make_api, resources, check_mode=check_mode, timeout=timeout)
        failed = [r for r in results if r.get('failed')]
        res['removed'] = [r['name'] for r in results if r.get('changed')]
        res['mirrors_to_remove'], res['vrrp_members_to_remove'] = wiring_for(plan, service, base['name'], removed)
        if failed:
            raise ScalingError('scale-in of {0}/{1} failed for {2}'.format(
                plan['template'], service, '; '.join('{0}: {1}'.format(r['name'], r.get('msg')) for r in failed)))
        res['reason'] = '{0}: removed {1}'.format(res['reason'], ', '.join(n for n, i in removed))


def vertical_changes(cfg, running, cores, memory):
    """(changes, notes) to resize one VM; notes say what stays pending until a restart and why."""
    changes, notes = {}, []
    features = hotplug_features(cfg)
    sockets = int(cfg.get('sockets', 1))
    configured = int(cfg.get('cores', 1)) * sockets
    if effective_cores(cfg) != cores:
        if running and 'cpu' in features and cores <= configured:
            changes['vcpus'] = cores
        else:
            changes['cores'] = int(math.ceil(cores / float(sockets)))
            if 'vcpus' in cfg:
                changes['vcpus'] = cores
            if running:
                notes.append('cores {0} pending until the next restart, needs a reboot ({1})'.format(
                    cores, 'hotplug lacks cpu' if 'cpu' not in features
                    else 'more than the {0} configured cores; raise cores and set vcpus to hot-plug later'.format(
                        configured)))
    if propstr.parse_memory(cfg.get('memory', 512)) != memory:
        changes['memory'] = memory
        numa = str(cfg.get('numa', '0')) in ('1', 'true')
        if running and not ('memory' in features and numa):
            notes.append('memory {0} MiB pending until the next restart, needs a reboot (hot-plug needs hotplug with '
                         'memory and numa=1)'
                         .format(memory))
    return changes, notes


def pending_resizes(primaries, configs):
    """``[(name, keys, what)]`` of running primaries whose configuration (GET config, with PVE's pending values)
    has another size than the one they run with (/cluster/resources ``maxcpu``, ``maxmem``: the running config, as
    qemu-server ``vmstatus`` reports it): a resize PVE keeps pending until the VM's next start."""
    out = []
    for vm in primaries:
        cfg = configs.get(vm['name'])
        if cfg is None or vm.get('status') != 'running':
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


def hotplug_features(cfg):
    value = str(cfg.get('hotplug', 'network,disk,usb'))
    if value == '0':
        return set()
    if value == '1':
        value = 'network,disk,usb'
    return set(v for v in re.split(r'[,;\s]+', value) if v)


def _apply_vertical(api, prim, configs, target, res, check_mode):
    cores, memory = int(target['cores']), int(target['memory'])
    notes = []
    for vm in prim:
        running = vm.get('status') == 'running'

        def compute(cfg, running=running):
            changes, vm_notes = vertical_changes(cfg, running, cores, memory)
            compute.notes = vm_notes
            return changes, []
        compute.notes = []
        before, changes, dummy = api.update_vm_config(vm['node'], vm['vmid'], compute, check_mode=check_mode)
        if changes:
            res['resized'].append(dict(name=vm['name'], changes=changes,
                                       before=dict(cores=effective_cores(before),
                                                   memory=propstr.parse_memory(before.get('memory', 512)))))
            notes.extend('{0}: {1}'.format(vm['name'], note) for note in compute.notes)
            if not check_mode and running:
                pending = api.get('nodes/{0}/qemu/{1}/pending'.format(vm['node'], vm['vmid'])) or []
                keys = sorted(p['key'] for p in pending if 'pending' in p or p.get('delete'))
                if keys:
                    res['pending'].append(dict(name=vm['name'], keys=keys))
                    res['restart_needed'].append(vm['name'])
    res['notes'] = notes
    if notes:
        res['reason'] = '{0}; {1}'.format(res['reason'], '; '.join(notes))

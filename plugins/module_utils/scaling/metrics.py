# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics of the managed VMs: collection from PVE and normalisation (pure where possible).

One run reads ``/cluster/resources`` once and ``rrddata`` of every managed VM, a few VMs at a time. PVE keeps a
day of one-minute history and the forecaster needs more than the hour PVE 9 gives in ``hour``
(pve-cluster ``src/PVE/RRD.pm`` ``create_rrd_data``):

* PVE 9: ``hour`` is 60 one-minute rows, ``day`` 1440 one-minute rows (``day`` holds ``hour``);
* PVE 8 (and VMs whose RRD was not migrated): ``hour`` is 70 one-minute rows, ``day`` 70 30-minute rows.

A VM whose history (the store) does not yet cover the last day is read with ``day``, and with ``hour`` as well when
``day`` came back coarser than a minute (PVE 8); a VM whose history is already complete is read with ``hour`` only.
Per reconcile that is one ``/cluster/resources`` plus, per managed VM, one ``rrddata`` request (PVE 9, or any VM with
a complete history) or two (PVE 8, history incomplete). Rows are labelled with the end of the interval they
consolidate; a coarse row is spread over the minutes it covers where no one-minute row is known, and such filled
minutes never replace a value the history already holds. Every point is normalised to the instance's own capacity:

* ``cpu``: PVE already gives a fraction of ``maxcpu``; ``cpu_cores`` = cpu x maxcpu (the demand in cores);
* ``mem``: mem / maxmem; ``mem_mib`` = mem in MiB;
* ``netin_bps`` / ``netout_bps``: PVE's bytes/s x 8; ``net`` = max(in, out) / the service's ``net.high_bps``.

History series are named ``<template>/<service>/<vm name>/<metric>`` (see module_utils/scaling/history.py), so primaries
that were scaled in keep counting towards the service's past demand, and the shadow (``<template>-<service>-shadow``)
is told apart by its name.
"""

import bisect
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr

MIB = 1024 * 1024
RRD_STEP = 60
# pve-cluster RRD.pm create_rrd_data: `hour` is the newest hour at one minute (60 rows in PVE 9, 70 in PVE 8);
# `day` is a full day at one minute in PVE 9 (1440 rows) and 70 half-hours in PVE 8.
RECENT_TIMEFRAME = 'hour'
HISTORY_TIMEFRAME = 'day'
HISTORY_SECONDS = 86400
DEFAULT_NET_HIGH_BPS = 800000000
HISTORY_METRICS = ('cpu', 'cpu_cores', 'mem', 'mem_mib', 'netin_bps', 'netout_bps')
ROLE_TAGS = {'sn-primary': 'primary', 'sn-shadow': 'shadow'}


def plans_from_option(value):
    """The plans option as ``{template: plan}``: a dict of plans (``result.plans``), one plan, or a list."""
    if not value:
        return {}
    if isinstance(value, dict) and 'plan_version' in value:
        return {value['template']: value}
    if isinstance(value, dict):
        out = {}
        for name, plan in value.items():
            if not isinstance(plan, dict) or 'template' not in plan:
                raise ValueError('plans.{0} is not a plan from shadownet.proxmox.template'.format(name))
            out[plan['template']] = plan
        return out
    if isinstance(value, list):
        out = {}
        for plan in value:
            if not isinstance(plan, dict) or 'template' not in plan:
                raise ValueError('every entry of plans must be a plan from shadownet.proxmox.template')
            out[plan['template']] = plan
        return out
    raise ValueError('plans must be a dict of plans (result.plans), one plan or a list of plans')


def classify_vm(res, template, services=None):
    """``(service, role)`` of a managed VM of ``template`` from its tags, or None when it is not one.

    The service tag is the ``sn-*`` tag that is neither the template's nor a role tag; a service named like
    its template shares the template's tag. ``services`` (names from the plan) settles any ambiguity.
    """
    if res.get('type') != 'qemu' or res.get('template'):
        return None
    tags = propstr.parse_tags(res.get('tags'))
    if 'shadownet' not in tags or 'sn-' + template not in tags:
        return None
    roles = [ROLE_TAGS[t] for t in tags if t in ROLE_TAGS]
    if len(roles) != 1:
        return None
    rest = sorted(t[3:] for t in tags if t.startswith('sn-') and t not in ROLE_TAGS and t != 'sn-' + template)
    if services is not None:
        rest = [s for s in rest if s in services] or ([template] if template in services else [])
    elif not rest:
        rest = [template]
    if len(rest) != 1:
        return None
    return rest[0], roles[0]


def managed_vms(resources, templates, plans=None):
    """``[{template, service, role, name, vmid, node, status, maxcpu, maxmem}]`` sorted by template and name."""
    plans = plans or {}
    out = []
    for template in templates:
        plan = plans.get(template)
        services = [s['service'] for s in plan.get('scaling') or []] if plan else None
        for res in resources:
            found = classify_vm(res, template, services)
            if found is None or not res.get('name'):
                continue    # nameless: a VM of a node down for 5 minutes (PVE forgot its name), no usage either
            out.append(dict(template=template, service=found[0], role=found[1], name=res.get('name'),
                            vmid=int(res['vmid']), node=res.get('node'), status=res.get('status'),
                            maxcpu=_num(res.get('maxcpu')), maxmem=_num(res.get('maxmem')),
                            tags=res.get('tags') or ''))
    return sorted(out, key=lambda v: (v['template'], v['service'], v['role'] != 'primary', v['name']))


def _num(value):
    if value is None or value == '':
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def normalise_point(point, maxcpu=None, maxmem=None, net_high_bps=DEFAULT_NET_HIGH_BPS):
    """One rrddata point -> normalised values (None where PVE had no value: a gap)."""
    ts = int(point['time'])
    cpu = _num(point.get('cpu'))
    mcpu = _num(point.get('maxcpu')) or maxcpu
    mem = _num(point.get('mem'))
    mmem = _num(point.get('maxmem')) or maxmem
    netin = _num(point.get('netin'))
    netout = _num(point.get('netout'))
    out = dict(time=ts, cpu=cpu, cpu_cores=None, mem=None, mem_mib=None, netin_bps=None, netout_bps=None, net=None)
    if cpu is not None and mcpu:
        out['cpu_cores'] = cpu * mcpu
    if mem is not None:
        out['mem_mib'] = mem / MIB
        if mmem:
            out['mem'] = mem / mmem
    if netin is not None:
        out['netin_bps'] = netin * 8.0
    if netout is not None:
        out['netout_bps'] = netout * 8.0
    nets = [v for v in (out['netin_bps'], out['netout_bps']) if v is not None]
    if nets and net_high_bps:
        out['net'] = max(nets) / float(net_high_bps)
    return out


def series_key(template, service, name, metric):
    return '{0}/{1}/{2}/{3}'.format(template, service, name, metric)


def history_points(vm, points, filled=False):
    """(series, ts, value) triples of one VM's normalised points, for HistoryStore.append: the points PVE gave at
    one minute, or (``filled``) those spread from coarser rows."""
    out = []
    for point in points:
        if bool(point.get('filled')) != filled:
            continue
        for metric in HISTORY_METRICS:
            if point.get(metric) is not None:
                out.append((series_key(vm['template'], vm['service'], vm['name'], metric), point['time'],
                            point[metric]))
    return out


def net_high_of(plans, template, service):
    plan = plans.get(template) or {}
    for entry in plan.get('scaling') or []:
        if entry.get('service') == service:
            return int((entry.get('net') or {}).get('high_bps') or DEFAULT_NET_HIGH_BPS)
    return DEFAULT_NET_HIGH_BPS


def latest(points):
    """The newest point that has a cpu value (PVE's last bucket may still be empty)."""
    for point in reversed(points):
        if point.get('cpu') is not None:
            return point
    return points[-1] if points else None


def _has_data(row):
    return any(k != 'time' for k in row)


def merge_rrd(answers, step=RRD_STEP, spread=True):
    """One VM's rrddata answers (any timeframes, PVE 8 or PVE 9 shapes) -> ``(fine, filled)`` raw rows, oldest first.

    A row is labelled with the end of the interval it consolidates (RRDs::fetch), so it covers the time since the
    row before it; this holds within one answer even where PVE 9 joins an old PVE 8 file's coarse rows to new
    one-minute rows (pve-cluster RRD.pm create_rrd_data: the old file's rows up to the one holding its last update,
    then the new file's from that update on, so the time steps back once). ``fine`` are the rows of one minute (a
    time present in several answers is taken from the one with data); ``filled`` are coarser rows spread over the
    minutes they cover, one row a minute, where no fine row with data is known. With ``spread=False`` (a month of
    30-minute rows would be 43,200 minutes a VM) a coarse row
    stays one row, labelled with the middle minute of its interval, and is kept only where no fine row with data
    falls inside that interval (where several coarse rows cover the same minute the finer one wins).
    """
    fine, coarse = {}, []
    for answer in answers:
        # In answer order: where PVE 9 joins the old file's rows (up to the end of the old row that holds the
        # upgrade) to the new file's (from the upgrade on), time steps back once; that row takes the next spacing.
        rows = [r for r in answer or [] if 'time' in r]
        for i, row in enumerate(rows):
            ts = int(row['time'])
            covers = ts - int(rows[i - 1]['time']) if i else 0
            if covers <= 0:
                covers = int(rows[i + 1]['time']) - ts if i + 1 < len(rows) else step
                covers = covers if covers > 0 else step
            if covers <= step:
                if ts not in fine or (_has_data(row) and not _has_data(fine[ts])):
                    fine[ts] = row
            elif _has_data(row):
                coarse.append((ts, covers, row))
    filled = {}
    if not spread:
        known = sorted(t for t, row in fine.items() if _has_data(row))
        starts, ends = [], []    # the intervals taken so far, disjoint, sorted
        for ts, covers, row in sorted(coarse, key=lambda c: (c[1], c[0])):
            start = ts - covers
            i = bisect.bisect_left(starts, start)
            if _any_in(known, start, ts) or (i and ends[i - 1] > start) or (i < len(starts) and starts[i] < ts):
                continue
            starts.insert(i, start)
            ends.insert(i, ts)
            middle = (ts - covers // 2) // step * step
            filled[middle] = dict(row, time=middle, covers=covers)
        return [fine[t] for t in sorted(fine)], [filled[t] for t in sorted(filled)]
    for ts, covers, row in coarse:
        end = ts // step * step
        for minute in range(end - covers + step, end + step, step):
            if minute in filled or (minute in fine and _has_data(fine[minute])):
                continue
            filled[minute] = dict(row, time=minute)
    return [fine[t] for t in sorted(fine)], [filled[t] for t in sorted(filled)]


def _any_in(times, start, end):
    """Whether the sorted ``times`` hold one in (start, end]."""
    i = bisect.bisect_right(times, start)
    return i < len(times) and times[i] <= end


def needs_coarse_check(rows, step=RRD_STEP):
    """True when an answer's newest rows are coarser than one minute (PVE 8's `day`) or cannot tell."""
    times = sorted(int(r['time']) for r in rows or [] if 'time' in r)
    return len(times) < 2 or times[-1] - times[-2] > step


def read_rrd(api, vm, timeframes):
    """One VM's rrddata answers (AVERAGE) for ``timeframes``, in order; ``hour`` is added (to ``timeframes`` too) when
    ``day`` came back coarser than a minute (PVE 8, or a PVE 9 VM whose RRD was not migrated). Raises PveApiError."""
    path = 'nodes/{0}/qemu/{1}/rrddata'.format(vm['node'], vm['vmid'])
    answers = []
    for frame in list(timeframes):
        answers.append(api.get(path, timeframe=frame, cf='AVERAGE') or [])
        if frame == HISTORY_TIMEFRAME and RECENT_TIMEFRAME not in timeframes and needs_coarse_check(answers[-1]):
            timeframes.append(RECENT_TIMEFRAME)
            answers.append(api.get(path, timeframe=RECENT_TIMEFRAME, cf='AVERAGE') or [])
    return answers


def parallel_map(fn, items, parallel):
    """``[fn(item) for item in items]`` with up to ``parallel`` calls in flight (PVE requests, one per item), in order."""
    workers = max(1, min(int(parallel), len(items) or 1))
    if workers == 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(fn, items))


def collect(api, templates, plans=None, parallel=4, complete=None):
    """Read usage of every managed VM of ``templates``: one /cluster/resources, then rrddata per VM.

    ``complete(vm)`` says whether the history already holds the VM's last day (then only ``hour`` is read);
    without it every VM is read with ``day`` (and ``hour`` where ``day`` is coarse, PVE 8).
    Returns ``(vms, errors)``: each vm dict gains ``points`` (normalised, oldest first; points spread from coarse
    rows carry ``filled: True``) and ``timeframes`` (what was read); errors is a list of ``{name, msg}`` for VMs
    whose rrddata could not be read (they are reported, the others still count).
    """
    plans = plans or {}
    resources = api.resources('vm')
    vms = managed_vms(resources, templates, plans)
    errors = []
    # Asked here, in the calling thread (a history store need not be usable from the reading threads).
    recent_only = set(vm['vmid'] for vm in vms if complete is not None and complete(vm))

    def read(vm):
        from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError
        frames = [RECENT_TIMEFRAME] if vm['vmid'] in recent_only else [HISTORY_TIMEFRAME]
        try:
            answers = read_rrd(api, vm, frames)
        except PveApiError as exc:
            return vm, frames, None, exc.message
        high = net_high_of(plans, vm['template'], vm['service'])
        fine, filled = merge_rrd(answers)
        points = [normalise_point(p, vm['maxcpu'], vm['maxmem'], high) for p in fine]
        points += [dict(normalise_point(p, vm['maxcpu'], vm['maxmem'], high), filled=True) for p in filled]
        return vm, frames, sorted(points, key=lambda p: p['time']), None

    answers = parallel_map(read, vms, parallel)
    out = []
    for vm, frames, points, error in answers:
        if error is not None:
            errors.append(dict(name=vm['name'], msg=error))
            points = []
        out.append(dict(vm, points=points, timeframes=frames))
    return out, errors


def summarise(vms):
    """Per service: the primaries' and the shadow's newest normalised values (what the module returns)."""
    services = {}
    for vm in vms:
        key = (vm['template'], vm['service'])
        entry = services.setdefault(key, dict(template=vm['template'], service=vm['service'], primaries=[],
                                              shadow=None, points=0))
        last = latest(vm['points']) or {}
        item = dict(name=vm['name'], vmid=vm['vmid'], node=vm['node'], status=vm['status'],
                    time=last.get('time'), cpu=_round(last.get('cpu')), mem=_round(last.get('mem')),
                    net=_round(last.get('net')), netin_bps=_round(last.get('netin_bps'), 0),
                    netout_bps=_round(last.get('netout_bps'), 0),
                    points=len([p for p in vm['points'] if p.get('cpu') is not None]))
        entry['points'] += item['points']
        if vm['role'] == 'primary':
            entry['primaries'].append(item)
        else:
            entry['shadow'] = item
    out = []
    for key in sorted(services):
        entry = services[key]
        prim = entry['primaries']
        entry['instances'] = len(prim)
        for metric in ('cpu', 'mem', 'net'):
            vals = [p[metric] for p in prim if p[metric] is not None]
            entry[metric] = _round(sum(vals) / len(vals)) if vals else None
        out.append(entry)
    return out


def _round(value, digits=4):
    if value is None:
        return None
    return round(float(value), digits) if digits else int(round(value))

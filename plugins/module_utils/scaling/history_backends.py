# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where the forecasts' history comes from: the ``history`` option of the metrics and forecast modules.

``history: {backend: pve|sqlite|prometheus, path: <sqlite file>, ...}`` (:func:`history_config`):

* ``pve`` (the default, stateless): every forecast run reads the managed VMs' own RRD history from PVE into a
  :class:`~history.MemoryHistoryStore` (:func:`load_pve`): nothing is kept between runs, so a fresh controller (an
  AWX job's container, a new cron host) forecasts from its first run.
* ``sqlite``: the same reads, merged into a SQLite file (a cache, for retention beyond the 30 days PVE keeps). The
  legacy ``history_path`` option and the ``SHADOWNET_HISTORY`` environment variable select it.
* ``prometheus``: ``query_range`` against a Prometheus that scrapes prometheus-pve-exporter
  (module_utils/scaling/prometheus.py, imported only when chosen).

A loader is ``load_history(store, vms, since, until, config, now=None) -> summary``: it appends points keyed by
``metrics.series_key(template, service, name, metric)`` for the metrics in ``metrics.HISTORY_METRICS``,
normalised as ``metrics.normalise_point`` does, one point a minute labelled with the end of its minute (as PVE's
rows); coarser history is one point per coarse interval (labelled with its middle minute) where no minute is known.
``vms`` are dicts as ``metrics.managed_vms`` returns them: ``template, service, role ('primary'|'shadow'), name,
vmid (int), node, status, maxcpu (float|None), maxmem (bytes, float|None), tags``. The summary is
``{backend, requests, queries, points, vms: {name: {fine: [first, last, count], coarse: {seconds: count}}},
warnings: [str], errors: [{name, msg}]}`` (``requests`` PVE API requests, ``queries`` Prometheus queries).
The forecast calls a loader once per batch of services (about BATCH_VMS VMs; all VMs in one call for
prometheus). A loader raises ``history.HistoryError`` (with a message naming the URL/query or VM and the fix) when the backend
cannot be used at all; per-VM problems go to ``warnings``/``errors`` and the other VMs still count.
"""

import os

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.scaling import DEFAULT_HISTORY, HISTORY_ENV

BACKENDS = ('pve', 'sqlite', 'prometheus')
DEFAULT_BACKEND = 'pve'
BACKEND_ENV = 'SHADOWNET_HISTORY_BACKEND'
PATH_ENV = HISTORY_ENV
DEFAULT_PATH = DEFAULT_HISTORY
PROMETHEUS_OPTIONS = ('url', 'ca_path', 'validate_certs', 'bearer_token', 'username', 'password', 'timeout',
                      'retries', 'queries', 'step')
PROMETHEUS_ENV = {'url': 'SHADOWNET_PROMETHEUS_URL', 'bearer_token': 'SHADOWNET_PROMETHEUS_TOKEN',
                  'username': 'SHADOWNET_PROMETHEUS_USER', 'password': 'SHADOWNET_PROMETHEUS_PASSWORD',
                  'ca_path': 'SHADOWNET_PROMETHEUS_CA_PATH'}
DAY = metrics_utils.HISTORY_SECONDS
MONTH_TIMEFRAME = 'month'
# VMs whose history one forecast batch holds in memory (a day at one minute: about 1440 x 6 points a VM).
BATCH_VMS = 64

# The ``history`` option of the metrics and forecast modules (documented in doc_fragments/history.py).
HISTORY_ARGUMENT_SPEC = dict(
    type='dict',
    options=dict(
        backend=dict(type='str', choices=list(BACKENDS)),
        path=dict(type='path'),
        url=dict(type='str'),
        ca_path=dict(type='path'),
        validate_certs=dict(type='bool'),
        bearer_token=dict(type='str', no_log=True),
        username=dict(type='str'),
        password=dict(type='str', no_log=True),
        timeout=dict(type='float'),
        retries=dict(type='int'),
        queries=dict(type='dict'),
        step=dict(type='int'),
    ),
)


class HistoryConfigError(ValueError):
    """The ``history`` option cannot be used; the message names the field and the fix."""


def history_argument_spec():
    return dict(HISTORY_ARGUMENT_SPEC, options=dict((k, dict(v)) for k, v in HISTORY_ARGUMENT_SPEC['options'].items()))


def history_config(option=None, history_path=None, environ=None):
    """The ``history`` option (and the legacy ``history_path``) -> ``{backend, path, <backend options>}``.

    The backend is ``history.backend``, else E(SHADOWNET_HISTORY_BACKEND), else ``sqlite`` when a path is given
    (``history.path``, ``history_path`` or E(SHADOWNET_HISTORY): what earlier releases did), else ``pve``.
    Prometheus options not given fall back to their E(SHADOWNET_PROMETHEUS_*) variables.
    """
    environ = os.environ if environ is None else environ
    given = dict((k, v) for k, v in (option or {}).items() if v is not None)
    unknown = sorted(set(given) - set(HISTORY_ARGUMENT_SPEC['options']))
    if unknown:
        raise HistoryConfigError('history: unknown option(s) {0}; known: {1}'.format(
            ', '.join(unknown), ', '.join(sorted(HISTORY_ARGUMENT_SPEC['options']))))
    if given.get('path') and history_path and os.path.expanduser(given['path']) != os.path.expanduser(history_path):
        raise HistoryConfigError('history.path ({0}) and history_path ({1}) disagree: give one of them'.format(
            given['path'], history_path))
    explicit_path = given.get('path') or history_path
    backend = given.get('backend') or environ.get(BACKEND_ENV) or ''
    if not backend:
        backend = 'sqlite' if explicit_path or environ.get(PATH_ENV) else DEFAULT_BACKEND
    if backend not in BACKENDS:
        source = 'history.backend' if given.get('backend') else BACKEND_ENV
        raise HistoryConfigError('{0} is {1!r}: use one of {2}'.format(source, backend, ', '.join(BACKENDS)))
    config = dict(backend=backend, path=None)
    if backend == 'sqlite':
        config['path'] = os.path.expanduser(explicit_path or environ.get(PATH_ENV) or DEFAULT_PATH)
    elif explicit_path:
        raise HistoryConfigError('history.path (or history_path) is only used by backend sqlite, and backend is {0}: '
                                 'drop the path or set history.backend: sqlite'.format(backend))
    prom = [k for k in PROMETHEUS_OPTIONS if k in given]
    if backend != 'prometheus' and prom:
        raise HistoryConfigError('history.{0} is only used by backend prometheus (backend is {1})'.format(
            prom[0], backend))
    if backend == 'prometheus':
        for key in PROMETHEUS_OPTIONS:
            value = given.get(key)
            if value is None and key in PROMETHEUS_ENV:
                value = environ.get(PROMETHEUS_ENV[key]) or None
            config[key] = value
        if not config['url']:
            raise HistoryConfigError('history.url (or {0}) is required for backend prometheus: the base URL of '
                                     'the Prometheus HTTP API, e.g. https://prometheus.example:9090'.format(
                                         PROMETHEUS_ENV['url']))
    return config


def open_store(config, check_mode=False, prefixes=(), since=None):
    """The store a run reads and writes: a MemoryHistoryStore (pve, prometheus), the SQLite file (sqlite).

    In check mode the SQLite file is not written: its series under ``prefixes`` (``<template>/``) since ``since`` are
    copied into a MemoryHistoryStore (nothing at all when the file does not exist)."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history
    if config['backend'] != 'sqlite':
        return history.MemoryHistoryStore()
    if not check_mode:
        return history.open_store(config['path'])
    memory = history.MemoryHistoryStore()
    if not os.path.exists(config['path']):
        return memory
    with history.open_store(config['path']) as cache:
        for key in cache.keys():
            if any(key.startswith(p) for p in prefixes):
                memory.append([(key, ts, v) for ts, v in cache.series(key, since=since)])
    return memory


def empty_summary(backend):
    return dict(backend=backend, requests=0, queries=0, points=0, vms={}, warnings=[], errors=[])


def add_summary(total, part):
    """Sum one batch's loader summary into ``total`` (counts added, per-VM entries and messages joined)."""
    for key, value in part.items():
        if key in ('requests', 'queries', 'points'):
            total[key] = total.get(key, 0) + (value or 0)
        elif key == 'vms':
            total['vms'].update(value or {})
        elif key in ('warnings', 'errors'):
            total[key].extend(value or [])
        elif key not in total:
            total[key] = value
    return total


def describe(summary):
    """Where a run's history came from, for people (the report's run metadata), from the loaders' summary: it holds
    the SQLite path and the Prometheus URL already without credentials."""
    if summary['backend'] == 'sqlite':
        return "PVE's RRD with the SQLite cache {0}".format(summary.get('path'))
    if summary['backend'] == 'prometheus':
        return 'Prometheus {0}'.format(summary.get('url') or '').rstrip()
    return "PVE's RRD (stateless)"


def batches(keys, vms, config, size=None):
    """``keys`` ((template, service) pairs, in order) in batches of about ``size`` VMs (BATCH_VMS), a service never
    split; one batch for prometheus, whose loader asks one query per metric for all VMs at once."""
    if config['backend'] == 'prometheus':
        return [list(keys)] if keys else []
    size = BATCH_VMS if size is None else size
    count = {}
    for vm in vms:
        key = (vm['template'], vm['service'])
        count[key] = count.get(key, 0) + 1
    out, current, held = [], [], 0
    for key in keys:
        current.append(key)
        held += count.get(key, 0)
        if held >= size:
            out.append(current)
            current, held = [], 0
    if current:
        out.append(current)
    return out


def load_history(store, vms, since, until, config, now=None, api=None, plans=None, parallel=4, complete=None):
    """Append the history of ``vms`` in [since, until] to ``store`` from the configured backend; the summary."""
    if config['backend'] == 'prometheus':
        from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import prometheus
        return prometheus.load_history(store, vms, since, until, config, now=now)
    if api is None:
        raise ValueError('backend {0} reads PVE: an api is needed'.format(config['backend']))
    return load_pve(store, vms, since, until, api, plans=plans, parallel=parallel, complete=complete, now=now)


def pve_timeframes(since, until):
    """The rrddata timeframes a window needs: ``day`` (PVE 9: 1440 one-minute rows), and ``month`` (1440 half-hours,
    30 days) when the window reaches back further than the day. ``hour`` is added per VM where ``day`` is coarse."""
    frames = [metrics_utils.HISTORY_TIMEFRAME]
    if since is None or until - since > DAY:
        frames.append(MONTH_TIMEFRAME)
    return frames


def load_pve(store, vms, since, until, api, plans=None, parallel=4, complete=None, now=None):
    """PVE's own RRD history of ``vms`` into ``store``: rrddata per VM and timeframe, ``parallel`` VMs at a time.

    One-minute rows win where rows of several timeframes cover the same time (they replace a stored value, since PVE
    revises its newest row); coarser rows (``month``, PVE 8's ``day``) are one point per interval, kept only where no
    minute is known and never replacing a stored value. ``complete(vm)`` (the sqlite cache already holds the VM's
    last day) reads ``hour`` only. Requests: one per VM and timeframe (+ ``hour`` where ``day`` is coarse).
    """
    plans = plans or {}
    frames = pve_timeframes(since, until)
    recent_only = set(vm['vmid'] for vm in vms if complete is not None and complete(vm))
    summary = dict(backend='pve', requests=0, queries=0, points=0, vms={}, warnings=[], errors=[])

    def read(vm):
        from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError
        wanted = [metrics_utils.RECENT_TIMEFRAME] if vm['vmid'] in recent_only else list(frames)
        try:
            answers = metrics_utils.read_rrd(api, vm, wanted)
        except PveApiError as exc:
            return vm, wanted, None, exc.message
        return vm, wanted, answers, None

    results = metrics_utils.parallel_map(read, vms, parallel)
    for vm, wanted, answers, error in results:
        summary['requests'] += len(wanted) if error is None else 1
        if error is not None:
            summary['errors'].append(dict(name=vm['name'], msg=error))
            summary['warnings'].append('rrddata of {0} could not be read: {1}'.format(vm['name'], error))
            continue
        high = metrics_utils.net_high_of(plans, vm['template'], vm['service'])
        fine, coarse = metrics_utils.merge_rrd(answers, spread=False)
        fine = [p for p in fine if since is None or int(p['time']) >= since]
        coarse = [p for p in coarse if since is None or int(p['time']) >= since]
        points = [metrics_utils.normalise_point(p, vm['maxcpu'], vm['maxmem'], high) for p in fine]
        filled = [dict(metrics_utils.normalise_point(p, vm['maxcpu'], vm['maxmem'], high), filled=True)
                  for p in coarse]
        store.append(metrics_utils.history_points(vm, points))
        store.append(metrics_utils.history_points(vm, filled, filled=True), replace=False)
        summary['points'] += len(points) + len(filled)
        cpu_fine = [p['time'] for p in points if p.get('cpu') is not None]
        res = {}
        for row in coarse:
            if row.get('cpu') is not None:
                res[row['covers']] = res.get(row['covers'], 0) + 1
        summary['vms'][vm['name']] = dict(
            fine=[cpu_fine[0], cpu_fine[-1], len(cpu_fine)] if cpu_fine else None, coarse=res, timeframes=wanted)
    return summary


# --------------------------------------------------------------------------------------- what a forecast had

def _duration(seconds):
    seconds = int(round(seconds))
    days, rest = divmod(seconds, 86400)
    if days:
        return '{0}d {1}h'.format(days, rest // 3600)
    hours, rest = divmod(rest, 3600)
    return '{0}h {1}m'.format(hours, rest // 60) if hours else '{0}m'.format(rest // 60)


def _step(seconds):
    return '{0} s'.format(seconds) if seconds < 600 else ('{0} min'.format(seconds // 60) if seconds < 7200
                                                          else '{0} h'.format(seconds // 3600))


def service_history(store, summary, names, key_of, since, until):
    """How much history one service's forecast had: ``{seconds, parts: [[seconds, step, source]], text}`` from the
    primary (of ``names``) with the longest cpu history in the window; ``key_of(name)`` is its cpu series."""
    best = None
    for name in names:
        first, last, count = store.span(key_of(name), since=since)
        if first is None:
            continue
        if until is not None:
            last = min(last, int(until))
        info = (summary.get('vms') or {}).get(name) or {}
        parts = []
        fine = info.get('fine')
        covered_from = last
        if fine:
            parts.append([fine[1] - fine[0] + metrics_utils.RRD_STEP, metrics_utils.RRD_STEP, summary.get('backend')])
            covered_from = fine[0] - metrics_utils.RRD_STEP
        for covers in sorted(info.get('coarse') or {}):
            seconds = covers * info['coarse'][covers]
            parts.append([seconds, covers, summary.get('backend')])
            covered_from -= seconds
        if not parts and summary.get('backend') != 'sqlite':
            step = int(summary.get('step') or metrics_utils.RRD_STEP)
            parts.append([last - first + step, step, summary.get('backend')])
            covered_from = first - step
        # Older points than PVE gave (or a coarse row's first half, its point being its middle) come from the file.
        slack = max([metrics_utils.RRD_STEP] + list(info.get('coarse') or {}))
        if summary.get('backend') == 'sqlite' and first < covered_from - slack:
            parts.append([covered_from - first, None, 'store'])
        total = sum(p[0] for p in parts)
        if best is None or total > best['seconds']:
            best = dict(seconds=total, parts=parts)
    if best is None:
        return dict(seconds=0, parts=[], text='history none')
    text = ' + '.join('{0} at {1}'.format(_duration(s), _step(step)) if step else '{0} from the store'.format(
        _duration(s)) for s, step, dummy in best['parts'])
    best['text'] = 'history ' + text
    return best


def annotate(decisions, store, summary, resources, plans, since, until):
    """Add ``history`` (see :func:`service_history`) to every decision and say it at the end of its line."""
    for decision in decisions:
        plan = plans.get(decision['template']) or {}
        vms = metrics_utils.managed_vms(resources, [decision['template']], {decision['template']: plan})
        names = [v['name'] for v in vms if v['service'] == decision['service'] and v['role'] == 'primary']

        def key_of(name, decision=decision):
            return metrics_utils.series_key(decision['template'], decision['service'], name, 'cpu')
        info = service_history(store, summary, names, key_of, since, until)
        decision['history'] = info
        if decision.get('line'):
            decision['line'] = '{0} ({1})'.format(decision['line'], info['text'])
        else:
            decision['line'] = '{0}/{1}: {2} ({3})'.format(decision['template'], decision['service'],
                                                           decision.get('reason', ''), info['text'])
    return decisions

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary: the shadow's replay counters, read through the PVE guest agent, and what the policy takes from them.

The replay agent in the shadow (the ``shadow_replay`` role) replays a flow-sampled share of the primaries' requests
into the shadow's own service and rewrites a JSON counters file every ``stats_interval`` seconds (version 1:
``time``, ``requests_replayed``, ``window`` with ``latency_p95_seconds`` over the last ``window_seconds`` ...).
The reconciler reads that file with one ``GET /nodes/{node}/qemu/{vmid}/agent/file-read`` per shadow (qemu-server
src/PVE/API2/Qemu/Agent.pm ``file-read``: privilege ``VM.GuestAgent.FileRead`` (or ``VM.GuestAgent.Unrestricted``)
on ``/vms/{vmid}``; answer ``{content, bytes-read, truncated}``), so no network path from the reconciler into the
isolated shadow is needed.

A missing agent, a missing or malformed file, or a file older than the plan's ``stale_after_seconds`` (the agent or
the guest stopped) is "no canary": neither canary signal (the shadow's CPU nor its replay latency) is used, and the
decision says why. Without a live canary the shadow's CPU measures an idle VM, not the sampled traffic.

The latency signal's duration (``scaling.latency.for``) is judged from the same single read: the file's ``recent``
(the agent's own per-minute history, :func:`recent_observations`), so the default stateless history backend
(``pve``, nothing kept between runs) can judge it on the first run. Only a file without ``recent`` (an older agent)
falls back to the readings earlier reconciles left in a history store (:func:`history_observations`).

Only :func:`read_counters` talks to PVE; the rest is pure.
"""

from __future__ import annotations

import json
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import is_finite_number

if t.TYPE_CHECKING:
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi

COUNTERS_VERSION = 1
# The counters file is a few kB; a file larger than this is not the agent's (or is broken): refused, never parsed.
MAX_COUNTERS_BYTES = 256 * 1024
# History series of the canary readings, next to the service's own (``<template>/<service>/_canary/<key>``).
CANARY_SERIES = '_canary'
# Consecutive readings no further apart than this count as continuous for scaling.latency.for (two reconciles
# of the reconciler role's default 5-minute timer).
MAX_LATENCY_GAP = 600
# The agent's per-minute history (``recent``): a minute with fewer replayed requests than this has no p95 that
# means something (with 20 requests the p95 is the second slowest), so it breaks a run like a minute under the
# threshold does.
MIN_MINUTE_REQUESTS = 20
# At most this many minutes of ``recent`` are read (the agent's own bound, recent_minutes <= 1440).
MAX_RECENT_MINUTES = 1440


class CanaryError(ValueError):
    """The counters file cannot be used; the message says why (it becomes the "no canary" reason)."""


def parse_counters(text: str) -> dict[str, t.Any]:
    """The counters of the agent's JSON file (format version 1), checked; CanaryError when it is not that."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:     # RecursionError: nested deeper than the parser goes
        raise CanaryError('the counters file is not JSON ({0})'.format(exc))
    if not isinstance(data, dict):
        raise CanaryError('the counters file is not a JSON object')
    if data.get('version') != COUNTERS_VERSION:
        raise CanaryError('the counters file has version {0!r}, this collection reads version {1}'.format(
            data.get('version'), COUNTERS_VERSION))
    if not is_finite_number(data.get('time')):
        raise CanaryError('the counters file has no valid time')
    window = data.get('window') if isinstance(data.get('window'), dict) else {}
    p95 = window.get('latency_p95_seconds')
    p50 = window.get('latency_p50_seconds')
    return {
        'time': float(data['time']),
        'started': float(data['started']) if is_finite_number(data.get('started')) else None,
        'mode': data.get('mode'),
        'target': data.get('target'),
        'flows_seen': _count(data.get('flows_seen')),
        'flows_replayed': _count(data.get('flows_replayed')),
        'requests_replayed': _count(data.get('requests_replayed')),
        'errors': sum(_count(v) for v in (data.get('errors') or {}).values()) if isinstance(data.get('errors'), dict)
        else 0,
        'window_seconds': float(data['window_seconds']) if is_finite_number(data.get('window_seconds')) and
        data['window_seconds'] > 0 else 60.0,
        'window_requests': _count(window.get('requests')),
        'window_errors': _count(window.get('errors')),
        'p95_seconds': float(p95) if is_finite_number(p95) and p95 >= 0 else None,
        'p50_seconds': float(p50) if is_finite_number(p50) and p50 >= 0 else None,
        'recent': _recent(data.get('recent')),
    }


def _recent(value):
    """The agent's per-minute history, ``[{'end', 'requests', 'p95_seconds', 'errors'}]`` oldest first, or None
    when the file has none (an agent older than ``recent``). Malformed minutes are left out (a missing minute
    breaks a run, so a bad entry never lengthens one)."""
    if not isinstance(value, list):
        return None
    out = {}
    for item in value[-MAX_RECENT_MINUTES:]:
        if not isinstance(item, dict) or not is_finite_number(item.get('end')):
            continue
        p95 = item.get('latency_p95_seconds')
        out[int(item['end'])] = {'end': int(item['end']), 'requests': _count(item.get('requests')),
                                 'errors': _count(item.get('errors')),
                                 'p95_seconds': float(p95) if is_finite_number(p95) and p95 >= 0 else None}
    return [out[k] for k in sorted(out)]


def _count(value):
    return int(value) if is_finite_number(value) and value >= 0 else 0


def read_counters(api: PveApi, vm: dict[str, t.Any], path: str) -> tuple[str | None, str | None]:
    """``(content, None)`` or ``(None, reason)``: one guest agent file-read of the counters file in ``vm``."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError
    try:
        answer = api.get('nodes/{0}/qemu/{1}/agent/file-read'.format(vm['node'], vm['vmid']), file=path,
                         count=MAX_COUNTERS_BYTES)
    except PveApiError as exc:
        if exc.kind == 'forbidden':
            return None, '{0} (the reconciler needs VM.GuestAgent.FileRead on /vms/{1})'.format(exc.message, vm['vmid'])
        return None, exc.message
    answer = answer if isinstance(answer, dict) else {}
    if answer.get('truncated'):
        return None, '{0} is larger than {1} bytes: not a replay counters file'.format(path, MAX_COUNTERS_BYTES)
    return str(answer.get('content') or ''), None


def status(content: str | None, error: str | None, now: float, stale_after: float, shadow: str,
           path: str) -> dict[str, t.Any]:
    """The canary's state: ``{'live': bool, 'reason': str, 'counters': dict or None, 'age_seconds': ...}``."""
    out = {'shadow': shadow, 'path': path, 'live': False, 'counters': None, 'age_seconds': None}
    if error is not None:
        out['reason'] = 'no canary: cannot read {0} in {1}: {2}'.format(path, shadow, error)
        return out
    try:
        counters = parse_counters(content or '')
    except CanaryError as exc:
        out['reason'] = 'no canary: {0} in {1}: {2}'.format(path, shadow, exc)
        return out
    age = now - counters['time']
    out.update(counters=counters, age_seconds=round(age, 1))
    if age > stale_after:
        out['reason'] = 'no canary: {0} in {1} is stale ({2:.0f}s old, limit {3:.0f}s: is the replay agent ' \
                        'running?)'.format(path, shadow, age, stale_after)
        return out
    if -age > stale_after:      # written "later" than now by more than the limit: its age says nothing
        out['reason'] = 'no canary: {0} in {1} is dated {2:.4g}s ahead of this host\'s clock (limit {3:.0f}s: are ' \
                        'the shadow\'s and the controller\'s clocks in sync?)'.format(path, shadow, -age, stale_after)
        return out
    out.update(live=True, reason='canary {0}: {1} requests replayed, {2} in the last {3:.0f}s, p95 {4}'.format(
        shadow, counters['requests_replayed'], counters['window_requests'], counters['window_seconds'],
        fmt_ms(counters['p95_seconds'])))
    return out


def fmt_ms(seconds: float | None) -> str:
    return 'n/a' if seconds is None else '{0:.0f} ms'.format(1000.0 * seconds)


def observation(state: dict[str, t.Any]) -> tuple[float, float | None, float] | None:
    """``(time, p95 seconds, window seconds)`` of a live canary, for the latency signal."""
    if not state or not state.get('live'):
        return None
    c = state['counters']
    return c['time'], c['p95_seconds'], c['window_seconds']


def recent_observations(counters: dict[str, t.Any],
                        min_requests: int = MIN_MINUTE_REQUESTS) -> list[tuple[float, float | None, float]] | None:
    """The latency signal's readings from the agent's own per-minute history (``recent``), or None when the file
    has none (then the history store's readings are the fallback, :func:`history_observations`).

    One ``(minute end, p95 seconds or None, 60)`` per minute, for :func:`policy.latency_signal`, which walks back
    from the newest while the p95 is above the threshold. A minute with fewer than ``min_requests`` replayed
    requests reads as no p95, and so does a minute missing from the list (the agent was not running) or a list
    that stops more than two minutes before the file's ``time``: each breaks the run. So "above the threshold for
    ``for``" means every whole minute of the duration above it, with enough requests to tell."""
    recent = counters.get('recent')
    if recent is None:
        return None
    out = []
    previous = None
    for minute in recent:
        if previous is not None and minute['end'] - previous > 60:
            out.append((float(previous + 60), None, 60.0))          # a gap: the agent did not run
        p95 = minute['p95_seconds'] if minute['requests'] >= min_requests else None
        out.append((float(minute['end']), p95, 60.0))
        previous = minute['end']
    if previous is not None and counters['time'] - previous > 120:
        out.append((float(counters['time']), None, 60.0))           # the minutes stop short of the file's time
    return out


def series_prefix(template: str, service: str) -> str:
    return '{0}/{1}/{2}/'.format(template, service, CANARY_SERIES)


def history_observations(store: t.Any, template: str, service: str, since: float,
                         until: float) -> list[tuple[float, float | None, float]]:
    """Earlier canary readings kept in the history store (see :func:`history_points`)."""
    prefix = series_prefix(template, service)
    windows = dict(store.series(prefix + 'window_seconds', since=since, until=until))
    return [(float(ts), p95, float(windows.get(ts) or 60.0))
            for ts, p95 in store.series(prefix + 'p95_seconds', since=since, until=until)]


def history_points(decision: dict[str, t.Any]) -> list[tuple[str, int, float | None]]:
    """History points of a decision's live canary reading (the forecast module records them, not in check mode)."""
    canary = decision.get('canary') or {}
    obs = observation(canary)
    if obs is None:
        return []
    prefix = series_prefix(decision['template'], decision['service'])
    when = int(obs[0])
    counters = canary['counters']
    return [(prefix + 'p95_seconds', when, obs[1]), (prefix + 'window_seconds', when, obs[2]),
            (prefix + 'window_requests', when, float(counters['window_requests']))]


def shadow_size(shadow_vm: dict[str, t.Any] | None, primary_cores: int | float | None,
                planned: float | None = None) -> float:
    """Shadow cores / one primary's cores, from the VMs as they run (a vertical scale changes the primaries').

    ``planned`` (the plan's ratio) is used when the listing does not give the shadow's cores."""
    cores = (shadow_vm or {}).get('maxcpu')
    if cores and primary_cores:
        return float(cores) / float(primary_cores)
    return float(planned) if planned else 1.0

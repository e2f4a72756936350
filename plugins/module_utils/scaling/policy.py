# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The scaling decision: pure, plain data in, plain data out.

:func:`decide` takes the template's ``scaling`` block (DESIGN.md), the service's current
size, per-metric history (and, optionally, forecasts already made), the last scaling
action and cooldown deadline (read from PVE metadata by the caller), the recent
recommendations (for the stabilisation window) and ``now``. It returns one decision
dict; it never talks to PVE and never changes anything.

Signals, per metric (``cpu``, ``memory``, ``net``, or any other the caller supplies):

* ``forecast``: the forecast's upper bound of the per-instance load crosses ``high``
  within ``scaling.horizon``.
* ``shadow`` (the seed rule): the shadow's utilisation, normalised for its size and
  the mirror's sample rate, minus the primaries' exceeds ``shadow_delta`` for
  ``duration``. The shadow receives a flow-sampled share ``rate`` of the requests of each of
  the ``mirrored_instances`` primaries it mirrors, on ``size`` = shadow cores / one primary's
  cores, so its utilisation in one primary's terms is
  ``shadow utilisation x size / (rate x mirrored_instances)`` (:func:`shadow_normalised`;
  for absolute metrics such as ``net`` without ``size``). The reconciler (scaling.py) passes
  the shadow's CPU series only, and only while the canary is live (the replay agent's
  counters are fresh): an idle shadow measures nothing, and a shadow's memory is mostly its
  own baseline, which the sample rate does not scale.
* ``latency`` (the canary's second signal, :func:`latency_signal`): the shadow's replay p95
  (the service's own latency under the sampled requests) above ``scaling.latency.p95_ms``
  for ``scaling.latency.for`` scales up by one instance (or one core in vertical mode).
* ``forecast_low``: scale down when the forecast's upper bound stays under ``low`` for
  ``duration`` (and the observed load was under ``low`` for the last ``duration`` too).

``forecast``, ``shadow`` or ``latency`` scales up; ``forecast_low`` scales down only when
every metric agrees (and no latency signal holds). Thresholds for ``cpu`` and ``memory``
are fractions of one instance's capacity; for ``net`` (and any metric whose ``capacity`` the caller does not give) they are
absolute per-instance rates (bits/s), as in the template (``high: 800Mbit``).

Vertical mode: instances needed = ceil(predicted demand / (high x capacity per instance)), with the
predicted demand = the peak of the forecast's upper bound over the horizon (for the
seed rule: the shadow's normalised load times the instances). Clamped to
``instances.min..max``. Cooldowns: no scale-up sooner than ``cooldown.up`` and no
scale-down sooner than ``cooldown.down`` after the last action, and none at all before
an explicit ``cooldown_until`` deadline. Stabilisation window (``scaling.stabilization``,
default the longer of ``cooldown.down`` and 45 minutes): a scale-down goes only as low as
the highest recommendation made within the window.

Defaults for fields the template leaves out are those of DESIGN.md's example. Fields that are
not in DESIGN.md's example: ``scaling.stabilization`` (a duration, default
``max(cooldown.down, 45m)``), ``scaling.<metric>.shadow_delta`` (a ratio, default
``DEFAULT_SHADOW_DELTA`` = 0.20: the shadow must run 20 percentage points of
utilisation, or 20% of ``high`` for absolute metrics, above the primaries), and the horizontal
sizing ratios ``scaling.tolerance`` (0.10), ``scaling.step_down`` (0.5) and ``scaling.min_step``
(0.25), described below.

Horizontal mode sizes by target tracking with the forecast as a floor (``_size_horizontal``;
benchmarks/policy_sim.py compares it with Kubernetes HPA-style target tracking and the seed rule):

* up = max(target tracking on the last load, ``ceil(load / (high x capacity))`` kept while within
  ``tolerance`` (10%) of ``high``; the forecast's upper bound from the time a clone decided now
  serves load, ``scaling.provision`` (default 5m) after the last point, to the end of ``horizon``).
  The decision's ``signal`` says which sized it: ``forecast`` or ``target``; ``shadow`` as above.
* down: every metric must fit fewer instances with its load (the last ``duration`` observed and the
  forecast's upper bound until a replacement could serve, ``provision``: a removed instance is gone
  at once) at the midpoint of ``low`` and ``high``
  (hysteresis: a scale-down never lands where the next step would scale up again); no lower than
  the stabilisation window's highest recommendation (those recommendations are these down
  sizes); at most ``step_down`` (half) of the instances at once; ``signal`` ``forecast_low``.
* every action moves at least ``min_step`` (a quarter, rounded up, at least one) of the instances: a scale-up
  adds that many at least; a scale-down that would remove fewer waits (``blocked_by`` ``min_step``), unless it
  goes to ``instances.min``. A load that swings slowly (a daily cycle) is followed in a few larger steps.
* the decision's ``sizing`` lists, per metric, the numbers each rule gave.
"""

from __future__ import annotations

import math
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import (
    is_finite_number, parse_duration, parse_rate, parse_ratio)

if t.TYPE_CHECKING:
    from collections.abc import Mapping

SCALE_UP = 'scale_up'
SCALE_DOWN = 'scale_down'
NONE = 'none'

FRACTION_METRICS = ('cpu', 'memory')
DEFAULT_SHADOW_DELTA = 0.20
# The prediction-interval level whose upper bound sizes the service, the default stabilisation window and the
# smallest step, measured on both data sets of benchmarks/policy_sim.py (Bitbrains VMs and the datacenter aggregates;
# never on the holdout) with the sizing of _size_horizontal. Each one trades capacity against scaling actions, and
# the two data sets pull apart: spiky VMs (Bitbrains) want capacity back soon after a burst, smooth daily loads (the
# aggregates) want few steps through their daily swing. min_step (every action moves at least a quarter of the
# instances, as AWS step scaling's percent change with a minimum magnitude) takes the steps out of the slow swings
# without holding capacity after bursts. The level is 0.3 (the 65th percentile): the forecast's interval follows a
# fresh change within the hour (forecast.py's INTERVAL_HALF_LIFE_SECONDS), so even this narrow interval sees a ramp
# the damped mean lags behind (tests/integration/test_scale.py, test_history_pve.py), and Bitbrains needs less
# capacity than at 0.5. The narrower, faster interval moves more often, which the 45-minute window takes back
# (benchmarks/README.md has the figures and the sweeps).
DEFAULT_LEVEL = 0.3
DEFAULT_STABILIZATION = 2700
# Horizontal sizing (see _size_horizontal): a new clone serves load this long after the decision (boot and warm-up;
# the template's scaling.provision), the tolerance band of target tracking (Kubernetes HPA's 10%), at most this
# fraction of the instances removed by one scale-down (at least one), and at least this fraction added or removed
# by one action (at least one).
DEFAULT_PROVISION = 300
DEFAULT_TOLERANCE = 0.10
DEFAULT_STEP_DOWN = 0.5
DEFAULT_MIN_STEP = 0.25

DEFAULTS = {
    'cpu': {'high': 0.70, 'low': 0.30, 'duration': 300},
    'memory': {'high': 0.80, 'low': 0.40, 'duration': 300},
    'net': {'high': 800000000, 'low': 100000000, 'duration': 300},
    'horizon': 900,
    'instances': {'min': 1, 'max': 8},
    'cooldown': {'up': 180, 'down': 600},
    'provision': DEFAULT_PROVISION,
    'mode': 'horizontal',
}


class PolicyError(ValueError):
    """The policy inputs are inconsistent; the message names the field."""


def _threshold(metric, value):
    if metric in FRACTION_METRICS:
        return parse_ratio(value)
    rate = float(parse_rate(value)) if isinstance(value, str) else float(value)
    if not math.isfinite(rate):
        raise ValueError('must be a finite number, got %r' % (value,))
    return rate


def _field(path, parse, value, *args, **kwargs):
    """``parse(value, ...)``; a value it refuses is a PolicyError that names the field (``scaling.<path>``)."""
    try:
        return parse(value, *args, **kwargs)
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:     # UnitError is a ValueError
        raise PolicyError('scaling.%s: %s' % (path, exc)) from exc


def normalise_scaling(scaling: dict[str, t.Any] | None) -> dict[str, t.Any]:
    """The ``scaling`` block with defaults filled in and units parsed (seconds, bits/s, ratios). PolicyError, naming
    the field, for a block that does not parse (the template's validation reports the same)."""
    if scaling is not None and not isinstance(scaling, dict):
        raise PolicyError('scaling must be a mapping, got %s' % type(scaling).__name__)
    try:
        return _normalise_scaling(scaling)
    except PolicyError:
        raise
    except (ValueError, TypeError, OverflowError, AttributeError) as exc:     # a field no _field call names
        raise PolicyError('the scaling block does not parse: %s' % exc) from exc


def _mapping(scaling, key, default):
    value = scaling.get(key)
    if value is None:
        return dict(default)
    if not isinstance(value, dict):
        raise PolicyError('scaling.%s must be a mapping, got %r' % (key, value))
    return dict(default, **value)


def _normalise_scaling(scaling):
    scaling = dict(scaling or {})
    out = {'metrics': {}}
    for key, value in scaling.items():
        if isinstance(value, dict) and ('high' in value or 'low' in value):
            out['metrics'][key] = value
    for metric in ('cpu', 'memory', 'net'):
        out['metrics'].setdefault(metric, {})
    for metric, conf in list(out['metrics'].items()):
        base = DEFAULTS.get(metric, {})
        merged = dict(base, **conf)
        if 'high' not in merged or 'low' not in merged:
            raise PolicyError('scaling.%s needs high and low' % metric)
        high = _field(metric + '.high', _threshold, metric, merged['high'])
        low = _field(metric + '.low', _threshold, metric, merged['low'])
        if not 0 <= low < high:
            raise PolicyError('scaling.%s: need 0 <= low < high, got low=%r high=%r' % (metric, merged['low'], merged['high']))
        out['metrics'][metric] = {
            'high': high, 'low': low,
            'duration': _field(metric + '.duration', parse_duration, merged.get('duration', 300)),
            'shadow_delta': _field(metric + '.shadow_delta', parse_ratio,
                                   merged.get('shadow_delta', DEFAULT_SHADOW_DELTA)),
        }
    inst = _mapping(scaling, 'instances', DEFAULTS['instances'])
    cool = _mapping(scaling, 'cooldown', DEFAULTS['cooldown'])
    out['horizon'] = _field('horizon', parse_duration, scaling.get('horizon', DEFAULTS['horizon']))
    out['instances'] = {'min': _field('instances.min', _count, inst['min']),
                        'max': _field('instances.max', _count, inst['max'])}
    if not 1 <= out['instances']['min'] <= out['instances']['max']:
        raise PolicyError('scaling.instances: need 1 <= min <= max, got %r' % (scaling.get('instances'),))
    out['cooldown'] = {'up': _field('cooldown.up', parse_duration, cool['up'], allow_zero=True),
                       'down': _field('cooldown.down', parse_duration, cool['down'], allow_zero=True)}
    out['stabilization'] = _field('stabilization', parse_duration,
                                  scaling.get('stabilization', max(out['cooldown']['down'], DEFAULT_STABILIZATION)),
                                  allow_zero=True)
    out.update(_normalise_sizing(scaling))
    out['mode'] = scaling.get('mode', DEFAULTS['mode'])
    out['latency'] = scaling.get('latency')
    if out['latency'] is not None:
        lat = out['latency']
        if not isinstance(lat, dict) or (lat.get('p95_ms') is not None and not (
                is_finite_number(lat['p95_ms']) and lat['p95_ms'] > 0)):
            raise PolicyError('scaling.latency must be a mapping with p95_ms a number of milliseconds > 0, got %r'
                              % (lat,))
        _field('latency.for', parse_duration, lat.get('for', 180))
    if out['mode'] not in ('horizontal', 'vertical'):
        raise PolicyError('scaling.mode must be horizontal or vertical, got %r' % (out['mode'],))
    return out


def _count(value):
    """A whole number of instances: an int, or a float or string that is one (YAML and module options give both)."""
    if isinstance(value, bool):
        raise TypeError('must be a whole number, got %r' % (value,))
    number = float(value)
    if not number.is_integer():
        raise ValueError('must be a whole number, got %r' % (value,))
    return int(number)


def _normalise_sizing(scaling):
    """The horizontal sizing fields: ``provision`` (seconds), ``tolerance``, ``step_down`` and ``min_step`` (ratios)."""
    out = {'provision': _field('provision', parse_duration, scaling.get('provision', DEFAULTS['provision']),
                               allow_zero=True),
           'tolerance': _field('tolerance', parse_ratio, scaling.get('tolerance', DEFAULT_TOLERANCE)),
           'step_down': _field('step_down', parse_ratio, scaling.get('step_down', DEFAULT_STEP_DOWN)),
           'min_step': _field('min_step', parse_ratio, scaling.get('min_step', DEFAULT_MIN_STEP))}
    if not 0 <= out['tolerance'] < 1:
        raise PolicyError('scaling.tolerance must be from 0 to below 1, got %r' % (scaling.get('tolerance'),))
    if not 0 < out['step_down'] <= 1:
        raise PolicyError('scaling.step_down must be above 0 and at most 1, got %r' % (scaling.get('step_down'),))
    if not 0 <= out['min_step'] <= out['step_down']:
        raise PolicyError('scaling.min_step must be from 0 to scaling.step_down (%g), got %r: a scale-down could never '
                          'remove enough' % (out['step_down'], scaling.get('min_step')))
    return out


def _finite(values):
    """The values that are numbers: gaps (None), NaN and infinities left out."""
    return [v for v in values if v is not None and math.isfinite(v)]


def steps(seconds: float, step: float) -> int:
    """How many ``step``-second points cover ``seconds`` (at least one; a whole multiple is not rounded up by float
    noise). The one rounding of a duration to steps: the policy's horizon and durations, the report's and the
    summary's horizon."""
    return max(1, int(math.ceil(seconds / float(step) - 1e-9)))


def _fmt(value, metric):
    if metric in FRACTION_METRICS:
        return '%.0f%%' % (100.0 * value)
    if metric == 'net':
        return '%.0fMbit/s' % (value / 1e6)
    return '%.3g' % value


def _evaluate_metric(metric, conf, data, instances, capacity, shadow, horizon, forecaster, level, now):
    """Signals of one metric. Loads are per instance, in the metric's unit."""
    step = float(data.get('step_seconds') or 60)
    demand = list(data.get('demand') or [])
    end = data.get('end', now)
    absolute = capacity is None
    cap = 1.0 if absolute else float(capacity)
    high_abs = conf['high'] * cap      # per-instance load at `high`
    low_abs = conf['low'] * cap
    dur_steps = steps(conf['duration'], step)
    hor_steps = steps(horizon, step)
    need_steps = max(dur_steps, hor_steps)
    info = {'metric': metric, 'high': high_abs, 'low': low_abs, 'step_seconds': step, 'capacity': capacity,
            'instances': instances,
            'up': False, 'down': False, 'needed': None, 'signal': None,
            'crossing_time': None, 'forecast': None, 'detail': ''}

    fc = data.get('forecast')
    if fc is None and _finite(demand):
        fc = forecaster(demand, step, need_steps, level=level)
    if fc is not None:
        upper = [float(v) for v in fc['upper']]
        if len(upper) < need_steps:
            raise PolicyError('forecast for %s has %d steps, the policy needs %d' % (metric, len(upper), need_steps))
        info['forecast'] = dict(fc, step_seconds=step, start=end + step)
        peak = max(upper[:hor_steps])
        per_inst = [u / instances for u in upper]
        info['needed'] = int(math.ceil(peak / high_abs - 1e-9)) if high_abs > 0 else instances
        info['peak'] = peak
        for h in range(hor_steps):
            if per_inst[h] > high_abs:
                info['up'] = True
                info['signal'] = 'forecast'
                info['crossing_time'] = end + (h + 1) * step
                info['detail'] = '%s forecast upper bound %s per instance crosses high %s in %s' % (
                    metric, _fmt(per_inst[h] / cap, metric), _fmt(conf['high'], metric),
                    _fmt_secs(info['crossing_time'] - now))
                break
        recent = _finite(demand[-dur_steps:])
        observed_low = len(recent) == dur_steps and max(recent) / instances < low_abs
        if not info['up'] and max(per_inst[:dur_steps]) < low_abs and observed_low:
            info['down'] = True
            info['signal'] = 'forecast_low'
            info['detail'] = '%s forecast upper bound stays under low %s for %s (max %s per instance)' % (
                metric, _fmt(conf['low'], metric), _fmt_secs(conf['duration']),
                _fmt(max(per_inst[:dur_steps]) / cap, metric))

    # The seed rule: the shadow sees a sample of the traffic on a smaller VM; scaled back to
    # one primary's terms, a shadow working much harder than the primaries means their own
    # measurements are capped (saturated) or the shadow sees a costlier mix.
    sh = data.get('shadow')
    if sh and shadow:
        primary = data.get('primary')
        if primary is None:
            primary = [None if v is None else v / instances / cap for v in demand]
        elif absolute:
            primary = [None if v is None else v / cap for v in primary]
        ss = list(sh)[-dur_steps:]
        pp = list(primary)[-dur_steps:]
        if len(ss) == dur_steps and len(pp) == dur_steps and None not in ss and None not in pp:
            norm = shadow_normalised(ss, shadow, absolute)    # shadow load in one primary's units
            scale = conf['high'] if absolute else 1.0         # absolute metrics: delta relative to high
            deltas = [(s - p) / scale for s, p in zip(norm, pp)]
            info['shadow_delta'] = min(deltas)
            info.update(shadow_now=ss[-1], shadow_normalised=norm[-1], primary_now=pp[-1])
            if min(deltas) > conf['shadow_delta']:
                est = norm[-1] * cap * instances               # demand the shadow implies
                needed = max(instances + 1, int(math.ceil(est / high_abs - 1e-9)))
                if not info['up'] or needed > (info['needed'] or 0):
                    info['needed'] = max(needed, info['needed'] or 0)
                if not info['up']:
                    info['up'] = True
                    info['down'] = False
                    info['signal'] = 'shadow'
                    info['crossing_time'] = now
                    info['detail'] = ('%s shadow (normalised) %s above primaries for %s (threshold %s): %s' % (
                        metric, _fmt_delta(min(deltas)), _fmt_secs(conf['duration']),
                        _fmt_delta(conf['shadow_delta']), _shadow_numbers(metric, ss[-1], pp[-1], shadow,
                                                                          absolute)))
    return info


def shadow_normalised(values: list[float], shadow: Mapping[str, float], absolute: bool = False) -> list[float]:
    """The shadow's utilisation in one primary's terms: ``u x size / (rate x mirrored_instances)``.

    ``size`` = shadow cores / one primary's cores (left out for absolute metrics: a rate is a rate), ``rate`` = the
    mirror's flow sample rate (1.0 for a full mirror), ``mirrored_instances`` = how many primaries the shadow
    mirrors. A shadow at 40% on a quarter-size VM that sees 10% of the flows of 1 primary stands for a primary at
    0.40 x 0.25 / 0.10 = 100%.
    """
    rate = float(shadow.get('rate', 1.0)) * float(shadow.get('mirrored_instances', 1))
    if rate <= 0:
        raise PolicyError('shadow.rate x mirrored_instances must be > 0, got %r' % (rate,))
    size = 1.0 if absolute else float(shadow.get('size', 1.0))
    return [v * size / rate for v in values]


def _shadow_numbers(metric, shadow_now, primary_now, shadow, absolute):
    """``shadow 40% x size 0.25 / (rate 0.10 x 1) = 100% vs primaries 62%``: the latest numbers of the seed rule."""
    norm = shadow_normalised([shadow_now], shadow, absolute)[0]
    size = '' if absolute else ' x size %.2f' % float(shadow.get('size', 1.0))
    return 'shadow %s%s / (rate %.2f x %d) = %s vs primaries %s' % (
        _fmt(shadow_now, metric), size, float(shadow.get('rate', 1.0)), int(shadow.get('mirrored_instances', 1)),
        _fmt(norm, metric), _fmt(primary_now, metric))


def latency_signal(latency: Mapping[str, t.Any] | None, observations: list[tuple[float, float | None, float]],
                   instances: int, now: float) -> dict[str, t.Any] | None:
    """The canary latency signal, or None when ``scaling.latency.p95_ms`` is not set.

    :param latency: ``{'p95_ms': threshold (ms) or None, 'for': seconds}``.
    :param observations: readings of the shadow's replay agent, ``(time, p95 seconds or None, window seconds)``;
        each covers ``[time - window, time]``. Give them only while the canary is live.
    :returns: an up-signal dict like a metric's (``metric`` ``latency``, ``signal`` ``latency``, ``needed`` one
        instance more, ``detail`` e.g. ``canary p95 142 ms > 120 ms for 3 min``), ``up`` False when the p95 is not
        above the threshold for the whole duration, with ``held_seconds`` how long it was.

    The p95 holds for ``for`` when the newest readings, walking back in time, are all above the threshold, each no
    further than ``MAX_LATENCY_GAP`` after the previous one's window began (reconciles are minutes apart), and
    together they reach back ``for`` from the newest reading's time (the window of the oldest counts).
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.canary import MAX_LATENCY_GAP
    if not latency or latency.get('p95_ms') is None:
        return None
    threshold = float(latency['p95_ms']) / 1000.0
    duration = parse_duration(latency.get('for', 180))
    obs = sorted((o for o in observations or [] if o is not None), key=lambda o: o[0], reverse=True)
    info = {'metric': 'latency', 'up': False, 'down': False, 'needed': None, 'signal': None, 'crossing_time': None,
            'forecast': None, 'instances': instances, 'capacity': None, 'threshold_ms': float(latency['p95_ms']),
            'for_seconds': duration, 'p95_ms': None, 'held_seconds': 0.0}
    if not obs:
        info['detail'] = 'canary p95 has no reading'
        return info
    newest = obs[0][0]
    info['p95_ms'] = None if obs[0][1] is None else round(1000.0 * obs[0][1], 1)
    start = None
    for when, p95, window in obs:
        if p95 is None or p95 <= threshold:
            break
        if start is not None and when < start - MAX_LATENCY_GAP:
            break
        start = when - window if start is None else min(start, when - window)
    held = 0.0 if start is None else newest - start
    info['held_seconds'] = held
    if held >= duration:
        # held > 0 only when the newest reading is above the threshold, so it has a p95
        detail = 'canary p95 {0:.0f} ms > {1:.0f} ms for {2}'.format(
            1000.0 * obs[0][1], info['threshold_ms'], _fmt_held(held))
        info.update(up=True, signal='latency', needed=instances + 1, crossing_time=now, detail=detail)
    else:
        info['detail'] = 'canary p95 %s (threshold %.0f ms, held %s of %s)' % (
            'n/a' if info['p95_ms'] is None else '%.0f ms' % info['p95_ms'], info['threshold_ms'],
            _fmt_held(held), _fmt_held(duration))
    return info


def _fmt_held(seconds):
    """``45s``, ``90s``, ``3 min`` (whole minutes, rounded down, from 2 minutes on)."""
    seconds = max(0, int(seconds))
    return '%ds' % seconds if seconds < 120 else '%d min' % (seconds // 60)


def _fmt_delta(x):
    return '%.0f points' % (100.0 * x)


def _fmt_secs(seconds):
    seconds = int(round(seconds))
    if seconds <= 0:
        return 'now'
    if seconds % 3600 == 0:
        return '%dh' % (seconds // 3600)
    if seconds % 60 == 0:
        return '%dm' % (seconds // 60)
    return '%ds' % seconds


def _cooldowns(conf, last_action, cooldown_until):
    """Earliest times a scale-up and a scale-down are allowed."""
    up = down = float('-inf')
    if last_action and last_action.get('time') is not None and last_action.get('action') in (SCALE_UP, SCALE_DOWN):
        up = last_action['time'] + conf['cooldown']['up']
        down = last_action['time'] + conf['cooldown']['down']
    if isinstance(cooldown_until, dict):
        up = max(up, cooldown_until.get('up') or float('-inf'))
        down = max(down, cooldown_until.get('down') or float('-inf'))
    elif cooldown_until is not None:
        up = max(up, cooldown_until)
        down = max(down, cooldown_until)
    return up, down


def decide(scaling: Mapping[str, t.Any] | None, current: Mapping[str, t.Any],
           metrics: Mapping[str, Mapping[str, t.Any]] | None, now: float,
           last_action: Mapping[str, t.Any] | None = None, cooldown_until: float | Mapping[str, float] | None = None,
           recommendations: list[dict[str, t.Any]] | None = None, shadow: Mapping[str, float] | None = None,
           forecast_only: bool = False, level: float = DEFAULT_LEVEL,
           forecaster: t.Callable[..., dict[str, t.Any]] | None = None,
           latency: list[tuple[float, float | None, float]] | None = None) -> dict[str, t.Any]:
    """Decide whether a service should scale.

    :param scaling: the template's ``scaling`` block (raw or already normalised).
    :param current: ``{'instances': N, 'capacity': {'cpu': cores, 'memory': MiB, ...}}``
        for horizontal mode (capacity of one instance in the unit the metric's demand
        uses; leave a metric out for absolute thresholds such as ``net``); vertical mode
        also needs ``cores`` and ``memory`` (MiB) of one instance, and may give
        ``min_cores``/``max_cores``/``min_memory``/``max_memory``.
    :param metrics: ``{metric: {'step_seconds': s, 'demand': [total load of all primaries
        per step, oldest first, None for gaps], 'end': time of the last point (default
        now), 'forecast': optional forecast_series() result for demand with at least
        max(horizon, duration) steps, 'shadow': [shadow utilisation per step],
        'primary': [primaries' mean utilisation per step, default demand / (N x capacity)]}}``.
    :param now: current time (UNIX seconds).
    :param last_action: ``{'action': 'scale_up'|'scale_down', 'time': t}`` from PVE metadata.
    :param cooldown_until: a deadline (UNIX seconds) before which nothing is done, or
        ``{'up': t, 'down': t}``.
    :param recommendations: recent ``[{'time': t, 'instances': n}]`` (horizontal) or
        ``[{'time': t, 'cores': c, 'memory': m}]`` (vertical), as returned in a previous
        decision's ``recommendations``.
    :param shadow: ``{'size': 0.25, 'rate': 0.10, 'mirrored_instances': 1}`` (the template's
        ``shadow.size`` and ``shadow.mirror.rate``; rate 1.0 for a full mirror).
    :param forecast_only: decide and report, but mark the decision as not to be acted on.
    :param level: prediction-interval level whose upper bound the thresholds are tested against.
    :param forecaster: ``forecast_series`` compatible callable (default: forecast.forecast_series).
    :param latency: the live canary's replay readings for :func:`latency_signal` (``scaling.latency``); None: no
        canary, no latency signal.
    :returns: the decision dict (see the module docs and DESIGN.md).
    """
    conf = scaling if 'metrics' in (scaling or {}) else normalise_scaling(scaling)
    if forecaster is None:
        from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
        forecaster = forecast_series
    mode = conf['mode']
    n, caps = _current_size(mode, current)
    bounds = conf['instances']['min'], conf['instances']['max']
    infos = _signals(conf, metrics, n, caps, shadow, forecaster, level, now)
    lat = latency_signal(conf.get('latency'), latency, n, now) if latency is not None else None
    if lat is not None and lat['up']:
        infos.append(lat)
    up_ok, down_ok = _cooldowns(conf, last_action, cooldown_until)
    decision = _new_decision(mode, infos, up_ok, down_ok, forecast_only)
    if lat is not None:
        decision['latency'] = lat
    if mode == 'vertical':
        return _decide_vertical(decision, conf, current, infos, now, up_ok, down_ok, recommendations, forecast_only)
    sizes = [_size_horizontal(conf, i, (metrics or {}).get(i['metric']) or {}, n) for i in infos]
    decision['sizing'] = [z for z in sizes if z is not None]
    return _decide_horizontal(decision, conf, n, bounds, infos, now, up_ok, down_ok, recommendations, forecast_only)


def _current_size(mode, current):
    """``(instances, capacity per metric)`` of the service as it runs; vertical mode sizes cpu and memory by the
    instance's cores and memory."""
    n = int(current['instances'])
    if n < 1:
        raise PolicyError('current.instances must be >= 1')
    caps = dict(current.get('capacity') or {})
    if mode == 'vertical':
        caps.setdefault('cpu', current.get('cores'))
        caps.setdefault('memory', current.get('memory'))
        if not current.get('cores') or not current.get('memory'):
            raise PolicyError('vertical mode needs current.cores and current.memory')
    return n, caps


def _signals(conf, metrics, n, caps, shadow, forecaster, level, now):
    """The signals of every metric given (sorted by name); a metric without thresholds or capacity is refused."""
    infos = []
    for metric in sorted(metrics or {}):
        if metric not in conf['metrics']:
            raise PolicyError('no scaling thresholds for metric %r (scaling.%s)' % (metric, metric))
        cap = caps.get(metric) if metric in caps else None
        if metric in FRACTION_METRICS and cap is None:
            raise PolicyError('current.capacity.%s is needed: %s thresholds are fractions of capacity' % (metric, metric))
        infos.append(_evaluate_metric(metric, conf['metrics'][metric], metrics[metric], n, cap, shadow,
                                      conf['horizon'], forecaster, level, now))
    return infos


def _new_decision(mode, infos, up_ok, down_ok, forecast_only):
    """The decision before a mode fills it in: no action, the forecasts, the signals and the cooldowns."""
    return {
        'action': NONE, 'act': False, 'forecast_only': bool(forecast_only), 'mode': mode,
        'signal': None, 'metric': None, 'crossing_time': None, 'blocked_by': None,
        'forecast': dict((i['metric'], i['forecast']) for i in infos if i['forecast'] is not None),
        'signals': [dict((k, v) for k, v in i.items() if k != 'forecast') for i in infos],
        'cooldown': {'up_until': up_ok if up_ok > float('-inf') else None,
                     'down_until': down_ok if down_ok > float('-inf') else None},
    }


def _window(recommendations, conf, now, key):
    """The earlier recommendations (those with ``key``) made within the stabilisation window."""
    return [r for r in (recommendations or []) if r.get('time') is not None
            and now - conf['stabilization'] <= r['time'] <= now and key in r]


def _no_signal(infos):
    return 'no signal: ' + ('; '.join(_steady(i) for i in infos) if infos else 'no metrics given')


def _size_horizontal(conf, info, data, n):
    """Horizontal sizing of one metric: target tracking, the forecast at the time new capacity arrives, and the
    size a scale-down may go to. None when the metric has no forecast (no data).

    * ``reactive``: target tracking on the last observed load, ``ceil(load / (high x capacity))``, kept at ``n``
      while the load per instance is within ``tolerance`` of ``high`` (Kubernetes HPA's rule).
    * ``predicted``: ``ceil(peak / (high x capacity))`` with the peak of the forecast's upper bound from the time a
      clone decided now would serve load (``provision`` after the last point) to the end of ``horizon``. The
      forecast is a floor on top of target tracking: ``up = max(reactive, predicted)``.
    * ``down``: the size that holds, at the midpoint of ``low`` and ``high`` (hysteresis), the highest of the last
      ``duration`` of observed load and of the upper bound until a clone decided now would serve (a removed instance
      is gone at once; later load is for a scale-up to meet).
    """
    fc = info.get('forecast')
    if fc is None:
        return None
    metric, step, high = info['metric'], info['step_seconds'], info['high']
    hor_steps = steps(conf['horizon'], step)
    first = min(steps(conf['provision'], step), hor_steps) - 1         # index of the first step a clone serves
    upper = [float(v) for v in fc['upper'][:hor_steps]]
    demand = _finite(list(data.get('demand') or []))
    recent = demand[-steps(conf['metrics'][metric]['duration'], step):]
    tol = conf['tolerance']
    if not high > 0:
        return None

    def size(load, per_instance):
        return int(math.ceil(load / per_instance - 1e-9))
    peak = max(upper[first:])
    predicted = size(peak, high)
    last = recent[-1] if recent else None
    if last is None:
        reactive = n
    elif abs(last / (n * high) - 1.0) <= tol:
        reactive = n
    else:
        reactive = size(last, high)
    hold = max(upper[:first + 1] + recent)
    mid = (high + info['low']) / 2.0
    down = size(hold, mid) if mid > 0 else n
    return {'metric': metric, 'reactive': reactive, 'predicted': predicted, 'up': max(reactive, predicted),
            'down': down, 'last': last, 'peak': peak, 'hold': hold, 'high': high, 'mid': mid, 'capacity': info['capacity'],
            'window': (first + 1) * step, 'horizon': hor_steps * step, 'duration': len(recent) * step}


def _fmt_load(value, metric, capacity):
    """A total load: in instances' worth of capacity for fractions, Mbit/s for net."""
    if metric == 'net':
        return '%.0fMbit/s' % (value / 1e6)
    if capacity:
        return "%.2f instances' worth" % (value / float(capacity))
    return '%.3g' % value


def _explain_up(z):
    metric, cap = z['metric'], z['capacity'] or 1.0
    high = _fmt(z['high'] / cap, metric)
    last = 'no data' if z['last'] is None else _fmt_load(z['last'], metric, cap)
    forecast = 'upper bound over +%s..+%s peaks at %s -> %d' % (
        _fmt_secs(z['window']), _fmt_secs(z['horizon']), _fmt_load(z['peak'], metric, cap), z['predicted'])
    if z['predicted'] > z['reactive']:
        return '%s sized by the forecast at arrival: %s at high %s (target tracking on the last load, %s: %d)' % (
            metric, forecast, high, last, z['reactive'])
    return '%s sized by target tracking: last load %s -> %d at high %s (forecast at arrival: %s)' % (
        metric, last, z['reactive'], high, forecast)


def _explain_down(z):
    metric, cap = z['metric'], z['capacity'] or 1.0
    return '%s load stays within %s (last %s and forecast upper bound to +%s) -> %d at %s (midway between low and ' \
        'high)' % (metric, _fmt_load(z['hold'], metric, cap), _fmt_secs(z['duration']), _fmt_secs(z['window']),
                   z['down'], _fmt(z['mid'] / cap, metric))


def _decide_horizontal(decision, conf, n, bounds, infos, now, up_ok, down_ok, recommendations, forecast_only):
    """Horizontal mode: add or remove instances, within instances.min..max, sized by ``_size_horizontal``."""
    lo, hi = bounds
    decision['current'] = {'instances': n}
    sizes = decision['sizing']
    shadow_ups = [i for i in infos if i['up'] and i['signal'] in ('shadow', 'latency')]   # the canary's signals
    ups = [z for z in sizes if z['up'] > n]
    raw = max([z['down'] for z in sizes] + [i['needed'] for i in shadow_ups]) if sizes or shadow_ups else n
    raw = min(hi, max(lo, raw))
    decision['recommendations'] = _window(recommendations, conf, now, 'instances') + [{'time': now, 'instances': raw}]
    if n < lo or n > hi:
        target = min(hi, max(lo, n))
        action = SCALE_UP if target > n else SCALE_DOWN
        decision['signal'] = 'bounds'
        reason = '%d instances is outside instances.min..max (%d..%d)' % (n, lo, hi)
    elif ups or shadow_ups:
        action, target, reason = _sized_up(decision, conf, ups, shadow_ups, infos, n, bounds, now, up_ok)
    elif infos and len(sizes) == len(infos) and all(z['down'] < n for z in sizes):
        action, target, reason = _sized_down(decision, sizes, conf, n, lo, now, down_ok)
    else:
        action, target, reason = NONE, n, _no_signal(infos)
    decision.update(action=action, target={'instances': target}, amount=target - n)
    return _finish(decision, conf, action, reason, forecast_only, now)


def _min_move(conf, n):
    """The fewest instances one action adds or removes: ``min_step`` of ``n``, rounded up, at least one."""
    return max(1, int(math.ceil(n * conf['min_step'] - 1e-9)))


def _sized_up(decision, conf, ups, shadow_ups, infos, n, bounds, now, up_ok):
    """``(action, instances, reason)`` when a metric needs more instances at arrival (or the shadow says so); a
    scale-up adds at least ``min_step`` of the instances."""
    lo, hi = bounds
    wanted = [z['up'] for z in ups] + [i['needed'] or n + 1 for i in shadow_ups]
    needed = max([lo] + wanted)
    target = min(hi, max(needed, n + _min_move(conf, n)) if needed > n else needed)
    if ups:
        z = max(ups, key=lambda x: (x['up'], x['metric']))
        info = next(i for i in infos if i['metric'] == z['metric'])
        signal = 'forecast' if z['predicted'] > z['reactive'] else 'target'
        detail = _explain_up(z)
        # sized by the forecast: its upper bound crosses high inside the horizon, found by _evaluate_metric
        crossing = now if signal == 'target' else info['crossing_time']
    else:
        info = min(shadow_ups, key=lambda i: (i['crossing_time'], i['metric']))
        signal, detail, crossing = info['signal'], info['detail'], info['crossing_time']
    decision.update(signal=signal, metric=info['metric'], crossing_time=crossing)
    if target <= n:
        decision['blocked_by'] = 'bounds'
        return NONE, n, '%s, but already at instances.max (%d)' % (detail, hi)
    if now < up_ok:
        return _held_by_cooldown(decision, SCALE_UP, 'up', n, target, detail, up_ok - now)
    step = ' (min_step %.0f%%)' % (100 * conf['min_step']) if target > needed else ''
    return SCALE_UP, target, '%s: %d -> %d instances%s' % (detail, n, target, step)


def _held_by_cooldown(decision, action, direction, n, target, detail, wait):
    """``(none, n, reason)`` for a horizontal scale-``direction`` to ``target`` that its cooldown holds ``wait`` more
    seconds; the decision keeps what it wanted."""
    decision['blocked_by'] = 'cooldown_' + direction
    decision['wanted'] = {'action': action, 'instances': target}
    return NONE, n, '%s; scale-%s to %d held by cooldown.%s until %s' % (
        detail, direction, target, direction, _fmt_secs(wait) + ' from now')


def _sized_down(decision, sizes, conf, n, lo, now, down_ok):
    """``(action, instances, reason)`` when every metric fits fewer instances: no lower than the stabilisation
    window's highest recommendation, at most ``step_down`` of the instances at once, and at least ``min_step`` of
    them (unless it goes to instances.min): a load that falls slowly is followed in a few steps, not one by one."""
    stable = max(r['instances'] for r in decision['recommendations'])
    floor = n - max(1, int(math.floor(n * conf['step_down'] + 1e-9)))
    target = max(lo, stable, floor)
    decision.update(signal='forecast_low', metric=min(sizes, key=lambda z: z['metric'])['metric'])
    detail = '; '.join(_explain_down(z) for z in sizes)
    if target >= n:
        if stable >= n:
            decision['blocked_by'] = 'stabilization'
            return NONE, n, '%s, but the stabilisation window (%s) still recommends %d' % (
                detail, _fmt_secs(conf['stabilization']), stable)
        decision['blocked_by'] = 'bounds'
        return NONE, n, '%s, but already at instances.min (%d)' % (detail, lo)
    if n - target < _min_move(conf, n) and target > lo:
        decision['blocked_by'] = 'min_step'
        return NONE, n, '%s, but %d -> %d removes less than min_step %.0f%% (%d)' % (
            detail, n, target, 100 * conf['min_step'], _min_move(conf, n))
    if now < down_ok:
        return _held_by_cooldown(decision, SCALE_DOWN, 'down', n, target, detail, down_ok - now)
    why = 'stabilisation window' if target == stable and stable > floor else (
        'step_down %.0f%%' % (100 * conf['step_down']) if target == floor else 'sizing')
    return SCALE_DOWN, target, '%s: %d -> %d instances (by %s)' % (detail, n, target, why)


def _steady(info):
    if info.get('forecast') is None:
        return '%s has no data' % info['metric']
    cap = info['capacity'] or 1.0
    metric = info['metric']
    return '%s upper bound peaks at %s per instance (low %s, high %s)' % (
        metric, _fmt(info['peak'] / info['instances'] / cap, metric), _fmt(info['low'] / cap, metric),
        _fmt(info['high'] / cap, metric))


def _finish(decision, conf, action, reason, forecast_only, now):
    if action != NONE:
        decision['act'] = not forecast_only
        decision['next_cooldown'] = {'up_until': now + conf['cooldown']['up'], 'down_until': now + conf['cooldown']['down']}
    if forecast_only:
        reason = '[forecast-only: not acted on] ' + reason
    decision['reason'] = reason
    return decision


def _decide_vertical(decision, conf, current, infos, now, up_ok, down_ok, recommendations, forecast_only):
    """Vertical mode: resize cores and memory of the instances instead of adding instances."""
    n = int(current['instances'])
    cores, memory = int(current['cores']), int(current['memory'])
    limits = {'cores': (int(current.get('min_cores', 1)), current.get('max_cores')),
              'memory': (int(current.get('min_memory', 512)), current.get('max_memory'))}
    raw = {'cores': _sized(infos, n, 'cpu', cores, limits['cores'], 1),
           'memory': _sized(infos, n, 'memory', memory, limits['memory'], 128)}
    decision['recommendations'] = _window(recommendations, conf, now, 'cores') + [dict(raw, time=now)]
    decision['current'] = {'cores': cores, 'memory': memory, 'instances': n}
    ups = [i for i in infos if i['up'] and i['metric'] in FRACTION_METRICS + ('latency',)]
    downs = [i for i in infos if i['down']]
    target = {'cores': cores, 'memory': memory}
    if ups:
        action, target, reason = _vertical_up(decision, ups, raw, target, limits, now, up_ok)
    elif infos and len(downs) == len(infos):
        action, target, reason = _vertical_down(decision, downs, target, now, down_ok)
    else:
        action, reason = NONE, _no_signal(infos)
    decision.update(action=action, target=target,
                    amount={'cores': target['cores'] - cores, 'memory': target['memory'] - memory})
    return _finish(decision, conf, action, reason, forecast_only, now)


def _clamp(value, limits):
    low, high = limits
    value = max(low, value)
    return min(int(high), value) if high is not None else value


def _sized(infos, n, metric, size, limits, round_to):
    """The size (cores or MiB, a multiple of ``round_to``) that puts the forecast's peak of ``metric`` at `high`."""
    info = next((i for i in infos if i['metric'] == metric and i['forecast'] is not None), None)
    if info is None:
        return size
    need = info['peak'] / n / info['high'] * size
    return _clamp(int(math.ceil(need / round_to - 1e-9)) * round_to, limits)


def _vertical_up(decision, ups, raw, size, limits, now, up_ok):
    """``(action, size, reason)`` when cpu or memory signals up; a shadow signal grows by one step at least."""
    first = min(ups, key=lambda i: (i['crossing_time'], i['metric']))
    decision.update(signal=first['signal'], metric=first['metric'], crossing_time=first['crossing_time'])
    grown = dict(size)
    for i in ups:
        key = 'cores' if i['metric'] in ('cpu', 'latency') else 'memory'
        if i['signal'] in ('shadow', 'latency'):
            bump = max(raw[key], size[key] + (1 if key == 'cores' else 128))
        else:
            bump = raw[key]
        # never below the current size: a resource already above its maximum (the limit lowered since it grew) is
        # held there, not shrunk by a signal that it is short
        grown[key] = max(size[key], _clamp(max(grown[key], bump), limits[key]))
    if grown == size:
        decision['blocked_by'] = 'bounds'
        held = [key for key in ('cores', 'memory') if limits[key][1] is not None and size[key] > int(limits[key][1])]
        above = ['%s %d above max_%s %d (lowered since it grew; held, not shrunk)'
                 % (key, size[key], key, int(limits[key][1])) for key in held]
        return NONE, size, '%s, but already at the maximum size%s' % (first['detail'],
                                                                      ': ' + ', '.join(above) if above else '')
    if now < up_ok:
        decision['blocked_by'] = 'cooldown_up'
        decision['wanted'] = dict(grown, action=SCALE_UP)
        return NONE, size, '%s; resize held by cooldown.up until %s from now' % (first['detail'], _fmt_secs(up_ok - now))
    return SCALE_UP, grown, '%s: %d -> %d cores, %d -> %d MiB' % (
        first['detail'], size['cores'], grown['cores'], size['memory'], grown['memory'])


def _vertical_down(decision, downs, size, now, down_ok):
    """``(action, size, reason)`` when every metric signals down: no smaller than the window's largest."""
    decision.update(signal='forecast_low', metric=downs[0]['metric'])
    shrunk = {'cores': min(size['cores'], max(r['cores'] for r in decision['recommendations'])),
              'memory': min(size['memory'], max(r['memory'] for r in decision['recommendations']))}
    detail = '; '.join(i['detail'] for i in downs)
    if shrunk == size:
        decision['blocked_by'] = 'stabilization'
        return NONE, size, '%s, but the stabilisation window or the minimum size holds the current size' % detail
    if now < down_ok:
        decision['blocked_by'] = 'cooldown_down'
        decision['wanted'] = dict(shrunk, action=SCALE_DOWN)
        return NONE, size, '%s; resize held by cooldown.down until %s from now' % (detail, _fmt_secs(down_ok - now))
    return SCALE_DOWN, shrunk, '%s: %d -> %d cores, %d -> %d MiB' % (
        detail, size['cores'], shrunk['cores'], size['memory'], shrunk['memory'])

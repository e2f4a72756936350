# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""decide() on many random services: what must hold whatever the template, the load and the history.

The worked examples in test_policy.py pin answers; these pin the rules every answer obeys (bounds, cooldowns,
min_step, step_down, the stabilisation window, forecast-only, strict JSON, no input changed), on scaling blocks,
loads and earlier decisions drawn at random with a fixed seed. Most scenarios pass a forecast, as the modules do
after the forecaster ran, so that hundreds of them stay fast; some run the real forecaster on the random load.
"""
import copy
import json
import math
import random

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy

NOW = 1_800_000_000
CAP = 4.0            # one instance's cpu capacity (cores)
SCENARIOS = 400
WITH_FORECASTER = 25


def _duration(rnd, lo, hi, zero=False):
    if zero and rnd.random() < 0.15:
        return 0
    return '%dm' % rnd.randint(lo, hi)


def _scaling(rnd):
    high = rnd.choice((0.5, 0.6, 0.7, 0.8, 0.9))
    low = round(rnd.uniform(0.05, high - 0.1), 2)
    lo = rnd.randint(1, 4)
    step_down = rnd.choice((0.25, 0.5, 1.0))
    block = {
        'cpu': {'high': high, 'low': low, 'duration': _duration(rnd, 1, 10)},
        'horizon': _duration(rnd, 5, 30),
        'instances': {'min': lo, 'max': rnd.randint(lo, 16)},
        'cooldown': {'up': _duration(rnd, 1, 10, zero=True), 'down': _duration(rnd, 1, 30, zero=True)},
        'mode': 'horizontal',
        'step_down': step_down,
        'min_step': rnd.choice((0.0, 0.25, step_down)),
        'tolerance': rnd.choice((0.0, 0.1, 0.2)),
        'provision': _duration(rnd, 1, 20, zero=True),
    }
    if rnd.random() < 0.7:
        block['stabilization'] = _duration(rnd, 1, 60, zero=True)
    return block


def _load(rnd, n, step, points):
    """Total cpu demand (cores) of n instances: a random walk around a random utilisation, with gaps, spikes,
    idle stretches or a ramp."""
    level = rnd.uniform(0.0, 1.2) * n * CAP
    sd = rnd.choice((0.0, 0.01, 0.05, 0.2)) * n * CAP
    slope = rnd.choice((0.0, 0.0, 0.01, -0.01)) * n * CAP
    out = []
    for i in range(points):
        level = max(0.0, level + rnd.gauss(0, sd) + slope)
        value = level
        if rnd.random() < 0.03:
            value *= rnd.uniform(2, 6)          # a spike
        out.append(None if rnd.random() < rnd.choice((0.0, 0.1, 0.4)) else value)
    if rnd.random() < 0.1:
        idle = rnd.randint(1, 5)
        out[-idle:] = [0.0] * idle                  # gone idle
    if all(v is None for v in out):
        out[-1] = level
    return out


def _forecast(rnd, demand, steps):
    last = next(v for v in reversed(demand) if v is not None)
    drift = rnd.uniform(-0.05, 0.08) * max(last, 1.0)
    mean = [max(0.0, last + drift * (h + 1)) for h in range(steps)]
    width = [rnd.uniform(0.0, 0.3) * max(last, 1.0) * math.sqrt(h + 1) for h in range(steps)]
    return {'mean': mean, 'upper': [m + w for m, w in zip(mean, width)],
            'lower': [max(0.0, m - w) for m, w in zip(mean, width)], 'model': 'combination'}


def _scenario(seed, with_forecaster=False):
    rnd = random.Random(seed)
    block = _scaling(rnd)
    conf = policy.normalise_scaling(block)
    lo, hi = conf['instances']['min'], conf['instances']['max']
    n = rnd.randint(max(1, lo - 1), hi + 1) if rnd.random() < 0.1 else rnd.randint(lo, hi)
    step = rnd.choice((60, 300))
    need = max(policy.steps(conf['horizon'], step), policy.steps(conf['metrics']['cpu']['duration'], step))
    demand = _load(rnd, n, step, rnd.randint(need + 12, 400 if with_forecaster else need + 60))
    metric = {'step_seconds': step, 'demand': demand, 'end': NOW - rnd.choice((0, step // 2))}
    if not with_forecaster:
        metric['forecast'] = _forecast(rnd, demand, need)
    last_action = None
    if rnd.random() < 0.6:
        last_action = {'action': rnd.choice(('scale_up', 'scale_down')), 'time': NOW - rnd.randint(0, 3600)}
    recs = [{'time': NOW - rnd.randint(0, 7200), 'instances': rnd.randint(lo, hi)}
            for dummy in range(rnd.randint(0, 12))]
    kwargs = dict(last_action=last_action, recommendations=recs, forecast_only=rnd.random() < 0.2)
    return block, {'instances': n, 'capacity': {'cpu': CAP}}, {'cpu': metric}, kwargs


def _min_move(conf, n):
    """The fewest instances an action moves, as the docs say: min_step of them rounded up, at least one."""
    return max(1, int(math.ceil(n * conf['min_step'] - 1e-9)))


def _check(block, current, metrics, kwargs):
    """Every rule a horizontal decision obeys; returns the decision."""
    inputs = copy.deepcopy((block, current, metrics, kwargs))
    d = policy.decide(block, current, metrics, NOW, **kwargs)
    assert (block, current, metrics, kwargs) == inputs, 'decide() changed its inputs'
    json.dumps(d, allow_nan=False)                               # strict JSON: no NaN or infinity for AWX
    assert d == policy.decide(*copy.deepcopy((block, current, metrics)), NOW, **copy.deepcopy(kwargs))

    conf = policy.normalise_scaling(block)
    lo, hi = conf['instances']['min'], conf['instances']['max']
    n, target = current['instances'], d['target']['instances']
    assert lo <= target <= hi
    assert d['amount'] == target - n
    assert d['action'] == {1: 'scale_up', -1: 'scale_down', 0: 'none'}[(target > n) - (target < n)]
    assert d['act'] == (d['action'] != 'none' and not kwargs['forecast_only'])
    assert isinstance(d['reason'], str) and d['reason']
    assert d['reason'].startswith('[forecast-only') == kwargs['forecast_only']
    assert all(lo <= r['instances'] <= hi for r in d['recommendations'][-1:])
    assert all(NOW - conf['stabilization'] <= r['time'] <= NOW for r in d['recommendations'])
    if not lo <= n <= hi:
        assert d['signal'] == 'bounds' and target == min(hi, max(lo, n))
        return d
    last = kwargs['last_action']
    if d['action'] == 'scale_up':
        assert last is None or NOW >= last['time'] + conf['cooldown']['up'], d['reason']
        assert target - n >= _min_move(conf, n) or target == hi, d['reason']
    if d['action'] == 'scale_down':
        assert last is None or NOW >= last['time'] + conf['cooldown']['down'], d['reason']
        assert n - target >= _min_move(conf, n) or target == lo, d['reason']
        assert n - target <= max(1, int(math.floor(n * conf['step_down'] + 1e-9))), d['reason']
        assert target >= max(r['instances'] for r in d['recommendations']), d['reason']
    if d['blocked_by'] in ('cooldown_up', 'cooldown_down'):
        assert d['action'] == 'none' and d['wanted']['instances'] != n
    return d


@pytest.mark.parametrize('chunk', range(4))
def test_every_decision_obeys_the_rules(chunk):
    actions = {}
    for seed in range(chunk * SCENARIOS // 4, (chunk + 1) * SCENARIOS // 4):
        d = _check(*_scenario(seed))
        actions[d['action']] = actions.get(d['action'], 0) + 1
    # the draws reach every branch: a run of nothing but "none" would check the rules on nothing
    assert set(actions) == {'scale_up', 'scale_down', 'none'}, actions


def test_every_decision_obeys_the_rules_with_the_real_forecaster():
    pytest.importorskip('statsmodels')
    seen = set()
    for seed in range(10_000, 10_000 + WITH_FORECASTER):
        d = _check(*_scenario(seed, with_forecaster=True))
        seen.add(d['action'])
    assert 'scale_up' in seen and 'none' in seen, seen


def test_more_load_never_means_fewer_instances():
    """Everything else equal (no cooldown, no earlier recommendations), a load and forecast scaled up never
    decide a smaller size."""
    checked = 0
    for seed in range(300):
        block, current, metrics, kwargs = _scenario(seed)
        kwargs = {'last_action': None, 'recommendations': [], 'forecast_only': kwargs['forecast_only']}
        sizes = []
        for factor in (0.5, 1.0, 1.5, 3.0):
            m = copy.deepcopy(metrics)
            m['cpu']['demand'] = [None if v is None else v * factor for v in m['cpu']['demand']]
            m['cpu']['forecast'] = dict((k, [x * factor for x in v]) if isinstance(v, list) else (k, v)
                                        for k, v in m['cpu']['forecast'].items())
            sizes.append(policy.decide(block, current, m, NOW, **kwargs)['target']['instances'])
        assert sizes == sorted(sizes), (seed, sizes)
        checked += len(set(sizes)) > 1
    assert checked > 50          # most services change size somewhere along the factors


def _vertical_scenario(seed):
    rnd = random.Random(seed)
    block = _scaling(rnd)
    block.update(mode='vertical', memory={'high': 0.8, 'low': 0.4, 'duration': '5m'})
    conf = policy.normalise_scaling(block)
    cores, memory = rnd.randint(1, 16), 128 * rnd.randint(4, 256)
    current = {'instances': rnd.randint(1, 4), 'cores': cores, 'memory': memory}
    if rnd.random() < 0.8:                      # limits, usually around the current size, now and then not
        current.update(min_cores=rnd.randint(1, cores), max_cores=cores + rnd.randint(-1 if cores > 1 else 0, 16),
                       min_memory=128 * rnd.randint(4, memory // 128),
                       max_memory=memory + 128 * rnd.randint(-1 if memory > 512 else 0, 64))
    n, step = current['instances'], rnd.choice((60, 300))
    need = max(policy.steps(conf['horizon'], step), policy.steps(conf['metrics']['cpu']['duration'], step))
    metrics = {}
    for metric, per in (('cpu', cores), ('memory', memory)):
        demand = [None if v is None else v / CAP * per for v in _load(rnd, n, step, need + rnd.randint(12, 60))]
        metrics[metric] = {'step_seconds': step, 'demand': demand, 'end': NOW, 'forecast': _forecast(rnd, demand, need)}
    last_action = {'action': 'scale_up', 'time': NOW - rnd.randint(0, 3600)} if rnd.random() < 0.5 else None
    recs = [{'time': NOW - rnd.randint(0, 3600), 'cores': rnd.randint(1, 16), 'memory': 128 * rnd.randint(4, 256)}
            for dummy in range(rnd.randint(0, 6))]
    return block, current, metrics, dict(last_action=last_action, recommendations=recs,
                                         forecast_only=rnd.random() < 0.2)


def test_every_vertical_decision_obeys_the_rules():
    actions = {}
    for seed in range(200):
        block, current, metrics, kwargs = _vertical_scenario(seed)
        d = policy.decide(block, current, metrics, NOW, **kwargs)
        json.dumps(d, allow_nan=False)
        conf = policy.normalise_scaling(block)
        was, target = (current['cores'], current['memory']), (d['target']['cores'], d['target']['memory'])
        shown = (seed, d['action'], was, target, d['reason'])
        assert d['amount'] == {'cores': target[0] - was[0], 'memory': target[1] - was[1]}, shown
        if d['action'] == 'scale_up':       # grows, never shrinks the other resource
            assert target[0] >= was[0] and target[1] >= was[1] and target != was, shown
        elif d['action'] == 'scale_down':
            assert target[0] <= was[0] and target[1] <= was[1] and target != was, shown
        else:
            assert target == was, shown
        inside = [current.get('min_cores', 1) <= was[0] <= current.get('max_cores', was[0]),
                  current.get('min_memory', 512) <= was[1] <= current.get('max_memory', was[1])]
        if all(inside):
            assert current.get('min_cores', 1) <= target[0] <= current.get('max_cores', target[0]), shown
            assert current.get('min_memory', 512) <= target[1] <= current.get('max_memory', target[1]), shown
        assert d['act'] == (d['action'] != 'none' and not kwargs['forecast_only'])
        last = kwargs['last_action']
        if d['action'] != 'none' and last is not None:
            assert NOW >= last['time'] + conf['cooldown']['up' if d['action'] == 'scale_up' else 'down'], shown
        actions[d['action']] = actions.get(d['action'], 0) + 1
    assert set(actions) == {'scale_up', 'scale_down', 'none'}, actions


def test_non_numbers_in_the_load_are_gaps():
    """NaN and infinities in the load (a broken exporter, a division by zero upstream) decide exactly as gaps do,
    and the rules hold (an infinity crashed the sizing with an OverflowError)."""
    for seed in range(150):
        block, current, metrics, kwargs = _scenario(seed)
        rnd = random.Random(seed)
        demand = metrics['cpu']['demand']
        spoilt = [rnd.choice((float('nan'), float('inf'), float('-inf'))) if v is not None and rnd.random() < 0.1
                  else v for v in demand]
        gaps = [None if v is not None and not math.isfinite(v) else v for v in spoilt]
        with_gaps = policy.decide(block, current, dict(metrics, cpu=dict(metrics['cpu'], demand=gaps)), NOW, **kwargs)
        metrics['cpu']['demand'] = spoilt
        assert _check(block, current, metrics, kwargs) == with_gaps, seed

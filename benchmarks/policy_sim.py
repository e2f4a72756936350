#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scaling-policy simulation on the Bitbrains Rnd traces and the datacenter aggregates.

Each series' last 7 days (fewer for Alibaba's 7.8 days: every step with 2 days of history before
it) are replayed at 5-minute steps. Capacity is counted in instance-sized units (one unit = the
series' 95th-percentile CPU usage over those days / --units, default 4); a scale-out adds capacity
2 steps after the decision, a scale-in removes it at once (in-flight scale-outs first). Compared:

* seed:    the seed's reactive rule: +1 unit when usage > 70% of capacity for 3
           points, -1 unit when usage < 30% of capacity for 3 points;
* target tracking (the anchor): Kubernetes HPA's rule, desired = ceil(usage / (target x unit)),
           a 10% tolerance band, a 5-minute down-scale stabilisation window (the highest
           recommendation of the window); its target swept, its under-provisioned minutes
           interpolated at the policy's mean capacity (the "same money" comparison);
* policy:  plugins/module_utils/scaling/policy.py decide(), fed with forecast.py's forecast of
           the series (the code the modules run; forecasts are computed once per series and step
           and cached in benchmarks/results/ under the digest of forecast.py, they do not depend on
           the capacity the policy chose), scaling.provision = the simulated lead (10m).

Trade-off curves: the seed rule (high swept, low = high x 3/7), target tracking (target swept)
and the policy (cpu.high swept), one point per setting; --plot writes them as a PNG.
The shadow-minus-primary seed signal is not simulated (the traces have no shadow).

--history pve gives each forecast the 7 days as a stateless controller reads them from PVE (the last day as it is,
the days before it as 30-minute means): the policy as it runs from AWX with no history store.

    .venv/bin/python benchmarks/policy_sim.py [--dataset both|csv:PATH] [--vms N] [--jobs 2] [--plot curve.png]
                                              [--history store|pve]
"""
import argparse
import functools
import importlib
import json
import math
import os
import statistics
import sys
import time

import _traces

WEEK = 7 * 24 * 12
DAY = 24 * 12
MIN_HISTORY = 2 * DAY     # a step is simulated only with at least 2 days of history before it
HORIZON = 15              # forecast steps cached (75 min); the policy uses provision + horizon of them
LEAD = 2                  # a scale-out's capacity arrives this many steps after the decision
UNITS_START = 4
UNITS_MIN = 1
UNITS_MAX = 64
CACHE = os.path.join(_traces.HERE, 'results', 'policy_forecasts')
BANDS = (0.3, 0.5)        # interval levels cached beside the 80% one (the policy's default and its alternative)

# The datacenter aggregates (_traces.aggregate_series): every column that is a load a service's instances serve
# (CPU, memory, network, disk; not Google's cycles per instruction), each simulated as one service's load, as
# (name, column, kind). The CPU ones alone with --aggregates cpu.
AGGREGATES = (
    ('alibaba', 'alibaba2018:cpu_util_percent', 'cpu'),
    ('azure', 'azure:cpu_usage', 'cpu'),
    ('google', 'google2019:avg_cpu', 'cpu'),
    ('alibaba-mem', 'alibaba2018:mem_util_percent', 'memory'),
    ('alibaba-net_in', 'alibaba2018:net_in', 'net'),
    ('alibaba-net_out', 'alibaba2018:net_out', 'net'),
    ('alibaba-disk', 'alibaba2018:disk_io_percent', 'disk'),
    ('azure-mem', 'azure:assigned_mem', 'memory'),
    ('google-mem', 'google2019:avg_mem', 'memory'),
    ('google-assigned_mem', 'google2019:avg_assigned_mem', 'memory'),
)
AGGREGATE_SET = 'load'    # --aggregates: 'load' (every entry) or 'cpu'
DATASETS = ('bitbrains', 'datacenter')


def band_key(level):
    """A cached band's key: its level, as the cache files' JSON object keys hold it."""
    return '%.2f' % level


def series_names(dataset, limit=None):
    if dataset == 'bitbrains':
        return _traces.vm_names(limit)
    if _traces.csv_path(dataset):
        names = [name for name, dummy in _csv(dataset)]
    else:
        names = [name for name, dummy, kind in AGGREGATES if AGGREGATE_SET == 'load' or kind == AGGREGATE_SET]
    return names[:limit] if limit else names


@functools.lru_cache(maxsize=1)
def _aggregates():
    """Every aggregate column, parsed once per process."""
    return dict(_traces.aggregate_series())


def load_series(dataset, name):
    """One series on the 5-minute grid (None for gaps)."""
    if dataset == 'bitbrains':
        return _traces.load_vm(name)[0]
    if _traces.csv_path(dataset):
        return dict(_csv(dataset))[name]
    return _aggregates()[dict((a[0], a[1]) for a in AGGREGATES)[name]]


def sim_range(values, days):
    """The simulated steps: the last `days` days, each with at least MIN_HISTORY steps before it."""
    n = len(values)
    return range(max(n - days * DAY, MIN_HISTORY), n)


FORECASTER_ID = None      # --forecasts: simulate with the cached forecasts of an earlier forecast.py
HISTORY = 'store'         # --history: 'store' (the 7 days as they are) or 'pve' (what a stateless controller reads)


def _file_digest(path):
    """The SHA-256 of a file's bytes (hex): what the cache keys name the code that made the forecasts by."""
    import hashlib
    with open(path, 'rb') as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _forecaster_id():
    """A digest of forecast.py: cached forecasts of another forecaster are never reused."""
    if FORECASTER_ID:
        return FORECASTER_ID
    return _file_digest(os.path.join(_traces.ROOT, 'plugins', 'module_utils', 'scaling', 'forecast.py'))[:10]


@functools.lru_cache(maxsize=4)
def _csv(dataset):
    """Your own traces (``csv:PATH``, _traces.csv_series), parsed once per process."""
    return _traces.csv_series(_traces.csv_path(dataset))


@functools.lru_cache(maxsize=4)
def _dataset_key(dataset):
    """The cache files' name for a data set: for ``csv:PATH`` a digest of the paths, sizes and modification times
    of the files it reads and of the reader (_traces.py), so that changed traces, or traces read another way, are
    forecast again (computed once per process)."""
    if not _traces.csv_path(dataset):
        return dataset
    import hashlib
    files = _traces.csv_files(os.path.abspath(_traces.csv_path(dataset)))
    reader = _file_digest(os.path.abspath(_traces.__file__))
    stamp = ';'.join(['reader ' + reader] + ['%s %d %d' % (f, os.stat(f).st_size, os.stat(f).st_mtime_ns) for f in files])
    return 'csv-' + hashlib.sha256(stamp.encode()).hexdigest()[:10]


def _cache_path(dataset, name):
    safe = ''.join(c if c.isalnum() or c in '-_.' else '_' for c in name)
    shape = '' if HISTORY == 'store' else '-' + HISTORY
    return os.path.join(CACHE, '%s-%s-%s%s.json' % (_dataset_key(dataset), safe, _forecaster_id(), shape))


def precompute(job):
    """Forecast every simulated step from the (up to) 7 days before it; cached per series and forecaster."""
    dataset, name, days = job
    path = _cache_path(dataset, name)
    values = load_series(dataset, name)
    steps = sim_range(values, days)
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
        if data.get('n') == len(values) and all(str(t) in data['steps'] for t in (steps[0], steps[-1])):
            return job, 0.0
    _traces.import_collection()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
    n = len(values)
    out = {'n': n, 'level': 0.8, 'bands': list(BANDS), 'steps': {}}
    t0 = time.perf_counter()
    for t in steps:
        # decision at the end of step t, knowing values[..t]
        history = values[max(0, t + 1 - WEEK):t + 1]
        if HISTORY == 'pve':
            history = _traces.pve_week(history)
        fc = forecast_series(history, _traces.STEP, HORIZON, level=0.8, bands=BANDS)
        out['steps'][t] = [[round(v, 4) for v in fc['mean']], [round(v, 4) for v in fc['upper']],
                           [round(v, 4) for v in fc['lower']], fc['model'],
                           dict((band_key(b['level']), [round(v, 4) for v in b['upper']]) for b in fc['bands'])]
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as fh:
        json.dump(out, fh)
    os.replace(tmp, path)
    return job, time.perf_counter() - t0


def load_forecasts(dataset, name):
    with open(_cache_path(dataset, name)) as fh:
        data = json.load(fh)
    return {int(k): v for k, v in data['steps'].items()}


class Sim(object):
    """Capacity bookkeeping shared by every rule: units now active and scale-outs on their way."""

    def __init__(self, unit):
        self.unit = unit
        self.active = UNITS_START
        self.pending = []         # (arrival step, units)
        self.actions = 0
        self.under = 0
        self.cap_sum = 0.0
        self.steps = 0

    def tick(self, t, usage):
        arrived = [p for p in self.pending if p[0] <= t]
        self.pending = [p for p in self.pending if p[0] > t]
        self.active += sum(p[1] for p in arrived)
        self.steps += 1
        self.cap_sum += self.active
        if usage is not None and usage > self.active * self.unit:
            self.under += 1

    @property
    def provisioned(self):
        return self.active + sum(p[1] for p in self.pending)

    def scale_to(self, t, target):
        target = max(UNITS_MIN, min(UNITS_MAX, target))
        delta = target - self.provisioned
        if delta > 0:
            self.pending.append((t + LEAD, delta))
        elif delta < 0:
            # removing capacity is immediate; cancel pending clones first
            cut = -delta
            while cut and self.pending:
                when, u = self.pending.pop()
                take = min(u, cut)
                cut -= take
                if u > take:
                    self.pending.append((when, u - take))
            self.active -= cut
        if delta:
            self.actions += 1

    def result(self):
        return {'under_min': self.under * _traces.STEP // 60, 'avg_units': self.cap_sum / self.steps,
                'actions': self.actions}


def simulate_reactive(values, unit, steps, high=0.70, low=0.30, points=3):
    """The seed rule: usage above high x capacity for `points` points -> +1 unit, below low -> -1."""
    sim = Sim(unit)
    above = below = 0
    for t in steps:
        u = values[t]
        sim.tick(t, u)
        if u is None:
            continue
        cap = sim.provisioned * unit
        above = above + 1 if u > high * cap else 0
        below = below + 1 if u < low * cap else 0
        if above >= points:
            sim.scale_to(t, sim.provisioned + 1)
            above = below = 0
        elif below >= points and sim.provisioned > UNITS_MIN:
            sim.scale_to(t, sim.provisioned - 1)
            above = below = 0
    return sim.result()


def simulate_target(values, unit, steps, target=0.70, tolerance=0.10, window=300):
    """Target tracking as Kubernetes' HPA does it (and AWS target tracking, less its alarms).

    desired = ceil(load / (target x unit)); no change while load / (instances x unit x target) is within
    `tolerance` of 1; a scale-down goes only to the highest recommendation of the last `window` seconds (HPA's
    downscale stabilisation, 5 minutes by default), a scale-up at once. Instances = active + in flight.
    """
    sim = Sim(unit)
    recs = []
    for t in steps:
        u = values[t]
        sim.tick(t, u)
        if u is None:
            continue
        n = sim.provisioned
        ratio = u / (n * unit * target)
        desired = n if abs(ratio - 1.0) <= tolerance else int(math.ceil(u / (target * unit) - 1e-9))
        desired = max(UNITS_MIN, min(UNITS_MAX, desired))
        recs = [(rt, r) for rt, r in recs if (t - rt) * _traces.STEP <= window] + [(t, desired)]
        if desired > n:
            sim.scale_to(t, desired)
        elif desired < n:
            stable = max(r for rt, r in recs)
            if stable < n:
                sim.scale_to(t, stable)
    return sim.result()


def simulate_policy(decide, values, unit, steps, forecasts, scaling, level):
    z80 = 1.2815515655446004
    zl = _normal_quantile(0.5 + level / 2.0)
    sim = Sim(unit)
    last_action = None
    recs = []
    fired = {}
    for t in steps:
        u = values[t]
        sim.tick(t, u)
        mean, upper, lower, model = forecasts[t][:4]
        bands = forecasts[t][4] if len(forecasts[t]) > 4 else {}
        if band_key(level) in bands:
            upper = bands[band_key(level)]         # the forecaster's own interval at this level
        elif level != 0.8:                         # not cached: the 80% interval scaled as a Gaussian's would be
            upper = [m + (up - m) * zl / z80 for m, up in zip(mean, upper)]
        now = t * _traces.STEP
        d = decide(scaling, {'instances': sim.provisioned, 'capacity': {'cpu': unit}},
                   {'cpu': {'step_seconds': _traces.STEP, 'demand': values[t - 11:t + 1], 'end': now,
                            'forecast': {'mean': mean, 'upper': upper, 'lower': lower, 'model': model}}},
                   now, last_action=last_action, recommendations=recs)
        recs = d['recommendations']
        if d['action'] != 'none' and d['act']:
            fired[d['signal']] = fired.get(d['signal'], 0) + 1
            sim.scale_to(t, d['target']['instances'])
            last_action = {'action': d['action'], 'time': now}
    res = sim.result()
    res['signals'] = fired
    return res


def _normal_quantile(p):
    from statistics import NormalDist
    return NormalDist().inv_cdf(p)


def unit_of(values, steps, per_p95=4):
    """One instance's capacity: the 95th percentile of the simulated steps' usage / `per_p95`."""
    window = [values[t] for t in steps if values[t] is not None]
    return _traces.percentile(window, 0.95) / float(per_p95)


def totals(results):
    return {'under_min': sum(r['under_min'] for r in results),
            'avg_units': statistics.fmean(r['avg_units'] for r in results),
            'actions': sum(r['actions'] for r in results)}


def run_rule(data, rule, **kw):
    return totals([rule(v, u, st, **kw) for dummy, v, u, dummy2, st in data])


# Issue 14's targets: each ratio of the policy to a rule, how it is printed, and the most it may be. The miss shares
# and every printed "(target ...)" come from here.
GOALS = {'under_vs_tt': ('under vs target tracking', '%+.1f%%', -30.0),
         'under_vs_seed': ('under vs seed', '%+.1f%%', -50.0),
         'cap_vs_seed': ('capacity vs seed', 'x%.2f', 1.40),
         'actions_vs_seed': ('actions vs seed', 'x%.2f', 1.5)}


def ratio_text(key, value):
    """'under vs seed -80.1% (target <= -50%)': a ratio in words with its target."""
    label, fmt, limit = GOALS[key]
    return '%s %s (target <= %s)' % (label, fmt % value, fmt % limit)


def spread_text(key, spread):
    """'capacity vs seed x1.28 .. x1.45 (19% of draws miss x1.40)': one ratio's line from ``resampled``."""
    label, fmt, limit = GOALS[key]
    lo, hi, miss = spread
    return '%s %s .. %s (%.0f%% of draws miss %s)' % (label, fmt % lo, fmt % hi, 100 * miss, fmt % limit)


def resampled(seed, pol, tt_series, draws=1000, rng_seed=14):
    """How much the four ratios depend on which series a data set holds: the series drawn with replacement
    ``draws`` times (a fixed random seed), every rule's totals, target tracking's curve and its interpolation at the
    policy's capacity taken again on each draw. Returns {ratio: (5th, 95th percentile, share of draws that miss the
    target, among the draws where it is defined)}: the margin a figure needs to hold on other series of the same kind."""
    import random
    rnd = random.Random(rng_seed)
    n = len(seed)
    out = dict((k, []) for k in ('under_vs_tt', 'under_vs_seed', 'cap_vs_seed', 'actions_vs_seed'))
    for dummy in range(draws):
        pick = [rnd.randrange(n) for dummy2 in range(n)]
        S, P = totals([seed[i] for i in pick]), totals([pol[i] for i in pick])
        curve = [(T['avg_units'], T['under_min']) for T in (totals([rs[i] for i in pick]) for rs in tt_series)]
        out['under_vs_tt'].append(pct(P['under_min'], at_capacity(curve, P['avg_units'])))
        out['under_vs_seed'].append(pct(P['under_min'], S['under_min']))
        out['cap_vs_seed'].append(P['avg_units'] / S['avg_units'])
        out['actions_vs_seed'].append(P['actions'] / float(S['actions']) if S['actions'] else float('nan'))
    out = dict((k, [x for x in v if not math.isnan(x)]) for k, v in out.items())   # 0 against 0: no ratio
    return dict((k, (_traces.percentile(v, 0.05), _traces.percentile(v, 0.95),
                     sum(1 for x in v if x > GOALS[k][2]) / float(max(1, len(v))))) for k, v in out.items())


def at_capacity(curve, capacity):
    """Under-provisioned minutes of a rule at `capacity`, interpolated linearly on its curve [(capacity, under)]."""
    pts = sorted(curve)
    if capacity <= pts[0][0]:
        return pts[0][1]
    for (c0, u0), (c1, u1) in zip(pts, pts[1:]):
        if c0 <= capacity <= c1:
            return u0 + (u1 - u0) * (capacity - c0) / (c1 - c0) if c1 > c0 else min(u0, u1)
    return pts[-1][1]


def pct(a, b):
    return 100.0 * (a - b) / b if b else float('nan')


def policy_block(args, high=None):
    block = {
        'cpu': {'high': args.high if high is None else high, 'low': args.low, 'duration': args.duration},
        'horizon': args.horizon,
        'instances': {'min': UNITS_MIN, 'max': UNITS_MAX},
        'cooldown': {'up': args.cooldown_up, 'down': args.cooldown_down},
        'provision': args.provision,
        'mode': 'horizontal',
    }
    for key in ('stabilization', 'tolerance', 'step_down', 'min_step'):
        if getattr(args, key) is not None:
            block[key] = getattr(args, key)
    return block


def load_dataset(dataset, limit, days, cached_only, per_p95=4):
    data = []
    for name in series_names(dataset, limit):
        if cached_only and not os.path.exists(_cache_path(dataset, name)):
            continue
        values = load_series(dataset, name)
        steps = sim_range(values, days)
        unit = unit_of(values, steps, per_p95)
        if not unit > 0:
            print('%s %s: 95th percentile usage is 0, skipped' % (dataset, name))
            continue
        data.append((name, values, unit, load_forecasts(dataset, name), steps))
    return data


SEED_HIGHS = (0.5, 0.6, 0.7, 0.8, 0.9)
TARGETS = (0.10, 0.20, 0.25) + tuple(i / 100.0 for i in range(30, 96, 2))
POLICY_HIGHS = (0.5, 0.6, 0.7, 0.8, 0.9)


def evaluate(dataset, data, args, decide, normalise_scaling):
    """One data set: the three rules, the curves, the targets. Returns the summary row."""
    t0 = time.perf_counter()
    scaling = normalise_scaling(policy_block(args))
    seed = [simulate_reactive(v, u, st) for dummy, v, u, dummy2, st in data]
    pol = [simulate_policy(decide, v, u, st, f, scaling, args.level) for dummy, v, u, f, st in data]
    S, P = totals(seed), totals(pol)
    tt_series = [[simulate_target(v, u, st, target=target, window=args.tt_window) for dummy, v, u, dummy2, st in data]
                 for target in TARGETS]
    tt_curve = [(target, totals(rs)) for target, rs in zip(TARGETS, tt_series)]
    tt_cap = [(T['avg_units'], T['under_min']) for dummy, T in tt_curve]
    close_target, T = min(tt_curve, key=lambda x: abs(x[1]['avg_units'] - P['avg_units']))
    tt_under = at_capacity(tt_cap, P['avg_units'])
    if not args.quiet:
        print('%-7s %10s %22s %22s' % ('series', 'unit', 'seed under/avg/acts', 'policy under/avg/acts'))
        for (name, dummy, unit, dummy2, dummy3), a, b in zip(data, seed, pol):
            print('%-7s %10.4g %9d %6.2f %5d %9d %6.2f %5d' % (
                name, unit, a['under_min'], a['avg_units'], a['actions'], b['under_min'], b['avg_units'], b['actions']))
    print()
    print('## %s: %d series, %d simulated steps' % (dataset, len(data), sum(len(d[4]) for d in data)))
    print()
    print('| rule | under-provisioned minutes | mean capacity (units) | scaling actions |')
    print('|---|---|---|---|')
    print('| seed reactive (70%%/30%%, 3 points) | %d | %.2f | %d |' % (S['under_min'], S['avg_units'], S['actions']))
    print('| target tracking (stabilisation %ds), target %.0f%% (closest capacity) | %d | %.2f | %d |' % (
        args.tt_window, 100 * close_target, T['under_min'], T['avg_units'], T['actions']))
    print('| target tracking interpolated to the policy\'s capacity | %.0f | %.2f | - |' % (tt_under, P['avg_units']))
    print('| this policy | %d | %.2f | %d |' % (P['under_min'], P['avg_units'], P['actions']))
    print()
    row = {'dataset': dataset, 'series': len(data),
           'under_vs_tt': pct(P['under_min'], tt_under), 'under_vs_seed': pct(P['under_min'], S['under_min']),
           'cap_vs_seed': P['avg_units'] / S['avg_units'],
           'actions_vs_seed': P['actions'] / float(S['actions']) if S['actions'] else float('nan')}
    print('policy, under-provisioned minutes at equal capacity: %s' % ratio_text('under_vs_tt', row['under_vs_tt']))
    print('policy: %s' % ', '.join(ratio_text(k, row[k]) for k in ('under_vs_seed', 'cap_vs_seed', 'actions_vs_seed')))
    if len(data) > 1:
        spread = resampled(seed, pol, tt_series)
        print('the series resampled (1000 draws with replacement), 5th-95th percentile: %s' % ', '.join(
            spread_text(k, spread[k]) for k in GOALS))
    fired = {}
    for r in pol:
        for k, v in r['signals'].items():
            fired[k] = fired.get(k, 0) + v
    print('policy actions by signal: %s' % ', '.join('%s %d' % kv for kv in sorted(fired.items())))
    curves = {'seed': [], 'target tracking': [], 'policy': []}
    if not args.no_curve:
        print()
        print('trade-off curve (%s): one point per setting' % dataset)
        print()
        print('| rule | setting | mean capacity (units) | under-provisioned minutes | actions |')
        print('|---|---|---|---|---|')
        for high in SEED_HIGHS:
            R = run_rule(data, simulate_reactive, high=high, low=high * 0.3 / 0.7)
            curves['seed'].append((R['avg_units'], R['under_min'], 'high %.2f' % high))
            print('| seed | high %.2f low %.2f | %.2f | %d | %d |' % (high, high * 0.3 / 0.7, R['avg_units'],
                                                                      R['under_min'], R['actions']))
        for target, R in tt_curve:
            if round(target * 100) % 10 == 0:
                print('| target tracking | target %.2f | %.2f | %d | %d |' % (target, R['avg_units'], R['under_min'],
                                                                              R['actions']))
            curves['target tracking'].append((R['avg_units'], R['under_min'], 'target %.2f' % target))
        for high in POLICY_HIGHS:
            sc = normalise_scaling(policy_block(args, high=high))
            R = totals([simulate_policy(decide, v, u, st, f, sc, args.level) for dummy, v, u, f, st in data])
            curves['policy'].append((R['avg_units'], R['under_min'], 'high %.2f' % high))
            print('| policy | cpu.high %.2f | %.2f | %d | %d | vs target tracking at its capacity %+.1f%%' % (
                high, R['avg_units'], R['under_min'], R['actions'], pct(R['under_min'], at_capacity(tt_cap, R['avg_units']))))
    print()
    print('(%s: simulation %.1f s)' % (dataset, time.perf_counter() - t0))
    return row, curves


def plot(path, all_curves):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot written (pip install matplotlib)')
        return
    fig, axes = plt.subplots(1, len(all_curves), figsize=(6 * len(all_curves), 4.5))
    if len(all_curves) == 1:
        axes = [axes]
    for ax, (dataset, curves) in zip(axes, all_curves):
        for (rule, pts), style in zip(sorted(curves.items()), ('o-', 's-', '^-')):
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=rule, markersize=4)
        near = [p[0] for rule in ('seed', 'policy') for p in curves[rule]]
        if near:                                   # target tracking's far ends (target 10-20%) off the plot
            ax.set_xlim(0.8 * min(near + [p[0] for p in curves['target tracking']]), 1.5 * max(near))
        ax.set_title(dataset)
        ax.set_xlabel('mean capacity (units)')
        ax.set_ylabel('under-provisioned minutes')
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print('plot written to %s' % path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--dataset', default='both',
                    help='bitbrains, datacenter, both (default), or csv:PATH: your own traces, every numeric column '
                         'of the .csv / .csv.gz files there at 5-minute steps (benchmarks/README.md)')
    ap.add_argument('--aggregates', choices=('load', 'cpu'), default='load',
                    help='datacenter series: every load column (CPU, memory, network, disk: 10) or the CPU ones (3)')
    ap.add_argument('--vms', type=int, default=None, help='only the first N series of each data set (quick subset)')
    ap.add_argument('--days', type=int, default=7, help='simulated days at the end of each series')
    ap.add_argument('--jobs', type=int, default=2, help='processes for the forecast precomputation')
    ap.add_argument('--precompute-only', action='store_true')
    ap.add_argument('--cached-only', action='store_true', help='simulate only the series whose forecasts are cached')
    ap.add_argument('--units', type=int, default=4,
                    help='instances at the 95th percentile of usage: one instance = p95 / UNITS (default 4)')
    ap.add_argument('--plot', default=None, help='write the trade-off curves as a PNG here (needs matplotlib)')
    ap.add_argument('--no-curve', action='store_true', help='skip the trade-off curves (sweeps)')
    ap.add_argument('--high', type=float, default=0.70)
    ap.add_argument('--low', type=float, default=0.30)
    ap.add_argument('--duration', default='5m')
    ap.add_argument('--horizon', default='15m')
    ap.add_argument('--provision', default='%ds' % (LEAD * _traces.STEP),
                    help='scaling.provision given to the policy (default: the simulated lead, %d steps)' % LEAD)
    ap.add_argument('--cooldown-up', default='3m')
    ap.add_argument('--cooldown-down', default='10m')
    ap.add_argument('--stabilization', default=None, help='stabilisation window (default: the policy default)')
    ap.add_argument('--tolerance', default=None, help='tolerance band (default: the policy default)')
    ap.add_argument('--step-down', default=None, help='largest scale-down fraction (default: the policy default)')
    ap.add_argument('--min-step', default=None,
                    help='smallest fraction of the instances one action moves (default: the policy default; 0: one)')
    ap.add_argument('--level', type=float, default=None,
                    help='prediction-interval level of the upper bound (default: the policy default)')
    ap.add_argument('--tt-window', type=int, default=300,
                    help="target tracking's down-scale stabilisation window in seconds (default 300, HPA's)")
    ap.add_argument('--forecasts', default=None, metavar='DIGEST',
                    help='use the cached forecasts of the forecast.py with this digest (printed by every run) '
                         'instead of the current one; implies --cached-only')
    ap.add_argument('--history', choices=('store', 'pve'), default='store',
                    help='what each forecast is given: the 7 days before the step as they are (store, default), or '
                         'as a stateless controller reads them from PVE (pve: the last day as it is, the 6 days '
                         'before as 30-minute means; cached apart)')
    ap.add_argument('--quiet', action='store_true', help='summary only')
    args = ap.parse_args()
    own = _traces.csv_path(args.dataset)
    if args.dataset not in DATASETS + ('both',) and not own:
        ap.error('--dataset: choose bitbrains, datacenter, both or csv:PATH')
    if own and not os.path.exists(own):
        ap.error('--dataset: %s does not exist' % own)
    datasets = DATASETS if args.dataset == 'both' else (args.dataset,)
    global UNITS_START, FORECASTER_ID, AGGREGATE_SET, HISTORY
    AGGREGATE_SET = args.aggregates
    HISTORY = args.history
    UNITS_START = args.units            # every rule starts with the 95th percentile's capacity
    # The digest and the forecaster's code are taken once, here, before any worker starts: forecast.py edited
    # during a run can neither rename the cache files nor change the forecasts in them. The workers are forked (not
    # spawned, nor forkserver's, Python 3.14's default) so that they inherit both.
    FORECASTER_ID = args.forecasts or _forecaster_id()
    _traces.import_collection()
    importlib.import_module('ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast')
    jobs = [(ds, name, args.days) for ds in datasets for name in series_names(ds, args.vms)]
    if args.cached_only or args.forecasts:
        args.cached_only = True
        jobs = [j for j in jobs if os.path.exists(_cache_path(j[0], j[1]))]
    if args.jobs > 1:
        import multiprocessing
        with multiprocessing.get_context('fork').Pool(args.jobs) as pool:
            for job, secs in pool.imap_unordered(precompute, jobs):
                if secs:
                    print('forecasts for %s %s: %.0f s' % (job[0], job[1], secs), flush=True)
    else:
        for job in jobs:
            job, secs = precompute(job)
            if secs:
                print('forecasts for %s %s: %.0f s' % (job[0], job[1], secs), flush=True)
    if args.precompute_only:
        return

    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.policy import (
        DEFAULT_LEVEL, decide, normalise_scaling)
    if args.level is None:
        args.level = DEFAULT_LEVEL
    sc = normalise_scaling(policy_block(args))
    print('command: %s' % ' '.join([sys.executable.rsplit('/', maxsplit=1)[-1]] + sys.argv))
    print('forecaster: forecast.py %s, history %s' % (_forecaster_id(), HISTORY))
    print('policy: cpu high %.2f, horizon %s, provision %ss, cooldown up %s down %s, upper bound of the %.0f%% '
          'interval, stabilisation %ss, tolerance %.2f, step_down %.2f, min_step %.2f' % (
              args.high, args.horizon, sc['provision'], args.cooldown_up, args.cooldown_down, 100 * args.level,
              sc['stabilization'], sc['tolerance'], sc['step_down'], sc['min_step']))
    rows, all_curves = [], []
    for ds in datasets:
        data = load_dataset(ds, args.vms, args.days, args.cached_only, args.units)
        if not data:
            print('%s: no series' % ds)
            continue
        row, curves = evaluate(ds, data, args, decide, normalise_scaling)
        rows.append(row)
        all_curves.append((ds, curves))
    print()
    heads = ['%s (<= %s)' % (label, fmt % limit) for label, fmt, limit in GOALS.values()]
    print('| data set | series | %s |' % ' | '.join(heads))
    print('|---|---|---|---|---|---|')
    for r in rows:
        print('| %s | %d | %s |' % (r['dataset'], r['series'], ' | '.join(GOALS[k][1] % r[k] for k in GOALS)))
    print('load average at the end (1/5/15 min): %.1f %.1f %.1f on %d CPUs' % (os.getloadavg() + (os.cpu_count(),)))
    if args.plot and all_curves:
        plot(args.plot, all_curves)


if __name__ == '__main__':
    main()

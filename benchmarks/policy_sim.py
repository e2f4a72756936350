#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Scaling-policy simulation on the Bitbrains Rnd traces.

Each VM's last 7 days are replayed at 5-minute steps. Capacity is counted in
instance-sized units (one unit = the VM's 95th-percentile CPU usage over those 7 days
/ 4); a scale-out adds capacity 2 steps after the decision, a scale-in removes it at
once. Compared:

* seed:    the seed's reactive rule: +1 unit when usage > 70% of capacity for 3
           points, -1 unit when usage < 30% of capacity for 3 points;
* tuned:   the same reactive rule with its thresholds moved until its average
           capacity matches the policy's (the fair "same money" comparison);
* policy:  plugins/module_utils/scaling/policy.py decide(), fed with forecast.py's forecast of
           the VM's demand (the code the modules run; forecasts are computed once per
           VM and step and cached in benchmarks/results/, they do not depend on the
           capacity the policy chose).

The shadow-minus-primary seed signal is not simulated (the traces have no shadow).

    .venv/bin/python benchmarks/policy_sim.py [--vms N] [--jobs 2]
"""
import argparse
import json
import os
import statistics
import sys
import time

import _traces

WEEK = 7 * 24 * 12
HORIZON = 15              # forecast steps cached (75 min); the policy uses scaling.horizon of them
LEAD = 2                  # a scale-out's capacity arrives this many steps after the decision
UNITS_START = 4
UNITS_MIN = 1
UNITS_MAX = 64
CACHE = os.path.join(_traces.HERE, 'results', 'policy_forecasts')


def _cache_path(name):
    return os.path.join(CACHE, '%s.json' % name)


def precompute(name):
    """Forecast every step of the VM's last 7 days from the 7 days before it; cached."""
    path = _cache_path(name)
    values, _cores = _traces.load_vm(name)
    if os.path.exists(path):
        with open(path) as fh:
            data = json.load(fh)
        if data.get('n') == len(values):
            return name, 0.0
    _traces.import_collection()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
    n = len(values)
    out = {'n': n, 'level': 0.8, 'steps': {}}
    t0 = time.perf_counter()
    for t in range(n - WEEK, n):
        # decision at the end of step t, knowing values[..t]
        fc = forecast_series(values[t + 1 - WEEK:t + 1], _traces.STEP, HORIZON, level=0.8)
        out['steps'][t] = [[round(v, 3) for v in fc['mean']], [round(v, 3) for v in fc['upper']],
                           [round(v, 3) for v in fc['lower']], fc['model']]
    os.makedirs(CACHE, exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'w') as fh:
        json.dump(out, fh)
    os.replace(tmp, path)
    return name, time.perf_counter() - t0


def load_forecasts(name):
    with open(_cache_path(name)) as fh:
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


def simulate_reactive(values, unit, high=0.70, low=0.30, points=3):
    """The seed rule: usage above high x capacity for `points` points -> +1 unit, below low -> -1."""
    n = len(values)
    sim = Sim(unit)
    above = below = 0
    for t in range(n - WEEK, n):
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


def simulate_policy(decide, values, unit, forecasts, scaling, level):
    z80 = 1.2815515655446004
    zl = _normal_quantile(0.5 + level / 2.0)
    n = len(values)
    sim = Sim(unit)
    last_action = None
    recs = []
    models = {}
    fired = {}
    for t in range(n - WEEK, n):
        u = values[t]
        sim.tick(t, u)
        mean, upper, lower, model = forecasts[t]
        if level != 0.8:
            upper = [m + (up - m) * zl / z80 for m, up in zip(mean, upper)]
        now = t * _traces.STEP
        d = decide(scaling, {'instances': sim.provisioned, 'capacity': {'cpu': unit}},
                   {'cpu': {'step_seconds': _traces.STEP, 'demand': values[t - 11:t + 1], 'end': now,
                            'forecast': {'mean': mean, 'upper': upper, 'lower': lower, 'model': model}}},
                   now, last_action=last_action, recommendations=recs)
        recs = d['recommendations']
        models[model] = models.get(model, 0) + 1
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


def unit_of(values):
    week = [v for v in values[-WEEK:] if v is not None]
    return _traces.percentile(week, 0.95) / 4.0


def totals(results):
    return {'under_min': sum(r['under_min'] for r in results),
            'avg_units': statistics.fmean(r['avg_units'] for r in results),
            'actions': sum(r['actions'] for r in results)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--vms', type=int, default=None, help='only the first N VMs (quick subset)')
    ap.add_argument('--jobs', type=int, default=2, help='processes for the forecast precomputation')
    ap.add_argument('--precompute-only', action='store_true')
    ap.add_argument('--cached-only', action='store_true', help='simulate only the VMs whose forecasts are cached')
    ap.add_argument('--high', type=float, default=0.70)
    ap.add_argument('--low', type=float, default=0.30)
    ap.add_argument('--duration', default='5m')
    ap.add_argument('--horizon', default='15m')
    ap.add_argument('--cooldown-up', default='3m')
    ap.add_argument('--cooldown-down', default='10m')
    ap.add_argument('--stabilization', default=None,
                    help='stabilisation window (default: the policy default, max(cooldown down, 30m))')
    ap.add_argument('--level', type=float, default=None,
                    help='prediction-interval level of the upper bound (default: the policy default)')
    ap.add_argument('--quiet', action='store_true', help='summary only')
    args = ap.parse_args()
    names = _traces.vm_names(args.vms)
    if args.cached_only:
        names = [n for n in names if os.path.exists(_cache_path(n))]
    todo = names
    if args.jobs > 1:
        import multiprocessing
        with multiprocessing.Pool(args.jobs) as pool:
            for name, secs in pool.imap_unordered(precompute, todo):
                if secs:
                    print('forecasts for VM %s: %.0f s' % (name, secs), flush=True)
    else:
        for name in todo:
            name, secs = precompute(name)
            if secs:
                print('forecasts for VM %s: %.0f s' % (name, secs), flush=True)
    if args.precompute_only:
        return

    _traces.import_collection()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.policy import (
        DEFAULT_LEVEL, decide, normalise_scaling)
    if args.level is None:
        args.level = DEFAULT_LEVEL
    block = {
        'cpu': {'high': args.high, 'low': args.low, 'duration': args.duration},
        'horizon': args.horizon,
        'instances': {'min': UNITS_MIN, 'max': UNITS_MAX},
        'cooldown': {'up': args.cooldown_up, 'down': args.cooldown_down},
        'mode': 'horizontal',
    }
    if args.stabilization:
        block['stabilization'] = args.stabilization
    scaling = normalise_scaling(block)
    data = []
    for name in names:
        values, _cores = _traces.load_vm(name)
        unit = unit_of(values)
        if not unit > 0:
            print('VM %s: 95th percentile usage is 0, skipped' % name)
            continue
        data.append((name, values, unit, load_forecasts(name)))

    t0 = time.perf_counter()
    seed = [simulate_reactive(v, u) for dummy, v, u, dummy2 in data]
    pol = [simulate_policy(decide, v, u, f, scaling, args.level) for dummy, v, u, f in data]
    t_sim = time.perf_counter() - t0
    S, P = totals(seed), totals(pol)
    # the reactive rule tuned to the policy's average capacity (same high/low ratio as the seed)
    best = None
    for i in range(10, 96):
        high = i / 100.0
        runs = [simulate_reactive(v, u, high=high, low=high * 0.3 / 0.7) for dummy, v, u, dummy2 in data]
        T = totals(runs)
        gap = abs(T['avg_units'] - P['avg_units'])
        if best is None or gap < best[0]:
            best = (gap, high, T)
    t_high, T = best[1], best[2]

    if not args.quiet:
        print('%-5s %10s %22s %22s' % ('VM', 'unit MHz', 'seed under/avg/acts', 'policy under/avg/acts'))
        for (name, dummy, unit, dummy2), a, b in zip(data, seed, pol):
            print('%-5s %10.1f %9d %6.2f %5d %9d %6.2f %5d' % (
                name, unit, a['under_min'], a['avg_units'], a['actions'], b['under_min'], b['avg_units'], b['actions']))
    print()
    print('command: %s' % ' '.join([sys.executable.rsplit('/', maxsplit=1)[-1]] + sys.argv))
    print('load average at the end (1/5/15 min): %.1f %.1f %.1f on %d CPUs' % (os.getloadavg() + (os.cpu_count(),)))
    print('policy: cpu high %.2f low %.2f duration %s, horizon %s, cooldown up %s down %s, '
          'upper bound of the %.0f%% interval, stabilisation %ss' % (
              args.high, args.low, args.duration, args.horizon, args.cooldown_up, args.cooldown_down,
              100 * args.level, scaling['stabilization']))
    print('| rule | under-provisioned minutes | avg capacity (units) | scaling actions |')
    print('|---|---|---|---|')
    print('| seed reactive (70%%/30%%, 3 points) | %d | %.2f | %d |' % (S['under_min'], S['avg_units'], S['actions']))
    print('| reactive tuned to same capacity (%.0f%%/%.0f%%) | %d | %.2f | %d |' % (
        100 * t_high, 100 * t_high * 0.3 / 0.7, T['under_min'], T['avg_units'], T['actions']))
    print('| this policy | %d | %.2f | %d |' % (P['under_min'], P['avg_units'], P['actions']))

    def pct(a, b):
        return 100.0 * (a - b) / b if b else float('nan')
    print()
    print('VMs: %d; policy vs seed: under-provisioned %+.1f%% (target <= -50%%), capacity %+.1f%% (target <= +40%%), '
          'actions x%.2f (target <= 1.5)' % (len(data), pct(P['under_min'], S['under_min']),
                                             pct(P['avg_units'], S['avg_units']),
                                             P['actions'] / float(S['actions']) if S['actions'] else float('nan')))
    print('policy vs tuned reactive: under-provisioned %+.1f%% (target <= -30%%) at capacity %+.1f%%' % (
        pct(P['under_min'], T['under_min']), pct(P['avg_units'], T['avg_units'])))
    fired = {}
    for r in pol:
        for k, v in r['signals'].items():
            fired[k] = fired.get(k, 0) + v
    print('policy actions by signal: %s; simulation %.1f s' % (
        ', '.join('%s %d' % kv for kv in sorted(fired.items())), t_sim))


if __name__ == '__main__':
    main()

#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""How far forecast.py follows a fresh ramp: flat for the history, then a one-hour rise.

The case the policy's level depends on (issue 14): a load flat at 30% that rose to 68% over the last hour, toward
``high`` 75%, with a 20-minute horizon. Does the forecast's upper bound at the policy's level (policy.DEFAULT_LEVEL)
reach ``high`` within the horizon, so that the service is scaled out before the load crosses it? A straight line
through the ramp says 81% at +20 minutes.

Cases: one-minute steps (PVE 9's ``day``) and five-minute steps (the traces, Prometheus), a day and a week of
history, clean and with Gaussian noise (standard deviation 2 points, seeded). Printed per case: the last value, the
forecast mean at +20 minutes, the upper bounds of the 30%, 50% and 80% intervals there (one forecast_series call
with ``bands``), and whether the upper bound at the policy's level reaches ``high``.

    .venv/bin/python benchmarks/fresh_ramp.py [--high 0.75] [--noise 0.02] [--seed 1]
"""
import argparse
import random
import statistics

import _traces

RISE_SECONDS = 3600
HORIZON_SECONDS = 1200
LEVELS = (0.3, 0.5, 0.8)


def ramp(step, history_seconds, noise, seed, start=0.30, end=0.68):
    """Flat at ``start``, then a straight rise to ``end`` over the last hour (its last value is the newest point)."""
    n = history_seconds // step
    rise = RISE_SECONDS // step
    return noisy([start] * (n - rise) + [start + (end - start) * i / float(rise - 1) for i in range(rise)], noise, seed)


def flat(step, history_seconds, noise, seed, level=0.68):
    """The control: at ``level`` all along, near ``high`` but not rising."""
    return noisy([level] * (history_seconds // step), noise, seed)


def step_up(step, history_seconds, noise, seed, start=0.30, end=0.68, ago=1800):
    """The other control: a level shift from ``start`` to ``end`` ``ago`` seconds back, flat since."""
    n = history_seconds // step
    after = ago // step
    return noisy([start] * (n - after) + [end] * after, noise, seed)


def noisy(values, noise, seed):
    rnd = random.Random(seed)
    return [v + rnd.gauss(0.0, noise) if noise else v for v in values]


SHAPES = (('ramp', ramp), ('flat 68%', flat), ('step 30 min ago', step_up))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--high', type=float, default=0.75)
    ap.add_argument('--noise', type=float, default=0.02, help='standard deviation of the noisy cases (default 0.02)')
    ap.add_argument('--seed', type=int, default=1, help='first noise seed')
    ap.add_argument('--seeds', type=int, default=20, help='noise draws per noisy case (default 20)')
    args = ap.parse_args()
    _traces.import_collection()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.policy import DEFAULT_LEVEL

    print('fresh ramp: flat 30%%, then 30%% -> 68%% over the last hour; high %.0f%%, horizon %d min; the policy '
          'tests the upper bound of the %.0f%% interval' % (100 * args.high, HORIZON_SECONDS // 60, 100 * DEFAULT_LEVEL))
    print('| shape | step | history | noise | last value | mean +20 min | upper 30%% | upper 50%% | upper 80%% | '
          'reaches high at level %.1f |' % DEFAULT_LEVEL)
    print('|---|---|---|---|---|---|---|---|---|---|')
    others = [lv for lv in LEVELS if lv != DEFAULT_LEVEL]       # as bands of the same forecast
    for shape, make in SHAPES:
        for step in (60, 300):
            for days in (1, 7):
                for noise in (0.0, args.noise):
                    seeds = range(args.seed, args.seed + (args.seeds if noise else 1))
                    runs = [one(forecast_series, make(step, days * 86400, noise, seed), step, DEFAULT_LEVEL, others,
                                args.high) for seed in seeds]
                    cols = [statistics.median(r[k] for r in runs) for k in range(len(runs[0]) - 1)]
                    hits = sum(r[-1] for r in runs)
                    print('| %s | %d s | %d d | %.2f | %s | %s |' % (
                        shape, step, days, noise, ' | '.join('%.3f' % c for c in cols),
                        ('yes' if hits else 'no') if len(runs) == 1 else '%d of %d' % (hits, len(runs))))


def one(forecast_series, values, step, level, others, high):
    """(last value, mean, upper bound per LEVELS at +20 minutes, whether the upper bound at ``level`` reaches high)."""
    fc = forecast_series(values, step, HORIZON_SECONDS // step, level=level, bands=others)
    upper = dict([(level, fc['upper'])] + [(b['level'], b['upper']) for b in fc['bands']])
    return (values[-1], fc['mean'][-1]) + tuple(upper[lv][-1] for lv in LEVELS) + (max(fc['upper']) >= high,)


if __name__ == '__main__':
    main()

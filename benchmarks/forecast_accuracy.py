#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Forecast accuracy of plugins/module_utils/scaling/forecast.py on the Bitbrains Rnd traces.

For each VM: 12 forecast origins spread over its last 7 days, the 7 days before each
origin as history, horizons 1..15 steps of 5 minutes. relMAE = model MAE / naive MAE
per VM (naive = last observed value); the summary is the geometric mean over VMs.
Fit time is the wall time of one forecast_series() call (model choice included), and its
process CPU time (what it costs when the machine is not shared).

    .venv/bin/python benchmarks/forecast_accuracy.py [--vms N] [--metric cpu]
"""
import argparse
import math
import os
import statistics
import sys
import time

import _traces

WEEK = 7 * 24 * 12          # 2016 five-minute steps
HORIZON = 15
ORIGINS = 12


def naive_value(history):
    for v in reversed(history):
        if v is not None and not math.isnan(v):
            return v
    return None


def evaluate_vm(forecast_series, values, opts):
    n = len(values)
    first = n - WEEK                          # the last 7 days
    span = WEEK - HORIZON                     # origins must leave room for 15 actual values
    origins = [first + int(round(k * span / float(ORIGINS - 1))) for k in range(ORIGINS)]
    err_m, err_n, times, cpu, chosen = [], [], [], [], []
    for o in origins:
        hist = values[o - WEEK:o]
        t0, c0 = time.perf_counter(), time.process_time()
        fc = forecast_series(hist, _traces.STEP, HORIZON, **opts)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        chosen.append(fc['model'])
        last = naive_value(hist)
        for h in range(HORIZON):
            actual = values[o + h]
            if actual is None:
                continue
            err_m.append(abs(fc['mean'][h] - actual))
            err_n.append(abs(last - actual))
    return statistics.fmean(err_m), statistics.fmean(err_n), times, cpu, chosen


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--vms', type=int, default=None, help='only the first N VMs (quick subset)')
    ap.add_argument('--metric', choices=sorted(_traces.COLUMNS), default='cpu')
    ap.add_argument('--models', default=None, help='comma-separated candidates (naive is always one)')
    ap.add_argument('--fit-window', type=int, default=None, help='fit window in steps (default: forecast.py default)')
    ap.add_argument('--backtest', type=int, default=None, help='backtest length in steps (default: forecast.py default)')
    ap.add_argument('--quiet', action='store_true', help='summary only')
    args = ap.parse_args()

    _traces.import_collection()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
    opts = {}
    if args.models:
        opts['models'] = args.models.split(',')
    if args.fit_window:
        opts['fit_window_steps'] = args.fit_window
    if args.backtest:
        opts['backtest_steps'] = args.backtest

    t_import = time.perf_counter()
    forecast_series([1.0, 2.0, 1.0], _traces.STEP, 1)  # pay the statsmodels import outside the timings
    t_import = time.perf_counter() - t_import

    rows, all_times, all_cpu, counts = [], [], [], {}
    for name in _traces.vm_names(args.vms):
        values, _cores = _traces.load_vm(name, _traces.COLUMNS[args.metric])
        mae_m, mae_n, times, cpu, chosen = evaluate_vm(forecast_series, values, opts)
        all_times.extend(times)
        all_cpu.extend(cpu)
        for c in chosen:
            counts[c] = counts.get(c, 0) + 1
        if mae_n == 0:
            # a VM whose next values always equal the last one: nothing to compare
            rows.append((name, mae_m, mae_n, None, chosen))
            continue
        rows.append((name, mae_m, mae_n, mae_m / mae_n, chosen))
        if not args.quiet:
            print('%-5s relMAE %6.3f  MAE %10.2f  naive %10.2f  models %s' % (
                name, mae_m / mae_n, mae_m, mae_n, ','.join(sorted(set(chosen)))), flush=True)

    ratios = [r[3] for r in rows if r[3] is not None and r[3] > 0]
    gmean = math.exp(statistics.fmean(math.log(r) for r in ratios))
    ms = sorted(t * 1000 for t in all_times)
    cpu_ms = sorted(t * 1000 for t in all_cpu)
    print()
    print('command: %s' % ' '.join([sys.executable.rsplit('/', maxsplit=1)[-1]] + sys.argv))
    print('load average at the end (1/5/15 min): %.1f %.1f %.1f on %d CPUs' % (os.getloadavg() + (os.cpu_count(),)))
    print('| VMs | forecasts | relMAE vs naive (geo. mean) | VMs better than naive | fit ms median / p90 / max (wall) '
          '| fit ms median / p90 (CPU) |')
    print('|---|---|---|---|---|---|')
    print('| %d | %d | %.3f | %d/%d | %.1f / %.1f / %.1f | %.1f / %.1f |' % (
        len(rows), len(all_times), gmean, sum(1 for r in ratios if r < 1), len(ratios),
        _traces.percentile(ms, 0.5), _traces.percentile(ms, 0.9), ms[-1],
        _traces.percentile(cpu_ms, 0.5), _traces.percentile(cpu_ms, 0.9)))
    print('models chosen: %s' % ', '.join('%s %d' % kv for kv in sorted(counts.items())))
    print('first call (statsmodels import): %.2f s' % t_import)


if __name__ == '__main__':
    main()

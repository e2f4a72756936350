#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Forecast accuracy of plugins/module_utils/scaling/forecast.py on both trace sets.

Data sets (../shared/traces, see its README.md): ``bitbrains`` (50 VMs of Bitbrains Rnd 2013-8, CPU
usage in MHz by default) and ``aggregates`` (the datacenter aggregates: every column of the Alibaba 2018,
Azure V2 and Google 2019 files). All at 5-minute steps.

Protocol (issue 14): for each series, ``--origins`` forecast origins spread evenly over everything after
its first 7 days (``--origins all``: one every hour, so that each later step is scored exactly once); at each
origin the forecaster gets the 7 days before it (nothing after it) and forecasts 12 steps (1 hour). Nothing is
scored on data a model was fitted on: the forecaster's parameters, seasonal indices and interval calibration
only use the history before the origin.

Per series: relMAE = MAE / MAE of the last observed value (naive), over all origins and horizons 1..12;
the summary is the geometric mean over series, for all series and for those with daily seasonality.
Daily seasonality (a property of the series, decided here independently of the forecaster): the
autocorrelation at lag 1 day of the series minus its centred 1-day moving average, over the whole series,
is at least ``--acf-threshold`` (0.3). Coverage: the share of actual values inside the 80% interval
(pooled). Reference: plain ETS(A,Ad,N) (statsmodels ``ETSModel``, additive damped trend) fitted on the
same 7 days, no selection. Fit time: wall and process CPU time of one forecast_series() call (BLAS pinned
to one thread); the machine may be shared, so the load average is printed too.

    .venv/bin/python benchmarks/forecast_accuracy.py [--data bitbrains,aggregates|csv:PATH] [--origins 48] [--by-step]
"""
import argparse
import math
import os
import statistics
import sys
import time
import warnings

import _traces

DAY = 288                   # five-minute steps per day
WEEK = 7 * DAY              # 2016 steps of history
HORIZON = 12                # 1 hour
LEVEL = 0.8


def last_observed(history):
    for v in reversed(history):
        if v is not None and not math.isnan(v):
            return v
    return None


def daily_acf(values):
    """ACF at lag one day of y minus its centred one-day moving average (gaps interpolated)."""
    import numpy as np
    y = np.array([np.nan if v is None else v for v in values], dtype=float)
    ok = np.isfinite(y)
    idx = np.arange(len(y))
    y = np.interp(idx, idx[ok], y[ok])
    w = np.concatenate(([0.5], np.ones(DAY - 1), [0.5])) / DAY
    trend = np.convolve(y, w, mode='valid')
    d = y[DAY // 2:DAY // 2 + len(trend)] - trend
    d = d - d.mean()
    den = float(np.dot(d, d))
    return float(np.dot(d[:-DAY], d[DAY:]) / den) if den > 0 else 0.0


def plain_ets(hist):
    """The reference: statsmodels ETS(A,Ad,N) fitted on the whole history, its mean forecast."""
    import numpy as np
    import pandas as pd
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel
    y = np.array([np.nan if v is None else v for v in hist], dtype=float)
    ok = np.isfinite(y)
    idx = np.arange(len(y))
    first = int(np.argmax(ok))
    y = np.interp(idx, idx[ok], y[ok])[first:]
    if np.ptp(y) == 0:
        return [float(y[-1])] * HORIZON
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = ETSModel(pd.Series(y), error='add', trend='add', damped_trend=True).fit(disp=False)
        return [float(v) for v in np.asarray(res.forecast(HORIZON))]


def evaluate(forecast_series, values, opts, origins, reference, points=False):
    """Scores one series at its origins; ``points`` keeps each scored (step, forecast, last value, actual) for
    ``by_step``."""
    n = len(values)
    span = n - HORIZON - WEEK
    if span < 0:
        return None
    if origins == 'all':
        picks = list(range(WEEK, WEEK + span + 1, HORIZON))     # every step after the first week, scored once
    else:
        count = min(origins, span + 1)
        picks = sorted(set(WEEK + int(round(k * span / float(max(1, count - 1)))) for k in range(count)))
    acc = dict(err=[], naive=[], ets=[], inside=0, scored=0, wall=[], cpu=[], models={}, points=[])
    for o in picks:
        hist = values[o - WEEK:o]
        t0, c0 = time.perf_counter(), time.process_time()
        fc = forecast_series(hist, _traces.STEP, HORIZON, level=LEVEL, **opts)
        acc['wall'].append(time.perf_counter() - t0)
        acc['cpu'].append(time.process_time() - c0)
        key = fc['model'] + ('+season' if fc.get('seasonal') else '') + ('+drift' if fc.get('tracking') else '') + (
            '+sparse' if fc.get('sparse_fit') else '')
        acc['models'][key] = acc['models'].get(key, 0) + 1
        ref = plain_ets(hist) if reference else None
        last = last_observed(hist)
        for h in range(HORIZON):
            actual = values[o + h]
            if actual is None:
                continue
            acc['err'].append(abs(fc['mean'][h] - actual))
            acc['naive'].append(abs(last - actual))
            if points:
                acc['points'].append((h, fc['mean'][h], last, actual))
            if ref is not None:
                acc['ets'].append(abs(ref[h] - actual))
            acc['scored'] += 1
            acc['inside'] += fc['lower'][h] <= actual <= fc['upper'][h]
    return acc


BLEND = [i / 20.0 for i in range(21)]


def by_step(points):
    """relMAE per horizon step, and a bound found with hindsight: per step, the blend a x forecast + (1 - a) x last
    value with the a (0 to 1 by 0.05) that did best on these very values. No rule that chooses a before the values
    are known does better, so it bounds what weighting the last value by step can gain."""
    steps, best, naive = [], 0.0, 0.0
    for h in sorted(set(p[0] for p in points)):
        at = [p for p in points if p[0] == h]
        err = sum(abs(f - actual) for dummy, f, dummy2, actual in at)
        err_n = sum(abs(last - actual) for dummy, dummy2, last, actual in at)
        naive += err_n
        steps.append(err / err_n if err_n else float('nan'))
        best += min(sum(abs(a * f + (1 - a) * last - actual) for dummy, f, last, actual in at) for a in BLEND)
    return steps, (best / naive if naive else float('nan'))


def origins_arg(text):
    if text == 'all':
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError('a whole number >= 1, or "all"')
    return value


def gmean(xs):
    xs = [x for x in xs if x is not None and x > 0]
    return math.exp(statistics.fmean(math.log(x) for x in xs)) if xs else float('nan')


def load(data, limit, metric):
    if data == 'bitbrains':
        return [('vm' + name, _traces.load_vm(name, _traces.COLUMNS[metric])[0]) for name in _traces.vm_names(limit)]
    if _traces.csv_path(data):
        return _traces.csv_series(_traces.csv_path(data), limit)
    return _traces.aggregate_series(limit)


def report(data, rows, reference):
    seas = [r for r in rows if r['seasonal']]
    wall = sorted(t * 1000 for r in rows for t in r['acc']['wall'])
    cpu = sorted(t * 1000 for r in rows for t in r['acc']['cpu'])
    scored = sum(r['acc']['scored'] for r in rows)
    inside = sum(r['acc']['inside'] for r in rows)
    models = {}
    for r in rows:
        for k, v in r['acc']['models'].items():
            models[k] = models.get(k, 0) + v

    def fmt(group, key):
        return '%.3f' % gmean([r[key] for r in group]) if group else '-'

    print('| %s | %d (%d daily) | %d | %s | %s | %s | %s | %d/%d | %.3f | %.1f / %.1f | %.1f / %.1f |' % (
        data, len(rows), len(seas), len(wall), fmt(seas, 'rel'), fmt(rows, 'rel'),
        fmt(seas, 'rel_ets') if reference else '-', fmt(rows, 'rel_ets') if reference else '-',
        sum(1 for r in rows if r['rel'] is not None and r['rel'] < 1), len(rows),
        inside / float(scored) if scored else float('nan'),
        _traces.percentile(cpu, 0.5), _traces.percentile(cpu, 0.9),
        _traces.percentile(wall, 0.5), _traces.percentile(wall, 0.9)), flush=True)
    sweep = ', '.join('>= %.1f: %s (%d series)' % (th, fmt([r for r in rows if r['acf'] >= th], 'rel'),
                                                   sum(1 for r in rows if r['acf'] >= th)) for th in (0.2, 0.3, 0.5, 0.7))
    return '%s: models used: %s\n%s: relMAE of the series whose ACF at 1 day is %s' % (
        data, ', '.join('%s %d' % kv for kv in sorted(models.items())), data, sweep)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--data', default='bitbrains,aggregates',
                    help='comma-separated: bitbrains, aggregates, csv:PATH (your own traces: every numeric column of '
                         'the .csv / .csv.gz files there, at 5-minute steps; benchmarks/README.md)')
    ap.add_argument('--series', type=int, default=None, help='only the first N series of each data set')
    ap.add_argument('--origins', type=origins_arg, default=48,
                    help='forecast origins per series, spread evenly (default 48), or "all": one every hour from the '
                         'end of the first week, so that every later step is scored once (no sampling of origins)')
    ap.add_argument('--metric', choices=sorted(_traces.COLUMNS), default='cpu', help='Bitbrains column')
    ap.add_argument('--acf-threshold', type=float, default=0.3, help='daily-seasonal series: ACF at 1 day >= this')
    ap.add_argument('--models', default=None, help='comma-separated members of the combination')
    ap.add_argument('--fit-window', type=int, default=None, help='fit window in steps (default: forecast.py default)')
    ap.add_argument('--backtest', type=int, default=None, help='calibration window in steps (default: one day)')
    ap.add_argument('--deseasonalize', choices=('auto', 'on', 'off'), default='auto')
    ap.add_argument('--combine', choices=('inverse_mse', 'inverse_error', 'equal', 'best'), default=None,
                    help='how members are combined (default: forecast.py default)')
    ap.add_argument('--no-reference', action='store_true', help='skip the plain ETS reference (faster)')
    ap.add_argument('--by-step', action='store_true',
                    help='per series: relMAE at each horizon step, and the best per-step blend with the last value, '
                         'chosen with hindsight (a bound, not a forecast)')
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
    if args.combine:
        opts['combine'] = args.combine
    if args.deseasonalize != 'auto':
        opts['deseasonalize'] = args.deseasonalize == 'on'
    reference = not args.no_reference

    t_import = time.perf_counter()
    forecast_series([1.0, 2.0, 1.0], _traces.STEP, 1)  # pay the statsmodels import outside the timings
    t_import = time.perf_counter() - t_import

    header = ('| data set | series | forecasts | relMAE daily-seasonal | relMAE all | plain ETS daily | plain ETS all '
              '| series better than naive | 80% coverage | fit ms CPU median / p90 | fit ms wall median / p90 |')
    tables, notes = [], []
    for data in args.data.split(','):
        rows = []
        for name, values in load(data, args.series, args.metric):
            acc = evaluate(forecast_series, values, opts, args.origins, reference, points=args.by_step)
            if acc is None:
                continue
            mae, mae_n = statistics.fmean(acc['err']), statistics.fmean(acc['naive'])
            row = dict(name=name, acc=acc, seasonal=daily_acf(values) >= args.acf_threshold, acf=daily_acf(values),
                       rel=mae / mae_n if mae_n else None,
                       rel_ets=statistics.fmean(acc['ets']) / mae_n if mae_n and acc['ets'] else None)
            rows.append(row)
            if not args.quiet:
                print('%-12s %-28s acf(1d) %5.2f relMAE %6.3f  ETS %6s  coverage %.2f  %s' % (
                    data, name, row['acf'], row['rel'] or float('nan'),
                    '%.3f' % row['rel_ets'] if row['rel_ets'] else '-', acc['inside'] / float(acc['scored']),
                    ','.join('%s:%d' % kv for kv in sorted(acc['models'].items()))), flush=True)
            if args.by_step:
                steps, bound = by_step(acc['points'])
                row['rel_bound'] = bound
                print('%-12s %-28s relMAE by step %s; the best blend with the last value, with hindsight, %.3f' % (
                    data, name, ' '.join('%.2f' % x for x in steps), bound), flush=True)
        tables.append((data, rows))
        if args.by_step:
            seas = [r for r in rows if r['seasonal']]
            print('%s: with hindsight, the per-step blend with the last value: relMAE daily-seasonal %.3f, all %.3f'
                  % (data, gmean([r['rel_bound'] for r in seas]), gmean([r['rel_bound'] for r in rows])), flush=True)
    print()
    print('command: %s' % ' '.join([sys.executable.rsplit('/', maxsplit=1)[-1]] + sys.argv))
    print('load average at the end (1/5/15 min): %.1f %.1f %.1f on %d CPUs' % (os.getloadavg() + (os.cpu_count(),)))
    print(header)
    print('|' + '---|' * header.count(' | ') + '---|')
    for data, rows in tables:
        notes.append(report(data, rows, reference))
    for note in notes:
        print(note)
    print('first call (statsmodels import): %.2f s' % t_import)


if __name__ == '__main__':
    main()

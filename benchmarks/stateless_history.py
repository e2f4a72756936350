#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A fresh controller on PVE 9 shapes (issue 15): the decision on the clean ramp, and what a day of history costs in
forecast accuracy against seven days from a store.

1. ramp: the simulator (tests/lab/pvesim.py, PVE 9 rrddata shapes) with a service of 2 primaries whose CPU is flat at
   30% for a day and rises cleanly to 68% over the last hour (high 75%, horizon 20 minutes). The forecast runs as a
   fresh controller does: no history file, backend pve (scaling.forecast_with_history, the forecast module's code).
   Printed: the decision line, the rrddata requests, the wall time; the same with PVE 8 shapes.
2. accuracy: forecast.forecast_series on the Bitbrains Rnd traces (5-minute CPU, 50 VMs, 12 origins over each VM's
   last 7 days, horizons 1..12 steps, as forecast_accuracy.py), with three histories before each origin:
   * store 7d: the 7 days before the origin at full resolution (a SQLite cache that has run for a week);
   * PVE day: only the last day (what PVE 9's rrddata `day` gives a stateless controller);
   * PVE day + month: the last day at full resolution and the 6 days before it as 30-minute means, one point per
     half-hour at its middle, gaps between (what the pve backend loads from `day` + `month` for a 7-day window).
   relMAE = MAE / naive MAE per VM (naive = last value), geometric mean over VMs.

    .venv/bin/python benchmarks/stateless_history.py [--vms N] [--skip-ramp] [--skip-accuracy]
"""
import argparse
import math
import os
import statistics
import sys
import time

import _traces
import forecast_accuracy as fa

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'community'))
import benchlib  # noqa: E402

DAY = 288                     # five-minute steps
ORIGINS = 12                  # forecast origins per VM, spread over its last 7 days


def pve_day(hist):
    return hist[-DAY:]


VARIANTS = [('store 7d (SQLite cache, a week)', lambda h: h), ('PVE day (stateless, day)', pve_day),
            ('PVE day + month (stateless, 7-day window)', _traces.pve_week)]


def accuracy(args):
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.forecast import forecast_series
    forecast_series([1.0, 2.0, 1.0], _traces.STEP, 1)
    per_variant = dict((label, []) for label, dummy in VARIANTS)
    seasons = dict((label, {}) for label, dummy in VARIANTS)   # forecasts with and without a daily season
    times = dict((label, []) for label, dummy in VARIANTS)
    for name in _traces.vm_names(args.vms):
        values, dummy = _traces.load_vm(name, _traces.COLUMNS['cpu'])
        n = len(values)
        first = n - fa.WEEK
        span = fa.WEEK - fa.HORIZON
        origins = [first + int(round(k * span / float(ORIGINS - 1))) for k in range(ORIGINS)]
        for label, shape in VARIANTS:
            err_m, err_n = [], []
            for o in origins:
                hist = values[o - fa.WEEK:o]
                t0 = time.process_time()
                fc = forecast_series(shape(list(hist)), _traces.STEP, fa.HORIZON)
                times[label].append(time.process_time() - t0)
                key = 'daily season' if fc.get('seasonal') else 'no season'     # the forecast's seasonality test, per origin
                seasons[label][key] = seasons[label].get(key, 0) + 1
                last = fa.last_observed(hist)
                for h in range(fa.HORIZON):
                    actual = values[o + h]
                    if actual is None:
                        continue
                    err_m.append(abs(fc['mean'][h] - actual))
                    err_n.append(abs(last - actual))
            mae_m, mae_n = statistics.fmean(err_m), statistics.fmean(err_n)
            per_variant[label].append(mae_m / mae_n if mae_n else None)
        if not args.quiet:
            print('%-5s %s' % (name, '  '.join('%.3f' % r[-1] if r[-1] else '-' for r in per_variant.values())),
                  flush=True)
    print()
    print('| history before each origin | VMs | relMAE vs naive (geo. mean) | VMs better than naive | CPU ms per '
          'forecast (median) | forecasts with / without a daily season |')
    print('|---|---|---|---|---|---|')
    for label, dummy in VARIANTS:
        ratios = [r for r in per_variant[label] if r]
        gmean = math.exp(statistics.fmean(math.log(r) for r in ratios))
        print('| %s | %d | %.3f | %d/%d | %.1f | %s |' % (
            label, len(per_variant[label]), gmean, sum(1 for r in ratios if r < 1), len(ratios),
            1000 * statistics.median(times[label]),
            '%d / %d' % (seasons[label].get('daily season', 0), seasons[label].get('no season', 0))))


def ramp(fmt):
    """The issue's scenario on a simulator with PVE `fmt` shapes: (decision, rrddata requests, seconds)."""
    import copy
    from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.meta import render_description
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends, scaling
    from lab.shop import SCALED_SHOP
    template = copy.deepcopy(SCALED_SHOP)
    template['scaling'].update(cpu={'high': 0.75, 'low': 0.3, 'duration': '5m'}, horizon='20m')
    plan = plan_from_template(template)[1]
    sim = benchlib.start_sim('stateless-%s' % fmt)
    try:
        sim.pve.rrd_format = fmt
        end = int(time.time()) // 60 * 60
        values = [0.30] * 1380 + [0.30 + 0.38 * i / 59 for i in range(60)]
        for n, vm in enumerate(plan['vms']):
            vmid = 2000 + n
            config = {'cores': vm['cores'], 'memory': vm['memory'], 'tags': ';'.join(sorted(vm['tags'])),
                      'description': render_description('', vm['meta'])}
            sim.pve.add_vm(vmid, vm['name'], node=vm['node'] or 'pve1', status='running', config=config,
                           pool=vm['pool'])
            if vm['service'] == 'web' and vm['role'] == 'primary':
                maxmem = vm['memory'] * 1048576
                sim.pve.inject_rrd(vmid, [{'time': end - 60 * (1439 - i), 'cpu': v, 'maxcpu': vm['cores'],
                                           'mem': maxmem / 2, 'maxmem': maxmem} for i, v in enumerate(values)])
        user, dummy, token = sim.token_id.partition('!')
        api = PveApi(sim.host, port=sim.port, user=user, token_id=token, token_secret=sim.token_secret,
                     ca_path=sim.cafile)
        config = history_backends.history_config({'backend': 'pve'})
        t0 = time.perf_counter()
        decisions, summary = scaling.forecast_with_history(api, {plan['template']: plan}, config, services=['web'])
        seconds = time.perf_counter() - t0
        return decisions[0], summary['requests'], len(api.calls), seconds
    finally:
        sim.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    ap.add_argument('--vms', type=int, default=None, help='accuracy: only the first N VMs')
    ap.add_argument('--skip-ramp', action='store_true')
    ap.add_argument('--skip-accuracy', action='store_true')
    ap.add_argument('--quiet', action='store_true')
    args = ap.parse_args()
    benchlib.setup_paths()
    print('command: %s' % ' '.join(['.venv/bin/python'] + sys.argv))
    print('machine: %d CPUs, load average %s' % (os.cpu_count(), ' '.join('%.1f' % x for x in os.getloadavg())))
    if not args.skip_ramp:
        print()
        print('fresh controller, no history file, backend pve: web 30% flat, then 30% -> 68% over the last hour '
              '(high 75%, horizon 20m)')
        for fmt in ('pve9', 'pve8'):
            decision, rrd, requests, seconds = ramp(fmt)
            print('  %s: %s' % (fmt, decision['line']))
            print('        rrddata requests %d (web-1, web-2, web-shadow), API requests %d, wall %.2f s' % (
                rrd, requests, seconds))
    if not args.skip_accuracy:
        print()
        accuracy(args)
    return 0


if __name__ == '__main__':
    sys.exit(main())

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Canary calibration: does the shadow's normalised CPU track the primaries' CPU, and how early does it warn?

A service of ``--primaries`` primaries of ``--cores`` cores, and its shadow of ``--size`` of one primary
(``shadow.size``), under a load that rises and falls over 30 minutes: a synthetic shape (a raised-cosine bump from
15% to ``--peak`` of the primaries' capacity) and a real Bitbrains segment (the 30-minute window with the sharpest
rise and fall among the first ``--vms`` Rnd VMs' CPU, 5-minute points interpolated, scaled to the same range).

Requests arrive in flows (connections); each flow carries a heavy-tailed number of requests (lognormal, mean
``--flow-mean``, sigma ``--flow-sigma``: keep-alive clients from one request to hundreds), and each request a CPU
cost drawn from an exponential distribution (mean ``--cost-ms``). The load balancer spreads flows over the
primaries; the mirror keeps each flow with probability ``rate`` (flow-consistent sampling: whole flows, so the
sampling noise is that of the flows, not of the packets) and the replay agent replays it into the shadow, which
also pays the agent's own CPU (``--agent-overhead`` of each replayed request's cost). Every VM has an idle floor.
CPU is read as PVE's RRD gives it: one-minute averages, capped at 100%.

Per run: the Pearson correlation and the mean absolute error between the shadow's normalised CPU
(``policy.shadow_normalised``: u x size / (rate x primaries), the collection's own code) and the primaries' mean
CPU per minute; the lead time of the shadow's own CPU crossing ``high`` before the primaries' (the shadow is the
smaller VM and saturates first when rate x primaries > size), and of its normalised CPU (the honest tracking
error: about zero); how often the seed rule (normalised shadow - primaries > shadow_delta for 5 minutes) fires
although the primaries are not capped (false alarms). Medians and 5-95% ranges over ``--runs`` seeds.

    .venv/bin/python benchmarks/canary_calibration.py [--runs 20] [--rates 0.05,0.08,0.1,0.2]
"""
import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _traces  # noqa: E402

_traces.import_collection()
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy  # noqa: E402

STEP = 10                 # seconds per simulation step
MINUTES = 30
STEPS_PER_MIN = 60 // STEP
IDLE = 0.02               # idle floor of a guest's CPU


def synthetic_shape(low, peak):
    """Demand as a fraction of the primaries' capacity, per step: a raised-cosine bump over 30 minutes."""
    t = np.arange(MINUTES * STEPS_PER_MIN) / float(MINUTES * STEPS_PER_MIN)
    return low + (peak - low) * np.sin(math.pi * t) ** 2


def bitbrains_shape(low, peak, vms):
    """The 30-minute window (7 points of 5 minutes) with the sharpest rise and fall among the first `vms` Rnd VMs'
    CPU, linearly interpolated to the simulation step and scaled to [low, peak]. Returns (shape, label)."""
    best = None
    for name in _traces.vm_names(vms):
        values, cores = _traces.load_vm(name)
        for i in range(len(values) - 6):
            win = values[i:i + 7]
            if any(v is None for v in win) or max(win) <= 0:
                continue
            bump = max(win) - max(win[0], win[-1])
            score = bump / max(win)
            if max(win) > 100 and (best is None or score > best[0]):
                best = (score, name, i, win)
    score, name, start, win = best
    x = np.linspace(0, 6, MINUTES * STEPS_PER_MIN)
    y = np.interp(x, np.arange(7), np.array(win, dtype=float))
    y = (y - y.min()) / (y.max() - y.min())
    return low + (peak - low) * y, 'Bitbrains Rnd VM %s, points %d..%d (5-min CPU MHz %s)' % (
        name, start, start + 6, '/'.join('%.0f' % v for v in win))


def flow_requests(rng, n, mean, sigma):
    """Requests per flow: lognormal with this mean, at least 1."""
    mu = math.log(mean) - sigma ** 2 / 2
    return np.maximum(1, np.round(rng.lognormal(mu, sigma, n))).astype(int)


def run(shape, rng, args, rate):
    """Per-minute CPU of the primaries (mean) and of the shadow for one seed."""
    n, cores = args.primaries, args.cores
    shadow_cores = max(1, int(round(cores * args.size)))
    cost = args.cost_ms / 1000.0
    capacity = n * cores * STEP                            # CPU seconds per step of all primaries
    prim_cpu = np.zeros((len(shape), n))
    shadow_cpu = np.zeros(len(shape))
    for i, demand in enumerate(shape):
        # Flows arriving in this step, their requests, their primary (the balancer) and whether the mirror keeps them.
        want_requests = demand * capacity / cost
        flows = rng.poisson(want_requests / args.flow_mean)
        if flows == 0:
            continue
        reqs = flow_requests(rng, flows, args.flow_mean, args.flow_sigma)
        where = rng.integers(0, n, flows)
        kept = rng.random(flows) < rate
        per_primary = np.bincount(where, weights=reqs, minlength=n)
        for p in range(n):
            k = int(per_primary[p])
            prim_cpu[i, p] = rng.gamma(k, cost) if k else 0.0
        replayed = int(reqs[kept].sum())
        shadow_cpu[i] = rng.gamma(replayed, cost) * (1 + args.agent_overhead) if replayed else 0.0
    # One-minute averages as PVE's RRD keeps them, capped at the VM's cores.
    prim = prim_cpu.reshape(MINUTES, STEPS_PER_MIN, n).sum(axis=1) / (cores * 60.0)
    prim = np.minimum(1.0, IDLE + prim).mean(axis=1)
    shadow = shadow_cpu.reshape(MINUTES, STEPS_PER_MIN).sum(axis=1) / (shadow_cores * 60.0)
    shadow = np.minimum(1.0, IDLE + shadow)
    size = shadow_cores / float(cores)
    norm = np.array(policy.shadow_normalised(list(shadow), {'size': size, 'rate': rate, 'mirrored_instances': n}))
    return prim, shadow, norm


def first_cross(series, high):
    above = np.nonzero(series >= high)[0]
    return int(above[0]) if len(above) else None


def seed_rule_alarms(norm, prim, delta, minutes=5):
    """Minutes at which the seed rule would fire (normalised - primaries > delta for `minutes`), primaries < 100%."""
    over = (norm - prim) > delta
    return sum(1 for m in range(minutes - 1, len(over)) if over[m - minutes + 1:m + 1].all() and prim[m] < 0.99)


def summarise(values):
    vals = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return 'n/a'
    return '%.2f [%.2f, %.2f]' % (np.median(vals), np.percentile(vals, 5), np.percentile(vals, 95))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--runs', type=int, default=20)
    parser.add_argument('--rates', default='0.05,0.08,0.1,0.2', help='flow sample rates (shadow.mirror.rate)')
    parser.add_argument('--primaries', type=int, default=4)
    parser.add_argument('--cores', type=int, default=4)
    parser.add_argument('--size', type=float, default=0.25, help='shadow.size')
    parser.add_argument('--high', type=float, default=0.70, help='scaling.cpu.high')
    parser.add_argument('--delta', type=float, default=policy.DEFAULT_SHADOW_DELTA, help='scaling.cpu.shadow_delta')
    parser.add_argument('--low', type=float, default=0.15)
    parser.add_argument('--peak', type=float, default=0.90)
    parser.add_argument('--cost-ms', type=float, default=20.0, help='mean CPU cost of one request (ms)')
    parser.add_argument('--flow-mean', type=float, default=8.0, help='mean requests per flow')
    parser.add_argument('--flow-sigma', type=float, default=1.5, help='lognormal sigma of requests per flow')
    parser.add_argument('--agent-overhead', type=float, default=0.10,
                        help="the replay agent's CPU per replayed request, as a share of the request's cost")
    parser.add_argument('--vms', type=int, default=10, help='Bitbrains VMs searched for the segment')
    parser.add_argument('--no-traces', action='store_true', help='the synthetic shape only')
    parser.add_argument('--seed', type=int, default=13)
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(',')]
    shapes = [('synthetic raised cosine', synthetic_shape(args.low, args.peak))]
    if not args.no_traces:
        shape, label = bitbrains_shape(args.low, args.peak, args.vms)
        shapes.append((label, shape))
    shadow_cores = max(1, int(round(args.cores * args.size)))
    print('canary calibration: %d primaries x %d cores, shadow %d core(s) (size %.2f), high %.0f%%, shadow_delta %.0f '
          'points, requests %.0f ms CPU each (exponential), %.0f requests per flow on average (lognormal sigma %.1f), '
          'agent overhead %.0f%%, %d runs per cell, load %.0f%% -> %.0f%% -> back over %d min; load average %s' % (
              args.primaries, args.cores, shadow_cores, shadow_cores / float(args.cores), 100 * args.high,
              100 * args.delta, args.cost_ms, args.flow_mean, args.flow_sigma, 100 * args.agent_overhead, args.runs,
              100 * args.low, 100 * args.peak, MINUTES, ' '.join('%.1f' % x for x in os.getloadavg())))
    print()
    print('| load | rate | shadow / primary load ratio | correlation | MAE (points) | lead of the shadow\'s CPU over '
          'the primaries\' crossing high (min) | lead of the normalised shadow (min) | seed-rule false alarms (min) |')
    print('|---|---|---|---|---|---|---|---|')
    for label, shape in shapes:
        for rate in rates:
            rng = np.random.default_rng(args.seed)
            corr, mae, lead_raw, lead_norm, alarms = [], [], [], [], []
            for dummy in range(args.runs):
                prim, shadow, norm = run(shape, rng, args, rate)
                with np.errstate(invalid='ignore', divide='ignore'):
                    corr.append(float(np.corrcoef(norm, prim)[0, 1]))     # nan when the shadow is capped throughout
                mae.append(float(100 * np.mean(np.abs(norm - prim))))
                cp, cs, cn = first_cross(prim, args.high), first_cross(shadow, args.high), first_cross(norm, args.high)
                lead_raw.append(None if cp is None or cs is None else float(cp - cs))
                lead_norm.append(None if cp is None or cn is None else float(cp - cn))
                alarms.append(float(seed_rule_alarms(norm, prim, args.delta)))
            ratio = rate * args.primaries / (shadow_cores / float(args.cores))
            print('| %s | %.2f | %.2f | %s | %s | %s | %s | %s |' % (
                label.split(' (')[0], rate, ratio, summarise(corr), summarise(mae), summarise(lead_raw),
                summarise(lead_norm), summarise(alarms)))
    print()
    print('Cells: median [5%, 95%] over the runs. Ratio = rate x primaries / size: the shadow\'s utilisation per unit '
          'of the primaries\'; above 1 the shadow saturates first, and its normalised CPU caps at 1/ratio (n/a: it '
          'never reaches high). Both at once: 1 < ratio < 1/high.')
    for label, dummy in shapes[1:]:
        print('Trace segment: %s.' % label)


if __name__ == '__main__':
    main()

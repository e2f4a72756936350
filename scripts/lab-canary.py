#!/usr/bin/env python
"""Lab only: make the web shadow a canary in the simulator, as the replay agent (shadow_replay role) would on PVE.

Run after lab-inject-load.py. Through the simulator's control channel (/_sim/, tests/lab/pvesim.py; the PROXMOX_*
environment scripts/lab.sh exports) it gives the shadow (`--shadow`) the CPU the replayed requests cost: each
minute, the primaries' CPU x rate x primaries / size (the shadow sees `--rate` of the flows of every primary on
`--shadow-cores` against the primaries' `--primary-cores`) plus the agent's own share, and puts the agent's
counters file (tests/lab/canary.py, format version 1) into the shadow guest at the template's
`shadow.replay.stats_path`, which the reconciler reads through the guest agent's file-read. Requests cost
`--cost-ms` of CPU each; the replay p95 is that of an M/M/1 queue at the shadow's utilisation.
"""
import argparse
import importlib.util
import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))
from lab.canary import STATS_PATH, counters  # noqa: E402


def _inject_module():
    spec = importlib.util.spec_from_file_location('lab_inject_load', os.path.join(HERE, 'lab-inject-load.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--prefix', default='shop-web-', help='name prefix of the primaries')
    parser.add_argument('--shadow', default='shop-web-shadow')
    parser.add_argument('--rate', type=float, default=0.10, help='shadow.mirror.rate (flow sample rate)')
    parser.add_argument('--primary-cores', type=int, default=2)
    parser.add_argument('--shadow-cores', type=int, default=1)
    parser.add_argument('--cost-ms', type=float, default=20.0, help='CPU per request (ms)')
    parser.add_argument('--agent-overhead', type=float, default=0.10, help="the agent's CPU per replayed request")
    parser.add_argument('--path', default=STATS_PATH, help='shadow.replay.stats_path')
    args = parser.parse_args()
    lab = _inject_module()
    state = lab.call('GET', 'state')
    prims = [vm for vm in state['vms'] if str(vm.get('name', '')).startswith(args.prefix)
             and str(vm['name'])[len(args.prefix):].isdigit()]
    shadow = next((vm for vm in state['vms'] if vm.get('name') == args.shadow), None)
    if not prims or shadow is None:
        raise SystemExit('lab: no primaries {0}N or no shadow {1} in the simulator'.format(args.prefix, args.shadow))
    # The primaries' load as lab-inject-load.py's defaults give it (the same series for each primary).
    now = int(time.time()) // 60 * 60
    primary = [p['cpu'] for p in lab.series(now, 0.25, 0.65, 60, 1440)]
    ratio = args.rate * len(prims) * args.primary_cores / float(args.shadow_cores)
    points = []
    for i, u in enumerate(primary):
        s = min(1.0, 0.02 + u * ratio * (1 + args.agent_overhead))
        points.append({'time': now - (len(primary) - 1 - i) * 60, 'cpu': round(s, 4), 'maxcpu': args.shadow_cores,
                       'mem': 300 * 1048576, 'maxmem': 512 * 1048576, 'netin': 1.0e5, 'netout': 1.0e5})
    lab.call('POST', 'rrd', {'vmid': shadow['vmid'], 'points': points})
    lab.call('POST', 'stats', {'vmid': shadow['vmid'], 'stats': {'cpu': points[-1]['cpu']}})
    cost = args.cost_ms / 1000.0
    per_min = [u * ratio * args.shadow_cores * 60 / cost for u in primary]      # requests replayed a minute
    total = int(sum(per_min))
    rho = min(0.99, primary[-1] * ratio)
    p95 = math.log(20) * cost / (1 - rho)            # M/M/1: the response time is exponential, rate mu (1 - rho)
    lab.call('POST', 'guest_file', {'vmid': shadow['vmid'], 'path': args.path,
                                    'content': counters(requests=total, window_requests=int(per_min[-1]), p95=p95,
                                                        p50=math.log(2) * cost / (1 - rho))})
    print('lab: {0} (vmid {1}) replays {2:.0%} of the flows of {3} primaries on {4} core(s): CPU {5:.0%} now '
          '(= {6:.0%} of a primary, the primaries at {7:.0%}); {8} requests replayed, {9} in the last minute, '
          'p95 {10:.0f} ms, counters in {11}'.format(args.shadow, shadow['vmid'], args.rate, len(prims),
                                                      args.shadow_cores, points[-1]['cpu'],
                                                      points[-1]['cpu'] * args.shadow_cores / args.primary_cores /
                                                      (args.rate * len(prims)), primary[-1], total, int(per_min[-1]),
                                                      1000 * p95, args.path))


if __name__ == '__main__':
    main()

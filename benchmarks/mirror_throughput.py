# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Throughput through a primary's tap with and without port mirroring, in the namespace lab.

One run builds the lab (client and primary VM 100 on vmbr0, shadow VM 900 on the isolated vmbr1,
veth NICs named as PVE names them), then measures iperf3 from the client to the primary with:
no mirror, full mirroring (nft backend, the default), full mirroring (tc backend), 10% per-packet sampling
and 10% flow sampling (nft), both directions mirrored. Flow sampling copies a stream whole or not at all:
with one stream (the default) each round copies it or not, so use ``--parallel`` (iperf3 ``-P``) to see the
average cost. Configurations are interleaved round by round so that load from
other processes hits them all alike; the median of the rounds is reported with the ratio to the
unmirrored median. Needs root and iperf3.

    sudo .venv/bin/python benchmarks/mirror_throughput.py [--seconds 3] [--rounds 3] [--parallel 1] [--json]

Targets: full >= 0.8 and per-packet sampled >= 0.95 of the unmirrored throughput (flow sampling: reported).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from lab.netns import Lab  # noqa: E402
from ansible_collections.shadownet.proxmox.plugins.module_utils.mirror import (  # noqa: E402
    MirrorManager, MirrorSpec)

CONFIGS = [
    ('none', None),
    ('full nft', dict(mode='full', backend='nft')),
    ('full tc', dict(mode='full', backend='tc')),
    ('sampled 10% nft', dict(mode='sampled', rate=0.1, backend='nft', sampling='packet')),
    ('flow 10% nft', dict(mode='sampled', rate=0.1, backend='nft', sampling='flow')),
]
TARGETS = {'full nft': 0.8, 'full tc': 0.8, 'sampled 10% nft': 0.95}


def _run(argv, data=None):
    p = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    return p.returncode, p.stdout, p.stderr


def iperf(lab, client_ns, server_ip, seconds, udp=False, parallel=1):
    argv = ['iperf3', '-c', server_ip, '-t', str(seconds), '-J', '-O', '1', '-P', str(parallel)]
    if udp:
        argv += ['-u', '-b', '0', '-l', '1400']
    res = lab.run(client_ns, argv, timeout=seconds + 30)
    data = json.loads(res.stdout)
    end = data['end']
    return (end['sum_received'] if 'sum_received' in end else end['sum'])['bits_per_second']


def measure(seconds, rounds, udp, parallel=1):
    with Lab() as lab:
        lab.bridge('vmbr0')
        lab.bridge('vmbr1')
        primary = lab.vm(100, [('vmbr0', '10.0.0.10/24')])
        shadow = lab.vm(900, [('vmbr1', '10.0.0.10/24')])
        client = lab.client('c1', 'vmbr0', '10.0.0.2/24')
        server = lab.spawn(primary.ns, ['iperf3', '-s', '-B', '10.0.0.10'])
        time.sleep(0.5)
        manager = MirrorManager(_run, netns=lab.node)

        # The shadow's receive counter proves the copies arrive (a capture would cost CPU).
        def copies():
            return lab.link(shadow.ns, 'eth0').get('stats64', {}).get('rx', {}).get('packets', 0)
        results = {name: [] for name, dummy in CONFIGS}
        for dummy in range(rounds):
            for name, cfg in CONFIGS:
                if cfg is None:
                    manager.ensure_absent('tap100i0', 'tap900i0')
                else:
                    manager.ensure_present(MirrorSpec('tap100i0', 'tap900i0', direction='both', **cfg))
                before = copies()
                bps = iperf(lab, client, '10.0.0.10', seconds, udp=udp, parallel=parallel)
                results[name].append((bps, copies() - before))
        manager.ensure_absent('tap100i0', 'tap900i0')
        lab.stop(server)
        return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--seconds', type=int, default=3)
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--udp', action='store_true', help='UDP (1400-byte datagrams) instead of TCP')
    ap.add_argument('--parallel', type=int, default=1, help='iperf3 streams (-P); flow sampling picks whole streams')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    results = measure(args.seconds, args.rounds, args.udp, args.parallel)
    base = statistics.median(run[0] for run in results['none'])
    report = []
    for name, dummy in CONFIGS:
        med = statistics.median(run[0] for run in results[name])
        ratio = med / base
        target = TARGETS.get(name)
        report.append({'config': name, 'median_gbps': round(med / 1e9, 3), 'ratio': round(ratio, 3),
                       'runs_gbps': [round(run[0] / 1e9, 3) for run in results[name]],
                       'copies_seen_by_shadow': [run[1] for run in results[name]],
                       'target': target, 'meets_target': None if target is None else ratio >= target})
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print('mirror throughput, %s x %d, %d s x %d rounds, median' % ('UDP' if args.udp else 'TCP', args.parallel,
                                                                    args.seconds, args.rounds))
    print('%-17s %9s %7s %7s  %s' % ('config', 'Gbit/s', 'ratio', 'target', 'runs (Gbit/s) / copies'))
    for r in report:
        print('%-17s %9.3f %7.3f %7s  %s / %s' % (
            r['config'], r['median_gbps'], r['ratio'],
            '-' if r['target'] is None else ('>=%.2f %s' % (r['target'], 'ok' if r['meets_target'] else 'MISS')),
            r['runs_gbps'], r['copies_seen_by_shadow']))
    return 0


if __name__ == '__main__':
    sys.exit(main())

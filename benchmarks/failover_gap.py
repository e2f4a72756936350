# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover gap benchmark of the vip_failover role (real keepalived in the namespace lab).

Renders the role for a primary and a shadow guest (ansible-playbook on localhost), starts keepalived and the
health watchdog in two guest namespaces, and lets a client namespace probe the VIP every 5 ms (UDP echo that
answers with the guest's name). Then, per failure kind, N failovers and fail-backs:

  link    the primary's NIC goes down (node side, like PVE link_down)
  stop    keepalived stopped (SIGTERM)
  kill    keepalived killed (SIGKILL; the VIP stays on the primary until remediation removes it)
  health  the service stops (TCP port closed, the echo goes silent): the watchdog fails the track_file

Figures per kind: gap (client-visible silence: last answer before the shadow's first answer -> that answer),
takeover (failure -> the shadow's first answer), answers from anyone but the shadow after that, spurious
transitions (a member entering MASTER more than once per cycle), fail-backs done. Then an idle window with
no failure: every transition there is spurious. ``--load N`` runs N CPU-bound processes beside the lab for the
whole run (the guests' own work, or a busy CI machine): spurious transitions under load are what a too short
advert interval or a stalled keepalived costs.

Run as root: .venv/bin/python benchmarks/failover_gap.py [--cycles 20] [--idle 60] [--load 0] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for path in (os.path.join(ROOT, '.build', 'collections'), os.path.join(ROOT, 'tests')):
    if path not in sys.path:
        sys.path.insert(0, path)

from lab.netns import Lab, cleanup_stale  # noqa: E402
from lab import vrrp_lab as harness  # noqa: E402

KINDS = ('link', 'stop', 'kill', 'health')


def ms(value):
    return '%7.1f' % (value * 1000) if value is not None else '    n/a'


def summarise(kind, cycles):
    gaps = [c['gap'] for c in cycles if c['gap'] is not None]
    takeovers = [c['takeover'] for c in cycles if c['takeover'] is not None]
    fb = [c['failback_gap'] for c in cycles if c['failback_gap'] is not None]
    return {
        'kind': kind, 'runs': len(cycles), 'answered': len(gaps),
        'gap_median': statistics.median(gaps) if gaps else None, 'gap_max': max(gaps) if gaps else None,
        'takeover_median': statistics.median(takeovers) if takeovers else None,
        'takeover_max': max(takeovers) if takeovers else None,
        'others_after': sum(c['others_after'] or 0 for c in cycles),
        'spurious': sum(c['spurious'] for c in cycles),
        'failed_back': sum(1 for c in cycles if c['failed_back']),
        'failback_gap_max': max(fb) if fb else None,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--cycles', type=int, default=20, help='failovers per failure kind (default 20)')
    parser.add_argument('--kinds', default=','.join(KINDS), help='comma-separated subset of %s' % ','.join(KINDS))
    parser.add_argument('--idle', type=float, default=60, help='idle window in seconds (default 60)')
    parser.add_argument('--preempt-delay', type=float, default=1.0,
                        help='vip_failover_preempt_delay for the run (default 1 s to keep cycles short)')
    parser.add_argument('--advert-int', type=float, default=None,
                        help='vip_failover_advert_int (default: the role default)')
    parser.add_argument('--load', type=int, default=0,
                        help='CPU-bound processes running beside the lab for the whole run (default 0)')
    parser.add_argument('--json', help='write every cycle and the summary to this file')
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error('needs root (network namespaces)')
    kinds = [k for k in args.kinds.split(',') if k]
    for k in kinds:
        if k not in KINDS:
            parser.error('unknown kind %s' % k)

    extra = {'vip_failover_preempt_delay': args.preempt_delay}
    if args.advert_int is not None:
        extra['vip_failover_advert_int'] = args.advert_int
    workdir = tempfile.mkdtemp(prefix='sn-failover-bench-%d-' % os.getpid())
    cleanup_stale()
    lab = Lab()
    vl = None
    out = {'settings': dict(extra, load=args.load), 'cycles': [], 'summary': [], 'idle': None}
    busy = []
    try:
        t = time.monotonic()
        res, hosts = harness.render(workdir, extra=extra)
        if res.returncode != 0:
            sys.stderr.write(res.stdout[-4000:] + res.stderr[-2000:])
            return 1
        conf = open(hosts['primary']['vip_failover_config_path']).read()
        advert = next(line.split()[1] for line in conf.splitlines() if line.strip().startswith('advert_int'))
        print('role rendered in %.1f s; advert_int %s s, preempt_delay %s s, unicast peers, probe every 5 ms'
              % (time.monotonic() - t, advert, args.preempt_delay))
        vl = harness.VrrpLab(lab, hosts)
        if not (vl.wait_state('primary', 'MASTER') and vl.wait_state('shadow', 'BACKUP') and vl.settle()):
            print('the lab did not converge (primary MASTER, shadow BACKUP)')
            return 1
        vl.start_probe()
        vl.wait_owner('primary')
        busy = [subprocess.Popen([sys.executable, '-c', 'while True: pass']) for dummy in range(args.load)]
        if busy:
            print('load: %d CPU-bound processes beside the lab (%d cores)' % (len(busy), os.cpu_count() or 0))

        for kind in kinds:
            cycles = []
            for i in range(args.cycles):
                c = harness.failover_cycle(vl, kind)
                vl.wait_state('shadow', 'BACKUP', timeout=5)
                cycles.append(c)
                c = dict(c, cycle=i)
                c['transitions'] = {r: [e['state'] for e in ev] for r, ev in c['transitions'].items()}
                out['cycles'].append(c)
            out['summary'].append(summarise(kind, cycles))
            s = out['summary'][-1]
            print('%-7s done: %d runs, gap median %s ms, max %s ms'
                  % (kind, s['runs'], ms(s['gap_median']), ms(s['gap_max'])), flush=True)

        if args.idle > 0:
            wall = time.time()
            t0 = time.monotonic()
            time.sleep(args.idle)
            replies = vl.prober.since(t0)
            events = vl.events_since(wall)
            times = [t for t, dummy in replies]
            out['idle'] = {
                'seconds': args.idle, 'transitions': len(events),
                'answers_not_primary': sum(1 for dummy, who in replies if who != 'primary'),
                'longest_silence': max((b - a for a, b in zip(times, times[1:])), default=None),
                'answers': len(replies),
            }
    finally:
        for proc in busy:
            proc.kill()
            proc.wait()
        if vl:
            vl.close()
        lab.close()
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print('kind     runs  gap median    max   takeover med    max   others-after  spurious  failed-back')
    for s in out['summary']:
        print('%-7s %5d  %s ms %s ms   %s ms %s ms  %6d        %6d    %3d/%d' % (
            s['kind'], s['runs'], ms(s['gap_median']), ms(s['gap_max']), ms(s['takeover_median']),
            ms(s['takeover_max']), s['others_after'], s['spurious'], s['failed_back'], s['runs']))
    if out['idle']:
        i = out['idle']
        print('idle window %.0f s: %d transitions, %d answers from a non-primary, longest silence %s ms '
              '(%d answers)' % (i['seconds'], i['transitions'], i['answers_not_primary'],
                                ms(i['longest_silence']).strip(), i['answers']))
    link = next((s for s in out['summary'] if s['kind'] == 'link'), None)
    if link and link['gap_median'] is not None:
        ok = (link['gap_median'] < 0.150 and link['gap_max'] < 0.300 and link['spurious'] == 0
              and (not out['idle'] or out['idle']['transitions'] == 0))
        print('targets (link down: median < 150 ms, max < 300 ms, zero spurious): %s' % ('met' if ok else 'NOT met'))
    if args.json:
        with open(args.json, 'w') as handle:
            json.dump(out, handle, indent=1, default=str)
    return 0


if __name__ == '__main__':
    sys.exit(main())

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replay agent's memory with many concurrent flows, in the namespace lab.

A shadow VM 900 (eth0, host end tap900i0 on vmbr1) runs the agent (system python, stdlib only, http mode, its
default limits except ``max_flows``) and a recording HTTP server on 127.0.0.1:8080. Crafted client frames are
written onto tap900i0 from the node (what the mirror would deliver):

1. ``--flows`` connections opened (SYN) and each sent the first part of a request (a request line and headers,
   ``--header-bytes`` long, unfinished): all flows are tracked at once, each holding its unfinished request;
2. then each flow is sent one out-of-order segment (1400 bytes past a hole): held for ``gap_timeout``;
3. then every flow finishes its request and sends FIN: every request is replayed (the flows stay in the table
   until their hole is given up on after ``gap_timeout``, 30 s here).

Printed after each phase: the agent's RSS (VmRSS) and its growth over the idle agent, per flow; the agent's
counters. Needs root.

    sudo .venv/bin/python benchmarks/replay_memory.py [--flows 10000] [--header-bytes 400] [--json]
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from lab.netns import Lab, in_netns  # noqa: E402
from lab.replay_lab import read_records, read_stats, rss_kib, start_agent, start_server, tcp_frame, wait_for  # noqa: E402


def send_all(lab, frames, dev='tap900i0', per_ms=20):
    def make():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((dev, 0))
        return s
    sock = in_netns(lab.node, make)
    for i, f in enumerate(frames):
        sock.send(f)
        if i % per_ms == 0:
            time.sleep(0.001)  # ~20,000 frames/s: the capture keeps up, nothing is lost to the socket buffer
    sock.close()


def addr(n):
    return '10.1.%d.%d' % (n // 250, 1 + n % 250), 30000 + n % 20000


def measure(flows, header_bytes):
    tmp = tempfile.mkdtemp(prefix='replay-mem-')
    with Lab() as lab:
        lab.bridge('vmbr1')
        shadow = lab.vm(900, [('vmbr1', '10.0.0.10/24')])
        start_server(lab, shadow.ns, '127.0.0.1', 8080, os.path.join(tmp, 'shadow.jsonl'))
        conf = {'interface': 'eth0', 'port': 80, 'target_port': 8080, 'stats_path': os.path.join(tmp, 'stats.json'),
                'stats_interval': 0.5, 'metrics_listen': '', 'max_flows': flows + 100, 'gap_timeout': 30.0,
                'idle_timeout': 600.0, 'concurrency': 16}
        agent = start_agent(lab, shadow.ns, conf, os.path.join(tmp, 'agent.json'))
        time.sleep(1.0)
        idle = rss_kib(agent.pid)
        head = b'GET /m/%d HTTP/1.1\r\nHost: shop\r\nX-Pad: '
        rows = [('idle agent', idle, read_stats(conf['stats_path']))]

        def phase(name, frames, until):
            send_all(lab, frames)
            stats = wait_for(lambda: until(read_stats(conf['stats_path'])) and read_stats(conf['stats_path']), timeout=60)
            time.sleep(1.0)
            rows.append((name, rss_kib(agent.pid), stats or read_stats(conf['stats_path'])))

        first = []
        for n in range(flows):
            src, sport = addr(n)
            part = head % n
            part += b'p' * max(0, header_bytes - len(part))
            first += [tcp_frame(src, sport, '10.0.0.10', 80, 1000, 'S'), tcp_frame(src, sport, '10.0.0.10', 80, 1001, 'PA', part)]
        phase('%d flows, unfinished requests' % flows, first, lambda s: s['flows_seen'] >= flows)
        ahead = [tcp_frame(*addr(n), '10.0.0.10', 80, 1001 + header_bytes + 100, 'PA', b'o' * 1400) for n in range(flows)]
        phase('+ 1400 B out of order each', ahead, lambda s: True)
        done = []
        for n in range(flows):
            src, sport = addr(n)
            seq = 1001 + header_bytes
            done += [tcp_frame(src, sport, '10.0.0.10', 80, seq, 'PA', b'\r\n\r\n'),
                     tcp_frame(src, sport, '10.0.0.10', 80, seq + 4, 'FA')]
        phase('requests finished and replayed', done, lambda s: s['requests_replayed'] >= flows)
        replayed = len(read_records(os.path.join(tmp, 'shadow.jsonl')))
        out = []
        for name, rss, stats in rows:
            out.append({'phase': name, 'rss_mib': round(rss / 1024.0, 1), 'growth_mib': round((rss - idle) / 1024.0, 1),
                        'per_flow_kib': round((rss - idle) / float(flows), 2) if rss != idle else 0.0,
                        'flows_seen': stats['flows_seen'], 'requests_replayed': stats['requests_replayed'],
                        'errors': stats['errors']})
        return {'flows': flows, 'header_bytes': header_bytes, 'phases': out, 'shadow_received': replayed,
                'load_average': os.getloadavg()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--flows', type=int, default=10000)
    ap.add_argument('--header-bytes', type=int, default=400)
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root (network namespaces)')
    res = measure(args.flows, args.header_bytes)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    print('%d concurrent flows, %d-byte unfinished requests (load average %.1f)' % (res['flows'], res['header_bytes'],
                                                                                    res['load_average'][0]))
    print('%-34s %9s %11s %12s %10s %9s  %s' % ('phase', 'RSS MiB', 'growth MiB', 'KiB/flow', 'flows', 'replayed', 'errors'))
    for row in res['phases']:
        print('%-34s %9.1f %11.1f %12.2f %10d %9d  %s' % (row['phase'], row['rss_mib'], row['growth_mib'], row['per_flow_kib'],
                                                          row['flows_seen'], row['requests_replayed'], row['errors']))
    print('shadow server received %d requests' % res['shadow_received'])


if __name__ == '__main__':
    main()

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replay fidelity and agent CPU at full mirror, in the namespace lab.

The lab of tests/integration/test_replay_netns.py: client and primary VM 100 on vmbr0, shadow VM 900 on the isolated
vmbr1 with the primary's address, full mirror (nft, both directions) of tap100i0 into tap900i0. The primary and
the shadow run the same recording HTTP server (Python, one thread per connection); the replay agent (system python,
stdlib only) runs in the shadow on eth0 -> 127.0.0.1:8080.

Load: ``--connections`` keep-alive connections from the client, each sending requests (GET and small POST, every
tenth one chunked) paced so that the total is ``--rate`` requests/s for ``--seconds``; every ``--reconnect``
requests a connection is closed and a new one opened (new flows during the run).

``--inject``: instead of a real client and primary (whose Python servers cap the rate on a loaded machine), the
client's side of ``--connections`` keep-alive flows is written as crafted frames straight onto the shadow's tap
(what the mirror would deliver), round-robin across flows and paced at ``--rate`` requests/s; the shadow's server
then must receive exactly those requests, flow by flow.

Printed: requests sent / answered by the primary / replayed into the shadow (fidelity = shadow / primary), the
flows whose replayed requests are not the primary's in the same order, the achieved rate, the agent's CPU (user +
system seconds over the run, per 1,000 replayed requests/s), the agent's peak RSS and its counters. Needs root.

    sudo .venv/bin/python benchmarks/replay_fidelity.py [--rate 2000] [--seconds 10] [--connections 40] [--json]

Target: fidelity >= 99.9 % at 2,000 requests/s, every flow in order.
"""
import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))
sys.path.insert(0, os.path.join(ROOT, '.build', 'collections'))

from lab.netns import Lab, in_netns  # noqa: E402
from lab.replay_lab import (http_request, per_flow, read_records, read_stats, rss_kib, cpu_seconds,  # noqa: E402
                            start_agent, start_server, wait_for)
from ansible_collections.shadownet.proxmox.plugins.module_utils import replay  # noqa: E402
from ansible_collections.shadownet.proxmox.plugins.module_utils.mirror import MirrorManager, MirrorSpec  # noqa: E402


def _run(argv, data=None):
    import subprocess
    p = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    return p.returncode, p.stdout, p.stderr


def client_loop(client_ns, conn_id, per_conn_rate, deadline, reconnect, counts):
    gap = 1.0 / per_conn_rate
    sock = reader = None
    n = 0
    start = time.monotonic()
    while True:
        due = start + n * gap
        if due >= deadline:
            break
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        if sock is None:
            sock = in_netns(client_ns, socket.create_connection, ('10.0.0.10', 80), 10)
            reader = replay._Reader(sock)  # pylint: disable=protected-access
        last = reconnect and (n + 1) % reconnect == 0
        if n % 3 == 2:
            raw = http_request('POST', '/c%d/%d' % (conn_id, n), b'v=%d' % n, chunked=n % 10 == 5, close=last)
            method = b'POST'
        else:
            raw = http_request('GET', '/c%d/%d?x=%d' % (conn_id, n, n), close=last)
            method = b'GET'
        sock.sendall(raw)
        replay.read_response(reader, method)
        counts[conn_id] += 1
        n += 1
        if last:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()


def inject_frames(lab, rate, seconds, connections, reconnect):
    """Crafted client frames onto tap900i0 at ``rate`` requests/s; returns the requests per flow (paths)."""
    from lab.replay_lab import tcp_frame
    total = int(rate * seconds)
    flows, plan = {}, []
    for n in range(total):
        conn = n % connections
        gen = flows.setdefault(conn, {'i': 0, 'gen': 0, 'seq': None})
        if gen['seq'] is None:
            gen['seq'] = (conn * 7919 + gen['gen'] * 104729) << 12
            sport = 20000 + conn * 50 + gen['gen']
            gen['sport'] = sport
            plan.append([tcp_frame('10.0.0.2', sport, '10.0.0.10', 80, gen['seq'], 'S')])
            gen['seq'] += 1
        gen['i'] += 1
        last = reconnect and gen['i'] % reconnect == 0
        i = gen['i']
        raw = (http_request('POST', '/c%d.%d/%d' % (conn, gen['gen'], i), b'v=%d' % i, chunked=i % 10 == 5, close=last)
               if i % 3 == 2 else http_request('GET', '/c%d.%d/%d' % (conn, gen['gen'], i), close=last))
        frames = [tcp_frame('10.0.0.2', gen['sport'], '10.0.0.10', 80, gen['seq'], 'PA', raw)]
        gen['seq'] += len(raw)
        if last:
            frames.append(tcp_frame('10.0.0.2', gen['sport'], '10.0.0.10', 80, gen['seq'], 'FA'))
            gen['seq'] = None
            gen['gen'] += 1
        plan.append(frames)
    plan.extend([tcp_frame('10.0.0.2', g['sport'], '10.0.0.10', 80, g['seq'], 'FA')] for g in flows.values() if g['seq'] is not None)

    def make():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind(('tap900i0', 0))
        return s
    sock = in_netns(lab.node, make)
    start = time.monotonic()
    INJECT_START[0] = start
    sent = 0
    for frames in plan:
        due = start + sent / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for f in frames:
            sock.send(f)
        if len(frames) and frames[0][47] != 0x02:  # not a lone SYN: one request
            sent += 1
    sock.close()
    INJECT_END[0] = time.monotonic()
    return total


INJECT_START, INJECT_END = [0.0], [0.0]


def measure(rate, seconds, connections, reconnect, inject=False):
    tmp = tempfile.mkdtemp(prefix='replay-bench-')
    with Lab() as lab:
        lab.bridge('vmbr0')
        lab.bridge('vmbr1')
        primary = lab.vm(100, [('vmbr0', '10.0.0.10/24')])
        shadow = lab.vm(900, [('vmbr1', '10.0.0.10/24')])
        client = lab.client('c1', 'vmbr0', '10.0.0.2/24')
        MirrorManager(_run, netns=lab.node).ensure_present(MirrorSpec('tap100i0', 'tap900i0', mode='full', direction='both',
                                                                      backend='nft'))
        start_server(lab, primary.ns, '10.0.0.10', 80, os.path.join(tmp, 'primary.jsonl'))
        start_server(lab, shadow.ns, '127.0.0.1', 8080, os.path.join(tmp, 'shadow.jsonl'))
        conf = {'interface': 'eth0', 'port': 80, 'target_port': 8080, 'stats_path': os.path.join(tmp, 'stats.json'),
                'stats_interval': 1.0, 'metrics_listen': '', 'concurrency': 32}
        agent = start_agent(lab, shadow.ns, conf, os.path.join(tmp, 'agent.json'))
        time.sleep(0.5)
        cpu0, peak = cpu_seconds(agent.pid), [rss_kib(agent.pid)]
        counts = [0] * connections
        t0 = time.monotonic()
        deadline = t0 + seconds
        if inject:
            threads = [threading.Thread(target=lambda: counts.__setitem__(0, inject_frames(lab, rate, seconds, connections, reconnect)))]
        else:
            threads = [threading.Thread(target=client_loop, args=(client, i, rate / connections, deadline, reconnect, counts))
                       for i in range(connections)]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            peak[0] = max(peak[0], rss_kib(agent.pid))
            time.sleep(0.1)
        elapsed = (INJECT_END[0] - INJECT_START[0]) if inject else time.monotonic() - t0
        sent = sum(counts)
        wait_for(lambda: len(read_records(os.path.join(tmp, 'shadow.jsonl'))) >= sent, timeout=30)
        time.sleep(1.5)
        cpu = cpu_seconds(agent.pid) - cpu0
        shadow_rec = read_records(os.path.join(tmp, 'shadow.jsonl'))
        if inject:  # what was sent: the paths say the flow (/c<conn>.<generation>/<i>) and the order (<i>)
            primary_rec = [{'peer': r['path'].rsplit('/', 1)[0], 'path': r['path']} for r in shadow_rec]
            want = [tuple(sorted(f, key=lambda p: int(p[0].rsplit('/', 1)[1]))) for f in per_flow(primary_rec, fields=('path',))]
            got = per_flow(shadow_rec, fields=('path',))
            primary_rec = [None] * sent
        else:
            primary_rec = read_records(os.path.join(tmp, 'primary.jsonl'))
            want, got = per_flow(primary_rec), per_flow(shadow_rec)
        # In order per flow: each replayed flow's sequence is one of the sent flows (matched by its first request).
        by_first = {f[0]: f for f in want}
        out_of_order = sum(1 for f in got if by_first.get(f[0]) != f)
        stats = read_stats(conf['stats_path'])
        return {
            'load': 'crafted frames on the shadow tap' if inject else 'real client -> primary, mirrored',
            'rate_target': rate, 'seconds': round(elapsed, 2), 'connections': connections,
            'requests_sent': sent, 'primary_answered': len(primary_rec), 'shadow_received': len(shadow_rec),
            'achieved_rps': round(sent / elapsed, 1),
            'fidelity_percent': round(100.0 * len(shadow_rec) / max(1, len(primary_rec)), 3),
            'flows_primary': len(want), 'flows_shadow': len(got), 'flows_not_in_order': out_of_order,
            'agent_cpu_seconds': round(cpu, 2),
            'agent_cpu_per_1000_rps': round(cpu / elapsed / (len(shadow_rec) / elapsed / 1000.0), 3) if shadow_rec else None,
            'agent_peak_rss_mib': round(peak[0] / 1024.0, 1),
            'agent_counters': {k: stats[k] for k in ('flows_seen', 'flows_replayed', 'flows_partial', 'requests_replayed',
                                                     'reassembly_gaps', 'errors')},
            'replay_latency_p50_p95_s': (stats['window']['latency_p50_seconds'], stats['window']['latency_p95_seconds']),
            'load_average': os.getloadavg(),
        }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--rate', type=float, default=2000.0)
    ap.add_argument('--seconds', type=float, default=10.0)
    ap.add_argument('--connections', type=int, default=40)
    ap.add_argument('--reconnect', type=int, default=200, help='requests per connection before a new one (0: never)')
    ap.add_argument('--inject', action='store_true', help='crafted frames on the shadow tap instead of a real client')
    ap.add_argument('--json', action='store_true')
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit('needs root (network namespaces)')
    res = measure(args.rate, args.seconds, args.connections, args.reconnect, inject=args.inject)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    for key, value in res.items():
        print('%-28s %s' % (key, value))
    ok = res['fidelity_percent'] >= 99.9 and res['flows_not_in_order'] == 0
    print('target (>= 99.9 %% replayed, every flow in order): %s' % ('met' if ok else 'NOT met'))


if __name__ == '__main__':
    main()

#!/usr/bin/env python
"""Lab only: the web shadow as a canary with real replay, its counters put into the simulator's shadow guest.

Run after lab-inject-load.py, right before the reconcile. Two parts:

1. Real replay, in network namespaces (``--network``: the lab-network.json playbooks/lab.yml writes): the same
   node(s), bridges, taps and isolated twin as scripts/lab-network.py builds for the plan's web mirror, the real
   ``port_mirror`` module with the plan's mode, rate and sampling, a real HTTP server (tests/lab/replay_lab.py) in
   the primary and the same server in the shadow (on 127.0.0.1 at the plan's target port), and the real replay agent
   (plugins/module_utils/replay.py, run by the system python as the shadow_replay role runs it) on the shadow's
   mirror NIC. A client drives ``--connections`` keep-alive connections of ``--requests-per-connection`` requests
   through the primary; the agent replays the sampled flows into the shadow's server. Every namespace and process is
   removed at the end (the nftables mirror goes with the node namespace).
2. Through the simulator's control channel (/_sim/, tests/lab/pvesim.py; the PROXMOX_* environment scripts/lab.sh
   exports) the agent's own counters file, as it wrote it, goes into the shadow guest at the plan's
   ``shadow.replay.stats_path``, which the reconciler reads through the guest agent's file-read. The simulator has
   no real CPU, so the shadow's CPU is still modelled: each minute, the primaries' CPU x rate x primaries / size
   (the shadow sees `--rate` of the flows of every primary on `--shadow-cores` against the primaries'
   `--primary-cores`) plus the agent's own share.
"""
import argparse
import http.client
import importlib.util
import json
import os
import socket
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, 'tests'))


def _script(name):
    """A sibling script (its name has a dash) as a module."""
    spec = importlib.util.spec_from_file_location(name.replace('-', '_')[:-3], os.path.join(HERE, name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _drive(addr, port, connections, per_connection):
    """HTTP/1.1 keep-alive connections from the client (call in its namespace): GETs and POSTs with bodies; returns
    (requests answered 200, requests sent)."""
    ok = sent = 0
    for c in range(connections):
        conn = http.client.HTTPConnection(addr, port, timeout=5)
        try:
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # a POST's headers and body: 2 writes
            for r in range(per_connection):
                if r % 4 == 3:
                    conn.request('POST', '/cart/%d' % c, body=b'item=%d&qty=%d' % (c, r),
                                 headers={'Content-Type': 'application/x-www-form-urlencoded'})
                else:
                    conn.request('GET', '/item/%d/%d' % (c, r))
                sent += 1
                resp = conn.getresponse()
                resp.read()
                ok += resp.status == 200
        finally:
            conn.close()
    return ok, sent


def _stable(path, read_stats):
    """The agent's stats once two reads half a second apart agree (it has replayed what it saw)."""
    first = read_stats(path)
    time.sleep(0.6)
    second = read_stats(path)
    keys = ('flows_seen', 'requests_seen', 'requests_replayed')
    return second if all(first[k] == second[k] for k in keys) and second['requests_replayed'] else None


def replay(facts, connections, per_connection, say=print):
    """Part 1: returns (the agent's counters file text, figures)."""
    from lab.netns import Lab, cleanup_stale, in_netns
    from lab.replay_lab import read_records, read_stats, start_agent, start_server, wait_for
    network = _script('lab-network.py')
    begun = time.monotonic()
    cleanup_stale()
    with tempfile.TemporaryDirectory(prefix='shadownet-lab-replay.') as tmp, Lab() as lab, Lab() as lab_b:
        top = network.topology(lab, lab_b, facts, say=lambda *_: None)
        shadow_name = top['mirror']['target']['vm']
        canary = next((e['canary'] for e in facts['plan']['scaling'] if (e.get('canary') or {}).get('shadow') ==
                       shadow_name), None)
        if canary is None or canary['mode'] != 'http':
            raise SystemExit('lab-canary: the plan gives %s no http shadow.replay' % shadow_name)
        spec = top['spec']
        mirror = network.module(lab.node, **spec)
        address = top['net'] + '.11'
        start_server(lab, top['primary'].ns, address, canary['port'], os.path.join(tmp, 'primary.jsonl'),
                     kind='http-nodelay')
        start_server(top['shadow_lab'], top['shadow'].ns, '127.0.0.1', canary['target_port'],
                     os.path.join(tmp, 'shadow.jsonl'), kind='http-nodelay')
        stats_path = os.path.join(tmp, 'stats.json')
        conf = {'interface': top['shadow'].nics[0].guest, 'port': canary['port'], 'mode': 'http',
                'target_port': canary['target_port'], 'methods': canary['methods'],
                'concurrency': canary['concurrency'], 'stats_path': stats_path, 'stats_interval': 0.5,
                'metrics_listen': ''}
        agent = start_agent(top['shadow_lab'], top['shadow'].ns, conf, os.path.join(tmp, 'agent.json'))
        started = time.monotonic()
        answered, sent = in_netns(top['client'], _drive, address, canary['port'], connections, per_connection)
        took = time.monotonic() - started
        wait_for(lambda: len(read_records(os.path.join(tmp, 'primary.jsonl'))) >= sent, timeout=10)
        wait_for(lambda: _stable(stats_path, read_stats), timeout=15)
        top['shadow_lab'].stop(agent)                 # SIGTERM: the agent writes its file a last time
        content = open(stats_path).read()
        stats = json.loads(content)
        figures = dict(sent=sent, answered=answered, connections=connections, seconds=took,
                       primary=len(read_records(os.path.join(tmp, 'primary.jsonl'))),
                       shadow=len(read_records(os.path.join(tmp, 'shadow.jsonl'))), stats=stats,
                       effective_rate=float((mirror.get('spec') or {}).get('effective_rate') or spec.get('rate') or 1.0),
                       shadow_name=shadow_name, primary_name=top['mirror']['source']['vm'], address=address,
                       canary=canary, spec=spec, changed=mirror['changed'])
    figures['total_seconds'] = time.monotonic() - begun         # namespaces, mirror, servers, agent, clean-up
    return content, figures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--network', required=True, help="lab-network.json (the plan and the vmids)")
    parser.add_argument('--connections', type=int, default=150)
    parser.add_argument('--requests-per-connection', type=int, default=4)
    parser.add_argument('--prefix', default='shop-web-', help='name prefix of the primaries')
    parser.add_argument('--primary-cores', type=int, default=2)
    parser.add_argument('--shadow-cores', type=int, default=1)
    parser.add_argument('--agent-overhead', type=float, default=0.10, help="the agent's CPU per replayed request")
    args = parser.parse_args()
    facts = json.load(open(args.network))
    content, f = replay(facts, args.connections, args.requests_per_connection)
    s = f['stats']
    win = s['window']
    print('lab-canary: real replay in namespaces: the client made {0} requests on {1} keep-alive connections to {2} '
          '({3}:{4}) in {5:.1f}s; the primary answered {6} (its server received {7})'.format(
              f['sent'], f['connections'], f['primary_name'], f['address'], f['canary']['port'], f['seconds'],
              f['answered'], f['primary']))
    print('lab-canary: port_mirror {0} rate {1} sampling {2} (effective {3:.3f}) into {4}: its replay agent saw {5} '
          'flows and replayed {6} requests of {7} flows ({8} partial, {9} reassembly gaps, errors {10}); the '
          "shadow's own server on 127.0.0.1:{11} received {12}; replay latency p50 {13}, p95 {14}".format(
              f['spec']['mode'], f['spec'].get('rate'), f['spec'].get('sampling', '-'), f['effective_rate'],
              f['shadow_name'], s['flows_seen'], s['requests_replayed'], s['flows_replayed'], s['flows_partial'],
              s['reassembly_gaps'], s['errors'] or 'none', f['canary']['target_port'], f['shadow'],
              _ms(win['latency_p50_seconds']), _ms(win['latency_p95_seconds'])))
    ok = f['answered'] == f['sent'] == f['primary'] and s['requests_replayed'] > 0 and \
        s['requests_replayed'] == f['shadow'] and s['flows_partial'] == 0 and not s['errors']

    lab = _script('lab-inject-load.py')
    state = lab.call('GET', 'state')
    prims = [vm for vm in state['vms'] if str(vm.get('name', '')).startswith(args.prefix)
             and str(vm['name'])[len(args.prefix):].isdigit()]
    shadow = next((vm for vm in state['vms'] if vm.get('name') == f['shadow_name']), None)
    if not prims or shadow is None:
        raise SystemExit('lab: no primaries {0}N or no shadow {1} in the simulator'.format(args.prefix,
                                                                                           f['shadow_name']))
    path = f['canary']['stats_path']
    lab.call('POST', 'guest_file', {'vmid': shadow['vmid'], 'path': path, 'content': content})
    print("lab-canary: the agent's own stats.json ({0} bytes, written {1:.1f}s ago) is now {2} in {3} (vmid {4}): "
          'the reconcile reads it through the guest agent'.format(len(content), time.time() - s['time'], path,
                                                                  f['shadow_name'], shadow['vmid']))
    # The simulator has no real CPU: the shadow's is modelled from the primaries' load as lab-inject-load.py's
    # defaults give it (the same series for each primary).
    rate = f['spec'].get('rate', 1.0) if f['spec']['mode'] == 'sampled' else 1.0
    now = int(time.time()) // 60 * 60
    primary = [p['cpu'] for p in lab.series(now, 0.25, 0.65, 60, 1440)]
    ratio = rate * len(prims) * args.primary_cores / float(args.shadow_cores)
    points = []
    for i, u in enumerate(primary):
        cpu = min(1.0, 0.02 + u * ratio * (1 + args.agent_overhead))
        points.append({'time': now - (len(primary) - 1 - i) * 60, 'cpu': round(cpu, 4), 'maxcpu': args.shadow_cores,
                       'mem': 300 * 1048576, 'maxmem': 512 * 1048576, 'netin': 1.0e5, 'netout': 1.0e5})
    lab.call('POST', 'rrd', {'vmid': shadow['vmid'], 'points': points})
    lab.call('POST', 'stats', {'vmid': shadow['vmid'], 'stats': {'cpu': points[-1]['cpu']}})
    print('lab-canary: {0} replays {1:.0%} of the flows of {2} primaries on {3} core(s): CPU {4:.0%} now (modelled; '
          '= {5:.0%} of a primary, the primaries at {6:.0%}); namespaces removed (the replay step took {8:.1f}s); {7}'.format(
              f['shadow_name'], rate, len(prims), args.shadow_cores, points[-1]['cpu'],
              points[-1]['cpu'] * args.shadow_cores / args.primary_cores / (rate * len(prims)), primary[-1],
              'OK' if ok else 'FAILED', f['total_seconds']))
    return 0 if ok else 1


def _ms(seconds):
    return 'n/a' if seconds is None else '{0:.1f} ms'.format(1000.0 * seconds)


if __name__ == '__main__':
    sys.exit(main())

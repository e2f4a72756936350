# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replay agent with real packets in the namespace lab.

Topology (as tests/integration/test_port_mirror.py): client c1 and primary VM 100 on vmbr0; shadow VM 900 on the
isolated vmbr1 with the primary's own address. port_mirror copies tap100i0 to tap900i0 (both directions). The
primary runs a recording HTTP server on 10.0.0.10:80; the shadow runs the same server on 127.0.0.1:8080 and the
replay agent (the system python, stdlib only) on its eth0. Both servers write what they answered; the shadow's
must be the primary's, flow by flow, in order.
"""
import json
import os
import random
import socket
import struct
import threading
import time

import pytest
from scipy.stats import binom

from lab.modrun import run_module
from lab.netns import in_netns, netlab  # noqa: F401  # pylint: disable=unused-import
from lab.replay_lab import (http_request, per_flow, read_records, read_stats, rss_kib, segments, session, start_agent,
                            start_server, tcp_frame, wait_for)

from ansible_collections.shadownet.proxmox.plugins.modules import port_mirror

PRIMARY, CLIENT, PORT, TARGET = '10.0.0.10', '10.0.0.2', 80, 8080


def build(lab):
    lab.bridge('vmbr0')
    lab.bridge('vmbr1')
    primary = lab.vm(100, [('vmbr0', PRIMARY + '/24')])
    shadow = lab.vm(900, [('vmbr1', PRIMARY + '/24')])
    client = lab.client('c1', 'vmbr0', CLIENT + '/24')
    return primary, shadow, client


def mirror(lab, **extra):
    args = {'source_vmid': 100, 'target_vmid': 900, 'direction': 'both', 'backend': 'nft', 'netns': lab.node}
    args.update(extra)
    return run_module(port_mirror, args)


def agent_config(tmp_path, **kw):
    conf = {'interface': 'eth0', 'port': PORT, 'target_port': TARGET, 'stats_path': str(tmp_path / 'stats.json'),
            'stats_interval': 0.5, 'metrics_listen': '127.0.0.1:9187', 'concurrency': 8}
    conf.update(kw)
    return conf


def connect(ns, addr=PRIMARY, port=PORT):
    return in_netns(ns, socket.create_connection, (addr, port), 5)


def drive_http(client):
    """Keep-alive, non-keep-alive, pipelined and chunked requests from the client to the primary; returns the
    number of requests sent (every response checked)."""
    sent = 0
    for n in range(3):  # keep-alive, with chunked and Content-Length bodies, one large
        with connect(client) as s:
            reqs = [('GET', '/ka%d/a?q=1' % n, b'', False, False),
                    ('POST', '/ka%d/b' % n, b'form=%d' % n, False, False),
                    ('PUT', '/ka%d/c' % n, b'chunked body %d ' % n * 50, True, False),
                    ('POST', '/ka%d/d' % n, bytes(random.Random(n).randrange(256) for _i in range(20000)), False, False),
                    ('DELETE', '/ka%d/e' % n, b'', False, True)]
            assert session(s, reqs) == [200] * 5
            sent += 5
    for n in range(6):  # one request per connection
        with connect(client) as s:
            assert session(s, [('GET', '/close/%d' % n, b'', False, True)]) == [200]
            sent += 1
    for n in range(2):  # pipelined: all requests in one write, then the responses
        with connect(client) as s:
            reqs = [('GET', '/pipe%d/%d' % (n, i), b'', False, False) for i in range(4)]
            reqs.append(('POST', '/pipe%d/last' % n, b'p' * 3000, True, True))
            assert session(s, reqs, pipelined=True) == [200] * 5
            sent += 5
    return sent


@pytest.mark.netns
def test_full_mirror_replays_exactly_the_primary_requests_and_sends_nothing_outside(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    mirror(netlab)
    start_server(netlab, primary.ns, PRIMARY, PORT, tmp_path / 'primary.jsonl')
    start_server(netlab, shadow.ns, '127.0.0.1', TARGET, tmp_path / 'shadow.jsonl')
    shadow_mac = shadow.nics[0].mac
    # Every frame the shadow sends on its mirror NIC, and every frame from the shadow's MAC on the primary network.
    leaving = netlab.capture(shadow.ns, 'eth0', match=lambda f: f.outgoing and f.ethertype != 0x0806, keep=5)
    on_primary_net = netlab.capture(netlab.node, 'tap100i0', match=lambda f: f.src_mac == shadow_mac)
    on_client = netlab.capture(client, 'eth0', match=lambda f: f.src_mac == shadow_mac)
    proc = start_agent(netlab, shadow.ns, agent_config(tmp_path), tmp_path / 'agent.json')
    leaving_before = netlab.link(shadow.ns, 'eth0')['stats64']['tx']['packets']

    sent = drive_http(client)
    primary_seen = wait_for(lambda: len(read_records(tmp_path / 'primary.jsonl')) == sent and read_records(tmp_path / 'primary.jsonl'))
    shadow_seen = wait_for(lambda: len(read_records(tmp_path / 'shadow.jsonl')) >= sent and read_records(tmp_path / 'shadow.jsonl'))
    assert len(primary_seen) == sent and len(shadow_seen) == sent, (len(primary_seen), len(shadow_seen or []))
    # The same requests (method, path, body), flow by flow, in each flow's order.
    assert per_flow(shadow_seen) == per_flow(primary_seen)
    assert all(r['peer'].startswith('127.0.0.1:') for r in shadow_seen)
    stats = wait_for(lambda: read_stats(tmp_path / 'stats.json')['requests_replayed'] == sent
                     and read_stats(tmp_path / 'stats.json'), timeout=5)
    assert stats and stats['flows_seen'] == stats['flows_replayed'] == 11 and stats['flows_partial'] == 0
    assert stats['errors'] == {} and stats['reassembly_gaps'] == 0
    assert stats['latency_seconds']['count'] == sent and stats['window']['latency_p95_seconds'] > 0
    metrics = in_netns(shadow.ns, _get, '127.0.0.1', 9187, '/metrics')
    assert 'shadownet_replay_requests_replayed_total %d' % sent in metrics
    assert 'shadownet_replay_latency_seconds_count %d' % sent in metrics

    # Nothing the agent did left the shadow's mirror NIC, nothing reached the primary network.
    assert leaving.settle(0.3) == 0, leaving.frames       # the frames themselves, should one ever leave
    assert on_primary_net.value() == 0 and on_client.value() == 0
    tx = netlab.link(shadow.ns, 'eth0')['stats64']['tx']['packets'] - leaving_before
    assert tx <= 2, 'only ARP replies of the shadow kernel may leave eth0, got %d frames' % tx
    # The agent's promiscuous membership goes with it: eth0 leaves promiscuous mode when it stops.
    assert _promiscuity(netlab, shadow.ns) == 1
    netlab.stop(proc)
    assert _promiscuity(netlab, shadow.ns) == 0
    final = read_stats(tmp_path / 'stats.json')
    assert final['requests_replayed'] == sent


def _promiscuity(lab, ns):
    return json.loads(lab.run(ns, ['ip', '-d', '-j', 'link', 'show', 'dev', 'eth0']).stdout)[0]['promiscuity']


def _get(host, port, path):
    with socket.create_connection((host, port), 5) as s:
        s.sendall(('GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' % path).encode())
        data = b''
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data.decode()
            data += chunk


def _inject(lab, frames, dev='tap900i0', pace=0):
    """Write crafted frames onto the shadow's mirror NIC from the node (as the mirror would)."""
    def make():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        s.bind((dev, 0))
        return s
    sock = in_netns(lab.node, make)
    try:
        for i, frame in enumerate(frames):
            while True:
                try:
                    sock.send(frame)
                    break
                except OSError:
                    time.sleep(0.001)
            if pace and i % pace == 0:
                time.sleep(0.002)
    finally:
        sock.close()


def _hostile(rng):
    src = '10.0.0.66'
    big_header = b'GET /h HTTP/1.1\r\nX-Big: ' + b'a' * 400000
    endless = b'POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n' + (b'1000\r\n' + b'z' * 4096 + b'\r\n') * 800
    for n in range(40):
        garbage = b''.join(bytes(rng.randrange(256) for _i in range(1000)) + b'\r\n\r\n' for _j in range(30))
        yield from segments(src, 10000 + n, PRIMARY, PORT, garbage, isn=n)
    for n in range(20):
        yield from segments(src, 11000 + n, PRIMARY, PORT, big_header, isn=n << 20, fin=n % 2 == 0)
    for n in range(5):
        yield from segments(src, 12000 + n, PRIMARY, PORT, endless, isn=n << 24, fin=False)
    for n in range(20):  # truncated requests, closed
        yield from segments(src, 13000 + n, PRIMARY, PORT, http_request('POST', '/t', b'x' * 5000)[:3000])
    for n in range(6000):  # many flows, each with an unfinished request (more than max_flows)
        yield tcp_frame(src, 1024 + n % 60000, '10.0.0.%d' % (20 + n // 60000), PORT, 7, 'S')
        yield tcp_frame(src, 1024 + n % 60000, '10.0.0.%d' % (20 + n // 60000), PORT, 8, 'PA', b'GET /slow HTTP/1.1\r\nX: y\r\n')
    for n in range(20):  # data far ahead of a hole that never fills
        yield tcp_frame(src, 14000 + n, PRIMARY, PORT, 0, 'S')
        for k in range(100):
            yield tcp_frame(src, 14000 + n, PRIMARY, PORT, 10 ** 6 + k * 1400, 'PA', b'o' * 1400)


def _stats_once(tmp_path, ready):
    """The agent's stats once ``ready(stats)`` holds, else None (the file is rewritten while it runs)."""
    stats = read_stats(tmp_path / 'stats.json')
    return stats if ready(stats) else None


@pytest.mark.netns
@pytest.mark.slow
def test_hostile_streams_cost_bounded_memory_and_other_flows_still_replay(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    mirror(netlab, direction='ingress')
    start_server(netlab, primary.ns, PRIMARY, PORT, tmp_path / 'primary.jsonl')
    start_server(netlab, shadow.ns, '127.0.0.1', TARGET, tmp_path / 'shadow.jsonl')
    bound = 8 << 20
    conf = agent_config(tmp_path, total_buffer_bytes=bound, flow_buffer_bytes=256 << 10, max_header_bytes=16384,
                        max_body_bytes=128 << 10, max_flows=4096, idle_timeout=30.0, gap_timeout=0.5)
    proc = start_agent(netlab, shadow.ns, conf, tmp_path / 'agent.json')
    time.sleep(0.5)
    base = rss_kib(proc.pid)
    peak = [base]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(proc.pid))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    hostile = threading.Thread(target=_inject, args=(netlab, list(_hostile(random.Random(3)))), kwargs={'pace': 200})
    hostile.start()
    sent = 0
    try:
        for n in range(10):  # real requests through the primary while the hostile streams arrive
            with connect(client) as s:
                assert session(s, [('POST', '/ok%d/%d' % (n, i), b'v%d' % i, i == 1, False) for i in range(3)]) == [200] * 3
                sent += 3
            time.sleep(0.2)
        hostile.join()
        with connect(client) as s:
            assert session(s, [('GET', '/after', b'', False, True)]) == [200]
            sent += 1
        want = per_flow(read_records(tmp_path / 'primary.jsonl'))
        assert sum(len(f) for f in want) == sent
        got = wait_for(lambda: len(read_records(tmp_path / 'shadow.jsonl')) >= sent, timeout=20)
        shadow_flows = per_flow([r for r in read_records(tmp_path / 'shadow.jsonl') if r['path'].startswith(('/ok', '/after'))])
        assert got and shadow_flows == want
    finally:
        stop.set()
        sampler.join()
    assert proc.poll() is None, 'the agent stopped'
    # the holes count once their gap_timeout has passed, after the flows are seen: wait until the counts settle
    stats = wait_for(lambda: _stats_once(tmp_path, lambda st: st['flows_seen'] > 6000 and st['reassembly_gaps'] >= 20))
    stats = stats or read_stats(tmp_path / 'stats.json')
    errors = stats['errors']
    assert errors.get('flow_evicted', 0) > 1000 and errors.get('header_too_large', 0) >= 20
    assert errors.get('body_too_large', 0) >= 5 and errors.get('bad_request_line', 0) + errors.get('bad_header', 0) >= 40
    assert errors.get('truncated_request', 0) >= 10 and stats['reassembly_gaps'] >= 20
    grown = (peak[0] - base) * 1024
    print('agent RSS: %d KiB at start, peak %d KiB (+%.1f MiB, buffer bound %.0f MiB)' % (base, peak[0], grown / 2 ** 20, bound / 2 ** 20))
    # Buffers are bounded by total_buffer_bytes; the flow table (4096 flows) and parser objects add a few MiB.
    assert grown < bound + (16 << 20), 'the agent grew by %.1f MiB' % (grown / 2 ** 20)


@pytest.mark.netns
@pytest.mark.slow
def test_flow_sampling_replays_a_binomial_number_of_whole_flows(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    res = mirror(netlab, mode='sampled', rate=0.3, sampling='flow')
    rate = res['spec']['effective_rate']
    start_server(netlab, primary.ns, PRIMARY, PORT, tmp_path / 'primary.jsonl')
    start_server(netlab, shadow.ns, '127.0.0.1', TARGET, tmp_path / 'shadow.jsonl')
    start_agent(netlab, shadow.ns, agent_config(tmp_path), tmp_path / 'agent.json')
    n = 300
    for i in range(n):  # each connection: two requests, the second one chunked, then close
        with connect(client) as s:
            assert session(s, [('GET', '/s%d/a' % i, b'', False, False), ('POST', '/s%d/b' % i, b'q' * (i % 700), True, True)]) == [200, 200]
    primary_flows = per_flow(wait_for(lambda: len(read_records(tmp_path / 'primary.jsonl')) == 2 * n
                                      and read_records(tmp_path / 'primary.jsonl')))
    assert len(primary_flows) == n
    stats = wait_for(lambda: _settled(tmp_path), timeout=15)
    shadow_flows = per_flow(read_records(tmp_path / 'shadow.jsonl'))
    lo, hi = binom.ppf(0.0005, n, rate), binom.ppf(0.9995, n, rate)
    assert lo <= len(shadow_flows) <= hi, '%d of %d flows replayed, 99.9%% interval [%d, %d]' % (len(shadow_flows), n, lo, hi)
    # Every replayed flow is one of the primary's, whole: both requests, in order; none joined midway.
    assert set(shadow_flows) <= set(primary_flows)
    assert stats['flows_partial'] == 0 and stats['reassembly_gaps'] == 0 and stats['errors'] == {}
    assert stats['flows_seen'] == stats['flows_replayed'] == len(shadow_flows)
    assert stats['requests_replayed'] == 2 * len(shadow_flows)


def _settled(tmp_path):
    """The stats once two consecutive reads agree (the agent has replayed everything it saw)."""
    first = read_stats(tmp_path / 'stats.json')
    time.sleep(1.2)
    second = read_stats(tmp_path / 'stats.json')
    keys = ('flows_seen', 'requests_replayed')
    return second if all(first[k] == second[k] for k in keys) and second['requests_replayed'] else None


@pytest.mark.netns
def test_a_flow_running_before_the_agent_is_joined_at_its_next_request(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    mirror(netlab)
    start_server(netlab, primary.ns, PRIMARY, PORT, tmp_path / 'primary.jsonl')
    start_server(netlab, shadow.ns, '127.0.0.1', TARGET, tmp_path / 'shadow.jsonl')
    with connect(client) as s:
        # Before the agent: a request with a large body, half of it sent, so the agent starts mid-request.
        assert session(s, [('GET', '/before', b'', False, False)]) == [200]
        body = b'b' * 40000
        head = http_request('POST', '/straddles', body)
        s.sendall(head[:20000])
        time.sleep(0.2)
        start_agent(netlab, shadow.ns, agent_config(tmp_path), tmp_path / 'agent.json')
        s.sendall(head[20000:])
        from lab.replay_lab import read_responses
        assert read_responses(s, ['POST']) == [200]
        assert session(s, [('GET', '/after/1', b'', False, False), ('POST', '/after/2', b'z' * 5000, True, True)]) == [200, 200]
    got = wait_for(lambda: len(read_records(tmp_path / 'shadow.jsonl')) >= 2 and read_records(tmp_path / 'shadow.jsonl'))
    time.sleep(0.5)
    got = read_records(tmp_path / 'shadow.jsonl')
    assert [(r['method'], r['path'], len(r['body'])) for r in got] == [('GET', '/after/1', 0), ('POST', '/after/2', 5000)]
    stats = wait_for(lambda: read_stats(tmp_path / 'stats.json')['requests_replayed'] == 2 and read_stats(tmp_path / 'stats.json'))
    assert stats and stats['flows_partial'] == 1 and stats['flows_seen'] == 1 and stats['errors'] == {}


@pytest.mark.netns
def test_tcp_mode_replays_each_connection_bytes(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    mirror(netlab)
    start_server(netlab, primary.ns, PRIMARY, 7000, tmp_path / 'primary.jsonl', kind='tcp')
    start_server(netlab, shadow.ns, '127.0.0.1', 7001, tmp_path / 'shadow.jsonl', kind='tcp')
    start_agent(netlab, shadow.ns, agent_config(tmp_path, mode='tcp', port=7000, target_port=7001), tmp_path / 'agent.json')
    rng = random.Random(5)
    for n in range(8):
        with connect(client, port=7000) as s:
            for _i in range(3):
                s.sendall(bytes(rng.randrange(256) for _j in range(rng.randrange(1, 9000))))
                s.recv(10)
            s.shutdown(socket.SHUT_WR)
            while s.recv(100):
                pass

    def conns(name):  # the connections that sent something (the start-up probe sent nothing)
        records = [r for r in read_records(tmp_path / name) if r['data']]
        return len(records) == 8 and records
    want, got = wait_for(lambda: conns('primary.jsonl')), wait_for(lambda: conns('shadow.jsonl'))
    assert want and got
    assert sorted(r['data'] for r in got) == sorted(r['data'] for r in want)
    stats = wait_for(lambda: read_stats(tmp_path / 'stats.json')['flows_replayed'] == 8 and read_stats(tmp_path / 'stats.json'))
    assert stats and stats['bytes_replayed'] == sum(len(r['data']) for r in want) and stats['errors'] == {}


@pytest.mark.netns
def test_udp_mode_resends_datagrams(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    mirror(netlab)
    start_server(netlab, primary.ns, PRIMARY, 5353, tmp_path / 'primary.jsonl', kind='udp')
    start_server(netlab, shadow.ns, '127.0.0.1', 5354, tmp_path / 'shadow.jsonl', kind='udp')
    start_agent(netlab, shadow.ns, agent_config(tmp_path, mode='udp', port=5353, target_port=5354), tmp_path / 'agent.json')
    socks = [in_netns(client, _udp_sock) for _i in range(4)]
    payloads = []
    for i in range(200):
        data = struct.pack('!I', i) + b'd' * (i % 300)
        socks[i % 4].sendto(data, (PRIMARY, 5353))
        payloads.append(data.decode('latin-1'))
        time.sleep(0.001)
    for s in socks:
        s.close()
    want = wait_for(lambda: len(read_records(tmp_path / 'primary.jsonl')) == 200 and read_records(tmp_path / 'primary.jsonl'))
    got = wait_for(lambda: len(read_records(tmp_path / 'shadow.jsonl')) == 200 and read_records(tmp_path / 'shadow.jsonl'))
    assert want and got and sorted(r['data'] for r in got) == sorted(payloads)
    # One socket per mirrored flow: the shadow sees 4 sources, each with its datagrams in order.
    assert len({r['peer'] for r in got}) == 4
    assert per_flow(got, fields=('data',)) == per_flow(want, fields=('data',))
    stats = wait_for(lambda: read_stats(tmp_path / 'stats.json')['requests_replayed'] == 200 and read_stats(tmp_path / 'stats.json'))
    assert stats and stats['flows_seen'] == 4


def _udp_sock():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((CLIENT, 0))
    return s


@pytest.mark.netns
def test_agent_refuses_a_missing_mirror_nic_with_the_field(netlab, tmp_path):
    _primary, shadow, _client = build(netlab)
    path = tmp_path / 'agent.json'
    with pytest.raises(RuntimeError) as err:
        start_agent(netlab, shadow.ns, agent_config(tmp_path, interface='eth7'), path)
    assert "configuration field 'interface': no network interface 'eth7'" in str(err.value)
    assert json.loads(path.read_text())['interface'] == 'eth7'
    assert os.path.exists(str(path) + '.log')

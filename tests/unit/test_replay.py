# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replay agent's pure parts: configuration, frames, TCP reassembly, HTTP parsing, counters; and the agent fed
hand-made frames, replaying into a recording HTTP server on 127.0.0.1."""
import json
import random
import socket
import threading
import time

import pytest

from lab.replay_lab import (BytesSocket, RecordingServer, TcpRecordingServer, http_request, per_flow, segments, tcp6_frame, tcp_frame, udp_frame,
                            wait_for)

from ansible_collections.shadownet.proxmox.plugins.module_utils import replay

CL, SV = '10.0.0.2', '10.0.0.10'


def conf(**kw):
    base = {'interface': 'eth1', 'port': 80, 'target_port': 8080}
    base.update(kw)
    return replay.load_config(base)


# --- configuration -------------------------------------------------------------------------------------------

def test_config_defaults_and_contract_paths():
    c = conf()
    assert c['mode'] == 'http' and c['target_host'] == '127.0.0.1' and c['methods'] == 'all'
    assert c['stats_path'] == '/run/shadownet-replay/stats.json' and c['metrics_listen'] == '127.0.0.1:9187'
    assert c['stats_interval'] == 5.0 and c['window_seconds'] == 60


@pytest.mark.parametrize('bad, words', [
    ({'mode': 'ftp'}, "field 'mode' must be one of http, tcp, udp (got 'ftp')"),
    ({'port': 0}, "field 'port' must be a port number 1-65535 (got 0)"),
    ({'port': '80'}, "field 'port' must be an integer (got '80')"),
    ({'target_port': None, 'x': 1}, "unknown configuration field 'x'"),
    ({'target_port': None}, "configuration field 'target_port' is required"),
    ({'interface': 'eth0; rm'}, "field 'interface' must be a network interface name"),
    ({'methods': 'get'}, "field 'methods' must be one of all, safe"),
    ({'concurrency': 0}, "field 'concurrency' must be an integer 1-1024"),
    ({'metrics_listen': 'nope'}, "field 'metrics_listen' must be '' (off) or host:port"),
    ({'stats_path': 'run/x.json'}, "field 'stats_path' must be '' (off) or an absolute path"),
    ({'addresses': ['10.0.0.300']}, "field 'addresses' must list IPv4/IPv6 addresses"),
    ({'max_body_bytes': 4 << 20}, "'max_header_bytes' + 'max_body_bytes' (4259840) must not exceed 'flow_buffer_bytes'"),
    ({'mode': 'tcp', 'methods': 'safe'}, "'methods' and 'host_rewrite' apply to mode http only"),
    ({'timeout': True}, "field 'timeout' must be a number (got True)"),
])
def test_bad_configuration_names_the_field_and_what_is_allowed(bad, words):
    base = {'interface': 'eth1', 'port': 80, 'target_port': 8080}
    base.update(bad)
    base = {k: v for k, v in base.items() if v is not None}
    with pytest.raises(replay.ConfigError) as err:
        replay.load_config(base)
    assert words in str(err.value)


def test_main_check_refuses_a_bad_file_with_the_field(tmp_path, capsys):
    path = tmp_path / 'replay.json'
    path.write_text(json.dumps({'interface': 'eth1', 'port': 80, 'target_port': 70000}))
    assert replay.main(['--config', str(path), '--check']) == 2
    assert "field 'target_port' must be a port number 1-65535 (got 70000)" in capsys.readouterr().err
    path.write_text(json.dumps({'interface': 'eth1', 'port': 80, 'target_port': 8080}))
    assert replay.main(['--config', str(path), '--check']) == 0
    path.write_text(json.dumps({'interface': 'nosuchnic0', 'port': 80, 'target_port': 8080, 'metrics_listen': ''}))
    assert replay.main(['--config', str(path)]) == 2
    assert "no network interface 'nosuchnic0'" in capsys.readouterr().err


# --- frames and reassembly -----------------------------------------------------------------------------------

def test_parse_frame_tcp_udp_and_padding():
    p = replay.parse_frame(tcp_frame(CL, 40000, SV, 80, 5, 'PA', b'hi'))
    assert (p.proto, p.sport, p.dport, p.seq, p.payload) == (6, 40000, 80, 5, b'hi')
    assert socket.inet_ntoa(p.src) == CL and p.flags & replay.ACK
    assert replay.parse_frame(tcp_frame(CL, 1, SV, 80, 5, 'S')).payload == b''  # padding to 60 bytes dropped
    u = replay.parse_frame(udp_frame(CL, 5353, SV, 53, b'q'))
    assert (u.proto, u.dport, u.payload) == (17, 53, b'q')
    assert replay.parse_frame(b'\xff' * 20) is None
    big = bytearray(tcp_frame(CL, 40000, SV, 80, 5, 'PA', b'g' * 1000))
    big[16:18] = b'\0\0'  # BIG TCP: a GSO packet over 64 KiB carries IP total length 0; the frame's length counts
    assert replay.parse_frame(bytes(big)).payload == b'g' * 1000


def test_parse_frame_ipv6_and_vlan():
    p = replay.parse_frame(tcp6_frame('fd00::2', 40000, 'fd00::10', 80, 9, 'PA', b'GET'))
    assert (p.proto, p.sport, p.dport, p.seq, p.payload) == (6, 40000, 80, 9, b'GET')
    assert p.dst == socket.inet_pton(socket.AF_INET6, 'fd00::10')
    plain = tcp_frame(CL, 1, SV, 80, 5, 'PA', b'vlan')
    tagged = plain[:12] + b'\x81\x00\x00\x64' + plain[12:]
    assert replay.parse_frame(tagged).payload == b'vlan'


def test_seq_diff_wraps():
    assert replay.seq_diff(5, 0xFFFFFFF0) == 21 and replay.seq_diff(0xFFFFFFF0, 5) == -21


def test_stream_in_order_out_of_order_retransmission_overlap_and_wrap():
    s = replay.TcpStream()
    isn = 0xFFFFFFF8  # the stream wraps 2**32 after 7 bytes
    assert s.feed(isn, replay.SYN, b'') == b''
    base = isn + 1
    assert s.feed(base + 10, replay.ACK, b'KLMNO') == b''  # out of order: waits
    assert s.ooo_bytes == 5
    assert s.feed(base, replay.ACK, b'ABCDE') == b'ABCDE'
    assert s.feed(base, replay.ACK, b'ABCDE') == b''  # a retransmission
    assert s.feed(base + 3, replay.ACK, b'DEFGHIJ') == b'FGHIJKLMNO'  # an overlap fills the hole
    assert s.ooo_bytes == 0 and s.nxt == (base + 15) & replay.SEQ_MASK
    assert s.feed(base + 15, replay.FIN | replay.ACK, b'P') == b'P' and s.finished


def test_stream_fin_waits_for_the_hole_and_rst_ends_it():
    s = replay.TcpStream()
    s.feed(100, replay.SYN, b'')
    s.feed(106, replay.FIN, b'xyz')
    assert not s.finished
    assert s.feed(101, 0, b'abcde') == b'abcdexyz' and s.finished
    r = replay.TcpStream()
    r.feed(1, replay.SYN, b'')
    r.feed(2, replay.RST, b'')
    assert r.finished


def test_stream_gap_is_skipped_and_counted():
    s = replay.TcpStream()
    s.feed(0, replay.SYN, b'')
    s.feed(1, 0, b'aa')
    s.feed(10, 0, b'bb', now=1.0)
    assert s.ooo_since == 1.0
    assert s.skip_gap(2.0) == b'bb' and s.gaps == 1 and s.nxt == 12


def test_stream_joined_midway_anchors_on_the_first_data():
    s = replay.TcpStream()
    assert s.feed(5000, replay.ACK, b'') == b'' and s.nxt is None
    assert s.feed(5000, replay.ACK, b'GET') == b'GET' and not s.syn_seen


# --- HTTP ----------------------------------------------------------------------------------------------------

def test_parser_content_length_chunked_pipelined_split_anywhere():
    stream = (http_request('GET', '/a') + http_request('POST', '/b', b'x' * 3000)
              + http_request('PUT', '/c', b'hello world, chunked', chunked=True) + http_request('GET', '/d', close=True))
    for cut in (1, 7, 100, len(stream)):
        p = replay.HttpRequestParser()
        got = []
        for i in range(0, len(stream), cut):
            got += p.feed(stream[i:i + cut])
        assert [(r.method, r.target) for r in got] == [(b'GET', b'/a'), (b'POST', b'/b'), (b'PUT', b'/c'), (b'GET', b'/d')]
        assert b''.join(r.raw for r in got) == stream and len(p) == 0 and not p.errors
        assert [r.keep_alive for r in got] == [True, True, True, False]


def test_parser_resyncs_after_garbage_and_joins_midway():
    p = replay.HttpRequestParser(resync=True)
    tail = b'dy of an earlier request\r\nmore\r\n' + http_request('GET', '/next')
    assert [r.target for r in p.feed(tail)] == [b'/next']
    q = replay.HttpRequestParser()
    got = q.feed(b'\x16\x03\x01 garbage that is not HTTP\r\n\r\n' + http_request('GET', '/ok'))
    assert [r.target for r in got] == [b'/ok'] and q.errors == ['bad_request_line']


def test_parser_joined_mid_body_finds_a_request_at_the_next_segment():
    p = replay.HttpRequestParser(resync=True)
    for _i in range(3):
        assert p.feed(b'b' * 1400) == []  # the rest of a body, no line end
    assert [r.target for r in p.feed(http_request('GET', '/next'))] == [b'/next']


def test_parser_chunked_trailers_count_against_max_header():
    """Trailer lines after the last chunk, each short, were buffered without limit until an empty line came."""
    p = replay.HttpRequestParser(max_header=2048, max_body=1000)
    head = b'POST /t HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n'
    got = []
    for i in range(100):                                   # 100 trailer lines of 40 bytes: 4000 > 2048
        got += p.feed(head if i == 0 else b'X-Trailer-%02d: ' % i + b'v' * 24 + b'\r\n')
    assert got == [] and p.errors == ['header_too_large'] and len(p) < 2048 + 100
    got = p.feed(b'\r\n' + http_request('GET', '/after'))
    assert [r.target for r in got] == [b'/after']
    ok = replay.HttpRequestParser(max_header=2048)
    assert [r.target for r in ok.feed(head + b'X-Checksum: 1\r\n\r\n')] == [b'/t'] and not ok.errors


def test_a_status_line_needs_a_three_digit_status():
    for line in (b'HTTP/1.1 20 OK\r\n\r\n', b'HTTP/1.1 000 Zero\r\n\r\n', b'HTTP/1.1 2000 OK\r\n\r\n'):
        with pytest.raises(replay.ResponseError, match='not a status line'):
            replay.read_response(replay._Reader(BytesSocket(line)), b'GET')
    assert replay.read_response(replay._Reader(BytesSocket(b'HTTP/1.1 204 No Content\r\n\r\n')), b'GET') == (204, True)


def test_parser_limits_cost_an_error_not_memory():
    p = replay.HttpRequestParser(max_header=2048, max_body=1000)
    got = p.feed(b'POST /x HTTP/1.1\r\nX: ' + b'a' * 5000)
    assert got == [] and p.errors == ['header_too_large'] and len(p) < 100
    p.errors.clear()
    got = p.feed(b'\r\n\r\n' + http_request('POST', '/big', b'y' * 2000) + http_request('GET', '/after'))
    assert [r.target for r in got] == [b'/after'] and p.errors == ['body_too_large']
    endless = replay.HttpRequestParser(max_body=10000)
    endless.feed(b'POST /e HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n')
    for _i in range(100):
        endless.feed(b'400\r\n' + b'z' * 1024 + b'\r\n')
        assert len(endless) < 20000
    assert endless.errors == ['body_too_large']


def test_parser_rejects_ambiguous_framing_and_rewrites_host():
    p = replay.HttpRequestParser()
    p.feed(b'POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n')
    assert p.errors == ['ambiguous_length']
    h = replay.HttpRequestParser(host_rewrite=b'shadow:8080')
    (req,) = h.feed(http_request('POST', '/p', b'body'))
    assert b'\r\nHost: shadow:8080\r\n' in req.raw and b'Host: shop' not in req.raw and req.raw.endswith(b'\r\n\r\nbody')


def test_read_response_framings():
    a, b = socket.socketpair()
    b.sendall(b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc'
              b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n'
              b'HTTP/1.1 204 No Content\r\n\r\n'
              b'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n'
              b'HTTP/1.0 200 OK\r\n\r\nuntil close')
    b.shutdown(socket.SHUT_WR)
    r = replay._Reader(a)  # pylint: disable=protected-access
    assert replay.read_response(r, b'GET') == (200, True)
    assert replay.read_response(r, b'GET') == (200, True)
    assert replay.read_response(r, b'GET') == (204, True)
    assert replay.read_response(r, b'HEAD') == (200, True)
    assert replay.read_response(r, b'GET') == (200, False)
    a.close()
    b.close()


# --- counters ------------------------------------------------------------------------------------------------

def test_counters_snapshot_matches_the_contract_and_prometheus():
    now = [1000.0]
    c = replay.Counters('http', '127.0.0.1:8080', window_seconds=60, clock=lambda: now[0])
    for v in [0.002] * 50 + [0.02] * 45 + [0.3] * 5:
        c.observe(v)
    c.inc('requests_replayed', 100)
    c.error('timeout')
    doc = c.snapshot()
    assert set(doc) == {'version', 'time', 'started', 'mode', 'target', 'flows_seen', 'flows_replayed', 'flows_partial',
                        'requests_seen', 'requests_replayed', 'requests_skipped', 'bytes_replayed', 'reassembly_gaps',
                        'errors', 'latency_seconds', 'window_seconds', 'window', 'recent'}
    lat = doc['latency_seconds']
    assert lat['le'][-1] == '+Inf' and lat['counts'][-1] == lat['count'] == 100 and lat['counts'][0] == 0
    assert doc['window']['requests'] == 100 and doc['window']['errors'] == 1
    assert 0.001 <= doc['window']['latency_p50_seconds'] <= 0.0025
    assert 0.01 <= doc['window']['latency_p95_seconds'] <= 0.025
    now[0] += 61
    assert c.snapshot()['window'] == {'requests': 0, 'latency_p50_seconds': None, 'latency_p95_seconds': None, 'errors': 0}
    text = replay.prometheus_text(doc)
    assert 'shadownet_replay_requests_replayed_total 100' in text
    assert 'shadownet_replay_errors_total{kind="timeout"} 1' in text
    assert 'shadownet_replay_latency_seconds_bucket{le="+Inf"} 100' in text
    assert 'shadownet_replay_latency_seconds_count 100' in text


def test_write_stats_is_atomic(tmp_path):
    path = tmp_path / 'stats.json'
    replay.write_stats(str(path), {'version': 1})
    assert json.loads(path.read_text()) == {'version': 1} and [p.name for p in tmp_path.iterdir()] == ['stats.json']


# --- the agent fed frames ------------------------------------------------------------------------------------

@pytest.fixture
def agent_with(request):
    made = []

    def make(server_cls=RecordingServer, **kw):
        server = server_cls(('127.0.0.1', 0)).start()
        c = conf(target_port=server.server_address[1], stats_path='', metrics_listen='', concurrency=4, **kw)
        agent = replay.Agent(c)
        agent.start_side_threads()
        made.append((agent, server))
        return agent, server
    yield make
    for agent, server in made:
        agent.close()
        server.shutdown()
        server.server_close()


def feed(agent, frames):
    for f in frames:
        agent.handle_frame(f, 0.0)


def test_agent_replays_each_flow_in_order_whatever_the_segment_order(agent_with):
    agent, server = agent_with()
    rng = random.Random(7)
    want = []
    for n in range(20):
        reqs = [http_request('POST', '/f%d/%d' % (n, i), b'b%d' % i, chunked=i % 2 == 1) for i in range(5)]
        want.append(tuple(('POST', '/f%d/%d' % (n, i), 'b%d' % i) for i in range(5)))
        frames = segments(CL, 30000 + n, SV, 80, b''.join(reqs), isn=rng.randrange(1 << 32), mss=37)
        mid = frames[1:-1]
        rng.shuffle(mid)  # out of order, with a few duplicates
        feed(agent, [frames[0]] + mid + mid[:3] + [frames[-1]])
    feed(agent, [tcp_frame(SV, 80, CL, 30000, 1, 'PA', b'HTTP/1.1 200 OK\r\n\r\n')])  # the server's side: ignored
    assert wait_for(lambda: len(server.requests) >= 100 and agent.counters.snapshot()['requests_replayed'] == 100)
    assert per_flow(server.requests) == sorted(want)
    snap = agent.counters.snapshot()
    assert (snap['flows_seen'], snap['flows_replayed'], snap['requests_replayed'], snap['flows_partial']) == (20, 20, 100, 0)
    assert snap['errors'] == {} and agent.flows == {} and agent.held == 0


def test_agent_joins_running_flows_at_a_request_line_and_counts_them_partial(agent_with):
    agent, server = agent_with()
    data = b'tail of a body\r\n' + http_request('GET', '/seen')
    feed(agent, [tcp_frame(CL, 30001, SV, 80, 777, 'PA', data), tcp_frame(CL, 30001, SV, 80, 777 + len(data), 'FA')])
    assert wait_for(lambda: len(server.requests) == 1)
    assert server.requests[0]['path'] == '/seen'
    assert agent.counters.snapshot()['flows_partial'] == 1


def test_agent_gap_timeout_resyncs_and_methods_safe_skips_writes(agent_with):
    agent, server = agent_with(methods='safe', gap_timeout=0.5)
    one, two, three = http_request('GET', '/1'), http_request('POST', '/2', b'x'), http_request('GET', '/3')
    base = 5001
    feed(agent, [tcp_frame(CL, 30002, SV, 80, 5000, 'S'), tcp_frame(CL, 30002, SV, 80, base, 'PA', one),
                 # /2 lost on the way: /3 waits, then the hole is given up on
                 tcp_frame(CL, 30002, SV, 80, base + len(one) + len(two), 'PA', three)])
    agent.sweep(1.0)
    assert wait_for(lambda: len(server.requests) == 2)
    assert [r['path'] for r in server.requests] == ['/1', '/3']
    snap = agent.counters.snapshot()
    assert snap['reassembly_gaps'] == 1 and snap['requests_skipped'] == 0
    feed(agent, [tcp_frame(CL, 30003, SV, 80, 1, 'S'), tcp_frame(CL, 30003, SV, 80, 2, 'PA', two + one)])
    assert wait_for(lambda: len(server.requests) == 3)
    assert agent.counters.snapshot()['requests_skipped'] == 1


def test_agent_replays_again_when_the_target_closed_a_kept_alive_connection():
    """The target closes idle keep-alive connections: the next request of the flow goes on a new one, not lost."""
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    got = []

    def serve():  # answers one request per connection, then closes without saying so
        for _i in range(2):
            conn, _addr = listener.accept()
            got.append(conn.recv(65536).split(b' ')[1])
            conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n')
            conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    agent = replay.Agent(conf(target_port=listener.getsockname()[1], stats_path='', metrics_listen='', concurrency=1))
    agent.start_side_threads()
    try:
        one, two = http_request('GET', '/one'), http_request('GET', '/two')
        feed(agent, [tcp_frame(CL, 30020, SV, 80, 1, 'S'), tcp_frame(CL, 30020, SV, 80, 2, 'PA', one)])
        assert wait_for(lambda: agent.counters.snapshot()['requests_replayed'] == 1)
        time.sleep(0.2)  # the target's close arrives first
        feed(agent, [tcp_frame(CL, 30020, SV, 80, 2 + len(one), 'PA', two)])
        assert wait_for(lambda: agent.counters.snapshot()['requests_replayed'] == 2)
        assert got == [b'/one', b'/two'] and agent.counters.snapshot()['errors'] == {}
    finally:
        agent.close()
        listener.close()


def test_agent_bounds_flows_and_memory(agent_with):
    agent, _server = agent_with(max_flows=50, total_buffer_bytes=1 << 20, flow_buffer_bytes=1 << 18,
                                max_body_bytes=1 << 17, max_header_bytes=8192)
    for n in range(200):  # 200 flows each holding an unfinished request
        feed(agent, [tcp_frame(CL, 20000 + n, SV, 80, 1, 'S'), tcp_frame(CL, 20000 + n, SV, 80, 2, 'PA', b'GET /x HTTP/1.1\r\n')])
    assert len(agent.flows) == 50 and agent.counters.snapshot()['errors']['flow_evicted'] == 150
    for n in range(30):  # out-of-order data far ahead: held up to the flow's cap, then a gap
        for k in range(40):
            feed(agent, [tcp_frame(CL, 20199 - n, SV, 80, 100000 + k * 1400, 'PA', b'q' * 1400)])
        assert agent.held <= (1 << 20)
    assert agent.counters.snapshot()['errors'].get('memory_cap', 0) > 0
    assert sum(f.held for f in agent.flows.values()) == agent.held


def test_agent_tcp_and_udp_modes(agent_with):
    agent, server = agent_with(server_cls=TcpRecordingServer, mode='tcp')
    feed(agent, segments(CL, 30010, SV, 80, b'\x00\x01binary' * 500, mss=100))
    feed(agent, [tcp_frame(CL, 30011, SV, 80, 9, 'PA', b'joined midway')])  # partial: not replayed in tcp mode
    assert wait_for(lambda: len(server.requests) == 1 and agent.counters.snapshot()['bytes_replayed'] == 4000)
    assert server.requests[0]['data'] == ('\x00\x01binary' * 500)
    snap = agent.counters.snapshot()
    assert snap['flows_seen'] == 2 and snap['flows_partial'] == 1 and snap['flows_replayed'] == 1
    assert snap['bytes_replayed'] == 4000

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(('127.0.0.1', 0))
    sink.settimeout(5)
    uconf = conf(mode='udp', port=53, target_port=sink.getsockname()[1], stats_path='', metrics_listen='', concurrency=2)
    uagent = replay.Agent(uconf)
    uagent.start_side_threads()
    try:
        feed(uagent, [udp_frame(CL, 5000 + i % 3, SV, 53, b'd%d' % i) for i in range(9)] + [udp_frame(CL, 1, SV, 54, b'no')])
        got = sorted(sink.recvfrom(100)[0] for _i in range(9))
        assert got == sorted(b'd%d' % i for i in range(9))
        assert wait_for(lambda: uagent.counters.snapshot()['requests_replayed'] == 9)
        assert uagent.counters.snapshot()['flows_seen'] == 3
    finally:
        uagent.close()
        sink.close()

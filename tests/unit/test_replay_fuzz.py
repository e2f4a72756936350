# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The replay agent's parsers on bytes nobody meant to send: whatever arrives on the mirror NIC or from the target,
the agent keeps running and its buffers stay bounded (a fixed seed; frames, segments and streams damaged at random).

- ``parse_frame``: random bytes and real frames with bytes changed or cut short give a Packet or None.
- ``TcpStream``: segments at random sequence numbers with any flags never raise, and the out-of-order bytes it
  counts are the bytes it holds.
- ``HttpRequestParser``: pipelined requests with bytes changed, split anywhere, followed by garbage, never raise,
  return only whole requests, and hold no more than about one request's limits of buffer.
- ``read_response``: a damaged response raises only what the replay loop handles (ResponseError, ValueError,
  EOFError), never anything that would end the replay thread.
"""
import random

from lab.replay_lab import BytesSocket, tcp6_frame, tcp_frame, udp_frame

from ansible_collections.shadownet.proxmox.plugins.module_utils import replay

REQUESTS = [b'GET / HTTP/1.1\r\nHost: a\r\n\r\n',
            b'POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello',
            b'POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
            b'HEAD / HTTP/1.0\r\n\r\n']
RESPONSES = [b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok',
             b'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n',
             b'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n',
             b'HTTP/1.0 200 OK\r\n\r\nbody to the end']


def _damage(rnd, data, most=4):
    data = bytearray(data)
    for dummy in range(rnd.randint(0, most)):
        data[rnd.randrange(len(data))] = rnd.randrange(256)
    if rnd.random() < 0.3:
        del data[rnd.randrange(len(data) + 1):]
    return bytes(data)


def _frame(rnd):
    payload = rnd.choice(REQUESTS)
    kind = rnd.randrange(3)
    if kind == 0:
        frame = tcp_frame('10.0.0.1', 40000, '10.0.0.2', 80, rnd.randrange(1 << 32), 'PA', payload)
    elif kind == 1:
        frame = tcp6_frame('fd00::1', 40000, 'fd00::2', 80, rnd.randrange(1 << 32), 'PA', payload)
    else:
        frame = udp_frame('10.0.0.1', 5353, '10.0.0.2', 53, payload)
    if rnd.random() < 0.3:                                   # a VLAN tag
        frame = frame[:12] + b'\x81\x00\x00\x05' + frame[12:]
    return frame


def test_any_frame_parses_to_a_packet_or_none():
    rnd = random.Random(1)
    packets = 0
    for i in range(20000):
        data = _damage(rnd, _frame(rnd)) if i % 2 else bytes(rnd.randrange(256) for dummy in range(rnd.randint(0, 90)))
        packet = replay.parse_frame(data)
        assert packet is None or isinstance(packet, replay.Packet)
        packets += packet is not None
    assert packets > 3000          # damaged frames that still parse were parsed, not all refused


def test_any_segment_sequence_keeps_the_stream_consistent():
    rnd = random.Random(2)
    flags = (0, replay.SYN, replay.FIN, replay.ACK, replay.RST, replay.SYN | replay.ACK, replay.FIN | replay.ACK)
    delivered = 0
    for dummy in range(500):
        stream, base = replay.TcpStream(), rnd.randrange(1 << 32)
        for step in range(60):
            seq = (base + rnd.randint(-3000, 3000)) & replay.SEQ_MASK
            out = stream.feed(seq, rnd.choice(flags), bytes(rnd.randint(0, 1400)), now=step)
            delivered += len(out)
            if rnd.random() < 0.05:
                delivered += len(stream.skip_gap(now=step))
            assert stream.ooo_bytes == sum(len(v) for v in stream.ooo.values())
            assert stream.nxt is None or 0 <= stream.nxt <= replay.SEQ_MASK
    assert delivered > 0


def test_any_request_stream_parses_without_raising_and_stays_bounded():
    rnd = random.Random(3)
    max_header, max_body = 4096, 8192
    whole = biggest = 0
    for dummy in range(1500):
        parser = replay.HttpRequestParser(max_header=max_header, max_body=max_body,
                                          host_rewrite=rnd.choice((b'', b'shadow')), resync=rnd.random() < 0.5)
        stream = _damage(rnd, b''.join(rnd.choice(REQUESTS) for dummy2 in range(rnd.randint(1, 6))), most=6)
        if rnd.random() < 0.2:
            stream += bytes(rnd.randrange(256) for dummy2 in range(rnd.randint(0, 20000)))
        pos = 0
        while pos < len(stream):
            size = rnd.randint(1, 1500)
            for request in parser.feed(stream[pos:pos + size]):
                assert isinstance(request, replay.Request) and request.raw.startswith(request.method)
                whole += 1
            pos += size
            biggest = max(biggest, len(parser))
        assert all(isinstance(kind, str) and kind for kind in parser.errors)
    assert whole > 1000
    # garbage is discarded, not buffered: a request's head, its body and one line at the most (the trailers of a
    # chunked body count against max_header as its head does; they were not limited in all)
    assert biggest <= max_header + max_body + replay.MAX_LINE


def test_a_damaged_response_raises_only_what_the_replay_loop_handles():
    rnd = random.Random(4)
    answered = 0
    for dummy in range(5000):
        reader = replay._Reader(BytesSocket(_damage(rnd, rnd.choice(RESPONSES))))
        try:
            status, keep_alive = replay.read_response(reader, rnd.choice((b'GET', b'HEAD')))
        except (replay.ResponseError, ValueError, EOFError):
            continue
        assert 100 <= status <= 999 and keep_alive in (True, False)     # a status of "20" is not a response
        answered += 1
    assert answered > 1000

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shadow's replay agent: mirrored requests replayed into the shadow's own service.

Pure standard library on purpose: the ``shadow_replay`` role copies this same file into the shadow guest
(``/usr/local/lib/shadownet/shadownet_replay.py``) and runs it as a systemd service
(``python3 shadownet_replay.py --config /etc/shadownet/replay.json``).

What it does: it reads the shadow's mirror NIC with an ``AF_PACKET`` socket in promiscuous mode (a
packet-socket membership, so the NIC leaves promiscuous mode when the agent exits; the agent never sends on
that socket), keeps the packets addressed to the service port, reassembles each TCP flow's client-to-server
byte stream and replays it into the target (normally ``127.0.0.1:<target_port>`` in the shadow):

* ``http``: HTTP/1.1 requests (Content-Length and chunked bodies, keep-alive, pipelining), one upstream
  connection per mirrored flow, requests in the flow's order, each response read and discarded; the time from
  sending a request to the end of its response is the replay latency;
* ``tcp``: each flow's client bytes on a new connection (flows already running when the agent started are
  counted as partial and not replayed: a protocol it cannot parse cannot be joined mid-stream);
* ``udp``: datagrams re-sent from one socket per mirrored flow.

Reassembly: sequence numbers compare modulo 2**32; retransmissions and overlaps are trimmed to the bytes not
yet delivered; out-of-order segments wait (bounded) for the hole before them to fill; a hole that is still open
after ``gap_timeout`` seconds (the mirror or the capture lost a packet) or that would exceed the flow's buffer is
a *reassembly gap*: the stream continues after it, and in http mode the parser re-synchronises on the next
request line. A flow whose SYN was not seen (it was running when the agent started) is *partial*: in http mode
it is replayed from its next request line on.

Memory is bounded: ``flow_buffer_bytes`` per flow (out-of-order segments plus unparsed bytes), ``max_header_bytes``
and ``max_body_bytes`` per request, ``total_buffer_bytes`` for everything buffered or queued, ``max_flows`` flows
(the least recently active one is evicted), ``idle_timeout`` per flow. A stream that breaks a limit or does not
parse costs an error count and a re-synchronisation (or, in tcp mode, the rest of that flow), never the agent.

Counters: the JSON file ``stats_path`` (rewritten atomically every ``stats_interval`` seconds, the layout is
``snapshot()``'s) and the Prometheus text format on ``metrics_listen`` (``/metrics``). Next to the sliding
``window`` (the last ``window_seconds``), the file keeps ``recent``: the agent's own per-minute history, so that a
reconciler that keeps no store between runs can still judge a duration ("p95 above the threshold for 5 minutes")
from one read. It lists the last ``recent_minutes`` (60 to 1440) whole minutes since the agent started, aligned on
the unix minute, oldest first::

    "recent": [{"end": 1796558460, "requests": 812, "latency_p95_seconds": 0.049, "errors": 0}, ...]

``end`` is the minute's end (unix seconds), ``latency_p95_seconds`` is null for a minute without a replayed
request; a minute without traffic is listed with 0 requests, so a minute missing from the list means the agent
was not running. The list is bounded (about 90 bytes a minute) and is not on the Prometheus endpoint (Prometheus
keeps its own history of the histogram).

Pure parts, unit-tested without packets: :func:`load_config`, :func:`parse_frame`, :class:`TcpStream`,
:class:`HttpRequestParser`, :func:`read_response`, :class:`Counters`, :func:`prometheus_text`.
"""

import collections
import json
import os
import re
import select
import signal
import socket
import struct
import sys
import threading
import time

VERSION = 1
MODES = ('http', 'tcp', 'udp')
METHOD_SETS = ('all', 'safe')
SAFE_METHODS = frozenset((b'GET', b'HEAD', b'OPTIONS'))
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTERS = ('flows_seen', 'flows_replayed', 'flows_partial', 'requests_seen', 'requests_replayed',
            'requests_skipped', 'bytes_replayed', 'reassembly_gaps')
ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
SEQ_MASK = 0xFFFFFFFF
MAX_LINE = 8192
RECV_BYTES = 1 << 18  # a GRO/GSO packet seen on a virtual NIC may be far larger than the MTU

# name: (type, default, check(value) -> problem or None)
_IFNAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,14}$')
_HOST_RE = re.compile(r'^[A-Za-z0-9._:-]{1,253}$')


def _port(value):
    return None if 1 <= value <= 65535 else 'a port number 1-65535'


def _positive(limit):
    def check(value):
        return None if 0 < value <= limit else 'a number > 0 and <= %s' % limit
    return check


def _listen(value):
    if value == '':
        return None
    host, sep, port = value.rpartition(':')
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return "'' (off) or host:port, e.g. 127.0.0.1:9187"
    return None


CONFIG_FIELDS = {
    'interface': (str, None, lambda v: None if _IFNAME_RE.match(v) else 'a network interface name (the mirror NIC, e.g. eth1)'),
    'mode': (str, 'http', lambda v: None if v in MODES else 'one of ' + ', '.join(MODES)),
    'port': (int, None, _port),
    'addresses': (list, [], None),
    'target_host': (str, '127.0.0.1', lambda v: None if _HOST_RE.match(v) else 'an IP address or host name'),
    'target_port': (int, None, _port),
    'methods': (str, 'all', lambda v: None if v in METHOD_SETS else 'one of ' + ', '.join(METHOD_SETS)),
    'host_rewrite': (str, '', lambda v: None if v == '' or _HOST_RE.match(v) else "'' (keep) or a host[:port]"),
    'concurrency': (int, 16, lambda v: None if 1 <= v <= 1024 else 'an integer 1-1024'),
    'timeout': (float, 5.0, _positive(300)),
    'max_flows': (int, 16384, lambda v: None if 1 <= v <= 1000000 else 'an integer 1-1000000'),
    'flow_buffer_bytes': (int, 2 << 20, lambda v: None if 4096 <= v <= 1 << 30 else 'an integer 4096-1073741824'),
    'total_buffer_bytes': (int, 64 << 20, lambda v: None if 65536 <= v <= 1 << 34 else 'an integer 65536-17179869184'),
    'max_header_bytes': (int, 65536, lambda v: None if 1024 <= v <= 1 << 24 else 'an integer 1024-16777216'),
    'max_body_bytes': (int, 1 << 20, lambda v: None if 0 <= v <= 1 << 30 else 'an integer 0-1073741824'),
    'idle_timeout': (float, 120.0, _positive(86400)),
    'gap_timeout': (float, 1.0, _positive(600)),
    'stats_path': (str, '/run/shadownet-replay/stats.json', lambda v: None if v == '' or v.startswith('/') else "'' (off) or an absolute path"),
    'stats_interval': (float, 5.0, _positive(3600)),
    'metrics_listen': (str, '127.0.0.1:9187', _listen),
    'window_seconds': (int, 60, lambda v: None if 1 <= v <= 3600 else 'an integer 1-3600'),
    'recent_minutes': (int, 60, lambda v: None if 60 <= v <= 1440 else 'an integer 60-1440'),
}


class ConfigError(ValueError):
    """A configuration the agent refuses; the message names the field and what is allowed."""


def load_config(raw):
    """Validate a configuration dict; returns a new dict with every field (defaults filled in).

    Raises :class:`ConfigError` naming the first bad field and what it accepts."""
    if not isinstance(raw, dict):
        raise ConfigError('the configuration must be a JSON object (got %s)' % type(raw).__name__)
    unknown = sorted(set(raw) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError('unknown configuration field %r (known: %s)' % (unknown[0], ', '.join(sorted(CONFIG_FIELDS))))
    conf = {}
    for name, (kind, default, check) in CONFIG_FIELDS.items():
        if name not in raw or raw[name] is None:
            if default is None:
                raise ConfigError('configuration field %r is required' % name)
            conf[name] = list(default) if isinstance(default, list) else default
            continue
        value = raw[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigError('configuration field %r must be %s (got %r)' % (name, kind.__name__.replace('str', 'a string')
                                                                              .replace('int', 'an integer').replace('float', 'a number')
                                                                              .replace('list', 'a list'), value))
        problem = check(value) if check else None
        if problem:
            raise ConfigError('configuration field %r must be %s (got %r)' % (name, problem, value))
        conf[name] = value
    for addr in conf['addresses']:
        if not isinstance(addr, str) or not _is_ip(addr):
            raise ConfigError("configuration field 'addresses' must list IPv4/IPv6 addresses of the service (got %r)" % (addr,))
    conf['addresses'] = [socket.inet_pton(_family(a), a) for a in conf['addresses']]
    if conf['max_header_bytes'] + conf['max_body_bytes'] > conf['flow_buffer_bytes']:
        raise ConfigError("configuration fields 'max_header_bytes' + 'max_body_bytes' (%d) must not exceed 'flow_buffer_bytes' (%d):"
                          " a request within its limits must fit in its flow's buffer"
                          % (conf['max_header_bytes'] + conf['max_body_bytes'], conf['flow_buffer_bytes']))
    if conf['flow_buffer_bytes'] > conf['total_buffer_bytes']:
        raise ConfigError("configuration field 'flow_buffer_bytes' (%d) must not exceed 'total_buffer_bytes' (%d)"
                          % (conf['flow_buffer_bytes'], conf['total_buffer_bytes']))
    if conf['mode'] != 'http' and (raw.get('methods', 'all') != 'all' or raw.get('host_rewrite')):
        raise ConfigError("configuration fields 'methods' and 'host_rewrite' apply to mode http only (mode is %r)" % conf['mode'])
    return conf


def _family(addr):
    return socket.AF_INET6 if ':' in addr else socket.AF_INET


def _is_ip(addr):
    try:
        socket.inet_pton(_family(addr), addr)
    except (OSError, ValueError):
        return False
    return True


# --- packets -------------------------------------------------------------------------------------------------

Packet = collections.namedtuple('Packet', 'proto src sport dst dport seq flags payload')
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10


def parse_frame(data):
    """An Ethernet frame -> :class:`Packet` (TCP or UDP over IPv4/IPv6, one VLAN tag allowed), else None.

    Addresses are packed bytes; ``payload`` is trimmed to the IP length (Ethernet padding dropped). IPv4
    fragments and IPv6 extension headers are not reassembled (None)."""
    if len(data) < 34:
        return None
    etype = (data[12] << 8) | data[13]
    off = 14
    if etype in (0x8100, 0x88A8) and len(data) >= 18:
        etype = (data[16] << 8) | data[17]
        off = 18
    if etype == 0x0800:
        ihl = (data[off] & 0x0F) * 4
        if data[off] >> 4 != 4 or ihl < 20:
            return None
        total = (data[off + 2] << 8) | data[off + 3]
        frag = ((data[off + 6] << 8) | data[off + 7]) & 0x3FFF
        if frag:
            return None
        proto = data[off + 9]
        src, dst = bytes(data[off + 12:off + 16]), bytes(data[off + 16:off + 20])
        end = min(len(data), off + total) if total else len(data)  # 0: a BIG TCP (GSO > 64 KiB) packet
        l4 = off + ihl
    elif etype == 0x86DD:
        if len(data) < off + 40:
            return None
        proto = data[off + 6]
        plen = (data[off + 4] << 8) | data[off + 5]
        src, dst = bytes(data[off + 8:off + 24]), bytes(data[off + 24:off + 40])
        l4 = off + 40
        end = min(len(data), l4 + plen) if plen else len(data)  # 0: a jumbogram (BIG TCP)
    else:
        return None
    if proto == 6 and end >= l4 + 20:
        sport, dport, seq = struct.unpack_from('!HHI', data, l4)
        doff = (data[l4 + 12] >> 4) * 4
        if doff < 20 or l4 + doff > end:
            return None
        return Packet(6, src, sport, dst, dport, seq, data[l4 + 13], bytes(data[l4 + doff:end]))
    if proto == 17 and end >= l4 + 8:
        sport, dport = struct.unpack_from('!HH', data, l4)
        return Packet(17, src, sport, dst, dport, 0, 0, bytes(data[l4 + 8:end]))
    return None


def seq_diff(a, b):
    """a - b in TCP sequence space (modulo 2**32, signed)."""
    d = (a - b) & SEQ_MASK
    return d - (1 << 32) if d >= 1 << 31 else d


class TcpStream:
    """One direction of a TCP connection as an ordered byte stream.

    ``feed(seq, flags, payload)`` returns the bytes that became contiguous (possibly b''). ``nxt`` is the next
    expected sequence number (None until the first SYN or data segment anchors it). Out-of-order data waits in
    ``ooo`` (seq -> bytes, ``ooo_bytes`` in all); :meth:`skip_gap` gives up on the hole before it."""

    def __init__(self):
        self.nxt = None
        self.isn = None
        self.syn_seen = False
        self.ooo = {}
        self.ooo_bytes = 0
        self.ooo_since = None
        self.fin_seq = None
        self.reset = False
        self.gaps = 0

    @property
    def finished(self):
        return self.reset or (self.fin_seq is not None and self.nxt is not None and seq_diff(self.nxt, self.fin_seq) >= 0
                              and not self.ooo)

    def feed(self, seq, flags, payload, now=0.0):
        if flags & RST:
            self.reset = True
            return b''
        if flags & SYN:
            if self.nxt is None:
                self.isn, self.syn_seen, self.nxt = seq, True, (seq + 1) & SEQ_MASK
            seq = (seq + 1) & SEQ_MASK  # data on a SYN (TFO) starts after it
        if self.nxt is None:
            if not payload:
                return b''
            self.nxt = seq
        if flags & FIN:
            self.fin_seq = (seq + len(payload)) & SEQ_MASK
        if not payload:
            return b''
        off = seq_diff(seq, self.nxt)
        if off > 0:
            if seq not in self.ooo or len(self.ooo[seq]) < len(payload):
                self.ooo_bytes += len(payload) - len(self.ooo.get(seq, b''))
                self.ooo[seq] = payload
                if self.ooo_since is None:
                    self.ooo_since = now
            return b''
        if -off >= len(payload):
            return b''  # a retransmission of delivered bytes
        out = [payload[-off:]]
        self.nxt = (self.nxt + len(payload) + off) & SEQ_MASK
        out.append(self._drain())
        return b''.join(out)

    def _drain(self):
        out = []
        while self.ooo:
            progressed = False
            for seq in list(self.ooo):
                off = seq_diff(seq, self.nxt)
                if off > 0:
                    continue
                data = self.ooo.pop(seq)
                self.ooo_bytes -= len(data)
                if -off < len(data):
                    out.append(data[-off:])
                    self.nxt = (self.nxt + len(data) + off) & SEQ_MASK
                progressed = True
            if not progressed:
                break
        if not self.ooo:
            self.ooo_since = None
        return b''.join(out)

    def skip_gap(self, now=0.0):
        """Give up on the hole before the out-of-order data: continue at its first segment. Returns the bytes
        that become contiguous (b'' when nothing waits)."""
        if not self.ooo:
            return b''
        self.gaps += 1
        self.nxt = min(self.ooo, key=lambda s: seq_diff(s, self.nxt))
        out = self._drain()
        if self.ooo:
            self.ooo_since = now
        return out

    def drop_buffers(self):
        self.ooo.clear()
        self.ooo_bytes = 0
        self.ooo_since = None


# --- HTTP ----------------------------------------------------------------------------------------------------

class HttpError(ValueError):
    """A request stream that does not parse; ``kind`` is the error counter's name."""

    def __init__(self, kind, message='', skip=0):
        super().__init__(message or kind)
        self.kind = kind
        self.skip = skip


Request = collections.namedtuple('Request', 'method target raw keep_alive body_bytes')
_TOKEN_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REQUEST_LINE_RE = re.compile(rb'(?:^|(?<=\n))[A-Z]{3,16} [!-~]+ HTTP/1\.[01]\r\n')
_CHUNK_LINE_RE = re.compile(rb'^([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?$')


class HttpRequestParser:
    """Incremental HTTP/1.x request parser over one client byte stream.

    ``feed(data)`` returns the complete requests found so far (:class:`Request`, ``raw`` is what goes to the
    target: the request as received, with the Host header rewritten when ``host_rewrite`` is set). A stream
    that breaks the limits or the syntax adds its kind to :attr:`errors`; the parser then discards bytes up to
    the next request line (:attr:`resync`), as it does from the start for a flow joined mid-stream."""

    def __init__(self, max_header=65536, max_body=1 << 20, host_rewrite=b'', resync=False):
        self.max_header = max_header
        self.max_body = max_body
        self.host_rewrite = host_rewrite
        self.resync = resync
        self.buf = bytearray()
        self._head = None  # (method, target, version, headers, head_end) of the request being read
        self._body = None  # ('length', n) / ('chunked', pos, total)
        self.discarded = 0
        self.errors = []
        self._line_start = True
        self._skip = 0

    def __len__(self):
        return len(self.buf)

    def feed(self, data):
        """Add bytes; returns the requests completed. Errors go to :attr:`errors` (kinds), and the parser
        re-synchronises on the next request line after each."""
        if self.resync and not self.buf and not self._skip:
            self._line_start = True  # new data after everything was discarded: a segment's start may begin a request
        self.buf += data
        out = []
        while True:
            if self._skip:
                n = min(self._skip, len(self.buf))
                del self.buf[:n]
                self.discarded += n
                self._skip -= n
                if self._skip:
                    return out
            if self.resync and not self._find_request_line():
                return out
            try:
                req = self._next()
            except HttpError as exc:
                self.errors.append(exc.kind)
                if exc.skip:  # a body of known length over the limit: skipped, the next request follows it
                    self._head = self._body = None
                    self._skip = exc.skip
                else:
                    self.reset_resync(line_start=False)  # not the same request line again
                continue
            if req is None:
                return out
            out.append(req)

    def reset_resync(self, line_start=True):
        """Forget the request in progress and look for the next request line (after an error or a gap).
        ``line_start``: whether the buffer's first byte may begin a request (after a gap: the first segment
        after the hole; after an error: no, the search starts after the next line end)."""
        self._head = self._body = None
        self.resync = True
        self._line_start = line_start

    def _find_request_line(self):
        start = 0
        if not self._line_start:
            start = self.buf.find(b'\n') + 1
            if not start:
                self.discarded += len(self.buf)
                del self.buf[:]
                return False
        m = _REQUEST_LINE_RE.match(self.buf) if start == 0 else None
        m = m or _REQUEST_LINE_RE.search(self.buf, max(start, 1))
        if m:
            self.discarded += m.start()
            del self.buf[:m.start()]
            self.resync = False
            return True
        # Keep the unfinished last line (a request line may continue in the next segment), if short.
        cut = self.buf.rfind(b'\n') + 1
        self._line_start = cut > 0 or (self._line_start and start == 0)
        if len(self.buf) - cut > 64:
            cut = len(self.buf)
            self._line_start = False
        self.discarded += cut
        del self.buf[:cut]
        return False

    def _next(self):
        if self._head is None:
            while self.buf[:2] == b'\r\n':  # RFC 9112 2.2: empty lines before a request are ignored
                del self.buf[:2]
            end = self.buf.find(b'\r\n\r\n', 0, self.max_header)
            if end < 0:
                if len(self.buf) >= self.max_header:
                    raise HttpError('header_too_large', 'request header over %d bytes' % self.max_header)
                return None
            self._head = self._parse_head(bytes(self.buf[:end]), end + 4)
        method, target, version, headers, head_end = self._head
        if self._body is None:
            self._body = self._framing(headers)
        if self._body[0] == 'length':
            end = head_end + self._body[1]
            if len(self.buf) < end:
                return None
        else:
            end = self._chunked(head_end)
            if end is None:
                return None
        raw = bytes(self.buf[:end])
        del self.buf[:end]
        body_bytes = end - head_end
        self._head = self._body = None
        conn = _header(headers, b'connection').lower()
        keep_alive = b'close' not in conn if version == b'HTTP/1.1' else b'keep-alive' in conn
        if self.host_rewrite:
            raw = _rewrite_host(raw, head_end, self.host_rewrite)
        return Request(method, target, raw, keep_alive, body_bytes)

    def _parse_head(self, head, head_end):
        lines = head.split(b'\r\n')
        parts = lines[0].split(b' ')
        if len(parts) != 3 or not _TOKEN_RE.match(parts[0]) or not parts[1] or parts[2] not in (b'HTTP/1.1', b'HTTP/1.0'):
            raise HttpError('bad_request_line', 'not an HTTP/1.x request line: %r' % lines[0][:80])
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b':')
            if not sep or not _TOKEN_RE.match(name):
                raise HttpError('bad_header', 'not a header line: %r' % line[:80])
            headers.append((name.lower(), value.strip(b' \t')))
        return parts[0], parts[1], parts[2], headers, head_end

    def _framing(self, headers):
        te = [v for n, v in headers if n == b'transfer-encoding']
        cl = set(v for n, v in headers if n == b'content-length')
        if te:
            if cl:
                raise HttpError('ambiguous_length', 'both Transfer-Encoding and Content-Length')
            if te[-1].split(b',')[-1].strip().lower() != b'chunked':
                raise HttpError('bad_framing', 'Transfer-Encoding without a final chunked')
            return ['chunked', self._head[4], 0, None]     # the last: where the trailers begin
        if len(cl) > 1 or (cl and not next(iter(cl)).isdigit()):
            raise HttpError('bad_framing', 'invalid Content-Length')
        length = int(next(iter(cl))) if cl else 0
        if length > self.max_body:
            raise HttpError('body_too_large', 'Content-Length %d over %d' % (length, self.max_body), skip=self._head[4] + length)
        return ['length', length]

    def _chunked(self, head_end):
        state = self._body
        pos = state[1]
        while True:
            if state[2] < 0:  # trailers: until an empty line, all of them within max_header as the head is
                eol = self.buf.find(b'\r\n', pos)
                if (len(self.buf) if eol < 0 else eol) - state[3] > self.max_header:
                    raise HttpError('header_too_large', 'chunked trailers over %d bytes' % self.max_header)
                if eol < 0:
                    if len(self.buf) - pos > MAX_LINE:
                        raise HttpError('header_too_large', 'chunked trailer over %d bytes' % MAX_LINE)
                    state[1] = pos
                    return None
                if eol == pos:
                    return pos + 2
                pos = eol + 2
                continue
            eol = self.buf.find(b'\r\n', pos, pos + MAX_LINE)
            if eol < 0:
                if len(self.buf) - pos >= MAX_LINE:
                    raise HttpError('bad_chunk', 'chunk-size line over %d bytes' % MAX_LINE)
                state[1] = pos
                return None
            m = _CHUNK_LINE_RE.match(bytes(self.buf[pos:eol]))
            if not m:
                raise HttpError('bad_chunk', 'not a chunk-size line: %r' % bytes(self.buf[pos:eol])[:40])
            size = int(m.group(1), 16)
            if state[2] + size > self.max_body:
                raise HttpError('body_too_large', 'chunked body over %d bytes' % self.max_body)
            if size == 0:
                state[2], state[3] = -1, eol + 2
                pos = eol + 2
                continue
            if len(self.buf) < eol + 2 + size + 2:
                state[1] = pos
                return None
            if self.buf[eol + 2 + size:eol + 4 + size] != b'\r\n':
                raise HttpError('bad_chunk', 'chunk data not followed by CRLF')
            state[2] += size
            pos = eol + 4 + size


def _header(headers, name):
    return b','.join(v for n, v in headers if n == name)


def _rewrite_host(raw, head_end, host):
    lines = raw[:head_end - 4].split(b'\r\n')
    kept = [line for line in lines[1:] if line.split(b':', 1)[0].strip().lower() != b'host']
    return b'\r\n'.join([lines[0], b'Host: ' + host] + kept) + b'\r\n\r\n' + raw[head_end:]


class ResponseError(Exception):
    """The target's response did not parse (kind ``bad_response``)."""


class _Reader:
    """Buffered reads from a socket; everything beyond a response's end stays for the next one."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.served = 0

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        self.buf += data

    def line(self, limit=MAX_LINE * 8):
        while True:
            eol = self.buf.find(b'\n')
            if eol >= 0:
                out = bytes(self.buf[:eol + 1])
                del self.buf[:eol + 1]
                return out
            if len(self.buf) > limit:
                raise ResponseError('response line over %d bytes' % limit)
            self.fill()

    def skip(self, n):
        while n > 0:
            if not self.buf:
                self.fill()
            take = min(n, len(self.buf))
            del self.buf[:take]
            n -= take

    def skip_to_eof(self):
        self.buf.clear()
        try:
            while True:
                self.fill()
                self.buf.clear()
        except EOFError:
            return


def read_response(reader, method):
    """Read (and discard) one response to ``method``; returns (status, keep_alive). 1xx responses are skipped."""
    while True:
        try:
            status_line = reader.line()
        except EOFError:
            raise ResponseError('connection closed before the response')
        parts = status_line.split(None, 2)
        # the status is three digits, 100 to 999 (RFC 9110 section 15)
        if len(parts) < 2 or not parts[0].startswith(b'HTTP/1.') or not (
                parts[1].isdigit() and len(parts[1]) == 3 and parts[1][:1] != b'0'):
            raise ResponseError('not a status line: %r' % status_line[:80])
        status = int(parts[1])
        headers = []
        while True:
            line = reader.line()
            if line in (b'\r\n', b'\n'):
                break
            name, _sep, value = line.partition(b':')
            headers.append((name.strip().lower(), value.strip()))
        if 100 <= status < 200 and status != 101:
            continue
        conn = _header(headers, b'connection').lower()
        keep_alive = b'close' not in conn if parts[0] == b'HTTP/1.1' else b'keep-alive' in conn
        if method == b'HEAD' or status in (204, 304) or status == 101:
            return status, keep_alive and status != 101
        te = _header(headers, b'transfer-encoding').lower()
        if te.endswith(b'chunked'):
            while True:
                size = int(reader.line().split(b';')[0].strip() or b'0', 16)
                if size == 0:
                    while reader.line() not in (b'\r\n', b'\n'):
                        pass
                    return status, keep_alive
                reader.skip(size + 2)
        cl = _header(headers, b'content-length')
        if cl:
            reader.skip(int(cl.split(b',')[0]))
            return status, keep_alive
        reader.skip_to_eof()
        return status, False


# --- counters ------------------------------------------------------------------------------------------------

class Counters:
    """Thread-safe counters, errors by kind, the latency histogram, a sliding window of per-second slots and the
    per-minute roll-up ``recent`` (the last ``recent_minutes`` whole minutes, see :meth:`recent`)."""

    def __init__(self, mode='http', target='', window_seconds=60, clock=time.time, recent_minutes=60):
        self.clock = clock
        self.started = clock()
        self.mode, self.target = mode, target
        self.window_seconds = window_seconds
        self.recent_minutes = recent_minutes
        self.lock = threading.Lock()
        self.values = dict.fromkeys(COUNTERS, 0)
        self.errors = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.lat_sum = 0.0
        self.slots = collections.deque()  # [second, requests, errors, bucket counts]
        # [minute start, requests, errors, bucket counts] of the minutes with something in them, oldest first;
        # one more than reported: the current (incomplete) minute.
        self.minutes = collections.deque(maxlen=recent_minutes + 1)

    def _slot(self, now):
        sec = int(now)
        if not self.slots or self.slots[-1][0] != sec:
            self.slots.append([sec, 0, 0, [0] * (len(LATENCY_BUCKETS) + 1)])
            while self.slots and self.slots[0][0] <= sec - self.window_seconds:
                self.slots.popleft()
        return self.slots[-1]

    def _minute(self, now):
        start = int(now) // 60 * 60
        if not self.minutes or self.minutes[-1][0] != start:
            self.minutes.append([start, 0, 0, [0] * (len(LATENCY_BUCKETS) + 1)])
        return self.minutes[-1]

    def inc(self, name, n=1):
        with self.lock:
            self.values[name] += n

    def error(self, kind, n=1):
        with self.lock:
            now = self.clock()
            self.errors[kind] = self.errors.get(kind, 0) + n
            self._slot(now)[2] += n
            self._minute(now)[2] += n

    def observe(self, seconds):
        i = _bucket(seconds)
        with self.lock:
            now = self.clock()
            self.buckets[i] += 1
            self.lat_sum += seconds
            slot = self._slot(now)
            slot[1] += 1
            slot[3][i] += 1
            minute = self._minute(now)
            minute[1] += 1
            minute[3][i] += 1

    def recent(self, now):
        """The whole minutes (aligned on the unix minute, as PVE's RRD rows) since the agent started, at most the
        last ``recent_minutes``, oldest first: ``{"end": unix, "requests", "latency_p95_seconds" (None without a
        request), "errors"}``. A minute without a request is listed (0, None): a missing minute means the agent did
        not run. The minute the agent started in is partial and left out. Call with the lock held."""
        current = int(now) // 60 * 60
        first = max(-(-int(self.started) // 60) * 60, current - 60 * self.recent_minutes)
        seen = dict((m[0], m) for m in self.minutes)
        out = []
        for start in range(first, current, 60):
            m = seen.get(start)
            out.append({'end': start + 60, 'requests': m[1] if m else 0, 'errors': m[2] if m else 0,
                        'latency_p95_seconds': quantile(m[3], 0.95) if m else None})
        return out

    def snapshot(self):
        """The JSON stats document (see docs: version 1)."""
        with self.lock:
            now = self.clock()
            self._slot(now)
            win = [0] * (len(LATENCY_BUCKETS) + 1)
            reqs = errs = 0
            for _sec, r, e, counts in self.slots:
                reqs += r
                errs += e
                for i, c in enumerate(counts):
                    win[i] += c
            cumulative, total = [], 0
            for c in self.buckets:
                total += c
                cumulative.append(total)
            doc = {'version': VERSION, 'time': now, 'started': self.started, 'mode': self.mode, 'target': self.target}
            doc.update(self.values)
            doc['errors'] = dict(self.errors)
            doc['latency_seconds'] = {'le': list(LATENCY_BUCKETS) + ['+Inf'], 'counts': cumulative,
                                      'count': total, 'sum': round(self.lat_sum, 6)}
            doc['window_seconds'] = self.window_seconds
            doc['window'] = {'requests': reqs, 'latency_p50_seconds': quantile(win, 0.5),
                             'latency_p95_seconds': quantile(win, 0.95), 'errors': errs}
            doc['recent'] = self.recent(now)
            return doc


def _bucket(seconds):
    for i, le in enumerate(LATENCY_BUCKETS):
        if seconds <= le:
            return i
    return len(LATENCY_BUCKETS)


def quantile(counts, q):
    """The q-quantile of a non-cumulative bucket histogram over LATENCY_BUCKETS (linear inside a bucket, as
    Prometheus' histogram_quantile); None when empty; the last finite bound when it falls in +Inf."""
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, c in enumerate(counts):
        if c and seen + c >= rank:
            if i == len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            lo = LATENCY_BUCKETS[i - 1] if i else 0.0
            return round(lo + (LATENCY_BUCKETS[i] - lo) * (rank - seen) / c, 6)
        seen += c
    return LATENCY_BUCKETS[-1]


def prometheus_text(doc):
    """A stats document in the Prometheus text exposition format."""
    out = []
    for name in COUNTERS:
        metric = 'shadownet_replay_%s_total' % name
        out += ['# TYPE %s counter' % metric, '%s %d' % (metric, doc[name])]
    out.append('# TYPE shadownet_replay_errors_total counter')
    for kind in sorted(doc['errors']):
        out.append('shadownet_replay_errors_total{kind="%s"} %d' % (kind, doc['errors'][kind]))
    lat = doc['latency_seconds']
    out.append('# TYPE shadownet_replay_latency_seconds histogram')
    for le, count in zip(lat['le'], lat['counts']):
        out.append('shadownet_replay_latency_seconds_bucket{le="%s"} %d' % (le, count))
    out += ['shadownet_replay_latency_seconds_sum %s' % repr(float(lat['sum'])),
            'shadownet_replay_latency_seconds_count %d' % lat['count'],
            '# TYPE shadownet_replay_started_time_seconds gauge',
            'shadownet_replay_started_time_seconds %s' % repr(float(doc['started']))]
    return '\n'.join(out) + '\n'


def write_stats(path, doc):
    """Write the stats document atomically (temporary file in the same directory, then rename)."""
    tmp = '%s.%d.tmp' % (path, os.getpid())
    with open(tmp, 'w') as fh:
        json.dump(doc, fh, sort_keys=True)
        fh.write('\n')
    os.rename(tmp, path)


# --- the agent -----------------------------------------------------------------------------------------------

_CLOSE = object()


def _size(item):
    """Bytes a queued item holds (a Request, a bytes chunk or datagram, or the close marker)."""
    if item is _CLOSE:
        return 0
    return len(item) if isinstance(item, bytes) else len(item.raw)


class Flow:
    """One mirrored client flow: its reassembly, its parser, the work queued for replay and its connection."""

    __slots__ = ('key', 'stream', 'parser', 'pending', 'scheduled', 'conn', 'reader', 'last', 'partial', 'dead',
                 'replayed', 'held', 'queued', 'opened')

    def __init__(self, key, now):
        self.key = key
        self.stream = TcpStream()
        self.parser = None
        self.pending = collections.deque()
        self.scheduled = False
        self.conn = self.reader = None
        self.last = now
        self.partial = self.dead = self.replayed = self.opened = False
        self.held = 0
        self.queued = 0


class Agent:
    """The capture loop, the flow table and the replay workers. ``run()`` until ``stop()``."""

    def __init__(self, conf, clock=time.monotonic):
        self.conf = conf
        self.clock = clock
        self.target = (conf['target_host'], conf['target_port'])
        self.counters = Counters(conf['mode'], '%s:%d' % self.target, conf['window_seconds'],
                                 recent_minutes=conf['recent_minutes'])
        self.flows = collections.OrderedDict()
        self.recent = collections.OrderedDict()  # closed flow keys -> close time (late retransmissions)
        self.gappy = set()
        self.held = 0  # bytes in reassembly and parser buffers
        self.queued = 0  # bytes queued for replay (workers decrement, under qlock)
        self.qlock = threading.Lock()
        self.ready = collections.deque()
        self.ready_cv = threading.Condition(self.qlock)
        self.stopping = threading.Event()
        self.threads = []
        self.sock = None
        self.httpd = None
        self.host_rewrite = conf['host_rewrite'].encode()

    # capture side -------------------------------------------------------------------------------------------
    def open_capture(self):
        """The promiscuous packet socket on the mirror NIC (a clear error when the NIC does not exist)."""
        try:
            ifindex = socket.if_nametoindex(self.conf['interface'])
        except OSError:
            raise ConfigError("configuration field 'interface': no network interface %r in this system"
                              % self.conf['interface'])
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
        try:
            sock.setsockopt(socket.SOL_SOCKET, 33, 32 << 20)  # SO_RCVBUFFORCE (root)
        except OSError:
            pass
        sock.bind((self.conf['interface'], ETH_P_ALL))
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, struct.pack('iHH8s', ifindex, PACKET_MR_PROMISC, 0, b''))
        self.sock = sock
        return sock

    def handle_frame(self, data, now):
        pkt = parse_frame(data)
        if pkt is None or pkt.dport != self.conf['port'] or (self.conf['addresses'] and pkt.dst not in self.conf['addresses']):
            return
        mode = self.conf['mode']
        if (pkt.proto == 6) != (mode != 'udp'):
            return
        key = (pkt.src, pkt.sport, pkt.dst, pkt.dport)
        flow = self.flows.get(key)
        if pkt.proto == 17:
            if flow is None:
                flow = self._new_flow(key, now)
            self._touch(flow, now)
            self._enqueue(flow, pkt.payload)
            return
        flags = pkt.flags
        if flow is not None and flags & SYN and not flags & ACK and flow.stream.isn is not None and flow.stream.isn != pkt.seq:
            self._finish(flow, now)  # the port was reused: a new connection
            flow = None
        if flow is None:
            if key in self.recent and not flags & SYN:
                return  # a late segment of a flow already closed
            if not (flags & SYN and not flags & ACK) and not pkt.payload:
                return  # an ACK, FIN or RST of a flow never seen: nothing to replay
            if flags & RST:
                return
            self.recent.pop(key, None)
            flow = self._new_flow(key, now)
            if not flags & SYN:
                flow.partial = True
                self.counters.inc('flows_partial')
                if mode == 'tcp':
                    flow.dead = True
            if mode == 'http':
                flow.parser = HttpRequestParser(self.conf['max_header_bytes'], self.conf['max_body_bytes'],
                                                self.host_rewrite, resync=flow.partial)
        self._touch(flow, now)
        stream = flow.stream
        if pkt.payload and self.held + self.queued + len(pkt.payload) > self.conf['total_buffer_bytes']:
            self.counters.error('memory_cap')  # dropped as if lost on the wire: a gap later
            return
        data = stream.feed(pkt.seq, flags, pkt.payload, now)
        if stream.ooo_bytes and stream.ooo_bytes + len(flow.parser or b'') > self.conf['flow_buffer_bytes']:
            data += self._gap(flow, now)
        self._consume(flow, data, now)
        if stream.ooo:
            self.gappy.add(flow)
        else:
            self.gappy.discard(flow)
        if stream.finished:
            self._finish(flow, now)
        else:
            self._account(flow)

    def _new_flow(self, key, now):
        while len(self.flows) >= self.conf['max_flows']:
            _k, oldest = next(iter(self.flows.items()))
            self.counters.error('flow_evicted')
            self._finish(oldest, now, clean=False)
        flow = Flow(key, now)
        self.flows[key] = flow
        self.counters.inc('flows_seen')
        return flow

    def _touch(self, flow, now):
        flow.last = now
        self.flows.move_to_end(flow.key)

    def _account(self, flow):
        held = flow.stream.ooo_bytes + (len(flow.parser) if flow.parser is not None else 0)
        self.held += held - flow.held
        flow.held = held

    def _gap(self, flow, now):
        self.counters.inc('reassembly_gaps')
        data = flow.stream.skip_gap(now)
        if flow.parser is not None:
            flow.parser.buf.clear()
            flow.parser.reset_resync()
        elif self.conf['mode'] == 'tcp':
            flow.dead = True  # a hole in an opaque stream: the rest of it is not replayed
        return data

    def _consume(self, flow, data, now):
        if not data or flow.dead:
            return
        if flow.parser is None:  # tcp mode
            self._enqueue(flow, data)
            return
        requests = flow.parser.feed(data)
        while flow.parser.errors:
            self.counters.error(flow.parser.errors.pop())
        if len(flow.parser) > self.conf['flow_buffer_bytes']:
            self.counters.error('flow_buffer_full')
            flow.parser.buf.clear()
            flow.parser.reset_resync()
        for req in requests:
            self.counters.inc('requests_seen')
            if self.conf['methods'] == 'safe' and req.method not in SAFE_METHODS:
                self.counters.inc('requests_skipped')
                continue
            self._enqueue(flow, req)

    def _enqueue(self, flow, item):
        size = _size(item)
        with self.qlock:
            if item is not _CLOSE and self.queued + self.held + size > self.conf['total_buffer_bytes']:
                full = True
            else:
                full = False
                if item is not _CLOSE:
                    self.queued += size
                flow.pending.append(item)
                if not flow.scheduled:
                    flow.scheduled = True
                    self.ready.append(flow)
                    self.ready_cv.notify()
        if full:
            self.counters.error('queue_full')

    def _finish(self, flow, now, clean=True):
        if self.flows.pop(flow.key, None) is None:
            return
        self.gappy.discard(flow)
        if flow.parser is not None and clean and len(flow.parser) and not flow.parser.resync:
            self.counters.error('truncated_request')
        self.held -= flow.held
        flow.held = 0
        flow.stream.drop_buffers()
        if flow.parser is not None:
            flow.parser.buf.clear()
        self.recent[flow.key] = now
        while len(self.recent) > 4096:
            self.recent.popitem(last=False)
        if flow.opened or flow.pending or flow.scheduled:
            self._enqueue(flow, _CLOSE)

    def sweep(self, now):
        """Idle flows closed, holes older than gap_timeout given up on, late-segment memory expired."""
        idle = self.conf['idle_timeout']
        while self.flows:
            flow = next(iter(self.flows.values()))
            if now - flow.last < idle:
                break
            self._finish(flow, now, clean=False)
        for flow in list(self.gappy):
            since = flow.stream.ooo_since
            if since is not None and now - since >= self.conf['gap_timeout']:
                data = self._gap(flow, now)
                self._consume(flow, data, now)
                if not flow.stream.ooo:
                    self.gappy.discard(flow)
                if flow.stream.finished:
                    self._finish(flow, now)
                else:
                    self._account(flow)
        while self.recent and now - next(iter(self.recent.values())) > max(30.0, self.conf['gap_timeout']):
            self.recent.popitem(last=False)

    # replay side --------------------------------------------------------------------------------------------
    def worker(self):
        while True:
            with self.qlock:
                while not self.ready and not self.stopping.is_set():
                    self.ready_cv.wait(0.5)
                if not self.ready:
                    return
                flow = self.ready.popleft()
            while True:
                with self.qlock:
                    if not flow.pending:
                        flow.scheduled = False
                        break
                    item = flow.pending.popleft()
                    self.queued -= _size(item)
                try:
                    self._replay(flow, item)
                except Exception as exc:  # pylint: disable=broad-except
                    self.counters.error('internal')
                    sys.stderr.write('shadownet-replay: internal error: %r\n' % (exc,))
                    self._close_conn(flow)

    def _connect(self, flow):
        kind = socket.SOCK_DGRAM if self.conf['mode'] == 'udp' else socket.SOCK_STREAM
        try:
            infos = socket.getaddrinfo(self.target[0], self.target[1], 0, kind)
            sock = socket.socket(infos[0][0], kind)
            sock.settimeout(self.conf['timeout'])
            sock.connect(infos[0][4])
        except OSError as exc:
            self.counters.error('timeout' if isinstance(exc, socket.timeout) else 'connect')
            return None
        flow.conn = sock
        flow.reader = _Reader(sock)
        if not flow.opened:
            flow.opened = True
        return sock

    def _close_conn(self, flow):
        if flow.conn is not None:
            try:
                flow.conn.close()
            except OSError:
                pass
        flow.conn = flow.reader = None

    def _replay(self, flow, item):
        mode = self.conf['mode']
        if item is _CLOSE:
            if flow.conn is not None and mode == 'tcp':
                try:
                    flow.conn.shutdown(socket.SHUT_WR)
                    flow.reader.skip_to_eof()
                except OSError:
                    pass
            self._close_conn(flow)
            return
        if flow.conn is None and self._connect(flow) is None:
            return
        if mode == 'http':
            self._replay_http(flow, item)
            return
        try:
            flow.conn.sendall(item)
        except OSError as exc:
            self.counters.error('timeout' if isinstance(exc, socket.timeout) else 'send')
            self._close_conn(flow)
            return
        self._replayed(flow, len(item))
        self._drain_responses(flow)

    def _replayed(self, flow, size):
        self.counters.inc('requests_replayed')
        self.counters.inc('bytes_replayed', size)
        if not flow.replayed:
            flow.replayed = True
            self.counters.inc('flows_replayed')

    def _drain_responses(self, flow):
        try:
            while select.select([flow.conn], [], [], 0)[0]:
                if not flow.conn.recv(65536) and self.conf['mode'] == 'tcp':
                    self._close_conn(flow)
                    return
        except OSError:
            pass

    def _replay_http(self, flow, req):
        for attempt in (0, 1):
            start = time.monotonic()
            try:
                flow.conn.sendall(req.raw)
                _status, keep = read_response(flow.reader, req.method)
            except (OSError, ResponseError, ValueError, EOFError) as exc:
                reused = attempt == 0 and flow.reader is not None and flow.reader.served > 0
                self._close_conn(flow)
                if reused and isinstance(exc, (ResponseError, ConnectionError)) and self._connect(flow) is not None:
                    continue  # a kept-alive connection the target had closed: once more on a new one
                kind = 'timeout' if isinstance(exc, socket.timeout) else (
                    'bad_response' if isinstance(exc, (ResponseError, ValueError, EOFError)) else 'send')
                self.counters.error(kind)
                return
            self.counters.observe(time.monotonic() - start)
            flow.reader.served += 1
            self._replayed(flow, len(req.raw))
            if not keep or not req.keep_alive:
                self._close_conn(flow)
            return

    # service ------------------------------------------------------------------------------------------------
    def start_side_threads(self):
        for i in range(self.conf['concurrency']):
            self._thread(self.worker, 'replay-%d' % i)
        if self.conf['stats_path']:
            self._thread(self._stats_loop, 'stats')
        if self.conf['metrics_listen']:
            self._start_metrics()

    def _thread(self, fn, name):
        t = threading.Thread(target=fn, name=name, daemon=True)
        t.start()
        self.threads.append(t)

    def _stats_loop(self):
        self.write_stats()  # at once: the file exists as soon as the capture runs
        while not self.stopping.wait(self.conf['stats_interval']):
            self.write_stats()

    def write_stats(self):
        try:
            write_stats(self.conf['stats_path'], self.counters.snapshot())
        except OSError as exc:
            sys.stderr.write('shadownet-replay: cannot write %s: %s\n' % (self.conf['stats_path'], exc))

    def _start_metrics(self):
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split('?')[0] not in ('/metrics', '/stats.json'):
                    self.send_error(404)
                    return
                doc = agent.counters.snapshot()
                if self.path.startswith('/stats.json'):
                    body, ctype = json.dumps(doc).encode(), 'application/json'
                else:
                    body, ctype = prometheus_text(doc).encode(), 'text/plain; version=0.0.4'
                self.send_response(200)
                self.send_header('Content-Type', ctype)
                self.send_header('Content-Length', str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        host, _sep, port = self.conf['metrics_listen'].rpartition(':')
        ThreadingHTTPServer.address_family = socket.AF_INET6 if ':' in host else socket.AF_INET
        try:
            self.httpd = ThreadingHTTPServer((host.strip('[]'), int(port)), Handler)
        except OSError as exc:
            raise ConfigError("configuration field 'metrics_listen': cannot listen on %s (%s)" % (self.conf['metrics_listen'], exc))
        self.httpd.daemon_threads = True
        self._thread(self.httpd.serve_forever, 'metrics')

    def run(self):
        """Capture until stop(): frames in, sweeps every 0.2 s."""
        sock = self.sock or self.open_capture()
        sock.setblocking(False)
        last_sweep = self.clock()
        while not self.stopping.is_set():
            try:
                ready = select.select([sock], [], [], 0.2)[0]
            except InterruptedError:
                continue
            if ready:
                for _i in range(512):
                    try:
                        data, addr = sock.recvfrom(RECV_BYTES)
                    except (BlockingIOError, InterruptedError):
                        break
                    if addr[2] == PACKET_OUTGOING:
                        continue
                    try:
                        self.handle_frame(data, self.clock())
                    except Exception as exc:  # pylint: disable=broad-except
                        self.counters.error('internal')
                        sys.stderr.write('shadownet-replay: internal error on a frame: %r\n' % (exc,))
            now = self.clock()
            if now - last_sweep >= 0.2:
                last_sweep = now
                self.sweep(now)

    def stop(self):
        self.stopping.set()
        with self.qlock:
            self.ready_cv.notify_all()

    def close(self):
        self.stop()
        for t in self.threads:
            if t.name.startswith('replay-'):
                t.join(timeout=self.conf['timeout'] + 1)
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
        if self.conf['stats_path']:
            self.write_stats()
        if self.sock is not None:
            self.sock.close()


def _raise_fd_limit(conf):
    """Every tracked flow may hold an upstream connection: the soft descriptor limit is raised toward the hard one."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = conf['max_flows'] + conf['concurrency'] + 64
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))
    except (ImportError, ValueError, OSError):
        pass


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) not in (2, 3) or argv[0] != '--config' or (len(argv) == 3 and argv[2] != '--check'):
        sys.stderr.write('usage: shadownet_replay.py --config <file.json> [--check]\n')
        return 2
    try:
        with open(argv[1]) as fh:
            raw = json.load(fh)
    except (OSError, ValueError) as exc:
        sys.stderr.write('shadownet-replay: cannot read the configuration %s: %s\n' % (argv[1], exc))
        return 2
    try:
        conf = load_config(raw)
    except ConfigError as exc:
        sys.stderr.write('shadownet-replay: %s: %s\n' % (argv[1], exc))
        return 2
    if len(argv) == 3:
        return 0
    _raise_fd_limit(conf)
    agent = Agent(conf)
    try:
        agent.open_capture()
        if conf['stats_path']:
            os.makedirs(os.path.dirname(conf['stats_path']), exist_ok=True)
        agent.start_side_threads()
    except ConfigError as exc:
        sys.stderr.write('shadownet-replay: %s: %s\n' % (argv[1], exc))
        return 2
    except OSError as exc:
        sys.stderr.write('shadownet-replay: cannot start: %s\n' % (exc,))
        return 1
    signal.signal(signal.SIGTERM, lambda *_a: agent.stop())
    signal.signal(signal.SIGINT, lambda *_a: agent.stop())
    sys.stderr.write('shadownet-replay: %s mode, port %d on %s -> %s:%d\n'
                     % (conf['mode'], conf['port'], conf['interface'], conf['target_host'], conf['target_port']))
    agent.run()
    agent.close()
    return 0


if __name__ == '__main__':
    raise SystemExit(main())

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers for the replay agent's tests and benchmarks: a recording HTTP server, HTTP/TCP clients, crafted frames.

* :class:`RecordingServer` - an HTTP/1.1 server (keep-alive, Content-Length and chunked request bodies) that
  records every request it answers as ``{peer, method, path, body}`` (one JSON line per request in ``record``
  when run as a process: ``python replay_lab.py _server <addr> <port> <record-file> [tcp|udp]``; in ``tcp``/``udp``
  mode it records the bytes each connection/peer sent instead);
* :func:`http_request` / :func:`drive` - raw HTTP requests on a socket (keep-alive, close, pipelined, chunked);
* :func:`tcp_frame` / :func:`udp_frame` - Ethernet frames built by hand, to feed the agent exact segments.
"""
import json
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
AGENT_PY = os.path.join(ROOT, 'plugins', 'module_utils', 'replay.py')


class _Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def _body(self):
        if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
            out = []
            while True:
                size = int(self.rfile.readline().split(b';')[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b'\r\n', b'\n', b''):
                        pass
                    return b''.join(out)
                out.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get('Content-Length') or 0))

    def _any(self):
        body = self._body()
        self.server.record({'peer': '%s:%d' % self.client_address[:2], 'method': self.command, 'path': self.path,
                            'body': body.decode('latin-1'), 'host': self.headers.get('Host')})
        reply = b'ok %d\n' % len(body)
        self.send_response(200)
        self.send_header('Content-Length', str(len(reply)))
        self.end_headers()
        if self.command != 'HEAD':
            self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = _any

    def log_message(self, *args):
        pass


class _NodelayHandler(_Handler):
    # TCP_NODELAY, as production servers set it: the status line and headers, then the body, are two writes, and
    # with Nagle the body waits for the client's delayed ACK (~40 ms a keep-alive response on Linux), which a
    # latency figure would show instead of the service's own.
    disable_nagle_algorithm = True


class RecordingServer(ThreadingHTTPServer):
    """The HTTP server both the primary and the shadow run; ``requests`` lists what it answered. ``nodelay``:
    TCP_NODELAY on its connections (`make lab` measures the replay latency with it)."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, path=None, nodelay=False):
        self.requests = []
        self.lock = threading.Lock()
        self.fh = open(path, 'a', buffering=1) if path else None
        super().__init__(addr, _NodelayHandler if nodelay else _Handler)

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)
            if self.fh:
                self.fh.write(json.dumps(entry) + '\n')

    def start(self):
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


class _TcpRecorder(socketserver.BaseRequestHandler):
    def handle(self):
        chunks = []
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            chunks.append(data)
            self.request.sendall(b'.')
        self.server.record({'peer': '%s:%d' % self.client_address[:2], 'data': b''.join(chunks).decode('latin-1')})


class TcpRecordingServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, path=None):
        self.fh = open(path, 'a', buffering=1) if path else None
        self.lock = threading.Lock()
        self.requests = []
        super().__init__(addr, _TcpRecorder)

    record = RecordingServer.record
    start = RecordingServer.start


def udp_server(addr, path):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(addr)
    with open(path, 'a', buffering=1) as fh:
        while True:
            data, peer = sock.recvfrom(65536)
            fh.write(json.dumps({'peer': '%s:%d' % peer, 'data': data.decode('latin-1')}) + '\n')


def read_records(path):
    """The JSON lines a recording server process wrote (missing file: []). Read while the server appends, a line
    can show before all of its bytes do (seen once in CI: a line that did not parse); the records up to it are
    returned, and a caller that polls (wait_for) reads again."""
    if not os.path.exists(path):
        return []
    out = []
    with open(path) as fh:
        for line in fh:
            if not line.endswith('\n'):
                break
            try:
                out.append(json.loads(line))
            except ValueError:
                break
    return out


def per_flow(records, key='peer', fields=('method', 'path', 'body')):
    """Records grouped by client connection, in arrival order: a sorted list of tuples of requests."""
    flows = {}
    for r in records:
        flows.setdefault(r[key], []).append(tuple(r[f] for f in fields))
    return sorted(tuple(v) for v in flows.values())


# --- clients -------------------------------------------------------------------------------------------------

def http_request(method, path, body=b'', host='shop', chunked=False, close=False, chunks=3):
    """One request's bytes (Content-Length, or chunked in ``chunks`` pieces)."""
    head = ['%s %s HTTP/1.1' % (method, path), 'Host: %s' % host, 'User-Agent: replay-test']
    if close:
        head.append('Connection: close')
    if chunked:
        head.append('Transfer-Encoding: chunked')
        step = max(1, -(-len(body) // chunks)) if body else 1
        parts = [body[i:i + step] for i in range(0, len(body), step)]
        payload = b''.join(b'%x;ext=1\r\n%s\r\n' % (len(p), p) for p in parts) + b'0\r\nX-Trailer: t\r\n\r\n'
    else:
        if body or method in ('POST', 'PUT', 'PATCH'):
            head.append('Content-Length: %d' % len(body))
        payload = body
    return ('\r\n'.join(head) + '\r\n\r\n').encode() + payload


def read_responses(sock, methods):
    """Read one response per method (the agent's own response reader)."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils import replay
    reader = replay._Reader(sock)  # pylint: disable=protected-access
    return [replay.read_response(reader, m.encode() if isinstance(m, str) else m)[0] for m in methods]


def session(sock, requests, pipelined=False):
    """Send (method, path, body, chunked, close) requests on one connection; returns the statuses."""
    raws = [http_request(m, p, b, chunked=c, close=cl) for m, p, b, c, cl in requests]
    methods = [r[0] for r in requests]
    if pipelined:
        sock.sendall(b''.join(raws))
        return read_responses(sock, methods)
    from ansible_collections.shadownet.proxmox.plugins.module_utils import replay
    reader = replay._Reader(sock)  # pylint: disable=protected-access
    out = []
    for raw, m in zip(raws, methods):
        sock.sendall(raw)
        out.append(replay.read_response(reader, m.encode())[0])
    return out


# --- frames --------------------------------------------------------------------------------------------------

def _csum(data):
    if len(data) % 2:
        data += b'\0'
    s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _ip4(src, dst, proto, l4):
    hdr = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(l4), 0, 0x4000, 64, proto, 0,
                      socket.inet_aton(src), socket.inet_aton(dst))
    hdr = hdr[:10] + struct.pack('!H', _csum(hdr)) + hdr[12:]
    return hdr + l4


class BytesSocket(object):
    """A socket whose ``recv`` hands out ``data`` and then b'' (end of stream): read_response's input without a
    server."""

    def __init__(self, data):
        self.data = data

    def recv(self, size):
        out, self.data = self.data[:size], self.data[size:]
        return out


ETH = bytes.fromhex('020000000001' '020000000002') + b'\x08\x00'


def tcp_frame(src, sport, dst, dport, seq, flags='A', payload=b'', ack=0):
    """An Ethernet/IPv4/TCP frame (flags: letters of S A F R P), checksums right."""
    bits = {'F': 1, 'S': 2, 'R': 4, 'P': 8, 'A': 16}
    fl = sum(bits[c] for c in flags)
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xFFFFFFFF, ack, 5 << 4, fl, 65535, 0, 0) + payload
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack('!H', _csum(pseudo + tcp)) + tcp[18:]
    frame = ETH + _ip4(src, dst, 6, tcp)
    return frame + b'\0' * max(0, 60 - len(frame))


def tcp6_frame(src, sport, dst, dport, seq, flags='A', payload=b''):
    """An Ethernet/IPv6/TCP frame (no extension headers; the agent does not check checksums)."""
    bits = {'F': 1, 'S': 2, 'R': 4, 'P': 8, 'A': 16}
    tcp = struct.pack('!HHIIBBHHH', sport, dport, seq & 0xFFFFFFFF, 0, 5 << 4, sum(bits[c] for c in flags), 65535, 0, 0)
    tcp += payload
    ip6 = struct.pack('!IHBB', 6 << 28, len(tcp), 6, 64) + socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    return ETH[:12] + b'\x86\xdd' + ip6 + tcp


def udp_frame(src, sport, dst, dport, payload):
    udp = struct.pack('!HHHH', sport, dport, 8 + len(payload), 0) + payload
    frame = ETH + _ip4(src, dst, 17, udp)
    return frame + b'\0' * max(0, 60 - len(frame))


def segments(src, sport, dst, dport, data, isn=1000, mss=1400, syn=True, fin=True):
    """The client-to-server frames of a whole connection carrying ``data``: SYN, data segments, FIN."""
    out = [tcp_frame(src, sport, dst, dport, isn, 'S')] if syn else []
    seq = isn + 1
    for i in range(0, len(data), mss):
        out.append(tcp_frame(src, sport, dst, dport, seq, 'PA', data[i:i + mss]))
        seq += len(data[i:i + mss])
    if fin:
        out.append(tcp_frame(src, sport, dst, dport, seq, 'FA'))
    return out


def rss_kib(pid):
    """Resident set size of a process, KiB (VmRSS)."""
    with open('/proc/%d/status' % pid) as fh:
        for line in fh:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all threads)."""
    with open('/proc/%d/stat' % pid) as fh:
        fields = fh.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def wait_for(predicate, timeout=10.0, step=0.05):
    """Poll until predicate() is truthy; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value


SYSTEM_PY = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable


def start_server(lab, ns, addr, port, record, kind='http'):
    """A recording server process (http, ``http-nodelay``: http with TCP_NODELAY, tcp or udp) in namespace ``ns``;
    returns the Popen. Waits until it listens (tcp/http)."""
    from lab.netns import wait_port
    proc = lab.spawn(ns, [SYSTEM_PY, os.path.abspath(__file__), '_server', addr, str(port), str(record), kind])
    if kind != 'udp':
        wait_port(ns, addr, port, proc)
    else:
        time.sleep(0.3)
    return proc


def start_agent(lab, ns, config, path):
    """The replay agent (this repository's plugins/module_utils/replay.py, run by the system python: stdlib
    only) in namespace ``ns`` with ``config`` written to ``path``; returns the Popen once its stats file exists
    (stderr goes to ``path``.log)."""
    with open(path, 'w') as fh:
        json.dump(config, fh)
    log = open(str(path) + '.log', 'w')
    proc = lab.spawn(ns, [SYSTEM_PY, AGENT_PY, '--config', str(path)], stderr=log)
    stats = config.get('stats_path')
    if not wait_for(lambda: proc.poll() is not None or (stats and os.path.exists(stats)), timeout=15):
        raise RuntimeError('the agent did not start: %s' % open(str(path) + '.log').read())
    if proc.poll() is not None:
        raise RuntimeError('the agent exited with %s: %s' % (proc.returncode, open(str(path) + '.log').read()))
    return proc


def read_stats(path):
    with open(path) as fh:
        return json.load(fh)


if __name__ == '__main__' and len(sys.argv) >= 5 and sys.argv[1] == '_server':
    kind = sys.argv[5] if len(sys.argv) > 5 else 'http'
    address = (sys.argv[2], int(sys.argv[3]))
    if kind == 'udp':
        udp_server(address, sys.argv[4])
    elif kind == 'tcp':
        TcpRecordingServer(address, sys.argv[4]).serve_forever()
    else:
        RecordingServer(address, sys.argv[4], nodelay=kind == 'http-nodelay').serve_forever()

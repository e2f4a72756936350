# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Many small flows between a client and a server in the namespace lab, and per-flow packet counts.

* :func:`tcp_echo_server` - a TCP echo server in a namespace (a thread per connection), stopped with the lab;
* :func:`tcp_flows` / :func:`udp_flows` - ``count`` flows from the client, each its own source port, each
  sending ``rounds`` messages that the server echoes;
* :class:`FlowTally` - a match predicate for :meth:`lab.netns.Lab.capture` that counts TCP/UDP frames per
  flow (protocol, client port) and direction (``c2s`` / ``s2c``) between two addresses.
"""
from __future__ import annotations

import socket
import threading

from lab.netns import in_netns


class FlowTally:
    """Counts frames per flow and direction; use ``match=tally`` with :meth:`Lab.capture`.

    A flow is ``(proto, client port)`` for TCP/UDP frames between ``client`` and ``server`` addresses;
    ``outgoing`` selects the frames the device sends (True), receives (False) or both (None).
    """

    def __init__(self, client, server, outgoing=None):
        self.client, self.server, self.outgoing = client, server, outgoing
        self.counts = {}  # (proto, client port) -> {'c2s': n, 's2c': n}

    def __call__(self, frame):
        if self.outgoing is not None and frame.outgoing != self.outgoing:
            return False
        if frame.proto not in (6, 17) or {frame.src_ip, frame.dst_ip} != {self.client, self.server}:
            return False
        c2s = frame.src_ip == self.client
        key = (frame.proto, frame.sport if c2s else frame.dport)
        per = self.counts.setdefault(key, {'c2s': 0, 's2c': 0})
        per['c2s' if c2s else 's2c'] += 1
        return True

    def snapshot(self):
        """A copy of the counts (the capture thread keeps adding to the live dict)."""
        return {k: dict(v) for k, v in list(self.counts.items())}


class TcpEchoServer:
    """A TCP server bound to ``bind`` inside ``ns`` that echoes whatever each connection sends; the lab stops it
    at close() (or call ``stop()``)."""

    def __init__(self, ns, bind):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(bind)
            s.listen(512)
            s.settimeout(0.2)
            return s
        self.sock = in_netns(ns, make)
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, dummy = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn):
        with conn:
            conn.settimeout(10)
            try:
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    conn.sendall(data)
            except OSError:
                return

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def tcp_echo_server(lab, ns, bind):
    """A :class:`TcpEchoServer` in ``ns`` that ``lab.close()`` stops."""
    server = TcpEchoServer(ns, bind)
    lab._workers.append(server)  # pylint: disable=protected-access  # stopped with the lab's own workers
    return server


def tcp_flows(client_ns, client_ip, server, count, first_port, rounds=2, size=200):
    """``count`` TCP connections from ``client_ip:first_port+i`` to ``server``; each sends ``rounds`` messages of
    ``size`` bytes, reads each echo back whole, and closes. Returns the client ports used."""
    def make(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((client_ip, port))
        return s
    ports = []
    for i in range(count):
        port = first_port + i
        s = in_netns(client_ns, make, port)
        with s:
            s.settimeout(10)
            s.connect(server)
            for r in range(rounds):
                payload = bytes([65 + (i + r) % 26]) * size
                s.sendall(payload)
                got = b''
                while len(got) < size:
                    chunk = s.recv(size - len(got))
                    if not chunk:
                        raise AssertionError('connection %d closed early' % i)
                    got += chunk
                assert got == payload
        ports.append(port)
    return ports


def udp_flows(lab, client_ns, client_ip, server, count, first_port, rounds=3):
    """``count`` UDP flows from ``client_ip:first_port+i`` to ``server`` (an echoing :meth:`Lab.udp`), ``rounds``
    datagrams each; waits for every echo. Returns the client ports used."""
    ports = []
    for i in range(count):
        port = first_port + i
        cli = lab.udp(client_ns, (client_ip, port))
        assert cli.send(server, rounds) == rounds
        assert cli.wait(rounds, timeout=5, settle=0) == rounds, 'flow %d: echoes missing' % i
        lab.release(cli)
        ports.append(port)
    return ports

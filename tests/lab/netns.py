# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The namespace lab: what a PVE node looks like from the network's point of view.

A :class:`Lab` builds, inside network namespaces that all share one unique prefix:

* a **node** namespace (``lab.node``) holding Linux bridges (``vmbr0``, SDN vnet bridges ...) and
  the host ends of VM NICs, named exactly as PVE names them (``tap100i0``); names never collide
  with the real host because they live in the node namespace;
* one namespace per **guest** (``<prefix>-vm100``) holding the guest ends (``eth0``, ``eth1`` ...)
  with their addresses;
* **clients** (``<prefix>-<name>``): plain hosts on a bridge (host end ``cl-<name>``).

A NIC is a veth pair (``kind='veth'``, fast, the default) or a pair of real tap devices joined by a
small relay process that plays QEMU (``kind='tap'``): the node end is then a true ``tun/tap`` device,
it disappears when the "VM" stops, as with PVE.

Traffic helpers run in this process: sockets are created inside a namespace (by a short-lived thread
that enters it), so nothing needs ``ping`` or a shell:

* :meth:`Lab.udp` - a UDP endpoint that counts what it receives and optionally echoes it;
* :meth:`Lab.capture` - a raw ``AF_PACKET`` counter on one device with a match predicate;
* :meth:`Lab.run` / :meth:`Lab.spawn` - commands (argument lists) in a namespace; spawned
  processes are tracked and killed by :meth:`Lab.close`.

``close()`` stops every thread and process and deletes every namespace (and so every link); it runs
from the ``netlab`` fixture's ``finally`` and from ``with Lab() as lab:``. Namespaces left by a
killed test run (their creator pid is gone) are removed by :func:`cleanup_stale`, which the fixture
calls first.

Usage in a test file::

    from lab.netns import netlab  # noqa: F401

    @pytest.mark.netns
    def test_x(netlab):
        netlab.bridge('vmbr0')
        vm = netlab.vm(100, [('vmbr0', '10.0.0.10/24')])
        cl = netlab.client('c1', 'vmbr0', '10.0.0.2/24')
        srv = netlab.udp(vm.ns, ('10.0.0.10', 5000), echo=True)
        cli = netlab.udp(cl, ('10.0.0.2', 40000))
        cli.send(('10.0.0.10', 5000), 100)
        assert cli.wait(100) == 100
"""
from __future__ import annotations

import fcntl
import itertools
import json
import os
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import pytest

CLONE_NEWNET = 0x40000000
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
SOL_SOCKET = socket.SOL_SOCKET
SO_RCVBUFFORCE = 33
_PREFIX_RE = re.compile(r'^sn(\d+)x\d+-')
_COUNTER = itertools.count(1)
_TUNSETIFF = 0x400454CA
_IFF_TAP = 0x0002
_IFF_NO_PI = 0x1000


def _ip(*args, ns=None, check=True):
    argv = ['ip'] + (['-n', ns] if ns else []) + list(args)
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_stale():
    """Delete lab namespaces whose creating process no longer exists. Returns the names removed."""
    out = _ip('-j', 'netns', 'list', check=False).stdout.strip()
    removed = []
    for entry in json.loads(out) if out else []:
        m = _PREFIX_RE.match(entry.get('name', ''))
        if m and not _pid_alive(int(m.group(1))):
            _ip('netns', 'del', entry['name'], check=False)
            removed.append(entry['name'])
    return removed


def in_netns(ns, fn, *args, **kwargs):
    """Call fn(*args) in a thread that has entered namespace ``ns`` (None: this namespace).

    The namespace of a socket is fixed when it is created, so sockets made here keep working in
    any thread afterwards. The caller's own thread never changes namespace.
    """
    if ns is None:
        return fn(*args, **kwargs)
    box = {}

    def target():
        try:
            fd = os.open('/run/netns/%s' % ns, os.O_RDONLY)
            try:
                os.setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            box['value'] = fn(*args, **kwargs)
        except BaseException as exc:  # re-raised in the caller
            box['error'] = exc

    t = threading.Thread(target=target, name='netns-%s' % ns)
    t.start()
    t.join()
    if 'error' in box:
        raise box['error']
    return box['value']


@dataclass(frozen=True)
class Frame:
    """The parts of an Ethernet frame the predicates look at (None when absent)."""
    src_mac: str
    dst_mac: str
    ethertype: int
    outgoing: bool
    src_ip: str | None = None
    dst_ip: str | None = None
    proto: int | None = None
    sport: int | None = None
    dport: int | None = None
    payload: bytes = b''


def parse_frame(data, outgoing=False):
    """Parse an Ethernet frame (IPv4/UDP/TCP headers when present) into a :class:`Frame`."""
    if len(data) < 14:
        return Frame('', '', 0, outgoing)
    dst, src = data[0:6].hex(':'), data[6:12].hex(':')
    etype = struct.unpack('!H', data[12:14])[0]
    off = 14
    if etype == 0x8100 and len(data) >= 18:
        etype = struct.unpack('!H', data[16:18])[0]
        off = 18
    if etype != 0x0800 or len(data) < off + 20:
        return Frame(src, dst, etype, outgoing)
    ihl = (data[off] & 0x0F) * 4
    proto = data[off + 9]
    sip = socket.inet_ntoa(data[off + 12:off + 16])
    dip = socket.inet_ntoa(data[off + 16:off + 20])
    l4 = off + ihl
    sport = dport = None
    payload = b''
    if proto in (6, 17) and len(data) >= l4 + 4:
        sport, dport = struct.unpack('!HH', data[l4:l4 + 4])
        payload = data[l4 + 8:] if proto == 17 else b''
    return Frame(src, dst, etype, outgoing, sip, dip, proto, sport, dport, payload)


class _Worker:
    """A socket plus a daemon thread reading it; ``stop()`` closes both."""

    def __init__(self, sock):
        self.sock = sock
        self._stop = threading.Event()
        self.error = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            try:
                ready = select.select([self.sock], [], [], 0.1)[0]
                if not ready:
                    continue
                # Drain everything queued before looking at the stop flag again.
                while True:
                    try:
                        data, addr = self.sock.recvfrom(65535, socket.MSG_DONTWAIT)
                    except BlockingIOError:
                        break
                    self._handle(data, addr)
            except (OSError, ValueError) as exc:
                # The device went away (ENETDOWN) or the socket was closed: stop counting.
                self.error = exc
                return

    def _handle(self, data, addr):
        raise NotImplementedError

    def value(self):
        raise NotImplementedError

    def wait(self, expected, timeout=10.0, settle=0.3):
        """Wait until value() >= expected (then ``settle`` s more, so extra packets are seen too),
        or until value() has not changed for ``settle`` s after ``timeout``. Returns value()."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.value() < expected:
            time.sleep(0.02)
        return self.settle(settle)

    def settle(self, quiet=0.3, limit=30.0):
        """Wait until value() stays unchanged for ``quiet`` seconds. Returns value()."""
        end = time.monotonic() + limit
        last = self.value()
        stable_since = time.monotonic()
        while time.monotonic() < end:
            time.sleep(0.02)
            now = self.value()
            if now != last:
                last, stable_since = now, time.monotonic()
            elif time.monotonic() - stable_since >= quiet:
                break
        return last

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2)
        try:
            self.sock.close()
        except OSError:
            pass


class UdpEndpoint(_Worker):
    """A UDP socket bound inside a namespace. Counts datagrams received; echoes them if asked."""

    def __init__(self, sock, echo=False):
        self.echo = echo
        self.received = 0
        self.sources = {}
        super().__init__(sock)

    def _handle(self, data, addr):
        with self._lock:
            self.received += 1
            self.sources[addr] = self.sources.get(addr, 0) + 1
        if self.echo:
            try:
                self.sock.sendto(data, addr)
            except OSError:
                pass

    def value(self):
        return self.received

    def send(self, dst, count, size=64, pps=None):
        """Send ``count`` datagrams of ``size`` bytes to ``dst`` (addr, port); returns how many
        were sent. ``pps`` paces the sender (None: as fast as the socket accepts)."""
        payload = b'x' * size
        gap = 1.0 / pps if pps else 0.0
        start = time.monotonic()
        sent = 0
        for i in range(count):
            if gap:
                delay = start + i * gap - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            while True:
                try:
                    self.sock.sendto(payload, dst)
                    break
                except (BlockingIOError, OSError) as exc:
                    if getattr(exc, 'errno', None) not in (11, 105):  # EAGAIN, ENOBUFS
                        raise
                    time.sleep(0.001)
            sent += 1
        return sent


class PacketCounter(_Worker):
    """Counts frames seen on one device (both directions) that satisfy ``match(frame)``.

    ``dev``: only frames of that device count. A packet socket receives every device's frames from its creation until
    its bind takes effect (packet(7)), so a frame of another device (e.g. loopback) can be queued first.
    """

    def __init__(self, sock, match=None, keep=0, dev=None):
        self.dev = dev
        self.match = match or (lambda f: True)
        self.count = 0
        self.seen = 0
        self.keep = keep
        self.frames = []
        super().__init__(sock)

    def _handle(self, data, addr):
        if self.dev is not None and addr[0] != self.dev:
            return
        frame = parse_frame(data, outgoing=addr[2] == PACKET_OUTGOING)
        with self._lock:
            self.seen += 1
            if self.match(frame):
                self.count += 1
                if len(self.frames) < self.keep:
                    self.frames.append(frame)

    def value(self):
        return self.count

    def drops(self):
        """Frames the kernel dropped for this socket since the last call (PACKET_STATISTICS)."""
        raw = self.sock.getsockopt(263, 6, 8)  # SOL_PACKET, PACKET_STATISTICS
        return struct.unpack('II', raw)[1]


@dataclass
class Nic:
    """One VM NIC: ``host`` is the node-side device (tap100i0), ``guest`` the guest-side one."""
    vmid: int
    index: int
    bridge: str
    host: str
    guest: str
    cidr: str | None
    kind: str
    mac: str = ''
    relay: subprocess.Popen | None = None


@dataclass
class Guest:
    """A VM: its namespace and its NICs (index -> :class:`Nic`)."""
    vmid: int
    ns: str
    nics: dict = field(default_factory=dict)

    @property
    def ip(self):
        """The address of NIC 0 without its prefix length (None when it has none)."""
        cidr = self.nics[0].cidr if 0 in self.nics else None
        return cidr.split('/')[0] if cidr else None


class Lab:
    """One lab: a node namespace, guests and clients, all removed by :meth:`close`."""

    def __init__(self, prefix=None):
        self.prefix = prefix or 'sn%dx%d' % (os.getpid(), next(_COUNTER))
        self._namespaces = []
        self._procs = []
        self._workers = []
        self.guests = {}
        self.clients = {}
        self.bridges = []
        self.node = self.namespace('node')

    # --- lifecycle -------------------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Stop every worker and process, delete every namespace. Safe to call twice."""
        for w in self._workers:
            w.stop()
        self._workers.clear()
        for p in self._procs:
            self._kill(p)
        self._procs.clear()
        for ns in reversed(self._namespaces):
            _ip('netns', 'del', ns, check=False)
        self._namespaces.clear()

    @staticmethod
    def _kill(proc):
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)

    # --- topology --------------------------------------------------------------------------------
    def namespace(self, name):
        """Create namespace ``<prefix>-<name>`` (loopback up, IPv6 off to keep captures quiet)."""
        ns = '%s-%s' % (self.prefix, name)
        _ip('netns', 'add', ns)
        self._namespaces.append(ns)
        _ip('link', 'set', 'lo', 'up', ns=ns)
        for key in ('all', 'default'):
            self.run(ns, ['sysctl', '-q', '-w', 'net.ipv6.conf.%s.disable_ipv6=1' % key])
        return ns

    def bridge(self, name='vmbr0'):
        """Create a Linux bridge in the node namespace (STP off, so ports forward at once)."""
        _ip('link', 'add', name, 'type', 'bridge', 'stp_state', '0', ns=self.node)
        _ip('link', 'set', name, 'up', ns=self.node)
        self.bridges.append(name)
        return name

    def vm(self, vmid, nics, kind='veth'):
        """Create guest namespace ``<prefix>-vm<vmid>`` with one NIC per (bridge, cidr) entry:
        host end ``tap<vmid>i<n>`` in the node on ``bridge``, guest end ``eth<n>`` with ``cidr``
        (cidr may be None). ``kind``: 'veth' or 'tap'. Returns the :class:`Guest`."""
        guest = Guest(vmid, self.namespace('vm%d' % vmid))
        self.guests[vmid] = guest
        for index, (bridge, cidr) in enumerate(nics):
            nic = Nic(vmid, index, bridge, 'tap%di%d' % (vmid, index), 'eth%d' % index, cidr, kind)
            guest.nics[index] = nic
            self._plug(guest, nic)
        return guest

    def client(self, name, bridge, cidr):
        """Create a client namespace ``<prefix>-<name>`` on ``bridge`` (host end ``cl-<name>``,
        client end ``eth0`` with ``cidr``). Returns the namespace name."""
        ns = self.namespace(name)
        host = ('cl-' + name)[:15]
        self._veth(host, ns, 'eth0', bridge, cidr)
        self.clients[name] = ns
        return ns

    def unplug(self, vmid, index=0):
        """Delete one VM NIC (both ends), as a VM stop does."""
        nic = self.guests[vmid].nics[index]
        if nic.relay is not None:
            self._kill(nic.relay)
            self._procs.remove(nic.relay)
            nic.relay = None
        else:
            _ip('link', 'del', nic.host, ns=self.node, check=False)

    def replug(self, vmid, index=0):
        """Create the NIC again (new ifindex, same names and addresses), as a VM start does."""
        guest = self.guests[vmid]
        self._plug(guest, guest.nics[index])

    def restart_nic(self, vmid, index=0):
        """unplug() then replug(): what a VM restart does to its tap device."""
        self.unplug(vmid, index)
        self.replug(vmid, index)

    def _plug(self, guest, nic):
        if nic.kind == 'veth':
            _ip('link', 'add', nic.host, 'type', 'veth', 'peer', 'name', nic.guest,
                'netns', guest.ns, ns=self.node)
        elif nic.kind == 'tap':
            nic.relay = self.spawn(None, [sys.executable, os.path.abspath(__file__), '_taprelay',
                                          self.node, nic.host, guest.ns, nic.guest])
            deadline = time.monotonic() + 10
            while not (self.link(self.node, nic.host) and self.link(guest.ns, nic.guest)):
                if nic.relay.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError('tap relay for %s did not start' % nic.host)
                time.sleep(0.02)
        else:
            raise ValueError('kind must be veth or tap, not %r' % (nic.kind,))
        if nic.mac:  # a VM keeps its configured MAC across restarts
            _ip('link', 'set', nic.guest, 'address', nic.mac, ns=guest.ns)
        self._attach(nic.host, nic.bridge, guest.ns, nic.guest, nic.cidr)
        nic.mac = self.link(guest.ns, nic.guest)['address']

    def _veth(self, host, ns, inner, bridge, cidr):
        _ip('link', 'add', host, 'type', 'veth', 'peer', 'name', inner, 'netns', ns, ns=self.node)
        self._attach(host, bridge, ns, inner, cidr)

    def _attach(self, host, bridge, ns, inner, cidr):
        _ip('link', 'set', host, 'master', bridge, 'up', ns=self.node)
        if cidr:
            _ip('addr', 'add', cidr, 'dev', inner, ns=ns)
        _ip('link', 'set', inner, 'up', ns=ns)

    def link(self, ns, dev):
        """``ip -j -s link show`` of one device as a dict (``stats64`` holds the packet counters),
        or None when it does not exist."""
        res = _ip('-j', '-s', 'link', 'show', 'dev', dev, ns=ns, check=False)
        if res.returncode != 0:
            return None
        data = json.loads(res.stdout or '[]')
        return data[0] if data else None

    # --- processes -------------------------------------------------------------------------------
    def run(self, ns, argv, check=True, timeout=60, input=None, env=None):
        """Run ``argv`` (a list) in namespace ``ns`` (None: here). Returns CompletedProcess (text)."""
        full = (['ip', 'netns', 'exec', ns] if ns else []) + list(argv)
        return subprocess.run(full, check=check, capture_output=True, text=True,
                              timeout=timeout, input=input, env=env)

    def nft_ruleset(self, ns):
        """``nft list ruleset`` in ``ns`` as configuration: counter values are runtime state and are blanked, so
        that a stray frame between two reads (seen once in CI: 1 packet, 54 bytes) does not read as a change."""
        return re.sub(r'packets \d+ bytes \d+', 'packets - bytes -', self.run(ns, ['nft', 'list', 'ruleset']).stdout)

    def spawn(self, ns, argv, **popen):
        """Start ``argv`` in the background in ``ns`` (own process group); killed at close()."""
        full = (['ip', 'netns', 'exec', ns] if ns else []) + list(argv)
        popen.setdefault('stdout', subprocess.DEVNULL)
        popen.setdefault('stderr', subprocess.DEVNULL)
        proc = subprocess.Popen(full, start_new_session=True, **popen)
        self._procs.append(proc)
        return proc

    def stop(self, proc):
        """Stop one process started by spawn()."""
        self._kill(proc)
        if proc in self._procs:
            self._procs.remove(proc)

    # --- traffic ---------------------------------------------------------------------------------
    def udp(self, ns, bind, echo=False):
        """A :class:`UdpEndpoint` bound to ``bind`` (addr, port) inside ``ns``."""
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
            s.bind(bind)
            s.setblocking(False)
            return s
        ep = UdpEndpoint(in_netns(ns, make), echo=echo)
        self._workers.append(ep)
        return ep

    def capture(self, ns, dev, match=None, keep=0):
        """A :class:`PacketCounter` on device ``dev`` in ``ns``; ``keep`` frames are retained."""
        def make():
            s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            s.setsockopt(SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
            s.bind((dev, ETH_P_ALL))
            s.setblocking(False)
            return s
        pc = PacketCounter(in_netns(ns, make), match=match, keep=keep, dev=dev)
        self._workers.append(pc)
        return pc

    def release(self, worker):
        """Stop one endpoint or counter before close()."""
        worker.stop()
        if worker in self._workers:
            self._workers.remove(worker)


def _open_tap(name):
    fd = os.open('/dev/net/tun', os.O_RDWR)
    ifr = struct.pack('16sH', name.encode(), _IFF_TAP | _IFF_NO_PI)
    fcntl.ioctl(fd, _TUNSETIFF, ifr)
    return fd


def _enter(ns):
    fd = os.open('/run/netns/%s' % ns, os.O_RDONLY)
    try:
        os.setns(fd, CLONE_NEWNET)
    finally:
        os.close(fd)


def _taprelay(node_ns, host_name, guest_ns, guest_name):
    """Play QEMU: a tap device in the node, a tap in the guest, frames copied both ways."""
    _enter(node_ns)
    a = _open_tap(host_name)
    _enter(guest_ns)
    b = _open_tap(guest_name)
    peer = {a: b, b: a}
    signal.signal(signal.SIGTERM, lambda *args: sys.exit(0))
    while True:
        ready = select.select([a, b], [], [])[0]
        for fd in ready:
            try:
                os.write(peer[fd], os.read(fd, 65536))
            except OSError:
                pass  # the peer is not up yet / queue full: a lost frame, as on a wire


@pytest.fixture
def netlab():
    """A fresh :class:`Lab`; everything it made is removed afterwards, pass or fail."""
    if os.geteuid() != 0:
        pytest.skip('the namespace lab needs root')
    cleanup_stale()
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


if __name__ == '__main__' and len(sys.argv) == 6 and sys.argv[1] == '_taprelay':
    _taprelay(*sys.argv[2:])


def wait_port(ns, addr, port, proc, timeout=15):
    """Wait until ``addr:port`` accepts TCP connections inside namespace ``ns`` (a server started as ``proc``, a
    Popen, which must not exit meanwhile); RuntimeError when it does not within ``timeout`` seconds."""
    def probe():
        with socket.create_connection((addr, port), timeout=0.5):
            return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError('the server exited with %s' % proc.returncode)
        try:
            return in_netns(ns, probe)
        except OSError:
            time.sleep(0.1)
    raise RuntimeError('nothing listened on %s:%d' % (addr, port))

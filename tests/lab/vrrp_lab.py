# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The vip_failover role's keepalived in the namespace lab: the harness of tests/integration/test_vip_failover.py,
test_failover_manual_failback.py, test_failover_drill.py (through lab/drill_lab.py) and benchmarks/failover_gap.py.

:func:`render` runs the role with ansible-playbook on localhost (service manager ``none``) to render one
keepalived.conf, watchdog configuration and script set per guest; :class:`VrrpLab` runs them: the guests are network
namespaces on one bridge (the PVE node), each with a TCP service (the health check target) and a UDP echo that
answers with its own name. A client namespace probes the VIP every few milliseconds (:class:`Prober`); the gap is the
time from the last answer before the failure to the first answer of the shadow (:func:`measure`,
:func:`failover_cycle`).
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import vrrp
from lab.netns import in_netns
from lab.playbook import VENV_PY, run_ansible

KEEPALIVED = shutil.which('keepalived') or '/usr/sbin/keepalived'
# The watchdog must run under an interpreter keepalived's script security accepts (root-owned path).
GUEST_PY = '/usr/bin/python3' if os.path.exists('/usr/bin/python3') else sys.executable

NET = '10.77.0'
VIP = NET + '.100/24'
ECHO_PORT = 7007
SERVICE_PORT = 8080
GUESTS = {'primary': (101, NET + '.11'), 'shadow': (901, NET + '.12')}

PLAY = """
- hosts: all
  gather_facts: false
  roles:
    - role: shadownet.proxmox.vip_failover
"""

# The lab keeps the role's defaults except a short preempt delay, so fail-back cycles stay quick.
LAB_VARS = {'vip_failover_preempt_delay': 1}

needs_keepalived = pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason='keepalived is not installed')


def unicast_instances(name='web', addrs=None, vip=VIP, port=SERVICE_PORT):
    """``instances`` for :func:`render`: one VRRP instance per guest, unicast between the ``addrs``
    ({role: (vmid, address)}, default GUESTS), with the TCP health check on ``port``."""
    addrs = addrs or GUESTS

    def instances(role):
        peers = [a for r, (dummy, a) in addrs.items() if r != role]
        return [{'name': name, 'interface': 'eth0', 'vip': vip, 'role': role, 'unicast_src_ip': addrs[role][1],
                 'peers': peers, 'check': {'type': 'tcp', 'port': port}}]
    return instances


def render(workdir, extra=None, instances=None):
    """Run the role for the two guests; returns {guest: paths}. ``extra``: role variables for both;
    ``instances``: role -> vip_failover_instances (default :func:`unicast_instances`)."""
    instances = instances or unicast_instances()
    hosts = {}
    for role in GUESTS:
        base = os.path.join(workdir, role)
        insts = instances(role)
        hosts[role] = {
            'vip_failover_config_path': os.path.join(base, 'keepalived.conf'),
            'vip_failover_state_dir': os.path.join(base, 'state'),
            'vip_failover_script_dir': os.path.join(base, 'scripts'),
            'vip_failover_pid_file': os.path.join(base, 'keepalived.pid'),
            'vip_failover_router_id': role,
            'vip_failover_instances': insts,
        }
    inventory = {'all': {'vars': dict({
        'ansible_connection': 'local',
        'ansible_python_interpreter': VENV_PY,
        'vip_failover_service_manager': 'none',
        'vip_failover_install_packages': False,
        'vip_failover_keepalived_bin': KEEPALIVED,
        'vip_failover_python': GUEST_PY,
    }, **(extra or {})), 'hosts': hosts}}
    inv = os.path.join(workdir, 'inventory.json')
    with open(inv, 'w') as handle:
        json.dump(inventory, handle)
    play = os.path.join(workdir, 'play.yml')
    with open(play, 'w') as handle:
        handle.write(PLAY)
    res = run_ansible('ansible-playbook', ['-i', inv, play], timeout=600)
    return res, hosts


Answer = collections.namedtuple('Answer', 'received responder seq sent')


class Prober:
    """Sends a numbered UDP datagram to the VIP every ``interval`` seconds; records who answered which one when."""

    def __init__(self, ns, src, dst, interval=0.005):
        self.dst = dst
        self.interval = interval
        self.replies = []          # Answer(received, responder, request number, request sent), in arrival order
        self.sent = []             # monotonic send time of request n at index n
        self._stop = threading.Event()

        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((src, 0))
            s.settimeout(0.05)
            return s
        self.sock = in_netns(ns, make)
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._recv, daemon=True)]
        for t in self._threads:
            t.start()

    def _send(self):
        seq = 0
        nxt = time.monotonic()
        while not self._stop.is_set():
            self.sent.append(time.monotonic())
            try:
                self.sock.sendto(b'%d' % seq, self.dst)
            except OSError:
                pass
            seq += 1
            nxt += self.interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                nxt = time.monotonic()

    def _recv(self):
        while not self._stop.is_set():
            try:
                data, dummy = self.sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            now = time.monotonic()
            name, dummy, seq = data.partition(b' ')
            try:
                seq = int(seq)
                self.replies.append(Answer(now, name.decode(), seq, self.sent[seq]))
            except (ValueError, IndexError):
                continue

    def since(self, t0):
        """[(time, responder)] received at or after ``t0``."""
        return [r[:2] for r in self.answers(t0)]

    def answers(self, t0):
        """[:class:`Answer`] received at or after ``t0``."""
        return [r for r in list(self.replies) if r[0] >= t0]

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()


def measure(answers, t_fail, new_owner):
    """Gap seen by the client around a failure at ``t_fail`` handled by ``new_owner``; ``answers``
    (:class:`Answer`) as :meth:`Prober.answers` gives them.

    Returns {'gap': seconds from the last answer before the new owner's first one (not earlier than the
    failure) to that first answer (the silence a client saw), or None if it never answered; 'takeover':
    seconds from the failure to that first answer; 'others_after': answers from anyone else to requests sent
    after the first request the new owner answered (two owners at once); 'first': time of that first answer}.

    The new owner's first answer is to a request sent at or after the failure, and ``others_after`` goes by
    request number, not by arrival: a late answer to an earlier request (a starved echo working off its socket,
    or a reply that waited in the kernel for the link and the ARP entry to come back) says nothing about who
    holds the VIP now.
    """
    first = next((a for a in answers if a.sent >= t_fail and a.responder == new_owner), None)
    if first is None:
        return {'gap': None, 'takeover': None, 'others_after': None, 'first': None}
    before = [a.received for a in answers if a.received < first.received]
    last = max([t_fail] + [t for t in before if t >= t_fail - 1.0])
    others = sum(1 for a in answers if a.seq > first.seq and a.responder != new_owner)
    return {'gap': first.received - last, 'takeover': first.received - t_fail, 'others_after': others,
            'first': first.received}


class VrrpLab:
    """Two guests (primary, shadow) running the role's rendered keepalived config, and a client.

    ``addrs`` ({role: (vmid, address)}) and ``vip`` default to this test's subnet; ``macs`` ({role: MAC}) gives the
    guests' NICs fixed MACs; ``client=False`` leaves out the client namespace (and :meth:`start_probe`).
    """

    def __init__(self, lab, hosts, kind='veth', addrs=None, vip=VIP, macs=None, bridge='vmbr0', client=True):
        self.lab = lab
        self.hosts = hosts
        self.vip = vip
        if bridge not in lab.bridges:
            lab.bridge(bridge)
        self.guests = {}
        prefix = vip.split('/')[1]
        for role, (vmid, addr) in (addrs or GUESTS).items():
            guest = lab.vm(vmid, [(bridge, '%s/%s' % (addr, prefix))], kind=kind)
            mac = (macs or {}).get(role)
            if mac:
                lab.run(guest.ns, ['ip', 'link', 'set', 'eth0', 'address', mac.lower()])
                guest.nics[0].mac = mac.lower()
            self.guests[role] = guest
        self.client_ns = lab.client('c1', bridge, NET + '.2/24') if client else None
        self.keepalived = {}
        self.watchdogs = {}
        self.services = {}
        self._stop = threading.Event()
        self._threads = []
        for role, guest in self.guests.items():
            self._reset_state(role)
            self.start_service(role)
            self._echo(role, guest.ns)
            self.start_watchdog(role)
            self.start_keepalived(role)
        self.prober = None
        self.last_cleanup = None

    # --- guest pieces ------------------------------------------------------------------------------
    def ns(self, role):
        return self.guests[role].ns

    def state_dir(self, role):
        return self.hosts[role]['vip_failover_state_dir']

    def script(self, role, name):
        return os.path.join(self.hosts[role]['vip_failover_script_dir'], name)

    def _reset_state(self, role):
        sdir = self.state_dir(role)
        for name in os.listdir(sdir):
            if name.endswith(('.state', '.health', '.beat', '.hold', '.log')) or name.startswith('.'):
                os.unlink(os.path.join(sdir, name))

    def _echo(self, role, ns):
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(('0.0.0.0', ECHO_PORT))
            s.settimeout(0.1)
            return s
        sock = in_netns(ns, make)
        reply = role.encode() + b' '

        def loop():
            while not self._stop.is_set():
                try:
                    data, addr = sock.recvfrom(512)
                    if role in self.services:  # the echo is part of the service: down with it
                        sock.sendto(reply + data, addr)
                except socket.timeout:
                    continue
                except OSError:
                    return
            sock.close()
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self._threads.append(t)

    def start_service(self, role):
        """The TCP service the health check connects to (127.0.0.1:SERVICE_PORT in the guest)."""
        def make():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(('127.0.0.1', SERVICE_PORT))
            s.listen(64)
            s.settimeout(0.1)
            return s
        sock = in_netns(self.ns(role), make)
        stop = threading.Event()

        def loop():
            while not stop.is_set() and not self._stop.is_set():
                try:
                    conn, dummy = sock.accept()
                    conn.close()
                except socket.timeout:
                    continue
                except OSError:
                    break
            sock.close()
        t = threading.Thread(target=loop, daemon=True)
        t.start()
        self.services[role] = (stop, t)

    def stop_service(self, role):
        stop, t = self.services.pop(role)
        stop.set()
        t.join(timeout=2)

    def start_watchdog(self, role):
        self.watchdogs[role] = self.lab.spawn(self.ns(role), [
            GUEST_PY, self.script(role, 'vip-watchdog.py'),
            '--config', os.path.join(self.state_dir(role), 'watchdog.json')])

    def start_keepalived(self, role):
        base = os.path.dirname(self.hosts[role]['vip_failover_config_path'])
        log = open(os.path.join(base, 'keepalived.log'), 'a')
        self.keepalived[role] = self.lab.spawn(self.ns(role), [
            KEEPALIVED, '-P', '-n', '-l', '-D', '-G',
            '-f', self.hosts[role]['vip_failover_config_path'],
            '-p', self.hosts[role]['vip_failover_pid_file'],
            '-r', os.path.join(base, 'vrrp.pid')], stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def stop_keepalived(self, role, sig=signal.SIGTERM):
        proc = self.keepalived.pop(role)
        if sig == signal.SIGKILL:
            # The whole daemon at once (parent and VRRP child), as the OOM killer or a crash would.
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
            self.lab.stop(proc)
        else:
            self.lab.stop(proc)

    def link(self, role, up):
        nic = self.guests[role].nics[0]
        self.lab.run(self.lab.node, ['ip', 'link', 'set', nic.host, 'up' if up else 'down'])

    def has_vip(self, role):
        out = self.lab.run(self.ns(role), ['ip', '-o', 'addr', 'show', 'dev', 'eth0']).stdout
        return (' %s ' % self.vip) in out

    def ctl(self, role, *args):
        return self.lab.run(self.ns(role), [self.script(role, 'vip-ctl.sh')] + list(args), check=False)

    # --- observation -------------------------------------------------------------------------------
    def transitions(self, role):
        try:
            with open(os.path.join(self.state_dir(role), 'transitions.log')) as handle:
                return vrrp.parse_transitions(handle.read())
        except FileNotFoundError:
            return []

    def state(self, role):
        try:
            with open(os.path.join(self.state_dir(role), 'web.state')) as handle:
                st = vrrp.parse_state(handle.read())
        except FileNotFoundError:
            return None
        return st['state'] if st else None

    def events_since(self, wall):
        """Transitions of both members recorded at or after wall-clock time ``wall``: [(member, state)]."""
        return [(r, e['state']) for r in self.guests for e in self.transitions(r) if e['time'] >= wall]

    def settle(self, quiet=1.0, timeout=20.0):
        """Wait until no transition was recorded for ``quiet`` seconds (startup elections are over)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = max([e['time'] for r in self.guests for e in self.transitions(r)] or [0])
            if time.time() - last >= quiet:
                return True
            time.sleep(0.1)
        return False

    def wait_state(self, role, state, timeout=15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.state(role) == state:
                return True
            time.sleep(0.02)
        return False

    def start_probe(self, interval=0.005):
        self.prober = Prober(self.client_ns, NET + '.2', (VIP.split('/', maxsplit=1)[0], ECHO_PORT), interval)
        return self.prober

    def wait_owner(self, owner, quiet=0.3, timeout=15.0):
        """Wait until only ``owner`` has answered for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recent = self.prober.since(time.monotonic() - quiet)
            if len(recent) >= int(quiet / self.prober.interval / 3) and all(w == owner for dummy, w in recent):
                return True
            time.sleep(0.05)
        return False

    # --- failure kinds -----------------------------------------------------------------------------
    def fail(self, kind):
        if kind == 'link':
            self.link('primary', False)
        elif kind == 'stop':
            self.stop_keepalived('primary', signal.SIGTERM)
        elif kind == 'kill':
            self.stop_keepalived('primary', signal.SIGKILL)
        elif kind == 'health':
            self.stop_service('primary')
        elif kind == 'hold':
            self.ctl('primary', 'hold', self.state_dir('primary'), 'web', '1')
        else:
            raise ValueError(kind)

    def repair(self, kind):
        """Remediate the primary the way the failover playbook does."""
        if kind == 'link':
            self.link('primary', True)
        elif kind in ('stop', 'kill'):
            # A killed keepalived left its VIP behind: the cleanup removes it before keepalived starts again.
            self.last_cleanup = self.ctl('primary', 'cleanup', self.state_dir('primary'),
                                         self.hosts['primary']['vip_failover_pid_file']).stdout
            # Lab artifact: the killed VRRP child stays a zombie until PID 1 of this container reaps it, and
            # keepalived refuses to start while its pid file names a live pid (systemd reaps at once).
            vrrp_pid = os.path.join(os.path.dirname(self.hosts['primary']['vip_failover_pid_file']), 'vrrp.pid')
            if kind == 'kill' and os.path.exists(vrrp_pid):
                os.unlink(vrrp_pid)
            self.start_keepalived('primary')
        elif kind == 'health':
            self.start_service('primary')
        elif kind == 'hold':
            self.ctl('primary', 'hold', self.state_dir('primary'), 'web', '0')

    def close(self):
        if self.prober:
            self.prober.stop()
        self._stop.set()
        for stop, dummy in self.services.values():
            stop.set()
        for t in self._threads:
            t.join(timeout=2)


def failover_cycle(vl, kind, settle=1.0, failback_timeout=20.0):
    """One failover and fail-back of ``kind``; returns the figures of this cycle.

    Transitions are attributed to the cycle by their timestamps (the notify FIFO reader's clock), not by line
    counts: under load the reader can record an earlier event after this cycle started.
    """
    wall = time.time()
    t_fail = time.monotonic()
    vl.fail(kind)
    deadline = t_fail + 10
    while time.monotonic() < deadline and not any(w == 'shadow' for dummy, w in vl.prober.since(t_fail)):
        time.sleep(0.01)
    time.sleep(settle)
    took = measure(vl.prober.answers(t_fail - 1.0), t_fail, 'shadow')
    shadow_has_vip = vl.has_vip('shadow')
    primary_has_vip = vl.has_vip('primary')
    t_repair = time.monotonic()
    vl.repair(kind)
    back = vl.wait_state('primary', 'MASTER', timeout=failback_timeout) and vl.wait_owner('primary')
    time.sleep(0.5)
    fb = measure(vl.prober.answers(t_repair), t_repair, 'primary')
    new = {r: [e for e in vl.transitions(r) if e['time'] >= wall] for r in GUESTS}
    masters = {r: sum(1 for e in new[r] if e['state'] == 'MASTER') for r in GUESTS}
    return {
        'kind': kind, 'gap': took['gap'], 'takeover': took['takeover'], 'others_after': took['others_after'],
        'shadow_had_vip': shadow_has_vip, 'primary_had_vip_after_failure': primary_has_vip,
        'failed_back': back, 'failback_gap': fb['gap'], 'failback_others_after': fb['others_after'],
        'masters': masters,
        # Expected per cycle: the shadow becomes MASTER once, the primary becomes MASTER once (fail-back).
        'spurious': max(0, masters['shadow'] - 1) + max(0, masters['primary'] - 1),
        'transitions': new,
    }

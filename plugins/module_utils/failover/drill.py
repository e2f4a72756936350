# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Failover drill: a controlled failover and fail-back of one service through the PVE API, with the gap measured.

The drill does what an operator does to test a failover: it sets ``link_down=1`` on the NIC of every primary of the
service that sits on the VIP's network (digest-checked config updates that keep the MAC and every other NIC
property), waits until the VIP answers again from elsewhere (keepalived moved it to the shadow), lets the shadow
serve for a moment, then writes the primaries' previous NIC strings back (the link comes up; keepalived's
preemption gives the VIP back to the primary, once) and watches for flapping. The links are restored whatever
happens in between (``try``/``finally``).

While it runs, a prober thread sends a probe to ``vip:port`` every ``interval`` milliseconds from where the module
runs (a TCP connect, or a UDP datagram that the service echoes). Each probe becomes a sample
``(monotonic time, ok, who)``: ``who`` is the VM whose MAC address the VIP resolves to in this host's neighbour table
(``/proc/net/arp``) when the answer came, or None when the VIP is not on a network of this host. The figures come
from the samples (pure functions below): the failover gap is the longest silence a client saw from the link-down
request until the shadow answered, the fail-back gap likewise from the restore until a primary answered.
"""


import errno
import math
import re
import selectors
import socket
import threading
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError

PROTOCOLS = ('tcp', 'udp')
DEFAULTS = dict(protocol='tcp', interval=10, probe_timeout=250, hold=2.0, timeout=30.0, settle=2.0,
                payload='shadownet-drill', baseline=3)
ARP_TABLE = '/proc/net/arp'
ARP_COMPLETE = 0x2


def _number(value):
    """``value`` as a finite float, or None (not a number, NaN, an infinity)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


class DrillError(PveApiError):
    """A drill that cannot start or did not complete, with the reason an operator needs."""

    def __init__(self, message, kind='drill', **kwargs):
        super().__init__(message, kind=kind, **kwargs)


# ------------------------------------------------------------------------------------ pure: samples and gaps

def ok_times(samples, start=None, end=None):
    """Times of the answered probes, in order, optionally only those in [start, end]."""
    return sorted(t for t, ok, dummy in samples
                  if ok and (start is None or t >= start) and (end is None or t <= end))


def first_answer(samples, after, accept=None):
    """The first answered sample (t, ok, who) at or after ``after`` whose ``who`` passes ``accept``; None if none."""
    for sample in sorted(s for s in samples if s[1] and s[0] >= after):
        if accept is None or accept(sample[2]):
            return sample
    return None


def longest_silence(samples, start, end):
    """Seconds of the longest stretch in [start, end] without an answer; None if nothing answered in it.

    ``start`` is when the failure was caused (answers before it do not count), ``end`` is usually the first
    answer of the new owner. A silence still running at ``end`` counts up to ``end``.
    """
    times = ok_times(samples, start, end)
    if not times:
        return None
    points = [start] + times + [end]
    return max(b - a for a, b in zip(points, points[1:]))


def switches(samples, start=None):
    """Changes of the answering VM: [(t, from, to)] over answered samples whose ``who`` is known."""
    out = []
    last = None
    for t, ok, who in sorted(samples, key=lambda s: s[0]):
        if not ok or who is None:
            continue
        if last is not None and who != last and (start is None or t >= start):
            out.append((t, last, who))
        last = who
    return out


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000.0, 1)


def summarize(samples, primaries, shadow, down_at, down_done, up_at=None, up_done=None, end=None,
              takeover=None, failback=None):
    """The drill's figures from its probe samples (pure).

    ``primaries`` (names) and ``shadow`` (name) tell owners apart when ``who`` is known. ``down_at``: the link-down
    request was sent; ``down_done``: every link was down; ``up_at``/``up_done`` likewise for the restore; ``end``:
    the end of the observation. ``takeover``/``failback``: the first answers of the new owner (samples), when known.
    """
    primaries = set(primaries)
    end = end if end is not None else max([s[0] for s in samples] or [down_done])
    if takeover is None:
        takeover = first_answer(samples, down_done, lambda who: who is None or who not in primaries)
    out = dict(probes=len(samples), answered=sum(1 for s in samples if s[1]),
               failures=sum(1 for s in samples if not s[1]))
    fo_end = takeover[0] if takeover else (up_at if up_at is not None else end)
    out['failover_gap_ms'] = _ms(longest_silence(samples, down_at, fo_end)) if takeover else None
    out['takeover_ms'] = _ms(takeover[0] - down_at) if takeover else None
    out['failover_answered_by'] = takeover[2] if takeover else None
    out['failover_failures'] = sum(1 for s in samples if not s[1] and down_at <= s[0] <= fo_end)
    answered_by = {}
    for dummy, ok, who in samples:
        if ok:
            key = who if who is not None else 'unknown'
            answered_by[key] = answered_by.get(key, 0) + 1
    out['answered_by'] = answered_by
    out['shadow_answered'] = bool(shadow) and any(s[1] and s[2] == shadow for s in samples)
    changes = switches(samples)
    out['switches'] = [{'at_ms': _ms(t - down_at), 'from': a, 'to': b} for t, a, b in changes]
    if up_at is not None:
        after_up = up_done if up_done is not None else up_at
        if failback is None:
            failback = first_answer(samples, after_up, lambda who: who in primaries)
        fb_end = failback[0] if failback else end
        out['failback_gap_ms'] = _ms(longest_silence(samples, up_at, fb_end))
        out['failback_ms'] = _ms(failback[0] - up_at) if failback else None
        out['failback_answered_by'] = failback[2] if failback else None
        out['failback_failures'] = sum(1 for s in samples if not s[1] and up_at <= s[0] <= fb_end)
        back = [c for c in changes if c[0] >= up_at]
        out['failbacks'] = sum(1 for dummy, a, b in back if b in primaries and a not in primaries)
        # After the primary took the VIP back, any further change is flapping.
        out['flaps'] = sum(1 for t, dummy, dummy2 in back if failback and t > failback[0])
        # The longest silence after the fail-back (a client should see none but the probe interval).
        out['after_failback_silence_ms'] = _ms(longest_silence(samples, fb_end, end)) if failback else None
    return out


def arp_lookup(text, address):
    """The MAC (upper case) of ``address`` in the text of /proc/net/arp when the entry is complete, else None."""
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 4 and parts[0] == address:
            try:
                flags = int(parts[2], 16)
            except ValueError:
                continue
            if flags & ARP_COMPLETE and parts[3] != '00:00:00:00:00:00':
                return parts[3].upper()
    return None


def macs_of(name, cfg):
    """{MAC (upper case, as /proc/net/arp is read): name} for every NIC of a VM config."""
    return dict((mac.upper(), name) for mac in propstr.nic_macs(cfg))


def link_down_string(current):
    """The NIC string with ``link_down=1``, everything else (MAC, bridge, tag, rate ...) as it is."""
    return propstr.format_net(propstr.merge_net(propstr.parse_net(current), {'link_down': '1'}))


def restore_string(current, written, before):
    """What to write back: ``before`` exactly when the NIC is still what the drill wrote, else only link_down
    reverted on what is there now (someone changed the NIC during the drill). None when nothing is to be done."""
    now = propstr.parse_net(current)
    if now == propstr.parse_net(before):
        return None
    if now == propstr.parse_net(written):
        return before
    want = propstr.parse_net(before).get('link_down', '0')
    merged = propstr.format_net(propstr.merge_net(now, {'link_down': want}))
    return None if propstr.parse_net(merged) == now else merged


# ---------------------------------------------------------------------------------------------- the prober

class Prober(object):
    """Probes ``host:port`` every ``interval`` seconds in a thread; ``samples`` holds (t, ok, who).

    tcp: a non-blocking connect per probe (several may be in flight); ok when it completes, failed when it is
    refused or takes longer than ``timeout``. udp: one datagram per probe carrying ``payload`` and a sequence
    number; ok when an answer that contains them arrives within ``timeout`` (from any source address: a service
    bound to all addresses answers from its own). ``identify()`` names the responder.
    """

    def __init__(self, host, port, protocol='tcp', interval=0.01, timeout=0.25, payload='shadownet-drill',
                 identify=None, clock=time.monotonic):
        self.host = host
        self.port = int(port)
        self.protocol = protocol
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.payload = payload.encode('utf-8') if not isinstance(payload, bytes) else payload
        self.identify = identify or (lambda: None)
        self.clock = clock
        self.samples = []
        self.errors = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        self._token = re.compile(re.escape(self.payload) + br' (\d+)')

    def start(self):
        self._thread = threading.Thread(target=self._run, name='drill-prober', daemon=True)
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def snapshot(self):
        with self._lock:
            return list(self.samples)

    def _add(self, t, ok):
        who = self.identify() if ok else None
        with self._lock:
            self.samples.append((t, ok, who))

    def _run(self):
        sel = selectors.DefaultSelector()
        udp = None
        pending = {}  # seq -> (sent, tcp socket or None)
        try:
            if self.protocol == 'udp':
                udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                udp.setblocking(False)
                # Not connected: a service bound to 0.0.0.0 answers from its own address, not from the VIP.
                udp.bind(('0.0.0.0', 0))
                sel.register(udp, selectors.EVENT_READ, None)
            seq = 0
            due = self.clock()
            while not self._stop.is_set():
                now = self.clock()
                if now >= due:
                    self._send(sel, udp, seq, pending, now)
                    seq += 1
                    due += self.interval
                    if due < now:
                        due = now + self.interval
                for key in [k for k, (sent, dummy) in pending.items() if now - sent > self.timeout]:
                    sent, sock = pending.pop(key)
                    self._close(sel, sock)
                    self._add(sent, False)
                wait = max(0.0, min(due - self.clock(), 0.05))
                for key, dummy in sel.select(wait):
                    if key.data is None:
                        self._read_udp(udp, pending)
                    else:
                        self._tcp_done(sel, key, pending)
        except OSError as exc:
            self.errors.append(str(exc))
        finally:
            for dummy, sock in pending.values():
                self._close(sel, sock)
            if udp is not None:
                sel.unregister(udp)
                udp.close()
            sel.close()

    def _send(self, sel, udp, seq, pending, now):
        if udp is not None:
            try:
                udp.sendto(self.payload + b' ' + str(seq).encode(), (self.host, self.port))
            except OSError:
                pass  # no route / refused by an ICMP error: the probe times out as a failure
            pending[seq] = (now, None)
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        # No TIME_WAIT pile-up from a hundred probes a second.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\x01\x00\x00\x00\x00\x00\x00\x00')
        code = sock.connect_ex((self.host, self.port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._add(now, False)
            return
        pending[seq] = (now, sock)
        sel.register(sock, selectors.EVENT_WRITE, seq)

    def _read_udp(self, udp, pending):
        while True:
            try:
                data = udp.recvfrom(2048)[0]
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error queued on the socket (port unreachable): no answer
            found = self._token.search(data)
            if found and int(found.group(1)) in pending:
                pending.pop(int(found.group(1)))
                self._add(self.clock(), True)

    def _tcp_done(self, sel, key, pending):
        seq = key.data
        entry = pending.pop(seq, None)
        sock = key.fileobj
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self._close(sel, sock)
        if entry is not None:
            self._add(self.clock() if err == 0 else entry[0], err == 0)

    @staticmethod
    def _close(sel, sock):
        if sock is None:
            return
        try:
            sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()


def neighbour_identify(address, macs, path=ARP_TABLE):
    """A callable naming the VM whose MAC the VIP resolves to here (None when unknown)."""
    def identify():
        try:
            with open(path) as handle:
                mac = arp_lookup(handle.read(), address)
        except OSError:
            return None
        return macs.get(mac) if mac else None
    return identify


# ---------------------------------------------------------------------------------------------- the runner

class Drill(object):
    """One drill of one service. ``failover`` is a module_utils.failover.Failover (for its read-only detect)."""

    def __init__(self, api, failover, options, check_mode=False, clock=time.monotonic, sleep=time.sleep,
                 prober_factory=Prober):
        self.api = api
        self.fo = failover
        self.plan = failover.plan
        self.service = failover.service
        self.opts = dict(DEFAULTS)
        self.opts.update(dict((k, v) for k, v in (options or {}).items() if v is not None))
        self.check_mode = check_mode
        self.clock = clock
        self.sleep = sleep
        self.prober_factory = prober_factory
        self.result = failover.result
        self.downed = []       # NICs the drill set down and has not restored yet

    def _line(self, text):
        self.result['lines'].append('drill: {0}'.format(text))

    def vrrp_entry(self):
        for entry in self.plan.get('vrrp') or []:
            if entry.get('service') == self.service:
                return entry
        raise DrillError('service {0!r} has no VIP in the plan: there is no failover to drill'.format(self.service),
                         kind='config')

    def refusals(self, report, configs, nics, pending=None):
        """Why the service is not healthy enough to drill (empty: go). ``pending``: {vm name: the config keys with a
        change pending until a restart}."""
        reasons = []
        if not report['quorate']:
            reasons.append('the cluster has lost quorum')
        for view in report['primaries']:
            if not view['healthy']:
                reasons.append('{0} is down ({1})'.format(view['name'], view['problem']))
            elif view['lock']:
                reasons.append('{0} is locked ({1})'.format(view['name'], view['lock']))
        shadow = report['shadow']
        if shadow is None:
            reasons.append('service {0!r} has no shadow to fail over to'.format(self.service))
        elif not shadow['healthy']:
            reasons.append('shadow {0} is not running ({1})'.format(shadow['name'], shadow['problem']))
        else:
            if shadow.get('lock'):
                reasons.append('shadow {0} is locked ({1})'.format(shadow['name'], shadow['lock']))
            if shadow.get('active'):
                reasons.append('shadow {0} is already active (a failover is in progress since {1})'.format(
                    shadow['name'], shadow.get('active_since')))
        if shadow is not None and report.get('vip_master') == shadow['name']:
            reasons.append('the VIP is on the shadow {0} already'.format(shadow['name']))
        for name, key in nics:
            cfg = configs.get(name) or {}
            if key not in cfg:
                reasons.append('{0} has no {1} (the NIC on the VIP network)'.format(name, key))
            elif propstr.parse_net(cfg[key]).get('link_down') == '1':
                reasons.append('{0} {1} has link_down=1 already'.format(name, key))
            elif key in (pending or {}).get(name, ()):
                # GET config answers with pending values applied (qemu-server vm_config without `current`): the
                # drill's write of that value would carry the pending change out now, on a running primary
                reasons.append('{0} {1} has a change pending until a restart (the drill\'s link_down write would '
                               'apply it now): restart {0} or revert it (`qm set <vmid> --revert {1}`) first'.format(
                                   name, key))
        return reasons

    def run(self):
        self.check_options()
        result = self.result
        report = self.fo.detect_step()
        entry = self.vrrp_entry()
        vip = str(entry['vip']).split('/', maxsplit=1)[0]
        nic_of = dict((m['vm'], int(m.get('nic') or 0)) for m in entry.get('members') or [])
        views = dict((v['name'], v) for v in report['primaries'])
        nics = [(v['name'], 'net{0}'.format(nic_of.get(v['name'], 0))) for v in report['primaries']]
        configs = {}
        for view in report['primaries'] + ([report['shadow']] if report['shadow'] else []):
            if view['exists'] and view['node_online']:
                configs[view['name']] = self.api.vm_config(view['node'], view['vmid'])[0]
        pending = {}
        for view in report['primaries']:
            if view['name'] in configs:
                pending[view['name']] = set(self.api.vm_pending(view['node'], view['vmid']))
        reasons = self.refusals(report, configs, nics, pending)
        if reasons:
            raise DrillError('not starting the drill of {0}: {1}. A drill needs a healthy service (every primary '
                             'up and unlocked, the shadow running, standing by and unlocked).'.format(
                                 self.service, '; '.join(reasons)))
        shadow = report['shadow']['name']
        primaries = [name for name, dummy in nics]
        plan = []
        for name, key in nics:
            view = views[name]
            before = configs[name][key]
            plan.append(dict(name=name, vmid=view['vmid'], node=view['node'], nic=key, before=before,
                             down=link_down_string(before)))
        out = dict(vip=vip, port=int(self.opts['port']), protocol=self.opts['protocol'],
                   interval_ms=int(self.opts['interval']), shadow=shadow, primaries=primaries,
                   links=[dict((k, p[k]) for k in ('name', 'vmid', 'node', 'nic', 'before', 'down')) for p in plan])
        result['drill'] = out
        result['steps'].append('drill')
        result['changed'] = True
        target = '{0}:{1}/{2}'.format(vip, out['port'], out['protocol'])
        if self.check_mode:
            out['would'] = True
            nic_names = ', '.join('{0} {1}'.format(p['name'], p['nic']) for p in plan)
            self._line('would set link_down=1 on {0}, wait until the shadow {1} answers on {2}, restore the links '
                       'and wait for the fail-back'.format(nic_names, shadow, target))
            return result
        self.api.require_quorum()
        macs = {}
        for name, cfg in configs.items():
            macs.update(macs_of(name, cfg))
        prober = self.prober_factory(vip, out['port'], protocol=out['protocol'],
                                     interval=out['interval_ms'] / 1000.0,
                                     timeout=float(self.opts['probe_timeout']) / 1000.0,
                                     payload=self.opts['payload'], identify=neighbour_identify(vip, macs),
                                     clock=self.clock)
        prober.start()
        try:
            self._drill(prober, plan, out, primaries, shadow, target)
        finally:
            out['restored'] = False
            try:
                self._restore_all()
                out['restored'] = True
            finally:
                prober.stop()
        return result

    def check_options(self):
        opts = self.opts
        problems = []
        port = _number(opts.get('port'))
        if port is None or not port.is_integer() or not 0 < port < 65536:
            problems.append('drill.port must be a port number (1-65535)')
        if opts['protocol'] not in PROTOCOLS:
            problems.append('drill.protocol must be one of {0}'.format(', '.join(PROTOCOLS)))
        if any(v is None or v < 1 for v in (_number(opts['interval']), _number(opts['probe_timeout']))):
            problems.append('drill.interval and drill.probe_timeout are milliseconds, at least 1')
        timeout, hold, settle = (_number(opts[k]) for k in ('timeout', 'hold', 'settle'))
        if timeout is None or timeout <= 0 or hold is None or hold < 0 or settle is None or settle < 0:
            problems.append('drill.timeout must be more than 0 seconds, drill.hold and drill.settle at least 0 '
                            '(finite numbers)')
        if problems:
            raise DrillError('; '.join(problems), kind='config')

    def _wait(self, prober, after, accept, what, target):
        deadline = self.clock() + float(self.opts['timeout'])
        while True:
            found = first_answer(prober.snapshot(), after, accept)
            if found is not None:
                return found
            if self.clock() >= deadline:
                raise DrillError('{0} within {1}s ({2} probes of {3}, {4} answered){5}'.format(
                    what, self.opts['timeout'], len(prober.samples), target,
                    sum(1 for s in prober.snapshot() if s[1]),
                    '; prober error: {0}'.format(prober.errors[-1]) if prober.errors else ''))
            self.sleep(0.02)

    def _drill(self, prober, plan, out, primaries, shadow, target):
        start = self.clock()
        # Baseline: the VIP answers from here, and from a primary (when the responder can be told).
        need = int(self.opts['baseline'])
        deadline = start + float(self.opts['timeout'])
        while sum(1 for s in prober.snapshot() if s[1]) < need:
            if self.clock() >= deadline:
                raise DrillError('not starting the drill of {0}: the VIP does not answer from here ({1}: {2} '
                                 'probes, none answered within {3}s){4}'.format(
                                     self.service, target, len(prober.samples), self.opts['timeout'],
                                     '; prober error: {0}'.format(prober.errors[-1]) if prober.errors else ''))
            self.sleep(0.02)
        baseline = [s for s in prober.snapshot() if s[1]]
        owner = baseline[-1][2]
        out['identified'] = owner is not None
        if owner == shadow:
            raise DrillError('not starting the drill of {0}: the VIP answers from the shadow {1}'.format(
                self.service, shadow))
        if owner is None:
            self.result['warnings'].append(
                'drill: the VIP {0} is not in the neighbour table of this host (not on its network), so the responder '
                'cannot be told apart: the fail-back is timed over settle ({1}s) only'.format(
                    out['vip'], self.opts['settle']))
        out['owner_before'] = owner
        marks = {}
        marks['down_at'] = self.clock()
        for item in plan:
            self._set_down(item)
        marks['down_done'] = self.clock()
        takeover = self._wait(prober, marks['down_done'], lambda who: who is None or who not in primaries,
                              'the VIP did not answer again after the link of {0} went down'.format(
                                  ', '.join(primaries)), target)
        self.sleep(float(self.opts['hold']))
        marks['up_at'] = self.clock()
        self._restore_all()
        marks['up_done'] = self.clock()
        failback = None
        if out['identified']:
            failback = self._wait(prober, marks['up_done'], lambda who: who in primaries,
                                  'no primary took the VIP back after its link came up (keepalived preempt_delay '
                                  'longer than drill.timeout, or failback manual/nopreempt: then fail back with the '
                                  'vip_failover role, tasks_from hold)', target)
        self.sleep(float(self.opts['settle']))
        marks['end'] = self.clock()
        figures = summarize(prober.snapshot(), primaries, shadow, takeover=takeover, failback=failback, **marks)
        out.update(figures)
        self._line('failover gap {0} ms (the VIP answered from {1} {2} ms after link_down), fail-back gap {3} ms '
                   '({4} fail-back{5}, {6} flap{7}); {8} probes of {9} every {10} ms, {11} unanswered'.format(
                       figures['failover_gap_ms'], figures['failover_answered_by'] or 'an unknown host',
                       figures['takeover_ms'], figures['failback_gap_ms'], figures.get('failbacks'),
                       '' if figures.get('failbacks') == 1 else 's', figures.get('flaps'),
                       '' if figures.get('flaps') == 1 else 's', figures['probes'], target, out['interval_ms'],
                       figures['failures']))

    def _set_down(self, item):
        def compute(cfg):
            current = cfg.get(item['nic'])
            if current is None:
                raise DrillError('{0} lost its {1} before the drill could set it down'.format(
                    item['name'], item['nic']))
            item['written'] = link_down_string(current)
            item['before'] = current
            return ({item['nic']: item['written']} if item['written'] != current else {}), []
        # Registered first: a failure after PVE took the write must still restore the link.
        self.downed.append(item)
        self.api.update_vm_config(item['node'], item['vmid'], compute)

    def _restore_all(self):
        errors = []
        while self.downed:
            item = self.downed[0]

            def compute(cfg, item=item):
                current = cfg.get(item['nic'])
                if current is None:
                    return {}, []
                want = restore_string(current, item.get('written') or item['down'], item['before'])
                if want is not None and propstr.parse_net(want) != propstr.parse_net(item['before']):
                    self.result['warnings'].append(
                        'drill: {0} {1} changed during the drill; only link_down was restored ({2})'.format(
                            item['name'], item['nic'], want))
                return ({item['nic']: want} if want is not None else {}), []
            try:
                self.api.update_vm_config(item['node'], item['vmid'], compute)
            except PveApiError as exc:
                errors.append('{0} {1}: {2}'.format(item['name'], item['nic'], exc.message))
            self.downed.pop(0)
        if errors:
            raise DrillError('the drill could not restore the link of {0}: set link_down=0 on it by hand (qm set '
                             '<vmid> --<nic> ... without link_down)'.format('; '.join(errors)))

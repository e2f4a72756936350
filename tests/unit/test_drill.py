"""The failover drill's pure parts: gaps from probe samples, neighbour table, NIC strings; the prober on loopback."""
import socket
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import drill as drill_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr

P, S = 'shop-web-1', 'shop-web-shadow'


def run(start, end, step, ok, who):
    """Samples every ``step`` seconds in [start, end)."""
    out = []
    t = start
    while t < end - 1e-9:
        out.append((round(t, 6), ok, who if ok else None))
        t += step
    return out


def drill_samples():
    """Primary answers until 1.05, silence until 1.30 (link down at 1.00), shadow until 3.20, silence, primary
    from 3.25 (links restored at 3.00, preemption at 3.25)."""
    return (run(0.0, 1.06, 0.01, True, P) + run(1.06, 1.30, 0.01, False, None) + run(1.30, 3.20, 0.01, True, S)
            + run(3.20, 3.25, 0.01, False, None) + run(3.25, 4.00, 0.01, True, P))


def test_longest_silence_counts_from_the_failure_to_the_first_answer():
    samples = [(0.0, True, P), (0.5, True, P), (0.9, False, None), (1.4, True, S), (1.5, True, S)]
    assert drill_utils.longest_silence(samples, 0.6, 1.4) == pytest.approx(0.8)   # 0.6 (failure) -> 1.4
    assert drill_utils.longest_silence(samples, 0.0, 1.5) == pytest.approx(0.9)   # 0.5 -> 1.4
    assert drill_utils.longest_silence(samples, 0.95, 1.2) is None                # nothing answered in the window
    # A silence still running at the end of the window counts up to the end.
    assert drill_utils.longest_silence(samples + [(3.0, False, None)], 1.45, 3.0) == pytest.approx(1.5)


def test_first_answer_and_switches():
    samples = drill_samples()
    assert drill_utils.first_answer(samples, 1.0, lambda who: who != P)[0] == pytest.approx(1.30)
    assert drill_utils.first_answer(samples, 3.0, lambda who: who == P)[0] == pytest.approx(3.25)
    assert drill_utils.first_answer(samples, 5.0) is None
    changes = drill_utils.switches(samples)
    assert [(round(t, 2), a, b) for t, a, b in changes] == [(1.30, P, S), (3.25, S, P)]
    # Samples without a known responder do not make a change.
    assert drill_utils.switches([(0, True, P), (1, True, None), (2, True, P)]) == []


def test_summarize_a_clean_drill():
    out = drill_utils.summarize(drill_samples(), [P, 'shop-web-2'], S, down_at=1.0, down_done=1.02, up_at=3.0,
                                up_done=3.01, end=4.0)
    assert out['failover_gap_ms'] == pytest.approx(250.0, abs=0.5)   # last primary answer 1.05 -> shadow 1.30
    assert out['takeover_ms'] == pytest.approx(300.0, abs=0.5)
    assert out['failover_answered_by'] == S and out['shadow_answered']
    assert out['failback_gap_ms'] == pytest.approx(60.0, abs=0.5)    # last shadow answer 3.19 -> primary 3.25
    assert out['failback_ms'] == pytest.approx(250.0, abs=0.5)
    assert out['failback_answered_by'] == P
    assert out['failbacks'] == 1 and out['flaps'] == 0
    assert out['after_failback_silence_ms'] == pytest.approx(10.0, abs=0.5)
    assert out['failover_failures'] == 24 and out['failback_failures'] == 5
    assert out['probes'] == out['answered'] + out['failures'] == 400
    assert set(out['answered_by']) == {P, S}
    assert [s['to'] for s in out['switches']] == [S, P]


def test_summarize_a_flapping_and_an_unanswered_drill():
    flapping = drill_samples() + run(4.0, 4.2, 0.01, True, S) + run(4.2, 4.5, 0.01, True, P)
    out = drill_utils.summarize(flapping, [P], S, down_at=1.0, down_done=1.02, up_at=3.0, up_done=3.01, end=4.5)
    assert out['failbacks'] == 2 and out['flaps'] == 2
    # The shadow never answered: no failover figures, and the failures are counted.
    silent = run(0.0, 1.0, 0.01, True, P) + run(1.0, 2.0, 0.01, False, None)
    out = drill_utils.summarize(silent, [P], S, down_at=1.0, down_done=1.0, end=2.0)
    assert out['failover_gap_ms'] is None and out['takeover_ms'] is None and not out['shadow_answered']
    assert out['failover_failures'] == 100
    # Responders unknown (the VIP is not on this host's network): gaps still come from the silences; any answer
    # after every link is down is the new owner's.
    blind = [(t, ok, None) for t, ok, dummy in drill_samples()]
    out = drill_utils.summarize(blind, [P], S, down_at=1.0, down_done=1.06, up_at=3.0, up_done=3.01, end=4.0)
    assert out['failover_gap_ms'] == pytest.approx(250.0, abs=0.5) and out['failover_answered_by'] is None
    assert out['failback_gap_ms'] == pytest.approx(60.0, abs=0.5) and out['failback_ms'] is None
    assert out['failbacks'] == 0 and out['answered_by'] == {'unknown': sum(1 for s in blind if s[1])}


ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.10.0.100      0x1         0x2         bc:24:11:00:00:01     *        sn-drill0
10.10.0.11       0x1         0x0         00:00:00:00:00:00     *        sn-drill0
10.10.0.12       0x1         0x2         bc:24:11:00:00:02     *        sn-drill0
"""


def test_arp_lookup_and_macs():
    assert drill_utils.arp_lookup(ARP, '10.10.0.100') == 'BC:24:11:00:00:01'
    assert drill_utils.arp_lookup(ARP, '10.10.0.11') is None        # incomplete entry
    assert drill_utils.arp_lookup(ARP, '10.10.0.1') is None
    cfg = {'net0': 'virtio=BC:24:11:00:00:01,bridge=front', 'net1': 'virtio=bc:24:11:00:00:09,bridge=back',
           'cores': 2}
    assert drill_utils.macs_of(P, cfg) == {'BC:24:11:00:00:01': P, 'BC:24:11:00:00:09': P}


def test_identify_reads_the_neighbour_table(tmp_path):
    path = tmp_path / 'arp'
    path.write_text(ARP)
    ident = drill_utils.neighbour_identify('10.10.0.100', {'BC:24:11:00:00:01': P}, path=str(path))
    assert ident() == P
    assert drill_utils.neighbour_identify('10.10.0.12', {}, path=str(path))() is None
    assert drill_utils.neighbour_identify('10.10.0.100', {}, path=str(tmp_path / 'missing'))() is None


def test_link_down_and_restore_keep_every_other_property():
    before = 'virtio=BC:24:11:AA:BB:CC,bridge=front,firewall=1,rate=100,tag=10'
    down = drill_utils.link_down_string(before)
    assert propstr.parse_net(down) == dict(propstr.parse_net(before), link_down='1')
    assert down.startswith('virtio=BC:24:11:AA:BB:CC,')
    # Restore: the exact previous string when the NIC is still what the drill wrote.
    assert drill_utils.restore_string(down, down, before) == before
    # Already restored: nothing to write.
    assert drill_utils.restore_string(before, down, before) is None
    # Someone changed the rate meanwhile: only link_down goes back, their change stays.
    changed = down.replace('rate=100', 'rate=50')
    restored = drill_utils.restore_string(changed, down, before)
    assert propstr.parse_net(restored) == dict(propstr.parse_net(before), rate='50')


@pytest.fixture
def udp_echo():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(('127.0.0.1', 0))
    sock.settimeout(0.05)
    state = {'on': True, 'stop': False}

    def loop():
        while not state['stop']:
            try:
                data, addr = sock.recvfrom(512)
            except socket.timeout:
                continue
            except OSError:
                return
            if state['on']:
                sock.sendto(b'guest ' + data, addr)
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield sock.getsockname()[1], state
    state['stop'] = True
    thread.join(2)
    sock.close()


def test_prober_udp_sees_a_silence(udp_echo):
    port, state = udp_echo
    prober = drill_utils.Prober('127.0.0.1', port, protocol='udp', interval=0.005, timeout=0.1,
                                identify=lambda: 'guest').start()
    try:
        time.sleep(0.3)
        state['on'] = False
        off = time.monotonic()
        time.sleep(0.3)
        state['on'] = True
        on = time.monotonic()
        time.sleep(0.3)
    finally:
        prober.stop()
    samples = prober.snapshot()
    assert prober.errors == []
    assert sum(1 for s in samples if s[1]) > 50 and all(s[2] == 'guest' for s in samples if s[1])
    assert any(not s[1] for s in samples if off + 0.01 < s[0] < on - 0.01)
    gap = drill_utils.longest_silence(samples, off - 0.1, on + 0.2)
    assert 0.25 < gap < 0.8, gap


def test_prober_tcp_counts_connects_and_refusals():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(('127.0.0.1', 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    stop = threading.Event()

    def accept():
        listener.settimeout(0.05)
        while not stop.is_set():
            try:
                conn, dummy = listener.accept()
                conn.close()
            except socket.timeout:
                continue
            except OSError:
                return
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    prober = drill_utils.Prober('127.0.0.1', port, protocol='tcp', interval=0.01, timeout=0.2).start()
    try:
        time.sleep(0.3)
        stop.set()
        thread.join(2)
        listener.close()
        closed = time.monotonic()
        time.sleep(0.3)
    finally:
        prober.stop()
    samples = prober.snapshot()
    assert sum(1 for t, ok, dummy in samples if ok and t < closed) > 5
    # A closed port refuses at once: unanswered probes, no answers after the close.
    assert sum(1 for t, ok, dummy in samples if not ok and t > closed) > 5
    assert not any(ok for t, ok, dummy in samples if t > closed + 0.05)


# ------------------------------------------------------------------------------ the runner, with fakes

class FakeApi(object):
    """Configs with digests; update_vm_config as api.PveApi does it (compute -> PUT of the changes)."""

    def __init__(self, configs, fail_on=None):
        self.configs = configs          # vmid -> config
        self.writes = []                # (vmid, changes)
        self.fail_on = fail_on          # index of the write that fails

    def vm_config(self, node, vmid):
        return dict(self.configs[vmid]), 'digest-%d' % len(self.writes)

    def update_vm_config(self, node, vmid, compute, check_mode=False):
        before = dict(self.configs[vmid])
        changes, deletes = compute(dict(before))
        if changes and not check_mode:
            if self.fail_on == len(self.writes):
                self.writes.append((vmid, 'FAILED'))
                raise drill_utils.PveApiError('got timeout', kind='lock')
            self.writes.append((vmid, dict(changes)))
            self.configs[vmid].update(changes)
        return before, changes, deletes

    def require_quorum(self):
        pass

    def vm_pending(self, node, vmid):
        return {}

    def down(self):
        return [vmid for vmid, cfg in self.configs.items()
                if propstr.parse_net(cfg.get('net0')).get('link_down') == '1']


class FakeFailover(object):
    def __init__(self, report, plan):
        self.plan = plan
        self.service = 'web'
        self.report = report
        self.result = dict(changed=False, steps=[], lines=[], warnings=[])

    def detect_step(self):
        self.result['detect'] = self.report
        self.result['steps'].append('detect')
        self.result['lines'].append('detect: fake')
        return self.report


def view(name, vmid, **extra):
    out = dict(name=name, vmid=vmid, node='pve1', exists=True, node_online=True, healthy=True, problem=None,
               lock=None, active=False, active_since=None)
    out.update(extra)
    return out


def setup(fail_on=None, primaries=2):
    configs = {100 + i: {'net0': 'virtio=BC:24:11:00:00:0%d,bridge=vmbr0,firewall=1' % i} for i in range(primaries)}
    configs[200] = {'net0': 'virtio=BC:24:11:00:00:20,bridge=smirror', 'net1': 'virtio=BC:24:11:00:00:21,bridge=vmbr0'}
    names = dict((100 + i, 'web-%d' % (i + 1)) for i in range(primaries))
    report = dict(primaries=[view(names[v], v) for v in sorted(names)], shadow=view('web-shadow', 200),
                  quorate=True, vip_master=None)
    plan = {'vrrp': [{'service': 'web', 'vip': '10.0.0.100/24',
                      'members': [{'vm': n, 'nic': 0} for n in names.values()] + [{'vm': 'web-shadow', 'nic': 1}]}]}
    return FakeApi(configs, fail_on), FakeFailover(report, plan), names


class Clock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, secs):
        self.now += max(secs, 0.001)


def fake_prober(api, clock, made, shadow_answers=True):
    """A prober whose VIP answers from web-1 while its link is up, from the shadow while every link is down."""
    class Prober(object):
        def __init__(self, vip, port, **kwargs):
            self.samples, self.errors = [], []
            made.append(self)

        def start(self):
            return self

        def stop(self):
            self.stopped = True

        def snapshot(self):
            down = api.down()
            if not down:
                who = 'web-1'
            elif len(down) == len(api.configs) - 1 and shadow_answers:
                who = 'web-shadow'
            else:
                who = None
            self.samples.append((clock(), who is not None, who))
            return list(self.samples)
    return Prober


def make(api, fo, clock, made, check_mode=False, **opts):
    options = dict(port=80, hold=0.1, settle=0.1, timeout=1.0)
    options.update(opts)
    return drill_utils.Drill(api, fo, options, check_mode=check_mode, clock=clock, sleep=clock.sleep,
                             prober_factory=fake_prober(api, clock, made))


def test_runner_downs_every_primary_and_restores_each_exact_string():
    api, fo, dummy = setup()
    before = dict((v, dict(c)) for v, c in api.configs.items())
    clock, made = Clock(), []
    result = make(api, fo, clock, made).run()
    assert [(v, propstr.parse_net(c['net0']).get('link_down')) for v, c in api.writes] == [
        (100, '1'), (101, '1'), (100, None), (101, None)]
    assert [c['net0'] for v, c in api.writes[2:]] == [before[100]['net0'], before[101]['net0']]
    assert api.configs == before and made[0].stopped
    out = result['drill']
    assert out['failover_answered_by'] == 'web-shadow' and out['failback_answered_by'] == 'web-1'
    assert out['failbacks'] == 1 and out['flaps'] == 0 and out['restored']
    # Bad options are refused before anything is read.
    for bad in (dict(port=0), dict(interval=0), dict(timeout=0), dict(hold=-1), dict(protocol='icmp')):
        with pytest.raises(drill_utils.DrillError) as exc:
            make(api, fo, clock, made, **bad).run()
        assert exc.value.kind == 'config', bad
    assert len(made) == 1
    assert [link['nic'] for link in out['links']] == ['net0', 'net0']


def test_runner_restores_what_it_set_down_when_a_write_fails():
    api, fo, dummy = setup(fail_on=1)
    before = dict((v, dict(c)) for v, c in api.configs.items())
    clock, made = Clock(), []
    with pytest.raises(drill_utils.PveApiError) as exc:
        make(api, fo, clock, made).run()
    assert exc.value.kind == 'lock'
    # web-1 went down, web-2's write failed, web-1 came back; web-2 (never changed) is left alone.
    assert [v for v, dummy2 in api.writes] == [100, 101, 100]
    assert api.configs == before and made[0].stopped


def test_runner_restores_on_timeout_and_keeps_a_change_made_meanwhile():
    api, fo, dummy = setup(primaries=1)
    before = api.configs[100]['net0']
    clock, made = Clock(), []

    class Meddled(drill_utils.Drill):
        def _set_down(self, item):
            super()._set_down(item)
            # An operator changes the rate while the link is down.
            api.configs[100]['net0'] += ',rate=50'
    # Nobody takes the VIP over: the drill times out.
    runner = Meddled(api, fo, dict(port=80, timeout=0.5), clock=clock, sleep=clock.sleep,
                     prober_factory=fake_prober(api, clock, made, shadow_answers=False))
    with pytest.raises(drill_utils.DrillError) as exc:
        runner.run()
    assert 'the VIP did not answer again after the link of web-1 went down within 0.5s' in exc.value.message
    assert len(api.writes) == 2 and made[0].stopped
    assert fo.result['drill']['restored'] is True
    restored = propstr.parse_net(api.configs[100]['net0'])
    assert restored == dict(propstr.parse_net(before), rate='50')
    assert any('changed during the drill; only link_down was restored' in w for w in fo.result['warnings'])


def test_runner_check_mode_and_refusals_write_nothing():
    api, fo, dummy = setup()
    clock, made = Clock(), []
    result = make(api, fo, clock, made, check_mode=True).run()
    assert api.writes == [] and made == [] and result['drill']['would'] and result['changed']
    # A NIC already down, a locked primary, the VIP on the shadow: refused before anything.
    api, fo, dummy = setup()
    api.configs[101]['net0'] += ',link_down=1'
    fo.report['primaries'][0]['lock'] = 'backup'
    fo.report['vip_master'] = 'web-shadow'
    with pytest.raises(drill_utils.DrillError) as exc:
        make(api, fo, clock, made).run()
    msg = exc.value.message
    assert 'web-1 is locked (backup)' in msg and 'web-2 net0 has link_down=1 already' in msg
    assert 'the VIP is on the shadow web-shadow already' in msg
    assert api.writes == [] and made == []


@pytest.mark.parametrize('opts', [dict(timeout=float('nan')), dict(timeout=float('inf')), dict(hold=float('nan')),
                                  dict(port='eighty'), dict(interval='fast'), dict(port=80.5)])
def test_options_that_are_not_finite_numbers_are_refused_before_any_write(opts):
    """NaN passed the drill's `timeout <= 0` check (every comparison with NaN is false), an infinity waited for
    ever, and a word where a number goes raised ValueError from int()."""
    api, fo, dummy = setup()
    clock, made = Clock(), []
    with pytest.raises(drill_utils.DrillError) as exc:
        make(api, fo, clock, made, **opts).run()
    assert exc.value.kind == 'config' and 'drill.' in exc.value.message
    assert api.writes == [] and made == []

"""The failover drill's pure parts: gaps from probe samples, neighbour table, NIC strings; the prober on loopback."""
import socket
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import drill
from ansible_collections.shadownet.proxmox.plugins.module_utils import propstr

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
    assert drill.longest_silence(samples, 0.6, 1.4) == pytest.approx(0.8)   # 0.6 (failure) -> 1.4
    assert drill.longest_silence(samples, 0.0, 1.5) == pytest.approx(0.9)   # 0.5 -> 1.4
    assert drill.longest_silence(samples, 0.95, 1.2) is None                # nothing answered in the window
    # A silence still running at the end of the window counts up to the end.
    assert drill.longest_silence(samples + [(3.0, False, None)], 1.45, 3.0) == pytest.approx(1.5)


def test_first_answer_and_switches():
    samples = drill_samples()
    assert drill.first_answer(samples, 1.0, lambda who: who != P)[0] == pytest.approx(1.30)
    assert drill.first_answer(samples, 3.0, lambda who: who == P)[0] == pytest.approx(3.25)
    assert drill.first_answer(samples, 5.0) is None
    changes = drill.switches(samples)
    assert [(round(t, 2), a, b) for t, a, b in changes] == [(1.30, P, S), (3.25, S, P)]
    # Samples without a known responder do not make a change.
    assert drill.switches([(0, True, P), (1, True, None), (2, True, P)]) == []


def test_summarize_a_clean_drill():
    out = drill.summarize(drill_samples(), [P, 'shop-web-2'], S, down_at=1.0, down_done=1.02, up_at=3.0,
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
    out = drill.summarize(flapping, [P], S, down_at=1.0, down_done=1.02, up_at=3.0, up_done=3.01, end=4.5)
    assert out['failbacks'] == 2 and out['flaps'] == 2
    # The shadow never answered: no failover figures, and the failures are counted.
    silent = run(0.0, 1.0, 0.01, True, P) + run(1.0, 2.0, 0.01, False, None)
    out = drill.summarize(silent, [P], S, down_at=1.0, down_done=1.0, end=2.0)
    assert out['failover_gap_ms'] is None and out['takeover_ms'] is None and not out['shadow_answered']
    assert out['failover_failures'] == 100
    # Responders unknown (the VIP is not on this host's network): gaps still come from the silences; any answer
    # after every link is down is the new owner's.
    blind = [(t, ok, None) for t, ok, dummy in drill_samples()]
    out = drill.summarize(blind, [P], S, down_at=1.0, down_done=1.06, up_at=3.0, up_done=3.01, end=4.0)
    assert out['failover_gap_ms'] == pytest.approx(250.0, abs=0.5) and out['failover_answered_by'] is None
    assert out['failback_gap_ms'] == pytest.approx(60.0, abs=0.5) and out['failback_ms'] is None
    assert out['failbacks'] == 0 and out['answered_by'] == {'unknown': sum(1 for s in blind if s[1])}


ARP = """IP address       HW type     Flags       HW address            Mask     Device
10.10.0.100      0x1         0x2         bc:24:11:00:00:01     *        sn-drill0
10.10.0.11       0x1         0x0         00:00:00:00:00:00     *        sn-drill0
10.10.0.12       0x1         0x2         bc:24:11:00:00:02     *        sn-drill0
"""


def test_arp_lookup_and_macs():
    assert drill.arp_lookup(ARP, '10.10.0.100') == 'BC:24:11:00:00:01'
    assert drill.arp_lookup(ARP, '10.10.0.11') is None        # incomplete entry
    assert drill.arp_lookup(ARP, '10.10.0.1') is None
    cfg = {'net0': 'virtio=BC:24:11:00:00:01,bridge=front', 'net1': 'virtio=bc:24:11:00:00:09,bridge=back',
           'cores': 2}
    assert drill.macs_of(P, cfg) == {'BC:24:11:00:00:01': P, 'BC:24:11:00:00:09': P}


def test_identify_reads_the_neighbour_table(tmp_path):
    path = tmp_path / 'arp'
    path.write_text(ARP)
    ident = drill.neighbour_identify('10.10.0.100', {'BC:24:11:00:00:01': P}, path=str(path))
    assert ident() == P
    assert drill.neighbour_identify('10.10.0.12', {}, path=str(path))() is None
    assert drill.neighbour_identify('10.10.0.100', {}, path=str(tmp_path / 'missing'))() is None


def test_link_down_and_restore_keep_every_other_property():
    before = 'virtio=BC:24:11:AA:BB:CC,bridge=front,firewall=1,rate=100,tag=10'
    down = drill.link_down_string(before)
    assert propstr.parse_net(down) == dict(propstr.parse_net(before), link_down='1')
    assert down.startswith('virtio=BC:24:11:AA:BB:CC,')
    # Restore: the exact previous string when the NIC is still what the drill wrote.
    assert drill.restore_string(down, down, before) == before
    # Already restored: nothing to write.
    assert drill.restore_string(before, down, before) is None
    # Someone changed the rate meanwhile: only link_down goes back, their change stays.
    changed = down.replace('rate=100', 'rate=50')
    restored = drill.restore_string(changed, down, before)
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
    prober = drill.Prober('127.0.0.1', port, protocol='udp', interval=0.005, timeout=0.1,
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
    gap = drill.longest_silence(samples, off - 0.1, on + 0.2)
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
    prober = drill.Prober('127.0.0.1', port, protocol='tcp', interval=0.01, timeout=0.2).start()
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

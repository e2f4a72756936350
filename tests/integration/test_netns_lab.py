# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The namespace lab itself: topology, traffic helpers, cleanup."""
import subprocess

import pytest

from lab.netns import Lab, cleanup_stale, netlab, parse_frame  # noqa: F401  # pylint: disable=unused-import


def _namespaces():
    out = subprocess.run(['ip', 'netns', 'list'], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_parse_frame_udp():
    eth = bytes.fromhex('0200000000010200000000020800')
    ip = bytes.fromhex('4500001c0000400040110000') + bytes([10, 0, 0, 2]) + bytes([10, 0, 0, 10])
    udp = bytes.fromhex('9c40138800080000')
    f = parse_frame(eth + ip + udp)
    assert (f.src_mac, f.dst_mac) == ('02:00:00:00:00:02', '02:00:00:00:00:01')
    assert (f.src_ip, f.dst_ip, f.proto, f.sport, f.dport) == ('10.0.0.2', '10.0.0.10', 17, 40000, 5000)
    assert parse_frame(b'short').ethertype == 0


@pytest.mark.netns
@pytest.mark.parametrize('kind', ['veth', 'tap'])
def test_client_reaches_vm_and_counters_agree(netlab, kind):
    netlab.bridge('vmbr0')
    vm = netlab.vm(100, [('vmbr0', '10.0.0.10/24')], kind=kind)
    cl = netlab.client('c1', 'vmbr0', '10.0.0.2/24')
    assert netlab.link(netlab.node, 'tap100i0')['master'] == 'vmbr0'
    if kind == 'tap':
        assert netlab.link(netlab.node, 'tap100i0').get('linkinfo') is None  # a tun/tap, not a veth
    tap = netlab.capture(netlab.node, 'tap100i0', match=lambda f: f.dport == 5000, keep=500)
    srv = netlab.udp(vm.ns, ('10.0.0.10', 5000), echo=True)
    cli = netlab.udp(cl, ('10.0.0.2', 40000))
    assert cli.send(('10.0.0.10', 5000), 200, pps=5000) == 200
    assert cli.wait(200) == 200
    assert srv.received == 200
    # Client packets leave the node through tap100i0 towards the guest: outgoing on the tap.
    assert tap.wait(200) == 200
    assert all(f.outgoing and f.dst_ip == '10.0.0.10' for f in tap.frames)
    # A restart gives the NIC a new ifindex and the same names; traffic flows again.
    before = netlab.link(netlab.node, 'tap100i0')['ifindex']
    netlab.restart_nic(100)
    assert netlab.link(netlab.node, 'tap100i0')['ifindex'] != before
    assert tap.error is not None  # its device went away
    cli.send(('10.0.0.10', 5000), 50, pps=5000)
    assert cli.wait(250) == 250


@pytest.mark.netns
def test_close_removes_everything():
    lab = Lab()
    lab.bridge('vmbr0')
    lab.vm(100, [('vmbr0', '10.0.0.10/24')], kind='tap')
    lab.client('c1', 'vmbr0', '10.0.0.2/24')
    proc = lab.spawn(lab.node, ['sleep', '300'])
    mine = {ns for ns in _namespaces() if ns.startswith(lab.prefix + '-')}
    assert mine == {lab.prefix + '-node', lab.prefix + '-vm100', lab.prefix + '-c1'}
    lab.close()
    assert proc.poll() is not None
    assert not {ns for ns in _namespaces() if ns.startswith(lab.prefix + '-')}
    lab.close()  # twice is harmless


@pytest.mark.netns
def test_stale_namespaces_of_dead_runs_are_removed():
    dead = Lab(prefix='sn999999x1')  # no such pid
    try:
        assert 'sn999999x1-node' in _namespaces()
        assert 'sn999999x1-node' in cleanup_stale()
        assert 'sn999999x1-node' not in _namespaces()
    finally:
        dead.close()

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""port_mirror with ``target_bridge``: a primary on node A mirrored to its shadow on node B, with real packets.

Two labs (two node namespaces) joined by an underlay veth (192.0.2.1/30 - 192.0.2.2/30). Each node has
the shadow twin network's vnet bridge ``sfro9qab`` (MTU 1450, as PVE sets it for a VXLAN zone) with a
real ``vxlan`` device as a port (VNI 4242, remote = the other node, dstport 4789), which is what PVE's
SDN ``vxlan`` zone builds on every node. Node A: client c1 and primary VM 100 on ``vmbr0``. Node B:
shadow VM 900 on ``sfro9qab`` with the primary's own address. The module runs in node A's namespace
and copies ``tap100i0`` into its veth port on A's ``sfro9qab``; the copies cross the VXLAN to node B,
where the shadow counts them.
"""
import json
import os
import re
import socket
import subprocess

import pytest
from scipy.stats import binom

from lab.flows import FlowTally, udp_flows
from lab.modrun import ModuleFailed, run_module
from lab.netns import Lab, netlab  # noqa: F401  # pylint: disable=unused-import
from lab.playbook import VENV_BIN, VENV_PY, ansible_playbook, recap
from lab.pve_cli import LOCAL, fake_pve_cli

from ansible_collections.shadownet.proxmox.plugins.module_utils import mirror
from ansible_collections.shadownet.proxmox.plugins.modules import port_mirror

PRIMARY, CLIENT, PORT, CPORT = '10.0.0.10', '10.0.0.2', 5000, 40000
TWIN, VNI, UNDERLAY_A, UNDERLAY_B = 'sfro9qab', 4242, '192.0.2.1', '192.0.2.2'


def ip(ns, *args):
    return subprocess.run(['ip', '-n', ns] + list(args), check=True, capture_output=True, text=True,
                          timeout=30)


def twin_bridge(ns, local, remote):
    """The vnet bridge of a VXLAN zone on one node: the bridge plus a vxlan port towards the peer. The vxlan port's
    address is one the kernel could have drawn at random, high in the locally administered range (a Linux bridge
    takes its lowest port's address: the mirror port must not be lower; a random draw like this one made
    test_check_mode_idempotence_and_absent_removes_exactly_ours fail once in CI)."""
    ip(ns, 'link', 'add', TWIN, 'mtu', '1450', 'type', 'bridge', 'stp_state', '0')
    ip(ns, 'link', 'add', 'vxlan_' + TWIN, 'address', 'fe:c4:f2:51:8b:' + local.rsplit('.', 1)[1].zfill(2), 'mtu',
       '1450', 'type', 'vxlan', 'id', str(VNI), 'local', local, 'remote', remote, 'dstport', '4789')
    ip(ns, 'link', 'set', 'vxlan_' + TWIN, 'master', TWIN, 'up')
    ip(ns, 'link', 'set', TWIN, 'up')


@pytest.fixture
def nodes(netlab):  # noqa: F811  # pylint: disable=redefined-outer-name
    """(lab A, lab B): two nodes joined by an underlay, the twin bridge on both, VMs placed."""
    lab_b = Lab()
    try:
        a, b = netlab.node, lab_b.node
        ip(a, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', b)
        ip(a, 'addr', 'add', UNDERLAY_A + '/30', 'dev', 'ul0')
        ip(b, 'addr', 'add', UNDERLAY_B + '/30', 'dev', 'ul0')
        ip(a, 'link', 'set', 'ul0', 'up')
        ip(b, 'link', 'set', 'ul0', 'up')
        twin_bridge(a, UNDERLAY_A, UNDERLAY_B)
        twin_bridge(b, UNDERLAY_B, UNDERLAY_A)
        netlab.bridge('vmbr0')
        netlab.vm(100, [('vmbr0', PRIMARY + '/24')])
        netlab.client('c1', 'vmbr0', CLIENT + '/24')
        lab_b.vm(900, [(TWIN, PRIMARY + '/24')])
        yield netlab, lab_b
    finally:
        lab_b.close()


def mirror_args(lab, **extra):
    args = {'source_vmid': 100, 'target_bridge': TWIN, 'netns': lab.node}
    args.update(extra)
    return args


def exchange(lab, n, echo=True, pps=20000):
    """The client sends n datagrams to the primary, which echoes them; both ends must see all n."""
    srv = lab.udp(lab.guests[100].ns, (PRIMARY, PORT), echo=echo)
    cli = lab.udp(lab.clients['c1'], (CLIENT, CPORT))
    assert cli.send((PRIMARY, PORT), n, pps=pps) == n
    assert srv.wait(n) == n
    if echo:
        assert cli.wait(n) == n
    lab.release(srv)
    lab.release(cli)


def shadow_counters(lab_b):
    shadow = lab_b.guests[900]
    to_vm = lab_b.capture(shadow.ns, 'eth0', match=lambda f: not f.outgoing and f.dport == PORT
                          and f.dst_ip == PRIMARY)
    from_vm = lab_b.capture(shadow.ns, 'eth0', match=lambda f: not f.outgoing and f.sport == PORT
                            and f.src_ip == PRIMARY)
    return to_vm, from_vm


def node_state(lab):
    """Node A's links (name, master, admin state, address) and its whole nft ruleset (carrier flags settle
    on their own, so they are left out; so are nft's counter values)."""
    links = json.loads(lab.run(lab.node, ['ip', '-j', 'link', 'show']).stdout)
    names = sorted((x['ifname'], x.get('master'), 'UP' in x.get('flags', []), x.get('address')) for x in links)
    return names, lab.nft_ruleset(lab.node)


@pytest.mark.netns
@pytest.mark.parametrize('direction', ['ingress', 'egress', 'both'])
def test_full_mirror_crosses_vxlan_exactly_per_direction(nodes, direction):
    lab_a, lab_b = nodes
    res = run_module(port_mirror, mirror_args(lab_a, direction=direction))
    assert res['changed'] is True and res['source'] == 'tap100i0'
    assert (res['target'], res['port'], res['target_bridge']) == ('snd100i0', 'vethsn100i0', TWIN)
    assert res['after']['link'] == [{'dup': 'snd100i0', 'port': 'vethsn100i0', 'peer': 'vethsn100i0',
                                     'bridge': TWIN, 'learning': False, 'up': True, 'owned': True}]
    port = lab_a.link(lab_a.node, 'vethsn100i0')
    assert port['master'] == TWIN and port['mtu'] == 1450 and port['address'].startswith('fe:ff:')
    assert not lab_a.run(lab_a.node, ['ip', '-j', 'addr', 'show', 'dev', 'snd100i0']).stdout.count('"local"')
    to_vm, from_vm = shadow_counters(lab_b)
    n = 1000
    exchange(lab_a, n)
    want_in = n if direction in ('ingress', 'both') else 0
    want_out = n if direction in ('egress', 'both') else 0
    assert to_vm.wait(want_in, timeout=5) == want_in
    assert from_vm.wait(want_out, timeout=5) == want_out
    assert to_vm.drops() == 0 and from_vm.drops() == 0
    again = run_module(port_mirror, mirror_args(lab_a, direction=direction))
    assert again['changed'] is False and again['commands'] == []
    # The rule counters also count the ARP frames around the datagrams.
    dirs = ['egress', 'ingress'] if direction == 'both' else [direction]
    assert sorted(again['packets']) == dirs and all(again['packets'][d] >= n for d in dirs)


@pytest.mark.netns
def test_sampled_mirror_crosses_vxlan_binomially(nodes):
    lab_a, lab_b = nodes
    args = mirror_args(lab_a, mode='sampled', rate=0.1, sampling='packet', direction='ingress')
    assert run_module(port_mirror, args)['changed'] is True
    to_vm = shadow_counters(lab_b)[0]
    n, rate = 20000, 0.1
    exchange(lab_a, n, echo=False, pps=25000)
    got = to_vm.settle(0.5)
    lo, hi = binom.ppf(0.0005, n, rate), binom.ppf(0.9995, n, rate)
    assert lo <= got <= hi, 'sampled %d of %d, 99.9%% interval [%d, %d]' % (got, n, lo, hi)
    assert to_vm.drops() == 0
    again = run_module(port_mirror, args)
    assert again['changed'] is False and again['packets']['ingress'] >= got


@pytest.mark.netns
def test_flow_sampled_mirror_crosses_vxlan_in_whole_flows(nodes):
    lab_a, lab_b = nodes
    args = mirror_args(lab_a, mode='sampled', rate=0.25)  # sampling: flow, direction: both (the defaults)
    res = run_module(port_mirror, args)
    assert res['changed'] is True and res['spec']['sampling'] == 'flow'
    truth_tally, copy_tally = FlowTally(CLIENT, PRIMARY), FlowTally(CLIENT, PRIMARY, outgoing=False)
    truth = lab_a.capture(lab_a.node, 'tap100i0', match=truth_tally)
    copies = lab_b.capture(lab_b.guests[900].ns, 'eth0', match=copy_tally)
    srv = lab_a.udp(lab_a.guests[100].ns, (PRIMARY, PORT), echo=True)
    n = 160
    udp_flows(lab_a, lab_a.clients['c1'], CLIENT, (PRIMARY, PORT), n, 30000 + os.getpid() % 20000)
    truth.settle(0.5)
    copies.settle(0.5)
    sent, copied = truth_tally.snapshot(), copy_tally.snapshot()
    assert len(sent) == n and truth.drops() == 0 and copies.drops() == 0
    assert {f: (copied[f], sent.get(f)) for f in copied if copied[f] != sent.get(f)} == {}
    p = mirror.effective_rate(2500)
    lo, hi = binom.ppf(0.0005, n, p), binom.ppf(0.9995, n, p)
    assert lo <= len(copied) <= hi, '%d of %d flows copied, 99.9%% interval [%d, %d]' % (len(copied), n, lo, hi)
    lab_a.release(srv)
    assert run_module(port_mirror, args)['changed'] is False


@pytest.mark.netns
def test_shadow_never_reaches_node_a_primary_bridge(nodes):
    lab_a, lab_b = nodes
    run_module(port_mirror, mirror_args(lab_a))
    shadow = lab_b.guests[900]
    smac = shadow.nics[0].mac
    leaks = [lab_a.capture(lab_a.node, dev, match=lambda f: f.src_mac == smac)
             for dev in ('vmbr0', 'tap100i0', 'cl-c1')]
    # The shadow's frames do cross the VXLAN back to node A's twin bridge and its port ...
    control = lab_a.capture(lab_a.node, 'vethsn100i0', match=lambda f: f.src_mac == smac)
    sh = lab_b.udp(shadow.ns, (PRIMARY, 6000))
    sh.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    for dst in ((CLIENT, CPORT), ('10.0.0.255', CPORT), ('10.0.0.1', 53)):
        sh.send(dst, 50, pps=2000)
    exchange(lab_a, 500)
    assert control.wait(50) >= 50
    # ... and end there: nothing reaches the primary's bridge, tap or client.
    assert [c.settle(0.5) for c in leaks] == [0, 0, 0]
    assert all(c.error is None for c in leaks + [control])
    assert lab_a.link(lab_a.node, 'snd100i0')['stats64']['rx']['packets'] >= 50


@pytest.mark.netns
def test_check_mode_idempotence_and_absent_removes_exactly_ours(nodes):
    lab_a, lab_b = nodes
    lab_a.run(lab_a.node, ['nft', 'add', 'table', 'netdev', 'someoneelse'])
    before = node_state(lab_a)
    twin_mac = lab_a.link(lab_a.node, TWIN)['address']
    res = run_module(port_mirror, mirror_args(lab_a), check_mode=True, diff=True)
    assert res['changed'] is True and res['commands'] and res['diff']['before'] == {}
    assert set(res['diff']['after']) == {'egress', 'ingress', 'link', 'port'}
    assert node_state(lab_a) == before  # check mode touched nothing
    to_vm = shadow_counters(lab_b)[0]
    exchange(lab_a, 100, echo=False, pps=5000)
    assert to_vm.settle(0.3) == 0

    assert run_module(port_mirror, mirror_args(lab_a))['changed'] is True
    assert node_state(lab_a) != before
    assert lab_a.link(lab_a.node, TWIN)['address'] == twin_mac  # the port does not take over the bridge's MAC
    exchange(lab_a, 100, echo=False, pps=5000)
    assert to_vm.wait(100, timeout=5) == 100

    # Someone deletes the port: the next run puts it back (and the table with it).
    lab_a.run(lab_a.node, ['ip', 'link', 'del', 'dev', 'vethsn100i0'])
    res = run_module(port_mirror, mirror_args(lab_a))
    assert res['changed'] is True and 'updated' in res['msg']
    exchange(lab_a, 100, echo=False, pps=5000)
    assert to_vm.wait(200, timeout=5) == 200

    gone = run_module(port_mirror, mirror_args(lab_a, state='absent'), check_mode=True)
    assert gone['changed'] is True and lab_a.link(lab_a.node, 'snd100i0') is not None
    gone = run_module(port_mirror, mirror_args(lab_a, state='absent'))
    assert gone['changed'] is True
    assert node_state(lab_a) == before  # the veth pair and the table are gone, nothing else
    assert run_module(port_mirror, mirror_args(lab_a, state='absent'))['changed'] is False
    exchange(lab_a, 100, echo=False, pps=5000)
    assert to_vm.settle(0.3) == 200


@pytest.mark.netns
def test_foreign_device_with_our_name_is_never_touched(nodes):
    lab_a = nodes[0]
    lab_a.run(lab_a.node, ['ip', 'link', 'add', 'snd100i0', 'type', 'veth', 'peer', 'name', 'vethsn100i0'])
    before = node_state(lab_a)
    with pytest.raises(ModuleFailed, match="not shadownet's"):
        run_module(port_mirror, mirror_args(lab_a))
    res = run_module(port_mirror, mirror_args(lab_a, state='absent'))
    assert res['changed'] is False and node_state(lab_a) == before


@pytest.mark.netns
def test_a_pair_of_the_earlier_port_name_is_replaced_and_removed(nodes):
    """Before the rename the bridge port was snm<vmid>i<n>, which `ifreload -a` detaches on PVE. Such a pair (both
    ends with our alias) is replaced by the next run and removed by state=absent, without a nameless warning."""
    lab_a = nodes[0]

    def old_pair():
        lab_a.run(lab_a.node, ['ip', 'link', 'add', 'snd100i0', 'type', 'veth', 'peer', 'name', 'snm100i0'])
        for dev in ('snd100i0', 'snm100i0'):
            lab_a.run(lab_a.node, ['ip', 'link', 'set', 'dev', dev, 'alias', 'shadownet-mirror tap100i0 -> ' + TWIN])
    before = node_state(lab_a)
    old_pair()
    res = run_module(port_mirror, mirror_args(lab_a))
    assert res['changed'] is True
    assert lab_a.link(lab_a.node, 'snm100i0') is None and lab_a.link(lab_a.node, 'vethsn100i0')['master'] == TWIN
    run_module(port_mirror, mirror_args(lab_a, state='absent'))
    old_pair()
    gone = run_module(port_mirror, mirror_args(lab_a, state='absent'))
    assert gone['changed'] is True and not gone.get('warning') and not gone.get('warnings'), gone
    assert lab_a.link(lab_a.node, 'snm100i0') is None and lab_a.link(lab_a.node, 'snd100i0') is None
    assert node_state(lab_a) == before


@pytest.mark.netns
@pytest.mark.parametrize('args,match', [
    ({'source_vmid': 100, 'target_bridge': 'br;reboot'}, 'not a valid interface name'),
    ({'source_vmid': 100, 'target_bridge': 'averylongbridge12'}, 'not a valid interface name'),
    ({'source_vmid': 100, 'target_bridge': TWIN, 'backend': 'tc'}, 'needs backend=nft'),
    ({'source_vmid': 100, 'target_bridge': TWIN, 'target_vmid': 900}, 'mutually exclusive'),
    ({'source': 'tap100i0', 'target_bridge': 'tap100i0'}, 'is the source'),
])
def test_malformed_bridge_input_is_rejected_before_anything_runs(monkeypatch, args, match):
    def refuse(*a, **kw):
        raise AssertionError('a command ran: %r' % (a,))
    monkeypatch.setattr(port_mirror.AnsibleModule, 'run_command', refuse)
    with pytest.raises(ModuleFailed) as err:
        run_module(port_mirror, args)
    assert match in err.value.result['msg'] and err.value.result.get('commands', []) == []


def test_port_names_and_mac_are_stable():
    dup, port = mirror.port_names('tap999999999i31')
    assert dup == 'snd999999999i31' and len(port) == 15 and port.startswith('vethsnh')
    assert mirror.port_names('tap999999999i31') == (dup, port) and port != mirror.port_names('tap999999999i30')[1]
    dup, port = mirror.port_names('veth-primary')
    assert len(dup) == 14 and len(port) == 15 and dup[3:12] == port[6:]
    # PVE's ifupdown2 keeps only bridge ports matching ^(tap|veth|fwpr) on `ifreload -a` (every node network and
    # SDN apply); the port must match that and never PVE's own container veth<vmid>i<n>
    for source in ('tap100i0', 'tap999999999i31', 'veth-primary', 'ens18'):
        port = mirror.port_names(source)[1]
        assert re.match(r'^(tap|veth|fwpr)', port) and not re.match(r'^veth\d+i\d+$', port) and len(port) <= 15, port
    assert mirror.port_mac('tap100i0') == mirror.port_mac('tap100i0') != mirror.port_mac('tap101i0')
    assert int(mirror.port_mac('tap100i0').split(':')[0], 16) & 0x03 == 0x02  # local, unicast


PLAN = {
    'plan_version': 1, 'template': 'shop', 'shadow_transport': 'vxlan',
    'networks': [{'name': 'front', 'role': 'primary', 'bridge': 'vmbr0'},
                 {'name': 'front', 'role': 'shadow', 'twin_of': 'front', 'bridge': TWIN, 'zone_type': 'vxlan'}],
    'mirrors': [{'service': 'web', 'source': {'vm': 'shop-web-1', 'nic': 0, 'network': 'front'},
                 'target': {'vm': 'shop-web-shadow', 'nic': 0, 'network': 'front'},
                 'mode': 'full', 'rate': 1.0, 'direction': 'both'}],
}
VMIDS = {'shop-web-1': 100, 'shop-web-shadow': 900}


def play_role(tmp_path, lab, **role_vars):
    """Run the port_mirror role with ansible-playbook in node A's namespace; returns (rc, output)."""
    rvars = {'port_mirror_snippets_dir': str(tmp_path / 'snippets'),
             'port_mirror_state_file': str(tmp_path / 'etc' / 'mirrors.json'),
             'port_mirror_lib_dir': str(tmp_path / 'lib'), 'port_mirror_netns': lab.node,
             'port_mirror_plan': PLAN, 'port_mirror_vmids': VMIDS, 'port_mirror_node': 'pve1'}
    rvars.update(role_vars)
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
                                     'roles': [{'role': 'shadownet.proxmox.port_mirror', 'vars': rvars}]}]))
    # pvesh for the preflight's cluster check: node A (pve1) is the cluster's one node.
    bindir = fake_pve_cli(tmp_path / 'bin', {'pve1': 'online'}, LOCAL, tmp_path / 'snippets')
    proc = ansible_playbook([playbook, '-e', 'ansible_python_interpreter=%s' % VENV_PY],
                            env={'PATH': os.pathsep.join([bindir, VENV_BIN, os.environ.get('PATH', '')])})
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.netns
@pytest.mark.slow
def test_role_mirrors_remote_shadow_through_the_twin_bridge(nodes, tmp_path):
    lab_a, lab_b = nodes
    remote = {'shop-web-1': 'pve1', 'shop-web-shadow': 'pve2'}
    rc, out = play_role(tmp_path, lab_a, port_mirror_vm_nodes=remote)
    assert rc == 0, out
    state = json.loads((tmp_path / 'etc' / 'mirrors.json').read_text())
    assert [(m['source_vmid'], m['target_vmid'], m['target_bridge'], m['backend']) for m in state['mirrors']] == [
        (100, 900, TWIN, 'nft')]
    assert lab_a.link(lab_a.node, 'vethsn100i0')['master'] == TWIN
    to_vm, from_vm = shadow_counters(lab_b)
    exchange(lab_a, 300)
    assert (to_vm.wait(300, timeout=5), from_vm.wait(300, timeout=5)) == (300, 300)
    rc, out = play_role(tmp_path, lab_a, port_mirror_vm_nodes=remote)
    assert rc == 0 and recap(out)['changed'] == 0, out

    # The primary restarts. (nftables on this kernel re-binds a netdev chain to a re-created device of the same
    # name, so a restart alone leaves the mirror working: drop its table to see the hookscript restore it.)
    lab_a.restart_nic(100)
    lab_a.run(lab_a.node, ['nft', 'delete', 'table', 'netdev', 'shadownet_tap100i0_-snd100i0'])
    hookfile = tmp_path / 'snippets' / 'shadownet-hook.py'
    env = dict(os.environ, SHADOWNET_MIRRORS=str(tmp_path / 'etc' / 'mirrors.json'),
               SHADOWNET_LIB=str(tmp_path / 'lib'))
    proc = subprocess.run([str(hookfile), '900', 'pre-stop'], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout == ''  # the remote shadow's phases do not touch it
    proc = subprocess.run([str(hookfile), '100', 'post-start'], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0 and '(bridge %s) updated (changed)' % TWIN in proc.stdout, proc.stdout + proc.stderr
    exchange(lab_a, 100)
    assert (to_vm.wait(400, timeout=5), from_vm.wait(400, timeout=5)) == (400, 400)

    # The shadow comes to this node: the pair goes local (the bridge port and its table go, the tap mirror comes).
    lab_a.bridge('vmbr9')
    lab_a.vm(900, [('vmbr9', PRIMARY + '/24')])
    rc, out = play_role(tmp_path, lab_a, port_mirror_vm_nodes=dict(remote, **{'shop-web-shadow': 'pve1'}))
    assert rc == 0, out
    assert lab_a.link(lab_a.node, 'vethsn100i0') is None and lab_a.link(lab_a.node, 'snd100i0') is None
    tables = lab_a.run(lab_a.node, ['nft', 'list', 'tables']).stdout
    assert 'shadownet_tap100i0_-tap900i0' in tables and 'snd100i0' not in tables
    rc, out = play_role(tmp_path, lab_a, port_mirror_vm_nodes=remote)
    assert rc == 0 and lab_a.link(lab_a.node, 'vethsn100i0') is not None, out
    assert 'tap900i0' not in lab_a.run(lab_a.node, ['nft', 'list', 'tables']).stdout

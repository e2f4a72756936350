# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""port_mirror with real packets in the namespace lab.

Topology (all inside the lab's node namespace): client c1 and primary VM 100 on vmbr0; shadow VM 900
on the isolated vmbr1 with the primary's own address (a topology mirror, no uplink). The mirror copies
tap100i0 to tap900i0; the shadow counts what reaches its eth0.
"""
import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import time

import pytest
from scipy.stats import binom

from ansible.module_utils.testing import patch_module_args
from lab.flows import FlowTally, tcp_echo_server, tcp_flows, udp_flows
from lab.netns import in_netns, netlab  # noqa: F401  # pylint: disable=unused-import
from lab.playbook import ROOT, VENV_BIN, VENV_PY, ansible_playbook, recap, run_ansible
from lab.pve_cli import LOCAL, fake_pve_cli

from ansible_collections.shadownet.proxmox.plugins.module_utils import mirror
from ansible_collections.shadownet.proxmox.plugins.modules import port_mirror

HOOK_SRC = os.path.join(ROOT, 'roles', 'port_mirror', 'files', 'shadownet-hook.py')
MIRROR_PY = os.path.join(ROOT, 'plugins', 'module_utils', 'mirror.py')
PRIMARY, CLIENT, PORT, CPORT = '10.0.0.10', '10.0.0.2', 5000, 40000


def run_module(args, check_mode=False, diff=False):
    """Run port_mirror's main() in this process; returns its result dict."""
    args = dict(args)
    if check_mode:
        args['_ansible_check_mode'] = True
    if diff:
        args['_ansible_diff'] = True
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        port_mirror.main()
    return json.loads(out.getvalue())


def ansible_adhoc(args, check=False):
    """Run the installed module through the `ansible` CLI; returns the parsed result."""
    argv = ['localhost', '-m', 'shadownet.proxmox.port_mirror', '-a', json.dumps(args), '-o',
            '-e', 'ansible_python_interpreter=%s' % VENV_PY]
    if check:
        argv.append('--check')
    proc = run_ansible('ansible', argv, timeout=120,
                       env=dict(ANSIBLE_LOAD_CALLBACK_PLUGINS='1', ANSIBLE_STDOUT_CALLBACK='ansible.builtin.minimal'))
    line = proc.stdout.strip().splitlines()[-1]
    return proc.returncode, json.loads(line.split('=>', 1)[1])


def build(lab, kind='veth'):
    lab.bridge('vmbr0')
    lab.bridge('vmbr1')
    primary = lab.vm(100, [('vmbr0', PRIMARY + '/24')], kind=kind)
    shadow = lab.vm(900, [('vmbr1', PRIMARY + '/24')], kind=kind)
    client = lab.client('c1', 'vmbr0', CLIENT + '/24')
    return primary, shadow, client


def shadow_counters(lab, shadow):
    """(copies of client->primary packets, copies of primary->client replies) seen by the shadow."""
    to_vm = lab.capture(shadow.ns, 'eth0', match=lambda f: not f.outgoing and f.dport == PORT
                        and f.dst_ip == PRIMARY)
    from_vm = lab.capture(shadow.ns, 'eth0', match=lambda f: not f.outgoing and f.sport == PORT
                          and f.src_ip == PRIMARY)
    return to_vm, from_vm


def exchange(lab, primary, client, n, echo=True, pps=20000):
    """The client sends n datagrams to the primary, which echoes them; both ends must see all n."""
    srv = lab.udp(primary.ns, (PRIMARY, PORT), echo=echo)
    cli = lab.udp(client, (CLIENT, CPORT))
    assert cli.send((PRIMARY, PORT), n, pps=pps) == n
    assert srv.wait(n) == n
    if echo:
        assert cli.wait(n) == n
    lab.release(srv)
    lab.release(cli)


def ruleset(lab):
    """Everything mirror-related on the node, as text, to prove that nothing changed (nft counters blanked)."""
    parts = [lab.nft_ruleset(lab.node)]
    for dev in ('tap100i0', 'tap900i0'):
        parts.append(lab.run(lab.node, ['tc', 'qdisc', 'show', 'dev', dev]).stdout)
        for parent in ('ffff:', '5e4e:'):
            parts.append(lab.run(lab.node, ['tc', 'filter', 'show', 'dev', dev, 'parent', parent],
                                 check=False).stdout)
    return '\n'.join(parts)


def hook(lab, state_file, libdir, vmid, phase):
    """Call the hookscript exactly as PVE does: `<script> <vmid> <phase>`."""
    env = dict(os.environ, SHADOWNET_MIRRORS=str(state_file), SHADOWNET_LIB=str(libdir),
               SHADOWNET_NETNS=lab.node)
    script = os.path.join(os.path.dirname(str(libdir)), 'shadownet-hook.py')
    proc = subprocess.run([script, str(vmid), phase], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def hooklib(tmp_path):
    """The hookscript library dir, and the hookscript installed as the role does (first line
    replaced by the node's python) so that it can be run as `<script> <vmid> <phase>`."""
    libdir = tmp_path / 'lib'
    libdir.mkdir()
    (libdir / 'shadownet_mirror.py').symlink_to(MIRROR_PY)
    with open(HOOK_SRC, encoding='utf-8') as fh:
        body = fh.read().split('\n', 1)[1]
    hookfile = tmp_path / 'shadownet-hook.py'
    hookfile.write_text('#!/usr/bin/python3\n' + body)
    hookfile.chmod(0o755)
    return libdir


@pytest.mark.netns
@pytest.mark.parametrize('backend', ['nft', 'tc'])
@pytest.mark.parametrize('direction', ['ingress', 'egress', 'both'])
def test_full_mirror_counts_exactly_per_direction(netlab, backend, direction):
    primary, shadow, client = build(netlab)
    res = run_module({'source_vmid': 100, 'target_vmid': 900, 'direction': direction,
                      'backend': backend, 'netns': netlab.node})
    assert res['changed'] is True and res['source'] == 'tap100i0' and res['target'] == 'tap900i0'
    to_vm, from_vm = shadow_counters(netlab, shadow)
    n = 1000
    exchange(netlab, primary, client, n)
    # Direction is the VM's: ingress = what the primary receives, egress = what it sends.
    want_in = n if direction in ('ingress', 'both') else 0
    want_out = n if direction in ('egress', 'both') else 0
    assert to_vm.wait(want_in, timeout=5) == want_in
    assert from_vm.wait(want_out, timeout=5) == want_out
    assert to_vm.drops() == 0 and from_vm.drops() == 0
    again = run_module({'source_vmid': 100, 'target_vmid': 900, 'direction': direction,
                        'backend': backend, 'netns': netlab.node})
    assert again['changed'] is False and again['commands'] == []


@pytest.mark.netns
def test_sampled_ten_percent_is_binomial(netlab):
    primary, shadow, client = build(netlab)
    res = run_module({'source': 'tap100i0', 'target': 'tap900i0', 'mode': 'sampled', 'rate': 0.1,
                      'sampling': 'packet', 'direction': 'ingress', 'netns': netlab.node})
    assert res['changed'] is True
    to_vm, from_vm = shadow_counters(netlab, shadow)
    n, rate = 20000, 0.1
    exchange(netlab, primary, client, n, echo=False, pps=25000)
    got = to_vm.settle(0.5)
    lo, hi = binom.ppf(0.0005, n, rate), binom.ppf(0.9995, n, rate)
    assert lo <= got <= hi, 'sampled %d of %d, 99.9%% interval [%d, %d]' % (got, n, lo, hi)
    assert to_vm.drops() == 0
    # The counter read back from the live rule matches what the shadow saw.
    again = run_module({'source': 'tap100i0', 'target': 'tap900i0', 'mode': 'sampled',
                        'rate': 0.1, 'sampling': 'packet', 'direction': 'ingress', 'netns': netlab.node})
    assert again['changed'] is False
    assert again['packets']['ingress'] >= got
    assert again['after'] == {'ingress': [{'backend': 'nft', 'sample': 1000, 'target': 'tap900i0',
                                           'sampling': 'packet'}]}


FLOW_RATE = 0.3


def flow_traffic(lab, primary, client, udp=240, tcp=120):
    """Many short flows through the primary (UDP echoes and TCP echo connections, each from its own client
    port), counted per flow and direction on the primary's tap (what happened) and on the shadow's NIC
    (what was copied). Returns (truth, copied, flows)."""
    truth_tally, copy_tally = FlowTally(CLIENT, PRIMARY), FlowTally(CLIENT, PRIMARY, outgoing=False)
    truth = lab.capture(lab.node, 'tap100i0', match=truth_tally)
    copies = lab.capture(lab.guests[900].ns, 'eth0', match=copy_tally)
    base = 20000 + os.getpid() % 20000  # other 5-tuples on each run: the kernel's hash secret lasts a boot
    srv = lab.udp(primary.ns, (PRIMARY, PORT), echo=True)
    tcp_echo_server(lab, primary.ns, (PRIMARY, PORT + 1))
    flows = [(17, p) for p in udp_flows(lab, client, CLIENT, (PRIMARY, PORT), udp, base)]
    flows += [(6, p) for p in tcp_flows(client, CLIENT, (PRIMARY, PORT + 1), tcp, base + udp)]
    truth.settle(0.5)
    copies.settle(0.5)
    assert truth.drops() == 0 and copies.drops() == 0
    lab.release(srv)
    return truth_tally.snapshot(), copy_tally.snapshot(), flows


@pytest.mark.netns
def test_flow_sampling_copies_whole_flows_both_ways_binomially(netlab):
    primary, shadow, client = build(netlab)
    args = {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': FLOW_RATE,
            'direction': 'both', 'netns': netlab.node}  # sampling: flow is the default
    before = ruleset(netlab)
    res = run_module(args, check_mode=True, diff=True)
    assert res['changed'] is True and ruleset(netlab) == before  # check mode wrote nothing
    want = {'backend': 'nft', 'sample': 3000, 'target': 'tap900i0', 'sampling': 'flow'}
    assert res['diff']['after'] == {'egress': [want], 'ingress': [want]}
    res = run_module(args)
    assert res['changed'] is True and res['after'] == {'egress': [want], 'ingress': [want]}
    assert res['spec']['sampling'] == 'flow' and res['spec']['effective_rate'] == mirror.effective_rate(3000)
    assert 'symhash' in netlab.run(netlab.node, ['nft', 'list', 'table', 'netdev',
                                                 mirror.nft_table_name('tap100i0', 'tap900i0')]).stdout

    truth, copied, flows = flow_traffic(netlab, primary, client)
    assert sorted(truth) == sorted(flows)
    assert all(c['c2s'] > 0 and c['s2c'] > 0 for c in truth.values())
    assert set(copied) <= set(truth), 'copies of flows that never happened: %s' % (set(copied) - set(truth))
    partial = {f: (copied[f], truth[f]) for f in copied if copied[f] != truth[f]}
    assert not partial, 'flows copied in part (copied, sent): %s' % partial
    # Every flow is copied whole in both directions or not at all; how many are copied is binomial.
    n, p = len(flows), mirror.effective_rate(3000)
    lo, hi = binom.ppf(0.0005, n, p), binom.ppf(0.9995, n, p)
    assert lo <= len(copied) <= hi, '%d of %d flows copied, 99.9%% interval [%d, %d]' % (len(copied), n, lo, hi)
    for proto in (6, 17):  # both kinds of flow are sampled, neither all nor none of them
        kind = [f for f in flows if f[0] == proto]
        assert 0 < len([f for f in kind if f in copied]) < len(kind)

    again = run_module(args)
    assert again['changed'] is False and again['commands'] == []
    copied_packets = sum(c['c2s'] + c['s2c'] for c in copied.values())
    assert sum(again['packets'].values()) >= copied_packets


@pytest.mark.netns
def test_packet_sampling_splits_flows(netlab):
    """The contrast: per-packet sampling of the same traffic copies parts of flows."""
    primary, shadow, client = build(netlab)
    run_module({'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': FLOW_RATE,
                'sampling': 'packet', 'netns': netlab.node})
    truth, copied, flows = flow_traffic(netlab, primary, client, udp=60, tcp=30)
    partial = [f for f in copied if copied[f] != truth[f]]
    assert len(partial) > len(flows) // 4
    total = sum(c['c2s'] + c['s2c'] for c in truth.values())
    got = sum(c['c2s'] + c['s2c'] for c in copied.values())
    lo, hi = binom.ppf(0.0005, total, FLOW_RATE), binom.ppf(0.9995, total, FLOW_RATE)
    assert lo <= got <= hi, 'sampled %d of %d packets, 99.9%% interval [%d, %d]' % (got, total, lo, hi)


def arp_request(src_mac, src_ip, dst_ip):
    """An Ethernet broadcast ARP who-has frame."""
    mac = bytes.fromhex(src_mac.replace(':', ''))
    return (b'\xff' * 6 + mac + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x01' + mac
            + socket.inet_aton(src_ip) + b'\x00' * 6 + socket.inet_aton(dst_ip))


def icmp_echo(ident, seq):
    """An ICMP echo request (header and 8 payload bytes) with its checksum."""
    body = struct.pack('!BBHHH', 8, 0, 0, ident, seq) + b'shadowne'
    total = sum(struct.unpack('!%dH' % (len(body) // 2), body))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return body[:2] + struct.pack('!H', ~total & 0xFFFF) + body[4:]


@pytest.mark.netns
def test_flow_sampling_of_arp_and_icmp(netlab):
    """Frames without a flow (ARP) are sampled one by one at the rate; ICMP has no ports, so all of it between two
    addresses is one flow: echo requests and replies of every id are copied together or not at all."""
    primary, shadow, client = build(netlab)
    rate = 0.3
    run_module({'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': rate, 'netns': netlab.node})
    sources = ['10.0.0.%d' % i for i in range(100, 130)]  # 30 address pairs with the primary
    for addr in sources:
        netlab.run(client, ['ip', 'addr', 'add', addr + '/24', 'dev', 'eth0'])

    def is_arp(frame):
        return frame.ethertype == 0x0806
    arp_sent = netlab.capture(netlab.node, 'tap100i0', match=is_arp)
    arp_copied = netlab.capture(shadow.ns, 'eth0', match=lambda f: not f.outgoing and is_arp(f))
    sent_tally, copy_tally = {}, {}

    def icmp_tally(tally, outgoing=None):
        def match(f):
            if f.proto != 1 or (outgoing is not None and f.outgoing != outgoing):
                return False
            peer = f.src_ip if f.dst_ip == PRIMARY else f.dst_ip if f.src_ip == PRIMARY else None
            if peer in sources:
                tally[peer] = tally.get(peer, 0) + 1
                return True
            return False
        return match

    icmp_sent = netlab.capture(netlab.node, 'tap100i0', match=icmp_tally(sent_tally))
    icmp_copied = netlab.capture(shadow.ns, 'eth0', match=icmp_tally(copy_tally, outgoing=False))

    def raw_arp():
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
        s.bind(('eth0', 0))
        return s

    def raw_icmp(addr):
        s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
        s.bind((addr, 0))
        return s

    mac = netlab.link(client, 'eth0')['address']
    arp = in_netns(client, raw_arp)
    pingers = [in_netns(client, raw_icmp, addr) for addr in sources]
    ids = 20
    try:
        for i in range(ids):
            for k, pinger in enumerate(pingers):
                arp.send(arp_request(mac, CLIENT, PRIMARY))
                pinger.sendto(icmp_echo(1000 + i, k), (PRIMARY, 0))  # another ICMP id each round
                time.sleep(0.0005)
    finally:
        for sock in [arp] + pingers:
            sock.close()
    sent_arp, copied_arp = arp_sent.settle(0.5), arp_copied.settle(0.5)
    icmp_sent.settle(0.5)
    icmp_copied.settle(0.5)
    assert all(c.drops() == 0 for c in (arp_sent, arp_copied, icmp_sent, icmp_copied))
    assert sent_tally == {addr: 2 * ids for addr in sources}  # every echo answered
    lo, hi = binom.ppf(0.0005, sent_arp, rate), binom.ppf(0.9995, sent_arp, rate)
    assert lo <= copied_arp <= hi, 'ARP: %d of %d copied, 99.9%% interval [%d, %d]' % (copied_arp, sent_arp, lo, hi)
    partial = {addr: n for addr, n in copy_tally.items() if n != 2 * ids}
    assert not partial, 'ICMP of an address pair copied in part: %s' % partial
    lo, hi = binom.ppf(0.0005, len(sources), rate), binom.ppf(0.9995, len(sources), rate)
    assert lo <= len(copy_tally) <= hi and copy_tally, '%d of %d address pairs copied' % (len(copy_tally), len(sources))


# The table the version before `sampling` existed wrote for a sampled mirror (per-packet numgen), verbatim.
def old_version_table(source, target, threshold):
    name = mirror.nft_table_name(source, target)
    cmds = [{'add': {'table': {'family': 'netdev', 'name': name}}}]
    for hook, chain in (('ingress', 'vm_egress'), ('egress', 'vm_ingress')):
        cmds.append({'add': {'chain': {'family': 'netdev', 'table': name, 'name': chain, 'type': 'filter',
                                       'hook': hook, 'dev': source, 'prio': 0, 'policy': 'accept'}}})
        cmds.append({'add': {'rule': {'family': 'netdev', 'table': name, 'chain': chain, 'expr': [
            {'match': {'op': '<', 'left': {'numgen': {'mode': 'random', 'mod': 10000, 'offset': 0}},
                       'right': threshold}},
            {'counter': None}, {'dup': {'addr': target}}]}}})
    return json.dumps({'nftables': cmds})


@pytest.mark.netns
def test_old_per_packet_table_is_converged_to_flow_sampling(netlab):
    primary, shadow, client = build(netlab)
    netlab.run(netlab.node, ['nft', '-j', '-f', '-'], input=old_version_table('tap100i0', 'tap900i0', 2000))
    args = {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': 0.2, 'netns': netlab.node}
    old = {'backend': 'nft', 'sample': 2000, 'target': 'tap900i0', 'sampling': 'packet'}
    # Asked for per-packet sampling, the old table is already right.
    same = run_module(dict(args, sampling='packet'))
    assert same['changed'] is False and same['after'] == {'egress': [old], 'ingress': [old]}
    before = ruleset(netlab)
    check = run_module(args, check_mode=True, diff=True)
    assert check['changed'] is True and ruleset(netlab) == before
    new = dict(old, sampling='flow')
    assert check['diff']['before'] == {'egress': [old], 'ingress': [old]}
    assert check['diff']['after'] == {'egress': [new], 'ingress': [new]}
    res = run_module(args)
    assert res['changed'] is True and 'updated' in res['msg'] and res['after'] == {'egress': [new], 'ingress': [new]}
    assert run_module(args)['changed'] is False
    truth, copied, flows = flow_traffic(netlab, primary, client, udp=40, tcp=20)
    assert copied and all(copied[f] == truth[f] for f in copied)


@pytest.mark.netns
def test_vm_restarts_and_hookscript_restore_mirrors(netlab, tmp_path, hooklib):
    primary, shadow, client = build(netlab, kind='tap')
    state = tmp_path / 'mirrors.json'
    mirrors = [{'source_vmid': 100, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 0,
                'mode': 'full', 'direction': 'ingress', 'backend': 'tc'}]
    state.write_text(json.dumps({'mirrors': mirrors}))
    out = hook(netlab, state, hooklib, 100, 'post-start')
    assert 'tap100i0 -> tap900i0 created (changed)' in out
    to_vm = shadow_counters(netlab, shadow)[0]
    exchange(netlab, primary, client, 200, echo=False, pps=5000)
    assert to_vm.wait(200, timeout=5) == 200

    # The primary restarts: PVE plugs a new tap, and the tc mirror on the old one is gone.
    netlab.restart_nic(100)
    exchange(netlab, primary, client, 200, echo=False, pps=5000)
    assert to_vm.settle(0.5) == 200
    out = hook(netlab, state, hooklib, 100, 'post-start')
    assert 'created (changed)' in out
    exchange(netlab, primary, client, 200, echo=False, pps=5000)
    assert to_vm.wait(400, timeout=5) == 400

    # The shadow restarts: the mirror points at a dead device until its own post-start.
    mirrors[0]['backend'] = 'nft'
    state.write_text(json.dumps({'mirrors': mirrors}))
    assert 'updated (changed)' in hook(netlab, state, hooklib, 100, 'post-start')
    netlab.release(to_vm)
    netlab.restart_nic(900)
    to_vm = shadow_counters(netlab, shadow)[0]
    exchange(netlab, primary, client, 200, echo=False, pps=5000)
    assert to_vm.settle(0.5) == 0
    out = hook(netlab, state, hooklib, 900, 'post-start')
    assert 'tap100i0 -> tap900i0 updated (changed)' in out
    assert 'unchanged' in hook(netlab, state, hooklib, 900, 'post-start')
    exchange(netlab, primary, client, 200, echo=False, pps=5000)
    assert to_vm.wait(200, timeout=5) == 200

    # Stopping the primary removes its mirror; an unrelated VM's phase does nothing.
    assert hook(netlab, state, hooklib, 555, 'post-start') == ''
    assert 'removed (changed)' in hook(netlab, state, hooklib, 100, 'pre-stop')
    assert 'shadownet' not in netlab.run(netlab.node, ['nft', 'list', 'ruleset']).stdout


@pytest.mark.netns
def test_hookscript_usage_errors(hooklib):
    script = str(hooklib.parent / 'shadownet-hook.py')
    proc = subprocess.run([script, 'abc', 'post-start'], capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and 'usage' in proc.stderr
    proc = subprocess.run([script, '100', 'reboot'], capture_output=True, text=True, check=False)
    assert proc.returncode == 2


@pytest.mark.netns
@pytest.mark.parametrize('backend', ['nft', 'tc'])
def test_check_mode_absent_and_foreign_rules(netlab, backend):
    primary, shadow, client = build(netlab)
    netlab.vm(901, [('vmbr1', PRIMARY + '/24')])
    # Rules that are not ours, on the same device: they must survive everything below.
    netlab.run(netlab.node, ['nft', 'add', 'table', 'netdev', 'someoneelse'])
    netlab.run(netlab.node, ['tc', 'qdisc', 'add', 'dev', 'tap100i0', 'ingress'])
    netlab.run(netlab.node, ['tc', 'filter', 'add', 'dev', 'tap100i0', 'parent', 'ffff:', 'pref',
                             '10', 'protocol', 'all', 'u32', 'match', 'u32', '0', '0', 'action',
                             'mirred', 'egress', 'mirror', 'dev', 'tap901i0'])
    args = {'source_vmid': 100, 'target_vmid': 900, 'backend': backend, 'netns': netlab.node}
    before = ruleset(netlab)
    res = run_module(args, check_mode=True, diff=True)
    assert res['changed'] is True and res['commands']
    assert res['diff']['before'] == {} and set(res['diff']['after']) == {'ingress', 'egress'}
    assert ruleset(netlab) == before  # check mode touched nothing
    to_vm = shadow_counters(netlab, shadow)[0]
    exchange(netlab, primary, client, 100, echo=False, pps=5000)
    assert to_vm.settle(0.3) == 0

    assert run_module(args)['changed'] is True
    assert run_module(args)['changed'] is False
    assert ruleset(netlab) != before
    exchange(netlab, primary, client, 100, echo=False, pps=5000)
    assert to_vm.wait(100, timeout=5) == 100

    gone = run_module(dict(args, state='absent'))
    assert gone['changed'] is True
    assert ruleset(netlab) == before  # exactly what we added is gone, the foreign rules stay
    assert run_module(dict(args, state='absent'))['changed'] is False
    exchange(netlab, primary, client, 100, echo=False, pps=5000)
    assert to_vm.settle(0.3) == 100


@pytest.mark.netns
def test_shadow_never_reaches_the_primary_bridge(netlab):
    primary, shadow, client = build(netlab)
    run_module({'source_vmid': 100, 'target_vmid': 900, 'netns': netlab.node})
    smac = shadow.nics[0].mac
    leaks = [netlab.capture(netlab.node, dev, match=lambda f: f.src_mac == smac)
             for dev in ('vmbr0', 'tap100i0', 'cl-c1')]
    control = netlab.capture(netlab.node, 'tap900i0', match=lambda f: f.src_mac == smac)
    # The shadow answers what it sees and talks to the primary network's addresses.
    sh = netlab.udp(shadow.ns, (PRIMARY, 6000))
    sh.sock.setsockopt(__import__('socket').SOL_SOCKET, __import__('socket').SO_BROADCAST, 1)
    for dst in ((CLIENT, CPORT), ('10.0.0.255', CPORT), ('10.0.0.1', 53)):
        sh.send(dst, 50, pps=2000)
    exchange(netlab, primary, client, 500)
    assert control.wait(50) >= 50  # the shadow did transmit (ARP requests, broadcasts)
    assert [c.settle(0.5) for c in leaks] == [0, 0, 0]
    assert all(c.error is None for c in leaks + [control])


@pytest.mark.netns
@pytest.mark.parametrize('args,match', [
    ({'source': 'tap 100', 'target': 'tap900i0'}, 'not a valid interface name'),
    ({'source': 'tap100;ls', 'target': 'tap900i0'}, 'not a valid interface name'),
    ({'source': 'tap100i0', 'target': 'averylongname1234'}, 'not a valid interface name'),
    ({'source': 'tap100i0', 'target': 'tap900i0', 'mode': 'sampled', 'rate': 0}, 'out of range'),
    ({'source': 'tap100i0', 'target': 'tap900i0', 'mode': 'sampled', 'rate': 1.5}, 'out of range'),
    ({'source': 'tap100i0', 'target': 'tap900i0', 'direction': 'sideways'}, 'direction'),
    ({'source': 'tap100i0', 'target': 'tap900i0', 'netns': 'x;reboot'}, 'netns'),
])
def test_malformed_input_is_rejected_before_anything_runs(monkeypatch, args, match):
    def refuse(*a, **kw):
        raise AssertionError('a command ran: %r' % (a,))
    monkeypatch.setattr(port_mirror.AnsibleModule, 'run_command', refuse)
    res = run_module(args)
    assert res['failed'] is True and match in res['msg'] and res.get('commands', []) == []


@pytest.mark.netns
def test_through_the_ansible_cli(netlab):
    primary, shadow, client = build(netlab)
    args = {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': 0.5,
            'direction': 'egress', 'netns': netlab.node}
    rc, res = ansible_adhoc(args, check=True)
    assert rc == 0 and res['changed'] is True
    assert 'shadownet' not in netlab.run(netlab.node, ['nft', 'list', 'ruleset']).stdout
    rc, res = ansible_adhoc(args)
    assert rc == 0 and res['changed'] is True
    assert res['after'] == {'egress': [{'backend': 'nft', 'sample': 5000, 'target': 'tap900i0', 'sampling': 'flow'}]}
    rc, res = ansible_adhoc(args)
    assert rc == 0 and res['changed'] is False
    bad = dict(args, source='tap100i0 ;x')
    del bad['source_vmid']
    rc, res = ansible_adhoc(bad)
    assert rc != 0 and 'not a valid interface name' in res['msg']


def play_role(tmp_path, lab, **role_vars):
    """Run the port_mirror role with ansible-playbook against this host; returns (rc, stdout)."""
    dirs = {'port_mirror_snippets_dir': str(tmp_path / 'snippets'),
            'port_mirror_state_file': str(tmp_path / 'etc' / 'mirrors.json'),
            'port_mirror_lib_dir': str(tmp_path / 'lib'), 'port_mirror_netns': lab.node}
    dirs.update(role_vars)
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{
        'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
        'roles': [{'role': 'shadownet.proxmox.port_mirror', 'vars': dirs}],
        'post_tasks': [{'name': 'show', 'ansible.builtin.debug': {'var': 'port_mirror_hookscript_volid'}}],
    }]))
    # pvesh for the preflight's cluster check: this host is the cluster's one node.
    bindir = fake_pve_cli(tmp_path / 'bin', {'localhost': 'online'}, LOCAL, tmp_path / 'snippets')
    proc = ansible_playbook([playbook, '-e', 'ansible_python_interpreter=%s' % VENV_PY],
                            env={'PATH': os.pathsep.join([bindir, VENV_BIN, os.environ.get('PATH', '')])})
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.netns
@pytest.mark.slow
def test_role_installs_hookscript_applies_and_prunes(netlab, tmp_path):
    primary, shadow, client = build(netlab)
    netlab.vm(101, [('vmbr0', '10.0.0.11/24')])
    netlab.vm(901, [('vmbr1', '10.0.0.11/24')])
    both = [{'source_vmid': 100, 'target_vmid': 900},
            {'source_vmid': 101, 'target_vmid': 901, 'mode': 'sampled', 'rate': 0.5,
             'direction': 'egress'},
            {'source_vmid': 102, 'target_vmid': 902}]  # not running: skipped, kept for the hook
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=both)
    assert rc == 0, out
    assert 'local:snippets/shadownet-hook.py' in out
    hookfile = tmp_path / 'snippets' / 'shadownet-hook.py'
    assert os.access(hookfile, os.X_OK)
    state = json.loads((tmp_path / 'etc' / 'mirrors.json').read_text())
    pairs = [(m['source_vmid'], m['target_vmid']) for m in state['mirrors']]
    assert pairs == [(100, 900), (101, 901), (102, 902)]
    tables = netlab.run(netlab.node, ['nft', 'list', 'tables']).stdout
    assert 'shadownet_tap100i0_-tap900i0' in tables and 'shadownet_tap101i0_-tap901i0' in tables
    # The sampled mirror samples whole flows unless told otherwise.
    assert [m['sampling'] for m in state['mirrors']] == ['flow', 'flow', 'flow']
    sampled = netlab.run(netlab.node, ['nft', 'list', 'table', 'netdev', 'shadownet_tap101i0_-tap901i0']).stdout
    assert 'symhash mod 10000 < 5000' in sampled
    to_vm, from_vm = shadow_counters(netlab, shadow)
    exchange(netlab, primary, client, 300)
    assert (to_vm.wait(300, timeout=5), from_vm.wait(300, timeout=5)) == (300, 300)

    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=both)
    assert rc == 0 and recap(out)['changed'] == 0, out
    # Per-packet sampling asked for: the table is rebuilt, and then stays.
    both[1]['sampling'] = 'packet'
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=both)
    assert rc == 0 and recap(out)['changed'] >= 1, out
    sampled = netlab.run(netlab.node, ['nft', 'list', 'table', 'netdev', 'shadownet_tap101i0_-tap901i0']).stdout
    assert 'symhash' not in sampled and 'numgen random mod 10000 < 5000' in sampled
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=both)
    assert rc == 0 and recap(out)['changed'] == 0, out

    # 101 -> 901 is no longer wanted: removed from the node and from the state file.
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=[both[0]])
    assert rc == 0, out
    tables = netlab.run(netlab.node, ['nft', 'list', 'tables']).stdout
    assert 'tap101i0' not in tables and 'shadownet_tap100i0_-tap900i0' in tables
    state = json.loads((tmp_path / 'etc' / 'mirrors.json').read_text())
    assert [(m['source_vmid'], m['target_vmid']) for m in state['mirrors']] == [(100, 900)]

    # The installed hookscript, with the installed library, as PVE would call it.
    netlab.release(to_vm)
    netlab.restart_nic(900)
    to_vm = shadow_counters(netlab, shadow)[0]
    proc = subprocess.run([str(hookfile), '900', 'post-start'], capture_output=True, text=True,
                          env=dict(os.environ, SHADOWNET_MIRRORS=str(tmp_path / 'etc' / 'mirrors.json'),
                                   SHADOWNET_LIB=str(tmp_path / 'lib')), timeout=60, check=False)
    assert proc.returncode == 0 and 'updated (changed)' in proc.stdout, proc.stdout + proc.stderr
    exchange(netlab, primary, client, 100, echo=False, pps=5000)
    assert to_vm.wait(100, timeout=5) == 100


@pytest.mark.netns
def test_role_preflight_rejects_bad_mirrors(netlab, tmp_path):
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=[
        {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': 1.5}])
    assert rc != 0 and 'sampled mode needs 0 < rate <= 1' in out
    assert not (tmp_path / 'etc' / 'mirrors.json').exists()
    rc, out = play_role(tmp_path, netlab, port_mirror_mirrors=[
        {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': 0.5, 'sampling': 'bytes'}])
    assert rc != 0 and 'sampling' in out and 'flow, packet' in out, out
    assert not (tmp_path / 'etc' / 'mirrors.json').exists()


@pytest.mark.netns
def test_hookscript_applies_the_sampling_of_the_state_file(netlab, tmp_path, hooklib):
    build(netlab)
    state = tmp_path / 'mirrors.json'
    flow = {'source_vmid': 100, 'target_vmid': 900, 'mode': 'sampled', 'rate': 0.2, 'sampling': 'flow'}
    state.write_text(json.dumps({'mirrors': [flow]}))
    assert 'created (changed)' in hook(netlab, state, hooklib, 100, 'post-start')
    table = ['nft', 'list', 'table', 'netdev', 'shadownet_tap100i0_-tap900i0']
    assert 'symhash mod 10000 < 2000' in netlab.run(netlab.node, table).stdout
    assert 'unchanged' in hook(netlab, state, hooklib, 900, 'post-start')
    # A state file from before `sampling` existed meant per-packet sampling.
    del flow['sampling']
    state.write_text(json.dumps({'mirrors': [flow]}))
    assert 'updated (changed)' in hook(netlab, state, hooklib, 100, 'post-start')
    text = netlab.run(netlab.node, table).stdout
    assert 'symhash' not in text and 'numgen random mod 10000 < 2000' in text

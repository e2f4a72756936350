#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""make lab, networking stage: the plan's mirror in network namespaces, with real packets and the real module.

Builds what the PVE nodes look like for one critical service of the lab plan: the primary network's vnet bridge
and its isolated shadow twin (the plan's own vnet ids), the primary's NIC ``tap<vmid>i0`` and the shadow's
``tap<vmid>i0`` (the simulator's vmids), and a client. With the plan's default ``shadow_transport: vxlan`` the
shadow runs on another node (spread placement): the primary's node and the shadow's node are two namespaces
joined by an underlay, the twin bridge exists on both with a real VXLAN port (the plan's VNI), and the mirror
copies into the collection's port on the local twin bridge (``target_bridge``). Then:

1. runs ``shadownet.proxmox.port_mirror`` through ``ansible`` (the real module, in the node namespace) with the
   plan's mirror mode, rate, sampling and direction: the client talks to the primary over ``FLOWS`` UDP flows and
   the shadow counts the mirrored packets per flow (flow sampling copies whole flows or nothing of them);
2. runs it again: no change;
3. checks isolation: what the shadow sends never reaches the primary bridge;
4. removes the mirror, and removes every namespace it made.

Reads the plan and the vmids from a JSON file written by playbooks/lab.yml; prints a short report.
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tests'))

from lab.flows import FlowTally  # noqa: E402
from lab.netns import Lab, cleanup_stale  # noqa: E402

PACKETS = 2000
FLOWS = 100  # the PACKETS go over this many client ports: flow sampling keeps or drops whole flows


def module(node_ns, **args):
    """Run the port_mirror module through the ansible CLI; returns its JSON result."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, '.build', 'collections'), ANSIBLE_NOCOLOR='1')
    args = dict(args, netns=node_ns)
    cmd = [os.path.join(os.path.dirname(sys.executable), 'ansible'), 'localhost', '-c', 'local', '-i', 'localhost,',
           '-e', 'ansible_python_interpreter=' + sys.executable, '-m', 'shadownet.proxmox.port_mirror',
           '-a', json.dumps(args), '-o']
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith('localhost | ')), None)
    if line is None or '=>' not in line:
        raise SystemExit('port_mirror gave no result: %s %s' % (proc.stdout[-2000:], proc.stderr[-2000:]))
    result = json.loads(line.split('=>', 1)[1])
    if result.get('failed') or ' | FAILED' in line:
        raise SystemExit('port_mirror failed: %s' % result.get('msg'))
    return result


def sh(ns, *args):
    subprocess.run(['ip', '-n', ns] + list(args), check=True, capture_output=True, text=True, timeout=30)


def twin_bridge(ns, bridge, vni, local, remote):
    """A vxlan zone's vnet bridge on one node: the bridge plus a VXLAN port towards the other node."""
    sh(ns, 'link', 'add', bridge, 'mtu', '1450', 'type', 'bridge', 'stp_state', '0')
    sh(ns, 'link', 'add', 'vx' + str(vni)[-8:], 'mtu', '1450', 'type', 'vxlan', 'id', str(vni), 'local', local,
       'remote', remote, 'dstport', '4789')
    sh(ns, 'link', 'set', 'vx' + str(vni)[-8:], 'master', bridge, 'up')
    sh(ns, 'link', 'set', bridge, 'up')


def main():
    facts = json.load(open(sys.argv[1]))
    plan, vmids, where = facts['plan'], facts['vmids'], facts.get('nodes') or {}
    mirror = next(m for m in plan['mirrors'] if m['source']['nic'] == 0)
    nets = dict(((n['name'], n['role']), n) for n in plan['networks'])
    primary_net = nets[(mirror['source']['network'], 'primary')]
    shadow_net = nets[(mirror['target']['network'], 'shadow')]
    src_vmid, dst_vmid = vmids[mirror['source']['vm']], vmids[mirror['target']['vm']]
    net = primary_net['cidr'].rsplit('.', 1)[0]  # a /24 in the lab template
    remote = shadow_net.get('zone_type') == 'vxlan' and \
        where.get(mirror['source']['vm']) != where.get(mirror['target']['vm'])
    cleanup_stale()
    with Lab() as lab, Lab() as lab_b:
        lab.bridge(primary_net['bridge'])
        src_dev, dst_dev = 'tap%di0' % src_vmid, 'tap%di0' % dst_vmid
        if remote:
            # Two nodes: the primary's (lab) and the shadow's (lab_b), joined by an underlay (TEST-NET-1).
            sh(lab.node, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', lab_b.node)
            sh(lab.node, 'addr', 'add', '192.0.2.1/30', 'dev', 'ul0')
            sh(lab_b.node, 'addr', 'add', '192.0.2.2/30', 'dev', 'ul0')
            sh(lab.node, 'link', 'set', 'ul0', 'up')
            sh(lab_b.node, 'link', 'set', 'ul0', 'up')
            twin_bridge(lab.node, shadow_net['bridge'], shadow_net['vxlan_tag'], '192.0.2.1', '192.0.2.2')
            twin_bridge(lab_b.node, shadow_net['bridge'], shadow_net['vxlan_tag'], '192.0.2.2', '192.0.2.1')
            shadow = lab_b.vm(dst_vmid, [(shadow_net['bridge'], net + '.11/24')])  # same CIDR: the twin
            spec = dict(source=src_dev, target_bridge=shadow_net['bridge'])
            print('lab-network: %s (primary %s) and %s (shadow %s): twin %s over VXLAN %s' % (
                lab.node, where.get(mirror['source']['vm']), lab_b.node, where.get(mirror['target']['vm']),
                shadow_net['bridge'], shadow_net['vxlan_tag']))
        else:
            lab.bridge(shadow_net['bridge'])
            shadow = lab.vm(dst_vmid, [(shadow_net['bridge'], net + '.11/24')])  # same CIDR: the twin
            spec = dict(source=src_dev, target=dst_dev)
        primary = lab.vm(src_vmid, [(primary_net['bridge'], net + '.11/24')])
        client = lab.client('client', primary_net['bridge'], net + '.200/24')
        print('lab-network: node %s: bridge %s (%s, %s), %s -> %s on the isolated twin %s' % (
            lab.node, primary_net['bridge'], primary_net['alias'], primary_net['cidr'], src_dev, dst_dev,
            shadow_net['bridge']))
        spec.update(mode=mirror['mode'], direction=mirror['direction'])
        if mirror['mode'] == 'sampled':
            spec['rate'] = mirror['rate']
            spec['sampling'] = mirror.get('sampling') or 'flow'
        first = module(lab.node, **spec)
        again = module(lab.node, **spec)
        print('lab-network: port_mirror %s rate %s%s direction %s: changed=%s, second run changed=%s' % (
            mirror['mode'], mirror['rate'], ' sampling %s' % spec['sampling'] if 'sampling' in spec else '',
            mirror['direction'], first['changed'], again['changed']))
        # Traffic: the client talks to the primary, which echoes; the shadow counts copies.
        shadow_lab = lab_b if remote else lab
        tally = FlowTally(net + '.200', net + '.11', outgoing=False)
        seen = shadow_lab.capture(shadow.ns, 'eth0', match=tally)
        server = lab.udp(primary.ns, (net + '.11', 7000), echo=True)
        answered, per_flow = 0, PACKETS // FLOWS
        for i in range(FLOWS):
            sender = lab.udp(client, (net + '.200', 40000 + i))
            sender.send((net + '.11', 7000), per_flow, pps=4000)
            answered += sender.wait(per_flow, timeout=20, settle=0)
            lab.release(sender)
        copies = seen.settle()
        expected = PACKETS * (2 if mirror['direction'] == 'both' else 1)
        whole = {'c2s': per_flow if mirror['direction'] in ('ingress', 'both') else 0,
                 's2c': per_flow if mirror['direction'] in ('egress', 'both') else 0}
        flows = tally.snapshot()
        partial = [f for f, counts in flows.items() if counts != whole]
        print('lab-network: client sent %d over %d flows, primary answered %d; the shadow saw %d mirrored packets '
              '(%.1f%% of %d; %s) of %d flows, %d of them incomplete' % (
                  PACKETS, FLOWS, answered, copies, 100.0 * copies / expected, expected,
                  'sampled by %s' % spec['sampling'] if mirror['mode'] == 'sampled' else 'full', len(flows),
                  len(partial)))
        # Isolation: the shadow shouts on its network; nothing reaches the primary bridge.
        leak = lab.capture(lab.node, primary_net['bridge'], match=lambda f: f.src_mac == shadow.nics[0].mac)
        noise = shadow_lab.udp(shadow.ns, (net + '.11', 7001))
        noise.send((net + '.200', 9), 200)
        leaked = leak.settle()
        print('lab-network: the shadow sent 200 packets; %d reached the primary bridge' % leaked)
        removed = module(lab.node, state='absent', **spec)
        print('lab-network: mirror removed (changed=%s)' % removed['changed'])
        del server
        ok = answered == PACKETS and copies > 0 and leaked == 0 and not again['changed']
        ok = ok and (spec.get('sampling') == 'packet' or not partial)
    print('lab-network: namespaces removed; %s' % ('OK' if ok else 'FAILED'))
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: port_mirror
short_description: Mirror a VM NIC's traffic to a shadow VM's NIC on a Proxmox VE node
version_added: 0.1.0
description:
  - Copies the packets of a primary VM's NIC (its host-side device C(tap<vmid>i<n>)) to the NIC of
    a shadow VM on the isolated shadow network, completely (O(mode=full)) or a sample (O(mode=sampled)) of
    whole flows (O(sampling=flow), the default) or of single packets (O(sampling=packet)). One way only;
    nothing the shadow sends is copied back.
  - Runs on the PVE node itself, as root. Reads the live rules back as structures (C(nft -j),
    C(tc -j)), so a second run with the same options reports no change.
  - B(Direction is seen from the VM.) O(direction=egress) copies what the VM sends (on the host
    these packets arrive as ingress on the tap); O(direction=ingress) copies what the VM receives
    (they leave the host through the tap as egress); O(direction=both) copies both.
  - B(Backends.) V(nft) adds one nftables C(netdev) table per (source, target) pair with an
    C(ingress) and/or C(egress) hook on the source device and C(dup to <target>) (preceded by the sampling
    selector in sampled mode, see O(sampling)). V(tc) adds an C(ingress) qdisc and a
    root C(htb) (handle C(5e4e:)) with C(u32) filters and C(mirred egress mirror).
    PVE itself deletes the tc C(ingress) and root qdiscs of a tap on every tap plug and every NIC
    C(rate=) change, which silently drops tc mirrors; nftables C(netdev) tables are not touched.
    That is why V(nft) is the default for both modes. Sampling needs V(nft).
  - B(Firewall.) With the iptables-based C(pve-firewall) on for the NIC, its tap is plugged into
    C(fwbr<vmid>i<n>) (C(tap) - C(fwbr) - C(fwln)/C(fwpr) veth - C(vmbr)); PVE 9's nftables firewall
    (C(proxmox-firewall)) filters on the bridge itself and makes no C(fwbr) (pve-firewall C(Helpers.pm)
    C(needs_fwbr)), except on OVS bridges. Either way this module mirrors the tap itself, because
    it carries exactly what the guest sent and, after the firewall, what the guest received; the
    C(fwpr)/C(fwln) devices would also carry packets the firewall drops, which the primary never
    saw. The result reports a C(fwbr) bridge in RV(firewall_bridge) (null without one). Copies that cross
    nodes leave the twin bridge through the shadow's tap and so meet the shadow's own firewall (its
    inbound policy is C(DROP) unless set), so keep the firewall off on the shadow's twin NIC, or allow the
    mirrored traffic there. Local copies go straight to the shadow's tap and bypass it.
  - B(Migration and NIC changes.) A live migration runs no hook on the source (qemu-server
    C(QemuMigrate.pm) skips C(pre-stop)/C(post-stop) there), and a NIC change of model, MAC, queues or MTU
    re-plugs the device without a hook, so the mirror is left on the old node or on a dead device. Run
    C(mirror.yml) (the C(port_mirror) role) again after migrating a primary or its shadow, or after such
    a NIC change; whether a pair is local or crosses nodes is decided from where both VMs are then.
  - Copies reach the shadow with the primary's destination MAC; the shadow's NIC must accept them
    (promiscuous mode in the guest, or the same MAC on the isolated shadow network).
  - B(Ownership.) Removal (O(state=absent)) deletes exactly what this module adds for the pair, namely
    its nftables table C(shadownet_<source>_-<target>), and its tc filters (preference 49152-49407,
    action cookie C(5e) + target name), plus its root C(htb) and the C(ingress) qdisc once they
    hold no filter. Other qdiscs, filters and tables on the device are left alone.
  - B(Shadow on another node.) With O(target_bridge) the copy does not go to a local device of the shadow
    but into a veth pair this module owns, one end (C(vethsn<vmid>i<n>), MAC learning off) a port of
    O(target_bridge), the other end (C(snd<vmid>i<n>), up, no address) the one the mirror duplicates
    into. The bridge is the local vnet bridge of the shadow twin network, an SDN C(vxlan) zone whose
    bridge PVE creates on every node of the zone, so the copies are flooded over VXLAN to the shadow's
    node. The port's name starts with C(veth) because PVE's C(ifupdown2) keeps only bridge ports matching
    its C(bridge-ports-condone-regex) (C(^(tap|veth|fwpr))) when a node network or SDN apply runs
    C(ifreload -a); any other port would be detached and set down. The copies enter the twin bridge with the source MAC rewritten to a fixed, locally
    administered one (RV(port_mac)), because the remote bridge learns MACs from what it receives and
    would otherwise drop copies addressed to a MAC it has already seen behind the VXLAN port.
    Everything the twin network sends back into the port is dropped. Both veth ends carry the interface
    alias C(shadownet-mirror <source> -> <bridge>); a device with one of these names but without that
    alias is not touched and the module fails. O(state=absent) removes the pair's nftables table and
    the veth pair. VXLAN costs 50 bytes per frame; frames larger than the twin bridge's MTU are not
    copied.
  - Tap devices are recreated on every VM start, and a mirror pointing at a restarted target
    points at a dead device. The C(shadownet.proxmox.port_mirror) role installs a hookscript that
    re-applies mirrors on C(post-start) of both the primary and the shadow.
author:
  - shadownet.proxmox developers (@shadownet)
options:
  source:
    description:
      - Host-side device to copy from, for example C(tap100i0). Mutually exclusive with O(source_vmid).
      - 1-15 characters from C(A-Z a-z 0-9 _ . -), starting with a letter or digit.
    type: str
  source_vmid:
    description: VM id of the primary; the device is C(tap<source_vmid>i<source_nic>).
    type: int
  source_nic:
    description: NIC index (C(netN)) of the primary.
    type: int
    default: 0
  target:
    description: Host-side device of the shadow's NIC on the shadow network, for example C(tap900i0).
    type: str
  target_vmid:
    description: VM id of the shadow; the device is C(tap<target_vmid>i<target_nic>).
    type: int
  target_nic:
    description: NIC index of the shadow's NIC on the shadow network.
    type: int
    default: 0
  target_bridge:
    description:
      - Instead of a target device, copy into a veth port (owned by this module, created when absent) on
        this bridge, the local vnet bridge of the shadow twin network (see the description). For shadows
        that run on another node. Mutually exclusive with O(target) and O(target_vmid).
      - 1-15 characters from C(A-Z a-z 0-9 _ . -), starting with a letter or digit. Needs O(backend=nft).
    type: str
  mode:
    description: V(full) copies every packet; V(sampled) copies a random O(rate) fraction.
    type: str
    choices: [full, sampled]
    default: full
  rate:
    description:
      - Fraction of flows (O(sampling=flow)) or packets (O(sampling=packet)) to copy in V(sampled) mode,
        0 < rate <= 1, rounded to the nearest 1/10000, the threshold C(T) being O(rate) times 10000, rounded.
      - The probability is exactly the ceiling of C(T * 2^32 / 10000), divided by C(2^32); that is within 2.4e-6 of
        C(T / 10000), because the kernel maps a 32-bit value to C(mod 10000) by multiplying and shifting.
        RV(spec.effective_rate) returns it.
    type: float
  sampling:
    description:
      - How V(sampled) mode chooses what to copy; ignored with O(mode=full).
      - V(flow) copies whole flows, both directions, or nothing of them, so the shadow can reassemble and
        replay every stream it gets. IPv4 and IPv6 packets are copied when C(symhash mod 10000 < T);
        nftables' C(symhash) is the kernel's symmetric flow hash (C(__skb_get_hash_symmetric)) of the
        addresses, the ports (TCP, UDP, SCTP, DCCP, UDP-Lite) and the IP protocol, with the two addresses and
        the two ports each put in order first, so a request and its reply hash alike. The hash is keyed
        by a secret the kernel draws at boot, so the decision for a 5-tuple is stable on a node until it
        reboots (a primary that migrates mid-flow may change it). ICMP and other protocols without ports
        are one flow per address pair and protocol (a ping and its reply go together); IP fragments carry
        no ports and are decided by address pair. Frames that are not IP (ARP, LLDP) have no flow and
        are sampled per packet at the same rate.
      - V(packet) copies each frame independently at random (C(numgen random mod 10000 < T)), as before
        this option existed; streams then arrive with holes, which only suits packet and byte counting.
      - A table written by an older version (per-packet sampling) is rebuilt when V(flow) is asked for.
    type: str
    choices: [flow, packet]
    default: flow
  direction:
    description: Which packets to copy, seen from the primary VM (see the description).
    type: str
    choices: [ingress, egress, both]
    default: both
  backend:
    description: V(nft) survives PVE's qdisc resets and can sample; V(tc) is for full mode only.
    type: str
    choices: [nft, tc]
    default: nft
  state:
    description: V(present) makes the mirror exist exactly as described; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  netns:
    description:
      - Run every command inside this network namespace (C(ip netns exec)). For labs and tests,
        where the "node" is a namespace.
    type: str
  ignore_missing:
    description:
      - With O(state=present), when the source or target device does not exist (the VM is not
        running), report no change instead of failing. The hookscript applies it at VM start.
    type: bool
    default: false
notes:
  - Check mode reports what would change and runs only read commands. Diff mode shows the rules
    per direction before and after.
  - Every command is run as an argument list; names are validated before anything runs.
  - Flow sampling relies on the kernel's symmetric flow hash being symmetric. Kernels before the fix
    "net - core - fix flow symmetric hash" (Linux 6.0, backported to the stable series) hashed the two directions
    of an IPv4 address pair that differ by exactly 2^31 (as 32-bit numbers) differently; kernels whose symmetric
    hash still stopped at a non-zero IPv6 flow label hashed such packets by address pair only (symmetric, but
    whole host pairs go together). PVE 8 and later ship 6.x kernels; the collection's tests check the symmetry
    with real packets in both directions.
requirements:
  - iproute2 (C(ip), C(tc)) and nftables (C(nft)) with JSON support on the node.
  - Linux 5.16 or later for the nftables C(egress) hook (PVE 8 ships 6.x).
attributes:
  check_mode:
    description: Runs only the read commands and reports what would change.
    support: full
  diff_mode:
    description: Shows the pair's rules per direction before and after.
    support: full
'''

EXAMPLES = r'''
- name: Copy all traffic of VM 100 net0 to shadow VM 900 net0
  shadownet.proxmox.port_mirror:
    source_vmid: 100
    source_nic: 0
    target_vmid: 900
    target_nic: 0

- name: Copy 10% of what VM 101 sends, nothing it receives
  shadownet.proxmox.port_mirror:
    source_vmid: 101
    target_vmid: 901
    mode: sampled
    rate: 0.1
    direction: egress

- name: Copy 5% of the connections of VM 102, both directions of each, whole
  shadownet.proxmox.port_mirror:
    source_vmid: 102
    target_vmid: 902
    mode: sampled
    rate: 0.05
    sampling: flow

- name: Copy VM 100 net0 to its shadow on another node, through the twin network's VXLAN vnet bridge
  shadownet.proxmox.port_mirror:
    source_vmid: 100
    target_bridge: sfro9qab

- name: Remove the mirror
  shadownet.proxmox.port_mirror:
    source: tap100i0
    target: tap900i0
    state: absent
'''

RETURN = r'''
source:
  description: The source device.
  returned: always
  type: str
  sample: tap100i0
target:
  description: The target device (with O(target_bridge), the veth end the mirror duplicates into).
  returned: always
  type: str
  sample: tap900i0
target_bridge:
  description: The bridge the copies go to.
  returned: when O(target_bridge) is set
  type: str
  sample: sfro9qab
port:
  description: The veth end that is a port of O(target_bridge).
  returned: when O(target_bridge) is set
  type: str
  sample: vethsn100i0
port_mac:
  description: The source MAC the copies carry on the twin bridge.
  returned: when O(target_bridge) is set
  type: str
  sample: 02:5e:1a:2b:3c:4d
firewall_bridge:
  description: The C(fwbr) bridge the source tap is plugged into (the iptables C(pve-firewall) on for the NIC),
    else null.
  returned: always
  type: str
  sample: fwbr100i0
before:
  description:
    - Mirror rules found for the pair, per VM direction (backend, sample threshold out of 10000 or null, target; in
      sampled mode also C(sampling), V(flow) or V(packet)).
    - With O(target_bridge) also C(port) (the rules on the veth pair, the source MAC rewrite and the drop of what comes
      back) and C(link) (the veth pair, its bridge, MAC learning, state and ownership).
  returned: always
  type: dict
  sample: {}
spec:
  description: The validated mirror (source, target, mode, rate, direction, backend, and in sampled mode sampling and
    effective_rate).
  returned: with O(state=present)
  type: dict
  sample: {"source": "tap100i0", "target": "tap900i0", "mode": "sampled", "rate": 0.1, "direction": "both",
           "backend": "nft", "sampling": "flow", "effective_rate": 0.10000000009313226}
  contains:
    sampling:
      description: V(flow) or V(packet), see O(sampling).
      returned: in sampled mode
      type: str
      sample: flow
    effective_rate:
      description: The exact probability that a flow (V(flow)) or a packet (V(packet)) is copied, see O(rate).
      returned: in sampled mode
      type: float
      sample: 0.10000000009313226
after:
  description: Mirror rules for the pair after the run (in check mode, what they would be).
  returned: always
  type: dict
  sample: {"egress": [{"backend": "nft", "sample": null, "target": "tap900i0"}]}
missing:
  description: Devices of the pair that do not exist.
  returned: always
  type: list
  elements: str
  sample: []
commands:
  description: The changing commands run (or, in check mode, that would run), as argument lists.
  returned: always
  type: list
  elements: list
packets:
  description: Packets copied so far per VM direction (nft backend, when the mirror was already in place).
  returned: when the mirror was already present
  type: dict
  sample: {"egress": 1520, "ingress": 1498}
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.shadownet.proxmox.plugins.module_utils.mirror import (
    MirrorError, MirrorManager, build_spec, port_mac, validate_device, tap_name)


def _resolve(params, side):
    if params[side] is not None:
        return validate_device(params[side], side)
    if params[side + '_vmid'] is None:
        raise MirrorError('give %s (a device name) or %s_vmid (+ %s_nic)' % (side, side, side))
    return tap_name(params[side + '_vmid'], params[side + '_nic'], side)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            source=dict(type='str'),
            source_vmid=dict(type='int'),
            source_nic=dict(type='int', default=0),
            target=dict(type='str'),
            target_vmid=dict(type='int'),
            target_nic=dict(type='int', default=0),
            target_bridge=dict(type='str'),
            mode=dict(type='str', choices=['full', 'sampled'], default='full'),
            rate=dict(type='float'),
            sampling=dict(type='str', choices=['flow', 'packet'], default='flow'),
            direction=dict(type='str', choices=['ingress', 'egress', 'both'], default='both'),
            backend=dict(type='str', choices=['nft', 'tc'], default='nft'),
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            netns=dict(type='str'),
            ignore_missing=dict(type='bool', default=False),
        ),
        mutually_exclusive=[('source', 'source_vmid'), ('target', 'target_vmid', 'target_bridge')],
        required_one_of=[('source', 'source_vmid'), ('target', 'target_vmid', 'target_bridge')],
        required_if=[('mode', 'sampled', ('rate',))],
        supports_check_mode=True,
    )
    p = module.params

    def run(argv, data=None):
        return module.run_command(argv, data=data, binary_data=True)

    manager = None
    try:
        # Everything is validated before the first command runs.
        if p['target_bridge'] is not None:
            spec = build_spec(source=_resolve(p, 'source'), target_bridge=p['target_bridge'],
                              mode=p['mode'], rate=p['rate'], direction=p['direction'],
                              backend=p['backend'], sampling=p['sampling'])
        else:
            spec = build_spec(source=_resolve(p, 'source'), target=_resolve(p, 'target'),
                              mode=p['mode'], rate=p['rate'], direction=p['direction'],
                              backend=p['backend'], sampling=p['sampling'])
        tools = dict((tool, module.get_bin_path(tool, required=True, opt_dirs=['/usr/sbin', '/sbin']))
                     for tool in ('ip', 'tc', 'nft'))
        manager = MirrorManager(run, netns=p['netns'], tools=tools)
        if p['state'] == 'present':
            result = manager.ensure_present(spec, check_mode=module.check_mode,
                                            ignore_missing=p['ignore_missing'])
        elif spec.bridge:
            result = manager.ensure_absent_bridge(spec.source, spec.bridge, check_mode=module.check_mode)
        else:
            result = manager.ensure_absent(spec.source, spec.target, check_mode=module.check_mode)
        if spec.bridge:
            result['port_mac'] = port_mac(spec.source)
    except MirrorError as exc:
        module.fail_json(msg=str(exc), commands=manager.commands if manager else [])
    result['commands'] = manager.commands
    if result.get('warning'):
        module.warn(result.pop('warning'))
    if module._diff:
        result['diff'] = {'before': result['before'], 'after': result['after'],
                          'before_header': '%s -> %s' % (result['source'], result['target']),
                          'after_header': '%s -> %s' % (result['source'], result['target'])}
    module.exit_json(**result)


if __name__ == '__main__':
    main()

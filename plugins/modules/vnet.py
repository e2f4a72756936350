#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: vnet
short_description: SDN networks (zone, vnet, subnet) and node Linux bridges as one desired state, applied once
version_added: 0.1.0
description:
  - Converges a list of networks (O(networks), for example the C(networks) of a shadownet plan, passed as they
    are) or one network given by the top-level options. A network of C(type=vnet) is an SDN zone
    (C(simple), C(vlan) or C(vxlan)), a vnet in it and a subnet on the vnet.
  - A C(vxlan) zone spans nodes (PVE creates the vnet bridge on every node of the zone and joins them with VXLAN);
    shadownet plans use one per shadow twin network when C(shadow_transport) is C(vxlan), isolated (its own VNI,
    no gateway, no exit node, no SNAT). Its O(peers) default to the address of every cluster node
    (C(/cluster/status), C(ip)); peers are compared as a set of addresses.
  - Compares zones, vnets and subnets as structures (zone type, bridge and VXLAN peers; vnet zone, alias and tag; subnet
    gateway and SNAT) and writes only what differs, with a before/after diff.
  - All SDN changes of one run are made under PVE 9's global SDN lock (C(POST /cluster/sdn/lock)); every write
    carries the lock token, the whole set is applied once (C(PUT /cluster/sdn), a task that is waited for) and
    the lock is released with it. When any step fails, the pending SDN changes are rolled back
    (C(POST /cluster/sdn/rollback)) and the lock released, so no half-built network is left pending.
  - Before the first write the module stops on a cluster without quorum, an offline node (an SDN apply reloads
    every node), pending SDN changes made by someone else, and a lock held by another client, each with a
    message that says what to do. Check mode reads only; it does not even take the lock.
  - C(state=absent) removes the subnets, then the vnet, then the zone when no other vnet uses it.
    A vnet belongs to its network, so subnets on it other than C(cidr) are removed.
  - A vnet (or a node bridge) that a guest still uses is not removed; PVE would remove it (it checks only
    subnets) and the guests would lose their NIC's bridge at the next apply. The module reads every guest's
    C(netN) C(bridge=) (current and pending, C(/cluster/resources) and each guest's C(/pending)) and fails,
    naming the guests, before any write; check mode reports it too.
  - PVE applies SDN on each node in its own network reload and only warns when a node cannot be reached or a
    vnet cannot be generated there (a vlan zone whose bridge is not up on the node is skipped). The module
    reads the apply task's log and each node's reload task (C(srvreload)) and fails, naming the node and the
    vnets, when a vnet of this run is not applied everywhere. A vlan zone's C(zone_bridge) missing on an
    online node stops the run before any write (a warning when nothing is to be written).
  - Node bridges of the run are created and applied before the SDN apply, so that vlan zones can ride on them.
  - Bridge names (O(bridge), O(zone_bridge)) must be names PVE accepts (pve-common C(pve_verify_iface), a
    letter, then letters, digits or C(_)) of 2 to 15 characters (Linux's limit), without a C(.N) or C(:N)
    suffix; with a vlan zone, C(<zone_bridge>v<tag>) must fit in 15 characters too.
  - A network of C(type=bridge) is a node Linux bridge (C(/nodes/{node}/network)). With
    C(nodes) the module creates or updates the bridge on those nodes (no ports makes an isolated
    bridge), stages every change in the nodes' pending configuration and applies each touched node once (a task);
    on a failure, the pending changes of the nodes not yet applied are reverted. Without C(nodes) (the
    plan's C(type=bridge), an existing bridge) it only checks that the bridge exists on every online node.
  - Bridges are handled here rather than in a separate module so that a whole plan's networks, SDN and node
    bridges, are converged by one task with one preflight.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads only; takes no SDN lock and writes nothing.
    support: full
  diff_mode:
    description: Before and after, by object.
    support: full
options:
  networks:
    description:
      - The networks to converge in one run, under one SDN lock and one apply. Plan entries (C(networks) of a
        shadownet plan) can be passed as they are.
      - Each entry takes the keys of the single-network options (O(type), O(zone), O(zone_type), O(zone_bridge),
        O(peers), O(vnet), O(alias), O(tag) or C(vlan) (for a C(vxlan) zone also the plan's C(vxlan_tag)),
        O(cidr), O(gateway), O(snat), O(isolated), O(bridge), O(nodes),
        O(bridge_ports), O(comment), O(autostart), O(state)), with the same meaning and defaults.
      - The plan's C(name), C(role) and C(twin_of) are used in messages only. Other keys are ignored, as the plan
        format asks of its consumers; for an entry without C(role) (written by hand) they cause a warning.
      - Mutually exclusive with the single-network options.
    type: list
    elements: dict
  type:
    description:
    - C(vnet) for an SDN zone + vnet + subnet, C(bridge) for a node Linux bridge.
    - Default C(vnet) (not given here, so that it cannot clash with O(networks)).
    type: str
    choices:
    - vnet
    - bridge
  zone:
    description:
    - SDN zone id (2-8 lowercase letters and digits, starting with a letter). Required for vnet.
    type: str
  zone_type:
    description:
    - Zone type, C(simple), C(vlan) or C(vxlan). A zone's type cannot be changed once it exists.
    - Default C(simple) (not given here, so that it cannot clash with O(networks)).
    type: str
  zone_bridge:
    description:
    - The node bridge a C(vlan) zone rides on, for example C(vmbr0).
    type: str
  peers:
    description:
    - The addresses of the nodes a C(vxlan) zone joins (each node skips its own). Not allowed for other zone types.
    - Default, for a C(vxlan) zone, the C(ip) of every node in C(/cluster/status).
    type: list
    elements: str
  vnet:
    description:
    - SDN vnet id (2-8 lowercase letters and digits, starting with a letter). Required for vnet.
    type: str
  alias:
    description:
    - The vnet alias PVE shows (the logical name). For a bridge, the default comment.
    type: str
  tag:
    description:
    - VLAN tag of the vnet; required in a C(vlan) zone, not allowed in a C(simple) zone. In a C(vxlan) zone the
      VNI (1-16777215), required.
    type: int
    aliases:
    - vlan
  cidr:
    description:
    - The subnet, for example C(10.10.0.0/24).
    type: str
  gateway:
    description:
    - The subnet gateway. Unset means the subnet has none (an existing one is removed).
    type: str
  snat:
    description:
    - Source NAT for the subnet.
    - Default C(false) (not given here, so that it cannot clash with O(networks)).
    type: bool
  isolated:
    description:
    - An isolated (shadow) network, with no gateway and no SNAT whatever else is given.
    - Default C(false) (not given here, so that it cannot clash with O(networks)).
    type: bool
  bridge:
    description:
    - For C(type=bridge), the Linux bridge name (C(vmbrN)). For C(type=vnet) the plan sets it to the vnet id; it is
      ignored.
    type: str
  nodes:
    description:
    - For C(type=bridge), the nodes to create the bridge on. Empty means only check it exists.
    type: list
    elements: str
  bridge_ports:
    description:
    - For C(type=bridge), the ports of the bridge. Empty makes an isolated bridge.
    type: list
    elements: str
  comment:
    description:
    - For C(type=bridge), the interface comment (defaults to O(alias)).
    type: str
  autostart:
    description:
    - For C(type=bridge), bring the bridge up at boot.
    - Default C(true) (not given here, so that it cannot clash with O(networks)).
    type: bool
  state:
    description:
    - C(present) or C(absent).
    - Default C(present) (not given here, so that it cannot clash with O(networks)).
    type: str
    choices:
    - present
    - absent
  timeout:
    description: Seconds (wall clock) to wait for the SDN apply and each node's network apply task.
    type: int
    default: 300
notes:
  - Needs PVE 9 (the global SDN lock). The API user needs C(SDN.Allocate) on C(/sdn) and, for bridges,
    C(Sys.Modify) on C(/nodes/{node}); C(Sys.Audit) on C(/nodes/{node}) to read the nodes' bridges and their
    network reload tasks (started as root@pam), and C(VM.Audit) on the guests to check a network to remove.
  - Reverting a node's pending network configuration after a failure discards every pending change on that node,
    as PVE's own revert does.
'''

EXAMPLES = r'''
- name: Build all networks of a plan under one lock with one apply
  shadownet.proxmox.vnet:
    networks: "{{ sn.plans.shop.networks }}"

- name: One primary network in a simple zone
  shadownet.proxmox.vnet:
    zone: shopk2x1
    vnet: front9q0
    alias: shop-front
    cidr: 10.10.0.0/24
    gateway: 10.10.0.1

- name: A vnet with VLAN 30 in a vlan zone on vmbr0
  shadownet.proxmox.vnet:
    zone: shopvl
    zone_type: vlan
    zone_bridge: vmbr0
    vnet: backvl30
    tag: 30
    cidr: 10.30.0.0/24
    gateway: 10.30.0.1

- name: An isolated shadow twin spanning the nodes (VXLAN, VNI 4880427, peers from /cluster/status)
  shadownet.proxmox.vnet:
    zone: sshovup3
    zone_type: vxlan
    vnet: sfro9qab
    tag: 4880427
    alias: shop-front (shadow)
    cidr: 10.10.0.0/24
    isolated: true

- name: An isolated shadow bridge (no ports) on two nodes
  shadownet.proxmox.vnet:
    type: bridge
    bridge: vmbr90
    nodes: [pve1, pve2]
    comment: shop shadow

- name: Remove a network (subnet, vnet, and the zone if nothing else uses it)
  shadownet.proxmox.vnet:
    zone: shopk2x1
    vnet: front9q0
    state: absent
'''

RETURN = r'''
changes:
  description: What was (or, in check mode, would be) changed, one line per write.
  returned: always
  type: list
  elements: str
  sample: [create zone shopk2x1, create vnet front9q0, create subnet 10.10.0.0/24 on front9q0]
sdn_apply:
  description:
    - The SDN apply task (upid, node, exitstatus, warnings, log) and, in C(nodes), each node's network reload
      task (upid, exitstatus) that was checked.
  returned: when SDN changes were applied
  type: dict
bridge_apply:
  description: Per node, the network apply task.
  returned: when node bridges were changed
  type: dict
diff:
  description: SDN networks by vnet id and bridges by C(node/bridge), before and after.
  returned: always
  type: dict
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import sdn

# The single-network options. No defaults: a default would clash with networks (sdn.normalise_network
# applies them, for both forms).
SINGLE_OPTIONS = dict(
    type=dict(type='str', choices=['vnet', 'bridge']),
    zone=dict(type='str'),
    zone_type=dict(type='str'),
    zone_bridge=dict(type='str'),
    peers=dict(type='list', elements='str'),
    vnet=dict(type='str'),
    alias=dict(type='str'),
    tag=dict(type='int', aliases=['vlan']),
    cidr=dict(type='str'),
    gateway=dict(type='str'),
    snat=dict(type='bool'),
    isolated=dict(type='bool'),
    bridge=dict(type='str'),
    nodes=dict(type='list', elements='str'),
    bridge_ports=dict(type='list', elements='str'),
    comment=dict(type='str'),
    autostart=dict(type='bool'),
    state=dict(type='str', choices=['present', 'absent']),
)


def main():
    argument_spec = api_utils.api_argument_spec()
    # No suboptions: plan entries may carry keys added later, which consumers must ignore (docs/plan.md).
    argument_spec['networks'] = dict(type='list', elements='dict')
    argument_spec.update(SINGLE_OPTIONS)
    argument_spec['timeout'] = dict(type='int', default=300)
    module = api_utils.api_module(argument_spec, mutually_exclusive=[('networks', k) for k in SINGLE_OPTIONS],
                                  required_one_of=[('networks', 'vnet', 'bridge')])
    p = module.params
    entries = p['networks']
    if entries is None:
        single = dict((k, p[k]) for k in SINGLE_OPTIONS if p[k] is not None)
        if 'type' not in single and p['bridge'] and not p['vnet']:
            single['type'] = 'bridge'
        entries = [single]
    for index, entry in enumerate(entries):
        extra = sdn.unknown_keys(entry)
        if extra and 'role' not in entry:
            module.warn('networks[{0}]: unknown keys {1} are ignored'.format(index, ', '.join(extra)))
    try:
        networks = [sdn.normalise_network(entry, i) for i, entry in enumerate(entries)]
    except sdn.NetworkError as exc:
        module.fail_json(msg=str(exc))
    try:
        api = api_utils.PveApi.from_module(module)
        result = sdn.NetworkEngine(api, check_mode=module.check_mode, timeout=p['timeout']).converge(networks)
    except sdn.NetworkError as exc:
        module.fail_json(msg=str(exc))
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc)
    for warning in result.pop('warnings', []):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

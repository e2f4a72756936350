# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Port mirroring on a PVE node: a primary VM's NIC copied to a shadow VM's NIC.

Pure standard library on purpose: the VM hookscript (roles/port_mirror) imports this same file on
the node, where ansible is not installed. Commands run through an injected ``run(argv, data)``
callable that returns ``(rc, stdout, stderr)``; every command is an argument list.

Direction is defined from the VM's point of view. On the host side of a VM NIC (``tap<vmid>i<n>``)
the packets the VM sends arrive as *ingress* on the tap, and the packets the VM receives leave as
*egress* from the tap. So ``direction: egress`` (VM sends) hooks the tap's ingress and
``direction: ingress`` (VM receives) hooks the tap's egress.

What this module owns, so that removal takes exactly that and nothing else:

* nftables: one ``netdev`` table per (source, target) pair, named by :func:`nft_table_name`;
* tc: u32 filters with a preference in ``TC_PREF_MIN..TC_PREF_MAX`` whose mirred action carries
  the cookie :func:`tc_cookie` (a marker byte plus the target name), and the root ``htb`` qdisc
  with handle ``TC_ROOT_HANDLE`` that it adds when a device has only the kernel's default root;
* with a target *bridge* (the shadow runs on another node, its twin network is a VXLAN zone whose
  vnet bridge exists on every node): one veth pair per source, ``snd<vmid>i<n>`` (the mirror dups
  into it, up, no address, everything arriving on it dropped) and ``vethsn<vmid>i<n>`` (a port of the
  twin bridge, MAC learning off), both carrying the interface alias :func:`port_alias`. The pair's
  nft table then also rewrites the source MAC of the copies entering the bridge to a fixed,
  locally administered one (:func:`port_mac`): a VXLAN peer's bridge learns MACs from what it
  receives, and once the primary's and its client's MACs were learned behind the VXLAN port the
  copies addressed to them would be dropped there instead of flooded to the shadow.

Sampling (``mode=sampled``) keeps ``threshold = round(rate * SAMPLE_MOD)`` of every ``SAMPLE_MOD`` buckets
(``rate`` is rounded to the nearest 1/10000; :func:`effective_rate` gives the exact probability):

* ``sampling=packet``: each frame is copied independently when ``numgen random mod 10000 < threshold``;
* ``sampling=flow`` (the default): IPv4/IPv6 packets are copied when ``symhash mod 10000 < threshold``.
  nftables' ``symhash`` is the kernel's ``__skb_get_hash_symmetric``: the flow dissector's addresses,
  ports (TCP, UDP, SCTP, DCCP, UDP-Lite; 0 for ICMP and other protocols) and IP protocol, with the
  addresses and the ports each put in order before hashing (``__flow_hash_consistentify``), so both
  directions of a flow hash alike and a flow is copied whole or not at all. The hash is keyed by a
  secret the kernel draws at boot: decisions are stable per node until it reboots, independent of
  the flow's order of arrival, and a reused 5-tuple gets the same decision. ICMP and other port-less
  protocols form one "flow" per address pair and protocol (a ping and its replies go together); IP
  fragments carry no ports, so they are decided by address pair (a flow that mixes fragments and
  whole packets can be split). Frames that are not IP (ARP, LLDP ...) have no flow: they are
  sampled per packet at the same rate. (The flow dissector's symmetric keys are CONTROL, BASIC,
  IPV4_ADDRS, IPV6_ADDRS and PORTS, net/core/flow_dissector.c; nft_hash.c ``nft_symhash_eval`` maps the
  hash with ``reciprocal_scale``; Linux 6.0's "net: core: fix flow symmetric hash" made IPv4 pairs whose
  addresses differ by 2**31 symmetric.)
"""

import hashlib
import json
import re

MODES = ('full', 'sampled')
SAMPLINGS = ('flow', 'packet')
DIRECTIONS = ('ingress', 'egress', 'both')
BACKENDS = ('nft', 'tc')
SAMPLE_MOD = 10000
TC_PREF_MIN = 49152
TC_PREF_MAX = 49407
TC_ROOT_HANDLE = '5e4e:'
TC_COOKIE_MARK = '5e'
NFT_PREFIX = 'shadownet_'
DUP_PREFIX = 'snd'
# The bridge port's name starts with 'veth': PVE's ifupdown2 keeps only bridge ports matching its
# bridge-ports-condone-regex (default ^(tap|veth|fwpr)) on `ifreload -a`, which every node network apply and
# SDN apply runs (pve-manager API2/Network.pm reload_network_config); any other port not in the bridge's
# bridge_ports is detached and set down. 'vethsn' never matches a container's veth<vmid>i<n>.
PORT_PREFIX = 'vethsn'
PORT_ALIAS = 'shadownet-mirror'
# VM direction -> (hook on the host device, nft chain name)
HOOKS = {'egress': ('ingress', 'vm_egress'), 'ingress': ('egress', 'vm_ingress')}

# Frames decided by the flow hash in flow sampling (nft ``meta protocol`` names); the others per packet.
IP_PROTOCOLS = ('ip', 'ip6')

_TAP_RE = re.compile(r'^tap(\d+i\d+)$')
_DEVICE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$')
_NETNS_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$')
_DEFAULT_ROOTS = ('noqueue', 'pfifo_fast', 'fq_codel', 'mq', 'fq', 'pfifo', 'bfifo', 'cake', 'sfq')


class MirrorError(Exception):
    """A problem the caller must fix; the message says how."""


# --- validation (pure) ---------------------------------------------------------------------------
def validate_device(name, what='device'):
    """Return ``name`` if it is a safe Linux interface name, else raise MirrorError.

    1-15 characters (IFNAMSIZ - 1), letters, digits, ``_ . -``, starting with a letter or digit:
    nothing a command line or an nft ruleset could read as syntax.
    """
    if not isinstance(name, str) or not _DEVICE_RE.match(name):
        raise MirrorError(
            '%s %r is not a valid interface name: use 1-15 characters from A-Z a-z 0-9 _ . - '
            'starting with a letter or digit (no spaces, quotes or ;)' % (what, name))
    return name


def validate_netns(name):
    """Return ``name`` if it is a safe network namespace name (or None), else raise MirrorError."""
    if name is None or name == '':
        return None
    if not isinstance(name, str) or not _NETNS_RE.match(name):
        raise MirrorError('netns %r is not a valid namespace name: use 1-64 characters from '
                          'A-Z a-z 0-9 _ . - starting with a letter or digit' % (name,))
    return name


def tap_name(vmid, nic, what='source'):
    """PVE's host-side device name for NIC ``nic`` of VM ``vmid``: ``tap<vmid>i<nic>``."""
    try:
        vmid_i, nic_i = int(vmid), int(nic)
    except (TypeError, ValueError):
        raise MirrorError('%s_vmid and %s_nic must be integers, got %r and %r'
                          % (what, what, vmid, nic)) from None
    if isinstance(vmid, bool) or not 100 <= vmid_i <= 999999999:
        raise MirrorError('%s_vmid %r is out of range: PVE VM ids are 100-999999999' % (what, vmid))
    if isinstance(nic, bool) or not 0 <= nic_i <= 31:
        raise MirrorError('%s_nic %r is out of range: PVE NICs are net0-net31' % (what, nic))
    return validate_device('tap%di%d' % (vmid_i, nic_i), what)


def validate_rate(mode, rate):
    """The sampling rate as a float: 1.0 for full mode, 0 < rate <= 1 for sampled mode."""
    if mode == 'full':
        if rate not in (None, 1, 1.0):
            raise MirrorError('rate %r only applies to mode=sampled; full mode copies every packet'
                              % (rate,))
        return 1.0
    if rate is None:
        raise MirrorError('mode=sampled needs rate (0 < rate <= 1, e.g. 0.1 for 10%)')
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise MirrorError('rate %r is not a number: use 0 < rate <= 1' % (rate,)) from None
    if isinstance(rate, bool) or not 0 < value <= 1:
        raise MirrorError('rate %r is out of range: use 0 < rate <= 1 (0.1 = 10%% of packets)'
                          % (rate,))
    if round(value * SAMPLE_MOD) < 1:
        raise MirrorError('rate %r is below the resolution 1/%d' % (rate, SAMPLE_MOD))
    return value


class MirrorSpec:
    """One validated mirror: source device -> target device, mode, rate, directions, backend.

    With ``bridge`` the target is the collection's veth end (:func:`port_names`) whose peer is a
    port of that bridge; ``target`` must then be that name.
    """

    __slots__ = ('source', 'target', 'mode', 'rate', 'direction', 'backend', 'bridge', 'sampling')

    def __init__(self, source, target, mode='full', rate=None, direction='both', backend='nft',
                 bridge=None, sampling='flow'):
        if mode not in MODES:
            raise MirrorError('mode %r is unknown: use one of %s' % (mode, ', '.join(MODES)))
        if sampling not in SAMPLINGS:
            raise MirrorError('sampling %r is unknown: use flow (whole flows, both directions) or packet '
                              '(each packet on its own)' % (sampling,))
        if direction not in DIRECTIONS:
            raise MirrorError('direction %r is unknown: use one of %s (from the VM\'s point of view)'
                              % (direction, ', '.join(DIRECTIONS)))
        if backend not in BACKENDS:
            raise MirrorError('backend %r is unknown: use one of %s' % (backend, ', '.join(BACKENDS)))
        self.source = validate_device(source, 'source')
        self.target = validate_device(target, 'target')
        if self.source == self.target:
            raise MirrorError('source and target are the same device %s' % source)
        self.rate = validate_rate(mode, rate)
        self.mode = mode
        # Sampling only means something for mode=sampled; a full mirror copies everything either way.
        self.sampling = sampling if mode == 'sampled' else None
        self.direction = direction
        if mode == 'sampled' and backend == 'tc':
            raise MirrorError('mode=sampled needs backend=nft (nftables numgen); this kernel has no '
                              'tc sampling action')
        self.backend = backend
        self.bridge = None
        if bridge is not None:
            self.bridge = validate_device(bridge, 'target_bridge')
            if backend != 'nft':
                raise MirrorError('target_bridge needs backend=nft (the veth port is set up with '
                                  'nftables rules)')
            if self.target != port_names(self.source)[0]:
                raise MirrorError('with target_bridge the target is %s, not %s'
                                  % (port_names(self.source)[0], self.target))
            if self.bridge in (self.source,) + port_names(self.source):
                raise MirrorError('target_bridge %s is the source or one of its veth ends' % bridge)

    @property
    def vm_directions(self):
        """The VM directions this mirror copies, as a sorted list (``ingress``, ``egress``)."""
        return ['egress', 'ingress'] if self.direction == 'both' else [self.direction]

    def threshold(self):
        """Packets (flows) whose ``numgen random`` (``symhash``) ``mod SAMPLE_MOD`` is below this are copied
        (None: all)."""
        if self.mode == 'full':
            return None
        return max(1, int(round(self.rate * SAMPLE_MOD)))

    def as_dict(self):
        out = {'source': self.source, 'target': self.target, 'mode': self.mode, 'rate': self.rate,
               'direction': self.direction, 'backend': self.backend}
        if self.sampling:
            out['sampling'] = self.sampling
            out['effective_rate'] = effective_rate(self.threshold())
        if self.bridge:
            out['target_bridge'] = self.bridge
        return out


def effective_rate(threshold):
    """The exact probability that a packet (packet sampling) or a flow (flow sampling) is copied.

    ``numgen random`` and ``symhash`` both map a uniform 32-bit value ``h`` to ``(h * SAMPLE_MOD) >> 32``
    (the kernel's ``reciprocal_scale``), so the values below ``threshold`` are the ``h`` below
    ``ceil(threshold * 2**32 / SAMPLE_MOD)``: the rate is that count over 2**32, which differs from
    ``threshold / SAMPLE_MOD`` by less than 2.4e-6 (the flow hash is a siphash truncated to 32 bits, never 0).
    ``numgen random`` draws a fresh ``h`` per packet; ``symhash`` hashes the flow, so the draw is per flow.
    Full mirrors (threshold None) copy everything.
    """
    if threshold is None:
        return 1.0
    space = 1 << 32
    return -(-threshold * space // SAMPLE_MOD) / space


def build_spec(source=None, source_vmid=None, source_nic=0, target=None, target_vmid=None,
               target_nic=0, mode='full', rate=None, direction='both', backend='nft',
               target_bridge=None, sampling='flow'):
    """A MirrorSpec from either device names or (vmid, nic) pairs, fully validated.

    ``target_bridge`` replaces the target: the copy goes into the collection's veth port on that
    bridge (see :func:`port_names`).
    """
    if source is None and source_vmid is None:
        raise MirrorError('give the source as source (a device name) or source_vmid (+ source_nic)')
    if source is not None and source_vmid is not None:
        raise MirrorError('give source or source_vmid, not both')
    src = source if source is not None else tap_name(source_vmid, source_nic or 0, 'source')
    if target_bridge is not None:
        if target is not None or target_vmid is not None:
            raise MirrorError('give target_bridge or target / target_vmid, not both')
        src = validate_device(src, 'source')
        return MirrorSpec(src, port_names(src)[0], mode=mode, rate=rate, direction=direction,
                          backend=backend, bridge=target_bridge, sampling=sampling)
    if target is None and target_vmid is None:
        raise MirrorError('give the target as target (a device name), target_vmid (+ target_nic) '
                          'or target_bridge')
    if target is not None and target_vmid is not None:
        raise MirrorError('give target or target_vmid, not both')
    tgt = target if target is not None else tap_name(target_vmid, target_nic or 0, 'target')
    return MirrorSpec(src, tgt, mode=mode, rate=rate, direction=direction, backend=backend,
                      sampling=sampling)


def port_names(source):
    """The collection's veth pair for mirrors of ``source`` into a bridge: (dup end, bridge port).

    ``tap<vmid>i<n>`` gives ``snd<vmid>i<n>`` and ``vethsn<vmid>i<n>``; any other source name, or a port
    name longer than Linux's 15 characters, a hash of the source (``snd`` + ``h`` + 10 hex digits,
    ``vethsn`` + ``h`` + 8).
    """
    validate_device(source, 'source')
    m = _TAP_RE.match(source)
    digest = 'h' + hashlib.sha1(source.encode('utf-8')).hexdigest()[:10]
    suffix = m.group(1) if m else digest
    port = PORT_PREFIX + suffix
    if len(port) > 15:
        port = (PORT_PREFIX + digest)[:15]
    return (validate_device(DUP_PREFIX + suffix, 'veth end'),
            validate_device(port, 'veth port'))


def port_mac(source):
    """The locally administered unicast MAC the copies of ``source`` carry as source address on
    the twin bridge (stable per source)."""
    digest = hashlib.sha1(('shadownet-mirror:' + source).encode('utf-8')).hexdigest()
    return '02:5e:' + ':'.join(digest[i:i + 2] for i in range(0, 8, 2))


def port_alias(source, bridge):
    """The interface alias that marks a veth end as ours, with what it is for."""
    return '%s %s -> %s' % (PORT_ALIAS, source, bridge)


def desired_port(spec):
    """The wanted state of the veth pair of a bridge-target spec (compared with :meth:`MirrorManager.read_port`)."""
    dup, port = port_names(spec.source)
    return {'dup': dup, 'port': port, 'peer': port, 'bridge': spec.bridge, 'learning': False,
            'up': True, 'owned': True}


# --- names and wanted state (pure) ---------------------------------------------------------------
def _escape(name):
    return name.replace('_', '__')


def nft_table_name(source, target):
    """``shadownet_<source>_-<target>`` with ``_`` doubled inside the names, so two different pairs
    never share a table (an unpaired ``_`` only ever appears in the ``_-`` separator)."""
    return '%s%s_-%s' % (NFT_PREFIX, _escape(source), _escape(target))


def tc_cookie(target):
    """The mirred action cookie that marks a tc mirror as ours and names its target (16 bytes max)."""
    return TC_COOKIE_MARK + target.encode('ascii').hex()


def desired_state(spec):
    """What the device should carry for ``spec``: VM direction -> list of rule descriptions."""
    rule = {'backend': spec.backend, 'sample': spec.threshold(), 'target': spec.target}
    if spec.sampling:
        rule['sampling'] = spec.sampling
    state = {d: [dict(rule)] for d in spec.vm_directions}
    if spec.bridge:
        state['port'] = [{'backend': 'nft', 'chain': 'port_in', 'saddr': port_mac(spec.source)},
                         {'backend': 'nft', 'chain': 'sink', 'policy': 'drop'}]
    return state


def nft_ruleset(spec):
    """The nft JSON commands that (re)create the pair's table in one transaction.

    ``add table`` + ``delete table`` first makes the transaction idempotent and drops any stale
    content; the kernel applies it atomically.
    """
    name = nft_table_name(spec.source, spec.target)
    cmds = [{'add': {'table': {'family': 'netdev', 'name': name}}},
            {'delete': {'table': {'family': 'netdev', 'name': name}}},
            {'add': {'table': {'family': 'netdev', 'name': name}}}]
    for vm_dir in spec.vm_directions:
        hook, chain = HOOKS[vm_dir]
        cmds.append({'add': {'chain': {'family': 'netdev', 'table': name, 'name': chain,
                                       'type': 'filter', 'hook': hook, 'dev': spec.source,
                                       'prio': 0, 'policy': 'accept'}}})
        for expr in _sample_rules(spec):
            cmds.append({'add': {'rule': {'family': 'netdev', 'table': name, 'chain': chain,
                                          'expr': expr + [{'counter': None}, {'dup': {'addr': spec.target}}]}}})
    if spec.bridge:
        dup, port = port_names(spec.source)
        # Copies entering the twin bridge get a fixed source MAC (see the module docstring).
        cmds.append({'add': {'chain': {'family': 'netdev', 'table': name, 'name': 'port_in',
                                       'type': 'filter', 'hook': 'ingress', 'dev': port,
                                       'prio': 0, 'policy': 'accept'}}})
        cmds.append({'add': {'rule': {'family': 'netdev', 'table': name, 'chain': 'port_in', 'expr': [
            {'mangle': {'key': {'payload': {'protocol': 'ether', 'field': 'saddr'}},
                        'value': port_mac(spec.source)}}]}}})
        # Whatever the twin network sends back through the port ends here.
        cmds.append({'add': {'chain': {'family': 'netdev', 'table': name, 'name': 'sink',
                                       'type': 'filter', 'hook': 'ingress', 'dev': dup,
                                       'prio': 0, 'policy': 'drop'}}})
    return {'nftables': cmds}


def _ip_match(op):
    return {'match': {'op': op, 'left': {'meta': {'key': 'protocol'}}, 'right': {'set': list(IP_PROTOCOLS)}}}


def _below(key, threshold):
    return {'match': {'op': '<', 'left': key, 'right': threshold}}


def _sample_rules(spec):
    """The selecting expressions of the mirror rules of one chain (one list per rule, before counter and dup).

    Full: one rule, no selector. Packet sampling: ``numgen random mod 10000 < T``. Flow sampling: two rules,
    ``meta protocol { ip, ip6 } symhash mod 10000 < T`` for IP and ``meta protocol != { ip, ip6 } numgen random
    mod 10000 < T`` for the rest (ARP and other frames without a flow). See the module docstring.
    """
    threshold = spec.threshold()
    if threshold is None:
        return [[]]
    numgen = _below({'numgen': {'mode': 'random', 'mod': SAMPLE_MOD, 'offset': 0}}, threshold)
    if spec.sampling == 'packet':
        return [[numgen]]
    return [[_ip_match('=='), _below({'symhash': {'mod': SAMPLE_MOD}}, threshold)],
            [_ip_match('!='), numgen]]


def nft_delete(source, target):
    """nft JSON commands that remove the pair's table whether or not it exists."""
    name = nft_table_name(source, target)
    return {'nftables': [{'add': {'table': {'family': 'netdev', 'name': name}}},
                         {'delete': {'table': {'family': 'netdev', 'name': name}}}]}


# --- reading live state back (pure parsers) ------------------------------------------------------
def _ip_set_match(match):
    """'ip' for ``meta protocol { ip, ip6 }``, 'other' for its ``!=``, None for anything else."""
    if (match.get('left') or {}).get('meta', {}).get('key') != 'protocol':
        return None
    right = match.get('right')
    if not isinstance(right, dict) or sorted(right.get('set') or []) != sorted(IP_PROTOCOLS):
        return None
    return {'==': 'ip', '!=': 'other'}.get(match.get('op'))


def _parse_mirror_rule(expr):
    """One rule of a vm_* chain: ({sample, target, selector, protocols[, unknown]}, packets counted)."""
    rule = {'sample': None, 'target': None, 'selector': None, 'protocols': None}
    count = 0
    for e in expr:
        match = e.get('match') if isinstance(e.get('match'), dict) else None
        left = (match or {}).get('left') or {}
        if match is not None and ('numgen' in left or 'symhash' in left):
            kind = 'numgen' if 'numgen' in left else 'symhash'
            gen = left[kind]
            ok = (gen.get('mod') == SAMPLE_MOD and match.get('op') == '<' and not gen.get('offset')
                  and (kind == 'symhash' or gen.get('mode') == 'random') and rule['selector'] is None)
            if ok:
                rule['selector'], rule['sample'] = kind, match.get('right')
            else:
                rule['unknown'] = '%s %r' % (kind, match)
        elif match is not None and _ip_set_match(match) and rule['protocols'] is None:
            rule['protocols'] = _ip_set_match(match)
        elif 'dup' in e:
            # A dup whose device is gone (a restarted VM) shows its old ifindex.
            rule['target'] = str(e['dup'].get('addr', e['dup'].get('dev')))
        elif 'counter' in e:
            count += int((e['counter'] or {}).get('packets', 0))
        else:
            rule['unknown'] = 'expression %r' % (e,)
    return rule, count


def _fold_flow_rules(parsed):
    """The entries of one chain (as :func:`desired_state` writes them) from its parsed rules.

    A rule without a selector is a full mirror, a lone ``numgen random`` one is packet sampling, and the pair
    ``{ip, ip6} symhash`` + ``!= {ip, ip6} numgen random`` with the same threshold and target is one flow-sampling
    entry. Anything else (half a pair, a selector on the wrong protocols) is reported as unknown.
    """
    def kind(rule):
        if 'unknown' in rule:
            return 'unknown'
        return {(None, None): 'full', (None, 'numgen'): 'packet', ('ip', 'symhash'): 'flow',
                ('other', 'numgen'): 'other'}.get((rule['protocols'], rule['selector']), 'bad')

    kinds = [kind(r) for r in parsed]
    pair = {}  # index of a flow rule -> index of its rule for the frames that are not IP
    for i, k in enumerate(kinds):
        if k == 'flow':
            for j, other in enumerate(kinds):
                if other == 'other' and j not in pair.values() and \
                        (parsed[j]['sample'], parsed[j]['target']) == (parsed[i]['sample'], parsed[i]['target']):
                    pair[i] = j
                    break
    entries = []
    for i, (rule, k) in enumerate(zip(parsed, kinds)):
        if k == 'other' and i in pair.values():
            continue
        entry = {'backend': 'nft', 'sample': rule['sample'], 'target': rule['target']}
        if k in ('packet', 'flow', 'other'):
            entry['sampling'] = 'flow' if k == 'flow' else 'packet'
        if k == 'unknown':
            entry['unknown'] = rule['unknown']
        elif k == 'bad':
            entry['unknown'] = 'selector %s on protocols %s' % (rule['selector'], rule['protocols'])
        elif k == 'flow' and i not in pair:
            entry['unknown'] = 'flow sampling without the rule for the frames that are not IP'
        elif k == 'other':
            entry['unknown'] = 'sampling of the frames that are not IP without the flow rule'
        entries.append(entry)
    return entries


def parse_nft_table(doc):
    """Parse ``nft -j list table netdev NAME`` into VM direction -> [rule] plus packet counts.

    A rule we cannot read as one of ours is reported as ``{'backend': 'nft', 'unknown': ...}`` so
    that it never compares equal to a wanted rule (the table is then rebuilt).
    """
    chains = {}
    policies = {}
    rules = {}
    packets = {}
    for item in (doc or {}).get('nftables', []):
        if 'chain' in item:
            chains[item['chain']['name']] = item['chain'].get('hook')
            policies[item['chain']['name']] = item['chain'].get('policy')
        elif 'rule' in item:
            rules.setdefault(item['rule']['chain'], []).append(item['rule'].get('expr', []))
    state = {}
    for vm_dir, (hook, chain) in HOOKS.items():
        if chain not in chains:
            continue
        entries = []
        if chains[chain] != hook:
            entries.append({'backend': 'nft', 'unknown': 'chain %s hooks %s' % (chain, chains[chain])})
        parsed = []
        for expr in rules.get(chain, []):
            rule, count = _parse_mirror_rule(expr)
            packets[vm_dir] = packets.get(vm_dir, 0) + count
            parsed.append(rule)
        entries.extend(_fold_flow_rules(parsed))
        state[vm_dir] = entries
    port = []
    if 'port_in' in chains:
        entry = {'backend': 'nft', 'chain': 'port_in', 'saddr': None}
        for expr in rules.get('port_in', []):
            for e in expr:
                key = (e.get('mangle') or {}).get('key') or {}
                if key.get('payload', {}).get('field') == 'saddr' and entry['saddr'] is None:
                    entry['saddr'] = e['mangle'].get('value')
                else:
                    entry['unknown'] = 'expression %r' % (e,)
        port.append(entry)
    if 'sink' in chains:
        entry = {'backend': 'nft', 'chain': 'sink', 'policy': policies.get('sink')}
        if rules.get('sink'):
            entry['unknown'] = 'rules %r' % (rules['sink'],)
        port.append(entry)
    if port:
        state['port'] = port
    return state, packets


def parse_tc_filters(filters, target):
    """Our mirror filters for ``target`` in ``tc -j filter show`` output: [{pref, target}].

    Ours means a preference in our range and a mirred action carrying our cookie for this target.
    ``target`` in the result is the live ``to_dev`` (``*`` once the target device is gone).
    """
    found = []
    cookie = tc_cookie(target)
    for f in filters or []:
        if not TC_PREF_MIN <= int(f.get('pref', 0)) <= TC_PREF_MAX:
            continue
        for act in (f.get('options') or {}).get('actions', []):
            if act.get('kind') == 'mirred' and act.get('cookie') == cookie:
                found.append({'pref': int(f['pref']), 'target': act.get('to_dev')})
    return found


def used_prefs(filters):
    """Every filter preference in use on a parent (ours or not)."""
    return {int(f['pref']) for f in filters or [] if 'pref' in f}


def free_pref(in_use):
    """The lowest preference in our range that is free."""
    for pref in range(TC_PREF_MIN, TC_PREF_MAX + 1):
        if pref not in in_use:
            return pref
    raise MirrorError('no free tc filter preference left in %d-%d' % (TC_PREF_MIN, TC_PREF_MAX))


def normalise(state):
    """Sort each direction's rules and drop empty directions, for comparison and the diff."""
    out = {}
    for d in sorted(state):
        if state[d]:
            out[d] = sorted(state[d], key=lambda r: json.dumps(r, sort_keys=True))
    return out


# --- the live system ------------------------------------------------------------------------------
class MirrorManager:
    """Reads and changes mirrors on one node (optionally inside network namespace ``netns``)."""

    def __init__(self, run, netns=None, tools=None):
        self._run = run
        self.netns = validate_netns(netns)
        self.tools = {'ip': 'ip', 'tc': 'tc', 'nft': 'nft'}
        self.tools.update(tools or {})
        self.commands = []

    def _argv(self, tool, args):
        argv = [self.tools[tool]] + list(args)
        if self.netns:
            argv = [self.tools['ip'], 'netns', 'exec', self.netns] + argv
        return argv

    def call(self, tool, args, data=None, check=True):
        argv = self._argv(tool, args)
        rc, out, err = self._run(argv, data)
        if check and rc != 0:
            raise MirrorError('%s failed (rc=%s): %s' % (' '.join(argv), rc, (err or out).strip()))
        return rc, out, err

    def change(self, tool, args, data=None, check_mode=False):
        """A command that changes the system: recorded, and skipped in check mode."""
        argv = self._argv(tool, args)
        self.commands.append(argv + (['<<', data] if data else []))
        if not check_mode:
            self.call(tool, args, data=data)

    # --- reads
    def link(self, dev):
        rc, out, dummy = self.call('ip', ['-j', 'link', 'show', 'dev', dev], check=False)
        if rc != 0:
            return None
        data = json.loads(out or '[]')
        return data[0] if data else None

    def link_details(self, dev):
        """``ip -j -d link show`` of one device (bridge port data included), or None."""
        rc, out, dummy = self.call('ip', ['-j', '-d', 'link', 'show', 'dev', dev], check=False)
        if rc != 0:
            return None
        data = json.loads(out or '[]')
        return data[0] if data else None

    def read_port(self, source):
        """The live state of the collection's veth pair for ``source`` (None when neither end exists).

        ``owned`` is true only when every end found carries our alias: a device with one of our names
        that lacks it is someone else's and is never changed or removed. (One end alone is a pair whose
        other end has another name: an earlier version called the bridge port ``snm<vmid>i<n>``.)
        """
        dup, port = port_names(source)
        d, p = self.link_details(dup), self.link_details(port)
        if d is None and p is None:
            return None
        slave = ((p or {}).get('linkinfo') or {}).get('info_slave_data') or {}
        return {'dup': dup if d else None, 'port': port if p else None,
                'peer': (d or {}).get('link'), 'bridge': (p or {}).get('master'),
                'learning': slave.get('learning') if p else None,
                'up': bool(d and p and 'UP' in d.get('flags', []) and 'UP' in p.get('flags', [])),
                'owned': all(str(x.get('ifalias', '')).startswith(PORT_ALIAS + ' ') for x in (d, p) if x),
                'foreign': [x['ifname'] for x in (d, p)
                            if x and not str(x.get('ifalias', '')).startswith(PORT_ALIAS + ' ')]}

    def _port_commands(self, spec, live, check_mode):
        """Create (or re-create) the veth pair of a bridge-target spec."""
        dup, port = port_names(spec.source)
        if live is not None:
            for dev in (live['dup'], live['port']):
                if dev:  # deleting one end of a veth deletes both
                    self.change('ip', ['link', 'del', 'dev', dev], check_mode=check_mode)
                    break
        bridge = self.link_details(spec.bridge) or {}
        mtu = str(int(bridge.get('mtu') or 1500))
        alias = port_alias(spec.source, spec.bridge)
        # Addresses from the very top of the locally administered range (fe:ff:...): a Linux bridge without a set
        # address takes its lowest port's (net/bridge br_stp_recalculate_bridge_id), and the twin bridge should keep
        # its own. Hardware addresses are all lower; a kernel-random one (a vxlan port's) is higher only if it starts
        # with fe:ff too (1 in 16384, then about half of those). With fe:5e:... a random port address was higher in
        # about 1 in 100 bridges, and the bridge took the mirror port's address.
        digest = hashlib.sha1(('shadownet-port:' + spec.source).encode('utf-8')).hexdigest()
        macs = ['fe:ff:%s:%s:%s:%s' % (digest[0:2], digest[2:4], digest[4:6], end) for end in ('00', '01')]
        self.change('ip', ['link', 'add', 'name', dup, 'address', macs[0], 'mtu', mtu, 'type', 'veth', 'peer',
                           'name', port, 'address', macs[1], 'mtu', mtu], check_mode=check_mode)
        for dev in (dup, port):
            self.change('ip', ['link', 'set', 'dev', dev, 'alias', alias], check_mode=check_mode)
            self.change('ip', ['link', 'set', 'dev', dev, 'addrgenmode', 'none'],
                        check_mode=check_mode)
        self.change('ip', ['link', 'set', 'dev', port, 'master', spec.bridge],
                    check_mode=check_mode)
        self.change('ip', ['link', 'set', 'dev', port, 'type', 'bridge_slave', 'learning', 'off'],
                    check_mode=check_mode)
        for dev in (dup, port):
            self.change('ip', ['link', 'set', 'dev', dev, 'up'], check_mode=check_mode)

    @staticmethod
    def _port_view(live):
        if live is None:
            return []
        return [{k: v for k, v in live.items() if k != 'foreign'}]

    def ensure_present_bridge(self, spec, check_mode=False, ignore_missing=False):
        """``ensure_present`` for a spec with a target bridge: the veth pair, then the nft table."""
        dup, port = port_names(spec.source)
        missing = [d for d in (spec.source, spec.bridge) if self.link(d) is None]
        live = self.read_port(spec.source)
        if live and live['foreign']:
            raise MirrorError('device %s exists and is not shadownet\'s (no "%s" alias): rename or '
                              'remove it' % (', '.join(live['foreign']), PORT_ALIAS))
        before = self.read(spec.source, dup)
        before['rules']['link'] = self._port_view(live)
        result = {'changed': False, 'source': spec.source, 'target': dup, 'target_bridge': spec.bridge,
                  'port': port, 'firewall_bridge': self.firewall_bridge(spec.source),
                  'spec': spec.as_dict(), 'before': self.comparable(before['rules']),
                  'missing': missing}
        if missing:
            if ignore_missing:
                result['after'] = result['before']
                result['msg'] = ('skipped: device %s does not exist; the hookscript applies the mirror '
                                 'when the VM starts' % ', '.join(missing))
                return result
            raise MirrorError('device %s does not exist: is the VM running and the twin network\'s '
                              'bridge on this node? (ignore_missing=true skips absent devices)'
                              % ', '.join(missing))
        details = self.link_details(spec.bridge) or {}
        if (details.get('linkinfo') or {}).get('info_kind') != 'bridge':
            raise MirrorError('target_bridge %s is not a Linux bridge' % spec.bridge)
        want_state = desired_state(spec)
        want_state['link'] = [desired_port(spec)]
        want = normalise(want_state)
        if result['before'] == want:
            result['after'] = want
            result['packets'] = before['packets']
            result['msg'] = 'mirror %s -> %s (bridge %s) already present' % (spec.source, dup, spec.bridge)
            return result
        if self._port_view(live) != [desired_port(spec)]:
            self._port_commands(spec, live, check_mode)
        self.change('nft', ['-j', '-f', '-'], data=json.dumps(nft_ruleset(spec)), check_mode=check_mode)
        result['changed'] = True
        if check_mode:
            result['after'] = want
        else:
            after = self.read(spec.source, dup)
            after['rules']['link'] = self._port_view(self.read_port(spec.source))
            result['after'] = self.comparable(after['rules'])
        result['msg'] = 'mirror %s -> %s (bridge %s) %s' % (
            spec.source, dup, spec.bridge, 'created' if not result['before'] else 'updated')
        if not check_mode and result['after'] != want:
            raise MirrorError('mirror %s -> bridge %s did not read back as applied: %r'
                              % (spec.source, spec.bridge, result['after']))
        return result

    def ensure_absent_bridge(self, source, bridge, check_mode=False):
        """Remove the pair's nft table and the collection's veth pair; nothing else."""
        validate_device(bridge, 'target_bridge')
        dup, port = port_names(source)
        live = self.read_port(source)
        before = self.read(source, dup)
        before['rules']['link'] = self._port_view(live)
        result = {'changed': False, 'source': source, 'target': dup, 'target_bridge': bridge,
                  'port': port, 'firewall_bridge': self.firewall_bridge(source),
                  'before': self.comparable(before['rules']), 'after': {},
                  'missing': [d for d in (source, bridge) if self.link(d) is None]}
        if before['nft_table']:
            self.change('nft', ['-j', '-f', '-'], data=json.dumps(nft_delete(source, dup)),
                        check_mode=check_mode)
            result['changed'] = True
        if live is not None and live['owned']:
            self.change('ip', ['link', 'del', 'dev', live['dup'] or live['port']], check_mode=check_mode)
            result['changed'] = True
        elif live is not None:
            result['after'] = {'link': self._port_view(live)}
            result['warning'] = ('device %s is not shadownet\'s (no "%s" alias): left alone'
                                 % (', '.join(live['foreign']), PORT_ALIAS))
        result['msg'] = 'mirror %s -> bridge %s %s' % (source, bridge,
                                                       'removed' if result['changed'] else 'already absent')
        return result

    def firewall_bridge(self, dev):
        """The ``fwbr`` bridge a tap is plugged into when the VM's PVE firewall is on, else None."""
        link = self.link(dev)
        master = (link or {}).get('master') or ''
        return master if master.startswith('fwbr') else None

    def read_nft(self, spec_or_pair):
        source, target = spec_or_pair
        name = nft_table_name(source, target)
        rc, out, dummy = self.call('nft', ['-j', 'list', 'table', 'netdev', name], check=False)
        if rc != 0:
            return None, {}
        return parse_nft_table(json.loads(out))

    def qdiscs(self, dev):
        rc, out, dummy = self.call('tc', ['-j', 'qdisc', 'show', 'dev', dev], check=False)
        return json.loads(out or '[]') if rc == 0 else []

    def tc_parents(self, dev):
        """Where our filters go, per VM direction, and what is missing: {vm_dir: (parent, need)}.

        ``need`` is None when the parent exists, ``'ingress'`` or ``'root'`` for a qdisc to add,
        or an error message when a foreign root qdisc is in the way.
        """
        qd = self.qdiscs(dev)
        kinds = {q.get('kind') for q in qd}
        if 'clsact' in kinds:
            return {'egress': ('ffff:fff2', None), 'ingress': ('ffff:fff3', None)}
        parents = {'egress': ('ffff:', None if 'ingress' in kinds else 'ingress')}
        root = [q for q in qd if q.get('root')]
        if root and root[0].get('handle') == TC_ROOT_HANDLE:
            parents['ingress'] = (TC_ROOT_HANDLE, None)
        elif not root or (root[0].get('handle') == '0:' and root[0].get('kind') in _DEFAULT_ROOTS):
            parents['ingress'] = (TC_ROOT_HANDLE, 'root')
        else:
            parents['ingress'] = (TC_ROOT_HANDLE, 'device %s has a root qdisc %s %s that shadownet did '
                                  'not add: use backend=nft, or direction=egress'
                                  % (dev, root[0].get('kind'), root[0].get('handle')))
        return parents

    def tc_filters(self, dev, parent):
        rc, out, dummy = self.call('tc', ['-j', 'filter', 'show', 'dev', dev, 'parent', parent],
                                   check=False)
        return json.loads(out or '[]') if rc == 0 and out.strip() else []

    def read_tc(self, source, target):
        """Our tc mirrors source -> target: {vm_dir: [{backend, sample, target, pref, parent}]}."""
        state = {}
        if self.link(source) is None:
            return state
        for vm_dir, (parent, need) in self.tc_parents(source).items():
            if need is not None:
                continue
            for f in parse_tc_filters(self.tc_filters(source, parent), target):
                state.setdefault(vm_dir, []).append({'backend': 'tc', 'sample': None,
                                                     'target': f['target'], 'pref': f['pref'],
                                                     'parent': parent})
        return state

    def read(self, source, target):
        """The live state of the pair in the same shape as :func:`desired_state` (plus details)."""
        nft_state, packets = self.read_nft((source, target))
        tc_state = self.read_tc(source, target)
        merged = {}
        for part in (nft_state or {}, tc_state):
            for d, rules in part.items():
                merged.setdefault(d, []).extend(rules)
        return {'rules': merged, 'nft_table': nft_state is not None, 'packets': packets}

    @staticmethod
    def comparable(rules):
        return normalise({d: [{k: v for k, v in r.items() if k not in ('pref', 'parent')}
                              for r in rs] for d, rs in rules.items()})

    # --- changes
    def _remove_tc(self, source, live_rules, check_mode, keep=()):
        parents = set()
        for vm_dir, rules in live_rules.items():
            for r in rules:
                if r['backend'] != 'tc' or (vm_dir, r['pref']) in keep:
                    continue
                self.change('tc', ['filter', 'del', 'dev', source, 'parent', r['parent'],
                                   'pref', str(r['pref'])], check_mode=check_mode)
                parents.add(r['parent'])
        if parents and not check_mode:
            self._tidy_qdiscs(source, parents)

    def _tidy_qdiscs(self, source, parents):
        """Drop our root htb, and the ingress qdisc we took filters from, once they are empty."""
        for q in self.qdiscs(source):
            if (q.get('root') and q.get('handle') == TC_ROOT_HANDLE and q.get('kind') == 'htb'
                    and not self.tc_filters(source, TC_ROOT_HANDLE)):
                self.change('tc', ['qdisc', 'del', 'dev', source, 'root', 'handle', TC_ROOT_HANDLE])
            elif (q.get('kind') == 'ingress' and 'ffff:' in parents
                  and not self.tc_filters(source, 'ffff:')):
                self.change('tc', ['qdisc', 'del', 'dev', source, 'ingress'])

    def _add_tc(self, spec, vm_dir, check_mode):
        parents = self.tc_parents(spec.source)
        parent, need = parents[vm_dir]
        if need == 'ingress':
            self.change('tc', ['qdisc', 'add', 'dev', spec.source, 'ingress'], check_mode=check_mode)
        elif need == 'root':
            self.change('tc', ['qdisc', 'replace', 'dev', spec.source, 'root', 'handle',
                               TC_ROOT_HANDLE, 'htb'], check_mode=check_mode)
        elif need is not None:
            raise MirrorError(need)
        in_use = used_prefs(self.tc_filters(spec.source, parent)) if need is None else set()
        pref = free_pref(in_use)
        self.change('tc', ['filter', 'add', 'dev', spec.source, 'parent', parent, 'pref', str(pref),
                           'protocol', 'all', 'u32', 'match', 'u32', '0', '0',
                           'action', 'mirred', 'egress', 'mirror', 'dev', spec.target,
                           'cookie', tc_cookie(spec.target)], check_mode=check_mode)

    def ensure_present(self, spec, check_mode=False, ignore_missing=False):
        """Make the live rules equal to ``spec``. Returns a result dict (changed, before, after ...)."""
        if spec.bridge:
            return self.ensure_present_bridge(spec, check_mode=check_mode, ignore_missing=ignore_missing)
        missing = [d for d in (spec.source, spec.target) if self.link(d) is None]
        before = self.read(spec.source, spec.target)
        result = {'changed': False, 'source': spec.source, 'target': spec.target,
                  'firewall_bridge': self.firewall_bridge(spec.source), 'spec': spec.as_dict(),
                  'before': self.comparable(before['rules']), 'missing': missing}
        if missing:
            if ignore_missing:
                result['after'] = result['before']
                result['msg'] = ('skipped: device %s does not exist (the VM is not running); the '
                                 'hookscript applies the mirror when it starts' % ', '.join(missing))
                return result
            raise MirrorError('device %s does not exist: is the VM running? (ignore_missing=true '
                              'skips absent devices)' % ', '.join(missing))
        want = normalise(desired_state(spec))
        if result['before'] == want:
            result['after'] = want
            result['packets'] = before['packets']
            result['msg'] = 'mirror %s -> %s already present' % (spec.source, spec.target)
            return result
        if spec.backend == 'nft':
            self.change('nft', ['-j', '-f', '-'], data=json.dumps(nft_ruleset(spec)),
                        check_mode=check_mode)
            self._remove_tc(spec.source, before['rules'], check_mode)
        else:
            if before['nft_table']:
                self.change('nft', ['-j', '-f', '-'],
                            data=json.dumps(nft_delete(spec.source, spec.target)),
                            check_mode=check_mode)
            keep = set()
            for vm_dir in spec.vm_directions:
                ok = [r for r in before['rules'].get(vm_dir, [])
                      if r['backend'] == 'tc' and r['target'] == spec.target]
                if ok:
                    keep.add((vm_dir, ok[0]['pref']))
            self._remove_tc(spec.source, before['rules'], check_mode, keep=keep)
            kept_dirs = {d for d, dummy in keep}
            for vm_dir in spec.vm_directions:
                if vm_dir not in kept_dirs:
                    self._add_tc(spec, vm_dir, check_mode)
        result['changed'] = True
        result['after'] = want if check_mode else self.comparable(
            self.read(spec.source, spec.target)['rules'])
        result['msg'] = 'mirror %s -> %s %s' % (spec.source, spec.target,
                                                'created' if not result['before'] else 'updated')
        if not check_mode and result['after'] != want:
            raise MirrorError('mirror %s -> %s did not read back as applied: %r'
                              % (spec.source, spec.target, result['after']))
        return result

    def ensure_absent(self, source, target, check_mode=False):
        """Remove the pair's nft table and our tc filters for it; nothing else on the device."""
        before = self.read(source, target)
        result = {'changed': False, 'source': source, 'target': target,
                  'firewall_bridge': self.firewall_bridge(source),
                  'before': self.comparable(before['rules']), 'after': {}, 'missing': [
                      d for d in (source, target) if self.link(d) is None]}
        if before['nft_table']:
            self.change('nft', ['-j', '-f', '-'], data=json.dumps(nft_delete(source, target)),
                        check_mode=check_mode)
            result['changed'] = True
        if any(r['backend'] == 'tc' for rs in before['rules'].values() for r in rs):
            self._remove_tc(source, before['rules'], check_mode)
            result['changed'] = True
        result['msg'] = 'mirror %s -> %s %s' % (source, target,
                                                'removed' if result['changed'] else 'already absent')
        return result

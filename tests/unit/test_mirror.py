# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pure parts of the mirror logic: validation, names, rule building and parsing."""
import json

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import mirror as m


@pytest.mark.parametrize('bad', ['tap 100', 'tap;rm', 'a' * 16, '', '-tap', 'tap"1', 'tap$x',
                                 'tap\n1', 'tap/1', None, 5])
def test_bad_device_names_are_rejected(bad):
    with pytest.raises(m.MirrorError, match='not a valid interface name'):
        m.validate_device(bad)


@pytest.mark.parametrize('good', ['tap100i0', 'fwpr100p0', 'eth0.100', 'vmbr0', 'a' * 15, 'x_y-z'])
def test_good_device_names(good):
    assert m.validate_device(good) == good


@pytest.mark.parametrize('rate', [0, 1.5, -0.1, 'ten', 0.00001])
def test_bad_rates(rate):
    with pytest.raises(m.MirrorError, match='rate'):
        m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=rate)


def test_rate_only_for_sampled_and_required_there():
    with pytest.raises(m.MirrorError, match='only applies to mode=sampled'):
        m.MirrorSpec('tap100i0', 'tap900i0', mode='full', rate=0.5)
    with pytest.raises(m.MirrorError, match='needs rate'):
        m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled')
    assert m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1).threshold() == 1000
    assert m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=1).threshold() == 10000
    assert m.MirrorSpec('tap100i0', 'tap900i0').threshold() is None


@pytest.mark.parametrize('field,value,match', [
    ('direction', 'sideways', 'direction'), ('mode', 'mostly', 'mode'), ('backend', 'ebpf', 'backend')])
def test_unknown_choices(field, value, match):
    with pytest.raises(m.MirrorError, match=match):
        m.MirrorSpec('tap100i0', 'tap900i0', **{field: value})


def test_sampled_needs_nft_and_same_device_is_refused():
    with pytest.raises(m.MirrorError, match='backend=nft'):
        m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1, backend='tc')
    with pytest.raises(m.MirrorError, match='same device'):
        m.MirrorSpec('tap100i0', 'tap100i0')


def test_build_spec_from_vmids():
    spec = m.build_spec(source_vmid=100, source_nic=1, target_vmid=900)
    assert (spec.source, spec.target) == ('tap100i1', 'tap900i0')
    with pytest.raises(m.MirrorError, match='out of range'):
        m.build_spec(source_vmid=99, target_vmid=900)
    with pytest.raises(m.MirrorError, match='net0-net31'):
        m.build_spec(source_vmid=100, source_nic=32, target_vmid=900)
    with pytest.raises(m.MirrorError, match='not both'):
        m.build_spec(source='tap100i0', source_vmid=100, target_vmid=900)
    with pytest.raises(m.MirrorError, match='give the target'):
        m.build_spec(source='tap100i0')


def test_direction_maps_to_the_opposite_host_hook():
    # What the VM sends arrives on the tap's ingress; what it receives leaves by the tap's egress.
    assert m.HOOKS['egress'][0] == 'ingress'
    assert m.HOOKS['ingress'][0] == 'egress'
    cmds = m.nft_ruleset(m.MirrorSpec('tap100i0', 'tap900i0', direction='egress'))['nftables']
    chains = [c['add']['chain'] for c in cmds if 'chain' in c.get('add', {})]
    assert [(c['name'], c['hook'], c['dev']) for c in chains] == [('vm_egress', 'ingress', 'tap100i0')]


def test_table_names_never_collide():
    pairs = [('a_', 'b'), ('a', '_b'), ('a', 'b'), ('a-', 'b'), ('a', '-b'), ('a_-', 'b'), ('a', 'b_-')]
    names = {m.nft_table_name(s, t) for s, t in pairs}
    assert len(names) == len(pairs)


def listing_of(cmds, packets=7):
    """What `nft -j list table` returns for the commands of nft_ruleset (handles added, counters filled in)."""
    listing = {'nftables': [{'metainfo': {}}, {'table': {'family': 'netdev', 'name': 'x'}}]}
    for c in cmds[3:]:
        obj = c['add']
        if 'chain' in obj:
            listing['nftables'].append({'chain': dict(obj['chain'], handle=1)})
        else:
            rule = dict(obj['rule'], handle=2)
            rule['expr'] = [{'counter': {'packets': packets, 'bytes': 700}} if 'counter' in e else e
                            for e in rule['expr']]
            listing['nftables'].append({'rule': rule})
    return listing


@pytest.mark.parametrize('mode,rate,sampling,rules', [
    ('full', None, 'flow', 1), ('sampled', 0.1, 'packet', 1), ('sampled', 0.1, 'flow', 2)])
def test_nft_ruleset_round_trips_through_the_parser(mode, rate, sampling, rules):
    spec = m.MirrorSpec('tap100i0', 'tap900i0', mode=mode, rate=rate, sampling=sampling)
    state, packets = m.parse_nft_table(listing_of(m.nft_ruleset(spec)['nftables']))
    assert m.normalise(state) == m.normalise(m.desired_state(spec))
    assert packets == {'egress': 7 * rules, 'ingress': 7 * rules}  # the counters of every rule of a direction


def test_flow_sampling_rules():
    """IP by the symmetric flow hash, every other frame per packet, both at the same threshold."""
    spec = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.25, direction='egress')
    rules = [c['add']['rule']['expr'] for c in m.nft_ruleset(spec)['nftables'] if 'rule' in c.get('add', {})]
    ip_set = {'meta': {'key': 'protocol'}}
    assert rules == [
        [{'match': {'op': '==', 'left': ip_set, 'right': {'set': ['ip', 'ip6']}}},
         {'match': {'op': '<', 'left': {'symhash': {'mod': 10000}}, 'right': 2500}},
         {'counter': None}, {'dup': {'addr': 'tap900i0'}}],
        [{'match': {'op': '!=', 'left': ip_set, 'right': {'set': ['ip', 'ip6']}}},
         {'match': {'op': '<', 'left': {'numgen': {'mode': 'random', 'mod': 10000, 'offset': 0}}, 'right': 2500}},
         {'counter': None}, {'dup': {'addr': 'tap900i0'}}]]
    assert m.desired_state(spec) == {'egress': [{'backend': 'nft', 'sample': 2500, 'target': 'tap900i0',
                                                 'sampling': 'flow'}]}
    packet = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.25, sampling='packet')
    assert m.desired_state(packet)['ingress'][0]['sampling'] == 'packet'
    # Full mirrors copy everything: sampling does not apply and is not shown.
    full = m.MirrorSpec('tap100i0', 'tap900i0', sampling='packet')
    assert full.sampling is None and 'sampling' not in m.desired_state(full)['egress'][0]
    assert 'sampling' not in full.as_dict()


def test_unknown_sampling_is_refused():
    with pytest.raises(m.MirrorError, match='sampling .*flow.*packet'):
        m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1, sampling='bytes')
    with pytest.raises(m.MirrorError, match='sampling'):
        m.build_spec(source='tap100i0', target='tap900i0', mode='sampled', rate=0.1, sampling=None)


@pytest.mark.parametrize('threshold,exact', [
    (None, 1.0), (10000, 1.0), (5000, 0.5), (2500, 0.25),
    # 1/10000 of 2**32 is not whole: the buckets below 1 hold ceil(2**32 / 10000) = 429497 values.
    (1, 429497 / 2 ** 32), (3333, 1431512600 / 2 ** 32)])
def test_effective_rate_is_exact(threshold, exact):
    assert m.effective_rate(threshold) == pytest.approx(exact, abs=1e-12)


def test_effective_rate_counts_the_kernels_buckets():
    """Brute force over a scaled-down space: reciprocal_scale(h, N) = (h * N) >> bits puts exactly
    ceil(T * 2**bits / N) values of h below T, the count effective_rate uses."""
    bits, mod = 16, 10000
    for threshold in (1, 7, 3333, 5000, 9999):
        below = sum(1 for h in range(1 << bits) if (h * mod) >> bits < threshold)
        assert below == -(-threshold * (1 << bits) // mod)
    for threshold in (1, 2, 999, 3000, 9999):
        assert abs(m.effective_rate(threshold) - threshold / m.SAMPLE_MOD) < 2.4e-6


@pytest.mark.parametrize('rate,threshold', [(0.1, 1000), (0.33333, 3333), (0.00015, 1), (0.99996, 10000),
                                            (1 / 3, 3333), (0.123456, 1235)])
def test_rates_round_to_the_nearest_ten_thousandth(rate, threshold):
    assert m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=rate).threshold() == threshold


def old_packet_rule(threshold, target='tap900i0'):
    return [{'match': {'op': '<', 'left': {'numgen': {'mode': 'random', 'mod': 10000, 'offset': 0}},
                       'right': threshold}},
            {'counter': {'packets': 3, 'bytes': 300}}, {'dup': {'addr': target}}]


def chain_listing(*exprs, chain='vm_egress', hook='ingress'):
    return {'nftables': [{'chain': {'name': chain, 'hook': hook}}]
            + [{'rule': {'chain': chain, 'expr': e}} for e in exprs]}


def test_old_per_packet_table_reads_as_packet_sampling_and_differs_from_flow():
    state, packets = m.parse_nft_table(chain_listing(old_packet_rule(1000)))
    assert state == {'egress': [{'backend': 'nft', 'sample': 1000, 'target': 'tap900i0', 'sampling': 'packet'}]}
    assert packets == {'egress': 3}
    flow = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1, direction='egress')
    packet = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1, direction='egress', sampling='packet')
    assert m.normalise(state) == m.normalise(m.desired_state(packet))
    assert m.normalise(state) != m.normalise(m.desired_state(flow))


def flow_rules(threshold=1000, other_threshold=None, target='tap900i0'):
    spec = m.MirrorSpec('tap100i0', target, mode='sampled', rate=threshold / 10000, direction='egress')
    exprs = [c['add']['rule']['expr'] for c in m.nft_ruleset(spec)['nftables'] if 'rule' in c.get('add', {})]
    if other_threshold is not None:
        exprs[1][1]['match']['right'] = other_threshold
    return exprs


@pytest.mark.parametrize('exprs', [
    pytest.param(flow_rules()[:1], id='flow rule without the rule for other frames'),
    pytest.param(flow_rules()[1:], id='rule for other frames alone'),
    pytest.param(flow_rules(other_threshold=2000), id='halves with different thresholds'),
    pytest.param([flow_rules()[0][1:]], id='symhash on every frame'),
    pytest.param([[flow_rules()[0][0]] + old_packet_rule(1000)], id='numgen on IP only'),
    pytest.param([[{'match': {'op': '<', 'left': {'symhash': {'mod': 100}}, 'right': 10}}] + old_packet_rule(1)[1:]],
                 id='another modulus'),
    pytest.param([[{'match': {'op': '<', 'left': {'numgen': {'mode': 'inc', 'mod': 10000, 'offset': 0}},
                              'right': 10}}] + old_packet_rule(1)[1:]], id='numgen inc'),
])
def test_partial_or_foreign_sampling_rules_never_compare_equal(exprs):
    state = m.parse_nft_table(chain_listing(*exprs))[0]
    assert any('unknown' in e for e in state['egress'])
    for sampling in m.SAMPLINGS:
        for rate in (0.1, 0.2, 0.001):
            spec = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=rate, direction='egress',
                                sampling=sampling)
            assert m.normalise(state) != m.normalise(m.desired_state(spec))


def test_flow_rule_pair_in_either_order_is_one_entry():
    first, second = flow_rules()
    for exprs in ([first, second], [second, first]):
        state, packets = m.parse_nft_table(chain_listing(*exprs))
        assert state == {'egress': [{'backend': 'nft', 'sample': 1000, 'target': 'tap900i0', 'sampling': 'flow'}]}


def test_stale_dup_target_does_not_compare_equal():
    listing = {'nftables': [
        {'chain': {'name': 'vm_egress', 'hook': 'ingress'}},
        {'rule': {'chain': 'vm_egress', 'expr': [{'counter': {'packets': 0}}, {'dup': {'addr': '17'}}]}}]}
    state = m.parse_nft_table(listing)[0]
    want = m.desired_state(m.MirrorSpec('tap100i0', 'tap900i0', direction='egress'))
    assert state == {'egress': [{'backend': 'nft', 'sample': None, 'target': '17'}]}
    assert m.normalise(state) != m.normalise(want)


def test_foreign_rules_are_marked_unknown():
    listing = {'nftables': [
        {'chain': {'name': 'vm_ingress', 'hook': 'egress'}},
        {'rule': {'chain': 'vm_ingress', 'expr': [{'drop': None}]}}]}
    state = m.parse_nft_table(listing)[0]
    assert 'unknown' in state['ingress'][0]


TC_LISTING = [
    {'parent': 'ffff:', 'pref': 49152, 'kind': 'u32'},
    {'parent': 'ffff:', 'pref': 49152, 'kind': 'u32', 'options': {'fh': '800:'}},
    {'parent': 'ffff:', 'pref': 49152, 'kind': 'u32', 'options': {'fh': '800::800', 'actions': [
        {'kind': 'mirred', 'to_dev': 'tap900i0', 'cookie': m.tc_cookie('tap900i0')}]}},
    # Someone else's mirror in our range, and ours to another target: neither is this pair's.
    {'parent': 'ffff:', 'pref': 49153, 'kind': 'u32', 'options': {'actions': [
        {'kind': 'mirred', 'to_dev': 'tap900i0'}]}},
    {'parent': 'ffff:', 'pref': 49154, 'kind': 'u32', 'options': {'actions': [
        {'kind': 'mirred', 'to_dev': 'tap901i0', 'cookie': m.tc_cookie('tap901i0')}]}},
    {'parent': 'ffff:', 'pref': 1, 'kind': 'u32', 'options': {'actions': [
        {'kind': 'mirred', 'to_dev': 'tap900i0', 'cookie': m.tc_cookie('tap900i0')}]}},
]


def test_tc_filters_are_ours_only_with_our_pref_and_cookie():
    assert m.parse_tc_filters(TC_LISTING, 'tap900i0') == [{'pref': 49152, 'target': 'tap900i0'}]
    assert m.free_pref(m.used_prefs(TC_LISTING)) == 49155
    assert len(bytes.fromhex(m.tc_cookie('a' * 15))) == 16  # the kernel's cookie limit


class FakeSystem:
    """A stand-in for ip/tc/nft that records calls: enough to check check mode and validation."""

    def __init__(self, links=('tap100i0', 'tap900i0'), table=None):
        self.links = set(links)
        self.table = table
        self.calls = []

    def run(self, argv, data=None):
        self.calls.append(argv)
        tool = argv[4] if argv[:3] == ['ip', 'netns', 'exec'] else argv[0]
        args = argv[5:] if argv[:3] == ['ip', 'netns', 'exec'] else argv[1:]
        if tool == 'ip':
            dev = args[-1]
            return (0, json.dumps([{'ifname': dev}]), '') if dev in self.links else (1, '', 'nope')
        if tool == 'nft' and args[:2] == ['-j', 'list']:
            return (0, json.dumps(self.table), '') if self.table else (1, '', 'No such file')
        if tool == 'tc' and 'show' in args:
            return 0, '[]', ''
        raise AssertionError('a changing command ran: %r' % (argv,))


def test_check_mode_runs_only_reads():
    fake = FakeSystem()
    mgr = m.MirrorManager(fake.run, netns='lab1')
    res = mgr.ensure_present(m.MirrorSpec('tap100i0', 'tap900i0'), check_mode=True)
    assert res['changed'] is True
    assert res['before'] == {} and set(res['after']) == {'egress', 'ingress'}
    assert mgr.commands and mgr.commands[0][:6] == ['ip', 'netns', 'exec', 'lab1', 'nft', '-j']
    assert all(c[:3] == ['ip', 'netns', 'exec'] for c in fake.calls)


def test_missing_device_fails_or_is_skipped():
    fake = FakeSystem(links=('tap900i0',))
    mgr = m.MirrorManager(fake.run)
    with pytest.raises(m.MirrorError, match='tap100i0 does not exist'):
        mgr.ensure_present(m.MirrorSpec('tap100i0', 'tap900i0'))
    res = mgr.ensure_present(m.MirrorSpec('tap100i0', 'tap900i0'), ignore_missing=True)
    assert res['changed'] is False and res['missing'] == ['tap100i0']


def test_bad_netns_rejected():
    with pytest.raises(m.MirrorError, match='netns'):
        m.MirrorManager(lambda a, d=None: (0, '', ''), netns='x; rm -rf /')

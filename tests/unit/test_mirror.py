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


def test_nft_ruleset_round_trips_through_the_parser():
    spec = m.MirrorSpec('tap100i0', 'tap900i0', mode='sampled', rate=0.1)
    cmds = m.nft_ruleset(spec)['nftables']
    # What `nft -j list table` returns for it (handles added, the counter filled in).
    listing = {'nftables': [{'metainfo': {}}, {'table': {'family': 'netdev', 'name': 'x'}}]}
    for c in cmds[3:]:
        obj = c['add']
        if 'chain' in obj:
            listing['nftables'].append({'chain': dict(obj['chain'], handle=1)})
        else:
            rule = dict(obj['rule'], handle=2)
            rule['expr'] = [{'counter': {'packets': 7, 'bytes': 700}} if 'counter' in e else e
                            for e in rule['expr']]
            listing['nftables'].append({'rule': rule})
    state, packets = m.parse_nft_table(listing)
    assert m.normalise(state) == m.normalise(m.desired_state(spec))
    assert packets == {'egress': 7, 'ingress': 7}


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

"""The pure part of module_utils.sdn: normalising networks and planning SDN and bridge writes."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import sdn

PRIMARY = {'name': 'front', 'type': 'vnet', 'zone': 'shopk2x1', 'zone_type': 'simple', 'vnet': 'front9q0',
           'alias': 'shop-front', 'vlan': None, 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1', 'isolated': False}
EMPTY = {'zones': {}, 'vnets': {}, 'subnets': {}}


def norm(**kwargs):
    return sdn.normalise_network(dict(PRIMARY, **kwargs))


def live_of(net, gateway='10.10.0.1', tag=None, alias='shop-front', snat=None):
    """What PVE lists once ``net`` is built (values as PVE returns them: strings, 1 for true)."""
    vnet = {'vnet': net['vnet'], 'zone': net['zone'], 'type': 'vnet', 'alias': alias}
    if tag is not None:
        vnet['tag'] = str(tag)
    subnet = {'subnet': '{0}-10.10.0.0-24'.format(net['zone']), 'cidr': '10.10.0.0/24', 'vnet': net['vnet'],
              'type': 'subnet'}
    if gateway:
        subnet['gateway'] = gateway
    if snat:
        subnet['snat'] = 1
    return {'zones': {net['zone']: {'zone': net['zone'], 'type': 'simple'}}, 'vnets': {net['vnet']: vnet},
            'subnets': {net['vnet']: [subnet]}}


def test_normalise_plan_entries():
    net = norm(cidr='10.10.0.7/24')
    assert net['cidr'] == '10.10.0.0/24' and net['tag'] is None and net['gateway'] == '10.10.0.1'
    shadow = norm(gateway='10.10.0.1', isolated=True, snat=True)
    assert shadow['gateway'] is None and shadow['snat'] is False
    vlan = norm(zone_type='vlan', zone_bridge='vmbr0', vlan=30)
    assert vlan['tag'] == 30 and vlan['zone_bridge'] == 'vmbr0'
    assert norm(zone_bridge='vmbr0')['zone_bridge'] is None  # only a vlan zone rides on a bridge


@pytest.mark.parametrize('change, message', [
    (dict(zone='shop-zone'), 'networks[0].zone'),
    (dict(vnet='toolongvnet'), 'networks[0].vnet'),
    (dict(vlan=5), 'simple zone carries no VLAN tag'),
    (dict(zone_type='vlan', vlan=5), 'needs zone_bridge'),
    (dict(zone_type='vlan', zone_bridge='vmbr0'), 'needs a tag'),
    (dict(gateway='10.20.0.1'), 'not inside 10.10.0.0/24'),
    (dict(cidr='10.10.0/33'), 'not a network'),
    (dict(zone_type='vxlan'), 'zone_type must be simple or vlan'),
])
def test_normalise_refuses(change, message):
    with pytest.raises(sdn.NetworkError) as info:
        norm(**change)
    assert message in str(info.value)


def test_create_everything_in_order():
    ops, before, after = sdn.plan_sdn([norm()], EMPTY)
    assert [(o['method'], o['path']) for o in ops] == [
        ('POST', 'cluster/sdn/zones'), ('POST', 'cluster/sdn/vnets'), ('POST', 'cluster/sdn/vnets/front9q0/subnets')]
    assert ops[0]['params'] == {'zone': 'shopk2x1', 'type': 'simple'}
    assert ops[2]['params'] == {'subnet': '10.10.0.0/24', 'type': 'subnet', 'gateway': '10.10.0.1'}
    assert before == {'front9q0': {}}
    assert after['front9q0']['vnet'] == {'id': 'front9q0', 'zone': 'shopk2x1', 'alias': 'shop-front', 'tag': None}


def test_nothing_differs_when_pve_returns_strings_and_ones():
    net = norm(snat=True)
    ops, before, after = sdn.plan_sdn([net], live_of(net, snat=True))
    assert ops == []
    assert before['front9q0']['subnets'] == after['front9q0']['subnets']


def test_only_the_differing_fields_are_written():
    net = norm(zone_type='vlan', zone_bridge='vmbr0', vlan=31, gateway='10.10.0.254')
    live = live_of(net, tag=30)
    live['zones']['shopk2x1'] = {'zone': 'shopk2x1', 'type': 'vlan', 'bridge': 'vmbr0'}
    ops, dummy, dummy = sdn.plan_sdn([net], live)
    assert [(o['method'], o['path'], o['params']) for o in ops] == [
        ('PUT', 'cluster/sdn/vnets/front9q0', {'tag': 31}),
        ('PUT', 'cluster/sdn/vnets/front9q0/subnets/shopk2x1-10.10.0.0-24', {'gateway': '10.10.0.254'})]


def test_gateway_and_alias_removed_when_not_wanted():
    net = norm(alias=None, isolated=True)
    ops, dummy, dummy = sdn.plan_sdn([net], live_of(net, snat=True))
    assert [(o['method'], o['params']) for o in ops] == [('PUT', {'delete': 'alias'}),
                                                         ('PUT', {'delete': 'gateway,snat'})]


def test_cidr_change_replaces_the_subnet():
    net = norm(cidr='10.99.0.0/24', gateway='10.99.0.1')
    ops, dummy, dummy = sdn.plan_sdn([net], live_of(norm()))
    assert [(o['method'], o['path']) for o in ops] == [
        ('DELETE', 'cluster/sdn/vnets/front9q0/subnets/shopk2x1-10.10.0.0-24'),
        ('POST', 'cluster/sdn/vnets/front9q0/subnets')]


def test_zone_type_change_is_refused():
    net = norm()
    live = live_of(net)
    live['zones']['shopk2x1']['type'] = 'vlan'
    with pytest.raises(sdn.NetworkError) as info:
        sdn.plan_sdn([net], live)
    assert 'cannot change a zone type' in str(info.value)


def test_absent_keeps_a_zone_another_vnet_uses():
    net = norm()
    live = live_of(net)
    live['vnets']['other1'] = {'vnet': 'other1', 'zone': 'shopk2x1', 'type': 'vnet'}
    ops, before, after = sdn.plan_sdn([norm(state='absent')], live)
    assert [(o['method'], o['path']) for o in ops] == [
        ('DELETE', 'cluster/sdn/vnets/front9q0/subnets/shopk2x1-10.10.0.0-24'),
        ('DELETE', 'cluster/sdn/vnets/front9q0')]
    del live['vnets']['other1']
    ops, before, after = sdn.plan_sdn([norm(state='absent')], live)
    assert ops[-1]['path'] == 'cluster/sdn/zones/shopk2x1' and after == {'front9q0': {}}
    assert sdn.plan_sdn([norm(state='absent')], EMPTY)[0] == []


def test_consistency_checks():
    with pytest.raises(sdn.NetworkError):
        sdn.check_consistent([norm(), norm()])
    with pytest.raises(sdn.NetworkError):
        sdn.check_consistent([norm(), norm(vnet='other1', zone_type='vlan', zone_bridge='vmbr0', vlan=3)])


def test_bridges_planned_per_node_and_plan_bridges_only_checked():
    want = sdn.normalise_network({'type': 'bridge', 'bridge': 'vmbr90', 'nodes': ['pve1', 'pve2'],
                                  'alias': 'shop (shadow)'})
    live = {'pve1': {'vmbr90': {'iface': 'vmbr90', 'type': 'bridge', 'autostart': 1,
                                'comments': 'shop (shadow)\n'}}, 'pve2': {}}
    ops, before, after, missing = sdn.plan_bridges([want], live)
    assert [(o['method'], o['path'], o['node']) for o in ops] == [('POST', 'nodes/pve2/network', 'pve2')]
    assert ops[0]['params'] == {'iface': 'vmbr90', 'type': 'bridge', 'autostart': 1, 'comments': 'shop (shadow)'}
    assert before['pve1/vmbr90'] == after['pve1/vmbr90']
    check = sdn.normalise_network({'type': 'bridge', 'bridge': 'vmbr0'})
    assert sdn.plan_bridges([check], {'pve1': {'vmbr0': {}}, 'pve2': {}})[3] == [('pve2', 'vmbr0')]


def test_lock_errors_say_what_to_do():
    from ansible_collections.shadownet.proxmox.plugins.module_utils.api import PveApiError

    def classify(message, status=500):
        return sdn.NetworkEngine._lock_error(PveApiError(message, status=status, method='POST',
                                                         path='cluster/sdn/lock')).message
    assert 'locked by another client' in classify('could not acquire lock for SDN config: invalid lock token')
    assert 'pending changes that are not this run' in classify(
        'could not acquire lock for SDN config: configuration has pending changes')
    assert 'PVE 9 or later' in classify("Method 'POST /cluster/sdn/lock' not implemented", status=501)
    other = PveApiError('permission denied', status=403)
    assert sdn.NetworkEngine._lock_error(other) is other

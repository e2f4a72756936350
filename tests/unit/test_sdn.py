"""The pure part of module_utils.sdn: normalising networks and planning SDN and bridge writes."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import sdn

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


def test_absent_networks_of_one_zone_remove_the_zone_after_both_vnets():
    """pve-network Zones/Plugin.pm on_delete_hook refuses a zone a vnet still uses: zones go after every vnet."""
    live = live_of(norm(vnet='front9q0'))
    live['vnets']['back9q0'] = {'vnet': 'back9q0', 'zone': 'shopk2x1', 'type': 'vnet'}
    ops, before, after = sdn.plan_sdn([norm(vnet='front9q0', state='absent'), norm(vnet='back9q0', state='absent')],
                                      live)
    paths = [o['path'] for o in ops if o['method'] == 'DELETE']
    assert paths[-1] == 'cluster/sdn/zones/shopk2x1' and paths.count('cluster/sdn/zones/shopk2x1') == 1
    assert paths.index('cluster/sdn/vnets/back9q0') < paths.index('cluster/sdn/zones/shopk2x1')
    assert after == {'front9q0': {}, 'back9q0': {}}


def test_plan_sdn_pinned_every_kind_of_write_in_order():
    """Characterisation (pinned before plan_sdn was split): zones, vnets, subnets, then removals; whole views."""
    nets = [
        norm(zone='vl1', vnet='vla', zone_type='vlan', zone_bridge='vmbr0', vlan=30, snat=True, alias=None),
        norm(zone='vl1', vnet='vlb', zone_type='vlan', zone_bridge='vmbr0', vlan=31, cidr=None, gateway=None),
        norm(zone='vx1', vnet='vxa', zone_type='vxlan', tag=5000, peers=['10.0.0.2', '10.0.0.1'], cidr='10.20.0.0/24',
             gateway=None),
        norm(zone='vx2', vnet='vxb', zone_type='vxlan', tag=5001, peers=['10.0.0.3'], cidr=None, gateway=None),
        norm(zone='gone1', vnet='old1', state='absent'),
        norm(zone='kept1', vnet='old3', state='absent'),
        norm(zone='nozone', vnet='never1', state='absent'),
    ]
    live = {
        'zones': {'vx2': {'zone': 'vx2', 'type': 'vxlan', 'peers': '10.0.0.9,10.0.0.3'},
                  'gone1': {'zone': 'gone1', 'type': 'simple'}, 'kept1': {'zone': 'kept1', 'type': 'simple'}},
        'vnets': {'vxb': {'vnet': 'vxb', 'zone': 'vx2', 'tag': '5001', 'alias': 'shop-front'},
                  'old1': {'vnet': 'old1', 'zone': 'gone1'},
                  'old3': {'vnet': 'old3', 'zone': 'kept1'}, 'stay1': {'vnet': 'stay1', 'zone': 'kept1'}},
        'subnets': {'vxb': [{'cidr': '10.30.0.0/24', 'gateway': '10.30.0.1'}],       # no id: derived from the zone
                    'old1': [{'cidr': '10.40.0.0/24', 'id': 'gone1-10.40.0.0-24'}]},
    }
    ops, before, after = sdn.plan_sdn(nets, live)
    assert [(o['method'], o['path'], o['params'], o['what']) for o in ops] == [
        ('POST', 'cluster/sdn/zones', {'zone': 'vl1', 'type': 'vlan', 'bridge': 'vmbr0'}, 'create zone vl1'),
        ('POST', 'cluster/sdn/zones', {'zone': 'vx1', 'type': 'vxlan', 'peers': '10.0.0.1,10.0.0.2'},
         'create zone vx1'),
        ('PUT', 'cluster/sdn/zones/vx2', {'peers': '10.0.0.3'}, 'update zone vx2'),
        ('POST', 'cluster/sdn/vnets', {'vnet': 'vla', 'zone': 'vl1', 'tag': 30}, 'create vnet vla'),
        ('POST', 'cluster/sdn/vnets', {'vnet': 'vlb', 'zone': 'vl1', 'alias': 'shop-front', 'tag': 31},
         'create vnet vlb'),
        ('POST', 'cluster/sdn/vnets', {'vnet': 'vxa', 'zone': 'vx1', 'alias': 'shop-front', 'tag': 5000},
         'create vnet vxa'),
        ('POST', 'cluster/sdn/vnets/vla/subnets',
         {'subnet': '10.10.0.0/24', 'type': 'subnet', 'gateway': '10.10.0.1', 'snat': 1},
         'create subnet 10.10.0.0/24 on vla'),
        ('POST', 'cluster/sdn/vnets/vxa/subnets', {'subnet': '10.20.0.0/24', 'type': 'subnet'},
         'create subnet 10.20.0.0/24 on vxa'),
        ('DELETE', 'cluster/sdn/vnets/vxb/subnets/vx2-10.30.0.0-24', {}, 'remove subnet 10.30.0.0/24 of vxb'),
        ('DELETE', 'cluster/sdn/vnets/old1/subnets/gone1-10.40.0.0-24', {}, 'remove subnet 10.40.0.0/24 of old1'),
        ('DELETE', 'cluster/sdn/vnets/old1', {}, 'remove vnet old1'),
        ('DELETE', 'cluster/sdn/vnets/old3', {}, 'remove vnet old3'),
        ('DELETE', 'cluster/sdn/zones/gone1', {}, 'remove zone gone1'),
    ]
    assert [list(o['params']) for o in ops[:2]] == [['zone', 'type', 'bridge'], ['zone', 'type', 'peers']]
    vx_zone = {'id': 'vx2', 'type': 'vxlan', 'bridge': None}
    assert before == {
        'vla': {}, 'vlb': {}, 'vxa': {},
        'vxb': {'zone': dict(vx_zone, peers=['10.0.0.3', '10.0.0.9']),
                'vnet': {'id': 'vxb', 'zone': 'vx2', 'alias': 'shop-front', 'tag': 5001},
                'subnets': [{'cidr': '10.30.0.0/24', 'gateway': '10.30.0.1', 'snat': False}]},
        'old1': {'zone': {'id': 'gone1', 'type': 'simple', 'bridge': None},
                 'vnet': {'id': 'old1', 'zone': 'gone1', 'alias': None, 'tag': None},
                 'subnets': [{'cidr': '10.40.0.0/24', 'gateway': None, 'snat': False}]},
        'old3': {'zone': {'id': 'kept1', 'type': 'simple', 'bridge': None},
                 'vnet': {'id': 'old3', 'zone': 'kept1', 'alias': None, 'tag': None}, 'subnets': []},
        'never1': {}}
    vl_zone = {'id': 'vl1', 'type': 'vlan', 'bridge': 'vmbr0'}
    assert after == {
        'vla': {'zone': vl_zone, 'vnet': {'id': 'vla', 'zone': 'vl1', 'alias': None, 'tag': 30},
                'subnets': [{'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1', 'snat': True}]},
        'vlb': {'zone': vl_zone, 'vnet': {'id': 'vlb', 'zone': 'vl1', 'alias': 'shop-front', 'tag': 31}, 'subnets': []},
        'vxa': {'zone': {'id': 'vx1', 'type': 'vxlan', 'bridge': None, 'peers': ['10.0.0.1', '10.0.0.2']},
                'vnet': {'id': 'vxa', 'zone': 'vx1', 'alias': 'shop-front', 'tag': 5000},
                'subnets': [{'cidr': '10.20.0.0/24', 'gateway': None, 'snat': False}]},
        'vxb': {'zone': dict(vx_zone, peers=['10.0.0.3']),
                'vnet': {'id': 'vxb', 'zone': 'vx2', 'alias': 'shop-front', 'tag': 5001}, 'subnets': []},
        'old1': {},
        'old3': {'zone': {'id': 'kept1', 'type': 'simple', 'bridge': None}},
        'never1': {}}
    assert list(before) == list(after) == ['vla', 'vlb', 'vxa', 'vxb', 'old1', 'old3', 'never1']


def test_plan_sdn_moves_a_vnet_only_without_subnets():
    live = live_of(norm())
    with pytest.raises(sdn.NetworkError) as info:
        sdn.plan_sdn([norm(zone='other1')], live)
    assert str(info.value) == ("vnet 'front9q0' is in zone 'shopk2x1', wanted 'other1'; remove its subnets (state "
                               "absent) before moving it")
    ops = sdn.plan_sdn([norm(zone='other1', cidr=None, gateway=None)], dict(live, subnets={}))[0]
    assert [(o['method'], o['path'], o['params']) for o in ops] == [
        ('POST', 'cluster/sdn/zones', {'zone': 'other1', 'type': 'simple'}),
        ('PUT', 'cluster/sdn/vnets/front9q0', {'zone': 'other1'})]


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
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError

    def classify(message, status=500):
        return sdn.NetworkEngine._lock_error(PveApiError(message, status=status, method='POST',
                                                         path='cluster/sdn/lock')).message
    assert 'locked by another client' in classify('could not acquire lock for SDN config: invalid lock token')
    assert 'pending changes that are not this run' in classify(
        'could not acquire lock for SDN config: configuration has pending changes')
    assert 'PVE 9 or later' in classify("Method 'POST /cluster/sdn/lock' not implemented", status=501)
    other = PveApiError('permission denied', status=403)
    assert sdn.NetworkEngine._lock_error(other) is other


# ------------------------------------------------------------------------- names (pve_verify_iface)

@pytest.mark.parametrize('bridge,message', [
    ('vm-br1', 'pve_verify_iface'), ('b', 'pve_verify_iface'), ('vmbr0.10', 'not a bridge'),
    ('vmbr0:1', 'not a bridge'), ('shopbridgefront1', 'at most 15'), ('1vmbr', 'pve_verify_iface'),
])
def test_bridge_names_pve_refuses_are_refused(bridge, message):
    with pytest.raises(sdn.NetworkError, match='networks\\[0\\].bridge: .*' + message):
        sdn.normalise_network({'type': 'bridge', 'bridge': bridge, 'nodes': ['pve1']})
    assert sdn.normalise_network({'type': 'bridge', 'bridge': 'Vm_br_15_chars1'})['bridge'] == 'Vm_br_15_chars1'


def test_a_bridge_with_a_dynamic_address_is_never_updated_through_the_api():
    """pve-manager API2/Network.pm update_network writes method static or manual only: a comment change of a dhcp
    (or inet6 auto) bridge would drop the node's address at the next apply. A static one gets its cidr back."""
    want = sdn.normalise_network({'type': 'bridge', 'bridge': 'vmbr0', 'nodes': ['pve1'], 'bridge_ports': ['eno1'],
                                  'comment': 'uplink'})
    for method, method6, named in (('dhcp', None, 'inet dhcp'), ('static', 'auto', 'inet6 auto')):
        have = {'iface': 'vmbr0', 'type': 'bridge', 'autostart': 1, 'bridge_ports': 'eno1', 'method': method,
                'cidr': '192.0.2.5/24' if method == 'static' else None}
        if method6:
            have['method6'] = method6
        with pytest.raises(sdn.NetworkError, match='vmbr0 on pve1 gets its address by {0}: .*Change comments on the '
                           'node by hand'.format(named)):
            sdn.plan_bridges([want], {'pve1': {'vmbr0': have}})
        with pytest.raises(sdn.NetworkError, match='vmbr0 on pve1 carries .*{0}: its ports'.format(named)):
            sdn.plan_bridges([dict(want, ports=[])], {'pve1': {'vmbr0': have}})
    static = {'iface': 'vmbr0', 'type': 'bridge', 'autostart': 1, 'bridge_ports': 'eno1', 'method': 'static',
              'address': '192.0.2.5', 'netmask': '24', 'cidr6': '2001:db8::5/64', 'method6': 'static'}
    ops = sdn.plan_bridges([want], {'pve1': {'vmbr0': static}})[0]
    assert ops[0]['params'] == {'comments': 'uplink', 'type': 'bridge', 'cidr': '192.0.2.5/24',
                                'cidr6': '2001:db8::5/64'}, ops


def test_vlan_zone_bridge_name_is_checked_with_its_tag():
    vlan = dict(PRIMARY, zone_type='vlan', zone_bridge='vmbr0', tag=30)
    assert sdn.normalise_network(vlan)['zone_bridge'] == 'vmbr0'
    with pytest.raises(sdn.NetworkError, match='zone_bridge: .*pve_verify_iface'):
        sdn.normalise_network(dict(vlan, zone_bridge='vm-br0'))
    # VlanPlugin.pm makes <bridge>v<tag> (or <bridge>.<tag>): 16 characters here.
    with pytest.raises(sdn.NetworkError, match='shopuplink1v4000 .16 characters'):
        sdn.normalise_network(dict(vlan, zone_bridge='shopuplink1', tag=4000))


# ------------------------------------------------------------------------------ guests on a network

def test_vm_bridges_reads_current_and_pending_nics():
    pending = [{'key': 'net0', 'value': 'virtio=BC:24:11:00:00:01,bridge=front9q0,firewall=1'},
               {'key': 'net1', 'value': 'virtio=BC:24:11:00:00:02,bridge=vmbr0', 'pending': 'virtio=BC:24:11:00:00:02,bridge=back1'},
               {'key': 'scsi0', 'value': 'local-lvm:vm-100-disk-0,bridge=nope'}]
    assert sdn.vm_bridges(pending) == {'front9q0', 'vmbr0', 'back1'}
    assert sdn.vm_bridges({'net0': 'name=eth0,bridge=ctnet,ip=dhcp', 'hostname': 'ct'}) == {'ctnet'}


def test_network_users_names_every_guest_per_network():
    vms = [dict(vmid=101, name='web-2', node='pve2', type='qemu', template=False, bridges={'front9q0'}),
           dict(vmid=100, name='web-1', node='pve1', type='qemu', template=False, bridges={'front9q0', 'vmbr90'}),
           dict(vmid=200, name='ct', node='pve2', type='lxc', template=False, bridges={'vmbr90'}),
           dict(vmid=9000, name='gold', node='pve1', type='qemu', template=True, bridges={'other1'})]
    users = sdn.network_users(vms, ['front9q0', 'other1', 'unused1'], {'pve1': ['vmbr90']})
    assert users == {'vnet front9q0': ['VM 100 (web-1) on pve1', 'VM 101 (web-2) on pve2'],
                     'vnet other1': ['template 9000 (gold) on pve1'],
                     'bridge vmbr90 on pve1': ['VM 100 (web-1) on pve1']}  # the CT on pve2 keeps its own vmbr90
    assert sdn.network_users(vms, ['unused1'], {'pve3': ['vmbr90']}) == {}


# ----------------------------------------------------------------------------- the apply's task logs

RELOAD_LOG = ['pve1: reloading network config',
              'pve2: reloading network config',
              "500 Can't connect to pve2:8006 (Connection refused)",
              "command 'pvesh set /nodes/pve2/network --regenerate-frr 0' failed: exit code 255",
              'pve3: reloading network config', 'TASK OK']


def test_reload_log_names_the_node_whose_reload_was_not_started():
    started, failed, other = sdn.parse_reload_log(RELOAD_LOG)
    assert started == ['pve1', 'pve2', 'pve3'] and other == []
    assert failed == {'pve2': "500 Can't connect to pve2:8006 (Connection refused) (exit code 255)"}
    # The same through RESTEnvironment log_warn ("WARN: ..."), ending WARNINGS: 1.
    counted = [('WARN: ' + line if line.startswith('command') else line) for line in RELOAD_LOG[:-1]]
    assert sdn.parse_reload_log(counted + ['TASK WARNINGS: 1'])[1] == failed


def test_node_reload_log_lists_the_vnets_pve_skipped():
    log = ['zone shopvl : vnet backvl : can\'t find bridge vmbr5 at /usr/share/perl5/PVE/Network/SDN/Zones/'
           'Plugin.pm line 323.', "WARN: can't generate vnet 'lost1': zone gone don't exist", 'TASK OK']
    assert sdn.parse_node_reload_log(log) == {'backvl': "zone shopvl: can't find bridge vmbr5",
                                              'lost1': "zone gone don't exist"}
    assert sdn.upid_starttime('UPID:pve1:0000A1B2:00000001:6900AB12:srvreload:networking:root@pam:') == 0x6900AB12


def test_vlan_bridge_missing_unless_up_or_created_in_the_same_run():
    vlan = sdn.normalise_network(dict(PRIMARY, zone='shopvl', vnet='backvl', zone_type='vlan', zone_bridge='vmbr7',
                                      tag=30))
    live = {'pve1': {'vmbr7': {'iface': 'vmbr7', 'active': 1}}, 'pve2': {'vmbr7': {'iface': 'vmbr7'}},
            'pve3': {}}
    text = sdn.vlan_bridges_missing([vlan], live)
    assert text == 'bridge vmbr7 of vlan zone shopvl (vnets backvl) is missing or not up on node(s) pve2, pve3'
    made = sdn.normalise_network({'type': 'bridge', 'bridge': 'vmbr7', 'nodes': ['pve2', 'pve3']})
    assert sdn.vlan_bridges_missing([vlan], live, [made]) == ''

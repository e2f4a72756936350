"""shadownet.proxmox.vnet against the simulator: SDN lock, one apply, rollback, node bridges."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.modules import vnet
from lab.modrun import ModuleFailed, run_module

PRIMARY = {'name': 'front', 'role': 'primary', 'twin_of': None, 'type': 'vnet', 'zone': 'shopk2x1',
           'zone_type': 'simple', 'zone_bridge': None, 'vnet': 'front9q0', 'alias': 'shop-front',
           'bridge': 'front9q0', 'vlan': None, 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1', 'isolated': False}
SHADOW = {'name': 'front', 'role': 'shadow', 'twin_of': 'front', 'type': 'vnet', 'zone': 'sshox7pa',
          'zone_type': 'simple', 'zone_bridge': None, 'vnet': 'sfro3mzq', 'alias': 'shop-front (shadow)',
          'bridge': 'sfro3mzq', 'vlan': None, 'cidr': '10.10.0.0/24', 'gateway': None, 'isolated': True}
VLAN = {'name': 'back', 'type': 'vnet', 'zone': 'shopvl', 'zone_type': 'vlan', 'zone_bridge': 'vmbr0',
        'vnet': 'backvl', 'alias': 'shop-back', 'vlan': 30, 'cidr': '10.30.0.0/24', 'gateway': '10.30.0.1'}


def plan_args(pve_conn, *networks):
    return dict(pve_conn, networks=[dict(n) for n in networks])


def sdn(pvesim):
    return pvesim.pve.sdn_running


def test_plan_networks_created_under_one_lock_and_one_apply(pvesim, pve_conn):
    mark = pvesim.mark()
    result = run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW, VLAN))
    assert result['changed']
    running = sdn(pvesim)
    assert running['zones']['shopk2x1']['type'] == 'simple'
    assert running['zones']['shopvl']['bridge'] == 'vmbr0'
    assert running['vnets']['front9q0']['alias'] == 'shop-front'
    assert str(running['vnets']['backvl']['tag']) == '30'
    assert running['subnets']['shopk2x1-10.10.0.0-24']['gateway'] == '10.10.0.1'
    assert 'gateway' not in running['subnets']['sshox7pa-10.10.0.0-24']  # the shadow twin is isolated
    writes = pvesim.writes(mark)
    assert [w[:2] for w in writes].count(('POST', '/api2/json/cluster/sdn/lock')) == 1
    assert [w[:2] for w in writes].count(('PUT', '/api2/json/cluster/sdn')) == 1
    assert all('lock-token' in body for method, path, body in writes if not path.endswith('/sdn/lock'))
    assert pvesim.pve.sdn_lock is None and not pvesim.pve.sdn_has_pending()
    assert result['diff']['before']['sdn']['front9q0'] == {}
    assert result['diff']['after']['sdn']['front9q0']['subnets'][0]['gateway'] == '10.10.0.1'
    mark = pvesim.mark()
    again = run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW, VLAN))
    assert not again['changed'] and again['changes'] == []
    assert pvesim.writes(mark) == []


def test_check_mode_writes_nothing_not_even_the_lock(pvesim, pve_conn):
    mark = pvesim.mark()
    result = run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW), check_mode=True)
    assert result['changed'] and 'create vnet front9q0' in result['changes']
    assert pvesim.writes(mark) == []
    assert pvesim.pve.sdn_config['vnets'] == {}


def test_single_network_form_and_updates_only_what_differs(pvesim, pve_conn):
    single = dict(pve_conn, zone='shopvl', zone_type='vlan', zone_bridge='vmbr0', vnet='backvl', tag=30,
                  alias='shop-back', cidr='10.30.0.0/24', gateway='10.30.0.1')
    assert run_module(vnet, single)['changed']
    mark = pvesim.mark()
    result = run_module(vnet, dict(single, gateway='10.30.0.254', tag=31))
    assert sorted(result['changes']) == ['update subnet 10.30.0.0/24 on backvl', 'update vnet backvl']
    paths = [(m, p) for m, p, b in pvesim.writes(mark)]
    assert ('PUT', '/api2/json/cluster/sdn/vnets/backvl') in paths
    assert not any('/zones' in p for m, p in paths)  # the zone did not differ
    running = sdn(pvesim)
    assert str(running['vnets']['backvl']['tag']) == '31'
    assert running['subnets']['shopvl-10.30.0.0-24']['gateway'] == '10.30.0.254'
    assert result['diff']['before']['sdn']['backvl']['vnet']['tag'] == 30
    assert result['diff']['after']['sdn']['backvl']['vnet']['tag'] == 31
    assert not run_module(vnet, dict(single, gateway='10.30.0.254', tag=31))['changed']


def test_absent_removes_subnet_vnet_and_unused_zone_only(pvesim, pve_conn):
    second = dict(PRIMARY, vnet='other1', alias='shop-other', cidr='10.11.0.0/24', gateway='10.11.0.1')
    run_module(vnet, plan_args(pve_conn, PRIMARY, second))
    result = run_module(vnet, plan_args(pve_conn, dict(PRIMARY, state='absent')))
    assert result['changed']
    running = sdn(pvesim)
    assert 'front9q0' not in running['vnets'] and 'shopk2x1' in running['zones']  # other1 still uses the zone
    result = run_module(vnet, plan_args(pve_conn, dict(second, state='absent')))
    assert 'remove zone shopk2x1' in result['changes']
    assert sdn(pvesim)['zones'] == {} and sdn(pvesim)['subnets'] == {}
    mark = pvesim.mark()
    assert not run_module(vnet, plan_args(pve_conn, dict(second, state='absent')))['changed']
    assert pvesim.writes(mark) == []


def test_failure_mid_way_rolls_back_and_releases_the_lock(pvesim, pve_conn):
    pvesim.pve.fail('POST', '/cluster/sdn/vnets/sfro3mzq/subnets', 500, 'create sdn subnet object failed: boom',
                    times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW))
    msg = info.value.result['msg']
    assert 'boom' in msg and 'rolled back' in msg
    assert pvesim.pve.sdn_lock is None
    assert not pvesim.pve.sdn_has_pending()
    assert pvesim.pve.sdn_config['vnets'] == {} and pvesim.pve.sdn_running['vnets'] == {}
    assert run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW))['changed']


def test_lost_quorum_stops_before_any_write(pvesim, pve_conn):
    pvesim.pve.lose_quorum()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY))
    assert 'quorum' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_offline_node_stops_before_any_write(pvesim, pve_conn):
    pvesim.pve.set_node_offline('pve3')
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY))
    assert 'pve3' in info.value.result['msg'] and 'offline' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_lock_held_by_another_client(pvesim, pve_conn, proxmoxer_api):
    token = proxmoxer_api.cluster.sdn.lock.post()
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY))
    msg = info.value.result['msg']
    assert 'locked by another client' in msg and 'No change was made' in msg
    assert pvesim.pve.sdn_lock == token  # the other client's lock is untouched
    assert pvesim.pve.sdn_config['vnets'] == {}


def test_invalid_input_is_refused_before_any_request(pvesim, pve_conn):
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, dict(pve_conn, zone='shop-zone', vnet='front9q0'))
    assert 'networks[0].zone' in info.value.result['msg']
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, dict(pve_conn, zone='shopk2x1', vnet='front9q0', tag=5))
    assert 'simple zone carries no VLAN tag' in info.value.result['msg']
    assert pvesim.requests(mark) == []


def test_isolated_node_bridge_applied_once_per_node(pvesim, pve_conn):
    args = dict(pve_conn, type='bridge', bridge='vmbr90', nodes=['pve1', 'pve2'], comment='shop shadow')
    mark = pvesim.mark()
    assert run_module(vnet, args, check_mode=True)['changed']
    assert pvesim.writes(mark) == []
    result = run_module(vnet, args)
    assert result['changed'] and sorted(result['bridge_apply']) == ['pve1', 'pve2']
    for node in ('pve1', 'pve2'):
        item = pvesim.pve.node_networks[node]['running']['vmbr90']
        assert item['type'] == 'bridge' and not item.get('bridge_ports')
        assert not pvesim.pve.network_pending(node)
    assert 'vmbr90' not in pvesim.pve.node_networks['pve3']['running']
    mark = pvesim.mark()
    assert not run_module(vnet, args)['changed']
    assert pvesim.writes(mark) == []
    result = run_module(vnet, dict(args, comment='shop shadow 2'))
    assert result['changes'] == ['update bridge vmbr90 on pve1', 'update bridge vmbr90 on pve2']
    run_module(vnet, dict(args, state='absent'))
    assert 'vmbr90' not in pvesim.pve.node_networks['pve1']['running']


def test_bridge_apply_failure_reverts_pending(pvesim, pve_conn):
    pvesim.pve.fail('PUT', '/nodes/pve2/network', 500, 'ifreload failed', times=1)
    args = dict(pve_conn, type='bridge', bridge='vmbr91', nodes=['pve1', 'pve2'])
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, args)
    assert 'ifreload failed' in info.value.result['msg'] and 'reverted on pve2' in info.value.result['msg']
    assert not pvesim.pve.network_pending('pve2')


def test_changes_someone_else_staged_stop_the_apply_that_would_carry_them_out(pvesim, pve_conn, proxmoxer_api):
    """pve-manager API2/Network.pm reload_network_config renames the whole interfaces.new into place and a revert
    unlinks it: another admin's staged, unapplied edit on a node must stop a run whose apply reloads that node's
    network (a bridge there; any SDN apply reloads every node), before any write and in check mode too."""
    pvesim.pve.stage_node_network('pve2', 'vmbr0', comments='maintenance window on friday')
    assert proxmoxer_api.nodes('pve2').network.get()      # proxmoxer shows only data; the attribute is beside it
    bridge = dict(pve_conn, type='bridge', bridge='vmbr92', nodes=['pve1', 'pve2'])
    for args in (bridge, plan_args(pve_conn, PRIMARY)):
        for check_mode in (True, False):
            mark = pvesim.mark()
            with pytest.raises(ModuleFailed) as info:
                run_module(vnet, args, check_mode=check_mode)
            msg = info.value.result['msg']
            assert 'node network changes are staged but not applied on pve2 (' in msg, msg
            assert 'maintenance window on friday' in msg and 'no change was made' in msg, msg
            assert 'pvesh delete /nodes/<node>/network' in msg
            assert pvesim.writes(mark) == []
    assert pvesim.pve.network_pending('pve2')              # the other admin's edit is still there, not applied
    assert 'comments' not in pvesim.pve.node_networks['pve2']['running']['vmbr0']
    # A bridge only on nodes without staged changes reloads only those: allowed
    assert run_module(vnet, dict(pve_conn, type='bridge', bridge='vmbr92', nodes=['pve1', 'pve3']))['changed']
    assert pvesim.pve.network_pending('pve2')
    proxmoxer_api.nodes('pve2').network.delete()          # the admin reverts it
    assert run_module(vnet, plan_args(pve_conn, PRIMARY))['changed']


def test_a_bridge_written_but_never_applied_is_not_reported_ok(pvesim, pve_conn, proxmoxer_api):
    """The node listing shows interfaces.new (pve-common INotify.pm read_file), so a bridge an interrupted run wrote
    and never applied looks present: the staged diff says it is not there."""
    proxmoxer_api.nodes('pve1').network.post(iface='vmbr94', type='bridge', autostart=1)   # the dead run's write
    args = dict(pve_conn, type='bridge', bridge='vmbr94', nodes=['pve1'])
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, args)
    msg = info.value.result['msg']
    assert 'staged but not applied on pve1 (' in msg and 'vmbr94' in msg and 'nothing to write' in msg, msg
    assert 'vmbr94' not in pvesim.pve.node_networks['pve1']['running']
    proxmoxer_api.nodes('pve1').network.put()                  # applied by hand
    assert not run_module(vnet, args)['changed']


def test_updating_the_nodes_own_bridge_keeps_its_address_and_ports(pvesim, pve_conn):
    """pve-manager API2/Network.pm update_network sets method and families from the request alone: a comment change
    sent without the bridge's cidr would turn the node's vmbr0 (its address, its gateway) into `inet manual`. And a
    new port list for a bridge with an address could cut the node off: refused before any write."""
    before = dict(pvesim.pve.node_networks['pve1']['running']['vmbr0'])
    args = dict(pve_conn, type='bridge', bridge='vmbr0', nodes=['pve1'], bridge_ports=['eno1'], comment='uplink')
    result = run_module(vnet, args)
    assert result['changes'] == ['update bridge vmbr0 on pve1']
    after = pvesim.pve.node_networks['pve1']['running']['vmbr0']
    assert after['comments'] == 'uplink' and after['method'] == 'static' and after['families'] == ['inet']
    assert (after['cidr'], after['gateway'], after['bridge_ports']) == (before['cidr'], before['gateway'], 'eno1')
    assert not run_module(vnet, args)['changed']
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(vnet, dict(args, bridge_ports=[]), check_mode=check_mode)
        msg = info.value.result['msg']
        assert 'vmbr0 on pve1 carries address {0}, gateway {1}: its ports (eno1) are not changed to (none)'.format(
            before['cidr'], before['gateway']) in msg and 'no change was made' in msg, msg
        assert pvesim.writes(mark) == []
    assert pvesim.pve.node_networks['pve1']['running']['vmbr0']['bridge_ports'] == 'eno1'


def test_networks_written_but_not_applied_are_not_reported_ok(pvesim, pve_conn, proxmoxer_api):
    """A run killed between its SDN writes and the apply (no rollback ran) leaves the next run nothing to write, since
    the listings show the written config; PVE runs without it. pending=1 shows it: a clear failure, not 'ok'."""
    assert run_module(vnet, plan_args(pve_conn, PRIMARY))['changed']
    sdn_api = proxmoxer_api.cluster.sdn
    token = sdn_api.lock.post()                             # the dead run's writes, under its lock, never applied
    sdn_api.zones.post(zone=SHADOW['zone'], type='simple', **{'lock-token': token})
    sdn_api.vnets.post(vnet=SHADOW['vnet'], zone=SHADOW['zone'], alias=SHADOW['alias'], **{'lock-token': token})
    sdn_api.vnets(SHADOW['vnet']).subnets.post(subnet=SHADOW['cidr'], type='subnet', **{'lock-token': token})
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW), check_mode=check_mode)
        msg = info.value.result['msg']
        assert 'written but not applied: zone {0} (new), vnet {1} (new)'.format(SHADOW['zone'], SHADOW['vnet']) in msg
        assert 'pvesh delete /cluster/sdn/lock --force 1' in msg and 'no change was made' in msg, msg
        assert pvesim.writes(mark) == []
    assert SHADOW['vnet'] not in sdn(pvesim)['vnets']
    sdn_api.put(**{'lock-token': token, 'release-lock': 1})   # the operator applies them
    assert SHADOW['vnet'] in sdn(pvesim)['vnets']
    assert not run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW))['changed']


def test_plan_bridge_entry_is_checked_not_created(pvesim, pve_conn):
    mark = pvesim.mark()
    entry = {'name': 'legacy', 'role': 'primary', 'twin_of': None, 'type': 'bridge', 'zone': None,
             'zone_type': None, 'zone_bridge': None, 'vnet': None, 'alias': 'shop-legacy', 'bridge': 'vmbr0',
             'vlan': 10, 'cidr': '192.0.2.0/24', 'gateway': None, 'isolated': False}
    assert not run_module(vnet, dict(pve_conn, networks=[entry]))['changed']
    assert pvesim.writes(mark) == []
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, dict(pve_conn, networks=[{'type': 'bridge', 'bridge': 'vmbr7'}]))
    assert 'vmbr7 on pve1' in info.value.result['msg']


def test_plan_keys_added_later_are_ignored(pvesim, pve_conn):
    # docs/plan.md: consumers ignore keys they do not know; a hand-written entry gets a warning instead.
    result = run_module(vnet, plan_args(pve_conn, dict(PRIMARY, mtu=1400, dhcp=False)))
    assert result['changed'] and not result.get('warnings')
    mark = pvesim.mark()
    hand = dict(PRIMARY, mtu=1400)
    del hand['role']
    result = run_module(vnet, plan_args(pve_conn, hand))
    assert not result['changed'] and pvesim.writes(mark) == []
    assert 'unknown keys mtu are ignored' in str(result['warnings'])


def test_refused_apply_rolls_back_every_pending_change(pvesim, pve_conn):
    pvesim.pve.fail('PUT', '/cluster/sdn', 500, 'could not commit SDN config: disk full', times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY, VLAN))
    msg = info.value.result['msg']
    assert 'disk full' in msg and 'at step: apply' in msg and 'rolled back' in msg
    assert pvesim.pve.sdn_lock is None and not pvesim.pve.sdn_has_pending()
    assert pvesim.pve.sdn_config['zones'] == {}


VXLAN = {'name': 'front', 'role': 'shadow', 'twin_of': 'front', 'type': 'vnet', 'zone': 'sshovup3',
         'zone_type': 'vxlan', 'zone_bridge': None, 'vnet': 'sfro9qab', 'alias': 'shop-front (shadow)',
         'bridge': 'sfro9qab', 'vlan': None, 'cidr': '10.10.0.0/24', 'gateway': None, 'isolated': True,
         'vxlan_tag': 4880427}


def node_ips(pvesim):
    # The simulator's /cluster/status gives node i (sorted by name, from 1) the ip 192.0.2.<10 + i>.
    return sorted('192.0.2.{0}'.format(10 + i) for i in range(1, len(pvesim.pve.nodes) + 1))


def test_vxlan_shadow_twin_peers_from_cluster_status(pvesim, pve_conn):
    result = run_module(vnet, plan_args(pve_conn, PRIMARY, VXLAN))
    assert result['changed'] and 'create zone sshovup3' in result['changes']
    running = sdn(pvesim)
    zone = running['zones']['sshovup3']
    assert zone['type'] == 'vxlan' and sorted(zone['peers'].split(',')) == node_ips(pvesim)
    assert 'bridge' not in zone and 'exitnodes' not in zone
    assert str(running['vnets']['sfro9qab']['tag']) == '4880427'
    subnet = running['subnets']['sshovup3-10.10.0.0-24']
    assert 'gateway' not in subnet and not int(subnet.get('snat', 0))  # isolated: no gateway, no SNAT
    assert result['diff']['after']['sdn']['sfro9qab']['zone']['peers'] == node_ips(pvesim)
    mark = pvesim.mark()
    assert not run_module(vnet, plan_args(pve_conn, PRIMARY, VXLAN))['changed']
    # Peers compare as a set of addresses: the same ones in another order and spelling change nothing.
    shuffled = dict(VXLAN, peers=list(reversed(node_ips(pvesim))))
    assert not run_module(vnet, plan_args(pve_conn, PRIMARY, shuffled))['changed']
    assert pvesim.writes(mark) == []
    fewer = dict(VXLAN, peers=node_ips(pvesim)[:2])
    result = run_module(vnet, plan_args(pve_conn, PRIMARY, fewer))
    assert result['changes'] == ['update zone sshovup3']
    assert sdn(pvesim)['zones']['sshovup3']['peers'] == ','.join(node_ips(pvesim)[:2])
    assert run_module(vnet, plan_args(pve_conn, PRIMARY, VXLAN))['changes'] == ['update zone sshovup3']


def test_vxlan_shadow_twin_check_mode_and_absent(pvesim, pve_conn):
    mark = pvesim.mark()
    result = run_module(vnet, plan_args(pve_conn, VXLAN), check_mode=True)
    assert result['changed'] and pvesim.writes(mark) == []
    run_module(vnet, plan_args(pve_conn, VXLAN))
    gone = run_module(vnet, plan_args(pve_conn, dict(VXLAN, state='absent')))
    assert gone['changed'] and 'remove zone sshovup3' in gone['changes']
    assert 'sshovup3' not in sdn(pvesim)['zones']


@pytest.mark.parametrize('entry,match', [
    (dict(VXLAN, vxlan_tag=None), r'needs a tag \(the VNI\)'),
    (dict(VXLAN, vxlan_tag=16777216), r'needs a tag \(the VNI\)'),
    (dict(VXLAN, peers=['10.0.0.1', 'pve2']), 'not an IP address'),
    (dict(PRIMARY, peers=['10.0.0.1']), 'peers only apply to a vxlan zone'),
    (dict(VXLAN, zone_type='evpn'), 'simple or vlan, or vxlan'),
])
def test_vxlan_bad_entries_are_refused_before_any_write(pvesim, pve_conn, entry, match):
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed, match=match):
        run_module(vnet, plan_args(pve_conn, entry))
    assert pvesim.writes(mark) == []


# ------------------------------------------------------------------- a network that guests still use

def _vm_on(proxmoxer_api, vmid, node, bridge, name):
    """A linked clone of the lab's golden template on ``node`` with net0 on ``bridge``."""
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=vmid, name=name, target=node)
    proxmoxer_api.nodes(node).qemu(vmid).config.put(net0='virtio,bridge={0}'.format(bridge))


def test_removing_a_vnet_guests_use_is_refused_naming_them(pvesim, pve_conn, proxmoxer_api):
    run_module(vnet, plan_args(pve_conn, PRIMARY))
    _vm_on(proxmoxer_api, 100, 'pve1', 'front9q0', 'web-1')
    _vm_on(proxmoxer_api, 101, 'pve2', 'front9q0', 'web-2')
    gone = dict(PRIMARY, state='absent')
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(vnet, plan_args(pve_conn, gone), check_mode=check_mode)
        msg = info.value.result['msg']
        assert 'vnet front9q0 is used by VM 100 (web-1) on pve1, VM 101 (web-2) on pve2' in msg
        assert 'no change was made' in msg
        assert pvesim.writes(mark) == []
    assert 'front9q0' in sdn(pvesim)['vnets']
    # Once no guest uses it, it goes.
    proxmoxer_api.nodes('pve1').qemu(100).config.put(net0='virtio,bridge=vmbr0')
    proxmoxer_api.nodes('pve2').qemu(101).delete()
    assert run_module(vnet, plan_args(pve_conn, gone))['changed']
    assert 'front9q0' not in sdn(pvesim)['vnets']


def test_removing_a_node_bridge_a_guest_uses_there_is_refused(pvesim, pve_conn, proxmoxer_api):
    args = dict(pve_conn, type='bridge', bridge='vmbr90', nodes=['pve1', 'pve2'])
    run_module(vnet, args)
    _vm_on(proxmoxer_api, 100, 'pve2', 'vmbr90', 'web-1')
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed, match=r'bridge vmbr90 on pve2 is used by VM 100 \(web-1\) on pve2'):
        run_module(vnet, dict(args, state='absent'))
    assert pvesim.writes(mark) == []
    # On pve1 nothing uses it.
    assert run_module(vnet, dict(args, state='absent', nodes=['pve1']))['changed']
    assert 'vmbr90' not in pvesim.pve.node_networks['pve1']['running']


def test_removing_a_node_bridge_a_vlan_zone_rides_on_is_refused(pvesim, pve_conn):
    """pve-network VlanPlugin find_bridge dies for a missing bridge and Zones.pm only warns and skips the zone's
    vnets at the next reload: the bridge must not go while a zone uses it (on that node), unless the run removes the
    zone too."""
    bridge = dict(pve_conn, type='bridge', bridge='vmbr93', nodes=['pve1', 'pve2', 'pve3'])
    run_module(vnet, bridge)
    zone = dict(VLAN, zone='shopv93', zone_bridge='vmbr93', vnet='backv93')
    run_module(vnet, plan_args(pve_conn, zone))
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(vnet, dict(bridge, state='absent', nodes=['pve2']), check_mode=check_mode)
        assert 'SDN zones ride on: zone shopv93 (vlan on vmbr93)' in info.value.result['msg']
        assert pvesim.writes(mark) == []
    assert 'vmbr93' in pvesim.pve.node_networks['pve2']['running']
    run_module(vnet, plan_args(pve_conn, dict(zone, state='absent')))
    assert run_module(vnet, dict(bridge, state='absent'))['changed']


# ------------------------------------------------------------------------- what the apply really did

@pytest.mark.parametrize('counted', [False, True], ids=['task-ok', 'task-warnings'])
def test_apply_that_could_not_reach_a_node_fails_naming_node_and_vnets(pvesim, pve_conn, counted):
    # pve-network API2/Network/SDN.pm reload only warns; the task ends OK (pvedaemon) or WARNINGS: 1 (log_warn).
    pvesim.pve.sdn_warnings_counted = counted
    pvesim.pve.fail_sdn_reload('pve2', times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY, SHADOW))
    msg = info.value.result['msg']
    assert 'node pve2: the network reload could not be started' in msg and "Can't connect to pve2" in msg
    assert 'vnets front9q0, sfro3mzq are not applied there' in msg and 'apply SDN again' in msg
    assert 'pve1' not in msg and 'pve3' not in msg


def test_node_reload_that_failed_is_reported(pvesim, pve_conn):
    pvesim.pve.fail_sdn_reload('pve3', how='ifreload', times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, PRIMARY))
    msg = info.value.result['msg']
    assert "node pve3: the network reload failed" in msg and 'ifreload -a' in msg and 'front9q0' in msg


def test_vlan_zone_on_a_missing_bridge_is_refused_before_any_write(pvesim, pve_conn):
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, dict(VLAN, zone_bridge='vmbr5')), check_mode=True)
    msg = info.value.result['msg']
    assert 'bridge vmbr5 of vlan zone shopvl (vnets backvl) is missing or not up on node(s) pve1, pve2, pve3' in msg
    with pytest.raises(ModuleFailed, match='bridge vmbr5 of vlan zone shopvl'):
        run_module(vnet, plan_args(pve_conn, dict(VLAN, zone_bridge='vmbr5')))
    assert pvesim.writes(mark) == []


def test_vnet_pve_skipped_on_a_node_fails_the_run(pvesim, pve_conn):
    # The bridge is up when the module looks, and gone on pve2 when PVE applies (another admin, a failed NIC):
    # pve-network Zones.pm generate_etc_network_config skips the vnet there with a warning only.
    bridge = dict(type='bridge', bridge='vmbr5', nodes=['pve1', 'pve2', 'pve3'])
    run_module(vnet, plan_args(pve_conn, bridge))
    pve = pvesim.pve
    reload = pve.sdn_node_reload

    def racing_reload(node, log):
        if node == 'pve2':
            for where in ('running', 'config'):
                pve.node_networks[node][where].pop('vmbr5', None)
        return reload(node, log)
    pve.sdn_node_reload = racing_reload
    with pytest.raises(ModuleFailed) as info:
        run_module(vnet, plan_args(pve_conn, dict(VLAN, zone_bridge='vmbr5')))
    msg = info.value.result['msg']
    assert "vnet backvl was not applied on node pve2: zone shopvl: can't find bridge vmbr5" in msg
    assert 'pve1' not in msg and 'pve3' not in msg


def test_node_bridges_are_applied_before_the_sdn_apply_that_needs_them(pvesim, pve_conn):
    bridge = dict(type='bridge', bridge='vmbr7', nodes=['pve1', 'pve2', 'pve3'], comment='uplink')
    vlan = dict(VLAN, zone_bridge='vmbr7')
    mark = pvesim.mark()
    result = run_module(vnet, plan_args(pve_conn, vlan, bridge))
    assert result['changed'] and sorted(result['sdn_apply']['nodes']) == ['pve1', 'pve2', 'pve3']
    applies = [p for m, p, b in pvesim.writes(mark) if m == 'PUT' and p.endswith(('/network', '/cluster/sdn'))]
    assert applies == ['/api2/json/nodes/pve1/network', '/api2/json/nodes/pve2/network',
                       '/api2/json/nodes/pve3/network', '/api2/json/cluster/sdn']
    # No node skipped the vnet (the reload logs say so), and a rerun changes nothing.
    logs = [line for t in pvesim.pve.tasklog if t['type'] == 'srvreload' for line in t['log']]
    assert not [line for line in logs if "can't find bridge" in line]
    mark = pvesim.mark()
    assert not run_module(vnet, plan_args(pve_conn, vlan, bridge))['changed']
    assert pvesim.writes(mark) == []

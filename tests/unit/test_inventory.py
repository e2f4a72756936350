"""Unit tests of plugins/module_utils/core/inventory.py: the grouping and host variables of the pve inventory plugin."""
import json

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import inventory as inventory_utils


def desc(meta, text='Web front end'):
    return '{0}\n\n<!-- shadownet:begin -->\n{1}\n<!-- shadownet:end -->\n'.format(
        text, json.dumps(meta, sort_keys=True, separators=(',', ':')))


def res(vmid, name, node, status='running', tags='', **extra):
    item = {'type': 'qemu', 'id': 'qemu/{0}'.format(vmid), 'vmid': vmid, 'name': name, 'node': node,
            'status': status, 'maxcpu': 1, 'maxmem': 512 * inventory_utils.MiB, 'tags': tags}
    item.update(extra)
    return item


IFACES = [
    {'name': 'lo', 'hardware-address': '00:00:00:00:00:00',
     'ip-addresses': [{'ip-address': '127.0.0.1', 'ip-address-type': 'ipv4', 'prefix': 8},
                      {'ip-address': '::1', 'ip-address-type': 'ipv6', 'prefix': 128}]},
    {'name': 'eth0', 'hardware-address': 'BC:24:11:00:00:01',
     'ip-addresses': [{'ip-address': 'fe80::1', 'ip-address-type': 'ipv6', 'prefix': 64},
                      {'ip-address': '192.168.5.20', 'ip-address-type': 'ipv4', 'prefix': 24}]},
    {'name': 'eth1', 'hardware-address': 'bc:24:11:00:00:02',
     'ip-addresses': [{'ip-address': '10.10.0.11', 'ip-address-type': 'ipv4', 'prefix': 24},
                      {'ip-address': '2001:db8::11', 'ip-address-type': 'ipv6', 'prefix': 64}]},
]


def raw_cluster():
    return {
        'cluster_status': [{'type': 'cluster', 'name': 'lab'},
                           {'type': 'node', 'name': 'pve1', 'ip': '192.0.2.11'},
                           {'type': 'node', 'name': 'pve2', 'ip': '192.0.2.12'}],
        'nodes': [{'node': 'pve2', 'status': 'online', 'maxcpu': 8, 'maxmem': 16384 * inventory_utils.MiB},
                  {'node': 'pve1', 'status': 'online', 'maxcpu': 8, 'maxmem': 16384 * inventory_utils.MiB}],
        'resources': [
            res(100, 'shop-web-1', 'pve1', tags='shadownet;sn-shop;sn-web;sn-primary'),
            res(101, 'shop-web-shadow', 'pve2', tags='sn-shadow;sn-shop;sn-web;shadownet'),
            res(102, 'legacy', 'pve1', tags='prod'),
            res(9000, 'golden', 'pve1', status='stopped', tags='golden', template=1),
            {'type': 'storage', 'id': 'storage/pve1/local', 'node': 'pve1'},
            res(103, 'shop-db-1', 'pve2', status='stopped', tags='shadownet sn-shop sn-db sn-primary'),
        ],
        # JSON caches give string keys; build_inventory must take both.
        'configs': {
            '100': {'name': 'shop-web-1', 'cores': 2, 'sockets': 1, 'memory': '2048', 'agent': '1',
                    'tags': 'shadownet;sn-shop;sn-web;sn-primary',
                    'net0': 'virtio=BC:24:11:00:00:01,bridge=front9q0',
                    'description': desc({'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web',
                                         'index': 1, 'shadowed_by': 'shop-web-shadow', 'vip': '10.10.0.100/24'})},
            101: {'name': 'shop-web-shadow', 'cores': 1, 'memory': 512, 'agent': 'enabled=1',
                  'tags': 'shadownet;sn-shop;sn-web;sn-shadow',
                  'net0': 'virtio=BC:24:11:00:00:01,bridge=sfro3mzq',
                  'net1': 'virtio=BC:24:11:00:00:02,bridge=front9q0',
                  'description': desc({'v': 1, 'role': 'shadow', 'template': 'shop', 'service': 'web',
                                       'index': 1, 'shadows': ['shop-web-1'], 'vip': '10.10.0.100/24',
                                       'scaling': {'cooldown_until': 1700000000}})},
            '103': {'name': 'shop-db-1', 'cores': 4, 'sockets': 2, 'memory': 'current=4096',
                    'ipconfig0': 'ip=10.10.1.5/24,gw=10.10.1.1', 'ipconfig1': 'ip=dhcp'},
        },
        'agent': {'100': IFACES, 101: IFACES},
    }


def test_parse_meta_finds_the_block_and_keeps_unmanaged_descriptions_empty():
    assert inventory_utils.parse_meta(desc({'role': 'shadow', 'shadows': ['a']})) == {'role': 'shadow', 'shadows': ['a']}
    assert inventory_utils.parse_meta('note <!-- shadownet:begin -->{"v":1}<!-- shadownet:end -->') == {'v': 1}
    assert inventory_utils.parse_meta('just a note') == {}
    assert inventory_utils.parse_meta(None) == {}
    with pytest.raises(inventory_utils.MetaError, match='not valid JSON'):
        inventory_utils.parse_meta('<!-- shadownet:begin -->{oops<!-- shadownet:end -->')
    with pytest.raises(inventory_utils.MetaError, match='not a JSON object'):
        inventory_utils.parse_meta('<!-- shadownet:begin -->[1]<!-- shadownet:end -->')


def test_identity_from_metadata_then_from_tags_and_name():
    tags = {'shadownet', 'sn-shop', 'sn-web', 'sn-primary'}
    assert inventory_utils.identity('x', tags, {'template': 't', 'service': 's', 'role': 'shadow'}) == ('t', 's', 'shadow')
    # No metadata: the name orders the two sn- tags (sorted, 'shop' and 'web' would be ambiguous otherwise).
    assert inventory_utils.identity('shop-web-3', tags, {}) == ('shop', 'web', 'primary')
    assert inventory_utils.identity('web-shop-1', tags, {}) == ('web', 'shop', 'primary')
    assert inventory_utils.identity('a-b-c-shadow', {'shadownet', 'sn-a-b', 'sn-c', 'sn-shadow'}, {}) == ('a-b', 'c', 'shadow')
    assert inventory_utils.identity('odd', {'shadownet', 'sn-shop'}, {}) == ('shop', None, None)
    assert inventory_utils.identity('odd', {'shadownet', 'sn-primary', 'sn-shadow'}, {}) == (None, None, None)


def test_group_names_are_safe():
    assert inventory_utils.service_group('my-shop', 'web-api') == 'sn_my_shop_web_api'
    assert inventory_utils.node_group('pve-a.lan') == 'pve_node_pve_a_lan'


def test_address_choice_skips_loopback_and_link_local_and_prefers_networks():
    found = inventory_utils.agent_addresses(IFACES)
    assert found == [('eth0', 'bc:24:11:00:00:01', '192.168.5.20'), ('eth1', 'bc:24:11:00:00:02', '10.10.0.11'),
                     ('eth1', 'bc:24:11:00:00:02', '2001:db8::11')]
    addresses = [a for dummy, dummy2, a in found]
    assert inventory_utils.choose_address(addresses) == '192.168.5.20'
    nets = inventory_utils.parse_networks(['2001:db8::/64', '10.10.0.0/24'])
    assert inventory_utils.choose_address(addresses, nets) == '2001:db8::11'
    assert inventory_utils.choose_address(addresses, inventory_utils.parse_networks(['10.10.0.5/24'])) == '10.10.0.11'
    assert inventory_utils.choose_address(['2001:db8::11']) == '2001:db8::11'
    assert inventory_utils.choose_address([]) is None
    with pytest.raises(ValueError, match="'10.10.0/33'"):
        inventory_utils.parse_networks(['10.10.0/33'])


def test_config_addresses_take_static_cloud_init_only():
    assert inventory_utils.config_addresses({'ipconfig1': 'ip=10.0.0.6/24', 'ipconfig0': 'ip=dhcp,ip6=2001:db8::5/64',
                                             'ipconfig10': 'ip=10.0.9.1/24'}) == [(0, '2001:db8::5'), (1, '10.0.0.6'),
                                                                                  (10, '10.0.9.1')]


def test_wants_agent_only_for_running_guests_with_the_agent_enabled():
    assert inventory_utils.wants_agent({'status': 'running'}, {'agent': '1'})
    assert inventory_utils.wants_agent({'status': 'running'}, {'agent': 'enabled=1,fstrim_cloned_disks=1'})
    assert not inventory_utils.wants_agent({'status': 'running'}, {'agent': '0'})
    # PVE stores the agent property string as written: `enabled` may come later, booleans in any spelling.
    assert inventory_utils.wants_agent({'status': 'running'}, {'agent': 'fstrim_cloned_disks=1,enabled=True'})
    assert not inventory_utils.wants_agent({'status': 'running'}, {'agent': 'fstrim_cloned_disks=1,enabled=0'})
    assert not inventory_utils.wants_agent({'status': 'running'}, {'agent': 'type=virtio'})
    assert not inventory_utils.wants_agent({'status': 'running'}, {})
    assert not inventory_utils.wants_agent({'status': 'stopped'}, {'agent': '1'})


def test_guests_to_read_are_managed_non_templates():
    raw = raw_cluster()
    assert inventory_utils.guests_to_read(raw['resources']) == [('pve1', 100), ('pve2', 101), ('pve2', 103)]
    assert inventory_utils.guests_to_read(raw['resources'], managed_only=False) == [
        ('pve1', 100), ('pve2', 101), ('pve1', 102), ('pve2', 103)]


def test_build_inventory_groups_and_hostvars():
    result = inventory_utils.build_inventory(raw_cluster(), networks=['10.10.0.0/24'])
    assert result['warnings'] == []
    assert result['groups'] == {
        'shadownet': {'hosts': [], 'children': ['sn_shop']},
        'sn_shop': {'hosts': [], 'children': ['sn_shop_db', 'sn_shop_web']},
        'sn_shop_web': {'hosts': ['shop-web-1', 'shop-web-shadow'], 'children': []},
        'sn_shop_db': {'hosts': ['shop-db-1'], 'children': []},
        'primary': {'hosts': ['shop-db-1', 'shop-web-1'], 'children': []},
        'shadow': {'hosts': ['shop-web-shadow'], 'children': []},
        'pve_node_pve1': {'hosts': ['shop-web-1'], 'children': []},
        'pve_node_pve2': {'hosts': ['shop-db-1', 'shop-web-shadow'], 'children': []},
        'pve_nodes': {'hosts': ['pve1', 'pve2'], 'children': []},
    }
    hosts = result['hosts']
    assert sorted(hosts) == ['pve1', 'pve2', 'shop-db-1', 'shop-web-1', 'shop-web-shadow']
    assert hosts['shop-web-1'] == {
        'pve_vmid': 100, 'pve_name': 'shop-web-1', 'pve_node': 'pve1', 'pve_status': 'running', 'pve_cores': 2,
        'pve_memory': 2048, 'pve_tags': ['shadownet', 'sn-primary', 'sn-shop', 'sn-web'], 'pve_lock': None,
        'sn_managed': True, 'pve_agent_addresses': ['192.168.5.20', '10.10.0.11', '2001:db8::11'],
        'ansible_host': '10.10.0.11', 'sn_template': 'shop', 'sn_service': 'web', 'sn_role': 'primary',
        'sn_index': 1, 'sn_vip': '10.10.0.100/24', 'sn_shadows': [], 'sn_shadowed_by': 'shop-web-shadow',
        'sn_meta': {'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web', 'index': 1,
                    'shadowed_by': 'shop-web-shadow', 'vip': '10.10.0.100/24'}}
    shadow = hosts['shop-web-shadow']
    assert shadow['sn_shadows'] == ['shop-web-1'] and shadow['sn_shadowed_by'] is None
    assert shadow['sn_meta']['scaling'] == {'cooldown_until': 1700000000}
    assert (shadow['pve_cores'], shadow['pve_memory']) == (1, 512)
    db = hosts['shop-db-1']
    # No metadata block: identity from tags and name; sizes from the config (sockets x cores, memory string).
    assert (db['sn_template'], db['sn_service'], db['sn_role'], db['sn_index']) == ('shop', 'db', 'primary', None)
    assert (db['pve_cores'], db['pve_memory'], db['pve_status']) == (8, 4096, 'stopped')
    assert db['ansible_host'] == '10.10.1.5' and db['pve_agent_addresses'] == []
    assert hosts['pve1'] == {'pve_node': 'pve1', 'pve_node_status': 'online', 'pve_cpus': 8, 'pve_memory': 16384,
                             'pve_guests': ['shop-web-1'], 'ansible_host': '192.0.2.11'}
    assert hosts['pve2']['pve_guests'] == ['shop-db-1', 'shop-web-shadow']


def test_a_shadow_is_never_addressed_on_its_mirror_nic():
    # The shadow's eth0 (net0, on the isolated twin) has the same MAC pattern and CIDR as a primary NIC; only
    # net1 (VRRP, on the primary network) is reachable, whatever the networks preference says.
    raw = raw_cluster()
    raw['agent']['101'] = [
        {'name': 'eth0', 'hardware-address': 'bc:24:11:00:00:01',
         'ip-addresses': [{'ip-address': '10.10.0.11', 'ip-address-type': 'ipv4', 'prefix': 24}]},
        {'name': 'eth1', 'hardware-address': 'bc:24:11:00:00:02',
         'ip-addresses': [{'ip-address': '10.10.0.50', 'ip-address-type': 'ipv4', 'prefix': 24}]}]
    del raw['agent'][101]
    hosts = inventory_utils.build_inventory(raw, networks=['10.10.0.0/24'])['hosts']
    assert hosts['shop-web-shadow']['ansible_host'] == '10.10.0.50'
    assert hosts['shop-web-shadow']['pve_agent_addresses'] == ['10.10.0.11', '10.10.0.50']
    assert hosts['shop-web-1']['ansible_host'] == '10.10.0.11'


def test_unmanaged_guests_and_no_nodes():
    result = inventory_utils.build_inventory(raw_cluster(), managed_only=False, add_nodes=False)
    assert 'pve_nodes' not in result['groups']
    assert result['groups']['pve_node_pve1'] == {'hosts': ['legacy', 'shop-web-1'], 'children': []}
    legacy = result['hosts']['legacy']
    assert legacy['sn_managed'] is False and 'sn_role' not in legacy
    # Read only for managed guests by default: no config, so sizes come from /cluster/resources, with a warning.
    assert (legacy['pve_cores'], legacy['pve_memory']) == (1, 512)
    assert any('VM 102 (legacy)' in w for w in result['warnings'])
    assert 'golden' not in result['hosts']
    # Without a networks preference, IPv4 first in agent order.
    assert result['hosts']['shop-web-1']['ansible_host'] == '192.168.5.20'


def test_damaged_metadata_duplicate_names_and_node_name_clash_are_warnings():
    raw = raw_cluster()
    raw['configs']['100']['description'] = '<!-- shadownet:begin -->{"role": <!-- shadownet:end -->'
    raw['resources'].append(res(104, 'shop-web-1', 'pve2', tags='shadownet;sn-shop;sn-web;sn-primary'))
    raw['resources'].append(res(105, 'pve1', 'pve2', tags='shadownet;sn-shop'))
    result = inventory_utils.build_inventory(raw)
    warnings = '\n'.join(result['warnings'])
    assert 'VM 100 (shop-web-1): the shadownet block in the description is not valid JSON' in warnings
    assert "'shop-web-1' is used by vmids 100 and 104" in warnings
    assert "node 'pve1' has the name of a VM" in warnings
    hosts = result['hosts']
    # Grouped by tags and name instead.
    assert (hosts['shop-web-1']['sn_template'], hosts['shop-web-1']['sn_service']) == ('shop', 'web')
    assert hosts['shop-web-1']['sn_meta'] == {}
    assert 'shop-web-1-104' in result['groups']['sn_shop_web']['hosts']
    assert result['groups']['sn_shop']['hosts'] == ['pve1']
    assert result['groups']['pve_nodes']['hosts'] == ['pve2']


def test_offline_node_guests_have_no_config_but_are_listed():
    raw = raw_cluster()
    raw['nodes'][0]['status'] = 'offline'
    raw['resources'][1]['status'] = 'unknown'
    del raw['configs'][101]
    del raw['agent'][101]
    result = inventory_utils.build_inventory(raw)
    shadow = result['hosts']['shop-web-shadow']
    assert shadow['pve_status'] == 'unknown' and 'ansible_host' not in shadow
    assert (shadow['sn_template'], shadow['sn_service'], shadow['sn_role']) == ('shop', 'web', 'shadow')
    assert result['hosts']['pve2']['pve_node_status'] == 'offline'
    assert result['warnings'] == []


def test_build_inventory_is_deterministic_and_json_round_trips():
    raw = raw_cluster()
    first = inventory_utils.build_inventory(raw, networks=['10.10.0.0/24'])
    again = inventory_utils.build_inventory(json.loads(json.dumps(raw)), networks=['10.10.0.0/24'])
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)


def test_metadata_fields_of_the_wrong_type_are_ignored_with_a_warning():
    """A block edited by hand with valid JSON but other types: the inventory of the whole cluster was lost to one
    VM (`"shadows": 5` raised TypeError); now those fields are ignored, named in a warning, and the VM is grouped
    by what is left and by its tags."""
    raw = raw_cluster()
    raw['configs']['100']['description'] = desc({'v': 1, 'role': ['primary'], 'template': 'shop', 'service': 7,
                                                 'index': '1', 'shadows': 5, 'shadowed_by': 'shop-web-shadow'})
    result = inventory_utils.build_inventory(raw)
    assert result['warnings'] == ["VM 100 (shop-web-1): metadata field(s) index, role, service, shadows of the wrong "
                                  "type (edited by hand?) are ignored; the next build rewrites them"]
    web1 = result['hosts']['shop-web-1']
    assert (web1['sn_template'], web1['sn_service'], web1['sn_role']) == ('shop', 'web', 'primary')   # from tags
    assert web1['sn_shadows'] == [] and web1['sn_index'] is None and web1['sn_shadowed_by'] == 'shop-web-shadow'
    assert 'shop-web-1' in result['groups']['sn_shop_web']['hosts']

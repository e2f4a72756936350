"""Property strings compared as structures (pure)."""
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr


def test_parse_net_model_mac_and_options():
    net = propstr.parse_net('virtio=bc:24:11:aa:bb:cc,bridge=vmbr0,tag=10,firewall=1')
    assert net == {'model': 'virtio', 'macaddr': 'BC:24:11:AA:BB:CC', 'bridge': 'vmbr0', 'tag': '10',
                   'firewall': '1'}


def test_format_net_roundtrip_in_pve_order():
    text = 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=10'
    assert propstr.format_net(propstr.parse_net(text)) == 'virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=10'


def test_key_order_and_generated_mac_do_not_count_as_difference():
    current = propstr.parse_net('virtio=BC:24:11:AA:BB:CC,firewall=0,bridge=vmbr1')
    assert not propstr.net_differs(current, {'model': 'virtio', 'bridge': 'vmbr1'})
    assert not propstr.net_differs(current, {'bridge': 'vmbr1', 'link_down': False})


def test_vlan_tag_and_link_down_changes_are_detected():
    current = propstr.parse_net('virtio=BC:24:11:AA:BB:CC,bridge=vmbr1,tag=10')
    assert propstr.net_differs(current, {'bridge': 'vmbr1', 'tag': 20})
    assert propstr.net_differs(current, {'bridge': 'vmbr1', 'tag': None})
    assert propstr.net_differs(current, {'bridge': 'vmbr1', 'link_down': True})


def test_merge_keeps_mac():
    current = propstr.parse_net('virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,tag=10')
    merged = propstr.merge_net(current, {'bridge': 'snshop1', 'tag': None, 'link_down': True})
    assert propstr.format_net(merged) == 'virtio=BC:24:11:AA:BB:CC,bridge=snshop1,link_down=1'


def test_tags_as_sets():
    assert propstr.parse_tags('b;a,c d') == {'a', 'b', 'c', 'd'}
    assert propstr.format_tags({'sn-web', 'shadownet'}) == 'shadownet;sn-web'
    assert propstr.invalid_tags({'ok', 'bad tag', '-x'}) == ['-x', 'bad tag']


def test_memory_property_string():
    assert propstr.parse_memory('2048') == 2048
    assert propstr.parse_memory('current=4096') == 4096
    assert propstr.parse_memory(512) == 512

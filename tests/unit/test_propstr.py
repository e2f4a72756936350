"""Property strings compared as structures (pure)."""
import random

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


def test_a_merged_nic_written_and_read_back_satisfies_what_was_asked():
    """Random NICs as PVE holds them and random wishes: the NIC merge_net writes, once PVE prints it (format_net)
    and it is read back (parse_net), no longer differs from the wish, and merging again changes nothing (a second
    run reports changed=0), whatever the key order, case or boolean spelling of either side."""
    rnd = random.Random(7)
    values = {'bridge': ('vmbr0', 'snweb', 'vmbr1'), 'tag': (None, '10', '4094'), 'firewall': (None, True, 0, 'yes', '1'),
              'link_down': (None, False, 1, 'off', '0'), 'rate': (None, '12.5'), 'mtu': (None, '1450', 1),
              'queues': (None, '4')}
    for dummy in range(2000):
        mac = ':'.join('%02x' % rnd.randrange(256) for dummy2 in range(6))
        current = dict(model=rnd.choice(('virtio', 'e1000')), macaddr=rnd.choice((mac, mac.upper())),
                       **dict((k, rnd.choice(v)) for k, v in values.items() if rnd.random() < 0.6))
        current = propstr.parse_net(propstr.format_net(current))            # what PVE returns
        desired = dict((k, rnd.choice(v)) for k, v in values.items() if rnd.random() < 0.5)
        if rnd.random() < 0.3:
            desired['model'] = rnd.choice(('virtio', 'e1000'))
        written = propstr.merge_net(current, desired)
        read_back = propstr.parse_net(propstr.format_net(written))
        assert not propstr.net_differs(read_back, desired), (current, desired, read_back)
        assert read_back['macaddr'] == current['macaddr']                  # the MAC is kept unless asked for
        assert propstr.parse_net(propstr.format_net(propstr.merge_net(read_back, desired))) == read_back

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming


@pytest.mark.parametrize('value,ok', [
    ('shop', True), ('shop-net', True), ('a', True), ('a1', True), ('1shop', False), ('Shop', False),
    ('shop-', False), ('shop_net', False), ('', False), (None, False), (5, False),
])
def test_logical_name(value, ok):
    assert naming.is_logical_name(value) is ok


@pytest.mark.parametrize('value,ok', [
    ('shop', True), ('s1', True), ('abcdefgh', True), ('abcdefghi', False), ('a', False), ('1abc', False),
    ('ab-c', False), ('ab_c', False), ('AbC', False),
])
def test_sdn_id(value, ok):
    assert naming.is_sdn_id(value) is ok


@pytest.mark.parametrize('value,ok', [
    ('shadownet', True), ('sn-shop', True), ('_x', True), ('a+b.c-d', True), ('-x', False), ('a b', False),
    ('a;b', False), ('', False),
])
def test_tag(value, ok):
    assert naming.is_tag(value) is ok


def test_dns_label_length():
    assert naming.is_dns_label('a' * 63)
    assert not naming.is_dns_label('a' * 64)
    assert not naming.is_dns_label('shop.web')


def test_vm_names_and_tags_are_valid_pve_values():
    assert naming.primary_vm_name('shop', 'web', 3) == 'shop-web-3'
    assert naming.shadow_vm_name('shop', 'web') == 'shop-web-shadow'
    assert naming.vm_tags('shop', 'web', 'shadow') == ['shadownet', 'sn-shop', 'sn-web', 'sn-shadow']
    assert all(naming.is_tag(t) for t in naming.vm_tags('shop-2', 'web-front', 'primary'))
    assert naming.is_dns_label(naming.primary_vm_name('shop', 'web', 100))
    with pytest.raises(ValueError):
        naming.primary_vm_name('shop', 'web', 0)
    with pytest.raises(ValueError):
        naming.vm_tags('shop', 'web', 'backup')


def test_sdn_id_is_stable_valid_and_readable():
    first = naming.sdn_id('shopnet', 'vnet', 'shop', 'shopnet')
    assert first == naming.sdn_id('shopnet', 'vnet', 'shop', 'shopnet')
    assert naming.is_sdn_id(first) and len(first) == 8
    assert first.startswith('shop')
    assert naming.sdn_id('shopnet', 'vnet', 'shop', 'other') != first
    # prefixes that are all digits or symbols still give a valid id
    assert naming.is_sdn_id(naming.sdn_id('123', 'x'))
    assert naming.is_sdn_id(naming.sdn_id('a', 'x'))


def test_sdn_ids_collision_free_over_many_names():
    names = ['net%d' % i for i in range(400)]
    ids = naming.assign_sdn_ids([(n, 'net', ('vnet', 'shop', n)) for n in names])
    assert len(set(ids.values())) == len(names)
    assert all(naming.is_sdn_id(v) for v in ids.values())


def test_assign_sdn_ids_resolves_collisions_deterministically_and_avoids_reserved():
    taken = naming.sdn_id('shop', 'zone', 'shop')
    ids = naming.assign_sdn_ids([('z', 'shop', ('zone', 'shop'))], reserved={taken})
    assert ids['z'] != taken and naming.is_sdn_id(ids['z'])
    # identical hash inputs for two keys: both get distinct ids, independent of request order
    reqs = [('a', 'x', ('same',)), ('b', 'x', ('same',))]
    one = naming.assign_sdn_ids(reqs)
    two = naming.assign_sdn_ids(list(reversed(reqs)))
    assert one == two and one['a'] != one['b']


def test_ha_rule_id():
    assert naming.ha_rule_id('shop-2', 'web', 1, 'anti') == 'sn_shop_2_web_1_anti'
    assert naming.HA_RULE_ID_RE.match(naming.ha_rule_id('a', 'b'))


def test_vrids_unique_per_network_stable_and_in_range():
    groups = [('svc%d' % i, 'front' if i % 2 else 'back', None) for i in range(60)]
    vrids = naming.assign_vrids('shop', groups)
    assert vrids == naming.assign_vrids('shop', list(reversed(groups)))
    for network in ('front', 'back'):
        values = [vrids[s] for s, n, f in groups if n == network]
        assert len(values) == len(set(values))
        assert all(1 <= v <= 255 for v in values)


def test_vrids_honour_fixed_and_probe_around_them():
    seed = naming.vrid_seed('shop', 'web')
    vrids = naming.assign_vrids('shop', [('web', 'front', None), ('db', 'front', seed)])
    assert vrids['db'] == seed
    assert vrids['web'] == seed % 255 + 1
    with pytest.raises(ValueError):
        naming.assign_vrids('shop', [('a', 'n', 7), ('b', 'n', 7)])


def test_vrids_exhaustion():
    groups = [('s%d' % i, 'n', None) for i in range(256)]
    with pytest.raises(ValueError):
        naming.assign_vrids('t', groups)
    full = naming.assign_vrids('t', groups[:255])
    assert sorted(full.values()) == list(range(1, 256))


def test_network_alias():
    assert naming.network_alias('shop', 'front') == 'shop-front'
    assert naming.network_alias('shop', 'front', 'shadow') == 'shop-front (shadow)'

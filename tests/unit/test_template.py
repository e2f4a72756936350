# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
import copy
import os

import jinja2
import pytest
import yaml

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import template as template_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def render_lab(**variables):
    with open(LAB) as handle:
        text = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(handle.read()).render(**variables)
    return yaml.safe_load(text)


def base():
    return {
        'name': 'shop',
        'nodes': ['pve1', 'pve2', 'pve3'],
        'networks': [
            {'name': 'front', 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1'},
            {'name': 'back', 'cidr': '10.20.0.0/24'},
        ],
        'services': [
            {'name': 'web', 'template': 9000, 'instances': 2, 'cores': 4, 'memory': 8192,
             'networks': ['front'], 'vip': '10.10.0.100/24', 'critical': True},
            {'name': 'db', 'template': 'debian-12-golden', 'instances': 2, 'networks': ['back'],
             'vip': '10.20.0.50', 'critical': True},
        ],
        'shadow': {'replication': {'paths': ['/var/lib/app']}},
    }


def issues_of(data):
    tpl, issues = template_utils.validate_template(data, source='test.yml')
    assert tpl is None, 'expected the template to be rejected'
    return {i.path: i for i in issues}


def mutate(fn):
    data = base()
    fn(data)
    return data


# ---- the happy path ------------------------------------------------------------------------------------------

def test_base_is_valid_and_defaults_are_filled():
    tpl, issues = template_utils.validate_template(base())
    assert issues == []
    assert tpl['version'] == 1
    assert tpl['shadow']['size'] == 0.25 and tpl['shadow']['placement'] == 'spread'
    assert tpl['shadow']['mirror'] == {'mode': 'sampled', 'rate': 0.1, 'sampling': 'flow', 'direction': 'both'}
    assert tpl['scaling']['cpu'] == {'high': 0.7, 'low': 0.3, 'duration': 300}
    assert tpl['scaling']['net'] == {'high': 800_000_000, 'low': 100_000_000, 'duration': 300}
    assert tpl['scaling']['cooldown'] == {'up': 180, 'down': 600}
    # spread over nodes: the default zone is a VXLAN overlay (a simple zone is node-local)
    assert tpl['networks'][0]['type'] == 'vnet' and tpl['networks'][0]['zone_type'] == 'vxlan'
    # VIP without prefix takes the network's
    assert tpl['services'][1]['vip'] == '10.20.0.50/24'
    assert tpl['services'][1]['vip_network'] == 'back'
    assert tpl['services'][1]['template'] == 'debian-12-golden'
    # service-level settings are the merged effective ones
    assert tpl['services'][0]['replication']['paths'] == ['/var/lib/app']
    assert tpl['services'][0]['scaling']['mode'] == 'horizontal'


def test_units_are_normalised():
    data = base()
    data['services'][0]['memory'] = '8G'
    data['scaling'] = {'horizon': '1h', 'net': {'high': '1Gbit', 'low': '10Mbit', 'duration': '90s'},
                       'cpu': {'high': '75%'}}
    tpl = template_utils.normalise_template(data)
    assert tpl['services'][0]['memory'] == 8192
    assert tpl['scaling']['horizon'] == 3600
    assert tpl['scaling']['net'] == {'high': 10 ** 9, 'low': 10 ** 7, 'duration': 90}
    assert tpl['scaling']['cpu']['high'] == 0.75


def test_service_overrides_merge_over_template_settings():
    data = base()
    data['scaling'] = {'instances': {'min': 1, 'max': 4}, 'cpu': {'high': 0.9}}
    data['services'][1]['scaling'] = {'mode': 'vertical', 'cpu': {'low': 0.2}}
    data['services'][1]['replication'] = {'fidelity': 'full', 'interval': '1h'}
    tpl = template_utils.normalise_template(data)
    web, db = tpl['services']
    assert web['scaling']['mode'] == 'horizontal'
    assert web['scaling']['cpu'] == {'high': 0.9, 'low': 0.3, 'duration': 300}
    assert db['scaling']['mode'] == 'vertical'
    assert db['scaling']['cpu'] == {'high': 0.9, 'low': 0.2, 'duration': 300}
    assert db['scaling']['instances'] == {'min': 1, 'max': 4}
    assert db['replication']['fidelity'] == 'full' and db['replication']['interval'] == 3600
    assert web['replication']['fidelity'] == 'differential'


def test_normalisation_is_deterministic_and_does_not_touch_input():
    data = base()
    snapshot = copy.deepcopy(data)
    assert template_utils.normalise_template(data) == template_utils.normalise_template(copy.deepcopy(data))
    assert data == snapshot


def test_lab_template_renders_and_validates():
    tpl = template_utils.normalise_template(render_lab())
    assert tpl['name'] == 'shop'
    assert [n['name'] for n in tpl['networks']] == ['front', 'back']
    assert [s['name'] for s in tpl['services']] == ['web', 'db', 'worker']
    assert [s['critical'] for s in tpl['services']] == [True, True, False]
    assert all(s['instances'] == 2 for s in tpl['services'])
    assert [s['template'] for s in tpl['services']] == [9000, 9000, 'alpine-3-golden']
    assert tpl['nodes'] == ['pve1', 'pve2', 'pve3']


def test_lab_template_variables_change_the_result():
    tpl = template_utils.normalise_template(render_lab(shop_env='staging', shop_web_instances=3, shop_front_prefix='10.30'))
    assert tpl['name'] == 'shop-staging'
    assert tpl['services'][0]['instances'] == 3
    assert tpl['networks'][0]['cidr'] == '10.30.0.0/24'
    assert tpl['services'][0]['vip'] == '10.30.0.100/24'


def test_bridge_network_and_vlan_zone():
    data = base()
    data['networks'][0] = {'name': 'front', 'type': 'bridge', 'bridge': 'vmbr1', 'vlan': 20,
                           'cidr': '10.10.0.0/24'}
    data['networks'][1].update({'zone_type': 'vlan', 'vlan': 30, 'zone': 'shopz'})
    tpl = template_utils.normalise_template(data)
    assert tpl['networks'][0]['zone'] is None and tpl['networks'][0]['zone_type'] is None
    assert tpl['networks'][1]['zone_bridge'] == 'vmbr0'
    # pve_verify_iface is case-insensitive and allows underscores; 15 characters fit Linux.
    data['networks'][0]['bridge'] = 'Shop_Front_br15'
    data['networks'][1].update(zone_bridge='uplink_10', vlan=4094)
    tpl = template_utils.normalise_template(data)
    assert tpl['networks'][0]['bridge'] == 'Shop_Front_br15' and tpl['networks'][1]['zone_bridge'] == 'uplink_10'


def test_ipv6_network():
    data = base()
    data['networks'][1] = {'name': 'back', 'cidr': '2001:db8::/64', 'gateway': '2001:db8::1'}
    data['services'][1]['vip'] = '2001:db8::50'
    tpl = template_utils.normalise_template(data)
    assert tpl['services'][1]['vip'] == '2001:db8::50/64'


def test_no_replication_checks_without_critical_services():
    data = base()
    del data['shadow']
    for svc in data['services']:
        svc['critical'] = False
    tpl, issues = template_utils.validate_template(data)
    assert issues == []


# ---- malformed templates: each names the field path and what would be valid --------------------------------

MALFORMED = [
    ('unknown key', lambda d: d['services'][0].update(vipp='10.10.0.5'), 'services[0].vipp', 'vip'),
    ('missing required', lambda d: d['services'][1].pop('template'), 'services[1].template', 'vmid'),
    ('bad template name', lambda d: d.update(name='Shop_1'), 'name', 'lowercase'),
    ('wrong type', lambda d: d['services'][0].update(instances='many'), 'services[0].instances', 'integer'),
    ('out of range', lambda d: d['services'][0].update(cores=0), 'services[0].cores', '>= 1'),
    ('memory floor', lambda d: d['services'][0].update(memory='256M'), 'services[0].memory', '512'),
    ('undefined network', lambda d: d['services'][1].update(networks=['backend']), 'services[1].networks[0]',
     'back'),
    ('vip outside cidr', lambda d: d['services'][0].update(vip='10.99.0.5/24'), 'services[0].vip', '10.10.0.0/24'),
    ('vip prefix differs', lambda d: d['services'][0].update(vip='10.10.0.5/16'), 'services[0].vip',
     '10.10.0.5/24'),
    ('vip is the gateway', lambda d: d['services'][0].update(vip='10.10.0.1'), 'services[0].vip', 'gateway'),
    ('gateway outside cidr', lambda d: d['networks'][0].update(gateway='10.11.0.1'), 'networks[0].gateway',
     '10.10.0.0/24'),
    ('gateway is network address', lambda d: d['networks'][0].update(gateway='10.10.0.0'), 'networks[0].gateway',
     'host address'),
    ('cidr host bits', lambda d: d['networks'][0].update(cidr='10.10.0.1/24'), 'networks[0].cidr', 'CIDR'),
    ('overlapping cidrs', lambda d: d['networks'][1].update(cidr='10.10.0.128/25'), 'networks[1].cidr',
     'overlap'),
    ('duplicate network', lambda d: d['networks'][1].update(name='front', cidr='10.30.0.0/24'),
     'networks[1].name', 'unique'),
    ('duplicate service', lambda d: d['services'][1].update(name='web', vip=None), 'services[1].name', 'unique'),
    ('reserved service name', lambda d: d['services'][1].update(name='shadow'), 'services[1].name', 'primary'),
    ('instances.min > max', lambda d: d.update(scaling={'instances': {'min': 5, 'max': 3}}),
     'scaling.instances.min', 'min <= max'),
    ('instances outside bounds', lambda d: d.update(scaling={'instances': {'min': 3, 'max': 6}}),
     'services[0].instances', '3 to 6'),
    ('low >= high', lambda d: d.update(scaling={'memory': {'high': 0.5, 'low': 0.6}}), 'scaling.memory.low',
     'below high'),
    ('net low >= high', lambda d: d.update(scaling={'net': {'high': '100Mbit', 'low': '1Gbit'}}),
     'scaling.net.low', 'below high'),
    ('bad mode', lambda d: d.update(scaling={'mode': 'diagonal'}), 'scaling.mode', 'horizontal, vertical'),
    ('unparsable duration', lambda d: d.update(scaling={'horizon': 'soon'}), 'scaling.horizon', '5m'),
    ('unparsable rate', lambda d: d.update(scaling={'net': {'high': 'fast'}}), 'scaling.net.high', 'Mbit'),
    ('mirror rate zero', lambda d: d['shadow'].update(mirror={'rate': 0}), 'shadow.mirror.rate', '> 0'),
    ('mirror rate above one', lambda d: d['shadow'].update(mirror={'rate': 1.5}), 'shadow.mirror.rate', '<= 1'),
    ('bad mirror sampling', lambda d: d['shadow'].update(mirror={'sampling': 'bytes'}), 'shadow.mirror.sampling',
     'flow, packet'),
    ('mirror sampling not a string', lambda d: d['shadow'].update(mirror={'sampling': 1}), 'shadow.mirror.sampling',
     'flow, packet'),
    ('size zero', lambda d: d['shadow'].update(size=0), 'shadow.size', '> 0'),
    ('bad fidelity', lambda d: d['shadow']['replication'].update(fidelity='perfect'),
     'shadow.replication.fidelity', 'full, differential, event'),
    ('replication interval too short', lambda d: d['shadow']['replication'].update(interval='10s'),
     'shadow.replication.interval', 'at least 1m'),
    ('full replication interval too short',
     lambda d: d['services'][1].update(replication={'fidelity': 'full', 'interval': '2m'}),
     'services[1].replication.interval', 'at least 5m'),
    ('differential without paths', lambda d: d['shadow'].update(replication={}), 'shadow.replication.paths',
     'absolute'),
    ('relative path', lambda d: d['shadow']['replication'].update(paths=['var/www']),
     'shadow.replication.paths[0]', 'absolute'),
    ('hook without event', lambda d: d['shadow']['replication'].update(hook='/usr/local/bin/replica'),
     'shadow.replication.hook', 'fidelity: event'),
    ('event needs full mirror', lambda d: d['shadow'].update(replication={'fidelity': 'event'}),
     'shadow.replication.fidelity', 'mirror.mode: full'),
    ('bad golden template', lambda d: d['services'][0].update(template=42), 'services[0].template',
     '100..999999999'),
    ('bad sdn zone id', lambda d: d['networks'][0].update(zone='shop-zone-1'), 'networks[0].zone', '2-8'),
    ('duplicate vnet', lambda d: [n.update(vnet='shopv') for n in d['networks']], 'networks[1].vnet', 'once'),
    ('vlan zone without tag', lambda d: d['networks'][0].update(zone_type='vlan'), 'networks[0].vlan', '4094'),
    ('bridge type without bridge', lambda d: d['networks'][0].update(type='bridge'), 'networks[0].bridge',
     'vmbr'),
    ('vlan out of range', lambda d: d['networks'][0].update(type='bridge', bridge='vmbr1', vlan=5000),
     'networks[0].vlan', '4094'),
    # Bridge names as pve-common JSONSchema.pm pve_verify_iface takes them, within Linux's 15 characters.
    ('bridge with a hyphen', lambda d: d['networks'][0].update(type='bridge', bridge='vm-br1'),
     'networks[0].bridge', 'pve_verify_iface'),
    ('bridge of one character', lambda d: d['networks'][0].update(type='bridge', bridge='b'),
     'networks[0].bridge', 'pve_verify_iface'),
    ('bridge with a dot inside', lambda d: d['networks'][0].update(type='bridge', bridge='vm.br'),
     'networks[0].bridge', 'pve_verify_iface'),
    ('bridge naming a vlan interface', lambda d: d['networks'][0].update(type='bridge', bridge='vmbr0.10'),
     'networks[0].bridge', 'not a bridge'),
    ('bridge over 15 characters', lambda d: d['networks'][0].update(type='bridge', bridge='shopbridgefront1'),
     'networks[0].bridge', 'at most 15'),
    ('zone bridge PVE refuses', lambda d: d['networks'][0].update(zone_type='vlan', vlan=30, zone_bridge='vm-br0'),
     'networks[0].zone_bridge', 'pve_verify_iface'),
    ('zone bridge too long for its vlan',
     lambda d: d['networks'][0].update(zone_type='vlan', vlan=4000, zone_bridge='shopuplink1'),
     'networks[0].zone_bridge', 'shopuplink1v4000'),
    ('vnet id too long', lambda d: d['networks'][0].update(vnet='frontnet9'), 'networks[0].vnet', '2-8'),
    ('vnet id with a hyphen', lambda d: d['networks'][0].update(vnet='fr-nt'), 'networks[0].vnet', '2-8'),
    ('duplicate node', lambda d: d.update(nodes=['pve1', 'pve1']), 'nodes[1]', 'once'),
    ('bad node name', lambda d: d.update(nodes=['pve 1']), 'nodes[0]', 'node name'),
    ('vm name too long', lambda d: d['services'][0].update(name='w' * 32) or d.update(name='s' * 24),
     'services[0].name', '63'),
    ('duplicate vip', lambda d: d['services'][1].update(networks=['front'], vip='10.10.0.100'),
     'services[1].vip', 'one VIP'),
    ('duplicate vrid', lambda d: [d['services'][1].update(networks=['front'], vip='10.10.0.101'),
                                  d['services'][0].update(vrid=7), d['services'][1].update(vrid=7)],
     'services[1].vrid', 'unique'),
    ('vip_network not a service network', lambda d: d['services'][0].update(vip_network='back'),
     'services[0].vip_network', 'front'),
    ('not a boolean', lambda d: d['services'][0].update(critical='maybe'), 'services[0].critical', 'true or false'),
    ('bad version', lambda d: d.update(version=2), 'version', 'one of: 1'),
    ('not a list', lambda d: d.update(networks={'name': 'front'}), 'networks', 'list'),
    ('empty services', lambda d: d.update(services=[]), 'services', None),
    ('bad placement', lambda d: d['shadow'].update(placement='pack'), 'shadow.placement', 'spread, any'),
    ('bad direction', lambda d: d['shadow'].update(mirror={'direction': 'sideways'}), 'shadow.mirror.direction',
     'ingress, egress, both'),
    ('zone on a bridge network', lambda d: d['networks'][0].update(type='bridge', bridge='vmbr1', zone='shopz'),
     'networks[0].zone', 'leave it out for type bridge'),
    ('bridge on a vnet network', lambda d: d['networks'][0].update(bridge='vmbr1'), 'networks[0].bridge',
     'set type: bridge'),
    ('vlan on a simple zone', lambda d: d['networks'][0].update(vlan=30), 'networks[0].vlan', 'zone_type: vlan'),
    ('zone_bridge on a simple zone', lambda d: d['networks'][0].update(zone_bridge='vmbr1'),
     'networks[0].zone_bridge', 'leave it out'),
    ('vrid without vip', lambda d: d['services'][1].update(vip=None, vrid=9), 'services[1].vrid', 'set vip too'),
    ('bad pool id', lambda d: d.update(pool='-shop'), 'pool', 'letters, digits'),
    ('zero duration', lambda d: d.update(scaling={'cpu': {'duration': 0}}), 'scaling.cpu.duration', '5m'),
    ('zero horizon', lambda d: d.update(scaling={'horizon': '0s'}), 'scaling.horizon', '5m'),
    ('provision not below horizon', lambda d: d.update(scaling={'horizon': '15m', 'provision': '15m'}),
     'scaling.provision', 'below horizon'),
    ('service provision not below the inherited horizon', lambda d: d['services'][1].update(scaling={'provision': '20m'}),
     'services[1].scaling.provision', 'below horizon'),
    ('unparsable provision', lambda d: d.update(scaling={'provision': 'a while'}), 'scaling.provision', '5m'),
    ('empty event hook', lambda d: d['shadow'].update(mirror={'mode': 'full'},
                                                      replication={'fidelity': 'event', 'hook': ' '}),
     'shadow.replication.hook', 'a command'),
    ('service-level scaling problem', lambda d: d['services'][1].update(scaling={'memory': {'low': 0.9}}),
     'services[1].scaling.memory.low', 'below high'),
]


@pytest.mark.parametrize('label,change,path,valid_hint', MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_template_is_rejected_with_its_path(label, change, path, valid_hint):
    found = issues_of(mutate(change))
    assert path in found, 'expected an error at %s, got %s' % (path, sorted(found))
    issue = found[path]
    text = str(issue)
    assert text.startswith('template ')
    assert path in text
    if valid_hint:
        assert valid_hint in (issue.valid or '') + ' ' + issue.message, text


def test_all_errors_are_reported_at_once():
    data = base()
    data['name'] = 'BAD'
    data['services'][0]['vip'] = '10.99.0.1'
    data['services'][1]['cores'] = -1
    data['shadow']['size'] = 3
    data['scaling'] = {'mode': 'diagonal', 'instances': {'min': 9, 'max': 2}}
    data['networks'][1]['bogus'] = 1
    found = issues_of(data)
    assert {'name', 'services[0].vip', 'services[1].cores', 'shadow.size', 'scaling.mode',
            'scaling.instances.min', 'networks[1].bogus'} <= set(found)
    # the template is named by its source when its own name is invalid
    assert all(i.template == 'test.yml' for i in found.values())


def test_errors_name_the_template_when_its_name_is_valid():
    data = base()
    data['services'][0]['cores'] = 0
    found = issues_of(data)
    assert found['services[0].cores'].template == 'shop'
    assert str(found['services[0].cores']).startswith('template shop: services[0].cores: ')


def test_template_level_problem_is_not_repeated_for_every_service():
    data = base()
    data['scaling'] = {'cpu': {'high': 0.2, 'low': 0.5}}
    tpl, issues = template_utils.validate_template(data)
    assert [i.path for i in issues] == ['scaling.cpu.low']


def test_normalise_raises_with_every_issue():
    data = base()
    data['services'][0]['cores'] = 0
    data['services'][1]['instances'] = 0
    with pytest.raises(template_utils.TemplateValidationError) as err:
        template_utils.normalise_template(data)
    assert len(err.value.issues) == 2
    assert 'services[0].cores' in str(err.value) and 'services[1].instances' in str(err.value)


@pytest.mark.parametrize('value', [None, [], 'name: shop', 42])
def test_non_mapping_template(value):
    tpl, issues = template_utils.validate_template(value, source='x.yml')
    assert tpl is None and issues and issues[0].template == 'x.yml'


def test_schema_docs_cover_every_field():
    paths = [p for p, f in template_utils.iter_schema()]
    assert 'services[].vip' in paths and 'shadow.replication.fidelity' in paths and 'scaling.cooldown.up' in paths
    assert all(f.doc for p, f in template_utils.iter_schema()), [p for p, f in template_utils.iter_schema() if not f.doc]
    table = template_utils.schema_markdown()
    for path in paths:
        assert '`%s`' % path in table
    with open(os.path.join(ROOT, 'docs', 'template.md')) as handle:
        doc = handle.read()
    missing = [p for p in paths if '`%s`' % p not in doc]
    assert not missing, 'docs/template.md does not document: %s' % missing


@pytest.mark.parametrize('nodes,placement,given,want', [
    (['pve1', 'pve2', 'pve3'], 'spread', None, 'vxlan'),
    (['pve1', 'pve2'], 'spread', None, 'vxlan'),
    (['pve1'], 'spread', None, 'local'),
    ([], 'spread', None, 'vxlan'),  # default placement spreads shadows over the online nodes
    (['pve1', 'pve2'], 'any', None, 'local'),
    (['pve1', 'pve2'], 'spread', 'local', 'local'),
    ([], 'any', 'vxlan', 'vxlan'),
])
def test_shadow_transport_default(nodes, placement, given, want):
    data = base()
    data['nodes'] = nodes
    data['shadow']['placement'] = placement
    if given is not None:
        data['shadow']['transport'] = given
    assert template_utils.normalise_template(data)['shadow']['transport'] == want


def test_shadow_transport_choices():
    got = issues_of(mutate(lambda d: d['shadow'].update(transport='gretap')))
    assert 'local, vxlan' in got['shadow.transport'].valid


# ---- characterisation: the derived defaults and the order of the issues ------------------------------------


def test_derived_defaults_follow_other_fields():
    data = base()
    del data['services'][0]['networks']
    data['services'][0]['vip'] = '10.10.0.77'
    data['services'][1]['networks'] = ['back', 'front']
    data['shadow']['mirror'] = {'mode': 'full', 'rate': 0.3}
    data['networks'][1].update(zone_type='vlan', vlan=30, zone='shopvl')   # a vlan zone of its own
    tpl = template_utils.normalise_template(data)
    web, db = tpl['services']
    # networks: the template's first network; vip_network: the service's first network; vip: its prefix.
    assert (web['networks'], web['vip_network'], web['vip']) == (['front'], 'front', '10.10.0.77/24')
    assert (db['networks'], db['vip_network'], db['vip']) == (['back', 'front'], 'back', '10.20.0.50/24')
    assert tpl['shadow']['mirror'] == {'mode': 'full', 'rate': 1.0, 'sampling': 'flow', 'direction': 'both'}
    assert tpl['networks'][1]['zone_bridge'] == 'vmbr0' and tpl['networks'][0]['zone_bridge'] is None
    assert tpl['shadow']['transport'] == 'vxlan'
    # service overrides are merged even when the template-wide block is all defaults
    assert web['scaling'] == tpl['scaling'] and web['replication'] == tpl['shadow']['replication']


def test_service_without_networks_and_no_valid_first_network():
    data = base()
    del data['services'][0]['networks']
    data['networks'][0]['name'] = 'Front!'
    found = issues_of(data)
    assert 'networks[0].name' in found and 'services[0].networks' not in found


def test_a_bridge_networks_vnet_is_no_vnet_id():
    data = base()
    data['networks'][0].update(type='bridge', bridge='vmbr1', vnet='shopv')
    data['networks'][1]['vnet'] = 'shopv'
    tpl, issues = template_utils.validate_template(data)
    assert [(i.path, i.message) for i in issues] == [('networks[0].vnet', 'only for type vnet')]


def test_items_that_are_not_mappings():
    data = base()
    data['networks'].append('oops')
    data['services'].append(5)
    tpl, issues = template_utils.validate_template(data, source='x.yml')
    assert [(i.path, i.message) for i in issues] == [
        ('networks[2]', 'must be a mapping, got str'), ('services[2]', 'must be a mapping, got int')]


def test_issues_come_in_a_fixed_order():
    data = base()
    data['networks'].append({'name': 'front', 'cidr': '10.10.0.0/25', 'gateway': '10.99.0.1', 'vlan': 3})
    data['networks'][1].update(type='bridge', zone='shopz')
    data['services'][0].update(vip='10.10.0.1', vrid=4, networks=['front', 'nope'])
    data['services'][1].update(name='web', vip=None, vrid=4, scaling={'cpu': {'high': 0.1}})
    data['services'].append({'name': 'shadow', 'template': 9000, 'instances': 9, 'networks': ['back'],
                             'critical': True, 'replication': {'fidelity': 'event'}})
    data['scaling'] = {'instances': {'min': 1, 'max': 4}, 'horizon': 0}
    data['pool'] = '.x'
    data['shadow']['replication']['interval'] = '30s'
    tpl, issues = template_utils.validate_template(data)
    assert [str(i) for i in issues] == [
        'template shop: networks[1].bridge: is required for type bridge; valid: a node bridge such as vmbr1',
        'template shop: networks[1].zone: only for type vnet; valid: leave it out for type bridge',
        'template shop: networks[2].name: network front is defined twice; valid: unique network names',
        'template shop: networks[2].vlan: a vxlan zone has no VLAN; valid: set zone_type: vlan, or leave it out '
        '(a vxlan network\'s identifier is vni)',
        'template shop: networks[2].gateway: 10.99.0.1 is not a host address inside 10.10.0.0/25; valid: a host '
        'address inside 10.10.0.0/25',
        'template shop: networks[2].cidr: 10.10.0.0/25 overlaps networks[0].cidr 10.10.0.0/24 in zone (derived); '
        'valid: a CIDR that does not overlap the other networks of zone (derived)',
        'template shop: services[0].networks[1]: no network named nope; valid: one of: front, back',
        'template shop: services[0].vip: 10.10.0.1 is the gateway of network front; valid: an address other than '
        'the gateway',
        'template shop: services[1].name: service web is defined twice (also services[0]); valid: unique service '
        'names',
        'template shop: services[1].vrid: set without a vip; valid: set vip too, or leave vrid out',
        'template shop: services[2].name: shadow would make the tags ambiguous; valid: a name other than primary, '
        'shadow, shadownet, shop',
        'template shop: scaling.horizon: must be greater than zero; valid: %s' % template_utils.units.DURATION_HELP,
        'template shop: services[1].scaling.cpu.low: low 0.3 is not below high 0.1; valid: a value below high (0.1)',
        'template shop: services[2].instances: 9 is outside scaling.instances 1..4; valid: an integer from 1 to 4 '
        '(or change scaling.instances)',
        'template shop: pool: \'.x\' is not a valid PVE pool id; valid: letters, digits, _, ., -',
        'template shop: shadow.replication.interval: 30s is too short for fidelity differential; valid: at least 1m',
        'template shop: services[2].replication.fidelity: event replication needs every packet, but '
        'shadow.mirror.mode is sampled; valid: set shadow.mirror.mode: full, or use fidelity full or differential',
    ]


@pytest.mark.parametrize('path, value', [
    (('scaling', 'cpu', 'high'), float('nan')),            # passed as a threshold and reached the plan as NaN
    (('services', 0, 'memory'), float('inf')),             # crashed parse_bytes (OverflowError)
    (('shadow', 'replication', 'interval'), float('nan')),  # crashed the duration parser (ValueError)
])
def test_yaml_nan_and_inf_are_refused_by_field(path, value):
    data = base()
    data.setdefault('scaling', {}).setdefault('cpu', {'high': 0.7, 'low': 0.3})
    parent = data
    for key in path[:-1]:
        parent = parent[key] if isinstance(parent, list) else parent.setdefault(key, {})
    parent[path[-1]] = value
    issues = issues_of(data)
    field = '.'.join('%s' % k for k in path).replace('.0.', '[0].')
    assert list(issues) == [field], [str(i) for i in issues.values()]
    assert 'must be a finite number' in issues[field].message


def test_an_ipv4_vip_on_an_ipv6_network_is_an_issue_not_a_crash():
    data = base()
    data['networks'][1]['cidr'] = 'fd00:20::/64'      # db's network; its VIP stays 10.20.0.50
    issues = issues_of(data)
    assert list(issues) == ['services[1].vip'], [str(i) for i in issues.values()]
    assert 'is not a host address inside network back (fd00:20::/64)' in issues['services[1].vip'].message


def test_a_ratio_written_as_the_string_nan_is_refused():
    data = base()
    data['scaling'] = {'cpu': {'high': 'nan', 'low': '-inf%'}}
    issues = issues_of(data)
    assert sorted(issues) == ['scaling.cpu.high', 'scaling.cpu.low'], [str(i) for i in issues.values()]


# ---- SDN zone types: a simple zone is node-local -------------------------------------------------------------

@pytest.mark.parametrize('nodes', [['pve1', 'pve2'], []])
def test_a_simple_zone_spread_over_nodes_is_refused(nodes):
    """pve-network Zones/SimplePlugin.pm gives a simple zone's bridge `bridge_ports none`: two nodes, two islands."""
    data = base()
    data['nodes'] = nodes
    data['networks'][1]['zone_type'] = 'simple'
    found = issues_of(data)
    issue = found['networks[1].zone_type']
    assert 'node-local bridge with no uplink' in issue.message and 'back on different nodes' in issue.message
    assert ('every online node' in issue.message) == (not nodes)
    assert 'zone_type: vxlan' in issue.valid and 'vlan with zone_bridge' in issue.valid
    assert list(found) == ['networks[1].zone_type']


def test_zone_type_defaults_by_how_many_nodes():
    data = base()
    data['nodes'] = ['pve1']
    tpl, issues = template_utils.validate_template(data)
    assert issues == [] and [n['zone_type'] for n in tpl['networks']] == ['simple', 'simple']
    data['networks'][0]['zone_type'] = 'vxlan'          # allowed on one node too, but then the zone is vxlan
    found = issues_of(data)
    assert "simple, but networks[0] in the same zone (the template's) is vxlan" in found['networks[1].zone_type'].message
    data['networks'][1]['zone_type'] = 'vxlan'
    tpl, issues = template_utils.validate_template(data)
    assert issues == [] and [n['vni'] for n in tpl['networks']] == [None, None]


def test_vni_only_for_vxlan_and_unique():
    data = base()
    data['networks'][0]['vni'] = 5000
    data['networks'][1]['vni'] = 5000
    found = issues_of(data)
    assert 'vni 5000 is also used by networks[0]' in found['networks[1].vni'].message
    data = base()
    data['networks'][1].update(zone_type='vlan', vlan=30, zone='shopvl', vni=7)
    found = issues_of(data)
    assert found['networks[1].vni'].message == 'only for zone_type vxlan'
    data = base()
    data['networks'][0].update(vni=0)
    assert 'networks[0].vni' in issues_of(data)

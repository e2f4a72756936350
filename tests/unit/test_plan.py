# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
import copy
import ipaddress
import json
import os

import jinja2
import pytest
import yaml

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import template as template_utils

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAB = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def lab_data(**variables):
    with open(LAB) as handle:
        return yaml.safe_load(jinja2.Environment().from_string(handle.read()).render(**variables))


def lab_plan(**variables):
    return plan_utils.plan_from_template(lab_data(**variables))[1]


def by_name(plan):
    return {vm['name']: vm for vm in plan['vms']}


def test_plan_is_deterministic():
    one = json.dumps(lab_plan(), sort_keys=True)
    two = json.dumps(lab_plan(), sort_keys=True)
    assert one == two
    # and independent of the input's key order
    data = lab_data()
    reordered = dict(reversed(list(data.items())))
    assert json.dumps(plan_utils.plan_from_template(reordered)[1], sort_keys=True) == one


def test_top_level_keys_match_docs():
    plan = lab_plan()
    with open(os.path.join(ROOT, 'docs', 'plan.md')) as handle:
        doc = handle.read()
    for key in plan:
        assert '| `%s` |' % key in doc, 'docs/plan.md does not document top-level key %s' % key
    for section in ('networks', 'vms', 'mirrors', 'vrrp', 'ha_rules', 'replication', 'scaling'):
        for key in plan[section][0]:
            assert '| `%s` |' % key in doc, 'docs/plan.md does not document %s.%s' % (section, key)
    for key in plan['vms'][0]['nics'][0]:
        assert '| `%s` |' % key in doc


def test_lab_plan_vms():
    plan = lab_plan()
    vms = by_name(plan)
    assert plan['plan_version'] == 1 and plan['template'] == 'shop' and plan['shadow_enabled']
    assert list(vms) == ['shop-web-1', 'shop-web-2', 'shop-web-shadow', 'shop-db-1', 'shop-db-2',
                         'shop-db-shadow', 'shop-worker-1', 'shop-worker-2']
    for vm in plan['vms']:
        assert naming.is_dns_label(vm['name'])
        assert all(naming.is_tag(t) for t in vm['tags'])
        golden = {'vmid': None, 'name': 'alpine-3-golden'} if vm['service'] == 'worker' else {'vmid': 9000, 'name': None}
        assert vm['golden'] == golden and vm['linked'] is True
        assert vm['pool'] == 'shadownet'
        assert vm['meta']['template'] == 'shop' and vm['meta']['role'] == vm['role']
    web1 = vms['shop-web-1']
    assert web1['tags'] == ['shadownet', 'sn-shop', 'sn-web', 'sn-primary']
    assert web1['meta'] == {'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web', 'index': 1,
                            'shadowed_by': 'shop-web-shadow'}
    assert (web1['cores'], web1['memory']) == (2, 2048)
    shadow = vms['shop-web-shadow']
    assert shadow['tags'] == ['shadownet', 'sn-shop', 'sn-web', 'sn-shadow']
    assert shadow['shadows'] == ['shop-web-1', 'shop-web-2'] == shadow['meta']['shadows']
    # size 0.25 of 2 cores / 2048 MiB, with floors 1 core / 512 MiB
    assert (shadow['cores'], shadow['memory']) == (1, 512)
    assert (vms['shop-db-shadow']['cores'], vms['shop-db-shadow']['memory']) == (1, 1024)
    # no shadow for the non-critical worker
    assert vms['shop-worker-1']['shadowed_by'] is None and 'shadowed_by' not in vms['shop-worker-1']['meta']
    assert not any(vm['service'] == 'worker' and vm['role'] == 'shadow' for vm in plan['vms'])


def test_placement_round_robin_and_shadow_spread():
    vms = by_name(lab_plan())
    assert [vms['shop-web-%d' % i]['node'] for i in (1, 2)] == ['pve1', 'pve2']
    assert [vms['shop-db-%d' % i]['node'] for i in (1, 2)] == ['pve2', 'pve3']
    assert [vms['shop-worker-%d' % i]['node'] for i in (1, 2)] == ['pve3', 'pve1']
    for service in ('web', 'db'):
        shadow = vms['shop-%s-shadow' % service]
        primary_nodes = {vms['shop-%s-%d' % (service, i)]['node'] for i in (1, 2)}
        assert shadow['node'] not in primary_nodes
        assert set(shadow['avoid_nodes']) == primary_nodes
        assert sorted(shadow['preferred_nodes']) == ['pve1', 'pve2', 'pve3']
        assert shadow['preferred_nodes'][0] == shadow['node']


def test_spread_impossible_gives_warning_and_least_loaded_node():
    data = lab_data()
    data['nodes'] = ['pve1', 'pve2']
    plan = plan_utils.plan_from_template(data)[1]
    assert any('shop-web-shadow' in w for w in plan['warnings'])
    vms = by_name(plan)
    assert vms['shop-web-shadow']['node'] in ('pve1', 'pve2')


def test_no_nodes_leaves_placement_to_apply():
    data = lab_data()
    data['nodes'] = []
    plan = plan_utils.plan_from_template(data)[1]
    assert all(vm['node'] is None and vm['preferred_nodes'] == [] for vm in plan['vms'])
    assert not any(r['type'] == 'node-affinity' for r in plan['ha_rules'])
    assert any(r['type'] == 'resource-affinity' for r in plan['ha_rules'])


def test_networks_and_shadow_twins():
    plan = lab_plan()
    primaries = [n for n in plan['networks'] if n['role'] == 'primary']
    shadows = [n for n in plan['networks'] if n['role'] == 'shadow']
    assert [n['name'] for n in primaries] == ['front', 'back'] == [n['name'] for n in shadows]
    ids = set()
    for net in plan['networks']:
        assert naming.is_sdn_id(net['zone']) and naming.is_sdn_id(net['vnet'])
        assert net['bridge'] == net['vnet']
        ids.add(net['vnet'])
    assert len(ids) == 4
    # one primary zone for the template, one shadow zone per network, all distinct from the primary zone
    assert len({n['zone'] for n in primaries}) == 1
    assert len({n['zone'] for n in shadows}) == 2
    assert not {n['zone'] for n in shadows} & {n['zone'] for n in primaries}
    for twin in shadows:
        primary = next(n for n in primaries if n['name'] == twin['twin_of'])
        assert twin['cidr'] == primary['cidr']
        assert twin['gateway'] is None and twin['isolated'] is True
        # The lab spreads shadows over three nodes: the twins are VXLAN zones with their own VNIs.
        assert twin['zone_type'] == 'vxlan' and plan_utils.VXLAN_TAG_MIN <= twin['vxlan_tag'] <= plan_utils.VXLAN_TAG_MAX
        assert twin['alias'] == 'shop-%s (shadow)' % twin['name']
    assert len({n['vxlan_tag'] for n in shadows}) == 2
    # The lab places primaries on three nodes: their networks are a VXLAN zone too (a simple zone is node-local),
    # each vnet with its own VNI, none a twin's; the twins keep the VNIs they had before (derived first).
    assert all(n['zone_type'] == 'vxlan' for n in primaries)
    assert len({n['vxlan_tag'] for n in primaries} | {n['vxlan_tag'] for n in shadows}) == 4
    assert {n['name']: n['vxlan_tag'] for n in shadows} == plan_utils.vxlan_tags('shop', ['front', 'back'])
    assert plan['shadow_transport'] == 'vxlan'
    assert primaries[0]['gateway'] == '10.10.0.1' and primaries[0]['alias'] == 'shop-front'


def test_primary_network_vnis_given_and_derived():
    data = lab_data()
    data['networks'][0]['vni'] = 4242
    tags = {(n['name'], n['role']): n['vxlan_tag'] for n in plan_utils.plan_from_template(data)[1]['networks']}
    assert tags[('front', 'primary')] == 4242
    assert len(set(tags.values())) == 4 and all(tags.values())
    data = lab_data()
    data['nodes'] = ['pve1']            # one node: a simple zone is enough, no VNI
    plan = plan_utils.plan_from_template(data)[1]
    assert [(n['zone_type'], n['vxlan_tag']) for n in plan['networks'] if n['role'] == 'primary'] == [
        ('simple', None), ('simple', None)]


@pytest.mark.parametrize('nodes,placement,transport,want', [
    (['pve1', 'pve2'], 'spread', None, 'vxlan'),
    (['pve1'], 'spread', None, 'local'),
    ([], 'spread', None, 'vxlan'),
    (['pve1', 'pve2'], 'any', None, 'local'),
    (['pve1', 'pve2'], 'spread', 'local', 'local'),
    (['pve1'], 'any', 'vxlan', 'vxlan'),
])
def test_shadow_transport(nodes, placement, transport, want):
    data = lab_data()
    data['nodes'] = nodes
    data['shadow']['placement'] = placement
    if transport is not None:
        data['shadow']['transport'] = transport
    tpl, plan = plan_utils.plan_from_template(data)
    assert tpl['shadow']['transport'] == want == plan['shadow_transport']
    shadows = [n for n in plan['networks'] if n['role'] == 'shadow']
    assert shadows and all(n['zone_type'] == ('vxlan' if want == 'vxlan' else 'simple') for n in shadows)
    assert all((n['vxlan_tag'] is not None) == (want == 'vxlan') for n in shadows)
    # Everything but the shadow zones' type and VNI is the same with either transport.
    other = dict(data, shadow=dict(data['shadow'], transport='local' if want == 'vxlan' else 'vxlan'))
    alt = plan_utils.plan_from_template(other)[1]
    strip = ('zone_type', 'vxlan_tag')
    assert ([{k: v for k, v in n.items() if k not in strip} for n in alt['networks']]
            == [{k: v for k, v in n.items() if k not in strip} for n in plan['networks']])
    for key in ('vms', 'mirrors', 'vrrp', 'ha_rules', 'replication', 'scaling'):
        assert alt[key] == plan[key]


def test_vxlan_tags_are_stable_and_distinct():
    tags = plan_utils.vxlan_tags('shop', ['front', 'back'])
    assert tags == plan_utils.vxlan_tags('shop', ['front', 'back'])
    assert tags['front'] == plan_utils.vxlan_tags('shop', ['front'])['front']
    assert len(set(tags.values())) == 2 and tags != plan_utils.vxlan_tags('shop2', ['front', 'back'])


def test_shadow_transport_rejects_unknown_values():
    data = lab_data()
    data['shadow']['transport'] = 'gre'
    with pytest.raises(template_utils.TemplateValidationError, match='shadow.transport'):
        plan_utils.plan_from_template(data)


def test_ids_are_stable_when_the_template_grows():
    base = lab_plan()
    data = lab_data()
    data['networks'].append({'name': 'mgmt', 'cidr': '10.99.0.0/24'})
    data['services'].append({'name': 'extra', 'template': 9000, 'networks': ['mgmt'], 'vip': '10.99.0.10',
                             'instances': 2})
    grown = plan_utils.plan_from_template(data)[1]

    def ids(plan):
        return {(n['role'], n['name']): (n['zone'], n['vnet']) for n in plan['networks']}
    old, new = ids(base), ids(grown)
    assert all(new[k] == v for k, v in old.items())
    assert {g['service']: g['vrid'] for g in base['vrrp']}.items() <= {g['service']: g['vrid']
                                                                       for g in grown['vrrp']}.items()


def test_different_templates_get_different_ids():
    a = lab_plan()
    b = lab_plan(shop_env='staging')
    assert b['template'] == 'shop-staging'
    assert not {n['vnet'] for n in a['networks']} & {n['vnet'] for n in b['networks']}


def test_explicit_ids_are_kept():
    data = lab_data()
    data['networks'][0].update(zone='shopz', vnet='shopfr')
    plan = plan_utils.plan_from_template(data)[1]
    front = plan['networks'][0]
    assert (front['zone'], front['vnet'], front['bridge']) == ('shopz', 'shopfr', 'shopfr')


def test_nics():
    vms = by_name(lab_plan())
    web1 = vms['shop-web-1']
    nets = {(n['role'], n['name']): n for n in lab_plan()['networks']}
    expected = [(0, 'front', 'service'), (1, 'back', 'service')]
    assert [(n['index'], n['network'], n['purpose']) for n in web1['nics']] == expected
    assert web1['nics'][0]['bridge'] == nets[('primary', 'front')]['vnet']
    shadow = vms['shop-web-shadow']
    assert [(n['index'], n['network'], n['network_role'], n['purpose']) for n in shadow['nics']] == [
        (0, 'front', 'shadow', 'mirror'), (1, 'front', 'primary', 'vrrp'), (2, 'back', 'shadow', 'mirror')]
    assert shadow['nics'][0]['bridge'] == nets[('shadow', 'front')]['vnet']
    assert shadow['nics'][1]['bridge'] == nets[('primary', 'front')]['vnet']
    db_shadow = vms['shop-db-shadow']
    expected = [('back', 'shadow'), ('back', 'primary')]
    assert [(n['network'], n['network_role']) for n in db_shadow['nics']] == expected


def test_mirrors():
    plan = lab_plan(shop_mirror_rate=0.2)
    web = [m for m in plan['mirrors'] if m['service'] == 'web']
    assert [(m['source']['vm'], m['source']['nic'], m['target']['vm'], m['target']['nic']) for m in web] == [
        ('shop-web-1', 0, 'shop-web-shadow', 0), ('shop-web-1', 1, 'shop-web-shadow', 2),
        ('shop-web-2', 0, 'shop-web-shadow', 0), ('shop-web-2', 1, 'shop-web-shadow', 2)]
    assert all(m['mode'] == 'sampled' and m['rate'] == 0.2 and m['direction'] == 'both' for m in plan['mirrors'])
    assert all(m['sampling'] == 'flow' for m in plan['mirrors'])  # the default: whole flows
    assert not any(m['service'] == 'worker' for m in plan['mirrors'])
    data = lab_data()
    data['shadow']['mirror'] = {'mode': 'full', 'direction': 'ingress'}
    full = plan_utils.plan_from_template(data)[1]
    assert all(m['rate'] == 1.0 and m['direction'] == 'ingress' for m in full['mirrors'])
    data = lab_data()
    data['shadow']['mirror'] = {'mode': 'sampled', 'rate': 0.05, 'sampling': 'packet'}
    packet = plan_utils.plan_from_template(data)[1]
    assert {(m['rate'], m['sampling']) for m in packet['mirrors']} == {(0.05, 'packet')}


def test_vrrp_groups():
    plan = lab_plan()
    groups = {g['service']: g for g in plan['vrrp']}
    assert set(groups) == {'web', 'db'}
    web = groups['web']
    assert web['vip'] == '10.10.0.100/24' and web['network'] == 'front' and web['version'] == 3
    assert 1 <= web['vrid'] <= 255
    assert [(m['vm'], m['role'], m['nic'], m['priority']) for m in web['members']] == [
        ('shop-web-1', 'primary', 0, 200), ('shop-web-2', 'primary', 0, 190), ('shop-web-shadow', 'shadow', 1, 50)]
    assert groups['db']['vip'] == '10.20.0.50/24'
    assert groups['db']['vrid'] == naming.assign_vrids('shop', [('web', 'front', None), ('db', 'back', None)])['db']


def test_vrids_unique_on_a_shared_network():
    data = lab_data()
    for index in range(1, 6):
        data['services'].append({'name': 'svc%d' % index, 'template': 9000, 'instances': 2,
                                 'networks': ['front'], 'vip': '10.10.0.%d' % (110 + index)})
    plan = plan_utils.plan_from_template(data)[1]
    front = [g['vrid'] for g in plan['vrrp'] if g['network'] == 'front']
    assert len(front) == 6 and len(set(front)) == 6


def test_vrrp_priorities_distinct_up_to_max_instances():
    for max_instances in (1, 8, 10, 11, 33, 100):
        prios = [plan_utils.vrrp_priority(i, max_instances) for i in range(1, max_instances + 1)]
        assert len(set(prios)) == len(prios)
        assert min(prios) > 100 > plan_utils.VRRP_SHADOW_PRIORITY
        assert max(prios) < 255


def test_ha_rules():
    plan = lab_plan()
    rules = {r['rule']: r for r in plan['ha_rules']}
    anti = rules['sn_shop_web_1_anti']
    assert anti['type'] == 'resource-affinity' and anti['affinity'] == 'negative'
    assert anti['resources'] == ['shop-web-1', 'shop-web-shadow']
    vms = by_name(plan)
    node = rules['sn_shop_db_2_node']
    assert node['type'] == 'node-affinity' and node['resources'] == ['shop-db-2'] and node['strict'] is False
    # One node, one priority: PVE refuses a VM of a resource-affinity rule in a multi-priority node rule.
    assert node['nodes'] == [{'node': vms['shop-db-2']['node'], 'priority': 1}]
    shadow = vms['shop-web-shadow']
    free = sorted(n for n in shadow['preferred_nodes'] if n not in shadow['avoid_nodes'])
    assert free and shadow['node'] in free
    assert rules['sn_shop_web_shadow_node']['resources'] == ['shop-web-shadow']
    assert rules['sn_shop_web_shadow_node']['nodes'] == [{'node': n, 'priority': 1} for n in free]
    assert not any(r['rule'].startswith('sn_shop_worker') and r['type'] == 'resource-affinity'
                   for r in plan['ha_rules'])
    assert len([r for r in plan['ha_rules'] if r['type'] == 'resource-affinity']) == 4
    assert len([r for r in plan['ha_rules'] if r['type'] == 'node-affinity']) == 6 + len(
        [r for r in rules if r.endswith('_shadow_node')])
    assert all(naming.HA_RULE_ID_RE.match(r) for r in rules)
    data = lab_data()
    data['shadow']['placement'] = 'any'
    assert not any(r['type'] == 'resource-affinity' for r in plan_utils.plan_from_template(data)[1]['ha_rules'])


def _sids(plan):
    return dict((vm['name'], 'vm:{0}'.format(100 + i)) for i, vm in enumerate(plan['vms']))


@pytest.mark.parametrize('nodes', [['pve1', 'pve2', 'pve3'], ['pve1', 'pve2'], ['pve1', 'pve2', 'pve3', 'pve4']])
@pytest.mark.parametrize('placement', ['spread', 'any'])
def test_ha_rules_pass_pves_feasibility_checks(nodes, placement):
    # pve-ha-manager HA/Rules.pm check_feasibility, as module_utils.ha replays it: no rule of the plan is refused.
    data = lab_data()
    data['nodes'] = nodes
    data['shadow']['placement'] = placement
    plan = plan_utils.plan_from_template(data)[1]
    sids = _sids(plan)
    rules = []
    for entry in plan['ha_rules']:
        rule = ha.normalise_rule(entry, plan['template'])
        rule['resources'] = sorted(sids[r] for r in rule['resources'])
        rules.append(rule)
    assert ha.feasibility(rules, nodes) == {}
    if placement == 'spread':
        assert any(r['type'] == 'resource-affinity' for r in rules)


def test_replication():
    plan = lab_plan()
    repl = {r['service']: r for r in plan['replication']}
    assert set(repl) == {'web', 'db'}
    assert repl['web'] == {'service': 'web', 'shadow': 'shop-web-shadow', 'primaries': ['shop-web-1', 'shop-web-2'],
                           'fidelity': 'differential', 'interval_seconds': 900, 'rpo_seconds': 900,
                           'paths': ['/var/www'], 'hook': None}
    assert repl['db']['fidelity'] == 'full' and repl['db']['interval_seconds'] == 3600 and repl['db']['paths'] == []
    data = lab_data()
    data['shadow']['mirror'] = {'mode': 'full'}
    data['services'][1]['replication'] = {'fidelity': 'event', 'hook': '/usr/local/bin/pg-replica'}
    event = {r['service']: r for r in plan_utils.plan_from_template(data)[1]['replication']}['db']
    assert event['interval_seconds'] is None and event['rpo_seconds'] is None
    assert event['hook'] == '/usr/local/bin/pg-replica'


def test_scaling():
    plan = lab_plan()
    web = {s['service']: s for s in plan['scaling']}['web']
    assert web['mode'] == 'horizontal'
    assert web['cpu'] == {'high': 0.7, 'low': 0.3, 'duration_seconds': 300}
    assert web['net'] == {'high_bps': 800_000_000, 'low_bps': 100_000_000, 'duration_seconds': 300}
    assert web['horizon_seconds'] == 900
    assert web['provision_seconds'] == 300
    assert web['instances'] == {'min': 2, 'max': 8, 'current': 2}
    assert web['cooldown'] == {'up_seconds': 180, 'down_seconds': 600}
    assert web['name_prefix'] + '3' == naming.primary_vm_name('shop', 'web', 3)
    assert (web['cores'], web['memory_mib'], web['shadow']) == (2, 2048, 'shop-web-shadow')
    worker = {s['service']: s for s in plan['scaling']}['worker']
    assert worker['shadow'] is None


def test_scaling_provision_reaches_the_policy():
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy, scaling
    data = lab_data()
    data['scaling'] = dict(data.get('scaling') or {}, provision='2m')
    plan = plan_utils.plan_from_template(data)[1]
    web = {s['service']: s for s in plan['scaling']}['web']
    assert web['provision_seconds'] == 120
    assert policy.normalise_scaling(scaling.policy_scaling(web))['provision'] == 120
    # a plan written before scaling.provision existed: the policy's default
    del web['provision_seconds']
    assert policy.normalise_scaling(scaling.policy_scaling(web))['provision'] == policy.DEFAULT_PROVISION


def test_shadow_disabled_plans_no_shadows():
    data = lab_data()
    data['shadow']['enabled'] = False
    plan = plan_utils.plan_from_template(data)[1]
    assert plan['shadow_enabled'] is False
    assert all(vm['role'] == 'primary' for vm in plan['vms'])
    assert all(n['role'] == 'primary' for n in plan['networks'])
    assert plan['mirrors'] == [] and plan['replication'] == []
    assert all(len(g['members']) == 2 for g in plan['vrrp'])
    assert all(vm['shadowed_by'] is None for vm in plan['vms'])


def test_no_critical_service_warns():
    data = lab_data()
    for svc in data['services']:
        svc['critical'] = False
    plan = plan_utils.plan_from_template(data)[1]
    assert plan['shadow_enabled'] is False and plan['warnings']


@pytest.mark.parametrize('cores,memory,size,expect', [
    (4, 8192, 0.25, (1, 2048)), (8, 16384, 0.5, (4, 8192)), (1, 512, 0.1, (1, 512)), (6, 4096, 0.25, (2, 1024)),
    (3, 1000, 1.0, (3, 1000)),
])
def test_shadow_size(cores, memory, size, expect):
    assert plan_utils.shadow_size(cores, memory, size) == expect


def test_bridge_network_plan():
    data = lab_data()
    data['networks'][1] = {'name': 'back', 'type': 'bridge', 'bridge': 'vmbr1', 'vlan': 30,
                           'cidr': '10.20.0.0/24'}
    plan = plan_utils.plan_from_template(data)[1]
    back = next(n for n in plan['networks'] if n['role'] == 'primary' and n['name'] == 'back')
    assert (back['type'], back['zone'], back['vnet'], back['bridge'], back['vlan']) == \
        ('bridge', None, None, 'vmbr1', 30)
    twin = next(n for n in plan['networks'] if n['role'] == 'shadow' and n['name'] == 'back')
    assert twin['type'] == 'vnet' and naming.is_sdn_id(twin['vnet']) and twin['vlan'] is None
    db1 = by_name(plan)['shop-db-1']
    assert db1['nics'][0]['bridge'] == 'vmbr1' and db1['nics'][0]['vlan'] == 30


def test_digest_tracks_the_template():
    a = lab_plan()
    b = lab_plan(shop_mirror_rate=0.3)
    assert a['template_digest'].startswith('sha256:') and a['template_digest'] != b['template_digest']
    assert a['template_digest'] == lab_plan()['template_digest']


def test_build_plan_does_not_mutate_the_template():
    tpl = template_utils.normalise_template(lab_data())
    snapshot = copy.deepcopy(tpl)
    plan_utils.build_plan(tpl)
    assert tpl == snapshot


def test_plan_from_template_raises_on_invalid():
    data = lab_data()
    data['services'][0]['vip'] = '10.99.0.1'
    with pytest.raises(template_utils.TemplateValidationError) as err:
        plan_utils.plan_from_template(data)
    assert 'services[0].vip' in str(err.value)


def test_vips_inside_their_networks():
    plan = lab_plan()
    cidrs = {n['name']: n['cidr'] for n in plan['networks'] if n['role'] == 'primary'}
    for group in plan['vrrp']:
        assert ipaddress.ip_interface(group['vip']).ip in ipaddress.ip_network(cidrs[group['network']])


# ---- characterisation: section order, warnings, several templates ------------------------------------------


def test_sections_keep_the_template_order():
    plan = lab_plan()
    assert [(n['name'], n['role']) for n in plan['networks']] == [
        ('front', 'primary'), ('back', 'primary'), ('front', 'shadow'), ('back', 'shadow')]
    assert [r['rule'] for r in plan['ha_rules']] == [
        'sn_shop_web_1_anti', 'sn_shop_web_2_anti', 'sn_shop_web_1_node', 'sn_shop_web_2_node',
        'sn_shop_web_shadow_node', 'sn_shop_db_1_anti', 'sn_shop_db_2_anti', 'sn_shop_db_1_node',
        'sn_shop_db_2_node', 'sn_shop_db_shadow_node', 'sn_shop_worker_1_node', 'sn_shop_worker_2_node']
    assert [(m['source']['vm'], m['source']['nic'], m['target']['nic']) for m in plan['mirrors']] == [
        ('shop-web-1', 0, 0), ('shop-web-1', 1, 2), ('shop-web-2', 0, 0), ('shop-web-2', 1, 2),
        ('shop-db-1', 0, 0), ('shop-db-2', 0, 0)]
    assert [g['service'] for g in plan['vrrp']] == ['web', 'db']
    assert [s['service'] for s in plan['scaling']] == ['web', 'db', 'worker']
    assert list(plan) == ['plan_version', 'template', 'template_digest', 'shadow_enabled', 'shadow_transport', 'nodes',
                          'pool', 'common_tags', 'networks', 'vms', 'mirrors', 'vrrp', 'ha_rules', 'replication',
                          'scaling', 'warnings']


def test_shadow_nics_mirror_every_network_and_join_the_vip_network():
    data = lab_data()
    data['services'][0].update(networks=['back', 'front'], vip_network='front')
    plan = plan_utils.plan_from_template(data)[1]
    shadow = by_name(plan)['shop-web-shadow']
    assert [(n['index'], n['network'], n['network_role'], n['purpose']) for n in shadow['nics']] == [
        (0, 'back', 'shadow', 'mirror'), (1, 'front', 'primary', 'vrrp'), (2, 'front', 'shadow', 'mirror')]
    web = next(g for g in plan['vrrp'] if g['service'] == 'web')
    assert [(m['vm'], m['nic']) for m in web['members']] == [
        ('shop-web-1', 1), ('shop-web-2', 1), ('shop-web-shadow', 1)]


def test_warnings_in_order():
    data = lab_data()
    data['nodes'] = ['pve1']
    plan = plan_utils.plan_from_template(data)[1]
    assert plan['warnings'] == [
        'shop-web-shadow: every node in nodes runs a primary of web; the shadow will share a node with one (add a '
        'node to nodes for full spread)',
        'shop-db-shadow: every node in nodes runs a primary of db; the shadow will share a node with one (add a node '
        'to nodes for full spread)']
    for svc in data['services']:
        svc['critical'] = False
    assert plan_utils.plan_from_template(data)[1]['warnings'] == [
        'shadow.enabled is true but no service is critical: no shadows are planned']


def test_any_placement_puts_the_shadow_after_the_first_primary():
    data = lab_data()
    data['shadow']['placement'] = 'any'
    vms = by_name(plan_utils.plan_from_template(data)[1])
    assert vms['shop-web-shadow']['preferred_nodes'] == ['pve2', 'pve3', 'pve1']
    assert vms['shop-web-shadow']['avoid_nodes'] == [] and vms['shop-db-shadow']['node'] == 'pve3'


def test_plan_templates_and_failure_result():
    one = lab_data()
    alone = lab_data(shop_env='solo')
    alone['nodes'] = ['pve1']
    bad = lab_data(shop_env='bad')
    bad['services'][0]['cores'] = 0
    entries = [(one, 'a.yml'), (alone, 'b.yml'), (lab_data(), 'c.yml'), (bad, 'd.yml')]
    result, issues = plan_utils.plan_templates(entries)
    assert result['names'] == ['shop', 'shop-solo'] and list(result['plans']) == ['shop', 'shop-solo']
    assert result['changed'] is False and list(result['templates']) == ['shop', 'shop-solo']
    assert result['warnings'] == ['template shop-solo: %s' % w for w in result['plans']['shop-solo']['warnings']]
    assert [str(i) for i in issues] == [
        'template shop: name: template shop is defined twice (a.yml and c.yml); valid: unique template names',
        'template shop-bad: services[0].cores: 0 is too small; valid: an integer >= 1 and <= 512']
    result, issues = plan_utils.plan_templates(entries, fail_on_warnings=True)
    assert [i.message[:40] for i in issues] == [
        'plan warning: shop-solo-web-shadow: ever', 'plan warning: shop-solo-db-shadow: every',
        'template shop is defined twice (a.yml an', '0 is too small']
    failed = plan_utils.failure_result(result, issues)
    assert set(failed) == {'changed', 'warnings', 'failed', 'errors', 'msg'}
    assert failed['msg'].startswith('4 error(s) in shadownet templates:\n- template shop-solo: (top level): plan '
                                    'warning: ')
    assert failed['errors'][0] == {'template': 'shop-solo', 'path': '', 'message': issues[0].message,
                                   'valid': 'fail_on_warnings: false'}

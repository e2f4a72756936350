"""The pure part of module_utils.ha: rule normalising, name resolution, ownership and the set diff."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha

VMS = [{'type': 'qemu', 'vmid': 101, 'name': 'shop-web-1'}, {'type': 'qemu', 'vmid': 103, 'name': 'shop-web-shadow'},
       {'type': 'qemu', 'vmid': 9000, 'name': 'golden', 'template': 1},
       {'type': 'qemu', 'vmid': 201, 'name': 'dup'}, {'type': 'qemu', 'vmid': 202, 'name': 'dup'}]


def anti(**kwargs):
    entry = {'rule': 'sn_shop_web_1_anti', 'type': 'resource-affinity', 'resources': ['shop-web-1', 'shop-web-shadow'],
             'affinity': 'negative', 'nodes': None, 'strict': False, 'comment': 'shadownet shop: apart'}
    entry.update(kwargs)
    return ha.normalise_rule(entry, 'shop')


def node_rule(**kwargs):
    entry = {'rule': 'sn_shop_web_1_node', 'type': 'node-affinity', 'resources': ['shop-web-1'], 'affinity': None,
             'nodes': [{'node': 'pve1', 'priority': 2}, {'node': 'pve2', 'priority': 1}], 'strict': False,
             'comment': 'shadownet shop: prefers pve1'}
    entry.update(kwargs)
    return ha.normalise_rule(entry, 'shop')


def resolved(rule):
    rule = dict(rule)
    rule['resources'] = ha.resolve_resources(rule['resources'], VMS)
    return rule


def live_item(rule_id, **values):
    return dict(values, rule=rule_id, digest='abc')


def test_prefix_and_marker():
    assert ha.rule_prefix('shop-x') == 'sn_shop_x_'
    assert ha.marker('shop-x') == 'shadownet shop-x:'


def test_parse_and_format_nodes():
    assert ha.parse_nodes('pve2:1,pve1:2,pve3') == {'pve1': 2, 'pve2': 1, 'pve3': None}
    assert ha.parse_nodes([{'node': 'pve1', 'priority': 2}, 'pve2:1']) == {'pve1': 2, 'pve2': 1}
    assert ha.format_nodes({'pve2': 1, 'pve1': 2, 'pve3': None}) == 'pve1:2,pve2:1,pve3'
    assert ha.parse_nodes(None) == {}


def test_normalise_adds_the_marker_and_refuses_bad_rules():
    assert anti(comment='apart')['comment'] == 'shadownet shop: apart'
    assert anti(comment=None)['comment'] == 'shadownet shop: sn_shop_web_1_anti'
    assert anti(affinity=None)['affinity'] == 'negative'
    assert node_rule()['nodes'] == {'pve1': 2, 'pve2': 1} and node_rule()['strict'] is False
    for change, message in ((dict(rule='other_x'), "must start with 'sn_shop_'"),
                            (dict(rule='sn_shop-bad'), 'not a valid rule id'),
                            (dict(resources=['shop-web-1']), 'at least two resources'),
                            (dict(type='colocation'), 'type must be')):
        with pytest.raises(ha.HaRuleError) as info:
            anti(**change)
        assert message in str(info.value)
    with pytest.raises(ha.HaRuleError):
        node_rule(nodes=[])


def test_resolve_resources():
    assert ha.resolve_resources(['shop-web-shadow', 'shop-web-1'], VMS) == ['vm:101', 'vm:103']
    assert ha.resolve_resources(['vm:7', '12'], VMS) == ['vm:7', 'vm:12']
    with pytest.raises(ha.HaRuleError, match='not in the cluster'):
        ha.resolve_resources(['golden'], VMS)  # templates are never HA resources
    with pytest.raises(ha.HaRuleError, match='never guesses'):
        ha.resolve_resources(['dup', 'shop-web-1'], VMS)


def test_set_diff_create_update_delete_and_leave_others():
    want = [resolved(anti(resources=['shop-web-1', 'shop-web-shadow', 'vm:102']))]
    live = [
        live_item('sn_shop_web_1_anti', type='resource-affinity', resources='vm:101,vm:103', affinity='negative',
                  comment='shadownet shop: apart'),
        live_item('sn_shop_web_1_node', type='node-affinity', resources='vm:101', nodes='pve1:2',
                  comment='shadownet shop: old'),
        live_item('sn_shop_x_web_1_node', type='node-affinity', resources='vm:101', nodes='pve1',
                  comment='shadownet shop-x: theirs'),
        live_item('mine', type='node-affinity', resources='vm:101', nodes='pve1', comment='shadownet shop: mine'),
    ]
    ops, before, after = ha.plan_rules(want, live, 'shop')
    assert [(o['method'], o['rule']) for o in ops] == [('DELETE', 'sn_shop_web_1_node'),
                                                       ('PUT', 'sn_shop_web_1_anti')]
    assert ops[1]['params'] == {'type': 'resource-affinity', 'resources': 'vm:101,vm:102,vm:103'}
    assert before['sn_shop_web_1_anti']['resources'] == ['vm:101', 'vm:103']
    assert after['sn_shop_web_1_node'] == {}
    assert 'mine' not in before and 'sn_shop_x_web_1_node' not in before


def test_no_ops_when_pve_returns_its_own_forms():
    want = [resolved(anti()), resolved(node_rule())]
    live = [
        live_item('sn_shop_web_1_anti', type='resource-affinity', resources='vm:103,vm:101', affinity='negative',
                  comment='shadownet shop: apart'),
        live_item('sn_shop_web_1_node', type='node-affinity', resources='vm:101', nodes='pve2:1,pve1:2',
                  comment='shadownet shop: prefers pve1', disable=0),
    ]
    assert ha.plan_rules(want, live, 'shop')[0] == []
    live[1]['strict'] = 1
    ops = ha.plan_rules(want, live, 'shop')[0]
    assert [(o['method'], o['params']) for o in ops] == [('PUT', {'type': 'node-affinity', 'strict': 0})]


def test_type_change_recreates_and_foreign_id_is_refused():
    live = [live_item('sn_shop_web_1_anti', type='node-affinity', resources='vm:101', nodes='pve1',
                      comment='shadownet shop: was a node rule')]
    ops = ha.plan_rules([resolved(anti())], live, 'shop')[0]
    assert [o['method'] for o in ops] == ['DELETE', 'POST']
    live[0]['comment'] = 'operator rule'
    with pytest.raises(ha.HaRuleError, match='never takes over'):
        ha.plan_rules([resolved(anti())], live, 'shop')


def test_priority_0_is_no_priority_as_pve_reads_and_writes_it():
    # PVE reads 'pve1' as priority 0 and writes priority 0 as 'pve1': a desired 'pve1:0' must not change forever.
    assert ha.parse_nodes('pve1:0,pve2') == {'pve1': None, 'pve2': None}
    want = [resolved(node_rule(nodes=['pve1:0']))]
    live = [live_item('sn_shop_web_1_node', type='node-affinity', resources='vm:101', nodes='pve1',
                      comment='shadownet shop: prefers pve1')]
    assert ha.plan_rules(want, live, 'shop')[0] == []


def test_disable_false_is_sent_as_delete_disable():
    # API2/HA/Rules.pm update_rule drops disable=0; only delete=disable enables the rule again.
    want = [resolved(node_rule(disable=False))]
    live = [live_item('sn_shop_web_1_node', type='node-affinity', resources='vm:101', nodes='pve1:2,pve2:1',
                      comment='shadownet shop: prefers pve1', disable=1)]
    ops = ha.plan_rules(want, live, 'shop')[0]
    assert [(o['method'], o['params']) for o in ops] == [('PUT', {'type': 'node-affinity', 'delete': 'disable'})]
    created = ha.plan_rules(want, [], 'shop')[0]
    assert 'disable' not in created[0]['params'] and 'delete' not in created[0]['params']
    assert ha.plan_rules([resolved(node_rule(disable=True))], [], 'shop')[0][0]['params']['disable'] == 1


# pve-ha-manager's own rule tests (src/test/rules_cfgs/*.cfg and the rules their .expect logs drop, nodes
# node1..node3 as src/test/test_rules_config.pl gives them), written as (id, type, resources, extra).
PVE_CASES = {
    'multi-priority-node-affinity-with-resource-affinity-rules': (
        [('na1', 'node-affinity', '101,102', 'node1:1,node2:2'), ('ra1', 'resource-affinity', '101,102', 'negative'),
         ('na2', 'node-affinity', '201,202', 'node1:1,node2:2'), ('ra2', 'resource-affinity', '201,202', 'positive'),
         ('na3', 'node-affinity', '301', 'node1:1'), ('na4', 'node-affinity', '302', 'node2:2'),
         ('ra3', 'resource-affinity', '301,302', 'negative')],
        ['na1', 'na2', 'ra1', 'ra2']),
    'inconsistent-node-resource-affinity-rules': (
        [('n11', 'node-affinity', '101,102', 'node1'), ('p1', 'resource-affinity', '101,102', 'positive'),
         ('n21', 'node-affinity', '201', 'node1'), ('n22', 'node-affinity', '202', 'node2'),
         ('r2', 'resource-affinity', '201,202', 'negative'),
         ('n31', 'node-affinity', '301', 'node1'), ('n32', 'node-affinity', '302', 'node2'),
         ('p3', 'resource-affinity', '301,302', 'positive'),
         ('n41', 'node-affinity', '401', 'node1'), ('n42', 'node-affinity', '402', 'node1'),
         ('r4', 'resource-affinity', '401,402', 'negative'),
         ('n51', 'node-affinity', '501', 'node1'), ('n53', 'node-affinity', '503', 'node2'),
         ('p51', 'resource-affinity', '501,502', 'positive'), ('p52', 'resource-affinity', '502,503', 'positive')],
        ['n31', 'n32', 'n41', 'n42', 'n51', 'n53', 'p3', 'p51', 'p52', 'r4']),
    'inconsistent-resource-affinity-rules': (
        [('apart1', 'resource-affinity', '102,103', 'negative'),
         ('apart2', 'resource-affinity', '102,104,106', 'negative'),
         ('together1', 'resource-affinity', '101,102,103,104,106', 'positive'),
         ('split1', 'resource-affinity', '201,202', 'positive'), ('split2', 'resource-affinity', '202,203', 'positive'),
         ('split_apart', 'resource-affinity', '201,203', 'negative')],
        ['apart1', 'apart2', 'split1', 'split2', 'split_apart', 'together1']),
    'ineffective-negative-resource-affinity-rules': (
        [('keep1', 'resource-affinity', '101,102', 'negative'),
         ('keep2', 'resource-affinity', '101,102,103', 'negative'),
         ('drop1', 'resource-affinity', '101,102,103,104', 'negative'),
         ('drop2', 'resource-affinity', '101,102,103,104,105', 'negative')],
        ['drop1', 'drop2']),
    'multiple-resource-refs-in-node-affinity-rules': (
        [('ok1', 'node-affinity', '101,102,103', 'node1,node2:2'), ('ok2', 'node-affinity', '104,105', 'node1,node2:2'),
         ('ok3', 'node-affinity', '106', 'node1,node2:2'), ('same1', 'node-affinity', '201', 'node1,node2:2'),
         ('same2', 'node-affinity', '201,202', 'node3'), ('same3', 'node-affinity', '201,203,204', 'node1:2,node3:3')],
        ['same1', 'same2', 'same3']),
    'ineffective-resource-affinity-rules': (
        [('lonely1', 'resource-affinity', '101', 'positive'), ('lonely2', 'resource-affinity', '101', 'negative')],
        ['lonely1', 'lonely2']),
}
PVE_NODES = ['node1', 'node2', 'node3']


def pve_case_rules(name):
    rules = []
    for rid, kind, sids, extra in PVE_CASES[name][0]:
        rule = dict(rule=rid, type=kind, resources=['vm:' + s for s in sids.split(',')])
        if kind == 'node-affinity':
            rule['nodes'] = ha.parse_nodes(extra)
        else:
            rule['affinity'] = extra
        rules.append(rule)
    return rules


@pytest.mark.parametrize('name', sorted(PVE_CASES))
def test_feasibility_drops_what_pve_drops(name):
    assert sorted(ha.feasibility(pve_case_rules(name), PVE_NODES)) == PVE_CASES[name][1]


@pytest.mark.parametrize('name', sorted(PVE_CASES))
def test_simulator_feasibility_drops_what_pve_drops(name):
    # The simulator's own model of the same checks (tests/lab/pvesim_cluster.py), held to PVE's expectations too.
    from lab.pvesim_cluster import rule_feasibility
    stored = {}
    for rule in pve_case_rules(name):
        item = dict(type=rule['type'], resources=','.join(rule['resources']))
        if 'nodes' in rule:
            item['nodes'] = ha.format_nodes(rule['nodes'])
        else:
            item['affinity'] = rule['affinity']
        stored[rule['rule']] = item
    assert sorted(rule_feasibility(stored, PVE_NODES)) == PVE_CASES[name][1]


def test_disabled_rules_take_no_part():
    rules = pve_case_rules('multi-priority-node-affinity-with-resource-affinity-rules')
    for rule in rules:
        if rule['rule'] == 'na1':
            rule['disable'] = True
    assert sorted(ha.feasibility(rules, PVE_NODES)) == ['na2', 'ra2']


def test_check_writes_replays_the_sequence_pve_sees():
    anti_rule = resolved(anti())
    old = resolved(node_rule())  # pve1:2,pve2:1 - two priorities
    problems = ha.check_writes(ha.plan_rules([anti_rule, old], [], 'shop')[0], [anti_rule, old], [], PVE_NODES)
    assert len(problems) == 1
    assert problems[0].startswith('HA rule sn_shop_web_1_node: PVE refuses it: "resources are in a resource affinity '
                                  'rule and cannot be in a node affinity rule with multiple priorities" (with rule '
                                  'sn_shop_web_1_anti)')
    assert problems[0].endswith('(at step: create rule sn_shop_web_1_node)')
    single = resolved(node_rule(nodes=[{'node': 'pve1', 'priority': 1}]))
    assert ha.check_writes(ha.plan_rules([anti_rule, single], [], 'shop')[0], [anti_rule, single], [], PVE_NODES) == []
    # Before a CRM is master PVE counts no nodes: every negative rule is refused.
    problems = ha.check_writes(ha.plan_rules([anti_rule], [], 'shop')[0], [anti_rule], [], [])
    assert 'rule defines more resources than available nodes' in problems[0] and "node list: empty" in problems[0]
    # A user's rule that conflicts with a rule the module leaves alone is reported too, naming it.
    live = [live_item('sn_shop_web_1_anti', type='resource-affinity', resources='vm:101,vm:103', affinity='negative',
                      comment='shadownet shop: apart'),
            live_item('mine', type='node-affinity', resources='vm:103', nodes='pve1:1,pve2:2', comment='')]
    problems = ha.check_writes([], [anti_rule], live, PVE_NODES)
    assert problems and 'with rule mine' in problems[0]
    # An update keeps a disabled rule disabled, and a disabled rule conflicts with nothing.
    live[0]['disable'] = 1
    want = [resolved(anti(comment='apart again'))]
    assert ha.check_writes(ha.plan_rules(want, live, 'shop')[0], want, live, PVE_NODES) == []

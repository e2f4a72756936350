"""The pure part of module_utils.ha: rule normalising, name resolution, ownership and the set diff."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import ha

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

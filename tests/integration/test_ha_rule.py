"""shadownet.proxmox.ha_rule against the simulator: a template's rules converged as a set."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.modules import ha_rule
from lab.modrun import ModuleFailed, run_module

NODES = [{'node': 'pve1', 'priority': 2}, {'node': 'pve2', 'priority': 1}, {'node': 'pve3', 'priority': 1}]


def plan_rules():
    return [
        {'rule': 'sn_shop_web_1_anti', 'type': 'resource-affinity', 'resources': ['shop-web-1', 'shop-web-shadow'],
         'affinity': 'negative', 'nodes': None, 'strict': False,
         'comment': "shadownet shop: keep shop-web-shadow off shop-web-1's node"},
        {'rule': 'sn_shop_web_1_node', 'type': 'node-affinity', 'resources': ['shop-web-1'], 'affinity': None,
         'nodes': NODES, 'strict': False, 'comment': 'shadownet shop: shop-web-1 prefers pve1'},
    ]


@pytest.fixture
def vms(pvesim):
    pve = pvesim.pve
    pve.add_vm(101, 'shop-web-1', node='pve1')
    pve.add_vm(102, 'shop-web-2', node='pve2')
    pve.add_vm(103, 'shop-web-shadow', node='pve3')
    return pve


def args(pve_conn, rules=None, **kwargs):
    out = dict(pve_conn, template='shop', rules=plan_rules() if rules is None else rules)
    out.update(kwargs)
    return out


def test_create_then_idempotent(pvesim, pve_conn, vms):
    result = run_module(ha_rule, args(pve_conn))
    assert result['changed']
    assert sorted(result['ha_resources_added']) == ['vm:101', 'vm:103']
    assert vms.ha_resources['vm:101']['state'] == 'started'
    anti = vms.ha_rules['sn_shop_web_1_anti']
    assert anti['type'] == 'resource-affinity' and anti['affinity'] == 'negative'
    assert anti['resources'] == 'vm:101,vm:103'
    node = vms.ha_rules['sn_shop_web_1_node']
    assert node['nodes'] == 'pve1:2,pve2:1,pve3:1' and str(node['strict']) == '0'
    assert result['rules']['sn_shop_web_1_anti'] == ['vm:101', 'vm:103']
    assert result['diff']['before']['sn_shop_web_1_anti'] == {}
    mark = pvesim.mark()
    again = run_module(ha_rule, args(pve_conn))
    assert not again['changed'] and again['changes'] == []
    assert pvesim.writes(mark) == []


def test_check_mode_writes_nothing(pvesim, pve_conn, vms):
    mark = pvesim.mark()
    result = run_module(ha_rule, args(pve_conn), check_mode=True)
    assert result['changed']
    assert 'create rule sn_shop_web_1_anti' in result['changes']
    assert 'add HA resource vm:103 (state started)' in result['changes']
    assert pvesim.writes(mark) == []
    assert vms.ha_rules == {} and vms.ha_resources == {}


def test_membership_change_updates_with_digest_and_removes_stale_owned_rules(pvesim, pve_conn, vms):
    run_module(ha_rule, args(pve_conn))
    rules = plan_rules()
    rules[0]['resources'] = ['shop-web-1', 'shop-web-2', 'shop-web-shadow']
    rules = rules[:1]
    mark = pvesim.mark()
    result = run_module(ha_rule, args(pve_conn, rules=rules))
    assert result['changed']
    assert vms.ha_rules['sn_shop_web_1_anti']['resources'] == 'vm:101,vm:102,vm:103'
    assert 'sn_shop_web_1_node' not in vms.ha_rules
    puts = [b for m, p, b in pvesim.writes(mark) if m == 'PUT']
    assert len(puts) == 1 and 'digest=' in puts[0]
    assert result['diff']['before']['sn_shop_web_1_anti']['resources'] == ['vm:101', 'vm:103']
    assert result['diff']['after']['sn_shop_web_1_anti']['resources'] == ['vm:101', 'vm:102', 'vm:103']
    assert result['diff']['after']['sn_shop_web_1_node'] == {}
    assert not run_module(ha_rule, args(pve_conn, rules=rules))['changed']


def test_user_rules_and_other_templates_are_never_touched(pvesim, pve_conn, vms, proxmoxer_api):
    run_module(ha_rule, args(pve_conn))
    proxmoxer_api.cluster.ha.rules.post(rule='my_rule', type='node-affinity', resources='vm:101', nodes='pve2')
    # Same prefix, another template's marker: template shop-x shares sn_shop_.
    proxmoxer_api.cluster.ha.rules.post(rule='sn_shop_x_db_1_node', type='node-affinity', resources='vm:103',
                                        nodes='pve3', comment='shadownet shop-x: db')
    result = run_module(ha_rule, args(pve_conn, state='absent'))
    assert sorted(result['changes']) == ['remove rule sn_shop_web_1_anti', 'remove rule sn_shop_web_1_node']
    assert sorted(vms.ha_rules) == ['my_rule', 'sn_shop_x_db_1_node']
    assert 'vm:101' in vms.ha_resources  # HA resources stay


def test_rule_id_taken_by_a_user_rule_is_refused(pvesim, pve_conn, vms, proxmoxer_api):
    proxmoxer_api.cluster.ha.resources.post(sid='vm:101')
    proxmoxer_api.cluster.ha.rules.post(rule='sn_shop_web_1_node', type='node-affinity', resources='vm:101',
                                        nodes='pve2', comment='mine')
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn))
    assert 'not managed by shadownet' in info.value.result['msg']
    assert pvesim.writes(mark) == []
    assert vms.ha_rules['sn_shop_web_1_node']['nodes'] == 'pve2'


def test_unknown_vm_and_bad_prefix_are_clear_errors(pvesim, pve_conn, vms):
    rules = plan_rules()
    rules[0]['resources'] = ['shop-web-1', 'shop-web-9']
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn, rules=rules))
    assert "'shop-web-9' is not in the cluster" in info.value.result['msg']
    rules = plan_rules()
    rules[0]['rule'] = 'other_rule'
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn, rules=rules))
    assert "must start with 'sn_shop_'" in info.value.result['msg']


def test_lost_quorum_stops_before_any_write(pvesim, pve_conn, vms):
    pvesim.pve.lose_quorum()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn))
    assert 'quorum' in info.value.result['msg']
    assert pvesim.writes(mark) == []


def test_failed_write_names_the_step(pvesim, pve_conn, vms):
    pvesim.pve.fail('POST', '/cluster/ha/rules', 500, 'cfs lock timeout', times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn))
    assert 'cfs lock timeout' in info.value.result['msg'] and 'at step: create rule' in info.value.result['msg']
    assert run_module(ha_rule, args(pve_conn))['changed']
    assert sorted(vms.ha_rules) == ['sn_shop_web_1_anti', 'sn_shop_web_1_node']


def test_plan_keys_added_later_are_ignored(pvesim, pve_conn, vms):
    rules = plan_rules()
    rules[0]['weight'] = 3
    assert run_module(ha_rule, args(pve_conn, rules=rules))['changed']
    assert sorted(vms.ha_rules) == ['sn_shop_web_1_anti', 'sn_shop_web_1_node']


def test_node_affinity_update_changes_only_what_differs(pvesim, pve_conn, vms):
    run_module(ha_rule, args(pve_conn))
    rules = plan_rules()
    rules[1]['strict'] = True
    rules[1]['nodes'] = ['pve1:3', 'pve2']
    mark = pvesim.mark()
    result = run_module(ha_rule, args(pve_conn, rules=rules))
    assert result['changes'] == ['update rule sn_shop_web_1_node (nodes, strict)']
    writes = pvesim.writes(mark)
    assert [(m, p) for m, p, b in writes] == [('PUT', '/api2/json/cluster/ha/rules/sn_shop_web_1_node')]
    rule = vms.ha_rules['sn_shop_web_1_node']
    assert rule['nodes'] == 'pve1:3,pve2' and str(rule['strict']) == '1'
    assert vms.ha_rules['sn_shop_web_1_anti']['resources'] == 'vm:101,vm:103'
    assert not run_module(ha_rule, args(pve_conn, rules=rules))['changed']

"""shadownet.proxmox.ha_rule against the simulator: a template's rules converged as a set."""
import pytest
import requests

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from ansible_collections.shadownet.proxmox.plugins.modules import ha_rule
from lab.shop import DB, SHOP, VNET_FRONT, shop_template
from lab.modrun import ModuleFailed, run_module

# The plan's form: one priority (PVE refuses several for a VM that is also in a resource-affinity rule).
NODES = [{'node': 'pve1', 'priority': 1}]
OLD_NODES = [{'node': 'pve1', 'priority': 2}, {'node': 'pve2', 'priority': 1}, {'node': 'pve3', 'priority': 1}]


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
    assert node['nodes'] == 'pve1:1' and str(node['strict']) == '0'
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
    proxmoxer_api.cluster.ha.rules.post(rule='my_rule', type='node-affinity', resources='vm:103', nodes='pve2')
    # Same prefix, another template's marker: template shop-x shares sn_shop_.
    proxmoxer_api.cluster.ha.resources.post(sid='vm:102')
    proxmoxer_api.cluster.ha.rules.post(rule='sn_shop_x_db_1_node', type='node-affinity', resources='vm:102',
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
    rules[1]['nodes'] = ['pve1', 'pve2']
    mark = pvesim.mark()
    result = run_module(ha_rule, args(pve_conn, rules=rules))
    assert result['changes'] == ['update rule sn_shop_web_1_node (nodes, strict)']
    writes = pvesim.writes(mark)
    assert [(m, p) for m, p, b in writes] == [('PUT', '/api2/json/cluster/ha/rules/sn_shop_web_1_node')]
    rule = vms.ha_rules['sn_shop_web_1_node']
    assert rule['nodes'] == 'pve1,pve2' and str(rule['strict']) == '1'
    assert vms.ha_rules['sn_shop_web_1_anti']['resources'] == 'vm:101,vm:103'
    assert not run_module(ha_rule, args(pve_conn, rules=rules))['changed']


# ------------------------------------------------------------------ PVE 9 feasibility (issue 11, point 3)

TEMPLATE = shop_template(networks=[VNET_FRONT], services=SHOP['services'] + [DB])


def plan_vms(pve, plan):
    for vmid, vm in enumerate(plan['vms'], start=101):
        pve.add_vm(vmid, vm['name'], node=vm['node'])


def raw(pvesim, method, path, **data):
    """One API call; (status, the whole JSON answer) - proxmoxer keeps only the first line of a message."""
    headers = {'Authorization': 'PVEAPIToken={0}={1}'.format(pvesim.token_id, pvesim.token_secret)}
    answer = requests.request(method, 'https://{0}:{1}/api2/json/{2}'.format(pvesim.host, pvesim.port, path),
                              data=data, headers=headers, verify=pvesim.cafile, timeout=30)
    return answer.status_code, answer.json()


def test_simulator_refuses_a_multi_priority_node_rule_with_resource_affinity_in_either_order(pvesim, proxmoxer_api,
                                                                                             vms):
    for sid in ('vm:101', 'vm:103'):
        proxmoxer_api.cluster.ha.resources.post(sid=sid)
    anti = dict(rule='anti', type='resource-affinity', resources='vm:101,vm:103', affinity='negative')
    proxmoxer_api.cluster.ha.rules.post(**anti)
    status, body = raw(pvesim, 'POST', 'cluster/ha/rules', rule='prio', type='node-affinity', resources='vm:101',
                       nodes='pve1:2,pve2:1')
    # API2/HA/Rules.pm $assert_feasibility's exception, stringified by lock_ha_domain: a plain 500.
    assert status == 500 and body['message'] == (
        "create ha rule failed: 400 Rule 'prio' is invalid.\nresources: resources are in a resource affinity rule "
        "and cannot be in a node affinity rule with multiple priorities\n")
    proxmoxer_api.cluster.ha.rules('anti').delete()
    proxmoxer_api.cluster.ha.rules.post(rule='prio', type='node-affinity', resources='vm:101', nodes='pve1:2,pve2:1')
    status, body = raw(pvesim, 'POST', 'cluster/ha/rules', **anti)
    assert status == 500 and 'resources: resources are in node affinity rules with multiple priorities' in \
        body['message']
    # One priority is fine (pve-ha-manager's own test: multi-priority-node-affinity-with-resource-affinity-rules).
    proxmoxer_api.cluster.ha.rules('prio').put(type='node-affinity', nodes='pve1:2')
    proxmoxer_api.cluster.ha.rules.post(**anti)
    assert sorted(vms.ha_rules) == ['anti', 'prio']
    status, body = raw(pvesim, 'PUT', 'cluster/ha/rules/prio', type='node-affinity', nodes='pve1:2,pve3')
    assert status == 500 and body['message'].startswith("update HA rules failed: 400 Rule 'prio' is invalid.")
    assert vms.ha_rules['prio']['nodes'] == 'pve1:2'


def test_old_multi_priority_rule_set_is_refused_before_any_write(pvesim, pve_conn, vms):
    rules = plan_rules()
    rules[1]['nodes'] = OLD_NODES
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn, rules=rules))
    msg = info.value.result['msg']
    assert 'HA rule sn_shop_web_1_node: PVE refuses it' in msg and 'multiple priorities' in msg
    assert 'with rule sn_shop_web_1_anti' in msg and 'nothing was changed' in msg
    # Not even the HA resources: PVE would refuse the rule after they were added.
    assert pvesim.writes(mark) == [] and vms.ha_resources == {}


def test_the_plans_rule_set_is_accepted_and_keeps_shadows_apart(pvesim, pve_conn):
    pve = pvesim.pve
    plan = plan_utils.plan_from_template(dict(TEMPLATE))[1]
    plan_vms(pve, plan)
    result = run_module(ha_rule, dict(pve_conn, template='shop', rules=plan['ha_rules']))
    assert result['changed']
    assert sorted(pve.ha_rules) == sorted(r['rule'] for r in plan['ha_rules'])
    vmid = {vm.name: 'vm:{0}'.format(vm.vmid) for vm in pve.vms}
    for vm in plan['vms']:
        if vm['role'] != 'shadow':
            continue
        for primary in vm['shadows']:
            anti = pve.ha_rules[next(r['rule'] for r in plan['ha_rules'] if r['resources'] == [primary, vm['name']])]
            assert anti['affinity'] == 'negative'
            assert anti['resources'].split(',') == sorted([vmid[primary], vmid[vm['name']]])
    mark = pvesim.mark()
    assert not run_module(ha_rule, dict(pve_conn, template='shop', rules=plan['ha_rules']))['changed']
    assert pvesim.writes(mark) == []


def test_listed_rules_carry_no_errors_after_a_build(pvesim, pve_conn, proxmoxer_api):
    plan = plan_utils.plan_from_template(dict(TEMPLATE))[1]
    plan_vms(pvesim.pve, plan)
    run_module(ha_rule, dict(pve_conn, template='shop', rules=plan['ha_rules']))
    listed = proxmoxer_api.cluster.ha.rules.get()
    assert len(listed) == len(plan['ha_rules']) and not [r for r in listed if r.get('errors')]


def test_rules_wait_for_the_crm_node_list(pvesim, pve_conn, vms):
    """Before a CRM is master its node list is empty, and PVE refuses every negative rule then."""
    pve = vms
    pve.time_scale = 1
    pve.ha_crm_start_secs = 1.0   # real seconds here
    assert pve.ha_node_status == {}
    result = run_module(ha_rule, args(pve_conn))
    assert result['changed'] and sorted(pve.ha_rules) == ['sn_shop_web_1_anti', 'sn_shop_web_1_node']
    assert sorted(pve.ha_node_status) == ['pve1', 'pve2', 'pve3']


def test_a_crm_that_never_becomes_master_is_a_clear_error(pvesim, pve_conn, vms):
    vms.ha_crm_running = False
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn, crm_timeout=1))
    msg = info.value.result['msg']
    assert 'the HA manager has no node list 1s after adding HA resource(s) vm:101, vm:103' in msg
    assert 'pve-ha-crm' in msg and 'no rule was written' in msg
    assert not [p for m, p, b in pvesim.writes(mark) if p.endswith('/cluster/ha/rules')]
    assert vms.ha_rules == {}


def test_a_rule_pve_marks_invalid_later_is_reported(pvesim, pve_conn, vms, proxmoxer_api):
    run_module(ha_rule, args(pve_conn))
    # The CRM's node list as its file says after nodes left the cluster (the CRM stopped here, so it stays so):
    # the negative rule has more VMs than the HA manager has nodes now.
    vms.ha_crm_running = False
    vms.ha_node_status = {'pve1': 'online'}
    assert proxmoxer_api.cluster.ha.rules('sn_shop_web_1_anti').get()['errors'] == {
        'resources': ['rule defines more resources than available nodes']}
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, args(pve_conn))
    msg = info.value.result['msg']
    assert 'HA rule sn_shop_web_1_anti: PVE refuses it: "rule defines more resources than available nodes"' in msg
    assert "the HA manager's node list: pve1" in msg
    assert pvesim.writes(mark) == []


# ------------------------------------------------------------------ disable (issue 11, point 9)

def test_simulator_drops_disable_0_as_pve_does(pvesim, proxmoxer_api, vms):
    proxmoxer_api.cluster.ha.resources.post(sid='vm:101')
    proxmoxer_api.cluster.ha.rules.post(rule='r1', type='node-affinity', resources='vm:101', nodes='pve1', disable=1)
    proxmoxer_api.cluster.ha.rules('r1').put(type='node-affinity', disable=0)
    assert vms.ha_rules['r1']['disable'] == 1
    proxmoxer_api.cluster.ha.rules('r1').put(type='node-affinity', delete='disable')
    assert 'disable' not in vms.ha_rules['r1']


def test_disable_false_enables_a_disabled_rule(pvesim, pve_conn, vms):
    rules = plan_rules()
    rules[1]['disable'] = True
    run_module(ha_rule, args(pve_conn, rules=rules))
    assert vms.ha_rules['sn_shop_web_1_node']['disable'] == 1
    rules[1]['disable'] = False
    mark = pvesim.mark()
    result = run_module(ha_rule, args(pve_conn, rules=rules))
    assert result['changes'] == ['update rule sn_shop_web_1_node (disable)']
    puts = [b for m, p, b in pvesim.writes(mark) if m == 'PUT']
    assert len(puts) == 1 and 'delete=disable' in puts[0]
    assert 'disable' not in vms.ha_rules['sn_shop_web_1_node']
    assert not run_module(ha_rule, args(pve_conn, rules=rules))['changed']


def test_unmigrated_ha_groups_are_refused_before_any_write(pvesim, pve_conn, vms):
    """pve-ha-manager API2/HA/Rules.pm create_rule/update_rule refuse every rule while groups.cfg has entries (HA
    groups of an upgraded cluster the CRM has not migrated yet). Before, ha_rule added the HA resources and then
    stopped at the first rule: half done. Now it reads the groups first, names them and what lets PVE migrate them,
    and writes nothing, also in check mode; once the CRM migrated them the same run converges."""
    vms.ha_groups = {'prod': {'nodes': 'pve1:2,pve2', 'restricted': 0}}
    for check_mode in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(ha_rule, args(pve_conn), check_mode=check_mode)
        msg = info.value.result['msg']
        assert 'HA group(s) prod have not been migrated to HA rules yet' in msg and 'pve-manager 9.0.0~16' in msg
        assert 'every LRM is active or idle' in msg and msg.endswith('nothing was changed')
        assert pvesim.writes(mark) == [] and vms.ha_resources == {} and vms.ha_rules == {}
    vms.ha_migrate_groups()
    result = run_module(ha_rule, args(pve_conn))
    assert result['changed'] and sorted(vms.ha_rules) == ['sn_shop_web_1_anti', 'sn_shop_web_1_node']


def test_simulator_answers_ha_groups_as_pve_does(pvesim, vms):
    """Groups.pm index dies once migrated (or on a cluster without groups); Rules.pm refuses writes before; GET rules
    lists a used group as rule ha-group-<group> (Groups.pm migrate_groups_to_rules); Resources.pm refuses `group`
    after the migration."""
    status, body = raw(pvesim, 'GET', 'cluster/ha/groups')
    assert status == 500 and 'cannot index groups: ha groups have been migrated to rules' in body['message']
    vms.ha_groups = {'prod': {'nodes': 'pve1:2,pve2', 'restricted': 1}}
    vms.ha_resources['vm:101'] = {'state': 'started', 'group': 'prod'}
    status, body = raw(pvesim, 'GET', 'cluster/ha/groups')
    assert status == 200 and [g['group'] for g in body['data']] == ['prod']
    status, body = raw(pvesim, 'GET', 'cluster/ha/rules')
    generated = [r for r in body['data'] if r['rule'] == 'ha-group-prod']
    assert generated and generated[0]['resources'] == 'vm:101' and str(generated[0]['strict']) == '1'
    assert "Generated from HA group 'prod'." == generated[0]['comment']
    vms.ha_resources['vm:103'] = {'state': 'started'}
    status, body = raw(pvesim, 'POST', 'cluster/ha/rules', rule='r1', type='resource-affinity',
                       resources='vm:101,vm:103', affinity='negative')
    assert status == 500 and 'cannot create ha rule: ha groups have not been migrated yet' in body['message']
    status, body = raw(pvesim, 'PUT', 'cluster/ha/rules/ha-group-prod', type='node-affinity', nodes='pve1')
    assert status == 500 and 'cannot update ha rule: ha groups have not been migrated yet' in body['message']
    vms.ha_migrate_groups()
    assert vms.ha_rules['ha-group-prod']['resources'] == 'vm:101' and 'group' not in vms.ha_resources['vm:101']
    status, body = raw(pvesim, 'POST', 'cluster/ha/resources', sid='vm:102', group='prod')
    assert status == 500 and "invalid parameter 'group': ha groups have been migrated to rules" in body['message']

"""The documented least-privilege role (README "Quick start", lab cluster's ShadownetOperator) is enough for the
build, and a missing privilege is named in the error."""
import copy

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import ha_rule, linked_clone, vnet
from lab.modrun import ModuleFailed, run_module

TEMPLATE = {
    'name': 'shop',
    'nodes': ['pve1', 'pve2', 'pve3'],
    'pool': 'shadownet',
    'networks': [{'name': 'front', 'type': 'vnet', 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1'}],
    'services': [{'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048,
                  'networks': ['front'], 'vip': '10.10.0.100/24', 'critical': True}],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/srv']}},
}


def least(pve_conn, pvesim):
    conn = dict(pve_conn)
    conn.update(api_user='shadownet@pve', api_token_id='automation',
                api_token_secret=pvesim.pve.apitokens['shadownet@pve!automation'])
    return conn


def test_least_privilege_token_builds_networks_and_instances(pvesim, pve_conn):
    plan = plan_from_template(copy.deepcopy(TEMPLATE))[1]
    conn = least(pve_conn, pvesim)
    nets = run_module(vnet, dict(conn, networks=plan['networks']))
    assert nets['changed']
    vms = run_module(linked_clone, dict(conn, plan=plan, state='started'))
    assert vms['changed'] and len(vms['vms']) == 3
    assert not run_module(linked_clone, dict(conn, plan=plan, state='started'))['changed']


def test_missing_privilege_is_named(pvesim, pve_conn):
    plan = plan_from_template(copy.deepcopy(TEMPLATE))[1]
    run_module(linked_clone, dict(pve_conn, plan=plan))  # built by root
    auditor = dict(pve_conn, api_user='auditor@pve', api_token_id='readonly',
                   api_token_secret=pvesim.pve.apitokens['auditor@pve!readonly'])
    bigger = copy.deepcopy(TEMPLATE)
    bigger['services'][0]['cores'] = 4
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, dict(auditor, plan=plan_from_template(bigger)[1]))
    assert 'VM.Config.CPU' in info.value.result['msg']
    assert 'lacks privilege' in info.value.result['msg']
    assert not [w for w in pvesim.writes(mark) if w[0] == 'POST']  # refused before any clone


def test_ha_rules_need_sys_console_and_say_so(pvesim, pve_conn):
    plan = plan_from_template(copy.deepcopy(TEMPLATE))[1]
    run_module(linked_clone, dict(pve_conn, plan=plan))
    conn = least(pve_conn, pvesim)
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, dict(conn, template='shop', rules=plan['ha_rules']))
    assert 'lacks privilege Sys.Console on /' in info.value.result['msg']

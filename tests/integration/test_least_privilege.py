"""The documented least-privilege user (README "Quick start", docs/pve-compatibility.md "Privileges per module",
the lab cluster's shadownet@pve with the roles Shadownet, ShadownetNode and ShadownetRoot) runs the real build,
failover, scaling (with the canary's guest agent file-read), shadow refresh and inventory; a missing privilege is
named in the error.

The simulator checks what PVE 9 checks (tests/lab/pvesim_perms.py): the privilege names (no VM.Monitor), the
checks inside the API methods (SDN.Use on bridges, Datastore.AllocateSpace for clones, Sys.Modify on / for
`startup`, Sys.Console on / for HA) and ACL propagation.
"""
import copy
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.modules import (
    failover, forecast, ha_rule, linked_clone, metrics, scale, shadow_refresh, vnet)
from lab.canary import STATS_PATH, counters
from lab.modrun import ModuleFailed, run_module
from lab.shop import plan_of

TEMPLATE = {
    'name': 'shop',
    'nodes': ['pve1', 'pve2', 'pve3'],
    'pool': 'shadownet',
    'networks': [{'name': 'front', 'type': 'vnet', 'cidr': '10.10.0.0/24', 'gateway': '10.10.0.1'},
                 {'name': 'lan', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '192.0.2.0/24'}],
    'services': [{'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048,
                  'networks': ['front', 'lan'], 'vip': '10.10.0.100/24', 'critical': True}],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/srv']},
               'replay': {'mode': 'http', 'port': 80}},
    'scaling': {'instances': {'min': 1, 'max': 4}, 'cooldown': {'up': '3m', 'down': '10m'}},
}
# A node bridge the vnet module creates on each node (pve-manager API2/Network.pm: Sys.Modify on /nodes/<node>).
NODE_BRIDGE = {'type': 'bridge', 'bridge': 'vmbr5', 'nodes': ['pve1', 'pve2', 'pve3']}
GIB = 1024 ** 3


def least(pve_conn, pvesim):
    conn = dict(pve_conn)
    conn.update(api_user='shadownet@pve', api_token_id='automation',
                api_token_secret=pvesim.pve.apitokens['shadownet@pve!automation'])
    return conn


def build(conn, plan):
    """What roles/shadow_network/tasks/build.yml does: networks, primaries, shadows, HA rules; and a node bridge."""
    nets = run_module(vnet, dict(conn, networks=plan['networks'] + [NODE_BRIDGE]))
    primaries = run_module(linked_clone, dict(conn, plan=plan, roles=['primary'], state='started'))
    shadows = run_module(linked_clone, dict(conn, plan=plan, roles=['shadow'], state='started'))
    rules = run_module(ha_rule, dict(conn, template='shop', rules=plan['ha_rules']))
    return nets, primaries, shadows, rules


def by_name(pvesim):
    return dict((vm.name, vm) for vm in pvesim.pve.vms if vm.name)


@pytest.fixture
def built(pvesim, pve_conn, plan):
    conn = least(pve_conn, pvesim)
    build(conn, plan)
    return conn


def test_least_privilege_token_builds_everything_and_reruns_clean(pvesim, pve_conn, plan):
    conn = least(pve_conn, pvesim)
    nets, primaries, shadows, rules = build(conn, plan)
    assert nets['changed'] and primaries['changed'] and shadows['changed'] and rules['changed']
    # The node bridge needed Sys.Modify on /nodes/<node> (ShadownetNode), the HA rules Sys.Console on /.
    assert all('vmbr5' in pvesim.pve.node_networks[n]['running'] for n in ('pve1', 'pve2', 'pve3'))
    assert sorted(n for n in by_name(pvesim) if n.startswith('shop-')) == ['shop-web-1', 'shop-web-2',
                                                                           'shop-web-shadow']
    assert pvesim.pve.ha_rules
    mark = pvesim.mark()
    again = build(conn, plan)
    assert not any(r['changed'] for r in again)
    assert pvesim.writes(mark) == []


def test_failover_activate_remediate_failback(pvesim, built, plan):
    vms = by_name(pvesim)
    primary, shadow = vms['shop-web-1'], vms['shop-web-shadow']
    primary.status = primary.qmpstatus = 'stopped'
    args = dict(built, plan=plan, service='web', min_uptime=0, timeout=20)
    # activate writes cores, memory and the description (VM.Config.CPU, .Memory, .Options on the shadow).
    act = run_module(failover, dict(args, step='activate'))
    assert act['changed'] and act['activate']['size'] == {'cores': 2, 'memory': 2048}
    since = meta_utils.parse_description(shadow.config['description'])[1]['failover']['since']
    assert run_module(failover, dict(args, step='remediate'))['changed']  # VM.PowerMgmt
    assert primary.status == 'running'
    back = run_module(failover, dict(args, step='failback', catch_up_facts={'shop-web-1': str(since + 1)}))
    assert back['changed'] and 'failover' not in (meta_utils.parse_description(shadow.config['description'])[1] or {})


def test_scale_out(pvesim, built, plan, tmp_path):
    end = int(time.time()) // 60 * 60
    rising = [0.10 + 0.0095 * i for i in range(60)]  # 10% -> 66%, the forecast crosses 70%
    for name, vm in by_name(pvesim).items():
        if name in ('shop-web-1', 'shop-web-2'):
            pvesim.pve.inject_rrd(vm.vmid, [{'time': end - 60 * (len(rising) - 1 - i), 'cpu': v, 'maxcpu': 2,
                                             'mem': GIB, 'maxmem': 2 * GIB, 'netin': 0, 'netout': 0}
                                            for i, v in enumerate(rising)])
    # The canary's counters in the shadow, read with the guest agent's file-read (VM.GuestAgent.FileRead).
    pvesim.pve.put_guest_file(by_name(pvesim)['shop-web-shadow'].vmid, STATS_PATH, counters(requests=10, p95=0.01))
    history = str(tmp_path / 'h.sqlite')
    run_module(metrics, dict(built, plans={'shop': plan}, history_path=history))
    decisions = run_module(forecast, dict(built, plans={'shop': plan}, history_path=history))['decisions']
    assert decisions[0]['action'] == 'scale_up', decisions[0]['reason']
    assert decisions[0]['canary']['live'], decisions[0]['canary']
    result = run_module(scale, dict(built, plans={'shop': plan}, decisions=decisions))
    assert result['changed'] and result['results'][0]['created'] == ['shop-web-3']
    # The anchor's record: tags and description (VM.Config.Options).
    assert 'sn-last.scale_up' in by_name(pvesim)['shop-web-1'].config['tags']


def test_shadow_refresh_restores_startup_and_ha(pvesim, built):
    shadow = by_name(pvesim)['shop-web-shadow']
    # `startup` on the shadow: its restore needs Sys.Modify on / (qemu-server $check_vm_modify_config_perm).
    shadow.config['startup'] = 'order=2'
    result = run_module(shadow_refresh, dict(built, primary='shop-web-1', shadow='shop-web-shadow', timeout=120))
    assert result['changed'] and not result['skipped']
    fresh = by_name(pvesim)['shop-web-shadow']
    assert fresh.vmid == shadow.vmid and fresh.config['startup'] == 'order=2'
    assert 'vm:{0}'.format(fresh.vmid) in pvesim.pve.ha_resources


def test_inventory_reads_agent_addresses(pvesim, built):
    from lab.inventory import LAB_FILE, env_for, inventory  # the plugin run by ansible-inventory
    vm = by_name(pvesim)['shop-web-1']
    mac = vm.config['net0'].split(',')[0].split('=')[1].lower()
    vm.agent = {'interfaces': [{'name': 'eth0', 'hardware-address': mac, 'ip-addresses': [
        {'ip-address': '10.10.0.11', 'ip-address-type': 'ipv4', 'prefix': 24}]}]}
    token = ('shadownet@pve!automation', pvesim.pve.apitokens['shadownet@pve!automation'])
    hostvars = inventory(LAB_FILE, env_for(pvesim, token))['_meta']['hostvars']
    # network-get-interfaces needs VM.GuestAgent.Audit (qemu-server API2/Qemu/Agent.pm).
    assert '10.10.0.11' in hostvars['shop-web-1']['pve_agent_addresses']


def test_missing_privilege_is_named(pvesim, pve_conn, plan):
    run_module(linked_clone, dict(pve_conn, plan=plan))  # built by root
    auditor = dict(pve_conn, api_user='auditor@pve', api_token_id='readonly',
                   api_token_secret=pvesim.pve.apitokens['auditor@pve!readonly'])
    bigger = copy.deepcopy(TEMPLATE)
    bigger['services'][0]['cores'] = 4
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(linked_clone, dict(auditor, plan=plan_of(bigger)))
    assert 'VM.Config.CPU' in info.value.result['msg']
    assert 'lacks privilege' in info.value.result['msg']
    assert not [w for w in pvesim.writes(mark) if w[0] == 'POST']  # refused before any clone


def test_ha_rules_need_sys_console_on_root_and_say_so(pvesim, pve_conn, plan):
    run_module(linked_clone, dict(pve_conn, plan=plan))
    # Everything of the documented user but ShadownetRoot on /: HA writes are refused, naming the privilege.
    pvesim.pve.apitokens['ops@pve!t'] = 'lab-only-ops'
    for path in ('/vms', '/pool/shadownet', '/storage', '/sdn'):
        pvesim.pve.grant('ops@pve', path, *pvesim.pve.roles['Shadownet'])
    pvesim.pve.grant('ops@pve', '/', 'Sys.Audit')
    conn = dict(pve_conn, api_user='ops@pve', api_token_id='t', api_token_secret='lab-only-ops')
    with pytest.raises(ModuleFailed) as info:
        run_module(ha_rule, dict(conn, template='shop', rules=plan['ha_rules']))
    assert 'lacks privilege Sys.Console on /' in info.value.result['msg']

"""failover against pvesim: detect, activate, remediate, failback, auto; idempotence, check mode, faults."""
import json
import re

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import failover as failover_utils
from ansible_collections.shadownet.proxmox.plugins.modules import failover
from lab.modrun import ModuleFailed, run_module
from lab.playbook import VENV_PY, ansible_playbook
from lab.shop import SHOP

TEMPLATE = SHOP


def fo(pve_conn, plan, step, check_mode=False, **extra):
    args = dict(pve_conn, plan=plan, service='web', step=step, min_uptime=0, timeout=20)
    args.update(extra)
    return run_module(failover, args, check_mode=check_mode)


def effective(vm, key):
    """The value the VM has after its next start (pending included), as PVE's GET config shows it."""
    value = vm.pending[key] if key in vm.pending else vm.config.get(key)
    return int(str(value).split('=')[-1]) if value is not None else None


def failover_mark(vm):
    return (meta_utils.parse_description(vm.config.get('description', ''))[1] or {}).get('failover')


def stop(vm):
    vm.status = vm.qmpstatus = 'stopped'
    vm.started_at = None


def test_detect_healthy(pvesim, pve_conn, plan, built):
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'detect', state_dir_facts={'shop-web-1': 'MASTER', 'shop-web-shadow': 'BACKUP'})
    assert not result['changed']
    report = result['detect']
    assert report['primaries_down'] == [] and not report['runs_on_shadow'] and report['quorate']
    assert [v['name'] for v in report['primaries']] == ['shop-web-1', 'shop-web-2']
    assert all(v['healthy'] and v['qmpstatus'] == 'running' for v in report['primaries'])
    assert report['shadow']['name'] == 'shop-web-shadow' and report['shadow']['healthy']
    assert not report['shadow']['active'] and report['vip_master'] == 'shop-web-1'
    assert result['lines'][0].startswith('detect: shop-web-1 up; shop-web-2 up; shadow shop-web-shadow up')
    # auto on a healthy service: nothing to do, nothing written.
    again = fo(pve_conn, plan, 'auto')
    assert not again['changed'] and again['steps'] == ['detect', 'remediate', 'failback']
    assert pvesim.writes(mark) == []


def test_stopped_primary_activate_remediate_failback(pvesim, pve_conn, plan, built):
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    assert effective(shadow, 'cores') == 1 and effective(shadow, 'memory') == 1024
    stop(primary)
    report = fo(pve_conn, plan, 'detect')['detect']
    assert report['primaries_down'] == ['shop-web-1']
    assert report['primaries'][0]['problem'] == 'stopped' and not report['runs_on_shadow']

    # activate: the shadow grows to the primary's size (pending on the running shadow) and is marked active.
    mark = pvesim.mark()
    act = fo(pve_conn, plan, 'activate')
    assert act['changed'] and act['activate']['size'] == {'cores': 2, 'memory': 2048}
    assert effective(shadow, 'cores') == 2 and effective(shadow, 'memory') == 2048
    assert 'cores' in act['activate']['pending']
    since = failover_mark(shadow)['since']
    assert failover_mark(shadow)['active'] is True and since > 0
    puts = [w for w in pvesim.writes(mark)]
    assert [(m, p) for m, p, b in puts] == [('PUT', '/api2/json/nodes/{0}/qemu/{1}/config'.format(
        shadow.node, shadow.vmid))]
    assert act['diff']['after']['shop-web-shadow']['cores'] == 2
    # activate again: nothing to write, the mark keeps its time.
    mark = pvesim.mark()
    assert not fo(pve_conn, plan, 'activate')['changed']
    assert pvesim.writes(mark) == [] and failover_mark(shadow)['since'] == since

    # remediate: the stopped primary is started, and only that.
    mark = pvesim.mark()
    rem = fo(pve_conn, plan, 'remediate')
    assert rem['changed']
    assert rem['remediation'] == [dict(name='shop-web-1', vmid=primary.vmid, node=primary.node, problem='stopped',
                                       action='start', result='done', msg='start shop-web-1 on ' + primary.node)]
    assert primary.status == 'running' and primary.qmpstatus == 'running'
    assert [(m, p) for m, p, b in pvesim.writes(mark)] == [
        ('POST', '/api2/json/nodes/{0}/qemu/{1}/status/start'.format(primary.node, primary.vmid))]

    # failback waits for the primary's state to catch up with what the shadow took while it served
    # (differential: the state_replication role's catch_up run writes the time it finished).
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as refused:
        fo(pve_conn, plan, 'failback')
    assert 'shop-web-1 has not caught up with the state the shadow took' in refused.value.result['msg']
    with pytest.raises(ModuleFailed):
        fo(pve_conn, plan, 'failback', catch_up_facts={'shop-web-1': since - 5})
    assert pvesim.writes(mark) == []
    deferred = fo(pve_conn, plan, 'auto')
    assert not deferred['changed'] and deferred['failback']['catch_up_needed'] == ['shop-web-1']
    # failback: the shadow goes back to its plan size and loses the mark.
    back = fo(pve_conn, plan, 'failback', catch_up_facts={'shop-web-1': str(since + 1)})
    assert back['changed'] and back['failback']['size'] == {'cores': 1, 'memory': 1024}
    assert effective(shadow, 'cores') == 1 and effective(shadow, 'memory') == 1024
    assert failover_mark(shadow) is None
    assert 'shadownet:begin' in shadow.config['description']

    # every step again: changed false, zero writes.
    mark = pvesim.mark()
    for step in ('remediate', 'failback', 'auto'):
        assert not fo(pve_conn, plan, step)['changed'], step
    assert pvesim.writes(mark) == []


def test_auto_converges_in_two_runs_then_changes_nothing(pvesim, pve_conn, plan, built):
    primary, shadow = built['shop-web-2'], built['shop-web-shadow']
    stop(primary)
    first = fo(pve_conn, plan, 'auto', min_uptime=60)
    assert first['changed'] and first['steps'] == ['detect', 'activate', 'remediate']
    assert primary.status == 'running' and failover_mark(shadow)['active'] is True
    # The primary was started by this run: failback waits for min_uptime (no flapping).
    assert any('shop-web-2 is up for' in reason for reason in first['failback']['deferred'])
    assert any(line.startswith('failback: deferred') for line in first['lines'])
    second = fo(pve_conn, plan, 'auto', min_uptime=0, catch_up_facts={'shop-web-1': {'caught_up_at': 2 ** 31}})
    assert second['changed'] and second['steps'] == ['detect', 'remediate', 'failback']
    assert failover_mark(shadow) is None and effective(shadow, 'cores') == 1
    mark = pvesim.mark()
    third = fo(pve_conn, plan, 'auto', min_uptime=0)
    assert not third['changed'] and pvesim.writes(mark) == []


def test_check_mode_writes_nothing(pvesim, pve_conn, plan, built):
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    stop(primary)
    mark = pvesim.mark()
    for step in ('activate', 'remediate', 'auto'):
        result = fo(pve_conn, plan, step, check_mode=True)
        assert result['changed'], step
    assert result['remediation'][0]['result'] == 'would'
    assert result['diff']['after']['shop-web-shadow']['cores'] == 2
    assert any(line.startswith('activate: would grow shadow shop-web-shadow') for line in result['lines'])
    assert pvesim.writes(mark) == []
    assert primary.status == 'stopped' and effective(shadow, 'cores') == 1 and failover_mark(shadow) is None


def test_vm_that_does_not_start(pvesim, pve_conn, plan, built):
    primary = built['shop-web-1']
    stop(primary)
    primary.start_error = 'QEMU exited with code 1'
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'remediate')
    msg = info.value.result['msg']
    assert 'shop-web-1' in msg and 'did not start' in msg and 'QEMU exited with code 1' in msg
    assert info.value.result['remediation'][0]['result'] == 'failed'
    assert primary.status == 'stopped'


def test_ha_primary_that_does_not_start_is_held_in_ha_error(pvesim, pve_conn, plan, built):
    """An HA-managed primary's start only asks HA; when the LRM cannot start it the CRM puts it in its error state,
    where HA neither starts nor moves it again. The module fails at once with how to clear it (not after waiting
    out its timeout), a second run reports it unresolved without writing, and once cleared it starts."""
    primary = built['shop-web-1']
    sid = 'vm:{0}'.format(primary.vmid)
    stop(primary)
    pvesim.pve.ha_resources[sid] = {'state': 'started'}
    pvesim.pve._ha_vm_state(sid)
    primary.start_error = 'QEMU exited with code 1'
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'remediate', timeout=600)
    msg = info.value.result['msg']
    assert 'HA holds shop-web-1 ({0}, on {1}) in its error state'.format(sid, primary.node) in msg
    assert 'ha-manager set {0} --state disabled'.format(sid) in msg
    assert info.value.result['remediation'][0]['result'] == 'failed' and primary.status == 'stopped'
    assert [move[0] for move in pvesim.pve.ha_relocations] == [sid]     # tried on another node first (max_relocate)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate')
    item = result['remediation'][0]
    assert (item['problem'], item['action'], item['result']) == ('stopped', 'none', 'unresolved')
    assert 'in its error state' in item['msg'] and not result['changed'] and pvesim.writes(mark) == []
    detect = fo(pve_conn, plan, 'detect')['detect']
    assert detect['primaries'][0]['ha_service'] == 'error'
    # fixed and cleared as the message says: the next run starts it through HA
    primary.start_error = None
    pvesim.pve.ha_resources[sid]['state'] = 'disabled'
    pvesim.pve._ha_vm_state(sid)
    pvesim.pve.ha_resources[sid]['state'] = 'started'
    pvesim.pve._ha_vm_state(sid)
    done = fo(pve_conn, plan, 'remediate')['remediation'][0]
    assert (done['action'], done['result']) == ('start', 'done') and primary.status == 'running'


def test_hung_primary_in_ha_error_is_still_reset(pvesim, pve_conn, plan, built):
    """A failed stop through HA leaves a running VM in HA's error state; a reset and a resume do not go through HA,
    so failover still repairs a hung primary there (only a start would do nothing)."""
    primary = built['shop-web-1']
    sid = 'vm:{0}'.format(primary.vmid)
    pvesim.pve.ha_resources[sid] = {'state': 'started'}
    pvesim.pve._ha_vm_state(sid)
    pvesim.pve.ha_start_failed(primary, 'stop failed')
    primary.status, primary.qmpstatus = 'running', 'internal-error'
    report = fo(pve_conn, plan, 'detect')['detect']
    assert (report['primaries'][0]['problem'], report['primaries'][0]['ha_service']) == ('hung', 'error')
    item = fo(pve_conn, plan, 'remediate')['remediation'][0]
    assert (item['action'], item['result']) == ('reset', 'done') and primary.qmpstatus == 'running'


def test_hung_primary_is_reset_and_resumed(pvesim, pve_conn, plan, built):
    primary = built['shop-web-1']
    primary.qmpstatus = 'internal-error'
    report = fo(pve_conn, plan, 'detect')['detect']
    assert report['primaries'][0]['problem'] == 'hung'
    mark = pvesim.mark()
    rem = fo(pve_conn, plan, 'remediate')
    assert rem['remediation'][0]['action'] == 'reset' and rem['remediation'][0]['result'] == 'done'
    paths = [p.rsplit('/', 1)[-1] for m, p, b in pvesim.writes(mark)]
    # The simulator leaves QEMU's state alone on reset (as after a crash): the module resumes it.
    assert paths == ['reset', 'resume'] and primary.qmpstatus == 'running'


def test_hibernated_primary_is_started_from_its_saved_state(pvesim, pve_conn, plan, built):
    # A VM suspended to disk is stopped with lock 'suspended' until it is started: qemu-server vm_start skips the lock
    # check for it and resumes from the saved state. Before, "locked (suspended): not touched" for ever.
    primary = built['shop-web-1']
    stop(primary)
    primary.lock = 'suspended'
    mark = pvesim.mark()
    rem = fo(pve_conn, plan, 'remediate')
    assert rem['remediation'][0]['action'] == 'start' and rem['remediation'][0]['result'] == 'done', rem
    assert 'hibernated' in rem['remediation'][0]['msg']
    assert [p.rsplit('/', 1)[-1] for m, p, b in pvesim.writes(mark)] == ['start']
    assert primary.status == 'running' and primary.lock is None


def test_a_primary_pve_forgot_the_name_of_is_not_to_be_rebuilt(pvesim, pve_conn, plan, built):
    # 5 minutes after its node went silent, pmxcfs has dropped the VM's name from /cluster/resources (its tags stay).
    primary = built['shop-web-1']
    pvesim.pve.set_node_offline(primary.node)
    pvesim.pve.statd_expire_offline()
    mark = pvesim.mark()
    item = fo(pve_conn, plan, 'remediate')['remediation'][0]
    assert item['problem'] == 'missing' and item['action'] == 'none', item
    assert 'vmid {0} on {1}'.format(primary.vmid, primary.node) in item['msg'] and 'do not rebuild' in item['msg']
    assert 'site.yml' not in item['msg'] and pvesim.writes(mark) == []


def test_node_offline_is_reported_by_name(pvesim, pve_conn, plan, built):
    primary = built['shop-web-1']
    pvesim.pve.set_node_offline(primary.node)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate')
    item = result['remediation'][0]
    assert item['problem'] == 'node_offline' and item['action'] == 'none' and item['result'] == 'unresolved'
    assert "node {0} is offline".format(primary.node) in item['msg'] and 'shop-web-1' in item['msg']
    assert 'not HA-managed' in item['msg']
    assert 'node {0} is offline'.format(primary.node) in str(result.get('warnings'))
    assert any(line.startswith('remediate: UNRESOLVED: node {0} is offline'.format(primary.node))
               for line in result['lines'])
    assert not result['changed'] and pvesim.writes(mark) == []
    # With HA managing the VM, HA recovers it: the module says so and still writes nothing.
    pvesim.pve.set_node_offline(primary.node, False)
    pvesim.pve.ha_resources['vm:{0}'.format(primary.vmid)] = {'state': 'started'}
    pvesim.pve.set_node_offline(primary.node)
    mark = pvesim.mark()
    item = fo(pve_conn, plan, 'remediate', offline_recovery='report')['remediation'][0]
    assert item['action'] == 'ha_recovery' and item['result'] == 'waiting' and 'HA manages shop-web-1' in item['msg']
    assert pvesim.writes(mark) == []


def test_primary_on_offline_node_recovered_by_ha(pvesim, pve_conn, plan, built):
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    dead = primary.node
    pvesim.pve.set_node_offline(dead)
    # Without HA recovery in the cluster, wait gives up after the timeout: not a failure, a warning to run again.
    waited = fo(pve_conn, plan, 'remediate', offline_recovery='ha', timeout=2)
    item = waited['remediation'][0]
    assert item['action'] == 'ha_add' and item['result'] == 'waiting' and 'run again later' in item['msg']
    assert 'vm:{0}'.format(primary.vmid) in pvesim.pve.ha_resources
    # The CRM fences the node and recovers the primary elsewhere (not on its shadow's node: negative affinity).
    pvesim.pve.ha_rules['sn_shop_web_1_anti'] = {'type': 'resource-affinity', 'affinity': 'negative',
                                                 'resources': 'vm:{0},vm:{1}'.format(primary.vmid, shadow.vmid)}
    pvesim.pve.ha_resources['vm:{0}'.format(shadow.vmid)] = {'state': 'started'}
    # Fenced 1.5 s after the simulator first sees the node offline (real time here): after detect, while the
    # module waits.
    pvesim.pve.time_scale = 1
    pvesim.pve.enable_ha_recovery(fence_secs=1.5)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'auto', catch_up='skip')
    item = result['remediation'][0]
    assert item['action'] == 'ha_wait' and item['result'] == 'done', item
    assert primary.node not in (dead, shadow.node) and item['recovered_on'] == primary.node
    assert primary.status == 'running'
    assert pvesim.pve.ha_recoveries and pvesim.pve.ha_recoveries[0][:3] == ('vm:{0}'.format(primary.vmid), dead,
                                                                            primary.node)
    # Waiting is no write; the shadow was activated while the primary was away, then failed back.
    assert result['steps'] == ['detect', 'activate', 'remediate', 'failback']
    assert not any(p.endswith('/cluster/ha/resources') for m, p, b in pvesim.writes(mark))
    assert failover_mark(shadow) is None


def test_ha_recovery_in_check_mode_writes_nothing(pvesim, pve_conn, plan, built):
    primary = built['shop-web-1']
    pvesim.pve.set_node_offline(primary.node)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate', check_mode=True, offline_recovery='ha')
    item = result['remediation'][0]
    assert item['action'] == 'ha_add' and item['result'] == 'would' and result['changed']
    assert pvesim.writes(mark) == [] and not pvesim.pve.ha_resources


def ha_add(pve, vm, **options):
    """An HA resource as `ha-manager add vm:N` stores it: only the options given (no `state` key by default)."""
    sid = 'vm:{0}'.format(vm.vmid)
    pve.ha_resources[sid] = dict(options)
    pve._ha_vm_state(sid)
    return sid


def ha_node_lost(pve, vm, fence_secs, **options):
    """``vm`` made an HA resource (ha_add), its node gone offline, and HA recovering after ``fence_secs`` of wall
    clock; its sid."""
    sid = ha_add(pve, vm, **options)
    pve.set_node_offline(vm.node)
    pve.time_scale = 1
    pve.enable_ha_recovery(fence_secs=fence_secs)
    return sid


def test_offline_ha_primary_without_a_stored_state_is_waited_for(pvesim, pve_conn, plan, built, proxmoxer_api):
    """GET /cluster/ha/resources lists only stored keys: `ha-manager add` stores no state, whose default is started
    (HA/Config.pm read_and_check_resources_config). Before, failover took such a primary as not HA-managed
    (UNRESOLVED, advising offline_recovery=ha, whose POST then fails "already defined"); now it waits for HA, says
    when HA is still fencing the node (hastate fence in /cluster/resources), and reports the recovery."""
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    dead = primary.node
    sid = ha_node_lost(pvesim.pve, primary, 600)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate', offline_recovery='ha', timeout=1)
    item = result['remediation'][0]
    assert (item['action'], item['result']) == ('ha_wait', 'waiting'), item
    assert 'HA is still fencing {0}'.format(dead) in item['msg'] and pvesim.writes(mark) == []
    listed = [r for r in proxmoxer_api.cluster.resources.get(type='vm') if r['vmid'] == primary.vmid]
    assert listed[0]['hastate'] == 'fence'
    pvesim.pve.enable_ha_recovery(fence_secs=5)
    # fenced while the module waits (it reads the cluster within a second or two): the wait ends 'done'
    done = fo(pve_conn, plan, 'remediate', timeout=30)['remediation']
    assert len(done) == 1 and (done[0]['result'], done[0]['recovered_on']) == ('done', primary.node), done
    assert primary.node not in (dead, shadow.node)
    assert primary.status == 'running' and pvesim.pve.ha_recoveries[0][0] == sid


@pytest.mark.parametrize('state', ['disabled', 'ignored'])
def test_offline_ha_primary_disabled_or_ignored_is_unresolved(pvesim, pve_conn, plan, built, state):
    """HA never recovers a disabled resource (Manager.pm next_state_stopped returns before the fencing logic), and an
    ignored one is not HA-managed: failover says so and what to set, instead of waiting for HA."""
    primary = built['shop-web-1']
    sid = ha_node_lost(pvesim.pve, primary, 0, state=state)
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate', timeout=2)
    item = result['remediation'][0]
    assert (item['action'], item['result']) == ('none', 'unresolved'), item
    assert 'in state {0}'.format(state) in item['msg'] and 'ha-manager set {0} --state started'.format(sid) in item['msg']
    assert pvesim.writes(mark) == [] and pvesim.pve.ha_recoveries == []


def test_offline_ha_primary_in_state_stopped_is_moved_then_started(pvesim, pve_conn, plan, built):
    """HA fences a stopped service's node too and recovers it kept stopped (Manager.pm next_state_recovery:
    request_stop). Before, the simulator left it where it was and failover waited for it to run; now HA moves it,
    and failover starts it there as it starts any stopped primary."""
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    dead = primary.node
    sid = ha_node_lost(pvesim.pve, primary, 0.5, state='stopped')
    mark = pvesim.mark()
    result = fo(pve_conn, plan, 'remediate', timeout=20)
    item = result['remediation'][0]
    assert (item['action'], item['result']) == ('ha_wait', 'done'), item
    assert 'kept stopped by HA' in item['msg'] and result['changed']
    assert pvesim.pve.ha_recoveries[0][:2] == (sid, dead) and primary.node not in (dead, shadow.node)
    assert primary.status == 'running' and pvesim.pve.ha_resources[sid]['state'] == 'started'
    assert [p for m, p, b in pvesim.writes(mark)] == ['/api2/json/nodes/{0}/qemu/{1}/status/start'.format(
        primary.node, primary.vmid)]


def test_ha_recovery_with_no_allowed_node_is_named(pvesim, pve_conn, plan, built, proxmoxer_api, monkeypatch):
    """Manager.pm next_state_recovery retries "no recovery node found" forever (the shadow's negative rule excludes
    the only online node): failover reads hastate recovery from /cluster/resources and names the rule and the shadow
    after RECOVERY_GRACE instead of waiting out its timeout."""
    primary, shadow = built['shop-web-1'], built['shop-web-shadow']
    dead = primary.node
    ha_add(pvesim.pve, primary)
    ha_add(pvesim.pve, shadow)
    pvesim.pve.ha_rules['sn_shop_web_1_anti'] = {'type': 'resource-affinity', 'affinity': 'negative',
                                                 'resources': 'vm:{0},vm:{1}'.format(primary.vmid, shadow.vmid)}
    for node in ('pve1', 'pve2', 'pve3'):
        if node != shadow.node:
            pvesim.pve.set_node_offline(node)
    pvesim.pve.time_scale = 1
    pvesim.pve.enable_ha_recovery(fence_secs=0.2)
    monkeypatch.setattr(failover_utils, 'RECOVERY_GRACE', 1.0)
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'remediate', timeout=60)
    item = info.value.result['remediation'][0]
    assert item['result'] == 'failed', item
    assert 'finds no node to recover shop-web-1' in item['msg'] and 'Online nodes: {0}'.format(shadow.node) in item['msg']
    assert 'negative resource-affinity rule sn_shop_web_1_anti keeps it apart from shop-web-shadow on {0}'.format(
        shadow.node) in item['msg']
    listed = [r for r in proxmoxer_api.cluster.resources.get(type='vm') if r['vmid'] == primary.vmid]
    assert listed[0]['hastate'] == 'recovery' and listed[0]['node'] == dead


def test_ha_error_while_waiting_for_a_recovery_fails_at_once(pvesim, pve_conn, plan, built):
    primary = built['shop-web-1']
    sid = ha_add(pvesim.pve, primary)
    pvesim.pve.set_node_offline(primary.node)
    pvesim.pve.ha_errors[sid] = 'stop failed'
    primary.ha_state = 'error'
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'remediate', timeout=60)
    item = info.value.result['remediation'][0]
    assert item['result'] == 'failed' and 'HA holds shop-web-1 ({0}, on {1}) in its error state'.format(
        sid, primary.node) in item['msg']


def test_lost_quorum_stops_before_any_write(pvesim, pve_conn, plan, built):
    stop(built['shop-web-1'])
    pvesim.pve.lose_quorum()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'auto')
    assert 'lost quorum' in info.value.result['msg'] and 'no change was made' in info.value.result['msg']
    assert pvesim.writes(mark) == []
    # detect still reports (read-only).
    assert fo(pve_conn, plan, 'detect')['detect']['quorate'] is False


def test_unknown_service_is_refused(pve_conn, plan):
    with pytest.raises(ModuleFailed) as info:
        fo(pve_conn, plan, 'detect', service='db')
    assert "service 'db' is not in the plan of template 'shop' (services: web)" in info.value.result['msg']


def play(pvesim, *extra):
    """playbooks/failover.yml through ansible-playbook against the simulator (connection from PROXMOX_*)."""
    return ansible_playbook(['-i', 'localhost,', 'failover.yml', '-e', json.dumps({'shadownet_templates': [TEMPLATE]}),
                             '-e', 'ansible_python_interpreter=' + VENV_PY] + list(extra), sim=pvesim, timeout=120)


@pytest.mark.slow
def test_playbook(pvesim, pve_conn, plan, built):
    missing = play(pvesim)
    assert missing.returncode != 0 and 'failover_service is required' in missing.stdout, missing.stdout[-3000:]
    stop(built['shop-web-1'])
    proc = play(pvesim, '-e', 'failover_service=web', '-e', 'failover_min_uptime=0', '-e', 'failover_catch_up=skip')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    lines = re.findall(r'"msg": "((?:detect|activate|remediate|failback): [^"]*)"', proc.stdout)
    assert [line.split(':')[0] for line in lines] == ['detect', 'activate', 'remediate', 'failback'], proc.stdout
    assert lines[2] == 'remediate: done: start shop-web-1 on ' + built['shop-web-1'].node
    assert built['shop-web-1'].status == 'running' and failover_mark(built['shop-web-shadow']) is None

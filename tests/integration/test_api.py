"""The PVE API layer (plugins/module_utils/core/api.py) against the simulator, over HTTPS with verification on."""
import asyncio
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils

TOKEN_USER = 'root@pam'
TOKEN_NAME = 'ci'
TOKEN_SECRET = '0d7c8a8e-lab-only-secret'


@pytest.fixture
def sim(fakepve):
    fakepve.add_node('pve2')
    fakepve.add_vm(100, 'web-1', node='pve1', config={'cores': 2, 'memory': 2048,
                                                      'net0': 'virtio=BC:24:11:00:00:01,bridge=vmbr0'})
    fakepve.apitokens['{0}!{1}'.format(TOKEN_USER, TOKEN_NAME)] = TOKEN_SECRET
    return fakepve


def client(sim, cafile, **kwargs):
    options = dict(port=sim.port, user=TOKEN_USER, token_id=TOKEN_NAME, token_secret=TOKEN_SECRET, ca_path=cafile,
                   backoff=0.05, backoff_max=0.2, lock_wait=5)
    options.update(kwargs)
    return api_utils.PveApi(sim.host, **options)


def writes(sim, since=0):
    return [(m, p) for m, p, _ in sim.requests[since:] if m != 'GET']


def test_token_login_reads_cluster(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile)
    assert api.nodes() == {'pve1': 'online', 'pve2': 'online'}
    names = [r['name'] for r in api.resources('vm')]
    assert names == ['web-1']


def test_password_login(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile, token_id=None, token_secret=None, password='secret')
    assert api.vm_config('pve1', 100)[0]['cores'] == 2
    assert ('POST', '/api2/json/access/ticket') in [(m, p) for m, p, _ in sim.requests]


def test_wrong_password_is_a_clear_auth_error(sim, fakepve_cafile):
    with pytest.raises(api_utils.PveApiError) as info:
        client(sim, fakepve_cafile, token_id=None, token_secret=None, password='wrong')
    assert info.value.kind == 'auth'
    assert 'api_password' in info.value.message


def test_token_and_password_together_refused(sim, fakepve_cafile):
    with pytest.raises(api_utils.PveApiError) as info:
        client(sim, fakepve_cafile, password='secret')
    assert 'not both' in info.value.message


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_verified_with_ca_and_refused_without(sim, fakepve_cafile):
    assert client(sim, fakepve_cafile).nodes()
    with pytest.raises(api_utils.PveApiError) as info:
        client(sim, None).nodes()
    assert info.value.kind == 'tls'
    assert 'ca_path' in info.value.message
    # Verification can be turned off explicitly, for a lab only.
    assert client(sim, None, validate_certs=False).nodes()


def test_task_error_is_a_failure_with_pves_message(sim, fakepve_cafile):
    sim.fail('POST', '/nodes/pve1/qemu/100/status/start', error='qemu_exited_code')
    api = client(sim, fakepve_cafile)
    with pytest.raises(api_utils.PveTaskError) as info:
        api.run_task('POST', 'nodes/pve1/qemu/100/status/start', timeout=10)
    assert 'QEMU exited with code 1' in info.value.message
    assert info.value.kind == 'task'
    assert any('TASK ERROR' in line for line in info.value.log)


def test_task_warnings_are_success_with_warnings(sim, fakepve_cafile):
    upid, pid, start = sim._upid('pve1', 'qmstart', 100, 'root@pam')
    record = {'upid': upid, 'node': 'pve1', 'pid': pid, 'pstart': pid * 7, 'starttime': start, 'type': 'qmstart',
              'id': '100', 'user': 'root@pam', 'status': 'stopped', 'exitstatus': 'WARNINGS: 1',
              'endtime': start, 'log': ['starting', 'WARN: no efidisk configured', 'TASK WARNINGS: 1']}
    sim.tasks[upid] = record
    sim.tasklog.append(record)
    api = client(sim, fakepve_cafile)
    result = api.wait_task(upid, timeout=5)
    assert result['exitstatus'] == 'WARNINGS: 1'
    assert 'WARN: no efidisk configured' in result['warnings']
    assert api.warnings == result['warnings']


def test_wait_task_counts_wall_clock(sim, fakepve_cafile):
    upid, pid, start = sim._upid('pve1', 'qmclone', 100, 'root@pam')
    record = {'upid': upid, 'node': 'pve1', 'pid': pid, 'pstart': pid * 7, 'starttime': start, 'type': 'qmclone',
              'id': '100', 'user': 'root@pam', 'status': 'running', 'log': []}
    sim.tasks[upid] = record
    sim.tasklog.append(record)
    api = client(sim, fakepve_cafile)
    began = time.monotonic()
    with pytest.raises(api_utils.PveTimeoutError) as info:
        api.wait_task(upid, timeout=1.0, poll=0.1)
    assert 0.9 <= time.monotonic() - began < 5
    assert 'still running' in info.value.message


def test_held_config_lock_is_waited_for(sim, fakepve_cafile):
    asyncio.run(sim.hold_config_lock(100, None))
    threading.Timer(0.6, sim.release_config_lock, [100]).start()
    api = client(sim, fakepve_cafile, lock_wait=10)
    api.put('nodes/pve1/qemu/100/config', memory=4096)
    assert sim.vm(100).config['memory'] in (4096, '4096')
    assert sum(1 for m, p in api.calls if m == 'PUT') >= 2


def test_held_config_lock_gives_bounded_failure(sim, fakepve_cafile):
    asyncio.run(sim.hold_config_lock(100, None))
    api = client(sim, fakepve_cafile, lock_wait=0.5)
    began = time.monotonic()
    with pytest.raises(api_utils.PveTimeoutError) as info:
        api.put('nodes/pve1/qemu/100/config', memory=4096)
    assert time.monotonic() - began < 5
    assert info.value.kind == 'lock'
    assert 'locked' in info.value.message
    sim.release_config_lock(100)


def test_dropped_connection_on_read_is_retried(sim, fakepve_cafile):
    sim.network['drop_rate'] = 1.0
    threading.Timer(0.15, lambda: sim.network.update(drop_rate=0.0)).start()
    api = client(sim, fakepve_cafile, attempts=8, backoff=0.1, backoff_max=0.4)
    assert api.vm_config('pve1', 100)[0]['cores'] == 2
    assert sum(1 for m, p in api.calls if m == 'GET') >= 2


def test_dropped_connection_on_write_is_not_repeated(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile)
    sim.network['drop_rate'] = 1.0
    try:
        with pytest.raises(api_utils.PveUncertainError) as info:
            api.post('nodes/pve1/qemu/100/status/start')
    finally:
        sim.network['drop_rate'] = 0.0
    assert [c for c in api.calls if c[0] == 'POST'] == [('POST', 'nodes/pve1/qemu/100/status/start')]
    assert 'may or may not' in info.value.message


def test_expired_ticket_logs_in_again(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile, token_id=None, token_secret=None, password='secret')
    sim.revoke_tickets()
    assert int(api.vm_config('pve1', 100)[0]['memory']) == 2048
    logins = [p for m, p, _ in sim.requests if m == 'POST' and p.endswith('/access/ticket')]
    # the first login looks for NeedTFA before proxmoxer logs in (two requests); the renewal after the 401 is one
    assert len(logins) == 3


def test_lost_quorum_is_clear(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile)
    sim.lose_quorum()
    with pytest.raises(api_utils.PveApiError) as info:
        api.require_quorum()
    assert info.value.kind == 'quorum'
    mark = len(sim.requests)
    with pytest.raises(api_utils.PveApiError) as info:
        api.put('nodes/pve1/qemu/100/config', memory=1024)
    assert info.value.kind == 'quorum' and 'quorum' in info.value.message
    assert len(writes(sim, mark)) == 1  # refused once, not retried


def test_offline_node_is_named(sim, fakepve_cafile):
    sim.set_node_offline('pve2')
    api = client(sim, fakepve_cafile)
    with pytest.raises(api_utils.PveApiError) as info:
        api.get('nodes/pve2/qemu')
    assert info.value.kind == 'offline'
    assert info.value.node == 'pve2'
    assert "'pve2'" in info.value.message


def test_forbidden_names_the_privilege(sim, fakepve_cafile):
    sim.apitokens['ops@pve!audit'] = 'audit-secret'
    sim.grant('ops@pve!audit', '/vms', 'VM.Audit')
    sim.grant('ops@pve', '/vms', 'VM.Audit')
    api = api_utils.PveApi(sim.host, port=sim.port, user='ops@pve', token_id='audit', token_secret='audit-secret',
                           ca_path=fakepve_cafile)
    assert api.vm_config('pve1', 100)[0]['cores'] == 2
    with pytest.raises(api_utils.PveApiError) as info:
        api.put('nodes/pve1/qemu/100/config', memory=1024)
    assert info.value.kind == 'forbidden'
    assert info.value.privilege == 'VM.Config.Memory'
    assert '/vms/100' in info.value.message


def test_digest_race_rereads_and_succeeds(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile)
    calls = []

    def compute(cfg):
        calls.append(dict(cfg))
        if len(calls) == 1:
            # Someone else changes the VM between our read and our write.
            sim.vm(100).config['description'] = 'changed by another operator'
        return ({'memory': 4096} if str(cfg.get('memory')) != '4096' else {}), []

    mark = len(sim.requests)
    before, changes, deletes = api.update_vm_config('pve1', 100, compute)
    assert len(calls) == 2
    assert changes == {'memory': 4096}
    assert str(sim.vm(100).config['memory']) == '4096'
    assert sim.vm(100).config['description'] == 'changed by another operator'
    puts = [p for m, p in writes(sim, mark) if m == 'PUT']
    assert len(puts) == 2  # the first lost the race on its digest


def test_check_mode_update_makes_no_write(sim, fakepve_cafile):
    api = client(sim, fakepve_cafile)
    mark = len(sim.requests)
    before, changes, deletes = api.update_vm_config('pve1', 100, lambda cfg: ({'cores': 4}, ['agent']),
                                                    check_mode=True)
    assert changes == {'cores': 4}
    assert writes(sim, mark) == []
    assert sim.vm(100).config['cores'] == 2


def test_a_start_of_an_ha_vm_in_error_is_refused_before_the_request(pvesim, pve_conn):
    """qemu-server vm_start's hastart task runs `ha-manager set vm:N --state started`, which pve-ha-manager
    Resources.pm check_service_state refuses for a service in error: the task fails. Before, start_vm sent it and
    raised a generic task error; now it reads status/current first and raises PveHaError with how to clear it."""
    pve = pvesim.pve
    pve.add_vm(100, 'web-1', node='pve1')
    pve.ha_resources['vm:100'] = {}
    pve._ha_vm_state('vm:100')
    pve.ha_start_failed(pve.vm(100), 'QEMU exited with code 1')
    api = api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                           token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                           ca_path=pve_conn['ca_path'])
    mark = pvesim.mark()
    with pytest.raises(api_utils.PveHaError) as info:
        api.start_vm('pve1', 100, name='web-1', timeout=30)
    assert info.value.message.startswith('HA holds web-1 (vm:100, on pve1) in its error state')
    assert 'wait until `ha-manager status` shows vm:100 stopped or disabled' in info.value.message
    assert pvesim.writes(mark) == []


def test_an_ha_stop_the_crm_dropped_is_sent_again(pvesim, pve_conn):
    """pve-ha-manager Manager.pm drops a queued `crm-command stop` when the service changes state before the CRM acts
    on it ($change_service_state clears the service's keys): the VM stays started. stop_vm sends it again once HA
    still shows the service started after the CRM's rounds (30 s; 2 s here), and says so."""
    pve = pvesim.pve
    pve.add_vm(100, 'web-1', node='pve1')
    pve.vm(100).status = pve.vm(100).qmpstatus = 'running'
    pve.ha_resources['vm:100'] = {}
    pve._ha_vm_state('vm:100')
    pve.ha_stops_to_drop = 1
    api = api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                           token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                           ca_path=pve_conn['ca_path'])
    api.ha_stop_resend = 2.0
    mark = pvesim.mark()
    task = api.stop_vm('pve1', 100, name='web-1', timeout=30, shutdown_timeout=45)
    assert pve.vm(100).status == 'stopped'
    stops = [(p, b) for m, p, b in pvesim.writes(mark)]
    assert [p for p, b in stops] == ['/api2/json/nodes/pve1/qemu/100/status/shutdown'] * 2, stops
    assert all('timeout=45' in b and 'forceStop=1' in b for p, b in stops), stops
    assert any('HA still had it started' in w and 'the stop was sent again' in w for w in task['warnings'])

"""Error classification and backoff of the API layer (pure: no network)."""
import pytest
import requests
from proxmoxer.core import ResourceException

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils


def res(status, text, errors=None):
    return ResourceException(status, 'x', text, errors=errors)


def test_lock_timeouts_are_retryable_for_every_method():
    for method in ('GET', 'PUT', 'POST', 'DELETE'):
        kind, retry, msg = api_utils.classify(res(500, "can't lock file '/var/lock/qemu-server/lock-100.conf' - "
                                                  "got timeout"), method, 'nodes/pve1/qemu/100/config')
        assert (kind, retry) == ('lock', True)


def test_vm_locked_by_backup_is_waitable_with_name():
    kind, retry, msg = api_utils.classify(res(500, 'VM is locked (backup)'), 'POST', 'nodes/pve1/qemu/100/clone')
    assert (kind, retry) == ('lock', True) and '(backup)' in msg


def test_server_errors_retried_on_reads_only():
    assert api_utils.classify(res(502, 'Bad Gateway'), 'GET', 'nodes')[:2] == ('server', True)
    assert api_utils.classify(res(502, 'Bad Gateway'), 'POST', 'nodes/pve1/qemu')[1] is False
    assert api_utils.classify(res(500, "Configuration file 'x' does not exist"), 'GET', 'nodes/pve1/qemu/1/config'
                              )[:2] == ('notfound', False)


def test_dropped_connection_on_write_is_uncertain():
    exc = requests.exceptions.ConnectionError('Connection aborted. RemoteDisconnected')
    assert api_utils.classify(exc, 'POST', 'nodes/pve1/qemu/9000/clone')[:2] == ('uncertain', False)
    assert api_utils.classify(exc, 'GET', 'nodes')[:2] == ('connection', True)


def test_offline_quorum_forbidden_validation_messages():
    kind, retry, msg = api_utils.classify(res(595, 'No route to host'), 'GET', 'nodes/pve3/status')
    assert kind == 'offline' and "'pve3'" in msg and not retry
    kind, retry, msg = api_utils.classify(res(500, 'cluster not ready - no quorum?'), 'PUT', 'cluster/sdn')
    assert kind == 'quorum' and not retry
    kind, retry, msg = api_utils.classify(res(403, 'Permission check failed (/vms/100, VM.Clone)'), 'POST', 'x')
    assert kind == 'forbidden' and 'VM.Clone' in msg and '/vms/100' in msg
    kind, retry, msg = api_utils.classify(res(400, 'Parameter verification failed.', {'cores': 'value must be >= 1'}),
                                          'PUT', 'x')
    assert kind == 'validation' and 'cores: value must be >= 1' in msg


def test_backoff_is_bounded_with_jitter():
    class Api(api_utils.PveApi):
        def _connect(self):
            pass
    api = Api('h', token_id='t', token_secret='s', backoff=0.5, backoff_max=2.0)
    delays = [api._delay(n) for n in range(1, 10) for dummy in range(20)]
    assert max(delays) <= 2.0
    assert min(delays) >= 0.25
    assert len(set(round(d, 6) for d in delays)) > 20  # jittered, not fixed


class StopApi(api_utils.PveApi):
    """PveApi with a fake clock and canned answers: the stop task ends at once (a 'hastop'), status/current
    answers `states` in order (the last one for ever)."""

    def __init__(self, states, ha=None):
        self.now = 0.0
        self.states = list(states)
        self.ha = ha or {'managed': 0}
        super().__init__('h', token_id='t', token_secret='s', sleep=self._advance, clock=lambda: self.now)

    def _connect(self):
        pass

    def _advance(self, secs):
        self.now += secs

    def run_task(self, method, path, params=None, timeout=600):
        self.calls.append((method, path))
        return dict(upid='UPID:pve1:hastop', exitstatus='OK', warnings=[], log=[])

    def get(self, path, **params):
        self.calls.append(('GET', path))
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        if isinstance(state, dict):     # {'status': ..., 'lock': ..., 'ha': ...}
            return dict({'ha': self.ha}, **state)
        return {'status': state, 'ha': self.ha}


def test_stop_vm_waits_for_the_vm_not_for_the_task():
    api = StopApi(['running', 'running', 'running', 'stopped'], ha={'managed': 1, 'state': 'started'})
    api.stop_vm('pve1', 101, name='shop-web-2', timeout=60)
    # one read before the stop (a lock, HA's error state), the stop, then reads until the VM is off
    assert api.calls[1] == ('POST', 'nodes/pve1/qemu/101/status/stop')
    assert api.calls[:1] + api.calls[2:] == [('GET', 'nodes/pve1/qemu/101/status/current')] * 4
    assert 0 < api.now < 5


def test_stop_vm_waits_for_a_lock_and_refuses_a_locked_vm_without_a_stop():
    # qemu-server vm_stop sends an HA resource's stop to HA without looking at the lock; the LRM's stop fails on it
    # and the CRM puts the service in its error state (Manager.pm next_state_request_stop): never send it locked.
    backup = {'status': 'running', 'lock': 'backup'}
    api = StopApi([backup, backup, 'running', 'stopped'], ha={'managed': 1, 'state': 'started'})
    api.stop_vm('pve1', 101, name='shop-web-2', timeout=600)
    assert api.calls.index(('POST', 'nodes/pve1/qemu/101/status/stop')) == 3   # after the lock cleared
    api = StopApi([backup], ha={'managed': 1, 'state': 'started'})
    try:
        api.stop_vm('pve1', 101, name='shop-web-2', timeout=600)
    except api_utils.PveTimeoutError as exc:
        assert exc.kind == 'lock' and 'is locked (backup) after waiting 60s' in exc.message
    else:
        raise AssertionError('no error')
    assert ('POST', 'nodes/pve1/qemu/101/status/stop') not in api.calls and api.now == 60
    api = StopApi([{'status': 'running', 'lock': 'suspended'}])
    try:
        api.stop_vm('pve1', 101, timeout=600)
    except api_utils.PveApiError as exc:
        assert exc.kind == 'lock' and '(suspended)' in exc.message and api.now == 0
    else:
        raise AssertionError('no error')


def test_stop_vm_fails_at_once_when_ha_holds_the_vm_in_error():
    for states in (['running'], ['running', 'running']):
        api = StopApi(states, ha={'managed': 1, 'state': 'error'})
        if len(states) == 2:        # enters the error state after the stop was sent
            api.ha = {'managed': 1, 'state': 'started'}
            api.states = ['running', {'status': 'running', 'ha': {'managed': 1, 'state': 'error'}}]
        try:
            api.stop_vm('pve1', 101, name='shop-web-2', timeout=600)
        except api_utils.PveHaError as exc:
            assert 'error state' in exc.message and "--state disabled" in exc.message
        else:
            raise AssertionError('no error')
        assert api.now < 1
        assert (('POST', 'nodes/pve1/qemu/101/status/stop') in api.calls) == (len(states) == 2)


def test_stop_vm_gives_up_by_wall_clock_naming_the_vm():
    api = StopApi(['running'], ha={'managed': 1, 'state': 'started'})
    try:
        api.stop_vm('pve1', 101, name='shop-web-2', timeout=30)
    except api_utils.PveTimeoutError as exc:
        assert exc.kind == 'timeout' and exc.node == 'pve1'
        assert "VM 'shop-web-2' (vmid 101 on pve1) is still running 30s (wall clock)" in exc.message
        assert 'HA resource' in exc.message and 'ha-manager status' in exc.message
    else:
        raise AssertionError('no timeout')
    assert api.now == 30  # bounded: never sleeps past the deadline


class StartApi(StopApi):
    """The start task ends at once as ``kind`` (qmstart or hastart); status/current answers ``answers`` in order
    (status, HA state or None for a VM HA does not manage; the last one for ever)."""

    def __init__(self, kind, answers):
        super().__init__(['stopped'])
        self.kind = kind
        self.answers = list(answers)

    def run_task(self, method, path, params=None, timeout=600):
        self.calls.append((method, path))
        return dict(upid='UPID:pve1:0000:0000:0000:{0}:101:root@pam:'.format(self.kind), exitstatus='OK',
                    warnings=[], log=[])

    def get(self, path, **params):
        self.calls.append(('GET', path))
        status, ha = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        return {'status': status, 'ha': {'managed': 0} if ha is None else {'managed': 1, 'state': ha}}


def test_ha_service_state_reads_status_current_as_pve_gives_it():
    state = api_utils.ha_service_state
    assert state({'ha': {'managed': 0}}) is None and state({}) is None and state(None) is None
    assert state({'ha': {'managed': 1, 'state': 'error'}}) == 'error'
    assert state({'ha': {'managed': '1', 'state': 'started'}}) == 'started'
    assert state({'ha': {'managed': 1}}) == ''        # an HA resource the CRM has not registered yet


def test_a_plain_start_is_its_task_only():
    api = StartApi('qmstart', [('stopped', None)])
    task = api.start_vm('pve1', 101, name='shop-web-2', timeout=60)
    assert api.calls == [('GET', 'nodes/pve1/qemu/101/status/current'), ('POST', 'nodes/pve1/qemu/101/status/start')]
    assert task['node'] == 'pve1'


def test_an_ha_start_waits_until_the_vm_runs():
    api = StartApi('hastart', [('stopped', 'stopped'), ('stopped', ''), ('stopped', 'started'), ('stopped', 'started'),
                               ('running', 'started')])
    api.start_vm('pve1', 101, name='shop-web-2', timeout=60)
    assert api.calls[1] == ('POST', 'nodes/pve1/qemu/101/status/start')
    assert api.calls[2:] == [('GET', 'nodes/pve1/qemu/101/status/current')] * 4 and 0 < api.now < 5


def test_an_ha_start_held_in_error_fails_at_once_saying_how_to_clear_it():
    api = StartApi('hastart', [('stopped', 'stopped'), ('stopped', 'started'), ('stopped', 'error')])
    try:
        api.start_vm('pve1', 101, name='shop-web-2', timeout=60)
    except api_utils.PveHaError as exc:
        assert exc.kind == 'task' and exc.node == 'pve1'
        assert exc.message.startswith('HA holds shop-web-2 (vm:101, on pve1) in its error state')
        assert 'ha-manager set vm:101 --state disabled' in exc.message
        assert 'wait until `ha-manager status` shows vm:101 stopped or disabled' in exc.message
    else:
        raise AssertionError('no error')
    assert len(api.calls) == 4


def assert_start_names_ha_error(api):
    try:
        api.start_vm('pve1', 101, name='shop-web-2', timeout=60)
    except api_utils.PveHaError as exc:
        assert exc.message.startswith('HA holds shop-web-2 (vm:101, on pve1) in its error state')
    else:
        raise AssertionError('no error')


def test_an_ha_start_of_a_vm_in_error_is_refused_before_the_request():
    # pve-ha-manager Resources.pm check_service_state would fail the hastart task ("must be disabled and fixed first")
    api = StartApi('hastart', [('stopped', 'error')])
    assert_start_names_ha_error(api)
    assert api.calls == [('GET', 'nodes/pve1/qemu/101/status/current')]


class FailedHaStartApi(StartApi):
    def run_task(self, method, path, params=None, timeout=600):
        self.calls.append((method, path))
        raise api_utils.PveTaskError("command 'ha-manager set vm:101 --state started' failed: exit code 255",
                                     upid='UPID:pve1:0000:0000:0000:hastart:101:root@pam:')


def test_a_failed_hastart_of_a_vm_that_went_into_error_meanwhile_is_named():
    # the error state entered between the read and the request: check_service_state failed the hastart task
    api = FailedHaStartApi('hastart', [('stopped', 'started'), ('stopped', 'error')])
    assert_start_names_ha_error(api)
    api = FailedHaStartApi('hastart', [('stopped', 'started')])
    try:
        api.start_vm('pve1', 101, name='shop-web-2', timeout=60)
    except api_utils.PveHaError:
        raise AssertionError('not an HA error')
    except api_utils.PveTaskError as exc:
        assert 'exit code 255' in exc.message
    else:
        raise AssertionError('the failed hastart task was not reported')


def test_an_ha_start_gives_up_by_wall_clock():
    api = StartApi('hastart', [('stopped', 'started')])
    try:
        api.start_vm('pve1', 101, name='shop-web-2', timeout=30)
    except api_utils.PveTimeoutError as exc:
        assert 'is still stopped 30s (wall clock) after HA was asked to start it' in exc.message
        assert 'ha-manager status' in exc.message
    else:
        raise AssertionError('no timeout')
    assert api.now == 30


def test_a_qmp_or_agent_timeout_is_not_a_lock():
    # PVE/QMPClient.pm: "VM 100 qmp command 'guest-ping' failed - got timeout"; waiting for a lock does not cure it.
    for text, path in (("VM 100 qmp command 'guest-ping' failed - got timeout", 'nodes/pve1/qemu/100/agent/file-read'),
                       ("VM 100 qmp command 'query-status' failed - got timeout", 'nodes/pve1/qemu/100/status/resume')):
        kind, retry, msg = api_utils.classify(res(500, text), 'POST', path)
        assert kind != 'lock' and not retry, (kind, msg)


class LogApi(StopApi):
    """A task that ended WARNINGS with a long log: the first warning is far from the end."""

    def get(self, path, **params):
        self.calls.append(('GET', path, params))
        if path.endswith('/status'):
            return {'status': 'stopped', 'exitstatus': 'WARNINGS: 2', 'type': 'qmdestroy'}
        lines = ["WARN: Could not remove disk 'ceph-vm:vm-101-disk-0', check manually"] + \
            ['line {0}'.format(i) for i in range(100)] + ["WARN: Could not remove disk 'ceph-vm:vm-101-disk-1'"]
        entries = [{'n': n + 1, 't': t} for n, t in enumerate(lines)]
        return entries[:params.get('limit', 50)]


def test_every_warning_of_a_long_task_log_is_kept():
    # pve-manager Tasks.pm read_task_log: limit 0 reads to the end; the warnings come from every line
    api = LogApi(['stopped'])
    result = api.wait_task('UPID:pve1:0000:0000:00000000:qmdestroy:101:root@pam:', timeout=10)
    assert len(result['warnings']) == 2 and len(result['log']) == 20
    assert all(call[2].get('limit') == api_utils.TASK_LOG_LIMIT for call in api.calls if call[1].endswith('/log'))


def test_a_proxy_timeout_on_a_write_is_uncertain_and_retried_on_a_read():
    # pve-http-server AnyEvent.pm proxy_request: 30 s timeout, AnyEvent::HTTP's 596 passed through while the handler
    # may go on: never call such a write failed or done without looking.
    assert api_utils.classify(res(596, 'Connection timed out'), 'PUT', 'nodes/pve1/qemu/100/config')[:2] == \
        ('uncertain', False)
    assert api_utils.classify(res(596, 'Connection timed out'), 'GET', 'nodes/pve1/qemu/100/config')[:2] == \
        ('server', True)
    assert api_utils.classify(res(595, 'No route to host'), 'POST', 'nodes/pve2/qemu/100/status/start')[0] == 'offline'


def test_a_user_with_two_factor_authentication_is_refused_without_a_second_factor(monkeypatch):
    # pve-access-control create_ticket answers NeedTFA; proxmoxer would then send "totp:None", a failed second factor
    # PVE counts. The login stops before proxmoxer is called, naming the way out (an API token).
    class Answer(object):
        status_code = 200

        @staticmethod
        def json():
            return {'data': {'username': 'ops@pve', 'ticket': 'PVE:ops@pve:challenge', 'NeedTFA': 1}}
    sent = []
    monkeypatch.setattr(api_utils.requests, 'post', lambda url, **kw: sent.append((url, kw['data'])) or Answer())

    def no_proxmoxer(*args, **kwargs):
        raise AssertionError('proxmoxer must not log in')
    monkeypatch.setattr(api_utils, 'ProxmoxAPI', no_proxmoxer)
    try:
        api_utils.PveApi('pve.example', user='ops@pve', password='pw')
    except api_utils.PveApiError as exc:
        assert exc.kind == 'auth' and 'two-factor' in exc.message and 'api_token_id' in exc.message, exc.message
        assert 'api_password' not in exc.message
    else:
        raise AssertionError('no error')
    assert sent == [('https://pve.example:8006/api2/json/access/ticket', {'username': 'ops@pve', 'password': 'pw'})]


class ListingApi(StopApi):
    """/cluster/resources with a VM pvestatd has not named yet on pve1 and one on pve2, offline for a while."""

    def get(self, path, **params):
        self.calls.append(('GET', path))
        if path == 'cluster/resources':
            return [{'type': 'qemu', 'vmid': 100, 'node': 'pve1', 'status': 'unknown'},
                    {'type': 'qemu', 'vmid': 101, 'node': 'pve2', 'status': 'unknown'},
                    {'type': 'qemu', 'vmid': 102, 'node': 'pve1', 'status': 'running', 'name': 'db-1'}]
        if path == 'nodes':
            return [{'node': 'pve1', 'status': 'online'}, {'node': 'pve2', 'status': 'offline'}]
        if path == 'nodes/pve1/qemu/100/status/current':
            return {'name': 'web-1', 'status': 'running', 'qmpstatus': 'paused', 'cpus': 2, 'maxmem': 2 << 30}
        raise AssertionError('unexpected read of ' + path)


def test_a_vm_pvestatd_has_not_named_is_completed_from_its_status_unless_its_node_is_offline():
    # pve-manager Cluster.pm resources: name and status come from pvestatd (every 10 s); pmxcfs drops them 5 minutes
    # after a node went silent. The new VM is asked; the offline node's VM is left as listed (no wait on its node).
    api = ListingApi(['running'])
    items = dict((i['vmid'], i) for i in api.resources('vm'))
    assert items[100]['name'] == 'web-1' and items[100]['status'] == 'paused' and items[100]['maxcpu'] == 2
    assert 'name' not in items[101] and items[101]['status'] == 'unknown'
    assert items[102]['name'] == 'db-1'
    assert [c[1] for c in api.calls] == ['cluster/resources', 'nodes', 'nodes/pve1/qemu/100/status/current']


def test_the_first_login_brackets_an_ipv6_host_and_stops_at_a_wrong_password(monkeypatch):
    class Refused(object):
        status_code = 401

    def no_proxmoxer(*args, **kwargs):
        raise AssertionError('no login')

    urls = []
    monkeypatch.setattr(api_utils.requests, 'post', lambda url, **kw: urls.append(url) or Refused())
    monkeypatch.setattr(api_utils, 'ProxmoxAPI', no_proxmoxer)
    try:
        api_utils.PveApi('fd00::10', user='ops@pve', password='wrong')
    except api_utils.PveApiError as exc:
        assert exc.kind == 'auth'
    else:
        raise AssertionError('no error')
    assert urls == ['https://[fd00::10]:8006/api2/json/access/ticket']   # one attempt, not two


def test_a_hotplug_problem_says_the_change_is_pending_not_refused():
    # update_vm_api writes the change as pending, then raise_param_exc of the hot-plug errors ("hotplug problem - ...")
    kind, retry, msg = api_utils.classify(
        res(400, 'Parameter verification failed.', errors={'vcpus': "hotplug problem - you can't add more vcpus than "
                                                                    "maxcpus"}), 'PUT', 'nodes/pve1/qemu/100/config')
    assert (kind, retry) == ('validation', False) and 'pending until the VM restarts' in msg and 'maxcpus' in msg
    assert 'refused' not in msg


def test_a_root_only_key_is_its_own_kind_whatever_the_status():
    # qemu-server API2/Qemu.pm $check_vm_modify_config_perm: a plain die (PVE: 500; fakepve said 403).
    for status in (500, 403):
        kind, retry, msg = api_utils.classify(res(status, "only root can set 'hookscript' config"), 'PUT',
                                              'nodes/pve1/qemu/100/config')
        assert (kind, retry) == ('root_only', False) and "'hookscript'" in msg and 'root@pam' in msg


class _RefusingApi:
    """root@pam by its name, but PVE refuses the hookscript anyway (vm.update_root_only's fallback)."""
    is_root = True

    def __init__(self, kind='root_only'):
        self.puts = 0
        self.kind = kind

    def update_vm_config(self, node, vmid, compute, check_mode=False):
        changes, deletes = compute({'cores': 2})
        if check_mode or not (changes or deletes):
            return {'cores': 2}, changes, deletes
        self.puts += 1
        raise api_utils.PveApiError("PVE lets only root@pam itself set 'hookscript'", kind=self.kind)


def test_update_root_only_turns_a_refusal_into_a_warning_and_raises_the_rest():
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils
    hook = 'local:snippets/h.py'
    api = _RefusingApi()
    changes, deletes, warning = vm_utils.update_root_only(api, 'pve1', 100, lambda cfg: ({'hookscript': hook}, []),
                                                          'web-1')
    assert (changes, deletes, api.puts) == ({}, [], 1)
    assert 'web-1 (vmid 100): hookscript not set to ' + hook in warning and '`qm set 100 --hookscript ' + hook in warning
    api.is_root = False     # a token: nothing is sent, in check mode or not
    for check_mode in (False, True):
        changes, deletes, warning = vm_utils.update_root_only(api, 'pve1', 100, lambda cfg: ({}, ['hookscript']),
                                                              'web-1', check_mode=check_mode)
        assert 'hookscript not removed' in warning and '--delete hookscript' in warning and api.puts == 1
        assert (changes, deletes) == ({}, [])     # check mode agrees with the run: never sent
    # Any other refusal (a script that does not exist: 400) still fails the run.
    with pytest.raises(api_utils.PveApiError):
        vm_utils.update_root_only(_RefusingApi('validation'), 'pve1', 100, lambda cfg: ({'hookscript': hook}, []),
                                  'web-1')

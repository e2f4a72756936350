"""Error classification and backoff of the API layer (pure: no network)."""
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
        return {'status': state, 'ha': self.ha}


def test_stop_vm_waits_for_the_vm_not_for_the_task():
    api = StopApi(['running', 'running', 'running', 'stopped'], ha={'managed': 1, 'state': 'started'})
    api.stop_vm('pve1', 101, name='shop-web-2', timeout=60)
    assert api.calls[0] == ('POST', 'nodes/pve1/qemu/101/status/stop')
    assert api.calls[1:] == [('GET', 'nodes/pve1/qemu/101/status/current')] * 4
    assert 0 < api.now < 5


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

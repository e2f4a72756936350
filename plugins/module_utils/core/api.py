# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one place this collection talks to the PVE API.

Everything that reaches PVE goes through :class:`PveApi`: authentication (token or password, never both),
TLS verification (on by default), error classification (done once, here), bounded retries with backoff and
jitter, wall-clock task waiting, and digest-checked configuration updates.

Retry policy, in one table (see :func:`classify`):

=====================================  ===========  ==============================================
what happened                          retried?     why
=====================================  ===========  ==============================================
config lock timeout / VM is locked     yes (all)    PVE refused before doing anything; wait for it
dropped connection, timeout on a GET   yes          reads are idempotent
HTTP 5xx on a GET (not 595)            yes          transient proxy / pveproxy worker trouble
dropped connection on POST/PUT/DELETE  no           it may have gone through: PveUncertainError,
                                                    the caller re-reads the cluster to find out
401 with a password login              once         the ticket expired: log in again
401 with a token, 403, 595, no quorum  no           clear message naming node / path / privilege
"only root can set '<key>' config"     no           kind ``root_only`` (hookscript: vm.update_root_only)
=====================================  ===========  ==============================================
"""


import random
import re
import time

try:
    import requests
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import AuthenticationError, ResourceException
    HAS_PROXMOXER = True
    PROXMOXER_IMPORT_ERROR = None
except ImportError as exc:  # pragma: no cover - exercised only without the library
    HAS_PROXMOXER = False
    PROXMOXER_IMPORT_ERROR = exc

    class ResourceException(Exception):  # type: ignore[no-redef]
        pass

    class AuthenticationError(Exception):  # type: ignore[no-redef]
        pass

from ansible.module_utils.basic import env_fallback

# ----------------------------------------------------------------- options

API_ARGUMENT_SPEC = dict(
    api_host=dict(type='str', required=True, fallback=(env_fallback, ['PROXMOX_HOST'])),
    api_port=dict(type='int', default=8006, fallback=(env_fallback, ['PROXMOX_PORT'])),
    api_user=dict(type='str', default='root@pam', fallback=(env_fallback, ['PROXMOX_USER'])),
    api_password=dict(type='str', no_log=True, fallback=(env_fallback, ['PROXMOX_PASSWORD'])),
    api_token_id=dict(type='str', fallback=(env_fallback, ['PROXMOX_TOKEN_ID'])),
    api_token_secret=dict(type='str', no_log=True, fallback=(env_fallback, ['PROXMOX_TOKEN_SECRET'])),
    validate_certs=dict(type='bool', default=True, fallback=(env_fallback, ['PROXMOX_VALIDATE_CERTS'])),
    ca_path=dict(type='path', fallback=(env_fallback, ['PROXMOX_CA_PATH'])),
    api_timeout=dict(type='int', default=30, fallback=(env_fallback, ['PROXMOX_TIMEOUT'])),
)


def api_argument_spec():
    """A fresh copy of the shared auth options, for a module's argument spec."""
    return dict((k, dict(v)) for k, v in API_ARGUMENT_SPEC.items())


API_MUTUALLY_EXCLUSIVE = [('api_password', 'api_token_secret')]
API_REQUIRED_TOGETHER = [('api_token_id', 'api_token_secret')]


def api_module(argument_spec, mutually_exclusive=(), required_together=(), **kwargs):
    """The AnsibleModule of a module in the api action group, built the same way for every one of them.

    ``argument_spec`` starts from :func:`api_argument_spec`. Check mode is always supported; the auth options'
    constraints are added to the module's own; a missing proxmoxer ends the run with the standard message.
    """
    from ansible.module_utils.basic import AnsibleModule, missing_required_lib
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True,
                           mutually_exclusive=API_MUTUALLY_EXCLUSIVE + list(mutually_exclusive),
                           required_together=API_REQUIRED_TOGETHER + list(required_together), **kwargs)
    if not HAS_PROXMOXER:
        module.fail_json(msg=missing_required_lib('proxmoxer'), exception=str(PROXMOXER_IMPORT_ERROR))
    return module


# ------------------------------------------------------------------ errors


class PveApiError(Exception):
    """A PVE API failure, already classified, with a message an operator can act on."""

    def __init__(self, message, kind='error', status=None, method=None, path=None, node=None, errors=None,
                 privilege=None):
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status = status
        self.method = method
        self.path = path
        self.node = node
        self.errors = errors
        self.privilege = privilege

    def as_dict(self):
        return dict((k, v) for k, v in (('msg', self.message), ('kind', self.kind), ('status', self.status),
                                        ('method', self.method), ('path', self.path), ('node', self.node),
                                        ('errors', self.errors), ('privilege', self.privilege)) if v is not None)


class PveUncertainError(PveApiError):
    """A write whose outcome is unknown (the connection dropped after it was sent). Never blindly repeated."""


class PveTaskError(PveApiError):
    """A PVE task that ended with something other than OK or WARNINGS."""

    def __init__(self, message, upid=None, exitstatus=None, log=None, **kwargs):
        super().__init__(message, kind=kwargs.pop('kind', 'task'), **kwargs)
        self.upid = upid
        self.exitstatus = exitstatus
        self.log = log or []


class PveHaError(PveTaskError):
    """The HA manager holds the VM in its error state: a start or a stop through HA cannot succeed until an
    operator clears it."""


class PveTimeoutError(PveApiError):
    """Waited the whole wall-clock budget for a task or a lock."""


# Lines of a task log read at most (the whole log of any task; see PveApi.task_log).
TASK_LOG_LIMIT = 1000000
# Requests of one write, in all, while answers are lost: each lost answer is followed by a look at PVE.
UNCERTAIN_ATTEMPTS = 5

# pve-common Tools.pm lock_file_full ("can't lock file '...' - got timeout") and pve-guest-common
# AbstractConfig.pm check_lock ("VM is locked (backup)"). Not a bare "got timeout": QMP and the guest agent time out
# with "VM 100 qmp command '...' failed - got timeout" (PVE/QMPClient.pm), which no lock wait cures.
LOCK_PATTERNS = (re.compile(r"can't lock file '[^']*' - got timeout"), re.compile(r'VM is locked \((\w+)\)'))
QUORUM_PATTERN = re.compile(r'no quorum|cluster not ready', re.I)
DIGEST_PATTERN = re.compile(r'checksum mismatch|detected modified configuration|digest', re.I)
FORBIDDEN_PATTERN = re.compile(r'Permission check failed \(([^,)]*)(?:,\s*([^)]*))?\)')
# qemu-server API2/Qemu.pm $check_vm_modify_config_perm: `die "only root can set '$opt' config\n"` for a key no
# privilege covers (hookscript, args, ...) unless the user is root@pam itself: a plain die, so PVE answers 500.
ROOT_ONLY_PATTERN = re.compile(r"only root can set '([^']+)' config")
NODE_IN_PATH = re.compile(r'^/?nodes/([^/]+)')
# Locks that are worth waiting for: short-lived operations. A 'backup' lock may last hours, but waiting for
# it within the bounded budget is still right: the caller gets a clear timeout naming the lock otherwise.
WAITABLE_LOCKS = ('config', 'clone', 'create', 'backup', 'snapshot', 'snapshot-delete', 'rollback', 'migrate',
                  'disk', 'suspending')


def node_of(path):
    found = NODE_IN_PATH.match(path or '')
    return found.group(1) if found else None


def _content(exc):
    text = str(getattr(exc, 'content', '') or '')
    errors = getattr(exc, 'errors', None)
    return text.strip(), errors


def classify(exc, method, path):
    """(kind, retryable, message) for an exception raised by one API call. The only place errors are sorted."""
    node = node_of(path)
    where = '{0} /{1}'.format(method, path.lstrip('/'))
    if HAS_PROXMOXER and isinstance(exc, requests.exceptions.SSLError):
        return ('tls', False, 'TLS verification of the PVE API failed ({0}): {1}. Give the cluster CA with '
                'ca_path (PROXMOX_CA_PATH), or, only for a lab, validate_certs: false.'.format(where, exc))
    if HAS_PROXMOXER and isinstance(exc, (requests.exceptions.ConnectTimeout,)):
        return ('connection', True, 'could not connect to the PVE API ({0}): {1}'.format(where, exc))
    if HAS_PROXMOXER and isinstance(exc, requests.exceptions.ConnectionError) and \
            'Connection refused' in str(exc):
        return ('connection', True, 'the PVE API refused the connection ({0}): {1}'.format(where, exc))
    if HAS_PROXMOXER and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        if method == 'GET':
            return ('connection', True, 'connection to the PVE API dropped ({0}): {1}'.format(where, exc))
        return ('uncertain', False, 'the connection dropped during {0}; the change may or may not have been made '
                '({1})'.format(where, exc))
    if isinstance(exc, AuthenticationError):
        return ('auth', False, 'PVE login failed: {0}. Check api_user and api_password (or the token).'.format(exc))
    if isinstance(exc, ResourceException):
        status = exc.status_code
        text, errors = _content(exc)
        if status == 401:
            return ('auth', False, 'PVE rejected the credentials for {0}: {1}'.format(where, text))
        found = ROOT_ONLY_PATTERN.search(text)
        if found:
            return ('root_only', False, 'PVE lets only root@pam itself (a password login, not an API token) set '
                    '{0!r} ({1}: {2})'.format(found.group(1), where, text))
        if status == 403:
            return ('forbidden', False, _forbidden_message(where, text))
        if status == 595:
            return ('offline', False, 'node {0!r} is offline or unreachable ({1}: {2}). Bring it back or choose '
                    'another node.'.format(node, where, text))
        if status in (596, 597, 599):
            # pve-http-server PVE/APIServer/AnyEvent.pm proxy_request forwards to pvedaemon or another node with a
            # 30 s timeout and passes AnyEvent::HTTP's own 59x status through: the request was sent, and the handler
            # may still be running (a config update that hot-unplugs memory) or have finished.
            if method == 'GET':
                return ('server', True, 'PVE answered {0} to {1}: {2}'.format(status, where, text))
            return ('uncertain', False, 'PVE\'s proxy answered {0} to {1} ({2}); the change may or may not have been '
                    'made'.format(status, where, text))
        if status == 400:
            detail = '; '.join('{0}: {1}'.format(k, str(v).strip()) for k, v in sorted((errors or {}).items())) \
                if isinstance(errors, dict) else str(errors or '')
            if 'hotplug problem' in detail:
                # qemu-server API2/Qemu.pm update_vm_api writes every change as pending first, then hot-plugs and
                # raises the hot-plug errors: the change is stored, waiting for the next start.
                return ('validation', False, 'PVE stored the change of {0} but could not apply it to the running VM '
                        '({1}): it stays pending until the VM restarts (`qm pending <vmid>` lists it)'.format(
                            where, detail))
            return ('validation', False, 'PVE refused the parameters of {0}: {1}'.format(where, detail or text))
        if QUORUM_PATTERN.search(text):
            return ('quorum', False, 'the cluster has lost quorum ({0}: {1}); nothing can be changed until '
                    'quorum is back.'.format(where, text))
        for pattern in LOCK_PATTERNS:
            found = pattern.search(text)
            if found:
                lock = found.group(1) if found.groups() else 'config'
                return ('lock', lock in WAITABLE_LOCKS, 'the VM is locked ({0}) for {1}: {2}'.format(lock, where,
                                                                                                     text))
        if DIGEST_PATTERN.search(text):
            return ('digest', False, 'the VM config changed while it was being updated ({0}): {1}'.format(
                where, text))
        if status >= 500 and '/agent/' in '/' + path.lstrip('/'):
            # qemu-server src/PVE/QemuServer/Agent.pm assert_agent_available / check_agent_error: no agent
            # configured, the VM or its agent not running, or the agent's own error: an answer, not a hiccup.
            return ('agent', False, 'guest agent request {0} failed: {1}'.format(where, text))
        if 'ha groups have been migrated to rules' in text:
            # pve-ha-manager API2/HA/Groups.pm: every groups call dies once groups.cfg has no entries (PVE 9 after
            # the CRM's migration, or never had groups): an answer, not a hiccup to retry
            return ('migrated', False, 'PVE: {0} ({1})'.format(text, where))
        if status >= 500 and method == 'GET' and not re.search(r'does not exist|not found|no such', text, re.I):
            return ('server', True, 'PVE answered {0} to {1}: {2}'.format(status, where, text))
        if re.search(r'does not exist|not found|no such', text, re.I) or status == 404:
            return ('notfound', False, 'PVE: {0} ({1})'.format(text, where))
        return ('error', False, 'PVE answered {0} to {1}: {2}'.format(status, where, text))
    return ('error', False, 'unexpected error during {0}: {1}'.format(where, exc))


def _forbidden_message(where, text):
    found = FORBIDDEN_PATTERN.search(text)
    if found and found.group(2):
        return ('permission denied for {0}: the API user lacks privilege {1} on {2}. Grant it, e.g. '
                '`pveum acl modify {2} --roles <role with {1}> --tokens <token>` ({3}).'.format(
                    where, found.group(2), found.group(1) or '/', text))
    return 'permission denied for {0}: {1}'.format(where, text)


# ------------------------------------------------------------------ client


class PveApi(object):
    """A proxmoxer connection with this collection's retry, task and update rules.

    ``sleep`` and ``clock`` are injectable so the retry arithmetic can be unit-tested without waiting.
    """

    def __init__(self, host, port=8006, user='root@pam', password=None, token_id=None, token_secret=None,
                 validate_certs=True, ca_path=None, timeout=30, attempts=4, backoff=0.25, backoff_max=4.0,
                 lock_wait=60.0, sleep=time.sleep, clock=time.monotonic, rng=None):
        if not HAS_PROXMOXER:
            raise PveApiError('proxmoxer and requests are required: {0}'.format(PROXMOXER_IMPORT_ERROR),
                              kind='dependency')
        if password and token_secret:
            raise PveApiError('give either api_password or api_token_id + api_token_secret, not both',
                              kind='config')
        if not password and not token_secret:
            raise PveApiError('no credentials: set api_token_id + api_token_secret (PROXMOX_TOKEN_ID, '
                              'PROXMOX_TOKEN_SECRET) or api_password (PROXMOX_PASSWORD)', kind='config')
        if token_id and '!' in token_id:
            # Accept the full id 'user@realm!name' as PVE prints it.
            user, token_id = token_id.split('!', 1)
        self.host = host
        self.port = port
        self.user = user
        self._password = password
        self._token_id = token_id
        self._token_secret = token_secret
        self.verify = (ca_path or True) if validate_certs else False
        self.timeout = timeout
        self.attempts = max(1, attempts)
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.lock_wait = lock_wait
        # Seconds an HA resource may still show HA state 'started' after its stop request before the stop is sent
        # again (three of the CRM's 10 s rounds; see stop_vm).
        self.ha_stop_resend = 30.0
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self.calls = []  # (method, path) of every request made, for tests and request budgets
        self.warnings = []
        self._api = None
        self._connect()

    @property
    def is_root(self):
        """Logged in as root@pam itself (a password login): qemu-server lets only that user give ``skiplock``
        ("Only root may use this option."); root@pam's API tokens are other users for it."""
        return self.user == 'root@pam' and not self._token_secret

    @classmethod
    def from_module(cls, module, **kwargs):
        p = module.params
        return cls(p['api_host'], port=p['api_port'], user=p['api_user'], password=p.get('api_password'),
                   token_id=p.get('api_token_id'), token_secret=p.get('api_token_secret'),
                   validate_certs=p['validate_certs'], ca_path=p.get('ca_path'), timeout=p['api_timeout'],
                   **kwargs)

    # -------------------------------------------------------------- login

    def _connect(self):
        kwargs = dict(port=self.port, user=self.user, verify_ssl=self.verify, timeout=self.timeout)
        if self._token_secret:
            kwargs.update(token_name=self._token_id, token_value=self._token_secret)
        else:
            kwargs.update(password=self._password)
        try:
            if not self._token_secret and self._api is None:     # the first login (not a renewal after a 401)
                self._refuse_second_factor()
            self._api = ProxmoxAPI(self.host, **kwargs)
        except PveApiError:
            raise
        except Exception as exc:  # proxmoxer raises requests or its own errors on login
            kind, dummy, message = classify(exc, 'POST', 'access/ticket')
            if kind == 'error':
                message = 'PVE login to {0}:{1} failed: {2}'.format(self.host, self.port, exc)
            raise PveApiError(message, kind=kind if kind != 'uncertain' else 'connection',
                              path='access/ticket') from exc

    def _refuse_second_factor(self):
        """Stop before proxmoxer's login when the user has two-factor authentication.

        pve-access-control API2/AccessControl.pm create_ticket answers such a user with ``NeedTFA`` and a challenge
        ticket; proxmoxer then sends a second factor even without one (``totp:None``), and PVE counts every failed
        second factor (AccessControl.pm authenticate_2nd_new: after too many, the user's TOTP is locked). An
        unattended run cannot give one: it must log in with an API token."""
        host = '[{0}]'.format(self.host) if ':' in self.host and not self.host.startswith('[') else self.host
        url = 'https://{0}:{1}/api2/json/access/ticket'.format(host, self.port)
        answer = requests.post(url, data={'username': self.user, 'password': self._password}, verify=self.verify,
                               timeout=self.timeout)
        if answer.status_code == 401:       # a wrong password: say so now, not after a second failed attempt
            raise AuthenticationError("Couldn't authenticate user: {0} to {1} code: 401".format(self.user, url))
        try:
            data = answer.json().get('data') if answer.status_code == 200 else None
        except (ValueError, AttributeError):
            data = None         # not PVE's answer: proxmoxer's own login says what is wrong
        if isinstance(data, dict) and data.get('NeedTFA') is not None:
            raise PveApiError('PVE login of {0} needs a second factor (two-factor authentication), which an unattended '
                              'login cannot give; none was sent. Log in with an API token (api_token_id and '
                              'api_token_secret) instead'.format(self.user), kind='auth', path='access/ticket')

    # ------------------------------------------------------------ requests

    def get(self, path, **params):
        return self.request('GET', path, params)

    def post(self, path, **data):
        return self.request('POST', path, data)

    def put(self, path, **data):
        return self.request('PUT', path, data)

    def delete(self, path, **params):
        return self.request('DELETE', path, params)

    def result_attrib(self, path, attrib, **params):
        """A GET answer's top-level ``attrib`` beside ``data`` (None when absent), with the retry policy of
        :meth:`request`.

        An API call may add attributes to its answer (``$rpcenv->set_result_attrib``; pve-http-server
        Formatter/Standard.pm prepare_response_data copies ``total`` and ``changes``), e.g. the node network listing's
        ``changes``: the diff of /etc/network/interfaces and the staged interfaces.new (pve-common INotify.pm
        read_file with $full). proxmoxer returns only ``data``, so this reads the answer itself."""
        return self.request('GET', path, params, attrib=attrib)

    @staticmethod
    def _get_attrib(resource, params, attrib):
        store = resource._store     # proxmoxer's own session, base URL and serializer (its request path, unparsed)
        answer = store['session'].request('GET', store['base_url'], params=params)
        if answer.status_code >= 400:
            raise ResourceException(answer.status_code, answer.reason, answer.reason,
                                    errors=store['serializer'].loads_errors(answer))
        try:
            body = answer.json()
        except ValueError:
            return None
        return body.get(attrib) if isinstance(body, dict) else None

    def request(self, method, path, params=None, lock_wait=None, attrib=None):
        """One API call with the retry policy of :func:`classify`. Returns the answer's ``data`` (or, for a GET with
        ``attrib``, that top-level attribute of the answer: :meth:`result_attrib`)."""
        path = path.strip('/')
        params = dict((k, v) for k, v in (params or {}).items() if v is not None)
        lock_budget = self.lock_wait if lock_wait is None else lock_wait
        started = self._clock()
        attempt = 0
        relogged = False
        while True:
            attempt += 1
            self.calls.append((method, path))
            try:
                resource = self._api(path)
                if method == 'GET' and attrib:
                    return self._get_attrib(resource, params, attrib)
                if method == 'GET':
                    return resource.get(**params)
                if method == 'POST':
                    return resource.post(**params)
                if method == 'PUT':
                    return resource.put(**params)
                return resource.delete(**params)
            except Exception as exc:  # classified below; nothing escapes unclassified
                kind, retryable, message = classify(exc, method, path)
                if kind == 'auth' and getattr(exc, 'status_code', None) == 401 and self._password and not relogged:
                    # An expired or revoked ticket: log in once more, then repeat the call.
                    relogged = True
                    self._connect()
                    continue
                if kind == 'lock' and retryable and self._clock() - started < lock_budget:
                    self._sleep(self._delay(attempt, cap=2.0))
                    continue
                if kind == 'lock' and retryable:
                    raise PveTimeoutError('{0}; still locked after waiting {1:.0f}s'.format(message, lock_budget),
                                          kind='lock', status=getattr(exc, 'status_code', None), method=method,
                                          path=path, node=node_of(path)) from exc
                if retryable and attempt < self.attempts:
                    self._sleep(self._delay(attempt))
                    continue
                error_class = PveUncertainError if kind == 'uncertain' else PveApiError
                raise error_class(message, kind=kind, status=getattr(exc, 'status_code', None), method=method,
                                  path=path, node=node_of(path), errors=getattr(exc, 'errors', None),
                                  privilege=_privilege(message) if kind == 'forbidden' else None) from exc

    def _delay(self, attempt, cap=None):
        """Exponential backoff with full jitter, bounded."""
        top = min(cap or self.backoff_max, self.backoff * (2 ** (attempt - 1)))
        return self._rng.uniform(top / 2.0, top)

    # --------------------------------------------------------------- tasks

    def wait_task(self, upid, timeout=600, poll=0.2, log_lines=20):
        """Wait for a task by wall-clock time. Returns a dict: upid, node, exitstatus, warnings, log.

        ``OK`` is success; ``WARNINGS: n`` is success with the warnings surfaced in ``warnings`` (and in
        ``self.warnings``); anything else raises :class:`PveTaskError` with PVE's own message.
        """
        node = upid.split(':')[1] if upid and upid.startswith('UPID:') else None
        if node is None:
            raise PveApiError('not a task id: {0!r}'.format(upid), kind='error')
        deadline = self._clock() + timeout
        delay = poll
        while True:
            status = self.get('nodes/{0}/tasks/{1}/status'.format(node, upid))
            if status.get('status') == 'stopped':
                break
            if self._clock() >= deadline:
                raise PveTimeoutError('task {0} still running after {1}s (wall clock); it was not cancelled, '
                                      'check it in the PVE task log'.format(upid, timeout), kind='timeout',
                                      node=node)
            self._sleep(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 1.5, 2.0)
        exitstatus = str(status.get('exitstatus', ''))
        full = self.task_log(node, upid, None)
        log = full[-log_lines:] if log_lines else full
        result = dict(upid=upid, node=node, exitstatus=exitstatus, warnings=[], log=log)
        if exitstatus == 'OK':
            return result
        if exitstatus.startswith('WARNINGS'):
            # every WARN line of the task, not only those among the last lines kept in `log`
            result['warnings'] = [line for line in full if 'WARN' in line.upper()] or [exitstatus]
            self.warnings.extend(result['warnings'])
            return result
        error_lines = [line for line in full if line.startswith('TASK ERROR')]
        message = error_lines[-1][len('TASK ERROR:'):].strip() if error_lines else exitstatus
        raise PveTaskError('PVE task {0} on {1} failed: {2}'.format(status.get('type', ''), node,
                                                                    message or exitstatus),
                           upid=upid, exitstatus=exitstatus, log=log, node=node)

    def task_log(self, node, upid, lines=20):
        """The last ``lines`` lines of a task's log (None: all of them).

        pve-manager PVE/API2/Tasks.pm read_task_log reads ``limit`` lines from ``start`` (default 50; no maximum,
        ``limit=0`` reads to the end: pve-common Tools.pm dump_logfile_by_filehandle). A million lines is every
        task's whole log (a migration with local disks prints a line per second: 11 days), so its last lines and
        every warning are there, on any server (fakepve answers nothing for 0)."""
        try:
            entries = self.get('nodes/{0}/tasks/{1}/log'.format(node, upid), start=0, limit=TASK_LOG_LIMIT) or []
        except PveApiError:
            return []
        if lines is not None and len(entries) > lines:
            entries = entries[-lines:]
        return [str(e.get('t', '')) for e in entries]

    def run_task(self, method, path, params=None, timeout=600):
        """Start a task (a call that answers with a UPID) and wait for it."""
        upid = self.request(method, path, params)
        if not upid:
            return dict(upid=None, exitstatus='OK', warnings=[], log=[])
        return self.wait_task(upid, timeout=timeout)

    def stop_vm(self, node, vmid, name=None, timeout=600, poll=0.2, shutdown_timeout=0):
        """Stop a VM and wait, by wall clock, until PVE shows it stopped. Returns the stop task's result.

        With ``shutdown_timeout`` (seconds, > 0) the guest is asked to shut down (qemu-server vm_shutdown: ACPI power
        button, or the guest agent's shutdown) and PVE terminates it after that many seconds (``forceStop``: SIGTERM,
        then SIGKILL 10 s later; QemuServer.pm _do_vm_stop); 0 stops it at once (vm_stop: QEMU quits). ``timeout`` is
        the wait for PVE beyond the guest's shutdown time.

        qemu-server's vm_stop and vm_shutdown stop a VM themselves (a ``qmstop``/``qmshutdown`` task that ends when
        the VM is off) unless the VM is an HA resource: then they only queue ``ha-manager crm-command stop <sid>
        <timeout>`` (a ``hastop`` task that ends at once) and the HA manager stops the VM at its next rounds, with a
        shutdown of that timeout and forceStop (pve-ha-manager Resources/PVEVM.pm shutdown) or, for 0, a stop.
        destroy_vm refuses a running VM, so whoever destroys after a stop must wait for the VM itself, not for the
        task: this does, for both kinds.
        """
        grace = max(0, int(shutdown_timeout or 0))
        timeout = timeout + (grace + 10 if grace else 0)
        deadline = self._clock() + timeout
        path = 'nodes/{0}/qemu/{1}/status/'.format(node, vmid)
        self._unlocked_for_stop(node, vmid, path, name, deadline, poll)
        # vm_shutdown refuses a paused VM unless forceStop ("VM is paused - cannot shutdown"), and with it stops the
        # VM at once: forceStop is always sent, so a paused VM is stopped as before.
        verb, params = ('shutdown', {'timeout': grace, 'forceStop': 1}) if grace else ('stop', None)
        who = '{0!r} '.format(name) if name else ''

        def send():
            sent = self.run_task('POST', path + verb, params, timeout=timeout)
            if grace and any('terminating now with' in line for line in sent.get('log') or []):
                # _do_vm_stop `warn`s (not log_warn): the task ends OK, the line is only in its log
                sent['warnings'] = list(sent['warnings']) + [
                    'VM {0}(vmid {1}) did not shut down within {2}s: PVE terminated it (shutdown_timeout)'.format(
                        who, vmid, grace)]
            return sent

        task = send()
        delay, sent_at, resent = poll, self._clock(), 0
        while True:
            current = self.get(path + 'current') or {}
            if current.get('status') == 'stopped':
                return task
            raise_on_ha_error(current, name, vmid, node, path + verb)
            ha = current.get('ha') or {}
            if int(ha.get('managed') or 0) and ha.get('state') == 'started' and resent < 2 and \
                    self._clock() - sent_at >= self.ha_stop_resend:
                # pve-ha-manager Manager.pm keeps a queued `crm-command stop` in the service's status until
                # next_state_started acts on it, within a round (10 s); a change of the service's state meanwhile
                # (migrate, relocate, fence, freeze: $change_service_state deletes every key) drops it, and the
                # service stays started. Still started after the CRM's rounds: ask again.
                task['warnings'] = list(task['warnings']) + list(send()['warnings']) + [
                    'VM {0}(vmid {1}): HA still had it started {2:.0f}s after the stop request (the CRM drops a queued '
                    'stop when the service changes state meanwhile): the stop was sent again'.format(
                        who, vmid, self._clock() - sent_at)]
                sent_at, resent, delay = self._clock(), resent + 1, poll
            if self._clock() >= deadline:
                how = ('it is an HA resource (HA state {0!r}): the HA manager stops it, so check `ha-manager status` '
                       '(CRM and LRM active, the resource not in error state)'.format(ha.get('state'))
                       if int(ha.get('managed') or 0) else 'check its task log on the node')
                raise PveTimeoutError('VM {0}(vmid {1} on {2}) is still {3} {4}s (wall clock) after the stop request; '
                                      '{5}, then run again'.format(who, vmid, node, current.get('status') or 'running',
                                                                   timeout, how),
                                      kind='timeout', node=node)
            self._sleep(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 1.5, 5.0)

    def _unlocked_for_stop(self, node, vmid, path, name, deadline, poll):
        """Before a stop: wait (``lock_wait``, within the deadline) for a lock to clear; refuse a VM HA holds in error.

        qemu-server vm_stop sends an HA resource's stop to the HA manager without looking at the lock; the LRM's stop
        then fails on it (QemuServer.pm _do_vm_stop check_lock) and the CRM puts the service in its error state
        (pve-ha-manager Manager.pm next_state_request_stop: "stop failed"), where later stops do nothing.
        """
        until = min(deadline, self._clock() + self.lock_wait)
        delay = poll
        while True:
            current = self.get(path + 'current') or {}
            raise_on_ha_error(current, name, vmid, node, path + 'stop')
            lock = current.get('lock')
            if not lock or current.get('status') == 'stopped':
                return
            if lock not in WAITABLE_LOCKS or self._clock() >= until:
                raise (PveTimeoutError if lock in WAITABLE_LOCKS else PveApiError)(
                    'VM {0}(vmid {1} on {2}) is locked ({3}){4}; it was not stopped: PVE refuses to stop a locked VM '
                    '(and an HA resource\'s stop would fail in the HA manager and leave it in its error state). Run '
                    'again once the {3} is over'.format('{0!r} '.format(name) if name else '', vmid, node, lock,
                                                        ' after waiting {0:.0f}s'.format(self.lock_wait)
                                                        if lock in WAITABLE_LOCKS else ''),
                    kind='lock', node=node, method='POST', path=path + 'stop')
            self._sleep(min(delay, max(0.0, until - self._clock())))
            delay = min(delay * 1.5, 5.0)

    # -------------------------------------------------------------- cluster

    def nodes(self):
        """{node: 'online' | 'offline' | ...}."""
        return dict((n['node'], n.get('status', 'unknown')) for n in self.get('nodes'))

    def require_quorum(self):
        """Stop before any write when the cluster is not quorate."""
        for item in self.get('cluster/status') or []:
            if item.get('type') == 'cluster' and not int(item.get('quorate', 1)):
                raise PveApiError('the cluster {0!r} has lost quorum: no change was made. Restore quorum '
                                  '(pvecm status) and run again.'.format(item.get('name', '')), kind='quorum')

    def resources(self, kind=None):
        """``GET /cluster/resources``, with the VMs PVE lists before it knows their name completed (see
        :meth:`_named`)."""
        items = self.get('cluster/resources', type=kind) if kind else self.get('cluster/resources')
        items = list(items or [])
        if not any(_nameless(item) for item in items):
            return items
        # pmxcfs drops a VM's status 5 minutes after its node stopped sending it: every VM of a node offline longer
        # is nameless too, and asking that node would wait for its timeout. Only VMs of online nodes are asked.
        online = set(n for n, state in self.nodes().items() if state == 'online')
        return [self._named(item) if _nameless(item) and item.get('node') in online else item for item in items]

    def vm_current(self, node, vmid):
        """A VM's ``status/current`` (qemu-server vmstatus: read from its config and QEMU now), or None when the node
        does not answer."""
        try:
            return self.get('nodes/{0}/qemu/{1}/status/current'.format(node, vmid)) or {}
        except PveApiError:
            return None

    def vm_status(self, node, vmid):
        """A VM's status now, as pvestatd would list it (:func:`listed_status`: running, paused, stopped, ...);
        None when the node does not answer."""
        current = self.vm_current(node, vmid)
        return None if current is None else listed_status(current)

    def _named(self, item):
        """A qemu entry without a name, completed from the VM's ``status/current``.

        pve-manager PVE/API2/Cluster.pm ``resources`` reads only ``lock`` and ``tags`` from the config; name, status,
        template and usage come from the status pvestatd broadcasts every 10 s (API2Tools.pm ``extract_vm_stats``).
        A VM made since the last round is listed with status ``unknown`` and no name, so a clone that just finished
        would not be found by its name (and a second run could clone it again). ``status/current`` (qemu-server
        ``vmstatus``) reads the config; its status is given as pvestatd gives it (``qmpstatus``, else ``status``).
        A VM whose node does not answer stays as listed."""
        if not _nameless(item):
            return item
        current = self.vm_current(item['node'], item['vmid'])
        if current is None:
            return item
        out = dict(item)
        out['name'] = current.get('name') or 'VM {0}'.format(item['vmid'])
        out['status'] = listed_status(current) or item.get('status')
        out['template'] = 1 if str(current.get('template', 0)) in ('1', 'True', 'true') else 0
        for mine, theirs in (('maxcpu', 'cpus'), ('maxmem', 'maxmem'), ('cpu', 'cpu'), ('mem', 'mem'),
                             ('maxdisk', 'maxdisk'), ('uptime', 'uptime')):
            if theirs in current and mine not in out:
                out[mine] = current[theirs]
        return out

    def next_vmid(self):
        return int(self.get('cluster/nextid'))

    # --------------------------------------------------------- VM config

    def vm_config(self, node, vmid):
        """(config without digest, digest)."""
        cfg = dict(self.get('nodes/{0}/qemu/{1}/config'.format(node, vmid)) or {})
        digest = cfg.pop('digest', None)
        return cfg, digest

    def vm_pending(self, node, vmid):
        """{key: pending value, or None for a pending delete}: what a running VM's config holds until its next start
        (qemu-server vm_pending; GET config answers with these values already applied)."""
        out = {}
        for item in self.get('nodes/{0}/qemu/{1}/pending'.format(node, vmid)) or []:
            if item.get('delete'):
                out[item['key']] = None
            elif 'pending' in item:
                out[item['key']] = item['pending']
        return out

    def update_vm_config(self, node, vmid, compute, check_mode=False):
        """Digest-checked update: read config + digest, ``compute(config)`` -> (set, delete), PUT the difference.

        ``compute`` gets the current config and returns ``(changes, deletes)``: a dict of keys to set and a
        list of keys to remove, both empty when nothing differs. On a digest mismatch (someone else changed
        the VM in between) the config is re-read and ``compute`` runs again, once. A PUT whose answer was lost
        (PveUncertainError) is resolved the same way: the config is read again and only what still differs is
        sent (qemu-server update_vm_api writes the config before answering, so a carried-out PUT reads back).
        Returns ``(before, changes, deletes)`` of the update that was made.
        """
        digest_retries, uncertain = 1, 0
        made = None
        while True:
            before, digest = self.vm_config(node, vmid)
            changes, deletes = compute(dict(before))
            if (not changes and not deletes) or check_mode:
                return made or (before, changes, deletes)
            made = (before, changes, deletes)
            params = dict(changes)
            if deletes:
                params['delete'] = ','.join(sorted(deletes))
            if digest:
                params['digest'] = digest
            try:
                self.put('nodes/{0}/qemu/{1}/config'.format(node, vmid), **params)
                return made
            except PveUncertainError:
                uncertain += 1
                if uncertain >= UNCERTAIN_ATTEMPTS:
                    raise
                self.warnings.append('the answer to a config update of vmid {0} was lost; read it again'.format(vmid))
            except PveApiError as exc:
                if exc.kind != 'digest' or digest_retries == 0:
                    raise
                digest_retries -= 1

    def settle_write(self, method, path, params=None, settled=None, what=None):
        """A write whose lost answer is resolved by looking again, never by sending it blindly.

        ``settled()`` reads PVE and says whether the write's effect is in place: True, nothing is sent again; False,
        the request never arrived (or was refused) and it is sent again (at most :data:`UNCERTAIN_ATTEMPTS` in all).
        After a lost answer, an error of a later attempt is checked the same way (the first may have been carried
        out meanwhile). Returns the answer's data, or None when the effect was found after a lost answer.
        """
        lost = False
        for attempt in range(1, UNCERTAIN_ATTEMPTS + 1):
            try:
                return self.request(method, path, params)
            except PveUncertainError:
                lost = True
                if settled is not None and settled():
                    self.warnings.append('the answer to {0} was lost; it was carried out'.format(
                        what or '{0} /{1}'.format(method, path)))
                    return None
                if settled is None or attempt == UNCERTAIN_ATTEMPTS:
                    raise
            except PveApiError:
                if lost and settled is not None and settled():
                    return None
                raise
        raise AssertionError('unreachable')  # pragma: no cover

    def start_vm(self, node, vmid, timeout=600, name=None, poll=0.2):
        """Start a VM; a start whose answer was lost is resolved by looking again. Returns the task's result, with
        ``node``: where the VM runs.

        qemu-server vm_start runs in a ``qmstart`` task (``hastart`` for an HA resource, which only asks the HA
        manager). After a lost answer: a start task of this VM still running is waited for; a VM already running
        (or an HA resource asked to start) needs nothing more; otherwise the request never arrived: it is sent again.
        An HA resource is then waited for, by wall clock, until it runs, wherever HA put it (the CRM relocates a VM
        its node cannot start, up to ``max_relocate`` times); a VM HA gave up on, held in its error state, where a
        start request does nothing, is a PveHaError with how to clear it.
        """
        deadline = self._clock() + timeout
        path = 'nodes/{0}/qemu/{1}/status/'.format(node, vmid)
        # qemu-server vm_start's hastart worker runs `ha-manager set vm:N --state started`, which pve-ha-manager
        # API2/HA/Resources.pm check_service_state refuses for a service in error ("must be disabled and fixed
        # first"): the task fails. Look first, and name the error state when a start failed anyway.
        raise_on_ha_error(self.get(path + 'current') or {}, name, vmid, node, path + 'start')
        try:
            task = self._start_task(node, vmid, path, timeout)
        except PveTaskError as exc:
            if ':hastart:' in (exc.upid or ''):
                raise_on_ha_error(self.get(path + 'current') or {}, name, vmid, node, path + 'start')
            raise
        task['node'] = node
        if ':hastart:' not in (task.get('upid') or ':hastart:'):     # no upid: the lost-answer path, look
            return task
        delay = poll
        while True:
            try:
                current = self.get('nodes/{0}/qemu/{1}/status/current'.format(node, vmid)) or {}
            except PveApiError:
                moved = self._vm_node(vmid)
                if moved in (None, node):
                    raise
                node = task['node'] = moved                 # relocated by HA meanwhile: look there
                continue
            state = ha_service_state(current)
            if current.get('status') == 'running' or state is None:
                return task
            raise_on_ha_error(current, name, vmid, node, 'nodes/{0}/qemu/{1}/status/start'.format(node, vmid))
            if self._clock() >= deadline:
                raise PveTimeoutError('VM {0}(vmid {1} on {2}) is still {3} {4}s (wall clock) after HA was asked to '
                                      'start it (HA state {5!r}): check `ha-manager status` (CRM and LRM active), '
                                      'then run again'.format('{0} '.format(name) if name else '', vmid, node,
                                                              current.get('status') or 'stopped', timeout,
                                                              state or 'not registered yet'),
                                      kind='timeout', node=node)
            self._sleep(min(delay, max(0.0, deadline - self._clock())))
            delay = min(delay * 1.5, 5.0)

    def _vm_node(self, vmid):
        """The node the cluster shows a VM on now, or None."""
        for item in self.resources('vm'):
            if str(item.get('vmid')) == str(vmid):
                return item.get('node')
        return None

    def _start_task(self, node, vmid, path, timeout):
        for attempt in range(1, UNCERTAIN_ATTEMPTS + 1):
            try:
                return self.run_task('POST', path + 'start', timeout=timeout)
            except PveUncertainError:
                if attempt == UNCERTAIN_ATTEMPTS:
                    raise
            active = [t for t in self.get('nodes/{0}/tasks'.format(node), vmid=vmid, source='active') or []
                      if t.get('type') in ('qmstart', 'hastart') and t.get('upid')]
            if active:
                return self.wait_task(active[0]['upid'], timeout=timeout)
            current = self.get(path + 'current') or {}
            if current.get('status') == 'running' or (current.get('ha') or {}).get('state') == 'started':
                return dict(upid=None, exitstatus='OK', warnings=[], log=[])
        raise AssertionError('unreachable')  # pragma: no cover


def _nameless(item):
    """A qemu entry of /cluster/resources without its name (see PveApi._named): none yet, or "VM <vmid>", the name
    pvestatd gives a config without one (a clone's temporary config: the name may be there by now)."""
    return isinstance(item, dict) and item.get('type') == 'qemu' and item.get('vmid') is not None and \
        bool(item.get('node')) and item.get('name') in (None, '', 'VM {0}'.format(item.get('vmid')))


def listed_status(current):
    """The status pvestatd lists for a VM of this ``status/current`` (pve-manager pvestatd update_qemu_status:
    ``$d->{qmpstatus} || $d->{status}``)."""
    return current.get('qmpstatus') or current.get('status')


def raise_on_ha_error(current, name, vmid, node, path):
    """PveHaError (how to clear it) when ``status/current`` shows the VM in HA's error state, where a start or a stop
    through HA does nothing."""
    if ha_service_state(current) == 'error':
        raise PveHaError(ha_error_message(name, vmid, node), node=node, method='POST', path=path)


def ha_service_state(status):
    """The HA manager's state of a VM's service as ``status/current`` shows it (``ha.state``: started, stopped,
    error, fence, recovery, ...; pve-ha-manager HA/Config.pm get_service_status), ``''`` for an HA resource the CRM
    has not registered yet (no state), or None when HA does not manage the VM."""
    ha = status.get('ha') if isinstance(status, dict) else None
    if isinstance(ha, dict) and str(ha.get('managed', 0)) in ('1', 'True', 'true'):
        return ha.get('state') or ''
    return None


def ha_error_message(name, vmid, node):
    """What to do about a VM the HA manager holds in its error state (pve-ha-manager Manager.pm: entered when a start
    failed on every node HA tried, or a stop failed; left only when the resource's state is set to disabled)."""
    return ('HA holds {0}(vm:{1}, on {2}) in its error state: its start failed on every node HA tried (max_restart, '
            'max_relocate), or a stop failed, and HA neither starts nor moves it again, whatever is asked. Find the '
            'cause in the failed task\'s log and in `journalctl -u pve-ha-lrm` on {2}, fix it, then clear the state: '
            '`ha-manager set vm:{1} --state disabled`, wait until `ha-manager status` shows vm:{1} stopped or disabled, no longer error (the CRM '
            'takes it out of the error state at its next round; PVE refuses `started` until then), then `ha-manager '
            'set vm:{1} --state started` (or the same edits under Datacenter > HA)'.format('{0} '.format(name) if name else '', vmid, node))


def _privilege(message):
    found = re.search(r'lacks privilege (\S+)', message)
    return found.group(1) if found else None


def fail_json_from(module, exc, **result):
    """End a module run with a classified API error (and whatever result it had so far)."""
    info = exc.as_dict() if isinstance(exc, PveApiError) else dict(msg=str(exc))
    msg = info.pop('msg')
    if isinstance(exc, PveTaskError):
        info['task_log'] = exc.log
        info['upid'] = exc.upid
    result.update(info)
    module.fail_json(msg=msg, **result)

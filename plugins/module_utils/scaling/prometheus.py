# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""History from Prometheus, for operators who already scrape PVE with prometheus-pve-exporter.

:func:`load_history` asks Prometheus' HTTP API (``/api/v1/query_range``) for the managed VMs' usage over a window
and appends it to a history store exactly as the ``pve`` backend appends PVE's rrddata: series
``<template>/<service>/<vm name>/<metric>`` (``metrics.series_key``), the metrics of ``metrics.HISTORY_METRICS``
normalised by ``metrics.normalise_point``, one point a minute labelled with the end of the minute.

What the exporter exports (prometheus-pve-exporter ``src/pve_exporter/collector/cluster.py``,
``ClusterResourcesCollector``, from PVE's ``/cluster/resources``; every series has the one label ``id``, for a VM
``qemu/<vmid>``, plus the ``job``/``instance`` labels of the scrape):

==================================  ==============================================  ===========================
exporter metric                     what (PVE's /cluster/resources field)           point field
==================================  ==============================================  ===========================
pve_cpu_usage_ratio                 gauge, ``cpu``: fraction of the VM's vCPUs      cpu
pve_cpu_usage_limit                 gauge, ``maxcpu``: vCPUs                         maxcpu
pve_memory_usage_bytes              gauge, ``mem``                                  mem
pve_memory_size_bytes               gauge, ``maxmem``                               maxmem
pve_network_receive_bytes_total     counter, ``netin`` since the VM started         netin (bytes/s by rate())
pve_network_transmit_bytes_total    counter, ``netout`` since the VM started        netout (bytes/s by rate())
pve_guest_info                      1, labels id, node, name, type, template, tags  which VM held the vmid
==================================  ==============================================  ===========================

Queries (``DEFAULT_QUERIES``) are templates the user can override per metric (``queries``); they are filled with
``$selector`` (the label matcher that selects the managed VMs: ``id=~"qemu/(101|102|...)"``), ``$step`` (the
resolution, ``60s``) and ``$rate_window`` (the range of ``rate()``: twice the step, at least ``2m``, so it holds
two samples at a scrape interval of up to a minute). There is ONE query per metric per call for all managed VMs,
never one per VM; a window longer than Prometheus' 11,000 points per series is split into a few queries a metric.
The answer is matched to the managed VMs on the client as well (a query without ``$selector`` works too).

* Step alignment: the query's start and end are multiples of the step, so Prometheus evaluates at the ends of
  minutes; the gauges are ``avg_over_time(...[$step])``, the mean of the samples of the minute ending there (what
  PVE's AVERAGE row holds), the capacities ``last_over_time``. A step longer than a minute (``step``, a multiple of
  60) is spread over the minutes it covers, as the ``pve`` backend spreads PVE 8's half-hour rows: such filled
  minutes never replace a one-minute value.
* Gaps: a minute without a sample (the exporter or PVE down, a scrape interval longer than the step) has no value;
  nothing is interpolated (the forecaster's ``regularize`` sees the gap, as with PVE's gap rows).
* Stale series: a VM that disappears from the exporter is marked stale by Prometheus and gives no more values; a
  vmid that was destroyed and reused by another VM is told apart by ``pve_guest_info``'s ``name``: a value at a
  time when the vmid belonged to a VM of another name is dropped.
* Counter resets: network bytes are counters that restart at 0 with the VM; ``rate()`` handles the reset.
* Several series for one VM and metric: joined where they agree (the scrape's ``instance`` label changed, two jobs
  scrape the same exporter); where they give different values for the same minute (two clusters with the same
  vmids in one Prometheus) that VM's metric is not used and a warning names the label sets: add a matcher
  (``job``, ``instance``, ``cluster``) to the queries to pick one.

Errors (:class:`PrometheusError`) name the URL and the query, never a credential: Prometheus down (connection
refused), slow (the timeout), answering 5xx (retried, then an error), refusing a query (400/422: a bad template) or
the credentials (401/403). An empty answer is not an error: the summary's ``warnings`` say which metric had no
series, and the forecast sees no history for those VMs (so the policy takes no action).
"""

import math
import os
import random
import re
import string
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import HistoryError

DEFAULT_STEP = 60
DEFAULT_TIMEOUT = 30
DEFAULT_RETRIES = 3
# Prometheus refuses a range query that would return more than 11,000 points per series
# (web/api/v1/api.go queryRange: "exceeded maximum resolution of 11,000 points per timeseries").
MAX_POINTS = 11000
# Above this many VMs the selector matches every qemu guest instead of listing the vmids (the answer is matched
# to the managed VMs on the client either way): keeps the query text small.
MAX_SELECTOR_VMS = 2000

DEFAULT_QUERIES = {
    'cpu': 'avg_over_time(pve_cpu_usage_ratio{$selector}[$step])',
    'maxcpu': 'last_over_time(pve_cpu_usage_limit{$selector}[$step])',
    'mem': 'avg_over_time(pve_memory_usage_bytes{$selector}[$step])',
    'maxmem': 'last_over_time(pve_memory_size_bytes{$selector}[$step])',
    'netin': 'rate(pve_network_receive_bytes_total{$selector}[$rate_window])',
    'netout': 'rate(pve_network_transmit_bytes_total{$selector}[$rate_window])',
    'info': 'max by (id, name) (last_over_time(pve_guest_info{$selector}[$step]))',
}
QUERY_NAMES = tuple(DEFAULT_QUERIES)
REQUIRED_QUERIES = ('cpu',)
PLACEHOLDERS = ('selector', 'step', 'rate_window')

# Configuration keys and the environment variables that give them when the configuration does not.
ENVIRONMENT = {
    'url': 'SHADOWNET_PROMETHEUS_URL',
    'bearer_token': 'SHADOWNET_PROMETHEUS_TOKEN',
    'username': 'SHADOWNET_PROMETHEUS_USER',
    'password': 'SHADOWNET_PROMETHEUS_PASSWORD',
    'ca_path': 'SHADOWNET_PROMETHEUS_CA_PATH',
}
SECRETS = ('bearer_token', 'password')
ID_PATTERN = re.compile(r'^qemu/(\d+)$')


class PrometheusError(HistoryError):
    """Prometheus could not give the history: the message names the URL and the query (never a secret)."""

    def __init__(self, message, url=None, query=None, status=None, kind='error'):
        super().__init__(message)
        self.message = message
        self.url = url
        self.query = query
        self.status = status
        self.kind = kind


# ---------------------------------------------------------------------------------------- configuration

def resolve_config(config, environ=None):
    """The backend's options with defaults, the ``SHADOWNET_PROMETHEUS_*`` variables where an option is unset,
    and the queries merged over ``DEFAULT_QUERIES``. Raises PrometheusError naming the option to fix."""
    environ = os.environ if environ is None else environ
    conf = dict((k, v) for k, v in (config or {}).items() if v is not None)
    for key, var in ENVIRONMENT.items():
        if not conf.get(key) and environ.get(var):
            conf[key] = environ[var]
    url = str(conf.get('url') or '').strip()
    if not url:
        raise PrometheusError('history backend prometheus needs history.url (or SHADOWNET_PROMETHEUS_URL), the '
                              'base URL of the Prometheus server, e.g. https://prometheus.example.com:9090')
    if not re.match(r'^https?://[^/\s]+', url):
        raise PrometheusError('history.url must be an http:// or https:// URL, got {0!r}'.format(_redact_url(url)))
    conf['url'] = url.rstrip('/')
    if conf.get('bearer_token') and (conf.get('username') or conf.get('password')):
        raise PrometheusError('history: give either bearer_token or username and password for Prometheus, not both')
    if bool(conf.get('username')) != bool(conf.get('password')):
        raise PrometheusError('history: username and password for Prometheus go together (basic auth)')
    conf['validate_certs'] = _bool(conf.get('validate_certs', True), 'validate_certs')
    if conf.get('ca_path') and not os.path.isfile(os.path.expanduser(conf['ca_path'])):
        raise PrometheusError('history.ca_path {0!r} is not a file: give the CA certificate (PEM) that signed '
                              "Prometheus' certificate".format(conf['ca_path']))
    conf['timeout'] = _positive(conf.get('timeout', DEFAULT_TIMEOUT), 'timeout', float)
    conf['retries'] = _positive(conf.get('retries', DEFAULT_RETRIES), 'retries', int, zero=True)
    step = _positive(conf.get('step', DEFAULT_STEP), 'step', int)
    if step % metrics_utils.RRD_STEP:
        raise PrometheusError('history.step must be a multiple of {0} seconds (the history is kept a minute a point), '
                              'got {1}'.format(metrics_utils.RRD_STEP, step))
    conf['step'] = step
    queries = dict(DEFAULT_QUERIES)
    given = conf.get('queries') or {}
    if not isinstance(given, dict):
        raise PrometheusError('history.queries must be a dict of metric: PromQL template (metrics: {0})'.format(
            ', '.join(QUERY_NAMES)))
    for name, template in given.items():
        if name not in DEFAULT_QUERIES:
            raise PrometheusError('history.queries.{0} is not a metric this backend reads (use {1})'.format(
                name, ', '.join(QUERY_NAMES)))
        if template in (None, '') and name in REQUIRED_QUERIES:
            raise PrometheusError('history.queries.{0} cannot be empty: the forecast needs it'.format(name))
        queries[name] = template or None
        if template:
            render(template, selector='id=~"qemu/1"', step=step, name=name)
    conf['queries'] = queries
    return conf


def _bool(value, name):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on'):
        return True
    if text in ('0', 'false', 'no', 'off'):
        return False
    raise PrometheusError('history.{0} must be a boolean, got {1!r}'.format(name, value))


def _positive(value, name, kind, zero=False):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        raise PrometheusError('history.{0} must be a {1} number, got {2!r}'.format(
            name, 'non-negative' if zero else 'positive', value))
    return number


def _redact_url(url):
    """The URL without user:password@ (never put a secret in a message)."""
    return re.sub(r'^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@', r'\1', str(url))


# ---------------------------------------------------------------------------------------------- queries

def selector(vms, limit=MAX_SELECTOR_VMS):
    """The label matcher of the managed VMs' series: their ``id`` labels, or every qemu guest above ``limit``."""
    vmids = sorted(set(int(vm['vmid']) for vm in vms))
    if not vmids or len(vmids) > limit:
        return 'id=~"qemu/[0-9]+"'
    return 'id=~"qemu/({0})"'.format('|'.join(str(v) for v in vmids))


def duration(seconds):
    seconds = int(seconds)
    if seconds % 60 == 0:
        return '{0}m'.format(seconds // 60)
    return '{0}s'.format(seconds)


def render(template, selector, step, name='query'):
    """Fill a query template's ``$selector``, ``$step`` and ``$rate_window``; an unknown ``$name`` is an error."""
    values = dict(selector=selector, step=duration(step), rate_window=duration(max(2 * int(step), 120)))
    try:
        return string.Template(template).substitute(values)
    except KeyError as exc:
        raise PrometheusError('history.queries.{0}: unknown placeholder ${1} (known: {2})'.format(
            name, exc.args[0], ', '.join('$' + p for p in PLACEHOLDERS)))
    except ValueError as exc:
        raise PrometheusError('history.queries.{0}: {1} (write a literal $ as $$)'.format(name, exc))


def windows(since, until, step, max_points=MAX_POINTS):
    """``[(start, end)]``: the step-aligned evaluation times from ``since`` to ``until`` (ends of steps), in pieces
    of at most ``max_points`` points. Empty when the window holds no step end."""
    step = int(step)
    start = -(-int(math.ceil(since)) // step) * step
    end = int(math.floor(until)) // step * step
    out = []
    while start <= end:
        last = min(end, start + (max_points - 1) * step)
        out.append((start, last))
        start = last + step
    return out


# ----------------------------------------------------------------------------------------------- client

class PrometheusClient(object):
    """query_range over Prometheus' HTTP API with requests: TLS verified by default (CA file), bearer or basic
    auth, a timeout per request, bounded retries with backoff and jitter for what may pass (connection refused or
    dropped, a timeout, 429, 5xx), none for what will not (400/422 bad query, 401/403, 404).

    ``session``, ``sleep`` and ``rng`` are injectable for tests.
    """

    def __init__(self, url, bearer_token=None, username=None, password=None, validate_certs=True, ca_path=None,
                 timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, backoff=0.5, backoff_max=4.0, session=None,
                 sleep=time.sleep, rng=None):
        if session is None:
            try:
                import requests
            except ImportError as exc:  # pragma: no cover - requests comes with the collection's requirements
                raise PrometheusError('the prometheus history backend needs the Python library requests: {0}'.format(exc),
                                      kind='dependency')
            session = requests.Session()
        self.url = url.rstrip('/')
        self.session = session
        self.session.verify = (os.path.expanduser(ca_path) if ca_path else True) if validate_certs else False
        self.session.headers['Accept'] = 'application/json'
        if bearer_token:
            self.session.headers['Authorization'] = 'Bearer {0}'.format(bearer_token)
        elif username:
            self.session.auth = (username, password or '')
        self.timeout = timeout
        self.attempts = 1 + max(0, int(retries))
        self.backoff = backoff
        self.backoff_max = backoff_max
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.requests = 0
        self.queries = []

    def query_range(self, query, start, end, step):
        """``data.result`` of one range query (a matrix), POSTed as a form (no URL length limit)."""
        endpoint = self.url + '/api/v1/query_range'
        where = '{0} query {1!r}'.format(_redact_url(endpoint), _short(query))
        form = {'query': query, 'start': str(int(start)), 'end': str(int(end)), 'step': str(int(step)),
                'timeout': '{0}s'.format(max(1, int(self.timeout)))}
        self.queries.append(query)
        for attempt in range(1, self.attempts + 1):
            self.requests += 1
            outcome, error = self._once(endpoint, form, where)
            if error is None:
                return outcome
            if not outcome or attempt == self.attempts:
                if attempt > 1:
                    error.message = '{0} (after {1} attempts)'.format(error.message, attempt)
                    error.args = (error.message,)
                raise error
            top = min(self.backoff_max, self.backoff * (2 ** (attempt - 1)))
            self._sleep(self._rng.uniform(0, top))
        raise PrometheusError('unreachable', url=endpoint, query=query)  # pragma: no cover

    def _once(self, endpoint, form, where):
        """``(result, None)`` on success, else ``(retryable, PrometheusError)``."""
        import requests
        query = form['query']

        def fail(message, retryable, kind, status=None):
            return retryable, PrometheusError(message, url=_redact_url(endpoint), query=query, status=status,
                                              kind=kind)
        try:
            resp = self.session.post(endpoint, data=form, timeout=self.timeout)
        except requests.exceptions.SSLError as exc:
            return fail('TLS verification of Prometheus failed ({0}): {1}. Give the CA that signed its certificate '
                        'with history.ca_path (SHADOWNET_PROMETHEUS_CA_PATH), or, only for a lab, '
                        'history.validate_certs: false.'.format(where, _clean(exc)), False, 'tls')
        except requests.exceptions.Timeout as exc:
            return fail('Prometheus did not answer within {0}s ({1}): {2}. Raise history.timeout or make the query '
                        'cheaper.'.format(self.timeout, where, _clean(exc)), True, 'timeout')
        except requests.exceptions.ConnectionError as exc:
            return fail('cannot reach Prometheus ({0}): {1}'.format(where, _clean(exc)), True, 'connection')
        except requests.exceptions.RequestException as exc:
            return fail('request to Prometheus failed ({0}): {1}'.format(where, _clean(exc)), False, 'error')
        status = resp.status_code
        body = _json(resp)
        detail = ''
        if isinstance(body, dict) and body.get('error'):
            detail = '{0}: {1}'.format(body.get('errorType') or 'error', body.get('error'))
        elif status >= 300:
            detail = (resp.text or '').strip()[:300]
        if status in (401, 403):
            return fail('Prometheus refused the credentials ({0}): HTTP {1} {2}. Check history.bearer_token or '
                        'history.username/password (SHADOWNET_PROMETHEUS_TOKEN, SHADOWNET_PROMETHEUS_USER, '
                        'SHADOWNET_PROMETHEUS_PASSWORD).'.format(where, status, detail).rstrip(), False, 'auth', status)
        if status in (400, 422):
            return fail('Prometheus refused the query ({0}): HTTP {1} {2}. Fix history.queries.'.format(
                where, status, detail), False, 'query', status)
        if status == 429 or status >= 500:
            return fail('Prometheus answered HTTP {0} ({1}): {2}'.format(status, where, detail or resp.reason),
                        True, 'server', status)
        if status != 200:
            return fail('Prometheus answered HTTP {0} ({1}): {2}. Is history.url the Prometheus server (its API is '
                        'under /api/v1)?'.format(status, where, detail or resp.reason), False, 'error', status)
        if not isinstance(body, dict) or body.get('status') != 'success':
            return fail('Prometheus gave no usable answer ({0}): {1}'.format(where, detail or _short(resp.text)),
                        False, 'error', status)
        data = body.get('data') or {}
        if data.get('resultType') != 'matrix':
            return fail('Prometheus answered a {0} where a range query gives a matrix ({1})'.format(
                data.get('resultType'), where), False, 'query', status)
        return data.get('result') or [], None


def _json(resp):
    try:
        return resp.json()
    except ValueError:
        return None


def _short(text, limit=200):
    text = ' '.join(str(text or '').split())
    return text if len(text) <= limit else text[:limit] + '...'


def _clean(exc):
    """An exception's text without any user:password@ of a URL in it."""
    return re.sub(r'//[^/@\s]*@', '//', str(exc))


# ---------------------------------------------------------------------------------------------- parsing

def parse_matrix(result, managed, metric, warnings):
    """``{vmid: {time: value}}`` of one query's matrix, for the managed vmids only.

    Series are matched by their ``id`` label (``qemu/<vmid>``); a value that is NaN or infinite is a gap. Several
    series for one VM (other labels differ: the scrape's ``instance`` changed, two jobs scrape the same exporter)
    are joined where they agree; where they give different values for the same time (two clusters with the same
    vmids in one Prometheus), the VM's metric is dropped with a warning naming the label sets.
    """
    series = {}
    for item in result or []:
        labels = item.get('metric') or {}
        found = ID_PATTERN.match(str(labels.get('id', '')))
        if not found or int(found.group(1)) not in managed:
            continue
        series.setdefault(int(found.group(1)), []).append((labels, item.get('values') or []))
    out = {}
    for vmid, items in series.items():
        values, clash = {}, 0
        for labels, pairs in items:
            for ts, value in pairs:
                number = _value(value)
                if number is None:
                    continue
                ts = int(round(float(ts)))
                if ts in values and not math.isclose(values[ts], number, rel_tol=1e-9, abs_tol=1e-12):
                    clash += 1
                values[ts] = number
        if clash:
            sets = ['{' + ', '.join('{0}="{1}"'.format(k, v) for k, v in sorted(labels.items())) + '}'
                    for labels, dummy in items]
            warnings.append('{0} of VM {1} ({2}): {3} series that disagree at {4} times ({5}); add a matcher (job, '
                            'instance) to history.queries.{0} that selects one'.format(
                                metric, vmid, managed[vmid], len(items), clash, ', '.join(sets)))
            continue
        out[vmid] = values
    return out


def parse_names(result, managed):
    """``{vmid: {time: name}}`` from the ``info`` query (``pve_guest_info`` by id and name)."""
    out = {}
    for item in result or []:
        labels = item.get('metric') or {}
        found = ID_PATTERN.match(str(labels.get('id', '')))
        if not found or int(found.group(1)) not in managed or 'name' not in labels:
            continue
        times = out.setdefault(int(found.group(1)), {})
        for ts, value in item.get('values') or []:
            if _value(value):
                times.setdefault(int(round(float(ts))), set()).add(labels['name'])
    return out


def _value(text):
    try:
        number = float(text)
    except (TypeError, ValueError):
        return None
    if math.isnan(number) or math.isinf(number):
        return None
    return number


def vm_points(vm, columns, names, step):
    """One VM's normalised points (``metrics.normalise_point``), oldest first, from ``columns`` (``{field:
    {time: value}}``, fields cpu, maxcpu, mem, maxmem, netin, netout) and ``names`` (``{time: {names}}`` or None).

    A time at which the vmid belonged to a VM of another name is dropped. With a step over a minute each value is
    spread over the minutes of its step; those points carry ``filled: True``.
    """
    times = sorted(set(t for values in columns.values() for t in values))
    out = []
    for ts in times:
        held = (names or {}).get(ts)
        if held and vm['name'] not in held:
            continue
        row = dict(time=ts)
        for field, values in columns.items():
            if ts in values:
                row[field] = values[ts]
        if len(row) == 1:
            continue
        point = metrics_utils.normalise_point(row, vm.get('maxcpu'), vm.get('maxmem'))
        if step == metrics_utils.RRD_STEP:
            out.append(point)
            continue
        for minute in range(ts - step + metrics_utils.RRD_STEP, ts + metrics_utils.RRD_STEP, metrics_utils.RRD_STEP):
            out.append(dict(point, time=minute, filled=True))
    return out


# ------------------------------------------------------------------------------------------------ loader

def load_history(store, vms, since, until, config, now=None, client=None):
    """Append the managed VMs' history from ``since`` to ``until`` (epoch seconds) to ``store`` from Prometheus.

    ``vms``: managed-VM dicts as ``metrics.managed_vms()`` gives them (``vmid``, ``name``, ``template``,
    ``service``, ``maxcpu``, ``maxmem`` are used). ``config``: the ``history`` option (url, ca_path,
    validate_certs, bearer_token, username, password, timeout, retries, queries, step; the ``SHADOWNET_PROMETHEUS_*``
    variables fill what is unset). One query per metric for all VMs (a few per metric when the window is longer than
    Prometheus' 11,000 points). ``until`` defaults to ``now``.

    Returns the summary of every loader (module_utils/scaling/history_backends.py): ``{backend: prometheus, url,
    queries, requests: 0 (no PVE request), points (appended points), vms: {name: {fine: [first, last, count] of the
    minutes with a cpu value (None when there are none), coarse: {step: count} when the step is over a minute}},
    appended, warnings, errors: [], step, since, until}``. Raises :class:`PrometheusError` (a ``HistoryError``) when
    Prometheus cannot answer: nothing is appended then.
    """
    conf = resolve_config(config)
    now = time.time() if now is None else now
    until = now if until is None else min(until, now)
    step = conf['step']
    if client is None:
        client = PrometheusClient(conf['url'], bearer_token=conf.get('bearer_token'), username=conf.get('username'),
                                  password=conf.get('password'), validate_certs=conf['validate_certs'],
                                  ca_path=conf.get('ca_path'), timeout=conf['timeout'], retries=conf['retries'])
    managed = dict((int(vm['vmid']), vm['name']) for vm in vms)
    summary = dict(backend='prometheus', url=_redact_url(conf['url']), queries=0, requests=0, http_requests=0,
                   points=0, vms=dict((vm['name'], dict(fine=None, coarse={})) for vm in vms), appended=0,
                   warnings=[], errors=[], step=step, since=int(since), until=int(until))
    pieces = windows(since, until, step)
    if not vms or not pieces:
        return summary
    match = selector(vms)
    columns = {}
    names = None
    warnings = summary['warnings']
    try:
        for metric in QUERY_NAMES:
            template = conf['queries'].get(metric)
            if not template:
                continue
            query = render(template, match, step, metric)
            result = []
            for start, end in pieces:
                result.extend(client.query_range(query, start, end, step))
            if metric == 'info':
                names = parse_names(result, managed)
                continue
            columns[metric] = parse_matrix(result, managed, metric, warnings)
            if not result:
                warnings.append('Prometheus returned no series for {0} ({1}): no {0} history for the managed VMs '
                                'from {2} to {3}'.format(metric, _short(query), _iso(pieces[0][0]), _iso(pieces[-1][1])))
    finally:
        summary['queries'] = len(client.queries)
        summary['http_requests'] = client.requests
    fine, filled = [], []
    missing = []
    for vm in vms:
        vmid = int(vm['vmid'])
        vm_columns = dict((field, values.get(vmid) or {}) for field, values in columns.items())
        points = vm_points(vm, vm_columns, (names or {}).get(vmid) if names is not None else None, step)
        cpu = [p['time'] for p in points if p.get('cpu') is not None and not p.get('filled')]
        info = summary['vms'][vm['name']]
        if step == metrics_utils.RRD_STEP:
            info['fine'] = [cpu[0], cpu[-1], len(cpu)] if cpu else None
        else:
            steps = len(set(p['time'] for p in points if p.get('cpu') is not None)) // (step // metrics_utils.RRD_STEP)
            info['coarse'] = {step: steps} if steps else {}
            cpu = cpu or [None] * steps
        if not cpu:
            missing.append(vm['name'])
        fine.extend(metrics_utils.history_points(vm, points))
        filled.extend(metrics_utils.history_points(vm, points, filled=True))
        summary['points'] += len(points)
    if missing and len(missing) < len(vms):
        warnings.append('no cpu history in Prometheus for {0} of {1} VMs: {2}'.format(
            len(missing), len(vms), ', '.join(missing[:10]) + (' ...' if len(missing) > 10 else '')))
    elif missing:
        warnings.append('no cpu history in Prometheus for any managed VM: check that prometheus-pve-exporter '
                        'is scraped with the cluster collectors (pve_cpu_usage_ratio{id="qemu/<vmid>"}) and that '
                        'history.queries select it')
    summary['appended'] = store.append(fine) if fine else 0
    if filled:
        summary['appended'] += store.append(filled, replace=False)
    return summary


def _iso(ts):
    return time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(ts))

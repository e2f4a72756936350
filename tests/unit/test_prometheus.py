# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The prometheus history backend's pure parts and its client, with a fake HTTP session (no server).

The real Prometheus, prometheus-pve-exporter and promtool are in tests/integration/test_prometheus_history.py.
"""
import pytest
import requests

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import prometheus
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import SQLiteHistoryStore

URL = 'https://prom.example.com:9090'
TOKEN = 'tok-3f9a-very-secret'
T0 = 1_700_000_040 // 60 * 60
GIB = 1024 ** 3


def vm(vmid, name, maxcpu=2, maxmem=2 * GIB, service='web'):
    return dict(template='shop', service=service, role='primary', name=name, vmid=vmid, node='pve1',
                status='running', maxcpu=float(maxcpu), maxmem=float(maxmem))


class Answer(object):
    def __init__(self, status, body=None, text=None):
        self.status_code = status
        self._body = body
        self.text = text if text is not None else ('' if body is None else str(body))
        self.reason = 'reason'

    def json(self):
        if self._body is None:
            raise ValueError('no json')
        return self._body


class FakeSession(object):
    """requests.Session stand-in: answers each POST with the next item of ``script`` (an Answer, an exception,
    or a callable of the form data)."""

    def __init__(self, script):
        self.script = list(script)
        self.headers = {}
        self.auth = None
        self.verify = None
        self.posts = []

    def post(self, url, data=None, timeout=None):
        self.posts.append((url, dict(data), timeout))
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        if callable(item):
            return item(data)
        return item


def matrix(series):
    return Answer(200, {'status': 'success', 'data': {'resultType': 'matrix', 'result': series}})


def series(labels, values):
    return {'metric': labels, 'values': [[ts, str(v)] for ts, v in values]}


def client(script, **kwargs):
    kwargs.setdefault('retries', 2)
    return prometheus.PrometheusClient(URL, session=FakeSession(script), sleep=lambda s: None, **kwargs)


# ------------------------------------------------------------------------------------------ configuration

def test_resolve_config_defaults_env_and_errors(tmp_path):
    env = {'SHADOWNET_PROMETHEUS_URL': URL + '/', 'SHADOWNET_PROMETHEUS_TOKEN': TOKEN}
    conf = prometheus.resolve_config({'backend': 'prometheus'}, environ=env)
    assert conf['url'] == URL and conf['bearer_token'] == TOKEN
    assert conf['validate_certs'] is True and conf['step'] == 60 and conf['retries'] == 3
    assert conf['queries'] == prometheus.DEFAULT_QUERIES
    # The option wins over the variable.
    assert prometheus.resolve_config({'url': 'http://other:9090'}, environ=env)['url'] == 'http://other:9090'
    with pytest.raises(prometheus.PrometheusError, match='SHADOWNET_PROMETHEUS_URL'):
        prometheus.resolve_config({}, environ={})
    with pytest.raises(prometheus.PrometheusError, match='not both'):
        prometheus.resolve_config({'url': URL, 'bearer_token': TOKEN, 'username': 'u', 'password': 'p'}, environ={})
    with pytest.raises(prometheus.PrometheusError, match='go together'):
        prometheus.resolve_config({'url': URL, 'username': 'u'}, environ={})
    with pytest.raises(prometheus.PrometheusError, match='ca_path'):
        prometheus.resolve_config({'url': URL, 'ca_path': str(tmp_path / 'missing.pem')}, environ={})
    with pytest.raises(prometheus.PrometheusError, match='multiple of 60'):
        prometheus.resolve_config({'url': URL, 'step': 90}, environ={})
    with pytest.raises(prometheus.PrometheusError, match=r'queries\.disk is not a metric'):
        prometheus.resolve_config({'url': URL, 'queries': {'disk': 'x'}}, environ={})
    with pytest.raises(prometheus.PrometheusError, match=r'unknown placeholder \$vmids'):
        prometheus.resolve_config({'url': URL, 'queries': {'cpu': 'pve_cpu_usage_ratio{id=~"$vmids"}'}}, environ={})
    with pytest.raises(prometheus.PrometheusError, match='cannot be empty'):
        prometheus.resolve_config({'url': URL, 'queries': {'cpu': ''}}, environ={})
    # A user:password@ in the URL never reaches a message.
    with pytest.raises(prometheus.PrometheusError) as exc:
        prometheus.resolve_config({'url': 'ftp://admin:hunter2@prom'}, environ={})
    assert 'hunter2' not in str(exc.value)
    # Optional queries can be switched off (info: no check of reused vmids).
    assert prometheus.resolve_config({'url': URL, 'queries': {'info': None}}, environ={})['queries']['info'] is None


def test_windows_are_step_aligned_and_split_at_prometheus_point_limit():
    assert prometheus.windows(T0 + 1, T0 + 3599, 60) == [(T0 + 60, T0 + 3540)]
    assert prometheus.windows(T0, T0 + 59, 60) == [(T0, T0)]
    assert prometheus.windows(T0 + 1, T0 + 59, 60) == []
    week = prometheus.windows(T0, T0 + 8 * 86400, 60)
    assert len(week) == 2 and week[0] == (T0, T0 + 10999 * 60) and week[1][0] == T0 + 11000 * 60
    assert week[1][1] == T0 + 8 * 86400
    assert all((end - start) // 60 + 1 <= prometheus.MAX_POINTS for start, end in week)


def test_render_and_selector():
    vms = [vm(102, 'shop-web-2'), vm(101, 'shop-web-1')]
    match = prometheus.selector(vms)
    assert match == 'id=~"qemu/(101|102)"'
    assert prometheus.selector(vms, limit=1) == 'id=~"qemu/[0-9]+"'
    q = prometheus.render(prometheus.DEFAULT_QUERIES['netin'], match, 60)
    assert q == 'rate(pve_network_receive_bytes_total{id=~"qemu/(101|102)"}[2m])'
    assert prometheus.render(prometheus.DEFAULT_QUERIES['cpu'], match, 300) == \
        'avg_over_time(pve_cpu_usage_ratio{id=~"qemu/(101|102)"}[5m])'
    assert prometheus.render('rate(x{$selector, job="pve"}[$rate_window])', match, 300) == \
        'rate(x{id=~"qemu/(101|102)", job="pve"}[10m])'


# ------------------------------------------------------------------------------------------------ client

def test_client_posts_the_range_query_with_auth_and_tls_options(tmp_path):
    ca = tmp_path / 'ca.pem'
    ca.write_text('x')
    c = client([matrix([])], bearer_token=TOKEN, ca_path=str(ca))
    assert c.query_range('up', T0, T0 + 60, 60) == []
    url, form, timeout = c.session.posts[0]
    assert url == URL + '/api/v1/query_range'
    assert form == {'query': 'up', 'start': str(T0), 'end': str(T0 + 60), 'step': '60', 'timeout': '30s'}
    assert timeout == 30 and c.session.verify == str(ca)
    assert c.session.headers['Authorization'] == 'Bearer ' + TOKEN
    basic = client([matrix([])], username='grafana', password='pw', validate_certs=False)
    assert basic.session.auth == ('grafana', 'pw') and basic.session.verify is False
    assert client([matrix([])]).session.verify is True


def test_client_retries_what_may_pass_and_names_url_and_query():
    c = client([Answer(503, text='service unavailable'), requests.exceptions.ConnectionError('reset'), matrix([])])
    assert c.query_range('up', T0, T0, 60) == [] and c.requests == 3 and c.queries == ['up']
    c = client([Answer(502, text='bad gateway')], bearer_token=TOKEN)
    with pytest.raises(prometheus.PrometheusError) as exc:
        c.query_range('pve_cpu_usage_ratio', T0, T0, 60)
    msg = str(exc.value)
    assert c.requests == 3 and 'after 3 attempts' in msg and 'HTTP 502' in msg
    assert URL + '/api/v1/query_range' in msg and "'pve_cpu_usage_ratio'" in msg and TOKEN not in msg
    assert exc.value.kind == 'server' and exc.value.query == 'pve_cpu_usage_ratio'


@pytest.mark.parametrize('answer, kind, words', [
    (Answer(400, {'status': 'error', 'errorType': 'bad_data', 'error': 'parse error at char 5'}), 'query',
     'Prometheus refused the query'),
    (Answer(422, {'status': 'error', 'errorType': 'execution', 'error': 'query processing would load too many '
                  'samples'}), 'query', 'too many samples'),
    (Answer(401, text='Unauthorized'), 'auth', 'SHADOWNET_PROMETHEUS_TOKEN'),
    (Answer(404, text='404 page not found'), 'error', '/api/v1'),
    (Answer(200, text='<html>login</html>'), 'error', 'no usable answer'),
    (requests.exceptions.SSLError('certificate verify failed'), 'tls', 'history.ca_path'),
])
def test_client_does_not_retry_what_will_not_pass(answer, kind, words):
    c = client([answer], password='pw', username='u')
    with pytest.raises(prometheus.PrometheusError) as exc:
        c.query_range('pve_cpu_usage_ratio{id=~"qemu/(101)"}', T0, T0, 60)
    assert c.requests == 1 and exc.value.kind == kind and words in str(exc.value)
    assert 'pve_cpu_usage_ratio' in str(exc.value) and URL in str(exc.value) and 'pw' not in str(exc.value).split()


def test_client_timeout_is_retried_then_says_so():
    c = client([requests.exceptions.ReadTimeout('read timed out')], timeout=2, retries=1)
    with pytest.raises(prometheus.PrometheusError, match=r'did not answer within 2s .*history.timeout') as exc:
        c.query_range('up', T0, T0, 60)
    assert c.requests == 2 and exc.value.kind == 'timeout'
    assert c.session.posts[0][1]['timeout'] == '2s' and c.session.posts[0][2] == 2


def test_a_url_with_credentials_is_never_echoed():
    c = prometheus.PrometheusClient('https://admin:hunter2@prom:9090', session=FakeSession(
        [requests.exceptions.ConnectionError('https://admin:hunter2@prom:9090 refused')]), retries=0)
    with pytest.raises(prometheus.PrometheusError) as exc:
        c.query_range('up', T0, T0, 60)
    assert 'hunter2' not in str(exc.value) and 'https://prom:9090/api/v1/query_range' in str(exc.value)


# ---------------------------------------------------------------------------------------------- loading

def exporter(data, t0=T0, minutes=5):
    """A fake Prometheus answering the default queries from ``data``: {vmid: {field: [values]}} (None: gap)."""
    metric_of = {'pve_cpu_usage_ratio': 'cpu', 'pve_cpu_usage_limit': 'maxcpu', 'pve_memory_usage_bytes': 'mem',
                 'pve_memory_size_bytes': 'maxmem', 'pve_network_receive_bytes_total': 'netin',
                 'pve_network_transmit_bytes_total': 'netout', 'pve_guest_info': 'name'}

    def answer(form):
        name = next(m for m in metric_of if m + '{' in form['query'])
        field = metric_of[name]
        start, end, step = int(form['start']), int(form['end']), int(form['step'])
        out = []
        for vmid, fields in sorted(data.items()):
            if field not in fields:
                continue
            labels = {'id': 'qemu/{0}'.format(vmid), 'job': 'pve'}
            if field == 'name':
                for label, times in fields['name']:
                    out.append(series(dict(labels, name=label), [(t, 1) for t in times]))
                continue
            values = [(t0 + 60 * i, v) for i, v in enumerate(fields[field])
                      if v is not None and start <= t0 + 60 * i <= end and (t0 + 60 * i - start) % step == 0]
            out.append(series(labels, values))
        return matrix(out)
    return answer


def test_load_history_normalises_like_rrddata_with_one_query_per_metric(tmp_path):
    vms = [vm(101, 'shop-web-1'), vm(102, 'shop-web-2', maxcpu=4, maxmem=4 * GIB)]
    data = {
        101: {'cpu': [0.5, 0.25, None, 0.5, 0.5], 'maxcpu': [2] * 5, 'mem': [GIB] * 5, 'maxmem': [2 * GIB] * 5,
              'netin': [1000.0] * 5, 'netout': [250.0] * 5},
        102: {'cpu': [0.1] * 5, 'maxcpu': [4] * 5, 'mem': [GIB] * 5, 'maxmem': [4 * GIB] * 5,
              'netin': [0.0] * 5, 'netout': [0.0] * 5},
        555: {'cpu': [0.9] * 5},  # not managed: ignored
    }
    fake = client([exporter(data)])
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        summary = prometheus.load_history(store, vms, T0, T0 + 4 * 60, {'url': URL}, now=T0 + 300, client=fake)
        assert summary['queries'] == len(prometheus.QUERY_NAMES) == summary['http_requests']
        assert summary['requests'] == 0 and summary['points'] == 10 and summary['warnings'] == []
        assert summary['vms'] == {'shop-web-1': {'fine': [T0, T0 + 240, 4], 'coarse': {}},
                                  'shop-web-2': {'fine': [T0, T0 + 240, 5], 'coarse': {}}}
        # The same values normalise_point gives for rrddata rows with the same fields.
        row = dict(time=T0, cpu=0.5, maxcpu=2, mem=GIB, maxmem=2 * GIB, netin=1000.0, netout=250.0)
        want = metrics_utils.normalise_point(row)
        for metric in metrics_utils.HISTORY_METRICS:
            assert store.series(metrics_utils.series_key('shop', 'web', 'shop-web-1', metric))[0] == (T0, want[metric])
        assert store.series('shop/web/shop-web-1/cpu_cores') == [(T0, 1.0), (T0 + 60, 0.5), (T0 + 180, 1.0),
                                                                 (T0 + 240, 1.0)]
        assert store.series('shop/web/shop-web-1/netin_bps')[0] == (T0, 8000.0)
        assert store.series('shop/web/shop-web-2/mem') == [(T0 + 60 * i, 0.25) for i in range(5)]
        assert not any(k.startswith('shop/web/555') for k in store.keys())
        # Reading again appends nothing new.
        again = prometheus.load_history(store, vms, T0, T0 + 4 * 60, {'url': URL}, now=T0 + 300,
                                        client=client([exporter(data)]))
        assert again['appended'] == 0
    # Five hundred VMs: still one query per metric.
    many = [vm(1000 + i, 'vm-{0}'.format(i)) for i in range(500)]
    fake = client([exporter(dict((1000 + i, {'cpu': [0.5] * 5}) for i in range(500)))])
    with SQLiteHistoryStore(str(tmp_path / 'm.sqlite')) as store:
        summary = prometheus.load_history(store, many, T0, T0 + 240, {'url': URL}, now=T0 + 300, client=fake)
    assert summary['queries'] == len(prometheus.QUERY_NAMES) and set(v['fine'][2] for v in summary['vms'].values()) == {5}


def test_reused_vmid_stale_series_and_duplicates(tmp_path):
    vms = [vm(101, 'shop-web-1'), vm(102, 'shop-web-2')]
    data = {
        # vmid 101 belonged to "old-vm" for the first two minutes: those values are someone else's.
        101: {'cpu': [0.9, 0.9, 0.5, 0.5, 0.5], 'name': [('old-vm', [T0, T0 + 60]),
                                                         ('shop-web-1', [T0 + 120, T0 + 180, T0 + 240])]},
        102: {'cpu': [0.2] * 5},
    }

    def twice(form):
        # Two clusters in one Prometheus both have a vm 102: which one is meant is the operator's to say. A second
        # series that agrees (the same exporter under another job) is no conflict.
        answer = exporter(data)(form)
        if 'pve_cpu_usage_ratio' in form['query']:
            answer._body['data']['result'].append(series({'id': 'qemu/102', 'job': 'pve-b'}, [(T0, 0.3)]))
            answer._body['data']['result'].append(series({'id': 'qemu/101', 'job': 'pve-c'}, [(T0 + 240, 0.5)]))
            answer._body['data']['result'].append(series({'id': 'qemu/101', 'job': 'pve-d'}, [(T0 + 180, 0.5)]))
        return answer
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        summary = prometheus.load_history(store, vms, T0, T0 + 240, {'url': URL}, now=T0 + 240,
                                          client=client([twice]))
        assert store.series('shop/web/shop-web-1/cpu') == [(T0 + 120, 0.5), (T0 + 180, 0.5), (T0 + 240, 0.5)]
        assert store.series('shop/web/shop-web-2/cpu') == []
    assert summary['vms'] == {'shop-web-1': {'fine': [T0 + 120, T0 + 240, 3], 'coarse': {}},
                              'shop-web-2': {'fine': None, 'coarse': {}}}
    assert any('cpu of VM 102 (shop-web-2): 2 series that disagree at 1 times' in w and 'job="pve-b"' in w
               for w in summary['warnings'])
    assert not any('VM 101' in w for w in summary['warnings'])
    assert any('no cpu history in Prometheus for 1 of 2 VMs: shop-web-2' in w for w in summary['warnings'])


def test_empty_answer_warns_and_a_coarse_step_fills_minutes(tmp_path):
    vms = [vm(101, 'shop-web-1')]
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        summary = prometheus.load_history(store, vms, T0, T0 + 240, {'url': URL}, now=T0 + 240,
                                          client=client([matrix([])]))
        assert summary['appended'] == 0 and store.keys() == []
        assert any('returned no series for cpu' in w and 'pve_cpu_usage_ratio' in w for w in summary['warnings'])
        assert any('for any managed VM' in w for w in summary['warnings'])
        # step 120: each value covers two minutes, kept only where no one-minute value exists.
        store.append([('shop/web/shop-web-1/cpu', T0 + 60, 0.7)])
        data = {101: {'cpu': [0.1, 0.2, 0.3, 0.4, 0.5]}}
        summary = prometheus.load_history(store, vms, T0, T0 + 240, {'url': URL, 'step': 120}, now=T0 + 240,
                                          client=client([exporter(data)]))
        assert T0 % 120 == 0  # evaluated at T0, T0 + 120, T0 + 240; each value is the two minutes ending there
        assert store.series('shop/web/shop-web-1/cpu') == [(T0 - 60, 0.1), (T0, 0.1), (T0 + 60, 0.7), (T0 + 120, 0.3),
                                                           (T0 + 180, 0.5), (T0 + 240, 0.5)]
        assert summary['vms'] == {'shop-web-1': {'fine': None, 'coarse': {120: 3}}}


def test_an_error_appends_nothing_and_counts_the_requests(tmp_path):
    vms = [vm(101, 'shop-web-1')]
    fake = client([matrix([series({'id': 'qemu/101'}, [(T0, 0.5)])]), Answer(500, text='boom')], retries=1)
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        with pytest.raises(prometheus.PrometheusError, match='HTTP 500') as exc:
            prometheus.load_history(store, vms, T0, T0 + 60, {'url': URL}, now=T0 + 60, client=fake)
        assert store.keys() == []
    assert 'pve_cpu_usage_limit' in str(exc.value) and fake.requests == 3


def test_dispatch_from_the_history_option(tmp_path, monkeypatch):
    """history_backends.load_history hands backend prometheus (with SHADOWNET_PROMETHEUS_* filled in) to this
    module: a Prometheus that is down gives a HistoryError naming the URL and the query."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history, history_backends
    monkeypatch.setenv('SHADOWNET_PROMETHEUS_URL', 'http://127.0.0.1:9')
    monkeypatch.setenv('SHADOWNET_PROMETHEUS_TOKEN', TOKEN)
    config = history_backends.history_config({'backend': 'prometheus', 'retries': 0, 'timeout': 2})
    with pytest.raises(history.HistoryError) as exc:
        history_backends.load_history(history.MemoryHistoryStore(), [vm(101, 'shop-web-1')], T0, T0 + 60, config,
                                      now=T0 + 60)
    msg = str(exc.value)
    assert 'cannot reach Prometheus (http://127.0.0.1:9/api/v1/query_range query' in msg
    assert 'pve_cpu_usage_ratio{id=~"qemu/(101)"}' in msg and TOKEN not in msg


@pytest.mark.parametrize('key, value', [('timeout', float('inf')), ('timeout', 'inf'), ('timeout', float('nan')),
                                        ('timeout', 'nan')])
def test_an_infinite_or_nan_timeout_is_refused(key, value):
    """A timeout of 'inf' passed the positive check (only NaN was caught, and 'inf' > 0)."""
    with pytest.raises(prometheus.PrometheusError, match='history.timeout must be a positive number'):
        prometheus.resolve_config({'url': URL, key: value}, environ={})

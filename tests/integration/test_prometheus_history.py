"""The prometheus history backend against real components: Prometheus (Debian's package) with its TSDB in a temporary
directory on a random loopback port, prometheus-pve-exporter (PyPI, pinned) scraping the simulator with the lab's
read-only token and the simulator's CA, and days of Bitbrains history loaded with `promtool tsdb
create-blocks-from openmetrics` (tests/lab/promlab.py). The same samples are injected into the simulator's RRD.

- the same data gives the same decisions from PVE's RRD (backend pve), from a SQLite file (backend sqlite) and from
  Prometheus (backend prometheus), for a day (what PVE keeps at one minute) and for two days (the SQLite file filled
  by an earlier metrics run, Prometheus from its TSDB);
- the exporter's live series (metric names, `id="qemu/<vmid>"`, pve_guest_info) reach the history as PVE gives them;
- Prometheus down, slow (timeout), erroring (5xx, a bad query) fails the forecast with a message naming the URL and
  the query and nothing is written; empty gives no action and says why.
"""
import http.server
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history, history_backends, prometheus
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling
from ansible_collections.shadownet.proxmox.plugins.modules import forecast
from lab import promlab
from lab.modrun import ModuleFailed, run_module
from lab.shop import shop_template

pytestmark = pytest.mark.slow

TEMPLATE = shop_template(scaling={'instances': {'min': 1, 'max': 4}, 'cooldown': {'up': '3m', 'down': '10m'},
                                  'cpu': {'high': 0.715, 'low': 0.2, 'duration': '5m'}, 'horizon': '20m'})
WEB = ('shop-web-1', 'shop-web-2')
# Bitbrains VMs (busy ones: mean CPU 40-50 %) behind the primaries and the shadow.
TRACES = {'shop-web-1': '43', 'shop-web-2': '44', 'shop-web-shadow': '49'}
DAYS = 2
# What a decision is made of; `made_at`/`time` differ by nothing here, and the line's history text says which
# backend it was.
SAME = ('action', 'target', 'amount', 'reason', 'forecast', 'utilisation', 'current')


def ramp(points, start=0.20, stop=0.70, minutes=180):
    """A clean ramp over the last three hours: cpu from ``start`` to ``stop``."""
    for i, p in enumerate(points[-minutes:]):
        p['cpu'] = start + (stop - start) * i / (minutes - 1)
    return points


@pytest.fixture
def history_lab(pvesim, pve_conn, built, plan, tmp_path):
    """The shop built, DAYS of Bitbrains samples per VM (the primaries ramping in the last hour) in the simulator's
    RRD and in a Prometheus TSDB, and the exporter scraping the simulator into that Prometheus."""
    end = int(time.time()) // 60 * 60 - 120
    samples = {}
    for name, vm in built.items():
        points = promlab.bitbrains_minutes(TRACES[name], end, DAYS)
        if name in WEB:
            ramp(points)
        for p in points:
            p['name'] = name
        samples[vm.vmid] = points
        pvesim.pve.inject_rrd(vm.vmid, [dict((k, v) for k, v in p.items() if k != 'name') for p in points])
    pvesim.pve.rrd_now = end + 30
    exporter = prom = None
    try:
        exporter = promlab.Exporter(pvesim, str(tmp_path / 'exporter'))
        promlab.backfill(str(tmp_path), samples, str(tmp_path / 'prom' / 'data'), exporter)
        prom = promlab.Prometheus(str(tmp_path / 'prom'), [exporter])
        yield dict(end=end, samples=samples, prom=prom, exporter=exporter, plan=plan, vms=built)
    finally:
        for proc in (prom, exporter):
            if proc is not None:
                proc.stop()
        assert prom is None or not prom.alive()
        assert exporter is None or not exporter.alive()


def api_of(pve_conn):
    return api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                            token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                            ca_path=pve_conn['ca_path'])


def decide(pve_conn, plan, option, now, window, check_mode=True):
    config = history_backends.history_config(option, environ={})
    api = api_of(pve_conn)
    decisions, summary = scaling.forecast_with_history(api, {'shop': plan}, config, window=window, now=now,
                                                       check_mode=check_mode)
    web = [d for d in decisions if d['service'] == 'web']
    assert len(web) == 1
    return web[0], summary, len(api.calls)


def history_points(lab, name, field):
    """The injected samples of one VM as the history's (end of minute, value) pairs."""
    vm = lab['vms'][name]
    return [(p['time'] + 30, p[field]) for p in lab['samples'][vm.vmid]]


def same(decision):
    """What must be equal between backends: the decision whole; the forecasts' ``relative_mae`` (a diagnostic: the
    recent error over the last value's) only to 0.01, and the forecast values (fractions of capacity) only to
    0.0005, that is 0.05% of capacity. Prometheus computes network rates from counters and leaves a gap where a
    rate has no two samples (2 minutes more than RRD's in two days): the autoregressive member's calibration
    errors move a little with the interpolated points, and so does the robust smoothers' clipping of the lab's
    near-zero network series (its forecast 0.0001 from one backend, 0.0002 from the other)."""
    out = dict((k, decision.get(k)) for k in SAME)
    forecast = {}
    for metric, fc in (out.get('forecast') or {}).items():
        fc = dict(fc)
        if fc.get('relative_mae') is not None:
            fc['relative_mae'] = pytest.approx(fc['relative_mae'], abs=0.01)
        for key in ('peak_upper', 'mean_at_horizon'):
            if fc.get(key) is not None:
                fc[key] = pytest.approx(fc[key], abs=0.0005)
        forecast[metric] = fc
    out['forecast'] = forecast
    return out


def test_same_data_same_decisions_from_rrd_sqlite_and_prometheus(history_lab, pvesim, pve_conn, tmp_path):
    lab = history_lab
    now = lab['end'] + 30
    plan = lab['plan']
    prom = {'backend': 'prometheus', 'url': lab['prom'].url}
    # Yesterday's metrics run of a cron host filled the SQLite file with the day before.
    path = str(tmp_path / 'cache.sqlite')
    pvesim.pve.rrd_now = now - 86400
    api = api_of(pve_conn)
    filled = scaling.run_metrics(api, ['shop'], {'shop': plan}, path)
    assert filled['appended'] > 0
    pvesim.pve.rrd_now = now

    by_pve, pve_summary, pve_requests = decide(pve_conn, plan, {'backend': 'pve'}, now, 86400)
    by_sqlite, dummy, dummy = decide(pve_conn, plan, {'backend': 'sqlite', 'path': path}, now, 86400)
    by_prom, prom_summary, prom_requests = decide(pve_conn, plan, prom, now, 86400)
    # A day: one query per metric for all VMs, and no rrddata at all.
    assert prom_summary['queries'] == len(prometheus.QUERY_NAMES) and prom_summary['warnings'] == []
    # The same minutes (the traces have gaps of up to an hour: so do both).
    for name in WEB:
        first, last, count = prom_summary['vms'][name]['fine']
        assert [first, last, count] == pve_summary['vms'][name]['fine']
        assert first == now - 30 - 1439 * 60 and last == now - 30 and 1300 < count <= 1440
    assert prom_requests < pve_requests and not any('rrddata' in p for m, p, b in pvesim.requests()[-prom_requests:])
    assert by_pve['action'] == 'scale_up', by_pve['line']
    assert same(by_prom) == same(by_pve) == same(by_sqlite), (by_pve['line'], by_sqlite['line'], by_prom['line'])
    assert by_prom['line'].endswith('(history 1d 0h at 60 s)') and by_pve['line'].endswith('(history 1d 0h at 60 s)')

    # Two days: the SQLite file (yesterday from the earlier run, today from PVE) and Prometheus hold the same minutes.
    by_sqlite2, dummy, dummy = decide(pve_conn, plan, {'backend': 'sqlite', 'path': path}, now, 2 * 86400,
                                      check_mode=False)
    by_prom2, summary2, dummy = decide(pve_conn, plan, prom, now, 2 * 86400)
    assert summary2['queries'] == len(prometheus.QUERY_NAMES)
    with history.open_store(path) as cache:
        for name in WEB:
            key = 'shop/web/{0}/cpu'.format(name)
            assert cache.series(key, since=now - 2 * 86400) == \
                [(ts, v) for ts, v in history_points(lab, name, 'cpu') if ts >= now - 2 * 86400]
    assert same(by_prom2) == same(by_sqlite2), (by_sqlite2['line'], by_prom2['line'])


def test_live_exporter_series_reach_the_history(history_lab, pvesim):
    """What the real exporter exports from the simulator, scraped by the real Prometheus, is read back as PVE
    gives it: cpu a fraction of maxcpu, memory over maxmem, per VM name (pve_guest_info)."""
    lab = history_lab
    vm = lab['vms']['shop-web-1']
    pvesim.pve.set_stats(vm.vmid, cpu=0.375, mem=768 * 1024 * 1024)
    text = lab['exporter'].scrape()
    assert 'pve_cpu_usage_ratio{id="qemu/%d"} 0.375' % vm.vmid in text
    assert 'pve_guest_info{id="qemu/%d",name="shop-web-1"' % vm.vmid in text
    assert 'pve_network_receive_bytes_total{id="qemu/%d"}' % vm.vmid in text
    lab['prom'].wait_for('pve_cpu_usage_ratio{id="qemu/%d"} == 0.375' % vm.vmid)
    time.sleep(1.5)
    now = time.time() + 60  # the minute that is filling now, up to its end
    store = history.MemoryHistoryStore()
    vms = [dict(template='shop', service='web', role='primary', name='shop-web-1', vmid=vm.vmid, maxcpu=None,
                maxmem=None)]
    summary = prometheus.load_history(store, vms, now - 300, now, {'url': lab['prom'].url}, now=now)
    assert summary['queries'] == len(prometheus.QUERY_NAMES) and summary['warnings'] == []
    newest = dict((metric, store.series('shop/web/shop-web-1/' + metric)[-1][1])
                  for metric in ('cpu', 'cpu_cores', 'mem', 'mem_mib'))
    assert newest['cpu'] == pytest.approx(0.375) and newest['mem_mib'] == pytest.approx(768)
    # maxcpu and maxmem came from pve_cpu_usage_limit and pve_memory_size_bytes (the VM dict had none): the
    # plan's 2 cores and 2048 MiB.
    assert newest['cpu_cores'] == pytest.approx(0.75) and newest['mem'] == pytest.approx(0.375)


class Unhappy(http.server.BaseHTTPRequestHandler):
    """A Prometheus that answers every query late (``delay``) or with ``status``."""
    delay = 0
    status = 503

    def do_POST(self):
        self.rfile.read(int(self.headers.get('Content-Length') or 0))
        time.sleep(self.delay)
        body = b'{"status":"error","errorType":"unavailable","error":"TSDB not ready"}'
        try:
            self.send_response(self.status)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass  # the client gave up (timeout)

    def log_message(self, *args):
        pass


@pytest.fixture
def unhappy():
    servers = []

    def start(delay=0, status=503):
        handler = type('Handler', (Unhappy,), dict(delay=delay, status=status))
        server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return 'http://127.0.0.1:{0}'.format(server.server_address[1])
    yield start
    for server, thread in servers:
        server.shutdown()
        server.server_close()
        thread.join(10)


def forecast_fails(pvesim, pve_conn, plan, history_option):
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as exc:
        run_module(forecast, dict(pve_conn, plans={'shop': plan}, history=history_option))
    assert pvesim.writes(mark) == []
    assert 'decisions' not in exc.value.result or exc.value.result['decisions'] == []
    return exc.value.result['msg']


def test_prometheus_down_slow_erroring_or_refusing_the_query_fails_clearly(history_lab, pvesim, pve_conn, unhappy):
    plan = history_lab['plan']
    down = 'http://127.0.0.1:{0}'.format(promlab.free_port())
    msg = forecast_fails(pvesim, pve_conn, plan, {'backend': 'prometheus', 'url': down, 'retries': 1})
    assert 'cannot reach Prometheus ({0}/api/v1/query_range query '.format(down) in msg
    assert 'pve_cpu_usage_ratio{id=~"qemu/(' in msg and '(after 2 attempts)' in msg

    slow = unhappy(delay=3)
    started = time.monotonic()
    msg = forecast_fails(pvesim, pve_conn, plan, {'backend': 'prometheus', 'url': slow, 'timeout': 1, 'retries': 0,
                                                  'bearer_token': 'secret-token-value'})
    assert time.monotonic() - started < 30
    assert 'Prometheus did not answer within 1.0s ({0}/api/v1/query_range'.format(slow) in msg
    assert 'history.timeout' in msg and 'secret-token-value' not in msg

    erroring = unhappy(status=503)
    msg = forecast_fails(pvesim, pve_conn, plan, {'backend': 'prometheus', 'url': erroring, 'retries': 2})
    assert 'Prometheus answered HTTP 503 ({0}/api/v1/query_range'.format(erroring) in msg
    assert 'TSDB not ready' in msg and '(after 3 attempts)' in msg

    # The real Prometheus refuses a template that does not parse: no retry, the query and the fix are named.
    real = history_lab['prom'].url
    msg = forecast_fails(pvesim, pve_conn, plan, {'backend': 'prometheus', 'url': real,
                                                  'queries': {'cpu': 'avg_over_time(pve_cpu_usage_ratio{$selector}'}})
    assert 'Prometheus refused the query ({0}/api/v1/query_range'.format(real) in msg
    assert 'bad_data' in msg and 'Fix history.queries' in msg and 'after' not in msg


def test_empty_prometheus_takes_no_action_and_says_why(pvesim, pve_conn, built, plan, tmp_path):
    """A Prometheus that scrapes nothing (a fresh server, or queries that select nothing): no history, no action."""
    prom = promlab.Prometheus(str(tmp_path / 'empty'))
    try:
        mark = pvesim.mark()
        result = run_module(forecast, dict(pve_conn, plans={'shop': plan},
                                           history={'backend': 'prometheus', 'url': prom.url}))
    finally:
        prom.stop()
    assert not prom.alive()
    assert pvesim.writes(mark) == []
    web = [d for d in result['decisions'] if d['service'] == 'web'][0]
    assert web['action'] == 'none', web['line']
    assert 'no metrics history' in web['reason']
    warned = result['history']['warnings']
    assert any('Prometheus returned no series for cpu' in w for w in warned), warned
    assert any('no cpu history in Prometheus for any managed VM' in w for w in warned), warned
    # ... and the module passed them on as Ansible warnings.
    assert 'Prometheus returned no series for cpu' in str(result.get('warnings'))
    assert result['history']['queries'] == len(prometheus.QUERY_NAMES)

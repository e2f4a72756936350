"""Prometheus, prometheus-pve-exporter and promtool for the prometheus history backend's tests, on loopback.

Installed by the project's setup: Debian's `prometheus` package (scripts/setup-system.sh; it brings promtool) and
`prometheus-pve-exporter` pinned in requirements-dev.txt (its `pve_exporter` sits beside the venv's python).

- `Exporter(pvesim, tmp)`: pve_exporter on 127.0.0.1 with a random port, pointed at the simulator with the lab's
  least-privilege read-only token (auditor@pve!readonly: VM.Audit, Sys.Audit, Datastore.Audit ... on /, the
  exporter's documented PVEAuditor needs) and the simulator's CA (verify_ssl: <CA file>, certificate checked).
- `Prometheus(tmp, scrape=[exporter])`: prometheus on 127.0.0.1 with a random port and its TSDB under `tmp`,
  scraping the exporter every second (`/pve?target=<sim>&cluster=1&node=0`).
- `backfill(tmp, samples)`: OpenMetrics text of samples in the exporter's metric names, turned into TSDB blocks with
  `promtool tsdb create-blocks-from openmetrics` in the data directory (before Prometheus starts).
- `bitbrains_minutes(...)`: days of per-minute usage from the Bitbrains traces (shared/traces, as
  benchmarks/_traces.py finds them), shifted to end at a given time.

Every process is started in its own session and stopped (SIGTERM, then SIGKILL) by `stop()`, which the fixtures
call in `finally`; nothing is left behind even when a test fails.
"""
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import requests
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
START_TIMEOUT = 60
GIB = 1024 ** 3


def tool(name):
    """The path of a tool the setup installs: the venv's bin (pve_exporter), else PATH (prometheus, promtool)."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.path.exists(beside):
        return beside
    found = shutil.which(name)
    if not found:
        raise RuntimeError('{0} is not installed: run scripts/setup-system.sh (Debian package prometheus) and '
                           'scripts/setup-venv.sh (requirements-dev.txt: prometheus-pve-exporter)'.format(name))
    return found


def free_port():
    sock = socket.socket()
    try:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
    finally:
        sock.close()


class Process(object):
    """A started process with its log file; stop() ends it and waits."""

    def __init__(self, argv, log, env=None):
        self.argv = argv
        self.log = log
        with open(log, 'ab') as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True, env=env)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=15):
        if self.proc.poll() is not None:
            return self.proc.returncode
        # Its own session: the signal reaches what it started (gunicorn's worker), and nothing else.
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            return self.proc.wait(timeout)

    def tail(self, size=3000):
        try:
            with open(self.log, 'rb') as fh:
                return fh.read()[-size:].decode('utf-8', 'replace')
        except OSError:
            return ''

    def wait_http(self, url, timeout=START_TIMEOUT, ok=(200,)):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError('{0} ended ({1}); log:\n{2}'.format(self.argv[0], self.proc.returncode, self.tail()))
            try:
                if requests.get(url, timeout=2).status_code in ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise RuntimeError('{0} did not answer {1} within {2}s; log:\n{3}'.format(self.argv[0], url, timeout,
                                                                                 self.tail()))


class Exporter(Process):
    """prometheus-pve-exporter scraping the simulator with a read-only token and the simulator's CA."""

    USER, TOKEN = 'auditor@pve', 'readonly'

    def __init__(self, pvesim, tmp):
        os.makedirs(tmp, exist_ok=True)
        self.port = free_port()
        self.target = '{0}:{1}'.format(pvesim.host, pvesim.port)
        config = os.path.join(tmp, 'pve.yml')
        secret = pvesim.pve.apitokens['{0}!{1}'.format(self.USER, self.TOKEN)]
        with open(config, 'w') as fh:
            yaml.safe_dump({'default': {'user': self.USER, 'token_name': self.TOKEN, 'token_value': secret,
                                        'verify_ssl': pvesim.cafile}}, fh)
        os.chmod(config, 0o600)
        env = dict((k, v) for k, v in os.environ.items() if not k.startswith('PVE_'))
        super().__init__([tool('pve_exporter'), '--config.file', config,
                          '--web.listen-address', '127.0.0.1:{0}'.format(self.port),
                          # The lab's backup jobs and node collectors are not what this backend reads.
                          '--no-collector.backup-info'], os.path.join(tmp, 'exporter.log'), env=env)
        self.wait_http('http://127.0.0.1:{0}/'.format(self.port))

    @property
    def address(self):
        return '127.0.0.1:{0}'.format(self.port)

    def scrape(self):
        """What Prometheus reads (text exposition)."""
        resp = requests.get('http://{0}/pve'.format(self.address),
                            params={'target': self.target, 'cluster': '1', 'node': '0'}, timeout=30)
        resp.raise_for_status()
        return resp.text


class Prometheus(Process):
    """prometheus on loopback with its TSDB in ``tmp``/data; scrapes the exporters every second."""

    JOB = 'pve'

    def __init__(self, tmp, exporters=(), retention='90d', query_log=None):
        os.makedirs(tmp, exist_ok=True)
        self.data = os.path.join(tmp, 'data')
        os.makedirs(self.data, exist_ok=True)
        self.port = free_port()
        config = os.path.join(tmp, 'prometheus.yml')
        jobs = [{'job_name': self.JOB, 'metrics_path': '/pve', 'scrape_interval': '1s', 'scrape_timeout': '1s',
                 'params': {'module': ['default'], 'cluster': ['1'], 'node': ['0'], 'target': [e.target]},
                 'static_configs': [{'targets': [e.address]}]} for e in exporters]
        settings = {'scrape_interval': '1s', 'evaluation_interval': '1m'}
        if query_log:
            settings['query_log_file'] = query_log  # one JSON line per query Prometheus ran
        with open(config, 'w') as fh:
            yaml.safe_dump({'global': settings, 'scrape_configs': jobs}, fh)
        super().__init__([tool('prometheus'), '--config.file', config, '--storage.tsdb.path', self.data,
                          '--storage.tsdb.retention.time', retention,
                          '--web.listen-address', '127.0.0.1:{0}'.format(self.port)],
                         os.path.join(tmp, 'prometheus.log'))
        self.wait_http(self.url + '/-/ready')

    @property
    def url(self):
        return 'http://127.0.0.1:{0}'.format(self.port)

    def query(self, expr):
        resp = requests.get(self.url + '/api/v1/query', params={'query': expr}, timeout=30)
        resp.raise_for_status()
        return resp.json()['data']['result']

    def wait_for(self, expr, timeout=START_TIMEOUT):
        """Wait until an instant query has a result (e.g. the first scrapes arrived)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.query(expr)
            if found:
                return found
            time.sleep(0.5)
        raise RuntimeError('no result for {0} within {1}s; log:\n{2}'.format(expr, timeout, self.tail()))


# ------------------------------------------------------------------------------------------- history

def _number(value):
    return repr(float(value))


def openmetrics(samples, labels=''):
    """OpenMetrics text of per-VM samples in the exporter's names: ``samples`` is {vmid: [dict(time, cpu, maxcpu,
    mem, maxmem, netin, netout, name)]} with netin/netout in bytes/s as PVE's rrddata gives them; the exporter's
    network metrics are counters, so they are summed here (a restart of the counter is a sample with ``reset:
    True``). ``labels`` (``job="pve",instance="..."``) are the scrape's, so that the history and the live series
    are the same series, as they are when a Prometheus has scraped the exporter for days."""
    extra = ',' + labels if labels else ''
    gauges = (('pve_cpu_usage_ratio', 'cpu'), ('pve_cpu_usage_limit', 'maxcpu'), ('pve_memory_usage_bytes', 'mem'),
              ('pve_memory_size_bytes', 'maxmem'))
    counters = (('pve_network_receive_bytes', 'netin'), ('pve_network_transmit_bytes', 'netout'))
    lines = []
    for name, field in gauges:
        lines.append('# TYPE {0} gauge'.format(name))
        for vmid, points in sorted(samples.items()):
            for p in points:
                if p.get(field) is not None:
                    lines.append('{0}{{id="qemu/{1}"{2}}} {3} {4}'.format(name, vmid, extra, _number(p[field]),
                                                                        int(p['time'])))
    for name, field in counters:
        lines.append('# TYPE {0} counter'.format(name))
        for vmid, points in sorted(samples.items()):
            total, last = 1.0e9, None
            for p in points:
                if p.get(field) is None:
                    continue
                if p.get('reset'):
                    total = 0.0
                elif last is not None:
                    total += p[field] * (p['time'] - last)
                last = p['time']
                lines.append('{0}_total{{id="qemu/{1}"{2}}} {3} {4}'.format(name, vmid, extra, _number(total),
                                                                           int(p['time'])))
    lines.append('# TYPE pve_guest_info gauge')
    for vmid, points in sorted(samples.items()):
        for p in points:
            if p.get('name'):
                lines.append('pve_guest_info{{id="qemu/{0}",name="{1}",node="pve1",tags="",template="0",type="qemu"'
                             '{2}}} 1.0 {3}'.format(vmid, p['name'], extra, int(p['time'])))
    lines.append('# EOF')
    return '\n'.join(lines) + '\n'


def backfill(tmp, samples, data_dir, exporter=None):
    """Write ``samples`` as OpenMetrics (with the labels Prometheus gives the ``exporter``'s series) and load them
    into ``data_dir`` with promtool; returns promtool's output."""
    os.makedirs(data_dir, exist_ok=True)
    source = os.path.join(tmp, 'history.om')
    labels = 'instance="{0}",job="{1}"'.format(exporter.address, Prometheus.JOB) if exporter is not None else ''
    with open(source, 'w') as fh:
        fh.write(openmetrics(samples, labels))
    return backfill_file(source, data_dir)


def backfill_file(source, data_dir):
    """``promtool tsdb create-blocks-from openmetrics <source> <data_dir>``; returns its output."""
    done = subprocess.run([tool('promtool'), 'tsdb', 'create-blocks-from', 'openmetrics', source, data_dir],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
    out = done.stdout.decode('utf-8', 'replace')
    if done.returncode:
        raise RuntimeError('promtool tsdb create-blocks-from openmetrics failed ({0}):\n{1}'.format(
            done.returncode, out[-3000:]))
    return out


def traces_dir():
    """The Bitbrains traces: $SHADOWNET_TRACES, else shared/traces beside the checkout (as the benchmarks find
    them), else /work/shared/traces."""
    for base in (os.environ.get('SHADOWNET_TRACES'), os.path.join(ROOT, '..', 'shared', 'traces'),
                 os.path.join(ROOT, '..', '..', 'shared', 'traces')):
        if base and os.path.isdir(os.path.join(base, 'bitbrains_rnd_2013-8')):
            return os.path.join(os.path.abspath(base), 'bitbrains_rnd_2013-8')
    raise RuntimeError('Bitbrains traces not found: set SHADOWNET_TRACES to the folder holding bitbrains_rnd_2013-8/')


def bitbrains_minutes(trace, end, days, offset=30, cores=2, maxmem=2 * GIB):
    """``days`` of one Bitbrains VM (its file name without .csv.gz) as one sample a minute, the last one in the
    minute ending at ``end`` (``offset`` seconds before the end of each minute, where a scrape would fall).

    cpu is the trace's CPU usage [%] / 100 (a fraction of the VM's vCPUs, as PVE gives it), memory its memory usage
    scaled to ``maxmem`` by the trace's provisioned memory, netin/netout its network KB/s in bytes/s. The trace's
    5-minute values are held for each of their five minutes; a gap in the trace is a gap here.
    """
    with gzip.open(os.path.join(traces_dir(), trace + '.csv.gz'), 'rt') as fh:
        next(fh)
        rows = [line.split(';') for line in fh if line.strip()]
    t0 = int(float(rows[0][0]))
    by_slot = {}
    for r in rows:
        by_slot[int(round((int(float(r[0])) - t0) / 300.0))] = r
    minutes = days * 1440
    end = int(end) // 60 * 60
    out = []
    for i in range(minutes):
        slot = i // 5
        row = by_slot.get(slot)
        if row is None:
            continue
        provisioned = float(row[5]) or 1.0
        out.append({'time': end - 60 * (minutes - 1 - i) - offset, 'cpu': float(row[4]) / 100.0, 'maxcpu': cores,
                    'mem': min(1.0, float(row[6]) / provisioned) * maxmem, 'maxmem': maxmem,
                    'netin': float(row[9]) * 1024, 'netout': float(row[10]) * 1024})
    return out

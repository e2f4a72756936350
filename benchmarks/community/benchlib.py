# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers of benchmarks/build_vs_community.py and benchmarks/reconcile_scale.py (not part of the collection).

- community.proxmox, taken from the `ansible` package on PyPI (pip download, no install) into a git-ignored cache
  (.build/bench-cache/collections), never into the project venv;
- a fresh simulator (tests/lab/pvesim.py) per measured run, served in a thread of the benchmark process;
- ansible-playbook runs with the PROXMOX_* environment, timed, with per-task times and failures written by the
  callback in benchmarks/community/callback_plugins.
"""
import collections
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
OWN_COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
CACHE = os.path.join(ROOT, '.build', 'bench-cache')
COMMUNITY_COLLECTIONS = os.path.join(CACHE, 'collections')
COMMUNITY_MANIFEST = os.path.join(COMMUNITY_COLLECTIONS, 'ansible_collections', 'community', 'proxmox',
                                  'MANIFEST.json')
CALLBACKS = os.path.join(HERE, 'callback_plugins')


def setup_paths():
    """The collection importable as ansible_collections.shadownet.proxmox, and tests/lab importable as lab."""
    link = os.path.join(OWN_COLLECTIONS, 'ansible_collections', 'shadownet', 'proxmox')
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)
    for path in (OWN_COLLECTIONS, os.path.join(ROOT, 'tests')):
        if path not in sys.path:
            sys.path.insert(0, path)
    os.environ.setdefault('OMP_NUM_THREADS', '1')
    os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')


def community_version():
    with open(COMMUNITY_MANIFEST) as fh:
        info = json.load(fh)['collection_info']
    return info['version'], info.get('dependencies') or {}


def ensure_community(log=print):
    """community.proxmox in the benchmark cache: extracted from the `ansible` wheel (pip download, no install)."""
    if os.path.exists(COMMUNITY_MANIFEST):
        return community_version()
    dl = os.path.join(CACHE, 'dl')
    os.makedirs(dl, exist_ok=True)
    wheels = sorted(f for f in os.listdir(dl) if f.startswith('ansible-') and f.endswith('.whl'))
    if not wheels:
        cmd = [os.path.join(VENV_BIN, 'pip'), 'download', 'ansible', '--no-deps', '-d', dl]
        log('fetching community.proxmox: ' + ' '.join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wheels = sorted(f for f in os.listdir(dl) if f.startswith('ansible-') and f.endswith('.whl'))
    wheel = os.path.join(dl, wheels[-1])
    prefix = 'ansible_collections/community/proxmox/'
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if n.startswith(prefix)]
        zf.extractall(COMMUNITY_COLLECTIONS, members=members)
    version, deps = community_version()
    log('community.proxmox %s extracted from %s into %s' % (version, os.path.basename(wheel),
                                                            os.path.relpath(COMMUNITY_COLLECTIONS, ROOT)))
    if deps:
        log('  note: it declares dependencies %s (not extracted)' % deps)
    return version, deps


# How long PVE takes, for benchmarks that want the cluster's own time in the figures. `none`: every task ends
# before its request returns and requests cost only the simulator's own time (what the controller costs).
# `typical`: assumed figures for a small cluster, not measured here (no PVE host was available): a linked clone
# 1 s, of which 0.3 s is the storage plugin's clone_image (rbd clone, lvcreate -s) under the storage lock
# (`clone_lock_secs`: cluster-wide for shared storage, per node for local storage, see tests/lab/pvesim_locks.py)
# and 0.7 s the rest of the qmclone task; a VM start launches QEMU (2 s), an SDN apply reloads the network on
# every node (3 s), a node network apply 2 s, a stop or destroy 1 s, and every API request pays 15 ms in
# pveproxy/pvedaemon. Config writes and HA changes are instant.
PVE_TIMING = {
    'none': None,
    'typical': {'latency': 0.015, 'clone_lock_secs': 0.3,
                'task_secs': {'qmclone': 0.7, 'qmstart': 2.0, 'reloadnetworkall': 3.0, 'srvreload': 2.0,
                              'qmstop': 1.0, 'qmshutdown': 1.0, 'qmdestroy': 1.0, 'qmigrate': 5.0}},
}


def timing_text(name):
    model = PVE_TIMING[name]
    if not model:
        return 'none (time scale 0: every PVE task ends before its request returns; no added latency)'
    return ('typical (assumed, see benchlib.PVE_TIMING): %s; each disk clone holds its storage lock %.1f s more; '
            '%.0f ms per API request' % (', '.join('%s %.1f s' % kv for kv in sorted(model['task_secs'].items())),
                                         model['clone_lock_secs'], 1000 * model['latency']))


def start_sim(name, timing='none'):
    from lab.pvesim import DEFAULT_CLUSTER, start_in_thread
    certs = tempfile.mkdtemp(prefix='bench-%s-' % name)
    model = PVE_TIMING[timing]
    sim = start_in_thread(cluster_file=DEFAULT_CLUSTER, host='127.0.0.1', port=0, time_scale=1 if model else 0,
                          certs_dir=certs)
    if model:
        sim.pve.task_secs = dict(model['task_secs'])
        sim.pve.clone_lock_secs = model['clone_lock_secs']
        sim.pve.slow_network(model['latency'])
    # Assumption, the same for both builds: a cluster whose HA manager has been master before, so the CRM's node
    # list (manager_status node_status, which pve-ha-manager Rules.pm check_feasibility counts negative
    # resource-affinity rules against) already holds every node and PVE accepts the negative rules at once. On a
    # fresh cluster the CRM starts only after the first HA resource and both builds would wait for it (ha_rule
    # waits, bounded; the community loop would fail and need a retry), which this benchmark does not measure.
    sim.pve.ha_node_status = dict((node, 'online') for node in sorted(sim.pve.nodes))
    return sim


def playbook_env(sim, collections_path, times_file):
    user, _, token = sim.token_id.partition('!')
    env = dict(os.environ)
    env.update(PROXMOX_HOST=sim.host, PROXMOX_PORT=str(sim.port), PROXMOX_USER=user, PROXMOX_TOKEN_ID=token,
               PROXMOX_TOKEN_SECRET=sim.token_secret, PROXMOX_CA_PATH=sim.cafile,
               ANSIBLE_COLLECTIONS_PATH=collections_path, ANSIBLE_NOCOLOR='1', ANSIBLE_RETRY_FILES_ENABLED='0',
               ANSIBLE_STDOUT_CALLBACK='default', ANSIBLE_CALLBACK_PLUGINS=CALLBACKS,
               ANSIBLE_CALLBACKS_ENABLED='bench_task_times', BENCH_TASK_TIMES=times_file,
               OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1')
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    return env


class Run(object):
    """One timed ansible-playbook run against a simulator."""

    def __init__(self, label, sim, cmd, collections_path, timeout=3600):
        self.label = label
        self.cmd = cmd
        fd, self.times_file = tempfile.mkstemp(prefix='bench-times-', suffix='.jsonl')
        os.close(fd)
        env = playbook_env(sim, collections_path, self.times_file)
        mark = sim.mark()
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        self.seconds = time.perf_counter() - t0
        self.requests = sim.pve.request_count - mark
        self.request_log = sim.requests(mark)
        self.rc = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.tasks, self.failures = [], []
        with open(self.times_file) as fh:
            for line in fh:
                row = json.loads(line)
                (self.failures if 'failed' in row else self.tasks).append(row)
        os.unlink(self.times_file)
        found = re.search(r'localhost\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)',
                          proc.stdout)
        self.recap = dict(ok=int(found.group(1)), changed=int(found.group(2)), failed=int(found.group(4))) \
            if found else None

    @property
    def ok(self):
        return self.rc == 0 and self.recap is not None and self.recap['failed'] == 0

    def writes(self):
        return [r for r in self.request_log if r[0] not in ('GET', 'HEAD')]

    def breakdown(self):
        """Requests by method and path shape (ids and UPIDs folded)."""
        shapes = collections.Counter()
        for method, path, _body in self.request_log:
            path = path.split('?')[0].replace('/api2/json', '')
            path = re.sub(r'/tasks/UPID:[^/]+', '/tasks/{upid}', path)
            path = re.sub(r'/qemu/\d+', '/qemu/{vmid}', path)
            path = re.sub(r'/nodes/pve\d+', '/nodes/{node}', path)
            path = re.sub(r'/(vnets|zones|rules|resources)/[^/]+', r'/\1/{id}', path)
            shapes[(method, path)] += 1
        return shapes

    def fail_text(self):
        lines = ['%s failed (rc %s)' % (self.label, self.rc)]
        for row in self.failures[:5]:
            lines.append('  task %r item %s: %s' % (row['failed'], row.get('item'), row['msg']))
        if not self.failures:
            lines.append(self.stdout[-3000:] + self.stderr[-2000:])
        return '\n'.join(lines)


def command_line(cmd):
    return ' '.join(shlex.quote(c) for c in cmd)


def print_table(rows, headers):
    widths = [max(len(str(r[i])) for r in [headers] + rows) for i in range(len(headers))]
    fmt = ' | '.join('{:%s%d}' % ('<' if i == 0 else '>', w) for i, w in enumerate(widths))
    print(fmt.format(*headers))
    print('-+-'.join('-' * w for w in widths))
    for row in rows:
        print(fmt.format(*[str(c) for c in row]))


def top_tasks(run, n=8):
    rows = sorted((t for t in run.tasks if not t['task'].startswith('(')), key=lambda t: -t['seconds'])[:n]
    return ['%6.2f s  %s%s' % (t['seconds'], t['task'], (' (%d items)' % t['items']) if t['items'] else '')
            for t in rows]

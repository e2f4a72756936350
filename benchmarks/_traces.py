# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers for the benchmarks: find and load the traces, import the collection.

``bitbrains_rnd_2013-8`` and ``datacenter_aggregates`` are read. ``holdout/`` is reserved
for acceptance and is never opened here.
"""
import gzip
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEP = 300  # the Bitbrains traces are 5-minute averages

# one BLAS/OpenMP thread per fit, set before numpy is imported anywhere
for _var in ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
    os.environ.setdefault(_var, '1')


def import_collection():
    """Make ``ansible_collections.shadownet.proxmox`` importable from this checkout."""
    coll = os.path.join(ROOT, '.build', 'collections')
    link = os.path.join(coll, 'ansible_collections', 'shadownet', 'proxmox')
    if not os.path.exists(link):
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(ROOT, link)
    if coll not in sys.path:
        sys.path.insert(0, coll)


def traces_dir():
    base = os.environ.get('SHADOWNET_TRACES') or os.path.join(ROOT, '..', 'shared', 'traces')
    path = os.path.join(os.path.abspath(base), 'bitbrains_rnd_2013-8')
    if not os.path.isdir(path):
        sys.exit('traces not found at %s: set SHADOWNET_TRACES to the folder holding bitbrains_rnd_2013-8/' % path)
    return path


COLUMNS = {
    'cpu': 3,       # CPU usage [MHZ]
    'memory': 6,    # Memory usage [KB]
    'net': 9,       # Network received throughput [KB/s]
}


def vm_names(limit=None):
    names = sorted((f[:-len('.csv.gz')] for f in os.listdir(traces_dir()) if f.endswith('.csv.gz')), key=int)
    return names[:limit] if limit else names


def load_vm(name, column=COLUMNS['cpu']):
    """One VM's column on a regular 5-minute grid; gaps are None. Returns (values, cores)."""
    with gzip.open(os.path.join(traces_dir(), name + '.csv.gz'), 'rt') as fh:
        next(fh)
        rows = [line.split(';') for line in fh if line.strip()]
    t0 = int(float(rows[0][0]))
    points = {}
    cores = int(float(rows[0][1]))
    for r in rows:
        idx = int(round((int(float(r[0])) - t0) / float(STEP)))
        points[idx] = float(r[column])
    values = [points.get(i) for i in range(max(points) + 1)]
    return values, cores


AGGREGATES = 'datacenter_aggregates'


def aggregate_series(limit=None):
    """The datacenter aggregates (300 s steps) as ``[(name, values)]``, one per numeric column.

    Every column of every file is a series (cpu, memory, network, disk, ...: whatever the
    file holds), except the timestamp; the Alibaba file has no timestamp (row i = i x 300 s).
    """
    base = os.path.join(os.path.dirname(traces_dir()), AGGREGATES)
    if not os.path.isdir(base):
        sys.exit('datacenter aggregates not found at %s' % base)
    out = []
    for fname in sorted(f for f in os.listdir(base) if f.endswith('.csv')):
        with open(os.path.join(base, fname)) as fh:
            header = fh.readline().strip().split(',')
            rows = [line.strip().split(',') for line in fh if line.strip()]
        stem = fname.split('_')[0]
        for col, cname in enumerate(header):
            if cname == 'timestamp':
                continue
            values = []
            for r in rows:
                try:
                    v = float(r[col])
                except (ValueError, IndexError):
                    v = None
                values.append(v if v is not None and math.isfinite(v) else None)
            out.append(('%s:%s' % (stem, cname), values))
    return out[:limit] if limit else out


def percentile(xs, q):
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return float('nan')
    k = (len(xs) - 1) * q
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

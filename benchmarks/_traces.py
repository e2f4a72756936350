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
    """The datacenter aggregates (300 s steps) as ``[(name, values)]``, one per numeric column, named
    ``<file's first word>:<column>`` (``alibaba2018:cpu_util_percent``).

    Every column of every file is a series (cpu, memory, network, disk, ...: whatever the
    file holds), except the timestamp; the Alibaba file has no timestamp (row i = i x 300 s).
    """
    base = os.path.join(os.path.dirname(traces_dir()), AGGREGATES)
    if not os.path.isdir(base):
        sys.exit('datacenter aggregates not found at %s' % base)
    out = [(name.split('_')[0] + name[name.index(':'):], values) for name, values in csv_series(base)]
    return out[:limit] if limit else out


TIME_COLUMNS = ('timestamp', 'time', 'ts', 'epoch')


def csv_path(dataset):
    """The PATH of a ``csv:PATH`` data set name (your own traces), None for any other name."""
    return dataset[len('csv:'):] if dataset.startswith('csv:') else None


def csv_files(path):
    """The trace files :func:`csv_series` reads: ``path`` itself, or the ``.csv`` / ``.csv.gz`` files in that
    folder, in name order."""
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(('.csv', '.csv.gz')))


def csv_series(path, limit=None):
    """Your own traces: every numeric column of every ``.csv`` / ``.csv.gz`` file in ``path`` (a folder, or one
    file) as ``[(name, values)]`` on the 5-minute grid, named ``<file name without .csv>:<column>``; files and
    columns in name order, gaps ``None``.

    The first line is the header. Separators: comma, semicolon or tab. A column named timestamp, time, ts or
    epoch (UNIX seconds, or milliseconds when above 1e11) places each row on the grid, relative to the first
    row (rows inside one step: their mean); without one, row i is i x 300 s. Cells that are not finite numbers
    are gaps.
    """
    files = csv_files(path)
    if not files:
        sys.exit('no .csv or .csv.gz files in %s' % path)
    out = []
    for fname in files:
        opener = gzip.open if fname.endswith('.gz') else open
        with opener(fname, 'rt') as fh:
            lines = [line.strip() for line in fh if line.strip()]
        sep = max((',', ';', '\t'), key=lines[0].count)
        header = [h.strip().strip('"') for h in lines[0].split(sep)]
        rows = [[c.strip() for c in line.split(sep)] for line in lines[1:]]
        time_col = next((i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS), None)
        slots = list(range(len(rows)))
        if time_col is not None:
            stamps = [_number(r[time_col]) if time_col < len(r) else None for r in rows]
            known = [t for t in stamps if t is not None]
            scale = 1000.0 if known and max(known) > 1e11 else 1.0
            t0 = min(known) if known else 0.0
            slots = [None if t is None else int(round((t - t0) / scale / STEP)) for t in stamps]
        stem = os.path.basename(fname)
        stem = stem[:-len('.csv.gz')] if stem.endswith('.csv.gz') else stem[:-len('.csv')]
        for col, cname in enumerate(header):
            if col == time_col:
                continue
            sums = {}
            for slot, r in zip(slots, rows):
                v = _number(r[col]) if col < len(r) else None
                if slot is not None and v is not None:
                    acc = sums.setdefault(slot, [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
            if sums:
                values = [sums[i][0] / sums[i][1] if i in sums else None for i in range(max(sums) + 1)]
                out.append(('%s:%s' % (stem, cname), values))
    return out[:limit] if limit else out


def _number(cell):
    try:
        v = float(cell)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def percentile(xs, q):
    xs = sorted(x for x in xs if x is not None and not math.isnan(x))
    if not xs:
        return float('nan')
    k = (len(xs) - 1) * q
    lo, hi = int(math.floor(k)), int(math.ceil(k))
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

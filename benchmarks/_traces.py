# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared helpers for the benchmarks: find and load the traces, import the collection.

``bitbrains_rnd_2013-8`` and ``datacenter_aggregates`` are read. ``holdout/`` is reserved
for acceptance and is never opened here.
"""
import datetime
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
    'net_tx': 10,   # Network transmitted throughput [KB/s]
    'disk_read': 7,     # Disk read throughput [KB/s]
    'disk_write': 8,    # Disk write throughput [KB/s]
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


TIME_COLUMNS = ('timestamp', 'time', 'ts', 'epoch', 'date', 'datetime')
# What R's write.csv, pandas' to_csv and their readers call the column of row names (an index, or the time).
ROW_LABELS = ('', 'unnamed: 0', 'index', 'rownames', 'row.names', 'row_names')
MIN_INDEX_ROWS = 100        # a column this long that grows by the same step on every row is an index, not a load


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

    The first line is the header. Separators: comma, semicolon or tab; cells may be quoted. The time of each row
    comes from a column named timestamp, time, ts, epoch, date or datetime (UNIX seconds, milliseconds when above
    1e11, or ISO 8601 date-times, UTC unless they say otherwise), else from a first column of row names (header
    empty, ``Unnamed: 0``, ``index``, ``rownames``, as R's ``write.csv`` and pandas' ``to_csv`` write them) when
    those are times 10 s or more apart; otherwise row i is i x 300 s. With several time columns (``date`` and
    ``time`` apart) the first whose rows are apart in time is used. Rows are placed on the grid relative to the
    first one (rows inside one step: their mean). Cells that are not finite numbers are gaps. Not series: the
    time column, row names, and any column of at least :data:`MIN_INDEX_ROWS` rows that grows by the same step on
    every row (a row number or a time without a recognised name); each skipped column is named on stderr.
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
        header = [_unquote(h) for h in lines[0].split(sep)]
        rows = [[_unquote(c) for c in line.split(sep)] for line in lines[1:]]
        stem = os.path.basename(fname)
        stem = stem[:-len('.csv.gz')] if stem.endswith('.csv.gz') else stem[:-len('.csv')]
        slots, skip = _row_slots(header, rows)
        for col, cname in enumerate(header):
            if col in skip:
                continue
            cells = [_number(r[col]) if col < len(r) else None for r in rows]
            if _is_index(cells):
                sys.stderr.write('%s: column %r skipped: it grows by the same step on every row (a row number or a '
                                 'time), not a load\n' % (fname, cname))
                continue
            sums = {}
            for slot, v in zip(slots, cells):
                if slot is not None and v is not None:
                    acc = sums.setdefault(slot, [0.0, 0])
                    acc[0] += v
                    acc[1] += 1
            if sums:
                values = [sums[i][0] / sums[i][1] if i in sums else None for i in range(max(sums) + 1)]
                out.append(('%s:%s' % (stem, cname), values))
    return out[:limit] if limit else out


def _row_slots(header, rows):
    """(the 5-minute slot of each row, the columns that are not series) for :func:`csv_series`: the first named
    time column whose rows are mostly apart in time, else row names that are times at least 10 s apart, else the
    row's number."""
    named = [i for i, h in enumerate(header) if h.lower() in TIME_COLUMNS]
    labels = [0] if header and header[0].lower() in ROW_LABELS and 0 not in named else []
    for col in named + labels:
        stamps = _times([r[col] if col < len(r) else '' for r in rows])
        if _median_step(stamps) >= (10 if col in labels else 1e-9):
            t0 = min(t for t in stamps if t is not None)
            return [None if t is None else int(round((t - t0) / STEP)) for t in stamps], set(named + labels)
    return list(range(len(rows))), set(named + labels)


def _times(cells):
    """Seconds for each cell of a time column: numbers (milliseconds when the largest is above 1e11) or ISO 8601
    date-times (UTC unless they carry an offset); None where a cell is neither."""
    nums = [_number(c) for c in cells]
    if any(v is not None for v in nums):
        scale = 1000.0 if max(v for v in nums if v is not None) > 1e11 else 1.0
        return [None if v is None else v / scale for v in nums]
    out = []
    for c in cells:
        try:
            t = datetime.datetime.fromisoformat(c.replace('Z', '+00:00'))
        except ValueError:
            out.append(None)
            continue
        out.append((t if t.tzinfo else t.replace(tzinfo=datetime.timezone.utc)).timestamp())
    return out


def _median_step(stamps):
    """The median step between consecutive known times (0 when there are fewer than two)."""
    known = [t for t in stamps if t is not None]
    steps = sorted(b - a for a, b in zip(known, known[1:]))
    return steps[len(steps) // 2] if steps else 0


def _is_index(cells):
    """True when every known cell sits on one straight line over the row numbers (a row number or a time),
    also with empty cells between them."""
    known = [(i, v) for i, v in enumerate(cells) if v is not None]
    if len(known) < MIN_INDEX_ROWS:
        return False
    (i0, v0), (i1, v1) = known[0], known[1]
    step = (v1 - v0) / (i1 - i0)
    tol = 1e-9 * max(1.0, abs(step))
    return step != 0 and all(abs(v - v0 - step * (i - i0)) <= tol * (i - i0) + 1e-12 * abs(v) for i, v in known)


def _unquote(cell):
    cell = cell.strip()
    if len(cell) >= 2 and cell[0] == cell[-1] and cell[0] in '"\'':
        cell = cell[1:-1].strip()
    return cell


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


PVE_COARSE = 6              # PVE's `month` rows are 30-minute means: 6 five-minute steps


def pve_week(history, fine=288, coarse=PVE_COARSE):
    """A history as a stateless controller gets it from PVE (the ``pve`` backend, a 7-day window): the last ``fine``
    steps (PVE 9's `day`, one day) as they are, the steps before them as one mean per ``coarse`` steps (`month`'s
    30-minute rows) at the block's middle step, gaps between; rrdtool's xff 0.5: a block with more than half of its
    points unknown is unknown."""
    old, out = history[:-fine], []
    for start in range(0, len(old), coarse):
        block = [v for v in old[start:start + coarse] if v is not None]
        part = [None] * len(old[start:start + coarse])
        part[min(len(part) - 1, coarse // 2 - 1)] = sum(block) / len(block) if len(block) * 2 >= coarse else None
        out.extend(part)
    return out + list(history[-fine:])

"""rrddata as PVE answers it, for ShadowPve: PVE 9's shapes by default, PVE 8's for a cluster not yet migrated.

Follows pve-cluster's src/PVE/RRD.pm create_rrd_data (the per-timeframe [resolution, count] tables and the fetch
window), rrdtool's fetch as RRDs::fetch hands it to that sub, and the VM RRD layout pmxcfs creates
(src/pmxcfs/status.c: one primary data point a minute, RRAs consolidated with xff 0.5). A test injects raw samples
(`inject_rrd`); `rrd_fetch` consolidates them exactly as the RRD would and cuts the window PVE cuts.
"""

__all__ = ['RRD_SETUP', 'RRD_FORMATS', 'PDP_STEP', 'rrd_fetch']

# pve-cluster src/PVE/RRD.pm create_rrd_data: [resolution seconds, number of rows] per timeframe.
# `pve9` is `$setup` (pve-vm-9.0/<vmid> files, PVE 9), `pve8` the `$setup` of PVE 8 (pve2-vm/<vmid>, 70 rows each).
RRD_SETUP = {
    'pve9': {'hour': (60, 60), 'day': (60, 1440), 'week': (1800, 336), 'month': (1800, 1440),
             'year': (21600, 1440)},
    'pve8': {'hour': (60, 70), 'day': (1800, 70), 'week': (10800, 70), 'month': (43200, 70),
             'year': (604800, 70)},
}
RRD_FORMATS = tuple(sorted(RRD_SETUP))
# pve-cluster src/PVE/RRD.pm create_rrd_data `$setup_pve2`: how PVE 9 reads a VM's old pve2-vm file (kept as
# `<vmid>.old` after the migration) for the part of a window before the upgrade: PVE 8's table, but `hour` 60 rows.
RRD_SETUP_PVE2_ON_PVE9 = dict(RRD_SETUP['pve8'], hour=(60, 60))
# pve-cluster src/pmxcfs/status.c: VM RRDs have a 60 s step; every RRA has xff 0.5 (a consolidated row is unknown
# when more than half of its primary data points are).
PDP_STEP = 60
XFF = 0.5


def _ceil(value, step):
    return -(-int(value) // step) * step


def _pdps(points):
    """Raw samples -> primary data points: {end of minute: {field: mean of the samples in (end - 60, end]}}."""
    sums = {}
    for point in points:
        label = _ceil(point['time'], PDP_STEP)
        slot = sums.setdefault(label, {})
        for key, value in point.items():
            if key != 'time' and isinstance(value, (int, float)) and not isinstance(value, bool):
                slot.setdefault(key, []).append(float(value))
    return dict((label, dict((k, sum(v) / len(v)) for k, v in slot.items())) for label, slot in sums.items())


def _rows(pdps, reso, first, last, cf):
    """Rows labelled first, first + reso .. last (each the END of the interval it consolidates)."""
    per_row = reso // PDP_STEP
    out = []
    for end in range(first, last + reso, reso):
        row = {'time': end}
        slots = [pdps[t] for t in range(end - reso + PDP_STEP, end + PDP_STEP, PDP_STEP) if t in pdps]
        for key in sorted({k for slot in slots for k in slot}):
            values = [slot[key] for slot in slots if key in slot]
            if per_row - len(values) > XFF * per_row:
                continue
            row[key] = max(values) if cf == 'MAX' else sum(values) / len(values)
        out.append(row)
    return out


def rrd_fetch(points, timeframe, cf='AVERAGE', now=0, fmt='pve9', upgraded_at=None):
    """The rrddata answer for raw samples `points` (dicts with `time` and fields) at time `now`.

    pve-cluster RRD.pm create_rrd_data: ctime = reso * int(now / reso), fetch `-s ctime - reso * count
    -e ctime - 1 -r reso`. rrdtool rounds the end up to ctime and RRDs::fetch labels each row with the END of the
    interval it consolidates, so the rows are ctime - reso * (count - 1) .. ctime, row T holding (T - reso, T].
    A field unknown in a row is left out (a gap is a row with only `time`). AVERAGE takes the mean of the row's
    primary data points, MAX the largest. PVE 9 (commit "fix #6615") drops the newest row when it has only `time`
    (the bucket right after a boundary, before the data was flushed); PVE 8 returns it.
    """
    reso, count = RRD_SETUP[fmt][timeframe]
    ctime = reso * (int(now) // reso)
    req_start = ctime - reso * count
    out = []
    if fmt == 'pve9' and upgraded_at is not None and req_start < int(upgraded_at):
        # RRD.pm create_rrd_data (commit "transparently fetch data from old rrd file on demand"): the old pve2 file
        # (its last update is the upgrade, RRDs::last) answers `-s req_start_old -e last_old -r reso_old` at PVE 8's
        # resolution, the new file `-s last_old -e ctime - 1` after it; both answers are joined as they come.
        last_old = int(upgraded_at)
        reso_old, count_old = RRD_SETUP_PVE2_ON_PVE9[timeframe]
        start_old = reso_old * (int(now) // reso_old) - reso_old * count_old
        old = _pdps([p for p in points if p['time'] <= last_old])
        out += _rows(old, reso_old, start_old + reso_old, _ceil(last_old, reso_old), cf)
        new = _pdps([p for p in points if p['time'] > last_old])
        out += _rows(new, reso, last_old // reso * reso + reso, ctime, cf)
    else:
        out += _rows(_pdps(points), reso, ctime - reso * (count - 1), ctime, cf)
    # RRD.pm (PVE 9, "fix #6615"): the newest row is dropped when it has only `time`; PVE 8 returns it.
    if fmt == 'pve9' and out and len(out[-1]) == 1:
        out.pop()
    return out

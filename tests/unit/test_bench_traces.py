# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/_traces.py's reader of your own traces (``csv:PATH``): the files R's ``write.csv`` and pandas'
``to_csv`` write, with the time or a row number in their first column, give the same series as a plain
``timestamp`` column, and the row names never become a series of their own."""
import gzip

import pytest

from lab import benchmarks


@pytest.fixture(scope='module')
def traces():
    return benchmarks.load('_traces')


T0 = 1_480_000_200                      # UNIX seconds, a multiple of 300
ROWS = 400                              # more than MIN_INDEX_ROWS
VM_A = [round(10 + (i * 7919) % 13 + 0.25 * (i % 5), 3) for i in range(ROWS)]
VM_B = [round(50 - (i * 104729) % 17 * 0.5, 3) for i in range(ROWS)]


def write(path, header, rows, sep=','):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'wt') as fh:
        fh.write(sep.join(header) + '\n')
        for r in rows:
            fh.write(sep.join(str(c) for c in r) + '\n')
    return path


def series(traces, path):
    return dict(traces.csv_series(path))


def test_timestamp_column_is_the_reference(traces, tmp_path):
    got = series(traces, write(str(tmp_path / 'plain.csv'), ['timestamp', 'a', 'b'],
                               [(T0 + 300 * i, a, b) for i, (a, b) in enumerate(zip(VM_A, VM_B))]))
    assert got == {'plain:a': VM_A, 'plain:b': VM_B}


@pytest.mark.parametrize('label, quote', [('""', '"'), ('', ''), ('Unnamed: 0', '')],
                         ids=['R write.csv', 'pandas to_csv', 'pandas read back'])
def test_row_names_that_are_times_place_the_rows(traces, tmp_path, label, quote):
    # every fourth row missing: the times, not the row order, say where each row goes
    kept = [i for i in range(ROWS) if i % 4 != 3]
    rows = [('%s%d%s' % (quote, T0 + 300 * i, quote), VM_A[i], VM_B[i]) for i in kept]
    got = series(traces, write(str(tmp_path / 'wide.csv'), [label, '"a"' if quote else 'a', 'b'], rows))
    assert sorted(got) == ['wide:a', 'wide:b']
    assert got['wide:a'] == [v if i % 4 != 3 else None for i, v in enumerate(VM_A)][:kept[-1] + 1]


def test_row_numbers_are_neither_a_series_nor_times(traces, tmp_path):
    rows = [(i + 1, a, b) for i, (a, b) in enumerate(zip(VM_A, VM_B))]
    got = series(traces, write(str(tmp_path / 'numbered.csv'), ['', 'a', 'b'], rows))
    assert got == {'numbered:a': VM_A, 'numbered:b': VM_B}


def test_a_column_that_grows_by_one_step_is_skipped_and_named(traces, tmp_path, capsys):
    # an unnamed time in the middle of the file, in milliseconds: not a load
    rows = [(a, (T0 + 300 * i) * 1000, b) for i, (a, b) in enumerate(zip(VM_A, VM_B))]
    got = series(traces, write(str(tmp_path / 'mixed.csv.gz'), ['a', 'when', 'b'], rows, sep=';'))
    assert got == {'mixed:a': VM_A, 'mixed:b': VM_B}
    assert "column 'when' skipped" in capsys.readouterr().err
    # the same with a few empty cells in that column (a missing time is still a time column)
    rows = [(a, '' if i in (3, 200) else (T0 + 300 * i) * 1000, b) for i, (a, b) in enumerate(zip(VM_A, VM_B))]
    got = series(traces, write(str(tmp_path / 'holes.csv'), ['a', 'when', 'b'], rows))
    assert got == {'holes:a': VM_A, 'holes:b': VM_B}
    assert "column 'when' skipped" in capsys.readouterr().err


def test_iso_times_and_a_date_column_apart(traces, tmp_path):
    import datetime
    stamp = [datetime.datetime.fromtimestamp(T0 + 300 * i, datetime.timezone.utc) for i in range(ROWS)]
    rows = [(s.strftime('%Y-%m-%d'), s.strftime('%Y-%m-%dT%H:%M:%SZ'), a) for s, a in zip(stamp, VM_A)]
    got = series(traces, write(str(tmp_path / 'iso.csv'), ['date', 'datetime', 'a'], rows))
    # the date alone repeats on every row of a day; the date-time places them
    assert got == {'iso:a': VM_A}
    # two rows a minute apart in each 5-minute step: their mean
    minutes = [((s + datetime.timedelta(minutes=m)).strftime('%Y-%m-%d %H:%M:%S'), a + 2 * m - 1)
               for s, a in zip(stamp[:10], VM_A) for m in (0, 1)]
    got = series(traces, write(str(tmp_path / 'minutes.csv'), ['time', 'a'], minutes))
    assert got == {'minutes:a': pytest.approx(VM_A[:10])}


def test_pve_week_is_the_last_day_after_half_hour_means(traces):
    """What the benchmarks give a forecast as a stateless controller's week from PVE."""
    history = [float(i) for i in range(20)] + [100.0 + i for i in range(5)]
    history[6:10] = [None] * 4                      # 4 of the block's 6 unknown: rrdtool's xff 0.5 makes it unknown
    got = traces.pve_week(history, fine=5, coarse=6)
    assert len(got) == len(history)
    assert got[-5:] == history[-5:]                 # the last day as it is
    assert got[:6] == [None, None, 2.5, None, None, None]   # the block's mean at its middle step
    assert got[6:12] == [None] * 6
    assert got[12:18] == [None, None, 14.5, None, None, None]
    assert got[18:20] == [None, None]               # a block of 2 steps: fewer than half of 6 known, unknown
    # a block of 3 steps (18, 19, 100.0): half of 6 known, their mean at its third step
    assert traces.pve_week(history[:23], fine=2, coarse=6)[18:21] == [None, None, (18.0 + 19.0 + 100.0) / 3]

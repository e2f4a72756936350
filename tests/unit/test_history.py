# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The SQLite history store: idempotent appends, retention, concurrent writers."""
import multiprocessing
import sqlite3

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import (
    HistoryError, HistoryStore, SQLiteHistoryStore, open_store, regularize)

T0 = 1_700_000_000 // 60 * 60


def hour(key, start=T0, value=float):
    """One hour of PVE-style 1-minute points."""
    return [(key, start + 60 * i, value(i)) for i in range(60)]


def test_append_and_read_back(tmp_path):
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        assert isinstance(store, HistoryStore)
        assert store.journal_mode == 'wal'
        assert store.append(hour('shop/web/101/cpu')) == 60
        assert store.append(hour('shop/web/102/cpu', value=lambda i: 2.0 * i)) == 60
        assert store.keys() == ['shop/web/101/cpu', 'shop/web/102/cpu']
        pts = store.series('shop/web/102/cpu')
        assert len(pts) == 60
        assert pts[0] == (T0, 0.0) and pts[-1] == (T0 + 59 * 60, 118.0)
        assert store.series('shop/web/101/cpu', since=T0 + 600, until=T0 + 1199) == \
            [(T0 + 60 * i, float(i)) for i in range(10, 20)]
        assert store.series('nope') == []


def test_reappending_the_same_hour_adds_no_duplicates(tmp_path):
    path = str(tmp_path / 'h.sqlite')
    with SQLiteHistoryStore(path) as store:
        assert store.append(hour('a/cpu')) == 60
        assert store.append(hour('a/cpu')) == 0
        # the next run reads an overlapping hour: 30 old points + 30 new ones
        assert store.append(hour('a/cpu', start=T0 + 30 * 60, value=lambda i: float(i + 30))) == 30
        assert store.count('a/cpu') == 90
        # PVE revises its last (still filling) point: the new value replaces the old one
        assert store.append([('a/cpu', T0 + 89 * 60, 1000.0)]) == 1
        assert store.series('a/cpu')[-1] == (T0 + 89 * 60, 1000.0)
        assert store.count() == 90
    # and the primary key is what enforces it, not this object's memory
    db = sqlite3.connect(path)
    assert db.execute('SELECT COUNT(*), COUNT(DISTINCT ts) FROM points').fetchone() == (90, 90)
    db.close()


def test_gaps_and_bad_points(tmp_path):
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        store.append([('a', T0, None), ('a', T0 + 60, float('nan')), ('a', T0 + 120, 3)])
        assert store.series('a') == [(T0, None), (T0 + 60, None), (T0 + 120, 3.0)]
        with pytest.raises(HistoryError):
            store.append([('', T0, 1.0)])
        with pytest.raises(HistoryError):
            store.append([('a', T0)])


def test_retention_prune(tmp_path):
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        day = 86400
        store.append([('a', T0 - d * day, float(d)) for d in range(20)])
        store.append([('b', T0 - 3 * day, 1.0)])
        assert store.prune(retention=14 * day, now=T0) == 5       # 15..19 days old
        assert [v for dummy, v in store.series('a')] == [float(d) for d in range(14, -1, -1)]
        assert store.prune(retention=2 * day, now=T0) == 12 + 1           # a: 3..14 days old, b
        assert [v for dummy, v in store.series('a')] == [2.0, 1.0, 0.0]
        assert store.keys() == ['a']
        assert store.prune(retention=2 * day, now=T0) == 0


def _writer(path, proc, rounds, out, barrier):
    """Append overlapping hours, as two overlapping runs of the reconciler would."""
    try:
        barrier.wait(timeout=60)          # open the store at the same moment (WAL switch race)
        store = SQLiteHistoryStore(path, busy_timeout=30)
        for r in range(rounds):
            # both processes write the same series and timestamps, in different orders
            start = T0 + 60 * 20 * r
            pts = hour('shop/web/101/cpu', start=start) + hour('shop/web/%d/mem' % (101 + proc), start=start)
            if proc % 2:
                pts.reverse()
            store.append(pts)
            store.series('shop/web/101/cpu', since=start)
        store.close()
        out.put((proc, 'ok'))
    except Exception as exc:  # reported to the parent, which fails the test
        out.put((proc, repr(exc)))


def test_two_processes_write_concurrently_without_duplicates_or_lock_errors(tmp_path):
    path = str(tmp_path / 'shared.sqlite')
    ctx = multiprocessing.get_context('spawn')
    out = ctx.Queue()
    barrier = ctx.Barrier(2)
    rounds = 40
    procs = [ctx.Process(target=_writer, args=(path, p, rounds, out, barrier)) for p in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=120) for dummy in procs)
    for p in procs:
        p.join(timeout=30)
    assert results == [(0, 'ok'), (1, 'ok')]
    with SQLiteHistoryStore(path) as store:
        # hours starting every 20 minutes for 40 rounds: 39 * 20 + 60 distinct minutes
        expected = 39 * 20 + 60
        assert store.count('shop/web/101/cpu') == expected
        assert store.count('shop/web/101/mem') == expected
        assert store.count('shop/web/102/mem') == expected
        ts = [t for t, dummy in store.series('shop/web/101/cpu')]
        assert len(ts) == len(set(ts)) == expected


def test_open_store_and_errors(tmp_path):
    store = open_store(str(tmp_path / 'deep' / 'dir' / 'h.sqlite'))
    assert store.keys() == []
    store.close()
    with pytest.raises(HistoryError, match='backend'):
        open_store(str(tmp_path / 'x'), backend='prometheus')
    junk = tmp_path / 'junk.sqlite'
    junk.write_bytes(b'this is not a database' * 100)
    with pytest.raises(HistoryError):
        SQLiteHistoryStore(str(junk))


def test_regularize_to_steps():
    pts = [(T0 + 10, 1.0), (T0 + 70, 3.0), (T0 + 200, 5.0), (T0 + 250, 7.0), (T0 + 500, None)]
    first, values = regularize(pts, 120, start=T0, end=T0 + 600)
    assert first == T0 // 120 * 120
    # T0 is a multiple of 60, maybe not of 120: compute the expected buckets the same way
    buckets = {}
    for ts, v in pts[:-1]:
        buckets.setdefault((ts - first) // 120, []).append(v)
    want = [sum(buckets[i]) / len(buckets[i]) if i in buckets else None
            for i in range((T0 + 600) // 120 - first // 120 + 1)]
    assert values == want
    assert None in values
    assert regularize([], 60) == (None, [])


def test_fill_only_append_keeps_stored_values_and_span(tmp_path):
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        assert store.span('s') == (None, None, 0)
        assert store.append([('s', 60, 1.0), ('s', 120, 2.0)]) == 2
        # Minutes filled from coarser rows never replace a one-minute value, but add what is missing.
        assert store.append([('s', 60, 9.0), ('s', 180, 9.0)], replace=False) == 1
        assert store.series('s') == [(60, 1.0), (120, 2.0), (180, 9.0)]
        # A one-minute value replaces a filled one.
        assert store.append([('s', 180, 3.0)]) == 1
        assert store.span('s') == (60, 180, 3) and store.span('s', since=100) == (120, 180, 2)


def test_regularize_takes_infinities_as_gaps_like_nan():
    first, values = regularize([(T0, 1.0), (T0 + 60, float('inf')), (T0 + 120, float('nan')), (T0 + 180, 3.0),
                                (T0 + 180, float('-inf'))], 60)
    assert first == T0 and values == [1.0, None, None, 3.0]

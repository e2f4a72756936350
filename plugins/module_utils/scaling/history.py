# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Metrics history: PVE keeps a day of 1-minute points (PVE 9; an hour in PVE 8), forecasts want more.

Every run appends the points it read to a :class:`HistoryStore`. The forecaster only
ever sees plain lists, so another backend (e.g. Prometheus) can be added by
implementing the same methods:

* ``append(points, replace=True)``: store ``(series, timestamp, value)`` triples; idempotent:
  a point already stored for the same series and timestamp is not duplicated (a re-read
  value replaces the stored one, since PVE revises its last, still filling, point; with
  ``replace=False`` a stored value is kept: minutes filled from PVE's coarser rows never
  overwrite a one-minute value).
* ``series(key, since=None, until=None)``: ``[(timestamp, value), ...]`` oldest first.
* ``prune(retention, now=None)``: drop points older than ``retention`` seconds.
* ``keys()``: the stored series names.
* ``span(key, since=None)``: ``(first, last, count)`` of a series' timestamps (Nones when empty).

:class:`MemoryHistoryStore` keeps the points of one run in memory: the ``pve`` and ``prometheus`` backends
(module_utils/scaling/history_backends.py) load a window of history into it at the start of every run, so a
controller needs no state at all. :class:`SQLiteHistoryStore` is the ``sqlite`` backend, a cache: one SQLite file on
the controller, for history beyond the 30 days PVE keeps.
It is safe for overlapping runs on that controller (WAL journal, a busy timeout, one
``BEGIN IMMEDIATE`` transaction per write, primary key on series + timestamp). It is
not meant to be shared by several controllers (AWX execution nodes): use a shared store
there.

Series names are free-form; the collection uses ``<template>/<service>/<vm>/<metric>``
(for example ``shop/web/101/cpu``).
"""

import math
import os
import sqlite3
import time

DEFAULT_RETENTION = 14 * 86400
DEFAULT_BUSY_TIMEOUT = 30.0
SCHEMA_VERSION = 1


class HistoryError(Exception):
    """The history store cannot be used (bad path, corrupt file, wrong schema)."""


class HistoryStore(object):
    """The interface every history backend implements."""

    def append(self, points, replace=True):
        raise NotImplementedError

    def series(self, key, since=None, until=None):
        raise NotImplementedError

    def prune(self, retention, now=None):
        raise NotImplementedError

    def keys(self):
        raise NotImplementedError

    def span(self, key, since=None):
        times = [ts for ts, dummy in self.series(key, since=since)]
        return (min(times), max(times), len(times)) if times else (None, None, 0)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _point(p):
    try:
        key, ts, value = p
    except (TypeError, ValueError):
        raise HistoryError('a point is (series, timestamp, value), got %r' % (p,))
    if not isinstance(key, str) or not key:
        raise HistoryError('series name must be a non-empty string, got %r' % (key,))
    ts = int(ts)
    if value is not None:
        value = float(value)
        if math.isnan(value) or math.isinf(value):
            value = None
    return key, ts, value


class SQLiteHistoryStore(HistoryStore):
    """History in one SQLite file (WAL mode)."""

    def __init__(self, path, busy_timeout=DEFAULT_BUSY_TIMEOUT):
        self.path = os.path.abspath(os.path.expanduser(path))
        parent = os.path.dirname(self.path)
        try:
            if parent and not os.path.isdir(parent):
                os.makedirs(parent, mode=0o700, exist_ok=True)
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so every write is one
            # explicit transaction taken with BEGIN IMMEDIATE (no lock upgrade deadlocks).
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise HistoryError('cannot open history store %s: %s' % (self.path, exc))
        self._db.execute('PRAGMA busy_timeout = %d' % int(busy_timeout * 1000))
        self._init(busy_timeout)

    def _init(self, busy_timeout):
        # Switching to WAL needs a moment of exclusive access; a second process opening the
        # file at the same moment can get SQLITE_BUSY without the busy handler, so retry.
        deadline = time.monotonic() + busy_timeout
        while True:
            try:
                mode = self._db.execute('PRAGMA journal_mode = WAL').fetchone()[0]
                self._write("""CREATE TABLE IF NOT EXISTS points (
                                   series TEXT NOT NULL,
                                   ts INTEGER NOT NULL,
                                   value REAL,
                                   PRIMARY KEY (series, ts)) WITHOUT ROWID""",
                            """CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT)""",
                            ("INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),)))
                break
            except sqlite3.OperationalError as exc:
                if 'locked' not in str(exc) and 'busy' not in str(exc) or time.monotonic() > deadline:
                    raise HistoryError('cannot initialise history store %s: %s' % (self.path, exc))
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                raise HistoryError('history store %s is not a usable SQLite database: %s' % (self.path, exc))
        self.journal_mode = mode
        row = self._db.execute("SELECT value FROM meta WHERE name = 'schema'").fetchone()
        if row is None or int(row[0]) != SCHEMA_VERSION:
            raise HistoryError('history store %s has schema %s, this collection uses %d'
                               % (self.path, row and row[0], SCHEMA_VERSION))

    def _write(self, *statements):
        """Run statements in one immediate transaction; return the total rows changed."""
        cur = self._db.cursor()
        cur.execute('BEGIN IMMEDIATE')
        changed = 0
        try:
            for st in statements:
                if isinstance(st, tuple):
                    sql, args = st
                    if args and isinstance(args, list):
                        cur.executemany(sql, args)
                    else:
                        cur.execute(sql, args)
                else:
                    cur.execute(st)
                changed += max(cur.rowcount, 0)
            cur.execute('COMMIT')
        except BaseException:
            cur.execute('ROLLBACK')
            raise
        return changed

    def append(self, points, replace=True):
        """Store points; returns how many were new or changed value (re-appending the same points returns 0).
        ``replace=False`` keeps a value already stored for the same series and timestamp."""
        rows = [_point(p) for p in points]
        if not rows:
            return 0
        conflict = ('DO UPDATE SET value = excluded.value WHERE points.value IS NOT excluded.value' if replace
                    else 'DO NOTHING')
        try:
            return self._write((
                'INSERT INTO points (series, ts, value) VALUES (?, ?, ?) ON CONFLICT (series, ts) ' + conflict, rows))
        except sqlite3.Error as exc:
            raise HistoryError('cannot append to history store %s: %s' % (self.path, exc))

    def series(self, key, since=None, until=None):
        sql = 'SELECT ts, value FROM points WHERE series = ?'
        args = [key]
        if since is not None:
            sql += ' AND ts >= ?'
            args.append(int(since))
        if until is not None:
            sql += ' AND ts <= ?'
            args.append(int(until))
        return list(self._db.execute(sql + ' ORDER BY ts', args))

    def prune(self, retention=DEFAULT_RETENTION, now=None):
        """Delete points older than ``retention`` seconds before ``now``; returns how many."""
        now = time.time() if now is None else now
        try:
            return self._write(('DELETE FROM points WHERE ts < ?', (int(now - retention),)))
        except sqlite3.Error as exc:
            raise HistoryError('cannot prune history store %s: %s' % (self.path, exc))

    def keys(self):
        return [r[0] for r in self._db.execute('SELECT DISTINCT series FROM points ORDER BY series')]

    def span(self, key, since=None):
        sql = 'SELECT MIN(ts), MAX(ts), COUNT(*) FROM points WHERE series = ?'
        args = [key]
        if since is not None:
            sql += ' AND ts >= ?'
            args.append(int(since))
        first, last, count = self._db.execute(sql, args).fetchone()
        return first, last, count

    def count(self, key=None):
        if key is None:
            return self._db.execute('SELECT COUNT(*) FROM points').fetchone()[0]
        return self._db.execute('SELECT COUNT(*) FROM points WHERE series = ?', (key,)).fetchone()[0]

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None


class MemoryHistoryStore(HistoryStore):
    """History of one run, in memory (same semantics as :class:`SQLiteHistoryStore`, nothing is kept)."""

    def __init__(self):
        self._points = {}

    def append(self, points, replace=True):
        changed = 0
        for key, ts, value in (_point(p) for p in points):
            series = self._points.setdefault(key, {})
            if ts in series and (not replace or series[ts] == value):
                continue
            series[ts] = value
            changed += 1
        return changed

    def series(self, key, since=None, until=None):
        series = self._points.get(key) or {}
        return [(ts, series[ts]) for ts in sorted(series)
                if (since is None or ts >= int(since)) and (until is None or ts <= int(until))]

    def prune(self, retention=DEFAULT_RETENTION, now=None):
        cut = int((time.time() if now is None else now) - retention)
        dropped = 0
        for key in list(self._points):
            series = self._points[key]
            old = [ts for ts in series if ts < cut]
            for ts in old:
                del series[ts]
            dropped += len(old)
            if not series:
                del self._points[key]
        return dropped

    def keys(self):
        return sorted(self._points)

    def span(self, key, since=None):
        times = [ts for ts in (self._points.get(key) or {}) if since is None or ts >= int(since)]
        return (min(times), max(times), len(times)) if times else (None, None, 0)

    def count(self, key=None):
        if key is None:
            return sum(len(s) for s in self._points.values())
        return len(self._points.get(key) or {})


def open_store(path=None, backend='sqlite', **options):
    """A history store: ``sqlite`` (the file at ``path``) or ``memory`` (the ``pve`` and ``prometheus`` backends)."""
    if backend == 'memory':
        return MemoryHistoryStore()
    if backend != 'sqlite':
        raise HistoryError('unknown history backend %r for a store (available: sqlite, memory)' % (backend,))
    if not path:
        path = os.path.join(os.path.expanduser('~'), '.cache', 'shadownet', 'history.sqlite')
    return SQLiteHistoryStore(path, **options)


def regularize(points, step_seconds, start=None, end=None):
    """Turn ``[(ts, value)]`` into one value per ``step_seconds`` (mean of the points in each
    step, ``None`` where a step has none), for :func:`forecast.forecast_series`.

    Steps are aligned to multiples of ``step_seconds``; returns ``(first_step_ts, values)``.
    """
    step = int(step_seconds)
    if step <= 0:
        raise ValueError('step_seconds must be > 0')
    pts = [(int(ts), v) for ts, v in points if v is not None and math.isfinite(v)]     # NaN, infinities: gaps
    if start is None:
        if not pts:
            return None, []
        start = min(p[0] for p in pts)
    if end is None:
        end = max(p[0] for p in pts) if pts else start
    first = int(start) // step * step
    count = int(end) // step * step
    count = (count - first) // step + 1
    sums = [0.0] * count
    ns = [0] * count
    for ts, v in pts:
        i = (ts - first) // step
        if 0 <= i < count:
            sums[i] += v
            ns[i] += 1
    return first, [sums[i] / ns[i] if ns[i] else None for i in range(count)]

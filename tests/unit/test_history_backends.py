# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""History backends: the memory store, the history option, PVE 9's day + month rows merged, what a forecast had."""
import sys
import types

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends as hb
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import metrics as metrics_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import (
    MemoryHistoryStore, SQLiteHistoryStore)
from lab.rrd import END, rows

DAY = 86400


# ------------------------------------------------------------------------------------------ memory store

@pytest.mark.parametrize('kind', ['memory', 'sqlite'])
def test_memory_store_behaves_as_the_sqlite_store(kind, tmp_path):
    store = MemoryHistoryStore() if kind == 'memory' else SQLiteHistoryStore(str(tmp_path / 'h.sqlite'))
    with store:
        pts = [('a/cpu', END + 60 * i, float(i)) for i in range(60)]
        assert store.append(pts) == 60 and store.append(pts) == 0
        assert store.append([('a/cpu', END, 7.0)]) == 1 and store.series('a/cpu')[0] == (END, 7.0)
        assert store.append([('a/cpu', END, 9.0)], replace=False) == 0 and store.series('a/cpu')[0] == (END, 7.0)
        assert store.append([('a/cpu', END - 60, float('nan'))]) == 1 and store.series('a/cpu')[0] == (END - 60, None)
        assert store.series('a/cpu', since=END + 600, until=END + 660) == [(END + 600, 10.0), (END + 660, 11.0)]
        assert store.span('a/cpu', since=END) == (END, END + 59 * 60, 60)
        assert store.span('nope') == (None, None, 0)
        assert store.keys() == ['a/cpu'] and store.count() == 61 and store.count('a/cpu') == 61
        assert store.prune(30 * 60, now=END + 60 * 60) == 31
        assert store.count() == 30 and store.series('a/cpu')[0][0] == END + 30 * 60


# --------------------------------------------------------------------------- day + month (PVE 9 shapes)

def test_merge_day_and_month_minutes_win_month_fills_before():
    """PVE 9: `day` 1440 minutes, `month` 1440 half-hours. The minutes win where both exist; a half-hour is one point
    (its middle minute), kept only where no minute of its interval is known."""
    day = rows(60, 1440, value=lambda t: 0.7)
    month = rows(1800, 1440, value=lambda t: 0.2)
    fine, coarse = metrics_utils.merge_rrd([day, month], spread=False)
    assert len(fine) == 1440 and all(r['cpu'] == 0.7 for r in fine)
    # The month's last 48 half-hours cover the day's minutes: dropped; the 1392 before stay, one point each.
    assert len(coarse) == 1440 - 48 and all(r['cpu'] == 0.2 and r['covers'] == 1800 for r in coarse)
    assert coarse[-1]['time'] == END - DAY - 900 and coarse[0]['time'] == END - 1439 * 1800 - 900
    assert max(r['time'] for r in coarse) < min(r['time'] for r in fine)
    # The order of the answers does not matter.
    assert metrics_utils.merge_rrd([month, day], spread=False) == (fine, coarse)


def test_merge_day_and_month_gaps_and_partial_overlap():
    """A half-hour with only `time` (a gap) gives no point; a half-hour of which one minute is known is dropped (the
    minute is finer); a day whose oldest minutes are gaps leaves those to the month."""
    gaps = set(END - DAY + 60 * i for i in range(1, 31))          # the day's oldest 30 minutes are unknown
    day = rows(60, 1440, value=lambda t: 0.7, gaps=gaps)
    month = rows(1800, 1440, value=lambda t: 0.2, gaps=(END - 5 * DAY,))
    fine, coarse = metrics_utils.merge_rrd([day, month], spread=False)
    times = set(r['time'] for r in coarse)
    assert END - 5 * DAY - 900 not in times
    # (END - DAY, END - DAY + 1800] has no known minute: its half-hour stays.
    assert END - DAY + 900 in times and END - DAY + 2700 not in times
    assert len(coarse) == 1440 - 48 + 1 - 1


def test_merge_pve9_join_of_the_old_file_steps_back_in_time():
    """RRD.pm after an upgrade: the old file's half-hours up to the row holding its last update, then the new file's
    minutes from that update on (time steps back once). The half-hour that overlaps minutes is dropped."""
    upgraded = END - 5 * 3600 + 600
    old = rows(1800, 66, end=END - 5 * 3600 + 1800, value=lambda t: 0.2)
    new = rows(60, 290, end=END, value=lambda t: 0.7)
    assert old[-1]['time'] > new[0]['time'] > upgraded
    fine, coarse = metrics_utils.merge_rrd([old + new], spread=False)
    assert len(fine) == 290 and all(r['cpu'] == 0.7 for r in fine)
    assert len(coarse) == 65 and all(r['covers'] == 1800 for r in coarse)
    assert not metrics_utils.needs_coarse_check(old + new)


def test_load_pve_requests_and_summary():
    """One request per VM and timeframe: `day`, plus `month` for a window beyond a day, plus `hour` where `day` is
    coarse (PVE 8). Coarse points never replace a minute already stored."""
    answers = {('day', 100): rows(60, 1440, value=lambda t: 0.7), ('month', 100): rows(1800, 1440),
               ('day', 101): rows(1800, 70, value=lambda t: 0.3), ('hour', 101): rows(60, 70, value=lambda t: 0.6),
               ('month', 101): rows(43200, 70, value=lambda t: 0.1)}
    calls = []

    class Api(object):
        def get(self, path, timeframe, cf):
            vmid = int(path.split('/')[3])
            calls.append((vmid, timeframe, cf))
            return answers[(timeframe, vmid)]
    vms = [dict(template='shop', service='web', role='primary', name='shop-web-{0}'.format(i), vmid=99 + i,
                node='pve1', maxcpu=2.0, maxmem=None) for i in (1, 2)]
    store = MemoryHistoryStore()
    store.append([('shop/web/shop-web-1/cpu', END - 3 * DAY + 900, 0.99)])
    summary = hb.load_pve(store, vms, END - 30 * DAY, END, Api(), parallel=2)
    assert sorted(calls) == [(100, 'day', 'AVERAGE'), (100, 'month', 'AVERAGE'), (101, 'day', 'AVERAGE'),
                             (101, 'hour', 'AVERAGE'), (101, 'month', 'AVERAGE')]
    assert summary['requests'] == 5 and summary['errors'] == []
    one = store.series('shop/web/shop-web-1/cpu')
    assert dict(one)[END - 3 * DAY + 900] == 0.99          # a coarse point does not replace a stored value
    assert len([t for t, v in one if t > END - DAY]) == 1440
    assert summary['vms']['shop-web-1']['coarse'] == {1800: 1440 - 48}
    assert summary['vms']['shop-web-1']['fine'] == [END - 1439 * 60, END, 1440]
    # PVE 8: 70 minutes, then the half-hours before them, then the 12-hour rows before those.
    two = summary['vms']['shop-web-2']
    assert two['fine'][2] == 70 and set(two['coarse']) == {1800, 43200}
    assert store.series('shop/web/shop-web-1/cpu_cores')[-1] == (END, 1.4)
    # A window of a day: no month.
    calls[:] = []
    hb.load_pve(MemoryHistoryStore(), vms[:1], END - DAY, END, Api())
    assert calls == [(100, 'day', 'AVERAGE')]


# ------------------------------------------------------------------------------------------- the option

def test_history_config_defaults_and_compatibility():
    assert hb.history_config(None, environ={}) == {'backend': 'pve', 'path': None}
    assert hb.history_config({'backend': 'sqlite'}, environ={})['path'].endswith('/.local/share/shadownet/history.sqlite')
    # history_path and SHADOWNET_HISTORY keep meaning the sqlite file (earlier releases).
    assert hb.history_config(None, '/x/h.sqlite', environ={}) == {'backend': 'sqlite', 'path': '/x/h.sqlite'}
    assert hb.history_config(None, environ={'SHADOWNET_HISTORY': '/y.sqlite'}) == {'backend': 'sqlite',
                                                                                   'path': '/y.sqlite'}
    # An explicit pve backend ignores the environment's path.
    assert hb.history_config({'backend': 'pve'}, environ={'SHADOWNET_HISTORY': '/y.sqlite'})['backend'] == 'pve'
    assert hb.history_config(None, environ={'SHADOWNET_HISTORY_BACKEND': 'pve', 'SHADOWNET_HISTORY': '/y'}) == \
        {'backend': 'pve', 'path': None}
    prom = hb.history_config({'backend': 'prometheus'}, environ={'SHADOWNET_PROMETHEUS_URL': 'https://p:9090',
                                                                 'SHADOWNET_PROMETHEUS_TOKEN': 't'})
    assert prom['url'] == 'https://p:9090' and prom['bearer_token'] == 't' and prom['validate_certs'] is None


@pytest.mark.parametrize('option, path, environ, words', [
    ({'backend': 'influx'}, None, {}, 'history.backend'),
    (None, None, {'SHADOWNET_HISTORY_BACKEND': 'nope'}, 'SHADOWNET_HISTORY_BACKEND'),
    ({'backend': 'pve', 'path': '/x'}, None, {}, 'only used by backend sqlite'),
    ({'backend': 'pve'}, '/x', {}, 'only used by backend sqlite'),
    ({'path': '/a'}, '/b', {}, 'disagree'),
    ({'backend': 'sqlite', 'url': 'http://p'}, None, {}, 'history.url is only used by backend prometheus'),
    ({'backend': 'prometheus'}, None, {}, 'SHADOWNET_PROMETHEUS_URL'),
    ({'bogus': 1}, None, {}, 'unknown option'),
])
def test_history_config_errors_name_the_field(option, path, environ, words):
    with pytest.raises(hb.HistoryConfigError, match=words):
        hb.history_config(option, path, environ=environ)


def test_prometheus_loader_is_imported_only_when_chosen(monkeypatch):
    name = 'ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.prometheus'
    seen = []
    fake = types.ModuleType(name)
    fake.load_history = lambda store, vms, since, until, config, now=None: seen.append((since, until)) or {'x': 1}
    monkeypatch.setitem(sys.modules, name, fake)
    import ansible_collections.shadownet.proxmox.plugins.module_utils.scaling as pkg
    monkeypatch.setattr(pkg, 'prometheus', fake, raising=False)
    config = {'backend': 'prometheus', 'path': None, 'url': 'http://p'}
    assert hb.load_history(MemoryHistoryStore(), [], 1, 2, config) == {'x': 1} and seen == [(1, 2)]
    with pytest.raises(ValueError, match='an api'):
        hb.load_history(MemoryHistoryStore(), [], 1, 2, {'backend': 'pve', 'path': None})


# ------------------------------------------------------------------------------------ what a forecast had

def test_service_history_text():
    store = MemoryHistoryStore()
    key = 'shop/web/shop-web-1/cpu'
    store.append([(key, END - 40 * DAY + 60 * i, 0.1) for i in range(10)])      # older, from the sqlite file
    store.append([(key, END - 29 * DAY - 900 + 1800 * i, 0.2) for i in range(28 * 48)])
    store.append([(key, END - DAY + 60 * (i + 1), 0.3) for i in range(1440)])
    summary = {'backend': 'sqlite', 'vms': {'shop-web-1': {'fine': [END - DAY + 60, END, 1440], 'coarse': {1800: 28 * 48}}}}
    info = hb.service_history(store, summary, ['shop-web-1', 'shop-web-9'], 'shop/web/{0}/cpu'.format,
                              END - 45 * DAY, END)
    assert info['text'] == 'history 1d 0h at 60 s + 28d 0h at 30 min + 11d 0h from the store', info
    none = hb.service_history(MemoryHistoryStore(), summary, ['shop-web-1'], lambda n: n, END - DAY, END)
    assert none['text'] == 'history none'


def test_batches_bound_the_vms_held_and_never_split_a_service():
    vms = [dict(template='t', service=s, name='%s-%d' % (s, i)) for s, n in (('a', 3), ('b', 1), ('c', 5), ('d', 2))
           for i in range(n)]
    keys = [('t', 'a'), ('t', 'b'), ('t', 'c'), ('t', 'd'), ('t', 'e')]
    pve = {'backend': 'pve', 'path': None}
    assert hb.batches(keys, vms, pve, size=4) == [[('t', 'a'), ('t', 'b')], [('t', 'c')], [('t', 'd'), ('t', 'e')]]
    assert hb.batches(keys, vms, pve, size=100) == [keys]
    assert hb.batches(keys, vms, {'backend': 'prometheus'}, size=1) == [keys]
    total = hb.empty_summary('pve')
    hb.add_summary(total, {'requests': 2, 'points': 5, 'vms': {'x': 1}, 'warnings': ['w'], 'errors': [], 'step': 60})
    hb.add_summary(total, {'requests': 3, 'points': 1, 'vms': {'y': 2}, 'warnings': [], 'errors': ['e']})
    assert total == {'backend': 'pve', 'requests': 5, 'queries': 0, 'points': 6, 'vms': {'x': 1, 'y': 2},
                     'warnings': ['w'], 'errors': ['e'], 'step': 60}


def test_describe_says_where_the_history_came_from():
    """The report's run metadata: from the loaders' summary (the Prometheus URL there has no credentials)."""
    assert hb.describe(hb.empty_summary('pve')) == "PVE's RRD (stateless)"
    assert hb.describe(dict(hb.empty_summary('sqlite'), path='/var/h.sqlite')) == \
        "PVE's RRD with the SQLite cache /var/h.sqlite"
    assert hb.describe(dict(hb.empty_summary('prometheus'), url='https://prom:9090')) == 'Prometheus https://prom:9090'

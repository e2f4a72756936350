"""issue 15: a stateless controller forecasts from PVE's own RRD history (no history file), PVE 9 and PVE 8 shapes."""
import copy
import json
import os
import re
import threading
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.modules import forecast, metrics, scale
from lab.modrun import run_module
from lab.rrd import record_rrddata
from lab.playbook import VENV_PY, ansible_playbook, recap
from lab.shop import SCALED_SHOP, build, plan_of, primaries

# The ramp: the api (here web) service's CPU rose cleanly from 30% to 68% over the last hour, toward high 75%
# with a 20-minute horizon; flat at 30% before that.
CLEAN_RAMP = [0.30 + 0.38 * i / 59 for i in range(60)]
# PVE 9's day at one minute (23h 59m when the clock passed a minute between the injection and the read).
DAY_AT_A_MINUTE = r'\(history (1d 0h|23h 5\dm) at 60 s\)'


def ramp_template():
    template = copy.deepcopy(SCALED_SHOP)
    template['scaling'].update(cpu={'high': 0.75, 'low': 0.3, 'duration': '5m'}, horizon='20m')
    return template


def day_points(ramp=CLEAN_RAMP, baseline=0.30, minutes=1440, end=None):
    """One raw sample a minute for a day ending at the current minute: flat, then the ramp."""
    end = int(time.time()) // 60 * 60 if end is None else end
    values = [baseline] * (minutes - len(ramp)) + list(ramp)
    return [{'time': end - 60 * (len(values) - 1 - i), 'cpu': v, 'maxcpu': 2, 'mem': 1024 * 1048576,
             'maxmem': 2048 * 1048576, 'netin': 1000.0, 'netout': 1000.0} for i, v in enumerate(values)]


def inject_ramp(pvesim, vms, **kw):
    for name, vm in vms.items():
        if name.startswith('shop-web-') and name != 'shop-web-shadow':
            pvesim.pve.inject_rrd(vm.vmid, day_points(**kw))


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    """A controller that never ran: an empty HOME, no SHADOWNET_* variables."""
    home = tmp_path / 'home'
    home.mkdir()
    monkeypatch.setenv('HOME', str(home))
    for name in list(os.environ):
        if name.startswith('SHADOWNET_'):
            monkeypatch.delenv(name)
    return home


def files_under(path):
    return sorted(os.path.join(d, f) for d, dummy, names in os.walk(str(path)) for f in names)


@pytest.mark.parametrize('fmt', ['pve9', 'pve8'])
def test_fresh_controller_no_history_file_scales_out_before_high(pvesim, pve_conn, fresh_home, monkeypatch, fmt):
    """The issue's scenario: no history file at all, forecast then scale in a fresh process; 2 -> 3 before `high`."""
    pvesim.pve.rrd_format = fmt
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    reads = record_rrddata(pvesim, monkeypatch)
    f = run_module(forecast, dict(pve_conn, plans={'shop': plan}))
    decision = f['decisions'][0]
    assert decision['action'] == 'scale_up' and decision['target'] == {'instances': 3}, decision['line']
    assert decision['utilisation']['cpu'] < 0.75 and decision['forecast']['cpu']['model'] != 'naive'
    # on a fresh ramp the forecast did better than the last value over its calibration day
    assert 0 < decision['forecast']['cpu']['relative_mae'] < 1, decision['forecast']
    assert f['history']['backend'] == 'pve' and f['history']['path'] is None
    # Requests: VMs (2 web primaries + the shadow) x timeframes (+ the listing, counted by the module); the default
    # window is a week, so `month` is read beside `day`.
    if fmt == 'pve9':
        assert sorted(reads) == ['day'] * 3 + ['month'] * 3 and f['history']['requests'] == 6
        assert re.search(DAY_AT_A_MINUTE + '$', decision['line']), decision['line']
    else:
        assert sorted(reads) == ['day'] * 3 + ['hour'] * 3 + ['month'] * 3 and f['history']['requests'] == 9
        assert re.search(r'\(history 1h 10m at 60 s \+ 2[23]h (0|30)m at 30 min\)$', decision['line']), decision['line']
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=f['decisions']))
    assert s['results'][0]['created'] == ['shop-web-3']
    assert primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']
    assert files_under(fresh_home) == []          # nothing was written on the controller


def test_pve9_hour_alone_is_too_short_for_the_forecaster():
    """Why the issue saw "no signal": PVE 9's `hour` is 60 points, too few for a 20-minute horizon's backtest, so the
    forecaster is naive (the last value, 68%); 70 points (PVE 8's hour) were just enough; the day PVE 9 keeps is."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import forecast as forecast_utils
    day = [p['cpu'] * 2 for p in day_points(end=1_800_000_000)]
    assert forecast_utils.forecast_series(day[-60:], 60, 20)['model'] == 'naive'
    assert forecast_utils.forecast_series(day[-70:], 60, 20)['model'] != 'naive'
    assert forecast_utils.forecast_series(day, 60, 20)['model'] != 'naive'


def test_month_is_read_for_a_window_beyond_the_day_and_merged(pvesim, pve_conn, fresh_home, monkeypatch):
    """A 3-day window: `day` and `month` per VM; the minutes win, the half-hours before them fill the rest."""
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms, minutes=3 * 1440)
    reads = record_rrddata(pvesim, monkeypatch)
    f = run_module(forecast, dict(pve_conn, plans={'shop': plan}, history_window=3 * 86400))
    assert sorted(reads) == ['day'] * 3 + ['month'] * 3 and f['history']['requests'] == 6
    decision = f['decisions'][0]
    assert decision['action'] == 'scale_up', decision['line']
    assert re.search(r'\(history (1d 0h|23h 5\dm) at 60 s \+ (2d 0h|1d 23h) at 30 min\)$', decision['line']), \
        decision['line']
    parts = decision['history']['parts']
    assert parts[0][1:] == [60, 'pve'] and parts[0][0] >= 86400 - 180 and parts[1][1] == 1800 and parts[1][0] >= (2 * 48 - 2) * 1800, parts


def test_pve9_after_an_upgrade_joins_the_old_file(pvesim, pve_conn, fresh_home, monkeypatch):
    """PVE 9 five hours after the upgrade: `day` answers the old file's half-hours up to the upgrade, then minutes
    (RRD.pm); the collection still forecasts from them."""
    now = int(time.time()) // 60 * 60
    pvesim.pve.rrd_upgraded_at = now - 5 * 3600 + 17
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    reads = record_rrddata(pvesim, monkeypatch)
    f = run_module(forecast, dict(pve_conn, plans={'shop': plan}, history_window=86400))      # `day` alone
    assert reads == ['day'] * 3
    decision = f['decisions'][0]
    assert decision['action'] == 'scale_up', decision['line']
    assert re.search(r'\(history 5h 0m at 60 s \+ 1[89]h (0|30)m at 30 min\)$', decision['line']), decision['line']


def test_check_mode_writes_nothing_anywhere(pvesim, pve_conn, fresh_home, tmp_path, monkeypatch):
    """Check mode: no PVE write, no file (also the sqlite backend's); one service per batch here."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends
    monkeypatch.setattr(history_backends, 'BATCH_VMS', 1)
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    mark = pvesim.mark()
    history = tmp_path / 'cache' / 'h.sqlite'
    for args in ({}, {'history': {'backend': 'sqlite', 'path': str(history)}}):
        f = run_module(forecast, dict(pve_conn, plans={'shop': plan}, **args), check_mode=True)
        assert f['decisions'][0]['action'] == 'scale_up'
        assert [d['service'] for d in f['decisions']] == [e['service'] for e in plan['scaling']]
        assert all('(history ' in d['line'] for d in f['decisions'])
        s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=f['decisions']), check_mode=True)
        assert s['changed'] and s['results'][0]['applied'] is False
    assert pvesim.writes(mark) == [] and files_under(fresh_home) == [] and not os.path.exists(str(history.parent))


def comparable(decision):
    """A decision without its clock: the reason's "in <N>s" counts from each run's own `now`."""
    keep = ('action', 'act', 'target', 'utilisation', 'forecast', 'instances', 'signal', 'metric')
    out = dict((k, decision.get(k)) for k in keep)
    out['reason'] = re.sub(r' in \d+s', ' in Ns', decision.get('reason') or '')
    return out


def test_same_decisions_from_pve_and_sqlite(pvesim, pve_conn, fresh_home, tmp_path, monkeypatch):
    """The same data gives the same decisions from PVE's RRD (stateless) and from the SQLite cache (fresh, and
    filled by the metrics step first); the sqlite run keeps PVE's day in the file."""
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    history = str(tmp_path / 'h.sqlite')
    day = dict(pve_conn, plans={'shop': plan}, history_window=86400)     # a day's window: `day` alone
    pve = run_module(forecast, dict(day, history={'backend': 'pve'}))['decisions']
    sqlite = run_module(forecast, dict(day, history={'backend': 'sqlite', 'path': history}))
    assert sqlite['history']['path'] == history and os.path.exists(history)
    reads = record_rrddata(pvesim, monkeypatch)
    legacy = run_module(forecast, dict(day, history_path=history))
    legacy_reads = sorted(reads)
    m = run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    assert m['backend'] == 'sqlite' and m['appended'] == 0      # the forecast already cached PVE's day
    # The cache holds the primaries' last day: the legacy run read only their `hour` (the shadow, with no full day, `day`).
    assert legacy['history']['requests'] == 3 and legacy_reads == ['day', 'hour', 'hour']
    assert [comparable(d) for d in pve] == [comparable(d) for d in sqlite['decisions']] == \
        [comparable(d) for d in legacy['decisions']]
    assert pve[0]['action'] == 'scale_up'


def test_metrics_step_is_a_cheap_read_with_the_pve_backend(pvesim, pve_conn, fresh_home, monkeypatch):
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    reads = record_rrddata(pvesim, monkeypatch)
    m = run_module(metrics, dict(pve_conn, plans={'shop': plan}))
    assert m['backend'] == 'pve' and m['history_path'] is None and m['appended'] == 0
    assert reads == ['hour'] * 3 and m['requests'] == 4
    assert m['services'][0]['cpu'] == pytest.approx(0.68)
    assert files_under(fresh_home) == []


def play(pvesim, home, *extra):
    env = dict(ANSIBLE_SHOW_CUSTOM_STATS='1', OMP_NUM_THREADS='1', OPENBLAS_NUM_THREADS='1', HOME=str(home),
               SHADOWNET_HISTORY=None, SHADOWNET_HISTORY_BACKEND=None, ANSIBLE_LOCAL_TEMP=str(home / '.ansible-tmp'),
               ANSIBLE_REMOTE_TEMP=str(home / '.ansible-tmp'))
    args = ['-i', 'localhost,', 'reconcile.yml', '-e', json.dumps({'shadownet_templates': [ramp_template()]}),
            '-e', 'ansible_python_interpreter=' + VENV_PY]
    return ansible_playbook(args + list(extra), sim=pvesim, env=env)


@pytest.mark.slow
def test_two_stateless_reconcilers_at_once_add_exactly_one_instance(pvesim, pve_conn, tmp_path):
    """Two reconcile.yml runs started together on two "controllers" (separate HOMEs, no history path, no shared
    file): the claim in PVE lets exactly one add the instance."""
    inject_ramp(pvesim, build(pvesim, pve_conn, plan_of(ramp_template())))
    homes = [tmp_path / 'a', tmp_path / 'b']
    results = [None, None]

    def one(i):
        homes[i].mkdir()
        results[i] = play(pvesim, homes[i])
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    for r in results:
        assert recap(r)['failed'] == 0, r.stdout[-4000:] + r.stderr[-2000:]
    lines = [re.findall(r'"msg": "(shop/[^"]*)"', r.stdout) for r in results]
    assert all(len(found) == 1 and 'decision scale_up 2 -> 3 instances' in found[0] for found in lines), lines
    assert all(re.search(DAY_AT_A_MINUTE, found[0]) for found in lines), lines
    assert sorted('=> applied' in found[0] for found in lines) == [False, True], lines
    assert primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']
    assert [f for f in files_under(tmp_path) if 'history' in f or f.endswith('.sqlite')] == []


def test_a_primary_whose_rrddata_fails_holds_its_service(pvesim, pve_conn, fresh_home, monkeypatch):
    """One primary's rrddata answers an error: a warning names it, and its service decides nothing (its demand would
    be the other primary's alone, spread over both: too low), saying why; the other services still decide."""
    from fakepve.model import PveError
    plan = plan_of(ramp_template())
    vms = build(pvesim, pve_conn, plan)
    inject_ramp(pvesim, vms)
    from lab import pvesim_qemu
    broken = pvesim.pve.rrd[vms['shop-web-2'].vmid]
    real = pvesim_qemu.rrd_fetch

    def rrd_fetch(series, *args, **kwargs):
        if series is broken:    # pve-cluster RRD.pm create_rrd_data: die "RRD error: $err\n"
            raise PveError(500, 'RRD error: opening rrd file: No such file or directory')
        return real(series, *args, **kwargs)
    monkeypatch.setattr(pvesim_qemu, 'rrd_fetch', rrd_fetch)
    f = run_module(forecast, dict(pve_conn, plans={'shop': plan}))
    assert f['history']['errors'] == [{'name': 'shop-web-2', 'msg': f['history']['errors'][0]['msg']}]
    assert 'RRD error' in f['history']['errors'][0]['msg']
    assert 'rrddata of shop-web-2 could not be read' in json.dumps(f.get('warnings')), f.get('warnings')
    web = f['decisions'][0]
    assert web['action'] == 'none' and not web['act'] and web['blocked_by'] == 'history', web['line']
    assert 'history of shop-web-2 could not be read (' in web['reason'] and 'no scaling decision' in web['line']
    assert all(d['reason'].startswith('no signal') for d in f['decisions'][1:]), [d['line'] for d in f['decisions']]
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=f['decisions']))
    assert not s['changed'] and primaries(pvesim) == ['shop-web-1', 'shop-web-2']

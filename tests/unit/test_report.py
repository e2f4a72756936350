# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML scaling report: the data it plots (pure), the page, the files, and the report without matplotlib.
The page in a real browser: tests/integration/test_forecast_report.py."""
import base64
import os
import re
import struct
import sys

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import report

NOW = 1_700_000_000
STEP = 60
DAY = 86400


def flat_forecast(level_value, spread=0.2):
    """A forecaster that predicts ``level_value`` with a fixed band (no statsmodels needed)."""
    def forecaster(values, step, horizon, level=0.8):
        return dict(mean=[level_value] * horizon, lower=[level_value - spread] * horizon,
                    upper=[level_value + spread] * horizon, model='fake', level=level)
    return forecaster


def decision_and_used(demand_value, instances=2, cores=2, scaling=None, last_action=None, mode='horizontal',
                      length=3 * DAY // STEP, memory=None):
    """A real policy.decide() decision on a flat cpu history, and what the report gets from forecast_plan."""
    conf = dict({'cpu': {'high': 0.7, 'low': 0.3, 'duration': 300}, 'horizon': 900,
                 'instances': {'min': 1, 'max': 6}, 'mode': mode}, **(scaling or {}))
    end = NOW - 30
    demand = [demand_value] * length
    metrics = {'cpu': {'demand': demand, 'step_seconds': STEP, 'end': end}}
    current = {'instances': instances, 'capacity': {'cpu': cores}}
    if memory:
        metrics['memory'] = {'demand': [memory[0]] * length, 'step_seconds': STEP, 'end': end}
        current['capacity']['memory'] = memory[1]
    if mode == 'vertical':
        current.update(cores=cores, memory=(memory or (0, 2048))[1], max_cores=16, max_memory=16384)
    forecaster = flat_forecast(demand_value)
    d = policy.decide(conf, current, metrics, NOW, forecaster=forecaster, last_action=last_action)
    d.update(template='shop', service='web', instances=instances, line='shop/web: the decision line ' + d['reason'])
    used = dict(series=dict((m, v['demand']) for m, v in metrics.items()), end=end, forecasts=d['forecast'],
                horizon=900)
    return d, used


def test_horizontal_scale_up_panel_history_forecast_and_capacity_lines():
    # 2 instances x 2 cores, high 70%: the line is at 2.8 cores; demand 3.2 cores forecast -> 3 instances.
    d, used = decision_and_used(3.2)
    assert d['action'] == 'scale_up' and d['target'] == {'instances': 3}, d['reason']
    p = report.service_panel(d, used, NOW)
    assert (p['current'], p['decided'], p['status']) == ('2 instances', '3 instances', 'acts')
    cpu, = p['metrics']
    # The last two days of the three the decision had, one point a minute, ending at the newest point.
    assert cpu['times'][-1] == used['end'] and cpu['times'][0] - STEP < NOW - 2 * DAY <= cpu['times'][0]
    assert len(cpu['times']) == 2 * DAY // STEP and cpu['values'][-1] == pytest.approx(3.2)
    assert cpu['unit'] == 'cores' and cpu['span'] == 'last 2 days'
    fc = cpu['forecast']
    assert len(fc['times']) == 15 and fc['times'][0] == used['end'] + STEP      # the 15-minute horizon only
    assert fc['upper'][0] == pytest.approx(3.4) and fc['lower'][0] == pytest.approx(3.0)
    lines = dict((ln['kind'], ln) for ln in cpu['lines'])
    assert lines['high']['value'] == pytest.approx(0.7 * 2 * 2)
    assert lines['low']['value'] == pytest.approx(0.3 * 2 * 2)
    assert lines['decided']['value'] == pytest.approx(0.7 * 2 * 3)
    assert lines['high']['label'] == 'high 70% of capacity x 2 instances'
    assert lines['decided']['label'] == 'high x 3 instances (decided)'


def test_the_wider_band_is_drawn_around_the_policys_interval():
    """The policy tests a narrow interval (level 0.3); a forecast with ``bands`` gets the widest one as ``outer``,
    and the close-up's y range holds it."""
    d, used = decision_and_used(3.2)
    fc = used['forecasts']['cpu']
    assert report.metric_panel('cpu', {}, None, fc, used['end'], 900, NOW, d)['forecast']['outer'] is None
    fc = dict(fc, level=0.3, bands=[{'level': 0.5, 'lower': [2.9] * 15, 'upper': [3.5] * 15},
                                    {'level': report.OUTER_LEVEL, 'lower': [2.5] * 15, 'upper': [4.5] * 15}])
    panel = report.metric_panel('cpu', {}, used['series']['cpu'], fc, used['end'], 900, NOW, d)
    outer = panel['forecast']['outer']
    assert outer['level'] == 0.8 and outer['upper'] == [4.5] * 15 and outer['lower'] == [2.5] * 15
    assert panel['forecast']['upper'][0] == pytest.approx(3.4)        # the policy's own interval is kept
    assert panel['zoom_top'] == pytest.approx(1.08 * 4.5)


def test_the_forecast_against_what_happened_lines_up_with_the_history():
    """forecast_series' ``hindcast`` ends at the series' last point (a trailing gap as None): the panel places it on
    the history's times, in display units, and keeps only what the two days show; without one there is none."""
    d, used = decision_and_used(3.2)
    fc = used['forecasts']['cpu']
    assert report.metric_panel('cpu', {}, used['series']['cpu'], fc, used['end'], 900, NOW, d)['hindcast'] is None
    made = [1.0 + i / 1000.0 for i in range(1426)] + [None]           # a day less 15 minutes, then a gap
    fc = dict(fc, hindcast={'lead': 15, 'mean': made})
    panel = report.metric_panel('cpu', {}, used['series']['cpu'], fc, used['end'], 900, NOW, d)
    hc = panel['hindcast']
    assert hc['lead_seconds'] == 900 and report._lead_text(hc['lead_seconds']) == '15 min'
    assert hc['times'][-1] == used['end'] and hc['values'][-1] is None
    assert hc['times'][0] == used['end'] - 1426 * STEP and hc['values'][0] == pytest.approx(1.0)
    assert set(hc['times']) <= set(panel['times'])
    # memory in GiB: the demand is in MiB; a hindcast longer than the panel's history is cut to it
    mem = report.metric_panel('memory', {}, [2048.0] * 100, dict(fc, hindcast={'lead': 15, 'mean': [3072.0] * 200}),
                              used['end'], 900, NOW, d)
    assert mem['hindcast']['values'] == [3.0] * 100 and mem['hindcast']['times'] == mem['times']
    assert report.metric_panel('cpu', {}, used['series']['cpu'], dict(fc, hindcast={'lead': 15, 'mean': [None] * 9}),
                               used['end'], 900, NOW, d)['hindcast'] is None
    assert report._lead_text(3 * 3600) == '3 h'


def test_no_change_has_no_decided_line_and_forecast_only_is_a_what_if():
    d, used = decision_and_used(2.0)
    assert d['action'] == 'none'
    p = report.service_panel(d, used, NOW)
    assert [ln['kind'] for ln in p['metrics'][0]['lines']] == ['high', 'low'] and p['status'] == 'no change'
    d, used = decision_and_used(3.2, scaling=None)
    d['forecast_only'], d['act'] = True, False
    assert report.service_panel(d, used, NOW)['status'] == 'what-if'
    d['forecast_only'], d['act'] = False, True
    assert report.service_panel(d, used, NOW, check_mode=True)['status'] == 'what-if (check mode)'


def test_scale_up_held_by_cooldown_draws_the_wanted_size():
    d, used = decision_and_used(3.2, last_action={'action': 'scale_up', 'time': NOW - 10})
    assert d['blocked_by'] == 'cooldown_up' and d['wanted']['instances'] == 3
    p = report.service_panel(d, used, NOW)
    lines = dict((ln['kind'], ln) for ln in p['metrics'][0]['lines'])
    assert 'decided' not in lines and lines['wanted']['value'] == pytest.approx(4.2)
    assert p['decided'] == '2 instances' and p['wanted'] == '3 instances'


def test_net_thresholds_are_absolute_per_instance_in_mbit():
    d, used = decision_and_used(1.0)
    sig = {'metric': 'net', 'high': 800e6, 'low': 100e6, 'capacity': None, 'instances': 2, 'step_seconds': 60}
    panel = report.metric_panel('net', sig, [None] * 5 + [300e6] * 10, None, NOW, 900, NOW, d)
    assert panel['unit'] == 'Mbit/s' and panel['values'][-1] == pytest.approx(300)
    # The grid starts before the history does: the plot starts at the first value.
    assert len(panel['times']) == 10 and panel['span'] == 'last 10 minutes'
    assert panel['zoom_start'] == panel['times'][0] and panel['zoom_top'] == pytest.approx(1.08 * 1600)
    lines = dict((ln['kind'], ln) for ln in panel['lines'])
    assert lines['high']['value'] == pytest.approx(1600) and lines['low']['value'] == pytest.approx(200)
    assert lines['high']['label'] == 'high 800 Mbit/s per instance x 2 instances'


def test_vertical_lines_follow_cores_and_memory():
    d, used = decision_and_used(1.9, instances=1, cores=2, mode='vertical', memory=(1024, 2048))
    assert d['action'] == 'scale_up' and d['target']['cores'] > 2, d['reason']
    p = report.service_panel(d, used, NOW)
    cpu, mem = p['metrics']
    assert mem['unit'] == 'GiB' and mem['values'][-1] == pytest.approx(1.0)
    lines = dict((ln['kind'], ln) for ln in cpu['lines'])
    assert lines['high']['value'] == pytest.approx(0.7 * 2)
    assert lines['decided']['value'] == pytest.approx(0.7 * d['target']['cores'])
    assert p['current'] == '1 x 2 cores, 2048 MiB' and p['decided'].startswith('1 x {0} cores'.format(d['target']['cores']))


def test_service_without_history_has_a_panel_without_metrics():
    d = {'template': 'shop', 'service': 'api', 'action': 'none', 'act': False, 'instances': 0,
         'reason': 'no primaries of this service were found in the cluster (build it first)',
         'target': {'instances': 0}}
    p = report.service_panel(d, None, NOW)
    assert p['metrics'] == [] and p['reason'].startswith('no primaries') and p['status'] == 'no change'


def png_size(data):
    assert data[:8] == b'\x89PNG\r\n\x1a\n'
    return struct.unpack('>II', data[16:24])


def test_the_model_line_says_how_the_forecast_did_against_the_last_value():
    d, used = decision_and_used(3.2)
    assert report.service_panel(d, used, NOW)['models'] == {'cpu': 'fake'}
    d['forecast'] = {'cpu': {'model': 'fake', 'relative_mae': 0.614}}           # as scaling.forecast_plan sums it up
    p = report.service_panel(d, used, NOW)
    assert p['models'] == {'cpu': "fake (recent error 0.61x the last value's)"}
    assert "forecast models: cpu fake (recent error 0.61x the last value&#x27;s); horizontal mode" in \
        report.render_html(report.run_meta(['shop'], [d], NOW, 'x', check_mode=False), [p], {})
    used['forecasts']['cpu']['combiner'] = 'median'                        # the members' weighted median
    assert report.service_panel(d, used, NOW)['models'] == {'cpu': "fake (median) (recent error 0.61x the last value's)"}


def test_page_is_self_contained_with_index_plots_and_decision_lines():
    pytest.importorskip('matplotlib')
    up, used_up = decision_and_used(3.2)
    down, used_down = decision_and_used(0.5)
    down['service'] = 'api'
    down['line'] = 'shop/api: the decision line ' + down['reason']
    meta = report.run_meta(['shop'], [up, down], NOW, 'SQLite /tmp/h.sqlite', check_mode=False)
    text, note = report.build(meta, [up, down], {('shop', 'web'): used_up, ('shop', 'api'): used_down}, NOW)
    assert note is None
    # Index first (both services, linked), then one section per service with its line and its plot.
    index = text.index('<table class="index">')
    assert index < text.index('<section class="svc" id="shop-web">') < text.index('<section class="svc" id="shop-api">')
    assert '<a href="#shop-web">shop/web</a>' in text and '<a href="#shop-api">shop/api</a>' in text
    assert 'the decision line ' + report._e(up['reason']) in text
    assert '2023-11-14 22:13:20 UTC' in text and 'SQLite /tmp/h.sqlite' in text
    images = re.findall(r'<img class="plot"[^>]* width="(\d+)" height="(\d+)" src="data:image/png;base64,([^"]+)"', text)
    assert len(images) == 2
    for width, height, data in images:
        assert png_size(base64.b64decode(data)) == (int(width), int(height)) == (1200, 370)
    # Nothing is loaded from elsewhere: no scripts, stylesheets, fonts or remote URLs.
    assert not re.search(r'<script|<link|@import|url\(|(src|href)="(?!data:|#)', text)


def test_without_matplotlib_the_report_says_how_to_install_it(monkeypatch):
    d, used = decision_and_used(3.2)
    # An import of matplotlib that fails as on a host without it (None in sys.modules makes `import` raise).
    for name in [n for n in sys.modules if n == 'matplotlib' or n.startswith('matplotlib.')] + ['matplotlib']:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(report.MissingPlotLibrary) as exc:
        report.render_plot(report.service_panel(d, used, NOW))
    assert exc.value.library == 'matplotlib'
    meta = report.run_meta(['shop'], [d], NOW, 'SQLite /x')
    text, note = report.build(meta, [d], {('shop', 'web'): used}, NOW)
    assert note and 'matplotlib' in note and 'pip install matplotlib' in note and 'requirements.txt' in note
    assert '<div class="note" id="missing-plots">' in text and '<img' not in text
    assert 'the decision line ' + report._e(d['reason']) in text and '<a href="#shop-web">' in text


def test_write_keeps_the_newest_and_latest_is_a_copy(tmp_path):
    target = tmp_path / 'reports'
    paths = []
    for i, when in enumerate([NOW, NOW, NOW + 60, NOW + 120]):
        out = report.write_report(str(target), '<p>run {0}</p>'.format(i), when, keep=3)
        paths.append(out['path'])
        assert open(out['latest']).read() == '<p>run {0}</p>'.format(i)
        assert not os.path.islink(out['latest'])
    names = [os.path.basename(p) for p in paths]
    assert names[:2] == ['report-20231114T221320Z.html', 'report-20231114T221320Z-2.html']
    # The oldest went; the same-second second run counts as newer than the first.
    assert sorted(os.listdir(target)) == sorted(['latest.html'] + names[1:])
    assert [f for f in os.listdir(target) if f.startswith('.')] == []
    report.write_report(str(target), 'x', NOW + 180, keep=0)
    assert len([f for f in os.listdir(target) if f.startswith('report-')]) == 4


def test_write_errors_name_the_directory_and_keep(tmp_path):
    blocker = tmp_path / 'file'
    blocker.write_text('not a directory')
    with pytest.raises(OSError) as exc:
        report.write_report(str(blocker / 'reports'), 'x', NOW)
    assert str(blocker / 'reports') in str(exc.value) and 'report.dir' in str(exc.value)
    with pytest.raises(ValueError, match='report.keep'):
        report.write_report(str(tmp_path), 'x', NOW, keep=-1)


def test_report_dir_default_and_environment(monkeypatch):
    monkeypatch.delenv('SHADOWNET_REPORT_DIR', raising=False)
    assert report.report_dir(None) == os.path.expanduser('~/.local/share/shadownet/reports')
    monkeypatch.setenv('SHADOWNET_REPORT_DIR', '/srv/reports')
    assert report.report_dir(None) == '/srv/reports' and report.report_dir('/x') == '/x'


def test_report_inputs_read_two_days_when_the_decision_used_one(tmp_path):
    """scaling.report_inputs: the decision's own series when its window already covers two days; else the store is
    read again for the last two days (the forecasts are passed through, never recomputed)."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling
    from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling.history import SQLiteHistoryStore
    end = NOW // STEP * STEP
    points = []
    for i in range(3 * DAY // STEP):
        ts = end - i * STEP
        for name in ('shop-web-1', 'shop-web-2'):
            points += [('shop/web/{0}/cpu_cores'.format(name), ts, 0.5), ('shop/web/{0}/cpu'.format(name), ts, 0.25)]
    entry = {'service': 'web', 'shadow': None, 'horizon_seconds': 900}
    with SQLiteHistoryStore(str(tmp_path / 'h.sqlite')) as store:
        store.append(points)
        used_end, metrics, dummy = scaling.service_series(store, 'shop', 'web', None, NOW - DAY, NOW)
        assert len(metrics['cpu']['demand']) == DAY // STEP + 1
        out = scaling.report_inputs(store, 'shop', 'web', entry, NOW, DAY, metrics, used_end, {'cpu': {'mean': [1]}})
        assert out['end'] == used_end == end and out['horizon'] == 900 and out['forecasts'] == {'cpu': {'mean': [1]}}
        assert len(out['series']['cpu']) == 2 * DAY // STEP + 1 and out['series']['cpu'][-1] == pytest.approx(1.0)
        same = scaling.report_inputs(store, 'shop', 'web', entry, NOW, 3 * DAY, metrics, used_end, {})
        assert same['series']['cpu'] is metrics['cpu']['demand']


def test_the_header_says_the_run_settings_in_words():
    rows = report.run_settings(604800, 0.3)
    assert rows['history window'] == '7d (604800 s)'
    assert rows['interval level'].startswith('30% (')
    assert report.run_settings(5400, 0.8)['history window'] == '1h30m (5400 s)'


SPANS = [(60, 'last minute'), (120, 'last 2 minutes'), (70 * 60, 'last 70 minutes'), (5 * 3600, 'last 5 hours'),
         (2 * 86400, 'last 2 days')]


@pytest.mark.parametrize('seconds, text', SPANS)
def test_the_panel_span_in_words(seconds, text):
    step = 60
    times = [i * step for i in range(int(seconds // step))]
    assert report._span(times, step) == text


def test_infinities_in_a_series_are_gaps_and_the_plot_renders():
    """A series with infinities (a broken exporter upstream) made matplotlib refuse the axis limits ("Axis limits
    cannot be NaN or Inf") and the whole report fail; they are gaps now, as NaN was."""
    pytest.importorskip('matplotlib')
    d, used = decision_and_used(1.0)
    series = used['series']['cpu']
    series[-10] = float('inf')
    series[-20] = float('-inf')
    series[-30] = float('nan')
    p = report.service_panel(d, used, NOW)
    cpu, = p['metrics']
    assert cpu['values'][-10] is None and cpu['values'][-20] is None and cpu['values'][-30] is None
    assert cpu['zoom_top'] == pytest.approx(1.08 * 0.7 * 2 * 2)     # the high line, the highest drawn, not infinity
    assert report.render_plot(p)[:8] == b'\x89PNG\r\n\x1a\n'

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HTML scaling report: one self-contained file per run, one plot per service.

Three layers, so that the part that decides what is shown can be tested without matplotlib or a browser:

* data (pure): :func:`service_panel` turns one decision and what the decision used (the history on the
  one-minute grid, the full forecasts; collected by ``scaling.forecast_plan(report=...)``) into plain lists in
  display units: the last two days of each metric, the forecast mean and interval over the horizon, the
  ``high``/``low`` thresholds as capacity lines for the current size and ``high`` for the decided one.
* rendering: :func:`render_plot` (matplotlib, imported lazily; the Agg canvas, no pyplot, no display) makes one
  PNG per service; :func:`render_html` puts the run's metadata, an index of the services and their decisions, the
  plots (base64 ``data:`` URIs) and the decision lines into one HTML file that loads nothing from anywhere.
  Without matplotlib the report is still written: the decisions and lines, and a note naming the missing library
  and how to install it in place of the plots.
* files: :func:`write_report` writes ``report-<UTC time>.html`` atomically, updates ``latest.html`` (a copy, also
  atomic: it works where symlinks do not, e.g. a web server or an artifact store that does not follow them) and
  keeps the newest ``keep`` reports.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import math
import os
import re
import sys
import tempfile
import traceback
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import units
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy as policy_utils

REPORT_HISTORY_SECONDS = 2 * 86400
ZOOM_SECONDS = 3 * 3600
# The policy's interval is narrow (its default level is 0.3); the report draws this wider one around it, so that a
# reader sees how uncertain the forecast is (forecast_series' ``bands``).
OUTER_LEVEL = 0.8
DEFAULT_KEEP = 10
DEFAULT_DIR = os.path.join('~', '.local', 'share', 'shadownet', 'reports')
DIR_ENV = 'SHADOWNET_REPORT_DIR'
LATEST = 'latest.html'
NAME = re.compile(r'^report-(\d{8}T\d{6}Z)(?:-(\d+))?\.html$')

# Display units: the policy's demand is the total of the primaries in cores, MiB and bits/s.
UNITS = {'cpu': ('cores', 1.0), 'memory': ('GiB', 1024.0), 'net': ('Mbit/s', 1e6)}
TITLES = {'cpu': 'CPU', 'memory': 'Memory', 'net': 'Network (the busier direction)'}
ORDER = ('cpu', 'memory', 'net')

# One figure: WIDTH x (HEAD + ROW per metric) inches at DPI (1000 px wide).
DPI = 100
WIDTH = 12.0
ROW = 2.8
HEAD = 0.9
COLOURS = {'history': '#1f4e9c', 'forecast': '#d6336c', 'band': '#f4a3c0', 'high': '#c92a2a', 'low': '#2b8a3e',
           'decided': '#e67700', 'capacity': '#868e96', 'now': '#495057'}


class MissingPlotLibrary(ImportError):
    """matplotlib is not installed: the report is written without plots, with this message in their place."""

    def __init__(self, library: str, exc: BaseException):
        super().__init__(missing_message(library))
        self.library = library
        self.traceback = ''.join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def missing_message(library: str = 'matplotlib') -> str:
    return ('The plots need the Python library {0}, which is not installed for {1} on the host that made this '
            'report. Install it there ("{1} -m pip install {0}", or add it to the execution environment: it is '
            'listed in the collection\'s requirements.txt as optional); the decisions below are complete without '
            'it.'.format(library, sys.executable or 'python3'))


# ------------------------------------------------------------------------------------------------ data

def report_dir(option: str | None = None) -> str:
    """The report directory: the option, else SHADOWNET_REPORT_DIR, else ~/.local/share/shadownet/reports."""
    return os.path.expanduser(option or os.environ.get(DIR_ENV) or DEFAULT_DIR)


def _finite(value):
    """A value to plot: not a gap (None), not NaN, not an infinity (matplotlib refuses an infinite axis limit)."""
    return value is not None and math.isfinite(value)


def _history(values, end, step, now, seconds, scale):
    """``(times, values)`` of the last ``seconds`` of one series (oldest first, gaps as None), in display units."""
    values = list(values or [])
    if end is None or not values:
        return [], []
    first = len(values) - 1 - int((end - (now - seconds)) // step)
    first = max(0, first)
    while first < len(values) and not _finite(values[first]):
        first += 1                                  # the grid starts before the history does
    times, out = [], []
    for i in range(first, len(values)):
        times.append(end - (len(values) - 1 - i) * step)
        out.append(float(values[i]) / scale if _finite(values[i]) else None)
    return times, out


def _size(decision: dict[str, t.Any], which: str) -> dict[str, t.Any] | None:
    """The service's size in the decision: ``current``, ``target`` (decided) or ``wanted`` (held by a cooldown);
    ``{'instances': n}`` plus ``cores``/``memory`` per instance in vertical mode. None when there is none."""
    current = dict(decision.get('current') or {})
    current.setdefault('instances', decision.get('instances'))
    if which == 'current':
        return current
    other = decision.get(which)
    if not other:
        return None
    size = dict(current, **dict((k, v) for k, v in other.items() if k in ('instances', 'cores', 'memory')))
    return size if size != current else None


def capacity(metric: str, size: dict[str, t.Any], cap: float | None, vertical: bool) -> tuple[float, str]:
    """``(capacity in the demand's unit, words)`` of a size for one metric: instances x capacity per instance;
    vertical mode sizes cpu and memory by the instance's cores and MiB."""
    n = int(size.get('instances') or 0)
    if vertical and metric == 'cpu' and size.get('cores'):
        return n * float(size['cores']), '{0} x {1} cores'.format(n, size['cores'])
    if vertical and metric == 'memory' and size.get('memory'):
        return n * float(size['memory']), '{0} x {1} MiB'.format(n, size['memory'])
    return n * float(cap or 1.0), '{0} instance{1}'.format(n, '' if n == 1 else 's')


def metric_panel(metric: str, signal: dict[str, t.Any], series: list[float | None] | None,
                 forecast: dict[str, t.Any] | None, end: float | None, horizon: float, now: float,
                 decision: dict[str, t.Any], history_seconds: float = REPORT_HISTORY_SECONDS) -> dict[str, t.Any]:
    """One metric's plot data in display units.

    ``signal`` is the policy's signal for the metric (``high``/``low`` per instance in the demand's unit and
    ``capacity`` per instance, None for absolute thresholds such as net); ``series`` the total demand of the
    primaries on the grid that ends at ``end``; ``forecast`` the policy's forecast of it (``mean``/``lower``/
    ``upper``, ``start``, ``step_seconds``). Lines: ``high`` and ``low`` at the current size, ``high`` at the
    decided size (or at the size a cooldown holds back).
    """
    unit, scale = UNITS.get(metric, ('', 1.0))
    step = float((forecast or {}).get('step_seconds') or signal.get('step_seconds') or 60)
    times, values = _history(series, end, step, now, history_seconds, scale)
    panel = dict(metric=metric, title=TITLES.get(metric, metric), unit=unit, times=times, values=values,
                 forecast=None, hindcast=_hindcast((forecast or {}).get('hindcast'), end, step, times, scale),
                 lines=[], now=now, end=end, span=_span(times, step))
    if forecast and forecast.get('mean'):
        k = min(policy_utils.steps(horizon, step), len(forecast['mean']))
        start = float(forecast.get('start', (end if end is not None else now) + step))
        panel['forecast'] = dict(
            times=[start + i * step for i in range(k)], model=forecast.get('model'), level=forecast.get('level'),
            mean=[float(v) / scale for v in forecast['mean'][:k]],
            lower=[float(v) / scale for v in forecast['lower'][:k]],
            upper=[float(v) / scale for v in forecast['upper'][:k]], outer=None)
        wider = [b for b in forecast.get('bands') or () if b.get('level', 0) > (forecast.get('level') or 0)]
        if wider:
            band = max(wider, key=lambda b: b['level'])
            panel['forecast']['outer'] = dict(level=band['level'], lower=[float(v) / scale for v in band['lower'][:k]],
                                              upper=[float(v) / scale for v in band['upper'][:k]])
    if signal.get('high') is not None and signal.get('low') is not None:
        _lines(panel, metric, signal, decision, scale)
    return _zoom(panel, horizon)


def _hindcast(hindcast, end, step, times, scale):
    """The forecast against what happened: forecast_series' ``hindcast`` (what the forecast said ``lead`` steps
    before each point of the last day; its last value is for the series' last point, at ``end``) as ``times``,
    ``values`` (display units) and ``lead_seconds``, where the panel has history; None without one."""
    if not hindcast or not hindcast.get('mean') or end is None or not times:
        return None
    made = hindcast['mean']
    pts = [(end - (len(made) - 1 - i) * step, v) for i, v in enumerate(made)]
    pts = [(x, v) for x, v in pts if x >= times[0]]
    if not any(_finite(v) for x, v in pts):
        return None
    return dict(lead_seconds=float(hindcast['lead']) * step, times=[x for x, v in pts],
                values=[float(v) / scale if _finite(v) else None for x, v in pts])


def _lead_text(seconds):
    """'20 min', '2 h': how long before each point the hindcast's forecast was made."""
    return '{0:g} min'.format(round(seconds / 60.0, 1)) if seconds < 2 * 3600 else '{0:g} h'.format(
        round(seconds / 3600.0, 1))


def _span(times, step):
    """'last 2 days', 'last 70 minutes', 'last minute': how much history the panel shows."""
    if not times:
        return 'no history'
    seconds = times[-1] - times[0] + step
    if seconds >= 2 * 86400 - step:
        return 'last 2 days'
    if seconds >= 3 * 3600:
        return 'last {0:.0f} hours'.format(seconds / 3600.0)
    minutes = round(seconds / 60.0)
    return 'last minute' if minutes <= 1 else 'last {0:.0f} minutes'.format(minutes)


def run_settings(history_window, level):
    """The report header's rows for the run's settings, in words: the history window as a duration (and in seconds,
    as the option takes it) and the interval level whose upper bound the policy sizes by."""
    return {'history window': '{0} ({1} s)'.format(units.format_duration(history_window), history_window),
            'interval level': '{0:g}% (the policy sizes by the upper bound of this forecast interval)'.format(
                round(100.0 * float(level), 1))}


def _zoom(panel, horizon):
    """The close-up: from ``zoom_start`` (the last ZOOM_SECONDS, or 8 horizons) to the end of the forecast, and a
    y range that holds what is visible there (the observed values, the forecast band, the lines)."""
    end = panel['end']
    panel['zoom_start'] = None if end is None else end - max(ZOOM_SECONDS, 8 * float(horizon or 0))
    if panel['zoom_start'] is not None and panel['times']:
        panel['zoom_start'] = max(panel['zoom_start'], panel['times'][0])   # a short history: start where it does
    seen = [v for x, v in zip(panel['times'], panel['values']) if v is not None and x >= (panel['zoom_start'] or 0)]
    if panel['forecast']:
        seen += (panel['forecast']['outer'] or panel['forecast'])['upper']
    if panel['hindcast']:
        seen += [v for x, v in zip(panel['hindcast']['times'], panel['hindcast']['values'])
                 if v is not None and x >= (panel['zoom_start'] or 0)]
    seen += [ln['value'] for ln in panel['lines']]
    panel['zoom_top'] = 1.08 * max(seen) if seen and max(seen) > 0 else 1.0
    return panel


def _lines(panel, metric, signal, decision, scale):
    """The threshold lines of a metric panel (see metric_panel)."""
    cap = signal.get('capacity')
    vertical = decision.get('mode') == 'vertical'
    # The policy's high/low are per instance of today's size; as a fraction of capacity they hold for any size.
    high = float(signal['high']) / float(cap or 1.0)
    low = float(signal['low']) / float(cap or 1.0)
    words = ((lambda fr: '{0:.0f}% of capacity'.format(100 * fr)) if cap
             else (lambda fr: '{0} per instance'.format(_fmt_abs(fr, metric))))
    total, name = capacity(metric, _size(decision, 'current'), cap, vertical)
    panel['lines'].append(dict(kind='high', value=high * total / scale, label='high {0} x {1}'.format(words(high), name)))
    panel['lines'].append(dict(kind='low', value=low * total / scale, label='low {0} x {1}'.format(words(low), name)))
    for which, kind, note in (('target', 'decided', 'decided'), ('wanted', 'wanted', 'wanted, held by cooldown')):
        size = _size(decision, which)
        if size is None:
            continue
        other, other_name = capacity(metric, size, cap, vertical)
        if other != total:
            panel['lines'].append(dict(kind=kind, value=high * other / scale,
                                       label='high x {0} ({1})'.format(other_name, note)))
            break


def _fmt_abs(value, metric):
    unit, scale = UNITS.get(metric, ('', 1.0))
    return '{0:g} {1}'.format(round(value / scale, 3), unit).strip()


def status(decision: dict[str, t.Any], check_mode: bool = False) -> str:
    """What became of the decision: 'acts', 'what-if' (forecast-only or check mode) or 'no change'."""
    if decision.get('action', 'none') == 'none':
        return 'no change'
    if decision.get('forecast_only') or not decision.get('act'):
        return 'what-if'
    return 'what-if (check mode)' if check_mode else 'acts'


def service_panel(decision: dict[str, t.Any], used: dict[str, t.Any] | None, now: float,
                  check_mode: bool = False, history_seconds: float = REPORT_HISTORY_SECONDS) -> dict[str, t.Any]:
    """Everything the report shows for one service, as plain data.

    ``decision`` is the forecast module's decision; ``used`` what it was made from (``scaling.forecast_plan``'s
    ``report`` collector: ``series`` {metric: demand list}, ``end``, ``forecasts`` {metric: the policy's full
    forecast}, ``horizon``), None when the service had no history or no VMs (the panel then has no metrics).
    """
    used = used or {}
    signals = dict((s['metric'], s) for s in decision.get('signals') or [])
    series = used.get('series') or {}
    forecasts = used.get('forecasts') or {}
    metrics = [m for m in ORDER if m in series or m in forecasts] + \
        sorted(m for m in set(series) | set(forecasts) if m not in ORDER)
    panels = [metric_panel(m, signals.get(m, {}), series.get(m), forecasts.get(m), used.get('end'),
                           float(used.get('horizon') or 0), now, decision, history_seconds) for m in metrics]
    target = _size(decision, 'target')
    wanted = _size(decision, 'wanted')
    return dict(
        id=re.sub(r'[^A-Za-z0-9_-]+', '-', '{0}-{1}'.format(decision.get('template'), decision.get('service'))),
        template=decision.get('template'), service=decision.get('service'), mode=decision.get('mode'),
        action=decision.get('action', 'none'), status=status(decision, check_mode),
        current=_size_label(decision, _size(decision, 'current')),
        decided=_size_label(decision, target) if target else _size_label(decision, _size(decision, 'current')),
        wanted=_size_label(decision, wanted) if wanted else None,
        reason=decision.get('reason', ''), line=decision.get('line') or decision.get('reason', ''),
        blocked_by=decision.get('blocked_by'), metrics=panels, backtest=_backtest_text(panels),
        models=dict((m, _model_label(forecasts[m], (decision.get('forecast') or {}).get(m) or {}))
                    for m in metrics if forecasts.get(m)))


def _backtest_text(panels):
    """What the dashed line of a service's plots shows, in words (None when no plot has one)."""
    hc = next((m['hindcast'] for m in panels if m.get('hindcast')), None)
    if hc is None:
        return None
    step = hc['times'][1] - hc['times'][0] if len(hc['times']) > 1 else 60
    return 'dashed line: what the forecast said {0} before each point of the {1}'.format(
        _lead_text(hc['lead_seconds']), _span(hc['times'], step))


def _model_label(forecast, summary):
    """The forecast's model, and how it did lately against the last value when the decision says so."""
    ratio = summary.get('relative_mae')
    model = forecast.get('model')
    if forecast.get('combiner') == 'median':
        model = '{0} (median)'.format(model)
    if ratio is None:
        return model
    return "{0} (recent error {1:.2f}x the last value's)".format(model, ratio)


def _size_label(decision, size):
    if size is None:
        return ''
    n = size.get('instances')
    if decision.get('mode') == 'vertical':
        return '{0} x {1} cores, {2} MiB'.format(n, size.get('cores'), size.get('memory'))
    return '{0} instance{1}'.format(n, '' if n == 1 else 's')


def run_meta(templates: list[str], decisions: list[dict[str, t.Any]], now: float, history: str,
             check_mode: bool = False, forecast_only: bool = False, **extra: t.Any) -> dict[str, t.Any]:
    """The run's metadata shown at the top: time, templates, mode (acting / forecast-only / check mode), history."""
    only = forecast_only or (bool(decisions) and all(d.get('forecast_only') for d in decisions))
    if only:
        mode = 'forecast-only (what-if: nothing is acted on)'
    elif check_mode:
        mode = 'check mode (what-if: nothing is written to PVE)'
    else:
        mode = 'acting (the scale step carries out decisions marked "acts")'
    meta = dict(time=now, time_text=_utc(now), templates=list(templates), mode=mode, history=history,
                what_if=bool(only or check_mode))
    meta.update(extra)
    return meta


def _utc(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc).strftime('%Y-%m-%d %H:%M:%S UTC')


# ------------------------------------------------------------------------------------------------ plots

def _matplotlib():
    """matplotlib's Figure and Agg canvas (no pyplot: no global state, no display), or MissingPlotLibrary."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        import matplotlib.dates as mdates
    except ImportError as exc:
        raise MissingPlotLibrary('matplotlib', exc)
    return Figure, FigureCanvasAgg, mdates


def figure_size(panel: dict[str, t.Any]) -> tuple[int, int]:
    """The PNG's size in pixels for a service panel (one row per metric)."""
    rows = max(1, len(panel['metrics']))
    return int(round(WIDTH * DPI)), int(round((HEAD + ROW * rows) * DPI))


def _dt(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


def render_plot(panel: dict[str, t.Any]) -> bytes:
    """One PNG for a service: a row per metric; left the last two days, right a close-up of the last hours and the
    forecast horizon (on two days the horizon is a few pixels wide). Times in UTC."""
    Figure, FigureCanvasAgg, mdates = _matplotlib()
    width, height = figure_size(panel)
    inches = height / float(DPI)
    fig = Figure(figsize=(width / float(DPI), inches), dpi=DPI)
    FigureCanvasAgg(fig)
    rows = panel['metrics'] or [None]
    axes = fig.subplots(len(rows), 2, sharex='col', squeeze=False, gridspec_kw={'width_ratios': [2.0, 1.0]})
    fig.suptitle('{0}/{1}: {2} -> {3}'.format(panel['template'], panel['service'], panel['current'], panel['decided']),
                 fontsize=12, fontweight='bold', x=0.01, ha='left')
    for (wide, close), m in zip(axes, rows):
        if m is None:
            wide.text(0.5, 0.5, 'no history for this service', ha='center', va='center', transform=wide.transAxes)
            wide.set_axis_off()
            close.set_axis_off()
            continue
        _plot_metric(wide, m, zoom=False)
        _plot_metric(close, m, zoom=True)
        close.legend(loc='upper left', bbox_to_anchor=(1.03, 1.0), fontsize=7.5, frameon=False)
    for ax in axes[-1]:
        locator = mdates.AutoDateLocator(tz=datetime.timezone.utc)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=datetime.timezone.utc))
        ax.set_xlabel('time (UTC)', fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.78, top=1 - 0.55 / inches, bottom=0.5 / inches, hspace=0.32, wspace=0.12)
    buf = io.BytesIO()
    fig.savefig(buf, format='png', dpi=DPI)
    return _smaller(buf.getvalue())


def _smaller(png):
    """The PNG with a 256-colour palette (about a third of the size; a plot has few colours). Pillow comes with
    matplotlib; without it the PNG stays as it is."""
    try:
        from PIL import Image
    except ImportError:
        return png
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert('RGB').quantize(colors=256).save(out, format='PNG', optimize=True)
    return out.getvalue() if out.tell() < len(png) else png


def _plot_metric(ax, m, zoom):
    fc = m['forecast']
    start = m['zoom_start'] if zoom else None
    if m['times']:
        pts = [(x, v) for x, v in zip(m['times'], m['values']) if start is None or x >= start]
        ax.plot([_dt(x) for x, v in pts], [float('nan') if v is None else v for x, v in pts],
                color=COLOURS['history'], linewidth=1.4 if zoom else 1.0, label='observed (total of the primaries)')
    hc = m.get('hindcast')
    if hc:
        pts = [(x, v) for x, v in zip(hc['times'], hc['values']) if start is None or x >= start]
        ax.plot([_dt(x) for x, v in pts], [float('nan') if v is None else v for x, v in pts],
                color=COLOURS['forecast'], linestyle='--', linewidth=0.9, alpha=0.8,
                label='forecast made {0} before (backtest)'.format(_lead_text(hc['lead_seconds'])))
    if fc:
        times = [_dt(x) for x in fc['times']]
        level = '{0:.0f}% '.format(100 * fc['level']) if fc.get('level') else ''
        if fc.get('outer'):
            ax.fill_between(times, fc['outer']['lower'], fc['outer']['upper'], color=COLOURS['band'], alpha=0.3,
                            linewidth=0, label='forecast {0:.0f}% interval'.format(100 * fc['outer']['level']))
        ax.fill_between(times, fc['lower'], fc['upper'], color=COLOURS['band'], alpha=0.7, linewidth=0,
                        label="forecast {0}interval, the policy's".format(level))
        ax.plot(times, fc['mean'], color=COLOURS['forecast'], linewidth=2.0,
                label='forecast mean ({0})'.format(fc.get('model') or '?'))
    styles = {'high': ('-', COLOURS['high']), 'low': ('--', COLOURS['low']), 'decided': ('-.', COLOURS['decided']),
              'wanted': (':', COLOURS['decided'])}
    for line in m['lines']:
        style, colour = styles.get(line['kind'], (':', COLOURS['capacity']))
        ax.axhline(line['value'], linestyle=style, color=colour, linewidth=1.3, label=line['label'])
    if m['end'] is not None:
        ax.axvline(_dt(m['end']), color=COLOURS['now'], linewidth=0.8, linestyle=':', label='newest data')
    if zoom:
        ax.set_title('last hours and the forecast', fontsize=9, loc='left', color='#495057')
        right = fc['times'][-1] if fc else (m['end'] or m['now'])
        if m['zoom_start'] is not None and right > m['zoom_start']:
            ax.set_xlim(_dt(m['zoom_start']), _dt(right))
        ax.set_ylim(0, m['zoom_top'])
    else:
        ax.set_title('{0}, {1}'.format(m['title'], m['span']), fontsize=10, loc='left')
        ax.set_ylabel(m['unit'], fontsize=9)
        ax.set_ylim(bottom=0)
        right = fc['times'][-1] if fc else (m['end'] or m['now'])
        if m['times'] and right > m['times'][0]:
            ax.set_xlim(_dt(m['times'][0]), _dt(right))
        if m['zoom_start'] is not None and m['end'] is not None:
            ax.axvspan(_dt(m['zoom_start']), _dt(right), color='#f1f3f5', linewidth=0, zorder=0,
                       label='shown on the right')
    ax.grid(True, color='#e9ecef', linewidth=0.6)
    ax.tick_params(labelsize=8)
    if not m['times'] and not fc:
        ax.text(0.5, 0.5, 'no data', ha='center', va='center', transform=ax.transAxes)


# ------------------------------------------------------------------------------------------------- html

CSS = '''
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#212529;margin:0;
background:#f8f9fa}
main{max-width:1060px;margin:0 auto;padding:18px 24px 40px}
h1{font-size:22px;margin:6px 0 4px}h2{font-size:18px;margin:0 0 6px}
.meta{color:#495057;margin:0 0 14px}.meta td{padding:1px 12px 1px 0;vertical-align:top}
table.index{border-collapse:collapse;width:100%;background:#fff;margin:8px 0 20px;box-shadow:0 1px 2px #0001}
table.index th,table.index td{text-align:left;padding:6px 8px;border-bottom:1px solid #dee2e6;vertical-align:top}
table.index th{background:#e9ecef;font-weight:600}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.scale_up{background:#ffe3e3;color:#a51111}.scale_down{background:#d3f9d8;color:#1b6e2a}.none{background:#e9ecef;color:#495057}
.whatif{background:#fff3bf;color:#7a5a00}
section.svc{background:#fff;padding:14px 16px;margin:0 0 18px;box-shadow:0 1px 2px #0001;border-radius:4px}
p.line{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:12.5px;background:#f1f3f5;padding:6px 8px;
border-radius:3px;overflow-wrap:anywhere}
.note{background:#fff3bf;border-left:4px solid #f08c00;padding:8px 12px;margin:10px 0}
img.plot{width:100%;height:auto;display:block}
small{color:#6c757d}
'''


def _e(value):
    return html.escape('' if value is None else str(value), quote=True)


def render_html(meta: dict[str, t.Any], panels: list[dict[str, t.Any]], images: dict[str, bytes],
                note: str | None = None) -> str:
    """The self-contained page: metadata, the index of services and decisions, then one section per service."""
    out = ['<!DOCTYPE html>', '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<title>shadownet scaling report {0}</title>'.format(_e(meta.get('time_text'))),
           '<style>{0}</style></head><body><main>'.format(CSS),
           '<h1>Scaling report</h1>', '<table class="meta">']
    rows = [('time', meta.get('time_text')), ('templates', ', '.join(meta.get('templates') or [])),
            ('run', meta.get('mode')), ('history', meta.get('history'))]
    rows += [(k, meta[k]) for k in ('history window', 'interval level', 'host') if meta.get(k) is not None]
    for key, value in rows:
        out.append('<tr><td>{0}</td><td>{1}</td></tr>'.format(_e(key), _e(value)))
    out.append('</table>')
    if note:
        out.append('<div class="note" id="missing-plots">{0}</div>'.format(_e(note)))
    out.append('<table class="index"><thead><tr><th>service</th><th>decision</th><th>now</th><th>decided</th>'
               '<th>outcome</th><th>reason</th></tr></thead><tbody>')
    for p in panels:
        decided = p['decided'] + (' (wanted {0})'.format(p['wanted']) if p.get('wanted') else '')
        out.append('<tr><td><a href="#{0}">{1}/{2}</a></td><td><span class="badge {3}">{4}</span></td>'
                   '<td>{5}</td><td>{6}</td><td>{7}</td><td>{8}</td></tr>'.format(
                       _e(p['id']), _e(p['template']), _e(p['service']), _e(_badge_class(p['action'])),
                       _e(p['action']), _e(p['current']), _e(decided), _outcome(p['status']), _e(p['reason'])))
    if not panels:
        out.append('<tr><td colspan="6">no services</td></tr>')
    out.append('</tbody></table>')
    for p in panels:
        out.append('<section class="svc" id="{0}"><h2>{1}/{2} <span class="badge {3}">{4}</span> {5}</h2>'.format(
            _e(p['id']), _e(p['template']), _e(p['service']), _e(_badge_class(p['action'])), _e(p['action']),
            _outcome(p['status'])))
        out.append('<p class="line decision">{0}</p>'.format(_e(p['line'])))
        png = images.get(p['id'])
        if png:
            width, height = figure_size(p)
            out.append('<img class="plot" alt="{0}" width="{1}" height="{2}" src="data:image/png;base64,{3}">'.format(
                _e('{0}/{1}: history, forecast and thresholds'.format(p['template'], p['service'])), width, height,
                base64.b64encode(png).decode('ascii')))
        elif not p['metrics']:
            out.append('<p><small>No plot: no history for this service.</small></p>')
        if p['models']:
            out.append('<p><small>forecast models: {0}; {1} mode{2}</small></p>'.format(
                _e(', '.join('{0} {1}'.format(k, v) for k, v in sorted(p['models'].items()))), _e(p['mode']),
                _e('; ' + p['backtest']) if p.get('backtest') else ''))
        out.append('</section>')
    out.append('<p><small>Made by shadownet.proxmox (forecast module). Thresholds are drawn as total capacity '
               'lines: a fraction of the capacity per instance times the number of instances. The dashed line is '
               'the forecast against what happened: what the same forecast said one horizon before each point of '
               'its calibration window, the last day or, with less than two days of history, the last half of it '
               '(its models fitted on what came before, its weights from the whole window).</small></p>')
    out.append('</main></body></html>')
    return '\n'.join(out) + '\n'


def _badge_class(action):
    return action if action in ('scale_up', 'scale_down') else 'none'


def _outcome(state):
    cls = 'whatif' if state.startswith('what-if') else ('scale_up' if state == 'acts' else 'none')
    return '<span class="badge {0}">{1}</span>'.format(cls, _e(state))


def build(meta: dict[str, t.Any], decisions: list[dict[str, t.Any]], used: dict[tuple[str, str], dict[str, t.Any]],
          now: float, check_mode: bool = False) -> tuple[str, str | None]:
    """``(html, note)``: the report of one run; note is the missing-matplotlib message (plots left out), or None."""
    panels = [service_panel(d, used.get((d.get('template'), d.get('service'))), now, check_mode) for d in decisions]
    images, note = {}, None
    try:
        for p in panels:
            if p['metrics']:
                images[p['id']] = render_plot(p)
    except MissingPlotLibrary as exc:
        images, note = {}, str(exc)
    return render_html(meta, panels, images, note), note


# ------------------------------------------------------------------------------------------------ files

def _atomic_write(path, data):
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix='.report-', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, 'wb') as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _age(name):
    found = NAME.match(name)
    return found.group(1), int(found.group(2) or 1)


def write_report(directory: str, text: str, now: float, keep: int = DEFAULT_KEEP) -> dict[str, t.Any]:
    """Write ``<directory>/report-<UTC time>.html`` and ``latest.html`` (both atomically) and keep the newest
    ``keep`` reports (0 keeps all). Returns ``{'path', 'latest', 'removed'}``."""
    if keep < 0:
        raise ValueError('report.keep must be 0 (keep every report) or a positive number, got {0}'.format(keep))
    try:
        return _write(directory, text, now, keep)
    except OSError as exc:
        raise OSError('report.dir {0}: {1} ({2}); set report.dir (or {3}) to a writable directory'.format(
            directory, exc.strerror or exc, exc.filename or directory, DIR_ENV))


def _write(directory, text, now, keep):
    os.makedirs(directory, exist_ok=True)
    stamp = datetime.datetime.fromtimestamp(now, tz=datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    name = 'report-{0}.html'.format(stamp)
    count = 1
    while os.path.exists(os.path.join(directory, name)):
        count += 1
        name = 'report-{0}-{1}.html'.format(stamp, count)
    path = os.path.join(directory, name)
    data = text.encode('utf-8')
    _atomic_write(path, data)
    latest = os.path.join(directory, LATEST)
    _atomic_write(latest, data)
    removed = []
    if keep:
        for old in sorted((n for n in os.listdir(directory) if NAME.match(n)), key=_age)[:-keep]:
            os.unlink(os.path.join(directory, old))
            removed.append(old)
    return dict(path=path, latest=latest, removed=removed)


def run_report(options: dict[str, t.Any], templates: list[str], decisions: list[dict[str, t.Any]],
               used: dict[tuple[str, str], dict[str, t.Any]], now: float, history: str, check_mode: bool = False,
               forecast_only: bool = False, **extra: t.Any) -> dict[str, t.Any]:
    """Build and write one run's report (the forecast module's ``report`` option: ``dir``, ``keep``).

    Returns ``{'path', 'latest', 'removed', 'note'}`` (note: the missing-matplotlib message, or None). Raises
    OSError / ValueError with a message naming ``report.dir`` / ``report.keep`` when the files cannot be written.
    """
    directory = report_dir(options.get('dir'))
    keep = DEFAULT_KEEP if options.get('keep') is None else int(options['keep'])
    meta = run_meta(templates, decisions, now, history, check_mode=check_mode, forecast_only=forecast_only, **extra)
    text, note = build(meta, decisions, used, now, check_mode=check_mode)
    out = write_report(directory, text, now, keep)
    out['note'] = note
    return out

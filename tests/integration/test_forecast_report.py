"""The forecast module's HTML report against the simulator, opened in a real headless browser (Chromium).

metrics -> forecast(report=...) on the injected rising load: the report file and latest.html, the last N kept, the
what-if report of check mode and forecast-only runs (no write to PVE), an unwritable directory (a warning, the
decisions still returned); then Chromium loads the file with the network cut off: the decision text is in the DOM,
the plots decode at their size, and the screenshot shows them (the observed series and the forecast band).
"""
import base64
import html
import html.parser
import io
import json
import os
import struct
import sys

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import report
from ansible_collections.shadownet.proxmox.plugins.modules import forecast, metrics
from lab import browser
from lab.modrun import run_module
from lab.shop import RISING, SCALED_SHOP as TEMPLATE, build, inject, plan_of


@pytest.fixture
def rising(pvesim, pve_conn, tmp_path):
    """The scaled shop built, a rising load injected, and the history filled by the metrics step."""
    plan = plan_of(TEMPLATE)
    inject(pvesim, build(pvesim, pve_conn, plan), RISING)
    history = str(tmp_path / 'h.sqlite')
    run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=history))
    return plan, history


def run_forecast(pve_conn, plan, history, report, check_mode=False, **extra):
    return run_module(forecast, dict(pve_conn, plans={'shop': plan}, history_path=history, report=report, **extra),
                      check_mode=check_mode)


class Page(html.parser.HTMLParser):
    """The text and the images of a DOM."""

    def __init__(self):
        super().__init__()
        self.text, self.images = [], []

    def handle_starttag(self, tag, attrs):
        if tag == 'img':
            self.images.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def png_size(data):
    assert data[:8] == b'\x89PNG\r\n\x1a\n', data[:16]
    return struct.unpack('>II', data[16:24])


def test_report_files_keep_and_no_series_in_the_result(pvesim, pve_conn, rising, tmp_path):
    plan, history = rising
    target = tmp_path / 'reports'
    first = run_forecast(pve_conn, plan, history, {'dir': str(target), 'keep': 2})
    decision = first['decisions'][0]
    assert decision['action'] == 'scale_up', decision['reason']
    path = first['report_path']
    assert os.path.dirname(path) == str(target) and os.path.basename(path).startswith('report-')
    assert first['report_latest'] == str(target / 'latest.html')
    text = open(path, encoding='utf-8').read()
    assert open(first['report_latest'], encoding='utf-8').read() == text
    assert html.escape(decision['line'], quote=True) in text and 'data:image/png;base64,' in text
    # The series and the full forecasts stay in the process: the result only has the summary.
    assert len(json.dumps(first)) < 20000 and 'mean' not in decision['forecast']['cpu']
    assert not first['changed'] and not first.get('warnings')
    for dummy in range(2):
        last = run_forecast(pve_conn, plan, history, {'dir': str(target), 'keep': 2})
    names = sorted(f for f in os.listdir(target) if f.startswith('report-'))
    assert len(names) == 2 and os.path.basename(last['report_path']) in names
    assert os.path.basename(path) not in names


def test_check_mode_and_forecast_only_write_a_what_if_report_and_nothing_to_pve(pvesim, pve_conn, rising, tmp_path):
    plan, history = rising
    mark = pvesim.mark()
    checked = run_forecast(pve_conn, plan, history, {'dir': str(tmp_path / 'r1')}, check_mode=True)
    assert checked['decisions'][0]['act'] and 'check mode (what-if' in open(checked['report_path']).read()
    only = run_forecast(pve_conn, plan, history, {'dir': str(tmp_path / 'r2')}, forecast_only=True)
    text = open(only['report_path']).read()
    assert not only['decisions'][0]['act'] and 'forecast-only (what-if' in text
    assert '<span class="badge whatif">what-if</span>' in text and '[forecast-only: not acted on]' in text
    assert pvesim.writes(mark) == []


def test_an_unwritable_report_directory_is_a_warning_and_the_decisions_stand(pvesim, pve_conn, rising, tmp_path):
    plan, history = rising
    blocker = tmp_path / 'a-file'
    blocker.write_text('x')
    out = run_forecast(pve_conn, plan, history, {'dir': str(blocker / 'reports')})
    assert out['report_path'] is None and out['decisions'][0]['action'] == 'scale_up'
    warnings = str(out.get('warnings'))      # plain strings or ansible-core 2.19+'s warning summaries
    assert 'report not written: report.dir ' + str(blocker / 'reports') in warnings, warnings


def test_without_matplotlib_the_module_warns_and_writes_the_report_without_plots(pvesim, pve_conn, rising, tmp_path,
                                                                               monkeypatch):
    plan, history = rising
    # As on a host without matplotlib: None in sys.modules makes every `import matplotlib...` raise ImportError.
    for name in [n for n in sys.modules if n == 'matplotlib' or n.startswith('matplotlib.')] + ['matplotlib']:
        monkeypatch.setitem(sys.modules, name, None)
    out = run_forecast(pve_conn, plan, history, {'dir': str(tmp_path / 'reports')})
    assert out['decisions'][0]['action'] == 'scale_up'
    warnings = str(out.get('warnings'))
    assert 'The plots need the Python library matplotlib' in warnings and 'pip install matplotlib' in warnings
    text = open(out['report_path'], encoding='utf-8').read()
    assert 'id="missing-plots"' in text and '<img' not in text
    assert html.escape(out['decisions'][0]['line'], quote=True) in text


@pytest.mark.skipif(browser.chromium() is None, reason='Chromium is not installed (scripts/setup-system.sh installs it)')
def test_the_report_in_a_headless_browser(pvesim, pve_conn, rising, tmp_path):
    Image = pytest.importorskip('PIL.Image')   # Pillow: a dependency of matplotlib
    plan, history = rising
    out = run_forecast(pve_conn, plan, history, {'dir': str(tmp_path / 'reports')})
    decision = out['decisions'][0]
    dom, shot = browser.load(out['report_latest'], tmp_path)

    page = Page()
    page.feed(dom)
    text = ' '.join(' '.join(page.text).split())
    assert 'Scaling report' in text and 'shop/web' in text and 'scale_up' in text
    assert ' '.join(decision['line'].split()) in text
    assert ' '.join(decision['reason'].split()) in text
    assert '2 instances' in text and '3 instances' in text
    # the forecast against what happened: the real forecaster's hindcast reached the plot, one horizon (15 minutes
    # at one-minute steps) before each point of the calibration window (half of the 70 minutes of history)
    assert 'dashed line: what the forecast said 15 min before each point of the last 21 minutes' in text, text
    plots = [img for img in page.images if img.get('src', '').startswith('data:image/png;base64,')]
    assert len(plots) == 1 == len(page.images)
    data = base64.b64decode(plots[0]['src'].split(',', 1)[1])
    assert png_size(data) == (int(plots[0]['width']), int(plots[0]['height']))
    assert png_size(data)[0] == 1200 and png_size(data)[1] > 600            # cpu, memory, net rows
    plot = Image.open(io.BytesIO(data)).convert('RGB')
    assert len(set(plot.getdata())) > 200                                  # not blank

    blue, pink, colours = plot_colours(Image, shot)
    assert colours > 200, 'the screenshot is (nearly) blank'
    # The plot is drawn in the page, not only present in the DOM: its colours (the observed series in blue, the
    # forecast in pink) are in the screenshot, and they are gone when the same page has a broken image.
    broken = tmp_path / 'broken' / 'latest.html'
    broken.parent.mkdir()
    broken.write_text(open(out['report_latest'], encoding='utf-8').read().replace('base64,iVBOR', 'base64,AAAA'))
    dummy, shot_broken = browser.load(str(broken), broken.parent)
    blue_broken, pink_broken, dummy = plot_colours(Image, shot_broken)
    assert blue > 400 and pink > 150, (blue, pink)
    assert blue_broken < 10 and pink_broken < 10, (blue_broken, pink_broken)


def near(pixel, colour, tolerance=20):
    want = [int(colour[i:i + 2], 16) for i in (1, 3, 5)]
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, want))


def plot_colours(Image, path):
    """(blue pixels, pink pixels, distinct colours) of a screenshot, which must be the window's size."""
    image = Image.open(path).convert('RGB')
    assert image.size == (1280, 2400)
    raw = image.tobytes()
    pixels = list(zip(raw[0::3], raw[1::3], raw[2::3]))
    blue = sum(1 for px in pixels if near(px, report.COLOURS['history']))
    pink = sum(1 for px in pixels if near(px, report.COLOURS['forecast']))
    return blue, pink, len(set(pixels))

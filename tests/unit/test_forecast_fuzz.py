# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""forecast_series on series the project does not have: random shapes (zeros, constants, noise, daily waves,
gaps, trailing gaps, spikes, steps, ramps, negative values, tiny and huge scales, NaN and infinities among the
values) at the step sizes the history backends give (60, 300, 1800 s), a fixed seed.

Whatever the shape, a forecast is finite and ordered (lower <= mean <= upper at every step, for the level and for
every band), the bands nest, a series that is never negative is not forecast below zero, and scaling the series
scales the forecast (from 1e-6 to 1e9).
"""
import math
import random

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import forecast as forecast_utils

pytest.importorskip('statsmodels')

SHAPES = ('zeros', 'constant', 'noise', 'daily', 'gaps', 'trailing_gap', 'spikes', 'step', 'ramp', 'negative',
          'non_numbers')


def _series(rnd, shape, step):
    n = rnd.choice((40, 300, int(2 * 86400 / step)))
    day = 86400.0 / step
    base = [0.5 + 0.3 * math.sin(2 * math.pi * i / day) + rnd.gauss(0, 0.05) for i in range(n)]
    if shape == 'zeros':
        return [0.0] * n
    if shape == 'constant':
        return [0.42] * n
    if shape == 'noise':
        return [abs(rnd.gauss(0.5, 0.2)) for dummy in range(n)]
    if shape == 'gaps':
        return [None if rnd.random() < 0.4 else v for v in base]
    if shape == 'trailing_gap':
        return base[:-5] + [None] * 5
    if shape == 'spikes':
        return [v * (8 if rnd.random() < 0.02 else 1) for v in base]
    if shape == 'step':
        return [v + (1.0 if i > n - 10 else 0.0) for i, v in enumerate(base)]
    if shape == 'ramp':
        return [v + 0.01 * max(0, i - (n - 60)) for i, v in enumerate(base)]
    if shape == 'negative':
        return [v - 1.0 for v in base]
    if shape == 'non_numbers':
        return [rnd.choice((float('nan'), float('inf'), float('-inf'))) if rnd.random() < 0.05 else v for v in base]
    return base


def _ordered(fc, horizon):
    rows = [(fc['lower'], fc['mean'], fc['upper'])] + [(b['lower'], fc['mean'], b['upper']) for b in fc['bands']]
    for lower, mean, upper in rows:
        assert len(lower) == len(mean) == len(upper) == horizon
        assert all(math.isfinite(x) for x in lower + mean + upper)
        assert all(lo <= m + 1e-9 and m <= up + 1e-9 for lo, m, up in zip(lower, mean, upper))


@pytest.mark.parametrize('step', (60, 300, 1800))
def test_any_series_gives_a_finite_ordered_forecast(step):
    rnd = random.Random(step)
    for shape in SHAPES:
        for dummy in range(2):
            values = _series(rnd, shape, step)
            horizon = rnd.choice((1, 5, 12))
            fc = forecast_utils.forecast_series(values, step, horizon, level=0.8, bands=(0.3, 0.5))
            _ordered(fc, horizon)
            band = dict((b['level'], b) for b in fc['bands'])
            for inner, outer in ((band[0.3], band[0.5]), (band[0.5], fc)):        # 30% inside 50% inside 80%
                assert all(a <= b + 1e-9 for a, b in zip(inner['upper'], outer['upper'])), (shape, step)
                assert all(a >= b - 1e-9 for a, b in zip(inner['lower'], outer['lower'])), (shape, step)
            seen = [v for v in values if v is not None and math.isfinite(v)]
            if min(seen) >= 0:
                assert min(fc['lower']) >= 0, (shape, step)


def test_a_unit_change_scales_the_forecast():
    """The same load in other units (bytes or MiB, a share or a percentage) is forecast the same (to 1e-4): it is
    fitted on the series scaled to a fixed standard deviation. Before that statsmodels' ETS and SES optimisers, which
    stop on absolute tolerances, made the forecast of this series scaled by 1000 0.05% off, by 1e-6 3.5%."""
    rnd = random.Random(5)
    for shape in ('daily', 'spikes', 'ramp', 'negative', 'gaps'):
        values = _series(rnd, shape, 300)
        one = forecast_utils.forecast_series(values, 300, 12, bands=(0.5,), hindcast_steps=3)
        for factor in (1e-6, 1e-3, 0.1, 10.0, 1e3, 1e6, 1e9):
            other = forecast_utils.forecast_series([None if v is None else v * factor for v in values], 300, 12,
                                                   bands=(0.5,), hindcast_steps=3)
            for key in ('mean', 'lower', 'upper'):
                assert other[key] == pytest.approx([v * factor for v in one[key]], rel=1e-4, abs=1e-9 * factor), \
                    (shape, factor, key)
            for side in ('lower', 'upper'):
                assert other['bands'][0][side] == pytest.approx([v * factor for v in one['bands'][0][side]],
                                                                rel=1e-4, abs=1e-9 * factor)
            assert other['backtest'] == pytest.approx(dict((k, v * factor) for k, v in one['backtest'].items()),
                                                      rel=1e-4)
            if one['hindcast'] is None:         # too short to calibrate
                assert other['hindcast'] is None
            else:
                pairs = list(zip(other['hindcast']['mean'], one['hindcast']['mean']))
                assert all((a is None) == (b is None) for a, b in pairs)
                assert [a for a, b in pairs if b is not None] == \
                    pytest.approx([b * factor for a, b in pairs if b is not None], rel=1e-4, abs=1e-9 * factor)
            assert (other['model'], other['members'], other['combiner']) == \
                (one['model'], one['members'], one['combiner'])

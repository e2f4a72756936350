# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/policy_sim.py's resampling of the series: how far each ratio depends on which series a data set
holds (the margin a figure needs on series the project does not have)."""
import math

import pytest

from lab import benchmarks


@pytest.fixture(scope='module')
def sim():
    return benchmarks.load('policy_sim')


def result(under, units, actions=4):
    return {'under_min': under, 'avg_units': units, 'actions': actions}


def tt_curve_of(n):
    """Target tracking at two targets: short 50 minutes per series at 3 units, never short at 20."""
    return [[result(50, 3.0, 10)] * n, [result(0, 20.0, 10)] * n]


def test_one_costly_series_spreads_the_capacity_ratio(sim):
    seed = [result(100, 4.0)] * 4
    pol = [result(0, 4.0)] * 3 + [result(0, 12.0)]       # the whole ratio of 1.5x is one series' doing
    spread = sim.resampled(seed, pol, tt_curve_of(4))
    lo, hi, miss = spread['cap_vs_seed']
    assert lo == pytest.approx(1.0)                        # draws without that series: the same capacity
    assert hi >= 2.0                                       # draws with it twice or more
    # a draw holding it at least once (1 - (3/4)^4 = 68% of them) is at 1.5x or above, over the 1.40x target
    assert 0.6 < miss < 0.77
    assert spread['under_vs_seed'][:2] == (-100.0, -100.0)
    assert spread['under_vs_tt'][:2] == (-100.0, -100.0)  # never short, target tracking always is
    assert spread['actions_vs_seed'] == (1.0, 1.0, 0.0)


def test_equal_rules_give_equal_ratios_in_every_draw(sim):
    rows = [result(10 * (i + 1), 4.0 + 0.5 * i, 3 + i) for i in range(6)]
    spread = sim.resampled(rows, rows, tt_curve_of(6), draws=200)
    assert spread['cap_vs_seed'] == (1.0, 1.0, 0.0)
    assert spread['under_vs_seed'] == (0.0, 0.0, 1.0)      # 0% fewer minutes misses the -50% target every time


def test_no_minutes_on_either_side_is_no_ratio(sim):
    quiet = [result(0, 4.0)] * 3
    spread = sim.resampled(quiet, quiet, tt_curve_of(3), draws=50)
    lo, hi, miss = spread['under_vs_seed']                 # 0 against 0 in every draw: nothing to compare
    assert math.isnan(lo) and math.isnan(hi) and miss == 0.0   # no percentiles, no draw counted as a miss


def test_the_targets_are_written_once(sim, monkeypatch):
    assert sim.ratio_text('cap_vs_seed', 1.35) == 'capacity vs seed x1.35 (target <= x1.40)'
    assert sim.ratio_text('under_vs_tt', -56.24) == 'under vs target tracking -56.2% (target <= -30.0%)'
    seed, pol = [result(100, 4.0)] * 4, [result(0, 4.0)] * 3 + [result(0, 12.0)]
    assert sim.spread_text('cap_vs_seed', (1.0, 2.5, 0.68)) == 'capacity vs seed x1.00 .. x2.50 (68% of draws miss x1.40)'
    monkeypatch.setitem(sim.GOALS, 'cap_vs_seed', ('capacity vs seed', 'x%.2f', 3.5))   # looser: none misses
    assert sim.resampled(seed, pol, tt_curve_of(4))['cap_vs_seed'][2] == 0.0
    assert sim.ratio_text('cap_vs_seed', 1.35).endswith('(target <= x3.50)')

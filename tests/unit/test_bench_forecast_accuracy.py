# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""benchmarks/forecast_accuracy.py's ``--by-step``: relMAE at each horizon step, and the bound found with
hindsight for blending the forecast with the last value per step."""
import pytest

from lab import benchmarks


@pytest.fixture(scope='module')
def bench():
    return benchmarks.load('forecast_accuracy')


def test_by_step_scores_each_step_against_the_last_value(bench):
    points = [(0, 2.0, 1.0, 2.0),          # (step, forecast, last value, actual): exact, naive 1 off
              (1, 4.0, 2.0, 2.5)]          # 1.5 off, naive 0.5 off
    steps, bound = bench.by_step(points)
    assert steps == [0.0, 3.0]
    # with hindsight: a = 1 at step 0, a = 0.25 at step 1 (0.25 x 4 + 0.75 x 2 = 2.5): no error left
    assert bound == 0.0


def test_the_hindsight_blend_is_never_worse_than_either_end(bench):
    points = [(h % 3, 10.0 + h, 10.0 + (h % 2), 10.5 + 0.3 * h) for h in range(30)]
    steps, bound = bench.by_step(points)
    err = sum(abs(f - a) for dummy, f, dummy2, a in points)
    naive = sum(abs(last - a) for dummy, dummy2, last, a in points)
    assert len(steps) == 3
    assert 0.0 < bound <= min(err / naive, 1.0) + 1e-12

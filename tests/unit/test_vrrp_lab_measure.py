# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The failover harness's gap arithmetic (tests/lab/vrrp_lab.py measure), on made-up answer lists."""
from __future__ import annotations

from lab.vrrp_lab import measure


def _answers(*rows):
    return [tuple(r) for r in rows]


def test_gap_takeover_and_nobody_else():
    res = measure(_answers((9.99, 'primary', 1), (10.20, 'shadow', 40), (10.205, 'shadow', 41)), 10.0, 'shadow')
    assert round(res['gap'], 3) == 0.2 and round(res['takeover'], 3) == 0.2
    assert res['others_after'] == 0 and res['first'] == 10.20


def test_late_answers_to_the_old_owners_own_requests_are_not_two_owners():
    # The old owner's starved echo answers requests 30-32 (sent while it held the VIP) after the new owner
    # answered request 40: not a split. Its answer to request 41 is.
    late = _answers((10.20, 'shadow', 40), (10.21, 'primary', 30), (10.22, 'primary', 32), (10.23, 'shadow', 42))
    assert measure(late, 10.0, 'shadow')['others_after'] == 0
    split = late + [(10.24, 'primary', 41)]
    assert measure(split, 10.0, 'shadow')['others_after'] == 1


def test_never_answered():
    assert measure(_answers((10.1, 'primary', 5)), 10.0, 'shadow') == {
        'gap': None, 'takeover': None, 'others_after': None, 'first': None}

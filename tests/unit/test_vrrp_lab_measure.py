# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The failover harness's gap arithmetic (tests/lab/vrrp_lab.py measure), on made-up answers:
(received, responder, request number); request n is sent at 9.0 + n * 0.005."""
from __future__ import annotations

from lab.vrrp_lab import Answer, measure


def _answers(*rows):
    return [Answer(t, who, seq, 9.0 + seq * 0.005) for t, who, seq in rows]


def test_gap_takeover_and_nobody_else():
    res = measure(_answers((9.99, 'primary', 190), (10.20, 'shadow', 239), (10.205, 'shadow', 240)), 10.0, 'shadow')
    assert round(res['gap'], 3) == 0.2 and round(res['takeover'], 3) == 0.2
    assert res['others_after'] == 0 and res['first'] == 10.20


def test_late_answers_to_the_old_owners_own_requests_are_not_two_owners():
    # The old owner's starved echo answers requests 230-232 (sent while it held the VIP) after the new owner
    # answered request 239: not a split. Its answer to request 240 is.
    late = _answers((10.20, 'shadow', 239), (10.21, 'primary', 230), (10.22, 'primary', 232), (10.23, 'shadow', 241))
    assert measure(late, 10.0, 'shadow')['others_after'] == 0
    split = late + _answers((10.24, 'primary', 240))
    assert measure(split, 10.0, 'shadow')['others_after'] == 1


def test_a_late_answer_to_a_request_from_before_the_failure_is_not_the_takeover():
    # The new owner's reply to request 150 (sent at 9.75, before the failure at 10.0) waited in its kernel and
    # arrives at 10.10; the takeover is its first answer to a request sent after the failure.
    answers = _answers((10.10, 'primary', 150), (10.12, 'shadow', 223), (10.60, 'primary', 319))
    res = measure(answers, 10.0, 'primary')
    assert res['first'] == 10.60 and res['others_after'] == 0
    assert round(res['gap'], 3) == 0.48


def test_never_answered():
    assert measure(_answers((10.1, 'primary', 5)), 10.0, 'shadow') == {
        'gap': None, 'takeover': None, 'others_after': None, 'first': None}

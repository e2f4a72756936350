# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The stateless latency duration (issue 13 follow-up): the replay agent's per-minute roll-up (``recent`` in its
counters file, fake clock) and the canary's judgement of "p95 above the threshold for ``for``" from it."""
import json

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import replay
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import canary as canary_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy

T0 = 1700000000.0          # 20 s into a unix minute (1700000000 = 28333333 x 60 + 20)
LATENCY = {'p95_ms': 120, 'for': 180}


# --------------------------------------------------------------------------------------- the agent's roll-up

def counters_at(start):
    now = [start]
    return now, replay.Counters('http', '127.0.0.1:80', window_seconds=60, clock=lambda: now[0])


def test_recent_rolls_whole_unix_minutes_up_and_leaves_the_partial_first_minute_out():
    now, c = counters_at(T0)                       # started 20 s into a minute (T0 % 60 == 20)
    first = int(T0) // 60 * 60 + 60                # the first whole minute after the start
    for v in [0.01] * 10:
        c.observe(v)                               # in the partial minute: not reported
    assert c.snapshot()['recent'] == []
    now[0] = first + 5
    for v in [0.002] * 95 + [0.3] * 5:
        c.observe(v)
    c.error('timeout')
    now[0] = first + 59.9
    assert c.snapshot()['recent'] == []            # the minute is not over yet
    now[0] = first + 60
    doc = c.snapshot()
    assert doc['recent'] == [{'end': first + 60, 'requests': 100, 'errors': 1,
                              'latency_p95_seconds': replay.quantile([0, 95, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0], 0.95)}]
    assert 0.001 <= doc['recent'][0]['latency_p95_seconds'] <= 0.0025
    # Quiet minutes are listed (0 requests, no p95): a missing minute means the agent was not running.
    now[0] = first + 3 * 60 + 30
    c.observe(0.2)
    now[0] = first + 4 * 60 + 1
    recent = c.snapshot()['recent']
    assert [m['end'] for m in recent] == [first + 60 * k for k in (1, 2, 3, 4)]
    assert [m['requests'] for m in recent] == [100, 0, 0, 1]
    assert recent[1] == {'end': first + 120, 'requests': 0, 'errors': 0, 'latency_p95_seconds': None}
    assert 0.1 < recent[3]['latency_p95_seconds'] <= 0.25
    json.dumps(c.snapshot())                       # JSON as it is


def test_recent_is_bounded_to_recent_minutes_and_prometheus_is_unchanged():
    now = [T0]
    c = replay.Counters('http', '127.0.0.1:80', clock=lambda: now[0], recent_minutes=60)
    for minute in range(200):
        now[0] = T0 + 60 * minute
        c.observe(0.05)
    doc = c.snapshot()
    assert len(doc['recent']) == 60 and len(c.minutes) <= 61
    assert doc['recent'][-1]['end'] == int(now[0]) // 60 * 60            # the last whole minute
    assert [m['end'] for m in doc['recent']] == list(range(doc['recent'][0]['end'], doc['recent'][-1]['end'] + 1, 60))
    assert [m['requests'] for m in doc['recent']] == [1] * 60
    assert len(json.dumps(doc['recent'])) < 60 * 100
    text = replay.prometheus_text(doc)
    assert 'recent' not in text and 'shadownet_replay_latency_seconds_count 200' in text


@pytest.mark.parametrize('value, ok', [(60, True), (1440, True), (59, False), (1441, False)])
def test_recent_minutes_is_validated(value, ok):
    raw = {'interface': 'eth1', 'port': 80, 'target_port': 8080, 'recent_minutes': value}
    if ok:
        assert replay.load_config(raw)['recent_minutes'] == value
    else:
        with pytest.raises(replay.ConfigError, match='recent_minutes'):
            replay.load_config(raw)
    assert replay.load_config({'interface': 'eth1', 'port': 80, 'target_port': 8080})['recent_minutes'] == 60


# ---------------------------------------------------------------------------- the canary's duration judgement

END = 1700000040           # a minute end


def doc(minutes, time_=None, recent=True):
    """A counters file: `minutes` is [(requests, p95 seconds or None)] oldest first, the newest ending at END;
    None in the list is a minute missing (the agent did not run)."""
    data = {'version': 1, 'time': float(time_ or END + 10), 'window_seconds': 60,
            'window': {'requests': 100, 'latency_p95_seconds': 0.2}}
    if recent:
        data['recent'] = [{'end': END - 60 * (len(minutes) - 1 - i), 'requests': m[0], 'errors': 0,
                           'latency_p95_seconds': m[1]} for i, m in enumerate(minutes) if m is not None]
    return canary_utils.parse_counters(json.dumps(data))


def judge(counters):
    return policy.latency_signal(LATENCY, canary_utils.recent_observations(counters), 2, END + 10)


@pytest.mark.parametrize('minutes, up, held', [
    ([(100, 0.2)] * 3, True, 180),                              # three whole minutes above: for 3m holds
    ([(100, 0.05)] * 7 + [(100, 0.2)] * 3, True, 180),
    ([(100, 0.2)] * 2, False, 120),                             # a short spike
    ([(100, 0.2), (100, 0.1), (100, 0.2), (100, 0.2)], False, 120),      # one minute under breaks the run
    ([(100, 0.2), None, (100, 0.2), (100, 0.2)], False, 120),   # a missing minute (agent down) breaks it
    ([(100, 0.2), (5, 0.9), (100, 0.2), (100, 0.2)], False, 120),        # too few requests to mean something
    ([(100, 0.2), (100, None), (100, 0.2)], False, 60),
    ([(20, 0.2)] * 3, True, 180),                               # exactly the minimum
    ([], False, 0),
])
def test_the_duration_is_every_minute_above_with_enough_requests(minutes, up, held):
    info = judge(doc(minutes))
    assert info['up'] is up and info['held_seconds'] == held, info
    if up:
        assert info['detail'] == 'canary p95 200 ms > 120 ms for 3 min' and info['needed'] == 3


def test_minutes_that_stop_short_of_the_file_time_do_not_hold():
    # The agent writes its file but its minutes end 5 minutes ago (a clock jump): no run reaches now.
    info = judge(doc([(100, 0.2)] * 5, time_=END + 300))
    assert not info['up'] and info['held_seconds'] == 0, info


def test_without_recent_the_canary_falls_back_to_the_store():
    assert canary_utils.recent_observations(doc([(100, 0.2)] * 3, recent=False)) is None
    assert doc([], recent=False)['recent'] is None
    assert doc([])['recent'] == []


def test_malformed_minutes_are_left_out_and_never_lengthen_a_run():
    data = {'version': 1, 'time': END + 5.0,
            'recent': [{'end': END - 120, 'requests': 100, 'latency_p95_seconds': 0.2}, 'garbage',
                       {'end': 'x', 'requests': 100}, {'end': END - 60, 'requests': -3, 'latency_p95_seconds': 0.2},
                       {'end': END, 'requests': 100, 'latency_p95_seconds': float('inf')}]}
    text = json.dumps(data).replace('Infinity', '1e999')
    c = canary_utils.parse_counters(text)
    assert [m['end'] for m in c['recent']] == [END - 120, END - 60, END]
    assert c['recent'][1]['requests'] == 0 and c['recent'][2]['p95_seconds'] is None
    assert not judge(c)['up']
    assert canary_utils.parse_counters(json.dumps(dict(data, recent={'end': 1})))['recent'] is None


def test_the_agent_file_drives_the_canary_end_to_end():
    """The agent's own snapshot, read by the canary: 3 busy slow minutes hold `for 3m`, a fourth fast one ends it."""
    now, c = counters_at(float(END - 4 * 60))
    for minute in range(3):
        now[0] = END - 4 * 60 + 60 * minute + 30
        for dummy in range(50):
            c.observe(0.4)
    now[0] = END - 60 + 10
    state = canary_utils.status(json.dumps(c.snapshot()), None, now[0], 30, 'shadow', '/p')
    assert state['live'] and len(state['counters']['recent']) == 3
    info = policy.latency_signal(LATENCY, canary_utils.recent_observations(state['counters']), 2, now[0])
    assert info['up'] and info['held_seconds'] == 180, info
    for dummy in range(50):
        c.observe(0.01)
    now[0] = END + 1
    state = canary_utils.status(json.dumps(c.snapshot()), None, now[0], 30, 'shadow', '/p')
    info = policy.latency_signal(LATENCY, canary_utils.recent_observations(state['counters']), 2, now[0])
    assert not info['up'] and info['held_seconds'] == 0, info

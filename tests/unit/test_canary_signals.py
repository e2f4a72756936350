# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The canary's pure parts: the template's shadow.replay and scaling.latency, the plan's canary entry, the shadow
signal's normalisation, the latency signal and the counters file."""
import json

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import template as template_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import canary as canary_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import policy

NOW = 1700000000.0


def tpl(replay=None, latency=None, critical=True):
    data = {
        'name': 'shop', 'nodes': ['pve1', 'pve2'],
        'networks': [{'name': 'front', 'cidr': '10.10.0.0/24'}],
        'services': [{'name': 'web', 'template': 9000, 'instances': 2, 'cores': 4, 'memory': 4096,
                      'critical': critical}],
        'shadow': {'replication': {'paths': ['/srv']}},
    }
    if replay is not None:
        data['shadow']['replay'] = replay
    if latency is not None:
        data['scaling'] = {'latency': latency}
    return data


def messages(data):
    return [(i.path, i.message) for i in template_utils.validate_template(data, source='t.yml')[1]]


# ---------------------------------------------------------------------------------------------- template, plan

def test_replay_and_latency_defaults_and_plan_entry():
    tpl_n = template_utils.normalise_template(tpl(replay={'port': 8080}, latency={'p95_ms': 120}))
    assert tpl_n['shadow']['replay'] == {'mode': 'http', 'port': 8080, 'target_port': None, 'methods': 'safe',
                                         'concurrency': 16, 'stats_path': '/run/shadownet-replay/stats.json',
                                         'stats_interval': 5.0}
    assert tpl_n['scaling']['latency'] == {'p95_ms': 120.0, 'for': 180.0}
    entry = plan_utils.build_plan(tpl_n)['scaling'][0]
    assert entry['latency'] == {'p95_ms': 120.0, 'for_seconds': 180.0}
    assert entry['canary'] == {'shadow': 'shop-web-shadow', 'mode': 'http', 'port': 8080, 'target_port': 8080,
                               'methods': 'safe', 'concurrency': 16, 'stats_path': '/run/shadownet-replay/stats.json',
                               'stats_interval_seconds': 5.0, 'stale_after_seconds': 30}


def test_no_replay_port_no_canary_and_a_warning_for_the_latency_threshold():
    plan = plan_utils.plan_from_template(tpl(latency={'p95_ms': 100}))[1]
    assert plan['scaling'][0]['canary'] is None
    assert 'service web: scaling.latency.p95_ms is set but its shadow replays nothing (set shadow.replay.port): no ' \
           'latency signal' in plan['warnings']
    assert not any('latency' in w for w in plan_utils.plan_from_template(tpl(latency={'p95_ms': 100},
                                                                             critical=False))[1]['warnings'])
    plan = plan_utils.plan_from_template(tpl(replay={'port': 80, 'stats_interval': '20s'}, critical=False))[1]
    assert plan['scaling'][0]['canary'] is None and plan['scaling'][0]['latency']['p95_ms'] is None
    tpl_n = template_utils.normalise_template(tpl(replay={'port': 80, 'target_port': 8080, 'stats_interval': '20s'}))
    entry = plan_utils.build_plan(tpl_n)['scaling'][0]['canary']
    assert entry['target_port'] == 8080 and entry['stale_after_seconds'] == 80


def test_a_service_overrides_the_template_wide_replay():
    data = tpl(replay={'mode': 'http', 'port': 80})
    data['services'].append({'name': 'db', 'template': 9000, 'critical': True, 'replay': {'mode': 'tcp', 'port': 5432}})
    plan = plan_utils.plan_from_template(data)[1]
    canaries = dict((e['service'], e['canary']) for e in plan['scaling'])
    assert (canaries['web']['mode'], canaries['web']['port']) == ('http', 80)
    assert (canaries['db']['mode'], canaries['db']['port'], canaries['db']['target_port']) == ('tcp', 5432, 5432)
    data['services'][1]['replay'] = {'mode': 'sctp'}
    assert any(p == 'services[1].replay.mode' for p, m in messages(data)), messages(data)


@pytest.mark.parametrize('replay, latency, path, text', [
    ({'mode': 'grpc'}, None, 'shadow.replay.mode', "'grpc'"),
    ({'port': 0}, None, 'shadow.replay.port', ''),
    ({'port': 70000}, None, 'shadow.replay.port', ''),
    ({'port': 80, 'target_port': 'x'}, None, 'shadow.replay.target_port', ''),
    ({'methods': 'unsafe'}, None, 'shadow.replay.methods', ''),
    ({'concurrency': 0}, None, 'shadow.replay.concurrency', ''),
    ({'stats_path': 'run/x.json'}, None, 'shadow.replay.stats_path', 'not an absolute path'),
    ({'bogus': 1}, None, 'shadow.replay.bogus', ''),
    (None, {'p95_ms': 0}, 'scaling.latency.p95_ms', ''),
    (None, {'p95_ms': 100, 'for': 0}, 'scaling.latency.for', 'must be greater than zero'),
    (None, {'p95': 100}, 'scaling.latency.p95', ''),
])
def test_bad_replay_and_latency_fields_are_named(replay, latency, path, text):
    found = messages(tpl(replay=replay, latency=latency))
    assert any(p == path and text in m for p, m in found), found


# ---------------------------------------------------------------------------------------------- normalisation

def test_shadow_normalisation_by_size_and_flow_sample_rate():
    # 40% of a quarter-size shadow that sees 10% of the flows of one primary stands for a primary at 100%.
    assert policy.shadow_normalised([0.40], {'size': 0.25, 'rate': 0.10, 'mirrored_instances': 1}) == [
        pytest.approx(1.0)]
    # Two primaries mirrored at 10%: the shadow sees 20% of one primary's requests.
    assert policy.shadow_normalised([0.40], {'size': 0.5, 'rate': 0.10, 'mirrored_instances': 2}) == [
        pytest.approx(1.0)]
    # Absolute metrics (net): no size.
    assert policy.shadow_normalised([1e6], {'size': 0.25, 'rate': 0.5}, absolute=True) == [pytest.approx(2e6)]
    with pytest.raises(policy.PolicyError):
        policy.shadow_normalised([0.1], {'rate': 0.0})


def test_shadow_size_from_the_running_vms():
    assert canary_utils.shadow_size({'maxcpu': 1}, 4, planned=0.5) == 0.25
    assert canary_utils.shadow_size(None, 4, planned=0.5) == 0.5


def _flat(value, n=30):
    return {'step_seconds': 60, 'demand': [value * 2 * 4] * n, 'end': NOW,
            'forecast': {'mean': [value * 8] * 20, 'lower': [value * 8] * 20, 'upper': [value * 8] * 20},
            'primary': [value] * n}


def test_seed_rule_fires_on_the_normalised_shadow_and_says_its_numbers():
    metrics = {'cpu': dict(_flat(0.5), shadow=[0.18] * 30)}
    shadow = {'size': 0.25, 'rate': 0.05, 'mirrored_instances': 2}       # 0.18 x 0.25 / 0.1 = 45%: below
    d = policy.decide({}, {'instances': 2, 'capacity': {'cpu': 4}}, metrics, NOW, shadow=shadow)
    assert d['action'] == 'none'
    metrics['cpu']['shadow'] = [0.36] * 30                               # 90%: 40 points above 50%
    d = policy.decide({}, {'instances': 2, 'capacity': {'cpu': 4}}, metrics, NOW, shadow=shadow)
    assert d['action'] == 'scale_up' and d['signal'] == 'shadow'
    assert 'shadow 36% x size 0.25 / (rate 0.05 x 2) = 90% vs primaries 50%' in d['reason'], d['reason']


# ---------------------------------------------------------------------------------------------- latency signal

LAT = {'p95_ms': 120, 'for': 180}


@pytest.mark.parametrize('obs, up, held', [
    ([(NOW, 0.142, 60)], False, 60),                                               # one reading: 1 minute
    ([(NOW - 120, 0.15, 60), (NOW - 60, 0.13, 60), (NOW, 0.142, 60)], True, 180),  # 3 minutes
    ([(NOW - 120, 0.15, 60), (NOW - 60, 0.10, 60), (NOW, 0.142, 60)], False, 60),  # broken by a reading below
    ([(NOW - 120, 0.15, 60), (NOW - 60, None, 60), (NOW, 0.142, 60)], False, 60),  # no request in a window
    ([(NOW - 300, 0.15, 60), (NOW, 0.142, 60)], True, 360),                        # 5 minutes apart (reconciles)
    ([(NOW - 1200, 0.15, 60), (NOW, 0.142, 60)], False, 60),                       # 20 minutes apart: a gap
    ([(NOW, 0.120, 60)], False, 0),                                                # at the threshold: not above
    ([], False, 0),
])
def test_latency_signal_holds_only_for_the_whole_duration(obs, up, held):
    info = policy.latency_signal(LAT, obs, 2, NOW)
    assert info['up'] is up and info['held_seconds'] == held, info


def test_latency_signal_scales_up_with_its_numbers_and_blocks_a_scale_down():
    obs = [(NOW - 120, 0.15, 60), (NOW - 60, 0.13, 60), (NOW, 0.142, 60)]
    scaling = {'latency': LAT, 'instances': {'min': 1, 'max': 4}}
    d = policy.decide(scaling, {'instances': 2, 'capacity': {'cpu': 4, 'memory': 4}}, {'cpu': _flat(0.5)}, NOW,
                      latency=obs)
    assert d['action'] == 'scale_up' and d['signal'] == 'latency' and d['target'] == {'instances': 3}
    assert d['reason'] == 'canary p95 142 ms > 120 ms for 3 min: 2 -> 3 instances'
    d = policy.decide(scaling, {'instances': 2, 'capacity': {'cpu': 4}}, {'cpu': _flat(0.5)}, NOW,
                      latency=[(NOW, 0.142, 60)])
    assert d['action'] == 'none' and not d['latency']['up']
    assert d['latency']['detail'] == 'canary p95 142 ms (threshold 120 ms, held 60s of 3 min)'
    # Without a threshold or without a canary: no latency signal at all.
    assert policy.latency_signal({'p95_ms': None}, obs, 2, NOW) is None
    assert 'latency' not in policy.decide({}, {'instances': 2, 'capacity': {'cpu': 4}}, {'cpu': _flat(0.5)}, NOW)
    # Vertical mode: one core more.
    d = policy.decide(dict(scaling, mode='vertical'), {'instances': 2, 'cores': 4, 'memory': 4096,
                                                       'capacity': {'cpu': 4}}, {'cpu': _flat(0.5)}, NOW, latency=obs)
    assert d['action'] == 'scale_up' and d['target']['cores'] == 5, d['reason']


# ---------------------------------------------------------------------------------------------- counters file

def _file(**over):
    data = {'version': 1, 'time': NOW - 3, 'started': NOW - 600, 'mode': 'http', 'target': '127.0.0.1:80',
            'flows_seen': 10, 'flows_replayed': 9, 'requests_replayed': 120, 'errors': {'timeout': 2, 'reset': 1},
            'window_seconds': 60, 'window': {'requests': 30, 'latency_p50_seconds': 0.01, 'latency_p95_seconds': 0.05,
                                             'errors': 0}}
    data.update(over)
    return json.dumps(data)


def test_counters_status_live_stale_and_broken():
    state = canary_utils.status(_file(), None, NOW, 30, 'shop-web-shadow', '/run/x.json')
    assert state['live'] and state['counters']['errors'] == 3 and state['counters']['p95_seconds'] == 0.05
    assert state['reason'] == 'canary shop-web-shadow: 120 requests replayed, 30 in the last 60s, p95 50 ms'
    assert canary_utils.observation(state) == (NOW - 3, 0.05, 60.0)
    stale = canary_utils.status(_file(time=NOW - 31), None, NOW, 30, 's', '/run/x.json')
    assert not stale['live'] and 'is stale (31s old, limit 30s' in stale['reason']
    for text, why in [('[]', 'not a JSON object'), (_file(version=2), 'version 2'), (_file(time='now'), 'no valid time'),
                      ('{', 'not JSON')]:
        state = canary_utils.status(text, None, NOW, 30, 's', '/p')
        assert not state['live'] and why in state['reason'] and canary_utils.observation(state) is None
    error = canary_utils.status(None, 'QEMU guest agent is not running', NOW, 30, 's', '/p')
    assert error['reason'] == 'no canary: cannot read /p in s: QEMU guest agent is not running'
    # Hostile values are counted as nothing, never trusted.
    state = canary_utils.status(_file(requests_replayed=-5, window={'latency_p95_seconds': 'x'}), None, NOW, 30, 's', '/p')
    assert state['live'] and state['counters']['requests_replayed'] == 0 and state['counters']['p95_seconds'] is None


def test_history_points_of_a_live_reading_only():
    state = canary_utils.status(_file(), None, NOW, 30, 's', '/p')
    points = canary_utils.history_points({'template': 'shop', 'service': 'web', 'canary': state})
    assert points == [('shop/web/_canary/p95_seconds', int(NOW - 3), 0.05),
                      ('shop/web/_canary/window_seconds', int(NOW - 3), 60.0),
                      ('shop/web/_canary/window_requests', int(NOW - 3), 30.0)]
    assert canary_utils.history_points({'template': 'shop', 'service': 'web', 'canary': {'live': False}}) == []


def test_a_counters_file_nested_too_deep_or_dated_ahead_is_no_canary():
    """What a shadow guest writes is read by the reconciler: a file of nested brackets (256 KiB is allowed) made
    json.loads raise RecursionError through the reconcile, and a file dated far ahead of the controller's clock
    looked live for ever."""
    deep = canary_utils.status('[' * 50000, None, 1000.0, 60, 'shop-web-shadow', '/run/replay/stats.json')
    assert not deep['live'] and 'is not JSON' in deep['reason']
    ahead = canary_utils.status(json.dumps({'version': 1, 'time': 1000.0 + 3600}), None, 1000.0, 60,
                                'shop-web-shadow', '/run/replay/stats.json')
    assert not ahead['live'] and 'dated 3600s ahead' in ahead['reason'] and 'clocks in sync' in ahead['reason']
    near = canary_utils.status(json.dumps({'version': 1, 'time': 1000.0 + 30}), None, 1000.0, 60,
                               'shop-web-shadow', '/run/replay/stats.json')
    assert near['live'], near['reason']          # a little skew is tolerated, as far as the staleness limit

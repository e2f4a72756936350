"""Pure parts of module_utils.failover: the catch-up gate and the offline-recovery decision (no API calls)."""
import copy

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import failover as failover_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template

TEMPLATE = {
    'name': 'shop', 'nodes': ['pve1', 'pve2', 'pve3'],
    'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/24'}],
    'services': [{'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048,
                  'networks': ['front'], 'vip': '10.10.0.100/24', 'critical': True}],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/srv']}},
}


def plan_with(fidelity):
    tpl = copy.deepcopy(TEMPLATE)
    tpl['shadow']['replication'] = {'fidelity': fidelity}
    if fidelity == 'differential':
        tpl['shadow']['replication']['paths'] = ['/srv']
    if fidelity == 'event':
        tpl['shadow']['mirror'] = {'mode': 'full'}
    return plan_from_template(tpl)[1]


def report(since=1000, healthy=('shop-web-1', 'shop-web-2')):
    return {'shadow': {'active_since': since},
            'primaries': [{'name': n, 'healthy': n in healthy} for n in ('shop-web-1', 'shop-web-2')]}


def runner(plan, **kwargs):
    return failover_utils.Failover(api=None, plan=plan, service='web', **kwargs)


@pytest.mark.parametrize('value,expected', [(1200, 1200), ('1200\n', 1200), ({'caught_up_at': '1200.5'}, 1200),
                                            (None, None), ('', None), ('never', None), ({}, None)])
def test_epoch_of_a_fact(value, expected):
    assert failover_utils._epoch(value) == expected


def test_catch_up_gate_by_fidelity_and_choice():
    diff = plan_with('differential')
    assert runner(diff).catch_up_needed(report()) == ['shop-web-1']
    assert runner(diff, catch_up='all').catch_up_needed(report()) == ['shop-web-1', 'shop-web-2']
    assert runner(diff, catch_up='skip').catch_up_needed(report()) == []
    # A catch-up finished before the shadow became active does not count; at or after it does.
    assert runner(diff, catch_up_facts={'shop-web-1': 999}).catch_up_needed(report()) == ['shop-web-1']
    assert runner(diff, catch_up_facts={'shop-web-1': '1000'}).catch_up_needed(report()) == []
    # Not active (no failover happened), or a primary still down (its own blocker comes first): nothing asked.
    assert runner(diff).catch_up_needed(report(since=None)) == []
    assert runner(diff).catch_up_needed(report(healthy=('shop-web-2',))) == []
    assert runner(plan_with('event')).catch_up_needed(report()) == ['shop-web-1']
    assert runner(plan_with('full')).catch_up_needed(report()) == []


def test_catch_up_reason_names_the_primary_and_the_fix():
    reasons = runner(plan_with('differential'), min_uptime=0).failback_blockers(
        dict(report(), primaries=[{'name': 'shop-web-1', 'healthy': True, 'uptime': 5},
                                  {'name': 'shop-web-2', 'healthy': True, 'uptime': 5}]))
    assert len(reasons) == 1 and reasons[0].startswith('shop-web-1 has not caught up')
    assert 'state_replication_direction=catch_up' in reasons[0]


def offline(ha_state=None):
    return {'name': 'shop-web-1', 'node': 'pve2', 'vmid': 101, 'healthy': False, 'problem': 'node_offline',
            'ha_state': ha_state, 'lock': None}


@pytest.mark.parametrize('choice,ha_state,action', [
    ('wait', 'started', 'ha_wait'), ('wait', None, 'none'),
    ('ha', 'started', 'ha_wait'), ('ha', None, 'ha_add'),
    ('report', 'started', 'ha_recovery'), ('report', None, 'none')])
def test_offline_recovery_choice(choice, ha_state, action):
    got, message = runner(plan_with('full'), offline_recovery=choice).plan_remediation(offline(ha_state))
    assert got == action and 'pve2' in message and 'shop-web-1' in message


def test_bad_choices_are_refused_with_the_valid_ones():
    with pytest.raises(failover_utils.FailoverError, match='offline_recovery must be one of wait, ha, report'):
        runner(plan_with('full'), offline_recovery='migrate')
    with pytest.raises(failover_utils.FailoverError, match='catch_up must be one of first, all, skip'):
        runner(plan_with('full'), catch_up='some')


@pytest.mark.parametrize('timeout', [0, -5, float('nan'), float('inf'), True, '300'])
def test_a_timeout_that_is_not_a_positive_finite_number_is_a_config_error(timeout):
    with pytest.raises(failover_utils.FailoverError) as exc:
        runner(plan_with("full"), timeout=timeout)
    assert exc.value.kind == 'config' and 'timeout must be a number of seconds above 0' in exc.value.message

# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/failover/replication.py: the pure rules of the state_replication role."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import replication as replication_utils

PLAN = {
    'replication': [
        {'service': 'web', 'shadow': 'shop-web-shadow', 'primaries': ['shop-web-1', 'shop-web-2'],
         'fidelity': 'differential', 'interval_seconds': 900, 'rpo_seconds': 900, 'paths': ['/var/www'],
         'hook': None},
        {'service': 'db', 'shadow': 'shop-db-shadow', 'primaries': ['shop-db-1'], 'fidelity': 'event',
         'interval_seconds': None, 'rpo_seconds': None, 'paths': [], 'hook': 'systemctl start pg-standby'},
    ],
}


def test_fidelity_table_is_complete():
    assert set(replication_utils.FIDELITIES) == {'full', 'differential', 'event'}
    for info in replication_utils.FIDELITIES.values():
        assert info['rpo'] and info['cost'] and info['guest']
    assert (replication_utils.FIDELITIES['full']['min_interval'], replication_utils.FIDELITIES['differential']['min_interval']) == (300, 10)


@pytest.mark.parametrize('seconds, expr', [
    (60, '* * * * *'), (300, '*/5 * * * *'), (900, '*/15 * * * *'), (1800, '*/30 * * * *'),
    (3600, '0 * * * *'), (21600, '0 */6 * * *'), (86400, '0 */24 * * *'),
])
def test_cron_schedule(seconds, expr):
    assert replication_utils.cron_schedule(seconds) == expr


@pytest.mark.parametrize('seconds', [90, 420, 5400, 7 * 3600, 30])
def test_cron_schedule_refuses_what_cron_cannot_express(seconds):
    with pytest.raises(ValueError, match='state_replication_scheduler: systemd'):
        replication_utils.cron_schedule(seconds)


@pytest.mark.parametrize('path, ok', [
    ('/var/lib/app', True), ('/srv/a.b/c-d+e@f', True), ('relative', False), ('/', False), ('//', False),
    ('/a/../etc', False), ('/a/./b', False), ('/a/', False), ('/with space', False), ('/semi;colon', False), ('', False),
])
def test_check_path(path, ok):
    assert (replication_utils.check_path(path) is None) is ok


def test_plan_form_first_primary_replicates():
    m = replication_utils.build_model({'host': 'shop-web-1', 'plan': PLAN, 'scheduler': 'cron'})
    assert m['errors'] == []
    assert not m['skip']
    assert (m['shadow'], m['fidelity'], m['interval_seconds'], m['rpo_seconds']) == \
        ('shop-web-shadow', 'differential', 900, 900)
    assert m['paths'] == [{'path': '/var/www', 'src': '/var/www', 'dest': '/var/www'}]
    assert m['allowed'] == ['/var/www']
    assert m['cron'] == '*/15 * * * *' and m['on_unit_active_sec'] == '900s'
    assert m['rsync_options'][:3] == ['--archive', '--numeric-ids', '--itemize-changes']
    assert '--delete' in m['rsync_options']


def test_plan_form_other_primaries_skip_or_use_subdirs():
    m = replication_utils.build_model({'host': 'shop-web-2', 'plan': PLAN})
    assert m['skip'] and 'first primary (shop-web-1)' in m['skip_reason'] and m['errors'] == []
    m = replication_utils.build_model({'host': 'shop-web-2', 'plan': PLAN, 'sources': 'subdir', 'dest_root': '/srv/shadow/'})
    assert not m['skip']
    assert m['allowed'] == ['/srv/shadow/var/www/shop-web-2']


def test_plan_form_host_without_shadow_skips():
    m = replication_utils.build_model({'host': 'shop-lb-1', 'plan': PLAN})
    assert m['skip'] and m['errors'] == []


def test_plan_form_event_hook():
    m = replication_utils.build_model({'host': 'shop-db-1', 'plan': PLAN})
    assert m['errors'] == [] and m['fidelity'] == 'event'
    assert m['hook'] == {'command': 'systemctl start pg-standby'}
    m = replication_utils.build_model({'host': 'shop-db-1', 'plan': PLAN, 'event_hook': {'role': 'acme.pg.standby'}})
    assert m['hook'] == {'role': 'acme.pg.standby'}


def test_simple_form_roots_and_options():
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's1', 'interval': '5m', 'paths': ['/srv/app', '/var/lib/db'],
                                       'source_root': '/tmp/x/primary', 'dest_root': '/tmp/x/shadow', 'delete': False,
                                       'timeout': 60, 'bwlimit': 1000, 'excludes': ['*.tmp']})
    assert m['errors'] == []
    assert m['interval_seconds'] == 300
    assert [(p['src'], p['dest']) for p in m['paths']] == [
        ('/tmp/x/primary/srv/app', '/tmp/x/shadow/srv/app'), ('/tmp/x/primary/var/lib/db', '/tmp/x/shadow/var/lib/db')]
    assert m['rsync_options'] == ['--archive', '--numeric-ids', '--itemize-changes', '--timeout=60',
                                  '--bwlimit=1000', '--exclude=*.tmp']


@pytest.mark.parametrize('settings, message', [
    ({'paths': ['/a']}, 'state_replication_shadow: name the shadow host'),
    ({'shadow': 's', 'paths': []}, 'needs at least one path'),
    ({'shadow': 's', 'paths': ['/a', '/a/b']}, '/a/b lies inside /a'),
    ({'shadow': 's', 'paths': ['/a', '/a']}, 'listed twice'),
    ({'shadow': 's', 'paths': ['/a/']}, 'no trailing /'),
    ({'shadow': 's', 'paths': ['etc']}, "path 'etc' must be absolute"),
    ({'shadow': 's', 'paths': ['/a'], 'interval': 'soon'}, 'state_replication_interval'),
    ({'shadow': 's', 'paths': ['/a'], 'interval': '5s'}, 'at least 10s'),
    ({'shadow': 's', 'paths': ['/a'], 'interval': '7m', 'scheduler': 'cron'}, 'cron cannot run every 420 s'),
    ({'shadow': 's', 'interval': '1m', 'fidelity': 'full'}, 'so the interval must be at least 300s (got 60s)'),
    ({'shadow': 's', 'fidelity': 'full', 'full_poll_minutes': 20}, 'longer than the interval (900s)'),
    ({'shadow': 's', 'fidelity': 'full', 'full_poll_minutes': 0}, 'state_replication_full_poll_minutes: 0: use 1-59'),
    ({'shadow': 's', 'fidelity': 'full', 'full_snapshot_prefix': '1x'}, 'state_replication_full_snapshot_prefix'),
    ({'shadow': 's', 'fidelity': 'full', 'full_dir': 'rel'}, 'state_replication_full_dir'),
    ({'shadow': 's_x', 'fidelity': 'full'}, "the shadow 's_x' must be a VM name"),
    ({'shadow': 's', 'paths': ['/a'], 'direction': 'back'}, 'state_replication_direction'),
    ({'shadow': 's', 'paths': ['/a'], 'catch_up_primaries': 'some'}, 'state_replication_catch_up_primaries'),
    ({'shadow': 's', 'paths': ['/a'], 'key_dir': 'etc/x'}, "state_replication_key_dir: 'etc/x' must be an absolute"),
    ({'shadow': 's', 'paths': ['/a'], 'unit_name': 'a.b'}, 'state_replication_unit_name'),
    ({'shadow': 's', 'paths': ['/a'], 'ssh_port': 70000}, 'state_replication_ssh_port'),
    ({'shadow': 's', 'paths': ['/a'], 'serving_state_file': 'rel'}, 'state_replication_serving_state_file'),
    ({'shadow': 's', 'paths': ['/a'], 'direction': 'catch_up', 'catch_up_port': 0}, 'state_replication_catch_up_port'),
    ({'shadow': 's', 'paths': ['/a'], 'direction': 'catch_up', 'primary_address': 'a b'},
     'state_replication_primary_address'),
    ({'shadow': 's', 'paths': ['/a'], 'direction': 'catch_up', 'state_dir': '/x y'}, 'no blanks'),
    ({'shadow': 's', 'fidelity': 'event', 'direction': 'catch_up'}, 'without a hook nothing can bring'),
    ({'shadow': 's', 'paths': ['/a'], 'fidelity': 'bogus'}, "fidelity 'bogus'"),
    ({'shadow': 's', 'fidelity': 'event', 'event_hook': {'command': 'a', 'role': 'b'}}, 'exactly one of'),
    ({'shadow': 's', 'paths': ['/a'], 'excludes': ['a b']}, 'state_replication_excludes'),
    ({'shadow': 's', 'paths': ['/a'], 'dest_root': 'rel'}, 'state_replication_dest_root'),
])
def test_errors_are_readable(settings, message):
    base = {'host': 'p1', 'interval': '15m'}
    base.update(settings)
    m = replication_utils.build_model(base)
    assert any(message in e for e in m['errors']), m['errors']


def test_pair_from_plan_refuses_a_host_in_two_entries():
    plan = {'replication': [{'shadow': 'a', 'primaries': ['h']}, {'shadow': 'b', 'primaries': ['h']}]}
    with pytest.raises(ValueError, match='2 replication entries'):
        replication_utils.pair_from_plan(plan, 'h')
    assert replication_utils.build_model({'host': 'h', 'plan': plan})['errors']


def test_bad_and_nested_paths_are_named_together():
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's', 'interval': '15m', 'paths': ['/srv/app', '/srv/app/sub', 'relative']})
    assert any('(bad: relative; nested: /srv/app/sub inside /srv/app)' in e for e in m['errors']), m['errors']
    assert any("path 'relative' must be absolute" in e for e in m['errors'])


def test_interval_is_checked_only_where_it_is_used():
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's', 'fidelity': 'event', 'interval': '5s'})
    assert m['errors'] == []
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's', 'paths': ['/a'], 'interval': '7m', 'scheduler': 'cron',
                                       'direction': 'catch_up'})
    assert m['errors'] == [] and m['cron'] is None  # catch-up installs no schedule


def test_full_replication_runs_once_per_shadow():
    plan = {'replication': [{'service': 'web', 'shadow': 'web-shadow', 'primaries': ['web-1', 'web-2'],
                             'fidelity': 'full', 'interval_seconds': 3600, 'paths': [], 'hook': None}]}
    m = replication_utils.build_model({'host': 'web-1', 'plan': plan, 'full_poll_minutes': 5, 'full_snapshot_prefix': 'sn-refresh',
                                       'full_dir': '/root/.local/share/shadownet-repl'})
    assert m['errors'] == [] and not m['skip'] and m['interval_seconds'] == 3600
    m = replication_utils.build_model({'host': 'web-2', 'plan': plan})
    assert m['skip'] and 'from its first primary (web-1)' in m['skip_reason'] and m['errors'] == []


def test_catch_up_with_all_primaries():
    m = replication_utils.build_model({'host': 'shop-web-2', 'plan': PLAN, 'direction': 'catch_up', 'catch_up_primaries': 'all'})
    assert not m['skip'] and m['errors'] == [] and m['sources'] == ['/var/www']
    m = replication_utils.build_model({'host': 'shop-web-2', 'plan': PLAN, 'direction': 'catch_up'})
    assert m['skip']


def test_serving_state_file():
    plan = dict(PLAN, template='shop')
    m = replication_utils.build_model({'host': 'shop-web-1', 'plan': plan, 'serving_state_file': 'auto', 'vip_state_dir': '/run/vip'})
    assert m['serving_file'] == '/run/vip/shop-web.state'
    m = replication_utils.build_model({'host': 'shop-web-1', 'plan': plan, 'serving_state_file': ''})
    assert m['serving_file'] == ''
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's', 'interval': '15m', 'paths': ['/a']})
    assert m['serving_file'] == ''  # simple form: no template, no service


def test_delegated_hosts_must_be_in_the_inventory():
    m = replication_utils.build_model({'host': 'p1', 'shadow': 's', 'interval': '15m', 'paths': ['/a']}, inventory=['p1'])
    assert any('the shadow s is not in the inventory' in e for e in m['errors'])
    assert replication_utils.build_model({'host': 'p1', 'shadow': 's', 'interval': '15m', 'paths': ['/a']}, inventory=['p1', 's'])[
        'errors'] == []
    db = dict(PLAN['replication'][1], primaries=['shop-db-1', 'shop-db-2'])
    m = replication_utils.build_model({'host': 'shop-db-1', 'plan': dict(PLAN, replication=[db]), 'direction': 'catch_up',
                                       'catch_up_primaries': 'all'}, inventory=['shop-db-1', 'shop-db-shadow'])
    assert any('missing: shop-db-2' in e for e in m['errors']), m['errors']

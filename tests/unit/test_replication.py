# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""plugins/module_utils/replication.py: the pure rules of the state_replication role."""
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils import replication as r

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
    assert set(r.FIDELITIES) == {'full', 'differential', 'event'}
    for info in r.FIDELITIES.values():
        assert info['rpo'] and info['cost'] and info['guest']
    assert r.FIDELITIES['full']['implemented'] is False


@pytest.mark.parametrize('seconds, expr', [
    (60, '* * * * *'), (300, '*/5 * * * *'), (900, '*/15 * * * *'), (1800, '*/30 * * * *'),
    (3600, '0 * * * *'), (21600, '0 */6 * * *'), (86400, '0 */24 * * *'),
])
def test_cron_schedule(seconds, expr):
    assert r.cron_schedule(seconds) == expr


@pytest.mark.parametrize('seconds', [90, 420, 5400, 7 * 3600, 30])
def test_cron_schedule_refuses_what_cron_cannot_express(seconds):
    with pytest.raises(ValueError, match='state_replication_scheduler: systemd'):
        r.cron_schedule(seconds)


@pytest.mark.parametrize('path, ok', [
    ('/var/lib/app', True), ('/srv/a.b/c-d+e@f', True), ('relative', False), ('/', False), ('//', False),
    ('/a/../etc', False), ('/a/./b', False), ('/a/', False), ('/with space', False), ('/semi;colon', False), ('', False),
])
def test_check_path(path, ok):
    assert (r.check_path(path) is None) is ok


def test_plan_form_first_primary_replicates():
    m = r.build_model({'host': 'shop-web-1', 'plan': PLAN, 'scheduler': 'cron'})
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
    m = r.build_model({'host': 'shop-web-2', 'plan': PLAN})
    assert m['skip'] and 'first primary (shop-web-1)' in m['skip_reason'] and m['errors'] == []
    m = r.build_model({'host': 'shop-web-2', 'plan': PLAN, 'sources': 'subdir', 'dest_root': '/srv/shadow/'})
    assert not m['skip']
    assert m['allowed'] == ['/srv/shadow/var/www/shop-web-2']


def test_plan_form_host_without_shadow_skips():
    m = r.build_model({'host': 'shop-lb-1', 'plan': PLAN})
    assert m['skip'] and m['errors'] == []


def test_plan_form_event_hook():
    m = r.build_model({'host': 'shop-db-1', 'plan': PLAN})
    assert m['errors'] == [] and m['fidelity'] == 'event'
    assert m['hook'] == {'command': 'systemctl start pg-standby'}
    m = r.build_model({'host': 'shop-db-1', 'plan': PLAN, 'event_hook': {'role': 'acme.pg.standby'}})
    assert m['hook'] == {'role': 'acme.pg.standby'}


def test_simple_form_roots_and_options():
    m = r.build_model({'host': 'p1', 'shadow': 's1', 'interval': '5m', 'paths': ['/srv/app', '/var/lib/db'],
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
    ({'shadow': 's', 'paths': ['/a'], 'fidelity': 'full'}, 'fidelity full is not implemented'),
    ({'shadow': 's', 'paths': ['/a'], 'fidelity': 'bogus'}, "fidelity 'bogus'"),
    ({'shadow': 's', 'fidelity': 'event', 'event_hook': {'command': 'a', 'role': 'b'}}, 'exactly one of'),
    ({'shadow': 's', 'paths': ['/a'], 'excludes': ['a b']}, 'state_replication_excludes'),
    ({'shadow': 's', 'paths': ['/a'], 'dest_root': 'rel'}, 'state_replication_dest_root'),
])
def test_errors_are_readable(settings, message):
    base = {'host': 'p1', 'interval': '15m'}
    base.update(settings)
    m = r.build_model(base)
    assert any(message in e for e in m['errors']), m['errors']


def test_pair_from_plan_refuses_a_host_in_two_entries():
    plan = {'replication': [{'shadow': 'a', 'primaries': ['h']}, {'shadow': 'b', 'primaries': ['h']}]}
    with pytest.raises(ValueError, match='2 replication entries'):
        r.pair_from_plan(plan, 'h')
    assert r.build_model({'host': 'h', 'plan': plan})['errors']

"""The reconciler role itself, run with ansible-playbook on localhost: a cron entry for the flock wrapper
(written to a cron file in a temporary directory), idempotent, and removed with reconciler_state absent."""
import json
import os

from lab.playbook import VENV_PY, ansible_playbook, recap


def play(tmp_path, **role_vars):
    book = tmp_path / 'play.yml'
    book.write_text('- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles:\n'
                    '    - role: shadownet.proxmox.reconciler\n')
    extra = tmp_path / 'vars.json'
    extra.write_text(json.dumps(role_vars))
    proc = ansible_playbook(['-i', 'localhost,', '-e', 'ansible_python_interpreter=' + VENV_PY, '-e', '@' + str(extra),
                             book])
    counters = recap(proc)
    return proc, counters['changed'], counters['failed']


def test_role_installs_a_cron_entry_for_the_locked_wrapper_and_removes_it(tmp_path):
    cron = tmp_path / 'cron.d' / 'shadownet-reconcile'
    cron.parent.mkdir()
    user = os.environ.get('USER') or 'root'
    role_vars = dict(reconciler_scheduler='cron', reconciler_cron_file=str(cron), reconciler_interval_minutes=5,
                     reconciler_user=user, reconciler_wrapper_path=str(tmp_path / 'bin' / 'shadownet-reconcile'),
                     reconciler_log_file=str(tmp_path / 'log' / 'reconcile.log'),
                     reconciler_history_path=str(tmp_path / 'lib' / 'history.sqlite'),
                     reconciler_env_file=str(tmp_path / 'etc' / 'reconcile.env'),
                     reconciler_lock_file=str(tmp_path / 'lock'),
                     reconciler_report_dir=str(tmp_path / 'lib' / 'reports'), reconciler_report_keep=5,
                     reconciler_environment={'PROXMOX_HOST': 'pve.example.invalid'})
    (tmp_path / 'bin').mkdir()
    proc, changed, failed = play(tmp_path, **role_vars)
    assert failed == 0 and changed > 0, proc.stdout[-3000:]
    entry = [line for line in cron.read_text().splitlines() if line and not line.startswith('#')]
    assert entry == ['*/5 * * * * {0} {1}'.format(user, role_vars['reconciler_wrapper_path'])]
    wrapper = open(role_vars['reconciler_wrapper_path']).read()
    assert 'flock -n 9' in wrapper and 'shadownet.proxmox.reconcile' in wrapper
    assert (tmp_path / 'lib' / 'reports').is_dir() and '-e shadownet_report_keep=5' in wrapper
    assert 'SHADOWNET_REPORT_DIR="${{SHADOWNET_REPORT_DIR:-{0}}}"'.format(tmp_path / 'lib' / 'reports') in wrapper
    assert oct(os.stat(role_vars['reconciler_env_file']).st_mode & 0o777) == '0o600'
    proc, changed, failed = play(tmp_path, **role_vars)
    assert failed == 0 and changed == 0, proc.stdout[-3000:]
    proc, changed, failed = play(tmp_path, reconciler_state='absent', **dict(
        (k, v) for k, v in role_vars.items() if k != 'reconciler_state'))
    assert failed == 0 and changed > 0
    assert not [line for line in cron.read_text().splitlines() if line and not line.startswith('#')] \
        if cron.exists() else True
    assert not os.path.exists(role_vars['reconciler_wrapper_path'])


def test_preflight_names_a_relative_history_path_before_any_change(tmp_path):
    wrapper = tmp_path / 'bin' / 'shadownet-reconcile'
    proc, changed, failed = play(tmp_path, reconciler_history_path='var/history.sqlite',
                                 reconciler_report_dir=str(tmp_path / 'reports'),
                                 reconciler_wrapper_path=str(wrapper), reconciler_log_file=str(tmp_path / 'log' / 'r.log'),
                                 reconciler_env_file=str(tmp_path / 'etc' / 'r.env'), reconciler_lock_file=str(tmp_path / 'lock'))
    assert failed == 1 and changed == 0, proc.stdout[-3000:]
    assert 'reconciler_history_path must be an absolute path (got var/history.sqlite)' in proc.stdout
    assert not (tmp_path / 'log').exists() and not wrapper.exists()

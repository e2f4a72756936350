"""playbooks/reconcile.yml through ansible-playbook against the simulator: lines, set_stats, cooldown."""
import json
import os
import re
import subprocess

import pytest

from lab.playbook import ROOT, VENV_PY, ansible_playbook, recap, run_ansible
from lab.shop import RISING, SCALED_SHOP as TEMPLATE, build, inject, plan_of, primaries


def play(pvesim, history, *extra):
    env = dict(ANSIBLE_SHOW_CUSTOM_STATS='1', SHADOWNET_HISTORY=history, OMP_NUM_THREADS='1',
               OPENBLAS_NUM_THREADS='1', SHADOWNET_REPORT_DIR=os.path.join(os.path.dirname(history), 'reports'))
    args = ['-i', 'localhost,', 'reconcile.yml', '-e', json.dumps({'shadownet_templates': [TEMPLATE]}),
            '-e', 'ansible_python_interpreter=' + VENV_PY]
    return ansible_playbook(args + list(extra), sim=pvesim, env=env)


@pytest.mark.slow
def test_reconcile_playbook_scales_once_then_holds(pvesim, pve_conn, tmp_path):
    inject(pvesim, build(pvesim, pve_conn, plan_of(TEMPLATE)), RISING)
    history = str(tmp_path / 'history.sqlite')

    first = play(pvesim, history)
    assert recap(first)['failed'] == 0, first.stdout[-4000:] + first.stderr[-2000:]
    lines = re.findall(r'"msg": "(shop/[^"]*)"', first.stdout)
    assert len(lines) == 1 and lines[0].startswith('shop/web: current [cpu'), first.stdout[-3000:]
    assert 'decision scale_up 2 -> 3 instances' in lines[0] and '=> applied' in lines[0]
    assert 'CUSTOM STATS' in first.stdout and 'shadownet_reconcile' in first.stdout
    assert primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']
    # The run's HTML report: its path in the play output and in the AWX artifact (set_stats).
    report = re.findall(r'"msg": "scaling report: (\S+) \(latest: (\S+)\)"', first.stdout)
    assert len(report) == 1 and report[0][1] == str(tmp_path / 'reports' / 'latest.html'), first.stdout[-3000:]
    assert os.path.isfile(report[0][0]) and os.path.dirname(report[0][0]) == str(tmp_path / 'reports')
    assert '"report": "{0}"'.format(report[0][0]) in first.stdout.split('CUSTOM STATS', 1)[1]
    assert 'decision scale_up 2 -&gt; 3 instances' in open(report[0][0], encoding='utf-8').read()

    mark = pvesim.mark()
    second = play(pvesim, history)
    assert recap(second)['failed'] == 0, second.stdout[-4000:]
    assert recap(second)['changed'] == 0
    lines = re.findall(r'"msg": "(shop/[^"]*)"', second.stdout)
    assert len(lines) == 1 and 'decision none' in lines[0], lines
    assert pvesim.writes(mark) == []
    assert primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']


def render_wrapper(tmp_path, **overrides):
    """The reconciler role's wrapper, rendered by ansible.builtin.template with the role's defaults."""
    role = os.path.join(ROOT, 'roles', 'reconciler')
    dest = tmp_path / 'shadownet-reconcile'
    proc = run_ansible('ansible', ['localhost', '-c', 'local', '-e', 'ansible_python_interpreter=' + VENV_PY,
                                   '-e', '@' + os.path.join(role, 'defaults', 'main.yml'), '-e', json.dumps(overrides),
                                   '-m', 'ansible.builtin.template',
                                   '-a', 'src={0} dest={1} mode=0755'.format(
                                       os.path.join(role, 'templates', 'shadownet-reconcile.sh.j2'), dest)],
                       timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return str(dest)


def test_reconciler_wrapper_runs_one_at_a_time(tmp_path):
    marker = tmp_path / 'runs'
    fake = tmp_path / 'fake-ansible-playbook'
    fake.write_text('#!/bin/sh\necho "run $* report=$SHADOWNET_REPORT_DIR" >> {0}\nsleep 2\necho done\n'.format(marker))
    fake.chmod(0o755)
    log = tmp_path / 'log' / 'reconcile.log'
    log.parent.mkdir()
    wrapper = render_wrapper(tmp_path, reconciler_ansible_playbook=str(fake), reconciler_log_file=str(log),
                             reconciler_lock_file=str(tmp_path / 'lock'), reconciler_env_file=str(tmp_path / 'env'))
    procs = [subprocess.Popen([wrapper]) for _ in range(2)]
    assert [p.wait(30) for p in procs] == [0, 0]
    assert marker.read_text().count('run ') == 1
    text = log.read_text()
    assert 'not started' in text and text.count('reconcile started') == 1 and 'rc=0' in text
    assert 'shadownet.proxmox.reconcile' in marker.read_text()
    assert '-e shadownet_report_keep=10 ' in marker.read_text()
    assert 'report=/var/lib/shadownet/reports' in marker.read_text()      # the role's default, exported


def test_reconciler_wrapper_is_stateless_without_a_history_path(tmp_path):
    """issue 15: the role's history path is optional; without one the wrapper exports no SHADOWNET_HISTORY, so the
    reconcile forecasts from PVE's own RRD (backend pve). With one it exports it (the sqlite cache)."""
    seen = tmp_path / 'seen'
    fake = tmp_path / 'fake-ansible-playbook'
    fake.write_text('#!/bin/sh\necho "history=${{SHADOWNET_HISTORY-unset}}" >> {0}\n'.format(seen))
    fake.chmod(0o755)
    common = dict(reconciler_ansible_playbook=str(fake), reconciler_log_file=str(tmp_path / 'log'),
                  reconciler_lock_file=str(tmp_path / 'lock'), reconciler_env_file=str(tmp_path / 'env'))
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith('SHADOWNET_'))
    stateless = render_wrapper(tmp_path, **common)
    assert 'SHADOWNET_HISTORY=' not in open(stateless).read()
    assert subprocess.run([stateless], env=env, timeout=30).returncode == 0
    (tmp_path / 'cached').mkdir()
    cached = render_wrapper(tmp_path / 'cached', reconciler_history_path='/var/lib/shadownet/h.sqlite', **common)
    assert subprocess.run([cached], env=env, timeout=30).returncode == 0
    assert seen.read_text().splitlines() == ['history=unset', 'history=/var/lib/shadownet/h.sqlite']

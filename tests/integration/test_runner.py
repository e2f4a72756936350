"""ansible-runner, the engine AWX runs jobs with, runs a playbook against the simulator from a private data dir.

The private data directory is laid out as AWX lays it out for a job: project/, inventory/ (the lab's dynamic
inventory source), env/envvars (what the PVE credential type injects), env/settings. The set_stats decisions
must come back in the job's artifacts (the playbook_on_stats event's artifact_data), which is where AWX reads them.
"""
import glob
import json
import os
import shutil
import subprocess

import pytest
import yaml

from test_inventory_plugin import add_lab_guests

ansible_runner = pytest.importorskip('ansible_runner')

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
PROBE = os.path.join(ROOT, 'tests', 'integration', 'files', 'runner_decide.yml')


def tracked(path):
    """True when the file is committed: a playbook another engineer is still writing is not used."""
    proc = subprocess.run(['git', 'ls-files', '--error-unmatch', path], cwd=ROOT, capture_output=True)
    return proc.returncode == 0


def private_data_dir(tmp_path, pvesim, playbook):
    pdd = tmp_path / 'pdd'
    for sub in ('project', 'inventory', 'env'):
        (pdd / sub).mkdir(parents=True)
    shutil.copy(playbook, str(pdd / 'project' / os.path.basename(playbook)))
    shutil.copy(os.path.join(ROOT, 'inventories', 'lab', 'pve.yml'), str(pdd / 'inventory' / 'pve.yml'))
    envvars = {
        'PROXMOX_HOST': pvesim.host, 'PROXMOX_PORT': str(pvesim.port), 'PROXMOX_USER': 'root@pam',
        'PROXMOX_TOKEN_ID': pvesim.token_id, 'PROXMOX_TOKEN_SECRET': pvesim.token_secret,
        'PROXMOX_CA_PATH': pvesim.cafile,
        'ANSIBLE_COLLECTIONS_PATH': os.path.join(ROOT, '.build', 'collections'),
        'ANSIBLE_PYTHON_INTERPRETER': os.path.join(VENV_BIN, 'python'),
        'ANSIBLE_INVENTORY_UNPARSED_FAILED': '1',
        'PATH': VENV_BIN + os.pathsep + os.environ.get('PATH', ''),
    }
    (pdd / 'env' / 'envvars').write_text(yaml.safe_dump(envvars))
    (pdd / 'env' / 'settings').write_text(yaml.safe_dump({'job_timeout': 240, 'suppress_ansible_output': True}))
    return pdd


def run(pdd, playbook):
    return ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, inventory=str(pdd / 'inventory'),
                              ident='job1', quiet=True)


def stats_event(pdd):
    for path in sorted(glob.glob(str(pdd / 'artifacts' / 'job1' / 'job_events' / '*.json'))):
        with open(path) as stream:
            event = json.load(stream)
        if event.get('event') == 'playbook_on_stats':
            return event
    return None


def test_runner_job_reports_set_stats_decisions(pvesim, tmp_path):
    add_lab_guests(pvesim.pve)
    pdd = private_data_dir(tmp_path, pvesim, PROBE)
    result = run(pdd, os.path.basename(PROBE))
    stdout = (pdd / 'artifacts' / 'job1' / 'stdout').read_text()
    assert (result.status, result.rc) == ("successful", 0), stdout[:1500] + stdout[-1500:]
    event = stats_event(pdd)
    assert event is not None
    decisions = event['event_data']['artifact_data']['shadownet_decisions']
    assert decisions == {'shop/web': {'action': 'none', 'reason': 'inventory probe', 'shadow': 'shop-web-shadow',
                                      'primaries': ['shop-web-1', 'shop-web-2'], 'shadow_status': 'running'}}
    # The artifacts AWX keeps: rc, status, the command (with the inventory source), and no secret in them.
    artifacts = pdd / 'artifacts' / 'job1'
    assert (artifacts / 'rc').read_text().strip() == '0'
    assert (artifacts / 'status').read_text().strip() == 'successful'
    command = json.loads((artifacts / 'command').read_text())
    assert str(pdd / 'inventory') in command['command']
    # What a job shows (stdout, events) never holds the token secret. (ansible-runner's own `command` artifact
    # records the whole environment: keep the private data directory private, as AWX does.)
    shown = [str(artifacts / 'stdout')] + glob.glob(str(artifacts / 'job_events' / '*.json'))
    assert len(shown) > 3
    for path in shown:
        with open(path, errors='replace') as stream:
            assert pvesim.token_secret not in stream.read(), path
    assert any(m == 'GET' and p.endswith('/cluster/resources') for m, p, b in pvesim.requests())


@pytest.mark.skipif(not tracked('playbooks/reconcile.yml'), reason='playbooks/reconcile.yml is not committed yet')
def test_runner_runs_the_reconciler_in_check_mode(pvesim, tmp_path):
    add_lab_guests(pvesim.pve)
    playbook = os.path.join(ROOT, 'playbooks', 'reconcile.yml')
    pdd = private_data_dir(tmp_path, pvesim, playbook)
    (pdd / 'env' / 'cmdline').write_text('--check')
    mark = pvesim.mark()
    result = run(pdd, 'reconcile.yml')
    stdout = (pdd / 'artifacts' / 'job1' / 'stdout').read_text()
    assert (result.status, result.rc) == ("successful", 0), stdout[:1500] + stdout[-1500:]
    event = stats_event(pdd)
    assert event is not None and event['event_data'].get('artifact_data'), 'reconcile.yml reported no set_stats'
    assert pvesim.writes(mark) == []  # check mode changes nothing

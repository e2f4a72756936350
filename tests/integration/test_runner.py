"""ansible-runner, the engine AWX runs jobs with, runs a playbook against the simulator from a private data dir.

The private data directory is laid out as AWX lays it out for a job: project/, inventory/ (the lab's dynamic
inventory source), env/envvars (what the PVE credential type injects), env/settings. The set_stats decisions
must come back in the job's artifacts (the playbook_on_stats event's artifact_data), which is where AWX reads them.
"""
import glob
import json
import os
import shutil

import ansible_runner  # requirements-dev.txt (scripts/setup-venv.sh)
import pytest
import yaml

from lab.inventory import add_lab_guests
from lab.playbook import ROOT, VENV_PY, ansible_env, run_ansible

PROBE = os.path.join(ROOT, 'tests', 'integration', 'files', 'runner_decide.yml')


def private_data_dir(tmp_path, pvesim, playbook):
    pdd = tmp_path / 'pdd'
    for sub in ('project', 'inventory', 'env'):
        (pdd / sub).mkdir(parents=True)
    shutil.copy(playbook, str(pdd / 'project' / os.path.basename(playbook)))
    shutil.copy(os.path.join(ROOT, 'inventories', 'lab', 'pve.yml'), str(pdd / 'inventory' / 'pve.yml'))
    # What the PVE credential injects, and the tests' Ansible settings (ansible-runner keeps its own stdout callback).
    env = ansible_env(pvesim, PROXMOX_TOKEN_ID=pvesim.token_id, ANSIBLE_INVENTORY_UNPARSED_FAILED='1',
                      ANSIBLE_STDOUT_CALLBACK=None)
    envvars = dict((k, v) for k, v in env.items() if k.startswith(('ANSIBLE_', 'PROXMOX_')) or k == 'PATH')
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


@pytest.mark.slow
def test_runner_runs_the_reconciler_and_its_decisions_are_artifacts(pvesim, pve_conn, tmp_path):
    # The same cluster and load as tests/integration/test_reconcile_playbook.py, but run as AWX runs a job:
    # ansible-runner, a private data directory, the PVE credential as env/envvars, the dynamic inventory.
    from lab.shop import RISING, SCALED_SHOP as TEMPLATE, build, inject, plan_of, primaries

    inject(pvesim, build(pvesim, pve_conn, plan_of(TEMPLATE)), RISING)
    pdd = private_data_dir(tmp_path, pvesim, os.path.join(ROOT, 'playbooks', 'reconcile.yml'))
    envvars = yaml.safe_load((pdd / 'env' / 'envvars').read_text())
    # The metrics history: a file here; on AWX, a shared store (docs/awx.md).
    envvars.update(SHADOWNET_HISTORY=str(tmp_path / 'history.sqlite'), OMP_NUM_THREADS='1',
                   OPENBLAS_NUM_THREADS='1', SHADOWNET_REPORT_DIR=str(tmp_path / 'reports'))
    (pdd / 'env' / 'envvars').write_text(yaml.safe_dump(envvars))
    (pdd / 'env' / 'extravars').write_text(yaml.safe_dump({
        'shadownet_templates': [TEMPLATE], 'ansible_python_interpreter': VENV_PY}))

    result = run(pdd, 'reconcile.yml')
    stdout = (pdd / 'artifacts' / 'job1' / 'stdout').read_text()
    assert (result.status, result.rc) == ('successful', 0), stdout[:1500] + stdout[-1500:]
    event = stats_event(pdd)
    assert event is not None
    reconcile = event['event_data']['artifact_data']['shadownet_reconcile']
    assert reconcile['decisions'] == ['scale_up'], reconcile
    assert len(reconcile['lines']) == 1 and reconcile['lines'][0].startswith('shop/web:')
    # The HTML report's path is an artifact too (the file is where the job ran: docs/awx.md).
    assert os.path.dirname(reconcile['report']) == str(tmp_path / 'reports') and os.path.isfile(reconcile['report'])
    assert primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']
    # The inventory source of the job sees the new instance with its identity.
    listing = run_ansible('ansible-inventory', ['-i', pdd / 'inventory', '--list'], env=envvars, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert 'shop-web-3' in json.loads(listing.stdout)['sn_shop_web']['hosts']

"""The port_mirror role on PVE nodes (pvesh, pvesm and qm stand-ins): hookscript= set with `qm set` once on the
mirrored VMs of its node; the file on every node of the cluster, or refused before any change."""
import json
import os

import pytest

from lab.playbook import VENV_PY, ansible_env, run_ansible
from lab.pve_cli import LOCAL, fake_pve_cli

# A stand-in for PVE's qm: VMs 100 (the primary) and 900 (its shadow) live on this node; 300 lives elsewhere.
FAKE_QM = r'''#!/bin/sh
state="$QM_STATE"
case "$1" in
  config)
    case "$2" in 100|900) ;; *) echo "Configuration file 'nodes/pve2/qemu-server/$2.conf' does not exist" >&2; exit 2 ;; esac
    echo "name: vm$2"
    grep -h "^$2 " "$state" 2>/dev/null | sed 's/^[0-9]* /hookscript: /'
    ;;
  set)
    echo "$2 $4" >> "$state"
    echo "$*" >> "$QM_LOG"
    ;;
esac
'''


def play(tmp_path, env, hosts=('localhost',), check=False, **role_vars):
    """Run the role on ``hosts`` (all local connections); the CompletedProcess."""
    rvars = {'port_mirror_state_file': str(tmp_path / 'etc' / 'mirrors.json'),
             'port_mirror_lib_dir': str(tmp_path / 'lib'), 'port_mirror_apply': False,
             'port_mirror_mirrors': [
                 {'source_vmid': 100, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 0, 'mode': 'full'},
                 {'source_vmid': 300, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 1, 'mode': 'full'}]}
    rvars.update(role_vars)
    inventory = tmp_path / 'hosts.json'
    inventory.write_text(json.dumps({'all': {'hosts': dict((h, {'ansible_connection': 'local',
                                                                'ansible_python_interpreter': VENV_PY})
                                                           for h in hosts)}}))
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{'hosts': 'all', 'gather_facts': False,
                                     'roles': [{'role': 'shadownet.proxmox.port_mirror', 'vars': rvars}]}]))
    return run_ansible('ansible-playbook', [playbook, '-i', inventory] + (['--check'] if check else []), environ=env)


def run_role(tmp_path, env):
    proc = play(tmp_path, env, port_mirror_snippets_dir=str(tmp_path / 'snippets'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def node_env(tmp_path, nodes, storage=None, snippets='pve-snippets'):
    """An environment whose PATH starts with stand-ins for pvesh, pvesm (``nodes``, ``storage``) and qm."""
    bindir = tmp_path / 'bin'
    fake_pve_cli(bindir, nodes, storage or LOCAL, tmp_path / snippets)
    qm = bindir / 'qm'
    qm.write_text(FAKE_QM)
    qm.chmod(0o755)
    env = ansible_env(QM_STATE=tmp_path / 'qm.state', QM_LOG=tmp_path / 'qm.log')
    env['PATH'] = str(bindir) + os.pathsep + env['PATH']     # these first
    return env


def test_role_sets_hookscript_on_local_mirrored_vms_once(tmp_path):
    env = node_env(tmp_path, {'localhost': 'online'})
    run_role(tmp_path, env)
    calls = sorted((tmp_path / 'qm.log').read_text().splitlines())
    assert calls == ['set 100 --hookscript local:snippets/shadownet-hook.py',
                     'set 900 --hookscript local:snippets/shadownet-hook.py']
    run_role(tmp_path, env)
    assert sorted((tmp_path / 'qm.log').read_text().splitlines()) == calls  # already set: no second qm set


@pytest.mark.parametrize('check', [False, True])
def test_a_cluster_node_outside_the_play_is_refused_before_any_change(tmp_path, check):
    """PVE does not start a VM whose hookscript file is missing on the node that starts it (pve-guest-common
    GuestHelpers.pm check_hookscript, exec_hookscript with stop_on_error at pre-start): with the file on node-local
    storage, every node of the cluster must run the role."""
    env = node_env(tmp_path, {'localhost': 'online', 'pve2': 'online', 'pve3': 'offline'})
    proc = play(tmp_path, env, check=check)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert 'nodes this play does not run on: pve2 (online), pve3 (offline)' in out, out[-3000:]
    assert 'port_mirror_snippets_storage' in out and 'shared' in out and 'Nothing was changed' in out
    assert not (tmp_path / 'pve-snippets').exists() and not (tmp_path / 'etc').exists()
    assert not (tmp_path / 'qm.log').exists()


def test_every_node_in_the_play_gets_the_file(tmp_path):
    env = node_env(tmp_path, {'pve1': 'online', 'pve2': 'online'})
    proc = play(tmp_path, env, hosts=('pve1', 'pve2'))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert os.access(tmp_path / 'pve-snippets' / 'shadownet-hook.py', os.X_OK)


def test_a_shared_storage_needs_no_other_node(tmp_path):
    nfs = {'storage': 'snip', 'type': 'nfs', 'shared': 1, 'content': 'snippets', 'path': '/mnt/pve/snip',
           'server': '192.0.2.1', 'export': '/snip'}
    env = node_env(tmp_path, {'localhost': 'online', 'pve2': 'online'}, storage=nfs)
    proc = play(tmp_path, env, port_mirror_snippets_storage='snip')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert os.access(tmp_path / 'pve-snippets' / 'shadownet-hook.py', os.X_OK)
    assert 'set 100 --hookscript snip:snippets/shadownet-hook.py' in (tmp_path / 'qm.log').read_text()
    # A directory storage marked shared (`shared 1` in storage.cfg) is shared too; one without it is not.
    for shared, ok in ((1, True), (0, False)):
        env = node_env(tmp_path, {'localhost': 'online', 'pve2': 'online'},
                       storage=dict(LOCAL, storage='snip', shared=shared))
        assert (play(tmp_path, env, port_mirror_snippets_storage='snip').returncode == 0) is ok


def test_the_snippets_directory_comes_from_pvesm_path(tmp_path):
    """pve-storage Plugin.pm get_subdir: the storage's content-dirs may put snippets elsewhere than <path>/snippets."""
    env = node_env(tmp_path, {'localhost': 'online'}, snippets='content-dirs/hooks')
    proc = play(tmp_path, env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert os.access(tmp_path / 'content-dirs' / 'hooks' / 'shadownet-hook.py', os.X_OK)


def test_a_missing_storage_is_named(tmp_path):
    env = node_env(tmp_path, {'localhost': 'online'})
    proc = play(tmp_path, env, port_mirror_snippets_storage='nosuch')
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'pvesh get /storage/nosuch --output-format json' in out and \
        "storage 'nosuch' does not exist" in out, out[-3000:]
    assert not (tmp_path / 'etc').exists()

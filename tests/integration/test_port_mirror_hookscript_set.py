"""The port_mirror role sets hookscript= on the mirrored VMs that live on its node, with `qm set`, once."""
import json
import os

from lab.playbook import VENV_PY, ansible_env, run_ansible

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


def run_role(tmp_path, env):
    dirs = {'port_mirror_snippets_dir': str(tmp_path / 'snippets'),
            'port_mirror_state_file': str(tmp_path / 'etc' / 'mirrors.json'),
            'port_mirror_lib_dir': str(tmp_path / 'lib'), 'port_mirror_apply': False,
            'port_mirror_mirrors': [
                {'source_vmid': 100, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 0, 'mode': 'full'},
                {'source_vmid': 300, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 1, 'mode': 'full'}]}
    playbook = tmp_path / 'play.yml'
    playbook.write_text(json.dumps([{'hosts': 'localhost', 'connection': 'local', 'gather_facts': False,
                                     'roles': [{'role': 'shadownet.proxmox.port_mirror', 'vars': dirs}]}]))
    proc = run_ansible('ansible-playbook', [playbook, '-e', 'ansible_python_interpreter=' + VENV_PY], environ=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    return proc.stdout


def test_role_sets_hookscript_on_local_mirrored_vms_once(tmp_path):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    qm = bindir / 'qm'
    qm.write_text(FAKE_QM)
    qm.chmod(0o755)
    env = ansible_env(QM_STATE=tmp_path / 'qm.state', QM_LOG=tmp_path / 'qm.log')
    env['PATH'] = str(bindir) + os.pathsep + env['PATH']     # this qm first
    run_role(tmp_path, env)
    calls = sorted((tmp_path / 'qm.log').read_text().splitlines())
    assert calls == ['set 100 --hookscript local:snippets/shadownet-hook.py',
                     'set 900 --hookscript local:snippets/shadownet-hook.py']
    run_role(tmp_path, env)
    assert sorted((tmp_path / 'qm.log').read_text().splitlines()) == calls  # already set: no second qm set

"""The port_mirror role's VM hookscript never fails a VM's start or stop over its state file.

PVE runs the hookscript with run_command, which dies on a non-zero exit; at pre-start that stops the
VM's start (pve-guest-common GuestHelpers::exec_hookscript with $stop_on_error, called by qemu-server
QemuServer::vm_start_nolock with 1).
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOOK_SRC = os.path.join(ROOT, 'roles', 'port_mirror', 'files', 'shadownet-hook.py')

# A stand-in for the installed mirror library (shadownet_mirror.py): records what the hook asks for.
FAKE_LIB = '''
class MirrorError(Exception):
    pass


class Spec:
    def __init__(self, **kw):
        self.source = (kw['source_vmid'], kw['source_nic'])
        self.target = (kw.get('target_vmid'), kw.get('target_nic'))


def build_spec(**kw):
    if not str(kw['source_vmid']).isdigit():
        raise MirrorError('bad vmid %r' % (kw['source_vmid'],))
    return Spec(**kw)


class MirrorManager:
    def __init__(self, run, netns=None):
        self.netns = netns

    def ensure_present(self, spec, ignore_missing=False):
        return {'msg': 'applied %s->%s' % (spec.source, spec.target), 'changed': True}

    def ensure_absent(self, source, target):
        return {'msg': 'removed %s->%s' % (source, target), 'changed': True}
'''


@pytest.fixture(name='hook')
def hook_module():
    spec = importlib.util.spec_from_file_location('shadownet_hook_under_test', HOOK_SRC)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(name='lib')
def fake_lib(tmp_path, monkeypatch):
    libdir = tmp_path / 'lib'
    libdir.mkdir()
    (libdir / 'shadownet_mirror.py').write_text(FAKE_LIB)
    monkeypatch.delitem(sys.modules, 'shadownet_mirror', raising=False)
    yield libdir
    sys.modules.pop('shadownet_mirror', None)


def run(hook, tmp_path, lib, vmid, phase, state, capsys):
    path = tmp_path / 'mirrors.json'
    path.write_text(state if isinstance(state, str) else json.dumps(state))
    rc = hook.main([str(vmid), phase], {'SHADOWNET_MIRRORS': str(path), 'SHADOWNET_LIB': str(lib)})
    return rc, capsys.readouterr().out


DAMAGED = [
    {'mirrors': ['not a mirror', 7, None]},
    {'mirrors': [['100', '900']]},
    ['x'],
    {'mirrors': {'source_vmid': 100}},
    {'mirrors': [{'source_vmid': 100, 'target_vmid': 900}], 'netns': ['not', 'a', 'name']},
    '{"mirrors": [',
    '\xff\xfe garbage',
]


@pytest.mark.parametrize('state', DAMAGED)
@pytest.mark.parametrize('phase', ['pre-start', 'post-start', 'pre-stop', 'post-stop'])
def test_a_damaged_state_file_never_fails_a_phase(hook, tmp_path, lib, capsys, state, phase):
    rc, out = run(hook, tmp_path, lib, 100, phase, state, capsys)
    assert rc == 0, out


def test_pre_start_reads_nothing(hook, tmp_path, lib, capsys, monkeypatch):
    def refuse(path):
        raise AssertionError('pre-start read the state file')
    monkeypatch.setattr(hook, 'load_state', refuse)
    rc, out = run(hook, tmp_path, lib, 100, 'pre-start', {'mirrors': [{'source_vmid': 100}]}, capsys)
    assert rc == 0 and out == ''


def test_entries_that_are_not_mappings_are_logged_and_the_rest_applied(hook, tmp_path, lib, capsys):
    state = {'mirrors': ['junk', {'source_vmid': 100, 'source_nic': 0, 'target_vmid': 900, 'target_nic': 0},
                         {'source_vmid': 'abc', 'target_vmid': 100}]}
    rc, out = run(hook, tmp_path, lib, 100, 'post-start', state, capsys)
    assert rc == 0
    assert "ignoring 1 entries that are not mappings: ['junk']" in out
    assert 'applied (100, 0)->(900, 0) (changed)' in out
    assert "ERROR apply" in out and 'bad vmid' in out          # the bad entry is logged, not raised
    rc, out = run(hook, tmp_path, lib, 900, 'pre-stop', state, capsys)
    assert rc == 0 and 'removed (100, 0)->(900, 0) (changed)' in out


def test_actions_for_skips_non_mappings_and_unknown_phases(hook):
    mirrors = ['x', None, {'source_vmid': 100, 'target_vmid': 900}]
    assert hook.actions_for(mirrors, '100', 'post-start') == [('apply', mirrors[2])]
    assert hook.actions_for(mirrors, 900, 'post-stop') == [('remove', mirrors[2])]
    assert not hook.actions_for(mirrors, 100, 'pre-start')


def test_the_script_exits_zero_as_pve_runs_it(tmp_path):
    """`<script> <vmid> <phase>`, as PVE's run_command does; a damaged state file at every phase."""
    state = tmp_path / 'mirrors.json'
    state.write_text(json.dumps({'mirrors': ['not a mirror']}))
    env = dict(os.environ, SHADOWNET_MIRRORS=str(state), SHADOWNET_LIB=str(tmp_path / 'nolib'))
    for phase in ('pre-start', 'post-start', 'pre-stop', 'post-stop'):
        proc = subprocess.run([sys.executable, HOOK_SRC, '100', phase], capture_output=True, text=True, env=env,
                              timeout=60, check=False)
        assert proc.returncode == 0, (phase, proc.stdout, proc.stderr)
    proc = subprocess.run([sys.executable, HOOK_SRC, '100', 'reboot'], capture_output=True, text=True, env=env,
                          timeout=60, check=False)
    assert proc.returncode == 2 and 'usage' in proc.stderr

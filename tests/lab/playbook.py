"""Ansible's commands from the tests, as a user runs them: the project's venv, the collection from .build/collections,
plain default output, and (with a simulator) the PROXMOX_* variables the modules read; plus the PLAY RECAP.

`ansible_env` is the one place that builds the environment of an ansible, ansible-playbook, ansible-inventory or
ansible-runner run; `run_ansible` / `ansible_playbook` run the commands with it.
"""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
VENV_PY = os.path.join(VENV_BIN, 'python')
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
PLAYBOOKS = os.path.join(ROOT, 'playbooks')

# Every run gets these (``extra`` may override them).
DEFAULTS = dict(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=VENV_PY, ANSIBLE_NOCOLOR='1',
                ANSIBLE_FORCE_COLOR='0', ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_STDOUT_CALLBACK='default',
                ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0')

_RECAP = re.compile(r'^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$', re.M)


def ansible_env(sim=None, **extra):
    """The environment of one Ansible run: the caller's environment without its own ANSIBLE_* and PROXMOX_*
    variables (a developer's settings never leak into a test), the venv first on PATH, :data:`DEFAULTS`, the
    PROXMOX_* variables of ``sim`` (a SimServer) when given, then ``extra`` (a value of None removes that variable).
    """
    env = dict((k, v) for k, v in os.environ.items() if not k.startswith(('ANSIBLE_', 'PROXMOX_')))
    env.update(DEFAULTS)
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    if sim is not None:
        env.update(sim.environ())
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def run_ansible(tool, args, sim=None, env=None, timeout=300, cwd=ROOT, environ=None, **kwargs):
    """Run the venv's ``tool`` (ansible, ansible-playbook, ansible-inventory, ...) with ``args`` in
    ``ansible_env(sim, **env)`` (or in ``environ``, one made by :func:`ansible_env` already); the CompletedProcess,
    text output captured."""
    argv = [os.path.join(VENV_BIN, tool)] + [str(arg) for arg in args]
    if environ is None:
        environ = ansible_env(sim, **(env or {}))
    return subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False,
                          **kwargs)


def ansible_playbook(args, sim=None, env=None, timeout=300, cwd=ROOT):
    """Run ``ansible-playbook ARGS`` (a playbook name without a slash is taken from playbooks/); the result."""
    argv = []
    for arg in args:
        arg = str(arg)
        if arg.endswith('.yml') and '/' not in arg:
            arg = os.path.join(PLAYBOOKS, arg)
        argv.append(arg)
    return run_ansible('ansible-playbook', argv, sim=sim, env=env, timeout=timeout, cwd=cwd)


def recaps(stdout):
    """{host: {ok, changed, unreachable, failed, skipped, rescued, ignored}} from the last PLAY RECAP."""
    text = stdout[stdout.rfind('PLAY RECAP'):] if 'PLAY RECAP' in stdout else ''
    return dict((host, dict((k, int(v)) for k, v in (f.split('=') for f in counters.split())))
                for host, counters in _RECAP.findall(text))


def recap(proc_or_stdout, host='localhost'):
    """One host's PLAY RECAP counters; fails the test, with the output, when there is none."""
    stdout = getattr(proc_or_stdout, 'stdout', proc_or_stdout)
    found = recaps(stdout).get(host)
    assert found is not None, 'no PLAY RECAP line for {0}:\n{1}{2}'.format(
        host, stdout[-3000:], getattr(proc_or_stdout, 'stderr', '')[-2000:])
    return found

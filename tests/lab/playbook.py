"""ansible-playbook from the tests, as a user runs it: the project's venv, the collection from .build/collections,
plain default output, and (with a simulator) the PROXMOX_* variables the modules read; plus the PLAY RECAP."""
import os
import re
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.join(ROOT, '.venv', 'bin')
VENV_PY = os.path.join(VENV_BIN, 'python')
COLLECTIONS = os.path.join(ROOT, '.build', 'collections')
PLAYBOOKS = os.path.join(ROOT, 'playbooks')

_RECAP = re.compile(r'^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$', re.M)


def playbook_env(sim=None, **extra):
    """The environment of one ansible-playbook run (``sim``: a SimServer whose PROXMOX_* variables to add)."""
    env = dict(os.environ)
    if sim is not None:
        env.update(sim.environ())
    env.update(ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_NOCOLOR='1', ANSIBLE_FORCE_COLOR='0',
               ANSIBLE_RETRY_FILES_ENABLED='0', ANSIBLE_STDOUT_CALLBACK='default', ANSIBLE_LOCALHOST_WARNING='0',
               ANSIBLE_INVENTORY_UNPARSED_WARNING='0')
    env['PATH'] = VENV_BIN + os.pathsep + env.get('PATH', '')
    env.update(extra)
    return env


def ansible_playbook(args, sim=None, env=None, timeout=300, cwd=ROOT):
    """Run ``ansible-playbook ARGS`` (a playbook name without a slash is taken from playbooks/); the result."""
    argv = [os.path.join(VENV_BIN, 'ansible-playbook')]
    for arg in args:
        arg = str(arg)
        if arg.endswith('.yml') and '/' not in arg:
            arg = os.path.join(PLAYBOOKS, arg)
        argv.append(arg)
    return subprocess.run(argv, env=playbook_env(sim, **(env or {})), capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, check=False)


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

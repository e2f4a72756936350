# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state_replication role, differential fidelity, with real processes in the namespace lab.

A primary (vm100) and its shadow (vm900) are guest namespaces on one bridge. The shadow runs a real sshd
(Debian openssh-server, its own config, host key and port, in a temp dir). The role runs with
ansible-playbook *inside the primary's namespace* (connection local; the shadow's tasks are delegated to
localhost, i.e. the same file system, with every install path pointed into the temp dir), so the sync it
runs at install time and the ones the test runs afterwards really cross the lab network over SSH.
"""
import json
import os
import subprocess

import pytest

from lab.netns import netlab, wait_port  # noqa: F401  # pylint: disable=unused-import
from lab.playbook import VENV_BIN, VENV_PY as PYTHON, ansible_env

PRIMARY_IP = '10.77.0.10'
SHADOW_IP = '10.77.0.90'
PORT = 2222


PLAYBOOK = """
- name: State replication
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: shadownet.proxmox.state_replication
"""


@pytest.fixture
def pair(netlab, tmp_path, sshd_privsep_dir):
    """The lab: primary and shadow namespaces, sshd on the shadow, directories for both sides."""
    netlab.bridge('vmbr0')
    primary = netlab.vm(100, [('vmbr0', PRIMARY_IP + '/24')])
    shadow = netlab.vm(900, [('vmbr0', SHADOW_IP + '/24')])
    sshd_dir = tmp_path / 'sshd'
    sshd_dir.mkdir()
    host_key = sshd_dir / 'host_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(host_key)], check=True)
    shadow_root = tmp_path / 'shadow'
    (shadow_root / 'root' / '.ssh').mkdir(parents=True)
    authorized = shadow_root / 'root' / '.ssh' / 'authorized_keys'
    config = sshd_dir / 'sshd_config'
    config.write_text('\n'.join([
        'Port %d' % PORT,
        'ListenAddress %s' % SHADOW_IP,
        'HostKey %s' % host_key,
        'PidFile %s' % (sshd_dir / 'sshd.pid'),
        'AuthorizedKeysFile %s' % authorized,
        'StrictModes no',
        'UsePAM no',
        'PermitRootLogin prohibit-password',
        'PubkeyAuthentication yes',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'LogLevel VERBOSE',
        '',
    ]))
    log = open(sshd_dir / 'sshd.log', 'w')
    try:
        proc = netlab.spawn(shadow.ns, ['/usr/sbin/sshd', '-D', '-e', '-f', str(config)], stderr=log)
        wait_port(primary.ns, SHADOW_IP, PORT, proc)
        (tmp_path / 'cron.d').mkdir()
        (tmp_path / 'primary' / 'srv' / 'app').mkdir(parents=True)
        (tmp_path / 'primary' / 'var' / 'lib' / 'db').mkdir(parents=True)
        yield {
            'lab': netlab, 'primary': primary, 'shadow': shadow, 'tmp': tmp_path, 'sshd': proc,
            'sshd_log': sshd_dir / 'sshd.log', 'host_key': host_key, 'authorized': authorized,
            'src': tmp_path / 'primary', 'dest': shadow_root, 'etc': tmp_path / 'etc',
            'lib': tmp_path / 'lib', 'state': tmp_path / 'state', 'cron': tmp_path / 'cron.d',
        }
    finally:
        log.close()


def _role_vars(p, **extra):
    data = {
        'ansible_python_interpreter': PYTHON,
        'state_replication_shadow': 'localhost',
        'state_replication_shadow_address': SHADOW_IP,
        'state_replication_ssh_port': PORT,
        'state_replication_fidelity': 'differential',
        'state_replication_interval': '15m',
        'state_replication_paths': ['/srv/app', '/var/lib/db'],
        'state_replication_excludes': ['*.tmp'],
        'state_replication_source_root': str(p['src']),
        'state_replication_dest_root': str(p['dest']),
        'state_replication_key_dir': str(p['etc']),
        'state_replication_state_dir': str(p['state']),
        'state_replication_script_dir': str(p['lib']),
        'state_replication_authorized_keys': str(p['authorized']),
        'state_replication_shadow_host_key': str(p['host_key']) + '.pub',
        'state_replication_scheduler': 'cron',
        'state_replication_cron_dir': str(p['cron']),
        'state_replication_install_packages': False,
    }
    data.update(extra)
    return data


def _play(p, ns, **extra):
    """Run the role with ansible-playbook inside namespace ns; returns (CompletedProcess, recap dict)."""
    book = p['tmp'] / 'play.yml'
    book.write_text(PLAYBOOK)
    varfile = p['tmp'] / 'vars.json'
    varfile.write_text(json.dumps(_role_vars(p, **extra)))
    env = ansible_env(ANSIBLE_LOCAL_TEMP=p['tmp'] / 'ansible-tmp', ANSIBLE_REMOTE_TEMP=p['tmp'] / 'ansible-tmp')
    argv = ['ip', 'netns', 'exec', ns] if ns else []
    argv += [os.path.join(VENV_BIN, 'ansible-playbook'), '-i', 'localhost,', '-e', '@' + str(varfile), str(book)]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=240, env=env, check=False)
    recap = {}
    for line in res.stdout.splitlines():
        if line.startswith('localhost') and 'ok=' in line:
            recap = dict(part.split('=') for part in line.split()[2:])
    return res, recap


def _sync(p):
    """Run the installed sync command in the primary's namespace, as the timer/cron job would."""
    return p['lab'].run(p['primary'].ns, [str(p['lib'] / 'sn-repl-sync.sh'), str(p['etc'] / 'shadownet-repl.conf')],
                        check=False)


def _ssh(p, *remote):
    return p['lab'].run(p['primary'].ns, [
        'ssh', '-F', 'none', '-i', str(p['etc'] / 'id_ed25519_shadownet-repl'), '-p', str(PORT),
        '-o', 'BatchMode=yes', '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=yes',
        '-o', 'UserKnownHostsFile=%s' % (p['etc'] / 'known_hosts_shadownet-repl'),
        '-o', 'GlobalKnownHostsFile=/dev/null', 'root@' + SHADOW_IP] + list(remote), check=False, timeout=30)


def _rsync(p, *args):
    ssh = ('ssh -F none -i %s -p %d -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile=%s '
           '-o GlobalKnownHostsFile=/dev/null' % (p['etc'] / 'id_ed25519_shadownet-repl', PORT,
                                                  p['etc'] / 'known_hosts_shadownet-repl'))
    return p['lab'].run(p['primary'].ns, ['rsync', '-a', '-e', ssh] + list(args), check=False, timeout=30)


@pytest.mark.netns
def test_differential_replication_is_one_way_and_restricted(pair):
    p = pair
    app_src, db_src = p['src'] / 'srv' / 'app', p['src'] / 'var' / 'lib' / 'db'
    app_dst, db_dst = p['dest'] / 'srv' / 'app', p['dest'] / 'var' / 'lib' / 'db'
    (app_src / 'index.html').write_text('v1\n')
    (app_src / 'sub').mkdir()
    (app_src / 'sub' / 'deep.txt').write_text('deep\n')
    (app_src / 'scratch.tmp').write_text('excluded\n')
    (db_src / 'db.dat').write_text('rows=1\n')

    res, recap = _play(p, p['primary'].ns)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert recap.get('failed') == '0' and int(recap.get('changed', 0)) > 0, recap

    # What the role installed: a forced, restricted key on the shadow; a pinned host key; the cron job.
    line = p['authorized'].read_text().strip()
    assert line.startswith('command="%s %s ' % (p['lib'] / 'sn-repl-gate.sh', p['etc'] / 'allowed-localhost'))
    assert '",restrict ssh-ed25519 ' in line and line.endswith(' shadownet-repl:localhost')
    assert (p['etc'] / 'allowed-localhost').read_text().split() == [str(app_dst), str(db_dst)]
    known = (p['etc'] / 'known_hosts_shadownet-repl').read_text().split()
    assert known[0] == '[%s]:%d' % (SHADOW_IP, PORT)
    assert known[1:3] == (p['host_key'].parent / 'host_ed25519.pub').read_text().split()[:2]
    cron = (p['cron'] / 'shadownet-repl').read_text()
    assert '\n*/15 * * * * root %s/sn-repl-sync.sh ' % p['lib'] in cron

    # The sync the role ran at install time crossed the lab network over SSH.
    assert (app_dst / 'index.html').read_text() == 'v1\n'
    assert (app_dst / 'sub' / 'deep.txt').read_text() == 'deep\n'
    assert (db_dst / 'db.dat').read_text() == 'rows=1\n'
    assert not (app_dst / 'scratch.tmp').exists()  # excluded
    assert (p['state'] / 'last_success').read_text().strip().isdigit()
    assert 'Accepted publickey for root from %s' % PRIMARY_IP in p['sshd_log'].read_text()

    # A file changed on the primary reaches the shadow with the next scheduled run.
    (app_src / 'index.html').write_text('v2\n')
    (db_src / 'new.dat').write_text('rows=2\n')
    res = _sync(p)
    assert res.returncode == 0, res.stderr
    assert (app_dst / 'index.html').read_text() == 'v2\n'
    assert (db_dst / 'new.dat').read_text() == 'rows=2\n'

    # A file created on the shadow never reaches the primary (the mirror drops it on the next run).
    (app_dst / 'shadow-only.txt').write_text('made on the shadow\n')
    res = _sync(p)
    assert res.returncode == 0, res.stderr
    assert not (app_src / 'shadow-only.txt').exists()
    assert not (app_dst / 'shadow-only.txt').exists()

    # The key cannot run commands on the shadow, read from it, or write anywhere else.
    marker = p['tmp'] / 'pwned'
    res = _ssh(p, 'id')
    assert res.returncode != 0 and 'uid=' not in res.stdout
    assert 'refused' in res.stderr
    res = _ssh(p, 'touch %s' % marker)
    assert res.returncode != 0 and not marker.exists()
    res = _ssh(p)  # interactive login
    assert res.returncode != 0
    pulled = p['tmp'] / 'pulled'
    res = _rsync(p, 'root@%s:%s/' % (SHADOW_IP, app_dst), str(pulled) + '/')
    assert res.returncode != 0 and 'reading from the shadow is not allowed' in res.stderr
    assert not (pulled / 'index.html').exists()
    elsewhere = p['tmp'] / 'elsewhere'
    elsewhere.mkdir()
    res = _rsync(p, str(app_src) + '/', 'root@%s:%s/' % (SHADOW_IP, elsewhere))
    assert res.returncode != 0 and 'not a replicated path' in res.stderr
    assert list(elsewhere.iterdir()) == []
    res = _rsync(p, str(app_src) + '/', 'root@%s:%s/../../../elsewhere/' % (SHADOW_IP, app_dst))
    assert res.returncode != 0
    assert list(elsewhere.iterdir()) == []

    # Running the role again changes nothing.
    res, recap = _play(p, p['primary'].ns)
    assert res.returncode == 0, res.stdout[-4000:]
    assert recap.get('changed') == '0', res.stdout[-4000:]


@pytest.fixture
def local_dirs(tmp_path):
    """The install locations of _role_vars without a lab (the event hook and preflight need no network)."""
    return {'tmp': tmp_path, 'src': tmp_path / 'primary', 'dest': tmp_path / 'shadow', 'etc': tmp_path / 'etc',
            'lib': tmp_path / 'lib', 'state': tmp_path / 'state', 'cron': tmp_path / 'cron.d',
            'authorized': tmp_path / 'shadow' / 'root' / '.ssh' / 'authorized_keys',
            'host_key': tmp_path / 'no-host-key'}


def test_event_hook_runs_on_the_shadow_and_bad_settings_fail_clearly(local_dirs):
    p = local_dirs
    out = p['tmp'] / 'hook-ran'
    res, recap = _play(p, None, state_replication_fidelity='event',
                       state_replication_event_hook={'command': 'echo "$SN_REPL_SHADOW" > %s' % out})
    assert res.returncode == 0, res.stdout[-4000:]
    assert out.read_text() == 'localhost\n'
    assert not p['authorized'].exists()  # event installs no key

    res, recap = _play(p, None, state_replication_paths=['/srv/app', '/srv/app/sub', 'relative'])
    assert res.returncode != 0
    assert 'bad: relative; nested: /srv/app/sub inside /srv/app' in res.stdout
    # The role's messages are the Python rules' (module_utils/failover/replication.py), each naming the variable.
    assert 'state_replication_paths: /srv/app/sub lies inside /srv/app; list only /srv/app' in res.stdout
    assert "state_replication_paths: path 'relative' must be absolute" in res.stdout
    res, recap = _play(p, None, state_replication_fidelity='full', state_replication_interval='1m')
    assert res.returncode != 0 and 'the interval must be' in res.stdout and 'at least 300s' in res.stdout
    assert 'state_replication_interval: full replication copies' in res.stdout

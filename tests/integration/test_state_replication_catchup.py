# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The state_replication role's catch-up direction (before fail-back), with real processes in the namespace lab.

A primary (vm100) and its shadow (vm900) are guest namespaces on one bridge, each with a real sshd of its own
(Debian openssh-server, own config, host key and port, in a temp dir). Unlike test_state_replication.py, the
inventory has two hosts, ``primary`` and ``shadow``, both on the local connection but with a Python interpreter
that enters that host's namespace (``ip netns exec``): every task, including the ones delegated to the shadow,
runs in the namespace of the host it names. So the forward sync really leaves the primary's namespace and the
catch-up really leaves the shadow's, both over SSH across the lab bridge.
"""
import json
import os
import re
import subprocess
import time

import pytest

from lab.netns import netlab, wait_port  # noqa: F401  # pylint: disable=unused-import
from lab.playbook import VENV_PY as PYTHON, ansible_playbook, run_ansible
from lab.shop import SHOP, build, plan_of

PRIMARY_IP = '10.78.0.10'
SHADOW_IP = '10.78.0.90'
SHADOW_PORT = 2222
PRIMARY_PORT = 2223
PUSH_TASK = "Push the shadow's state back into the primary"

PLAYBOOK = """
- name: State replication
  hosts: primary
  gather_facts: false
  roles:
    - role: shadownet.proxmox.state_replication
"""


def _sshd(lab, ns, tmp, name, addr, port, authorized):
    """A real sshd in namespace ns, for root with its own authorized_keys file; returns (proc, host key, log)."""
    sshd_dir = tmp / ('sshd-' + name)
    sshd_dir.mkdir()
    host_key = sshd_dir / 'host_ed25519'
    subprocess.run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-f', str(host_key)], check=True)
    config = sshd_dir / 'sshd_config'
    config.write_text('\n'.join([
        'Port %d' % port, 'ListenAddress %s' % addr, 'HostKey %s' % host_key,
        'PidFile %s' % (sshd_dir / 'sshd.pid'), 'AuthorizedKeysFile %s' % authorized, 'StrictModes no',
        'UsePAM no', 'PermitRootLogin prohibit-password', 'PubkeyAuthentication yes',
        'PasswordAuthentication no', 'KbdInteractiveAuthentication no', 'LogLevel VERBOSE', '']))
    log = open(sshd_dir / 'sshd.log', 'w')  # pylint: disable=consider-using-with
    proc = lab.spawn(ns, ['/usr/sbin/sshd', '-D', '-e', '-f', str(config)], stderr=log)
    log.close()  # the child has its own descriptor
    return proc, host_key, sshd_dir / 'sshd.log'


@pytest.fixture
def pair(netlab, tmp_path, sshd_privsep_dir):
    """Primary and shadow namespaces, an sshd in each, interpreters that enter them, the two file trees."""
    netlab.bridge('vmbr0')
    primary = netlab.vm(100, [('vmbr0', PRIMARY_IP + '/24')])
    shadow = netlab.vm(900, [('vmbr0', SHADOW_IP + '/24')])
    src, dest = tmp_path / 'primary', tmp_path / 'shadow'
    for root in (src, dest):
        (root / 'root' / '.ssh').mkdir(parents=True)
    (src / 'srv' / 'app').mkdir(parents=True)
    (src / 'var' / 'lib' / 'db').mkdir(parents=True)
    sshd_s, key_s, log_s = _sshd(netlab, shadow.ns, tmp_path, 'shadow', SHADOW_IP, SHADOW_PORT,
                                 dest / 'root' / '.ssh' / 'authorized_keys')
    sshd_p, key_p, log_p = _sshd(netlab, primary.ns, tmp_path, 'primary', PRIMARY_IP, PRIMARY_PORT,
                                 src / 'root' / '.ssh' / 'authorized_keys')
    wait_port(primary.ns, SHADOW_IP, SHADOW_PORT, sshd_s)
    wait_port(shadow.ns, PRIMARY_IP, PRIMARY_PORT, sshd_p)
    hosts = {}
    for name, guest in (('primary', primary), ('shadow', shadow)):
        wrapper = tmp_path / ('python-' + name)
        wrapper.write_text('#!/bin/sh\nexec ip netns exec %s %s "$@"\n' % (guest.ns, PYTHON))
        wrapper.chmod(0o755)
        hosts[name] = {'ansible_connection': 'local', 'ansible_python_interpreter': str(wrapper)}
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'hosts': hosts}}))
    yield {'lab': netlab, 'primary': primary, 'shadow': shadow, 'tmp': tmp_path, 'inventory': inventory,
           'src': src, 'dest': dest, 'etc': tmp_path / 'etc', 'lib': tmp_path / 'lib', 'state': tmp_path / 'state',
           'shadow_host_key': key_s, 'primary_host_key': key_p, 'primary_log': log_p, 'shadow_log': log_s,
           'primary_authorized': src / 'root' / '.ssh' / 'authorized_keys',
           'shadow_authorized': dest / 'root' / '.ssh' / 'authorized_keys'}


def _role_vars(p, **extra):
    data = {
        'state_replication_shadow': 'shadow',
        'state_replication_shadow_address': SHADOW_IP,
        'state_replication_ssh_port': SHADOW_PORT,
        'state_replication_fidelity': 'differential',
        'state_replication_interval': '15m',
        'state_replication_paths': ['/srv/app', '/var/lib/db'],
        'state_replication_excludes': ['*.tmp'],
        'state_replication_source_root': str(p['src']),
        'state_replication_dest_root': str(p['dest']),
        'state_replication_key_dir': str(p['etc']),
        'state_replication_state_dir': str(p['state']),
        'state_replication_script_dir': str(p['lib']),
        'state_replication_authorized_keys': str(p['shadow_authorized']),
        'state_replication_shadow_host_key': str(p['shadow_host_key']) + '.pub',
        'state_replication_scheduler': 'none',
        'state_replication_install_packages': False,
        # the catch-up's receiving side
        'state_replication_primary_address': PRIMARY_IP,
        'state_replication_catch_up_port': PRIMARY_PORT,
        'state_replication_catch_up_authorized_keys': str(p['primary_authorized']),
        'state_replication_primary_host_key': str(p['primary_host_key']) + '.pub',
        'state_replication_serving_state_file': str(p['tmp'] / 'vip' / 'shop-web.state'),
    }
    data.update(extra)
    return data


def _play(p, **extra):
    """Run the role on host ``primary`` with ansible-playbook; returns (CompletedProcess, recap of primary)."""
    book = p['tmp'] / 'play.yml'
    book.write_text(PLAYBOOK)
    varfile = p['tmp'] / 'vars.json'
    varfile.write_text(json.dumps(_role_vars(p, **extra)))
    res = run_ansible('ansible-playbook', ['-i', p['inventory'], '-e', '@' + str(varfile), book], timeout=300,
                      env=dict(ANSIBLE_LOCAL_TEMP=p['tmp'] / 'ansible-tmp', ANSIBLE_REMOTE_TEMP=p['tmp'] / 'ansible-tmp'))
    recap = {}
    for line in res.stdout.splitlines():
        if line.startswith('primary ') and 'ok=' in line:
            recap = dict(part.split('=') for part in line.split()[2:])
    return res, recap


def _task_lines(stdout, title):
    """The per-host result lines ('ok: ...', 'changed: ...') printed under the task whose name contains title."""
    out, inside = [], False
    for line in stdout.splitlines():
        if line.startswith('TASK ['):
            inside = title in line
        elif inside and re.match(r'^(ok|changed|skipping|failed|fatal): ', line):
            out.append(line)
    return out


def _tree(root):
    """{relative path: (content, mtime_ns, inode)} of every file below root."""
    found = {}
    for base, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(base, name)
            st = os.stat(path)
            with open(path, encoding='utf-8') as fh:
                found[os.path.relpath(path, root)] = (fh.read(), st.st_mtime_ns, st.st_ino)
    return found


def _forward_sync(p):
    """One forward sync in the primary's namespace, as its timer would run it."""
    return p['lab'].run(p['primary'].ns, [str(p['lib'] / 'sn-repl-sync.sh'), str(p['etc'] / 'shadownet-repl.conf')],
                        check=False, timeout=60)


def _key_ssh(p, key, *remote):
    """ssh from the shadow's namespace to the primary's sshd with the catch-up key file ``key``."""
    return p['lab'].run(p['shadow'].ns, [
        'ssh', '-F', 'none', '-i', str(key), '-p', str(PRIMARY_PORT), '-o', 'BatchMode=yes',
        '-o', 'IdentitiesOnly=yes', '-o', 'StrictHostKeyChecking=yes',
        '-o', 'UserKnownHostsFile=%s' % (p['etc'] / 'known_hosts_shadownet-repl-catchup-primary'),
        '-o', 'GlobalKnownHostsFile=/dev/null', 'root@' + PRIMARY_IP] + list(remote), check=False, timeout=30)


def _key_rsync(p, key, *args):
    ssh = ('ssh -F none -i %s -p %d -o BatchMode=yes -o IdentitiesOnly=yes -o UserKnownHostsFile=%s '
           '-o GlobalKnownHostsFile=/dev/null' % (key, PRIMARY_PORT,
                                                  p['etc'] / 'known_hosts_shadownet-repl-catchup-primary'))
    return p['lab'].run(p['shadow'].ns, ['rsync', '-a', '-e', ssh] + list(args), check=False, timeout=30)


@pytest.mark.netns
def test_catch_up_brings_the_shadows_state_back_once_and_stays_restricted(pair):
    p = pair
    app_p, db_p = p['src'] / 'srv' / 'app', p['src'] / 'var' / 'lib' / 'db'
    app_s, db_s = p['dest'] / 'srv' / 'app', p['dest'] / 'var' / 'lib' / 'db'
    (app_p / 'index.html').write_text('v1\n')
    (app_p / 'old.txt').write_text('removed while the shadow served\n')
    (app_p / 'local.tmp').write_text('excluded, stays on the primary\n')
    (db_p / 'db.dat').write_text('rows=1\n')

    # Forward: the primary's state reaches the shadow (the role's install-time sync).
    res, recap = _play(p)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert (app_s / 'index.html').read_text() == 'v1\n' and (db_s / 'db.dat').read_text() == 'rows=1\n'
    assert 'Accepted publickey for root from %s' % PRIMARY_IP in p['shadow_log'].read_text()
    assert not (p['state'] / 'caught_up').exists()
    assert not p['primary_authorized'].exists()  # forward gives the shadow no access to the primary
    gate_command = p['shadow_authorized'].read_text().split('",restrict')[0]
    assert gate_command.endswith(' ' + str(p['tmp'] / 'vip' / 'shop-web.state'))

    # Failover: the shadow serves and its state moves on (changed, new, deleted files, a new directory).
    (app_s / 'index.html').write_text('v2, written on the shadow\n')
    (app_s / 'orders').mkdir()
    (app_s / 'orders' / '1.json').write_text('{"order": 1}\n')
    (app_s / 'old.txt').unlink()
    (db_s / 'db.dat').write_text('rows=5\n')

    # The primary comes back before the catch-up and its schedule fires: the shadow, serving (VRRP MASTER in
    # vip_failover's state file), refuses the push, so nothing it gathered is overwritten or deleted.
    serving = p['tmp'] / 'vip' / 'shop-web.state'
    serving.parent.mkdir()
    serving.write_text('{"time": 1795487098.1, "instance": "shop-web", "state": "MASTER", "priority": 50}\n')
    res = _forward_sync(p)
    assert res.returncode != 0 and 'this host is serving' in res.stderr, res.stderr
    assert (app_s / 'index.html').read_text() == 'v2, written on the shadow\n'
    assert (app_s / 'orders' / '1.json').exists() and not (app_s / 'old.txt').exists()

    # Catch-up: the shadow pushes it back into the primary, over SSH from its own namespace.
    before = int(time.time())
    res, recap = _play(p, state_replication_direction='catch_up')
    after = int(time.time())
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert recap.get('failed') == '0', recap
    pushed = _task_lines(res.stdout, PUSH_TASK)
    assert len(pushed) == 2 and all(line.startswith('changed: [primary -> shadow]') for line in pushed), pushed
    assert (app_p / 'index.html').read_text() == 'v2, written on the shadow\n'
    assert (app_p / 'orders' / '1.json').read_text() == '{"order": 1}\n'
    assert not (app_p / 'old.txt').exists()  # the shadow's state wins (state_replication_delete)
    assert (app_p / 'local.tmp').exists()  # excluded files are left alone in both directions
    assert (db_p / 'db.dat').read_text() == 'rows=5\n'
    assert 'Accepted publickey for root from %s' % SHADOW_IP in p['primary_log'].read_text()
    marker = int((p['state'] / 'caught_up').read_text())
    assert before <= marker <= after
    # Revoked again (default): no catch-up key on the primary, no key pair on the shadow.
    assert 'shadownet-repl-catchup:' not in p['primary_authorized'].read_text()
    assert not list(p['etc'].glob('id_ed25519_shadownet-repl-catchup-*'))
    # The gate and allow-list stay on the primary (harmless without an authorized key).
    assert (p['etc'] / 'allowed-catchup-shadow').read_text().split() == [str(app_p), str(db_p)]

    # A second catch-up has nothing to move: no file on the primary touched, only the marker renewed.
    tree = _tree(p['src'] / 'srv')
    tree.update(_tree(p['src'] / 'var'))
    time.sleep(1.1)
    res, recap = _play(p, state_replication_direction='catch_up')
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    pushed = _task_lines(res.stdout, PUSH_TASK)
    assert len(pushed) == 2 and all(line.startswith('ok: [primary -> shadow]') for line in pushed), pushed
    again = _tree(p['src'] / 'srv')
    again.update(_tree(p['src'] / 'var'))
    assert again == tree
    assert int((p['state'] / 'caught_up').read_text()) > marker

    # Kept key (state_replication_catch_up_revoke: false): restricted exactly like the forward key.
    res, recap = _play(p, state_replication_direction='catch_up', state_replication_catch_up_revoke=False)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    line = p['primary_authorized'].read_text().strip()
    assert line.startswith('command="%s %s ' % (p['lib'] / 'sn-repl-gate.sh', p['etc'] / 'allowed-catchup-shadow'))
    assert '",restrict ssh-ed25519 ' in line and line.endswith(' shadownet-repl-catchup:shadow')
    key = p['etc'] / 'id_ed25519_shadownet-repl-catchup-primary'
    known = (p['etc'] / 'known_hosts_shadownet-repl-catchup-primary').read_text().split()
    assert known[0] == '[%s]:%d' % (PRIMARY_IP, PRIMARY_PORT)
    assert known[1:3] == (p['primary_host_key'].parent / 'host_ed25519.pub').read_text().split()[:2]
    # ... it can push into the declared directories (the control: the probes below fail for the gate's reasons),
    probe = p['tmp'] / 'probe'
    probe.mkdir()
    (probe / 'ok.txt').write_text('allowed\n')
    res = _key_rsync(p, key, str(probe) + '/', 'root@%s:%s/' % (PRIMARY_IP, db_p))
    assert res.returncode == 0, res.stderr
    assert (db_p / 'ok.txt').read_text() == 'allowed\n'
    # ... but it runs no command, gets no login, reads nothing and writes nowhere else on the primary.
    pwned = p['tmp'] / 'pwned'
    res = _key_ssh(p, key, 'id')
    assert res.returncode != 0 and 'uid=' not in res.stdout and 'refused' in res.stderr
    res = _key_ssh(p, key, 'touch %s' % pwned)
    assert res.returncode != 0 and not pwned.exists()
    res = _key_ssh(p, key)
    assert res.returncode != 0
    pulled = p['tmp'] / 'pulled'
    res = _key_rsync(p, key, 'root@%s:%s/' % (PRIMARY_IP, app_p), str(pulled) + '/')
    assert res.returncode != 0 and 'is not allowed' in res.stderr
    assert not (pulled / 'index.html').exists()
    elsewhere = p['tmp'] / 'elsewhere'
    elsewhere.mkdir()
    res = _key_rsync(p, key, str(probe) + '/', 'root@%s:%s/' % (PRIMARY_IP, elsewhere))
    assert res.returncode != 0 and 'not a replicated path' in res.stderr
    res = _key_rsync(p, key, str(probe) + '/', 'root@%s:%s/../../../elsewhere/' % (PRIMARY_IP, app_p))
    assert res.returncode != 0
    res = _key_rsync(p, key, str(probe) + '/', 'root@%s:%s/' % (PRIMARY_IP, p['src'] / 'root' / '.ssh'))
    assert res.returncode != 0 and 'not a replicated path' in res.stderr
    assert list(elsewhere.iterdir()) == []
    assert 'shadownet-repl-catchup:' in p['primary_authorized'].read_text()  # unchanged by the attempts

    # After the fail-back the shadow is BACKUP again: the forward schedule resumes and finds nothing to move
    # except the file the probe above put on the primary.
    serving.write_text('{"time": 1795487099.1, "instance": "shop-web", "state": "BACKUP", "priority": 50}\n')
    res = _forward_sync(p)
    assert res.returncode == 0, res.stderr
    assert (db_s / 'ok.txt').read_text() == 'allowed\n'
    assert (app_s / 'index.html').read_text() == 'v2, written on the shadow\n'

    # Revoking again makes the old key worthless: sshd itself refuses it.
    old_key = p['tmp'] / 'old_catchup_key'
    old_key.write_bytes(key.read_bytes())
    old_key.chmod(0o600)
    res, recap = _play(p, state_replication_direction='catch_up')
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert not key.exists()
    res = _key_rsync(p, old_key, str(probe) + '/', 'root@%s:%s/' % (PRIMARY_IP, db_p))
    assert res.returncode != 0 and 'Permission denied' in res.stderr, res.stderr

    # An empty directory on the shadow (a rebuilt shadow looks like this) would empty the primary's: refused before
    # any transfer, unless the operator says it is the state the shadow served.
    for path in db_s.iterdir():
        path.unlink()
    marker = int((p['state'] / 'caught_up').read_text())
    time.sleep(1.1)
    res, recap = _play(p, state_replication_direction='catch_up')
    assert res.returncode != 0
    assert '%s is empty on shadow but not on primary' % db_s in res.stdout, res.stdout[-3000:]
    assert sorted(x.name for x in db_p.iterdir()) == ['db.dat', 'ok.txt']
    assert int((p['state'] / 'caught_up').read_text()) == marker
    res, recap = _play(p, state_replication_direction='catch_up', state_replication_catch_up_allow_empty=True)
    assert res.returncode == 0, res.stdout[-4000:]
    assert list(db_p.iterdir()) == [] and (app_p / 'index.html').exists()
    assert int((p['state'] / 'caught_up').read_text()) > marker


@pytest.fixture
def local_dirs(tmp_path):
    """Install locations without a lab: the event and full catch-ups need no network."""
    return {'tmp': tmp_path, 'src': tmp_path / 'primary', 'dest': tmp_path / 'shadow', 'etc': tmp_path / 'etc',
            'lib': tmp_path / 'lib', 'state': tmp_path / 'state',
            'primary_authorized': tmp_path / 'primary' / 'root' / '.ssh' / 'authorized_keys',
            'shadow_authorized': tmp_path / 'shadow' / 'root' / '.ssh' / 'authorized_keys',
            'shadow_host_key': tmp_path / 'none', 'primary_host_key': tmp_path / 'none'}


def _local_play(p, **extra):
    hosts = {name: {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON}
             for name in ('primary', 'shadow')}
    p['inventory'] = p['tmp'] / 'inventory.json'
    p['inventory'].write_text(json.dumps({'all': {'hosts': hosts}}))
    return _play(p, **extra)


def test_event_catch_up_runs_the_hook_with_the_direction_and_marks_only_on_success(local_dirs):
    p = local_dirs
    seen = p['tmp'] / 'hook-direction'
    hook = {'command': 'echo "$SN_REPL_DIRECTION $SN_REPL_SHADOW" >> %s; test ! -e %s' % (seen, p['tmp'] / 'fail')}
    res, _ = _local_play(p, state_replication_fidelity='event', state_replication_event_hook=hook)
    assert res.returncode == 0, res.stdout[-4000:]
    assert seen.read_text() == 'forward shadow\n'
    assert not (p['state'] / 'caught_up').exists()  # forward writes no marker

    before = int(time.time())
    res, _ = _local_play(p, state_replication_fidelity='event', state_replication_event_hook=hook,
                         state_replication_direction='catch_up')
    assert res.returncode == 0, res.stdout[-4000:]
    assert seen.read_text().splitlines()[-1] == 'catch_up shadow'
    marker = int((p['state'] / 'caught_up').read_text())
    assert before <= marker <= int(time.time())
    assert not p['primary_authorized'].exists()  # event installs no key

    # A failing hook writes no marker (the old one stays, older than any later activation).
    (p['tmp'] / 'fail').write_text('')
    time.sleep(1.1)
    res, _ = _local_play(p, state_replication_fidelity='event', state_replication_event_hook=hook,
                         state_replication_direction='catch_up')
    assert res.returncode != 0
    assert int((p['state'] / 'caught_up').read_text()) == marker

    # Without a hook nothing can bring the state back: a clear failure, no marker.
    (p['state'] / 'caught_up').unlink()
    res, _ = _local_play(p, state_replication_fidelity='event', state_replication_direction='catch_up')
    assert res.returncode != 0 and 'without a hook nothing can bring' in res.stdout
    assert not (p['state'] / 'caught_up').exists()


def test_full_catch_up_copies_nothing_and_writes_no_marker(local_dirs):
    p = local_dirs
    res, recap = _local_play(p, state_replication_fidelity='full', state_replication_interval='4h',
                             state_replication_direction='catch_up')
    assert res.returncode == 0, res.stdout[-4000:]
    assert 'nothing can be copied back and no caught_up marker is written' in res.stdout
    assert recap.get('changed') == '0', recap
    assert not p['state'].exists()
    res, _ = _local_play(p, state_replication_direction='backwards')
    assert res.returncode != 0


# --- playbooks/failover.yml: the module defers the fail-back -> catch-up -> fail-back (PVE simulator) ---------

def _flow_template():
    template = json.loads(json.dumps(SHOP))
    template['shadow']['replication'] = {'fidelity': 'event', 'hook': 'sh "$SN_REPL_HOOK_SCRIPT"'}
    template['shadow']['mirror'] = {'mode': 'full'}  # event replication needs every packet
    return template


def _failover_playbook(pvesim, tmp_path, hosts, template, *options):
    inventory = tmp_path / 'inventory.yml'
    inventory.write_text(json.dumps({'all': {
        'hosts': {'localhost': {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON}},
        'children': {'shadownet': {'hosts': hosts}}}}))
    return ansible_playbook(['-i', inventory, *options, 'failover.yml',
                             '-e', json.dumps({'shadownet_templates': [template], 'failover_service': 'web',
                                               'failover_min_uptime': 0})],
                            sim=pvesim, env=dict(SN_REPL_HOOK_SCRIPT=tmp_path / 'hook.sh'))


def test_failover_playbook_fails_back_only_after_the_catch_up(pvesim, pve_conn, tmp_path):
    # pylint: disable=import-outside-toplevel
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils

    template = _flow_template()
    plan = plan_of(template)
    assert plan['replication'][0]['fidelity'] == 'event'
    vms = build(pvesim, pve_conn, plan)
    shadow = vms['shop-web-shadow']
    hosts = {}
    for name, role in (('shop-web-1', 'primary'), ('shop-web-2', 'primary'), ('shop-web-shadow', 'shadow')):
        hosts[name] = {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON, 'sn_template': 'shop',
                       'sn_service': 'web', 'sn_role': role, 'state_replication_install_packages': False,
                       'state_replication_state_dir': str(tmp_path / name / 'state'),
                       'vip_failover_state_dir': str(tmp_path / name / 'vip')}
    hook_log = tmp_path / 'hook.log'
    # The hook (run on the shadow): fails the first time, as a catch-up that could not finish.
    (tmp_path / 'hook.sh').write_text('echo "$SN_REPL_DIRECTION $SN_REPL_SHADOW $SN_REPL_PRIMARIES" >> %s\n'
                                      'test -e %s\n' % (hook_log, tmp_path / 'hook-may-succeed'))

    def mark():
        return (meta_utils.parse_description(shadow.config.get('description', ''))[1] or {}).get('failover')

    # shop-web-1 fails: the run activates the shadow, restarts the primary and would fail back, but the catch-up
    # hook fails: no marker, so the second module run refuses and the shadow stays active (and serving).
    primary = vms['shop-web-1']
    primary.status = primary.qmpstatus = 'stopped'
    primary.started_at = None
    res = _failover_playbook(pvesim, tmp_path, hosts, template)
    assert res.returncode != 0, res.stdout[-4000:]
    assert 'not failing back: shop-web-1 has not caught up with the state the shadow took' in res.stdout, \
        res.stdout[-4000:]
    assert primary.status == 'running'
    since = mark()['since']
    assert mark()['active'] is True
    assert hook_log.read_text() == 'catch_up shop-web-shadow shop-web-1 shop-web-2\n'
    assert not (tmp_path / 'shop-web-1' / 'state' / 'caught_up').exists()

    # Check mode: the module defers, the catch-up only reports, nothing runs, nothing is written, no failure.
    (tmp_path / 'hook-may-succeed').write_text('')
    res = _failover_playbook(pvesim, tmp_path, hosts, template, '--check')
    assert res.returncode == 0, res.stdout[-4000:]
    assert 'check mode: shop-web-1 would catch up from the shadow' in res.stdout, res.stdout[-4000:]
    assert len(hook_log.read_text().splitlines()) == 1
    assert not (tmp_path / 'shop-web-1' / 'state' / 'caught_up').exists()
    assert mark()['active'] is True and mark()['since'] == since

    # The next run: the module still defers (no marker newer than the activation); the catch-up succeeds; the
    # module runs again with the marker and fails back: the shadow shrinks to its plan size, the mark goes.
    res = _failover_playbook(pvesim, tmp_path, hosts, template)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    lines = re.findall(r'"msg": "((?:detect|activate|remediate|failback): [^"]*)"', res.stdout)
    deferred = [line for line in lines if line.startswith('failback: deferred')]
    assert deferred and 'shop-web-1 has not caught up' in deferred[0], lines
    assert any(line.startswith('failback: shrank shadow shop-web-shadow') for line in lines), lines
    assert lines.index(deferred[0]) < [i for i, line in enumerate(lines) if line.startswith('failback: shrank')][0]
    assert hook_log.read_text().splitlines()[-1] == 'catch_up shop-web-shadow shop-web-1 shop-web-2'
    caught_up = int((tmp_path / 'shop-web-1' / 'state' / 'caught_up').read_text())
    assert caught_up >= since
    assert not (tmp_path / 'shop-web-2' / 'state' / 'caught_up').exists()  # catch_up: first
    assert mark() is None
    assert int(str(shadow.pending.get('cores', shadow.config.get('cores')))) == 1

    # Once failed back there is nothing to catch up: the role is not run again.
    res = _failover_playbook(pvesim, tmp_path, hosts, template)
    assert res.returncode == 0, res.stdout[-4000:]
    assert len(hook_log.read_text().splitlines()) == 2


@pytest.mark.netns
def test_failover_playbook_differential_catch_up_over_ssh(pair, pvesim, pve_conn):
    """The whole flow with differential replication: the simulator for PVE, the namespace lab for the guests."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils

    p = pair
    template = json.loads(json.dumps(SHOP))
    plan = plan_of(template)
    assert plan['replication'][0]['fidelity'] == 'differential' and plan['replication'][0]['paths'] == ['/var/lib/app']
    vms = build(pvesim, pve_conn, plan)
    shadow_vm, primary_vm = vms['shop-web-shadow'], vms['shop-web-1']

    # The guests: shop-web-1 and the shadow in their namespaces, shop-web-2 (not caught up: catch_up first) here.
    common = {'ansible_connection': 'local', 'sn_template': 'shop', 'sn_service': 'web',
              'state_replication_install_packages': False, 'state_replication_source_root': str(p['src']),
              'state_replication_dest_root': str(p['dest']), 'state_replication_key_dir': str(p['etc']),
              'state_replication_state_dir': str(p['state']), 'state_replication_script_dir': str(p['lib']),
              'state_replication_catch_up_port': PRIMARY_PORT,
              'state_replication_catch_up_authorized_keys': str(p['primary_authorized']),
              'state_replication_primary_host_key': str(p['primary_host_key']) + '.pub',
              'vip_failover_state_dir': str(p['tmp'] / 'vip')}
    hosts = {
        'shop-web-1': dict(common, sn_role='primary', state_replication_primary_address=PRIMARY_IP,
                           ansible_python_interpreter=str(p['tmp'] / 'python-primary')),
        'shop-web-2': dict(common, sn_role='primary', ansible_python_interpreter=PYTHON,
                           state_replication_state_dir=str(p['tmp'] / 'state-2')),
        'shop-web-shadow': dict(common, sn_role='shadow', ansible_python_interpreter=str(p['tmp'] / 'python-shadow')),
    }
    # State before the failure, replicated; then what the shadow took while it served.
    app_p, app_s = p['src'] / 'var' / 'lib' / 'app', p['dest'] / 'var' / 'lib' / 'app'
    for root in (app_p, app_s):
        root.mkdir(parents=True)
        (root / 'cart.db').write_text('carts=1\n')
        (root / 'gone.txt').write_text('deleted on the shadow\n')
    primary_vm.status = primary_vm.qmpstatus = 'stopped'
    primary_vm.started_at = None
    # Same size, same second as the primary's copy: rsync's quick check alone would skip it (--checksum does not).
    (app_s / 'cart.db').write_text('carts=7\n')
    (app_s / 'gone.txt').unlink()
    (app_s / 'orders').mkdir()
    (app_s / 'orders' / '42.json').write_text('{"order": 42}\n')

    res = _failover_playbook(pvesim, p['tmp'], hosts, template)
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-2000:]
    lines = re.findall(r'"msg": "((?:detect|activate|remediate|failback): [^"]*)"', res.stdout)
    assert any(line.startswith('activate: ') and 'shop-web-shadow' in line for line in lines), lines
    deferred = [i for i, line in enumerate(lines) if line.startswith('failback: deferred')]
    shrank = [i for i, line in enumerate(lines) if line.startswith('failback: shrank shadow shop-web-shadow')]
    assert deferred and shrank and deferred[0] < shrank[0], lines
    # The primary has what the shadow served, brought over SSH from the shadow's namespace; the key is gone again.
    assert (app_p / 'cart.db').read_text() == 'carts=7\n'
    assert (app_p / 'orders' / '42.json').read_text() == '{"order": 42}\n'
    assert not (app_p / 'gone.txt').exists()
    assert 'Accepted publickey for root from %s' % SHADOW_IP in p['primary_log'].read_text()
    assert int((p['state'] / 'caught_up').read_text()) > 0
    assert not (p['tmp'] / 'state-2' / 'caught_up').exists()
    assert 'shadownet-repl-catchup:' not in p['primary_authorized'].read_text()
    assert not list(p['etc'].glob('id_ed25519_*'))
    assert (meta_utils.parse_description(shadow_vm.config.get('description', ''))[1] or {}).get('failover') is None


def test_failover_playbook_catch_up_all_marks_every_primary(pvesim, pve_conn, tmp_path):
    """failover_catch_up=all: the event hook runs once (first primary) and every primary gets its marker."""
    # pylint: disable=import-outside-toplevel
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils

    template = _flow_template()
    plan = plan_of(template)
    vms = build(pvesim, pve_conn, plan)
    hosts = dict((name, {'ansible_connection': 'local', 'ansible_python_interpreter': PYTHON, 'sn_template': 'shop',
                         'sn_service': 'web', 'sn_role': role, 'state_replication_state_dir': str(tmp_path / name)})
                 for name, role in (('shop-web-1', 'primary'), ('shop-web-2', 'primary'),
                                    ('shop-web-shadow', 'shadow')))
    hook_log = tmp_path / 'hook.log'
    (tmp_path / 'hook.sh').write_text('echo "$SN_REPL_DIRECTION" >> %s\n' % hook_log)
    vm = vms['shop-web-2']
    vm.status = vm.qmpstatus = 'stopped'
    vm.started_at = None
    res = _failover_playbook(pvesim, tmp_path, hosts, template, '-e', 'failover_catch_up=all')
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert hook_log.read_text() == 'catch_up\n'
    assert int((tmp_path / 'shop-web-1' / 'caught_up').read_text()) > 0
    assert int((tmp_path / 'shop-web-2' / 'caught_up').read_text()) > 0
    shadow = vms['shop-web-shadow']
    assert (meta_utils.parse_description(shadow.config.get('description', ''))[1] or {}).get('failover') is None
    assert 'failback: shrank shadow shop-web-shadow' in res.stdout

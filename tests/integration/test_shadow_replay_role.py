# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shadow_replay role run with ansible-playbook on localhost (files under a temporary directory, systemd not
managed: the test machine has no systemd), then the installed agent run from the installed files in the namespace
lab: a mirrored request replayed."""
import json
import os
import socket

import pytest

from lab.netns import in_netns, netlab  # noqa: F401  # pylint: disable=unused-import
from lab.playbook import VENV_PY, ansible_playbook, recap
from lab.replay_lab import SYSTEM_PY, read_records, read_stats, session, start_server, wait_for
from lab.modrun import run_module

from ansible_collections.shadownet.proxmox.plugins.modules import port_mirror


def role_vars(tmp_path, **kw):
    out = dict(shadow_replay_interface='eth0', shadow_replay_port=80, shadow_replay_target_port=8080,
               shadow_replay_python=SYSTEM_PY, shadow_replay_lib_dir=str(tmp_path / 'lib'),
               shadow_replay_config_path=str(tmp_path / 'etc' / 'replay.json'),
               shadow_replay_unit_dir=str(tmp_path / 'systemd'), shadow_replay_manage_service=False)
    out.update(kw)
    return out


def play(tmp_path, check=False, **kw):
    book = tmp_path / 'play.yml'
    book.write_text('- hosts: localhost\n  connection: local\n  gather_facts: false\n  roles:\n'
                    '    - role: shadownet.proxmox.shadow_replay\n')
    extra = tmp_path / 'vars.json'
    extra.write_text(json.dumps(kw))
    argv = ['-i', 'localhost,', '-e', 'ansible_python_interpreter=' + VENV_PY, '-e', '@' + str(extra), book]
    proc = ansible_playbook(argv + (['--check'] if check else []))
    counters = recap(proc)
    return proc, counters['changed'], counters['failed']


def test_role_installs_agent_config_and_unit_idempotently_and_removes_them(tmp_path):
    (tmp_path / 'systemd').mkdir()
    rv = role_vars(tmp_path, shadow_replay_methods='safe', shadow_replay_concurrency=4)
    proc, changed, failed = play(tmp_path, check=True, **rv)
    assert failed == 0 and changed > 0, proc.stdout[-3000:]
    assert not (tmp_path / 'lib').exists() and not (tmp_path / 'etc').exists()  # check mode wrote nothing
    assert os.listdir(tmp_path / 'systemd') == []

    proc, changed, failed = play(tmp_path, **rv)
    assert failed == 0 and changed > 0, proc.stdout[-3000:]
    agent = tmp_path / 'lib' / 'shadownet_replay.py'
    assert agent.read_bytes().startswith(b'# -*- coding: utf-8 -*-')
    conf = json.loads((tmp_path / 'etc' / 'replay.json').read_text())
    assert conf['interface'] == 'eth0' and conf['port'] == 80 and conf['target_port'] == 8080 and conf['methods'] == 'safe'
    assert conf['concurrency'] == 4 and conf['stats_path'] == '/run/shadownet-replay/stats.json' and conf['timeout'] == 5.0
    unit = (tmp_path / 'systemd' / 'shadownet-replay.service').read_text()
    assert 'ExecStart=%s %s --config %s\n' % (SYSTEM_PY, agent, tmp_path / 'etc' / 'replay.json') in unit
    assert 'RuntimeDirectory=shadownet-replay\n' in unit and 'AmbientCapabilities=CAP_NET_RAW\n' in unit
    assert 'MemoryMax=%d\n' % ((64 << 20) + (128 << 20)) in unit

    proc, changed, failed = play(tmp_path, **rv)
    assert failed == 0 and changed == 0, proc.stdout[-3000:]
    proc, changed, failed = play(tmp_path, check=True, **dict(rv, shadow_replay_target_port=9090))
    assert failed == 0 and changed == 2, proc.stdout[-3000:]  # the configuration and the unit (its description)
    assert json.loads((tmp_path / 'etc' / 'replay.json').read_text())['target_port'] == 8080

    proc, changed, failed = play(tmp_path, **dict(rv, shadow_replay_state='absent'))
    assert failed == 0 and changed == 1, proc.stdout[-3000:]  # one loop over the three files
    assert not agent.exists() and not (tmp_path / 'etc' / 'replay.json').exists()
    assert os.listdir(tmp_path / 'systemd') == []


@pytest.mark.parametrize('bad, message', [
    ({'shadow_replay_mode': 'ftp'}, "value of shadow_replay_mode must be one of: http, tcp, udp, got: ftp"),
    ({'shadow_replay_port': 0}, 'shadow_replay_port the service port the mirrored clients connect to'),
    ({'shadow_replay_interface': 'eth0;x'}, "shadow_replay_interface must name the shadow's mirror NIC"),
    ({'shadow_replay_mode': 'tcp', 'shadow_replay_methods': 'safe'}, 'apply to shadow_replay_mode http only'),
    ({'shadow_replay_max_body_bytes': 4 << 20}, 'must not exceed shadow_replay_flow_buffer_bytes'),
    ({'shadow_replay_stats_path': '/var/lib/x.json'}, 'shadow_replay_stats_path'),
])
def test_role_refuses_bad_input_before_any_change(tmp_path, bad, message):
    proc, changed, failed = play(tmp_path, **role_vars(tmp_path, **bad))
    assert failed == 1 and changed == 0, proc.stdout[-3000:]
    assert message in proc.stdout, proc.stdout[-3000:]
    assert not (tmp_path / 'lib').exists() and not (tmp_path / 'etc').exists()


def test_config_the_agent_refuses_is_not_written(tmp_path):
    """What only the agent knows (a host_rewrite with a space) is refused by the copy's validate step."""
    proc, changed, failed = play(tmp_path, **role_vars(tmp_path, shadow_replay_host_rewrite='a b'))
    assert failed == 1, proc.stdout[-3000:]
    assert "field 'host_rewrite' must be '' (keep) or a host[:port]" in proc.stdout
    assert not (tmp_path / 'etc' / 'replay.json').exists()


@pytest.mark.netns
def test_installed_agent_replays_in_the_shadow(netlab, tmp_path):
    netlab.bridge('vmbr0')
    netlab.bridge('vmbr1')
    primary = netlab.vm(100, [('vmbr0', '10.0.0.10/24')])
    shadow = netlab.vm(900, [('vmbr1', '10.0.0.10/24')])
    client = netlab.client('c1', 'vmbr0', '10.0.0.2/24')
    run_module(port_mirror, {'source_vmid': 100, 'target_vmid': 900, 'direction': 'ingress', 'netns': netlab.node})
    start_server(netlab, primary.ns, '10.0.0.10', 80, tmp_path / 'primary.jsonl')
    start_server(netlab, shadow.ns, '127.0.0.1', 8080, tmp_path / 'shadow.jsonl')
    (tmp_path / 'systemd').mkdir()
    rv = role_vars(tmp_path, shadow_replay_stats_path='')
    proc, _changed, failed = play(tmp_path, **rv)
    assert failed == 0, proc.stdout[-3000:]
    # The unit's ExecStart, as systemd would run it, in the shadow.
    unit = (tmp_path / 'systemd' / 'shadownet-replay.service').read_text()
    argv = [line for line in unit.splitlines() if line.startswith('ExecStart=')][0].split('=', 1)[1].split()
    conf = json.loads((tmp_path / 'etc' / 'replay.json').read_text())
    conf['stats_path'] = str(tmp_path / 'stats.json')  # /run/shadownet-replay is systemd's to create
    (tmp_path / 'etc' / 'replay.json').write_text(json.dumps(conf))
    agent = netlab.spawn(shadow.ns, argv)
    assert wait_for(lambda: os.path.exists(tmp_path / 'stats.json') or agent.poll() is not None)
    assert agent.poll() is None
    with in_netns(client, socket.create_connection, ('10.0.0.10', 80), 5) as s:
        assert session(s, [('GET', '/installed', b'', False, False), ('POST', '/installed', b'x=1', True, True)]) == [200, 200]
    got = wait_for(lambda: len(read_records(tmp_path / 'shadow.jsonl')) == 2 and read_records(tmp_path / 'shadow.jsonl'))
    assert got and [(r['method'], r['path'], r['body']) for r in got] == [('GET', '/installed', ''), ('POST', '/installed', 'x=1')]
    assert wait_for(lambda: read_stats(tmp_path / 'stats.json')['requests_replayed'] == 2)

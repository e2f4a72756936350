"""The PVE simulator behaves as PVE does for what the collection touches (through proxmoxer, TLS verified)."""
import json
import os
import select
import signal
import subprocess
import sys
import time

import pytest
import requests

from lab.pvesim import DEFAULT_CLUSTER

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LAUNCHER = os.path.join(ROOT, 'tests', 'lab', 'pvesim.py')


# ------------------------------------------------------------------------------------------ lab cluster

def test_lab_cluster_is_loaded(proxmoxer_api, pvesim):
    nodes = sorted(n['node'] for n in proxmoxer_api.nodes.get())
    assert nodes == ['pve1', 'pve2', 'pve3']
    cfg = proxmoxer_api.nodes('pve1').qemu(9000).config.get()
    assert cfg['name'] == 'debian-12-golden' and cfg['template'] == 1
    assert cfg['cores'] == 2 and str(cfg['memory']) == '2048' and cfg['agent'] == 1
    assert cfg['scsi0'].startswith('local-lvm:base-9000-disk-0')
    assert cfg['net0'].startswith('virtio=') and 'bridge=vmbr0' in cfg['net0']
    assert 'snippets' in proxmoxer_api.storage('local').get()['content']
    assert [p['poolid'] for p in proxmoxer_api.pools.get()] == ['shadownet']
    # A linked clone of the golden template works and lands in the pool.
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1', pool='shadownet')
    clone = proxmoxer_api.nodes('pve1').qemu(100).config.get()
    # LVM-thin names a linked clone's volume like any other (the base relation is inside LVM).
    assert clone['scsi0'].startswith('local-lvm:vm-100-disk-0')
    assert clone['net0'] != cfg['net0'] and 'bridge=vmbr0' in clone['net0']
    assert pvesim.pve.vm(100).pool == 'shadownet'


def test_least_privilege_token(pvesim):
    import proxmoxer
    secret = pvesim.pve.apitokens['shadownet@pve!automation']
    api = proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user='shadownet@pve', token_name='automation',
                               token_value=secret, verify_ssl=pvesim.cafile)
    assert {v['vmid'] for v in api.cluster.resources.get(type='vm')} == {9000, 9001}
    with pytest.raises(proxmoxer.core.ResourceException) as err:
        api.nodes('pve1').network.post(iface='vmbr9', type='bridge')
    assert err.value.status_code == 403


def test_request_log_marks(proxmoxer_api, pvesim):
    mark = pvesim.mark()
    proxmoxer_api.nodes('pve1').qemu(9000).config.get()
    assert pvesim.writes(mark) == []
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=101)
    writes = pvesim.writes(mark)
    assert [(m, p) for m, p, _ in writes] == [('POST', '/api2/json/nodes/pve1/qemu/9000/clone')]
    assert 'newid=101' in writes[0][2]
    assert pvesim.writes(pvesim.mark()) == []


# ------------------------------------------------------------------------------------------ launcher

def _read_line(proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            return proc.stdout.readline()
        if proc.poll() is not None:
            break
    return ''


def test_launcher_ready_line_control_channel_and_sigterm(tmp_path):
    certs = tmp_path / 'certs'
    proc = subprocess.Popen([sys.executable, LAUNCHER, 'serve', '--host', '127.0.83.2', '--port', '0',
                             '--cluster', DEFAULT_CLUSTER, '--certs', str(certs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = _read_line(proc, 30)
        assert line.startswith('ready https://127.0.83.2:'), (line, proc.poll())
        url, ca = line.split()[1], line.split()[2]
        assert ca.startswith('ca=') and os.path.exists(ca[3:]) and ca[3:].startswith(str(certs))
        auth = {'Authorization': 'PVEAPIToken=root@pam!shadownet=5ad0e7e7-1ab0-4000-8000-000000000001'}
        ca = ca[3:]
        nodes = requests.get(url + '/api2/json/nodes', headers=auth, verify=ca, timeout=10).json()['data']
        assert len(nodes) == 3
        # The control channel: set usage, read it back through the API; the request log.
        answer = requests.post(url + '/_sim/stats', json={'vmid': 9000, 'stats': {'cpu': 0.42}}, headers=auth,
                               verify=ca, timeout=10)
        assert answer.status_code == 200, answer.text
        status = requests.get(url + '/api2/json/nodes/pve1/qemu/9000/status/current', headers=auth, verify=ca,
                              timeout=10).json()['data']
        assert status['cpu'] == 0.42
        log = requests.get(url + '/_sim/requests?since=0', headers=auth, verify=ca, timeout=10).json()
        assert [r['path'] for r in log['requests']] == ['/api2/json/nodes',
                                                          '/api2/json/nodes/pve1/qemu/9000/status/current']
        assert requests.get(url + '/_sim/state', verify=ca, timeout=10).status_code == 401
        fault = requests.post(url + '/_sim/fault', json={'kind': 'node_offline', 'node': 'pve2'}, headers=auth,
                              verify=ca, timeout=10)
        assert fault.status_code == 200
        state = requests.get(url + '/_sim/state', headers=auth, verify=ca, timeout=10).json()
        assert state['nodes'] == {'pve1': True, 'pve2': False, 'pve3': True}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()

"""The PVE simulator behaves as PVE does for what the collection touches (through proxmoxer, TLS verified)."""
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
    assert cfg['scsi0'].startswith('ceph-vm:base-9000-disk-0')  # on shared RBD storage
    assert proxmoxer_api.storage('ceph-vm').get()['shared'] == 1  # PVE marks rbd storages shared
    alpine = dict((t['node'], t['vmid']) for t in proxmoxer_api.cluster.resources.get(type='vm')
                  if t['name'] == 'alpine-3-golden' and t['template'])
    assert alpine == {'pve1': 9001, 'pve2': 9002, 'pve3': 9003}  # one copy per node, on local-lvm
    assert cfg['net0'].startswith('virtio=') and 'bridge=vmbr0' in cfg['net0']
    assert 'snippets' in proxmoxer_api.storage('local').get()['content']
    assert [p['poolid'] for p in proxmoxer_api.pools.get()] == ['shadownet']
    # A linked clone of the golden template works and lands in the pool.
    proxmoxer_api.nodes('pve2').qemu(9002).clone.post(newid=100, name='web-1', pool='shadownet')
    clone = proxmoxer_api.nodes('pve2').qemu(100).config.get()
    # LVM-thin names a linked clone's volume like any other (the base relation is inside LVM).
    assert clone['scsi0'].startswith('local-lvm:vm-100-disk-0')
    cfg = proxmoxer_api.nodes('pve2').qemu(9002).config.get()
    assert clone['net0'] != cfg['net0'] and 'bridge=vmbr0' in clone['net0']
    assert pvesim.pve.vm(100).pool == 'shadownet'


def test_least_privilege_token(pvesim):
    import proxmoxer
    secret = pvesim.pve.apitokens['shadownet@pve!automation']
    api = proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user='shadownet@pve', token_name='automation',
                               token_value=secret, verify_ssl=pvesim.cafile)
    assert {v['vmid'] for v in api.cluster.resources.get(type='vm')} == {9000, 9001, 9002, 9003}
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
        series = [{'time': 1_800_000_000 - 60 * i, 'cpu': 0.5, 'maxcpu': 2} for i in range(10)]
        answer = requests.post(url + '/_sim/rrd', json={'vmid': 9000, 'points': series}, headers=auth, verify=ca,
                               timeout=10)
        assert answer.status_code == 200, answer.text
        rrd = requests.get(url + '/api2/json/nodes/pve1/qemu/9000/rrddata?timeframe=hour', headers=auth, verify=ca,
                           timeout=10).json()['data']
        assert len(rrd) == 70 and rrd[-1] == {'time': 1_800_000_000, 'cpu': 0.5, 'maxcpu': 2}
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


# ------------------------------------------------------------------------------------------ helpers

def _error(call, *args, **kwargs):
    """The ResourceException a call raises (the test fails if it succeeds)."""
    from proxmoxer.core import ResourceException
    with pytest.raises(ResourceException) as err:
        call(*args, **kwargs)
    return err.value


def _message(exc):
    return '{0} {1} {2}'.format(exc.status_code, exc.content, exc.errors)


def _wait_task(api, node, upid):
    status = api.nodes(node).tasks(upid).status.get()
    assert status['status'] == 'stopped'
    return status['exitstatus']


# ------------------------------------------------------------------------------------------ SDN

def test_sdn_pending_then_apply_then_running(proxmoxer_api):
    sdn = proxmoxer_api.cluster.sdn
    sdn.zones.post(zone='shop', type='simple', ipam='pve')
    sdn.vnets.post(vnet='shopnet', zone='shop', alias='shop primary network')
    sdn.vnets('shopnet').subnets.post(subnet='10.10.0.0/24', type='subnet', gateway='10.10.0.1')
    # Written, not applied: the config shows it, the running config does not.
    assert [z['zone'] for z in sdn.zones.get()] == ['shop']
    assert sdn.zones.get(running=1) == []
    pending = sdn.vnets.get(pending=1)
    assert pending[0]['state'] == 'new' and pending[0]['pending']['alias'] == 'shop primary network'
    subnets = sdn.vnets('shopnet').subnets.get(pending=1)
    assert subnets[0]['subnet'] == 'shop-10.10.0.0-24' and subnets[0]['state'] == 'new'
    upid = sdn.put()
    assert _wait_task(proxmoxer_api, 'pve1', upid) == 'OK'
    running = sdn.vnets.get(running=1)
    assert [(v['vnet'], v['zone'], v['alias']) for v in running] == [('shopnet', 'shop', 'shop primary network')]
    assert 'state' not in sdn.zones.get(pending=1)[0]
    subnet = sdn.vnets('shopnet').subnets('shop-10.10.0.0-24').get()
    assert subnet['cidr'] == '10.10.0.0/24' and subnet['gateway'] == '10.10.0.1'
    # A change is pending again until the next apply.
    sdn.vnets('shopnet').put(alias='renamed', digest=sdn.vnets('shopnet').get()['digest'])
    item = sdn.vnets('shopnet').get(pending=1)
    assert item['state'] == 'changed' and item['alias'] == 'shop primary network'
    assert item['pending']['alias'] == 'renamed'


def test_sdn_errors_as_pve(proxmoxer_api):
    sdn = proxmoxer_api.cluster.sdn
    sdn.zones.post(zone='shop', type='simple')
    err = _error(sdn.zones.post, zone='shop', type='simple')
    assert err.status_code == 500 and "sdn zone object ID 'shop' already defined" in _message(err)
    err = _error(sdn.vnets.post, vnet='orphan', zone='nozone')
    assert err.status_code == 500 and 'create sdn vnet object failed' in _message(err)
    assert sdn.vnets.get() == []
    err = _error(sdn.vnets.post, vnet='longvnet9', zone='shop')
    assert err.status_code == 400 and 'vnet' in err.errors
    err = _error(sdn.zones.post, zone='vlz', type='vlan')
    assert err.status_code == 400 and 'bridge' in err.errors
    sdn.zones.post(zone='vlz', type='vlan', bridge='vmbr0')
    err = _error(sdn.vnets.post, vnet='v1', zone='vlz')
    assert 'missing vlan tag' in _message(err)
    sdn.vnets.post(vnet='v1', zone='vlz', tag=100)
    sdn.vnets.post(vnet='web', zone='shop')
    err = _error(sdn.vnets.post, vnet='web', zone='shop')
    assert "sdn vnet object ID 'web' already defined" in _message(err)
    err = _error(sdn.zones('shop').delete)
    assert 'zone shop is used by vnet web' in _message(err)
    err = _error(sdn.vnets('web').subnets.post, subnet='10.20.0.0/24', type='subnet', gateway='10.99.0.1')
    assert 'gateway' in err.errors


def test_sdn_vxlan_zone_as_pve(proxmoxer_api):
    sdn = proxmoxer_api.cluster.sdn
    err = _error(sdn.zones.post, zone='vx', type='vxlan')
    assert err.status_code == 400 and 'peers' in err.errors
    err = _error(sdn.zones.post, zone='vx', type='vxlan', peers='192.0.2.11', bridge='vmbr0')
    assert err.status_code == 400 and 'bridge' in err.errors
    sdn.zones.post(zone='vx', type='vxlan', peers='192.0.2.11,192.0.2.12')
    item = sdn.zones('vx').get(pending=1)
    assert (item.get('pending') or item)['peers'] == '192.0.2.11,192.0.2.12'
    err = _error(sdn.vnets.post, vnet='t1', zone='vx')
    assert 'missing vxlan tag' in _message(err)
    err = _error(sdn.vnets.post, vnet='t1', zone='vx', tag=16777217)
    assert 'tag' in err.errors
    sdn.vnets.post(vnet='t1', zone='vx', tag=4880427)
    sdn.zones.post(zone='vy', type='vxlan', peers='192.0.2.11')
    err = _error(sdn.vnets.post, vnet='t2', zone='vy', tag=4880427)
    assert 'tag 4880427 already exist in vnet t1' in _message(err)
    sdn.vnets.post(vnet='t2', zone='vy', tag=4880428)


def test_sdn_global_lock(proxmoxer_api, pvesim):
    sdn = proxmoxer_api.cluster.sdn
    token = sdn.lock.post()
    assert token
    err = _error(sdn.zones.post, zone='shop', type='simple')
    assert 'invalid lock token provided!' in _message(err)
    err = _error(sdn.zones.post, zone='shop', type='simple', **{'lock-token': 'wrong'})
    assert 'invalid lock token provided!' in _message(err)
    sdn.zones.post(zone='shop', type='simple', **{'lock-token': token})
    # Rollback with the token discards the pending zone and (by default) releases the lock.
    sdn.rollback.post(**{'lock-token': token})
    assert sdn.zones.get() == [] and pvesim.pve.sdn_lock is None
    # Pending changes refuse a new lock unless allow-pending; apply with the token releases it.
    sdn.zones.post(zone='shop', type='simple')
    assert 'configuration has pending changes' in _message(_error(sdn.lock.post))
    token = sdn.lock.post(**{'allow-pending': 1})
    assert _wait_task(proxmoxer_api, 'pve1', sdn.put(**{'lock-token': token})) == 'OK'
    assert pvesim.pve.sdn_lock is None and [z['zone'] for z in sdn.zones.get(running=1)] == ['shop']
    token = sdn.lock.post()
    sdn.lock.delete(**{'lock-token': token})
    sdn.zones.post(zone='other', type='simple')


# ------------------------------------------------------------------------------------------ node network

def test_node_network_bridge_pending_then_apply(proxmoxer_api, pvesim):
    net = proxmoxer_api.nodes('pve2').network
    assert 'vmbr0' in [i['iface'] for i in net.get(type='bridge')]
    net.post(iface='vmbr7', type='bridge', comments='shadownet shop', autostart=1, cidr='10.77.0.1/24')
    item = [i for i in net.get(type='bridge') if i['iface'] == 'vmbr7'][0]
    assert item['comments'] == 'shadownet shop' and 'active' not in item
    assert pvesim.pve.network_pending('pve2') and not pvesim.pve.network_pending('pve1')
    assert _error(net.post, iface='vmbr7', type='bridge').errors == {'iface': 'interface already exists'}
    assert _wait_task(proxmoxer_api, 'pve2', net.put()) == 'OK'
    assert net('vmbr7').get()['active'] == 1 and not pvesim.pve.network_pending('pve2')
    # A change, then a revert: back to the applied config.
    net('vmbr7').put(type='bridge', comments='changed')
    assert net('vmbr7').get()['comments'] == 'changed'
    net.delete()
    assert net('vmbr7').get()['comments'] == 'shadownet shop'
    net('vmbr7').delete()
    assert 'vmbr7' not in [i['iface'] for i in net.get()]


# ------------------------------------------------------------------------------------------ HA

def test_ha_resources_and_rules_crud(proxmoxer_api, pvesim):
    ha = proxmoxer_api.cluster.ha
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    node.qemu(9000).clone.post(newid=101, name='web-2')
    assert 'does not exist' in _message(_error(ha.resources.post, sid='vm:555'))
    ha.resources.post(sid='vm:100', state='started')
    ha.resources.post(sid='vm:101')
    assert [r['sid'] for r in ha.resources.get()] == ['vm:100', 'vm:101']
    assert pvesim.pve.vm(100).ha_state == 'started'
    ha.rules.post(rule='web-spread', type='resource-affinity', resources='vm:101,vm:100', affinity='negative')
    ha.rules.post(rule='web-pin', type='node-affinity', resources='vm:100', nodes='pve2,pve1:2', strict=1)
    err = _error(ha.rules.post, rule='web-spread', type='resource-affinity', resources='vm:100,vm:101',
                 affinity='positive')
    assert "HA rule 'web-spread' already defined" in _message(err)
    assert 'unmanaged' in _message(_error(ha.rules.post, rule='r2', type='node-affinity', resources='vm:9001',
                                          nodes='pve1'))
    rules = dict((r['rule'], r) for r in ha.rules.get())
    assert rules['web-spread']['resources'] == 'vm:100,vm:101' and rules['web-spread']['affinity'] == 'negative'
    assert rules['web-pin']['nodes'] == 'pve1:2,pve2' and rules['web-pin']['strict'] == 1
    assert rules['web-pin']['digest']
    one = ha.rules('web-pin').get()
    ha.rules('web-pin').put(type='node-affinity', nodes='pve3', digest=one['digest'])
    assert 'detected modified configuration' in _message(
        _error(ha.rules('web-pin').put, type='node-affinity', nodes='pve2', digest=one['digest']))
    assert ha.rules('web-pin').get()['nodes'] == 'pve3'
    assert [r['rule'] for r in ha.rules.get(type='resource-affinity')] == ['web-spread']
    ha.rules('web-pin').delete()
    assert "HA rule 'web-pin' does not exist" in _message(_error(ha.rules('web-pin').get))
    ha.resources('vm:101').delete()
    assert pvesim.pve.vm(101).ha_state is None
    # purge (the default) takes the resource out of the rules that name it.
    assert ha.rules('web-spread').get()['resources'] == 'vm:100'
    # An HA-managed VM is destroyed only with purge, which also drops its resource and the rules left empty.
    node.qemu(100).status.stop.post()
    assert 'purge parameter not set' in _message(_error(node.qemu(100).delete))
    node.qemu(100).delete(purge=1)
    assert ha.resources.get() == [] and ha.rules.get() == []


# ------------------------------------------------------------------------------------------ rrddata

def test_rrddata_injected_series_and_default(proxmoxer_api, pvesim):
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    pvesim.pve.set_stats(100, cpu=0.25, mem=512 * 1024 ** 2)
    default = node.qemu(100).rrddata.get(timeframe='hour', cf='AVERAGE')
    assert len(default) == 1 and default[0]['cpu'] == 0.25 and default[0]['maxcpu'] == 2
    assert default[0]['maxmem'] == 2048 * 1024 ** 2 and default[0]['time'] % 60 == 0
    end = 1_800_000_000
    points = [{'time': end - 60 * i, 'cpu': 0.1 * (i % 4), 'maxcpu': 2, 'mem': 1e9, 'maxmem': 2e9,
               'netin': 1000.0 + i, 'netout': 10.0} for i in range(24 * 60)]
    pvesim.pve.inject_rrd(100, points)
    hour = node.qemu(100).rrddata.get(timeframe='hour', cf='AVERAGE')
    assert len(hour) == 70 and hour[-1]['time'] == end and hour[1]['time'] - hour[0]['time'] == 60
    assert hour[-1]['cpu'] == 0.0 and hour[-2]['cpu'] == pytest.approx(0.1) and hour[-1]['netin'] == 1000.0
    day = node.qemu(100).rrddata.get(timeframe='day', cf='AVERAGE')
    assert len(day) == 70 and all(p['time'] % 1800 == 0 for p in day)
    full = [p for p in day if 'cpu' in p]
    assert 40 <= len(full) <= 50 and full[-2]['cpu'] == pytest.approx(0.15)
    peak = node.qemu(100).rrddata.get(timeframe='day', cf='MAX')
    assert [p for p in peak if 'cpu' in p][-2]['cpu'] == pytest.approx(0.3)
    week = node.qemu(100).rrddata.get(timeframe='week')
    assert week[1]['time'] - week[0]['time'] == 10800


# ------------------------------------------------------------------------------------------ migrate

def test_migrate_moves_the_vm(proxmoxer_api, pvesim):
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    err = _error(node.qemu(100).migrate.post, target='pve1')
    assert err.status_code == 400 and 'target is local node' in err.errors['target']
    pvesim.pve.set_node_offline('pve3')
    upid = node.qemu(100).migrate.post(target='pve3')
    assert _wait_task(proxmoxer_api, 'pve1', upid) == 'migration aborted'
    log = '\n'.join(line['t'] for line in node.tasks(upid).log.get())
    assert "Can't connect to destination address" in log and pvesim.pve.vm(100).node == 'pve1'
    node.qemu(100).status.start.post()
    assert "without --online" in _message(_error(node.qemu(100).migrate.post, target='pve2'))
    upid = node.qemu(100).migrate.post(target='pve2', online=1)
    assert _wait_task(proxmoxer_api, 'pve1', upid) == 'OK'
    assert pvesim.pve.vm(100).node == 'pve2'
    assert proxmoxer_api.nodes('pve2').qemu(100).status.current.get()['status'] == 'running'
    assert 'does not exist' in _message(_error(node.qemu(100).config.get))


# ------------------------------------------------------------------------------------------ VM config

def _root_password_api(pvesim):
    import proxmoxer
    return proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user='root@pam', password=pvesim.password,
                                verify_ssl=pvesim.cafile)


def test_hookscript_must_exist_on_snippets_storage(proxmoxer_api, pvesim):
    # PVE lets only root@pam itself (not even root's API tokens) set hookscript.
    root = _root_password_api(pvesim)
    node = root.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    hook = 'local:snippets/shadownet-hook.py'
    err = _error(node.qemu(100).config.put, hookscript=hook)
    assert err.status_code == 400 and err.errors['hookscript'] == "script '{0}' does not exist".format(hook)
    assert 'hookscript' not in node.qemu(100).config.get()
    err = _error(proxmoxer_api.nodes('pve1').qemu(100).config.put, hookscript=hook)
    assert err.status_code in (400, 403)
    pvesim.pve.add_snippet(hook)
    node.qemu(100).config.put(hookscript=hook)
    assert node.qemu(100).config.get()['hookscript'] == hook
    err = _error(node.qemu(100).config.put, hookscript='local:iso/x.iso')
    assert 'not in the snippets directory' in err.errors['hookscript']


def test_mac_generated_and_kept(proxmoxer_api):
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    node.qemu(100).config.put(net1='virtio,bridge=vmbr0,tag=20')
    net1 = node.qemu(100).config.get()['net1']
    mac = net1.split(',')[0].split('=')[1]
    assert len(mac.split(':')) == 6 and 'tag=20' in net1
    node.qemu(100).config.post(net2='model=virtio,bridge=vmbr0')
    assert node.qemu(100).config.get()['net2'].startswith('virtio=')
    node.qemu(100).config.put(net1='virtio={0},bridge=vmbr0,tag=30'.format(mac))
    assert node.qemu(100).config.get()['net1'] == 'virtio={0},bridge=vmbr0,tag=30'.format(mac)
    # Given without its MAC, the NIC gets a new one, as PVE does: clients must send the MAC back.
    node.qemu(100).config.put(net1='virtio,bridge=vmbr0,tag=30')
    assert mac not in node.qemu(100).config.get()['net1']


def test_hotplug_on_running_vm(proxmoxer_api):
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    vm = node.qemu(100)
    vm.status.start.post()
    vm.config.put(net1='virtio,bridge=vmbr0', cores=4, vcpus=1)
    cfg = vm.config.get()
    pending = dict((p['key'], p) for p in vm.pending.get())
    assert cfg['net1'].startswith('virtio=') and 'pending' not in pending['net1']
    assert str(pending['cores']['pending']) == '4' and pending['cores']['value'] == 2
    # GET config gives the pending values by default and the running ones with current=1, as PVE does.
    assert str(cfg['cores']) == '4' and vm.config.get(current=1)['cores'] == 2
    assert str(pending['vcpus']['pending']) == '1'
    vm.config.put(delete='net1')
    assert 'net1' not in vm.config.get()
    # With cpu hot-plug on, vcpus apply at once; cores still wait for a restart, as on PVE.
    vm.config.put(hotplug='network,disk,cpu,memory')
    vm.config.put(vcpus=2)
    assert str(vm.config.get()['vcpus']) == '2'
    vm.status.stop.post()
    vm.status.start.post()
    assert str(vm.config.get()['cores']) == '4'


def test_task_durations_per_type(pvesim, proxmoxer_api):
    # task_secs gives a task type a duration in PVE seconds (scaled by time_scale): the clone task runs, with
    # the new VM locked, until that time has passed; other task types stay instant.
    import time
    pvesim.pve.time_scale = 0.001
    pvesim.pve.task_secs = {'qmclone': 3000}
    node = proxmoxer_api.nodes('pve1')
    upid = node.qemu(9000).clone.post(newid=120, name='slow-1')
    assert node.tasks(upid).status.get()['status'] == 'running'
    assert node.qemu(120).config.get()['lock'] == 'clone'
    deadline = time.monotonic() + 30
    while node.tasks(upid).status.get()['status'] == 'running':
        assert time.monotonic() < deadline, 'the clone task never ended'
        time.sleep(0.1)
    assert node.tasks(upid).status.get()['exitstatus'] == 'OK'
    assert 'lock' not in node.qemu(120).config.get()
    start = node.qemu(120).status.start.post()
    deadline = time.monotonic() + 30
    while node.tasks(start).status.get()['status'] == 'running':
        assert time.monotonic() < deadline, 'the start task never ended'
        time.sleep(0.05)
    assert node.qemu(120).status.current.get()['status'] == 'running'


def test_node_usage_follows_the_cluster_file_and_running_vms(proxmoxer_api, pvesim):
    GiB = 1024 ** 3
    nodes = dict((n['node'], n) for n in proxmoxer_api.cluster.resources.get(type='node'))
    assert nodes['pve2']['maxmem'] == 64 * GiB and nodes['pve2']['maxcpu'] == 16 and nodes['pve2']['mem'] == 2 * GiB
    node = proxmoxer_api.nodes('pve2')
    node.qemu(9002).clone.post(newid=100, name='a')
    pvesim.pve.set_stats(100, mem=GiB)
    node.qemu(100).status.start.post()
    assert [n['mem'] for n in proxmoxer_api.nodes.get() if n['node'] == 'pve2'] == [3 * GiB]
    # qemu-server config_to_command: more vCPUs than the node has is a start task error.
    node.qemu(9002).clone.post(newid=101, name='b')
    node.qemu(101).config.put(cores=32)
    upid = node.qemu(101).status.start.post()
    assert pvesim.pve.vm(101).status == 'stopped'
    status = node.tasks(upid).status.get()
    assert status['exitstatus'] == 'MAX 16 vcpus allowed per VM on this node'


def test_linked_clone_of_thick_lvm_is_refused_as_pve(proxmoxer_api, pvesim):
    from lab.pvesim import _add_template
    pvesim.pve.storages['san'] = {'type': 'lvm', 'vgname': 'san', 'shared': 1, 'active': 1, 'content': 'images',
                                  'files': set()}
    _add_template(pvesim.pve, {'vmid': 9200, 'name': 'thick', 'node': 'pve1', 'config': {'scsi0': 'san:base-9200-disk-0'}})
    with pytest.raises(Exception) as info:
        proxmoxer_api.nodes('pve1').qemu(9200).clone.post(newid=100, name='x')
    assert "Linked clone feature is not supported for 'san:base-9200-disk-0' (scsi0)" in str(info.value)

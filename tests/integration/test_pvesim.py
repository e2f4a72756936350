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
    # check_type: an integer comes back as a number, memory and agent (property strings) as the text written.
    assert cfg['cores'] == 2 and cfg['memory'] == '2048' and cfg['agent'] == '1'
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

    def api(userid, token):
        return proxmoxer.ProxmoxAPI(pvesim.host, port=pvesim.port, user=userid, token_name=token,
                                    token_value=pvesim.pve.apitokens['{0}!{1}'.format(userid, token)],
                                    verify_ssl=pvesim.cafile)
    least = api('shadownet@pve', 'automation')
    assert {v['vmid'] for v in least.cluster.resources.get(type='vm')} == {9000, 9001, 9002, 9003}
    # Node bridges need Sys.Modify on /nodes/<node> (pve-manager API2/Network.pm create_network): the collection's
    # user has it, the read-only one does not.
    least.nodes('pve1').network.post(iface='vmbr9', type='bridge')
    with pytest.raises(proxmoxer.core.ResourceException) as err:
        api('auditor@pve', 'readonly').nodes('pve1').network.post(iface='vmbr8', type='bridge')
    assert err.value.status_code == 403 and 'Sys.Modify' in str(err.value)


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
        end = int(time.time()) // 60 * 60
        series = [{'time': end - 60 * i, 'cpu': 0.5, 'maxcpu': 2} for i in range(10)]
        answer = requests.post(url + '/_sim/rrd', json={'vmid': 9000, 'points': series}, headers=auth, verify=ca,
                               timeout=10)
        assert answer.status_code == 200, answer.text
        rrd = requests.get(url + '/api2/json/nodes/pve1/qemu/9000/rrddata?timeframe=hour', headers=auth, verify=ca,
                           timeout=10).json()['data']
        # PVE 9's hour: 60 one-minute rows ending now (59 if the minute turned meanwhile: its row is still empty).
        assert len(rrd) in (59, 60) and rrd[-1] == {'time': end, 'cpu': 0.5, 'maxcpu': 2}
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
    assert item['state'] == 'new' and item['pending']['peers'] == '192.0.2.11,192.0.2.12', item   # not applied yet
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


def test_node_network_names_as_pve(proxmoxer_api, pvesim):
    # pve-common JSONSchema.pm pve_verify_iface (the pve-iface option: 2-20 characters) decides at the API;
    # Linux's 15 characters only when the node applies the config (ifreload fails).
    net = proxmoxer_api.nodes('pve2').network
    for bad in ('vm-br1', 'b', '1vmbr'):
        assert 'iface' in _error(net.post, iface=bad, type='bridge').errors
    net.post(iface='shopbridgefront1', type='bridge')
    upid = net.put()
    task = pvesim.pve.tasks[upid]
    assert task['exitstatus'] == "command 'ifreload -a' failed: exit code 1"
    assert any('shopbridgefront1' in line and '15' in line for line in task['log'])


def test_sdn_vnet_delete_as_pve(proxmoxer_api, pvesim):
    # pve-network VnetPlugin.pm on_delete_hook refuses only while subnets exist: a VM on the vnet does not stop it.
    sdn = proxmoxer_api.cluster.sdn
    sdn.zones.post(zone='shop', type='simple')
    sdn.vnets.post(vnet='web', zone='shop')
    sdn.vnets('web').subnets.post(subnet='10.20.0.0/24', type='subnet')
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='web-1')
    proxmoxer_api.nodes('pve1').qemu(100).config.put(net0='virtio,bridge=web')
    err = _error(sdn.vnets('web').delete)
    assert err.errors == {'vnet': "Can't delete vnet if subnets exists"}
    sdn.vnets('web').subnets('shop-10.20.0.0-24').delete()
    sdn.vnets('web').delete()
    assert sdn.vnets.get() == []


def test_sdn_apply_reloads_every_node_and_only_warns(proxmoxer_api, pvesim):
    # pve-network API2/Network/SDN.pm reload: a reloadnetworkall task runs `pvesh set /nodes/<n>/network` per node
    # and warns (plain `warn`: the task stays OK under pvedaemon) when one fails; each node reloads in a srvreload
    # task (root@pam) whose Zones.pm generate_etc_network_config skips a vlan vnet whose bridge is not up.
    pve, sdn = pvesim.pve, proxmoxer_api.cluster.sdn
    sdn.zones.post(zone='vl', type='vlan', bridge='vmbr5')
    sdn.vnets.post(vnet='backvl', zone='vl', tag=30)
    pve.fail_sdn_reload('pve2', times=1)
    upid = sdn.put()
    task = pve.tasks[upid]
    assert task['type'] == 'reloadnetworkall' and task['exitstatus'] == 'OK'
    assert task['log'] == ['pve1: reloading network config', 'pve2: reloading network config',
                           "500 Can't connect to pve2:8006 (Connection refused)",
                           "command 'pvesh set /nodes/pve2/network --regenerate-frr 0' failed: exit code 255",
                           'pve3: reloading network config', 'TASK OK']
    listed = proxmoxer_api.nodes('pve3').tasks.get(typefilter='srvreload', since=task['starttime'])
    assert [(t['user'], t['status']) for t in listed] == [('root@pam', 'OK')]
    log = [e['t'] for e in proxmoxer_api.nodes('pve3').tasks(listed[0]['upid']).log.get()]
    assert log == ["zone vl : vnet backvl : can't find bridge vmbr5 at /usr/share/perl5/PVE/Network/SDN/Zones/"
                   "Plugin.pm line 323.", 'TASK OK']
    assert proxmoxer_api.nodes('pve2').tasks.get(typefilter='srvreload') == []
    assert proxmoxer_api.nodes('pve1').tasks.get(typefilter='srvreload', since=task['starttime'] + 1) == []
    # Warnings counted (RESTEnvironment log_warn): "WARN: ..." lines and a task ending WARNINGS: n.
    pve.sdn_warnings_counted = True
    pve.fail_sdn_reload('pve1', times=1)
    pve.fail_sdn_reload('pve3', how='ifreload', times=1)
    task = pve.tasks[sdn.put()]
    assert task['exitstatus'] == 'WARNINGS: 1' and task['log'][-1] == 'TASK WARNINGS: 1'
    assert "WARN: command 'pvesh set /nodes/pve1/network --regenerate-frr 0' failed: exit code 255" in task['log']
    reloads = dict((t['node'], t) for t in pve.tasklog if t['type'] == 'srvreload' and t['starttime'] >= task['starttime']
                   and t['upid'] not in [x['upid'] for x in listed])
    assert reloads['pve2']['exitstatus'] == 'WARNINGS: 1'
    assert reloads['pve3']['exitstatus'] == "command 'ifreload -a' failed: exit code 1"


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
    # pve-ha-manager Rules.pm check_single_priority_node_affinity_in_resource_affinity_rules.
    assert "Rule 'web-pin' is invalid" in _message(_error(ha.rules.post, rule='web-pin', type='node-affinity',
                                                          resources='vm:100', nodes='pve2,pve1:2', strict=1))
    ha.rules.post(rule='web-pin', type='node-affinity', resources='vm:100', nodes='pve2:2,pve1:2', strict=1)
    err = _error(ha.rules.post, rule='web-spread', type='resource-affinity', resources='vm:100,vm:101',
                 affinity='positive')
    assert "HA rule 'web-spread' already defined" in _message(err)
    assert 'unmanaged' in _message(_error(ha.rules.post, rule='r2', type='node-affinity', resources='vm:9001',
                                          nodes='pve1'))
    rules = dict((r['rule'], r) for r in ha.rules.get())
    assert rules['web-spread']['resources'] == 'vm:100,vm:101' and rules['web-spread']['affinity'] == 'negative'
    assert rules['web-pin']['nodes'] == 'pve1:2,pve2:2' and rules['web-pin']['strict'] == 1
    assert rules['web-pin']['digest']
    one = ha.rules('web-pin').get()
    ha.rules('web-pin').put(type='node-affinity', nodes='pve3', digest=one['digest'])
    assert 'detected modified configuration' in _message(
        _error(ha.rules('web-pin').put, type='node-affinity', nodes='pve2', digest=one['digest']))
    assert ha.rules('web-pin').get()['nodes'] == 'pve3'
    assert [r['rule'] for r in ha.rules.get(type='resource-affinity')] == ['web-spread']
    ha.rules('web-pin').delete()
    assert "no such ha rule 'web-pin'" in _message(_error(ha.rules('web-pin').get))
    ha.resources('vm:101').delete()
    assert pvesim.pve.vm(101).ha_state is None
    # purge (the default) takes the resource out of the rules that name it.
    one = ha.rules('web-spread').get()
    assert one['resources'] == 'vm:100'
    assert one['errors'] == {'resources': ['rule is ineffective as there are less than two resources']}
    # An HA-managed VM is destroyed only with purge, which also drops its resource and the rules left empty.
    node.qemu(100).status.stop.post()
    assert 'purge parameter not set' in _message(_error(node.qemu(100).delete))
    node.qemu(100).delete(purge=1)
    assert ha.resources.get() == [] and ha.rules.get() == []


@pytest.mark.parametrize('time_scale', [0, 0.01])
def test_stop_of_an_ha_vm_is_asynchronous(proxmoxer_api, pvesim, time_scale):
    # qemu-server vm_stop: an HA-managed VM gets a 'hastop' task that only queues the CRM command; the VM stops
    # later, and destroy_vm refuses it while it runs. At every time scale.
    pve = pvesim.pve
    ha = proxmoxer_api.cluster.ha
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    node.qemu(9000).clone.post(newid=101, name='web-2')
    node.qemu(100).status.start.post()
    node.qemu(101).status.start.post()
    ha.resources.post(sid='vm:100', state='started')
    ha.resources.post(sid='vm:101', state='started')
    ha.rules.post(rule='web-spread', type='resource-affinity', resources='vm:100,vm:101', affinity='negative')
    pve.time_scale = time_scale
    upid = node.qemu(100).status.stop.post()
    assert ':hastop:100:' in upid
    deadline = time.time() + 5
    while node.tasks(upid).status.get()['status'] != 'stopped':
        assert time.time() < deadline
        time.sleep(0.01)
    assert node.tasks(upid).status.get()['exitstatus'] == 'OK'
    assert 'Requesting HA stop for VM 100' in [line['t'] for line in node.tasks(upid).log.get()]
    assert pve.vm(100).status == 'running' and pve.ha_stop_pending(100)
    assert 'VM 100 is running - destroy failed' in _message(_error(node.qemu(100).delete, purge=1))
    polls = []
    while True:
        current = node.qemu(100).status.current.get()
        polls.append(current['status'])
        if current['status'] == 'stopped':
            break
        assert time.time() < deadline and current['ha'] == {'managed': 1, 'state': 'started'}
        time.sleep(0.02)
    assert len(polls) >= pve.ha_crm_polls
    # The CRM wrote the stop into the resource's config (HA/Manager.pm update_crm_commands).
    assert ha.resources('vm:100').get()['state'] == 'stopped' and current['ha']['state'] == 'stopped'
    assert _wait_task(proxmoxer_api, 'pve1', node.qemu(100).delete(purge=1)) == 'OK'
    # purge: out of HA and out of the rules (HA/Config.pm delete_service_from_config keeps a rule not left empty).
    assert [r['sid'] for r in ha.resources.get()] == ['vm:101']
    assert [(r['rule'], r['resources']) for r in ha.rules.get()] == [('web-spread', 'vm:101')]
    # A resource removed before the CRM acted: the queued stop is dropped ("no such service"), the VM runs on.
    node.qemu(101).status.stop.post()
    ha.resources('vm:101').delete()
    for dummy in range(pve.ha_crm_polls + 1):
        assert node.qemu(101).status.current.get()['status'] == 'running'
    assert not pve.ha_stop_pending(101)


def test_a_locked_ha_vm_stop_puts_it_in_error_and_the_collection_never_sends_it(proxmoxer_api, pvesim, pve_conn):
    # qemu-server vm_stop queues an HA resource's stop without looking at the lock; the LRM's vm_stop dies on
    # check_lock and Manager.pm next_state_request_stop changes the service to 'error'; the VM keeps running.
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
    pve = pvesim.pve
    node = proxmoxer_api.nodes('pve1')
    for vmid in (100, 101):
        node.qemu(9000).clone.post(newid=vmid, name='web-{0}'.format(vmid))
        node.qemu(vmid).status.start.post()
        proxmoxer_api.cluster.ha.resources.post(sid='vm:{0}'.format(vmid), state='started')
        pve.vm(vmid).lock = 'backup'
    assert ':hastop:100:' in node.qemu(100).status.stop.post()
    for dummy in range(pve.ha_crm_polls + 1):
        current = node.qemu(100).status.current.get()
    assert current['status'] == 'running' and current['ha']['state'] == 'error'
    # The collection waits for the lock (lock_wait), then refuses, without sending the stop; and a VM already in
    # the error state is a PveHaError at once.
    api = api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                           token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                           ca_path=pve_conn['ca_path'], lock_wait=0.5)
    mark = pvesim.mark()
    with pytest.raises(api_utils.PveTimeoutError) as info:
        api.stop_vm('pve1', 101, name='web-101', timeout=30)
    assert info.value.kind == 'lock' and 'locked (backup)' in info.value.message
    assert pvesim.writes(mark) == [] and pve.vm(101).ha_state == 'started'
    with pytest.raises(api_utils.PveHaError):
        api.stop_vm('pve1', 100, name='web-100', timeout=30)
    assert pvesim.writes(mark) == []
    pve.vm(101).lock = None
    api.stop_vm('pve1', 101, name='web-101', timeout=30)
    assert pve.vm(101).status == 'stopped'


# ------------------------------------------------------------------------------------------ rrddata

def test_rrddata_injected_series_and_default(proxmoxer_api, pvesim):
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    pvesim.pve.set_stats(100, cpu=0.25, mem=512 * 1024 ** 2)
    end = 1_800_000_000
    pvesim.pve.rrd_now = end + 30
    # No series: the current usage as the newest minute; the older rows are gaps (only `time`).
    default = node.qemu(100).rrddata.get(timeframe='hour', cf='AVERAGE')
    assert len(default) == 60 and default[-1]['time'] == end and default[-1]['cpu'] == 0.25
    assert default[-1]['maxcpu'] == 2 and default[-1]['maxmem'] == 2048 * 1024 ** 2
    assert all(p == {'time': p['time']} for p in default[:-1])
    points = [{'time': end - 60 * i, 'cpu': 0.1 * (i % 4), 'maxcpu': 2, 'mem': 1e9, 'maxmem': 2e9,
               'netin': 1000.0 + i, 'netout': 10.0} for i in range(24 * 60)]
    pvesim.pve.inject_rrd(100, points)
    # pve-cluster RRD.pm create_rrd_data, PVE 9: hour 60 x 60 s, day 1440 x 60 s, week 336 x 30 min.
    hour = node.qemu(100).rrddata.get(timeframe='hour', cf='AVERAGE')
    assert len(hour) == 60 and hour[-1]['time'] == end and hour[1]['time'] - hour[0]['time'] == 60
    assert hour[-1]['cpu'] == 0.0 and hour[-2]['cpu'] == pytest.approx(0.1) and hour[-1]['netin'] == 1000.0
    day = node.qemu(100).rrddata.get(timeframe='day', cf='AVERAGE')
    assert len(day) == 1440 and day[-60:] == hour and all('cpu' in p for p in day)
    week = node.qemu(100).rrddata.get(timeframe='week', cf='AVERAGE')
    assert len(week) == 336 and week[1]['time'] - week[0]['time'] == 1800 and week[-1]['time'] % 1800 == 0
    full = [p for p in week if 'cpu' in p]
    assert len(full) == 48 and full[-1]['cpu'] == pytest.approx(4.3 / 30)  # (end - 30 min, end]
    peak = node.qemu(100).rrddata.get(timeframe='week', cf='MAX')
    assert [p for p in peak if 'cpu' in p][-1]['cpu'] == pytest.approx(0.3)
    assert [len(node.qemu(100).rrddata.get(timeframe=tf)) for tf in ('month', 'year')] == [1440, 1440]
    # The newest row right after a boundary has no data yet: PVE 9 drops it, PVE 8 answers it with only `time`.
    pvesim.pve.rrd_now = end + 90
    hour = node.qemu(100).rrddata.get(timeframe='hour')
    assert len(hour) == 59 and hour[-1]['time'] == end
    pvesim.pve.rrd_format = 'pve8'
    hour = node.qemu(100).rrddata.get(timeframe='hour')
    assert len(hour) == 70 and hour[-1] == {'time': end + 60} and hour[-2]['time'] == end
    # PVE 8: 70 rows each; day 30 min, week 3 h.
    pvesim.pve.rrd_now = end + 30
    day = node.qemu(100).rrddata.get(timeframe='day', cf='AVERAGE')
    assert len(day) == 70 and all(p['time'] % 1800 == 0 for p in day) and day[-1]['time'] == end
    assert len([p for p in day if 'cpu' in p]) == 48 and day[-1]['cpu'] == pytest.approx(4.3 / 30)
    week = node.qemu(100).rrddata.get(timeframe='week')
    assert len(week) == 70 and week[1]['time'] - week[0]['time'] == 10800
    # xff 0.5: a 30-minute row with fewer than half of its minutes known is a gap.
    pvesim.pve.inject_rrd(100, points[:14])
    assert 'cpu' not in node.qemu(100).rrddata.get(timeframe='day')[-1]
    pvesim.pve.inject_rrd(100, points[:15])
    assert 'cpu' in node.qemu(100).rrddata.get(timeframe='day')[-1]


def test_rrddata_after_an_upgrade_reads_the_old_file_first(proxmoxer_api, pvesim):
    """pve-cluster RRD.pm create_rrd_data on PVE 9 with an old pve2-vm file (last update = the upgrade): the old
    file's rows at PVE 8's resolution up to the row holding the upgrade, then the new file's rows after it; a window
    that starts after the upgrade reads only the new file; an unknown timeframe is refused as the API schema does."""
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    end = 1_800_000_000
    pvesim.pve.rrd_now = end + 30
    pvesim.pve.inject_rrd(100, [{'time': end - 60 * i, 'cpu': 0.5, 'maxcpu': 2} for i in range(3 * 1440)])
    pvesim.pve.rrd_upgraded_at = end - 5 * 3600 + 17
    day = node.qemu(100).rrddata.get(timeframe='day')
    times = [r['time'] for r in day]
    steps = [b - a for a, b in zip(times, times[1:])]
    back = [i for i, s in enumerate(steps) if s < 0]
    assert len(back) == 1                                      # the join: time steps back once
    old, new = times[:back[0] + 1], times[back[0] + 1:]
    assert set(b - a for a, b in zip(old, old[1:])) == {1800} and len(old) == 70 - 10 + 1
    assert old[-1] == end - 5 * 3600 + 1800 and old[0] == end - 70 * 1800 + 1800
    assert set(b - a for a, b in zip(new, new[1:])) == {60} and new[0] == end - 5 * 3600 + 60 and new[-1] == end
    # `hour` starts after the upgrade: the new file only, 60 rows.
    hour = node.qemu(100).rrddata.get(timeframe='hour')
    assert len(hour) == 60 and all(b['time'] - a['time'] == 60 for a, b in zip(hour, hour[1:]))
    # `month`: the old file's 12-hour rows, then half-hours.
    month = node.qemu(100).rrddata.get(timeframe='month')
    assert {month[1]['time'] - month[0]['time'], month[-1]['time'] - month[-2]['time']} == {43200, 1800}
    # qemu-server API2/Qemu.pm rrddata: timeframe hour|day|week|month|year (RRD.pm's `decade` is not offered for VMs).
    err = _error(node.qemu(100).rrddata.get, timeframe='decade')
    assert err.status_code == 400 and "'decade' does not have a value in the enumeration" in str(err)


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


def test_config_reads_back_as_pve_stores_it(proxmoxer_api):
    """qemu-server write_vm_config/parse_vm_config, update_vm_api and get_unique_tags: not the text sent."""
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1', description='cloned\n\n')
    vm = node.qemu(100)
    assert vm.config.get()['description'] == 'cloned'
    vm.config.put(description='notes  \n\nsecond line \t\n\n', tags='Web;shadownet,web sn-Shop', onboot='true',
                  cores='4', balloon='0', net1='virtio,bridge=vmbr0,firewall=true,link_down=off', memory=2048)
    cfg = vm.config.get()
    assert cfg['description'] == 'notes  \n\nsecond line'  # trailing whitespace gone, inner kept
    assert cfg['tags'] == 'shadownet;sn-shop;web'  # sorted, lower-cased, without duplicates
    assert cfg['onboot'] == 1 and cfg['cores'] == 4 and cfg['balloon'] == 0  # typed as check_type does
    assert cfg['memory'] == '2048'  # a property string since PVE 8: the text written
    assert cfg['net1'].startswith('virtio=') and cfg['net1'].endswith(',bridge=vmbr0,firewall=1,link_down=0')
    # A description that is only whitespace is not kept; nor is '0' (false in Perl).
    vm.config.put(description='\n\n')
    assert 'description' not in vm.config.get()
    # Deleting a key the config lacks is no error (PVE warns and goes on); an unknown key, or one also set, is.
    vm.config.put(delete='startup')
    with pytest.raises(Exception, match='unknown option'):
        vm.config.put(delete='nosuchkey')
    with pytest.raises(Exception, match='at the same time'):
        vm.config.put(delete='onboot', onboot=1)
    # On a running VM too: tags (fast-plug) are stored in PVE's form at once.
    vm.status.start.post()
    vm.config.put(tags='B a')
    assert vm.config.get()['tags'] == 'a;b' and vm.config.get(current=1)['tags'] == 'a;b'


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
    # Turning on cpu hot-plug needs a restart itself (vmconfig_hotplug_pending skips a `hotplug` with cpu or memory);
    # after it, vcpus apply at once; cores still wait for a restart, as on PVE.
    vm.config.put(hotplug='network,disk,cpu,memory')
    assert 'hotplug' not in vm.config.get(current=1)
    vm.status.stop.post()
    vm.status.start.post()
    assert str(vm.config.get()['cores']) == '4'
    vm.config.put(vcpus=2)
    assert str(vm.config.get(current=1)['vcpus']) == '2'
    # A pending value set back to the running one is no change (AbstractConfig cleanup_pending).
    vm.config.put(cores=6)
    vm.config.put(cores=4)
    assert 'pending' not in dict((p['key'], p) for p in vm.pending.get())['cores']


def test_memory_and_vcpu_hotplug_follow_qemu_server(proxmoxer_api, pvesim):
    """qemu-server Memory.pm: a start with memory hot-plug needs numa, 1024 MiB at least and a size on the DIMM grid
    (config); a hot-add rounds up to a DIMM, a hot-remove down, never below 1024 MiB (qemu_memory_hotplug).
    QemuServer.pm qemu_cpu_hotplug: no vcpus above the running sockets x cores (400, the value left pending).
    API2/Qemu.pm update_vm_api: no balloon above the memory (500). pvestatd: a paused VM lists as paused."""
    from proxmoxer.core import ResourceException
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    vm = node.qemu(100)
    vm.config.put(hotplug='network,disk,cpu,memory', memory=2200, cores=2)
    for error, fix in (('NUMA needs to be enabled for memory hotplug', dict(numa=1)),
                       ('memory size (2200) must be aligned to 512 for hotplugging', dict(memory=512)),
                       ('minimum memory must be 1024MB', dict(memory=2048))):
        exit_status = _wait_task(proxmoxer_api, 'pve1', vm.status.start.post())
        assert error in exit_status and node.qemu(100).status.current.get()['status'] == 'stopped', exit_status
        vm.config.put(**fix)
    assert _wait_task(proxmoxer_api, 'pve1', vm.status.start.post()) == 'OK'
    vm.config.put(memory=2200)
    assert str(vm.config.get(current=1)['memory']) == '2560'     # hot-add: up to the next DIMM
    vm.config.put(memory=1900)
    assert str(vm.config.get(current=1)['memory']) == '1536'     # hot-remove: down to the DIMM below
    with pytest.raises(ResourceException, match="memory can't be lower than 1024 MB"):
        vm.config.put(memory=512)
    assert str(vm.config.get()['memory']) == '512' and str(vm.config.get(current=1)['memory']) == '1536'
    vm.config.put(memory=1536)
    with pytest.raises(ResourceException, match="you can't add more vcpus than maxcpus"):
        vm.config.put(vcpus=3)
    assert str(vm.config.get()['vcpus']) == '3' and 'vcpus' not in vm.config.get(current=1)
    vm.config.put(delete='vcpus')
    with pytest.raises(ResourceException, match=r'balloon value too large \(must be smaller than assigned memory\)'):
        vm.config.put(balloon=2048)
    assert _wait_task(proxmoxer_api, 'pve1', vm.status.suspend.post()) == 'OK'
    pvesim.pve.statd_round()            # pvestatd's next round
    status = dict((r['vmid'], r['status']) for r in proxmoxer_api.cluster.resources.get(type='vm'))
    assert status[100] == 'paused'


def test_agent_is_not_hot_pluggable(proxmoxer_api):
    """qemu-server: `agent` is not in $fast_plug_option; vmconfig_update_agent applies only a change of
    fstrim_cloned_disks, and only with the agent already on; a delete waits for the next start."""
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    vm = node.qemu(100)
    vm.config.put(agent='0')
    vm.status.start.post()
    vm.config.put(agent='1', description='app', tags='a;b')
    pending = dict((p['key'], p) for p in vm.pending.get())
    assert str(pending['agent']['pending']) == '1' and str(pending['agent']['value']) == '0'
    assert 'pending' not in pending['description'] and 'pending' not in pending['tags']
    assert str(vm.config.get()['agent']) == '1' and str(vm.config.get(current=1)['agent']) == '0'
    vm.status.stop.post()
    vm.status.start.post()
    assert str(vm.config.get(current=1)['agent']) == '1' and not any('pending' in p for p in vm.pending.get())
    vm.config.put(agent='enabled=1,fstrim_cloned_disks=1')
    assert vm.config.get(current=1)['agent'] == 'enabled=1,fstrim_cloned_disks=1'
    vm.config.put(agent='enabled=1,fstrim_cloned_disks=1,type=isa')
    assert vm.config.get(current=1)['agent'] == 'enabled=1,fstrim_cloned_disks=1'
    vm.config.put(delete='agent')
    pending = dict((p['key'], p) for p in vm.pending.get())
    assert pending['agent'].get('delete') and 'agent' in vm.config.get(current=1)


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


def test_a_clone_on_a_node_its_storage_does_not_serve_fails_at_start_as_pve(proxmoxer_api, pvesim):
    """qemu-server clone_vm checks only that the volumes are shared for `target`, not the storage's `nodes`; the VM
    is cloned there and its start fails when pve-storage activate_storage runs storage_check_enabled."""
    pvesim.pve.storages['ceph-vm']['nodes'] = 'pve1,pve2'
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='far', target='pve3')
    assert pvesim.pve.vm(100).node == 'pve3'
    upid = proxmoxer_api.nodes('pve3').qemu(100).status.start.post()
    assert pvesim.pve.vm(100).status == 'stopped'
    assert proxmoxer_api.nodes('pve3').tasks(upid).status.get()['exitstatus'] == \
        "storage 'ceph-vm' is not available on node 'pve3'"
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=101, name='near', target='pve2')
    proxmoxer_api.nodes('pve2').qemu(101).status.start.post()
    assert pvesim.pve.vm(101).status == 'running'
    proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=102, name='off')
    pvesim.pve.storages['ceph-vm']['disable'] = 1
    upid = proxmoxer_api.nodes('pve1').qemu(102).status.start.post()
    assert proxmoxer_api.nodes('pve1').tasks(upid).status.get()['exitstatus'] == "storage 'ceph-vm' is disabled"
    # and a clone of its volumes fails in the worker (pve-storage vdisk_clone: activate_storage), leaving no VM
    upid = proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=103, name='none')
    assert proxmoxer_api.nodes('pve1').tasks(upid).status.get()['exitstatus'] == \
        "clone failed: storage 'ceph-vm' is disabled"
    assert pvesim.pve.vm(103) is None


def test_an_ha_start_that_fails_is_relocated_then_put_in_error_as_pve(proxmoxer_api, pvesim):
    """For an HA-managed VM the start API only asks HA ('hastart', OK at once). When its node cannot start it, the
    CRM relocates it (max_relocate, default 1) and, when that node cannot either, puts the service in its error
    state (pve-ha-manager Manager.pm next_state_started): the VM stays stopped on the last node tried and
    status/current's ha.state is 'error'. A new start changes nothing; only the resource's state set to 'disabled'
    clears it (next_state_error), and 'started' starts it again."""
    api, pve = proxmoxer_api, pvesim.pve
    api.nodes('pve1').qemu(9000).clone.post(newid=100, name='ha-vm')
    api.cluster.ha.resources.post(sid='vm:100', state='started')
    pve.storages['ceph-vm']['disable'] = 1
    upid = api.nodes('pve1').qemu(100).status.start.post()
    assert ':hastart:' in upid and _wait_task(api, 'pve1', upid) == 'OK'
    moved = pve.vm(100).node
    assert moved != 'pve1' and pve.ha_relocations == [('vm:100', 'pve1', moved)]
    vm = api.nodes(moved).qemu(100)
    current = vm.status.current.get()
    assert current['status'] == 'stopped' and current['ha'] == {'managed': 1, 'state': 'error'}
    assert pve.ha_errors == {'vm:100': "storage 'ceph-vm' is disabled"}
    pve.storages['ceph-vm']['disable'] = 0            # the cause fixed: HA still does not start it
    # qemu-server vm_start's hastart runs `ha-manager set vm:100 --state started`, which Resources.pm update ->
    # check_service_state refuses for a service in error: the task fails, nothing changes
    upid = vm.status.start.post()
    assert _wait_task(api, moved, upid) == "command 'ha-manager set vm:100 --state started' failed: exit code 255"
    log = [line['t'] for line in api.nodes(moved).tasks(upid).log.get()]
    assert "service 'vm:100' in error state, must be disabled and fixed first" in log
    assert vm.status.current.get()['status'] == 'stopped' and vm.status.current.get()['ha']['state'] == 'error'
    with pytest.raises(Exception) as info:
        api.cluster.ha.resources('vm:100').put(comment='still in error')
    assert "service 'vm:100' in error state, must be disabled and fixed first" in str(info.value)
    assert vm.status.current.get()['ha']['state'] == 'error'
    api.cluster.ha.resources('vm:100').put(state='disabled')
    assert vm.status.current.get()['ha'] == {'managed': 1, 'state': 'stopped'}
    # a start sets the requested state to started again (qemu-server vm_start: ha-manager set --state started)
    _wait_task(api, moved, vm.status.start.post())
    assert vm.status.current.get()['status'] == 'running'
    assert [r['state'] for r in api.cluster.ha.resources.get()] == ['started']


def test_an_ha_start_its_node_cannot_do_runs_where_ha_relocates_it(proxmoxer_api, pvesim):
    """The storage is on pve2 only and pve3 is offline: HA's start fails on pve1 and the CRM relocates the VM to
    pve2, where it runs. With max_relocate 0 it goes to the error state on pve1."""
    api, pve = proxmoxer_api, pvesim.pve
    for vmid, relocate in ((100, 1), (101, 0)):
        api.nodes('pve1').qemu(9000).clone.post(newid=vmid, name='ha-{0}'.format(vmid))
        api.cluster.ha.resources.post(sid='vm:{0}'.format(vmid), state='stopped', max_relocate=relocate)
    pve.storages['ceph-vm']['nodes'] = 'pve2'
    pve.set_node_offline('pve3')
    for vmid in (100, 101):
        _wait_task(api, 'pve1', api.nodes('pve1').qemu(vmid).status.start.post())
    assert (pve.vm(100).node, pve.vm(100).status, pve.vm(100).ha_state) == ('pve2', 'running', 'started')
    assert (pve.vm(101).node, pve.vm(101).status, pve.vm(101).ha_state) == ('pve1', 'stopped', 'error')
    assert pve.ha_errors == {'vm:101': "storage 'ceph-vm' is not available on node 'pve1'"}


def test_linked_clone_of_thick_lvm_is_refused_as_pve(proxmoxer_api, pvesim):
    from lab.pvesim import _add_template
    pvesim.pve.storages['san'] = {'type': 'lvm', 'vgname': 'san', 'shared': 1, 'active': 1, 'content': 'images',
                                  'files': set()}
    _add_template(pvesim.pve, {'vmid': 9200, 'name': 'thick', 'node': 'pve1', 'config': {'scsi0': 'san:base-9200-disk-0'}})
    with pytest.raises(Exception) as info:
        proxmoxer_api.nodes('pve1').qemu(9200).clone.post(newid=100, name='x')
    assert "Linked clone feature is not supported for 'san:base-9200-disk-0' (scsi0)" in str(info.value)


def test_clone_failing_at_the_pool_leaves_the_moved_config_as_pve(proxmoxer_api, pvesim):
    """qemu-server clone_vm: add_vm_to_pool dies after the config was moved to `target`; the cleanup frees the new
    volumes and unlinks the config's old path: the VM stays on the target node, unlocked, without its disks."""
    pve = pvesim.pve
    pve.fail_clone_pool_add(times=2)
    upid = proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=100, name='moved', target='pve2', pool='shadownet')
    assert _wait_task(proxmoxer_api, 'pve1', upid) == (
        "clone failed: can't add VM 100 to pool 'shadownet': cfs lock 'file-user_cfg' error: got lock request timeout")
    orphan = pve.vm(100)
    assert orphan.node == 'pve2' and not orphan.lock and 100 not in pve.pools['shadownet']
    volume = orphan.config['scsi0'].split(',')[0]
    assert 'vm-100-disk-0' in volume and pve._qm_volume(volume) is None
    assert proxmoxer_api.nodes('pve2').qemu(100).config.get()['name'] == 'moved'
    # Without `target` the unlink removes the config: nothing is left.
    upid = proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=101, name='local', pool='shadownet')
    assert _wait_task(proxmoxer_api, 'pve1', upid).startswith("clone failed: can't add VM 101 to pool")
    assert pve.vm(101) is None and not [v for v in pve.storages['ceph-vm']['volumes'] if 'vm-101-' in v]
    # The fault is spent: the next clone joins its pool.
    upid = proxmoxer_api.nodes('pve1').qemu(9000).clone.post(newid=102, name='fine', pool='shadownet')
    assert _wait_task(proxmoxer_api, 'pve1', upid) == 'OK' and 102 in pve.pools['shadownet']


def test_a_task_log_reads_to_the_end_with_limit_0_and_the_collection_sees_every_warning(proxmoxer_api, pvesim, pve_conn):
    # pve-common Tools.pm dump_logfile_by_filehandle: limit 0 reads to the end; the default limit is 50 lines.
    import asyncio
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
    lines = ['WARN: early warning'] + ['progress {0}'.format(i) for i in range(80)] + ['WARN: late warning']

    async def nothing():
        return None

    async def make():
        return await pvesim.pve.task('pve1', 'qmigrate', 9000, 'root@pam', nothing, log=lines)
    upid = asyncio.run_coroutine_threadsafe(make(), pvesim.loop).result(10)
    log = proxmoxer_api.nodes('pve1').tasks(upid).log
    assert len(log.get()) == 50 and [e['t'] for e in log.get(limit=0)][:82] == lines
    api = api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                           token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                           ca_path=pve_conn['ca_path'])
    assert 'WARN: late warning' in api.task_log('pve1', upid, 5)
    assert api.task_log('pve1', upid, None)[:82] == lines


def test_a_hotplug_problem_is_reported_as_pending_by_the_collection(proxmoxer_api, pvesim, pve_conn):
    # update_vm_api writes the change as pending, then raises the hot-plug errors as a 400 ("hotplug problem - ...").
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
    node = proxmoxer_api.nodes('pve1')
    node.qemu(9000).clone.post(newid=100, name='web-1')
    node.qemu(100).config.put(hotplug='network,disk,cpu', cores=2)
    assert _wait_task(proxmoxer_api, 'pve1', node.qemu(100).status.start.post()) == 'OK'
    api = api_utils.PveApi(pve_conn['api_host'], port=pve_conn['api_port'], user=pve_conn['api_user'],
                           token_id=pve_conn['api_token_id'], token_secret=pve_conn['api_token_secret'],
                           ca_path=pve_conn['ca_path'])
    with pytest.raises(api_utils.PveApiError) as info:
        api.update_vm_config('pve1', 100, lambda cfg: ({'vcpus': 3}, []))
    assert 'pending until the VM restarts' in info.value.message and 'maxcpus' in info.value.message
    assert str(node.qemu(100).config.get()['vcpus']) == '3'          # stored, pending

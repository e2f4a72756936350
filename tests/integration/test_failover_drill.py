"""failover step=drill: a controlled failover and fail-back through the simulator, with real keepalived guests.

The simulator drives the primary's lab NIC from its `link_down` (pvesim_links.py); the guests run the vip_failover
role's keepalived config (the harness of lab/vrrp_lab.py) with the MACs PVE has in their configs; this process
reaches the VIP through a veth into the lab bridge (tests/lab/drill_lab.py), so the module's prober, running
in-process, probes the VIP like a client on the service network.
"""
import json
import os
import shutil
import tempfile
import time
import urllib.parse

import pytest

# netlab is a pytest fixture: imported to be found, never called.
from lab.netns import netlab  # noqa: F401 # pylint: disable=unused-import
from lab.drill_lab import DrillGuests, harness, root_client
from lab.modrun import ModuleFailed, run_module
from lab.playbook import VENV_PY, ansible_playbook
from lab.pvesim import start_in_thread

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.modules import failover

# Its own subnet: the root namespace gets an address in it for the duration of the test (make lab uses 10.10.0.x).
NET = '10.78.0'
VIP = NET + '.100/24'
TEMPLATE = {
    'name': 'drl',
    'nodes': ['pve1', 'pve2', 'pve3'],
    'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': NET + '.0/24'}],
    'services': [{'name': 'web', 'template': 9000, 'instances': 1, 'cores': 2, 'memory': 2048, 'networks': ['front'],
                  'vip': VIP, 'critical': True, 'scaling': {'instances': {'min': 1, 'max': 4}}}],
    'shadow': {'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'differential', 'paths': ['/var/lib/app']}},
}
PRIMARY, SHADOW = 'drl-web-1', 'drl-web-shadow'
CONFIG_PATH = '/api2/json/nodes/{0}/qemu/{1}/config'


def drill(pve_conn, plan, check_mode=False, **options):
    opts = dict(port=harness().ECHO_PORT, protocol='udp', interval=10, hold=1.0, settle=2.0, timeout=20.0)
    opts.update(options)
    return run_module(failover, dict(pve_conn, plan=plan, service='web', step='drill', drill=opts, timeout=20),
                      check_mode=check_mode)


def form(body):
    """A request body (form-encoded) as a dict."""
    return dict((k, v[0]) for k, v in urllib.parse.parse_qs(body).items())


def mac(vm, key):
    return propstr.parse_net(vm.config[key])['macaddr']


def test_check_mode_reports_the_plan_and_writes_nothing(pvesim, pve_conn, plan, built):
    primary = built[PRIMARY]
    before = primary.config['net0']
    mark = pvesim.mark()
    result = drill(pve_conn, plan, check_mode=True)
    assert pvesim.writes(mark) == []
    assert result['changed'] and result['steps'] == ['detect', 'drill']
    out = result['drill']
    assert out['would'] and out['vip'] == NET + '.100' and out['port'] == harness().ECHO_PORT
    assert out['shadow'] == SHADOW and out['primaries'] == [PRIMARY]
    link = out['links'][0]
    assert (link['name'], link['vmid'], link['nic'], link['before']) == (PRIMARY, primary.vmid, 'net0', before)
    assert propstr.parse_net(link['down']) == dict(propstr.parse_net(before), link_down='1')
    assert 'failover_gap_ms' not in out
    assert any(line.startswith('drill: would set link_down=1 on drl-web-1 net0') for line in result['lines'])
    assert primary.config['net0'] == before


def test_refuses_an_unhealthy_service_before_any_write(pvesim, pve_conn, plan, built):
    primary, shadow = built[PRIMARY], built[SHADOW]
    mark = pvesim.mark()
    # A primary down.
    primary.status = primary.qmpstatus = 'stopped'
    with pytest.raises(ModuleFailed) as exc:
        drill(pve_conn, plan)
    assert 'not starting the drill of web: drl-web-1 is down (stopped)' in exc.value.result['msg']
    primary.status = primary.qmpstatus = 'running'
    # A locked VM.
    primary.lock = 'backup'
    with pytest.raises(ModuleFailed) as exc:
        drill(pve_conn, plan)
    assert 'drl-web-1 is locked (backup)' in exc.value.result['msg']
    primary.lock = None
    # The shadow already serving (a failover in progress).
    shadow.config['description'] = meta_utils.merge_description(shadow.config.get('description', ''),
                                                                {'failover': {'active': True, 'since': 1}})[0]
    with pytest.raises(ModuleFailed) as exc:
        drill(pve_conn, plan)
    assert 'shadow drl-web-shadow is already active' in exc.value.result['msg']
    assert exc.value.result['kind'] == 'drill'
    assert pvesim.writes(mark) == []


def test_refuses_a_primary_nic_with_a_change_pending(pvesim, pve_conn, plan, built):
    """GET config answers with pending values applied (qemu-server vm_config without `current`): the drill's write
    of link_down onto that value would carry a pending NIC change out on the running primary."""
    primary = built[PRIMARY]
    primary.pending['net0'] = primary.config['net0'].replace('virtio=', 'e1000=')   # a model change waits for a restart
    mark = pvesim.mark()
    for check_mode in (True, False):
        with pytest.raises(ModuleFailed) as exc:
            drill(pve_conn, plan, check_mode=check_mode)
        msg = exc.value.result['msg']
        assert 'drl-web-1 net0 has a change pending until a restart' in msg and '--revert net0' in msg, msg
    assert pvesim.writes(mark) == [] and primary.pending['net0'].startswith('e1000=')


@pytest.fixture
def drill_lab(netlab, pvesim, built):  # noqa: F811
    """keepalived primary and shadow guests with the VMs' MACs, the primary's NIC bound, a client veth here."""
    if not os.path.exists(harness().KEEPALIVED):
        pytest.skip('keepalived is not installed')
    h = harness()
    primary, shadow = built[PRIMARY], built[SHADOW]
    addrs = {'primary': (primary.vmid, NET + '.11'), 'shadow': (shadow.vmid, NET + '.12')}
    workdir = tempfile.mkdtemp(prefix='sn-drill-%d-' % os.getpid())
    guests = client = None
    try:
        res, hosts = h.render(workdir, extra=dict(h.LAB_VARS), instances=h.unicast_instances(addrs=addrs, vip=VIP))
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        guests = DrillGuests(netlab, hosts, addrs, VIP, {'primary': mac(primary, 'net0'),
                                                         'shadow': mac(shadow, 'net1')})
        client = root_client(netlab, 'vmbr0', NET + '.3/24')
        assert guests.ready(), 'keepalived did not converge (primary MASTER, shadow BACKUP)'
        pvesim.pve.bind_link(primary.vmid, 'net0', guests.host_dev('primary'), ns=netlab.node)
        yield guests
    finally:
        pvesim.pve.unbind_links()
        if guests is not None:
            guests.close()
        if client is not None:
            client.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.netns
def test_drill_fails_over_and_back_and_measures_the_gap(pvesim, pve_conn, plan, built, drill_lab):
    primary = built[PRIMARY]
    before = primary.config['net0']
    path = CONFIG_PATH.format(primary.node, primary.vmid)
    mark = pvesim.mark()
    wall = time.time()
    result = drill(pve_conn, plan)
    out = result['drill']
    detail = dict((k, v) for k, v in out.items() if k != 'links')
    assert result['changed'] and result['steps'] == ['detect', 'drill']
    # The shadow answered during the drill, the primary before and after it: exactly one fail-back, no flap.
    assert out['identified'] and out['owner_before'] == PRIMARY, detail
    assert out['shadow_answered'] and out['failover_answered_by'] == SHADOW, detail
    assert out['failback_answered_by'] == PRIMARY and out['failbacks'] == 1 and out['flaps'] == 0, detail
    assert [(s['from'], s['to']) for s in out['switches']] == [(PRIMARY, SHADOW), (SHADOW, PRIMARY)], detail
    # Real figures: more than the probe interval, below a sanity bound (not a performance assertion).
    for key in ('failover_gap_ms', 'failback_gap_ms', 'takeover_ms'):
        assert isinstance(out[key], float) and 0 < out[key] < 2000, (key, detail)
    # The fail-back waits for keepalived's preempt_delay (1 s in the lab) first.
    assert isinstance(out['failback_ms'], float) and 900 < out['failback_ms'] < 5000, detail
    assert out['failover_gap_ms'] >= out['interval_ms'] and out['probes'] > 100 and out['failures'] > 0, detail
    assert out['restored'] and out['answered_by'][SHADOW] > 0 and out['answered_by'][PRIMARY] > 0
    assert any(line.startswith('drill: failover gap ') for line in result['lines'])
    # keepalived agrees: the shadow became MASTER once, the primary once (the fail-back).
    assert drill_lab.masters_since(wall) == {'primary': 1, 'shadow': 1}
    assert drill_lab.vrrp.has_vip('primary') and not drill_lab.vrrp.has_vip('shadow')
    # The request log: link_down=1 on the primary's NIC (digest-checked), then its previous string back.
    writes = pvesim.writes(mark)
    assert [(m, p) for m, p, b in writes] == [('PUT', path), ('PUT', path)], writes
    down, restore = form(writes[0][2]), form(writes[1][2])
    assert propstr.parse_net(down['net0']) == dict(propstr.parse_net(before), link_down='1') and down['digest']
    assert restore['net0'] == before and restore['digest'] and set(restore) == {'net0', 'digest'}
    assert primary.config['net0'] == before and 'link_down' not in before
    assert pvesim.pve.link_events == [(primary.vmid, 'net0', drill_lab.host_dev('primary'), 'down'),
                                      (primary.vmid, 'net0', drill_lab.host_dev('primary'), 'up')]


@pytest.mark.netns
def test_drill_restores_the_link_when_the_shadow_never_answers(pvesim, pve_conn, plan, built, drill_lab):
    primary = built[PRIMARY]
    before = primary.config['net0']
    # The shadow's keepalived is gone: nobody takes the VIP over.
    drill_lab.vrrp.stop_keepalived('shadow')
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as exc:
        drill(pve_conn, plan, timeout=3.0)
    assert 'the VIP did not answer again after the link of drl-web-1 went down within 3.0s' in exc.value.result['msg']
    assert exc.value.result['drill']['links'][0]['before'] == before
    writes = pvesim.writes(mark)
    assert len(writes) == 2
    assert propstr.parse_net(form(writes[0][2])['net0'])['link_down'] == '1'
    assert form(writes[1][2])['net0'] == before
    assert primary.config['net0'] == before
    assert [e[3] for e in pvesim.pve.link_events] == ['down', 'up']
    # The primary answers again once its link is back.
    assert drill_lab.vrrp.wait_state('primary', 'MASTER', 10)


@pytest.mark.netns
def test_control_channel_binds_a_lab_link(netlab, tmp_path):  # noqa: F811
    """make lab's path: a launched simulator gets the binding through POST /_sim/link; without one, nothing."""
    requests = pytest.importorskip('requests')
    server = start_in_thread(control=True, certs_dir=str(tmp_path / 'certs'))
    http = requests.Session()
    try:
        netlab.bridge('vmbr0')
        guest = netlab.vm(321, [('vmbr0', None)])
        dev = guest.nics[0].host
        server.pve.add_vm(321, 'lnk', node='pve1', status='running',
                          config={'net0': 'virtio=BC:24:11:00:03:21,bridge=vmbr0'})
        auth = {'Authorization': 'PVEAPIToken={0}={1}'.format(server.token_id, server.token_secret)}
        config = server.url + '/api2/json/nodes/pve1/qemu/321/config'

        def put(net):
            answer = http.put(config, data={'net0': net}, headers=auth, verify=server.cafile, timeout=10)
            assert answer.status_code == 200, answer.text

        def up():
            return 'UP' in netlab.link(netlab.node, dev)['flags']
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0,link_down=1')
        assert up() and server.pve.link_events == []          # not bound: nothing happens
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0')
        bad = http.post(server.url + '/_sim/link', json={'vmid': 321, 'nic': 'eth0', 'dev': dev},
                        headers=auth, verify=server.cafile, timeout=10)
        assert bad.status_code == 400
        answer = http.post(server.url + '/_sim/link', json={'vmid': 321, 'nic': 'net0', 'dev': dev,
                                                            'ns': netlab.node},
                           headers=auth, verify=server.cafile, timeout=10)
        assert answer.status_code == 200, answer.text
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0,link_down=1')
        assert not up()
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0,firewall=1,link_down=1')   # no link change: no ip call
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0')
        assert up()
        assert [e[3] for e in server.pve.link_events] == ['down', 'up']
        http.post(server.url + '/_sim/link', json={'vmid': 321, 'unbind': True}, headers=auth,
                  verify=server.cafile, timeout=10)
        put('virtio=BC:24:11:00:03:21,bridge=vmbr0,link_down=1')
        assert up() and len(server.pve.link_events) == 2
    finally:
        http.close()  # before the server stops: no connection left for the garbage collector
        server.stop()


def test_playbook_drill_in_check_mode(pvesim, plan, built, tmp_path):
    """playbooks/failover.yml -e failover_step=drill passes failover_drill through; --check writes nothing."""
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'all': {'hosts': {'localhost': {
        'ansible_connection': 'local', 'ansible_python_interpreter': VENV_PY}}}}))
    mark = pvesim.mark()
    proc = ansible_playbook(['--check', '-i', inventory, 'failover.yml',
                             '-e', json.dumps({'shadownet_templates': [TEMPLATE], 'failover_service': 'web',
                                               'failover_step': 'drill',
                                               'failover_drill': {'port': 7007, 'protocol': 'udp'}})], sim=pvesim)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert 'drill: would set link_down=1 on drl-web-1 net0, wait until the shadow drl-web-shadow answers on ' \
           '10.78.0.100:7007/udp' in proc.stdout, proc.stdout[-3000:]
    assert pvesim.writes(mark) == []

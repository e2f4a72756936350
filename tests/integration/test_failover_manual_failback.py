"""playbooks/failover.yml hands the VIP back to a primary for vip_failover_failback: manual (nopreempt).

Real keepalived in the namespace lab with the vip_failover role's rendered config (instance shop-web, failback
manual), the PVE side in the simulator. The primary's link goes down and up again: with nopreempt the shadow keeps
the VIP. failover.yml then fails back on the PVE side, holds the shadow, waits for the primary's MASTER and
releases the hold: exactly one move back, and a second run changes nothing.
"""
import json
import os
import time

import pytest
import yaml

# netlab is a pytest fixture: imported to be found, never called.
from lab.netns import netlab  # noqa: F401 # pylint: disable=unused-import
from lab.playbook import VENV_PY, ansible_playbook, recaps
from lab.shop import SHOP as TEMPLATE
from lab.vrrp_lab import KEEPALIVED, VrrpLab, needs_keepalived, render, unicast_instances

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import vrrp

INSTANCE = 'shop-web'
VM_NAMES = {'primary': 'shop-web-1', 'shadow': 'shop-web-shadow'}


def state(hosts, role):
    try:
        with open(os.path.join(hosts[role]['vip_failover_state_dir'], INSTANCE + '.state')) as handle:
            event = vrrp.parse_state(handle.read())
    except FileNotFoundError:
        return None
    return event['state'] if event else None


def wait_for_state(hosts, role, want, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(hosts, role) == want:
            return True
        time.sleep(0.05)
    return False


def start_on_primary(vl, hosts, timeout=30.0):
    """Under nopreempt both members start BACKUP and the first to time out takes the VIP: normally the primary
    (higher priority, shorter wait), but on a loaded machine its keepalived may start late and the shadow win.
    Then hand the VIP to the primary with the shadow's hold, as an operator would, so every run starts alike."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and 'MASTER' not in (state(hosts, 'primary'), state(hosts, 'shadow')):
        time.sleep(0.05)
    if state(hosts, 'shadow') == 'MASTER':
        vl.ctl('shadow', 'hold', vl.state_dir('shadow'), INSTANCE, '1')
        assert wait_for_state(hosts, 'primary', 'MASTER')
        vl.ctl('shadow', 'hold', vl.state_dir('shadow'), INSTANCE, '0')
    return wait_for_state(hosts, 'primary', 'MASTER') and wait_for_state(hosts, 'shadow', 'BACKUP')


def masters_since(vl, role, wall):
    return sum(1 for e in vl.transitions(role) if e['instance'] == INSTANCE and e['state'] == 'MASTER'
               and e['time'] >= wall)


def inventory(tmp_path, hosts):
    guests = {}
    for role, name in VM_NAMES.items():
        guests[name] = dict(hosts[role], ansible_connection='local', ansible_python_interpreter=VENV_PY,
                            sn_template='shop', sn_service='web', sn_role=role, sn_index=1 if role == 'primary' else 0,
                            vip_failover_failback='manual')
    path = tmp_path / 'failover-inventory.yml'
    path.write_text(yaml.safe_dump({'all': {
        'hosts': {'localhost': {'ansible_connection': 'local', 'ansible_python_interpreter': VENV_PY}},
        'children': {'shadownet': {'hosts': guests}}}}))
    return str(path)


def failover_playbook(pvesim, inv):
    return ansible_playbook(['-i', inv, 'failover.yml',
                             '-e', json.dumps({'shadownet_templates': [TEMPLATE], 'failover_service': 'web',
                                               'failover_min_uptime': 0, 'failover_catch_up': 'skip'})], sim=pvesim)


@pytest.mark.netns
@pytest.mark.slow
@needs_keepalived
def test_manual_failback_moves_the_vip_back_once(netlab, pvesim, pve_conn, tmp_path, built):  # noqa: F811
    assert os.path.exists(KEEPALIVED)
    res, hosts = render(str(tmp_path), extra={'vip_failover_failback': 'manual'},
                        instances=unicast_instances(name=INSTANCE))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert 'nopreempt' in open(hosts['shadow']['vip_failover_config_path']).read()
    vl = VrrpLab(netlab, hosts)
    try:
        assert start_on_primary(vl, hosts), vl.transitions('primary') + vl.transitions('shadow')
        # The primary's link fails and comes back: nopreempt, so the shadow keeps the VIP.
        vl.link('primary', False)
        assert wait_for_state(hosts, 'shadow', 'MASTER')
        vl.link('primary', True)
        assert wait_for_state(hosts, 'primary', 'BACKUP')
        time.sleep(3)
        assert state(hosts, 'shadow') == 'MASTER' and state(hosts, 'primary') == 'BACKUP'
        assert vl.has_vip('shadow') and not vl.has_vip('primary')

        inv = inventory(tmp_path, hosts)
        started = time.time()
        first = failover_playbook(pvesim, inv)
        assert first.returncode == 0, first.stdout[-5000:] + first.stderr[-2000:]
        # The hold put the shadow into FAULT once (that is what moved the VIP: nopreempt kept it there for 3 s).
        faults = [e for e in vl.transitions('shadow') if e['instance'] == INSTANCE and e['state'] == 'FAULT'
                  and e['time'] >= started]
        assert len(faults) == 1, vl.transitions('shadow')
        assert state(hosts, 'primary') == 'MASTER'
        assert wait_for_state(hosts, 'shadow', 'BACKUP')
        assert vl.has_vip('primary') and not vl.has_vip('shadow')
        hold = os.path.join(hosts['shadow']['vip_failover_state_dir'], INSTANCE + '.hold')
        with open(hold) as handle:
            assert handle.read().strip() == '0'
        # Exactly one move back; the released shadow stays BACKUP (lower priority, nopreempt).
        time.sleep(2)
        assert masters_since(vl, 'primary', started) == 1 and masters_since(vl, 'shadow', started) == 0
        assert state(hosts, 'shadow') == 'BACKUP' and state(hosts, 'primary') == 'MASTER'

        again = failover_playbook(pvesim, inv)
        assert again.returncode == 0, again.stdout[-5000:]
        counters = recaps(again.stdout)
        assert set(counters) == {'localhost', 'shop-web-1', 'shop-web-shadow'}, again.stdout[-3000:]
        assert all(c['changed'] == 0 and c['failed'] == 0 for c in counters.values()), counters
        # The second run did not hold the shadow again (keepalived's own transitions are the role tests' subject).
        assert [e for e in vl.transitions('shadow') if e['instance'] == INSTANCE and e['state'] == 'FAULT'
                and e['time'] >= started] == faults
    finally:
        vl.close()

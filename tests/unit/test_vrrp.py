# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Unit tests of module_utils/failover/vrrp.py (the vip_failover role's model) and the filter plugin."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import vrrp
from ansible_collections.shadownet.proxmox.plugins.filter import vrrp as vrrp_filter


def inst(**kw):
    base = {'name': 'web', 'interface': 'eth0', 'vip': '10.10.0.100/24', 'role': 'primary',
            'unicast_src_ip': '10.10.0.11', 'peers': ['10.10.0.12'], 'check': {'type': 'tcp', 'port': 80}}
    base.update(kw)
    return base


def errors_of(instances, settings=None, interfaces=None):
    return vrrp.build_model(instances, settings, interfaces)['errors']


# --- VRID derivation -------------------------------------------------------------------------------------
def test_derive_vrid_is_stable_and_in_range():
    names = ['web', 'db', 'shop-web', 'a' * 32] + ['svc%d' % i for i in range(500)]
    for name in names:
        vrid = vrrp.derive_vrid(name)
        assert 1 <= vrid <= 255
        assert vrid == vrrp.derive_vrid(name)
    # Pinned to the documented formula (sha256, first 4 bytes, mod 255, +1) so it cannot drift silently
    # between releases: a drift would split primaries and shadows rendered by different versions.
    expected = int.from_bytes(hashlib.sha256(b'web').digest()[:4], 'big') % 255 + 1
    assert vrrp.derive_vrid('web') == expected
    assert len({vrrp.derive_vrid(n) for n in names}) > 200  # spread, not a constant


def test_model_uses_derived_vrid_unless_given():
    model = vrrp.build_model([inst(), inst(name='db', vip='10.10.0.101/24', virtual_router_id=7)])
    assert model['errors'] == []
    by = {i['name']: i for i in model['instances']}
    assert by['web']['virtual_router_id'] == vrrp.derive_vrid('web')
    assert by['db']['virtual_router_id'] == 7


# --- priorities --------------------------------------------------------------------------------------------
def test_priorities_from_role_and_rank():
    model = vrrp.build_model([inst(), inst(name='db', vip='10.10.0.101/24', rank=2),
                              inst(name='mq', vip='10.10.0.102/24', role='shadow')])
    assert model['errors'] == []
    prio = {i['name']: i['priority'] for i in model['instances']}
    assert prio == {'web': 150, 'db': 148, 'mq': 100}


def test_primary_priority_must_be_above_shadow():
    errs = errors_of([inst(priority=90)])
    assert any('priority above shadow_priority (100)' in e for e in errs)
    errs = errors_of([inst(role='shadow', priority=160)])
    assert any('shadow needs a priority below primary_priority (150)' in e for e in errs)
    errs = errors_of([inst()], {'primary_priority': 100, 'shadow_priority': 120})
    assert any('primary_priority (100) must be higher than shadow_priority (120)' in e for e in errs)
    assert any('255 is reserved' in e for e in errors_of([inst()], {'primary_priority': 255}))


def test_role_inferred_from_explicit_priority():
    second = inst(name='x', vip='10.10.0.9/24', role=None, priority=50)
    model = vrrp.build_model([inst(role=None, priority=120), second])
    assert model['errors'] == []
    assert [i['role'] for i in model['instances']] == ['primary', 'shadow']
    assert any('set role' in e for e in errors_of([inst(role=None)]))


# --- addresses ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize('kw, fragment', [
    ({'vip': '10.10.0.100'}, 'with its prefix length'),
    ({'vip': '10.10.0.300/24'}, 'not a valid address'),
    ({'vip': '10.10.0.0/24'}, 'network or broadcast'),
    ({'vip': '10.10.0.255/24'}, 'network or broadcast'),
    ({'unicast_src_ip': '10.20.0.11'}, 'outside the vip network 10.10.0.0/24'),
    ({'peers': ['10.20.0.12']}, 'outside the vip network'),
    ({'peers': ['10.10.0.12', '10.10.0.12']}, 'listed twice'),
    ({'peers': ['10.10.0.11']}, "own unicast_src_ip"),
    ({'peers': ['10.10.0.100']}, 'the vip itself'),
    ({'unicast_src_ip': '10.10.0.100', 'peers': ['10.10.0.12']}, 'not the vip'),
    ({'unicast_src_ip': None}, 'need unicast_src_ip'),
    ({'peers': []}, 'fall back to multicast'),
    ({'peers': ['fd00::2']}, 'is IPv6 but the vip is IPv4'),
    ({'interface': 'a-very-long-interface-name'}, 'interface must be'),
    ({'name': 'bad name'}, 'name must match'),
    ({'colour': 'red'}, 'unknown keys: colour'),
])
def test_address_and_field_errors(kw, fragment):
    errs = errors_of([inst(**kw)])
    assert any(fragment in e for e in errs), errs


def test_multicast_form_is_valid():
    model = vrrp.build_model([inst(unicast_src_ip=None, peers=[])])
    assert model['errors'] == []
    assert model['instances'][0]['peers'] == []


def test_ipv6_forces_version_3():
    model = vrrp.build_model([inst(vip='fd00::100/64', unicast_src_ip='fd00::11', peers=['fd00::12'])],
                             {'vrrp_version': 2, 'advert_int': 1})
    assert model['errors'] == []
    assert model['instances'][0]['version'] == 3


def test_vip_inside_interface_network_from_facts():
    ok = {'eth0': ['10.10.0.11/24'], 'lo': ['127.0.0.1/8']}
    assert errors_of([inst()], interfaces=ok) == []
    errs = errors_of([inst()], interfaces={'eth0': ['10.20.0.11/24']})
    assert any('not inside any network of eth0 (10.20.0.0/24)' in e for e in errs)
    errs = errors_of([inst()], interfaces={'ens18': ['10.10.0.11/24']})
    assert any('interface eth0 does not exist on this host (found: ens18)' in e for e in errs)


def test_interfaces_from_facts():
    facts = {'interfaces': ['eth0', 'lo', 'vmbr0.10'],
             'eth0': {'ipv4': {'address': '10.10.0.11', 'netmask': '255.255.255.0', 'prefix': '24'},
                      'ipv4_secondaries': [{'address': '10.10.0.100', 'prefix': '24'}],
                      'ipv6': [{'address': 'fd00::11', 'prefix': '64'}]},
             'lo': {'ipv4': {'address': '127.0.0.1', 'prefix': '8'}},
             'vmbr0_10': {}}
    got = vrrp.interfaces_from_facts(facts)
    assert got == {'eth0': ['10.10.0.11/24', '10.10.0.100/24', 'fd00::11/64'], 'lo': ['127.0.0.1/8'],
                   'vmbr0.10': []}
    assert vrrp.interfaces_from_facts({}) is None


# --- VRID uniqueness ---------------------------------------------------------------------------------------
def test_vrid_unique_per_network_on_one_host():
    errs = errors_of([inst(virtual_router_id=9), inst(name='db', vip='10.10.0.101/24', virtual_router_id=9)])
    assert any('virtual_router_id 9 is already used by web on 10.10.0.0/24' in e for e in errs)
    # The same VRID on another network is fine.
    assert errors_of([inst(virtual_router_id=9),
                      inst(name='db', vip='10.20.0.101/24', unicast_src_ip='10.20.0.11', peers=['10.20.0.12'],
                           virtual_router_id=9)]) == []


def test_duplicate_names_rejected():
    errs = errors_of([inst(), inst(vip='10.10.0.101/24', virtual_router_id=3)])
    assert any('duplicate instance name web' in e for e in errs)


# --- timers, fail-back, checks, auth -----------------------------------------------------------------------
@pytest.mark.parametrize('value, version, ok', [
    (0.03, 3, True), (0.01, 3, True), (40.95, 3, True), (1, 3, True),
    (0.005, 3, False), (41, 3, False), (0.015, 3, False), ('fast', 3, False),
    (1, 2, True), (0.5, 2, False),
])
def test_advert_int(value, version, ok):
    errs = errors_of([inst()], {'advert_int': value, 'vrrp_version': version})
    assert (errs == []) is ok, errs


def test_failback_policy():
    m = vrrp.build_model([inst(), inst(name='db', vip='10.10.0.101/24', failback='manual')])
    assert m['errors'] == []
    web, db = m['instances']
    assert (web['nopreempt'], web['preempt_delay']) == (False, 5)
    assert db['nopreempt'] is True
    assert any('failback must be auto' in e for e in errors_of([inst(failback='sometimes')]))
    assert any('preempt_delay must be 0 to 1000' in e for e in errors_of([inst(preempt_delay=5000)]))


def test_checks_normalised_with_defaults():
    m = vrrp.build_model([inst(), inst(name='db', vip='10.10.0.101/24',
                                       check={'type': 'command', 'command': 'pg_isready -q', 'fall': 4}),
                          inst(name='mq', vip='10.10.0.102/24', check=None)],
                         {'check_interval': 0.2})
    assert m['errors'] == []
    web, db, mq = m['instances']
    assert web['check'] == {'type': 'tcp', 'port': 80, 'host': '127.0.0.1', 'interval': 0.2, 'timeout': 0.1,
                            'fall': 2, 'rise': 3}
    assert db['check']['command'] == 'pg_isready -q' and db['check']['fall'] == 4
    assert mq['check'] == {'type': 'none'}
    wd = vrrp.watchdog_config(m['instances'])
    assert [i['name'] for i in wd['instances']] == ['web', 'db']
    assert wd['instances'][0]['health_file'] == '/var/lib/shadownet-vip/web.health'
    assert wd['instances'][0]['beat_file'] == '/var/lib/shadownet-vip/web.beat'


@pytest.mark.parametrize('check, fragment', [
    ({'type': 'tcp'}, 'check.port must be'),
    ({'type': 'tcp', 'port': 70000}, 'check.port must be'),
    ({'type': 'tcp', 'port': 80, 'host': 'localhost'}, 'check.host must be an IP'),
    ({'type': 'command', 'command': ' '}, 'check.command must be'),
    ({'type': 'http'}, 'check.type must be one of'),
    ({'type': 'tcp', 'port': 80, 'interval': 0}, 'check.interval must be'),
    ({'type': 'tcp', 'port': 80, 'rise': 0}, 'check.rise must be'),
    ({'type': 'none', 'port': 80}, 'unknown check keys'),
])
def test_check_errors(check, fragment):
    errs = errors_of([inst(check=check)])
    assert any(fragment in e for e in errs), errs


def test_auth_rules():
    assert any('not part of VRRPv3' in e for e in errors_of([inst(auth={'type': 'PASS', 'pass': 'x'})]))
    v2 = {'vrrp_version': 2, 'advert_int': 1}
    m = vrrp.build_model([inst(auth={'type': 'pass', 'pass': 'secret'})], v2)
    assert m['errors'] == [] and m['instances'][0]['auth'] == {'type': 'PASS', 'pass': 'secret'}
    assert any('1 to 8 printable' in e for e in errors_of([inst(auth={'pass': 'far-too-long'})], v2))
    assert any('auth.type must be PASS or AH' in e for e in errors_of([inst(auth={'type': 'MD5', 'pass': 'a'})],
                                                                      v2))


def test_track_interfaces_exclude_own():
    m = vrrp.build_model([inst(track_interfaces=['eth0', 'eth1', 'eth1'])])
    assert m['instances'][0]['track_interfaces'] == ['eth1']


# --- characterisation: the whole output, every message and its order (pinned before build_model was split) ----
def test_build_model_settings_errors_come_first_and_a_non_list_stops():
    assert vrrp.build_model('web', {'vrrp_version': 4, 'primary_priority': 0}) == {'instances': [], 'errors': [
        'vrrp_version must be 2 or 3, got 4',
        'primary_priority must be 1 to 254 (255 is reserved for the address owner), got 0',
        'instances must be a list, got str']}


def test_build_model_every_instance_error_in_order():
    bad = [
        'web',
        inst(name='a', virtual_router_id=0, role='backup', rank=101, peers='10.10.0.12', track_interfaces='eth1',
             check='tcp', unicast_src_ip='nonsense'),
        inst(name='b', vip='10.10.0.101/24', rank=-1, role=None, priority=None, peers=['x', '10.10.0.13'],
             track_interfaces=['eth1', 'bad name'], auth='secret', colour='red'),
        inst(name='c', vip='10.10.0.102/24', role='shadow', priority=0, auth={'pass': 'x'}),
        inst(name='d', vip='10.10.0.103/24', virtual_router_id=vrrp.derive_vrid('c')),
        inst(name='e', vip='10.10.0.104/24', interface='eth1'),
        inst(name='f', vip='10.10.0.105/24', interface='eth9'),
        inst(name='bad name', interface='x' * 16, vip='10.10.0.106', unicast_src_ip=None, peers=None),
    ]
    model = vrrp.build_model(bad, {'vrrp_version': 3},
                             {'eth0': ['garbage', '10.10.0.11/24', '::/0'], 'eth1': None})
    assert model['errors'] == [
        "instances[0]: must be a mapping, got 'web'",
        'instances[1] (a): virtual_router_id must be 1 to 255, got 0',
        "instances[1] (a): role must be primary or shadow, got 'backup'",
        'instances[1] (a): rank must be 0 to 100, got 101',
        "instances[1] (a): unicast_src_ip 'nonsense' is not an IP address",
        'instances[1] (a): peers must be a list of addresses',
        'instances[1] (a): track_interfaces must be a list of interface names',
        "instances[1] (a): check must be a mapping such as {type: tcp, port: 80}, got 'tcp'",
        'instances[2] (b): unknown keys: colour',
        'instances[2] (b): set role (primary or shadow) or priority',
        'instances[2] (b): rank must be 0 to 100, got -1',
        "instances[2] (b): peer 'x' is not an IP address",
        'instances[2] (b): track_interfaces must be a list of interface names',
        'instances[2] (b): auth is not part of VRRPv3 (RFC 5798 removed it): drop auth or set vrrp_version 2',
        'instances[3] (c): priority must be 1 to 254, got 0',
        'instances[3] (c): auth is not part of VRRPv3 (RFC 5798 removed it): drop auth or set vrrp_version 2',
        'instances[4] (d): virtual_router_id 219 is already used by c on 10.10.0.0/24; set virtual_router_id '
        'explicitly (free ids on this host: e.g. 1)',
        'instances[5] (e): vip 10.10.0.104/24 is not inside any network of eth1 (no address): VRRP needs the vip on '
        "the interface's own layer-2 network",
        'instances[6] (f): interface eth9 does not exist on this host (found: eth0, eth1)',
        'instances[7]: name must match ^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$ (it names files and the keepalived '
        "instance), got 'bad name'",
        "instances[7]: interface must be a network interface name (1-15 characters), got 'xxxxxxxxxxxxxxxx'",
        "instances[7]: vip must be an address with its prefix length (CIDR), e.g. 10.10.0.100/24, got '10.10.0.106'",
    ]
    # An instance with errors still has every key, with placeholders where the input was unusable.
    assert model['instances'][-1] == {
        'name': 'invalid7', 'interface': 'invalid', 'vip': None, 'vip_address': None, 'prefixlen': None,
        'network': None, 'family': 4, 'version': 3, 'virtual_router_id': vrrp.derive_vrid('invalid7'),
        'role': 'primary', 'priority': 150, 'unicast_src_ip': None, 'peers': [], 'advert_int': 0.03,
        'failback': 'auto', 'nopreempt': False, 'preempt_delay': 5, 'track_interfaces': [],
        'check': {'type': 'tcp', 'interval': 0.05, 'timeout': 0.1, 'fall': 2, 'rise': 3, 'port': 80,
                  'host': '127.0.0.1'},
        'auth': None, 'health_file': '/var/lib/shadownet-vip/invalid7.health',
        'beat_file': '/var/lib/shadownet-vip/invalid7.beat',
        'hold_file': '/var/lib/shadownet-vip/invalid7.hold', 'state_file': '/var/lib/shadownet-vip/invalid7.state'}


def test_build_model_no_free_vrid_left():
    model = vrrp.build_model([inst(name='x%d' % v, virtual_router_id=v) for v in range(1, 256)]
                             + [inst(name='dup', virtual_router_id=7)])
    assert model['errors'] == [
        'instances[255] (dup): virtual_router_id 7 is already used by x7 on 10.10.0.0/24; set virtual_router_id '
        'explicitly (free ids on this host: e.g. None)']


def test_build_model_auth_must_be_a_mapping_in_v2():
    assert errors_of([inst(auth='secret')], {'vrrp_version': 2, 'advert_int': 1}) == [
        'instances[0] (web): auth must be a mapping {type: PASS, pass: secret}']


def test_build_model_full_instance_v2():
    model = vrrp.build_model([inst(track_interfaces=['eth1', 'eth0', 'eth1'], auth={'type': 'ah', 'pass': 'k'},
                                   failback='manual', rank=3,
                                   check={'type': 'command', 'command': 'true', 'rise': 5})],
                             {'vrrp_version': 2, 'advert_int': 2, 'state_dir': '/run/x', 'preempt_delay': None})
    assert model == {'errors': [], 'instances': [{
        'name': 'web', 'interface': 'eth0', 'vip': '10.10.0.100/24', 'vip_address': '10.10.0.100', 'prefixlen': 24,
        'network': '10.10.0.0/24', 'family': 4, 'version': 2, 'virtual_router_id': vrrp.derive_vrid('web'),
        'role': 'primary', 'priority': 147, 'unicast_src_ip': '10.10.0.11', 'peers': ['10.10.0.12'],
        'advert_int': 2, 'failback': 'manual', 'nopreempt': True, 'preempt_delay': 5, 'track_interfaces': ['eth1'],
        'check': {'type': 'command', 'interval': 0.05, 'timeout': 0.1, 'fall': 2, 'rise': 5, 'command': 'true'},
        'auth': {'type': 'AH', 'pass': 'k'}, 'health_file': '/run/x/web.health', 'beat_file': '/run/x/web.beat',
        'hold_file': '/run/x/web.hold', 'state_file': '/run/x/web.state'}]}


# --- across hosts ------------------------------------------------------------------------------------------
def member(host, **kw):
    base = {'host': host, 'name': 'web', 'vip': '10.10.0.100/24', 'network': '10.10.0.0/24',
            'virtual_router_id': 10, 'priority': 150, 'role': 'primary'}
    base.update(kw)
    return base


def test_cluster_ok():
    shadow = member('s', priority=100, role='shadow')
    assert vrrp.cluster_errors([member('a'), member('b', priority=149), shadow]) == []


def test_cluster_errors():
    errs = vrrp.cluster_errors([member('a'), member('b'), member('s', priority=100, role='shadow',
                                                                 virtual_router_id=11)])
    assert any('a and b have the same priority 150' in e for e in errs)
    assert any('hosts disagree on virtual_router_id' in e for e in errs)
    errs = vrrp.cluster_errors([member('a', priority=120), member('s', priority=130, role='shadow')])
    assert any('shadow s (priority 130) is not below primary a (priority 120)' in e for e in errs)
    errs = vrrp.cluster_errors([member('a'), member('b', name='db', vip='10.10.0.101/24')])
    assert any('virtual_router_id 10 on 10.10.0.0/24 is also used by' in e for e in errs)


def test_filter_cluster_errors_reads_hostvars():
    m1 = vrrp_filter.vrrp_model([inst()])
    m2 = vrrp_filter.vrrp_model([inst(role='shadow', unicast_src_ip='10.10.0.12', peers=['10.10.0.11'])])
    hv = {'a': {'__vip_failover_model': m1}, 's': {'__vip_failover_model': m2}}
    assert vrrp_filter.vrrp_cluster_errors(hv, ['a', 's']) == []
    m3 = vrrp_filter.vrrp_model([inst(role='shadow', priority=100, unicast_src_ip='10.10.0.13',
                                      peers=['10.10.0.11'])])
    hv['t'] = {'__vip_failover_model': m3}
    assert any('same priority 100' in e for e in vrrp_filter.vrrp_cluster_errors(hv, ['a', 's', 't']))
    assert m1['vips'] == ['web eth0 10.10.0.100/24']


# --- plan form ---------------------------------------------------------------------------------------------
PLAN = {'plan_version': 1, 'template': 'shop', 'vrrp': [{
    'service': 'web', 'network': 'shopnet', 'vip': '10.10.0.100/24', 'vrid': 42, 'version': 3,
    'priority_base': 200, 'priority_step': 10, 'shadow_priority': 50,
    'members': [{'vm': 'shop-web-1', 'role': 'primary', 'index': 1, 'nic': 0, 'priority': 200},
                {'vm': 'shop-web-2', 'role': 'primary', 'index': 2, 'nic': 0, 'priority': 190},
                {'vm': 'shop-web-shadow', 'role': 'shadow', 'index': 1, 'nic': 1, 'priority': 50}]}]}


def test_instances_from_plan_multicast_without_addresses():
    got = vrrp.instances_from_plan(PLAN, 'shop-web-shadow', checks={'web': {'type': 'tcp', 'port': 443}})
    assert got == [{'name': 'shop-web', 'vip': '10.10.0.100/24', 'virtual_router_id': 42, 'interface': 'eth1',
                    'role': 'shadow', 'priority': 50, 'check': {'type': 'tcp', 'port': 443}}]
    assert vrrp.instances_from_plan(PLAN, 'other') == []
    model = vrrp.build_model(got)
    assert model['errors'] == [] and model['instances'][0]['peers'] == []


def test_instances_from_plan_unicast_with_addresses():
    addrs = {'shop-web-1': '10.10.0.11', 'shop-web-2': '10.10.0.12', 'shop-web-shadow': '10.10.0.13'}
    got = vrrp.instances_from_plan(PLAN, 'shop-web-2', addrs, interface_pattern='ens{nic}')
    assert got[0]['interface'] == 'ens0'
    assert (got[0]['unicast_src_ip'], got[0]['peers']) == ('10.10.0.12', ['10.10.0.11', '10.10.0.13'])
    assert vrrp.build_model(got)['instances'][0]['priority'] == 190
    # An address outside the VIP network (a management address) keeps the group on multicast.
    addrs['shop-web-1'] = '192.168.1.5'
    assert 'peers' not in vrrp.instances_from_plan(PLAN, 'shop-web-2', addrs)[0]


# --- state files ---------------------------------------------------------------------------------------------
def test_parse_transitions_sorted_and_tolerant():
    lines = [
        {'time': 12.5, 'instance': 'web', 'state': 'MASTER', 'priority': 100},
        {'time': 10.0, 'instance': 'web', 'state': 'BACKUP', 'priority': 100},
        {'time': 11.0, 'instance': 'db', 'state': 'FAULT', 'priority': 150},
    ]
    text = '\n'.join(json.dumps(x) for x in lines) + '\n{"time": 13, "instance": "web", "sta'  # torn line
    text += '\n{"time": 14, "instance": "web", "state": "WEIRD"}\nnot json\n'
    events = vrrp.parse_transitions(text)
    assert [e['time'] for e in events] == [10.0, 11.0, 12.5]
    assert vrrp.current_states(events) == {'web': 'MASTER', 'db': 'FAULT'}
    assert vrrp.count_transitions(events, 'web') == 2
    assert vrrp.count_transitions(events, state='MASTER', since=12) == 1
    assert vrrp.parse_state('') is None
    assert vrrp.parse_state(json.dumps(lines[0]))['state'] == 'MASTER'
    assert vrrp_filter.vrrp_transitions(text) == events


def test_instance_state_reads_every_form_of_state_dir_facts():
    line = json.dumps({'time': 1.0, 'instance': 'shop-web', 'state': 'MASTER', 'priority': 100})
    assert vrrp.instance_state(None) == (None, None)
    assert vrrp.instance_state('backup') == ('BACKUP', None)
    assert vrrp.instance_state(line + '\n') == ('MASTER', None)  # the .state file's text
    assert vrrp.instance_state({'state': 'FAULT', 'health': '1\n'}) == ('FAULT', 1)
    assert vrrp.instance_state({'state': line, 'health': 0}) == ('MASTER', 0)
    assert vrrp.instance_state({'state': json.loads(line), 'health': 'x'}) == ('MASTER', None)
    assert vrrp.instance_state({'state': '{"time": 1, "inst'}) == (None, None)  # torn write: unknown, not garbage
    assert vrrp.instance_state({'health': 0}) == (None, 0)


# --- the role's scripts (run for real, no keepalived needed) ------------------------------------------------
ROLE_FILES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                          'roles', 'vip_failover', 'files')


def test_notify_script_writes_what_the_parser_reads(tmp_path):
    script = os.path.join(ROLE_FILES, 'vip-notify.sh')
    for args in (['INSTANCE', 'web', 'BACKUP', '100'], ['INSTANCE', 'web', 'MASTER', '100'],
                 ['GROUP', 'g1', 'MASTER'], ['INSTANCE', 'db', 'FAULT', '150']):
        subprocess.run([script, str(tmp_path)] + args, check=True)
    events = vrrp.parse_transitions((tmp_path / 'transitions.log').read_text())
    assert [(e['instance'], e['state'], e['priority']) for e in events] == [
        ('web', 'BACKUP', 100), ('web', 'MASTER', 100), ('db', 'FAULT', 150)]
    assert vrrp.parse_state((tmp_path / 'web.state').read_text())['state'] == 'MASTER'
    assert not (tmp_path / 'g1.state').exists()
    # A name that could escape the state directory is refused.
    res = subprocess.run([script, str(tmp_path), 'INSTANCE', '../x', 'MASTER', '1'], check=False)
    assert res.returncode == 2 and not (tmp_path.parent / 'x.state').exists()


def test_notify_fifo_records_in_keepalived_order(tmp_path):
    """The role's form: one reader of keepalived's notify FIFO records the transitions in the order they were
    written, until the writer closes it (a quick MASTER -> BACKUP ends BACKUP, whatever the scheduler does)."""
    script = os.path.join(ROLE_FILES, 'vip-notify.sh')
    fifo = str(tmp_path / 'notify.fifo')
    os.mkfifo(fifo)
    reader = subprocess.Popen([script, '--fifo', str(tmp_path), fifo])
    try:
        lines = ['INSTANCE "web" BACKUP 100', 'GROUP "g1" MASTER', 'INSTANCE "../x" MASTER 1', 'garbage',
                 'INSTANCE "db" FAULT 150'] + ['INSTANCE "web" %s 100' % s for s in ('MASTER', 'BACKUP') * 20]
        with open(fifo, 'w') as writer:
            for line in lines:
                writer.write(line + '\n')
                writer.flush()
        assert reader.wait(timeout=30) == 0
    finally:
        reader.kill()
    events = vrrp.parse_transitions((tmp_path / 'transitions.log').read_text())
    web = [e['state'] for e in events if e['instance'] == 'web']
    assert web == ['BACKUP'] + ['MASTER', 'BACKUP'] * 20
    assert [(e['instance'], e['state'], e['priority']) for e in events if e['instance'] != 'web'] == [
        ('db', 'FAULT', 150)]
    times = [e['time'] for e in events]
    assert times == sorted(times)
    assert vrrp.parse_state((tmp_path / 'web.state').read_text())['state'] == 'BACKUP'
    assert not (tmp_path / 'g1.state').exists() and not (tmp_path.parent / 'x.state').exists()


def _backstop(tmp_path, beat_age, check='touch %s/ran; exit 1'):
    """Run vip-ctl.sh backstop with a beat file ``beat_age`` seconds old (None: no beat file) and a check that
    leaves a mark; returns (exit code, whether the check ran)."""
    beat = tmp_path / 'web.beat'
    if beat_age is not None:
        beat.write_text('')
        then = time.time() - beat_age
        os.utime(beat, (then, then))
    res = subprocess.run(['sh', os.path.join(ROLE_FILES, 'vip-ctl.sh'), 'backstop', str(beat), '3', 'sh', '-c', check % tmp_path],
                         capture_output=True, text=True, check=False)
    ran = (tmp_path / 'ran').exists()
    if ran:
        (tmp_path / 'ran').unlink()
    return res.returncode, ran


def test_backstop_runs_the_check_only_when_the_watchdog_is_silent(tmp_path):
    # The watchdog touched its beat file a moment ago: its track_file rules, nothing is started.
    assert _backstop(tmp_path, 0.5) == (0, False)
    # Stale (dead or hung watchdog) or missing: the check runs and its exit code is the verdict.
    assert _backstop(tmp_path, 10) == (1, True)
    assert _backstop(tmp_path, None) == (1, True)
    assert _backstop(tmp_path, 10, check='touch %s/ran') == (0, True)
    # A beat from the future (clock stepped back) is not trusted.
    assert _backstop(tmp_path, -60) == (1, True)


def test_ctl_hold_and_running(tmp_path):
    script = os.path.join(ROLE_FILES, 'vip-ctl.sh')
    out = [subprocess.run([script, 'hold', str(tmp_path), 'web', v], capture_output=True, text=True,
                          check=True).stdout.strip() for v in ('1', '1', '0')]
    assert out == ['changed', 'unchanged', 'changed']
    assert (tmp_path / 'web.hold').read_text().strip() == '0'
    assert subprocess.run([script, 'hold', str(tmp_path), 'web', '2'], check=False).returncode == 2
    pidfile = tmp_path / 'k.pid'
    pidfile.write_text('%d\n' % os.getpid())  # alive, but not keepalived
    assert subprocess.run([script, 'running', str(pidfile)], check=False).returncode == 1
    # cleanup does nothing without a VIP list and says nothing was removed
    res = subprocess.run([script, 'cleanup', str(tmp_path), str(pidfile)], capture_output=True, text=True,
                         check=False)
    assert res.returncode == 0 and 'removed' not in res.stdout


@pytest.mark.parametrize('key, value', [('advert_int', float('nan')), ('advert_int', float('inf')),
                                        ('preempt_delay', float('inf'))])
def test_nan_and_infinity_are_errors_not_crashes(key, value):
    """YAML's .nan and .inf (Ansible's float type takes them too) crashed build_model with ValueError and
    OverflowError from round(); they are errors that name the field now."""
    found = errors_of([inst(**{key: value})])
    assert len(found) == 1 and key in found[0], found

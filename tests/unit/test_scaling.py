# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Acting on a scaling decision: every branch that stops before a clone or removal, the vertical resize and the
claim, against a recording fake API (the clone and removal paths run against the simulator in
tests/integration/test_scale.py), and the pure helpers."""
import copy

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import plan as plan_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling_apply

MiB = 1024 * 1024
NOW = 1_700_000_000


def template(mode='horizontal'):
    return {
        'name': 'shop', 'nodes': ['pve1', 'pve2'],
        'networks': [{'name': 'front', 'cidr': '10.10.0.0/24'}, {'name': 'back', 'cidr': '10.20.0.0/24'}],
        'services': [{'name': 'web', 'template': 9000, 'instances': 2, 'cores': 2, 'memory': 2048,
                      'networks': ['front', 'back'], 'vip': '10.10.0.100', 'critical': True}],
        'shadow': {'replication': {'paths': ['/srv']}},
        'scaling': {'mode': mode, 'instances': {'min': 1, 'max': 6}},
    }


def plan_of(mode='horizontal'):
    return plan_utils.plan_from_template(template(mode))[1]


def vm_entry(vmid, name, role='primary', status='running', tags='', node='pve1', maxcpu=2, maxmem=2048):
    return {'type': 'qemu', 'vmid': vmid, 'name': name, 'node': node, 'status': status, 'template': 0,
            'tags': 'shadownet;sn-shop;sn-web;sn-%s%s' % (role, (';' + tags) if tags else ''),
            'maxcpu': maxcpu, 'maxmem': maxmem * MiB}


class FakeApi:
    """Records every call; update_vm_config follows api.PveApi.update_vm_config (read, compute, PUT)."""

    def __init__(self, listing, configs, on_quorum=None):
        self.listing = listing
        self.configs = configs
        self.calls = []
        self.on_quorum = on_quorum

    def resources(self, kind=None):
        self.calls.append(('resources', kind))
        return copy.deepcopy(self.listing)

    def vm_config(self, node, vmid):
        self.calls.append(('config', vmid))
        return dict(self.configs[vmid]), 'digest-%d' % vmid

    def require_quorum(self):
        self.calls.append(('quorum',))
        if self.on_quorum:
            self.on_quorum(self)

    def update_vm_config(self, node, vmid, compute, check_mode=False):
        before, dummy = self.vm_config(node, vmid)
        changes, deletes = compute(dict(before))
        if (changes or deletes) and not check_mode:
            self.calls.append(('put', vmid, sorted(changes)))
            self.configs[vmid].update(changes)
        return before, changes, deletes

    def get(self, path, **params):
        self.calls.append(('get', path) + tuple(sorted(params.items())))
        if path == 'nodes':
            return [{'node': 'pve1', 'maxcpu': 8}, {'node': 'pve2', 'maxcpu': 8}]
        cfg = self.configs[int(path.split('/')[3])]
        if path.endswith('/config'):
            return dict(cfg, memory=2048)    # the running memory; a resize here stays pending
        return [{'key': k, 'value': v} for k, v in cfg.items() if k != 'memory'] + [
            {'key': 'memory', 'value': 2048, 'pending': cfg['memory']}]


def cluster(tags='', status='running', memory=2048):
    listing = [vm_entry(101, 'shop-web-1', tags=tags, status=status), vm_entry(102, 'shop-web-2', node='pve2',
                                                                               status=status),
               vm_entry(103, 'shop-web-shadow', role='shadow', maxcpu=1, maxmem=512)]
    configs = {101: {'cores': 2, 'memory': memory, 'hotplug': 'network,disk,cpu', 'tags': 'shadownet;sn-shop'},
               102: {'cores': 2, 'memory': memory, 'hotplug': 'network,disk,cpu'},
               103: {'cores': 1, 'memory': 512}}
    return listing, configs


def decision(action='scale_up', basis=None, **target):
    return {'template': 'shop', 'service': 'web', 'action': action, 'act': True, 'reason': 'forecast says so',
            'basis_time': basis, 'target': target}


def base_result(mode='horizontal', action='scale_up', reason='forecast says so'):
    return dict(template='shop', service='web', mode=mode, action=action, changed=False, applied=False, created=[],
                removed=[], resized=[], pending=[], restart_needed=[], mirrors_to_add=[], mirrors_to_remove=[],
                vrrp_members_to_add=[], vrrp_members_to_remove=[], warnings=[], reason=reason)


def test_no_action_reads_nothing():
    api = FakeApi(*cluster())
    res = scaling_apply.apply_decision(api, None, plan_of(), decision(action='none'))
    assert res == base_result(action='none') and api.calls == []


@pytest.mark.parametrize('forecast_only,change', [(True, {}), (False, {'forecast_only': True}), (False, {'act': False})])
def test_forecast_only_reads_nothing(forecast_only, change):
    api = FakeApi(*cluster())
    d = dict(decision(instances=3), **change)
    d['reason'] = '[forecast-only: not acted on] up'
    res = scaling_apply.apply_decision(api, None, plan_of(), d, forecast_only=forecast_only)
    assert res == base_result(reason='[forecast-only: not acted on] up') and api.calls == []


def test_no_primaries():
    api = FakeApi([], {})
    res = scaling_apply.apply_decision(api, None, plan_of(), decision(instances=3))
    assert res['reason'] == 'no primaries of this service in the cluster: nothing to scale'
    assert api.calls == [('resources', 'vm')] and res['changed'] is False


def test_check_mode_superseded_by_a_newer_tag_reads_no_config():
    listing, configs = cluster(tags='sn-last.scale_down.%d' % (NOW + 5))
    api = FakeApi(listing, configs)
    res = scaling_apply.apply_decision(
        api, None, plan_of(), decision(basis=NOW, instances=3), check_mode=True, resources=listing)
    assert res['skipped'] == 'superseded' and res['changed'] is False
    assert res['reason'] == ('not acted on: another reconciler recorded scale_down at 2023-11-14T22:13:25Z after '
                             'this decision was based on PVE state (unknown)')
    assert api.calls == []


def test_superseded_by_a_newer_record_in_a_description():
    listing, configs = cluster()
    configs[102]['description'] = meta_utils.merge_description('', {'scaling': {'action': 'scale_up', 'time': NOW + 60,
                                                                                'by': 'other:1'}})[0]
    api = FakeApi(listing, configs)
    res = scaling_apply.apply_decision(api, None, plan_of(), decision(basis=NOW, instances=3))
    assert res['skipped'] == 'superseded' and 'scale_up at 2023-11-14T22:14:20Z' in res['reason']
    assert res['reason'].endswith('(other:1)')
    assert api.calls == [('resources', 'vm'), ('config', 101), ('config', 102)]


def test_already_at_the_target():
    api = FakeApi(*cluster())
    res = scaling_apply.apply_decision(api, None, plan_of(), decision(instances=2))
    assert res == base_result() | {'reason': 'already 2 instances'}
    assert api.calls == [('resources', 'vm'), ('config', 101), ('config', 102)]


@pytest.mark.parametrize('check_mode', [False, True])
def test_vertical_waits_for_a_pending_resize(check_mode):
    listing, configs = cluster(memory=4096)
    api = FakeApi(listing, configs)
    res = scaling_apply.apply_decision(
        api, None, plan_of('vertical'), decision(cores=2, memory=8192), check_mode=check_mode, resources=listing)
    assert api.calls == [('resources', 'vm')] * (not check_mode) + [('config', 101), ('config', 102)]
    assert res['skipped'] == 'pending_restart' and res['restart_needed'] == ['shop-web-1', 'shop-web-2']
    assert res['pending'] == [{'name': 'shop-web-1', 'keys': ['memory']}, {'name': 'shop-web-2', 'keys': ['memory']}]
    assert res['reason'] == ('not acted on: an earlier resize is still pending until the next restart (needs a '
                             'reboot): shop-web-1: memory 2048 -> 4096 MiB; shop-web-2: memory 2048 -> 4096 MiB; '
                             'restart these primaries (one at a time) to apply it')


def test_vertical_resize_claims_then_resizes_each_primary():
    api = FakeApi(*cluster())
    res = scaling_apply.apply_decision(
        api, None, plan_of('vertical'), decision(basis=None, cores=2, memory=4096), now=NOW + 0.7)
    assert api.calls == [('resources', 'vm'), ('config', 101), ('config', 102), ('get', 'nodes'), ('quorum',),
                         ('config', 101),
                         ('put', 101, ['description', 'tags']),
                         ('get', 'nodes/pve1/qemu/101/config', ('current', 1)), ('config', 101),
                         ('put', 101, ['memory']), ('get', 'nodes/pve1/qemu/101/pending'),
                         ('get', 'nodes/pve2/qemu/102/config', ('current', 1)), ('config', 102),
                         ('put', 102, ['memory']), ('get', 'nodes/pve2/qemu/102/pending')]
    record = res.pop('record')
    assert record['by'] and record == dict(record, action='scale_up', time=NOW, mode='vertical', cores=2, memory=4096,
                                           cooldown_until={'up': NOW + 180, 'down': NOW + 600})
    note = 'memory 4096 MiB pending until the next restart, needs a reboot (hot-plug needs hotplug with memory and numa=1)'
    assert res == base_result(mode='vertical') | {
        'changed': True, 'applied': True,
        'resized': [{'name': 'shop-web-1', 'changes': {'memory': 4096}, 'before': {'cores': 2, 'memory': 2048},
                     'after': {'cores': 2, 'memory': 4096}},
                    {'name': 'shop-web-2', 'changes': {'memory': 4096}, 'before': {'cores': 2, 'memory': 2048},
                     'after': {'cores': 2, 'memory': 4096}}],
        'pending': [{'name': 'shop-web-1', 'keys': ['memory']}, {'name': 'shop-web-2', 'keys': ['memory']}],
        'restart_needed': ['shop-web-1', 'shop-web-2'], 'notes': ['shop-web-1: ' + note, 'shop-web-2: ' + note],
        'reason': 'forecast says so; shop-web-1: %s; shop-web-2: %s' % (note, note)}
    assert 'sn-last.scale_up.%d' % NOW in api.configs[101]['tags']
    assert meta_utils.parse_description(api.configs[101]['description'])[1]['scaling'] == record


def test_vertical_check_mode_reads_configs_and_writes_nothing():
    listing, configs = cluster()
    api = FakeApi(listing, configs)
    res = scaling_apply.apply_decision(
        api, None, plan_of('vertical'), decision(cores=2, memory=4096), check_mode=True, resources=listing, now=NOW)
    assert not [c for c in api.calls if c[0] in ('put', 'quorum', 'resources')]
    assert [c for c in api.calls if c[0] == 'get'] == [
        ('get', 'nodes'), ('get', 'nodes/pve1/qemu/101/config', ('current', 1)),
        ('get', 'nodes/pve2/qemu/102/config', ('current', 1))]    # reads only: PVE's rules, the running config
    assert res['changed'] is True and res['applied'] is False and res['pending'] == []
    assert [r['changes'] for r in res['resized']] == [{'memory': 4096}, {'memory': 4096}]


def test_a_claim_lost_to_another_reconciler():
    def other(api):
        api.configs[101]['description'] = meta_utils.merge_description('', {'scaling': {
            'action': 'scale_up', 'time': NOW + 1, 'by': 'other:7'}})[0]

    api = FakeApi(*cluster(), on_quorum=other)
    res = scaling_apply.apply_decision(api, None, plan_of(), decision(basis=None, instances=3), now=NOW + 2)
    assert res['skipped'] == 'claimed' and res['changed'] is False and res['applied'] is False
    assert res['reason'] == ('not acted on: another reconciler claimed this scaling action first (scale_up at '
                             '2023-11-14T22:13:21Z by other:7)')
    assert res['record']['from'] == 2 and res['record']['to'] == 3
    assert [c for c in api.calls if c[0] == 'put'] == []


# ---- pure helpers -------------------------------------------------------------------------------------------

ROUNDED = 'with memory hot-plug PVE runs {0} MiB static memory plus whole DIMMs (qemu-server Memory.pm foreach_dimm)'


@pytest.mark.parametrize('cfg,running,cores,memory,changes,deletes,notes', [
    ({'cores': 4, 'hotplug': 'cpu'}, True, 2, 512, {'vcpus': 2}, [], []),
    ({'cores': 2, 'hotplug': 'cpu'}, True, 4, 512, {'cores': 4}, [],
     ['cores 4 pending until the next restart, needs a reboot (more than the 2 cores it runs with; raise cores and '
      'set vcpus to hot-plug later)']),
    ({'cores': 2}, True, 3, 512, {'cores': 3}, [],
     ['cores 3 pending until the next restart, needs a reboot (hotplug lacks cpu)']),
    ({'cores': 2, 'sockets': 2, 'vcpus': 4}, False, 3, 512, {'cores': 2, 'vcpus': 3}, [], []),
    ({'cores': 1, 'memory': '1024', 'hotplug': 'memory', 'numa': 1}, True, 1, 2048, {'memory': 2048}, [], []),
    ({'cores': 1, 'memory': 1024, 'hotplug': '1'}, True, 1, 2048, {'memory': 2048}, [],
     ['memory 2048 MiB pending until the next restart, needs a reboot (hot-plug needs hotplug with memory and '
      'numa=1)']),
    ({'cores': 1, 'hotplug': '0'}, False, 1, 512, {}, [], []),
    # memory hot-plug: never below the static 1024 MiB (a stopped VM would not start again), whole 512 MiB DIMMs,
    # rounded up both ways (a hot-add ends at or above, a hot-remove at or below: on the grid both end there)
    ({'memory': 2048, 'hotplug': 'memory', 'numa': 1}, False, 1, 512, {'memory': 1024}, [],
     ['memory 512 MiB rounded to 1024 MiB: ' + ROUNDED.format(1024)]),
    ({'memory': 2048, 'hotplug': 'memory', 'numa': 1}, True, 1, 2200, {'memory': 2560}, [],
     ['memory 2200 MiB rounded to 2560 MiB: ' + ROUNDED.format(1024)]),
    ({'memory': 3072, 'hotplug': 'memory', 'numa': 1}, True, 1, 2200, {'memory': 2560}, [],
     ['memory 2200 MiB rounded to 2560 MiB: ' + ROUNDED.format(1024)]),
    ({'memory': 2560, 'hotplug': 'memory', 'numa': 1}, True, 1, 2200, {}, [],
     ['memory 2200 MiB rounded to 2560 MiB: ' + ROUNDED.format(1024)]),
    # 1 GiB hugepages: 1024 MiB per socket static, 1 GiB DIMMs
    ({'memory': 2048, 'sockets': 2, 'hugepages': '1024', 'hotplug': 'memory', 'numa': 1}, False, 2, 2500,
     {'memory': 3072}, [], ['memory 2500 MiB rounded to 3072 MiB: ' + ROUNDED.format(2048)]),
    # no more cores than the node's CPUs (sockets x cores; config_to_command)
    ({'cores': 2}, False, 6, 512, {'cores': 4}, [],
     ['cores 6 capped at 4: the node has 4 CPUs and PVE starts no VM with more sockets x cores ("MAX 4 vcpus '
      'allowed per VM on this node", qemu-server config_to_command)']),
    # vcpus above the running cores would fail the PUT (qemu_cpu_hotplug): removed, cores pending
    ({'cores': 2, 'vcpus': 2, 'hotplug': 'cpu'}, True, 4, 512, {'cores': 4}, ['vcpus'],
     ['cores 4 pending until the next restart, needs a reboot (more than the 2 cores it runs with; vcpus removed: '
      'it hot-plugs up to 2 now)']),
    # the balloon follows the memory down (update_vm_api: "balloon value too large")
    ({'memory': 4096, 'balloon': 4096}, False, 1, 2048, {'memory': 2048, 'balloon': 2048}, [],
     ['balloon 4096 MiB lowered to the new memory 2048 MiB']),
    ({'memory': 4096, 'balloon': 0}, False, 1, 2048, {'memory': 2048}, [], []),
    # 3 vCPUs on 2 sockets without vcpus: cores 2 (4 vCPUs) is the nearest above, and a rerun changes nothing
    ({'cores': 1, 'sockets': 2}, False, 3, 512, {'cores': 2}, [], []),
    ({'cores': 2, 'sockets': 2}, False, 3, 512, {}, [], []),
    # 3 on 4 sockets: 1 core x 4 sockets (4 vCPUs) is the nearest above and already there
    ({'cores': 1, 'sockets': 4}, False, 3, 512, {}, [], []),
    # 4 on 3 sockets would be 2 cores x 3 = 6 vCPUs on a 4-CPU node: capped at 3 (before, only 4 > 4 was checked)
    ({'cores': 1, 'sockets': 3}, False, 4, 512, {}, [],
     ['cores 4 capped at 3: the node has 4 CPUs and PVE starts no VM with more sockets x cores ("MAX 4 vcpus '
      'allowed per VM on this node", qemu-server config_to_command)']),
])
def test_vertical_changes(cfg, running, cores, memory, changes, deletes, notes):
    assert scaling_apply.vertical_changes(cfg, running, cores, memory, node_cpus=4) == (changes, deletes, notes)


def test_vertical_changes_judge_hot_plug_by_the_running_config():
    """GET config has the pending values; PVE hot-plugs by the running config's hotplug (vmconfig_hotplug_pending)."""
    cfg = {'cores': 4, 'vcpus': 2, 'memory': 2048, 'hotplug': 'cpu,memory', 'numa': 1}
    running = {'cores': 4, 'vcpus': 2, 'memory': 2048}
    changes, deletes, notes = scaling_apply.vertical_changes(cfg, True, 3, 3072, current=running)
    assert (changes, deletes) == ({'cores': 3, 'vcpus': 3, 'memory': 3072}, [])
    assert [n.split(' (')[1] for n in notes] == ['hotplug lacks cpu)', 'hot-plug needs hotplug with memory and numa=1)']
    # with cpu hot-plug running, vcpus within the running cores hot-plug at once
    assert scaling_apply.vertical_changes(cfg, True, 3, 2048, current=dict(cfg))[:2] == ({'vcpus': 3}, [])


def test_dimm_grid_and_static_memory():
    """qemu-server Memory.pm foreach_dimm: 32 DIMMs of 512 MiB, then of 1024, 2048, ...; $STATICMEM 1024."""
    grid = scaling_apply.dimm_grid({})
    assert grid[:4] == [1024, 1536, 2048, 2560] and grid[32] == 1024 + 32 * 512 and grid[33] == grid[32] + 1024
    assert len(grid) == 1 + 8 * 32 and grid[-1] == 1024 + 32 * 512 * 255
    assert scaling_apply.static_memory({'sockets': 2, 'hugepages': '1024'}) == 2048
    assert scaling_apply.static_memory({'sockets': 2, 'hugepages': '2'}) == 1024
    assert scaling_apply.hotplug_memory({}, 1) == 1024 and scaling_apply.hotplug_memory({}, 1537) == 2048
    assert scaling_apply.hotplug_memory({}, grid[32] + 1) == grid[33]
    with pytest.raises(scaling_apply.ScalingError, match='lower the scaling max_memory'):
        scaling_apply.hotplug_memory({}, grid[-1] + 1)


@pytest.mark.parametrize('status,running', [('running', True), ('paused', True), ('prelaunch', True),
                                            ('suspended', True), ('stopped', False), ('unknown', False),
                                            (None, False)])
def test_is_running_takes_the_qmp_status(status, running):
    """pvestatd update_qemu_status: /cluster/resources status is the QMP status of a running VM."""
    assert scaling_apply.is_running({'status': status}) is running


def test_hotplug_features_and_pending_resizes():
    assert scaling_apply.hotplug_features({}) == {'network', 'disk', 'usb'}
    assert scaling_apply.hotplug_features({'hotplug': '0'}) == set()
    assert scaling_apply.hotplug_features({'hotplug': 'cpu;memory, disk'}) == {'cpu', 'memory', 'disk'}
    prim = [{'name': 'a', 'status': 'running', 'maxcpu': 2, 'maxmem': 1024 * MiB},
            {'name': 'b', 'status': 'stopped', 'maxcpu': 2, 'maxmem': 1024 * MiB},
            {'name': 'c', 'status': 'running', 'maxcpu': 2, 'maxmem': 1024 * MiB},
            {'name': 'd', 'status': 'paused', 'maxcpu': 2, 'maxmem': 1024 * MiB}]
    configs = {'a': {'cores': 4, 'memory': 2048}, 'b': {'cores': 4}, 'd': {'cores': 4, 'memory': 1024}}
    assert scaling_apply.pending_resizes(prim, configs) == [
        ('a', ['cores', 'memory'], 'cores 2 -> 4, memory 1024 -> 2048 MiB'), ('d', ['cores'], 'cores 2 -> 4')]


def test_new_instance_and_its_wiring():
    plan = plan_of()
    entry = scaling.scaling_entry(plan, 'web')
    base = plan['vms'][0]
    vm = scaling_apply.new_instance_vm(plan, entry, base, 4)
    assert (vm['name'], vm['index'], vm['node'], vm['preferred_nodes'], vm['shadows']) == (
        'shop-web-4', 4, 'pve2', ['pve2', 'pve1'], [])
    assert vm['meta'] == dict(base['meta'], index=4, scaled=True) and base['index'] == 1
    mirrors, members = scaling_apply.wiring_for(plan, 'web', base['name'], [('shop-web-4', 4)])
    assert [(m['source']['vm'], m['source']['nic'], m['target']['nic']) for m in mirrors] == [
        ('shop-web-4', 0, 0), ('shop-web-4', 1, 2)]
    group = plan['vrrp'][0]
    assert members == [dict(vm='shop-web-4', role='primary', index=4, nic=0, network='front', vip=group['vip'],
                            vrid=group['vrid'], priority=170)]
    assert scaling.instance_index('shop-web-12', plan, 'web') == 12
    assert scaling.instance_index('shop-web-shadow', plan, 'web') is None
    with pytest.raises(scaling.ScalingError, match="template 'shop' has no service 'db'"):
        scaling.scaling_entry(plan, 'db')


def test_state_from_tags_takes_the_newest():
    entry = scaling.scaling_entry(plan_of(), 'web')
    prim = [{'tags': 'sn-last.scale_up.100;x'}, {'tags': 'sn-last.scale_down.200'}, {'tags': 'sn-last.bogus.300'}]
    assert scaling.state_from_tags(prim, entry) == dict(
        action='scale_down', time=200.0, cooldown_until={'up': 380, 'down': 800})
    assert scaling.state_from_tags([{'tags': ''}], entry) == {}


class EmptyStore:
    def keys(self):
        return []

    def series(self, key, since=None, until=None):
        return []


def test_forecast_plan_without_primaries_or_history():
    plan = plan_of()
    api = FakeApi([], {})
    assert scaling.forecast_plan(api, plan, EmptyStore(), now=NOW) == [dict(
        template='shop', service='web', mode='horizontal', made_at=NOW, instances=0, forecast_only=False, act=False,
        action='none', reason='no primaries of this service were found in the cluster (build it first)',
        basis_time=None, target={'instances': 0})]
    assert api.calls == [('resources', 'vm')]
    listing, configs = cluster(tags='sn-last.scale_up.%d' % (NOW - 60))
    api = FakeApi(listing, configs)
    plan['forecast_only'] = True
    assert scaling.forecast_plan(api, plan, EmptyStore(), now=NOW, resources=listing) == [dict(
        template='shop', service='web', mode='horizontal', made_at=NOW, instances=2, forecast_only=True, act=False,
        action='none', reason='no metrics history yet for this service (run shadownet.proxmox.metrics first)',
        basis_time=NOW - 60.0, target={'instances': 2}, current={'instances': 2, 'capacity': {'cpu': 2, 'memory': 2048}})]
    assert api.calls == []
    assert scaling.forecast_plan(api, plan, EmptyStore(), now=NOW, resources=listing, services=['db']) == []


def test_relative_mae_reads_the_forecasts_calibration_errors():
    assert scaling.relative_mae({'model': 'combination', 'backtest': {'naive': 2.0, 'ets': 1.0, 'combination': 1.5}}) == 0.75
    # one member asked for: its own error; naive alone is naive
    assert scaling.relative_mae({'model': 'theta', 'backtest': {'naive': 4.0, 'theta': 5.0}}) == 1.25
    assert scaling.relative_mae({'model': 'naive', 'backtest': {'naive': 4.0}}) == 1.0
    # too short to calibrate (no backtest), or a flat history (naive's error 0)
    assert scaling.relative_mae({'model': 'naive', 'backtest': {}}) is None
    assert scaling.relative_mae({'model': 'combination', 'backtest': {'naive': 0.0, 'combination': 0.0}}) is None
    out = scaling.summarise_forecast(
        {'cpu': {'model': 'combination', 'mean': [1.0] * 20, 'upper': [1.5] * 20,
                 'backtest': {'naive': 2.0, 'combination': 1.0}}},
        2, {'cpu': 2}, {'horizon_seconds': 900, 'net': {'high_bps': 1}})
    assert out == {'cpu': {'model': 'combination', 'peak_upper': 0.375, 'mean_at_horizon': 0.25, 'relative_mae': 0.5}}


def test_vertical_bounds_stop_at_the_smallest_node_of_the_primaries():
    """qemu-server config_to_command: no start with more sockets x cores than the node's CPUs."""
    entry = {'cores': 2, 'memory_mib': 2048, 'instances': {'max': 4}}
    assert scaling.vertical_bounds(entry) == dict(min_cores=2, max_cores=8, min_memory=2048, max_memory=8192)
    assert scaling.vertical_bounds(entry, node_cpus=6)['max_cores'] == 6
    assert scaling.vertical_bounds(entry, max_cores=4, node_cpus=6)['max_cores'] == 4
    prim = [{'name': 'a', 'node': 'pve1'}, {'name': 'b', 'node': 'pve2'}, {'name': 'c', 'node': 'gone'}]
    nodes = [{'node': 'pve1', 'maxcpu': 16}, {'node': 'pve2', 'maxcpu': 6}, {'node': 'pve3', 'maxcpu': 2},
             {'node': 'pve4', 'status': 'offline'}]
    assert scaling.primaries_node_cpus(prim, nodes) == (6, 'pve2')
    assert scaling.primaries_node_cpus(prim, []) is None
    assert scaling.node_cpus(nodes) == {'pve1': 16, 'pve2': 6, 'pve3': 2}


def test_vertical_memory_lands_where_pve_puts_it():
    """Random configs and targets: the memory written with memory hot-plug is on the DIMM grid, at least the static
    memory and the target, a second pass changes nothing, a stopped VM starts with it and a hot-add or hot-remove
    from any grid size ends exactly there (the simulator's Memory.pm model, tests/lab/pvesim_hotplug.py)."""
    import random
    from lab import pvesim_hotplug as sim
    rng = random.Random(7)
    for dummy in range(2000):
        cfg = {'hotplug': 'network,disk,memory', 'numa': '1', 'sockets': rng.choice([1, 2, 4]),
               'hugepages': rng.choice([None, '2', '1024'])}
        cfg = dict((k, v) for k, v in cfg.items() if v is not None)
        grid = scaling_apply.dimm_grid(cfg)
        cfg['memory'] = str(rng.choice(grid[:80]))
        target = rng.choice([rng.randrange(16, 70000), rng.choice(grid[:80]), 128 * rng.randrange(1, 500)])
        running = rng.random() < 0.5
        changes, deletes, notes = scaling_apply.vertical_changes(cfg, running, scaling_apply.effective_cores(cfg),
                                                                 target)
        written = changes.get('memory', int(cfg['memory']))
        assert written in grid and written >= max(target, sim.static_memory(cfg)), (cfg, target, written)
        assert not deletes and set(changes) <= {'memory'}, changes
        after = dict(cfg, memory=str(written))
        assert scaling_apply.vertical_changes(after, running, scaling_apply.effective_cores(cfg), target)[0] == {}
        assert sim.memory_start_problem(after) is None, (after, sim.memory_start_problem(after))
        assert sim.memory_hotplug(cfg, written) == written, (cfg, written)


def test_the_capacity_of_a_service_whose_anchor_is_on_a_silent_node():
    """pmxcfs drops a VM's sizes 5 minutes after its node went silent: the anchor is then listed without maxcpu and
    maxmem. The decision takes the next primary's size, else the plan's, not 1 core / 512 MiB."""
    plan = {'vms': [{'name': 'shop-web-1', 'cores': 4, 'memory': 4096}]}
    silent = {'name': 'shop-web-1', 'status': 'unknown'}
    other = {'name': 'shop-web-2', 'status': 'running', 'maxcpu': 4, 'maxmem': 4096 * MiB}
    assert scaling.anchor_capacity([silent, other], plan) == (4, 4096)
    assert scaling.anchor_capacity([silent], plan) == (4, 4096)
    assert scaling.anchor_capacity([dict(other, name='shop-web-1')], {}) == (4, 4096)
    assert scaling.anchor_capacity([silent], {}) == (1, 512)      # nothing known at all: the old floor

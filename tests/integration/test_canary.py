"""The canary in the decision (issue 13 points 3 and 4): the shadow's replay counters, read through the guest
agent's file-read from the simulator's shadow guest, gate the seed rule (shadow CPU normalised by size and the flow
sample rate) and drive the latency signal; a stale or missing file is "no canary" and no action from it."""
import proxmoxer
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import canary as canary_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history
from ansible_collections.shadownet.proxmox.plugins.modules import forecast, metrics, scale
from lab.canary import STATS_PATH, counters
from lab.modrun import run_module
from lab.shop import FLAT, build, inject, plan_of, primaries, series, shop_template

# web: 2 primaries of 2 cores; the shadow has 1 core (size 0.5); the mirror samples 10% of the flows.
TEMPLATE = shop_template(
    shadow={'enabled': True, 'size': 0.5, 'mirror': {'mode': 'sampled', 'rate': 0.10},
            'replay': {'mode': 'http', 'port': 80},
            'replication': {'fidelity': 'differential', 'paths': ['/var/lib/app']}},
    scaling={'instances': {'min': 1, 'max': 4}, 'cooldown': {'up': '3m', 'down': '10m'},
             'latency': {'p95_ms': 120, 'for': '3m'}})


def setup(pvesim, pve_conn, shadow_cpu, content=None, shadow_mem=0.2):
    """Primaries flat at 50%; the shadow's CPU flat at `shadow_cpu` of its core; `content` in its counters file."""
    plan = plan_of(TEMPLATE)
    vms = build(pvesim, pve_conn, plan)
    inject(pvesim, vms, FLAT)
    shadow = vms['shop-web-shadow']
    # Its memory in one primary's terms (0.2 x 0.5 / 0.2 = 50%) is the primaries': only the CPU can signal.
    pvesim.pve.inject_rrd(shadow.vmid, series([shadow_cpu] * 70, cores=1, mem=shadow_mem))
    if content is not None:
        pvesim.pve.put_guest_file(shadow.vmid, STATS_PATH, content)
    return plan, shadow


def decide(pve_conn, plan, path, check_mode=False):
    run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=path))
    return run_module(forecast, dict(pve_conn, plans={'shop': plan}, history_path=path),
                      check_mode=check_mode)['decisions'][0]


def file_reads(pvesim, mark):
    return [r for r in pvesim.requests(mark) if '/agent/file-read' in r[1]]


def test_counters_in_the_shadow_drive_a_scale_out_on_the_normalised_shadow_cpu(pvesim, pve_conn, tmp_path):
    # 36% of the shadow's one core, on 10% of the flows of 2 primaries of 2 cores: 0.36 x 0.5 / 0.2 = 90% of a
    # primary, 40 points above the primaries' 50%: the primaries' own figures are capped.
    plan, shadow = setup(pvesim, pve_conn, 0.36, counters(requests=12000, window_requests=800, p95=0.040))
    path = str(tmp_path / 'h.sqlite')
    mark = pvesim.mark()
    d = decide(pve_conn, plan, path)
    assert d['canary']['live'] and d['signal'] == 'shadow' and d['action'] == 'scale_up', d['reason']
    assert 'shadow 36% x size 0.50 / (rate 0.10 x 2) = 90% vs primaries 50%' in d['reason'], d['reason']
    assert 'canary [12000 requests replayed (800 in 60s), p95 40 ms, shadow cpu 36% = 90% of a primary vs ' \
           'primaries 50%]' in d['line'], d['line']
    assert len(file_reads(pvesim, mark)) == 1          # one guest agent request per shadow
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=[d]))
    assert s['changed'] and primaries(pvesim) == ['shop-web-1', 'shop-web-2', 'shop-web-3']


@pytest.mark.parametrize('case, reason', [
    ('stale', 's old, limit 30s: is the replay agent running?)'),
    ('missing', "failed to open file '/run/shadownet-replay/stats.json' (mode: 'r'): No such file or directory"),
    ('agent_stopped', 'QEMU guest agent is not running'),
    ('garbage', 'the counters file is not JSON'),
])
def test_stale_or_missing_counters_are_no_canary_and_no_action(pvesim, pve_conn, tmp_path, case, reason):
    import time
    content = {'stale': counters(when=time.time() - 100, requests=12000, window_requests=800, p95=0.5),
               'missing': None, 'agent_stopped': counters(p95=0.5), 'garbage': '{"version": 1, "ti'}[case]
    plan, shadow = setup(pvesim, pve_conn, 0.36, content)
    if case == 'missing':
        pvesim.pve.put_guest_file(shadow.vmid, '/etc/hostname', 'shadow\n')     # the agent runs, the file is absent
    if case == 'agent_stopped':
        pvesim.pve.stop_guest_agent(shadow.vmid)
    mark = pvesim.mark()
    d = decide(pve_conn, plan, str(tmp_path / 'h.sqlite'))
    assert not d['canary']['live'] and reason in d['canary']['reason'], d['canary']
    assert d['action'] == 'none' and d['signal'] is None, d['reason']       # neither the shadow nor the latency signal
    assert 'canary [no canary: ' in d['line'] and reason in d['line'], d['line']
    assert len(file_reads(pvesim, mark)) == 1          # an agent error is an answer: not retried
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=[d]))
    assert not s['changed'] and pvesim.writes(mark) == []


def test_latency_above_the_threshold_for_the_duration_scales_out(pvesim, pve_conn, tmp_path):
    """The shadow's CPU tracks the primaries (no seed-rule signal); its replay p95 is 142 ms > 120 ms: two earlier
    readings in the history (from earlier reconciles) and the current one cover 3 minutes."""
    import time
    now = time.time()
    plan, shadow = setup(pvesim, pve_conn, 0.20, counters(when=now, requests=9000, window_requests=700, p95=0.142))
    path = str(tmp_path / 'h.sqlite')
    # One earlier reading only (1 minute): not yet 3 minutes.
    d = decide(pve_conn, plan, path, check_mode=True)
    assert d['action'] == 'none' and d['latency']['held_seconds'] == 60, d['latency']
    assert 'canary p95 142 ms (threshold 120 ms, held 60s of 3 min)' == d['latency']['detail']
    with history.open_store(path) as store:
        assert not any(k.startswith('shop/web/_canary/') for k in store.keys())       # check mode records nothing
        prefix = canary_utils.series_prefix('shop', 'web')
        store.append([(prefix + 'p95_seconds', int(now - 120), 0.150), (prefix + 'window_seconds', int(now - 120), 60),
                      (prefix + 'p95_seconds', int(now - 60), 0.138), (prefix + 'window_seconds', int(now - 60), 60)])
    mark = pvesim.mark()
    d = decide(pve_conn, plan, path, check_mode=True)
    assert d['action'] == 'scale_up' and d['signal'] == 'latency' and d['metric'] == 'latency', d['reason']
    assert d['reason'].startswith('canary p95 142 ms > 120 ms for 3 min: 2 -> 3 instances'), d['reason']
    s = run_module(scale, dict(pve_conn, plans={'shop': plan}, decisions=[d]), check_mode=True)
    assert s['changed'] and pvesim.writes(mark) == []               # check mode: reported, 0 writes
    # A reading under the threshold in between breaks the duration.
    with history.open_store(path) as store:
        store.append([(prefix + 'p95_seconds', int(now - 60), 0.090)], replace=True)
    d = decide(pve_conn, plan, path)
    assert d['action'] == 'none', d['reason']
    with history.open_store(path) as store:                          # a real run records the reading
        assert [v for t, v in store.series(prefix + 'p95_seconds', since=now - 10)] == [0.142]


def test_the_shadow_memory_is_not_normalised_into_a_signal(pvesim, pve_conn, tmp_path):
    """A live canary whose CPU tracks the primaries but whose memory is its own baseline (60% of a small VM, 150% of
    a primary if the flow rate scaled it): no action."""
    plan, shadow = setup(pvesim, pve_conn, 0.20, counters(requests=100, window_requests=10, p95=0.010), shadow_mem=0.6)
    d = decide(pve_conn, plan, str(tmp_path / 'h.sqlite'))
    assert d['canary']['live'] and d['action'] == 'none', d['reason']


def test_without_replay_the_shadow_cpu_is_no_signal(pvesim, pve_conn, tmp_path):
    """No shadow.replay.port: the shadow replays nothing, its CPU measures an idle VM: no seed-rule action, and no
    guest agent request."""
    global TEMPLATE
    saved = TEMPLATE
    TEMPLATE = shop_template(shadow=dict(saved['shadow'], replay={}), scaling=saved['scaling'])
    try:
        plan, shadow = setup(pvesim, pve_conn, 0.36, counters(p95=0.5))
    finally:
        TEMPLATE = saved
    mark = pvesim.mark()
    d = decide(pve_conn, plan, str(tmp_path / 'h.sqlite'))
    assert d['action'] == 'none' and 'shadow.replay.port is not set' in d['canary']['reason'], d
    assert file_reads(pvesim, mark) == []


# ------------------------------------------------------------------ the simulator's file-read, as PVE's


def test_simulator_file_read_is_as_strict_as_pve(pvesim, pve_conn, proxmoxer_api):
    """qemu-server API2/Qemu/Agent.pm file-read and QemuServer/Agent.pm assert_agent_available."""
    plan, vm = setup(pvesim, pve_conn, 0.2)
    api = proxmoxer_api.nodes(vm.node).qemu(vm.vmid).agent('file-read')
    pvesim.pve.put_guest_file(vm.vmid, '/tmp/f', 'abcdef')
    vm.status = 'running'
    vm.config['agent'] = '1'
    assert api.get(file='/tmp/f') == {'content': 'abcdef', 'bytes-read': 6}
    assert api.get(file='/tmp/f', offset=2, count=2) == {'content': 'cd', 'bytes-read': 2, 'truncated': 1}
    assert api.get(file='/tmp/f', count=6) == {'content': 'abcdef', 'bytes-read': 6, 'truncated': 1}   # no short read
    assert api.get(file='/tmp/f', decode=0) == {'content': 'YWJjZGVm', 'bytes-read': 6}
    with pytest.raises(proxmoxer.core.ResourceException) as info:
        api.get(file='/tmp/none')
    assert "failed to open file '/tmp/none'" in str(info.value)
    with pytest.raises(proxmoxer.core.ResourceException) as info:
        api.get(file='/tmp/f', count=16 * 1024 * 1024 + 1)          # the schema's maximum
    assert info.value.status_code == 400
    del vm.config['agent']
    with pytest.raises(proxmoxer.core.ResourceException) as info:
        api.get(file='/tmp/f')
    assert 'No QEMU guest agent configured' in str(info.value)
    vm.config['agent'] = '1'
    vm.status = 'stopped'
    with pytest.raises(proxmoxer.core.ResourceException) as info:
        api.get(file='/tmp/f')
    assert 'VM {0} is not running'.format(vm.vmid) in str(info.value)


def test_file_read_needs_the_file_read_privilege(pvesim, pve_conn, tmp_path):
    """The documented least-privilege token (role Shadownet, with VM.GuestAgent.FileRead) reads the counters; the
    auditor token (VM.Audit, no agent privilege) is refused by PVE's check, and the decision says which privilege."""
    plan, shadow = setup(pvesim, pve_conn, 0.36, counters(requests=5, window_requests=5, p95=0.010))
    path = str(tmp_path / 'h.sqlite')
    run_module(metrics, dict(pve_conn, plans={'shop': plan}, history_path=path))
    least = dict(pve_conn, api_user='shadownet@pve', api_token_id='automation',
                 api_token_secret=pvesim.pve.apitokens['shadownet@pve!automation'])
    d = run_module(forecast, dict(least, plans={'shop': plan}, history_path=path), check_mode=True)['decisions'][0]
    assert d['canary']['live'] and d['signal'] == 'shadow', d['canary']
    auditor = dict(pve_conn, api_user='auditor@pve', api_token_id='readonly',
                   api_token_secret=pvesim.pve.apitokens['auditor@pve!readonly'])
    d = run_module(forecast, dict(auditor, plans={'shop': plan}, history_path=path), check_mode=True)['decisions'][0]
    assert not d['canary']['live'] and d['action'] == 'none', d['canary']
    assert 'VM.GuestAgent.FileRead' in d['canary']['reason'] and 'permission denied' in d['canary']['reason']

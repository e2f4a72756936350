"""drift against the simulator: each build step's drift, found with reads only, agrees with the build modules."""
import copy

from ansible_collections.shadownet.proxmox.plugins.modules import drift, ha_rule, linked_clone, vnet
from lab.modrun import ModuleFailed, run_module
from lab.shop import CACHE, SHOP, VNET_FRONT, plan_of, shop_template

TEMPLATE = shop_template(networks=[VNET_FRONT], services=SHOP['services'] + [CACHE])


def build(pve_conn, plan):
    """The shadow_network role's five steps, as it calls them."""
    for role in ('primary', 'shadow'):
        nets = [n for n in plan['networks'] if n['role'] == role]
        if nets:
            run_module(vnet, dict(pve_conn, networks=nets))
        run_module(linked_clone, dict(pve_conn, plan=plan, roles=[role], state='started', prune=True))
    run_module(ha_rule, dict(pve_conn, template=plan['template'], rules=plan['ha_rules']))


def out_of_sync(result):
    return sorted(step for step, state in result['steps'].items() if not state['in_sync'])


def test_drift_follows_each_build_step_with_reads_only(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    mark = pvesim.mark()
    empty = run_module(drift, dict(pve_conn, plan=plan))
    assert not empty['changed'] and not empty['in_sync']
    assert out_of_sync(empty) == ['ha_rules', 'primaries', 'primary_networks', 'shadow_networks', 'shadows']
    assert any(c.startswith('create shop-web-shadow') for c in empty['steps']['shadows']['changes'])
    assert pvesim.writes(mark) == []

    build(pve_conn, plan)
    mark = pvesim.mark()
    done = run_module(drift, dict(pve_conn, plan=plan))
    assert done['in_sync'] and out_of_sync(done) == [], done['steps']
    assert sorted(vm['name'] for vm in done['vms']) == ['shop-cache-1', 'shop-web-1', 'shop-web-2',
                                                        'shop-web-shadow']
    assert all(vm['vmid'] for vm in done['vms'])
    # Check mode reads the same and writes nothing either.
    again = run_module(drift, dict(pve_conn, plan=plan), check_mode=True)
    assert again['in_sync']
    assert pvesim.writes(mark) == []


def test_drift_names_the_step_that_differs(pvesim, pve_conn):
    plan = plan_of(TEMPLATE)
    build(pve_conn, plan)
    # Out of band: a primary resized by hand, and an HA rule deleted.
    vm = next(v for v in pvesim.pve.vms if v.name == 'shop-web-1')
    vm.config['cores'] = 8
    rule = next(r['rule'] for r in plan['ha_rules'])
    pvesim.pve.ha_rules.pop(rule)
    mark = pvesim.mark()
    result = run_module(drift, dict(pve_conn, plan=plan))
    assert out_of_sync(result) == ['ha_rules', 'primaries']
    assert any('shop-web-1' in c and 'cores' in c for c in result['steps']['primaries']['changes'])
    assert any(rule in c for c in result['steps']['ha_rules']['changes'])
    # A service removed from the template: its VM is drift to prune; without prune it is not.
    smaller = copy.deepcopy(TEMPLATE)
    smaller['services'] = smaller['services'][:1]
    small_plan = plan_of(smaller)
    pruned = run_module(drift, dict(pve_conn, plan=small_plan))
    assert any(c.startswith('destroy shop-cache-1') for c in pruned['steps']['primaries']['changes'])
    kept = run_module(drift, dict(pve_conn, plan=small_plan, prune=False))
    assert not any('shop-cache-1' in c for c in kept['steps']['primaries']['changes'])
    assert pvesim.writes(mark) == []
    # What the build modules converge, drift then confirms.
    build(pve_conn, plan)
    final = run_module(drift, dict(pve_conn, plan=plan))
    assert final["in_sync"], final["steps"]


def test_drift_rejects_something_that_is_not_a_plan(pvesim, pve_conn):
    try:
        run_module(drift, dict(pve_conn, plan={'name': 'shop'}))
    except ModuleFailed as exc:
        assert 'plan must be a plan from shadownet.proxmox.template' in exc.result['msg']
    else:
        raise AssertionError('a dict without vms was accepted')

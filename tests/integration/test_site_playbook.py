"""playbooks/site.yml end to end against the simulator: build, idempotence, check mode, changes, bad input."""
import os
import re

import pytest

from lab.playbook import ROOT, ansible_playbook, recap

LAB_TEMPLATE = os.path.join(ROOT, 'inventories', 'lab', 'templates', 'shop.yml.j2')


def play(pvesim, *extra, check=False, templates=None):
    args = ['-i', os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml'), 'site.yml']
    if templates:
        args += ['-e', '{"shadownet_templates": %s}' % templates]
    if check:
        args += ['--check', '--diff']
    return ansible_playbook(args + list(extra), sim=pvesim)


def managed(pvesim):
    return dict((vm.name, vm) for vm in pvesim.pve.vms if 'shadownet' in str(vm.config.get('tags', '')))


@pytest.mark.slow
def test_build_idempotent_check_mode_and_change(pvesim, tmp_path):
    # Check mode on an empty cluster: zero writes, and the diff shows what would be built.
    mark = pvesim.mark()
    dry = play(pvesim, check=True)
    assert recap(dry)['failed'] == 0, dry.stdout[-2000:]
    assert pvesim.writes(mark) == []
    assert 'shop-web-shadow' in dry.stdout and 'shop-db-1' in dry.stdout

    first = play(pvesim)
    assert recap(first)['failed'] == 0, first.stdout[-3000:]
    vms = managed(pvesim)
    assert sorted(vms) == ['shop-db-1', 'shop-db-2', 'shop-db-shadow', 'shop-web-1', 'shop-web-2',
                           'shop-web-shadow', 'shop-worker-1', 'shop-worker-2']
    web_nodes = {vms['shop-web-1'].node, vms['shop-web-2'].node}
    assert vms['shop-web-shadow'].node not in web_nodes
    assert {vms['shop-db-1'].node, vms['shop-db-2'].node}.isdisjoint({vms['shop-db-shadow'].node})
    assert int(vms['shop-web-shadow'].config['cores']) == 1
    assert int(str(vms['shop-web-shadow'].config['memory']).split('=')[-1]) == 512
    assert set(vms['shop-db-shadow'].config['tags'].split(';')) == {'shadownet', 'sn-shop', 'sn-db', 'sn-shadow'}
    assert all(vm.status == 'running' for vm in vms.values())
    # The shadow's NIC 0 is on an isolated twin, NIC 1 on the primary network for VRRP.
    web1_bridge = re.search(r'bridge=(\w+)', vms['shop-web-1'].config['net0']).group(1)
    shadow_nic0 = re.search(r'bridge=(\w+)', vms['shop-web-shadow'].config['net0']).group(1)
    shadow_nic1 = re.search(r'bridge=(\w+)', vms['shop-web-shadow'].config['net1']).group(1)
    assert shadow_nic1 == web1_bridge and shadow_nic0 != web1_bridge
    mark = pvesim.mark()
    second = play(pvesim)
    assert recap(second)['changed'] == 0, second.stdout[-3000:]
    assert pvesim.writes(mark) == []
    # One drift run confirms the converged template; the five build tasks are skipped.
    assert 'shop: in sync, nothing to build' in second.stdout, second.stdout[-3000:]
    assert re.search(r'Primary instances and shadows \| shop\]\s*\*+\s*skipping', second.stdout), second.stdout[-3000:]

    # Change: 3 web instances and bigger workers, drop the worker service.
    text = open(LAB_TEMPLATE).read()
    changed = re.sub(r'  - name: worker\n(    .*\n)+', '', text.replace('cores: 2\n    memory: 2G', 'cores: 4\n    memory: 2G'))
    path = tmp_path / 'shop.yml.j2'
    path.write_text(changed)
    third = play(pvesim, '-e', '{"shadownet_template_vars": {"shop_web_instances": 3}}', '--diff',
                 templates='["%s"]' % path)
    assert recap(third)['failed'] == 0, third.stdout[-3000:]
    vms = managed(pvesim)
    assert 'shop-web-3' in vms and 'shop-worker-1' not in vms and 'shop-worker-2' not in vms
    # The running primaries have no cpu hot-plug: PVE keeps their 4 cores pending until a restart; web-3 is new.
    for name in ('shop-web-1', 'shop-web-2'):
        assert int(vms[name].config['cores']) == 2 and int(vms[name].pending['cores']) == 4, (name, vms[name].pending)
    assert int(vms['shop-web-3'].config['cores']) == 4 and not vms['shop-web-3'].pending
    # --diff of the instances' step: the cores of both resized instances go from 2 to 4.
    step = third.stdout.split('Primary instances and shadows | shop]', 1)[1].split('\nTASK [', 1)[0]
    for name in ('shop-web-1', 'shop-web-2'):
        assert re.search(r'"%s": \{\n-        "cores": 2,\n\+        "cores": 4,\n' % name, step), step[-3000:]


def test_malformed_template_rejected_with_field_paths_and_no_write(pvesim, tmp_path):
    bad = tmp_path / 'bad.yml'
    bad.write_text('name: Bad_Name\nnetworks:\n  - {name: n1, cidr: 10.0.0.0/33}\nservices:\n'
                   '  - {name: web, template: 9000, networks: [nope], vip: 192.0.2.1/24, bogus: 1}\n')
    mark = pvesim.mark()
    proc = play(pvesim, templates='["%s"]' % bad)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    for path in ('name', 'networks[0].cidr', 'services[0].networks', 'services[0].bogus'):
        assert path in out, out[-3000:]
    assert pvesim.writes(mark) == []


@pytest.mark.slow
def test_build_without_nodes_spreads_by_capacity_idempotent_and_check_mode(pvesim, tmp_path):
    # The lab template without `nodes` ("default: all online nodes"): primaries spread, every shadow off its
    # primaries' nodes; web/db clone the shared debian-12-golden with target, worker the alpine copy on its node.
    text = open(LAB_TEMPLATE).read()
    assert 'nodes: [pve1, pve2, pve3]\n' in text
    path = tmp_path / 'shop.yml.j2'
    path.write_text(text.replace('nodes: [pve1, pve2, pve3]\n', ''))
    templates = '["%s"]' % path
    mark = pvesim.mark()
    dry = play(pvesim, check=True, templates=templates)
    assert recap(dry)['failed'] == 0, dry.stdout[-3000:]
    assert pvesim.writes(mark) == []
    first = play(pvesim, templates=templates)
    assert recap(first)['failed'] == 0, first.stdout[-3000:]
    vms = managed(pvesim)
    assert len(vms) == 8
    for service in ('web', 'db'):
        primaries = {vms['shop-%s-1' % service].node, vms['shop-%s-2' % service].node}
        assert len(primaries) == 2 and vms['shop-%s-shadow' % service].node not in primaries
    assert vms['shop-worker-1'].node != vms['shop-worker-2'].node
    assert len({vm.node for vm in vms.values()}) == 3
    mark = pvesim.mark()
    second = play(pvesim, templates=templates)
    assert recap(second)['changed'] == 0, second.stdout[-3000:]
    assert pvesim.writes(mark) == []
    mark = pvesim.mark()
    dry = play(pvesim, check=True, templates=templates)
    assert recap(dry)['changed'] == 0 and pvesim.writes(mark) == []

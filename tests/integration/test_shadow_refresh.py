"""shadow_refresh (replication fidelity full) against the PVE simulator.

The primaries and the shadow are built the way site.yml builds them (linked_clone with a plan), then the shadow
is re-created from a snapshot of its first primary. fakepve clones from a snapshot of a non-template VM as PVE
does (full clone; `_qm_clone` with `snapname`), so nothing here is skipped.
"""
import copy
import json
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
from ansible_collections.shadownet.proxmox.plugins.modules import linked_clone, shadow_refresh
from lab.modrun import ModuleFailed, run_module
from lab.playbook import COLLECTIONS, run_ansible
from lab.shop import SHOP, shop_template

# The shop with its web primaries on the per-node alpine copies (local-lvm): the refresh clone is made on the
# primary's node, then moved. Replication fidelity full.
TEMPLATE = shop_template(services=[dict(SHOP['services'][0], template='alpine-3-golden')],
                         shadow={'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'full', 'interval': '1h'}})


def vms_by_name(pvesim):
    return dict((vm.name, vm) for vm in pvesim.pve.vms)


@pytest.fixture
def built(pvesim, pve_conn):
    plan = plan_from_template(copy.deepcopy(TEMPLATE))[1]
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary'], state='started'))
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow'], state='started'))
    vms = vms_by_name(pvesim)
    return vms['shop-web-1'], vms['shop-web-shadow']


def args(pve_conn, **extra):
    return dict(pve_conn, primary='shop-web-1', shadow='shop-web-shadow', timeout=120, **extra)


def test_refresh_keeps_identity_and_removes_the_snapshot(pvesim, pve_conn, built):
    primary, shadow = built
    before = dict(vmid=shadow.vmid, node=shadow.node, config=dict(shadow.config))
    assert before['node'] != primary.node  # placement spread; local-lvm: the clone is made on the primary's node, then moved
    primary.config['cpu'] = 'host'  # something only the primary has: the new shadow must be its copy
    result = run_module(shadow_refresh, args(pve_conn))
    assert result['changed'] and not result['skipped']
    assert result['steps'][:4] == ['snapshot {0} of shop-web-1'.format(result['snapshot']), 'stopped shop-web-shadow',
                                   'destroyed shop-web-shadow (vmid {0})'.format(before['vmid']),
                                   'cloned {0} to vmid {1} (shop-web-shadow)'.format(result['snapshot'], before['vmid'])]
    assert 'moved vmid {0} to {1}'.format(before['vmid'], before['node']) in result['steps']
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert new is not shadow  # really re-created
    assert (new.vmid, new.node, new.name) == (before['vmid'], before['node'], 'shop-web-shadow')
    assert new.config.get('cpu') == 'host'
    assert 'base-' not in new.config['scsi0']  # a full copy, no longer a linked clone of the golden image
    nets_before = dict((k, v) for k, v in before['config'].items() if k.startswith('net'))
    nets_after = dict((k, v) for k, v in new.config.items() if k.startswith('net'))
    assert sorted(nets_after) == sorted(nets_before)
    for key, value in nets_before.items():
        old, now = propstr.parse_net(value), propstr.parse_net(nets_after[key])
        assert now['macaddr'] == old['macaddr'] and now['bridge'] == old['bridge'] and now.get('tag') == old.get('tag')
    # net1 is the VRRP NIC on the primary's own bridge: the copy comes back with its link down.
    assert result['isolated_nics'] == ['net1']
    assert propstr.parse_net(nets_after['net1']).get('link_down') == '1'
    assert propstr.parse_net(nets_after['net0']).get('link_down', '0') == '0'
    assert propstr.parse_tags(new.config['tags']) == propstr.parse_tags(before['config']['tags'])
    assert int(new.config['cores']) == int(before['config']['cores']) == 1
    assert 'hookscript' not in new.config
    dummy, meta = meta_utils.parse_description(new.config['description'])
    assert meta['role'] == 'shadow' and meta['replication']['last_full'] == result['last_full']
    assert meta['replication']['source_snapshot'] == result['snapshot']
    assert primary.snapshots == {}
    assert new.status == 'running'
    assert result['diff']['before']['vmid'] == before['vmid']


def test_second_call_within_min_interval_writes_nothing(pvesim, pve_conn, built):
    run_module(shadow_refresh, args(pve_conn, min_interval=3600))
    mark = pvesim.mark()
    again = run_module(shadow_refresh, args(pve_conn, min_interval=3600))
    assert not again['changed'] and again['skipped']
    assert 'min_interval' in again['reason']
    assert pvesim.writes(mark) == []


def test_check_mode_writes_nothing(pvesim, pve_conn, built):
    primary, shadow = built
    mark = pvesim.mark()
    dry = run_module(shadow_refresh, args(pve_conn), check_mode=True)
    assert dry['changed'] and dry['steps'][0].startswith('would snapshot shop-web-1')
    assert pvesim.writes(mark) == []
    assert vms_by_name(pvesim)['shop-web-shadow'] is shadow and primary.snapshots == {}


def test_lost_quorum_stops_before_any_write(pvesim, pve_conn, built):
    pvesim.pve.lose_quorum()
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(shadow_refresh, args(pve_conn))
    assert info.value.result['kind'] == 'quorum'
    assert pvesim.writes(mark) == []
    assert vms_by_name(pvesim)['shop-web-shadow'] is built[1]


def test_clone_failure_after_destroy_names_the_missing_shadow(pvesim, pve_conn, built):
    primary, shadow = built
    svmid = shadow.vmid
    pvesim.pve.fail('POST', '/nodes/{0}/qemu/{1}/clone'.format(primary.node, primary.vmid), 500, 'boom')
    with pytest.raises(ModuleFailed) as info:
        run_module(shadow_refresh, args(pve_conn))
    failed = info.value.result
    assert failed['kind'] == 'shadow_missing'
    assert "'shop-web-shadow' (vmid {0}".format(svmid) in failed['msg']
    assert 'MISSING' in failed['msg'] and 'site.yml' in failed['msg'] and 'boom' in failed['msg']
    assert failed['identity']['nets']['net0'] == shadow.config['net0']
    assert 'shop-web-shadow' not in vms_by_name(pvesim)
    assert primary.snapshots == {}  # the snapshot is deleted even so
    # A second run says plainly that there is nothing to refresh, and how to build it.
    pvesim.pve.failures.clear()
    with pytest.raises(ModuleFailed) as again:
        run_module(shadow_refresh, args(pve_conn))
    assert 'site.yml' in again.value.result['msg']


def _playbook(argv, tmp_path):
    res = run_ansible('ansible-playbook', argv, timeout=120, env=dict(ANSIBLE_LOCAL_TEMP=tmp_path / 'ansible-tmp'))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    recap = re.search(r'ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)', res.stdout)
    return res, dict(zip(('ok', 'changed', 'unreachable', 'failed', 'skipped'), map(int, recap.groups())))


FAKE_CRONTAB = """#!/bin/sh
# crontab(1) for the test: the user's crontab is the file $FAKE_CRONTAB, nothing else is touched.
if [ "$1" = "-l" ]; then
    [ -f "$FAKE_CRONTAB" ] && exec cat "$FAKE_CRONTAB"
    echo "no crontab for $(id -un)" >&2
    exit 1
fi
exec cp "$1" "$FAKE_CRONTAB"
"""


def test_role_full_refreshes_from_the_controller_and_installs_the_cron_entry(pvesim, pve_conn, built, tmp_path):
    primary, shadow = built
    environment = {'PROXMOX_HOST': pvesim.host, 'PROXMOX_PORT': str(pvesim.port), 'PROXMOX_TOKEN_ID': pvesim.token_id,
                   'PROXMOX_TOKEN_SECRET': pvesim.token_secret, 'PROXMOX_CA_PATH': pvesim.cafile,
                   'ANSIBLE_COLLECTIONS_PATH': COLLECTIONS}
    full_dir = tmp_path / 'full'
    fake_bin = tmp_path / 'bin'
    fake_bin.mkdir()
    (fake_bin / 'crontab').write_text(FAKE_CRONTAB)
    (fake_bin / 'crontab').chmod(0o755)
    crontab = tmp_path / 'crontab.txt'
    play = [{'name': 'full replication', 'hosts': 'shop-web-1', 'gather_facts': False,
             'environment': {'PATH': '{0}:{1}'.format(fake_bin, os.environ['PATH']), 'FAKE_CRONTAB': str(crontab)},
             'roles': [{'role': 'shadownet.proxmox.state_replication', 'vars': {
                 'state_replication_fidelity': 'full', 'state_replication_shadow': 'shop-web-shadow',
                 'state_replication_interval': '1h', 'state_replication_full_dir': str(full_dir),
                 'state_replication_full_environment': environment}}]}]
    (tmp_path / 'play.yml').write_text(json.dumps(play))
    (tmp_path / 'hosts.ini').write_text('shop-web-1 ansible_connection=local ansible_python_interpreter={0}\n'.format(
        sys.executable))
    res, recap = _playbook(['-i', str(tmp_path / 'hosts.ini'), str(tmp_path / 'play.yml')], tmp_path)
    assert recap['failed'] == 0 and recap['changed'] >= 1, res.stdout[-3000:]
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert new is not shadow and new.vmid == shadow.vmid and primary.snapshots == {}
    generated = full_dir / 'shadownet-repl-full-shop-web-shadow.yml'
    assert oct(generated.stat().st_mode & 0o777) == '0o600'
    text = generated.read_text()
    assert 'primary: "shop-web-1"' in text and 'shadow: "shop-web-shadow"' in text and 'min_interval: 3420' in text
    env_file = full_dir / 'shadownet-repl-full-shop-web-shadow.env'
    assert pvesim.token_secret in env_file.read_text() and oct(env_file.stat().st_mode & 0o777) == '0o600'
    entries = [line for line in crontab.read_text().splitlines() if line and not line.startswith('#')]
    assert len(entries) == 1 and entries[0].startswith('*/5 * * * * ')
    job = entries[0].split(None, 5)[5]
    assert 'flock -n' in job and str(generated) in job
    # Run the job as cron would (sh, a short PATH, no PROXMOX_* in the environment): within the interval it
    # refreshes nothing and sends no write.
    mark = pvesim.mark()
    cron_env = {'PATH': '/usr/bin:/bin', 'HOME': os.environ.get('HOME', '/root'), 'LANG': 'C.UTF-8',
                'ANSIBLE_LOCAL_TEMP': str(tmp_path / 'ansible-tmp'), 'ANSIBLE_NOCOLOR': '1'}
    ran = subprocess.run(['/bin/sh', '-c', job], capture_output=True, text=True, timeout=120, env=cron_env, check=False)
    log = (full_dir / 'shadownet-repl-full-shop-web-shadow.log').read_text()
    assert ran.returncode == 0, log[-3000:] + ran.stderr
    assert re.search(r'ok=\d+\s+changed=0\s+unreachable=0\s+failed=0', log), log[-3000:]
    assert pvesim.writes(mark) == []


def test_ha_resource_and_rules_of_the_shadow_come_back(pvesim, pve_conn, built, proxmoxer_api):
    primary, shadow = built
    for vm in (primary, shadow):
        proxmoxer_api.cluster.ha.resources.post(sid='vm:{0}'.format(vm.vmid), state='started')
    proxmoxer_api.cluster.ha.rules.post(rule='sn_shop_web_1_anti', type='resource-affinity', affinity='negative',
                                        resources='vm:{0},vm:{1}'.format(primary.vmid, shadow.vmid))
    result = run_module(shadow_refresh, args(pve_conn))
    assert any(step.startswith('HA resource vm:{0}'.format(shadow.vmid)) for step in result['steps'])
    sids = [r['sid'] for r in proxmoxer_api.cluster.ha.resources.get()]
    assert 'vm:{0}'.format(shadow.vmid) in sids
    rule = proxmoxer_api.cluster.ha.rules('sn_shop_web_1_anti').get()
    assert set(rule['resources'].split(',')) == {'vm:{0}'.format(primary.vmid), 'vm:{0}'.format(shadow.vmid)}
    assert vms_by_name(pvesim)['shop-web-shadow'].node == shadow.node


def test_refresh_of_an_ha_managed_shadow(pvesim, pve_conn, built, make_ha):
    # The ha_rule step made the shadow an HA resource: qemu-server vm_stop only queues its stop (a 'hastop' task
    # that ends at once) and destroy_vm refuses a running VM, so the refresh waits for the HA manager; the new
    # shadow comes back under HA, running, with its rule, and nothing is left twice or orphaned.
    primary, shadow = built
    make_ha('shop', ('shop-web-1', 'shop-web-shadow'))
    pve = pvesim.pve
    sid = 'vm:{0}'.format(shadow.vmid)
    result = run_module(shadow_refresh, args(pve_conn))
    assert result['changed'] and 'stopped shop-web-shadow' in result['steps']
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert new is not shadow and new.vmid == shadow.vmid and new.status == 'running'
    assert [vm.name for vm in pve.vms].count('shop-web-shadow') == 1
    assert pve.ha_resources[sid]['state'] == 'started' and new.ha_state == 'started'
    assert set(pve.ha_rules['sn_shop_web_1_anti']['resources'].split(',')) == {'vm:{0}'.format(primary.vmid), sid}
    assert pve.ha_dangling() == [] and not primary.snapshots


def test_a_refresh_in_progress_is_left_alone_and_a_stale_snapshot_is_removed(pvesim, pve_conn, built, proxmoxer_api):
    primary, shadow = built
    name = 'sn-refresh-{0}-1700000000'.format(shadow.vmid)
    proxmoxer_api.nodes(primary.node).qemu(primary.vmid).snapshot.post(snapname=name)
    mark = pvesim.mark()
    busy = run_module(shadow_refresh, args(pve_conn))
    assert busy['skipped'] and not busy['changed'] and 'in progress' in busy['reason']
    assert pvesim.writes(mark) == []
    primary.snapshots[name]['snaptime'] = 1700000000  # long before 4 x timeout: a leftover of a crashed run
    result = run_module(shadow_refresh, args(pve_conn))
    assert result['steps'][0] == 'deleted snapshot {0} of vmid {1}'.format(name, primary.vmid)
    assert primary.snapshots == {}


def test_the_primary_hookscript_is_removed_as_root_and_named_in_a_warning_with_a_token(pvesim, pve_conn, built):
    primary, shadow = built
    pvesim.pve.add_snippet('local:snippets/shadownet-hook.py')
    primary.config['hookscript'] = 'local:snippets/shadownet-hook.py'
    # An API token (even root@pam's) may not change a hookscript, as on PVE: the rest is restored, a warning says
    # what is left and how to fix it.
    result = run_module(shadow_refresh, args(pve_conn))
    warnings = ' '.join(str(w) for w in result.get('warnings', []))
    assert 'hookscript not removed' in warnings and '--delete hookscript' in warnings and 'only root@pam' in warnings
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert new.config['hookscript'] == primary.config['hookscript'] and new.status == 'running'
    assert propstr.parse_tags(new.config['tags']) == propstr.parse_tags(shadow.config['tags'])
    # As root@pam itself (password login) it is removed.
    as_root = dict((k, v) for k, v in pve_conn.items() if not k.startswith('api_token'))
    as_root.update(api_user='root@pam', api_password=pvesim.pve.password)
    new.config.pop('hookscript')  # the recorded identity of the next run is "no hookscript"
    run_module(shadow_refresh, args(as_root))
    assert 'hookscript' not in vms_by_name(pvesim)['shop-web-shadow'].config


def test_a_serving_shadow_is_never_replaced_and_keep_size_false_takes_the_primary_size(pvesim, pve_conn, built):
    primary, shadow = built
    serving = meta_utils.merge_description(shadow.config['description'], {'failover': {'active': True}})[0]
    shadow.config['description'] = serving
    mark = pvesim.mark()
    result = run_module(shadow_refresh, args(pve_conn))
    assert result['skipped'] and 'serving' in result['reason'] and pvesim.writes(mark) == []
    shadow.config['description'] = meta_utils.merge_description(serving, {'failover': None})[0]
    run_module(shadow_refresh, args(pve_conn, keep_size=False))
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert int(new.config['cores']) == int(primary.config['cores']) == 2


def test_a_failed_identity_restore_is_finished_by_the_next_run_without_a_new_clone(pvesim, pve_conn, built):
    primary, shadow = built
    before = dict(shadow.config)
    pvesim.pve.fail('PUT', '/nodes/{0}/qemu/{1}/config'.format(shadow.node, shadow.vmid), 500, 'boom', times=1)
    with pytest.raises(ModuleFailed) as info:
        run_module(shadow_refresh, args(pve_conn))
    assert 'identity could not be restored' in info.value.result['msg'] and 'finishes the restore' in info.value.result['msg']
    half = vms_by_name(pvesim)['shop-web-shadow']
    assert half.config['net0'] != before['net0']  # a fresh MAC: the copy is not the shadow yet
    assert primary.snapshots == {}
    mark = pvesim.mark()
    result = run_module(shadow_refresh, args(pve_conn, min_interval=3600))
    assert result['changed'] and not any('clone' in w[1] or 'snapshot' in w[1] for w in pvesim.writes(mark))
    new = vms_by_name(pvesim)['shop-web-shadow']
    assert new is half
    assert propstr.parse_net(new.config['net0'])['macaddr'] == propstr.parse_net(before['net0'])['macaddr']
    assert propstr.parse_tags(new.config['tags']) == propstr.parse_tags(before['tags'])
    dummy, meta = meta_utils.parse_description(new.config['description'])
    assert 'pending' not in meta['replication'] and meta['replication']['last_full'] == result['last_full']
    # And now it is an ordinary shadow again: within min_interval nothing happens.
    mark = pvesim.mark()
    assert run_module(shadow_refresh, args(pve_conn, min_interval=3600))['skipped']
    assert pvesim.writes(mark) == []


def _move_disk(pvesim, vm, sid, kind, suffix=''):
    """Put the primary's first disk on storage ``sid`` of type ``kind`` (created in the simulator)."""
    pvesim.pve.storages.setdefault(sid, {'type': kind, 'active': 1, 'content': 'images', 'files': set()})
    text = vm.config['scsi0']
    vm.config['scsi0'] = '{0}:vm-{1}-disk-0{2}'.format(sid, vm.vmid, suffix) + text[len(text.split(',')[0]):]


def test_a_primary_on_zfs_is_refused_before_the_shadow_is_destroyed(pvesim, pve_conn, built):
    # pve-storage ZFSPoolPlugin volume_has_feature: snapshots, but no copy of a snapshot; qemu-server clone_vm refuses
    # the clone only after the refresh destroyed the shadow. Now refused before any write, in check mode too.
    primary, shadow = built
    _move_disk(pvesim, primary, 'local-zfs', 'zfspool')
    for check in (True, False):
        mark = pvesim.mark()
        with pytest.raises(ModuleFailed) as info:
            run_module(shadow_refresh, args(pve_conn), check_mode=check)
        msg = info.value.result['msg']
        assert "'local-zfs' of type zfspool" in msg and 'full clone of a snapshot' in msg and 'scsi0' in msg, msg
        assert 'Nothing was changed' in msg and 'differential' in msg
        assert pvesim.writes(mark) == []
    assert vms_by_name(pvesim)['shop-web-shadow'] is shadow and primary.snapshots == {}
    # A qcow2 disk on a directory storage can be snapshotted and copied: the refresh goes ahead.
    _move_disk(pvesim, primary, 'local', 'dir', suffix='.qcow2')
    assert run_module(shadow_refresh, args(pve_conn))['changed']


def test_the_simulator_refuses_a_clone_of_a_zfs_snapshot_as_pve_does(pvesim, pve_conn, built, proxmoxer_api):
    primary, shadow = built
    _move_disk(pvesim, primary, 'local-zfs', 'zfspool')
    node = 'nodes/{0}/qemu/{1}'.format(primary.node, primary.vmid)
    proxmoxer_api(node + '/snapshot').post(snapname='s1')
    with pytest.raises(Exception) as info:
        proxmoxer_api(node + '/clone').post(newid=4321, snapname='s1', full=1, name='copy')
    assert 'Full clone feature is not supported for a snapshot of' in str(info.value)


def test_a_protected_shadow_is_refused_before_any_write(pvesim, pve_conn, built):
    primary, shadow = built
    shadow.config['protection'] = 1
    mark = pvesim.mark()
    with pytest.raises(ModuleFailed) as info:
        run_module(shadow_refresh, args(pve_conn))
    msg = info.value.result['msg']
    assert 'protection=1' in msg and 'qm set {0} --protection 0'.format(shadow.vmid) in msg
    assert pvesim.writes(mark) == [] and shadow.status == 'running'


def test_a_local_iso_keeps_the_clone_on_the_primary_node(pvesim, pve_conn):
    # qemu-server clone_vm $check_storage_access_clone counts a CD-ROM image on a storage: with an ISO on the
    # non-shared `local`, a `target` clone is refused ("VM uses local storage"), so the copy is made on the
    # primary's node and moved. Primaries on the shared ceph-vm (debian-12-golden) with an ISO on local.
    template = shop_template(shadow={'enabled': True, 'size': 0.5, 'replication': {'fidelity': 'full', 'interval': '1h'}})
    plan = plan_from_template(template)[1]
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['primary'], state='started'))
    run_module(linked_clone, dict(pve_conn, plan=plan, roles=['shadow'], state='started'))
    vms = vms_by_name(pvesim)
    primary, shadow = vms['shop-web-1'], vms['shop-web-shadow']
    assert 'ceph-vm:' in primary.config['scsi0'] and shadow.node != primary.node
    primary.config['ide2'] = 'local:iso/debian-12.iso,media=cdrom'
    result = run_module(shadow_refresh, args(pve_conn))
    assert 'moved vmid {0} to {1}'.format(shadow.vmid, shadow.node) in result['steps'], result['steps']
    assert vms_by_name(pvesim)['shop-web-shadow'].node == shadow.node

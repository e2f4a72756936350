#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: shadow_refresh
short_description: Full state replication, re-creating a shadow VM from a snapshot of its primary
version_added: 0.1.0
description:
  - Replication fidelity C(full). Snapshots the O(primary) VM, destroys the O(shadow) VM and re-creates it as a
    full clone of that snapshot with the same vmid, name, node and pool, then restores the shadow's identity with
    one digest-checked config update and deletes the snapshot. RPO = the interval it is run at.
  - "The identity kept: vmid, name, node, pool, every NIC exactly as it was (model, MAC address, bridge on the
    shadow network, VLAN tag, firewall), tags, the description (its metadata block gets
    C(replication: {last_full, source, source_snapshot})), hookscript, C(onboot), C(startup), cloud-init
    settings, and (O(keep_size)) cores, sockets, memory and balloon. Mirrors follow the shadow's tap devices
    (C(tap<vmid>i<n>)), so keeping the vmid and NICs keeps them. An HA resource of the shadow and the HA rules
    naming it are put back after the re-creation (the destroy purges them)."
  - PVE makes linked clones only from templates, so the copy is a full clone of every disk of the primary (cost
    is one full disk copy per refresh) and the shadow is down while it is copied. When the shadow is on another
    node and a disk of the primary is on storage that is not shared, PVE cannot clone across nodes; the clone is
    then made on the primary's node and moved offline to the shadow's node.
  - The copy carries the primary's guest configuration (addresses, keepalived). With O(isolate_shared_nics) the
    shadow's NICs on a bridge the primary also uses (its VRRP NIC on the primary network) come back with
    C(link_down=1), so the copy never announces the primary's addresses; re-apply the shadow's guest roles
    (vip_failover) and converge it with the site playbook, which sets the links up again.
  - Idempotent within O(min_interval) (the last refresh time is read from the shadow's description), so a timer
    may call it every minute. Skips a shadow that is serving (failover active), and a shadow whose refresh is
    already in progress (this module's snapshot on the primary, younger than four times O(timeout)); older
    leftovers of this module are deleted.
  - "Refused before any write, in check mode too, where PVE would refuse only after the shadow is destroyed: a shadow
    with C(protection=1) (qemu-server C(destroy_vm)); a primary with a disk that PVE cannot snapshot, or whose
    snapshot PVE cannot copy (pve-storage C(volume_has_feature): ZFS offers no copy of a snapshot; directory, NFS,
    CIFS and thick LVM storages only of qcow2 volumes); use fidelity C(differential) or C(event) there. After the
    snapshot, a primary that was locked (a backup began) or moved meanwhile ends the run with the shadow untouched."
  - "While the full copy of a running primary runs, PVE holds the primary's configuration lock (qemu-server
    C(clone_vm) locks a running source exclusively for the whole copy): a start, reset, resume or configuration
    change of the primary meanwhile waits up to 10 seconds and then fails (C(can't lock file ... got timeout)).
    Schedule refreshes apart from reconcile runs and drills."
  - "What the destroy and the clone change and the refresh does not put back (qemu-server C(destroy_vm) with
    C(purge), C(clone_vm)): the shadow's vmid is removed from backup jobs (a job left without guests is deleted)
    and from replication jobs, its permissions on C(/vms/<vmid>) are removed, and its firewall configuration is
    replaced by a copy of the primary's. Grant shadows' permissions on a pool or a path above them, and select
    them for backups by pool, not by vmid."
  - Stops before any write when the cluster has no quorum. If the clone fails after the shadow was destroyed, a
    retryable error (lock, connection) is retried once; otherwise the module fails with a message that names the
    missing shadow and how to rebuild it, returns the recorded identity, and still deletes the snapshot.
  - Until its identity is restored, the new shadow's description carries it (C(replication.pending)). If the
    restore fails, the next run finishes it from there (no new snapshot, no new clone) instead of taking the
    half-made copy for the shadow.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
attributes:
  check_mode:
    description: Reads only; reports in RV(steps) what a refresh would do (or why it would be skipped) and writes nothing.
    support: full
  diff_mode:
    description: Shows the shadow's vmid and node and the time of the last full refresh before and after.
    support: full
options:
  primary:
    description: Name of the primary VM whose snapshot the shadow is re-created from (unique in the cluster).
    type: str
    required: true
  shadow:
    description: Name of the shadow VM to re-create (unique in the cluster; it must exist).
    type: str
    required: true
  snapshot_prefix:
    description:
      - Prefix of the snapshot taken on the primary, named C(<prefix>-<shadow vmid>-<epoch>).
      - A letter first, then letters, digits, C(_) and C(-); at most 18 characters.
    type: str
    default: sn-refresh
  keep_size:
    description: Keep the shadow's own cores, sockets, memory and balloon. V(false) gives it the primary's size.
    type: bool
    default: true
  start:
    description: Start the shadow after the refresh. With V(false), it is started only if it was running before.
    type: bool
    default: true
  min_interval:
    description:
      - Seconds. Skip (no change, no write) when the last full refresh recorded in the shadow's description is
        younger. V(0) refreshes on every call.
    type: int
    default: 0
  isolate_shared_nics:
    description:
      - Bring the shadow's NICs that sit on a bridge the primary also uses back with C(link_down=1) (the copy of the
        primary must not announce the primary's addresses before its own configuration is re-applied).
    type: bool
    default: true
  timeout:
    description: Seconds (wall clock) to wait for each PVE task (snapshot, stop, destroy, clone, move, start), and
      for the stopped shadow to be off (an HA resource is stopped by the HA manager after the stop task has ended).
    type: int
    default: 1800
notes:
  - Runs on the controller (it only talks to the PVE API). The qemu-guest-agent in the primary is recommended, PVE
    then freezes the guest's file systems for the snapshot; the snapshot is taken without RAM state (C(vmstate=0)).
  - PVE lets only root@pam itself (not an API token) set or delete a hookscript. The clone carries the primary's
    hookscript; when the shadow had another one (or none) and the API user may not change it, the rest of the
    identity is still restored (the hookscript goes in its own update, and with an API token is not sent) and a
    warning names the C(qm set) command that finishes the job.
  - Needs VM.Snapshot on the primary, VM.Clone on the primary, VM.Allocate and VM.Config.* on the shadow,
    Datastore.AllocateSpace on the storage, VM.PowerMgmt, VM.Migrate (local disks, other node), and Sys.Console
    for HA resources.
'''

EXAMPLES = r'''
- name: Re-create shop-web-shadow from shop-web-1 at most every 4 hours
  shadownet.proxmox.shadow_refresh:
    api_host: pve1.example.com
    api_token_id: automation@pve!shadownet
    api_token_secret: "{{ vault_pve_token }}"
    ca_path: /etc/ssl/pve-root-ca.pem
    primary: shop-web-1
    shadow: shop-web-shadow
    min_interval: 14400
  delegate_to: localhost

- name: What a refresh would do
  shadownet.proxmox.shadow_refresh:
    primary: shop-web-1
    shadow: shop-web-shadow
  check_mode: true
'''

RETURN = r'''
skipped:
  description: Whether nothing was done (see RV(reason)).
  returned: always
  type: bool
reason:
  description: Why the refresh was skipped (min_interval, serving shadow, refresh in progress).
  returned: always
  type: str
  sample: the last full refresh of 'shop-web-shadow' was 120s ago, less than min_interval 14400s
steps:
  description: What was done, in order (in check mode, what would be done).
  returned: always
  type: list
  elements: str
snapshot:
  description: Name of the primary's snapshot the shadow was (or would be) cloned from; it is deleted afterwards.
  returned: always
  type: str
  sample: sn-refresh-103-1764000000
primary:
  description: The primary's name, vmid and node.
  returned: always
  type: dict
shadow:
  description: The shadow's name, vmid and node (as before the refresh).
  returned: always
  type: dict
identity:
  description: The shadow's identity recorded before it was destroyed (vmid, node, name, pool, NICs, tags, description, size, hookscript).
  returned: when a refresh was attempted
  type: dict
isolated_nics:
  description: NICs brought back with C(link_down=1) (on a bridge the primary also uses).
  returned: always
  type: list
  elements: str
  sample: [net1]
last_full:
  description: Epoch seconds of the last full refresh (this one when it happened), from the shadow's description.
  returned: always
  type: int
previous_last_full:
  description: Epoch seconds of the refresh before this one (null when there was none).
  returned: always
  type: int
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import refresh as refresh_utils


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        primary=dict(type='str', required=True),
        shadow=dict(type='str', required=True),
        snapshot_prefix=dict(type='str', default='sn-refresh'),
        keep_size=dict(type='bool', default=True),
        start=dict(type='bool', default=True),
        min_interval=dict(type='int', default=0),
        isolate_shared_nics=dict(type='bool', default=True),
        timeout=dict(type='int', default=1800),
    )
    module = api_utils.api_module(argument_spec)
    p = module.params
    bad = refresh_utils.snapshot_prefix_error(p['snapshot_prefix'])
    if bad:
        module.fail_json(msg=bad)
    if p['primary'] == p['shadow']:
        module.fail_json(msg='primary and shadow must be different VMs (both are {0!r})'.format(p['primary']))
    if p['min_interval'] < 0 or p['timeout'] < 1:
        module.fail_json(msg='min_interval must be >= 0 and timeout >= 1')
    refresher = None
    try:
        api = api_utils.PveApi.from_module(module)
        refresher = refresh_utils.ShadowRefresher(api, check_mode=module.check_mode, timeout=p['timeout'])
        result = refresher.run(p['primary'], p['shadow'], prefix=p['snapshot_prefix'], keep_size=p['keep_size'],
                               start=p['start'], min_interval=p['min_interval'],
                               isolate_shared=p['isolate_shared_nics'])
    except api_utils.PveApiError as exc:
        partial = dict(refresher.result) if refresher is not None else {}
        for warning in partial.pop('warnings', []) or []:
            module.warn(warning)
        partial['changed'] = bool(partial.get('steps')) and not module.check_mode
        api_utils.fail_json_from(module, exc, **partial)
    for warning in result.pop('warnings', []) or []:
        module.warn(warning)
    shadow = result.get('shadow') or {}
    result['diff'] = dict(before={}, after={})
    if result['changed']:
        result['diff'] = dict(
            before=dict(vmid=shadow.get('vmid'), node=shadow.get('node'), last_full=result.get('previous_last_full')),
            after=dict(vmid=shadow.get('vmid'), node=shadow.get('node'),
                       last_full='(now)' if module.check_mode else result.get('last_full')))
    module.exit_json(**result)


if __name__ == '__main__':
    main()

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Replication fidelity ``full``: re-create a shadow from a snapshot of its primary, keeping its identity.

One refresh, through the PVE API (docs: plugins/modules/shadow_refresh.py)::

    find both by name -> read the shadow's identity -> (skip: too recent / serving / in progress)
    -> quorum -> snapshot the primary -> stop + destroy the shadow (purge)
    -> full clone of the snapshot to the SAME vmid, name and pool, on the shadow's node
    -> one digest-checked config update that restores the identity (NICs with their MACs and bridges, tags,
       description with replication.last_full, size, hookscript, cloud-init network settings)
    -> HA resource and rules back -> delete the snapshot -> start

PVE makes linked clones only from templates, so the copy is a full one: the cost is one full disk copy per
refresh. PVE clones to another node (``target``) only when every disk is on shared storage; with local disks the
clone is made on the primary's node and then moved offline (``migrate`` with ``with-local-disks``).

The pure helpers (names, identity, the restoring config change) are separate from :class:`ShadowRefresher`,
which does the API calls, so they can be unit-tested without a cluster.
"""


import re
import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import clone
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import placement
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import readback
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import vm as vm_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.vm import find_vms

# PVE snapshot names: a letter, then letters, digits, '_' and '-'; at most 40 characters.
SNAPNAME_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_-]*$')
SNAPNAME_MAX = 40
NET_KEY = propstr.NET_KEY
DRIVE_KEY = propstr.DRIVE_KEY
# Kept from the shadow exactly as they were (deleted when the shadow did not have them): what makes it the shadow,
# not a copy of the primary. netN are handled separately (exact strings, extra NICs removed).
IDENTITY_KEYS = ('tags', 'onboot', 'startup', 'protection', 'ciuser', 'cipassword', 'cicustom',
                 'nameserver', 'searchdomain', 'sshkeys')
# Only root@pam itself may set or delete a hookscript (PVE's rule, tokens included): restored in a separate update
# whose refusal is a warning, never a failed refresh (core/vm.py update_root_only).
ROOT_ONLY_KEYS = vm_utils.ROOT_ONLY_KEYS
# Never copied into a description (which every VM.Audit holder reads).
SECRET_KEYS = ('cipassword',)
IPCONFIG_KEY = re.compile(r'^ipconfig\d+$')
SIZE_KEYS = ('cores', 'sockets', 'memory', 'balloon')
HA_RESOURCE_KEYS = ('state', 'group', 'max_restart', 'max_relocate', 'comment', 'failback')


def _rule_sids(rule):
    return [x.strip() for x in str(rule.get('resources', '')).split(',')]


class ShadowMissingError(PveApiError):
    """The shadow was destroyed and could not be re-created: it is missing now."""


def snapshot_prefix_error(prefix):
    """None if ``prefix`` makes valid PVE snapshot names, else why not."""
    if not SNAPNAME_RE.match(prefix or ''):
        return ('snapshot_prefix {0!r} must start with a letter and hold only letters, digits, "_" and "-" (PVE '
                'snapshot names)'.format(prefix))
    if len(prefix) > SNAPNAME_MAX - 22:
        return 'snapshot_prefix {0!r} is too long: at most {1} characters'.format(prefix, SNAPNAME_MAX - 22)
    return None


def snapshot_name(prefix, shadow_vmid, now):
    """``<prefix>-<shadow vmid>-<epoch>``: per shadow, so runs for different shadows never touch each other's."""
    return '{0}-{1}-{2}'.format(prefix, int(shadow_vmid), int(now))


def own_snapshots(snapshots, prefix, shadow_vmid=None):
    """This module's snapshots in a snapshot listing: [(name, vmid, snaptime)], oldest first."""
    pattern = re.compile(r'^' + re.escape(prefix) + r'-(\d+)-(\d+)$')
    out = []
    for snap in snapshots or []:
        found = pattern.match(str(snap.get('name', '')))
        if not found or (shadow_vmid is not None and int(found.group(1)) != int(shadow_vmid)):
            continue
        out.append((snap['name'], int(found.group(1)), int(snap.get('snaptime') or found.group(2))))
    return sorted(out, key=lambda s: s[2])


def nets_of(config):
    return dict((k, v) for k, v in config.items() if NET_KEY.match(k))


def disks_of(config):
    """{key: storage id} of the disks (not CD-ROMs, not 'none')."""
    out = {}
    for key, value in config.items():
        if not DRIVE_KEY.match(key):
            continue
        drive = propstr.parse_drive(value)
        volume = drive.get('volume', '')
        if drive.get('media') == 'cdrom' or volume in ('none', 'cdrom') or ':' not in volume:
            continue
        out[key] = volume.split(':', 1)[0]
    return out


def all_shared(pcfg, storages):
    """Does qemu-server's ``$check_storage_access_clone`` find every volume shared (CD-ROMs included)? ``storages``:
    placement.storage_table."""
    return all(sid is not None and storages.get(sid, {}).get('shared')
               for dummy, sid, dummy2 in placement.template_volumes(pcfg))


def identity_of(resource, config):
    """What the shadow must still be after the refresh: the record taken before it is destroyed."""
    ident = dict(vmid=int(resource['vmid']), node=resource['node'], name=resource.get('name'),
                 pool=resource.get('pool') or None, status=resource.get('status'), nets=nets_of(config),
                 description=config.get('description', ''))
    for key in IDENTITY_KEYS + ROOT_ONLY_KEYS + SIZE_KEYS:
        ident[key] = config.get(key)
    for key in config:
        if IPCONFIG_KEY.match(key):
            ident[key] = config[key]
    return ident


def pending_of(identity):
    """The part of an identity kept in the new shadow's description until it is restored (no description)."""
    return dict((k, v) for k, v in identity.items() if k not in ('description', 'status') + SECRET_KEYS and v is not None)


def shared_bridges(shadow_nets, primary_nets):
    """Shadow NIC keys on a bridge the primary also uses (the VRRP NIC on the primary's own network)."""
    bridges = set(propstr.parse_net(v).get('bridge') for v in primary_nets.values())
    return sorted(k for k, v in shadow_nets.items() if propstr.parse_net(v).get('bridge') in bridges)


def root_only_changes(identity, cfg):
    """(changes, deletes) for the keys only root@pam may change (hookscript). Pure."""
    changes, deletes = {}, []
    for key in ROOT_ONLY_KEYS:
        want = identity.get(key)
        if want is None and key in cfg:
            deletes.append(key)
        elif want is not None and readback.differs(key, cfg.get(key), want):
            changes[key] = want
    return changes, deletes


def restore_changes(identity, cfg, description, keep_size=True, isolate=()):
    """(changes, deletes) that turn the fresh clone ``cfg`` back into the shadow ``identity``. Pure.

    NICs come back exactly (model, MAC, bridge, VLAN tag, firewall, rate ...); NICs in ``isolate`` get
    ``link_down=1``; NICs the shadow did not have are removed. The identity keys and (with ``keep_size``) the
    size come back as they were, absent ones are deleted.
    """
    changes, deletes = {}, []
    want_nets = dict(identity['nets'])
    for key in isolate:
        net = propstr.parse_net(want_nets[key])
        net['link_down'] = '1'
        want_nets[key] = propstr.format_net(net)
    for key, value in sorted(want_nets.items()):
        if readback.differs(key, cfg.get(key), value):
            changes[key] = value
    for key in sorted(nets_of(cfg)):
        if key not in want_nets:
            deletes.append(key)
    keys = list(IDENTITY_KEYS) + [k for k in identity if IPCONFIG_KEY.match(k)] + \
        [k for k in cfg if IPCONFIG_KEY.match(k)]
    if keep_size:
        keys += list(SIZE_KEYS)
    for key in sorted(set(keys)):
        want = identity.get(key)
        if want is None:
            if key in cfg:
                deletes.append(key)
        elif readback.differs(key, cfg.get(key), want):
            changes[key] = want
    if cfg.get('name') != identity['name']:
        changes['name'] = identity['name']
    if readback.differs('description', cfg.get('description', ''), description):
        changes['description'] = readback.stored('description', description)
    return changes, sorted(set(deletes))


def missing_message(shadow, vmid, node, primary, snapname, cause):
    return ('shadow_refresh: the shadow {0!r} (vmid {1} on {2}) was destroyed to be re-created from {3!r}, and the '
            'clone of snapshot {4!r} failed: {5}. The shadow is MISSING now: its state replication, mirror target '
            'and VRRP backup are gone until it is rebuilt. Rebuild it with the site playbook (site.yml; '
            'shadownet.proxmox.linked_clone with the plan, roles [shadow]) or run shadow_refresh again once the '
            'cause is fixed; its identity (NICs with MACs, tags, description) is in the result as `identity`.'
            .format(shadow, vmid, node, primary, snapname, cause))


class ShadowRefresher(object):
    """One refresh of one shadow. ``clock`` gives epoch seconds (injectable for tests)."""

    def __init__(self, api, check_mode=False, timeout=1800, clock=time.time):
        self.api = api
        self.check_mode = check_mode
        self.timeout = timeout
        self.clock = clock
        self.result = dict(changed=False, skipped=False, reason=None, steps=[], warnings=[], snapshot=None,
                           primary=None, shadow=None, identity=None, isolated_nics=[], last_full=None,
                           previous_last_full=None)

    # ------------------------------------------------------------------ helpers

    def _one(self, resources, name, what):
        found = find_vms(resources, name)
        if len(found) > 1:
            raise PveApiError('{0} VMs are named {1!r} (vmids {2}); the {3} must be unique by name'.format(
                len(found), name, sorted(int(f['vmid']) for f in found), what), kind='config')
        return found[0] if found else None

    def _step(self, text):
        self.result['steps'].append(text)

    def _skip(self, reason):
        self.result.update(skipped=True, reason=reason)
        return self.result

    def _task(self, method, path, params=None):
        task = self.api.run_task(method, path, params, timeout=self.timeout)
        self.result['warnings'].extend(task.get('warnings') or [])
        return task

    def _snapshots(self, node, vmid):
        return self.api.get('nodes/{0}/qemu/{1}/snapshot'.format(node, vmid)) or []

    def _delete_snapshot(self, node, vmid, name, fatal=False):
        try:
            self._task('DELETE', 'nodes/{0}/qemu/{1}/snapshot/{2}'.format(node, vmid, name))
            self._step('deleted snapshot {0} of vmid {1}'.format(name, vmid))
            return True
        except PveApiError as exc:
            if fatal:
                raise
            self.result['warnings'].append('the snapshot {0} of vmid {1} on {2} could not be deleted ({3}); the '
                                           'next refresh removes it'.format(name, vmid, node, exc.message))
            return False

    # -------------------------------------------------------------------- run

    def run(self, primary_name, shadow_name, prefix='sn-refresh', keep_size=True, start=True, min_interval=0,
            isolate_shared=True):
        """One refresh: find both VMs, read the shadow, decide (skip / resume / refresh), plan, then carry it out."""
        now = int(self.clock())
        found = self._find_pair(primary_name, shadow_name, prefix, now)
        if found is None:
            return self.result
        primary, shadow, snaps = found
        cfg, pcfg, meta = self._read_configs(primary, shadow)
        replication = meta.get('replication') if isinstance(meta.get('replication'), dict) else {}
        self.result['last_full'] = self.result['previous_last_full'] = replication.get('last_full')
        if (meta.get('failover') or {}).get('active'):
            return self._skip('the shadow {0!r} is serving (failover active in its description): it is not '
                              'replaced until fail-back'.format(shadow_name))
        if isinstance(replication.get('pending'), dict):
            return self._resume(shadow, cfg, replication['pending'], keep_size, start, isolate_shared, pcfg)
        reason = self._too_soon(shadow, primary_name, replication.get('last_full'), snaps, prefix, now, min_interval)
        if reason:
            return self._skip(reason)
        work = self._plan(primary, shadow, cfg, pcfg, snaps, prefix, now, keep_size, start, isolate_shared)
        if self.check_mode:
            self.result['steps'] = ['would ' + s for s in work['steps']]
            return self.result
        return self._carry_out(work)

    def _find_pair(self, primary_name, shadow_name, prefix, now):
        """(primary, shadow, primary's snapshots) from /cluster/resources; None when skipped (a refresh of an absent
        shadow in progress); PveApiError when one is missing or they are the same VM."""
        res = self.api.resources('vm')
        primary = self._one(res, primary_name, 'primary')
        if primary is None:
            raise PveApiError('the primary {0!r} is not in the cluster (/cluster/resources)'.format(primary_name),
                              kind='notfound')
        shadow = self._one(res, shadow_name, 'shadow')
        pnode, pvmid = primary['node'], int(primary['vmid'])
        self.result['primary'] = dict(name=primary_name, vmid=pvmid, node=pnode)
        snaps = self._snapshots(pnode, pvmid)
        if shadow is None:
            recent = [s for s in own_snapshots(snaps, prefix) if now - s[2] < self._busy_window()]
            if recent:
                self._skip('the shadow {0!r} is absent while a refresh from snapshot {1} is in progress (started {2}s '
                           'ago)'.format(shadow_name, recent[-1][0], now - recent[-1][2]))
                return None
            raise PveApiError('the shadow {0!r} is not in the cluster, so it cannot be refreshed: build it first '
                              '(site.yml; shadownet.proxmox.linked_clone with the plan, roles [shadow])'.format(
                                  shadow_name), kind='notfound')
        svmid = int(shadow['vmid'])
        # The listing's status is pvestatd's, up to 10 s old (PVE/API2Tools.pm extract_vm_stats): ask the VM, and
        # count a paused one (qmpstatus) as running, as PVE's destroy does.
        status = self.api.vm_status(shadow['node'], svmid) or shadow.get('status')
        shadow = dict(shadow, status='running' if placement.process_runs(status) else status)
        self.result['shadow'] = dict(name=shadow_name, vmid=svmid, node=shadow['node'])
        if svmid == pvmid:
            raise PveApiError('primary and shadow are the same VM (vmid {0})'.format(pvmid), kind='config')
        return primary, shadow, snaps

    def _busy_window(self):
        """How old a snapshot of this module may be while its refresh still counts as running."""
        return 4 * self.timeout

    def _read_configs(self, primary, shadow):
        """(shadow config, primary config, the shadow's metadata block); a template shadow is refused."""
        cfg, dummy = self.api.vm_config(shadow['node'], int(shadow['vmid']))
        if cfg.get('template'):
            raise PveApiError('the shadow {0!r} (vmid {1}) is a template; templates are never replaced'.format(
                shadow['name'], int(shadow['vmid'])), kind='config')
        pcfg, dummy = self.api.vm_config(primary['node'], int(primary['vmid']))
        dummy, meta = meta_utils.parse_description(cfg.get('description', ''))
        return cfg, pcfg, meta or {}

    def _too_soon(self, shadow, primary_name, last_full, snaps, prefix, now, min_interval):
        """Why this refresh is skipped (min_interval, another refresh running), or None."""
        if min_interval and isinstance(last_full, (int, float)) and 0 <= now - last_full < min_interval:
            return 'the last full refresh of {0!r} was {1}s ago, less than min_interval {2}s'.format(
                shadow['name'], int(now - last_full), min_interval)
        busy_window = self._busy_window()
        running = [s for s in own_snapshots(snaps, prefix, int(shadow['vmid'])) if now - s[2] < busy_window]
        if running:
            return ('a refresh of {0!r} is in progress (snapshot {1} of {2!r} is {3}s old; older than {4}s counts as '
                    'stale)'.format(shadow['name'], running[-1][0], primary_name, now - running[-1][2], busy_window))
        return None

    def _plan(self, primary, shadow, cfg, pcfg, snaps, prefix, now, keep_size, start, isolate_shared):
        """Everything the refresh will do, decided before the first write: a dict for :meth:`_carry_out`."""
        pnode, pvmid = primary['node'], int(primary['vmid'])
        snode, svmid = shadow['node'], int(shadow['vmid'])
        if not disks_of(pcfg):
            raise PveApiError('the primary {0!r} has no disk to clone'.format(primary['name']), kind='config')
        storages = placement.storage_table(self.api.get('storage') or [])
        self._refusals(primary, shadow, cfg, pcfg, storages)
        identity = identity_of(shadow, cfg)
        self.result['identity'] = dict((k, v) for k, v in identity.items() if k not in SECRET_KEYS)
        isolate = shared_bridges(identity['nets'], nets_of(pcfg)) if isolate_shared else []
        self.result['isolated_nics'] = isolate
        ha_resource, ha_rules = self._ha_record(svmid)
        snapname = snapshot_name(prefix, svmid, now)
        self.result['snapshot'] = snapname
        self.result['changed'] = True
        work = dict(primary=primary, shadow=shadow, identity=identity, isolate=isolate, ha_resource=ha_resource,
                    ha_rules=ha_rules, move=snode != pnode and not all_shared(pcfg, storages), snapname=snapname,
                    stale=[s[0] for s in own_snapshots(snaps, prefix, svmid)], now=now, keep_size=keep_size,
                    will_start=start or shadow.get('status') == 'running')
        work['description'], work['clone_description'] = self._descriptions(cfg, identity, primary['name'],
                                                                            snapname, now)
        steps = ['snapshot {0} (vmid {1} on {2}) as {3}'.format(primary['name'], pvmid, pnode, snapname),
                 ('stop and ' if shadow.get('status') == 'running' else '') +
                 'destroy {0} (vmid {1} on {2})'.format(shadow['name'], svmid, snode),
                 'full clone of {0} to vmid {1} named {2} on {3}{4}'.format(
                     snapname, svmid, shadow['name'], pnode if work['move'] else snode,
                     ', then move it offline to {0} (local disks)'.format(snode) if work['move'] else ''),
                 'restore NICs {0}, tags, description{1}, hookscript'.format(
                     ', '.join(sorted(identity['nets'])), ', size' if keep_size else '')]
        if ha_resource:
            steps.append('put {0} back under HA ({1} rule(s))'.format('vm:%d' % svmid, len(ha_rules)))
        steps.append('delete snapshot {0}'.format(snapname))
        if work['will_start']:
            steps.append('start {0}'.format(shadow['name']))
        if work['stale']:
            steps.insert(0, 'delete stale snapshots {0}'.format(', '.join(work['stale'])))
        work['steps'] = steps
        return work

    def _refusals(self, primary, shadow, cfg, pcfg, storages):
        """What PVE would refuse only after the shadow is destroyed, refused before the first write."""
        if str(cfg.get('protection', '0')) in ('1', 'true'):
            # qemu-server API2/Qemu.pm destroy_vm: check_protection, "can't remove VM N - protection mode enabled"
            raise PveApiError('the shadow {0!r} (vmid {1}) has protection=1, and PVE refuses to destroy a protected '
                              'VM, which a full refresh re-creates; nothing was changed. Clear it to allow refreshes: '
                              '`qm set {1} --protection 0`'.format(shadow['name'], int(shadow['vmid'])), kind='config')
        problem = placement.snapshot_clone_problem(pcfg, storages)
        if problem:
            raise PveApiError('the primary {0!r} (vmid {1}) cannot be copied into its shadow by a full refresh: {2}. '
                              'Nothing was changed (the shadow would be destroyed before PVE refuses the clone). Move '
                              'that volume to a storage that can (`qm disk move`), or replicate with fidelity '
                              'differential or event instead'.format(primary['name'], int(primary['vmid']), problem),
                              kind='config')

    def _primary_unchanged(self, primary):
        """After the snapshot, before the destroy: the primary still on its node and not locked (qemu-server clone_vm
        checks its lock before it clones: a backup or migration begun meanwhile would refuse the clone)."""
        now = clone.find_by_vmid(self.api.resources('vm'), int(primary['vmid']))
        if now is None or now.get('node') != primary['node'] or now.get('lock'):
            return ('the primary {0!r} (vmid {1}) {2} since the refresh began'.format(
                primary['name'], int(primary['vmid']),
                'is gone' if now is None else 'moved to {0}'.format(now.get('node')) if now.get('node') !=
                primary['node'] else 'was locked ({0})'.format(now.get('lock'))))
        return None

    @staticmethod
    def _descriptions(cfg, identity, primary_name, snapname, now):
        """(the restored shadow's description, the fresh clone's description).

        Until the identity is restored, the new shadow's description carries it: a run after a failed restore
        finishes the restore instead of recording the half-made copy as the shadow and cloning again.
        """
        final = meta_utils.merge_description(cfg.get('description', ''), {'replication': {
            'last_full': now, 'source': primary_name, 'source_snapshot': snapname, 'pending': None}})[0]
        pending = dict(pending_of(identity), snapshot=snapname, time=now, source=primary_name)
        try:
            interim = meta_utils.merge_description(cfg.get('description', ''), {'replication': {'pending': pending}})[0]
        except meta_utils.MetaError:
            interim = None
        return final, interim

    def _carry_out(self, work):
        """The writes: snapshot, replace (destroy + clone), restore the identity and HA, delete the snapshot, start."""
        primary, shadow, identity = work['primary'], work['shadow'], work['identity']
        pnode, pvmid = primary['node'], int(primary['vmid'])
        snode, svmid = shadow['node'], int(shadow['vmid'])
        snapname = work['snapname']
        self.api.require_quorum()
        for name in work['stale']:
            self._delete_snapshot(pnode, pvmid, name)
        self._task('POST', 'nodes/{0}/qemu/{1}/snapshot'.format(pnode, pvmid),
                   dict(snapname=snapname, vmstate=0,
                        description='shadownet full replication into {0} (vmid {1})'.format(shadow['name'], svmid)))
        self._step('snapshot {0} of {1}'.format(snapname, primary['name']))
        moved = self._primary_unchanged(primary)
        if moved:
            self._delete_snapshot(pnode, pvmid, snapname)
            raise PveApiError('shadow_refresh: {0}; the shadow {1!r} was left as it was. Run again later'.format(
                moved, shadow['name']), kind='lock' if 'locked' in moved else 'config')
        try:
            # ShadowMissingError after the destroy; any other error: the shadow is still there.
            self._replace(primary, shadow, identity, snapname, work['move'], work['clone_description'])
        except PveApiError:
            self._delete_snapshot(pnode, pvmid, snapname)
            raise
        try:
            self._restore(snode, svmid, identity, work['description'], work['keep_size'], work['isolate'])
            self._ha_restore(svmid, work['ha_resource'], work['ha_rules'])
        except PveApiError as exc:
            self._delete_snapshot(pnode, pvmid, snapname)
            raise self._restore_failed(exc, work) from exc
        self.result['last_full'] = work['now']
        self._delete_snapshot(pnode, pvmid, snapname)
        if work['will_start']:
            fresh = self._one(self.api.resources('vm'), shadow['name'], 'shadow')
            if fresh is not None:
                self._start(fresh['node'], svmid, shadow['name'])
        return self.result

    def _start(self, node, vmid, name):
        """Start the shadow unless it runs. The listing's status is pvestatd's, up to 10 s old, and for a vmid just
        re-created it is the destroyed VM's: ask the VM. An HA resource's start waits until HA runs it
        (PveApi.start_vm)."""
        if self.api.vm_status(node, vmid) == 'running':
            return
        task = self.api.start_vm(node, vmid, timeout=self.timeout, name=name)
        self.result['warnings'].extend(task.get('warnings') or [])
        self._step('started {0}'.format(name))

    @staticmethod
    def _restore_failed(exc, work):
        """The error of a re-created shadow whose identity could not be restored (the next run finishes it)."""
        nics = '; '.join('{0}={1}'.format(k, v) for k, v in sorted(work['identity']['nets'].items()))
        shadow = work['shadow']
        msg = ('shadow_refresh: {0!r} (vmid {1}) was re-created from {2!r} but its identity could not be restored: {3}. '
               'It may carry the primary\'s tags and NICs with fresh MAC addresses; the next run of shadow_refresh '
               'finishes the restore (no new clone) from the identity kept in its description. Its NICs were '
               '{4}.'.format(shadow['name'], int(shadow['vmid']), work['primary']['name'], exc.message, nics))
        return PveApiError(msg, kind=exc.kind, status=exc.status, method=exc.method, path=exc.path, node=exc.node)

    # --------------------------------------------------------------- pieces

    def _resume(self, shadow, cfg, pending, keep_size, start, isolate_shared, pcfg):
        """A previous refresh re-created the shadow but did not restore its identity: restore it now (no clone)."""
        svmid = int(shadow['vmid'])
        identity = dict(pending, vmid=svmid, node=shadow['node'], name=shadow['name'], description=None)
        identity.setdefault('nets', {})
        for key in IDENTITY_KEYS + ROOT_ONLY_KEYS + SIZE_KEYS:
            identity.setdefault(key, None)
        for key in SECRET_KEYS:
            identity[key] = cfg.get(key)  # not kept in the description: left as the copy has it
        self.result['identity'] = dict((k, v) for k, v in identity.items() if k not in SECRET_KEYS)
        isolate = shared_bridges(identity['nets'], nets_of(pcfg)) if isolate_shared else []
        self.result['isolated_nics'] = isolate
        self.result['snapshot'] = pending.get('snapshot')
        self.result['changed'] = True
        last = pending.get('time')
        description = meta_utils.merge_description(cfg.get('description', ''), {'replication': {
            'last_full': last, 'source': pending.get('source'), 'source_snapshot': pending.get('snapshot'),
            'pending': None}})[0]
        plan = ['finish the restore of {0} (vmid {1}) left by the refresh from {2}: NICs {3}, tags, description'.format(
            shadow['name'], svmid, pending.get('snapshot'), ', '.join(sorted(identity['nets'])))]
        will_start = start or shadow.get('status') == 'running'
        if will_start and shadow.get('status') != 'running':
            plan.append('start {0}'.format(shadow['name']))
        if self.check_mode:
            self.result['steps'] = ['would ' + p for p in plan]
            return self.result
        self.api.require_quorum()
        self._restore(shadow['node'], svmid, identity, description, keep_size, isolate)
        self.result['last_full'] = last
        self.result['warnings'].append('finished the identity restore of {0} left by an earlier refresh; its HA '
                                       'resource and rules, if it had any, come back with the site playbook'.format(
                                           shadow['name']))
        if will_start and shadow.get('status') != 'running':
            self._start(shadow['node'], svmid, shadow['name'])
        return self.result

    def _ha_record(self, vmid):
        sid = 'vm:{0}'.format(vmid)
        try:
            resources = self.api.get('cluster/ha/resources') or []
        except PveApiError:
            return None, []
        found = [r for r in resources if r.get('sid') == sid]
        if not found:
            return None, []
        try:
            rules = [r for r in (self.api.get('cluster/ha/rules') or []) if sid in _rule_sids(r)]
        except PveApiError:
            rules = []
        return found[0], rules

    def _ha_restore(self, vmid, resource, rules):
        if not resource:
            return
        sid = 'vm:{0}'.format(vmid)
        params = dict((k, resource[k]) for k in HA_RESOURCE_KEYS if resource.get(k) not in (None, ''))
        if sid not in self._ha_sids():
            self.api.settle_write('POST', 'cluster/ha/resources', dict(params, sid=sid),
                                  settled=lambda: sid in self._ha_sids(), what='add HA resource ' + sid)
        current = dict((r.get('rule'), r) for r in self.api.get('cluster/ha/rules') or [])
        for rule in rules:
            keys = dict((k, v) for k, v in rule.items() if k not in ('rule', 'digest', 'order', 'errors'))
            if rule['rule'] in current:
                if sid in _rule_sids(current[rule['rule']]):
                    continue
                self.api.settle_write('PUT', 'cluster/ha/rules/{0}'.format(rule['rule']),
                                      dict(type=rule['type'], resources=rule['resources']),
                                      settled=lambda rule=rule: self._rule_names(rule['rule'], sid),
                                      what='update HA rule ' + rule['rule'])
            else:
                self.api.settle_write('POST', 'cluster/ha/rules', dict(keys, rule=rule['rule']),
                                      settled=lambda rule=rule: self._rule_names(rule['rule'], sid),
                                      what='create HA rule ' + rule['rule'])
        self._step('HA resource {0} and {1} rule(s) restored'.format(sid, len(rules)))

    def _ha_sids(self):
        return [r.get('sid') for r in self.api.get('cluster/ha/resources') or []]

    def _rule_names(self, rid, sid):
        """Does HA rule ``rid`` exist and name ``sid`` (read back after a lost answer)?"""
        return any(r.get('rule') == rid and sid in _rule_sids(r) for r in self.api.get('cluster/ha/rules') or [])

    def _replace(self, primary, shadow, identity, snapname, move, clone_description=None):
        """Stop and destroy the shadow, clone the snapshot to its vmid. Raises ShadowMissingError after the destroy."""
        snode, svmid = shadow['node'], int(shadow['vmid'])
        pnode, pvmid = primary['node'], int(primary['vmid'])
        if shadow.get('status') == 'running':
            # Off for real before the destroy: an HA resource's stop only asks the HA manager (see stop_vm).
            task = self.api.stop_vm(snode, svmid, name=shadow['name'], timeout=self.timeout)
            self.result['warnings'].extend(task.get('warnings') or [])
            self._step('stopped {0}'.format(shadow['name']))
        try:
            self._task('DELETE', 'nodes/{0}/qemu/{1}'.format(snode, svmid),
                       {'purge': 1, 'destroy-unreferenced-disks': 1})
        except PveApiError:
            if shadow.get('status') == 'running' and self._vm_exists(svmid):
                try:
                    self._task('POST', 'nodes/{0}/qemu/{1}/status/start'.format(snode, svmid))
                except PveApiError:
                    pass  # the destroy error is the one to report
            raise
        self._step('destroyed {0} (vmid {1})'.format(shadow['name'], svmid))
        params = dict(snapname=snapname, full=1, description=clone_description or identity['description'] or None,
                      pool=identity['pool'], target=snode if not move and snode != pnode else None)
        where = 'nodes/{0}/qemu/{1}/clone'.format(pnode, pvmid)
        try:
            self._clone(pnode, pvmid, shadow['name'], svmid, params)
        except PveApiError as exc:
            raise ShadowMissingError(missing_message(shadow['name'], svmid, snode, primary['name'], snapname,
                                                     exc.message), kind='shadow_missing', method='POST',
                                     path=where, node=pnode) from exc
        self._step('cloned {0} to vmid {1} ({2})'.format(snapname, svmid, shadow['name']))
        if move:
            try:
                self._task('POST', 'nodes/{0}/qemu/{1}/migrate'.format(pnode, svmid),
                           {'target': snode, 'with-local-disks': 1})
                self._step('moved vmid {0} to {1}'.format(svmid, snode))
            except PveApiError as exc:
                self.result['warnings'].append(
                    'the new shadow stays on {0}, the node of its primary: moving it to {1} failed ({2}); move it '
                    'with `qm migrate {3} {1} --with-local-disks`'.format(pnode, snode, exc.message, svmid))

    def _clone(self, pnode, pvmid, name, vmid, params):
        """The clone of the snapshot to the shadow's own vmid (clone.clone_vm: looks again after a lost answer)."""
        try:
            dummy, warnings = clone.clone_vm(self.api, pnode, pvmid, name, vmid=vmid, fixed_vmid=True,
                                             timeout=self.timeout, params=params)
        except PveApiError as exc:
            self.result['warnings'].extend(getattr(exc, 'warnings', None) or [])
            raise
        self.result['warnings'].extend(warnings)

    def _vm_exists(self, vmid):
        return clone.find_by_vmid(self.api.resources('vm'), vmid) is not None

    def _restore(self, node, vmid, identity, description, keep_size, isolate):
        current = [r for r in self.api.resources('vm') if int(r.get('vmid', -1)) == vmid]
        node = current[0]['node'] if current else node

        def compute(cfg):
            return restore_changes(identity, cfg, description, keep_size=keep_size, isolate=isolate)

        dummy, changes, deletes = self.api.update_vm_config(node, vmid, compute)
        self._step('restored {0}'.format(', '.join(sorted(list(changes) + ['-' + d for d in deletes]))))
        changes, deletes, warning = vm_utils.update_root_only(
            self.api, node, vmid, lambda cfg: root_only_changes(identity, cfg), 'the shadow',
            consequence='The shadow keeps the primary\'s hookscript setting, whose script must exist on its node '
                        'for it to start.')
        if warning:
            self.result['warnings'].append(warning)
        if changes or deletes:
            self._step('restored {0}'.format(', '.join(sorted(list(changes) + ['-' + d for d in deletes]))))

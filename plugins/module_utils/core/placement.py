# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a new VM goes, and from which copy of its golden template PVE lets it be cloned there. Pure.

Two questions, answered from plain data that ``vm.py`` reads from the cluster before any write:

- :func:`clone_reach` / :func:`clone_route`: from which template copy a linked clone can be made *on* a node.
  qemu-server ``API2/Qemu.pm`` ``clone_vm`` refuses ``target`` unless every volume of the source is on a storage
  marked ``shared`` (``$check_storage_access_clone``: "can't clone VM to node '...' (VM uses local storage)",
  full clones included), and makes a linked clone only where the storage plugin's ``volume_has_feature(...,
  'clone', <base volume>)`` says so. So a golden template is either on shared storage that supports linked
  clones (cloned with ``target=<node>``) or copied to each node under the same name (cloned from the copy on
  that node, without ``target``).
- :func:`place`: the node of each new VM, by free capacity (``/cluster/resources`` type node: ``maxmem``/``mem``,
  ``maxcpu``/``cpu``, plus what this run already placed there), spreading the primaries of a service and keeping
  each shadow off the nodes of the primaries it shadows; with a short reason per VM. A node is a candidate only
  when it is ``online`` and, where the HA manager reports on it (``hastate``: pve-manager ``API2/Cluster.pm``
  ``resources`` copies the CRM's ``manager_status`` ``node_status``), its HA state is ``online`` too: a node in
  ``maintenance`` (pve-ha-manager ``NodeStatus.pm``) is being emptied by the CRM (``Manager.pm``
  ``next_state_started``), and has the most free memory exactly because of that.
"""

from __future__ import annotations

import re
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr

__all__ = ['MiB', 'SHARED_TYPES', 'LINKED_CLONE_TYPES', 'PlacementError', 'storage_table', 'template_volumes',
           'clone_reach', 'clone_route', 'snapshot_clone_problem', 'volume_format', 'reaches', 'refusal',
           'node_capacities', 'process_runs', 'unavailable', 'shortfall', 'place']

MiB = 1024 * 1024
# pve-storage src/PVE/Storage/Plugin.pm @SHARED_STORAGE: parse_config marks storages of these types shared.
SHARED_TYPES = frozenset(('iscsi', 'nfs', 'cifs', 'rbd', 'cephfs', 'iscsidirect', 'zfs', 'drbd', 'pbs'))
# Types whose volume_has_feature answers 'clone' for a base volume (Plugin.pm for the file plugins dir, nfs, cifs,
# glusterfs; BTRFSPlugin, LvmThinPlugin, RBDPlugin, ZFSPlugin, ZFSPoolPlugin). LVMPlugin (thick), ISCSIPlugin and
# ISCSIDirectPlugin cannot make linked clones; unknown (third-party) types are not second-guessed.
LINKED_CLONE_TYPES = frozenset(('dir', 'nfs', 'cifs', 'glusterfs', 'btrfs', 'lvmthin', 'rbd', 'zfs', 'zfspool'))
NO_LINKED_CLONE_TYPES = frozenset(('lvm', 'iscsi', 'iscsidirect', 'cephfs', 'pbs'))
DRIVE_KEY = propstr.DRIVE_KEY


class PlacementError(Exception):
    """A VM that cannot be placed, or a clone PVE would refuse: raised before any write."""


def _flag(value):
    return str(value).strip().lower() in ('1', 'true', 'yes', 'on')


def storage_table(items: list[dict[str, t.Any]] | None) -> dict[str, dict[str, t.Any]]:
    """{storage id: {type, shared, nodes (set or None: every node), disabled}} from ``GET /storage``."""
    out = {}
    for item in items or []:
        sid = item.get('storage')
        if not sid:
            continue
        kind = str(item.get('type') or '')
        nodes = [n for n in re.split(r'[,;\s]+', str(item.get('nodes') or '')) if n]
        out[sid] = dict(type=kind, shared=_flag(item.get('shared', 0)) or kind in SHARED_TYPES,
                        nodes=set(nodes) if nodes else None, disabled=_flag(item.get('disable', 0)))
    return out


def template_volumes(config: dict[str, t.Any] | None) -> list[tuple[str, str | None, bool]]:
    """[(key, storage id or None, cdrom)] of a VM config's volumes, as qemu-server's foreach_volume walks them.

    A CD-ROM drive with ``none`` or the host's ``cdrom`` is left out (no storage); a volume that is a plain path
    has storage ``None`` (treated as local, PVE cannot move it either).
    """
    out = []
    for key in sorted(config or {}):
        if not DRIVE_KEY.match(key):
            continue
        text = str(config[key])
        volume = _volume_of(text)
        cdrom = bool(re.search(r'(?:^|,)media=cdrom(?:,|$)', text))
        if volume in ('none', 'cdrom', ''):
            continue
        sid = volume.split(':', 1)[0] if ':' in volume and not volume.startswith('/') else None
        out.append((key, sid, cdrom))
    return out


def _volume_of(text: str) -> str:
    """The volume of a drive property string (``local-lvm:vm-1-disk-0,size=8G`` or ``file=...``)."""
    volume = text.split(',', 1)[0]
    if 'file=' in text and '=' in volume:
        volume = re.search(r'(?:^|,)file=([^,]+)', text).group(1)
    return volume


def volume_format(volume: str) -> str:
    """A volume's format as pve-storage's parse_volname gives it: the file suffix, else raw (block storages)."""
    found = re.search(r'\.(qcow2|raw|vmdk)$', volume.split(':', 1)[-1])
    return found.group(1) if found else 'raw'


# pve-storage volume_has_feature, each plugin's table: which formats allow 'snapshot' of the current volume and
# 'copy' from a snapshot ('snap'). None: every format. Plugin.pm (dir, nfs, cifs, glusterfs) and LVMPlugin.pm
# (PVE 9's volume chains) qcow2 only; LvmThinPlugin, RBDPlugin: both; ZFSPoolPlugin, ZFSPlugin: snapshots but
# `copy => { base => 1, current => 1 }`, no copy of a snapshot; BTRFSPlugin qcow2, raw, subvol; ISCSIPlugin and
# ISCSIDirectPlugin neither. Types not listed (third-party plugins) are not second-guessed.
SNAPSHOT_FORMATS = {'dir': ('qcow2',), 'nfs': ('qcow2',), 'cifs': ('qcow2',), 'glusterfs': ('qcow2',),
                    'lvm': ('qcow2',), 'lvmthin': None, 'rbd': None, 'zfspool': None, 'zfs': None,
                    'btrfs': ('qcow2', 'raw', 'subvol'), 'iscsi': (), 'iscsidirect': ()}
SNAPSHOT_COPY_FORMATS = dict(SNAPSHOT_FORMATS, zfspool=(), zfs=())


def _feature(table: dict[str, t.Any], kind: str, fmt: str) -> bool:
    if kind not in table:
        return True
    formats = table[kind]
    return formats is None or fmt in formats


def snapshot_clone_problem(config: dict[str, t.Any] | None, storages: dict[str, dict[str, t.Any]]) -> str | None:
    """Why PVE cannot snapshot a VM with ``config`` and make a full clone of that snapshot, or None.

    qemu-server QemuConfig snapshot_prepare needs the 'snapshot' feature on every disk (CD-ROMs and cloud-init
    drives are skipped); API2/Qemu.pm clone_vm's early checks need 'copy' from the snapshot on every disk and
    cloud-init drive ("Full clone feature is not supported for a snapshot of ..."), only plain CD-ROMs are copied
    as configuration. A disk that is a path has no features.
    """
    for key, sid, cdrom in template_volumes(config):
        text = str(config[key])
        volume = _volume_of(text)
        cloudinit = bool(re.search(r'cloudinit', volume))
        if cdrom and not cloudinit:
            continue
        if sid is None:
            return 'disk {0} is the path {1!r}, which PVE can neither snapshot nor copy'.format(key, volume)
        store = storages.get(sid)
        if store is None:
            continue
        kind, fmt = store['type'], volume_format(volume)
        if not cloudinit and not _feature(SNAPSHOT_FORMATS, kind, fmt):
            return ('disk {0} ({1}) is on storage {2!r} of type {3}, where PVE cannot snapshot a {4} volume '
                    '(pve-storage volume_has_feature snapshot)'.format(key, volume, sid, kind, fmt))
        if not _feature(SNAPSHOT_COPY_FORMATS, kind, fmt):
            return ('{0} {1} ({2}) is on storage {3!r} of type {4}, where PVE cannot make a full clone of a snapshot '
                    '(pve-storage volume_has_feature: no copy from a snapshot of a {5} volume; qemu-server clone_vm '
                    '"Full clone feature is not supported for a snapshot of ...")'.format(
                        'cloud-init drive' if cloudinit else 'disk', key, volume, sid, kind, fmt))
    return None


def clone_reach(template: dict[str, t.Any], config: dict[str, t.Any],
                storages: dict[str, dict[str, t.Any]]) -> dict[str, t.Any]:
    """Where a linked clone of ``template`` (a /cluster/resources item) can be made, per PVE's clone_vm.

    Returns {vmid, name, node, shared, nodes, storages, local, problem}: ``shared`` as
    ``$check_storage_access_clone`` computes it (every volume on a shared storage); ``nodes`` the nodes a
    ``target`` clone may go to (``None``: every node; the template's node always); ``local`` the non-shared
    storages that pin it to its node; ``problem`` a reason no linked clone can be made at all (or None).
    """
    node = template['node']
    shared, local, used, problem = True, [], [], None
    reach = None
    for key, sid, cdrom in template_volumes(config):
        store = storages.get(sid) if sid else None
        if sid and sid not in used:
            used.append(sid)
        if store is None:
            shared = False
            if (sid or key) not in local:
                local.append(sid or key)
            if sid and not cdrom:
                # clone_vm checks Datastore.AllocateSpace on it: what the user cannot even list, PVE refuses too.
                problem = problem or ('disk {0} is on storage {1!r}, which GET /storage does not list (missing, or the '
                                      'API user lacks Datastore.Audit on /storage/{1})'.format(key, sid))
            continue
        if not store['shared']:
            shared = False
            if sid not in local:
                local.append(sid)
        elif store['nodes'] is not None:
            reach = set(store['nodes']) if reach is None else reach & store['nodes']
        if store['disabled']:
            problem = problem or 'storage {0!r} (disk {1}) is disabled'.format(sid, key)
        # qemu-server clone_vm: cloud-init and TPM state are always copied, the other disks linked.
        if not cdrom and key != 'tpmstate0' and 'cloudinit' not in str(config.get(key)) \
                and store['type'] in NO_LINKED_CLONE_TYPES:
            problem = problem or ('disk {0} is on storage {1!r} of type {2}, which cannot make linked clones '
                                  '(pve-storage volume_has_feature clone)'.format(key, sid, store['type']))
    if not shared:
        reach = set()
    return dict(vmid=int(template['vmid']), name=template.get('name'), node=node, shared=shared,
                nodes=None if reach is None else reach | {node}, storages=used, local=local, problem=problem)


def _describe(reach):
    return '{0!r} (vmid {1} on {2})'.format(reach['name'], reach['vmid'], reach['node'])


def reaches(reach: dict[str, t.Any], node: str) -> tuple[bool, str | None]:
    """(ok, target) for a clone of this template copy onto ``node``: target is None for a local clone."""
    if reach['problem']:
        return False, None
    if node == reach['node']:
        return True, None
    if reach['shared'] and (reach['nodes'] is None or node in reach['nodes']):
        return True, node
    return False, None


def refusal(reach: dict[str, t.Any], node: str) -> str | None:
    """Why PVE would refuse a linked clone of this copy onto ``node`` (None when it would not)."""
    if reach['problem']:
        return 'golden template {0}: {1}'.format(_describe(reach), reach['problem'])
    ok, dummy = reaches(reach, node)
    if ok:
        return None
    if not reach['shared']:
        return ("golden template {0} has disks on storage {1}, which is not shared: PVE refuses to clone it to "
                "node {2!r} (qemu-server clone_vm: \"can't clone VM to node '{2}' (VM uses local storage)\"). Put "
                "the template on shared storage that supports linked clones (RBD, NFS, CIFS, ZFS over iSCSI), or "
                "copy it to {2} under the same name, or leave {2} out of the template's nodes".format(
                    _describe(reach), ', '.join(repr(s) for s in reach['local']), node))
    return ('golden template {0} is on shared storage {1}, which is not enabled on node {2!r} (storage nodes: '
            '{3}): a clone there could not start. Add {2} to the storage\'s nodes or copy the template to {2}'.format(
                _describe(reach), ', '.join(repr(s) for s in reach['storages']), node,
                ', '.join(sorted(reach['nodes'] or []))))


def clone_route(reaches_list: list[dict[str, t.Any]], node: str,
                prefer_vmid: int | None = None) -> tuple[dict[str, t.Any], str | None]:
    """(copy's reach, target or None) for a linked clone on ``node``; PlacementError when PVE would refuse it.

    ``reaches_list``: :func:`clone_reach` of every copy of the golden template (same name). The copy named by
    vmid (``prefer_vmid``) is used when it can reach ``node``; otherwise the copy on ``node`` itself (no
    ``target``); otherwise a copy on shared storage (``target=node``).
    """
    if not reaches_list:
        raise PlacementError('no golden template to clone')
    ordered = sorted(reaches_list, key=lambda r: (r['vmid'] != prefer_vmid, r['node'] != node, not r['shared'],
                                                  r['vmid']))
    on_node = [r for r in reaches_list if r['node'] == node]
    if len(on_node) > 1:
        raise PlacementError('golden template {0!r} has {1} copies on node {2!r} (vmids {3}): keep one per node'.format(
            on_node[0]['name'], len(on_node), node, sorted(r['vmid'] for r in on_node)))
    for reach in ordered:
        ok, target = reaches(reach, node)
        if ok:
            return reach, target
    first = ordered[0]
    return_msg = refusal(first, node)
    if len(reaches_list) > 1:
        return_msg += ' (none of its copies, vmids {0}, can be cloned to {1})'.format(
            sorted(r['vmid'] for r in reaches_list), node)
    raise PlacementError(return_msg)


# A VM's status in /cluster/resources is what pvestatd recorded (pve-manager PVE/Service/pvestatd.pm
# update_qemu_status: `$d->{qmpstatus} || $d->{status}`), so a VM whose QEMU process runs may be 'paused',
# 'io-error', 'prelaunch', 'postmigrate', 'suspended', ... as well as 'running'. Only these mean no process:
# 'stopped', and 'unknown' (PVE/API2Tools.pm extract_vm_stats: no status recorded, e.g. its node is offline).
NOT_RUNNING = frozenset(('stopped', 'unknown', ''))


def process_runs(status: t.Any) -> bool | None:
    """Does a VM of this /cluster/resources ``status`` have a QEMU process (True), none (False), or is that not
    known from the listing (None: ``unknown`` or missing; ask ``status/current``)?"""
    text = str(status or '')
    if text == 'stopped':
        return False
    return None if text in NOT_RUNNING else True


def node_capacities(node_items: list[dict[str, t.Any]] | None, vm_items: list[dict[str, t.Any]] | None,
                    plan_names: t.Iterable[str] = ()) -> dict[str, dict[str, t.Any]]:
    """{node: {status, hastate, maxmem, committed, maxcpu, cpu}} (memory in MiB) from /cluster/resources items.

    ``committed`` is the node's ``mem`` plus, for every VM whose process runs on it (running, paused, ...), the
    memory it may still grow into (``maxmem - mem``), plus the full ``maxmem`` of stopped VMs named in
    ``plan_names`` (a build starts them). Offline nodes have no usage: they are listed with status ``offline`` and
    never chosen. ``hastate`` is the HA manager's state of the node (None where HA reports none).
    """
    out = {}
    for item in node_items or []:
        if item.get('type', 'node') != 'node':
            continue
        name = item.get('node') or item.get('name')
        out[name] = dict(status=item.get('status') or 'unknown', hastate=item.get('hastate') or None,
                         maxmem=int(item.get('maxmem') or 0) // MiB, committed=int(item.get('mem') or 0) // MiB,
                         maxcpu=int(item.get('maxcpu') or 0), cpu=float(item.get('cpu') or 0))
    names = set(plan_names or ())
    for vm in vm_items or []:
        cap = out.get(vm.get('node'))
        if cap is None or vm.get('type') != 'qemu' or vm.get('template'):
            continue
        if process_runs(vm.get('status')):
            cap['committed'] += max(0, int(vm.get('maxmem') or 0) - int(vm.get('mem') or 0)) // MiB
        elif vm.get('name') in names:
            cap['committed'] += int(vm.get('maxmem') or 0) // MiB
    return out


def unavailable(cap: dict[str, t.Any]) -> str | None:
    """Why no new VM goes to this node (None: it may): not ``online``, or in HA maintenance.

    pve-ha-manager ``NodeStatus.pm``: ``maintenance`` (the CRM moves HA services off it: ``Manager.pm``
    ``next_state_started``). The other HA states of a node that pmxcfs sees online (``unknown``, ``fence``,
    ``gone``) are not trusted: a CRM without HA resources goes idle and stops writing its manager status (``CRM.pm``:
    "do not touch manager state anymore"), so they can be left over from long ago.
    """
    if cap.get('status') != 'online':
        return str(cap.get('status') or 'unknown')
    if cap.get('hastate') == 'maintenance':
        return 'in HA maintenance mode (hastate maintenance: the HA manager is moving guests off it)'
    return None


def shortfall(cap: dict[str, t.Any], memory: int, vcpus: int) -> str | None:
    """Why a node cannot hold a VM of ``memory`` MiB and ``vcpus`` (None when it can)."""
    why = []
    free = cap['maxmem'] - cap['committed']
    if memory and cap['maxmem'] and free < memory:  # maxmem 0: not visible to this user, not checked
        why.append('needs {0} MiB memory, {1} MiB free'.format(memory, max(0, free)))
    # qemu-server QemuServer.pm config_to_command: "MAX n vcpus allowed per VM on this node".
    if vcpus and cap['maxcpu'] and vcpus > cap['maxcpu']:
        why.append('needs {0} vCPUs, the node has {1}'.format(vcpus, cap['maxcpu']))
    return '; '.join(why) or None


def place(requests: list[dict[str, t.Any]], capacities: dict[str, dict[str, t.Any]]) -> dict[str, dict[str, t.Any]]:
    """Place new VMs. Pure and deterministic.

    ``requests`` in order (primaries before the shadow that shadows them), dicts with: ``name``; ``node`` (set for
    a VM that exists, or one given explicitly: kept as it is); ``memory`` (MiB) and ``vcpus``; ``group`` (VMs of
    one group are spread: the primaries of a service); ``listed`` (the template's nodes in this VM's order of
    preference, [] for the default: all online nodes); ``avoid_vms`` (names of VMs whose nodes to keep off: a
    shadow's primaries); ``policy`` (how listed nodes are named in the reason); ``reach`` (nodes a clone can be
    made on, None: any); ``reach_note`` (why, per node that cannot be reached).

    Returns ``{name: {node, reason, warnings, error}}``; ``error`` is set (and ``node`` None) when no node fits
    or the node the listed placement names cannot take a clone.
    """
    caps = dict((n, dict(c)) for n, c in capacities.items())
    online = sorted(n for n, c in caps.items() if unavailable(c) is None)
    where = {}
    groups = {}
    out = {}
    for req in requests:
        name = req['name']
        if req.get('node'):
            where[name] = req['node']
            groups.setdefault(req.get('group'), []).append(req['node'])
            out[name] = dict(node=req['node'], reason=req.get('reason') or 'exists on {0}'.format(req['node']),
                             warnings=[], error=None)
            continue
        res = _place_one(req, caps, online, where, groups)
        out[name] = res
        if res['node']:
            where[name] = res['node']
            groups.setdefault(req.get('group'), []).append(res['node'])
            caps[res['node']]['committed'] += int(req.get('memory') or 0)
    return out


def _place_one(req, caps, online, where, groups):
    name, memory, vcpus = req['name'], int(req.get('memory') or 0), int(req.get('vcpus') or 0)
    listed = list(req.get('listed') or [])
    avoid = set(where[v] for v in req.get('avoid_vms') or [] if v in where)
    reach = req.get('reach')
    notes = dict(req.get('reach_note') or {})
    skipped, warnings = [], []
    if listed:
        candidates = [n for n in listed if n in online]
        skipped += ['{0} {1}'.format(n, unavailable(caps[n]) if n in caps else 'not in the cluster')
                    for n in listed if n not in online]
        held = [n for n in listed if n in caps and caps[n]['status'] == 'online' and n not in online]
    else:
        held = []
        candidates = list(online)
        drained = sorted(n for n, c in caps.items() if c['status'] == 'online' and n not in online)
        if drained:
            skipped.append('; '.join('{0} {1}'.format(n, unavailable(caps[n])) for n in drained))
        if reach is not None:
            away = [n for n in candidates if n not in reach]
            candidates = [n for n in candidates if n in reach]
            if away:
                skipped.append('{0} out of the golden template\'s reach'.format(', '.join(away)))
    if not candidates:
        why = '; '.join(notes.values()) if notes and not listed else ''
        return dict(node=None, reason=None, warnings=[], error='{0}: no online node to place it on{1}{2}'.format(
            name, ' (' + '; '.join(skipped) + ')' if skipped else '', ': ' + why if why else ''))
    fits = dict((n, shortfall(caps[n], memory, vcpus)) for n in candidates)
    count = dict((n, groups.get(req.get('group'), []).count(n)) for n in candidates)
    if listed:
        order = [n for n in candidates if n not in avoid] + [n for n in candidates if n in avoid]
        choice = next((n for n in order if fits[n] is None), None)
        policy = req.get('policy') or 'listed nodes, in this VM\'s order {0}'.format(','.join(listed))
    else:
        def score(n):
            return (n in avoid, count[n], -(caps[n]['maxmem'] - caps[n]['committed']), caps[n]['cpu'], n)
        order = sorted(candidates, key=score)
        choice = next((n for n in order if fits[n] is None), None)
        policy = 'default placement over the online nodes'
    short = ['{0}: {1}'.format(n, fits[n]) for n in order if fits[n]]
    if choice is None:
        return dict(node=None, reason=None, warnings=[], error='{0}: no node can hold it ({1})'.format(
            name, '; '.join(short)))
    if listed and reach is not None and choice not in reach:
        return dict(node=None, reason=None, warnings=[], error=notes.get(choice) or
                    '{0}: the golden template cannot be cloned to {1}'.format(name, choice))
    for n in held:
        if listed.index(n) < listed.index(choice):  # a node the listed order would have taken first
            warnings.append('listed node {0} is {1}: {2} placed on {3} instead'.format(
                n, unavailable(caps[n]), name, choice))
    if listed and fits[order[0]] is not None:
        warnings.append('listed node {0} cannot hold {1} ({2}); placed on {3} instead'.format(
            order[0], name, fits[order[0]], choice))
    if choice in avoid:
        sharing = ', '.join(v for v in req.get('avoid_vms') or [] if where.get(v) == choice)
        where_else = ' of its nodes' if listed else (" in the golden template's reach" if reach is not None else '')
        warnings.append('{0} shares node {1} with a VM it must keep off ({2}): no other online node{3} can hold '
                        'it'.format(name, choice, sharing, where_else))
    free = caps[choice]['maxmem'] - caps[choice]['committed'] - memory
    parts = [policy]
    if avoid:
        parts.append('off {0} (nodes of {1})'.format(','.join(sorted(avoid)), ', '.join(req.get('avoid_vms'))))
    if not listed:
        group = req.get('group_label') or 'VMs of its group'
        parts.append('fewest {0} there ({1}), then most free memory'.format(group, count[choice]))
    parts.append('{0} MiB free after it'.format(free))
    if short:
        parts.append('skipped ' + '; '.join(short))
    if skipped:
        parts.append('skipped ' + '; '.join(skipped))
    return dict(node=choice, reason='{0}: {1}'.format(choice, ', '.join(parts)), warnings=warnings, error=None)

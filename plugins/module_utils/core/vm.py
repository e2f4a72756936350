# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The linked-clone engine: find a VM by name, clone it from a golden template, converge it, destroy it.

Used by the ``linked_clone`` module, by ``scale`` (horizontal scaling adds and removes instances through the
very same code) and by ``failover`` (resize). Identity is the VM name plus, where given, the collection's tags;
a VM is never guessed: two VMs with the same name are an error, a template is never modified.
"""


import re
import threading
from concurrent.futures import ThreadPoolExecutor

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import clone
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import placement as placement_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import readback
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApiError, PveTaskError

# Tag prefixes that other modules of this collection write and a build must keep.
OWNED_ELSEWHERE = ('sn-last.',)
# Clones running at once per storage lock. qemu-server clone_vm locks a template shared and the new vmid fully, so
# clones of one template may run concurrently; but pve-storage vdisk_clone runs each disk's clone_image under
# cluster_lock_storage (cluster-wide for shared storage: pve-cluster cfs_lock_storage; per node for local storage),
# and a clone that waits for it over 10 s fails ("got lock request timeout"). A few waiters keep that lock busy.
CLONE_LOCK_SLOTS = 4
# A clone that lost the race for that lock (PVE removed what it had made: clone_vm's error path) is tried again.
CLONE_LOCK_RETRIES = 2
STORAGE_LOCK_TIMEOUT = re.compile(r"qmclone .*(cfs-lock 'storage-[^']+' error: got lock request timeout|"
                                  r"can't lock file '[^']*pve-storage-[^']*' - got timeout)")

# qemu-server API2/Qemu.pm $check_vm_modify_config_perm: `return 1 if $authuser eq 'root@pam'`, else
# `die "only root can set '$opt' config"` for the keys no privilege covers: hookscript among them, for every API token
# (root@pam's too). They go in their own update after the rest (update_root_only), so the rest converges.
ROOT_ONLY_KEYS = ('hookscript',)
ROOT_ONLY_REASON = ('PVE lets only root@pam itself (a password login, not an API token) set or delete it (qemu-server '
                    'API2/Qemu.pm $check_vm_modify_config_perm)')


class VmSpec(object):
    """What a managed VM should look like. ``None`` means: not managed, leave as it is."""

    def __init__(self, name, template=None, node=None, pool=None, cores=None, memory=None, nets=None, tags=None,
                 description=None, meta=None, hookscript=None, state='present', timeout=900, full=False,
                 shutdown_timeout=0):
        self.name = name
        self.template = template
        self.node = node
        self.pool = pool
        self.cores = cores
        self.memory = memory
        self.nets = nets  # list of dicts, position = netN index; None entries are left alone
        self.tags = set(tags) if tags is not None else None
        self.description = description
        self.meta = meta
        self.hookscript = hookscript
        self.state = state
        self.timeout = timeout
        # Seconds the guest gets to shut down before PVE stops it (state stopped/absent); 0: stop at once.
        self.shutdown_timeout = shutdown_timeout
        self.full = full
        # Placement when node is None (placement.place): the template's nodes in this VM's order (empty: every
        # online node, by free capacity), keeping off the nodes of the VMs named in avoid_vms (a shadow's
        # primaries, where they actually are). avoid_nodes is the plan's expectation of those nodes (informative).
        self.preferred_nodes = []
        self.avoid_nodes = []
        self.avoid_vms = []
        # Set by resolve_placements before any write: node, reason, warnings, and the clone route
        # (source: the template copy's node and vmid; target: the `target` parameter or None).
        self.placement = None
        # Without node or preferred_nodes: 'template' puts a single VM on its golden template's node (the
        # linked_clone module's documented default); 'plan' spreads by capacity over the online nodes.
        self.default_placement = 'template'
        # A vmid reserved for this VM by ensure_many, so concurrent clones never race for /cluster/nextid.
        self.vmid_hint = None


def shutdown_timeout_problem(value):
    """What is wrong with a ``shutdown_timeout`` option (None: nothing)."""
    if value is not None and value < 0:
        return 'shutdown_timeout must be 0 (stop at once) or more seconds (got {0})'.format(value)
    return None


def spec_from_plan(vm, state='present', hookscript=None, timeout=900, shutdown_timeout=0):
    """A VmSpec from one ``vms`` entry of a plan (docs/plan.md)."""
    golden = vm.get('golden') or {}
    template = golden.get('vmid') if golden.get('vmid') is not None else golden.get('name')
    nets = []
    for nic in sorted(vm.get('nics') or [], key=lambda n: n['index']):
        while len(nets) < nic['index']:
            nets.append(None)
        net = dict(bridge=nic['bridge'], model=nic.get('model') or 'virtio', link_down=False)
        if nic.get('vlan') is not None:
            net['tag'] = int(nic['vlan'])
        nets.append(net)
    spec = VmSpec(vm['name'], template=template, pool=vm.get('pool'), cores=vm.get('cores'),
                  memory=vm.get('memory'), nets=nets, tags=vm.get('tags'), meta=vm.get('meta'),
                  hookscript=hookscript if vm.get('role') == 'primary' else None, state=state, timeout=timeout,
                  shutdown_timeout=shutdown_timeout)
    spec.preferred_nodes = list(vm.get('preferred_nodes') or ([vm['node']] if vm.get('node') else []))
    spec.avoid_nodes = list(vm.get('avoid_nodes') or [])
    spec.avoid_vms = list(vm.get('shadows') or [])
    spec.default_placement = 'plan'
    return spec


def prune_candidates(resources, plan, roles):
    """Managed VMs of this plan's template that the plan no longer wants.

    A primary named like its service's instances with an index up to ``instances.max`` is kept: the scaling
    module adds those, and a build must not undo a scale-out. VMs of removed services, surplus shadows and
    instances beyond ``max`` go.
    """
    wanted = set(v['name'] for v in plan.get('vms') or [])
    common = set(plan.get('common_tags') or ['shadownet', 'sn-' + plan['template']])
    prefixes = dict((s['name_prefix'], s['instances']['max']) for s in plan.get('scaling') or [])
    out = []
    for res in resources:
        if res.get('type') != 'qemu' or res.get('template') or res.get('name') in wanted or not res.get('name'):
            continue        # nameless: a VM of a node down for 5 minutes (PVE forgot its name); never pruned blind
        tags = propstr.parse_tags(res.get('tags'))
        if not common <= tags:
            continue
        role = 'shadow' if 'sn-shadow' in tags else 'primary'
        if role not in roles:
            continue
        keep = False
        for prefix, top in prefixes.items():
            found = re.match(re.escape(prefix) + r'(\d+)$', res.get('name', ''))
            if role == 'primary' and found and int(found.group(1)) <= top:
                keep = True
        if not keep:
            out.append(res)
    return sorted(out, key=lambda r: r['name'])


def unnamed_twins(resources, tags, nodes=None):
    """The qemu entries PVE lists without a name that carry every one of ``tags`` (none without tags); with
    ``nodes`` ({node: status}), only those on a node that is not online.

    pmxcfs drops a VM's name and status from /cluster/resources 5 minutes after its node stopped sending them (the
    config's ``tags`` stay: pve-manager Cluster.pm reads them from the config), so a VM on a node down that long is not
    found by its name; PveApi.resources completes names only on online nodes."""
    want = set(t.lower() for t in tags or [])
    if not want:
        return []
    return [r for r in resources if r.get('type') == 'qemu' and not r.get('name')
            and (nodes is None or nodes.get(r.get('node')) != 'online')
            and want <= set(t.lower() for t in propstr.parse_tags(r.get('tags') or ''))]


def find_vms(resources, name):
    """Non-template VMs named ``name`` in a /cluster/resources listing."""
    return [r for r in resources if r.get('type') == 'qemu' and r.get('name') == name and not r.get('template')]


def template_copies(resources, ref):
    """(copies, preferred vmid) of a golden template: by vmid (int or digit string) or by name.

    The copies are every template of that name (one per node, when the template is copied to each node instead
    of living on shared storage); a template named by vmid is preferred where it can be cloned. Errors say what
    was found instead.
    """
    if ref is None:
        raise PveApiError('template is required to create a VM', kind='config')
    qemu = [r for r in resources if r.get('type') == 'qemu']
    if isinstance(ref, int) or str(ref).isdigit():
        matches = [r for r in qemu if int(r.get('vmid', -1)) == int(ref)]
        if not matches:
            raise PveApiError('golden template {0!r} not found in the cluster'.format(ref), kind='notfound')
        found = matches[0]
        if not found.get('template'):
            raise PveApiError('source {0!r} (vmid {1}) is a VM, not a template: convert it with `qm template {1}` or '
                              'name a golden template'.format(ref, found['vmid']), kind='config')
        copies = [found] + [r for r in qemu if r.get('template') and found.get('name') and r.get('name') ==
                            found['name'] and int(r['vmid']) != int(found['vmid'])]
        return copies, int(found['vmid'])
    copies = [r for r in qemu if r.get('name') == ref and r.get('template')]
    if not copies:
        others = [r for r in qemu if r.get('name') == ref]
        if len(others) == 1:
            raise PveApiError('source {0!r} (vmid {1}) is a VM, not a template: convert it with `qm template {1}` or '
                              'name a golden template'.format(ref, others[0]['vmid']), kind='config')
        if others:
            raise PveApiError('template name {0!r} is ambiguous: vmids {1}, none a template; give the vmid'.format(
                ref, sorted(m['vmid'] for m in others)), kind='config')
        raise PveApiError('golden template {0!r} not found in the cluster'.format(ref), kind='notfound')
    return sorted(copies, key=lambda r: int(r['vmid'])), None


def find_template(resources, ref):
    """The golden template by vmid or name (the lowest vmid of same-named copies)."""
    copies, prefer = template_copies(resources, ref)
    return copies[0]


def _group_label(spec):
    meta = spec.meta or {}
    if meta.get('service'):
        return '{0} {1}s'.format(meta['service'], meta.get('role') or 'VM')
    return None


def resolve_placements(api, specs, resources, context=()):
    """Place every VM of ``specs`` that does not exist yet, and route its clone; before any write.

    ``context``: the other VMs of the same plan (not ensured in this call), placed first where they are missing, so
    a shadow keeps off where its primaries will be and capacity counts them. Only when some VM is missing, reads the
    node capacities (``/cluster/resources`` type node), ``/storage`` and the golden templates' configs, hands them to
    the pure :func:`placement.place` and :func:`placement.clone_route`, and sets ``spec.placement``. Raises
    PveApiError naming every VM that no node can hold and every clone PVE would refuse.
    """
    ordered = list(context) + [s for s in specs if not any(s is c for c in context)]
    missing = [s for s in ordered if s.state != 'absent' and not find_vms(resources, s.name)]
    if not any(m is s for m in missing for s in specs):
        return
    storages = placement_utils.storage_table(api.get('storage'))
    caps = placement_utils.node_capacities(api.resources('node'), resources, plan_names=[s.name for s in ordered])
    known = sorted(caps)
    templates = {}

    def copies_of(ref):
        if str(ref) not in templates:
            copies, prefer = template_copies(resources, ref)
            reaches, configs, down = [], {}, []
            for copy in copies:
                try:
                    cfg, dummy = api.vm_config(copy['node'], copy['vmid'])
                except PveApiError as exc:
                    if exc.kind != 'offline':
                        raise
                    down.append('golden template {0!r} (vmid {1}): node {2!r} is offline'.format(
                        copy.get('name'), copy['vmid'], copy['node']))
                    continue
                configs[int(copy['vmid'])] = cfg
                reaches.append(placement_utils.clone_reach(copy, cfg, storages))
            if not reaches:
                raise PveApiError('; '.join(down), kind='offline', node=copies[0]['node'])
            templates[str(ref)] = (reaches, prefer, configs, down)
        return templates[str(ref)]

    def route(spec, node):
        reaches, prefer, dummy, down = copies_of(spec.template)
        try:
            return placement_utils.clone_route(reaches, node, prefer)
        except placement_utils.PlacementError as exc:
            raise PveApiError('{0}: {1}{2}'.format(spec.name, exc, ''.join('; ' + d for d in down)), kind='config',
                              node=node)

    groups = [frozenset(s.tags) for s in missing if s.tags]
    avoided = set(v for s in missing for v in s.avoid_vms)
    requests = []
    for res in resources:
        if res.get('type') != 'qemu' or res.get('template'):
            continue
        tags = propstr.parse_tags(res.get('tags'))
        group = next((g for g in groups if g <= tags), None)
        if group is not None or res.get('name') in avoided:
            requests.append(dict(name=res['name'], node=res['node'], group=group))
    for spec in missing:
        reaches, prefer, configs, dummy = copies_of(spec.template)
        cfg = configs.get(prefer) or configs[min(configs)]
        vcpus = int(spec.cores or cfg.get('cores') or 1) * int(cfg.get('sockets') or 1)
        memory = int(spec.memory) if spec.memory is not None else propstr.parse_memory(cfg.get('memory', 512))
        reach, notes = set(), {}
        for node in known:
            try:
                route(spec, node)
                reach.add(node)
            except PveApiError as exc:
                notes[node] = exc.message
        listed, policy = list(spec.preferred_nodes), None
        if not listed and not spec.node and spec.default_placement == 'template':
            # A single VM without node or plan: on the golden template's node (the copy named, else by vmid).
            listed = [r['node'] for r in sorted(reaches, key=lambda r: (r['vmid'] != prefer, r['vmid']))]
            policy = "the golden template's node"
        requests.append(dict(name=spec.name, node=spec.node, reason='node given' if spec.node else None,
                             memory=memory, vcpus=vcpus, group=frozenset(spec.tags) if spec.tags else None,
                             group_label=_group_label(spec), listed=listed, policy=policy,
                             avoid_vms=list(spec.avoid_vms),
                             reach=reach, reach_note=notes, _spec=spec, _cap=(memory, vcpus)))
    placed = placement_utils.place([dict((k, v) for k, v in r.items() if not k.startswith('_')) for r in requests], caps)
    errors = []
    for req in requests:
        spec = req.get('_spec')
        if spec is None:
            continue
        res = placed[spec.name]
        if res['error']:
            errors.append(res['error'])
            continue
        warnings = list(res['warnings'])
        if spec.node and spec.node in caps:
            short = placement_utils.shortfall(caps[spec.node], *req['_cap'])
            if short:
                warnings.append('node {0} may not hold {1}: {2}'.format(spec.node, spec.name, short))
            why = placement_utils.unavailable(caps[spec.node])
            if why and caps[spec.node]['status'] == 'online':
                warnings.append('node {0} given for {1} is {2}'.format(spec.node, spec.name, why))
        try:
            source, target = route(spec, res['node'])
        except PveApiError as exc:
            errors.append(exc.message)
            continue
        spec.placement = dict(node=res['node'], reason=res['reason'], warnings=warnings, source_node=source['node'],
                              source_vmid=source['vmid'], target=target, clone_locks=clone_lock_ids(source, storages))
    if errors:
        raise PveApiError('cannot place {0} VM(s); nothing was changed:\n{1}'.format(
            len(errors), '\n'.join('- ' + e for e in errors)), kind='placement')


def clone_lock_ids(source, storages):
    """The storage locks a linked clone of ``source`` (a :func:`placement.clone_reach`) takes, as PVE names them.

    pve-storage Plugin.pm cluster_lock_storage: ``storage-<sid>`` in pmxcfs for a shared storage (one cluster-wide
    lock), ``/var/lock/pve-manager/pve-storage-<sid>`` on the node that runs the clone (the source's) otherwise.
    """
    out = set()
    for sid in source.get('storages') or []:
        if (storages.get(sid) or {}).get('shared'):
            out.add('storage-{0}'.format(sid))
        else:
            out.add('{0}:pve-storage-{1}'.format(source['node'], sid))
    return sorted(out)


def desired_config_changes(spec, cfg):
    """(changes, deletes) that bring ``cfg`` to ``spec``: pure; compares property strings as structures."""
    changes, deletes = {}, []
    # A shadow that has taken over (failover grew it to a primary's size) keeps its size until fail-back:
    # a build running meanwhile must not shrink the standby that is serving.
    dummy, current_meta = meta_utils.parse_description(cfg.get('description', ''))
    serving = bool(((current_meta or {}).get('failover') or {}).get('active'))
    if not serving and spec.cores is not None and int(cfg.get('cores', 1)) != int(spec.cores):
        changes['cores'] = int(spec.cores)
    if not serving and spec.memory is not None and propstr.parse_memory(cfg.get('memory', 512)) != int(spec.memory):
        changes['memory'] = int(spec.memory)
        balloon = cfg.get('balloon')
        if balloon not in (None, '') and int(balloon) > int(spec.memory):
            # qemu-server API2/Qemu.pm update_vm_api: "balloon value too large (must be smaller than assigned
            # memory)"; clone_vm copied the template's balloon
            changes['balloon'] = int(spec.memory)
    for index, want in enumerate(spec.nets or []):
        if want is None:
            continue
        key = 'net{0}'.format(index)
        desired = dict((k, v) for k, v in want.items() if k != 'index')
        desired.setdefault('model', 'virtio')
        if 'tag' not in desired:
            desired['tag'] = None  # a VLAN tag must not linger when none is asked for
        if key not in cfg:
            changes[key] = propstr.format_net(propstr.merge_net({}, desired))
            continue
        current = propstr.parse_net(cfg[key])
        if propstr.net_differs(current, desired):
            changes[key] = propstr.format_net(propstr.merge_net(current, desired))
    if spec.nets is not None:
        for key in sorted(k for k in cfg if k.startswith('net') and k[3:].isdigit()):
            if int(key[3:]) >= len(spec.nets):
                deletes.append(key)
    if spec.tags is not None:
        current = propstr.parse_tags(cfg.get('tags'))
        # Tags other writers of this collection own (the scaling module's sn-last.<action>.<time>) are kept.
        kept = set(t for t in current if t.startswith(OWNED_ELSEWHERE))
        if readback.differs('tags', current - kept, spec.tags):
            changes['tags'] = propstr.format_tags(spec.tags | kept)
    description = cfg.get('description', '')
    if spec.meta is not None:
        new_description, dummy, differs = meta_utils.merge_description(description, spec.meta)
        if differs:
            changes['description'] = new_description
    elif spec.description is not None and readback.differs('description', description, spec.description):
        changes['description'] = readback.stored('description', spec.description)
    if spec.hookscript is not None:
        if spec.hookscript == '' and 'hookscript' in cfg:
            deletes.append('hookscript')
        elif spec.hookscript and cfg.get('hookscript') != spec.hookscript:
            changes['hookscript'] = spec.hookscript
    return changes, deletes


def split_root_only(changes, deletes):
    """((changes, deletes) any user with the privileges may make, (changes, deletes) only root@pam may make)."""
    return ((dict((k, v) for k, v in changes.items() if k not in ROOT_ONLY_KEYS),
             [k for k in deletes if k not in ROOT_ONLY_KEYS]),
            (dict((k, v) for k, v in changes.items() if k in ROOT_ONLY_KEYS),
             [k for k in deletes if k in ROOT_ONLY_KEYS]))


def root_only_warning(what, node, vmid, changes, deletes, reason, consequence=''):
    """The warning for root-only keys left as they were: what, why, and how to set them."""
    left = ['{0} not set to {1}'.format(k, v) for k, v in sorted(changes.items())] + \
        ['{0} not removed'.format(k) for k in sorted(deletes)]
    fix = ' '.join(['--{0} {1}'.format(k, v) for k, v in sorted(changes.items())]
                   + ['--delete {0}'.format(','.join(sorted(deletes)))] * bool(deletes))
    return ('{0} (vmid {1}): {2}: {3}; everything else was configured.{4} Set it as root on a node of the cluster: '
            '`qm set {1} {5}` (on {6}), or run as root@pam with api_password instead of an API token'.format(
                what, vmid, ', '.join(left), reason, (' ' + consequence) if consequence else '', fix, node))


def update_root_only(api, node, vmid, compute, what, check_mode=False, consequence=''):
    """Make ``compute``'s changes of :data:`ROOT_ONLY_KEYS` in their own digest-checked update, after the rest.

    PVE refuses them to anyone but root@pam itself (qemu-server API2/Qemu.pm $check_vm_modify_config_perm, API
    tokens included): for another user nothing is sent, and the returned warning names the keys and the fix (in
    check mode too). Returns ``(changes, deletes, warning)``: what was (or, in check mode, would be) changed, and
    None or the warning.
    """
    if check_mode or not api.is_root:
        dummy, changes, deletes = api.update_vm_config(node, vmid, compute, check_mode=True)
        warning = None
        if (changes or deletes) and not api.is_root:
            warning = root_only_warning(what, node, vmid, changes, deletes, ROOT_ONLY_REASON, consequence)
        # Another user's run never sends them: its check mode reports no change either (a second run stays
        # changed=0, as the real one), only the warning.
        return (changes, deletes, warning) if check_mode and api.is_root else ({}, [], warning)
    try:
        dummy, changes, deletes = api.update_vm_config(node, vmid, compute)
    except PveApiError as exc:
        if exc.kind != 'root_only':
            raise
        dummy, changes, deletes = api.update_vm_config(node, vmid, compute, check_mode=True)
        return {}, [], root_only_warning(what, node, vmid, changes, deletes, exc.message, consequence)
    return changes, deletes, None


def managed_view(cfg, spec):
    """The part of a config this spec manages, for before/after diffs."""
    view = {}
    if spec.cores is not None:
        view['cores'] = int(cfg.get('cores', 1))
    if spec.memory is not None:
        view['memory'] = propstr.parse_memory(cfg.get('memory', 512))
    if spec.nets is not None:
        for key in sorted(k for k in cfg if k.startswith('net') and k[3:].isdigit()):
            view[key] = cfg[key]
    if spec.tags is not None:
        view['tags'] = sorted(propstr.parse_tags(cfg.get('tags')))
    if spec.meta is not None or spec.description is not None:
        view['description'] = cfg.get('description', '')
    if spec.hookscript is not None:
        view['hookscript'] = cfg.get('hookscript', '')
    return view


class VmEngine(object):
    """Ensure-present / ensure-absent for linked clones, with check mode and a diff."""

    def __init__(self, api, check_mode=False, resources=None, nodes=None):
        self.api = api
        self.check_mode = check_mode
        self._resources = resources
        self._nodes = nodes

    def nodes(self):
        if self._nodes is None:
            self._nodes = self.api.nodes()
        return self._nodes

    def resources(self, refresh=False):
        if self._resources is None or refresh:
            self._resources = self.api.resources('vm')
        return self._resources

    def lookup(self, name, refresh=False):
        found = find_vms(self.resources(refresh), name)
        if len(found) > 1:
            raise PveApiError('{0} VMs are named {1!r} (vmids {2}): rename or remove the extra ones; this module '
                              'never guesses which one it manages'.format(len(found), name,
                                                                          sorted(f['vmid'] for f in found)),
                              kind='config')
        return found[0] if found else None

    # ------------------------------------------------------------ present

    def ensure(self, spec):
        result = dict(changed=False, created=False, name=spec.name, vmid=None, node=None, pending=[],
                      diff=dict(before={}, after={}), warnings=[])
        if spec.state == 'absent':
            return self.ensure_absent(spec, result)
        current = self.lookup(spec.name)
        if current is None:
            if not self.check_mode:
                self.api.require_quorum()
            current = self._create(spec, result)
            if current is None:  # check mode: describe what would be built
                root_changes = split_root_only(*desired_config_changes(spec, {}))[1][0]
                if root_changes and not self.api.is_root:
                    result['warnings'].append(root_only_warning(spec.name, result['node'], '<vmid>', root_changes,
                                                                [], ROOT_ONLY_REASON))
                result['diff']['after'] = dict(name=spec.name, template=spec.template, node=result['node'],
                                               cores=spec.cores, memory=spec.memory,
                                               nets=[propstr.format_net(n) for n in (spec.nets or []) if n],
                                               tags=sorted(spec.tags or []))
                return result
        result['vmid'] = int(current['vmid'])
        result['node'] = current['node']
        self._converge(spec, current, result)
        self._power(spec, current, result)
        return result

    def _create(self, spec, result):
        # Cloning a VM that is one of these again would make a second VM of that name once its node is back.
        twins = unnamed_twins(self.resources(), spec.tags)
        if twins:
            raise PveApiError('{0!r} is not listed, but PVE lists {1} VM(s) without a name on a node that does not '
                              'answer ({2}) with all of its tags: it may be one of them (PVE forgets the names of a '
                              'node\'s VMs 5 minutes after the node went down). Not cloned, so that no second {0!r} '
                              'appears when the node is back: bring the node back, or remove that VM, then run '
                              'again'.format(spec.name, len(twins), ', '.join('vmid {0} on {1}'.format(
                                  r.get('vmid'), r.get('node')) for r in twins)), kind='offline')
        if spec.placement is None:
            resolve_placements(self.api, [spec], self.resources())
        where = spec.placement
        node = where['node']
        nodes = self.nodes()
        if node not in nodes:
            raise PveApiError('node {0!r} is not in the cluster (nodes: {1})'.format(node, ', '.join(sorted(nodes))),
                              kind='config', node=node)
        if nodes[node] != 'online':
            raise PveApiError('node {0!r} is {1}: cannot place {2!r} there; choose an online node'.format(
                node, nodes[node], spec.name), kind='offline', node=node)
        result['changed'] = True
        result['created'] = True
        result['placement'] = where['reason']
        result['warnings'].extend(where['warnings'])
        if self.check_mode:
            result['node'] = node
            return None
        params = dict(full=1 if spec.full else 0, target=where['target'] or None, pool=spec.pool or None)
        made, warnings = clone.clone_vm(self.api, where['source_node'], where['source_vmid'], spec.name,
                                        vmid=spec.vmid_hint, timeout=spec.timeout, params=params)
        result['warnings'].extend(warnings)
        found = self.lookup(spec.name, refresh=True)
        if found is None and made is not None and made.get('name') == spec.name:
            found = made        # the listing may still show pvestatd's "VM <vmid>"; clone_vm read the VM itself
        if found is None:
            raise PveApiError('the clone of {0!r} finished but no VM of that name is listed'.format(spec.name))
        return found

    def _converge(self, spec, current, result):
        node, vmid = current['node'], current['vmid']
        state = {}

        def compute(cfg):
            if cfg.get('template'):
                raise PveApiError('{0!r} (vmid {1}) is a template; templates are never modified'.format(
                    spec.name, vmid), kind='config')
            state['before'] = cfg
            return split_root_only(*desired_config_changes(spec, cfg))[0]

        before, changes, deletes = self.api.update_vm_config(node, vmid, compute, check_mode=self.check_mode)
        after = dict(before)
        after.update(changes)
        for key in deletes:
            after.pop(key, None)
        # hookscript: its own update, after the rest; refused to an API token, which leaves a warning, not a failure
        if any(split_root_only(*desired_config_changes(spec, after))[1]):
            root_changes, root_deletes, warning = update_root_only(
                self.api, node, vmid, lambda cfg: split_root_only(*desired_config_changes(spec, cfg))[1],
                spec.name, check_mode=self.check_mode)
            if warning:
                result['warnings'].append(warning)
            after.update(root_changes)
            for key in root_deletes:
                after.pop(key, None)
            changes, deletes = dict(changes, **root_changes), list(deletes) + list(root_deletes)
        result['diff']['before'] = managed_view(before, spec)
        result['diff']['after'] = managed_view(after, spec)
        if result.get('created') and readback.is_true(before.get('protection', 0)):
            # qemu-server clone_vm copies every key it does not skip, protection included: PVE will refuse to
            # destroy this VM (prune, scale-in, state=absent) as it refuses the template.
            result['warnings'].append(
                '{0} (vmid {1}) inherited protection from its golden template: PVE refuses to destroy it until '
                '`qm set {1} --protection 0`; remove protection from the template to make unprotected '
                'clones'.format(spec.name, vmid))
        if changes or deletes:
            result['changed'] = True
            result['changes'] = sorted(list(changes) + list(deletes))
            if not self.check_mode and placement_utils.process_runs(self.api.vm_status(node, vmid)
                                                                    or current.get('status')):
                result['pending'] = sorted(self.api.vm_pending(node, vmid))
                if result['pending']:
                    result['warnings'].append('{0} pending until the VM restarts (PVE does not hot-plug them here): '
                                              'needs a reboot'.format(', '.join(result['pending'])))

    def _power(self, spec, current, result):
        node, vmid = current['node'], current['vmid']
        status = current.get('status')
        if spec.state in ('started', 'stopped'):
            # /cluster/resources shows the status pvestatd broadcast up to 10 s ago (PVE/API2Tools.pm
            # extract_vm_stats): a VM started or stopped just before may still be listed as it was. Ask the VM.
            status = self.api.vm_status(node, vmid) or status
        runs = placement_utils.process_runs(status)
        if spec.state == 'started' and status != 'running' and runs:
            # paused, io-error, prelaunch, ... (/cluster/resources shows the QMP status): the process runs, so
            # qemu-server vm_start would refuse it ("already running"); resuming is an operator's decision
            result['warnings'].append('{0} (vmid {1}) is {2}, not running: not started again; `qm resume {1}` '
                                      'continues a paused VM'.format(spec.name, vmid, status))
        elif spec.state == 'started' and status != 'running':
            result['changed'] = True
            if not self.check_mode:
                self.api.require_quorum()
                task = self.api.start_vm(node, vmid, timeout=spec.timeout, name=spec.name)
                result['warnings'].extend(task['warnings'])
        elif spec.state == 'stopped' and runs:
            result['changed'] = True
            if not self.check_mode:
                task = self.api.stop_vm(node, vmid, name=spec.name, timeout=spec.timeout,
                                        shutdown_timeout=spec.shutdown_timeout)
                result['warnings'].extend(task['warnings'])

    # ------------------------------------------------------------- absent

    def ensure_absent(self, spec, result):
        current = self.lookup(spec.name)
        if current is None:
            return result
        node, vmid = current['node'], current['vmid']
        # qemu-server destroy_vm refuses a protected VM (PVE::QemuConfig check_protection: "can't remove VM <vmid> -
        # protection mode enabled"), and it would refuse only after the stop: read it first, before any write.
        try:
            cfg, dummy = self.api.vm_config(node, vmid)
        except PveApiError as exc:
            if not self.check_mode or exc.kind != 'offline':
                raise
            cfg = {}            # check mode on a node that does not answer: report, as before; the run would fail
            result['warnings'].append('{0!r} is on node {1}, which does not answer: removing it will fail until '
                                      'the node is back'.format(spec.name, node))
        if readback.is_true(cfg.get('protection', 0)):
            raise PveApiError('{0!r} (vmid {1} on {2}) has protection enabled: PVE refuses to destroy it (qemu-server '
                              'destroy_vm: "can\'t remove VM {1} - protection mode enabled"); nothing was changed. '
                              'If it should go, run `qm set {1} --protection 0` and run again'.format(
                                  spec.name, vmid, node), kind='config', node=node)
        result.update(changed=True, vmid=int(vmid), node=node)
        result['diff'] = dict(before=dict(name=spec.name, vmid=int(vmid), node=node), after={})
        if self.check_mode:
            return result
        self.api.require_quorum()
        # The listing's status may be 10 s old (pvestatd) or 'unknown': ask the VM itself.
        runs = placement_utils.process_runs(self.api.vm_status(node, vmid) or current.get('status'))
        if runs or runs is None:
            # Any VM whose process runs (running, paused, io-error, ...): destroy_vm refuses it ("VM <vmid> is
            # running - destroy failed"). An HA resource's stop only asks the HA manager; stop_vm waits until it is
            # off, then purge takes it out of HA and out of the rules that name it.
            task = self.api.stop_vm(node, vmid, name=spec.name, timeout=spec.timeout,
                                    shutdown_timeout=spec.shutdown_timeout)
            result['warnings'].extend(task['warnings'])
        task = self.api.run_task('DELETE', 'nodes/{0}/qemu/{1}'.format(node, vmid),
                                 {'purge': 1, 'destroy-unreferenced-disks': 1}, timeout=spec.timeout)
        # destroy_vm logs a disk it could not free with log_warn and the task ends WARNINGS: the VM is gone, the
        # disk is not ("Could not remove disk '<volid>', check manually").
        result['warnings'].extend('destroy of vmid {0}: {1}'.format(vmid, w) for w in task['warnings'])
        self._resources = None
        return result


class _Scheduler(object):
    """Hands the specs of :func:`ensure_many` to its workers in order, skipping a spec while one of its clone's
    storage locks has ``slots`` clones running (the next spec whose locks are free goes first)."""

    def __init__(self, specs, slots):
        self.pending = list(enumerate(specs))
        self.slots = slots
        self.busy = {}
        self.cond = threading.Condition()

    @staticmethod
    def locks(spec):
        return list((spec.placement or {}).get('clone_locks') or []) if spec.vmid_hint else []

    def take(self):
        with self.cond:
            while self.pending:
                for pos, (index, spec) in enumerate(self.pending):
                    locks = self.locks(spec)
                    if all(self.busy.get(lock, 0) < self.slots for lock in locks):
                        del self.pending[pos]
                        for lock in locks:
                            self.busy[lock] = self.busy.get(lock, 0) + 1
                        return index, spec
                self.cond.wait()
            return None

    def done(self, spec):
        with self.cond:
            for lock in self.locks(spec):
                self.busy[lock] -= 1
            self.cond.notify_all()


def ensure_many(make_api, specs, check_mode=False, parallel=4, resources=None, nodes=None,
                context=()):
    """Ensure several VMs, cloning independent ones concurrently (one API connection per worker).

    Returns one result per spec, in order. A failure of one VM does not stop the others; its result carries
    ``failed`` and ``msg``. ``resources`` / ``nodes``: listings to reuse in check mode (a real run always reads
    them afresh). ``context``: specs of the plan's other VMs, placed (not created) with these, see
    :func:`resolve_placements`; placement and clone routes are decided for all before the first write, so primaries
    and shadows can be ensured in one call.

    ``parallel`` workers clone and converge; at most :data:`CLONE_LOCK_SLOTS` clones share one storage lock at a
    time (:func:`clone_lock_ids`), and the next VM whose locks are free goes first; a clone that PVE failed for
    waiting too long for that lock is tried again (:data:`CLONE_LOCK_RETRIES`). A VM's start (or stop) is handed
    to another ``parallel`` workers as soon as it is converged (qemu-server vm_start locks only that VM), so starts
    never hold up the next clones.
    """
    local = threading.local()

    def api():
        if getattr(local, 'api', None) is None:
            local.api = make_api()
        return local.api

    if resources is None or not check_mode:
        resources = api().resources('vm')
    if not check_mode:
        nodes = None
    missing = [spec for spec in specs if spec.state != 'absent' and not find_vms(resources, spec.name)]
    if missing:
        resolve_placements(api(), specs, resources, context=context)
    if missing and not check_mode:
        # Reserve distinct vmids up front: /cluster/nextid gives every concurrent caller the same answer.
        used = set(int(r['vmid']) for r in api().resources() if r.get('vmid') is not None)
        candidate = api().next_vmid()
        for spec in missing:
            while candidate in used:
                candidate += 1
            spec.vmid_hint = candidate
            used.add(candidate)

    def engine(cls=VmEngine):
        return cls(api(), check_mode=check_mode, resources=list(resources),
                   nodes=dict(nodes) if nodes is not None else None)

    def ensure(spec, cls=VmEngine, index=None):
        for attempt in range(CLONE_LOCK_RETRIES + 1):
            eng = engine(cls)
            eng.index = index
            try:
                return eng.ensure(spec)
            except PveTaskError as exc:
                if attempt == CLONE_LOCK_RETRIES or not STORAGE_LOCK_TIMEOUT.search(exc.message):
                    raise

    def failure(spec, exc):
        info = exc.as_dict()
        info.update(failed=True, name=spec.name, changed=False)
        return info

    if parallel <= 1 or len(specs) <= 1:
        out = []
        for spec in specs:
            try:
                out.append(ensure(spec))
            except PveApiError as exc:
                out.append(failure(spec, exc))
        return out

    results = [None] * len(specs)
    power_failed = {}
    powering = []
    scheduler = _Scheduler(specs, CLONE_LOCK_SLOTS)
    with ThreadPoolExecutor(max_workers=parallel) as power_pool:

        def power(index, spec, current, result):
            try:
                VmEngine(api(), check_mode=check_mode)._power(spec, current, result)
            except PveApiError as exc:
                power_failed[index] = failure(spec, exc)

        class Deferred(VmEngine):
            """Converges as VmEngine does, and queues the power step for the power workers."""

            def _power(self, spec, current, result):
                powering.append(power_pool.submit(power, self.index, spec, current, result))

        def worker():
            while True:
                taken = scheduler.take()
                if taken is None:
                    return
                index, spec = taken
                try:
                    results[index] = ensure(spec, Deferred, index)
                except PveApiError as exc:
                    results[index] = failure(spec, exc)
                finally:
                    scheduler.done(spec)

        with ThreadPoolExecutor(max_workers=parallel) as clone_pool:
            for future in [clone_pool.submit(worker) for dummy in range(min(parallel, len(specs)))]:
                future.result()
        for future in list(powering):
            future.result()
    for index, info in power_failed.items():
        results[index] = info
    return results


def remove_many(make_api, resources, check_mode=False, timeout=900, shutdown_timeout=0):
    """Destroy the given managed VMs (prune, scale-in), each running one shut down first (``shutdown_timeout``,
    see :class:`VmSpec`). Returns per-VM results."""
    api = make_api()
    engine = VmEngine(api, check_mode=check_mode, resources=list(resources))
    out = []
    for res in resources:
        spec = VmSpec(res['name'], state='absent', timeout=timeout, shutdown_timeout=shutdown_timeout)
        try:
            out.append(engine.ensure(spec))
        except PveApiError as exc:
            info = exc.as_dict()
            info.update(failed=True, name=res['name'], changed=False)
            out.append(info)
    return out

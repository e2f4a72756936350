# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PVE API side of failover for one service of a plan: detect, activate, remediate, failback.

keepalived moves the VIP; this moves the VMs. Every step reads the cluster first and writes only the
difference, so a second run changes nothing. Check mode sends no write at all. Before any write the cluster
must be quorate (checked once per run, also in check mode, where it would fail the same way).

- detect: each primary's and the shadow's status and ``qmpstatus`` (``status/current``), its node's state
  (``/nodes``) and its HA state (``/cluster/ha/resources``). A primary is down when it is missing, its node is
  offline, it is stopped, or it runs but QEMU is not ``running`` (hung, paused, crashed guest).
- activate: grow the shadow to its primaries' size (never shrink it here), mark it active in its description
  metadata (``failover: {active: true, since: <epoch>}``), start it if it is stopped. Sizes that are not
  hot-pluggable stay pending until the shadow's next start; they are reported, the shadow is not restarted
  (it is serving).
- remediate: per down primary: start a stopped one; reset a running one whose QEMU is not running (then
  resume it if QEMU stays paused after the reset); resume a paused one. A primary on an offline node cannot be
  started or migrated through the API (PVE needs the source node for a migration): PVE's HA recovers it on
  another node once the node is fenced. ``offline_recovery`` says what this step does about it: ``wait`` (the
  default) waits up to ``timeout`` for HA to recover an HA-managed primary and reports an unmanaged one as
  unresolved; ``ha`` first makes an unmanaged one an HA resource (state started), then waits; ``report`` only
  reports. Nothing is done to a locked VM (backup, migrate, snapshot ...).
- failback: when every primary is healthy (and up for at least ``min_uptime`` seconds, and, with VRRP facts,
  not in FAULT) and its state has caught up with the shadow's (``catch_up``: for the fidelities that can copy
  state back, ``differential`` and ``event``, the primary's last catch-up, from ``catch_up_facts``, finished
  after the shadow became active), shrink the shadow back to its plan size and remove the active mark.
"""


import time

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import propstr
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import is_finite_number
from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import vrrp
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import (
    PveApiError, PveHaError, PveTaskError, ha_error_message, ha_service_state)
from ansible_collections.shadownet.proxmox.plugins.module_utils.build import ha as ha_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import not_a_plan
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.vm import find_vms, unnamed_twins

STEPS = ('detect', 'activate', 'remediate', 'failback', 'auto')
OFFLINE_RECOVERY = ('wait', 'ha', 'report')
CATCH_UP = ('first', 'all', 'skip')
# Fidelities whose state can flow back from the shadow into a primary (state_replication catch_up direction).
CATCH_UP_FIDELITIES = ('differential', 'event')
# Seconds an HA resource may stay in HA state recovery before failover says no node can take it (the CRM retries every
# round, 10 s: about two rounds).
RECOVERY_GRACE = 25.0


class FailoverError(PveApiError):
    """A failover step that cannot be done, with the reason an operator needs."""

    def __init__(self, message, kind='failover', **kwargs):
        super().__init__(message, kind=kind, **kwargs)


def service_vms(plan, service):
    """(primaries, shadow or None): the plan's ``vms`` entries of ``service``."""
    if not_a_plan(plan):
        raise FailoverError(not_a_plan(plan), kind='config')
    vms = [vm for vm in plan['vms'] if vm.get('service') == service]
    primaries = sorted((vm for vm in vms if vm.get('role') == 'primary'), key=lambda vm: vm.get('index', 0))
    shadows = [vm for vm in vms if vm.get('role') == 'shadow']
    if not primaries:
        services = sorted(set(vm.get('service') for vm in plan['vms']))
        raise FailoverError('service {0!r} is not in the plan of template {1!r} (services: {2})'.format(
            service, plan['template'], ', '.join(services)), kind='config')
    return primaries, (shadows[0] if shadows else None)


def _meta_of(cfg):
    dummy, meta = meta_utils.parse_description(cfg.get('description', ''))
    return meta or {}


def _size_of(cfg):
    return int(cfg.get('cores', 1)), propstr.parse_memory(cfg.get('memory', 512))


class Failover(object):
    """One run of the failover steps for one service. ``clock`` and ``sleep`` are injectable for tests."""

    def __init__(self, api, plan, service, check_mode=False, timeout=300, state_facts=None, min_uptime=60,
                 clock=time.time, sleep=time.sleep, poll=0.2, offline_recovery='wait', catch_up='first',
                 catch_up_facts=None):
        if offline_recovery not in OFFLINE_RECOVERY:
            raise FailoverError('offline_recovery must be one of {0}'.format(', '.join(OFFLINE_RECOVERY)),
                                kind='config')
        if catch_up not in CATCH_UP:
            raise FailoverError('catch_up must be one of {0}'.format(', '.join(CATCH_UP)), kind='config')
        self.offline_recovery = offline_recovery
        self.catch_up = catch_up
        self.catch_up_facts = catch_up_facts or {}
        self.api = api
        self.plan = plan
        self.service = service
        self.primaries, self.shadow = service_vms(plan, service)
        self.check_mode = check_mode
        if not (is_finite_number(timeout) and timeout > 0):
            raise FailoverError('timeout must be a number of seconds above 0, got {0!r}'.format(timeout), kind='config')
        self.timeout = timeout
        self.facts = state_facts or {}
        self.min_uptime = min_uptime
        self._clock = clock
        self._sleep = sleep
        self._poll = poll
        self._quorum_checked = False
        self.result = dict(changed=False, service=service, template=plan['template'], steps=[], lines=[],
                           diff=dict(before={}, after={}), warnings=[])

    # ---------------------------------------------------------------- helpers

    def _line(self, step, text):
        self.result['lines'].append('{0}: {1}'.format(step, text))

    def _writable(self):
        """Stop before the first write of the run when the cluster is not quorate."""
        if not self._quorum_checked:
            self.api.require_quorum()
            self._quorum_checked = True

    def _status(self, node, vmid):
        return self.api.get('nodes/{0}/qemu/{1}/status/current'.format(node, vmid)) or {}

    # ----------------------------------------------------------------- detect

    def detect(self):
        """The state of the service's VMs. Read-only."""
        resources = self.api.resources('vm')
        nodes = self.api.nodes()
        ha = {}
        for item in self.api.get('cluster/ha/resources') or []:
            # GET lists only the keys stored: `ha-manager add` stores no state, whose default is started
            # (pve-ha-manager HA/Config.pm read_and_check_resources_config); `enabled` is the old name of started.
            state = item.get('state') or 'started'
            ha[item.get('sid')] = 'started' if state == 'enabled' else state
        quorate = True
        for item in self.api.get('cluster/status') or []:
            if item.get('type') == 'cluster' and not int(item.get('quorate', 1)):
                quorate = False
        views = [self._view(vm, resources, nodes, ha) for vm in self.primaries]
        shadow = self._view(self.shadow, resources, nodes, ha) if self.shadow else None
        if shadow is not None and shadow['exists'] and shadow['node_online']:
            cfg, dummy = self.api.vm_config(shadow['node'], shadow['vmid'])
            cfg = _with_pending(cfg, self._pending(shadow))
            mark = _meta_of(cfg).get('failover') or {}
            shadow['cores'], shadow['memory'] = _size_of(cfg)
            shadow['active'] = bool(mark.get('active'))
            shadow['active_since'] = mark.get('since')
        down = [v['name'] for v in views if not v['healthy']]
        vip_master = None
        for name in [v['name'] for v in views] + ([shadow['name']] if shadow else []):
            if vrrp.instance_state(self.facts.get(name))[0] == 'MASTER':
                vip_master = name
        if vip_master is not None and shadow is not None:
            on_shadow = vip_master == shadow['name']
        else:
            on_shadow = bool(shadow and shadow['healthy'] and len(down) == len(views))
        report = dict(primaries=views, shadow=shadow, primaries_down=down, all_primaries_down=len(down) == len(views),
                      vip_master=vip_master, runs_on_shadow=on_shadow, quorate=quorate, nodes=nodes)
        return report

    def _view(self, vm, resources, nodes, ha):
        name = vm['name']
        view = dict(name=name, role=vm['role'], exists=False, vmid=None, node=None, node_online=None, status=None,
                    qmpstatus=None, lock=None, uptime=None, ha_state=None, ha_service=None, healthy=False,
                    problem='missing')
        found = find_vms(resources, name)
        if len(found) > 1:
            raise FailoverError('{0} VMs are named {1!r} (vmids {2}): rename or remove the extra ones; failover '
                                'never guesses'.format(len(found), name, sorted(f['vmid'] for f in found)),
                                kind='config')
        state, health = vrrp.instance_state(self.facts.get(name))
        view.update(vrrp_state=state, vrrp_health=health)
        if not found:
            # pmxcfs forgets a VM's name 5 minutes after its node went silent (the config's tags stay listed)
            view['unnamed_twins'] = [dict(vmid=int(r['vmid']), node=r.get('node'))
                                     for r in unnamed_twins(resources, vm.get('tags'), nodes)]
            return view
        res = found[0]
        vmid, node = int(res['vmid']), res['node']
        view.update(exists=True, vmid=vmid, node=node, node_online=nodes.get(node) == 'online',
                    ha_state=ha.get('vm:{0}'.format(vmid)))
        if not view['node_online']:
            view.update(problem='node_offline', status=res.get('status') or 'unknown')
            return view
        st = self._status(node, vmid)
        view.update(status=st.get('status'), qmpstatus=st.get('qmpstatus'), lock=st.get('lock') or None,
                    uptime=int(st.get('uptime') or 0), ha_service=ha_service_state(st))
        if view['status'] != 'running':
            view['problem'] = 'stopped'
        elif view['qmpstatus'] == 'paused':
            view['problem'] = 'paused'
        elif view['qmpstatus'] not in (None, 'running'):
            view['problem'] = 'hung'
        else:
            view.update(problem=None, healthy=True)
        return view

    def detect_step(self):
        """detect as the first step of a run: the report goes into the result, with its line."""
        report = self.detect()
        self.result['detect'] = report
        self.result['steps'].append('detect')
        self._line('detect', self.describe(report))
        return report

    def describe(self, report):
        parts = []
        for view in report['primaries']:
            if view['healthy']:
                parts.append('{0} up'.format(view['name']))
            elif view['problem'] == 'node_offline':
                parts.append('{0} down (node {1} offline)'.format(view['name'], view['node']))
            elif view['problem'] == 'hung':
                parts.append('{0} down (running, qmpstatus {1})'.format(view['name'], view['qmpstatus']))
            else:
                parts.append('{0} down ({1})'.format(view['name'], view['problem']))
        shadow = report['shadow']
        if shadow is None:
            parts.append('no shadow')
        else:
            parts.append('shadow {0} {1}{2}'.format(shadow['name'], 'up' if shadow['healthy'] else shadow['problem'],
                                                    ', active' if shadow.get('active') else ''))
        if report['vip_master']:
            parts.append('VIP on {0}'.format(report['vip_master']))
        return '; '.join(parts)

    # --------------------------------------------------------------- activate

    def _shadow_ready(self, report, step):
        shadow = report['shadow']
        if shadow is None:
            raise FailoverError('service {0!r} has no shadow in the plan (it is not critical, or the shadow is '
                                'disabled): nothing to {1}'.format(self.service, step), kind='config')
        if not shadow['exists']:
            raise FailoverError('shadow {0!r} does not exist in the cluster: build it with playbooks/site.yml '
                                'before a failover can {1} it'.format(shadow['name'], step), kind='notfound')
        if not shadow['node_online']:
            raise FailoverError('shadow {0!r} (vmid {1}) is on node {2!r}, which is offline: it cannot be {3}d '
                                'through the API'.format(shadow['name'], shadow['vmid'], shadow['node'], step),
                                kind='offline', node=shadow['node'])
        return shadow

    def primary_size(self, report):
        """The size the shadow grows to: the largest primary, from the plan and from readable actual configs."""
        cores = max(int(vm.get('cores') or 1) for vm in self.primaries)
        memory = max(int(vm.get('memory') or 512) for vm in self.primaries)
        for view in report['primaries']:
            if view['exists'] and view['node_online']:
                cfg, dummy = self.api.vm_config(view['node'], view['vmid'])
                actual_cores, actual_memory = _size_of(cfg)
                cores, memory = max(cores, actual_cores), max(memory, actual_memory or 0)
        return cores, memory

    def _pending(self, view):
        """{key: pending value, or None for a pending delete} of a running VM (PVE applies them at its next start)."""
        if view['status'] != 'running':
            return {}
        return self.api.vm_pending(view['node'], view['vmid'])

    def _update_shadow(self, shadow, compute):
        # Compare with what the VM will have (pending values included): PVE keeps sizes it cannot hot-plug
        # pending, and a second run must not write them again.
        pending = self._pending(shadow)
        before, changes, deletes = self.api.update_vm_config(shadow['node'], shadow['vmid'],
                                                             lambda cfg: compute(_with_pending(cfg, pending)),
                                                             check_mode=self.check_mode)
        before = _with_pending(before, pending)
        after = dict(before)
        after.update(changes)

        def view(cfg):
            cores, memory = _size_of(cfg)
            return dict(cores=cores, memory=memory, failover=_meta_of(cfg).get('failover'))

        out = dict(name=shadow['name'], vmid=shadow['vmid'], node=shadow['node'], changes=sorted(changes),
                   pending=[], changed=bool(changes or deletes))
        if out['changed']:
            self.result['changed'] = True
            self.result['diff']['before'][shadow['name']] = view(before)
            self.result['diff']['after'][shadow['name']] = view(after)
            if not self.check_mode and shadow['status'] == 'running':
                out['pending'] = sorted(k for k in self.api.vm_pending(shadow['node'], shadow['vmid']) if k in changes)
        return out

    def activate(self, report):
        shadow = self._shadow_ready(report, 'activate')
        self._writable()
        cores, memory = self.primary_size(report)
        now = int(self._clock())

        def compute(cfg):
            changes = {}
            have_cores, have_memory = _size_of(cfg)
            if have_cores < cores:
                changes['cores'] = cores
            if have_memory < memory:
                changes['memory'] = memory
            if not (_meta_of(cfg).get('failover') or {}).get('active'):
                text, dummy, differs = meta_utils.merge_description(cfg.get('description', ''),
                                                                    {'failover': {'active': True, 'since': now}})
                if differs:
                    changes['description'] = text
            return changes, []

        out = self._update_shadow(shadow, compute)
        out['size'] = dict(cores=cores, memory=memory)
        started = False
        if shadow['status'] != 'running':
            started = True
            self.result['changed'] = True
            if not self.check_mode:
                self._start(shadow)
        out['started'] = started
        verb = 'would ' if self.check_mode else ''
        if out['changed'] or started:
            text = '{0}{1} shadow {2} to {3} cores / {4} MiB{5}{6}'.format(
                verb, 'grow' if self.check_mode else 'grew', shadow['name'], cores, memory,
                ' and start it' if started and self.check_mode else (', started it' if started else ''),
                '; pending until its next start: {0}'.format(', '.join(out['pending'])) if out['pending'] else '')
        else:
            text = 'shadow {0} already active at {1} cores / {2} MiB'.format(shadow['name'], cores, memory)
        self._line('activate', text)
        return out

    # -------------------------------------------------------------- remediate

    def _start(self, view):
        """Start a VM and wait until QEMU runs; a failure names the VM and carries PVE's message (for an HA resource
        that HA holds in its error state, how to clear it). HA may start it on another node: the view follows."""
        try:
            task = self.api.start_vm(view['node'], view['vmid'], timeout=self.timeout, name=view['name'])
        except PveHaError as exc:
            view['node'] = exc.node or view['node']
            raise FailoverError(_ha_error(view), kind='task', node=view['node'], method='POST', path=exc.path)
        except PveTaskError as exc:
            raise FailoverError('{0} (vmid {1} on {2}) did not start: {3}'.format(
                view['name'], view['vmid'], view['node'], _pve_message(exc)), kind='task', node=view['node'],
                method='POST', path='nodes/{0}/qemu/{1}/status/start'.format(view['node'], view['vmid']))
        view['node'] = task.get('node') or view['node']
        self._wait_running(view)

    def _wait_running(self, view):
        deadline = self._clock() + self.timeout
        while True:
            st = self._status(view['node'], view['vmid'])
            if st.get('status') == 'running' and st.get('qmpstatus') in (None, 'running'):
                return st
            if ha_service_state(st) == 'error':
                raise FailoverError(_ha_error(view), kind='task', node=view['node'])
            if self._clock() >= deadline:
                raise FailoverError('{0} (vmid {1} on {2}) is not running {3}s after the request (status {4}, '
                                    'qmpstatus {5})'.format(view['name'], view['vmid'], view['node'], self.timeout,
                                                            st.get('status'), st.get('qmpstatus')),
                                    kind='timeout', node=view['node'])
            self._sleep(self._poll)

    def _action(self, view, action):
        path = 'nodes/{0}/qemu/{1}/status/{2}'.format(view['node'], view['vmid'], action)
        try:
            self.api.run_task('POST', path, timeout=self.timeout)
        except PveTaskError as exc:
            raise FailoverError('{0} (vmid {1} on {2}): {3} failed: {4}'.format(
                view['name'], view['vmid'], view['node'], action, _pve_message(exc)), kind='task', node=view['node'],
                method='POST', path=path)

    def _unhang(self, view):
        """Reset a running VM whose QEMU is not running (resume first when it is only paused)."""
        if view['problem'] == 'hung':
            self._action(view, 'reset')
        st = self._status(view['node'], view['vmid'])
        if st.get('qmpstatus') not in (None, 'running'):
            # A paused QEMU stays paused across a reset, and after a crash a reset leaves it paused/prelaunch.
            self._action(view, 'resume')
        self._wait_running(view)

    def plan_remediation(self, view):
        """(action, message) for one primary: action in start, reset, resume, ha_recovery, none."""
        name, node = view['name'], view['node']
        problem = view['problem']
        if view['healthy']:
            return None, None
        if problem == 'missing' and view.get('unnamed_twins'):
            return 'none', ('{0} is not listed by name, but PVE lists {1} without a name on offline node(s), with its '
                            'tags: PVE forgets the names of a node\'s VMs 5 minutes after the node went down, so it '
                            'is probably one of them. Bring the node back (HA recovers an HA-managed VM on its own); '
                            'do not rebuild it, that would make a second {0}'.format(name, ', '.join(
                                'vmid {0} on {1}'.format(t['vmid'], t['node']) for t in view['unnamed_twins'])))
        if problem == 'missing':
            return 'none', ('{0} does not exist in the cluster: rebuild it with playbooks/site.yml '
                            '(shadownet.proxmox.linked_clone)'.format(name))
        if problem == 'node_offline':
            if view['ha_state'] in ('started', 'stopped'):
                text = ('node {0} is offline; HA manages {1} (vm:{2}, requested state {3}) and recovers it on '
                        'another node once {0} is fenced'.format(node, name, view['vmid'], view['ha_state']))
                if view['ha_state'] == 'stopped':
                    # Manager.pm next_state_stopped fences a stopped service's node too; next_state_recovery moves
                    # it and keeps it stopped (request_stop)
                    text += ', kept stopped there (its HA state is stopped): failover then starts it'
                if self.offline_recovery == 'report':
                    return 'ha_recovery', text
                return 'ha_wait', text + '; waiting up to {0}s for it'.format(self.timeout)
            if view['ha_state'] in ('disabled', 'ignored'):
                why = ('HA does not recover a disabled resource from a failed node (pve-ha-manager Manager.pm '
                       'next_state_stopped returns before fencing)' if view['ha_state'] == 'disabled' else
                       'an ignored resource is not HA-managed')
                return 'none', ('node {0} is offline: {1} (vm:{2}) is an HA resource in state {3}, and {4}, so '
                                'nothing recovers it. Bring {0} back; or set `ha-manager set vm:{2} --state started` '
                                '(HA then fences {0} and recovers it on another node) and run again'.format(
                                    node, name, view['vmid'], view['ha_state'], why))
            if view['ha_state']:
                return 'none', ('node {0} is offline: {1} (vm:{2}) is an HA resource in state {3}, which failover '
                                'does not know; check `ha-manager status`'.format(node, name, view['vmid'],
                                                                                  view['ha_state']))
            if self.offline_recovery == 'ha':
                return 'ha_add', ('node {0} is offline and {1} (vmid {2}) is not HA-managed: add it to HA (state '
                                  'started) so that HA recovers it on another node once {0} is fenced, and wait up '
                                  'to {3}s for it'.format(node, name, view['vmid'], self.timeout))
            return 'none', ('node {0} is offline: {1} (vmid {2}) cannot be started or migrated through the API and '
                            'is not HA-managed, so nothing recovers it automatically. Bring {0} back; or, once {0} '
                            'is certainly off (powered down or fenced), run again with offline_recovery=ha (HA then '
                            'recovers it on another node), or move /etc/pve/nodes/{0}/qemu-server/{2}.conf to an '
                            'online node yourself'.format(node, name, view['vmid']))
        if view['lock'] == 'suspended' and problem == 'stopped':
            # Hibernated (suspended to disk): the lock stays until the VM is started. qemu-server vm_start skips
            # check_lock for it and resumes from the saved state (QemuServer.pm vm_start, $has_suspended_lock).
            if view['ha_service'] == 'error':
                return 'none', _ha_error(view)
            return 'start', 'start {0} on {1} (hibernated: it resumes from its saved state)'.format(name, node)
        if view['lock']:
            return 'none', '{0} is locked ({1}): not touched; run again when the lock is gone'.format(name, view['lock'])
        if problem == 'stopped':
            if view['ha_service'] == 'error':     # a start would do nothing; a reset or a resume does not go through HA
                return 'none', _ha_error(view)
            return 'start', 'start {0} on {1}'.format(name, node)
        if problem == 'paused':
            return 'resume', 'resume {0} on {1} (qmpstatus paused)'.format(name, node)
        return 'reset', 'reset {0} on {1} (running, qmpstatus {2})'.format(name, node, view['qmpstatus'])

    def _wait_recovered(self, view):
        """Wait until HA moved the VM to an online node other than its dead one, and runs it when its requested state
        is started. Returns (that node or None at timeout, the last HA state listed). The HA state comes from the
        cluster's VM list (pve-manager API2/Cluster.pm resources: ``hastate``, the CRM's service state): ``error``
        fails at once, ``recovery`` for more than RECOVERY_GRACE seconds means no node is allowed to take it."""
        deadline = self._clock() + self.timeout
        since = None
        while True:
            nodes = self.api.nodes()
            hastate = None
            for res in self.api.resources('vm'):
                if int(res.get('vmid', -1)) != int(view['vmid']):
                    continue
                hastate = res.get('hastate')
                node = res.get('node')
                # The node comes from the cluster's VM list (fresh once HA moved the config); the listed status is
                # pvestatd's, the dead node's last one for 5 minutes: ask the VM on its new node.
                if node != view['node'] and nodes.get(node) == 'online' and (
                        view['ha_state'] != 'started' or self.api.vm_status(node, view['vmid']) == 'running'):
                    return node, hastate
            if hastate == 'error':
                raise PveHaError(ha_error_message(view['name'], view['vmid'], view['node']), node=view['node'])
            if hastate == 'recovery':
                since = self._clock() if since is None else since
                if self._clock() - since > RECOVERY_GRACE:
                    raise FailoverError(self._no_recovery_node(view), kind='ha_recovery', node=view['node'])
            else:
                since = None
            if self._clock() >= deadline:
                return None, hastate
            self._sleep(max(self._poll, 1.0))

    def _no_recovery_node(self, view):
        """Why HA finds no node for a VM it fenced (Manager.pm next_state_recovery: "recovering service ... failed,
        no recovery node found", retried every round): the rules that keep it off the online nodes."""
        sid = 'vm:{0}'.format(view['vmid'])
        names = dict(('vm:{0}'.format(r.get('vmid')), '{0} on {1}'.format(r.get('name') or r.get('vmid'), r.get('node')))
                     for r in self.api.resources('vm'))
        online = sorted(n for n, state in self.api.nodes().items() if state == 'online')
        why = []
        for item in self.api.get('cluster/ha/rules') or []:
            rule = ha_utils.current_rule(item)
            if sid not in rule['resources'] or rule['disable']:
                continue
            if rule['type'] == 'resource-affinity' and rule['affinity'] == 'negative':
                why.append('negative resource-affinity rule {0} keeps it apart from {1}'.format(
                    rule['rule'], ', '.join(names.get(m, m) for m in rule['resources'] if m != sid)))
            elif rule['type'] == 'node-affinity' and rule['strict']:
                why.append('strict node-affinity rule {0} allows only {1}'.format(rule['rule'], item.get('nodes')))
        return ('HA fenced node {0} but finds no node to recover {1} (vm:{2}) to: it has been in HA state recovery for '
                'more than {3:.0f}s (pve-ha-manager Manager.pm next_state_recovery: "no recovery node found", retried '
                'every round). Online nodes: {4}; {5}. Bring a node back or {0}, or change the rule (for a shadow: '
                'shadow.placement any), and HA recovers it on its own'.format(
                    view['node'], view['name'], view['vmid'], RECOVERY_GRACE, ', '.join(online) or 'none',
                    '; '.join(why) or 'no rule of it excludes them (check `ha-manager status` and the CRM log)'))

    def _recover_offline(self, view, action, item):
        if action == 'ha_add':
            self.api.post('cluster/ha/resources', sid='vm:{0}'.format(view['vmid']), state='started',
                          comment='shadownet failover: recover {0} from offline node {1}'.format(
                              view['name'], view['node']))
            view['ha_state'] = 'started'
        dead = view['node']
        node, hastate = self._wait_recovered(view)
        if node is None:
            item['result'] = 'waiting'
            fencing = '; HA is still fencing {0} (HA state fence)'.format(dead) if hastate == 'fence' else ''
            item['msg'] = ('{0} (vmid {1}) is still not {2} on another node {3}s after node {4} went missing{5}: HA '
                           'recovers it once {4} is fenced; run again later'.format(
                               view['name'], view['vmid'], 'running' if view['ha_state'] != 'stopped' else 'moved',
                               self.timeout, dead, fencing))
            self.result['warnings'].append(item['msg'])
            return
        item.update(result='done', recovered_on=node,
                    msg='HA recovered {0} (vmid {1}) from offline node {2} on {3}'.format(
                        view['name'], view['vmid'], dead, node))
        if view['ha_state'] == 'stopped':
            # HA keeps it stopped there (its requested state): start it, as a stopped primary is
            self._writable()
            self.result['changed'] = True
            view['node'] = node
            self._start(view)
            item.update(recovered_on=view['node'], msg=item['msg'] + ', kept stopped by HA (state stopped); started '
                        'on {0}'.format(view['node']))

    def remediate(self, report):
        out, failures = [], []
        todo = [(view, self.plan_remediation(view)) for view in report['primaries'] if not view['healthy']]
        if any(action in ('start', 'reset', 'resume', 'ha_add') for dummy, (action, dummy2) in todo):
            self._writable()
        for view, (action, message) in todo:
            item = dict(name=view['name'], vmid=view['vmid'], node=view['node'], problem=view['problem'],
                        action=action, msg=message)
            if action in ('ha_add', 'ha_wait'):
                if action == 'ha_add':
                    self.result['changed'] = True
                if self.check_mode:
                    item['result'] = 'would' if action == 'ha_add' else 'waiting'
                else:
                    try:
                        self._recover_offline(view, action, item)
                    except PveApiError as exc:
                        item.update(result='failed', msg=exc.message)
                        failures.append(exc)
            elif action in ('start', 'reset', 'resume'):
                self.result['changed'] = True
                if self.check_mode:
                    item['result'] = 'would'
                else:
                    try:
                        if action == 'start':
                            self._start(view)
                        else:
                            self._unhang(view)
                        item['result'] = 'done'
                    except PveApiError as exc:
                        item.update(result='failed', msg=exc.message)
                        failures.append(exc)
            else:
                item['result'] = 'waiting' if action == 'ha_recovery' else 'unresolved'
                self.result['warnings'].append(message)
            out.append(item)
        if not todo:
            self._line('remediate', 'every primary is up')
        for item in out:
            verb = {'done': 'done', 'would': 'would', 'failed': 'FAILED', 'waiting': 'waiting for HA',
                    'unresolved': 'UNRESOLVED'}[item['result']]
            self._line('remediate', '{0}: {1}'.format(verb, item['msg']))
        return out, failures

    # --------------------------------------------------------------- failback

    def catch_up_needed(self, report):
        """Healthy primaries whose state has not caught up with the active shadow's yet (see ``catch_up``)."""
        shadow = report.get('shadow') or {}
        since = shadow.get('active_since')
        entry = next((r for r in self.plan.get('replication') or [] if r.get('service') == self.service), None)
        if self.catch_up == 'skip' or not since or entry is None \
                or entry.get('fidelity') not in CATCH_UP_FIDELITIES:
            return []
        names = list(entry.get('primaries') or [vm['name'] for vm in self.primaries])
        if self.catch_up == 'first':
            names = names[:1]
        healthy = set(v['name'] for v in report['primaries'] if v['healthy'])
        return [name for name in names
                if name in healthy and (_epoch(self.catch_up_facts.get(name)) or 0) < int(since)]

    def failback_blockers(self, report):
        """Reasons not to fail back yet (empty: fail back)."""
        reasons = []
        for view in report['primaries']:
            if not view['healthy']:
                reasons.append('{0} is down ({1})'.format(view['name'], view['problem']))
            elif self.min_uptime and (view['uptime'] or 0) < self.min_uptime:
                reasons.append('{0} is up for {1}s only (min_uptime {2}s)'.format(
                    view['name'], view['uptime'] or 0, self.min_uptime))
            elif view.get('vrrp_state') == 'FAULT' or view.get('vrrp_health') == 1:
                reasons.append('{0} runs but its VRRP health check fails (state {1}, health {2})'.format(
                    view['name'], view.get('vrrp_state'), view.get('vrrp_health')))
        since = (report.get('shadow') or {}).get('active_since')
        for name in self.catch_up_needed(report):
            last = _epoch(self.catch_up_facts.get(name))
            reasons.append('{0} has not caught up with the state the shadow took since it became active at {1} (last '
                           'catch-up: {2}): run the state_replication role with state_replication_direction='
                           'catch_up, then fail back with catch_up_facts'.format(name, since, last or 'none'))
        return reasons

    def failback(self, report):
        shadow = self._shadow_ready(report, 'failback')
        self._writable()
        cores, memory = int(self.shadow['cores']), int(self.shadow['memory'])

        def compute(cfg):
            changes = {}
            have_cores, have_memory = _size_of(cfg)
            if have_cores != cores:
                changes['cores'] = cores
            if have_memory != memory:
                changes['memory'] = memory
            if 'failover' in _meta_of(cfg):
                text, dummy, differs = meta_utils.merge_description(cfg.get('description', ''), {'failover': None})
                if differs:
                    changes['description'] = text
            return changes, []

        out = self._update_shadow(shadow, compute)
        out['size'] = dict(cores=cores, memory=memory)
        if out['changed']:
            text = '{0} shadow {1} to its plan size {2} cores / {3} MiB and cleared its active mark{4}'.format(
                'would shrink' if self.check_mode else 'shrank', shadow['name'], cores, memory,
                '; pending until its next start: {0}'.format(', '.join(out['pending'])) if out['pending'] else '')
        else:
            text = 'shadow {0} already at its plan size ({1} cores / {2} MiB), not active'.format(shadow['name'],
                                                                                                  cores, memory)
        self._line('failback', text)
        return out

    # -------------------------------------------------------------------- run

    def run(self, step):
        if step not in STEPS:
            raise FailoverError('step must be one of {0}'.format(', '.join(STEPS)), kind='config')
        result = self.result
        report = self.detect_step()
        if step == 'detect':
            return result
        if not report['quorate'] or step in ('activate', 'failback') or report['primaries_down']:
            self._writable()  # stops here, before any write, when quorum is lost
        failures = []
        if step in ('activate', 'auto'):
            if step == 'auto' and report['shadow'] is None:
                self._line('activate', 'no shadow in the plan')
            elif step == 'activate' or report['primaries_down']:
                result['activate'] = self.activate(report)
                result['steps'].append('activate')
            else:
                self._line('activate', 'not needed: every primary is up')
        if step in ('remediate', 'auto'):
            result['remediation'], failures = self.remediate(report)
            result['steps'].append('remediate')
        if failures:
            raise FailoverError('; '.join(exc.message for exc in failures), kind=failures[0].kind,
                                node=failures[0].node)
        if step in ('failback', 'auto'):
            if step == 'auto' and result.get('remediation') and not self.check_mode:
                report = self.detect()
                result['after_remediation'] = report
            blockers = self.failback_blockers(report)
            if blockers and step == 'failback':
                raise FailoverError('not failing back: {0}'.format('; '.join(blockers)), kind='failover')
            if blockers:
                result['failback'] = dict(changed=False, deferred=blockers,
                                          catch_up_needed=self.catch_up_needed(report))
                self._line('failback', 'deferred: {0}'.format('; '.join(blockers)))
            elif report['shadow'] is None:
                self._line('failback', 'no shadow')
            else:
                result['failback'] = self.failback(report)
                result['steps'].append('failback')
        return result


def _epoch(value):
    """Epoch seconds from a catch_up_facts value: a number, a numeric string (a slurped marker file), or a dict
    with ``caught_up_at``; None when there is none."""
    if isinstance(value, dict):
        value = value.get('caught_up_at')
    try:
        return int(float(str(value).strip())) if value is not None and str(value).strip() else None
    except ValueError:
        return None


def _with_pending(cfg, pending):
    out = dict(cfg)
    for key, value in (pending or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _ha_error(view):
    return ha_error_message(view['name'], view['vmid'], view['node']) + '; failover does not clear it itself'


def _pve_message(exc):
    """PVE's own words from a failed task: the TASK ERROR line, else the message."""
    for line in reversed(getattr(exc, 'log', None) or []):
        if line.startswith('TASK ERROR:'):
            return line[len('TASK ERROR:'):].strip()
    return exc.message

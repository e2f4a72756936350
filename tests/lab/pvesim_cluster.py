"""Node networks and HA (resources and PVE 9 rules) for ShadowPve.

Node networks follow pve-manager's PVE/API2/Network.pm: writes go to /etc/network/interfaces.new (kept here as
`node_networks[node]['config']`); `PUT /nodes/{node}/network` applies it (a `srvreload` task), `DELETE` reverts
it. GET answers the pending-inclusive config; an interface not yet applied has no `active` flag, as on PVE.
HA follows pve-ha-manager's PVE/API2/HA/Resources.pm and Rules.pm (PVE 9): errors are prefixed with the
operation ("create ha rule failed: ...") and answers carry the config file's `digest`.
"""

import copy
import hashlib
import ipaddress
import json
import re
import time

from aiohttp import web
from fakepve.model import PveError
from fakepve.routing import split_list

__all__ = ['NodeNetworkApi', 'HaApi']

NOT_IN_SCHEMA = 'property is not defined in schema and the schema does not allow additional properties'


def _die(message):
    return PveError(500, message)


def _param_error(**fields):
    return PveError(400, 'Parameter verification failed.', fields)


def _digest(data):
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------------------------------ node networks

def _default_interfaces(index):
    """A node's interfaces as a fresh PVE install has them: one NIC, enslaved to vmbr0 with the node's address."""
    address = '192.0.2.{0}'.format(10 + index)
    return {
        'eno1': {'type': 'eth', 'method': 'manual', 'families': ['inet'], 'exists': 1, 'priority': 3},
        'vmbr0': {'type': 'bridge', 'method': 'static', 'families': ['inet'], 'autostart': 1, 'priority': 4,
                  'bridge_ports': 'eno1', 'bridge_stp': 'off', 'bridge_fd': '0', 'cidr': address + '/24',
                  'address': address, 'netmask': '24', 'gateway': '192.0.2.1'},
    }


class NodeNetworkApi(object):
    """Mixin of ShadowPve: /nodes/{node}/network."""

    def _init_network(self):
        # node -> {'running': {iface: options}, 'config': {iface: options}}
        self.node_networks = {}

    def _network_for(self, node):
        if node not in self.node_networks:
            ifaces = _default_interfaces(len(self.node_networks) + 1)
            self.node_networks[node] = {'running': ifaces, 'config': copy.deepcopy(ifaces)}
        return self.node_networks[node]

    def network_pending(self, node):
        """True if the node has changes not yet applied (interfaces.new exists)."""
        net = self._network_for(node)
        return net['config'] != net['running']

    def _routes_node_network(self):
        base = '/nodes/{node}/network'
        one = base + '/{iface}'
        return [('GET', base, self._nn_list), ('POST', base, self._nn_create), ('PUT', base, self._nn_apply),
                ('DELETE', base, self._nn_revert), ('GET', one, self._nn_read), ('PUT', one, self._nn_update),
                ('DELETE', one, self._nn_delete)]

    def _nn_item(self, node, iface):
        net = self._network_for(node)
        item = copy.deepcopy(net['config'][iface])
        item['iface'] = iface
        if iface in net['running']:
            item['active'] = 1
        return item

    async def _nn_list(self, v, user):
        net = self._network_for(v['node'])
        wanted = v.get('type')
        out = []
        for iface in sorted(net['config']):
            kind = net['config'][iface].get('type')
            if wanted in (None, kind) or (wanted == 'any_bridge' and kind in ('bridge', 'OVSBridge')) or \
                    (wanted == 'any_local_bridge' and kind == 'bridge'):
                out.append(self._nn_item(v['node'], iface))
        return out

    async def _nn_read(self, v, user):
        net = self._network_for(v['node'])
        if v['iface'] not in net['config']:
            raise _param_error(iface='interface does not exist')
        item = self._nn_item(v['node'], v['iface'])
        item.pop('iface')
        return item

    @staticmethod
    def _nn_options(v, item):
        for key, val in v.items():
            if key in ('node', 'iface', 'delete', 'digest'):
                continue
            item[key] = val
        if item.get('cidr'):
            try:
                iface = ipaddress.ip_interface(str(item['cidr']))
            except ValueError:
                raise _param_error(cidr='invalid format - invalid CIDR {0}'.format(item['cidr'])) from None
            item['address'] = str(iface.ip)
            item['netmask'] = str(iface.network.prefixlen)
        if item.get('address') or item.get('cidr'):
            item['method'] = 'static'
        item.setdefault('method', 'manual')
        item.setdefault('families', ['inet'])
        return item

    def _nn_check(self, config, iface, item):
        if item.get('type') == 'bridge':
            # The name: fakepve checks `pve-iface` (pve-common JSONSchema.pm pve_verify_iface, 2-20 characters)
            # as PVE does; Linux's 15-character limit bites only when the node applies it (sdn_node_reload).
            for port in split_list(item.get('bridge_ports')):
                if port not in config:
                    raise _die("can't find interface '{0}'".format(port))
                for other, cfg in config.items():
                    if other != iface and cfg.get('type') == 'bridge' and port in split_list(cfg.get('bridge_ports')):
                        raise _die("interface '{0}' is already used by bridge '{1}'".format(port, other))
        if item.get('gateway'):
            for other, cfg in config.items():
                if other != iface and cfg.get('gateway'):
                    raise _param_error(gateway='Default gateway already exists on interface \'{0}\'.'.format(other))

    async def _nn_create(self, v, user):
        net = self._network_for(v['node'])
        iface = v['iface']
        if iface in net['config']:
            raise _param_error(iface='interface already exists')
        item = self._nn_options(v, {})
        if item.get('type') == 'bridge':
            item.setdefault('bridge_stp', 'off')
            item.setdefault('bridge_fd', '0')
        self._nn_check(net['config'], iface, item)
        net['config'][iface] = item

    async def _nn_update(self, v, user):
        net = self._network_for(v['node'])
        iface = v['iface']
        if iface not in net['config']:
            raise _param_error(iface='interface does not exist')
        current = copy.deepcopy(net['config'][iface])
        if v.get('type') != current.get('type'):
            raise _param_error(type='interface type is different')
        for key in split_list(v.get('delete')):
            current.pop(key, None)
            if key == 'cidr':
                current.pop('address', None)
                current.pop('netmask', None)
        item = self._nn_options(v, current)
        self._nn_check(net['config'], iface, item)
        net['config'][iface] = item

    async def _nn_delete(self, v, user):
        net = self._network_for(v['node'])
        if v['iface'] not in net['config']:
            raise _param_error(iface='interface does not exist')
        del net['config'][v['iface']]

    async def _nn_apply(self, v, user):
        # pve-manager API2/Network.pm reload_network_config: a srvreload task that also regenerates the SDN
        # vnets of the node (SdnApi.sdn_node_reload).
        return await self.start_network_reload(v['node'], user)

    async def _nn_revert(self, v, user):
        net = self._network_for(v['node'])
        net['config'] = copy.deepcopy(net['running'])


# ------------------------------------------------------------------------------------------ HA

RULE_KEYS = {
    'node-affinity': {'resources': True, 'nodes': True, 'strict': False, 'affinity': False, 'comment': False,
                      'disable': False},
    'resource-affinity': {'resources': True, 'affinity': True, 'comment': False, 'disable': False},
}
RESOURCE_KEYS = ('state', 'comment', 'max_restart', 'max_relocate', 'failback', 'auto-rebalance', 'group')


def parse_sid(text):
    """PVE::HA::Config::parse_sid: ('vm:100', 'vm', '100'); a bare number is a VM."""
    text = str(text)
    found = re.fullmatch(r'(?:(vm|ct):)?(\d+)', text)
    if not found:
        raise _die("unable to parse service id '{0}'".format(text))
    kind = found.group(1) or 'vm'
    return '{0}:{1}'.format(kind, found.group(2)), kind, found.group(2)


def _resource_list(text):
    return ','.join(sorted({parse_sid(item)[0] for item in split_list(text)}, key=lambda s: (s[:2], int(s[3:]))))


def _node_list(text):
    return ','.join(sorted(split_list(text), key=lambda n: n.split(':')[0]))


class HaApi(object):
    """Mixin of ShadowPve: /cluster/ha/resources and /cluster/ha/rules."""

    def _init_ha(self):
        # sid ('vm:100') -> options; rule id -> options (with type).
        self.ha_resources = {}
        self.ha_rules = {}
        # The recovery part of PVE's CRM, off unless enable_ha_recovery() is called: sid -> when its node was
        # first seen offline; sid -> (from node, to node, time) of each recovery done.
        self.ha_fence_secs = None
        self._ha_offline_since = {}
        self.ha_recoveries = []
        # The stop part of PVE's CRM and LRM: a stop of an HA-managed VM is only queued (see _ha_request); the VM
        # stops once ha_crm_polls later requests have read its state AND ha_delay PVE seconds (scaled by
        # time_scale) have passed, so it stays running for a while at every time scale, 0 included.
        # vmid -> {'since': epoch, 'polls': n}.
        self.ha_crm_polls = 3
        self._ha_pending_stops = {}
        # The HA resource a destroy with purge being started takes out of HA when its task is done.
        self._ha_purge_on_destroy = None

    # ------------------------------------------------------------- recovery

    def enable_ha_recovery(self, fence_secs=120):
        """Recover HA resources (state started) from offline nodes, as PVE's CRM does once it has fenced the node:
        fence_secs PVE seconds (scaled by time_scale) after the node is first seen offline, the VM moves to an
        online node and starts there. The node: an online one, not holding a VM the resource has a negative
        resource-affinity rule with, among a node-affinity rule's nodes of the highest priority when it has one,
        then the one with the fewest VMs. Checked on every request."""
        self.ha_fence_secs = float(fence_secs)

    def ha_recovery_tick(self, now=None):
        if self.ha_fence_secs is None:
            return
        now = time.time() if now is None else now
        for sid, res in sorted(self.ha_resources.items()):
            kind, vmid = sid.split(':')
            vm = self.vm(int(vmid)) if kind == 'vm' else None
            if vm is None or res.get('state', 'started') not in ('started', 'enabled') \
                    or self.nodes.get(vm.node, {}).get('online', True):
                self._ha_offline_since.pop(sid, None)
                continue
            since = self._ha_offline_since.setdefault(sid, now)
            if now - since < self.ha_fence_secs * (self.time_scale or 0):
                continue
            target = self._ha_recovery_node(sid, vm)
            if target is None:
                continue
            self.ha_recoveries.append((sid, vm.node, target, now))
            self._ha_offline_since.pop(sid, None)
            vm.node = target
            vm.status = vm.qmpstatus = 'running'
            vm.started_at = now

    def _ha_recovery_node(self, sid, vm):
        online = sorted(n for n, info in self.nodes.items() if info.get('online', True))
        apart = set()
        preferred = None
        for rule in self.ha_rules.values():
            members = split_list(rule.get('resources'))
            if sid not in members:
                continue
            if rule['type'] == 'resource-affinity' and rule.get('affinity') == 'negative':
                for other in members:
                    guest = self.vm(int(other.split(':')[1])) if other != sid and other.startswith('vm:') else None
                    if guest is not None:
                        apart.add(guest.node)
            elif rule['type'] == 'node-affinity':
                prio = {}
                for item in split_list(rule.get('nodes')):
                    name, _, level = item.partition(':')
                    prio[name] = int(level or 0)
                candidates = [n for n in online if n in prio and n not in apart]
                if candidates:
                    top = max(prio[n] for n in candidates)
                    preferred = [n for n in candidates if prio[n] == top]
        pool = [n for n in (preferred or online) if n not in apart] or [n for n in online if n not in apart]
        if not pool:
            return None
        return min(pool, key=lambda n: (sum(1 for g in self.vms if g.node == n), n))

    @web.middleware
    async def ha_recovery_middleware(self, request, handler):
        self.ha_recovery_tick()
        self.ha_crm_tick(request.method, request.path)
        return await handler(request)

    # ------------------------------------------------------------ stop via HA

    def ha_stop_pending(self, vmid):
        """True while a stop of this HA-managed VM is queued and the CRM/LRM have not stopped it yet."""
        return int(vmid) in self._ha_pending_stops

    async def _ha_request(self, vm, user, state):
        if state != 'stopped':
            return await super()._ha_request(vm, user, state)
        # qemu-server src/PVE/API2/Qemu.pm vm_stop and vm_shutdown: for an HA-managed VM the API only runs
        # `ha-manager crm-command stop vm:<vmid> <timeout>` in a 'hastop' worker, which ends at once
        # (pve-ha-manager src/PVE/CLI/ha_manager.pm stop -> src/PVE/HA/Config.pm queue_crm_commands); the VM is
        # still running when the task is done. ha_crm_tick models the CRM and LRM acting later.
        vmid = vm.vmid

        async def body():
            self._ha_pending_stops.setdefault(vmid, {'since': time.time(), 'polls': 0})
        return await self.task(vm.node, 'hastop', vmid, user, body, lock=False,
                               log=['Requesting HA stop for VM {0}'.format(vmid)])

    def ha_crm_tick(self, method, path, now=None):
        """Count a request that reads VM state as a poll of every pending HA stop it shows; stop the VMs whose
        turn has come.

        pve-ha-manager src/PVE/HA/Manager.pm update_crm_commands: at its next round the CRM turns the queued
        `stop` into request_stop and writes state 'stopped' into the resource's config; a command for a service
        it does not manage (the resource was removed meanwhile) is dropped with 'crm command error - no such
        service'. The LRM (src/PVE/HA/LRM.pm manage_resources) then stops the VM."""
        if not self._ha_pending_stops:
            return
        now = time.time() if now is None else now
        shows = ()
        if method == 'GET':
            found = re.search(r'/nodes/[^/]+/qemu/(\d+)/status/current$', path)
            if found:
                shows = (int(found.group(1)),)
            elif re.search(r'/cluster/resources$|/nodes/[^/]+/qemu$', path):
                shows = tuple(self._ha_pending_stops)
        for vmid in sorted(self._ha_pending_stops):
            pending = self._ha_pending_stops[vmid]
            sid = 'vm:{0}'.format(vmid)
            vm = self.vm(vmid)
            if vm is None or sid not in self.ha_resources:
                del self._ha_pending_stops[vmid]
                continue
            if vmid in shows:
                pending['polls'] += 1
            if pending['polls'] < self.ha_crm_polls or now - pending['since'] < self.ha_delay * (self.time_scale or 0):
                continue
            del self._ha_pending_stops[vmid]
            self.ha_resources[sid]['state'] = 'stopped'
            self._ha_vm_state(sid)
            vm.status = vm.qmpstatus = 'stopped'

    def ha_dangling(self):
        """What a destroy left behind in HA: resources of VMs that are gone, rules naming an unmanaged resource."""
        out = ['resource {0}'.format(sid) for sid in sorted(self.ha_resources)
               if sid.startswith('vm:') and self.vm(int(sid[3:])) is None]
        for rule_id, rule in sorted(self.ha_rules.items()):
            out.extend('rule {0}: {1}'.format(rule_id, sid) for sid in split_list(rule.get('resources'))
                       if sid not in self.ha_resources)
        return out

    def ha_summary(self):
        return {'resources': sorted(self.ha_resources), 'rules': sorted(self.ha_rules)}

    def _routes_ha(self):
        res, rules = '/cluster/ha/resources', '/cluster/ha/rules'
        return [('GET', res, self._ha_res_list), ('POST', res, self._ha_res_create),
                ('GET', res + '/{sid}', self._ha_res_read), ('PUT', res + '/{sid}', self._ha_res_update),
                ('DELETE', res + '/{sid}', self._ha_res_delete),
                ('GET', rules, self._ha_rule_list), ('POST', rules, self._ha_rule_create),
                ('GET', rules + '/{rule}', self._ha_rule_read), ('PUT', rules + '/{rule}', self._ha_rule_update),
                ('DELETE', rules + '/{rule}', self._ha_rule_delete)]

    # -------------------------------------------------------------- resources

    def _ha_res_view(self, sid):
        item = dict(self.ha_resources[sid], sid=sid, type=sid.split(':')[0], digest=_digest(self.ha_resources))
        return item

    async def _ha_res_list(self, v, user):
        return [self._ha_res_view(sid) for sid in sorted(self.ha_resources)
                if v.get('type') in (None, sid.split(':')[0])]

    def _ha_res_known(self, sid):
        sid = parse_sid(sid)[0]
        if sid not in self.ha_resources:
            raise _die("no such resource '{0}'".format(sid))
        return sid

    async def _ha_res_read(self, v, user):
        return self._ha_res_view(self._ha_res_known(v['sid']))

    def _ha_vm_state(self, sid):
        kind, vmid = sid.split(':')
        vm = self.vm(int(vmid)) if kind == 'vm' else None
        if vm is not None:
            state = self.ha_resources.get(sid, {}).get('state', 'started') if sid in self.ha_resources else None
            vm.ha_state = {'enabled': 'started', 'disabled': 'stopped'}.get(state, state)

    async def _ha_res_create(self, v, user):
        sid, kind, name = parse_sid(v['sid'])
        if v.get('type') and v['type'] != kind:
            raise _die('types does not match')
        self.need_quorum()
        guest = self.vm(int(name)) if kind == 'vm' else self.guest(int(name))
        if guest is None or (kind == 'vm' and guest not in self.vms):
            raise _die("{0} '{1}' does not exist in cluster".format('VM' if kind == 'vm' else 'CT', name))
        if getattr(guest, 'template', False):
            raise _die('cannot manage template as HA resource')
        if sid in self.ha_resources:
            raise _die("create resource failed: resource ID '{0}' already defined".format(sid))
        self.ha_resources[sid] = dict((k, x) for k, x in v.items() if k in RESOURCE_KEYS)
        self._ha_vm_state(sid)

    async def _ha_res_update(self, v, user):
        sid = self._ha_res_known(v['sid'])
        self.need_quorum()
        if v.get('digest') and v['digest'] != _digest(self.ha_resources):
            raise _die('update resource failed: detected modified configuration - file changed by other user? '
                       'Try again.')
        item = self.ha_resources[sid]
        for key in split_list(v.get('delete')):
            item.pop(key, None)
        item.update((k, x) for k, x in v.items() if k in RESOURCE_KEYS)
        self._ha_vm_state(sid)

    async def _ha_res_delete(self, v, user):
        sid = self._ha_res_known(v['sid'])
        self.need_quorum()
        self.ha_forget(sid, purge=v.get('purge', 1) not in (0, '0', False))

    def ha_forget(self, sid, purge=True):
        """Remove an HA resource; with purge, also from the rules that name it (a rule left empty goes)."""
        self.ha_resources.pop(sid, None)
        self._ha_pending_stops.pop(int(sid.split(':')[1]), None)
        if purge:
            for rule_id, rule in sorted(self.ha_rules.items()):
                left = [r for r in split_list(rule.get('resources')) if r != sid]
                if not left:
                    del self.ha_rules[rule_id]
                else:
                    rule['resources'] = ','.join(left)
        self._ha_vm_state(sid)

    async def _qm_destroy(self, v, user):
        # qemu-server src/PVE/API2/Qemu.pm destroy_vm: with purge, the worker also removes the VM from the HA
        # resources and rules (HA/Config.pm delete_service_from_config) once the VM is destroyed (see task()).
        sid = 'vm:{0}'.format(int(v['vmid']))
        self._ha_purge_on_destroy = sid if v.get('purge') and sid in self.ha_resources else None
        try:
            return await super()._qm_destroy(v, user)
        finally:
            self._ha_purge_on_destroy = None

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        sid = self._ha_purge_on_destroy
        if ttype == 'qmdestroy' and sid == 'vm:{0}'.format(tid):
            work = body

            async def body():
                note = await work()
                self.ha_forget(sid)
                return note
        return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)

    # ------------------------------------------------------------------ rules

    def _ha_rule_view(self, rule_id):
        return dict(self.ha_rules[rule_id], rule=rule_id, digest=_digest(self.ha_rules))

    async def _ha_rule_list(self, v, user):
        out = []
        for rule_id in sorted(self.ha_rules):
            rule = self.ha_rules[rule_id]
            if v.get('type') not in (None, rule['type']):
                continue
            if v.get('resource') and parse_sid(v['resource'])[0] not in split_list(rule.get('resources')):
                continue
            out.append(self._ha_rule_view(rule_id))
        return out

    def _ha_rule_known(self, rule_id):
        if rule_id not in self.ha_rules:
            raise _die("HA rule '{0}' does not exist".format(rule_id))
        return rule_id

    async def _ha_rule_read(self, v, user):
        return self._ha_rule_view(self._ha_rule_known(v['rule']))

    def _ha_rule_values(self, kind, v, create):
        """The rule's options from the request, checked as the type's schema would (fakepve skips oneOf)."""
        if kind not in RULE_KEYS:
            raise _param_error(type="value '{0}' does not have a value in the enumeration "
                                    "'node-affinity, resource-affinity'".format(kind))
        keys = RULE_KEYS[kind]
        errors = {}
        out = {}
        for key, val in v.items():
            if key in ('rule', 'type', 'digest', 'delete'):
                continue
            if key not in keys:
                errors[key] = NOT_IN_SCHEMA
                continue
            out[key] = val
        if create:
            for key, required in keys.items():
                if required and key not in out:
                    errors[key] = 'property is missing and it is not optional'
        if out.get('affinity') not in (None, 'positive', 'negative'):
            errors['affinity'] = "value '{0}' does not have a value in the enumeration 'positive, negative'".format(
                out['affinity'])
        for key in ('strict', 'disable'):
            if key in out:
                if str(out[key]) not in ('0', '1', 'true', 'false'):
                    errors[key] = "type check ('boolean') failed - got '{0}'".format(out[key])
                else:
                    out[key] = 1 if str(out[key]) in ('1', 'true') else 0
        if errors:
            raise PveError(400, 'Parameter verification failed.', errors)
        if 'resources' in out:
            out['resources'] = _resource_list(out['resources'])
        if 'nodes' in out:
            out['nodes'] = _node_list(out['nodes'])
        return out

    def _ha_rule_check(self, rule, errmsg):
        unmanaged = [sid for sid in split_list(rule.get('resources')) if sid not in self.ha_resources]
        if unmanaged:
            raise _die('{0}: cannot use unmanaged resource(s) {1}.'.format(errmsg, ', '.join(unmanaged)))
        missing = [n.split(':')[0] for n in split_list(rule.get('nodes')) if n.split(':')[0] not in self.nodes]
        if missing:
            raise _die('{0}: cannot use non-existent node(s) {1}.'.format(errmsg, ', '.join(missing)))
        if rule['type'] == 'resource-affinity' and len(split_list(rule.get('resources'))) < 2:
            raise _die('{0}: rule must include at least two resources.'.format(errmsg))

    async def _ha_rule_create(self, v, user):
        errmsg = 'create ha rule failed'
        if not v.get('rule'):
            raise _param_error(rule='property is missing and it is not optional')
        if not re.fullmatch(r'[a-zA-Z][a-zA-Z0-9_\-]*', str(v['rule'])):
            raise _param_error(rule="invalid format - invalid configuration ID '{0}'".format(v['rule']))
        kind = v.get('type')
        if kind is None:
            raise _param_error(type='property is missing and it is not optional')
        rule = self._ha_rule_values(kind, v, True)
        rule['type'] = kind
        self.need_quorum()
        if v['rule'] in self.ha_rules:
            raise _die("{0}: HA rule '{1}' already defined".format(errmsg, v['rule']))
        self._ha_rule_check(rule, errmsg)
        self.ha_rules[v['rule']] = rule

    async def _ha_rule_update(self, v, user):
        errmsg = 'update ha rule failed'
        rule_id = self._ha_rule_known(v['rule'])
        current = self.ha_rules[rule_id]
        kind = v.get('type')
        if kind is None:
            raise _param_error(type='property is missing and it is not optional')
        if kind != current['type']:
            raise _die("{0}: rule type '{1}' does not match the rule's type '{2}'".format(
                errmsg, kind, current['type']))
        if v.get('digest') and v['digest'] != _digest(self.ha_rules):
            raise _die('{0}: detected modified configuration - file changed by other user? Try again.'.format(
                errmsg))
        updated = dict(current)
        for key in split_list(v.get('delete')):
            if RULE_KEYS[kind].get(key):
                raise _param_error(delete="unable to delete required option '{0}'".format(key))
            updated.pop(key, None)
        updated.update(self._ha_rule_values(kind, v, False))
        self.need_quorum()
        self._ha_rule_check(updated, errmsg)
        self.ha_rules[rule_id] = updated

    async def _ha_rule_delete(self, v, user):
        rule_id = self._ha_rule_known(v['rule'])
        self.need_quorum()
        del self.ha_rules[rule_id]

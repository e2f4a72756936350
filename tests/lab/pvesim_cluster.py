"""Node networks and HA (resources and PVE 9 rules) for ShadowPve.

Node networks follow pve-manager's PVE/API2/Network.pm: writes go to /etc/network/interfaces.new (kept here as
`node_networks[node]['config']`); `PUT /nodes/{node}/network` applies it (a `srvreload` task), `DELETE` reverts
it. GET answers the pending-inclusive config; an interface not yet applied has no `active` flag, as on PVE.
HA follows pve-ha-manager's PVE/API2/HA/Resources.pm and Rules.pm (PVE 9): errors are prefixed with the
operation ("create ha rule failed: ...") and answers carry the config file's `digest`.
"""

import asyncio
import copy
import difflib
import hashlib
import ipaddress
import json
import re
import time

from aiohttp import web
from fakepve.model import PveError, TaskError
from fakepve.routing import split_list

__all__ = ['NodeNetworkApi', 'HaApi']

# pve-ha-manager src/PVE/API2/HA/Resources.pm check_service_state
ERROR_STATE = "service '{0}' in error state, must be disabled and fixed first"
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
        # pve-manager API2/Network.pm update_network: method, method6 and families follow this request alone
        # ($param->{method} = $param->{address} ? 'static' : 'manual'; inet/inet6 only for an address sent), while
        # address, netmask and gateway stay in the stanza (fakepve's _nn_options kept 'static' for them)
        sent4, sent6 = bool(v.get('cidr') or v.get('address')), bool(v.get('cidr6') or v.get('address6'))
        item['method'], item['method6'] = ('static' if sent4 else 'manual'), ('static' if sent6 else 'manual')
        item['families'] = (['inet'] if sent4 else []) + (['inet6'] if sent6 else []) or ['inet']
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

    def network_changes(self, node):
        """The staged diff as PVE reports it: pve-common INotify.pm read_file($full) diffs interfaces and
        interfaces.new (ccache_compute_diff); None without staged changes. The text is this simulator's."""
        if not self.network_pending(node):
            return None
        net = self._network_for(node)

        def text(config):
            # roughly as pve-common Network/Interfaces.pm writes /etc/network/interfaces: one line per option
            out = []
            for name in sorted(config):
                opts = config[name]
                if opts.get('autostart'):
                    out.append('auto {0}'.format(name))
                out.append('iface {0} inet {1}'.format(name, opts.get('method') or 'manual'))
                out.extend('\t{0} {1}'.format(key.replace('_', '-'), opts[key]) for key in sorted(opts)
                           if key not in ('type', 'method', 'families', 'priority', 'exists', 'autostart', 'comments'))
                if opts.get('comments'):
                    out.append('#{0}'.format(opts['comments']))
                out.append('')
            return out
        return '\n'.join(difflib.unified_diff(text(net['running']), text(net['config']), '/etc/network/interfaces',
                                              '/etc/network/interfaces.new', lineterm='')) + '\n'

    @web.middleware
    async def network_changes_middleware(self, request, handler):
        """pve-manager API2/Network.pm index: set_result_attrib('changes', $changes), which pve-http-server
        Formatter/Standard.pm prepare_response_data puts beside `data` in the answer."""
        response = await handler(request)
        found = re.fullmatch(r'/api2/json/nodes/([^/]+)/network', request.path)
        if request.method != 'GET' or not found or response.status != 200:
            return response
        changes = self.network_changes(found.group(1))
        if not changes:
            return response
        body = json.loads(response.text)
        body['changes'] = changes
        return web.json_response(body)

    def stage_node_network(self, node, iface, **options):
        """Stage a change of ``iface`` on ``node`` as another admin would in the GUI (not applied)."""
        net = self._network_for(node)
        net['config'].setdefault(iface, {}).update(options)


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
    # pve-ha-manager src/PVE/HA/Rules.pm encode_value: the set of sids, sorted as strings.
    return ','.join(sorted({parse_sid(item)[0] for item in split_list(text)}))


def _parse_nodes(text):
    """pve-ha-manager src/PVE/HA/Rules/NodeAffinity.pm decode_plugin_value: {node: priority}, a missing priority
    is 0 (Tools.pm parse_node_priority); a node listed twice keeps its last priority."""
    out = {}
    for item in split_list(text):
        found = re.fullmatch(r'([a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?)(?::(\d+))?', item)
        if found:
            out[found.group(1)] = int(found.group(2) or 0)
    return out


def _node_list(text):
    # NodeAffinity.pm encode_plugin_value: sorted by node, a priority of 0 is not written.
    nodes = _parse_nodes(text)
    return ','.join(n if not nodes[n] else '{0}:{1}'.format(n, nodes[n]) for n in sorted(nodes))


def _disjoint_sets(rules):
    """pve-ha-manager src/PVE/HA/Rules/Helpers.pm find_disjoint_rules_resource_sets: one pass over the rules
    sorted by their lowest sid (as strings), each joining the first group it overlaps."""
    def lowest(rid):
        return min(rules[rid]['resources'] or [''])
    groups = []
    for rid in sorted(sorted(rules), key=lowest):
        for group in groups:
            if group['resources'] & rules[rid]['resources']:
                group['ids'].append(rid)
                group['resources'] |= rules[rid]['resources']
                break
        else:
            groups.append({'ids': [rid], 'resources': set(rules[rid]['resources'])})
    return groups


def rule_feasibility(stored, nodes):
    """pve-ha-manager src/PVE/HA/Rules.pm check_feasibility with the checks PVE 9 registers, in its order:
    Rules/NodeAffinity.pm check_single_resource_reference; Rules/ResourceAffinity.pm
    check_resource_affinity_resources_count, check_negative_resource_affinity_resources_count,
    check_inter_resource_affinity_rules_consistency; Rules.pm
    check_single_priority_node_affinity_in_resource_affinity_rules,
    check_single_node_affinity_per_positive_resource_affinity_rule,
    check_negative_resource_affinity_node_affinity_consistency. Disabled rules are left out (foreach_rule
    exclude_disabled_rules: any `disable` key). `nodes`: the CRM's node list. Returns {rule id: {'resources':
    [message, ...]}}."""
    rules = {}
    for rid, rule in stored.items():
        if 'disable' in rule:
            continue
        rules[rid] = dict(rule, resources=set(split_list(rule.get('resources'))), nodes=_parse_nodes(rule.get('nodes')))
    node_aff = dict((r, x) for r, x in rules.items() if x['type'] == 'node-affinity')
    res_aff = dict((r, x) for r, x in rules.items() if x['type'] == 'resource-affinity')
    positive = dict((r, x) for r, x in res_aff.items() if x.get('affinity') == 'positive')
    negative = dict((r, x) for r, x in res_aff.items() if x.get('affinity') == 'negative')
    errors = {}

    def blame(rid, message):
        errors.setdefault(rid, {}).setdefault('resources', []).append(message)

    users = {}
    for rid, rule in node_aff.items():
        for sid in rule['resources']:
            users.setdefault(sid, []).append(rid)
    for sid, ids in sorted(users.items()):
        if len(ids) > 1:
            for rid in ids:
                blame(rid, "resource '{0}' is already used in another node affinity rule".format(sid))
    for rid, rule in sorted(res_aff.items()):
        if len(rule['resources']) < 2:
            blame(rid, 'rule is ineffective as there are less than two resources')
    for rid, rule in sorted(negative.items()):
        if len(rule['resources']) > len(nodes):
            blame(rid, 'rule defines more resources than available nodes')
    for group in _disjoint_sets(positive):
        for rid, rule in sorted(negative.items()):
            if len(group['resources'] & rule['resources']) >= 2:
                blame(rid, 'rule shares two or more resources with a positive resource affinity rule')
                for pid in group['ids']:
                    blame(pid, 'rule shares two or more resources with a negative resource affinity rule')
    for rid, rule in sorted(res_aff.items()):
        paired = [n for n in sorted(node_aff) if node_aff[n]['resources'] & rule['resources']]
        if any(len(set(node_aff[n]['nodes'].values())) > 1 for n in paired):
            blame(rid, 'resources are in node affinity rules with multiple priorities')
            for nid in paired:
                blame(nid, 'resources are in a resource affinity rule and cannot be in a node affinity rule with '
                           'multiple priorities')
    for group in _disjoint_sets(positive):
        paired = [n for n in sorted(node_aff) if node_aff[n]['resources'] & group['resources']]
        if len(paired) > 1:
            for pid in group['ids']:
                blame(pid, 'resources are in multiple node affinity rules')
            for nid in paired:
                blame(nid, 'at least one resource is in a positive resource affinity rule and there are other '
                           'resources in at least one other node affinity rule already')
    for rid, rule in sorted(negative.items()):
        located, allowed, paired = set(), set(), []
        for nid in sorted(node_aff):
            common = rule['resources'] & node_aff[nid]['resources']
            if common:
                located |= common
                allowed |= set(node_aff[nid]['nodes'])
                paired.append(nid)
        if len(allowed) < len(located):
            blame(rid, 'two or more resources are restricted to less nodes than available to the resources')
            for nid in paired:
                blame(nid, 'at least one resource is in a negative resource affinity rule and this rule would '
                           'restrict these to less nodes than available to the resources')
    return errors


class HaApi(object):
    """Mixin of ShadowPve: /cluster/ha/resources and /cluster/ha/rules."""

    def _init_ha(self):
        # sid ('vm:100') -> options; rule id -> options (with type).
        self.ha_resources = {}
        self.ha_rules = {}
        # rule id -> `order` (Rules.pm get_next_ordinal); a rule put straight into ha_rules has order 1.
        self.ha_rule_order = {}
        # The recovery part of PVE's CRM, off unless enable_ha_recovery() is called: sid -> when its node was
        # first seen offline; sid -> (from node, to node, time) of each recovery done.
        self.ha_fence_secs = None
        self._ha_offline_since = {}
        # True: no node is allowed to take a fenced service (select_service_node finds none), whatever the rules say;
        # the service stays in 'recovery' (see ha_recovery_tick).
        self.ha_recovery_blocked = False
        self.ha_recoveries = []
        # The stop part of PVE's CRM and LRM: a stop of an HA-managed VM is only queued (see _ha_request); the VM
        # stops once ha_crm_polls later requests have read its state AND ha_delay PVE seconds (scaled by
        # time_scale) have passed, so it stays running for a while at every time scale, 0 included.
        # vmid -> {'since': epoch, 'polls': n}.
        self.ha_crm_polls = 3
        self._ha_pending_stops = {}
        self.ha_stops_to_drop = 0       # HA stops the CRM loses (a concurrent migrate, relocate, fence or freeze)
        # Services in the CRM's error state: sid -> why. An HA-managed VM's start only asks HA (ha_start); when the
        # LRM's start fails (pve-ha-manager src/PVE/HA/LRM.pm handle_service_exitcode, after max_restart tries on the
        # node, which fail the same way here) src/PVE/HA/Manager.pm next_state_started relocates the service to
        # another node, up to the resource's max_relocate (default 1) times, and then changes it to 'error'
        # ("recovery policy for service ... failed, entering error state"). The VM stays stopped (on the last node
        # tried), status/current's ha.state (HA/Config.pm get_service_status: the CRM's service state) is 'error',
        # and a new start request changes nothing; only the resource's state set to 'disabled' clears it
        # (Manager.pm next_state_error: the service goes to 'stopped'), after which 'started' starts it again.
        # ha_relocations: (sid, from node, to node) of each relocation.
        self.ha_relocations = []
        self.ha_errors = {}
        # The HA resource a destroy with purge being started takes out of HA when its task is done.
        self._ha_purge_on_destroy = None
        # The CRM's node list (manager_status node_status: node -> state). Empty until a CRM becomes master,
        # which it does only once HA resources are configured (pve-ha-manager src/PVE/HA/CRM.pm can_get_active):
        # ha_crm_start_secs PVE seconds (scaled by time_scale) after the first HA resource; never while
        # ha_crm_running is False (pve-ha-crm stopped). The rules API counts these nodes, not the cluster's.
        self.ha_node_status = {}
        # Nodes asked into maintenance (`ha-manager crm-command node-maintenance enable <node>`: src/PVE/CLI/
        # ha_manager.pm node-maintenance-set queues the command; src/PVE/HA/Manager.pm update_crm_commands sets
        # node_request maintenance, the node's LRM goes into mode maintenance, and src/PVE/HA/NodeStatus.pm update
        # shows the node as 'maintenance' while it is online). See set_node_maintenance. ha_migrations: (sid, from
        # node, to node) of each service the CRM moved off a node in maintenance, or back onto it afterwards.
        self.ha_maintenance = set()
        self._ha_maintenance_node = {}
        self.ha_migrations = []
        self.ha_crm_start_secs = 10.0
        self.ha_crm_running = True
        self._ha_crm_waiting_since = None
        # HA groups not yet migrated to rules (/etc/pve/ha/groups.cfg of a cluster upgraded from PVE 8): group ->
        # {'nodes': 'pve1:2,pve2', 'restricted': 0|1, 'nofailback': 0|1, 'comment': ...}. pve-ha-manager
        # src/PVE/HA/Config.pm have_groups_been_migrated is true only while this is empty; until then
        # src/PVE/API2/HA/Rules.pm create_rule/update_rule refuse every write and GET lists each used group as a
        # generated rule (Groups.pm migrate_groups_to_rules). ha_migrate_groups() is the CRM's migration.
        self.ha_groups = {}

    # ------------------------------------------------------------- recovery

    def enable_ha_recovery(self, fence_secs=120):
        """Recover HA resources (state started) from offline nodes, as PVE's CRM does once it has fenced the node:
        fence_secs PVE seconds (scaled by time_scale) after the node is first seen offline, the VM moves to an
        online node and starts there. The node: an online one, not holding a VM the resource has a negative
        resource-affinity rule with, among a node-affinity rule's nodes of the highest priority when it has one,
        then the one with the fewest VMs. Checked on every request."""
        self.ha_fence_secs = float(fence_secs)

    def ha_recovery_tick(self, now=None):
        """pve-ha-manager src/PVE/HA/Manager.pm: a service on a node gone offline goes to 'fence' (next_state_started,
        next_state_stopped: a stopped service too, a disabled one never - next_state_stopped returns before the
        fencing logic; an ignored one is not managed, one in error stays so); once the node is fenced,
        next_state_recovery moves it to a node select_service_node allows ('started' starts there, 'stopped' stays
        stopped: request_stop), or, when none is allowed, stays in 'recovery' ("recovering service ... failed, no
        recovery node found"), retried every round. The state is the VM's ha_state (status/current ha.state and
        /cluster/resources hastate)."""
        if self.ha_fence_secs is None:
            return
        now = time.time() if now is None else now
        for sid, res in sorted(self.ha_resources.items()):
            kind, vmid = sid.split(':')
            vm = self.vm(int(vmid)) if kind == 'vm' else None
            state = res.get('state', 'started')
            if vm is None or state not in ('started', 'enabled', 'stopped') or sid in self.ha_errors \
                    or self.nodes.get(vm.node, {}).get('online', True):
                if self._ha_offline_since.pop(sid, None) is not None:
                    self._ha_vm_state(sid)              # the node came back before it was fenced
                continue
            since = self._ha_offline_since.setdefault(sid, now)
            if now - since < self.ha_fence_secs * (self.time_scale or 0):
                vm.ha_state = 'fence'
                continue
            target = self._ha_recovery_node(sid, vm)
            if target is None or self.ha_recovery_blocked:
                vm.ha_state = 'recovery'
                continue
            self.ha_recoveries.append((sid, vm.node, target, now))
            self._ha_offline_since.pop(sid, None)
            vm.node = target
            if state == 'stopped':
                vm.ha_state = 'stopped'
                continue
            vm.status = vm.qmpstatus = 'running'
            vm.started_at = now
            vm.ha_state = 'started'

    def _ha_recovery_node(self, sid, vm, exclude=()):
        # NodeStatus.pm list_online_nodes: only nodes in state online (not maintenance) take services
        online = sorted(n for n, info in self.nodes.items() if info.get('online', True) and n not in exclude
                        and self.ha_node_status.get(n, 'online') == 'online')
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

    # ------------------------------------------------------------- CRM node status

    def ha_crm_tick(self, now=None):
        """pve-ha-manager src/PVE/HA/NodeStatus.pm update: the master CRM adds every node it sees online to
        node_status and keeps the ones that go offline (as unknown); before a CRM is master, node_status is empty."""
        if not self.ha_crm_running:
            return
        now = time.time() if now is None else now
        if not self.ha_node_status:
            if not self.ha_resources:
                self._ha_crm_waiting_since = None
                return
            if self._ha_crm_waiting_since is None:
                self._ha_crm_waiting_since = now
            if now - self._ha_crm_waiting_since < self.ha_crm_start_secs * (self.time_scale or 0):
                return
        for node, info in sorted(self.nodes.items()):
            if info.get('online', True):
                # NodeStatus.pm update: an online node whose LRM is in maintenance mode is 'maintenance'
                self.ha_node_status[node] = 'maintenance' if node in self.ha_maintenance else 'online'
            elif node in self.ha_node_status:
                self.ha_node_status[node] = 'unknown'
        self._ha_maintenance_moves()

    def set_node_maintenance(self, node, enable=True):
        """`ha-manager crm-command node-maintenance enable|disable <node>`: at the CRM's next round (the next
        request) the node's HA state becomes 'maintenance' (in /cluster/resources `hastate` and manager_status
        node_status) and the CRM moves every HA service that is started on it to another online node (a live
        migration: the VM keeps running), remembering the node; once maintenance is disabled the services go back
        (pve-ha-manager src/PVE/HA/Manager.pm next_state_started, `maintenance_node`). Needs a master CRM (HA
        resources configured), as on PVE, where the command waits in the CRM's queue until then."""
        if enable:
            self.ha_maintenance.add(node)
        else:
            self.ha_maintenance.discard(node)

    def _ha_maintenance_moves(self):
        for sid, res in sorted(self.ha_resources.items()):
            kind, vmid = sid.split(':')
            vm = self.vm(int(vmid)) if kind == 'vm' else None
            if vm is None or res.get('state', 'started') not in ('started', 'enabled') or self.ha_in_error(vm):
                continue
            home = self._ha_maintenance_node.get(sid)
            if self.ha_node_status.get(vm.node) == 'maintenance':
                target = self._ha_recovery_node(sid, vm, exclude=(vm.node,))
                if target is None:
                    continue                    # Manager.pm: no node to move it to; it stays where it is
                self._ha_maintenance_node.setdefault(sid, vm.node)
                self.ha_migrations.append((sid, vm.node, target))
                vm.node = target
            elif home is not None and self.ha_node_status.get(home) == 'online':
                del self._ha_maintenance_node[sid]
                if vm.node != home:
                    self.ha_migrations.append((sid, vm.node, home))
                    vm.node = home

    async def _resources(self, request):
        # pve-manager PVE/API2/Cluster.pm resources: a node entry carries `hastate`, the CRM's node_status of it
        # (online, maintenance, unknown, fence, gone), whenever the CRM's manager_status lists the node.
        # A qemu entry of an HA resource carries `hastate` too: the CRM's service state (manager_status
        # service_status: started, stopped, fence, recovery, error ...), else the resource's configured state (pve-manager
        # PVE/API2/Cluster.pm resources). Read at each request, not through pvestatd.
        response = await super()._resources(request)
        if not self.ha_node_status and not self.ha_resources:
            return response
        body = json.loads(response.text)
        for item in body.get('data') or []:
            if isinstance(item, dict) and item.get('type') == 'node' and item.get('node') in self.ha_node_status:
                item['hastate'] = self.ha_node_status[item['node']]
            elif isinstance(item, dict) and item.get('type') == 'qemu' and \
                    'vm:{0}'.format(item.get('vmid')) in self.ha_resources:
                vm = self.vm(int(item['vmid']))
                res = self.ha_resources['vm:{0}'.format(item['vmid'])]
                # Cluster.pm: service_status' state, else read_resources_config's (no default filled in there)
                hastate = (getattr(vm, 'ha_state', None) if vm is not None else None) or res.get('state')
                if hastate:
                    item['hastate'] = hastate
        return web.json_response(body)

    async def _ha_manager_status(self, v, user):
        # pve-ha-manager src/PVE/API2/HA/Status.pm manager_status: the file as the CRM wrote it ({} before).
        status = {}
        if self.ha_node_status:
            master = next((n for n in sorted(self.ha_node_status) if self.ha_node_status[n] == 'online'), None)
            status = {'master_node': master, 'node_status': dict(self.ha_node_status),
                      'service_status': {}, 'timestamp': int(time.time())}
        quorum = {'node': next(iter(sorted(self.nodes)), 'pve1'), 'quorate': '1' if self.quorate else '0'}
        return {'manager_status': status, 'quorum': quorum}

    @web.middleware
    async def ha_recovery_middleware(self, request, handler):
        self.ha_crm_tick()
        self.ha_recovery_tick()
        self.ha_stop_tick(request.method, request.path)
        return await handler(request)

    # ------------------------------------------------------------ stop via HA

    def ha_stop_pending(self, vmid):
        """True while a stop of this HA-managed VM is queued and the CRM/LRM have not stopped it yet."""
        return int(vmid) in self._ha_pending_stops

    async def _ha_request(self, vm, user, state):
        if state == 'started':
            if self.ha_in_error(vm):
                # qemu-server Qemu.pm vm_start's 'hastart' worker runs `ha-manager set vm:N --state started`:
                # pve-ha-manager API2/HA/Resources.pm update -> check_service_state dies for a service in error (only
                # 'disabled' passes), the command exits non-zero and run_command fails the task; nothing changes
                sid = 'vm:{0}'.format(vm.vmid)

                async def refused():
                    raise TaskError("command 'ha-manager set {0} --state started' failed: exit code 255".format(sid))
                return await self._hastart_task(vm, user, refused, log=[ERROR_STATE.format(sid)])
            self._ha_requested_started('vm:{0}'.format(vm.vmid))
        if state != 'stopped':
            return await super()._ha_request(vm, user, state)
        # qemu-server src/PVE/API2/Qemu.pm vm_stop and vm_shutdown: for an HA-managed VM the API only runs
        # `ha-manager crm-command stop vm:<vmid> <timeout>` in a 'hastop' worker, which ends at once
        # (pve-ha-manager src/PVE/CLI/ha_manager.pm stop -> src/PVE/HA/Config.pm queue_crm_commands); the VM is
        # still running when the task is done. ha_stop_tick models the CRM and LRM acting later.
        vmid = vm.vmid

        async def body():
            if self.ha_stops_to_drop > 0:
                # Manager.pm: the queued command sits in the service's status until next_state_started acts on it;
                # a change of the service's state meanwhile ($change_service_state deletes every key) drops it
                self.ha_stops_to_drop -= 1
                return
            self._ha_pending_stops.setdefault(vmid, {'since': time.time(), 'polls': 0})
        return await self.task(vm.node, 'hastop', vmid, user, body, lock=False,
                               log=['Requesting HA stop for VM {0}'.format(vmid)])

    async def _do_stop(self, vm, user, p):
        # qemu-server src/PVE/API2/Qemu.pm vm_stop: for an HA-managed VM the API queues the HA stop without looking at
        # the VM's lock (fakepve checks it first); the LRM's stop then meets it (see ha_stop_tick)
        if vm.ha_managed:
            return await self._ha_request(vm, user, 'stopped')
        return await super()._do_stop(vm, user, p)

    async def _do_shutdown(self, vm, user, p):
        # qemu-server src/PVE/API2/Qemu.pm vm_shutdown, before anything else: a paused VM (QemuServer.pm vm_is_paused
        # with $include_suspended: QMP paused, prelaunch or suspended) is refused unless forceStop, which warns and
        # stops it instead (the shutdown "runs into timeouts, and ... when the VM gets resumed later, it still gets the
        # request delivered and powers off"). fakepve would send the paused guest an ACPI shutdown.
        paused = vm.status == 'running' and vm.qmpstatus in ('paused', 'prelaunch', 'suspended')
        if paused and str(p.get('forceStop', '0')).lower() not in ('1', 'true'):
            raise PveError(500, 'VM is paused - cannot shutdown')
        if vm.ha_managed:
            self._need_running(vm)
            return await self._ha_request(vm, user, 'stopped')
        if paused:
            return await super()._do_stop(vm, user, p)
        return await super()._do_shutdown(vm, user, p)

    def ha_stop_tick(self, method, path, now=None):
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
            if vm.lock and vm.status == 'running':
                # The LRM stops through vm_stop -> QemuServer.pm _do_vm_stop, whose check_lock dies; LRM.pm returns
                # ERROR ("unable to stop service ... (still running)") and Manager.pm next_state_request_stop
                # logs "stop failed" and changes the service to 'error'. The VM keeps running.
                self.ha_errors[sid] = 'stop failed: VM is locked ({0})'.format(vm.lock)
                vm.ha_state = 'error'
                continue
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
                ('DELETE', rules + '/{rule}', self._ha_rule_delete),
                ('GET', '/cluster/ha/status/manager_status', self._ha_manager_status),
                ('GET', '/cluster/ha/groups', self._ha_group_list)]

    # ----------------------------------------------------------------- groups
    # pve-ha-manager (PVE 9) keeps groups.cfg only until the CRM migrated it to rules (src/PVE/HA/Manager.pm
    # try_persistent_group_migration, every 6 rounds: all nodes online, their LRMs active or idle in mode active,
    # every node at pve-manager >= 9.0.0~16).

    def ha_groups_migrated(self):
        # src/PVE/HA/Config.pm have_groups_been_migrated: true when groups.cfg has no entries
        return not self.ha_groups

    async def _ha_group_list(self, v, user):
        # src/PVE/API2/HA/Groups.pm index: dies once the groups are migrated (a fresh PVE 9 has none either)
        if self.ha_groups_migrated():
            raise _die('cannot index groups: ha groups have been migrated to rules')
        return [dict(self.ha_groups[g], group=g, type='group', digest=_digest(self.ha_groups))
                for g in sorted(self.ha_groups)]

    def _ha_group_rules(self, rules):
        """src/PVE/HA/Groups.pm migrate_groups_to_rules: each group a resource names, as node-affinity rule
        'ha-group-<group>' (Rules.pm GET and check_feasibility see them; rules.cfg does not have them yet).
        Returns (rules, their order)."""
        rules, order = dict(rules), dict(self.ha_rule_order)
        members = {}
        for sid, res in sorted(self.ha_resources.items()):
            if res.get('group') in self.ha_groups:
                members.setdefault(res['group'], []).append(sid)
        for group, sids in sorted(members.items()):
            cfg = self.ha_groups[group]
            rid = 'ha-group-{0}'.format(group)
            rules[rid] = {'type': 'node-affinity', 'resources': ','.join(sids), 'nodes': cfg.get('nodes', ''),
                          'strict': 1 if str(cfg.get('restricted', 0)) in ('1', 'true') else 0,
                          'comment': cfg.get('comment') or "Generated from HA group '{0}'.".format(group)}
            # Rules.pm get_next_ordinal
            order[rid] = (min(order[r] for r in rules if r in order) if any(r in order for r in rules) else 0) + 1
        return rules, order

    def ha_migrate_groups(self):
        """The CRM's persistent migration (Manager.pm $migrate_group_persistently): the generated rules are written
        to rules.cfg, each grouped resource loses `group` and gets failback from the group's nofailback
        (Groups.pm migrate_groups_to_resources), and groups.cfg is deleted."""
        self.ha_rules, self.ha_rule_order = self._ha_group_rules(self.ha_rules)
        for res in self.ha_resources.values():
            group = res.pop('group', None)
            if group in self.ha_groups:
                res['failback'] = 0 if str(self.ha_groups[group].get('nofailback', 0)) in ('1', 'true') else 1
        self.ha_groups = {}

    # -------------------------------------------------------------- resources

    def _ha_res_view(self, sid):
        item = dict(self.ha_resources[sid], sid=sid, type=sid.split(':')[0], digest=_digest(self.ha_resources))
        # src/PVE/API2/HA/Resources.pm index/read: `group` is left out once the groups are migrated; a group that
        # does not exist is flagged
        if self.ha_groups_migrated():
            item.pop('group', None)
        elif item.get('group') and item['group'] not in self.ha_groups:
            item['errors'] = {'group': "group '{0}' does not exist".format(item['group'])}
        return item

    def _ha_res_group(self, v, update):
        # Resources.pm create (a defined group) and update (a non-empty one, which must exist): `group` only while
        # the groups are not migrated
        if v.get('group') is None or (update and not v['group']):
            return
        if self.ha_groups_migrated():
            raise _die("invalid parameter 'group': ha groups have been migrated to rules")
        if update and v['group'] not in self.ha_groups:
            raise _die("HA group '{0}' does not exist".format(v['group']))

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
        state = self.ha_resources.get(sid, {}).get('state', 'started') if sid in self.ha_resources else None
        if state == 'ignored':
            # HA/Config.pm service_check_ha_state: an ignored resource is not HA-managed (get_service_status:
            # managed 0), and the CRM drops it from its service status (Manager.pm), error state included
            state = None
        if sid in self.ha_errors and state not in (None, 'disabled'):
            if vm is not None:
                vm.ha_state = 'error'
            return
        self.ha_errors.pop(sid, None)
        if vm is not None:
            vm.ha_state = {'enabled': 'started', 'disabled': 'stopped'}.get(state, state)

    async def ha_start(self, vm, user, problem):
        """The 'hastart' task of an HA-managed VM that its node cannot start (``problem``, the start worker's
        error there): done at once; ha_delay PVE seconds later the CRM relocates it (max_relocate) to a node that can
        start it, or puts it in the error state (see ``ha_errors``)."""
        sid = 'vm:{0}'.format(vm.vmid)
        self._ha_requested_started(sid)

        async def later():
            await self.pause(self.ha_delay)
            res = self.ha_resources.get(sid)
            if res is None or res.get('state', 'started') not in ('started', 'enabled') or vm.status == 'running':
                return                                  # disabled, stopped or removed meanwhile
            why, tried = problem, [vm.node]
            for dummy in range(int(res.get('max_relocate', 1))):
                target = self._ha_recovery_node(sid, vm, exclude=tried)
                if target is None:
                    break
                self.ha_relocations.append((sid, vm.node, target))
                vm.node = target
                tried.append(target)
                why = self.start_problem(vm, target)
                if why is None:
                    vm.apply_pending()
                    vm.status = vm.qmpstatus = 'running'
                    vm.started_at = time.time()
                    vm.ha_state = 'started'
                    return
            self.ha_start_failed(vm, why)

        async def body():
            if self.time_scale:
                asyncio.ensure_future(later())
            else:
                await later()
        return await self._hastart_task(vm, user, body)

    def _hastart_task(self, vm, user, body, log=()):
        """The 'hastart' task qemu-server's vm_start runs for an HA resource (it ends at once; ``body`` is what the
        CRM and LRM do, now or later)."""
        return self.task(vm.node, 'hastart', vm.vmid, user, body, lock=False,
                         log=['Requesting HA start for VM {0}'.format(vm.vmid)] + list(log))

    def _ha_requested_started(self, sid):
        # qemu-server Qemu.pm vm_start for an HA resource runs `ha-manager set <sid> --state started`
        if sid in self.ha_resources and self.ha_resources[sid].get('state', 'started') != 'started':
            self.ha_resources[sid]['state'] = 'started'
            self._ha_vm_state(sid)

    def ha_start_failed(self, vm, why):
        """The CRM gave up starting an HA-managed VM: its service goes to the error state (see ``ha_errors``)."""
        self.ha_errors['vm:{0}'.format(vm.vmid)] = why
        vm.ha_state = 'error'
        vm.status = vm.qmpstatus = 'stopped'

    def ha_in_error(self, vm):
        return 'vm:{0}'.format(vm.vmid) in self.ha_errors

    async def _ha_res_create(self, v, user):
        sid, kind, name = parse_sid(v['sid'])
        if v.get('type') and v['type'] != kind:
            raise _die('types does not match')
        self._ha_res_group(v, False)
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
        self._ha_res_group(v, True)
        # Resources.pm update: check_service_state($sid, $param->{state}) - a service in error takes only 'disabled'
        if sid in self.ha_errors and v.get('state') != 'disabled':
            raise _die(ERROR_STATE.format(sid))
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
                    self.ha_rule_order.pop(rule_id, None)
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
    # pve-ha-manager src/PVE/API2/HA/Rules.pm. Every write runs under lock_ha_domain, which turns any error into a
    # plain string "<errmsg>: <error>" (status 500): "create ha rule failed", "update HA rules failed", "delete
    # ha rule failed". A written rule is checked with check_feasibility against the CRM's node list
    # ($assert_feasibility): its own errors refuse the write ("Rule '<id>' is invalid." plus the messages);
    # errors that the write causes in other rules do not. GET answers every rule's errors as the CRM sees them.

    def _ha_rule_errors(self):
        # Rules.pm $check_feasibility: over $get_full_rules_config (the groups' generated rules included)
        return rule_feasibility(self._ha_group_rules(self.ha_rules)[0], sorted(self.ha_node_status))

    def _ha_rule_view(self, rule_id, errors):
        rules, order = self._ha_group_rules(self.ha_rules)
        item = dict(rules[rule_id], rule=rule_id, digest=_digest(self.ha_rules), order=order.get(rule_id, 1))
        if rule_id in errors:
            item['errors'] = errors[rule_id]
        return item

    async def _ha_rule_list(self, v, user):
        # Rules.pm index: read_rules_config plus the groups' generated rules ($get_full_rules_config)
        errors = self._ha_rule_errors()
        out = []
        rules, order = self._ha_group_rules(self.ha_rules)
        for rule_id in sorted(rules, key=lambda r: (order.get(r, 1), r)):
            rule = rules[rule_id]
            if v.get('type') not in (None, rule['type']):
                continue
            if v.get('resource') and parse_sid(v['resource'])[0] not in split_list(rule.get('resources')):
                continue
            out.append(self._ha_rule_view(rule_id, errors))
        return out

    async def _ha_rule_read(self, v, user):
        if v['rule'] not in self.ha_rules:
            raise _die("no such ha rule '{0}'".format(v['rule']))
        return self._ha_rule_view(v['rule'], self._ha_rule_errors())

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
        # create_rule / update_rule: `delete $param->{disable} if !$param->{disable}` - disable=0 is dropped, so
        # only `delete=disable` enables a disabled rule again.
        if not out.get('disable', 1):
            del out['disable']
        if 'resources' in out:
            out['resources'] = _resource_list(out['resources'])
        if 'nodes' in out:
            out['nodes'] = _node_list(out['nodes'])
        return out

    def _ha_rule_check(self, rule):
        """$assert_valid_resources_param and $assert_valid_nodes_param (each when the request gives the key)."""
        if 'resources' in rule:
            sids = split_list(rule['resources'])
            if not sids:
                raise _die('no resources were specified')
            unmanaged = [sid for sid in sids if sid not in self.ha_resources]
            if unmanaged:
                raise _die('cannot use unmanaged resource(s) {0}.'.format(', '.join(unmanaged)))
        if 'nodes' in rule:
            nodes = _parse_nodes(rule['nodes'])
            if not nodes:
                raise _die('no nodes were specified')
            missing = [n for n in sorted(nodes) if n not in self.nodes]
            if missing:
                raise _die('cannot use non-existent node(s) {0}.'.format(', '.join(missing)))

    def _ha_rule_assert_feasible(self, rules, rule_id):
        errors = rule_feasibility(rules, sorted(self.ha_node_status)).get(rule_id)
        if errors:
            # PVE::Exception stringified by lock_ha_domain: "400 <msg>\n<field>: <messages joined by ', '>".
            detail = ''.join('{0}: {1}\n'.format(k, ', '.join(m)) for k, m in sorted(errors.items()))
            raise _die("400 Rule '{0}' is invalid.\n{1}".format(rule_id, detail).rstrip('\n'))

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
        # Rules.pm create_rule, before lock_ha_domain (so without its "create ha rule failed: " prefix)
        if not self.ha_groups_migrated():
            raise _die('cannot create ha rule: ha groups have not been migrated yet')
        try:
            if v['rule'] in self.ha_rules:
                raise _die("HA rule '{0}' already defined".format(v['rule']))
            self._ha_rule_check(rule)
            rules = dict(self.ha_rules)
            rules[v['rule']] = rule
            self._ha_rule_assert_feasible(rules, v['rule'])
        except PveError as exc:
            raise _die('{0}: {1}'.format(errmsg, exc.message)) from None
        self.ha_rules[v['rule']] = rule
        # Rules.pm get_next_ordinal: the lowest order in use plus one (as PVE computes it).
        orders = [self.ha_rule_order[r] for r in self.ha_rules if r in self.ha_rule_order]
        self.ha_rule_order[v['rule']] = (min(orders) if orders else 0) + 1

    async def _ha_rule_update(self, v, user):
        errmsg = 'update HA rules failed'
        kind = v.get('type')
        if kind is None:
            raise _param_error(type='property is missing and it is not optional')
        values = self._ha_rule_values(kind, v, False)
        # Rules.pm update_rule, first thing (outside lock_ha_domain)
        if not self.ha_groups_migrated():
            raise _die('cannot update ha rule: ha groups have not been migrated yet')
        try:
            if v.get('digest') and v['digest'] != _digest(self.ha_rules):
                raise _die('detected modified configuration - file changed by other user? Try again.')
            if v['rule'] not in self.ha_rules:
                raise _die("HA rule '{0}' does not exist".format(v['rule']))
            current = self.ha_rules[v['rule']]
            if kind != current['type']:
                raise _die("rule type '{0}' does not match the rule's type '{1}'".format(kind, current['type']))
            self._ha_rule_check(values)
            updated = dict(current)
            # pve-common src/PVE/SectionConfig.pm delete_from_config.
            for key in split_list(v.get('delete')):
                if key not in RULE_KEYS[kind]:
                    raise _die("no such option '{0}'".format(key))
                if RULE_KEYS[kind][key]:
                    raise _die("unable to delete required option '{0}'".format(key))
                if key in values:
                    raise _die("cannot set and delete property '{0}' at the same time!".format(key))
                updated.pop(key, None)
            updated.update(values)
            rules = dict(self.ha_rules)
            rules[v['rule']] = updated
            self._ha_rule_assert_feasible(rules, v['rule'])
        except PveError as exc:
            raise _die('{0}: {1}'.format(errmsg, exc.message)) from None
        self.need_quorum()
        self.ha_rules[v['rule']] = updated

    async def _ha_rule_delete(self, v, user):
        # delete_rule does not check that the rule exists.
        self.need_quorum()
        self.ha_rules.pop(v['rule'], None)
        self.ha_rule_order.pop(v['rule'], None)

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The resource placement template (v1): schema, validation and normalisation. Pure, no API calls.

One table (:data:`SCHEMA`) declares every field with its type, default, range and documentation; the same
table drives validation, the static defaults of the normalised template and ``docs/template.md``.
:func:`validate_template` collects *all* errors (field-level, then cross-field: references, CIDRs, VIPs,
PVE name limits) and returns them with their field path (``services[1].vip``) and what would be valid.
The defaults that depend on other fields (a service's networks and VIP network, a VIP's prefix, a vlan zone's
bridge, a full mirror's rate, the shadow transport, the service-level overrides merged) are filled by one pass,
:func:`_derive`, before the cross-field checks, :func:`_check`, which only report.

The normalised template has every field present, in canonical units: durations in seconds, rates in bit/s,
memory in MiB, networks and addresses in canonical text, service-level ``scaling`` / ``replication``
overrides merged over the template-wide settings.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import math
import re
import typing as t

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import naming
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import units

__all__ = [
    'TEMPLATE_VERSION', 'SCHEMA', 'Field', 'TemplateIssue', 'TemplateValidationError',
    'validate_template', 'normalise_template', 'iter_schema', 'schema_markdown',
]

TEMPLATE_VERSION = 1
MAX_INSTANCES = 100          # keeps VRRP priorities distinct (see plan.py)
MIN_MEMORY_MIB = 512         # the shadow floor; a primary is never smaller than its shadow
MIN_REPLICATION_SECONDS = 60
MIN_FULL_REPLICATION_SECONDS = 300   # a snapshot + re-clone more often than this is abuse


class _Sentinel:
    # Survives copy.deepcopy (merging overrides copies partly invalid dicts).
    def __init__(self, name):
        self.name = name

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self

    def __repr__(self):
        return '<%s>' % self.name


_REQUIRED = _Sentinel('required')
_INVALID = _Sentinel('invalid')


class Field:
    """One template field. ``kind`` picks the parser; the rest are constraints and documentation."""

    def __init__(self, kind, default=_REQUIRED, doc='', choices=None, minimum=None, maximum=None,
                 exclusive_minimum=False, nullable=False, item=None, fields=None, min_items=0,
                 unique=False, max_length=None, example=None, override=None):
        self.kind = kind
        self.default = default
        self.doc = doc
        self.choices = choices
        self.minimum = minimum
        self.maximum = maximum
        self.exclusive_minimum = exclusive_minimum
        self.nullable = nullable
        self.item = item
        self.fields = fields
        self.min_items = min_items
        self.unique = unique
        self.max_length = max_length
        self.example = example
        # For service-level overrides: the template-level field whose sub-fields may be overridden.
        self.override = override

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def type_name(self) -> str:
        names = {
            'str': 'string', 'name': 'name', 'int': 'integer', 'float': 'number', 'bool': 'boolean',
            'duration': 'duration', 'rate': 'rate', 'memory': 'memory size', 'ratio': 'ratio',
            'cidr': 'CIDR', 'ip': 'IP address', 'vip': 'IP address/prefix', 'golden': 'vmid or name',
            'sdn_id': 'SDN id', 'node': 'node name', 'path': 'absolute path', 'dict': 'dict',
            'list': 'list', 'override': 'dict',
        }
        text = names[self.kind]
        if self.kind == 'list' and self.item is not None:
            text = 'list of %s' % self.item.type_name()
        if self.nullable:
            text += ' or null'
        return text

    def valid(self) -> str:
        """What a valid value looks like, for error messages."""
        if self.choices:
            return 'one of: %s' % ', '.join(str(c) for c in self.choices)
        kind = self.kind
        if kind in ('int', 'float', 'ratio'):
            lo = self.minimum
            hi = self.maximum
            what = 'an integer' if kind == 'int' else 'a number'
            if kind == 'ratio':
                what += " (or a percentage such as '25%')"
            if lo is not None and hi is not None:
                return '%s %s %s and <= %s' % (what, '>' if self.exclusive_minimum else '>=', lo, hi)
            if lo is not None:
                return '%s %s %s' % (what, '>' if self.exclusive_minimum else '>=', lo)
            return what
        helps = {
            'str': 'a string',
            'name': naming.LOGICAL_NAME_HELP + (', at most %d characters' % self.max_length
                                                if self.max_length else ''),
            'bool': 'true or false',
            'duration': units.DURATION_HELP,
            'rate': units.RATE_HELP,
            'memory': units.MEMORY_HELP + (', at least %s MiB' % self.minimum if self.minimum else ''),
            'cidr': 'a network in CIDR notation such as 10.10.0.0/24 (host bits zero)',
            'ip': 'an IP address such as 10.10.0.1',
            'vip': 'an address with prefix such as 10.10.0.100/24',
            'golden': 'a template vmid (integer 100..999999999) or a template VM name (DNS name)',
            'sdn_id': naming.SDN_ID_HELP,
            'node': 'a PVE node name (letters, digits, hyphens)',
            'path': 'an absolute path such as /var/lib/app',
            'dict': 'a mapping with keys: %s' % ', '.join(self.fields or ()),
            'override': 'a mapping with some of the keys: %s' % ', '.join(
                (self.override.fields if self.override else None) or ()),
            'list': 'a list',
        }
        return helps[kind]


def _threshold(high, low, duration, kind='ratio', doc_unit='utilisation of one instance'):
    if kind == 'ratio':
        return Field('dict', default={}, doc='%s thresholds.' % doc_unit, fields={
            'high': Field('ratio', high, 'Scale up when %s stays above this (0 < high <= 1).' % doc_unit,
                          minimum=0, maximum=1, exclusive_minimum=True),
            'low': Field('ratio', low, 'Scale down when %s stays below this (0 <= low < high).' % doc_unit,
                         minimum=0, maximum=1),
            'duration': Field('duration', duration, 'How long the condition must hold.'),
        })
    return Field('dict', default={}, doc='%s thresholds.' % doc_unit, fields={
        'high': Field('rate', high, 'Scale up when %s stays above this rate.' % doc_unit),
        'low': Field('rate', low, 'Scale down when %s stays below this rate (low < high).' % doc_unit),
        'duration': Field('duration', duration, 'How long the condition must hold.'),
    })


_SCALING_FIELDS = {
    'cpu': _threshold(0.70, 0.30, '5m', doc_unit='CPU utilisation of one instance'),
    'memory': _threshold(0.80, 0.40, '5m', doc_unit='memory utilisation of one instance'),
    'net': _threshold('800Mbit', '100Mbit', '5m', kind='rate',
                      doc_unit='network throughput of one instance'),
    'horizon': Field('duration', '15m', 'How far ahead the forecast must see; at least the time '
                     'it takes to provision a new instance.'),
    'provision': Field('duration', '5m', 'How long a new instance takes to serve load after the decision (clone, '
                       'boot, warm-up); scale-ups are sized by the forecast from then to the end of `horizon` '
                       '(provision < horizon).'),
    'instances': Field('dict', default={}, doc='Instance bounds for horizontal scaling.', fields={
        'min': Field('int', 1, 'Never fewer primaries than this.', minimum=1,
                     maximum=MAX_INSTANCES),
        'max': Field('int', 8, 'Never more primaries than this (min <= max <= %d).'
                     % MAX_INSTANCES, minimum=1, maximum=MAX_INSTANCES),
    }),
    'cooldown': Field('dict', default={}, doc='Minimum time between scaling actions.', fields={
        'up': Field('duration', '3m', 'After any action, wait this long before scaling up.'),
        'down': Field('duration', '10m', 'After any action, wait this long before scaling '
                      'down.'),
    }),
    'mode': Field('str', 'horizontal', 'horizontal: add/remove linked clones; vertical: resize '
                  'cores/memory of the existing instances.', choices=('horizontal', 'vertical')),
    'latency': Field('dict', default={}, doc='The canary latency signal: the shadow\'s replay p95 (the service\'s '
                     'own latency under the sampled requests, read from the replay agent through the guest agent) '
                     'above p95_ms for `for` scales up. Needs shadow.replay.port and a critical service.', fields={
        'p95_ms': Field('float', None, 'Threshold of the shadow\'s replay p95 in milliseconds; '
                        'null: no latency signal.', minimum=0, exclusive_minimum=True, nullable=True),
        'for': Field('duration', '3m', 'How long the p95 must stay above p95_ms.'),
    }),
}
SCALING = Field('dict', default={}, doc='Predictive scaling parameters (template-wide; services may override).',
                fields=_SCALING_FIELDS)

REPLICATION = Field('dict', default={}, doc='State replication from the primaries into the shadow.', fields={
    'fidelity': Field('str', 'differential',
                      'full: periodic snapshot of a primary and re-clone of the shadow (RPO = interval, costly); '
                      'differential: periodic incremental sync of `paths` into the shadow (RPO = interval, '
                      'needs rsync in the guests); event: the mirrored traffic itself plus an optional `hook` '
                      '(RPO about zero, needs mirror mode full).',
                      choices=('full', 'differential', 'event')),
    'interval': Field('duration', '15m', 'Sync period for full and differential (at least 1m; full at least 5m). '
                      'Ignored for event.'),
    'paths': Field('list', [], 'Absolute guest paths synced by differential replication (required there).',
                   item=Field('path'), unique=True),
    'hook': Field('str', None, 'event only: a command run in the shadow guest to set up streaming replication '
                  '(e.g. a database replica).', nullable=True),
})

REPLAY = Field('dict', default={}, doc='Request replay in the shadow (the shadow_replay role\'s agent): the '
               'mirrored requests replayed into the shadow\'s own service, so the shadow is a canary; the '
               'reconciler reads its counters file through the guest agent (VM.GuestAgent.FileRead).', fields={
    'mode': Field('str', 'http', 'http: HTTP/1.1 requests; tcp: each flow\'s client bytes on a new connection; '
                  'udp: datagrams re-sent.', choices=('http', 'tcp', 'udp')),
    'port': Field('int', None, 'The service port of the primaries whose mirrored traffic is replayed; null: '
                  'no replay and no canary signals.', minimum=1, maximum=65535, nullable=True),
    'target_port': Field('int', None, 'The port of the shadow\'s own service the requests go to; default: '
                         '`port`.', minimum=1, maximum=65535, nullable=True),
    'methods': Field('str', 'safe', 'http: all methods, or only safe ones (GET, HEAD, OPTIONS, TRACE).',
                     choices=('all', 'safe')),
    'concurrency': Field('int', 16, 'Replayed requests in flight at most.', minimum=1, maximum=4096),
    'stats_path': Field('path', '/run/shadownet-replay/stats.json', 'The agent\'s JSON counters file in the '
                        'shadow guest, which the reconciler reads.'),
    'stats_interval': Field('duration', '5s', 'How often the agent rewrites the counters file; the reconciler '
                            'takes a file older than 4 intervals (at least 30s) as stale (no canary).'),
})

NETWORK = Field('dict', doc='One primary network.', fields={
    'name': Field('name', doc='Logical network name, unique in the template; services refer to it.',
                  max_length=32, example='shopnet'),
    'type': Field('str', 'vnet', 'vnet: an SDN zone + vnet + subnet (created if absent); bridge: an existing '
                  'node Linux bridge.', choices=('vnet', 'bridge')),
    'zone': Field('sdn_id', None, 'vnet: SDN zone id; default: derived from the template name (one zone for '
                  'the template).', nullable=True),
    'zone_type': Field('str', None, 'vnet: SDN zone type. simple: a bridge on each node with no uplink '
                       '(pve-network SimplePlugin: `bridge_ports none`), so VMs on different nodes cannot reach each '
                       'other; only for a template on one node. vlan: a VLAN on zone_bridge (a node bridge with an '
                       'uplink; the switch carries it between nodes). vxlan: a VXLAN overlay between the cluster '
                       'nodes (peers = every node\'s cluster address, MTU 1450: VirtIO NICs take it from the bridge), '
                       'which needs nothing outside the cluster; the gateway is then not on the nodes, a router in '
                       'the network must have it. null: vxlan unless nodes lists exactly one node (then simple).',
                       choices=('simple', 'vlan', 'vxlan'), nullable=True),
    'vni': Field('int', None, 'vnet with zone_type vxlan: its VXLAN network identifier, unique in the cluster; '
                 'default: derived from the template and network names (stable).', minimum=1, maximum=16777215,
                 nullable=True),
    'zone_bridge': Field('str', None, 'vnet with zone_type vlan: the node bridge the zone rides on '
                         '(default vmbr0).', nullable=True),
    'vnet': Field('sdn_id', None, 'vnet: SDN vnet id; default: derived from the template and network names.',
                  nullable=True),
    'bridge': Field('str', None, 'bridge: the node Linux bridge (required for type bridge).', nullable=True),
    'vlan': Field('int', None, 'VLAN tag: required for zone_type vlan; optional for type bridge.',
                  minimum=1, maximum=4094, nullable=True),
    'cidr': Field('cidr', doc='The network (IPv4 or IPv6).', example='10.10.0.0/24'),
    'gateway': Field('ip', None, 'Gateway inside cidr; shadow twins never get one.', nullable=True),
})

SERVICE = Field('dict', doc='One service: a group of identical primaries.', fields={
    'name': Field('name', doc='Service name, unique in the template; not primary/shadow/shadownet nor the '
                  'template name (tags would be ambiguous).', max_length=32, example='web'),
    'template': Field('golden', doc='The golden VM template the instances are linked clones of: vmid or name.',
                      example=9000),
    'instances': Field('int', 1, 'Number of primaries (within scaling.instances min..max).', minimum=1,
                       maximum=MAX_INSTANCES),
    'cores': Field('int', 1, 'Cores of each primary.', minimum=1, maximum=512),
    'memory': Field('memory', 512, 'Memory of each primary, MiB or with a unit (8G).', minimum=MIN_MEMORY_MIB),
    'networks': Field('list', None, 'Networks of the primaries, NIC i on networks[i]; default: the first '
                      'network of the template.', item=Field('name'), unique=True, min_items=1, nullable=True),
    'vip': Field('vip', None, 'keepalived VRRP virtual IP shared by the primaries and their shadow, inside '
                 'vip_network; the prefix defaults to the network\'s.', nullable=True),
    'vip_network': Field('name', None, 'The network the VIP lives on; default: networks[0].', nullable=True),
    'vrid': Field('int', None, 'VRRP virtual_router_id; default: derived, stable and unique per network.',
                  minimum=1, maximum=255, nullable=True),
    'critical': Field('bool', False, 'Critical services get a shadow (when shadow.enabled).'),
    'scaling': Field('override', None, 'Per-service overrides of the template-wide scaling settings.',
                     nullable=True, override=SCALING),
    'replication': Field('override', None, 'Per-service overrides of shadow.replication.', nullable=True,
                         override=REPLICATION),
    'replay': Field('override', None, 'Per-service overrides of shadow.replay (e.g. the service\'s own port and '
                    'mode).', nullable=True, override=REPLAY),
})

SHADOW = Field('dict', default={}, doc='Shadow settings.', fields={
    'enabled': Field('bool', True, 'Build shadow networks and shadows for the critical services.'),
    'size': Field('ratio', 0.25, 'Shadow cores/memory as a fraction of one primary (floors: 1 core, 512 MiB).',
                  minimum=0, maximum=1, exclusive_minimum=True),
    'placement': Field('str', 'spread', 'spread: never on the node of a primary it shadows (HA negative '
                       'resource affinity); any: no constraint.', choices=('spread', 'any')),
    'transport': Field('str', None, 'How mirrored copies reach the shadow twin networks. local: SDN simple zones '
                       '(node-local; the mirror works only where a shadow shares the node of its primaries); vxlan: '
                       'one isolated SDN vxlan zone per twin (own VNI, no gateway, no exit node, no SNAT; peers = the '
                       'cluster nodes), so a mirror on the primary\'s node reaches a shadow on another node. null: '
                       'vxlan when placement is spread and more than one node is listed or nodes is empty (default '
                       'placement spreads over every online node), else local.',
                       choices=('local', 'vxlan'), nullable=True),
    'mirror': Field('dict', default={}, doc='Traffic mirroring from the primaries to the shadow.', fields={
        'mode': Field('str', 'sampled', 'full: every packet; sampled: a fraction of the flows or packets (see sampling).',
                      choices=('full', 'sampled')),
        'rate': Field('ratio', 0.10, 'sampled: fraction of flows (or packets) copied (0 < rate <= 1, rounded to 1/10000); '
                      'ignored for full.', minimum=0, maximum=1, exclusive_minimum=True),
        'sampling': Field('str', 'flow', 'sampled: flow copies whole flows, both directions or nothing of each (the '
                          'kernel\'s symmetric flow hash of addresses, ports and protocol; frames that are not IP per '
                          'packet), so the shadow can reassemble and replay them; packet copies each packet on its own '
                          '(streams arrive with holes). Ignored for full.', choices=('flow', 'packet')),
        'direction': Field('str', 'both', 'Which traffic of the primary NIC is copied.',
                           choices=('ingress', 'egress', 'both')),
    }),
    'replication': REPLICATION,
    'replay': REPLAY,
})

SCHEMA = Field('dict', doc='The resource placement template.', fields={
    'version': Field('int', TEMPLATE_VERSION, 'Template format version.', choices=(TEMPLATE_VERSION,)),
    'name': Field('name', doc='Template name, unique per cluster; used in VM names, tags and derived ids.',
                  max_length=24, example='shop'),
    'nodes': Field('list', [], 'Nodes the primaries are spread over (round-robin, skipping a node without room for '
                   'the VM); empty: all online nodes, by free capacity at apply time (shadows off their primaries\' '
                   'nodes).', item=Field('node'), unique=True),
    'pool': Field('str', None, 'PVE resource pool every VM joins.', nullable=True),
    'networks': Field('list', doc='Primary networks.', item=NETWORK, min_items=1),
    'services': Field('list', doc='Services.', item=SERVICE, min_items=1),
    'shadow': SHADOW,
    'scaling': SCALING,
})

_POOL_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')
_GOLDEN_NAME_RE = re.compile(r'^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$')


class TemplateIssue:
    """One validation error: which template, which field, what is wrong, what would be valid."""

    def __init__(self, template, path, message, valid=None):
        self.template = template
        self.path = path
        self.message = message
        self.valid = valid

    def as_dict(self) -> dict[str, str | None]:
        return {'template': self.template, 'path': self.path, 'message': self.message, 'valid': self.valid}

    def __str__(self):
        text = 'template %s: %s: %s' % (self.template, self.path or '(top level)', self.message)
        if self.valid:
            text += '; valid: %s' % self.valid
        return text

    __repr__ = __str__


class TemplateValidationError(ValueError):
    def __init__(self, issues):
        self.issues = list(issues)
        lines = '\n'.join('- %s' % i for i in self.issues)
        super().__init__('%d error(s) in template:\n%s' % (len(self.issues), lines))


def _join(path, key):
    return '%s.%s' % (path, key) if path else str(key)


def _describe(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


class _Checker:
    def __init__(self, label):
        self.label = label
        self.issues = []

    def error(self, path, message, valid=None):
        self.issues.append(TemplateIssue(self.label, path, message, valid))

    # -- field level ---------------------------------------------------------------------------------------

    def check(self, field, value, path, partial=False):
        if value is None:
            if field.nullable:
                return None
            self.error(path, 'must not be null', field.valid())
            return _INVALID
        if isinstance(value, float) and not math.isfinite(value):
            # YAML's .nan and .inf: no field takes them (a size or a rate of infinity is not "no limit")
            self.error(path, 'must be a finite number, got %s' % _describe(value), field.valid())
            return _INVALID
        method = getattr(self, '_kind_' + field.kind)
        result = method(field, value, path, partial)
        if result is not _INVALID and field.choices and result not in field.choices:
            self.error(path, '%s is not allowed' % _describe(value), field.valid())
            return _INVALID
        return result

    def default_of(self, field, path):
        if field.kind == 'dict':
            return self._kind_dict(field, {}, path, False)
        if field.default is None:
            return None
        return self.check(field, copy.deepcopy(field.default), path)

    def _kind_dict(self, field, value, path, partial):
        if not isinstance(value, dict):
            self.error(path, 'must be a mapping, got %s' % type(value).__name__, field.valid())
            return _INVALID
        out = {}
        bad = False
        for key in value:
            if key not in field.fields:
                close = difflib.get_close_matches(str(key), list(field.fields), n=1)
                self.error(_join(path, key), 'unknown key%s' % (" (did you mean '%s'?)" % close[0] if close else ''),
                           'keys of %s: %s' % (path or 'the template', ', '.join(field.fields)))
                bad = True
        for key, sub in field.fields.items():
            sub_path = _join(path, key)
            if key in value:
                result = self.check(sub, value[key], sub_path, partial)
            elif partial:
                continue
            elif sub.required:
                self.error(sub_path, 'is required', sub.valid())
                result = _INVALID
            else:
                result = self.default_of(sub, sub_path)
            if result is _INVALID:
                bad = True
            out[key] = result
        return _INVALID if bad and not out else out

    def _kind_override(self, field, value, path, partial):
        # Service-level overrides: the same sub-fields, but nothing is defaulted (merged later).
        return self._kind_dict(field.override, value, path, True)

    def _kind_list(self, field, value, path, partial):
        if not isinstance(value, (list, tuple)):
            self.error(path, 'must be a list, got %s' % type(value).__name__, field.valid())
            return _INVALID
        if len(value) < field.min_items:
            self.error(path, 'needs at least %d item(s)' % field.min_items)
            return _INVALID
        out = []
        for index, item in enumerate(value):
            out.append(self.check(field.item, item, '%s[%d]' % (path, index), partial))
        if field.unique:
            seen = set()
            for index, item in enumerate(out):
                if item is _INVALID or isinstance(item, dict):
                    continue
                if item in seen:
                    self.error('%s[%d]' % (path, index), '%s is listed twice' % _describe(item),
                               'each value at most once')
                seen.add(item)
        return out

    def _kind_str(self, field, value, path, partial):
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(path, 'must be a string, got %s' % type(value).__name__, field.valid())
            return _INVALID
        return str(value)

    def _kind_name(self, field, value, path, partial):
        if not naming.is_logical_name(value) or (field.max_length and len(value) > field.max_length):
            self.error(path, '%s is not a valid name' % _describe(value), field.valid())
            return _INVALID
        return value

    def _kind_int(self, field, value, path, partial):
        number = value
        if isinstance(value, str) and re.fullmatch(r'\s*-?[0-9]+\s*', value):
            number = int(value)
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int):
            self.error(path, '%s is not an integer' % _describe(value), field.valid())
            return _INVALID
        return self._range(field, number, value, path)

    def _range(self, field, number, raw, path):
        lo, hi = field.minimum, field.maximum
        if lo is not None and (number < lo or (field.exclusive_minimum and number == lo)):
            self.error(path, '%s is too small' % _describe(raw), field.valid())
            return _INVALID
        if hi is not None and number > hi:
            self.error(path, '%s is too large' % _describe(raw), field.valid())
            return _INVALID
        return number

    def _kind_float(self, field, value, path, partial):
        return self._kind_ratio(field, value, path, partial)

    def _kind_ratio(self, field, value, path, partial):
        try:
            number = units.parse_ratio(value)
        except units.UnitError:
            self.error(path, '%s is not a number' % _describe(value), field.valid())
            return _INVALID
        return self._range(field, number, value, path)

    def _kind_bool(self, field, value, path, partial):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ('true', 'yes', 'on', '1', 'false', 'no', 'off', '0'):
            return value.strip().lower() in ('true', 'yes', 'on', '1')
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        self.error(path, '%s is not a boolean' % _describe(value), field.valid())
        return _INVALID

    def _unit(self, parser, field, value, path):
        try:
            return parser(value)
        except units.UnitError as exc:
            self.error(path, str(exc).split('; expected', maxsplit=1)[0], field.valid())
            return _INVALID

    def _kind_duration(self, field, value, path, partial):
        return self._unit(lambda v: units.parse_duration(v, allow_zero=True), field, value, path)

    def _kind_rate(self, field, value, path, partial):
        return self._unit(units.parse_rate, field, value, path)

    def _kind_memory(self, field, value, path, partial):
        mib = self._unit(units.parse_memory, field, value, path)
        if mib is not _INVALID:
            return self._range(field, mib, value, path)
        return mib

    def _kind_cidr(self, field, value, path, partial):
        try:
            return str(ipaddress.ip_network(str(value), strict=True))
        except ValueError as exc:
            self.error(path, '%s is not a network: %s' % (_describe(value), exc), field.valid())
            return _INVALID

    def _kind_ip(self, field, value, path, partial):
        try:
            return str(ipaddress.ip_address(str(value)))
        except ValueError:
            self.error(path, '%s is not an IP address' % _describe(value), field.valid())
            return _INVALID

    def _kind_vip(self, field, value, path, partial):
        try:
            iface = ipaddress.ip_interface(str(value))
        except ValueError:
            self.error(path, '%s is not an IP address with optional prefix' % _describe(value), field.valid())
            return _INVALID
        # Keep whether the prefix was given: the cross-field check fills it from the network.
        return str(iface) if '/' in str(value) else str(iface.ip)

    def _kind_golden(self, field, value, path, partial):
        if isinstance(value, bool):
            pass
        elif isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            vmid = int(value)
            if 100 <= vmid <= 999999999:
                return vmid
        elif isinstance(value, str) and _GOLDEN_NAME_RE.match(value):
            return value
        self.error(path, '%s is not a template vmid or name' % _describe(value), field.valid())
        return _INVALID

    def _kind_sdn_id(self, field, value, path, partial):
        if not naming.is_sdn_id(value):
            self.error(path, '%s is not a valid PVE SDN id' % _describe(value), field.valid())
            return _INVALID
        return value

    def _kind_node(self, field, value, path, partial):
        if not naming.is_node_name(value):
            self.error(path, '%s is not a valid node name' % _describe(value), field.valid())
            return _INVALID
        return value

    def _kind_path(self, field, value, path, partial):
        if not isinstance(value, str) or not value.startswith('/') or '/../' in value + '/' or '\n' in value:
            self.error(path, '%s is not an absolute path' % _describe(value), field.valid())
            return _INVALID
        return value


def _ok(*values):
    return all(v is not _INVALID and v is not None for v in values)


def _deep_merge(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if value is _INVALID:
            continue
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _has_invalid(value):
    if value is _INVALID:
        return True
    if isinstance(value, dict):
        return any(_has_invalid(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_invalid(v) for v in value)
    return False


def _host_ok(net, address):
    """An address usable by a host: inside net, not the network or (IPv4) broadcast address."""
    if address not in net:
        return False
    if net.version == 4 and net.prefixlen < 31:
        return address not in (net.network_address, net.broadcast_address)
    if net.version == 6 and net.prefixlen < 127:
        return address != net.network_address
    return True


def _semantic(chk, tpl):
    """Cross-field pass on a field-valid (or partly valid) normalised template: derive, check, drop.

    Defaults that depend on other fields are derived first (:func:`_derive`), so the checks see the values the
    plan will use; the checks (:func:`_check`) only report. The vnet-only fields of bridge networks are dropped
    last, because their check must see what the user wrote.
    """
    networks = _items(tpl, 'networks')
    nets_by_name = _networks_by_name(networks)
    overrides = _derive(tpl, nets_by_name)
    _check(chk, tpl, nets_by_name, overrides)
    _drop_vnet_fields(networks)
    return tpl


def _items(tpl, key):
    """The dict items of a top-level list (the other items were reported by the field pass)."""
    items = tpl.get(key) if isinstance(tpl.get(key), list) else []
    return [item if isinstance(item, dict) else None for item in items]


def _networks_by_name(networks):
    """{name: network}: the first network of each valid name (the checks report the duplicates)."""
    out = {}
    for net in networks:
        if net is not None and _ok(net.get('name')):
            out.setdefault(net['name'], net)
    return out


# -- derive: defaults that depend on other fields (static defaults are in SCHEMA) --------------------------------

def _derive(tpl, nets_by_name):
    """Fill the defaults that depend on other fields. Returns {service index: (scaling, replication) overridden}."""
    for net in _items(tpl, 'networks'):
        if net is not None and net.get('type') == 'vnet' and net.get('zone_type') is None:
            # A simple zone is node-local: VMs on two nodes would be on two islands (see NETWORK.zone_type).
            net['zone_type'] = 'simple' if _single_node(tpl) else 'vxlan'
        if net is not None and net.get('type') == 'vnet' and net.get('zone_type') == 'vlan' \
                and net.get('zone_bridge') is None:
            net['zone_bridge'] = 'vmbr0'
    networks = tpl.get('networks') if isinstance(tpl.get('networks'), list) else []
    template_scaling, template_repl = _template_scaling(tpl), _template_replication(tpl)
    overrides = {}
    for index, svc in enumerate(_items(tpl, 'services')):
        if svc is not None:
            _derive_service(svc, networks, nets_by_name)
            overrides[index] = _merge_overrides(svc, template_scaling, template_repl)
            _merge_replay(svc, tpl)
    _derive_shadow(tpl)
    return overrides


def _template_scaling(tpl):
    return tpl.get('scaling') if isinstance(tpl.get('scaling'), dict) else {}


def _template_replication(tpl):
    return (tpl.get('shadow') or {}).get('replication') if isinstance(tpl.get('shadow'), dict) else None


def _derive_service(svc, networks, nets_by_name):
    """networks: the template's first network; vip_network: the service's first network; vip: its prefix."""
    if svc.get('networks') is None:
        first = networks[0].get('name') if networks and isinstance(networks[0], dict) else None
        svc['networks'] = [first] if _ok(first) else []
    snets = svc.get('networks') if isinstance(svc.get('networks'), list) else []
    if svc.get('vip_network') is None and snets:
        svc['vip_network'] = snets[0]
    vip, vip_network = svc.get('vip'), svc.get('vip_network')
    if _ok(vip, vip_network) and vip_network in nets_by_name and _ok(nets_by_name[vip_network].get('cidr')) \
            and '/' not in vip:
        network = ipaddress.ip_network(nets_by_name[vip_network]['cidr'])
        if ipaddress.ip_address(vip).version == network.version:     # else _check_vip says it is not inside
            svc['vip'] = '%s/%d' % (vip, network.prefixlen)


def _merge_overrides(svc, template_scaling, template_repl):
    """The service's effective scaling and replication: the template-wide ones with its overrides merged in.

    Returns (scaling overridden, replication overridden): the checks report a problem where the user wrote it.
    """
    overridden = (isinstance(svc.get('scaling'), dict), isinstance(svc.get('replication'), dict))
    if isinstance(template_scaling, dict):
        svc['scaling'] = _deep_merge(template_scaling, svc.get('scaling') if overridden[0] else {})
    if isinstance(template_repl, dict):
        svc['replication'] = _deep_merge(template_repl, svc.get('replication') if overridden[1] else {})
    return overridden


def _merge_replay(svc, tpl):
    """The service's effective shadow.replay: the template-wide one with the service's override merged in."""
    shadow = tpl.get('shadow') if isinstance(tpl.get('shadow'), dict) else {}
    if isinstance(shadow.get('replay'), dict):
        svc['replay'] = _deep_merge(shadow['replay'], svc['replay'] if isinstance(svc.get('replay'), dict) else {})


def _single_node(tpl):
    """Whether every VM of the template is placed on one node (nodes lists exactly one; empty means every online
    node)."""
    nodes = tpl.get('nodes') if isinstance(tpl.get('nodes'), list) else []
    return len(nodes) == 1


def _derive_shadow(tpl):
    """mirror.rate 1.0 for mode full; transport: vxlan when shadows spread over several nodes, else local."""
    shadow = tpl.get('shadow') if isinstance(tpl.get('shadow'), dict) else {}
    mirror = shadow.get('mirror') if isinstance(shadow.get('mirror'), dict) else {}
    if mirror.get('mode') == 'full':
        mirror['rate'] = 1.0
    if 'transport' in shadow and shadow['transport'] is None:
        nodes = tpl.get('nodes') if isinstance(tpl.get('nodes'), list) else []
        # Empty nodes: default placement spreads over the online nodes, so shadows land on other nodes too.
        spread = shadow.get('placement') == 'spread' and (len(nodes) > 1 or not nodes)
        shadow['transport'] = 'vxlan' if spread else 'local'


def _drop_vnet_fields(networks):
    for net in networks:
        if net is not None and net.get('type') == 'bridge':
            net['zone'] = net['vnet'] = net['zone_type'] = net['zone_bridge'] = net['vni'] = None


# -- check: cross-field problems (reports only, changes nothing) ---------------------------------------------

def _check(chk, tpl, nets_by_name, overrides):
    networks = _items(tpl, 'networks')
    services = _items(tpl, 'services')
    for index, net in enumerate(networks):
        if net is not None:
            _check_network(chk, 'networks[%d]' % index, net, nets_by_name)
    _check_overlaps(chk, networks)
    _check_vnet_ids(chk, networks)
    _check_zone_types(chk, networks)
    _check_vnis(chk, networks)
    _check_simple_zones(chk, tpl, networks)
    seen_services, vips = {}, {}
    for index, svc in enumerate(services):
        if svc is not None:
            _check_service(chk, index, svc, tpl.get('name'), nets_by_name, seen_services, vips)
    _check_scaling(chk, tpl, services)
    _check_vrids(chk, services)
    pool = tpl.get('pool')
    if _ok(pool) and not _POOL_RE.match(pool):
        chk.error('pool', '%s is not a valid PVE pool id' % _describe(pool), 'letters, digits, _, ., -')
    _check_replication(chk, tpl, services, overrides)


def _check_network(chk, path, net, nets_by_name):
    """Unique name, the fields of its type, gateway inside cidr."""
    if _ok(net.get('name')) and nets_by_name[net['name']] is not net:
        chk.error(path + '.name', 'network %s is defined twice' % net['name'], 'unique network names')
    if net.get('type') == 'bridge':
        _check_bridge_network(chk, path, net)
    elif net.get('type') == 'vnet':
        _check_vnet_network(chk, path, net)
    cidr, gateway = net.get('cidr'), net.get('gateway')
    if _ok(cidr, gateway):
        network = ipaddress.ip_network(cidr)
        address = ipaddress.ip_address(gateway)
        if address.version != network.version or not _host_ok(network, address):
            chk.error(path + '.gateway', '%s is not a host address inside %s' % (gateway, cidr),
                      'a host address inside %s' % cidr)


def _check_bridge_network(chk, path, net):
    if net.get('bridge') in (None, _INVALID):
        if net.get('bridge') is None:
            chk.error(path + '.bridge', 'is required for type bridge', 'a node bridge such as vmbr1')
    else:
        problem = naming.bridge_name_problem(net['bridge'])
        if problem:
            chk.error(path + '.bridge', problem, naming.BRIDGE_NAME_HELP)
    for key in ('zone', 'vnet', 'zone_bridge', 'vni'):
        if net.get(key) not in (None, _INVALID):
            chk.error(path + '.' + key, 'only for type vnet', 'leave it out for type bridge')


def _check_vnet_network(chk, path, net):
    if net.get('bridge') not in (None, _INVALID):
        chk.error(path + '.bridge', 'only for type bridge', 'leave it out, or set type: bridge')
    if net.get('zone_type') == 'vlan':
        if net.get('vlan') is None:
            chk.error(path + '.vlan', 'is required for zone_type vlan', 'a VLAN tag 1..4094')
        problem = naming.bridge_name_problem(net['zone_bridge']) if net['zone_bridge'] is not _INVALID else None
        if problem:
            chk.error(path + '.zone_bridge', problem, naming.BRIDGE_NAME_HELP)
        elif _ok(net.get('zone_bridge'), net.get('vlan')):
            too_long = naming.vlan_bridge_problem(net['zone_bridge'], net['vlan'])
            if too_long:
                chk.error(path + '.zone_bridge', too_long, 'a shorter node bridge name')
    elif net.get('zone_type') in ('simple', 'vxlan'):
        kind = net['zone_type']
        if net.get('vlan') not in (None, _INVALID):
            chk.error(path + '.vlan', 'a %s zone has no VLAN' % kind, 'set zone_type: vlan, or leave it out'
                      + (' (a vxlan network\'s identifier is vni)' if kind == 'vxlan' else ''))
        if net.get('zone_bridge') not in (None, _INVALID):
            chk.error(path + '.zone_bridge', 'only for zone_type vlan', 'leave it out')
    if net.get('vni') not in (None, _INVALID) and net.get('zone_type') != 'vxlan':
        chk.error(path + '.vni', 'only for zone_type vxlan', 'leave it out, or set zone_type: vxlan')


def _check_zone_types(chk, networks):
    """Networks in one SDN zone (the template's own unless zone is given) share its type and bridge."""
    first = {}
    for index, net in enumerate(networks):
        if net is None or net.get('type') != 'vnet' or not _ok(net.get('zone_type')):
            continue
        zone = net.get('zone') if _ok(net.get('zone')) else None
        want = (net['zone_type'], net.get('zone_bridge'))
        if zone not in first:
            first[zone] = (index, want)
        elif first[zone][1] != want:
            other, (kind, bridge) = first[zone]
            chk.error('networks[%d].zone_type' % index, '%s%s, but networks[%d] in the same zone (%s) is %s%s' % (
                want[0], ' on %s' % want[1] if want[1] else '', other, zone or 'the template\'s', kind,
                ' on %s' % bridge if bridge else ''),
                'the same zone_type (and zone_bridge) for every network of a zone, or a zone of its own (zone)')


def _check_vnis(chk, networks):
    """PVE keeps a VXLAN id unique in the cluster (Zones/VxlanPlugin.pm vnet_update_hook): so must a template."""
    seen = {}
    for index, net in enumerate(networks):
        if net is not None and net.get('type') == 'vnet' and _ok(net.get('vni')):
            if net['vni'] in seen:
                chk.error('networks[%d].vni' % index, 'vni %s is also used by networks[%d]' % (net['vni'], seen[net['vni']]),
                          'a VXLAN id used once, or leave vni out (derived)')
            seen.setdefault(net['vni'], index)


def _check_simple_zones(chk, tpl, networks):
    """A simple zone is a bridge on each node without an uplink (pve-network Zones/SimplePlugin.pm
    generate_sdn_config: `bridge_ports none`): on a template spread over nodes, its VMs could not reach each other."""
    if _single_node(tpl):
        return
    nodes = tpl.get('nodes') if isinstance(tpl.get('nodes'), list) else []
    where = 'nodes %s' % ', '.join(str(n) for n in nodes) if nodes else 'every online node (nodes is empty)'
    for index, net in enumerate(networks):
        if net is not None and net.get('type') == 'vnet' and net.get('zone_type') == 'simple':
            chk.error('networks[%d].zone_type' % index,
                      'simple is a node-local bridge with no uplink (PVE: bridge_ports none), and this template '
                      'places its VMs on %s: VMs of %s on different nodes could not reach each other or share a '
                      'VIP' % (where, net.get('name')),
                      'zone_type: vxlan (an overlay between the nodes; the default), vlan with zone_bridge (a bridge '
                      'with an uplink), type: bridge (an existing node bridge), or nodes with one node')


def _check_overlaps(chk, networks):
    """Overlapping CIDRs in one zone (vnet: per zone, default zone = the template's; bridge: per bridge+vlan)."""
    groups = {}
    for index, net in enumerate(networks):
        if net is None or not _ok(net.get('cidr')):
            continue
        if net.get('type') == 'vnet':
            key = ('zone', net.get('zone') or '(derived)')
        else:
            key = ('bridge', net.get('bridge'), net.get('vlan'))
        groups.setdefault(key, []).append((index, ipaddress.ip_network(net['cidr'])))
    for key, members in groups.items():
        for pos, (i, a) in enumerate(members):
            for j, b in members[:pos]:
                if a.version == b.version and a.overlaps(b):
                    where = 'zone %s' % key[1] if key[0] == 'zone' else 'bridge %s' % key[1]
                    chk.error('networks[%d].cidr' % i, '%s overlaps networks[%d].cidr %s in %s' % (a, j, b, where),
                              'a CIDR that does not overlap the other networks of %s' % where)


def _check_vnet_ids(chk, networks):
    """Explicit vnet ids: unique in the template (a bridge network's vnet is reported, and dropped, as vnet-only)."""
    seen_vnets = {}
    for index, net in enumerate(networks):
        if net is not None and net.get('type') != 'bridge' and _ok(net.get('vnet')):
            if net['vnet'] in seen_vnets:
                chk.error('networks[%d].vnet' % index, 'vnet %s is also used by networks[%d]'
                          % (net['vnet'], seen_vnets[net['vnet']]), 'a vnet id used once')
            seen_vnets.setdefault(net['vnet'], index)


def _check_service(chk, index, svc, name, nets_by_name, seen_services, vips):
    """Name, networks, VIP and vrid of one service."""
    path = 'services[%d]' % index
    _check_service_name(chk, path, index, svc.get('name'), name, seen_services)
    snets = svc.get('networks') if isinstance(svc.get('networks'), list) else []
    for n, ref in enumerate(snets):
        if _ok(ref) and ref not in nets_by_name:
            chk.error('%s.networks[%d]' % (path, n), 'no network named %s' % ref,
                      'one of: %s' % ', '.join(nets_by_name) if nets_by_name else 'a network defined in networks')
    vip_network = svc.get('vip_network')
    if _ok(vip_network) and vip_network not in snets:
        chk.error(path + '.vip_network', '%s is not one of the service\'s networks' % vip_network,
                  'one of: %s' % ', '.join(str(s) for s in snets))
    if _ok(svc.get('vip'), vip_network) and vip_network in nets_by_name and \
            _ok(nets_by_name[vip_network].get('cidr')):
        _check_vip(chk, path, index, svc['vip'], vip_network, nets_by_name[vip_network], vips)
    if svc.get('vrid') is not None and svc.get('vip') is None:
        chk.error(path + '.vrid', 'set without a vip', 'set vip too, or leave vrid out')


def _check_service_name(chk, path, index, sname, name, seen_services):
    """Unique, not a reserved tag word, and short enough for its VM names."""
    if not _ok(sname):
        return
    if sname in seen_services:
        chk.error(path + '.name', 'service %s is defined twice (also services[%d])'
                  % (sname, seen_services[sname]), 'unique service names')
    seen_services.setdefault(sname, index)
    if sname in naming.RESERVED_NAMES or sname == name:
        chk.error(path + '.name', '%s would make the tags ambiguous' % sname,
                  'a name other than %s' % ', '.join(sorted(naming.RESERVED_NAMES | {str(name)})))
    if _ok(name):
        longest = max(len(naming.shadow_vm_name(name, sname)),
                      len(naming.primary_vm_name(name, sname, MAX_INSTANCES)))
        if longest > 63:
            chk.error(path + '.name', 'VM names %s-%s-... would be longer than 63 characters'
                      % (name, sname), 'a shorter template or service name')


def _check_vip(chk, path, index, vip, vip_network, net, vips):
    """A host address inside its network, with the network's prefix, not the gateway, one per service."""
    network = ipaddress.ip_network(net['cidr'])
    iface = ipaddress.ip_interface(vip)
    if iface.version != network.version or not _host_ok(network, iface.ip):
        chk.error(path + '.vip', '%s is not a host address inside network %s (%s)'
                  % (vip, vip_network, net['cidr']), 'an address inside %s' % net['cidr'])
    elif iface.network.prefixlen != network.prefixlen:
        chk.error(path + '.vip', 'prefix /%d differs from network %s (%s)'
                  % (iface.network.prefixlen, vip_network, net['cidr']),
                  '%s/%d' % (iface.ip, network.prefixlen))
    elif net.get('gateway') and str(iface.ip) == net['gateway']:
        chk.error(path + '.vip', '%s is the gateway of network %s' % (iface.ip, vip_network),
                  'an address other than the gateway')
    else:
        other = vips.get((vip_network, str(iface.ip)))
        if other is not None:
            chk.error(path + '.vip', '%s is also the VIP of services[%d]' % (iface.ip, other),
                      'one VIP per service')
        vips.setdefault((vip_network, str(iface.ip)), index)


def _check_scaling(chk, tpl, services):
    """The template-wide settings once, then each service's effective settings (only problems the template-wide
    check did not already report), and each service's instances within its bounds."""
    template_scaling = _template_scaling(tpl)
    template_problems = set()
    if isinstance(template_scaling, dict):
        for sub, message, valid in _scaling_problems(template_scaling):
            chk.error('scaling.' + sub, message, valid)
            template_problems.add((sub, message))
    for index, svc in enumerate(services):
        if svc is None or not isinstance(svc.get('scaling'), dict):
            continue
        for sub, message, valid in _scaling_problems(svc['scaling']):
            if (sub, message) not in template_problems:
                chk.error('services[%d].scaling.%s' % (index, sub), message, valid)
        bounds = svc['scaling'].get('instances')
        count = svc.get('instances')
        if isinstance(bounds, dict) and _ok(bounds.get('min'), bounds.get('max'), count) and \
                bounds['min'] <= bounds['max'] and not bounds['min'] <= count <= bounds['max']:
            chk.error('services[%d].instances' % index, '%d is outside scaling.instances %d..%d'
                      % (count, bounds['min'], bounds['max']),
                      'an integer from %d to %d (or change scaling.instances)' % (bounds['min'], bounds['max']))


def _check_vrids(chk, services):
    """VRRP ids: user-set ones unique per network (derived ones are made unique by the plan)."""
    fixed = {}
    for index, svc in enumerate(services):
        if svc is not None and _ok(svc.get('vrid'), svc.get('vip_network'), svc.get('vip')):
            key = (svc['vip_network'], svc['vrid'])
            if key in fixed:
                chk.error('services[%d].vrid' % index, 'virtual_router_id %d is also used by services[%d] on '
                          'network %s' % (svc['vrid'], fixed[key], svc['vip_network']),
                          'a vrid unique per network (1..255)')
            fixed.setdefault(key, index)


def _check_replication(chk, tpl, services, overrides):
    """Replication is checked where the user wrote it, and only when something will be shadowed."""
    shadow = tpl.get('shadow') if isinstance(tpl.get('shadow'), dict) else {}
    if shadow.get('enabled') is not True:
        return
    mirror = shadow.get('mirror') if isinstance(shadow.get('mirror'), dict) else {}
    template_repl = _template_replication(tpl)
    critical = [i for i, s in enumerate(services) if s is not None and s.get('critical') is True]
    template_problems = set()
    if isinstance(template_repl, dict) and any(not overrides.get(i, (False, False))[1] for i in critical):
        for sub, message, valid in _replication_problems(template_repl, mirror.get('mode')):
            chk.error('shadow.replication.' + sub, message, valid)
            template_problems.add((sub, message))
    for index in critical:
        repl = services[index].get('replication')
        if overrides.get(index, (False, False))[1] and isinstance(repl, dict):
            for sub, message, valid in _replication_problems(repl, mirror.get('mode')):
                if (sub, message) not in template_problems:
                    chk.error('services[%d].replication.%s' % (index, sub), message, valid)


def _scaling_problems(scaling):
    """Cross-field problems of one (merged) scaling block: [(sub_path, message, valid)]."""
    out = []
    for metric in ('cpu', 'memory', 'net'):
        block = scaling.get(metric)
        if not isinstance(block, dict):
            continue
        if _ok(block.get('high'), block.get('low')) and block['low'] >= block['high']:
            out.append(('%s.low' % metric, 'low %s is not below high %s' % (block['low'], block['high']),
                        'a value below high (%s)' % block['high']))
        if _ok(block.get('duration')) and block['duration'] == 0:
            out.append(('%s.duration' % metric, 'must be greater than zero', units.DURATION_HELP))
    if _ok(scaling.get('horizon')) and scaling['horizon'] == 0:
        out.append(('horizon', 'must be greater than zero', units.DURATION_HELP))
    if _ok(scaling.get('provision'), scaling.get('horizon')) and scaling['provision'] >= scaling['horizon'] > 0:
        out.append(('provision', '%s is not shorter than horizon %s' % (
            units.format_duration(scaling['provision']), units.format_duration(scaling['horizon'])),
            'a duration below horizon (or a longer horizon)'))
    latency = scaling.get('latency')
    if isinstance(latency, dict) and _ok(latency.get('for')) and latency['for'] == 0:
        out.append(('latency.for', 'must be greater than zero', units.DURATION_HELP))
    bounds = scaling.get('instances')
    if isinstance(bounds, dict) and _ok(bounds.get('min'), bounds.get('max')) and bounds['min'] > bounds['max']:
        out.append(('instances.min', 'min %d is above max %d' % (bounds['min'], bounds['max']),
                    'min <= max'))
    return out


def _replication_problems(repl, mirror_mode):
    """Cross-field problems of one (merged) replication block: [(sub_path, message, valid)]."""
    out = []
    fidelity = repl.get('fidelity')
    interval = repl.get('interval')
    if fidelity in ('full', 'differential') and _ok(interval):
        floor = MIN_FULL_REPLICATION_SECONDS if fidelity == 'full' else MIN_REPLICATION_SECONDS
        if interval < floor:
            out.append(('interval', '%s is too short for fidelity %s' % (units.format_duration(interval), fidelity),
                        'at least %s' % units.format_duration(floor)))
    if fidelity == 'differential' and isinstance(repl.get('paths'), list) and not repl['paths']:
        out.append(('paths', 'differential replication needs at least one path',
                    'a list of absolute guest paths such as [/var/lib/app]'))
    if repl.get('hook') not in (None, _INVALID) and fidelity != 'event':
        out.append(('hook', 'only used with fidelity event (fidelity is %s)' % fidelity,
                    'leave it out, or set fidelity: event'))
    if fidelity == 'event' and isinstance(repl.get('hook'), str) and not repl['hook'].strip():
        out.append(('hook', 'is empty', 'a command, or leave it out'))
    if fidelity == 'event' and mirror_mode == 'sampled':
        out.append(('fidelity', 'event replication needs every packet, but shadow.mirror.mode is sampled',
                    'set shadow.mirror.mode: full, or use fidelity full or differential'))
    return out


def validate_template(data: t.Any, source: str | None = None) -> tuple[dict[str, t.Any] | None, list[TemplateIssue]]:
    """Validate and normalise one template.

    ``data``: the parsed template (a dict). ``source``: how to name it in errors when it has no valid name
    (a file path, ``shadownet_templates[2]``). Returns ``(normalised, issues)``; ``normalised`` is None when
    there are issues. Never raises on bad input.
    """
    label = source or 'template'
    if isinstance(data, dict) and naming.is_logical_name(data.get('name')):
        label = data['name']
    chk = _Checker(label)
    tpl = chk.check(SCHEMA, data, '')
    if tpl is _INVALID or not isinstance(tpl, dict):
        return None, chk.issues or [TemplateIssue(label, '', 'is not a valid template', SCHEMA.valid())]
    _semantic(chk, tpl)
    if chk.issues or _has_invalid(tpl):
        return None, chk.issues or [TemplateIssue(label, '', 'is not valid')]
    return tpl, []


def normalise_template(data: t.Any, source: str | None = None) -> dict[str, t.Any]:
    """Like :func:`validate_template` but raises :class:`TemplateValidationError` listing every issue."""
    tpl, issues = validate_template(data, source)
    if issues:
        raise TemplateValidationError(issues)
    return tpl


def iter_schema(field: Field = SCHEMA, path: str = '') -> t.Iterator[tuple[str, Field]]:
    """Yield ``(path, field)`` for every documented field, lists as ``name[]``."""
    if field.kind == 'dict':
        for key, sub in field.fields.items():
            sub_path = _join(path, key)
            yield sub_path, sub
            yield from iter_schema(sub, sub_path)
    elif field.kind == 'list' and field.item is not None and field.item.kind == 'dict':
        yield from iter_schema(field.item, path + '[]')


def _default_text(field):
    if field.required:
        return 'required'
    if field.kind == 'dict':
        return '(see below)'
    if field.kind == 'override':
        return 'null (inherit)'
    value = field.default
    if value is None:
        return 'null'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, list):
        return '[]'
    return str(value)


def schema_markdown() -> str:
    """A Markdown table of every field (docs/template.md embeds it)."""
    lines = ['| field | type | default | meaning |', '|---|---|---|---|']
    for path, field in iter_schema():
        doc = field.doc
        if field.choices:
            doc += ' Choices: %s.' % ', '.join('`%s`' % c for c in field.choices)
        lines.append('| `%s` | %s | %s | %s |' % (path, field.type_name(), _default_text(field),
                                                  doc.replace('|', '\\|')))
    return '\n'.join(lines)

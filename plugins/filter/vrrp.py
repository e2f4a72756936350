# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the vip_failover role; the logic lives in module_utils/failover/vrrp.py."""


from ansible.errors import AnsibleFilterError

from ansible_collections.shadownet.proxmox.plugins.module_utils.failover import vrrp


def vrrp_model(instances, settings=None, facts=None):
    model = vrrp.build_model(instances, settings, vrrp.interfaces_from_facts(facts))
    model['watchdog'] = vrrp.watchdog_config(model['instances'])
    model['vips'] = vrrp.cleanup_entries(model['instances'])
    return model


def vrrp_from_plan(plan, host, addresses=None, interface_pattern='eth{nic}', checks=None):
    if not isinstance(plan, dict):
        raise AnsibleFilterError('vrrp_from_plan: the plan must be a mapping, got %s' % type(plan).__name__)
    return vrrp.instances_from_plan(plan, host, addresses, interface_pattern, checks)


def vrrp_cluster_errors(hostvars, hosts, key='__vip_failover_model'):
    members = []
    for host in hosts:
        model = hostvars[host].get(key) if host in hostvars else None
        for inst in (model or {}).get('instances', []):
            members.append({'host': host, 'name': inst['name'], 'vip': inst['vip'], 'network': inst['network'],
                            'virtual_router_id': inst['virtual_router_id'], 'priority': inst['priority'],
                            'role': inst['role']})
    return vrrp.cluster_errors(members)


def vrrp_transitions(text):
    return vrrp.parse_transitions(text)


class FilterModule:
    def filters(self):
        return {
            'vrrp_model': vrrp_model,
            'vrrp_from_plan': vrrp_from_plan,
            'vrrp_cluster_errors': vrrp_cluster_errors,
            'vrrp_transitions': vrrp_transitions,
        }

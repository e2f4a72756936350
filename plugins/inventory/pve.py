# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
name: pve
short_description: The guests shadownet manages on a Proxmox VE cluster, and the cluster's nodes
version_added: 0.1.0
description:
  - Lists the QEMU guests of a Proxmox VE cluster that carry the collection's C(shadownet) tag, and the cluster
    nodes, through the collection's own API layer (token or password, TLS verification, retries).
  - Groups the guests by the collection's identity, read from their tags and from the JSON block between
    C(<!-- shadownet:begin -->) and C(<!-- shadownet:end -->) in their description.
    C(shadownet) holds every managed guest, through one child group per template, C(sn_<template>) (for example
    C(sn_shop)), which holds one group per service, C(sn_<template>_<service>) (for example C(sn_shop_web)).
    C(primary) and C(shadow) hold the guests of that role. C(pve_node_<node>) holds the guests running on a node
    (for example C(pve_node_pve1)), and C(pve_nodes) holds the nodes themselves as hosts.
    Characters other than letters, digits and underscores in group names become underscores.
  - Guests are named by their VM name, as in the plan (C(shop-web-1), C(shop-web-shadow)); nodes by their node name.
  - Host variables of a guest are C(pve_vmid), C(pve_name), C(pve_node), C(pve_status), C(pve_cores) (sockets times
    cores), C(pve_memory) (MiB), C(pve_tags) (sorted list), C(pve_lock), C(pve_agent_addresses), C(sn_managed),
    and for managed guests C(sn_template), C(sn_service), C(sn_role) (C(primary) or C(shadow)), C(sn_index),
    C(sn_vip), C(sn_shadows) (the primaries a shadow shadows), C(sn_shadowed_by) (the shadow of a primary) and
    C(sn_meta) (the whole metadata block, including the scaling state and cooldowns).
  - Host variables of a node are C(pve_node), C(pve_node_status), C(pve_cpus), C(pve_memory) (MiB) and
    C(pve_guests) (the names of the listed guests it runs), with C(ansible_host) set to the node address the
    cluster reports in C(/cluster/status).
  - C(ansible_host) of a guest is an address reported by the QEMU guest agent
    (C(/nodes/<node>/qemu/<vmid>/agent/network-get-interfaces), loopback and link-local skipped) or a static
    cloud-init address (C(ipconfigN)), the first one inside O(networks) when that is given. For a shadow only the
    addresses of its NIC 1 count (the NIC on the primary network that carries VRRP); its other NICs are on isolated
    twins of the primary networks and carry the primaries' own addresses. A guest with no address gets no
    C(ansible_host); set one with O(compose).
  - The configuration file must end in C(pve.yml), C(pve.yaml), C(shadownet.yml) or C(shadownet.yaml).
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
requirements:
  - proxmoxer >= 2.1
  - requests
options:
  plugin:
    description: The name of this plugin; it marks the file as a source for it.
    type: str
    required: true
    choices: [shadownet.proxmox.pve]
  api_host:
    description:
      - Host name or address of a PVE node (or a load balancer in front of the cluster's API).
    type: str
    required: true
    env:
      - name: PROXMOX_HOST
  api_port:
    description: TCP port of the PVE API.
    type: int
    default: 8006
    env:
      - name: PROXMOX_PORT
  api_user:
    description: PVE user, C(user@realm). With a token, the user that owns it.
    type: str
    default: root@pam
    env:
      - name: PROXMOX_USER
  api_password:
    description:
      - Password of O(api_user). Mutually exclusive with O(api_token_secret).
    type: str
    env:
      - name: PROXMOX_PASSWORD
  api_token_id:
    description:
      - Name of the API token (the part after C(!)), or the full id C(user@realm!name).
      - The inventory needs C(VM.Audit) and C(Sys.Audit); reading guest agent addresses needs C(VM.GuestAgent.Audit)
        (PVE 9) or C(VM.Monitor) (PVE 8). Without it the guests are still listed, without agent addresses.
    type: str
    env:
      - name: PROXMOX_TOKEN_ID
  api_token_secret:
    description: Secret of the API token.
    type: str
    env:
      - name: PROXMOX_TOKEN_SECRET
  validate_certs:
    description:
      - Verify the API's TLS certificate. Keep it on; give O(ca_path) for a cluster with its own CA.
    type: bool
    default: true
    env:
      - name: PROXMOX_VALIDATE_CERTS
  ca_path:
    description:
      - PEM file with the CA (or the certificate) that signed the PVE API certificate, for example a copy of
        C(/etc/pve/pve-root-ca.pem).
    type: path
    env:
      - name: PROXMOX_CA_PATH
  api_timeout:
    description: Seconds to wait for one HTTP request.
    type: int
    default: 30
    env:
      - name: PROXMOX_TIMEOUT
  managed_only:
    description:
      - List only the guests with the C(shadownet) tag. With V(false), every QEMU guest (not templates) is listed,
        in C(pve_node_<node>) groups, with C(sn_managed=false) for the unmanaged ones.
    type: bool
    default: true
  want_agent:
    description:
      - Ask the guest agent of running guests that have it enabled for their addresses. One API call per guest.
    type: bool
    default: true
  networks:
    description:
      - Networks in CIDR form, in order of preference, for C(ansible_host). An address inside the first network
        that has one wins; without a match the first IPv4 address (then IPv6) is used.
      - Set it to the management network, or to the service network the VIPs live on.
    type: list
    elements: str
    default: []
  add_nodes:
    description: List the PVE nodes as hosts in the C(pve_nodes) group.
    type: bool
    default: true
notes:
  - The API connection options use the names of the collection's modules and of community.proxmox, with the same
    environment variables, so one AWX credential serves both the inventory source and the job templates.
  - With caching on, the raw API answers are cached; grouping and O(compose) are applied again on every run.
  - Guests on an offline node are listed from C(/cluster/resources) only, without metadata or addresses.
'''

EXAMPLES = r'''
# inventories/example/pve.yml: the connection comes from PROXMOX_HOST, PROXMOX_USER, PROXMOX_TOKEN_ID,
# PROXMOX_TOKEN_SECRET and PROXMOX_CA_PATH.
plugin: shadownet.proxmox.pve
networks:
  - 10.10.0.0/24

---
# Keyed groups by status and a group of the shadows that are not running.
plugin: shadownet.proxmox.pve
keyed_groups:
  - key: pve_status
    prefix: pve
groups:
  shadows_down: sn_role == 'shadow' and pve_status != 'running'
compose:
  ansible_user: "'debian'"

---
# Cache the API answers for five minutes.
plugin: shadownet.proxmox.pve
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/shadownet-inventory
cache_timeout: 300
'''

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.api import PveApi, PveApiError
from ansible_collections.shadownet.proxmox.plugins.module_utils.core import inventory as inventory_utils

FILE_ENDINGS = ('pve.yml', 'pve.yaml', 'shadownet.yml', 'shadownet.yaml')


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = 'shadownet.proxmox.pve'

    def verify_file(self, path):
        return super(InventoryModule, self).verify_file(path) and path.endswith(FILE_ENDINGS)

    # ------------------------------------------------------------------ fetching

    def _connect(self):
        opt = self.get_option
        try:
            return PveApi(opt('api_host'), port=opt('api_port'), user=opt('api_user'),
                          password=opt('api_password'), token_id=opt('api_token_id'),
                          token_secret=opt('api_token_secret'), validate_certs=opt('validate_certs'),
                          ca_path=opt('ca_path'), timeout=opt('api_timeout'))
        except PveApiError as exc:
            raise AnsibleError('shadownet.proxmox.pve: {0}'.format(exc.message)) from exc

    def _fetch(self):
        """The raw answers build_inventory needs: a JSON-able dict, which is what the cache holds."""
        api = self._connect()
        try:
            raw = {
                'cluster_status': api.get('cluster/status') or [],
                'nodes': api.get('nodes') or [],
                'resources': api.resources('vm') or [],
                'configs': {},
                'agent': {},
            }
            offline = set(n['node'] for n in raw['nodes'] if n.get('status') not in (None, 'online'))
            by_vmid = dict((int(r['vmid']), r) for r in raw['resources'] if r.get('type') == 'qemu')
            for node, vmid in inventory_utils.guests_to_read(raw['resources'], self.get_option('managed_only')):
                if node in offline:
                    continue
                try:
                    config, dummy = api.vm_config(node, vmid)
                except PveApiError as exc:
                    self.display.warning('shadownet.proxmox.pve: VM {0}: {1}'.format(vmid, exc.message))
                    continue
                raw['configs'][str(vmid)] = config
                if self.get_option('want_agent') and inventory_utils.wants_agent(by_vmid[vmid], config):
                    raw['agent'][str(vmid)] = self._agent_interfaces(api, node, vmid)
        except PveApiError as exc:
            raise AnsibleError('shadownet.proxmox.pve: {0}'.format(exc.message)) from exc
        return raw

    def _agent_interfaces(self, api, node, vmid):
        # A guest agent that is not running, or a token without agent rights, costs the address, not the host.
        saved, api.attempts = api.attempts, 1
        try:
            answer = api.get('nodes/{0}/qemu/{1}/agent/network-get-interfaces'.format(node, vmid))
        except PveApiError as exc:
            self.display.vvv('shadownet.proxmox.pve: no agent addresses for VM {0}: {1}'.format(vmid, exc.message))
            return []
        finally:
            api.attempts = saved
        if isinstance(answer, dict):
            answer = answer.get('result')
        return answer if isinstance(answer, list) else []

    # ------------------------------------------------------------------- parsing

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache)
        self._read_config_data(path)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        update_cache = self.get_option('cache') and not cache
        raw = None
        if use_cache:
            try:
                raw = self._cache[cache_key]
            except KeyError:
                update_cache = True
        if raw is None:
            raw = self._fetch()
        if update_cache:
            self._cache[cache_key] = raw

        try:
            result = inventory_utils.build_inventory(raw, managed_only=self.get_option('managed_only'),
                                                     networks=self.get_option('networks'), add_nodes=self.get_option('add_nodes'))
        except ValueError as exc:
            raise AnsibleParserError('shadownet.proxmox.pve: {0}'.format(exc)) from exc
        for warning in result['warnings']:
            self.display.warning('shadownet.proxmox.pve: {0}'.format(warning))
        self._populate(result)

    def _populate(self, result):
        for group in result['groups']:
            self.inventory.add_group(group)
        for group, members in result['groups'].items():
            for child in members['children']:
                self.inventory.add_child(group, child)
        strict = self.get_option('strict')
        for host, hostvars in result['hosts'].items():
            self.inventory.add_host(host)
            for key, value in hostvars.items():
                self.inventory.set_variable(host, key, value)
            self._set_composite_vars(self.get_option('compose'), hostvars, host, strict=strict)
            self._add_host_to_composed_groups(self.get_option('groups'), hostvars, host, strict=strict)
            self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, host, strict=strict)
        for group, members in result['groups'].items():
            for host in members['hosts']:
                self.inventory.add_host(host, group=group)

#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
---
module: template
short_description: Validate resource placement templates and compute their plans (no API call)
version_added: 0.1.0
description:
  - Reads shadownet resource placement templates (v1), validates them, normalises them (defaults filled in,
    durations in seconds, rates in bit/s, memory in MiB) and returns each template together with its plan, that is
    the primary and shadow networks, the VMs with their names, tags, NICs, preferred nodes and description
    metadata, the port-mirror pairs, the VRRP groups, the HA rules, the replication and the scaling settings.
  - The plan format is specified in C(docs/plan.md) of the collection; the template fields in C(docs/template.md).
  - Validation happens before anything touches the cluster, and reports B(every) problem at once, each naming
    the template, the field path (for example C(services[1].vip)) and what would be valid.
  - This is an B(action plugin); it runs on the controller and makes no connection to the target and no call to
    the PVE API. It is an action plugin because template files live on the controller (next to the playbook or
    in the inventory) and are rendered with Jinja2 using the play's variables, exactly as
    M(ansible.builtin.template) renders its source; a module running on the target could do neither.
  - Use it with C(hosts=localhost) or C(run_once=true); the result is the same on every host.
  - Pure and deterministic - the same template always gives the same plan and the same derived PVE ids, so roles
    can re-run it instead of passing state around.
options:
  templates:
    description:
      - The templates. Each entry is either a path to a YAML file (C(.yml), C(.yaml), or C(.yml.j2)) or a dict
        holding the template itself.
      - Files are rendered with Jinja2 first (with the play's variables plus O(vars)), then parsed as YAML.
        Relative paths are searched like M(ansible.builtin.template) sources (a role's C(templates/), the
        playbook directory and its C(templates/)).
      - Dicts are used as they are (Ansible has already templated them).
      - When omitted, the variable C(shadownet_templates) is used (required when the module runs without its
        action plugin).
    type: list
    elements: raw
  vars:
    description:
      - Extra variables for rendering template files, on top of (and overriding) the play's variables.
      - Not applied to templates given as dicts.
    type: dict
    default: {}
  fail_on_warnings:
    description:
      - Fail when a plan has warnings (for example a shadow that has to share a node with one of its primaries
        because the template's C(nodes) has no free node).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
    details: Runs entirely on the controller in the action plugin.
  async:
    support: none
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    details: Nothing is changed in any mode; the result in check mode is identical.
  diff_mode:
    support: none
  platform:
    platforms: all
notes:
  - Never reports C(changed).
  - The template format is documented field by field in C(docs/template.md) of the collection.
seealso:
  - name: The template format
    description: Every field, its type, default and meaning.
    link: https://example.invalid/shadownet/proxmox/blob/main/docs/template.md
  - name: The plan format
    description: Every key of the plan, with an example.
    link: https://example.invalid/shadownet/proxmox/blob/main/docs/plan.md
author:
  - shadownet.proxmox developers (@shadownet)
'''

EXAMPLES = r'''
- name: Validate the lab template and compute its plan
  shadownet.proxmox.template:
    templates:
      - inventories/lab/templates/shop.yml.j2
    vars:
      shop_env: staging
      shop_web_instances: 3
  register: sn
  run_once: true

- name: Show the shadow VMs it would build
  ansible.builtin.debug:
    msg: "{{ sn.plans['shop-staging'].vms | selectattr('role', 'equalto', 'shadow') | map(attribute='name') }}"

- name: Use shadownet_templates from the inventory (paths and inline dicts mixed)
  shadownet.proxmox.template:
  register: sn

- name: An inline template
  shadownet.proxmox.template:
    templates:
      - name: tiny
        nodes: [pve1, pve2]
        networks:
          - {name: net, cidr: 10.50.0.0/24, gateway: 10.50.0.1}
        services:
          - {name: app, template: 9000, instances: 2, vip: 10.50.0.10, critical: true}
        shadow:
          replication: {fidelity: full, interval: 1h}
'''

RETURN = r'''
names:
  description: Template names in the order given.
  returned: success
  type: list
  elements: str
  sample: [shop]
templates:
  description: The validated, normalised templates by name (every field present, canonical units).
  returned: success
  type: dict
  sample: {shop: {version: 1, name: shop, nodes: [pve1, pve2, pve3], networks: [], services: []}}
plans:
  description:
    - The plans by template name, in the format of C(docs/plan.md) (C(plan_version) 1).
  returned: success
  type: dict
  sample:
    shop:
      plan_version: 1
      template: shop
      shadow_enabled: true
      vms: [{name: shop-web-1, role: primary, node: pve1}]
      mirrors: []
      vrrp: []
      ha_rules: []
      replication: []
      scaling: []
      warnings: []
errors:
  description: Every validation error of every template (on failure).
  returned: failure
  type: list
  elements: dict
  contains:
    template:
      description: The template's name, or its source when the name itself is invalid.
      type: str
      sample: shop
    path:
      description: The field path.
      type: str
      sample: services[1].vip
    message:
      description: What is wrong.
      type: str
      sample: 10.30.0.5/24 is not a host address inside network back (10.20.0.0/24)
    valid:
      description: What would be valid.
      type: str
      sample: an address inside 10.20.0.0/24
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import failure_result, plan_templates


def main():
    # Without the action plugin (which is what normally runs), only inline dict templates can be used:
    # there is no controller to read and render files on.
    module = AnsibleModule(
        argument_spec=dict(
            templates=dict(type='list', elements='raw'),
            vars=dict(type='dict', default={}),
            fail_on_warnings=dict(type='bool', default=False),
        ),
        supports_check_mode=True,
    )
    if module.params['templates'] is None:
        module.fail_json(msg='templates is required when the module runs without its action plugin')
    entries = []
    for index, entry in enumerate(module.params['templates']):
        if not isinstance(entry, dict):
            module.fail_json(msg='templates[%d]: template files are read by the action plugin on the controller; '
                                 'the module alone accepts inline templates (dicts) only' % index)
        entries.append((entry, 'templates[%d]' % index))
    result, issues = plan_templates(entries, module.params['fail_on_warnings'])
    if issues:
        failed = failure_result(result, issues)
        msg = failed.pop('msg')
        failed.pop('failed')
        module.fail_json(msg=msg, **failed)
    module.exit_json(**result)


if __name__ == '__main__':
    main()

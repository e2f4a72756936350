#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)


DOCUMENTATION = r'''
module: metrics
short_description: Read the usage of the managed VMs from PVE and append it to the metrics history
version_added: 0.1.0
description:
  - Finds the managed VMs of the given templates by their tags (C(shadownet) and C(sn-<template>)), reads
    C(/cluster/resources) once and the C(rrddata) of every VM, a few VMs at a time (O(parallel)).
  - PVE 9 answers C(rrddata) C(hour) with 60 one-minute points and C(day) with 1440 (a full day at one minute);
    PVE 8 (and VMs whose RRD files were not migrated) C(hour) with 70 one-minute points and C(day) with 70
    half-hours (pve-cluster C(RRD.pm) C(create_rrd_data)). The module recognises both by the spacing of the points.
  - A VM whose history does not yet hold its last day is read with C(day), plus C(hour) when C(day) came back in
    half-hours (PVE 8); the half-hours fill the minutes before the hour where no one-minute value is known, and never
    replace one. A VM whose history holds its last day is read with C(hour) only. So a reconcile makes one
    C(/cluster/resources) request plus one C(rrddata) request per managed VM (PVE 9, or a complete history), or two
    per VM (PVE 8 with an incomplete history), so at most 2 x VMs + 1 requests. In check mode the history is not read
    either, so every VM is read with C(day).
  - Every point is normalised to the capacity of the instance it was measured on. CPU is the fraction of the
    VM's cores PVE reports; memory is used over configured memory; network traffic is converted from bytes/s to
    bits/s and compared with the service's C(net.high) from the plan (800 Mbit/s without a plan).
  - "Memory is PVE's C(mem): with the balloon driver's statistics, total minus the guest's C(MemFree)
    (qemu-server C(vmstatus), pve-qemu's C(query-balloon)), so the guest's page cache counts as used and a Linux
    guest drifts towards 100%; without them, the host's cgroup usage of the QEMU process. Set a memory C(high)
    threshold with that in mind (or none, and scale on CPU, network and the canary's latency)."
  - Primaries and shadows are grouped per service, the shadow told apart by its C(sn-shadow) tag.
  - With the V(sqlite) history backend (O(history), or O(history_path)), every run appends its points to the SQLite
    file, a cache that keeps more than the 30 days PVE keeps. Reading the same points again adds no duplicates; a
    revised one-minute value replaces the old one.
  - With the default V(pve) backend (and V(prometheus)) nothing is kept, M(shadownet.proxmox.forecast) reads its own
    history, and this module only reports the newest values, reading every VM with C(hour) (1 + VMs requests).
  - The module never changes anything in PVE. In check mode it reads PVE but does not write the history.
author:
  - shadownet.proxmox developers (@shadownet)
extends_documentation_fragment:
  - shadownet.proxmox.api
  - shadownet.proxmox.history
attributes:
  check_mode:
    description: Reads PVE; the history is not written.
    support: full
  diff_mode:
    description: Nothing in PVE changes.
    support: none
options:
  plans:
    description:
      - The plans of the templates, as M(shadownet.proxmox.template) returns them (C(result.plans), a dict of
        template name to plan), or one plan, or a list of plans. They give the services and the C(net.high) that
        network traffic is normalised to.
      - At least one of O(plans) and O(templates) is required.
    type: raw
  templates:
    description:
      - Template names whose VMs are read. Defaults to the templates of O(plans).
    type: list
    elements: str
  history_path:
    description:
      - The SQLite file of the metrics history, for compatibility; the same as O(history.path) (and it selects
        O(history.backend) V(sqlite) when no backend is given).
      - E(SHADOWNET_HISTORY) does the same; C(~/.local/share/shadownet/history.sqlite) is the file of backend
        V(sqlite) when no path is given.
    type: path
  parallel:
    description: How many C(rrddata) requests are in flight at the same time.
    type: int
    default: 4
'''

EXAMPLES = r'''
- name: Read the metrics of the shop template's VMs into the history
  shadownet.proxmox.metrics:
    plans: "{{ shadownet_result.plans }}"
    history_path: /var/lib/shadownet/history.sqlite
  register: shadownet_metrics

- name: Only some templates, without plans
  shadownet.proxmox.metrics:
    templates: [shop]
'''

RETURN = r'''
services:
  description: One entry per service, with the newest normalised values of its primaries and its shadow.
  returned: always
  type: list
  elements: dict
  contains:
    template:
      description: Template name.
      type: str
    service:
      description: Service name.
      type: str
    instances:
      description: Number of primaries found.
      type: int
    cpu:
      description: Mean CPU utilisation (0..1) of the primaries at their newest point.
      type: float
    mem:
      description: Mean memory utilisation (0..1) of the primaries.
      type: float
    net:
      description: Mean network throughput of the primaries as a fraction of C(net.high).
      type: float
    primaries:
      description: Per primary, name, vmid, node, status, time, cpu, mem, net, netin_bps, netout_bps, points.
      type: list
      elements: dict
    shadow:
      description: The same for the shadow, or null when the service has none.
      type: dict
  sample:
    - template: shop
      service: web
      instances: 2
      cpu: 0.41
      mem: 0.52
      net: 0.08
      primaries: [{name: shop-web-1, vmid: 101, cpu: 0.4, mem: 0.5, net: 0.07, points: 1440}]
      shadow: {name: shop-web-shadow, vmid: 103, cpu: 0.45, mem: 0.6, net: 0.01, points: 1440}
appended:
  description: History points that were new or changed (0 when the same points were read again, and in check mode).
  returned: always
  type: int
  sample: 840
history_path:
  description: The SQLite history file that was used (null with a stateless backend).
  returned: always
  type: str
backend:
  description: The history backend (V(pve), V(sqlite) or V(prometheus)).
  returned: always
  type: str
  sample: pve
requests:
  description:
    - Number of PVE API requests the run made. One C(/cluster/resources) plus VMs x timeframes C(rrddata)
      requests. With V(sqlite), C(day) per VM whose last day is not in the file yet (and C(hour) as well on PVE 8),
      C(hour) for the others. With V(pve) and V(prometheus), C(hour) per VM (1 + VMs).
  returned: always
  type: int
  sample: 4
errors:
  description: VMs whose rrddata could not be read (name and msg); the other VMs are still recorded.
  returned: always
  type: list
  elements: dict
'''


from ansible_collections.shadownet.proxmox.plugins.module_utils.core import api as api_utils
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import history_backends
from ansible_collections.shadownet.proxmox.plugins.module_utils.scaling import scaling


def main():
    argument_spec = api_utils.api_argument_spec()
    argument_spec.update(
        plans=dict(type='raw'),
        templates=dict(type='list', elements='str'),
        history=history_backends.history_argument_spec(),
        history_path=dict(type='path'),
        parallel=dict(type='int', default=4),
    )
    module = api_utils.api_module(argument_spec, required_one_of=[('plans', 'templates')])
    p = module.params
    try:
        plans, templates = scaling.plans_and_templates(p['plans'], p['templates'])
        config = history_backends.history_config(p['history'], p['history_path'])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    api = None
    try:
        api = api_utils.PveApi.from_module(module)
        result = scaling.run_metrics(api, templates, plans, config['path'], parallel=max(1, p['parallel']),
                                     check_mode=module.check_mode, backend=config['backend'])
    except api_utils.PveApiError as exc:
        api_utils.fail_json_from(module, exc, requests=len(api.calls) if api else 0)
    except scaling.ScalingError as exc:
        module.fail_json(msg=str(exc))
    for error in result['errors']:
        module.warn('rrddata of {0} could not be read: {1}'.format(error['name'], error['msg']))
    module.exit_json(changed=False, **result)


if __name__ == '__main__':
    main()

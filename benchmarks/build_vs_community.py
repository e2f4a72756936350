#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build of a template with N critical services: playbooks/site.yml versus a community.proxmox loop.

One run measures, each on its own fresh simulator (tests/lab/pvesim.py; with --pve-timing typical, the default, PVE
tasks and requests take the assumed durations of benchlib.PVE_TIMING; with --pve-timing none, at time scale 0, PVE
tasks take no time, so the figures are what the controller costs):

1. playbooks/site.yml building a generated template of N critical services, one instance each, each on its own
   vnet, shadows enabled: N primaries, N shadows, the primary zone, N primary vnets and subnets, N shadow zones,
   vnets and subnets, 2N HA resources and 2N HA rules (wall time, API requests from the simulator's log);
2. the same site.yml again on the same simulator (the second, converged run: zero writes expected);
3. benchmarks/community/build.yml on a fresh simulator: the same objects, from the same plan, built with
   community.proxmox modules (proxmox_zone, proxmox_vnet, proxmox_subnet, proxmox_kvm clone/update/start,
   proxmox_cluster_ha_resources, proxmox_cluster_ha_rules), one loop item at a time.

Then the objects each build left in its simulator are compared (VM names, nodes, sizes, tags, bridges, power
state, pool; zones, vnets, subnets; HA resources and rules, by VM name).

Targets: site.yml at least 10x faster than the loop (issue 11; 5x before); the second run at most 10% of the first
run's time, with zero writes.

community.proxmox comes from the `ansible` package on PyPI: `pip download ansible --no-deps` and only
ansible_collections/community/proxmox extracted into .build/bench-cache/collections (git-ignored), once.

    .venv/bin/python benchmarks/build_vs_community.py [--services 20] [--skip-community] [--pve-timing none]
                                                      [--json FILE]
"""
import argparse
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'community'))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
PLAYBOOK = os.path.join(ROOT, 'playbooks', 'site.yml')
COMMUNITY_PLAYBOOK = os.path.join(ROOT, 'benchmarks', 'community', 'build.yml')
INVENTORY = os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml')
TEMPLATE_NAME = 'bench'
FIRST_VMID = 100


# The lab cluster's two golden template layouts (inventories/lab/cluster.yml): debian-12-golden (9000) once, on
# shared RBD storage (cloned with `target` from its node), and alpine-3-golden copied to every node's local-lvm
# (9001, 9002, 9003; found by name, cloned from the copy on the VM's node). Services alternate between them.
GOLDEN = (9000, 'alpine-3-golden')


def template(services):
    """N critical services, one instance each, each on its own vnet; shadows enabled (spread); both golden layouts."""
    return {
        'name': TEMPLATE_NAME, 'nodes': ['pve1', 'pve2', 'pve3'], 'pool': 'shadownet',
        'networks': [{'name': 'n%02d' % i, 'type': 'vnet', 'cidr': '10.%d.%d.0/24' % (100 + i // 250, i % 250),
                      'gateway': '10.%d.%d.1' % (100 + i // 250, i % 250)} for i in range(services)],
        'services': [{'name': 's%02d' % i, 'template': GOLDEN[i % 2], 'instances': 1, 'cores': 2, 'memory': '2G',
                      'networks': ['n%02d' % i], 'vip': '10.%d.%d.100/24' % (100 + i // 250, i % 250),
                      'critical': True} for i in range(services)],
        'shadow': {'enabled': True, 'size': 0.25, 'placement': 'spread',
                   'replication': {'fidelity': 'differential', 'interval': '15m', 'paths': ['/var/lib/app']}},
    }


def community_objects(plan, goldens, nodes):
    """The variables of benchmarks/community/build.yml: every object of the plan, one list entry each.

    ``goldens``: the simulator's templates (vmid, name, node); ``nodes``: VM name -> the node site.yml placed it on
    (placement by capacity happens at build time), so the loop builds each VM where site.yml did: a template by
    vmid is cloned from its node with `target`, one by name from its copy on the VM's node.
    """
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.meta import render_description
    zones, vnets, subnets = [], [], []
    for net in plan['networks']:
        if net['type'] != 'vnet':
            continue
        if net['zone'] not in [z['zone'] for z in zones]:
            zones.append({'zone': net['zone']})
        vnets.append({'vnet': net['vnet'], 'zone': net['zone'], 'alias': net['alias']})
        subnets.append({'vnet': net['vnet'], 'zone': net['zone'], 'subnet': net['cidr'],
                        'gateway': net['gateway'] or ''})
    vms, ids = [], {}
    for n, vm in enumerate(plan['vms']):
        vmid = FIRST_VMID + n
        ids[vm['name']] = vmid
        net = {}
        for nic in vm['nics']:
            net['net%d' % nic['index']] = '%s,bridge=%s%s' % (nic['model'], nic['bridge'],
                                                              (',tag=%d' % nic['vlan']) if nic['vlan'] else '')
        node = nodes.get(vm['name'], vm['node'])
        if vm['golden'].get('vmid') is not None:
            golden = [g for g in goldens if g['vmid'] == vm['golden']['vmid']][0]
        else:
            golden = [g for g in goldens if g['name'] == vm['golden']['name'] and g['node'] == node][0]
        vms.append({'name': vm['name'], 'newid': vmid, 'golden': golden['vmid'], 'golden_node': golden['node'],
                    'node': node, 'pool': vm['pool'], 'cores': vm['cores'], 'memory': vm['memory'],
                    'net': net, 'tags': vm['tags'], 'description': render_description('', vm['meta'])})
    resources = [{'sid': 'vm:%d' % ids[vm['name']], 'comment': 'shadownet %s' % plan['template']}
                 for vm in plan['vms']]
    rules = []
    for rule in plan['ha_rules']:
        entry = {'rule': rule['rule'], 'type': rule['type'], 'comment': rule['comment'],
                 'resources': ['vm:%d' % ids[name] for name in rule['resources']]}
        if rule['type'] == 'resource-affinity':
            entry['affinity'] = rule['affinity']
        else:
            entry['nodes'] = ['%s:%d' % (n['node'], n['priority']) for n in rule['nodes']]
            entry['strict'] = bool(rule['strict'])
        rules.append(entry)
    return {'bench_zones': zones, 'bench_vnets': vnets, 'bench_subnets': subnets, 'bench_vms': vms,
            'bench_ha_resources': resources, 'bench_ha_rules': rules}


def snapshot(sim, template_name=TEMPLATE_NAME):
    """What a build left in the simulator, independent of vmids (VMs by name)."""
    pve = sim.pve
    names = dict((vm.vmid, vm.name) for vm in pve.vms)
    vms = {}
    for vm in pve.vms:
        if not (vm.name or '').startswith(template_name + '-'):
            continue
        cfg = dict(vm.config)
        cfg.update(vm.pending or {})
        bridges = tuple(re.search(r'bridge=([^,]+)', str(cfg[k])).group(1)
                        for k in sorted(k for k in cfg if re.match(r'net\d+$', k)))
        mem = str(cfg.get('memory'))
        disks = sorted(str(cfg[k]).split(':')[0] for k in cfg if re.match(r'(scsi|virtio|sata|ide)\d+$', k)
                       and 'media=cdrom' not in str(cfg[k]))
        vms[vm.name] = {'node': vm.node, 'cores': int(str(cfg.get('cores'))), 'memory': int(mem.split('=')[-1]),
                        'disk_storages': disks,
                        'tags': sorted(t for t in re.split(r'[;, ]', str(cfg.get('tags', ''))) if t),
                        'bridges': bridges, 'status': vm.status, 'pool': vm.pool}
    sdn = getattr(pve, 'sdn_running', {})
    zones = sorted(sdn.get('zones', {}))
    vnets = dict((k, (v.get('zone'), v.get('alias'))) for k, v in sdn.get('vnets', {}).items())
    subnets = dict((k, v.get('gateway')) for k, v in sdn.get('subnets', {}).items())

    def by_name(sid):
        kind, _, vmid = str(sid).partition(':')
        return names.get(int(vmid), sid) if vmid.isdigit() else sid

    ha_resources = sorted(by_name(sid) for sid in pve.ha_resources)
    ha_rules = {}
    for rid, rule in pve.ha_rules.items():
        res = rule.get('resources', '')
        res = res if isinstance(res, (list, tuple)) else str(res).split(',')
        ha_rules[rid] = {'type': rule.get('type'), 'resources': sorted(by_name(r) for r in res if r),
                         'affinity': rule.get('affinity'), 'nodes': rule.get('nodes')}
    return {'vms': vms, 'zones': zones, 'vnets': vnets, 'subnets': subnets, 'ha_resources': ha_resources,
            'ha_rules': ha_rules}


def object_count(snap):
    return (len(snap['vms']) + len(snap['zones']) + len(snap['vnets']) + len(snap['subnets'])
            + len(snap['ha_resources']) + len(snap['ha_rules']))


def differences(ours, theirs, limit=12):
    out = []
    for kind in ('zones', 'vnets', 'subnets', 'ha_resources'):
        a, b = ours[kind], theirs[kind]
        if a != b:
            sa, sb = set(a), set(b)
            out.append('%s: only site.yml %s, only community %s%s' % (
                kind, sorted(sa - sb)[:5], sorted(sb - sa)[:5],
                '' if sa != sb else ' (same ids, different values)'))
    for kind in ('vms', 'ha_rules'):
        a, b = ours[kind], theirs[kind]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                if key not in a or key not in b:
                    out.append('%s %s: only in %s' % (kind, key, 'site.yml' if key in a else 'community'))
                    continue
                diff = dict((f, (a[key].get(f), b[key].get(f))) for f in sorted(set(a[key]) | set(b[key]))
                            if a[key].get(f) != b[key].get(f))
                out.append('%s %s: %s' % (kind, key, diff))
    return out[:limit] + (['... %d more' % (len(out) - limit)] if len(out) > limit else [])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--services', type=int, default=20, help='critical services in the template (default 20)')
    parser.add_argument('--skip-community', action='store_true', help='only measure site.yml (two runs)')
    parser.add_argument('--json', help='also write the figures to this file')
    parser.add_argument('--pve-timing', choices=sorted(benchlib.PVE_TIMING), default='typical',
                        help='how long PVE tasks and requests take in the simulator: typical (default, assumed '
                             'durations, benchlib.PVE_TIMING) or none (time scale 0: only the controller\'s cost)')
    args = parser.parse_args()

    benchlib.setup_paths()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template

    version = None
    if not args.skip_community:
        version, _deps = benchlib.ensure_community()
    tpl = template(args.services)
    plan = plan_from_template(json.loads(json.dumps(tpl)))[1]
    work = tempfile.mkdtemp(prefix='bench-build-')
    tpl_file = os.path.join(work, 'bench.yml')
    with open(tpl_file, 'w') as fh:
        json.dump(tpl, fh, indent=1)   # JSON is YAML: the template module reads the file
    site_cmd = [os.path.join(benchlib.VENV_BIN, 'ansible-playbook'), '-i', INVENTORY, PLAYBOOK,
                '-e', json.dumps({'shadownet_templates': [tpl_file]})]
    print('template: %d critical services x 1 instance, shadows on, golden templates 9000 (shared RBD) and '
          'alpine-3-golden (a copy per node) alternating: plan has %d VMs, %d networks (%d primary, %d shadow), '
          '%d HA rules' % (
              args.services, len(plan['vms']), len(plan['networks']),
              sum(1 for n in plan['networks'] if n['role'] == 'primary'),
              sum(1 for n in plan['networks'] if n['role'] == 'shadow'), len(plan['ha_rules'])))
    print('machine: %d CPUs, load average %s' % (os.cpu_count(), ' '.join('%.1f' % x for x in os.getloadavg())))
    print('PVE timing: ' + benchlib.timing_text(args.pve_timing))

    # 1 + 2: site.yml twice on one fresh simulator.
    sim = benchlib.start_sim('site', args.pve_timing)
    try:
        first = benchlib.Run('site.yml (first run)', sim, site_cmd, benchlib.OWN_COLLECTIONS)
        first.lock_waits = list(sim.pve.storage_lock_waits)
        if not first.ok:
            print(first.fail_text())
            return 1
        ours = snapshot(sim)
        second = benchlib.Run('site.yml (second run)', sim, site_cmd, benchlib.OWN_COLLECTIONS)
        if not second.ok:
            print(second.fail_text())
            return 1
    finally:
        sim.stop()

    # 3: the community.proxmox loop on another fresh simulator.
    community = theirs = None
    community_cmd = None
    if not args.skip_community:
        sim = benchlib.start_sim('community', args.pve_timing)
        try:
            goldens = [dict(vmid=vm.vmid, name=vm.name, node=vm.node) for vm in sim.pve.vms if vm.template]
            objects_file = os.path.join(work, 'objects.json')
            with open(objects_file, 'w') as fh:
                json.dump(community_objects(plan, goldens, dict((k, v['node']) for k, v in ours['vms'].items())),
                          fh, indent=1)
            community_cmd = [os.path.join(benchlib.VENV_BIN, 'ansible-playbook'), '-i', INVENTORY,
                             COMMUNITY_PLAYBOOK, '-e', '@' + objects_file]
            community = benchlib.Run('community.proxmox loop', sim, community_cmd,
                                     benchlib.COMMUNITY_COLLECTIONS)
            community.lock_waits = list(sim.pve.storage_lock_waits)
            theirs = snapshot(sim)
        finally:
            sim.stop()

    # Report.
    print()
    expected = (len(plan['vms']) + len({n['zone'] for n in plan['networks'] if n['zone']})
                + 2 * sum(1 for n in plan['networks'] if n['type'] == 'vnet') + len(plan['vms'])
                + len(plan['ha_rules']))
    rows = [['site.yml, first run (build)', '%.1f' % first.seconds, first.requests, len(first.writes()),
             object_count(ours), '1.00'],
            ['site.yml, second run (converged)', '%.1f' % second.seconds, second.requests, len(second.writes()),
             0, '%.2f' % (second.seconds / first.seconds)]]
    if community is not None:
        rows.append(['community.proxmox %s loop%s' % (version, '' if community.ok else ' (FAILED)'),
                     '%.1f' % community.seconds, community.requests, len(community.writes()),
                     object_count(theirs), '%.2f' % (community.seconds / first.seconds)])
    benchlib.print_table(rows, ['run', 'wall s', 'API requests', 'writes', 'objects built', 'time / first run'])
    print('objects expected from the plan: %d (%d VMs, %d zones, %d vnets, %d subnets, %d HA resources, '
          '%d HA rules)' % (expected, len(plan['vms']), len({n['zone'] for n in plan['networks'] if n['zone']}),
                            sum(1 for n in plan['networks'] if n['type'] == 'vnet'),
                            sum(1 for n in plan['networks'] if n['type'] == 'vnet'), len(plan['vms']),
                            len(plan['ha_rules'])))
    print()
    speedup = None
    if community is not None:
        speedup = community.seconds / first.seconds
        print('speed-up of site.yml over the community loop: %.1fx wall time (target >= 10x: %s), '
              '%.1fx fewer requests' % (speedup, 'met' if speedup >= 10 else 'NOT met',
                                        community.requests / max(1, first.requests)))
        if not community.ok:
            print('the community.proxmox playbook FAILED, so its time covers only what ran before the failure:')
            print(community.fail_text())
        diff = differences(ours, theirs)
        print('same objects built by both: %s' % ('yes' if not diff else 'NO, differences:'))
        for line in diff:
            print('  ' + line)
    ratio = second.seconds / first.seconds
    print('second run: %.1f s = %.0f%% of the first (target <= 10%%: %s), %d requests, %d writes, changed=%d' % (
        second.seconds, 100 * ratio, 'met' if ratio <= 0.10 else 'NOT met', second.requests,
        len(second.writes()), second.recap['changed']))
    print()
    for run in [first, second] + ([community] if community is not None else []):
        total = [t for t in run.tasks if t['task'].startswith('(')]
        print('%s: slowest tasks (ansible-playbook start-up before the first callback: %.1f s)' % (
            run.label, run.seconds - (total[0]['seconds'] if total else run.seconds)))
        for line in benchlib.top_tasks(run, 6):
            print('  ' + line)
    print()
    for run in [first] + ([community] if community is not None else []):
        waits = getattr(run, 'lock_waits', [])
        if waits:
            by_lock = {}
            for lock_id, secs in waits:
                by_lock.setdefault(lock_id, []).append(secs)
            print('%s: storage locks of the clones (tests/lab/pvesim_locks.py): %s' % (run.label, '; '.join(
                '%s %d clones, wait max %.2f s, total %.1f s' % (k, len(v), max(v), sum(v))
                for k, v in sorted(by_lock.items()))))
    print()
    print('requests by kind, site.yml first run:')
    for (method, path), count in first.breakdown().most_common(12):
        print('  %4d %-6s %s' % (count, method, path))
    if community is not None:
        print('requests by kind, community loop:')
        for (method, path), count in community.breakdown().most_common(16):
            print('  %4d %-6s %s' % (count, method, path))
    print()
    print('commands (PROXMOX_HOST/PORT/USER/TOKEN_ID/TOKEN_SECRET/CA_PATH point at each fresh simulator; '
          'ANSIBLE_COLLECTIONS_PATH=.build/collections for site.yml, .build/bench-cache/collections for the loop):')
    print('  ' + benchlib.command_line(site_cmd))
    if community_cmd:
        print('  ' + benchlib.command_line(community_cmd))
    print('  this benchmark: .venv/bin/python benchmarks/build_vs_community.py --services %d --pve-timing %s' % (
        args.services, args.pve_timing))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump({'services': args.services, 'pve_timing': args.pve_timing,
                       'first': [first.seconds, first.requests],
                       'second': [second.seconds, second.requests],
                       'community': [community.seconds, community.requests, community.ok] if community else None,
                       'speedup': speedup, 'second_ratio': ratio, 'objects': object_count(ours),
                       'community_objects': object_count(theirs) if theirs else None}, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())

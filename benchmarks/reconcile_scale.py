#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A reconcile over ~500 managed VMs: playbooks/reconcile.yml (check mode) versus community.proxmox reads.

One run, on one fresh simulator (tests/lab/pvesim.py, time scale 0):

1. setup (not timed): a template of S services x I primaries, each critical with one shadow (S x (I + 1) VMs,
   500 by default), its VMs put straight into the simulator's state as linked_clone would leave them (name,
   node, cores, memory, NICs, the collection's tags and description meta block, pool, running), and a 70-minute
   rrd series injected per VM (most services flat, every fifth rising towards its high threshold, every
   seventh falling);
2. warm-up: reconcile.yml with shadownet_forecast_only=true (not check mode) fills the SQLite history with the
   series (metrics -> forecast -> scale, no PVE write); timed and counted too;
3. the measured run: reconcile.yml in check mode (metrics, forecast, decision; no write);
4. benchmarks/community/reconcile_reads.yml: the same reads with community.proxmox, one VM per loop iteration
   (a proxmox_vm_info listing, then proxmox_vm_info per VM and its rrddata through ansible.builtin.uri). With
   --community-vms N only the first N VMs are read and the full figure is extrapolated linearly (and labelled so).

Targets (issue): at least 10x faster than the community reads, and at most VMs + 5 API requests.

With ``--history pve`` (issue 15) the controller is stateless: no history file, no warm-up; the check run's forecast
reads every VM's rrddata `day` from PVE itself (PVE 9 shapes: 1440 rows a VM). The request count is then
1 listing + VMs x 1 timeframe (+ the scale step's reads), printed against that budget. ``--concurrent`` then starts
two reconcile.yml runs (not check mode) at the same moment, each a fresh controller with no shared file, and counts
the services that got more than one new instance (double actions).

    .venv/bin/python benchmarks/reconcile_scale.py [--services 50] [--instances 9] [--community-vms N]
    .venv/bin/python benchmarks/reconcile_scale.py --history pve --services 500 --skip-community --concurrent
"""
import argparse
import collections
import json
import os
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'community'))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
PLAYBOOK = os.path.join(ROOT, 'playbooks', 'reconcile.yml')
COMMUNITY_PLAYBOOK = os.path.join(ROOT, 'benchmarks', 'community', 'reconcile_reads.yml')
INVENTORY = os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml')
TEMPLATE_NAME = 'fleet'
FIRST_VMID = 1000
GIB = 1024 ** 3
SHADOW_SIZE = 0.25


def template(services, instances):
    return {
        'name': TEMPLATE_NAME, 'nodes': ['pve1', 'pve2', 'pve3'], 'pool': 'shadownet',
        'networks': [{'name': 'front', 'type': 'bridge', 'bridge': 'vmbr0', 'cidr': '10.10.0.0/16',
                      'gateway': '10.10.0.1'}],
        'services': [{'name': 'svc%03d' % i, 'template': 9000, 'instances': instances, 'cores': 2,
                      'memory': 2048, 'networks': ['front'], 'vip': '10.10.%d.100/16' % i, 'vrid': i % 255 + 1,
                      'critical': True} for i in range(services)],
        'shadow': {'enabled': True, 'size': SHADOW_SIZE, 'placement': 'spread',
                   'replication': {'fidelity': 'differential', 'interval': '15m', 'paths': ['/var/lib/app']}},
        'scaling': {'instances': {'min': 1, 'max': max(16, instances + 4)}, 'cooldown': {'up': '3m', 'down': '10m'},
                    'horizon': '15m', 'mode': 'horizontal'},
    }


def load_profile(service_index, points=70):
    """CPU fractions, one per minute: flat 45%, every fifth service rising 10% -> 62%, every seventh falling."""
    if service_index % 5 == 0:
        return [0.10 + 0.0075 * i for i in range(points)]
    if service_index % 7 == 0:
        return [0.5 - 0.008 * i for i in range(50)] + [0.1] * (points - 50)
    return [0.45 + 0.02 * ((i * 7 + service_index) % 5 - 2) for i in range(points)]


def populate(sim, plan):
    """Every VM of the plan, as linked_clone leaves it, plus one rrd series per VM. Returns the VM count."""
    from ansible_collections.shadownet.proxmox.plugins.module_utils.core.meta import render_description
    pve = sim.pve
    services = [s['service'] for s in plan['scaling']]
    rate = plan['mirrors'][0]['rate'] if plan['mirrors'] else 1.0
    end = int(time.time()) // 60 * 60
    need = sum(vm['memory'] for vm in plan['vms']) * 1024 * 1024
    if need > 0.8 * sum(pve.node_usage(node)['maxmem'] for node in pve.nodes):
        # Beyond the lab cluster's 3 x 64 GiB: nodes big enough for the whole fleet twice over (the scale step places
        # its new instances; placement itself is not what this measures).
        for node in sorted(pve.nodes):
            pve.set_node_size(node, maxcpu=4096, maxmem=2 * need)
    for n, vm in enumerate(plan['vms']):
        vmid = FIRST_VMID + n
        config = {'cores': vm['cores'], 'memory': vm['memory'], 'sockets': 1, 'agent': 1, 'ostype': 'l26',
                  'scsihw': 'virtio-scsi-single', 'boot': 'order=scsi0;net0',
                  'scsi0': 'local-lvm:base-9000-disk-0/vm-%d-disk-0,iothread=1,size=8G' % vmid,
                  'tags': ';'.join(sorted(vm['tags'])), 'description': render_description('', vm['meta'])}
        for nic in vm['nics']:
            config['net%d' % nic['index']] = 'virtio=BC:24:11:%02X:%02X:%02X,bridge=%s' % (
                (vmid >> 16) & 255, (vmid >> 8) & 255, vmid & 255, nic['bridge'])
        pve.add_vm(vmid, vm['name'], node=vm['node'] or 'pve1', status='running', config=config,
                   pool=vm['pool'])
        cpu = load_profile(services.index(vm['service']))
        mem = [0.5] * len(cpu)
        if vm['role'] == 'shadow':
            # The canary sees `rate` of the traffic of all primaries on `size` of one primary's capacity: the
            # load that policy.py normalises back to the primaries' own (so only real saturation stands out).
            factor = rate * len(vm['shadows']) / SHADOW_SIZE
            cpu = [min(1.0, v * factor) for v in cpu]
            mem = [min(0.95, v * factor) for v in mem]
        maxmem = vm['memory'] * 1024 * 1024
        start = end - 60 * (len(cpu) - 1)
        pve.inject_rrd(vmid, [{'time': start + 60 * i, 'cpu': v, 'maxcpu': vm['cores'], 'mem': m * maxmem,
                               'maxmem': maxmem, 'netin': 2e6, 'netout': 1.5e6}
                              for i, (v, m) in enumerate(zip(cpu, mem))])
    return len(plan['vms'])


def primaries_per_service(sim):
    """{service: primaries} from the VMs' tags (sn-primary and the service's sn-<service>)."""
    counts = collections.Counter()
    for vm in sim.pve.vms:
        tags = set((vm.config.get('tags') or '').split(';'))
        if 'sn-primary' in tags:
            service = [t[3:] for t in tags if t.startswith('sn-svc')]
            counts[service[0] if service else '?'] += 1
    return counts


def concurrent_runs(sim, base):
    """Two reconcile.yml runs (acting) started together; per service, how many instances each added."""
    before = primaries_per_service(sim)
    runs = [None, None]

    def one(i):
        runs[i] = benchlib.Run('reconcile.yml #%d (concurrent)' % (i + 1), sim, base, benchlib.OWN_COLLECTIONS)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    after = primaries_per_service(sim)
    added = dict((s, after[s] - before[s]) for s in after if after[s] != before[s])
    # Per run, the services it acted on and the instances each decision asked for ("decision scale_up 2 -> 4").
    acted, wanted = [], {}
    for run in runs:
        mine = set()
        for found in re.finditer(r'"msg": "%s/(\w+): [^"]*decision scale_up (\d+) -> (\d+) instances[^"]*=> applied'
                                 % TEMPLATE_NAME, run.stdout):
            mine.add(found.group(1))
            wanted[found.group(1)] = int(found.group(3)) - int(found.group(2))
        acted.append(mine)
    doubles = sorted(acted[0] & acted[1])
    extra = sorted(s for s, n in added.items() if n != wanted.get(s))
    failed = [r.label for r in runs if not r.ok]
    text = ('%d services scaled out by %d actions (%s per run), %d instances added; %d double actions (a service '
            'acted on by both runs), %d services whose added instances differ from their one decision; %.1f s wall '
            'for both; %s' % (len(added), len(acted[0]) + len(acted[1]), ' + '.join(str(len(a)) for a in acted),
                              sum(added.values()), len(doubles), len(extra), seconds,
                              'both runs ok' if not failed else 'FAILED: ' + ', '.join(failed)))
    return dict(scaled=len(added), added=sum(added.values()), doubles=doubles, mismatched=extra,
                acted=[sorted(a) for a in acted], seconds=seconds, ok=not failed, text=text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--services', type=int, default=50, help='services (default 50)')
    parser.add_argument('--instances', type=int, default=9, help='primaries per service (default 9; +1 shadow)')
    parser.add_argument('--community-vms', type=int, default=None,
                        help='read only the first N VMs in the community loop and extrapolate (default: all)')
    parser.add_argument('--skip-community', action='store_true')
    parser.add_argument('--history', choices=['sqlite', 'pve'], default='sqlite',
                        help='sqlite: a history file filled by a warm-up run (default); pve: stateless, no file')
    parser.add_argument('--concurrent', action='store_true',
                        help='then two reconciles at once (no shared file): count double actions')
    parser.add_argument('--json', help='also write the figures to this file')
    args = parser.parse_args()

    benchlib.setup_paths()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template

    version = None
    if not args.skip_community:
        version, _deps = benchlib.ensure_community()
    tpl = template(args.services, args.instances)
    plan = plan_from_template(json.loads(json.dumps(tpl)))[1]
    work = tempfile.mkdtemp(prefix='bench-reconcile-')
    tpl_file = os.path.join(work, 'fleet.yml')
    with open(tpl_file, 'w') as fh:
        json.dump(tpl, fh, indent=1)
    history = os.path.join(work, 'history.sqlite')
    extra = {'shadownet_templates': [tpl_file]}
    if args.history == 'sqlite':
        extra['shadownet_history_path'] = history
    else:
        # A fresh controller: no history file, and none from the environment either.
        for name in ('SHADOWNET_HISTORY', 'SHADOWNET_HISTORY_BACKEND'):
            os.environ.pop(name, None)
    base = [os.path.join(benchlib.VENV_BIN, 'ansible-playbook'), '-i', INVENTORY, PLAYBOOK, '-e', json.dumps(extra)]
    warm_cmd = base + ['-e', 'shadownet_forecast_only=true']
    check_cmd = base + ['--check']
    print('machine: %d CPUs, load average %s' % (os.cpu_count(), ' '.join('%.1f' % x for x in os.getloadavg())))

    sim = benchlib.start_sim('reconcile')
    try:
        t0 = time.perf_counter()
        vms = populate(sim, plan)
        print('setup: %d managed VMs (%d services x %d primaries + 1 shadow each) and their rrd series in the '
              'simulator, %.1f s' % (vms, args.services, args.instances, time.perf_counter() - t0))
        warm = None
        if args.history == 'sqlite':
            warm = benchlib.Run('reconcile.yml, forecast only (fills the history)', sim, warm_cmd,
                                benchlib.OWN_COLLECTIONS)
            if not warm.ok:
                print(warm.fail_text())
                return 1
        label = 'reconcile.yml --check' + (' (stateless, backend pve)' if args.history == 'pve' else '')
        check = benchlib.Run(label, sim, check_cmd, benchlib.OWN_COLLECTIONS)
        if not check.ok:
            print(check.fail_text())
            return 1
        concurrent = concurrent_runs(sim, base) if args.concurrent else None
        community = community_cmd = None
        read = args.community_vms or vms
        if not args.skip_community:
            community_cmd = [os.path.join(benchlib.VENV_BIN, 'ansible-playbook'), '-i', INVENTORY,
                             COMMUNITY_PLAYBOOK]
            if args.community_vms:
                community_cmd += ['-e', 'bench_limit=%d' % args.community_vms]
            community = benchlib.Run('community.proxmox reads', sim, community_cmd, benchlib.COMMUNITY_COLLECTIONS)
    finally:
        sim.stop()

    lines = []
    for found in re.finditer(r'"msg": "(%s/[^"]*)"' % TEMPLATE_NAME, check.stdout):
        lines.append(found.group(1))
    actions = {}
    for line in lines:
        m = re.search(r'decision (\w+)', line)
        actions[m.group(1) if m else '?'] = actions.get(m.group(1) if m else '?', 0) + 1

    print()
    rows = ([[warm.label, '%.1f' % warm.seconds, warm.requests, len(warm.writes()), '']] if warm else []) + \
        [[check.label, '%.1f' % check.seconds, check.requests, len(check.writes()), '1.00']]
    extrapolated = None
    if community is not None:
        per_vm_tasks = [t for t in community.tasks if t['items']]
        loop_seconds = sum(t['seconds'] for t in per_vm_tasks)
        label = 'community.proxmox %s reads, %d VMs%s' % (version, read, '' if community.ok else ' (FAILED)')
        rows.append([label, '%.1f' % community.seconds, community.requests, len(community.writes()),
                     '%.2f' % (community.seconds / check.seconds)])
        if read < vms:
            extrapolated = community.seconds + loop_seconds * (vms - read) / float(read)
            ext_requests = int(round(community.requests + (community.requests - 2) * (vms - read) / float(read)))
            rows.append(['  extrapolated to %d VMs (linear in the loop time)' % vms, '%.1f' % extrapolated,
                         ext_requests, 0, '%.2f' % (extrapolated / check.seconds)])
    benchlib.print_table(rows, ['run', 'wall s', 'API requests', 'writes', 'time / check run'])
    print()
    print('decisions in the check run: %d services, %s' % (len(lines), ', '.join(
        '%s %d' % kv for kv in sorted(actions.items()))))
    if lines:
        print('  e.g. ' + lines[0][:240])
    budget = vms + 5
    print('requests of the check run: %d for %d VMs (target <= VMs + 5 = %d: %s)' % (
        check.requests, vms, budget, 'met' if check.requests <= budget else 'NOT met'))
    if args.history == 'pve':
        rrd = sum(1 for method, path, dummy in check.request_log if '/rrddata' in path)
        listings = sum(1 for method, path, dummy in check.request_log if '/cluster/resources' in path)
        print('stateless (backend pve): %d rrddata requests (VMs x 1 timeframe, `day`: %d) + %d listings + %d other '
              'reads; no history file on the controller' % (rrd, vms, listings, check.requests - rrd - listings))
    if concurrent is not None:
        print('two reconcile.yml at once, no shared file: %s' % concurrent['text'])
    speedup = None
    if community is not None:
        full = extrapolated if extrapolated is not None else community.seconds
        speedup = full / check.seconds
        print('speed-up over the community reads%s: %.1fx (target >= 10x: %s)' % (
            ' (extrapolated)' if extrapolated is not None else '', speedup, 'met' if speedup >= 10 else 'NOT met'))
        if not community.ok:
            print(community.fail_text())
    print()
    for run in ([warm] if warm else []) + [check] + ([community] if community is not None else []):
        total = [t for t in run.tasks if t['task'].startswith('(')]
        print('%s: slowest tasks (ansible-playbook start-up before the first callback: %.1f s)' % (
            run.label, run.seconds - (total[0]['seconds'] if total else run.seconds)))
        for line in benchlib.top_tasks(run, 5):
            print('  ' + line)
    print()
    for run in [check] + ([community] if community is not None else []):
        print('requests by kind, %s:' % run.label)
        for (method, path), count in run.breakdown().most_common(8):
            print('  %5d %-6s %s' % (count, method, path))
    print()
    print('commands (PROXMOX_* point at the simulator; ANSIBLE_COLLECTIONS_PATH=.build/collections for '
          'reconcile.yml, .build/bench-cache/collections for the community playbook):')
    for cmd in ((warm_cmd,) if warm else ()) + (check_cmd,) + ((community_cmd,) if community_cmd else ()):
        print('  ' + benchlib.command_line(cmd))
    print('  this benchmark: .venv/bin/python benchmarks/reconcile_scale.py %s' % ' '.join(sys.argv[1:]))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump({'vms': vms, 'history': args.history, 'warm': [warm.seconds, warm.requests] if warm else None,
                       'check': [check.seconds, check.requests],
                       'concurrent': dict((k, v) for k, v in concurrent.items() if k != 'text') if concurrent else None,
                       'community': [community.seconds, community.requests, read, community.ok]
                       if community else None, 'extrapolated': extrapolated, 'speedup': speedup,
                       'actions': actions}, fh, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())

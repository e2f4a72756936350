#!/usr/bin/env python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A reconcile of ~5,000 managed VMs with the prometheus history backend: Prometheus queries and PVE requests.

One run, on one fresh simulator (tests/lab/pvesim.py, time scale 0) and one real Prometheus (Debian's package,
loopback, temporary TSDB; tests/lab/promlab.py):

1. setup (not timed): the fleet of benchmarks/reconcile_scale.py (S services x I primaries + one shadow each; 100 x 49
   by default, 5,000 VMs) put straight into the simulator, on three nodes big enough to hold them; M minutes (default 120) of per-minute usage per VM in
   prometheus-pve-exporter's metric names and labels, loaded with `promtool tsdb create-blocks-from openmetrics`
   (the load of reconcile_scale.load_profile: every fifth service rising, every seventh falling);
2. the measured run: playbooks/reconcile.yml in check mode with
   `shadownet_history: {backend: prometheus, url: ...}` and `shadownet_history_window` = M minutes
   (template, forecast, scale; the metrics step does not run with this backend).

Figures: wall time, PVE requests (the simulator's request log), Prometheus queries (Prometheus' own query log,
`query_log_file`), the bytes Prometheus answered. Targets (issue 15): <= 10 Prometheus queries, <= 10 PVE requests.

    .venv/bin/python benchmarks/prometheus_history.py [--services 100] [--instances 49] [--minutes 120]
"""
import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, 'community'))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
import reconcile_scale  # noqa: E402

ROOT = benchlib.ROOT
PLAYBOOK = os.path.join(ROOT, 'playbooks', 'reconcile.yml')
INVENTORY = os.path.join(ROOT, 'inventories', 'lab', 'hosts.yml')


def om_history(path, plan, minutes, end, labels):
    """OpenMetrics of ``minutes`` of usage per VM of the plan (vmids as reconcile_scale.populate numbers them), the
    exporter's names; written as a stream (millions of lines). Returns the number of samples."""
    services = [s['service'] for s in plan['scaling']]
    rows = []
    for n, vm in enumerate(plan['vms']):
        index = services.index(vm['service']) if vm['service'] in services else 0
        rows.append((reconcile_scale.FIRST_VMID + n, vm, reconcile_scale.load_profile(index, minutes)))
    times = [end - 60 * (minutes - 1 - i) - 30 for i in range(minutes)]
    count = 0
    with open(path, 'w') as fh:
        gauges = (('pve_cpu_usage_ratio', lambda vm, i, load: load[i]),
                  ('pve_cpu_usage_limit', lambda vm, i, load: vm['cores']),
                  ('pve_memory_usage_bytes', lambda vm, i, load: vm['memory'] * 1048576 * 0.5),
                  ('pve_memory_size_bytes', lambda vm, i, load: vm['memory'] * 1048576))
        for name, value in gauges:
            fh.write('# TYPE {0} gauge\n'.format(name))
            for vmid, vm, load in rows:
                for i, ts in enumerate(times):
                    fh.write('{0}{{id="qemu/{1}",{2}}} {3!r} {4}\n'.format(name, vmid, labels, float(value(vm, i, load)),
                                                                           ts))
                count += len(times)
        for name in ('pve_network_receive_bytes', 'pve_network_transmit_bytes'):
            fh.write('# TYPE {0} counter\n'.format(name))
            for vmid, vm, load in rows:
                for i, ts in enumerate(times):
                    fh.write('{0}_total{{id="qemu/{1}",{2}}} {3!r} {4}\n'.format(name, vmid, labels,
                                                                                 float(1e9 + 125000.0 * 60 * i), ts))
                count += len(times)
        fh.write('# TYPE pve_guest_info gauge\n')
        for vmid, vm, load in rows:
            for ts in times:
                fh.write('pve_guest_info{{id="qemu/{0}",name="{1}",node="{2}",tags="",template="0",type="qemu",{3}}} '
                         '1.0 {4}\n'.format(vmid, vm['name'], vm.get('node') or 'pve1', labels, ts))
            count += len(times)
        fh.write('# EOF\n')
    return count


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--services', type=int, default=100, help='services (default 100)')
    parser.add_argument('--instances', type=int, default=49, help='primaries per service (default 49; +1 shadow)')
    parser.add_argument('--minutes', type=int, default=120, help='minutes of history per VM (default 120)')
    parser.add_argument('--json', help='also write the figures to this file')
    args = parser.parse_args()

    benchlib.setup_paths()
    from ansible_collections.shadownet.proxmox.plugins.module_utils.build.plan import plan_from_template
    from lab import promlab

    tpl = reconcile_scale.template(args.services, args.instances)
    plan = plan_from_template(json.loads(json.dumps(tpl)))[1]
    work = tempfile.mkdtemp(prefix='bench-prometheus-')
    tpl_file = os.path.join(work, 'fleet.yml')
    with open(tpl_file, 'w') as fh:
        json.dump(tpl, fh, indent=1)
    print('machine: %d CPUs, load average %s' % (os.cpu_count(), ' '.join('%.1f' % x for x in os.getloadavg())))

    sim = benchlib.start_sim('prometheus')
    prom = None
    try:
        t0 = time.perf_counter()
        vms = reconcile_scale.populate(sim, plan)
        # Nodes big enough for the fleet and what it scales to: placement is not what this benchmark measures.
        for node in sorted(sim.pve.nodes):
            sim.pve.set_node_size(node, maxcpu=4096, maxmem=64 * 1024 * reconcile_scale.GIB)
        end = int(time.time()) // 60 * 60
        source = os.path.join(work, 'history.om')
        samples = om_history(source, plan, args.minutes, end, 'instance="pve-exporter:9221",job="pve"')
        print('setup: %d managed VMs (%d services x %d primaries + 1 shadow each) in the simulator; %d samples '
              '(%d minutes) written, %.1f s' % (vms, args.services, args.instances, samples, args.minutes,
                                                time.perf_counter() - t0))
        t0 = time.perf_counter()
        data = os.path.join(work, 'prom', 'data')
        os.makedirs(data)
        out = promlab.backfill_file(source, data)
        print('promtool tsdb create-blocks-from openmetrics: %.1f s (%s)' % (
            time.perf_counter() - t0, out.strip().splitlines()[0] if out.strip() else 'no output'))
        os.unlink(source)
        query_log = os.path.join(work, 'queries.jsonl')
        prom = promlab.Prometheus(os.path.join(work, 'prom'), query_log=query_log)
        history = {'backend': 'prometheus', 'url': prom.url, 'timeout': 120}
        cmd = [os.path.join(benchlib.VENV_BIN, 'ansible-playbook'), '-i', INVENTORY, PLAYBOOK, '--check',
               '-e', json.dumps({'shadownet_templates': [tpl_file], 'shadownet_history': history,
                                 'shadownet_history_window': args.minutes * 60})]
        run = benchlib.Run('reconcile.yml --check, history from Prometheus', sim, cmd, benchlib.OWN_COLLECTIONS)
        if not run.ok:
            print(run.fail_text())
            return 1
    finally:
        if prom is not None:
            prom.stop()
        sim.stop()
        shutil.rmtree(os.path.join(work, 'prom'), ignore_errors=True)

    queries = []
    with open(query_log) as fh:
        for line in fh:
            entry = json.loads(line)
            queries.append(entry.get('params', {}).get('query', ''))
    range_queries = [q for q in queries if q]
    lines = [m.group(1) for m in re.finditer(r'"msg": "(%s/[^"]*)"' % reconcile_scale.TEMPLATE_NAME, run.stdout)]
    actions = {}
    for line in lines:
        found = re.search(r'decision (\w+)', line)
        key = found.group(1) if found else '?'
        actions[key] = actions.get(key, 0) + 1
    shapes = run.breakdown()

    print()
    benchlib.print_table([[run.label, '%.1f' % run.seconds, run.requests, len(range_queries), len(run.writes())]],
                         ['run', 'wall s', 'PVE requests', 'Prometheus queries', 'writes'])
    print()
    print('PVE requests by shape: ' + ', '.join('%s %s x%d' % (m, p, n) for (m, p), n in sorted(shapes.items())))
    print('Prometheus queries (from its query log):')
    for q in range_queries:
        print('  ' + (q if len(q) < 150 else q[:110] + '... (%d characters)' % len(q)))
    print('decisions: %d services, %s' % (len(lines), ', '.join('%s %d' % kv for kv in sorted(actions.items()))))
    if lines:
        print('  e.g. ' + lines[0][:240])
    print('targets: Prometheus queries %d <= 10: %s; PVE requests %d <= 10: %s' % (
        len(range_queries), 'met' if len(range_queries) <= 10 else 'NOT met', run.requests,
        'met' if run.requests <= 10 else 'NOT met'))
    if args.json:
        with open(args.json, 'w') as fh:
            json.dump(dict(vms=vms, minutes=args.minutes, seconds=run.seconds, pve_requests=run.requests,
                           prometheus_queries=len(range_queries), writes=len(run.writes()), actions=actions), fh)
    return 0


if __name__ == '__main__':
    sys.exit(main())

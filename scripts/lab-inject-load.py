#!/usr/bin/env python
"""Lab only: inject a rising CPU load into the simulator's rrddata for a service's primaries.

Talks to the simulator's control channel (/_sim/, see tests/lab/pvesim.py) with the PROXMOX_* environment that
scripts/lab.sh exports. The series covers the last day at one point per minute (``--history``): flat at ``--start``
(a fraction of the VM's CPUs), then over the last ``--minutes`` rising linearly to ``--end``: issue 15's ramp, 30% to
68% over the last hour, below the lab template's `high` (75%) but heading for it. The simulator serves it as PVE 9
does (rrddata `hour` 60 and `day` 1440 one-minute rows; the script reads both back through the API and prints their
shapes), and the forecast reads the day from PVE itself: no history file on the controller.
"""
import argparse
import json
import os
import ssl
import time
import urllib.request


def call(method, path, body=None):
    url = 'https://{0}:{1}/_sim/{2}'.format(os.environ['PROXMOX_HOST'], os.environ['PROXMOX_PORT'], path)
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        'Content-Type': 'application/json',
        'Authorization': 'PVEAPIToken={0}!{1}={2}'.format(os.environ['PROXMOX_USER'], os.environ['PROXMOX_TOKEN_ID'],
                                                          os.environ['PROXMOX_TOKEN_SECRET'])})
    ctx = ssl.create_default_context(cafile=os.environ['PROXMOX_CA_PATH'])
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read() or b'null')


def api(method, path):
    """The PVE API itself (what the collection reads), with the same token."""
    url = 'https://{0}:{1}/api2/json/{2}'.format(os.environ['PROXMOX_HOST'], os.environ['PROXMOX_PORT'], path)
    req = urllib.request.Request(url, method=method, headers={
        'Authorization': 'PVEAPIToken={0}!{1}={2}'.format(os.environ['PROXMOX_USER'], os.environ['PROXMOX_TOKEN_ID'],
                                                          os.environ['PROXMOX_TOKEN_SECRET'])})
    ctx = ssl.create_default_context(cafile=os.environ['PROXMOX_CA_PATH'])
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return json.loads(resp.read())['data']


def series(now, start, end, minutes, history):
    """One point a minute ending at `now`: flat at `start`, then rising linearly to `end` over the last `minutes`."""
    total = max(history, minutes)
    points = []
    for i in range(total):
        rise = i - (total - minutes)
        frac = start + (end - start) * max(0, rise) / max(1, minutes - 1)
        points.append({'time': now - (total - 1 - i) * 60, 'cpu': round(frac, 4), 'maxcpu': 2,
                       'mem': 1024 * 1048576, 'maxmem': 2048 * 1048576, 'netin': 1.0e6, 'netout': 1.0e6})
    return points


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--prefix', default='shop-web-', help='name prefix of the primaries')
    parser.add_argument('--start', type=float, default=0.30)
    parser.add_argument('--end', type=float, default=0.68)
    parser.add_argument('--minutes', type=int, default=60, help='length of the rise (minutes)')
    parser.add_argument('--history', type=int, default=1440, help='length of the whole series (minutes)')
    args = parser.parse_args()
    state = call('GET', 'state')
    vms = [vm for vm in state['vms'] if str(vm.get('name', '')).startswith(args.prefix)
           and str(vm['name'])[len(args.prefix):].isdigit()]
    now = int(time.time()) // 60 * 60
    for vm in vms:
        points = series(now, args.start, args.end, args.minutes, args.history)
        total = len(points)
        call('POST', 'rrd', {'vmid': vm['vmid'], 'points': points})
        call('POST', 'stats', {'vmid': vm['vmid'], 'stats': {'cpu': points[-1]['cpu']}})
        print('lab: injected {0} min of CPU history into {1} (vmid {2}): {3:.0%}, rising to {4:.0%} over the last '
              '{5} min'.format(total, vm['name'], vm['vmid'], args.start, args.end, args.minutes))
        shapes = []
        for frame in ('hour', 'day'):
            rows = api('GET', 'nodes/{0}/qemu/{1}/rrddata?timeframe={2}&cf=AVERAGE'.format(
                vm['node'], vm['vmid'], frame))
            times = [r['time'] for r in rows]
            step = times[-1] - times[-2] if len(times) > 1 else 0
            shapes.append('{0} {1} rows x {2} s'.format(frame, len(rows), step))
        print('lab: PVE answers rrddata of {0} with {1}'.format(vm['name'], ', '.join(shapes)))
    if not vms:
        raise SystemExit('lab: no VM named {0}N in the simulator'.format(args.prefix))


if __name__ == '__main__':
    main()

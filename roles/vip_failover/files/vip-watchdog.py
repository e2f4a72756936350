# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fast health checks for keepalived (shadownet.proxmox.vip_failover).

keepalived runs ``vrrp_script`` checks at most once a second; a dead service would then keep its VIP for
seconds. This watchdog checks every ``interval`` seconds (default 0.05) and writes ``0`` (healthy) or ``1``
(failing) to each instance's ``track_file`` only when the verdict changes, after ``fall`` failures or
``rise`` successes in a row. keepalived reads the file when it changes and moves the VIP at once.

While it runs it also touches each instance's ``beat_file`` every ``BEAT_EVERY`` seconds. keepalived's backstop
(``vip-ctl.sh backstop``, once a second) runs ``--once`` itself only when that file is stale, so a healthy
guest does not start a Python interpreter every second: measured in the namespace lab, those starts delayed the
VRRP process's 30 ms adverts by up to 176 ms on a busy guest, long enough for the peer to take the VIP.

    vip-watchdog.py --config watchdog.json            run every check until SIGTERM
    vip-watchdog.py --config watchdog.json --once web  one check of instance web: exit 0 healthy, 1 not
"""

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time


def check_once(check):
    """Run one check; True when healthy."""
    timeout = float(check.get('timeout', 0.1))
    if check['type'] == 'tcp':
        try:
            with socket.create_connection((check.get('host', '127.0.0.1'), int(check['port'])), timeout=timeout):
                return True
        except OSError:
            return False
    if check['type'] == 'command':
        try:
            return subprocess.run(check['command'], shell=True, timeout=max(timeout, 0.05),
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, check=False).returncode == 0
        except subprocess.TimeoutExpired:
            return False
    return True


BEAT_EVERY = 0.5


def beat(path):
    """Mark the watchdog alive: set ``path``'s modification time to now (created when missing)."""
    try:
        with open(path, 'a'):
            os.utime(path)
    except OSError as exc:
        sys.stderr.write('cannot touch %s: %s\n' % (path, exc))


def write_verdict(path, healthy):
    # Write in place: keepalived watches the file itself and re-reads it after each write.
    with open(path, 'w') as handle:
        handle.write('0\n' if healthy else '1\n')


def watch(instance, stop):
    check = instance['check']
    interval = float(check.get('interval', 0.05))
    fall = int(check.get('fall', 2))
    rise = int(check.get('rise', 3))
    verdict = None
    streak_ok = streak_bad = 0
    next_run = time.monotonic()
    next_beat = next_run
    while not stop.is_set():
        if instance.get('beat_file') and time.monotonic() >= next_beat:
            beat(instance['beat_file'])
            next_beat = time.monotonic() + BEAT_EVERY
        if check_once(check):
            streak_ok, streak_bad = streak_ok + 1, 0
        else:
            streak_ok, streak_bad = 0, streak_bad + 1
        new = verdict
        if streak_bad >= fall:
            new = False
        elif streak_ok >= rise or (verdict is None and streak_ok >= 1):
            new = True
        if new is not None and new != verdict:
            write_verdict(instance['health_file'], new)
            verdict = new
            sys.stderr.write('%s: %s\n' % (instance['name'], 'healthy' if new else 'FAILING'))
        next_run += interval
        delay = next_run - time.monotonic()
        if delay < 0:
            next_run = time.monotonic()
            delay = 0
        stop.wait(delay)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', required=True)
    parser.add_argument('--once', metavar='INSTANCE')
    args = parser.parse_args(argv)
    with open(args.config) as handle:
        instances = json.load(handle)['instances']
    if args.once:
        for instance in instances:
            if instance['name'] == args.once:
                return 0 if check_once(instance['check']) else 1
        return 0  # no check configured for this instance: nothing can fail
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    threads = [threading.Thread(target=watch, args=(i, stop), daemon=True) for i in instances]
    for thread in threads:
        thread.start()
    while not stop.is_set():
        stop.wait(1)
    return 0


if __name__ == '__main__':
    sys.exit(main())

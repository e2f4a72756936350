#!/usr/bin/env python
# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""shadownet VM hookscript: keeps port mirrors alive across VM restarts.

The role installs this file with its first line replaced by ``#!<port_mirror_python>``
(default /usr/bin/python3: PVE nodes have no ``python``).

PVE calls it as ``shadownet-hook.py <vmid> <phase>`` (phases pre-start, post-start, pre-stop,
post-stop). PVE recreates a VM's tap devices on every start, which drops tc mirrors on a primary
and leaves every mirror towards a restarted shadow pointing at a dead device. So:

* ``post-start``: apply every mirror whose source *or* target is this VM;
* ``pre-stop`` / ``post-stop``: remove every mirror whose source or target is this VM;
* ``pre-start``: nothing, and nothing is read (PVE does not start the VM when pre-start fails:
  GuestHelpers::exec_hookscript with stop_on_error, called by qemu-server's vm_start_nolock).

What to apply comes from the node-local state file the ``shadownet.proxmox.port_mirror`` role
writes (``{"mirrors": [{source_vmid, source_nic, target_vmid, target_nic, target_bridge, mode, rate,
sampling, direction, backend}]}``). A mirror with a ``target_bridge`` (the shadow runs on another node) copies into
the collection's veth port on that bridge and does not depend on the shadow's tap: only the primary's
phases touch it. The mirror logic is the collection's own ``module_utils/mirror.py``, installed by the
role as ``<lib>/shadownet_mirror.py``.

Environment overrides (for tests and labs):
  SHADOWNET_MIRRORS  state file (default /etc/shadownet/mirrors.json)
  SHADOWNET_LIB      directory holding shadownet_mirror.py (default /usr/local/lib/shadownet)
  SHADOWNET_NETNS    run the commands inside this network namespace (else the state file's
                     ``netns``, else none)
It logs one line per action to stdout (the PVE task log) and to syslog. It exits 0 whenever it was
called correctly, even when a mirror could not be applied (the error is logged): a mirror must never
stop a VM from starting or stopping.
"""
import json
import os
import subprocess
import sys

DEFAULT_STATE = '/etc/shadownet/mirrors.json'
DEFAULT_LIB = '/usr/local/lib/shadownet'
PHASES = ('pre-start', 'post-start', 'pre-stop', 'post-stop')


def load_state(path):
    """(mirrors, netns) from the state file: a list, or a dict with ``mirrors`` and ``netns``."""
    try:
        with open(path, encoding='utf-8') as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return [], None
    mirrors = data.get('mirrors', []) if isinstance(data, dict) else data
    netns = data.get('netns') if isinstance(data, dict) else None
    if not isinstance(mirrors, list):
        raise ValueError('%s: "mirrors" must be a list' % path)
    return mirrors, netns or None


def actions_for(mirrors, vmid, phase):
    """What to do for ``vmid`` entering ``phase``: a list of ('apply' | 'remove', mirror).

    Entries that are not mappings are left out (the caller logs them): a damaged state file must not
    fail a VM start or stop."""
    if phase == 'post-start':
        action = 'apply'
    elif phase in ('pre-stop', 'post-stop'):
        action = 'remove'
    else:
        return []
    related = [m for m in mirrors if isinstance(m, dict)
               and (str(m.get('source_vmid')) == str(vmid)
                    or (str(m.get('target_vmid')) == str(vmid) and not m.get('target_bridge')))]
    return [(action, m) for m in related]


def _run(argv, data=None):
    proc = subprocess.run(argv, input=data, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def _log(line):
    sys.stdout.write('shadownet-hook: %s\n' % line)
    sys.stdout.flush()
    try:
        import syslog
        syslog.syslog(syslog.LOG_INFO, line)
    except Exception:  # syslog is a nicety; the task log already has the line
        pass


def perform(mirror_lib, manager, action, m):
    """Apply or remove one mirror; returns the log line."""
    bridge = m.get('target_bridge') or None
    target = {'target_bridge': bridge} if bridge else {'target_vmid': m['target_vmid'],
                                                       'target_nic': m.get('target_nic', 0)}
    spec = mirror_lib.build_spec(
        source_vmid=m['source_vmid'], source_nic=m.get('source_nic', 0),
        mode=m.get('mode', 'full'),
        rate=m.get('rate') if m.get('mode', 'full') == 'sampled' else None,
        # A state file written before `sampling` existed meant per-packet sampling.
        sampling=m.get('sampling') or 'packet',
        direction=m.get('direction', 'both'), backend=m.get('backend', 'nft'), **target)
    if action == 'apply':
        res = manager.ensure_present(spec, ignore_missing=True)
    elif bridge:
        res = manager.ensure_absent_bridge(spec.source, bridge)
    else:
        res = manager.ensure_absent(spec.source, spec.target)
    return '%s (%s)' % (res['msg'], 'changed' if res['changed'] else 'unchanged')


def main(argv=None, environ=None):
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if environ is None else environ
    if len(argv) != 2 or not argv[0].isdigit() or argv[1] not in PHASES:
        sys.stderr.write('usage: shadownet-hook.py <vmid> <%s>\n' % '|'.join(PHASES))
        return 2
    vmid, phase = argv
    # PVE stops the VM's start when pre-start fails (GuestHelpers::exec_hookscript, stop_on_error): nothing to
    # do there, so nothing is read that could fail.
    if phase == 'pre-start':
        return 0
    path = env.get('SHADOWNET_MIRRORS') or DEFAULT_STATE
    try:
        mirrors, netns = load_state(path)
        bad = [m for m in mirrors if not isinstance(m, dict)]
        if bad:
            _log('vmid %s %s: ERROR %s: ignoring %d entries that are not mappings: %r'
                 % (vmid, phase, path, len(bad), bad[:3]))
        todo = actions_for(mirrors, vmid, phase)
    except Exception as exc:  # pylint: disable=broad-except  # a bad state file never fails a VM start or stop
        _log('vmid %s %s: ERROR cannot read %s: %s' % (vmid, phase, path, exc))
        return 0
    if not todo:
        return 0
    sys.path.insert(0, env.get('SHADOWNET_LIB') or DEFAULT_LIB)
    try:
        import shadownet_mirror as mirror_lib
    except Exception as exc:  # pylint: disable=broad-except  # ImportError, or a damaged library
        _log('vmid %s %s: ERROR cannot import shadownet_mirror: %s' % (vmid, phase, exc))
        return 0
    try:
        manager = mirror_lib.MirrorManager(_run, netns=env.get('SHADOWNET_NETNS') or netns)
    except Exception as exc:  # pylint: disable=broad-except  # MirrorError, or a netns that is not a name
        _log('vmid %s %s: ERROR %s' % (vmid, phase, exc))
        return 0
    for action, m in todo:
        try:
            _log('vmid %s %s: %s' % (vmid, phase, perform(mirror_lib, manager, action, m)))
        except Exception as exc:  # pylint: disable=broad-except  # one bad mirror must not fail the VM's phase
            _log('vmid %s %s: ERROR %s %r: %s' % (vmid, phase, action, m, exc))
    return 0


if __name__ == '__main__':
    sys.exit(main())

# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""State replication (``shadow.replication``): the pure part of the state_replication role.

:func:`build_model` turns the role's settings (plan form or simple form) into everything the role's tasks
render: the primary/shadow pair, the source and destination of every declared path, the rsync options, the
schedule (systemd ``OnUnitActiveSec`` and a cron expression) and a list of readable errors. No I/O.

:data:`FIDELITIES` is the one table of what each fidelity costs, what RPO it gives and what it needs in the
guests; the role's README and argument specs say the same.
"""

from __future__ import annotations

import posixpath
import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.units import UnitError, parse_duration

__all__ = ['FIDELITIES', 'SCHEDULERS', 'build_model', 'cron_schedule', 'check_path', 'pair_from_plan']

FIDELITIES = {
    'full': {
        'rpo': 'interval (the age of the last snapshot the shadow was re-cloned from)',
        'cost': 'a PVE snapshot of the primary and a linked re-clone of the shadow every interval: storage I/O '
                'on the primary\'s storage, snapshot space, and the shadow is down while it is re-created',
        'guest': 'nothing in the guest; qemu-guest-agent recommended (fs-freeze for consistent snapshots)',
        'implemented': False,
    },
    'differential': {
        'rpo': 'interval plus the duration of one sync',
        'cost': 'one rsync quick check (metadata walk) of the declared paths on the primary every interval, '
                'plus the changed bytes over SSH from the primary to the shadow',
        'guest': 'primary: rsync, openssh-client, flock (util-linux), systemd or cron; shadow: openssh-server '
                 'reachable from the primary, rsync >= 3.2.4 with rrsync, python3',
        'implemented': True,
    },
    'event': {
        'rpo': 'as current as the traffic mirror (no periodic sync); the user hook decides the rest',
        'cost': 'the port mirror\'s cost (port_mirror role) plus whatever the hook runs '
                '(e.g. database streaming replication)',
        'guest': 'whatever the hook needs; nothing from this role',
        'implemented': True,
    },
}

SCHEDULERS = ('systemd', 'cron', 'none')

# Characters a replicated path may contain. The shadow's forced command splits the rsync server invocation
# on spaces and rsync escapes anything unusual, so paths stay within this set.
_PATH_RE = re.compile(r'^/[A-Za-z0-9._/+@-]*$')
_NAME_RE = re.compile(r'^[A-Za-z0-9._-]+$')


def check_path(path):
    """Return an error message for an unusable replication path, or None."""
    if not isinstance(path, str) or not path:
        return 'a path must be a non-empty string, got %r' % (path,)
    if not _PATH_RE.match(path):
        return ('path %r must be absolute and use only letters, digits and ._/+@- '
                '(the shadow\'s forced command refuses anything else)' % path)
    if path == '/':
        return 'path %r would replicate the whole file system; name the directories that hold state' % path
    parts = path.split('/')[1:]
    if '..' in parts or '.' in parts or '' in parts:
        return 'path %r must not contain empty, . or .. components (no // and no trailing /)' % path
    return None


def _norm(path):
    return posixpath.normpath(path)


def _join_root(root, path):
    root = (root or '').rstrip('/')
    return root + _norm(path)


def cron_schedule(seconds):
    """A cron expression firing every ``seconds``, or raise ValueError when cron cannot express it."""
    if seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
        hours = seconds // 3600
        return '0 * * * *' if hours == 1 else '0 */%d * * *' % hours
    if seconds % 60 == 0 and 60 % (seconds // 60) == 0:
        minutes = seconds // 60
        return '* * * * *' if minutes == 1 else '*/%d * * * *' % minutes
    raise ValueError('cron cannot run every %d s: use a number of minutes that divides 60 or of hours that '
                     'divides 24 (e.g. 5m, 15m, 1h, 6h), or state_replication_scheduler: systemd' % seconds)


def pair_from_plan(plan, host):
    """The plan's ``replication`` entry whose ``primaries`` include ``host`` (None when there is none).

    Raises ValueError when the host is a primary of more than one entry (a plan never does that).
    """
    found = [entry for entry in (plan.get('replication') or []) if host in (entry.get('primaries') or [])]
    if len(found) > 1:
        raise ValueError('%s is a primary in %d replication entries of the plan' % (host, len(found)))
    return found[0] if found else None


def _interval(value, errors):
    if value is None or value == '':
        return None
    try:
        seconds = parse_duration(value)
    except UnitError as exc:
        errors.append('state_replication_interval: %s' % exc)
        return None
    if seconds != int(seconds) or seconds < 10:
        errors.append('state_replication_interval: %r is too short; use whole seconds, at least 10s' % (value,))
        return None
    return int(seconds)


def _hook(value, errors):
    """Normalise the event hook: None, {'command': str} or {'role': str}."""
    if value in (None, '', {}):
        return None
    if isinstance(value, str):
        return {'command': value}
    if isinstance(value, dict):
        keys = sorted(k for k in ('command', 'role') if value.get(k))
        unknown = sorted(set(value) - {'command', 'role'})
        if unknown:
            errors.append('state_replication_event_hook: unknown keys %s (use command or role)' % ', '.join(unknown))
        elif len(keys) != 1:
            errors.append('state_replication_event_hook: give exactly one of command or role')
        else:
            return {keys[0]: str(value[keys[0]])}
        return None
    errors.append('state_replication_event_hook: expected a command string or {command: ...} / {role: ...}')
    return None


def build_model(settings):
    """Compute what the role does on one primary. ``settings`` holds the role variables without their
    ``state_replication_`` prefix, plus ``host`` (this primary's inventory name).

    Returns a dict; ``errors`` lists everything wrong (empty when the role may proceed) and ``skip`` is
    true when this host replicates nothing (not a primary in the plan, or not the first primary with
    ``sources: first``), with ``skip_reason``.
    """
    s = dict(settings or {})
    errors = []
    host = s.get('host')
    plan = s.get('plan') or None
    model = {'errors': errors, 'skip': False, 'skip_reason': '', 'primary': host}

    if plan and plan.get('replication') is not None:
        try:
            entry = pair_from_plan(plan, host)
        except ValueError as exc:
            errors.append(str(exc))
            return model
        if entry is None:
            model.update(skip=True, skip_reason='%s is not a primary of any replicated shadow in the plan' % host)
            return model
        fidelity = entry.get('fidelity')
        shadow = entry.get('shadow')
        primaries = list(entry.get('primaries') or [])
        interval = entry.get('interval_seconds')
        paths = list(entry.get('paths') or [])
        hook = _hook(s.get('event_hook') or entry.get('hook'), errors)
    else:
        fidelity = s.get('fidelity') or 'differential'
        shadow = s.get('shadow')
        primaries = [host]
        interval = _interval(s.get('interval'), errors)
        paths = list(s.get('paths') or [])
        hook = _hook(s.get('event_hook'), errors)
        if not shadow:
            errors.append('state_replication_shadow: name the shadow host (its inventory name) or pass '
                          'state_replication_plan')

    model.update(fidelity=fidelity, shadow=shadow, primaries=primaries, hook=hook,
                 interval_seconds=None, rpo_seconds=None, paths=[], allowed=[], rsync_options=[],
                 cron=None, on_unit_active_sec=None)
    if fidelity not in FIDELITIES:
        errors.append('fidelity %r: expected one of %s' % (fidelity, ', '.join(sorted(FIDELITIES))))
        return model
    model['fidelity_info'] = FIDELITIES[fidelity]
    if not FIDELITIES[fidelity]['implemented']:
        errors.append('fidelity %s is not implemented by the state_replication role yet (see its README: '
                      'use differential or event, or re-clone the shadow with the linked_clone module)' % fidelity)
        return model

    sources = s.get('sources') or 'first'
    if fidelity == 'event':
        # The hook runs on the shadow: once per shadow, from its first primary.
        if primaries and host != primaries[0]:
            model.update(skip=True, skip_reason='the event hook of %s runs from its first primary (%s)'
                         % (shadow, primaries[0]))
        return model
    if sources not in ('first', 'subdir'):
        errors.append('state_replication_sources: expected first or subdir, got %r' % (sources,))
    elif sources == 'first' and primaries and host != primaries[0]:
        model.update(skip=True, skip_reason='only the first primary (%s) replicates into %s '
                     '(state_replication_sources: first)' % (primaries[0], shadow))
        return model

    # differential
    model['interval_seconds'] = interval
    model['rpo_seconds'] = interval
    if interval is None:
        errors.append('differential replication needs an interval (state_replication_interval, e.g. 15m)')
    if not paths:
        errors.append('differential replication needs at least one path (state_replication_paths)')
    bad = [msg for msg in (check_path(p) for p in paths) if msg]
    errors.extend('state_replication_paths: %s' % msg for msg in bad)
    if bad:
        return model
    normed = [_norm(p) for p in paths]
    if len(set(normed)) != len(normed):
        errors.append('state_replication_paths: %s are listed twice' % ', '.join(
            sorted({p for p in normed if normed.count(p) > 1})))
    for a in normed:
        for b in normed:
            if a != b and b.startswith(a + '/'):
                errors.append('state_replication_paths: %s lies inside %s; list only %s' % (b, a, a))
    for root_key in ('source_root', 'dest_root'):
        root = s.get(root_key) or ''
        if root and (check_path(root) or _norm(root) == '/'):
            errors.append('state_replication_%s: %r must be an absolute path of letters, digits and ._/+@-'
                          % (root_key, root))
    if host and not _NAME_RE.match(str(host)):
        errors.append('inventory name %r cannot name files; use letters, digits and ._-' % host)
    for p in normed:
        dest = _join_root(s.get('dest_root'), p)
        if sources == 'subdir':
            dest = '%s/%s' % (dest, host)
        model['paths'].append({'path': p, 'src': _join_root(s.get('source_root'), p), 'dest': dest})
    model['allowed'] = [entry['dest'] for entry in model['paths']]

    opts = ['--archive', '--numeric-ids', '--itemize-changes']
    if s.get('delete', True):
        opts.append('--delete')
    timeout = int(s.get('timeout') or 0)
    if timeout:
        opts.append('--timeout=%d' % timeout)
    bwlimit = int(s.get('bwlimit') or 0)
    if bwlimit:
        opts.append('--bwlimit=%d' % bwlimit)
    for pattern in s.get('excludes') or []:
        if not isinstance(pattern, str) or not re.match(r'^[A-Za-z0-9._/*?+@\[\]-]+$', pattern):
            errors.append('state_replication_excludes: %r: use letters, digits and ._/*?+@[]- only' % (pattern,))
        else:
            opts.append('--exclude=%s' % pattern)
    model['rsync_options'] = opts

    scheduler = s.get('scheduler') or 'systemd'
    if scheduler not in SCHEDULERS:
        errors.append('state_replication_scheduler: expected one of %s' % ', '.join(SCHEDULERS))
    elif interval is not None:
        model['on_unit_active_sec'] = '%ds' % interval
        if scheduler == 'cron':
            try:
                model['cron'] = cron_schedule(interval)
            except ValueError as exc:
                errors.append('state_replication_interval: %s' % exc)
    return model

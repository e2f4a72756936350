# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""State replication (``shadow.replication``): the rules of the state_replication role, in one place.

:func:`build_model` turns the role's settings (plan form or simple form, either direction) into everything the
role's tasks use: the primary/shadow pair, whether this host does anything (``skip``), the source and destination
of every declared path, the rsync options, the schedule (systemd ``OnUnitActiveSec`` and a cron expression), the
serving-state file, and a list of readable errors, each naming the variable and the fix. The role calls it
through the ``state_replication_model`` filter (plugins/filter/state_replication.py); its preflight only asserts
that ``errors`` is empty. No I/O.

:data:`FIDELITIES` is the one table of what each fidelity costs, what RPO it gives and what it needs in the
guests; the role's README and argument specs say the same.
"""


import posixpath
import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import UnitError, parse_duration

__all__ = ['FIDELITIES', 'SCHEDULERS', 'DIRECTIONS', 'build_model', 'cron_schedule', 'check_path', 'pair_from_plan']

FIDELITIES = {
    'full': {
        'rpo': 'interval (plus up to one poll period and the copy time)',
        'cost': 'a PVE snapshot of the primary and a full re-clone of the shadow every interval, from the '
                'controller: a full copy of the primary\'s disks, snapshot space on the primary\'s storage, and '
                'the shadow is down while it is copied',
        'guest': 'nothing in the guest; qemu-guest-agent recommended (fs-freeze for consistent snapshots)',
        'min_interval': 300,
    },
    'differential': {
        'rpo': 'interval plus the duration of one sync',
        'cost': 'one rsync quick check (metadata walk) of the declared paths on the primary every interval, '
                'plus the changed bytes over SSH from the primary to the shadow',
        'guest': 'primary: rsync, openssh-client, flock (util-linux), systemd or cron; shadow: openssh-server '
                 'reachable from the primary, rsync >= 3.2.4 with rrsync, python3',
        'min_interval': 10,
    },
    'event': {
        'rpo': 'as current as the traffic mirror (no periodic sync); the user hook decides the rest',
        'cost': 'the port mirror\'s cost (port_mirror role) plus whatever the hook runs '
                '(e.g. database streaming replication)',
        'guest': 'whatever the hook needs; nothing from this role',
        'min_interval': None,
    },
}

SCHEDULERS = ('systemd', 'cron', 'none')
DIRECTIONS = ('forward', 'catch_up')

# Characters a replicated path may contain. The shadow's forced command splits the rsync server invocation
# on spaces and rsync escapes anything unusual, so paths stay within this set.
_PATH_RE = re.compile(r'^/[A-Za-z0-9._/+@-]*$')
_NAME_RE = re.compile(r'^[A-Za-z0-9._-]+$')
_VM_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9.-]*$')
_UNIT_RE = re.compile(r'^[A-Za-z0-9_-]+$')
_EXCLUDE_RE = re.compile(r'^[A-Za-z0-9._/*?+@\[\]-]+$')
_SNAPSHOT_PREFIX_RE = re.compile(r'^[A-Za-z][A-Za-z0-9_-]{0,17}$')
_ADDRESS_RE = re.compile(r'^[A-Za-z0-9.:_-]*$')
_LOCAL_NAMES = ('localhost', '127.0.0.1')

# Install locations every run checks (whatever the fidelity, also on hosts that skip).
_ABSOLUTE_LOCATIONS = ('key_dir', 'state_dir', 'script_dir', 'authorized_keys', 'systemd_dir', 'cron_dir')


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


def _join_root(root, path):
    return (root or '').rstrip('/') + posixpath.normpath(path)


def _bool(value, default):
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ('1', 'true', 'yes', 'on', 'y', 't')
    return bool(value)


def _port_ok(value):
    try:
        return 0 < int(value) < 65536
    except (TypeError, ValueError):
        return False


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
    """Seconds of the simple form's ``state_replication_interval`` (None, with an error, when unusable)."""
    if value is None or value == '':
        return None
    try:
        seconds = parse_duration(value)
    except UnitError as exc:
        errors.append('state_replication_interval: %s' % exc)
        return None
    if seconds != int(seconds):
        errors.append('state_replication_interval: %r: use whole seconds' % (value,))
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


def _check_run(s, errors):
    """Rules of every run, also on hosts that skip: direction and install locations."""
    direction = s.get('direction') or 'forward'
    if direction not in DIRECTIONS:
        errors.append('state_replication_direction: %r: use forward (replicate into the shadow, on a schedule) or '
                      'catch_up (once, from the shadow back into its primaries, before fail-back)' % (direction,))
    if (s.get('catch_up_primaries') or 'first') not in ('first', 'all'):
        errors.append('state_replication_catch_up_primaries: %r: use first or all' % (s.get('catch_up_primaries'),))
    for key in _ABSOLUTE_LOCATIONS:
        if s.get(key) is not None and not posixpath.isabs(str(s[key])):
            errors.append('state_replication_%s: %r must be an absolute path' % (key, s[key]))
    if s.get('unit_name') is not None and not _UNIT_RE.match(str(s['unit_name'])):
        errors.append('state_replication_unit_name: %r: use letters, digits, _ and - only (cron ignores file '
                      'names with dots)' % (s['unit_name'],))
    if s.get('ssh_port') is not None and not _port_ok(s['ssh_port']):
        errors.append('state_replication_ssh_port: %r: use a port number 1-65535' % (s['ssh_port'],))


def _pair(s, host, errors):
    """This host's pair from the plan or the simple form: a dict, or a skip reason (str), or None on error."""
    plan = s.get('plan') or None
    if plan and plan.get('replication') is not None:
        try:
            entry = pair_from_plan(plan, host)
        except ValueError as exc:
            errors.append(str(exc))
            return None
        if entry is None:
            return '%s is not a primary of any replicated shadow in the plan' % host
        pair = {'fidelity': entry.get('fidelity'), 'shadow': entry.get('shadow'), 'service': entry.get('service'),
                'primaries': list(entry.get('primaries') or []), 'interval_seconds': entry.get('interval_seconds'),
                'paths': list(entry.get('paths') or []), 'hook': _hook(s.get('event_hook') or entry.get('hook'), errors)}
        if not pair['shadow']:
            errors.append('the plan\'s replication entry of %s names no shadow; compute the plan with the template '
                          'module' % host)
        return pair
    pair = {'fidelity': s.get('fidelity') or 'differential', 'shadow': s.get('shadow'), 'service': None,
            'primaries': [host], 'interval_seconds': None, 'paths': list(s.get('paths') or []),
            'hook': _hook(s.get('event_hook'), errors), 'interval_text': s.get('interval')}
    if not pair['shadow']:
        errors.append('state_replication_shadow: name the shadow host (its inventory name) or pass '
                      'state_replication_plan')
    return pair


def _skip_reason(s, host, pair):
    """Why this host leaves the pair to another primary ('' when it does the work)."""
    first = pair['primaries'][0] if pair['primaries'] else host
    if host == first:
        return ''
    catch_up = (s.get('direction') or 'forward') == 'catch_up'
    if pair['fidelity'] == 'event':
        return 'the event hook of %s runs from its first primary (%s)%s' % (
            pair['shadow'], first, ', which runs the catch-up hook and writes the markers' if catch_up else '')
    if pair['fidelity'] == 'full':
        return 'full replication re-creates %s from its first primary (%s)' % (pair['shadow'], first)
    if (s.get('sources') or 'first') == 'first' and not (catch_up and s.get('catch_up_primaries') == 'all'):
        return ('only the first primary (%s) replicates into %s (state_replication_sources: first)'
                % (first, pair['shadow']))
    return ''


def _check_interval(s, pair, errors):
    """The pair's interval in seconds, checked against its fidelity's floor (None when unusable)."""
    floor = FIDELITIES[pair['fidelity']]['min_interval']
    if 'interval_text' in pair:
        interval = _interval(pair['interval_text'], errors)
        name = 'state_replication_interval'
    else:
        interval = pair['interval_seconds']
        name = 'the plan\'s interval_seconds of %s (the template\'s shadow.replication.interval)' % pair['shadow']
    if interval is None:
        if pair.get('interval_text') in (None, ''):
            errors.append('%s replication needs an interval (%s, e.g. 15m)' % (pair['fidelity'], name))
        return None
    if pair['fidelity'] == 'full' and interval < floor:
        errors.append('%s: full replication copies the primary\'s whole disks per interval, so the interval must be '
                      'at least %ds (got %ds)' % (name, floor, interval))
        return None
    if interval < floor:
        given = pair.get('interval_text', interval)
        errors.append('%s: %r is too short; use whole seconds, at least %ds' % (name, given, floor))
        return None
    return interval


def _check_paths(paths, errors):
    """Normalised paths, with an error for every unusable, repeated or nested one."""
    bad = [p for p in paths if check_path(p)]
    errors.extend('state_replication_paths: %s' % check_path(p) for p in bad)
    normed = [posixpath.normpath(p) for p in paths if p not in bad]
    repeated = sorted({p for p in normed if normed.count(p) > 1})
    if repeated:
        errors.append('state_replication_paths: %s are listed twice' % ', '.join(repeated))
    nested = [(b, a) for a in normed for b in normed if a != b and b.startswith(a + '/')]
    errors.extend('state_replication_paths: %s lies inside %s; list only %s' % (b, a, a) for b, a in nested)
    if bad or nested:
        errors.append('state_replication_paths: list absolute, distinct, non-nested directories (bad: %s; nested: %s)'
                      % (', '.join(str(p) for p in bad), ', '.join('%s inside %s' % pair for pair in nested)))
    return normed


def _rsync_options(s, errors):
    opts = ['--archive', '--numeric-ids', '--itemize-changes']
    if _bool(s.get('delete'), True):
        opts.append('--delete')
    timeout = int(s.get('timeout') or 0)
    if timeout > 0:
        opts.append('--timeout=%d' % timeout)
    bwlimit = int(s.get('bwlimit') or 0)
    if bwlimit > 0:
        opts.append('--bwlimit=%d' % bwlimit)
    for pattern in s.get('excludes') or []:
        if not isinstance(pattern, str) or not _EXCLUDE_RE.match(pattern):
            errors.append('state_replication_excludes: %r: use letters, digits and ._/*?+@[]- only' % (pattern,))
        else:
            opts.append('--exclude=%s' % pattern)
    return opts


def _serving_file(s, pair, errors):
    """The shadow's VRRP state file its gate reads ('' when off); ``auto`` derives it from the plan."""
    value = s.get('serving_state_file', 'auto')
    if value == 'auto':
        plan = s.get('plan') or {}
        value = ''
        if plan.get('replication') is not None and plan.get('template') is not None and pair['service']:
            value = '%s/%s-%s.state' % (s.get('vip_state_dir') or '/var/lib/shadownet-vip', plan['template'],
                                        pair['service'])
    value = str(value or '').strip()
    if value and not re.match(r'^/[A-Za-z0-9._/+@-]+$', value):
        errors.append('state_replication_serving_state_file: %r must be auto, empty, or an absolute path of letters, '
                      'digits and ._/+@-' % value)
    return value


def _differential(s, host, pair, model, errors):
    """Paths, rsync options, schedule and serving-state file of differential replication (either direction)."""
    interval = _check_interval(s, pair, errors)
    model.update(interval_seconds=interval, rpo_seconds=interval)
    if not pair['paths']:
        errors.append('differential replication needs at least one path (state_replication_paths)')
    normed = _check_paths(pair['paths'], errors)
    for key in ('source_root', 'dest_root'):
        root = s.get(key) or ''
        if root and (check_path(root) or posixpath.normpath(root) == '/'):
            errors.append('state_replication_%s: %r must be an absolute path of letters, digits and ._/+@- '
                          '(no trailing /)' % (key, root))
    if host and not _NAME_RE.match(str(host)):
        errors.append('inventory name %r cannot name files; use letters, digits and ._-' % host)
    for path in normed:
        dest = _join_root(s.get('dest_root'), path)
        if (s.get('sources') or 'first') == 'subdir':
            dest = '%s/%s' % (dest, host)
        model['paths'].append({'path': path, 'src': _join_root(s.get('source_root'), path), 'dest': dest})
    model['sources'] = [entry['src'] for entry in model['paths']]
    model['allowed'] = [entry['dest'] for entry in model['paths']]
    model['rsync_options'] = _rsync_options(s, errors)
    model['serving_file'] = _serving_file(s, pair, errors)
    scheduler = s.get('scheduler') or 'systemd'
    if scheduler not in SCHEDULERS:
        errors.append('state_replication_scheduler: %r: expected one of %s' % (scheduler, ', '.join(SCHEDULERS)))
    elif interval is not None:
        model['on_unit_active_sec'] = '%ds' % interval
        if scheduler == 'cron' and (s.get('direction') or 'forward') == 'forward':
            try:
                model['cron'] = cron_schedule(interval)
            except ValueError as exc:
                errors.append('state_replication_interval: %s' % exc)
    if (s.get('direction') or 'forward') == 'catch_up':
        _check_catch_up_differential(s, host, pair, errors)


def _check_catch_up_differential(s, host, pair, errors):
    """The receiving side of a differential catch-up: names used in file names, keys, port, address."""
    if pair['shadow'] and not _NAME_RE.match(str(pair['shadow'])):
        errors.append('the shadow %r must be usable in file names for the catch-up (letters, digits, ._-)'
                      % (pair['shadow'],))
    for key in ('catch_up_authorized_keys', 'primary_host_key'):
        if s.get(key) is not None and not posixpath.isabs(str(s[key])):
            errors.append('state_replication_%s: %r must be an absolute path' % (key, s[key]))
    if s.get('catch_up_port') is not None and not _port_ok(s['catch_up_port']):
        errors.append('state_replication_catch_up_port: %r: use a port number 1-65535' % (s['catch_up_port'],))
    if not _ADDRESS_RE.match(str(s.get('primary_address') or '')):
        errors.append('state_replication_primary_address: %r: use a host name or an address'
                      % (s.get('primary_address'),))
    for key in ('key_dir', 'state_dir', 'script_dir'):
        if re.search(r'\s', str(s.get(key) or '')):
            errors.append('state_replication_%s: %r: no blanks (the catch-up passes it to ssh and rsync)'
                          % (key, s[key]))


def _full(s, pair, model, errors):
    """Interval, poll period, snapshot prefix and work directory of full replication (from the controller)."""
    interval = _check_interval(s, pair, errors)
    model.update(interval_seconds=interval, rpo_seconds=interval)
    poll = s.get('full_poll_minutes')
    if poll is not None:
        try:
            poll = int(poll)
        except (TypeError, ValueError):
            poll = 0
        if not 1 <= poll <= 59:
            errors.append('state_replication_full_poll_minutes: %r: use 1-59 minutes' % (s['full_poll_minutes'],))
        elif interval is not None and poll * 60 > interval:
            errors.append('state_replication_full_poll_minutes: %d minutes is longer than the interval (%ds); poll '
                          'at least once per interval' % (poll, interval))
    prefix = s.get('full_snapshot_prefix')
    if prefix is not None and not _SNAPSHOT_PREFIX_RE.match(str(prefix)):
        errors.append('state_replication_full_snapshot_prefix: %r: a letter, then at most 17 letters, digits, _ or -'
                      % (prefix,))
    if s.get('full_dir') is not None and not posixpath.isabs(str(s['full_dir'])):
        errors.append('state_replication_full_dir: %r must be an absolute path' % (s['full_dir'],))
    if pair['shadow'] and not _VM_NAME_RE.match(str(pair['shadow'])):
        errors.append('the shadow %r must be a VM name (letters, digits, . and -, starting with a letter or digit)'
                      % (pair['shadow'],))


def _check_inventory(s, host, pair, inventory, errors):
    """Hosts the role delegates to must be in the inventory (only checked when ``inventory`` is given)."""
    if inventory is None:
        return
    shadow = pair['shadow']
    if pair['fidelity'] != 'full' and shadow and shadow not in inventory and shadow not in _LOCAL_NAMES:
        errors.append('the shadow %s is not in the inventory; add it (the shadownet.proxmox inventory plugin lists '
                      'it) so the role can install the restricted key there' % shadow)
    marks_all = (s.get('direction') or 'forward') == 'catch_up' and s.get('catch_up_primaries') == 'all'
    if pair['fidelity'] == 'event' and marks_all:
        missing = [p for p in pair['primaries'] if p != host and p not in inventory]
        if missing:
            errors.append('state_replication_catch_up_primaries: all: every primary (%s) must be in the inventory '
                          '(its marker is written there); missing: %s'
                          % (', '.join(pair['primaries']), ', '.join(missing)))


def build_model(settings, inventory=None):
    """Compute what the role does on one primary. ``settings`` holds the role variables without their
    ``state_replication_`` prefix, plus ``host`` (this primary's inventory name) and ``vip_state_dir``
    (vip_failover's state directory, for ``serving_state_file: auto``). ``inventory``: the inventory's host
    names, when the hosts the role delegates to should be checked.

    Returns a dict; ``errors`` lists everything wrong (empty when the role may proceed) and ``skip`` is
    true when this host replicates nothing (not a primary in the plan, or not the primary that does the work
    for its shadow), with ``skip_reason``.
    """
    s = dict(settings or {})
    errors = []
    host = s.get('host')
    model = {'errors': errors, 'skip': False, 'skip_reason': '', 'primary': host, 'fidelity': None, 'shadow': None,
             'service': None, 'primaries': [], 'hook': None, 'interval_seconds': None, 'rpo_seconds': None,
             'paths': [], 'sources': [], 'allowed': [], 'rsync_options': [], 'cron': None,
             'on_unit_active_sec': None, 'serving_file': ''}
    _check_run(s, errors)
    pair = _pair(s, host, errors)
    if isinstance(pair, str):
        model.update(skip=True, skip_reason=pair)
        return model
    if pair is None:
        return model
    model.update((key, pair[key]) for key in ('fidelity', 'shadow', 'service', 'primaries', 'hook'))
    if pair['fidelity'] not in FIDELITIES:
        errors.append('fidelity %r: expected one of %s' % (pair['fidelity'], ', '.join(sorted(FIDELITIES))))
        return model
    model['fidelity_info'] = FIDELITIES[pair['fidelity']]
    if pair['fidelity'] == 'differential' and (s.get('sources') or 'first') not in ('first', 'subdir'):
        errors.append('state_replication_sources: expected first or subdir, got %r' % (s.get('sources'),))
        return model
    reason = _skip_reason(s, host, pair)
    if reason:
        model.update(skip=True, skip_reason=reason)
        return model
    if pair['fidelity'] == 'differential':
        _differential(s, host, pair, model, errors)
    elif pair['fidelity'] == 'full':
        _full(s, pair, model, errors)
    elif (s.get('direction') or 'forward') == 'catch_up' and pair['hook'] is None:
        errors.append('event catch-up runs the user\'s hook with SN_REPL_DIRECTION=catch_up; without a hook nothing '
                      'can bring the shadow\'s state back, so no caught_up marker is written (set '
                      'state_replication_event_hook, or bring the state back yourself, then fail back with the '
                      'failover module\'s catch_up: skip)')
    _check_inventory(s, host, pair, inventory, errors)
    return model

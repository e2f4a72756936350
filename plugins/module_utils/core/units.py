# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Parse and format the human units templates use: durations, network rates, memory sizes, ratios.

Pure functions, stdlib only. Every parser accepts either an already-numeric value (in the base unit) or a
string with a unit suffix, and raises :class:`UnitError` (a ``ValueError``) whose message says what would be
valid, so callers can put it next to a field path.

Base units:

* durations: seconds (``int`` when whole, ``float`` otherwise: ``'100ms'`` -> ``0.1``)
* rates: bits per second (``int``); decimal prefixes (``k`` = 1000) as tc and iperf use them,
  binary prefixes (``Ki`` = 1024) when spelled out
* memory: MiB (``int``), PVE's unit for ``memory``; ``K/M/G/T`` are binary (PVE convention)
* ratios: a float; ``'10%'`` -> ``0.1``
"""


import math
import re

__all__ = [
    'UnitError',
    'parse_duration',
    'format_duration',
    'parse_rate',
    'format_rate',
    'parse_memory',
    'parse_bytes',
    'format_memory',
    'parse_ratio',
    'is_finite_number',
]


class UnitError(ValueError):
    """A value could not be parsed; the message names the accepted forms."""


_NUMBER = r'(?P<num>[0-9]+(?:\.[0-9]+)?|\.[0-9]+)'

# Durations: one or more <number><unit> parts, e.g. '90s', '5m', '1h30m', '1.5h', '100ms'.
_DURATION_UNITS = {
    'ms': 0.001,
    's': 1, 'sec': 1, 'secs': 1, 'second': 1, 'seconds': 1,
    'm': 60, 'min': 60, 'mins': 60, 'minute': 60, 'minutes': 60,
    'h': 3600, 'hr': 3600, 'hrs': 3600, 'hour': 3600, 'hours': 3600,
    'd': 86400, 'day': 86400, 'days': 86400,
    'w': 604800, 'week': 604800, 'weeks': 604800,
}
_DURATION_PART = re.compile(_NUMBER + r'\s*(?P<unit>[a-z]+)')
DURATION_HELP = "a duration such as '90s', '5m', '1h', '1h30m', '100ms' or a number of seconds"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_finite_number(value):
    """An int or float that is neither a bool nor NaN nor an infinity (YAML's .nan and .inf, Ansible's float type
    and float() all make those, and every comparison with NaN is false, so a range check alone lets it through)."""
    return _is_number(value) and math.isfinite(value)


def _finite(number, value, help_text):
    """``number`` (a float) when it is finite; NaN and infinities (YAML's .nan and .inf, the strings 'nan' and
    'inf' to float()) are no duration, rate, size or ratio."""
    if not math.isfinite(number):
        raise UnitError('%r is not a finite number; expected %s' % (value, help_text))
    return number


def _whole(value):
    """Return an int when value is whole (avoids 300.0 vs 300 noise in plans)."""
    rounded = round(value, 9)
    if rounded == int(rounded):
        return int(rounded)
    return rounded


def parse_duration(value, allow_zero=False):
    """Return seconds for ``value``: a number of seconds or a string like '5m', '1h30m', '90s', '100ms'.

    Negative durations are always rejected; zero only when ``allow_zero``.
    """
    if _is_number(value):
        seconds = _finite(float(value), value, DURATION_HELP)
    elif isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise UnitError('empty duration; expected %s' % DURATION_HELP)
        if re.fullmatch(_NUMBER, text):
            seconds = float(text)
        else:
            pos = 0
            seconds = 0.0
            compact = text.replace(' ', '')
            while pos < len(compact):
                match = _DURATION_PART.match(compact, pos)
                if not match or match.group('unit') not in _DURATION_UNITS:
                    raise UnitError('cannot parse duration %r; expected %s' % (value, DURATION_HELP))
                seconds += float(match.group('num')) * _DURATION_UNITS[match.group('unit')]
                pos = match.end()
    else:
        raise UnitError('duration must be a string or a number, got %s; expected %s'
                        % (type(value).__name__, DURATION_HELP))
    if seconds < 0 or (seconds == 0 and not allow_zero):
        raise UnitError('duration %r must be greater than zero; expected %s' % (value, DURATION_HELP))
    return _whole(seconds)


def format_duration(seconds):
    """Format seconds compactly: 300 -> '5m', 5400 -> '1h30m', 90 -> '1m30s', 0.1 -> '100ms'."""
    if not _is_number(seconds) or seconds < 0:
        raise UnitError('cannot format duration %r' % (seconds,))
    if seconds == 0:
        return '0s'
    if seconds < 1 or seconds != int(seconds):
        millis = _whole(seconds * 1000)
        if seconds < 1:
            return '%sms' % millis
        return '%ss' % _whole(seconds)
    rest = int(seconds)
    out = []
    for unit, size in (('d', 86400), ('h', 3600), ('m', 60), ('s', 1)):
        if rest >= size:
            out.append('%d%s' % (rest // size, unit))
            rest %= size
    return ''.join(out)


# Rates: '800Mbit', '1Gbit', '100kbit', '1.5Gbps', '10Mibit', plain number = bit/s.
_RATE_PREFIX = {
    '': 1,
    'k': 10 ** 3, 'm': 10 ** 6, 'g': 10 ** 9, 't': 10 ** 12,
    'ki': 2 ** 10, 'mi': 2 ** 20, 'gi': 2 ** 30, 'ti': 2 ** 40,
}
_RATE_RE = re.compile(_NUMBER + r'\s*(?P<prefix>[kmgt]i?)?(?P<unit>bit|bits|bps|bit/s|b/s|b)?$', re.IGNORECASE)
RATE_HELP = "a rate such as '800Mbit', '1Gbit', '100kbit', '1.5Gbps' or a number of bits per second"


def parse_rate(value, allow_zero=True):
    """Return bits per second (int) for '800Mbit', '1Gbit', '1Gbps', '10Mibit' or a plain number.

    Bytes are deliberately not accepted ('MB/s' is ambiguous in tc vs iperf usage): write bits.
    """
    if _is_number(value):
        bits = _finite(float(value), value, RATE_HELP)
    elif isinstance(value, str):
        text = value.strip()
        match = _RATE_RE.match(text)
        if not text or not match:
            raise UnitError('cannot parse rate %r; expected %s' % (value, RATE_HELP))
        unit = match.group('unit') or ''
        prefix = (match.group('prefix') or '').lower()
        if unit == 'B' or unit.startswith('B'):
            raise UnitError('rate %r is in bytes; expected %s' % (value, RATE_HELP))
        bits = float(match.group('num')) * _RATE_PREFIX[prefix]
    else:
        raise UnitError('rate must be a string or a number, got %s; expected %s'
                        % (type(value).__name__, RATE_HELP))
    if bits < 0 or (bits == 0 and not allow_zero):
        raise UnitError('rate %r must be greater than zero; expected %s' % (value, RATE_HELP))
    return int(round(bits))


def format_rate(bits):
    """Format bits/s with the largest decimal prefix that keeps it whole: 800000000 -> '800Mbit'."""
    if not _is_number(bits) or bits < 0:
        raise UnitError('cannot format rate %r' % (bits,))
    bits = int(bits)
    for prefix, size in (('T', 10 ** 12), ('G', 10 ** 9), ('M', 10 ** 6), ('k', 10 ** 3)):
        if bits >= size and bits % size == 0:
            return '%d%sbit' % (bits // size, prefix)
    return '%dbit' % bits


# Memory: plain number = MiB (PVE's unit); suffixes K/M/G/T (binary), KiB/MiB/GiB/TiB, KB/MB/GB/TB
# (treated as binary too, as PVE and qm do), B for bytes.
_SIZE_PREFIX = {'': 1, 'k': 2 ** 10, 'm': 2 ** 20, 'g': 2 ** 30, 't': 2 ** 40}
_SIZE_RE = re.compile(_NUMBER + r'\s*(?:(?P<prefix>[kmgt])(?:i?b)?|(?P<bytes>b))?$', re.IGNORECASE)
MEMORY_HELP = "a size such as '512M', '8G', '8GiB', '2048' (MiB) or a number of MiB"


def parse_bytes(value, default_unit='B'):
    """Return bytes (int) for '512M', '8GiB', '1T', '4096K'; a plain number is in ``default_unit``."""
    if default_unit.upper() not in ('B', 'K', 'M', 'G', 'T'):
        raise ValueError('default_unit must be one of B, K, M, G, T')
    default_factor = 1 if default_unit.upper() == 'B' else _SIZE_PREFIX[default_unit.lower()]
    if _is_number(value):
        size = _finite(float(value), value, MEMORY_HELP) * default_factor
    elif isinstance(value, str):
        text = value.strip()
        match = _SIZE_RE.match(text)
        if not text or not match:
            raise UnitError('cannot parse size %r; expected %s' % (value, MEMORY_HELP))
        if match.group('prefix'):
            factor = _SIZE_PREFIX[match.group('prefix').lower()]
        elif match.group('bytes'):
            factor = 1
        else:
            factor = default_factor
        size = float(match.group('num')) * factor
    else:
        raise UnitError('size must be a string or a number, got %s; expected %s'
                        % (type(value).__name__, MEMORY_HELP))
    if size < 0:
        raise UnitError('size %r must not be negative; expected %s' % (value, MEMORY_HELP))
    return int(round(size))


def parse_memory(value):
    """Return MiB (int) for a memory size: 8192, '8G', '8GiB', '512M', '512MiB'.

    Sizes that are not a whole number of MiB are rejected (PVE's ``memory`` is an integer of MiB).
    """
    size = parse_bytes(value, default_unit='M')
    if size % (2 ** 20):
        raise UnitError('memory %r is not a whole number of MiB; expected %s' % (value, MEMORY_HELP))
    mib = size // (2 ** 20)
    if mib <= 0:
        raise UnitError('memory %r must be greater than zero; expected %s' % (value, MEMORY_HELP))
    return mib


def format_memory(mib):
    """Format MiB: 8192 -> '8G', 512 -> '512M', 1536 -> '1536M'."""
    if not _is_number(mib) or mib < 0:
        raise UnitError('cannot format memory %r' % (mib,))
    mib = int(mib)
    for suffix, size in (('T', 2 ** 20), ('G', 2 ** 10)):
        if mib >= size and mib % size == 0:
            return '%d%s' % (mib // size, suffix)
    return '%dM' % mib


RATIO_HELP = "a fraction such as 0.25 or a percentage such as '25%'"


def parse_ratio(value):
    """Return a float for 0.25, '0.25' or '25%'. Range checks are the caller's (they differ per field)."""
    if _is_number(value):
        return _finite(float(value), value, RATIO_HELP)
    if isinstance(value, str):
        text = value.strip()
        try:
            number = float(text[:-1].strip()) / 100.0 if text.endswith('%') else float(text)
        except ValueError:
            raise UnitError('cannot parse %r; expected %s' % (value, RATIO_HELP))
        return _finite(number, value, RATIO_HELP)
    raise UnitError('expected %s, got %s' % (RATIO_HELP, type(value).__name__))

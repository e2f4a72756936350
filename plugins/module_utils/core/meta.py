# -*- coding: utf-8 -*-
# Copyright (c) shadownet.proxmox developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The shadownet metadata block in a VM description: render, parse, merge. Pure.

A managed VM's description ends with one block::

    <the user's own text, kept as is>

    <!-- shadownet:begin -->
    {"index":1,"role":"primary","service":"web","shadowed_by":"shop-web-shadow","template":"shop","v":1}
    <!-- shadownet:end -->

Compact JSON with sorted keys, so the same metadata always renders to the same text and idempotency checks can
compare descriptions. The text ends with the end marker, no newline: PVE strips trailing whitespace from a
description (module_utils/core/readback.py), so what is written is what is read back; comparisons go through
``readback.same`` all the same. PVE renders descriptions as Markdown: the HTML-comment markers are invisible there, the
JSON line stays readable for operators.
"""


import copy
import json
import re

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import readback
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import is_finite_number

__all__ = ['BEGIN', 'END', 'MetaError', 'render_meta_block', 'render_description', 'parse_description',
           'split_description', 'merge_description', 'checked', 'MAX_DESCRIPTION']

BEGIN = '<!-- shadownet:begin -->'
END = '<!-- shadownet:end -->'
# PVE limits the description (a config comment) to 8 KiB.
MAX_DESCRIPTION = 8192
_BLOCK = re.compile(r'\n*' + re.escape(BEGIN) + r'\n?(?P<body>.*?)\n?' + re.escape(END) + r'\n*', re.DOTALL)


class MetaError(ValueError):
    """The description's block is malformed, or the result would not fit PVE's description limit."""


def _record(*number_keys):
    """A dict whose ``number_keys``, where present, are numbers (times the readers compare)."""
    return lambda v: isinstance(v, dict) and all(k not in v or v[k] is None or is_finite_number(v[k]) for k in number_keys)


# The fields the collection reads, and what a build, a scale, a failover and a refresh write into them. A block
# edited by hand into valid JSON of other types (``"failover": "yes"``, ``"scaling": {"time": "today"}``) must not
# crash a reader; such a field is left out of the parsed block (and so rewritten by the next merge).
FIELDS = {
    'v': lambda v: isinstance(v, int) and not isinstance(v, bool),
    'index': lambda v: isinstance(v, int) and not isinstance(v, bool),
    'role': lambda v: isinstance(v, str), 'template': lambda v: isinstance(v, str),
    'service': lambda v: isinstance(v, str), 'shadowed_by': lambda v: isinstance(v, str),
    'vip': lambda v: isinstance(v, str),
    'shadows': lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
    'scaling': _record('time'), 'failover': _record('since'), 'replication': _record('last_full'),
}


def checked(meta):
    """``(meta, ignored)``: the block without the known fields (:data:`FIELDS`) whose value has another type than
    the collection writes, and the names of those fields, sorted. A null field counts as absent."""
    out, ignored = dict(meta), []
    for key, ok in FIELDS.items():
        if out.get(key) is not None and not ok(out[key]):
            ignored.append(key)
            del out[key]
    return out, sorted(ignored)


def render_meta_block(meta):
    if not isinstance(meta, dict):
        raise MetaError('metadata must be a dict, got %s' % type(meta).__name__)
    body = json.dumps(meta, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
    return '%s\n%s\n%s' % (BEGIN, body, END)


def split_description(description):
    """Return ``(user_text, body_or_None)``. Every block is removed from the user text; the last one counts."""
    text = description or ''
    bodies = [m.group('body') for m in _BLOCK.finditer(text)]
    user = _BLOCK.sub('\n\n', text).strip('\n')
    return user, (bodies[-1] if bodies else None)


def parse_description(description, strict=False, ignored=None):
    """Return ``(user_text, meta)``; ``meta`` is None when there is no block.

    A block whose JSON is unreadable gives ``meta = None`` (the caller re-renders it), or raises
    :class:`MetaError` when ``strict``. Known fields of another type than the collection writes are left out
    (:func:`checked`); their names are appended to the list ``ignored`` when one is given.
    """
    user, body = split_description(description)
    if body is None:
        return user, None
    try:
        meta = json.loads(body)
    except (ValueError, RecursionError) as exc:
        if strict:
            raise MetaError('the shadownet block in the description is not valid JSON: %s' % exc)
        return user, None
    if not isinstance(meta, dict):
        if strict:
            raise MetaError('the shadownet block in the description is not a JSON object')
        return user, None
    meta, dropped = checked(meta)
    if ignored is not None:
        ignored.extend(dropped)
    return user, meta


def render_description(user_text, meta):
    """The full description: the user's text (if any), a blank line, the block."""
    user = (user_text or '').strip('\n')
    block = render_meta_block(meta)
    text = '%s\n\n%s' % (user, block) if user else block
    if len(text.encode('utf-8')) > MAX_DESCRIPTION:
        raise MetaError('description would be %d bytes, over PVE\'s limit of %d'
                        % (len(text.encode('utf-8')), MAX_DESCRIPTION))
    return text


def _merge(base, updates):
    out = copy.deepcopy(base)
    for key, value in updates.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_description(description, updates):
    """Apply ``updates`` to the block of ``description`` and return ``(new_description, meta, changed)``.

    Dicts merge recursively; a ``None`` value deletes the key; keys not in ``updates`` (including ones other
    writers own, such as ``scaling``) are kept. The user's text is kept. ``changed`` is False when PVE would
    read the rendered description back as the current one.
    """
    user, meta = parse_description(description)
    merged = _merge(meta or {}, updates or {})
    new = render_description(user, merged)
    return new, merged, readback.differs('description', description or '', new)

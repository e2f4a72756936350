# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
import json

import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import meta as meta_utils

PRIMARY = {'v': 1, 'role': 'primary', 'template': 'shop', 'service': 'web', 'index': 1,
           'shadowed_by': 'shop-web-shadow'}


def test_render_is_canonical_and_between_markers():
    text = meta_utils.render_description('', PRIMARY)
    lines = text.strip('\n').split('\n')
    assert lines[0] == meta_utils.BEGIN and lines[-1] == meta_utils.END
    assert json.loads(lines[1]) == PRIMARY
    # key order of the input does not matter
    assert meta_utils.render_description('', dict(reversed(list(PRIMARY.items())))) == text


def test_user_text_is_kept_roundtrip():
    user = 'Web frontend.\n\nOwner: team shop\n| a | b |'
    text = meta_utils.render_description(user, PRIMARY)
    assert text.startswith(user + '\n\n')
    parsed_user, meta = meta_utils.parse_description(text)
    assert parsed_user == user
    assert meta == PRIMARY


def test_parse_without_block():
    assert meta_utils.parse_description('just notes') == ('just notes', None)
    assert meta_utils.parse_description(None) == ('', None)
    assert meta_utils.parse_description('') == ('', None)


def test_parse_block_in_the_middle_keeps_text_on_both_sides():
    text = 'before\n%s\n{"v":1,"role":"shadow"}\n%s\nafter' % (meta_utils.BEGIN, meta_utils.END)
    user, meta = meta_utils.parse_description(text)
    assert meta == {'v': 1, 'role': 'shadow'}
    assert 'before' in user and 'after' in user and meta_utils.BEGIN not in user


def test_parse_malformed_json():
    text = 'notes\n%s\n{not json\n%s\n' % (meta_utils.BEGIN, meta_utils.END)
    assert meta_utils.parse_description(text) == ('notes', None)
    with pytest.raises(meta_utils.MetaError):
        meta_utils.parse_description(text, strict=True)
    with pytest.raises(meta_utils.MetaError):
        meta_utils.parse_description('%s\n[1, 2]\n%s' % (meta_utils.BEGIN, meta_utils.END), strict=True)


def test_duplicate_blocks_collapse_to_the_last():
    text = '%s\n{"v":1}\n%s\nmiddle\n%s\n{"v":2}\n%s\n' % (meta_utils.BEGIN, meta_utils.END, meta_utils.BEGIN, meta_utils.END)
    user, meta = meta_utils.parse_description(text)
    assert meta == {'v': 2}
    assert user == 'middle'


def test_merge_keeps_user_text_and_other_keys():
    current = meta_utils.render_description('my notes', dict(PRIMARY, scaling={'last_action': 'up', 'at': 100}))
    new, meta, changed = meta_utils.merge_description(current, {'scaling': {'cooldown_until': 400}})
    assert changed
    assert meta['scaling'] == {'last_action': 'up', 'at': 100, 'cooldown_until': 400}
    assert meta['shadowed_by'] == 'shop-web-shadow'
    assert new.startswith('my notes\n\n')
    assert meta_utils.parse_description(new) == ('my notes', meta)


def test_merge_is_idempotent_and_none_deletes():
    current = meta_utils.render_description('n', PRIMARY)
    new, meta, changed = meta_utils.merge_description(current, {'index': 1})
    assert not changed and new == current
    new, meta, changed = meta_utils.merge_description(current, {'shadowed_by': None})
    assert changed and 'shadowed_by' not in meta


def test_merge_into_plain_description_adds_block():
    new, meta, changed = meta_utils.merge_description('hand-written', PRIMARY)
    assert changed and meta == PRIMARY
    assert meta_utils.parse_description(new) == ('hand-written', PRIMARY)


def test_too_long_description_is_refused():
    with pytest.raises(meta_utils.MetaError):
        meta_utils.render_description('x' * 9000, PRIMARY)
    with pytest.raises(meta_utils.MetaError):
        meta_utils.render_meta_block(['not', 'a', 'dict'])


def test_known_fields_of_another_type_are_left_out_and_rewritten():
    """A block edited by hand into valid JSON of other types: every reader gets only fields of the types the
    collection writes (`failover: "yes"` made `.get('active')` raise, `scaling.time: "today"` made float() raise),
    and the next merge writes the block without them."""
    block = {'v': 1, 'role': 'primary', 'template': 'shop', 'service': ['web'], 'index': True, 'shadows': 'a',
             'failover': 'yes', 'scaling': {'time': 'today', 'action': 'scale_up'}, 'replication': {'last_full': 5},
             'mine': {'anything': 1}, 'vip': None}
    ignored = []
    user, got = meta_utils.parse_description('notes\n\n' + meta_utils.render_meta_block(block), ignored=ignored)
    assert user == 'notes'
    assert got == {'v': 1, 'role': 'primary', 'template': 'shop', 'replication': {'last_full': 5},
                   'mine': {'anything': 1}, 'vip': None}
    assert ignored == ['failover', 'index', 'scaling', 'service', 'shadows']
    edited = 'notes\n\n' + meta_utils.render_meta_block(block)
    text, merged, changed = meta_utils.merge_description(edited, {'scaling': {'time': 1.5e9, 'action': 'scale_up'}})
    assert changed and merged['scaling'] == {'time': 1.5e9, 'action': 'scale_up'} and 'failover' not in merged
    assert meta_utils.parse_description(text)[1] == merged
    for value in (float('nan'), float('inf'), [1], {'x': 1}, True):
        assert meta_utils.checked({'scaling': {'time': value}}) == ({}, ['scaling'])
    assert meta_utils.checked({'scaling': {'time': None}, 'failover': {'active': True, 'since': 3}}) == (
        {'scaling': {'time': None}, 'failover': {'active': True, 'since': 3}}, [])

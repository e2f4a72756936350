# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
import pytest

from ansible_collections.shadownet.proxmox.plugins.module_utils.core import units
from ansible_collections.shadownet.proxmox.plugins.module_utils.core.units import UnitError


@pytest.mark.parametrize('text,seconds', [
    ('90s', 90), ('5m', 300), ('15m', 900), ('1h', 3600), ('1h30m', 5400), ('1.5h', 5400),
    ('2d', 172800), ('1w', 604800), ('100ms', 0.1), (' 5 m ', 300), ('10 minutes', 600),
    (300, 300), (2.5, 2.5), ('45', 45), ('1m30s', 90), ('5M', 300),
])
def test_parse_duration(text, seconds):
    assert units.parse_duration(text) == seconds


def test_parse_duration_whole_values_are_int():
    assert isinstance(units.parse_duration('5m'), int)
    assert isinstance(units.parse_duration(60.0), int)
    assert isinstance(units.parse_duration('100ms'), float)


@pytest.mark.parametrize('bad', ['', 'five minutes', '5x', '-5m', 'm5', '5m-', None, True, [5], '0s', 0])
def test_parse_duration_rejects(bad):
    with pytest.raises(UnitError) as err:
        units.parse_duration(bad)
    assert '5m' in str(err.value)  # the message names valid forms


def test_parse_duration_zero_allowed_when_asked():
    assert units.parse_duration('0s', allow_zero=True) == 0


@pytest.mark.parametrize('seconds,text', [(300, '5m'), (5400, '1h30m'), (90, '1m30s'), (0.1, '100ms'),
                                          (86400, '1d'), (0, '0s'), (1.5, '1.5s')])
def test_format_duration_roundtrip(seconds, text):
    assert units.format_duration(seconds) == text
    if seconds:
        assert units.parse_duration(text) == seconds


@pytest.mark.parametrize('text,bits', [
    ('800Mbit', 800_000_000), ('1Gbit', 1_000_000_000), ('100kbit', 100_000), ('1.5Gbps', 1_500_000_000),
    ('10Mibit', 10 * 2 ** 20), ('800M', 800_000_000), ('1gbit', 1_000_000_000), (12345, 12345),
    ('64bit', 64), ('0', 0), ('100 Mbit/s', 100_000_000),
])
def test_parse_rate(text, bits):
    assert units.parse_rate(text) == bits


@pytest.mark.parametrize('bad', ['100MB', '1GBps', 'fast', '', '-1Mbit', None, '10Xbit'])
def test_parse_rate_rejects(bad):
    with pytest.raises(UnitError) as err:
        units.parse_rate(bad)
    assert 'Mbit' in str(err.value)


def test_parse_rate_zero_can_be_refused():
    with pytest.raises(UnitError):
        units.parse_rate('0bit', allow_zero=False)


@pytest.mark.parametrize('bits,text', [(800_000_000, '800Mbit'), (1_000_000_000, '1Gbit'),
                                       (1_500_000_000, '1500Mbit'), (123, '123bit')])
def test_format_rate(bits, text):
    assert units.format_rate(bits) == text
    assert units.parse_rate(text) == bits


@pytest.mark.parametrize('text,mib', [
    (8192, 8192), ('8192', 8192), ('8G', 8192), ('8GiB', 8192), ('8GB', 8192), ('512M', 512),
    ('512MiB', 512), ('1T', 1048576), ('1048576K', 1024), ('0.5G', 512),
])
def test_parse_memory(text, mib):
    assert units.parse_memory(text) == mib


@pytest.mark.parametrize('bad', ['lots', '1.3M', '0', 0, '-1G', '100B', None, '8Q'])
def test_parse_memory_rejects(bad):
    with pytest.raises(UnitError):
        units.parse_memory(bad)


def test_parse_bytes_default_unit():
    assert units.parse_bytes('1K') == 1024
    assert units.parse_bytes(10) == 10
    assert units.parse_bytes(10, default_unit='K') == 10240
    assert units.parse_bytes('3B') == 3


@pytest.mark.parametrize('mib,text', [(8192, '8G'), (512, '512M'), (1536, '1536M'), (1048576, '1T')])
def test_format_memory(mib, text):
    assert units.format_memory(mib) == text
    assert units.parse_memory(text) == mib


@pytest.mark.parametrize('value,ratio', [(0.25, 0.25), ('0.25', 0.25), ('25%', 0.25), ('10 %', 0.1), (1, 1.0)])
def test_parse_ratio(value, ratio):
    assert units.parse_ratio(value) == pytest.approx(ratio)


@pytest.mark.parametrize('bad', ['a quarter', '%', None, [0.1]])
def test_parse_ratio_rejects(bad):
    with pytest.raises(UnitError):
        units.parse_ratio(bad)


@pytest.mark.parametrize('parse, value', [
    (units.parse_duration, float('inf')), (units.parse_duration, float('nan')),
    (units.parse_rate, float('inf')), (units.parse_bytes, float('-inf')), (units.parse_memory, float('inf')),
    (units.parse_ratio, float('nan')), (units.parse_ratio, 'nan'), (units.parse_ratio, 'inf%'),
    (units.parse_ratio, '1e999'),
])
def test_nan_and_infinity_are_no_value(parse, value):
    """YAML's .nan and .inf, and the strings float() reads as them: each was an OverflowError from int(), or a NaN
    ratio that passed the template's range check (every comparison with NaN is false) into the plan."""
    with pytest.raises(UnitError, match='not a finite number'):
        parse(value)

"""Sizes, bandwidths and rates as users write them: values worked out by hand, and every
refusal names the field it was given and says what was expected.

Sources: KVM and QEMU's command lines take K/M/G/T (with or without ``iB``/``B``) as powers
of 1024 (QEMU ``qemu_strtosz``); QEMU's bandwidth properties ``max-bandwidth`` are bytes per
second, and ``bit/s``/``bps`` rates are decimal bits (1 Gbit/s = 10^9 / 8 bytes/s).
"""

from __future__ import annotations

import pytest

from engine.util.errors import ConfigError
from engine.util.units import format_bytes, parse_bandwidth, parse_rate, parse_size


@pytest.mark.parametrize(
    "text, expected",
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("0x1000", 4096),
        ("0X40000000", 1 << 30),
        ("4K", 4096),
        ("4k", 4096),
        ("4KB", 4096),
        ("4KiB", 4096),
        ("2MiB", 2 * 1024 * 1024),
        ("1GiB", 1024**3),
        ("1 GiB", 1024**3),
        ("1.5GiB", 1536 * 1024**2),
        ("0.5K", 512),
        ("1TiB", 1024**4),
        ("1P", 1024**5),
        ("16_384", 16384),
        ("  8M  ", 8 * 1024**2),
        ("3", 3),
    ],
)
def test_parse_size(text, expected):
    got = parse_size(text, "memslots[0].size")
    assert got == expected and type(got) is int


@pytest.mark.parametrize(
    "value, words",
    [
        (-1, "cannot be negative, got -1"),
        (True, "expected a size such as 4096, 0x1000 or 4KiB, got true"),
        ("1.5K3", 'expected a size such as 4096, 0x1000, 4KiB, 2MiB, 1GiB or 1TiB, got "1.5K3"'),
        ("4X", 'got "4X"'),
        ("0.3K", '"0.3K" is not a whole number of bytes'),
        ("1.0001", "is not a whole number of bytes"),
        (None, "got null"),
        (4.0, "got 4.0"),
    ],
)
def test_parse_size_refusals_name_the_field(value, words):
    with pytest.raises(ConfigError) as err:
        parse_size(value, "memslots[1].size")
    assert err.value.field == "memslots[1].size"
    assert words in err.value.rule


@pytest.mark.parametrize(
    "text, expected",
    [
        (1000, 1000.0),
        (12.5, 12.5),
        ("128MiB/s", 128 * 1024**2),
        ("128M/s", 128 * 1024**2),
        ("128MB/s", 128 * 1024**2),
        ("1Gbit/s", 125_000_000.0),
        ("100Mbps", 12_500_000.0),
        ("8kbit/s", 1000.0),
        ("8bps", 1.0),
        ("1 Gbit/s", 125_000_000.0),
        ("2e3", 2000.0),
        ("1000/s", 1000.0),
        ("1000", 1000.0),
        ("1KiB/s", 1024.0),
        ("1T/s", 1024.0**4),
        ("1Tbit/s", 1e12 / 8),
    ],
)
def test_parse_bandwidth(text, expected):
    got = parse_bandwidth(text, "migration.bandwidth")
    assert got == expected and type(got) is float


@pytest.mark.parametrize(
    "value, words",
    [
        (0, "a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), got 0"),
        (-5, "a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), got -5"),
        ("20000 pages/s", 'expected a bandwidth in bytes or bits per second, got "20000 pages/s"'),
        ("10 furlongs", 'unknown unit "furlongs"'),
        ("fast", "expected a rate such as 20000 pages/s, 512MiB/s, 1Gbit/s or 100Mbps"),
        (None, "expected a rate such as 20000 pages/s"),
        (True, "got true"),
    ],
)
def test_parse_bandwidth_refusals_name_the_field(value, words):
    with pytest.raises(ConfigError) as err:
        parse_bandwidth(value, "migration.bandwidth")
    assert err.value.field == "migration.bandwidth"
    assert words in err.value.rule


@pytest.mark.parametrize(
    "text, page, expected",
    [
        (20000, 4096, 20000.0),
        (0, 4096, 0.0),
        ("20000 pages/s", 4096, 20000.0),
        ("20000 page/s", 4096, 20000.0),
        ("20000pps", 4096, 20000.0),
        ("500", 4096, 500.0),
        ("500/s", 4096, 500.0),
        ("512MiB/s", 4096, 512 * 1024**2 / 4096),
        ("512MiB/s", 65536, 512 * 1024**2 / 65536),
        ("1Gbit/s", 4096, 1e9 / 8 / 4096),
    ],
)
def test_parse_rate(text, page, expected):
    got = parse_rate(text, page, "workloads[0].rate")
    assert got == pytest.approx(expected, rel=1e-12) and type(got) is float


@pytest.mark.parametrize(
    "value, words",
    [
        (-1, "a rate must be 0 to 1e9 pages/s (4 TB/s of 4K pages), got -1"),
        ("x", "expected a rate"),
        (False, "got false"),
    ],
)
def test_parse_rate_refusals_name_the_field(value, words):
    with pytest.raises(ConfigError) as err:
        parse_rate(value, 4096, "workloads[2].rate")
    assert err.value.field == "workloads[2].rate"
    assert words in err.value.rule


@pytest.mark.parametrize(
    "n, text",
    [
        (0, "0 B"),
        (12, "12 B"),
        (1023, "1023 B"),
        (1024, "1 KiB"),
        (512 * 1024, "512 KiB"),
        (1024**2 - 1, "1024 KiB"),
        (1024**2, "1 MiB"),
        (1536 * 1024**2, "1.5 GiB"),
        (1024**3, "1 GiB"),
        (1024**4, "1 TiB"),
        (3 * 1024**4, "3 TiB"),
        (-2048, "-2 KiB"),
    ],
)
def test_format_bytes(n, text):
    assert format_bytes(n) == text

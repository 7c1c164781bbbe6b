"""Sizes, bandwidths and rates as users write them: values worked out by hand, and every
refusal names the field it was given and says what was expected.

Sources: KVM and QEMU's command lines take K/M/G/T (with or without ``iB``/``B``) as powers
of 1024 (QEMU ``qemu_strtosz``); QEMU's bandwidth properties ``max-bandwidth`` are bytes per
second, and ``bit/s``/``bps`` rates are decimal bits (1 Gbit/s = 10^9 / 8 bytes/s).
"""

from __future__ import annotations

import pytest

from engine.util.errors import ConfigError
from engine.util.units import (
    format_bytes,
    parse_bandwidth,
    parse_rate,
    parse_size,
    selftest_seconds,
)


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


# -- boundaries: a test at each limit and one on each side (mutation survivors of issue 19) --------


@pytest.mark.parametrize(
    "value, expected",
    [
        ((1 << 64) - 2, (1 << 64) - 2),
        ((1 << 64) - 1, (1 << 64) - 1),
        ("0xffffffffffffffff", (1 << 64) - 1),
        ("18446744073709551615", (1 << 64) - 1),  # exact: not through a double (2^64 there)
        ("16777215T", (1 << 64) - (1 << 40)),
        ((1 << 64), "18446744073709551616 is more than 2^64 - 1 bytes"),
        ("18446744073709551616", '"18446744073709551616" is more than 2^64 - 1 bytes'),
        ("16777216T", '"16777216T" is more than 2^64 - 1 bytes'),
        ("0x10000000000000000", '"0x10000000000000000" is more than 2^64 - 1 bytes'),
    ],
)
def test_size_limit_is_2_to_the_64_minus_1(value, expected):
    """A guest physical address or size is a __u64 in KVM's ABI (struct
    kvm_userspace_memory_region): 2^64 - 1 is the largest, 2^64 is refused."""
    if isinstance(expected, int):
        assert parse_size(value, "memslots[0].size") == expected
        return
    with pytest.raises(ConfigError) as err:
        parse_size(value, "memslots[0].size")
    assert (err.value.field, err.value.rule) == ("memslots[0].size", expected)


@pytest.mark.parametrize("digits, ok", [(31, True), (32, True), (33, False)])
def test_size_text_of_at_most_32_characters(digits, ok):
    """Numbers longer than 32 characters are refused before any conversion (a size fits in
    20 digits); zeros in front keep the value 1."""
    text = "0" * (digits - 1) + "1"
    if ok:
        assert parse_size(text, "memslots[0].size") == 1
        return
    with pytest.raises(ConfigError) as err:
        parse_size(text, "memslots[0].size")
    assert err.value.rule == f'"{text}" is too long to be a size (at most 2^64 - 1 bytes)'


@pytest.mark.parametrize("digits, ok", [(31, True), (32, True), (33, False)])
def test_rate_number_of_at_most_32_characters(digits, ok):
    text = "0" * (digits - 1) + "1"
    if ok:
        assert parse_bandwidth(text, "migration.bandwidth") == 1.0
        return
    with pytest.raises(ConfigError) as err:
        parse_bandwidth(text, "migration.bandwidth")
    assert err.value.rule == (
        f'expected a rate such as 20000 pages/s, 512MiB/s, 1Gbit/s or 100Mbps, got "{text}"'
    )


@pytest.mark.parametrize("length, ok", [(63, True), (64, True), (65, False)])
def test_rate_text_of_at_most_64_characters(length, ok):
    """A rate's text (number, spaces, unit) is matched only up to 64 characters."""
    text = "1" + " " * (length - 3) + "/s"
    assert len(text) == length
    if ok:
        assert parse_bandwidth(text, "migration.bandwidth") == 1.0
        return
    with pytest.raises(ConfigError) as err:
        parse_bandwidth(text, "migration.bandwidth")
    assert err.value.field == "migration.bandwidth"
    assert err.value.rule.startswith("expected a rate such as 20000 pages/s")


@pytest.mark.parametrize(
    "value, ok",
    [(0.999, False), (1, True), (1.001, True), (9.99e12, True), (1e13, True), (1.001e13, False)],
)
def test_bandwidth_range_is_1_to_1e13_bytes_per_second(value, ok):
    if ok:
        assert parse_bandwidth(value, "migration.bandwidth") == value
        return
    with pytest.raises(ConfigError) as err:
        parse_bandwidth(value, "migration.bandwidth")
    assert err.value.rule == (
        f"a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), got {value!r}"
    )


@pytest.mark.parametrize("value, ok", [(999_999_999, True), (1e9, True), (1_000_000_001, False)])
def test_rate_range_is_0_to_1e9_pages_per_second(value, ok):
    if ok:
        assert parse_rate(value, 4096, "workloads[0].rate") == value
        return
    with pytest.raises(ConfigError) as err:
        parse_rate(value, 4096, "workloads[0].rate")
    assert err.value.rule == (
        "a rate must be 0 to 1e9 pages/s (4 TB/s of 4K pages), got 1000000001"
    )


@pytest.mark.parametrize(
    "value, shown_as",
    [
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        (10**400, "an integer of 1329 bits"),
        ("1e999", '"1e999"'),
    ],
)
@pytest.mark.parametrize("parse", ["bandwidth", "rate"])
def test_non_finite_numbers_are_refused(value, shown_as, parse):
    """NaN, infinities and integers too large for a double (10^400 needs 1329 bits) are
    refused in a sentence, never passed on as inf."""
    with pytest.raises(ConfigError) as err:
        if parse == "bandwidth":
            parse_bandwidth(value, "migration.bandwidth")
        else:
            parse_rate(value, 4096, "workloads[0].rate")
    assert err.value.rule == f"must be a finite number, got {shown_as}"


def test_spaces_inside_a_unit_are_ignored():
    assert parse_bandwidth("1 Gbit / s", "migration.bandwidth") == 125_000_000.0
    assert parse_rate("20000 pages / s", 4096, "workloads[0].rate") == 20000.0


def test_a_rate_that_is_not_text_shows_the_value():
    with pytest.raises(ConfigError) as err:
        parse_bandwidth([1], "migration.bandwidth")
    assert err.value.rule == (
        "expected a rate such as 20000 pages/s, 512MiB/s, 1Gbit/s or 100Mbps, got [1]"
    )


def test_default_field_names():
    """Called without a field (the CLI's own options), a refusal names the quantity."""
    fields = []
    for call in (
        lambda: parse_size("x"),
        lambda: parse_bandwidth("x"),
        lambda: parse_rate("x", 4096),
    ):
        with pytest.raises(ConfigError) as err:
            call()
        fields.append(err.value.field)
    assert fields == ["size", "bandwidth", "rate"]


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0.000000000s"),
        (999_999_999, "0.999999999s"),
        (1_000_000_000, "1.000000000s"),
        (1_000_000_250, "1.000000250s"),
        (41_369_600.4, "0.041369600s"),
        (1.6, "0.000000002s"),  # rounded to the nearest nanosecond, not cut
        (12_345_678_901_234, "12345.678901234s"),
    ],
)
def test_selftest_seconds(ns, text):
    """KVM selftests print durations with ``"%ld.%.9lds"`` (tools/testing/selftests/kvm,
    dirty_log_perf_test.c, v6.17): whole seconds, then nine digits of nanoseconds."""
    assert selftest_seconds(ns) == text

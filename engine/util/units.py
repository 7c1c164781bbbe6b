"""Parsing and printing of sizes, rates and bandwidths as users write them.

Sizes are integers, hex (``0x40000000``) or a number with a binary suffix (``4K``, ``4KiB``,
``2MiB``, ``1.5GiB``, ``1TiB``); ``K``/``KB``/``KiB`` all mean 1024, as in KVM and QEMU's
command lines.  Bandwidths follow QEMU's spelling: ``128MiB/s`` is bytes, ``1Gbit/s`` and
``100Mbps`` are decimal bits.  Write rates are ``pages/s`` or a bandwidth.
"""

from __future__ import annotations

import math
import re

from engine.util.errors import ConfigError, shown

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_BINARY = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": 1 << 50}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*(.*?)\s*$", re.IGNORECASE)
_DECIMAL = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}

MAX_SIZE = (1 << 64) - 1  # a guest physical address or size fits in 64 bits, as in KVM's ABI
MAX_NUMBER_CHARS = 32  # longer numbers are refused before any int() or float() conversion
MAX_BANDWIDTH = 1e13  # bytes/s (80 Tbit/s): more than any link a migration runs over
MIN_BANDWIDTH = 1.0  # bytes/s: what is left of a link below that is no link
MAX_RATE_PAGES = 1e9  # pages/s per workload (4 TB/s of 4K pages)


def parse_size(value: object, field: str = "size") -> int:
    """Return a byte count; refuse negatives, fractions of a byte and unknown suffixes."""
    if isinstance(value, bool):
        raise ConfigError(
            field, f"expected a size such as 4096, 0x1000 or 4KiB, got {shown(value)}"
        )
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(field, f"a size cannot be negative, got {shown(value)}")
        return _bounded_size(value, value, field)
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if len(text) > MAX_NUMBER_CHARS:
            raise ConfigError(
                field, f"{shown(value)} is too long to be a size (at most 2^64 - 1 bytes)"
            )
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return _bounded_size(int(text, 16), value, field)
        m = _SIZE_RE.match(text)
        if m:
            number, suffix = m.groups()
            scaled = float(number) * _BINARY[suffix.lower()]
            if "." in number and scaled != int(scaled):
                raise ConfigError(field, f"{shown(value)} is not a whole number of bytes")
            size = int(number) * _BINARY[suffix.lower()] if "." not in number else int(scaled)
            return _bounded_size(size, value, field)
    raise ConfigError(
        field,
        f"expected a size such as 4096, 0x1000, 4KiB, 2MiB, 1GiB or 1TiB, got {shown(value)}",
    )


def _bounded_size(size: int, given: object, field: str) -> int:
    if size > MAX_SIZE:
        raise ConfigError(field, f"{shown(given)} is more than 2^64 - 1 bytes")
    return size


def parse_bandwidth(value: object, field: str = "bandwidth") -> float:
    """Return bytes per second from ``128MiB/s``, ``1Gbit/s``, ``100Mbps`` or a plain number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        amount = _finite(value, value, field)
    else:
        amount, _ = _parse_rate_text(value, field, page_size=None)  # pages/s is refused there
    if not MIN_BANDWIDTH <= amount <= MAX_BANDWIDTH:
        raise ConfigError(
            field,
            f"a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), got {shown(value)}",
        )
    return amount


def parse_rate(value: object, page_size: int, field: str = "rate") -> float:
    """Return pages per second from ``20000 pages/s``, ``512MiB/s`` or a plain number (pages/s)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        pages = _finite(value, value, field)
    else:
        amount, in_pages = _parse_rate_text(value, field, page_size)
        pages = amount if in_pages else amount / page_size
    if not 0 <= pages <= MAX_RATE_PAGES:
        raise ConfigError(
            field, f"a rate must be 0 to 1e9 pages/s (4 TB/s of 4K pages), got {shown(value)}"
        )
    return pages


def _finite(number: float, given: object, field: str) -> float:
    """``number`` as a float; refuse NaN, infinities and integers too large for a float."""
    try:
        out = float(number)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise ConfigError(field, f"must be a finite number, got {shown(given)}")
    return out


def _parse_rate_text(value: object, field: str, page_size: int | None) -> tuple[float, bool]:
    """(amount, in pages?) from a rate's text: pages per second (a plain number when
    ``page_size`` is given, else bytes) or bytes per second; ``pages/s`` is refused when
    ``page_size`` is None (a bandwidth)."""
    hint = "such as 20000 pages/s, 512MiB/s, 1Gbit/s or 100Mbps"
    if not isinstance(value, str):
        raise ConfigError(field, f"expected a rate {hint}, got {shown(value)}")
    m = _RATE_RE.match(value) if len(value) <= 2 * MAX_NUMBER_CHARS else None
    if not m or len(m.group(1)) > MAX_NUMBER_CHARS:
        raise ConfigError(field, f"expected a rate {hint}, got {shown(value)}")
    number, unit = _finite(float(m.group(1)), value, field), m.group(2).replace(" ", "").lower()
    if unit in ("", "/s"):
        return number, page_size is not None
    if unit in ("pages/s", "page/s", "pps"):
        if page_size is None:
            raise ConfigError(
                field, f"expected a bandwidth in bytes or bits per second, got {shown(value)}"
            )
        return number, True
    bits = re.fullmatch(r"([kmgt]?)(?:bit/s|bps)", unit)
    if bits:
        return number * _DECIMAL[bits.group(1)] / 8.0, False
    nbytes = re.fullmatch(r"([kmgt]?)(?:i?b)?/s", unit)
    if nbytes:
        return number * _BINARY[nbytes.group(1)], False
    raise ConfigError(field, f"unknown unit {shown(m.group(2))}; expected a rate {hint}")


def format_bytes(n: float) -> str:
    """Short binary form for tables and status bars: ``1.5 GiB``, ``512 KiB``, ``12 B``."""
    for unit, scale in (("TiB", TiB), ("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= scale:
            return f"{n / scale:.4g} {unit}"
    return f"{int(n)} B"


def selftest_seconds(ns: float) -> str:
    """A duration as the KVM selftests print it (``%ld.%.9lds``): ``1.000000250s``."""
    ns = int(round(ns))
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}s"

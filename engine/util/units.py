"""Parsing and printing of sizes, rates and bandwidths as users write them.

Sizes are integers, hex (``0x40000000``) or a number with a binary suffix (``4K``, ``4KiB``,
``2MiB``, ``1.5GiB``, ``1TiB``); ``K``/``KB``/``KiB`` all mean 1024, as in KVM and QEMU's
command lines.  Bandwidths follow QEMU's spelling: ``128MiB/s`` is bytes, ``1Gbit/s`` and
``100Mbps`` are decimal bits.  Write rates are ``pages/s`` or a bandwidth.
"""

from __future__ import annotations

import re

from engine.util.errors import ConfigError

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40

_BINARY = {"": 1, "k": KiB, "m": MiB, "g": GiB, "t": TiB, "p": 1 << 50}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(?:i?b)?\s*$", re.IGNORECASE)
_RATE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:e[0-9]+)?)\s*(.*?)\s*$", re.IGNORECASE)
_DECIMAL = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}


def parse_size(value: object, field: str = "size") -> int:
    """Return a byte count; refuse negatives, fractions of a byte and unknown suffixes."""
    if isinstance(value, bool):
        raise ConfigError(field, f"expected a size such as 4096, 0x1000 or 4KiB, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ConfigError(field, f"a size cannot be negative, got {value}")
        return value
    if isinstance(value, str):
        text = value.strip().replace("_", "")
        if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
            return int(text, 16)
        m = _SIZE_RE.match(text)
        if m:
            number, suffix = m.groups()
            scaled = float(number) * _BINARY[suffix.lower()]
            if "." in number and scaled != int(scaled):
                raise ConfigError(field, f"{value!r} is not a whole number of bytes")
            return int(number) * _BINARY[suffix.lower()] if "." not in number else int(scaled)
    raise ConfigError(
        field, f"expected a size such as 4096, 0x1000, 4KiB, 2MiB, 1GiB or 1TiB, got {value!r}"
    )


def parse_bandwidth(value: object, field: str = "bandwidth") -> float:
    """Return bytes per second from ``128MiB/s``, ``1Gbit/s``, ``100Mbps`` or a plain number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value <= 0:
            raise ConfigError(field, f"a bandwidth must be positive, got {value}")
        return float(value)
    rate = _parse_rate_text(value, field, page_size=None)
    if rate[1] != "bytes":
        raise ConfigError(field, f"expected a bandwidth in bytes or bits per second, got {value!r}")
    if rate[0] <= 0:
        raise ConfigError(field, f"a bandwidth must be positive, got {value!r}")
    return rate[0]


def parse_rate(value: object, page_size: int, field: str = "rate") -> float:
    """Return pages per second from ``20000 pages/s``, ``512MiB/s`` or a plain number (pages/s)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(field, f"a rate cannot be negative, got {value}")
        return float(value)
    amount, unit = _parse_rate_text(value, field, page_size)
    return amount if unit == "pages" else amount / page_size


def _parse_rate_text(value: object, field: str, page_size: int | None) -> tuple[float, str]:
    hint = "such as 20000 pages/s, 512MiB/s, 1Gbit/s or 100Mbps"
    if not isinstance(value, str):
        raise ConfigError(field, f"expected a rate {hint}, got {value!r}")
    m = _RATE_RE.match(value)
    if not m:
        raise ConfigError(field, f"expected a rate {hint}, got {value!r}")
    number, unit = float(m.group(1)), m.group(2).replace(" ", "").lower()
    if number < 0:
        raise ConfigError(field, f"a rate cannot be negative, got {value!r}")
    if unit in ("", "/s"):
        return number, "bytes" if page_size is None else "pages"
    if unit in ("pages/s", "page/s", "pps"):
        if page_size is None:
            raise ConfigError(
                field, f"expected a bandwidth in bytes or bits per second, got {value!r}"
            )
        return number, "pages"
    bits = re.fullmatch(r"([kmgt]?)(?:bit/s|bps)", unit)
    if bits:
        return number * _DECIMAL[bits.group(1)] / 8.0, "bytes"
    nbytes = re.fullmatch(r"([kmgt]?)(?:i?b)?/s", unit)
    if nbytes:
        return number * _BINARY[nbytes.group(1)], "bytes"
    raise ConfigError(field, f"unknown unit {m.group(2)!r}; expected a rate {hint}")


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

"""How much memory this process may still allocate, and a refusal before it tries.

MemAvailable is what the machine could give without swapping; a process may be held to less
by its cgroup (``memory.max`` minus ``memory.current``, cgroup v2, or ``memory.limit_in_bytes``
minus ``memory.usage_in_bytes``, v1) or by ``ulimit -v`` (RLIMIT_AS minus the address space it
already maps, ``VmSize``).  The smallest of these is the budget an estimate is checked against.
"""

from __future__ import annotations

import resource
from pathlib import Path

from engine.util.errors import ConfigError

_CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and len(text) < 24 else None


def _meminfo(key: str, path: str = "/proc/meminfo") -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _cgroup_room() -> int | None:
    for limit, usage in (
        ("memory.max", "memory.current"),
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),
    ):
        cap, used = _read_int(_CGROUP / limit), _read_int(_CGROUP / usage)
        if cap is not None and used is not None and cap < 1 << 60:
            return max(0, cap - used)
    return None


def _address_space_room() -> int | None:
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft == resource.RLIM_INFINITY:
        return None
    mapped = _meminfo("VmSize", "/proc/self/status") or 0
    return max(0, soft - mapped)


def available_bytes() -> int | None:
    """The least of MemAvailable, the cgroup's room and RLIMIT_AS's room, in bytes (None when
    none of them can be read: not Linux)."""
    rooms = [
        r
        for r in (_meminfo("MemAvailable"), _cgroup_room(), _address_space_room())
        if r is not None
    ]
    return min(rooms) if rooms else None


def check_fits(need: int, field: str, what: str) -> None:
    """Refuse (ConfigError naming ``field``) an allocation of ``need`` bytes this process cannot
    make; ``what`` says what needs it ("this session", "these tables")."""
    have = available_bytes()
    if have is not None and need > have:
        raise ConfigError(
            field,
            f"{what} needs about {need / 2**30:.2f} GiB but only {have / 2**30:.2f} GiB is "
            "available to this process (the least of MemAvailable, the cgroup's memory.max and "
            "ulimit -v)",
        )

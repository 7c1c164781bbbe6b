"""Every limit of the session schema (engine/files/session.py), one table, each at the limit,
one past it and one inside it.

Each row's values are written out from the limit's source, not from the code's constants:

- README "Limits" table: ``tick_ms`` 0.001 … 1000; ``start_ms + 1000 × timeout_s`` and every
  ``events[i].t_ms`` ≤ 86,400,000; ``bandwidth`` 1 … 1e13 B/s; ``downtime_limit_ms`` > 0 …
  2,000,000 (QEMU's MAX_MIGRATE_DOWNTIME_SECONDS 2000, migration/options.c); ``max_rounds``,
  ``xen_max_rounds`` 1 … 100,000; ``xen_max_factor`` ≤ 1000; ``costs.*`` 0 … 1e9 ns; sizes 0 …
  2^64 − 1 bytes and ≤ 32 characters, a memslot's ``size`` > 0; ``clear_chunk`` the page size
  × 2^6 … 2^31; ``vcpus`` 1 … 1024 (an event's ``vcpu`` 0 … 1023).
- README "dirtylog tables": IPA sizes 32 … 48 bits; granules 4K, 16K, 64K.
- KVM (include/linux/kvm_host.h KVM_MEM_SLOTS_NUM = SHRT_MAX = 32767, arm64 has no internal
  slots, so KVM_USER_MEM_SLOTS = 32767; kvm_set_memory_region: ``id >= KVM_USER_MEM_SLOTS``
  → EINVAL; README/fidelity "id < 32767"): slot ids 0 … 32766.
- QEMU migration/options.c migrate_params_check: ``throttle-trigger-threshold`` 1 … 100,
  ``cpu-throttle-initial``, ``cpu-throttle-increment``, ``max-cpu-throttle`` 1 … 99;
  migration/migration.h CLEAR_BITMAP_SHIFT_MIN 6, _MAX 31 (``x-clear-bitmap-shift``);
  ``avail-switchover-bandwidth`` exists from QEMU 8.2.
- engine/files/session.py's own documented constants (not in README's table): memslots at
  once ≤ 512 (MAX_SLOTS, "KVM allows 32767; a placement check is linear in them"), events
  ≤ 20,000 (MAX_EVENTS; README's table says 100,000 — reported, not changed), names ≤ 200
  characters, ``seed`` 0 … 2^63 − 1, ``eager_split`` ≤ 1 TiB, ``xen_min_pages`` 0 … 2^40,
  ``harvest_every_ms`` 0.001 … 3,600,000 (one hour), kubevirt timeouts ≥ 0, ``version``
  1 … CURRENT_VERSION (2), ring_entries ≥ 1 and a power of two (the granule's range,
  README's 256 … 65,536, is KVM's and checked when the VM is built, kvm/dirtyring.py).

Floats step one ULP past their limit (``math.nextafter``), integers one.  A refusal must be
the ConfigError naming the field as the session spells it and the rule.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest

from engine.files.session import parse_session
from engine.util.errors import ConfigError
from tests.test_session_schema import V1

OK = None  # accepted


def _up(x: float) -> float:
    return math.nextafter(x, math.inf)


def _down(x: float) -> float:
    return math.nextafter(x, -math.inf)


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    """``a.b.0.c`` = value (a digit is a list index)."""
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def _slots(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "base": (1 << 30) + (i << 21), "size": "2MiB"} for i in range(n)]


def _events(n: int) -> list[dict[str, Any]]:
    return [{"t_ms": 0, "action": "harvest"}] * n


def _int_range(path: str, lo: int, hi: int, field: str | None = None, hi_rule: str = "") -> list:
    """lo-1 refused, lo, lo+1, hi-1, hi accepted, hi+1 refused (``hi_rule`` for an exclusive
    upper bound written as ``lt``: hi+1 is then the bound)."""
    field = field or path.replace(".0.", "[0].")
    return [
        pytest.param(
            {path: lo - 1}, (field, f"must be at least {lo}, got {lo - 1}"), id=f"{path}={lo - 1}"
        ),
        pytest.param({path: lo}, OK, id=f"{path}={lo}"),
        pytest.param({path: lo + 1}, OK, id=f"{path}={lo + 1}"),
        pytest.param({path: hi - 1}, OK, id=f"{path}={hi - 1}"),
        pytest.param({path: hi}, OK, id=f"{path}={hi}"),
        pytest.param(
            {path: hi + 1},
            (field, hi_rule or f"must be at most {hi}, got {hi + 1}"),
            id=f"{path}={hi + 1}",
        ),
    ]


def _num(x: float) -> str:
    """A limit as the sentence writes it: 2000000, not 2e+06 or 2000000.0."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def _float_range(path: str, lo: float, hi: float, *, lo_open: bool = False) -> list:
    """One ULP below lo refused (lo itself too when ``lo_open``), lo (or one ULP above), a
    value inside, hi accepted, one ULP above hi refused."""
    low_rule = f"must be greater than {_num(lo)}" if lo_open else f"must be at least {_num(lo)}"
    rows = [
        pytest.param({path: lo if lo_open else _down(lo)}, (path, low_rule), id=f"{path}<lo"),
        pytest.param({path: _up(lo) if lo_open else lo}, OK, id=f"{path}=lo"),
        pytest.param({path: (lo + hi) / 2}, OK, id=f"{path}=mid"),
        pytest.param({path: _down(hi)}, OK, id=f"{path}=hi-ulp"),
        pytest.param({path: hi}, OK, id=f"{path}=hi"),
        pytest.param({path: _up(hi)}, (path, f"must be at most {_num(hi)}"), id=f"{path}>hi"),
    ]
    return rows


_BW_RULE = "a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s)"
_CHUNK_RULE = "must be the page size times a power of two from 2^6 to 2^31"
_SIZE_64 = str((1 << 64) - 1)  # 18446744073709551615, 20 digits

TABLE = [
    # -- top level
    *_int_range("seed", 0, (1 << 63) - 1, hi_rule=f"must be less than {1 << 63}"),
    *_float_range("tick_ms", 0.001, 1000),
    *_int_range("vcpus", 1, 1024),
    pytest.param({"version": 2}, OK, id="version=2"),
    pytest.param({"version": 1}, OK, id="version=1"),
    pytest.param({"version": 3}, ("version", "this file is version 3"), id="version=3"),
    pytest.param({"version": 0}, ("version", "version 0 is not a known"), id="version=0"),
    pytest.param({"version": -1}, ("version", "must be a whole number, got -1"), id="version=-1"),
    pytest.param({"name": "n" * 200}, OK, id="name=200ch"),
    pytest.param({"name": "n" * 199}, OK, id="name=199ch"),
    pytest.param({"name": "n" * 201}, ("name", "must be at most 200 characters"), id="name=201ch"),
    # -- geometry
    *_int_range("geometry.ipa_bits", 32, 48),
    pytest.param({"geometry.granule": 4096}, OK, id="granule=4096"),
    pytest.param(
        {"geometry.granule": "16KiB", "tracking.clear_chunk": "1MiB"}, OK, id="granule=16KiB"
    ),
    pytest.param(
        {"geometry.granule": 65536, "tracking.clear_chunk": "4MiB"}, OK, id="granule=65536"
    ),
    pytest.param(
        {"geometry.granule": 4095},
        ("geometry.granule", "must be 4KiB, 16KiB or 64KiB"),
        id="granule=4095",
    ),
    pytest.param(
        {"geometry.granule": 8192},
        ("geometry.granule", "must be 4KiB, 16KiB or 64KiB"),
        id="granule=8192",
    ),
    pytest.param(
        {"geometry.granule": 65537},
        ("geometry.granule", "must be 4KiB, 16KiB or 64KiB"),
        id="granule=65537",
    ),
    # -- tracking
    pytest.param(
        {"tracking.ring_entries": 0},
        ("tracking.ring_entries", "must be at least 1, got 0"),
        id="ring=0",
    ),
    pytest.param({"tracking.ring_entries": 1}, OK, id="ring=1"),
    pytest.param({"tracking.ring_entries": 2}, OK, id="ring=2"),
    pytest.param(
        {"tracking.ring_entries": 3},
        ("tracking.ring_entries", "must be a power of two, got 3"),
        id="ring=3",
    ),
    pytest.param(
        {"tracking.ring_entries": 65535},
        ("tracking.ring_entries", "must be a power of two, got 65535"),
        id="ring=65535",
    ),
    pytest.param({"tracking.ring_entries": 65536}, OK, id="ring=65536"),
    pytest.param({"tracking.eager_split": "1TiB"}, OK, id="eager_split=1TiB"),
    pytest.param({"tracking.eager_split": (1 << 40) - 1}, OK, id="eager_split=1TiB-1"),
    pytest.param(
        {"tracking.eager_split": (1 << 40) + 1},
        ("tracking.eager_split", "must be 0 (off) or a block size"),
        id="eager_split=1TiB+1",
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 5},
        ("tracking.clear_bitmap_shift", "must be at least 6, got 5"),
        id="shift=5",
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 6}, OK, id="shift=6"
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 7}, OK, id="shift=7"
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 30}, OK, id="shift=30"
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 31}, OK, id="shift=31"
    ),
    pytest.param(
        {"tracking.clear_chunk": None, "tracking.clear_bitmap_shift": 32},
        ("tracking.clear_bitmap_shift", "must be at most 31, got 32"),
        id="shift=32",
    ),
    # clear_chunk with 4 KiB pages: 4096 × 2^6 = 256 KiB … 4096 × 2^31 = 8 TiB
    pytest.param(
        {"tracking.clear_chunk": "128KiB"}, ("tracking.clear_chunk", _CHUNK_RULE), id="chunk=128KiB"
    ),
    pytest.param({"tracking.clear_chunk": "256KiB"}, OK, id="chunk=256KiB"),
    pytest.param({"tracking.clear_chunk": "512KiB"}, OK, id="chunk=512KiB"),
    pytest.param({"tracking.clear_chunk": "4TiB"}, OK, id="chunk=4TiB"),
    pytest.param({"tracking.clear_chunk": "8TiB"}, OK, id="chunk=8TiB"),
    pytest.param(
        {"tracking.clear_chunk": "16TiB"}, ("tracking.clear_chunk", _CHUNK_RULE), id="chunk=16TiB"
    ),
    pytest.param(
        {"tracking.clear_chunk": (256 << 10) + 4096},
        ("tracking.clear_chunk", _CHUNK_RULE),
        id="chunk=256KiB+page",
    ),
    # with 64 KiB pages: 65536 × 2^6 = 4 MiB … 65536 × 2^31 = 128 TiB
    pytest.param(
        {"geometry.granule": 65536, "tracking.clear_chunk": "2MiB"},
        ("tracking.clear_chunk", _CHUNK_RULE),
        id="chunk64k=2MiB",
    ),
    pytest.param(
        {"geometry.granule": 65536, "tracking.clear_chunk": "4MiB"}, OK, id="chunk64k=4MiB"
    ),
    pytest.param(
        {"geometry.granule": 65536, "tracking.clear_chunk": "128TiB"}, OK, id="chunk64k=128TiB"
    ),
    pytest.param(
        {"geometry.granule": 65536, "tracking.clear_chunk": "256TiB"},
        ("tracking.clear_chunk", _CHUNK_RULE),
        id="chunk64k=256TiB",
    ),
    pytest.param(
        {"tracking.clear_chunk": "512KiB", "tracking.clear_bitmap_shift": 7}, OK, id="chunk=shift"
    ),
    pytest.param(
        {"tracking.clear_chunk": "512KiB", "tracking.clear_bitmap_shift": 6},
        ("tracking.clear_chunk", "is 2^7 pages but tracking.clear_bitmap_shift says 6"),
        id="chunk!=shift",
    ),
    # -- memslots
    *_int_range("memslots.0.id", 0, 32766, hi_rule="must be less than 32767, got 32767"),
    pytest.param(
        {"memslots.0.size": 0}, ("memslots[0].size", "a memslot must have a size"), id="size=0"
    ),
    pytest.param({"memslots.0.size": 1}, OK, id="size=1"),
    pytest.param({"memslots.0.size": _SIZE_64}, OK, id="size=2^64-1"),
    pytest.param({"memslots.0.base": _SIZE_64}, OK, id="base=2^64-1"),
    pytest.param({"memslots.0.base": str((1 << 64) - 2)}, OK, id="base=2^64-2"),
    pytest.param(
        {"memslots.0.base": str(1 << 64)},
        ("memslots[0].base", "is more than 2^64 - 1 bytes"),
        id="base=2^64",
    ),
    pytest.param({"memslots.0.base": "0x" + "0" * 29 + "1"}, OK, id="base=32ch"),
    pytest.param({"memslots.0.base": "0x" + "0" * 28 + "1"}, OK, id="base=31ch"),
    pytest.param(
        {"memslots.0.base": "0x" + "0" * 30 + "1"},
        ("memslots[0].base", "is too long to be a size"),
        id="base=33ch",
    ),
    pytest.param(
        {"memslots.0.base": -1},
        ("memslots[0].base", "a size cannot be negative, got -1"),
        id="base=-1",
    ),
    pytest.param({"memslots.0.flags": ["log_dirty", "readonly"]}, OK, id="flags=2"),
    pytest.param(
        {"memslots.0.flags": ["log_dirty", "readonly", "log_dirty"]},
        ("memslots[0].flags", "has 3 entries; at most 2 allowed"),
        id="flags=3",
    ),
    pytest.param({"memslots.0.name": "m" * 200}, OK, id="slotname=200ch"),
    pytest.param(
        {"memslots.0.name": "m" * 201},
        ("memslots[0].name", "must be at most 200 characters"),
        id="slotname=201ch",
    ),
    pytest.param({"memslots": _slots(511)}, OK, id="memslots=511"),
    pytest.param({"memslots": _slots(512)}, OK, id="memslots=512"),
    pytest.param(
        {"memslots": _slots(513)},
        ("memslots", "has 513 entries; at most 512 allowed"),
        id="memslots=513",
    ),
    pytest.param(
        {"memslots": _slots(1) * 2},
        ("memslots", "memslot id 0 is used twice"),
        id="memslots=dup-id",
    ),
    # -- costs
    pytest.param({"costs": {"walk_ns": 0}}, OK, id="cost=0"),
    pytest.param(
        {"costs": {"walk_ns": -5e-324}}, ("costs.walk_ns", "must be at least 0"), id="cost<0"
    ),
    pytest.param({"costs": {"walk_ns": 1e9}}, OK, id="cost=1e9"),
    pytest.param({"costs": {"walk_ns": _down(1e9)}}, OK, id="cost=1e9-ulp"),
    pytest.param(
        {"costs": {"walk_ns": _up(1e9)}},
        ("costs.walk_ns", "must be at most 1000000000"),
        id="cost>1e9",
    ),
    # -- migration
    # start_ms alone: 0 … 86,400,000 (a tiny timeout_s, so the horizon is what refuses the top)
    pytest.param(
        {"migration.start_ms": _down(0.0)},
        ("migration.start_ms", "must be at least 0"),
        id="start_ms<0",
    ),
    pytest.param({"migration.start_ms": 0}, OK, id="start_ms=0"),
    pytest.param(
        {"migration.start_ms": 86_399_000, "migration.timeout_s": 1}, OK, id="start_ms=86399000"
    ),
    pytest.param(
        {"migration.start_ms": 86_400_000, "migration.timeout_s": 1e-3},
        ("migration.timeout_s", "start_ms/1000 + timeout_s is 86400 s"),
        id="start_ms=86400000",
    ),
    pytest.param(
        {"migration.start_ms": _up(86_400_000.0), "migration.timeout_s": 1e-3},
        ("migration.start_ms", "must be at most 86400000"),
        id="start_ms>86400000",
    ),
    *_float_range("migration.timeout_s", 0, 86_400, lo_open=True),
    # the horizon: start_ms / 1000 + timeout_s ≤ 86,400 s (README: start_ms + 1000 × timeout_s)
    pytest.param(
        {"migration.start_ms": 1000, "migration.timeout_s": 86_399}, OK, id="horizon=86400"
    ),
    pytest.param(
        {"migration.start_ms": 1000, "migration.timeout_s": 86_398.5}, OK, id="horizon=86399.5"
    ),
    pytest.param(
        {"migration.start_ms": 1000, "migration.timeout_s": 86_399.5},
        ("migration.timeout_s", "start_ms/1000 + timeout_s is 86400.5 s"),
        id="horizon=86400.5",
    ),
    pytest.param(
        {"migration.start_ms": 86_399_999, "migration.timeout_s": 0.001}, OK, id="horizon=86400-1ms"
    ),
    pytest.param(
        {"migration.start_ms": 86_400_000, "migration.timeout_s": 0.001},
        ("migration.timeout_s", "start_ms/1000 + timeout_s is 86400 s"),
        id="horizon=86400+1ms",
    ),
    *_float_range("migration.downtime_limit_ms", 0, 2_000_000, lo_open=True),
    *_int_range("migration.max_rounds", 1, 100_000),
    *_int_range("migration.xen_max_rounds", 1, 100_000),
    *_float_range("migration.xen_max_factor", 0, 1000, lo_open=True),
    *_int_range("migration.xen_min_pages", 0, 1 << 40),
    *_float_range("migration.harvest_every_ms", 0.001, 3_600_000),
    *_int_range("migration.throttle_trigger_threshold", 1, 100),
    *_int_range("migration.cpu_throttle_initial", 1, 99),
    *_int_range("migration.cpu_throttle_increment", 1, 99),
    *_int_range("migration.max_cpu_throttle", 1, 99),
    pytest.param(
        {"migration.kubevirt": {"progress_timeout_s": 0, "completion_timeout_per_gib": 0}},
        OK,
        id="kubevirt=0",
    ),
    pytest.param(
        {"migration.kubevirt": {"progress_timeout_s": -5e-324}},
        ("migration.kubevirt.progress_timeout_s", "must be at least 0"),
        id="kubevirt.progress<0",
    ),
    pytest.param(
        {"migration.kubevirt": {"completion_timeout_per_gib": -5e-324}},
        ("migration.kubevirt.completion_timeout_per_gib", "must be at least 0"),
        id="kubevirt.completion<0",
    ),
    pytest.param({"migration.bandwidth": 1}, OK, id="bw=1"),
    pytest.param({"migration.bandwidth": 2}, OK, id="bw=2"),
    pytest.param(
        {"migration.bandwidth": _down(1.0)}, ("migration.bandwidth", _BW_RULE), id="bw=1-ulp"
    ),
    pytest.param({"migration.bandwidth": 1e13}, OK, id="bw=1e13"),
    pytest.param({"migration.bandwidth": "80Tbit/s"}, OK, id="bw=80Tbit/s"),
    pytest.param(
        {"migration.bandwidth": _up(1e13)}, ("migration.bandwidth", _BW_RULE), id="bw=1e13+ulp"
    ),
    pytest.param({"migration.link_speed": 1}, OK, id="link=1"),
    pytest.param(
        {"migration.link_speed": _down(1.0)}, ("migration.link_speed", _BW_RULE), id="link=1-ulp"
    ),
    pytest.param({"migration.link_speed": 1e13}, OK, id="link=1e13"),
    pytest.param(
        {"migration.link_speed": _up(1e13)}, ("migration.link_speed", _BW_RULE), id="link=1e13+ulp"
    ),
    pytest.param({"migration.avail_switchover_bandwidth": 0}, OK, id="avail=0"),
    pytest.param({"migration.avail_switchover_bandwidth": 1}, OK, id="avail=1"),
    pytest.param(
        {"migration.avail_switchover_bandwidth": 0.5},
        ("migration.avail_switchover_bandwidth", _BW_RULE),
        id="avail=0.5",
    ),
    pytest.param({"migration.avail_switchover_bandwidth": 1e13}, OK, id="avail=1e13"),
    pytest.param(
        {"migration.avail_switchover_bandwidth": _up(1e13)},
        ("migration.avail_switchover_bandwidth", _BW_RULE),
        id="avail=1e13+ulp",
    ),
    pytest.param(
        {"migration.avail_switchover_bandwidth": 1, "migration.qemu": "8.2"}, OK, id="avail@8.2"
    ),
    pytest.param(
        {"migration.avail_switchover_bandwidth": 1, "migration.qemu": "7.2"},
        ("migration", "avail_switchover_bandwidth needs QEMU 8.2 or later"),
        id="avail@7.2",
    ),
    pytest.param(
        {"migration.avail_switchover_bandwidth": 0, "migration.qemu": "7.2"}, OK, id="avail=0@7.2"
    ),
    # -- events
    pytest.param({"events": _events(19_999)}, OK, id="events=19999"),
    pytest.param({"events": _events(20_000)}, OK, id="events=20000"),
    pytest.param(
        {"events": _events(20_001)},
        ("events", "has 20001 entries; at most 20000 allowed"),
        id="events=20001",
    ),
    pytest.param(
        {"events.0.t_ms": _down(0.0)}, ("events[0].t_ms", "must be at least 0"), id="t_ms<0"
    ),
    pytest.param({"events.0.t_ms": 0}, OK, id="t_ms=0"),
    pytest.param({"events.0.t_ms": 86_400_000}, OK, id="t_ms=86400000"),
    pytest.param({"events.0.t_ms": _down(86_400_000.0)}, OK, id="t_ms=86400000-ulp"),
    pytest.param(
        {"events.0.t_ms": _up(86_400_000.0)},
        ("events[0].t_ms", "must be at most 86400000"),
        id="t_ms>86400000",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "delete_memslot", "id": 32766}}, OK, id="ev.id=32766"
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "delete_memslot", "id": 32765}}, OK, id="ev.id=32765"
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "delete_memslot", "id": 32767}},
        ("events[0].id", "must be less than 32767, got 32767 (the delete_memslot event at 0 ms)"),
        id="ev.id=32767",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "delete_memslot", "id": -1}},
        ("events[0].id", "must be at least 0, got -1"),
        id="ev.id=-1",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "add_memslot", "id": 32767, "base": 0, "size": 4096}},
        ("events[0].id", "must be less than 32767, got 32767"),
        id="ev.add.id=32767",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "add_memslot", "id": 32766, "base": 0, "size": 4096}},
        OK,
        id="ev.add.id=32766",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "pause_vcpu", "vcpu": 1023}}, OK, id="ev.vcpu=1023"
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "pause_vcpu", "vcpu": 1022}}, OK, id="ev.vcpu=1022"
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "resume_vcpu", "vcpu": 1024}},
        ("events[0].vcpu", "must be less than 1024, got 1024 (the resume_vcpu event at 0 ms)"),
        id="ev.vcpu=1024",
    ),
    pytest.param({"events.0": {"t_ms": 0, "action": "pause_vcpu", "vcpu": 0}}, OK, id="ev.vcpu=0"),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "pause_vcpu", "vcpu": -1}},
        ("events[0].vcpu", "must be at least 0, got -1"),
        id="ev.vcpu=-1",
    ),
    pytest.param(
        {
            "events.0": {
                "t_ms": 0,
                "action": "set_memslot_flags",
                "id": 0,
                "flags": ["log_dirty", "readonly"],
            }
        },
        OK,
        id="ev.flags=2",
    ),
    pytest.param(
        {
            "events.0": {
                "t_ms": 0,
                "action": "set_memslot_flags",
                "id": 0,
                "flags": ["log_dirty"] * 3,
            }
        },
        ("events[0].flags", "has 3 entries; at most 2 allowed"),
        id="ev.flags=3",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "set_migration", "max_cpu_throttle": 100}},
        ("events[0].max_cpu_throttle", "must be at most 99, got 100"),
        id="ev.set_migration.throttle=100",
    ),
    pytest.param(
        {"events.0": {"t_ms": 0, "action": "set_migration", "max_cpu_throttle": 99}},
        OK,
        id="ev.set_migration.throttle=99",
    ),
]


@pytest.mark.parametrize(("edits", "refused"), TABLE)
def test_session_limit(edits: dict[str, Any], refused: tuple[str, str] | None) -> None:
    """The schema's limits, each at the limit (accepted), one step past it (refused with the
    field and the rule) and one step inside it (accepted); sources in the module docstring."""
    data = copy.deepcopy(V1)
    for path, value in edits.items():
        _set(data, path, value)
    if refused is None:
        parse_session(data)
        return
    field, rule = refused
    with pytest.raises(ConfigError) as err:
        parse_session(data)
    assert err.value.field == field, str(err.value)
    assert rule in err.value.rule, str(err.value)
    assert "\n" not in str(err.value)

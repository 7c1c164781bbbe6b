"""Measure this host's unit costs of dirty logging on its real KVM (``dirtylog kvm calibrate``).

Each figure is measured ``repeats`` times on a fresh VM with a slot of ``pages`` 4 KiB pages
and reported as median with min-max.  Python's own cost per ioctl (a KVM_CHECK_EXTENSION,
about 2-4 µs through ``fcntl.ioctl``) is measured too and subtracted from single-ioctl
figures; guest figures subtract the same batch run again with every page already writable
(so the KVM_RUN round trip and the writer's loop cancel out).

The ``costs`` profile maps the measurements onto ``engine.kvm.costs.CostModel`` fields (a
session's ``costs`` object takes it as it is):

- ``fault_exit``: a first write to a write-protected page (exit, fault, mark dirty, re-entry);
- ``bitmap_word``: KVM_GET_DIRTY_LOG per bitmap word of a clean slot;
- ``desc_read``/``desc_write``: half each of GET's extra cost per dirty page (x86's rmap
  re-protects one SPTE per set bit: one read and one write);
- ``ring_push``: a first write in ring mode minus one in bitmap mode;
- ``ring_reset_entry``: KVM_RESET_DIRTY_RINGS per random entry.

These are x86 figures of this host's MMU, not arm64's: a session that uses them models
"this machine", not an arm64 server.
"""

from __future__ import annotations

import fcntl
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.host import uapi as U
from engine.host.machine import PAGE, Machine

DEFAULT_PAGES = 8192  # 32 MiB: about a second per repeat on a busy 2-core host
GPA = 1 << 30


@dataclass(frozen=True)
class Figure:
    """One measured unit cost: ns per ``per``, median and range over the repeats."""

    name: str
    per: str
    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return float(statistics.median(self.values))

    def as_dict(self) -> dict:
        return {
            "per": self.per,
            "median_ns": round(self.median, 1),
            "min_ns": round(min(self.values), 1),
            "max_ns": round(max(self.values), 1),
            "values_ns": [round(v, 1) for v in self.values],
        }


FIGURES = {
    "python_ioctl": "ioctl made from Python (KVM_CHECK_EXTENSION; subtracted below)",
    "run_round_trip": "KVM_RUN of an empty batch (entry, the writer's out, exit)",
    "get_fixed": "KVM_GET_DIRTY_LOG of a one-word slot (the fixed cost of the ioctl)",
    "enable_per_page": "mapped page, KVM_SET_USER_MEMORY_REGION turning logging on",
    "get_per_word": "bitmap word, KVM_GET_DIRTY_LOG of a clean slot",
    "get_per_dirty_page": "dirty page, KVM_GET_DIRTY_LOG (fetch, clear, re-protect)",
    "clear_per_ioctl": "KVM_CLEAR_DIRTY_LOG of 64 clean pages",
    "clear_per_dirty_page": "dirty page, one KVM_CLEAR_DIRTY_LOG over the slot",
    "fault_exit": "first write to a write-protected page (random order)",
    "ring_push": "first write in ring mode minus one in bitmap mode",
    "ring_reset_entry": "entry, KVM_RESET_DIRTY_RINGS (random pages)",
    "disable_per_page": "page, KVM_SET_USER_MEMORY_REGION turning logging off",
}


def _median_ns(fn: Callable[[], None], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t0)
    return float(statistics.median(times))


def _populated(m: Machine, pages: int, flags: int = 0) -> np.ndarray:
    """A slot of ``pages`` written once by the guest (writable SPTEs); its addresses."""
    m.add_slot(1, GPA, pages * PAGE, flags)
    addrs = GPA + PAGE * np.arange(pages, dtype=np.uint64)
    m.run(0, addrs)
    return addrs


def _one_repeat(pages: int, rng: np.random.Generator) -> dict[str, float]:
    """One repeat of every figure of ``FIGURES`` (ns), measured on fresh VMs."""
    return unit_costs(_measure(pages, rng), pages)


def _measure(pages: int, rng: np.random.Generator) -> dict[str, float]:
    """The raw samples of one repeat, each in ns (``unit_costs`` names them)."""
    raw: dict[str, float] = {}
    with Machine() as m:
        raw["python_ioctl"] = _median_ns(
            lambda: fcntl.ioctl(m.vm, U.KVM_CHECK_EXTENSION, U.KVM_CAP_USER_MEMORY), 200
        )
        raw["run_empty"] = _median_ns(lambda: m.run(0, np.zeros(0, np.uint64)), 20)
        addrs = _populated(m, pages)
        shuffled = rng.permutation(addrs)
        m.set_flags(1, U.KVM_MEM_LOG_DIRTY_PAGES)
        raw["enable"] = m.last_ns
        m.add_slot(2, GPA + (pages + 512) * PAGE, 64 * PAGE, U.KVM_MEM_LOG_DIRTY_PAGES)
        raw["get_one_word"] = _median_ns(lambda: m.get_dirty_log(2), 9)
        raw["get_clean_slot"] = _median_ns(lambda: m.get_dirty_log(1), 9)
        m.get_dirty_log(1)
        raw["faulting_run"] = m.run(0, shuffled).wall_ns
        raw["writable_run"] = m.run(0, shuffled).wall_ns
        m.get_dirty_log(1)
        raw["get_dirty_slot"] = m.last_ns
        m.set_flags(1, 0)
        raw["disable"] = m.last_ns
    with Machine(manual=True) as m:
        _populated(m, pages)
        m.set_flags(1, U.KVM_MEM_LOG_DIRTY_PAGES)
        m.run(0, shuffled)
        words = m.get_dirty_log(1)
        zero = np.zeros(1, dtype=np.uint64)
        raw["clear_64_clean"] = _median_ns(lambda: m.clear_dirty_log(1, 0, 64, zero), 50)
        m.clear_dirty_log(1, 0, pages, words)
        raw["clear_dirty_slot"] = m.last_ns
    with Machine(ring_entries=max(256, 1 << int(pages + 64).bit_length())) as m:
        _populated(m, pages)
        m.set_flags(1, U.KVM_MEM_LOG_DIRTY_PAGES)
        raw["ring_faulting_run"] = m.run(0, shuffled).wall_ns
        raw["ring_writable_run"] = m.run(0, shuffled).wall_ns
        _, offsets = m.collect_rings()
        m.reset_rings()
        raw["ring_reset"] = m.last_ns
        raw["ring_entries"] = int(offsets.size)
    return raw


def unit_costs(raw: dict[str, float], pages: int) -> dict[str, float]:
    """Every figure of ``FIGURES`` (ns per its unit) from one repeat's raw samples (ns; a slot
    of ``pages`` 4 KiB pages, ``(pages + 63) // 64`` bitmap words):

    - ``python_ioctl``: median of a KVM_CHECK_EXTENSION; ``run_empty``: median KVM_RUN of no
      writes; ``enable``/``disable``: the KVM_SET_USER_MEMORY_REGION turning logging on/off;
    - ``get_one_word``/``get_clean_slot``: median KVM_GET_DIRTY_LOG of a one-word slot and of
      the clean slot; ``get_dirty_slot``: the GET after every page was written once;
    - ``faulting_run``/``writable_run``: KVM_RUN writing every page in random order after a
      GET (each write faults) and again (none does); ``ring_*`` the same in ring mode,
      ``ring_reset`` the KVM_RESET_DIRTY_RINGS of its ``ring_entries`` entries;
    - ``clear_64_clean``: median KVM_CLEAR_DIRTY_LOG of 64 clean pages; ``clear_dirty_slot``:
      one CLEAR of the whole dirty slot.

    Single-ioctl figures subtract ``python_ioctl``; per-word figures divide by the words the
    clean slot has beyond the one-word slot's one."""
    py = raw["python_ioctl"]
    nwords = (pages + 63) // 64
    out: dict[str, float] = {"python_ioctl": py, "run_round_trip": raw["run_empty"] - py}
    out["enable_per_page"] = (raw["enable"] - py) / pages
    small, big = raw["get_one_word"], raw["get_clean_slot"]  # one word: the fixed cost
    out["get_per_word"] = max(0.0, big - small) / max(1, nwords - 1)
    out["get_fixed"] = small - py
    out["fault_exit"] = (raw["faulting_run"] - raw["writable_run"]) / pages
    extra = raw["get_dirty_slot"] - py - out["get_fixed"] - out["get_per_word"] * nwords
    out["get_per_dirty_page"] = max(0.0, extra) / pages
    out["disable_per_page"] = (raw["disable"] - py) / pages
    out["clear_per_ioctl"] = raw["clear_64_clean"] - py
    out["clear_per_dirty_page"] = (raw["clear_dirty_slot"] - py) / pages
    ring_fault = (raw["ring_faulting_run"] - raw["ring_writable_run"]) / pages
    out["ring_push"] = ring_fault - out["fault_exit"]
    out["ring_reset_entry"] = (raw["ring_reset"] - py) / max(1, raw["ring_entries"])
    return out


def calibrate(
    pages: int = DEFAULT_PAGES,
    repeats: int = 5,
    seed: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> list[Figure]:
    """Every figure of ``FIGURES`` measured ``repeats`` times (ns; see the module docstring)."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(repeats):
        runs.append(_one_repeat(pages, rng))
        if progress is not None:
            progress(i + 1, repeats)
    return [Figure(name, per, tuple(r[name] for r in runs)) for name, per in FIGURES.items()]


def costs_profile(figures: list[Figure]) -> dict[str, float]:
    """The CostModel fields these measurements give (medians, ns; see the module docstring)."""
    med = {f.name: f.median for f in figures}
    half = max(0.0, med["get_per_dirty_page"]) / 2
    return {
        "fault_exit": round(max(0.0, med["fault_exit"]), 1),
        "bitmap_word": round(max(0.0, med["get_per_word"]), 2),
        "desc_read": round(half, 2),
        "desc_write": round(half, 2),
        "ring_push": round(max(0.0, med["ring_push"]), 1),
        "ring_reset_entry": round(max(0.0, med["ring_reset_entry"]), 1),
    }

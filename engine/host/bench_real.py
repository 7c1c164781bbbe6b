"""The real kernel doing what ``dirtylog bench`` figures 1 and 2 model, on this host's /dev/kvm.

Figure 1 times the engine enabling dirty logging on a slot whose every page is mapped; figure
2 times the engine's KVM_GET_DIRTY_LOG of such a slot with 5 % of its pages dirty in random
order.  Here the same two operations run on a real VM of the same slot size: the guest
writer (``engine.host.guest``) maps every page by writing it, then
KVM_SET_USER_MEMORY_REGION turns logging on (timed); for GET, 5 % of the pages, chosen at
random, are written before logging is turned on (so they are mapped) and again after (so
they are dirty and write-protected), then KVM_GET_DIRTY_LOG is timed (best of three, the
pages written again before each).  Times are the ioctl's wall time seen from Python
(about 3 µs of which is Python's own call).

These are context, not goals: the host's MMU is x86-64 (its EPT/TDP MMU), not arm64 stage 2,
and the machine is shared.  A slot larger than this host can back (a mapped page needs
real memory; the guest writer's window ends at 64 GiB; a measurement writes at most 2 GiB
of guest memory on this shared machine) is measured at the largest size that fits, and the
line says so, with the time scaled per page to the asked size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.host import uapi as U
from engine.host.device import unavailable_reason
from engine.host.machine import PAGE, Machine
from engine.util.memory import available_bytes

SOURCE = "real KVM on this host"
GPA = 1 << 30  # the slot's guest-physical base (as calibrate uses)
DIRTY_FRACTION = 0.05  # figure 2's share of dirty pages
REPEATS = 3
MAX_BACKED = 2 << 30  # guest memory a measurement may write (this machine is shared)


@dataclass(frozen=True)
class RealLine:
    """One context line: what was timed, the time (ms; None when skipped) and how."""

    name: str
    value_ms: float | None
    detail: dict[str, object] = field(default_factory=dict)

    def text(self) -> str:
        if self.value_ms is None:
            return f"context, {SOURCE}: {self.name}: skipped ({self.detail.get('skipped')})"
        return f"context, {SOURCE}: {self.name}: {self.value_ms:,.1f} ms (not a goal)"

    def as_dict(self) -> dict[str, object]:
        return {"source": SOURCE, "name": self.name, "value": self.value_ms, "unit": "ms",
                **({"detail": self.detail} if self.detail else {})}  # fmt: skip


def real_kvm_lines(npages: int, most: int | None = None, seed: int = 1) -> list[RealLine]:
    """Enable-logging and GET times on this host's KVM for a slot of ``npages`` 4 KiB pages
    (measured on at most ``most`` pages, scaled per page: a quick run), or one line saying
    in a sentence why /dev/kvm cannot be used here."""
    reason = unavailable_reason()
    if reason is not None:
        return [RealLine("KVM_GET_DIRTY_LOG and enable logging", None, {"skipped": reason})]
    rng = np.random.default_rng(seed)
    most = npages if most is None else min(npages, most)
    return [_enable_line(npages, most), _get_line(npages, most, rng)]


def _fits(m: Machine, npages: int, backed: float) -> int:
    """Pages of a slot at GPA measurable here: inside the guest writer's window, a mapping
    the available memory can hold, and at most MAX_BACKED bytes of it written (``backed``:
    the fraction of the pages the guest writes)."""
    window = (m.layout.data_max_gpa - GPA) // PAGE
    room = (available_bytes() or 0) // PAGE
    return int(min(npages, window, room, MAX_BACKED / backed // PAGE)) & ~63


def _scaled(name: str, npages: int, most: int, measured: int, ms: float, extra: dict) -> RealLine:
    detail: dict[str, object] = {"slot_pages": npages, "measured_pages": measured, **extra}
    if measured < npages:
        why = "a quick run" if measured == most else f"this host cannot back {npages:,} pages"
        detail["measured_ms"] = round(ms, 3)
        detail["note"] = f"{why}: measured on {measured:,} pages and scaled per page"
        ms = ms * npages / measured
        name += f" (scaled from {measured:,} pages)"
    return RealLine(name, round(ms, 3), detail)


def _enable_line(npages: int, most: int) -> RealLine:
    with Machine() as m:
        n = _fits(m, most, 1.0)
        m.add_slot(1, GPA, n * PAGE)
        m.run(0, GPA + PAGE * np.arange(n, dtype=np.uint64))
        m.set_flags(1, U.KVM_MEM_LOG_DIRTY_PAGES)
        ms = m.last_ns / 1e6
    name = f"enable logging on a {npages:,}-page slot, every page mapped"
    return _scaled(name, npages, most, n, ms, {})


def _get_line(npages: int, most: int, rng: np.random.Generator) -> RealLine:
    best = float("inf")
    with Machine() as m:
        n = _fits(m, most, DIRTY_FRACTION)
        pages = np.sort(rng.choice(n, int(n * DIRTY_FRACTION), replace=False)).astype(np.uint64)
        addrs = GPA + PAGE * pages
        m.add_slot(1, GPA, n * PAGE)
        m.run(0, addrs)  # mapped
        m.set_flags(1, U.KVM_MEM_LOG_DIRTY_PAGES)
        for _ in range(REPEATS):
            m.run(0, rng.permutation(addrs))  # dirty, in random order
            words = m.get_dirty_log(1)
            best = min(best, m.last_ns / 1e6)
        reported = int(np.unpackbits(words.view(np.uint8)).sum())
    name = f"KVM_GET_DIRTY_LOG, {npages:,}-page slot, 5 % dirty"
    detail = {"dirty_pages": int(pages.size), "reported": reported}
    return _scaled(name, npages, most, n, best, detail)

"""What a run will cost, estimated before it starts: memory in bytes, work in steps.

**Memory** (``estimate_bytes``) adds up everything a run allocates: per guest page its leaf
descriptor (8 B), source and destination versions (4 + 4 B), the KVM and migration bitmaps
(0.5 B), upper-level tables and the harvest's temporaries (2 B), the reverse map (8 B) and
compare mode's scratch tables (8 B) when used, the app's layers (12 B); per workload what it
keeps (a Zipf CDF and permutation, 40 B a page of its target while built; a memstress order,
8-16 B a page) and one batch of its accesses (96 B an access: times, gfns, vCPUs, random draws
and their sorted copies, ``MAX_BATCH_TICKS`` ticks at its peak rate); a trace's rows (28 B
each, twice while loading, at most one row per 4 bytes of file); the dirty rings (16 B an
entry per vCPU).  The total is checked against what this process may allocate
(``engine.util.memory``) and a refusal names the field behind the largest part.

**Work** (``work_parts``, ``check_work``), in steps of the simulation loop: the ticks a run may
last (``migration.start_ms`` + ``migration.timeout_s``, or ``timeout_s`` with policy none)
divided by ``tick_ms`` — before the migration starts in batches of up to 256 ticks, while it
runs ``RUNNING_TICKS_PER_STEP`` ticks to a step (a batch still runs the migration's sends and
checks tick by tick: 50-130 µs a tick when the limit was set, 2 s of 1 µs ticks taking 114 s;
since 30 Nov 2026 about 24 µs for a tick that decides or harvests and 7 µs for one that only
counts its sends, so the limit is conservative) — plus the pages
touched: every write at each workload's peak rate (``WRITES_PER_STEP`` to a step) and a pass
over every guest page per round (``PAGES_PER_STEP`` to a step) and a visit of every memslot
per round.  A step costs about
1-3 ms here; the limit, ``WORK_LIMIT`` = 4,000,000 steps, admits a default session (one hour
at 1 ms ticks, tick by tick) and refuses what is far beyond it (a day at 1 µs ticks) with
the field to change.  The horizon is the longest any ``set_migration`` event makes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.util.errors import ConfigError
from engine.util.memory import check_fits

if TYPE_CHECKING:  # annotations only: `dirtylog run --help` reads MAX_BATCH_TICKS cheaply
    from engine.files.session import SessionCfg
    from engine.migration.preflight import Plan

MAX_BATCH_TICKS = 256  # longest run of ticks merged into one batch
BASE_BYTES = 256 << 20  # the interpreter, numpy and the engine before any guest memory
ACCESS_BYTES = 96
TRACE_ROW_BYTES = 28
RING_ENTRY_BYTES = 16  # struct kvm_dirty_gfn
WORK_LIMIT = 4_000_000  # a default session (timeout_s 3600) fits even tick by tick
RUNNING_TICKS_PER_STEP = 16  # a migrating tick cost 50-130 µs when set (now 7-24), a step 1-3 ms
WRITES_PER_STEP = 10_000
PAGES_PER_STEP = 1_000_000
SLOTS_PER_STEP = 100  # a harvest visits every memslot in Python


@dataclass(frozen=True)
class Cost:
    """One part of an estimate and the session field that drives it."""

    amount: float
    field: str


def _trace_rows(plan_trace) -> int:
    try:
        return plan_trace.stat().st_size // 4
    except OSError:
        return 0


def memory_parts(cfg: SessionCfg, plan: Plan, track_last_sent: bool = True) -> list[Cost]:
    """The estimate's parts, in bytes, each with its field."""
    t = cfg.tracking
    per_page = 8 + 4 + 4 + 0.5 + 2 + (4 if track_last_sent else 0) + (8 if track_last_sent else 0)
    per_page += 8 if t.strategy == "rmap" or t.compare else 0
    per_page += 8 if t.compare else 0
    parts = [Cost(BASE_BYTES, "memslots"), Cost(plan.pages_ever * per_page, "memslots")]
    batch_s = MAX_BATCH_TICKS * cfg.tick_ms / 1000
    for w in plan.workloads:
        target = w.target
        if w.kind == "zipf":
            parts.append(Cost(w.pages * 40, f"{w.field}.{target}"))
        elif w.kind == "memstress":
            parts.append(Cost(w.pages * (16 if w.random_access else 8), f"{w.field}.{target}"))
        if w.trace is not None:
            rows = _trace_rows(w.trace)
            parts.append(Cost(min(rows, 100_000_000) * TRACE_ROW_BYTES * 2, f"{w.field}.path"))
        parts.append(Cost(w.rate * batch_s * ACCESS_BYTES, f"{w.field}.rate"))
    if t.mode == "ring":
        parts.append(Cost(cfg.vcpus * t.ring_entries * RING_ENTRY_BYTES, "tracking.ring_entries"))
    return parts


def estimate_bytes(cfg: SessionCfg, plan: Plan, track_last_sent: bool = True) -> int:
    return int(sum(p.amount for p in memory_parts(cfg, plan, track_last_sent)))


def check_memory(cfg: SessionCfg, plan: Plan, track_last_sent: bool = True) -> None:
    """Refuse, before allocating anything, a session this process cannot hold."""
    parts = memory_parts(cfg, plan, track_last_sent)
    need = int(sum(p.amount for p in parts))
    driver = max(parts[1:], key=lambda p: p.amount).field
    what = f"this session ({plan.pages_ever:,} guest pages and its workloads)"
    check_fits(need, driver, what)


def work_parts(cfg: SessionCfg, plan: Plan) -> list[Cost]:
    """The work estimate's parts, in steps, each with the field that drives it."""
    m = cfg.migration.model_copy(
        update={
            "start_ms": plan.start_ms or cfg.migration.start_ms,
            "timeout_s": plan.timeout_s or cfg.migration.timeout_s,
        }
    )
    tick_s = max(cfg.tick_ms, 1e-3) / 1000
    if m.policy == "none":
        horizon_s = m.timeout_s
        steps = horizon_s / tick_s / MAX_BATCH_TICKS
        rounds = 0
    else:
        horizon_s = m.start_ms / 1000 + m.timeout_s
        idle = m.start_ms / 1000 / tick_s / MAX_BATCH_TICKS
        running = m.timeout_s / tick_s
        xen = m.policy.startswith("xen")
        rounds = min(m.max_rounds, m.live_iterations() + 1) if xen else m.max_rounds
        steps = idle + running / RUNNING_TICKS_PER_STEP + 4 * rounds
    parts = [Cost(steps + plan.events, "tick_ms")]
    for w in plan.workloads:
        writes = w.rate * horizon_s + (_trace_rows(w.trace) if w.trace is not None else 0)
        parts.append(Cost(writes / WRITES_PER_STEP, f"{w.field}.rate"))
    parts.append(Cost(plan.pages_ever * (rounds + 1) / PAGES_PER_STEP, "migration.max_rounds"))
    parts.append(Cost(plan.slots_ever * (rounds + 1) / SLOTS_PER_STEP, "memslots"))
    return parts


def check_work(cfg: SessionCfg, plan: Plan) -> None:
    """Refuse a run whose work estimate is above WORK_LIMIT, naming the field to change."""
    parts = work_parts(cfg, plan)
    total = sum(p.amount for p in parts)
    if total <= WORK_LIMIT:
        return
    driver = max(parts, key=lambda p: p.amount).field
    advice = {
        "tick_ms": "raise tick_ms or lower migration.timeout_s",
        "migration.max_rounds": "lower migration.max_rounds or the memslots' sizes",
    }.get(driver, f"lower {driver} or migration.timeout_s")
    raise ConfigError(
        driver,
        f"this run may take up to {total:,.0f} steps of work (ticks × pages touched), more "
        f"than the limit of {WORK_LIMIT:,}; {advice}",
    )

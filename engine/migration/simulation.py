"""A session brought to life: the VM, its workloads, the migration and the live edits.

The clock: one definition of simulated time, which every path follows (``dirtylog run``,
``dirtylog export``, the app at any speed, Step tick, Step round, batches of any size).

Time advances in ticks of ``tick_ms``.  Tick n covers (t_n, t_n+1], t_n = n × tick_ns, and
does, in this order:

1. **Events.**  Every event with t_ms <= t_n that has not been applied is applied now, in time
   order (file order among equal times), before the guest runs: an event that falls between
   ticks takes effect at the start of the first tick that begins at or after it.  A live edit
   from the app is applied at the current boundary t_n (after the events due then) and is
   recorded with t_ms = t_n exactly, so a saved session replays it at the same tick.  Then the
   migration starts if its start_ms has come (ram_save_setup: logging on, all pages dirty).
   Every EXIT_PERIOD_TICKS ticks, the exit time the vCPUs owe is settled (step 2).
2. **Guest accesses.**  Each vCPU runs tick_ns × (100 − throttle) / 100 ns (0 if paused),
   less the exit time it owes; fault and ring-full exits taken during one exit period of
   EXIT_PERIOD_TICKS ticks (aligned to tick 0) are owed from the start of the next period
   (a modelling simplification: the stall lands up to one period late, its total is exact).
   Each workload issues the accesses due for that time; the VM applies them in time order:
   faults, splits, dirty marking.  **Ring-full exits** happen inside this step: a vCPU whose
   ring reaches its soft limit exits, user space reaps every ring into the migration's
   pending set and resets them (re-protecting), and the vCPU re-enters with the rest of its
   accesses.
3. **Sends.**  The migration sends what the tick's bandwidth allows after any harvest or
   CLEAR cost still being paid (``busy_until``), in address order from its cursor, copying each
   page's version as of the end of step 2.  With manual clear, a chunk's KVM_CLEAR_DIRTY_LOG
   is issued just before its first page goes.
4. **Harvest, switchover, limits** at t_n+1: a harvest (``migration_bitmap_sync``) when what is
   left fits the threshold, then the switchover if still fits; the auto-converge **throttle
   check** runs with each harvest; max_rounds and the timeout are checked.  A harvest at T
   therefore sees every write with t <= T.

Batching.  ``advance(k)`` runs up to k ticks at once and gives exactly what k calls of
``advance(1)`` give: no batch spans an event, the migration start, an exit-period boundary, a
harvest, switchover or limit (``Migration.quiet_ticks``).  Inside a batch the workloads draw
every tick's accesses in one call (identical draws, ``workloads``), and the ticks then run in
order, each doing steps 3 and 4, with two shortcuts when they are provably the same as tick
by tick — all accesses are writes (a read of a page in a write-protected block, then a split,
is not the same in one pass) and every page costs the same to send (a zero page's cost reads
its content at its own tick):

- **Lazy guest.**  The accesses are applied (``catch_up``: all those not yet applied, up to
  the tick being run, in one pass) only when something is about to read or change the state
  they change: a CLEAR (manual clear: the chunks a tick's sends enter, found ahead from the
  last GET's bits), a ring reap, a harvest, a round's close, a cancel, and the batch's end.
  Writes are otherwise independent of the migration within a batch: they touch the KVM log,
  the tables and the versions, the sender only the migration bitmap and the destination.
  In ring mode a pass ends with the first tick in which a ring may reach its soft limit (a
  vCPU with as many accesses as its ring has room), as tick by tick: which accesses a
  ring-full exit's reap sees depends on where the pass ends (``VM.access``); the accesses
  the exit held back start the next pass.  The reap only collects into the migration's
  pending set, read at the next harvest, and re-protects pages: the sender within the batch
  does not see it.
- **Counted sends.**  The migration bitmap changes within a batch only by the sends, so each
  tick's send is a count (the next n dirty pages in send order, n from the same byte budget
  comparisons); the pages are written at the batch's end or before a harvest or switchover
  (``Migration.flush``), each with the version it had at the end of its own tick: the
  writes of later ticks, already applied, are taken off (``engine.migration.deferred``).
  A run of ticks whose only effect is such a count (inside a sender window, no decision,
  timer, limit or CLEAR due) is counted in one loop (``Migration.counted_ticks``), with
  the same comparisons and float operations in the same order as tick by tick.

A CLEAR, reap or harvest therefore splits the guest's writes exactly where it happens.
Otherwise the ticks run one by one, each tick's accesses applied before its sends.
Everything is seeded, so the same session gives the same rounds, bitmaps and destination at
any batch size.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
from pydantic import ValidationError

from engine.files.session import (
    MemslotCfg,
    MigrationCfg,
    SessionCfg,
    clear_chunk_pages,
    config_error,
    event_context,
    load_session,
    parse_session,
    validate_event,
)
from engine.kvm import dirtylog as DL
from engine.kvm.costs import CostModel
from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from engine.kvm.oplog import Harvest, frozen
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.migration import snapshot as S
from engine.migration.budget import MAX_BATCH_TICKS, check_memory, check_work
from engine.migration.changes import PageChanges
from engine.migration.precopy import LAST_SENT, Migration
from engine.migration.preflight import memslot_exists, preflight
from engine.migration.workloads import Accesses, Region, Workload, make_workload
from engine.stage2.geometry import Geometry
from engine.util.errors import ConfigError, DirtylogError, KvmError, shown
from engine.util.scatter import add_at
from engine.util.units import parse_size

NS_PER_MS = 1_000_000
EXIT_PERIOD_TICKS = 64  # exit time owed is settled at ticks that are multiples of this
HEAT_HALF_LIFE_NS = 2 * 1_000_000_000
HEAT_RESCALE_HALF_LIVES = 16  # whole half-lives after which the heat array is rescaled


@dataclass
class _Batch:
    """A batch's accesses (time-ordered), vCPU time per tick, each access's batch tick and the
    first access of each tick (``bounds``, k + 1 values); ticks before ``applied`` are applied
    to the VM, ``now`` is the tick being run."""

    acc: Accesses
    active: np.ndarray
    tick_of: np.ndarray
    bounds: np.ndarray
    applied: int = 0
    now: int = 0
    vcpu_ticks: np.ndarray | None = None  # accesses per tick and vCPU (ring mode, on demand)


@dataclass
class _Held:
    """Accesses a ring-full exit held back (in time order), given again with the next pass."""

    gfn: np.ndarray
    vcpu: np.ndarray
    write: np.ndarray


class Simulation:
    """Runs one session; the app drives it from a worker thread, the CLI from a loop."""

    def __init__(self, cfg: SessionCfg, base_dir: Path | None = None, track_last_sent: bool = True):
        plan = preflight(cfg, base_dir)  # memslots, workloads and events checked together
        check_memory(cfg, plan, track_last_sent)
        check_work(cfg, plan)
        self.cfg = cfg
        self.session: dict[str, Any] = cfg.model_dump(mode="json")
        self.base_dir = base_dir
        self.geom = Geometry(cfg.geometry.granule, cfg.geometry.ipa_bits)
        self.tick_ns = int(round(cfg.tick_ms * NS_PER_MS))
        self.t_ns = 0
        self.tick = 0
        self.messages: list[str] = []
        self.refused_events: list[dict[str, Any]] = []  # events that failed when they fell due
        self.harvests: list[dict[str, Any]] = []  # what each harvest reported, per slot
        self.keep_harvests = False
        t = cfg.tracking
        costs = CostModel.from_dict(cfg.costs)
        self.vm = VM(
            self.geom,
            Tracking(t.mode, t.strategy, t.ring_entries, t.eager_split, t.initially_set, t.compare),
            costs,
            cfg.vcpus,
        )
        self.paused_vcpus: set[int] = set()
        self._batch: _Batch | None = None  # the batch being run (advance)
        self.vcpu_debt_ns = np.zeros(cfg.vcpus, dtype=np.int64)  # exit time owed now
        self._exit_faults = np.zeros(cfg.vcpus, dtype=np.int64)  # this period's fault exits
        self._exit_other_ns = np.zeros(cfg.vcpus, dtype=np.float64)  # and ring-full exits
        self.heat = None  # decayed writes per page, allocated when a snapshot asks for it
        self._heat_t = 0
        self.changes: PageChanges | None = None  # cells a view must refresh (track_changes)
        self._edits = 0  # live edits applied (a view rebuilds after one: see view_key)
        self.migration: Migration | None = None
        self.slot_flags: dict[int, int] = {}  # the session's flags; logging starts with migration
        self.slot_populated: dict[int, bool] = {}  # populated slots hold data: no zero pages
        self.targets: dict[str, dict[str, Any]] = {}  # workload name -> its target spec
        for i, m in enumerate(cfg.memslots):
            self._add_memslot(m.model_dump(), f"memslots[{i}]")
        self.workloads: list[Workload] = []
        for i, spec in enumerate(cfg.workloads):
            self._add_workload(spec, f"workloads[{i}]")
        self.migration = (
            Migration(self, cfg.migration, clear_chunk_pages(t, self.vm.page_size), track_last_sent)
            if cfg.migration.policy != "none"
            else None
        )
        self.pending_events = sorted(
            ({**e.model_dump(), "_index": i} for i, e in enumerate(cfg.events)),
            key=lambda e: e["t_ms"],
        )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | Path, **kw: Any) -> Simulation:
        cfg, _ = load_session(path)
        return cls(cfg, Path(path).resolve().parent, **kw)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: Path | None = None, **kw: Any) -> Simulation:
        return cls(parse_session(copy.deepcopy(data)), base_dir, **kw)

    @property
    def pgt(self):
        return self.vm.pgt

    def message(self, text: str) -> None:
        self.messages.append(f"[{self.t_ns / 1e6:,.1f} ms] {text}")

    def _add_memslot(self, m: dict[str, Any], field: str) -> None:
        names = m.get("flags", [])
        flags = slot_flags("log_dirty" in names, "readonly" in names)
        # logging starts with the migration, not before (QEMU turns it on in setup)
        logging_now = self.migration is not None and self.migration.active
        kvm_flags = flags if logging_now else flags & ~KVM_MEM_LOG_DIRTY_PAGES
        try:
            self.vm.set_memslot(
                m["id"],
                m["base"],
                m["size"],
                kvm_flags,
                m.get("backing"),
                m.get("name", ""),
                populate=m.get("populate", True),
            )
        except DirtylogError as exc:
            raise _prefix(exc, field) from None
        self.slot_flags[m["id"]] = flags
        self.slot_populated[m["id"]] = bool(m.get("populate", True))

    def _region(self, spec: dict[str, Any], field: str) -> Region | None:
        if "slot" in spec:
            sid = spec["slot"]
            if sid not in self.vm.slots:
                raise ConfigError(f"{field}.slot", f"there is no memslot {shown(sid)}")
            s = self.vm.slots[sid].slot
            return Region(s.base_gfn, s.npages)
        if "range" in spec:
            base, sep, size = str(spec["range"]).partition(":")
            if not sep:
                raise ConfigError(f"{field}.range", "expected BASE:SIZE, e.g. 0x40000000:1GiB")
            b, n = parse_size(base, f"{field}.range"), parse_size(size, f"{field}.range")
            if b % self.vm.page_size or n % self.vm.page_size or n == 0:
                raise ConfigError(f"{field}.range", "base and size must be whole, non-zero pages")
            return Region(b >> self.vm.page_shift, n >> self.vm.page_shift)
        return None

    def _add_workload(self, spec: dict[str, Any], field: str) -> Workload:
        if any(w.name == spec.get("name") for w in self.workloads):
            raise ConfigError(
                f"{field}.name", f"workload name {shown(spec.get('name'))} is used twice"
            )
        w = make_workload(
            dict(spec), self.cfg.seed, self.vm.page_size, field, base_dir=self.base_dir
        )
        if w.vcpu >= self.cfg.vcpus:
            raise ConfigError(
                f"{field}.vcpu", f"must be below vcpus ({self.cfg.vcpus}), got {w.vcpu}"
            )
        trace = getattr(w, "trace", None)
        if trace is not None and trace.vcpu is not None and trace.vcpu.size:
            bad = np.flatnonzero(trace.vcpu >= self.cfg.vcpus)
            if bad.size:
                raise ConfigError(
                    f"{field}.path",
                    f"row {int(bad[0]) + 1} of the trace names vcpu {int(trace.vcpu[bad[0]])}, "
                    f"but the session has {self.cfg.vcpus} vCPUs",
                )
        region = self._region(spec, field)
        if region is not None:
            w.bind(region)
        elif w.kind != "trace":
            raise ConfigError(field, 'needs a target: "slot" (a memslot id) or "range" (BASE:SIZE)')
        self.workloads.append(w)
        self.targets[w.name] = {k: spec[k] for k in ("slot", "range") if k in spec}
        return w

    # -- running ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        m = self.migration
        if m is None:
            return self.t_ns >= self.cfg.migration.timeout_s * 1e9
        return m.phase == "done"

    def step_tick(self) -> None:
        """Advance one tick (the module docstring says what a tick does)."""
        self.advance(1)

    def advance(self, max_ticks: int = MAX_BATCH_TICKS) -> int:
        """Advance up to ``max_ticks`` ticks as one batch; returns the ticks run.

        Any ``max_ticks`` gives the same timeline: see "Batching" in the module docstring.
        """
        if self.finished:
            return 0
        # each reader of the VM's operation log takes what was logged since its own mark within
        # one call (a harvest's or an edit's cost); none holds a mark across batches, so the
        # log is emptied here instead of growing with every GET, CLEAR and ring reset of a run
        self.vm.op_log.clear()
        self._apply_due_events()
        m = self.migration
        if m is not None and m.phase == "idle" and self.tick >= self._start_tick():
            m.start(self.t_ns)
        if self.tick % EXIT_PERIOD_TICKS == 0:
            self._settle_exits()
        k = self._safe_ticks(max_ticks)
        edges = self.t_ns + self.tick_ns * np.arange(k + 1, dtype=np.int64)
        if m is None or not m.guest_paused:
            acc, active = self._guest_accesses(edges)
        else:
            acc, active = Accesses.empty(), np.zeros((k, self.cfg.vcpus), dtype=np.int64)
        tick_of = np.maximum(np.searchsorted(edges, acc.t_ns, "left") - 1, 0)
        self._batch = _Batch(acc, active, tick_of, np.searchsorted(tick_of, np.arange(k + 1)))
        try:
            self._run_ticks(edges, k == 1 or self._lazy(acc))
        finally:
            self._batch = None
            if m is not None:
                m.defer_tick = None
        self.t_ns = int(edges[-1])
        self.tick += k
        return k

    def _run_ticks(self, edges: np.ndarray, lazy: bool) -> None:
        """The batch's ticks in order.  Lazy: the guest's accesses are applied only when
        something reads what they change (``catch_up``) and the migration's sends are
        counted, then written at the end (``Migration.flush``); otherwise every tick's
        accesses are applied before its sends."""
        m = self.migration
        cost = m.uniform_cost() if m is not None and lazy else None
        if cost is not None:
            m.defer_cost = cost
        ends = edges.tolist()
        i = 0
        while i < len(ends) - 1:
            self.t_ns = ends[i]  # what a CLEAR, a ring reap or a message sees as now
            self._batch.now = i
            if not lazy:
                self.catch_up()
            if m is not None:
                m.defer_tick = None if cost is None else i
                if cost is not None:  # ticks that only count what they send, in one loop
                    j = m.counted_ticks(ends, i)
                    if j > i:
                        i = j
                        continue
                m.tick(ends[i], ends[i + 1])
            i += 1
        self.t_ns, self._batch.now = ends[-2], len(ends) - 2  # (the last tick, as run)
        self.catch_up()
        if m is not None:
            m.flush()

    def catch_up(self) -> None:
        """Apply, in passes, the batch's accesses not applied yet up to the current tick:
        before anything reads or changes the state they change (the module docstring)."""
        b = self._batch
        if b is None or b.applied > b.now:
            return
        end = b.now + 1
        held: _Held | None = None
        while b.applied < end or held is not None:
            first = b.applied
            b.applied = self._pass_end(b, first, end, held)
            part = b.acc.part(int(b.bounds[first]), int(b.bounds[b.applied]))
            faults, ring_full, held = self._apply_pass(part, held)
            self._account(part, b.active[first : b.applied], faults, ring_full)

    def _pass_end(self, b: _Batch, first: int, end: int, held: _Held | None) -> int:
        """Where the pass from batch tick ``first`` ends (at most ``end``): after the first
        tick in which a dirty ring may reach its soft limit (a vCPU with as many accesses,
        counting the held-back ones the pass starts with, as its ring has room).  A ring can
        then fill only in the pass's last tick, after every earlier access of the pass, as
        tick by tick: the accesses a ring-full exit's reap sees are those of its pass before
        each vCPU's ring filled (``VM.access``), i.e. up to the end of the tick it fills in.
        Held-back accesses that may fill a ring by themselves are a pass of their own."""
        if not self.vm.rings or first == end:
            return end
        v = self.cfg.vcpus
        if b.vcpu_ticks is None:  # accesses per batch tick and vCPU (k × vcpus)
            own = b.acc.vcpu >= 0
            key = b.tick_of[own] * v + b.acc.vcpu[own]
            b.vcpu_ticks = np.bincount(key, minlength=b.active.size).reshape(-1, v)
        room = np.array([r.room() for r in self.vm.rings], dtype=np.int64)
        if held is not None:
            room -= np.bincount(held.vcpu[held.vcpu >= 0], minlength=v)
            if (room <= 0).any():
                return first
        fits = (np.cumsum(b.vcpu_ticks[first:end], axis=0) < room).all(axis=1)
        return end if fits[-1] else first + int(fits.argmin()) + 1

    def batch_ticks_left(self) -> int:
        """Ticks of the batch from the current one to its end (1 outside a batch)."""
        b = self._batch
        return 1 if b is None else b.bounds.size - 1 - b.now

    def batch_writes(self) -> tuple[np.ndarray, np.ndarray]:
        """The batch's writes applied so far: gfn and batch tick of each (int64)."""
        b = self._batch
        if b is None:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        hi = int(b.bounds[b.applied])
        write = b.acc.write[:hi]
        return b.acc.gfn[:hi][write], b.tick_of[:hi][write]

    def _lazy(self, acc: Accesses) -> bool:
        """Whether a batch's accesses may be applied lazily, in a few passes: all are writes
        (a read of a page in a write-protected block, then a split, is not the same in one
        pass) and every page sent costs the same (a zero page's cost reads its content as of
        its own tick).  A tick in which a dirty ring may fill is a pass of its own
        (``_pass_end``)."""
        if not acc.write.all():
            return False
        m = self.migration
        return m is None or not m.active or m.uniform_cost() is not None

    def _account(self, acc: Accesses, active: np.ndarray, faults, ring_full: int) -> None:
        """The batch's exits are owed from the next exit period; the round counts them."""
        self._exit_faults += faults
        m = self.migration
        if m is not None:
            wall = self.tick_ns * self.cfg.vcpus * active.shape[0]
            m.account_guest(int(active.sum()), wall, int(faults.sum()), ring_full)
        if self.heat is not None and len(acc):
            self._heat_add(acc)
        if self.changes is not None and len(acc):
            self.changes.mark(self._layer_index(acc.gfn))  # reads map pages too (prot)

    def _settle_exits(self) -> None:
        """Start of an exit period: what the last period's exits cost is owed from now on."""
        owed = self._exit_faults * self.vm.costs.fault_exit + self._exit_other_ns
        self.vcpu_debt_ns += np.rint(owed).astype(np.int64)
        self._exit_faults[:] = 0
        self._exit_other_ns[:] = 0.0

    def _start_tick(self) -> int:
        """The first tick that begins at or after the migration's start_ms."""
        assert self.migration is not None
        return self._tick_at(self.migration.cfg.start_ms)

    def _tick_at(self, t_ms: float) -> int:
        """The first tick that begins at or after ``t_ms`` (to the nearest ns)."""
        return -(-round(t_ms * NS_PER_MS) // self.tick_ns)

    def _safe_ticks(self, max_ticks: int) -> int:
        """How many ticks from now one batch may hold (see the module docstring)."""
        if max_ticks <= 1:
            return 1
        limit = min(max_ticks, EXIT_PERIOD_TICKS - self.tick % EXIT_PERIOD_TICKS)
        if self.pending_events:
            limit = min(limit, self._tick_at(self.pending_events[0]["t_ms"]) - self.tick)
        m = self.migration
        if m is None:
            end = self.cfg.migration.timeout_s * 1e9
            return max(1, min(limit, math.ceil((end - self.t_ns) / self.tick_ns)))
        if m.phase == "idle":
            return max(1, min(limit, self._start_tick() - self.tick))
        if m.phase != "iterating":
            return 1
        return max(1, min(limit, m.quiet_ticks(self.t_ns, self.tick_ns)))

    def run_for(self, sim_ns: int) -> None:
        end = self.t_ns + sim_ns
        while self.t_ns < end and not self.finished:
            self.advance(max(1, min(MAX_BATCH_TICKS, (end - self.t_ns) // self.tick_ns)))

    def step_round(self) -> None:
        """Tick until the next harvest (a new round) or the end."""
        m = self.migration
        start = m.round if m else 0
        limit = self.t_ns + int(self.cfg.migration.timeout_s * 1e9) + self.tick_ns
        while not self.finished and self.t_ns < limit:
            self.advance()
            if m is not None and m.round != start:
                return

    def run_rounds(self, n: int) -> None:
        for _ in range(n):
            if self.finished:
                return
            self.step_round()

    def run(self, progress=None, max_batch_ticks: int = MAX_BATCH_TICKS) -> dict[str, Any]:
        """Run to the end in batches of at most ``max_batch_ticks`` ticks (any size gives the
        same result); ``progress(sim)`` is called about every simulated 100 ms."""
        next_report = 0
        while not self.finished:
            self.advance(max_batch_ticks)
            if progress is not None and self.t_ns >= next_report:
                progress(self)
                next_report = self.t_ns + 100 * NS_PER_MS
        return self.result()

    # -- the guest ----------------------------------------------------------------------------

    def _guest_accesses(self, edges: np.ndarray) -> tuple[Accesses, np.ndarray]:
        """Every workload's accesses in the ticks (edges[i], edges[i + 1]], time-ordered, and
        the time each vCPU ran in each tick (k × vcpus, int64 ns)."""
        active = self._active_ns(edges.size - 1)
        parts = [
            w.accesses_ticks(edges, active[:, w.vcpu]) for w in self.workloads if not w.finished
        ]
        return (Accesses.concat(parts) if parts else Accesses.empty()), active

    def _active_ns(self, k: int) -> np.ndarray:
        """Guest time per tick and vCPU: the throttled tick, less the exit time owed, paid
        from the first ticks on."""
        m = self.migration
        throttle = m.throttle_pct if m else 0
        budget = np.full(self.cfg.vcpus, self.tick_ns * (100 - throttle) // 100, dtype=np.int64)
        budget[list(self.paused_vcpus)] = 0
        # tick i pays min(what is still owed after i ticks, budget): the debt less i budgets
        owed = self.vcpu_debt_ns[None, :] - np.arange(k, dtype=np.int64)[:, None] * budget
        spend = np.clip(owed, 0, budget)
        self.vcpu_debt_ns -= spend.sum(axis=0)
        return budget - spend

    def _apply_pass(
        self, acc: Accesses, held: _Held | None
    ) -> tuple[np.ndarray, int, _Held | None]:
        """One pass of the guest's accesses, after those the last ring-full exit held back
        (given again first).  Returns the fault exits per vCPU, the ring-full exits and what
        this pass's own exit held back (None: nothing): on KVM_EXIT_DIRTY_RING_FULL user space
        reaps and resets every ring, and the vCPU re-enters with the rest of its accesses."""
        gfn, vcpu, write = acc.gfn, acc.vcpu, acc.write
        if held is not None:
            gfn = np.concatenate([held.gfn, gfn])
            vcpu = np.concatenate([held.vcpu, vcpu])
            write = np.concatenate([held.write, write])
        res = self.vm.access(gfn, vcpu, write, retried=0 if held is None else held.gfn.size)
        if res.deferred is None or not res.deferred.size:
            return res.faults, 0, None
        op = self._reap()  # (the pass's accesses are being applied: no catch_up)
        for v in sorted(res.ring_full):
            self._exit_other_ns[v] += self.vm.costs.fault_exit + op.model_ns(self.vm.costs)
        d = res.deferred
        return res.faults, len(res.ring_full), _Held(gfn[d], vcpu[d], write[d])

    def reap_rings(self) -> DL.OpStats:
        """Collect every ring into the migration's pending set, then KVM_RESET_DIRTY_RINGS."""
        self.catch_up()
        return self._reap()

    def _reap(self) -> DL.OpStats:
        slots, offsets = DL.collect_rings(self.vm)
        if self.migration is not None and offsets.size:
            self.migration.add_ring_pages(slots, offsets)
        if self.changes is not None:
            for sid in np.unique(slots):  # the reset re-protected them
                self.note_pages(int(sid), offsets[slots == sid].astype(np.int64))
        return DL.reset_rings(self.vm)

    def _heat_add(self, acc: Accesses) -> None:
        """Decayed writes per page (half-life 2 s), laid out like the snapshot layers.

        The array holds heat as of ``_heat_t`` (a whole number of half-lives): a write at time
        t adds 2^((t − _heat_t) / half-life) instead of decaying every page each step (a pass
        over all of a large guest's pages).  The weight is that of the write's own time, split
        as 2^(whole half-lives) × 2^(fraction), and the array is rescaled by whole powers of
        two, so that the sum does not depend on how the ticks were batched: scaling by 2^−n
        is exact in floating point and the adds happen in the writes' order (``add_at``).
        """
        written = acc.write
        idx = self._layer_index(acc.gfn[written])
        keep = idx >= 0
        if not keep.any():
            return
        t = acc.t_ns[written][keep].astype(np.int64)
        whole = (int(t.min()) - self._heat_t) // HEAT_HALF_LIFE_NS
        if whole >= HEAT_RESCALE_HALF_LIVES:
            self.heat *= np.float32(np.ldexp(1.0, -whole))
            self._heat_t += whole * HEAT_HALF_LIFE_NS
        q, r = np.divmod(t - self._heat_t, HEAT_HALF_LIFE_NS)
        weight = np.ldexp(np.exp2(r / HEAT_HALF_LIFE_NS), q).astype(np.float32)
        add_at(self.heat, idx[keep], weight)

    # -- live edits ---------------------------------------------------------------------------

    def _apply_due_events(self) -> None:
        """Apply, in order, every pending event due at or before the current tick."""
        while self.pending_events and self._tick_at(self.pending_events[0]["t_ms"]) <= self.tick:
            ev = dict(self.pending_events.pop(0))
            index = ev.pop("_index", None)
            try:
                self._apply(ev)
            except DirtylogError as exc:
                where = f"events[{index}]" if index is not None else "an event"
                self.message(f"{where} ({event_context(ev)}) refused: {exc}")
                self.refused_events.append(
                    {"index": index, "t_ms": ev["t_ms"], "action": ev["action"], "reason": str(exc)}
                )

    def apply_edit(self, event: dict[str, Any]) -> None:
        """A live edit now, at the boundary t_n, after the events due then; recorded in the
        session with t_ms = t_n so that a replay applies it at the same tick."""
        self._apply_due_events()
        ev = {k: v for k, v in event.items() if k != "t_ms"}
        ev = {"t_ms": self.t_ns / NS_PER_MS, **ev}
        from engine.files.session import EventCfg

        try:
            EventCfg.model_validate(ev)
        except ValidationError as exc:
            raise config_error(exc) from None
        validate_event(ev, "")
        self._apply(ev)
        self.session.setdefault("events", []).append(ev)

    def _apply(self, ev: dict[str, Any]) -> None:
        action = ev["action"]
        handler = getattr(self, f"_edit_{action}", None)
        if handler is None:
            raise ConfigError("action", f"{shown(action)} cannot be applied live")
        handler(ev)
        self._edits += 1
        self.message(
            f"applied {action}: "
            + ", ".join(f"{k}={v}" for k, v in ev.items() if k not in ("t_ms", "action"))
        )

    def _workload(self, name: Any) -> Workload:
        for w in self.workloads:
            if w.name == name:
                return w
        raise ConfigError("workload", f"there is no workload named {shown(name)}")

    def _edit_set_workload(self, ev: dict[str, Any]) -> None:
        w = self._workload(ev.get("workload"))
        params = {k: v for k, v in ev.items() if k not in ("t_ms", "action", "workload")}
        w.set_params(**params)

    def _edit_add_workload(self, ev: dict[str, Any]) -> None:
        spec = {k: v for k, v in ev.items() if k not in ("t_ms", "action")}
        self._add_workload(spec, "workload")

    def _edit_delete_workload(self, ev: dict[str, Any]) -> None:
        w = self._workload(ev.get("workload"))
        self.workloads.remove(w)
        self.targets.pop(w.name, None)

    def _edit_pause_vcpu(self, ev: dict[str, Any]) -> None:
        self.paused_vcpus.add(self._vcpu(ev))

    def _edit_resume_vcpu(self, ev: dict[str, Any]) -> None:
        self.paused_vcpus.discard(self._vcpu(ev))

    def _vcpu(self, ev: dict[str, Any]) -> int:
        v = ev.get("vcpu")
        if not isinstance(v, int) or not 0 <= v < self.cfg.vcpus:
            raise ConfigError(
                "vcpu", f"must be a vCPU number below {self.cfg.vcpus}, got {shown(v)}"
            )
        return v

    def _edit_add_memslot(self, ev: dict[str, Any]) -> None:
        spec = {k: v for k, v in ev.items() if k not in ("t_ms", "action")}
        try:
            m = MemslotCfg.model_validate(spec).model_dump()
        except ValidationError as exc:
            raise config_error(exc) from None
        if m["id"] in self.vm.slots:
            raise ConfigError("id", memslot_exists(m["id"]))
        self._add_memslot(m, "")
        if self.migration is not None and self.migration.active:
            self.migration.add_slot(m["id"], all_dirty=True)
        self._rebind_workloads()

    def _edit_delete_memslot(self, ev: dict[str, Any]) -> None:
        sid = ev.get("id")
        st = self.vm.slots.get(sid)
        if st is None:
            raise KvmError("EINVAL", "id", f"there is no memslot {shown(sid)} to delete")
        self.vm.set_memslot(sid, st.slot.base, 0)
        self.slot_flags.pop(sid, None)
        if self.migration is not None:
            self.migration.remove_slot(sid)
        for w in [w for w in self.workloads if self.targets[w.name].get("slot") == sid]:
            self.workloads.remove(w)
            self.message(f"workload {w.name} stopped: its memslot {sid} was deleted")

    def _edit_move_memslot(self, ev: dict[str, Any]) -> None:
        sid = ev.get("id")
        st = self.vm.slots.get(sid)
        if st is None:
            raise KvmError("EINVAL", "id", f"there is no memslot {shown(sid)} to move")
        base = parse_size(ev.get("base"), "base")
        s = st.slot
        self.vm.set_memslot(sid, base, s.size, s.flags, s.backing, s.name)
        self._rebind_workloads()

    def _edit_set_memslot_flags(self, ev: dict[str, Any]) -> None:
        """KVM_SET_USER_MEMORY_REGION with new flags only (``KVM_MR_FLAGS_ONLY``).

        Logging switched off mid-migration: the bits KVM still holds are folded into the
        migration first (QEMU syncs a region before it stops logging it) and the slot is
        then untracked: every sync marks it all dirty (``Migration._untracked_words``), so it
        is pending, in the switchover threshold, and sent again at switchover; switched on,
        the slot is tracked from then on and every page is dirty once more.  READONLY cannot
        toggle.
        """
        sid = ev.get("id")
        st = self.vm.slots.get(sid)
        if st is None:
            raise KvmError("EINVAL", "id", f"there is no memslot {shown(sid)} to change")
        names = ev.get("flags", [])
        if not isinstance(names, list) or set(names) - {"log_dirty", "readonly"}:
            raise ConfigError("flags", 'must be a list of "log_dirty" and "readonly"')
        flags = slot_flags("log_dirty" in names, "readonly" in names)
        m = self.migration
        mig = m.slots.get(sid) if m is not None and m.active else None
        s = st.slot
        kvm_flags = flags if mig is not None else flags & ~KVM_MEM_LOG_DIRTY_PAGES
        if mig is not None and st.logging and not flags & KVM_MEM_LOG_DIRTY_PAGES:
            mig.bitmap |= DL.get_dirty_log(self.vm, sid)[0]
            m.remaining_pages_changed()
            # KVM frees the bitmap: a CLEAR of what the last GET reported would get ENOENT,
            # which QEMU ignores (kvm_log_clear_one_slot), so there is nothing left to CLEAR
            mig.clear_snapshot = None
        self.vm.set_memslot(sid, s.base, s.size, kvm_flags, s.backing, s.name)
        self.slot_flags[sid] = flags
        if mig is not None:
            tracked = self.vm.slots[sid].logging or bool(flags & KVM_MEM_READONLY)
            if tracked and not mig.tracked:
                DL.set_all(mig.bitmap, s.npages)
                m.remaining_pages_changed()
            elif mig.tracked and not tracked:
                self.message(
                    f"slot {sid} stopped logging: its writes cannot be tracked, so every sync "
                    "marks it all dirty"
                )
            mig.tracked = tracked

    def _rebind_workloads(self) -> None:
        for w in self.workloads:
            target = self.targets.get(w.name, {})
            if "slot" in target and target["slot"] in self.vm.slots:
                s = self.vm.slots[target["slot"]].slot
                w.bind(Region(s.base_gfn, s.npages))

    def _edit_harvest(self, ev: dict[str, Any]) -> None:
        """Harvest now (migration_bitmap_sync), whatever the policy's schedule says."""
        m = self.migration
        if m is None or m.phase != "iterating":
            raise ConfigError(
                "action", "harvest needs dirty logging on: a migration started, not switched over"
            )
        m.harvest_now(self.t_ns)

    def _edit_set_migration(self, ev: dict[str, Any]) -> None:
        if self.migration is None:
            raise ConfigError("migration", "this session has no migration (policy none)")
        data = self.migration.cfg.model_dump()
        data.update({k: v for k, v in ev.items() if k not in ("t_ms", "action")})
        try:
            self.migration.cfg = MigrationCfg.model_validate(data)
        except ValidationError as exc:
            raise config_error(exc, "migration") from None

    def _edit_cancel(self, ev: dict[str, Any]) -> None:
        """migrate_cancel: the migration stops, logging goes off, the guest goes on."""
        if self.migration is None or not self.migration.active:
            raise ConfigError("action", "there is no migration running to cancel")
        self.migration.cancel(self.t_ns, f"cancel event at {ev['t_ms']:g} ms")

    def _edit_set_tracking(self, ev: dict[str, Any]) -> None:
        changes = {k: v for k, v in ev.items() if k not in ("t_ms", "action")}
        allowed = {"strategy", "compare"}
        bad = set(changes) - allowed
        if bad:
            raise ConfigError(
                f"tracking.{sorted(bad)[0]}",
                "can only be changed before the run starts (live: strategy, compare)",
            )
        t = self.vm.tracking
        from dataclasses import replace

        new = replace(t, **changes)
        if new.strategy == "rmap" and self.vm.pgt.rmap is None:
            raise ConfigError(
                "tracking.strategy", "rmap needs the reverse map from the start of the run"
            )
        self.vm.tracking = new

    # -- harvest record (exports) ---------------------------------------------------------------

    def record_harvest(self, round_no: int, t_ns: int, reported: dict[int, np.ndarray]) -> None:
        if self.changes is not None:
            for sid, words in reported.items():  # re-protected, moved to the migration bitmap
                self.note_words(sid, np.flatnonzero(words))
        if self.vm.oplog is not None:
            self.vm.oplog.append(
                Harvest(round_no, t_ns, {s: frozen(w) for s, w in reported.items()})
            )
        if self.keep_harvests:
            self.harvests.append(
                {
                    "round": round_no,
                    "t_ns": t_ns,
                    "slots": {sid: w.copy() for sid, w in reported.items()},
                }
            )

    # -- results and snapshots ------------------------------------------------------------------

    def result(self) -> dict[str, Any]:
        base: dict[str, Any] = {"name": self.cfg.name, "t_ns": self.t_ns, "ticks": self.tick}
        if self.migration is not None:
            base.update(self.migration.result())
        # counters in name order: a Counter keeps the order its keys first appeared in, which
        # depends on how ticks were batched (the JSON must not: one timeline)
        base["vm_stats"] = dict(sorted(self.vm.stats.items()))
        base["tlbi"] = dict(sorted(self.vm.pgt.tlbi.items()))
        base["messages"] = list(self.messages)
        base["refused_events"] = list(self.refused_events)
        return base

    def _slot_views(self) -> tuple[S.SlotView, ...]:
        views, offset = [], 0
        for s in self.vm.memslots.sorted():
            views.append(S.SlotView(s.id, s.name, s.base_gfn, s.npages, s.flags, s.backing, offset))
            offset += s.npages
        return tuple(views)

    def _layer_index(self, gfn: np.ndarray) -> np.ndarray:
        """Index of each gfn in the layers (slots back to back in gfn order), -1 outside."""
        slots = self.vm.memslots.sorted()
        idx = self.vm.memslots.find(gfn)
        offsets = (
            np.cumsum([0] + [s.npages for s in slots])[:-1] if slots else np.zeros(0, np.int64)
        )
        bases = np.array([s.base_gfn for s in slots], dtype=np.int64)
        out = np.full(gfn.shape, -1, dtype=np.int64)
        ok = idx >= 0
        out[ok] = np.asarray(offsets, np.int64)[idx[ok]] + gfn[ok] - bases[idx[ok]]
        return out

    def snapshot(self, layers: Iterable[str] = ()) -> S.Snapshot:
        m = self.migration
        out = {name: self._frozen_layer(name) for name in layers}
        return S.Snapshot(
            t_ns=self.t_ns,
            tick=self.tick,
            round=m.round if m else 0,
            phase=m.phase if m else "idle",
            outcome=m.outcome if m else None,
            remaining_bytes=m.remaining_bytes() if m and m.phase != "idle" else 0,
            transferred_bytes=m.total_bytes if m else 0,
            dirty_pages_rate=m.dirty_pages_rate if m else 0.0,
            throttle_pct=m.throttle_pct if m else 0,
            expected_downtime_ms=m.expected_downtime_ms if m else 0.0,
            page_size=self.vm.page_size,
            slots=self._slot_views(),
            rounds=tuple(MappingProxyType(dict(r)) for r in (m.rounds if m else [])),
            layers=MappingProxyType(out),
            messages=tuple(self.messages[-200:]),
            messages_total=len(self.messages),
        )

    def _frozen_layer(self, name: str) -> np.ndarray:
        """A read-only layer for a snapshot.  ``layer`` always builds a new array (a product
        or a concatenation), so it is frozen in place rather than copied a second time."""
        layer = self.layer(name)
        layer.setflags(write=False)
        return layer

    def heat_state(self) -> tuple[np.ndarray, float]:
        """The write-heat array as kept (as of a reference time) and the factor that brings it
        to now: heat = array × factor.  The array is the simulation's own (read it before the
        next step); a view draws a large guest's heat from it without a scaled copy."""
        total = sum(s.npages for s in self.vm.memslots.sorted())
        if self.heat is None or self.heat.size != total:
            self.heat = np.full(total, 0.0, dtype=np.float32)  # written: no faults under the GIL
            self._heat_t = self.t_ns // HEAT_HALF_LIFE_NS * HEAT_HALF_LIFE_NS
        return self.heat, 0.5 ** ((self.t_ns - self._heat_t) / HEAT_HALF_LIFE_NS)

    def layer(self, name: str, out: np.ndarray | None = None) -> np.ndarray:
        """One per-page layer over all slots (see snapshot.LAYERS).

        ``out``, when it has the layer's shape and type, is filled instead of a new array: a
        live view renders a layer many times a second, and a fresh array of a large guest's
        pages each time costs more in page faults than building it.
        """
        slots = self.vm.memslots.sorted()
        if name == "heat":
            heat, decay = self.heat_state()
            return np.multiply(heat, np.float32(decay), out=_fits(out, heat.dtype, heat.size))
        parts = [self._slot_layer(name, s) for s in slots]
        if not parts:
            return np.zeros(0, dtype=np.uint8)
        total = sum(p.size for p in parts)
        return np.concatenate(parts, out=_fits(out, parts[0].dtype, total))

    def _slot_layer(self, name: str, s) -> np.ndarray:
        st = self.vm.slots[s.id]
        if name == "version":
            return st.version
        if name == "dirty":
            return self._slot_span("dirty", s, 0, s.npages)
        if name == "last_sent":
            m = self.migration.slots.get(s.id) if self.migration else None
            if m is None or m.last_sent is None:
                return np.full(s.npages, -1, dtype=LAST_SENT)
            return m.last_sent
        if name == "prot":
            return prot_layer(self.vm, s)
        raise ConfigError("layer", f"unknown layer {name!r}; known: {', '.join(S.LAYERS)}")

    # -- what a view of a large guest refreshes -----------------------------------------------

    def track_changes(self) -> PageChanges:
        """Start noting, from now on, the cells of the layers the run touches (a fresh
        record: a view calls this when it builds its picture from every page)."""
        self.changes = PageChanges(sum(s.npages for s in self.vm.memslots.sorted()))
        return self.changes

    def view_key(self, name: str) -> tuple:
        """What changes every page of layer ``name`` at once: the memslots (layout, flags,
        logging), live edits, the migration's phase (logging on, switchover), and for
        ``prot`` block splits and block maps, for ``heat`` the array's reference time.  A
        view whose key differs rebuilds from every page; otherwise it refreshes the cells
        ``changes`` noted."""
        m = self.migration
        slots = tuple(
            (s.id, s.base_gfn, s.npages, s.flags, self.vm.slots[s.id].logging)
            for s in self.vm.memslots.sorted()
        )
        key: tuple = (name, slots, self._edits, m.phase if m else "idle")
        if name == "prot":
            key += (self.pgt.splits, self.vm.stats["block_maps"])
        if name == "heat":
            self.heat_state()  # allocated (and its reference time set) before the key
            key += (self._heat_t,)
        return key

    def note_pages(self, slot_id: int, pages: np.ndarray) -> None:
        """Note pages of a slot (int64 page offsets in it) as changed, if a view asked."""
        if self.changes is not None:
            self.changes.mark(self._slot_offset(slot_id) + pages)

    def note_words(self, slot_id: int, words: np.ndarray) -> None:
        """Note bitmap words of a slot (int64 word indices) as changed, if a view asked."""
        if self.changes is not None:
            self.changes.mark_words(self._slot_offset(slot_id), words)

    def _slot_offset(self, slot_id: int) -> int:
        """Index of the slot's first page in the layers."""
        offset = 0
        for s in self.vm.memslots.sorted():
            if s.id == slot_id:
                return offset
            offset += s.npages
        raise KeyError(slot_id)

    def layer_at(self, name: str, idx: np.ndarray) -> np.ndarray:
        """Layer ``name`` at layer indices ``idx`` (int64, each in [0, total pages)), without
        building the layer; ``heat`` as kept (× heat_state's factor for now)."""
        if name == "heat":
            return self.heat_state()[0][idx]
        out = np.zeros(idx.shape, dtype=self._layer_dtype(name))
        offset = 0
        for s in self.vm.memslots.sorted():
            sel = np.flatnonzero((idx >= offset) & (idx < offset + s.npages))
            if sel.size:
                out[sel] = self._slot_values(name, s, idx[sel] - offset)
            offset += s.npages
        return out

    def layer_span(self, name: str, start: int, stop: int) -> np.ndarray:
        """Layer ``name`` over layer indices [start, stop), without building all of it;
        ``heat`` as kept (× heat_state's factor for now)."""
        if name == "heat":
            return self.heat_state()[0][start:stop]
        parts, offset = [], 0
        for s in self.vm.memslots.sorted():
            a, b = max(start - offset, 0), min(stop - offset, s.npages)
            if a < b:
                parts.append(self._slot_span(name, s, a, b))
            offset += s.npages
        if not parts:
            return np.zeros(0, dtype=self._layer_dtype(name))
        return np.concatenate(parts)

    def _layer_dtype(self, name: str) -> np.dtype:
        if name == "version":
            return next(iter(self.vm.slots.values())).version.dtype if self.vm.slots else np.uint32
        return np.dtype({"heat": np.float32, "last_sent": LAST_SENT}.get(name, np.uint8))

    def _slot_span(self, name: str, s, a: int, b: int) -> np.ndarray:
        """Pages [a, b) of a slot's layer (``dirty``: what the dirty log holds now, the KVM
        bitmap plus unsent migration bits, one byte a page: 0 clean, 1 dirty)."""
        if name == "prot":
            return prot_pages(self.vm, s.base_gfn + a, b - a)
        if name == "dirty":
            w0 = a >> 6
            words = self._dirty_words(self.vm.slots[s.id], slice(w0, (b + 63) >> 6))
            if words is None:
                return np.zeros(b - a, dtype=np.uint8)
            octets = np.ascontiguousarray(words, dtype="<u8").view(np.uint8)
            return np.unpackbits(octets, bitorder="little")[a - (w0 << 6) : b - (w0 << 6)]
        return self._slot_layer_part(name, s, slice(a, b), b - a)

    def _slot_values(self, name: str, s, pages: np.ndarray) -> np.ndarray:
        """A slot's layer at its pages ``pages`` (int64 offsets)."""
        if name == "prot":
            level, _, desc = self.pgt.lookup((s.base_gfn + pages) << self.vm.page_shift)
            index = _prot_index(desc)
            return np.where(level == 3, _PROT_PAGE[index], _PROT_BLOCK[index])
        if name == "dirty":
            words = self._dirty_words(self.vm.slots[s.id], pages >> 6)
            if words is None:
                return np.zeros(pages.size, dtype=np.uint8)
            return ((words >> (pages & 63).astype(np.uint64)) & np.uint64(1)).astype(np.uint8)
        return self._slot_layer_part(name, s, pages, pages.size)

    def _slot_layer_part(self, name: str, s, where, n: int) -> np.ndarray:
        """``n`` values of a kept per-page array (version, last_sent) at ``where``."""
        if name == "last_sent":
            m = self.migration.slots.get(s.id) if self.migration else None
            if m is None or m.last_sent is None:
                return np.full(n, -1, dtype=LAST_SENT)
        return self._slot_layer(name, s)[where]

    def _dirty_words(self, st, where) -> np.ndarray | None:
        """Words ``where`` of the dirty layer's bitmap: KVM's, or the unsent migration bits."""
        m = self.migration.slots.get(st.slot.id) if self.migration else None
        kvm = None if st.bitmap is None else st.bitmap[where]
        if m is None:
            return kvm
        return m.bitmap[where] if kvm is None else kvm | m.bitmap[where]


# protection code (snapshot.PROT_*) of a page or block descriptor, by VALID (bit 0), DBM moved
# down to bit 1 and S2AP W (bit 7): see _prot_index
def _prot_lut(ro: int, rw: int) -> np.ndarray:
    lut = np.zeros(256, dtype=np.uint8)
    for i in range(256):
        if i & 1:
            lut[i] = rw if i & 0x80 else (S.PROT_CLEAN_DBM if i & 2 else ro)
    return lut


_PROT_PAGE = _prot_lut(S.PROT_PAGE_RO, S.PROT_PAGE_RW)
_PROT_BLOCK = _prot_lut(S.PROT_BLOCK_RO, S.PROT_BLOCK_RW)
_PROT_ROWS = 256  # last-level tables per pass (the temporaries stay in cache)


def _prot_index(d: np.ndarray) -> np.ndarray:
    """VALID, DBM and S2AP W of each descriptor packed into one byte (bits 0, 1 and 7)."""
    from engine.stage2 import descriptor as D

    x = d & np.uint64(D.VALID | D.S2AP_W | D.DBM)
    x |= x >> np.uint64((D.DBM.bit_length() - 1) - 1)
    return x.astype(np.uint8)


def prot_layer(vm: VM, s) -> np.ndarray:
    """Protection code of every page of a slot (snapshot.PROT_*): see prot_pages."""
    return prot_pages(vm, s.base_gfn, s.npages)


def prot_pages(vm: VM, base_gfn: int, npages: int) -> np.ndarray:
    """Protection code of pages [base_gfn, base_gfn + npages) (snapshot.PROT_*, uint8).

    Pages under a last-level table are coded straight from that table's entries, a table
    at a time (a leaf table holds one entry per page, in page order); a region without one
    is a block or unmapped, and its code, from one walk, covers all its pages.
    """
    E, pgt = vm.pgt.E, vm.pgt
    first, last = base_gfn // E, (base_gfn + npages - 1) // E
    regions = np.arange(first, last + 1, dtype=np.int64)
    ipa = regions * E << vm.page_shift
    tables = pgt.last_level_tables(ipa)
    out = np.empty((regions.size, E), dtype=np.uint8)
    rows = np.flatnonzero(tables >= 0)
    for lo in range(0, rows.size, _PROT_ROWS):
        r = rows[lo : lo + _PROT_ROWS]
        out[r] = _PROT_PAGE[_prot_index(pgt.pool[tables[r]])]
    rest = np.flatnonzero(tables < 0)
    if rest.size:
        _, _, desc = pgt.lookup(ipa[rest])  # a block, or invalid (code 0)
        out[rest] = _PROT_BLOCK[_prot_index(desc)][:, None]
    start = base_gfn - first * E
    return out.reshape(-1)[start : start + npages]


def _prefix(exc: DirtylogError, field: str) -> DirtylogError:
    if isinstance(exc, ConfigError) and field:
        return ConfigError(f"{field}.{exc.field}" if exc.field else field, exc.rule)
    return exc


def _fits(out: np.ndarray | None, dtype: np.dtype, size: int) -> np.ndarray | None:
    """``out`` if a flat result of ``size`` values of ``dtype`` can be written into it."""
    if out is None or out.dtype != dtype or out.shape != (size,) or not out.flags.writeable:
        return None
    return out

"""Replay an engine run's KVM operations on the host's real KVM and compare every harvest.

The input is the engine's operation log (``engine.kvm.oplog``), in order.  Each record is
done on a real VM (``machine.Machine``) in the same order: memslot changes (logging on/off
included; a populated slot is read once by the guest, which maps it without dirtying it),
each batch of guest accesses (each vCPU's accesses on its own real vCPU, in order), GET (the
returned bitmap compared with the engine's at once), CLEAR with the engine's arguments, ring
collect and KVM_RESET_DIRTY_RINGS.  At each harvest marker the pages the real KVM reported
since the previous one (GET results, or every ring entry collected, those of its own
ring-full exits included) are compared with what the engine reported.

Ring-full exits are not replayed: each batch is run whole, the real KVM takes its own
ring-full exits and ``Machine.run`` collects and resets at each (the engine's reaps and
re-issued accesses at its ring-full exits are counted, not done).  Real KVM exits *before*
the faulting write is retried, so the store faults and pushes its page again after the reset;
the engine models that too, so faults, ring-full exits and ring entries are compared as
they are.

x86 (this backend) write-protects exactly the set bits of a CLEAR or GET mask (rmap); arm64
re-protects each word's [ffs, fls] span.  Dirty sets agree for every strategy; fault counts
agree with the engine's ``rmap`` and ``masked-skip`` strategies only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from engine.host.errors import KvmUnavailable
from engine.host.machine import PAGE, READ_FLAG, Machine
from engine.kvm import oplog as OL
from engine.kvm.dirtylog import bitmap_pages
from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from engine.util.errors import ConfigError

MAX_GUEST_BYTES = 4 << 30  # the most guest memory a replay maps at once
SHOW_PAGES = 16  # pages listed per side when a harvest differs
FAULT_EXACT_STRATEGIES = ("rmap", "masked-skip")
X86_NOTE = (
    "x86 write-protects exactly the set bits of a mask (rmap); arm64 re-protects each word's "
    "[ffs, fls] span: dirty sets agree for every strategy, fault counts agree with the "
    "engine's rmap and masked-skip strategies only"
)


@dataclass(frozen=True)
class ReplaySetup:
    """What the real VM must be created with (the session's tracking and vCPUs)."""

    mode: str  # bitmap, manual-clear, ring
    initially_set: bool
    ring_entries: int
    vcpus: int
    page_size: int
    strategy: str


@dataclass
class SlotDiff:
    """One slot's harvest: page counts and the pages only one side reported (first few)."""

    engine_pages: int
    real_pages: int
    only_engine: list[int]
    only_real: list[int]
    n_only_engine: int
    n_only_real: int

    @property
    def identical(self) -> bool:
        return not (self.n_only_engine or self.n_only_real)


@dataclass
class RoundReport:
    """One harvest compared, with real (measured on this host) and modelled counts/times."""

    round: int
    t_ns: int
    slots: dict[int, SlotDiff] = field(default_factory=dict)
    gets: int = 0
    gets_different: int = 0
    faults_model: int = 0
    faults_real: int = 0
    ring_full_model: int = 0
    ring_full_real: int = 0
    ring_entries_model: int = 0
    ring_entries_real: int = 0
    clear_calls: int = 0
    get_model_ns: float = 0.0
    get_real_ns: int = 0
    clear_model_ns: float = 0.0
    clear_real_ns: int = 0
    reset_model_ns: float = 0.0
    reset_real_ns: int = 0
    memslot_model_ns: float = 0.0
    memslot_real_ns: int = 0
    guest_real_ns: int = 0

    @property
    def identical(self) -> bool:
        return self.gets_different == 0 and all(d.identical for d in self.slots.values())

    def as_dict(self) -> dict:
        d = asdict(self)
        d["slots"] = {
            str(k): {**asdict(v), "identical": v.identical} for k, v in self.slots.items()
        }
        d["identical"] = self.identical
        return d


@dataclass
class ReplayReport:
    """Every harvest compared, plus what could not be compared and why."""

    setup: ReplaySetup
    rounds: list[RoundReport]
    host: dict
    notes: list[str]
    content_mismatches: int = 0
    cancelled: bool = False

    @property
    def identical(self) -> bool:
        return all(r.identical for r in self.rounds) and not self.content_mismatches

    def as_dict(self) -> dict:
        return {
            "identical": self.identical,
            "harvests": len(self.rounds),
            "harvests_different": sum(not r.identical for r in self.rounds),
            "content_mismatches": self.content_mismatches,
            "cancelled": self.cancelled,
            "setup": asdict(self.setup),
            "host": self.host,
            "notes": self.notes,
            "rounds": [r.as_dict() for r in self.rounds],
            "units": "times in ns; *_real measured on this host's KVM (each ioctl includes "
            "Python's ~2-4 µs), *_model modelled by the engine",
        }


def emulation_note(before: dict[str, int], after: dict[str, int]) -> list[str]:
    """A warning when the guest writer ran in KVM's instruction emulator (binary stats:
    ``insn_emulation`` counts every emulated instruction; natively it counts about one per
    batch, the end-of-batch ``out``)."""
    emulated = after.get("insn_emulation", 0) - before.get("insn_emulation", 0)
    exits = after.get("exits", 0) - before.get("exits", 0)
    if emulated > max(1000, exits):
        return [
            f"the guest writer ran in KVM's instruction emulator ({emulated:,} emulated "
            "instructions): dirty sets are still right, but no write-protection fault "
            "happened, so fault counts and times mean nothing here"
        ]
    return []


def check_replayable(setup: ReplaySetup, ops: Sequence[OL.Op]) -> None:
    """Refuse, with one sentence naming the field, what the host's KVM cannot replay."""
    if setup.page_size != PAGE:
        raise ConfigError(
            "geometry.granule", "the host's KVM tracks 4 KiB pages; replay needs a 4KiB granule"
        )
    if setup.mode not in ("bitmap", "manual-clear", "ring"):
        raise ConfigError(
            "tracking.mode", f"{setup.mode} (hardware dirty state) has no x86 counterpart to replay"
        )
    live: dict[int, int] = {}
    for op in ops:
        if isinstance(op, OL.SetMemslot):
            if op.slot >= 32000:
                raise ConfigError("memslots.id", f"slot id {op.slot} is too large to replay")
            live[op.slot] = op.npages * PAGE
            if op.npages == 0:
                live.pop(op.slot)
            total = sum(live.values())
            if total > MAX_GUEST_BYTES:
                raise ConfigError(
                    "memslots",
                    f"the replay would map {total / 2**30:.1f} GiB of guest memory; "
                    f"at most {MAX_GUEST_BYTES >> 30} GiB can be replayed",
                )
        elif isinstance(op, OL.Access) and setup.mode == "ring" and bool((op.vcpu < 0).any()):
            raise ConfigError(
                "workloads",
                "writes with no running vCPU (vcpu -1) need a ring's backup bitmap, which x86 "
                "does not have (DIRTY_LOG_RING_WITH_BITMAP = 0)",
            )


def gpa_shift(ops: Sequence[OL.Op], lo: int, hi: int) -> int:
    """Offset added to the engine's IPAs so that every slot lies in the guest's [lo, hi)."""
    spans = [
        (op.base_gfn * PAGE, (op.base_gfn + op.npages) * PAGE)
        for op in ops
        if isinstance(op, OL.SetMemslot) and op.npages
    ]
    if not spans:
        return 0
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    if first >= lo and last <= hi:
        return 0
    shift = (1 << 30) - (first & ~((2 << 20) - 1))
    if last + shift > hi:
        raise ConfigError(
            "memslots",
            f"the slots span {(last - first) / 2**30:.1f} GiB of addresses; the "
            f"replay guest maps {hi >> 30} GiB",
        )
    return shift


class Replayer:
    """Drives one Machine through an operation log (see the module docstring)."""

    def __init__(self, setup: ReplaySetup, ops: Sequence[OL.Op]) -> None:
        check_replayable(setup, ops)
        self.setup = setup
        self.ops = ops
        self.m: Machine | None = None
        self.shift = 0
        self.slots: dict[int, tuple[int, int, int]] = {}  # engine slot: base_gfn, npages, flags
        self.since_harvest: dict[int, list[np.ndarray]] = {}  # engine slot: real page offsets
        self.rounds: list[RoundReport] = []
        self.cur = RoundReport(0, 0)
        self.stats0: dict[str, int] = {}
        self.versions: dict[int, np.ndarray] = {}  # writes the engine applied per slot page

    def run(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> ReplayReport:
        s = self.setup
        with Machine(
            nr_vcpus=s.vcpus,
            manual=s.mode == "manual-clear",
            initially_set=s.initially_set,
            ring_entries=s.ring_entries if s.mode == "ring" else 0,
        ) as m:
            self.m = m
            self.shift = gpa_shift(self.ops, m.layout.data_min_gpa, m.layout.data_max_gpa)
            self.stats0 = m.vcpu_stats()
            first = dict(self.stats0)
            cancelled = False
            for i, op in enumerate(self.ops):
                if cancel is not None and cancel.is_set():
                    cancelled = True
                    break
                self._do(op)
                if progress is not None and (i % 64 == 0 or i == len(self.ops) - 1):
                    progress(i + 1, len(self.ops))
            mismatches = 0 if cancelled else self._compare_content()
            notes = [X86_NOTE, *emulation_note(first, m.vcpu_stats())]
            self.m = None
        return ReplayReport(s, self.rounds, {}, notes, mismatches, cancelled)

    # -- one operation ---------------------------------------------------------------------------

    def _do(self, op: OL.Op) -> None:
        m = self.m
        assert m is not None
        if isinstance(op, OL.SetMemslot):
            self._memslot(op)
            self.cur.memslot_model_ns += op.model_ns
            self.cur.memslot_real_ns += m.last_ns
        elif isinstance(op, OL.Access):
            self._access(op)
        elif isinstance(op, OL.GetLog):
            if self.setup.mode != "ring":  # GET in ring mode: the backup bitmap, ENXIO on x86
                self._get(op)
        elif isinstance(op, OL.ClearLog):
            for first, num, mask in op.calls:
                m.clear_dirty_log(op.slot + 1, first, num, mask)
                self.cur.clear_real_ns += m.last_ns
            self.cur.clear_calls += len(op.calls)
            self.cur.clear_model_ns += op.model_ns
        elif isinstance(op, OL.RingCollect):
            self.cur.ring_entries_model += int(op.offsets.size)
            if op.at_ring_full:
                return  # the real KVM takes its own ring-full exits (Machine.run reaps them)
            slots, offsets = m.collect_rings()
            self.cur.ring_entries_real += int(offsets.size)
            for real in np.unique(slots).tolist():
                self.since_harvest.setdefault(real - 1, []).append(offsets[slots == real])
        elif isinstance(op, OL.RingReset):
            if op.at_ring_full:
                self.cur.reset_model_ns += op.model_ns
                return
            m.reset_rings()
            self.cur.reset_real_ns += m.last_ns
            self.cur.reset_model_ns += op.model_ns
        elif isinstance(op, OL.Harvest):
            self._harvest(op)

    def _memslot(self, op: OL.SetMemslot) -> None:
        m = self.m
        real = op.slot + 1
        gpa = op.base_gfn * PAGE + self.shift
        flags = op.flags & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY)
        old = self.slots.get(op.slot)
        if op.npages == 0:
            if old is not None:
                m.delete_slot(real)
                self.slots.pop(op.slot)
                self.versions.pop(op.slot, None)
            return
        if old is None:
            m.add_slot(real, gpa, op.npages * PAGE, flags, hugepage=op.backing >= 2 << 20)
            self.versions[op.slot] = np.zeros(op.npages, dtype=np.int64)
            if op.populate:
                self._populate(op.slot, gpa, op.npages, flags)
        elif old[0] != op.base_gfn:
            m.move_slot(real, gpa)
        elif old[2] != flags:
            m.set_flags(real, flags)
        self.slots[op.slot] = (op.base_gfn, op.npages, flags)

    def _populate(self, slot: int, gpa: int, npages: int, flags: int) -> None:
        """The guest touches every page, as the engine's ``populate`` maps them: writable
        (a write: not logged yet, and counted in the page's expected content) when the slot
        is not logging, read-only (a read, which dirties nothing) when it is.  Its faults
        belong to no round and are left out of the counts."""
        m = self.m
        mark, before = m.last_ns, m.vcpu_stats().get("pf_fixed", 0)
        addr = gpa + PAGE * np.arange(npages, dtype=np.uint64)
        if flags & (KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY):
            m.run(0, addr | np.uint64(READ_FLAG))
        else:
            m.run(0, addr)
            self.versions[slot] += 1
        m.last_ns = mark
        self.stats0["pf_fixed"] += m.vcpu_stats().get("pf_fixed", 0) - before

    def _access(self, op: OL.Access) -> None:
        self.cur.faults_model += op.faults
        self.cur.ring_full_model += len(op.ring_full)
        # a real vCPU retries on its own after its ring-full exit: only the rest is run
        gfn, write, vcpu = op.gfn[op.retried :], op.write[op.retried :], op.vcpu[op.retried :]
        if not gfn.size:
            return
        keep = np.zeros(gfn.size, dtype=bool)
        addr = np.zeros(gfn.size, dtype=np.uint64)
        for sid, (base, npages, flags) in self.slots.items():
            inside = (gfn >= base) & (gfn < base + npages)
            if flags & KVM_MEM_READONLY:
                inside &= ~write  # a write there is an exit to user space, not applied
            keep |= inside
            addr[inside] = ((gfn[inside] - base) * PAGE + base * PAGE + self.shift).astype(
                np.uint64
            )
            w = inside & write
            if w.any():
                self.versions[sid] += np.bincount(gfn[w] - base, minlength=npages)
        addr[~write] |= np.uint64(READ_FLAG)
        for v in np.unique(vcpu[keep]).tolist():
            sel = keep & (vcpu == v)
            res = self.m.run(max(v, 0), addr[sel])
            self.cur.ring_full_real += res.ring_full_exits
            self.cur.guest_real_ns += res.wall_ns

    def _get(self, op: OL.GetLog) -> None:
        real = self.m.get_dirty_log(op.slot + 1)
        self.cur.get_real_ns += self.m.last_ns
        self.cur.get_model_ns += op.model_ns
        self.cur.gets += 1
        if not np.array_equal(real, op.bitmap):
            self.cur.gets_different += 1
        self.since_harvest.setdefault(op.slot, []).append(bitmap_pages(real))

    def _harvest(self, op: OL.Harvest) -> None:
        cur = self.cur
        cur.round, cur.t_ns = op.round, op.t_ns
        for sid, words in op.reported.items():
            eng = bitmap_pages(words)
            parts = self.since_harvest.pop(sid, [])
            real = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
            real = real[real < words.size * 64]
            only_e = np.setdiff1d(eng, real)
            only_r = np.setdiff1d(real, eng)
            cur.slots[sid] = SlotDiff(
                int(eng.size),
                int(real.size),
                only_e[:SHOW_PAGES].tolist(),
                only_r[:SHOW_PAGES].tolist(),
                int(only_e.size),
                int(only_r.size),
            )
        stats = self.m.vcpu_stats()
        cur.faults_real = stats.get("pf_fixed", 0) - self.stats0.get("pf_fixed", 0)
        self.stats0 = stats
        self.rounds.append(cur)
        self.since_harvest = {}
        self.cur = RoundReport(0, 0)

    def _compare_content(self) -> int:
        """Pages whose real write count differs from the writes the engine applied (plus the
        populating write)."""
        bad = 0
        for sid, want in self.versions.items():
            bad += int(np.count_nonzero(self.m.content(sid + 1) != want.astype(np.uint32)))
        return bad


def record_run(sim, progress: Callable[[object], None] | None = None) -> list[OL.Op]:
    """Run a simulation (``engine.migration.simulation.Simulation``) to its end with its
    operation log on; returns the log.  The slots it created before the log existed come
    first, as SetMemslot records (populated as the session says).  ``progress(sim)`` is
    passed to ``sim.run``."""
    populate = {m.id: m.populate for m in sim.cfg.memslots}
    sim.vm.oplog = [
        OL.SetMemslot(s.id, s.base_gfn, s.npages, s.flags, s.backing, populate.get(s.id, True))
        for s in sim.vm.memslots.sorted()
    ]
    try:
        sim.run(progress)
        return sim.vm.oplog
    finally:
        sim.vm.oplog = None


def setup_of(sim) -> ReplaySetup:
    """The real VM a simulation's replay needs (its tracking, vCPUs and page size)."""
    t = sim.vm.tracking
    return ReplaySetup(
        t.mode, t.initially_set, t.ring_entries, sim.cfg.vcpus, sim.vm.page_size, t.strategy
    )


def replay(
    setup: ReplaySetup,
    ops: Sequence[OL.Op],
    progress: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> ReplayReport:
    """Replay ``ops`` on a fresh real VM; raises KvmUnavailable or ConfigError (bad input)."""
    from engine.host.device import probe, unavailable_reason

    reason = unavailable_reason()
    if reason:
        raise KvmUnavailable(reason)
    t0 = time.perf_counter()
    report = Replayer(setup, ops).run(progress, cancel)
    info = probe()
    report.host = {"arch": info.arch, "mmu": info.mmu, "wall_s": time.perf_counter() - t0}
    if setup.strategy not in FAULT_EXACT_STRATEGIES:
        report.notes.append(
            f"strategy {setup.strategy}: fault counts are arm64's [ffs, fls] re-protection and "
            "may exceed x86's; compare faults with rmap or masked-skip"
        )
    return report

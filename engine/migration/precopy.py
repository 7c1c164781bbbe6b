"""The pre-copy loop, as QEMU runs it (or with Xen's stop rules), over the simulated VM.

Setup enables dirty logging and counts every page dirty (QEMU's migration bitmap starts all
ones), so the first pass sends all of RAM.  Each tick the sender sends what the bandwidth
allows, in address order from where it stopped.  When the pages still to send fit in
bandwidth × downtime limit, the KVM log is harvested (``migration_bitmap_sync``) and, if what
is dirty then still fits, the guest is stopped and the rest is sent (the downtime).  A
harvest's modelled cost holds the sender up while the guest keeps running.  Each page's
version is copied to the destination when it is sent, so the end state can be verified.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.files.session import MigrationCfg
from engine.kvm import dirtylog as DL
from engine.kvm.dirtylog import OpStats
from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES
from engine.util.arrays import expand_runs, unique_fast

U64 = np.uint64
NS = 1_000_000_000
PERIOD_NS = NS  # auto-converge looks at most once per simulated second


@dataclass
class SlotMig:
    """The migration's view of one memslot (a QEMU RAMBlock)."""

    bitmap: np.ndarray  # migration bitmap: pages still to send (KVM word layout)
    dest: np.ndarray  # destination page versions
    last_sent: np.ndarray | None  # round each page was last sent in (-1 never), for the heat map
    clear_snapshot: np.ndarray | None = None  # manual-clear: bits of the last GET, not yet cleared
    tracked: bool = True  # dirty logging on: writes are caught; else resent in full at stop


@dataclass
class RoundAcc:
    """Counters accumulated during the current round."""

    t_start_ns: int
    transferred_bytes: int = 0
    pages_sent: int = 0
    faults: int = 0
    ring_full_exits: int = 0
    active_ns: float = 0.0
    wall_vcpu_ns: float = 0.0
    harvest: OpStats = field(default_factory=lambda: OpStats("harvest"))
    tlbi0: Counter[str] = field(default_factory=Counter)


class Migration:
    """One pre-copy migration of the simulation's VM."""

    def __init__(self, sim, cfg: MigrationCfg, clear_chunk: int, track_last_sent: bool = True):
        self.sim = sim
        self.vm = sim.vm
        self.cfg = cfg
        self.page = self.vm.page_size
        self.clear_chunk_pages = max(64, clear_chunk // self.page // 64 * 64)
        self.track_last_sent = track_last_sent
        self.phase = "idle"
        self.outcome: str | None = None
        self.reason = ""
        self.slots: dict[int, SlotMig] = {}
        self.round = 0  # dirty-sync-count
        self.rounds: list[dict[str, object]] = []
        self.throttle_pct = 0
        self.busy_until_ns = 0
        self.carry_bytes = 0.0
        self.cursor = (0, 0)
        self.t_setup_ns = self.t_start_ns = self.t_stop_ns = self.t_end_ns = 0
        self.setup_ns = 0.0
        self.total_bytes = 0
        self.downtime_ns = 0.0
        self.ring_pending: dict[int, list[np.ndarray]] = {}
        self.acc: RoundAcc | None = None
        self.period = {"t": 0, "xfer": 0, "dirty": 0, "high": 0}
        self.dirty_pages_rate = 0.0
        self.expected_downtime_ms = float(cfg.downtime_limit_ms)
        self.verification: dict[str, object] | None = None
        self.last_harvest: dict[int, np.ndarray] = {}
        self._remaining: int | None = None
        self.next_harvest_ns = 0  # policy fixed: when the next harvest is due
        self.clears: list[dict[str, object]] = []  # CLEAR calls made, kept for --export-bitmaps

    # -- helpers ------------------------------------------------------------------------------

    @property
    def threshold_bytes(self) -> float:
        """bandwidth × downtime limit: what may stay dirty at switchover."""
        return self.cfg.bandwidth * self.cfg.downtime_limit_ms / 1000.0

    def remaining_pages(self) -> int:
        """Pages still to send (kept as a count: recounting 16 M bits per tick is too slow)."""
        if self._remaining is None:
            self._remaining = sum(DL.popcount(m.bitmap) for m in self.slots.values())
        return self._remaining

    def remaining_bytes(self) -> int:
        return self.remaining_pages() * self.page

    @property
    def active(self) -> bool:
        return self.phase in ("setup", "iterating", "stop-and-copy")

    @property
    def guest_paused(self) -> bool:
        return self.phase in ("stop-and-copy", "done") and self.outcome != "not-converged"

    # -- setup --------------------------------------------------------------------------------

    def start(self, t_ns: int) -> None:
        """ram_save_setup: enable logging, every page dirty, first sync."""
        self.phase = "iterating"
        self.t_start_ns = t_ns
        before = len(self.vm.op_log)
        for st in self.vm.slots.values():
            self.add_slot(st.slot.id, all_dirty=True)
        enable_cost = sum(op.model_ns(self.vm.costs) for op in self.vm.op_log[before:])
        self.setup_ns = enable_cost
        self.busy_until_ns = t_ns + int(enable_cost)
        self.round = 1
        self.next_harvest_ns = t_ns + int(self.cfg.harvest_every_ms * 1e6)
        self.acc = RoundAcc(t_ns, tlbi0=Counter(self.vm.pgt.tlbi))
        self.acc.harvest.add(_merge(self.vm.op_log[before:]))
        self.period = {"t": t_ns, "xfer": 0, "dirty": 0, "high": 0}
        self.sim.message(f"migration started: {self.remaining_pages():,} pages to send")

    def add_slot(self, slot_id: int, all_dirty: bool = True) -> None:
        """A RAMBlock joins the migration: logging on (if the slot asks for it), all dirty."""
        st = self.vm.slots[slot_id]
        s = st.slot
        want = self.sim.slot_flags.get(s.id, s.flags)
        if want & KVM_MEM_LOG_DIRTY_PAGES and not st.logging:
            self.vm.set_memslot(s.id, s.base, s.size, want, s.backing, s.name)
        nwords = st.nwords
        bitmap = np.zeros(nwords, dtype=U64)
        if all_dirty:
            DL.set_all(bitmap, s.npages)
        tracked = st.logging or st.slot.readonly
        if not tracked:
            self.sim.message(
                f"slot {s.id} has no log_dirty flag: its writes cannot be tracked, so it is sent "
                "again in full during stop-and-copy"
            )
        last = np.full(s.npages, -1, dtype=np.int16) if self.track_last_sent else None
        self.slots[s.id] = SlotMig(bitmap, np.zeros(s.npages, dtype=np.uint32), last, None, tracked)
        self._remaining = None

    def remaining_pages_changed(self) -> None:
        """A slot's migration bitmap was changed from outside (a live edit): recount."""
        self._remaining = None

    def remove_slot(self, slot_id: int) -> None:
        self.slots.pop(slot_id, None)
        self._remaining = None
        self.ring_pending.pop(slot_id, None)

    # -- one tick -----------------------------------------------------------------------------

    def tick(self, t0: int, t1: int) -> None:
        """After the guest's writes of (t0, t1]: send, and harvest/switch over as due."""
        if self.phase != "iterating":
            return
        if self.cfg.policy == "fixed":
            self._fixed_step(t1)
            return
        self._send(t0, t1)
        if self.cfg.policy == "xen":
            self._xen_step(t1)
        else:
            self._qemu_step(t1)

    def _qemu_step(self, t: int) -> None:
        if t < self.busy_until_ns or self.remaining_bytes() > self.threshold_bytes:
            self._check_limits(t)
            return
        self.sync(t)
        if self.remaining_bytes() <= self.threshold_bytes:
            fits = self.remaining_bytes()
            self.reason = (
                f"{fits:,} dirty bytes fit in bandwidth × downtime limit = "
                f"{self.threshold_bytes:,.0f} bytes"
            )
            self.stop_and_copy(t)
        else:
            self._check_limits(t)

    def _xen_step(self, t: int) -> None:
        if t < self.busy_until_ns or self.remaining_pages() > 0:
            self._check_limits(t)
            return
        dirty = self.sync(t)
        total_pages = sum(st.slot.npages for st in self.vm.slots.values())
        if self.round > self.cfg.xen_max_rounds:
            self.reason = f"xen: {self.cfg.xen_max_rounds} rounds done"
        elif dirty < self.cfg.xen_min_pages:
            self.reason = f"xen: {dirty} pages dirty, fewer than {self.cfg.xen_min_pages}"
        elif self.total_bytes > self.cfg.xen_max_factor * total_pages * self.page:
            self.reason = (
                f"xen: {self.total_bytes:,} bytes sent, over {self.cfg.xen_max_factor:g}× memory"
            )
        else:
            self._check_limits(t)
            return
        self.stop_and_copy(t)

    def _fixed_step(self, t: int) -> None:
        """Policy ``fixed``: harvest every ``harvest_every_ms``, never send or switch over
        (dirty_log_test's loop); stop at max_rounds or timeout_s."""
        every = int(self.cfg.harvest_every_ms * 1e6)
        if t >= self.next_harvest_ns:
            self.harvest_now(t)
            while self.next_harvest_ns <= t:
                self.next_harvest_ns += every
        if self.round > self.cfg.max_rounds or t - self.t_start_ns >= self.cfg.timeout_s * NS:
            self.phase = "done"
            self.outcome = "harvest-only"
            self.reason = f"fixed: harvested every {self.cfg.harvest_every_ms:g} ms, no migration"
            self.t_end_ns = t
            self.sim.message(self.reason)

    def harvest_now(self, t: int) -> int:
        """A harvest now (the ``harvest`` event, or policy ``fixed``): migration_bitmap_sync.

        With policy ``fixed`` nothing is ever sent, so in manual-clear mode what GET returned
        is cleared at once, a ``clear_chunk`` at a time (GET then CLEAR, as dirty_log_test
        does), and the migration bitmap is emptied.  Returns the dirty pages harvested.
        """
        dirty = self.sync(t)
        if self.cfg.policy == "fixed":
            for sid, m in self.slots.items():
                if self.vm.tracking.manual and m.clear_snapshot is not None:
                    pages = DL.bitmap_pages(m.clear_snapshot)
                    if pages.size:
                        self._clear_before_send(sid, m, pages)
                m.bitmap[:] = 0
            self._remaining = 0
        return dirty

    def _check_limits(self, t: int) -> None:
        if self.phase != "iterating":
            return
        if self.round > self.cfg.max_rounds:
            self._give_up(t, f"not converged after {self.cfg.max_rounds} rounds (max_rounds)")
        elif t - self.t_start_ns >= self.cfg.timeout_s * NS:
            self._give_up(t, f"not converged within {self.cfg.timeout_s:g} s (timeout)")

    def _give_up(self, t: int, reason: str) -> None:
        self._close_round(t, dirty_pages=0)
        self.phase = "done"
        self.outcome = "not-converged"
        self.reason = reason
        self.t_end_ns = t
        self.sim.message(f"migration {reason}; the guest keeps running on the source")

    def quiet_ticks(self, t: int, tick: int) -> int:
        """Ticks from ``t`` during which no harvest, switchover or limit can happen.

        What is left to send falls by at most one tick's bandwidth per tick, so it cannot
        reach the harvest threshold (QEMU: bandwidth × downtime limit; Xen: zero) sooner.
        """
        if self.cfg.policy == "fixed":
            ticks = -(
                -(min(self.next_harvest_ns, self.t_start_ns + self.cfg.timeout_s * NS) - t) // tick
            )
            return max(1, int(ticks))
        per_tick = int(self.cfg.bandwidth * tick / NS // self.page) + 2
        floor = 0 if self.cfg.policy == "xen" else int(self.threshold_bytes // self.page)
        ticks = (self.remaining_pages() - floor) // per_tick
        deadline = self.t_start_ns + self.cfg.timeout_s * NS
        ticks = min(ticks, int((deadline - t) // tick))
        return max(1, ticks)

    # -- sending ------------------------------------------------------------------------------

    def _send(self, t0: int, t1: int) -> None:
        start = max(t0, min(self.busy_until_ns, t1))
        self.carry_bytes += self.cfg.bandwidth * (t1 - start) / NS
        npages = int(self.carry_bytes // self.page)
        if npages <= 0:
            return
        sent = self._send_pages(npages)
        self.carry_bytes -= sent * self.page
        if sent < npages:
            self.carry_bytes = 0.0  # nothing more to send: unused bandwidth is not banked

    def _send_pages(self, budget: int) -> int:
        """Send up to ``budget`` dirty pages from the cursor on, wrapping once."""
        order = sorted(self.slots)
        if not order:
            return 0
        sent = 0
        slot_i = order.index(self.cursor[0]) if self.cursor[0] in self.slots else 0
        offset = self.cursor[1] if self.cursor[0] in self.slots else 0
        for step in range(len(order) + 1):
            sid = order[(slot_i + step) % len(order)]
            lo = offset if step == 0 else 0
            hi = None if step < len(order) else offset  # the wrap ends where we began
            got, next_off = self._send_from(sid, lo, hi, budget - sent)
            sent += got
            if sent >= budget:
                self.cursor = (sid, next_off)
                break
        else:
            self.cursor = (order[slot_i], offset)
        return sent

    def _send_from(self, sid: int, lo: int, hi: int | None, budget: int) -> tuple[int, int]:
        """Send dirty pages of one slot from page ``lo``; returns (sent, next offset)."""
        m = self.slots[sid]
        npages = m.dest.size
        hi = npages if hi is None else hi
        pages = DL.next_set_bits(m.bitmap, lo, hi, budget)
        if not pages.size:
            return 0, hi
        if self.vm.tracking.manual and m.clear_snapshot is not None:
            self._clear_before_send(sid, m, pages)
        self._clear_bits(m.bitmap, pages)
        if self._remaining is not None:
            self._remaining -= int(pages.size)
        m.dest[pages] = self.vm.slots[sid].version[pages]
        if m.last_sent is not None:
            m.last_sent[pages] = min(self.round, 32767)
        nbytes = int(pages.size) * self.page
        self.total_bytes += nbytes
        self.period["xfer"] += nbytes
        if self.acc:
            self.acc.transferred_bytes += nbytes
            self.acc.pages_sent += int(pages.size)
        return int(pages.size), int(pages[-1]) + 1

    @staticmethod
    def _clear_bits(bitmap: np.ndarray, pages: np.ndarray) -> None:
        DL.clear_bits(bitmap, pages)

    def _clear_before_send(self, sid: int, m: SlotMig, pages: np.ndarray) -> None:
        """QEMU's clear_bmap: KVM_CLEAR_DIRTY_LOG a chunk the first time one of its pages goes."""
        chunk = self.clear_chunk_pages
        snap = m.clear_snapshot
        assert snap is not None
        npages = m.dest.size
        first = unique_fast(pages // chunk) * chunk
        w0 = first // 64
        nw = np.minimum((first + chunk + 63) // 64, snap.size) - w0
        words = expand_runs(w0, nw)
        mask = snap[words]
        ends = np.cumsum(nw)
        has_bits = np.logical_or.reduceat(mask != 0, ends - nw)
        snap[words] = 0
        calls = [
            (int(first[i]), int(min(chunk, npages - first[i])), mask[ends[i] - nw[i] : ends[i]])
            for i in np.flatnonzero(has_bits).tolist()
        ]
        if not calls:
            return
        op = DL.clear_dirty_log_many(self.vm, sid, calls)  # one ioctl per chunk, as QEMU does
        if self.sim.keep_harvests:
            self.clears += [
                {"t_ns": self.sim.t_ns, "round": self.round, "slot": sid, "first_page": f,
                 "num_pages": n, "mask": [f"{int(w):#x}" for w in mask]}
                for f, n, mask in calls
            ]  # fmt: skip
        cost = op.model_ns(self.vm.costs)
        self.busy_until_ns = max(self.busy_until_ns, self.sim.t_ns) + int(cost)
        if self.acc:
            self.acc.harvest.add(op)

    # -- harvest ------------------------------------------------------------------------------

    def sync(self, t: int, close_round: bool = True) -> int:
        """migration_bitmap_sync: harvest the KVM log into the migration bitmap; a new round.

        The final sync after the guest stopped belongs to the stop-and-copy round instead.
        """
        before = len(self.vm.op_log)
        reported: dict[int, np.ndarray] = {}
        if self.vm.tracking.mode == "ring":
            self.sim.reap_rings()
        for sid, m in self.slots.items():
            words = self._harvest_slot(sid, m)
            if words is not None:
                reported[sid] = words
                m.bitmap |= words
        self._remaining = None
        dirty = sum(DL.popcount(w) for w in reported.values())
        ops = _merge(self.vm.op_log[before:])
        cost = ops.model_ns(self.vm.costs)
        self.busy_until_ns = max(self.busy_until_ns, t) + int(cost)
        assert self.acc is not None
        self.acc.harvest.add(ops)
        self.last_harvest = reported
        self.sim.record_harvest(self.round, t, reported)
        if close_round:
            self._close_round(t, dirty)
            self._auto_converge(t, dirty)
        self.round += 1
        if close_round:
            self.acc = RoundAcc(t, tlbi0=Counter(self.vm.pgt.tlbi))
        self.expected_downtime_ms = self.remaining_bytes() / self.cfg.bandwidth * 1000
        return dirty

    def _harvest_slot(self, sid: int, m: SlotMig) -> np.ndarray | None:
        st = self.vm.slots[sid]
        if not st.logging:
            return None
        mode = self.vm.tracking.mode
        words = np.zeros(st.nwords, dtype=U64)
        if mode == "ring":
            pend = self.ring_pending.pop(sid, [])
            if pend:
                rel = np.concatenate(pend).astype(np.int64)
                DL.set_bits(words, rel)
        snap, _ = DL.get_dirty_log(self.vm, sid)  # the backup bitmap in ring mode
        words |= snap
        if mode == "manual-clear":
            m.clear_snapshot = snap.copy()
        return words

    def add_ring_pages(self, slots: np.ndarray, offsets: np.ndarray) -> None:
        """Entries the reaper collected from the rings, to go into the next sync."""
        for sid in unique_fast(slots):
            m = self.slots.get(int(sid))
            if m is not None:  # an offset past a slot that shrank is dropped, as QEMU does
                offs = offsets[slots == sid]
                self.ring_pending.setdefault(int(sid), []).append(offs[offs < m.dest.size])

    # -- rounds, auto-converge ----------------------------------------------------------------

    def _close_round(self, t: int, dirty_pages: int, number: int | None = None) -> None:
        acc = self.acc
        if acc is None:
            return
        dur = max(t - acc.t_start_ns, 1)
        vm, costs = self.vm, self.vm.costs
        tlbi = Counter(vm.pgt.tlbi)
        tlbi.subtract(acc.tlbi0)
        h = acc.harvest
        strategies = h.strategies
        flush = {k: v for k, v in h.tlbi.items()}
        self.rounds.append(
            {
                "round": self.round if number is None else number,
                "t_start_ns": acc.t_start_ns,
                "t_end_ns": t,
                "transferred_bytes": acc.transferred_bytes,
                "pages_sent": acc.pages_sent,
                "remaining_bytes": self.remaining_bytes(),
                "dirty_pages": dirty_pages,
                "dirty_pages_rate": dirty_pages / (dur / NS),
                "mbps": acc.transferred_bytes * 8 / (dur / NS) / 1e6,
                "expected_downtime_ms": self.remaining_bytes() / self.cfg.bandwidth * 1000,
                "throttle_pct": self.throttle_pct,
                "faults": acc.faults,
                "tlbi": {k: v for k, v in tlbi.items() if v},
                "desc_reads": {f"L{k}": v for k, v in sorted(h.counters.reads.items()) if v},
                "desc_writes": {f"L{k}": v for k, v in sorted(h.counters.writes.items()) if v},
                "harvest_model_ns": h.model_ns(costs),
                "walk_model_ns": {
                    n: costs.walk_ns(s.counters.total_reads(), s.counters.total_writes(), flush)
                    for n, s in strategies.items()
                },
                "walk_wall_us": {n: s.wall_ns / 1000 for n, s in strategies.items()},
                "walk_cpu_us": {n: s.cpu_ns / 1000 for n, s in strategies.items()},
                "strategy_counts": {n: s.as_dict() for n, s in strategies.items()},
                "ring_full_exits": acc.ring_full_exits,
                "guest_slowdown": 1.0 - acc.active_ns / acc.wall_vcpu_ns
                if acc.wall_vcpu_ns
                else 0.0,
            }
        )

    def _auto_converge(self, t: int, dirty_pages: int) -> None:
        """migration_trigger_throttle: two high periods → throttle up (20 %, +10 %, ≤ 99 %)."""
        p = self.period
        p["dirty"] += dirty_pages * self.page
        if t - p["t"] < PERIOD_NS:
            return
        self.dirty_pages_rate = p["dirty"] / self.page / ((t - p["t"]) / NS)
        if self.cfg.auto_converge:
            threshold = p["xfer"] * self.cfg.throttle_trigger_threshold / 100
            if p["dirty"] > threshold:
                p["high"] += 1
                if p["high"] >= 2:
                    p["high"] = 0
                    self._throttle_up()
        p.update({"t": t, "xfer": 0, "dirty": 0})

    def _throttle_up(self) -> None:
        if self.throttle_pct == 0:
            self.throttle_pct = self.cfg.cpu_throttle_initial
        else:
            self.throttle_pct = min(
                self.cfg.max_cpu_throttle, self.throttle_pct + self.cfg.cpu_throttle_increment
            )
        self.sim.message(f"auto-converge: vCPUs throttled to {self.throttle_pct} %")

    # -- switchover ---------------------------------------------------------------------------

    def stop_and_copy(self, t: int) -> None:
        """Stop the guest, final sync, send everything left at full bandwidth, verify."""
        self.phase = "stop-and-copy"
        self.t_stop_ns = t
        self.sim.message(f"switchover at {t / 1e6:,.1f} ms: {self.reason}")
        before_bytes = self.total_bytes
        busy_before = max(self.busy_until_ns, t)
        number = self.round
        dirty = self.sync(t, close_round=False)
        for m in self.slots.values():
            if not m.tracked:
                DL.set_all(m.bitmap, m.dest.size)
                self._remaining = None
        pages = self.remaining_pages()
        self._send_pages(pages)
        harvest_ns = max(self.busy_until_ns - busy_before, 0)
        send_ns = (self.total_bytes - before_bytes) / self.cfg.bandwidth * NS
        self.downtime_ns = harvest_ns + send_ns
        self.t_end_ns = int(t + self.downtime_ns)
        self._close_round(self.t_end_ns, dirty, number)
        self.rounds[-1]["stop_and_copy"] = True
        self.phase = "done"
        self.outcome = "completed"
        self.verify()

    def verify(self) -> dict[str, object]:
        """Every destination page must hold the source page's version at switchover."""
        checked = mismatches = 0
        first_bad: list[dict[str, int]] = []
        for sid, m in self.slots.items():
            src = self.vm.slots[sid].version
            bad = np.flatnonzero(src != m.dest)
            checked += int(src.size)
            mismatches += int(bad.size)
            for b in bad[: max(0, 5 - len(first_bad))]:
                first_bad.append(
                    {"slot": sid, "page": int(b), "source": int(src[b]), "dest": int(m.dest[b])}
                )
        self.verification = {"pages_checked": checked, "mismatches": mismatches}
        if first_bad:
            self.verification["examples"] = first_bad
        return self.verification

    # -- accounting from the simulation ---------------------------------------------------------

    def account_guest(self, active_ns: float, wall_ns: float, faults: int, ring_full: int) -> None:
        if self.acc is not None:
            self.acc.active_ns += active_ns
            self.acc.wall_vcpu_ns += wall_ns
            self.acc.faults += faults
            self.acc.ring_full_exits += ring_full

    def result(self) -> dict[str, object]:
        done = self.phase == "done"
        end = self.t_end_ns if done else self.sim.t_ns
        return {
            "outcome": self.outcome or ("running" if self.active else "not-started"),
            "reason": self.reason,
            "policy": self.cfg.policy,
            "total_time_ms": (end - self.t_start_ns) / 1e6 if self.phase != "idle" else 0.0,
            "downtime_ms": self.downtime_ns / 1e6,
            "setup_time_ms": self.setup_ns / 1e6,
            "transferred_bytes": self.total_bytes,
            "rounds_count": len(self.rounds),
            "dirty_sync_count": self.round,
            "remaining_bytes": self.remaining_bytes(),
            "throttle_pct": self.throttle_pct,
            "verification": self.verification
            or {"pages_checked": 0, "mismatches": 0, "note": "no switchover happened"},
            "rounds": self.rounds,
        }


def _merge(ops: list[OpStats]) -> OpStats:
    total = OpStats("harvest")
    for op in ops:
        total.add(op)
    return total


MEASURED_ROUND_KEYS = ("walk_wall_us", "walk_cpu_us")
MEASURED_STRATEGY_KEYS = ("wall_us", "cpu_us")


def without_measured(result: dict) -> dict:
    """A run's result without its measured times, which differ from run to run: what two
    runs of the same session must agree on exactly."""
    out = copy.deepcopy(result)
    for r in out["rounds"]:
        for key in MEASURED_ROUND_KEYS:
            r.pop(key, None)
        for counts in r.get("strategy_counts", {}).values():
            for key in MEASURED_STRATEGY_KEYS:
                counts.pop(key, None)
    return out

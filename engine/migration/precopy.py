"""The pre-copy loop, as QEMU runs it (or with Xen's stop rules), over the simulated VM.

QEMU (migration/ram.c, migration/migration.c; the release in ``migration.qemu``, default
10.1): setup enables dirty logging, counts every page dirty and syncs the dirty log once
(``ram_init_bitmaps`` → ``migration_bitmap_sync_precopy``: dirty-sync-count 1), so with
manual-clear the first pass CLEARs each clear-bitmap chunk just before sending it.  The
sender works in 100 ms windows (``BUFFER_DELAY``): it sends at the link's speed until more than
the window's share of ``max-bandwidth`` is used, then waits for the window's end.  At each turn
of the migration thread's loop it measures the window once 100 ms or more have passed (the
bandwidth it really achieved over the window's real length, ``migration_update_counters``:
threshold = measured bandwidth × downtime limit, or avail-switchover-bandwidth) and asks how
much is pending (``migration_iteration_run``): below the threshold it syncs, and switches over
when what is pending then fits.  The loop turns when the limit's wait ends, when the sender
runs out of pages and, when the link is the limit, once ``ram_save_iterate`` has sent for more
than ``MAX_WAIT`` 50 ms (in whole milliseconds from the call's start, after any sync: 51 ms).
The stop-and-copy is not rate-limited (``ram_save_complete``): it goes at the link's speed.
Pages the guest never wrote go as zero pages (a header and one byte, ``save_zero_page``).
Rounds are numbered by dirty-sync-count: round n is what was sent while the count was n.

Xen: see ``engine.migration.xen``.  A harvest's modelled cost holds the sender up while the
guest keeps running.  Each page's version is copied to the destination when it is sent, so
the end state can be verified.
"""

from __future__ import annotations

import copy
import math
import weakref
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.files.session import MigrationCfg
from engine.kvm import dirtylog as DL
from engine.kvm.dirtylog import OpStats
from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES
from engine.migration import deferred as DF
from engine.migration import qemu_rules as Q
from engine.migration import xen as X
from engine.migration.kubevirt import KubevirtMonitor
from engine.util.arrays import expand_runs, unique_fast
from engine.util.scatter import subtract_ones

U64 = np.uint64
NS = 1_000_000_000
MAX_QUIET = 1 << 30  # no bound from sending
REAP_NS = NS  # accel/kvm/kvm-all.c kvm_dirty_ring_reaper_thread: sleep(1) between reaps
# the round a page was last sent in: max_rounds and xen_max_rounds go to 100,000, past int16
LAST_SENT = np.int32


@dataclass
class SlotMig:
    """The migration's view of one memslot (a QEMU RAMBlock)."""

    bitmap: np.ndarray  # migration bitmap: pages still to send (KVM word layout)
    dest: np.ndarray  # destination page versions
    last_sent: np.ndarray | None  # round each page was last sent in (-1 never), for the heat map
    clear_snapshot: np.ndarray | None = None  # manual-clear: bits of the last GET, not yet cleared
    tracked: bool = True  # dirty logging on: writes are caught; else all dirty at every sync
    populated: bool = True  # the guest touched every page at start: none is a zero page


@dataclass
class RoundAcc:
    """Counters accumulated during the current round."""

    t_start_ns: int
    transferred_bytes: int = 0
    pages_sent: int = 0
    duplicate: int = 0
    normal: int = 0
    faults: int = 0
    ring_full_exits: int = 0
    active_ns: float = 0.0
    wall_vcpu_ns: float = 0.0
    harvest: OpStats = field(default_factory=lambda: OpStats("harvest"))
    tlbi0: Counter[str] = field(default_factory=Counter)


@dataclass
class Sent:
    """What one call of the sender did."""

    pages: int = 0
    nbytes: int = 0
    dry: bool = False  # no dirty page left to send
    link_bound: bool = False  # stopped by the link's time, more could have gone


class Migration:
    """One pre-copy migration of the simulation's VM."""

    def __init__(
        self, sim, cfg: MigrationCfg, clear_chunk_pages: int, track_last_sent: bool = True
    ):
        self._sim = weakref.ref(sim)
        self.vm = sim.vm
        self.cfg = cfg
        self.page = self.vm.page_size
        self.clear_chunk_pages = max(64, int(clear_chunk_pages))
        self.track_last_sent = track_last_sent
        self.phase = "idle"
        self.outcome: str | None = None
        self.reason = ""
        self.slots: dict[int, SlotMig] = {}
        self.round = 0  # dirty-sync-count (Xen: CLEANs + 1)
        self.rounds: list[dict[str, object]] = []
        self.throttle_pct = 0
        self.busy_until_ns = 0
        self.carry_bytes = 0.0
        self.cursor = (0, 0)
        self.t_start_ns = self.t_stop_ns = self.t_end_ns = 0
        self.setup_ns = 0.0
        self.total_bytes = 0
        self.duplicate = self.normal = 0  # QEMU target pages (4 KiB)
        self.downtime_ns = 0.0
        self.ring_pending: dict[int, list[np.ndarray]] = {}
        self.acc: RoundAcc | None = None
        self.verification: dict[str, object] | None = None
        self.last_harvest: dict[int, np.ndarray] = {}
        self.last_harvest_t_ns = 0  # when last_harvest was taken (exports record it)
        self._remaining: int | None = None
        # while the simulation defers sends (see engine.migration.deferred): the batch tick
        # now, and every page's cost (``uniform_cost`` at the batch's start)
        self.defer_tick: int | None = None
        self.defer_cost = 0
        self._deferred: DF.Deferred | None = None
        self.syncs = 0  # harvests so far (QEMU: dirty-sync-count), numbering the exports
        self.next_harvest_ns = 0  # policy fixed: when the next harvest is due
        self.clears: list[dict[str, object]] = []  # CLEAR calls made, kept for --export-bitmaps
        # QEMU: the sender's window, measured bandwidth and rates
        self.win_start = 0
        self.win_xfer0 = 0
        self.threshold = 0.0  # threshold_size (bytes); 0 until the first window is measured
        self.bw_per_ms = 0.0
        self.mbps = 0.0
        self.iterate_t0 = 0
        self.decision_due = False
        self.period = {"t": 0, "xfer0": 0, "new": 0, "high": 0}
        self.dirty_pages_rate = 0.0  # QEMU's dirty-pages-rate (newly dirtied pages/s)
        self.reported_pages_rate = 0.0  # every page the dirty log reported, per second
        self.dirty_bytes_last_sync = 0
        self.expected_downtime_ms = float(cfg.downtime_limit_ms)
        self.throttle_timer_next = self.throttle_timer_prev = 0
        self.reap_next = 0
        self.kubevirt: KubevirtMonitor | None = None
        # Xen
        self.live_iters = 0
        self.stop_after_batch = False
        self.iter_pages = 0
        self.total_pages_sent = 0

    # -- helpers ------------------------------------------------------------------------------

    @property
    def sim(self):
        """The simulation this migration belongs to, held weakly. The simulation owns the
        migration; a reference back would make the whole guest one reference cycle, which only
        the cyclic collector frees — in the app that runs in the GUI thread (app/gui_gc.py),
        where freeing a replaced 16 M-page guest stalled the event loop 127 ms. Without the
        cycle, a guest's arrays are freed where its last reference drops."""
        return self._sim()

    @property
    def release(self) -> Q.Release:
        return Q.RELEASES[self.cfg.qemu]

    @property
    def is_xen(self) -> bool:
        return self.cfg.policy in ("xen", "xen-4.5")

    @property
    def is_fixed(self) -> bool:
        return self.cfg.policy == "fixed"

    @property
    def threshold_bytes(self) -> float:
        """QEMU's threshold_size now: what may stay dirty at switchover."""
        return self.threshold

    @property
    def live_rate(self) -> float:
        """Bytes/s the wire carries while iterating (QEMU: the link; Xen: ``bandwidth``)."""
        return self.cfg.bandwidth if self.is_xen else self.cfg.link_speed

    def remaining_pages(self) -> int:
        """Pages still to send (kept as a count: recounting 16 M bits per tick is too slow)."""
        if self._remaining is None:
            self.flush()
            self._remaining = sum(DL.popcount(m.bitmap) for m in self.slots.values())
        return self._remaining

    def remaining_bytes(self) -> int:
        return self.remaining_pages() * self.page

    @property
    def active(self) -> bool:
        return self.phase in ("setup", "iterating", "stop-and-copy")

    @property
    def guest_paused(self) -> bool:
        return self.phase == "stop-and-copy" or (
            self.phase == "done" and self.outcome == "completed"
        )

    # -- setup --------------------------------------------------------------------------------

    def start(self, t_ns: int) -> None:
        """ram_save_setup: enable logging, every page dirty; QEMU then syncs once (count 1)."""
        self.phase = "iterating"
        self.t_start_ns = t_ns
        before = len(self.vm.op_log)
        tlbi0 = Counter(self.vm.pgt.tlbi)  # round 1 counts the enable's flushes too
        for st in self.vm.slots.values():
            self.add_slot(st.slot.id, all_dirty=True)
        enable_cost = sum(op.model_ns(self.vm.costs) for op in self.vm.op_log[before:])
        self.busy_until_ns = t_ns + int(enable_cost)
        self.acc = RoundAcc(t_ns, tlbi0=tlbi0)
        self.acc.harvest.add(_merge(self.vm.op_log[before:]))
        self.win_start = t_ns
        self.period = {"t": t_ns, "xfer0": 0, "new": 0, "high": 0}
        self.throttle_timer_next = t_ns + Q.THROTTLE_SYNC_NS
        self.reap_next = (t_ns // REAP_NS + 1) * REAP_NS
        if self.cfg.kubevirt is not None:
            memory = sum(st.slot.size for st in self.vm.slots.values())
            self.kubevirt = KubevirtMonitor(self.cfg.kubevirt, t_ns, memory)
        self.next_harvest_ns = t_ns + int(self.cfg.harvest_every_ms * 1e6)
        if self.is_xen or self.is_fixed:
            self.round = 1  # send_all_pages follows enable_logdirty with no CLEAN
            self.iter_pages = 0
            self.stop_after_batch = self.remaining_pages() < self.cfg.xen_min_pages
        else:
            self.sync(t_ns)  # ram_init_bitmaps → migration_bitmap_sync_precopy
        self.setup_ns = self.busy_until_ns - t_ns
        self.iterate_t0 = self.busy_until_ns  # the first ram_save_iterate follows the setup
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
                f"slot {s.id} has no log_dirty flag: its writes cannot be tracked, so every sync "
                "marks it all dirty (it is sent again each round and in stop-and-copy)"
            )
        last = np.full(s.npages, -1, dtype=LAST_SENT) if self.track_last_sent else None
        populated = bool(getattr(self.sim, "slot_populated", {}).get(s.id, True))
        self.slots[s.id] = SlotMig(
            bitmap, np.zeros(s.npages, dtype=np.uint32), last, None, tracked, populated
        )
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
        if self.is_fixed:
            self._fixed_step(t1)
            return
        if self.vm.tracking.mode == "ring" and t1 >= self.reap_next:
            self.sim.reap_rings()  # the reaper thread: collect and reset every second
            self.reap_next += REAP_NS
        if self.is_xen:
            self._send_plain(t0, t1)
            self._xen_step(t1)
        else:
            self._send_windows(t0, t1)
            self._qemu_step(t1)
        if self.phase == "iterating":
            self._kubevirt_step(t1)
        self._check_limits(t1)

    def counted_ticks(self, edges: list[int], i: int) -> int:
        """Run batch ticks i, i + 1, ... (``edges[j]``..``edges[j + 1]`` in ns) while each is
        one whose whole effect is a count of pages sent: QEMU's sender inside a window, with
        counted sends (``defer_tick`` set), no decision, timer, limit, ring reap or CLEAR
        due.  Returns the first tick not run (``i`` if tick i is not such a tick; ``tick``
        runs it).

        Each tick makes ``tick``'s comparisons and float operations in the same order
        (``_send_windows``, ``_send_counted``, ``_defer``, ``_qemu_step``), so the carry
        and every count are bit-identical; a tick that would do anything else is left to
        ``tick`` before anything of it is changed.  The counters are added once at the end.
        """
        d = self._deferred
        if (
            self.phase != "iterating"
            or self.is_xen
            or self.is_fixed
            or self.defer_tick is None
            or self.decision_due
            or self._remaining is None
            or self.round > self.cfg.max_rounds
        ):
            return i
        cfg = self.cfg
        we = self._window_end_ns()  # where a wait for the rate limit would end
        stop = math.inf
        if self.vm.tracking.mode == "ring":
            stop = min(stop, self.reap_next)
        if self.release.throttle_sync and cfg.auto_converge:
            stop = min(stop, self.throttle_timer_next)
        if self.kubevirt is not None:
            stop = min(stop, self.kubevirt.next_ns)
        hi_max = math.inf  # manual clear: sends up to the next rank that CLEARs first
        if self.vm.tracking.manual and any(
            m.clear_snapshot is not None for m in self.slots.values()
        ):
            if d is None or d.ahead is None:
                return i
            at = int(np.searchsorted(d.clear_at, d.sent))
            hi_max = int(d.clear_at[at]) if at < d.clear_at.size else math.inf
            if d.ahead_limit:
                hi_max = min(hi_max, d.ahead_limit)
        cost, link, busy, carry = (
            self.defer_cost,
            cfg.link_speed,
            self.busy_until_ns,
            self.carry_bytes,
        )
        rate = Q.rate_limit_per_window(cfg.bandwidth)
        used = self.total_bytes - self.win_xfer0  # bytes sent in this window
        timeout, t_start = cfg.timeout_s * NS, self.t_start_ns
        waited = self.iterate_t0 + Q.MAX_WAIT_BREAK_NS  # (integers: the same test as tick's)
        link_count, window_count = DF.link_count, DF.window_count
        left, hi, sent = self._remaining, d.sent if d is not None else 0, 0
        j, last = i, len(edges) - 1
        while j < last:
            t0, t1 = edges[j], edges[j + 1]
            if t1 >= stop or t1 - t_start >= timeout:
                break
            n, c = 0, carry
            start = t0 if busy <= t0 else min(busy, t1)  # max(t0, min(busy, t1))
            if t1 > start and used > rate:
                c = 0.0  # the rate limit is exceeded: the thread waits for the window's end
            elif t1 > start:
                budget = link * (t1 - start) / NS + carry
                want = int(budget // cost) + 1
                got = want if want < left else left
                by_link = min(got, link_count(budget, cost))
                room = rate - used  # more than got pages' bytes: window_count > got
                by_window = got if room > got * cost else min(got, window_count(room, cost))
                n = by_link if by_link < by_window else by_window
                if n >= got or hi + n > hi_max:  # dry, a second pass, or a CLEAR first
                    break
                c = budget - n * cost if by_link <= by_window else 0.0
            if t1 >= we if used + n * cost > rate else t1 >= waited:
                break  # a loop turn: the rate limit's wait ends, or MAX_WAIT: a decision
            if n:
                if d is None:  # the batch's first send (``_defer``: the count is kept)
                    d = self._deferred = DF.Deferred(self.cursor)
                d.add(j, n)
                left -= n
                hi += n
                used += n * cost
                sent += n
            carry = c
            j += 1
        self.carry_bytes = carry
        if sent:
            self._remaining = left
            self._count_sent(sent, cost)  # (integer sums: the same as tick by tick)
        return j

    def _qemu_step(self, t: int) -> None:
        if self.release.throttle_sync and self.cfg.auto_converge and t >= self.throttle_timer_next:
            self._throttle_timer(t)
        if t - self.iterate_t0 >= Q.MAX_WAIT_BREAK_NS and not self._rate_exceeded():
            self.decision_due = True  # ram_save_iterate returned after MAX_WAIT
        if not self.decision_due or t < self.busy_until_ns:
            return
        self.decision_due = False
        if t - self.win_start >= Q.BUFFER_DELAY_NS:
            self._measure(t)  # migration_rate_limit → migration_update_counters, first
        self._iteration_run(t)
        self.iterate_t0 = max(t, self.busy_until_ns)  # ram_save_iterate begins after a sync

    def _iteration_run(self, t: int) -> None:
        """migration_iteration_run: exact sync below the threshold, then maybe complete."""
        rel = self.release
        if Q.should_sync(rel, self.remaining_bytes(), self.threshold):
            self.sync(t)
        pending = self.remaining_bytes()
        if Q.should_complete(rel, pending, self.threshold):
            self.reason = (
                f"{pending:,} dirty bytes {'≤' if rel.complete_le else '<'} threshold "
                f"{self.threshold:,.0f} bytes (measured bandwidth × downtime limit, "
                f"QEMU {rel.name})"
            )
            self.stop_and_copy(max(t, self.busy_until_ns))

    def _throttle_timer(self, t: int) -> None:
        """cpu_throttle_dirty_sync_timer_tick (QEMU 9.2+): sync if none happened in 5 s."""
        if self.round > 1 and self.round == self.throttle_timer_prev:
            self.sync(t)
        self.throttle_timer_prev = self.round
        self.throttle_timer_next += Q.THROTTLE_SYNC_NS

    def _xen_step(self, t: int) -> None:
        """At the end of each live batch (nothing left to send)."""
        if t < self.busy_until_ns or self.remaining_pages() > 0:
            return
        self.live_iters += 1
        if self.cfg.policy == "xen-4.5":
            total = sum(st.slot.npages for st in self.vm.slots.values())
            why = X.classic_stop(
                self.live_iters,
                self.iter_pages,
                self.total_pages_sent,
                total,
                self.cfg.live_iterations(),
                self.cfg.xen_min_pages,
                self.cfg.xen_max_factor,
            )
            if why:
                self.reason = why
                self.stop_and_copy(t)
                return
            self.sync(t)
            self.iter_pages = 0
            return
        if self.stop_after_batch:  # the policy said stop; its batch has now gone live
            self.stop_and_copy(t)
            return
        if X.spp_stop(self.live_iters, -1, self.cfg.live_iterations(), self.cfg.xen_min_pages):
            self.reason = f"xen: {self.live_iters} live iterations done (SPP_MAX_ITERATIONS)"
            self.stop_and_copy(t)
            return
        dirty, _ = self.sync(t)
        if X.spp_stop(self.live_iters, dirty, self.cfg.live_iterations(), self.cfg.xen_min_pages):
            self.reason = (
                f"xen: {dirty} pages dirty, fewer than {self.cfg.xen_min_pages}: sent live, then "
                "suspend"
            )
            self.stop_after_batch = True
            if dirty == 0:
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
        is cleared at once, a clear-bitmap chunk at a time (GET then CLEAR, as dirty_log_test
        does), and the migration bitmap is emptied.  Returns the dirty pages harvested.
        """
        dirty, _ = self.sync(t)
        if self.is_fixed:
            for sid, m in self.slots.items():
                if self.vm.tracking.manual and m.clear_snapshot is not None:
                    pages = DL.bitmap_pages(m.clear_snapshot)
                    if pages.size:
                        self._clear_before_send(sid, m, pages)
                self.sim.note_words(sid, np.flatnonzero(m.bitmap))
                m.bitmap[:] = 0
            self._remaining = 0
        return dirty

    def _kubevirt_step(self, t: int) -> None:
        kv = self.kubevirt
        if kv is None or t < kv.next_ns:
            return
        why = kv.sample(t, self.remaining_bytes())
        if why:
            self.cancel(t, why)

    def _check_limits(self, t: int) -> None:
        if self.phase != "iterating":
            return
        if self.round > self.cfg.max_rounds:
            self._give_up(t, f"not converged after {self.cfg.max_rounds} rounds (max_rounds)")
        elif t - self.t_start_ns >= self.cfg.timeout_s * NS:
            self._give_up(t, f"not converged within {self.cfg.timeout_s:g} s (timeout)")

    def _give_up(self, t: int, reason: str) -> None:
        self._close_round(t)
        self.phase = "done"
        self.outcome = "not-converged"
        self.reason = reason
        self.t_end_ns = t
        self.sim.message(f"migration {reason}; the guest keeps running on the source")

    def cancel(self, t: int, reason: str) -> None:
        """migrate_cancel (or a management layer's abort): the migration stops, dirty logging
        is switched off (memory_global_dirty_log_stop) and the guest goes on at the source."""
        if not self.active:
            return
        self.flush()
        self._close_round(t)
        self.phase = "done"
        self.outcome = "cancelled"
        self.reason = reason
        self.t_end_ns = t
        for sid in list(self.slots):
            st = self.vm.slots.get(sid)
            if st is not None and st.logging:
                s = st.slot
                flags = s.flags & ~KVM_MEM_LOG_DIRTY_PAGES
                self.vm.set_memslot(s.id, s.base, s.size, flags, s.backing, s.name)
        self.sim.message(f"migration cancelled ({reason}); logging off, the guest goes on")

    def quiet_ticks(self, t: int, tick: int) -> int:
        """Ticks from ``t`` during which no harvest, switchover or limit can happen.

        Xen harvests only when nothing is left to send.  QEMU syncs only when what is left is
        below the threshold, which is at most (the bandwidth a window can measure) × downtime
        limit; what is left falls no faster than the link and each window's rate limit allow.
        Timers (the 5 s throttle sync, the ring reaper, KubeVirt's samples) end a batch.
        """
        deadline = self.t_start_ns + self.cfg.timeout_s * NS
        if self.is_fixed:
            return max(1, -(-(min(self.next_harvest_ns, deadline) - t) // tick))
        ends = [deadline]
        if self.vm.tracking.mode == "ring":
            ends.append(self.reap_next)
        if self.kubevirt is not None:
            ends.append(self.kubevirt.next_ns)
        if self.release.throttle_sync and self.cfg.auto_converge and not self.is_xen:
            ends.append(self.throttle_timer_next)
        sending = self._quiet_sending(tick)
        if sending <= 0 and not self.is_xen:
            # a sync is possible: stop at the next point where QEMU decides (a window's end,
            # MAX_WAIT after ram_save_iterate began, or the first tick the sender may run dry)
            if self.decision_due:
                return 1
            ends += [self._window_end_ns(), self.iterate_t0 + Q.MAX_WAIT_BREAK_NS]
            cost = self._min_page_cost()
            left = self.remaining_pages()
            if left > max(self._window_left(), 0) // cost + 1:
                sending = MAX_QUIET  # the window's share runs out before the pages do
            else:
                per_tick = int(self.cfg.link_speed * tick / NS / cost) + 2
                sending = (left - 1) // per_tick + 1
        ticks = min(max(1, math.ceil((e - t) / tick)) for e in ends)
        return max(1, min(ticks, sending))

    def _quiet_sending(self, tick: int) -> int:
        min_cost = self._min_page_cost()
        if self.is_xen:
            per_tick = int(self.cfg.bandwidth * tick / NS // self.page) + 2
            return self.remaining_pages() // per_tick
        max_cost = Q.page_bytes(False, self.page)
        bw_max = (
            min(self.cfg.bandwidth, self.cfg.link_speed) + 2 * max_cost * NS / Q.BUFFER_DELAY_NS
        )
        bw_max = max(bw_max, self.cfg.avail_switchover_bandwidth)
        floor = int(bw_max * self.cfg.downtime_limit_ms / 1000 // self.page) + 1
        allowed = self.remaining_pages() - floor
        if allowed <= 0:
            return 0
        by_link = allowed // (int(self.cfg.link_speed * tick / NS / min_cost) + 2)
        now_pages = int(max(self._window_left(), 0) // min_cost) + 1  # this window's share
        if allowed < now_pages:
            return by_link
        per_window = int(Q.rate_limit_per_window(self.cfg.bandwidth) / min_cost) + 2
        window_ticks = math.ceil(Q.BUFFER_DELAY_NS / tick)
        to_end = math.ceil((self._window_end_ns() - self.sim.t_ns) / tick)
        by_window = to_end + (allowed - now_pages) // per_window * window_ticks
        return max(by_link, by_window)

    def _min_page_cost(self) -> int:
        if self.is_xen:
            return self.page
        zero = self.cfg.zero_page_detection == "legacy" and any(
            not m.populated for m in self.slots.values()
        )
        return Q.page_bytes(zero, self.page)

    # -- sending ------------------------------------------------------------------------------

    def _window_left(self) -> float:
        """Bytes the rate limit still allows in this window: a page goes while this is >= 0
        (migration_rate_exceeded: ``rate_limit_used > rate_limit_max``)."""
        return Q.rate_limit_per_window(self.cfg.bandwidth) - (self.total_bytes - self.win_xfer0)

    def _rate_exceeded(self) -> bool:
        return self._window_left() < 0

    def _window_end_ns(self) -> int:
        """The tick at which a wait for the rate limit ends: the window's 100 ms are over and
        no harvest holds the thread (migration_rate_limit's qemu_sem_timedwait)."""
        tick = self.sim.tick_ns
        due = max(self.win_start + Q.BUFFER_DELAY_NS, self.busy_until_ns)
        return -(-due // tick) * tick

    def _send_windows(self, t0: int, t1: int) -> None:
        """QEMU's sender over (t0, t1]: ram_save_iterate sends while the rate limit allows;
        once it is exceeded the thread waits for the window's end, a loop turn (a decision,
        after the window is measured).  A window whose 100 ms pass while the link, not the
        limit, holds the sender is measured at the next loop turn (``_qemu_step``)."""
        start = max(t0, min(self.busy_until_ns, t1))
        if t1 > start and self._rate_exceeded():
            self.carry_bytes = 0.0  # waiting: the link idles
        elif t1 > start:
            budget = self.cfg.link_speed * (t1 - start) / NS + self.carry_bytes
            sent = self._send_budget(budget, self._window_left())
            self.carry_bytes = budget - sent.nbytes if sent.link_bound else 0.0
            if sent.dry:
                self.decision_due = True  # ram_save_iterate found nothing more to send
        if self._rate_exceeded() and self._window_end_ns() <= t1:
            self.decision_due = True  # the wait ends

    def _measure(self, t: int) -> None:
        """migration_update_counters at the first loop turn 100 ms or more after the window
        began: bandwidth, threshold, mbps, expected downtime over the window's real length,
        then a new window (migration_rate_reset, update_iteration_initial_status)."""
        spent_ms = max((t - self.win_start) / 1e6, 1e-9)
        transferred = self.total_bytes - self.win_xfer0
        self.bw_per_ms = transferred / spent_ms
        bw = Q.expected_bw_per_ms(self.bw_per_ms, self.cfg.avail_switchover_bandwidth)
        self.threshold = Q.threshold_size(bw, self.cfg.downtime_limit_ms)
        self.mbps = transferred * 8 / (spent_ms / 1000) / 1e6
        if self.dirty_pages_rate and transferred > Q.EXPECTED_DOWNTIME_MIN_BYTES and bw > 0:
            base = (
                self.dirty_bytes_last_sync
                if self.release.downtime_from_last_sync
                else self.remaining_bytes()
            )
            self.expected_downtime_ms = base / bw
        self.win_start = t
        self.win_xfer0 = self.total_bytes

    def _send_plain(self, t0: int, t1: int) -> None:
        """Xen's sender: as fast as ``bandwidth`` allows, no windows."""
        start = max(t0, min(self.busy_until_ns, t1))
        budget = self.cfg.bandwidth * (t1 - start) / NS + self.carry_bytes
        sent = self._send_budget(budget, math.inf)
        self.carry_bytes = budget - sent.nbytes if sent.link_bound else 0.0

    def _send_budget(self, link_bytes: float, window_bytes: float) -> Sent:
        """Send dirty pages from the cursor on while they fit in ``link_bytes`` and each
        starts while no more than ``window_bytes`` are used (the rate limit is checked before
        a page: ``migration_rate_exceeded``)."""
        if self.defer_tick is not None and not math.isinf(link_bytes):
            return self._send_counted(link_bytes, window_bytes, self.defer_cost)
        self.flush()
        out = Sent()
        max_cost = self.page if self.is_xen else Q.page_bytes(False, self.page)
        if math.isinf(link_bytes):
            want = max(1, self.remaining_pages())
        else:
            want = int(link_bytes // max_cost) + 1
        while True:
            batch = self._collect(want)
            if not batch:
                out.dry = True
                return out
            costs = np.concatenate([self._costs(sid, pages) for sid, pages in batch])
            cum = np.cumsum(costs)
            by_link = int(np.searchsorted(cum, link_bytes - out.nbytes, side="right"))
            by_window = int(np.searchsorted(cum - costs, window_bytes - out.nbytes, side="right"))
            n = min(by_link, by_window)
            self._commit(batch, n)
            if n:
                out.nbytes += int(cum[n - 1])
                out.pages += n
            if n < cum.size:  # the link's time or the window's share ran out
                out.link_bound = by_link <= by_window
                return out
            if cum.size < want:
                out.dry = True
                return out
            want *= 2

    def _send_counted(self, link_bytes: float, window_bytes: float, cost: int) -> Sent:
        """``_send_budget`` when every page costs ``cost``: the same loop, counting the pages
        (the next dirty ones in send order) instead of collecting them; written at ``flush``."""
        out = Sent()
        want = int(link_bytes // cost) + 1
        while True:
            got = min(want, self.remaining_pages())
            if not got:
                out.dry = True
                return out
            by_link = min(got, DF.link_count(link_bytes - out.nbytes, cost))
            by_window = min(got, DF.window_count(window_bytes - out.nbytes, cost))
            n = min(by_link, by_window)
            if n:
                self._defer(n, cost)
                out.nbytes += n * cost
                out.pages += n
            if n < got:
                out.link_bound = by_link <= by_window
                return out
            if got < want:
                out.dry = True
                return out
            want *= 2

    def _defer(self, n: int, cost: int) -> None:
        """Count ``n`` pages of ``cost`` bytes as sent in this tick (``_send_pages_of``'s
        accounting); with manual clear, CLEAR first where they enter a chunk the last GET
        reported bits in."""
        d = self._deferred
        if d is None:
            self.remaining_pages()  # counted before any bit is left standing
            d = self._deferred = DF.Deferred(self.cursor)
        lo = d.sent
        d.add(self.defer_tick, n)
        if self.vm.tracking.manual:
            self._clear_counted(d, lo, lo + n)
        self._remaining -= n
        self._count_sent(n, cost)

    def _count_sent(self, n: int, cost: int) -> None:
        """The counters of ``n`` pages sent at ``cost`` bytes each (a uniform cost is never a
        zero page's: they are QEMU's normal pages, per target page)."""
        nbytes = n * cost
        per = max(1, self.page // Q.TARGET_PAGE)
        self.total_bytes += nbytes
        self.total_pages_sent += n
        self.iter_pages += n
        self.normal += n * per
        if self.acc:
            self.acc.transferred_bytes += nbytes
            self.acc.pages_sent += n
            self.acc.normal += n * per

    def _clear_counted(self, d: DF.Deferred, lo: int, hi: int) -> None:
        """Manual clear for counted sends of ranks [lo, hi): where a chunk with bits of the
        last GET begins among them, the guest catches up to now and the chunks are CLEARed,
        slot by slot, as ``_send_pages_of`` would before sending them."""
        snaps = {sid: m.clear_snapshot for sid, m in self.slots.items()}
        if all(s is None for s in snaps.values()):
            return
        if d.ahead is None or (d.ahead_limit and hi > d.ahead_limit):
            # what the link can still carry in this batch (each tick's budget is at most its
            # time's bytes plus a page carried over): one scan of the bitmap per batch
            ticks = self.sim.batch_ticks_left()
            most = int(self.cfg.link_speed * self.sim.tick_ns * ticks / NS / self.defer_cost)
            limit = max(hi + most + 2 * ticks, 2 * d.ahead_limit)
            d.ahead = self._collect(limit)
            d.ahead_limit = limit if sum(p.size for _, p in d.ahead) == limit else 0
            d.clear_at = DF.clear_ranks(d.ahead, snaps, self.clear_chunk_pages)
        if not d.clears_between(lo, hi):
            return
        for sid, pages in DF.split(d.ahead, lo, hi):
            m = self.slots[sid]
            if m.clear_snapshot is not None:
                self._clear_before_send(sid, m, pages)

    def flush(self) -> None:
        """Write the counted sends: clear their bits, give each page the version it had at the
        end of its tick, move the cursor past the last (see engine.migration.deferred)."""
        d = self._deferred
        if d is None:
            return
        self._deferred = None
        self.sim.catch_up()
        gfn, wt = self.sim.batch_writes()
        ticks = d.send_ticks()
        start = 0
        looked_ahead = d.ahead is not None and (not d.ahead_limit or d.sent <= d.ahead_limit)
        sent = DF.split(d.ahead, 0, d.sent) if looked_ahead else self._collect(d.sent)
        for sid, pages in sent:
            t = ticks[start : start + pages.size]
            start += pages.size
            m, st = self.slots[sid], self.vm.slots[sid]
            DF.clear_sent(m.bitmap, pages)
            self.sim.note_pages(sid, pages)  # for a view: sent, no longer to send
            a, b = int(pages[0]), int(pages[-1]) + 1
            if b - a == pages.size:  # a run of pages (the first pass): copied as a range
                m.dest[a:b] = st.version[a:b]
            else:
                m.dest[pages] = st.version[pages]
            s = st.slot
            sel = (gfn >= s.base_gfn) & (gfn < s.base_gfn + s.npages)
            if sel.any() and not s.readonly:
                late = DF.later_writes(pages, t, gfn[sel] - s.base_gfn, wt[sel])
                subtract_ones(m.dest, late)
            if m.last_sent is not None:
                m.last_sent[pages] = self.round
            self.cursor = (sid, int(pages[-1]) + 1)

    def uniform_cost(self) -> int | None:
        """Stream bytes of every page when all cost the same, else None: QEMU tells a zero
        page apart (a cheaper record) only in a slot the guest has not populated."""
        if self.is_xen:
            return self.page
        if self.cfg.zero_page_detection == "none" or all(m.populated for m in self.slots.values()):
            return Q.page_bytes(False, self.page)
        return None

    def _costs(self, sid: int, pages: np.ndarray) -> np.ndarray:
        """Stream bytes per page: Xen the page; QEMU header + data, or a zero page."""
        if self.is_xen:
            return np.full(pages.size, self.page, dtype=np.int64)
        normal = Q.page_bytes(False, self.page)
        m = self.slots[sid]
        if m.populated or self.cfg.zero_page_detection == "none":
            return np.full(pages.size, normal, dtype=np.int64)
        zero = self.vm.slots[sid].version[pages] == 0
        return np.where(zero, Q.page_bytes(True, self.page), normal).astype(np.int64)

    def _collect(self, limit: int) -> list[tuple[int, np.ndarray]]:
        """Up to ``limit`` dirty pages in send order from the cursor, wrapping once."""
        order = sorted(self.slots)
        if not order or limit <= 0:
            return []
        here = self.cursor[0] in self.slots
        slot_i = order.index(self.cursor[0]) if here else 0
        offset = self.cursor[1] if here else 0
        out: list[tuple[int, np.ndarray]] = []
        got = 0
        for step in range(len(order) + 1):
            sid = order[(slot_i + step) % len(order)]
            lo = offset if step == 0 else 0
            hi = self.slots[sid].dest.size if step < len(order) else offset
            if hi <= lo:
                continue
            pages = DL.next_set_bits(self.slots[sid].bitmap, lo, hi, limit - got)
            if pages.size:
                out.append((sid, pages))
                got += int(pages.size)
            if got >= limit:
                break
        return out

    def _commit(self, batch: list[tuple[int, np.ndarray]], n: int) -> None:
        """Send the first ``n`` pages of ``batch``."""
        for sid, pages in batch:
            if n <= 0:
                return
            take = pages[:n]
            n -= int(take.size)
            self._send_pages_of(sid, take)
            self.cursor = (sid, int(take[-1]) + 1)

    def _send_pages_of(self, sid: int, pages: np.ndarray) -> None:
        m = self.slots[sid]
        if self.vm.tracking.manual and m.clear_snapshot is not None:
            self._clear_before_send(sid, m, pages)
        DL.clear_bits(m.bitmap, pages)
        self.sim.note_pages(sid, pages)  # for a view: sent, no longer to send
        if self._remaining is not None:
            self._remaining -= int(pages.size)
        costs = self._costs(sid, pages)
        m.dest[pages] = self.vm.slots[sid].version[pages]
        if m.last_sent is not None:
            m.last_sent[pages] = self.round
        nbytes = int(costs.sum())
        per = max(1, self.page // Q.TARGET_PAGE)
        zero = (
            int(np.count_nonzero(costs == Q.page_bytes(True, self.page))) if not self.is_xen else 0
        )
        self.total_bytes += nbytes
        self.total_pages_sent += int(pages.size)
        self.iter_pages += int(pages.size)
        self.duplicate += zero * per
        self.normal += (int(pages.size) - zero) * per
        if self.acc:
            self.acc.transferred_bytes += nbytes
            self.acc.pages_sent += int(pages.size)
            self.acc.duplicate += zero * per
            self.acc.normal += (int(pages.size) - zero) * per

    def _clear_before_send(self, sid: int, m: SlotMig, pages: np.ndarray) -> None:
        """migration_clear_memory_region_dirty_bitmap: KVM_CLEAR_DIRTY_LOG a clear-bitmap
        chunk the first time one of its pages goes (only bits the last GET reported)."""
        self.sim.catch_up()  # CLEAR re-protects: the guest's writes up to now come first
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
        self.sim.note_words(sid, words[mask != 0])  # for a view: cleared, re-protected
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

    def sync(self, t: int) -> tuple[int, int]:
        """migration_bitmap_sync (Xen: XEN_DOMCTL_SHADOW_OP_CLEAN): harvest the KVM log into
        the migration bitmap.  Closes the current round and starts the next (dirty-sync-count
        + 1).  Returns (pages the log reported, pages newly dirty in the migration bitmap).
        """
        self.sim.catch_up()  # the harvest sees the guest's writes up to now
        self.flush()
        before = len(self.vm.op_log)
        reported: dict[int, np.ndarray] = {}
        if self.vm.tracking.mode == "ring":
            self.sim.reap_rings()
        new = untracked = 0
        for sid, m in self.slots.items():
            words = self._harvest_slot(sid, m) if m.tracked else self._untracked_words(sid, m)
            if words is not None:
                new += DL.popcount(words & ~m.bitmap)  # ramblock_sync_dirty_bitmap
                m.bitmap |= words
                if m.tracked:
                    reported[sid] = words
                else:
                    untracked += m.dest.size
        self._remaining = None
        dirty = sum(DL.popcount(w) for w in reported.values()) + untracked
        ops = _merge(self.vm.op_log[before:])
        self.busy_until_ns = max(self.busy_until_ns, t) + int(ops.model_ns(self.vm.costs))
        assert self.acc is not None
        self.acc.harvest.add(ops)
        self.last_harvest = reported
        self.last_harvest_t_ns = t
        self.syncs += 1
        self.sim.record_harvest(self.syncs, t, reported)
        if self.is_xen or self.is_fixed:
            self.expected_downtime_ms = self.remaining_bytes() / self.cfg.bandwidth * 1000
        else:
            self._rates(t, dirty, new)
        if self.round > 0:
            self._close_round(t, dirty, new)
            self.acc = RoundAcc(t, tlbi0=Counter(self.vm.pgt.tlbi))
        # else QEMU's setup sync: migration_bitmap_sync counts it (0 → 1) before its GET, so
        # it and the enable before it belong to round 1, whose record start() opened
        self.round += 1
        return dirty, new

    def _rates(self, t: int, reported: int, new: int) -> None:
        """The end of migration_bitmap_sync: dirty_bytes_last_sync, and once the period is
        over a second long, migration_trigger_throttle and migration_update_rates."""
        self.dirty_bytes_last_sync = self.remaining_bytes()
        p = self.period
        p["new"] += new
        p["reported"] = p.get("reported", 0) + reported
        if not Q.period_due(t, p["t"]):
            return
        span = t - p["t"]
        self.dirty_pages_rate = Q.dirty_pages_rate(p["new"], span)
        self.reported_pages_rate = Q.dirty_pages_rate(p["reported"], span)
        step, p["high"] = Q.trigger_throttle(
            self.total_bytes - p["xfer0"],
            p["new"] * self.page,
            self.cfg.throttle_trigger_threshold,
            p["high"],
        )
        if step and self.cfg.auto_converge:
            self._throttle_up()
        p.update({"t": t, "xfer0": self.total_bytes, "new": 0, "reported": 0})

    def _untracked_words(self, sid: int, m: SlotMig) -> np.ndarray:
        """A slot whose writes no dirty log catches (logging off) is all dirty at every sync,
        as QEMU marks memory it cannot track (``cpu_physical_memory_set_dirty_range`` over
        the whole section in vfio's dirty sync when the container cannot track): it stays
        in what is pending, so in the switchover threshold and expected-downtime, and the
        final sync sends it again."""
        self.ring_pending.pop(sid, None)  # whatever the rings held is covered
        words = np.zeros_like(m.bitmap)
        DL.set_all(words, m.dest.size)
        return words

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

    def _close_round(self, t: int, dirty_pages: int = 0, new_pages: int = 0) -> None:
        acc = self.acc
        if acc is None:
            return
        self.sim.catch_up()  # the round counts the guest's faults and exits up to now
        self.acc = None
        vm, costs = self.vm, self.vm.costs
        tlbi = Counter(vm.pgt.tlbi)
        tlbi.subtract(acc.tlbi0)
        h = acc.harvest
        strategies = h.strategies
        flush = {k: v for k, v in h.tlbi.items()}
        self.rounds.append(
            {
                "round": self.round,
                "dirty_sync_count": self.round - int(self.is_xen or self.is_fixed),
                "t_start_ns": acc.t_start_ns,
                "t_end_ns": t,
                "transferred_bytes": acc.transferred_bytes,
                "pages_sent": acc.pages_sent,
                "duplicate": acc.duplicate,
                "normal": acc.normal,
                "normal_bytes": acc.normal * Q.TARGET_PAGE,
                "remaining_bytes": self.remaining_bytes(),
                "dirty_pages": dirty_pages,
                "new_dirty_pages": new_pages,
                "dirty_pages_rate": self.dirty_pages_rate,
                "reported_pages_rate": self.reported_pages_rate,
                "mbps": self.mbps,
                "threshold_bytes": self.threshold,
                "expected_downtime_ms": self.expected_downtime_ms,
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

    def _throttle_up(self) -> None:
        c = self.cfg
        self.throttle_pct = Q.throttle_step(
            self.throttle_pct, c.cpu_throttle_initial, c.cpu_throttle_increment, c.max_cpu_throttle
        )
        self.sim.message(f"auto-converge: vCPUs throttled to {self.throttle_pct} %")

    # -- switchover ---------------------------------------------------------------------------

    def stop_and_copy(self, t: int) -> None:
        """Stop the guest, final sync, send everything left at the link's speed (QEMU's
        ram_save_complete is not rate-limited), verify."""
        self.phase = "stop-and-copy"
        self.t_stop_ns = t
        self.sim.message(f"switchover at {t / 1e6:,.1f} ms: {self.reason}")
        busy_before = max(self.busy_until_ns, t)
        self.sync(t)  # ram_save_complete's final sync / suspend_and_send_dirty's CLEAN
        sent = self._send_budget(math.inf, math.inf)
        harvest_ns = max(self.busy_until_ns - busy_before, 0)
        send_ns = sent.nbytes / self.live_rate * NS
        self.downtime_ns = harvest_ns + send_ns
        self.t_end_ns = int(t + self.downtime_ns)
        self._close_round(self.t_end_ns)
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
            "qemu": None if self.is_xen else self.cfg.qemu,
            "total_time_ms": (end - self.t_start_ns) / 1e6 if self.phase != "idle" else 0.0,
            "downtime_ms": self.downtime_ns / 1e6,
            "expected_downtime_ms": self.expected_downtime_ms,
            "setup_time_ms": self.setup_ns / 1e6,
            "transferred_bytes": self.total_bytes,
            "duplicate": self.duplicate,
            "normal": self.normal,
            "normal_bytes": self.normal * Q.TARGET_PAGE,
            "rounds_count": len(self.rounds),
            "dirty_sync_count": self.syncs,
            "dirty_pages_rate": self.dirty_pages_rate,
            "mbps": self.mbps,
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
    for r in out.get("rounds", []):  # (a session without a migration has none)
        for key in MEASURED_ROUND_KEYS:
            r.pop(key, None)
        for counts in r.get("strategy_counts", {}).values():
            for key in MEASURED_STRATEGY_KEYS:
                counts.pop(key, None)
    return out

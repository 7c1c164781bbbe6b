"""The QEMU sender's loop turns (``Migration._qemu_step``, ``_send_windows``,
``_window_end_ns``), each boundary pinned with a value on each side (QEMU 10.1).

- migration/migration.c:migration_update_counters returns while ``current_time <
  s->iteration_start_time + BUFFER_DELAY`` (100 ms): a window is measured at the first loop
  turn 100 ms or more after it began, at 100 ms exactly included (the model's clock is in ns).
- migration/migration.c:migration_rate_limit: once the rate limit is exceeded
  (migration-stats.c:migration_rate_exceeded, ``rate_limit_used > rate_limit_max``) the
  thread waits on ``rate_limit_sem`` until the window's 100 ms are over; the model ends the
  wait at the first tick at or after max(window start + 100 ms, the end of a harvest that
  holds the thread), and that tick is a loop turn.
- system/cpu-throttle.c (9.2+): cpu_throttle_dirty_sync_timer_tick runs every
  CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS (5000 ms) with auto-converge on: due at 5 s exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from test_precopy_boundaries import MS, _iterating, _per_page_costs, _qemu_at

from engine.migration import qemu_rules as Q
from engine.migration.precopy import Migration


@pytest.mark.parametrize(
    ("age_ns", "measured"), [(100 * MS - 1, False), (100 * MS, True), (100 * MS + 1, True)]
)
def test_a_window_is_measured_at_a_turn_100_ms_or_more_after_it_began(age_ns, measured):
    _, m = _iterating()
    t = m.iterate_t0 + 10 * MS
    m.win_start = t - age_ns
    before = m.win_start
    assert _qemu_at(m, 10 * MS, left_bytes=100, due=True)  # a loop turn at t
    assert m.win_start == (t if measured else before)


def _exceeded_at(m, t1, *, due_ns, busy_ns=None):
    """``_send_windows`` over (t1 - tick, t1] with the limit exceeded and the window's 100 ms
    over at ``due_ns``; return whether the wait ended (a loop turn is due)."""
    tick = m.sim.tick_ns
    m.win_start = due_ns - Q.BUFFER_DELAY_NS
    m.win_xfer0 = m.total_bytes - (Q.rate_limit_per_window(m.cfg.bandwidth) + 1)  # 1 byte over
    m.busy_until_ns = t1 - tick if busy_ns is None else busy_ns
    m.decision_due = False
    m.carry_bytes = 7.0
    m._send_windows(t1 - tick, t1)
    # waiting: the link idles, nothing carried (a tick the harvest holds throughout keeps it)
    assert m.carry_bytes == (0.0 if m.busy_until_ns < t1 else 7.0)
    return m.decision_due


@pytest.mark.parametrize(
    ("due_after_tick_start", "ends"),
    [(-1, True), (0, True), (1, True), ("tick", True), ("tick+1", False)],
)
def test_the_wait_for_the_rate_limit_ends_at_the_first_tick_at_or_after_the_windows_end(
    due_after_tick_start, ends
):
    """The tick (t1 - tick, t1] ends the wait when the window ends at t1 or before; a window
    ending 1 ns after t1 ends the wait at the next tick."""
    _, m = _iterating()
    tick = m.sim.tick_ns
    t1 = m.iterate_t0 + 200 * MS
    offset = {"tick": tick, "tick+1": tick + 1}.get(due_after_tick_start, due_after_tick_start)
    assert _exceeded_at(m, t1, due_ns=t1 - tick + offset) is ends


@pytest.mark.parametrize(("busy_after_t1", "ends"), [(-1, True), (0, True), (1, False)])
def test_a_harvest_holding_the_thread_past_the_window_delays_the_end_of_the_wait(
    busy_after_t1, ends
):
    """The window ended long ago, but a harvest holds the thread until t1 + d: the wait ends
    at t1 when the hold is over by then (d <= 0), at the next tick otherwise."""
    _, m = _iterating()
    t1 = m.iterate_t0 + 300 * MS
    assert _exceeded_at(m, t1, due_ns=t1 - 150 * MS, busy_ns=t1 + busy_after_t1) is ends


def test_a_tick_the_harvest_holds_entirely_sends_nothing_and_keeps_the_carry():
    """busy until t1: the sender does not run in (t0, t1]; what the link carried over from
    before stays for the tick after."""
    _, m = _iterating()
    t1 = m.iterate_t0 + 20 * MS
    m.busy_until_ns = t1
    m.carry_bytes = 5000.0  # more than a page
    sent0, turn0 = m.total_bytes, m.decision_due
    m.win_xfer0 = m.total_bytes - (Q.rate_limit_per_window(m.cfg.bandwidth) + 1)  # exceeded
    m._send_windows(t1 - m.sim.tick_ns, t1)
    assert m.carry_bytes == 5000.0 and m.total_bytes == sent0
    m.win_xfer0 = m.total_bytes  # room again: still nothing may go in a held tick
    m._send_windows(t1 - m.sim.tick_ns, t1)
    assert m.carry_bytes == 5000.0 and m.total_bytes == sent0 and m.decision_due == turn0


@pytest.mark.parametrize(("after_ns", "fires"), [(-1, False), (0, True), (1, True)])
def test_the_throttle_sync_timer_fires_at_5_s(after_ns, fires):
    """QEMU 10.1 with auto-converge: the timer's next tick is due at its time exactly."""
    _, m = _iterating(auto_converge=True)
    due = m.throttle_timer_next
    t = due + after_ns
    m.iterate_t0 = t  # (no MAX_WAIT turn)
    m._qemu_step(t)
    assert m.throttle_timer_next == (due + Q.THROTTLE_SYNC_NS if fires else due)


def _measure(m, *, spent_ms, transferred, rate=1000.0, last_sync_bytes=123_456_000):
    """A window of ``spent_ms`` in which ``transferred`` bytes went, measured now."""
    t = m.iterate_t0 + 500 * MS
    m.win_start = t - int(spent_ms * MS)
    m.win_xfer0 = m.total_bytes - transferred
    m.dirty_pages_rate = rate
    m.dirty_bytes_last_sync = last_sync_bytes
    m.expected_downtime_ms = -1.0  # (a marker: not updated)
    m._measure(t)
    assert m.win_start == t and m.win_xfer0 == m.total_bytes  # a new window from now


def test_a_measured_window_by_hand():
    """migration_update_counters (QEMU 10.1): 25 000 000 bytes in 200 ms is 125 000 bytes/ms;
    threshold = 125 000 × 300 ms (downtime-limit) = 37 500 000 bytes; mbps = 25e6 × 8 /
    0.2 s / 1e6 = 1000; expected downtime = dirty bytes at the last sync / bytes per ms =
    123 456 000 / 125 000 = 987.648 ms."""
    _, m = _iterating(downtime_limit_ms=300)
    _measure(m, spent_ms=200, transferred=25_000_000)
    assert m.bw_per_ms == 125_000.0 and m.threshold == 37_500_000.0
    assert m.mbps == pytest.approx(1000.0, rel=1e-12)
    assert m.expected_downtime_ms == pytest.approx(987.648, rel=1e-12)


def test_avail_switchover_bandwidth_replaces_the_measured_one():
    """avail-switchover-bandwidth 500 B/s (8.2+) is 0.5 bytes/ms: threshold 0.5 × 300 = 150
    bytes, expected downtime 123 456 000 / 0.5 = 246 912 000 ms; the measured 125 000 bytes/ms
    is still what bw_per_ms and mbps show."""
    _, m = _iterating(downtime_limit_ms=300, avail_switchover_bandwidth=500)
    _measure(m, spent_ms=200, transferred=25_000_000)
    assert m.bw_per_ms == 125_000.0 and m.threshold == 150.0
    assert m.expected_downtime_ms == 246_912_000.0


@pytest.mark.parametrize(
    ("transferred", "updated"), [(9_999, False), (10_000, False), (10_001, True)]
)
def test_expected_downtime_needs_more_than_10000_bytes_in_the_window(transferred, updated):
    """``if (dirty_pages_rate && transferred > 10000)``: 10 000 bytes are not enough."""
    _, m = _iterating()
    _measure(m, spent_ms=100, transferred=transferred)
    assert (m.expected_downtime_ms != -1.0) is updated


def test_expected_downtime_needs_a_dirty_rate():
    _, m = _iterating()
    _measure(m, spent_ms=100, transferred=10**6, rate=0.0)
    assert m.expected_downtime_ms == -1.0


# -- _send_budget (pages of different costs) against a per-page loop ------------------------

NORMAL, ZERO = Q.page_bytes(False, 4096), Q.page_bytes(True, 4096)  # 4104 and 9 bytes


class _Queue:
    """What ``_send_budget`` asks of the migration: pages in send order (two slots, their
    costs given), collected up to a limit from a cursor, and the first n of a batch sent."""

    page, is_xen, defer_tick = 4096, False, None

    def __init__(self, costs):
        self.costs = list(costs)
        self.cursor = 0
        self.collected = []

    def flush(self):
        pass

    def remaining_pages(self):
        return len(self.costs) - self.cursor

    def _collect(self, limit):
        self.collected.append(limit)
        pages = np.arange(self.cursor, min(len(self.costs), self.cursor + limit))
        half = pages.size // 2  # (split over two slots, as a batch may be)
        return [(s, p) for s, p in ((0, pages[:half]), (1, pages[half:])) if p.size]

    def _costs(self, sid, pages):
        return np.array([self.costs[i] for i in pages], dtype=np.int64)

    def _commit(self, batch, n):
        self.cursor += n


QUEUES = [
    [NORMAL] * 5,
    [ZERO, NORMAL, ZERO, ZERO, NORMAL, NORMAL, ZERO],
    [NORMAL, ZERO] * 6,
    [ZERO] * 3,
    [ZERO] * 4,
    [],
]


def _budgets(costs, extra):
    """The first prefix sums of the queue and 1 byte below and above each (and ``extra``)."""
    out = set(extra)
    for total in np.cumsum([0, *costs]).tolist()[:5]:
        out |= {total - 1.0, float(total), total + 1.0}
    return sorted(out)


def test_send_budget_matches_a_page_by_page_loop():
    """Every queue (normal 4104-byte and zero 9-byte records, QEMU's legacy zero-page
    detection), every link and window budget at, below and above each page boundary: the same
    pages, bytes, dry and link-bound flags as the per-page loop."""
    checked = 0
    for costs in QUEUES:
        for link in _budgets(costs, [0.5, sum(costs) + 1.0]):  # (and all of them)
            if link < 0:
                continue  # (the link's budget is never negative)
            for window in _budgets(costs, [math.inf]):
                q = _Queue(costs)
                got = Migration._send_budget(q, link, window)
                want = _per_page_costs(link, window, costs)
                assert (got.pages, got.nbytes, got.dry, got.link_bound) == (
                    want.pages,
                    want.nbytes,
                    want.dry,
                    want.link_bound,
                ), (costs, link, window)
                assert q.cursor == want.pages
                checked += 1
    assert checked > 500


def _one_tick(m, *, budget, room):
    """``_send_windows`` over a tick in which the sender runs for its last 4 ns (a harvest
    held it before) with ``budget`` bytes of link (4 ns of the link plus the carry) and
    ``room`` bytes left in the window; returns the bytes sent."""
    t1 = m.iterate_t0 + 20 * MS
    m.busy_until_ns = t1 - 4
    m.carry_bytes = budget - m.cfg.link_speed * 4 / 1e9
    m.win_xfer0 = m.total_bytes - (Q.rate_limit_per_window(m.cfg.bandwidth) - room)
    before = m.total_bytes
    m._send_windows(t1 - m.sim.tick_ns, t1)
    return m.total_bytes - before


def test_the_link_carries_what_it_could_not_use_into_the_next_tick():
    """Link-bound: 2.5 pages' bytes go as 2 pages; the half page left waits for the next
    tick (the link was busy with it), so the carry is the budget less the bytes sent."""
    _, m = _iterating()
    cost = m.uniform_cost()
    sent = _one_tick(m, budget=2.5 * cost, room=10**9)
    assert sent == 2 * cost and m.carry_bytes == pytest.approx(0.5 * cost, abs=1e-6)


@pytest.mark.parametrize("room", [0, 100])
def test_a_window_bound_sender_carries_nothing(room):
    """Window-bound: with 0 or 100 bytes of the window's share left one page still starts
    (the limit is checked before a page), then the sender waits for the window's end and the
    link idles: nothing is carried."""
    _, m = _iterating()
    cost = m.uniform_cost()
    sent = _one_tick(m, budget=5.5 * cost, room=room)
    assert sent == cost and m.carry_bytes == 0.0


def test_qemu_7_2_expects_the_downtime_of_what_is_left_now():
    """QEMU 7.2's migration_update_counters: expected_downtime = the bytes left to send now
    / bandwidth (125 000 bytes/ms here), not the dirty bytes at the last sync (8.2+)."""
    _, m = _iterating(qemu="7.2")
    left = m.remaining_bytes()
    assert 0 < left <= 64 << 20 and left != 123_456_000
    _measure(m, spent_ms=200, transferred=25_000_000)
    assert m.expected_downtime_ms == pytest.approx(left / 125_000, rel=1e-12)


@pytest.mark.parametrize("past_tick_ns", [-1, 0, 1])
def test_the_wait_ends_on_a_tick_boundary(past_tick_ns):
    """The end of a wait for the rate limit is a tick (the batching stops there too): a
    window ending on a tick ends the wait there, one ending 1 ns later at the next tick."""
    _, m = _iterating()
    tick = m.sim.tick_ns
    base = 1000 * tick
    m.win_start = base - Q.BUFFER_DELAY_NS + past_tick_ns
    m.busy_until_ns = 0
    end = m._window_end_ns()
    assert end == (base if past_tick_ns <= 0 else base + tick)
    assert isinstance(end, int) and end % tick == 0

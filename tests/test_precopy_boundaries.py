"""Boundaries of the pre-copy loop that whole runs rarely land on, each pinned on its own.

- QEMU's MAX_WAIT: migration/ram.c ram_save_iterate breaks out of its sending loop when
  ``t1 = (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - t0) / 1000000`` (whole milliseconds, an
  integer division) is ``> MAX_WAIT`` (50): 50.999 ms of sending is not enough, 51 ms is
  (the same in 7.2 .. 10.1).
- The migration thread is held by a harvest until ``busy_until_ns``; a decision due waits
  for it and is taken at that very tick (the harvest is over).
- The rate limit is exceeded only when more than the window's share is used
  (migration-stats.c migration_rate_exceeded: ``rate_limit_used > rate_limit_max``), so a
  window with 0 bytes left still lets a page start and the MAX_WAIT point is a decision; with
  -1 byte left the sender waits for the window's end instead.
- Xen and policy ``fixed`` have no measured bandwidth: the expected downtime shown is what is
  left to send at ``bandwidth`` bytes/s, in milliseconds.
- ``Migration._send_counted`` (every page costs the same) against a plain per-page loop of
  ram_save_iterate's rule: before each page the window is checked (pages start while at most
  ``window_bytes`` are used), and a page goes only if it fits in what the link can still
  carry in the tick.
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from test_migration import ZERO_COSTS, session

from app.heatmap_data import to_codes
from engine.migration import qemu_rules as Q
from engine.migration.precopy import Migration, Sent
from engine.migration.simulation import Simulation

MS = 1_000_000


def _iterating(policy="qemu", **migration):
    """A simulation whose migration has just started (bitmap mode, 64 MiB, nothing written)."""
    data = session(
        costs=ZERO_COSTS,
        workloads=[],
        migration={"policy": policy, "start_ms": 5, **migration},
    )
    sim = Simulation.from_dict(data)
    while sim.migration.phase != "iterating":
        sim.step_tick()
    return sim, sim.migration


def _qemu_at(m, elapsed_ns, *, left_bytes=None, busy_ns=None, due=False):
    """Call ``_qemu_step`` ``elapsed_ns`` after ram_save_iterate began with the given window
    room and harvest hold; return whether it decided (``iterate_t0`` moved to ``t``)."""
    t0 = m.iterate_t0
    t = t0 + elapsed_ns
    m.busy_until_ns = t0 if busy_ns is None else busy_ns
    m.decision_due = due
    if left_bytes is not None:  # the window's room, in bytes
        m.win_xfer0 = m.total_bytes - (Q.rate_limit_per_window(m.cfg.bandwidth) - left_bytes)
    m._qemu_step(t)
    return m.iterate_t0 == t


@pytest.mark.parametrize(
    ("elapsed_ns", "decides"),
    [(50 * MS, False), (51 * MS - 1, False), (51 * MS, True), (51 * MS + 1, True)],
)
def test_max_wait_ends_ram_save_iterate_after_51_whole_milliseconds(elapsed_ns, decides):
    """ram.c: ``(now - t0) / 1000000 > MAX_WAIT`` in integer milliseconds: 50 ms and
    50.999999 ms do not break the loop, 51 ms does (by hand: 50 > 50 is false, 51 > 50)."""
    _, m = _iterating()
    assert (elapsed_ns // MS > 50) == decides  # the C expression, restated
    assert _qemu_at(m, elapsed_ns, left_bytes=4096) is decides


@pytest.mark.parametrize(("left", "decides"), [(-1, False), (0, True), (1, True)])
def test_max_wait_is_a_decision_only_while_the_window_has_room(left, decides):
    """At the MAX_WAIT point the sender is still in ram_save_iterate only if the rate limit
    is not exceeded (``rate_limit_used > rate_limit_max``): 1 and 0 bytes left let a page
    start, -1 (one byte over the share) does not."""
    _, m = _iterating()
    assert _qemu_at(m, 60 * MS, left_bytes=left) is decides


@pytest.mark.parametrize(("busy_after_ns", "decides"), [(-1, True), (0, True), (1, False)])
def test_a_due_decision_waits_for_the_harvest_hold_and_no_longer(busy_after_ns, decides):
    """A decision due at t is taken when the thread is free at t: held until t - 1 or until
    t exactly (the harvest is over), not when held until t + 1."""
    _, m = _iterating()
    t = m.iterate_t0 + 10 * MS
    assert _qemu_at(m, 10 * MS, left_bytes=0, busy_ns=t + busy_after_ns, due=True) is decides


def test_fixed_policy_expected_downtime_is_what_is_left_at_the_bandwidth_in_ms():
    """Policy fixed never sends: at its first harvest (before it empties the migration
    bitmap) all 16 384 pages of the 64 MiB slot are left; at 256 Mbit/s = 32 000 000 B/s that
    is 67 108 864 / 32e6 s = 2097.152 ms."""
    sim, m = _iterating("fixed", harvest_every_ms=10)
    while m.syncs == 0:
        sim.step_tick()
    assert m.expected_downtime_ms == pytest.approx(2097.152, rel=1e-12)


def test_xen_expected_downtime_is_what_is_left_at_the_bandwidth_in_ms():
    """Xen (no measured bandwidth): a harvest sets the expected downtime to the bytes left
    (pages × 4096) at ``bandwidth`` B/s, in ms: 100 Mbit/s = 12 500 000 B/s."""
    sim, m = _iterating("xen", bandwidth="100Mbit/s")
    sim.step_tick()  # a tick of sending: some pages gone, most left
    m.sync(sim.t_ns)
    left = m.remaining_pages()
    assert 0 < left < 16384
    assert m.expected_downtime_ms == pytest.approx(left * 4096 / 12_500_000 * 1000, rel=1e-12)


def test_each_sync_holds_the_thread_for_its_own_harvest_only():
    """A GET of the 64 MiB slot reads 16 384 / 64 = 256 bitmap words; at 1000 ns a word
    (every other cost 0) each sync holds the migration thread 256 us from when it starts,
    the second and third as the first (the harvest counts only its own operations)."""
    sim = Simulation.from_dict(
        session(costs={**ZERO_COSTS, "bitmap_word": 1000}, workloads=[], migration={"start_ms": 5})
    )
    while sim.migration is None or sim.migration.phase != "iterating":
        sim.step_tick()
    m = sim.migration
    for late in (7, 0, 0):
        t = m.busy_until_ns + late
        m.sync(t)
        assert m.busy_until_ns == t + 256_000


def test_a_sync_keeps_what_it_harvested_and_when():
    """Pages 3 and 70 of the slot written after the start: the harvest at t reports exactly
    those (word 0 bit 3, word 1 bit 6) and is kept with its time (the app's export and
    bitmap view read it)."""
    sim, m = _iterating()
    base = 0x40000000 >> 12
    sim.vm.access(np.array([base + 3, base + 70]), np.array([0, 0]), np.array([True, True]))
    t = sim.t_ns + 3
    m.sync(t)
    assert m.last_harvest_t_ns == t
    assert set(m.last_harvest) == {0}
    words = m.last_harvest[0]
    assert words.size == 256 and int(words[0]) == 1 << 3 and int(words[1]) == 1 << 6
    assert not words[2:].any()


def test_untracked_slots_are_all_dirty_and_all_new_at_a_sync_summed_over_slots():
    """Two slots without log_dirty (64 MiB and 32 MiB: 16 384 + 8192 pages), everything sent
    (the migration bitmap empty): a sync marks both whole slots dirty, so 24 576 pages dirty
    and 24 576 new, each slot counted once."""
    slots = [
        {"id": 0, "base": "0x40000000", "size": "64MiB", "flags": [], "backing": "2MiB"},
        {"id": 1, "base": "0x48000000", "size": "32MiB", "flags": [], "backing": "2MiB"},
    ]
    sim = Simulation.from_dict(
        session(costs=ZERO_COSTS, workloads=[], memslots=slots, migration={"start_ms": 5})
    )
    while sim.migration is None or sim.migration.phase != "iterating":
        sim.step_tick()
    m = sim.migration
    for sm in m.slots.values():
        sm.bitmap[:] = 0
    m.remaining_pages_changed()
    assert m.sync(sim.t_ns + 1) == (24576, 24576)


def test_ring_entries_of_a_slot_that_stopped_logging_are_not_harvested_again_later():
    """Ring mode: the reaper collected pages 5 and 9 of slot 0, then its logging went off.
    The next sync marks the whole slot dirty (16 384 pages), which covers them; once logging
    is back on and everything was sent, a sync with nothing written reports nothing (the two
    old entries are not reported a second time)."""
    sim = Simulation.from_dict(
        session(
            costs=ZERO_COSTS,
            workloads=[],
            tracking={"mode": "ring", "strategy": "range"},
            migration={"start_ms": 5},
        )
    )
    while sim.migration is None or sim.migration.phase != "iterating":
        sim.step_tick()
    m = sim.migration
    m.add_ring_pages(np.array([0, 0], dtype=np.uint32), np.array([5, 9], dtype=np.uint64))
    sim.apply_edit({"t_ms": 6, "action": "set_memslot_flags", "id": 0, "flags": []})
    assert m.sync(sim.t_ns + 1)[0] == 16384
    sim.apply_edit({"t_ms": 7, "action": "set_memslot_flags", "id": 0, "flags": ["log_dirty"]})
    m.slots[0].bitmap[:] = 0  # everything sent
    m.remaining_pages_changed()
    assert m.sync(sim.t_ns + 2) == (0, 0)


def test_the_rounds_tlbi_counts_add_up_to_the_migrations():
    """Each round counts the TLB invalidations issued since the previous sync: over a whole
    run the rounds' counts add up to what the page tables issued from the start (none
    counted twice)."""
    sim = Simulation.from_dict(session(migration={"start_ms": 5, "max_rounds": 4}))
    while sim.migration is None or sim.migration.phase != "iterating":
        sim.step_tick()
    m = sim.migration
    start = Counter(m.acc.tlbi0)
    sim.run()
    issued = Counter(sim.vm.pgt.tlbi)
    issued.subtract(start)
    rounds = Counter()
    for r in m.rounds:
        rounds.update(r["tlbi"])
    assert len(m.rounds) >= 3 and rounds["ipa"] > 0
    assert +rounds == +issued


# -- _send_counted against a per-page loop ------------------------------------------------------


class _Pages:
    """The two things ``_send_counted`` asks of the migration: what is left, and to count
    ``n`` pages as sent."""

    def __init__(self, left: int):
        self.left = left
        self.counted = []

    def remaining_pages(self) -> int:
        return self.left

    def _defer(self, n: int, cost: int) -> None:
        assert n > 0
        self.left -= n
        self.counted.append((n, cost))


def _per_page_costs(link: float, window: float, costs) -> Sent:
    """ram_save_iterate one page at a time over pages of these ``costs``: stop when no page
    is left (dry), when more than the window's share is used before a page (the rate limit,
    ``rate_limit_used > rate_limit_max``), or when the page would not fit in what the link
    carries (link-bound: it stopped the loop first or at the same page)."""
    out = Sent()
    for cost in costs:
        fits = out.nbytes + cost <= link
        room = out.nbytes <= window
        if not (fits and room):
            out.link_bound = not fits
            return out
        out.pages += 1
        out.nbytes += cost
    out.dry = True
    return out


def _per_page(link: float, window: float, cost: int, left: int) -> Sent:
    """``_per_page_costs`` over ``left`` pages of one cost."""
    return _per_page_costs(link, window, [cost] * left)


COST = 4104  # a normal page: 4096 bytes + the 8-byte header


@pytest.mark.parametrize("left", [0, 1, 2, 3, 50])
@pytest.mark.parametrize(
    "link", [0.0, COST - 1, COST, COST + 0.5, 2 * COST - 1, 2 * COST, 3 * COST, 10.5 * COST]
)
@pytest.mark.parametrize("window", [-1.0, 0.0, 1.0, COST, COST + 1, 2 * COST, 3 * COST, math.inf])
def test_send_counted_matches_a_page_by_page_loop(left, link, window):
    """Budgets below, at and above one, two and three pages of the link and of the window,
    with 0 to 3 pages left (and plenty): the same pages, bytes, dry and link-bound flags as
    the loop, and the pages counted once."""
    pages = _Pages(left)
    got = Migration._send_counted(pages, link, window, COST)
    want = _per_page(link, window, COST, left)
    assert (got.pages, got.nbytes, got.dry, got.link_bound) == (
        want.pages,
        want.nbytes,
        want.dry,
        want.link_bound,
    )
    assert got.dry is want.dry and got.link_bound is want.link_bound  # booleans, not None
    assert sum(n for n, _ in pages.counted) == want.pages == left - pages.left


def _sent_in_round(policy: str, r: int):
    """A 64 MiB guest migrating (policy ``policy``, ``max_rounds`` at its largest, 100,000),
    moved to round ``r`` after its first 2 ms, then run 1 ms more: the pages that tick sends
    are sent in round ``r``.  Returns the simulation."""
    data = session(costs=ZERO_COSTS, migration={"policy": policy, "max_rounds": 100_000})
    sim = Simulation.from_dict(data)
    sim.advance(2)
    assert sim.migration.phase == "iterating"
    sim.migration.round = r
    sim.advance(1)
    return sim


@pytest.mark.parametrize("policy", ["qemu", "xen"])
@pytest.mark.parametrize("r", [32767, 32768, 100_000])
def test_last_sent_keeps_rounds_past_int16(policy, r):
    """max_rounds (and xen_max_rounds) go to 100,000, so a page can be sent in round 32,768
    or later: the round-last-sent layer records the round itself on each side of int16's
    32,767 and at 100,000 (QEMU's counted sends through ``flush``, Xen's through
    ``_send_pages_of``); pages sent before the round moved keep an earlier round (1)."""
    sim = _sent_in_round(policy, r)
    layer = sim.layer("last_sent")
    assert int(layer.max()) == r
    assert set(np.unique(layer).tolist()) == {-1, 1, r}


def test_last_sent_heat_map_codes_past_round_129():
    """The heat map colours round r of a top round T as code 2 + r × 253 // T (heatmap_data
    ``to_codes``): round 130 of 130 is the top code 255.  130 × 253 = 32,890 is past int16,
    so the layer's dtype must hold it (an int16 layer gave code 149)."""
    sim = _sent_in_round("qemu", 130)
    codes, top = to_codes(sim.layer("last_sent"), "last_sent")
    assert top == 130.0
    assert set(np.unique(codes).tolist()) == {1, 2 + 253 // 130, 255}

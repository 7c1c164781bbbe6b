"""Rules of engine/migration/precopy.py and deferred.py that the survivors of the precopy group's
mutation run (1 Dec 2026) showed untested: the ring reaper's period, Xen's steps and sender,
zero-page detection ``none``, cancel's logging-off, the CLEAR's hold on the sender, the result's
times, and deferred.py's helpers (``Deferred``, ``split``, ``clear_sent``).

Expected values are worked out by hand in each docstring, from the QEMU (migration/ram.c,
accel/kvm/kvm-all.c, 10.1) and Xen (tools/libs/guest/xg_sr_save.c 4.20, tools/libxc/
xc_domain_save.c 4.5) rules that docs/fidelity.md cites, or come from a small plain reference
written here; none is read back from the engine.  Small guests, a few ticks each.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_migration import ZERO_COSTS, session

from engine.kvm import dirtylog as DL
from engine.kvm.oplog import SetMemslot
from engine.migration import deferred as DF
from engine.migration.simulation import Simulation

MS = 1_000_000
NS = 1_000_000_000
BASE = 0x4000_0000


def _sim(size="2MiB", populate=True, tracking=None, costs=ZERO_COSTS, **migration):
    """The guest of ``session`` with one slot of ``size`` backed by 4 KiB pages (``populate``
    false: the guest never touched it), no workload, no modelled costs unless given."""
    data = session(costs=costs, workloads=[], migration=migration)
    data["memslots"][0].update(size=size, backing="4KiB", populate=populate)
    if tracking:
        data["tracking"] = {**data["tracking"], **tracking}
    return Simulation.from_dict(data)


def _started(size="2MiB", **kw):
    sim = _sim(size, **kw)
    sim.migration.start(0)
    return sim, sim.migration


def _trace(tmp_path, rows):
    """A trace workload writing ``rows`` (t_ns, page of the slot at BASE)."""
    path = tmp_path / "w.csv"
    path.write_text("t_ns,ipa\n" + "".join(f"{t},{BASE + p * 4096}\n" for t, p in rows))
    return [{"name": "w", "kind": "trace", "path": str(path)}]


# -- the ring reaper ------------------------------------------------------------------------------


def test_the_ring_reaper_runs_once_a_second():
    """accel/kvm/kvm-all.c kvm_dirty_ring_reaper_thread: reap, then sleep(1).  The first reap
    is due at the next whole second (1 s for a start at 0): a tick ending at 1 ms does not
    reap (still due at 1 s), the tick ending at 1 s does and the next is due at 2 s; a tick
    ending at 1.001 s does nothing more (still 2 s)."""
    sim, m = _started(tracking={"mode": "ring", "ring_entries": 256})
    assert m.reap_next == NS
    m.tick(0, MS)
    assert m.reap_next == NS
    m.tick(NS - MS, NS)
    assert m.reap_next == 2 * NS
    m.tick(NS, NS + MS)
    assert m.reap_next == 2 * NS


def test_ring_offsets_past_the_slot_are_dropped():
    """kvm-all.c kvm_dirty_ring_mark_page: an entry whose offset is not below the slot's
    pages (``offset >= memory_size / page size``: a slot that shrank) is ignored.  A 64-page
    slot: offsets 3 and 63 are kept, 64 and 70 are dropped."""
    sim, m = _started("256KiB", tracking={"mode": "ring", "ring_entries": 256})
    m.add_ring_pages(np.zeros(4, np.int64), np.array([3, 63, 64, 70], np.int64))
    assert np.concatenate(m.ring_pending[0]).tolist() == [3, 63]


# -- Xen ------------------------------------------------------------------------------------------


def test_xen_step_acts_at_the_tick_where_the_hold_ends():
    """A harvest's modelled cost holds the sender over [t, busy_until_ns): at busy_until_ns it
    is free (QEMU's step returns only for t < busy_until_ns, and sends resume from
    busy_until_ns on).  Xen, 64 pages sent in one 1 ms tick at 300 MB/s (262,144 of 300,000
    bytes), nothing written: with the hold ending at exactly 1 ms, the step at 1 ms ends
    live iteration 1 and its CLEAN finds 0 dirty pages: simple_precopy_policy's stop
    (0 <= 0 < 50), and with nothing to send the suspend follows at once (send_memory_live)."""
    sim, m = _started("256KiB", policy="xen", bandwidth=300_000_000)
    m._send_plain(0, MS)
    assert m.remaining_pages() == 0
    m.busy_until_ns = MS
    m._xen_step(MS)
    assert m.live_iters == 1
    assert (m.phase, m.outcome) == ("done", "completed")


def test_xen_45_counts_each_iterations_pages_from_zero(tmp_path):
    """xc_domain_save.c (4.5) sets sent_this_iter = 0 at each iteration and stops after one
    with ``sent_this_iter + skip_this_iter < 50``.  64 pages at 32,768,000 bytes/s: 8 pages
    a 1 ms tick; pages 0-48 written at 0.5 ms.  Iteration 1 sends the 64 pages by 8 ms (64
    >= 50 and 64 <= 3 × 64: go on), its CLEAN finds the 49 written; iteration 2 sends them by
    15 ms (6 × 8 + 1): 49 < 50, the last iteration follows."""
    data = session(
        costs=ZERO_COSTS,
        workloads=_trace(tmp_path, [(500_000, p) for p in range(49)]),
        migration={"policy": "xen-4.5", "bandwidth": 32_768_000},
    )
    data["memslots"][0].update(size="256KiB", backing="4KiB")
    result = Simulation.from_dict(data).run()
    assert result["reason"] == "xen-4.5: 49 pages sent in iteration 2, fewer than 50"
    assert [r["pages_sent"] for r in result["rounds"][:2]] == [64, 49]
    assert result["rounds"][1]["t_end_ns"] == 15 * MS


def test_xen_sender_idles_after_running_dry():
    """Xen's sender goes at ``bandwidth``; bytes not used in a tick carry over only while the
    link holds it back (more pages waiting).  At 303,103,500 bytes/s a 1 ms tick carries
    303,103.5 bytes: 73 pages of 4,096 (299,008; 74 would need 303,104).  Tick 0 has 3 pages
    to send and runs dry: nothing carries over, so tick 1, with 90 pages waiting, sends 73."""
    sim, m = _started("1MiB", policy="xen", bandwidth=303_103_500)
    bits = m.slots[0].bitmap
    bits[:] = 0
    bits[0] = np.uint64(0b111)  # pages 0-2
    m.remaining_pages_changed()
    m._send_plain(0, MS)
    assert (m.total_pages_sent, m.carry_bytes) == (3, 0.0)
    bits[1] = np.uint64(2**64 - 1)  # pages 64-127 and 128-153: 90 pages
    bits[2] = np.uint64((1 << 26) - 1)
    m.remaining_pages_changed()
    m._send_plain(MS, 2 * MS)
    assert m.total_pages_sent == 3 + 73


def test_xen_sends_no_zero_page_records():
    """Xen's stream has no zero-page records (xg_sr_save.c write_batch sends every page's
    data; docs/fidelity.md: no zero-page accounting), so a guest that never touched its
    memory still sends normal pages only: 2 ticks at 32,000,000 bytes/s, 7 + 8 pages, all
    counted normal (4 KiB target pages), none duplicate."""
    sim, m = _started("1MiB", populate=False, policy="xen", bandwidth=32_000_000)
    m.tick(0, MS)
    m.tick(MS, 2 * MS)
    assert (m.total_pages_sent, m.normal, m.duplicate) == (15, 15, 0)
    assert (m.acc.normal, m.acc.duplicate) == (15, 0)


# -- zero-page detection --------------------------------------------------------------------------


def test_uniform_cost_by_zero_page_detection():
    """Every page costs the same when no page can go as a zero page: Xen (4,096 bytes, no
    headers), a QEMU guest that populated its memory, or zero-page-detection ``none`` (QEMU
    9.0+ ram.c save_zero_page: ``if (migrate_zero_page_detection() ==
    ZERO_PAGE_DETECTION_NONE) return 0``): 8 + 4,096 bytes.  With ``legacy`` and a slot
    never touched, zero pages cost 9 bytes: not uniform."""
    assert _sim(populate=False, policy="xen").migration.uniform_cost() == 4096
    for populate, detection, want in [
        (True, "legacy", 4104),
        (False, "none", 4104),
        (False, "legacy", None),
    ]:
        sim, m = _started(populate=populate, zero_page_detection=detection)
        assert m.uniform_cost() == want, (populate, detection)


def test_detection_none_sends_untouched_pages_as_normal_pages():
    """zero-page-detection ``none``: save_zero_page never sends a zero page, so a 1 MiB slot
    the guest never touched goes as 256 normal pages of 4,104 bytes, none duplicate; with
    ``legacy`` the same pages go as zero pages of 9 bytes (save_zero_page).  Either way they
    fit in the first 1 ms tick (1,050,624 of the 10 Gbit/s link's 1,250,000 bytes)."""
    for detection, zero in [("none", 0), ("legacy", 256)]:
        sim, m = _started("1MiB", populate=False, zero_page_detection=detection)
        m.tick(0, MS)
        assert m.total_pages_sent == 256
        assert (m.duplicate, m.normal) == (zero, 256 - zero)
        assert m.total_bytes == zero * 9 + (256 - zero) * 4104


@pytest.mark.parametrize(
    ("populate", "detection", "want"),
    [(True, "legacy", 1700), (False, "none", 1700), (False, "legacy", 1)],
)
def test_quiet_ticks_with_zero_pages(populate, detection, want):
    """QEMU, 16,384 pages, 256 Mbit/s, 300 ms limit, 1 ms ticks (as test_quiet_ticks_qemu_
    bound_by_the_windows): with every page at 4,104 bytes no sync is possible for 1,700
    ticks.  zero-page-detection ``none`` keeps that bound for an untouched slot (no page is
    cheaper).  With ``legacy`` an untouched page may go as 9 bytes: the window's share
    (3,200,000 // 9 + 1 pages) covers the 14,034 pages that must go first, and the link
    carries 1,250,000 // 9 + 2 = 138,890 a tick, more than the 16,384 pending: the sender
    may run dry in its first tick, a decision with a sync possible: 1 tick."""
    sim, m = _started(
        "64MiB", populate=populate, zero_page_detection=detection, bandwidth="256Mbit/s"
    )
    assert m.quiet_ticks(0, MS) == want


# -- manual clear ---------------------------------------------------------------------------------


def test_manual_clear_skips_a_slot_without_logging_when_sending():
    """Manual clear, slot 0 logging (64 pages), slot 1 without KVM_MEM_LOG_DIRTY_PAGES (64
    pages): no GET is made for slot 1, so there is nothing of it to CLEAR
    (migration_clear_memory_region_dirty_bitmap clears only what a GET reported).  The first
    1 ms tick sends all 128 pages (304 fit) and runs dry: QEMU 10.1 completes (0 pending <=
    threshold 0), and the final sync marks slot 1 all dirty again (untracked), so the
    stop-and-copy sends its 64 pages once more; no CLEAR at all (no GET found a bit)."""
    data = session(costs=ZERO_COSTS, workloads=[], tracking={"mode": "manual-clear"})
    data["memslots"] = [
        {"id": 0, "base": BASE, "size": "256KiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {"id": 1, "base": BASE + (1 << 20), "size": "256KiB", "backing": "4KiB"},
    ]
    sim = Simulation.from_dict(data)
    sim.keep_harvests = True
    m = sim.migration
    m.start(0)
    assert m.slots[1].clear_snapshot is None
    m.tick(0, MS)
    rounds = m.rounds
    assert [r["pages_sent"] for r in rounds] == [128, 64] and m.outcome == "completed"
    assert m.clears == []
    assert [s.last_sent.tolist() for s in m.slots.values()] == [[1] * 64, [2] * 64]


def test_a_clear_holds_the_sender_for_its_cost():
    """Manual clear, 512 pages, chunks of 64 pages; only bitmap words cost (1,000 ns each).
    The last GET reported page 5: sending page 0 first CLEARs chunk 0, one mask word
    (kvm_clear_dirty_log_protect reads the mask a long at a time): 1,000 ns more hold on the
    sender, from the end of the hold already there (the setup's)."""
    sim, m = _started(
        tracking={"mode": "manual-clear", "clear_chunk": "256KiB"},
        costs=dict(ZERO_COSTS, bitmap_word=1000),
    )
    sim.keep_harvests = True
    m.slots[0].clear_snapshot[0] = np.uint64(1 << 5)
    before = m.busy_until_ns
    assert before > 0
    m.tick(0, MS)
    assert [(c["first_page"], c["mask"]) for c in m.clears] == [(0, ["0x20"])]
    assert m.busy_until_ns == before + 1000


# -- cancel ---------------------------------------------------------------------------------------


def test_cancel_turns_logging_off_only_where_it_was_on():
    """migrate_cancel → memory_global_dirty_log_stop: kvm_slot_update_flags issues no ioctl
    when the flags do not change ("If nothing changed effectively, no need to issue
    ioctl").  Slot 0 logs, slot 1 does not: one KVM_SET_USER_MEMORY_REGION, slot 0's,
    with the flags cleared; slot 1 is left alone."""
    data = session(costs=ZERO_COSTS, workloads=[])
    data["memslots"] = [
        {"id": 0, "base": BASE, "size": "256KiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {"id": 1, "base": BASE + (1 << 20), "size": "256KiB", "backing": "4KiB"},
    ]
    sim = Simulation.from_dict(data)
    m = sim.migration
    m.start(0)
    sim.vm.oplog = []
    m.cancel(MS, "test")
    sets = [(op.slot, op.flags) for op in sim.vm.oplog if isinstance(op, SetMemslot)]
    assert sets == [(0, 0)]
    assert m.outcome == "cancelled"


# -- accounting and the result --------------------------------------------------------------------


def test_ring_full_exits_add_up_over_the_round():
    """A round counts every ring-full exit of the guest's passes in it: 2, then 3, then 0
    in three passes are 5 in the round's record."""
    sim, m = _started()
    for ring_full in (2, 3, 0):
        m.account_guest(1000.0, 2000.0, 0, ring_full)
    assert m.acc.ring_full_exits == 5
    m.sync(MS)
    assert m.rounds[-1]["ring_full_exits"] == 5


def test_total_time_runs_to_the_migrations_end(tmp_path):
    """QEMU 10.1, 512 pages at 8 MiB/s, no modelled costs, pages 5 and 300 written at 3 ms
    (test_qemu_round_records_by_hand without costs): 205 pages go by 100 ms, where the
    window's measure gives a threshold of 2,523,960 bytes; 308 pages (1,261,568 bytes) are
    pending after the sync: switchover at 100 ms, the 308 pages at the link's 10 Gbit/s in
    308 × 4104 / 1.25 = 1,011,225.6 ns.  The migration ends at 101,011,225 ns: its total
    time is 101.011225 ms, whatever the simulation's clock says after it."""
    data = session(
        costs=ZERO_COSTS,
        workloads=_trace(tmp_path, [(3 * MS, 5), (3 * MS, 300)]),
        migration={"bandwidth": "8MiB/s"},
    )
    data["memslots"][0].update(size="2MiB", backing="4KiB")
    sim = Simulation.from_dict(data)
    result = sim.run()
    assert result["outcome"] == "completed"
    assert sim.migration.t_end_ns == 101_011_225
    assert result["total_time_ms"] == pytest.approx(101.011225, abs=1e-9)
    sim.advance(3)
    assert sim.migration.result()["total_time_ms"] == pytest.approx(101.011225, abs=1e-9)


def test_total_time_is_zero_before_the_start():
    """A migration starting at 50 ms has taken no time 10 ms into the run."""
    sim = Simulation.from_dict(session(costs=ZERO_COSTS, migration={"start_ms": 50}))
    sim.advance(10)
    result = sim.migration.result()
    assert (result["outcome"], result["total_time_ms"]) == ("not-started", 0.0)


# -- setup: slots joining the migration ------------------------------------------------------------


def _two_slots(**kw):
    """Slot 0 (64 pages) asks for dirty logging, slot 1 (64 pages) does not."""
    data = session(costs=ZERO_COSTS, workloads=[], **kw)
    data["memslots"] = [
        {"id": 0, "base": BASE, "size": "256KiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {"id": 1, "base": BASE + (1 << 20), "size": "256KiB", "backing": "4KiB"},
    ]
    return Simulation.from_dict(data)


def test_setup_turns_logging_on_only_where_the_slot_asks_for_it():
    """memory_global_dirty_log_start → kvm_log_start → kvm_slot_update_flags: one
    KVM_SET_USER_MEMORY_REGION for slot 0 (flags KVM_MEM_LOG_DIRTY_PAGES, 1), none for slot 1,
    whose flags would not change ("If nothing changed effectively, no need to issue
    ioctl").  Slot 1's writes cannot be tracked, and the log says so, for slot 1 only."""
    sim = _two_slots()
    sim.vm.oplog = []
    sim.migration.start(0)
    sets = [(op.slot, op.flags) for op in sim.vm.oplog if isinstance(op, SetMemslot)]
    assert sets == [(0, 1)]
    said = [m.split("] ", 1)[1] for m in sim.messages]
    untracked = [m for m in said if "log_dirty" in m]
    assert untracked == [
        "slot 1 has no log_dirty flag: its writes cannot be tracked, so every sync marks it "
        "all dirty (it is sent again each round and in stop-and-copy)"
    ]
    assert [s.tracked for s in sim.migration.slots.values()] == [True, False]


def test_a_slot_joins_all_dirty():
    """add_slot: a RAMBlock joins the migration with every page to send
    (ram_list_init_bitmaps sets the whole bitmap), the default: a 64-page slot taken out and
    added back has its 64 pages pending."""
    sim = _two_slots()
    m = sim.migration
    m.start(0)
    m.remove_slot(1)
    assert m.remaining_pages() == 64
    m.add_slot(1)
    assert m.remaining_pages() == 128
    assert DL.bitmap_pages(m.slots[1].bitmap).tolist() == list(range(64))


def test_the_per_page_arrays_take_four_bytes_a_page():
    """The destination holds the source's page versions, uint32 as the source's (a 16 M-page
    guest: 64 MiB, not 128); the round each page was last sent in is int32 (rounds go to
    100,000, past int16), kept only when the heat map asks for it (``track_last_sent``)."""
    sim, m = _started()
    s = m.slots[0]
    assert s.dest.dtype == sim.vm.slots[0].version.dtype == np.uint32
    assert s.last_sent.dtype == np.int32 and (s.last_sent == -1).all()
    data = session(costs=ZERO_COSTS, workloads=[])
    sim = Simulation.from_dict(data, track_last_sent=False)
    sim.migration.start(0)
    assert sim.migration.slots[0].last_sent is None


def test_removing_a_slot_drops_its_pending_ring_entries():
    """A memslot deleted mid-migration takes its RAMBlock out of the migration: its bitmap
    and the ring entries the reaper collected for it but no sync took yet both go (a slot
    with the same id added later starts all dirty, not with the old slot's entries)."""
    sim, m = _started(tracking={"mode": "ring", "ring_entries": 256})
    m.add_ring_pages(np.zeros(2, np.int64), np.array([3, 9], np.int64))
    assert 0 in m.ring_pending
    m.remove_slot(0)
    assert m.ring_pending == {} and m.slots == {}


def test_deleting_a_slot_before_the_migration_starts():
    """A memslot deleted at 2 ms, before the migration (start_ms 5) made its slots: nothing of
    it to drop; the migration then starts with slot 0 alone, and round 1's record counts the
    TLB flushes from the start on only: the enable's memslot flush (one range flush), not the
    delete's unmap flush at 2 ms (docs/fidelity.md: round 1 holds the enable and the setup
    sync; the setup GET finds nothing dirty, so it flushes nothing)."""
    data = session(
        costs=ZERO_COSTS,
        workloads=[],
        migration={"start_ms": 5, "bandwidth": "8MiB/s"},
        events=[{"t_ms": 2, "action": "delete_memslot", "id": 1}],
    )
    data["memslots"] = [
        {"id": 0, "base": BASE, "size": "2MiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {"id": 1, "base": BASE + (4 << 20), "size": "1MiB", "backing": "4KiB"},
    ]
    sim = Simulation.from_dict(data)
    while sim.migration.phase == "idle":
        sim.advance(1)
    m = sim.migration
    assert sorted(m.slots) == [0] and m.t_start_ns == 5 * MS
    m.sync(sim.t_ns)
    assert m.rounds[0]["tlbi"] == {"range": 1}


# -- flush: counted sends written at the batch's end -----------------------------------------------

SLOW_LINK = 8_208_000  # bytes/s: two pages of 4,104 bytes a 1 ms tick


def _small_slots(tmp_path, rows, readonly=()):
    """Six slots of 2 pages (1 MiB apart), sent at two pages a tick, no rate limit to speak of;
    ``rows`` (t_ns, slot, page) written by a trace."""
    path = tmp_path / "w.csv"
    path.write_text(
        "t_ns,ipa\n"
        + "".join(f"{t},{BASE + s * (1 << 20) + p * 4096}\n" for t, s, p in sorted(rows))
    )
    data = session(
        costs=ZERO_COSTS,
        workloads=[{"name": "w", "kind": "trace", "path": str(path)}],
        migration={"bandwidth": 1e9, "link_speed": SLOW_LINK},
    )
    data["memslots"] = [
        {
            "id": i,
            "base": BASE + i * (1 << 20),
            "size": "8KiB",
            "flags": ["log_dirty"] + (["readonly"] if i in readonly else []),
            "backing": "4KiB",
        }
        for i in range(6)
    ]
    return Simulation.from_dict(data)


def test_each_page_gets_the_version_it_was_sent_with(tmp_path):
    """Each page's version is copied to the destination when it is sent (the module
    docstring), whatever batch the ticks run in.  Two pages a tick in slot order: slot 0 in
    tick 0, slot 1 (read-only) in tick 1, slot 2 in tick 2.  Writes: slot 0 page 0 at 1.5 ms
    (tick 1, after its send: the destination keeps version 0), slot 2 page 0 at 2.5 ms (tick
    2, before its send that tick: version 1 goes), slot 1 page 0 at 2.5 ms (a read-only slot:
    the write exits to user space, version 0 stays and so does the destination's).  After 3
    ticks: slots 0-2 sent in round 1, 3-5 not yet."""
    sim = _small_slots(tmp_path, [(1_500_000, 0, 0), (2_500_000, 2, 0), (2_500_000, 1, 0)], (1,))
    sim.advance(3)
    m = sim.migration
    assert [s.last_sent.tolist() for s in m.slots.values()] == [[1, 1]] * 3 + [[-1, -1]] * 3
    assert [sim.vm.slots[i].version.tolist() for i in range(3)] == [[1, 0], [0, 0], [1, 0]]
    assert [m.slots[i].dest.tolist() for i in range(3)] == [[0, 0], [0, 0], [1, 0]]


def test_a_flush_copies_the_pages_sent_and_no_other(tmp_path):
    """Round 1's bitmap made to hold pages 0, 1 and 4 of slot 0 (8 pages), then slot 1's 16
    pages; two pages a tick: pages 0 and 1 in tick 0, page 4 and slot 1's page 0 in tick 1.
    Pages 2 and 4 are written at 0.5 ms: page 4 goes after it (version 1 on the
    destination), page 2 is not sent (its destination stays 0)."""
    path = tmp_path / "w.csv"
    path.write_text("t_ns,ipa\n" + "".join(f"500000,{BASE + p * 4096}\n" for p in (2, 4)))
    data = session(
        costs=ZERO_COSTS,
        workloads=[{"name": "w", "kind": "trace", "path": str(path)}],
        migration={"bandwidth": 1e9, "link_speed": SLOW_LINK},
    )
    data["memslots"] = [
        {"id": 0, "base": BASE, "size": "32KiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {"id": 1, "base": BASE + (1 << 20), "size": "64KiB", "flags": ["log_dirty"]},
    ]
    data["memslots"][1]["backing"] = "4KiB"
    sim = Simulation.from_dict(data)
    m = sim.migration
    m.start(0)
    m.slots[0].bitmap[0] = np.uint64(0b10011)
    m.remaining_pages_changed()
    sim.advance(2)
    assert m.slots[0].last_sent.tolist() == [1, 1, -1, -1, 1, -1, -1, -1]
    assert m.slots[1].last_sent.tolist()[:2] == [1, -1]
    assert sim.vm.slots[0].version.tolist() == [0, 0, 1, 0, 1, 0, 0, 0]
    assert m.slots[0].dest.tolist() == [0, 0, 0, 0, 1, 0, 0, 0]


# -- deferred.py ----------------------------------------------------------------------------------


def test_deferred_add_accumulates_a_ticks_sends():
    """``counts[j]`` pages went in tick ``ticks[j]``: 5 then 2 pages in tick 3 are one entry
    of 7, then 4 in tick 6 a new one; 11 sent, in send order ticks 3 × 7 then 6 × 4."""
    d = DF.Deferred((0, 0))
    d.add(3, 5)
    d.add(3, 2)
    d.add(6, 4)
    assert (d.ticks, d.counts, d.sent) == ([3, 6], [7, 4], 11)
    assert d.send_ticks().tolist() == [3] * 7 + [6] * 4


def test_deferred_send_ticks_is_int64_even_when_empty():
    """The batch tick of every page sent, int64 (its docstring): none sent is an empty
    int64 array, as later_writes compares it with int64 write ticks."""
    got = DF.Deferred((0, 0)).send_ticks()
    assert got.dtype == np.int64 and got.shape == (0,)
    d = DF.Deferred((0, 0))
    d.add(2, 1)
    assert d.send_ticks().dtype == np.int64


def test_clears_between_is_half_open():
    """A chunk beginning at rank 448 is CLEARed before the send of rank 448: among ranks
    [304, 448) none begins, among [304, 449) and [448, 449) one does, [449, 500) none."""
    d = DF.Deferred((0, 0), clear_at=np.array([448], np.int64))
    assert [
        d.clears_between(lo, hi) for lo, hi in [(304, 448), (304, 449), (448, 449), (449, 500)]
    ] == [
        False,
        True,
        True,
        False,
    ]


def _split_by_hand(pages, lo, hi):
    """Plain reference: number every (entry, page) in send order, keep ranks [lo, hi), and
    group what is left by entry (an entry with nothing left gives no piece)."""
    flat = [(i, sid, int(p)) for i, (sid, arr) in enumerate(pages) for p in arr]
    out: list[tuple[int, list[int]]] = []
    last = None
    for i, sid, p in flat[lo:hi]:
        if i != last:
            out.append((sid, []))
            last = i
        out[-1][1].append(p)
    return out


@pytest.mark.parametrize(
    ("lo", "hi"), [(0, 12), (0, 3), (0, 5), (2, 9), (5, 12), (6, 8), (3, 3), (9, 12), (11, 40)]
)
def test_split_against_a_plain_reference(lo, hi):
    """Three entries (slot 0 three pages, slot 2 two, slot 0 again after the wrap, seven):
    the pieces of ranks [lo, hi), per entry, in order, none empty (flush reads each piece's
    first and last page)."""
    pages = [
        (0, np.array([4, 9, 70], np.int64)),
        (2, np.array([0, 1], np.int64)),
        (0, np.array([0, 1, 2, 3, 5, 6, 8], np.int64)),
    ]
    got = [(sid, p.tolist()) for sid, p in DF.split(pages, lo, hi)]
    assert got == _split_by_hand(pages, lo, hi)


def _clear_by_hand(bitmap, pages):
    out = bitmap.copy()
    for p in pages:
        out[p >> 6] &= ~np.uint64(1 << (p & 63))
    return out


def _clear_cases():
    """Bitmaps of 1-4 words (seeded), pages a run of the set bits between two offsets (all of
    them: the fast path) or some of them (bit by bit), first and last anywhere, among them
    word edges and the bitmap's last bit."""
    rng = np.random.default_rng(19)
    cases = []
    for words in (1, 2, 3, 4):
        for k in range(60):
            bits = rng.random(words * 64) < rng.choice([0.3, 0.7, 1.0])
            bits[rng.integers(0, words * 64)] = True
            bitmap = np.packbits(bits, bitorder="little").view("<u8").astype(np.uint64)
            set_at = np.flatnonzero(bits)
            i = int(rng.integers(0, set_at.size))
            j = int(rng.integers(i, set_at.size))
            if k % 4 == 0:
                j = set_at.size - 1  # up to the last set bit
            run = set_at[i : j + 1]
            if k % 3 == 1 and run.size > 2:  # a subset: every other one
                run = run[:: int(rng.integers(2, 4))]
            cases.append((bitmap, run.astype(np.int64)))
    full = np.full(2, 2**64 - 1, np.uint64)
    for a, b in [(0, 64), (0, 128), (63, 65), (64, 128), (127, 128), (1, 127), (5, 6)]:
        cases.append((full.copy(), np.arange(a, b, dtype=np.int64)))
    cases.append((full.copy(), np.array([0, 127], np.int64)))
    cases.append((full.copy(), np.array([63, 64], np.int64)))
    # some of the set bits, with as many others set in between as pages left out: a range
    # zeroed from a wrong first or last word would hold as many set bits as there are pages
    for words, pages in [
        ([1, 1 | 1 << 63], [0, 127]),  # the bitmap's last bit
        ([0b11, 1 << 63], [0, 127]),
        ([0, 1, 1 << 2, 1 << 8], [64, 200]),  # the first page at bit 0 of an odd word
        ([0b11, 1], [0, 64]),  # the last page at bit 0 of its word
        ([1, 0b11], [0, 65]),
    ]:
        cases.append((np.array(words, np.uint64), np.array(pages, np.int64)))
    return cases


def test_clear_sent_against_a_plain_reference():
    """clear_sent clears exactly the bits of ``pages`` (sorted set bits), the words'
    other bits kept, whether they are every set bit from the first to the last (zeroed as
    a range) or only some of them (bit by bit): each case against clearing bit by bit."""
    for bitmap, pages in _clear_cases():
        want = _clear_by_hand(bitmap, pages.tolist())
        got = bitmap.copy()
        DF.clear_sent(got, pages)
        assert got.tolist() == want.tolist(), (bitmap.tolist(), pages.tolist())

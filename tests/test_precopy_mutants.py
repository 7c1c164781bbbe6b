"""Rules of engine/migration/precopy.py and deferred.py that survivors of the precopy mutation
pass showed untested (each mutant replayed by hand against these tests).  Expected values are
worked out by hand from the trace and QEMU's migration/ram.c rules, never read back."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from test_migration import ZERO_COSTS, run, session

from engine.kvm.dirtylog import bitmap_pages
from engine.migration import deferred as DF
from engine.migration import precopy as P
from engine.migration.simulation import Simulation

BASE = 0x4000_0000
NPAGES = 256
CASES = Path(__file__).parent / "cases" / "fidelity"


def _fixed(tmp_path, mode, rows, slots=None, every=5, timeout_s=0.012):
    """Policy fixed (harvest every ``every`` ms, never migrate), 1 ms ticks, one trace."""
    trace = tmp_path / "t.csv"
    trace.write_text("t_ns,ipa\n" + "".join(f"{t},{BASE + p * 4096}\n" for t, p in rows))
    memslots = slots or [{"id": 0, "base": BASE, "size": NPAGES * 4096, "flags": ["log_dirty"]}]
    return Simulation.from_dict(
        {
            "format": "dirtylog-session",
            "version": 2,
            "tick_ms": 1,
            "tracking": {"mode": mode, "ring_entries": 256, "clear_chunk": "256KiB"},
            "memslots": memslots,
            "workloads": [{"name": "t", "kind": "trace", "path": str(trace)}],
            "migration": {"policy": "fixed", "harvest_every_ms": every, "timeout_s": timeout_s},
        },
        tmp_path,
    )


def test_a_fixed_harvest_empties_the_migration_bitmap_and_notes_its_words(tmp_path):
    """Page 70 (bitmap word 1, cell 1) written at 1 ms: the access notes cell 1 in tick 1.
    The migration bitmap starts all set (ram_list_init_bitmaps); policy fixed never sends,
    so the 5 ms harvest empties it at once (remaining 0) and notes the words it emptied:
    all 4 cells of the 256 pages.  The 10 ms harvest finds nothing and notes nothing."""
    sim = _fixed(tmp_path, "bitmap", [(1_000_000, 70)])
    changes = sim.track_changes()
    noted = []
    while not sim.finished:
        changes.take()
        sim.advance(1)
        cells = changes.take().tolist()
        if cells:
            noted.append((round(sim.t_ns / 1e6), cells))
        if sim.t_ns >= 5_000_000:  # until the first harvest every page is still to send
            assert not sim.migration.slots[0].bitmap.any()
            assert sim.migration.remaining_pages() == 0
    assert noted == [(1, [1]), (5, [0, 1, 2, 3])]


def test_a_fixed_harvest_in_manual_clear_skips_a_slot_without_logging(tmp_path):
    """manual-clear with a second slot that does not log: its GET is never made, so there
    is nothing of it to CLEAR; slot 0's page 3 is GOT then CLEARed at the 5 ms harvest."""
    slots = [
        {"id": 0, "base": BASE, "size": NPAGES * 4096, "flags": ["log_dirty"]},
        {"id": 1, "base": BASE + NPAGES * 4096, "size": NPAGES * 4096},
    ]
    sim = _fixed(tmp_path, "manual-clear", [(1_000_000, 3)], slots=slots)
    sim.keep_harvests = True
    sim.run()
    got = [(c["slot"], c["first_page"], c["mask"]) for c in sim.migration.clears]
    assert [set(bitmap_pages(h["slots"][0]).tolist()) for h in sim.harvests] == [{3}, set()]
    assert got == [(0, 0, [hex(1 << 3)])]


def _xen_r12(tmp_path, rows):
    """r12's guest (16 MiB at 32 MiB/s, Xen today) with the trace ``rows`` (t_ns, page)."""
    trace = tmp_path / "w.csv"
    trace.write_text("t_ns,ipa\n" + "".join(f"{t},{BASE + p * 4096}\n" for t, p in rows))
    data = json.loads((CASES / "r12_xen_fewer_than_50.json").read_text())
    data["workloads"][0]["path"] = str(trace)
    return Simulation.from_dict(data, tmp_path)


def test_xen_a_clean_finding_nothing_suspends_at_once(tmp_path):
    """xg_sr_save.c send_memory_live (Xen 4.20): after pass 1 the CLEAN finds 0 dirty pages,
    simple_precopy_policy says stop, and with dirty_count 0 no batch is sent: the loop breaks
    and suspend_and_send_dirty follows in the same instant.  The only write (page 5 at 10 s)
    comes after the migration is over, so nothing is dirty after pass 1.  The CLEAN opens
    round 2, which has nothing to send and closes in that same instant (no tick later), and
    the stop-and-copy round starts then."""
    sim = _xen_r12(tmp_path, [(10_000_000_000, 5)])
    result = sim.run()
    rounds = result["rounds"]
    assert [r["pages_sent"] for r in rounds] == [4096, 0, 0]
    assert [bool(r.get("stop_and_copy")) for r in rounds] == [False, False, True]
    t = rounds[0]["t_end_ns"]
    assert rounds[1]["t_start_ns"] == rounds[1]["t_end_ns"] == rounds[2]["t_start_ns"] == t
    assert result["reason"] == "xen: 0 pages dirty, fewer than 50: sent live, then suspend"


def test_xen_reason_for_fewer_than_50(tmp_path):
    """r12's reason, word for word (simple_precopy_policy's stop on ``dirty_count < 50``)."""
    sim = Simulation.from_file(CASES / "r12_xen_fewer_than_50.json")
    result = sim.run()
    assert result["reason"] == "xen: 40 pages dirty, fewer than 50: sent live, then suspend"


def test_cancel_closes_the_round_at_its_time_and_says_so(tmp_path):
    """A cancel event at 200 ms (QEMU, 64 MiB at 32 MiB/s: still in round 1): the round open
    then closes at 200 ms, logging goes off with the slot otherwise unchanged, and the log
    says why and what happens next."""
    data = session(events=[{"t_ms": 200, "action": "cancel"}])
    data["memslots"][0]["name"] = "ram"
    sim, result = run(data)
    assert result["outcome"] == "cancelled"
    assert [r["t_end_ns"] for r in result["rounds"]] == [200_000_000]
    s = sim.vm.slots[0].slot
    assert (s.flags, s.name, s.backing) == (0, "ram", 2 << 20)
    msg = "migration cancelled (cancel event at 200 ms); logging off, the guest goes on"
    assert msg in [m.split("] ", 1)[1] for m in sim.messages]


def _ranks_by_hand(pages, snapshots, chunk):
    """Plain reference: walk the sends in order; the first send of each (slot, chunk) whose
    snapshot words hold a bit is where a sender CLEARs (migration_clear_memory_region_dirty_
    bitmap, QEMU 10.1: once per chunk, only bits the last GET reported)."""
    out, seen, rank = [], set(), 0
    for sid, p in pages:
        snap = snapshots.get(sid)
        for page in p.tolist():
            key = (sid, page // chunk)
            if snap is not None and key not in seen:
                seen.add(key)
                w = snap[key[1] * chunk // 64 : (key[1] + 1) * chunk // 64]
                if any(int(x) for x in w):
                    out.append(rank)
            rank += 1
    return out


def test_clear_ranks_against_a_plain_reference():
    """Chunks of 64 pages.  Slot 0's snapshot has bit 0 only in word 0 (a word of value 1),
    nothing in word 1, bits in words 2 and 3; slot 1 has no snapshot (its GET was freed); slot
    2's snapshot holds every bit.  Slot 0 comes twice, chunk 0 also in a later run."""
    s0 = np.array([1, 0, 1 << 63, 5], np.uint64)
    snaps = {0: s0, 1: None, 2: np.full(2, 2**64 - 1, np.uint64)}
    pages = [
        (0, np.array([0, 3, 70, 130, 2], np.int64)),  # ranks 0-4: chunk 0 at 0, 2 at 3
        (1, np.array([0, 64], np.int64)),  # ranks 5-6: no snapshot, never a CLEAR
        (0, np.array([200, 1, 129], np.int64)),  # ranks 7-9: chunk 3 at 7; 0 and 2 done
        (2, np.array([65, 64, 0], np.int64)),  # ranks 10-12: chunk 1 at 10, chunk 0 at 12
    ]
    want = [0, 3, 7, 10, 12]
    assert _ranks_by_hand(pages, snaps, 64) == want
    got = DF.clear_ranks(pages, snaps, 64)
    assert got.dtype == np.int64 and got.tolist() == want


def test_clear_ranks_of_nothing_is_an_empty_int64_array():
    """No snapshot bits anywhere (and a slot with no pages): no CLEAR at all."""
    snaps = {0: np.zeros(2, np.uint64)}
    for pages in ([(0, np.array([0, 64], np.int64))], [(0, np.zeros(0, np.int64))], []):
        got = DF.clear_ranks(pages, snaps, 64)
        assert got.dtype == np.int64 and got.size == 0


def test_chunks_with_bits_of_no_chunks_is_an_empty_bool_array():
    """The helper's empty case (a batch that sends nothing of a slot): no chunk, no answer."""
    got = DF._chunks_with_bits(np.ones(4, np.uint64), np.zeros(0, np.int64), 64)
    assert got.dtype == bool and got.shape == (0,)


def test_without_measured_drops_only_the_measured_times_and_leaves_its_input():
    """Measured keys may be missing (a round without a walk's timing or strategy counts, a
    result without rounds); everything else stays, and the run's own result is untouched."""
    result = {
        "outcome": "converged",
        "rounds": [
            {"round": 1, "walk_wall_us": 7.5, "strategy_counts": {"range": {"n": 2, "wall_us": 3}}},
            {"round": 2, "walk_cpu_us": 1.0},
        ],
    }
    before = copy.deepcopy(result)
    want = {
        "outcome": "converged",
        "rounds": [{"round": 1, "strategy_counts": {"range": {"n": 2}}}, {"round": 2}],
    }
    assert P.without_measured(result) == want
    assert result == before
    assert P.without_measured({"outcome": "none"}) == {"outcome": "none"}


def test_giving_up_and_throttling_are_logged():
    """A guest dirtying 60,000 pages/s against a 32 MB/s link never converges; auto-converge's
    first step is cpu-throttle-initial (20 %), and at max_rounds the migration gives up."""
    data = session(
        workloads=[
            {"name": "u", "kind": "sequential", "vcpu": 0, "slot": 0, "rate": "60000 pages/s"}
        ],
        migration={"max_rounds": 4, "auto_converge": True},
        costs=ZERO_COSTS,
    )
    sim, result = run(data)
    said = [m.split("] ", 1)[1] for m in sim.messages]
    assert "auto-converge: vCPUs throttled to 20 %" in said
    # migration_trigger_throttle throttles at the second period over the threshold (the sync
    # ending round 2): rounds 3 and 4 run wholly at 20 % (the 30 % step comes at round 4's
    # end), a vCPU is 80 % of each tick (no exit costs); the give-up's round has no tick
    slowdown = [r["guest_slowdown"] for r in result["rounds"]]
    assert slowdown == pytest.approx([0.0, 0.0, 0.2, 0.2, 0.0])
    reason = "not converged after 4 rounds (max_rounds)"
    assert result["reason"] == reason
    assert f"migration {reason}; the guest keeps running on the source" in said


def test_throttle_timer_never_syncs_in_the_first_round():
    """QEMU 10.1 cpu_throttle_dirty_sync_timer_tick: ``if (sync_cnt <= 1) goto end`` (the first
    iteration copies all memory anyway).  64 MiB at 4 MiB/s: round 1 would take 16 s, so the
    5 s and 10 s ticks both fall in it and neither syncs; the run ends at its 12 s timeout
    with round 1 still open (one round, ending at 12 s)."""
    data = session(
        costs=ZERO_COSTS,
        tick_ms=5,
        workloads=[{"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": 4000}],
        migration={"bandwidth": "4MiB/s", "auto_converge": True, "qemu": "10.1", "timeout_s": 12},
    )
    _, result = run(data)
    assert [r["t_end_ns"] for r in result["rounds"]] == [12_000_000_000]


ROUND_KEYS = {  # README "--json": every round record's fields
    "round", "dirty_sync_count", "t_start_ns", "t_end_ns", "transferred_bytes", "pages_sent",
    "duplicate", "normal", "normal_bytes", "remaining_bytes", "dirty_pages", "new_dirty_pages",
    "dirty_pages_rate", "reported_pages_rate", "mbps", "threshold_bytes",
    "expected_downtime_ms", "throttle_pct", "faults", "tlbi", "desc_reads", "desc_writes",
    "harvest_model_ns", "walk_model_ns", "walk_wall_us", "walk_cpu_us", "strategy_counts",
    "ring_full_exits", "guest_slowdown",
}  # fmt: skip


def _two_writes(tmp_path, policy, costs):
    """2 MiB of 4 KiB pages (L1-L3 tables) at 8 MiB/s; pages 5 and 300 written at 3 ms."""
    trace = tmp_path / "t.csv"
    trace.write_text("t_ns,ipa\n" + "".join(f"3000000,{BASE + p * 4096}\n" for p in (5, 300)))
    return session(
        costs=costs,
        memslots=[
            {"id": 0, "base": BASE, "size": "2MiB", "flags": ["log_dirty"], "backing": "4KiB"}
        ],
        workloads=[{"name": "t", "kind": "trace", "path": str(trace)}],
        migration={"policy": policy, "bandwidth": "8MiB/s"},
    )


def test_qemu_round_records_by_hand(tmp_path):
    """QEMU 10.1, 512 pages at 8 MiB/s (838,860.8 bytes a 100 ms window), 4,104 bytes a page
    (8-byte header + 4 KiB).  Round 1 (the setup sync is dirty-sync-count 1): pages start
    while at most the window's share is used (i × 4104 <= 838860.8: i = 0..204), so 205 go
    by 100 ms; the window measures 841,320 bytes / 100 ms: 67.3056 Mbit/s, threshold 8413.2
    bytes/ms × 300 ms.  Its GET reports pages 5 and 300; 5 was sent (new again), 300 still
    waits: 2 dirty, 1 new, 512 - 205 + 1 = 308 pages left.  The GET write-protects the two
    pages (two walks L1-L3: 2 reads a level, 2 L3 writes) and flushes the memslot's TLB
    once (kvm_get_dirty_log_protect): 6 × 1 + 2 × 10 + 49,975 = 50,001 ns; the two write faults
    relaxed permissions with a TLBI by IPA each (not the harvest's).  Round 1 also holds the
    setup (migration_bitmap_sync counts the setup sync as 1 before its GET): the enable's
    write-protect of the 512 pages (one walk: L1, L2 and 512 L3 reads, 512 L3 writes) and its
    memslot flush, 514 + 5,120 + 49,975 = 55,609 ns (the setup time), and the setup GET, which
    finds nothing (0 ns): 105,610 ns in all, two range flushes.  308 × 4 KiB fit the
    threshold: sync (round 2 closes when its 50,001 ns are over, nothing sent), then the
    stop-and-copy round, which no sync ends (0 dirty, 0 new) and where no vCPU runs.  The
    switchover (100.050001 ms: "100.1 ms") sends the 308 pages at the link's 10 Gbit/s, not rate-
    limited (ram_save_complete): 308 × 4104 bytes in 1,011,225.6 ns; its final GET finds
    nothing and costs nothing."""
    costs = dict(ZERO_COSTS, desc_read=1, desc_write=10, tlbi_range=49975, tlbi_ipa=1000)
    sim, result = run(_two_writes(tmp_path, "qemu", costs))
    assert result["outcome"] == "completed"
    assert result["downtime_ms"] == pytest.approx(1.0112256, rel=1e-12)
    assert sim.migration.t_stop_ns == 100_050_001
    reason = "1,261,568 dirty bytes ≤ threshold 2,523,960 bytes (measured bandwidth × downtime "
    said = [m.split("] ", 1)[1] for m in sim.messages]
    assert f"switchover at 100.1 ms: {reason}limit, QEMU 10.1)" in said
    rounds = result["rounds"]
    assert [set(r) - ROUND_KEYS for r in rounds] == [set(), set(), {"stop_and_copy"}]
    assert [set(r) for r in rounds[:2]] == [ROUND_KEYS, ROUND_KEYS]
    assert rounds[2]["stop_and_copy"] is True
    first = rounds[0]
    assert first["round"] == first["dirty_sync_count"] == 1
    assert (first["t_start_ns"], first["t_end_ns"]) == (0, 100_000_000)
    assert (first["pages_sent"], first["transferred_bytes"]) == (205, 205 * 4104)
    assert (first["normal"], first["normal_bytes"], first["duplicate"]) == (205, 205 * 4096, 0)
    assert (first["dirty_pages"], first["new_dirty_pages"]) == (2, 1)
    assert first["remaining_bytes"] == 308 * 4096
    assert first["mbps"] == pytest.approx(67.3056)
    assert first["threshold_bytes"] == pytest.approx(8413.2 * 300)
    assert (first["dirty_pages_rate"], first["reported_pages_rate"]) == (0.0, 0.0)
    assert (first["expected_downtime_ms"], first["throttle_pct"]) == (300.0, 0)
    assert (first["faults"], first["ring_full_exits"]) == (2, 0)
    assert first["tlbi"] == {"range": 2, "ipa": 2}
    reads, writes = {"L1": 3, "L2": 3, "L3": 514}, {"L3": 514}
    assert (first["desc_reads"], first["desc_writes"]) == (reads, writes)
    assert first["harvest_model_ns"] == 105_610.0 and result["setup_time_ms"] == 0.055609
    assert first["walk_model_ns"] == {"range": 6 + 20 + 2 * 49975}  # the GET's walk, 2 flushes
    assert set(first["walk_wall_us"]) == set(first["walk_cpu_us"]) == {"range"}
    assert set(first["strategy_counts"]) == {"range"}
    measured = first["strategy_counts"]["range"]  # the same walk's times, in µs both
    assert first["walk_wall_us"]["range"] == measured["wall_us"] > 0
    assert first["walk_cpu_us"]["range"] == measured["cpu_us"]
    assert [r["round"] for r in rounds] == [r["dirty_sync_count"] for r in rounds] == [1, 2, 3]
    assert [r["t_end_ns"] for r in rounds[:2]] == [100_000_000, 100_050_001]
    last = rounds[2]
    assert (last["pages_sent"], last["dirty_pages"], last["new_dirty_pages"]) == (308, 0, 0)
    assert last["t_end_ns"] == 100_050_001 + 1_011_225  # int() of the end
    assert [r["guest_slowdown"] for r in rounds] == [0.0, 0.0, 0.0]
    counters = ("transferred_bytes", "pages_sent", "duplicate", "normal", "normal_bytes")
    assert all(type(r[k]) is int for r in [result, *rounds] for k in counters if k in r)


@pytest.mark.parametrize("policy", ["qemu", "xen"])
def test_round_one_holds_the_enable_and_the_setup_sync(tmp_path, policy):
    """The setup's harvest work is round 1's in both modes: QEMU's migration_bitmap_sync counts
    the setup sync (ram_init_bitmaps) as dirty-sync-count 1 before its GET, and Xen's pass 1
    follows enable_logdirty.  By hand (the costs of test_qemu_round_records_by_hand): the
    enable 514 reads + 512 writes × 10 + a memslot flush 49,975 = 55,609 ns, the setup GET
    0 ns (QEMU), the GET or CLEAN ending round 1 (pages 5 and 300) 50,001 ns: 105,610 ns,
    and two range flushes in round 1's TLBIs; the setup time is the enable (+ setup GET)."""
    costs = dict(ZERO_COSTS, desc_read=1, desc_write=10, tlbi_range=49975, tlbi_ipa=1000)
    _, result = run(_two_writes(tmp_path, policy, costs))
    first = result["rounds"][0]
    assert first["harvest_model_ns"] == 105_610.0
    assert first["tlbi"] == {"range": 2, "ipa": 2}
    assert result["setup_time_ms"] == 0.055609


def test_xen_rounds_count_the_cleans_before_them(tmp_path):
    """Xen (xg_sr_save.c send_memory_live): pass 1 follows enable_logdirty with no CLEAN,
    each later iteration begins with one: round r follows r - 1 CLEANs.  2 MiB at 8 MiB/s:
    pass 1 takes 250 ms; its CLEAN finds pages 5 and 300 (fewer than 50: sent live, 1 ms),
    then suspend_and_send_dirty's CLEAN finds nothing (no modelled costs)."""
    _, result = run(_two_writes(tmp_path, "xen", ZERO_COSTS))
    rounds = result["rounds"]
    assert [r["dirty_sync_count"] for r in rounds] == [0, 1, 2]
    assert [r["pages_sent"] for r in rounds] == [512, 2, 0]
    assert [r["t_end_ns"] for r in rounds] == [250_000_000, 251_000_000, 251_000_000]


def test_verify_counts_every_page_and_names_the_first_five_mismatches(tmp_path):
    """Two slots of 256 and 512 pages, no writes: after the switchover every destination
    page holds version 0, as the source.  Versions then changed on the source behind the
    migration's back (slot 0 pages 1-6 to 7, slot 1 pages 7 and 9 to 3): all 768 pages are
    checked, 8 differ, and the examples are the first five in slot then page order."""
    data = session(
        costs=ZERO_COSTS,
        memslots=[
            {"id": 0, "base": BASE, "size": "1MiB", "flags": ["log_dirty"], "backing": "4KiB"},
            {"id": 1, "base": BASE + (1 << 20), "size": "2MiB", "flags": ["log_dirty"]},
        ],
        workloads=[],
    )
    sim, result = run(data)
    assert result["verification"] == {"pages_checked": 768, "mismatches": 0}
    sim.vm.slots[0].version[1:7] = 7
    sim.vm.slots[1].version[[7, 9]] = 3
    got = sim.migration.verify()
    examples = [{"slot": 0, "page": p, "source": 7, "dest": 0} for p in range(1, 6)]
    assert got == {"pages_checked": 768, "mismatches": 8, "examples": examples}
    assert sim.migration.verification == got


def _rates_session(tmp_path, **migration):
    """64 MiB at 8 MiB/s (pass 1 takes 8 s: no sync of QEMU's own before 3 s), harvest
    events at 0.5, 1.5, 2.0 and 2.8 s.  Pages 0-30 were sent in the first 100 ms, so a write
    to them is new in the migration bitmap; pages 16000-16004 are still to send."""
    rows = [(300, p) for p in (0, 1, 2, 16000)]
    rows += [(1000, p) for p in (10, 11, 12, 13, 14, 16001)]
    rows += [(1800, p) for p in (20, 21, 22, 23, 24, 25, 26, 16002, 16003)]
    rows += [(2500, p) for p in (30, 16004)]
    trace = tmp_path / "r.csv"
    trace.write_text(
        "t_ns,ipa\n" + "".join(f"{t * 1_000_000},{BASE + p * 4096}\n" for t, p in rows)
    )
    return session(
        costs=ZERO_COSTS,
        workloads=[{"name": "t", "kind": "trace", "path": str(trace)}],
        migration={"bandwidth": "8MiB/s", "timeout_s": 3, **migration},
        events=[{"t_ms": t, "action": "harvest"} for t in (500, 1500, 2000, 2800)],
    )


def test_dirty_rates_over_two_periods(tmp_path):
    """migration_bitmap_sync (QEMU 10.1): the rates are computed when ``end_time >
    time_last_bitmap_sync + 1000`` over the pages of every sync since then, and the period's
    counters start again.  Syncs (reported, new): 0.5 s (4, 3), 1.5 s (6, 5): due, 8 new and
    10 reported pages over 1.5 s; 2.0 s (9, 7), not due; 2.8 s (2, 1): due, 8 and 11 over
    1.3 s.  The run gives up at its 3 s timeout, the rates as they were."""
    _, result = run(_rates_session(tmp_path))
    rounds = result["rounds"]
    assert [r["t_end_ns"] // 1_000_000 for r in rounds] == [500, 1500, 2000, 2800, 3000]
    assert [(r["dirty_pages"], r["new_dirty_pages"]) for r in rounds[:4]] == [
        (4, 3), (6, 5), (9, 7), (2, 1)
    ]  # fmt: skip
    new = [r["dirty_pages_rate"] for r in rounds]
    reported = [r["reported_pages_rate"] for r in rounds]
    assert new == pytest.approx([0, 8 / 1.5, 8 / 1.5, 8 / 1.3, 8 / 1.3])
    assert reported == pytest.approx([0, 10 / 1.5, 10 / 1.5, 11 / 1.3, 11 / 1.3])
    assert result["reason"] == "not converged within 3 s (timeout)"
    # 205 pages start in each 100 ms window (i × 4104 <= 838,860.8): 5, 10, 5, 8, 2 windows
    sent = [205 * w for w in (5, 10, 5, 8, 2)]
    assert [(r["pages_sent"], r["normal"]) for r in rounds] == list(zip(sent, sent, strict=True))
    assert [r["transferred_bytes"] for r in rounds] == [4104 * n for n in sent]


def test_the_timeout_counts_from_the_migrations_start(tmp_path):
    """start_ms 50, timeout_s 3: QEMU gives up 3 s after the migration began (3.05 s)."""
    _, result = run(_rates_session(tmp_path, start_ms=50))
    assert result["rounds"][-1]["t_end_ns"] == 3_050_000_000
    assert result["total_time_ms"] == 3000.0


def _send_order_by_hand(slots, cursor, limit):
    """Plain reference of QEMU's page order (ram_find_and_save_block: the dirty pages from
    the last page sent on, block by block in order, wrapping round once to the blocks and
    pages before it): every dirty page tested one at a time."""
    order = sorted(slots)
    here = cursor[0] in slots
    first = order.index(cursor[0]) if here else 0
    offset = cursor[1] if here else 0
    seq = []
    for k in range(len(order)):
        sid = order[(first + k) % len(order)]
        start = offset if k == 0 else 0
        seq += [(sid, p) for p in range(start, slots[sid][1]) if p in slots[sid][0]]
    sid = order[first] if order else None
    seq += [(sid, p) for p in range(offset) if sid is not None and p in slots[sid][0]]
    out = []
    for sid, p in seq[: max(limit, 0)]:
        if out and out[-1][0] == sid:
            out[-1][1].append(p)
        else:
            out.append((sid, [p]))
    return out


def test_collect_follows_the_send_order_from_the_cursor():
    """Slots 0, 2 and 5 (100, 64 and 130 pages, seeded random dirty pages); the cursor in
    each slot at its first, a middle and its last page and past its end, or in a slot that
    is gone (slot 3: the next pass starts at slot 0, page 0); every limit from 0 to more
    than all dirty pages.  No slot at all: nothing."""
    rng = np.random.default_rng(7)
    slots, fake = {}, {}
    for sid, n in ((0, 100), (2, 64), (5, 130)):
        dirty = set(np.flatnonzero(rng.random(n) < 0.3).tolist()) | {0, n - 1}
        bitmap = np.zeros((n + 63) // 64, np.uint64)
        for p in dirty:
            bitmap[p // 64] |= np.uint64(1 << (p % 64))
        slots[sid] = (dirty, n)
        fake[sid] = SimpleNamespace(bitmap=bitmap, dest=np.zeros(n, np.uint32))
    total = sum(len(d) for d, _ in slots.values())
    cursors = [(3, 17)] + [(s, o) for s, (_, n) in slots.items() for o in (0, 1, 40, n - 1, n)]
    for cursor in cursors:
        mig = SimpleNamespace(slots=fake, cursor=cursor)
        for limit in (0, 1, 2, 5, 31, total - 1, total, total + 3):
            got = [(sid, p.tolist()) for sid, p in P.Migration._collect(mig, limit)]
            assert got == _send_order_by_hand(slots, cursor, limit), (cursor, limit)
    assert P.Migration._collect(SimpleNamespace(slots={}, cursor=(0, 0)), 4) == []


def _late_by_hand(pages, ticks, rel, wt):
    """Plain reference: a write is late when its page is one of those sent and it came in a
    later tick than the page's send (the page went with the version before it)."""
    sent = {int(p): int(t) for p, t in zip(pages, ticks, strict=True)}
    writes = zip(rel.tolist(), wt.tolist(), strict=True)
    return [r for r, w in writes if r in sent and w > sent[r]]


def test_later_writes_against_a_plain_reference():
    """Pages sent in batch ticks 2-6 (increasing offsets, non-decreasing ticks), writes in
    ticks 0-8 to pages in, between, below and above them, the first and last page included,
    writes in the very tick of a send (not late); empty inputs give an empty int64 array."""
    rng = np.random.default_rng(11)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        pages = np.sort(rng.choice(np.arange(10, 40), n, replace=False)).astype(np.int64)
        ticks = np.sort(rng.integers(2, 7, n)).astype(np.int64)
        k = int(rng.integers(1, 12))
        rel = rng.choice(np.r_[pages, pages[0], pages[-1], 5, 25, 45], k).astype(np.int64)
        wt = np.sort(rng.integers(0, 9, k)).astype(np.int64)
        got = DF.later_writes(pages, ticks, rel, wt)
        assert got.tolist() == _late_by_hand(pages, ticks, rel, wt)
    one = np.array([12], np.int64)
    for args in ((one[:0], one[:0], one, one), (one, one, one[:0], one[:0])):
        got = DF.later_writes(*args)
        assert got.dtype == np.int64 and got.size == 0


def test_a_16k_page_counts_four_normal_target_pages(tmp_path):
    """QEMU counts 4 KiB target pages (TARGET_PAGE_SIZE on arm64): a 16 KiB guest page sent
    whole is 4 normal pages of 4,104 stream bytes each, as whole numbers (uint64 counters)."""
    data = _two_writes(tmp_path, "qemu", ZERO_COSTS)
    data["geometry"] = {"granule": "16KiB", "ipa_bits": 40}
    data["memslots"][0]["backing"] = "16KiB"
    _, result = run(data)
    sent = sum(r["pages_sent"] for r in result["rounds"])
    assert sent >= 128 and result["outcome"] == "completed"
    assert (result["normal"], result["duplicate"]) == (4 * sent, 0)
    assert result["transferred_bytes"] == 4 * 4104 * sent
    assert type(result["normal"]) is int
    assert all(type(r["normal"]) is int for r in result["rounds"])
    # each round's record counts target pages too: the rounds add up to the migration's
    assert [r["normal"] for r in result["rounds"]] == [
        4 * r["pages_sent"] for r in result["rounds"]
    ]


@pytest.mark.parametrize(("granule", "size", "per"), [("4KiB", 4096, 1), ("16KiB", 16384, 4)])
def test_zero_and_normal_pages_of_two_unpopulated_slots(tmp_path, granule, size, per):
    """Two slots the guest never populated (2 MiB and 1 MiB), pages 3 and 100 of slot 0 and
    page 7 of slot 1 written at 1 ms; the migration starts at 5 ms and pass 1 sends every page
    in its first tick (10 Gbit/s link), the written ones as normal pages (8-byte header +
    4 KiB a target page) and the rest as zero pages (header + 1 byte, save_zero_page), counted
    in 4 KiB target pages (``per`` a guest page).  Nothing is left: QEMU completes, every page
    was last sent in round 1."""
    trace = tmp_path / "z.csv"
    rows = [(0, 3), (0, 100), (1, 7)]
    base = {0: BASE, 1: BASE + (2 << 20)}
    trace.write_text("t_ns,ipa\n" + "".join(f"1000000,{base[s] + p * size}\n" for s, p in rows))
    slot = {"flags": ["log_dirty"], "backing": granule, "populate": False}
    data = session(
        costs=ZERO_COSTS,
        geometry={"granule": granule, "ipa_bits": 40},
        memslots=[
            {"id": 0, "base": BASE, "size": "2MiB", **slot},
            {"id": 1, "base": base[1], "size": "1MiB", **slot},
        ],
        workloads=[{"name": "t", "kind": "trace", "path": str(trace)}],
        migration={"bandwidth": "8MiB/s", "start_ms": 5},
    )
    sim, result = run(data)
    pages = (3 << 20) // size
    zero, normal = (pages - 3) * per, 3 * per
    assert (result["duplicate"], result["normal"]) == (zero, normal)
    assert result["transferred_bytes"] == zero * 9 + normal * 4104
    first = result["rounds"][0]
    assert (first["pages_sent"], first["duplicate"], first["normal"]) == (pages, zero, normal)
    assert first["transferred_bytes"] == zero * 9 + normal * 4104
    assert first["remaining_bytes"] == 0 and result["outcome"] == "completed"
    counters = ("transferred_bytes", "duplicate", "normal")
    assert all(type(r[k]) is int for r in [result, first] for k in counters)
    assert all((m.last_sent == 1).all() for m in sim.migration.slots.values())


# -- counted_ticks: QEMU's sender over a batch's ticks, counted ----------------------------------

MS = 1_000_000
EDGES = [k * MS for k in range(121)]  # 120 ticks of 1 ms
NORMAL = 4104  # a 4 KiB page's record: 8-byte header + data
LINK_MS = 1_250_000  # bytes the default 10 Gbit/s link carries in 1 ms


def _counting(tracking=None, slot_size="64MiB", flags=("log_dirty",), start=0, **migration):
    """A migration of the 64 MiB guest of ``session`` (no modelled costs) just started at 0
    (setup sync done: every page to send), its sends counted at 4,104 bytes a page from batch
    tick 0, as a lazy batch sets them up (``Simulation._run_ticks``): (simulation, migration)."""
    data = session(costs=ZERO_COSTS, migration=migration)
    data["memslots"][0].update(size=slot_size, flags=list(flags))
    if tracking:
        data["tracking"] = {**data["tracking"], **tracking}
    sim = Simulation.from_dict(data)
    m = sim.migration
    m.start(start)
    m.defer_tick, m.defer_cost = 0, NORMAL
    return sim, m  # (the migration holds its simulation weakly)


def test_counted_ticks_sends_a_window_share_then_waits_for_its_end():
    """max-bandwidth 256 Mbit/s: 3,200,000 bytes a 100 ms window.  By hand, 1 ms ticks at
    1,250,000 link bytes each (+ the carry): tick 0 sends 304 pages (1,247,616 bytes, 2,384
    carried), tick 1 305 (1,252,384 bytes of budget, 664 carried), tick 2 171 — the pages
    that start while at most the share is used (1,952,384 bytes then 700,664 left: i × 4104 <=
    700,664 for i = 0..170), the window's limit, not the link's, so nothing is carried.  The
    limit is then exceeded (3,201,120 bytes): ticks 3-98 wait; tick 99 ends at 100 ms, where
    the wait ends (a loop turn): it is left to ``tick``."""
    sim, m = _counting()
    assert m.counted_ticks(EDGES, 0) == 99
    d = m._deferred
    assert (d.ticks, d.counts, d.sent) == ([0, 1, 2], [304, 305, 171], 780)
    assert m._remaining == 16384 - 780
    assert m.total_bytes == m.acc.transferred_bytes == 780 * NORMAL == 3_201_120
    assert m.normal == m.acc.normal == m.acc.pages_sent == m.total_pages_sent == 780
    assert m.carry_bytes == 0.0 and not m.decision_due


def test_counted_ticks_on_the_link_stops_at_max_wait():
    """No rate limit to speak of (100 Gbit/s): the link holds the sender, every tick sends what
    fits with the carry, so after k ticks floor(k × 1,250,000 / 4104) pages are out.  MAX_WAIT
    breaks ram_save_iterate 51 ms after it began (at 0): tick 50, ending at 51 ms, is left to
    ``tick``.  50 ticks: 15,229 pages (62,499,816 bytes), 184 bytes carried."""
    sim, m = _counting(bandwidth="100Gbit/s")
    assert m.counted_ticks(EDGES, 0) == 50
    assert m._deferred.sent == 15_229 == (50 * LINK_MS) // NORMAL
    assert m.carry_bytes == 50 * LINK_MS - 15_229 * NORMAL == 184
    assert m._remaining == 16384 - 15_229


def test_counted_ticks_from_a_later_tick_and_after_a_harvest():
    """From batch tick 5 (5 ms): ticks 5-49 send (45 ms), tick 50 is MAX_WAIT's.  A harvest
    holding the thread to 10.5 ms: ticks before it send nothing, tick 10 sends for its last
    0.5 ms; ticks 10-49 (to 50 ms) carry 39.5 ms worth: floor(39.5 × 1,250,000 / 4104) =
    12,030 pages."""
    sim, m = _counting(bandwidth="100Gbit/s")
    assert m.counted_ticks(EDGES, 5) == 50
    assert m._deferred.sent == (45 * LINK_MS) // NORMAL == 13_706
    assert m._deferred.ticks[0] == 5
    sim, m = _counting(bandwidth="100Gbit/s")
    m.busy_until_ns = 10 * MS + MS // 2
    assert m.counted_ticks(EDGES, 0) == 50
    sent = (79 * LINK_MS // 2) // NORMAL
    assert (m._deferred.sent, m._deferred.ticks[0]) == (sent, 10) == (12_030, 10)
    assert m.carry_bytes == 79 * LINK_MS // 2 - sent * NORMAL


def test_counted_ticks_leaves_the_tick_that_empties_the_bitmap():
    """A 512-page guest: tick 0 sends 304 pages; tick 1 could send 305, more than the 208
    left, so it is the sender's last (dry: a loop turn) and is left to ``tick``."""
    sim, m = _counting(slot_size="2MiB", bandwidth="100Gbit/s")
    assert m.counted_ticks(EDGES, 0) == 1
    assert (m._deferred.sent, m._remaining) == (304, 208)


def _set(attr, value):
    return lambda m: setattr(m, attr, value)


@pytest.mark.parametrize(
    ("kw", "change"),
    [
        ({"policy": "xen"}, None),
        ({"policy": "fixed"}, None),
        ({}, _set("phase", "done")),
        ({}, _set("defer_tick", None)),
        ({}, _set("decision_due", True)),
        ({}, _set("_remaining", None)),
        ({"max_rounds": 1}, _set("round", 2)),
        ({"tracking": {"mode": "manual-clear"}}, None),  # a CLEAR may come first: no look-ahead
    ],
)
def test_counted_ticks_runs_nothing_that_is_not_only_a_count(kw, change):
    """Xen, policy fixed, a migration not iterating, sends not counted, a decision due, the
    pending count unknown, max_rounds passed, manual clear without its look-ahead: tick 3 is
    left to ``tick`` (3 is returned) and nothing is counted."""
    kw = dict(kw)  # (the parameters are shared by every run of the test)
    tracking = kw.pop("tracking", None)
    sim, m = _counting(tracking, bandwidth="100Gbit/s", **kw)
    if change:
        change(m)
    assert m.counted_ticks(EDGES, 3) == 3
    assert (m._deferred, m.total_bytes, m.carry_bytes) == (None, 0, 0.0)


def test_counted_ticks_runs_at_max_rounds_itself():
    """round == max_rounds is not past it (the give-up is at round > max_rounds)."""
    sim, m = _counting(bandwidth="100Gbit/s", max_rounds=1)
    assert m.round == 1
    assert m.counted_ticks(EDGES, 3) == 50


@pytest.mark.parametrize(
    ("kw", "attr", "want"),
    [
        ({"timeout_s": 0.02}, None, 19),  # the timeout check at 20 ms
        ({"tracking": {"mode": "ring", "ring_entries": 256}}, "reap_next", 29),
        ({"auto_converge": True, "qemu": "10.1"}, "throttle_timer_next", 29),
        ({"auto_converge": True, "qemu": "8.2"}, "throttle_timer_next", 50),  # no timer
        ({"auto_converge": False, "qemu": "10.1"}, "throttle_timer_next", 50),
        ({"kubevirt": {"progress_timeout_s": 150}}, "kubevirt", 29),
    ],
)
def test_counted_ticks_stops_before_a_timer_or_limit(kw, attr, want):
    """The tick ending at or past a due timer (the ring reaper, the throttle's dirty-sync
    timer from QEMU 9.2 under auto-converge, KubeVirt's monitor) or at the timeout is left to
    ``tick``: here each is made due at 30 ms (tick 29), the timeout at 20 ms (tick 19);
    without the timer the link's MAX_WAIT turn (tick 50) comes first."""
    kw = dict(kw)  # (the parameters are shared by every run of the test)
    tracking = kw.pop("tracking", None)
    sim, m = _counting(tracking, bandwidth="100Gbit/s", **kw)
    if attr == "kubevirt":
        m.kubevirt.next_ns = 30 * MS
    elif attr:
        setattr(m, attr, 30 * MS)
    assert m.counted_ticks(EDGES, 0) == want
    assert m._deferred.sent == (want * LINK_MS) // NORMAL


# -- quiet_ticks: how long a batch may run before anything but sending can happen ---------------


def _quiet(slot_size="64MiB", **migration):
    """As ``_counting``, the slot backed by 4 KiB pages (any whole number of pages)."""
    data = session(costs=ZERO_COSTS, migration=migration)
    data["memslots"][0].update(size=slot_size, backing="4KiB")
    sim = Simulation.from_dict(data)
    sim.migration.start(0)
    return sim, sim.migration


def test_quiet_ticks_qemu_bound_by_the_windows():
    """QEMU, 16,384 pages pending, 256 Mbit/s (3,200,000 bytes a window), 300 ms limit, 1 ms
    ticks, at 0.  No sync before what is pending falls to the largest threshold a window can
    measure: (32,000,000 + 2 × 4104 × 10) bytes/s × 0.3 s = 9,624,624 bytes = 2,349 pages + 1
    = 2,350; 14,034 pages must go first.  The link sends at most 304 + 2 pages a tick (14,034
    // 306 = 45 ticks); the windows 780 pages now (3,200,000 // 4104 + 1) by the window's end
    at 100 ms, then 781 a window: 100 + (14,034 - 780) // 781 × 100 = 1,700 ticks, the larger
    bound, under the 120 s timeout."""
    sim, m = _quiet()
    assert m._quiet_sending(MS) == 1700
    assert m.quiet_ticks(0, MS) == 1700


def test_quiet_ticks_qemu_with_avail_switchover_bandwidth():
    """avail-switchover-bandwidth 100 MB/s over the windows' 32.08 MB/s: the threshold is at
    most 30,000,000 bytes = 7,324 pages + 1; 16,384 - 7,325 = 9,059 pages must go: 100 +
    (9,059 - 780) // 781 × 100 = 1,100 ticks."""
    sim, m = _quiet(avail_switchover_bandwidth=100_000_000)
    assert m.quiet_ticks(0, MS) == 1100


@pytest.mark.parametrize(
    ("pages", "want"),
    [
        (2350 + 306, 1),  # 306 // 306
        (2350 + 604, 1),  # 604 // 306
        (2350 + 779, 2),
        (2350 + 780, 100),  # this window's 780, then none: its end
        (2350 + 780 + 781, 200),  # and one more window of 781
    ],
)
def test_quiet_ticks_qemu_within_this_window_share(pages, want):
    """With fewer pages to go before a sync is possible than this window's share (780), the
    link bounds them at 304 + 2 a tick: 306 // 306 = 1, 604 // 306 = 1, 779 // 306 = 2 ticks;
    with 780, the window's end (100 ticks); 781 more take one more window (200)."""
    sim, m = _quiet(f"{pages * 4}KiB")
    assert m._quiet_sending(MS) == m.quiet_ticks(0, MS) == want


def test_quiet_ticks_qemu_one_page_over_with_the_window_spent():
    """2,351 pages: one must go before a sync is possible; this window has 1,000 bytes left,
    room for one page to start (1,000 // 4104 + 1).  The page is not fewer than that room, so
    the bound is the windows' (the end of this one: 100 ticks), not 0."""
    sim, m = _quiet(f"{2351 * 4}KiB")
    m.win_xfer0 = -3_199_000  # 3,199,000 bytes of the 3,200,000 used
    assert m._quiet_sending(MS) == m.quiet_ticks(0, MS) == 100


def test_quiet_ticks_qemu_later_in_the_window():
    """At 50 ms into the first window (nothing sent yet): its end is 50 ticks away, so the
    windows bound 50 + 1,600 = 1,650 ticks; with a 0.5 s timeout, 450 ticks to it."""
    sim, m = _quiet()
    sim.t_ns = 50 * MS
    assert m._quiet_sending(MS) == m.quiet_ticks(50 * MS, MS) == 1650
    sim, m = _quiet(timeout_s=0.5)
    sim.t_ns = 50 * MS
    assert m.quiet_ticks(50 * MS, MS) == 450


@pytest.mark.parametrize(
    ("migration", "due", "want"),
    [
        ({}, False, 2),  # the sender runs dry: (512 - 1) // 306 + 1 = 2 ticks
        ({}, True, 1),  # a decision is due now
        ({"bandwidth": "8Mbit/s", "downtime_limit_ms": 2000}, False, 51),  # MAX_WAIT
        ({"bandwidth": "8Mbit/s", "downtime_limit_ms": 2000, "timeout_s": 0.02}, False, 20),
    ],
)
def test_quiet_ticks_qemu_when_a_sync_is_possible(migration, due, want):
    """512 pages, under the largest threshold (2,350 pages; at 8 Mbit/s and 2 s, 529): a sync
    may come at the next decision, so a batch stops where QEMU decides: a decision due now,
    the first tick the sender may run dry (at most 306 pages a tick), or MAX_WAIT (51 ms) and
    the window's end (100 ms) when this window's share (8 Mbit/s: 100,000 // 4104 + 1 = 25
    pages) runs out first."""
    sim, m = _quiet("2MiB", **migration)
    m.decision_due = due
    assert m._quiet_sending(MS) == 0
    assert m.quiet_ticks(0, MS) == want


@pytest.mark.parametrize(
    ("pages", "migration", "want"),
    [
        (305, {}, 1),  # 304 // 306 + 1
        (307, {}, 2),  # 306 // 306 + 1
        (605, {}, 2),  # 604 // 306 + 1
        (25, {"bandwidth": "8Mbit/s", "downtime_limit_ms": 2000}, 1),  # the share's 25
        (26, {"bandwidth": "8Mbit/s", "downtime_limit_ms": 2000}, 51),  # one more: MAX_WAIT
    ],
)
def test_quiet_ticks_qemu_until_the_sender_may_run_dry(pages, migration, want):
    """Under the threshold, when this window's share covers what is left (8 Mbit/s: 100,000
    bytes, 25 pages start while at most that is used), the batch ends at the first tick the
    sender may run dry, at most 306 pages a tick: (left - 1) // 306 + 1 ticks; when the share
    does not (26 pages), at the next decision: MAX_WAIT's 51 ms before the window's 100."""
    sim, m = _quiet(f"{pages * 4}KiB", **migration)
    assert m._quiet_sending(MS) == 0
    assert m.quiet_ticks(0, MS) == want


def test_quiet_ticks_xen_by_its_bandwidth():
    """Xen sends at ``bandwidth`` (32,000,000 bytes/s: 7 pages + 2 a tick) and harvests only
    when nothing is left: 16,384 // 9 = 1,820 ticks.  The throttle timer is QEMU's: ignored."""
    sim, m = _quiet(policy="xen", auto_converge=True, qemu="10.1")
    m.throttle_timer_next = 30 * MS
    assert m._quiet_sending(MS) == 1820
    assert m.quiet_ticks(0, MS) == 1820


@pytest.mark.parametrize(
    ("t", "migration", "want"),
    [
        (0, {}, 100),
        (500_000, {}, 100),  # 99.5 ticks: rounded up
        (99_500_000, {}, 1),
        (100_000_000, {}, 1),
        (0, {"timeout_s": 0.05}, 50),
    ],
)
def test_quiet_ticks_fixed_until_the_next_harvest(t, migration, want):
    """Policy fixed harvests every 100 ms (the first at 100 ms): ticks to it, rounded up, at
    least 1, or to the timeout when that comes first."""
    sim, m = _quiet(policy="fixed", **migration)
    assert m.quiet_ticks(t, MS) == want


@pytest.mark.parametrize(
    ("migration", "timer", "want"),
    [
        ({"auto_converge": True, "qemu": "10.1"}, "throttle_timer_next", 30),
        ({"auto_converge": False, "qemu": "10.1"}, "throttle_timer_next", 1700),
        ({"auto_converge": True, "qemu": "8.2"}, "throttle_timer_next", 1700),
        ({"kubevirt": {"progress_timeout_s": 150}}, "kubevirt", 400),  # its first sample
        ({"timeout_s": 0.5}, None, 500),
        ({"timeout_s": 0.001}, None, 1),
    ],
)
def test_quiet_ticks_stop_at_timers(migration, timer, want):
    """A timer due ends a batch: the throttle's dirty-sync timer (QEMU >= 9.2 under
    auto-converge; here made due at 30 ms), KubeVirt's 400 ms samples, the timeout."""
    sim, m = _quiet(**migration)
    if timer == "throttle_timer_next":
        m.throttle_timer_next = 30 * MS
    assert m.quiet_ticks(0, MS) == want


def test_quiet_ticks_ring_reaper():
    """Ring mode: the reaper collects every second (the first at 1 s): 1,000 ticks."""
    data = session(costs=ZERO_COSTS, tracking={"mode": "ring", "ring_entries": 256})
    data["memslots"][0]["backing"] = "4KiB"
    sim = Simulation.from_dict(data)
    sim.migration.start(0)
    assert sim.migration.quiet_ticks(0, MS) == 1000


# -- result: what a run reports before, during and without a migration's end ----------------------

NOT_SWITCHED = {"pages_checked": 0, "mismatches": 0, "note": "no switchover happened"}


def _result_before_start(policy: str) -> dict:
    """Every field of a migration not started yet: nothing sent, no round, no slot (setup
    adds them), the expected downtime at its start value, the downtime limit (300 ms)."""
    return {
        "outcome": "not-started", "reason": "", "policy": policy,
        "qemu": None if policy == "xen" else "10.1",
        "total_time_ms": 0.0, "downtime_ms": 0.0, "expected_downtime_ms": 300.0,
        "setup_time_ms": 0.0, "transferred_bytes": 0, "duplicate": 0, "normal": 0,
        "normal_bytes": 0, "rounds_count": 0, "dirty_sync_count": 0, "dirty_pages_rate": 0.0,
        "mbps": 0.0, "remaining_bytes": 0, "throttle_pct": 0, "verification": NOT_SWITCHED,
        "rounds": [],
    }  # fmt: skip


@pytest.mark.parametrize("policy", ["qemu", "xen"])
def test_result_before_the_migration_starts(policy):
    """A migration's report before its start, QEMU's release named, Xen's None."""
    sim = Simulation.from_dict(session(costs=ZERO_COSTS, migration={"policy": policy}))
    assert sim.migration.result() == _result_before_start(policy)
    assert not sim.migration.active and not sim.migration.guest_paused
    assert sim.snapshot().outcome is None  # no outcome yet (the status line's "done · ...")


def test_result_while_running():
    """5 ms into a QEMU migration of 16,384 pages (256 Mbit/s: 780 pages in the first
    window's share, sent by 3 ms, test_counted_ticks_sends_a_window_share_then_waits_for_its_end):
    running for 5 ms, the setup sync counted (1), no round closed, 15,604 pages left (pages
    written again wait for the next sync), 780 normal pages of 4,104 bytes on the wire."""
    sim = Simulation.from_dict(session(costs=ZERO_COSTS))
    sim.advance(5)
    want = {
        **_result_before_start("qemu"),
        "outcome": "running", "total_time_ms": 5.0, "transferred_bytes": 780 * NORMAL,
        "normal": 780, "normal_bytes": 780 * 4096, "dirty_sync_count": 1,
        "remaining_bytes": (16384 - 780) * 4096,
    }  # fmt: skip
    assert sim.migration.result() == want
    assert sim.migration.active and not sim.migration.guest_paused


def test_counted_ticks_goes_on_counting_into_the_batchs_sends():
    """Two calls in one batch (ticks 0-9, then from 10): the second adds to the first's
    count, as one call over ticks 0-49 would: 15,229 pages by MAX_WAIT."""
    sim, m = _counting(bandwidth="100Gbit/s")
    assert m.counted_ticks(EDGES[:11], 0) == 10
    assert m._deferred.sent == (10 * LINK_MS) // NORMAL
    assert m.counted_ticks(EDGES, 10) == 50
    assert (m._deferred.sent, m._deferred.ticks[0]) == (15_229, 0)


def test_counted_ticks_manual_clear_up_to_its_look_ahead():
    """Manual clear: tick 0 run by ``tick`` sends 304 pages and looks ahead (one scan of the
    bitmap) as far as the link could carry in the batch's ticks left (outside a batch: 1):
    304 + 304 + 2 = 610 pages; the setup GET found nothing, so no chunk needs a CLEAR.  Tick
    1 sends 305 (609 in all); tick 2's 171 would pass the look-ahead: left to ``tick``."""
    sim, m = _counting({"mode": "manual-clear"})
    m.tick(0, MS)
    d = m._deferred
    assert (d.sent, d.ahead_limit, d.clear_at.size) == (304, 610, 0)
    assert m.counted_ticks(EDGES, 1) == 2
    assert d.sent == 609


def test_counted_ticks_manual_clear_of_an_untracked_slot_only():
    """Manual clear mode, the only slot without logging: no GET, nothing to CLEAR, so the
    ticks are counted as in bitmap mode (to MAX_WAIT's tick 50)."""
    sim, m = _counting({"mode": "manual-clear"}, flags=(), bandwidth="100Gbit/s")
    assert m.slots[0].clear_snapshot is None
    assert m.counted_ticks(EDGES, 0) == 50


@pytest.mark.parametrize(
    ("bandwidth", "want", "sent"), [(18_350_000, 99, 448), (18_390_000, 1, 304)]
)
def test_counted_ticks_stops_where_a_chunk_needs_its_clear(bandwidth, want, sent):
    """Manual clear, chunks of 256 KiB (64 pages), the setup GET having reported page 500
    (chunk 448-511): the first send of rank 448 must CLEAR that chunk first, so a tick
    sending past rank 448 is left to ``tick``.  Tick 0 (by ``tick``) sends 304 pages,
    link-bound; tick 1 is bound by the window: max-bandwidth 18,350,000 bytes/s leaves
    1,835,000 - 1,247,616 = 587,384 bytes, 144 pages start (143 × 4104 <= 587,384): ranks
    304-447, up to the chunk, not into it: counted, and the share is spent (wait to tick
    99).  At 18,390,000 (590,976 bytes left) 145 would start: rank 448 is among them, so
    tick 1 is left to ``tick``."""
    sim, m = _counting({"mode": "manual-clear", "clear_chunk": "256KiB"}, bandwidth=bandwidth)
    m.slots[0].clear_snapshot[500 // 64] = np.uint64(1 << (500 % 64))
    m.tick(0, MS)
    d = m._deferred
    assert (d.sent, d.clear_at.tolist()) == (304, [448])
    assert m.counted_ticks(EDGES, 1) == want
    assert d.sent == sent


def test_counted_ticks_counts_the_window_from_its_start():
    """A window that began after 5,000,000 bytes were sent (win_xfer0): the share is counted
    from there, so the first window's 304 + 305 + 171 pages go as from nothing."""
    sim, m = _counting()
    m.total_bytes = m.win_xfer0 = 5_000_000
    assert m.counted_ticks(EDGES, 0) == 99
    assert m._deferred.counts == [304, 305, 171]


def test_counted_ticks_timeout_from_the_migrations_start():
    """A migration started at 5 ms with a 20 ms timeout: the timeout check is due at 25 ms
    (tick 24, left to ``tick``); ticks 5-23 send 19 ms of the link: floor(19 × 1,250,000 /
    4104) = 5,787 pages (none before the start's 5 ms, which the setup holds)."""
    sim, m = _counting(bandwidth="100Gbit/s", timeout_s=0.02, start=5 * MS)
    assert m.counted_ticks(EDGES, 0) == 24
    assert (m._deferred.sent, m._deferred.ticks[0]) == ((19 * LINK_MS) // NORMAL, 5) == (5787, 5)


def test_counted_ticks_a_window_with_nothing_left_still_starts_a_page():
    """The rate limit is exceeded only above the share (migration_rate_exceeded): with
    exactly the share used (3,200,000 bytes) one page still starts in tick 0, then the
    sender waits for the window's end."""
    sim, m = _counting()
    m.total_bytes = 3_200_000
    assert m.counted_ticks(EDGES, 0) == 99
    assert m._deferred.counts == [1]


def _tick_by_tick(ticks: int, **migration) -> float:
    """The carry ``tick`` leaves after ticks 0 .. ticks - 1 of a fresh ``_counting`` run."""
    sim, m = _counting(**migration)
    for k in range(ticks):
        m.tick(k * MS, (k + 1) * MS)
    return m.carry_bytes


@pytest.mark.parametrize(
    ("ticks", "bandwidth", "carry"),
    [
        (3, "256Mbit/s", 0.0),  # tick 2 bound by the window: the link idles after it
        (1, 12_450_000, 2384.0),  # 304 pages by the link and by the window (1,245,000 bytes)
    ],
)
def test_counted_ticks_leaves_the_carry_of_tick(ticks, bandwidth, carry):
    """The carry after the batch's last tick is the one ``tick`` leaves, tick by tick: none
    after a tick the window's share bound (tick 2 of test_counted_ticks_sends_a_window_share
    _then_waits_for_its_end); 1,250,000 - 304 × 4104 = 2,384 bytes when the link and the
    window allow the same 304 pages (a share of 1,245,000 bytes: 303 × 4104 <= 1,245,000)."""
    sim, m = _counting(bandwidth=bandwidth)
    assert m.counted_ticks(EDGES[: ticks + 1], 0) == ticks
    assert m.carry_bytes == _tick_by_tick(ticks, bandwidth=bandwidth) == carry


@pytest.mark.parametrize(
    ("link", "bandwidth", "want", "sent"),
    [
        (63_000_000, "256Mbit/s", 99, 780),  # tick 50 passes the share: no MAX_WAIT turn
        (62_800_000, 32_011_200, 50, 765),  # tick 50 reaches the share exactly: MAX_WAIT
    ],
)
def test_counted_ticks_max_wait_only_within_the_share(link, bandwidth, want, sent):
    """MAX_WAIT ends ram_save_iterate at 51 ms only while the rate limit is not exceeded
    (above the share).  At 63,000 bytes/ms the share (3,200,000 bytes) is passed in tick 50
    itself (767 pages by 50 ms, then 13 start within the 52,232 bytes left): no loop turn
    there, the wait runs to the window's end (tick 99).  At 62,800 bytes/ms with a share of
    780 pages exactly (3,201,120 bytes), tick 50 would bring the total to 780 pages (floor(51
    × 62,800 / 4104)), the share reached, not passed: MAX_WAIT's turn, left to ``tick``
    after 765 pages (floor(50 × 62,800 / 4104))."""
    sim, m = _counting(bandwidth=bandwidth, link_speed=link)
    assert m.counted_ticks(EDGES, 0) == want
    assert m._deferred.sent == sent


# -- start: ram_save_setup at any time ------------------------------------------------------------


def test_start_at_1_5_s_sets_every_timer_from_it():
    """QEMU started at 1.5 s (no modelled costs): the window, the rate period and
    ram_save_iterate begin then; the throttle's dirty-sync timer is due 5 s later (6.5 s),
    the ring reaper at the next whole second (2 s: kvm_dirty_ring_reaper_thread sleeps 1 s
    between reaps, from the VM's start), policy fixed's next harvest at 1.6 s; the setup
    sync is dirty-sync-count 1, its GET reports nothing new (every page is to send)."""
    sim = Simulation.from_dict(session(costs=ZERO_COSTS))
    m = sim.migration
    m.start(1_500_000_000)
    assert (m.phase, m.t_start_ns, m.busy_until_ns, m.setup_ns) == ("iterating", 1.5e9, 1.5e9, 0)
    assert (m.win_start, m.iterate_t0, m.win_xfer0) == (1.5e9, 1.5e9, 0)
    assert m.period == {"t": 1.5e9, "xfer0": 0, "new": 0, "high": 0, "reported": 0}
    assert (m.throttle_timer_next, m.reap_next, m.next_harvest_ns) == (6.5e9, 2e9, 1.6e9)
    assert (m.round, m.syncs, m.kubevirt, m.remaining_pages()) == (1, 1, None, 16384)
    assert sim.messages[-1].endswith("] migration started: 16,384 pages to send")


@pytest.mark.parametrize(("pages", "stop"), [(49, True), (50, False)])
def test_start_xen_pass_one_follows_enable_logdirty(pages, stop):
    """Xen: no CLEAN before pass 1 (round 1, no sync counted), and a guest of fewer than
    xen_min_pages (50) pages stops after its first batch."""
    sim, m = _quiet(f"{pages * 4}KiB", policy="xen")
    assert (m.round, m.syncs, m.iter_pages, m.stop_after_batch) == (1, 0, 0, stop)
    assert m.last_harvest == {}  # round 1 without a harvest: nothing reported (the app reads it)


def test_start_kubevirt_counts_every_slots_memory():
    """KubeVirt's completion timeout is completionTimeoutPerGiB × the memory in GB rounded up:
    900 MiB + 64 MiB = 1,010,827,264 bytes: 2 GB, 300 s (either slot alone is 1 GB); its
    first sample is 400 ms after the start."""
    data = session(costs=ZERO_COSTS, migration={"kubevirt": {"completion_timeout_per_gib": 150}})
    data["memslots"][0]["size"] = "900MiB"
    data["memslots"].append(
        {"id": 1, "base": "0x80000000", "size": "64MiB", "flags": ["log_dirty"], "backing": "2MiB"}
    )
    sim = Simulation.from_dict(data)
    sim.migration.start(7 * MS)
    kv = sim.migration.kubevirt
    assert (kv.acceptable_s, kv.next_ns, kv.start) == (300, 407 * MS, 7 * MS)


def test_the_first_pass_starts_at_the_lowest_slot():
    """Two 64 MiB slots (ids 0 and 1): the sender's first pass goes in RAMBlock order from
    the first slot's first page, so the first 1 ms tick's 304 pages are slot 0's pages
    0-303, sent in round 1, and nothing of slot 1 yet."""
    data = session(costs=ZERO_COSTS)
    data["memslots"].append(
        {"id": 1, "base": "0x80000000", "size": "64MiB", "flags": ["log_dirty"], "backing": "2MiB"}
    )
    sim = Simulation.from_dict(data)
    sim.advance(1)
    sent = {
        sid: np.flatnonzero(m.last_sent >= 0).tolist() for sid, m in sim.migration.slots.items()
    }
    assert sent == {0: list(range(304)), 1: []}


@pytest.mark.parametrize(
    ("qemu", "syncs", "le"), [("7.2", 2, "<"), ("8.2", 3, "<"), ("9.2", 2, "<"), ("10.1", 2, "≤")]
)
def test_a_decision_before_any_window_is_measured(qemu, syncs, le):
    """1 MiB idle guest (256 pages × 4,104 bytes: all sent in the first 1 ms tick, under the
    link's 1,250,000 bytes and the window's share).  The sender runs dry, a decision at 1 ms,
    before any window was measured: the threshold is still 0 (mbps 0).  Nothing is pending:
    8.2 syncs at pending <= threshold (0 <= 0: sync 2), the others only below it (0 < 0: no
    sync); every release then completes (pending 0), and the final sync of the stop-and-copy
    is the last (8.2: 3, else 2)."""
    data = session(costs=ZERO_COSTS, workloads=[], migration={"qemu": qemu})
    data["memslots"][0].update(size="1MiB", backing="4KiB")
    _, result = run(data)
    assert (result["outcome"], result["dirty_sync_count"]) == ("completed", syncs)
    rounds = result["rounds"]
    assert [(r["pages_sent"], r["t_end_ns"]) for r in rounds] == [(256, MS)] + [(0, MS)] * (
        syncs - 1
    )
    assert {(r["threshold_bytes"], r["mbps"]) for r in rounds} == {(0.0, 0.0)}
    reason = f"0 dirty bytes {le} threshold 0 bytes (measured bandwidth × downtime limit, "
    assert result["reason"] == f"{reason}QEMU {qemu})"


def test_xen_pages_sent_one_at_a_time_add_up():
    """Xen sends at ``bandwidth`` (32,000,000 bytes/s: 32,000 bytes a 1 ms tick, 4,096 a
    page), written at once when sends are not counted (outside a lazy batch): tick 0 sends 7
    pages (3,328 bytes carried), tick 1 8 (35,328 bytes): 15 in all, in this iteration and
    in the total xen-4.5 compares with xen_max_factor × the guest's pages."""
    sim, m = _quiet(policy="xen")
    m.tick(0, MS)
    m.tick(MS, 2 * MS)
    assert (m.total_pages_sent, m.iter_pages, m.total_bytes) == (15, 15, 15 * 4096)
    assert m.remaining_pages() == 16384 - 15
    # in address order, tick 1 going on right after tick 0's last page (the cursor: page 7)
    assert np.flatnonzero(m.slots[0].last_sent >= 0).tolist() == list(range(15))
    assert m.cursor == (0, 15)


@pytest.mark.parametrize(("bandwidth", "slot1"), [(32_000_000, []), (37_000_000, [0, 1])])
def test_a_send_across_two_slots_takes_the_first_n_in_order(bandwidth, slot1):
    """Xen, pages written at once (sends not counted), slot 0 of 7 pages then slot 1 of 64:
    a 1 ms tick at 32,000,000 bytes/s carries 7 pages (28,672 of 32,000 bytes): slot 0's
    7 and none of slot 1, though the batch collected its first page too; at 37,000,000
    bytes/s 9 (36,864 of 37,000 bytes): slot 0's 7, then slot 1's pages 0 and 1."""
    data = session(costs=ZERO_COSTS, migration={"policy": "xen", "bandwidth": bandwidth})
    data["memslots"] = [
        {"id": 0, "base": "0x40000000", "size": "28KiB", "flags": ["log_dirty"], "backing": "4KiB"},
        {
            "id": 1,
            "base": "0x80000000",
            "size": "256KiB",
            "flags": ["log_dirty"],
            "backing": "4KiB",
        },
    ]
    sim = Simulation.from_dict(data)
    m = sim.migration
    m.start(0)
    m.tick(0, MS)
    sent = {sid: np.flatnonzero(s.last_sent >= 0).tolist() for sid, s in m.slots.items()}
    assert sent == {0: list(range(7)), 1: slot1}
    assert m.total_pages_sent == 7 + len(slot1)

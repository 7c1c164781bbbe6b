"""QEMU's KVM_CLEAR_DIRTY_LOG calls during a pre-copy, pinned by hand: one call per clear
chunk, the first time a page of the chunk is sent in a round, carrying only the bits the last
GET reported (QEMU migration/ram.c ``migration_clear_memory_region_dirty_bitmap`` →
``memory_region_clear_dirty_bitmap`` → ``kvm_log_clear``; the chunk is
``clear_bitmap_shift``, 2^18 bytes by default, 2^19 here).  The expected calls, times and
masks are derived in each test's docstring, not read from the engine."""

from __future__ import annotations

from traces import manual_clear_trace_session

from engine.migration.simulation import Simulation

PAGE_MS = 4104 * 8 / 64e6 * 1e3  # one page and its 8-byte header at 64 Mbit/s: 0.513 ms


def session(tmp_path) -> dict:
    """Manual clear with initially-set bits, 512 KiB (128-page) clear chunks, a 259-page slot
    (two whole chunks and one of 3 pages) sent at 64 Mbit/s, 1 ms ticks; at 50 ms the guest
    writes page 70 (chunk 0, already cleared: write-protected, so logged) and page 200
    (chunk 1, not yet cleared: initially-set leaves it writable, so not logged)."""
    writes = [(50_000_000, 70), (50_000_000, 200)]
    return manual_clear_trace_session(tmp_path, writes, "1036KiB", "512KiB")


def run(tmp_path) -> tuple[Simulation, list[tuple[int, list[int]]]]:
    """The run tick by tick; for every tick that CLEARed, (its first page, the 64-page cells
    the tick noted as changed for a view)."""
    sim = Simulation.from_dict(session(tmp_path))
    sim.keep_harvests = True
    changes = sim.track_changes()
    noted = []
    while not sim.finished:
        before = len(sim.migration.clears)
        changes.take()
        sim.advance(1)
        if len(sim.migration.clears) > before:
            noted.append((sim.migration.clears[-1]["first_page"], changes.take().tolist()))
    return sim, noted


def test_each_chunk_is_cleared_once_per_round_with_the_bits_the_get_reported(tmp_path):
    """Round 1: the initially-set GET reports all 259 pages.  Chunk k's first page goes after
    128·k pages: at 0, 65.7 and 131.3 ms, so in the ticks of 0, 66 and 132 ms; each CLEAR
    carries all its chunk's bits (2 full words; the last chunk 3 pages: num_pages 3, mask 0x7).
    The pass ends at 259 × 0.513 = 132.9 ms (tick 133).  Only page 70 was logged (page 200's
    write came before its chunk's CLEAR re-protected it), so the sync reports [70] and the
    stop-and-copy (round 3) sends it: one CLEAR of chunk 0 with word 1 bit 6 (70 = 64 + 6)."""
    sim, _ = run(tmp_path)
    full = ["0xffffffffffffffff"] * 2
    expected = [
        (0, 1, 0, 128, full),
        (66, 1, 128, 128, full),
        (132, 1, 256, 3, ["0x7"]),
        (133, 3, 0, 128, ["0x0", "0x40"]),
    ]
    assert [
        (c["t_ns"] // 1_000_000, c["round"], c["first_page"], c["num_pages"], c["mask"])
        for c in sim.migration.clears
    ] == expected
    assert all(c["slot"] == 0 and c["t_ns"] % 1_000_000 == 0 for c in sim.migration.clears)
    assert round(128 * PAGE_MS, 2) == 65.66 and round(259 * PAGE_MS, 1) == 132.9
    assert sim.result()["outcome"] == "completed"


def test_a_clear_notes_every_word_it_cleared_for_a_view(tmp_path):
    """A view of a large guest refreshes only the 64-page cells the run noted.  Chunk 1's
    CLEAR (at the send of page 128) re-protects both its words, cells 2 and 3, while the sends
    of that tick touch cell 2 only; the last chunk's (page 256: cell 4) comes in the tick
    that also sends pages 255-256 (cells 3, 4).  In round 3 only word 1 (cell 1) had a bit; the
    same tick sent the pass's last pages, 257-258 (cell 4)."""
    _, noted = run(tmp_path)
    assert noted[1:] == [(128, [2, 3]), (256, [3, 4]), (0, [1, 4])]

"""Rules of engine/migration/precopy.py and deferred.py that survivors of the precopy mutation
pass showed untested (each mutant replayed by hand against these tests).  Expected values are
worked out by hand from the trace and QEMU's migration/ram.c rules, never read back."""

from engine.kvm.dirtylog import bitmap_pages
from engine.migration.simulation import Simulation

BASE = 0x4000_0000
NPAGES = 256


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

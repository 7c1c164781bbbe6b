"""``PageTable.live_tables`` counts the entry level too: with a 48-bit IPA and 4 KiB pages
the walk starts at level 0 (4 levels, arch/arm64 stage2_pgtable.h), and the root table at
level 0 is as live as any other."""

from __future__ import annotations

from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable


def test_live_tables_include_a_level_0_root():
    pgt = PageTable(Geometry(4096, 48))
    assert pgt.geom.start_level == 0
    assert pgt.live_tables().tolist() == [0]  # the root alone
    pgt.map_range(0x4000_0000, 2 << 20, writable=True)  # one 2 MiB run: a table per level
    live = pgt.live_tables()
    assert [int(pgt.table_level[t]) for t in live] == [0, 1, 2, 3]
    assert pgt.live_tables(0).tolist() == [0]

"""``PageTable.lookup`` and ``last_level_tables`` read a last-level table straight from the map
of level-2 regions the tables keep (``_leaf_tables``, kept where tables are linked and freed);
checked against a plain walk, one descriptor at a time from the entry level, after the
structural changes that link and free tables: maps with blocks, splits (eager and lazy),
unmaps that free tables, blocks mapped over tables, in every granule."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import unmap_range


def _walk(pgt: PageTable, ipa: int) -> tuple[int, int, int]:
    """(level, flat position, descriptor) where a walk of ``ipa`` stops, entry by entry."""
    g = pgt.geom
    level = g.start_level
    pos = ipa >> g.level_shift(level)  # the concatenated entry-level tables
    while True:
        d = int(pgt.flat[pos])
        if level == 3 or d & 3 != 3:  # a page, a block or invalid
            return level, pos, d
        table = int(pgt.table_of(np.array([d], np.uint64))[0])
        level += 1
        pos = table * pgt.E + ((ipa >> g.level_shift(level)) & (pgt.E - 1))


def _check(pgt: PageTable, ipas: np.ndarray) -> None:
    level, pos, desc = pgt.lookup(ipas)
    want = [_walk(pgt, int(a)) for a in ipas]
    assert level.tolist() == [w[0] for w in want]
    assert pos.tolist() == [w[1] for w in want]
    assert desc.tolist() == [w[2] for w in want]
    sizes = pgt.geom.level_size(2)
    starts = np.unique(ipas // sizes * sizes)
    tables = pgt.last_level_tables(starts)
    walked = [_walk(pgt, int(a)) for a in starts]
    assert tables.tolist() == [p // pgt.E if lv == 3 else -1 for lv, p, _ in walked]


OPS = st.lists(
    st.tuples(
        st.sampled_from(["map", "map-block", "unmap", "split", "split-lazy"]),
        st.integers(0, 7),  # which 2 MiB-region-sized piece (of eight)
        st.integers(1, 3),  # how many pieces
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=10, deadline=None)
@given(OPS, st.sampled_from([4096, 16384]))
def test_lookup_matches_a_plain_walk_after_any_structural_change(ops, granule):
    g = Geometry(granule, 40)
    pgt = PageTable(g)
    block = g.level_size(2)
    base = 1 << 30
    for op, at, n in ops:
        lo, size = base + at * block, n * block
        if op == "map":
            pgt.map_range(lo + granule, size - 2 * granule)  # pages: last-level tables
        elif op == "map-block":
            pgt.map_range(lo, size, backing=block)  # blocks over whatever was there
        elif op == "unmap":
            unmap_range(pgt, lo + block // 2, size)  # splits the edges, frees tables
        else:
            lv, pos, d = pgt.lookup(np.arange(lo, lo + size, block, dtype=np.int64))
            blocks = (lv == 2) & D.is_leaf(d, 2)
            pgt.split_blocks(pos[blocks], 2, populate=op == "split")
    rng = np.random.default_rng(len(ops))
    ipas = base - block + rng.integers(0, 11 * block, 200) // granule * granule
    _check(pgt, np.sort(ipas))
    _check(pgt, ipas)


@pytest.mark.parametrize("granule", [4096, 16384, 65536])
def test_a_freed_table_leaves_the_map_and_a_new_one_takes_its_region(granule):
    g = Geometry(granule, 40)
    pgt = PageTable(g)
    block = g.level_size(2)
    base = 1 << 30
    pgt.map_range(base, 2 * g.granule)
    _check(pgt, np.array([base, base + g.granule, base + block], dtype=np.int64))
    unmap_range(pgt, base, 2 * g.granule)  # the table empties and is freed
    assert pgt.last_level_tables(np.array([base], dtype=np.int64)).tolist() == [-1]
    pgt.map_range(base + block, g.granule)  # the freed row is reused one region up
    _check(pgt, np.array([base, base + block], dtype=np.int64))

"""The stage-2 tables against a plain reference, step by step (the walker group's mutation
survivors: decomposition of unaligned ranges, splits, replaced subtrees, unmap with straddling
blocks, freeing of emptied tables, the pool's free list, the reverse map and every lookup).

The reference keeps leaves as ``{base IPA: (level, writable)}`` and tables as a set of
``(level, base IPA)``, and applies each operation one leaf at a time, the way
``arch/arm64/kvm/hyp/pgtable.c`` describes it: a map installs the largest aligned block the
backing allows (``stage2_map_walker_try_leaf``/``kvm_block_mapping_supported``), a leaf
written over a table frees the table (``stage2_map_walk_leaf``: TLBI by range), a smaller leaf
inside a block splits the block first (break-before-make: one by-IPA TLBI), an unmap splits
the blocks that straddle its edges, removes what lies inside and frees the tables it leaves
empty (``stage2_unmap_walker``: TLBI by range).  The tables are then read entry by entry from
the pool (a per-entry walk that follows the descriptors' output addresses), and every result
(tables, leaves and their descriptors, per-table bookkeeping, free list, TLBI counts, the
lookups, ``last_level_tables``, the reverse map) is compared with the reference.
"""

from __future__ import annotations

import copy
import threading
from collections import Counter

import numpy as np
import pytest

from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import (
    Visit,
    WalkCounters,
    leaf_batches,
    scratch,
    set_clear_visitor,
    unmap_range,
    walk,
    walk_bulk,
    walk_bulk_spans,
)

POOL = 0xF000_0000_0000  # simulated PA of table row 0
HOST_OFFSET = 0x4000_0000  # the page backing IPA x sits at PA x + 1 GiB (mod 2^48)


class Ref:
    """A per-leaf reference of one VM's stage-2 tables."""

    def __init__(self, granule: int, ipa_bits: int, block_levels: tuple[int, ...]) -> None:
        self.shift = granule.bit_length() - 1
        self.bits = self.shift - 3
        self.E = 1 << self.bits
        self.start = 4 - max(2, (ipa_bits - 8) // self.bits)
        self.block_levels = block_levels
        self.limit = 1 << ipa_bits
        self.leaves: dict[int, tuple[int, bool]] = {}
        self.tables: set[tuple[int, int]] = set()
        self.tlbi: Counter[str] = Counter()
        self.splits = 0

    def size(self, level: int) -> int:
        return 1 << (self.bits * (4 - level) + 3)

    def leaf_at(self, ipa: int) -> int | None:
        for lv in range(self.start, 4):
            base = ipa - ipa % self.size(lv)
            if self.leaves.get(base, (None,))[0] == lv:
                return base
        return None

    def _split(self, base: int, populate: bool) -> None:
        level, w = self.leaves.pop(base)
        self.tables.add((level + 1, base))
        if populate:
            for i in range(self.E):
                self.leaves[base + i * self.size(level + 1)] = (level + 1, w)
        self.tlbi["ipa_is"] += 1
        self.splits += 1

    def _drop_inside(self, lo: int, hi: int, level: int) -> None:
        """Forget the leaves and the tables below ``level`` inside [lo, hi)."""
        for b in [b for b, (lv, _) in self.leaves.items() if lo <= b < hi and lv > level]:
            del self.leaves[b]
        self.tables = {(lv, b) for lv, b in self.tables if not (lv > level and lo <= b < hi)}

    def install(self, addr: int, level: int, w: bool) -> None:
        for lv in range(self.start + 1, level + 1):  # the path down, splitting blocks on it
            base = addr - addr % self.size(lv - 1)
            above = self.leaf_at(addr)
            if above is not None and self.leaves[above][0] < lv:
                self._split(above, populate=True)
            self.tables.add((lv, base))
        if level < 3 and (level + 1, addr) in self.tables:
            self._drop_inside(addr, addr + self.size(level), level)
            self.tlbi["range"] += 1
        self.leaves[addr] = (level, w)

    def map(self, start: int, size: int, backing: int, w: bool = True) -> None:
        allowed = [lv for lv in self.block_levels if self.size(lv) <= backing] + [3]
        addr, end = start, start + size
        while addr < end:  # the largest aligned leaf that fits, address by address
            lv = next(
                lv
                for lv in sorted(allowed)
                if addr % self.size(lv) == 0 and addr + self.size(lv) <= end
            )
            self.install(addr, lv, w)
            addr += self.size(lv)

    def split_lazy(self, base: int) -> None:
        self._split(base, populate=False)

    def _empty(self, level: int, base: int) -> bool:
        hi = base + self.size(level - 1)
        leaves = any(lv == level and base <= b < hi for b, (lv, _) in self.leaves.items())
        return not leaves and not any(lv == level + 1 and base <= b < hi for lv, b in self.tables)

    def unmap(self, start: int, size: int) -> int:
        end = start + size
        while True:
            straddling = {  # the blocks an edge falls strictly inside, each once
                b
                for e in (start, end)
                if 0 < e < self.limit
                for b in [self.leaf_at(e)]
                if b is not None and b != e and self.leaves[b][0] < 3
            }
            if not straddling:
                break
            for b in straddling:
                self._split(b, populate=True)
        inside = [(lv, b) for lv, b in self.tables if start <= b and b + self.size(lv - 1) <= end]
        outer = [(lv, b) for lv, b in inside if (lv - 1, b - b % self.size(lv - 2)) not in inside]
        self.tlbi["range"] += len(outer)
        removed = [b for b, (lv, _) in self.leaves.items() if start <= b < end]
        for b in removed:
            del self.leaves[b]
        self.tables -= set(inside)
        touched = {(lv, b) for lv, b in self.tables if b < end and b + self.size(lv - 1) > start}
        while touched:
            empty = {t for t in touched if t in self.tables and self._empty(*t)}
            if not empty:
                break
            self.tables -= empty
            self.tlbi["range"] += len(empty)
            touched = {
                (lv - 1, b - b % self.size(lv - 2)) for lv, b in empty if lv - 1 > self.start
            }
        return len(removed)


def read_tables(pgt: PageTable, ref: Ref) -> tuple[dict, dict, set]:
    """Entry by entry from the roots: leaves {base: (level, writable, pos)}, tables
    {(level, base): id}, and asserts on every descriptor and each table's bookkeeping."""
    E, shift = ref.E, ref.shift
    leaves: dict[int, tuple[int, bool, int]] = {}
    tables: dict[tuple[int, int], int] = {}
    root_span = ref.size(ref.start) * E
    n_root = -(-ref.limit // root_span)
    stack = [(r, ref.start, r * root_span) for r in range(n_root)]
    for r, _, base in stack:
        assert int(pgt.table_level[r]) == ref.start and int(pgt.table_ipa[r]) == base
    while stack:
        t, lv, base = stack.pop()
        row = pgt.pool[t]
        assert not (row[(row & 1) == 0]).any()  # an invalid entry is all zeros
        for i in np.flatnonzero(row).tolist():
            d = int(row[i])
            pos, addr = t * E + i, base + i * ref.size(lv)
            oa = d & ((1 << 48) - 1) & ~((1 << shift) - 1)
            if lv < 3 and d & D.TYPE:
                child = (oa - POOL) >> shift
                assert d == oa | D.VALID | D.TYPE
                assert int(pgt.table_level[child]) == lv + 1
                assert int(pgt.parent[child]) == pos and int(pgt.table_ipa[child]) == addr
                tables[(lv + 1, addr)] = child
                stack.append((child, lv + 1, addr))
                continue
            w = bool(d & D.S2AP_W)
            want = ((addr + HOST_OFFSET) % (1 << 48)) | D.VALID | D.LEAF_DEFAULT | D.S2AP_R
            want |= (D.S2AP_W if w else 0) | (D.TYPE if lv == 3 else 0)
            assert d == want, (hex(addr), lv, hex(d), hex(want))
            leaves[addr] = (lv, w, pos)
    return leaves, tables, set(range(n_root))


def walk_one(pgt: PageTable, ref: Ref, ipa: int) -> tuple[int, int, int]:
    """Where a hardware walk of ``ipa`` stops: level, flat position, descriptor."""
    lv = ref.start
    pos = ipa >> (ref.bits * (4 - lv) + 3)  # concatenated roots: one flat index
    while True:
        d = int(pgt.flat[pos])
        if lv == 3 or (d & 3) != 3:
            return lv, pos, d
        child = ((d & ((1 << 48) - 1)) - POOL) >> ref.shift
        lv += 1
        pos = child * ref.E + ((ipa >> (ref.bits * (4 - lv) + 3)) & (ref.E - 1))


def check(pgt: PageTable, ref: Ref, probes: np.ndarray) -> None:
    leaves, tables, roots = read_tables(pgt, ref)
    assert {b: v[:2] for b, v in leaves.items()} == ref.leaves
    assert set(tables) == ref.tables
    assert pgt.tlbi == ref.tlbi and pgt.splits == ref.splits
    # the pool: live rows are exactly the reachable ones; every other row is free and clean
    live = roots | set(tables.values())
    assert set(pgt.live_tables().tolist()) == live
    for lv in range(ref.start, 4):
        want = {t for (tl, _), t in tables.items() if tl == lv} | (
            roots if lv == ref.start else set()
        )
        assert set(pgt.live_tables(lv).tolist()) == want
    dead = [t for t in range(pgt.pool.shape[0]) if t not in live]
    assert not pgt.pool[dead].any()
    assert (pgt.table_level[dead] == -1).all() and (pgt.parent[dead] == -1).all()
    assert sorted(pgt._free) == [t for t in dead if t < pgt._high]
    assert len(pgt.table_level) == len(pgt.parent) == len(pgt.table_ipa) == pgt.pool.shape[0]
    assert pgt.pool.dtype == np.uint64 and pgt.table_level.dtype == np.int8
    assert pgt.parent.dtype == np.int64 and pgt.table_ipa.dtype == np.int64
    # lookups: sorted (grouped when large), reversed (direct), one at a time
    want = np.array([walk_one(pgt, ref, int(a)) for a in probes], dtype=object)
    for order in (slice(None), slice(None, None, -1)):
        level, pos, desc = pgt.lookup(probes[order])
        assert (level.dtype, pos.dtype, desc.dtype) == (np.int8, np.int64, np.uint64)
        assert level.tolist() == [int(x) for x in want[order, 0]]
        assert pos.tolist() == [int(x) for x in want[order, 1]]
        assert desc.tolist() == [int(x) for x in want[order, 2]]
    assert pgt.lookup(probes[:1], ascending=True)[2].tolist() == [int(want[0, 2])]
    # the last-level table under each level-2 region (in any order; few and many queries)
    regions = np.unique(probes - probes % ref.size(2))
    by_region = {b: t for (lv, b), t in tables.items() if lv == 3}
    expect = [by_region.get(int(b), -1) for b in regions]
    found = pgt.last_level_tables(regions)
    assert found.dtype == np.int64 and found.tolist() == expect
    assert pgt.last_level_tables(regions[::-1]).tolist() == expect[::-1]
    for k in (0, len(regions) // 2, len(regions) - 1):
        one = pgt.last_level_tables(regions[k : k + 1])
        assert one.dtype == np.int64 and one.tolist() == [expect[k]]
    # the reverse map: each page's leaf position, -1 where none
    if pgt.rmap is None:
        assert pgt.rmap_bytes() == 0
        return
    gfn = probes >> ref.shift
    where = {}
    for b, (lv, _, pos) in leaves.items():
        where.update({p: pos for p in range(b >> ref.shift, (b + ref.size(lv)) >> ref.shift)})
    assert pgt.rmap_lookup(gfn).tolist() == [where.get(int(g), -1) for g in gfn]
    assert pgt.rmap_lookup(gfn[::-1]).tolist() == [where.get(int(g), -1) for g in gfn[::-1]]
    assert pgt.rmap_bytes() == len(pgt.rmap) * (1 << 18) * 8


def probes_for(ref: Ref, base: int, regions: int) -> np.ndarray:
    """4100 pages from ``base`` on (a sorted batch large enough for the grouped lookup), then
    every 37th page of ``regions`` level-2 regions and the pages around each region's edges."""
    page, r2 = ref.size(3), ref.size(2)
    dense = np.arange(base, base + 4100 * page, page)
    sparse = np.arange(base, base + regions * r2, 37 * page)
    edges = [base + k * r2 + d for k in range(regions + 1) for d in (-page, 0, page)]
    edges = [e for e in edges if 0 <= e < ref.limit]
    return np.unique(np.concatenate([dense, sparse, np.array(edges, dtype=np.int64)]))


CASES = [
    (4096, 32, True),
    (4096, 32, False),
    (4096, 40, True),
    (16384, 36, False),
    (65536, 42, True),
]


@pytest.mark.parametrize(("granule", "bits", "rmap"), CASES)
def test_map_split_unmap_against_a_per_leaf_reference(granule, bits, rmap):
    geom = Geometry(granule, bits)
    ref = Ref(granule, bits, geom.block_levels)
    pgt = PageTable(geom, rmap=True, capacity=1) if rmap else PageTable(geom)
    assert (pgt.rmap is None) == (not rmap)
    P, R = ref.size(3), ref.size(2)
    base = 3 * R
    if bits == 32:  # four concatenated roots of 1 GiB: cross from the first into the second
        base = (1 << 30) - 2 * R
    probes = probes_for(ref, base, 4)

    steps = [
        # pages, two blocks, pages: an unaligned range with a block backing
        (
            lambda: pgt.map_range(base + 3 * P, 3 * R + 2 * P, backing=R),
            lambda: ref.map(base + 3 * P, 3 * R + 2 * P, R),
        ),
        # read-only pages inside the first block: the block is split first
        (
            lambda: pgt.map_range(base + R + 7 * P, 2 * P, writable=False),
            lambda: ref.map(base + R + 7 * P, 2 * P, P, w=False),
        ),
        # a block over the first region's pages: the table goes
        (lambda: pgt.map_range(base, R, backing=R), lambda: ref.map(base, R, R)),
        # a lazy split of the second block, then one page faulted into it
        (
            lambda: pgt.split_blocks(pgt.lookup(base + 2 * R)[1], 2, populate=False),
            lambda: ref.split_lazy(base + 2 * R),
        ),
        (
            lambda: pgt.map_range(base + 2 * R + 9 * P, P),
            lambda: ref.map(base + 2 * R + 9 * P, P, P),
        ),
        # an unmap from inside the split block to inside the lazily split one (emptied: freed)
        (
            lambda: unmap_range(pgt, base + R + 5 * P, R + 100 * P),
            lambda: ref.unmap(base + R + 5 * P, R + 100 * P),
        ),
        # three pages out of the middle of a block: split at both edges
        (lambda: unmap_range(pgt, base + 7 * P, 3 * P), lambda: ref.unmap(base + 7 * P, 3 * P)),
        # tables reused from the free list
        (
            lambda: pgt.map_range(base + 2 * R - 5 * P, 40 * P),
            lambda: ref.map(base + 2 * R - 5 * P, 40 * P, P),
        ),
        (
            lambda: unmap_range(pgt, base + 2 * R - 3 * P, 6 * P),
            lambda: ref.unmap(base + 2 * R - 3 * P, 6 * P),
        ),
        # everything: every table below the roots is freed
        (lambda: unmap_range(pgt, base, 4 * R), lambda: ref.unmap(base, 4 * R)),
    ]
    for i, (do, expect) in enumerate(steps):
        got, want = do(), expect()
        if isinstance(want, int):
            assert got == want, f"step {i}: {got} leaves removed, expected {want}"
        check(pgt, ref, probes)


@pytest.mark.parametrize("bits", [40, 48])
def test_gib_blocks_against_a_per_leaf_reference(bits):
    """4 KiB pages with 1 GiB blocks (level 1): a range that needs pages, 2 MiB blocks, a
    1 GiB block, 2 MiB blocks and pages; an unmap cutting the 1 GiB block (split into 2 MiB
    blocks, then the cut one into pages); a 1 GiB block mapped over tables; all unmapped.
    With 48 bits the walk starts at level 0 (one root), with 40 at level 1 (two roots)."""
    geom = Geometry(4096, bits)
    ref = Ref(4096, bits, geom.block_levels)
    pgt = PageTable(geom, rmap=True, capacity=1)
    P, R, G = 4096, 2 << 20, 1 << 30
    lo, size = 3 * G - 2 * R - 3 * P, G + 4 * R + 5 * P
    probes = np.unique(
        np.concatenate(
            [
                probes_for(ref, 3 * G - 3 * R, 6),
                probes_for(ref, 4 * G - 3 * R, 6),
                np.arange(3 * G, 4 * G, 4099 * P),
            ]
        )
    )
    steps = [
        (lambda: pgt.map_range(lo, size, backing=G), lambda: ref.map(lo, size, G)),
        (lambda: unmap_range(pgt, 3 * G + R + 3 * P, P), lambda: ref.unmap(3 * G + R + 3 * P, P)),
        (lambda: pgt.map_range(3 * G, G, backing=G), lambda: ref.map(3 * G, G, G)),
        (
            lambda: pgt.map_range(4 * G - R, 2 * R + P, backing=R),
            lambda: ref.map(4 * G - R, 2 * R + P, R),
        ),
        (lambda: unmap_range(pgt, 2 * G, 3 * G), lambda: ref.unmap(2 * G, 3 * G)),
    ]
    for i, (do, expect) in enumerate(steps):
        got, want = do(), expect()
        if isinstance(want, int):
            assert got == want, f"step {i}: {got} leaves removed, expected {want}"
        check(pgt, ref, probes)
    assert pgt.live_tables().tolist() == list(range(geom.entry_tables))  # the roots alone


def test_an_unaligned_range_across_a_mapping_chunk_is_mapped_whole():
    """``map_range`` works a start-level entry (at least 1 GiB) at a time; with a 32-bit IPA
    and 4 KiB pages the walk starts at level 2, so the chunks are 2 MiB.  [3 pages, 2 MiB + 3
    pages) is 509 pages in the first region and 3 in the second: 512 pages, all of them (the
    chunks used to step from the unaligned start, missing the second region entirely)."""
    pgt = PageTable(Geometry(4096, 32))
    assert pgt.rmap is None  # the reverse map is the rmap strategy's, kept only on request
    pgt.map_range(3 * 4096, 2 << 20)
    level, _, desc = pgt.lookup(np.arange(0, 4 << 20, 4096))
    mapped = (level == 3) & ((desc & np.uint64(3)) == np.uint64(3))
    assert np.flatnonzero(mapped).tolist() == list(range(3, 515))
    assert pgt.summary()["leaves"] == {"L3_page": 512}


def test_an_unmap_inside_one_block_splits_it_once():
    """Both edges of [2 MiB block + 7 pages, + 3 pages) fall inside the same block: one split
    (one by-IPA TLBI, one table of 512 pages), 3 pages removed, 509 left (the block used to
    be split twice: the second split read the new table descriptor as a block)."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(1 << 30, 2 << 20, backing=2 << 20)
    assert unmap_range(pgt, (1 << 30) + 7 * 4096, 3 * 4096) == 3
    assert pgt.tlbi == Counter(ipa_is=1) and pgt.splits == 1
    assert pgt.summary() == {
        "tables_per_level": {"L1": 2, "L2": 1, "L3": 1},
        "leaves": {"L3_page": 509},
    }


# -- the walker (engine/stage2/walk.py) ---------------------------------------------------------

G1, M2, PG = 1 << 30, 2 << 20, 4096


def _small_tree() -> PageTable:
    """4K/40 (level-1 start, two roots): pages 0 and 1 of [1 GiB, +2 MiB), a 2 MiB block at
    1 GiB + 2 MiB."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(G1, 2 * PG)
    pgt.map_range(G1 + M2, M2, backing=M2)
    return pgt


def test_walk_visits_in_order_with_every_field_by_hand():
    """``walk`` over [1 GiB + 1 page, 1 GiB + 2 MiB + 1 page) with LEAF, TABLE_PRE and
    TABLE_POST, as ``kvm_pgtable_walk`` visits: the level-1 table entry (pre), the level-2
    table entry (pre), the 511 last-level entries from index 1 (one valid page, 510 invalid:
    invalid entries are LEAF visits too), the level-2 entry again (post, at the address after
    its region), the block (leaf), the level-1 entry (post, after the block).  The visitor
    write-protects leaves and tags table entries at post with software bit 55: one write at
    each level."""
    pgt = _small_tree()
    start, end = G1 + PG, G1 + M2 + PG
    seen = []

    def visitor(ctx):
        assert ctx.end == end and ctx.pos == ctx.table * pgt.E + ctx.index
        assert int(pgt.flat[ctx.pos]) == ctx.old
        seen.append((ctx.visit, ctx.level, ctx.addr))
        if ctx.visit == Visit.TABLE_POST:
            return ctx.old | (1 << 55)
        return ctx.old & ~D.S2AP_W if ctx.old & D.VALID else None

    c = walk(pgt, start, end, visitor, Visit.LEAF | Visit.TABLE_PRE | Visit.TABLE_POST)
    want = [(Visit.TABLE_PRE, 1, start), (Visit.TABLE_PRE, 2, start)]
    want += [(Visit.LEAF, 3, G1 + k * PG) for k in range(1, 512)]
    want += [(Visit.TABLE_POST, 2, G1 + M2), (Visit.LEAF, 2, G1 + M2)]
    want += [(Visit.TABLE_POST, 1, G1 + 2 * M2)]
    assert seen == want
    assert c.as_dict() == {
        "desc_reads": {"L1": 1, "L2": 2, "L3": 511},
        "desc_writes": {"L1": 1, "L2": 2, "L3": 1},
        "tables_visited": 3,
    }
    level, _, desc = pgt.lookup(np.array([G1, G1 + PG, G1 + M2]))
    assert level.tolist() == [3, 3, 2]
    assert [bool(d & D.S2AP_W) for d in desc.tolist()] == [True, False, False]


def test_walk_counters_accumulate_across_roots_and_calls():
    """A walk across the two concatenated roots of a 40-bit IPA (512 GiB each) visits both
    roots and the tables below each; counters passed in keep counting."""
    pgt = PageTable(Geometry(4096, 40))
    edge = 512 * G1
    pgt.map_range(edge - PG, 2 * PG)
    c = walk(pgt, edge - PG, edge + PG, lambda ctx: None)
    assert c.as_dict() == {
        "desc_reads": {"L1": 2, "L2": 2, "L3": 2},
        "desc_writes": {},
        "tables_visited": 6,
    }
    walk(pgt, edge - PG, edge + PG, lambda ctx: None, counters=c)
    assert c.tables_visited == 12 and c.total_reads() == 12
    bulk = WalkCounters()
    for _ in range(2):  # a bulk walk and a bare batch walk, twice: four walks
        walk_bulk(pgt, edge - PG, edge + PG, set_clear_visitor(0, D.S2AP_W)[1], bulk)
        for _batch in leaf_batches(pgt, edge - PG, edge + PG, bulk):
            pass
    assert bulk.as_dict() == {
        "desc_reads": {"L1": 8, "L2": 8, "L3": 8},
        "desc_writes": {"L3": 2},
        "tables_visited": 24,
    }


def test_walk_range_edges():
    """The range is rounded out to pages; 0 and the IPA limit are valid edges, an empty range
    visits nothing, anything outside [0, 2^ipa_bits) is refused."""
    pgt = PageTable(Geometry(4096, 32))
    pgt.map_range(0, 2 * PG)
    pgt.map_range((1 << 32) - PG, PG)
    addrs = []
    walk(pgt, 0, 1, lambda ctx: addrs.append(ctx.addr))
    walk(pgt, PG + 5, PG + 6, lambda ctx: addrs.append(ctx.addr))
    walk(pgt, (1 << 32) - 1, 1 << 32, lambda ctx: addrs.append(ctx.addr))
    assert addrs == [0, PG, (1 << 32) - PG]
    assert walk(pgt, 3 * PG, 3 * PG, lambda ctx: addrs.append(ctx.addr)).as_dict() == {
        "desc_reads": {},
        "desc_writes": {},
        "tables_visited": 0,
    }
    for bad in ((-PG, PG), (0, (1 << 32) + PG), (2 * PG, PG)):
        with pytest.raises(ValueError, match="outside the 32-bit IPA space"):
            walk(pgt, *bad, lambda ctx: None)


MASKS = [
    (0, D.S2AP_W),  # write-protect (the one-bit fast paths)
    (0, D.S2AP_R | D.S2AP_W),  # two bits: an entry with only one of them changes too
    (D.DBM, D.S2AP_W),  # set and clear
    (D.S2AP_W, 0),  # make writable: only the read-only leaves change
    (0, D.VALID),
    (0, D.TYPE),
    (0, D.VALID | D.TYPE),  # a run of low bits: blocks change as well as pages
    (1 << 55, D.AF),
]


@pytest.mark.parametrize(("set_bits", "clr_bits"), MASKS)
def test_bulk_spans_against_the_per_entry_walk(set_bits, clr_bits):
    """``walk_bulk_spans`` against ``walk`` with the per-entry visitor, one walk per span,
    on a tree with whole last-level tables out of id order (ids allocated 0, 2, 1 by IPA),
    read-only and writable pages, blocks, a root
    other than the first, a span at IPA 0, overlapping spans, a repeated whole table and an
    empty span: the same descriptors, the writes counted once per entry, the reads once per
    span."""
    geom = Geometry(4096, 40)
    pgt = PageTable(geom)
    pgt.map_range(0, 3 * PG)
    pgt.map_range(G1, M2)  # region A
    pgt.map_range(G1 + 2 * M2, M2, writable=False)  # region C (its table before B's)
    pgt.map_range(G1 + M2, M2)  # region B
    pgt.map_range(2 * G1, 3 * M2)
    pgt.map_range(3 * G1, 4 * M2, backing=M2)
    pgt.map_range(512 * G1 + M2 - 2 * PG, 4 * PG, writable=False)  # in the second root
    spans = [
        (0, 2 * PG),
        (G1, G1 + 3 * M2),
        (G1 + M2, G1 + 2 * M2),  # B again (a repeated whole table)
        (G1 + 5 * PG, G1 + M2 + 7 * PG),
        (G1 + 9 * PG, G1 + 9 * PG),  # empty
        (2 * G1 - PG, 2 * G1 + 2 * M2 + PG),
        (3 * G1 + PG, 3 * G1 + 3 * M2),
        (512 * G1 + M2 - PG, 512 * G1 + M2 + PG),
    ]
    ref = pgt.copy()
    per_entry, bulk = set_clear_visitor(set_bits, clr_bits)
    want = WalkCounters()
    for s, e in spans:
        walk(ref, s, e, per_entry, counters=want)
    assert want.total_writes()  # (the masks change something)
    got = walk_bulk_spans(
        pgt, np.array([s for s, _ in spans]), np.array([e for _, e in spans]), bulk
    )
    assert np.array_equal(pgt.pool, ref.pool)
    assert got.as_dict() == want.as_dict()


def test_whole_tables_past_a_row_chunk():
    """520 whole last-level tables from 2 GiB: ids 3 .. 514 under the first level-2 table (2)
    and 516 .. 523 under the second (515), a run of rows past the first 512-row chunk:
    write-protecting their 1040 MiB clears W in all 520 × 512 pages, and only there."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(2 * G1, 520 * M2 + PG)
    ids = [*range(3, 515), *range(516, 524)]
    assert pgt.last_level_tables(2 * G1 + M2 * np.arange(520)).tolist() == ids
    c = walk_bulk(pgt, 2 * G1, 2 * G1 + 520 * M2, set_clear_visitor(0, D.S2AP_W)[1])
    assert c.as_dict()["desc_writes"] == {"L3": 520 * 512}
    assert not (pgt.pool[ids] & np.uint64(D.S2AP_W)).any()
    assert int(pgt.pool[524, 0]) & D.S2AP_W  # the page after the range
    # whole tables 3, 5 and 6, table 4 untouched (a gap in the run of ids), then the first
    # 5 entries of table 7 and all but the first of table 8 (partial runs at either end)
    pgt.map_range(2 * G1, 6 * M2)
    starts = 2 * G1 + np.array([0, 2 * M2, 4 * M2, 5 * M2 + PG])
    ends = 2 * G1 + np.array([M2, 4 * M2, 4 * M2 + 5 * PG, 6 * M2])
    c = walk_bulk_spans(pgt, starts, ends, set_clear_visitor(0, D.S2AP_W)[1])
    assert c.as_dict()["desc_writes"] == {"L3": 3 * 512 + 5 + 511}
    w = (pgt.pool[3:9] & np.uint64(D.S2AP_W)) != 0
    assert not w[[0, 2, 3]].any() and w[1].all()
    assert np.flatnonzero(~w[4]).tolist() == [0, 1, 2, 3, 4]
    assert np.flatnonzero(w[5]).tolist() == [0]


def test_whole_table_protect_in_a_fresh_thread():
    """The row passes take per-thread scratch buffers: a thread that never used them (a
    runner or Dask worker) gets its own on its first call, and they are reused after."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(G1, 2 * M2)
    done = []

    def run():
        for k in range(2):
            c = walk_bulk(pgt, G1 + k * M2, G1 + (k + 1) * M2, set_clear_visitor(0, D.S2AP_W)[1])
            done.append(c.as_dict()["desc_writes"])
        done.append(scratch((2, 3))[0] is scratch((2, 3))[0])

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    assert done == [{"L3": 512}, {"L3": 512}, True]


def test_reverse_map_after_splits_out_of_order_and_across_skipped_chunks():
    """Blocks split in the order A, C, B (not IPA order): every page of the three regions maps
    to its page entry in its new table (as a hardware walk finds it).  Then pages in 1 GiB
    chunks 3 and 5 of the reverse map, none in 4, removed by one unmap: both gone."""
    pgt = PageTable(Geometry(4096, 40), rmap=True)
    ref = Ref(4096, 40, (1, 2))
    pgt.map_range(G1, 3 * M2, backing=M2)
    a, b, c = G1, G1 + M2, G1 + 2 * M2
    pgt.split_blocks(pgt.lookup(np.array([a, c, b]))[1], 2)
    ipas = np.arange(G1, G1 + 3 * M2, PG)
    want = [walk_one(pgt, ref, int(x))[1] for x in ipas]
    assert pgt.rmap_lookup(ipas >> 12).tolist() == want
    pgt.map_range(3 * G1 + PG, PG)
    pgt.map_range(5 * G1, PG)
    assert (pgt.rmap_lookup(np.array([3 * G1 + PG, 5 * G1]) >> 12) >= 0).all()
    assert unmap_range(pgt, 3 * G1 + PG, 2 * G1) == 2  # both tables cut: one page batch
    assert pgt.rmap_lookup(np.array([3 * G1 + PG, 5 * G1]) >> 12).tolist() == [-1, -1]
    # three blocks across a chunk boundary, split in the order low, high, middle (chunks
    # 7, 8, 7: the gfns are not grouped by chunk until sorted)
    pgt.map_range(8 * G1 - 2 * M2, 3 * M2, backing=M2)
    pgt.split_blocks(pgt.lookup(np.array([8 * G1 - 2 * M2, 8 * G1, 8 * G1 - M2]))[1], 2)
    ipas = np.arange(8 * G1 - 2 * M2, 8 * G1 + M2, PG)
    want = [walk_one(pgt, ref, int(x))[1] for x in ipas]
    assert pgt.rmap_lookup(ipas >> 12).tolist() == want
    assert pgt.rmap_lookup(np.array([4 * G1, 9 * G1]) >> 12).tolist() == [-1, -1]  # no chunk


def test_unmaps_at_both_ends_of_the_ipa_space():
    """[2^32 - 1 page, 2^32) inside the last 2 MiB block of a 32-bit space and [0, 1 page)
    inside the first: each block is cut at its inner edge only (0 and the IPA limit are
    aligned to every level: no block straddles them)."""
    pgt = PageTable(Geometry(4096, 32))
    top = 1 << 32
    pgt.map_range(top - M2, M2, backing=M2)
    pgt.map_range(0, M2, backing=M2)
    assert unmap_range(pgt, top - PG, PG) == 1
    assert unmap_range(pgt, 0, PG) == 1
    assert pgt.summary()["leaves"] == {"L3_page": 2 * 511} and pgt.tlbi == Counter(ipa_is=2)


def test_lookups_one_per_region_and_tables_out_of_order():
    """5000 sorted IPAs, one per 2 MiB region (too few per region to group: walked one by
    one), against a hardware walk each; two last-level tables allocated against IPA order
    (the later region first) found for their regions; leaves carry the extra bits asked for
    (DBM, as a logging memslot with hardware dirty state maps them)."""
    pgt = PageTable(Geometry(4096, 40))
    ref = Ref(4096, 40, (1, 2))
    pgt.map_range(G1 + 3 * M2, PG, extra=D.DBM)
    pgt.map_range(G1, PG, extra=D.DBM)
    ipas = G1 - 100 * M2 + np.arange(5000, dtype=np.int64) * M2
    level, pos, desc = pgt.lookup(ipas)
    want = [walk_one(pgt, ref, int(x)) for x in ipas]
    assert list(zip(level.tolist(), pos.tolist(), desc.tolist(), strict=True)) == want
    found = pgt.last_level_tables(np.array([G1, G1 + 3 * M2, G1 + M2]))
    assert found.tolist() == [4, 3, -1]  # ids: roots 0-1, the level-2 table 2, then 3, 4
    got = pgt.lookup(np.array([G1, G1 + 3 * M2]))[2]
    assert all(int(d) & D.DBM and int(d) & D.S2AP_W for d in got)


def test_a_walk_that_ends_at_different_levels_keeps_each_ipa_its_own_path():
    """4K/48 (level-0 start): in one lookup, an IPA whose level-0 entry is invalid (600 GiB:
    the second 512 GiB region, never mapped) before an IPA in a 2 MiB block. The first walk
    stops at level 0 (position 1 of the root, descriptor 0); the second goes through the
    level-0 and level-1 tables to the block's level-2 entry (index 1 of its table). Levels are
    int8 on every path: this one walks, the others read the region map."""
    pgt = PageTable(Geometry(4096, 48))
    pgt.map_range(G1 + M2, M2, backing=M2)
    level, pos, desc = pgt.lookup(np.array([600 * G1, G1 + M2 + 5 * PG]))
    assert level.dtype == np.int8 and level.tolist() == [0, 2]
    assert pos[0] == 1 and desc[0] == 0
    assert pos[1] % 512 == 1 and bool(D.is_leaf(desc[1:], 2)[0])
    assert int(desc[1]) & ((1 << 48) - 1) & ~0xFFF == G1 + M2 + HOST_OFFSET  # the block's PA


def test_a_copy_is_independent():
    """``copy`` (a scratch table for running another strategy on the same input): after it,
    an unmap in the copy and a map in the original each match their own reference, tables,
    free list, parents, TLBI counts and reverse map included."""
    geom = Geometry(4096, 40)
    pgt, ref = PageTable(geom, rmap=True), Ref(4096, 40, geom.block_levels)
    pgt.map_range(G1, 3 * M2, backing=M2)
    ref.map(G1, 3 * M2, M2)
    unmap_range(pgt, G1 + PG, PG)
    ref.unmap(G1 + PG, PG)
    other, ref2 = pgt.copy(), copy.deepcopy(ref)
    assert unmap_range(other, G1, 2 * M2) == ref2.unmap(G1, 2 * M2)
    pgt.map_range(G1 + 2 * M2 + PG, PG)
    ref.map(G1 + 2 * M2 + PG, PG, PG)
    probes = probes_for(ref, G1, 4)
    check(pgt, ref, probes)
    check(other, ref2, probes)


def test_an_unmap_counts_a_block_above_a_freed_table():
    """[1 GiB - 2 MiB, 2 GiB) holds a 2 MiB region of pages (its table freed at level 2) and a
    1 GiB block (removed at level 1, first): 512 + 1 leaves; the emptied level-2 table goes
    too (two range TLBIs), leaving the two roots."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(G1 - M2, M2)
    pgt.map_range(G1, G1, backing=G1)
    assert unmap_range(pgt, G1 - M2, M2 + G1) == 513
    assert pgt.summary() == {"tables_per_level": {"L1": 2}, "leaves": {}}
    assert pgt.tlbi == Counter(range=2)


def test_each_block_over_a_table_is_one_range_tlbi():
    """Two 2 MiB blocks, each written over a table of pages (stage2_map_walk_leaf frees the
    table: one TLBI by range each), in two calls: two range TLBIs, no by-IPA ones."""
    pgt = PageTable(Geometry(4096, 40))
    for k in range(2):
        pgt.map_range(G1 + k * M2, PG)
        pgt.map_range(G1 + k * M2, M2, backing=M2)
    assert pgt.tlbi == Counter(range=2)
    assert pgt.summary()["leaves"] == {"L2_block": 2}

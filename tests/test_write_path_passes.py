"""The write path's and the ring reset's shortcuts against plain per-entry references.

Three rules were restructured to make fewer passes over a batch (figures 4 and 5d):
``PageTable._mapped_leaves`` tells "every region has its last-level table" from one maximum
and one minimum (``lookup`` and ``last_level_tables`` take that answer), a ring reset's
one-bit words whose pages all have their table read them through ``lookup``
(``wrprotect._span_walk_in_tables``), and a batch's per-page write counts come as ``uint32``
(``vm._run_lengths``).  Each is checked here on the branch it takes and on the branches
around it, against a walk one descriptor at a time, ``ref_range`` and a per-write count.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.kvm.reference import REFERENCES
from engine.kvm.vm import VM, Tracking, _Pages, _run_lengths, slot_flags
from engine.kvm.wrprotect import run_strategy
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable

G4K = Geometry(4096, 40)
BASE = 0x40000000
BASE_GFN = BASE >> 12
M2 = 2 << 20  # one level-2 region (one last-level table) of 4K pages


def _walk(pgt: PageTable, ipa: int) -> tuple[int, int, int]:
    """(level, flat position, descriptor) where a walk of ``ipa`` stops, entry by entry."""
    g = pgt.geom
    level, pos = g.start_level, ipa >> g.level_shift(g.start_level)
    while True:
        d = int(pgt.flat[pos])
        if level == 3 or d & 3 != 3:
            return level, pos, d
        table = int(pgt.table_of(np.array([d], dtype=np.uint64))[0])
        level += 1
        pos = table * pgt.E + ((ipa >> g.level_shift(level)) & (pgt.E - 1))


def _layout() -> PageTable:
    """Regions 0, 1 and 3 of BASE hold 4K pages, region 2 a 2 MiB block, region 4 nothing;
    region 5's table is linked last, so the region map ends there."""
    pgt = PageTable(G4K)
    pgt.map_range(BASE, 2 * M2, 4096)
    pgt.map_range(BASE + 2 * M2, M2, M2)
    pgt.map_range(BASE + 3 * M2, M2, 4096)
    pgt.map_range(BASE + 5 * M2 + 4096, 4096, 4096)
    return pgt


def _check_lookup(pgt: PageTable, ipas: np.ndarray) -> None:
    level, pos, desc = pgt.lookup(ipas)
    want = [_walk(pgt, int(a)) for a in ipas]
    assert level.tolist() == [w[0] for w in want]
    assert pos.tolist() == [w[1] for w in want]
    assert desc.tolist() == [w[2] for w in want]
    starts = ipas // M2 * M2
    assert pgt.last_level_tables(starts).tolist() == [
        p // pgt.E if lv == 3 else -1 for lv, p, _ in (_walk(pgt, int(a)) for a in starts)
    ]


@pytest.mark.parametrize(
    "regions",
    [
        [0, 1, 3, 5],  # every region has its table, all below the map's top: no masks
        [0, 2, 3],  # below the top, one region a block (the walk answers it)
        [0, 4, 1],  # below the top, one region unmapped
        ["top-1", 0],  # the map's last region (no table) and one with a table
        ["top", 3],  # the first region past the map's top, and one inside
        ["top+9"],  # only past the top
    ],
)
def test_lookup_and_last_level_tables_match_a_plain_walk(regions):
    pgt = _layout()
    top = pgt._leaf_tables.size  # (regions the map holds: the boundary the shortcut tests)
    assert top > (BASE + 5 * M2) >> 21  # (it grows by doubling: past region 5)
    offs = np.array([0, 1, 7, 511], dtype=np.int64) * 4096
    at = {"top-1": top - 1, "top": top, "top+9": top + 9}
    ipas = np.concatenate([(at[r] if r in at else (BASE >> 21) + r) * M2 + offs for r in regions])
    _check_lookup(pgt, ipas)
    _check_lookup(pgt, np.sort(ipas))
    _check_lookup(pgt, ipas[:1])


def test_lookup_of_no_ipa_and_of_an_empty_map():
    pgt = _layout()
    level, pos, desc = pgt.lookup(np.zeros(0, dtype=np.int64))
    assert level.size == pos.size == desc.size == 0
    assert pgt.last_level_tables(np.zeros(0, dtype=np.int64)).size == 0
    empty = PageTable(G4K)  # no table linked yet: every lookup walks
    _check_lookup(empty, np.array([BASE, BASE + M2], dtype=np.int64))


def _counts(stats) -> Counter:
    c: Counter = Counter()
    for kind, per in (("r", stats.counters.reads), ("w", stats.counters.writes)):
        for lv, n in per.items():
            if n:
                c[(kind, lv)] += n
    return c


def _writable(pgt: PageTable, pages: list[int]) -> None:
    level, pos, desc = pgt.lookup(BASE + np.array(pages, dtype=np.int64) * 4096)
    pgt.flat[pos] = desc | np.uint64(D.S2AP_W)


@pytest.mark.parametrize(
    "pages",
    [
        [3, 700, 3, 1600, 1700, 1023],  # all in regions with tables, one page twice
        [3, 1100, 700],  # page 1100 is in region 2's block: the walk takes it
        [5, 2100, 520],  # page 2100 is in unmapped region 4
        [511, 512],  # the last page of a table and the first of the next
    ],
)
def test_a_ring_resets_one_bit_words_match_the_reference(pages):
    """One-bit words at any offset (the bit carries the page past its word's region), in
    ring order: the tables and counts are ``ref_range``'s; a written page is writable."""
    pgt = _layout()
    mapped = [p for p in pages if p // 512 in (0, 1, 3)]
    _writable(pgt, mapped)
    offsets = np.array([max(0, p - 40) for p in pages], dtype=np.int64)
    masks = np.array(
        [1 << (p - o) for p, o in zip(pages, offsets.tolist(), strict=True)], dtype=np.uint64
    )
    mine, ref = pgt.copy(), pgt.copy()
    stats = run_strategy("range", mine, BASE_GFN, offsets, masks)
    expected = REFERENCES["range"](ref, BASE_GFN, offsets, masks)
    assert np.array_equal(mine.pool, ref.pool)
    assert _counts(stats) == expected
    level, _, desc = mine.lookup(BASE + np.array(mapped, dtype=np.int64) * 4096)
    assert not (D.is_writable(desc) & (level == 3)).any()  # every one protected again


def test_one_bit_words_hand_count():
    """Pages 3, 700 (twice) and 1600, each with its table: 4 walks down to level 3 read
    one L1 and one L2 entry each, 4 L3 entries read, 3 written (700 changes once)."""
    pgt = _layout()
    _writable(pgt, [3, 700, 1600])
    offsets = np.array([0, 690, 650, 1560], dtype=np.int64)
    masks = np.array([1 << 3, 1 << 10, 1 << 50, 1 << 40], dtype=np.uint64)
    stats = run_strategy("range", pgt, BASE_GFN, offsets, masks)
    assert dict(stats.counters.reads) == {1: 4, 2: 4, 3: 4}
    assert dict(stats.counters.writes) == {3: 3}


@pytest.mark.parametrize("n", [1, 2, 9])
def test_run_lengths_are_the_differences_of_the_run_starts(n):
    rng = np.random.default_rng(n)
    starts = np.sort(rng.choice(np.arange(1, 40), n - 1, replace=False)) if n > 1 else []
    starts = np.concatenate([[0], starts]).astype(np.int64)
    got = _run_lengths(starts, 40)
    assert got.dtype == np.uint32
    assert got.tolist() == [
        b - a for a, b in zip(starts.tolist(), starts.tolist()[1:] + [40], strict=True)
    ]


def test_version_counts_wrap_as_one_increment_per_write():
    """A page written 5 times from 2^32 - 3 wraps to 2, its neighbour written once from
    2^32 - 1 to 0, as uint32 increments one write at a time do."""
    vm = VM(G4K, Tracking("bitmap"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True), 4096)
    version = vm.slots[0].version
    version[7], version[8] = 2**32 - 3, 2**32 - 1
    gfn = np.array([7, 8, 7, 7, 7, 7], dtype=np.int64) + BASE_GFN
    grouped = _Pages.group(gfn, np.zeros(6, np.int64), np.ones(6, bool), np.zeros(6, np.int64))
    assert grouped.writes.tolist() == [5, 1]
    vm.access(gfn, np.zeros(6, np.int64), np.ones(6, bool))
    assert version[7] == 2 and version[8] == 0 and version[9] == 0

"""Write-protect strategies on the layouts the property tests seldom draw (the wrprotect
group's mutation run at f25065a left these paths without a test that tells them apart).

Every expected table and count comes from the plain per-entry references
(``engine.kvm.reference``: one descriptor read at a time, as the algorithm they model) or
by hand; each layout also asserts which vectorised path it takes, so the test keeps
reaching the code it was written for.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.kvm import wrprotect as WP
from engine.kvm.reference import REFERENCES
from engine.kvm.wrprotect import STRATEGIES, run_strategy
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable

G4K = Geometry(4096, 40)
BASE = 0x40000000  # 1 GiB
BASE_GFN = BASE >> 12
REGION = 512  # pages per last-level table (2 MiB of 4K pages)


def _counts(stats) -> Counter:
    c: Counter = Counter()
    for kind, per_level in (("r", stats.counters.reads), ("w", stats.counters.writes)):
        for lv, n in per_level.items():
            if n:
                c[(kind, lv)] += n
    return c


def _assert_matches_references(pgt, base_gfn, offsets, masks, names=STRATEGIES) -> None:
    offsets = np.asarray(offsets, dtype=np.int64)
    masks = np.asarray(masks, dtype=np.uint64)
    for name in names:
        mine, ref = pgt.copy(), pgt.copy()
        stats = run_strategy(name, mine, base_gfn, offsets, masks)
        expected = REFERENCES[name](ref, base_gfn, offsets, masks)
        assert np.array_equal(mine.pool, ref.pool), name
        assert _counts(stats) == expected, name


def _protected(pgt, first_gfn: int, n: int) -> set[int]:
    """Pages among gfn first_gfn .. first_gfn + n - 1 that are mapped and not writable."""
    _, _, d = pgt.lookup((first_gfn + np.arange(n)) << 12)
    return set(np.flatnonzero(D.is_valid(d) & ~D.is_writable(d)).tolist())


# -- ring masks: spans inside one last-level table (range, visitor) ---------------------------


def test_a_ring_mask_of_three_low_bits_protects_its_three_pages():
    """Mask 0b111 at offset 5 (pages 5, 6, 7): __ffs 0, __fls 2, so the span is the three
    pages; one L1 and one L2 read, three pte reads and writes (by hand).  A mask whose bits
    are all consecutive from bit 0 is not a one-bit mask (2^k - 1 ANDed with 2^k is 0)."""
    for name in ("range", "visitor"):
        pgt = PageTable(G4K)
        pgt.map_range(BASE, 2 << 20, 4096)
        stats = run_strategy(name, pgt, BASE_GFN, np.array([5]), np.array([0b111], np.uint64))
        assert _protected(pgt, BASE_GFN, REGION) == {5, 6, 7}, name
        assert _counts(stats) == {("r", 1): 1, ("r", 2): 1, ("r", 3): 3, ("w", 3): 3}, name


def _low_and_high_layout() -> PageTable:
    """4 MiB of writable pages at IPA 0 and 4 MiB at 1 GiB: a slot at gfn 0 whose region 1
    (IPA 2 MiB) must not be confused with region 0 or with the tables at 1 GiB."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(0, 4 << 20, 4096)
    pgt.map_range(BASE, 4 << 20, 4096)
    return pgt


@pytest.mark.parametrize(
    ("offsets", "masks", "pages"),
    [
        ([600, 960], [1 << 3, 1 << 63], {603, 1023}),  # one bit each, in region 1
        ([600], [0b101 << 10], set(range(610, 613))),  # a span of 3 in region 1
        ([480], [1 | 1 << 40], set(range(480, 521))),  # a span crossing regions 0 and 1
    ],
)
def test_ring_masks_of_a_slot_at_ipa_0_protect_their_own_pages(offsets, masks, pages):
    """A slot at gfn 0: each span's pages (by hand: page = offset + bit, [ffs, fls]) are
    protected in the slot's own tables and nowhere else (not in region 0's table, not at
    1 GiB); the counts are the references'."""
    pgt = _low_and_high_layout()
    for name in ("range", "visitor"):
        t = pgt.copy()
        run_strategy(name, t, 0, np.array(offsets), np.array(masks, np.uint64))
        assert _protected(t, 0, 2 * REGION) == pages, name
        assert _protected(t, BASE_GFN, 2 * REGION) == set(), name
    _assert_matches_references(pgt, 0, offsets, masks)


@pytest.mark.parametrize(
    ("offsets", "masks", "pages"),
    [
        ([3, 100], [1 << 3, 1 << 63], {6, 163}),
        ([3, 100], [0b101, 1 | 1 << 9], {3, 4, 5, *range(100, 110)}),
    ],
)
def test_ring_masks_of_a_slot_at_1_gib_leave_the_tables_at_ipa_0_alone(offsets, masks, pages):
    """The same layout, the slot at 1 GiB (gfn 2^18, the 512th 2 MiB region): its spans
    (page = offset + bit; [ffs, fls]) are protected there and the pages at IPA 0..4 MiB (the
    regions whose numbers are the slot's region shifted by one level) stay writable."""
    pgt = _low_and_high_layout()
    for name in ("range", "visitor"):
        t = pgt.copy()
        run_strategy(name, t, BASE_GFN, np.array(offsets), np.array(masks, np.uint64))
        assert _protected(t, BASE_GFN, 2 * REGION) == pages, name
        assert _protected(t, 0, 2 * REGION) == set(), name
    _assert_matches_references(pgt, BASE_GFN, offsets, masks)


def test_one_bit_words_with_an_unmapped_page_find_their_own_tables():
    """One-bit words, one of them over an unmapped page (gfn 4096, IPA 16 MiB: its walk
    stops above level 3), so not every word's page is found at level 3 in one lookup and
    each word looks its own last-level table up by region instead: page 603 (region 1, IPA
    2 MiB) and page 1 (region 0) are protected, the pages at 1 GiB and the rest of regions 0
    and 1 stay writable (a region number shifted the wrong way names region 0's table, or
    for gfn 1 shifted up by a level, the table at 1 GiB); counts are the references'."""
    pgt = _low_and_high_layout()
    level, _, _ = pgt.lookup(np.array([603, 4096]) << 12)
    assert level.tolist()[0] == 3 and level.tolist()[1] < 3
    offsets, masks = [600, 4096, 0], [1 << 3, 1, 1 << 1]
    for name in ("range", "visitor"):
        t = pgt.copy()
        run_strategy(name, t, 0, np.array(offsets), np.array(masks, np.uint64))
        assert _protected(t, 0, 2 * REGION) == {1, 603}, name
        assert _protected(t, BASE_GFN, 2 * REGION) == set(), name
    _assert_matches_references(pgt, 0, offsets, masks)


@pytest.mark.parametrize(
    ("offsets", "masks", "pages"),
    [
        (
            [5, 250, 2000],
            [1 | 1 << 10, 1 | 1 << 20, 0b111],
            {*range(5, 16), *range(250, 271), 2000, 2001, 2002},
        ),
        ([3, 9, 1500], [1 << 9, 1 << 63, 1 << 1], {12, 72, 1501}),  # one bit each
    ],
)
def test_ring_masks_of_a_slot_not_on_a_table_boundary(offsets, masks, pages):
    """A slot that starts 10 pages before the end of a last-level table (base gfn
    BASE + 1014, 12 MiB of pages mapped from BASE): offset 5 with bits 0 and 10 is slot
    pages 5..15, gfns BASE + 1019..1029, a span that crosses into the next table only
    because the base is unaligned; offset 250 (BASE + 1264..1284) lies inside one.  Pages
    by hand (page = offset + bit, [ffs, fls] for range and visitor), relative to the slot;
    nothing before the slot changes; counts are the references'."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 12 << 20, 4096)
    base = BASE_GFN + 1014
    for name in ("range", "visitor"):
        t = pgt.copy()
        run_strategy(name, t, base, np.array(offsets), np.array(masks, np.uint64))
        assert _protected(t, base, 3072 - 1014) == pages, name
        assert _protected(t, BASE_GFN, 1014) == set(), name
    _assert_matches_references(pgt, base, offsets, masks)


# -- the per-word fast path over dense words -------------------------------------------------


def _out_of_order_full_pool() -> PageTable:
    """12 MiB of writable pages whose last-level tables fill the pool to its last row and
    were allocated out of IPA order: region 0 was a 2 MiB block, split last (table 8);
    regions 1..5 hold tables 3..7."""
    pgt = PageTable(G4K, rmap=True, capacity=9)
    pgt.map_range(BASE, 2 << 20, 2 << 20)
    pgt.map_range(BASE + (2 << 20), 10 << 20, 4096)
    _, pos, _ = pgt.lookup(np.array([BASE]))
    pgt.split_blocks(pos, 2, populate=True)
    return pgt


def _in_order() -> PageTable:
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 12 << 20, 4096)
    return pgt


def test_the_out_of_order_layout_is_what_the_dense_tests_need():
    """(the layouts themselves, so the tests below keep reaching their paths)"""
    pgt = _out_of_order_full_pool()
    tables = pgt.last_level_tables(BASE + np.arange(6) * (2 << 20))
    assert tables.tolist() == [8, 3, 4, 5, 6, 7] and pgt.pool.shape[0] == 9
    chunks = WP._WordChunks.of(pgt, BASE_GFN + np.arange(48) * 64)
    assert chunks is not None and not chunks.increasing
    assert WP._WordChunks.of(_in_order(), BASE_GFN + np.arange(48) * 64).increasing


_RNG = np.random.default_rng(19)
_DENSE = _RNG.integers(1, 1 << 63, 48, dtype=np.int64).astype(np.uint64) | np.uint64(0xF0F0)


@pytest.mark.parametrize("block", [2, 2048])
@pytest.mark.parametrize("layout", [_in_order, _out_of_order_full_pool])
@pytest.mark.parametrize(
    "words",
    [
        [0, 8, 16, 24, 32, 40],  # one word a region: far apart
        [0, 1, 30, 31, 46, 47],  # pairs far apart (each block in place, the blocks apart)
        [8, 9, 10, 11, 0, 1],  # (sorted below) region 0's words after region 1's chunks
        [0, 8],  # two words, their chunks descending in the out-of-order pool
    ],
)
def test_dense_words_match_the_references_block_by_block(block, layout, words):
    """Dense masks (the per-word fast path's whole-chunk passes, not its gather of set
    bits), worked through a few words at a time: every block's reads and writes add up,
    in place over a block's span or gathered where the block's chunks are far apart, with
    chunks ascending or not, up to the pool's last chunk."""
    words = sorted(words)
    offsets = np.array(words, dtype=np.int64) * 64
    masks = _DENSE[: len(words)]
    assert WP.popcount(masks) * 8 >= masks.size * 64  # dense for "mask" and "mapped" alike
    old = WP._BLOCK_WORDS
    WP._BLOCK_WORDS = block
    try:
        _assert_matches_references(layout(), BASE_GFN, offsets, masks)
    finally:
        WP._BLOCK_WORDS = old


def _in_order_full_pool() -> PageTable:
    """12 MiB of writable pages, tables 3..8 in IPA order, the pool exactly 9 tables."""
    pgt = PageTable(G4K, rmap=True, capacity=9)
    pgt.map_range(BASE, 12 << 20, 4096)
    assert pgt.pool.shape[0] == 9
    return pgt


@pytest.mark.parametrize("layout", [_in_order_full_pool, _out_of_order_full_pool])
@pytest.mark.parametrize(
    ("name", "walks"), [("range", 48), ("visitor", 48), ("masked-skip", 6), ("rmap", 0)]
)
def test_every_dense_word_of_a_full_pool_by_hand(layout, name, walks):
    """All 48 words of the 6 regions, every bit set, over tables that end at the pool's
    last row: every one of the 3072 pages is protected with one pte read and write each;
    range and visitor walk L1 and L2 once per word (48), masked-skip once per last-level
    table (6), rmap not at all."""
    masks = np.full(48, 2**64 - 1, np.uint64)
    offsets = np.arange(48, dtype=np.int64) * 64
    pgt = layout()
    stats = run_strategy(name, pgt, BASE_GFN, offsets, masks)
    assert _protected(pgt, BASE_GFN, 3072) == set(range(3072))
    reads = {k: v for k, v in stats.counters.reads.items() if v}
    assert reads == ({1: walks, 2: walks} if walks else {}) | {3: 3072}
    assert {k: v for k, v in stats.counters.writes.items() if v} == {3: 3072}


@pytest.mark.parametrize(
    ("name", "reads", "writes"),
    [
        ("range", {1: 1, 2: 1, 3: 3}, {3: 2}),  # span 1..3: pages 1, 2 writable, 3 unmapped
        ("visitor", {1: 1, 2: 1, 3: 3}, {3: 2}),
        ("masked-skip", {1: 1, 2: 1, 3: 2}, {3: 1}),  # bits 1 and 3: both ptes read
        ("rmap", {3: 1}, {3: 1}),  # no spte for page 3: nothing to read
    ],
)
def test_a_sparse_bit_over_an_unmapped_page_is_read_by_the_walks(name, reads, writes):
    """Bits 1 and 3 of word 0 with page 3 unmapped (few bits: the gather of set bits, not
    the whole-chunk pass).  The walks read the pte under every bit (or span) whether it
    maps a page or not; x86's rmap finds no spte for page 3 (by hand)."""
    from engine.stage2.walk import unmap_range

    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 2 << 20, 4096)
    unmap_range(pgt, BASE + 3 * 4096, 4096)
    stats = run_strategy(name, pgt, BASE_GFN, np.array([0]), np.array([0b1010], np.uint64))
    assert {k: v for k, v in stats.counters.reads.items() if v} == reads
    assert {k: v for k, v in stats.counters.writes.items() if v} == writes


@pytest.mark.parametrize("name", STRATEGIES)
def test_aligned_words_of_a_slot_above_mapped_memory(name):
    """A slot at BASE + 4 MiB (gfn BASE + 1024) over 12 MiB mapped from BASE: the word at
    slot offset 128 with bits 0 and 5 is gfns BASE + 1152 and 1157, not anything below the
    slot (the pages at BASE + 896.. are mapped too and must stay writable)."""
    pgt = _in_order()
    base = BASE_GFN + 1024
    run_strategy(name, pgt, base, np.array([128]), np.array([0b100001], np.uint64))
    expected = {128, 129, 130, 131, 132, 133} if name in ("range", "visitor") else {128, 133}
    assert _protected(pgt, base, 2048) == expected
    assert _protected(pgt, BASE_GFN, 1024) == set()
    _assert_matches_references(_in_order(), base, [128, 256], [0b100001, 2**64 - 1], [name])


# -- a block reached by two bits --------------------------------------------------------------


@pytest.mark.parametrize("bits", [0b1, 0b11, 0b111])
def test_rmap_reads_a_block_once_per_bit_and_writes_it_once(bits):
    """x86's rmap walk visits the spte of each gfn: two or three bits in one writable 2 MiB
    block read it two or three times and clear its W once (the second visit finds it
    read-only), as ref_rmap does by hand."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 2 << 20, 2 << 20)
    stats = run_strategy("rmap", pgt, BASE_GFN, np.array([0]), np.array([bits], np.uint64))
    n = bin(bits).count("1")
    assert {k: v for k, v in stats.counters.reads.items() if v} == {2: n}
    assert {k: v for k, v in stats.counters.writes.items() if v} == {2: 1}
    _, _, d = pgt.lookup(np.array([BASE]))
    assert not D.is_writable(d)[0]


def test_rmap_without_a_reverse_map_is_refused_by_name():
    """A page table built without the reverse map cannot run rmap: one sentence says so."""
    pgt = PageTable(G4K)
    pgt.map_range(BASE, 2 << 20, 4096)
    with pytest.raises(RuntimeError) as err:
        run_strategy("rmap", pgt, BASE_GFN, np.array([0]), np.array([1], np.uint64))
    assert str(err.value) == "the rmap strategy needs a page table built with rmap=True"


# -- ring resets: aligned words out of order or repeated ---------------------------------------


@pytest.mark.parametrize(
    "offsets",
    [[64, 0], [640, 0], [0, 128, 64], [0, 0], [128, 128, 0]],
)
def test_aligned_ring_words_out_of_order_or_repeated_match_the_references(offsets):
    """A ring reset's masks come in ring order and two rings may name the same word: words
    at aligned offsets that descend, or repeat with different masks, are each protected
    (pages by hand: every set bit of every word) with the references' counts."""
    masks = [0b1011 << (8 * i) for i in range(len(offsets))]
    pages = {o + b for o, m in zip(offsets, masks, strict=True) for b in range(64) if m >> b & 1}
    pgt = _in_order()
    t = pgt.copy()
    run_strategy("rmap", t, BASE_GFN, np.array(offsets), np.array(masks, np.uint64))
    assert _protected(t, BASE_GFN, 1024) == pages
    _assert_matches_references(pgt, BASE_GFN, offsets, masks)


# -- the general walk: root entries and tables visited -------------------------------------------


def test_a_span_ending_on_a_root_entry_boundary_reads_no_further_root_entry():
    """Blocks of 2 MiB on both sides of 2 GiB (the boundary of level-1 entries 1 and 2 with
    4K pages): a word whose span ends on the last page below 2 GiB walks level-1 entry 1
    only (by hand: one L1 read, one L2 read of the block, which is write-protected), as
    stage2_wp_range's loop over [start, end) does; the references agree."""
    pgt = PageTable(G4K, rmap=True)
    two_gib = 2 << 30
    pgt.map_range(two_gib - (2 << 20), 4 << 20, 2 << 20)
    base = (two_gib >> 12) - 64
    for name in ("range", "visitor"):
        t = pgt.copy()
        stats = run_strategy(name, t, base, np.array([0]), np.array([1 | 1 << 63], np.uint64))
        assert _counts(stats) == {("r", 1): 1, ("r", 2): 1, ("w", 2): 1}, name
    _assert_matches_references(pgt, base, [0, 10], [1 | 1 << 63, 1 << 53])


@pytest.mark.parametrize(("gib", "words"), [(600, 1), (500, 2)])
def test_tables_visited_by_the_walk_high_in_the_ipa_space(gib, words):
    """Words whose spans cross a last-level table (the general walk), at 500 GiB and at
    600 GiB, where the entry level's key is over 256 and (600) in the second concatenated
    level-1 table (a 40-bit IPA has two): each word visits one entry-level table, one L2
    and two L3 tables (4, by hand, as in test_range_span_crossing_a_last_level_table)."""
    pgt = PageTable(G4K, rmap=True)
    start = gib << 30
    pgt.map_range(start, 8 << 20, 4096)
    offsets = [480 + 1024 * i for i in range(words)]  # pages 480..543: tables 0 and 1, ...
    masks = [1 | 1 << 63] * words
    for name in ("range", "visitor"):
        stats = run_strategy(
            name, pgt.copy(), start >> 12, np.array(offsets), np.array(masks, np.uint64)
        )
        assert stats.counters.tables_visited == 4 * words, name
        assert dict(stats.counters.reads) == {1: words, 2: 2 * words, 3: 64 * words}, name


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_1_gib_block_at_ipa_0_is_protected(name):
    """A 1 GiB block at IPA 0 is entry 0 of the first entry-level table, flat position 0
    of the pool: a dirty bit in it write-protects the block (by hand: range, visitor and
    masked-skip read its L1 entry once and write it once; rmap reads it once per bit)."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(0, 1 << 30, 1 << 30)
    assert pgt.lookup(np.array([0]))[1][0] == 0
    stats = run_strategy(name, pgt, 0, np.array([0]), np.array([0b101], np.uint64))
    assert stats.strategy == name
    reads = 2 if name == "rmap" else 1
    assert _counts(stats) == {("r", 1): reads, ("w", 1): 1}
    assert not D.is_writable(pgt.lookup(np.array([0]))[2])[0]


@pytest.mark.parametrize("chosen", ["masked-skip", "rmap"])
def test_compare_mode_puts_back_the_second_table_of_a_straddling_word(chosen):
    """Compare mode runs range and visitor on the VM's tables before the chosen strategy
    and puts back every table they can reach: a ring word at slot offset 480 with bits 0
    and 63 spans pages 480..543, across two last-level tables; range protects all 64,
    masked-skip and rmap only pages 480 and 543, so only those two end protected."""
    from engine.kvm import dirtylog as DL
    from engine.kvm.dirtylog import OpStats
    from engine.kvm.vm import VM, Tracking, slot_flags

    vm = VM(G4K, Tracking("bitmap", chosen, compare=True), nr_vcpus=1)
    vm.set_memslot(0, BASE, 4 << 20, 0, 4096, populate=True)
    st = vm.slots[0]
    vm.set_memslot(0, BASE, 4 << 20, slot_flags(log_dirty=True), 4096)
    g = st.slot.base_gfn + np.arange(1024)
    vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))  # all writable again
    DL.protect(vm, st, np.array([480]), np.array([1 | 1 << 63], np.uint64), OpStats("x"))
    assert _protected(vm.pgt, BASE_GFN, 1024) == {480, 543}


def test_word_chunks_of_tables_allocated_two_apart():
    """Regions 0, 1, 2 whose tables were allocated two apart (regions 10 and 11 mapped in
    between: tables 3, 5, 7) are not consecutive: each word's chunk is its own region's
    table's (by hand: table 3 + 2 x region), and the strategies match the references."""
    pgt = PageTable(G4K, rmap=True)
    for region in (0, 10, 1, 11, 2):
        pgt.map_range(BASE + region * (2 << 20), 2 << 20, 4096)
    words = np.arange(24)
    chunks = WP._WordChunks.of(pgt, BASE_GFN + words * 64)
    assert chunks is not None
    assert chunks.chunk.tolist() == ((3 + 2 * (words // 8)) * 8 + words % 8).tolist()
    _assert_matches_references(pgt, BASE_GFN, words * 64, _DENSE[:24])


def test_protect_stats_as_dict_by_hand():
    """What the op log and the CLI show for one strategy's harvest: strategy, words and
    pages, the non-zero reads and writes per level, tables visited, wall and CPU time in
    microseconds, and the reverse map's bytes only when there is one."""
    st = WP.ProtectStats("rmap", words=3, pages=70, wall_ns=2500, cpu_ns=1500, rmap_bytes=64)
    st.counters.reads.update({1: 0, 3: 70})
    st.counters.writes.update({3: 5})
    st.counters.tables_visited = 2
    assert st.as_dict() == {
        "strategy": "rmap",
        "words": 3,
        "pages": 70,
        "desc_reads": {"L3": 70},
        "desc_writes": {"L3": 5},
        "tables_visited": 2,
        "wall_us": 2.5,
        "cpu_us": 1.5,
        "rmap_bytes": 64,
    }
    bare = WP.ProtectStats("range").as_dict()
    assert bare == {
        "strategy": "range",
        "words": 0,
        "pages": 0,
        "desc_reads": {},
        "desc_writes": {},
        "tables_visited": 0,
        "wall_us": 0.0,
        "cpu_us": 0.0,
    }


@pytest.mark.parametrize("name", STRATEGIES)
def test_a_strategy_s_measured_times_are_those_of_its_own_call(name):
    """``run_strategy``'s wall and CPU nanoseconds are the strategy call's own elapsed time
    (a difference of two clock readings), so each lies between 0 and what the caller measures
    around ``run_strategy`` with the same clocks (perf_counter_ns, thread_time_ns)."""
    import time

    pgt = _in_order()
    offsets, masks = np.arange(0, 3072, 64, dtype=np.int64), np.full(48, 0xFF, np.uint64)
    t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
    stats = run_strategy(name, pgt, BASE_GFN, offsets, masks)
    wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
    assert 0 <= stats.wall_ns <= wall and 0 <= stats.cpu_ns <= cpu
    assert stats.pages == 48 * 8


def test_words_over_a_region_without_its_last_level_table_take_the_general_path():
    """Two harvest words, one in each of two 2 MiB regions: the first region's pages sit in
    last-level table 2 (4K granule, 36-bit IPA: one root table, then the level-2 table 1),
    the second region is not mapped (no table: -1).  Table ids 2 and -1 are not consecutive
    tables, so the words' chunks cannot come from the first one's (masked-skip takes the
    general path): every strategy protects the first word's 64 pages and nothing else, as the
    references do."""
    pgt = PageTable(Geometry(4096, 36), rmap=True)
    pgt.map_range(BASE, 2 << 20, 4096)
    assert pgt.last_level_tables(np.array([BASE, BASE + (2 << 20)])).tolist() == [2, -1]
    offsets, masks = np.array([0, 512], np.int64), np.full(2, ~np.uint64(0), np.uint64)
    _assert_matches_references(pgt, BASE_GFN, offsets, masks)
    for name in STRATEGIES:
        mine = pgt.copy()
        run_strategy(name, mine, BASE_GFN, offsets, masks)
        assert _protected(mine, BASE_GFN, 1024) == set(range(64)), name

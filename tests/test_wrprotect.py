"""The four re-protect strategies against plain per-entry reference implementations.

Each reference reads the tables one descriptor at a time, exactly as the algorithm it models,
and counts as it goes; the vectorised strategy must produce the same tables and the same
counts.  Hand counts on small crafted layouts pin the numbers down.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kvm import wrprotect as WP
from engine.kvm.reference import REFERENCES, set_bits
from engine.kvm.wrprotect import STRATEGIES, ffs64, fls64, run_strategy
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import unmap_range

G4K = Geometry(4096, 40)
BASE = 0x40000000
BASE_GFN = BASE >> 12


def _counts(stats) -> Counter:
    c: Counter = Counter()
    for lv, n in stats.counters.reads.items():
        if n:
            c[("r", lv)] += n
    for lv, n in stats.counters.writes.items():
        if n:
            c[("w", lv)] += n
    return c


# -- layouts -----------------------------------------------------------------------------------


@st.composite
def layouts(draw):
    """A 16 MiB window: random pages/blocks mapped, random pages writable, random dirty words."""
    pgt = PageTable(G4K, rmap=True)
    npages = 4096
    pieces = draw(
        st.lists(st.tuples(st.integers(0, 7), st.sampled_from([4096, 2 << 20])), max_size=6)
    )
    for chunk, backing in pieces:  # 2 MiB chunks, mapped as pages or as a block
        pgt.map_range(BASE + chunk * (2 << 20), 2 << 20, backing, writable=False)
    writable = draw(st.lists(st.integers(0, npages - 1), max_size=200))
    for p in writable:
        level, pos, desc = pgt.lookup(np.array([BASE + p * 4096]))
        if D.is_valid(desc)[0]:
            pgt.flat[pos[0]] = desc[0] | np.uint64(D.S2AP_W)
    nwords = npages // 64
    words = draw(
        st.lists(
            st.tuples(st.integers(0, nwords - 1), st.integers(1, (1 << 64) - 1)),
            min_size=1,
            max_size=30,
        )
    )
    table = {}
    for w, m in words:
        table[w] = table.get(w, 0) | m
    offsets = np.array(sorted(table), dtype=np.int64) * 64
    masks = np.array([table[w] for w in sorted(table)], dtype=np.uint64)
    return pgt, offsets, masks


def _assert_each_matches_its_reference(pgt, offsets, masks) -> None:
    for name in STRATEGIES:
        mine, ref = pgt.copy(), pgt.copy()
        stats = run_strategy(name, mine, BASE_GFN, offsets, masks)
        expected = REFERENCES[name](ref, BASE_GFN, offsets, masks)
        assert np.array_equal(mine.pool, ref.pool), name
        assert _counts(stats) == expected, name


@given(layouts())
def test_each_strategy_matches_its_reference(layout):
    _assert_each_matches_its_reference(*layout)


@given(layouts(), st.sampled_from([1, 2, 5]))
def test_strategies_match_their_references_a_few_words_at_a_time(layout, block):
    """The per-word fast path works through the words in blocks (2048 words in the engine,
    more than a test layout has): with tiny blocks every block boundary, and the in-place pass
    over a span with missing words, is compared with the references too."""
    old = WP._BLOCK_WORDS
    WP._BLOCK_WORDS = block
    try:
        _assert_each_matches_its_reference(*layout)
    finally:
        WP._BLOCK_WORDS = old


@given(layouts())
def test_strategies_agree_where_writable_pages_are_dirty(layout):
    """In bitmap mode every writable page is dirty; then all four leave identical tables."""
    pgt, offsets, masks = layout
    dirty = np.zeros(4096, dtype=bool)
    for off, m in zip(offsets.tolist(), masks.tolist(), strict=True):
        for b in set_bits(m):
            dirty[off + b] = True
    level, pos, desc = pgt.lookup(BASE + np.arange(4096) * 4096)
    clean_writable = D.is_valid(desc) & D.is_writable(desc) & ~dirty & (level == 3)
    pgt.flat[pos[clean_writable]] &= ~np.uint64(D.S2AP_W)
    # a writable block is only consistent if all of it is dirty: protect the others
    blocks = D.is_valid(desc) & (level < 3)
    for p in np.unique(pos[blocks]):
        members = pos == p
        if not dirty[members].all():
            pgt.flat[p] &= ~np.uint64(D.S2AP_W)
    results = [run_strategy(n, c := pgt.copy(), BASE_GFN, offsets, masks) and c for n in STRATEGIES]
    for other in results[1:]:
        assert np.array_equal(results[0].pool, other.pool)


@pytest.mark.parametrize(
    "words",
    [
        [0, 3 * 8 + 1, 3 * 8 + 6, 7 * 8 + 2, 7 * 8 + 5, 7 * 8 + 7],  # fewer than the regions
        [8 * r + i for r in (0, 1, 2, 3, 6, 7) for i in (0, 5)] + [7],  # more (4, 5 unmapped)
    ],
)
def test_word_chunks_find_each_words_table_sparse_or_dense(words):
    """A harvest's aligned words reach their 64 entries through the table of their level-2
    region: each region of the span is looked up when the words outnumber the regions, each
    distinct region otherwise; both against the references, with 1, 2 or 3 words a region
    and tables allocated out of IPA order (the pages of region 6 and 7 mapped first)."""
    pgt = PageTable(G4K, rmap=True)
    for region in (7, 6, 0, 1, 2, 3):
        pgt.map_range(BASE + region * (2 << 20), 2 << 20, 4096)
    rng = np.random.default_rng(len(words))
    offsets = np.array(sorted(words), dtype=np.int64) * 64
    masks = rng.integers(1, 1 << 63, offsets.size, dtype=np.int64).astype(np.uint64)
    chunks = WP._WordChunks.of(pgt, BASE_GFN + offsets)
    assert chunks is not None and not chunks.increasing
    _assert_each_matches_its_reference(pgt, offsets, masks)


@st.composite
def ring_layouts(draw):
    """A layout whose words sit at any offset, in ring order (not sorted), possibly
    overlapping: what a ring reset's merged masks look like."""
    pgt, _, _ = draw(layouts())
    words = draw(
        st.lists(
            st.tuples(st.integers(0, 4096 - 64), st.integers(1, (1 << 64) - 1)),
            min_size=1,
            max_size=30,
        )
    )
    offsets = np.array([w for w, _ in words], dtype=np.int64)
    masks = np.array([m for _, m in words], dtype=np.uint64)
    return pgt, offsets, masks


@settings(max_examples=15, deadline=None)
@given(ring_layouts())
def test_each_strategy_matches_its_reference_on_unaligned_words(layout):
    """Spans inside one last-level table take the in-table path (range, visitor), the
    others the walk: tables and counts must still be the reference's."""
    _assert_each_matches_its_reference(*layout)


def _assert_in_table_path_equals_the_walk(name, pgt, offsets, masks) -> None:
    fast = run_strategy(name, fast_t := pgt.copy(), BASE_GFN, offsets, masks)
    old = WP._span_walk_in_tables
    WP._span_walk_in_tables = lambda pgt, b, offsets, m, c: np.ones(offsets.size, dtype=bool)
    try:
        walked = run_strategy(name, walk_t := pgt.copy(), BASE_GFN, offsets, masks)
    finally:
        WP._span_walk_in_tables = old
    assert fast.counters == walked.counters
    assert np.array_equal(fast_t.pool, walk_t.pool)


@settings(max_examples=15, deadline=None)
@given(ring_layouts(), st.sampled_from(["range", "visitor"]))
def test_in_table_spans_count_as_the_walk_does(layout, name):
    """tables_visited (not in the references) too: the in-table path and the general walk
    of the same words give identical counters and tables."""
    pgt, offsets, masks = layout
    _assert_in_table_path_equals_the_walk(name, pgt, offsets, masks)


@st.composite
def single_bit_ring_layouts(draw):
    """A ring reset's usual words: one bit each (pages written once, far apart), at any
    offset and in ring order, some naming the same page; the bit can carry the page past
    the word's region (offset 500 + bit 20: the next table).  The pages they name are made
    writable where mapped as pages, as the writes that dirtied them left them."""
    pgt, _, _ = draw(layouts())
    words = draw(
        st.lists(st.tuples(st.integers(0, 4096 - 64), st.integers(0, 63)), min_size=1, max_size=30)
    )
    offsets = np.array([w for w, _ in words], dtype=np.int64)
    masks = np.array([1 << b for _, b in words], dtype=np.uint64)
    level, pos, desc = pgt.lookup(BASE + (offsets + [b for _, b in words]) * 4096)
    hit = D.is_valid(desc) & (level == 3)  # the ring's pages were written: writable pages
    pgt.flat[pos[hit]] = desc[hit] | np.uint64(D.S2AP_W)
    return pgt, offsets, masks


@settings(max_examples=15, deadline=None)
@given(single_bit_ring_layouts(), st.sampled_from(["range", "visitor"]))
def test_single_bit_spans_match_the_reference_and_the_walk(layout, name):
    """Words of one bit each skip the span expansion of the in-table path: the tables and
    counts are the reference's and the general walk's (``tables_visited`` included)."""
    pgt, offsets, masks = layout
    _assert_each_matches_its_reference(pgt, offsets, masks)
    _assert_in_table_path_equals_the_walk(name, pgt, offsets, masks)


def test_unaligned_overlapping_spans_in_one_table_hand_count():
    """Two ring masks over pages 5..12 and 10..11 of one table: 8 + 2 entries read, 8
    written once each; a third straddling pages 500..520 takes the walk (2 L2 reads)."""
    pgt = _pages_layout()
    offsets = np.array([5, 10, 500], dtype=np.int64)
    masks = np.array([1 | 1 << 7, 0b11, 1 | 1 << 20], dtype=np.uint64)
    stats = run_strategy("range", pgt, BASE_GFN, offsets, masks)
    assert dict(stats.counters.reads) == {1: 3, 2: 4, 3: 8 + 2 + 21}
    assert dict(stats.counters.writes) == {3: 8 + 21}
    assert stats.counters.tables_visited == 3 + 3 + 4


def test_ffs_fls_match_python():
    rng = np.random.default_rng(0)
    vals = rng.integers(1, 2**63, 1000, dtype=np.uint64) | (
        rng.integers(0, 2, 1000, dtype=np.uint64) << np.uint64(63)
    )
    vals = np.concatenate(
        [vals, np.array([1, 2**63, 2**64 - 1, 2**32, 2**32 - 1], dtype=np.uint64)]
    )
    assert ffs64(vals).tolist() == [(int(v) & -int(v)).bit_length() - 1 for v in vals]
    assert fls64(vals).tolist() == [int(v).bit_length() - 1 for v in vals]


# -- hand counts ---------------------------------------------------------------------------------


def _pages_layout():
    """8 MiB of 4K pages at BASE, all writable (4 L3 tables under one L2 table)."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 8 << 20, 4096)
    return pgt


def test_range_hand_count():
    pgt = _pages_layout()
    # word 0 with bits 3 and 10: span of 8 pages in one L3 table
    stats = run_strategy(
        "range", pgt, BASE_GFN, np.array([0]), np.array([(1 << 3) | (1 << 10)], np.uint64)
    )
    # L1: 1 entry, L2: 1 entry, L3: pages 3..10 = 8 entries; writes: 8 (all were writable)
    assert dict(stats.counters.reads) == {1: 1, 2: 1, 3: 8}
    assert dict(stats.counters.writes) == {3: 8}
    assert stats.counters.tables_visited == 3


def test_range_span_crossing_a_last_level_table():
    pgt = _pages_layout()
    # offset 480: bits 0 and 63 → pages 480..543, crossing from L3 table 0 into table 1
    stats = run_strategy(
        "range", pgt, BASE_GFN, np.array([480]), np.array([1 | 1 << 63], np.uint64)
    )
    assert dict(stats.counters.reads) == {1: 1, 2: 2, 3: 64}
    assert stats.counters.tables_visited == 4


def test_masked_skip_reads_no_upper_level_for_a_word_in_the_same_table():
    pgt = _pages_layout()
    offsets = np.array([0, 64, 128])
    masks = np.array([1 << 5, 1 << 7 | 1 << 9, 1 << 63], np.uint64)
    stats = run_strategy("masked-skip", pgt, BASE_GFN, offsets, masks)
    # one upper walk for the first word (L1 + L2), none for the next two (same L3 table)
    assert stats.counters.reads[1] == 1 and stats.counters.reads[2] == 1
    assert stats.counters.reads[3] == 4  # one pte read per set bit
    single = run_strategy(
        "masked-skip", _pages_layout(), BASE_GFN, np.array([64]), np.array([3], np.uint64)
    )
    assert single.counters.reads[3] == 2


def test_masked_skip_rewalks_when_a_span_crosses_a_table():
    pgt = _pages_layout()
    stats = run_strategy(
        "masked-skip", pgt, BASE_GFN, np.array([480]), np.array([1 | 1 << 63], np.uint64)
    )
    assert stats.counters.reads[1] == 2 and stats.counters.reads[2] == 2
    assert stats.counters.reads[3] == 2


def test_rmap_reads_no_upper_level():
    pgt = _pages_layout()
    stats = run_strategy(
        "rmap", pgt, BASE_GFN, np.array([0, 480]), np.array([0xFF, 1 | 1 << 63], np.uint64)
    )
    assert dict(stats.counters.reads) == {3: 10}
    assert dict(stats.counters.writes) == {3: 10}
    assert stats.rmap_bytes > 0


def test_write_protect_clears_only_s2ap_w():
    pgt = _pages_layout()
    before = int(pgt.pool[pgt.lookup(np.array([BASE + 3 * 4096]))[1][0] // 512, 3])
    run_strategy("visitor", pgt, BASE_GFN, np.array([0]), np.array([1 << 3], np.uint64))
    _, pos, desc = pgt.lookup(np.array([BASE + 3 * 4096]))
    assert int(desc[0]) == before & ~D.S2AP_W
    assert int(desc[0]) ^ before == 1 << 7


@pytest.mark.parametrize("chosen", ["range", "masked-skip", "visitor", "rmap"])
def test_compare_mode_runs_the_others_in_place_and_keeps_only_the_chosen_change(chosen):
    """Compare mode runs the other strategies on the VM's own tables and puts the tables in
    reach back after each: every strategy reports what it reports on a copy of its own, and
    the tables end as the chosen strategy alone leaves them. Words are unaligned (as after
    ring resets) and one straddles two last-level tables."""
    from engine.kvm import dirtylog as DL
    from engine.kvm.dirtylog import OpStats
    from engine.kvm.vm import VM, Tracking, slot_flags

    vm = VM(G4K, Tracking("bitmap", chosen, compare=True), nr_vcpus=1)
    vm.set_memslot(0, BASE, 8 << 20, 0, 4096, populate=True)
    vm.set_memslot(1, BASE + (8 << 20), 4 << 20, 0, 2 << 20, populate=True)  # blocks
    st = vm.slots[0]
    vm.set_memslot(0, st.slot.base, st.slot.size, slot_flags(log_dirty=True), 4096)
    rng = np.random.default_rng(7)
    g = st.slot.base_gfn + rng.choice(st.slot.npages, 400, replace=False)
    vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))
    offsets = np.array([3, 130, 700, 1999, 2048 - 64 + 5], dtype=np.int64)
    masks = rng.integers(1, 2**63, offsets.size).astype(np.uint64)
    alone = {}
    for name in STRATEGIES:
        t = vm.pgt.copy()
        alone[name] = (run_strategy(name, t, st.slot.base_gfn, offsets, masks).counters, t)
    op = OpStats("get")
    DL.protect(vm, st, offsets, masks, op)
    for name in STRATEGIES:
        assert op.strategies[name].counters == alone[name][0], name
    assert np.array_equal(vm.pgt.pool, alone[chosen][1].pool)


@pytest.mark.parametrize(
    ("name", "span", "walks"),
    [("range", True, 4), ("masked-skip", False, 3), ("visitor", True, 4), ("rmap", False, 0)],
)
def test_each_strategy_protects_its_pages_by_hand(name, span, walks):
    """Bit i of the word at offset o is page o + i (bit 0 first).  range and visitor protect
    the span [__ffs(mask), __fls(mask)] of each word, as kvm_arch_mmu_enable_log_dirty_pt_
    masked does (start = base + __ffs, end = base + __fls + 1, stage2_wp_range / kvm_pgtable_
    stage2_wrprotect); masked-skip and rmap protect exactly the set bits.  Words at 0, 64,
    640 and 1920 with masks 0b1011, bit 63, all ones and bits 0 and 63, over 8 MiB of
    writable 4K pages: spans 0..3, 127, 640..703, 1920..1983 (133 pages, one L3 write each);
    bits 0, 1, 3, 127, 640..703, 1920, 1983 (70).  Every other page stays writable, every
    page stays a valid page, and a second pass writes nothing.  Reads: range and visitor walk
    L1 and L2 once per word (4) and read every pte of the spans; masked-skip walks once per
    L3 table reached (pages 0..511, 512..1023, 1536..2047: 3) and reads only the set bits;
    rmap reads the set bits' ptes and no upper level."""
    pgt = _pages_layout()
    offsets = np.array([0, 64, 640, 1920], np.int64)
    masks = np.array([0b1011, 1 << 63, 2**64 - 1, 1 | 1 << 63], np.uint64)
    stats = run_strategy(name, pgt, BASE_GFN, offsets, masks)
    if span:
        protected = set(range(0, 4)) | {127} | set(range(640, 704)) | set(range(1920, 1984))
    else:
        protected = {0, 1, 3, 127, 1920, 1983} | set(range(640, 704))
    _, _, d = pgt.lookup(BASE + np.arange(2048) * 4096)
    assert set(np.flatnonzero(~D.is_writable(d)).tolist()) == protected
    assert D.is_valid(d).all()
    writes = {k: v for k, v in stats.counters.writes.items() if v}
    assert writes == {3: len(protected)} and type(writes[3]) is int
    reads = {k: v for k, v in stats.counters.reads.items() if v}
    assert reads == ({1: walks, 2: walks} if walks else {}) | {3: len(protected)}
    assert stats.pages == 70 and stats.words == 4
    again = run_strategy(name, pgt, BASE_GFN, offsets, masks)  # nothing left to protect
    assert not any(again.counters.writes.values())


def test_ffs_fls_of_zero_and_bits_to_offsets_by_hand():
    """__ffs/__fls of 0 are -1 here (the kernel leaves them undefined; callers skip zero
    words); bits_to_offsets lists bit i of the word at offset o as page o + i, in order."""
    zero = np.zeros(1, np.uint64)
    assert ffs64(zero).tolist() == [-1] and fls64(zero).tolist() == [-1]
    pages, word = WP.bits_to_offsets(
        np.array([0, 64, 640], np.int64), np.array([0b1011, 1 << 63, 1 << 8], np.uint64)
    )
    assert pages.tolist() == [0, 1, 3, 127, 648] and word.tolist() == [0, 0, 0, 1, 2]


@pytest.mark.parametrize("shift", [0, 5])  # whole words (per-word fast path) and unaligned
@pytest.mark.parametrize(
    ("starts", "walks", "third"),
    [(None, 1, 128), ([0], 1, 128), ([0, 2], 2, 128), ([0, 1, 2], 3, 128), ([0], 2, 640)],
)
def test_masked_skip_rewalks_at_each_ioctl(shift, starts, walks, third):
    """Several CLEARs applied together (``starts``: the word where each ioctl begins): the
    v6 patch's cached upper-level lookup lives inside one kvm_arch_mmu_enable_log_dirty_pt_
    masked call, so each ioctl looks the upper levels up again even in the same L3 table.
    Three words in one L3 table, 4 set bits: one L1 and one L2 read per ioctl that starts
    a walk (1, 1, 2, 3), one pte read and one write per set bit, three tables visited per
    walk.  A third word in the next L3 table (offset 640) needs its own walk inside one
    ioctl (2)."""
    pgt = _pages_layout()
    offsets = np.array([0, 64, third]) + shift
    masks = np.array([1 << 5, 1 << 7 | 1 << 9, 1 << 40], np.uint64)
    s = None if starts is None else np.array(starts)
    stats = run_strategy("masked-skip", pgt, BASE_GFN, offsets, masks, s)
    assert (stats.counters.reads[1], stats.counters.reads[2]) == (walks, walks)
    assert stats.counters.reads[3] == 4 and stats.counters.writes[3] == 4
    assert stats.counters.tables_visited == 3 * walks
    protected = {5 + shift, 71 + shift, 73 + shift, third + 40 + shift}
    _, _, d = pgt.lookup(BASE + np.arange(1024) * 4096)
    assert set(np.flatnonzero(~D.is_writable(d)).tolist()) == protected


def test_rmap_reads_only_mapped_pages_under_sparse_bits():
    """x86's rmap walk finds no spte for a page that is not mapped: bits 1 and 3 of word 0
    with page 3 unmapped read (and protect) page 1 only."""
    pgt = _pages_layout()
    unmap_range(pgt, BASE + 3 * 4096, 4096)
    stats = run_strategy("rmap", pgt, BASE_GFN, np.array([0]), np.array([0b1010], np.uint64))
    assert {k: v for k, v in stats.counters.reads.items() if v} == {3: 1}
    assert {k: v for k, v in stats.counters.writes.items() if v} == {3: 1}


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (0, 2, 1, 3)])
def test_word_chunks_of_tables_in_ipa_order_and_not(order):
    """A harvest over regions whose last-level tables were allocated in IPA order takes each
    word's chunk from its word index; out of order, from each region's table: both against
    the references, with every region's words present and with some missing."""
    pgt = PageTable(G4K, rmap=True)
    for region in order:
        pgt.map_range(BASE + region * (2 << 20), 2 << 20, 4096)
    rng = np.random.default_rng(7)
    for words in (np.arange(32), np.array([0, 1, 7, 8, 15, 16, 30, 31])):
        offsets = words.astype(np.int64) * 64
        masks = rng.integers(1, 1 << 63, offsets.size, dtype=np.int64).astype(np.uint64)
        chunks = WP._WordChunks.of(pgt, BASE_GFN + offsets)
        assert chunks is not None and chunks.increasing == (order == (0, 1, 2, 3))
        # by hand: word w sits in region w // 8, whose table is the (order.index)-th allocated
        first = pgt.last_level_tables(np.array([BASE], dtype=np.int64))[0] - order.index(0)
        tables = first + np.array([order.index(int(w) // 8) for w in words])
        assert np.array_equal(chunks.chunk, tables * 8 + words % 8)
        _assert_each_matches_its_reference(pgt, offsets, masks)

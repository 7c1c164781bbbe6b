"""Four ways to re-protect the pages of a harvested dirty-bitmap word.

Each takes the non-zero words of one harvest at once — ``offsets`` (slot page offset of bit
0, not necessarily a multiple of 64: ring resets merge masks at any offset) and ``masks`` —
and clears S2AP W on what the algorithm reaches.  They must leave the same protection for
the dirty pages; they differ in what they read, and each counts its own descriptor reads
and writes per level from the entries it actually gathers.  No strategy invalidates TLBs:
the caller flushes once per harvest, as ``kvm_get_dirty_log_protect`` does.

- ``range``: the merged ``stage2_wp_range`` → puds → pmds → ptes, called per word on the
  span [ffs, fls]: every entry in the span is read, clear bits in between included.
- ``masked-skip``: the seed's v6 patch.  The upper levels are looked up once and reused while
  the bits stay in the same last-level table (also across consecutive words); they are looked
  up again only when a bit lands in another last-level table.  Only set bits read a leaf.
- ``visitor``: today's kernel, ``kvm_pgtable_stage2_wrprotect``: the generic walker
  (``walk_bulk_spans``) with a LEAF visitor that clears S2AP W over the span [ffs, fls].
- ``rmap``: x86 style: gfn → leaf position kept by the page table; one read per set bit and a
  write where it was writable, no upper-level read, at the cost of the reverse map's memory.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.stage2 import descriptor as D
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import WalkCounters, scratch, set_clear_visitor, walk_bulk_spans
from engine.util.arrays import expand_runs, first_of_runs, popcount, unique_fast

U64 = np.uint64
_BLOCK_WORDS = 2048  # words per numpy pass in the per-word fast path
# Gathering just the entries under set bits beats whole-chunk passes while the chunks fit in
# cache and few bits are set; beyond that the passes win (measured with dirtylog bench).
_SPARSE_MAX_WORDS = 1 << 14
# (dense passes cost more when they must also count mapped pages: rmap's crossover is denser)
_SPARSE_DENSITY = {"mask": 24, "mapped": 8}
STRATEGIES = ("range", "masked-skip", "visitor", "rmap")


# -- bit helpers -----------------------------------------------------------------------------


def _smear_down(m: np.ndarray) -> np.ndarray:
    """Every bit at or below the highest set bit (0 for 0)."""
    x = m.astype(U64, copy=True)
    for shift in (1, 2, 4, 8, 16, 32):
        x |= x >> U64(shift)
    return x


def fls64(m: np.ndarray) -> np.ndarray:
    """__fls for uint64 words (index of the highest set bit; -1 for 0)."""
    return np.bitwise_count(_smear_down(m)).astype(np.int64) - 1


def ffs64(m: np.ndarray) -> np.ndarray:
    """__ffs for uint64 words (index of the lowest set bit; -1 for 0)."""
    m = m.astype(U64)
    low = m & (~m + U64(1))
    return np.where(m != 0, np.bitwise_count(low - U64(1)).astype(np.int64), -1)


def bits_to_offsets(offsets: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Page offsets of every set bit, word by word in bit order, and the word each came from."""
    bits = np.unpackbits(masks.astype("<u8").view(np.uint8), bitorder="little")
    at = np.flatnonzero(bits)
    word = at >> 6
    return offsets[word] + (at & 63), word


# -- results ---------------------------------------------------------------------------------


@dataclass
class ProtectStats:
    """What one strategy did for one harvest: counts, modelled inputs and measured time."""

    strategy: str
    counters: WalkCounters = field(default_factory=WalkCounters)
    words: int = 0
    pages: int = 0
    wall_ns: int = 0
    cpu_ns: int = 0  # the calling thread's CPU time: wall time minus waits for the GIL/CPU
    rmap_bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        d = {"strategy": self.strategy, "words": self.words, "pages": self.pages}
        d.update(self.counters.as_dict())
        d["wall_us"] = self.wall_ns / 1000
        d["cpu_us"] = self.cpu_ns / 1000
        if self.rmap_bytes:
            d["rmap_bytes"] = self.rmap_bytes
        return d


# (pgt, base_gfn, offsets, masks, counters, starts): ``starts`` are the word indices where
# another ioctl begins when several CLEARs are applied together (None: one ioctl).  Only
# masked-skip cares: its cached upper-level lookup never carries over into the next ioctl;
# range and visitor walk every word from the top anyway, and rmap never walks.
Protect = Callable[..., None]


def _spans(base_gfn: int, offsets: np.ndarray, masks: np.ndarray, page_shift: int):
    """IPA span [ffs, fls] of each word, as [start, end)."""
    first = base_gfn + offsets + ffs64(masks)
    last = base_gfn + offsets + fls64(masks)
    return first << page_shift, (last + 1) << page_shift


def _write_protect(
    pgt: PageTable, pos: np.ndarray, level_of: np.ndarray, counters: WalkCounters
) -> None:
    """Clear S2AP W on the valid, writable leaves among ``pos`` (each changed once)."""
    if not pos.size:
        return
    if pos.size > 1 and not bool(np.all(pos[1:] > pos[:-1])):
        order = np.argsort(pos, kind="stable")
        pos, level_of = pos[order], level_of[order]
        first = first_of_runs(pos)
        pos, level_of = pos[first], level_of[first]
    d = pgt.flat[pos]
    change = D.is_valid(d) & D.is_writable(d) & ~_is_table_at(d, level_of)
    pgt.flat[pos[change]] = d[change] & ~U64(D.S2AP_W)
    _count_per_level(counters.writes, level_of[change])


def _count_per_level(counter: Counter[int], levels: np.ndarray) -> None:
    for lv, n in enumerate(np.bincount(levels, minlength=4).tolist()):
        if n:
            counter[lv] += n


def _is_table_at(d: np.ndarray, level: np.ndarray) -> np.ndarray:
    return (level < 3) & ((d & U64(D.VALID | D.TYPE)) == U64(D.VALID | D.TYPE))


# -- the common case, vectorised per word --------------------------------------------------------


@dataclass
class _WordChunks:
    """Words that each sit inside one last-level table: the 64 entries each word covers.

    This is the shape of almost every harvest (a memslot's bitmap words are 64-page aligned
    and logging leaves no blocks), and it lets every strategy work on whole 64-entry chunks
    of the pool instead of gathering entries one by one.  Strategies fall back to their
    general form when a word is unaligned or lands where there is no last-level table.
    """

    chunk: np.ndarray  # index of each word's 64 entries in pool.reshape(-1, 64)
    region: np.ndarray  # the level-2 region (last-level table's span) of each word
    increasing: bool  # chunks ascend with the words (tables were allocated in IPA order)

    @classmethod
    def of(cls, pgt: PageTable, gfn0: np.ndarray) -> _WordChunks | None:
        E = pgt.E
        if E % 64 or gfn0.size == 0 or int(np.bitwise_or.reduce(gfn0)) & 63:
            return None
        if gfn0.size > 1 and not bool((gfn0[1:] > gfn0[:-1]).all()):
            return None
        g = pgt.geom
        region = gfn0 >> g.bits_per_level
        r0 = int(region[0])
        n_regions = int(region[-1]) - r0 + 1
        if n_regions <= gfn0.size:  # (a harvest's words: every region of the span asked once)
            every = pgt.last_level_tables((np.arange(n_regions) + r0) << g.level_shift(2))
            if every[0] >= 0 and bool((every[1:] - every[:-1] == 1).all()):
                # the span's tables were allocated in IPA order (a populated slot's are): a
                # word's chunk is its word index moved by one constant, and the chunks ascend
                chunk = (gfn0 >> 6) + (int(every[0]) - r0) * (E // 64)
                return cls(chunk, region, True)
            table = every[region - r0]
        else:  # sparse words: each distinct region asked once
            first = np.ones(region.shape, dtype=bool)
            first[1:] = region[1:] != region[:-1]
            starts = np.flatnonzero(first)
            table = np.repeat(
                pgt.last_level_tables(region[starts] << g.level_shift(2)),
                np.diff(np.append(starts, region.size)),
            )
        if not bool(np.all(table >= 0)):
            return None
        # the word's chunk = its table's first chunk + the word's index inside the table
        chunk = table * (E // 64)
        chunk += (gfn0 >> 6) & (E // 64 - 1)
        return cls(chunk, region, chunk.size < 2 or bool(np.all(chunk[1:] > chunk[:-1])))

    def new_walks(self, starts: np.ndarray | None) -> int:
        """Upper-level walks of masked-skip: one where the word's last-level table differs
        from the previous word's, and at each ioctl's first word (``starts``)."""
        new_walk = np.ones(self.region.shape, dtype=bool)
        np.not_equal(self.region[1:], self.region[:-1], out=new_walk[1:])
        if starts is not None:
            new_walk[starts] = True
        return int(np.count_nonzero(new_walk))

    def apply(
        self, pgt: PageTable, masks: np.ndarray, counters: WalkCounters, count_reads: str
    ) -> None:
        """Clear S2AP W on valid writable pages under ``masks``; count leaf reads.

        Works through the words a block at a time so the temporaries stay in cache; words
        that are mostly consecutive are changed in place over their whole span (missing
        words count as empty masks) instead of being gathered and scattered.
        """
        chunks = pgt.pool.reshape(-1, 64)
        reads = writes = 0
        nbits = popcount(masks)
        if count_reads == "mask":
            reads = nbits
        sparse = nbits * _SPARSE_DENSITY[count_reads] < masks.size * 64
        if masks.size <= _SPARSE_MAX_WORDS and sparse:
            valid, writes = _clear_w_at(pgt, self._positions(masks))
            counters.reads[3] += reads if count_reads == "mask" else valid
            counters.writes[3] += writes
            return
        mapped = count_reads == "mapped"
        first = int(self.chunk[0])
        span = int(self.chunk[-1]) - first + 1
        if self.increasing and span <= 2 * self.chunk.size:
            # mostly consecutive words (a GET's): lay the masks over their whole span of
            # chunks once (missing words are empty masks) and change it in place
            full = masks
            if span != self.chunk.size:
                full = np.zeros(span, dtype=U64)
                full[self.chunk - first] = masks  # one chunk per word: indices are distinct
            r, w = self._apply_span(chunks[first : first + span], full, mapped)
        else:
            r, w = self._apply_blocks(chunks, masks, mapped)
        counters.reads[3] += reads + r
        if w:
            counters.writes[3] += w

    @staticmethod
    def _apply_span(rows: np.ndarray, full: np.ndarray, mapped: bool) -> tuple[int, int]:
        """``_clear_w_under`` over consecutive rows, a block at a time."""
        reads = writes = 0
        for lo in range(0, full.size, _BLOCK_WORDS):
            r, w = _clear_w_under(
                rows[lo : lo + _BLOCK_WORDS], full[lo : lo + _BLOCK_WORDS], mapped
            )
            reads += r
            writes += w
        return reads, writes

    def _apply_blocks(self, chunks: np.ndarray, masks: np.ndarray, mapped: bool) -> tuple[int, int]:
        """``_clear_w_under`` a block of words at a time, in place over a block's span where
        its words are mostly consecutive, else gathered and scattered."""
        reads = writes = 0
        for lo in range(0, self.chunk.size, _BLOCK_WORDS):
            idx = self.chunk[lo : lo + _BLOCK_WORDS]
            m = masks[lo : lo + _BLOCK_WORDS]
            first, last = (idx[0], idx[-1]) if self.increasing else (idx.min(), idx.max())
            first, span = int(first), int(last) - int(first) + 1
            if span <= 2 * idx.size:
                full = np.zeros(span, dtype=U64)
                full[idx - first] = m  # one chunk per word: indices are distinct
                r, w = self._apply_span(chunks[first : first + span], full, mapped)
            else:
                sub = chunks[idx]
                r, w = _clear_w_under(sub, m, mapped)
                chunks[idx] = sub
            reads += r
            writes += w
        return reads, writes

    def _positions(self, masks: np.ndarray) -> np.ndarray:
        """Flat pool positions of the entries under set bits, in word order."""
        bits = np.unpackbits(masks.view(np.uint8), bitorder="little")
        flat_bit = np.flatnonzero(bits.view(bool))
        return self.chunk[flat_bit >> 6] * 64 + (flat_bit & 63)

    @staticmethod
    def upper_walks(pgt: PageTable, counters: WalkCounters, walks: int) -> None:
        """``walks`` walks from the start level down to a last-level table."""
        g = pgt.geom
        for lv in range(g.start_level, 3):
            counters.reads[lv] += walks
        counters.tables_visited += walks * (4 - g.start_level)


def _clear_w_under(sub: np.ndarray, masks: np.ndarray, count_mapped: bool) -> tuple[int, int]:
    """On rows of 64 last-level entries, clear S2AP W where the mask bit is set.

    A last-level table holds only valid pages and zeros (the table code writes 0 when it
    breaks or unmaps an entry), so "S2AP W is set" already means "a valid writable page".
    VALID and S2AP W both sit in an entry's low byte, so the test runs on the low bytes (one
    narrowing copy of the rows, then byte-wide AND and count) and the change is XOR-ed in as
    bytes (numpy widens them in small buffers, so no row-sized uint64 temporary is
    written and read again).  Returns (valid pages under the masks, changed).
    """
    low = scratch(sub.shape)[1].view(np.uint8)
    bits = np.unpackbits(masks.view(np.uint8), bitorder="little").reshape(sub.shape)
    # rmap reads a leaf only where the reverse map has one: VALID (bit 0) is probed as well
    probe = (D.VALID | D.S2AP_W) if count_mapped else D.S2AP_W
    np.multiply(bits, np.uint8(probe), out=bits)  # (numpy's uint8 shifts are not SIMD)
    np.copyto(low, sub, casting="unsafe")  # keeps bits 0-7: VALID, TYPE, AttrIndx, S2AP
    np.bitwise_and(low, bits, out=low)
    mapped = 0
    if count_mapped:
        mapped = int(np.count_nonzero(low))
        np.bitwise_and(low, np.uint8(D.S2AP_W), out=low)
    n = int(np.count_nonzero(low))
    if n:
        np.bitwise_xor(sub, low, out=sub)
    return mapped, n


def _clear_w_at(pgt: PageTable, pos: np.ndarray) -> tuple[int, int]:
    """Clear S2AP W at distinct positions holding valid writable pages: (valid pages, changed)."""
    flat = pgt.flat
    d = flat[pos]
    page = U64(D.VALID | D.TYPE)
    rw = page | U64(D.S2AP_W)
    change = (d & rw) == rw
    flat[pos[change]] = d[change] & ~U64(D.S2AP_W)
    return int(np.count_nonzero((d & page) == page)), int(np.count_nonzero(change))


def _span_masks(masks: np.ndarray) -> np.ndarray:
    """Every bit from the lowest to the highest set bit of each word ([ffs, fls])."""
    m = masks.astype(U64)
    below_low = (m & (~m + U64(1))) - U64(1)
    return _smear_down(m) & ~below_low


def _span_walk_in_chunks(
    pgt: PageTable, base_gfn: int, offsets: np.ndarray, masks: np.ndarray, counters: WalkCounters
) -> bool:
    """The walker's batches for aligned words, taken a chunk at a time: one upper-level walk
    per word and its [ffs, fls] span re-protected.  False when the words do not fit the
    chunked layout (the caller walks them instead)."""
    fast = _WordChunks.of(pgt, base_gfn + offsets)
    if fast is None:
        return False
    fast.upper_walks(pgt, counters, int(offsets.size))
    fast.apply(pgt, _span_masks(masks), counters, "mask")
    return True


def _span_walk_in_tables(
    pgt: PageTable, base_gfn: int, offsets: np.ndarray, masks: np.ndarray, counters: WalkCounters
) -> np.ndarray:
    """Walks whose [ffs, fls] span lies in one last-level table, at any offset (a ring
    reset's merged masks): one upper-level walk each, every entry of the span read and the
    valid writable ones protected (an entry in several spans is read once per span and
    changed once).  Returns the words left for the general walk (spans that cross a table
    or reach no last-level table).  The counts are the walk's: see ``ref_range``."""
    g, E = pgt.geom, pgt.E
    single = not bool((masks & (masks - U64(1))).any())  # (a ring reset's usual words)
    if single:  # one bit per word: its index is the count of the bits below it
        hi = lo = np.bitwise_count(masks - U64(1)).astype(np.int64)
    else:
        hi, lo = fls64(masks), ffs64(masks)
    first = base_gfn + offsets + lo
    if single and offsets.size:  # (a ring reset's usual words: every table mapped)
        level, pos, d = pgt.lookup(first << g.page_shift)
        if bool((level == 3).all()):
            _WordChunks.upper_walks(pgt, counters, int(pos.size))
            _protect_spans(pgt, pos, d, counters)
            return np.zeros(offsets.size, dtype=bool)
    region = first >> g.bits_per_level
    if single:  # a one-page span is inside its table: every word looks it up, no expansion
        table = pgt.last_level_tables(region << g.level_shift(2))
    else:
        inside = region == ((base_gfn + offsets + hi) >> g.bits_per_level)
        table = np.full(region.size, -1, dtype=np.int64)
        table[inside] = pgt.last_level_tables(region[inside] << g.level_shift(2))
    fast = table >= 0
    if not fast.any():
        return ~fast
    idx = np.flatnonzero(fast)
    _WordChunks.upper_walks(pgt, counters, int(idx.size))
    pos = table[idx] * E + (first[idx] & (E - 1))
    if not single:
        pos = expand_runs(pos, (hi - lo + 1)[idx])
    _protect_spans(pgt, pos, pgt.flat[pos], counters)
    return ~fast


def _protect_spans(pgt: PageTable, pos: np.ndarray, d: np.ndarray, counters: WalkCounters) -> None:
    """The last-level part of ``_span_walk_in_tables``: the entries at ``pos`` (their
    descriptors ``d``; a position may repeat) read, the valid writable ones protected, each
    changed entry counted as one write."""
    counters.reads[3] += int(pos.size)
    change = (d & U64(D.VALID | D.S2AP_W)) == U64(D.VALID | D.S2AP_W)
    cpos = pos[change]
    if cpos.size:
        pgt.flat[cpos] = d[change] & ~U64(D.S2AP_W)
        counters.writes[3] += int(unique_fast(cpos).size)  # an entry in two spans: one write


# -- range: stage2_wp_range -> puds -> pmds -> ptes -------------------------------------------


def protect_range(
    pgt: PageTable,
    base_gfn: int,
    offsets: np.ndarray,
    masks: np.ndarray,
    counters: WalkCounters,
    starts: np.ndarray | None = None,
) -> None:
    """Per word, walk [ffs, fls] top down, one level function after another."""
    g = pgt.geom
    if _span_walk_in_chunks(pgt, base_gfn, offsets, masks, counters):
        return
    rest = _span_walk_in_tables(pgt, base_gfn, offsets, masks, counters)
    if not rest.any():
        return
    offsets, masks = offsets[rest], masks[rest]
    start, end = _spans(base_gfn, offsets, masks, g.page_shift)
    # entry-level loop (stage2_wp_range's pgd loop): every root entry the span touches
    shift = g.level_shift(g.start_level)
    k0, k1 = start >> shift, (end - 1) >> shift
    span = np.repeat(np.arange(start.size), k1 - k0 + 1)
    keys = expand_runs(k0, k1 - k0 + 1)
    pos = keys  # the concatenated entry-level tables are rows 0..n-1
    counters.tables_visited += int((k1 // pgt.E - k0 // pgt.E + 1).sum())
    for level in g.level_range:
        d = pgt.flat[pos]
        counters.reads[level] += int(pos.size)
        leaf_here = D.is_valid(d) & ~D.is_table(d, level)
        _write_protect(pgt, pos[leaf_here], np.full(int(leaf_here.sum()), level), counters)
        if level == 3:
            return
        tab = D.is_table(d, level)
        span, pos, d = span[tab], pos[tab], d[tab]
        child = pgt.table_of(d)
        counters.tables_visited += int(child.size)
        span, pos = _child_entries(pgt, level, pos, child, start[span], end[span], span)


def _child_entries(pgt, level, pos, child, s0, s1, span):
    """Positions of the next level's entries inside each span, under each table entry."""
    size = pgt.geom.level_size(level + 1)
    base = pgt.entry_ipa(pos)
    lo = np.clip((s0 - base) // size, 0, pgt.E)
    hi = np.clip(-(-(s1 - base) // size), 0, pgt.E)
    counts = hi - lo
    return np.repeat(span, counts), expand_runs(child * pgt.E + lo, counts)


# -- visitor: the generic walker ---------------------------------------------------------------

_, _WRPROTECT_BULK = set_clear_visitor(0, D.S2AP_W)


def protect_visitor(
    pgt: PageTable,
    base_gfn: int,
    offsets: np.ndarray,
    masks: np.ndarray,
    counters: WalkCounters,
    starts: np.ndarray | None = None,
) -> None:
    """kvm_pgtable_stage2_wrprotect per word: stage2_update_leaf_attrs(clr=S2AP_W)."""
    if _span_walk_in_chunks(pgt, base_gfn, offsets, masks, counters):
        return
    rest = _span_walk_in_tables(pgt, base_gfn, offsets, masks, counters)
    if not rest.any():
        return
    offsets, masks = offsets[rest], masks[rest]
    start, end = _spans(base_gfn, offsets, masks, pgt.geom.page_shift)
    walk_bulk_spans(pgt, start, end, _WRPROTECT_BULK, counters)


# -- masked-skip: the seed's v6 patch -----------------------------------------------------------


def protect_masked_skip(
    pgt: PageTable,
    base_gfn: int,
    offsets: np.ndarray,
    masks: np.ndarray,
    counters: WalkCounters,
    starts: np.ndarray | None = None,
) -> None:
    """Look the upper levels up only when a set bit lands in another last-level table."""
    g = pgt.geom
    fast = _WordChunks.of(pgt, base_gfn + offsets)
    if fast is not None:
        fast.upper_walks(pgt, counters, fast.new_walks(starts))
        fast.apply(pgt, masks, counters, "mask")
        return
    order = np.argsort(offsets, kind="stable")
    gfn, word = bits_to_offsets(offsets[order], masks[order])
    if not gfn.size:
        return
    gfn = gfn + base_gfn
    ipa = gfn << g.page_shift
    # the last-level table (region) each bit falls in; a new region = an upper-level walk
    region = ipa >> g.level_shift(2)
    walk_here = np.ones(region.shape, dtype=bool)
    walk_here[1:] = region[1:] != region[:-1]
    if starts is not None:  # and so does the first bit of each ioctl
        opens = np.zeros(offsets.size, dtype=bool)
        opens[starts] = True
        walk_here[1:] |= opens[order][word[1:]] & (word[1:] != word[:-1])
    level, pos, desc = pgt.lookup(ipa[walk_here])
    # upper reads: one per level from the start level to where the walk stopped (≤ L2)
    stop = np.minimum(level.astype(np.int64), 2)
    for lv in range(g.start_level, 3):
        counters.reads[lv] += int(np.count_nonzero(stop >= lv))
    counters.tables_visited += int(
        (np.minimum(level, 3).astype(np.int64) - g.start_level + 1).sum()
    )
    # leaf reads: each set bit whose region has a last-level table reads its pte
    has_table = np.repeat(level == 3, np.diff(np.append(np.flatnonzero(walk_here), region.size)))
    table = np.repeat(pos // pgt.E, np.diff(np.append(np.flatnonzero(walk_here), region.size)))
    pte_pos = table * pgt.E + ((ipa >> g.page_shift) & (pgt.E - 1))
    pte_pos = pte_pos[has_table]
    counters.reads[3] += int(pte_pos.size)
    _write_protect(pgt, pte_pos, np.full(pte_pos.size, 3), counters)
    # a walk that stopped on a block write-protects the block (once per walk)
    block = (level < 3) & D.is_valid(desc)
    _write_protect(pgt, pos[block], level[block].astype(np.int64), counters)


# -- rmap: x86's reverse map -----------------------------------------------------------------


def protect_rmap(
    pgt: PageTable,
    base_gfn: int,
    offsets: np.ndarray,
    masks: np.ndarray,
    counters: WalkCounters,
    starts: np.ndarray | None = None,
) -> None:
    """gfn → leaf position from the reverse map; one read per set bit, no walk."""
    if pgt.rmap is None:
        raise RuntimeError("the rmap strategy needs a page table built with rmap=True")
    fast = _WordChunks.of(pgt, base_gfn + offsets)
    if fast is not None:  # the reverse map points into these same chunks
        fast.apply(pgt, masks, counters, "mapped")
        return
    gfn, _ = bits_to_offsets(offsets, masks)
    pos = pgt.rmap_lookup(gfn + base_gfn)
    pos = pos[pos >= 0]
    level = pgt.table_level[pos // pgt.E].astype(np.int64)
    _count_per_level(counters.reads, level)
    _write_protect(pgt, pos, level, counters)


def tables_in_reach(pgt: PageTable, base_gfn: int, offsets: np.ndarray) -> np.ndarray:
    """Every table a strategy may change for these words: the last-level tables under the
    words' 64 pages, and all upper-level tables (few; a block lives in one of them)."""
    gfn = base_gfn + np.asarray(offsets, dtype=np.int64)
    ends = np.concatenate([gfn, gfn + 63])
    region = unique_fast(ends >> pgt.geom.bits_per_level)
    leaf = pgt.last_level_tables(region << pgt.geom.level_shift(2))
    live = pgt.live_tables()
    return np.concatenate([live[pgt.table_level[live] < 3], leaf[leaf >= 0]])


PROTECT: dict[str, Protect] = {
    "range": protect_range,
    "masked-skip": protect_masked_skip,
    "visitor": protect_visitor,
    "rmap": protect_rmap,
}


def run_strategy(
    name: str,
    pgt: PageTable,
    base_gfn: int,
    offsets: np.ndarray,
    masks: np.ndarray,
    starts: np.ndarray | None = None,
) -> ProtectStats:
    """Run one strategy and measure it; counts come from what it gathered (``starts``: see
    ``Protect``)."""
    import time

    masks = np.ascontiguousarray(masks, dtype=U64)
    offsets = np.asarray(offsets, dtype=np.int64)
    stats = ProtectStats(name, words=int(masks.size))
    if masks.size:
        stats.pages = popcount(masks)
        t0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        PROTECT[name](pgt, base_gfn, offsets, masks, stats.counters, starts)
        stats.wall_ns = time.perf_counter_ns() - t0
        stats.cpu_ns = time.thread_time_ns() - c0
    if name == "rmap":
        stats.rmap_bytes = pgt.rmap_bytes()
    return stats

"""One generic page-table walker, in the style of ``kvm_pgtable_walk``.

``walk`` visits entries one at a time with LEAF / TABLE_PRE / TABLE_POST visit points, like the
kernel: the visitor sees a read-only context and returns a new descriptor (or None); the entry
is re-read after a LEAF or TABLE_PRE visit, so a block the visitor split is descended.  It is
for small ranges, the tree view and reference checks.

``walk_bulk`` is the same walk handed to the visitor a whole level at a time as runs of table
rows (``LeafBatch``), so an attribute change over millions of leaves is a few numpy operations.
Both count the same things: descriptor reads and writes per level and table pages visited.  A
read is the walker's first read of an entry (the re-read after a visit hits the cache and is
not counted); a write is a store that changes the entry.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np

from engine.stage2 import descriptor as D
from engine.stage2.pgtable import PageTable
from engine.util.arrays import expand_runs, unique_fast

U64 = np.uint64
_CHUNK_ROWS = 512  # rows per numpy pass: keeps temporaries in cache-sized pieces


class Visit(IntFlag):
    LEAF = 1 << 0
    TABLE_PRE = 1 << 1
    TABLE_POST = 1 << 2


@dataclass
class WalkCounters:
    """What a walk touched: descriptor reads/writes per level and table pages visited."""

    reads: Counter[int] = field(default_factory=Counter)
    writes: Counter[int] = field(default_factory=Counter)
    tables_visited: int = 0

    def add(self, other: WalkCounters) -> None:
        self.reads.update(other.reads)
        self.writes.update(other.writes)
        self.tables_visited += other.tables_visited

    def total_reads(self) -> int:
        return sum(self.reads.values())

    def total_writes(self) -> int:
        return sum(self.writes.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "desc_reads": {f"L{k}": v for k, v in sorted(self.reads.items()) if v},
            "desc_writes": {f"L{k}": v for k, v in sorted(self.writes.items()) if v},
            "tables_visited": self.tables_visited,
        }


@dataclass(frozen=True)
class VisitCtx:
    """What a visitor sees (kvm_pgtable_visit_ctx): read-only; return a value to change it."""

    level: int
    addr: int
    end: int
    table: int
    index: int
    pos: int
    old: int
    visit: Visit


Visitor = Callable[[VisitCtx], "int | None"]


def _check_range(pgt: PageTable, start: int, end: int) -> tuple[int, int]:
    page = pgt.geom.granule
    start, end = start - start % page, -(-end // page) * page
    if start < 0 or end > pgt.geom.ipa_limit or start > end:
        raise ValueError(
            f"range [{start:#x}, {end:#x}) is outside the {pgt.geom.ipa_bits}-bit IPA space"
        )
    return start, end


def walk(
    pgt: PageTable,
    start: int,
    end: int,
    visitor: Visitor,
    flags: Visit = Visit.LEAF,
    counters: WalkCounters | None = None,
) -> WalkCounters:
    """Visit every entry that maps part of [start, end), depth first, in address order."""
    counters = counters if counters is not None else WalkCounters()
    start, end = _check_range(pgt, start, end)
    g = pgt.geom
    addr = start
    shift = g.level_shift(g.start_level)
    while addr < end:
        root_pos = addr >> shift
        table, index = divmod(root_pos, pgt.E)
        counters.tables_visited += 1
        addr = _walk_table(pgt, table, index, g.start_level, addr, end, visitor, flags, counters)
    return counters


def _walk_table(
    pgt: PageTable,
    table: int,
    index: int,
    level: int,
    addr: int,
    end: int,
    visitor: Visitor,
    flags: Visit,
    counters: WalkCounters,
) -> int:
    """Visit entries of one table page from ``index`` on; returns the next address."""
    size = pgt.geom.level_size(level)
    row = pgt.pool[table]
    while index < pgt.E and addr < end:
        old = int(row[index])
        counters.reads[level] += 1
        is_table = level < 3 and bool(D.is_table(np.uint64(old), level))
        visit = Visit.TABLE_PRE if is_table else Visit.LEAF
        if visit & flags:
            _apply(pgt, table, index, level, addr, end, old, visit, visitor, counters)
            row = pgt.pool[table]  # the visitor may have grown the pool
            old = int(row[index])
            is_table = level < 3 and bool(D.is_table(np.uint64(old), level))
        if is_table:
            child = int(pgt.table_of(np.array([old], dtype=U64))[0])
            counters.tables_visited += 1
            child_index = int((addr >> pgt.geom.level_shift(level + 1)) & (pgt.E - 1))
            addr = _walk_table(
                pgt, child, child_index, level + 1, addr, end, visitor, flags, counters
            )
            if flags & Visit.TABLE_POST:
                row = pgt.pool[table]
                cur = int(row[index])
                _apply(
                    pgt, table, index, level, addr, end, cur, Visit.TABLE_POST, visitor, counters
                )
                row = pgt.pool[table]
        else:
            addr = (addr // size + 1) * size
        index += 1
    return addr


def _apply(
    pgt: PageTable,
    table: int,
    index: int,
    level: int,
    addr: int,
    end: int,
    old: int,
    visit: Visit,
    visitor: Visitor,
    counters: WalkCounters,
) -> None:
    new = visitor(VisitCtx(level, addr, end, table, index, table * pgt.E + index, old, visit))
    if new is not None and int(new) != old:
        pgt.pool[table, index] = np.uint64(new)
        counters.writes[level] += 1


# -- bulk form ------------------------------------------------------------------------------


@dataclass
class LeafBatch:
    """The entries of one level inside a walk's range(s), as runs of table rows.

    Item i is entries ``lo[i] .. hi[i]-1`` of table ``tables[i]``, visited for the span
    ``[span_start[i], span_end[i])``.  Items are in walk order; with several spans the same
    entry can appear once per span, as it would be read once per walk.  At levels above the
    last, some entries are tables: ``apply`` never touches those.
    """

    pgt: PageTable
    level: int
    tables: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    span_start: np.ndarray
    span_end: np.ndarray
    counters: WalkCounters

    def __len__(self) -> int:
        return int((self.hi - self.lo).sum())

    def positions(self, items: np.ndarray | None = None) -> np.ndarray:
        """Flat positions of the entries of ``items`` (all by default), in walk order."""
        tables, lo, hi = self.tables, self.lo, self.hi
        if items is not None:
            tables, lo, hi = tables[items], lo[items], hi[items]
        return expand_runs(tables * self.pgt.E + lo, hi - lo)

    def item_of_positions(self) -> np.ndarray:
        """For each entry of ``positions()``, the item it belongs to."""
        return np.repeat(np.arange(self.tables.size), self.hi - self.lo)

    def _full_runs(self, full: np.ndarray) -> Iterator[slice]:
        """Row slices over items that cover whole tables, consecutive tables merged."""
        ids = self.tables[full]
        if not ids.size:
            return
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for run in np.split(ids, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            for c in range(a, b, _CHUNK_ROWS):
                yield slice(c, min(b, c + _CHUNK_ROWS))

    def apply(self, set_bits: int, clr_bits: int) -> int:
        """``(d & ~clr) | set`` on valid leaves; returns (and counts) the entries changed.

        Whole tables are changed in place through row slices (enabling logging on a memslot
        streams through memory); partial runs go through their flat positions.  An entry
        that several spans visit is changed, and counted as written, once.
        """
        E = self.pgt.E
        full = (self.lo == 0) & (self.hi == E)
        whole = self.tables[full]
        if whole.size > 1 and not bool(np.all(whole[1:] > whole[:-1])):
            full = np.zeros_like(full)  # repeated whole tables: take the deduplicating path
        changed = sum(self._apply_rows(rows, set_bits, clr_bits) for rows in self._full_runs(full))
        partial = np.flatnonzero(~full)
        if partial.size:
            pos = unique_fast(self.positions(partial))
            changed += self._apply_positions(pos, set_bits, clr_bits)
        self.counters.writes[self.level] += changed
        return changed

    def _leaf_mask(self, d: np.ndarray) -> np.ndarray:
        want = U64(D.VALID | D.TYPE) if self.level == 3 else U64(D.VALID)
        return (d & U64(D.VALID | D.TYPE)) == want

    def _changes(self, d: np.ndarray, set_bits: int, clr_bits: int) -> np.ndarray:
        if set_bits == 0 and _one_bit_not_type(clr_bits):
            # the common case (write-protect): one bit to clear, two array passes; the probe
            # tells a leaf by VALID and TYPE, so TYPE itself takes the general path
            leaf = (D.VALID | D.TYPE) if self.level == 3 else D.VALID
            probe = U64(D.VALID | D.TYPE | clr_bits)
            return (d & probe) == U64(leaf | clr_bits)
        clr, setb = U64(clr_bits), U64(set_bits)
        return self._leaf_mask(d) & (((d & clr) != 0) | ((d & setb) != setb))

    def _apply_rows(self, rows: slice, set_bits: int, clr_bits: int) -> int:
        view = self.pgt.pool[rows]
        if set_bits == 0 and _is_attribute_bit(clr_bits):
            return self._clear_bit(view, clr_bits)
        changed = self._changes(view, set_bits, clr_bits)
        n = int(np.count_nonzero(changed))
        if n:
            np.copyto(view, (view & ~U64(clr_bits)) | U64(set_bits), where=changed)
        return n

    def _clear_bit(self, view: np.ndarray, clr_bits: int) -> int:
        """Clear one attribute bit (write-protect) on valid leaves: AND, count, XOR.

        Invalid entries are 0 and table descriptors carry no attribute bits, so an entry
        with the bit set is a valid leaf and ``d & bit`` is exactly what changes.
        """
        tmp, _ = scratch(view.shape)
        np.bitwise_and(view, U64(clr_bits), out=tmp)
        n = int(np.count_nonzero(tmp))
        if n:
            np.bitwise_xor(view, tmp, out=view)
        return n

    def _apply_positions(self, pos: np.ndarray, set_bits: int, clr_bits: int) -> int:
        flat = self.pgt.flat
        d = flat[pos]
        changed = self._changes(d, set_bits, clr_bits)
        flat[pos[changed]] = (d[changed] & ~U64(clr_bits)) | U64(set_bits)
        return int(np.count_nonzero(changed))


def _one_bit_not_type(bits: int) -> bool:
    return bits != 0 and bits & (bits - 1) == 0 and bits != D.TYPE


def _is_attribute_bit(bits: int) -> bool:
    """One bit that only leaves carry (not VALID/TYPE, not an output-address bit)."""
    return bits != 0 and bits & (bits - 1) == 0 and not bits & (D.VALID | D.TYPE | D.oa_mask(12))


_SCRATCH = threading.local()


def scratch(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per-thread reused temporaries (a uint64 and a bool array) for passes over table rows:
    allocating megabytes per chunk costs more than the work."""
    cache = getattr(_SCRATCH, "bufs", None)
    if cache is None or len(cache) > 8:
        cache = _SCRATCH.bufs = {}
    bufs = cache.get(shape)
    if bufs is None:
        bufs = cache[shape] = (np.empty(shape, dtype=U64), np.empty(shape, dtype=bool))
    return bufs


BulkVisitor = Callable[[LeafBatch], None]


def leaf_batches(
    pgt: PageTable, start: int, end: int, counters: WalkCounters | None = None
) -> Iterator[LeafBatch]:
    """One walk over [start, end): see ``span_batches``."""
    start, end = _check_range(pgt, start, end)
    yield from span_batches(pgt, np.array([start]), np.array([end]), counters)


def span_batches(
    pgt: PageTable, starts: np.ndarray, ends: np.ndarray, counters: WalkCounters | None = None
) -> Iterator[LeafBatch]:
    """Walk many page-aligned spans at once, one batch per level, top down.

    Each span is walked as if on its own (what a per-word harvest does); entries that are
    tables after the caller has handled a batch are descended, so a split made while handling
    a batch is walked too.
    """
    counters = counters if counters is not None else WalkCounters()
    keep = ends > starts
    starts, ends = np.asarray(starts, np.int64)[keep], np.asarray(ends, np.int64)[keep]
    if not starts.size:
        return
    g, E = pgt.geom, pgt.E
    shift = g.level_shift(g.start_level)
    first, last = starts >> shift, (ends - 1) >> shift
    # items per root table touched by each span (a span rarely crosses a root table)
    r_first, r_last = first // E, last // E
    span = np.repeat(np.arange(starts.size), r_last - r_first + 1)
    roots = expand_runs(r_first, r_last - r_first + 1)
    lo = np.maximum(first[span] - roots * E, 0)
    hi = np.minimum(last[span] - roots * E + 1, E)
    s0, s1 = starts[span], ends[span]
    for level in g.level_range:
        counters.tables_visited += int(roots.size)
        batch = LeafBatch(pgt, level, roots, lo, hi, s0, s1, counters)
        counters.reads[level] += len(batch)
        yield batch
        if level == 3:
            return
        roots, lo, hi, s0, s1 = _descend(batch)
        if not roots.size:
            return


def _descend(batch: LeafBatch) -> tuple[np.ndarray, ...]:
    """Child tables of the batch's table entries, with the index range inside each span."""
    pgt, level = batch.pgt, batch.level
    pos = batch.positions()
    item = batch.item_of_positions()
    desc = pgt.flat[pos]
    tab = D.is_table(desc, level)
    pos, item = pos[tab], item[tab]
    child = pgt.table_of(desc[tab])
    child_size = pgt.geom.level_size(level + 1)
    base = pgt.entry_ipa(pos)
    s0, s1 = batch.span_start[item], batch.span_end[item]
    lo = np.clip((s0 - base) // child_size, 0, pgt.E).astype(np.int64)
    hi = np.clip(-(-(s1 - base) // child_size), 0, pgt.E).astype(np.int64)
    return child, lo, hi, s0, s1


def walk_bulk(
    pgt: PageTable,
    start: int,
    end: int,
    visitor: BulkVisitor,
    counters: WalkCounters | None = None,
) -> WalkCounters:
    """LEAF visits a level at a time: ``visitor(batch)`` for each level's batch."""
    start, end = _check_range(pgt, start, end)
    return walk_bulk_spans(pgt, np.array([start]), np.array([end]), visitor, counters)


def walk_bulk_spans(
    pgt: PageTable,
    starts: np.ndarray,
    ends: np.ndarray,
    visitor: BulkVisitor,
    counters: WalkCounters | None = None,
) -> WalkCounters:
    """``walk_bulk`` over many spans at once (one walk per span, batched per level)."""
    counters = counters if counters is not None else WalkCounters()
    for batch in span_batches(pgt, starts, ends, counters):
        visitor(batch)
    return counters


def set_clear_visitor(set_bits: int, clr_bits: int) -> tuple[Visitor, BulkVisitor]:
    """The same attribute change as a per-entry and a bulk visitor (stage2_attr_walker)."""

    def per_entry(ctx: VisitCtx) -> int | None:
        if not D.is_leaf(np.uint64(ctx.old), ctx.level):
            return None
        return (ctx.old & ~clr_bits) | set_bits

    def bulk(batch: LeafBatch) -> None:
        batch.apply(set_bits, clr_bits)

    return per_entry, bulk


def unmap_range(pgt: PageTable, start: int, size: int) -> int:
    """Remove every mapping in [start, start+size); returns leaves removed.

    Blocks that straddle an edge are split first; tables left empty are freed. A walker
    user, as ``kvm_pgtable_stage2_unmap`` is in ``arch/arm64/kvm/hyp/pgtable.c``: the tables
    module itself never walks.
    """
    end = start + size
    removed = 0
    while True:
        straddling = pgt._straddling_blocks(start, end)
        if not straddling:
            break
        for level, pos in straddling:
            pgt.split_blocks(pos, level)
    touched: list[np.ndarray] = []
    for batch in leaf_batches(pgt, start, end):
        pos = batch.positions()
        # only entries whose whole region is inside the range go; tables that straddle
        # an edge are descended by the walk
        first = pgt.entry_ipa(pos)
        pos = pos[(first >= start) & (first + pgt.geom.level_size(batch.level) <= end)]
        desc = pgt.flat[pos]
        if batch.level < 3:
            tabs = D.is_table(desc, batch.level)
            if tabs.any():
                removed += pgt._free_subtrees(pgt.table_of(desc[tabs]))
                pgt.tlbi["range"] += int(tabs.sum())
        leaves = D.is_leaf(desc, batch.level)
        removed += int(leaves.sum())
        pgt._rmap_clear_positions(pos[leaves], batch.level)
        pgt.flat[pos] = 0
        touched.append(unique_fast(batch.tables))
    if touched:
        pgt._collect_empty(unique_fast(np.concatenate(touched)))
    return removed

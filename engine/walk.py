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

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntFlag

import numpy as np

from engine import descriptor as D
from engine.pgtable import PageTable

U64 = np.uint64
_CHUNK_ROWS = 1024  # rows per numpy pass: keeps temporaries in cache-sized pieces


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
            addr = _walk_table(pgt, child, child_index, level + 1, addr, end, visitor, flags, counters)
            if flags & Visit.TABLE_POST:
                row = pgt.pool[table]
                cur = int(row[index])
                _apply(pgt, table, index, level, addr, end, cur, Visit.TABLE_POST, visitor, counters)
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
    """The entries of one level inside a walk's range, as runs of table rows.

    Entry ``lo[i] .. hi[i]-1`` of table ``tables[i]``; tables are in address order.  At levels
    above the last, some entries are tables: ``apply`` never touches those.
    """

    pgt: PageTable
    level: int
    tables: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    counters: WalkCounters

    def __len__(self) -> int:
        return int((self.hi - self.lo).sum())

    def positions(self) -> np.ndarray:
        """Flat positions of every entry in the batch (expands; fine for upper levels)."""
        counts = self.hi - self.lo
        starts = self.tables * self.pgt.E + self.lo
        offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        return np.repeat(starts, counts) + offsets

    def rows(self) -> Iterator[tuple[slice | np.ndarray, slice]]:
        """(row selector, column slice) pieces covering the batch; contiguous rows as slices."""
        E = self.pgt.E
        full = (self.lo == 0) & (self.hi == E)
        for i in np.flatnonzero(~full):
            t = int(self.tables[i])
            yield slice(t, t + 1), slice(int(self.lo[i]), int(self.hi[i]))
        ids = self.tables[full]
        if not ids.size:
            return
        breaks = np.flatnonzero(np.diff(ids) != 1) + 1
        for run in np.split(ids, breaks):
            a, b = int(run[0]), int(run[-1]) + 1
            for c in range(a, b, _CHUNK_ROWS):
                yield slice(c, min(b, c + _CHUNK_ROWS)), slice(0, E)

    def apply(self, set_bits: int, clr_bits: int) -> int:
        """``(d & ~clr) | set`` on valid leaves; returns (and counts) the entries changed."""
        want = U64(D.VALID | D.TYPE) if self.level == 3 else U64(D.VALID)
        clr, setb = U64(clr_bits), U64(set_bits)
        changed_total = 0
        for rsel, csel in self.rows():
            view = self.pgt.pool[rsel, csel]
            leaf = (view & U64(D.VALID | D.TYPE)) == want
            changed = leaf & (((view & clr) != 0) | ((view & setb) != setb))
            n = int(np.count_nonzero(changed))
            if n:
                new = (view & ~clr) | setb
                np.copyto(view, new, where=changed)
                changed_total += n
        self.counters.writes[self.level] += changed_total
        return changed_total


BulkVisitor = Callable[[LeafBatch], None]


def leaf_batches(
    pgt: PageTable, start: int, end: int, counters: WalkCounters | None = None
) -> Iterator[LeafBatch]:
    """Yield one batch per level, top down; entries that are tables after the caller has seen
    the batch are descended (so a split made while handling a batch is walked)."""
    counters = counters if counters is not None else WalkCounters()
    start, end = _check_range(pgt, start, end)
    if start >= end:
        return
    g, E = pgt.geom, pgt.E
    shift = g.level_shift(g.start_level)
    first, last = start >> shift, (end - 1) >> shift
    roots = np.arange(first // E, last // E + 1, dtype=np.int64)
    lo = np.maximum(first - roots * E, 0)
    hi = np.minimum(last - roots * E + 1, E)
    for level in g.level_range:
        counters.tables_visited += int(roots.size)
        batch = LeafBatch(pgt, level, roots, lo, hi, counters)
        counters.reads[level] += len(batch)
        yield batch
        if level == 3:
            return
        roots, lo, hi = _descend(batch, start, end)
        if not roots.size:
            return


def _descend(batch: LeafBatch, start: int, end: int) -> tuple[np.ndarray, ...]:
    """Child tables of the batch's table entries, with the index range inside [start, end)."""
    pgt, level = batch.pgt, batch.level
    pos = batch.positions()
    desc = pgt.flat[pos]
    tab = D.is_table(desc, level)
    child = pgt.table_of(desc[tab])
    child_size = pgt.geom.level_size(level + 1)
    base = pgt.entry_ipa(pos[tab])
    lo = np.clip((start - base) // child_size, 0, pgt.E).astype(np.int64)
    hi = np.clip(-(-(end - base) // child_size), 0, pgt.E).astype(np.int64)
    return child, lo, hi


def walk_bulk(
    pgt: PageTable,
    start: int,
    end: int,
    visitor: BulkVisitor,
    counters: WalkCounters | None = None,
) -> WalkCounters:
    """LEAF visits a level at a time: ``visitor(batch)`` for each level's batch."""
    counters = counters if counters is not None else WalkCounters()
    for batch in leaf_batches(pgt, start, end, counters):
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

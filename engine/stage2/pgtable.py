"""Stage-2 page tables as a pool of table pages, one numpy ``uint64`` row per table page.

Table descriptors point at table pages by simulated physical address (``POOL_PA_BASE`` + row
× granule), exactly as the hardware walker would follow them; the concatenated entry-level
tables are rows ``0 .. entry_tables-1``, so the start level is one flat array.  Structural
changes (map, unmap, split) work on sorted batches level by level, never per page in Python,
because a single memslot can hold millions of pages.  Tables exist only where something is
mapped, and a table that becomes empty is freed.

TLB maintenance the hardware would need is counted in ``tlbi`` by kind, where the kernel
performs it: a break-before-make of a leaf is a broadcast by-IPA invalidation (``ipa_is``),
of a table a range invalidation (``range``).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.util.arrays import first_of_runs, unique_fast

POOL_PA_BASE = 0xF000_0000_0000
HOST_PA_OFFSET = 0x4000_0000  # the host page backing IPA x sits at PA x + offset (mod 2^48)
RMAP_CHUNK_SHIFT = 18  # gfns per reverse-map chunk: 2^18 (1 GiB of 4K pages)
_GROUPED_LOOKUP = 4096  # sorted lookups larger than this walk each region once
U64 = np.uint64


def host_pa(ipa: np.ndarray) -> np.ndarray:
    """Simulated host physical addresses (uint64) of the pages that back ``ipa`` (int64)."""
    return (ipa.astype(U64) + U64(HOST_PA_OFFSET)) & U64((1 << D.OA_TOP) - 1)


class PageTable:
    """The stage-2 tables of one VM."""

    def __init__(self, geom: Geometry, rmap: bool = False, capacity: int = 64) -> None:
        self.geom = geom
        self.E = geom.entries_per_table
        self.page_shift = geom.page_shift
        self.n_root = geom.entry_tables
        cap = max(capacity, self.n_root + 1)
        self.pool = np.zeros((cap, self.E), dtype=U64)
        self.table_level = np.full(cap, -1, dtype=np.int8)
        self.parent = np.full(cap, -1, dtype=np.int64)
        self.table_ipa = np.zeros(cap, dtype=np.int64)  # IPA where each table's region starts
        self.table_level[: self.n_root] = geom.start_level
        root_span = self.E << geom.level_shift(geom.start_level)
        self.table_ipa[: self.n_root] = np.arange(self.n_root, dtype=np.int64) * root_span
        self._high = self.n_root
        self._free: list[int] = []
        self.tlbi: Counter[str] = Counter()
        self.splits = 0
        self.rmap: dict[int, np.ndarray] | None = {} if rmap else None
        # the last-level table under each level-2 region (ipa >> level_shift(2)), -1 none:
        # kept by _link and _release (every table is linked and freed there), so a lookup
        # whose region has one reads its leaf at once instead of walking every level; the
        # array grows to the highest region linked (none when the start level is the last)
        self._leaf_tables = np.zeros(0, dtype=np.int32)

    # -- pool management -------------------------------------------------------------------

    @property
    def flat(self) -> np.ndarray:
        """All entries as one array; position = table id × entries per table + index."""
        return self.pool.reshape(-1)

    def table_pa(self, table: np.ndarray | int) -> np.ndarray | int:
        if isinstance(table, np.ndarray):
            return U64(POOL_PA_BASE) + (table.astype(U64) << U64(self.page_shift))
        return POOL_PA_BASE + (int(table) << self.page_shift)

    def table_of(self, desc: np.ndarray) -> np.ndarray:
        """Table id a table descriptor points at."""
        pa = D.output_address(desc, self.page_shift)
        return ((pa - U64(POOL_PA_BASE)) >> U64(self.page_shift)).astype(np.int64)

    def reserve(self, n: int) -> None:
        """Make room for ``n`` more tables with at most one reallocation."""
        need = self._high + max(0, n - len(self._free))
        cap = self.pool.shape[0]
        if need <= cap:
            return
        new_cap = max(need, cap + cap // 2)
        pool = np.zeros((new_cap, self.E), dtype=U64)
        pool[:cap] = self.pool
        self.pool = pool
        self.table_level = np.concatenate([self.table_level, np.full(new_cap - cap, -1, np.int8)])
        self.parent = np.concatenate([self.parent, np.full(new_cap - cap, -1, np.int64)])
        self.table_ipa = np.concatenate([self.table_ipa, np.zeros(new_cap - cap, np.int64)])

    def _alloc(self, n: int, level: int) -> np.ndarray:
        self.reserve(n)
        take = min(n, len(self._free))
        reused = np.array(self._free[len(self._free) - take :], dtype=np.int64)
        del self._free[len(self._free) - take :]
        fresh = np.arange(self._high, self._high + n - take, dtype=np.int64)
        self._high += n - take
        ids = np.concatenate([reused[::-1], fresh])
        self.table_level[ids] = level
        return ids

    def _release(self, ids: np.ndarray) -> None:
        self._forget_leaf_tables(ids)
        self.pool[ids] = 0
        self.table_level[ids] = -1
        self.parent[ids] = -1
        self._free.extend(int(i) for i in ids)

    def live_tables(self, level: int | None = None) -> np.ndarray:
        levels = self.table_level[: self._high]
        if level is None:
            return np.flatnonzero(levels >= 0)
        return np.flatnonzero(levels == level)

    # -- lookups -----------------------------------------------------------------------------

    def entry_index(self, ipa: np.ndarray, level: int) -> np.ndarray:
        return (ipa >> self.geom.level_shift(level)) & (self.E - 1)

    def root_position(self, ipa: np.ndarray) -> np.ndarray:
        """Flat position in the concatenated entry-level tables (rows 0..n_root-1)."""
        return ipa >> self.geom.level_shift(self.geom.start_level)

    def lookup(
        self, ipa: np.ndarray | int, ascending: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Walk each IPA: the level where the walk stopped, the flat position and descriptor.

        Returns three arrays of ``ipa``'s shape: level (int8, 0-3), flat position in the
        table pool (int64) and descriptor (uint64). The descriptor is a leaf (page or block)
        or invalid (the level that faults).
        ``ascending``: the caller knows the IPAs are sorted (not checked again).
        """
        ipa = np.atleast_1d(np.asarray(ipa, dtype=np.int64))
        hit, pos = self._mapped_leaves(ipa)
        if hit is None or hit.all():  # (every region has its last-level table: no walk)
            return np.full(ipa.shape, 3, dtype=np.int8), pos, self.flat[pos]
        if hit.any():  # the rest is walked
            miss = np.flatnonzero(~hit)
            lv_m, pos_m, _ = self._lookup_walk(ipa[miss], ascending)
            level = np.full(ipa.shape, 3, dtype=np.int8)
            level[miss] = lv_m
            pos[miss] = pos_m
            return level, pos, self.flat[pos]
        return self._lookup_walk(ipa, ascending)

    def _lookup_walk(
        self, ipa: np.ndarray, ascending: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``lookup`` by walking the levels (grouped by region when sorted and many)."""
        if ipa.size > _GROUPED_LOOKUP and (ascending or bool(np.all(ipa[1:] >= ipa[:-1]))):
            return self._lookup_grouped(ipa)
        return self._lookup_direct(ipa)

    def _lookup_direct(self, ipa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flat = self.flat
        level = np.full(ipa.shape, self.geom.start_level, dtype=np.int8)
        pos = self.root_position(ipa)
        desc = flat[pos]
        active = None  # None: every walk still going (no index arrays needed)
        for lv in range(self.geom.start_level, 3):
            sub = desc if active is None else desc[active]
            go = D.is_table(sub, lv)
            if active is None and go.all():
                pos = self.table_of(desc) * self.E + self.entry_index(ipa, lv + 1)
                desc = flat[pos]
                level[:] = lv + 1
                continue
            active = np.flatnonzero(go) if active is None else active[go]
            if not active.size:
                break
            child = self.table_of(sub[go])
            pos[active] = child * self.E + self.entry_index(ipa[active], lv + 1)
            desc[active] = flat[pos[active]]
            level[active] = lv + 1
        return level, pos, desc

    def _lookup_grouped(self, ipa: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted IPAs: walk once per level-2 region and repeat the result over its IPAs.

        Only regions without a last-level table are walked (``lookup`` reads the others from
        the region map, which holds every last-level table), so each walk stops at level 2 or
        above, on a block or an invalid entry, and every IPA of a region shares it."""
        region = ipa >> self.geom.level_shift(2)
        starts = np.flatnonzero(first_of_runs(region))
        if starts.size * 4 > ipa.size:  # too few IPAs per region to be worth grouping
            return self._lookup_direct(ipa)
        counts = np.diff(np.append(starts, ipa.size))
        level, pos, desc = self._lookup_direct(ipa[starts])
        return np.repeat(level, counts), np.repeat(pos, counts), np.repeat(desc, counts)

    def last_level_tables(self, ipa: np.ndarray) -> np.ndarray:
        """The last-level table under each level-2 region start, in any order (-1: none),
        from the region map (KVM's stage 2 has at least two levels, so level 2 exists:
        ``Geometry.levels``)."""
        hit, pos = self._mapped_leaves(ipa)
        pos >>= self.geom.bits_per_level
        return pos if hit is None else np.where(hit, pos, -1)

    def entry_ipa(self, pos: np.ndarray | int) -> np.ndarray | int:
        """IPA where the region mapped by the entry at flat position ``pos`` starts."""
        bits = self.geom.bits_per_level  # E is a power of two: no division
        table, index = pos >> bits, pos & (self.E - 1)
        shift = self.geom.level_shift_array[self.table_level[table]]
        return self.table_ipa[table] + (index << shift)

    def _link(self, parent_pos: np.ndarray, child: np.ndarray) -> None:
        """Point the entries at ``parent_pos`` to the tables ``child`` (a table descriptor)."""
        self.flat[parent_pos] = D.make_table(self.table_pa(child), self.page_shift)
        self.parent[child] = parent_pos
        self.table_ipa[child] = self.entry_ipa(parent_pos)
        self._note_leaf_tables(child)

    def _note_leaf_tables(self, tables: np.ndarray) -> None:
        """Record newly linked last-level tables under their level-2 regions."""
        tables = tables[self.table_level[tables] == 3]
        if not tables.size:
            return
        region = self.table_ipa[tables] >> self.geom.level_shift(2)
        top = int(region.max()) + 1
        if top > self._leaf_tables.size:
            grown = np.full(max(top, 2 * self._leaf_tables.size), -1, dtype=np.int32)
            grown[: self._leaf_tables.size] = self._leaf_tables
            self._leaf_tables = grown
        self._leaf_tables[region] = tables

    def _forget_leaf_tables(self, ids: np.ndarray) -> None:
        """Drop freed last-level tables from the region map."""
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[self.table_level[ids] == 3]
        if not ids.size or not self._leaf_tables.size:
            return
        region = self.table_ipa[ids] >> self.geom.level_shift(2)
        inside = region < self._leaf_tables.size
        region, ids = region[inside], ids[inside]
        self._leaf_tables[region[self._leaf_tables[region] == ids]] = -1

    def _mapped_leaves(self, ipa: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
        """(whether each IPA's region has a last-level table, None when every one has, the
        flat position of its entry there) from the region map.  The usual batch lies below
        the map's top and finds a table everywhere: one maximum and one minimum tell, with
        no per-IPA masks (figure 4's lookups)."""
        lt = self._leaf_tables
        region = ipa >> self.geom.level_shift(2)
        if not lt.size or not ipa.size:
            return np.zeros(ipa.shape, dtype=bool), region
        below = int(region.max()) < lt.size
        table = lt[region] if below else lt[np.minimum(region, lt.size - 1)]
        hit = None if below and int(table.min()) >= 0 else (table >= 0) & (region < lt.size)
        pos = table.astype(np.int64)
        pos <<= self.geom.bits_per_level
        pos |= (ipa >> self.geom.level_shift(3)) & (self.E - 1)
        return hit, pos

    # -- map ---------------------------------------------------------------------------------

    def map_range(
        self,
        start: int,
        size: int,
        backing: int | None = None,
        writable: bool = True,
        extra: int = 0,
    ) -> None:
        """Map [start, start+size) to its host pages, with blocks where aligned and allowed.

        ``backing`` is the largest leaf size the backing memory allows (the page size when
        None); anything already mapped in the range is replaced.
        """
        page = self.geom.granule
        backing = backing or page
        self.reserve(self._tables_needed(start, size))
        chunk = self.geom.level_size(max(self.geom.start_level, 1))
        end = start + size
        lo = start
        while lo < end:  # chunk by chunk (bounded temporaries for huge slots)
            hi = min(end, (lo // chunk + 1) * chunk)
            for level, ipas in self._decompose(lo, hi, backing):
                self.map_leaves(ipas, level, writable, extra)
            lo = hi

    def _tables_needed(self, start: int, size: int) -> int:
        """An upper bound on the new tables a mapping of [start, start+size) allocates."""
        g = self.geom
        return sum(
            (start + size - 1) // g.level_size(lv - 1) - start // g.level_size(lv - 1) + 1
            for lv in range(g.start_level + 1, 4)
        )

    def _decompose(self, start: int, end: int, backing: int) -> list[tuple[int, np.ndarray]]:
        """Split a range into sorted leaf IPAs per level: the largest allowed blocks first."""
        levels = [lv for lv in self.geom.block_levels if self.geom.level_size(lv) <= backing]
        pieces: list[tuple[int, np.ndarray]] = []
        self._decompose_into(start, end, sorted(levels) + [3], pieces)
        return pieces

    def _decompose_into(
        self, start: int, end: int, levels: list[int], out: list[tuple[int, np.ndarray]]
    ) -> None:
        if start >= end:
            return
        level, rest = levels[0], levels[1:]
        size = self.geom.level_size(level)
        first = -(-start // size)
        last = end // size
        if not rest:
            out.append((level, np.arange(start // size, -(-end // size), dtype=np.int64) * size))
            return
        if first >= last:
            self._decompose_into(start, end, rest, out)
            return
        self._decompose_into(start, first * size, rest, out)
        out.append((level, np.arange(first, last, dtype=np.int64) * size))
        self._decompose_into(last * size, end, rest, out)

    def map_leaves(
        self, ipas: np.ndarray, level: int, writable: bool = True, extra: int = 0
    ) -> np.ndarray:
        """Install leaves at ``level`` for sorted, aligned, unique IPAs; returns their positions."""
        ipas = np.asarray(ipas, dtype=np.int64)
        if not ipas.size:
            return ipas
        tables = self.tables_for(ipas, level, create=True)
        pos = tables * self.E + self.entry_index(ipas, level)
        old = self.flat[pos]
        if level < 3:
            replaced = D.is_table(old, level)
            if replaced.any():
                self._free_subtrees(self.table_of(old[replaced]))
                self.tlbi["range"] += int(replaced.sum())
        self.flat[pos] = D.make_leaf(host_pa(ipas), level, self.page_shift, writable, extra)
        self._rmap_set(ipas, level, pos)
        return pos

    def tables_for(self, ipas: np.ndarray, level: int, create: bool) -> np.ndarray:
        """Table id at ``level`` holding each sorted IPA's entry, -1 where there is none.

        With ``create``, missing tables are allocated and blocks on the way are split, so the
        entry at ``level`` can be written.  Only the distinct tables are walked.
        """
        g = self.geom
        if level == g.start_level:
            return self.root_position(ipas) // self.E
        # one pass over the IPAs: the distinct entries at level-1 that must point to tables
        parent_keys = ipas >> g.level_shift(level - 1)
        starts = np.flatnonzero(first_of_runs(parent_keys))
        deep = parent_keys[starts]
        keys = self._root_keys(deep, level - 1)
        tables = keys // self.E  # the entry-level tables are consecutive rows
        for lv in range(g.start_level, level):
            pos = tables * self.E + (keys & (self.E - 1))
            child = self._child_tables(pos, lv, create, tables >= 0)
            if lv + 1 == level:
                tables = child
                break
            next_keys = unique_fast(deep >> (g.level_shift(lv + 1) - g.level_shift(level - 1)))
            parent_idx = np.searchsorted(keys, next_keys >> g.bits_per_level)
            keys, tables = next_keys, child[parent_idx]
        counts = np.diff(np.append(starts, ipas.size))
        return np.repeat(tables, counts)

    def _root_keys(self, deep: np.ndarray, deep_level: int) -> np.ndarray:
        """Distinct start-level keys (flat root positions) above the keys at ``deep_level``."""
        g = self.geom
        return unique_fast(deep >> (g.level_shift(g.start_level) - g.level_shift(deep_level)))

    def _child_tables(
        self, pos: np.ndarray, level: int, create: bool, ok: np.ndarray
    ) -> np.ndarray:
        """Table ids the entries at ``pos`` point to; allocate/split with ``create``."""
        desc = np.zeros(pos.shape, dtype=U64)
        desc[ok] = self.flat[pos[ok]]
        if create:
            missing = ok & ~D.is_valid(desc)
            if missing.any():
                new = self._alloc(int(missing.sum()), level + 1)
                self._link(pos[missing], new)
            blocks = ok & D.is_leaf(desc, level)
            if blocks.any():
                self.split_blocks(pos[blocks], level)
            desc[ok] = self.flat[pos[ok]]
        child = np.full(pos.shape, -1, dtype=np.int64)
        is_tab = ok & D.is_table(desc, level)
        child[is_tab] = self.table_of(desc[is_tab])
        return child

    # -- split -------------------------------------------------------------------------------

    def split_blocks(self, pos: np.ndarray, level: int, populate: bool = True) -> np.ndarray:
        """Replace block leaves at ``pos`` by next-level tables (break-before-make).

        With ``populate`` the new table holds leaves with the block's attributes (an eager
        split); without, it is empty and pages fault in lazily, as ``user_mem_abort`` does
        when a write hits a write-protected block.  Each break is one broadcast TLBI.
        """
        pos = np.asarray(pos, dtype=np.int64)
        if not pos.size:
            return pos
        old = self.flat[pos]
        new = self._alloc(pos.size, level + 1)
        if populate:
            child = level + 1
            csize = U64(self.geom.level_size(child))
            attrs = old & ~U64(D.oa_mask(self.page_shift)) & ~U64(D.TYPE)
            if child == 3:
                attrs |= U64(D.TYPE)
            base = D.output_address(old, self.page_shift)
            offsets = np.arange(self.E, dtype=U64) * csize
            self.pool[new] = (base[:, None] + offsets[None, :]) | attrs[:, None]
        self.flat[pos] = 0  # break
        self.tlbi["ipa_is"] += pos.size
        self._link(pos, new)  # make
        self.splits += pos.size
        if self.rmap is not None:
            self._rmap_split(pos, new, level, populate)
        return new

    # -- unmap -------------------------------------------------------------------------------

    def _straddling_blocks(self, start: int, end: int) -> list[tuple[int, np.ndarray]]:
        """The blocks that [start, end) cuts (an edge strictly inside), each once."""
        found: list[tuple[int, np.ndarray]] = []
        for edge in {start, end}:
            if edge <= 0 or edge >= self.geom.ipa_limit:
                continue
            level, pos, desc = self.lookup(np.array([edge]))
            lv = int(level[0])
            seen = any(int(p[0]) == int(pos[0]) for _, p in found)  # both edges in one block
            if lv < 3 and D.is_leaf(desc, lv)[0] and edge % self.geom.level_size(lv) and not seen:
                found.append((lv, pos))
        return found

    def _free_subtrees(self, tables: np.ndarray) -> int:
        """Free tables and everything below them; returns the leaves they held."""
        level_tables = tables
        leaves = 0
        while level_tables.size:
            rows = self.pool[level_tables]
            lv = int(self.table_level[level_tables[0]])
            leaves += int(D.is_leaf(rows, lv).sum())
            self._rmap_clear_rows(level_tables, rows, lv)
            child = rows[D.is_table(rows, lv)] if lv < 3 else rows[:0]
            self._release(level_tables)
            level_tables = self.table_of(child)
        return leaves

    def _collect_empty(self, tables: np.ndarray) -> None:
        """Free non-root tables with no valid entry, then their parents if they empty too."""
        while tables.size:
            tables = tables[(tables >= self.n_root) & (self.table_level[tables] >= 0)]
            empty = tables[~self.pool[tables].any(axis=1)]
            if not empty.size:
                return
            parents = self.parent[empty]
            self._release(empty)
            self.flat[parents] = 0
            self.tlbi["range"] += empty.size
            tables = unique_fast(parents // self.E)

    # -- reverse map (for the rmap strategy) -------------------------------------------------

    def rmap_lookup(self, gfn: np.ndarray) -> np.ndarray:
        """Flat position of the leaf that maps each gfn, -1 where none (no table reads)."""
        out = np.full(gfn.shape, -1, dtype=np.int64)
        assert self.rmap is not None
        chunk = gfn >> RMAP_CHUNK_SHIFT
        for c in unique_fast(chunk):
            arr = self.rmap.get(int(c))
            if arr is not None:
                sel = chunk == c
                out[sel] = arr[gfn[sel] & ((1 << RMAP_CHUNK_SHIFT) - 1)]
        return out

    def rmap_bytes(self) -> int:
        return 0 if self.rmap is None else sum(a.nbytes for a in self.rmap.values())

    def _rmap_write(self, gfn: np.ndarray, value: np.ndarray) -> None:
        assert self.rmap is not None
        mask = (1 << RMAP_CHUNK_SHIFT) - 1
        if gfn.size > 1 and not bool(np.all(gfn[1:] >= gfn[:-1])):
            order = np.argsort(gfn, kind="stable")
            gfn, value = gfn[order], value[order]
        if not gfn.size:
            return
        first_c, last_c = int(gfn[0]) >> RMAP_CHUNK_SHIFT, int(gfn[-1]) >> RMAP_CHUNK_SHIFT
        edges = np.arange(first_c, last_c + 2, dtype=np.int64) << RMAP_CHUNK_SHIFT
        bounds = np.searchsorted(gfn, edges)
        for i, c in enumerate(range(first_c, last_c + 1)):
            lo, hi = int(bounds[i]), int(bounds[i + 1])
            if lo == hi:
                continue
            arr = self.rmap.get(c)
            if arr is None:
                arr = self.rmap[c] = np.full(1 << RMAP_CHUNK_SHIFT, -1, dtype=np.int64)
            arr[gfn[lo:hi] & mask] = value[lo:hi]

    def _rmap_set(self, ipas: np.ndarray, level: int, pos: np.ndarray) -> None:
        if self.rmap is None:
            return
        per = self.geom.level_size(level) >> self.page_shift
        gfn = ((ipas >> self.page_shift)[:, None] + np.arange(per)[None, :]).reshape(-1)
        self._rmap_write(gfn, np.repeat(pos, per))

    def _rmap_split(self, pos: np.ndarray, new: np.ndarray, level: int, populate: bool) -> None:
        ipas = self.entry_ipa(pos)
        per = self.geom.level_size(level) >> self.page_shift
        gfn = ((ipas >> self.page_shift)[:, None] + np.arange(per)[None, :]).reshape(-1)
        if not populate:
            self._rmap_write(gfn, np.full(gfn.shape, -1, dtype=np.int64))
            return
        child_per = per // self.E
        idx = np.arange(per) // child_per
        value = (new[:, None] * self.E + idx[None, :]).reshape(-1)
        self._rmap_write(gfn, value)

    def _rmap_clear_positions(self, pos: np.ndarray, level: int) -> None:
        if self.rmap is None or not pos.size:
            return
        ipas = self.entry_ipa(pos)
        per = self.geom.level_size(level) >> self.page_shift
        gfn = ((ipas >> self.page_shift)[:, None] + np.arange(per)[None, :]).reshape(-1)
        self._rmap_write(gfn, np.full(gfn.size, -1, dtype=np.int64))

    def _rmap_clear_rows(self, tables: np.ndarray, rows: np.ndarray, level: int) -> None:
        if self.rmap is None:
            return
        for t, row in zip(tables, rows, strict=True):
            leaves = np.flatnonzero(D.is_leaf(row, level))
            if leaves.size:
                self._rmap_clear_positions(int(t) * self.E + leaves, level)

    # -- summary -----------------------------------------------------------------------------

    def summary(self) -> dict[str, dict[str, int]]:
        """Tables per level and valid leaves by kind and level (``L3_page``, ``L2_block``)."""
        tables: dict[str, int] = {}
        leaves: dict[str, int] = {}
        for lv in self.geom.level_range:
            ids = self.live_tables(lv)
            if ids.size:
                tables[f"L{lv}"] = int(ids.size)
            count = 0
            for lo in range(0, ids.size, 4096):
                count += int(D.is_leaf(self.pool[ids[lo : lo + 4096]], lv).sum())
            if count:
                leaves[f"L{lv}_{'page' if lv == 3 else 'block'}"] = count
        return {"tables_per_level": tables, "leaves": leaves}

    def copy(self) -> PageTable:
        """A scratch copy (for running other strategies on the same input)."""
        other = PageTable.__new__(PageTable)
        other.__dict__.update(self.__dict__)
        other.pool = self.pool.copy()
        other.table_level = self.table_level.copy()
        other.parent = self.parent.copy()
        other.table_ipa = self.table_ipa.copy()
        other._free = list(self._free)
        other.tlbi = Counter(self.tlbi)
        other.rmap = None if self.rmap is None else {k: v.copy() for k, v in self.rmap.items()}
        other._leaf_tables = self._leaf_tables.copy()
        return other

"""Dirty bitmaps with KVM's GET/CLEAR semantics, the ring harvest, and DBM's scan.

The bitmap layout is KVM's: bit i of little-endian 64-bit words is page ``base_gfn + i``
(``set_bit_le``).  KVM_GET_DIRTY_LOG swaps each non-zero word with zero and re-protects what
it held with the VM's write-protect strategy, then flushes once
(``kvm_get_dirty_log_protect``).  With manual protect, GET only copies and
KVM_CLEAR_DIRTY_LOG re-protects the bits it really cleared, 64 pages at a time.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from engine.kvm import oplog as OL
from engine.kvm.dirtyring import merge_masks
from engine.kvm.memslots import KVM_USER_MEM_SLOTS
from engine.kvm.wrprotect import STRATEGIES, ProtectStats, fls64, run_strategy, tables_in_reach
from engine.stage2 import descriptor as D
from engine.stage2.walk import (
    WalkCounters,
    leaf_batches,
    scratch,
    set_clear_visitor,
    walk_bulk,
)
from engine.util.arrays import expand_runs, first_of_runs, popcount, unique_fast
from engine.util.errors import KvmError
from engine.util.scatter import DENSE_SPAN

U64 = np.uint64
_, _WRPROTECT = set_clear_visitor(0, D.S2AP_W)
_MAKE_CLEAN = set_clear_visitor(D.DBM, D.S2AP_W)[1]


@dataclass
class OpStats:
    """One tracking operation (enable, GET, CLEAR, ring reset, DBM scan): what it cost."""

    name: str
    counters: WalkCounters = field(default_factory=WalkCounters)
    tlbi: Counter[str] = field(default_factory=Counter)
    words: int = 0
    pages: int = 0
    splits: int = 0
    wall_ns: int = 0
    strategies: dict[str, ProtectStats] = field(default_factory=dict)

    def model_ns(self, costs) -> float:
        return (
            costs.walk_ns(
                self.counters.total_reads(), self.counters.total_writes(), self.tlbi, self.words
            )
            + self.splits * costs.split_block
        )

    def add(self, other: OpStats) -> None:
        self.counters.add(other.counters)
        self.tlbi.update(other.tlbi)
        self.words += other.words
        self.pages += other.pages
        self.splits += other.splits
        self.wall_ns += other.wall_ns
        for st in other.strategies.values():
            self.add_strategy(st)

    def add_strategy(self, st: ProtectStats) -> None:
        """Add one strategy's stats to its record here: an operation that protects several
        times (a ring reset, once per slot) did the sum of them.  The reverse map's bytes
        are a size, not a count: the larger stays."""
        mine = self.strategies.setdefault(st.strategy, ProtectStats(st.strategy))
        mine.counters.add(st.counters)
        mine.words += st.words
        mine.pages += st.pages
        mine.wall_ns += st.wall_ns
        mine.cpu_ns += st.cpu_ns
        mine.rmap_bytes = max(mine.rmap_bytes, st.rmap_bytes)


class _Measure:
    """Collects the TLBIs and splits the page table records during an operation."""

    def __init__(self, vm, op: OpStats) -> None:
        self.vm, self.op = vm, op

    def __enter__(self) -> OpStats:
        self.tlbi0 = Counter(self.vm.pgt.tlbi)
        self.splits0 = self.vm.pgt.splits
        self.t0 = time.perf_counter_ns()
        return self.op

    def __exit__(self, *exc) -> None:
        self.op.wall_ns += time.perf_counter_ns() - self.t0
        self.op.tlbi.update(self.vm.pgt.tlbi - self.tlbi0)
        self.op.splits += self.vm.pgt.splits - self.splits0
        self.vm.op_log.append(self.op)


def set_all(words: np.ndarray, npages: int) -> None:
    """Every page of a KVM-layout bitmap dirty (and no bit past the last page)."""
    words[:] = ~U64(0)
    if npages % 64:
        words[-1] = U64((1 << (npages % 64)) - 1)


def _flush_slot(vm, times: int = 1) -> None:
    """kvm_flush_remote_tlbs_memslot: one range invalidation over the slot (per ioctl)."""
    vm.pgt.tlbi["range"] += times


# -- enable / disable -----------------------------------------------------------------------


def enable_logging(vm, st) -> OpStats:
    """KVM_MEM_LOG_DIRTY_PAGES on: allocate the bitmap, then protect (or set every bit)."""
    s = st.slot
    st.bitmap = np.zeros(st.nwords, dtype=U64)
    st.logging = True
    with _Measure(vm, OpStats("enable")) as op:
        if vm.tracking.manual and vm.tracking.initially_set:
            set_all(
                st.bitmap, st.slot.npages
            )  # nothing protected: CLEAR protects (and splits) as it goes
            return op
        if vm.tracking.mode == "dbm":
            _split_slot(vm, s)  # DBM tracks at leaf granularity: no blocks while logging
            walk_bulk(vm.pgt, s.base, s.end, _MAKE_CLEAN, op.counters)
        else:
            walk_bulk(vm.pgt, s.base, s.end, _WRPROTECT, op.counters)  # kvm_mmu_wp_memory_region
            if vm.tracking.eager_split:
                _split_slot(vm, s)  # kvm_mmu_split_memory_region
        _flush_slot(vm)
    return op


def _split_slot(vm, s, start: int | None = None, end: int | None = None) -> None:
    """Split every block leaf in [start, end) of a slot down to pages (eager split).

    One walk does it: ``span_batches`` descends a level's table entries only after the
    batch was handled, so the tables its splits made (filled with next-level blocks, or
    pages) are walked at the next level, down to the pages' level, which holds no block."""
    start = s.base if start is None else start
    end = s.end if end is None else end
    for batch in leaf_batches(vm.pgt, start, end):
        if batch.level == 3:
            return
        pos = batch.positions()
        blocks = pos[D.is_leaf(vm.pgt.flat[pos], batch.level)]
        if blocks.size:
            vm.pgt.split_blocks(unique_fast(blocks), batch.level, populate=True)


def disable_logging(vm, st) -> None:
    """Logging off: the bitmap goes; blocks come back lazily through later faults."""
    st.logging = False
    st.bitmap = None
    if vm.tracking.mode == "dbm":
        s = st.slot
        walk_bulk(vm.pgt, s.base, s.end, set_clear_visitor(0, D.DBM)[1])


# -- GET / CLEAR -----------------------------------------------------------------------------


def _slot_with_bitmap(vm, slot_id: int, ioctl: str):
    """The slot state an ioctl names, with KVM's errnos: EINVAL for an id at or above
    KVM_USER_MEM_SLOTS, ENOENT for no such slot or a slot without a dirty bitmap
    (``kvm_get_dirty_log_protect`` / ``kvm_clear_dirty_log_protect``, v6.17)."""
    if not 0 <= slot_id < KVM_USER_MEM_SLOTS:
        raise KvmError("EINVAL", "slot", f"{ioctl}: slot {slot_id} is not 0..32766")
    st = vm.slots.get(slot_id)
    if st is None or st.bitmap is None:
        why = "there is no such memslot" if st is None else "dirty logging is not enabled"
        raise KvmError("ENOENT", "slot", f"{ioctl} on slot {slot_id}: {why}")
    return st


def get_dirty_log(vm, slot_id: int) -> tuple[np.ndarray, OpStats]:
    """KVM_GET_DIRTY_LOG: the slot's dirty words (a copy) and what producing them cost."""
    snapshot, op = _get_dirty_log(vm, slot_id)
    if vm.oplog is not None:
        vm.oplog.append(OL.GetLog(slot_id, OL.frozen(snapshot), op.model_ns(vm.costs)))
    return snapshot, op


def _get_dirty_log(vm, slot_id: int) -> tuple[np.ndarray, OpStats]:
    st = _slot_with_bitmap(vm, slot_id, "KVM_GET_DIRTY_LOG")
    bitmap = st.bitmap
    if vm.tracking.mode == "dbm":
        scan_dbm(vm, st)
    with _Measure(vm, OpStats("get")) as op:
        op.words = st.nwords
        if vm.tracking.manual:
            return bitmap.copy(), op
        nz = np.flatnonzero(bitmap)
        masks = bitmap[nz]
        bitmap[nz] = 0  # xchg(&bitmap[i], 0)
        snapshot = np.zeros_like(bitmap)
        snapshot[nz] = masks
        op.pages = popcount(masks)
        if vm.tracking.mode != "dbm" and nz.size:
            protect(vm, st, nz * 64, masks, op)
            _flush_slot(vm)
    return snapshot, op


def clear_dirty_log(vm, slot_id: int, first_page: int, num_pages: int, mask: np.ndarray) -> OpStats:
    """KVM_CLEAR_DIRTY_LOG: clear ``mask`` bits from ``first_page``; re-protect what was set."""
    return clear_dirty_log_many(vm, slot_id, [(first_page, num_pages, mask)])


def clear_dirty_log_many(vm, slot_id: int, calls) -> OpStats:
    """Several KVM_CLEAR_DIRTY_LOG ioctls on one slot, given as (first_page, num_pages, mask),
    applied together: each is checked, clears its bits, re-protects and flushes as its own
    ioctl would (masked-skip's cached walk does not carry from one into the next), but the
    re-protection runs once over all their words.  QEMU clears a 256 KiB chunk before it
    sends a page of it, so a sparse round makes hundreds of these calls per tick.

    The returned OpStats is the sum of the ioctls'.
    """
    op = _clear_dirty_log_many(vm, slot_id, calls)
    if vm.oplog is not None and calls:
        logged = tuple((int(f), int(n), OL.frozen(m, np.uint64)) for f, n, m in calls)
        vm.oplog.append(OL.ClearLog(slot_id, logged, op.model_ns(vm.costs)))
    return op


def _clear_dirty_log_many(vm, slot_id: int, calls) -> OpStats:
    for first, _, _ in calls:
        _check_first_page(slot_id, first)
    st = _slot_with_bitmap(vm, slot_id, "KVM_CLEAR_DIRTY_LOG")
    bitmap = st.bitmap
    calls = [(first, num, _check_clear(st, first, num, mask)) for first, num, mask in calls]
    if not calls:
        return OpStats("clear")
    w0 = np.array([first // 64 for first, _, _ in calls], dtype=np.int64)
    nw = np.array([mask.size for _, _, mask in calls], dtype=np.int64)
    apart = bool(np.all(w0[1:] >= w0[:-1] + nw[:-1]))  # in order, no word cleared twice
    if apart and not (vm.tracking.initially_set and vm.tracking.eager_split):
        return _clear_many(vm, st, bitmap, calls, w0, nw)
    op = OpStats("clear")  # one by one: overlapping ranges, or eager splits per ioctl
    for i, call in enumerate(calls):
        op.add(_clear_many(vm, st, bitmap, [call], w0[i : i + 1], nw[i : i + 1]))
    return op


def _check_first_page(slot_id: int, first_page: int) -> None:
    """CLEAR checks ``first_page & 63`` before it looks the slot up (EINVAL before ENOENT)."""
    if not 0 <= slot_id < KVM_USER_MEM_SLOTS:
        raise KvmError("EINVAL", "slot", f"KVM_CLEAR_DIRTY_LOG: slot {slot_id} is not 0..32766")
    if first_page % 64:
        raise KvmError("EINVAL", "first_page", f"must be a multiple of 64, got {first_page}")


def _check_clear(st, first_page: int, num_pages: int, mask) -> np.ndarray:
    """KVM's range checks of one CLEAR (no manual-protect check: KVM has none); returns
    the mask as words."""
    npages = st.slot.npages
    if first_page > npages or num_pages > npages - first_page:
        raise KvmError("EINVAL", "num_pages", f"range goes beyond the slot's {npages} pages")
    if num_pages < npages - first_page and num_pages % 64:
        raise KvmError(
            "EINVAL",
            "num_pages",
            "must be a multiple of 64 unless the range reaches the slot's end",
        )
    return np.asarray(mask, dtype=U64)[: (num_pages + 63) // 64]


def _clear_many(vm, st, bitmap: np.ndarray, calls, w0: np.ndarray, nw: np.ndarray) -> OpStats:
    """The CLEARs ``calls`` (checked, apart) over words [w0, w0 + nw) each, in one pass."""
    with _Measure(vm, OpStats("clear")) as op:
        op.words = sum((num + 63) // 64 for _, num, _ in calls)
        words = expand_runs(w0, nw)
        mask = np.concatenate([m for _, _, m in calls])
        cleared = bitmap[words] & mask  # atomic_long_fetch_andnot
        bitmap[words] &= ~mask
        nz = np.flatnonzero(cleared)
        if not nz.size:
            return op  # nothing was set: no re-protection, no flush
        call = np.repeat(np.arange(len(calls)), nw)[nz]
        starts = np.flatnonzero(first_of_runs(call))  # each ioctl that re-protects flushes
        _flush_slot(vm, int(starts.size))
        offsets, masks = words[nz] * 64, cleared[nz]
        op.pages = popcount(masks)
        protect(vm, st, offsets, masks, op, starts)
        if vm.tracking.initially_set and vm.tracking.eager_split:
            for off, m in zip(offsets, masks, strict=True):
                lo = st.slot.base_gfn + int(off) + (int(m) & -int(m)).bit_length() - 1
                hi = st.slot.base_gfn + int(off) + int(m).bit_length()
                _split_slot(vm, st.slot, lo << vm.page_shift, hi << vm.page_shift)
    return op


def protect(
    vm, st, offsets: np.ndarray, masks: np.ndarray, op: OpStats, starts: np.ndarray | None = None
) -> None:
    """kvm_arch_mmu_enable_log_dirty_pt_masked for many words, with the VM's strategy.

    In compare mode every other strategy runs first on the VM's own tables, and the tables
    within reach of these words are put back after each, so all of them see the same input
    and only the chosen one's changes stay (a copy of the whole pool per strategy cost as
    much as the harvest of a large guest, and as much memory as its tables again).
    """
    base = st.slot.base_gfn
    if vm.tracking.compare:
        rows = tables_in_reach(vm.pgt, base, offsets)
        saved = vm.pgt.pool[rows]
        for name in STRATEGIES:
            if name == vm.tracking.strategy or (name == "rmap" and vm.pgt.rmap is None):
                continue  # (compare switched on mid-run: there is no reverse map to use)
            op.add_strategy(run_strategy(name, vm.pgt, base, offsets, masks, starts))
            vm.pgt.pool[rows] = saved
    chosen = run_strategy(vm.tracking.strategy, vm.pgt, base, offsets, masks, starts)
    op.add_strategy(chosen)
    op.counters.add(chosen.counters)


def _word_masks(pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Word index and OR-ed bit mask per distinct word of sorted (or any) page offsets."""
    pages = np.asarray(pages, dtype=np.int64)
    if pages.size > 1 and not bool(np.all(pages[1:] >= pages[:-1])):
        pages = np.sort(pages)
    bits = U64(1) << (pages & 63).astype(U64)
    words = pages >> 6
    if not pages.size:
        return words, bits
    starts = np.flatnonzero(first_of_runs(words))
    return words[starts], np.bitwise_or.reduceat(bits, starts)


_DENSE_MIN_PAGES = 4096  # below this the per-word path is as fast


def _dense_words(pages: np.ndarray) -> tuple[int, np.ndarray] | None:
    """(first word, a mask for every word from it to the last page's) when the pages are
    many and dense in their span: one bool per page of the span, packed, instead of a sort
    (a ring harvest is in ring order) and a reduction per word.  None otherwise."""
    if pages.size < _DENSE_MIN_PAGES:
        return None
    w0, w1 = int(pages.min()) >> 6, int(pages.max()) >> 6
    nbits = (w1 - w0 + 1) * 64
    if nbits > DENSE_SPAN * pages.size:
        return None
    on = np.zeros(nbits, dtype=bool)
    on[pages - w0 * 64] = True
    return w0, np.packbits(on, bitorder="little").view("<u8")


def set_bits(bitmap: np.ndarray, pages: np.ndarray) -> None:
    """set_bit_le for many pages at once (duplicates allowed, any order)."""
    dense = _dense_words(np.asarray(pages, dtype=np.int64))
    if dense is not None:
        w0, m = dense
        bitmap[w0 : w0 + m.size] |= m
        return
    w, m = _word_masks(pages)
    bitmap[w] |= m


def clear_bits(bitmap: np.ndarray, pages: np.ndarray) -> None:
    """clear_bit_le for many pages at once (duplicates allowed, any order)."""
    dense = _dense_words(np.asarray(pages, dtype=np.int64))
    if dense is not None:
        w0, m = dense
        bitmap[w0 : w0 + m.size] &= ~m
        return
    w, m = _word_masks(pages)
    bitmap[w] &= ~m


def bitmap_pages(words: np.ndarray) -> np.ndarray:
    """Slot page offsets of the set bits of a KVM-layout bitmap."""
    bits = np.unpackbits(np.ascontiguousarray(words, dtype="<u8").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits)


_FEW_BITS = 4  # words with at most this many set bits on average are expanded bit by bit


def _bit_offsets(vals: np.ndarray, cum: np.ndarray) -> np.ndarray:
    """Offsets of the set bits of ``vals`` (non-zero uint64 words; ``cum``: the running count
    of their set bits, int64) in the bits they make back to back (bit b of word k is
    64 k + b), increasing (int64).

    Full words (a first pass) give a range; words holding many bits are unpacked, one byte
    per bit.  Words holding a few (a sparse round's bitmap: one or two each) give their
    lowest set bit one round at a time instead: as many rounds as the fullest word has
    bits, each over the words not yet empty; an unpacked word costs 64 bytes to make and to
    search wherever its bits are."""
    total = int(cum[-1])
    if total == 64 * vals.size:
        return np.arange(total, dtype=np.int64)
    if total > _FEW_BITS * vals.size:
        octets = np.ascontiguousarray(vals, dtype="<u8").view(np.uint8)
        return np.flatnonzero(np.unpackbits(octets, bitorder="little"))
    out = np.empty(total, dtype=np.int64)
    at = cum - np.bitwise_count(vals)  # where each word's lowest bit goes
    base = np.arange(vals.size, dtype=np.int64) << 6
    v = vals.copy()
    while True:
        low = v & (~v + U64(1))  # the lowest set bit (two's complement)
        out[at] = base + np.bitwise_count(low - U64(1))
        v ^= low
        left = np.flatnonzero(v)
        if not left.size:
            return out
        v, at, base = v[left], at[left] + 1, base[left]


def next_set_bits(words: np.ndarray, lo: int, hi: int, limit: int) -> np.ndarray:
    """The first ``limit`` set bits (page offsets) in [lo, hi), scanning a chunk at a time.

    Each chunk's non-zero words are counted (popcount) and only as many of them as can hold
    the bits still wanted are expanded (``_bit_offsets``), so a sparse bitmap costs a pass
    over its words, not one byte per bit of every word scanned.
    """
    out: list[np.ndarray] = []
    found = 0
    w = lo // 64
    w_end = (hi + 63) // 64
    chunk = limit // 64 + 2  # enough when the bitmap is dense; grows while it is sparse
    while w < w_end and found < limit:
        block = words[w : min(w + chunk, w_end)]
        nz = np.flatnonzero(block)
        if nz.size:
            vals = block[nz]
            # words enough for the bits wanted, plus one word's worth (bits below lo)
            cum = np.cumsum(np.bitwise_count(vals), dtype=np.int64)
            take = int(np.searchsorted(cum, limit - found + 64)) + 1
            if take < nz.size:
                nz, vals, cum = nz[:take], vals[:take], cum[:take]
            bit = _bit_offsets(vals, cum)
            if int(nz[-1]) - int(nz[0]) + 1 == nz.size:  # no zero word between: one offset
                pages = bit + (w + int(nz[0])) * 64
            else:
                pages = (w + nz[bit >> 6]) * 64 + (bit & 63)
            if pages.size and (pages[0] < lo or pages[-1] >= hi):
                pages = pages[(pages >= lo) & (pages < hi)]
            out.append(pages[: limit - found])
            found += min(pages.size, limit - found)
        w += chunk
        chunk = min(chunk * 8, 1 << 16)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# -- hardware dirty state (DBM) ----------------------------------------------------------------


def scan_dbm(vm, st) -> OpStats:
    """Harvest hardware dirty state: read every leaf of the slot, log and clean dirty ones.

    A dirty leaf is a valid page (or block) with DBM and S2AP W both set (the hardware set W
    on the first write); cleaning clears W.  Every leaf of the slot counts as read, as a scan
    reads them all.  Whole last-level tables are tested in place a few hundred rows at a time;
    where consecutive tables map consecutive pages from a bitmap word's first page (a slot
    mapped in order) they are also cleaned in place and their bits packed straight into the
    bitmap (``_clean_rows``), otherwise their dirty entries' positions are gathered
    (``_dirty_in_rows``), as are partial tables' and blocks'.  The same pages come out as
    from the per-entry test (pinned by tests/test_dbm_scan.py).
    """
    s = st.slot
    with _Measure(vm, OpStats("dbm-scan")) as op:
        dirty_pages: list[np.ndarray] = []
        cleaned = 0  # dirty pages cleaned in place, their bits already set
        for batch in leaf_batches(vm.pgt, s.base, s.end, op.counters):
            done, p = _dirty_leaves(vm, st, batch)
            cleaned += done
            if done or p.size:
                op.counters.writes[batch.level] += done + int(p.size)
            if p.size:
                vm.pgt.flat[p] &= ~U64(D.S2AP_W)
                first = vm.pgt.entry_ipa(p) >> vm.page_shift
                if batch.level == 3:  # a page of the walked range: inside the slot
                    dirty_pages.append(first - s.base_gfn)
                    continue
                per = vm.geom.level_size(batch.level) >> vm.page_shift
                gfn = (first[:, None] + np.arange(per)[None, :]).reshape(-1)
                dirty_pages.append(gfn[(gfn >= s.base_gfn) & (gfn < s.end_gfn)] - s.base_gfn)
        if dirty_pages or cleaned:
            rel = np.concatenate(dirty_pages) if dirty_pages else np.zeros(0, np.int64)
            set_bits(st.bitmap, rel)
            op.pages = int(rel.size) + cleaned
            _flush_slot(vm)
    return op


_DBM_DIRTY = D.VALID | D.TYPE | D.S2AP_W | D.DBM  # a dirty page at L3: all four set


def _dirty_leaves(vm, st, batch) -> tuple[int, np.ndarray]:
    """The batch's dirty leaves (valid, DBM and W set): how many were cleaned in place with
    their bits set (``_clean_rows``), and the distinct flat positions of the others."""
    pgt = vm.pgt
    E = pgt.E
    full = (batch.lo == 0) & (batch.hi == E)
    whole = batch.tables[full] if batch.level == 3 else batch.tables[:0]
    if whole.size > 1 and not bool(np.all(whole[1:] > whole[:-1])):
        whole, full = whole[:0], np.zeros_like(full)  # repeated tables: the general path
    found = [np.zeros(0, np.int64)]
    cleaned = 0
    for run in _row_runs(whole):
        first = _first_page(vm, st, run)
        if first is None:
            found.append(_dirty_in_rows(pgt, run))
        else:
            cleaned += _clean_rows(pgt, run, st.bitmap, first)
    rest = np.flatnonzero(~full) if whole.size else None
    if rest is None or rest.size:
        pos = batch.positions(rest)
        d = pgt.flat[pos]
        want = U64(D.VALID | D.TYPE) if batch.level == 3 else U64(D.VALID)
        dirty = ((d & U64(D.VALID | D.TYPE)) == want) & D.is_writable(d) & ((d & U64(D.DBM)) != 0)
        found.append(unique_fast(pos[dirty]))
    return cleaned, np.concatenate(found)


def _row_runs(tables: np.ndarray) -> list[slice]:
    """Ascending table ids as slices of consecutive ids, at most 512 rows each."""
    if not tables.size:
        return []
    breaks = np.flatnonzero(np.diff(tables) != 1) + 1
    lo = np.concatenate([[0], breaks]).tolist()
    hi = np.concatenate([breaks, [tables.size]]).tolist()
    out = []
    for a, b in zip(lo, hi, strict=True):
        t0, t1 = int(tables[a]), int(tables[b - 1]) + 1
        out += [slice(c, min(t1, c + 512)) for c in range(t0, t1, 512)]
    return out


def _first_page(vm, st, rows: slice) -> int | None:
    """The slot page mapped by the first entry of whole last-level tables ``rows`` when the
    tables map consecutive pages (E each) and it begins a bitmap word; else None."""
    ipa = vm.pgt.table_ipa[rows]
    if ipa.size > 1 and bool(np.any(np.diff(ipa) != vm.pgt.E << vm.page_shift)):
        return None
    first = (int(ipa[0]) >> vm.page_shift) - st.slot.base_gfn
    return first if first % 64 == 0 else None


def _dirty_tables(pgt, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """Whole last-level tables ``rows`` of the pool (a view) and which entries are dirty
    pages (a reused bool buffer of the same shape)."""
    view = pgt.pool[rows]
    tmp, hit = scratch(view.shape)
    np.bitwise_and(view, U64(_DBM_DIRTY), out=tmp)
    np.equal(tmp, U64(_DBM_DIRTY), out=hit)
    return view, hit


def _dirty_in_rows(pgt, rows: slice) -> np.ndarray:
    """Flat positions of the dirty pages in whole last-level tables ``rows`` of the pool."""
    _, hit = _dirty_tables(pgt, rows)
    return np.flatnonzero(hit) + rows.start * pgt.E


def _clean_rows(pgt, rows: slice, bitmap: np.ndarray, first: int) -> int:
    """Clean the dirty pages of whole last-level tables ``rows``, which map slot pages
    ``first`` (a multiple of 64) onwards in order, and set their bits in ``bitmap``: one
    pass over the rows, no positions gathered.  Returns how many were dirty."""
    view, hit = _dirty_tables(pgt, rows)
    n = int(np.count_nonzero(hit))
    if n:
        np.bitwise_and(view, ~U64(D.S2AP_W), out=view, where=hit)
        words = np.packbits(hit, bitorder="little").view("<u8")
        bitmap[first >> 6 : (first >> 6) + words.size] |= words
    return n


# -- dirty ring ---------------------------------------------------------------------------------


def collect_rings(vm) -> tuple[np.ndarray, np.ndarray]:
    """Harvest every vCPU's ring in order: (slot ids, slot page offsets)."""
    parts = [ring.collect() for ring in vm.rings]
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.uint64)
    slots, offsets = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    if vm.oplog is not None:
        vm.oplog.append(OL.RingCollect(OL.frozen(slots), OL.frozen(offsets), vm.awaiting_retry))
    return slots, offsets


def reset_rings(vm) -> OpStats:
    """KVM_RESET_DIRTY_RINGS: merge harvested entries into masks, re-protect, flush once.

    ``kvm_dirty_ring_reset`` / ``kvm_reset_dirty_gfn`` (virt/kvm/dirty_ring.c, v6.17):
    entries are looked up by slot id when they are reset, so a slot that moved is
    protected where it is now, a deleted slot's entries are dropped, and a slot that no
    longer logs is write-protected all the same."""
    op = _reset_rings(vm)
    if vm.oplog is not None:
        vm.oplog.append(OL.RingReset(op.pages, op.model_ns(vm.costs), vm.awaiting_retry))
    return op


def _reset_rings(vm) -> OpStats:
    with _Measure(vm, OpStats("ring-reset")) as op:
        entries = [ring.reset_entries() for ring in vm.rings]
        sizes = np.array([e[1].size for e in entries], dtype=np.int64)
        op.pages += int(sizes.sum())
        if not op.pages:
            return op
        slot_of, offs, masks = merge_masks(  # every ring's loop in one call
            np.concatenate([e[0] for e in entries]),
            np.concatenate([e[1] for e in entries]),
            np.cumsum(sizes) - sizes,
        )
        if bool((slot_of == slot_of[0]).all()):
            order = [int(slot_of[0])]
        else:
            ids, first = np.unique(slot_of, return_index=True)
            order = ids[np.argsort(first)].tolist()  # slots in the order the rings name them
        for slot_id in order:
            st = vm.slots.get(slot_id)
            if st is None:
                continue  # kvm_reset_dirty_gfn: the slot was deleted meanwhile
            # a mask reaching past the slot's end is skipped; a slot that stopped logging
            # is still write-protected (v6.17 checks only the slot and the range)
            o, m = offs, masks  # (the usual reset: every mask in one slot)
            if len(order) > 1:
                sel = slot_of == slot_id
                o, m = offs[sel], masks[sel]
            top = o if bool((m == 1).all()) else o + fls64(m)  # (one-page masks: the page)
            keep = top < st.slot.npages
            op.words += int(np.count_nonzero(keep))
            if not keep.all():
                o, m = o[keep], m[keep]
            if o.size:
                protect(vm, st, o, m, op)
        vm.pgt.tlbi["vmid"] += 1  # kvm_flush_remote_tlbs
    return op


__all__ = [
    "OpStats",
    "bitmap_pages",
    "clear_dirty_log",
    "collect_rings",
    "disable_logging",
    "enable_logging",
    "get_dirty_log",
    "reset_rings",
    "scan_dbm",
]

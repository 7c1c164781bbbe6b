"""DBM harvest (dirtylog.scan_dbm) against a plain per-entry scan of the same leaves.

The fast scan tests whole last-level tables in place and gathers only partial tables; the
reference looks every page of the slot up with the walker and decides one descriptor at a
time.  Both must report the same pages, leave the same descriptors and count the same reads,
writes and flushes, whichever leaves are dirty, clean-writable, plain writable (W without
DBM) or unmapped.  The tests after it put each shortcut of the scan on both sides of its
edge (see the comment there), checking the whole pool, not only the slot's entries.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kvm import dirtylog as DL
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry

G = Geometry(4096, 40)
BASE = 0x40000000
# slot 0 starts 3 pages into a last-level table and ends inside another (partial tables
# at both ends, whole tables between); slot 1 is exactly two tables; slot 2 starts 64 pages
# into a table (its whole tables begin at bitmap word 7: cleaned in place); slot 3 spans
# three tables but its middle 2 MiB is never mapped (consecutive table ids whose pages are
# not consecutive: gathered)
SLOTS = {
    0: (BASE + 3 * 4096, 1500),
    1: (BASE + (64 << 20), 1024),
    2: (BASE + (128 << 20) + 64 * 4096, 1600),
    3: (BASE + (192 << 20), 1536),
}


def _dbm_vm() -> VM:
    vm = VM(G, Tracking("dbm", "range"))
    for sid, (base, npages) in SLOTS.items():
        vm.set_memslot(sid, base, npages * 4096, 0, 4096, populate=sid != 3)
        if sid == 3:
            gfn = (base >> 12) + np.r_[0:512, 1024:1536]
            vm.access(gfn, np.zeros(gfn.size, np.int64), np.ones(gfn.size, bool))
        vm.set_memslot(sid, base, npages * 4096, slot_flags(log_dirty=True), 4096)
    return vm


def _reference_scan(vm: VM, sid: int) -> tuple[set[int], dict[int, int]]:
    """Per page: a valid page with DBM and S2AP W is dirty and loses W (plain loop)."""
    base, npages = SLOTS[sid]
    gfn0 = base >> 12
    _, pos, desc = vm.pgt.lookup((np.arange(npages, dtype=np.int64) + gfn0) << 12)
    dirty, after = set(), {}
    for i in range(npages):
        d = int(desc[i])
        if d & D.VALID and d & D.TYPE and d & D.DBM and d & D.S2AP_W:
            dirty.add(i)
            d &= ~D.S2AP_W
        after[int(pos[i])] = d
    return dirty, after


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dirty=st.sampled_from([0.0, 0.001, 0.3, 1.0]))
def test_scan_dbm_matches_plain_scan(seed, dirty):
    """Each page of both slots: clean, DBM-dirty, W without DBM, or unmapped."""
    vm = _dbm_vm()
    flat = vm.pgt.flat
    rest = (1 - dirty) / 3
    k = np.random.default_rng(seed).choice(4, 5660, p=[rest, dirty, rest, rest])
    at = 0
    for base, npages in SLOTS.values():
        _, pos, _ = vm.pgt.lookup((np.arange(npages, dtype=np.int64) + (base >> 12)) << 12)
        kk = k[at : at + npages]
        at += npages
        flat[pos[kk == 1]] |= np.uint64(D.S2AP_W)
        flat[pos[kk == 2]] = (flat[pos[kk == 2]] | np.uint64(D.S2AP_W)) & ~np.uint64(D.DBM)
        flat[pos[kk == 3]] = 0
    for sid in SLOTS:
        want, after = _reference_scan(vm, sid)
        tlbi = vm.pgt.tlbi["range"]
        op = DL.scan_dbm(vm, vm.slots[sid])
        assert set(DL.bitmap_pages(vm.slots[sid].bitmap).tolist()) == want
        assert op.pages == len(want)
        assert op.counters.writes[3] == len(want)
        assert op.counters.reads[3] == SLOTS[sid][1] - (512 if sid == 3 else 0)  # every leaf
        assert vm.pgt.tlbi["range"] - tlbi == (1 if want else 0)
        got = {p: int(flat[p]) for p in after}
        assert got == after


def test_scan_dbm_after_guest_writes():
    """Guest writes through the write path: the scan reports exactly the written pages."""
    vm = _dbm_vm()
    base, npages = SLOTS[0]
    pages = np.array([0, 1, 508, 509, 510, 1024, 1499])  # both partial tables and a whole one
    gfn = pages + (base >> 12)
    vm.access(gfn, np.zeros(gfn.size, np.int64), np.ones(gfn.size, bool))
    snap, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(snap).tolist() == pages.tolist()
    snap, _ = DL.get_dirty_log(vm, 0)
    assert not snap.any()


# -- every boundary of the fast scan, against a per-page reference over the whole pool -----
#
# The reference below looks every page of the slot up with the walker, one at a time: a page
# is dirty when the leaf mapping it (a page at level 3, a block above) is valid with DBM and
# S2AP W set; that leaf loses W, once, and the page's bit is set.  Nothing else in the pool
# changes, no other bit is set, the scan writes one descriptor per dirty leaf at its level
# and flushes the slot once when anything was dirty.  The layouts below put each shortcut of
# the scan on both sides of its edge: whole last-level tables (all 512 entries in the slot)
# or partial ones, tables mapping consecutive pages from a bitmap word's first page or not,
# table ids consecutive, with a gap, or descending, runs of 512 tables and more, and dirty
# blocks inside the slot or across its first or last page.

GIB, MIB = 1 << 30, 1 << 20
U64 = np.uint64


def _expected_scan(vm: VM, sid: int):
    """What the scan of slot ``sid`` must leave, from a lookup of each page (plain loop): the
    whole pool, the bitmap words, the dirty pages and the descriptor writes per level."""
    st_ = vm.slots[sid]
    s = st_.slot
    gfn = np.arange(s.npages, dtype=np.int64) + s.base_gfn
    level, pos, desc = vm.pgt.lookup(gfn << vm.page_shift)
    words = [int(w) for w in st_.bitmap]
    pages, leaves = 0, {}
    for i in range(s.npages):
        d, lv = int(desc[i]), int(level[i])
        is_leaf = d & D.VALID and (lv < 3 or d & D.TYPE)  # (a page's type bit is set)
        if is_leaf and d & D.DBM and d & D.S2AP_W:
            words[i // 64] |= 1 << (i % 64)
            pages += 1
            leaves[int(pos[i])] = lv
    flat = vm.pgt.flat.copy()
    for p in leaves:
        flat[p] = U64(int(flat[p]) & ~D.S2AP_W)
    writes = {lv: list(leaves.values()).count(lv) for lv in set(leaves.values())}
    return flat, words, pages, writes


def _scan_and_check(vm: VM, sid: int) -> int:
    """Scan slot ``sid`` and compare everything with ``_expected_scan``; the dirty pages."""
    flat, words, pages, writes = _expected_scan(vm, sid)
    tlbi = vm.pgt.tlbi["range"]
    op = DL.scan_dbm(vm, vm.slots[sid])
    assert np.array_equal(vm.pgt.flat, flat)  # every entry of the pool, in the slot or not
    assert [int(w) for w in vm.slots[sid].bitmap] == words
    assert op.pages == pages
    assert {lv: n for lv, n in op.counters.writes.items() if n} == writes
    assert vm.pgt.tlbi["range"] - tlbi == (1 if pages else 0)
    return pages


def _access(vm: VM, gfns, write: bool = True) -> None:
    g = np.asarray(gfns, dtype=np.int64)
    vm.access(g, np.zeros(g.size, np.int64), np.full(g.size, write))


def _logging_slot(vm: VM, sid: int, base: int, npages: int, populate: bool = True) -> int:
    """A slot backed by pages, faulted in (clean: DBM set, W clear) unless not ``populate``,
    then logging; its first gfn."""
    page = vm.geom.granule
    vm.set_memslot(sid, base, npages * page, 0, page, populate=populate)
    vm.set_memslot(sid, base, npages * page, slot_flags(log_dirty=True), page)
    return base >> vm.page_shift


def _edges(npages: int) -> list[int]:
    """Slot pages on both sides of its first 64-page word edges and of page 512, and its
    first and last two pages."""
    near = {0, 1, 62, 63, 64, 65, 127, 128, 510, 511, 512, 513, npages - 1, npages - 2}
    return sorted(p for p in near if 0 <= p < npages)


@pytest.mark.parametrize("offset", [0, 1, 2, 63, 64, 65, 447, 448, 511])
def test_a_slot_starting_anywhere_in_a_table(offset):
    """Slot 0 starts ``offset`` pages into a last-level table and ends as far into another,
    with three whole tables between; slots 1 and 2 fill the rest of its first and last
    table, all dirty.  The whole tables' first page is 512 - offset of the slot's (0 for
    offset 0): a multiple of 64 (cleaned in place) for offsets 0, 64 and 448 only; the others
    are gathered, among them 447 (page 65: a multiple of 65, and 1 mod 64) and 511 (page 1).
    Scanning slot 0 leaves slots 1 and 2 dirty (the entries of its first and last table
    that are theirs, entry 0 among them for offset 1); scanning them then finds every one
    of their pages."""
    vm = VM(G, Tracking("dbm", "range"))
    t0 = (BASE + GIB) >> 12  # a table's first page
    n = 3 * 512 + (512 if offset else 0)
    g0 = _logging_slot(vm, 0, (t0 + offset) << 12, n)
    if offset:
        _logging_slot(vm, 1, t0 << 12, offset)
        _logging_slot(vm, 2, (g0 + n) << 12, 512 - offset)
        _access(vm, np.r_[t0 : t0 + offset, g0 + n : t0 + 5 * 512])
    mid = [p for t in range(4) for p in (t * 512 - offset, t * 512 - offset - 1)]
    _access(vm, g0 + np.unique([p for p in _edges(n) + mid if 0 <= p < n]))
    _access(vm, g0 + np.arange(700, 900), write=False)  # read: clean, W stays clear
    assert _scan_and_check(vm, 0) > 0
    assert _scan_and_check(vm, 0) == 0  # cleaned: nothing dirty left
    if offset:
        assert _scan_and_check(vm, 1) == offset
        assert _scan_and_check(vm, 2) == 512 - offset


def _tables_at(vm: VM, gfn0: int, n: int, per: int = 512) -> list[int]:
    """Ids of the last-level tables mapping the ``n`` regions of ``per`` pages from ``gfn0``."""
    gfn = gfn0 + per * np.arange(n, dtype=np.int64)
    return vm.pgt.last_level_tables(gfn << vm.page_shift).tolist()


def test_tables_allocated_out_of_order_or_with_a_gap():
    """Tables are allocated as the guest first touches their regions.  Slot 0's first two
    whole tables, touched together before slot 1's, get consecutive ids, its third, touched
    after, an id two further (two runs, each cleaned in place: pages 0 and 1024 begin
    bitmap words), with slot 1's table between them; slot 2's whole tables, touched last
    one first, get descending ids (and begin at its page 32: gathered)."""
    vm = VM(G, Tracking("dbm", "range"))
    r = (BASE + GIB) >> 12  # 2 MiB regions from 2 GiB: region k is r + 512 k
    x = _logging_slot(vm, 0, (r + 4 * 512) << 12, 1536, populate=False)
    y = _logging_slot(vm, 1, (r + 10 * 512) << 12, 512, populate=False)
    z = _logging_slot(vm, 2, (r + 12 * 512 - 32) << 12, 1056, populate=False)
    _access(vm, x + np.array([0, 1, 63, 64, 500, 511, 512, 513, 1023]))
    _access(vm, y + np.arange(512))
    _access(vm, x + np.array([1024, 1087, 1088, 1500, 1535]))
    _access(vm, x + np.arange(100, 200), write=False)
    for lo, hi in ((544, 1056), (32, 544), (0, 32)):  # region 13, then 12, then 11
        _access(vm, z + np.array([lo, lo + 1, lo + 63, lo + 64, hi - 1]))
    (x0, x1, x2), (y0,) = _tables_at(vm, x, 3), _tables_at(vm, y, 1)
    assert (x1, y0, x2) == (x0 + 1, x0 + 2, x0 + 3)
    z11, z12, z13 = _tables_at(vm, z, 3)
    assert z13 < z12 < z11
    assert _scan_and_check(vm, 0) == 14
    assert _scan_and_check(vm, 2) == 15
    assert _scan_and_check(vm, 1) == 512


@pytest.mark.parametrize(("offset", "whole"), [(0, 512), (0, 513), (32, 512), (32, 513)])
def test_runs_of_512_whole_tables_and_more(offset, whole):
    """Slot 0's ``whole`` tables have consecutive ids (its neighbours' tables, in both
    1 GiB regions it spans, were allocated first), so they make one run, scanned at most
    512 tables at a time: cleaned in place from the slot's page 0, or gathered from its page
    480 (``offset`` 32: its first and last tables partial).  Dirty pages in the first,
    512th and 513th whole tables and at the slot's edges."""
    vm = VM(G, Tracking("dbm", "range"))
    a = (BASE + GIB) >> 12  # 1 GiB aligned
    n1 = _logging_slot(vm, 1, a << 12, 512)  # region 0 of the first 1 GiB
    n2 = _logging_slot(vm, 2, (a + 512 * 1012) << 12, 512)  # region 500 of the second
    npages = whole * 512 + (512 if offset else 0)
    g0 = _logging_slot(vm, 0, (a + 512 + offset) << 12, npages)
    ids = _tables_at(vm, a + 512 + (512 if offset else 0), whole)
    assert ids == list(range(ids[0], ids[0] + whole))
    first = (512 - offset) % 512  # the whole tables' first page
    dirty = [first + t * 512 + p for t in (0, 1, 510, 511, 512) if t < whole for p in (0, 511)]
    _access(vm, g0 + np.unique(dirty + _edges(npages)))
    _access(vm, np.r_[n1 : n1 + 512, n2 : n2 + 512])
    assert _scan_and_check(vm, 0) == len(set(dirty + _edges(npages)))
    assert _scan_and_check(vm, 1) == _scan_and_check(vm, 2) == 512


def _blocks(vm: VM, gfns, level: int = 2, dirty: bool = True, dbm: bool = True) -> None:
    """Install blocks at ``gfns``: dirty (DBM and W: the hardware set W on a write), clean
    (DBM without W), or writable without DBM.  The VM itself never leaves a block in a
    logging slot (enable splits them, as does a write to one), so these are put in the
    table by hand: the scan's rule covers blocks all the same."""
    ipa = np.asarray(gfns, dtype=np.int64) << 12
    vm.pgt.map_leaves(ipa, level, writable=dirty, extra=D.DBM if dbm else 0)


def test_dirty_blocks_inside_and_across_the_slot_s_edges():
    """Slot 0 is exactly one whole level-2 table (1 GiB): dirty blocks at its first and last
    2 MiB and in the middle, a clean one, one writable without DBM, and a last-level table
    with dirty and clean pages.  Slot 1 starts 100 pages into a dirty block and ends 50 pages
    before the end of another: only its own pages are logged, and both blocks lose W.
    Slot 2 lies inside a dirty 1 GiB block, 1 MiB from both its ends."""
    vm = VM(G, Tracking("dbm", "range"))
    s0 = _logging_slot(vm, 0, 4 * GIB, 262144, populate=False)
    _blocks(vm, s0 + 512 * np.array([0, 300, 511]))
    _blocks(vm, [s0 + 512], dirty=False)
    _blocks(vm, [s0 + 1024], dbm=False)
    _access(vm, s0 + 512 * 5 + np.array([0, 63, 64, 511]))  # pages in a last-level table
    _access(vm, s0 + 512 * 5 + np.arange(100, 110), write=False)
    s1 = _logging_slot(vm, 1, 6 * GIB + 100 * 4096, 1386, populate=False)
    _blocks(vm, [s1 - 100, s1 + 924])
    _blocks(vm, [s1 + 412], dirty=False)
    s2 = _logging_slot(vm, 2, 8 * GIB + MIB, (GIB - 2 * MIB) >> 12, populate=False)
    _blocks(vm, [s2 - (MIB >> 12)], level=1)  # the 1 GiB block at 8 GiB
    assert _scan_and_check(vm, 0) == 3 * 512 + 4
    assert _scan_and_check(vm, 1) == 412 + 1386 - 924
    assert _scan_and_check(vm, 2) == (GIB - 2 * MIB) >> 12
    for sid in (0, 1, 2):
        assert _scan_and_check(vm, sid) == 0


def test_16k_tables_filling_the_pool_to_its_last_row():
    """16 KiB granule, 36-bit IPA: one entry-level table (row 0) of 2048 entries, each
    last-level table 32 bitmap words.  The slot's 63 regions fill the pool's 64 rows
    exactly, in order (rows 1 to 63 map consecutive regions from the slot's first page):
    one run, cleaned in place, ending at the pool's last row."""
    vm = VM(Geometry(16384, 36), Tracking("dbm", "range"))
    region = 2048 * 16384
    g0 = _logging_slot(vm, 0, region, 63 * 2048)
    assert vm.pgt.pool.shape[0] == 64 and vm.pgt.live_tables().tolist() == list(range(64))
    assert _tables_at(vm, g0, 63, 2048) == list(range(1, 64))
    dirty = [t * 2048 + p for t in (0, 1, 31, 62) for p in (0, 63, 64, 2047)]
    _access(vm, g0 + np.array(dirty))
    _access(vm, g0 + np.arange(3000, 3100), write=False)
    assert _scan_and_check(vm, 0) == len(dirty)
    assert _scan_and_check(vm, 0) == 0

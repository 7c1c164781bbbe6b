"""The guest write path against a plain per-access reference: one loop over the accesses in
time order, written from the kernel's rules, not from the engine.

The reference (``_reference``) does for each access what Linux v6.17 does for one guest access:

- arch/arm64/kvm/mmu.c:user_mem_abort: an access to an unmapped page takes a translation
  fault; while the slot logs, a read maps the page read-only (``logging_active &&
  !write_fault``) and a write maps it writable and marks it dirty; a slot that does not log
  maps it writable (4 KiB backing: the page).  A write to a valid read-only page takes a
  permission fault: ``kvm_pgtable_stage2_relax_perms`` sets S2AP W (one TLBI by IPA) and the
  page is marked dirty.  With DBM (the what-if mode) a writable-clean leaf turns dirty with no
  exit and nothing is marked in software.
- virt/kvm/kvm_main.c:mark_page_dirty_in_slot: the entry goes to the running vCPU's ring, or
  (bitmap modes, or no running vCPU: ``kvm_write_guest`` from user space, vCPU -1 here) the
  slot's bitmap; a write with no running vCPU never touches stage 2.
- virt/kvm/dirty_ring.c:kvm_dirty_ring_push / kvm_dirty_ring_check_request: the push that
  brings a ring to its soft limit (size - 64 on arm64) stops that vCPU before its store; the
  store and every later access of that vCPU wait for the reset (deferred); a vCPU already at
  the limit runs nothing and is reported ring-full even without an access.

Hypothesis draws small batches over three slots (mapped and write-protected by logging;
logging and unmapped; not logging and unmapped), up to three vCPUs and the host, pages
written before the batch, and rings a few entries short of their soft limit; the engine's one
batch must leave exactly what the reference's loop leaves.  The tests after it count by hand
what the vm group's mutation run (30 Nov 2026) found unpinned: first writes in a long batch of
two vCPUs, host writes over batches, block maps and read-only slots when not logging, reads
through two blocks before their splits, a block that would pass the slot's end, dirty events
beside a relaxed block, ``slot_of_ipa`` at a slot's edges, the one-writer grouping at 2^32
pages apart.
"""

from __future__ import annotations

from random import Random

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.kvm import dirtylog as DL
from engine.kvm.dirtyring import DirtyRing
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry

G = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12
NPG = 64  # pages per slot
RING = 256  # entries (one 4 KiB page, the least): soft limit 192 (size - 64 reserved)
SOFT = RING - 64
LOGGING = (True, True, False)  # slot 0 mapped then logging; slot 1 logging, unmapped; slot 2 not


def _vm(mode: str, vcpus: int, pre: list[int], used: list[int]) -> VM:
    """The three slots; ``pre``: pages of slot 0 written (by vCPU 0) before the batch; then
    each vCPU's ring holds ``used[v]`` entries (pushed directly: stage 2 is not touched)."""
    vm = VM(G, Tracking(mode, "range", RING), nr_vcpus=vcpus)
    log = slot_flags(log_dirty=True)
    vm.set_memslot(0, BASE, NPG << 12, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, NPG << 12, log, 4096)
    vm.set_memslot(1, BASE + (NPG << 12), NPG << 12, log, 4096)
    vm.set_memslot(2, BASE + (2 * NPG << 12), NPG << 12, 0, 4096)
    if pre:
        g = BGFN + np.array(pre, np.int64)
        vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))
    for s in vm.slots.values():
        if s.bitmap is not None:
            s.bitmap[:] = 0
    if vm.rings:
        vm.rings = [DirtyRing(RING) for _ in range(vcpus)]
        for v, n in enumerate(used):
            vm.rings[v].push(np.full(n, 2, np.uint32), np.arange(n, dtype=np.uint64))
    vm.stats.clear()
    vm.pgt.tlbi.clear()
    return vm


def _reference(mode: str, vcpus: int, pre: list[int], used: list[int], seq):
    """One access at a time.  ``seq``: (vCPU or -1, page 0..3*NPG-1, write) in time order."""
    n = 3 * NPG
    valid = [p < NPG for p in range(n)]
    writable = [p in pre for p in range(n)]
    dbm = [mode == "dbm" and p < NPG for p in range(n)]
    version = [0] * n
    for p in pre:
        version[p] += 1
    out = {
        "faults": [0] * vcpus,
        "dirty_events": [0] * vcpus,
        "rings": [[] for _ in range(vcpus)] if mode == "ring" else [],
        "bitmaps": [set(), set()],
        "deferred": [],
        "ring_full": {v for v in range(vcpus) if mode == "ring" and used[v] >= SOFT},
        "applied": 0,
        "stats": {"translation_faults": 0, "permission_faults": 0, "ring_pushes": 0},
        "tlbi": 0,
        "dbm_dirty": 0,
    }
    fill = list(used)
    stopped = set(out["ring_full"])
    for t, (v, p, w) in enumerate(seq):
        slot, logging = p // NPG, LOGGING[p // NPG]
        if v < 0:  # kvm_write_guest: content and the bitmap (the ring's backup bitmap)
            if w:
                version[p] += 1
                out["applied"] += 1
                if logging:
                    out["bitmaps"][slot].add(p % NPG)
            continue
        if v in stopped:
            out["deferred"].append(t)
            continue
        mark = False
        if not valid[p]:  # translation fault
            out["faults"][v] += 1
            out["stats"]["translation_faults"] += 1
            valid[p] = True
            writable[p] = w or not logging
            dbm[p] = mode == "dbm" and logging
            mark = w and logging
        elif w and not writable[p]:
            writable[p] = True
            if dbm[p]:  # writable-clean → writable-dirty by the hardware: no exit
                out["dbm_dirty"] += 1
            else:  # permission fault: relax S2AP W, one TLBI by IPA
                out["faults"][v] += 1
                out["stats"]["permission_faults"] += 1
                out["tlbi"] += 1
                mark = logging
        if mark and mode != "dbm":
            out["dirty_events"][v] += 1
            if mode == "ring":
                out["rings"][v].append((slot, p % NPG))
                out["stats"]["ring_pushes"] += 1
                fill[v] += 1
                if fill[v] >= SOFT:  # the filling push: the store waits for the reset
                    stopped.add(v)
                    out["ring_full"].add(v)
                    out["deferred"].append(t)
                    continue
            else:
                out["bitmaps"][slot].add(p % NPG)
        if w:
            version[p] += 1
            out["applied"] += 1
    out["versions"] = version
    out["valid"], out["writable"] = valid, writable
    if mode != "ring":
        del out["stats"]["ring_pushes"]
    return out


def _engine(mode: str, vcpus: int, pre: list[int], used: list[int], seq):
    """The same batch, one ``VM.access`` call, in the reference's terms."""
    vm = _vm(mode, vcpus, pre, used)
    gfn = BGFN + np.array([p for _, p, _ in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    write = np.array([w for _, _, w in seq], bool)
    res = vm.access(gfn, vcpu, write)
    pages = BASE + np.arange(3 * NPG, dtype=np.int64) * 4096
    _, _, desc = vm.pgt.lookup(pages)
    rings = []
    for r, n in zip(vm.rings, used, strict=False):
        s, o = r.collect()
        rings.append(list(zip(s.tolist(), o.tolist(), strict=True))[n:])  # the batch's own
    deferred = [] if res.deferred is None else res.deferred.tolist()
    stats = {k: vm.stats[k] for k in ("translation_faults", "permission_faults")}
    if mode == "ring":
        stats["ring_pushes"] = vm.stats["ring_pushes"]
    return {
        "faults": res.faults.tolist(),
        "dirty_events": res.dirty_events.tolist(),
        "rings": rings,
        "bitmaps": [
            set(DL.bitmap_pages(vm.slots[i].bitmap).tolist())
            if vm.slots[i].bitmap is not None
            else set()
            for i in (0, 1)
        ],
        "deferred": deferred,
        "ring_full": set(res.ring_full),
        "applied": res.applied_writes,
        "stats": stats,
        "tlbi": vm.pgt.tlbi["ipa"],
        "dbm_dirty": vm.stats["dbm_dirty"],
        "versions": np.concatenate([vm.slots[i].version for i in (0, 1, 2)]).tolist(),
        "valid": D.is_valid(desc).tolist(),
        "writable": D.is_writable(desc).tolist(),
    }


def _check(mode, vcpus, pre, used, seq):
    want = _reference(mode, vcpus, pre, used, seq)
    got = _engine(mode, vcpus, pre, used, seq)
    for k in want:
        assert got[k] == want[k], k
    return got


@st.composite
def _case(draw, modes=("ring", "bitmap", "dbm")):
    mode = draw(st.sampled_from(modes))
    vcpus = draw(st.integers(1, 3))
    pre = sorted(draw(st.sets(st.integers(0, 7), max_size=4)))
    used = [draw(st.integers(SOFT - 4, SOFT)) for _ in range(vcpus)]
    # few pages, so that pages repeat, and vCPUs read, write and rewrite the same ones
    page = st.sampled_from([0, 1, 2, 3, 5, 8, NPG, NPG + 1, NPG + 2, 2 * NPG, 2 * NPG + 1])
    acc = st.tuples(st.integers(-1, vcpus - 1), page, st.booleans())
    seq = draw(st.lists(acc, min_size=1, max_size=14))
    return mode, vcpus, pre, used, seq


@settings(max_examples=15, deadline=None)
@given(_case())
def test_one_batch_does_what_the_per_access_reference_does(case):
    """Faults per vCPU, dirty events, ring entries in push order, bitmaps, deferred accesses
    and ring-full vCPUs, stored writes, every page's validity and write permission, the
    fault, push and TLBI counts."""
    _check(*case)


def test_reference_example_by_hand():
    """The reference itself on one batch counted by hand (ring mode, one vCPU, 2 entries
    of room): vCPU 0 reads page 64 (translation fault, mapped read-only), writes page 1
    (permission fault, push 1), writes page 1 again (writable: nothing), writes page 64
    (permission fault, push 2: the ring reaches its soft limit, the store waits), then
    reads page 2: held back with the rest.  The host's write of page 3 happens, marked in
    the backup bitmap."""
    seq = [(0, NPG, False), (0, 1, True), (0, 1, True), (-1, 3, True), (0, NPG, True)]
    seq += [(0, 2, False)]
    got = _check("ring", 1, [], [SOFT - 2], seq)
    assert got["faults"] == [3] and got["dirty_events"] == [2]
    assert got["rings"] == [[(0, 1), (1, 0)]]
    assert got["deferred"] == [4, 5] and got["ring_full"] == {0}
    assert got["bitmaps"] == [{3}, set()] and got["applied"] == 3
    assert got["versions"][1] == 2 and got["versions"][NPG] == 0


def test_first_writes_found_in_a_long_batch_of_two_vcpus():
    """Each of 24 write-protected pages written by vCPU 1 and then, later in the batch, by
    vCPU 0, whose ring has room for one entry: every page's first write is vCPU 1's, so
    vCPU 1 pushes 24 entries and vCPU 0 none (the pages are writable when it writes them),
    nothing is deferred and no ring is full.  (A batch this long sorts by a method that is
    not stable unless asked: the earliest write of a page must still be found.)"""
    pages = list(range(8)) + list(range(NPG, NPG + 8)) + list(range(8, 16))
    seq = [(1, p, True) for p in pages] + [(0, p, True) for p in pages]
    got = _check("ring", 2, [], [SOFT - 1, 0], seq)
    assert got["deferred"] == [] and got["ring_full"] == set()
    assert got["rings"][0] == [] and len(got["rings"][1]) == 24
    assert got["faults"] == [0, 24]


def test_host_writes_are_counted_over_batches():
    """vm_stats.host_writes (in a run's result) counts writes with no running vCPU since the
    VM started: 2, then 1 more; a host read and a guest write are not host writes.  Each
    batch's applied writes count its host writes and its guest writes."""
    vm = _vm("bitmap", 1, [], [0])
    g = BGFN + np.array([3, 4, 5, 6], np.int64)
    res = vm.access(g, np.array([-1, -1, -1, 0]), np.array([True, True, False, True]))
    assert vm.stats["host_writes"] == 2 and res.applied_writes == 3
    res = vm.access(g[:1], np.array([-1]), np.array([True]))
    assert vm.stats["host_writes"] == 3 and res.applied_writes == 1


def test_unlogged_faults_map_blocks_read_only_slots_read_only_and_count_block_maps():
    """Not logging, 2 MiB backing: the first access to a block maps the block writable
    (user_mem_abort: vma_pagesize 2 MiB fits the slot), one translation fault counted for
    the vCPU of the earliest access to it (vCPU 1 reads page 10 before vCPU 0 touches 5
    and 20; vCPU 0 writes page 600 of the next block, then reads 601 there).  A read of a
    READONLY slot maps its page without write permission (its pfn is never writable:
    __kvm_faultin_pfn with a read-only memslot, virt/kvm/kvm_main.c, v6.17).
    vm_stats.block_maps counts blocks only, over batches: 2, then 3."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=2)
    vm.set_memslot(0, BASE, 6 << 20, 0, 2 << 20)
    ro = BASE + (8 << 20)
    vm.set_memslot(1, ro, 1 << 20, slot_flags(readonly=True), 4096)
    g = BGFN + np.array([10, 5, 20, 600, 601], np.int64)
    res = vm.access(g, np.array([1, 0, 0, 0, 0]), np.array([False, False, False, True, False]))
    assert res.faults.tolist() == [1, 1] and vm.stats["translation_faults"] == 2
    assert vm.stats["block_maps"] == 2
    level, _, desc = vm.pgt.lookup(BASE + np.array([0, 511, 512, 1023], np.int64) * 4096)
    assert level.tolist() == [2, 2, 2, 2] and D.is_writable(desc).all()
    res = vm.access(np.array([(ro >> 12) + 7], np.int64), np.array([0]), np.array([False]))
    level, _, desc = vm.pgt.lookup(np.array([ro + 7 * 4096], np.int64))
    assert level.tolist() == [3] and D.is_valid(desc).tolist() == [True]
    assert D.is_writable(desc).tolist() == [False] and res.faults.tolist() == [1, 0]
    assert vm.stats["block_maps"] == 2
    vm.access(np.array([BGFN + 1100], np.int64), np.array([0]), np.array([True]))
    assert vm.stats["block_maps"] == 3


def _two_blocks():
    """A 6 MiB logging slot backed by 2 MiB pages: blocks A (pages 0-511) and B (512-1023)
    mapped and write-protected, the third 2 MiB (1024-1535) unmapped."""
    from engine.stage2.walk import unmap_range

    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=2)
    vm.set_memslot(0, BASE, 6 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, BASE, 6 << 20, slot_flags(log_dirty=True), 2 << 20)
    unmap_range(vm.pgt, BASE + (4 << 20), 2 << 20)
    return vm


def test_reads_through_two_blocks_before_their_splits_leave_no_trace():
    """Reads through a write-protected block before the write that splits it are served by
    the block (no fault); after the split the block's pages fault in one by one
    (user_mem_abort, v6.17: a write fault on a read-only block while logging maps one page).
    The exits are counted, not their kind (the engine files a splitting write's permission
    fault with the translation faults).
    In time order: vCPU 0 reads page 512 (B's first page) and 1024 (the first page past B,
    unmapped: a translation fault, mapped read-only), vCPU 1 reads page 0 (A's first),
    vCPU 1 writes 700 (splits B: a permission fault, 700 mapped writable), vCPU 0 writes 5
    (splits A), vCPU 0 reads 513 (B is split: a translation fault), vCPU 1 reads 1 (A is
    split: a translation fault).  Faults: vCPU 0: 1024, 5, 513 = 3; vCPU 1: 700, 1 = 2;
    2 splits; dirty {5, 700}.  One access at a time gives the same."""
    seq = [(0, 512, False), (0, 1024, False), (1, 0, False), (1, 700, True), (0, 5, True)]
    seq += [(0, 513, False), (1, 1, False)]
    gfn = BGFN + np.array([p for _, p, _ in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    write = np.array([w for _, _, w in seq], bool)
    one, each = _two_blocks(), _two_blocks()
    res = one.access(gfn, vcpu, write)
    faults = sum(
        each.access(gfn[i : i + 1], vcpu[i : i + 1], write[i : i + 1]).faults for i in range(7)
    )
    assert res.faults.tolist() == [3, 2] == faults.tolist()
    for vm in (one, each):
        assert vm.stats["block_splits"] == 2
        assert vm.stats["translation_faults"] + vm.stats["permission_faults"] == 5
        assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [5, 700]
        pages = BASE + np.array([0, 1, 5, 512, 513, 700, 1024, 1025], np.int64) * 4096
        level, _, desc = vm.pgt.lookup(pages)
        assert D.is_valid(desc).tolist() == [False, True, True, False, True, True, True, False]
        assert D.is_writable(desc).tolist() == [False, False, True, False, False, True] + [
            False,
            False,
        ]
        assert level[[1, 2, 4, 5, 6]].tolist() == [3] * 5


def test_not_logging_a_block_is_mapped_only_where_it_fits_inside_the_slot():
    """A 3 MiB slot backed by 2 MiB pages, not logging: the first 2 MiB fit a block
    (page 10 maps level 2), the last MiB does not (the block would pass the slot's end:
    user_mem_abort's fault_supports_stage2_huge_mapping refuses it), so page 600 maps a page
    (level 3) and page 601 stays unmapped: two faults, one block map."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    vm.set_memslot(0, BASE, 3 << 20, 0, 2 << 20)
    g = BGFN + np.array([10, 600], np.int64)
    res = vm.access(g, np.zeros(2, np.int64), np.zeros(2, bool))
    level, _, desc = vm.pgt.lookup(BASE + np.array([0, 511, 600, 601], np.int64) * 4096)
    assert level[:3].tolist() == [2, 2, 3] and D.is_valid(desc).tolist() == [True] * 3 + [False]
    assert res.faults.tolist() == [2] and vm.stats["block_maps"] == 1


def test_dirty_events_count_only_the_logging_pages_beside_a_relaxed_block():
    """One batch of vCPU 0: a write to a read-only 2 MiB block of a slot that stopped
    logging (relaxed whole: one permission fault, nothing marked) and a write to a
    write-protected page of a slot still logging (one permission fault, marked).  By hand:
    2 faults, 2 permission faults, 1 dirty event, slot 1's bitmap {5}, the block writable."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    log = slot_flags(log_dirty=True)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, BASE, 2 << 20, log, 2 << 20)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20)  # logging off: the block stays read-only
    vm.set_memslot(1, BASE + (2 << 20), 1 << 20, 0, 4096, populate=True)
    vm.set_memslot(1, BASE + (2 << 20), 1 << 20, log, 4096)
    g = BGFN + np.array([3, 512 + 5], np.int64)
    res = vm.access(g, np.zeros(2, np.int64), np.ones(2, bool))
    assert res.faults.tolist() == [2] and vm.stats["permission_faults"] == 2
    assert res.dirty_events.tolist() == [1]
    assert DL.bitmap_pages(vm.slots[1].bitmap).tolist() == [5]
    level, _, desc = vm.pgt.lookup(np.array([BASE], np.int64))
    assert level.tolist() == [2] and D.is_writable(desc).tolist() == [True]


def test_slot_of_ipa_at_a_slots_edges_and_between_slots():
    """The slot state an IPA falls in (the app's page info): slot 0 from its base to its
    last byte, none in the gap after it or below it, slot 1 from its base."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    vm.set_memslot(1, BASE + (4 << 20), 1 << 20, 0, 4096)
    ids = [
        None if s is None else s.slot.id
        for s in (
            vm.slot_of_ipa(a)
            for a in (BASE - 1, BASE, BASE + (1 << 20) - 1, BASE + (1 << 20), BASE + (4 << 20))
        )
    ]
    assert ids == [None, 0, 0, None, 1]


@pytest.mark.parametrize("span", [(1 << 32) - 1, 1 << 32, (1 << 32) + 1])
def test_one_writers_grouping_at_the_32_bit_offset_boundary(span):
    """One vCPU's writes to pages ``span`` apart (2^32 pages of 4 KiB is 16 TiB, inside a
    48-bit IPA): offsets from the lowest page fit 32 bits only up to 2^32 - 1.  By hand:
    pages [lo, lo + span], written 2 and 1 times, first at accesses 0 and 1."""
    from engine.kvm.vm import _Pages

    lo = 1 << 20
    gfn = np.array([lo, lo + span, lo], np.int64)
    got = _Pages.group(gfn, np.zeros(3, np.int64), np.ones(3, bool), np.zeros(3, np.int64), False)
    assert got.gfn.tolist() == [lo, lo + span] and got.writes.tolist() == [2, 1]
    assert got.t_first.tolist() == [0, 1]


def test_a_write_to_a_writable_page_pushes_nothing_and_does_not_fill_the_ring():
    """Ring mode, one entry of room: vCPU 0 writes page 2, writable since an earlier batch
    (no fault, no entry), then page 3, write-protected: its push fills the ring, so its
    store waits (deferred [1]); page 2's store happens (version 2: the earlier write and
    this one)."""
    got = _check("ring", 1, [2], [SOFT - 1], [(0, 2, True), (0, 3, True)])
    assert got["deferred"] == [1] and got["ring_full"] == {0}
    assert got["rings"] == [[(0, 3)]] and got["faults"] == [1]
    assert got["versions"][2:4] == [2, 0]


# -- blocks: splits under logging, block maps, relaxed blocks and block re-maps ----------------

BLK = 512  # pages per 2 MiB block (4 KiB granule)
# (first page, pages, backing) of the four slots of ``_block_vm``; a slot's id is its index
BSLOTS = ((0, 2 * BLK, 2 << 20), (2 * BLK, 2 * BLK, 2 << 20), (4 * BLK, 768, 2 << 20))
BSLOTS += ((6 * BLK, BLK, 4096),)
BPAGES = (0, 1, 300, 511, 512, 513, 1024, 1025, 1029, 1030, 1536, 1600, 2048, 2049, 2559)
BPAGES += (2560, 2600, 3072, 3073, 3074)


def _block_vm(mode: str, vcpus: int) -> VM:
    """Slot 0: two 2 MiB blocks mapped, then logging (write-protected blocks).  Slot 1: two
    blocks mapped, logging on, vCPU 0 writes page 1025 (splits block 2: 1025 writable) and
    reads 1029 (mapped read-only), logging off.  Slot 2: 3 MiB backed by 2 MiB, not logging,
    unmapped.  Slot 3: 2 MiB backed by 4 KiB pages, mapped, logging on then off (its pages
    read-only)."""
    vm = VM(G, Tracking(mode, "range", 4096), nr_vcpus=vcpus)
    log = slot_flags(log_dirty=True)
    for i, (first, n, backing) in enumerate(BSLOTS):
        vm.set_memslot(i, BASE + (first << 12), n << 12, 0, backing, populate=i != 2)
        if i != 2:
            vm.set_memslot(i, BASE + (first << 12), n << 12, log, backing)
    g = BGFN + np.array([1025, 1029], np.int64)
    vm.access(g, np.zeros(2, np.int64), np.array([True, False]))
    for i in (1, 3):
        first, n, backing = BSLOTS[i]
        vm.set_memslot(i, BASE + (first << 12), n << 12, 0, backing)
    vm.slots[0].bitmap[:] = 0
    if vm.rings:
        vm.rings = [DirtyRing(4096) for _ in range(vcpus)]
    vm.stats.clear()
    vm.pgt.tlbi.clear()
    return vm


def _block_reference(mode: str, vcpus: int, seq):
    """One access at a time over ``_block_vm``'s state, from user_mem_abort (mmu.c, v6.17):
    a block whose backing and slot allow it is mapped on a translation fault when the slot
    does not log (``vma_pagesize``; a block past the slot's end is refused by
    ``fault_supports_stage2_huge_mapping``), and mapped again over a table by a write to a
    read-only page there (a permission fault); while logging a write to a read-only block
    splits it (``force_pte``: break-before-make, the written page mapped, the other pages
    fault in later) and a read maps a page read-only; a write to a read-only block of a slot
    that does not log relaxes the whole block."""
    block = {0: False, 1: False, 3: False}  # block index -> writable, while mapped as a block
    tables = {2, 6}  # blocks whose level-2 entry is a table
    page = {1025: True, 1029: False}  # page -> writable, for the valid pages under a table
    page |= {p: False for p in range(6 * BLK, 7 * BLK)}
    version = {1025: 1}
    out = {
        "faults": [0] * vcpus,
        "dirty_events": [0] * vcpus,
        "rings": [[] for _ in range(vcpus)] if mode == "ring" else [],
        "bitmap": set(),
        "applied": 0,
        "stats": dict.fromkeys(
            ("translation_faults", "permission_faults", "block_splits", "block_maps"), 0
        ),
        "tlbi": {"ipa": 0, "range": 0},
    }

    def fits(p):
        first, n, backing = next(s for s in BSLOTS if s[0] <= p < s[0] + s[1])
        start = p // BLK * BLK
        return backing >= 2 << 20 and start >= first and start + BLK <= first + n

    for v, p, w in seq:
        b, logging = p // BLK, p < 2 * BLK
        if w:
            version[p] = version.get(p, 0) + 1
            out["applied"] += 1
        if v < 0:  # kvm_write_guest: no stage 2
            if w and logging:
                out["bitmap"].add(p)
            continue
        kind = mark = None
        if b in block:
            if w and not block[b]:
                kind = "permission_faults"
                if logging:  # split: the written page mapped writable, the rest unmapped
                    del block[b]
                    tables.add(b)
                    page.update({p: True})
                    out["stats"]["block_splits"] += 1
                    mark = True
                else:  # kvm_pgtable_stage2_relax_perms: one TLBI by IPA
                    block[b] = True
                    out["tlbi"]["ipa"] += 1
        elif p not in page:
            kind = "translation_faults"
            if logging:
                page[p] = w
                mark = w
                tables.add(b)
            elif fits(p):  # a table there is replaced: one range TLBI
                block[b] = True
                out["stats"]["block_maps"] += 1
                out["tlbi"]["range"] += b in tables
                for q in [q for q in page if q // BLK == b]:
                    del page[q]
                tables.discard(b)
            else:
                page[p] = True
                tables.add(b)
        elif w and not page[p]:
            kind = "permission_faults"
            if not logging and fits(p):  # the block mapped again over the table
                for q in [q for q in page if q // BLK == b]:
                    del page[q]
                block[b] = True
                tables.discard(b)
                out["stats"]["block_maps"] += 1
                out["tlbi"]["range"] += 1
            else:  # relaxed: one TLBI by IPA
                page[p] = True
                mark = logging
                out["tlbi"]["ipa"] += 1
        if kind:
            out["faults"][v] += 1
            out["stats"][kind] += 1
        if mark:
            out["dirty_events"][v] += 1
            if mode == "ring":
                out["rings"][v].append((0, p))
            else:
                out["bitmap"].add(p)
    out["versions"] = [version.get(p, 0) for p in BPAGES]
    out["mapped"] = [
        (2, block[p // BLK]) if p // BLK in block else (3, page[p]) if p in page else None
        for p in BPAGES
    ]
    return out


def _block_engine(mode: str, vcpus: int, seq):
    vm = _block_vm(mode, vcpus)
    gfn = BGFN + np.array([p for _, p, _ in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    write = np.array([w for _, _, w in seq], bool)
    res = vm.access(gfn, vcpu, write)
    level, _, desc = vm.pgt.lookup(BASE + np.array(BPAGES, np.int64) * 4096)
    rings = []
    for r in vm.rings:
        s, o = r.collect()
        rings.append(list(zip(s.tolist(), o.tolist(), strict=True)))
    versions = np.concatenate([vm.slots[i].version for i in range(4)])
    bitmap = vm.slots[0].bitmap
    return {
        "faults": res.faults.tolist(),
        "dirty_events": res.dirty_events.tolist(),
        "rings": rings,
        "bitmap": set() if bitmap is None else set(DL.bitmap_pages(bitmap).tolist()),
        "applied": res.applied_writes,
        "stats": {k: vm.stats[k] for k in ("translation_faults", "permission_faults")}
        | {k: vm.stats[k] for k in ("block_splits", "block_maps")},
        "tlbi": {k: vm.pgt.tlbi[k] for k in ("ipa", "range")},
        "versions": versions[list(BPAGES[:17]) + [3072 - 256, 3073 - 256, 3074 - 256]].tolist(),
        "mapped": [
            (int(lv), bool(wr)) if ok else None
            for lv, ok, wr in zip(level, D.is_valid(desc), D.is_writable(desc), strict=True)
        ],
    }


@st.composite
def _block_case(draw):
    mode = draw(st.sampled_from(("bitmap", "ring")))
    vcpus = draw(st.integers(1, 3))
    acc = st.tuples(st.integers(-1, vcpus - 1), st.sampled_from(BPAGES), st.booleans())
    return mode, vcpus, draw(st.lists(acc, min_size=1, max_size=12))


@settings(max_examples=10, deadline=None)
@given(_block_case())
@example(
    (
        "ring",
        3,
        [(1, 0, False), (0, 300, True), (1, 1, False), (2, 513, False)]
        + [(2, 512, True), (0, 511, True), (1, 1, True), (-1, 2, True)],
    )
)
@example(
    (
        "bitmap",
        2,
        [(0, 1030, False), (1, 1029, True), (0, 1025, True), (1, 1536, False)]
        + [(1, 1600, True), (0, 1536, True), (0, 3072, True), (1, 3073, False)],
    )
)
@example(
    (
        "ring",
        2,
        [(1, 1029, True), (0, 1030, False), (1, 2049, False), (0, 2048, True)]
        + [(0, 2600, True), (1, 2560, False), (-1, 3074, True), (0, 513, False), (1, 0, True)],
    )
)
def test_one_batch_over_blocks_does_what_the_per_access_reference_does(case):
    """Faults per vCPU, dirty events, ring entries, the bitmap, stored writes, the fault,
    split and block-map counts, and each sampled page's leaf (level and write permission)."""
    want, got = _block_reference(*case), _block_engine(*case)
    for k in want:
        assert got[k] == want[k], k


@pytest.mark.parametrize("batches", [1, 2])
def test_dbm_a_page_read_then_written_turns_dirty_with_no_second_exit(batches):
    """DBM (the what-if mode): while logging, a read of an unmapped page maps it read-only
    with DBM set (writable-clean, one translation fault); the write after it turns it
    writable-dirty in hardware: no exit, no TLBI, nothing marked in software, counted in
    dbm_dirty.  By hand: 1 fault, 1 translation fault, 0 permission faults, the
    page writable, whether the two accesses come in one batch or two (the one-timeline rule;
    one batch used to count a permission fault and a TLBI for the write).  A write of a
    write-protected page before them turned dirty by DBM too: dbm_dirty 2 in all."""
    vm = _vm("dbm", 1, [], [0])
    # first, a write of write-protected (writable-clean) page 1: dirty by DBM, no exit
    vm.access(np.array([BGFN + 1]), np.zeros(1, np.int64), np.ones(1, bool))
    g, v, w = np.full(2, BGFN + NPG), np.zeros(2, np.int64), np.array([False, True])
    step = 2 // batches
    faults = sum(
        vm.access(g[i : i + step], v[i : i + step], w[i : i + step]).faults
        for i in range(0, 2, step)
    )
    assert faults.tolist() == [1]
    assert vm.stats["translation_faults"] == 1 and vm.stats["permission_faults"] == 0
    assert vm.stats["dbm_dirty"] == 2 and vm.pgt.tlbi["ipa"] == 0
    _, _, desc = vm.pgt.lookup(np.array([BASE + (NPG << 12)], np.int64))
    assert D.is_writable(desc).tolist() == [True]


def test_a_1gib_and_a_2mib_block_split_in_one_batch_are_two_splits():
    """While logging, one batch writes a page of a write-protected 1 GiB block and a page of
    a write-protected 2 MiB block: each write splits its block (user_mem_abort, force_pte:
    the written page mapped writable) and is a permission fault.  By hand: block_splits 2,
    permission_faults 2, translation_faults 0, 2 faults, both pages dirty."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    log = slot_flags(log_dirty=True)
    big, small = BASE, BASE + (1 << 30)
    vm.set_memslot(0, big, 1 << 30, 0, 1 << 30, populate=True)
    vm.set_memslot(1, small, 2 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, big, 1 << 30, log, 1 << 30)
    vm.set_memslot(1, small, 2 << 20, log, 2 << 20)
    level, _, _ = vm.pgt.lookup(np.array([big, small], np.int64))
    assert level.tolist() == [1, 2]
    g = np.array([(big >> 12) + 7, (small >> 12) + 9], np.int64)
    res = vm.access(g, np.zeros(2, np.int64), np.ones(2, bool))
    assert vm.stats["block_splits"] == 2 and vm.stats["permission_faults"] == 2
    assert vm.stats["translation_faults"] == 0 and res.faults.tolist() == [2]
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [7]
    assert DL.bitmap_pages(vm.slots[1].bitmap).tolist() == [9]


def test_tlbi_by_ipa_counts_add_up_over_batches():
    """Bitmap mode, logging: batch 1 writes write-protected page 1 (a permission fault: one
    TLBI by IPA); batch 2 reads then writes unmapped page NPG (a translation fault, then a
    permission fault on the read-only page: one more TLBI by IPA).  By hand: 2 in all."""
    vm = _vm("bitmap", 1, [], [0])
    vm.access(np.array([BGFN + 1]), np.zeros(1, np.int64), np.ones(1, bool))
    assert vm.pgt.tlbi["ipa"] == 1
    vm.access(np.full(2, BGFN + NPG), np.zeros(2, np.int64), np.array([False, True]))
    assert vm.pgt.tlbi["ipa"] == 2 and vm.stats["permission_faults"] == 2


def test_mmio_and_user_exits_are_counted_over_batches():
    """vm_stats.mmio_exits counts accesses to no memslot (io_mem_abort: KVM_EXIT_MMIO) and
    vm_stats.user_exits writes to a READONLY memslot (kvm_handle_guest_abort sends them to
    user space too, mmu.c v6.17), each since the VM started; neither touches content, and a
    read of the READONLY slot is served (mapped read-only).  By hand, slot 0 writable at
    BASE, slot 1 READONLY 4 MiB above, MMIO at page 0x10: batch 1 (a read-only write, a
    read-only read, an MMIO write and read, a guest write and a host write of slot 0):
    mmio 2, user 1, 2 writes stored; batch 2 (a read-only write, an MMIO read): mmio 3,
    user 2; slot 1 deleted, batch 3 (a guest write): mmio 3, user 2.  A VM that never had a
    READONLY slot reports user_exits 0 (present, not missing)."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    assert "user_exits" not in vm.stats
    vm.access(np.array([BGFN + 1]), np.zeros(1, np.int64), np.ones(1, bool))
    assert "user_exits" in vm.stats and vm.stats["user_exits"] == 0
    ro = BGFN + 1024
    vm.set_memslot(1, BASE + (4 << 20), 1 << 20, slot_flags(readonly=True), 4096)
    g = np.array([ro + 3, ro + 4, 0x10, 0x10, BGFN + 5, BGFN + 6], np.int64)
    res = vm.access(g, np.array([0, 0, 0, 0, 0, -1]), np.array([1, 0, 1, 0, 1, 1], bool))
    assert (vm.stats["mmio_exits"], vm.stats["user_exits"], res.applied_writes) == (2, 1, 2)
    g = np.array([ro + 3, 0x10], np.int64)
    vm.access(g, np.zeros(2, np.int64), np.array([True, False]))
    assert (vm.stats["mmio_exits"], vm.stats["user_exits"]) == (3, 2)
    assert not vm.slots[1].version.any() and vm.slots[0].version[[1, 5, 6]].tolist() == [1, 1, 1]
    _, _, desc = vm.pgt.lookup(np.array([ro + 3, ro + 4], np.int64) << 12)
    assert D.is_valid(desc).tolist() == [False, True] and not D.is_writable(desc).any()
    vm.set_memslot(1, BASE + (4 << 20), 0, slot_flags(readonly=True), 4096)
    vm.access(np.array([BGFN + 5]), np.zeros(1, np.int64), np.ones(1, bool))
    assert (vm.stats["mmio_exits"], vm.stats["user_exits"]) == (3, 2)


@pytest.mark.parametrize("mode", ["ring", "bitmap", "dbm"])
@pytest.mark.parametrize("slice_", [1, 2, 3])
def test_a_batch_applied_a_few_accesses_at_a_time_gives_the_references_result(
    monkeypatch, mode, slice_
):
    """VM.access applies a long batch ``ACCESS_SLICE`` accesses at a time (each slice sees
    what the ones before it did): with slices of 1-3 accesses, the batch still leaves what
    the per-access reference leaves, its deferred accesses numbered in the whole batch.
    By hand, ring mode, vCPUs 0 and 1 with 2 and 1 entries of room: vCPU 1's first write
    (page 2, access 1) fills its ring, so it and vCPU 1's later accesses (3, 5, 8) wait;
    vCPU 0 pushes page 1 (access 2) and fills at page 5 (access 6): 6 and 7 wait."""
    import engine.kvm.vm as vm_module

    monkeypatch.setattr(vm_module, "ACCESS_SLICE", slice_)
    seq = [(0, NPG, False), (1, 2, True), (0, 1, True), (1, NPG + 1, True), (-1, 3, True)]
    seq += [(1, 2 * NPG, True), (0, 5, True), (0, 2 * NPG + 1, True), (1, 8, False)]
    got = _check(mode, 2, [], [SOFT - 2, SOFT - 1], seq)
    if mode == "ring":
        assert got["deferred"] == [1, 3, 5, 6, 7, 8] and got["ring_full"] == {0, 1}
        # the caller re-issues the deferred accesses by their indices
        vm = _vm(mode, 2, [], [SOFT - 2, SOFT - 1])
        gfn = BGFN + np.array([p for _, p, _ in seq], np.int64)
        res = vm.access(gfn, np.array([v for v, _, _ in seq]), np.array([w for *_, w in seq]))
        assert (gfn[res.deferred] - BGFN).tolist() == [2, NPG + 1, 2 * NPG, 5, 2 * NPG + 1, 8]


def test_a_full_ring_of_a_vcpu_without_accesses_is_reported():
    """Ring mode, vCPU 1's ring already at its soft limit, a batch of vCPU 0's accesses
    only: vCPU 1 cannot enter the guest until its ring is reset (KVM_EXIT_DIRTY_RING_FULL,
    kvm_dirty_ring_check_request), so it is reported ring-full; vCPU 0 runs its write."""
    got = _check("ring", 2, [], [0, SOFT], [(0, 1, True)])
    assert got["ring_full"] == {1} and got["deferred"] == [] and got["rings"] == [[(0, 1)], []]
    # a batch with no vCPU access at all (a host write) while a ring is full: the write is
    # stored and marked in the backup bitmap, the ring still reported (this batch raised)
    got = _check("ring", 2, [], [SOFT, 0], [(-1, 3, True)])
    assert got["ring_full"] == {0} and got["bitmaps"] == [{3}, set()] and got["applied"] == 1


def test_a_page_past_the_slots_last_block_is_relaxed_not_mapped_as_a_block():
    """A 3 MiB slot backed by 2 MiB pages: page 600 (in the second 2 MiB, which passes the
    slot's end) read while logging is mapped read-only; logging off, a write to it is a
    permission fault that relaxes the page (one TLBI by IPA): no block is mapped there
    (fault_supports_stage2_huge_mapping refuses a block past the slot's end, mmu.c v6.17)."""
    vm = VM(G, Tracking("bitmap", "range", RING), nr_vcpus=1)
    vm.set_memslot(0, BASE, 3 << 20, slot_flags(log_dirty=True), 2 << 20)
    g, v = np.array([BGFN + 600]), np.zeros(1, np.int64)
    vm.access(g, v, np.zeros(1, bool))
    vm.set_memslot(0, BASE, 3 << 20, 0, 2 << 20)
    vm.pgt.tlbi.clear()
    res = vm.access(g, v, np.ones(1, bool))
    level, _, desc = vm.pgt.lookup(np.array([BASE + 600 * 4096, BASE + 601 * 4096]))
    assert res.faults.tolist() == [1] and vm.stats["permission_faults"] == 1
    assert vm.stats["block_maps"] == 0 and vm.pgt.tlbi["ipa"] == 1
    assert level[0] == 3 and D.is_valid(desc).tolist() == [True, False]
    assert D.is_writable(desc).tolist() == [True, False]


def test_a_cut_page_written_later_by_another_vcpu_is_that_vcpus_push():
    """Ring mode: vCPU 0 (one entry of room) writes page 1 (its push fills the ring: that
    write and its later ones wait), then pages 2-25; vCPU 1 (24 entries of room) writes
    pages 2-25 after it, then vCPU 2 (three entries of room) writes them and pages 40-43
    (writable since an earlier batch).  With vCPU 0's writes held back, each of pages 2-25
    is first written by vCPU 1: 24 entries, the last (page 25, access 48) filling its ring,
    so that store waits; vCPU 2 pushes nothing (every page it writes is writable by then)
    and its ring does not fill.  By hand: deferred = vCPU 0's 25 accesses and access 48,
    ring-full {0, 1}."""
    pages = list(range(2, 26))
    seq = [(0, 1, True)] + [(0, p, True) for p in pages]
    seq += [(1, p, True) for p in pages] + [(2, p, True) for p in pages + [40, 41, 42, 43]]
    got = _check("ring", 3, [40, 41, 42, 43], [SOFT - 1, SOFT - 24, SOFT - 3], seq)
    assert got["deferred"] == [*range(25), 48] and got["ring_full"] == {0, 1}
    assert got["rings"] == [[(0, 1)], [(0, p) for p in pages], []]


def test_ring_admission_pushes_by_hand_around_a_cut():
    """Ring mode, one entry of room per vCPU.  (1) vCPU 0 writes page 1 (fills: that write
    and its writes of pages 3 and 5 wait); vCPU 1 then writes page 5, whose first write is
    now its own: a push that fills vCPU 1's ring, so that store waits too.  (2) vCPU 0 reads
    write-protected page 2 (no push: a read), then writes page 3 (the push that fills).
    (3) below."""
    got = _check(
        "ring",
        2,
        [],
        [SOFT - 1, SOFT - 1],
        [(0, 1, True), (0, 3, True), (0, 5, True), (1, 5, True)],
    )
    assert got["deferred"] == [0, 1, 2, 3] and got["ring_full"] == {0, 1}
    assert got["rings"] == [[(0, 1)], [(0, 5)]]
    got = _check("ring", 1, [], [SOFT - 1], [(0, 2, False), (0, 3, True)])
    assert got["deferred"] == [1] and got["ring_full"] == {0} and got["rings"] == [[(0, 3)]]
    # (3) as (1), vCPU 0 writing page 1 again after page 5: vCPU 1's write of page 5 still
    # pushes and fills (each kept write's page is also a held-back write's)
    seq = [(0, 1, True), (0, 5, True), (0, 1, True), (1, 5, True)]
    got = _check("ring", 2, [], [SOFT - 1, SOFT - 1], seq)
    assert got["deferred"] == [0, 1, 2, 3] and got["ring_full"] == {0, 1}
    assert got["rings"] == [[(0, 1)], [(0, 5)]]


def test_memslot_changes_and_access_batches_are_logged_for_a_replay():
    """With an operation log (``dirtylog kvm replay``), each KVM_SET_USER_MEMORY_REGION is one
    record: slot, base gfn, pages (0 for a delete), flags as given, the slot's backing (the
    old slot's for a delete), whether the guest touched every page right after a create
    (only a create populates), and the modelled cost of what the call itself did (logging on
    write-protects: that enable's cost, not an earlier one's).  Each batch is one record: its
    gfns, writes and vCPUs as read-only copies (int64, bool, int64), the fault exits of the
    whole batch, the vCPUs whose ring filled (ascending) and how many of its first accesses
    were held back before (the batch given as int32 gfns, int8 vCPUs and 0/1 writes).  By
    hand: ring mode, vCPUs 0 and 1 with one entry of room each; vCPU 1 writes page 2 (a push
    that fills: held back), vCPU 0 writes page 1 (fills too), then reads page 200 of the
    unlogged slot (held back): 2 faults, one each, one dirty event each, ring-full (0, 1).
    After the rings are reset, the read alone: 1 fault (page 200 unmapped), nothing held
    back."""
    vm = VM(G, Tracking("ring", "range", RING), nr_vcpus=2)
    vm.oplog = []
    log = slot_flags(log_dirty=True)
    vm.set_memslot(0, BASE, 4 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, BASE, 4 << 20, log, 2 << 20, populate=True)  # flags only: no populate
    vm.set_memslot(1, BASE + (4 << 20), 1 << 20, log, 4096)
    vm.set_memslot(2, BASE + (8 << 20), 1 << 20, 0, 4096)
    ops = vm.op_log
    assert [op.name for op in ops] == ["enable", "enable"]
    want = [
        (0, BGFN, 1024, 0, 2 << 20, True, 0.0),
        (0, BGFN, 1024, log, 2 << 20, False, ops[0].model_ns(vm.costs)),
        (1, BGFN + 1024, 256, log, 4096, False, ops[1].model_ns(vm.costs)),
        (2, BGFN + 2048, 256, 0, 4096, False, 0.0),
    ]
    got = [
        (r.slot, r.base_gfn, r.npages, r.flags, r.backing, r.populate, r.model_ns) for r in vm.oplog
    ]
    assert got == want and ops[0].model_ns(vm.costs) > 0 and ops[1].model_ns(vm.costs) > 0
    assert all(type(r.model_ns) is float for r in vm.oplog)
    vm.set_memslot(0, BASE, 0, log)  # delete: the old slot's backing, nothing populated
    r = vm.oplog[-1]
    assert (r.slot, r.base_gfn, r.npages, r.flags, r.backing, r.populate, r.model_ns) == (
        0,
        BGFN,
        0,
        log,
        2 << 20,
        False,
        0.0,
    )
    vm.rings = [DirtyRing(RING) for _ in range(2)]
    for ring in vm.rings:
        ring.push(np.full(SOFT - 1, 2, np.uint32), np.arange(SOFT - 1, dtype=np.uint64))
    g = np.array([BGFN + 1024 + 2, BGFN + 1024 + 1, BGFN + 2048 + 200], np.int64)
    v, w = np.array([1, 0, 0]), np.array([True, True, False])
    # any integer and truth-value arrays: converted, and logged as int64, bool and int64
    res = vm.access(g.astype(np.int32), v.astype(np.int8), [1, 1, 0], retried=2)
    rec = vm.oplog[-1]
    assert rec.gfn.tolist() == g.tolist() and rec.vcpu.tolist() == [1, 0, 0]
    assert rec.write.tolist() == [True, True, False]
    assert (rec.gfn.dtype, rec.write.dtype, rec.vcpu.dtype) == (np.int64, np.bool_, np.int64)
    assert not (rec.gfn.flags.writeable or rec.write.flags.writeable or rec.vcpu.flags.writeable)
    assert (rec.faults, rec.ring_full, rec.retried) == (2, (0, 1), 2)
    assert res.deferred.tolist() == [0, 1, 2] and vm.awaiting_retry
    # whole-number counts per vCPU (a run's JSON prints them as integers)
    assert res.faults.dtype == res.dirty_events.dtype == np.int64
    assert res.faults.tolist() == [1, 1] and res.dirty_events.tolist() == [1, 1]
    vm.rings = [DirtyRing(RING) for _ in range(2)]
    vm.access(g[2:], v[2:], w[2:])
    assert vm.oplog[-1].retried == 0 and vm.oplog[-1].faults == 1 and not vm.awaiting_retry


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        (
            {"mode": "pml"},
            "tracking.mode",
            "must be one of bitmap, manual-clear, ring, dbm, got 'pml'",
        ),
        (
            {"strategy": "walk"},
            "tracking.strategy",
            "must be one of range, masked-skip, visitor, rmap, got 'walk'",
        ),
        (
            {"mode": "bitmap", "initially_set": True},
            "tracking.initially_set",
            "needs mode manual-clear (INITIALLY_SET requires MANUAL_PROTECT_ENABLE)",
        ),
        (
            {"mode": "ring", "initially_set": True},
            "tracking.initially_set",
            "needs mode manual-clear (INITIALLY_SET requires MANUAL_PROTECT_ENABLE)",
        ),
        ({"eager_split": -1}, "tracking.eager_split", "must be 0 (off) or a size such as 2MiB"),
    ],
)
def test_tracking_refuses_an_unknown_mode_or_strategy_and_initially_set_without_manual(
    kwargs, field, rule
):
    """The session's tracking object: the four modes and the four strategies by name;
    KVM_DIRTY_LOG_INITIALLY_SET only with manual protect (kvm_vm_ioctl_enable_cap_generic
    accepts it only together with KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE, kvm_main.c v6.17); an
    eager-split chunk below 0 is no size.  Each refusal names its field and rule."""
    from engine.util.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        Tracking(**kwargs)
    assert (exc.value.field, exc.value.rule) == (field, rule)


def test_tracking_accepts_each_mode_strategy_initially_set_with_manual_and_no_eager_split():
    """The other side of each refusal: every mode and strategy, INITIALLY_SET with
    manual-clear (``manual`` true only for it), eager split 0 (off)."""
    for mode in ("bitmap", "manual-clear", "ring", "dbm"):
        for strategy in ("range", "masked-skip", "visitor", "rmap"):
            t = Tracking(mode, strategy, eager_split=0)
            assert (t.mode, t.strategy, t.manual) == (mode, strategy, mode == "manual-clear")
    assert Tracking("manual-clear", initially_set=True).initially_set


def test_vm_set_up_rings_reverse_map_and_ring_size_by_mode():
    """A VM in ring mode gets one ring per vCPU of the configured size, checked against the
    granule (KVM_CAP_DIRTY_LOG_RING_ACQ_REL: 256 entries are one 4 KiB page, less than one
    16 KiB page); the other modes get no rings and never check the size.  The stage-2 table
    keeps a reverse map only for the rmap strategy or compare mode.  A new VM has no pending
    retry and no operation log."""
    from engine.util.errors import KvmError

    vm = VM(G, Tracking("ring", "range", RING), nr_vcpus=3)
    assert [r.size for r in vm.rings] == [RING] * 3 and len({id(r) for r in vm.rings}) == 3
    assert vm.pgt.rmap is None and vm.oplog is None and vm.awaiting_retry is False
    g16 = Geometry(16384, 36)
    with pytest.raises(KvmError) as exc:
        VM(g16, Tracking("ring", "range", 256))
    assert (exc.value.errno_name, exc.value.field) == ("EINVAL", "tracking.ring_entries")
    assert VM(g16, Tracking("ring", "range", 1024)).rings[0].size == 1024
    for mode in ("bitmap", "manual-clear", "dbm"):
        assert VM(g16, Tracking(mode, "range", 256), nr_vcpus=2).rings == []
    assert VM(G, Tracking("bitmap", "rmap")).pgt.rmap == {}
    assert VM(G, Tracking("bitmap", "range", compare=True)).pgt.rmap == {}


def test_eager_split_refusals_name_the_field_and_list_the_granules_sizes():
    """KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE (arm.c, v6.17): EINVAL for a chunk that is not 0 or
    a size kvm_is_block_size_supported accepts, the sentence listing them ascending (4K
    granule: the page, 2 MiB and 1 GiB; 16K: 16 KiB and 32 MiB; 64K: 64 KiB and 512 MiB,
    kvm_supported_block_sizes without LPA2), under the field the caller names; EINVAL once a
    memslot exists, whatever the chunk."""
    from engine.kvm.vm import eager_split_sizes
    from engine.util.errors import KvmError

    assert eager_split_sizes(G) == (4 << 10, 2 << 20, 1 << 30)
    assert eager_split_sizes(Geometry(16384, 40)) == (16 << 10, 32 << 20)
    assert eager_split_sizes(Geometry(65536, 42)) == (64 << 10, 512 << 20)
    vm = VM(G)
    with pytest.raises(KvmError) as exc:
        vm.enable_eager_split(3 << 20, field="session.eager")
    assert str(exc.value) == (
        "EINVAL: session.eager: 3MiB is not 0 or a block size of the 4KiB granule "
        "(4KiB, 2MiB, 1GiB)"
    )
    vm.enable_eager_split(0)
    vm.set_memslot(0, BASE, 2 << 20)
    for chunk in (0, 2 << 20):
        with pytest.raises(KvmError) as exc:
            vm.enable_eager_split(chunk)
        assert str(exc.value) == (
            "EINVAL: tracking.eager_split: the eager-split chunk can only be set while no "
            "memslot exists"
        )


def test_slot_flags_are_kvm_uapi_bits():
    """include/uapi/linux/kvm.h: KVM_MEM_LOG_DIRTY_PAGES is bit 0, KVM_MEM_READONLY bit 1."""
    assert [slot_flags(), slot_flags(True), slot_flags(readonly=True)] == [0, 1, 2]
    assert slot_flags(log_dirty=True, readonly=True) == 3


# -- the ring path's shortcuts against plain references ----------------------------------------


@settings(max_examples=30, deadline=None)
@example(set(), Random(0))
@given(st.sets(st.integers(0, 300), max_size=40), st.randoms(use_true_random=False))
def test_in_time_order_is_an_argsort_by_first_write(times, rnd):
    """``_in_time_order(t, idx)`` lists ``idx`` by ascending ``t`` (distinct batch indices):
    the plain ``idx[np.argsort(t)]``, for page indices 0..n-1 in any order."""
    from engine.kvm.vm import _in_time_order

    t = np.array(sorted(times, key=lambda _: rnd.random()), dtype=np.int64)
    idx = np.array(rnd.sample(range(t.size), t.size), dtype=np.int64)
    assert _in_time_order(t, idx).tolist() == idx[np.argsort(t)].tolist()


def _probe_fields(probe) -> dict:
    p = probe.pages
    names = ("gfn", "sidx", "written", "first_is_write", "vcpu_first", "vcpu_write", "writes")
    out = {n: getattr(p, n).tolist() for n in names}
    out |= {"t_first": p.t_first.tolist(), "t_write": p.t_write.tolist(), "writer": p.writer}
    return out | {n: getattr(probe, n).tolist() for n in ("level", "pos", "desc")}


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 15)), min_size=1, max_size=40),
    st.sets(st.integers(0, 15)),
    st.sets(st.integers(0, 15)),
)
def test_a_probe_cut_to_whole_pages_is_the_probe_of_the_kept_accesses(seq, dropped, written):
    """``_Probe.kept`` against probing the kept accesses afresh (``VM._probe``): a batch of
    writes by up to three vCPUs over 16 pages of a logging slot (the pages ``written`` made
    writable by an earlier batch, the rest write-protected), every access to the pages
    ``dropped`` cut (whole pages, as a ring admission's cut that ``kept`` is used for).
    Every field of the pages and their leaves is the fresh probe's, batch indices counted
    among the kept accesses; ``writer`` is the whole batch's (a vCPU that made every access
    made every kept one)."""
    vm = VM(Geometry(4096, 40), Tracking("ring", "range", 256), nr_vcpus=3)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True), 4096)
    if written:
        pages = BASE // 4096 + np.array(sorted(written), np.int64)
        vm.access(pages, np.zeros(pages.size, np.int64), np.ones(pages.size, bool))
    slots = vm.memslots.sorted()
    gfn = BASE // 4096 + np.array([p for _, p in seq], np.int64)
    vcpu = np.array([v for v, _ in seq], np.int64)
    write, sidx = np.ones(gfn.size, bool), np.zeros(gfn.size, np.int64)
    kept = ~np.isin(gfn - BASE // 4096, list(dropped))
    full = vm._probe(gfn, vcpu, write, sidx, slots)
    got = full.kept(kept)
    if not kept.any():
        assert got.pages.gfn.size == 0 and got.pos.size == 0
        return
    want = _probe_fields(vm._probe(gfn[kept], vcpu[kept], write, sidx[kept], slots))
    want["writer"] = full.pages.writer
    assert _probe_fields(got) == want


def test_a_probe_with_a_read_is_not_cut():
    """A batch with a read: a kept page's first write may be a dropped access's, so
    ``_Probe.kept`` gives None (the kept accesses are probed again)."""
    vm = VM(Geometry(4096, 40), Tracking("ring", "range", 256), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True), 4096)
    gfn, slots = BASE // 4096 + np.array([1, 2], np.int64), vm.memslots.sorted()
    ones, zeros = np.ones(2, bool), np.zeros(2, np.int64)
    assert vm._probe(gfn, zeros, np.array([True, False]), zeros, slots).kept(ones) is None
    assert vm._probe(gfn, zeros, ones, zeros, slots).kept(ones) is not None


def test_a_moved_readonly_logging_slot_keeps_its_bitmap_and_content():
    """kvm_prepare_memory_region: a slot that has LOG_DIRTY_PAGES before and after a MOVE
    keeps its bitmap, a READONLY one included (it has a bitmap but is never write-protected:
    memslot_is_logging is false for it, mmu.c v6.17); the content moves with the slot.
    Manual protect with INITIALLY_SET: the bitmap starts all ones over 70 pages; a CLEAR of
    pages 0-63 leaves 64-69; after the move GET still reports 64-69 (a new bitmap would be
    all ones again).  A writable logging slot moved the same way keeps its written page's
    version and its dirty bit (page 5)."""
    vm = VM(G, Tracking("manual-clear", "range", initially_set=True), nr_vcpus=1)
    ro = slot_flags(log_dirty=True, readonly=True)
    vm.set_memslot(0, BASE, 70 << 12, ro, 4096, populate=True)
    DL.clear_dirty_log(vm, 0, 0, 64, [2**64 - 1])
    vm.set_memslot(0, BASE + (1 << 30), 70 << 12, ro, 4096)
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == list(range(64, 70))
    assert not vm.slots[0].logging
    bm = VM(G, Tracking("bitmap", "range"), nr_vcpus=1)
    log = slot_flags(log_dirty=True)
    bm.set_memslot(0, BASE, 64 << 12, log, 4096)
    bm.access(np.array([BGFN + 5]), np.zeros(1, np.int64), np.ones(1, bool))
    bm.set_memslot(0, BASE + (1 << 30), 64 << 12, log, 4096)
    assert bm.slots[0].version[5] == 1 and bm.slots[0].logging
    words, _ = DL.get_dirty_log(bm, 0)
    assert DL.bitmap_pages(words).tolist() == [5]


def test_a_cut_keeps_the_pushes_only_when_no_kept_write_shares_a_dropped_page():
    """``VM._cut_keeps_pushes`` by hand, accesses to pages 1, 2, 1, 3 (access 3 a read):
    dropping access 2 (page 1, also written by kept access 0) changes page 1's first write
    among the kept ones: False; dropping access 1 (page 2, written by nobody else): True;
    dropping access 3 (a read of page 3): True; dropping nothing or everything: True; an
    access allowed again (1, dropped before): False."""
    gfn = np.array([1, 2, 1, 3], np.int64)
    write = np.array([True, True, True, False])
    every = np.ones(4, bool)

    def keeps(allowed, new_allowed) -> bool:
        return VM._cut_keeps_pushes(gfn, write, np.array(allowed), np.array(new_allowed))

    assert not keeps(every, [True, True, False, True])
    assert keeps(every, [True, False, True, True])
    assert keeps(every, [True, True, True, False])
    assert keeps(every, every) and keeps(every, ~every)
    assert not keeps([True, False, True, True], every)


@pytest.mark.parametrize("mode", ["bitmap", "dbm"])
def test_populating_a_logging_slot_maps_read_only_pages(mode):
    """VM.populate (a guest touching every page of a slot) while the slot logs: each page
    faults in as a read would (user_mem_abort with logging_active: force_pte, read-only, so
    the first write still traps), whatever the 2 MiB backing allows; in DBM mode the leaves
    are writable-clean (DBM set).  A slot that does not log maps its 2 MiB blocks writable."""
    vm = VM(G, Tracking(mode, "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 4 << 20, slot_flags(log_dirty=True), 2 << 20)
    vm.set_memslot(1, BASE + (4 << 20), 2 << 20, 0, 2 << 20)
    vm.populate(0)
    vm.populate(1)
    pages = BASE + np.array([0, 511, 512, 1023, 1024], np.int64) * 4096
    level, _, desc = vm.pgt.lookup(pages)
    assert level.tolist() == [3, 3, 3, 3, 2] and D.is_valid(desc).all()
    assert D.is_writable(desc).tolist() == [False] * 4 + [True]
    dbm = (desc & np.uint64(D.DBM)) != 0
    assert dbm.tolist() == [mode == "dbm"] * 4 + [False]
    assert not vm.pgt.lookup(np.array([BASE - 4096, BASE + (6 << 20)], np.int64))[2].any()


def test_a_cut_after_a_host_write_keeps_the_vcpus_own_pages():
    """A ring admission whose batch begins with a host write (not a vCPU access: the cut's
    probe covers the vCPU accesses only, so its kept mask is theirs, not the batch's).  By
    hand, ring mode, one vCPU with one entry of room: the host writes page 3 (stored,
    marked in the backup bitmap); vCPU 0 writes page 1 (permission fault: relaxed, one TLBI
    by IPA, the push that fills its ring, so the store waits); its write of page 2 is held
    back.  Page 1 is writable but unchanged, page 2 still write-protected."""
    seq = [(-1, 3, True), (0, 1, True), (0, 2, True)]
    got = _check("ring", 1, [], [SOFT - 1], seq)
    assert got["faults"] == [1] and got["dirty_events"] == [1]
    assert got["rings"] == [[(0, 1)]] and got["ring_full"] == {0}
    assert got["deferred"] == [1, 2] and got["applied"] == 1 and got["tlbi"] == 1
    assert got["bitmaps"] == [{3}, set()]
    assert got["versions"][1:4] == [0, 0, 1]
    assert got["writable"][1:3] == [True, False]


def test_a_vm_has_one_vcpu_unless_told():
    """``VM(geom, tracking)`` models one vCPU: one dirty ring in ring mode."""
    vm = VM(G, Tracking("ring", "range", RING))
    assert vm.nr_vcpus == 1 and len(vm.rings) == 1


def test_page_versions_are_32_bit_and_wrap():
    """A page's version (the writes the destination must match) is a uint32 counter (4 B a
    page in the memory budget) and wraps like one: 2**32 - 1 plus one write is 0."""
    vm = VM(G, Tracking("bitmap"))
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    version = vm.slots[0].version
    assert version.dtype == np.uint32 and version.shape == (256,)
    version[5] = 2**32 - 1
    vm.access(np.array([BGFN + 5, BGFN + 6], np.int64), np.zeros(2, np.int64), np.ones(2, bool))
    assert version[5:7].tolist() == [0, 1]


def test_a_move_that_turns_logging_on_allocates_the_bitmap():
    """kvm_prepare_memory_region: a MOVE keeps the old bitmap only when the slot logged before
    and after; a slot moved with KVM_MEM_LOG_DIRTY_PAGES newly set gets a new, empty bitmap
    and logs (GET answers, nothing dirty), and one moved with it cleared has none (ENOENT)."""
    vm = VM(G, Tracking("bitmap"))
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    vm.set_memslot(0, BASE + (4 << 20), 1 << 20, slot_flags(log_dirty=True), 4096)
    st = vm.slots[0]
    assert st.logging and st.bitmap is not None and not st.bitmap.any()
    words, _ = DL.get_dirty_log(vm, 0)
    assert words.size == 4 and not words.any()
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)  # moved back, logging off
    assert not vm.slots[0].logging and vm.slots[0].bitmap is None


@pytest.mark.parametrize("initially_set", [False, True])
def test_a_readonly_logging_slot_starts_clean_unless_initially_set(initially_set):
    """kvm_prepare_memory_region gives a READONLY slot with LOG_DIRTY_PAGES a bitmap (never
    write-protected: memslot_is_logging is false for it), all ones only with
    KVM_DIRTY_LOG_INITIALLY_SET (manual protect and init-set both), zeros otherwise."""
    vm = VM(G, Tracking("manual-clear", initially_set=initially_set))
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True, readonly=True), 4096)
    st = vm.slots[0]
    assert not st.logging and st.bitmap is not None
    assert DL.bitmap_pages(st.bitmap).size == (256 if initially_set else 0)


def test_a_slot_keeps_its_name_and_has_none_unless_given():
    """KVM has no slot names; ours label slots in the app: none unless given, and a flags
    change without a name keeps the old one."""
    vm = VM(G, Tracking("bitmap"))
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    vm.set_memslot(1, BASE + (4 << 20), 1 << 20, 0, 4096, name="ram")
    vm.set_memslot(1, BASE + (4 << 20), 1 << 20, slot_flags(log_dirty=True), 4096)
    assert vm.memslots.get(0).name == "" and vm.memslots.get(1).name == "ram"

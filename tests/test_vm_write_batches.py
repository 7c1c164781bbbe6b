"""The guest write path on batches that mix reads, writes and vCPUs, checked against the
same accesses made one at a time (each its own batch), and against counts made by hand.

One batch must leave the same dirty sets, ring contents, descriptors, versions and fault
counts as its accesses applied one by one (the one-timeline rule; Linux v6.17
arch/arm64/kvm/mmu.c:user_mem_abort handles one fault at a time, and
virt/kvm/kvm_main.c:mark_page_dirty_in_slot pushes to the running vCPU's ring).  These pin
what the mutation sample of ``engine/kvm/vm.py``'s write path (the grouping by page, the ring
pushes, the permission faults) found unpinned: behaviour only, so they hold however the write
path is written.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.kvm import dirtylog as DL
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry

G = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12
LOG = slot_flags(log_dirty=True)
BLOCK = 512  # pages in a 2 MiB block (4 KiB granule, level 2)


def _vm(mode="ring", vcpus=2, populate=True, backing=4096, populate1=False):
    """Slot 0: 2 MiB (512 pages) at BASE, populated (mapped) unless told otherwise, then
    logging; slot 1: 2 MiB after it (4 KiB pages), logging, mapped only if ``populate1``."""
    vm = VM(G, Tracking(mode, "range", 4096), nr_vcpus=vcpus)
    vm.set_memslot(0, BASE, 2 << 20, 0, backing, populate=populate)
    vm.set_memslot(0, BASE, 2 << 20, LOG, backing)
    vm.set_memslot(1, BASE + (2 << 20), 2 << 20, 0, 4096, populate=populate1)
    vm.set_memslot(1, BASE + (2 << 20), 2 << 20, LOG, 4096)
    return vm


def _state(vm, res_list):
    """What a batch leaves: rings, bitmaps, versions, leaf descriptors, fault counters."""
    rings = []
    for r in vm.rings or []:
        s, o = r.collect()
        rings.append(list(zip(s.tolist(), o.tolist(), strict=True)))
    pages = BASE + np.arange(2 * BLOCK, dtype=np.int64) * 4096
    level, _, desc = vm.pgt.lookup(pages)
    return {
        "rings": rings,
        "bitmaps": [
            None if vm.slots[i].bitmap is None else DL.bitmap_pages(vm.slots[i].bitmap).tolist()
            for i in (0, 1)
        ],
        "versions": [vm.slots[i].version.tolist() for i in (0, 1)],
        "level": level.tolist(),
        "valid": D.is_valid(desc).tolist(),
        "writable": D.is_writable(desc).tolist(),
        "faults": np.sum([r.faults for r in res_list], axis=0).tolist(),
        "dirty_events": np.sum([r.dirty_events for r in res_list], axis=0).tolist(),
        "stats": {k: vm.stats[k] for k in sorted(vm.stats)},
    }


def _both(seq, **kw):
    """(state after one batch of ``seq``, state after each access alone); ``seq`` is
    (vcpu, page of the two slots' 1024, write) in time order."""
    gfn = np.array([BGFN + p for _, p, _ in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    write = np.array([w for _, _, w in seq], bool)
    one = _vm(**kw)
    batch = _state(one, [one.access(gfn, vcpu, write)])
    each = _vm(**kw)
    res = [each.access(gfn[i : i + 1], vcpu[i : i + 1], write[i : i + 1]) for i in range(len(seq))]
    return batch, _state(each, res)


# (vcpu, page, write): page < 512 is slot 0 (mapped, write-protected), >= 512 slot 1 (unmapped)
MIXED = [
    (0, 600, False),  # vCPU 0 reads page 600 first: it maps read-only
    (1, 5, True),  # vCPU 1 writes page 5: permission fault, its ring
    (1, 600, True),  # vCPU 1 writes page 600: its first write, a permission fault, its ring
    (0, 7, True),
    (0, 5, True),  # already writable: nothing
    (1, 601, False),
    (0, 601, True),  # page 601 first read by vCPU 1, first written by vCPU 0
    (1, 9, False),  # a read of a write-protected page: no fault, nothing marked
]


def test_a_mixed_batch_pushes_each_page_to_its_first_writers_ring():
    """By hand: vCPU 1 first writes 5 then 600; vCPU 0 first writes 7 then 601 (601 was
    first read by vCPU 1, which leaves no trace in any ring)."""
    batch, each = _both(MIXED)
    assert batch["rings"] == [[(0, 7), (1, 601 - 512)], [(0, 5), (1, 600 - 512)]]
    assert batch["bitmaps"] == [[], []]
    # faults: vCPU 0: 600 (translation), 7 (permission), 601 (permission after vCPU 1's read
    # mapped it read-only); vCPU 1: 5, 600 (permission), 601 (translation)
    assert batch["faults"] == [3, 3] and batch["dirty_events"] == [2, 2]
    assert batch == each


def test_a_mixed_batch_in_bitmap_mode_marks_the_written_pages():
    batch, each = _both(MIXED, mode="bitmap")
    assert batch["bitmaps"] == [[5, 7], [600 - 512, 601 - 512]]
    assert batch["dirty_events"] == [2, 2] and batch["faults"] == [3, 3]
    assert batch["writable"][9] is False and batch["writable"][5] is True
    assert batch["writable"][600] is True and batch["valid"][602] is False
    assert batch == each


@pytest.mark.parametrize("mode", ["ring", "bitmap"])
def test_writes_only_by_several_vcpus(mode):
    """Every access a write (the batch's fast path), two vCPUs, repeated pages."""
    seq = [(1, 3, True), (0, 3, True), (0, 700, True), (1, 700, True), (1, 4, True), (0, 3, True)]
    batch, each = _both(seq, mode=mode)
    assert batch["versions"][0][3] == 3 and batch["versions"][0][4] == 1
    assert batch["versions"][1][700 - 512] == 2
    assert batch["dirty_events"] == [1, 2] and batch["faults"] == [1, 2]
    if mode == "ring":
        assert batch["rings"] == [[(1, 700 - 512)], [(0, 3), (0, 4)]]
    assert batch == each


def test_one_vcpu_reading_and_writing():
    seq = [(1, 20, False), (1, 20, True), (1, 21, True), (1, 800, False), (1, 800, True)]
    batch, each = _both(seq)
    assert batch["rings"] == [[], [(0, 20), (0, 21), (1, 800 - 512)]]
    assert batch["faults"] == [0, 4] and batch["dirty_events"] == [0, 3]
    assert batch == each


@pytest.mark.parametrize(
    "seq",
    [
        [(0, 10, False), (1, 11, True), (0, 12, False)],  # a read of the block first
        [(1, 11, True), (0, 10, False), (0, 12, True)],  # the write splits before the reads
        [(0, 10, True), (1, 10, True), (1, 511, True), (0, 300, False)],
    ],
)
def test_a_block_split_by_a_write_in_a_mixed_batch(seq):
    """Slot 0 backed by 2 MiB pages is mapped as one write-protected block: the first write
    breaks it (user_mem_abort: a write fault on a read-only block while logging maps one
    page), the block's other pages fault in at their next access."""
    batch, each = _both(seq, backing=2 << 20)
    assert batch["stats"]["block_splits"] == 1
    assert batch == each


def test_a_block_split_after_reads_beside_write_protected_pages():
    """The block is split by vCPU 1's write after vCPU 0 read through it; in the same batch
    writes to slot 1's pages, mapped and write-protected, take permission faults: the same as
    one access at a time (2 permission faults on slot 1, the split, the block's pages
    faulting in afterwards)."""
    seq = [(0, 10, False), (0, 600, True), (1, 11, True), (0, 12, True), (1, 601, True)]
    batch, each = _both(seq, backing=2 << 20, populate1=True)
    assert batch["stats"]["block_splits"] == 1
    assert batch["rings"][1] == [(0, 11), (1, 601 - 512)]
    assert batch == each


def test_three_vcpus_each_ring_in_its_own_write_order():
    seq = [(2, 40, True), (0, 41, True), (2, 700, True), (1, 40, True), (1, 42, False)]
    seq += [(1, 42, True), (0, 701, False), (2, 701, True), (0, 43, True)]
    batch, each = _both(seq, vcpus=3)
    assert batch["rings"] == [
        [(0, 41), (0, 43)],
        [(0, 42)],
        [(0, 40), (1, 700 - 512), (1, 701 - 512)],
    ]
    assert batch["dirty_events"] == [2, 1, 3]
    assert batch == each


def _unlogged_blocks(vcpus=2):
    """Slot 0 backed by 2 MiB pages, mapped as one block, write-protected by logging, then
    logging switched off before any write: the block stays read-only."""
    vm = VM(G, Tracking("bitmap", "range", 4096), nr_vcpus=vcpus)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, BASE, 2 << 20, LOG, 2 << 20)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20)
    return vm


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_a_write_protected_block_takes_one_fault_for_the_earliest_write(one_at_a_time):
    """Not logging: a write to a read-only block relaxes the whole block (user_mem_abort →
    kvm_pgtable_stage2_relax_perms on the block): one permission fault, counted for the vCPU
    of the earliest write (vCPU 1 at index 1; vCPU 0 read first), one TLBI by IPA, the block
    kept whole and writable, nothing marked dirty."""
    vm = _unlogged_blocks()
    level, _, desc = vm.pgt.lookup(np.array([BASE], np.int64))
    assert level.tolist() == [2] and D.is_writable(desc).tolist() == [False]
    tlbi0 = vm.pgt.tlbi["ipa"]
    gfn = BGFN + np.array([3, 7, 300, 7], np.int64)
    vcpu = np.array([0, 1, 0, 0], np.int64)
    write = np.array([False, True, True, True])
    if one_at_a_time:
        faults = sum(
            vm.access(gfn[i : i + 1], vcpu[i : i + 1], write[i : i + 1]).faults for i in range(4)
        )
    else:
        faults = vm.access(gfn, vcpu, write).faults
    assert faults.tolist() == [0, 1] and vm.stats["permission_faults"] == 1
    assert vm.pgt.tlbi["ipa"] - tlbi0 == 1
    level, _, desc = vm.pgt.lookup(BASE + np.array([0, 511], np.int64) * 4096)
    assert level.tolist() == [2, 2] and D.is_writable(desc).tolist() == [True, True]
    assert vm.slots[0].version[[3, 7, 300]].tolist() == [0, 2, 1]


@pytest.mark.parametrize("with_read", [False, True])
def test_applied_writes_count_host_and_guest_writes_of_one_batch(with_read):
    """A write with no running vCPU (vCPU -1: kvm_write_guest) and a guest's write in one
    batch are two applied stores (a guest read is none); the host's page is marked in the
    bitmap without any fault, the guest's takes its permission fault."""
    vm = _vm(mode="bitmap")
    seq = [(-1, 30), (0, 31)] + ([(0, 32)] if with_read else [])
    gfn = np.array([BGFN + p for _, p in seq], np.int64)
    vcpu = np.array([v for v, _ in seq], np.int64)
    write = np.array([True, True, False][: len(seq)])
    res = vm.access(gfn, vcpu, write)
    assert res.applied_writes == 2 and res.faults.tolist() == [1, 0]
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [30, 31]
    assert vm.slots[0].version[[30, 31, 32]].tolist() == [1, 1, 0]


def test_a_block_mapped_again_after_logging_and_a_permission_fault_in_one_batch():
    """Logging off again: a write to a read-only page of a slot whose backing allows a block
    maps the whole block writable again (user_mem_abort: vma_pagesize > fault_granule →
    kvm_pgtable_stage2_map), while in the same batch a write to a write-protected page of a
    slot still logging takes its permission fault and is marked: one access at a time gives
    the same."""

    def setup():
        vm = _vm(mode="bitmap", backing=2 << 20, populate1=True)
        vm.access(
            np.array([BGFN + 5, BGFN + 6], np.int64), np.zeros(2, np.int64), np.array([True, False])
        )
        vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20)  # logging off for slot 0
        return vm

    gfn = np.array([BGFN + 6, BGFN + 512 + 9], np.int64)
    vcpu = np.array([1, 0], np.int64)
    write = np.ones(2, bool)
    one = setup()
    r = one.access(gfn, vcpu, write)
    each = setup()
    r0 = each.access(gfn[:1], vcpu[:1], write[:1])
    r1 = each.access(gfn[1:], vcpu[1:], write[1:])
    batch = _state(one, [r])
    assert batch == _state(each, [r0, r1])
    assert batch["level"][6] == 2 and batch["writable"][6] is True  # the block, writable
    assert batch["writable"][512 + 9] is True and batch["bitmaps"][1] == [9]
    assert batch["faults"] == [1, 1]
    # both exits found a valid read-only leaf: permission faults (ESR FSC_PERM), the block's
    # re-map included; set-up took one more (the write that split slot 0's write-protected
    # block) and one translation fault (the read of page 6 on the empty table it left)
    assert batch["stats"]["permission_faults"] == 1 + 2
    assert batch["stats"]["translation_faults"] == 1

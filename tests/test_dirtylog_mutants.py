"""``engine/kvm/dirtylog.py`` against what mutation testing found unpinned: KVM_GET_DIRTY_LOG's
swap, copy, flush and counts, the bitmap's byte order, the ring reset's slot rules, enable's
protection and split, and the cost record of each operation.

Expected values by hand from the kernel (v6.17): virt/kvm/kvm_main.c
``kvm_get_dirty_log_protect`` (each non-zero word swapped with zero, the swapped masks
re-protected, one ``kvm_flush_remote_tlbs_memslot`` when any word was non-zero; with manual
protect the bitmap is copied as it is), ``kvm_clear_dirty_log_protect``, virt/kvm/dirty_ring.c
``kvm_dirty_ring_reset`` / ``kvm_reset_dirty_gfn``, arch/arm64/kvm/mmu.c
``kvm_mmu_wp_memory_region`` / ``kvm_mmu_split_memory_region``; or counted page by page.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from engine.kvm import dirtylog as DL
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry

G = Geometry(4096, 40)
BASE = 1 << 30
BGFN = BASE >> 12


def _vm(mode="bitmap", strategy="range", npages=200, backing=4096, **kw):
    """One logging slot of ``npages`` 4 KiB pages at 1 GiB, populated, every page written
    once after logging started (so every bit is set) unless ``write`` is False."""
    write = kw.pop("write", True)
    vm = VM(G, Tracking(mode, strategy, **kw), nr_vcpus=1)
    vm.set_memslot(0, BASE, npages * 4096, 0, backing, populate=True)
    vm.set_memslot(0, BASE, npages * 4096, slot_flags(log_dirty=True), backing)
    if write:
        _write(vm, range(npages))
    return vm


def _write(vm, pages):
    g = BGFN + np.asarray(list(pages), np.int64)
    vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))


def _writable(vm, npages) -> list[bool]:
    """Whether each page of the slot is mapped writable now (a lookup per page)."""
    ipa = (BGFN + np.arange(npages, dtype=np.int64)) << 12
    level, _, desc = vm.pgt.lookup(ipa)
    return D.is_writable(desc).tolist()


# -- the bitmap's layout ----------------------------------------------------------------------


def test_bitmap_pages_reads_word_values_whatever_their_byte_order():
    """Bit i of word w is page 64 w + i (set_bit_le): the words' values count, not how the
    array stores them, so a big-endian array of 1 and 2**63 + 4 gives pages 0, 66 and 127."""
    words = np.array([1, 2**63 + 4], dtype=">u8")
    assert DL.bitmap_pages(words).tolist() == [0, 66, 127]


# -- KVM_GET_DIRTY_LOG ---------------------------------------------------------------------------


def _bitmap_vm(mode="bitmap", **kw):
    """200 pages (4 words, the last holding pages 192..199), pages 0, 5, 64 and 199 written
    after logging started: only they are dirty and writable."""
    vm = _vm(mode, write=False, **kw)
    _write(vm, [0, 5, 64, 199])
    return vm


DIRTY = [0, 5, 64, 199]
WORDS = [1 | 1 << 5, 1, 0, 1 << 7]  # page 199 is bit 199 - 192 = 7 of word 3


def test_get_swaps_the_words_with_zero_protects_them_and_flushes_once():
    """kvm_get_dirty_log_protect without manual protect: the words as they were (4 words
    for 200 pages: n / sizeof(long)), the bitmap zero after, the 4 pages write-protected
    again, one kvm_flush_remote_tlbs_memslot (a range TLBI)."""
    vm = _bitmap_vm()
    st = vm.slots[0]
    assert [p for p, w in enumerate(_writable(vm, 200)) if w] == DIRTY
    flushes = vm.pgt.tlbi["range"]
    words, op = DL.get_dirty_log(vm, 0)
    assert words.dtype == np.uint64 and words.tolist() == WORDS
    assert st.bitmap.tolist() == [0, 0, 0, 0]
    assert not any(_writable(vm, 200))
    assert vm.pgt.tlbi["range"] - flushes == 1 and op.tlbi == {"range": 1}
    assert (op.name, op.words, op.pages) == ("get", 4, 4)
    assert op.counters.total_writes() == 4  # one descriptor write per protected page
    assert list(op.strategies) == ["range"] and op.strategies["range"].pages == 4
    assert vm.op_log[-1] is op


def test_a_get_with_nothing_dirty_returns_zeros_and_does_not_flush():
    """flush stays false when every word is zero: no TLBI, no descriptor touched; the
    returned words are zero and not the bitmap itself."""
    vm = _bitmap_vm()
    DL.get_dirty_log(vm, 0)
    flushes = vm.pgt.tlbi["range"]
    words, op = DL.get_dirty_log(vm, 0)
    assert words.tolist() == [0, 0, 0, 0] and words is not vm.slots[0].bitmap
    assert vm.pgt.tlbi["range"] == flushes and not op.tlbi
    assert (op.words, op.pages, op.counters.total_writes(), op.strategies) == (4, 0, 0, {})


def test_the_words_returned_are_a_copy_of_what_the_bitmap_held():
    """Bits set after a GET (a later write) appear in the bitmap, not in the words the GET
    returned; changing the returned words leaves the bitmap alone."""
    vm = _bitmap_vm()
    words, _ = DL.get_dirty_log(vm, 0)
    _write(vm, [1])
    assert words.tolist() == WORDS
    assert vm.slots[0].bitmap.tolist() == [2, 0, 0, 0]
    words[:] = 0
    assert vm.slots[0].bitmap.tolist() == [2, 0, 0, 0]


def test_manual_protect_get_copies_the_bitmap_and_protects_nothing():
    """With KVM_DIRTY_LOG_MANUAL_PROTECT the GET returns the bitmap itself (copied out):
    the bits stay set, the dirty pages stay writable, no flush; a write after the GET sets
    a bit in the bitmap only."""
    vm = _bitmap_vm("manual-clear")
    st = vm.slots[0]
    flushes = vm.pgt.tlbi["range"]
    words, op = DL.get_dirty_log(vm, 0)
    assert words.tolist() == WORDS and st.bitmap.tolist() == WORDS
    assert [p for p, w in enumerate(_writable(vm, 200)) if w] == DIRTY
    assert vm.pgt.tlbi["range"] == flushes and not op.tlbi
    assert (op.words, op.pages, op.counters.total_writes()) == (4, 0, 0)
    _write(vm, [1])
    assert words.tolist() == WORDS and st.bitmap[0] == 1 | 2 | 1 << 5


def test_a_dbm_get_is_the_scan_s_clean_and_flush_only():
    """DBM: the hardware set W on the first write to each page; GET scans (clears W of the
    dirty pages, one flush) and then only swaps the words: no second protection, no second
    flush.  4 pages dirty: the scan writes 4 descriptors, the GET none."""
    vm = _bitmap_vm("dbm")
    flushes = vm.pgt.tlbi["range"]
    n = len(vm.op_log)
    words, op = DL.get_dirty_log(vm, 0)
    assert words.tolist() == WORDS and vm.slots[0].bitmap.tolist() == [0, 0, 0, 0]
    assert not any(_writable(vm, 200))
    scan = vm.op_log[n]
    assert scan.name == "dbm-scan" and scan.pages == 4 and scan.counters.total_writes() == 4
    assert vm.op_log[n + 1] is op and len(vm.op_log) == n + 2
    assert vm.pgt.tlbi["range"] - flushes == 1 and not op.tlbi
    assert (op.words, op.pages, op.counters.total_writes(), op.strategies) == (4, 4, 0, {})


def test_a_get_is_logged_with_the_words_it_returned_and_its_modelled_cost():
    """A replay's record: GetLog(slot, a read-only copy of the words, model_ns).  The range
    strategy on 4 pages of one last-level table: model_ns is the op's own cost model sum."""
    vm = _bitmap_vm()
    vm.oplog = []
    words, op = DL.get_dirty_log(vm, 0)
    (rec,) = vm.oplog
    assert rec.slot == 0 and rec.bitmap.tolist() == WORDS and not rec.bitmap.flags.writeable
    c = vm.costs
    by_hand = (
        op.counters.total_reads() * c.desc_read
        + op.counters.total_writes() * c.desc_write
        + 4 * c.bitmap_word
        + c.tlbi_range
    )
    assert rec.model_ns == pytest.approx(by_hand) and rec.model_ns > 0


@pytest.mark.parametrize(("slot", "errno"), [(-1, "EINVAL"), (32767, "EINVAL"), (1, "ENOENT")])
def test_get_on_a_slot_id_out_of_range_or_missing(slot, errno):
    """id >= KVM_USER_MEM_SLOTS (32767 on arm64) is EINVAL; a free id below it ENOENT;
    the sentence names the ioctl and the slot."""
    vm = _bitmap_vm()
    with pytest.raises(DL.KvmError) as e:
        DL.get_dirty_log(vm, slot)
    assert e.value.errno_name == errno and e.value.field == "slot"
    assert (
        str(e.value)
        == {
            -1: "EINVAL: slot: KVM_GET_DIRTY_LOG: slot -1 is not 0..32766",
            32767: "EINVAL: slot: KVM_GET_DIRTY_LOG: slot 32767 is not 0..32766",
            1: "ENOENT: slot: KVM_GET_DIRTY_LOG on slot 1: there is no such memslot",
        }[slot]
    )


def test_get_on_the_last_valid_slot_id_is_enoent_not_einval():
    """32766 = KVM_USER_MEM_SLOTS - 1 passes the id check; no such slot: ENOENT."""
    vm = _bitmap_vm()
    with pytest.raises(DL.KvmError) as e:
        DL.get_dirty_log(vm, 32766)
    assert e.value.errno_name == "ENOENT"
    assert "there is no such memslot" in str(e.value)


def test_get_on_a_slot_without_logging_says_so():
    """A memslot that exists but has no dirty bitmap: ENOENT, 'dirty logging is not
    enabled'."""
    vm = VM(G)
    vm.set_memslot(3, BASE, 1 << 20)
    with pytest.raises(DL.KvmError) as e:
        DL.get_dirty_log(vm, 3)
    assert e.value.errno_name == "ENOENT" and "slot 3: dirty logging is not enabled" in str(e.value)


# -- protect in compare mode -------------------------------------------------------------------

STRATS = ("range", "masked-skip", "visitor", "rmap")


def _two_clears(strategy, compare):
    """Manual-clear, 200 pages all written; two CLEAR ioctls in one call: words 0 and 2
    (first_page 0, 64 pages; first_page 128, 64 pages), both in the one last-level table."""
    vm = _vm("manual-clear", strategy, compare=compare)
    calls = [(0, 64, np.array([0b1011], np.uint64)), (128, 64, np.array([1 << 63], np.uint64))]
    return vm, DL.clear_dirty_log_many(vm, 0, calls)


def _counts(c):
    return ({k: v for k, v in c.reads.items() if v}, {k: v for k, v in c.writes.items() if v})


@pytest.mark.parametrize("chosen", ["range", "rmap"])
def test_compare_mode_measures_each_strategy_as_if_it_ran_alone(chosen):
    """Compare mode runs every other strategy on the same input, the ioctls' boundaries
    included (masked-skip walks from the top again at each ioctl's first word): each
    strategy's reads and writes are what a VM running only that strategy counts, and the
    tables end as the chosen strategy leaves them: range protects __ffs..__fls of each mask
    (kvm_mmu_write_protect_pt_masked: pages 0-3 and 191), rmap only the bits (0, 1, 3, 191)."""
    vm, op = _two_clears(chosen, compare=True)
    assert sorted(op.strategies) == sorted(STRATS)
    for name in STRATS:
        _, alone = _two_clears(name, compare=False)
        assert _counts(op.strategies[name].counters) == _counts(alone.strategies[name].counters)
        assert op.strategies[name].pages == 4 and op.strategies[name].words == 2
    assert _counts(op.counters) == _counts(op.strategies[chosen].counters)
    ro = [p for p, w in enumerate(_writable(vm, 200)) if not w]
    assert ro == ([0, 1, 2, 3, 191] if chosen == "range" else [0, 1, 3, 191])


def test_compare_switched_on_without_a_reverse_map_leaves_rmap_out():
    """A run that did not start with compare (or rmap) has no reverse map: compare switched
    on live runs the other strategies but rmap (Simulation._edit_set_tracking allows it)."""
    from dataclasses import replace

    vm = _bitmap_vm("bitmap", strategy="visitor")
    assert vm.pgt.rmap is None
    vm.tracking = replace(vm.tracking, compare=True)
    words, op = DL.get_dirty_log(vm, 0)
    assert sorted(op.strategies) == ["masked-skip", "range", "visitor"]
    assert words.tolist() == WORDS and not any(_writable(vm, 200))


# -- the cost record ----------------------------------------------------------------------------


def test_op_stats_model_ns_by_hand():
    """walk_ns(reads, writes, tlbi, words) + splits x split_block, with costs chosen so
    each term shows: 5 + 7 reads at 1 ns, 2 writes at 10 ns, 3 words at 100 ns, a range
    TLBI at 1000 ns and a VMID one at 20000, 2 splits at 300000 ns."""
    from engine.kvm.costs import CostModel

    c = CostModel(desc_read=1, desc_write=10, bitmap_word=100, tlbi_range=1000, tlbi_vmid=20000)
    c = CostModel(**{**c.as_dict(), "split_block": 300000})
    op = DL.OpStats("get", words=3, splits=2)
    op.counters.reads.update({2: 5, 3: 7})
    op.counters.writes.update({3: 2})
    op.tlbi.update({"range": 1, "vmid": 1})
    assert op.model_ns(c) == 12 + 20 + 300 + 1000 + 20000 + 600000


def test_op_stats_add_sums_every_count_and_keeps_the_largest_reverse_map():
    """Adding B to A: counters per level, TLBIs per kind, words, pages, splits and wall
    time summed; each strategy's counters, words, pages, wall and CPU time summed, a
    strategy only B ran copied in; the reverse map's bytes are a size, not a count: the
    larger stays."""
    from engine.kvm.wrprotect import ProtectStats

    a = DL.OpStats("clear", words=1, pages=2, splits=3, wall_ns=4)
    a.counters.reads.update({3: 1})
    a.counters.tables_visited = 1
    a.tlbi.update({"range": 1})
    a.strategies["rmap"] = ProtectStats("rmap", words=1, pages=2, wall_ns=3, cpu_ns=4)
    a.strategies["rmap"].rmap_bytes = 500
    a.strategies["rmap"].counters.writes.update({3: 2})
    b = DL.OpStats("clear", words=10, pages=20, splits=30, wall_ns=40)
    b.counters.reads.update({3: 10, 2: 1})
    b.counters.tables_visited = 2
    b.tlbi.update({"range": 2, "vmid": 1})
    b.strategies["rmap"] = ProtectStats("rmap", words=10, pages=20, wall_ns=30, cpu_ns=40)
    b.strategies["rmap"].rmap_bytes = 300
    b.strategies["rmap"].counters.writes.update({3: 5})
    b.strategies["range"] = ProtectStats("range", words=7, pages=8, wall_ns=9, cpu_ns=6)
    b.strategies["range"].rmap_bytes = 0
    a.add(b)
    assert (a.words, a.pages, a.splits, a.wall_ns) == (11, 22, 33, 44)
    assert dict(a.counters.reads) == {3: 11, 2: 1} and a.counters.tables_visited == 3
    assert dict(a.tlbi) == {"range": 3, "vmid": 1}
    r = a.strategies["rmap"]
    assert (r.words, r.pages, r.wall_ns, r.cpu_ns, r.rmap_bytes) == (11, 22, 33, 44, 500)
    assert dict(r.counters.writes) == {3: 7}
    g = a.strategies["range"]
    assert (g.strategy, g.words, g.pages, g.wall_ns, g.cpu_ns, g.rmap_bytes) == (
        "range",
        7,
        8,
        9,
        6,
        0,
    )
    b.strategies["rmap"].rmap_bytes = 900
    a.add(b)
    assert a.strategies["rmap"].rmap_bytes == 900
    assert b.strategies["range"].words == 7  # b itself is not changed


# -- enable ---------------------------------------------------------------------------------------


def _leaves(vm, npages):
    """Level of the leaf mapping each page of the slot, and whether it is writable; every
    page must be mapped (a split table is filled from its block: stage2_split_walker
    creates it populated, so nothing faults after an eager split)."""
    ipa = (BGFN + np.arange(npages, dtype=np.int64)) << 12
    level, _, desc = vm.pgt.lookup(ipa)
    assert ((desc & np.uint64(D.VALID)) != 0).all()
    return level.tolist(), D.is_writable(desc).tolist()


def _populated(mode="bitmap", npages=1024, backing=2 << 20, **kw):
    vm = VM(G, Tracking(mode, "range", **kw), nr_vcpus=1)
    vm.set_memslot(0, BASE, npages * 4096, 0, backing, populate=True)
    return vm


def test_enable_write_protects_the_slot_s_blocks_and_flushes_once():
    """kvm_mmu_wp_memory_region: every leaf of the slot read-only (two 2 MiB blocks stay
    blocks without eager split), then one kvm_flush_remote_tlbs_memslot; the bitmap is
    ceil(1024 / 64) = 16 zero words."""
    vm = _populated()
    assert _leaves(vm, 1024) == ([2] * 1024, [True] * 1024)
    flushes = vm.pgt.tlbi["range"]
    vm.set_memslot(0, BASE, 1024 * 4096, slot_flags(log_dirty=True), 2 << 20)
    st = vm.slots[0]
    assert _leaves(vm, 1024) == ([2] * 1024, [False] * 1024)
    assert st.logging is True and st.bitmap.dtype == np.uint64 and st.bitmap.tolist() == [0] * 16
    assert vm.pgt.tlbi["range"] - flushes == 1
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.tlbi == {"range": 1} and op.splits == 0
    assert op.counters.writes[2] == 2  # the two block descriptors


def test_enable_with_eager_split_splits_every_block_of_the_slot():
    """kvm_mmu_split_memory_region after the write-protect: both 2 MiB blocks become
    tables of read-only pages (two splits, each a break-before-make TLBI of its block:
    stage2_split_walker -> stage2_try_break_pte), one flush of the slot."""
    vm = _populated(eager_split=2 << 20)
    flushes = vm.pgt.tlbi["range"]
    vm.set_memslot(0, BASE, 1024 * 4096, slot_flags(log_dirty=True), 2 << 20)
    assert _leaves(vm, 1024) == ([3] * 1024, [False] * 1024)
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.splits == 2 and op.tlbi == {"range": 1, "ipa_is": 2}
    assert vm.pgt.tlbi["range"] - flushes == 1


def test_eager_split_of_a_1_gib_block_goes_down_to_pages():
    """A 1 GiB block splits into 512 blocks of 2 MiB, each into 512 pages: 513 splits, no
    block left at level 1 or 2."""
    vm = _populated(npages=1 << 18, backing=1 << 30, eager_split=2 << 20)
    vm.set_memslot(0, BASE, 1 << 30, slot_flags(log_dirty=True), 1 << 30)
    levels, writable = _leaves(vm, 1 << 18)
    assert set(levels) == {3} and not any(writable)
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.splits == 513


def test_eager_split_of_1_gib_and_2_mib_blocks_in_one_walk_leaves_only_pages():
    """A slot of 1 GiB + 4 MiB + 8 pages at 1 GiB backed by 1 GiB pages is mapped as a
    1 GiB block, two 2 MiB blocks and 8 pages.  The eager split turns both kinds into
    read-only pages: 1 + 512 splits for the 1 GiB block (its 512 new 2 MiB blocks are split
    as well) and 2 for the 2 MiB blocks, 515 in all, each a break-before-make TLBI."""
    npages = (1 << 18) + 1024 + 8
    vm = _populated(npages=npages, backing=1 << 30, eager_split=2 << 20)
    assert Counter(_leaves(vm, npages)[0]) == {1: 1 << 18, 2: 1024, 3: 8}
    vm.set_memslot(0, BASE, npages * 4096, slot_flags(log_dirty=True), 1 << 30)
    levels, writable = _leaves(vm, npages)
    assert set(levels) == {3} and not any(writable)
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.splits == 515 and op.tlbi == {"range": 1, "ipa_is": 515}


def test_dbm_enable_splits_and_marks_every_page_clean_and_dbm():
    """DBM tracks at page granularity: blocks split (a break-before-make TLBI each), every
    page valid with DBM set and W clear (clean); one flush of the slot.  The cleaning walk
    reads one L1 entry (1 GiB covers the slot), the two L2 entries and the 1024 pages, and
    writes each page once."""
    vm = _populated("dbm")
    vm.set_memslot(0, BASE, 1024 * 4096, slot_flags(log_dirty=True), 2 << 20)
    ipa = (BGFN + np.arange(1024, dtype=np.int64)) << 12
    level, _, desc = vm.pgt.lookup(ipa)
    assert set(level.tolist()) == {3}
    assert ((desc & np.uint64(D.DBM)) != 0).all() and not D.is_writable(desc).any()
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.splits == 2 and op.tlbi == {"range": 1, "ipa_is": 2}
    assert _counts(op.counters) == ({1: 1, 2: 2, 3: 1024}, {3: 1024})


@pytest.mark.parametrize(("npages", "last"), [(191, 2**63 - 1), (192, 2**64 - 1), (193, 1)])
def test_initially_set_enable_sets_every_bit_and_protects_nothing(npages, last):
    """KVM_DIRTY_LOG_INITIALLY_SET: the bitmap starts all ones up to the last page (191
    pages: the third word's 63 low bits; 192: three full words; 193: a fourth word of one
    bit), nothing is write-protected, no flush."""
    vm = VM(G, Tracking("manual-clear", "range", initially_set=True), nr_vcpus=1)
    vm.set_memslot(0, BASE, npages * 4096, 0, 4096, populate=True)
    flushes = vm.pgt.tlbi["range"]
    vm.set_memslot(0, BASE, npages * 4096, slot_flags(log_dirty=True), 4096)
    st = vm.slots[0]
    assert st.bitmap.tolist()[:-1] == [2**64 - 1] * (st.bitmap.size - 1)
    assert int(st.bitmap[-1]) == last and st.bitmap.size == (npages + 63) // 64
    assert all(_writable(vm, npages)) and vm.pgt.tlbi["range"] == flushes
    op = next(o for o in vm.op_log if o.name == "enable")
    assert op.tlbi == {} and op.counters.total_writes() == 0


# -- the dirty ring ---------------------------------------------------------------------------


def _ring_vm(vcpus=2):
    """Ring mode (256 entries a vCPU), two logging slots of 200 pages: slot 0 at 1 GiB,
    slot 1 at 1 GiB + 64 MiB; nothing written yet."""
    vm = VM(G, Tracking("ring", "range", ring_entries=256), nr_vcpus=vcpus)
    for sid, base in ((0, BASE), (1, BASE + (64 << 20))):
        vm.set_memslot(sid, base, 200 * 4096, 0, 4096, populate=True)
        vm.set_memslot(sid, base, 200 * 4096, slot_flags(log_dirty=True), 4096)
    return vm


def _ring_writes(vm, gfns, vcpus):
    g = np.asarray(gfns, np.int64)
    vm.access(g, np.asarray(vcpus, np.int64), np.ones(g.size, bool))


S1 = BGFN + (64 << 8)  # slot 1's first gfn


def test_a_ring_harvest_is_ring_0_then_ring_1_and_is_logged():
    """kvm_dirty_ring_push per vCPU; user space reads ring 0's entries, then ring 1's, each
    in push order; the RingCollect record holds read-only copies of both arrays."""
    vm = _ring_vm()
    vm.oplog = []
    _ring_writes(vm, [BGFN + 5, S1 + 7, BGFN + 130], [1, 0, 1])
    slots, offs = DL.collect_rings(vm)
    assert slots.tolist() == [1, 0, 0] and offs.tolist() == [7, 5, 130]
    rec = vm.oplog[-1]
    assert isinstance(rec, DL.OL.RingCollect) and rec.at_ring_full is False
    assert rec.slots.tolist() == [1, 0, 0] and rec.offsets.tolist() == [7, 5, 130]
    assert not rec.slots.flags.writeable and not rec.offsets.flags.writeable


def test_a_vm_without_rings_harvests_nothing():
    """Bitmap mode has no rings: empty uint32 slot ids and uint64 offsets, nothing logged."""
    vm = _vm(write=False)
    vm.oplog = []
    slots, offs = DL.collect_rings(vm)
    assert (slots.dtype, offs.dtype, slots.size, offs.size) == (np.uint32, np.uint64, 0, 0)
    assert vm.oplog == []


def test_a_ring_reset_protects_each_slot_s_pages_and_flushes_the_vm_once():
    """KVM_RESET_DIRTY_RINGS: 3 entries in 2 slots, 3 one-page masks (pages 5 and 130 of
    slot 0, 7 of slot 1) write-protected again, one kvm_flush_remote_tlbs (a VMID TLBI);
    RingReset(3 entries, model_ns, not at a ring-full exit) logged."""
    vm = _ring_vm()
    _ring_writes(vm, [BGFN + 5, S1 + 7, BGFN + 130], [1, 0, 1])
    DL.collect_rings(vm)
    vm.oplog = []
    vmid = vm.pgt.tlbi["vmid"]
    op = DL.reset_rings(vm)
    assert (op.name, op.pages, op.words) == ("ring-reset", 3, 3)
    assert vm.pgt.tlbi["vmid"] - vmid == 1 and op.tlbi == {"vmid": 1}
    assert op.counters.total_writes() == 3
    assert not any(_writable(vm, 200))
    ipa = (S1 + np.arange(200, dtype=np.int64)) << 12
    assert not D.is_writable(vm.pgt.lookup(ipa)[2]).any()
    (rec,) = vm.oplog
    assert isinstance(rec, DL.OL.RingReset)
    assert (rec.entries, rec.at_ring_full) == (3, False)
    assert rec.model_ns == pytest.approx(op.model_ns(vm.costs)) and rec.model_ns > 0


def test_a_reset_with_no_entries_does_nothing_and_does_not_flush():
    """No harvested entries: no protection, no TLBI (kvm_dirty_ring_reset with nothing to
    reset returns before the flush); the record says 0 entries."""
    vm = _ring_vm()
    vm.oplog = []
    vmid = vm.pgt.tlbi["vmid"]
    op = DL.reset_rings(vm)
    assert (op.pages, op.words, dict(op.tlbi)) == (0, 0, {}) and vm.pgt.tlbi["vmid"] == vmid
    assert [r.entries for r in vm.oplog] == [0]


def test_a_reset_merges_neighbouring_entries_into_masks_per_slot():
    """One vCPU writes slot 0 pages 1, 2, 3 and slot 1 page 9, then slot 0 page 66: masks
    (0, 1, 0b111), (1, 9, 1), (0, 66, 1): 3 words, 5 entries; every page protected again."""
    vm = _ring_vm(vcpus=1)
    _ring_writes(vm, [BGFN + 1, BGFN + 2, BGFN + 3, S1 + 9, BGFN + 66], [0] * 5)
    DL.collect_rings(vm)
    op = DL.reset_rings(vm)
    assert (op.pages, op.words) == (5, 3)
    assert not any(_writable(vm, 200))
    assert op.counters.total_writes() == 5  # one descriptor per page of the 5


def test_a_reset_over_two_slots_adds_up_each_strategy_s_stats():
    """One reset, masks in two slots (protect runs once per slot): slot 0 pages 1, 2, 3 (one
    mask, 0b111), slot 1 pages 9 and 100 (two masks).  Every strategy of compare mode did
    3 words, 5 pages and 5 page writes in all (2 of each in slot 1 alone), as op.counters
    says for the chosen one: a strategy's record is the sum over the slots, not the last's."""
    vm = VM(G, Tracking("ring", "range", ring_entries=256, compare=True), nr_vcpus=1)
    for sid, base in ((0, BASE), (1, BASE + (64 << 20))):
        vm.set_memslot(sid, base, 200 * 4096, 0, 4096, populate=True)
        vm.set_memslot(sid, base, 200 * 4096, slot_flags(log_dirty=True), 4096)
    _ring_writes(vm, [BGFN + 1, BGFN + 2, BGFN + 3, S1 + 9, S1 + 100], [0] * 5)
    DL.collect_rings(vm)
    op = DL.reset_rings(vm)
    assert (op.pages, op.words) == (5, 3) and _counts(op.counters)[1] == {3: 5}
    assert sorted(op.strategies) == sorted(STRATS)
    for name, st in op.strategies.items():
        assert (st.strategy, st.words, st.pages) == (name, 3, 5)
        assert _counts(st.counters)[1] == {3: 5}


def test_entries_of_two_rings_never_share_a_mask():
    """kvm_dirty_ring_reset walks one vCPU's ring at a time, its mask starting afresh: page
    5 in ring 0 and page 6 in ring 1 (one slot) are two masks (2 words), not (5, 0b11)."""
    vm = _ring_vm()
    _ring_writes(vm, [BGFN + 5, BGFN + 6], [0, 1])
    assert DL.collect_rings(vm)[1].tolist() == [5, 6]
    op = DL.reset_rings(vm)
    assert (op.pages, op.words) == (2, 2)
    assert not any(_writable(vm, 200))


def test_the_reset_after_a_ring_full_exit_is_logged_as_such():
    """A vCPU whose ring reaches its soft limit (256 - 64 = 192 entries) exits; the reap
    and the reset that follow are marked at_ring_full in the records."""
    vm = _ring_vm(vcpus=1)
    vm.oplog = []
    res = vm.access(
        BGFN + np.arange(200, dtype=np.int64), np.zeros(200, np.int64), np.ones(200, bool)
    )
    assert res.deferred is not None and res.deferred.size and vm.awaiting_retry
    DL.collect_rings(vm)
    DL.reset_rings(vm)
    collect, reset = vm.oplog[-2:]
    assert collect.at_ring_full is True and collect.offsets.size == 192
    assert (reset.entries, reset.at_ring_full) == (192, True)


def test_a_deleted_slot_s_entries_are_skipped_and_the_next_slot_s_still_protected():
    """kvm_reset_dirty_gfn returns for an entry whose slot is gone and the reset goes on:
    slot 0 (named first in the ring) deleted, slot 1's pages 7 and 100 protected again;
    only slot 1's 2 masks count as words, all 3 entries as pages.  A second reset of new
    entries flushes again (two VMID TLBIs in all, one per reset)."""
    vm = _ring_vm(vcpus=1)
    _ring_writes(vm, [BGFN + 5, S1 + 7, S1 + 100], [0, 0, 0])
    DL.collect_rings(vm)
    vm.set_memslot(0, BASE, 0)  # delete slot 0
    vmid = vm.pgt.tlbi["vmid"]
    op = DL.reset_rings(vm)
    assert (op.pages, op.words) == (3, 2)
    ipa = (S1 + np.arange(200, dtype=np.int64)) << 12
    assert not D.is_writable(vm.pgt.lookup(ipa)[2]).any()
    _ring_writes(vm, [S1 + 8], [0])
    DL.collect_rings(vm)
    op = DL.reset_rings(vm)
    assert op.tlbi == {"vmid": 1} and vm.pgt.tlbi["vmid"] - vmid == 2


# -- setting and clearing many bits -------------------------------------------------------------


def test_pages_after_the_first_but_out_of_order_set_and_clear_their_own_bits():
    """Pages 0, 70, 5, 71 (each at or above the first, but 70 before 5): words 0 and 1 get
    bits 0 and 5, and 6 and 7 (70 = 64 + 6); clearing 70 and 0 afterwards (in that order)
    leaves bits 5 and 7."""
    words = np.zeros(2, np.uint64)
    DL.set_bits(words, np.array([0, 70, 5, 71]))
    assert words.tolist() == [1 | 1 << 5, 1 << 6 | 1 << 7]
    DL.clear_bits(words, np.array([70, 0]))
    assert words.tolist() == [1 << 5, 1 << 7]


def test_no_pages_set_or_clear_nothing():
    """An empty page list (a batch that wrote nothing) leaves the words as they are."""
    words = np.array([5, 7], np.uint64)
    DL.set_bits(words, [])
    DL.clear_bits(words, [])
    assert words.tolist() == [5, 7]


def test_many_repeated_pages_of_a_short_bitmap_set_and_clear_exactly_their_words():
    """4096 pages (the dense path's threshold) that repeat pages 64..191: words 1 and 2 of
    a 3-word bitmap all ones, word 0 untouched; clearing them leaves word 0's bits only."""
    words = np.array([5, 0, 0], np.uint64)
    pages = np.tile(np.arange(64, 192), 32)
    assert pages.size == 4096
    DL.set_bits(words, pages)
    assert words.tolist() == [5, 2**64 - 1, 2**64 - 1]
    DL.clear_bits(words, pages)
    assert words.tolist() == [5, 0, 0]


def test_an_operation_s_wall_time_is_what_it_took():
    """_Measure: the op's wall_ns is the time between its start and end, so between 0 and
    the time the caller saw around the call."""
    import time

    vm = _bitmap_vm()
    t0 = time.perf_counter_ns()
    _, op = DL.get_dirty_log(vm, 0)
    assert 0 < op.wall_ns <= time.perf_counter_ns() - t0


def test_a_second_eager_enable_splits_nothing_and_counts_no_split():
    """Logging off leaves the split tables in place (blocks come back only through faults),
    so enabling again with eager split finds no block: 0 splits (not the 2 of the first
    enable again), no break-before-make TLBI, one flush."""
    vm = _populated(eager_split=2 << 20)
    log, off = slot_flags(log_dirty=True), 0
    vm.set_memslot(0, BASE, 1024 * 4096, log, 2 << 20)
    vm.set_memslot(0, BASE, 1024 * 4096, off, 2 << 20)
    assert vm.pgt.splits == 2
    vm.set_memslot(0, BASE, 1024 * 4096, log, 2 << 20)
    op = [o for o in vm.op_log if o.name == "enable"][-1]
    assert op.splits == 0 and op.tlbi == {"range": 1}
    assert _leaves(vm, 1024) == ([3] * 1024, [False] * 1024)


def test_many_repeats_of_a_few_low_pages_in_a_one_word_bitmap():
    """Pages 0..15, each 256 times (4096 pages): bits 0-15 of the only word."""
    words = np.zeros(1, np.uint64)
    DL.set_bits(words, np.repeat(np.arange(16), 256))
    assert words.tolist() == [0xFFFF]
    DL.clear_bits(words, np.repeat(np.arange(8), 512))
    assert words.tolist() == [0xFF00]


# -- KVM_CLEAR_DIRTY_LOG ---------------------------------------------------------------------------


def test_clears_flush_once_per_ioctl_that_cleared_a_set_bit():
    """kvm_clear_dirty_log_protect: each ioctl ANDs its mask out of the bitmap, re-protects
    what was really set, and flushes once if it re-protected anything.  Pages 0, 5, 64 and
    199 dirty; CLEAR (0, 64, page 0), (64, 64, page 65: not set), (192, 8, page 199): two
    flushes, 3 words read, 2 pages re-protected; pages 5 and 64 stay dirty and writable."""
    vm = _bitmap_vm("manual-clear")
    flushes = vm.pgt.tlbi["range"]
    calls = [
        (0, 64, np.array([1], np.uint64)),
        (64, 64, np.array([2], np.uint64)),
        (192, 8, np.array([1 << 7], np.uint64)),
    ]
    op = DL.clear_dirty_log_many(vm, 0, calls)
    assert (op.name, op.words, op.pages) == ("clear", 3, 2)
    assert vm.pgt.tlbi["range"] - flushes == 2 and op.tlbi == {"range": 2}
    assert op.counters.total_writes() == 2
    assert vm.slots[0].bitmap.tolist() == [1 << 5, 1, 0, 0]
    assert [p for p, w in enumerate(_writable(vm, 200)) if w] == [5, 64]


def test_masked_skip_walks_from_the_root_again_at_each_clear_ioctl():
    """masked-skip keeps its walk from one word to the next inside one ioctl, but each
    CLEAR ioctl starts from the root (KVM takes the words of one ioctl in one call chain):
    pages 0 and 64 cleared by two ioctls read one L1 and one L2 descriptor more than the
    same two words cleared by one ioctl; the same 2 pages are re-protected."""

    def clear(calls):
        vm = _vm("manual-clear", "masked-skip")
        op = DL.clear_dirty_log_many(vm, 0, calls)
        return _counts(op.counters)

    one = clear([(0, 128, np.array([1, 1], np.uint64))])
    two = clear([(0, 64, np.array([1], np.uint64)), (64, 64, np.array([1], np.uint64))])
    assert one[1] == two[1] == {3: 2}
    assert two[0] == {k: v + (k in (1, 2)) for k, v in one[0].items()}


def test_clear_on_a_missing_slot_or_one_without_logging_says_which():
    """kvm_clear_dirty_log_protect: ENOENT for no such slot or no dirty bitmap; the
    sentence names the ioctl and the slot."""
    vm = _bitmap_vm("manual-clear")
    vm.set_memslot(3, BASE + (64 << 20), 1 << 20)
    one = np.array([1], np.uint64)
    with pytest.raises(DL.KvmError) as e:
        DL.clear_dirty_log(vm, 1, 0, 64, one)
    assert str(e.value) == "ENOENT: slot: KVM_CLEAR_DIRTY_LOG on slot 1: there is no such memslot"
    with pytest.raises(DL.KvmError) as e:
        DL.clear_dirty_log(vm, 3, 0, 64, one)
    assert str(e.value) == (
        "ENOENT: slot: KVM_CLEAR_DIRTY_LOG on slot 3: dirty logging is not enabled"
    )


def test_no_clear_calls_is_a_clear_that_did_nothing():
    """An empty list of CLEARs: an op named "clear" with nothing read, cleared or flushed,
    and no record for a replay (no ioctl was made)."""
    vm = _bitmap_vm("manual-clear")
    vm.oplog = []
    op = DL.clear_dirty_log_many(vm, 0, [])
    assert (op.name, op.words, op.pages, dict(op.tlbi)) == ("clear", 0, 0, {})
    assert vm.oplog == [] and vm.slots[0].bitmap.tolist() == WORDS


def test_overlapping_clears_clear_each_bit_once():
    """Two CLEARs of word 0, pages 0 and 1 then page 1 again (done one ioctl after the
    other): the second finds page 1 already clear and re-protects nothing, so 2 pages and
    one flush in all, 2 words read."""
    vm = _vm("manual-clear", npages=200)
    flushes = vm.pgt.tlbi["range"]
    calls = [(0, 64, np.array([0b11], np.uint64)), (0, 64, np.array([0b10], np.uint64))]
    op = DL.clear_dirty_log_many(vm, 0, calls)
    assert (op.name, op.words, op.pages) == ("clear", 2, 2)
    assert vm.pgt.tlbi["range"] - flushes == 1 and op.counters.total_writes() == 2
    assert int(vm.slots[0].bitmap[0]) == 2**64 - 4
    assert [p for p, w in enumerate(_writable(vm, 200)) if not w] == [0, 1]


def test_initially_set_eager_clears_together_are_the_ioctls_one_after_another():
    """INITIALLY_SET with eager split: each CLEAR write-protects its words and then splits
    the blocks they touch (kvm_arch_mmu_enable_log_dirty_pt_masked), so a later ioctl
    finds pages where an earlier one split.  Two ioctls in one 2 MiB block (pages 0 and
    64) given together count, split and protect as the same two given one at a time."""

    def run(together):
        vm = VM(G, Tracking("manual-clear", "range", eager_split=2 << 20, initially_set=True))
        vm.set_memslot(0, BASE, 1024 * 4096, 0, 2 << 20, populate=True)
        vm.set_memslot(0, BASE, 1024 * 4096, slot_flags(log_dirty=True), 2 << 20)
        calls = [(0, 64, np.array([1], np.uint64)), (64, 64, np.array([1], np.uint64))]
        ops = (
            [DL.clear_dirty_log_many(vm, 0, calls)]
            if together
            else [DL.clear_dirty_log(vm, 0, *c) for c in calls]
        )
        reads = sum((o.counters.reads for o in ops), start=Counter())
        writes = sum((o.counters.writes for o in ops), start=Counter())
        tlbi = sum((o.tlbi for o in ops), start=Counter())
        return reads, writes, tlbi, sum(o.splits for o in ops), _leaves(vm, 1024)

    one_by_one = run(False)
    assert one_by_one[3] == 1 and one_by_one[4][0][:512] == [3] * 512
    assert run(True) == one_by_one


@pytest.mark.parametrize(
    ("calls", "pages", "flushes", "words"),
    [
        # word 2 cleared by the second ioctl (2 words) and again by the third
        ([(0, 64, [1]), (64, 128, [1, 1]), (128, 64, [1])], [0, 64, 128], 2, 4),
        # word 5 cleared twice, after word 0
        ([(0, 64, [1]), (320, 64, [1]), (320, 64, [1])], [0, 320], 2, 3),
    ],
)
def test_three_clears_with_a_word_cleared_twice(calls, pages, flushes, words):
    """A later ioctl that clears a word an earlier one cleared finds those bits clear:
    no re-protection and no flush for it (kvm_clear_dirty_log_protect per ioctl)."""
    vm = _vm("manual-clear", npages=400)
    flushes0 = vm.pgt.tlbi["range"]
    op = DL.clear_dirty_log_many(vm, 0, [(f, n, np.array(m, np.uint64)) for f, n, m in calls])
    assert (op.words, op.pages) == (words, len(pages))
    assert vm.pgt.tlbi["range"] - flushes0 == flushes
    assert [p for p, w in enumerate(_writable(vm, 400)) if not w] == pages


def test_a_dbm_scan_keeps_the_bits_already_in_the_bitmap():
    """DBM: a host write (no vCPU running: mark_page_dirty) sets its bit in the bitmap; the
    scan at GET adds the pages the hardware dirtied (512 pages: one whole last-level table,
    cleaned in place) to it, so the GET reports both the host's page 3 and the vCPU's 5."""
    vm = _vm("dbm", npages=512, write=False)
    g = np.array([BGFN + 3, BGFN + 5], np.int64)
    vm.access(g, np.array([-1, 0], np.int64), np.ones(2, bool))
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == [3, 5]


# -- next_set_bits: words whose bits add up to a full word's count -------------------------------


@pytest.mark.parametrize(
    ("words", "want"),
    [
        ([0xFFFF0000, 0xFFFF], [*range(16, 32), *range(64, 80)]),  # 32 bits in 2 words
        (
            [0xF0, 0xF0, 0xF0, 0xF0],
            [4, 5, 6, 7, 68, 69, 70, 71, 132, 133, 134, 135, 196, 197, 198, 199],
        ),
        ([1 << 63] * 8, [64 * k + 63 for k in range(8)]),  # 8 bits in 8 words
    ],
)
def test_only_whole_words_give_their_bits_as_one_range(words, want):
    """Bits set in every position of the words (64 per word) are offsets 0 .. 64n - 1; words
    whose bits merely add up to 64 / n (16 bits in 4 words, 8 in 8, 32 in 2) are not full
    and give their own offsets (by hand: 64 x word + bit)."""
    got = DL.next_set_bits(np.array(words, np.uint64), 0, 64 * len(words), 1000)
    assert got.tolist() == want and got.dtype == np.int64

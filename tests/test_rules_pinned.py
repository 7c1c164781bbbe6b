"""Rules pinned by hand-derived values: each test would fail under one realistic slip.

Every expected value here is worked out by hand from the kernel/QEMU rule named in the test's
docstring, never read back from the engine.  `make mutants` (mutation/run.py) checks that
these tests notice the slips they are written against.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.files.session import MigrationCfg
from engine.kvm import dirtylog as DL
from engine.kvm.dirtyring import DirtyRing, check_ring_size, merge_masks, ring_entry_limits
from engine.kvm.memslots import Memslots, fmt_size
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.migration.precopy import Migration, SlotMig
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.util.errors import KvmError

G4K = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12


def _ring_vm(ring: int = 256, npages: int = 512) -> VM:
    vm = VM(G4K, Tracking("ring", "range", ring), nr_vcpus=1)
    vm.set_memslot(0, BASE, npages * 4096, slot_flags(log_dirty=True), 4096, populate=True)
    return vm


# -- dirty ring: the soft-full exit ------------------------------------------------------------


def test_writes_that_exactly_fill_the_ring_stop_the_vcpu():
    """virt/kvm/dirty_ring.c (Linux v6.17): kvm_dirty_ring_soft_full() is ``used >=
    soft_limit`` and soft_limit = size - KVM_DIRTY_RING_RSVD_ENTRIES (64;
    kvm_cpu_dirty_log_size() is 0 on arm64).  A 256-entry ring (4 KiB, the smallest KVM takes
    with 4K pages) is full after the 192nd push: 192 first writes to protected pages fill it
    exactly, so the vCPU exits with KVM_EXIT_DIRTY_RING_FULL.  The push that filled it came
    from the fault of write 192 (batch index 191), whose store is retried after the reset
    (kvm_dirty_ring_check_request): 191 stores done, that one write deferred."""
    vm = _ring_vm()
    res = vm.access(BGFN + np.arange(192), np.zeros(192, np.int64), np.ones(192, bool))
    assert res.ring_full == {0}
    assert vm.rings[0].used == 192 and vm.rings[0].soft_full
    assert res.faults.tolist() == [192] and res.applied_writes == 191
    assert res.deferred is not None and res.deferred.tolist() == [191]


def test_one_write_short_of_the_soft_limit_keeps_the_vcpu_running():
    """Same rule, 191 pushes: used 191 < 192, no exit, every store done."""
    vm = _ring_vm()
    res = vm.access(BGFN + np.arange(191), np.zeros(191, np.int64), np.ones(191, bool))
    assert res.ring_full == set()
    assert vm.rings[0].used == 191 and not vm.rings[0].soft_full
    assert res.applied_writes == 191
    assert res.deferred is None or res.deferred.size == 0


def test_the_writes_after_the_soft_limit_wait_for_the_harvest():
    """193 first writes into a 256-entry ring: 192 pushes fill it; the filling write (index
    191) and the one after it (192) wait for user space to harvest and reset the ring."""
    vm = _ring_vm()
    res = vm.access(BGFN + np.arange(193), np.zeros(193, np.int64), np.ones(193, bool))
    assert res.ring_full == {0}
    assert res.deferred is not None and res.deferred.tolist() == [191, 192]
    assert vm.rings[0].used == 192


# -- memslots: touching is fine, overlapping by one page is EEXIST -----------------------------


def test_two_memslots_that_merely_touch_are_accepted():
    """__kvm_set_memory_region (virt/kvm/kvm_main.c, 6.12): a new slot is refused with EEXIST
    only if ``base < other.base + other.npages && other.base < base + npages`` — half-open
    ranges, so [1 GiB, 1 GiB + 2 MiB) and [1 GiB + 2 MiB, ...) do not overlap."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 2 << 20)
    ms.set_user_memory_region(1, BASE + (2 << 20), 2 << 20)  # starts where slot 0 ends
    ms.set_user_memory_region(2, BASE - (1 << 20), 1 << 20)  # ends where slot 0 starts
    assert [(s.id, s.base_gfn) for s in ms.sorted()] == [
        (2, BGFN - 256),
        (0, BGFN),
        (1, BGFN + 512),
    ]


@pytest.mark.parametrize(
    "base",
    [BASE + (2 << 20) - 4096, BASE - (1 << 20) + 4096],
    ids=["starts-one-page-inside", "ends-one-page-inside"],
)
def test_memslots_overlapping_by_one_page_are_eexist(base):
    """Same rule: one page in common on either side is an overlap (errno EEXIST), and the
    refused call changes nothing."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 2 << 20)
    with pytest.raises(KvmError) as err:
        ms.set_user_memory_region(1, base, 1 << 20)
    assert err.value.errno_name == "EEXIST"
    assert err.value.field == "guest_phys_addr"
    assert [s.id for s in ms.sorted()] == [0]


# -- eager split at enable ---------------------------------------------------------------------


def test_eager_split_at_enable_splits_every_chunk_of_the_slot():
    """kvm_mmu_split_memory_region (arch/arm64/kvm/mmu.c, 6.12) splits the whole slot when
    logging is enabled with KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE set, chunk after chunk.  An
    8 MiB slot backed by 2 MiB blocks is four chunks of 2 MiB: afterwards every one of its
    2048 pages is an L3 page, write-protected, and a write to the last page of the last chunk
    takes a permission fault (no block split)."""
    vm = VM(G4K, Tracking("bitmap", "range", 4096, 2 << 20), nr_vcpus=1)
    vm.set_memslot(0, BASE, 8 << 20, 0, 2 << 20, populate=True)
    level, _, desc = vm.pgt.lookup(np.array([BASE, BASE + (6 << 20)], np.int64))
    assert level.tolist() == [2, 2]  # blocks before logging
    vm.set_memslot(0, BASE, 8 << 20, slot_flags(log_dirty=True), 2 << 20)
    ipa = BASE + np.arange(2048, dtype=np.int64) * 4096
    level, _, desc = vm.pgt.lookup(ipa)
    assert (level == 3).all()
    assert D.is_valid(desc).all() and not D.is_writable(desc).any()
    res = vm.access(np.array([BGFN + 2047]), np.zeros(1, np.int64), np.ones(1, bool))
    assert vm.stats["block_splits"] == 0
    assert res.faults.tolist() == [1]
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == [2047]


# -- migration: the switchover threshold and the final verification -----------------------------


class _StandIn(SimpleNamespace):
    """A stand-in simulation (a subclass: SimpleNamespace itself cannot be weakly referenced)."""


def _migration(**cfg) -> Migration:
    sim = _StandIn(vm=SimpleNamespace(page_size=4096, slots={}), message=lambda *_: None)
    mig = Migration(sim, MigrationCfg(**cfg), clear_chunk_pages=1 << 18)
    mig.stand_in = sim  # (Migration holds its simulation weakly)
    return mig


def test_switchover_threshold_is_bandwidth_times_downtime_in_seconds():
    """QEMU migration/migration.c (9.x) migration_update_counters: threshold_size =
    bandwidth (bytes/ms) × downtime_limit (ms), the bandwidth being what the window really
    carried.  128 MiB/s over a 100 ms window and 300 ms: 134 217.728 × 300 = 40 265 318.4
    bytes (not 39 321 600 as ms/1024 would give)."""
    mig = _migration(bandwidth=128 << 20, downtime_limit_ms=300)
    mig.total_bytes = 13_421_772.8  # what a 100 ms window at 128 MiB/s carries
    mig._measure(100_000_000)
    assert mig.threshold_bytes == pytest.approx(40_265_318.4, abs=1e-6)
    mig = _migration(downtime_limit_ms=1000)
    mig.total_bytes = 12_500_000  # 1 Gbit/s for 100 ms
    mig._measure(100_000_000)
    assert mig.threshold_bytes == pytest.approx(125e6)


def test_verification_flags_every_destination_page_that_differs():
    """The migration is correct when every destination page holds the source's version at
    switchover (DESIGN.md).  Pages differ here in three ways — destination older and sent,
    destination older and never sent, destination newer — and each one is a mismatch."""
    mig = _migration()
    src = np.array([3, 3, 3, 3, 3, 0], np.uint32)
    dest = np.array([3, 2, 3, 0, 5, 0], np.uint32)  # pages 1, 3, 4 differ
    last_sent = np.array([1, 1, 2, -1, 1, -1], np.int16)
    mig.vm.slots[7] = SimpleNamespace(version=src)
    mig.slots[7] = SlotMig(np.zeros(1, np.uint64), dest, last_sent)
    got = mig.verify()
    assert got["pages_checked"] == 6 and got["mismatches"] == 3
    assert [(e["page"], e["source"], e["dest"]) for e in got["examples"]] == [
        (1, 3, 2),
        (3, 3, 0),
        (4, 3, 5),
    ]


def test_verification_of_identical_memory_has_no_mismatch():
    mig = _migration()
    mig.vm.slots[0] = SimpleNamespace(version=np.array([1, 2, 3], np.uint32))
    mig.slots[0] = SlotMig(np.zeros(1, np.uint64), np.array([1, 2, 3], np.uint32), None)
    assert mig.verify() == {"pages_checked": 3, "mismatches": 0}


# -- dirty ring: reset merging, sizes, entry types ---------------------------------------------


def _merged(offsets, slots=None):
    off = np.array(offsets, np.uint64)
    sl = np.zeros(off.size, np.uint32) if slots is None else np.array(slots, np.uint32)
    s, o, m = merge_masks(sl, off)
    assert s.dtype == np.uint32 and m.dtype == np.uint64
    return list(zip(s.tolist(), o.tolist(), m.tolist(), strict=True))


@pytest.mark.parametrize(
    "offsets, expected",
    [
        ([0, 63], [(0, 0, 1 | 1 << 63)]),  # 63 above: still in the mask
        ([0, 64], [(0, 0, 1), (0, 64, 1)]),  # 64 above: a new mask
        ([100, 37], [(0, 37, 1 | 1 << 63)]),  # 63 below, fits: shifted down
        ([100, 36], [(0, 100, 1), (0, 36, 1)]),  # 64 below: a new mask
        ([10, 73, 9], [(0, 10, 1 | 1 << 63), (0, 9, 1)]),  # shifting would drop bit 63
        ([10, 12, 8, 50], [(0, 8, 0b10101 | 1 << 42)]),  # keeps merging after a shift
        ([5, 5, 6], [(0, 5, 0b11)]),
    ],
)
def test_ring_reset_merges_like_kvm(offsets, expected):
    """kvm_dirty_ring_reset (virt/kvm/dirty_ring.c, v6.17): an entry of the same slot with
    ``delta = offset - cur_offset`` in [0, 64) joins the mask; with delta in (-64, 0) the mask
    is shifted down by -delta if ``(mask << -delta >> -delta) == mask`` (no bit falls off the
    64-bit word); anything else flushes the mask and starts a new one.  Worked by hand."""
    assert _merged(offsets) == expected


def test_ring_reset_never_merges_across_slots():
    assert _merged([0, 1, 2], [0, 1, 1]) == [(0, 0, 1), (1, 1, 0b11)]
    assert _merged([7], [3]) == [(3, 7, 1)]  # a lone entry: the fast path, same types


@pytest.mark.parametrize(
    "entries, page, errno, words",
    [
        (0, 4096, "EINVAL", "must be a power of two, got 0"),
        (1, 4096, "EINVAL", "1 entries (16 bytes) is less than one 4096-byte page"),
        (128, 4096, "EINVAL", "128 entries (2048 bytes) is less than one 4096-byte page"),
        (384, 4096, "EINVAL", "must be a power of two, got 384"),
        (512, 16384, "EINVAL", "(8192 bytes) is less than one 16384-byte page"),
        (131072, 4096, "E2BIG", "131072 entries is more than KVM_DIRTY_RING_MAX_ENTRIES (65536)"),
    ],
)
def test_ring_size_refusals_say_why(entries, page, errno, words):
    """kvm_vm_ioctl_enable_dirty_log_ring (virt/kvm/kvm_main.c, v6.17): EINVAL unless a power
    of two of at least one page (16-byte entries), E2BIG above 65 536 entries."""
    with pytest.raises(KvmError) as err:
        check_ring_size(entries, page)
    assert err.value.errno_name == errno and err.value.field == "tracking.ring_entries"
    assert words in err.value.rule


def test_ring_size_minimum_is_named_in_whole_entries():
    with pytest.raises(KvmError) as err:
        check_ring_size(128)
    assert err.value.rule.endswith("at least 256")
    assert ring_entry_limits(4096) == (256, 65536) and ring_entry_limits(65536) == (4096, 65536)
    assert check_ring_size(256) == 256 and check_ring_size(1024, 16384) == 1024


@pytest.mark.parametrize("size", [0, 64, 96, 200])
def test_a_ring_object_needs_a_power_of_two_above_the_reserve(size):
    with pytest.raises(ValueError, match="power-of-two size above 64"):
        DirtyRing(size)


def test_ring_entries_keep_kvm_dirty_gfn_types_and_order():
    """struct kvm_dirty_gfn {u32 flags; u32 slot; u64 offset;}: collected entries are u32
    slots and u64 offsets, in push order, across the wrap of the free-running indices."""
    ring = DirtyRing(128)
    ring.push(np.array([1, 2], np.uint32), np.array([2**40, 5], np.uint64))
    s, o = ring.collect()
    assert s.dtype == np.uint32 and o.dtype == np.uint64
    assert s.tolist() == [1, 2] and o.tolist() == [2**40, 5]
    rs, ro = ring.reset_entries()
    assert rs.tolist() == [1, 2] and ro.tolist() == [2**40, 5] and ring.used == 0


# -- memslots: every refusal's sentence, lookups at slot edges, names ---------------------------


def _refusal(ms: Memslots, *args) -> tuple[str, str, str]:
    with pytest.raises(KvmError) as err:
        ms.set_user_memory_region(*args)
    return err.value.errno_name, err.value.field, err.value.rule


def test_memslot_refusals_are_one_sentence_naming_field_and_rule():
    """Each refusal is KVM's errno, the ioctl field and a sentence with the offending value
    (the sentences the editor and the CLI show, written out here in full)."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 4 << 20, 0, 2 << 20, "ram")
    assert _refusal(ms, 32767, BASE, 4096) == ("EINVAL", "slot", "must be 0..32766, got 32767")
    assert _refusal(ms, 1, BASE, 4097) == (
        "EINVAL",
        "memory_size",
        "0x1001 is not a multiple of the 4096-byte page",
    )
    assert _refusal(ms, 1, BASE + 1, 4096) == (
        "EINVAL",
        "guest_phys_addr",
        "0x40000001 is not aligned to the 4096-byte page",
    )
    assert _refusal(ms, 1, (1 << 64) - 4096, 8192) == (
        "EINVAL",
        "memory_size",
        "guest_phys_addr + memory_size wraps around 64 bits",
    )
    assert _refusal(ms, 1, 0, 1 << 43) == (
        "EINVAL",
        "memory_size",
        "2147483648 pages is more than KVM_MEM_MAX_NR_PAGES (2^31 - 1)",
    )
    assert _refusal(ms, 1, BASE, 4096, 0, 8192) == (
        "EINVAL",
        "backing",
        "8KiB is not a backing page size here; use 4KiB, 2MiB, 1GiB",
    )
    assert _refusal(ms, 5, 0, 0) == (
        "EINVAL",
        "slot",
        "slot 5 does not exist, so it cannot be deleted",
    )
    assert _refusal(ms, 0, BASE, 8 << 20) == (
        "EINVAL",
        "memory_size",
        "slot 0 exists with 1024 pages; an existing slot cannot be resized "
        "(delete and re-create it)",
    )
    assert _refusal(ms, 0, BASE, 4 << 20, 2) == (
        "EINVAL",
        "flags",
        "KVM_MEM_READONLY cannot be toggled on an existing slot",
    )
    assert _refusal(ms, 1, BASE + (1 << 20), 4 << 20) == (
        "EEXIST",
        "guest_phys_addr",
        "[0x40100000, 0x40500000) overlaps slot 0 [0x40000000, 0x40400000)",
    )
    assert _refusal(ms, 1, (1 << 40) - 4096, 8192) == (
        "EFAULT",
        "guest_phys_addr",
        "[0xfffffff000, 0x10000001000) ends beyond the 40-bit IPA space",
    )
    with pytest.raises(KvmError) as err:
        ms.get(9)
    assert (err.value.errno_name, err.value.field, err.value.rule) == (
        "EINVAL",
        "slot",
        "there is no memslot 9",
    )
    assert [s.id for s in ms] == [0] and ms.total_pages() == 1024


@pytest.mark.parametrize(
    "size, text",
    [
        (4096, "4KiB"),
        (2 << 20, "2MiB"),
        (1 << 30, "1GiB"),
        (3 << 30, "3GiB"),
        (1536, "1536 bytes"),
        (6 << 10, "6KiB"),
        (3, "3 bytes"),
        (0, "0 bytes"),
    ],
)
def test_sizes_in_refusals(size, text):
    assert fmt_size(size) == text


def test_lookup_at_the_first_and_last_page_of_each_slot():
    """gfn -> slot index over half-open [base_gfn, base_gfn + npages) ranges, sorted by base."""
    ms = Memslots(12, 40)
    assert ms.find(np.array([5])).tolist() == [-1] and ms.find(np.array([5])).dtype == np.int64
    ms.set_user_memory_region(3, BASE + (8 << 20), 1 << 20)  # gfns BGFN+2048 .. +2303
    ms.set_user_memory_region(1, BASE, 1 << 20)  # gfns BGFN .. BGFN+255
    g = BGFN + np.array([-1, 0, 255, 256, 2047, 2048, 2303, 2304])
    assert ms.find(g).tolist() == [-1, 0, 0, -1, -1, 1, 1, -1]
    assert ms.find(np.array([BGFN, BGFN + 2048])).tolist() == [0, 1]


def test_lookup_in_a_single_slot_at_its_edges():
    """One slot of 256 pages: its last gfn is base + 255, base + 256 is outside (half-open),
    also when every gfn asked is at or above the base (the one-slot fast path)."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 1 << 20)
    assert ms.find(np.array([BGFN, BGFN + 255])).tolist() == [0, 0]
    assert ms.find(np.array([BGFN, BGFN + 256])).tolist() == [0, -1]
    assert ms.find(np.array([BGFN + 256])).tolist() == [-1]
    assert ms.find(np.array([BGFN - 1, BGFN])).tolist() == [-1, 0]


def test_names_are_kept_unless_given():
    ms = Memslots(12, 40)
    assert ms.set_user_memory_region(0, BASE, 4096).new.name == ""
    ms.set_user_memory_region(1, BASE + (1 << 20), 4096, 0, None, "vram")
    assert ms.set_user_memory_region(1, BASE + (1 << 20), 4096, 1).new.name == "vram"
    assert ms.set_user_memory_region(1, BASE + (2 << 20), 4096, 1).new.name == "vram"  # move
    # a new name alone (same place, size and flags) is kept too: nothing for KVM to do
    up = ms.set_user_memory_region(1, BASE + (2 << 20), 4096, 1, None, "fb")
    assert up.change.name == "NONE" and ms.get(1).name == "fb"


def test_an_update_without_a_backing_keeps_the_slots_backing():
    """The backing is the host memory behind the slot (userspace_addr's pages): enabling
    dirty logging with KVM_SET_USER_MEMORY_REGION changes the flags, not that memory."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 4 << 20, 0, 2 << 20)
    assert ms.set_user_memory_region(0, BASE, 4 << 20, 1).new.backing == 2 << 20
    assert ms.get(0).backing == 2 << 20

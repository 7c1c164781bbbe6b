"""The guest write path's ring admission, ring pushes and dirty marking, pinned by hand.

Each expected value is counted by hand from the rules named in the docstrings (Linux v6.17:
virt/kvm/dirty_ring.c, virt/kvm/kvm_main.c:mark_page_dirty_in_slot, arch/arm64/kvm/mmu.c:
user_mem_abort); the mutation sample of ``engine/kvm/vm.py`` found them unpinned.
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
BGFN = BASE >> 12
LOG = slot_flags(log_dirty=True)


def ring_vm(vcpus=2, ring=256, mode="ring"):
    """Slot 0 (256 pages) mapped and write-protected by logging; slot 1 (256 pages) logging
    but never mapped: its first write takes a translation fault, slot 0's a permission one."""
    vm = VM(G, Tracking(mode, "range", ring), nr_vcpus=vcpus)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, 1 << 20, LOG, 4096)
    vm.set_memslot(1, BASE + (1 << 20), 1 << 20, LOG, 4096)
    return vm


def fill_ring(vm, vcpu, n):
    """vCPU ``vcpu`` writes pages 0..n-1 of slot 0 (one entry each), no reset."""
    g = BGFN + np.arange(n, dtype=np.int64)
    return vm.access(g, np.full(n, vcpu, np.int64), np.ones(n, bool))


def test_each_vcpu_ring_gets_only_its_own_writes_in_order():
    """kvm_dirty_ring_push goes to the ring of the vCPU that faulted (kvm_main.c:
    mark_page_dirty_in_slot → kvm_dirty_ring_get(kvm) is the running vCPU's ring): interleaved
    writes of two vCPUs end up split by vCPU, each in its own write order."""
    vm = ring_vm()
    # (vcpu, slot, page) in time order
    seq = [(0, 0, 7), (1, 1, 3), (1, 0, 2), (0, 1, 9), (0, 0, 4), (1, 1, 0)]
    gfn = np.array([BGFN + 256 * s + p for _, s, p in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    res = vm.access(gfn, vcpu, np.ones(gfn.size, bool))
    for v in (0, 1):
        slots, offs = vm.rings[v].collect()
        assert list(zip(slots.tolist(), offs.tolist(), strict=True)) == [
            (s, p) for w, s, p in seq if w == v
        ]
    # one software dirty event per page, per vCPU; 3 translation + 3 permission faults
    assert res.dirty_events.tolist() == [3, 3] and res.faults.tolist() == [3, 3]
    assert vm.stats["ring_pushes"] == 6
    # a running vCPU's page goes to its ring only, never to the bitmap (which is the
    # ring-with-bitmap backup for writes with no running vCPU)
    assert not vm.slots[0].bitmap.any() and not vm.slots[1].bitmap.any()


def test_ring_pushes_accumulate_over_batches():
    """vm_stats.ring_pushes (shown in a run's result) counts every push since the VM
    started: 2 pushes, then 3 more (two pages already writable push nothing) = 5."""
    vm = ring_vm(vcpus=1)
    assert not fill_ring(vm, 0, 2).deferred.size
    assert vm.stats["ring_pushes"] == 2
    g = BGFN + np.array([0, 1, 10, 11, 12], np.int64)  # 0 and 1 are writable by now
    vm.access(g, np.zeros(5, np.int64), np.ones(5, bool))
    assert vm.stats["ring_pushes"] == 5
    assert vm.rings[0].collect()[1].tolist() == [0, 1, 10, 11, 12]


def test_dirty_events_add_up_over_both_fault_kinds_in_one_batch():
    """Bitmap mode, one vCPU: two writes to unmapped pages (translation faults) and two to
    write-protected ones (permission faults) in one batch: four pages marked, four bits."""
    vm = ring_vm(vcpus=1, mode="bitmap")
    g = np.array([BGFN + 256 + 5, BGFN + 3, BGFN + 256 + 6, BGFN + 4], np.int64)
    res = vm.access(g, np.zeros(4, np.int64), np.ones(4, bool))
    assert res.dirty_events.tolist() == [4] and res.faults.tolist() == [4]
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [3, 4]
    assert DL.bitmap_pages(vm.slots[1].bitmap).tolist() == [5, 6]


def test_a_read_fault_while_logging_maps_the_page_read_only():
    """user_mem_abort (arch/arm64/kvm/mmu.c, v6.17): while logging, a read fault maps the
    page without write permission (``logging_active && !write_fault`` → not writable), so
    the first write still traps: a read then, in a later batch, a write of the same page
    take a translation fault and then a permission fault, and the page is logged."""
    vm = ring_vm(vcpus=1, mode="bitmap")
    g = np.array([BGFN + 256 + 5], np.int64)
    res = vm.access(g, np.zeros(1, np.int64), np.zeros(1, bool))
    level, _, desc = vm.pgt.lookup(g << 12)
    assert level.tolist() == [3] and D.is_valid(desc).tolist() == [True]
    assert D.is_writable(desc).tolist() == [False]
    assert res.faults.tolist() == [1] and not vm.slots[1].bitmap.any()
    res = vm.access(g, np.zeros(1, np.int64), np.ones(1, bool))
    assert res.faults.tolist() == [1] and vm.stats["permission_faults"] == 1
    assert DL.bitmap_pages(vm.slots[1].bitmap).tolist() == [5]


def test_dbm_writes_are_marked_by_the_hardware_not_by_a_fault():
    """tracking.mode dbm (the what-if of docs/fidelity.md): a writable-clean leaf turns dirty
    with no exit and nothing is marked in software; the bits come from the scan at GET."""
    vm = ring_vm(vcpus=1, mode="dbm")
    g = np.array([BGFN + 3, BGFN + 256 + 5], np.int64)  # a mapped page, an unmapped one
    res = vm.access(g, np.zeros(2, np.int64), np.ones(2, bool))
    assert res.dirty_events.tolist() == [0]
    # the mapped page turns writable-dirty with no exit; the unmapped one faults in
    assert res.faults.tolist() == [1] and vm.stats["dbm_dirty"] == 1
    assert vm.stats["permission_faults"] == 0 and vm.stats["translation_faults"] == 1
    _, _, desc = vm.pgt.lookup(np.array([BASE + 3 * 4096], np.int64))
    assert D.is_writable(desc).tolist() == [True]
    assert not vm.slots[0].bitmap.any() and not vm.slots[1].bitmap.any()
    assert DL.bitmap_pages(DL.get_dirty_log(vm, 0)[0]).tolist() == [3]
    assert DL.bitmap_pages(DL.get_dirty_log(vm, 1)[0]).tolist() == [5]


def test_under_the_soft_limit_nothing_is_deferred_and_the_indices_index_the_batch():
    """Ring mode below the soft limit (256 entries: 192): an empty array of access indices
    that the caller can use as it is (``gfn[res.deferred]`` selects nothing)."""
    vm = ring_vm(vcpus=1)
    g = BGFN + np.arange(3, dtype=np.int64)
    res = vm.access(g, np.zeros(3, np.int64), np.ones(3, bool))
    assert g[res.deferred].size == 0 and res.ring_full == set()


@pytest.mark.parametrize("writes_by_full_vcpu", [0, 3])
def test_a_vcpu_whose_ring_is_soft_full_runs_nothing_until_the_reset(writes_by_full_vcpu):
    """vCPU 1 has 192 entries (the soft limit of a 256-entry ring) not yet reset:
    kvm_dirty_ring_check_request exits at its next entry with KVM_EXIT_DIRTY_RING_FULL
    before any store (virt/kvm/dirty_ring.c, v6.17), so every access of vCPU 1 is held
    back — none stored, no entry pushed — while vCPU 0's three writes all happen.
    With no access of vCPU 1 in the batch it is still reported ring-full."""
    vm = ring_vm(vcpus=2)
    assert fill_ring(vm, 1, 192).deferred.tolist() == [191]
    assert vm.rings[1].room() == 0
    w0 = BGFN + np.array([200, 201, 202], np.int64)
    w1 = BGFN + np.array([210, 211, 212], np.int64)[:writes_by_full_vcpu]
    g = np.concatenate([w0, w1])
    vcpu = np.array([0] * 3 + [1] * w1.size, np.int64)
    res = vm.access(g, vcpu, np.ones(g.size, bool))
    assert res.ring_full == {1}
    assert res.deferred.tolist() == list(range(3, 3 + w1.size))
    assert vm.rings[1].used == 192 and vm.rings[0].used == 3
    assert vm.slots[0].version[200:213].tolist() == [1, 1, 1] + [0] * 10
    assert res.faults.tolist() == [3, 0]


def test_dbm_a_page_read_in_while_logging_is_writable_clean():
    """dbm mode: a read fault while logging maps the page read-only with DBM set (as
    enable_logging leaves every leaf), so the later write is a hardware transition (no
    exit) and the scan at GET reports the page."""
    vm = ring_vm(vcpus=1, mode="dbm")
    g = np.array([BGFN + 256 + 5], np.int64)
    vm.access(g, np.zeros(1, np.int64), np.zeros(1, bool))
    res = vm.access(g, np.zeros(1, np.int64), np.ones(1, bool))
    assert res.faults.tolist() == [0] and vm.stats["dbm_dirty"] == 1
    assert DL.bitmap_pages(DL.get_dirty_log(vm, 1)[0]).tolist() == [5]
    vm.access(np.array([BGFN + 3], np.int64), np.zeros(1, np.int64), np.ones(1, bool))
    assert vm.stats["dbm_dirty"] == 2  # one more transition, counted since the start


def test_dbm_after_logging_is_switched_off_a_write_faults():
    """dbm mode: switching logging off drops the DBM bits (test_tracking's
    disabling test), so a page left read-only then takes a permission fault on its write,
    not a hardware transition."""
    vm = ring_vm(vcpus=1, mode="dbm")
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)  # logging off
    g = np.array([BGFN + 3], np.int64)
    _, _, desc = vm.pgt.lookup(g << 12)
    assert D.is_writable(desc).tolist() == [False] and not int(desc[0]) & D.DBM
    res = vm.access(g, np.zeros(1, np.int64), np.ones(1, bool))
    assert res.faults.tolist() == [1] and vm.stats["dbm_dirty"] == 0
    assert vm.stats["permission_faults"] == 1


def test_read_then_write_in_one_batch_counts_both_faults_and_one_tlbi():
    """Bitmap mode: a write to a write-protected page (one permission fault, one TLBI by IPA:
    kvm_pgtable_stage2_relax_perms → __kvm_tlb_flush_vmid_ipa_nsh), then, in a later batch, a
    read and a write of an unmapped page (a translation fault mapping it read-only, then a
    permission fault relaxing it): 2 permission faults and 2 TLBIs by IPA in all."""
    vm = ring_vm(vcpus=1, mode="bitmap")
    ipa0 = vm.pgt.tlbi["ipa"]
    vm.access(np.array([BGFN + 3], np.int64), np.zeros(1, np.int64), np.ones(1, bool))
    assert vm.stats["permission_faults"] == 1 and vm.pgt.tlbi["ipa"] - ipa0 == 1
    g = np.array([BGFN + 256 + 5] * 2, np.int64)
    res = vm.access(g, np.zeros(2, np.int64), np.array([False, True]))
    assert res.faults.tolist() == [2] and vm.stats["translation_faults"] == 1
    assert vm.stats["permission_faults"] == 2 and vm.pgt.tlbi["ipa"] - ipa0 == 2
    assert DL.bitmap_pages(vm.slots[1].bitmap).tolist() == [5]
    vm.access(np.array([BGFN + 4], np.int64), np.zeros(1, np.int64), np.ones(1, bool))
    assert vm.stats["permission_faults"] == 3 and vm.pgt.tlbi["ipa"] - ipa0 == 3


def test_not_logging_a_read_fault_maps_the_page_writable():
    """A slot that does not log: user_mem_abort maps what the backing allows with the VMA's
    permissions (writable), so a read and then a write of a 4 KiB-backed page take one
    translation fault and no permission fault."""
    vm = VM(G, Tracking("bitmap", "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    g = np.array([BGFN + 9, BGFN + 9], np.int64)
    res = vm.access(g[:1], np.zeros(1, np.int64), np.zeros(1, bool))
    level, _, desc = vm.pgt.lookup(g[:1] << 12)
    assert level.tolist() == [3] and D.is_writable(desc).tolist() == [True]
    res = vm.access(g, np.zeros(2, np.int64), np.array([False, True]))
    assert res.faults.tolist() == [0] and vm.stats["translation_faults"] == 1
    assert vm.stats["permission_faults"] == 0


@pytest.mark.parametrize("used, deferred, stored", [(190, [1], [1, 0]), (191, [0, 1], [0, 0])])
def test_the_write_that_fills_the_ring_is_retried(used, deferred, stored):
    """A 256-entry ring (soft limit 192) holding ``used`` entries, then two writes of new
    pages: with room 2 both push (the second fills: its store waits, 1 deferred); with room 1
    the first push fills — its store and the second write wait (2 deferred, 1 push).
    kvm_dirty_ring_push / kvm_dirty_ring_check_request, virt/kvm/dirty_ring.c, v6.17."""
    vm = ring_vm(vcpus=1)
    fill_ring(vm, 0, used)
    g = BGFN + np.array([250, 251], np.int64)
    res = vm.access(g, np.zeros(2, np.int64), np.ones(2, bool))
    assert vm.rings[0].used == 192 and res.ring_full == {0}
    assert res.deferred.tolist() == deferred
    assert vm.slots[0].version[250:252].tolist() == stored


def test_two_vcpus_fill_their_rings_in_the_same_batch():
    """Both rings at 191 of a 192 soft limit; each vCPU writes two new pages, interleaved:
    each first write fills its ring and waits, each second waits too: all four deferred,
    both vCPUs exit, no store happens."""
    vm = ring_vm(vcpus=2)
    fill_ring(vm, 0, 191)
    vm.access(
        BGFN + 256 + np.arange(191, dtype=np.int64), np.ones(191, np.int64), np.ones(191, bool)
    )
    g = BGFN + np.array([250, 251, 252, 253], np.int64)
    res = vm.access(g, np.array([0, 1, 0, 1], np.int64), np.ones(4, bool))
    assert res.ring_full == {0, 1} and res.deferred.tolist() == [0, 1, 2, 3]
    assert vm.rings[0].used == 192 and vm.rings[1].used == 192
    assert vm.slots[0].version[250:254].tolist() == [0, 0, 0, 0]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=200), st.booleans(), st.booleans())
def test_one_writers_grouping_finds_first_writes_only_when_asked(pages, far, ask):
    """A batch of one vCPU's writes to one slot is grouped by sorting its gfns alone (as
    32-bit offsets, or 64-bit when ``far`` spreads them over more than 2^32 pages); the
    first access of each page is found on demand.  Against a per-access loop: the pages in
    order, each one's write count and (asked for or not before) its first access."""
    from engine.kvm.vm import _Pages

    gfn = np.array(pages, dtype=np.int64) + BGFN
    if far:
        gfn[gfn % 5 == 0] += 1 << 40
    first: dict[int, int] = {}
    count: dict[int, int] = {}
    for t, g in enumerate(gfn.tolist()):
        first.setdefault(g, t)
        count[g] = count.get(g, 0) + 1
    n = gfn.size
    got = _Pages.group(gfn, np.full(n, 1), np.ones(n, bool), np.zeros(n, np.int64), times=ask)
    assert got.gfn.tolist() == sorted(first) and got.gfn.dtype == np.int64
    assert got.writes.tolist() == [count[g] for g in sorted(first)]
    assert (got.first is not None) == ask  # not looked for unless asked
    assert got.t_first.tolist() == [first[g] for g in sorted(first)]
    assert got.t_write.tolist() == got.t_first.tolist()
    assert got.vcpu_write.tolist() == [1] * len(first) and got.sidx.tolist() == [0] * len(first)


def _one_slot_vm(backing, logging, hole):
    """One 4 MiB slot, mapped with ``backing`` leaves, then logging (write-protected) or not;
    ``hole`` unmaps its second MiB, so writes there take translation faults."""
    from engine.stage2.walk import unmap_range

    vm = VM(G, Tracking("bitmap", "range"), nr_vcpus=2)
    vm.set_memslot(0, BASE, 4 << 20, 0, backing, populate=True)
    vm.set_memslot(0, BASE, 4 << 20, LOG if logging else 0, backing)
    if hole:
        unmap_range(vm.pgt, BASE + (1 << 20), 1 << 20)
    return vm


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.integers(0, 1023), min_size=1, max_size=80),
    st.sampled_from([4096, 2 << 20]),
    st.booleans(),
    st.booleans(),
)
def test_one_writers_batch_does_what_its_writes_do_one_at_a_time(pages, backing, logging, hole):
    """The path of a batch of one vCPU's writes to one slot (grouped without first-write
    times unless a block split or a block map asks for them; the write-permission relax
    from the descriptors the lookup read, or read again after translation faults mapped
    pages) against the same writes one by one: versions, dirty bits, every descriptor,
    faults, TLBIs and the stats."""
    gfn = BGFN + np.array(pages, dtype=np.int64)
    batch, single = (_one_slot_vm(backing, logging, hole) for _ in range(2))
    one = np.ones(1, bool)
    res = batch.access(gfn, np.ones(gfn.size, np.int64), np.ones(gfn.size, bool))
    faults = np.zeros(2, np.int64)
    for g in gfn.tolist():
        faults += single.access(np.array([g]), np.ones(1, np.int64), one).faults
    assert res.faults.tolist() == faults.tolist() and batch.stats == single.stats
    assert batch.pgt.tlbi == single.pgt.tlbi
    # every page's leaf (level and descriptor; the tables' order in the pool is allocation
    # order, which two block splits in one batch take in IPA order, one by one in time order)
    ipa = BASE + np.arange(1024, dtype=np.int64) * 4096
    for got, want in zip(batch.pgt.lookup(ipa)[::2], single.pgt.lookup(ipa)[::2], strict=True):
        assert np.array_equal(got, want)
    assert batch.pgt.summary() == single.pgt.summary()
    assert np.array_equal(batch.slots[0].version, single.slots[0].version)
    if logging:
        assert np.array_equal(batch.slots[0].bitmap, single.slots[0].bitmap)


def test_write_permission_relax_after_translation_faults_in_the_same_batch():
    """Pages 0-255 mapped and write-protected, 256-511 unmapped (logging, 4K leaves); one
    vCPU writes 257, 1, 257, 258, 1, 2: pages 1 and 2 take a permission fault each (S2AP W
    set again, one TLBI by IPA each), 257 and 258 a translation fault each (mapped writable
    at once: a write fault while logging maps the page RW).  Dirty: {1, 2, 257, 258};
    versions count every write; page 0 and 3 stay write-protected."""
    from engine.stage2.walk import unmap_range

    vm = VM(G, Tracking("bitmap", "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 2 << 20, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, 2 << 20, LOG, 4096)
    unmap_range(vm.pgt, BASE + (256 << 12), 256 << 12)
    tlbi = vm.pgt.tlbi["ipa"]
    g = BGFN + np.array([257, 1, 257, 258, 1, 2], np.int64)
    res = vm.access(g, np.zeros(6, np.int64), np.ones(6, bool))
    assert res.faults.tolist() == [4] and res.dirty_events.tolist() == [4]
    assert vm.stats["permission_faults"] == 2 and vm.stats["translation_faults"] == 2
    assert vm.pgt.tlbi["ipa"] - tlbi == 2
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [1, 2, 257, 258]
    assert vm.slots[0].version[[0, 1, 2, 3, 257, 258]].tolist() == [0, 2, 1, 0, 2, 1]
    _, _, desc = vm.pgt.lookup(BASE + np.array([0, 1, 2, 3, 257, 258, 259], np.int64) * 4096)
    assert D.is_writable(desc).tolist() == [False, True, True, False, True, True, False]
    assert D.is_valid(desc).tolist() == [True] * 6 + [False]

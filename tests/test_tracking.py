"""Dirty tracking end to end on the VM: the selftests' invariant for every mode and strategy.

Random write sequences with harvests in between: the pages reported at harvest k must be
exactly the pages written since harvest k-1 (in logging, writable slots), and every page's
version must equal the number of writes applied to it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.kvm import dirtylog as DL
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.util.errors import KvmError

G = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12
NPAGES = 4096 + 37  # not a multiple of 64, like dirty_log_test's memory
MODES = ("bitmap", "manual-clear", "ring", "dbm")
STRATS = ("range", "masked-skip", "visitor", "rmap")


def make_vm(mode, strategy, backing=2 << 20, eager=0, vcpus=2, ring=256, init_set=False):
    vm = VM(G, Tracking(mode, strategy, ring, eager, init_set), nr_vcpus=vcpus)
    vm.set_memslot(0, BASE, NPAGES * 4096, 0, 4096 if NPAGES % 512 else backing, populate=True)
    vm.set_memslot(1, BASE + (64 << 20), 8 << 20, 0, backing, populate=True)
    vm.set_memslot(2, BASE + (128 << 20), 2 << 20, slot_flags(readonly=True), populate=True)
    for sid in (0, 1):
        s = vm.slots[sid].slot
        vm.set_memslot(sid, s.base, s.size, slot_flags(log_dirty=True), s.backing)
    return vm


def harvest(vm, collected):
    """What user space gets: GET (+ CLEAR), or the rings plus the backup bitmap."""
    out = {}
    if vm.tracking.mode == "ring":
        slots, offs = DL.collect_rings(vm)
        for s, o in zip(slots.tolist(), offs.tolist(), strict=True):
            collected.setdefault(s, set()).add(o)
        DL.reset_rings(vm)
    for sid in (0, 1):
        words, _ = DL.get_dirty_log(vm, sid)
        if vm.tracking.manual:
            DL.clear_dirty_log(vm, sid, 0, vm.slots[sid].slot.npages, words)
        out[sid] = set(DL.bitmap_pages(words).tolist()) | collected.pop(sid, set())
    return out


def apply(vm, gfn, vcpu, write, collected):
    while True:
        res = vm.access(gfn, vcpu, write)
        if res.deferred is None or not res.deferred.size:
            return
        slots, offs = DL.collect_rings(vm)  # KVM_EXIT_DIRTY_RING_FULL: reap, reset, re-enter
        for s, o in zip(slots.tolist(), offs.tolist(), strict=True):
            collected.setdefault(s, set()).add(o)
        DL.reset_rings(vm)
        gfn, vcpu, write = gfn[res.deferred], vcpu[res.deferred], write[res.deferred]


batches = st.lists(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3]),  # 0/1 logging slots, 2 readonly, 3 outside (MMIO)
            st.integers(0, 2047),
            st.integers(-1, 1),  # vcpu -1: a device write with no running vCPU
            st.booleans(),
        ),
        max_size=120,
    ),
    min_size=1,
    max_size=5,
)


def _gfn(slot, i):
    return {
        0: BGFN + i * 2 % NPAGES,
        1: BGFN + (64 << 8) + i,
        2: BGFN + (128 << 8) + i % 512,
        3: 0x10,
    }[slot]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("strategy", STRATS)
@settings(max_examples=15)
@given(batches=batches)
def test_selftest_invariant(mode, strategy, batches):
    vm = make_vm(mode, strategy)
    writes = {0: np.zeros(NPAGES, np.int64), 1: np.zeros(2048, np.int64)}
    collected: dict[int, set[int]] = {}
    for batch in batches:
        if not batch:
            continue
        gfn = np.array([_gfn(s, i) for s, i, _, _ in batch], dtype=np.int64)
        vcpu = np.array([v for _, _, v, _ in batch], dtype=np.int64)
        if mode != "ring":
            vcpu = np.maximum(vcpu, 0)
        write = np.array([w for *_, w in batch], dtype=bool)
        expected = {0: set(), 1: set()}
        for (s, _, _, w), g in zip(batch, gfn.tolist(), strict=True):
            if w and s in (0, 1):
                base = vm.slots[s].slot.base_gfn
                expected[s].add(g - base)
                writes[s][g - base] += 1
        apply(vm, gfn, vcpu, write, collected)
        assert harvest(vm, collected) == expected
    for s in (0, 1):
        assert np.array_equal(vm.slots[s].version.astype(np.int64), writes[s])
    assert not vm.slots[2].version.any()  # readonly: exits, never applied


@settings(max_examples=20)
@given(batches=batches)
def test_all_strategies_leave_identical_tables_in_bitmap_mode(batches):
    vms = [make_vm("bitmap", s) for s in STRATS]
    for batch in batches:
        if not batch:
            continue
        gfn = np.array([_gfn(s, i) for s, i, _, _ in batch], dtype=np.int64)
        vcpu = np.zeros(len(batch), np.int64)
        write = np.array([w for *_, w in batch], dtype=bool)
        for vm in vms:
            apply(vm, gfn, vcpu, write, {})
            harvest(vm, {})
    for vm in vms[1:]:
        assert np.array_equal(vms[0].pgt.pool, vm.pgt.pool)


def test_write_fault_relaxes_page_and_counts_local_tlbi():
    vm = make_vm("bitmap", "range")
    ipa = BASE + 5 * 4096
    _, pos, d = vm.pgt.lookup(np.array([ipa]))
    assert not D.is_writable(d)[0]
    res = vm.access(np.array([ipa >> 12]), np.array([1]), np.array([True]))
    assert res.faults.tolist() == [0, 1]
    _, pos, d = vm.pgt.lookup(np.array([ipa]))
    assert D.is_writable(d)[0] and vm.pgt.tlbi["ipa"] == 1
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [5]


def test_several_writes_one_fault_all_counted_in_version():
    vm = make_vm("bitmap", "range")
    g = np.full(5, (BASE >> 12) + 7)
    res = vm.access(g, np.zeros(5, np.int64), np.ones(5, bool))
    assert int(res.faults.sum()) == 1
    assert vm.slots[0].version[7] == 5


def test_write_to_protected_block_splits_lazily_vs_eager():
    lazy = make_vm("bitmap", "range")
    eager = make_vm("bitmap", "range", eager=2 << 20)
    s1 = BASE + (64 << 20)  # slot 1 is mapped with 2 MiB blocks
    assert lazy.pgt.lookup(np.array([s1]))[0][0] == 2
    assert eager.pgt.lookup(np.array([s1]))[0][0] == 3  # split at enable
    gfn = (s1 >> 12) + np.arange(0, 512, 7)
    w = np.ones(gfn.size, bool)
    r_lazy = lazy.access(gfn, np.zeros(gfn.size, np.int64), w)
    r_eager = eager.access(gfn, np.zeros(gfn.size, np.int64), w)
    assert harvest(lazy, {}) == harvest(eager, {})
    # lazy: the block splits into an empty table, every page faults (translation after the first)
    assert int(r_lazy.faults.sum()) == gfn.size and lazy.stats["block_splits"] == 1
    # eager: pages exist read-only, each write is one permission fault, no split at fault time
    assert int(r_eager.faults.sum()) == gfn.size and eager.stats["block_splits"] == 0
    reads = (s1 >> 12) + np.arange(1, 512, 7)
    assert (
        int(
            lazy.access(
                reads, np.zeros(reads.size, np.int64), np.zeros(reads.size, bool)
            ).faults.sum()
        )
        == reads.size
    )
    assert (
        int(
            eager.access(
                reads, np.zeros(reads.size, np.int64), np.zeros(reads.size, bool)
            ).faults.sum()
        )
        == 0
    )


def test_readonly_and_mmio_exits():
    vm = make_vm("bitmap", "range")
    ro = (BASE + (128 << 20)) >> 12
    vm.access(np.array([ro, 0x10, ro]), np.zeros(3, np.int64), np.array([True, True, False]))
    assert vm.stats["user_exits"] == 1 and vm.stats["mmio_exits"] == 1
    assert vm.slots[2].version.sum() == 0


def test_clear_dirty_log_alignment_rules():
    vm = make_vm("manual-clear", "range")
    mask = np.full(100, ~np.uint64(0))
    with pytest.raises(KvmError) as e:
        DL.clear_dirty_log(vm, 0, 32, 64, mask)
    assert e.value.errno_name == "EINVAL" and e.value.field == "first_page"
    with pytest.raises(KvmError) as e:
        DL.clear_dirty_log(vm, 0, 0, 100, mask)
    assert e.value.field == "num_pages"
    assert str(e.value) == (
        "EINVAL: num_pages: must be a multiple of 64 unless the range reaches the slot's end"
    )
    DL.clear_dirty_log(vm, 0, 4096, NPAGES - 4096, mask)  # reaches the end: allowed
    with pytest.raises(KvmError) as e:
        DL.clear_dirty_log(vm, 0, 4096, 128, mask)
    assert "beyond" in str(e.value)


def test_manual_clear_reprotects_only_what_it_cleared():
    vm = make_vm("manual-clear", "range")
    g = (BASE >> 12) + np.array([1, 2, 70])
    vm.access(g, np.zeros(3, np.int64), np.ones(3, bool))
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == [1, 2, 70]
    assert DL.bitmap_pages(DL.get_dirty_log(vm, 0)[0]).tolist() == [1, 2, 70]  # GET does not clear
    only_first = words.copy()
    only_first[1] = 0
    op = DL.clear_dirty_log(vm, 0, 0, 128, only_first)
    assert op.pages == 2
    _, _, d = vm.pgt.lookup(np.array([BASE + 1 * 4096, BASE + 70 * 4096]))
    assert D.is_writable(d).tolist() == [False, True]
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [70]


def test_initially_set_protects_nothing_at_enable():
    vm = make_vm("manual-clear", "range", init_set=True, eager=2 << 20)
    assert DL.bitmap_pages(vm.slots[1].bitmap).size == 2048
    s1 = BASE + (64 << 20)
    level, _, d = vm.pgt.lookup(np.array([s1]))
    assert level[0] == 2 and D.is_writable(d)[0]  # still a writable block
    words, _ = DL.get_dirty_log(vm, 1)
    first = np.zeros_like(words)
    first[0] = words[0]
    DL.clear_dirty_log(vm, 1, 0, 64, first)
    level, _, d = vm.pgt.lookup(np.array([s1, s1 + 64 * 4096]))
    assert level.tolist() == [3, 3]  # CLEAR split the block (eager split on)
    # KVM write-protects [ffs, fls] first, which protects the whole block, then splits it:
    # every page of the block ends read-only; page 64's bit is still set (not cleared)
    assert D.is_writable(d).tolist() == [False, False]
    assert 64 in DL.bitmap_pages(vm.slots[1].bitmap).tolist()


def test_ring_soft_full_defers_and_exits():
    """256 entries: soft limit 192; the 192nd push exits and its store is retried with the
    rest (so 300 - 192 + 1 accesses are deferred)."""
    vm = make_vm("ring", "range", ring=256)
    gfn = (BASE >> 12) + np.arange(0, 600, 2)
    res = vm.access(gfn, np.zeros(gfn.size, np.int64), np.ones(gfn.size, bool))
    assert res.ring_full == {0}
    assert vm.rings[0].used == 192 and res.deferred.size == gfn.size - 192 + 1
    assert vm.rings[0].soft_full


def test_ring_entries_follow_the_writes_whichever_fault_they_take():
    """kvm_dirty_ring_push runs in the fault that dirties the page (mark_page_dirty_in_slot,
    virt/kvm/kvm_main.c, v6.17), so a vCPU's ring lists its pages in the order it wrote
    them, whether the write found a write-protected page (permission fault) or no mapping
    (translation fault): one batch gives the entries one-by-one accesses give."""
    vm = VM(G, Tracking("ring", "range", 256), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True), 4096, populate=True)
    vm.set_memslot(1, BASE + (1 << 20), 1 << 20, slot_flags(log_dirty=True), 4096)
    # slot 0 is mapped and write-protected by logging, slot 1 is not mapped at all
    written = [(1, 3), (0, 5), (1, 1), (0, 2)]
    gfn = np.array([(BASE >> 12) + 256 * sid + page for sid, page in written], np.int64)
    vm.access(gfn, np.zeros(4, np.int64), np.ones(4, bool))
    slots, offsets = vm.rings[0].collect()
    assert list(zip(slots.tolist(), offsets.tolist(), strict=True)) == written
    assert vm.stats["translation_faults"] == 2 and vm.stats["permission_faults"] == 2


@pytest.mark.parametrize("one_by_one", [False, True])
def test_writes_to_a_read_only_block_take_one_fault(one_by_one):
    """Logging on write-protects a 2 MiB block (no eager split); switched off before any write,
    the block stays a read-only block.  The first write faults and relaxes the whole block
    (kvm_pgtable_stage2_relax_perms, arch/arm64/kvm/mmu.c:user_mem_abort, v6.17); the other
    pages' writes find it writable: one fault for five pages, in one batch or one by one."""
    vm = VM(G, Tracking("bitmap", "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20, populate=True)
    vm.set_memslot(0, BASE, 2 << 20, slot_flags(log_dirty=True), 2 << 20)
    vm.set_memslot(0, BASE, 2 << 20, 0, 2 << 20)
    gfn = BGFN + np.array([7, 3, 300, 511, 0], np.int64)
    parts = [slice(i, i + 1) for i in range(5)] if one_by_one else [slice(0, 5)]
    faults = sum(
        vm.access(gfn[s], np.zeros(gfn[s].size, np.int64), np.ones(gfn[s].size, bool)).faults
        for s in parts
    )
    assert faults.tolist() == [1] and vm.stats["permission_faults"] == 1
    level, _, desc = vm.pgt.lookup(np.array([BASE], np.int64))
    assert level.tolist() == [2] and D.is_writable(desc).tolist() == [True]
    assert vm.slots[0].version[[7, 3, 300, 511, 0]].tolist() == [1, 1, 1, 1, 1]


def test_get_without_logging_is_enoent():
    vm = VM(G)
    vm.set_memslot(0, BASE, 1 << 20)
    with pytest.raises(KvmError) as e:
        DL.get_dirty_log(vm, 0)
    assert e.value.errno_name == "ENOENT"


def _group_reference(gfn, vcpu, write, sidx) -> dict[str, list]:
    """A batch grouped by page one access at a time: per page (in gfn order) its slot, first
    access, first write (-1: none), their vCPUs and its access count."""
    seen: dict[int, dict] = {}
    for t, (g, v, w, s) in enumerate(
        zip(gfn.tolist(), vcpu.tolist(), write.tolist(), sidx.tolist(), strict=True)
    ):
        p = seen.setdefault(
            g,
            {
                "sidx": s,
                "t_first": t,
                "vcpu_first": v,
                "first_is_write": w,
                "t_write": -1,
                "vcpu_write": -1,
                "count": 0,
            },
        )
        p["count"] += 1
        if w and p["t_write"] < 0:
            p["t_write"], p["vcpu_write"] = t, v
    pages = [seen[g] for g in sorted(seen)]
    out = {k: [p[k] for p in pages] for k in pages[0]}
    out["gfn"] = sorted(seen)
    out["written"] = [p["t_write"] >= 0 for p in pages]
    return out


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 300), st.integers(-1, 3), st.booleans(), st.integers(0, 1)),
        min_size=1,
        max_size=200,
    ),
    st.booleans(),
)
def test_grouping_by_page_matches_one_access_at_a_time(accesses, far):
    """The write path's grouping (one sort of packed (gfn, index) keys; a plain stable sort
    when the gfn range leaves no room for the index, ``far``) against a per-access loop:
    every page's slot, first access, first write, their vCPUs and its count (vCPU -1 is a
    device write with no running vCPU), with reads and writes mixed, writes only, and one
    vCPU and one slot (filled in instead of gathered)."""
    from engine.kvm.vm import _Pages

    gfn, vcpu, write, sidx = (
        np.array(c, dtype=t)
        for c, t in zip(
            zip(*accesses, strict=True), (np.int64, np.int64, bool, np.int64), strict=True
        )
    )
    gfn = gfn + 0x40000
    if far:
        gfn[gfn % 7 == 0] += 1 << 56
    for w, v, s in ((write, vcpu, sidx), (np.ones_like(write), vcpu, sidx)) + tuple(
        (w, np.full_like(vcpu, vcpu[0]), np.full_like(sidx, sidx[0]))
        for w in (write, np.ones_like(write))
    ):
        got = _Pages.group(gfn, v, w, s)
        want = _group_reference(gfn, v, w, s)
        for name in (
            "gfn",
            "sidx",
            "written",
            "first_is_write",
            "vcpu_first",
            "vcpu_write",
            "t_write",
            "t_first",
        ):
            assert getattr(got, name).tolist() == want[name], name
        if w.all():
            assert got.writes.tolist() == want["count"]
        else:
            assert got.writes is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1, 2, 3]), st.integers(0, 600), st.booleans()),
        min_size=1,
        max_size=60,
    ),
    st.sampled_from([0, 1, None]),
    st.sampled_from([4096, 2 << 20]),
)
def test_a_batch_does_what_its_accesses_do_one_at_a_time(accesses, vcpu, backing):
    """The write path's shortcuts (every access admitted: no gathers; one slot: no per-slot
    masks; one vCPU: packed as a constant) against the same accesses applied one by one: the
    same versions, dirty bits, descriptors, exits and faults.  Region 3 is MMIO (no slot),
    slot 2 is read-only; ``vcpu`` None mixes vCPU 0 and 1.  With 2 MiB backing, slot 1 is
    mapped with write-protected blocks: a read before the write that splits its block goes
    through the block (no fault), a read after it faults the page in read-only."""
    bases = [BASE >> 12, (BASE + (64 << 20)) >> 12, (BASE + (128 << 20)) >> 12, 0x90000]
    gfn = np.array([bases[r] + g for r, g, _ in accesses], dtype=np.int64)
    write = np.array([w for _, _, w in accesses], dtype=bool)
    cpu = np.arange(gfn.size) % 2 if vcpu is None else np.full(gfn.size, vcpu)
    batch, single = (make_vm("bitmap", "range", backing=backing) for _ in range(2))
    res = batch.access(gfn, cpu, write)
    faults = np.zeros(2, np.int64)
    for i in range(gfn.size):
        faults += single.access(gfn[i : i + 1], cpu[i : i + 1], write[i : i + 1]).faults
    assert np.array_equal(res.faults, faults) and batch.stats == single.stats
    assert np.array_equal(batch.pgt.pool, single.pgt.pool)
    for sid in (0, 1, 2):
        assert np.array_equal(batch.slots[sid].version, single.slots[sid].version)
    for sid in (0, 1):
        assert np.array_equal(DL.get_dirty_log(batch, sid)[0], DL.get_dirty_log(single, sid)[0])


@settings(max_examples=10, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 3]), st.integers(0, 600), st.booleans(), st.integers(-1, 2)
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 255),
)
@example([(i % 2, 90 - 7 * i, i < 12, i % 2 - (i == 12)) for i in range(14)], 253)  # (wraps)
def test_a_ring_batch_pushes_what_its_accesses_push_one_at_a_time(accesses, start):
    """Ring mode's pushes (one sort of (vCPU, first-write time) keys, ring slices that wrap)
    against the same accesses applied one by one: every ring holds the same entries in the
    same order, and versions, descriptors, exits, faults and the backup bitmap (vCPU -1: a
    write with no running vCPU) agree.  The rings start at free-running index ``start`` of
    256, so a batch's entries wrap past the end of the array."""
    bases = [BASE >> 12, (BASE + (64 << 20)) >> 12, (BASE + (128 << 20)) >> 12, 0x90000]
    gfn = np.array([bases[r] + g for r, g, _, _ in accesses], dtype=np.int64)
    write = np.array([w for _, _, w, _ in accesses], dtype=bool)
    cpu = np.array([v for _, _, _, v in accesses], dtype=np.int64)
    batch, single = (make_vm("ring", "range", vcpus=3) for _ in range(2))
    for vm in (batch, single):
        for ring in vm.rings:
            ring.dirty_index = ring.fetch_index = ring.reset_index = start
    res = batch.access(gfn, cpu, write)
    faults = np.zeros(3, np.int64)
    for i in range(gfn.size):
        faults += single.access(gfn[i : i + 1], cpu[i : i + 1], write[i : i + 1]).faults
    assert np.array_equal(res.faults, faults) and batch.stats == single.stats
    assert np.array_equal(batch.pgt.pool, single.pgt.pool)
    for a, b in zip(batch.rings, single.rings, strict=True):
        got, want = a.collect(), b.collect()
        assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()
    for sid in (0, 1):
        assert np.array_equal(batch.slots[sid].version, single.slots[sid].version)
        assert np.array_equal(batch.slots[sid].bitmap, single.slots[sid].bitmap)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([0, 1]), st.integers(0, 2047), st.booleans()),
        min_size=1,
        max_size=300,
    ),
    st.booleans(),
)
def test_versions_count_every_write_in_both_slots(accesses, spread):
    """Versions are bumped per slot from counts over the batch's range when it is dense, and
    one by one when it is spread out (``spread`` keeps only a few far-apart pages)."""
    vm = make_vm("bitmap", "range")
    if spread:
        accesses = [(s, g * 997 % 2048 if s == 0 else g, w) for s, g, w in accesses[:3]]
    bases = {0: BASE >> 12, 1: (BASE + (64 << 20)) >> 12}
    gfn = np.array([bases[s] + g for s, g, _ in accesses], dtype=np.int64)
    write = np.array([w for _, _, w in accesses], dtype=bool)
    vm.access(gfn, np.zeros(gfn.size, np.int64), write)
    for sid in (0, 1):
        want = np.zeros(vm.slots[sid].version.size, np.uint32)
        for s, g, w in accesses:
            want[g] += s == sid and w
        assert np.array_equal(vm.slots[sid].version, want)


def _prot_by_walk(vm, slot) -> np.ndarray:
    """The protection layer page by page from a full walk (the reference)."""
    from engine.migration import snapshot as S

    gfn = np.arange(slot.base_gfn, slot.base_gfn + slot.npages)
    level, _, desc = vm.pgt.lookup(gfn << 12)
    out = np.zeros(gfn.size, np.uint8)
    for i, (lv, d) in enumerate(zip(level.tolist(), desc.tolist(), strict=True)):
        if not d & D.VALID:
            continue
        w, dbm = bool(d & D.S2AP_W), bool(d & D.DBM)
        if dbm and not w:
            out[i] = S.PROT_CLEAN_DBM
        elif lv < 3:
            out[i] = S.PROT_BLOCK_RW if w else S.PROT_BLOCK_RO
        else:
            out[i] = S.PROT_PAGE_RW if w else S.PROT_PAGE_RO
    return out


@pytest.mark.parametrize("mode", ["bitmap", "dbm"])
def test_protection_layer_matches_a_walk_of_every_page(mode):
    """Blocks, logged pages (read-only, then written), DBM writable-clean pages, unmapped
    holes and a slot that starts and ends inside 2 MiB regions."""
    from engine.migration.simulation import prot_layer

    vm = VM(G, Tracking(mode, "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 8 << 20, 0, 2 << 20, populate=True)  # blocks
    vm.set_memslot(1, BASE + (16 << 20) + 0x3000, (6 << 20) - 0x5000, 0, 4096, populate=True)
    vm.set_memslot(2, BASE + (32 << 20), 4 << 20, 0, 4096)  # nothing mapped yet
    s1 = vm.slots[1].slot
    vm.set_memslot(1, s1.base, s1.size, slot_flags(log_dirty=True), 4096)
    rng = np.random.default_rng(1)
    g = s1.base_gfn + rng.choice(s1.npages, 300, replace=False)
    g = np.concatenate([g, [(BASE + (32 << 20)) >> 12]])  # one page of slot 2 faults in
    vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))
    for sid in (0, 1, 2):
        slot = vm.slots[sid].slot
        got = prot_layer(vm, slot)
        assert got.shape == (slot.npages,)
        assert np.array_equal(got, _prot_by_walk(vm, slot)), sid
    # (logging protects pages in bitmap mode; in DBM mode they are writable-clean instead)
    want = {1, 2} if mode == "bitmap" else {2, 5}
    assert set(np.unique(prot_layer(vm, vm.slots[1].slot)).tolist()) == want


@pytest.mark.parametrize("order", ["sorted", "ring"])
@pytest.mark.parametrize("count", [4095, 4096, 20_000])  # the dense path starts at 4096 pages
@pytest.mark.parametrize("span", [60_000, 300_000, 340_000])
def test_set_and_clear_bits_match_a_per_page_loop(order, count, span):
    """set_bit_le / clear_bit_le page by page, against the packed dense path and the
    per-word path on both sides of their threshold (one page in 16 of the words spanned),
    with duplicates and a first page that is not at a word boundary."""
    rng = np.random.default_rng(count + span)
    pages = 37 + rng.integers(0, span - 64, count)
    if order == "sorted":
        pages = np.sort(pages)
    before = rng.integers(0, 2**63, (span + 63) // 64 + 2).astype(np.uint64)
    want_set, want_clear = before.copy(), before.copy()
    for p in pages.tolist():
        want_set[p // 64] |= np.uint64(1 << (p % 64))
        want_clear[p // 64] &= ~np.uint64(1 << (p % 64))
    got = before.copy()
    DL.set_bits(got, pages)
    assert np.array_equal(got, want_set)
    got = before.copy()
    DL.clear_bits(got, pages)
    assert np.array_equal(got, want_clear)


def test_next_set_bits_scans_only_as_far_as_it_needs():
    rng = np.random.default_rng(4)
    sparse = np.zeros(5000, np.uint64)
    sparse[rng.choice(5000, 60, replace=False)] = rng.integers(1, 2**63, 60).astype(np.uint64)
    dense = rng.integers(0, 2**63, 5000).astype(np.uint64)  # (only part of a chunk is expanded)
    for words in (sparse, dense):
        all_bits = np.flatnonzero(np.unpackbits(words.view(np.uint8), bitorder="little"))
        for lo, hi in ((0, 5000 * 64), (1000, 200_000), (64 * 17 + 3, 64 * 4000 - 5)):
            inside = all_bits[(all_bits >= lo) & (all_bits < hi)]
            for limit in (1, 37, 65, 1000, inside.size, inside.size + 5):
                got = DL.next_set_bits(words, lo, hi, limit)
                assert got.tolist() == inside[:limit].tolist()
    full = np.full(4, 2**64 - 1, np.uint64)  # every bit set: [lo, hi) cuts inside words
    assert DL.next_set_bits(full, 3, 125, 500).tolist() == list(range(3, 125))
    assert DL.next_set_bits(full, 64, 128, 500).tolist() == list(range(64, 128))
    assert DL.next_set_bits(full, 3, 125, 70).tolist() == list(range(3, 73))  # cut, then limit
    none = DL.next_set_bits(np.zeros(4, np.uint64), 0, 256, 10)
    assert none.size == 0 and none.dtype == np.int64  # page offsets, even when there are none


@pytest.mark.parametrize("per_word", [1, 2, 3, 5, 63, 64])  # around _FEW_BITS, and full
def test_next_set_bits_expands_few_and_many_bits_per_word_alike(per_word):
    """Words with a few set bits (a sparse round: their bits found a round at a time), with
    many (unpacked) and full words (a range) give the same offsets as a plain loop over every
    bit, including bit 63, zero words between, and [lo, hi) cutting inside a word."""
    rng = np.random.default_rng(per_word)
    words = np.zeros(3000, np.uint64)
    filled = rng.choice(3000, 900, replace=False)
    for w in filled.tolist():
        chosen = rng.choice(64, per_word, replace=False).tolist() + ([63] if w % 5 == 0 else [])
        words[w] = np.uint64(sum(1 << b for b in set(chosen)))
    every = [w * 64 + b for w in range(3000) for b in range(64) if int(words[w]) >> b & 1]
    for lo, hi in ((0, 3000 * 64), (64 * 700 + 63, 64 * 2900 + 1), (5, 64 * 40)):
        inside = [p for p in every if lo <= p < hi]
        for limit in (1, 500, len(inside), len(inside) + 1):
            assert DL.next_set_bits(words, lo, hi, limit).tolist() == inside[:limit]


@settings(max_examples=30, deadline=None)
@given(
    st.sampled_from(["bitmap", "ring", "dbm", "manual-clear"]),
    st.lists(
        st.tuples(st.integers(0, 1023), st.integers(0, 1), st.booleans()), min_size=1, max_size=300
    ),
    st.integers(1, 40),
)
def test_a_big_batch_applied_in_slices_is_one_batch(mode, accesses, slice_size):
    """VM.access applies long batches a slice at a time; every outcome is the one batch's:
    faults, dirty events, deferred accesses of a full ring, versions, logs and tables."""
    import engine.kvm.vm as V

    gfn = np.array([(BASE >> 12) + g for g, _, _ in accesses], dtype=np.int64)
    vcpu = np.array([v for _, v, _ in accesses], dtype=np.int64)
    write = np.array([w for _, _, w in accesses], dtype=bool)
    out = []
    for size in (V.ACCESS_SLICE, slice_size):
        vm = make_vm(mode, "range", ring=256)  # (the smallest ring fills: deferred accesses)
        old, V.ACCESS_SLICE = V.ACCESS_SLICE, size
        try:
            res = vm.access(gfn, vcpu, write)
        finally:
            V.ACCESS_SLICE = old
        rings = [r.collect() for r in vm.rings] if vm.rings else []
        out.append((res, vm, rings))
    (a, vm_a, rings_a), (b, vm_b, rings_b) = out
    assert np.array_equal(a.faults, b.faults) and np.array_equal(a.dirty_events, b.dirty_events)
    assert a.applied_writes == b.applied_writes and a.ring_full == b.ring_full
    assert (a.deferred is None) == (b.deferred is None)
    if a.deferred is not None:
        assert np.array_equal(a.deferred, b.deferred)
    assert np.array_equal(vm_a.pgt.pool, vm_b.pgt.pool)
    for sid in (0, 1):
        assert np.array_equal(vm_a.slots[sid].version, vm_b.slots[sid].version)
        if vm_a.slots[sid].bitmap is not None:
            assert np.array_equal(vm_a.slots[sid].bitmap, vm_b.slots[sid].bitmap)
    for (sa, oa), (sb, ob) in zip(rings_a, rings_b, strict=True):
        assert np.array_equal(sa, sb) and np.array_equal(oa, ob)


def test_a_new_block_is_charged_to_the_vcpu_that_touched_it_first():
    """Not logging, a 2 MiB-backed slot maps a block on the first fault in it; the other
    pages of the block find it mapped. The fault goes to the earliest access of the block,
    whatever its page (here not the lowest gfn)."""
    vm = VM(G, Tracking("bitmap", "range"), nr_vcpus=3)
    vm.set_memslot(0, BASE, 8 << 20, 0, 2 << 20)
    b0, b1 = BASE >> 12, (BASE >> 12) + 512
    gfn = np.array([b0 + 300, b0 + 5, b1 + 7, b0 + 5, b1 + 1, b0 + 511])
    vcpu = np.array([2, 0, 1, 1, 0, 0])
    res = vm.access(gfn, vcpu, np.ones(gfn.size, bool))
    assert res.faults.tolist() == [0, 1, 1]  # block 0: vCPU 2 (gfn +300), block 1: vCPU 1
    assert vm.stats["block_maps"] == 2 and vm.stats["translation_faults"] == 2


@settings(max_examples=40, deadline=None)
@given(
    st.sampled_from(["range", "masked-skip", "visitor", "rmap"]),
    st.sampled_from([(0, False), (1, False), (1, True)]),
    st.lists(st.integers(0, 2047), min_size=1, max_size=200),
    st.sampled_from([64, 128, 512]),
    st.integers(0, 2**32),
)
def test_clears_applied_together_count_as_the_same_ioctls_one_by_one(
    strategy, slot_and_init, pages, chunk, seed
):
    """QEMU's chunked CLEARs of a tick are applied in one pass: the bitmap, the tables and
    every count (reads and writes per level, flushes, words, pages) equal the ioctls made
    one after another, masked-skip's walks included (its cache ends with each ioctl).  Slot 1
    is 2 MiB-backed: with INITIALLY_SET its unwritten blocks are cleared as blocks."""
    sid, init_set = slot_and_init
    rng = np.random.default_rng(seed)
    vms = [make_vm("manual-clear", strategy, init_set=init_set) for _ in range(2)]
    slot = vms[0].slots[sid].slot
    g = slot.base_gfn + np.array(pages, dtype=np.int64)
    for vm in vms:
        vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))
        words, _ = DL.get_dirty_log(vm, sid)
    calls = []
    for first in range(0, slot.npages, chunk):
        num = min(chunk, slot.npages - first)
        w = words[first // 64 : (first + num + 63) // 64]
        keep = rng.integers(0, 2**63, w.size).astype(np.uint64) << np.uint64(1)
        keep |= rng.integers(0, 2, w.size).astype(np.uint64)
        if rng.random() < 0.7 and (w & keep).any():
            calls.append((first, num, w & keep))
    together = DL.clear_dirty_log_many(vms[0], sid, calls)
    one_by_one = DL.OpStats("clear")
    for call in calls:
        one_by_one.add(DL.clear_dirty_log(vms[1], sid, *call))
    assert np.array_equal(vms[0].slots[sid].bitmap, vms[1].slots[sid].bitmap)
    assert np.array_equal(vms[0].pgt.pool, vms[1].pgt.pool)
    assert together.counters == one_by_one.counters
    assert (together.tlbi, together.words, together.pages) == (
        one_by_one.tlbi,
        one_by_one.words,
        one_by_one.pages,
    )


def test_reads_before_a_block_splits_go_through_it():
    """Slot 1's first 2 MiB block, write-protected for logging; in one batch: read page 5,
    write page 6 (permission fault on the block: split, page 6 mapped writable), read page 7
    (its page is gone with the block: translation fault, mapped read-only), write page 5
    (translation fault, writable) — 3 faults, one split, as the four one at a time.  The
    splitting write is a permission fault (it found a valid read-only block), the other two
    translation faults (mmu.c:user_mem_abort with force_pte; the empty table the split left)."""
    vm = make_vm("bitmap", "range")
    base = (BASE + (64 << 20)) >> 12
    gfn = base + np.array([5, 6, 7, 5])
    res = vm.access(gfn, np.zeros(4, np.int64), np.array([False, True, False, True]))
    assert res.faults.tolist() == [3, 0]
    assert vm.stats["block_splits"] == 1
    assert vm.stats["translation_faults"] == 2 and vm.stats["permission_faults"] == 1
    words, _ = DL.get_dirty_log(vm, 1)
    assert DL.bitmap_pages(words).tolist() == [5, 6]


@pytest.mark.parametrize("mode", ["bitmap", "dbm"])
def test_disabling_logging_drops_the_bitmap_and_the_dbm_bits(mode):
    """Clearing KVM_MEM_LOG_DIRTY_PAGES frees the slot's dirty bitmap
    (kvm_prepare_memory_region, v6.17), so GET answers ENOENT (kvm_get_dirty_log_protect:
    ``!memslot->dirty_bitmap``).  In DBM mode the slot's leaves lose DBM: the two written
    pages stay writable (S2AP W), the 254 others are plain read-only (no writable-clean
    page is left for the hardware to dirty silently)."""
    vm = VM(G, Tracking(mode, "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, 1 << 20, slot_flags(log_dirty=True), 4096)
    written = [3, 100]
    g = BGFN + np.array(written)
    vm.access(g, np.zeros(2, np.int64), np.ones(2, bool))
    vm.set_memslot(0, BASE, 1 << 20, 0, 4096)
    with pytest.raises(KvmError) as err:
        DL.get_dirty_log(vm, 0)
    assert err.value.errno_name == "ENOENT"
    assert not vm.slots[0].logging
    level, _, desc = vm.pgt.lookup((BGFN + np.arange(256)) << 12)
    assert (level == 3).all()
    bits = desc & np.uint64(D.DBM | D.S2AP_W)
    assert np.flatnonzero(bits).tolist() == written
    assert set(bits[written].tolist()) == {D.S2AP_W}


@pytest.mark.parametrize(
    ("first", "num", "words"), [(0, 64, 1), (0, 128, 2), (4096, 37, 1), (0, NPAGES, 65)]
)
def test_clear_reads_one_bitmap_word_per_64_pages_rounded_up(first, num, words):
    """kvm_clear_dirty_log_protect (v6.17) walks n = DIV_ROUND_UP(num_pages, BITS_PER_LONG)
    words of the user's mask: 64 pages 1 word, 128 pages 2, the 37-page tail of slot 0
    (4133 pages) 1, the whole slot 65 (4133 / 64 = 64.6).  The cost model charges each."""
    vm = make_vm("manual-clear", "range")
    mask = np.full(words, ~np.uint64(0))
    op = DL.clear_dirty_log(vm, 0, first, num, mask)
    assert op.words == words


def test_initially_set_clear_splits_only_the_block_of_the_cleared_pages():
    """With MANUAL_PROTECT | INITIALLY_SET and eager split, kvm_arch_mmu_enable_log_dirty_
    pt_masked (v6.17) write-protects and then kvm_mmu_split_huge_pages only over
    [base_gfn + __ffs(mask), base_gfn + __fls(mask) + 1): clearing page 512 alone (bit 0
    of word 8, the first page of slot 1's second 2 MiB block) splits that block and no
    other: pages 0..511 and 1024..2047 stay in 2 MiB blocks."""
    vm = make_vm("manual-clear", "range", init_set=True, eager=2 << 20)
    s1 = vm.slots[1].slot
    mask = np.zeros(1, np.uint64)
    mask[0] = 1
    DL.clear_dirty_log(vm, 1, 512, 64, mask)
    level, _, d = vm.pgt.lookup(s1.base + np.arange(0, 2048, 1) * 4096)
    assert level.tolist() == [2] * 512 + [3] * 512 + [2] * 1024
    assert not D.is_writable(d[512:513]).any() and D.is_writable(d[1024:]).all()


@pytest.mark.parametrize(("slot", "field"), [(32767, "slot"), (32766, "first_page")])
def test_clear_checks_the_slot_id_before_first_page(slot, field):
    """kvm_clear_dirty_log_protect (v6.17): ``id >= KVM_USER_MEM_SLOTS`` is EINVAL first,
    then ``first_page & 63`` EINVAL, and only then the slot lookup (ENOENT): slot 32767
    with first_page 1 names the slot; 32766 (a valid id, no such slot) names first_page."""
    vm = make_vm("manual-clear", "range")
    with pytest.raises(KvmError) as e:
        DL.clear_dirty_log(vm, slot, 1, 64, np.ones(1, np.uint64))
    assert e.value.errno_name == "EINVAL" and e.value.field == field


def test_clear_reads_only_the_words_num_pages_covers():
    """CLEAR reads DIV_ROUND_UP(num_pages, 64) words of the user's mask, whatever follows
    them: 64 pages with a two-word mask of ones clear pages 0..63 and leave 64..127 dirty.
    The mask may be any integer sequence (a list of Python ints here)."""
    vm = make_vm("manual-clear", "range", init_set=True)
    DL.clear_dirty_log(vm, 0, 0, 64, [2**64 - 1, 2**64 - 1])
    pages = DL.bitmap_pages(vm.slots[0].bitmap)
    assert pages[:3].tolist() == [64, 65, 66] and pages.size == NPAGES - 64
    DL.clear_dirty_log(vm, 0, 64, 64, [0b101])
    assert DL.bitmap_pages(vm.slots[0].bitmap)[:3].tolist() == [65, 67, 68]


def test_clear_is_logged_for_a_replay():
    """With an operation log (``dirtylog kvm replay``), each CLEAR is one record: the slot,
    each call's (first_page, num_pages, mask words as read-only uint64) and its modelled
    cost (that of the returned OpStats)."""
    vm = make_vm("manual-clear", "range", init_set=True)
    vm.oplog = []
    op = DL.clear_dirty_log_many(vm, 1, [(0, 64, [3]), (128, 128, [1, 2])])
    (rec,) = vm.oplog
    assert rec.slot == 1
    assert [(f, n, m.tolist()) for f, n, m in rec.calls] == [(0, 64, [3]), (128, 128, [1, 2])]
    assert all(m.dtype == np.uint64 and not m.flags.writeable for _, _, m in rec.calls)
    assert rec.model_ns == op.model_ns(vm.costs) > 0

"""KVM rules as Linux v6.17 has them, each pinned with the value read from the source.

Sources (read from a mainline mirror at v6.17-rc3, Kingxukai/linux; see docs/fidelity.md):
virt/kvm/kvm_main.c, virt/kvm/dirty_ring.c, arch/arm64/kvm/arm.c, arch/arm64/kvm/mmu.c,
arch/arm64/include/asm/kvm_pgtable.h, arch/arm64/kvm/hyp/pgtable.c.  Expected values are
worked out by hand from those functions (and, where noted, from this host's real KVM),
never read back from the engine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import main as cli_main
from engine.kvm import dirtylog as DL
from engine.kvm.dirtyring import check_ring_size
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.migration.simulation import Simulation
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.util.errors import KvmError

G4 = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12
CASES = Path(__file__).parent / "cases" / "fidelity"  # the handed-over cases, kept in the repo
LOG = slot_flags(log_dirty=True)


def logging_vm(mode="bitmap", npages=4096, backing=4096, ring=256, vcpus=1, geom=G4):
    """One populated slot 0 at BASE, logging on (write-protected)."""
    vm = VM(geom, Tracking(mode, ring_entries=ring), nr_vcpus=vcpus)
    size = npages * geom.granule
    vm.set_memslot(0, BASE, size, 0, backing, populate=True)
    vm.set_memslot(0, BASE, size, LOG, backing)
    return vm


def writes(vm, gfns, vcpu=0):
    gfns = np.asarray(gfns, dtype=np.int64)
    return vm.access(gfns, np.full(gfns.size, vcpu), np.ones(gfns.size, dtype=bool))


def desc_of(vm, gfn):
    level, _, desc = vm.pgt.lookup(np.array([gfn << vm.page_shift]))
    return int(level[0]), int(desc[0])


# -- dirty ring size (kvm_vm_ioctl_enable_dirty_log_ring) ------------------------------------


@pytest.mark.parametrize(
    ("page", "entries", "errno"),
    [
        # 4K pages: one page of 16-byte entries is 256; below it EINVAL, the max is 65536
        (4096, 128, "EINVAL"),
        (4096, 256, None),
        (4096, 512, None),
        (4096, 65536, None),
        (4096, 131072, "E2BIG"),
        (4096, 1000, "EINVAL"),  # not a power of two (16000 bytes)
        # 16K pages: 16384 / 16 = 1024 entries at least
        (16384, 512, "EINVAL"),
        (16384, 1024, None),
        (16384, 2048, None),
        # 64K pages: 65536 / 16 = 4096 entries at least
        (65536, 2048, "EINVAL"),
        (65536, 4096, None),
        (65536, 65536, None),
        (65536, 131072, "E2BIG"),
    ],
)
def test_ring_size_rule_per_granule(page, entries, errno):
    """kvm_vm_ioctl_enable_dirty_log_ring (v6.17): size in bytes a power of two, at least
    KVM_DIRTY_RING_RSVD_ENTRIES (64) × 16 and PAGE_SIZE (EINVAL), at most
    KVM_DIRTY_RING_MAX_ENTRIES (65536) × 16 (E2BIG).  This host's real KVM: 2048 bytes
    EINVAL, 3000 bytes EINVAL, 2 MiB E2BIG (real-kvm-facts.md)."""
    if errno is None:
        assert check_ring_size(entries, page) == entries
    else:
        with pytest.raises(KvmError) as exc:
            check_ring_size(entries, page)
        assert exc.value.errno_name == errno
        assert "tracking.ring_entries" in str(exc.value)


def test_ring_size_is_checked_with_the_session_granule():
    """The same 1024 entries are too few with 64K pages (4096 needed) and fine with 16K."""
    s16 = {
        "format": "dirtylog-session",
        "version": 2,
        "geometry": {"granule": "16KiB"},
        "tracking": {"mode": "ring", "ring_entries": 1024},
        "migration": {"policy": "none"},
    }
    Simulation.from_dict(s16)
    s64 = json.loads(json.dumps(s16))
    s64["geometry"]["granule"] = "64KiB"
    with pytest.raises(KvmError, match="at least 4096"):
        Simulation.from_dict(s64)


def test_r02_min_ring_is_refused_by_the_cli(tmp_path, capsys):
    """r02: 128 entries with 4K pages is 2048 bytes < one page → EINVAL, exit status 2."""
    shutil.copy(CASES / "r02_min_ring.json", tmp_path)
    assert cli_main(["run", str(tmp_path / "r02_min_ring.json")]) == 2
    err = capsys.readouterr().err
    assert "EINVAL" in err and "tracking.ring_entries" in err


# -- eager split chunk (arch/arm64/kvm/arm.c kvm_vm_ioctl_enable_cap) ----------------------


@pytest.mark.parametrize(
    ("granule", "ok", "bad"),
    [
        (4096, [0, 4 << 10, 2 << 20, 1 << 30], [8 << 10, 1 << 20, 3 << 20, 4 << 20, 2 << 30]),
        (16384, [0, 16 << 10, 32 << 20], [4 << 10, 2 << 20, 16 << 20, 64 << 20, 1 << 30]),
        (65536, [0, 64 << 10, 512 << 20], [4 << 10, 2 << 20, 256 << 20, 1 << 30]),
    ],
)
def test_eager_split_chunk_sizes(granule, ok, bad):
    """kvm_is_block_size_supported: a power of two in kvm_supported_block_sizes(), the
    granule sizes of levels KVM_PGTABLE_MIN_BLOCK_LEVEL..3 (1 for 4K, 2 otherwise); 0 turns
    splitting off; anything else is EINVAL (kvm_pgtable.h, arm.c, v6.17)."""
    geom = Geometry(granule, 40)
    for size in ok:
        assert VM(geom, Tracking(eager_split=size)).tracking.eager_split == size
    for size in bad:
        with pytest.raises(KvmError) as exc:
            VM(geom, Tracking(eager_split=size))
        assert exc.value.errno_name == "EINVAL" and exc.value.field == "tracking.eager_split"


def test_eager_split_chunk_only_while_no_memslot_exists():
    """arm.c: ``if (!kvm_are_all_memslots_empty(kvm)) r = -EINVAL`` (not EBUSY)."""
    vm = VM(G4)
    vm.enable_eager_split(2 << 20)
    vm.set_memslot(0, BASE, 2 << 20)
    with pytest.raises(KvmError) as exc:
        vm.enable_eager_split(4096)
    assert exc.value.errno_name == "EINVAL"
    vm.set_memslot(0, BASE, 0)  # deleted: no memslot again
    vm.enable_eager_split(4096)
    assert vm.tracking.eager_split == 4096


def test_r06_min_eager_is_refused_by_the_cli(tmp_path, capsys):
    """r06: a 3 MiB chunk is no block size of the 4K granule → EINVAL, exit status 2."""
    shutil.copy(CASES / "r06_min_eager.json", tmp_path)
    assert cli_main(["run", str(tmp_path / "r06_min_eager.json")]) == 2
    assert "EINVAL: tracking.eager_split: 3MiB" in capsys.readouterr().err


# -- GET / CLEAR checks (kvm_get_dirty_log_protect, kvm_clear_dirty_log_protect) -----------


def test_clear_without_manual_protect_clears_and_reprotects():
    """kvm_clear_dirty_log_protect has no manual-protect check: in bitmap mode CLEAR clears
    the bits it is given and write-protects what it really cleared (host KVM: 'CLEAR
    without MANUAL_PROTECT enabled: ok')."""
    vm = logging_vm("bitmap", 128)
    writes(vm, [BGFN + 3, BGFN + 70])
    mask = np.zeros(2, dtype=np.uint64)
    mask[0] = np.uint64(1 << 3)
    DL.clear_dirty_log(vm, 0, 0, 64, mask)
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [70]  # bit 3 cleared, 70 kept
    assert not desc_of(vm, BGFN + 3)[1] & D.S2AP_W  # re-protected
    assert desc_of(vm, BGFN + 70)[1] & D.S2AP_W  # not in the CLEAR: still writable
    res = writes(vm, [BGFN + 3])
    assert int(res.faults.sum()) == 1


def test_clear_checks_first_page_before_the_slot():
    """Order in kvm_clear_dirty_log_protect: slot id range (EINVAL), ``first_page & 63``
    (EINVAL), then no slot / no bitmap (ENOENT), then the range (EINVAL)."""
    vm = VM(G4)
    vm.set_memslot(0, BASE, 128 * 4096)  # not logging: no bitmap
    words = np.zeros(2, dtype=np.uint64)
    for slot, first, errno in [
        (0, 32, "EINVAL"),
        (0, 0, "ENOENT"),
        (7, 32, "EINVAL"),
        (7, 64, "ENOENT"),
        (32767, 0, "EINVAL"),
        (32766, 0, "ENOENT"),
    ]:
        with pytest.raises(KvmError) as exc:
            DL.clear_dirty_log(vm, slot, first, 64, words)
        assert exc.value.errno_name == errno, (slot, first)


def test_get_errnos_on_unusual_slots():
    """kvm_get_dirty_log_protect: id ≥ KVM_USER_MEM_SLOTS (32767) → EINVAL; no such slot
    or no bitmap → ENOENT (host KVM: GET on a slot without the log flag → ENOENT)."""
    vm = VM(G4)
    vm.set_memslot(0, BASE, 64 * 4096)
    cases = [(0, "ENOENT"), (5, "ENOENT"), (32766, "ENOENT"), (32767, "EINVAL"), (-1, "EINVAL")]
    for slot, errno in cases:
        with pytest.raises(KvmError) as exc:
            DL.get_dirty_log(vm, slot)
        assert exc.value.errno_name == errno, slot


def test_clear_range_rules_at_the_slot_end():
    """num_pages must be a multiple of 64 unless it reaches the slot's end; nothing may go
    past the end (host KVM on a 16 424-page slot: 100 pages EINVAL, 40 to the end ok)."""
    vm = logging_vm("bitmap", 16424)
    words = np.zeros(257, dtype=np.uint64)
    DL.clear_dirty_log(vm, 0, 16384, 40, words)  # reaches the end exactly
    for first, num in [(0, 100), (16384, 39), (16384, 41), (16448, 0)]:
        with pytest.raises(KvmError) as exc:
            DL.clear_dirty_log(vm, 0, first, num, words)
        assert exc.value.errno_name == "EINVAL", (first, num)
    DL.clear_dirty_log(vm, 0, 16384, 0, words)  # empty, at the end: allowed


# -- memslot MOVE keeps its bitmap (kvm_prepare_memory_region) ------------------------------


def test_move_keeps_the_dirty_bitmap():
    """kvm_prepare_memory_region: 'If logging is enabled in both old and new, reuse the
    existing bitmap' — a bit set before the move is reported after it, at the same slot
    offset; the old mappings are gone (kvm_arch_flush_shadow_memslot)."""
    vm = logging_vm("bitmap", 512)
    writes(vm, [BGFN + 5])
    new_base = 0x80000000
    vm.set_memslot(0, new_base, 512 * 4096, LOG, 4096)
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == [5]
    assert not D.is_valid(np.uint64(desc_of(vm, BGFN + 5)[1]))


def test_move_without_logging_after_drops_the_bitmap():
    """A MOVE that also clears KVM_MEM_LOG_DIRTY_PAGES nulls the bitmap → GET is ENOENT."""
    vm = logging_vm("bitmap", 512)
    writes(vm, [BGFN + 5])
    vm.set_memslot(0, 0x80000000, 512 * 4096, 0, 4096)
    with pytest.raises(KvmError, match="ENOENT"):
        DL.get_dirty_log(vm, 0)


def test_r01_min_move_loses_nothing(tmp_path):
    """r01: the page written at 300 ms, before the move at 400 ms, is reported by the first
    harvest after the move and sent: 0 mismatches (was 1)."""
    for f in ("r01_min_move.json", "r01_min_write.csv"):
        shutil.copy(CASES / f, tmp_path)
    sim = Simulation.from_file(tmp_path / "r01_min_move.json")
    sim.keep_harvests = True
    out = sim.run()
    assert out["verification"]["mismatches"] == 0
    first = sim.harvests[1]["slots"][0]  # harvests[0] is QEMU's setup sync, before any write
    assert DL.bitmap_pages(first).tolist() == [0]


# -- dirty ring: the ring-full exit retries the store ---------------------------------------


def run_with_ring_exits(vm, gfns):
    """User space as QEMU's vCPU thread: on KVM_EXIT_DIRTY_RING_FULL collect and reset the
    rings, then KVM_RUN again with what was not done.  Returns (entries, faults, exits)."""
    gfn = np.asarray(gfns, dtype=np.int64)
    entries = faults = exits = 0
    while gfn.size:
        res = vm.access(gfn, np.zeros(gfn.size, np.int64), np.ones(gfn.size, dtype=bool))
        faults += int(res.faults.sum())
        if res.deferred is None or not res.deferred.size:
            break
        exits += len(res.ring_full)
        entries += DL.collect_rings(vm)[1].size
        DL.reset_rings(vm)
        gfn = gfn[res.deferred]
    return entries + DL.collect_rings(vm)[1].size, faults, exits


@pytest.mark.parametrize(
    ("pages", "entries", "exits"),
    [
        (191, 191, 0),  # one below the soft limit: no exit
        (192, 193, 1),  # the 192nd push fills the ring: exit, its store retried once
        (193, 194, 1),
        (382, 383, 1),  # after the reset: 1 (retry) + 190 new, one short of 192 again
        (383, 385, 2),  # 1 (retry) + 191 new fill it again: the second exit
        (384, 386, 2),
        (1000, 1005, 5),  # this host's real KVM: 1 000 pages → 1 005 entries, 5 exits
    ],
)
def test_ring_full_exit_retries_the_faulting_store(pages, entries, exits):
    """Soft limit = 256 − KVM_DIRTY_RING_RSVD_ENTRIES (64) = 192 on arm64.  The push that
    reaches it requests the exit; the vCPU leaves before the store is retried, the reset
    write-protects the page again, and the retried store faults and pushes it a second
    time: +1 entry and +1 fault per exit.  By hand: n pages give k exits with
    192 + 191·(k−1) ≤ n, and n + k entries (real-kvm-facts.md, ringretry.py)."""
    vm = logging_vm("ring", 2048, ring=256)
    got_entries, faults, got_exits = run_with_ring_exits(vm, BGFN + np.arange(pages))
    assert (got_entries, faults, got_exits) == (entries, entries, exits)
    assert int(vm.slots[0].version[:pages].sum()) == pages  # each store happened once


# -- writes with no running vCPU (mark_page_dirty_in_slot) ---------------------------------


@pytest.mark.parametrize("mode", ["bitmap", "manual-clear", "ring"])
def test_host_write_marks_dirty_and_leaves_stage2_alone(mode):
    """kvm_write_guest → mark_page_dirty_in_slot with no running vCPU: the slot's bitmap
    (in ring mode the ring-with-bitmap backup) gets the bit; no stage-2 fault, the page
    stays write-protected, so the next vCPU write faults and is logged again."""
    vm = logging_vm(mode, 128)
    g = BGFN + 9
    res = vm.access(np.array([g]), np.array([-1]), np.array([True]))
    assert int(res.faults.sum()) == 0 and int(vm.slots[0].version[9]) == 1
    assert DL.bitmap_pages(vm.slots[0].bitmap).tolist() == [9]
    assert not desc_of(vm, g)[1] & D.S2AP_W
    res = writes(vm, [g])
    assert int(res.faults.sum()) == 1 and int(res.dirty_events.sum()) == 1
    if mode == "ring":
        assert DL.collect_rings(vm)[1].tolist() == [9]


def test_r07b_host_then_vcpu_write(tmp_path):
    """r07b: host write at 300 ms, vCPU 0 writes the same page at 310 ms → 1 fault and
    1 ring push (were 0 and 0)."""
    for f in ("r07b_host_then_vcpu_write.json", "r07b_host_then_vcpu.csv"):
        shutil.copy(CASES / f, tmp_path)
    out = Simulation.from_file(tmp_path / "r07b_host_then_vcpu_write.json").run()
    assert out["vm_stats"]["ring_pushes"] == 1
    assert out["vm_stats"]["permission_faults"] == 1
    assert sum(r["faults"] for r in out["rounds"]) == 1
    assert out["verification"]["mismatches"] == 0


# -- ring entries left for slots that changed (kvm_reset_dirty_gfn) -------------------------


def test_reset_protects_a_slot_that_stopped_logging():
    """kvm_reset_dirty_gfn (v6.17) checks only that the slot exists and the mask is inside
    it: an entry left for a slot whose logging was switched off still write-protects the
    page, so the next write takes a fault (and logs nothing)."""
    vm = logging_vm("ring", 128)
    writes(vm, [BGFN + 4])
    vm.set_memslot(0, BASE, 128 * 4096, 0, 4096)  # logging off
    assert DL.collect_rings(vm)[1].tolist() == [4]
    DL.reset_rings(vm)
    assert not desc_of(vm, BGFN + 4)[1] & D.S2AP_W
    res = writes(vm, [BGFN + 4])
    assert int(res.faults.sum()) == 1 and int(res.dirty_events.sum()) == 0


def test_reset_follows_a_moved_slot_and_drops_a_deleted_one():
    """Entries are (slot id, offset): after a MOVE the reset protects the page at the new
    place; after a DELETE the entries are skipped."""
    vm = logging_vm("ring", 128)
    writes(vm, [BGFN + 4])
    new = 0x80000000 >> 12
    vm.set_memslot(0, new << 12, 128 * 4096, LOG, 4096)
    writes(vm, [new + 4])  # translation fault at the new place, mapped writable, pushed
    assert desc_of(vm, new + 4)[1] & D.S2AP_W
    assert DL.collect_rings(vm)[1].tolist() == [4, 4]
    DL.reset_rings(vm)
    assert not desc_of(vm, new + 4)[1] & D.S2AP_W
    writes(vm, [new + 5])
    DL.collect_rings(vm)
    vm.set_memslot(0, new << 12, 0)
    op = DL.reset_rings(vm)
    assert op.words == 0


# -- logging switched off live: blocks come back (user_mem_abort) ---------------------------


def block_vm(npages=1024, backing=2 << 20):
    vm = logging_vm("bitmap", npages, backing=backing)
    writes(vm, [BGFN + 1])  # splits the first 2 MiB block (lazily: page 1 mapped writable)
    vm.access(np.array([BGFN + 2]), np.array([0]), np.array([False]))  # a read maps page 2 RO
    vm.set_memslot(0, BASE, npages * 4096, 0, backing)  # logging off (FLAGS_ONLY)
    return vm


def test_logging_off_then_write_maps_the_block_again():
    """user_mem_abort with logging inactive: force_pte is false, vma_pagesize is the 2 MiB
    backing; a permission fault on a 4K page (fault_granule < vma_pagesize) goes to
    kvm_pgtable_stage2_map at 2 MiB, which replaces the table by a writable block."""
    vm = block_vm()
    assert desc_of(vm, BGFN + 2)[0] == 3 and not desc_of(vm, BGFN + 2)[1] & D.S2AP_W
    assert int(writes(vm, [BGFN + 1]).faults.sum()) == 0  # writable page: no fault, no change
    assert desc_of(vm, BGFN + 1)[0] == 3
    res = writes(vm, [BGFN + 2, BGFN + 300])
    assert int(res.faults.sum()) == 1  # the first store faults, the rest finds the block
    level, d = desc_of(vm, BGFN + 300)
    assert level == 2 and D.is_leaf(np.uint64(d), 2) and d & D.S2AP_W
    assert vm.slots[0].bitmap is None


def test_logging_off_translation_fault_in_split_region_maps_the_block():
    """An unmapped page inside the split (now not logging) region: the translation fault
    maps the 2 MiB block too, and the page that is still mapped read-only in the same
    table is covered by it (one fault in all)."""
    vm = block_vm()
    res = writes(vm, [BGFN + 400, BGFN + 2])
    assert int(res.faults.sum()) == 1
    assert desc_of(vm, BGFN + 2)[0] == 2


def test_logging_off_with_page_backing_only_relaxes():
    """4K backing: vma_pagesize == fault_granule → kvm_pgtable_stage2_relax_perms, the
    page stays a page (no block to return to)."""
    vm = logging_vm("bitmap", 1024, backing=4096)
    vm.set_memslot(0, BASE, 1024 * 4096, 0, 4096)
    res = writes(vm, [BGFN + 1])
    assert int(res.faults.sum()) == 1
    level, d = desc_of(vm, BGFN + 1)
    assert level == 3 and d & D.S2AP_W


def test_logging_off_block_that_does_not_fit_the_slot_stays_pages():
    """fault_supports_stage2_huge_mapping: the block must lie inside the memslot; a slot of
    1 MiB + 4 KiB at a 2 MiB boundary has no whole block, so pages are relaxed."""
    vm = logging_vm("bitmap", 257, backing=2 << 20)
    vm.set_memslot(0, BASE, 257 * 4096, 0, 2 << 20)
    res = writes(vm, [BGFN + 1])
    assert int(res.faults.sum()) == 1 and desc_of(vm, BGFN + 1)[0] == 3


def test_r17_logging_off_midway_collapses_vram_and_keeps_it_pending(tmp_path):
    """r17: set_memslot_flags at 500 ms switches vram's logging off (no longer refused);
    its four 2 MiB blocks, split by writes while logging, are mapped as blocks again by
    the next write into each (the workload writes 2 000 pages/s over 2 048 pages).

    QEMU's side, worked out by hand: 16 MiB/s gives 100 ms windows of 1,677,721.6 B, so 409
    pages of 4,104 B each (the 409th starts before the share is used): 16,785.36 B/ms and a
    threshold of 5,035,608 B (1,229 pages of 4 KiB).  Pass 1 (18,432 pages) drops under it
    after 43 windows: the sync at 4,300 ms.  vram, untracked since 500 ms, is all dirty at
    that sync (QEMU marks what it cannot track dirty in full), so 2,048 pages (8 MiB, 1,203
    of them sent in pass 1) are pending, more than the threshold: no switchover, ever.
    expected-downtime at the next window = 8 MiB ÷ 16,785.36 B/ms = 499.76 ms against the
    300 ms limit.  Switched over by force, nothing is lost."""
    shutil.copy(CASES / "r17_logging_off_midway.json", tmp_path)
    sim = Simulation.from_file(tmp_path / "r17_logging_off_midway.json")
    sim.run_for(4_400_000_000)
    out = sim.result()
    assert not any("refused" in m for m in out["messages"])
    assert out["vm_stats"]["block_splits"] == 4 and out["vm_stats"]["block_maps"] == 4
    vram = sim.vm.slots[1].slot
    levels, _, _ = sim.vm.pgt.lookup(np.arange(4, dtype=np.int64) * (2 << 20) + vram.base)
    assert levels.tolist() == [2, 2, 2, 2]
    first = out["rounds"][0]
    assert first["t_end_ns"] == 4_300_000_000 and first["pages_sent"] == 43 * 409
    assert first["threshold_bytes"] == pytest.approx(409 * 4104 / 100 * 300)
    assert first["dirty_pages"] == 2048 and first["new_dirty_pages"] == 2048 - (18432 - 43 * 409)
    assert first["remaining_bytes"] == 8 << 20
    mig = sim.migration
    assert mig.phase == "iterating" and out["dirty_sync_count"] == 2
    assert out["expected_downtime_ms"] == pytest.approx((8 << 20) / (409 * 4104 / 100))
    mig.stop_and_copy(sim.t_ns)
    assert mig.verification["mismatches"] == 0
    assert mig.rounds[-1]["pages_sent"] == 2048  # the final sync marks vram dirty again


@pytest.mark.slow
def test_r17_runs_to_max_rounds_without_switching_over(tmp_path):
    """r17 to its end: after pass 1 every round sends 3 windows × 409 = 1,227 vram pages
    and syncs at 300 ms intervals with 2,048 pages (8 MiB) pending again, over the
    threshold: sync 21 at 4,300 + 19 × 300 = 10,000 ms passes max_rounds 20."""
    shutil.copy(CASES / "r17_logging_off_midway.json", tmp_path)
    out = Simulation.from_file(tmp_path / "r17_logging_off_midway.json").run()
    assert out["outcome"] == "not-converged" and out["dirty_sync_count"] == 21
    assert out["total_time_ms"] == pytest.approx(10_000)
    rounds = out["rounds"]
    assert [r["t_end_ns"] for r in rounds[:20]] == [
        4_300_000_000 + i * 300_000_000 for i in range(20)
    ]
    assert {r["pages_sent"] for r in rounds[1:20]} == {1227}
    assert {r["remaining_bytes"] for r in rounds} == {8 << 20}
    assert out["expected_downtime_ms"] == pytest.approx((8 << 20) / (409 * 4104 / 100))


# -- descriptor attributes on data faults (stage2_set_prot_attr) ----------------------------


def test_data_fault_leaves_are_execute_never():
    """user_mem_abort adds KVM_PGTABLE_PROT_X only for an instruction fault (or CTR_EL0.DIC);
    stage2_set_prot_attr sets KVM_PTE_LEAF_ATTR_HI_S2_XN (bit 54) without it, MemAttr
    Normal (0xf without FWB), SH inner-shareable (3), AF.  Eager/lazy splits keep it."""
    vm = logging_vm("bitmap", 1024, backing=2 << 20)
    writes(vm, [BGFN + 7])
    _, d = desc_of(vm, BGFN + 7)
    assert d & (1 << 54) and not d & (1 << 53)
    assert (d >> 2) & 0xF == 0xF and (d >> 8) & 3 == 3 and d & (1 << 10)
    assert D.fields(d, 3, 12)["xn"] == 2
    assert D.decode(d, 3, 12).endswith("S2AP=RW AF SH=IS XN=2 DBM=0")
    eager = VM(G4, Tracking(eager_split=2 << 20))
    eager.set_memslot(0, BASE, 2 << 20, 0, 2 << 20, populate=True)
    eager.set_memslot(0, BASE, 2 << 20, LOG, 2 << 20)
    assert desc_of(eager, BGFN + 100)[1] & (1 << 54)


# -- dirtylog perftest follows dirty_log_perf_test.c (v6.17) --------------------------------


def perftest(capsys, *args):
    code = cli_main(["perftest", "-b", "64M", *args])
    out = capsys.readouterr()
    return code, out.out.splitlines(), out.err


def test_perftest_default_is_manual_protect_with_initially_set(capsys):
    """Without -g the selftest enables MANUAL_PROTECT_ENABLE | INITIALLY_SET: nothing is
    write-protected at enable, so iteration 1 takes no fault (16 384 pages × 25 ns =
    0.000409600 s); its CLEAR protects everything, so iteration 2 faults on every page
    (16 384 × (25 ns + 2.5 µs fault exit) = 0.041369600 s)."""
    code, lines, _ = perftest(capsys)
    assert code == 0
    assert lines[1] == "Test iterations: 2"
    assert lines[2] == "Testing guest mode: PA-bits:40,  VA-bits:48,  4K pages"
    # memstress: the region at the top of a 40-bit space, (2^28 − 16384 − 1) pages up
    assert lines[3] == "guest physical test memory: [0xfffbfff000, 0xfffffff000)"
    assert "Iteration 1 dirty memory time: 0.000409600s" in lines
    assert "Iteration 2 dirty memory time: 0.041369600s" in lines
    assert any(line.startswith("Clear dirty log over 2 iterations took") for line in lines)


def test_perftest_g_tracks_from_enable(capsys):
    """-g: no manual protect, every page write-protected at enable: iteration 1 faults on
    all 16 384 pages, and no CLEAR lines are printed."""
    code, lines, _ = perftest(capsys, "-g")
    assert code == 0
    assert "Iteration 1 dirty memory time: 0.041369600s" in lines
    assert not any("clear dirty log" in line.lower() for line in lines)


def test_perftest_modes_and_backing_alignment(capsys):
    """-m picks enum vm_guest_mode ids (repeatable); the region is aligned down to the
    backing size (memstress_create_vm: align_down(gpa, backing_src_pagesz))."""
    code, lines, _ = perftest(capsys, "-m", "6", "-m", "7", "-s", "anonymous_thp")
    assert code == 0
    modes = [line for line in lines if line.startswith("Testing guest mode")]
    assert modes == [
        "Testing guest mode: PA-bits:40,  VA-bits:48,  4K pages",
        "Testing guest mode: PA-bits:40,  VA-bits:48, 16K pages",
    ]
    assert "guest physical test memory: [0xfffbe00000, 0xffffe00000)" in lines


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["-c", "0,1"], "-c (pin vCPU threads"),
        (["-e"], "-e (keep the vCPUs running while dirty logging is disabled)"),
        (["-n"], "-n (run the vCPUs nested"),
        (["-m", "0"], "-m: guest mode 0 is PA-bits:52"),
        (["-m", "9"], "an x86-64 mode"),
        (["-m", "17"], "-m: guest mode ID 17 is not 0..16"),
        (["-x", "3"], "-x: guest memory cannot be evenly divided into 3 slots"),
        (["-i", "1"], "-i: iterations must be at least 2"),
        (["-r", "0"], "-r: the random seed must be positive"),
        (["-w", "101"], "-w: write percentage must be 0..100"),
        (["--eager-split", "3M"], "EINVAL: tracking.eager_split: 3MiB"),
        (["-m", "8", "-s", "anonymous_hugetlb_2mb"], "-s: anonymous_hugetlb_2mb has no"),
    ],
)
def test_perftest_refusals_name_the_option(capsys, args, words):
    """Every selftest option works as in the selftest or is refused with one sentence
    naming it (exit status 2); the selftest's own checks (atoi_positive, -i ≥ 2, -w ≤ 100,
    slots dividing the pages) are kept."""
    code, _, err = perftest(capsys, *args)
    assert code == 2 and words in err and err.count("\n") == 1


def test_perftest_p_is_accepted_and_ignored_like_the_selftest(capsys):
    """v6.17 parses -p into test_params.phys_offset and never uses it: same output."""
    _, plain, _ = perftest(capsys)
    _, with_p, _ = perftest(capsys, "-p", "0x10000000")
    assert plain == with_p


@pytest.mark.parametrize(
    ("args", "iter1", "iter2"),
    [
        ([], "0.000409600", "0.041369600"),
        (["-o"], "0.000819200", "0.082739200"),
        (["-o", "-g"], "0.082739200", "0.082739200"),
    ],
)
def test_perftest_overlap_walks_the_whole_region(capsys, args, iter1, iter2):
    """-o: every vCPU walks the whole region (memstress_setup_vcpus: with partition_vcpu_
    memory_access false, vcpu_args->pages = all guest pages) instead of its own 1/v part; the
    region is v × -b either way.  -v 2 -b 64M: 32 768 pages, [0xfff7fff000, 0xfffffff000).
    Partitioned, each vCPU writes 16 384 pages: iteration 1 (initially set, nothing
    protected) 16 384 × 25 ns, iteration 2 (CLEAR protected everything) 16 384 × (25 ns +
    2.5 µs fault exit).  Overlapped, each writes 32 768 pages: 32 768 × 25 ns = 0.000819200 s,
    then every page faults once, taken by the slowest vCPU (the model applies the vCPUs'
    writes in vCPU order, so vCPU 0 takes them all): 32 768 × 2525 ns = 0.082739200 s; with
    -g every page is protected at enable, so iteration 1 faults too."""
    code, lines, _ = perftest(capsys, "-v", "2", *args)
    assert code == 0
    assert "guest physical test memory: [0xfff7fff000, 0xfffffff000)" in lines
    assert f"Iteration 1 dirty memory time: {iter1}s" in lines
    assert f"Iteration 2 dirty memory time: {iter2}s" in lines


def test_perftest_overlap_and_eager_split(capsys):
    """-o with 2 MiB hugetlb backing: the region is aligned down to 2 MiB; --eager-split 2M
    is the chunk in the model's own spelling (the selftest's -e is another option)."""
    code, lines, _ = perftest(
        capsys, "-v", "2", "-o", "-s", "anonymous_hugetlb_2mb", "--eager-split", "2M"
    )
    assert code == 0
    assert "guest physical test memory: [0xfff7e00000, 0xffffe00000)" in lines


@pytest.mark.parametrize(("init_set", "expected"), [(False, []), (True, list(range(70)))])
def test_readonly_logging_slot_has_a_bitmap(init_set, expected):
    """kvm_prepare_memory_region allocates a bitmap for any slot with LOG_DIRTY_PAGES, a
    READONLY one included (all ones with manual protect + INITIALLY_SET), while arm64's
    memslot_is_logging() is false for it (no write protection): GET answers (ENOENT only
    without the flag)."""
    mode = "manual-clear" if init_set else "bitmap"
    vm = VM(G4, Tracking(mode, initially_set=init_set))
    flags = slot_flags(log_dirty=True, readonly=True)
    vm.set_memslot(0, BASE, 70 * 4096, flags, populate=True)
    words, _ = DL.get_dirty_log(vm, 0)
    assert DL.bitmap_pages(words).tolist() == expected
    assert not desc_of(vm, BGFN + 3)[1] & D.S2AP_W  # read-only slot, mapped read-only
    vm.set_memslot(0, BASE, 70 * 4096, slot_flags(readonly=True))
    with pytest.raises(KvmError, match="ENOENT"):
        DL.get_dirty_log(vm, 0)


def _ring_sim_of_64_pages() -> Simulation:
    """Ring mode, one logged 256 KiB slot (64 pages of 4 KiB), a migration not yet started."""
    return Simulation.from_dict(
        {
            "format": "dirtylog-session",
            "version": 2,
            "tracking": {"mode": "ring"},
            "memslots": [{"id": 0, "base": "0x40000000", "size": "256KiB", "flags": ["log_dirty"]}],
            "migration": {"bandwidth": "1GiB/s"},
        }
    )


def test_ring_entries_past_a_slot_that_shrank_are_dropped():
    """QEMU's kvm_dirty_ring_mark_page (accel/kvm/kvm-all.c) ignores an offset at or past
    the slot's size (a slot deleted and re-created smaller under the same id)."""
    sim = _ring_sim_of_64_pages()
    sim.advance(1)
    m = sim.migration
    m.add_ring_pages(np.array([0, 0], dtype=np.uint32), np.array([63, 64], dtype=np.uint64))
    assert [p.tolist() for p in m.ring_pending[0]] == [[63]]


@pytest.mark.parametrize(
    "offsets, words, pages_left_writable",
    [
        ([63], 1, []),  # the slot's last page
        ([64], 0, []),  # one past it
        ([62, 63], 1, []),  # one mask (62, 0b11) ending on the last page
        ([62, 64], 0, [62]),  # one mask (62, 0b101) reaching past: skipped whole
        ([63, 200], 1, []),  # two masks, the second past the end
    ],
)
def test_a_reset_skips_a_mask_reaching_past_the_slot_end(offsets, words, pages_left_writable):
    """kvm_reset_dirty_gfn (virt/kvm/dirty_ring.c, v6.17): a merged mask whose highest page,
    offset + __fls(mask), is at or past the slot's npages is dropped whole, its other pages
    left writable.  A 256 KiB slot has 64 pages (0..63); every page is made writable first."""
    sim = _ring_sim_of_64_pages()
    sim.advance(1)  # logging on: every page write-protected
    vm = sim.vm
    gfn = (0x40000000 >> 12) + np.arange(64)
    vm.access(gfn, np.zeros(64, np.int32), np.ones(64, bool))
    DL.collect_rings(vm)
    DL.reset_rings(vm)  # the 64 entries of those writes: all protected again
    vm.access(gfn, np.zeros(64, np.int32), np.ones(64, bool))  # writable again
    DL.collect_rings(vm)
    vm.rings[0].reset_entries()  # (harvested, dropped: only the entries below are reset)
    vm.rings[0].push(np.zeros(len(offsets), np.uint32), np.array(offsets, np.uint64))
    DL.collect_rings(vm)
    op = DL.reset_rings(vm)
    assert (op.pages, op.words) == (len(offsets), words)
    _, _, desc = vm.pgt.lookup(gfn << 12)
    writable = np.flatnonzero(D.is_writable(desc)).tolist()
    kept = [o for o in offsets if o < 64 and o not in pages_left_writable]
    assert writable == [p for p in range(64) if p not in kept]


def _flags_session(events, flags1):
    return {
        "format": "dirtylog-session",
        "version": 2,
        "tick_ms": 1,
        "memslots": [
            {"id": 0, "base": "0x40000000", "size": "4MiB", "flags": ["log_dirty"]},
            {"id": 1, "base": "0x48000000", "size": "4MiB", "flags": flags1},
        ],
        "workloads": [
            {"name": "w", "kind": "uniform", "vcpu": 0, "slot": 1, "rate": "2000 pages/s"}
        ],
        "migration": {"bandwidth": "8MiB/s", "max_rounds": 20},
        "events": events,
    }


def test_set_memslot_flags_logging_on_mid_migration_tracks_the_slot():
    """KVM_MR_FLAGS_ONLY adding LOG_DIRTY_PAGES: a bitmap is allocated and the slot
    write-protected (kvm_arch_commit_memory_region); the migration tracks it from then on
    and sends it all again, so nothing written before is lost."""
    ev = [{"t_ms": 20, "action": "set_memslot_flags", "id": 1, "flags": ["log_dirty"]}]
    sim = Simulation.from_dict(_flags_session(ev, []))
    out = sim.run()
    assert not any("refused" in m for m in out["messages"])
    assert sim.vm.slots[1].logging and sim.migration.slots[1].tracked
    assert out["verification"]["mismatches"] == 0


def test_logging_off_during_manual_clear_pass_1_leaves_nothing_to_clear():
    """Manual clear + initially-set: the setup GET reports every page, and pass 1 CLEARs each
    chunk before sending it.  Logging switched off at 20 ms frees KVM's bitmap; a CLEAR of
    the chunks not yet sent would get ENOENT, which QEMU ignores (kvm_log_clear_one_slot:
    ``ret < 0 && ret != -ENOENT``): the run goes on (it used to stop on ENOENT), slot 0 is
    then all dirty at every sync, and a forced switchover loses nothing."""
    ev = [{"t_ms": 20, "action": "set_memslot_flags", "id": 0, "flags": []}]
    data = _flags_session(ev, ["log_dirty"])
    data["tracking"] = {"mode": "manual-clear", "initially_set": True, "clear_chunk": "256KiB"}
    sim = Simulation.from_dict(data)
    sim.run_for(400_000_000)
    mig = sim.migration
    assert not sim.vm.slots[0].logging and not mig.slots[0].tracked
    assert mig.slots[0].clear_snapshot is None
    assert mig.phase == "iterating" and mig.total_pages_sent > 4 * 64  # chunks after 20 ms
    mig.stop_and_copy(sim.t_ns)
    assert mig.verification["mismatches"] == 0


def test_set_memslot_flags_cannot_toggle_readonly():
    """kvm_set_memory_region: ``(mem->flags ^ old->flags) & KVM_MEM_READONLY`` → EINVAL;
    the edit is refused with that errno and nothing changes: at load, as the event's own
    field (issue 16), and live, as an edit."""
    ev = [{"t_ms": 5, "action": "set_memslot_flags", "id": 1, "flags": ["readonly"]}]
    with pytest.raises(KvmError) as e:
        Simulation.from_dict(_flags_session(ev, ["log_dirty"]))
    assert e.value.errno_name == "EINVAL" and e.value.field == "events[0].flags"
    assert "READONLY" in e.value.rule
    sim = Simulation.from_dict(_flags_session([], ["log_dirty"]))
    sim.run_for(5_000_000)
    with pytest.raises(KvmError, match="EINVAL: flags: KVM_MEM_READONLY"):
        sim.apply_edit({"action": "set_memslot_flags", "id": 1, "flags": ["readonly"]})
    assert sim.vm.slots[1].logging and not sim.vm.slots[1].slot.readonly

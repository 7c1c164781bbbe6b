"""Boundary tables: every rule with a threshold, at the boundary and one step on each side.

Each table's docstring names where its value comes from; the expected outcomes are worked out
by hand from that source, never read back from the engine.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from engine.files.session import MigrationCfg
from engine.kvm import dirtylog as DL
from engine.kvm.dirtyring import DirtyRing
from engine.kvm.memslots import Memslots
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.migration.precopy import NS, Migration
from engine.stage2.geometry import Geometry
from engine.util.errors import ConfigError, KvmError

BASE = 0x40000000
MiB = 1 << 20


# -- dirty ring soft limit ---------------------------------------------------------------------


@pytest.mark.parametrize("size, soft_limit", [(256, 192), (4096, 4032), (65536, 65472)])
@pytest.mark.parametrize("step", [-1, 0, 1])
def test_ring_soft_limit(size, soft_limit, step):
    """virt/kvm/dirty_ring.c (Linux 6.12): soft_limit = size - kvm_dirty_ring_get_rsvd_entries()
    = size - KVM_DIRTY_RING_RSVD_ENTRIES (64; arm64 adds no PML log size), and
    kvm_dirty_ring_soft_full() is ``used >= soft_limit``.  So: one below, full only at and
    above; the room left is soft_limit - used, never negative."""
    ring = DirtyRing(size)
    used = soft_limit + step
    ring.push(np.zeros(used, np.uint32), np.arange(used, dtype=np.uint64))
    assert ring.soft_limit == soft_limit
    assert ring.used == used
    assert ring.soft_full is (step >= 0)
    assert ring.room() == (1 if step == -1 else 0)


# -- KVM_CLEAR_DIRTY_LOG alignment -------------------------------------------------------------

NPAGES = 4096 + 37  # the slot's last word is partial


def _manual_vm(npages: int = NPAGES) -> VM:
    vm = VM(Geometry(4096, 40), Tracking("manual-clear", "range"), nr_vcpus=1)
    vm.set_memslot(0, BASE, npages * 4096, slot_flags(log_dirty=True), 4096, populate=True)
    return vm


def _clear(vm: VM, first: int, num: int) -> None:
    DL.clear_dirty_log(vm, 0, first, num, np.full((num + 63) // 64, ~np.uint64(0)))


@pytest.mark.parametrize("first, ok", [(0, True), (63, False), (64, True), (65, False)])
def test_clear_first_page_must_be_a_multiple_of_64(first, ok):
    """kvm_clear_dirty_log_protect (virt/kvm/kvm_main.c, 6.12): ``if (log->first_page & 63)
    return -EINVAL``."""
    vm = _manual_vm()
    if ok:
        _clear(vm, first, 64)
    else:
        with pytest.raises(KvmError) as err:
            _clear(vm, first, 64)
        assert (err.value.errno_name, err.value.field) == ("EINVAL", "first_page")


@pytest.mark.parametrize(
    "first, num, ok",
    [
        (0, 63, False),
        (0, 64, True),
        (0, 65, False),
        (4096, 36, False),  # short of the slot's end
        (4096, 37, True),  # exactly to the end: any count
        (4096, 38, False),  # beyond the end
        (0, NPAGES, True),
        (0, NPAGES + 1, False),
    ],
)
def test_clear_num_pages_multiple_of_64_unless_it_reaches_the_end(first, num, ok):
    """Same function: ``num_pages > npages - first_page`` or (``num_pages < npages -
    first_page`` and ``num_pages & 63``) is -EINVAL.  The slot has 4096 + 37 pages."""
    vm = _manual_vm()
    if ok:
        _clear(vm, first, num)
    else:
        with pytest.raises(KvmError) as err:
            _clear(vm, first, num)
        assert (err.value.errno_name, err.value.field) == ("EINVAL", "num_pages")


@pytest.mark.parametrize("first, ok", [(4032, True), (4096, True), (4160, False)])
def test_clear_first_page_at_the_slot_end(first, ok):
    """Same function: ``log->first_page > memslot->npages`` is -EINVAL, so a 4096-page slot
    takes first_page 4096 with num_pages 0 (nothing to clear) but not 4160."""
    vm = _manual_vm(4096)
    num = 4096 - first if first <= 4096 else 0
    if ok:
        _clear(vm, first, num)
    else:
        with pytest.raises(KvmError) as err:
            _clear(vm, first, num)
        assert err.value.errno_name == "EINVAL"


# -- memslots: IPA limit, overlap and adjacency ------------------------------------------------


@pytest.mark.parametrize("ipa_bits", [32, 40, 48])
@pytest.mark.parametrize("step, errno", [(-1, None), (0, None), (1, "EFAULT")])
def test_memslot_must_end_inside_the_ipa_space(ipa_bits, step, errno):
    """kvm_arch_prepare_memory_region (arch/arm64/kvm/mmu.c, 6.12): ``if ((new->base_gfn +
    new->npages) > (kvm_phys_size(&kvm->arch.mmu) >> PAGE_SHIFT)) return -EFAULT``: a slot
    may end exactly at 2^ipa_bits, not one page beyond."""
    ms = Memslots(12, ipa_bits)
    size = 2 * MiB
    base = (1 << ipa_bits) - size + step * 4096
    if errno is None:
        assert ms.set_user_memory_region(0, base, size).new.end == (1 << ipa_bits) + step * 4096
    else:
        with pytest.raises(KvmError) as err:
            ms.set_user_memory_region(0, base, size)
        assert (err.value.errno_name, err.value.field) == (errno, "guest_phys_addr")


@pytest.mark.parametrize(
    "end, errno, field",
    [
        ((1 << 64) - 4096, "EFAULT", "guest_phys_addr"),  # no wrap: beyond the IPA space
        (1 << 64, "EINVAL", "memory_size"),  # gpa + size is 0 in 64 bits
        ((1 << 64) + 4096, "EINVAL", "memory_size"),
    ],
)
def test_memslot_end_must_not_wrap_64_bits(end, errno, field):
    """kvm_set_memory_region (virt/kvm/kvm_main.c, v6.17): ``if (mem->guest_phys_addr +
    mem->memory_size < mem->guest_phys_addr) return -EINVAL`` in u64 arithmetic: a slot
    ending exactly at 2^64 wraps to 0; one page lower it is the IPA limit that refuses it."""
    ms = Memslots(12, 48)
    with pytest.raises(KvmError) as err:
        ms.set_user_memory_region(0, end - 8192, 8192)
    assert (err.value.errno_name, err.value.field) == (errno, field)


@pytest.mark.parametrize(
    "npages, ok", [((1 << 31) - 2, True), ((1 << 31) - 1, True), (1 << 31, False)]
)
def test_memslot_pages_at_most_kvm_mem_max_nr_pages(npages, ok):
    """kvm_set_memory_region: ``if (mem->memory_size >> PAGE_SHIFT > KVM_MEM_MAX_NR_PAGES)
    return -EINVAL``, KVM_MEM_MAX_NR_PAGES = (1UL << 31) - 1 (include/linux/kvm_host.h)."""
    ms = Memslots(12, 48)
    if ok:
        assert ms.set_user_memory_region(0, 0, npages * 4096).new.npages == npages
        return
    with pytest.raises(KvmError) as err:
        ms.set_user_memory_region(0, 0, npages * 4096)
    assert (err.value.errno_name, err.value.field) == ("EINVAL", "memory_size")


@pytest.mark.parametrize(
    "gap_pages, errno", [(-1, "EEXIST"), (0, None), (1, None)], ids=["overlap", "touch", "gap"]
)
@pytest.mark.parametrize("side", ["above", "below"])
def test_memslot_overlap_and_adjacency(gap_pages, errno, side):
    """__kvm_set_memory_region (virt/kvm/kvm_main.c, 6.12) refuses a CREATE or MOVE whose
    [base, base + npages) intersects another slot's with -EEXIST; ranges are half-open, so a
    slot starting where another ends (or ending where it starts) is accepted."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 4 * MiB)
    size = 1 * MiB
    if side == "above":
        base = BASE + 4 * MiB + gap_pages * 4096
    else:
        base = BASE - size - gap_pages * 4096
    if errno is None:
        ms.set_user_memory_region(1, base, size)
        assert len(ms) == 2
    else:
        with pytest.raises(KvmError) as err:
            ms.set_user_memory_region(1, base, size)
        assert err.value.errno_name == errno and len(ms) == 1


@pytest.mark.parametrize(
    "step, errno", [(-1, "EEXIST"), (0, None), (1, None)], ids=["overlap", "touch", "gap"]
)
def test_memslot_move_next_to_another(step, errno):
    """A MOVE is checked like a CREATE (same overlap rule), against the other slots only."""
    ms = Memslots(12, 40)
    ms.set_user_memory_region(0, BASE, 4 * MiB)
    ms.set_user_memory_region(1, BASE + 64 * MiB, 4 * MiB)
    target = BASE + 4 * MiB + step * 4096
    if errno is None:
        ms.set_user_memory_region(1, target, 4 * MiB)
        assert ms.get(1).base == target
    else:
        with pytest.raises(KvmError) as err:
            ms.set_user_memory_region(1, target, 4 * MiB)
        assert err.value.errno_name == errno and ms.get(1).base == BASE + 64 * MiB


@pytest.mark.parametrize(
    "field, args",
    [
        ("memory_size", (0, BASE, 4096 * 3 + 1)),
        ("guest_phys_addr", (0, BASE + 2048, 4096)),
        ("slot", (32767, BASE, 4096)),
        ("slot", (-1, BASE, 4096)),
        ("flags", (0, BASE, 4096, 4)),
    ],
)
def test_memslot_argument_rules_are_einval(field, args):
    """check_memory_region_flags / __kvm_set_memory_region: size and address page-aligned,
    slot id below KVM_USER_MEM_SLOTS (32767), only LOG_DIRTY_PAGES|READONLY flags: -EINVAL."""
    ms = Memslots(12, 40)
    with pytest.raises(KvmError) as err:
        ms.set_user_memory_region(*args)
    assert (err.value.errno_name, err.value.field) == ("EINVAL", field)
    assert len(ms) == 0


@pytest.mark.parametrize("slot", [0, 32766])
def test_memslot_ids_at_the_ends_of_the_range(slot):
    ms = Memslots(12, 40)
    ms.set_user_memory_region(slot, BASE, 4096)
    assert ms.get(slot).npages == 1


# -- stage-2 geometry: supported IPA sizes -----------------------------------------------------


@pytest.mark.parametrize("ipa_bits, ok", [(31, False), (32, True), (48, True), (49, False)])
def test_ipa_size_range(ipa_bits, ok):
    """kvm_arm_setup_stage2 / kvm_get_pa_bits: the modelled IPA sizes are 32..48 bits
    (KVM_PHYS_SHIFT_MIN is 32; 52-bit LPA2 is not modelled)."""
    if ok:
        assert Geometry(4096, ipa_bits).ipa_bits == ipa_bits
    else:
        with pytest.raises(ConfigError) as err:
            Geometry(4096, ipa_bits)
        assert err.value.field == "ipa_bits"


# -- auto-converge trigger ---------------------------------------------------------------------


class _StandIn(SimpleNamespace):
    """A stand-in simulation (a subclass: SimpleNamespace itself cannot be weakly referenced)."""


def _auto_converge_migration() -> Migration:
    sim = _StandIn(vm=SimpleNamespace(page_size=4096), message=lambda *_: None)
    mig = Migration(sim, MigrationCfg(auto_converge=True), clear_chunk_pages=1 << 18)
    mig.stand_in = sim  # (Migration holds its simulation weakly)
    return mig


def _period(mig: Migration, k: int, new_pages: int) -> None:
    """One sync period of a little more than a second (QEMU checks ``end_time >
    time_last_bitmap_sync + 1000``) in which 200 pages were sent and ``new_pages`` newly
    dirtied (num_dirty_pages_period)."""
    mig.total_bytes += 200 * 4096
    mig._rates(k * (NS + 1), new_pages, new_pages)


@pytest.mark.parametrize("dirty_pages, high", [(99, False), (100, False), (101, True)])
def test_auto_converge_trigger(dirty_pages, high):
    """QEMU migration/ram.c migration_trigger_throttle (9.x): a period is "high" when
    bytes_dirty_period > bytes_xfer_period × throttle-trigger-threshold (50) / 100, strictly;
    the throttle goes up on the second high period.  200 pages sent → threshold 100 pages."""
    mig = _auto_converge_migration()
    for period in (1, 2):
        _period(mig, period, dirty_pages)
    assert mig.throttle_pct == (20 if high else 0)


def test_auto_converge_needs_two_high_periods_and_then_steps_by_ten_to_99():
    """cpu-throttle-initial 20, cpu-throttle-increment 10, max-cpu-throttle 99: the throttle
    runs 20, 30, ..., 90, 99, 99, one step every second high period."""
    mig = _auto_converge_migration()
    seen = []
    for period in range(1, 25):
        _period(mig, period, 101)
        seen.append(mig.throttle_pct)
    assert seen[0] == 0 and seen[1] == 20
    assert seen[1::2] == [20, 30, 40, 50, 60, 70, 80, 90, 99, 99, 99, 99]
    assert seen[2::2] == seen[1:-1:2]  # nothing changes on the odd periods

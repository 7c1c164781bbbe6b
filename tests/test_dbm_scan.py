"""DBM harvest (dirtylog.scan_dbm) against a plain per-entry scan of the same leaves.

The fast scan tests whole last-level tables in place and gathers only partial tables; the
reference looks every page of the slot up with the walker and decides one descriptor at a
time.  Both must report the same pages, leave the same descriptors and count the same reads,
writes and flushes, whichever leaves are dirty, clean-writable, plain writable (W without
DBM) or unmapped.
"""

from __future__ import annotations

import numpy as np
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

"""Two engine rules the mutation probe found unpinned, each checked on a hand-built case.

* The per-entry walker re-reads the table row after a visit: a visitor that splits a block
  may grow the table pool (``PageTable.reserve`` allocates a new array), and the walk must
  then descend into the new child table, as ``kvm_pgtable_walk`` re-reads the entry after a
  LEAF visit (``__kvm_pgtable_visit``: ``ctx.old = READ_ONCE(*ptep)`` after the callback).
* A write to a write-protected block faults once per block, whatever order the writes to
  different blocks come in: ``user_mem_abort`` relaxes the whole block leaf
  (``kvm_pgtable_stage2_relax_perms``), so a later write to the same block does not fault.
"""

from __future__ import annotations

import numpy as np

from engine.kvm.vm import VM
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import Visit, walk

G = Geometry(4096, 40)
BASE = 0x4000_0000
M2 = 2 << 20


def test_walk_descends_into_a_table_its_visitor_split_even_when_the_pool_grew():
    """A pool at full capacity holds one 2 MiB block; a LEAF visitor splits it (eager,
    populated), which needs one more table page and so reallocates the pool.  The walker
    must re-read the entry from the new pool, see the table descriptor and visit all 512
    page leaves of the new table; reading the stale row (the block) would visit none."""
    pgt = PageTable(G, capacity=G.entry_tables + 1)
    pgt.map_leaves(np.array([0], np.int64), 2)  # one level-2 table: the pool is now full
    assert pgt._high == pgt.pool.shape[0]  # precondition: the split must grow the pool
    before = pgt.pool
    pages = []

    def visitor(ctx):
        if ctx.level == 2:
            pgt.split_blocks(np.array([ctx.pos], np.int64), 2, populate=True)
            return None
        pages.append(ctx.addr)
        return None

    walk(pgt, 0, M2, visitor, Visit.LEAF)
    assert pgt.pool is not before  # the pool was reallocated during the walk
    assert pages == [i * G.granule for i in range(G.entries_per_table)]


def test_one_permission_fault_per_read_only_block_with_interleaved_writes():
    """Two read-only 2 MiB blocks A and B; one batch writes A page 0, then B page 0, then
    A page 1.  The first write to each block relaxes the whole block, so A page 1 finds it
    writable: 2 permission faults (one per block), not 3 (one per run of same-block writes
    in time order), and both blocks end writable."""
    vm = VM(G, nr_vcpus=1)
    vm.set_memslot(0, BASE, 2 * M2, 0, M2, populate=True)
    vm.pgt.map_range(BASE, 2 * M2, M2, writable=False)  # both blocks read-only
    level, _, _ = vm.pgt.lookup(np.array([BASE, BASE + M2], np.int64))
    assert level.tolist() == [2, 2]
    ipa = np.array([BASE, BASE + M2, BASE + G.granule], np.int64)
    res = vm.access(ipa >> 12, np.zeros(3, np.int64), np.ones(3, bool))
    assert vm.stats["permission_faults"] == 2
    assert res.faults.tolist() == [2]
    _, _, desc = vm.pgt.lookup(np.array([BASE, BASE + M2], np.int64))
    assert D.is_writable(desc).all()


def test_a_ring_reset_returns_only_the_entries_user_space_harvested():
    """KVM_RESET_DIRTY_RINGS re-protects only the entries user space has harvested (flagged
    RESET): virt/kvm/dirty_ring.c kvm_dirty_ring_reset walks from reset_index and stops at the
    first entry not yet harvested.  Entries pushed after the harvest stay DIRTY, keep their room
    and are returned by the next harvest, not by this reset."""
    from engine.kvm.dirtyring import DirtyRing

    ring = DirtyRing(256)
    ring.push(np.array([1, 1, 2], np.uint32), np.array([10, 11, 5], np.uint64))
    assert [a.tolist() for a in ring.collect()] == [[1, 1, 2], [10, 11, 5]]
    ring.push(np.array([3, 3], np.uint32), np.array([7, 8], np.uint64))  # not harvested
    slot, offset = ring.reset_entries()
    assert (slot.tolist(), offset.tolist()) == ([1, 1, 2], [10, 11, 5])
    assert (ring.reset_index, ring.fetch_index, ring.dirty_index, ring.used) == (3, 3, 5, 2)
    assert [a.tolist() for a in ring.collect()] == [[3, 3], [7, 8]]

"""Dirty rings: size rules, soft limit, in-order collection, KVM's reset merging."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from engine.kvm.dirtyring import DirtyRing, merge_masks


def test_soft_limit_and_reset():
    ring = DirtyRing(256)
    assert ring.soft_limit == 192
    ring.push(np.zeros(191, np.uint32), np.arange(191, dtype=np.uint64))
    assert not ring.soft_full and ring.room() == 1
    ring.push(np.zeros(1, np.uint32), np.array([500], np.uint64))
    assert ring.soft_full and ring.room() == 0
    slots, offs = ring.collect()
    assert offs.tolist() == list(range(191)) + [500]
    assert ring.soft_full  # collected but not reset: still counts
    ring.reset_entries()
    assert ring.used == 0 and not ring.soft_full
    # wrap-around keeps order
    ring.push(np.ones(100, np.uint32), np.arange(100, 200, dtype=np.uint64))
    assert ring.collect()[1].tolist() == list(range(100, 200))


def _ref_merge(slot, offset):
    """kvm_dirty_ring_reset's loop, transcribed with u64 arithmetic."""
    out = []
    cur_slot = cur_off = mask = 0
    for s, off in zip(slot, offset, strict=True):
        if mask:
            if s == cur_slot:
                delta = off - cur_off
                if 0 <= delta < 64:
                    mask |= 1 << delta
                    continue
                if -64 < delta < 0 and ((mask << -delta) & (2**64 - 1)) >> -delta == mask:
                    cur_off = off
                    mask = ((mask << -delta) & (2**64 - 1)) | 1
                    continue
            out.append((cur_slot, cur_off, mask))
        cur_slot, cur_off, mask = s, off, 1
    if mask:
        out.append((cur_slot, cur_off, mask))
    return out


@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 300) | st.integers(0, 2**40)), max_size=80)
)
def test_merge_matches_kvm(entries):
    """Near entries (merged by the loop) and far ones (one-bit masks at once), mixed."""
    slot = [s for s, _ in entries]
    off = [o for _, o in entries]
    slots, offs, masks = merge_masks(np.array(slot, np.uint32), np.array(off, np.uint64))
    got = list(zip(slots.tolist(), offs.tolist(), masks.tolist(), strict=True))
    assert got == [tuple(e) for e in _ref_merge(slot, off)]
    # every entry's page is covered by exactly the masks of its slot
    covered = {(s, o + b) for s, o, m in got for b in range(64) if m >> b & 1}
    assert covered == set(entries)


def test_backwards_merge():
    got = merge_masks(np.array([0, 0, 0], np.uint32), np.array([10, 12, 8], np.uint64))
    assert [c.tolist() for c in got] == [[0], [8], [0b10101]]

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


@given(
    st.lists(
        st.lists(st.tuples(st.integers(0, 1), st.integers(0, 200) | st.integers(0, 2**40))),
        max_size=5,
    )
)
def test_merging_rings_in_one_call_is_each_ring_merged_alone(rings):
    """KVM_RESET_DIRTY_RINGS runs the loop over one ring at a time: entries of consecutive
    rings (empty ones too) merge in one call exactly as each ring alone, one after another;
    the loop starts afresh at each ring even where the entries would have merged."""
    slot = [s for r in rings for s, _ in r]
    off = [o for r in rings for _, o in r]
    sizes = np.array([len(r) for r in rings], dtype=np.int64)
    got = merge_masks(np.array(slot, np.uint32), np.array(off, np.uint64), np.cumsum(sizes) - sizes)
    got = list(zip(*(c.tolist() for c in got), strict=True))
    each = [_ref_merge([s for s, _ in r], [o for _, o in r]) for r in rings]
    assert got == [tuple(e) for merged in each for e in merged]


def test_a_ring_boundary_starts_a_new_mask():
    """Pages 8 and 9 of slot 0, one per ring: two masks (one call over both rings), one
    without the ring boundary."""
    s, o = np.zeros(2, np.uint32), np.array([8, 9], np.uint64)
    assert [c.tolist() for c in merge_masks(s, o, np.array([0, 1]))] == [[0, 0], [8, 9], [1, 1]]
    assert [c.tolist() for c in merge_masks(s, o)] == [[0], [8], [0b11]]


def test_backwards_merge():
    got = merge_masks(np.array([0, 0, 0], np.uint32), np.array([10, 12, 8], np.uint64))
    assert [c.tolist() for c in got] == [[0], [8], [0b10101]]


def test_the_ring_holds_exactly_its_size_and_no_more():
    """The hard limit (a KVM bug if reached: the soft limit stops the vCPU first): a ring of
    256 takes 256 entries without an overflow, the 257th is refused with the reason."""
    import pytest

    ring = DirtyRing(256)
    ring.push(np.zeros(256, np.uint32), np.arange(256, dtype=np.uint64))
    assert ring.used == 256
    reason = "^dirty ring overflow: the soft limit was not honoured$"
    with pytest.raises(RuntimeError, match=reason):
        ring.push(np.zeros(1, np.uint32), np.array([9], np.uint64))
    ring.collect()
    ring.reset_entries()
    ring.push(np.zeros(255, np.uint32), np.arange(255, dtype=np.uint64))  # used 255
    with pytest.raises(RuntimeError):
        ring.push(np.zeros(2, np.uint32), np.arange(2, dtype=np.uint64))  # 255 + 2 > 256


def test_a_reset_returns_only_the_entries_harvested_since_the_last_reset():
    ring = DirtyRing(256)
    ring.push(np.zeros(3, np.uint32), np.array([1, 2, 3], np.uint64))
    ring.collect()
    assert ring.reset_entries()[1].tolist() == [1, 2, 3]
    ring.push(np.ones(2, np.uint32), np.array([7, 8], np.uint64))
    ring.collect()
    slots, offs = ring.reset_entries()
    assert slots.tolist() == [1, 1] and offs.tolist() == [7, 8]


def test_the_default_page_size_is_4_kib():
    """check_ring_size without a page size checks against 4 KiB pages: 256 entries (one
    page of 16-byte entries) is the least, 128 is refused."""
    import pytest

    from engine.kvm.dirtyring import check_ring_size
    from engine.util.errors import KvmError

    assert check_ring_size(256) == 256
    with pytest.raises(KvmError) as e:
        check_ring_size(128)
    assert e.value.errno_name == "EINVAL" and "4096-byte page" in e.value.rule

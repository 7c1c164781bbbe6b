"""KVM_SET_USER_MEMORY_REGION's rules, each with its errno, and the vectorised lookup."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.kvm.memslots import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    MemslotChange,
    Memslots,
)
from engine.util.errors import KvmError

GiB = 1 << 30


def slots() -> Memslots:
    m = Memslots(12, 40)
    m.set_user_memory_region(0, GiB, GiB, KVM_MEM_LOG_DIRTY_PAGES)
    return m


@pytest.mark.parametrize(
    "args, errno, field",
    [
        ((1, 0x1000_0800, 4096), "EINVAL", "guest_phys_addr"),  # unaligned base
        ((1, 0x1000_0000, 4097), "EINVAL", "memory_size"),  # unaligned size
        ((32767, 0, 4096), "EINVAL", "slot"),  # id too large
        ((-1, 0, 4096), "EINVAL", "slot"),
        ((1, 0, 4096, 1 << 2), "EINVAL", "flags"),  # unknown flag
        ((1, (1 << 64) - 4096, 8192), "EINVAL", "memory_size"),  # wraps
        ((1, 0, ((1 << 31) - 1 + 1) * 4096), "EINVAL", "memory_size"),  # > KVM_MEM_MAX_NR_PAGES
        ((1, GiB + 4096, 4096), "EEXIST", "guest_phys_addr"),  # overlaps slot 0
        ((1, (1 << 40) - 4096, 8192), "EFAULT", "guest_phys_addr"),  # beyond the IPA space
        ((5, 0, 0), "EINVAL", "slot"),  # delete a slot that does not exist
        ((0, GiB, 2 * GiB), "EINVAL", "memory_size"),  # resize an existing slot
        ((0, GiB, GiB, KVM_MEM_READONLY), "EINVAL", "flags"),  # toggle READONLY
    ],
)
def test_each_rule_and_its_errno(args, errno, field):
    m = slots()
    before = m.sorted()
    with pytest.raises(KvmError) as e:
        m.set_user_memory_region(*args)
    assert e.value.errno_name == errno and e.value.field == field
    assert str(e.value).startswith(f"{errno}: {field}: ")
    assert m.sorted() == before  # a refused call changes nothing


def test_backing_must_be_a_leaf_size():
    with pytest.raises(KvmError) as e:
        slots().set_user_memory_region(1, 4 * GiB, GiB, 0, backing=3 << 20)
    assert e.value.errno_name == "EINVAL" and e.value.field == "backing"
    m16 = Memslots(14, 40)
    m16.set_user_memory_region(1, 4 * GiB, GiB, 0, backing=32 << 20)
    with pytest.raises(KvmError) as e:  # 2 MiB is a 4K granule's level-2 block, not 16K's
        m16.set_user_memory_region(2, 8 * GiB, GiB, 0, backing=2 << 20)
    assert e.value.errno_name == "EINVAL" and e.value.field == "backing"
    assert 2 not in m16 and len(m16) == 1  # refused: nothing created


def test_create_move_flags_delete_and_no_op():
    m = slots()
    assert m.set_user_memory_region(1, 4 * GiB, GiB).change == MemslotChange.CREATE
    assert m.set_user_memory_region(1, 8 * GiB, GiB).change == MemslotChange.MOVE
    assert m.get(1).base == 8 * GiB
    up = m.set_user_memory_region(1, 8 * GiB, GiB, KVM_MEM_LOG_DIRTY_PAGES)
    assert up.change == MemslotChange.FLAGS_ONLY and m.get(1).log_dirty
    assert (
        m.set_user_memory_region(1, 8 * GiB, GiB, KVM_MEM_LOG_DIRTY_PAGES).change
        == MemslotChange.NONE
    )
    with pytest.raises(KvmError) as e:  # moving onto slot 0
        m.set_user_memory_region(1, GiB, GiB, KVM_MEM_LOG_DIRTY_PAGES)
    assert e.value.errno_name == "EEXIST"
    assert m.set_user_memory_region(1, 0, 0).change == MemslotChange.DELETE
    assert 1 not in m and len(m) == 1


@given(
    st.lists(st.tuples(st.integers(0, 63), st.integers(1, 4)), max_size=8),
    st.lists(st.integers(0, 70 * 256), max_size=200),
)
def test_find_matches_a_plain_loop(layout, gfns):
    m = Memslots(12, 40)
    accepted: list[tuple[int, int]] = []  # [start, end) in MiB, by hand
    for i, (chunk, n) in enumerate(layout):
        overlaps = any(chunk < end and start < chunk + n for start, end in accepted)
        if overlaps:  # half-open ranges: touching is fine, one common MiB is EEXIST
            with pytest.raises(KvmError) as e:
                m.set_user_memory_region(i, chunk * (1 << 20), n * (1 << 20))
            assert e.value.errno_name == "EEXIST"
        else:
            m.set_user_memory_region(i, chunk * (1 << 20), n * (1 << 20))
            accepted.append((chunk, chunk + n))
    assert len(m) == len(accepted)
    g = np.array(gfns, dtype=np.int64)
    got = m.find(g)
    ordered = m.sorted()
    for gfn, idx in zip(g.tolist(), got.tolist(), strict=True):
        expected = next((i for i, s in enumerate(ordered) if s.base_gfn <= gfn < s.end_gfn), -1)
        assert idx == expected

"""The dirty ring's admission of a batch (``VM._ring_admission``) against a plain per-access
reference: which accesses a vCPU makes before its ring reaches the soft limit, which access
fills it (its store retried after the reset) and what each ring holds, when vCPUs share pages
(a page first written after a vCPU's cut is pushed by the next vCPU that writes it).

The rule (virt/kvm/dirty_ring.c v6.17, kvm_dirty_ring_push / kvm_dirty_ring_check_request):
a write by a running vCPU to a write-protected page of a logging slot faults, makes the page
writable and pushes one entry to that vCPU's ring; the push that brings the ring to its soft
limit (size − 64) sends the vCPU out with KVM_EXIT_DIRTY_RING_FULL before its store, so
that access and every later one of that vCPU wait for the reset.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2.geometry import Geometry

G = Geometry(4096, 40)
BASE = 0x40000000
BGFN = BASE >> 12
RING = 256  # soft limit 192


def _vm(vcpus: int, used: list[int]) -> VM:
    """One logging 4 MiB slot, every page mapped and write-protected; vCPU v's ring already
    holds ``used[v]`` entries (writes to pages 256 + ..., which the batches never touch)."""
    vm = VM(G, Tracking("ring", "range", RING), nr_vcpus=vcpus)
    vm.set_memslot(0, BASE, 4 << 20, 0, 4096, populate=True)
    vm.set_memslot(0, BASE, 4 << 20, slot_flags(log_dirty=True), 4096)
    at = 256
    for v, n in enumerate(used):
        pages = BGFN + at + np.arange(n, dtype=np.int64)
        vm.access(pages, np.full(n, v, np.int64), np.ones(n, bool))
        at += n
    for r in vm.rings:
        r.collect()  # harvested, not reset: still counted against the soft limit
    return vm


def _reference(seq, room):
    """One access at a time: (held-back indices, vCPUs that exited, pages each pushed)."""
    writable: set[int] = set()
    pushes: dict[int, list[int]] = {v: [] for v in range(len(room))}
    out: set[int] = set()
    held = []
    for i, (v, page, write) in enumerate(seq):
        if v in out:
            held.append(i)
            continue
        if write and page not in writable:
            writable.add(page)
            pushes[v].append(page)
            if len(pushes[v]) == room[v]:
                out.add(v)
                held.append(i)  # the filling store waits for the reset
    return held, out, pushes


def _check(seq, used):
    vm = _vm(len(used), used)
    room = [r.room() for r in vm.rings]
    assert room == [RING - 64 - n for n in used]
    gfn = np.array([BGFN + p for _, p, _ in seq], np.int64)
    vcpu = np.array([v for v, _, _ in seq], np.int64)
    write = np.array([w for _, _, w in seq], bool)
    res = vm.access(gfn, vcpu, write)
    held, out, pushes = _reference(seq, room)
    got = [] if res.deferred is None else res.deferred.tolist()
    assert got == held
    assert res.ring_full == out
    for v, ring in enumerate(vm.rings):
        _, offsets = ring.collect()
        assert offsets.tolist() == pushes[v]


def test_a_page_cut_from_a_full_vcpu_is_pushed_by_the_next_writer():
    """Both rings have room for 2.  vCPU 0 pushes 1 and 2 (full, its store of 2 retried), so
    its later write of 3 waits; vCPU 1's write of 3 is then that page's first write: vCPU 1
    pushes it, its write of 1 (writable by then) pushes nothing, and its push of 4 fills its
    ring too (without the cut, vCPU 1 would have pushed 4 alone and run on)."""
    seq = [(0, 1, True), (0, 2, True), (0, 3, True), (1, 3, True), (1, 1, True), (1, 4, True)]
    _check(seq, [190, 190])


def test_vcpus_on_their_own_pages_fill_at_their_own_push():
    seq = [(v, 10 * v + k, True) for k in range(6) for v in range(3)]
    _check(seq, [188, 189, 150])  # rooms 4, 3, 42


@settings(max_examples=20, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 23), st.booleans()), min_size=1, max_size=60
    ),
    st.lists(st.integers(180, 191), min_size=3, max_size=3),
)
def test_admission_matches_one_access_at_a_time(seq, used):
    _check(seq, used)

"""The host's real KVM in every tracking mode: every written page reported and nothing else,
the errnos of GET / CLEAR / the ring, the ring's soft limit and its retry.

Expected values come from the trace itself (the pages written) and from the kernel's rules
(virt/kvm/kvm_main.c kvm_get_dirty_log_protect / kvm_clear_dirty_log_protect,
virt/kvm/dirty_ring.c), never from the code under test."""

import errno

import numpy as np
import pytest
from kvm_available import needs_kvm

from engine.host import uapi as U
from engine.host.errors import HostKvmError
from engine.host.machine import PAGE, Machine

pytestmark = needs_kvm()
LOG = U.KVM_MEM_LOG_DIRTY_PAGES
GPA = 1 << 30
NPAGES = 2048


def _pages(words: np.ndarray) -> set[int]:
    bits = np.unpackbits(words.view(np.uint8), bitorder="little")
    return set(np.flatnonzero(bits).tolist())


def _batches(seed: int, n: int = 6, size: int = 300) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    hot = rng.choice(NPAGES, 32, replace=False)
    out = []
    for _ in range(n):
        pages = np.where(
            rng.random(size) < 0.3, rng.choice(hot, size), rng.integers(0, NPAGES, size)
        )
        out.append(pages)
    return out


def _write(m: Machine, pages: np.ndarray) -> None:
    m.run(0, GPA + PAGE * pages.astype(np.uint64))


def _populate(m: Machine) -> None:
    _write(m, np.arange(NPAGES))


@pytest.mark.parametrize("mode", ["bitmap", "manual", "manual-initially-set", "ring"])
def test_every_written_page_is_reported_and_nothing_else(mode):
    manual = mode.startswith("manual")
    ring = 4096 if mode == "ring" else 0
    with Machine(
        manual=manual, initially_set=mode == "manual-initially-set", ring_entries=ring
    ) as m:
        m.add_slot(1, GPA, NPAGES * PAGE)
        _populate(m)
        m.set_flags(1, LOG)
        first = True
        for pages in _batches(seed=len(mode)):
            _write(m, pages)
            if ring:
                slots, offs = m.collect_rings()
                assert set(slots.tolist()) <= {1}
                got = set(offs.tolist())
                m.reset_rings()
            else:
                words = m.get_dirty_log(1)
                got = _pages(words)
                if manual and got:
                    m.clear_dirty_log(1, 0, NPAGES, words)
            want = (
                set(range(NPAGES))
                if (first and mode == "manual-initially-set")
                else set(pages.tolist())
            )
            assert got == want
            first = False
        content = m.content(1)
    written = np.bincount(np.concatenate(_batches(seed=len(mode))), minlength=NPAGES)
    assert np.array_equal(content, written + 1)  # + the populating write


def test_reads_do_not_dirty():
    with Machine() as m:
        m.add_slot(1, GPA, NPAGES * PAGE, LOG)
        m.get_dirty_log(1)
        m.run(0, (GPA + PAGE * np.arange(0, NPAGES, 3, dtype=np.uint64)) | np.uint64(1))
        assert _pages(m.get_dirty_log(1)) == set()


def test_write_faults_are_real_and_counted():
    """One pf_fixed per first write to a write-protected page; none for a second write."""
    with Machine() as m:
        m.add_slot(1, GPA, NPAGES * PAGE)
        _populate(m)
        m.set_flags(1, LOG)
        pages = np.arange(0, NPAGES, 5)
        s0 = m.vcpu_stats()
        _write(m, np.repeat(pages, 2))
        s1 = m.vcpu_stats()
        assert s1["pf_fixed"] - s0["pf_fixed"] == pages.size
        assert s1["insn_emulation"] - s0["insn_emulation"] <= 2  # runs natively


def _errno_of(fn) -> int:
    with pytest.raises(HostKvmError) as info:
        fn()
    return info.value.errno


def test_clear_errnos_at_and_around_the_boundaries():
    npages = 16384 + 40  # a slot whose last word is partial
    with Machine(manual=True) as m:
        m.add_slot(1, GPA, npages * PAGE, LOG)
        ones = np.full(npages // 64 + 1, ~np.uint64(0), dtype=np.uint64)
        assert _errno_of(lambda: m.clear_dirty_log(1, 32, 64, ones)) == errno.EINVAL
        m.clear_dirty_log(1, 64, 64, ones)  # aligned: fine
        assert _errno_of(lambda: m.clear_dirty_log(1, 0, 100, ones)) == errno.EINVAL
        m.clear_dirty_log(1, 16384, 40, ones)  # not a multiple of 64 but reaches the end
        assert _errno_of(lambda: m.clear_dirty_log(1, 16384, 41, ones)) == errno.EINVAL
        assert _errno_of(lambda: m.clear_dirty_log(1, 16448, 64, ones)) == errno.EINVAL


def test_clear_without_manual_protect_is_accepted():
    """The real kernel accepts KVM_CLEAR_DIRTY_LOG without MANUAL_PROTECT enabled."""
    with Machine() as m:
        m.add_slot(1, GPA, NPAGES * PAGE, LOG)
        m.clear_dirty_log(1, 0, 64, np.ones(1, dtype=np.uint64))


def test_get_errnos():
    with Machine() as m:
        m.add_slot(1, GPA, NPAGES * PAGE, 0)
        assert _errno_of(lambda: m.get_dirty_log(1)) == errno.ENOENT
    with Machine(ring_entries=4096) as m:
        m.add_slot(1, GPA, NPAGES * PAGE, LOG)
        assert _errno_of(lambda: m.get_dirty_log(1)) == errno.ENXIO


@pytest.mark.parametrize(
    "entries, err",
    [
        (3000 // 16, errno.EINVAL),
        (128, errno.EINVAL),
        (256, None),
        (65536, None),
        (131072, errno.E2BIG),
    ],
)
def test_ring_sizes(entries, err):
    """Bytes: a power of two, at least a page (4096 = 256 entries), at most the cap (1 MiB)."""
    if err is None:
        Machine(ring_entries=entries).close()
    else:
        assert _errno_of(lambda: Machine(ring_entries=entries)) == err


def test_ring_after_a_vcpu_is_refused():
    with Machine() as m:
        assert _errno_of(lambda: m.enable_cap(U.KVM_CAP_DIRTY_LOG_RING, 4096)) == errno.EINVAL


def test_ring_soft_full_at_size_minus_64_and_the_retry():
    """256 entries: each KVM_EXIT_DIRTY_RING_FULL comes at 192 (= 256 - 64) entries; the
    faulting write is retried after the reset and pushes its page again (+1 per exit)."""
    n = 1000
    with Machine(ring_entries=256) as m:
        m.add_slot(1, GPA, NPAGES * PAGE)
        _populate(m)
        m.set_flags(1, LOG)
        s0 = m.vcpu_stats()
        res = m.run(0, GPA + PAGE * np.arange(n, dtype=np.uint64))
        s1 = m.vcpu_stats()
        sizes = [p[1].size for p in m.ring_pending]
        slots, offs = m.collect_rings()
    exits = res.ring_full_exits
    assert exits == (n + exits) // 192 == 5
    assert sizes == [192] * exits
    assert set(offs.tolist()) == set(range(n))
    assert offs.size == n + exits
    assert s1["pf_fixed"] - s0["pf_fixed"] == n + exits
    # each retried page is the last one before the reset, pushed again first after it
    starts = np.cumsum([0] + sizes)[1:]
    assert all(offs[i] == offs[i - 1] for i in starts)

"""The real VM is always torn down: no fd, mapping or thread left behind, also when its
construction fails half-way or a run raises.

Only what the machine made is counted (its KVM fds, the regions it mapped and whether each was
unmapped), so that other threads of the test process (pytest-xdist's, Qt's) opening files or
mapping memory meanwhile cannot change the answer: a region the machine released may be mapped
again at the same address by someone else (glibc's malloc, a thread's stack), so its absence is
not read from /proc/self/maps but from its successful munmap (``Mapping.close`` raises
otherwise)."""

import os
import threading
from collections import Counter

import numpy as np
import pytest
from kvm_available import needs_kvm

from engine.host import memory
from engine.host import uapi as U
from engine.host.errors import HostKvmError
from engine.host.machine import PAGE, Machine

pytestmark = needs_kvm()


def _kvm_fds() -> list[str]:
    """The process's fds on /dev/kvm or KVM's anon inodes (kvm-vm, kvm-vcpu:N)."""
    links = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            links.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the fd listdir itself used, closed meanwhile
            continue
    return [link for link in links if "kvm" in link]


class _Regions:
    """The (start, end) of every region the machine's ``Mapping``s mapped, and of those they
    unmapped, in order."""

    def __init__(self) -> None:
        self.made: list[tuple[int, int]] = []
        self.unmapped: list[tuple[int, int]] = []

    def __len__(self) -> int:
        return len(self.made)


def _mapped(regions: _Regions) -> list[str]:
    """The regions mapped and not (successfully) unmapped, and the lines of /proc/self/maps
    holding a vCPU fd's pages (anon_inode:kvm-vcpu: the run structure and the dirty ring)."""
    made, unmapped = Counter(regions.made), Counter(regions.unmapped)
    assert not unmapped - made  # nothing unmapped that it did not map, or twice
    left = sorted((made - unmapped).elements())  # (an address may be reused: counted)
    with open("/proc/self/maps") as fh:
        vcpu = [line for line in fh.read().splitlines() if "kvm" in line]
    return [f"{a:x}-{b:x}" for a, b in left] + vcpu


@pytest.fixture
def mappings(monkeypatch) -> _Regions:
    """Every region the machine's ``Mapping``s map and unmap, recorded as it happens."""
    regions = _Regions()
    made, closed = memory.Mapping.__init__, memory.Mapping.close

    def recording(self, size, *a, **kw):
        made(self, size, *a, **kw)
        regions.made.append((self.addr, self.addr + size))

    def unmapping(self):
        addr = self.addr
        closed(self)  # raises if munmap fails
        if addr is not None:
            regions.unmapped.append((addr, addr + self.size))

    monkeypatch.setattr(memory.Mapping, "__init__", recording)
    monkeypatch.setattr(memory.Mapping, "close", unmapping)
    return regions


def _use_machine(**kw) -> None:
    with Machine(nr_vcpus=2, **kw) as m:
        m.add_slot(1, 1 << 30, 256 * PAGE, U.KVM_MEM_LOG_DIRTY_PAGES)
        m.add_slot(2, 2 << 30, 64 * PAGE, 0)
        m.run(1, (1 << 30) + PAGE * np.arange(256, dtype=np.uint64))
        m.delete_slot(2)


def test_no_leaks_after_use_failure_and_errors(mappings):
    _use_machine(ring_entries=256)  # warm up lazily created interpreter state
    threads = threading.active_count()
    assert _kvm_fds() == [] and _mapped(mappings) == []
    for _ in range(3):
        _use_machine()
        _use_machine(manual=True, initially_set=True)
        _use_machine(ring_entries=256)
        with pytest.raises(HostKvmError):
            Machine(ring_entries=100)  # EINVAL after the VM fd was created
        with Machine() as m, pytest.raises(RuntimeError):
            m.run(0, np.array([0xFFFF_0000_0000], dtype=np.uint64))  # no map: the guest stops
    assert len(mappings) > 3 * 4  # guest memory, vCPU run structures and rings were mapped
    assert _kvm_fds() == []
    assert _mapped(mappings) == []
    assert threading.active_count() == threads


def test_close_is_idempotent():
    m = Machine()
    m.close()
    m.close()
    assert m.vm == -1 and m.kvm == -1 and not m.vcpus

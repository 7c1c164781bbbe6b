"""The real VM is always torn down: no fd, mapping or thread left behind, also when its
construction fails half-way or a run raises.

Only what the machine made is counted (its KVM fds, the address ranges it mapped), so that other
threads of the test process (pytest-xdist's, Qt's) opening files or mapping memory meanwhile
cannot change the answer."""

import os
import threading

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


def _mapped(ranges: list[tuple[int, int]]) -> list[str]:
    """Lines of /proc/self/maps that are one of ``ranges`` (start, end) or a vCPU fd's pages
    (anon_inode:kvm-vcpu: the run structure and the dirty ring)."""
    with open("/proc/self/maps") as fh:
        lines = fh.read().splitlines()
    made = set(ranges)
    return [
        line
        for line in lines
        if "kvm" in line or tuple(int(x, 16) for x in line.split()[0].split("-")) in made
    ]


@pytest.fixture
def mappings(monkeypatch) -> list[tuple[int, int]]:
    """Every (start, end) the machine's ``Mapping``s get, recorded as they are made."""
    made: list[tuple[int, int]] = []
    real = memory.Mapping.__init__

    def recording(self, size, *a, **kw):
        real(self, size, *a, **kw)
        made.append((self.addr, self.addr + size))

    monkeypatch.setattr(memory.Mapping, "__init__", recording)
    return made


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

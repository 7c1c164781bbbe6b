"""The real VM is always torn down: no fd, mapping or thread left behind, also when its
construction fails half-way or a run raises."""

import os
import threading

import numpy as np
import pytest
from kvm_available import needs_kvm

from engine.host import uapi as U
from engine.host.errors import HostKvmError
from engine.host.machine import PAGE, Machine

pytestmark = needs_kvm()


def _resources() -> tuple[int, int, int]:
    with open("/proc/self/maps") as fh:
        maps = sum(1 for _ in fh)
    return len(os.listdir("/proc/self/fd")), maps, threading.active_count()


def _use_machine(**kw) -> None:
    with Machine(nr_vcpus=2, **kw) as m:
        m.add_slot(1, 1 << 30, 256 * PAGE, U.KVM_MEM_LOG_DIRTY_PAGES)
        m.add_slot(2, 2 << 30, 64 * PAGE, 0)
        m.run(1, (1 << 30) + PAGE * np.arange(256, dtype=np.uint64))
        m.delete_slot(2)


def test_no_leaks_after_use_failure_and_errors():
    _use_machine(ring_entries=256)  # warm up lazily created interpreter state
    before = _resources()
    for _ in range(3):
        _use_machine()
        _use_machine(manual=True, initially_set=True)
        _use_machine(ring_entries=256)
        with pytest.raises(HostKvmError):
            Machine(ring_entries=100)  # EINVAL after the VM fd was created
        with Machine() as m, pytest.raises(RuntimeError):
            m.run(0, np.array([0xFFFF_0000_0000], dtype=np.uint64))  # no map: the guest stops
    assert _resources() == before


def test_close_is_idempotent():
    m = Machine()
    m.close()
    m.close()
    assert m.vm == -1 and m.kvm == -1 and not m.vcpus

"""The operation log: what KVM was asked to do, in order, as plain immutable records.

A run that should be replayed on a real KVM (``dirtylog kvm replay``) sets ``vm.oplog`` to a
list; the VM, the dirty-log ioctls and the simulation's harvest then append one record per
KVM-visible operation: memslot changes (logging on and off included), each batch of guest
accesses as applied, GET with the bitmap it returned, CLEAR with its arguments, ring collect
and reset, and a marker at each harvest with what it reported.  Arrays in records are
read-only copies.  ``model_ns`` is the engine's modelled cost of the operation (ns).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


def frozen(a: np.ndarray, dtype=None) -> np.ndarray:
    """A read-only copy of ``a``."""
    out = np.array(a, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


@dataclass(frozen=True)
class SetMemslot:
    """KVM_SET_USER_MEMORY_REGION: create (npages > 0, new id), move, flags, delete (0)."""

    slot: int
    base_gfn: int
    npages: int
    flags: int
    backing: int  # bytes per host page behind the slot (4 KiB, 2 MiB, 1 GiB)
    populate: bool  # the guest touched every page right after creating it
    model_ns: float = 0.0


@dataclass(frozen=True)
class Access:
    """A time-ordered batch of guest accesses given to the VM: gfn (int64), write (bool),
    vcpu (int64, -1 none running).  When a vCPU's ring reaches its soft limit the VM holds
    the rest back; the caller reaps the rings (records with ``at_ring_full``) and gives the
    held-back accesses again, first in a later record (its first ``retried`` accesses): a
    real KVM does all that inside KVM_RUN, so a replay runs only the accesses after those."""

    gfn: np.ndarray
    write: np.ndarray
    vcpu: np.ndarray
    faults: int  # modelled fault exits of this batch
    ring_full: tuple[int, ...] = ()  # vCPUs that reached the ring's soft limit in it
    retried: int = 0  # how many of the first accesses a ring-full exit held back, given again


@dataclass(frozen=True)
class GetLog:
    """KVM_GET_DIRTY_LOG on ``slot`` and the bitmap (uint64 words) it returned."""

    slot: int
    bitmap: np.ndarray
    model_ns: float = 0.0


@dataclass(frozen=True)
class ClearLog:
    """KVM_CLEAR_DIRTY_LOG ioctls on ``slot``: (first_page, num_pages, mask words) each."""

    slot: int
    calls: tuple[tuple[int, int, np.ndarray], ...]
    model_ns: float = 0.0


@dataclass(frozen=True)
class RingCollect:
    """User space collected these ring entries, in order (slot ids, slot page offsets)."""

    slots: np.ndarray
    offsets: np.ndarray
    at_ring_full: bool = False  # the reap after a KVM_EXIT_DIRTY_RING_FULL, not a harvest


@dataclass(frozen=True)
class RingReset:
    """KVM_RESET_DIRTY_RINGS over ``entries`` collected entries."""

    entries: int
    model_ns: float = 0.0
    at_ring_full: bool = False  # the reset after a KVM_EXIT_DIRTY_RING_FULL


@dataclass(frozen=True)
class Harvest:
    """A harvest ended: the pages it reported per slot (uint64 words, KVM's layout)."""

    round: int
    t_ns: int
    reported: Mapping[int, np.ndarray]


Op = SetMemslot | Access | GetLog | ClearLog | RingCollect | RingReset | Harvest


def model_ns_since(vm, mark: int) -> float:
    """Modelled cost of the tracking operations the VM logged since ``len(vm.op_log) == mark``."""
    return float(sum(op.model_ns(vm.costs) for op in vm.op_log[mark:]))

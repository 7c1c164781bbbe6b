"""A real VM on the host's KVM: memslots, vCPUs running the guest writer, GET/CLEAR, rings.

Everything goes through the uapi (``fcntl.ioctl`` on the fds, libc ``mmap``): see ``uapi``.
The order of set-up follows KVM's rules: MANUAL_DIRTY_LOG_PROTECT2 and DIRTY_LOG_RING are
enabled on the VM before any vCPU exists (``kvm_vm_ioctl_enable_dirty_log_ring`` refuses once
``kvm->created_vcpus``), the ring is ``mmap``-ed from the vCPU fd at
``KVM_DIRTY_LOG_PAGE_OFFSET`` pages, and after KVM_EXIT_DIRTY_RING_FULL the rings are
collected *and* reset before the vCPU runs again (``kvm_dirty_ring_soft_full``).

``close()`` (or leaving the ``with`` block) unmaps every mapping and closes every fd; it is
idempotent, and nothing here starts a thread.  Every ioctl's wall time (including Python's
~2-4 µs per call) is kept in ``last_ns``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from dataclasses import dataclass, field

import numpy as np

from engine.host import uapi as U
from engine.host.device import arch, check_extension, open_kvm
from engine.host.errors import HostKvmError
from engine.host.guest import GuestWriter, writer_for
from engine.host.memory import Mapping
from engine.host.stats import Stats

PAGE = 4096
SYSTEM_SLOT = 0
READ_FLAG = 1  # bit 0 of a command entry: a read instead of a write
RING_DTYPE = np.dtype([("flags", "<u4"), ("slot", "<u4"), ("offset", "<u8")])


@dataclass
class RunResult:
    """One batch on one vCPU: wall time of its KVM_RUNs and the ring-full exits taken."""

    wall_ns: int = 0
    runs: int = 0
    ring_full_exits: int = 0


@dataclass
class DataSlot:
    slot: int
    gpa: int
    size: int
    flags: int
    mem: Mapping

    @property
    def npages(self) -> int:
        return self.size // PAGE


@dataclass
class _Vcpu:
    fd: int
    run: Mapping | None = None
    stats: Stats | None = None
    ring: Mapping | None = None
    fetch: int = 0  # user space's fetch index into the ring
    entries: np.ndarray | None = field(default=None, repr=False)


class Machine:
    """One real VM (see the module docstring); use as a context manager."""

    def __init__(
        self,
        nr_vcpus: int = 1,
        manual: bool = False,
        initially_set: bool = False,
        ring_entries: int = 0,
        writer: GuestWriter | None = None,
    ) -> None:
        self.writer = writer or writer_for(arch())
        self.layout = self.writer.layout
        self.kvm = -1
        self.vm = -1
        self.vcpus: list[_Vcpu] = []
        self.slots: dict[int, DataSlot] = {}
        self.system: Mapping | None = None
        self.stats: Stats | None = None
        self.ring_entries = ring_entries
        self.ring_pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.last_ns = 0
        try:
            self._create(nr_vcpus, manual, initially_set, ring_entries)
        except BaseException:
            self.close()
            raise

    # -- set-up ----------------------------------------------------------------------------------

    def _create(self, nr_vcpus: int, manual: bool, initially_set: bool, ring_entries: int) -> None:
        self.kvm = open_kvm()
        self.vm = self._ioctl(self.kvm, U.KVM_CREATE_VM, 0, name="KVM_CREATE_VM")
        if manual:
            flags = U.KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE
            flags |= U.KVM_DIRTY_LOG_INITIALLY_SET if initially_set else 0
            self.enable_cap(U.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2, flags)
        if ring_entries:
            cap = (
                U.KVM_CAP_DIRTY_LOG_RING_ACQ_REL
                if check_extension(self.vm, U.KVM_CAP_DIRTY_LOG_RING_ACQ_REL)
                else U.KVM_CAP_DIRTY_LOG_RING
            )
            self.enable_cap(cap, ring_entries * RING_DTYPE.itemsize)
        self.system = Mapping(self.layout.system_size)
        self.writer.build_system(self.system.array())
        self._set_region(SYSTEM_SLOT, 0, 0, self.layout.system_size, self.system.addr)
        self.stats = Stats(self.vm)
        mmap_size = self._ioctl(
            self.kvm, U.KVM_GET_VCPU_MMAP_SIZE, 0, name="KVM_GET_VCPU_MMAP_SIZE"
        )
        for i in range(nr_vcpus):
            self._create_vcpu(i, mmap_size)
        for v in range(nr_vcpus):  # fault in the code and the command buffer (unlogged)
            self.run(v, np.full(self.layout.cmd_capacity, self.layout.code_gpa | READ_FLAG))

    def _create_vcpu(self, index: int, mmap_size: int) -> None:
        fd = self._ioctl(self.vm, U.KVM_CREATE_VCPU, index, name="KVM_CREATE_VCPU")
        vcpu = _Vcpu(fd)
        self.vcpus.append(vcpu)  # owned from here on: close() releases what it holds
        vcpu.run = Mapping(mmap_size, fd=fd)
        vcpu.stats = Stats(fd)
        if self.ring_entries:
            vcpu.ring = Mapping(
                self.ring_entries * RING_DTYPE.itemsize,
                fd=fd,
                offset=U.KVM_DIRTY_LOG_PAGE_OFFSET * PAGE,
            )
            vcpu.entries = vcpu.ring.array(RING_DTYPE)
        self.writer.setup_vcpu(fd)

    def enable_cap(self, cap: int, arg0: int) -> None:
        c = U.kvm_enable_cap(cap=cap)
        c.args[0] = arg0
        self._ioctl(self.vm, U.KVM_ENABLE_CAP, c, name="KVM_ENABLE_CAP")

    # -- memslots ----------------------------------------------------------------------------------

    def _set_region(self, slot: int, flags: int, gpa: int, size: int, addr: int) -> None:
        r = U.kvm_userspace_memory_region(slot, flags, gpa, size, addr)
        self._ioctl(self.vm, U.KVM_SET_USER_MEMORY_REGION, r, name="KVM_SET_USER_MEMORY_REGION")

    def add_slot(
        self, slot: int, gpa: int, size: int, flags: int = 0, hugepage: bool = False
    ) -> DataSlot:
        """A data slot of anonymous memory (4 KiB-backed unless ``hugepage``: THP)."""
        if slot == SYSTEM_SLOT or slot in self.slots:
            raise ValueError(f"slot {slot} is taken")
        lo, hi = self.layout.data_min_gpa, self.layout.data_max_gpa
        if gpa < lo or gpa + size > hi:
            raise ValueError(f"slot {slot} at {gpa:#x}+{size:#x} is outside [{lo:#x}, {hi:#x})")
        mem = Mapping(size, hugepage=hugepage)
        try:
            self._set_region(slot, flags, gpa, size, mem.addr)
        except BaseException:
            mem.close()
            raise
        self.slots[slot] = ds = DataSlot(slot, gpa, size, flags, mem)
        return ds

    def set_flags(self, slot: int, flags: int) -> None:
        """KVM_SET_USER_MEMORY_REGION with new flags (logging on or off)."""
        ds = self.slots[slot]
        self._set_region(slot, flags, ds.gpa, ds.size, ds.mem.addr)
        ds.flags = flags

    def move_slot(self, slot: int, gpa: int) -> None:
        ds = self.slots[slot]
        self._set_region(slot, ds.flags, gpa, ds.size, ds.mem.addr)
        ds.gpa = gpa

    def delete_slot(self, slot: int) -> None:
        ds = self.slots.pop(slot)
        try:
            self._set_region(slot, 0, ds.gpa, 0, ds.mem.addr)
        finally:
            ds.mem.close()

    def content(self, slot: int) -> np.ndarray:
        """The first dword of every page of a slot (how often the guest wrote it), a copy."""
        ds = self.slots[slot]
        return ds.mem.array(np.uint32)[:: PAGE // 4].copy()

    # -- the guest ---------------------------------------------------------------------------------

    def run(self, vcpu: int, addrs: np.ndarray) -> RunResult:
        """Have ``vcpu`` access ``addrs`` (guest-physical, in order; bit 0 set = read).

        Batches longer than the command buffer run in pieces, in order.  A
        KVM_EXIT_DIRTY_RING_FULL is answered by collecting every ring (the entries wait in
        ``ring_pending`` for the next ``collect_rings``) and KVM_RESET_DIRTY_RINGS.
        """
        res = RunResult()
        cmd = self.system.array(np.uint64, self.layout.cmd_gpa, self.layout.cmd_capacity + 1)
        addrs = np.asarray(addrs, dtype=np.uint64)
        cap = self.layout.cmd_capacity
        for lo in range(0, max(addrs.size, 1), cap):
            part = addrs[lo : lo + cap]
            cmd[1 : 1 + part.size] = part
            cmd[0] = part.size
            self._run_until_signal(self.vcpus[vcpu], res)
        return res

    def _run_until_signal(self, v: _Vcpu, res: RunResult) -> None:
        head = U.kvm_run_head.from_address(v.run.addr)
        while True:
            t0 = time.perf_counter_ns()
            self._ioctl(v.fd, U.KVM_RUN, 0, name="KVM_RUN")
            res.wall_ns += time.perf_counter_ns() - t0
            res.runs += 1
            reason = head.exit_reason
            if reason == U.KVM_EXIT_IO and head.io.port == self.layout.signal_port:
                return
            if reason == U.KVM_EXIT_DIRTY_RING_FULL:
                res.ring_full_exits += 1
                self.ring_pending.append(self._collect_all())
                self.reset_rings()
                continue
            name = U.EXIT_NAMES.get(reason, str(reason))
            raise RuntimeError(f"the guest writer stopped with {name} (exit reason {reason})")

    # -- dirty log ---------------------------------------------------------------------------------

    def get_dirty_log(self, slot: int) -> np.ndarray:
        """KVM_GET_DIRTY_LOG: the slot's bitmap (KVM's layout, uint64 words), a new array."""
        words = np.zeros((self.slots[slot].npages + 63) // 64, dtype=np.uint64)
        log = U.kvm_dirty_log(slot=slot, dirty_bitmap=words.ctypes.data)
        self._ioctl(self.vm, U.KVM_GET_DIRTY_LOG, log, name="KVM_GET_DIRTY_LOG")
        return words

    def clear_dirty_log(self, slot: int, first_page: int, num_pages: int, mask: np.ndarray) -> None:
        """KVM_CLEAR_DIRTY_LOG of ``mask`` (uint64 words) from ``first_page``."""
        mask = np.ascontiguousarray(mask, dtype=np.uint64)
        c = U.kvm_clear_dirty_log(
            slot=slot, num_pages=num_pages, first_page=first_page, dirty_bitmap=mask.ctypes.data
        )
        self._ioctl(self.vm, U.KVM_CLEAR_DIRTY_LOG, c, name="KVM_CLEAR_DIRTY_LOG")

    def _collect(self, v: _Vcpu) -> tuple[np.ndarray, np.ndarray]:
        """The DIRTY entries from the fetch index on, in order; flagged RESET."""
        n = self.ring_entries
        idx = (v.fetch + np.arange(n)) & (n - 1)
        ring = v.entries[idx]
        dirty = (ring["flags"] & U.KVM_DIRTY_GFN_F_DIRTY) != 0
        count = (
            n if dirty.all() else int(np.argmin(dirty))
        )  # published in order: stop at the first gap
        take = idx[:count]
        slots, offsets = ring["slot"][:count].copy(), ring["offset"][:count].copy()
        v.entries["flags"][take] = U.KVM_DIRTY_GFN_F_RESET
        v.fetch += count
        return slots, offsets

    def _collect_all(self) -> tuple[np.ndarray, np.ndarray]:
        parts = [self._collect(v) for v in self.vcpus]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def collect_rings(self) -> tuple[np.ndarray, np.ndarray]:
        """Every entry since the last call: those collected at ring-full exits, then the
        rings' own, in order (slot ids, slot page offsets).  Entries are flagged RESET; call
        ``reset_rings`` to let KVM re-protect them."""
        parts = [*self.ring_pending, self._collect_all()]
        self.ring_pending = []
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def reset_rings(self) -> int:
        """KVM_RESET_DIRTY_RINGS: the number of entries KVM reset."""
        return self._ioctl(self.vm, U.KVM_RESET_DIRTY_RINGS, 0, name="KVM_RESET_DIRTY_RINGS")

    # -- stats, plumbing ---------------------------------------------------------------------------

    def vcpu_stats(self) -> dict[str, int]:
        """The vCPUs' statistics summed (pf_fixed, exits, insn_emulation ...)."""
        total: dict[str, int] = {}
        for v in self.vcpus:
            for k, val in v.stats.read().items():
                total[k] = total.get(k, 0) + val
        return total

    def _ioctl(self, fd: int, request: int, arg, name: str) -> int:
        while True:
            t0 = time.perf_counter_ns()
            try:
                ret = (
                    fcntl.ioctl(fd, request, arg)
                    if isinstance(arg, int)
                    else fcntl.ioctl(fd, request, arg, True)
                )
            except InterruptedError:
                continue
            except OSError as exc:
                self.last_ns = time.perf_counter_ns() - t0
                raise HostKvmError(name, exc) from None
            self.last_ns = time.perf_counter_ns() - t0
            return ret

    def close(self) -> None:
        """Unmap and close everything (idempotent)."""
        for v in self.vcpus:
            for m in (v.ring, v.run):
                if m is not None:
                    m.close()
            if v.stats is not None:
                v.stats.close()
            os.close(v.fd)
        self.vcpus = []
        for ds in self.slots.values():
            ds.mem.close()
        self.slots = {}
        if self.stats is not None:
            self.stats.close()
            self.stats = None
        for name in ("vm", "kvm"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self.system is not None:  # after the VM fd: KVM no longer maps it
            self.system.close()
            self.system = None

    def __enter__(self) -> Machine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

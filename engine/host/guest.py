"""The guest writer: machine code and the CPU state it runs in, one entry per architecture.

A ``GuestWriter`` knows its code (bytes, with the assembly listing beside this module), how
to lay out the unlogged system slot (code, page tables, command buffer) and how to set a
vCPU's registers.  The host machine only uses this interface, so an arm64 writer is one more
entry in ``WRITERS``.

x86-64 (``guest_x86_64.S``): long mode at **CPL 3**.  On a host whose /dev/kvm is a software
hypervisor over KVM's shadow MMU (kvm_pvm), code at CPL 0 or outside long mode runs in KVM's
instruction emulator: its dirty log is right, but no write-protection fault ever happens
(``insn_emulation`` counts every instruction).  So the writer runs as user code: CS 0x33 and
SS 0x2b with DPL 3, the U/S bit at every paging level, RFLAGS.IOPL 3 so that its ``out``
(the end-of-batch signal) is allowed.  The identity map uses 2 MiB pages with A and D
already set, so KVM's guest page-table walker never writes them (it would dirty them).
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.host import uapi as U

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Layout:
    """Guest-physical layout of the system slot and where data slots may go."""

    system_size: int  # bytes of the unlogged system slot at GPA 0
    code_gpa: int
    cmd_gpa: int  # the command buffer: a u64 count, then u64 entries
    cmd_bytes: int
    data_min_gpa: int  # data slots lie in [data_min_gpa, data_max_gpa)
    data_max_gpa: int
    signal_port: int  # the port the writer's end-of-batch ``out`` uses

    @property
    def cmd_capacity(self) -> int:
        return self.cmd_bytes // 8 - 1


class GuestWriter:
    """Interface of an architecture's writer (see the module docstring)."""

    arch: str
    listing: str  # file name of the assembly listing, beside this module
    code: bytes
    layout: Layout

    def build_system(self, mem: np.ndarray) -> None:
        """Write the code, descriptor tables and page tables into the system slot (uint8)."""
        raise NotImplementedError

    def setup_vcpu(self, vcpu_fd: int) -> None:
        """Set the vCPU's registers so that KVM_RUN starts the writer's loop."""
        raise NotImplementedError


# -- x86-64 ------------------------------------------------------------------------------------

_PML4, _PDPT, _PD0 = 0x2000, 0x3000, 0x4000
_GDT = 0x800
_PD_COUNT = 64  # page directories: an identity map of 64 GiB in 2 MiB pages
_P, _RW, _US, _A, _D, _PS = 0x1, 0x2, 0x4, 0x20, 0x40, 0x80
_CR0_PE, _CR0_MP, _CR0_ET, _CR0_NE, _CR0_WP, _CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
_CR4_PAE = 1 << 5
_EFER_LME, _EFER_LMA = 1 << 8, 1 << 10
_RFLAGS_IOPL3 = 3 << 12
_USER_CS, _USER_SS, _TSS_SEL = 0x33, 0x2B, 0x18

X86_64_CODE = bytes.fromhex(
    "be00001000488b0e4883c6084885c97418488b064883c60848ffc9a8017505830001ebe88b50ffebe3e610ebd3"
)
"""``as --64 guest_x86_64.S`` then ``objcopy -O binary -j .text`` (checked by a test)."""


class X86_64Writer(GuestWriter):
    arch = "x86_64"
    listing = "guest_x86_64.S"
    code = X86_64_CODE
    layout = Layout(
        system_size=4 << 20,
        code_gpa=0x1000,
        cmd_gpa=0x100000,
        cmd_bytes=3 << 20,
        data_min_gpa=4 << 20,
        data_max_gpa=_PD_COUNT << 30,
        signal_port=0x10,
    )

    def build_system(self, mem: np.ndarray) -> None:
        mem[self.layout.code_gpa : self.layout.code_gpa + len(self.code)] = np.frombuffer(
            self.code, np.uint8
        )
        q = mem.view(np.uint64)
        upper = _P | _RW | _US | _A
        q[_PML4 // 8] = _PDPT | upper
        q[_PDPT // 8 : _PDPT // 8 + _PD_COUNT] = _PD0 + 0x1000 * np.arange(_PD_COUNT) | upper
        big = np.arange(_PD_COUNT * 512, dtype=np.uint64) << np.uint64(21)
        q[_PD0 // 8 : _PD0 // 8 + _PD_COUNT * 512] = big | np.uint64(upper | _D | _PS)
        # GDT: null, kernel code/data, a 64-bit TSS (2 slots), user data, user code
        gdt = [
            0,
            0x00AF9B000000FFFF,
            0x00CF93000000FFFF,
            0x00008B0000000067,
            0,
            0x00CFF3000000FFFF,
            0x00AFFB000000FFFF,
        ]
        q[_GDT // 8 : _GDT // 8 + len(gdt)] = np.array(gdt, dtype=np.uint64)

    def setup_vcpu(self, vcpu_fd: int) -> None:
        sregs = U.kvm_sregs()
        fcntl.ioctl(vcpu_fd, U.KVM_GET_SREGS, sregs)
        user_code = dict(base=0, limit=0xFFFFFFFF, present=1, dpl=3, s=1, g=1)
        _seg(sregs.cs, _USER_CS, type=0xB, l=1, db=0, **user_code)
        for seg in (sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss):
            _seg(seg, _USER_SS, type=0x3, l=0, db=1, **user_code)
        _seg(
            sregs.tr, _TSS_SEL, base=0, limit=0x67, type=0xB, present=1, dpl=0, s=0, l=0, db=0, g=0
        )
        sregs.gdt.base, sregs.gdt.limit = _GDT, 7 * 8 - 1
        sregs.cr3 = _PML4
        sregs.cr4 = _CR4_PAE
        sregs.cr0 = _CR0_PE | _CR0_MP | _CR0_ET | _CR0_NE | _CR0_WP | _CR0_PG
        sregs.efer = _EFER_LME | _EFER_LMA
        fcntl.ioctl(vcpu_fd, U.KVM_SET_SREGS, sregs)
        regs = U.kvm_regs()
        regs.rip = self.layout.code_gpa
        regs.rsp = self.layout.cmd_gpa - 16
        regs.rflags = 0x2 | _RFLAGS_IOPL3
        fcntl.ioctl(vcpu_fd, U.KVM_SET_REGS, regs)


def _seg(seg: U.kvm_segment, selector: int, **fields: int) -> None:
    seg.selector = selector
    seg.unusable = 0
    for name, value in fields.items():
        setattr(seg, name, value)


WRITERS: dict[str, type[GuestWriter]] = {"x86_64": X86_64Writer}
"""The guest writer per host architecture (``platform.machine()``)."""


def writer_for(arch: str) -> GuestWriter:
    """The writer of ``arch``; KeyError when there is none (device.unavailable_reason says so)."""
    return WRITERS[arch]()


def listing_path(writer: GuestWriter) -> Path:
    return HERE / writer.listing

"""KVM's uapi as Python: ioctl numbers, capabilities, exit reasons and struct layouts.

Every value is the one ``<linux/kvm.h>`` (and x86's ``<asm/kvm.h>``) defines, release 6.18;
``tests/host/test_uapi.py`` compiles a C program against the installed header and compares
each constant, ``sizeof`` and ``offsetof`` that the header defines.  Only what the host
backend uses is here.
"""

from __future__ import annotations

import ctypes as C

# -- ioctl number encoding (include/uapi/asm-generic/ioctl.h) ----------------------------------
_IOC_NRSHIFT, _IOC_TYPESHIFT, _IOC_SIZESHIFT, _IOC_DIRSHIFT = 0, 8, 16, 30
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _ioc(direction: int, nr: int, size: int) -> int:
    return (
        (direction << _IOC_DIRSHIFT)
        | (KVMIO << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _io(nr: int) -> int:
    return _ioc(_IOC_NONE, nr, 0)


def _iow(nr: int, struct: type) -> int:
    return _ioc(_IOC_WRITE, nr, C.sizeof(struct))


def _ior(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ, nr, C.sizeof(struct))


def _iowr(nr: int, struct: type) -> int:
    return _ioc(_IOC_READ | _IOC_WRITE, nr, C.sizeof(struct))


# -- structs ------------------------------------------------------------------------------------


class kvm_userspace_memory_region(C.Structure):  # the kernel's struct names, as they are
    _fields_ = [
        ("slot", C.c_uint32),
        ("flags", C.c_uint32),
        ("guest_phys_addr", C.c_uint64),
        ("memory_size", C.c_uint64),
        ("userspace_addr", C.c_uint64),
    ]


class kvm_dirty_log(C.Structure):
    _fields_ = [("slot", C.c_uint32), ("padding1", C.c_uint32), ("dirty_bitmap", C.c_uint64)]


class kvm_clear_dirty_log(C.Structure):
    _fields_ = [
        ("slot", C.c_uint32),
        ("num_pages", C.c_uint32),
        ("first_page", C.c_uint64),
        ("dirty_bitmap", C.c_uint64),
    ]


class kvm_enable_cap(C.Structure):
    _fields_ = [
        ("cap", C.c_uint32),
        ("flags", C.c_uint32),
        ("args", C.c_uint64 * 4),
        ("pad", C.c_uint8 * 64),
    ]


class kvm_dirty_gfn(C.Structure):
    _fields_ = [("flags", C.c_uint32), ("slot", C.c_uint32), ("offset", C.c_uint64)]


_X86_REGS = "rax rbx rcx rdx rsi rdi rsp rbp r8 r9 r10 r11 r12 r13 r14 r15 rip rflags"


class kvm_regs(C.Structure):  # (x86)
    _fields_ = [(name, C.c_uint64) for name in _X86_REGS.split()]


class kvm_segment(C.Structure):  # (x86)
    _fields_ = [
        ("base", C.c_uint64),
        ("limit", C.c_uint32),
        ("selector", C.c_uint16),
        ("type", C.c_uint8),
        ("present", C.c_uint8),
        ("dpl", C.c_uint8),
        ("db", C.c_uint8),
        ("s", C.c_uint8),
        ("l", C.c_uint8),
        ("g", C.c_uint8),
        ("avl", C.c_uint8),
        ("unusable", C.c_uint8),
        ("padding", C.c_uint8),
    ]


class kvm_dtable(C.Structure):  # (x86)
    _fields_ = [("base", C.c_uint64), ("limit", C.c_uint16), ("padding", C.c_uint16 * 3)]


class kvm_sregs(C.Structure):  # (x86)
    _fields_ = [
        *((seg, kvm_segment) for seg in ["cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"]),
        ("gdt", kvm_dtable),
        ("idt", kvm_dtable),
        *((reg, C.c_uint64) for reg in ["cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"]),
        ("interrupt_bitmap", C.c_uint64 * 4),
    ]


class kvm_run_io(C.Structure):  # (the exit_reason KVM_EXIT_IO member of kvm_run)
    _fields_ = [
        ("direction", C.c_uint8),
        ("size", C.c_uint8),
        ("port", C.c_uint16),
        ("count", C.c_uint32),
        ("data_offset", C.c_uint64),
    ]


class kvm_run_head(C.Structure):  # (the start of struct kvm_run)
    _fields_ = [
        ("request_interrupt_window", C.c_uint8),
        ("immediate_exit", C.c_uint8),
        ("padding1", C.c_uint8 * 6),
        ("exit_reason", C.c_uint32),
        ("ready_for_interrupt_injection", C.c_uint8),
        ("if_flag", C.c_uint8),
        ("flags", C.c_uint16),
        ("cr8", C.c_uint64),
        ("apic_base", C.c_uint64),
        ("io", kvm_run_io),  # the exit union starts here (offset 32)
    ]


class kvm_stats_header(C.Structure):
    _fields_ = [
        ("flags", C.c_uint32),
        ("name_size", C.c_uint32),
        ("num_desc", C.c_uint32),
        ("id_offset", C.c_uint32),
        ("desc_offset", C.c_uint32),
        ("data_offset", C.c_uint32),
    ]


class kvm_stats_desc(C.Structure):  # (the name follows, name_size bytes)
    _fields_ = [
        ("flags", C.c_uint32),
        ("exponent", C.c_int16),
        ("size", C.c_uint16),
        ("offset", C.c_uint32),
        ("bucket_size", C.c_uint32),
    ]


# -- ioctls -------------------------------------------------------------------------------------
KVM_GET_API_VERSION = _io(0x00)
KVM_CREATE_VM = _io(0x01)
KVM_CHECK_EXTENSION = _io(0x03)
KVM_GET_VCPU_MMAP_SIZE = _io(0x04)
KVM_CREATE_VCPU = _io(0x41)
KVM_GET_DIRTY_LOG = _iow(0x42, kvm_dirty_log)
KVM_SET_USER_MEMORY_REGION = _iow(0x46, kvm_userspace_memory_region)
KVM_RUN = _io(0x80)
KVM_GET_REGS = _ior(0x81, kvm_regs)
KVM_SET_REGS = _iow(0x82, kvm_regs)
KVM_GET_SREGS = _ior(0x83, kvm_sregs)
KVM_SET_SREGS = _iow(0x84, kvm_sregs)
KVM_ENABLE_CAP = _iow(0xA3, kvm_enable_cap)
KVM_CLEAR_DIRTY_LOG = _iowr(0xC0, kvm_clear_dirty_log)
KVM_RESET_DIRTY_RINGS = _io(0xC7)
KVM_GET_STATS_FD = _io(0xCE)

# -- capabilities (KVM_CHECK_EXTENSION / KVM_ENABLE_CAP) ----------------------------------------
KVM_CAP_USER_MEMORY = 3
KVM_CAP_NR_MEMSLOTS = 10
KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 = 168
KVM_CAP_DIRTY_LOG_RING = 192
KVM_CAP_BINARY_STATS_FD = 203
KVM_CAP_DIRTY_LOG_RING_ACQ_REL = 223
KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP = 225
KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE = 228

KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE = 1 << 0
KVM_DIRTY_LOG_INITIALLY_SET = 1 << 1
KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_DIRTY_GFN_F_DIRTY = 1 << 0
KVM_DIRTY_GFN_F_RESET = 1 << 1
KVM_DIRTY_LOG_PAGE_OFFSET = 64  # x86's <asm/kvm.h> (the generic header's default is 0)

# -- exit reasons (kvm_run.exit_reason) ----------------------------------------------------------
KVM_EXIT_IO = 2
KVM_EXIT_HLT = 5
KVM_EXIT_MMIO = 6
KVM_EXIT_SHUTDOWN = 8
KVM_EXIT_FAIL_ENTRY = 9
KVM_EXIT_INTERNAL_ERROR = 17
KVM_EXIT_DIRTY_RING_FULL = 31

EXIT_NAMES = {
    KVM_EXIT_IO: "KVM_EXIT_IO",
    KVM_EXIT_HLT: "KVM_EXIT_HLT",
    KVM_EXIT_MMIO: "KVM_EXIT_MMIO",
    KVM_EXIT_SHUTDOWN: "KVM_EXIT_SHUTDOWN",
    KVM_EXIT_FAIL_ENTRY: "KVM_EXIT_FAIL_ENTRY",
    KVM_EXIT_INTERNAL_ERROR: "KVM_EXIT_INTERNAL_ERROR",
    KVM_EXIT_DIRTY_RING_FULL: "KVM_EXIT_DIRTY_RING_FULL",
}

KVM_API_VERSION = 12
DIRTY_RING_RSVD_ENTRIES = 64  # KVM_DIRTY_RING_RSVD_ENTRIES (virt/kvm/dirty_ring.c)

STRUCTS = (
    kvm_userspace_memory_region,
    kvm_dirty_log,
    kvm_clear_dirty_log,
    kvm_enable_cap,
    kvm_dirty_gfn,
    kvm_regs,
    kvm_segment,
    kvm_dtable,
    kvm_sregs,
    kvm_stats_header,
    kvm_stats_desc,
)
"""The structs whose size and field offsets the header test compares with C."""

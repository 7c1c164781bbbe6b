"""The uapi constants and struct layouts against <linux/kvm.h>, compiled with the host's C
compiler (skipped, with the reason, when there is no compiler or no header)."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from engine.host import uapi as U

HEADER = Path("/usr/include/linux/kvm.h")

CONSTANTS = [
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_CREATE_VCPU", "KVM_GET_DIRTY_LOG", "KVM_SET_USER_MEMORY_REGION", "KVM_RUN",
    "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_ENABLE_CAP",
    "KVM_CLEAR_DIRTY_LOG", "KVM_RESET_DIRTY_RINGS", "KVM_GET_STATS_FD",
    "KVM_CAP_USER_MEMORY", "KVM_CAP_NR_MEMSLOTS", "KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2",
    "KVM_CAP_DIRTY_LOG_RING", "KVM_CAP_BINARY_STATS_FD", "KVM_CAP_DIRTY_LOG_RING_ACQ_REL",
    "KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP", "KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE",
    "KVM_DIRTY_LOG_MANUAL_PROTECT_ENABLE", "KVM_DIRTY_LOG_INITIALLY_SET",
    "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY", "KVM_DIRTY_GFN_F_DIRTY",
    "KVM_DIRTY_GFN_F_RESET", "KVM_DIRTY_LOG_PAGE_OFFSET", "KVM_EXIT_IO", "KVM_EXIT_HLT",
    "KVM_EXIT_MMIO", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTERNAL_ERROR",
    "KVM_EXIT_DIRTY_RING_FULL", "KVM_API_VERSION",
]  # fmt: skip


def _header_or_skip() -> None:
    if shutil.which("gcc") is None and shutil.which("cc") is None:
        pytest.skip("no C compiler (gcc/cc) to compile against <linux/kvm.h>")
    if not HEADER.exists() and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "linux-libc-dev"],
            capture_output=True,
            timeout=300,
        )
    if not HEADER.exists():
        pytest.skip(f"{HEADER} is not installed (package linux-libc-dev)")


def _c_values(tmp_path: Path) -> dict[str, int]:
    """Each constant (only those the header defines) and sizeof/offsetof of each struct."""
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        "#include <linux/kvm.h>",
        "int main(void){",
    ]
    for name in CONSTANTS:
        lines.append(
            f'#ifdef {name}\nprintf("{name} %llu\\n", (unsigned long long)({name}));\n#endif'
        )
    for st in U.STRUCTS:
        name = st.__name__
        lines.append(f'printf("sizeof {name} %zu\\n", sizeof(struct {name}));')
        for field, *_ in st._fields_:
            if field.startswith("pad"):
                continue
            lines.append(
                f'printf("offsetof {name}.{field} %zu\\n", offsetof(struct {name}, {field}));'
            )
    lines.append("return 0;}")
    src = tmp_path / "kvm_layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "kvm_layout"
    cc = shutil.which("gcc") or shutil.which("cc")
    subprocess.run([cc, "-o", str(exe), str(src)], check=True, capture_output=True, timeout=120)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return {k: int(v) for k, v in (line.rsplit(" ", 1) for line in out.splitlines())}


def test_constants_and_layouts_match_the_header(tmp_path):
    _header_or_skip()
    c = _c_values(tmp_path)
    checked = 0
    for name in CONSTANTS:
        if name in c:
            assert getattr(U, name) == c[name], name
            checked += 1
    assert checked >= 30  # the header defines (nearly) all of them
    for st in U.STRUCTS:
        name = st.__name__
        assert ctypes.sizeof(st) == c[f"sizeof {name}"], name
        for field, *_ in st._fields_:
            if not field.startswith("pad"):
                assert getattr(st, field).offset == c[f"offsetof {name}.{field}"], (name, field)


def test_kvm_run_exit_union_offsets(tmp_path):
    """kvm_run_head mirrors the start of struct kvm_run: exit_reason and the io member."""
    _header_or_skip()
    src = tmp_path / "run.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/kvm.h>\nint main(void){"
        'printf("%zu %zu %zu %zu\\n", offsetof(struct kvm_run, exit_reason),'
        " offsetof(struct kvm_run, io), offsetof(struct kvm_run, io.port),"
        " offsetof(struct kvm_run, io.data_offset));return 0;}"
    )
    cc = shutil.which("gcc") or shutil.which("cc")
    subprocess.run([cc, "-o", str(tmp_path / "run"), str(src)], check=True, timeout=120)
    got = [
        int(x)
        for x in subprocess.run(
            [str(tmp_path / "run")], capture_output=True, text=True
        ).stdout.split()
    ]
    h = U.kvm_run_head
    assert got == [
        h.exit_reason.offset,
        h.io.offset,
        h.io.offset + U.kvm_run_io.port.offset,
        h.io.offset + U.kvm_run_io.data_offset.offset,
    ]


def test_ioctl_numbers_by_hand():
    """Worked out by hand from asm-generic/ioctl.h: dir<<30 | size<<16 | 0xAE<<8 | nr."""
    assert U.KVM_RUN == 0xAE80
    assert U.KVM_GET_DIRTY_LOG == (1 << 30) | (16 << 16) | (0xAE << 8) | 0x42
    assert U.KVM_CLEAR_DIRTY_LOG == (3 << 30) | (24 << 16) | (0xAE << 8) | 0xC0

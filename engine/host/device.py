"""``/dev/kvm`` itself: can it be used here, and what it offers (``dirtylog kvm info``).

``unavailable_reason()`` is the one sentence shown when it cannot (missing, not permitted,
another architecture, an API other than 12); ``probe()`` reads the capabilities that matter
for dirty logging and what ``/sys/module/kvm*/parameters`` says about the MMU.
"""

from __future__ import annotations

import errno
import fcntl
import os
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from engine.host import uapi as U
from engine.host.errors import KvmUnavailable

DEV = "/dev/kvm"
SUPPORTED_ARCHES = ("x86_64",)
SYS_MODULE = Path("/sys/module")


def arch() -> str:
    return platform.machine()


def unavailable_reason(dev: str | None = None) -> str | None:
    """None when the host's KVM can run the guest writer, else why not (one sentence)."""
    dev = dev or DEV
    if arch() not in SUPPORTED_ARCHES:
        return (
            f"this host is {arch()}; the real-KVM backend runs on x86-64 hosts only "
            "(its guest writer is x86-64 code)"
        )
    try:
        fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return (
            f"{dev} does not exist: KVM is not loaded here "
            "(no kvm module, or a container without the device)"
        )
    except PermissionError:
        return f"{dev} is not permitted for this user (add it to the kvm group or run as root)"
    except OSError as exc:
        return f"{dev} cannot be opened: {exc.strerror}"
    try:
        version = fcntl.ioctl(fd, U.KVM_GET_API_VERSION)
    except OSError as exc:
        return f"{dev} does not answer KVM_GET_API_VERSION ({errno.errorcode.get(exc.errno)})"
    finally:
        os.close(fd)
    if version != U.KVM_API_VERSION:
        return f"{dev} speaks KVM API {version}; only API {U.KVM_API_VERSION} is supported"
    return None


def open_kvm(dev: str | None = None) -> int:
    """An fd of /dev/kvm; raises KvmUnavailable with the reason when it cannot be used."""
    dev = dev or DEV
    reason = unavailable_reason(dev)
    if reason:
        raise KvmUnavailable(reason)
    return os.open(dev, os.O_RDWR | os.O_CLOEXEC)


def check_extension(fd: int, cap: int) -> int:
    """KVM_CHECK_EXTENSION on a system or VM fd (0: not supported)."""
    try:
        return fcntl.ioctl(fd, U.KVM_CHECK_EXTENSION, cap)
    except OSError:
        return 0


@dataclass(frozen=True)
class HostInfo:
    """What ``dirtylog kvm info`` reports (all read from this host's KVM, none modelled)."""

    arch: str
    api_version: int
    manual_protect2: int  # KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: supported flags (3 = both)
    dirty_ring_max_bytes: int  # KVM_CAP_DIRTY_LOG_RING (on a VM fd): the largest ring
    dirty_ring_acq_rel_max_bytes: int
    ring_with_bitmap: int  # KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP
    eager_split: int  # KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE (arm64 only; 0 here)
    nr_memslots: int
    binary_stats: int
    modules: tuple[str, ...]
    parameters: dict[str, str] = field(default_factory=dict)

    @property
    def mmu(self) -> str:
        """The MMU kind as far as /sys/module shows it."""
        p = self.parameters
        if p.get("kvm.tdp_mmu") == "Y":
            return "TDP MMU (two-dimensional paging, tdp_mmu=Y)"
        if any(m in self.modules for m in ("kvm_intel", "kvm_amd")):
            hw = p.get("kvm_intel.ept") or p.get("kvm_amd.npt")
            if hw == "N" or hw == "0":
                return "shadow MMU (hardware virtualisation without EPT/NPT)"
            return "legacy TDP (EPT/NPT without the TDP MMU, tdp_mmu=N)"
        if self.arch == "x86_64" and "kvm.tdp_mmu" in p:
            extra = ", kvm_pvm: software virtualisation" if "kvm_pvm" in self.modules else ""
            return f"shadow MMU (rmap, tdp_mmu=N{extra})"
        return "unknown (no /sys/module/kvm parameters visible)"

    def as_dict(self) -> dict:
        return {**asdict(self), "mmu": self.mmu}


def module_parameters() -> tuple[tuple[str, ...], dict[str, str]]:
    """Loaded kvm* modules and their parameters (``kvm.tdp_mmu`` → ``N``)."""
    mods, params = [], {}
    if not SYS_MODULE.is_dir():
        return (), {}
    for mod in sorted(SYS_MODULE.glob("kvm*")):
        mods.append(mod.name)
        pdir = mod / "parameters"
        if pdir.is_dir():
            for p in sorted(pdir.iterdir()):
                try:
                    params[f"{mod.name}.{p.name}"] = p.read_text().strip()
                except OSError:
                    continue
    return tuple(mods), params


def probe(dev: str | None = None) -> HostInfo:
    """Read the capabilities; the ring caps need a VM fd, so one is created and closed."""
    fd = open_kvm(dev)
    try:
        version = fcntl.ioctl(fd, U.KVM_GET_API_VERSION)
        vm = fcntl.ioctl(fd, U.KVM_CREATE_VM, 0)
        try:
            caps = {
                c: check_extension(vm, c)
                for c in (
                    U.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2,
                    U.KVM_CAP_DIRTY_LOG_RING,
                    U.KVM_CAP_DIRTY_LOG_RING_ACQ_REL,
                    U.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP,
                    U.KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE,
                    U.KVM_CAP_NR_MEMSLOTS,
                    U.KVM_CAP_BINARY_STATS_FD,
                )
            }
        finally:
            os.close(vm)
    finally:
        os.close(fd)
    mods, params = module_parameters()
    return HostInfo(
        arch=arch(),
        api_version=version,
        manual_protect2=caps[U.KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2],
        dirty_ring_max_bytes=caps[U.KVM_CAP_DIRTY_LOG_RING],
        dirty_ring_acq_rel_max_bytes=caps[U.KVM_CAP_DIRTY_LOG_RING_ACQ_REL],
        ring_with_bitmap=caps[U.KVM_CAP_DIRTY_LOG_RING_WITH_BITMAP],
        eager_split=caps[U.KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE],
        nr_memslots=caps[U.KVM_CAP_NR_MEMSLOTS],
        binary_stats=caps[U.KVM_CAP_BINARY_STATS_FD],
        modules=mods,
        parameters=params,
    )

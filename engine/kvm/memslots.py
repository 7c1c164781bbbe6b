"""Memslots with the rules of KVM_SET_USER_MEMORY_REGION (``__kvm_set_memory_region``).

Each refusal is a ``KvmError`` carrying KVM's errno name and one sentence naming the field and
the rule; a refused call changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from engine.util.errors import KvmError

KVM_MEM_LOG_DIRTY_PAGES = 1 << 0
KVM_MEM_READONLY = 1 << 1
KVM_USER_MEM_SLOTS = 32767
KVM_MEM_MAX_NR_PAGES = (1 << 31) - 1
_KNOWN_FLAGS = KVM_MEM_LOG_DIRTY_PAGES | KVM_MEM_READONLY
_BLOCK_BACKINGS = {12: (2 << 20, 1 << 30), 14: (32 << 20,), 16: (512 << 20,)}


class MemslotChange(Enum):
    """KVM's enum kvm_mr_change."""

    CREATE = "create"
    DELETE = "delete"
    MOVE = "move"
    FLAGS_ONLY = "flags-only"
    NONE = "none"


@dataclass(frozen=True)
class Memslot:
    id: int
    base_gfn: int
    npages: int
    flags: int
    backing: int
    page_shift: int
    name: str = ""

    @property
    def base(self) -> int:
        return self.base_gfn << self.page_shift

    @property
    def size(self) -> int:
        return self.npages << self.page_shift

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def end_gfn(self) -> int:
        return self.base_gfn + self.npages

    @property
    def log_dirty(self) -> bool:
        return bool(self.flags & KVM_MEM_LOG_DIRTY_PAGES)

    @property
    def readonly(self) -> bool:
        return bool(self.flags & KVM_MEM_READONLY)

    def describe(self) -> str:
        return f"slot {self.id} [{self.base:#x}, {self.end:#x})"


@dataclass(frozen=True)
class MemslotUpdate:
    change: MemslotChange
    old: Memslot | None
    new: Memslot | None


class Memslots:
    """The VM's memslots (one address space), kept sorted by base gfn for lookups."""

    def __init__(self, page_shift: int, ipa_bits: int) -> None:
        self.page_shift = page_shift
        self.ipa_bits = ipa_bits
        self._slots: dict[int, Memslot] = {}
        self._sorted: tuple[Memslot, ...] | None = None
        self._bases = np.zeros(0, dtype=np.int64)
        self._ends = np.zeros(0, dtype=np.int64)

    def __iter__(self):
        return iter(self.sorted())

    def __len__(self) -> int:
        return len(self._slots)

    def __contains__(self, slot_id: object) -> bool:
        return slot_id in self._slots

    def get(self, slot_id: int) -> Memslot:
        if slot_id not in self._slots:
            raise KvmError("EINVAL", "slot", f"there is no memslot {slot_id}")
        return self._slots[slot_id]

    def sorted(self) -> tuple[Memslot, ...]:
        if self._sorted is None:
            self._sorted = tuple(sorted(self._slots.values(), key=lambda s: s.base_gfn))
            self._bases = np.array([s.base_gfn for s in self._sorted], dtype=np.int64)
            self._ends = np.array([s.end_gfn for s in self._sorted], dtype=np.int64)
        return self._sorted

    def total_pages(self) -> int:
        return sum(s.npages for s in self._slots.values())

    def find(self, gfns: np.ndarray) -> np.ndarray:
        """Index into ``sorted()`` of the slot holding each gfn, -1 where none does."""
        self.sorted()
        gfns = np.asarray(gfns, dtype=np.int64)
        if not self._bases.size:
            return np.full(gfns.shape, -1, dtype=np.int64)
        if self._bases.size == 1 and gfns.size:  # one slot: two comparisons, no search
            lo, hi = int(gfns.min()), int(gfns.max())
            if self._bases[0] <= lo and hi < self._ends[0]:
                return np.zeros(gfns.shape, dtype=np.int64)
        idx = np.searchsorted(self._bases, gfns, side="right") - 1
        ok = idx >= 0
        ok[ok] = gfns[ok] < self._ends[idx[ok]]
        return np.where(ok, idx, -1)

    # -- KVM_SET_USER_MEMORY_REGION --------------------------------------------------------

    def set_user_memory_region(
        self,
        slot: int,
        guest_phys_addr: int,
        memory_size: int,
        flags: int = 0,
        backing: int | None = None,
        name: str = "",
    ) -> MemslotUpdate:
        page = 1 << self.page_shift
        self._check_args(slot, guest_phys_addr, memory_size, flags, page)
        old = self._slots.get(slot)
        if memory_size == 0:
            if old is None:
                raise KvmError(
                    "EINVAL", "slot", f"slot {slot} does not exist, so it cannot be deleted"
                )
            self._commit(slot, None)
            return MemslotUpdate(MemslotChange.DELETE, old, None)
        backing = self._check_backing(
            backing if backing is not None else (old.backing if old else page)
        )
        new = Memslot(
            slot,
            guest_phys_addr >> self.page_shift,
            memory_size >> self.page_shift,
            flags,
            backing,
            self.page_shift,
            name or (old.name if old else ""),
        )
        change = self._classify(old, new)
        if change in (MemslotChange.CREATE, MemslotChange.MOVE):
            self._check_placement(new)
        if change != MemslotChange.NONE or (old is not None and new != old):
            self._commit(slot, new)
        return MemslotUpdate(change, old, new)

    def _check_args(self, slot: int, gpa: int, size: int, flags: int, page: int) -> None:
        if not 0 <= slot < KVM_USER_MEM_SLOTS:
            raise KvmError("EINVAL", "slot", f"must be 0..{KVM_USER_MEM_SLOTS - 1}, got {slot}")
        if flags & ~_KNOWN_FLAGS:
            raise KvmError(
                "EINVAL",
                "flags",
                f"{flags:#x} has unknown bits; only LOG_DIRTY_PAGES (1) and READONLY (2) exist",
            )
        if size < 0 or size % page:
            raise KvmError(
                "EINVAL", "memory_size", f"{size:#x} is not a multiple of the {page}-byte page"
            )
        if gpa < 0 or gpa % page:
            raise KvmError(
                "EINVAL", "guest_phys_addr", f"{gpa:#x} is not aligned to the {page}-byte page"
            )
        if gpa + size > (1 << 64) - 1:
            raise KvmError(
                "EINVAL", "memory_size", "guest_phys_addr + memory_size wraps around 64 bits"
            )
        if size // page > KVM_MEM_MAX_NR_PAGES:
            raise KvmError(
                "EINVAL",
                "memory_size",
                f"{size // page} pages is more than KVM_MEM_MAX_NR_PAGES (2^31 - 1)",
            )

    def _check_backing(self, backing: int) -> int:
        page = 1 << self.page_shift
        allowed = (page, *_BLOCK_BACKINGS[self.page_shift])
        if backing not in allowed:
            sizes = ", ".join(fmt_size(b) for b in allowed)
            raise KvmError(
                "EINVAL",
                "backing",
                f"{fmt_size(backing)} is not a backing page size here; use {sizes}",
            )
        return backing

    def _classify(self, old: Memslot | None, new: Memslot) -> MemslotChange:
        if old is None:
            return MemslotChange.CREATE
        if new.npages != old.npages:
            raise KvmError(
                "EINVAL",
                "memory_size",
                f"slot {old.id} exists with {old.npages} pages; an existing slot "
                "cannot be resized (delete and re-create it)",
            )
        if (new.flags ^ old.flags) & KVM_MEM_READONLY:
            raise KvmError(
                "EINVAL", "flags", "KVM_MEM_READONLY cannot be toggled on an existing slot"
            )
        if new.base_gfn != old.base_gfn:
            return MemslotChange.MOVE
        if new.flags != old.flags:
            return MemslotChange.FLAGS_ONLY
        return MemslotChange.NONE

    def _check_placement(self, new: Memslot) -> None:
        for other in self._slots.values():
            if other.id != new.id and new.base_gfn < other.end_gfn and other.base_gfn < new.end_gfn:
                raise KvmError(
                    "EEXIST",
                    "guest_phys_addr",
                    f"[{new.base:#x}, {new.end:#x}) overlaps {other.describe()}",
                )
        if new.end > 1 << self.ipa_bits:
            raise KvmError(
                "EFAULT",
                "guest_phys_addr",
                f"[{new.base:#x}, {new.end:#x}) ends beyond the {self.ipa_bits}-bit IPA space",
            )

    def _commit(self, slot: int, new: Memslot | None) -> None:
        if new is None:
            del self._slots[slot]
        else:
            self._slots[slot] = new
        self._sorted = None


def fmt_size(size: int) -> str:
    """``2MiB``, ``4KiB``, ``3 bytes``: a size the way a refusal names it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size} bytes"

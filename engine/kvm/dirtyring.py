"""Per-vCPU dirty rings (KVM_CAP_DIRTY_LOG_RING), as ``virt/kvm/dirty_ring.c`` keeps them.

A ring is a power-of-two array of ``kvm_dirty_gfn {flags, slot, offset}`` with free-running
``dirty_index`` (KVM pushes) and ``reset_index`` (KVM_RESET_DIRTY_RINGS frees); user space
collects entries in order from its own ``fetch_index``.  The soft limit is ``size - 64`` on
arm64 (no PML-style hardware log to leave room for): a vCPU that reaches it exits with
KVM_EXIT_DIRTY_RING_FULL and does not run until the rings are harvested and reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.util.errors import KvmError

RING_SLACK = 64  # KVM_DIRTY_RING_RSVD_ENTRIES; kvm_cpu_dirty_log_size() is 0 on arm64
KVM_DIRTY_RING_MAX_ENTRIES = 65536  # include/linux/kvm_dirty_ring.h
DIRTY_GFN_BYTES = 16  # sizeof(struct kvm_dirty_gfn): u32 flags, u32 slot, u64 offset
BITS_PER_LONG = 64


def ring_entry_limits(page_size: int) -> tuple[int, int]:
    """(fewest, most) entries a ring may have with this host page size (= granule on arm64).

    ``kvm_vm_ioctl_enable_dirty_log_ring`` (virt/kvm/kvm_main.c, v6.17) takes the size in
    bytes: at least ``KVM_DIRTY_RING_RSVD_ENTRIES`` entries and at least one page, at most
    ``KVM_DIRTY_RING_MAX_ENTRIES`` entries of 16 bytes.  In entries: 4K pages 256..65536,
    16K pages 1024..65536, 64K pages 4096..65536.
    """
    return max(RING_SLACK, page_size // DIRTY_GFN_BYTES), KVM_DIRTY_RING_MAX_ENTRIES


def check_ring_size(
    entries: int, page_size: int = 4096, field: str = "tracking.ring_entries"
) -> int:
    """KVM_ENABLE_CAP(KVM_CAP_DIRTY_LOG_RING_ACQ_REL, entries × 16 bytes), as v6.17 checks it.

    Raises KvmError: EINVAL when the byte size is not a power of two or is smaller than the
    reserved entries or one page; E2BIG when it is more than 65,536 entries (1 MiB).
    """
    lo, hi = ring_entry_limits(page_size)
    size = entries * DIRTY_GFN_BYTES
    if entries <= 0 or entries & (entries - 1):
        raise KvmError("EINVAL", field, f"must be a power of two, got {entries}")
    if entries < lo:
        raise KvmError(
            "EINVAL",
            field,
            f"{entries} entries ({size} bytes) is less than one {page_size}-byte page of "
            f"16-byte entries; at least {lo}",
        )
    if entries > hi:
        raise KvmError(
            "E2BIG", field, f"{entries} entries is more than KVM_DIRTY_RING_MAX_ENTRIES ({hi})"
        )
    return entries


@dataclass
class DirtyRing:
    size: int
    dirty_index: int = 0
    fetch_index: int = 0
    reset_index: int = 0

    def __post_init__(self) -> None:
        if self.size <= RING_SLACK or self.size & (self.size - 1):
            raise ValueError(f"a ring needs a power-of-two size above {RING_SLACK}")
        self.slot = np.zeros(self.size, dtype=np.uint32)
        self.offset = np.zeros(self.size, dtype=np.uint64)

    @property
    def soft_limit(self) -> int:
        return self.size - RING_SLACK

    @property
    def used(self) -> int:
        """Entries pushed and not yet reset (what counts against the soft limit)."""
        return self.dirty_index - self.reset_index

    @property
    def soft_full(self) -> bool:
        return self.used >= self.soft_limit

    def room(self) -> int:
        """Pushes left before the vCPU must exit."""
        return max(0, self.soft_limit - self.used)

    def push(self, slot: np.ndarray, offset: np.ndarray) -> None:
        """kvm_dirty_ring_push for a batch, in order; a hard-full ring would be a KVM bug."""
        n = int(offset.size)
        if self.used + n > self.size:
            raise RuntimeError("dirty ring overflow: the soft limit was not honoured")
        done = 0
        for lo, hi in self._spans(self.dirty_index, self.dirty_index + n):
            self.slot[lo:hi] = slot[done : done + hi - lo]
            self.offset[lo:hi] = offset[done : done + hi - lo]
            done += hi - lo
        self.dirty_index += n

    def collect(self) -> tuple[np.ndarray, np.ndarray]:
        """User space harvests DIRTY entries in order and flags them RESET."""
        out = self._entries(self.fetch_index, self.dirty_index)
        self.fetch_index = self.dirty_index
        return out

    def reset_entries(self) -> tuple[np.ndarray, np.ndarray]:
        """KVM_RESET_DIRTY_RINGS: the harvested entries to re-protect, freeing their room."""
        out = self._entries(self.reset_index, self.fetch_index)
        self.reset_index = self.fetch_index
        return out

    def _spans(self, first: int, end: int) -> list[tuple[int, int]]:
        """The array slices that hold free-running indices [first, end), in order (one, or
        two where they wrap; ``end - first`` is at most the size)."""
        lo, n = first & (self.size - 1), end - first
        if lo + n <= self.size:
            return [(lo, lo + n)]
        return [(lo, self.size), (0, lo + n - self.size)]

    def _entries(self, first: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the (slot, offset) entries at free-running indices [first, end)."""
        spans = self._spans(first, end)
        slot = np.concatenate([self.slot[lo:hi] for lo, hi in spans])
        offset = np.concatenate([self.offset[lo:hi] for lo, hi in spans])
        return slot, offset


def merge_masks(
    slot: np.ndarray, offset: np.ndarray, rings: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """kvm_dirty_ring_reset's merging: consecutive same-slot entries into (slot, offset, mask).

    An entry within 64 pages above the current offset joins the mask; one a little below it
    shifts the mask down if no bit would fall off ("backwards visit"); anything else flushes.

    The loop is sequential, but where it must flush is known in advance: the current offset
    is always within 63 pages below the previous entry, so an entry of another slot, 64 or
    more pages above the previous one or 127 or more below it starts a new mask whatever came
    before.  Entries between such breaks that stand alone (the rule for randomly dirtied
    memory) become masks of one bit at once; only runs of nearby entries take the loop.
    Several rings' entries may come in one call, one ring after another, ``rings`` giving
    the index of each ring's first entry: each ring's loop starts afresh there (the reset
    walks one ring at a time), so the result is the rings' own results one after another.
    Returns the masks in ring order as (slots, offsets, masks) arrays.
    """
    n = slot.size
    s, off = slot.astype(np.int64), offset.astype(np.int64)
    brk = np.ones(n, dtype=bool)
    d = np.diff(off)
    brk[1:] = (s[1:] != s[:-1]) | (d >= BITS_PER_LONG) | (d <= -2 * BITS_PER_LONG + 1)
    if rings is not None:
        brk[rings[rings < n]] = True
    starts = np.flatnonzero(brk)
    lengths = np.diff(np.append(starts, n))
    runs = np.flatnonzero(lengths > 1)
    if not runs.size:
        return s[starts].astype(np.uint32), off[starts], np.ones(starts.size, dtype=np.uint64)
    merged = [
        list(_merge_run(s[a : a + k].tolist(), off[a : a + k].tolist()))
        for a, k in zip(starts[runs].tolist(), lengths[runs].tolist(), strict=True)
    ]
    count = np.ones(starts.size, dtype=np.int64)
    count[runs] = [len(m) for m in merged]
    at = np.cumsum(count) - count  # where each break's masks go
    out_s = np.repeat(s[starts], count)
    out_off = np.repeat(off[starts], count)
    out_mask = np.ones(int(count.sum()), dtype=np.uint64)
    where = np.concatenate(
        [np.arange(a, a + len(m)) for a, m in zip(at[runs], merged, strict=True)]
    )
    flat = [x for m in merged for x in m]
    out_off[where] = [o for _, o, _ in flat]
    out_mask[where] = np.array([m for _, _, m in flat], dtype=np.uint64)
    return out_s.astype(np.uint32), out_off, out_mask


def _merge_run(slot: list[int], offset: list[int]) -> Iterator[tuple[int, int, int]]:
    """The loop itself, over a run of entries of one slot."""
    cur_slot = cur_off = mask = 0
    for s, off in zip(slot, offset, strict=True):
        if mask:
            if s == cur_slot:
                delta = off - cur_off
                if 0 <= delta < BITS_PER_LONG:
                    mask |= 1 << delta
                    continue
                if -BITS_PER_LONG < delta < 0 and (mask << -delta) < (1 << BITS_PER_LONG):
                    cur_off = off
                    mask = (mask << -delta) | 1
                    continue
            yield cur_slot, cur_off, mask
        cur_slot, cur_off, mask = s, off, 1
    if mask:
        yield cur_slot, cur_off, mask

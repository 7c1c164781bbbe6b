"""The VM: stage-2 tables, memslots, dirty tracking and the guest's memory content.

The guest write path takes a time-ordered batch of accesses and does, vectorised, what
``user_mem_abort`` and the hardware do for each page: map on a translation fault (a block
where the backing allows and the slot is not logging), relax a write-protected page and mark
it dirty, split a write-protected block (break-before-make; neighbours fault in lazily), let a
writable-clean DBM page turn dirty without a fault.  Content is a ``uint32`` version per page
that every applied write increments, so a migration can be verified page by page.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace

import numpy as np

from engine.kvm import oplog as OL
from engine.kvm.costs import CostModel
from engine.kvm.dirtylog import set_bits
from engine.kvm.dirtyring import DirtyRing, check_ring_size
from engine.kvm.memslots import (
    KVM_MEM_LOG_DIRTY_PAGES,
    KVM_MEM_READONLY,
    Memslot,
    MemslotChange,
    Memslots,
    MemslotUpdate,
    fmt_size,
)
from engine.kvm.wrprotect import STRATEGIES
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import unmap_range
from engine.util.arrays import first_of_runs, unique_fast
from engine.util.errors import ConfigError, KvmError
from engine.util.scatter import add_counts

MODES = ("bitmap", "manual-clear", "ring", "dbm")
U64 = np.uint64


@dataclass(frozen=True)
class Tracking:
    """How dirty pages are tracked (the session's ``tracking`` object)."""

    mode: str = "bitmap"
    strategy: str = "range"
    ring_entries: int = 4096
    eager_split: int = 0  # KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE in bytes; 0 = off
    initially_set: bool = False  # KVM_DIRTY_LOG_INITIALLY_SET (manual-clear only)
    compare: bool = False  # also run every other strategy on scratch copies

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                "tracking.mode", f"must be one of {', '.join(MODES)}, got {self.mode!r}"
            )
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                "tracking.strategy",
                f"must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}",
            )
        if self.initially_set and self.mode != "manual-clear":
            raise ConfigError(
                "tracking.initially_set",
                "needs mode manual-clear (INITIALLY_SET requires MANUAL_PROTECT_ENABLE)",
            )
        if self.eager_split < 0:
            raise ConfigError("tracking.eager_split", "must be 0 (off) or a size such as 2MiB")
        # the ring size and the eager-split chunk depend on the granule: the VM checks them

    @property
    def manual(self) -> bool:
        return self.mode == "manual-clear"


@dataclass
class SlotState:
    """Per-slot state: content versions, the dirty bitmap while logging."""

    slot: Memslot
    version: np.ndarray
    bitmap: np.ndarray | None = None
    logging: bool = False

    @property
    def nwords(self) -> int:
        return (self.slot.npages + 63) // 64


@dataclass
class AccessResult:
    """What a batch of guest accesses cost, per vCPU, and what had to wait."""

    faults: np.ndarray  # stage-2 fault exits per vCPU
    dirty_events: np.ndarray  # pages marked dirty (bitmap bit or ring push) per vCPU
    applied_writes: int = 0
    deferred: np.ndarray | None = None  # indices of accesses held back by a full ring
    ring_full: set[int] = field(default_factory=set)


class VM:
    """Tables + memslots + tracking + content for one simulated guest."""

    def __init__(
        self,
        geom: Geometry,
        tracking: Tracking | None = None,
        costs: CostModel | None = None,
        nr_vcpus: int = 1,
    ) -> None:
        self.geom = geom
        self.tracking = tracking or Tracking()
        self.costs = costs or CostModel()
        self.nr_vcpus = nr_vcpus
        need_rmap = self.tracking.strategy == "rmap" or self.tracking.compare
        self.pgt = PageTable(geom, rmap=need_rmap)
        self.memslots = Memslots(geom.page_shift, geom.ipa_bits)
        self.slots: dict[int, SlotState] = {}
        self.enable_eager_split(self.tracking.eager_split)
        if self.tracking.mode == "ring":
            check_ring_size(self.tracking.ring_entries, geom.granule)
        self.rings = (
            [DirtyRing(self.tracking.ring_entries) for _ in range(nr_vcpus)]
            if (self.tracking.mode == "ring")
            else []
        )
        self.stats: Counter[str] = Counter()
        self.op_log: list = []  # OpStats of tracking operations (emptied at each batch's start)
        self.oplog: list | None = None  # engine.kvm.oplog records, when a replay asks for them
        self.awaiting_retry = False  # the last access batch ended in a ring-full exit
        self._ring_marks: list[np.ndarray] = []  # pages to push, gathered over one _apply

    def enable_eager_split(self, chunk: int, field: str = "tracking.eager_split") -> None:
        """KVM_ENABLE_CAP(KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE, chunk) as v6.17 checks it.

        ``kvm_vm_ioctl_enable_cap`` (arch/arm64/kvm/arm.c) refuses with EINVAL while any
        memslot exists, and a non-zero chunk that is not a size ``kvm_is_block_size_supported``
        accepts: the page or a block size of the granule (4K: 4KiB, 2MiB, 1GiB; 16K: 16KiB,
        32MiB; 64K: 64KiB, 512MiB; ``kvm_supported_block_sizes`` in kvm_pgtable.h).
        """
        if len(self.memslots):
            raise KvmError(
                "EINVAL", field, "the eager-split chunk can only be set while no memslot exists"
            )
        allowed = eager_split_sizes(self.geom)
        if chunk and chunk not in allowed:
            sizes = ", ".join(fmt_size(a) for a in allowed)
            raise KvmError(
                "EINVAL",
                field,
                f"{fmt_size(chunk)} is not 0 or a block size of the "
                f"{fmt_size(self.geom.granule)} granule ({sizes})",
            )
        self.tracking = replace(self.tracking, eager_split=chunk)

    @property
    def page_shift(self) -> int:
        return self.geom.page_shift

    @property
    def page_size(self) -> int:
        return self.geom.granule

    # -- memslots ----------------------------------------------------------------------------

    def set_memslot(
        self,
        slot_id: int,
        base: int,
        size: int,
        flags: int = 0,
        backing: int | None = None,
        name: str = "",
        populate: bool = False,
    ) -> MemslotUpdate:
        """KVM_SET_USER_MEMORY_REGION and what the arch code does after it."""
        if backing is not None:
            self.geom.leaf_level_for(backing)
        mark = len(self.op_log)
        update = self.memslots.set_user_memory_region(slot_id, base, size, flags, backing, name)
        self._commit(update, populate)
        if self.oplog is not None:
            s = update.new or update.old
            self.oplog.append(
                OL.SetMemslot(
                    slot_id,
                    base >> self.page_shift,
                    size >> self.page_shift,
                    flags,
                    s.backing if s is not None else self.page_size,
                    populate and update.change == MemslotChange.CREATE,
                    OL.model_ns_since(self, mark),
                )
            )
        return update

    def _commit(self, update: MemslotUpdate, populate: bool) -> None:
        old, new = update.old, update.new
        change = update.change
        if change in (MemslotChange.DELETE, MemslotChange.MOVE) and old is not None:
            unmap_range(self.pgt, old.base, old.size)
            state = self.slots.pop(old.id)
        if change == MemslotChange.CREATE and new is not None:
            self.slots[new.id] = SlotState(new, np.zeros(new.npages, dtype=np.uint32))
            if populate:
                self.populate(new.id)
        elif change == MemslotChange.MOVE and new is not None:
            # kvm_prepare_memory_region: a slot that logs before and after keeps its bitmap
            keep = new.log_dirty and state.bitmap is not None
            self.slots[new.id] = SlotState(
                new, state.version, state.bitmap if keep else None, keep and not new.readonly
            )
        elif change == MemslotChange.FLAGS_ONLY and new is not None:
            self.slots[new.id].slot = new
        if new is not None and change != MemslotChange.NONE:
            self._sync_logging(self.slots[new.id])

    def populate(self, slot_id: int) -> None:
        """Fault in every page of a slot, as a guest that touched all its memory would have."""
        st = self.slots[slot_id]
        s = st.slot
        writable = not s.readonly
        if st.logging:
            self.pgt.map_range(s.base, s.size, None, writable=False, extra=self._dbm_bits())
        else:
            self.pgt.map_range(s.base, s.size, s.backing, writable=writable)

    def _dbm_bits(self) -> int:
        return D.DBM if self.tracking.mode == "dbm" else 0

    # -- logging on/off ----------------------------------------------------------------------

    def _sync_logging(self, st: SlotState) -> None:
        """Logging follows KVM_MEM_LOG_DIRTY_PAGES.  A READONLY slot with the flag gets a
        bitmap too (``kvm_prepare_memory_region`` allocates it, all ones with INITIALLY_SET)
        but is never write-protected (``memslot_is_logging`` is false for it, mmu.c v6.17):
        its GET answers instead of ENOENT."""
        from engine.kvm.dirtylog import disable_logging, enable_logging, set_all

        want = st.slot.log_dirty and not st.slot.readonly
        if want and not st.logging:
            enable_logging(self, st)
        elif st.logging and not want:
            disable_logging(self, st)
        if st.slot.log_dirty and st.slot.readonly and st.bitmap is None:
            st.bitmap = np.zeros(st.nwords, dtype=U64)
            if self.tracking.manual and self.tracking.initially_set:
                set_all(st.bitmap, st.slot.npages)
        elif not st.slot.log_dirty:
            st.bitmap = None

    def slot_of_ipa(self, ipa: int) -> SlotState | None:
        idx = self.memslots.find(np.array([ipa >> self.page_shift], dtype=np.int64))[0]
        return None if idx < 0 else self.slots[self.memslots.sorted()[idx].id]

    # -- the guest write path ----------------------------------------------------------------

    def access(
        self, gfn: np.ndarray, vcpu: np.ndarray, write: np.ndarray, retried: int = 0
    ) -> AccessResult:
        """Apply a time-ordered batch of guest accesses; see the module docstring.  The first
        ``retried`` are accesses the last ring-full exit held back, given again (the
        operation log says so: a replay leaves them to the real vCPU).

        A batch of more than ``ACCESS_SLICE`` accesses is applied a slice at a time, in order
        (each slice sees what the ones before it did, as one batch would): the temporaries of
        a slice stay small enough to reuse, where those of a 16 M-access batch were fresh
        memory that the kernel zeroed for every array operation (half the run time).
        """
        res = AccessResult(np.zeros(self.nr_vcpus, np.int64), np.zeros(self.nr_vcpus, np.int64))
        gfn = np.asarray(gfn, dtype=np.int64)
        vcpu = np.asarray(vcpu, dtype=np.int64)
        write = np.asarray(write, dtype=bool)
        deferred = []
        for lo in range(0, gfn.size, ACCESS_SLICE):
            hi = lo + ACCESS_SLICE
            part = self._access_slice(gfn[lo:hi], vcpu[lo:hi], write[lo:hi])
            res.faults += part.faults
            res.dirty_events += part.dirty_events
            res.applied_writes += part.applied_writes
            res.ring_full |= part.ring_full
            if part.deferred is not None:
                deferred.append(part.deferred + lo)
        if deferred:
            res.deferred = np.concatenate(deferred)
        if self.oplog is not None:
            self.oplog.append(
                OL.Access(
                    OL.frozen(gfn),
                    OL.frozen(write),
                    OL.frozen(vcpu),
                    int(res.faults.sum()),
                    tuple(sorted(res.ring_full)),
                    retried=retried,
                )
            )
        # a ring-full exit: the caller reaps the rings and re-issues the deferred accesses
        self.awaiting_retry = res.deferred is not None and bool(res.deferred.size)
        return res

    def _access_slice(self, gfn: np.ndarray, vcpu: np.ndarray, write: np.ndarray) -> AccessResult:
        res = AccessResult(np.zeros(self.nr_vcpus, np.int64), np.zeros(self.nr_vcpus, np.int64))
        slots = self.memslots.sorted()
        sidx = self.memslots.find(gfn)
        mmio = sidx < 0
        ok = ~mmio
        self.stats["mmio_exits"] += gfn.size - int(np.count_nonzero(ok))
        if any(s.readonly for s in slots):
            readonly = np.array([s.readonly for s in slots] + [False], dtype=bool)[sidx]
            user = ok & readonly & write
            self.stats["user_exits"] += int(np.count_nonzero(user))
            ok &= ~user
        else:
            self.stats["user_exits"] += 0  # (reported as 0 rather than missing)
        host = ok & (vcpu < 0)
        if host.any():  # no running vCPU: kvm_write_guest, no stage-2 access at all
            self._host_writes(gfn[host], write[host], sidx[host], slots, res)
            ok &= ~host
        done = probe = None
        if self.rings:
            ok, retry, probe = self._ring_admission(gfn, vcpu, write, sidx, ok, res)
            done = ~retry if retry.any() else None
        if ok.all():  # (the common case: no gathers)
            self._apply(gfn, vcpu, write, sidx, slots, res, done, probe)
        else:
            keep = np.flatnonzero(ok)
            done = None if done is None else done[keep]
            args = gfn[keep], vcpu[keep], write[keep], sidx[keep]
            self._apply(*args, slots, res, done, probe)
        return res

    def _host_writes(self, gfn, write, sidx, slots: tuple[Memslot, ...], res: AccessResult) -> None:
        """Writes with no running vCPU (``kvm_write_guest`` → ``mark_page_dirty_in_slot``).

        The page's content changes and a logging slot's bitmap gets the bit (in ring mode
        the ring-with-bitmap backup bitmap, ``kvm_dirty_ring_check_request``'s companion for
        arm64's vgic/ITS saves); stage 2 is not touched, so a later vCPU write to a
        write-protected page still faults and is logged again (virt/kvm/kvm_main.c, v6.17).
        """
        gfn, sidx = gfn[write], sidx[write]
        if not gfn.size:
            return
        self._bump_versions(gfn, np.ones(gfn.size, dtype=bool), sidx, slots)
        res.applied_writes += int(gfn.size)
        self.stats["host_writes"] += int(gfn.size)
        for i, sel in _per_slot(sidx):
            st = self.slots[slots[i].id]
            if st.bitmap is not None:
                set_bits(st.bitmap, gfn[sel] - st.slot.base_gfn)

    def _apply(
        self,
        gfn,
        vcpu,
        write,
        sidx,
        slots: tuple[Memslot, ...],
        res: AccessResult,
        done=None,
        probe: _Probe | None = None,
    ) -> None:
        """Guest accesses in time order; ``done`` is False for a write whose fault is handled
        but whose store has not happened yet (a ring-full exit: it is retried).  ``probe``:
        these accesses' pages and leaves, when the ring admission has looked them up."""
        if not gfn.size:
            return
        one_slot = len(slots) == 1  # (every admitted access is in slot index 0)
        if probe is None:
            probe = self._probe(gfn, vcpu, write, sidx, slots)
        pages = probe.pages
        if done is None and pages.writes is not None:  # every access stored: counted per page
            self._bump_page_versions(pages, slots)
            res.applied_writes += int(gfn.size)
        else:
            stored = write if done is None else write & done
            self._bump_versions(gfn, stored, sidx, slots)
            res.applied_writes += int(stored.sum())
        slot_logging = np.array([self.slots[s.id].logging for s in slots], dtype=bool)
        logging = _gather(slot_logging, pages.sidx)
        ipa = pages.gfn << self.page_shift  # (distinct, ascending)
        level, pos, desc = probe.level, probe.pos, probe.desc
        valid = D.is_valid(desc)
        split = 0  # blocks split by a write
        # a write to a write-protected block while logging: break it, pages fault in lazily
        blocks = level < 3  # (tested first: a batch of pages has no block, and is done)
        if blocks.any():
            blocks &= pages.written & logging & valid & ~D.is_writable(desc)
        if blocks.any():
            early = self._read_through_blocks(gfn, pages, blocks, pos, level)
            split = self._split_for_write(pos[blocks], level[blocks])
            if early.any():  # those reads happened before the split: they leave no trace
                keep = ~early
                gfn, vcpu, write, sidx = gfn[keep], vcpu[keep], write[keep], sidx[keep]
                pages = _Pages.group(gfn, vcpu, write, sidx, bool(self.rings), one_slot)
                logging = slot_logging[pages.sidx]
                ipa = pages.gfn << self.page_shift
            level, pos, desc = self.pgt.lookup(ipa, ascending=True)
            valid = D.is_valid(desc)
        refault = self._collapsible(pages, valid, level, desc, logging, slots)
        self._ring_marks = []
        if not refault.any():
            mapped = not valid.all()  # translation faults write the table: read it again
            self._translation_faults(pages, ~valid, logging, slots, res)
            self._permission_faults(pages, valid, level, pos, desc, logging, res, mapped)
        else:
            # not logging (any more): a write to a read-only page where the backing allows a
            # block maps the block again, replacing the table a split left (user_mem_abort:
            # vma_pagesize > fault_granule → kvm_pgtable_stage2_map); it is handled as the
            # translation faults are, and the rest is looked up again after the collapse
            handled = ~valid | refault
            self._translation_faults(pages, handled, logging, slots, res, refault)
            level, pos, desc = self.pgt.lookup(ipa, ascending=True)
            valid = D.is_valid(desc) & ~handled
            self._permission_faults(pages, valid, level, pos, desc, logging, res, False)
        if split:  # each block's splitting write faulted on a valid read-only leaf: a
            # permission fault (ESR FSC_PERM), counted above with the block's pages that
            # fault on the empty table the split left (translation faults)
            self.stats["translation_faults"] -= split
            self.stats["permission_faults"] += split
        if self._ring_marks:  # pushed in the order of the writes, whichever fault they took
            self._push_rings(pages, np.concatenate(self._ring_marks), slots)

    def _probe(self, gfn, vcpu, write, sidx, slots: tuple[Memslot, ...]) -> _Probe:
        """A batch's pages (``_Pages.group``) and the leaf each one's walk reaches now."""
        pages = _Pages.group(gfn, vcpu, write, sidx, bool(self.rings), len(slots) == 1)
        level, pos, desc = self.pgt.lookup(pages.gfn << self.page_shift, ascending=True)
        return _Probe(pages, level, pos, desc)

    def _read_through_blocks(self, gfn, pages: _Pages, blocks, pos, level) -> np.ndarray:
        """Which accesses (bool, per access of the batch) a write-protected block served
        before the first write that splits it: reads through its read-only mapping, which
        fault nowhere and change nothing.  After the split the block's pages are unmapped
        and each faults in at its next access, as when the accesses come one at a time
        (user_mem_abort, arch/arm64/kvm/mmu.c, v6.17: a write fault on a read-only block
        while logging maps one page in its place)."""
        at, t, lv = pos[blocks], pages.t_write[blocks], level[blocks]
        order = np.lexsort((t, at))  # per block: its earliest write first
        first = order[first_of_runs(at[order])]
        start = np.asarray(self.pgt.entry_ipa(at[first])) >> self.page_shift
        end = start + (np.int64(1) << (self.geom.level_shift_array[lv[first]] - self.page_shift))
        by_start = np.argsort(start)
        start, end, split_t = start[by_start], end[by_start], t[first][by_start]
        k = np.maximum(np.searchsorted(start, gfn, "right") - 1, 0)
        inside = (gfn >= start[k]) & (gfn < end[k])
        return inside & (np.arange(gfn.size) < split_t[k])

    def _collapsible(self, pages, valid, level, desc, logging, slots) -> np.ndarray:
        """Written read-only pages of slots that do not log, inside a block the backing and
        the slot allow: their fault maps that block (the smallest block level decides)."""
        if logging.all():  # (the usual batch: every page in a logging slot)
            return np.zeros(pages.gfn.size, dtype=bool)
        cand = pages.written & valid & (level == 3) & ~logging & ~D.is_writable(desc)
        if not cand.any():
            return cand
        npg = self.geom.level_size(max(self.geom.block_levels)) >> self.page_shift
        backing = np.array([s.backing for s in slots], dtype=np.int64)[pages.sidx]
        base = np.array([s.base_gfn for s in slots], dtype=np.int64)[pages.sidx]
        end = np.array([s.end_gfn for s in slots], dtype=np.int64)[pages.sidx]
        start = pages.gfn // npg * npg
        fits = (backing >= npg << self.page_shift) & (start >= base) & (start + npg <= end)
        return cand & fits

    def _bump_versions(self, gfn, write, sidx, slots: tuple[Memslot, ...]) -> None:
        """Add every write to its page's version (what the destination must end up with)."""
        if not write.all():
            gfn, sidx = gfn[write], sidx[write]
        for i, sel in _per_slot(sidx, len(slots)):
            slot = slots[i]
            add_counts(self.slots[slot.id].version, gfn[sel] - slot.base_gfn)

    def _bump_page_versions(self, pages: _Pages, slots: tuple[Memslot, ...]) -> None:
        """``_bump_versions`` for a batch of writes only, from its per-page write counts
        (the pages are distinct: one scatter, no sort)."""
        assert pages.writes is not None
        for i, sel in _per_slot(pages.sidx, len(slots)):
            slot = slots[i]
            version = self.slots[slot.id].version
            where = pages.gfn[sel] - slot.base_gfn
            writes = pages.writes[sel].astype(version.dtype, copy=False)
            version[where] += writes  # wraps as += does

    def _split_for_write(self, pos: np.ndarray, levels: np.ndarray) -> int:
        """user_mem_abort on a write to a read-only block while logging (a permission fault;
        force_pte maps one page): BBM, install an empty table.  Returns the blocks split."""
        split = 0
        for lv in unique_fast(levels):
            at = unique_fast(pos[levels == lv])
            self.pgt.split_blocks(at, int(lv), populate=False)
            split += int(at.size)
        self.stats["block_splits"] += split
        return split

    def _translation_faults(
        self, pages, missing, logging, slots, res: AccessResult, refault=None
    ) -> None:
        """Map what faulted: pages (RO on reads) while logging, blocks where allowed if not.
        ``refault``: pages among ``missing`` whose write found a valid read-only leaf and
        maps a block again; their exits are permission faults (ESR FSC_PERM), not
        translation faults, though they are handled here."""
        if not missing.any():
            return
        idx = np.flatnonzero(missing)
        log = logging[idx]
        # while logging: a read maps read-only (so the first write still traps), a write RW
        for writable in (False, True):
            sel = idx[log & (pages.written[idx] == writable)]
            if sel.size:
                self.pgt.map_leaves(
                    pages.gfn[sel] << self.page_shift, 3, writable, self._dbm_bits()
                )
        # a page read first and then written takes a second fault (translation, then permission)
        read_then_write = idx[log & pages.written[idx] & ~pages.first_is_write[idx]]
        if self.tracking.mode == "dbm" and read_then_write.size:
            # the read mapped it writable-clean (DBM): the write turns it dirty with no exit,
            # as _permission_faults does for a leaf found so
            self.stats["dbm_dirty"] += int(read_then_write.size)
            read_then_write = read_then_write[:0]
        faulting = np.concatenate([idx[log], self._map_unlogged(pages, idx[~log], slots)])
        self._count_faults(pages.vcpu_first[faulting], res)
        self._count_faults(pages.vcpu_write[read_then_write], res)
        perm = 0 if refault is None else int(refault[faulting].sum())
        self.stats["translation_faults"] += int(faulting.size) - perm
        self.stats["permission_faults"] += int(read_then_write.size) + perm
        self.pgt.tlbi["ipa"] += int(read_then_write.size)
        dirty = idx[log & pages.written[idx]]
        self._mark_dirty(pages, dirty, slots, res)

    def _map_unlogged(
        self, pages: _Pages, idx: np.ndarray, slots: tuple[Memslot, ...]
    ) -> np.ndarray:
        """Not logging: map the largest leaf the backing allows that fits inside the slot.

        Returns the pages that took the faults: one per leaf mapped (the first page touched
        in it); the other pages of a new block find it mapped.
        """
        if not idx.size:
            return idx
        g = self.geom
        remaining = idx
        faulting = []
        backing = np.array([s.backing for s in slots], dtype=np.int64)
        base = np.array([s.base_gfn for s in slots], dtype=np.int64)
        end = np.array([s.end_gfn for s in slots], dtype=np.int64)
        for level in sorted(g.block_levels):
            npg = g.level_size(level) >> self.page_shift
            sl = pages.sidx[remaining]
            start = (pages.gfn[remaining] // npg) * npg
            fits = (backing[sl] >= npg << self.page_shift) & (start >= base[sl])
            fits &= start + npg <= end[sl]
            faulting.append(
                self._map_leaves_for(remaining[fits], start[fits], sl[fits], pages, slots, level)
            )
            remaining = remaining[~fits]
        faulting.append(
            self._map_leaves_for(
                remaining, pages.gfn[remaining], pages.sidx[remaining], pages, slots, 3
            )
        )
        return np.concatenate(faulting)

    def _map_leaves_for(self, idx, leaf_gfn, sidx, pages: _Pages, slots, level: int) -> np.ndarray:
        """Map each distinct leaf once (read-only in readonly slots); the earliest page faults.
        ``idx`` ascending (so ``leaf_gfn``, each page's leaf, is too: _map_unlogged keeps the
        order of the pages, which are distinct gfns ascending)."""
        if not idx.size:
            return idx
        # each leaf's pages are a run: its owner is the run's earliest access (a minimum over
        # (time, position) keys per run, no sort)
        starts = np.flatnonzero(first_of_runs(leaf_gfn))
        n = idx.size
        keys = pages.t_first[idx] * n + np.arange(n, dtype=np.int64)
        at = np.minimum.reduceat(keys, starts) % n
        leaves, owners, owner_slots = leaf_gfn[starts], idx[at], sidx[at]
        ro = np.array([s.readonly for s in slots], dtype=bool)[owner_slots]
        for flag in (False, True):
            sel = leaves[ro == flag]
            if sel.size:
                self.pgt.map_leaves(sel << self.page_shift, level, writable=not flag)
                if level < 3:
                    self.stats["block_maps"] += int(sel.size)
        return owners

    def _permission_faults(self, pages, valid, level, pos, desc, logging, res, stale) -> None:
        """Writes that found a valid leaf without S2AP W.  ``desc`` is what the table holds
        at ``pos`` unless ``stale`` (translation faults mapped leaves since it was read)."""
        w = pages.written & valid & ~D.is_writable(desc)
        if self.tracking.mode == "dbm":
            clean = w & ((desc & U64(D.DBM)) != 0)
            if clean.any():  # hardware marks writable-clean → writable-dirty: no exit
                flat = self.pgt.flat
                p = unique_fast(pos[clean])
                flat[p] = flat[p] | U64(D.S2AP_W)
                self.stats["dbm_dirty"] += int(clean.sum())
            w &= ~clean
        if not w.any():
            return
        idx = np.flatnonzero(w)
        owners = idx  # a page leaf is one page: its write faults
        in_block = level[idx] < 3 if bool((level < 3).any()) else None
        if in_block is not None and in_block.any():
            # one fault per block: the earliest write to a read-only block relaxes it for
            # the rest of its pages
            b = idx[in_block]
            order = b[np.lexsort((pages.t_write[b], pos[b]))]
            owners = np.concatenate([idx[~in_block], order[first_of_runs(pos[order])]])
        every = owners.size == pos.size  # (every page of the batch: no gathers)
        p = pos if every else pos[owners]
        # kvm_pgtable_stage2_relax_perms (the DBM pass above changed only other leaves)
        old = self.pgt.flat[p] if stale else desc if every else desc[owners]
        self.pgt.flat[p] = old | U64(D.S2AP_W)
        self.pgt.tlbi["ipa"] += int(p.size)  # __kvm_tlb_flush_vmid_ipa_nsh
        writers = pages.per_writer(owners, self.nr_vcpus)
        res.faults += writers
        self.stats["permission_faults"] += int(owners.size)
        dirty = idx if logging.all() else idx[logging[idx]]
        # (every faulting page is a dirty one: the same count per vCPU)
        self._mark_dirty(
            pages, dirty, self.memslots.sorted(), res, writers if dirty is owners else None
        )

    def _count_faults(self, vcpus: np.ndarray, res: AccessResult) -> None:
        v = vcpus[vcpus >= 0]
        res.faults += np.bincount(v, minlength=self.nr_vcpus)[: self.nr_vcpus]

    # -- dirty marking -----------------------------------------------------------------------

    def _mark_dirty(
        self, pages: _Pages, idx: np.ndarray, slots, res: AccessResult, writers=None
    ) -> None:
        """mark_page_dirty_in_slot: the ring of the running vCPU, else the bitmap.
        ``writers``: ``pages.per_writer(idx)``, when the caller has counted it."""
        if not idx.size or self.tracking.mode == "dbm":
            return
        res.dirty_events += pages.per_writer(idx, self.nr_vcpus) if writers is None else writers
        if self.rings:
            running = pages.running_writer(idx)
            if running.all():  # (every page written by a running vCPU: no bitmap)
                self._ring_marks.append(idx)
                return
            self._ring_marks.append(idx[running])  # pushed at the end of _apply
            idx = idx[~running]  # no running vCPU: the backup bitmap (ring-with-bitmap)
            if not idx.size:
                return
        every = idx.size == pages.gfn.size  # (distinct page indices: all of them, in order)
        for i, sel in _per_slot(pages.sidx[idx] if len(slots) > 1 else idx, len(slots)):
            slot = slots[i]
            rel = (pages.gfn[sel] if every else pages.gfn[idx[sel]]) - slot.base_gfn
            bitmap = self.slots[slot.id].bitmap
            if bitmap is not None:
                set_bits(bitmap, rel)

    def _push_rings(self, pages: _Pages, idx: np.ndarray, slots) -> None:
        """Push each page's entry to the ring of the vCPU that first wrote it, in the order
        of those writes.  A page's first write is one access of the batch, so the pages'
        first-write indices are distinct: ``_in_time_order`` lists the pages in time order
        without a comparison sort, and a stable split by vCPU (numpy's radix sort of 16-bit
        ids) keeps that order in every ring (the sort of packed keys it replaces was the
        larger part of the pushes' CPU time in ring mode)."""
        n = idx.size
        order = _in_time_order(pages.t_write[idx], idx)
        if pages.writer is None:
            vcpu = pages.vcpu_write[order]
            order = order[np.argsort(vcpu.astype(np.int16), kind="stable")]
            counts = np.bincount(vcpu, minlength=self.nr_vcpus).tolist()
        else:  # one vCPU wrote every page
            counts = [0] * self.nr_vcpus
            counts[pages.writer] = n
        sidx = pages.sidx[order]
        if len(slots) == 1:
            slot_ids = np.full(n, slots[0].id, dtype=np.uint32)
            rel = (pages.gfn[order] - slots[0].base_gfn).astype(U64)
        else:
            slot_ids = np.array([s.id for s in slots], dtype=np.uint32)[sidx]
            base = np.array([s.base_gfn for s in slots], np.int64)[sidx]
            rel = (pages.gfn[order] - base).astype(U64)
        lo = 0
        for v, c in enumerate(counts):
            if c:
                self.rings[v].push(slot_ids[lo : lo + c], rel[lo : lo + c])
                lo += c
        self.stats["ring_pushes"] += n

    def _ring_admission(
        self, gfn, vcpu, write, sidx, ok, res: AccessResult
    ) -> tuple[np.ndarray, np.ndarray, _Probe | None]:
        """Which accesses run before each vCPU's ring reaches its soft limit, and which one
        filled it.

        ``kvm_dirty_ring_push`` raises KVM_REQ_DIRTY_RING_SOFT_FULL on the push that fills the
        ring; the vCPU leaves with KVM_EXIT_DIRTY_RING_FULL before it re-enters the guest, so
        the faulting store has not happened yet.  User space resets the ring (which
        write-protects that page again) and the store is retried: it faults and pushes the
        same page a second time (``kvm_dirty_ring_check_request``, virt/kvm/dirty_ring.c
        v6.17; seen on this host's KVM as +1 fault and +1 entry per exit).  Returns
        (allowed, retry, probe): ``retry`` marks the filling accesses, applied now without
        their store and deferred with the rest; ``probe`` is the admitted accesses' pages and
        leaves (the write path takes them as they are), or None: when the cut kept part of
        a page's accesses, or the batch has reads (``_Probe.kept``), they are probed again.

        A push is the first write to a page that is not writable, by a running vCPU, in a
        logging slot (``_dry_run_events``: the pushes of the accesses still allowed).  Cutting
        a vCPU's accesses after its filling push can make another vCPU's later write to one of
        the cut pages a first write, so the cut is repeated until nothing changes; a cut whose
        pages no allowed access writes (``_cut_keeps_pushes``) changes no push still allowed,
        so it is final.
        """
        counts = np.bincount(vcpu[ok & (vcpu >= 0)], minlength=self.nr_vcpus)
        if all(int(c) < r.room() for c, r in zip(counts, self.rings, strict=False)):
            res.deferred = np.zeros(0, dtype=np.intp)  # fewer accesses than room: none fills
            return ok.copy(), np.zeros(gfn.size, dtype=bool), None
        slots = self.memslots.sorted()
        logging = np.array([self.slots[s.id].logging for s in slots] + [False], dtype=bool)
        keep = None if ok.all() else np.flatnonzero(ok)
        if keep is not None and not keep.size:  # nothing runs (host writes, exits): no push
            probe, events = None, keep
        else:
            args = (
                (gfn, vcpu, write, sidx)
                if keep is None
                else (gfn[keep], vcpu[keep], write[keep], sidx[keep])
            )
            probe = self._probe(*args, slots)
            events = self._probe_events(probe, logging)
            if keep is not None:
                events = keep[events]
        allowed = ok
        rooms = np.array([r.room() for r in self.rings], dtype=np.int64)
        filling: dict[int, int] = {}
        index = np.arange(gfn.size)
        for _ in range(self.nr_vcpus + 1):
            filling = {}
            by = vcpu[events]  # (pushes are by running vCPUs: ids >= 0)
            pushes = np.bincount(by, minlength=self.nr_vcpus)[: self.nr_vcpus]
            # each vCPU's last access allowed (all of them: the batch's size; a host
            # write's -1 reads the last vCPU's, and ``ok`` already excludes it)
            last = np.full(self.nr_vcpus, gfn.size, dtype=np.int64)
            for v in np.flatnonzero(pushes >= rooms).tolist():  # the rings that fill
                room = int(rooms[v])
                at = int(events[by == v][room - 1]) if room > 0 else -1
                last[v] = at
                res.ring_full.add(v)
                if at >= 0:
                    filling[v] = at
            new_allowed = ok & (index <= last[vcpu])
            if np.array_equal(new_allowed, allowed):
                break
            same = self._cut_keeps_pushes(gfn, write, allowed, new_allowed)
            allowed = new_allowed
            if same:  # the pushes still allowed are the old ones: each ring that filled
                break  # fills again at the same push and no other does (the same cut)
            events = self._dry_run_events(gfn, vcpu, write, sidx, new_allowed, logging)
            probe = None  # a cut page is also written by an allowed access: probed again
        retry = np.zeros(gfn.size, dtype=bool)
        retry[list(filling.values())] = True
        res.deferred = np.flatnonzero((ok & ~allowed) | retry)
        if allowed is not ok and probe is not None:
            probe = probe.kept(allowed if keep is None else allowed[keep])
        return allowed.copy(), retry, probe

    def _probe_events(self, probe: _Probe, logging: np.ndarray) -> np.ndarray:
        """``_dry_run_events`` of every access of a probed batch (its own indices), from the
        probe's pages and leaves: no second sort or lookup."""
        pages, desc = probe.pages, probe.desc
        need = pages.written & pages.running_writer(np.arange(pages.gfn.size))
        need &= _gather(logging, pages.sidx)
        need &= ~(D.is_valid(desc) & D.is_writable(desc))
        return np.sort(pages.t_write[need])

    @staticmethod
    def _cut_keeps_pushes(gfn, write, allowed, new_allowed) -> bool:
        """Whether the pushes once ``allowed`` shrinks to ``new_allowed`` are the old ones
        still allowed: when no page written by a dropped access is also written by an
        access still allowed, each page's first write among the allowed ones is what it
        was.  False when an access is allowed again (its pushes are not known) or a page is
        shared (the caller runs the dry run again)."""
        if (new_allowed & ~allowed).any():
            return False
        dropped = gfn[allowed & ~new_allowed & write]
        if not dropped.size:
            return True
        dropped = np.sort(dropped)
        kept = gfn[new_allowed & write]
        at = np.minimum(np.searchsorted(dropped, kept), dropped.size - 1)
        return not (dropped[at] == kept).any()

    def _dry_run_events(self, gfn, vcpu, write, sidx, allowed, logging) -> np.ndarray:
        """Access indices that would push a dirty entry: first writes to non-writable pages."""
        sel = np.flatnonzero(allowed & write & logging[sidx])
        if not sel.size:
            return sel
        order = sel[np.argsort(gfn[sel], kind="stable")]
        first = order[first_of_runs(gfn[order])]
        _, _, desc = self.pgt.lookup(gfn[first] << self.page_shift)
        need = ~(D.is_valid(desc) & D.is_writable(desc))
        return np.sort(first[need & (vcpu[first] >= 0)])


ACCESS_SLICE = 1 << 20  # accesses applied at a time (see VM.access)


def _per_slot(sidx: np.ndarray, nslots: int = 0) -> list[tuple[int, np.ndarray | slice]]:
    """(slot index, selection of the entries in that slot) per distinct slot index, in
    ascending order; the selection is the whole array when there is one slot (no mask),
    and ``sidx`` is not read when the VM has one slot (``nslots`` 1: every index is 0)."""
    if nslots == 1:
        return [(0, slice(None))]
    if sidx.size and int(sidx.min()) == int(sidx.max()):
        return [(int(sidx[0]), slice(None))]
    return [(int(i), sidx == i) for i in unique_fast(sidx)]


@dataclass
class _Probe:
    """A batch's pages and, for each, the level, flat position and descriptor of the leaf
    (or invalid entry) its walk reaches (``PageTable.lookup``)."""

    pages: _Pages
    level: np.ndarray
    pos: np.ndarray
    desc: np.ndarray

    def kept(self, kept: np.ndarray) -> _Probe | None:
        """The probe of the accesses ``kept`` (bool per access of the probed batch), when the
        caller knows that no page has both kept and dropped accesses (a ring admission's cut
        whose pages no allowed access writes): the pages whose first access is kept, with
        their leaves and counts, and batch indices counted among the kept accesses.  Only
        for a batch of writes (``writes`` known), else None: a read's page may change."""
        p = self.pages
        if p.writes is None:
            return None
        sel = kept[p.t_first]
        rank = np.cumsum(kept) - 1  # each kept access's index in the kept batch
        vcpu = p.vcpu_write[sel]  # (writes only: the first access is the first write)
        pages = replace(
            p,
            gfn=p.gfn[sel],
            sidx=p.sidx[sel],
            written=p.written[sel],
            first_is_write=p.first_is_write[sel],
            vcpu_first=vcpu,
            vcpu_write=vcpu,
            first=rank[p.t_first[sel]],
            first_write=None,
            writes=p.writes[sel],
            batch=None,
        )
        return _Probe(pages, self.level[sel], self.pos[sel], self.desc[sel])


@dataclass
class _Pages:
    """A batch's accesses grouped by page, with who touched each page first and when."""

    gfn: np.ndarray
    sidx: np.ndarray
    written: np.ndarray  # bool
    first_is_write: np.ndarray
    vcpu_first: np.ndarray
    vcpu_write: np.ndarray  # vCPU of the first write (-1 if none)
    first: np.ndarray | None  # batch index of the first access (None: not found yet)
    first_write: np.ndarray | None = None  # of the first write (-1 if none; None: = first)
    writes: np.ndarray | None = None  # accesses per page, when every access is a write
    writer: int | None = None  # the vCPU of every write, when all accesses are its writes
    batch: np.ndarray | None = None  # the batch's gfns, while ``first`` is not found yet

    @property
    def t_first(self) -> np.ndarray:
        """Batch index of each page's first access (int64; found on first use when the
        grouping did not need it: one sort of (gfn, index) keys)."""
        if self.first is None:
            assert self.batch is not None
            self.first = _runs(self.batch)[2]
            self.batch = None
        return self.first

    @property
    def t_write(self) -> np.ndarray:
        """Batch index of each page's first write (int64, -1 for a page only read)."""
        return self.t_first if self.first_write is None else self.first_write

    def per_writer(self, idx: np.ndarray, nr_vcpus: int) -> np.ndarray:
        """How many of the pages ``idx`` each vCPU wrote first (int64, one per vCPU; pages
        written with no running vCPU are not counted)."""
        if self.writer is not None:
            out = np.zeros(nr_vcpus, dtype=np.int64)
            if self.writer >= 0:
                out[self.writer] = idx.size
            return out
        v = self.vcpu_write[idx]
        return np.bincount(v[v >= 0], minlength=nr_vcpus)[:nr_vcpus]

    def running_writer(self, idx: np.ndarray) -> np.ndarray:
        """Which of the pages ``idx`` a running vCPU wrote first (bool per page)."""
        if self.writer is not None:
            return np.full(idx.size, self.writer >= 0)
        return self.vcpu_write[idx] >= 0

    @classmethod
    def group(cls, gfn, vcpu, write, sidx, times: bool = True, one_slot: bool = False) -> _Pages:
        """Group a time-ordered batch by page with one stable sort of (gfn, batch index).

        A page's accesses stay in time order, so the start of each run is its first access
        and the run's length its access count.  The sort packs both into one int64 key
        (numpy's vectorised sort: figure 4's million writes over 4 M pages were grouped in
        56 ms of CPU, against 86 ms with the per-gfn ``minimum.at`` tables it replaced, on
        the loaded project machine); a vCPU or slot that is the same for every access is
        filled in, not gathered (``one_slot``: the caller knows ``sidx`` is all 0).  A batch
        of one vCPU's writes needs only its pages and their counts unless ``times`` (the
        ring's push order): it sorts the gfns alone, as 32-bit offsets where they fit (a
        third of the keyed sort's CPU), and finds first accesses only if something asks for
        them (``t_first``).
        """
        n = gfn.size
        only_writes = bool(write.all())
        writer = _constant(vcpu) if only_writes else None
        slot = 0 if one_slot else _constant(sidx)
        if writer is not None and slot is not None and not times:
            lo = int(gfn.min())
            if int(gfn.max()) - lo < 1 << 32:
                g = np.subtract(gfn, lo, out=np.empty(n, np.uint32), casting="unsafe")
                g.sort()
            else:
                g = np.sort(gfn)
                lo = 0
            starts = np.flatnonzero(first_of_runs(g))
            page = g[starts].astype(np.int64)
            page += lo
            ones = np.ones(starts.size, dtype=bool)
            v = np.full(starts.size, writer, vcpu.dtype)
            return cls(
                gfn=page,
                sidx=np.full(starts.size, slot, sidx.dtype),
                written=ones,
                first_is_write=ones,
                vcpu_first=v,
                vcpu_write=v,
                first=None,
                writes=_run_lengths(starts, n),
                writer=writer,
                batch=gfn,
            )
        page, starts, first, order = _runs(gfn, full_order=not only_writes)
        sidx_first = sidx[first] if slot is None else np.full(first.size, slot, sidx.dtype)
        if only_writes:  # synthetic workloads and traces only write: skip the read bookkeeping
            written = np.ones(starts.size, dtype=bool)
            v = vcpu[first] if writer is None else np.full(first.size, writer, vcpu.dtype)
            return cls(
                gfn=page,
                sidx=sidx_first,
                written=written,
                first_is_write=written,
                vcpu_first=v,
                vcpu_write=v,
                first=first,
                writes=_run_lengths(starts, n),
                writer=writer,
            )
        assert order is not None
        w = write[order]
        big = np.iinfo(np.int64).max
        t_write = np.minimum.reduceat(np.where(w, order, big), starts)
        written = t_write != big
        vcpu_write = np.where(written, vcpu[np.where(written, t_write, 0)], -1)
        return cls(
            gfn=page,
            sidx=sidx_first,
            written=written,
            first_is_write=write[first],
            vcpu_first=vcpu[first],
            vcpu_write=vcpu_write,
            first=first,
            first_write=np.where(written, t_write, -1),
        )


def _runs(gfn: np.ndarray, full_order: bool = False) -> tuple[np.ndarray, ...]:
    """(distinct gfns ascending, start of each one's run in the gfn-sorted batch, batch
    index of each one's first access, and with ``full_order`` the batch index of every
    position of the sorted batch, else None), from one sort of packed (gfn, index) keys."""
    n = gfn.size
    lo = int(gfn.min())
    bits = max(1, (n - 1).bit_length())
    if (int(gfn.max()) - lo) >> (62 - bits):  # (no room for the index: a plain sort)
        order = np.argsort(gfn, kind="stable")
        g = gfn[order]
        starts = np.flatnonzero(first_of_runs(g))
        return g[starts], starts, order[starts], order
    keys = np.sort(((gfn - lo) << bits) | np.arange(n, dtype=np.int64))
    g = keys >> bits
    starts = np.flatnonzero(first_of_runs(g))
    mask = (1 << bits) - 1
    if full_order:
        order = keys & mask
        return g[starts] + lo, starts, order[starts], order
    return g[starts] + lo, starts, keys[starts] & mask, None


def _run_lengths(starts: np.ndarray, n: int) -> np.ndarray:
    """Length of each run of a sorted batch of ``n`` accesses from its start to the next
    run's (the last one's to ``n``), as ``uint32``, the version counters' type (a batch is
    at most ``ACCESS_SLICE`` accesses): ``np.diff(starts, append=n)`` without its
    concatenation, and no conversion when the versions are bumped."""
    out = np.empty(starts.size, dtype=np.uint32)
    np.subtract(starts[1:], starts[:-1], out=out[:-1], casting="unsafe")
    out[-1:] = n - starts[-1:]
    return out


def _constant(a: np.ndarray) -> int | None:
    """The value of every element of a non-empty ``a`` when they are all the same, else None."""
    lo = int(a.min())
    return lo if lo == int(a.max()) else None


def _in_time_order(t: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``idx`` ordered by ``t`` (distinct non-negative batch indices, one per element):
    each placed at its index in a batch-long array and read back in index order, with
    no comparison sort (``idx[np.argsort(t)]``; elements of ``idx`` are non-negative)."""
    at = np.full(int(t.max()) + 1 if t.size else 0, -1, dtype=np.int64)
    at[t] = idx
    return at[at >= 0]


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``a[idx]``, as a fill when every element of ``a`` is the same (one vCPU, one slot)."""
    c = _constant(a)
    return a[idx] if c is None else np.full(idx.size, c, dtype=a.dtype)


def eager_split_sizes(geom: Geometry) -> tuple[int, ...]:
    """Chunk sizes KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE accepts besides 0, in bytes, ascending."""
    return tuple(sorted({geom.granule, *geom.block_sizes().values()}))


def slot_flags(log_dirty: bool = False, readonly: bool = False) -> int:
    return (KVM_MEM_LOG_DIRTY_PAGES if log_dirty else 0) | (KVM_MEM_READONLY if readonly else 0)

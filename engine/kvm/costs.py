"""The cost model: what one descriptor access, TLB invalidation or fault exit costs.

Modelled time is always counts × these unit costs; it is never measured, and the app and CLI
label it "modelled".  The defaults are round figures for a current Armv8.x server core, chosen
to keep the ratios between operations right rather than to predict one machine:

- ``desc_read`` / ``desc_write`` 4 ns: a stage-2 descriptor in L1/L2 cache under the mmu_lock
  walk (a cache-missing walk costs 50-100 ns; harvests walk tables that the previous harvest
  or the fault path just touched, so most reads hit).
- ``tlbi_ipa`` 80 ns: ``__kvm_tlb_flush_vmid_ipa_nsh``, a local TLBI IPAS2E1 + DSB NSH, as
  ``kvm_pgtable_stage2_relax_perms`` does after a write fault.
- ``tlbi_ipa_is`` 1 500 ns: a broadcast TLBI IPAS2E1IS + VMALLE1IS + DSB ISH; break-before-make
  of a leaf.  Broadcast invalidations wait for every PE (Koller's eager-split RFC: "can take
  milliseconds" on some parts with many vCPUs; 1.5 µs is a quiet 2-socket figure).
- ``tlbi_range`` 4 000 ns: ``kvm_flush_remote_tlbs_range`` with FEAT_TLBIRANGE after a
  harvest re-protected a memslot; ``tlbi_vmid`` 6 000 ns: TLBI VMALLS12E1IS.
- ``fault_exit`` 2 500 ns: a stage-2 permission fault's exit to EL2, ``user_mem_abort``
  (mmu_lock, mark_page_dirty) and re-entry; dirty_log_perf_test on arm64 servers shows
  2-5 µs per first write after a harvest.
- ``ring_push`` 30 ns: writing one kvm_dirty_gfn entry; ``ring_reset_entry`` 20 ns.
- ``bitmap_word`` 2 ns: one xchg/copy of a 64-bit dirty-bitmap word.
- ``split_block`` 3 000 ns: allocating and filling a next-level table (eager or fault-time split),
  excluding its TLBI.

Every figure is editable in a session's ``costs`` object.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace

from engine.util.errors import ConfigError


@dataclass(frozen=True)
class CostModel:
    desc_read: float = 4.0
    desc_write: float = 4.0
    tlbi_ipa: float = 80.0
    tlbi_ipa_is: float = 1500.0
    tlbi_range: float = 4000.0
    tlbi_vmid: float = 6000.0
    fault_exit: float = 2500.0
    ring_push: float = 30.0
    ring_reset_entry: float = 20.0
    bitmap_word: float = 2.0
    split_block: float = 3000.0

    @classmethod
    def from_dict(cls, data: Mapping[str, object] | None, field: str = "costs") -> CostModel:
        """Defaults overridden by ``data`` (ns per operation); unknown names are refused."""
        model = cls()
        if not data:
            return model
        known = {f.name for f in fields(cls)}
        changes = {}
        for key, value in data.items():
            if key not in known:
                raise ConfigError(
                    f"{field}.{key}", f"unknown cost; known: {', '.join(sorted(known))}"
                )
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ConfigError(
                    f"{field}.{key}", f"must be a number of nanoseconds >= 0, got {value!r}"
                )
            changes[key] = float(value)
        return replace(model, **changes)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    def tlbi(self, kind: str) -> float:
        return {
            "ipa": self.tlbi_ipa,
            "ipa_is": self.tlbi_ipa_is,
            "range": self.tlbi_range,
            "vmid": self.tlbi_vmid,
        }[kind]

    def walk_ns(
        self, reads: int, writes: int, tlbi: Mapping[str, int] | None = None, words: int = 0
    ) -> float:
        """Modelled time of a walk: descriptor accesses, its TLB maintenance and bitmap words."""
        ns = reads * self.desc_read + writes * self.desc_write + words * self.bitmap_word
        for kind, count in (tlbi or {}).items():
            ns += count * self.tlbi(kind)
        return ns

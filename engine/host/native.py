"""Does the guest writer run natively here, or in KVM's instruction emulator?

Measured, not assumed: a batch of writes to a logged slot is run and the vCPU's binary
statistics are read.  Native: ``insn_emulation`` rises by about one per batch (the ``out``)
and every first write to a write-protected page is a ``pf_fixed``.  Emulated (CPL 0 or
32-bit code on a software hypervisor over the shadow MMU): ``insn_emulation`` counts every
instruction and no write-protection fault happens.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from engine.host.machine import PAGE, Machine
from engine.host.uapi import KVM_MEM_LOG_DIRTY_PAGES

PROBE_PAGES = 256


@dataclass(frozen=True)
class NativeCheck:
    """Counts from one probe batch of ``pages`` first writes (real KVM statistics)."""

    pages: int
    pf_fixed: int
    insn_emulation: int
    exits: int

    @property
    def native(self) -> bool:
        return self.pf_fixed >= self.pages and self.insn_emulation < self.pages

    def sentence(self) -> str:
        how = "natively" if self.native else "in KVM's instruction emulator"
        return (
            f"runs {how} ({self.pages} first writes to a logged slot: pf_fixed "
            f"+{self.pf_fixed}, insn_emulation +{self.insn_emulation}, exits +{self.exits})"
        )

    def as_dict(self) -> dict:
        return {**asdict(self), "native": self.native}


def check_native(pages: int = PROBE_PAGES) -> NativeCheck:
    """Run ``pages`` first writes on a fresh VM and read the vCPU statistics around them."""
    with Machine() as m:
        ds = m.add_slot(1, m.layout.data_min_gpa, pages * PAGE, KVM_MEM_LOG_DIRTY_PAGES)
        before = m.vcpu_stats()
        m.run(0, ds.gpa + PAGE * np.arange(pages, dtype=np.uint64))
        after = m.vcpu_stats()
    d = {k: after.get(k, 0) - before.get(k, 0) for k in ("pf_fixed", "insn_emulation", "exits")}
    return NativeCheck(pages, d["pf_fixed"], d["insn_emulation"], d["exits"])

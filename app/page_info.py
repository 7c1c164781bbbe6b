"""What the app says about one page: the hover line and the tree's slot and dirty columns."""

from __future__ import annotations

import numpy as np

from engine.migration.simulation import Simulation
from engine.stage2 import descriptor as D


def describe_page(sim: Simulation | None, gfn: int) -> str:
    if sim is None:
        return ""
    ipa = gfn << sim.vm.page_shift
    st = sim.vm.slot_of_ipa(ipa)
    level, _, desc = sim.pgt.lookup(np.array([ipa]))
    leaf = D.decode(int(desc[0]), int(level[0]), sim.vm.page_shift)
    if st is None:
        return f"IPA {ipa:#x} gfn {gfn:#x}: no memslot"
    rel = gfn - st.slot.base_gfn
    dirty = dirty_label(sim, ipa)
    return (
        f"IPA {ipa:#x} · gfn {gfn:#x} · slot {st.slot.id} {st.slot.name} · {leaf} · "
        f"version {int(st.version[rel])} · dirty {dirty}"
    )


def slot_label(sim: Simulation | None, ipa: int) -> str:
    st = sim.vm.slot_of_ipa(ipa) if sim else None
    return "" if st is None else str(st.slot.id)


def dirty_label(sim: Simulation | None, ipa: int) -> str:
    st = sim.vm.slot_of_ipa(ipa) if sim else None
    if st is None or st.bitmap is None:
        return "—"
    rel = (ipa >> sim.vm.page_shift) - st.slot.base_gfn
    return "1" if int(st.bitmap[rel >> 6]) >> (rel & 63) & 1 else "0"

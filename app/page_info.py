"""What the app says about one page: the info strip under the heat map and the tree's slot
and dirty columns.  Runs in the worker thread (it reads the simulation)."""

from __future__ import annotations

import numpy as np

from engine.migration.simulation import Simulation
from engine.migration.snapshot import PROT_NAMES
from engine.stage2 import descriptor as D

DIFF_VALUE_NAMES = ("in neither snapshot", "only in A", "only in B", "in both")


def _bit(words: np.ndarray | None, rel: int) -> int:
    return 0 if words is None else int(words[rel >> 6]) >> (rel & 63) & 1


def mode_value(mode: str, value: float, gain: float = 1.0) -> str:
    """A layer's value for one page, as the heat map's mode means it, with its unit."""
    if mode == "heat":
        return f"heat {value * gain:.3g} writes (decayed, half-life 2 s)"
    if mode == "dirty":
        return "dirty now (in the log or to send)" if value else "clean now"
    if mode == "prot":
        return f"protection: {PROT_NAMES[int(value)]}"
    if mode == "last_sent":
        return "never sent" if value < 0 else f"last sent in round {int(value)}"
    if mode == "version":
        return f"{int(value):,} writes so far"
    if mode == "diff":
        return DIFF_VALUE_NAMES[int(value)]
    return ""


def describe_page(
    sim: Simulation | None,
    gfn: int,
    mode: str = "",
    layer: np.ndarray | None = None,
    gain: float = 1.0,
) -> str:
    """One line: IPA, gfn, slot, the value the map shows in ``mode`` (read from ``layer``,
    one value per page, slots back to back), the leaf descriptor, version and dirty bits."""
    if sim is None:
        return ""
    ipa = gfn << sim.vm.page_shift
    st = sim.vm.slot_of_ipa(ipa)
    level, _, desc = sim.pgt.lookup(np.array([ipa]))
    leaf = D.decode(int(desc[0]), int(level[0]), sim.vm.page_shift)
    if st is None:
        return f"IPA {ipa:#x} · gfn {gfn:#x}: no memslot"
    rel = gfn - st.slot.base_gfn
    value = ""
    offset = sum(s.npages for s in sim.vm.memslots.sorted() if s.base_gfn < st.slot.base_gfn)
    if layer is not None and offset + rel < layer.size:
        value = mode_value(mode, float(layer[offset + rel]), gain) + " · "
    m = sim.migration.slots.get(st.slot.id) if sim.migration else None
    to_send = f" · to send {_bit(m.bitmap, rel)}" if m is not None else ""
    return (
        f"IPA {ipa:#x} · gfn {gfn:#x} · slot {st.slot.id} {st.slot.name} · {value}{leaf} · "
        f"version {int(st.version[rel])} · KVM dirty bit {dirty_label(sim, ipa)}{to_send}"
    )


def slot_label(sim: Simulation | None, ipa: int) -> str:
    st = sim.vm.slot_of_ipa(ipa) if sim else None
    return "" if st is None else str(st.slot.id)


def dirty_label(sim: Simulation | None, ipa: int) -> str:
    st = sim.vm.slot_of_ipa(ipa) if sim else None
    if st is None or st.bitmap is None:
        return "—"
    return str(_bit(st.bitmap, (ipa >> sim.vm.page_shift) - st.slot.base_gfn))

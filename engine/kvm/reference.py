"""Plain per-entry reference implementations of the write-protect strategies.

They read the tables one descriptor at a time, exactly as the algorithm they model, and count
as they go.  The tests compare every vectorised strategy with these, and ``dirtylog bench``
measures how much faster the vectorised forms are.  They are deliberately simple and slow.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from engine.stage2 import descriptor as D
from engine.stage2.pgtable import PageTable
from engine.stage2.walk import Visit, WalkCounters, set_clear_visitor, walk


def set_bits(mask: int) -> list[int]:
    return [b for b in range(64) if mask >> b & 1]


def _read(pgt: PageTable, table: int, index: int, level: int, c: Counter) -> int:
    c[("r", level)] += 1
    return int(pgt.pool[table, index])


def _wp(pgt: PageTable, table: int, index: int, level: int, c: Counter) -> None:
    d = int(pgt.pool[table, index])
    if d & D.VALID and d & D.S2AP_W:
        pgt.pool[table, index] = np.uint64(d & ~D.S2AP_W)
        c[("w", level)] += 1


def ref_range(pgt: PageTable, base_gfn: int, offsets, masks) -> Counter:
    """stage2_wp_range per word over [ffs, fls]: pgd loop → puds → pmds → ptes."""
    c: Counter = Counter()
    g = pgt.geom
    for off, m in zip(offsets.tolist(), masks.tolist(), strict=True):
        lo = (base_gfn + off + set_bits(m)[0]) << g.page_shift
        hi = (base_gfn + off + set_bits(m)[-1] + 1) << g.page_shift
        _ref_range_level(pgt, g.start_level, None, lo, hi, c)
    return c


def _ref_range_level(pgt, level, table, lo, hi, c) -> None:
    g = pgt.geom
    size = g.level_size(level)
    addr = lo
    while addr < hi:
        if table is None:  # concatenated entry level
            key = addr >> g.level_shift(level)
            t, i = divmod(key, pgt.E)
        else:
            t, i = table, (addr >> g.level_shift(level)) & (pgt.E - 1)
        d = _read(pgt, t, i, level, c)
        nxt = min((addr // size + 1) * size, hi)
        if level < 3 and d & 3 == 3:
            _ref_range_level(
                pgt, level + 1, int(pgt.table_of(np.array([d], np.uint64))[0]), addr, nxt, c
            )
        elif d & D.VALID:
            _wp(pgt, t, i, level, c)
        addr = nxt


def ref_visitor(pgt: PageTable, base_gfn: int, offsets, masks) -> Counter:
    """The per-entry walker with a LEAF visitor clearing S2AP W, per word."""
    per_entry, _ = set_clear_visitor(0, D.S2AP_W)
    total = WalkCounters()
    for off, m in zip(offsets.tolist(), masks.tolist(), strict=True):
        lo = (base_gfn + off + set_bits(m)[0]) << 12
        hi = (base_gfn + off + set_bits(m)[-1] + 1) << 12
        walk(pgt, lo, hi, per_entry, Visit.LEAF, total)
    c: Counter = Counter()
    for lv, n in total.reads.items():
        c[("r", lv)] += n
    for lv, n in total.writes.items():
        c[("w", lv)] += n
    return c


def ref_masked_skip(pgt: PageTable, base_gfn: int, offsets, masks) -> Counter:
    """Seed v6: upper levels once per last-level table the bits land in (cached across words)."""
    c: Counter = Counter()
    g = pgt.geom
    cached_region = None
    leaf_table = None
    order = np.argsort(offsets, kind="stable")
    for off, m in zip(offsets[order].tolist(), masks[order].tolist(), strict=True):
        for b in set_bits(m):
            ipa = (base_gfn + off + b) << g.page_shift
            region = ipa >> g.level_shift(2)
            if region != cached_region:
                cached_region = region
                leaf_table = None
                t, i = divmod(ipa >> g.level_shift(g.start_level), pgt.E)
                for level in range(g.start_level, 3):
                    d = _read(pgt, t, i, level, c)
                    if d & 3 == 3:
                        t = int(pgt.table_of(np.array([d], np.uint64))[0])
                        i = (ipa >> g.level_shift(level + 1)) & (pgt.E - 1)
                        if level == 2:
                            leaf_table = t
                        continue
                    if d & D.VALID:  # a block: protect it once for this walk
                        _wp(pgt, t, i, level, c)
                    break
            if leaf_table is not None:
                i = (ipa >> g.page_shift) & (pgt.E - 1)
                d = _read(pgt, leaf_table, i, 3, c)
                if d & D.VALID:
                    _wp(pgt, leaf_table, i, 3, c)
    return c


def ref_rmap(pgt: PageTable, base_gfn: int, offsets, masks) -> Counter:
    c: Counter = Counter()
    for off, m in zip(offsets.tolist(), masks.tolist(), strict=True):
        for b in set_bits(m):
            pos = int(pgt.rmap_lookup(np.array([base_gfn + off + b]))[0])
            if pos < 0:
                continue
            t, i = divmod(pos, pgt.E)
            level = int(pgt.table_level[t])
            _read(pgt, t, i, level, c)
            _wp(pgt, t, i, level, c)
    return c


REFERENCES = {
    "range": ref_range,
    "masked-skip": ref_masked_skip,
    "visitor": ref_visitor,
    "rmap": ref_rmap,
}

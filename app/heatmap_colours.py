"""The heat map's colour coding: each mode's 256-entry colour table (code 0 = no page, codes
1..255 the mode's scale or categories), the same tables as 0xffRRGGBB words (QImage's RGB32)
applied to a frame's codes (``coloured``, called by the worker), and the colour bar's ticks.

Qt-free but for pyqtgraph's colour maps; the codes themselves come from ``app/heatmap_data.py``.
Kept apart from the widget (``app/heatmap.py``) so the coding is one small module that the
mutation group ``colours`` covers whole (``mutation/modules.toml``).
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pyqtgraph as pg

from app.heatmap_data import DIFF_NAMES, HeatImage
from engine.migration.snapshot import PROT_NAMES

PROT_COLOURS = (
    (60, 60, 60),  # unmapped
    (60, 120, 230),  # write-protected page: blue
    (235, 70, 50),  # writable page: red
    (120, 215, 120),  # write-protected block: light green
    (205, 80, 215),  # writable block: magenta
    (250, 205, 50),  # writable-clean (DBM): yellow
)
DIFF_COLOURS = ((60, 60, 60), (230, 80, 60), (60, 140, 230), (240, 220, 80))
CATEGORIES = {
    "prot": (PROT_NAMES, PROT_COLOURS),
    "diff": (DIFF_NAMES, DIFF_COLOURS),
    "dirty": (("clean", "dirty"), ((235, 235, 235), (220, 40, 40))),
}


def ramp(name: str, n: int = 255) -> np.ndarray:
    """``n`` colours from the start to the end of a colour map (both ends included)."""
    cmap = pg.colormap.get(name)
    return cmap.getLookupTable(0.0, 1.0, n, alpha=False)


def colour_table(mode: str) -> np.ndarray:
    """A new (256, 3) uint8 RGB table for ``mode``: index 0 = no page (dark grey), 1..255 the
    mode's scale (a pyqtgraph colour map) or its categories."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[0] = (40, 40, 40)
    if mode in ("heat", "version"):
        lut[1:] = ramp("inferno")
    elif mode == "last_sent":
        lut[1] = (90, 90, 90)  # never sent
        lut[2:] = ramp("viridis", 254)  # round 0 .. the top round: the whole ramp
    elif mode == "dirty":
        lut[1:128] = CATEGORIES["dirty"][1][0]
        lut[128:] = CATEGORIES["dirty"][1][1]
    elif mode in ("diff", "prot"):
        colours = CATEGORIES[mode][1]
        lut[1:] = colours[-1]
        for code, colour in enumerate(colours):
            lut[1 + code] = colour
    return lut


MODES = ("heat", "version", "last_sent", "dirty", "diff", "prot")


def rgb32(lut: np.ndarray) -> np.ndarray:
    """A (256, 3) uint8 RGB table as 256 uint32 words 0xffRRGGBB (QImage's RGB32)."""
    r, g, b = (lut[:, i].astype(np.uint32) for i in range(3))
    words = np.uint32(0xFF000000) | (r << 16) | (g << 8) | b
    words.setflags(write=False)
    return words


# mode -> (its table, the table as RGB32 words), each built once, on first use, under the lock
# (the GUI thread and the worker both ask) and read-only after: shared by every image item
# and frame of the mode.  Not built at import: mutation testing imports the module once and
# runs each mutant in a fork of that process, so a table built at import escaped every mutant.
_TABLES: dict[str, tuple[np.ndarray, np.ndarray]] = {}
_TABLES_LOCK = threading.Lock()


def _tables(mode: str) -> tuple[np.ndarray, np.ndarray]:
    with _TABLES_LOCK:
        if mode not in _TABLES:
            table = colour_table(mode)
            table.setflags(write=False)
            _TABLES[mode] = (table, rgb32(table))
        return _TABLES[mode]


def lut(mode: str) -> np.ndarray:
    """The mode's (256, 3) uint8 RGB table (``colour_table``), built once and read-only."""
    return _tables(mode)[0]


def coloured(image: HeatImage) -> HeatImage:
    """``image`` with its codes in the mode's colours (``HeatImage.rgb``): each code ``c``
    becomes ``lut(mode)[c]`` as a word 0xffRRGGBB.  Qt-free; the worker calls it so the GUI
    thread does no per-cell work."""
    return dataclasses.replace(image, rgb=_tables(image.mode)[1].take(image.codes))


def bar_ticks(img: HeatImage) -> list[tuple[float, str]]:
    """The colour bar's ticks: (code position, label) of round values on the mode's scale
    (codes 1..255: position 0.0 is the bar's bottom, 254.0 its top); ``img`` needs only
    ``mode`` and ``scale`` (the scale's top value)."""
    top = max(img.scale, 1e-9)
    if img.mode == "last_sent":
        ticks = [(0.5, "never")]  # rounds count from 1: no "0" on top of "never"
        step = max(1, int(np.ceil(top / 6)))
        for r in sorted({1, *range(step, int(top) + 1, step)}):
            ticks.append((1 + r * 253 / top, str(r)))
        return ticks
    if img.mode == "heat":
        pos = [(0.0, "0")]
        values = [v for v in (0.1, 1, 10, 100, 1e3, 1e4, 1e5, 1e6) if v < top * 0.9]
        pos += [(np.log1p(v) / np.log1p(top) * 254, f"{v:g}") for v in values]
        pos.append((254.0, f"≥ {top:.3g}"))
        return pos
    values = [v for v in (1, 10, 100, 1e3, 1e4, 1e5, 1e6) if v < top * 0.9]
    pos = [(0.0, "0")] + [(np.log2(v + 1) / np.log2(top + 1) * 254, f"{v:g}") for v in values]
    return pos + [(254.0, f"{top:,.0f}")]

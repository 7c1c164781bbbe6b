"""The heat map's colours, read back from rendered pixels and checked against the legend.

The expected colours are written down here by hand, from what the legend promises (the
protection states' and snapshot-diff colours as the README and legend list them; "red = dirty,
light = clean"; grey = never sent; matplotlib's inferno and viridis end points, black-purple →
yellow), never taken from ``app.heatmap``'s tables.  Pixels come from pyqtgraph's own
rendering of the ImageItem, so a shifted lookup table or a wrong code mapping shows up.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.heatmap import HeatMap  # noqa: E402
from app.heatmap_data import DIFF_NAMES, render  # noqa: E402
from engine.migration.snapshot import PROT_NAMES, Snapshot  # noqa: E402

EMPTY_CELL = (40, 40, 40)  # past the last page
PROT_COLOURS = {  # protection state -> RGB, in the order of snapshot.PROT_* codes 0..5
    "unmapped": (60, 60, 60),
    "write-protected page": (70, 130, 220),
    "writable page": (230, 90, 60),
    "write-protected block": (40, 60, 160),
    "writable block": (180, 40, 30),
    "writable-clean (DBM)": (240, 200, 60),
}
DIFF_COLOURS = {
    "in neither": (60, 60, 60),
    "only in A": (230, 80, 60),
    "only in B": (60, 140, 230),
    "in both": (240, 220, 80),
}
CLEAN, DIRTY = (235, 235, 235), (220, 40, 40)
NEVER_SENT = (90, 90, 90)
INFERNO_0, INFERNO_1 = (0, 0, 4), (252, 255, 164)  # matplotlib's _inferno_data ends
VIRIDIS_0, VIRIDIS_1 = (68, 1, 84), (253, 231, 37)  # matplotlib's _viridis_data ends


def _snapshot() -> Snapshot:
    return Snapshot(0, 0, 0, "idle", None, 0, 0, 0.0, 0, 0.0, 4096, (), ())


@pytest.fixture
def heatmap(qtbot):
    hm = HeatMap()
    qtbot.addWidget(hm)
    return hm


def _pixels(hm: HeatMap, layer, mode: str, per_row: int = 4) -> list[tuple[int, int, int]]:
    """Render ``layer`` (one value per page) and return every cell's RGB, row-major."""
    img = render(np.asarray(layer), mode, per_row, 1 << 20)
    hm.show_frame(_snapshot(), img)
    hm.image_item.render()
    q = hm.image_item.qimage
    rows, cols = img.codes.shape
    out = []
    for r in range(rows):
        for c in range(cols):
            col = q.pixelColor(c, r)
            out.append((col.red(), col.green(), col.blue()))
    return out


def _legend_colours(hm: HeatMap) -> dict[str, tuple[int, int, int]]:
    spans = re.findall(r"rgb\((\d+), (\d+), (\d+)\)'>■</span> ([^,<]+?)(?=,|$|;)", hm.legend.text())
    return {name.strip(): (int(r), int(g), int(b)) for r, g, b, name in spans}


def test_every_protection_state_in_its_own_legend_colour(heatmap):
    assert tuple(PROT_COLOURS) == PROT_NAMES  # codes 0..5 in this order
    got = _pixels(heatmap, np.arange(6, dtype=np.uint8), "prot")
    assert got == [*PROT_COLOURS.values(), EMPTY_CELL, EMPTY_CELL]
    assert _legend_colours(heatmap) == PROT_COLOURS
    assert len(set(PROT_COLOURS.values())) == 6


def test_every_diff_class_in_its_own_legend_colour(heatmap):
    assert tuple(DIFF_COLOURS) == DIFF_NAMES
    got = _pixels(heatmap, np.array([3, 2, 1, 0], np.uint8), "diff")
    assert got == [DIFF_COLOURS[n] for n in ("in both", "only in B", "only in A", "in neither")]
    assert _legend_colours(heatmap) == DIFF_COLOURS


@pytest.mark.parametrize("layer", [[0, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 1, 0, 3, 0]])
def test_dirty_mode_with_zero_and_one_layers(heatmap, layer):
    """Dirty now: any non-zero count is red, zero is light; an all-clean and an all-dirty
    memory keep those colours (the scale is fixed, not stretched to the data)."""
    got = _pixels(heatmap, np.array(layer, np.uint8), "dirty")
    assert got == [DIRTY if v else CLEAN for v in layer] + [EMPTY_CELL] * 3
    assert "red = dirty, light = clean" in heatmap.legend.text()


def test_last_sent_never_sent_is_grey_and_rounds_run_dark_to_yellow(heatmap):
    got = _pixels(heatmap, np.array([-1, 0, 5, 10], np.int16), "last_sent")
    assert got[0] == NEVER_SENT
    assert got[1] == VIRIDIS_0 and got[3] == VIRIDIS_1
    assert got[2] not in (NEVER_SENT, VIRIDIS_0, VIRIDIS_1)
    assert "grey = never" in heatmap.legend.text() and "round 0 → 10" in heatmap.legend.text()


@pytest.mark.parametrize("mode", ["heat", "version"])
def test_heat_and_version_run_black_to_yellow(heatmap, mode):
    layer = np.array([0, 1, 15, 255], np.float32 if mode == "heat" else np.uint32)
    got = _pixels(heatmap, layer, mode)
    assert got[0] == INFERNO_0 and got[3] == INFERNO_1
    lum = [sum(c) for c in got[:4]]
    assert lum == sorted(lum) and len(set(lum)) == 4
    assert "black → yellow" in heatmap.legend.text()

"""The heat map's colours, read back from rendered pixels and checked against its colour bar.

The expected colours are written down here by hand, from what the colour bar promises (the
protection states' and snapshot-diff colours, six clearly different hues since the review
found two similar blues and two similar reds; red = dirty, light = clean; grey = never sent;
matplotlib's inferno and viridis end points, black-purple → yellow), never taken from
``app.heatmap``'s tables.  Pixels come from pyqtgraph's own rendering of the ImageItems (the
map and the colour bar beside it), so a shifted lookup table or a wrong code mapping shows up.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.heatmap import HeatMap  # noqa: E402
from app.heatmap_data import DIFF_NAMES, render  # noqa: E402
from engine.migration.snapshot import PROT_NAMES, Snapshot  # noqa: E402

EMPTY_CELL = (40, 40, 40)  # past the last page
PROT_COLOURS = {  # protection state -> RGB, in the order of snapshot.PROT_* codes 0..5
    "unmapped": (60, 60, 60),  # grey
    "write-protected page": (60, 120, 230),  # blue
    "writable page": (235, 70, 50),  # red
    "write-protected block": (120, 215, 120),  # light green
    "writable block": (205, 80, 215),  # magenta
    "writable-clean (DBM)": (250, 205, 50),  # yellow
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


def _bar(hm: HeatMap) -> tuple[list[tuple[float, str]], list[tuple[int, int, int]]]:
    """The colour bar's ticks (position, text) and its colours, bottom row first."""
    hm.colour_bar.bar.render()
    q = hm.colour_bar.bar.qimage
    colours = []
    for r in range(q.height()):
        c = q.pixelColor(0, r)
        colours.append((c.red(), c.green(), c.blue()))
    ticks = hm.colour_bar.getAxis("right")._tickLevels[0]
    return [(float(p), t) for p, t in ticks], colours


def _legend_colours(hm: HeatMap) -> dict[str, tuple[int, int, int]]:
    """Each category the colour bar names, with the colour drawn beside its name."""
    ticks, colours = _bar(hm)
    return {name: colours[int(pos)] for pos, name in ticks}


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
    assert _legend_colours(heatmap) == {"clean": CLEAN, "dirty": DIRTY}


def test_last_sent_never_sent_is_grey_and_rounds_run_dark_to_yellow(heatmap):
    got = _pixels(heatmap, np.array([-1, 0, 5, 10], np.int16), "last_sent")
    assert got[0] == NEVER_SENT
    assert got[1] == VIRIDIS_0 and got[3] == VIRIDIS_1
    assert got[2] not in (NEVER_SENT, VIRIDIS_0, VIRIDIS_1)
    ticks, colours = _bar(heatmap)
    names = [t for _, t in ticks]
    assert names[0] == "never" and colours[0] == NEVER_SENT  # the bar's bottom: never sent
    # rounds count from 1 (the review found "round 0" at the bottom, on top of "never")
    assert "0" not in names and names[1] == "1"
    assert names[-1] == "10" and colours[-1] == VIRIDIS_1


@pytest.mark.parametrize("mode", ["heat", "version"])
def test_heat_and_version_run_black_to_yellow(heatmap, mode):
    layer = np.array([0, 1, 15, 255], np.float32 if mode == "heat" else np.uint32)
    got = _pixels(heatmap, layer, mode)
    assert got[0] == INFERNO_0 and got[3] == INFERNO_1
    lum = [sum(c) for c in got[:4]]
    assert lum == sorted(lum) and len(set(lum)) == 4
    _, colours = _bar(heatmap)  # the colour bar runs from black (0) to yellow (the top)
    assert colours[0] == INFERNO_0 and colours[-1] == INFERNO_1
    assert heatmap.colour_bar.getAxis("right").labelText.startswith("writes")


def test_a_new_heat_scale_moves_only_the_ticks(heatmap):
    """While a run goes the heat scale's top moves almost every frame: the bar keeps its
    colours and its axis its width (an auto-sized axis re-laid out the bar, 30 times a
    second); only the ticks follow the new top.  A new mode sets the bar up again."""
    bar = heatmap.colour_bar
    axis = bar.getAxis("right")
    heatmap.show_frame(_snapshot(), render(np.array([1.0, 5.0]), "heat", 4, 1 << 20, top=10.0))
    colours, width = bar.bar.image, axis.width()
    assert [t for _, t in axis._tickLevels[0]][-1] == "≥ 10"
    heatmap.show_frame(_snapshot(), render(np.array([1.0, 5.0]), "heat", 4, 1 << 20, top=1e5))
    assert bar.bar.image is colours and axis.width() == width
    assert [t for _, t in axis._tickLevels[0]][-1] == "≥ 1e+05"
    heatmap.show_frame(_snapshot(), render(np.array([0, 1], np.uint8), "dirty", 4, 1 << 20))
    assert bar.bar.image is not colours
    assert [t for _, t in axis._tickLevels[0]] == ["clean", "dirty"]


@pytest.mark.parametrize("mode", ["heat", "version", "last_sent", "dirty", "diff", "prot"])
def test_worker_coloured_image_draws_what_the_lookup_table_drew(heatmap, mode):
    """The map draws the worker's 0xffRRGGBB words (RGB32, no per-paint conversion): every
    code of every mode has the pixel pyqtgraph's own 8-bit path (codes + the mode's lookup
    table, levels 0..255: the map before) gives it, and the worker's frame (``coloured``)
    draws the same as a frame the GUI colours itself."""
    import pyqtgraph as pg
    from PySide6.QtGui import QImage

    from app.heatmap_colours import coloured, lut
    from app.heatmap_data import HeatImage

    codes = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = HeatImage(codes, mode, 1, 16, 256, 1.0)
    reference = pg.ImageItem(axisOrder="row-major")
    reference.setLookupTable(lut(mode))
    reference.setImage(codes, autoLevels=False, levels=(0, 255))
    reference.render()
    for frame in (img, coloured(img)):
        heatmap.show_frame(_snapshot(), frame)
        heatmap.image_item.render()
        q = heatmap.image_item.qimage
        assert q.format() == QImage.Format.Format_RGB32
        for r in range(16):
            for c in range(16):
                assert q.pixel(c, r) == reference.qimage.pixel(c, r), (mode, r, c)

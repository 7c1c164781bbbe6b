"""The heat map widget without the main window: which page a cell is, what hover and click
report, when a zoom asks for detail, the caption, the memslot lines, and the colour bar's set-up.

Every expected value is worked out here by hand from the layout rule the widget documents:
pages are laid out row by row from the first slot's first page, ``pages_per_row`` cells a row,
``pages_per_cell`` pages a cell (the first page of a cell names it); a detail image refines
whole overview rows with narrower cells.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPointF  # noqa: E402
from PySide6.QtGui import QFont, QFontMetrics  # noqa: E402

from app.heatmap import HOVER_HINT, ColourBar, HeatMap  # noqa: E402
from app.heatmap_data import HeatImage  # noqa: E402
from engine.migration.snapshot import SlotView, Snapshot  # noqa: E402

# two slots: 10 pages at gfn 0x100 (pages 0..9), then 6 pages at gfn 0x900 (pages 10..15)
SLOTS = (
    SlotView(1, "low", 0x100, 10, 0, 0, 0),
    SlotView(2, "", 0x900, 6, 0, 0, 10),
)


def _snap(slots=SLOTS) -> Snapshot:
    return Snapshot(0, 0, 0, "idle", None, 0, 0, 0.0, 0, 0.0, 4096, slots, ())


def _img(mode="prot", per_row=4, per_cell=1, rows=4, total=16, scale=1.0, first=0) -> HeatImage:
    codes = np.ones((rows, per_row), np.uint8)
    return HeatImage(codes, mode, per_cell, per_row, total, scale, first)


@pytest.fixture
def hm(qtbot):
    w = HeatMap()
    qtbot.addWidget(w)
    return w


class _Event:
    """A hover or click event at (x, y) in image coordinates."""

    def __init__(self, x=0.0, y=0.0, exit=False):
        self._pos, self._exit, self.accepted = QPointF(x, y), exit, False

    def pos(self):
        return self._pos

    def isExit(self):
        return self._exit

    def accept(self):
        self.accepted = True


def test_no_frame_no_page(hm):
    assert hm.cell_to_gfn(0.5, 0.5) is None
    hm.show_frame(_snap(), None)  # a frame without an image: still nothing drawn
    assert hm.cell_to_gfn(0.5, 0.5) is None


@pytest.mark.parametrize(
    ("x", "y", "gfn"),
    [
        (0.0, 0.0, 0x100),  # page 0
        (3.9, 0.0, 0x103),  # page 3: the last cell of row 0
        (1.5, 1.2, 0x105),  # page 5
        (1.0, 2.0, 0x109),  # page 9: slot 1's last
        (2.0, 2.0, 0x900),  # page 10: slot 2's first
        (3.0, 3.0, 0x905),  # page 15: slot 2's last
        (4.0, 0.0, None),  # column 4: past the row
        (-0.5, 0.0, 0x100),  # int(-0.5) is column 0
        (-1.0, 0.0, None),
        (0.0, -1.0, None),
        (0.0, 4.0, None),  # page 16: past the last slot
    ],
)
def test_cell_to_gfn_one_page_a_cell(hm, x, y, gfn):
    hm.show_frame(_snap(), _img())
    assert hm.cell_to_gfn(x, y) == gfn


@pytest.mark.parametrize(
    ("x", "y", "gfn"),
    [(0.0, 0.0, 0x100), (1.0, 0.0, 0x103), (2.0, 0.0, 0x106), (0.0, 1.0, 0x109), (1.0, 1.0, 0x902)],
)
def test_cell_to_gfn_names_a_folded_cells_first_page(hm, x, y, gfn):
    hm.show_frame(_snap(), _img(per_row=3, per_cell=3, rows=2))  # 9 pages a row
    assert hm.cell_to_gfn(x, y) == gfn


def test_cell_to_gfn_in_detail_rows_uses_the_finer_cells(hm):
    """Overview: 2 cells of 4 pages a row (8 pages), 2 rows.  Detail of row 1 (pages 8..15)
    at 1 page a cell: x in [0, 2) spans its 8 cells."""
    img = _img(per_row=2, per_cell=4, rows=2)
    detail = HeatImage(np.ones((1, 8), np.uint8), "prot", 1, 8, 8, 1.0, 8)
    hm.show_frame(_snap(), img, detail)
    assert hm.cell_to_gfn(0.0, 1.0) == 0x108  # page 8
    assert hm.cell_to_gfn(0.25, 1.0) == 0x109  # detail column 1: page 9
    assert hm.cell_to_gfn(0.5, 1.5) == 0x900  # column 2: page 10
    assert hm.cell_to_gfn(1.9, 1.0) == 0x905  # column 7: page 15
    assert hm.cell_to_gfn(0.25, 0.0) == 0x100  # row 0 is not refined: its cell's first page
    assert hm.cell_to_gfn(1.25, 0.0) == 0x104


def test_detail_ending_before_a_row_leaves_it_folded(hm):
    img = _img(per_row=2, per_cell=4, rows=2)
    detail = HeatImage(np.ones((1, 8), np.uint8), "prot", 1, 8, 8, 1.0, 0)  # row 0 only
    hm.show_frame(_snap(), img, detail)
    assert hm.cell_to_gfn(0.25, 0.0) == 0x101
    assert hm.cell_to_gfn(0.25, 1.0) == 0x108  # row 1 (pages 8..15) folded: page 8


def test_detail_is_laid_over_the_rows_it_refines(hm):
    img = _img(per_row=2, per_cell=4, rows=3, total=24)
    detail = HeatImage(np.ones((2, 8), np.uint8), "prot", 1, 8, 16, 1.0, 8)
    hm.show_frame(_snap(), img, detail)
    assert hm.detail is detail and hm.detail_item.isVisible() is not False
    r = hm.detail_item.mapRectToParent(hm.detail_item.boundingRect())
    assert (r.x(), r.y(), r.width(), r.height()) == (0.0, 1.0, 2.0, 2.0)
    other = HeatImage(np.ones((2, 8), np.uint8), "heat", 1, 8, 16, 1.0, 8)
    hm.show_frame(_snap(), img, other)  # a detail of another mode is stale: not shown
    assert hm.detail is None and not hm.detail_item.isVisible()


def test_hover_reports_each_new_page_once_and_the_exit(hm, qtbot):
    hm.show_frame(_snap(), _img())
    got = []
    hm.page_hovered.connect(got.append)
    hm.info.setText("page text")
    hm.image_item.hoverEvent(_Event(1.0, 0.0))
    hm.image_item.hoverEvent(_Event(1.7, 0.2))  # the same page
    hm.image_item.hoverEvent(_Event(2.0, 0.0))
    assert got == [0x101, 0x102] and hm.hovered_gfn == 0x102
    assert hm.info.text() == "page text"  # the worker writes the page's text
    hm.show_frame(_snap(), _img(), hover="gfn 0x102 ...")
    assert hm.info.text() == "gfn 0x102 ..."
    hm.image_item.hoverEvent(_Event(exit=True))
    assert got == [0x101, 0x102, -1] and hm.hovered_gfn == -1
    assert hm.info.text() == HOVER_HINT
    hm.show_frame(_snap(), _img(), hover="late text")  # nothing hovered: the hint stays
    assert hm.info.text() == HOVER_HINT
    hm.image_item.hoverEvent(_Event(9.0, 0.0))  # off the pages: also -1, not repeated
    assert got == [0x101, 0x102, -1]


def test_hover_off_the_pages_after_a_page(hm):
    hm.show_frame(_snap(), _img())
    got = []
    hm.page_hovered.connect(got.append)
    hm.image_item.hoverEvent(_Event(0.0, 0.0))
    hm.info.setText("page text")
    hm.image_item.hoverEvent(_Event(0.0, 7.0))
    assert got == [0x100, -1] and hm.info.text() == HOVER_HINT


def test_click_selects_a_page_only_on_one(hm):
    hm.show_frame(_snap(), _img())
    got = []
    hm.page_clicked.connect(got.append)
    on, off = _Event(3.0, 2.0), _Event(3.0, 9.0)
    hm.image_item.mouseClickEvent(on)
    hm.image_item.mouseClickEvent(off)
    assert got == [0x900 + 1] and on.accepted and not off.accepted


def _zoom(hm, y0, y1):
    hm.plot.getViewBox().setRange(yRange=(y0, y1), padding=0)
    got = []
    hm.detail_requested.connect(lambda a, b: got.append((a, b)))
    hm._request_detail()
    return got


def test_zooming_in_asks_for_the_visible_rows(hm):
    hm.show_frame(_snap(), _img(per_row=2, per_cell=4, rows=20, total=160))
    assert _zoom(hm, 3.5, 7.2) == [(3, 8)]


def test_zoom_at_the_edges_is_clipped_to_the_image(hm):
    hm.show_frame(_snap(), _img(per_row=2, per_cell=4, rows=20, total=160))
    assert _zoom(hm, -2.0, 5.0) == [(0, 6)]
    assert _zoom(hm, 15.0, 30.0)[-1] == (15, 20)


@pytest.mark.parametrize(("y1", "want"), [(17.99, (0, 18)), (18.0, (-1, -1)), (18.01, (-1, -1))])
def test_nine_tenths_of_the_rows_visible_is_no_detail(hm, y1, want):
    """20 rows: 18 visible rows (90 %) or more drop the detail."""
    hm.show_frame(_snap(), _img(per_row=2, per_cell=4, rows=20, total=160))
    assert _zoom(hm, 0.0, y1) == [want]


def test_a_view_less_than_a_row_high_counts_as_one_row(hm):
    """One row of 1 visible: the whole image (rows are at least 1 high)."""
    hm.show_frame(_snap(), _img(per_row=2, per_cell=4, rows=1, total=8))
    assert _zoom(hm, 0.0, 0.5) == [(-1, -1)]


def test_no_detail_for_unfolded_images_or_none(hm):
    assert _zoom(hm, 0.0, 1.0) == []
    hm.show_frame(_snap(), _img(per_row=4, per_cell=1, rows=20, total=80))
    assert _zoom(hm, 0.0, 2.0) == []


@pytest.mark.parametrize(
    ("img", "detail", "names", "text"),
    [
        (_img("prot"), None, None, "<b>protection</b> · 1 cell = 1 page"),
        (_img("prot", per_cell=2), None, None, "<b>protection</b> · 1 cell = max of 2 pages"),
        (
            _img("prot", per_row=2, per_cell=8, rows=1),
            HeatImage(np.ones((1, 8), np.uint8), "prot", 2, 8, 16, 1.0, 0),
            None,
            "<b>protection</b> · 1 cell = max of 8 pages (zoomed rows: 2)",
        ),
        (
            _img("heat", scale=1234.5),
            None,
            None,
            "<b>write heat (decayed writes per page)</b> · 1 cell = 1 page"
            " · scale top 1.23e+03 writes (hotter pages saturate)",
        ),
        (_img("diff"), None, None, "<b>{diff}</b> · 1 cell = 1 page · no snapshots chosen yet"),
        (
            _img("diff"),
            None,
            ("a.json", "b.json"),
            "<b>{diff}</b> · 1 cell = 1 page · A = a.json, B = b.json",
        ),
    ],
)
def test_caption(hm, img, detail, names, text):
    from app.heatmap_data import MODE_LABELS

    if names:
        hm.diff_names = names
    hm.show_frame(_snap(), img, detail)
    assert hm.legend.text() == text.replace("{diff}", MODE_LABELS["diff"])


def _slot_lines(hm):
    import pyqtgraph as pg

    lines = [i.value() for i in hm._slot_items if isinstance(i, pg.InfiniteLine)]
    texts = [
        (i.textItem.toPlainText(), i.pos().y())
        for i in hm._slot_items
        if isinstance(i, pg.TextItem)
    ]
    in_plot = [i for i in hm.plot.items if i in hm._slot_items]
    return lines, texts, len(in_plot)


def test_slot_lines_at_each_slots_first_row_with_its_name(hm):
    hm.show_frame(_snap(), _img())  # 4 pages a row: slot 2 begins at page 10, row 2.5
    lines, texts, shown = _slot_lines(hm)
    assert lines == [0.0, 2.5] and texts == [("slot 1 low", 0.0), ("slot 2", 2.5)]
    assert shown == 4
    hm.show_frame(_snap(), _img(per_row=2, per_cell=2, rows=4))  # 4 pages a row again
    assert _slot_lines(hm)[0] == [0.0, 2.5]
    hm.show_frame(_snap(), _img(per_row=5, per_cell=1, rows=4))  # 5 pages a row: 2.0
    assert _slot_lines(hm)[0] == [0.0, 2.0]
    one = (SlotView(7, "x", 0, 16, 0, 0, 0),)
    hm.show_frame(_snap(one), _img(per_row=5, per_cell=1, rows=4))  # old lines removed
    lines, texts, shown = _slot_lines(hm)
    assert lines == [0.0] and texts == [("slot 7 x", 0.0)] and shown == 2
    n_items = len(hm.plot.items)
    hm.show_frame(_snap(one), _img(per_row=5, per_cell=1, rows=4))  # unchanged: not redrawn
    assert len(hm.plot.items) == n_items


def test_clear_forgets_the_session(hm):
    hm.show_frame(
        _snap(),
        _img(per_row=2, per_cell=4, rows=2),
        HeatImage(np.ones((1, 8), np.uint8), "prot", 1, 8, 8, 1.0, 8),
    )
    hm.hovered_gfn, hm.diff_names = 0x100, ("a", "b")
    hm.info.setText("page")
    hm.clear()
    assert hm.image is None and hm.snapshot is None and hm.detail is None
    assert hm.image_item.image is None and not hm.detail_item.isVisible()
    assert hm.hovered_gfn == -1 and hm.diff_names == ("A", "B")
    assert hm.info.text() == HOVER_HINT and hm.legend.text() == ""
    assert hm.cell_to_gfn(0.0, 0.0) is None
    hm.show_frame(_snap(), _img())  # the slot lines are drawn again after a clear
    assert _slot_lines(hm)[0] == [0.0, 2.5]


def test_the_map_shows_the_images_codes_in_the_modes_colours(hm):
    """Protection codes 1..6 are the states in order (code 0: no page): grey (60, 60, 60) for
    unmapped, red (235, 70, 50) for a writable page, as 0xffRRGGBB words (QImage RGB32)."""
    img = _img()
    img.codes[0, :3] = [0, 3, 1]
    hm.show_frame(_snap(), img)
    words = hm.image_item.image
    assert words.dtype == np.uint32 and words.shape == (4, 4)
    assert words[0, :3].tolist() == [0xFF282828, 0xFFEB4632, 0xFF3C3C3C]


def test_strips_have_fixed_heights(hm):
    line = hm.info.fontMetrics().lineSpacing()
    assert hm.info.height() == 2 * line + 6 and hm.legend.height() == line + 6
    assert hm.info.wordWrap() and hm.info.text() == HOVER_HINT


def _metrics(bar: ColourBar) -> QFontMetrics:
    return QFontMetrics(bar.getAxis("right").style.get("tickFont") or QFont())


@pytest.mark.parametrize(
    ("mode", "names"),
    [
        (
            "prot",
            [
                "unmapped",
                "write-protected page",
                "writable page",
                "write-protected block",
                "writable block",
                "writable-clean (DBM)",
            ],
        ),
        ("diff", ["in neither", "only in A", "only in B", "in both"]),
        ("dirty", ["clean", "dirty"]),
    ],
)
def test_category_bar_one_band_a_name(qtbot, mode, names):
    bar = ColourBar()
    bar.show_scale(_img("heat", scale=10.0))  # from a scale mode: its unit label goes
    img = _img(mode)
    bar.show_scale(img)
    axis = bar.getAxis("right")
    assert axis._tickLevels[0] == [(i + 0.5, n) for i, n in enumerate(names)]
    assert axis.labelText == ""
    n = len(names)
    assert bar.bar.image.shape == (n, 1)
    codes = [1, 255] if mode == "dirty" else list(range(1, n + 1))
    assert bar.bar.image[:, 0].tolist() == codes
    assert list(bar.bar.levels) == [0, 255]
    r = bar.bar.mapRectToParent(bar.bar.boundingRect())
    assert (r.x(), r.y(), r.width(), r.height()) == (0.0, 0.0, 1.0, float(n))
    (x0, x1), (y0, y1) = bar.getViewBox().viewRange()
    assert (x0, x1, y0, y1) == (0.0, 1.0, 0.0, float(n))
    widest = max(_metrics(bar).horizontalAdvance(s) for s in names)
    assert bar.maximumWidth() == bar.minimumWidth() == 50 + widest
    assert bar.mode == mode and bar.shown_ticks is None
    assert axis.fixedWidth is None  # the names' width


@pytest.mark.parametrize(
    ("mode", "label"),
    [
        ("heat", "writes per page, decayed (log)"),
        ("version", "writes so far (log)"),
        ("last_sent", "round last sent"),
    ],
)
def test_scale_bar_codes_1_to_255_with_the_units_label(qtbot, mode, label):
    bar = ColourBar()
    bar.show_scale(_img("dirty"))  # from a category mode: set up again
    bar.show_scale(_img(mode, scale=10.0))
    axis = bar.getAxis("right")
    assert axis.labelText == label
    assert bar.bar.image[:, 0].tolist() == list(range(1, 256))
    r = bar.bar.mapRectToParent(bar.bar.boundingRect())
    assert (r.x(), r.y(), r.width(), r.height()) == (0.0, 0.0, 1.0, 255.0)
    (x0, x1), (y0, y1) = bar.getViewBox().viewRange()
    assert (x0, x1, y0, y1) == (0.0, 1.0, 0.0, 255.0)
    assert bar.maximumWidth() == bar.minimumWidth() == ColourBar.SCALE_WIDTH
    # the axis holds the widest tick text, its offset and tick, and the unit's line
    m = _metrics(bar)
    room = m.horizontalAdvance(ColourBar.WIDEST_TICK) + axis.style["tickTextOffset"][0]
    room += max(0, axis.style["tickLength"]) + m.height()
    assert axis.fixedWidth == axis.maximumWidth()
    assert room + 0.2 * m.height() <= axis.fixedWidth < room + 0.2 * m.height() + 1
    assert [t for _, t in axis._tickLevels[0]][-1] == {
        "heat": "≥ 10",
        "version": "10",
        "last_sent": "10",
    }[mode]


def test_ticks_are_replaced_only_when_they_change(qtbot, monkeypatch):
    bar = ColourBar()
    bar.getViewBox().resize(100, 255)  # one pixel per code
    axis = bar.getAxis("right")
    calls = []
    real = axis.setTicks
    monkeypatch.setattr(axis, "setTicks", lambda t: (calls.append(t), real(t)))
    bar.show_scale(_img("heat", scale=10.0))
    assert len(calls) == 1
    key = bar.shown_ticks
    assert key[0] == ("0", 0) and key[-1] == ("≥ 10", 254)
    bar.show_scale(_img("heat", scale=10.0004))  # the same labels, no tick moves a pixel
    assert len(calls) == 1
    bar.show_scale(_img("heat", scale=10.2))  # "≥ 10.2"
    assert len(calls) == 2 and bar.shown_ticks[-1] == ("≥ 10.2", 254)


def test_the_widgets_layout(hm):
    """Caption strip, plot and colour bar side by side, info strip; no margins, 2 px apart."""
    from PySide6.QtCore import Qt

    vb = hm.plot.getViewBox()
    assert vb.yInverted() and not vb.state["aspectLocked"]  # row 0 at the top
    assert hm.plot.getAxis("left").labelText == "row"
    assert hm.plot.getAxis("bottom").labelText == "cell within row"
    assert hm.glw.ci.getItem(0, 0) is hm.plot and hm.glw.ci.getItem(0, 1) is hm.colour_bar
    assert hm.image_item in hm.plot.items and hm.detail_item in hm.plot.items
    assert hm.detail_item.zValue() == 1 > hm.image_item.zValue()  # the detail on top
    lay = hm.layout()
    m = lay.contentsMargins()
    assert (m.left(), m.top(), m.right(), m.bottom(), lay.spacing()) == (0, 0, 0, 0, 2)
    assert [lay.itemAt(i).widget() for i in range(lay.count())] == [hm.legend, hm.glw, hm.info]
    assert [lay.stretch(i) for i in range(3)] == [0, 1, 0]
    assert hm.info.textInteractionFlags() == Qt.TextInteractionFlag.TextSelectableByMouse
    for strip in (hm.legend, hm.info):
        assert strip.wordWrap()
        assert strip.alignment() == Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop
        pol = strip.sizePolicy()
        assert pol.horizontalPolicy() == pol.Policy.Ignored
        assert pol.verticalPolicy() == pol.Policy.Fixed
        assert strip.styleSheet() == "padding: 2px 4px; background: palette(alternate-base);"
    assert hm.image is None and hm.snapshot is None and hm.detail is None
    assert hm.hovered_gfn == -1 and hm.diff_names == ("A", "B") and hm._slot_items == []
    bar = hm.colour_bar
    assert [n for n in ("left", "bottom", "right") if bar.getAxis(n).isVisibleTo(bar)] == ["right"]
    assert bar.vb.state["mouseEnabled"] == [False, False] and not bar.menuEnabled()
    assert bar.buttonsHidden and bar.bar in bar.items and bar.maximumWidth() == 140
    assert bar.mode is None and bar.shown_ticks is None


def test_a_view_change_asks_for_detail_once_after_150_ms(hm, qtbot):
    """The range-change debounce: one request 150 ms after the last change, not one a change."""
    hm.show_frame(_snap(), _img(per_row=2, per_cell=4, rows=20, total=160))
    got = []
    hm.detail_requested.connect(lambda a, b: got.append((a, b)))
    assert hm._debounce.isSingleShot() and hm._debounce.interval() == 150
    assert hm._debounce.parent() is hm  # (deleted with the widget: no late timeout)
    hm.plot.getViewBox().setRange(yRange=(2.0, 4.0), padding=0)
    hm.plot.getViewBox().setRange(yRange=(3.0, 5.5), padding=0)
    assert got == []
    qtbot.wait(450)
    assert got == [(3, 6)]


def test_the_page_at_gfn_0_is_a_hovered_page(hm):
    """gfn 0 is a page like any other: the worker's text for it is shown."""
    low = (SlotView(0, "", 0, 16, 0, 0, 0),)
    hm.show_frame(_snap(low), _img())
    hm.image_item.hoverEvent(_Event(0.0, 0.0))
    assert hm.hovered_gfn == 0
    hm.show_frame(_snap(low), _img(), hover="gfn 0x0 ...")
    assert hm.info.text() == "gfn 0x0 ..."


def test_a_frame_the_worker_coloured_is_drawn_as_it_is(hm):
    import dataclasses

    img = _img()
    img = dataclasses.replace(img, rgb=np.full(img.codes.shape, 0xFF123456, np.uint32))
    hm.show_frame(_snap(), img)
    assert (hm.image_item.image == 0xFF123456).all()


def test_cell_to_gfn_in_a_detail_of_two_pages_a_cell(hm):
    """Overview: 2 cells of 8 pages a row; its detail: 8 cells of 2 pages.  x = 0.75 is
    detail column int(0.75 × 8 / 2) = 3, whose first page is 6."""
    img = _img(per_row=2, per_cell=8, rows=1)
    detail = HeatImage(np.ones((1, 8), np.uint8), "prot", 2, 8, 16, 1.0, 0)
    hm.show_frame(_snap(), img, detail)
    assert hm.cell_to_gfn(0.75, 0.0) == 0x106
    assert hm.cell_to_gfn(1.3, 0.0) == 0x900  # column 5: page 10


def test_slot_lines_are_horizontal_white_with_labels_on_dark_boxes(hm):
    import pyqtgraph as pg

    hm.show_frame(_snap(), _img())
    lines = [i for i in hm._slot_items if isinstance(i, pg.InfiniteLine)]
    texts = [i for i in hm._slot_items if isinstance(i, pg.TextItem)]
    assert [ln.angle for ln in lines] == [0, 0]  # along a row, not across
    assert {(ln.pen.color().getRgb(), ln.pen.width()) for ln in lines} == {
        ((255, 255, 255, 255), 1)
    }
    for t in texts:
        assert t.color.getRgb() == (255, 255, 255, 255)
        assert t.fill.color().getRgb() == (0, 0, 0, 190)
        assert t.anchor == pg.Point(0, 0)

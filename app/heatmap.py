"""The memory heat map: guest memory row by row, one colour per page (or per folded cell).

The worker colours each frame (``coloured``: the mode's 256-entry table applied to the uint8
codes, as 0xffRRGGBB words) and the GUI thread draws those words as a QImage in RGB32, the
painter's own format: an 8-bit image with a colour table (what pyqtgraph makes of codes and a
lookup table) was converted to 32 bits on every paint, on Qt's thread pool, which on a busy
machine kept the GUI thread waiting 10-35 ms a frame for about 1 ms of its own CPU (the
stalls of figure 10).  Beside it a colour bar with the
mode's unit (or its categories); above it a one-line caption (mode, fold, diff files); under
it a fixed-height info strip describing the hovered page as of the latest frame (the worker
writes the text, so it follows the run, a reset or a deleted slot).  Memslot boundaries are
drawn as lines with their names; a click asks the tree to select the page's leaf.  The colour
coding itself (tables, words, the bar's ticks) lives in ``app/heatmap_colours.py``.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QFont, QFontMetrics, QImage
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from app.heatmap_colours import CATEGORIES, bar_ticks, coloured, lut
from app.heatmap_data import MODE_LABELS, HeatImage
from engine.migration.snapshot import Snapshot

HOVER_HINT = "hover over a page: its address, value, leaf descriptor, version and dirty bits"


class ColourImage(pg.ImageItem):
    """An ImageItem that draws uint32 0xffRRGGBB words as they are (QImage RGB32, no lookup
    table, no levels): ``show(words)``."""

    hovered = Signal(object)  # pyqtgraph's HoverEvent
    clicked = Signal(object)  # pyqtgraph's MouseClickEvent (a receiver accepts it)

    def __init__(self) -> None:
        super().__init__(axisOrder="row-major")

    # (signals, not the view's bound methods in this item's __dict__: such a method kept the
    # view alive from its own scene's item, and freeing that cycle deleted the view, hence
    # its scene, from inside this item's destructor: a segfault in QGraphicsScene::clear)
    def hoverEvent(self, event) -> None:  # noqa: N802 (pyqtgraph's name)
        self.hovered.emit(event)

    def mouseClickEvent(self, event) -> None:  # noqa: N802 (pyqtgraph's name)
        self.clicked.emit(event)

    def show_words(self, words: np.ndarray) -> None:
        self.setImage(np.ascontiguousarray(words, dtype=np.uint32), autoLevels=False)

    def render(self) -> None:  # (pyqtgraph's name: the QImage for the next paint)
        words = self.image
        self._unrenderable = words is None or words.size == 0
        if self._unrenderable:
            return
        rows, cols = words.shape
        # (the QImage reads the array in place; self.image keeps it alive)
        self.qimage = QImage(words.data, cols, rows, 4 * cols, QImage.Format.Format_RGB32)
        self._renderRequired = False


class ColourBar(pg.PlotItem):
    """The colours of the current mode with their values and unit (or their categories).

    Set up in full only when the mode changes; while running, the heat scale's top moves
    almost every frame and then only the ticks are replaced, when a label changes or a tick
    would move by a pixel (regenerating and repainting the axis took 3 ms of the GUI
    thread's CPU a frame, held against the worker for the GIL).  The axis keeps a fixed width
    (room for the widest tick text), so new tick text never re-lays out the bar or the map
    (an auto-sized axis resized the bar's view and repainted both, 30 times a second)."""

    SCALE_WIDTH = 140  # the bar, its ticks (room for the widest) and its unit: scale modes
    WIDEST_TICK = "≥ 8.88e+88"  # heat's top; versions' tops ("16,777,216") are narrower

    def __init__(self) -> None:
        super().__init__()
        self.hideAxis("bottom")
        self.hideAxis("left")
        self.showAxis("right")
        self.setMouseEnabled(False, False)
        self.hideButtons()
        self.setMenuEnabled(False)
        self.bar = pg.ImageItem(axisOrder="row-major")
        self.addItem(self.bar)
        self.setFixedWidth(self.SCALE_WIDTH)
        self.mode: str | None = None
        self.shown_ticks: tuple | None = None  # the ticks drawn: labels, pixel rows

    def show_scale(self, img: HeatImage) -> None:
        if img.mode != self.mode:
            self._show_mode(img.mode)
        if img.mode in CATEGORIES:
            return
        ticks = bar_ticks(img)
        px = self.getViewBox().height() / 255  # pixels per code
        key = tuple((label, round(pos * px)) for pos, label in ticks)
        if key != self.shown_ticks:
            self.shown_ticks = key
            self.getAxis("right").setTicks([ticks, []])

    def _show_mode(self, mode: str) -> None:
        """Colours, categories or unit, and the width of ``mode``."""
        self.mode, self.shown_ticks = mode, None
        axis = self.getAxis("right")
        metrics = QFontMetrics(axis.style.get("tickFont") or QFont())
        self.bar.setLookupTable(lut(mode))
        if mode in CATEGORIES:
            names, _ = CATEGORIES[mode]
            self.setFixedWidth(50 + max(metrics.horizontalAdvance(n) for n in names))
            axis.setWidth(None)
            codes = [1, 255] if mode == "dirty" else [1 + i for i in range(len(names))]
            self.bar.setImage(np.array(codes, np.uint8)[:, None], levels=(0, 255))
            self.bar.setRect(QRectF(0, 0, 1, len(codes)))
            axis.setTicks([[(i + 0.5, n) for i, n in enumerate(names)], []])
            axis.setLabel("")
            self.setYRange(0, len(codes), padding=0)
        else:
            self.setFixedWidth(self.SCALE_WIDTH)
            label = {
                "heat": "writes per page, decayed (log)",
                "version": "writes so far (log)",
                "last_sent": "round last sent",
            }[mode]
            axis.setLabel(label)
            text = metrics.horizontalAdvance(self.WIDEST_TICK) + axis.style["tickTextOffset"][0]
            axis.setWidth(
                int(text + max(0, axis.style["tickLength"]) + metrics.height() * 1.2 + 0.999)
            )
            codes = np.arange(1, 256, dtype=np.uint8)[:, None]
            self.bar.setImage(codes, levels=(0, 255))
            self.bar.setRect(QRectF(0, 0, 1, 255))
            self.setYRange(0, 255, padding=0)
        self.setXRange(0, 1, padding=0)


class HeatMap(QWidget):
    page_clicked = Signal(int)  # gfn
    page_hovered = Signal(int)  # gfn, -1 when the mouse leaves the pages
    detail_requested = Signal(int, int)  # overview rows to refine, (-1, -1) for none

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.glw = pg.GraphicsLayoutWidget()
        self.plot = self.glw.addPlot(row=0, col=0)
        self.plot.invertY(True)
        self.plot.setAspectLocked(False)
        self.plot.setLabel("left", "row")
        self.plot.setLabel("bottom", "cell within row")
        self.colour_bar = ColourBar()
        self.glw.addItem(self.colour_bar, row=0, col=1)
        self.image_item = ColourImage()
        self.plot.addItem(self.image_item)
        self.detail_item = ColourImage()
        self.detail_item.setZValue(1)
        self.plot.addItem(self.detail_item)
        self.detail: HeatImage | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self._request_detail)
        # (a method of this widget, not a lambda: PySide6 drops the connection when the
        # widget is deleted, so a range change during teardown never starts a freed timer)
        self.plot.getViewBox().sigRangeChanged.connect(self._range_changed)
        self.legend = self._strip(1)
        self.info = self._strip(2)
        self.info.setText(HOVER_HINT)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.diff_names = ("A", "B")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        layout.addWidget(self.legend)
        layout.addWidget(self.glw, 1)
        layout.addWidget(self.info)
        self.image: HeatImage | None = None
        self.snapshot: Snapshot | None = None
        self._slot_items: list = []
        self._slots_key = None
        self.hovered_gfn = -1
        self.image_item.hovered.connect(self._hover)
        self.image_item.clicked.connect(self._click)

    @staticmethod
    def _strip(lines: int) -> QLabel:
        """A label of fixed height: new text never re-lays out (or shifts) the map."""
        label = QLabel()
        label.setWordWrap(True)
        label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 6)
        label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        label.setStyleSheet("padding: 2px 4px; background: palette(alternate-base);")
        return label

    def clear(self) -> None:
        """Forget the previous session: image, slots, hover."""
        self.image = self.snapshot = self.detail = None
        self.image_item.clear()
        self.detail_item.hide()
        self._slots_key = None
        self.hovered_gfn = -1
        self.diff_names = ("A", "B")
        self.info.setText(HOVER_HINT)
        self.legend.setText("")

    def show_frame(
        self,
        snap: Snapshot,
        image: HeatImage | None,
        detail: HeatImage | None = None,
        hover: str = "",
    ) -> None:
        self.snapshot = snap
        if self.hovered_gfn >= 0 and hover:
            self.info.setText(hover)
        if image is None:
            return
        if image.rgb is None:  # (a frame the worker did not colour: a test's)
            image = coloured(image)
        self.image = image
        self.image_item.show_words(image.rgb)
        self._show_detail(image, detail)
        self._draw_slots(snap, image)
        self.colour_bar.show_scale(image)
        self.legend.setText(self._legend_text(image))

    def _show_detail(self, image: HeatImage, detail: HeatImage | None) -> None:
        """Lay the finer image over the rows it refines (same rows, narrower cells)."""
        self.detail = detail if detail is not None and detail.mode == image.mode else None
        if self.detail is None:
            self.detail_item.hide()
            return
        per_row_pages = image.pages_per_row * image.pages_per_cell
        first_row = detail.first_page // per_row_pages
        if detail.rgb is None:
            detail = coloured(detail)
        self.detail_item.show_words(detail.rgb)
        self.detail_item.setRect(QRectF(0, first_row, image.pages_per_row, detail.codes.shape[0]))
        self.detail_item.show()

    def _range_changed(self, *_args) -> None:
        self._debounce.start()

    def _request_detail(self) -> None:
        """Ask the worker for full detail of the visible rows once zoomed in far enough."""
        img = self.image
        if img is None or img.pages_per_cell <= 1:
            return
        (_, _), (y0, y1) = self.plot.getViewBox().viewRange()
        rows = max(1.0, y1 - y0)
        total_rows = img.codes.shape[0]
        if rows >= total_rows * 0.9:
            self.detail_requested.emit(-1, -1)
            return
        self.detail_requested.emit(max(0, int(y0)), min(total_rows, int(y1) + 1))

    def _legend_text(self, img: HeatImage) -> str:
        fold = (
            f" · 1 cell = max of {img.pages_per_cell} pages"
            if img.pages_per_cell > 1
            else " · 1 cell = 1 page"
        )
        if img.pages_per_cell > 1 and self.detail is not None:
            fold += f" (zoomed rows: {self.detail.pages_per_cell})"
        text = f"<b>{MODE_LABELS[img.mode]}</b>{fold}"
        if img.mode == "heat":
            text += f" · scale top {img.scale:.3g} writes (hotter pages saturate)"
        if img.mode == "diff":
            a, b = self.diff_names
            text += f" · A = {a}, B = {b}" if a != "A" else " · no snapshots chosen yet"
        return text

    def _draw_slots(self, snap: Snapshot, img: HeatImage) -> None:
        key = (
            tuple((s.id, s.offset, s.npages) for s in snap.slots),
            img.pages_per_cell,
            img.pages_per_row,
        )
        if key == self._slots_key:
            return
        self._slots_key = key
        for item in self._slot_items:
            self.plot.removeItem(item)
        self._slot_items = []
        per_row_pages = img.pages_per_cell * img.pages_per_row
        for s in snap.slots:
            row = s.offset / per_row_pages
            line = pg.InfiniteLine(pos=row, angle=0, pen=pg.mkPen((255, 255, 255), width=1))
            text = pg.TextItem(
                f"slot {s.id} {s.name}".strip(),
                color=(255, 255, 255),
                anchor=(0, 0),
                fill=pg.mkBrush(0, 0, 0, 190),
            )
            text.setPos(0, row)
            self.plot.addItem(line)
            self.plot.addItem(text)
            self._slot_items += [line, text]

    def cell_to_gfn(self, x: float, y: float) -> int | None:
        img, snap = self.image, self.snapshot
        if img is None or snap is None:
            return None
        col, row = int(x), int(y)
        if col < 0 or row < 0 or col >= img.pages_per_row:
            return None
        page = (row * img.pages_per_row + col) * img.pages_per_cell
        d = self.detail
        per_row_pages = img.pages_per_row * img.pages_per_cell
        if d is not None and d.first_page <= row * per_row_pages < d.first_page + d.total_pages:
            dcol = int(x * d.pages_per_row / img.pages_per_row)
            page = row * per_row_pages + dcol * d.pages_per_cell
        for s in snap.slots:
            if s.offset <= page < s.offset + s.npages:
                return s.base_gfn + page - s.offset
        return None

    def _hover(self, event) -> None:
        gfn = None if event.isExit() else self.cell_to_gfn(event.pos().x(), event.pos().y())
        gfn = -1 if gfn is None else gfn
        if gfn != self.hovered_gfn:
            self.hovered_gfn = gfn
            if gfn < 0:
                self.info.setText(HOVER_HINT)
            self.page_hovered.emit(gfn)

    def _click(self, event) -> None:
        pos = event.pos()
        gfn = self.cell_to_gfn(pos.x(), pos.y())
        if gfn is not None:
            self.page_clicked.emit(gfn)
            event.accept()

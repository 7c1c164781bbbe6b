"""The memory heat map: guest memory row by row, one colour per page (or per folded cell).

It stays on pyqtgraph's fast path: a C-contiguous uint8 image, fixed levels (0, 255) and a
256-entry lookup table per mode, one new array per frame.  Memslot boundaries are drawn as
lines with their names; hovering shows the page, its slot, decoded leaf, version and dirty
bit; a click asks the tree to select the page's leaf.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.heatmap_data import DIFF_NAMES, MODE_LABELS, HeatImage
from engine.migration.snapshot import PROT_NAMES, Snapshot


def _ramp(name: str, n: int = 255) -> np.ndarray:
    """``n`` colours from the start to the end of a colour map (both ends included)."""
    cmap = pg.colormap.get(name)
    return cmap.getLookupTable(0.0, 1.0, n, alpha=False)


def _lut(mode: str) -> np.ndarray:
    """256 RGB entries: index 0 = no page (dark grey), 1..255 the mode's scale."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[0] = (40, 40, 40)
    if mode in ("heat", "version"):
        lut[1:] = _ramp("inferno")
    elif mode == "last_sent":
        lut[1] = (90, 90, 90)  # never sent
        lut[2:] = _ramp("viridis", 254)  # round 0 .. the top round: the whole ramp
    elif mode == "dirty":
        lut[1:128] = (235, 235, 235)
        lut[128:] = (220, 40, 40)
    elif mode == "diff":
        lut[1:] = (60, 60, 60)
        lut[2], lut[3], lut[4] = (230, 80, 60), (60, 140, 230), (240, 220, 80)
    elif mode == "prot":
        colours = [
            (60, 60, 60),
            (70, 130, 220),
            (230, 90, 60),
            (40, 60, 160),
            (180, 40, 30),
            (240, 200, 60),
        ]
        lut[1:] = colours[-1]
        for code, colour in enumerate(colours):
            lut[1 + code] = colour
    return lut


class HeatMap(QWidget):
    page_clicked = Signal(int)  # gfn
    detail_requested = Signal(int, int)  # overview rows to refine, (-1, -1) for none

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.glw = pg.GraphicsLayoutWidget()
        self.plot = self.glw.addPlot()
        self.plot.invertY(True)
        self.plot.setAspectLocked(False)
        self.plot.setLabel("left", "row")
        self.plot.setLabel("bottom", "page within row")
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.plot.addItem(self.image_item)
        self.detail_item = pg.ImageItem(axisOrder="row-major")
        self.detail_item.setZValue(1)
        self.plot.addItem(self.detail_item)
        self.detail: HeatImage | None = None
        self._debounce = QTimer(self)
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(150)
        self._debounce.timeout.connect(self._request_detail)
        self.plot.getViewBox().sigRangeChanged.connect(lambda *_: self._debounce.start())
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.hover = QLabel("hover over a page")
        self.hover.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hover.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.glw, 1)
        layout.addWidget(self.legend)
        layout.addWidget(self.hover)
        self.image: HeatImage | None = None
        self.snapshot: Snapshot | None = None
        self.describe_page = None  # callable(gfn) -> str, set by the main window
        self._slot_items: list = []
        self._slots_key = None
        self._mode = None
        self.image_item.hoverEvent = self._hover
        self.image_item.mouseClickEvent = self._click
        self.setToolTip(
            "Guest memory, memslot after memslot, one cell per page "
            "(or the max of several pages when zoomed out). Scroll to zoom."
        )

    def show_frame(
        self, snap: Snapshot, image: HeatImage | None, detail: HeatImage | None = None
    ) -> None:
        self.snapshot = snap
        if image is None:
            return
        self.image = image
        if image.mode != self._mode:
            self._mode = image.mode
            self.image_item.setLookupTable(_lut(image.mode))
            self.detail_item.setLookupTable(_lut(image.mode))
        self.image_item.setImage(image.codes, autoLevels=False, levels=(0, 255))
        self._show_detail(image, detail)
        self._draw_slots(snap, image)
        self.legend.setText(self._legend_text(image))

    def _show_detail(self, image: HeatImage, detail: HeatImage | None) -> None:
        """Lay the finer image over the rows it refines (same rows, narrower cells)."""
        self.detail = detail if detail is not None and detail.mode == image.mode else None
        if self.detail is None:
            self.detail_item.hide()
            return
        per_row_pages = image.pages_per_row * image.pages_per_cell
        first_row = detail.first_page // per_row_pages
        self.detail_item.setImage(detail.codes, autoLevels=False, levels=(0, 255))
        self.detail_item.setRect(QRectF(0, first_row, image.pages_per_row, detail.codes.shape[0]))
        self.detail_item.show()

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
        fold = f"; 1 cell = max of {img.pages_per_cell} pages" if img.pages_per_cell > 1 else ""
        if fold and self.detail is not None:
            fold += f" (zoomed rows: {self.detail.pages_per_cell})"
        label = MODE_LABELS[img.mode]
        if img.mode == "prot":
            names = ", ".join(
                f"<span style='color:rgb{tuple(int(c) for c in _lut('prot')[1 + i])}'>■</span> {n}"
                for i, n in enumerate(PROT_NAMES)
            )
            return f"<b>{label}</b>: {names}{fold}"
        if img.mode == "diff":
            names = ", ".join(
                f"<span style='color:rgb{tuple(int(c) for c in _lut('diff')[1 + i])}'>■</span> {n}"
                for i, n in enumerate(DIFF_NAMES)
            )
            return f"<b>{label}</b>: {names}{fold}"
        if img.mode == "dirty":
            return f"<b>{label}</b>: red = dirty, light = clean{fold}"
        if img.mode == "last_sent":
            return f"<b>{label}</b>: grey = never, dark → yellow = round 0 → {img.scale:g}{fold}"
        return f"<b>{label}</b>: black → yellow = 0 → {img.scale:.3g}, log scale{fold}"

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
            line = pg.InfiniteLine(pos=row, angle=0, pen=pg.mkPen((0, 200, 255), width=1))
            text = pg.TextItem(f"slot {s.id} {s.name}".strip(), color=(0, 200, 255), anchor=(0, 1))
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
        if event.isExit():
            return
        pos = event.pos()
        gfn = self.cell_to_gfn(pos.x(), pos.y())
        if gfn is None:
            self.hover.setText("")
            return
        text = self.describe_page(gfn) if self.describe_page else f"gfn {gfn:#x}"
        self.hover.setText(text)

    def _click(self, event) -> None:
        pos = event.pos()
        gfn = self.cell_to_gfn(pos.x(), pos.y())
        if gfn is not None:
            self.page_clicked.emit(gfn)
            event.accept()

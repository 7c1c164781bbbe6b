"""The memory heat map: guest memory row by row, one colour per page (or per folded cell).

It stays on pyqtgraph's fast path: a C-contiguous uint8 image, fixed levels (0, 255) and a
256-entry lookup table per mode, one new array per frame.  Memslot boundaries are drawn as
lines with their names; hovering shows the page, its slot, decoded leaf, version and dirty
bit; a click asks the tree to select the page's leaf.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from app.heatmap_data import MODE_LABELS, HeatImage
from engine.snapshot import PROT_NAMES, Snapshot


def _ramp(name: str) -> np.ndarray:
    cmap = pg.colormap.get(name)
    return cmap.getLookupTable(0.0, 1.0, 255, alpha=False)


def _lut(mode: str) -> np.ndarray:
    """256 RGB entries: index 0 = no page (dark grey), 1..255 the mode's scale."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[0] = (40, 40, 40)
    if mode in ("heat", "version"):
        lut[1:] = _ramp("inferno")
    elif mode == "last_sent":
        lut[1] = (90, 90, 90)  # never sent
        lut[2:] = _ramp("viridis")[:254]
    elif mode == "dirty":
        lut[1:128] = (235, 235, 235)
        lut[128:] = (220, 40, 40)
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
        self.legend = QLabel()
        self.legend.setWordWrap(True)
        self.hover = QLabel("hover over a page")
        self.hover.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
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

    def show_frame(self, snap: Snapshot, image: HeatImage | None) -> None:
        self.snapshot = snap
        if image is None:
            return
        self.image = image
        if image.mode != self._mode:
            self._mode = image.mode
            self.image_item.setLookupTable(_lut(image.mode))
        self.image_item.setImage(image.codes, autoLevels=False, levels=(0, 255))
        self._draw_slots(snap, image)
        self.legend.setText(self._legend_text(image))

    def _legend_text(self, img: HeatImage) -> str:
        fold = f"; 1 cell = max of {img.pages_per_cell} pages" if img.pages_per_cell > 1 else ""
        label = MODE_LABELS[img.mode]
        if img.mode == "prot":
            names = ", ".join(
                f"<span style='color:rgb{tuple(int(c) for c in _lut('prot')[1 + i])}'>■</span> {n}"
                for i, n in enumerate(PROT_NAMES)
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

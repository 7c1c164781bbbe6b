"""The convergence map of a sweep: a metric over two axes, as a pyqtgraph image.

``build_grid`` (no Qt) places each row in its cell and codes it for the image: 0 not run yet,
1 not converged, 2 error, 3..255 the metric scaled linearly between its smallest and largest
value over the converged cells (viridis, a fixed 256-entry lookup table: pyqtgraph's fast
path).  ``inside`` is 1 where the point converged with a downtime within its own downtime
limit (to LIMIT_TOLERANCE: QEMU's switchover test uses the bandwidth it measured, so the pause
can exceed the limit by microseconds); ``SweepMap`` draws its 0.5 contour, i.e. the
downtime-limit boundary between cells.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from engine.sweep.grid import format_value

PENDING, NOT_CONVERGED, ERROR, FIRST_LEVEL = 0, 1, 2, 3
LIMIT_TOLERANCE = 1e-3  # relative: 1000.005 ms is within a 1000 ms limit
LEGEND = (
    "colour: the metric (viridis, dark = smallest); grey ✕: not converged; red: error; "
    "dashed: the downtime-limit boundary (inside, the point converged with its pause within "
    "its own limit)"
)
METRICS = {
    "downtime_ms": "downtime (ms, modelled)",
    "total_time_ms": "total time (ms, modelled)",
}


@dataclass(frozen=True)
class MapGrid:
    """A sweep's rows on a (y, x) grid; arrays have shape (len(y_values), len(x_values))."""

    x_field: str
    x_values: tuple[Any, ...]
    y_field: str | None
    y_values: tuple[Any, ...]
    metric: str
    value: np.ndarray  # float64, the metric of converged cells, NaN elsewhere
    codes: np.ndarray  # uint8 image codes (see the module docstring)
    inside: np.ndarray  # float32 1.0 / 0.0: converged within the point's downtime limit
    cells: dict[tuple[int, int], dict[str, Any]]  # (y, x) -> row

    @property
    def levels(self) -> tuple[float, float]:
        """Smallest and largest metric over the converged cells (0, 0 when none)."""
        v = self.value[np.isfinite(self.value)]
        return (float(v.min()), float(v.max())) if v.size else (0.0, 0.0)


def build_grid(
    rows: list[dict[str, Any]],
    axes: list[tuple[str, tuple[Any, ...]]],
    metric: str,
    limits: dict[int, float],
) -> MapGrid:
    """Place ``rows`` on the grid of ``axes`` (one or two (field, values)); ``limits`` maps a
    row's point to its downtime limit in ms."""
    (xf, xv), (yf, yv) = axes[0], (axes[1] if len(axes) > 1 else (None, ("",)))
    shape = (len(yv), len(xv))
    value = np.full(shape, np.nan)
    codes = np.zeros(shape, np.uint8)
    inside = np.zeros(shape, np.float32)
    xi = {format_value(v): i for i, v in enumerate(xv)}
    yi = {format_value(v): i for i, v in enumerate(yv)}
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    for r in rows:
        cell = (yi[format_value(r[yf])] if yf else 0, xi[format_value(r[xf])])
        cells[cell] = r
        if r["outcome"] == "completed":
            value[cell] = float(r[metric])
            limit = limits[int(r["point"])]
            inside[cell] = float(float(r["downtime_ms"]) <= limit * (1 + LIMIT_TOLERANCE))
        else:
            codes[cell] = ERROR if r["outcome"] == "error" else NOT_CONVERGED
    done = np.isfinite(value)
    if done.any():
        lo, hi = value[done].min(), value[done].max()
        scale = (value[done] - lo) / (hi - lo) if hi > lo else np.zeros(int(done.sum()))
        codes[done] = FIRST_LEVEL + np.rint(scale * (255 - FIRST_LEVEL)).astype(np.uint8)
    return MapGrid(xf, tuple(xv), yf, tuple(yv), metric, value, codes, inside, cells)


def lookup_table() -> np.ndarray:
    """256 × RGBA uint8: pending dark, not converged grey, error red, then viridis."""
    lut = np.zeros((256, 4), np.uint8)
    lut[:, 3] = 255
    lut[PENDING, :3] = (25, 25, 30)
    lut[NOT_CONVERGED, :3] = (120, 120, 120)
    lut[ERROR, :3] = (170, 30, 30)
    lut[FIRST_LEVEL:] = pg.colormap.get("viridis").getLookupTable(
        nPts=256 - FIRST_LEVEL, alpha=True
    )
    return lut


class SweepMap(QWidget):
    """The map: image, ✕ on non-converged cells, the downtime-limit contour, categorical axes.
    Emits ``hovered(row or None)`` and ``clicked(row)`` for the cell under the mouse."""

    hovered = Signal(object)
    clicked = Signal(object)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.plot = pg.PlotWidget(background="w")
        self.plot.setMenuEnabled(False)
        self.plot.getViewBox().setMouseEnabled(False, False)
        self.image = pg.ImageItem(axisOrder="row-major")
        self.image.setLookupTable(lookup_table())
        self.plot.addItem(self.image)
        self.marks = pg.ScatterPlotItem(symbol="x", size=12, pen=pg.mkPen("w", width=2), brush=None)
        self.plot.addItem(self.marks)
        self.contour = pg.IsocurveItem(
            level=0.5, pen=pg.mkPen("w", width=3, style=Qt.PenStyle.DashLine), axisOrder="row-major"
        )
        # (fn.isocurve already places data[i, j] at the pixel centre i + 0.5, j + 0.5)
        self.plot.addItem(self.contour)
        self.grid: MapGrid | None = None
        self.legend = QLabel(LEGEND)
        self.legend.setWordWrap(True)
        self.legend.setStyleSheet("background: white; color: #333; padding: 2px 6px;")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(0)
        lay.addWidget(self.plot)
        lay.addWidget(self.legend)
        scene = self.plot.scene()
        scene.sigMouseMoved.connect(self._moved)
        scene.sigMouseClicked.connect(self._clicked)

    def show_grid(self, grid: MapGrid) -> None:
        self.grid = grid
        self.image.setImage(grid.codes, levels=(0, 255), autoLevels=False)
        ys, xs = np.nonzero(grid.codes == NOT_CONVERGED)
        self.marks.setData(xs + 0.5, ys + 0.5)
        if min(grid.inside.shape) >= 2:
            self.contour.setData(grid.inside)
            self.contour.show()
        else:
            self.contour.hide()
        pi = self.plot.getPlotItem()
        pi.getAxis("bottom").setTicks([_ticks(grid.x_values)])
        pi.getAxis("left").setTicks([_ticks(grid.y_values)])
        pi.setLabel("bottom", grid.x_field)
        pi.setLabel("left", grid.y_field or "")
        lo, hi = grid.levels
        pi.setTitle(f"{METRICS[grid.metric]}: {lo:,.1f} (dark) … {hi:,.1f} (yellow)")
        self.plot.setRange(
            xRange=(0, len(grid.x_values)), yRange=(0, len(grid.y_values)), padding=0
        )

    def cell_at(self, scene_pos) -> tuple[int, int] | None:
        """(y, x) of the cell under a scene position, or None outside the grid."""
        if self.grid is None:
            return None
        p = self.plot.getViewBox().mapSceneToView(scene_pos)
        x, y = int(np.floor(p.x())), int(np.floor(p.y()))
        ny, nx = self.grid.codes.shape
        return (y, x) if 0 <= x < nx and 0 <= y < ny else None

    def _moved(self, pos) -> None:
        cell = self.cell_at(pos)
        self.hovered.emit(self.grid.cells.get(cell) if self.grid and cell else None)

    def _clicked(self, event) -> None:
        cell = self.cell_at(event.scenePos())
        row = self.grid.cells.get(cell) if self.grid and cell else None
        if row is not None:
            self.clicked.emit(row)


def _ticks(values: tuple[Any, ...]) -> list[tuple[float, str]]:
    """Cell-centred ticks; numbers to 4 significant digits (the rows keep the exact value)."""
    return [
        (i + 0.5, f"{v:.4g}" if isinstance(v, float) else format_value(v))
        for i, v in enumerate(values)
    ]


def describe_row(row: dict[str, Any], fields: list[str]) -> str:
    """One line for a cell: the point, its values, and its result with units and kinds."""
    head = f"point {row['point']}: " + ", ".join(f"{f}={format_value(row[f])}" for f in fields)
    if row["outcome"] == "error":
        return f"{head} → error: {row['reason']}"
    return (
        f"{head} → {row['outcome']} ({row['reason']}); downtime {float(row['downtime_ms']):,.1f} "
        f"ms, total {float(row['total_time_ms']):,.1f} ms, {row['rounds']} rounds, "
        f"{int(row['transferred_bytes']):,} bytes sent, throttle {row['throttle_pct']} % "
        f"(modelled); {row['mismatches']} mismatches; engine {float(row['wall_s_measured']):.2f}"
        " s (measured)"
    )

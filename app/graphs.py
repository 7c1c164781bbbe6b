"""Per-round timing graphs (pyqtgraph), one point per round.

Modelled cost (counts × unit costs) and measured CPU time never share an axis: each has its
own plot whose axis label says which it is.  In compare mode every strategy gets a series.

Repainting all six plots at once costs 40-60 ms in a software-rendered window, long enough to
stall the event loop while a migration runs.  So the left axes have a fixed width (new tick
labels never re-lay the whole grid out) and a new round reaches the plots one per event-loop
pass, about 10 ms each.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QVBoxLayout, QWidget

STRATEGY_COLOURS = {
    "range": (31, 119, 180),
    "masked-skip": (255, 127, 14),
    "visitor": (44, 160, 44),
    "rmap": (214, 39, 40),
}

AXIS_WIDTH = 64  # px: room for tick labels such as "1.5e+06" without re-laying out

PLOTS = (
    ("walk_model", "harvest walk, modelled", "µs (modelled)"),
    ("walk_cpu", "harvest walk, measured", "µs (measured CPU)"),
    ("pages", "pages per round", "pages"),
    ("downtime", "expected downtime", "ms"),
    ("throttle", "auto-converge throttle", "%"),
    ("faults", "faults and TLB invalidations", "count"),
)


class RoundAxis(pg.AxisItem):
    """A bottom axis with whole rounds only (no "round 1.5" ticks on a short run)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 (pyqtgraph's names)
        levels = super().tickValues(minVal, maxVal, size)
        return [
            (max(spacing, 1.0), [v for v in values if float(v).is_integer()])
            for spacing, values in levels
        ]


class TimingGraphs(QWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.glw = pg.GraphicsLayoutWidget()
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.glw)
        self.plots: dict[str, pg.PlotItem] = {}
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        for i, (key, title, unit) in enumerate(PLOTS):
            p = self.glw.addPlot(
                row=i // 2, col=i % 2, title=title, axisItems={"bottom": RoundAxis("bottom")}
            )
            p.setLabel("left", unit)
            p.getAxis("left").setWidth(AXIS_WIDTH)
            p.setLabel("bottom", "round")
            p.addLegend(offset=(-5, 5), labelTextSize="7pt")
            p.showGrid(x=True, y=True, alpha=0.2)
            self.plots[key] = p
        self.plots["throttle"].setYRange(0, 100)
        self.plots["throttle"].enableAutoRange(axis="y", enable=False)
        self.downtime_limit = self.plots["downtime"].addLine(
            y=300, pen=pg.mkPen("r", style=Qt.PenStyle.DashLine)
        )
        self.series: dict[str, dict[str, np.ndarray]] = {}
        self._stale: list[str] = []  # plots still showing older rounds
        self._next = QTimer(self)
        self._next.setSingleShot(True)
        self._next.setInterval(0)
        self._next.timeout.connect(self._draw_next)
        self.setToolTip(
            "One point per round. Modelled = operation counts × the cost model; "
            "measured = CPU time of the engine's thread in the walk (its wall time, in the "
            "round CSV and JSON, also counts waiting while this window repaints)."
        )

    def _curve(self, plot: str, name: str) -> pg.PlotDataItem:
        """The plot's series ``name``: strategies keep their colour in every plot, other
        series take the palette in order, so colours are the same from run to run."""
        key = (plot, name)
        if key not in self.curves:
            others = sum(
                1 for p, n in self.curves if p == plot and n.split(" ")[0] not in STRATEGY_COLOURS
            )
            colour = STRATEGY_COLOURS.get(name.split(" ")[0], PALETTE[others % len(PALETTE)])
            self.curves[key] = self.plots[plot].plot(
                name=name,
                pen=pg.mkPen(colour, width=1),
                symbol="o",
                symbolSize=4,
                symbolBrush=colour,
            )
        return self.curves[key]

    def show_extra(self, plot: str, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """A series from outside the run (e.g. real-KVM times), drawn as given."""
        self._curve(plot, name).setData(x, y)

    def set_downtime_limit(self, ms: float) -> None:
        self.downtime_limit.setValue(ms)

    def update_rounds(self, rounds: Sequence[Mapping[str, object]]) -> None:
        """Take the rounds so far; the plots catch up one per event-loop pass."""
        self.series = series_from_rounds(rounds)
        self._stale = list(self.plots)
        self._next.start()

    def flush(self) -> None:
        """Bring every plot up to date now (before an export)."""
        while self._stale:
            self._draw_next()

    def _draw_next(self) -> None:
        if not self._stale:
            return
        plot = self._stale.pop(0)
        for name, values in self.series.items():
            if name == "x" or not name.startswith(plot + ":"):
                continue
            label = name.split(":", 1)[1]
            self._curve(plot, label).setData(self.series["x"]["x"], values)
        if self._stale:
            self._next.start()

    def export_csv(self, path: str) -> None:
        keys = [k for k in self.series if k != "x"]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["round"] + keys)
            xs = self.series.get("x", {}).get("x", np.zeros(0))
            for i, x in enumerate(xs):
                w.writerow([int(x)] + [float(self.series[k][i]) for k in keys])

    def export_png(self, path: str) -> None:
        self.flush()
        self.glw.grab().save(path)

    def export_svg(self, path: str) -> None:
        """Vector export through Qt's SVG painter (pyqtgraph's own exporter trips over the
        symbols of a whole layout)."""
        from PySide6.QtCore import QRect, QSize
        from PySide6.QtGui import QPainter
        from PySide6.QtSvg import QSvgGenerator

        self.flush()
        gen = QSvgGenerator()
        gen.setFileName(path)
        gen.setSize(QSize(self.glw.width(), self.glw.height()))
        gen.setViewBox(QRect(0, 0, self.glw.width(), self.glw.height()))
        gen.setTitle("DirtyLog Inspector timing graphs")
        painter = QPainter(gen)
        self.glw.render(painter)
        painter.end()


# series that are not strategies take these in the order they appear in their plot
PALETTE = (
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (148, 103, 189),
    (140, 86, 75),
    (127, 127, 127),
)


def series_from_rounds(rounds: Sequence[Mapping[str, object]]) -> dict:
    """Columns of per-round values keyed ``plot:label`` (plus ``x`` for the round numbers)."""
    out: dict = {"x": {"x": np.array([r["round"] for r in rounds], dtype=float)}}
    strategies = sorted({s for r in rounds for s in r.get("walk_model_ns", {})})

    def col(fn):
        return np.array([fn(r) for r in rounds], dtype=float)

    for s in strategies:
        out[f"walk_model:{s}"] = col(lambda r, s=s: r.get("walk_model_ns", {}).get(s, np.nan) / 1e3)
        out[f"walk_cpu:{s}"] = col(lambda r, s=s: r.get("walk_cpu_us", {}).get(s, np.nan))
    out["pages:dirty harvested"] = col(lambda r: r["dirty_pages"])
    out["pages:sent"] = col(lambda r: r.get("pages_sent", 0))
    out["pages:remaining"] = col(lambda r: r["remaining_bytes"] / 4096)
    out["downtime:expected downtime"] = col(lambda r: r["expected_downtime_ms"])
    out["throttle:throttle"] = col(lambda r: r["throttle_pct"])
    out["faults:faults"] = col(lambda r: r["faults"])
    out["faults:TLBI"] = col(lambda r: sum(r.get("tlbi", {}).values()))
    return out

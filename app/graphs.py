"""Per-round timing graphs (pyqtgraph), one point per round.

Modelled cost (counts × unit costs) and measured CPU time never share an axis: each has its
own plot whose axis label says which it is.  In compare mode every strategy gets a series and
the active one (the one that changes the VM) is drawn thicker and named "(active)".  In dbm
mode there is no write-protect walk: the modelled walk plot shows the harvest's scan of every
leaf instead, and says so.

In the dock the six plots come as three pages of two (tabs: the harvest walk, pages and
downtime, throttle and faults), side by side when the dock is wide enough, else one over the
other inside a scroll area: at 1280×800 and 1920×1080 a page fits the default dock with its
axis labels whole (all six in a column scrolled, and the second plot's label was cut at the
dock's edge). Each plot's legend is a line of text under its title, never over the data.
Exported figures hold all six.  Repainting all six plots at once costs 40-60 ms in a
software-rendered window, so the left axes have a fixed width and a new round reaches the
plots one per event-loop pass.

Exports: PNG at a chosen size and DPI, SVG through pyqtgraph's own exporter (it writes each
curve in the plot's coordinates, so other renderers draw it where the PNG does), CSV with
units in the headers.  Exported figures carry the session's name and say what is modelled
and what is measured.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt, QTimer
from PySide6.QtGui import QImage
from PySide6.QtWidgets import QScrollArea, QStackedWidget, QTabBar, QVBoxLayout, QWidget

from app.figure_export import closed_paths_tolerated, settle

STRATEGY_COLOURS = {
    "range": (31, 119, 180),
    "masked-skip": (255, 127, 14),
    "visitor": (44, 160, 44),
    "rmap": (214, 39, 40),
    "dbm": (148, 103, 189),
}

AXIS_WIDTH = 64  # px: room for tick labels such as "1.5e+06" without re-laying out
TITLE_SIZE = "9pt"
LABEL_STYLE = {"font-size": "8pt"}  # axis labels: a unit fits a short plot's axis whole
PLOT_HEIGHT = 170  # px per plot: below this the plots scroll rather than squash
TWO_COLUMNS_FROM = 440  # px of width: narrower docks show a page's plots one over the other

# key, title, unit (the axis label), unit in the CSV header
PLOTS = (
    ("walk_model", "harvest walk, modelled", "µs (modelled)", "µs, modelled"),
    ("walk_cpu", "harvest walk, measured", "µs (measured CPU)", "µs, measured CPU"),
    ("pages", "pages per round", "pages", "pages"),
    ("downtime", "expected downtime", "ms", "ms"),
    ("throttle", "auto-converge throttle", "%", "%"),
    ("faults", "faults and TLB invalidations", "count", "count"),
)
PAGES = (  # the dock's tabs: two plots each, in PLOTS' order
    ("harvest walk", ("walk_model", "walk_cpu")),
    ("pages, downtime", ("pages", "downtime")),
    ("throttle, faults", ("throttle", "faults")),
)
FIGURE_NOTE = (
    "modelled = operation counts × the cost model; measured = CPU time of the simulator's "
    "thread on this host"
)


class RoundAxis(pg.AxisItem):
    """A bottom axis with whole rounds only, about one tick per 45 px (never crowded)."""

    def tickValues(self, minVal, maxVal, size):  # noqa: N802, N803 (pyqtgraph's names)
        span = maxVal - minVal
        if not math.isfinite(span) or span <= 0:
            return []
        raw = span / max(2, int(size / 45))
        step = 1
        for nice in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000):
            step = nice
            if nice >= raw:
                break
        first = math.ceil(minVal / step) * step
        return [(float(step), [float(v) for v in np.arange(first, maxVal + 1e-9, step)])]


def compact(value: float) -> str:
    """A tick label that fits the fixed-width axis: 400000 → "400k", 1500000 → "1.5M"."""
    for above, unit, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(value) >= above:
            return f"{value / unit:.4g}{suffix}"
    return f"{value:.4g}"


class CompactAxis(pg.AxisItem):
    """A left axis whose tick labels stay short (k, M, G), so they never run into its
    title inside AXIS_WIDTH."""

    def tickStrings(self, values, scale, spacing):  # noqa: N802 (pyqtgraph's name)
        return [compact(v * scale) for v in values]


class LegendLine(pg.LabelItem):
    """A plot's legend: ``lines`` lines of 8 pt text under it, of a size fixed at creation.

    pyqtgraph's LabelItem sizes itself to each new text, which re-laid out the plot's cell
    and repainted the whole dock (20-25 ms of GUI CPU) when a run's first rounds named their
    series.  It wraps at its cell's width; the walk plots have three lines (a tracking mode's
    note), the others two."""

    def __init__(self, lines: int) -> None:
        super().__init__("X" + "<br>X" * (lines - 1), size="8pt", justify="left")
        self._fixed = self.itemRect().height()
        super().updateMin()  # the height of ``lines`` lines, before any text
        self.setText("")

    def resizeEvent(self, ev) -> None:  # noqa: N802 (Qt's name)
        if ev is not None:  # (pyqtgraph calls it with None after a new text)
            self.item.setTextWidth(max(1.0, ev.newSize().width()))  # wrap, never overflow
        super().resizeEvent(ev)

    def updateMin(self) -> None:  # noqa: N802 (pyqtgraph's name)
        fixed = getattr(self, "_fixed", None)
        if fixed is None:  # during LabelItem.__init__
            super().updateMin()
            return
        self.setMinimumSize(0, fixed)
        self.setMaximumHeight(fixed)
        self._sizeHint = {
            Qt.SizeHint.MinimumSize: (0, fixed),
            Qt.SizeHint.PreferredSize: (0, fixed),
            Qt.SizeHint.MaximumSize: (-1, fixed),
            Qt.SizeHint.MinimumDescent: (0, 0),
        }


class TimingGraphs(QWidget):
    """The dock's graphs; with ``figure`` = (session name, columns), an export figure."""

    def __init__(self, parent=None, figure: tuple[str, int] | None = None) -> None:
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.figure_mode = figure is not None
        if figure is not None:
            self._glws = [pg.GraphicsLayoutWidget()]
            layout.addWidget(self._glws[0])
            session, _ = figure
            head = pg.LabelItem(
                f"<b>{session}</b> — DirtyLog Inspector timing graphs, "
                f"{time.strftime('%Y-%m-%d %H:%M')}<br>{FIGURE_NOTE}",
                size="10pt",
            )
            self.glw.ci.addItem(head, row=0, col=0, colspan=2)
        else:
            # one layout widget per page, stacked: a plot never leaves its scene
            self._glws = [pg.GraphicsLayoutWidget() for _ in PAGES]
            self.tabs = QTabBar()
            self.tabs.setDrawBase(False)
            self.tabs.setExpanding(False)
            self.stack = QStackedWidget()
            for (name, keys), glw in zip(PAGES, self._glws, strict=True):
                self.tabs.addTab(name)
                self.tabs.setTabToolTip(self.tabs.count() - 1, " and ".join(keys))
                self.stack.addWidget(glw)
            self.tabs.currentChanged.connect(self.stack.setCurrentIndex)
            self.setMinimumSize(320, PLOT_HEIGHT + 30)  # at least one whole plot in the dock
            self.stack.setMinimumHeight(PLOT_HEIGHT)
            self.scroll = QScrollArea()
            self.scroll.setWidgetResizable(True)
            self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
            self.scroll.setWidget(self.stack)
            layout.addWidget(self.tabs)
            layout.addWidget(self.scroll)
        self.plots: dict[str, pg.PlotItem] = {}
        self.legends: dict[str, pg.LabelItem] = {}
        self.cells: dict[str, pg.GraphicsLayout] = {}
        self.curves: dict[tuple[str, str], pg.PlotDataItem] = {}
        self.empty_text: dict[str, pg.TextItem] = {}
        for key, title, unit, _ in PLOTS:
            cell = pg.GraphicsLayout()
            p = cell.addPlot(
                row=0,
                col=0,
                axisItems={"bottom": RoundAxis("bottom"), "left": CompactAxis("left")},
            )
            p.setTitle(title, size=TITLE_SIZE)  # (pyqtgraph's 11pt title widened each cell)
            # a legend wraps to its cell's width: a second line for a row of strategies that
            # is wider than half of a narrow dock, a third for a tracking mode's note
            legend = LegendLine(3 if key.startswith("walk") else 2)
            cell.addItem(legend, row=1, col=0)
            # (the dock leaves "round" to the ticks and the tooltip: its line is the room a
            # unit needs on a short axis; an exported figure names it)
            labels = (("left", unit), ("bottom", "round")) if figure else (("left", unit),)
            for side, text in labels:  # (keep pyqtgraph's text colour)
                p.setLabel(side, text, **{**p.getAxis(side).labelStyle, **LABEL_STYLE})
            p.getAxis("left").setWidth(AXIS_WIDTH)
            p.getAxis("left").enableAutoSIPrefix(False)
            p.showGrid(x=True, y=True, alpha=0.2)
            text = pg.TextItem("no rounds yet", color=(150, 150, 150), anchor=(0.5, 0.5))
            p.addItem(text, ignoreBounds=True)
            self.plots[key], self.legends[key], self.cells[key] = p, legend, cell
            self.empty_text[key] = text
        self.columns = 0
        self._reflow(figure[1] if figure else 2)
        self.downtime_limit = self.plots["downtime"].addLine(
            y=300, pen=pg.mkPen("r", style=Qt.PenStyle.DashLine)
        )
        self._args: tuple = ((),)
        self.series: dict[str, np.ndarray] = {}
        self.active = ""
        self.notes: dict[str, str] = {}
        self._stale: list[str] = []  # plots still showing older rounds
        self._next = QTimer(self)
        self._next.setSingleShot(True)
        self._next.setInterval(0)
        self._next.timeout.connect(self._draw_next)
        self.clear()
        self.setToolTip(
            "One point per round (the x axis counts rounds). Modelled = operation counts × the "
            "cost model; "
            "measured = CPU time of the engine's thread in the walk (its wall time, in the "
            "round CSV and JSON, also counts waiting while this window repaints)."
        )

    # -- layout -------------------------------------------------------------------------------

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if not self.figure_mode:
            self._reflow(2 if event.size().width() >= TWO_COLUMNS_FROM else 1)

    @property
    def glw(self) -> pg.GraphicsLayoutWidget:
        """The layout widget in view (the dock's page; the exported figure's only one)."""
        return self._glws[0 if self.figure_mode else max(0, self.tabs.currentIndex())]

    def shown(self) -> tuple[str, ...]:
        """The plots in view: the dock's page (all six in an exported figure)."""
        if self.figure_mode:
            return tuple(self.cells)
        return PAGES[max(0, self.tabs.currentIndex())][1]

    def _reflow(self, columns: int) -> None:
        if columns == self.columns:
            return
        self.columns = columns
        pages = [tuple(self.cells)] if self.figure_mode else [keys for _, keys in PAGES]
        for glw, keys in zip(self._glws, pages, strict=True):
            for key in keys:
                if self.cells[key].scene() is not None:
                    glw.ci.removeItem(self.cells[key])
            for i, key in enumerate(keys):
                glw.ci.addItem(self.cells[key], row=1 + i // columns, col=i % columns)
        if not self.figure_mode:
            self.stack.setMinimumHeight(math.ceil(2 / columns) * PLOT_HEIGHT)

    # -- data ---------------------------------------------------------------------------------

    def clear(self) -> None:
        """Forget every series (a new run): empty plots that say so."""
        for (plot, _), curve in self.curves.items():
            self.plots[plot].removeItem(curve)
        self.curves.clear()
        self._empty: dict[str, bool] = {}  # each plot's state as last drawn
        self.series = {}
        self._args = ((),)
        self._stale = []
        self.notes = {}
        for key in self.plots:
            self.legends[key].setText("")
            self.empty_text[key].setText("no rounds yet")
            self._show_empty(key, True)

    def _show_empty(self, key: str, empty: bool) -> None:
        """Empty (a note, no values on the axis) or not; only a change is drawn: restyling
        an axis regenerates and repaints it."""
        if self._empty.get(key) == empty:
            return
        self._empty[key] = empty
        p = self.plots[key]
        self.empty_text[key].setVisible(empty)
        p.getAxis("left").setStyle(showValues=not empty)
        if empty:
            p.setXRange(0, 4, padding=0)
            p.setYRange(0, 1, padding=0)
            self.empty_text[key].setPos(2, 0.5)
            p.enableAutoRange()
        if key == "throttle":
            p.setYRange(0, 100)
            p.enableAutoRange(axis="y", enable=False)

    def _curve(self, plot: str, name: str) -> pg.PlotDataItem:
        """The plot's series ``name``: strategies keep their colour in every plot, other
        series take the palette in order, so colours are the same from run to run."""
        key = (plot, name)
        if key not in self.curves:
            others = sum(
                1 for p, n in self.curves if p == plot and n.split(" ")[0] not in STRATEGY_COLOURS
            )
            colour = STRATEGY_COLOURS.get(name.split(" ")[0], PALETTE[others % len(PALETTE)])
            width = 2 if name == self.active else 1
            self.curves[key] = self.plots[plot].plot(
                pen=pg.mkPen(colour, width=width),
                symbol="o",
                symbolSize=4,
                symbolBrush=colour,
                symbolPen=None,
            )
            self.curves[key].opts["name"] = name
            self._legend(plot)
        return self.curves[key]

    def show_extra(self, plot: str, name: str, x: np.ndarray, y: np.ndarray) -> None:
        """A series from outside the run (e.g. real-KVM times), drawn as given."""
        self._curve(plot, name).setData(x, y)

    def _legend(self, plot: str) -> None:
        parts = []
        for (p, name), curve in self.curves.items():
            if p == plot:
                c = curve.opts["pen"].color().name()
                active = plot.startswith("walk") and name == self.active
                label = f"{name} (active)" if active else name
                parts.append(f"<span style='color:{c}'>━●</span>&nbsp;{label}")
        note = self.notes.get(plot, "")
        text = "&nbsp; ".join(parts) + (f"<br><i>{note}</i>" if note else "")
        if text != self.legends[plot].text:  # new text re-lays out the plot's cell
            self.legends[plot].setText(text)

    def set_downtime_limit(self, ms: float) -> None:
        self.downtime_limit.setValue(ms)

    def update_rounds(
        self,
        rounds: Sequence[Mapping[str, object]],
        page_size: int = 4096,
        active: str = "",
        tracking_mode: str = "",
    ) -> None:
        """Take the rounds so far; the plots catch up one per event-loop pass.  ``active`` is
        the strategy that changes the VM; in dbm mode the walk plot shows the leaf scan."""
        self._args = (rounds, page_size, active, tracking_mode)
        self.active = "dbm scan" if tracking_mode == "dbm" else active
        self.series = series_from_rounds(rounds, page_size, tracking_mode == "dbm", active)
        if tracking_mode == "dbm":
            self.notes = {
                "walk_model": "dbm: no write-protect walk; the harvest scans every leaf",
                "walk_cpu": "dbm: the leaf scan is modelled only (see the modelled plot)",
            }
        elif tracking_mode == "manual-clear":
            self.notes = {
                "walk_model": "manual-clear: the CLEARs made as pages are sent",
            }
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
        names = [n for n in self.series if n != "x" and n.startswith(plot + ":")]
        for name in names:
            self._curve(plot, name.split(":", 1)[1]).setData(self.series["x"], self.series[name])
        rounds = self.series["x"].size
        has_data = bool(names) and rounds > 0
        if not has_data:  # say why a plot is empty once there are rounds (dbm's measured)
            why = self.notes.get(plot, "nothing to plot in these rounds")
            self.empty_text[plot].setText(why.split(": ", 1)[-1] if rounds else "no rounds yet")
        self._show_empty(plot, not has_data)
        if not names and plot in self.notes:
            self._legend(plot)
        if self._stale:
            self._next.start()

    # -- exports ------------------------------------------------------------------------------

    def csv_header(self) -> list[str]:
        units = {key: (title, unit) for key, title, _, unit in PLOTS}
        out = ["round"]
        for k in self.series:
            if k != "x":
                plot, label = k.split(":", 1)
                title, unit = units[plot]
                out.append(f"{title}: {label} ({unit})")
        return out

    def export_csv(self, path: str) -> None:
        keys = [k for k in self.series if k != "x"]
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(self.csv_header())
            xs = self.series.get("x", np.zeros(0))
            for i, x in enumerate(xs):
                w.writerow([int(x)] + [float(self.series[k][i]) for k in keys])

    @contextmanager
    def figure(self, session: str, width: int, height: int):
        """A copy of these graphs laid out at ``width`` × ``height`` px, off screen, with a
        title naming the session and saying what is modelled and what is measured."""
        fig = TimingGraphs(figure=(session, 2 if width >= TWO_COLUMNS_FROM else 1))
        fig.setAttribute(Qt.WidgetAttribute.WA_DontShowOnScreen)
        fig.set_downtime_limit(self.downtime_limit.value())
        fig.update_rounds(*self._args)
        fig.flush()
        fig.resize(width, height)
        fig.show()
        settle()
        try:
            yield fig
        finally:
            fig.close()
            fig.deleteLater()

    def export_png(
        self, path: str, session: str = "", width: int = 1600, height: int = 1000, dpi: int = 144
    ) -> bool:
        """A PNG of ``width`` × ``height`` px tagged with ``dpi``; False when nothing was
        written."""
        with self.figure(session, width, height) as fig:
            image = QImage(QSize(width, height), QImage.Format.Format_ARGB32)
            image.fill(Qt.GlobalColor.black)
            image.setDotsPerMeterX(round(dpi / 0.0254))
            image.setDotsPerMeterY(round(dpi / 0.0254))
            fig.render(image)
        return image.save(path, "PNG")

    def export_svg(
        self, path: str, session: str = "", width: int = 1600, height: int = 1000
    ) -> bool:
        """pyqtgraph's SVG exporter over the whole figure: each curve is written in the
        plot's own coordinates (Qt's SVG painter mis-scales cosmetic pens: curves land in the
        wrong place in librsvg and Qt's own renderer)."""
        from pyqtgraph.exporters import SVGExporter

        with self.figure(session, width, height) as fig, closed_paths_tolerated():
            data = SVGExporter(fig.glw.scene()).export(toBytes=True)
        with open(path, "wb") as fh:
            fh.write(data)
        return True


# series that are not strategies take these in the order they appear in their plot
PALETTE = (
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (148, 103, 189),
    (140, 86, 75),
    (127, 127, 127),
)


def series_from_rounds(
    rounds: Sequence[Mapping[str, object]],
    page_size: int = 4096,
    dbm: bool = False,
    active: str = "",
) -> dict[str, np.ndarray]:
    """Columns of per-round values keyed ``plot:label`` (plus ``x``, the round numbers).

    ``remaining`` is in pages of ``page_size`` bytes (the session's granule).  A round in
    which nothing was write-protected (no strategy ran: e.g. round 1 of manual-clear without
    initially-set, whose write-protect was done when logging started, in the setup, and whose
    closing GET protects nothing) is a point at 0, not a gap; a strategy missing from a round
    that has walks (compare switched on later) is a gap.  With ``dbm`` the modelled walk plot
    gets the harvest's leaf scan (``harvest_model_ns``); otherwise the ``active`` strategy
    always has a series."""
    out: dict[str, np.ndarray] = {"x": np.array([r["round"] for r in rounds], dtype=float)}
    seen = {s for r in rounds for s in r.get("walk_model_ns", {})}
    strategies = sorted(seen | ({active} if active and not dbm and rounds else set()))

    def col(fn):
        return np.array([fn(r) for r in rounds], dtype=float)

    def walk(r, key: str, s: str, scale: float) -> float:
        values = r.get(key) or {}
        return values.get(s, np.nan) / scale if values else 0.0

    for s in strategies:
        out[f"walk_model:{s}"] = col(lambda r, s=s: walk(r, "walk_model_ns", s, 1e3))
        out[f"walk_cpu:{s}"] = col(lambda r, s=s: walk(r, "walk_cpu_us", s, 1.0))
    if dbm:
        out["walk_model:dbm scan"] = col(lambda r: r["harvest_model_ns"] / 1e3)
    out["pages:dirty harvested"] = col(lambda r: r["dirty_pages"])
    out["pages:sent"] = col(lambda r: r.get("pages_sent", 0))
    out["pages:remaining"] = col(lambda r: r["remaining_bytes"] / page_size)
    out["downtime:expected downtime"] = col(lambda r: r["expected_downtime_ms"])
    out["throttle:throttle"] = col(lambda r: r["throttle_pct"])
    out["faults:faults"] = col(lambda r: r["faults"])
    out["faults:TLBI"] = col(lambda r: sum(r.get("tlbi", {}).values()))
    return out

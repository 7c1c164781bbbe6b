"""Tools → Sweep: a what-if grid over the current session, run on Dask, shown as a map.

Pick one or two axes (a session field and its values, written as for ``dirtylog sweep
--vary``) and a metric; Run expands and validates the grid (a bad point is refused with the
engine's sentence), then runs it with the same runner as the CLI (``engine.sweep``: a local
cluster of worker processes sized to cores and memory, or the existing Dask scheduler named in
the scheduler field, as ``dirtylog sweep --scheduler``) in a worker thread, so the GUI never
waits.  The map fills in as rows arrive; Cancel stops the cluster's remaining points and keeps
the rows.  Hover a cell for its row, click it to open that point as a session in the main
window.  Export the map as PNG or SVG and the rows as CSV.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, QThread, Signal, Slot
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from app.sweep_map import METRICS, SweepMap, build_grid, describe_row
from engine.sweep.cluster import check_address, local_client, plan_local, remote_client
from engine.sweep.grid import MAX_POINTS, Axis, Point, make_points, parse_vary, resolve_paths
from engine.sweep.rows import write_rows
from engine.sweep.runner import SweepRun
from engine.util.errors import ConfigError, DirtylogError

ClientFactory = Callable[[int], contextlib.AbstractContextManager[Any]]
DEFAULT_AXES = (
    ("migration.bandwidth", "log:1..25Gbit/s:6"),
    ("migration.downtime_limit_ms", "log:30..1000:5"),
)
COMMON_FIELDS = (
    "migration.bandwidth",
    "migration.downtime_limit_ms",
    "migration.auto_converge",
    "migration.policy",
    "tracking.mode",
    "tracking.strategy",
    "seed",
)
NO_AXIS = "(none)"
MAX_WINDOW_POINTS = 1_000  # a grid the window checks without a noticeable freeze


class SweepWorker(QObject):
    """Runs the points on a Dask client in its own thread; rows and the end come back as
    signals (queued to the GUI thread)."""

    row = Signal(object)
    finished = Signal(bool, str)  # all done, the error sentence ("" when none)

    def __init__(self, points: list[Point], workers: int, client_factory: ClientFactory):
        super().__init__()
        self.points, self.workers, self.client_factory = points, workers, client_factory
        self._run: SweepRun | None = None
        self._cancelled = False

    @Slot()
    def run(self) -> None:
        try:
            with self.client_factory(self.workers) as client:
                self._run = SweepRun(client, self.points, self.row.emit)
                if self._cancelled:
                    self._run.cancel()
                done = self._run.run()
        except DirtylogError as exc:
            self.finished.emit(False, str(exc))
            return
        except Exception as exc:  # a bug or a cluster failure: reported, never raised into Qt
            self.finished.emit(False, f"the sweep stopped: {type(exc).__name__}: {exc}")
            return
        self.finished.emit(done, "")

    def cancel(self) -> None:
        """Thread-safe: cancel the remaining points (or, before the cluster is up, all)."""
        self._cancelled = True
        if self._run is not None:
            self._run.cancel()


class _AxisPicker(QWidget):
    def __init__(self, fields: list[str], field: str, values: str, optional: bool) -> None:
        super().__init__()
        self.field = QComboBox()
        self.field.setEditable(True)
        self.field.addItems(([NO_AXIS] if optional else []) + fields)
        self.field.setCurrentText(field)
        self.field.setToolTip("a session field path, e.g. migration.bandwidth or workloads[0].rate")
        self.values = QLineEdit(values)
        self.values.setToolTip(
            "V1,V2,... or a range A..B[UNIT]:N, log:A..B[UNIT]:N (e.g. log:1..25Gbit/s:6)"
        )
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.field, 2)
        lay.addWidget(self.values, 3)

    def axis(self) -> Axis | None:
        field = self.field.currentText().strip()
        if field in ("", NO_AXIS):
            return None
        return parse_vary(f"{field}={self.values.text()}")


class SweepWindow(QMainWindow):
    """The sweep tool over ``session`` (a session dict; trace paths relative to ``base_dir``).
    ``open_point(session)`` opens a point's session; ``client_factory(workers)`` gives the
    Dask client (default: a local cluster of worker processes)."""

    def __init__(
        self,
        session: dict[str, Any],
        base_dir: Path | None,
        open_point: Callable[[dict[str, Any]], None],
        client_factory: ClientFactory = local_client,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Sweep — {session.get('name', 'session')}")
        self.base = resolve_paths(session, base_dir) if base_dir else dict(session)
        self.open_point = open_point
        self.client_factory = client_factory
        self.points: list[Point] = []
        self.axes: list[Axis] = []
        self.rows: list[dict[str, Any]] = []
        self.sweep_thread: QThread | None = None
        self.worker: SweepWorker | None = None
        self._t0 = 0.0
        self._build(session)

    # -- layout ---------------------------------------------------------------------------------

    def _build(self, session: dict[str, Any]) -> None:
        fields = list(COMMON_FIELDS) + [
            f"workloads[{i}].rate" for i in range(len(session.get("workloads", [])))
        ]
        self.x_axis = _AxisPicker(fields, *DEFAULT_AXES[0], optional=False)
        self.y_axis = _AxisPicker(fields, *DEFAULT_AXES[1], optional=True)
        self.metric_box = QComboBox()
        for key, label in METRICS.items():
            self.metric_box.addItem(label, key)
        self.metric_box.currentIndexChanged.connect(self._redraw)
        self.workers = QSpinBox()
        self.workers.setRange(0, 256)
        self.workers.setSpecialValueText("auto")
        self.workers.setToolTip("local worker processes; auto: the cores whose memory fits")
        self.scheduler = QLineEdit()
        self.scheduler.setPlaceholderText("a local cluster")
        self.scheduler.setToolTip(
            "an existing Dask scheduler to run on, tcp://HOST:PORT (as dirtylog sweep "
            "--scheduler); empty: a local cluster of worker processes"
        )
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.progress = QProgressBar()
        self.progress.setFormat("%v / %m points")
        self.status = QLabel("pick the axes and Run")
        self.status.setWordWrap(True)
        self.map = SweepMap()
        self.map.hovered.connect(self._hovered)
        self.map.clicked.connect(self._clicked)
        self.row_label = QLabel("hover a cell for its row; click it to open the point")
        self.row_label.setWordWrap(True)
        self.row_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        exports = QHBoxLayout()
        for text, kind in (("Map as PNG…", "png"), ("Map as SVG…", "svg"), ("Rows as CSV…", "csv")):
            b = QPushButton(text)
            b.clicked.connect(lambda _=False, k=kind: self._export_dialog(k))
            exports.addWidget(b)
        form = QGridLayout()
        form.addWidget(QLabel("x axis"), 0, 0)
        form.addWidget(self.x_axis, 0, 1, 1, 3)
        form.addWidget(QLabel("y axis"), 1, 0)
        form.addWidget(self.y_axis, 1, 1, 1, 3)
        form.addWidget(QLabel("metric"), 2, 0)
        form.addWidget(self.metric_box, 2, 1)
        form.addWidget(QLabel("workers"), 2, 2)
        form.addWidget(self.workers, 2, 3)
        form.addWidget(QLabel("scheduler"), 3, 0)
        form.addWidget(self.scheduler, 3, 1, 1, 3)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.progress, 1)
        body = QWidget()
        lay = QVBoxLayout(body)
        lay.addLayout(form)
        lay.addLayout(buttons)
        lay.addWidget(self.status)
        lay.addWidget(self.map, 1)
        lay.addWidget(self.row_label)
        lay.addLayout(exports)
        self.setCentralWidget(body)
        self.resize(900, 760)

    # -- running --------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.sweep_thread is not None

    def start(self) -> bool:
        """Expand and validate the grid, then run it off the GUI thread; False (with the
        sentence in the status line) when the grid is refused."""
        if self.running:
            return False
        address = self.scheduler.text().strip()
        try:
            axes = [a for a in (self.x_axis.axis(), self.y_axis.axis()) if a is not None]
            _check_window_grid(axes)
            points = make_points(self.base, axes)
            if address:
                _check_scheduler(address)
                factory, where, workers = _remote(address, points), f"the cluster at {address}", 0
            else:
                plan = plan_local(points, self.workers.value() or None)
                factory, where, workers = self.client_factory, plan.note, plan.workers
        except DirtylogError as exc:
            self.status.setText(f"refused: {exc}")
            return False
        self.axes, self.points, self.rows = axes, points, []
        self.progress.setRange(0, len(points))
        self.progress.setValue(0)
        self.status.setText(f"{len(points)} points on {where}; starting the cluster…")
        self._redraw()
        self._t0 = time.monotonic()
        # Dask's first import happens here, in the GUI thread: importing it for the first
        # time in the worker thread while the event loop runs can hang (seen offscreen)
        import distributed  # noqa: F401

        self.sweep_thread = QThread()
        self.worker = SweepWorker(points, workers, factory)
        self.worker.moveToThread(self.sweep_thread)
        queued = Qt.ConnectionType.QueuedConnection
        self.worker.row.connect(self._row_arrived, queued)
        self.worker.finished.connect(self._finished, queued)
        # the thread's loop ends when the run does, even after the window has let it go
        self.worker.finished.connect(self.sweep_thread.quit, Qt.ConnectionType.DirectConnection)
        self.sweep_thread.started.connect(self.worker.run)
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.sweep_thread.start()
        return True

    def cancel(self) -> None:
        if self.worker is not None:
            self.status.setText("cancelling: rows finished so far are kept")
            self.worker.cancel()

    def _row_arrived(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        n, total = len(self.rows), len(self.points)
        self.progress.setValue(n)
        elapsed = time.monotonic() - self._t0
        rate = n / elapsed if elapsed > 0 else 0.0
        left = (total - n) / rate if rate else 0.0
        self.status.setText(
            f"{n} of {total} points, {rate * 60:.1f} points/min (measured), about {left:.0f} s left"
        )
        self._redraw()

    def _finished(self, done: bool, error: str) -> None:
        if self.sweep_thread is not None:
            # (its loop was told to quit already, by the worker's own ``finished``: only
            # wait for it here, not quit it a second time)
            self.sweep_thread.wait()
        self.sweep_thread, self.worker = None, None
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        n = len(self.rows)
        if error:
            self.status.setText(f"stopped after {n} points: {error}")
        elif done:
            self.status.setText(
                f"{n} points in {time.monotonic() - self._t0:.1f} s (measured, cluster start "
                "included)"
            )
        else:
            self.status.setText(f"cancelled: {n} of {len(self.points)} points kept")

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Closing never waits for the sweep: it is cancelled and its thread ends on its own
        (connecting to an unresponsive scheduler can take 2 × CONNECT_TIMEOUT_S)."""
        if self.running:  # (the thread and its worker are set and cleared together)
            self.worker.cancel()
            _ending().keep(self.sweep_thread, self.worker)
            self.sweep_thread, self.worker = None, None
        super().closeEvent(event)

    def show_rows(self, points: list[Point], axes: list[Axis], rows: list[dict[str, Any]]) -> None:
        """Show rows already run (e.g. read from ``dirtylog sweep --out``) over ``axes`` (one
        or two of the grid's); ``points`` is the whole grid the rows' indices refer to."""
        self.points, self.axes, self.rows = points, axes, list(rows)
        self.progress.setRange(0, len(rows))
        self.progress.setValue(len(rows))
        self._redraw()

    # -- the map --------------------------------------------------------------------------------

    def grid(self):
        """The map's MapGrid for the rows so far (None before a run)."""
        if not self.axes:
            return None
        limits = {p.index: float(p.session["migration"]["downtime_limit_ms"]) for p in self.points}
        return build_grid(
            self.rows,
            [(a.field, a.values) for a in self.axes],
            self.metric_box.currentData(),
            limits,
        )

    def _redraw(self) -> None:
        grid = self.grid()
        if grid is not None:
            self.map.show_grid(grid)

    def _hovered(self, row: dict[str, Any] | None) -> None:
        if row is not None:
            self.row_label.setText(describe_row(row, [a.field for a in self.axes]))

    def _clicked(self, row: dict[str, Any]) -> None:
        self.open_point(self.points[int(row["point"]) - 1].session)

    # -- exports --------------------------------------------------------------------------------

    def _export_dialog(self, kind: str) -> None:
        filters = {"png": "PNG (*.png)", "svg": "SVG (*.svg)", "csv": "CSV (*.csv)"}
        path, _ = QFileDialog.getSaveFileName(self, "Export", f"sweep.{kind}", filters[kind])
        if path:
            self.export(kind, Path(path))

    def export(self, kind: str, path: Path) -> None:
        """``png``/``svg``: the map as shown; ``csv``: the rows (as ``dirtylog sweep``)."""
        try:
            if kind == "csv":
                write_rows(path, self.rows, self.axes, self.base.get("name", "session"))
            elif kind == "png":
                self.map.grab().save(str(path))
            else:
                _export_svg(self.map, path)
        except (DirtylogError, OSError) as exc:
            self.status.setText(f"cannot export: {exc}")
            return
        self.status.setText(f"exported {path}")


class _Ending(QObject):
    """Cancelled sweeps whose thread has not ended yet.  Their QThread and worker stay
    referenced until the thread's ``finished`` (a QThread destroyed while running aborts the
    process) and are let go here, in the GUI thread (Qt objects are freed there only).  If the
    application quits first, it waits for them (at most the connect's timeouts)."""

    def __init__(self) -> None:
        app = QCoreApplication.instance()
        super().__init__(app)
        self.threads: dict[QThread, SweepWorker] = {}
        app.aboutToQuit.connect(self.wait_all)

    def keep(self, thread: QThread, worker: SweepWorker) -> None:
        self.threads[thread] = worker
        thread.finished.connect(self._ended)  # queued: this object lives in the GUI thread
        if thread.isFinished():
            self.threads.pop(thread, None)

    @Slot()
    def _ended(self) -> None:
        self.threads.pop(self.sender(), None)

    @Slot()
    def wait_all(self) -> None:
        for thread in list(self.threads):
            thread.wait()
        self.threads.clear()


_ENDING: list[_Ending] = []


def _ending() -> _Ending:
    """The application's one _Ending (made in the GUI thread, on the first close)."""
    if not _ENDING:
        _ENDING.append(_Ending())
    return _ENDING[0]


def _check_window_grid(axes: list[Axis]) -> None:
    """The window expands and checks its grid on the GUI thread (a few ms a point: its
    session parsed and its memory estimated), so it takes at most MAX_WINDOW_POINTS; a
    bigger grid is ``dirtylog sweep``'s (up to MAX_POINTS)."""
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_WINDOW_POINTS:
        raise ConfigError(
            "grid",
            f"has {count:,} points; this window runs at most {MAX_WINDOW_POINTS:,} (checking "
            f"them would freeze it), dirtylog sweep up to {MAX_POINTS:,}",
        )


def _check_scheduler(address: str) -> None:
    """The scheduler field's address, checked as ``dirtylog sweep --scheduler`` checks it
    (the refusal names the field as the window shows it)."""
    try:
        check_address(address)
    except ConfigError as exc:
        raise ConfigError("scheduler", exc.rule) from None


def _remote(address: str, points: list[Point]) -> ClientFactory:
    """A client factory on the existing cluster at ``address`` (its size is its own)."""
    return lambda _workers: remote_client(address, points)


def _export_svg(widget: QWidget, path: Path) -> None:
    """The map widget as drawn, legend included, through Qt's SVG painter.  The graphs use
    pyqtgraph's SVGExporter instead (Qt's painter misplaces their cosmetic-pen curves); the
    map has no such curve (its contour lands on the cell edges here), while SVGExporter would
    drop the legend beneath the plot and embed the cells as a tiny bitmap that Qt's SVG
    renderer smooths into gradients (checked: a 3 × 3 grid rendered by QSvgRenderer)."""
    from PySide6.QtCore import QPoint, QRect, QSize
    from PySide6.QtGui import QPainter
    from PySide6.QtSvg import QSvgGenerator

    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(QSize(widget.width(), widget.height()))
    gen.setViewBox(QRect(0, 0, widget.width(), widget.height()))
    gen.setTitle("DirtyLog Inspector sweep map")
    painter = QPainter(gen)
    try:
        widget.render(painter, QPoint(0, 0))
    finally:
        painter.end()


def add_to_menu(window, menu) -> None:
    """Tools → Sweep…: opens the sweep tool on the window's current session."""
    from PySide6.QtGui import QAction

    from engine.migration.simulation import Simulation

    def open_point(session: dict[str, Any]) -> None:
        window.load_simulation(Simulation.from_dict(session), None)

    def show() -> None:
        if window.sim is None:
            return
        sw = SweepWindow(window.session_data(), window.sim.base_dir, open_point, parent=window)
        sw.setWindowFlag(Qt.WindowType.Window)
        window.sweep_window = sw
        sw.show()

    act = QAction("&Sweep…", window)
    act.setStatusTip("What-if grid over this session's fields, run on Dask, shown as a map")
    act.triggered.connect(show)
    menu.addAction(act)


def render(argv: list[str] | None = None) -> int:
    """``python -m app.sweep_window SWEEP ROWS --x F --y F [--where F=V] --png OUT``: the map of
    rows from ``dirtylog sweep`` as a PNG, offscreen (how the README's pictures are made)."""
    import argparse
    import os

    from engine.sweep.grid import format_value, seed_axis
    from engine.sweep.rows import read_rows
    from engine.sweep.spec import load_start

    p = argparse.ArgumentParser(prog="python -m app.sweep_window", description=render.__doc__)
    p.add_argument("sweep", help="the sweep file (or session) the rows were run from")
    p.add_argument("rows", help="the rows (.csv or .json) dirtylog sweep wrote")
    p.add_argument("--x", required=True, help="field on the x axis")
    p.add_argument("--y", help="field on the y axis")
    p.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="keep only rows with this value of another varied field",
    )
    p.add_argument("--metric", choices=sorted(METRICS), default="downtime_ms")
    p.add_argument("--title", help="a prefix for the map's title")
    p.add_argument("--png", required=True)
    args = p.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    import pyqtgraph as pg

    app = pg.mkQApp("sweep map")
    start = load_start(args.sweep)
    axes = [parse_vary(v) for v in start.vary]
    if start.seeds:
        axes.append(seed_axis(int(start.base.get("seed", 0)), start.seeds))
    points = make_points(start.base, axes)
    by_field = {a.field: a for a in axes}
    where = dict(w.split("=", 1) for w in args.where)
    rows = [
        r for r in read_rows(args.rows) if all(format_value(r[f]) == v for f, v in where.items())
    ]
    w = SweepWindow(start.base, None, lambda s: None)
    w.metric_box.setCurrentIndex(w.metric_box.findData(args.metric))
    w.show_rows(points, [by_field[f] for f in (args.x, args.y) if f], rows)
    if args.title:
        w.map.plot.setTitle(f"{args.title} — {w.map.plot.getPlotItem().titleLabel.text}")
    w.map.resize(900, 600)
    w.map.show()
    for _ in range(3):  # the axes widen to their labels on the first paint
        app.processEvents()
        w.map.grab()
    w.map.grab().save(args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(render())

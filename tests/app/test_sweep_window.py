"""Tools → Sweep, offscreen: the map against the rows, hover, click to open, cancel, exports.

The points run on a one-thread in-process Dask cluster (fast to start); the CLI's tests cover
worker processes and a real scheduler.  Expected cells are placed from the rows by hand.
"""

from __future__ import annotations

import csv
import time

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QPointF, Qt, QThread  # noqa: E402

from app import sweep_window  # noqa: E402
from app.sweep_map import ERROR, FIRST_LEVEL, NOT_CONVERGED  # noqa: E402
from app.sweep_window import SweepWindow  # noqa: E402
from engine.cli.bench_sweep import small_guest  # noqa: E402

BANDWIDTHS = ["100Mbit/s", "400Mbit/s", "1Gbit/s"]
LIMITS = [5, 30]
TINY = small_guest(  # 16 MiB, dirtying faster than 100 Mbit/s, slower than 1 Gbit/s
    size="16MiB", rate="5000 pages/s", bandwidth="200Mbit/s", timeout_s=1, name="tiny", seed=3
)


@pytest.fixture
def sweep(qtbot, thread_client_factory):
    opened = []
    w = SweepWindow(TINY, None, opened.append, client_factory=thread_client_factory)
    qtbot.addWidget(w)
    w.x_axis.field.setCurrentText("migration.bandwidth")
    w.x_axis.values.setText(",".join(BANDWIDTHS))
    w.y_axis.field.setCurrentText("migration.downtime_limit_ms")
    w.y_axis.values.setText(",".join(map(str, LIMITS)))
    w.show()
    yield w, opened
    w.close()
    assert w.sweep_thread is None


def _cell_pos(w, y, x):
    """The map widget's viewport position of the centre of cell (y, x)."""
    scene = w.map.plot.getViewBox().mapViewToScene(QPointF(x + 0.5, y + 0.5))
    return w.map.plot.mapFromScene(scene)


def test_the_map_shows_the_rows(sweep, qtbot, tmp_path):
    w, opened = sweep
    assert w.start()
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert w.status.text().startswith("6 points in")
    assert w.progress.value() == 6
    rows = w.rows
    assert sorted(r["point"] for r in rows) == [1, 2, 3, 4, 5, 6]
    image = w.map.image.image
    assert image.shape == (2, 3) and image.dtype == np.uint8
    converged = {}
    for r in rows:  # first axis (bandwidth) slowest: point = 1 + 2 * x + y
        x, y = (
            BANDWIDTHS.index(r["migration.bandwidth"]),
            LIMITS.index(r["migration.downtime_limit_ms"]),
        )
        assert r["point"] == 1 + 2 * x + y
        if r["outcome"] == "completed":
            assert image[y, x] >= FIRST_LEVEL
            converged[(y, x)] = r["downtime_ms"]
            assert w.map.grid.inside[y, x] == (r["downtime_ms"] <= LIMITS[y])
        else:
            assert image[y, x] == (ERROR if r["outcome"] == "error" else NOT_CONVERGED)
            assert w.map.grid.inside[y, x] == 0
    outcomes = {r["outcome"] for r in rows}
    assert outcomes == {"completed", "not-converged"}
    # colours follow the metric: the smallest downtime is the darkest level, the largest 255
    lo = min(converged, key=converged.get)
    hi = max(converged, key=converged.get)
    assert image[lo] == FIRST_LEVEL and image[hi] == 255
    # ✕ marks exactly the non-converged cells
    marked = {(int(p.pos().y() - 0.5), int(p.pos().x() - 0.5)) for p in w.map.marks.points()}
    assert marked == {
        (LIMITS.index(r["migration.downtime_limit_ms"]), BANDWIDTHS.index(r["migration.bandwidth"]))
        for r in rows
        if r["outcome"] == "not-converged"
    }

    # the other metric redraws from the same rows
    w.metric_box.setCurrentIndex(w.metric_box.findData("total_time_ms"))
    totals = {c: w.map.grid.cells[c]["total_time_ms"] for c in converged}
    assert w.map.image.image[max(totals, key=totals.get)] == 255

    # hover a cell: its row; click it: that point opens as a session
    qtbot.mouseMove(w.map.plot.viewport(), _cell_pos(w, 1, 2))
    qtbot.waitUntil(lambda: w.row_label.text().startswith("point 6: "))
    assert "migration.bandwidth=1Gbit/s, migration.downtime_limit_ms=30" in w.row_label.text()
    qtbot.mouseClick(w.map.plot.viewport(), Qt.MouseButton.LeftButton, pos=_cell_pos(w, 0, 0))
    qtbot.waitUntil(lambda: len(opened) == 1)
    assert opened[0]["migration"]["bandwidth"] == "100Mbit/s"
    assert opened[0]["migration"]["downtime_limit_ms"] == 5

    # exports
    w.export("csv", tmp_path / "rows.csv")
    with open(tmp_path / "rows.csv", newline="") as fh:
        back = list(csv.DictReader(fh))
    assert [int(r["point"]) for r in back] == [1, 2, 3, 4, 5, 6]
    w.export("png", tmp_path / "map.png")
    w.export("svg", tmp_path / "map.svg")
    assert (tmp_path / "map.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "map.svg").read_text()


def test_cancel_keeps_the_rows_so_far(sweep, qtbot):
    w, _ = sweep
    assert w.start()
    w.cancel()
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert w.status.text().startswith("cancelled: ")
    assert len(w.rows) < 6
    assert w.run_button.isEnabled()


def test_a_bad_axis_is_refused_with_its_sentence(sweep):
    w, _ = sweep
    w.x_axis.values.setText("0Gbit/s,1Gbit/s")
    assert not w.start()
    assert w.status.text() == (
        "refused: point 1 of 4 (migration.bandwidth=0Gbit/s, migration.downtime_limit_ms=5): "
        "migration.bandwidth: a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), "
        'got "0Gbit/s"'
    )
    assert w.sweep_thread is None


def test_tools_menu_opens_the_sweep_on_the_current_session(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow
    from engine.migration.simulation import Simulation

    settings = QSettings(str(tmp_path / "inspector.ini"), QSettings.Format.IniFormat)
    main = MainWindow(settings, tmp_path / "autosave")
    qtbot.addWidget(main)
    main.load_simulation(Simulation.from_dict(TINY), None)
    action = next(a for a in main.tools_menu.actions() if a.text() == "&Sweep…")
    assert main.tools_menu.menuAction().isVisible()
    action.trigger()
    sw = main.sweep_window
    assert sw.windowTitle() == "Sweep — tiny"
    assert sw.base["migration"]["timeout_s"] == 1
    # a clicked cell opens its point in the main window as the session
    from engine.sweep.grid import make_points, parse_vary

    sw.points = make_points(sw.base, [parse_vary("migration.bandwidth=1Gbit/s,3Gbit/s")])
    sw._clicked({"point": 2})
    assert main.sim.cfg.migration.bandwidth == 3e9 / 8
    assert main.sim.cfg.name == "tiny [migration.bandwidth=3Gbit/s]"
    sw.close()
    main.close()


def test_a_bad_scheduler_address_is_refused_with_its_sentence(sweep):
    w, _ = sweep
    w.scheduler.setText("localhost:8786")
    assert not w.start()
    assert w.status.text() == (
        "refused: scheduler: expected an address such as tcp://HOST:8786 (a host and a port "
        "1..65535), got 'localhost:8786'"
    )
    assert w.sweep_thread is None


def test_the_scheduler_field_runs_the_points_on_that_cluster(qtbot):
    """An address in the scheduler field: the points run on that cluster (the window's own
    local-cluster factory is never called), every row arrives."""
    from distributed import LocalCluster

    def no_local_cluster(workers):
        raise AssertionError("a local cluster was started despite the scheduler field")

    w = SweepWindow(TINY, None, lambda s: None, client_factory=no_local_cluster)
    qtbot.addWidget(w)
    w.x_axis.values.setText("1Gbit/s")
    w.y_axis.field.setCurrentText("(none)")
    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",  # a real address, not the in-process one
        host="127.0.0.1",
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        worker_dashboard_address="127.0.0.1:0",
    ) as cluster:
        w.scheduler.setText(cluster.scheduler_address)
        assert w.start()
        assert w.status.text() == (
            f"1 points on the cluster at {cluster.scheduler_address}; starting the cluster…"
        )
        qtbot.waitUntil(lambda: not w.running, timeout=120_000)
    assert [r["point"] for r in w.rows] == [1], w.status.text()
    assert w.rows[0]["outcome"] == "completed"  # 1 Gbit/s outruns the guest's dirtying
    w.close()


def test_a_grid_too_big_to_check_on_the_gui_thread_is_refused_at_once(sweep):
    """300 × 300 points took 42 s to expand and 40 s more to estimate, on the GUI thread;
    the window takes 1,000 points (the boundary runs; 1,001 is refused, fast)."""
    w, _ = sweep
    w.x_axis.values.setText("1..2Gbit/s:1001")
    w.y_axis.field.setCurrentText("(none)")
    t0 = time.monotonic()
    assert not w.start()
    assert time.monotonic() - t0 < 0.5
    assert w.status.text() == (
        "refused: grid: has 1,001 points; this window runs at most 1,000 (checking them "
        "would freeze it), dirtylog sweep up to 100,000"
    )
    assert w.sweep_thread is None
    w.x_axis.values.setText("1..2Gbit/s:1000")
    assert sweep_window._check_window_grid([w.x_axis.axis()]) is None


def test_closing_while_the_cluster_connects_does_not_wait_for_it(qtbot):
    """An unresponsive scheduler holds the connect for up to 2 × 10 s; closing the window
    cancels the sweep and returns at once.  The thread is kept (a QThread destroyed while
    running aborts the process) until it ends on its own, then let go."""
    import contextlib
    import threading

    release = threading.Event()

    @contextlib.contextmanager
    def unresponsive(workers):
        release.wait(30)
        raise OSError("the scheduler never answered")
        yield  # (a context manager's shape)

    w = SweepWindow(TINY, None, lambda s: None, client_factory=unresponsive)
    qtbot.addWidget(w)
    w.x_axis.values.setText("1Gbit/s")
    w.y_axis.field.setCurrentText("(none)")
    w.show()
    assert w.start()
    thread = w.sweep_thread
    t0 = time.monotonic()
    w.close()
    assert time.monotonic() - t0 < 1.0
    assert w.sweep_thread is None and w.worker is None
    ending = sweep_window._ending()
    assert thread.isRunning() and thread in ending.threads
    release.set()
    qtbot.waitUntil(lambda: thread not in ending.threads, timeout=10_000)
    assert thread.isFinished()


def test_quitting_waits_for_a_closed_sweeps_thread(qtbot):
    """The application quitting (aboutToQuit) while a closed window's sweep still connects
    waits for its thread rather than destroying it running (which aborts the process)."""
    import contextlib
    import threading

    release = threading.Event()

    @contextlib.contextmanager
    def unresponsive(workers):
        release.wait(30)
        raise OSError("the scheduler never answered")
        yield  # (a context manager's shape)

    w = SweepWindow(TINY, None, lambda s: None, client_factory=unresponsive)
    qtbot.addWidget(w)
    w.x_axis.values.setText("1Gbit/s")
    w.y_axis.field.setCurrentText("(none)")
    assert w.start()
    thread = w.sweep_thread
    w.close()
    ending = sweep_window._ending()
    threading.Timer(0.3, release.set).start()
    ending.wait_all()  # (what aboutToQuit calls)
    assert thread.isFinished() and ending.threads == {}


class _CountingThread(QThread):
    """A QThread that counts the calls to its ``quit``."""

    def __init__(self) -> None:
        super().__init__()
        self.quits = 0

    def quit(self) -> None:
        self.quits += 1
        super().quit()


def test_a_sweep_thread_is_quit_once(sweep, qtbot, monkeypatch):
    """A sweep's thread is told to quit once, by its worker's end (which also ends it after
    its window has let it go); the window's own end-of-run handler only waits for it (it
    quit it a second time)."""
    monkeypatch.setattr(sweep_window, "QThread", _CountingThread)
    w, _ = sweep
    w.x_axis.values.setText("1Gbit/s")
    w.y_axis.field.setCurrentText("(none)")
    assert w.start()
    thread = w.sweep_thread
    qtbot.waitUntil(lambda: not w.running, timeout=60_000)
    assert thread.isFinished() and thread.quits == 1


def test_closing_the_main_window_closes_its_sweep_windows(qtbot, tmp_path):
    """Closing the main window closes every sweep window it opened (their closeEvent
    cancels a sweep in flight): the app quits with the one close, and no sweep window is
    left to open points in a closed main window."""
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow
    from engine.migration.simulation import Simulation

    settings = QSettings(str(tmp_path / "inspector.ini"), QSettings.Format.IniFormat)
    main = MainWindow(settings, tmp_path / "autosave")
    qtbot.addWidget(main)
    main.load_simulation(Simulation.from_dict(TINY), None)
    main.show()
    action = next(a for a in main.tools_menu.actions() if a.text() == "&Sweep…")
    action.trigger()
    first = main.sweep_window
    action.trigger()
    second = main.sweep_window
    assert first is not second and first.isVisible() and second.isVisible()
    main.close()
    assert not first.isVisible() and not second.isVisible()

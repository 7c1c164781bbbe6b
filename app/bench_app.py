"""``dirtylog-inspector --bench``: figures 7 (heat-map frame rate), 8 and 10 (event-loop stalls),
11 (frames drawn while the 1 TiB session migrates in the app).

Prints one JSON line ``{"figures": [...]}`` that ``dirtylog bench`` merges into its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def fig_frame_rate(app, npages: int, frames: int) -> dict:
    """Figure 7: heat-map frames per second at ``npages`` pages, on the path the app takes.

    A guest of ``npages`` pages migrates (``realtime_session``); between two frames it runs
    FRAME_SIM_S of simulated time (not timed: what the app's worker covers in a frame's
    interval at full speed).  Each frame is timed in its two stages, as the app runs them on
    two threads: the worker's (the max-pyramid of write heat refreshed from the cells the run
    touched, the overview coded and coloured: ``SimWorker._emit``'s image) and the GUI
    thread's (the map shows the frame and repaints).  The frame rate is set by the slower
    stage.  Until 30 Nov 2026 this figure timed a full fold of a random 16 M-value array
    per frame, which the app has not done since the pyramid; the detail keeps that time
    (``full_fold_ms_per_frame``) for comparison.  Units: frames per second and milliseconds
    of wall time, measured on this host.
    """
    from app.heatmap import HeatMap
    from app.heatmap_colours import coloured
    from app.heatmap_data import render
    from app.heatmap_pyramid import SimLayerPyramid, kept_levels, overview_factor
    from engine.cli.bench_migration import realtime_session
    from engine.migration.simulation import Simulation

    sim = Simulation.from_dict(realtime_session(npages))
    cells = 1 << 20
    factor = overview_factor(npages, cells)
    pyramid = SimLayerPyramid(sim, "heat", *kept_levels(factor))
    view = HeatMap()
    view.resize(1200, 900)
    view.show()

    def frame() -> np.ndarray:
        """(worker wall, GUI wall, worker CPU, GUI CPU) of one frame, in seconds."""
        target = sim.t_ns + int(FRAME_SIM_S * 1e9)
        while sim.t_ns < target and not sim.finished:
            sim.advance(int(min(256, max(1, (target - sim.t_ns) // sim.tick_ns))))
        t0, c0 = time.perf_counter(), time.thread_time()
        pyramid.refresh()
        img = coloured(render(pyramid, "heat", 1024, cells, factor, sim.heat_state()[1]))
        t1, c1 = time.perf_counter(), time.thread_time()
        view.show_frame(sim.snapshot(), img)
        view.glw.repaint()
        app.processEvents()
        return np.array([t1 - t0, time.perf_counter() - t1, c1 - c0, time.thread_time() - c1])

    for _ in range(3):  # (warm-up: logging on, the pyramid built, the first paint)
        frame()
    worker_s, gui_s, worker_cpu, gui_cpu = map(float, sum(frame() for _ in range(frames)))
    t0 = time.perf_counter()
    layer = sim.heat_state()[0]
    for _ in range(3):
        render(layer, "heat", 1024, cells, factor, sim.heat_state()[1])
    full_fold_ms = (time.perf_counter() - t0) / 3 * 1e3
    fps = frames / max(worker_s, gui_s)
    view.close()
    return {
        "id": 7,
        "name": f"heat-map frames per second at {npages:,} pages (the app's path, offscreen)",
        "value": round(fps, 1),
        "unit": "fps",
        "goal": ">= 30",
        "met": fps >= 30,
        "detail": {
            "worker_ms_per_frame": 1e3 * worker_s / frames,
            "gui_ms_per_frame": 1e3 * gui_s / frames,
            "serial_fps": frames / (worker_s + gui_s),
            "worker_cpu_ms_per_frame": 1e3 * worker_cpu / frames,
            "gui_cpu_ms_per_frame": 1e3 * gui_cpu / frames,
            "simulated_ms_between_frames": FRAME_SIM_S * 1e3,
            "full_fold_ms_per_frame": round(full_fold_ms, 1),
        },
    }


FRAME_SIM_S = 1 / 30  # simulated time run between two frames of figure 7


MAX_GUESTS = 10


def fig_stall(app, npages: int, seconds: float) -> list[dict]:
    """Figures 8 and 10: how late a 10 ms GUI timer fires while the guest migrates in the app.

    Figure 8 is the worst lateness on a quiet machine (goal ≤ 50 ms); figure 10 is the 99th
    percentile with one core kept busy by a competing process this bench starts itself (goal
    ≤ 20 ms), since a stall that appears whenever another program runs is what users meet.
    Each reports the other statistic in its detail. Units: milliseconds, measured on this host.
    """
    quiet = _stall_samples(app, npages, seconds)
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        busy = _stall_samples(app, npages, seconds)
    finally:
        hog.kill()
        hog.wait()
    return [
        _stall_figure(8, "worst event-loop stall", "quiet machine", quiet, "worst", 50),
        _stall_figure(10, "99th-percentile event-loop stall", "one core busy", busy, "p99", 20),
    ]


def _stall_figure(fid: int, what: str, where: str, s: dict, key: str, goal: float) -> dict:
    value = round(s[key], 1)
    return {
        "id": fid,
        "name": f"{what} while a {s['npages']:,}-page guest migrates ({where})",
        "value": value,
        "unit": "ms",
        "goal": f"<= {goal:g}",
        "met": value <= goal,
        "detail": {k: v for k, v in s.items() if k != key},
    }


def _stall_samples(app, npages: int, seconds: float) -> dict:
    """Lateness of every 10 ms timer beat while migrations run, summarised (ms).

    Only time during which a migration runs counts: the guest is loaded (not timed), started,
    then timed from its first frame until its migration ends; that repeats with a fresh guest
    until ``seconds`` of migration have been timed (a 64 GiB guest migrates in a few seconds
    at full speed, and a finished run sends no frames), or ``MAX_GUESTS`` guests have run.
    """
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from app.main_window import MainWindow
    from engine.cli.bench_migration import realtime_session
    from engine.migration.simulation import Simulation

    settings = QSettings(os.devnull, QSettings.Format.IniFormat)
    window = MainWindow(settings, None)
    window.resize(1400, 900)
    window.show()
    clock = QElapsedTimer()
    clock.start()
    state = {"last": 0, "frames": 0, "timing": False}
    late: list[float] = []

    def beat() -> None:
        now = clock.elapsed()
        if state["timing"]:
            late.append(max(0.0, now - state["last"] - 10))
        state["last"] = now

    def shown(frame) -> None:
        state["frames"] += state["timing"]

    window.frame_shown.connect(shown)
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    timer.start()
    timed = simulated = 0.0
    runs = 0
    while timed < seconds and runs < MAX_GUESTS:
        window.load_simulation(Simulation.from_dict(realtime_session(npages)), None)
        window.speed.setCurrentIndex(window.speed.count() - 1)
        window.last_frame = None
        window.runner.req_running.emit(True)
        while window.last_frame is None or not (
            window.last_frame.running or window.last_frame.finished
        ):
            _spin(app, 0.0)  # until it runs (the first frame is the paused one)
        runs += 1
        state["timing"], state["last"] = True, clock.elapsed()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds - timed:
            frame = window.last_frame
            if frame is not None and frame.finished:
                break
            _spin(app, 0.0)
        state["timing"] = False
        timed += time.perf_counter() - t0
        simulated += window.last_frame.snapshot.t_ns / 1e9 if window.last_frame else 0.0
    timer.stop()
    window.close()
    samples = np.asarray(late or [0.0])
    return {
        "npages": npages,
        "worst": float(samples.max()),
        "p99": float(np.percentile(samples, 99)),
        "beats": int(samples.size),
        "frames": state["frames"],
        "migrating_s": round(timed, 2),
        "guests": runs,
        "simulated_s": round(simulated, 1),
    }


def _spin(app, seconds: float) -> None:
    """Run the event loop for ``seconds`` (one pass when 0), as an application would."""
    end = time.perf_counter() + seconds
    while True:
        app.processEvents()
        time.sleep(0.001)
        if time.perf_counter() >= end:
            return


TIB_SESSION = Path(__file__).resolve().parents[1] / "resources" / "sessions" / "bench-1tib.json"
TIB_GOAL_FPS = 10


def fig_terabyte_frames(app, quick: bool, seconds: float) -> dict:
    """Figure 11: heat-map frames the main window draws per second while ``bench-1tib.json``
    (268 M pages) migrates in it, at the default speed (the guest cannot keep up with it).

    Loading the session and turning logging on (the first frames) are not timed; then the
    frames shown while it runs are counted for ``seconds`` of wall time.  The detail gives
    what one frame's image costs the worker with the run paused (the pyramid refreshed from
    the touched cells, then rendered), the pyramid's memory, and the simulated time covered.
    ``quick``: a 1 GiB guest instead (checks that it runs).  Units: frames per second and
    milliseconds, measured on this host.
    """
    from PySide6.QtCore import QSettings

    from app.heatmap_data import render
    from app.heatmap_pyramid import overview_factor
    from app.main_window import MainWindow
    from engine.cli.bench_migration import realtime_session
    from engine.migration.simulation import Simulation

    settings = QSettings(os.devnull, QSettings.Format.IniFormat)
    window = MainWindow(settings, None)
    window.resize(1400, 900)
    window.show()
    t0 = time.perf_counter()
    if quick:
        sim = Simulation.from_dict(realtime_session(1 << 18))
    else:
        sim = Simulation.from_file(TIB_SESSION)
    window.load_simulation(sim, None)
    load_s = time.perf_counter() - t0
    frames: list[float] = []
    window.frame_shown.connect(lambda f: frames.append(time.perf_counter()) if f.running else None)
    window.runner.req_running.emit(True)
    while not frames or sim.t_ns == 0:  # the run has started: logging is on
        _spin(app, 0.0)
    frames.clear()
    t_sim0, t0 = sim.t_ns, time.perf_counter()
    _spin(app, seconds)
    wall = time.perf_counter() - t0
    shown, t_sim1 = len(frames), sim.t_ns
    window.runner.req_running.emit(False)
    while window.last_frame is None or window.last_frame.running:
        _spin(app, 0.0)
    worker = window.runner.worker
    pyramid = worker._layers
    t1 = time.perf_counter()
    pyramid.refresh()
    factor = overview_factor(pyramid.size, worker.max_cells)
    render(pyramid, worker.mode, 1024, worker.max_cells, factor, sim.heat_state()[1])
    build_ms = (time.perf_counter() - t1) * 1e3
    fps = shown / wall
    window.close()
    npages = sim.vm.slots[0].slot.npages
    return {
        "id": 11,
        "name": f"heat-map frames per second while a {npages:,}-page guest migrates in the app",
        "value": round(fps, 1),
        "unit": "fps",
        "goal": f">= {TIB_GOAL_FPS}",
        "met": fps >= TIB_GOAL_FPS,
        "detail": {
            "session": "quick 1 GiB guest" if quick else TIB_SESSION.name,
            "frames": shown,
            "wall_s": round(wall, 2),
            "load_s": round(load_s, 1),
            "simulated_ms": round((t_sim1 - t_sim0) / 1e6, 1),
            "frame_build_ms_paused": round(build_ms, 1),
            "pyramid_mib": round(sum(lv.nbytes for lv in pyramid.levels) / 2**20, 1),
            "change_marks_mib": round(sim.changes.marks.nbytes / 2**20, 1),
        },
    }


def _with_load(measure) -> list[dict]:
    """The figures ``measure()`` returns, each with the machine's 1-minute load average
    before and after in its detail: on a shared machine a stall or a frame rate means little
    without it (figure 10's includes the competing process the bench starts)."""
    before = os.getloadavg()[0]
    figures = measure()
    after = os.getloadavg()[0]
    for fig in figures:
        fig["detail"]["load_average_1min_before"] = round(before, 2)
        fig["detail"]["load_average_1min_after"] = round(after, 2)
    return figures


def run_app_bench(quick: bool) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    sys.setswitchinterval(0.001)  # as the app does (app/launch.py)
    from app import main_window  # noqa: F401 (imported before the freeze, as the app does)
    from app.gui_gc import collect_garbage_in_the_gui_thread, freeze_startup_objects

    app = QApplication.instance() or QApplication([])
    collect_garbage_in_the_gui_thread()
    freeze_startup_objects()
    npages = 1 << 18 if quick else 1 << 24
    figures = [
        *_with_load(lambda: [fig_frame_rate(app, npages, 10 if quick else 60)]),
        *_with_load(lambda: fig_stall(app, npages, 2.0 if quick else 10.0)),
        *_with_load(lambda: [fig_terabyte_frames(app, quick, 2.0 if quick else 20.0)]),
    ]
    print(json.dumps({"figures": figures}))
    return 0

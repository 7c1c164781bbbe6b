"""``dirtylog-inspector --bench``: figures 7 (heat-map frame rate), 8 and 10 (event-loop stalls).

Prints one JSON line ``{"figures": [...]}`` that ``dirtylog bench`` merges into its report.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np


def fig_frame_rate(app, npages: int, frames: int) -> dict:
    """Figure 7: heat-map frames per second at ``npages`` pages.

    The app builds each frame in two stages that run in parallel on two threads: the worker
    folds the pages into the view's cells and codes them (numpy releases the GIL), the GUI
    thread uploads the image and renders it.  The frame rate is set by the slower stage;
    both are measured here and reported.
    """
    from app.heatmap import HeatMap
    from app.heatmap_data import render

    view = HeatMap()
    view.resize(1200, 900)
    view.show()
    rng = np.random.default_rng(0)
    layers = [rng.random(npages, dtype=np.float32) * 30 for _ in range(2)]
    worker_s = gui_s = 0.0
    for i in range(frames):
        t0 = time.perf_counter()
        img = render(layers[i % 2], "heat", 1024, 1 << 20)
        t1 = time.perf_counter()
        view.image_item.setImage(img.codes, autoLevels=False, levels=(0, 255))
        view.image_item.render()
        app.processEvents()
        t2 = time.perf_counter()
        worker_s += t1 - t0
        gui_s += t2 - t1
    fps = frames / max(worker_s, gui_s)
    view.close()
    return {
        "id": 7,
        "name": f"heat-map frames per second at {npages:,} pages (offscreen render)",
        "value": round(fps, 1),
        "unit": "fps",
        "goal": ">= 30",
        "met": fps >= 30,
        "detail": {
            "worker_ms_per_frame": 1e3 * worker_s / frames,
            "gui_ms_per_frame": 1e3 * gui_s / frames,
            "serial_fps": frames / (worker_s + gui_s),
        },
    }


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


def run_app_bench(quick: bool) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    sys.setswitchinterval(0.001)  # as the app does (app/launch.py)
    app = QApplication.instance() or QApplication([])
    npages = 1 << 18 if quick else 1 << 24
    figures = [
        fig_frame_rate(app, npages, 10 if quick else 60),
        *fig_stall(app, npages, 2.0 if quick else 10.0),
    ]
    print(json.dumps({"figures": figures}))
    return 0

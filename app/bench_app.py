"""``dirtylog-inspector --bench``: figures 7 (heat-map frame rate) and 8 (event-loop stalls).

Prints one JSON line ``{"figures": [...]}`` that ``dirtylog bench`` merges into its report.
"""

from __future__ import annotations

import json
import os
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


def fig_stall(app, npages: int, seconds: float) -> dict:
    """Figure 8: the worst lateness of a 10 ms GUI timer while the guest migrates in the app."""
    from PySide6.QtCore import QElapsedTimer, QSettings, QTimer

    from app.main_window import MainWindow
    from engine.bench_migration import realtime_session
    from engine.simulation import Simulation

    settings = QSettings(os.devnull, QSettings.Format.IniFormat)
    window = MainWindow(settings, None)
    window.resize(1400, 900)
    window.show()
    window.load_simulation(Simulation.from_dict(realtime_session(npages)), None)
    window.speed.setCurrentIndex(window.speed.count() - 1)
    window.runner.req_running.emit(True)
    clock = QElapsedTimer()
    clock.start()
    state = {"last": clock.elapsed(), "worst": 0.0, "frames": 0}

    def beat() -> None:
        now = clock.elapsed()
        state["worst"] = max(state["worst"], now - state["last"] - 10)
        state["last"] = now

    window.frame_shown.connect(lambda f: state.__setitem__("frames", state["frames"] + 1))
    timer = QTimer()
    timer.setInterval(10)
    timer.timeout.connect(beat)
    warmup = time.perf_counter() + 1.0
    while time.perf_counter() < warmup:  # let the first frames (and allocation) happen
        app.processEvents()
    state["last"], state["worst"] = clock.elapsed(), 0.0
    timer.start()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.001)
    timer.stop()
    simulated = window.last_frame.snapshot.t_ns / 1e9 if window.last_frame else 0.0
    window.close()
    worst = state["worst"]
    return {
        "id": 8,
        "name": f"worst event-loop stall while a {npages:,}-page guest migrates",
        "value": round(worst, 1),
        "unit": "ms",
        "goal": "<= 50",
        "met": worst <= 50,
        "detail": {"frames": state["frames"], "simulated_s": simulated, "seconds": seconds},
    }


def run_app_bench(quick: bool) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    sys.setswitchinterval(0.001)  # as the app does (app/launch.py)
    app = QApplication.instance() or QApplication([])
    npages = 1 << 18 if quick else 1 << 24
    figures = [
        fig_frame_rate(app, npages, 10 if quick else 60),
        fig_stall(app, npages, 2.0 if quick else 10.0),
    ]
    print(json.dumps({"figures": figures}))
    return 0

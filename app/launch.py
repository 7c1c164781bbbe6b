"""``dirtylog-inspector [SESSION] [--run-rounds N --screenshot PATH --quit] [--bench]``.

Before Qt starts, check that a window can be shown at all, and say in one sentence what to
install when the xcb platform plugin cannot load, instead of Qt's wall of text.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

XCB_PACKAGES = (
    "libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 "
    "libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-xkb1 libxkbcommon-x11-0 libegl1 "
    "libgl1 libfontconfig1 libdbus-1-3"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="dirtylog-inspector",
        description="The DirtyLog Inspector app: open a session (default: the bundled demo) "
        "and watch the migration live.",
    )
    p.add_argument("session", nargs="?", help="session file (JSON); default: the bundled demo")
    p.add_argument(
        "--run-rounds",
        type=int,
        metavar="N",
        help="scripted: run N rounds (N simulated seconds when the session has no migration)",
    )
    p.add_argument("--screenshot", metavar="PATH", help="scripted: save a PNG of the window")
    p.add_argument("--quit", action="store_true", help="scripted: exit when done")
    p.add_argument(
        "--mode",
        default=None,
        choices=("heat", "dirty", "prot", "last_sent", "version"),
        help="heat-map mode",
    )
    p.add_argument(
        "--size",
        default="1600x1000",
        metavar="WxH",
        help="scripted: the window's size in pixels (default 1600x1000)",
    )
    p.add_argument(
        "--bench",
        action="store_true",
        help="measure the app's bench figures (7, 8, 10, 11: heat-map frames per second and"
        " GUI stalls, offscreen) and print them as JSON",
    )
    p.add_argument("--quick", action="store_true", help="with --bench: small sizes")
    p.add_argument("--settings-dir", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def platform_problem() -> str | None:
    """One sentence if Qt cannot show a window here, else None."""
    if os.environ.get("QT_QPA_PLATFORM", "").startswith(("offscreen", "minimal")):
        return None
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        return (
            "There is no display: run it under a virtual screen (xvfb-run make run) or "
            "headless with QT_QPA_PLATFORM=offscreen."
        )
    probe = "from PySide6.QtWidgets import QApplication; QApplication([])"
    try:
        out = subprocess.run(
            [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode == 0:
        return None
    if "could not connect to display" in out.stderr:
        display = os.environ.get("DISPLAY", "")
        return (
            f"cannot connect to the X display {display!r}: start an X server (or use "
            "xvfb-run make run), or run headless with QT_QPA_PLATFORM=offscreen."
        )
    if "xcb" in out.stderr:
        return (
            f"Qt's xcb platform plugin cannot load: install its libraries "
            f"(apt-get install {XCB_PACKAGES}) or run with QT_QPA_PLATFORM=offscreen."
        )
    return "Qt could not start: " + (out.stderr.strip().splitlines() or ["unknown error"])[-1]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = platform_problem()
    if problem:
        print(f"dirtylog-inspector: {problem}", file=sys.stderr)
        return 1
    if args.bench:
        from app.bench_app import run_app_bench

        return run_app_bench(args.quick)
    return run_app(args)


def run_app(args: argparse.Namespace) -> int:
    os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")
    from PySide6.QtCore import qInstallMessageHandler

    def quiet_offscreen(_kind, _context, message: str) -> None:
        # the offscreen plugin warns about every window ("does not support
        # propagateSizeHints"): noise, not news; everything else still reaches stderr
        if "propagateSizeHints" not in message:
            print(message, file=sys.stderr)

    qInstallMessageHandler(quiet_offscreen)
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from app.gui_gc import collect_garbage_in_the_gui_thread, freeze_startup_objects
    from app.main_window import MainWindow
    from app.session_files import DEMO
    from engine.migration.simulation import Simulation
    from engine.util.errors import DirtylogError

    # hand the GIL over every 1 ms (not 5): the GUI thread waits less for the worker
    sys.setswitchinterval(0.001)
    app = QApplication.instance() or QApplication(sys.argv[:1])
    collect_garbage_in_the_gui_thread()
    app.setOrganizationName("dirtylog")
    app.setApplicationName("inspector")
    settings = _settings(args.settings_dir)
    scripted = args.run_rounds is not None or args.screenshot or args.quit
    path = Path(args.session) if args.session else DEMO
    freeze_startup_objects()  # (before any session: a session's objects stay collectable)
    try:
        sim = Simulation.from_file(path)
    except DirtylogError as exc:
        if scripted:
            print(f"dirtylog-inspector: {path}: {exc}", file=sys.stderr)
            return 2
        sim, path = None, None
        error = str(exc)
    window = MainWindow(settings, None if scripted else _autosave_dir())
    if sim is not None:
        window.load_simulation(sim, path if args.session else None)
    else:
        window.new_session()
        window.report(f"could not open {args.session}: {error}")
    if args.mode:
        idx = window.mode.findData(args.mode)
        if idx >= 0:
            window.mode.setCurrentIndex(idx)
    window.show()
    if scripted:
        width, _, height = args.size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            print(
                f"dirtylog-inspector: --size: expected WxH such as 1280x800, got {args.size!r}",
                file=sys.stderr,
            )
            return 2
        window.resize(int(width), int(height))  # (the offscreen screen is small)
        code = _scripted(app, window, args, QTimer)
    else:
        window.offer_recovery()
        code = app.exec()
    _teardown(app, window)
    return code


def _teardown(app, window) -> None:
    """Delete the Qt objects while Qt is still alive: leaving them to the interpreter's final
    garbage collection can crash PySide6 on the way out."""
    import gc

    window.close()
    window.deleteLater()
    app.processEvents()
    del window
    gc.collect()
    app.processEvents()
    if hasattr(app, "shutdown"):
        app.shutdown()


def _settings(directory: str | None):
    from PySide6.QtCore import QSettings

    if directory:
        return QSettings(str(Path(directory) / "inspector.ini"), QSettings.Format.IniFormat)
    return QSettings("dirtylog", "inspector")


def _autosave_dir() -> Path:
    from platformdirs import user_data_dir

    return Path(
        os.environ.get("DIRTYLOG_DATA_DIR") or user_data_dir("dirtylog-inspector", "dirtylog")
    )


def _scripted(app, window, args, QTimer) -> int:
    """Run N rounds (or until the end), take the screenshot, quit."""
    state = {"code": 0}
    target = args.run_rounds or 0

    def check(frame) -> None:
        if window.sim is not None and window.sim.migration is None:  # no rounds: seconds
            done = frame.snapshot.t_ns >= target * 1_000_000_000 or frame.finished
        else:
            done = len(frame.snapshot.rounds) >= target or frame.finished
        if done and not frame.running and not state.get("finishing"):
            state["finishing"] = True  # (disconnecting inside the slot upsets PySide6)
            QTimer.singleShot(100, window, finish)  # (cancelled if the window is deleted)

    def finish() -> None:
        window.graphs.flush()
        if args.screenshot and not window.grab().save(args.screenshot):
            print(f"dirtylog-inspector: cannot write {args.screenshot}", file=sys.stderr)
            state["code"] = 2
        if args.quit:
            window.close()
            app.quit()

    window.frame_shown.connect(check)
    window.speed.setCurrentIndex(window.speed.count() - 1)
    window.runner.req_rounds.emit(target)
    app.exec()
    return state["code"]


if __name__ == "__main__":
    sys.exit(main())

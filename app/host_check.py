"""Tools → "Check against this host's KVM": replay the current session on the real KVM.

A worker thread runs the session again from its start in the engine with the operation log
on (the window's own run is not touched), then replays that log on a real VM
(``engine.host.replay``).  A progress dialog shows both phases and can cancel either.  The
result appears as a "real KVM" column in the Rounds table (identical, or how many pages
differ) and as measured series on the timing graphs, labelled with this host's architecture
and MMU.  Without a usable /dev/kvm the action is disabled and its tooltip says why.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Qt, QThread, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QMessageBox, QProgressDialog

from engine.host.device import unavailable_reason
from engine.util.errors import DirtylogError

ACTION_TEXT = "Check against this host's KVM"


class _Cancelled(Exception):
    pass


class CheckWorker(QObject):
    """Engine run with the log on, then the real replay; lives in its own QThread."""

    progress = Signal(str, int, int)  # phase, done, total
    finished = Signal(object, str)  # ReplayReport or None, error sentence ("" when fine)

    def __init__(self, session: dict, base_dir: Path | None, cancel: threading.Event) -> None:
        super().__init__()
        self.session, self.base_dir, self.cancel = session, base_dir, cancel

    def run(self) -> None:
        from engine.host.replay import check_replayable, record_run, replay, setup_of
        from engine.migration.simulation import Simulation

        try:
            sim = Simulation.from_dict(self.session, self.base_dir, track_last_sent=False)
            setup = setup_of(sim)
            check_replayable(setup, [])
            end_ns = max(1, int(sim.cfg.migration.timeout_s * 1e9))

            def engine_progress(s) -> None:
                if self.cancel.is_set():
                    raise _Cancelled
                self.progress.emit("engine", min(s.t_ns, end_ns) // 1_000_000, end_ns // 1_000_000)

            ops = record_run(sim, engine_progress)
            report = replay(
                setup, ops, lambda i, n: self.progress.emit("real KVM", i, n), self.cancel
            )
            self.finished.emit(report, "")
        except _Cancelled:
            self.finished.emit(None, "cancelled")
        except DirtylogError as exc:
            self.finished.emit(None, str(exc))
        except Exception as exc:  # a bug: say so in one line, keep the app running
            self.finished.emit(None, f"internal error ({type(exc).__name__}: {exc})")


class HostCheck(QObject):
    """The action, the worker thread and the progress dialog of one window."""

    def __init__(self, window) -> None:
        super().__init__(window)
        self.w = window
        self.thread: QThread | None = None
        self.worker: CheckWorker | None = None
        self.cancel = threading.Event()
        self.dialog: QProgressDialog | None = None
        self.report = None

    def shutdown(self) -> None:
        """Cancel a running check and wait for its thread (it tears the real VM down before
        returning): the window's ``closeEvent`` calls it.  (An event filter on the window did
        this before: a Python call under the GIL for every event the window received.)"""
        if self.thread is not None:
            self.cancel.set()
            self.thread.quit()
            self.thread.wait()

    def start(self) -> None:
        if self.thread is not None or self.w.sim is None:
            return
        session = self.w.session_data()  # a copy
        base = self.w.sim.base_dir
        self.cancel.clear()
        self.dialog = QProgressDialog("Running the session in the engine…", "Cancel", 0, 0, self.w)
        self.dialog.setWindowTitle(ACTION_TEXT)
        self.dialog.setWindowModality(Qt.WindowModality.WindowModal)
        self.dialog.canceled.connect(self.cancel.set)
        self.dialog.show()
        self.thread = QThread(self)
        self.worker = CheckWorker(session, base, self.cancel)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.run)
        queued = Qt.ConnectionType.QueuedConnection
        self.worker.progress.connect(self._progress, queued)
        self.worker.finished.connect(self._finished, queued)
        self.thread.start()

    def _progress(self, phase: str, done: int, total: int) -> None:
        if self.dialog is None:
            return
        unit = "simulated ms" if phase == "engine" else "operations"
        self.dialog.setLabelText(f"{phase}: {done:,} of {total:,} {unit}")
        self.dialog.setMaximum(max(total, 1))
        self.dialog.setValue(min(done, total))

    def _finished(self, report, error: str) -> None:
        if self.thread is not None:
            self.thread.quit()
            self.thread.wait()
            self.thread.deleteLater()
        self.thread = self.worker = None
        if self.dialog is not None:
            self.dialog.reset()
            self.dialog.deleteLater()
            self.dialog = None
        if report is None:
            self.w.report(f"{ACTION_TEXT}: {error}")
            if error != "cancelled":
                QMessageBox.warning(self.w, ACTION_TEXT, error)
            return
        self.report = report
        self.show(report)

    def show(self, report) -> None:
        """Agreement per round in the Rounds table; real times and faults on the graphs."""
        host = f"{report.host.get('arch')}, {short_mmu(report.host.get('mmu', ''))}"
        column = {
            r.round: "identical" if r.identical else f"DIFFERENT ({_differing(r):,} pages)"
            for r in report.rounds
        }
        self.w.rounds.set_extra_column(f"real KVM ({host})", column)
        x = np.array([r.round for r in report.rounds], dtype=float)
        ioctl_us = [
            (r.get_real_ns + r.clear_real_ns + r.reset_real_ns) / 1e3 for r in report.rounds
        ]
        self.w.graphs.show_extra(
            "walk_cpu", f"real KVM GET+CLEAR+reset µs, measured ({host})", x, np.array(ioctl_us)
        )
        self.w.graphs.show_extra(
            "faults",
            f"faults, real KVM ({host})",
            x,
            np.array([r.faults_real for r in report.rounds], dtype=float),
        )
        bad = sum(not r.identical for r in report.rounds)
        self.w.report(
            f"{ACTION_TEXT}: {len(report.rounds)} harvests, "
            + ("every one identical" if not bad else f"{bad} different")
            + f" ({host}); "
            + report.notes[0]
        )


def _differing(r) -> int:
    return sum(d.n_only_engine + d.n_only_real for d in r.slots.values())


def short_mmu(mmu: str) -> str:
    """``shadow MMU`` from ``shadow MMU (rmap, tdp_mmu=N, …)``."""
    return mmu.split(" (")[0] if mmu else "MMU unknown"


def add_to_menu(window, menu) -> QAction:
    """The Tools menu entry; disabled, with the reason as its tooltip, without KVM."""
    window.host_check = HostCheck(window)
    act = QAction(ACTION_TEXT, window)
    reason = unavailable_reason()
    if reason:
        act.setEnabled(False)
        act.setToolTip(f"Unavailable: {reason}")
        act.setStatusTip(f"Unavailable: {reason}")
    else:
        tip = (
            "Replay the current session's KVM operations on this host's real /dev/kvm and "
            "compare every harvest (engine run again from the start, in the background)"
        )
        act.setToolTip(tip)
        act.setStatusTip(tip)
    act.triggered.connect(window.host_check.start)
    menu.setToolTipsVisible(True)
    menu.addAction(act)
    return act

"""The inspector's main window: heat map in the middle, everything else in docks.

The window assembles the views (one module each: ``run_controls``, ``editors``, ``graphs``,
``heatmap``, ``tree_panel``, ``rounds_view``), the menus (``menus``) and the file actions
(``session_files``, ``exports``), and routes frames from the runner to the views.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import QDockWidget, QLabel, QMainWindow, QWidget

from app import page_info
from app.editors import MemslotEditor, SettingsEditor, WorkloadEditor
from app.exports import ExportsMixin
from app.graphs import TimingGraphs
from app.heatmap import HeatMap
from app.menus import build_menus
from app.rounds_view import MessagesView, RoundsTable
from app.run_controls import RunControls
from app.runner import Frame, Runner
from app.session_files import AUTOSAVE_MS, SessionFilesMixin
from app.tree_model import PageTableModel
from app.tree_panel import TreePanel
from engine.migration.simulation import Simulation
from engine.util.errors import DirtylogError
from engine.util.units import format_bytes


class MainWindow(SessionFilesMixin, ExportsMixin, QMainWindow):
    frame_shown = Signal(object)  # the Frame just drawn (tests and scripted mode wait on it)

    def __init__(self, settings: QSettings, autosave_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.autosave_dir = autosave_dir
        self.sim: Simulation | None = None
        self.runner: Runner | None = None
        self.path: Path | None = None
        self.last_frame: Frame | None = None
        self._pending_frame: Frame | None = None
        self.model: PageTableModel | None = None
        self._rounds_drawn = -1
        self.setWindowTitle("DirtyLog Inspector")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self._build_widgets()
        self._build_docks()
        build_menus(self)
        self._build_status()
        state = settings.value("window/state")
        if state is not None:
            self.restoreState(state)
        geometry = settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        self.autosave = QTimer(self)
        self.autosave.setInterval(AUTOSAVE_MS)
        self.autosave.timeout.connect(self.write_autosave)
        self.autosave.start()

    # -- widgets ------------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.heatmap = HeatMap()
        self.heatmap.describe_page = self.describe_page
        self.heatmap.page_clicked.connect(self.select_gfn)
        self.setCentralWidget(self.heatmap)
        self.graphs = TimingGraphs()
        self.rounds = RoundsTable()
        self.messages = MessagesView()
        self.memslots = MemslotEditor()
        self.workloads = WorkloadEditor()
        self.settings_editor = SettingsEditor()
        for editor in (self.memslots, self.workloads, self.settings_editor):
            editor.edit.connect(self.send_edit)
        self.settings_editor.restart.connect(self.restart_with_tracking)
        self.tree_panel = TreePanel()
        self.tree_panel.message.connect(self.report)
        self.tree, self.goto = self.tree_panel.tree, self.tree_panel.goto
        self.controls = c = RunControls()
        c.start_btn.clicked.connect(self.toggle_run)
        c.tick_btn.clicked.connect(self.step_tick)
        c.round_btn.clicked.connect(self.step_round)
        c.reset_btn.clicked.connect(self.reset)
        c.speed.currentIndexChanged.connect(self._speed_changed)
        c.mode.currentIndexChanged.connect(self._view_changed)
        c.per_row.valueChanged.connect(self._view_changed)
        self.start_btn, self.speed = c.start_btn, c.speed
        self.mode, self.per_row = c.mode, c.per_row

    def _dock(self, title: str, widget: QWidget, area, name: str) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        L, R, B = (
            Qt.DockWidgetArea.LeftDockWidgetArea,
            Qt.DockWidgetArea.RightDockWidgetArea,
            Qt.DockWidgetArea.BottomDockWidgetArea,
        )
        self.docks = [
            self._dock("Run controls", self.controls, L, "controls"),
            self._dock("Memslots", self.memslots, L, "memslots"),
            self._dock("Workloads", self.workloads, L, "workloads"),
            self._dock("Tracking and migration", self.settings_editor, L, "settings"),
            self._dock("Page-table tree", self.tree_panel, R, "tree"),
            self._dock("Timing graphs", self.graphs, R, "graphs"),
            self._dock("Rounds", self.rounds, B, "rounds"),
            self._dock("Messages", self.messages, B, "messages"),
        ]
        self.tabifyDockWidget(self.docks[1], self.docks[2])
        self.tabifyDockWidget(self.docks[2], self.docks[3])
        self.docks[1].raise_()
        self.tabifyDockWidget(self.docks[6], self.docks[7])
        self.docks[6].raise_()
        self.resizeDocks([self.docks[0], self.docks[4]], [360, 560], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks[4], self.docks[5]], [280, 520], Qt.Orientation.Vertical)
        self.resizeDocks([self.docks[6]], [200], Qt.Orientation.Vertical)

    def _build_status(self) -> None:
        widths = {"time": 230, "round": 260, "remaining": 160, "rate": 210, "throttle": 100}
        self.status_labels = {k: QLabel() for k in widths}
        for key, label in self.status_labels.items():
            label.setFixedWidth(widths[key])  # fixed: a new text must not re-lay out the window
            self.statusBar().addPermanentWidget(label)

    # -- sessions -----------------------------------------------------------------------------

    def load_simulation(self, sim: Simulation, path: Path | None) -> None:
        if self.runner is not None:
            self.heatmap.detail_requested.disconnect(self.runner.req_detail)
            self.runner.shutdown()
            self.runner.deleteLater()
        self.sim, self.path = sim, path
        self.setWindowTitle(f"DirtyLog Inspector — {sim.cfg.name}" + (f" ({path})" if path else ""))
        self.model = PageTableModel(sim.pgt, self._slot_label, self._dirty_label)
        self.tree_panel.set_model(self.model, sim.geom.ipa_limit)
        self._rounds_drawn = -1
        self.rounds.setRowCount(0)
        self.messages.restart()
        self.settings_editor.load(sim.session)
        self.workloads.show_workloads(sim.session.get("workloads", []))
        self.graphs.set_downtime_limit(sim.cfg.migration.downtime_limit_ms)
        self.runner = Runner(sim, self)
        w = self.runner.worker
        queued = Qt.ConnectionType.QueuedConnection  # always run these in the GUI thread
        w.frame.connect(self._frame_arrived, queued)
        w.error.connect(self.show_error, queued)
        w.edit_done.connect(self.edit_done, queued)
        w.running_changed.connect(self._running_changed, queued)
        self.heatmap.detail_requested.connect(self.runner.req_detail)
        self._speed_changed()
        self._view_changed()
        if path is not None:
            self._remember(path)

    # -- run controls -------------------------------------------------------------------------

    def toggle_run(self) -> None:
        if self.runner:
            self.runner.req_running.emit(not (self.last_frame and self.last_frame.running))

    def step_tick(self) -> None:
        if self.runner:
            self.runner.req_step_tick.emit()

    def step_round(self) -> None:
        if self.runner:
            self.runner.req_step_round.emit()

    def reset(self) -> None:
        if self.sim is None:
            return
        data = copy.deepcopy(self.sim.session)
        self.load_simulation(Simulation.from_dict(data, self.sim.base_dir), self.path)

    def restart_with_tracking(self, tracking: dict) -> None:
        """Mode and eager split shape the whole run: start it again with them."""
        if self.sim is None:
            return
        data = copy.deepcopy(self.sim.cfg.model_dump(mode="json"))
        data["tracking"].update(tracking)
        if data["tracking"]["mode"] != "manual-clear":
            data["tracking"]["initially_set"] = False
        try:
            sim = Simulation.from_dict(data, self.sim.base_dir)
        except DirtylogError as exc:
            self.settings_editor.show_result({}, str(exc))
            self.report(f"restart refused: {exc}")
            return
        self.load_simulation(sim, self.path)
        self.report(
            f"restarted with tracking mode {tracking['mode']}, eager split "
            f"{tracking['eager_split']} (the run starts again)"
        )

    def _speed_changed(self) -> None:
        if self.runner:
            self.runner.req_speed.emit(self.controls.speed_value())

    def _view_changed(self) -> None:
        if self.runner:
            self.runner.req_view.emit(self.mode.currentData(), self.per_row.value())

    def _running_changed(self, on: bool) -> None:
        self.start_btn.setText("Pause" if on else "Start")

    def send_edit(self, event: dict) -> None:
        if self.runner:
            self.runner.req_edit.emit(event)

    def edit_done(self, event: dict, error: str) -> None:
        action = event.get("action", "")
        target = (
            self.memslots
            if "memslot" in action
            else self.workloads
            if "workload" in action or "vcpu" in action
            else self.settings_editor
        )
        target.show_result(event, error)
        self.report(f"edit {action} refused: {error}" if error else f"edit {action} applied")
        if not error and self.sim is not None:
            self.workloads.show_workloads(self._workload_specs())

    def _workload_specs(self) -> list[dict[str, Any]]:
        specs = [dict(w) for w in self.sim.session.get("workloads", [])] if self.sim else []
        for ev in self.sim.session.get("events", []) if self.sim else []:
            if ev.get("action") == "add_workload":
                specs.append({k: v for k, v in ev.items() if k not in ("t_ms", "action")})
            elif ev.get("action") == "set_workload":
                for s in specs:
                    if s.get("name") == ev.get("workload"):
                        s.update(
                            {k: v for k, v in ev.items() if k not in ("t_ms", "action", "workload")}
                        )
            elif ev.get("action") == "delete_workload":
                specs = [s for s in specs if s.get("name") != ev.get("workload")]
        return specs

    # -- frames -------------------------------------------------------------------------------

    def _frame_arrived(self, frame: Frame) -> None:
        """Keep only the newest frame: if the GUI falls behind, frames are dropped, not queued."""
        pending = self._pending_frame
        self._pending_frame = frame
        if pending is None:
            QTimer.singleShot(0, self._show_pending)

    def _show_pending(self) -> None:
        frame, self._pending_frame = self._pending_frame, None
        if frame is not None:
            self.show_frame(frame)

    def show_frame(self, frame: Frame) -> None:
        self.last_frame = frame
        snap = frame.snapshot
        self.heatmap.show_frame(snap, frame.image, frame.detail)
        if len(snap.rounds) != self._rounds_drawn:
            self._rounds_drawn = len(snap.rounds)
            self.graphs.update_rounds(snap.rounds)
            self.rounds.fill(snap.rounds)
        self.memslots.show_slots(snap)
        self.tree_panel.refresh(frame.touched)
        self._status(snap, frame)
        self.messages.take_frame(frame)
        self.start_btn.setText(
            "Pause" if frame.running else ("Done" if frame.finished else "Start")
        )
        self.frame_shown.emit(frame)

    def _status(self, snap, frame: Frame) -> None:
        outcome = f" · {snap.outcome}" if snap.outcome else ""
        texts = {
            "time": f"t = {snap.t_ns / 1e9:,.3f} s (simulated)",
            "round": f"round {snap.round} · {snap.phase}{outcome}",
            "remaining": f"remaining {format_bytes(snap.remaining_bytes)}",
            "rate": f"dirty rate {snap.dirty_pages_rate:,.0f} pages/s",
            "throttle": f"throttle {snap.throttle_pct} %",
        }
        for key, text in texts.items():
            if self.status_labels[key].text() != text:
                self.status_labels[key].setText(text)

    def show_error(self, text: str) -> None:
        self.report("engine error (run paused):\n" + text)
        self.start_btn.setText("Start")

    def report(self, text: str) -> None:
        self.messages.report(text)

    # -- page details, tree -------------------------------------------------------------------

    def describe_page(self, gfn: int) -> str:
        return page_info.describe_page(self.sim, gfn)

    def _slot_label(self, ipa: int) -> str:
        return page_info.slot_label(self.sim, ipa)

    def _dirty_label(self, ipa: int) -> str:
        return page_info.dirty_label(self.sim, ipa)

    def select_gfn(self, gfn: int) -> None:
        if self.sim is not None:
            self.tree_panel.select_ipa(gfn << self.sim.vm.page_shift)

    def _goto_entered(self) -> None:
        self.tree_panel.goto_entered()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self.runner is not None:
            self.runner.shutdown()
        if self.autosave_dir is not None:  # a clean exit: nothing to recover next time
            (self.autosave_dir / "autosave.json").unlink(missing_ok=True)
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(event)

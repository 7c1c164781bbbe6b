"""The inspector's main window: the heat map in the middle, everything else around it.

The window assembles the views (one module each: ``run_controls`` in the toolbar,
``heatmap`` and ``outcome`` in the centre, ``graphs``, ``editors``, ``tree_panel`` and
``rounds_view`` in docks placed by ``dock_layout``), the menus (``menus``), the status bar
(``status_line``) and the file actions (``session_files``, ``exports``), and routes frames
from the runner to the views.  Loading a session (Open, New, Reset, a mode restart) clears
every view first, so nothing of the previous run is left on screen.
"""

from __future__ import annotations

import copy
from pathlib import Path

from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QDockWidget,
    QMainWindow,
    QScrollArea,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from app import dock_layout, page_info
from app.editors import MemslotEditor, WorkloadEditor
from app.exports import ExportsMixin
from app.graphs import TimingGraphs
from app.heatmap import HeatMap
from app.host_check import HostCheck
from app.menus import build_menus
from app.outcome import OutcomeCard
from app.rounds_view import MessagesView, RoundsTable
from app.run_controls import RunControls
from app.runner import Frame, Runner
from app.session_files import SessionFilesMixin
from app.settings_editor import SettingsEditor
from app.status_line import StatusLine
from app.sweep_window import SweepWindow
from app.tree_model import PageTableModel
from app.tree_panel import TreePanel
from engine.migration.simulation import Simulation
from engine.util.errors import DirtylogError

LAYOUT_VERSION = 2  # saved dock layouts of another version are not restored


class MainWindow(SessionFilesMixin, ExportsMixin, QMainWindow):
    frame_shown = Signal(object)  # the Frame just drawn (tests and scripted mode wait on it)

    def __init__(self, settings: QSettings, autosave_dir: Path | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.sim: Simulation | None = None
        self.runner: Runner | None = None
        self.path: Path | None = None
        self.last_frame: Frame | None = None
        self._pending_frame: Frame | None = None
        self.model: PageTableModel | None = None
        self._rounds_drawn: tuple = ()
        self.host_check: HostCheck | None = None  # (Tools → check against the host's KVM)
        self.setWindowTitle("DirtyLog Inspector[*]")
        self.resize(1500, 950)
        self.setAcceptDrops(True)
        self._build_widgets()
        self._build_docks()
        build_menus(self)
        self.status = StatusLine(self.statusBar())
        self._restore_layout()
        self.init_session_files(autosave_dir)
        self._guard = QTimer(self)
        self._guard.setSingleShot(True)
        self._guard.setInterval(100)
        self._guard.timeout.connect(self._keep_heat_map_wide)

    def _keep_heat_map_wide(self) -> None:
        dock_layout.keep_heat_map_wide(self, self.docks)

    # -- widgets ------------------------------------------------------------------------------

    def _build_widgets(self) -> None:
        self.heatmap = HeatMap()
        self.heatmap.page_clicked.connect(self.select_gfn)
        self.heatmap.page_hovered.connect(self._hovered)
        self.outcome = OutcomeCard()
        centre = QWidget()
        box = QVBoxLayout(centre)
        box.setContentsMargins(0, 0, 0, 0)
        box.addWidget(self.heatmap, 1)
        box.addWidget(self.outcome)
        self.setCentralWidget(centre)
        self.graphs = TimingGraphs()
        self.rounds = RoundsTable()
        self.messages = MessagesView()
        self.memslots = MemslotEditor()
        self.workloads = WorkloadEditor()
        self.settings_editor = SettingsEditor()
        for editor in (self.memslots, self.workloads, self.settings_editor):
            editor.edit.connect(self.send_edit)
            editor.refused.connect(self.report)
        self.settings_editor.restart.connect(self.restart_with_tracking)
        self.editor_tabs = QTabWidget()
        for editor, title in (
            (self.memslots, "Memslots"),
            (self.workloads, "Workloads"),
            (self.settings_editor, "Tracking and migration"),
        ):
            area = QScrollArea()  # a short dock scrolls its editor instead of clipping it
            area.setWidgetResizable(True)
            area.setWidget(editor)
            self.editor_tabs.addTab(area, title)
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
        c.heat_top.valueChanged.connect(self._heat_top_changed)
        self.start_btn, self.speed = c.start_btn, c.speed
        self.mode, self.per_row = c.mode, c.per_row
        bar = QToolBar("Run controls")
        bar.setObjectName("controls")
        bar.addWidget(c)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, bar)
        self.toolbar = bar

    def _build_docks(self) -> None:
        self.docks: dict[str, QDockWidget] = {}
        for name, title, widget in (
            ("graphs", "Timing graphs", self.graphs),
            ("editors", "Editors", self.editor_tabs),
            ("tree", "Page-table tree", self.tree_panel),
            ("rounds", "Rounds", self.rounds),
            ("messages", "Messages", self.messages),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(name)
            dock.setWidget(widget)
            self.docks[name] = dock
        dock_layout.arrange(self, self.docks)

    def reset_layout(self) -> None:
        """View → Reset layout: the default docks and sizes."""
        self.toolbar.show()
        dock_layout.arrange(self, self.docks)

    def _restore_layout(self) -> None:
        geometry = self.settings.value("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window/state")
        if state is not None:
            self.restoreState(state, LAYOUT_VERSION)
        QTimer.singleShot(0, self, self._check_layout)

    def _check_layout(self) -> None:
        """A layout that clips a dock's contents or squeezes the heat map is not kept."""
        if not self.isVisible():
            return
        if self.settings.value("window/state") is None:
            dock_layout.size(self, self.docks)
        if dock_layout.clipped(self, self.docks):
            self.reset_layout()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        if hasattr(self, "_guard"):
            self._guard.start()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().showEvent(event)
        QTimer.singleShot(0, self, self._check_layout)

    # -- sessions -----------------------------------------------------------------------------

    def load_simulation(self, sim: Simulation, path: Path | None) -> None:
        """Show ``sim`` from its start: every view of the previous run is cleared first."""
        if self.runner is not None:
            self.heatmap.detail_requested.disconnect(self.runner.req_detail)
            self.runner.shutdown()
            self.runner.deleteLater()
        self.sim, self.path = sim, path
        self.last_frame = self._pending_frame = None
        self.set_title()
        self.model = PageTableModel(sim.pgt, self._slot_label, self._dirty_label)
        self.tree_panel.set_model(self.model, sim.geom.ipa_limit)
        self._rounds_drawn = ()
        self.rounds.setRowCount(0)
        self.messages.restart()
        self.heatmap.clear()
        self.graphs.clear()
        self.outcome.clear()
        self.status.clear()
        for editor in (self.memslots, self.workloads, self.settings_editor):
            editor.clear_status()
        self.settings_editor.load(sim.session)
        self.settings_editor.rmap_available = sim.vm.pgt.rmap is not None
        self.workloads.page_size = sim.vm.page_size
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
        self._heat_top_changed()
        if path is not None:
            self._remember(path)
        if sim.vm.tracking.mode == "dbm" and sim.vm.tracking.compare:
            self.report(
                "compare does not apply in dbm mode: the harvest scans every leaf (no "
                "write-protect walk to compare); the walk graphs show that scan's cost"
            )

    # -- run controls -------------------------------------------------------------------------

    def toggle_run(self) -> None:
        if self.runner:
            f = self.last_frame
            self.runner.req_running.emit(not (f and (f.running or f.stepping)))

    def step_tick(self) -> None:
        if self.runner and not self._over("Step tick"):
            self.runner.req_step_tick.emit()

    def step_round(self) -> None:
        if self.runner and not self._over("Step round"):
            self.runner.req_step_round.emit()

    def _over(self, what: str) -> bool:
        """A finished run has nothing left to step (QEMU stopped the source at switchover):
        say so rather than doing nothing."""
        if self.last_frame is None or not self.last_frame.finished:
            return False
        self.report(
            f"{what}: the run has ended (outcome under the map); Reset (Ctrl+R) runs it again"
        )
        return True

    def reset(self) -> None:
        if self.sim is None:
            return
        data = copy.deepcopy(self.sim.session)
        self.load_simulation(Simulation.from_dict(data, self.sim.base_dir), self.path)

    def restart_with_tracking(self, tracking: dict) -> None:
        """Mode and eager split shape the whole run: start it again with them (after asking
        to save the edits that the restart would otherwise lose)."""
        if self.sim is None or not self.maybe_save("Restarting the run"):
            return
        data = copy.deepcopy(self.sim.cfg.model_dump(mode="json"))
        tracking = dict(tracking)
        data["migration"].update(tracking.pop("migration", {}))
        data["tracking"].update(tracking)
        if data["tracking"]["mode"] != "manual-clear":
            data["tracking"]["initially_set"] = False
        try:
            sim = Simulation.from_dict(data, self.sim.base_dir)
        except DirtylogError as exc:
            self.settings_editor.show_result({}, str(exc))
            self.report(f"restart refused: {exc}")
            return
        path = self.path
        self.load_simulation(sim, path)
        self.mark_modified()
        self.report(
            f"restarted with tracking mode {tracking['mode']}, eager split "
            f"{tracking['eager_split']} (the run starts again)"
        )

    def _speed_changed(self) -> None:
        if self.runner:
            self.runner.req_speed.emit(self.controls.speed_value())
        self.sync_speed_menu()

    def _view_changed(self) -> None:
        if self.runner:
            self.runner.req_view.emit(self.mode.currentData(), self.per_row.value())

    def _heat_top_changed(self) -> None:
        if self.runner:
            self.runner.req_heat_top.emit(self.controls.heat_top.value())

    def _hovered(self, gfn: int) -> None:
        if self.runner:
            self.runner.req_hover.emit(gfn)

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
        if error:
            self.report(f"edit {action} refused: {error}")
        else:
            self.mark_modified()

    # -- frames -------------------------------------------------------------------------------

    def _frame_arrived(self, frame: Frame) -> None:
        """Keep only the newest frame: if the GUI falls behind, frames are dropped, not queued."""
        if self.runner is None or self.sender() is not self.runner.worker:
            return  # a late frame of a run that was replaced
        self.queue_frame(frame)

    def queue_frame(self, frame: Frame) -> None:
        """Show ``frame`` at the next event-loop turn unless a newer one replaces it first.

        The window is the call's context object: a window deleted before that turn (a test's
        teardown, or quitting with a frame in flight) cancels it. A bound method alone does not:
        PySide6 still calls it, on a window whose plot items are already freed."""
        pending = self._pending_frame
        self._pending_frame = frame
        if pending is None:
            QTimer.singleShot(0, self, self._show_pending)

    def _show_pending(self) -> None:
        frame, self._pending_frame = self._pending_frame, None
        if frame is not None:
            self.show_frame(frame)

    def show_frame(self, frame: Frame) -> None:
        self.last_frame = frame
        snap = frame.snapshot
        self.heatmap.show_frame(snap, frame.image, frame.detail, frame.hover)
        tracking = frame.settings["tracking"] if frame.settings else {}
        key = (len(snap.rounds), snap.round, snap.phase)
        if key != self._rounds_drawn:
            self._rounds_drawn = key
            self.graphs.update_rounds(
                snap.rounds,
                snap.page_size,
                tracking.get("strategy", ""),
                tracking.get("mode", ""),
            )
            self.rounds.fill(snap)
        self.memslots.show_slots(snap, self.sim.slot_flags if self.sim else {})
        if frame.settings is not None:
            self.settings_editor.show_effective(frame.settings)
            self.workloads.show_effective(frame.settings)
        self.tree_panel.refresh(frame.touched)
        mode_text = f"{tracking.get('mode', '')} · {tracking.get('strategy', '')}"
        if tracking.get("compare"):
            mode_text += " (compare)"
        if tracking.get("mode") == "dbm":  # no write-protect walk: no strategy to compare
            mode_text = "dbm · leaf scan" + (" (compare n/a)" if tracking.get("compare") else "")
        self.status.show(frame, self.speed.currentText(), mode_text)
        self.messages.take_frame(frame)
        if frame.result is not None and frame.settings and self.sim and self.sim.migration:
            limit = frame.settings["migration"]["downtime_limit_ms"]
            self.outcome.show_result(frame.result, limit)
        self.start_btn.setText(
            "Pause" if frame.running or frame.stepping else ("Done" if frame.finished else "Start")
        )
        self.controls.show_finished(frame.finished)
        if self.runner is not None:  # the worker builds the next frame while this one paints
            self.runner.acknowledge(frame)
        self.frame_shown.emit(frame)

    def show_error(self, text: str) -> None:
        self.messages.report_error("engine error (run paused)", text)
        self.start_btn.setText("Start")

    def report(self, text: str) -> None:
        self.messages.report(text)

    # -- page details, tree -------------------------------------------------------------------

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
        if not self.maybe_save("Quitting"):
            event.ignore()
            return
        for tool in self.findChildren(SweepWindow):  # its own closeEvent cancels its sweep
            tool.close()
        if self.host_check is not None:
            self.host_check.shutdown()
        if self.runner is not None:
            self.runner.shutdown()
        self.remove_autosave()
        if not dock_layout.clipped(self, self.docks):  # never keep a layout that clips
            self.settings.setValue("window/state", self.saveState(LAYOUT_VERSION))
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(event)

"""The inspector's main window: heat map in the middle, everything else in docks."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QSettings, Qt, QTimer, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QComboBox,
    QDockWidget,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from app.editors import MemslotEditor, SettingsEditor, WorkloadEditor
from app.graphs import TimingGraphs
from app.heatmap import HeatMap
from app.heatmap_data import MODE_LABELS, MODES
from app.runner import Frame, Runner
from app.tree_model import PageTableModel
from engine.files.session import save_session_file
from engine.migration.simulation import Simulation
from engine.stage2 import descriptor as D
from engine.util.errors import DirtylogError
from engine.util.units import format_bytes

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO = RESOURCES / "sessions" / "demo.json"
SPEEDS = [
    ("0.1×", 0.1),
    ("0.5×", 0.5),
    ("1× (real time)", 1.0),
    ("2×", 2.0),
    ("5×", 5.0),
    ("20×", 20.0),
    ("as fast as possible", 1e6),
]
ROUND_COLUMNS = [
    "round",
    "end (ms)",
    "sent",
    "dirty pages",
    "remaining",
    "exp. downtime (ms)",
    "throttle %",
    "faults",
    "harvest (modelled µs)",
]
AUTOSAVE_MS = 3 * 60 * 1000
NEW_SESSION = {
    "format": "dirtylog-session",
    "version": 2,
    "name": "new session",
    "seed": 1,
    "geometry": {"granule": "4KiB", "ipa_bits": 40},
    "vcpus": 1,
    "memslots": [
        {
            "id": 0,
            "name": "ram",
            "base": "0x40000000",
            "size": "512MiB",
            "flags": ["log_dirty"],
            "backing": "4KiB",
        }
    ],
    "workloads": [{"name": "w0", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "5000 pages/s"}],
    "migration": {"policy": "qemu", "bandwidth": "1Gbit/s"},
}


class MainWindow(QMainWindow):
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
        self._build_menus()
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
        self.rounds = QTableWidget(0, len(ROUND_COLUMNS))
        self.rounds.setHorizontalHeaderLabels(ROUND_COLUMNS)
        self.rounds.verticalHeader().hide()
        # columns share the dock's width, so headers such as "harvest (modelled µs)" fit
        self.rounds.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.rounds.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.messages = QPlainTextEdit()
        self.messages.setReadOnly(True)
        self.memslots = MemslotEditor()
        self.workloads = WorkloadEditor()
        self.settings_editor = SettingsEditor()
        for editor in (self.memslots, self.workloads, self.settings_editor):
            editor.edit.connect(self.send_edit)
        self.settings_editor.restart.connect(self.restart_with_tracking)
        self.tree = QTreeView()
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.goto = QLineEdit()
        self.goto.setPlaceholderText("go to IPA, e.g. 0x40042000")
        self.goto.returnPressed.connect(self._goto_entered)
        self.controls = self._build_controls()

    def _build_controls(self) -> QWidget:
        w = QWidget()
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip("Start or pause the simulation (Space)")
        self.start_btn.clicked.connect(self.toggle_run)
        tick = QPushButton("Step tick")
        tick.setToolTip("Advance one tick (N)")
        tick.clicked.connect(self.step_tick)
        rnd = QPushButton("Step round")
        rnd.setToolTip("Run to the next harvest (R)")
        rnd.clicked.connect(self.step_round)
        reset = QPushButton("Reset")
        reset.setToolTip("Restart the session from its beginning (Ctrl+R)")
        reset.clicked.connect(self.reset)
        self.speed = QComboBox()
        for label, _ in SPEEDS:
            self.speed.addItem(label)
        self.speed.setCurrentIndex(4)
        self.speed.setToolTip("Simulated time per wall-clock second")
        self.speed.currentIndexChanged.connect(self._speed_changed)
        self.mode = QComboBox()
        for m in MODES:
            self.mode.addItem(MODE_LABELS[m], m)
        self.mode.setToolTip("What the heat map shows")
        self.mode.currentIndexChanged.connect(self._view_changed)
        self.per_row = QSpinBox()
        self.per_row.setRange(16, 8192)
        self.per_row.setValue(1024)
        self.per_row.setSingleStep(64)
        self.per_row.setToolTip("Cells per heat-map row")
        self.per_row.valueChanged.connect(self._view_changed)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (self.start_btn, tick, rnd, reset):
            row1.addWidget(b)
        row2.addWidget(QLabel("speed"))
        row2.addWidget(self.speed)
        row2.addWidget(QLabel("show"))
        row2.addWidget(self.mode, 1)
        row2.addWidget(QLabel("cells/row"))
        row2.addWidget(self.per_row)
        layout = QVBoxLayout(w)
        layout.addLayout(row1)
        layout.addLayout(row2)
        return w

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
        tree_box = QWidget()
        tl = QVBoxLayout(tree_box)
        tl.setContentsMargins(0, 0, 0, 0)
        tl.addWidget(self.goto)
        tl.addWidget(self.tree)
        self.docks = [
            self._dock("Run controls", self.controls, L, "controls"),
            self._dock("Memslots", self.memslots, L, "memslots"),
            self._dock("Workloads", self.workloads, L, "workloads"),
            self._dock("Tracking and migration", self.settings_editor, L, "settings"),
            self._dock("Page-table tree", tree_box, R, "tree"),
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

    def _action(self, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        act = QAction(text, self)
        if shortcut:
            act.setShortcut(QKeySequence(shortcut))
        if tip:
            act.setStatusTip(tip)
        act.triggered.connect(slot)
        menu.addAction(act)
        return act

    def _build_menus(self) -> None:
        bar = self.menuBar()
        f = bar.addMenu("&File")
        self._action(f, "&New", self.new_session, QKeySequence.StandardKey.New)
        self._action(f, "&Open…", self.open_dialog, QKeySequence.StandardKey.Open)
        self.recent_menu = f.addMenu("Open &Recent")
        self._action(f, "&Save", self.save, QKeySequence.StandardKey.Save)
        self._action(f, "Save &As…", self.save_as, QKeySequence("Ctrl+Shift+S"))
        ex = f.addMenu("&Export")
        self._action(ex, "Rounds as CSV…", lambda: self.export("rounds-csv"))
        self._action(ex, "Rounds as JSON…", lambda: self.export("rounds-json"))
        self._action(ex, "Graphs as PNG…", lambda: self.export("graphs-png"))
        self._action(ex, "Graphs as SVG…", lambda: self.export("graphs-svg"))
        self._action(ex, "Graphs as CSV…", lambda: self.export("graphs-csv"))
        self._action(ex, "Last harvest's bitmaps (KVM .bin)…", lambda: self.export("bitmap"))
        self._action(ex, "Screenshot of the window…", lambda: self.export("screenshot"))
        self._action(
            f,
            "&Diff bitmap snapshots…",
            self.diff_dialog,
            tip="Import two exported snapshots (.json sidecars) and show the diff",
        )
        f.addSeparator()
        self._action(f, "&Quit", self.close, QKeySequence.StandardKey.Quit)
        r = bar.addMenu("&Run")
        self._action(r, "Start / Pause", self.toggle_run, QKeySequence(Qt.Key.Key_Space))
        self._action(r, "Step tick", self.step_tick, QKeySequence("N"))
        self._action(r, "Step round", self.step_round, QKeySequence("R"))
        self._action(r, "Reset", self.reset, QKeySequence("Ctrl+R"))
        sp = r.addMenu("Speed")
        for i, (label, _) in enumerate(SPEEDS):
            self._action(sp, label, lambda _=False, i=i: self.speed.setCurrentIndex(i))
        v = bar.addMenu("&View")
        for dock in self.docks:
            v.addAction(dock.toggleViewAction())
        h = bar.addMenu("&Help")
        self._action(
            h, "Keyboard shortcuts", self.show_shortcuts, QKeySequence.StandardKey.HelpContents
        )
        self._action(h, "About", self.show_about)
        self._refresh_recent()

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
        self.tree.setModel(self.model)
        self.tree.setColumnWidth(0, 150)
        self.tree.setColumnWidth(1, 230)
        self._rounds_drawn = -1
        self._messages_seen = 0
        self.rounds.setRowCount(0)
        self.messages.clear()
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

    def open_path(self, path: str | Path) -> bool:
        try:
            sim = Simulation.from_file(path)
        except DirtylogError as exc:
            self.report(f"cannot open {path}: {exc}")
            QMessageBox.warning(self, "Cannot open session", str(exc))
            return False
        self.load_simulation(sim, Path(path))
        return True

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open session", str(RESOURCES / "sessions"), "Sessions (*.json)"
        )
        if path:
            self.open_path(path)

    def new_session(self) -> None:
        self.load_simulation(Simulation.from_dict(copy.deepcopy(NEW_SESSION)), None)

    def session_data(self) -> dict[str, Any]:
        assert self.sim is not None
        data = json.loads(json.dumps(self.sim.session))
        data["version"] = 2
        data["view"] = {
            "mode": self.mode.currentData(),
            "cells_per_row": self.per_row.value(),
            "speed": self.speed.currentIndex(),
        }
        return data

    def save(self) -> None:
        if self.path is None or self.path.resolve().is_relative_to(RESOURCES):
            self.save_as()
            return
        self._save_to(self.path)

    def save_as(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save session", "session.json", "Sessions (*.json)"
        )
        if path:
            self._save_to(Path(path))

    def _save_to(self, path: Path) -> None:
        try:
            save_session_file(path, self.session_data())
        except DirtylogError as exc:
            self.report(str(exc))
            QMessageBox.warning(self, "Cannot save", str(exc))
            return
        self.path = path
        self._remember(path)
        self.report(f"saved {path}")

    def write_autosave(self) -> None:
        if self.autosave_dir is None or self.sim is None:
            return
        try:
            self.autosave_dir.mkdir(parents=True, exist_ok=True)
            save_session_file(self.autosave_dir / "autosave.json", self.session_data())
        except (OSError, DirtylogError) as exc:
            self.report(f"autosave failed: {exc}")

    def _remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in self._recent() if p != str(path.resolve())]
        self.settings.setValue("recent", recent[:10])
        self._refresh_recent()

    def _recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for p in self._recent():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_path(p))

    def dragEnterEvent(self, event) -> None:
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.open_path(url.toLocalFile())
                return

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
            self.runner.req_speed.emit(SPEEDS[self.speed.currentIndex()][1])

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
            self._fill_rounds(snap.rounds)
        self.memslots.show_slots(snap)
        if self.model is not None and self.tree.isVisible():
            self.model.refresh(frame.touched)
            self.tree.viewport().update()
        self._status(snap, frame)
        new = snap.messages_total - self._messages_seen
        if new > 0:
            for line in snap.messages[-min(new, len(snap.messages)) :]:
                self.messages.appendPlainText(line)
            self._messages_seen = snap.messages_total
        self.start_btn.setText(
            "Pause" if frame.running else ("Done" if frame.finished else "Start")
        )
        self.frame_shown.emit(frame)

    def _fill_rounds(self, rounds) -> None:
        self.rounds.setRowCount(len(rounds))
        for i, r in enumerate(rounds):
            vals = [
                str(r["round"]) + (" (stop)" if r.get("stop_and_copy") else ""),
                f"{r['t_end_ns'] / 1e6:,.1f}",
                format_bytes(r["transferred_bytes"]),
                f"{r['dirty_pages']:,}",
                format_bytes(r["remaining_bytes"]),
                f"{r['expected_downtime_ms']:,.1f}",
                str(r["throttle_pct"]),
                f"{r['faults']:,}",
                f"{r['harvest_model_ns'] / 1e3:,.1f}",
            ]
            for c, v in enumerate(vals):
                self.rounds.setItem(i, c, QTableWidgetItem(v))
        self.rounds.scrollToBottom()

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
        self.messages.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    # -- page details, tree -------------------------------------------------------------------

    def describe_page(self, gfn: int) -> str:
        sim = self.sim
        if sim is None:
            return ""
        ipa = gfn << sim.vm.page_shift
        st = sim.vm.slot_of_ipa(ipa)
        level, _, desc = sim.pgt.lookup(np.array([ipa]))
        leaf = D.decode(int(desc[0]), int(level[0]), sim.vm.page_shift)
        if st is None:
            return f"IPA {ipa:#x} gfn {gfn:#x}: no memslot"
        rel = gfn - st.slot.base_gfn
        dirty = self._dirty_label(ipa)
        return (
            f"IPA {ipa:#x} · gfn {gfn:#x} · slot {st.slot.id} {st.slot.name} · {leaf} · "
            f"version {int(st.version[rel])} · dirty {dirty}"
        )

    def _slot_label(self, ipa: int) -> str:
        st = self.sim.vm.slot_of_ipa(ipa) if self.sim else None
        return "" if st is None else str(st.slot.id)

    def _dirty_label(self, ipa: int) -> str:
        st = self.sim.vm.slot_of_ipa(ipa) if self.sim else None
        if st is None or st.bitmap is None:
            return "—"
        rel = (ipa >> self.sim.vm.page_shift) - st.slot.base_gfn
        return "1" if int(st.bitmap[rel >> 6]) >> (rel & 63) & 1 else "0"

    def select_gfn(self, gfn: int) -> None:
        if self.sim is not None:
            self.select_ipa(gfn << self.sim.vm.page_shift)

    def select_ipa(self, ipa: int) -> None:
        if self.model is None:
            return
        idx = self.model.index_for_ipa(ipa)
        parent = idx.parent()
        chain = []
        while parent.isValid():
            chain.append(parent)
            parent = parent.parent()
        for p in reversed(chain):
            self.tree.expand(p)
        self.tree.setCurrentIndex(idx)
        self.tree.scrollTo(idx)

    def _goto_entered(self) -> None:
        text = self.goto.text().strip().replace("_", "")
        try:
            ipa = int(text, 0)
        except ValueError:
            self.report(f"go to IPA: {text!r} is not an address (use hex like 0x40042000)")
            return
        if self.sim is None or not 0 <= ipa < self.sim.geom.ipa_limit:
            self.report(f"go to IPA: {ipa:#x} is outside the IPA space")
            return
        self.select_ipa(ipa)

    # -- export, help, close ------------------------------------------------------------------

    def export(self, what: str) -> None:
        from engine.cli.run import write_rounds_csv

        snap = self.last_frame.snapshot if self.last_frame else None
        suffix = {
            "rounds-csv": ".csv",
            "rounds-json": ".json",
            "graphs-png": ".png",
            "graphs-csv": ".csv",
            "screenshot": ".png",
        }.get(what, "")
        if what == "bitmap":
            out = QFileDialog.getExistingDirectory(self, "Export bitmaps to")
            if out:
                self.export_bitmaps(Path(out))
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export", f"export{suffix}")
        if not path:
            return
        rounds = [dict(r) for r in snap.rounds] if snap else []
        try:
            if what == "rounds-csv":
                write_rounds_csv(path, rounds)
            elif what == "rounds-json":
                Path(path).write_text(json.dumps(rounds, indent=2))
            elif what == "graphs-png":
                self.graphs.export_png(path)
            elif what == "graphs-csv":
                self.graphs.export_csv(path)
            elif what == "graphs-svg":
                self.graphs.export_svg(path)
            elif what == "screenshot":
                self.grab().save(path)
            self.report(f"exported {path}")
        except (OSError, DirtylogError) as exc:
            self.report(f"export failed: {exc}")

    def export_bitmaps(self, out: Path) -> list[Path]:
        from engine.files.export import BitmapSnapshot, write_snapshot

        sim = self.sim
        if sim is None or sim.migration is None or not sim.migration.last_harvest:
            self.report("export: no harvest yet")
            return []
        m = sim.migration
        written = []
        for sid, words in m.last_harvest.items():
            s = sim.vm.slots[sid].slot
            snap = BitmapSnapshot(
                sid, s.base_gfn, s.npages, sim.vm.page_size, m.round - 1, sim.t_ns, words.copy()
            )
            written += write_snapshot(snap, out, f"round-{m.round - 1:04d}-slot-{sid}", "bin")
        self.report(f"exported {len(written) // 2} bitmap(s) to {out}")
        return written

    def diff_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Choose snapshot A, then B (their .json sidecars)", "", "Snapshots (*.json)"
        )
        if len(paths) == 1:
            paths = paths * 2
        if len(paths) >= 2:
            self.show_diff(paths[0], paths[1])

    def show_diff(self, a_path: str, b_path: str) -> dict[str, int] | None:
        """Import two snapshots, diff them, and show the diff in the heat map."""
        from app.heatmap_data import diff_layer
        from engine.files.export import diff, read_snapshot

        try:
            a, b = read_snapshot(a_path), read_snapshot(b_path)
        except DirtylogError as exc:
            self.report(f"diff: {exc}")
            return None
        snap = self.last_frame.snapshot if self.last_frame else None
        slot = next((s for s in (snap.slots if snap else ()) if s.base_gfn == a.base_gfn), None)
        if snap is None or slot is None:
            self.report(f"diff: no memslot of this session starts at gfn {a.base_gfn:#x}")
            return None
        d = diff(a, b)
        layer = diff_layer(
            snap.total_pages,
            slot.offset,
            *(d[k] - a.base_gfn for k in ("only_a", "only_b", "both")),
        )
        self.runner.req_diff.emit(layer)
        self.mode.setCurrentIndex(self.mode.findData("diff"))
        counts = {k: int(v.size) for k, v in d.items()}
        self.report(
            f"diff of {a_path} and {b_path}: {counts['only_a']} pages only in A, "
            f"{counts['only_b']} only in B, {counts['both']} in both"
        )
        return counts

    def show_shortcuts(self) -> None:
        QMessageBox.information(
            self,
            "Keyboard shortcuts",
            (
                "Space — start / pause\nN — step one tick\n"
                "R — step one round (to the next harvest)\n"
                "Ctrl+R — reset\nCtrl+O — open\nCtrl+S — save\nCtrl+Shift+S — save as\n"
                "Ctrl+Q — quit\nF1 — this list\nMouse wheel on the heat map — zoom; drag — pan"
            ),
        )

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "DirtyLog Inspector",
            (
                "DirtyLog Inspector: KVM arm64 stage-2 dirty logging and QEMU-style pre-copy "
                "migration, simulated and shown live.\nModelled times are operation counts × the "
                "cost model; measured times are the engine's own wall time."
            ),
        )

    def closeEvent(self, event) -> None:
        if self.runner is not None:
            self.runner.shutdown()
        if self.autosave_dir is not None:  # a clean exit: nothing to recover next time
            (self.autosave_dir / "autosave.json").unlink(missing_ok=True)
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.sync()
        super().closeEvent(event)

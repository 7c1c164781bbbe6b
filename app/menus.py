"""The menu bar: File, Run, View, Tools and Help.

``build_menus`` fills the bar from the window's actions.  The Tools menu is where optional
tools hook in: a tool module (its own file under ``app/``) defines a function
``add_to_menu(window, menu)`` that adds its actions, and is listed in ``TOOLS`` below.
"""

from __future__ import annotations

from collections.abc import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QActionGroup, QKeySequence
from PySide6.QtWidgets import QMessageBox

from app import host_check, sweep_window
from app.run_controls import SPEEDS

# each adds its actions to the Tools menu: add_to_menu(window, menu)
TOOLS: tuple[Callable, ...] = (sweep_window.add_to_menu, host_check.add_to_menu)

SHORTCUTS = (
    "Space — start / pause\nN — step one tick\n"
    "R — step one round (to the next harvest)\n"
    "Ctrl+R — reset\nCtrl+O — open\nCtrl+S — save\nCtrl+Shift+S — save as\n"
    "Ctrl+Q — quit\nF1 — this list\nMouse wheel on the heat map — zoom; drag — pan"
)
ABOUT = (
    "DirtyLog Inspector: KVM arm64 stage-2 dirty logging and QEMU-style pre-copy "
    "migration, simulated and shown live.\nModelled times are operation counts × the "
    "cost model; measured times are the engine's own wall time."
)


def add_action(window, menu, text: str, slot, shortcut=None, tip: str = "") -> QAction:
    act = QAction(text, window)
    if shortcut:
        act.setShortcut(QKeySequence(shortcut))
    if tip:
        act.setStatusTip(tip)
    act.triggered.connect(slot)
    menu.addAction(act)
    return act


def build_menus(w) -> None:
    bar = w.menuBar()
    f = bar.addMenu("&File")
    add_action(w, f, "&New", w.new_session, QKeySequence.StandardKey.New)
    add_action(w, f, "&Open…", w.open_dialog, QKeySequence.StandardKey.Open)
    w.recent_menu = f.addMenu("Open &Recent")
    add_action(w, f, "&Save", w.save, QKeySequence.StandardKey.Save)
    add_action(w, f, "Save &As…", w.save_as, QKeySequence("Ctrl+Shift+S"))
    ex = f.addMenu("&Export")
    add_action(w, ex, "Rounds as CSV…", lambda: w.export("rounds-csv"))
    add_action(w, ex, "Rounds as JSON…", lambda: w.export("rounds-json"))
    add_action(w, ex, "Graphs as PNG…", lambda: w.export("graphs-png"))
    add_action(w, ex, "Graphs as SVG…", lambda: w.export("graphs-svg"))
    add_action(w, ex, "Graphs as CSV…", lambda: w.export("graphs-csv"))
    add_action(w, ex, "Last harvest's bitmaps (KVM .bin)…", lambda: w.export("bitmap"))
    add_action(w, ex, "Screenshot of the window…", lambda: w.export("screenshot"))
    add_action(
        w,
        f,
        "&Diff bitmap snapshots…",
        w.diff_dialog,
        tip="Choose snapshot A and snapshot B (their .json sidecars) and show the diff",
    )
    f.addSeparator()
    add_action(w, f, "&Quit", w.close, QKeySequence.StandardKey.Quit)
    r = bar.addMenu("&Run")
    add_action(w, r, "Start / Pause", w.toggle_run, QKeySequence(Qt.Key.Key_Space))
    add_action(w, r, "Step tick", w.step_tick, QKeySequence("N"))
    add_action(w, r, "Step round", w.step_round, QKeySequence("R"))
    add_action(w, r, "Reset", w.reset, QKeySequence("Ctrl+R"))
    sp = r.addMenu("Speed")
    group = QActionGroup(w)
    w.speed_actions = []
    for i, (label, _) in enumerate(SPEEDS):
        act = add_action(w, sp, label, lambda _=False, i=i: w.speed.setCurrentIndex(i))
        act.setCheckable(True)
        group.addAction(act)
        w.speed_actions.append(act)
    w.sync_speed_menu = lambda: w.speed_actions[w.speed.currentIndex()].setChecked(True)
    w.sync_speed_menu()
    v = bar.addMenu("&View")
    v.addAction(w.toolbar.toggleViewAction())
    for dock in w.docks.values():
        v.addAction(dock.toggleViewAction())
    v.addSeparator()
    add_action(w, v, "Reset layout", w.reset_layout, tip="The default docks and sizes")
    w.view_menu = v
    w.tools_menu = bar.addMenu("&Tools")
    for add_to_menu in TOOLS:
        add_to_menu(w, w.tools_menu)
    w.tools_menu.menuAction().setVisible(bool(TOOLS))
    h = bar.addMenu("&Help")
    add_action(
        w,
        h,
        "Keyboard shortcuts",
        lambda: QMessageBox.information(w, "Keyboard shortcuts", SHORTCUTS),
        QKeySequence.StandardKey.HelpContents,
    )
    add_action(w, h, "Last engine error…", w.messages.show_last_error)
    add_action(w, h, "About", lambda: QMessageBox.about(w, "DirtyLog Inspector", ABOUT))
    w._refresh_recent()

"""Where the docks go, View → Reset layout, and the guard that keeps the heat map first.

Default: the heat map in the middle with at least half of the window's width; on the right
the timing graphs over a tabbed panel (the three editors, the page-table tree); the rounds
and messages under it.  A saved layout that would clip a dock's contents or squeeze the heat
map under half the width is not restored (the default is used), and a resize that would do
the same moves the dock edge back.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDockWidget, QMainWindow

RIGHT_SHARE = 0.4  # of the window's width, for the right-hand column of docks
MIN_HEAT_SHARE = 0.5
GRAPHS_SHARE = 0.46  # of the height, for the timing graphs (a page of two plots, labels whole)
RIGHT = Qt.DockWidgetArea.RightDockWidgetArea
BOTTOM = Qt.DockWidgetArea.BottomDockWidgetArea


def arrange(w: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """The default layout (also View → Reset layout)."""
    for dock in docks.values():
        w.removeDockWidget(dock)
    for name in ("graphs", "editors"):
        w.addDockWidget(RIGHT, docks[name])
        docks[name].show()
    w.splitDockWidget(docks["graphs"], docks["editors"], Qt.Orientation.Vertical)
    w.tabifyDockWidget(docks["editors"], docks["tree"])
    w.addDockWidget(BOTTOM, docks["rounds"])
    w.tabifyDockWidget(docks["rounds"], docks["messages"])
    for dock in docks.values():
        dock.setFloating(False)
        dock.show()
    docks["editors"].raise_()
    docks["rounds"].raise_()
    size(w, docks)


def size(w: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """Right column RIGHT_SHARE of the width; graphs over editors (and the tree) about
    3:2 (GRAPHS_SHARE: at 800 px high a page of graphs shows its axis labels whole, and the
    tree still shows ten rows); bottom 20 %."""
    width, height = w.width(), w.height()
    w.resizeDocks([docks["graphs"]], [int(width * RIGHT_SHARE)], Qt.Orientation.Horizontal)
    w.resizeDocks(
        [docks["graphs"], docks["editors"]],
        [int(height * GRAPHS_SHARE), int(height * (0.75 - GRAPHS_SHARE))],
        Qt.Orientation.Vertical,
    )
    w.resizeDocks([docks["rounds"]], [int(height * 0.2)], Qt.Orientation.Vertical)


def heat_share(w: QMainWindow) -> float:
    central = w.centralWidget()
    return central.width() / max(1, w.width())


def clipped(w: QMainWindow, docks: dict[str, QDockWidget]) -> list[str]:
    """Docks (by name) shown narrower or lower than their contents need, and "heat map"
    when it has less than half of the width."""
    out = [
        name
        for name, dock in docks.items()
        if dock.isVisible()
        and not dock.isFloating()
        and (
            dock.widget().width() < dock.widget().minimumSizeHint().width()
            or dock.widget().height() < dock.widget().minimumSizeHint().height()
        )
    ]
    if heat_share(w) < MIN_HEAT_SHARE:
        out.append("heat map")
    return out


def keep_heat_map_wide(w: QMainWindow, docks: dict[str, QDockWidget]) -> None:
    """Move the side docks' edge back so the heat map keeps at least half of the width."""
    if heat_share(w) >= MIN_HEAT_SHARE:
        return
    for area in (RIGHT, Qt.DockWidgetArea.LeftDockWidgetArea):
        shown = [
            d
            for d in docks.values()
            if w.dockWidgetArea(d) == area and d.isVisible() and not d.isFloating()
        ]
        if shown:
            share = RIGHT_SHARE if area == RIGHT else 0.1
            w.resizeDocks(shown[:1], [int(w.width() * share)], Qt.Orientation.Horizontal)

"""Signals that outlive a deleted widget reach nothing freed (CI's lesson at 8e57c18: a
callable that is not a method of a live QObject is still called after its widget is gone)."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

import shiboken6  # noqa: E402

from app.heatmap import HeatMap  # noqa: E402


def test_a_range_change_after_the_heat_map_is_deleted_reaches_nothing_freed(qtbot):
    """The map's view box, kept alive past the map (here taken out of it; in a teardown,
    deleted after it), changes range: the map's debounce timer is already freed. A lambda
    connected to the signal still ran and started the freed timer (RuntimeError); the
    map's own method is disconnected with the map."""
    hm = HeatMap()
    vb = hm.plot.getViewBox()
    vb.setParentItem(None)
    hm.plot.layout.removeItem(vb)
    if vb.scene() is not None:
        vb.scene().removeItem(vb)
    shiboken6.delete(hm)
    vb.setRange(xRange=(0, 5), yRange=(0, 5), padding=0)
    assert not shiboken6.isValid(hm)


FREE_BY_GC = """
import gc
from PySide6.QtWidgets import QApplication
app = QApplication([])
from app.heatmap import HeatMap
for _ in range(3):
    view = HeatMap()
    view.show()
    app.processEvents()
    view.close()
    del view
    gc.collect()
"""


def test_a_heat_map_freed_by_the_garbage_collector_does_not_crash():
    """A map left to the cyclic collector (what the app's GUI-thread collection and the
    bench's figures do) is freed cleanly. When its image item held the map's own bound
    methods (``hoverEvent = self._hover``), freeing the cycle deleted the map, and so its
    scene, from inside that item's destructor: the process died of SIGSEGV in
    ``QGraphicsScene::clear`` (``dirtylog bench`` lost figures 7, 8, 10 and 11 at
    f45e2f4). Run in a child process, so a crash fails this test and not the suite."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(root))
    proc = subprocess.run(
        [sys.executable, "-c", FREE_BY_GC], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-1500:])

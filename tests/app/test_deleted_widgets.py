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

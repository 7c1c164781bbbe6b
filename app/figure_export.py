"""Helpers for exporting pyqtgraph figures: let a layout settle, and pyqtgraph 0.14's SVG
exporter made to accept closed paths."""

from __future__ import annotations

import time
from contextlib import contextmanager


def settle() -> None:
    """Let the graphics layouts (and the axes' ticks) follow a new size before drawing."""
    from PySide6.QtWidgets import QApplication

    end = time.perf_counter() + 0.3  # pyqtgraph re-lays out over several event passes
    while time.perf_counter() < end:
        QApplication.processEvents()


@contextmanager
def closed_paths_tolerated():
    """pyqtgraph 0.14.0's SVG exporter cannot re-map a path that ends in "Z" (Qt 6 closes
    rectangles and markers that way; pyqtgraph issue #3495) and fails on the whole figure.
    While exporting, its coordinate pass gets the paths without the "Z" token: the same
    shapes (Qt already repeats the first point before "Z"), open instead of closed."""
    import sys

    import pyqtgraph.exporters.SVGExporter  # noqa: F401 (the module, not the class)

    module = sys.modules["pyqtgraph.exporters.SVGExporter"]
    original = module.correctCoordinates

    def tolerant(node, defs, item, options):
        for path in node.getElementsByTagName("path"):
            d = path.getAttribute("d")
            if "Z" in d:
                path.setAttribute("d", " ".join(t for t in d.split() if t != "Z"))
        return original(node, defs, item, options)

    module.correctCoordinates = tolerant
    try:
        yield
    finally:
        module.correctCoordinates = original

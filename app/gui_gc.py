"""Garbage collection in the GUI thread only (see ``collect_garbage_in_the_gui_thread``)."""

from __future__ import annotations

_COLLECTOR = None


def collect_garbage_in_the_gui_thread() -> None:
    """Python's cyclic collector runs in whichever thread allocates, and a Qt object it frees
    is destroyed there. A window collected in a worker thread (the simulation runner, the
    sweep's Dask loop) deadlocks with the GUI thread: the worker holds a Qt mutex and waits for
    the GIL while the GUI thread holds the GIL and waits for that mutex (seen in the test
    suite: a main window from an earlier test freed inside the Dask loop). pyqtgraph's
    GarbageCollector turns automatic collection off and collects on a GUI-thread timer each
    second instead. Needs a QApplication; idempotent."""
    global _COLLECTOR
    if _COLLECTOR is None:
        from pyqtgraph.util.garbage_collector import GarbageCollector

        _COLLECTOR = GarbageCollector(interval=1.0)

"""Garbage collection in the GUI thread only (see ``collect_garbage_in_the_gui_thread``)."""

from __future__ import annotations

import gc

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


def freeze_startup_objects() -> None:
    """Keep the objects that live as long as the program (modules, classes: about 82,000 of
    the 85,000 a running app holds) out of every later collection: collect, then ``gc.freeze``.

    The timer's full collection (every ~10 s) walked all of them: 40-50 ms of CPU in the GUI
    thread with the GIL held, the worst stall of a migrating run (measured, 16 M-page guest).
    Afterwards it walks only what was allocated since (a session: ~1,000 objects), and what
    the sessions allocate stays collectable. Call it in the GUI thread once the app's modules are
    imported, before a session is loaded."""
    gc.collect()
    gc.freeze()

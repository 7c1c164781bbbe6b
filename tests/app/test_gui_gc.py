"""The app frees Qt objects in the GUI thread only: automatic collection is off, and a timer in
the GUI thread collects instead (app/gui_gc.py). Run in a subprocess: the switch is
process-wide and the test process must keep its own collector."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("PySide6")

PROBE = textwrap.dedent(
    """
    import gc, threading, weakref
    from PySide6.QtCore import QEventLoop, QTimer
    from PySide6.QtWidgets import QApplication, QWidget
    from app.gui_gc import collect_garbage_in_the_gui_thread

    app = QApplication([])
    collect_garbage_in_the_gui_thread()
    collect_garbage_in_the_gui_thread()  # idempotent: one collector
    assert not gc.isenabled()

    class Holder:  # a widget caught in a reference cycle, as windows are
        def __init__(self):
            self.widget, self.me = QWidget(), self

    freed_in = []
    h = Holder()
    weakref.finalize(h, lambda: freed_in.append(threading.current_thread().name))
    del h
    kept = []
    def churn():  # a worker allocating: with automatic collection on, it would free the cycle
        kept.extend([i] for i in range(200_000))
    t = threading.Thread(target=churn, name="worker")
    t.start(); t.join()
    assert freed_in == [], freed_in  # nothing freed outside the GUI thread
    for _ in range(5):  # the timer ticks once a second
        loop = QEventLoop(); QTimer.singleShot(500, loop.quit); loop.exec()
        if freed_in:
            break
    print(freed_in)
    """
)


def test_cycles_holding_qt_objects_are_freed_by_the_gui_thread_timer():
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['MainThread']"]

"""Loading a session off the GUI thread, with a progress dialog whose Cancel really stops it.

Building a large guest (its page tables, bitmaps and versions) takes seconds and gigabytes,
so a cancelled load must not go on in the background.  Python cannot kill a thread, but it
can raise an exception in one: Cancel asks CPython (``PyThreadState_SetAsyncExc``, the
C API's documented way) to raise ``LoadCancelled`` in the loading thread, which then stops at
its next Python step (after the numpy call it is in, if any) and lets go of what it built.
Whatever the thread returns after Cancel is dropped, so nothing of a cancelled load is
ever applied.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QApplication, QProgressDialog, QWidget

DIALOG_AFTER_S = 0.3  # a load quicker than this shows no dialog

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


class LoadCancelled(BaseException):
    """Raised inside the loading thread when the user cancels (a BaseException, so no
    ``except Exception`` on the way out swallows it)."""


class BackgroundLoad:
    """``make()`` in a daemon thread; ``cancel()`` stops it; ``result``/``error`` once done."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make: Callable[[], Any] | None = make
        self._lock = threading.Lock()
        self.state = "running"  # then "done" or "cancelled"
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="load-session", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            make, self._make = self._make, None
            assert make is not None
            try:
                value, error = make(), None
            except LoadCancelled:
                raise
            except BaseException as exc:  # handed over to the GUI thread
                value, error = None, exc
            with self._lock:  # (cancel() raises only while the state is "running")
                if self.state == "running":
                    self.state, self.result, self.error = "done", value, error
        except LoadCancelled:
            pass  # stopped: what was built is dropped with this frame

    def cancel(self) -> None:
        """Stop the load: the thread gets LoadCancelled at its next Python step; a result
        that is already there is dropped."""
        with self._lock:
            if self.state != "running":
                self.state, self.result, self.error = "cancelled", None, None
                return
            self.state = "cancelled"
            if self.thread.ident is not None:
                _set_async_exc(self.thread.ident, LoadCancelled)


def load_with_progress(parent: QWidget, make: Callable[[], Any], name: str) -> Any:
    """``make()`` off the GUI thread.  After DIALOG_AFTER_S a modal "Loading NAME… N s"
    dialog (busy bar, elapsed seconds) offers Cancel, which stops the load.  Returns what
    ``make`` returned, None when cancelled; raises what ``make`` raised."""
    load = BackgroundLoad(make)
    load.thread.join(DIALOG_AFTER_S)
    if load.thread.is_alive():
        dialog = QProgressDialog(f"Loading {name}…", "Cancel", 0, 0, parent)
        dialog.setWindowTitle("Loading session")
        dialog.setWindowModality(Qt.WindowModality.WindowModal)
        dialog.setMinimumDuration(0)
        dialog.show()
        start = time.monotonic()
        while load.thread.is_alive() and not dialog.wasCanceled():
            QApplication.processEvents()
            load.thread.join(0.02)
            dialog.setLabelText(f"Loading {name}… {time.monotonic() - start:.0f} s")
        cancelled = dialog.wasCanceled()
        dialog.close()
        dialog.deleteLater()
        if cancelled:
            load.cancel()
            return None
    if load.error is not None:
        raise load.error
    return load.result

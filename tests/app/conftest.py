"""App tests answer the app's questions themselves: no modal dialog may block a test; and
Qt objects are freed in the GUI thread only (as the app does, ``app/gui_gc.py``)."""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("PySide6")


@pytest.fixture(autouse=True)
def garbage_collected_in_the_gui_thread(qapp):
    """No automatic collection during an app test, and everything the test left behind is
    freed here, in the GUI thread, after its widgets are closed and deleted. Otherwise a window
    caught in a reference cycle is freed later by whichever thread allocates: inside the Dask
    loop of a sweep test that deadlocked a worker (a Qt mutex against the GIL), which hung CI."""
    from PySide6.QtCore import QCoreApplication, QEvent

    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        for widget in qapp.topLevelWidgets():
            widget.close()
            widget.deleteLater()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)
        gc.collect()
        if was_enabled:
            gc.enable()


@pytest.fixture(autouse=True)
def no_modal_dialogs(monkeypatch):
    """ "Save changes?" is answered Discard, recovery No; warnings are recorded, not shown."""
    from PySide6.QtWidgets import QMessageBox

    shown: list[tuple[str, str]] = []
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    monkeypatch.setattr(
        QMessageBox, "warning", lambda _p, title, text, *a: shown.append((title, text))
    )
    return shown


@pytest.fixture(autouse=True)
def colour_tables_built_afresh():
    """Each test builds the heat map's colour tables it uses (``app/heatmap_colours.py`` keeps
    them once built): mutation testing maps each function to the tests that call it, and with
    the tables kept, only the first test of a run built them, so only it was run against the
    tables' mutants."""
    from app import heatmap_colours

    with heatmap_colours._TABLES_LOCK:
        heatmap_colours._TABLES.clear()


@pytest.fixture
def window(qtbot, tmp_path):
    """The main window with its own settings and autosave folder under ``tmp_path``, shown at
    1400×900; closed afterwards with its worker thread stopped."""
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    settings = QSettings(str(tmp_path / "inspector.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings, tmp_path / "autosave")
    qtbot.addWidget(w)
    w.resize(1400, 900)
    w.show()
    yield w
    w.modified = False  # (a test may have answered "Save changes?" with Cancel)
    w.close()
    assert w.runner is None or not w.runner.thread.isRunning()

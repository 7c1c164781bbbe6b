"""App tests answer the app's questions themselves: no modal dialog may block a test."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")


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

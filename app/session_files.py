"""File actions on sessions: New, Open, Open Recent, drop, Save, Save As and the autosave.

A mixin of the main window (it needs the window's simulation, settings and dialogs); the
formats themselves live in ``engine/files/session.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from PySide6.QtWidgets import QFileDialog, QMessageBox

from engine.files.session import save_session_file
from engine.migration.simulation import Simulation
from engine.util.errors import DirtylogError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO = RESOURCES / "sessions" / "demo.json"
AUTOSAVE_MS = 3 * 60 * 1000
NEW_SESSION = {
    "format": "dirtylog-session",
    "version": 2,
    "name": "new session",
    "seed": 1,
    "geometry": {"granule": "4KiB", "ipa_bits": 40},
    "vcpus": 1,
    "memslots": [
        {
            "id": 0,
            "name": "ram",
            "base": "0x40000000",
            "size": "512MiB",
            "flags": ["log_dirty"],
            "backing": "4KiB",
        }
    ],
    "workloads": [{"name": "w0", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "5000 pages/s"}],
    "migration": {"policy": "qemu", "bandwidth": "1Gbit/s"},
}


class SessionFilesMixin:
    """Session file actions of ``MainWindow`` (uses its sim, path, settings and report)."""

    def open_path(self, path: str | Path) -> bool:
        try:
            sim = Simulation.from_file(path)
        except (DirtylogError, MemoryError) as exc:
            exc = exc if isinstance(exc, DirtylogError) else "not enough memory for this session"
            self.report(f"cannot open {path}: {exc}")
            QMessageBox.warning(self, "Cannot open session", str(exc))
            return False
        self.load_simulation(sim, Path(path))
        return True

    def open_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Open session", str(RESOURCES / "sessions"), "Sessions (*.json)"
        )
        if path:
            self.open_path(path)

    def new_session(self) -> None:
        self.load_simulation(Simulation.from_dict(copy.deepcopy(NEW_SESSION)), None)

    def session_data(self) -> dict[str, Any]:
        assert self.sim is not None
        data = json.loads(json.dumps(self.sim.session))
        data["version"] = 2
        data["view"] = {
            "mode": self.mode.currentData(),
            "cells_per_row": self.per_row.value(),
            "speed": self.speed.currentIndex(),
        }
        return data

    def save(self) -> None:
        if self.path is None or self.path.resolve().is_relative_to(RESOURCES):
            self.save_as()
            return
        self._save_to(self.path)

    def save_as(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Save session", "session.json", "Sessions (*.json)"
        )
        if path:
            self._save_to(Path(path))

    def _save_to(self, path: Path) -> None:
        try:
            save_session_file(path, self.session_data())
        except DirtylogError as exc:
            self.report(str(exc))
            QMessageBox.warning(self, "Cannot save", str(exc))
            return
        self.path = path
        self._remember(path)
        self.report(f"saved {path}")

    def write_autosave(self) -> None:
        if self.autosave_dir is None or self.sim is None:
            return
        try:
            self.autosave_dir.mkdir(parents=True, exist_ok=True)
            save_session_file(self.autosave_dir / "autosave.json", self.session_data())
        except (OSError, DirtylogError) as exc:
            self.report(f"autosave failed: {exc}")

    def _remember(self, path: Path) -> None:
        recent = [str(path.resolve())] + [p for p in self._recent() if p != str(path.resolve())]
        self.settings.setValue("recent", recent[:10])
        self._refresh_recent()

    def _recent(self) -> list[str]:
        value = self.settings.value("recent", [])
        return [value] if isinstance(value, str) else list(value or [])

    def _refresh_recent(self) -> None:
        self.recent_menu.clear()
        for p in self._recent():
            act = self.recent_menu.addAction(p)
            act.triggered.connect(lambda _=False, p=p: self.open_path(p))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if event.mimeData().hasUrls():
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        for url in event.mimeData().urls():
            if url.isLocalFile():
                self.open_path(url.toLocalFile())
                return

"""File actions on sessions: New, Open, Open Recent, drop, Save, Save As, the modified
marker, "Save changes?" and the autosave.

A mixin of the main window (it needs the window's simulation, settings and dialogs); the
format and the atomic save live in ``engine/files/session.py``.

No lost work: a live edit marks the session modified (``*`` in the title); New, Open, Open
Recent, a drop, a tracking-mode restart and Quit ask "Save changes?" first.  The autosave
starts with the first edit (written at once, then every 3 minutes), one file per running
instance (``autosave-PID.json``, held with a lock on ``autosave-PID.lock``), so a second
instance never touches the first one's.  At start, autosaves whose lock no process holds (a
crashed instance) are offered for recovery; a recovered session is untitled (Save asks for a
name) and counts as modified.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QFileDialog, QMessageBox

from app.background_load import load_with_progress
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


def _locked_by_someone(lock: Path) -> bool:
    """Whether a running process holds ``lock`` (an flock released when it dies)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # (closing releases a lock we took)
    return False


def recoverable_autosaves(directory: Path) -> list[Path]:
    """Autosaves left by instances that are no longer running, newest first."""
    if not directory.is_dir():
        return []
    found = [
        p
        for p in directory.glob("autosave-*.json")
        if not _locked_by_someone(p.with_suffix(".lock"))
    ]
    legacy = directory / "autosave.json"  # (one file for every instance, before PIDs)
    if legacy.exists():
        found.append(legacy)
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


class SessionFilesMixin:
    """Session file actions of ``MainWindow`` (uses its sim, path, settings and report)."""

    def init_session_files(self, autosave_dir: Path | None) -> None:
        self.autosave_dir = autosave_dir
        self.modified = False
        self._lock_fd: int | None = None
        self.autosave = QTimer(self)
        self.autosave.setInterval(AUTOSAVE_MS)
        self.autosave.timeout.connect(self.write_autosave)

    # -- the title and the modified marker ------------------------------------------------------

    def set_title(self) -> None:
        name = self.sim.cfg.name if self.sim else ""
        where = str(self.path) if self.path else "untitled"
        self.setWindowTitle(f"{name} ({where})[*] — DirtyLog Inspector")
        self.setWindowModified(self.modified)

    def mark_modified(self) -> None:
        """A live edit was recorded: the title says so, and the autosave starts."""
        if not self.modified:
            self.modified = True
            self.setWindowModified(True)
            self.write_autosave()
        if self.autosave_dir is not None and not self.autosave.isActive():
            self.autosave.start()

    def _set_clean(self) -> None:
        self.modified = False
        self.setWindowModified(False)
        self.autosave.stop()
        self.remove_autosave()

    def maybe_save(self, what: str) -> bool:
        """Ask "Save changes?" when there are unsaved edits; False means: do not go on."""
        if not self.modified or self.sim is None:
            return True
        answer = QMessageBox.question(
            self,
            "Save changes?",
            f"The session {self.sim.cfg.name!r} has live edits that are not saved. "
            f"{what} will lose them. Save them first?",
            QMessageBox.StandardButton.Save
            | QMessageBox.StandardButton.Discard
            | QMessageBox.StandardButton.Cancel,
            QMessageBox.StandardButton.Save,
        )
        if answer == QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QMessageBox.StandardButton.Discard

    # -- open, new ------------------------------------------------------------------------------

    def open_path(self, path: str | Path) -> bool:
        """Open a session (no question asked: the callers below ask first).  A load that
        takes more than a moment shows a progress dialog whose Cancel stops the load and
        keeps the current session as it was (``background_load``)."""
        try:
            sim = load_with_progress(self, lambda: Simulation.from_file(path), Path(path).name)
        except (DirtylogError, MemoryError) as exc:
            exc = exc if isinstance(exc, DirtylogError) else "not enough memory for this session"
            self.report(f"cannot open {path}: {exc}")
            QMessageBox.warning(self, "Cannot open session", str(exc))
            return False
        if sim is None:
            self.report(
                f"opening {path} cancelled: the load was stopped; the current session stays"
            )
            return False
        self.modified = False
        self.load_simulation(sim, Path(path))
        self.restore_view(sim.session.get("view") or {})
        self._set_clean()
        return True

    def open_user(self, path: str | Path) -> bool:
        """Open Recent and drop: ask to save the current edits first."""
        return self.maybe_save("Opening another session") and self.open_path(path)

    def open_dialog(self) -> None:
        if not self.maybe_save("Opening another session"):
            return
        start = str(self.path.parent) if self.path else str(RESOURCES / "sessions")
        path, _ = QFileDialog.getOpenFileName(self, "Open session", start, "Sessions (*.json)")
        if path:
            self.open_path(path)

    def new_session(self) -> None:
        if not self.maybe_save("A new session"):
            return
        self.modified = False
        self.load_simulation(Simulation.from_dict(copy.deepcopy(NEW_SESSION)), None)
        self._set_clean()

    def restore_view(self, view: dict[str, Any]) -> None:
        """The session's ``view`` block: heat-map mode, cells per row, speed."""
        idx = self.mode.findData(view.get("mode"))
        if idx >= 0:
            self.mode.setCurrentIndex(idx)
        if isinstance(view.get("cells_per_row"), int):
            self.per_row.setValue(view["cells_per_row"])
        if isinstance(view.get("speed"), int) and 0 <= view["speed"] < self.speed.count():
            self.speed.setCurrentIndex(view["speed"])

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

    # -- save -----------------------------------------------------------------------------------

    def save(self) -> bool:
        """Save to the session's file; an untitled or bundled session asks for a name."""
        if self.path is None or self.path.resolve().is_relative_to(RESOURCES):
            return self.save_as()
        return self._save_to(self.path)

    def save_as(self) -> bool:
        name = (self.sim.cfg.name if self.sim else "session").replace("/", "-") + ".json"
        start = self.path if self.path else Path.cwd() / name
        if self.path is not None and self.path.resolve().is_relative_to(RESOURCES):
            start = Path.cwd() / self.path.name
        path, _ = QFileDialog.getSaveFileName(self, "Save session", str(start), "Sessions (*.json)")
        if not path:
            return False
        path = Path(path)
        return self._save_to(path if path.suffix else path.with_suffix(".json"))

    def _save_to(self, path: Path) -> bool:
        try:
            save_session_file(path, self.session_data())
        except DirtylogError as exc:
            self.report(str(exc))
            QMessageBox.warning(self, "Cannot save", str(exc))
            return False
        self.path = path
        self._set_clean()
        self.set_title()
        self._remember(path)
        self.report(f"saved {path}")
        return True

    # -- autosave -------------------------------------------------------------------------------

    def autosave_path(self) -> Path | None:
        if self.autosave_dir is None:
            return None
        return self.autosave_dir / f"autosave-{os.getpid()}.json"

    def write_autosave(self) -> None:
        path = self.autosave_path()
        if path is None or self.sim is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self._lock_fd is None:
                self._lock_fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            save_session_file(path, self.session_data())
        except (OSError, DirtylogError) as exc:
            self.report(f"autosave failed: {exc}")

    def remove_autosave(self) -> None:
        """This instance's autosave only (a clean save or exit: nothing to recover)."""
        path = self.autosave_path()
        if path is None:
            return
        path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
            path.with_suffix(".lock").unlink(missing_ok=True)

    def offer_recovery(self) -> bool:
        """Offer the newest autosave of a crashed instance (the autosave timer is stopped
        while the question is open).  True when one was recovered."""
        if self.autosave_dir is None:
            return False
        found = recoverable_autosaves(self.autosave_dir)
        if not found:
            return False
        running = self.autosave.isActive()
        self.autosave.stop()
        answer = QMessageBox.question(
            self,
            "Recover autosave?",
            f"An earlier run of the inspector ended without saving its edits. Recover the "
            f"autosaved session ({found[0]})? No discards it.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        )
        recovered = answer == QMessageBox.StandardButton.Yes and self.open_path(found[0])
        if recovered:
            self.path = None  # untitled: Save asks where
            self.modified = False
            self.mark_modified()
            self.set_title()
            self.report(f"recovered the autosave {found[0]} (untitled until saved)")
        elif running:
            self.autosave.start()
        if answer == QMessageBox.StandardButton.No or recovered:
            found[0].unlink(missing_ok=True)
            found[0].with_suffix(".lock").unlink(missing_ok=True)
        return recovered

    # -- recent files, drop ---------------------------------------------------------------------

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
            act.triggered.connect(lambda _=False, p=p: self.open_user(p))

    @staticmethod
    def _dropped_session(event) -> str | None:
        for url in event.mimeData().urls():
            if url.isLocalFile() and url.toLocalFile().lower().endswith(".json"):
                return url.toLocalFile()
        return None

    def dragEnterEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if self._dropped_session(event):  # only session files (.json) are accepted
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        path = self._dropped_session(event)
        if path is None:
            self.report("drop: only session files (.json) can be opened")
            return
        self.open_user(path)

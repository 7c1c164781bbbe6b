"""The app refuses what the CLI refuses, with the same sentence, and shows no traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("PySide6")

from engine.files.session import load_session  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402
from engine.util.errors import DirtylogError  # noqa: E402
from tests.app.test_app import load, small_session  # noqa: E402

CASES = Path(__file__).resolve().parents[1] / "cases" / "input"
SESSION_CASES = sorted(
    p.name
    for p in CASES.iterdir()
    if (p / "session.json").exists() and not p.name.startswith("T08")
)


def _cli_sentence(path: Path) -> str:
    """What ``dirtylog run`` prints after "dirtylog run: " for this file."""
    with pytest.raises(DirtylogError) as e:
        cfg, _ = load_session(path)
        Simulation(cfg, path.parent)
    return str(e.value)


@pytest.mark.parametrize("name", SESSION_CASES[:6])
def test_a_session_file_the_cli_refuses_is_refused_with_the_same_sentence(
    qtbot,
    window,
    tmp_path,
    monkeypatch,
    name,  # noqa: F811
):
    from PySide6.QtWidgets import QMessageBox

    shown: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda _w, _t, text: shown.append(text))
    work = tmp_path / name
    shutil.copytree(CASES / name, work)
    sentence = _cli_sentence(work / "session.json")
    load(window, small_session())
    assert not window.open_path(work / "session.json")
    assert shown == [sentence]
    assert sentence in window.messages.toPlainText()
    assert window.runner.thread.isRunning()


@pytest.mark.parametrize(
    "edit, words",
    [
        (
            {"action": "set_workload", "workload": "hot", "rate": "1e999 pages/s"},
            "must be a finite",
        ),
        ({"action": "set_migration", "downtime_limit_ms": float("nan")}, "finite number, got NaN"),
        ({"action": "add_memslot", "id": 3, "base": "0x80000000", "size": 0}, "must have a size"),
        ({"action": "set_workload", "workload": "nope", "rate": 5}, 'no workload named "nope"'),
    ],
)
def test_a_live_edit_is_checked_by_the_engine_validators(qtbot, window, edit, words):  # noqa: F811
    load(window, small_session())
    window.runner.req_edit.emit(edit)
    qtbot.waitUntil(lambda: words in window.messages.toPlainText(), timeout=10_000)
    assert "Traceback" not in window.messages.toPlainText()
    assert window.runner.thread.isRunning()

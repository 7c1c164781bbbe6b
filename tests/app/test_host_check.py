"""Tools → "Check against this host's KVM": the replay runs in a worker, the Rounds table
gains a per-round agreement column and the graphs real series; without KVM the action is
disabled with the reason as its tooltip."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QSettings  # noqa: E402

import engine.host.device as device  # noqa: E402
from app.host_check import ACTION_TEXT  # noqa: E402
from app.main_window import MainWindow  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402

SESSION = {
    "format": "dirtylog-session",
    "version": 2,
    "name": "host-check",
    "seed": 5,
    "tracking": {"mode": "bitmap", "strategy": "rmap"},
    "memslots": [{"id": 0, "base": "0x40000000", "size": "2MiB", "flags": ["log_dirty"]}],
    "workloads": [{"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "20000 pages/s"}],
    "migration": {"policy": "fixed", "harvest_every_ms": 20, "timeout_s": 0.1},
}


def _window(qtbot, tmp_path):
    settings = QSettings(str(tmp_path / "inspector.ini"), QSettings.Format.IniFormat)
    w = MainWindow(settings, tmp_path / "autosave")
    qtbot.addWidget(w)
    w.load_simulation(Simulation.from_dict(SESSION), None)
    return w


def _action(w):
    return next(a for a in w.tools_menu.actions() if a.text() == ACTION_TEXT)


@pytest.mark.skipif(device.unavailable_reason() is not None, reason="host KVM unusable here")
def test_check_fills_the_rounds_column_and_the_graphs(qtbot, tmp_path):
    w = _window(qtbot, tmp_path)
    act = _action(w)
    assert act.isEnabled()
    act.trigger()
    qtbot.waitUntil(lambda: w.host_check.report is not None, timeout=60_000)
    report = w.host_check.report
    assert report.identical and len(report.rounds) == 5  # every 20 ms for 100 ms
    assert w.host_check.thread is None  # the worker thread is gone
    w.rounds.fill(Simulation.from_dict(SESSION).run()["rounds"])  # the window's own rounds
    last = w.rounds.columnCount() - 1
    assert w.rounds.horizontalHeaderItem(last).text().startswith("real KVM (x86_64")
    assert [w.rounds.item(i, last).text() for i in range(5)] == ["identical"] * 5
    names = [n for (_, n) in w.graphs.curves]
    assert any(n.startswith("real KVM GET+CLEAR+reset µs, measured (x86_64") for n in names)
    assert any(n.startswith("faults, real KVM") for n in names)
    w.close()


@pytest.mark.skipif(device.unavailable_reason() is not None, reason="host KVM unusable here")
def test_closing_the_window_cancels_a_running_check(qtbot, tmp_path):
    w = _window(qtbot, tmp_path)
    _action(w).trigger()
    thread = w.host_check.thread
    assert thread is not None and thread.isRunning()
    w.close()
    assert not thread.isRunning()


def test_without_kvm_the_action_is_disabled_with_the_reason(qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(device, "DEV", str(tmp_path / "no-kvm"))
    w = _window(qtbot, tmp_path)
    act = _action(w)
    if device.arch() == "x86_64":
        assert not act.isEnabled()
        assert "does not exist" in act.toolTip()
    w.close()


def test_close_cancels_a_check_without_an_event_filter(qtbot, tmp_path, monkeypatch):
    """Closing the window (its closeEvent, not a Python event filter called for every event
    it receives) cancels a check in flight and waits for its thread. The check here is a
    stand-in that runs until it is cancelled (no KVM needed)."""
    import app.host_check as hc

    def run_until_cancelled(self) -> None:
        self.cancel.wait(30)
        self.finished.emit(None, "cancelled")

    monkeypatch.setattr(hc.CheckWorker, "run", run_until_cancelled)
    w = _window(qtbot, tmp_path)
    filters = []
    monkeypatch.setattr(w, "installEventFilter", filters.append)
    hc.HostCheck(w)  # (a second one, made after the patch: it installs no filter either)
    assert filters == []
    w.host_check.start()
    thread, cancel = w.host_check.thread, w.host_check.cancel
    assert thread is not None and thread.isRunning() and not cancel.is_set()
    w.close()
    assert cancel.is_set() and thread.isFinished()

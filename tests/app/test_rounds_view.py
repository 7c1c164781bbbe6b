"""The Rounds dock's row for the round being sent shows QEMU's expected-downtime now."""

from __future__ import annotations

import pytest

pytest.importorskip("PySide6")

from test_migration import ZERO_COSTS, session  # noqa: E402

from app.rounds_view import EXPECTED_COLUMN, RoundsTable  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402


def test_round_being_sent_shows_the_expected_downtime_now(qtbot):
    """A 31-page slot without log_dirty stays pending after every sync (threshold 123,120
    B from 100-page windows of 4,104 B at 30 ms; a share of 410,399 B lets 100 pages start):
    once dirty-pages-rate is measured (the first period over 1 s), expected-downtime = 31 ×
    4096 B ÷ 4,104 B/ms = 30.94 ms; the grey row of the round being sent shows it, the closed
    rows show theirs (30.0 before)."""
    data = session(
        costs=ZERO_COSTS,
        workloads=[],
        memslots=[
            {"id": 0, "base": "0x40000000", "size": "1MiB", "flags": ["log_dirty"]},
            {"id": 1, "base": "0x48000000", "size": 31 * 4096, "flags": []},
        ],
        migration={"bandwidth": 4_103_990, "downtime_limit_ms": 30, "link_speed": "1Gbit/s"},
    )
    sim = Simulation.from_dict(data)
    sim.run_for(1_150_000_000)
    snap = sim.snapshot()
    assert snap.phase == "iterating"
    table = RoundsTable()
    qtbot.addWidget(table)
    table.fill(snap)
    current = table.rowCount() - 1
    assert table.item(current, 0).text() == f"{snap.round} (sending…)"
    assert table.item(current, EXPECTED_COLUMN).text() == "30.9"
    assert table.item(0, EXPECTED_COLUMN).text() == "30.0"
    header = table.horizontalHeaderItem(EXPECTED_COLUMN)
    assert header.text() == "exp. downtime (ms)" and "expected-downtime" in header.toolTip()
    table.set_extra_column("real KVM", {1: "same"})
    assert "expected-downtime" in table.horizontalHeaderItem(EXPECTED_COLUMN).toolTip()

"""A guest is freed where its last reference drops: a simulation holds no reference cycle.

The app collects cycles only in its GUI thread (app/gui_gc.py), so a guest caught in a cycle
would free hundreds of MB of arrays there, stalling the event loop (127 ms seen for a 16 M-page
guest when ``Migration.sim`` pointed back at the simulation)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from engine.migration.simulation import Simulation

SESSIONS = Path(__file__).resolve().parents[1] / "resources" / "sessions"


@pytest.mark.parametrize("name", ["demo.json", "mode-ring.json", "mode-dbm.json"])
def test_a_dropped_simulation_is_freed_without_the_cyclic_collector(name):
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        sim = Simulation.from_file(SESSIONS / name)
        for _ in range(10_000):  # into the migration: a sync, a harvest, pages sent
            sim.advance()
            if sim.migration.total_pages_sent > 0:
                break
        assert sim.migration.round >= 1 and sim.migration.total_pages_sent > 0
        parts = [weakref.ref(x) for x in (sim, sim.migration, sim.vm, sim.vm.pgt)]
        del sim
        assert [p() is None for p in parts] == [True] * 4
    finally:
        if was_enabled:
            gc.enable()


class _CountingLog(list):
    """A VM operation log that counts every operation ever appended to it."""

    def __init__(self) -> None:
        super().__init__()
        self.appended = 0

    def append(self, op) -> None:
        self.appended += 1
        super().append(op)


def test_the_operation_log_holds_only_the_current_batchs_operations():
    """Every GET, CLEAR and ring reset appends a record to ``vm.op_log``; its readers take what
    was logged since their own mark within one call, so a whole run must not keep them all
    (a long run makes thousands).  After each batch the log holds exactly
    the operations that batch made."""
    sim = Simulation.from_file(SESSIONS / "mode-manual-clear.json")
    sim.vm.op_log = log = _CountingLog()
    while not sim.finished:
        before = log.appended
        sim.advance()
        assert len(log) == log.appended - before
    assert sim.migration.syncs > 3 and len(log) < log.appended  # (14 operations in all)

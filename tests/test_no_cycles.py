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

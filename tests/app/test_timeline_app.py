"""One timeline in the app: the worker at any speed, Step tick and Step round run the rounds
``dirtylog run`` runs, and a session saved after live edits replays them."""

from __future__ import annotations

import gc

import pytest

pytest.importorskip("PySide6")

from app.runner import Runner  # noqa: E402
from engine.files.session import save_session_file  # noqa: E402
from engine.migration.precopy import without_measured  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402


def session() -> dict:
    """Two slots (one 2 MiB-backed), hot/cold and a sweep: seven rounds in 0.4 s."""
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "timeline-app",
        "seed": 11,
        "vcpus": 2,
        "memslots": [
            {
                "id": 0,
                "base": "0x40000000",
                "size": "8MiB",
                "flags": ["log_dirty"],
                "backing": "2MiB",
            },
            {"id": 1, "base": "0x80000000", "size": "4MiB", "flags": ["log_dirty"]},
        ],
        "workloads": [
            {
                "name": "hot",
                "kind": "hotcold",
                "vcpu": 0,
                "slot": 0,
                "rate": "30000 pages/s",
                "hot_fraction": 0.05,
                "hot_share": 0.98,
            },
            {"name": "sweep", "kind": "sequential", "vcpu": 1, "slot": 1, "rate": "6000 pages/s"},
        ],
        "migration": {"start_ms": 7.5, "bandwidth": "400Mbit/s", "downtime_limit_ms": 40},
        "events": [{"t_ms": 33.3, "action": "set_workload", "workload": "sweep", "rate": 9000}],
    }


def cli_run(data: dict) -> dict:
    """What ``dirtylog run`` computes (its default batches)."""
    return without_measured(Simulation.from_dict(data, track_last_sent=False).run())


def drive(qtbot, sim: Simulation, speed: float, steps=(), edits=()) -> dict:
    """Run ``sim`` in the app's worker: first the Step requests, then at ``speed`` to the end,
    sending each edit once the run has passed its tick."""
    runner = Runner(sim)
    try:
        for step in steps:
            t = sim.t_ns
            getattr(runner, f"req_step_{step}").emit()
            qtbot.waitUntil(lambda t=t: sim.t_ns > t, timeout=10_000)
        runner.req_speed.emit(speed)
        runner.req_running.emit(True)
        for tick, edit in edits:
            qtbot.waitUntil(lambda tick=tick: sim.tick >= tick, timeout=20_000)
            runner.req_edit.emit(edit)
        qtbot.waitUntil(lambda: sim.finished, timeout=60_000)
    finally:
        runner.shutdown()
        # free the thread's descriptors now, not in a later test (host tests count them)
        del runner
        gc.collect()
    return without_measured(sim.result())


@pytest.mark.parametrize(
    ("speed", "steps"), [(1e6, ()), (0.25, ("tick", "tick", "round", "tick"))], ids=["fast", "slow"]
)
def test_the_app_at_any_speed_runs_the_cli_rounds(qtbot, speed, steps):
    expected = cli_run(session())
    assert expected["outcome"] == "completed" and expected["rounds_count"] >= 4
    got = drive(qtbot, Simulation.from_dict(session()), speed, steps)
    assert got == expected


def test_a_session_saved_after_live_edits_replays_the_live_rounds(qtbot, tmp_path):
    sim = Simulation.from_dict(session())
    edits = [
        (40, {"action": "set_workload", "workload": "hot", "rate": "60000 pages/s"}),
        (90, {"action": "move_memslot", "id": 1, "base": "0xc0000000"}),
        (120, {"action": "set_tracking", "strategy": "visitor"}),
    ]
    live = drive(qtbot, sim, 0.5, edits=edits)
    recorded = [
        e for e in sim.session["events"] if e["action"] != "set_workload" or e["t_ms"] != 33.3
    ]
    assert len(recorded) == 3
    assert all(e["t_ms"] * 1e6 % sim.tick_ns == 0 for e in recorded)  # at tick boundaries
    path = tmp_path / "saved.json"
    save_session_file(path, sim.session)
    replay = without_measured(Simulation.from_file(path, track_last_sent=False).run())
    assert replay == live

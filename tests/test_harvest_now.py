"""Sessions that say "harvest now": policy ``fixed`` (harvest every N ms, never migrate, as
dirty_log_test's loop does) and the ``harvest`` event; ``--export-bitmaps`` writes the CLEAR
calls made.  Expected sets are read off the trace by hand."""

import json

import numpy as np
import pytest

from engine.cli.main import main
from engine.kvm.dirtylog import bitmap_pages
from engine.migration.simulation import Simulation
from engine.util.errors import ConfigError

BASE = 0x4000_0000
NPAGES = 256
# (t_ns, page): harvests at 5, 10, 15 ms see the pages written at t <= their time
ROWS = [(1_000_000, 3), (4_000_000, 70), (5_000_000, 9), (6_000_000, 3), (12_000_000, 200)]
WANT = [{3, 70, 9}, {3}, {200}]


def _session(tmp_path, mode, policy="fixed", every=5, events=()):
    trace = tmp_path / "t.csv"
    trace.write_text("t_ns,ipa\n" + "".join(f"{t},{BASE + p * 4096}\n" for t, p in ROWS))
    return {
        "format": "dirtylog-session",
        "version": 2,
        "tick_ms": 1,
        "tracking": {"mode": mode, "ring_entries": 256, "clear_chunk": "256KiB"},
        "memslots": [{"id": 0, "base": BASE, "size": NPAGES * 4096, "flags": ["log_dirty"]}],
        "workloads": [{"name": "t", "kind": "trace", "path": str(trace)}],
        "migration": {"policy": policy, "harvest_every_ms": every, "timeout_s": 0.015},
        "events": list(events),
    }


def _harvests(tmp_path, data):
    sim = Simulation.from_dict(data, tmp_path)
    sim.keep_harvests = True
    result = sim.run()
    return sim, result, [set(bitmap_pages(h["slots"][0]).tolist()) for h in sim.harvests]


@pytest.mark.parametrize("mode", ["bitmap", "manual-clear", "ring"])
def test_fixed_policy_harvests_every_interval_without_migrating(tmp_path, mode):
    sim, result, got = _harvests(tmp_path, _session(tmp_path, mode))
    assert [h["t_ns"] for h in sim.harvests] == [5_000_000, 10_000_000, 15_000_000]
    assert got == WANT
    assert result["outcome"] == "harvest-only"
    assert result["transferred_bytes"] == 0


def test_fixed_policy_interval_boundaries(tmp_path):
    """A write exactly at a harvest's time is in it; one a nanosecond later is not."""
    data = _session(tmp_path, "bitmap")
    (tmp_path / "t.csv").write_text(
        f"t_ns,ipa\n4999999,{BASE}\n5000000,{BASE + 4096}\n5000001,{BASE + 8192}\n"
    )
    data["workloads"][0]["path"] = str(tmp_path / "t.csv")
    _, _, got = _harvests(tmp_path, data)
    assert got[:2] == [{0, 1}, {2}]


def test_harvest_event(tmp_path):
    """Policy fixed with a long interval: only the events harvest (at 2 and 11 ms)."""
    events = [{"t_ms": 2, "action": "harvest"}, {"t_ms": 11, "action": "harvest"}]
    data = _session(tmp_path, "bitmap", every=1000, events=events)
    sim, _, got = _harvests(tmp_path, data)
    assert [h["t_ns"] for h in sim.harvests] == [2_000_000, 11_000_000]
    assert got == [{3}, {70, 9, 3}]


def test_harvest_event_refused_without_a_migration(tmp_path):
    """Known at load (issue 16: events are checked against the state they will meet)."""
    data = _session(tmp_path, "bitmap", policy="none", events=[{"t_ms": 1, "action": "harvest"}])
    data["migration"]["timeout_s"] = 0.003
    with pytest.raises(ConfigError) as e:
        Simulation.from_dict(data, tmp_path)
    assert e.value.field == "events[0].t_ms" and "dirty logging on" in e.value.rule


def test_export_bitmaps_writes_the_clear_calls(tmp_path):
    """manual-clear, 64-page chunks: harvest 1 clears pages 3 and 9 (chunk 0) and 70
    (chunk 1), harvest 2 page 3, harvest 3 page 200 (chunk 3)."""
    s = tmp_path / "s.json"
    s.write_text(json.dumps(_session(tmp_path, "manual-clear")))
    out = tmp_path / "bm"
    assert main(["run", str(s), "--export-bitmaps", str(out), "--quiet"]) == 0
    clears = json.loads((out / "clears.json").read_text())
    got = [(c["round"], c["first_page"], c["num_pages"], c["mask"]) for c in clears]
    assert got == [
        (2, 0, 64, [hex((1 << 3) | (1 << 9))]),
        (2, 64, 64, [hex(1 << 6)]),
        (3, 0, 64, [hex(1 << 3)]),
        (4, 192, 64, [hex(1 << 8)]),
    ]
    rounds = json.loads((out / "rounds.json").read_text())
    words = np.fromfile(out / rounds[0]["slots"]["0"]["file"], dtype="<u8")
    assert set(bitmap_pages(words).tolist()) == WANT[0]


@pytest.mark.parametrize(
    ("max_rounds", "timeout_s", "harvest_ms", "end_ms"),
    [
        # each harvest closes a round (dirty-sync-count + 1, from round 1): after the 2nd the
        # round is 3, which is over max_rounds 2 and not over 3
        (2, 1.0, [5, 10], 10),
        (3, 1.0, [5, 10, 15], 15),
        # the run stops in the first tick at or after timeout_s (1 ms ticks)
        (100, 0.015, [5, 10, 15], 15),
        (100, 0.0149, [5, 10, 15], 15),  # (the 15 ms tick harvests, then stops)
        (100, 0.0151, [5, 10, 15], 16),
    ],
)
def test_fixed_policy_stops_after_max_rounds_or_at_its_timeout(
    tmp_path, max_rounds, timeout_s, harvest_ms, end_ms
):
    """Policy fixed stops when the round is over ``max_rounds`` or ``timeout_s`` has passed
    (dirty_log_test's loop, bounded as a migration is), with outcome "harvest-only" and the
    reason in the log, at that tick's time."""
    data = _session(tmp_path, "bitmap")
    data["migration"].update(max_rounds=max_rounds, timeout_s=timeout_s)
    sim, result, _ = _harvests(tmp_path, data)
    assert [h["t_ns"] / 1e6 for h in sim.harvests] == harvest_ms
    assert result["outcome"] == "harvest-only" and sim.migration.phase == "done"
    assert result["total_time_ms"] == end_ms and sim.migration.t_end_ns == end_ms * 1_000_000
    reason = "fixed: harvested every 5 ms, no migration"
    assert result["reason"] == reason
    assert [m.split("] ", 1)[1] for m in sim.messages][-1] == reason


def test_fixed_policy_timeout_counts_from_the_migration_start(tmp_path):
    """start_ms 20: harvests every 5 ms from the start (25, 30, 35 ms; the trace's writes all
    come before it, while logging is still off — it starts with the migration — so none is
    reported), and timeout_s 0.015 ends it 15 ms after the start, at 35 ms, not 15 ms after
    time 0."""
    data = _session(tmp_path, "bitmap")
    data["migration"].update(start_ms=20, timeout_s=0.015)
    sim, result, got = _harvests(tmp_path, data)
    assert [h["t_ns"] / 1e6 for h in sim.harvests] == [25, 30, 35]
    assert got == [set(), set(), set()]
    assert sim.migration.t_end_ns == 35_000_000

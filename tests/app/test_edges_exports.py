"""Boundaries of the app's exports and scripted runs that no other test pinned (issue 19: a
hand mutation of each survived the whole suite).

- ``export_bitmaps`` writes the slot's own page count in the sidecar, not its words × 64:
  every other test's slot was a multiple of 64 pages, where the two agree.  The sidecar
  format is ``engine/files/export.py`` (``npages``: the slot's pages; ``words``:
  ceil(npages / 64)); the expected values are worked out by hand.
- ``SimWorker.run_rounds`` without a migration counts simulated *seconds*: its goal is
  t_ns // 1e9 + n whole seconds (a ``// 1e6`` made it milliseconds, and a run started at
  999 ms then ran to its timeout).  Driven here without a thread: the worker's loop
  (``_tick``) is called directly, as its timer would.
- The scripted launcher (``app/launch.py``) stops at exactly the seconds or rounds asked.

No window is needed for the first two (the worker and the export mixin are driven
directly, Qt offscreen); the scripted test runs the launcher's own loop in-process.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pytest

from engine.migration.simulation import Simulation

S = 1_000_000_000
MS = 1_000_000


def _session(npages=100, **over):
    s = {
        "format": "dirtylog-session",
        "version": 2,
        "name": "edges",
        "seed": 3,
        "tick_ms": 1,
        "geometry": {"granule": "4KiB", "ipa_bits": 40},
        "vcpus": 2,
        "memslots": [
            {
                "id": 0,
                "name": "ram",
                "base": "0x40000000",
                "size": str(npages * 4096),
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],  # fmt: skip
        "workloads": [
            {"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "20000 pages/s"}
        ],
        "migration": {"policy": "qemu", "bandwidth": "1Mbit/s", "timeout_s": 60},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(s.get(k), dict):
            s[k] = {**s[k], **v}
        else:
            s[k] = v
    return s


def _sim(**kw) -> Simulation:
    return Simulation.from_dict(copy.deepcopy(_session(**kw)))


# -- export_bitmaps: the sidecar's fields --------------------------------------------------------


def _export(sim, out):
    from app.exports import ExportsMixin

    said: list[str] = []
    host = SimpleNamespace(sim=sim, report=said.append)
    return ExportsMixin.export_bitmaps(host, out), said


@pytest.mark.parametrize(("npages", "words"), [(63, 1), (64, 1), (65, 2), (100, 2), (128, 2)])
def test_the_sidecar_holds_the_slots_own_page_count(tmp_path, npages, words):
    """A slot of ``npages`` 4 KiB pages at 1 GiB (gfn 0x40000): the sidecar says npages as
    the slot has it (63, 64, 65, 100, 128) and ceil(npages / 64) words; the harvest's round
    (QEMU's dirty-sync-count) and its time in ns; the .bin is 8 bytes a word; and the pair
    reads back (read_snapshot refuses bits past npages)."""
    from engine.files.export import read_snapshot

    sim = _sim(npages=npages)
    m = sim.migration
    while m.syncs < 2 and not sim.finished:
        sim.advance(1)
    assert m.syncs == 2  # (the setup sync is 1: this is the first round's end)
    written, said = _export(sim, tmp_path / "bm")
    assert [p.name for p in written] == ["round-0002-slot-0.bin", "round-0002-slot-0.json"]
    side = json.loads(written[1].read_text())
    assert side["npages"] == npages
    assert side["words"] == words == -(-npages // 64)
    assert (side["slot"], side["base_gfn"], side["page_size"]) == (0, 0x40000, 4096)
    assert side["round"] == 2 and side["t_ns"] == m.last_harvest_t_ns
    assert side["t_ns"] % MS == 0 and 0 < side["t_ns"] <= sim.t_ns  # ns, on a tick
    assert written[0].stat().st_size == 8 * words
    snap = read_snapshot(written[1])
    assert snap.npages == npages and snap.pages().max() < npages
    assert said == [f"exported 1 bitmap(s) to {tmp_path / 'bm'}"]


def test_no_export_before_the_first_harvest(tmp_path):
    """Before any harvest there is nothing to export: no file, one message."""
    written, said = _export(_sim(), tmp_path / "bm")
    assert written == [] and said == ["export: no harvest yet"]
    assert not (tmp_path / "bm").exists()


# -- the worker's run_rounds without a migration: simulated seconds ---------------------------


def _worker(sim):
    from app.runner import SimWorker

    w = SimWorker(sim)
    frames = []
    w.frame.connect(frames.append)
    return w, frames


def _run_to_goal(w, limit=20_000):
    for _ in range(limit):
        if not w.running:
            return
        w._tick()
    raise AssertionError("the worker did not stop")


@pytest.mark.parametrize(
    ("start_ms", "n", "end_ms"),
    [
        (0, 1, 1000),
        (999, 1, 1000),  # 0 whole seconds done: to 1 s (not 999 + 1 "seconds" = ms)
        (1000, 1, 2000),  # exactly 1 s done: to 2 s
        (1001, 1, 2000),
        (1001, 2, 3000),
    ],
)
def test_run_rounds_without_a_migration_stops_on_the_next_whole_seconds(qapp, start_ms, n, end_ms):
    """run_rounds(n), no migration: the goal is (t_ns // 1e9 + n) s and the run stops at the
    first tick at or past it (1 ms ticks: exactly on it)."""
    sim = _sim(npages=512, migration={"policy": "none", "timeout_s": 4})
    while sim.t_ns < start_ms * MS:
        sim.advance(min(256, (start_ms * MS - sim.t_ns) // sim.tick_ns))
    assert sim.t_ns == start_ms * MS
    w, frames = _worker(sim)
    w.run_rounds(n)
    _run_to_goal(w)
    assert sim.t_ns == end_ms * MS
    last = frames[-1]
    assert not last.running and not last.stepping and not last.finished
    assert last.snapshot.t_ns == end_ms * MS


def test_run_rounds_goal_between_ticks_stops_at_the_first_tick_past_it(qapp):
    """3 ms ticks: 1 s is not a tick boundary; the run stops at 1002 ms (334 ticks), the
    first boundary at or after it, not at a batch's end further on."""
    sim = _sim(npages=512, tick_ms=3, migration={"policy": "none", "timeout_s": 4})
    w, _ = _worker(sim)
    w.run_rounds(1)
    _run_to_goal(w)
    assert (sim.t_ns, sim.tick) == (1002 * MS, 334)


def test_run_rounds_without_a_migration_stops_at_the_end_of_the_run(qapp):
    """A goal past the timeout (3 s goal, 2.5 s timeout) stops at the end (2.5 s)."""
    sim = _sim(npages=512, migration={"policy": "none", "timeout_s": 2.5})
    w, frames = _worker(sim)
    w.run_rounds(3)
    _run_to_goal(w)
    assert sim.t_ns == 2500 * MS and frames[-1].finished


def test_run_rounds_with_a_migration_counts_closed_rounds(qapp):
    """With a migration, run_rounds(n) stops as the round count reaches len(rounds) + n:
    1, then 2 more (3); each stop is the tick of that round's harvest (t_end_ns)."""
    sim = _sim(npages=4096, migration={"bandwidth": "64Mbit/s"})
    w, frames = _worker(sim)
    for n, total in ((1, 1), (2, 3)):
        w.run_rounds(n)
        _run_to_goal(w)
        rounds = sim.migration.rounds
        assert len(rounds) == total
        assert sim.t_ns == rounds[-1]["t_end_ns"]
        assert len(frames[-1].snapshot.rounds) == total


# -- the scripted launcher -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("migration", "n", "t_ns", "rounds"),
    [({"policy": "none", "timeout_s": 5}, 1, 1 * S, 0), ({"bandwidth": "64Mbit/s"}, 2, None, 2)],
)
def test_the_scripted_run_stops_at_the_seconds_or_rounds_asked(
    qapp, window, tmp_path, migration, n, t_ns, rounds
):
    """``--run-rounds N --screenshot P --quit`` in-process (app.launch._scripted): without a
    migration it stops at exactly N simulated seconds (1 ms ticks), with one after N rounds,
    at the N-th round's harvest; the screenshot is written."""
    from PySide6.QtCore import QTimer

    from app.launch import _scripted

    sim = _sim(npages=4096, migration=migration)
    window.load_simulation(sim, None)
    shot = tmp_path / "shot.png"
    args = SimpleNamespace(run_rounds=n, screenshot=str(shot), quit=True)
    QTimer.singleShot(60_000, qapp.quit)  # (a safety net: the test fails, it does not hang)
    assert _scripted(qapp, window, args, QTimer) == 0
    snap = window.last_frame.snapshot
    assert len(snap.rounds) == rounds
    if t_ns is None:
        t_ns = snap.rounds[-1]["t_end_ns"]
    assert snap.t_ns == t_ns == sim.t_ns
    assert shot.read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(snap.t_ns)

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


def test_the_sidecar_round_is_the_harvest_number_not_the_round(tmp_path):
    """Xen's policy starts in round 1 with no harvest (send_all_pages follows
    enable_logdirty with no CLEAN), so its first harvest is sync 1 while the round is then
    2: the export is named and numbered by the harvest, as ``dirtylog export --round 1``
    names it (round-0001), and its words are that harvest's."""
    sim = _sim(npages=100, migration={"policy": "xen"})
    sim.keep_harvests = True
    m = sim.migration
    while m.syncs < 1 and not sim.finished:
        sim.advance(1)
    assert (m.syncs, m.round) == (1, 2)
    written, _ = _export(sim, tmp_path / "bm")
    assert [p.name for p in written] == ["round-0001-slot-0.bin", "round-0001-slot-0.json"]
    side = json.loads(written[1].read_text())
    assert side["round"] == 1 and side["t_ns"] == sim.harvests[0]["t_ns"]
    words = np.frombuffer(written[0].read_bytes(), "<u8")
    assert np.array_equal(words, sim.harvests[0]["slots"][0])


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
    net = QTimer()  # a safety net: the test fails, it does not hang; stopped after, so that
    net.setSingleShot(True)  # it cannot quit a later test's event loop
    net.timeout.connect(qapp.quit)
    net.start(30_000)
    # --quit closes the window, the last one: Qt's automatic quit on that is left out here (in
    # the test process it stopped the event loops of later app tests)
    quit_on_close = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    try:
        assert _scripted(qapp, window, args, QTimer) == 0
    finally:
        net.stop()
        qapp.setQuitOnLastWindowClosed(quit_on_close)
    snap = window.last_frame.snapshot
    assert len(snap.rounds) == rounds
    if t_ns is None:
        t_ns = snap.rounds[-1]["t_end_ns"]
    assert snap.t_ns == t_ns == sim.t_ns
    assert shot.read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(snap.t_ns)


# -- export names and empty files ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "what", "written"),
    [
        ("out/rounds", "rounds-csv", "out/rounds.csv"),  # no extension: the default added
        ("out/rounds.txt", "rounds-csv", "out/rounds.txt"),  # one given: kept
        ("out/graph", "graphs-svg", "out/graph.svg"),
        ("/", "screenshot", "/"),  # no name at all: kept (writing it fails, and says so)
    ],
)
def test_with_suffix_adds_the_default_only_to_a_name_without_one(given, what, written):
    """with_suffix: a name without an extension gets the export's default; one with an
    extension, or a path with no name, is kept as given."""
    from pathlib import Path

    from app.exports import with_suffix

    assert with_suffix(given, what) == Path(written)


def test_an_export_that_leaves_an_empty_file_says_nothing_was_written(tmp_path, monkeypatch):
    """export_to checks the file it wrote: one of 0 bytes is reported as a failure, one of
    a byte or more as written (the rounds CSV of no rounds is its header line)."""
    from app import exports
    from engine.cli import run as cli_run

    said: list[str] = []
    host = SimpleNamespace(last_frame=None, sim=None, report=said.append)
    path = exports.ExportsMixin.export_to(host, "rounds-csv", tmp_path / "r")
    assert path == tmp_path / "r.csv" and path.stat().st_size > 0
    assert said == [f"exported {tmp_path / 'r.csv'}"]
    monkeypatch.setattr(cli_run, "write_rounds_csv", lambda p, rounds: p.write_bytes(b""))
    assert exports.ExportsMixin.export_to(host, "rounds-csv", tmp_path / "e") is None
    assert said[-1] == f"export failed, nothing written: {tmp_path / 'e.csv'}"
    monkeypatch.setattr(cli_run, "write_rounds_csv", lambda p, rounds: p.write_bytes(b"x"))
    assert exports.ExportsMixin.export_to(host, "rounds-csv", tmp_path / "one") is not None


# -- the worker's wall-clock arithmetic (a fake clock: exact binary fractions) -------------------


def _clock(monkeypatch, now):
    """app.runner's clock reads ``now[0]``."""
    from app import runner

    monkeypatch.setattr(runner, "time", SimpleNamespace(perf_counter=lambda: now[0]))


def test_the_target_falls_behind_by_at_most_max_lag(qapp, monkeypatch):
    """_target: speed × wall seconds since the anchor, in ns (× 1e9).  Anchor (10 s, 0),
    speed 1, the engine still at 0: at 10.125 s the target is 0.125 s; at 10.25 s it is
    0.25 s = MAX_LAG_S behind, not more, so kept; at 10.375 s it is 0.375 s behind, more
    than MAX_LAG_S: the anchor moves up (to now − 0.25 s) and the target is 0.25 s."""
    from app.runner import MAX_LAG_S

    assert MAX_LAG_S == 0.25
    w, _ = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))
    for now, target, anchor in (
        (10.125, 0.125 * S, (10.0, 0)),
        (10.25, 0.25 * S, (10.0, 0)),
        (10.375, 0.25 * S, (10.125, 0)),
    ):
        w._anchor = (10.0, 0)
        assert w._target(now) == target
        assert w._anchor == anchor
    w.speed = 4.0  # 4 simulated s per wall s: the lag allowed is 4 × 0.25 s = 1 s
    w._anchor = (10.0, 0)
    assert w._target(10.25) == 1 * S and w._anchor == (10.0, 0)


def test_batches_are_the_whole_ticks_to_the_target(qapp):
    """_max_ticks: the whole ticks between now and the target (floor), at least 1, at most
    MAX_BATCH (256) and the last batch's size: 1 ms ticks, target 5.5 ms ahead: 5; 0 ahead:
    1; 1000 ahead: 256, or 40 after a batch sized 40."""
    w, _ = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))
    assert w._max_ticks(5.5 * MS) == 5
    assert w._max_ticks(5 * MS) == 5
    assert w._max_ticks(0.0) == 1
    assert w._max_ticks(1000.0 * MS) == 256
    w._batch_ticks = 40
    assert w._max_ticks(1000.0 * MS) == 40


def test_achieved_speed_needs_a_fifth_of_a_second_of_samples(qapp):
    """achieved(): simulated seconds (ns / 1e9) per wall second between the first and last
    sample, once they are at least 0.2 wall s apart: 0.1 simulated s over exactly 0.2 s is
    0.5 (0.2 − 0.0 is the float 0.2: at the boundary); over 0.25 s it is 0.4; over 0.1875 s
    it is too soon (None); one sample is too few."""
    w, _ = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))
    w._samples.append((0.0, 0))
    assert w.achieved() is None
    for wall, speed in ((0.2, 0.5), (0.25, 0.4), (0.1875, None)):
        w._samples.append((wall, 100 * MS))
        assert w.achieved() == speed, wall
        w._samples.pop()


def test_samples_older_than_the_window_are_dropped_keeping_two(qapp, monkeypatch):
    """_sample keeps the samples of the last ACHIEVED_WINDOW_S (2 s): the oldest goes while
    the second one is more than 2 s old, and two samples always stay."""
    now = [0.0]
    _clock(monkeypatch, now)
    w, _ = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))
    for t in (0.0, 1.0, 3.0):
        now[0] = t
        w._sample()
    assert [s[0] for s in w._samples] == [0.0, 1.0, 3.0]  # the second is exactly 2 s old
    now[0] = 3.0625
    w._sample()
    assert [s[0] for s in w._samples] == [1.0, 3.0, 3.0625]
    w._samples.clear()
    for t in (0.0, 5.0):
        now[0] = t
        w._sample()
    assert [s[0] for s in w._samples] == [0.0, 5.0]  # two stay, however old


def test_frames_are_sent_at_most_every_thirtieth_of_a_second(qapp, monkeypatch):
    """_emit without force: a frame when FRAME_INTERVAL_S (1/30 s) has passed since the last,
    none before; and none while the GUI has not shown the last one, until UNSHOWN_WAIT_S
    (0.5 s) after it.  The last frame is at 0 each time, so each difference is exact."""
    from app.runner import FRAME_INTERVAL_S, UNSHOWN_WAIT_S

    now = [0.0]
    _clock(monkeypatch, now)
    w, frames = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))

    def emit_at(t, shown):
        w._last_frame, w._sent = 0.0, 1
        w.shown = 1 if shown else 0
        now[0] = t
        before = len(frames)
        w._emit()
        return len(frames) - before

    assert emit_at(FRAME_INTERVAL_S * 0.5, shown=True) == 0
    assert emit_at(FRAME_INTERVAL_S, shown=True) == 1  # exactly one interval after
    assert w._last_frame == FRAME_INTERVAL_S
    assert emit_at(0.25, shown=False) == 0  # the last frame not shown yet
    assert emit_at(UNSHOWN_WAIT_S, shown=False) == 1  # waited long enough for it
    assert emit_at(0.25, shown=True) == 1


@pytest.mark.parametrize(("asked", "speed"), [(0.0, 1e-3), (-5.0, 1e-3), (0.002, 0.002)])
def test_speed_is_at_least_a_thousandth(qapp, asked, speed):
    """set_speed: at least 1e-3 simulated s per wall s (0 or less would never advance)."""
    w, _ = _worker(_sim(npages=512, migration={"policy": "none", "timeout_s": 4}))
    w.set_speed(asked)
    assert w.speed == speed

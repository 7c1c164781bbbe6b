"""One timeline: the same session gives the same run at any batch size.

Tick by tick (``advance(1)``, the app's Step tick), random batch sizes, and the default batches
of ``run`` must agree on everything but measured wall/CPU times: rounds, every harvest's
bitmap, destination and source versions, counts and event outcomes.  The expected values come
from the tick-by-tick run, which does one tick exactly as the clock's docstring orders it.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from budget import examples
from hypothesis import Phase, given, reject, settings
from hypothesis import strategies as st
from traces import manual_clear_trace_session

from engine.kvm import dirtylog as DL
from engine.migration.precopy import without_measured
from engine.migration.simulation import EXIT_PERIOD_TICKS, Simulation
from engine.util.errors import DirtylogError

ROOT = Path(__file__).resolve().parents[1]
SLOT0, SLOT1, FREE = 0x40000000, 0x80000000, 0xC0000000


def run_with(data: dict, batches) -> tuple[dict, Simulation]:
    """Run ``data`` to the end, each step at most ``batches()`` ticks."""
    sim = Simulation.from_dict(data)
    sim.keep_harvests = True
    while not sim.finished:
        sim.advance(batches())
    return without_measured(sim.result()), sim


def walked_tables(pgt) -> list[list[int]]:
    """Every table as a walk from the roots meets it (breadth first), each table descriptor's
    address replaced by the child's place in that walk.  Where in the pool a new table lands
    (its PA) is not modelled: one pass creates a batch's tables in address order, tick by tick
    in tick order, as real KVM takes table pages from its memcache in fault order at
    addresses the page allocator picks."""
    from engine.stage2 import descriptor as D

    order = list(range(pgt.n_root))
    seen = {t: i for i, t in enumerate(order)}
    out = []
    for table in order:  # (grows while walking)
        level = int(pgt.table_level[table])
        row = pgt.pool[table]
        tab = D.is_table(row, level) if level < 3 else np.zeros(row.size, bool)
        entries = row.astype(np.uint64).tolist()
        for i in np.flatnonzero(tab).tolist():
            child = int(pgt.table_of(row[i : i + 1])[0])
            if child not in seen:
                seen[child] = len(order)
                order.append(child)
            entries[i] = ("table", seen[child], int(row[i]) & ~D.oa_mask(pgt.page_shift))
        out.append(entries)
    return out


def state(sim: Simulation) -> dict:
    """Everything a run leaves behind that must not depend on batching (arrays as lists)."""
    m = sim.migration
    out = {
        "t_ns": sim.t_ns,
        "tick": sim.tick,
        "versions": {sid: st.version.tolist() for sid, st in sim.vm.slots.items()},
        "kvm_bitmaps": {
            sid: None if st.bitmap is None else st.bitmap.tolist()
            for sid, st in sim.vm.slots.items()
        },
        "tables": walked_tables(sim.vm.pgt) if sim.vm.pgt.pool.size < 1 << 16 else None,
        "messages": sim.messages,
        "harvests": [
            {
                "round": h["round"],
                "t_ns": h["t_ns"],
                "slots": {s: w.tolist() for s, w in h["slots"].items()},
            }
            for h in sim.harvests
        ],
    }
    if m is not None:
        out["dest"] = {sid: sm.dest.tolist() for sid, sm in m.slots.items()}
        out["migration_bitmaps"] = {sid: sm.bitmap.tolist() for sid, sm in m.slots.items()}
    return out


def assert_same_timeline(data: dict, seed: int) -> None:
    try:
        Simulation.from_dict(data)
    except DirtylogError:  # refused at load (preflight): not a session to compare
        reject()
    one, sim_one = run_with(data, lambda: 1)
    rnd = random.Random(seed)
    rand, sim_rand = run_with(data, lambda: rnd.choice([2, 3, 7, 64, 255, 256, 1000]))
    default, sim_default = run_with(data, lambda: 256)
    assert rand == one
    assert default == one
    s1 = state(sim_one)
    assert state(sim_rand) == s1
    assert state(sim_default) == s1


# -- random small sessions ---------------------------------------------------------------------

WORKLOADS = ["uniform", "sequential", "hotcold", "zipf", "memstress", "once", "phases"]


def workload(draw, i: int, kind: str, slot: int) -> dict:
    w = {"name": f"w{i}", "kind": kind, "vcpu": i % 2, "slot": slot}
    if kind == "phases":
        w["phases"] = [
            {"kind": "uniform", "rate": draw(st.sampled_from([2000, 9000])), "duration_ms": 7.5},
            {"kind": "sequential", "rate": 5000, "duration_ms": draw(st.sampled_from([3, 40]))},
        ]
        return w
    w["rate"] = draw(st.sampled_from([700, 4000, 15000]))
    if kind == "memstress":
        w["write_percent"] = draw(st.sampled_from([100, 60]))  # 60: reads, applied tick by tick
        w["random_access"] = draw(st.booleans())
    return w


def events(draw) -> list[dict]:
    """Live edits at times on and between tick boundaries."""
    t = st.sampled_from([0, 10, 33.3, 64, 90.5, 150, 151, 260])
    pool = [
        {"action": "set_workload", "workload": "w0", "rate": draw(st.sampled_from([0, 20000]))},
        {"action": "move_memslot", "id": 1, "base": hex(FREE + 0x1000000)},
        {"action": "delete_memslot", "id": 1},
        {
            "action": "add_memslot",
            "id": 7,
            "base": hex(FREE),
            "size": "1MiB",
            "flags": ["log_dirty"],
            "backing": draw(st.sampled_from(["4KiB", "2MiB"])),
        },
        {
            "action": "add_workload",
            "name": "late",
            "kind": "uniform",
            "vcpu": 1,
            "slot": 7,
            "rate": 3000,
        },
        {"action": "delete_workload", "workload": "w0"},
        {
            "action": "set_tracking",
            "strategy": draw(st.sampled_from(["range", "visitor", "masked-skip"])),
        },
        {"action": "set_migration", "bandwidth": draw(st.sampled_from(["32Mbit/s", "400Mbit/s"]))},
        {"action": "pause_vcpu", "vcpu": 1},
        {
            "action": "set_memslot_flags",
            "id": 0,
            "flags": draw(st.sampled_from([[], ["log_dirty"]])),
        },
        {"action": "harvest"},
        {"action": "resume_vcpu", "vcpu": 1},
    ]
    chosen = draw(st.lists(st.sampled_from(range(len(pool))), max_size=4, unique=True))
    return [{"t_ms": draw(t), **pool[i]} for i in chosen]


@st.composite
def sessions(draw) -> dict:
    mode = draw(st.sampled_from(["bitmap", "manual-clear", "ring", "dbm"]))
    kinds = draw(st.lists(st.sampled_from(WORKLOADS), min_size=1, max_size=3))
    policy = draw(st.sampled_from(["qemu", "xen", "none"]))
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "timeline",
        "seed": draw(st.integers(0, 1000)),
        "tick_ms": draw(st.sampled_from([1, 0.5, 2])),
        "tracking": {
            "mode": mode,
            "strategy": draw(st.sampled_from(["range", "visitor", "rmap"])),
            "ring_entries": draw(st.sampled_from([256, 4096])),  # 256: rings fill
            "eager_split": draw(st.sampled_from([0, "2MiB"])),
            "clear_chunk": "256KiB",
        },
        "vcpus": 2,
        "memslots": [
            {
                "id": 0,
                "base": hex(SLOT0),
                "size": "2MiB",
                "flags": ["log_dirty"],
                "backing": draw(st.sampled_from(["4KiB", "2MiB"])),
            },
            {
                "id": 1,
                "base": hex(SLOT1),
                "size": "1MiB",
                "flags": draw(st.sampled_from([["log_dirty"], []])),
            },
        ],
        "workloads": [workload(draw, i, k, i % 2) for i, k in enumerate(kinds)],
        "migration": {
            "policy": policy,
            "start_ms": draw(st.sampled_from([0, 20, 41.7])),
            "bandwidth": draw(st.sampled_from(["48Mbit/s", "160Mbit/s"])),
            # 100 Mbit/s: the link, not max-bandwidth, holds a 160 Mbit/s sender (MAX_WAIT turns)
            "link_speed": draw(st.sampled_from(["10Gbit/s", "100Mbit/s"])),
            "downtime_limit_ms": 30,
            "timeout_s": 0.4 if policy == "none" else 1,
            "max_rounds": 12,
            "auto_converge": draw(st.booleans()),
            "xen_max_rounds": 4,
        },
        "events": events(draw),
    }


# (no shrinking: a shrink step re-runs three whole simulations; --slow runs 200 examples)
@settings(
    max_examples=examples(6, 200),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
)
@given(sessions(), st.integers(0, 1 << 30))
def test_any_batching_gives_the_tick_by_tick_run(data, seed):
    assert_same_timeline(data, seed)


# -- the divergences the issue found -------------------------------------------------------------


def small_demo() -> dict:
    """demo.json's shape (hot/cold on a 2 MiB-backed slot, a sweep on a 4K slot), smaller and
    shorter: it gives up after 4 s simulated, in its fourth round."""
    data = json.loads((ROOT / "resources/sessions/demo.json").read_text())
    data["memslots"][0]["size"] = data["memslots"][1]["size"] = "16MiB"
    data["migration"].update(
        start_ms=20, bandwidth="200Mbit/s", downtime_limit_ms=50, max_rounds=8, timeout_s=4
    )
    return data


def test_round_one_dirty_count_does_not_depend_on_the_batch_size():
    counts = set()
    for k in (1, 7, 256):
        sim = Simulation.from_dict(small_demo())
        while not sim.finished and len(sim.migration.rounds) < 1:
            sim.advance(k)
        counts.add((sim.migration.rounds[0]["t_end_ns"], sim.migration.rounds[0]["dirty_pages"]))
    assert len(counts) == 1, counts


def move_session(move: bool) -> dict:
    """A page written at 100 ms in a logged slot, the slot moved at 200 ms (issue 12)."""
    return {
        "format": "dirtylog-session",
        "version": 2,
        "seed": 3,
        "vcpus": 1,
        "memslots": [{"id": 0, "base": hex(SLOT0), "size": "4MiB", "flags": ["log_dirty"]}],
        "workloads": [
            {"name": "w", "kind": "sequential", "vcpu": 0, "slot": 0, "rate": "100 pages/s"}
        ],
        "migration": {"bandwidth": "16Mbit/s", "downtime_limit_ms": 20, "timeout_s": 30},
        "events": [{"t_ms": 200, "action": "move_memslot", "id": 0, "base": hex(SLOT1)}]
        if move
        else [],
    }


@pytest.mark.parametrize("mode", ["bitmap", "manual-clear", "ring"])
@pytest.mark.parametrize("move", [False, True])
def test_a_slot_move_loses_no_dirty_bit_at_any_batch_size(move, mode):
    """The issue's case: tick by tick, the write before the move was lost (10 mismatches),
    batched it was hidden.  Now both agree, and KVM keeps a moved slot's dirty log
    (kvm_prepare_memory_region), so nothing is lost."""
    data = move_session(move)
    data["tracking"] = {"mode": mode}
    one, _ = run_with(data, lambda: 1)
    batched, _ = run_with(data, lambda: 256)
    assert one == batched
    assert one["outcome"] == "completed"
    assert one["verification"]["mismatches"] == 0


# -- the clock's rules ------------------------------------------------------------------------


def test_an_event_between_ticks_applies_at_the_next_tick_start():
    data = move_session(False)
    data["tick_ms"] = 2
    data["events"] = [
        {"t_ms": 3.0, "action": "set_workload", "workload": "w", "rate": 0},  # tick 2 starts at 4
        {"t_ms": 4.0, "action": "pause_vcpu", "vcpu": 0},  # on the boundary: tick 2
    ]
    sim = Simulation.from_dict(data)
    sim.advance(256)
    assert sim.tick == 2  # the batch stopped before the events' tick
    assert sim.workloads[0].rate == 100
    sim.advance(1)
    assert sim.workloads[0].rate == 0 and sim.paused_vcpus == {0}
    assert [m.split("] ")[0] for m in sim.messages if "applied" in m] == ["[4.0 ms", "[4.0 ms"]


def test_exit_time_is_owed_from_the_next_exit_period():
    """Faults of period 0 cost the vCPU nothing in period 0, and their count × 2.5 µs (the
    default fault_exit) out of the first tick of period 1."""
    sim = Simulation.from_dict(move_session(False))
    sim.advance(EXIT_PERIOD_TICKS)
    acc = sim.migration.acc
    faults = int(acc.faults)
    assert faults > 0
    assert acc.active_ns == EXIT_PERIOD_TICKS * 1_000_000
    sim.advance(1)
    assert acc.active_ns == (EXIT_PERIOD_TICKS + 1) * 1_000_000 - faults * 2500
    assert sim.vcpu_debt_ns.tolist() == [0]


@pytest.mark.parametrize("throttle", [0, 37])
def test_exit_time_owed_is_paid_from_the_first_ticks_as_a_plain_loop_pays_it(throttle):
    """Each tick pays what is still owed, at most the vCPU's whole time in it (a plain loop
    over the ticks); a paused vCPU pays nothing; debts below, at and above one tick and
    past the batch's end."""
    data = move_session(False)
    data["vcpus"] = 5
    sim = Simulation.from_dict(data)
    sim.migration.throttle_pct = throttle
    sim.paused_vcpus = {3}
    tick = 1_000_000 * (100 - throttle) // 100
    debts = [0, tick - 1, tick, 2 * tick + 17, 40 * tick]
    sim.vcpu_debt_ns[:] = debts
    want, left = [], list(debts)
    for _ in range(6):
        row = []
        for v in range(5):
            budget = 0 if v == 3 else tick
            pay = min(left[v], budget)
            left[v] -= pay
            row.append(budget - pay)
        want.append(row)
    assert sim._active_ns(6).tolist() == want
    assert sim.vcpu_debt_ns.tolist() == left


def test_a_live_edit_is_recorded_at_its_tick_and_replays_exactly():
    data = small_demo()
    live = Simulation.from_dict(data)
    live.keep_harvests = True
    rnd = random.Random(5)
    edits = [
        (30, {"action": "set_workload", "workload": "hot", "rate": "90000 pages/s"}),
        (55, {"action": "move_memslot", "id": 1, "base": "0x200000000"}),
        (80, {"action": "set_migration", "bandwidth": "300Mbit/s"}),
    ]
    for tick, edit in edits:
        while live.tick < tick:
            live.advance(rnd.randint(1, tick - live.tick))
        live.apply_edit(edit)
    while not live.finished:
        live.advance(rnd.randint(1, 300))
    recorded = live.session["events"]
    assert [e["t_ms"] for e in recorded] == [30.0, 55.0, 80.0]
    replay, replay_sim = run_with(live.session, lambda: 256)
    assert replay == without_measured(live.result())
    assert state(replay_sim) == state(live)


def test_cli_max_batch_ticks_prints_the_same_run(tmp_path):
    path = tmp_path / "s.json"
    data = move_session(True)
    data["migration"]["timeout_s"] = 3
    path.write_text(json.dumps(data))
    outs = []
    for n in ("1", "5", "256"):
        out = tmp_path / f"r{n}.json"
        cmd = [sys.executable, "-m", "engine.cli", "run", str(path), "--max-batch-ticks", n]
        proc = subprocess.run(cmd + ["--json", str(out)], capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr
        outs.append((proc.stdout, without_measured(json.loads(out.read_text()))))
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("bad", ["0", "-3", "x"])
def test_cli_max_batch_ticks_refuses_a_non_positive_number(tmp_path, bad):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(move_session(False)))
    cmd = [sys.executable, "-m", "engine.cli", "run", str(path), "--max-batch-ticks", bad]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "--max-batch-ticks" in proc.stderr and "Traceback" not in proc.stderr


def test_export_round_is_the_round_of_run(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(small_demo()))
    result, sim = run_with(small_demo(), lambda: 256)
    r2 = next(h for h in sim.harvests if h["round"] == 2)
    # sync 1 is the setup sync; sync 2 is the harvest that closes the row labelled 1 (pass 1)
    assert result["rounds"][0]["t_end_ns"] == r2["t_ns"] != result["rounds"][1]["t_end_ns"]
    cmd = [sys.executable, "-m", "engine.cli", "export", str(path), "--round", "2"]
    proc = subprocess.run(
        cmd + ["--out", str(tmp_path / "x")], capture_output=True, text=True, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    for sid, words in r2["slots"].items():
        side = json.loads((tmp_path / "x" / f"round-0002-slot-{sid}.json").read_text())
        assert side["t_ns"] == r2["t_ns"]
        got = np.frombuffer((tmp_path / "x" / f"round-0002-slot-{sid}.bin").read_bytes(), "<u8")
        assert np.array_equal(got, words)


def test_a_ring_mode_batch_runs_through_ring_fills_each_pass_ending_where_a_ring_may_fill(
    monkeypatch,
):
    """ring_entries 256: soft limit 256 − 64 (KVM_DIRTY_RING_RSVD_ENTRIES) = 192 entries; one
    vCPU writing 20 000 pages/s (20 a 1 ms tick, random pages of 1024: a few repeat) fills it
    every 10 ticks or so.  The exit period (64 ticks) is still one batch; the guest's writes
    go in passes, each ending with the first tick in which the ring may fill (as many
    accesses as it has room): before that tick, the accesses the last exit held back
    included, fewer than the room, so a ring fills only in a pass's last tick, as tick by
    tick.  The held-back accesses share a pass with the ticks after them.  Tick by tick and
    batched leave the same state, rounds and exits."""
    data = move_session(False)
    data["tracking"] = {"mode": "ring", "ring_entries": 256}
    data["workloads"][0].update(kind="uniform", rate="20000 pages/s")
    data["migration"]["start_ms"] = 0
    passes = []
    apply = Simulation._apply_pass

    def spy(self, acc, held):
        room = self.vm.rings[0].room()
        out = apply(self, acc, held)
        tick = (acc.t_ns - 1) // self.tick_ns
        before_last = int(np.count_nonzero(tick < tick.max())) if len(acc) else 0
        passes.append((len(acc), 0 if held is None else held.gfn.size, before_last, room, out[1]))
        return out

    monkeypatch.setattr(Simulation, "_apply_pass", spy)
    batched = Simulation.from_dict(data)
    assert batched.advance(256) == EXIT_PERIOD_TICKS
    assert sum(n for n, *_ in passes) == EXIT_PERIOD_TICKS * 20
    assert len([p for p in passes if p[4]]) >= 5  # 64 × 20 writes through 192 entries
    assert all(held + before < room for _, held, before, room, _ in passes)
    assert any(held and n > 20 for n, held, *_ in passes)  # a retry with later ticks
    one = Simulation.from_dict(data)
    for _ in range(EXIT_PERIOD_TICKS):
        one.advance(1)
    assert state(batched) == state(one)
    assert batched.migration.acc.ring_full_exits == one.migration.acc.ring_full_exits
    assert batched.migration.acc.faults == one.migration.acc.faults
    assert without_measured(batched.result()) == without_measured(one.result())


# -- the lazy batch's split points -------------------------------------------------------------


def clear_session(tmp_path: Path) -> dict:
    """Manual clear with initially-set bits, 64-page chunks, a 1 MiB slot sent at about two
    pages a tick; a trace writes page 64 + i of chunk 1 at i + 0.5 ms (tick i), i < 64."""
    writes = [(i * 1_000_000 + 500_000, 64 + i) for i in range(64)]
    return manual_clear_trace_session(tmp_path, writes, "1MiB", "256KiB")


def test_a_clear_inside_a_batch_splits_the_guest_writes_at_its_tick(tmp_path):
    """KVM_CLEAR_DIRTY_LOG of chunk 1 (pages 64-127) happens when page 64 is sent, after its
    tick's writes: the writes of that tick and before are cleared, the later ones fault and
    are logged again.  The CLEAR falls inside a batch, which applies the writes before it,
    CLEARs, then the writes after it; the next GET reports exactly the later pages, and
    everything equals the tick-by-tick run."""
    data = clear_session(tmp_path)
    sim = Simulation.from_dict(data)
    sim.keep_harvests = True
    starts = []
    while not sim.finished:
        starts.append(sim.tick)
        sim.advance(256)
    clear = next(c for c in sim.migration.clears if c["first_page"] == 64)
    tick = clear["t_ns"] // 1_000_000
    assert 0 < tick < 63 and tick not in starts and tick + 1 not in starts  # inside a batch
    second_get = DL.bitmap_pages(sim.harvests[1]["slots"][0]).tolist()
    assert second_get == [64 + i for i in range(tick + 1, 64)]
    one, sim_one = run_with(data, lambda: 1)
    assert without_measured(sim.result()) == one
    assert state(sim) == state(sim_one)


def test_the_heat_layer_does_not_depend_on_the_batch_size(monkeypatch):
    """The app's heat layer (decayed writes per page), rescaled here every half-life instead
    of every 16, is bit for bit the same tick by tick, in random batches and in 256-tick ones:
    each write weighs by its own time and rescales are whole powers of two."""
    import engine.migration.simulation as simulation

    monkeypatch.setattr(simulation, "HEAT_RESCALE_HALF_LIVES", 1)
    data = move_session(False)
    data["workloads"][0].update(kind="hotcold", rate="5000 pages/s")
    data["migration"]["timeout_s"] = 5
    data["tick_ms"] = 4
    heats = []
    rnd = random.Random(1)
    for batches in (lambda: 1, lambda: rnd.choice([3, 64, 255]), lambda: 256):
        sim = Simulation.from_dict(data)
        sim.heat_state()  # the app asks for it before the first step
        while not sim.finished:
            sim.advance(batches())
        heat, decay = sim.heat_state()
        heats.append((heat.tobytes(), decay, sim._heat_t))
    assert heats[0][2] == 4_000_000_000  # rescaled at 2 s and 4 s
    assert heats[0] == heats[1] == heats[2]
    assert np.frombuffer(heats[0][0], np.float32).max() > 1.0

"""Boundaries of a run that no other test pinned (issue 19: a hand mutation of each survived
the whole suite): the end of a run without a migration, the live edits' vCPU checks, the
tables a 64-page word reaches across a 512-entry table edge, and where the real-KVM replay
places the engine's slots.

Each boundary is tested at the boundary and one step on each side; every expected value is
worked out by hand from the rule quoted in the test's docstring (the module docstring of
``engine/migration/simulation.py`` for the clock, the kernel for the tables).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

from engine.host.replay import gpa_shift
from engine.kvm import oplog as OL
from engine.kvm.wrprotect import STRATEGIES, run_strategy, tables_in_reach
from engine.migration.simulation import Simulation
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable
from engine.util.errors import ConfigError, KvmError

MS = 1_000_000
S = 1_000_000_000
GIB = 1 << 30


def _session(**over):
    s = {
        "format": "dirtylog-session",
        "version": 2,
        "name": "edges",
        "seed": 5,
        "tick_ms": 1,
        "geometry": {"granule": "4KiB", "ipa_bits": 40},
        "tracking": {"mode": "bitmap", "strategy": "range"},
        "vcpus": 2,
        "memslots": [
            {
                "id": 0,
                "base": "0x40000000",
                "size": "4MiB",
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],  # fmt: skip
        "workloads": [
            {"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "2000 pages/s"}
        ],
        "migration": {"policy": "none", "timeout_s": 0.05},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(s.get(k), dict):
            s[k] = {**s[k], **v}
        else:
            s[k] = v
    return s


def _sim(**over) -> Simulation:
    return Simulation.from_dict(copy.deepcopy(_session(**over)))


# -- the end of a run without a migration ------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 7, 256])
def test_a_run_without_a_migration_ends_exactly_at_its_timeout(batch):
    """policy none: the run is over when t_ns >= timeout_s × 1e9 (``Simulation.finished``);
    timeout_s 0.05 with 1 ms ticks is 50 ticks: it ends at 50 ms, not 51 (``>``), at any
    batch size (``_safe_ticks`` stops a batch at ceil((end − t) / tick))."""
    sim = _sim()
    result = sim.run(max_batch_ticks=batch)
    assert (result["t_ns"], result["ticks"]) == (50 * MS, 50)


def test_finished_flips_at_the_timeout_tick_and_not_before():
    """Tick by tick: 49 ms is not finished, 50 ms (= timeout_s × 1e9) is, and no tick runs
    after it (advance returns 0)."""
    sim = _sim()
    for _ in range(49):
        sim.advance(1)
    assert sim.t_ns == 49 * MS and not sim.finished
    sim.advance(1)
    assert sim.t_ns == 50 * MS and sim.finished
    assert sim.advance(1) == 0 and sim.t_ns == 50 * MS


def test_a_timeout_between_ticks_ends_at_the_first_tick_after_it():
    """tick_ms 3, timeout 50 ms: 48 ms (16 ticks) is below it, so a 17th tick runs and the
    run ends at 51 ms, the first boundary at or after the timeout."""
    sim = _sim(tick_ms=3)
    result = sim.run()
    assert (result["t_ns"], result["ticks"]) == (51 * MS, 17)


def test_run_for_stops_on_the_boundary_it_was_asked_for():
    """run_for(sim_ns) runs while t_ns < start + sim_ns: 5 ms from 0 is exactly 5 ticks;
    4.5 ms is 5 ticks as well (the tick that crosses it runs whole); 0 ns runs nothing."""
    sim = _sim()
    sim.run_for(5 * MS)
    assert (sim.t_ns, sim.tick) == (5 * MS, 5)
    sim.run_for(0)
    assert sim.tick == 5
    sim.run_for(4 * MS + MS // 2)
    assert (sim.t_ns, sim.tick) == (10 * MS, 10)


@pytest.mark.parametrize(("t_ms", "tick"), [(2.0, 2), (1.999999, 2), (2.000001, 3)])
def test_an_event_applies_at_the_first_tick_that_begins_at_or_after_it(t_ms, tick):
    """The module docstring: an event with t_ms <= t_n is applied at the start of tick n;
    one between ticks at the first tick that begins after it.  1 ms ticks: 2.0 ms is tick
    2's start (t_n = 2 ms); 1.999999 ms is also applied at 2 ms; 2.000001 ms waits for 3."""
    sim = _sim(events=[{"t_ms": t_ms, "action": "pause_vcpu", "vcpu": 1}])
    while 1 not in sim.paused_vcpus:
        sim.advance(1)
    assert sim.tick - 1 == tick  # applied at the start of the tick just run
    assert sim.messages[0].startswith(f"[{tick}.0 ms] applied pause_vcpu")


# -- live edits: the vCPU checks ---------------------------------------------------------------


def test_a_live_workload_on_the_last_vcpu_is_taken_and_runs():
    """vcpus 2: vCPU 1 is the last; a workload added live on it runs to the end."""
    sim = _sim()
    sim.run_for(3 * MS)
    sim.apply_edit(
        {"action": "add_workload", "name": "w1", "kind": "uniform", "vcpu": 1, "slot": 0,
         "rate": "5000 pages/s"}
    )  # fmt: skip
    assert [w.name for w in sim.workloads] == ["u", "w1"]
    assert sim.run()["t_ns"] == 50 * MS


@pytest.mark.parametrize("vcpu", [2, 3])
def test_a_live_workload_on_a_vcpu_the_session_lacks_is_refused(vcpu):
    """vcpus 2: vCPU 2 (= vcpus, the first that does not exist) and 3 are refused with
    field workload.vcpu (it was accepted at 2 with ``>``, and run() then failed with an
    IndexError on the vCPU arrays); nothing is added and the run goes on."""
    sim = _sim()
    with pytest.raises(ConfigError) as err:
        sim.apply_edit(
            {"action": "add_workload", "name": "w", "kind": "uniform", "vcpu": vcpu, "slot": 0,
             "rate": "5000 pages/s"}
        )  # fmt: skip
    assert err.value.field == "workload.vcpu"
    assert err.value.rule == f"must be below vcpus (2), got {vcpu}"
    assert [w.name for w in sim.workloads] == ["u"]
    assert "events" not in sim.session or sim.session["events"] == []
    assert sim.run()["t_ns"] == 50 * MS


@pytest.mark.parametrize("action", ["pause_vcpu", "resume_vcpu"])
@pytest.mark.parametrize(("vcpu", "ok"), [(-1, False), (0, True), (1, True), (2, False)])
def test_pause_and_resume_take_vcpus_0_to_vcpus_minus_1(action, vcpu, ok):
    """``_vcpu``: 0 <= v < vcpus.  vcpus 2: -1 and 2 refused (field vcpu), 0 and 1 taken.
    (-1 is refused before the engine by the event schema, also naming vcpu.)"""
    sim = _sim()
    if ok:
        sim.apply_edit({"action": action, "vcpu": vcpu})
        assert sim.paused_vcpus == ({vcpu} if action == "pause_vcpu" else set())
        return
    with pytest.raises(ConfigError) as err:
        sim.apply_edit({"action": action, "vcpu": vcpu})
    assert "vcpu" in err.value.field
    assert sim.paused_vcpus == set()


def test_a_paused_last_vcpu_runs_no_guest_time():
    """Pausing vCPU 1 (the last) gives it no guest time from the next tick on; vCPU 0 keeps
    the whole 1 ms tick (no throttle, no exits owed with no migration)."""
    sim = _sim()
    sim.apply_edit({"action": "pause_vcpu", "vcpu": 1})
    assert sim._active_ns(2).tolist() == [[MS, 0], [MS, 0]]


@pytest.mark.parametrize(
    ("ev", "cls", "field", "errno"),
    [
        ({"action": "delete_memslot", "id": 7}, KvmError, "id", "EINVAL"),
        ({"action": "move_memslot", "id": 7, "base": "0x80000000"}, KvmError, "id", "EINVAL"),
        ({"action": "set_memslot_flags", "id": 7, "flags": []}, KvmError, "id", "EINVAL"),
        ({"action": "set_workload", "workload": "nope", "rate": 0}, ConfigError, "workload", None),
        ({"action": "delete_workload", "workload": "nope"}, ConfigError, "workload", None),
        ({"action": "harvest"}, ConfigError, "action", None),
        ({"action": "cancel"}, ConfigError, "action", None),
        ({"action": "set_migration", "bandwidth": "1Gbit/s"}, ConfigError, "migration", None),
    ],
)
def test_each_live_refusal_names_its_field_and_errno(ev, cls, field, errno):
    """apply_edit's refusals on a policy-none session with memslot 0 and workload u: a
    missing memslot is KVM's EINVAL on field id; a missing workload, and what needs a
    migration, are ConfigErrors naming the field; nothing is recorded in the session."""
    sim = _sim()
    with pytest.raises(cls) as err:
        sim.apply_edit(ev)
    assert err.value.field == field
    if errno is not None:
        assert err.value.errno_name == errno
    assert sim.session.get("events", []) == []


def test_an_added_memslot_with_an_id_in_use_is_refused_a_free_id_is_taken():
    """add_memslot with id 0 (in use) is refused naming id; id 1 elsewhere is taken."""
    sim = _sim()
    with pytest.raises(ConfigError) as err:
        sim.apply_edit(
            {"action": "add_memslot", "id": 0, "base": "0x80000000", "size": "2MiB",
             "backing": "4KiB"}
        )  # fmt: skip
    assert err.value.field == "id"
    sim.apply_edit(
        {"action": "add_memslot", "id": 1, "base": "0x80000000", "size": "2MiB",
         "backing": "4KiB"}
    )  # fmt: skip
    assert sorted(sim.vm.slots) == [0, 1]


# -- tables in reach of a word that crosses a 512-entry table edge ------------------------------

G4K = Geometry(4096, 40)
BASE = 0x40000000  # 1 GiB: gfn 0x40000, a multiple of 512
BASE_GFN = BASE >> 12


def _two_tables() -> tuple[PageTable, int, int]:
    """4 MiB of 4 KiB pages from BASE: two last-level tables, pages 0..511 and 512..1023."""
    pgt = PageTable(G4K, rmap=True)
    pgt.map_range(BASE, 4 << 20, 4096)
    t0, t1 = pgt.last_level_tables(np.array([BASE, BASE + (2 << 20)])).tolist()
    assert t0 >= 0 and t1 >= 0 and t0 != t1
    return pgt, t0, t1


@pytest.mark.parametrize(("offset", "both"), [(447, False), (448, False), (449, True), (450, True)])
def test_a_word_reaches_the_next_table_only_when_its_last_page_is_in_it(offset, both):
    """A word at page offset o covers pages o .. o + 63 (64 pages: bits 0..63); with 512
    entries a table, page p is in table p // 512.  o = 448 ends at 511 (one table); o = 449
    ends at 512, one page into the second table, so both leaf tables are in reach."""
    pgt, t0, t1 = _two_tables()
    rows = set(tables_in_reach(pgt, BASE_GFN, np.array([offset])).tolist())
    upper = set(pgt.live_tables().tolist()) - {t0, t1}
    leaf = rows - upper
    assert upper <= rows
    assert leaf == ({t0, t1} if both else {t0})


@pytest.mark.parametrize("chosen", ["masked-skip", "rmap"])
def test_compare_mode_puts_back_a_table_entered_by_the_words_last_page_alone(chosen):
    """A word at slot offset 449 with bits 0 and 63 covers pages 449..512: only page 512 (bit
    63) is in the second leaf table.  Compare mode runs the other strategies first, then
    puts back every table in reach; had the second table been left out, page 512 would be
    read-only already when the next strategy ran, and it would count one L3 write fewer
    than it does alone (each of them protects page 512: one write when it is writable)."""
    from engine.kvm import dirtylog as DL
    from engine.kvm.dirtylog import OpStats
    from engine.kvm.vm import VM, Tracking, slot_flags

    vm = VM(G4K, Tracking("bitmap", chosen, compare=True), nr_vcpus=1)
    vm.set_memslot(0, BASE, 4 << 20, 0, 4096, populate=True)
    st = vm.slots[0]
    vm.set_memslot(0, BASE, 4 << 20, slot_flags(log_dirty=True), 4096)
    g = st.slot.base_gfn + np.arange(1024)
    vm.access(g, np.zeros(g.size, np.int64), np.ones(g.size, bool))  # all writable again
    offsets, masks = np.array([449]), np.array([1 | 1 << 63], np.uint64)
    alone = {}
    for name in STRATEGIES:
        t = vm.pgt.copy()
        alone[name] = run_strategy(name, t, st.slot.base_gfn, offsets, masks).counters
    op = OpStats("get")
    DL.protect(vm, st, offsets, masks, op)
    for name in STRATEGIES:
        assert op.strategies[name].counters == alone[name], name
    # range protects 449..512 (64 pages), the chosen one only 449 and 512: its writes
    assert alone["range"].writes[3] == 64 and alone[chosen].writes[3] == 2


# -- the replay's guest addresses ---------------------------------------------------------------

LO, HI = 4 << 20, 64 * GIB  # the replay guest's data window [4 MiB, 64 GiB)


def _slot(slot, base, size):
    return OL.SetMemslot(slot, base // 4096, size // 4096, 1, 4096, False)


@pytest.mark.parametrize(
    ("base", "shift"),
    [
        (HI - GIB - 4096, 0),  # ends one page below hi: inside
        (HI - GIB, 0),  # ends exactly at hi (the window is [lo, hi)): inside, kept
        (HI - GIB + 4096, GIB - (HI - GIB)),  # one page past hi: moved to 1 GiB
    ],
)
def test_a_slot_ending_at_hi_is_inside_the_window(base, shift):
    """gpa_shift keeps the engine's addresses when every slot lies in [lo, hi): a 1 GiB slot
    ending at hi does.  Past it, the slots move so that the first one's 2 MiB-aligned start
    lands at 1 GiB: shift = 1 GiB − (first rounded down to 2 MiB) = 1 GiB − 63 GiB."""
    assert gpa_shift([_slot(0, base, GIB)], LO, HI) == shift


@pytest.mark.parametrize(
    ("base", "shift"),
    [
        (LO + 4096, 0),
        (LO, 0),  # starts exactly at lo: inside
        (LO - 4096, GIB - (2 << 20)),  # one page below lo: 4 MiB − 4 KiB rounds down to 2 MiB
    ],
)
def test_a_slot_starting_at_lo_is_inside_the_window(base, shift):
    """The window's lower end is inclusive: a slot from lo stays; from a page below, it is
    moved by 1 GiB − 2 MiB (its start rounded down to a 2 MiB boundary goes to 1 GiB)."""
    assert gpa_shift([_slot(0, base, 2 << 20)], LO, HI) == shift
    if shift:
        assert base + shift == GIB + (2 << 20) - 4096  # the page offset in 2 MiB is kept


@pytest.mark.parametrize(("extra", "fits"), [(-4096, True), (0, True), (4096, False)])
def test_moved_slots_may_end_exactly_at_hi(extra, fits):
    """Slots from 2^39 (outside) move to 1 GiB; what they span then ends at 1 GiB + span.
    A span of hi − 1 GiB (63 GiB) ends exactly at hi: it fits; one page more does not
    (ConfigError naming memslots)."""
    first = 1 << 39
    span = HI - GIB + extra
    ops = [_slot(0, first, 4096), _slot(1, first + span - 4096, 4096)]
    if fits:
        assert gpa_shift(ops, LO, HI) == GIB - first
    else:
        with pytest.raises(ConfigError) as err:
            gpa_shift(ops, LO, HI)
        assert err.value.field == "memslots"


def test_no_slot_or_only_deleted_ones_is_no_shift():
    """No slot with pages (a deletion has npages 0): nothing to place, shift 0."""
    assert gpa_shift([], LO, HI) == 0
    assert gpa_shift([_slot(0, 1 << 39, 0)], LO, HI) == 0


# -- more of the clock: migration start, progress reports, exit periods, step_round ------------


@pytest.mark.parametrize(("start_ms", "t_ms"), [(4.5, 5), (5, 5), (5.5, 6)])
def test_the_migration_starts_at_the_first_tick_at_or_after_start_ms(start_ms, t_ms):
    """Step 1 of a tick: the migration starts if its start_ms has come, at the first tick
    that begins at or after it (1 ms ticks: 4.5 and 5 ms start at 5 ms, 5.5 at 6 ms)."""
    sim = _sim(migration={"policy": "qemu", "bandwidth": "64Mbit/s", "timeout_s": 60,
                          "start_ms": start_ms})  # fmt: skip
    m = sim.migration
    while m.phase == "idle":
        sim.advance(1)
    assert m.t_start_ns == t_ms * MS and sim.tick == t_ms + 1


def test_progress_is_reported_every_simulated_100_ms():
    """run(progress): called after the first batch (t >= 0), then whenever t_ns reaches the
    last report + 100 ms: 1 ms batches of a 0.35 s run give 1, 101, 201 and 301 ms."""
    sim = _sim(migration={"timeout_s": 0.35})
    seen = []
    sim.run(progress=lambda s: seen.append(s.t_ns // MS), max_batch_ticks=1)
    assert seen == [1, 101, 201, 301]


def test_exit_time_is_settled_at_every_64th_tick_only():
    """The exits owed are settled at the start of ticks that are multiples of
    EXIT_PERIOD_TICKS (64), at any batch size: ticks 0, 64 and 128 of 130."""
    for batch in (1, 256):
        sim = _sim(migration={"timeout_s": 0.13})
        settled: list[int] = []
        real = sim._settle_exits

        def settle(real=real, sim=sim, settled=settled):
            settled.append(sim.tick)
            real()

        sim._settle_exits = settle
        sim.run(max_batch_ticks=batch)
        assert settled == [0, 64, 128], batch


def test_step_round_runs_to_the_first_harvest_however_long_it_takes():
    """step_round runs until the round number changes, bounded by timeout_s (s, × 1e9) + a
    tick.  16 MiB at 64 Mbit/s: the first step takes the migration from idle into round 1,
    the second runs round 1, which sends every page (about 1.8 s, far past a bound in ms),
    to its harvest: one round closed, the run stopped on its end."""
    sim = _sim(
        memslots=[{"id": 0, "base": "0x40000000", "size": "16MiB", "flags": ["log_dirty"],
                   "backing": "4KiB"}],
        migration={"policy": "qemu", "bandwidth": "64Mbit/s", "timeout_s": 60},
    )  # fmt: skip
    sim.step_round()
    assert sim.migration.round == 1 and sim.migration.rounds == []
    sim.step_round()
    rounds = sim.migration.rounds
    assert len(rounds) == 1 and sim.t_ns == rounds[0]["t_end_ns"] > S


def test_step_round_without_a_migration_runs_to_the_end():
    """No migration, no rounds: step_round ends with the run (50 ms)."""
    sim = _sim()
    sim.step_round()
    assert sim.t_ns == 50 * MS and sim.finished


# -- more live edits ---------------------------------------------------------------------------


def test_a_live_edit_is_recorded_at_the_current_time_in_ms():
    """apply_edit records t_ms = t_ns / 1e6: after 7 ticks of 1 ms, 7.0 (not 0.007), and
    its message is stamped 7.0 ms; a replay of the saved session applies it at tick 7."""
    sim = _sim()
    sim.run_for(7 * MS)
    sim.apply_edit({"action": "pause_vcpu", "vcpu": 1})
    assert sim.session["events"] == [{"t_ms": 7.0, "action": "pause_vcpu", "vcpu": 1}]
    assert sim.messages[-1] == "[7.0 ms] applied pause_vcpu: vcpu=1"
    again = Simulation.from_dict(sim.session)
    again.run_for(7 * MS)
    assert again.paused_vcpus == set()
    again.advance(1)
    assert again.paused_vcpus == {1}


@pytest.mark.parametrize(
    ("rng", "ok"),
    [
        ("0x40000000:4096", True),  # one page
        ("0x40000000:0", False),  # no page
        ("0x40000000:4095", False),  # not a whole page
        ("0x40000001:4096", False),  # base not on a page
    ],
)
def test_a_live_workload_range_is_whole_non_zero_pages(rng, ok):
    """A workload's range BASE:SIZE must be whole pages and at least one: 4096 bytes at a
    page boundary is taken; 0, 4095 bytes, or a base 1 byte off are refused naming
    workload.range."""
    sim = _sim()
    ev = {"action": "add_workload", "name": "r", "kind": "uniform", "vcpu": 1, "range": rng,
          "rate": "100 pages/s"}  # fmt: skip
    if ok:
        sim.apply_edit(ev)
        assert sim.targets["r"] == {"range": rng}
        return
    with pytest.raises(ConfigError) as err:
        sim.apply_edit(ev)
    assert err.value.field == "workload.range"
    assert err.value.rule == "base and size must be whole, non-zero pages"


@pytest.mark.parametrize(("vcpus_in_trace", "ok"), [([0, 1, 1], True), ([0, 1, 2], False)])
def test_a_live_trace_naming_a_vcpu_the_session_lacks_is_refused(tmp_path, vcpus_in_trace, ok):
    """A trace's vcpu column must name vCPUs below vcpus (2): rows 0, 1, 1 are taken; a row
    naming vCPU 2 (= vcpus) is refused, naming workload.path and the row (3)."""
    path = tmp_path / "w.csv"
    rows = "".join(f"{(i + 1) * MS},{0x40000000 + i * 4096:#x},{v}\n"
                   for i, v in enumerate(vcpus_in_trace))  # fmt: skip
    path.write_text("t_ns,ipa,vcpu\n" + rows)
    sim = _sim()
    ev = {"action": "add_workload", "name": "t", "kind": "trace", "path": str(path)}
    if ok:
        sim.apply_edit(ev)
        assert [w.name for w in sim.workloads] == ["u", "t"]
        return
    with pytest.raises(ConfigError) as err:
        sim.apply_edit(ev)
    assert err.value.field == "workload.path"
    assert err.value.rule == "row 3 of the trace names vcpu 2, but the session has 2 vCPUs"


@pytest.mark.parametrize(
    ("field", "ok"),
    [("strategy", True), ("compare", True), ("mode", False), ("ring_entries", False)],
)
def test_only_strategy_and_compare_change_live(field, ok):
    """set_tracking live: strategy and compare are taken; any other tracking field is
    refused naming it: by the event schema (field ``mode``) and, for an event that reached
    the engine unchecked, by the engine itself (``tracking.mode``)."""
    sim = _sim()
    value = {"strategy": "visitor", "compare": False, "mode": "ring", "ring_entries": 512}[field]
    ev = {"action": "set_tracking", field: value}
    if ok:
        sim.apply_edit(ev)
        assert getattr(sim.vm.tracking, field) == value
        return
    with pytest.raises(ConfigError) as err:
        sim.apply_edit(ev)
    assert err.value.field == field
    with pytest.raises(ConfigError) as err:
        sim._apply({"t_ms": 0.0, **ev})
    assert err.value.field == f"tracking.{field}"
    assert err.value.rule == "can only be changed before the run starts (live: strategy, compare)"
    assert sim.vm.tracking.mode == "bitmap" and sim.vm.tracking.ring_entries != 512


def test_harvest_is_taken_only_while_iterating():
    """A live harvest needs logging on: refused (field action) before the migration starts
    (start_ms 5: idle at 3 ms), taken while iterating (a new sync), refused once it is over."""
    sim = _sim(migration={"policy": "qemu", "bandwidth": "1Gbit/s", "timeout_s": 60,
                          "start_ms": 5})  # fmt: skip
    m = sim.migration
    sim.run_for(3 * MS)
    with pytest.raises(ConfigError) as err:
        sim.apply_edit({"action": "harvest"})
    assert err.value.field == "action" and m.phase == "idle"
    sim.run_for(5 * MS)
    assert m.phase == "iterating"
    syncs = m.syncs
    sim.apply_edit({"action": "harvest"})
    assert m.syncs == syncs + 1
    sim.run()
    assert m.phase == "done"
    with pytest.raises(ConfigError) as err:
        sim.apply_edit({"action": "harvest"})
    assert err.value.field == "action"


# -- more of the replay: slot ids and the emulation note ---------------------------------------


@pytest.mark.parametrize(("slot", "ok"), [(31999, True), (32000, False), (32001, False)])
def test_replayable_slot_ids_are_below_32000(slot, ok):
    """check_replayable: a slot id >= 32000 is refused naming memslots.id (x86 KVM's user
    slots are fewer); 31999 is taken."""
    from engine.host.replay import ReplaySetup, check_replayable

    setup = ReplaySetup(mode="bitmap", initially_set=False, ring_entries=4096, vcpus=1,
                        page_size=4096, strategy="rmap")  # fmt: skip
    ops = [_slot(slot, GIB, 2 << 20)]
    if ok:
        check_replayable(setup, ops)
        return
    with pytest.raises(ConfigError) as err:
        check_replayable(setup, ops)
    assert err.value.field == "memslots.id"
    assert err.value.rule == f"slot id {slot} is too large to replay"


@pytest.mark.parametrize(
    ("emulated", "exits", "noted"),
    [(999, 0, False), (1000, 0, False), (1001, 0, True),
     (4999, 5000, False), (5000, 5000, False), (5001, 5000, True)],
)  # fmt: skip
def test_the_emulation_note_needs_more_than_1000_and_more_than_the_exits(emulated, exits, noted):
    """emulation_note: the writer ran emulated when emulated instructions exceed both 1000
    and the exits (natively about one emulated ``out`` per batch); equal is not more."""
    from engine.host.replay import emulation_note

    note = emulation_note({}, {"insn_emulation": emulated, "exits": exits})
    assert bool(note) == noted
    if noted:
        assert f"({emulated:,} emulated instructions)" in note[0]

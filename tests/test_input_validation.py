"""Hostile input refused up front, by kind: the JSON tree, numbers at their limits, events
against the state they meet, run and memory budgets, bounded reads of traces, snapshots and
special files.  Each refusal names its field as the session spells it."""

from __future__ import annotations

import copy
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.cli.main import main as cli_main
from engine.files import jsontree
from engine.files.export import BitmapSnapshot, read_snapshot, write_snapshot
from engine.files.session import parse_session, read_session_file
from engine.migration import budget
from engine.migration.preflight import preflight
from engine.migration.simulation import Simulation
from engine.migration.traces import load_trace
from engine.util import memory
from engine.util.errors import ConfigError, DirtylogError, KvmError, shown
from engine.util.units import parse_bandwidth, parse_rate, parse_size

BASE = {
    "format": "dirtylog-session",
    "version": 2,
    "vcpus": 2,
    "memslots": [{"id": 0, "base": "0x40000000", "size": "2MiB", "flags": ["log_dirty"]}],
    "workloads": [{"name": "w", "kind": "uniform", "slot": 0, "rate": "1000 pages/s"}],
    "migration": {"bandwidth": "1Gbit/s", "timeout_s": 5},
}


def session(**over):
    data = copy.deepcopy(BASE)
    data.update(over)
    return data


def refusal(data, tmp_path=None) -> DirtylogError:
    with pytest.raises(DirtylogError) as e:
        Simulation.from_dict(data, tmp_path)
    return e.value


# -- the JSON tree ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, field, words",
    [
        ('{"format": "dirtylog-session", "version": 2, "vcpus": 1, "vcpus": 2}', "vcpus", "twice"),
        (
            '{"format": "dirtylog-session", "version": 2, "seed": ' + "7" * 5000 + "}",
            "seed",
            "5000 digits",
        ),
        ('{"format": "dirtylog-session", "version": 2, "costs": {"a": NaN}}', "costs.a", "NaN"),
        (
            '{"format": "dirtylog-session", "version": 2, "memslots": [1, -Infinity]}',
            "memslots[1]",
            "-Infinity",
        ),
        (
            '{"format": "dirtylog-session", "version": 2, "view": ' + "[" * 40 + "]" * 40 + "}",
            "view",
            "nested",
        ),
        (
            '{"format": "dirtylog-session", "version": 2, "name": "' + "n" * 5000 + '"}',
            "name",
            "5,000 characters",
        ),
    ],
)
def test_the_tree_is_checked_with_field_paths(tmp_path, text, field, words):
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(ConfigError) as e:
        parse_session(read_session_file(tmp_path / "s.json"))
    assert e.value.field.startswith(field) and words in e.value.rule


def test_an_integer_at_two_to_the_64_is_refused_and_one_below_is_not_by_the_tree():
    jsontree.check_tree({"x": (1 << 64) - 1})
    with pytest.raises(ConfigError, match=r"^x: an integer of 65 bits|^x: 18446744073709551616"):
        jsontree.check_tree({"x": 1 << 64})


def test_shown_cuts_long_values_and_never_converts_huge_integers():
    assert shown("a" * 100) == '"' + "a" * 37 + '…"' and len(shown("a" * 100)) == 40
    assert shown(10**5000) == "an integer of 16610 bits"
    assert shown(float("nan")) == "NaN" and shown([1, 2]) == "[1, 2]"


# -- numbers at their limits ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "over, ok",
    [
        ({"tick_ms": 0.001}, True),
        ({"tick_ms": 0.000999}, False),
        ({"migration": {"bandwidth": 1, "timeout_s": 1}}, True),
        ({"migration": {"bandwidth": 0.999, "timeout_s": 1}}, False),
        ({"migration": {"timeout_s": 86_400, "policy": "none"}}, True),
        ({"migration": {"timeout_s": 86_400.5, "policy": "none"}}, False),
        ({"migration": {"start_ms": 1000, "timeout_s": 86_399}}, True),
        ({"migration": {"start_ms": 1001, "timeout_s": 86_399}}, False),
        ({"tick_ms": True}, False),
        ({"vcpus": 2.0}, False),
        ({"vcpus": "2"}, False),
    ],
)
def test_boundaries_of_the_documented_ranges(over, ok):
    data = session(**over)
    if ok:
        parse_session(data)
    else:
        with pytest.raises(ConfigError):
            parse_session(data)


def test_unit_parsers_refuse_before_converting():
    with pytest.raises(ConfigError, match="too long to be a size"):
        parse_size("1" * 5000, "--map size")
    with pytest.raises(ConfigError, match="more than 2\\^64 - 1 bytes"):
        parse_size(1 << 64)
    assert parse_size((1 << 64) - 1) == (1 << 64) - 1
    with pytest.raises(ConfigError, match="finite"):
        parse_rate("1e999 pages/s", 4096)
    with pytest.raises(ConfigError, match="finite"):
        parse_bandwidth(10**400)
    assert parse_rate(1e9, 4096) == 1e9
    with pytest.raises(ConfigError, match="0 to 1e9 pages/s"):
        parse_rate(1e9 + 1, 4096)


# -- events against the state they meet -------------------------------------------------------


@pytest.mark.parametrize(
    "events, field, words",
    [
        (
            [{"t_ms": 5, "action": "add_memslot", "id": 1, "base": "0x40100000", "size": "2MiB"}],
            "events[0].base",
            "overlaps slot 0",
        ),
        (
            [{"t_ms": 5, "action": "move_memslot", "id": 7, "base": "0x0"}],
            "events[0].id",
            "no memslot 7",
        ),
        (
            [
                {
                    "t_ms": 5,
                    "action": "set_memslot_flags",
                    "id": 0,
                    "flags": ["log_dirty", "readonly"],
                }
            ],
            "events[0].flags",
            "READONLY cannot be toggled",
        ),
        ([{"t_ms": 5, "action": "pause_vcpu", "vcpu": 2}], "events[0].vcpu", "below vcpus (2)"),
        (
            [
                {"t_ms": 9, "action": "set_workload", "workload": "w", "rate": 5},
                {"t_ms": 5, "action": "delete_memslot", "id": 0},
            ],
            "events[0].workload",
            'no workload named "w" then (the set_workload event at 9 ms)',
        ),
        (
            [{"t_ms": 5, "action": "set_workload", "workload": "w", "s": 1}],
            "events[0].s",
            "not a parameter",
        ),
        (
            [{"t_ms": 5, "action": "set_workload", "workload": "w", "rate": "1e999"}],
            "events[0].rate",
            "finite",
        ),
        (
            [
                {
                    "t_ms": 5,
                    "action": "add_workload",
                    "name": "z",
                    "kind": "zipf",
                    "range": "0x0:1TiB",
                    "rate": 1,
                }
            ],
            "events[0].range",
            "does not lie inside one memslot",
        ),
        (
            [{"t_ms": 5, "action": "set_tracking", "strategy": "rmap"}],
            "events[0].strategy",
            "reverse map",
        ),
        (
            [{"t_ms": 5, "action": "set_tracking", "mode": "ring"}],
            "events[0].mode",
            "not a known field",
        ),
    ],
)
def test_events_are_checked_at_load_against_the_state_they_meet(events, field, words):
    err = refusal(session(events=events))
    assert err.field == field and words in err.rule, str(err)


def test_an_event_that_can_only_fail_when_due_is_reported_on_stderr_and_in_the_json(
    tmp_path, capsys
):
    # the migration starts at the first tick at or after 0.5 ms (t = 1 ms); the harvest at
    # 0.7 ms is applied at that tick's start, before the migration's setup: only the run
    # can tell, so it is refused then, and said so
    data = session(
        migration={"bandwidth": "8Mbit/s", "timeout_s": 1, "start_ms": 0.5},
        events=[{"t_ms": 0.7, "action": "harvest"}],
    )
    (tmp_path / "s.json").write_text(json.dumps(data))
    out = tmp_path / "r.json"
    assert cli_main(["run", str(tmp_path / "s.json"), "--quiet", "--json", str(out)]) in (0, 1)
    err = capsys.readouterr().err
    assert "warning:" in err and "events[0]" in err and "harvest needs dirty logging on" in err
    refused = json.loads(out.read_text())["refused_events"]
    assert [(r["index"], r["action"], r["t_ms"]) for r in refused] == [(0, "harvest", 0.7)]


def test_a_harvest_at_or_before_the_start_is_refused_at_load():
    data = session(migration={"start_ms": 5}, events=[{"t_ms": 5, "action": "harvest"}])
    err = refusal(data)
    assert err.field == "events[0].t_ms" and "the harvest event at 5 ms" in err.rule


# -- budgets ---------------------------------------------------------------------------------------


def test_the_work_limit_names_the_field_to_change():
    """An hour of 1 µs ticks: 3.6e9 ticks, far above the limit in any mode."""
    data = session(tick_ms=0.001, tracking={"mode": "manual-clear"})
    data["migration"]["timeout_s"] = 3600
    err = refusal(data)
    assert err.field == "tick_ms" and "raise tick_ms or lower migration.timeout_s" in err.rule


def test_ten_minutes_of_1us_ticks_is_refused_not_run_for_hours():
    """6e8 migrating ticks: each runs the sends and checks in Python (~57 µs here; 2 s of
    them took 114 s), so this run would take about 9 hours; it was admitted as 2.3 M steps
    when a migrating tick was counted as 1/256 of a step."""
    data = session(tick_ms=0.001)
    data["migration"]["timeout_s"] = 600
    err = refusal(data)
    assert err.field == "tick_ms" and "raise tick_ms or lower migration.timeout_s" in err.rule


def test_an_hour_of_1ms_ticks_is_within_the_work_limit():
    """The default session's horizon (3.6 M ticks of 1 ms) stays admitted, as the limit says."""
    data = session(tick_ms=1.0)
    data["migration"]["timeout_s"] = 3600
    cfg = parse_session(data)
    budget.check_work(cfg, preflight(cfg))


def test_a_fast_workload_over_the_work_limit_is_named():
    data = session(migration={"policy": "none", "timeout_s": 86_400})
    data["workloads"][0]["rate"] = "2e7 pages/s"
    err = refusal(data)
    assert err.field in ("workloads[0].rate",) and "steps of work" in err.rule


def test_memory_is_checked_against_rlimit_as_and_names_the_driver(monkeypatch):
    monkeypatch.setattr(memory, "_address_space_room", lambda: 260 << 20)
    data = session(memslots=[{"id": 0, "base": "0x40000000", "size": "1GiB"}])
    data["workloads"] = [{"name": "z", "kind": "zipf", "range": "0x40000000:1GiB", "rate": 1}]
    err = refusal(data)
    assert err.field == "workloads[0].range" and "ulimit -v" in err.rule
    monkeypatch.setattr(memory, "_address_space_room", lambda: None)
    monkeypatch.setattr(memory, "_cgroup_room", lambda: 1 << 20)
    big = session(memslots=[{"id": 0, "base": "0x40000000", "size": "64MiB"}])
    assert refusal(big).field == "memslots"


def test_the_estimate_counts_each_part():
    cfg = parse_session(session(tracking={"mode": "ring", "ring_entries": 65536}, vcpus=4))
    from engine.migration.preflight import preflight

    parts = {p.field: p.amount for p in budget.memory_parts(cfg, preflight(cfg), False)}
    assert parts["tracking.ring_entries"] == 4 * 65536 * 16
    assert parts["workloads[0].rate"] == 1000 * 0.256 * budget.ACCESS_BYTES


def test_tables_refuses_a_map_this_process_cannot_hold(monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_bytes", lambda: 1 << 30)
    assert cli_main(["tables", "--map", "0:1TiB"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dirtylog tables: --map: mapping these ranges needs about")


# -- bounded reads ---------------------------------------------------------------------------------


def test_a_fifo_session_is_refused_without_blocking(tmp_path, capsys):
    os.mkfifo(tmp_path / "s.json")
    assert cli_main(["run", str(tmp_path / "s.json")]) == 2
    assert "is a FIFO (named pipe), not a regular file" in capsys.readouterr().err


def _npz(path, **members):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name + ".npy", data)


def _npy(a) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize(
    "members, words",
    [
        (
            {"t_ns": _npy(np.array([0], dtype=object)), "ipa": _npy(np.zeros(1, np.int64))},
            "1-D integer",
        ),
        (
            {
                "t_ns": _npy(np.zeros(1, np.int64))[:80] + b"\0" * 8,
                "ipa": _npy(np.zeros(1, np.int64)),
            },
            "not a readable .npz",
        ),
        (
            {
                "t_ns": _npy(np.zeros(1, np.int64)),
                "ipa": _npy(np.array([1 << 63], dtype=np.uint64)),
            },
            "ipa 9223372036854775808 must be 0 to 2^63 - 1",
        ),
        (
            {
                "t_ns": _npy(np.zeros(1, np.int64)),
                "ipa": _npy(np.zeros(1, np.int64)),
                "vcpu": _npy(np.array([1 << 32], dtype=np.int64)),
            },
            "vcpu 4294967296",
        ),
    ],
)
def test_npz_members_are_checked_before_they_are_read(tmp_path, members, words):
    _npz(tmp_path / "t.npz", **members)
    with pytest.raises(ConfigError) as e:
        load_trace(tmp_path / "t.npz", "workloads[0].path")
    assert e.value.field == "workloads[0].path" and words in e.value.rule


def test_an_npz_member_declaring_more_rows_than_its_data_is_refused(tmp_path):
    header = _npy(np.zeros(1, np.int64))
    lie = header.replace(b"(1,)", b"(99999999,)".ljust(4))[: len(header)]
    _npz(tmp_path / "t.npz", t_ns=lie, ipa=header)
    with pytest.raises(ConfigError, match="rows"):
        load_trace(tmp_path / "t.npz")


@pytest.mark.parametrize(
    "change, field, words",
    [
        ({"npages": 0}, "npages", "must be a whole number 1 to"),
        ({"base_gfn": (1 << 40) - 10}, "base_gfn", "52-bit IPA space"),
        ({"words": 7}, "words", "says 7 but"),
        ({"file": "../etc/passwd"}, "file", "a file name beside the sidecar"),
        ({"npages": 1 << 31}, "npages", "1 to 2147483647"),
    ],
)
def test_a_snapshot_sidecar_must_agree_with_its_data(tmp_path, change, field, words):
    snap = BitmapSnapshot(0, 0x40000, 128, 4096, 1, 0, np.array([3, 0], dtype="<u8"))
    write_snapshot(snap, tmp_path, "s", "npy")
    meta = json.loads((tmp_path / "s.json").read_text())
    meta.update(change)
    (tmp_path / "s.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError) as e:
        read_snapshot(tmp_path / "s.json")
    assert e.value.field == f"s.json.{field}" and words in e.value.rule


def test_an_npy_snapshot_of_the_wrong_dtype_is_refused_by_its_header(tmp_path):
    snap = BitmapSnapshot(0, 0x40000, 128, 4096, 1, 0, np.array([3, 0], dtype="<u8"))
    write_snapshot(snap, tmp_path, "s", "npy")
    np.save(tmp_path / "s.npy", np.zeros(2, dtype=np.float64))
    with pytest.raises(ConfigError, match="s.json.npages: s.npy holds float64"):
        read_snapshot(tmp_path / "s.json")
    assert isinstance(KvmError("EINVAL", "x", "y"), DirtylogError)


@st.composite
def csv_rows(draw):
    n = draw(st.integers(1, 40))
    t = sorted(draw(st.lists(st.integers(0, (1 << 63) - 1), min_size=n, max_size=n)))
    ipa = draw(st.lists(st.integers(0, (1 << 63) - 1), min_size=n, max_size=n))
    vcpu = draw(st.lists(st.integers(-1, 1023), min_size=n, max_size=n))
    fmt = draw(st.lists(st.sampled_from(["{}", "{:#x}", "{:#X}", " {} "]), min_size=3, max_size=3))
    return t, ipa, vcpu, fmt


def _cell(fmt: str, v: int) -> str:
    if "x" in fmt.lower() and v < 0:
        return "-" + fmt.format(-v)
    return fmt.format(v)


@settings(max_examples=60, deadline=None)
@given(csv_rows(), st.sampled_from([64, 1 << 20]))
def test_the_array_parser_reads_what_int_reads(tmp_path_factory, rows, chunk):
    """Decimal, 0x/0X hex, negatives, spaces (the line-by-line fallback), any chunk size:
    the loaded columns are exactly the integers written."""
    t, ipa, vcpu, fmt = rows
    path = tmp_path_factory.mktemp("csv") / "t.csv"
    lines = [
        ",".join(_cell(f, v) for f, v in zip(fmt, row, strict=True))
        for row in zip(t, ipa, vcpu, strict=True)
    ]
    path.write_text("t_ns,ipa,vcpu\n" + "\n".join(lines) + "\n")
    from engine.migration import traces

    old = traces.CHUNK_BYTES
    traces.CHUNK_BYTES = chunk
    try:
        tr = load_trace(path)
    finally:
        traces.CHUNK_BYTES = old
    assert tr.t_ns.tolist() == t and tr.ipa.tolist() == ipa and tr.vcpu.tolist() == vcpu


@pytest.mark.parametrize(
    "argv, start",
    [
        (["perftest", "-x", "0"], "-x: memslots must be 1..32766"),
        (["perftest", "-r", "-1"], "-r: "),
        (["perftest", "-i", "100000"], "-i: iterations must be 2..10000"),
        (["tables", "--map", "0x40000000:" + "9" * 40], "--map size: "),
        (["tables", "--map", "0:0"], '--map: "0:0": the size must not be zero'),
        (["run", "resources/sessions/idle.json", "--json", ""], "--json: needs a file name"),
        (["run", "resources/sessions/idle.json", "--csv", "/"], "--csv: / is a directory"),
        (["export", "resources/sessions/idle.json", "--round", "0", "--out", "x"], "--round: "),
    ],
)
def test_command_line_options_are_checked_before_work(argv, start, capsys, monkeypatch):
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dirtylog {argv[0]}: {start}") and err.count("\n") == 1, err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_a_folder_where_nothing_can_be_created_is_refused_before_any_work():
    """/proc: ``os.access`` says writable to root, creating a file there fails (ENOENT); the
    output options must refuse it before running, not after the run."""
    from engine.cli.options import output_dir, output_file

    with pytest.raises(ConfigError, match=r"^--json: cannot write /proc/x\.json: /proc is not a"):
        output_file("/proc/x.json", "--json")
    with pytest.raises(ConfigError, match=r"^--out: cannot create or write /proc/d/e: /proc is"):
        output_dir("/proc/d/e", "--out")
    output_file("/dev/null", "--json")  # an existing writable file passes


def test_export_round_beyond_the_last_sync_counts_syncs_as_its_help_does(tmp_path, capsys):
    """BASE converges with dirty-sync-count 2 (the setup sync, then the harvest before the
    switchover): --round 3 is refused in the help's words (syncs), --round 2 is written."""
    session = tmp_path / "s.json"
    session.write_text(json.dumps(BASE))
    out = tmp_path / "out"
    assert cli_main(["export", str(session), "--round", "3", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "dirtylog export: --round: the run made 2 syncs (dirty-sync-count 2); there is no sync 3\n"
    )
    assert cli_main(["export", str(session), "--round", "2", "--out", str(out)]) == 0
    assert cli_main(["export", str(session), "--round", "0", "--out", str(out)]) == 2
    assert "--round: a sync (dirty-sync-count, from 1) must be 1..100000" in capsys.readouterr().err

"""dirtylog sweep: grids, validation, worker sizing, rows, and identity with dirtylog run on a
local Dask cluster and on a real scheduler + worker started on 127.0.0.1.

Expected values are worked out by hand (range values, grid order, worker counts) or taken from
``dirtylog run`` of the very session file the sweep wrote, at the same commit.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.cli.bench_sweep import small_guest
from engine.cli.main import main
from engine.migration.precopy import without_measured
from engine.sweep import cluster
from engine.sweep.grid import (
    Axis,
    expand_values,
    make_points,
    parse_path,
    parse_vary,
    resolve_paths,
    seed_axis,
    set_field,
)
from engine.sweep.rows import read_rows, write_rows
from engine.sweep.runner import SweepRun
from engine.sweep.spec import load_start
from engine.util.errors import ConfigError

TINY = small_guest(  # 16 MiB, dirtying faster than 100 Mbit/s, slower than 1 Gbit/s
    size="16MiB", rate="5000 pages/s", bandwidth="200Mbit/s", timeout_s=1, name="tiny", seed=3
)
VARY = [  # 4 points: one side of the convergence boundary and the other
    "migration.bandwidth=100Mbit/s,1Gbit/s",
    "tracking.mode=ring",
    "migration.auto_converge=false,true",
]
RESULT_KEYS = {  # row column -> dirtylog run --json key
    "outcome": ("outcome",),
    "reason": ("reason",),
    "rounds": ("rounds_count",),
    "downtime_ms": ("downtime_ms",),
    "total_time_ms": ("total_time_ms",),
    "transferred_bytes": ("transferred_bytes",),
    "throttle_pct": ("throttle_pct",),
    "mismatches": ("verification", "mismatches"),
}


def _tiny_base() -> dict:
    from engine.files.session import parse_session

    return parse_session(json.loads(json.dumps(TINY))).model_dump(mode="json")


# -- grid ---------------------------------------------------------------------------------------


def test_linear_range_with_unit_gives_evenly_spaced_values():
    # (10 - 1) / 4 = 2.25 apart
    assert expand_values("1..10Gbit/s:5", "f") == (
        "1Gbit/s",
        "3.25Gbit/s",
        "5.5Gbit/s",
        "7.75Gbit/s",
        "10Gbit/s",
    )


def test_log_range_is_geometric():
    assert expand_values("log:1..100:3", "f") == (1, 10, 100)
    assert expand_values("log:30..1000:2", "f") == (30, 1000)
    # 10^(1/3) = 2.15443469...; rounded to 6 significant digits
    assert expand_values("log:1..10MiB/s:4", "f") == (
        "1MiB/s",
        "2.15443MiB/s",
        "4.64159MiB/s",
        "10MiB/s",
    )


@pytest.mark.parametrize(
    "spec, rule",
    [
        ("1..10:1", "2..10000 values"),  # one below the smallest count
        ("log:0..10:3", "above zero"),
        ("1Gbit/s..10MiB/s:3", "one unit"),
        ("1,,2", "empty value"),
        ("1.0..1.0000001:3", "repeat after rounding"),
        ("1..2:" + "9" * 5000, "needs 2..10000 values after ':', got 9{39}…$"),  # int() raised
        ("1e400..2Gbit/s:3", "ends must be finite numbers, got '1e400' and '2'"),
    ],
)
def test_bad_value_specs_are_refused_with_the_rule(spec, rule):
    with pytest.raises(ConfigError, match=rule):
        expand_values(spec, "migration.bandwidth")


def test_two_values_is_the_smallest_range():
    assert expand_values("1..2:2", "f") == (1, 2)


def test_comma_values_are_typed_like_json():
    axis = parse_vary("migration.auto_converge=true,false")
    assert axis == Axis("migration.auto_converge", (True, False))
    assert parse_vary("migration.downtime_limit_ms=30,300.5").values == (30, 300.5)
    assert parse_vary("tracking.mode=bitmap,ring").values == ("bitmap", "ring")
    assert parse_vary("workloads[0].rate=1 pages/s,2 pages/s").values == ("1 pages/s", "2 pages/s")


@pytest.mark.parametrize(
    "text",
    ["migration.bandwidth", "=1,2", "migration.bandwidth=", "a..b=1,2", "[0].rate=1", "x=1,1"],
)
def test_malformed_vary_is_refused(text):
    with pytest.raises(ConfigError):
        parse_vary(text)


def test_field_paths():
    assert parse_path("workloads[0].rate") == ["workloads", 0, "rate"]
    assert parse_path("seed") == ["seed"]
    base = _tiny_base()
    set_field(base, "workloads[0].rate", "1 pages/s")
    assert base["workloads"][0]["rate"] == "1 pages/s"
    with pytest.raises(ConfigError, match=r"workloads has 1 elements, so no \[1\]"):
        set_field(base, "workloads[1].rate", 1)
    with pytest.raises(ConfigError, match="migration.bandwith: is not a field of this session"):
        set_field(base, "migration.bandwith", 1)


def test_points_are_the_product_first_axis_slowest():
    axes = [
        parse_vary(v)
        for v in (
            "migration.bandwidth=100Mbit/s,1Gbit/s",
            "tracking.mode=bitmap,ring",
            "migration.auto_converge=false,true",
        )
    ]
    points = make_points(_tiny_base(), axes)
    assert len(points) == 8
    assert [p.index for p in points] == list(range(1, 9))
    assert [dict(p.values)["migration.bandwidth"] for p in points] == ["100Mbit/s"] * 4 + [
        "1Gbit/s"
    ] * 4
    assert [dict(p.values)["migration.auto_converge"] for p in points] == [False, True] * 4
    p6 = points[5]  # 1Gbit/s, bitmap, true
    assert p6.session["migration"]["bandwidth"] == "1Gbit/s"
    assert p6.session["tracking"]["mode"] == "bitmap"
    assert p6.session["migration"]["auto_converge"] is True
    assert len({p.digest for p in points}) == 8


def test_seeds_axis_counts_up_from_the_session_seed():
    assert seed_axis(3, 3) == Axis("seed", (3, 4, 5))
    with pytest.raises(ConfigError, match="--seeds"):
        seed_axis(3, 0)


def test_a_bad_point_is_named_with_its_field_before_anything_runs():
    axes = [parse_vary("migration.bandwidth=1Gbit/s,0Gbit/s"), parse_vary("vcpus=1,2")]
    with pytest.raises(ConfigError) as err:
        make_points(_tiny_base(), axes)
    assert str(err.value) == (
        "point 3 of 4 (migration.bandwidth=0Gbit/s, vcpus=1): migration.bandwidth: "
        'a bandwidth must be 1 B/s to 1e13 B/s (8 bit/s to 80 Tbit/s), got "0Gbit/s"'
    )


def test_a_bad_workload_value_is_named():
    with pytest.raises(
        ConfigError,
        match=r"point 2 of 2 \(workloads\[0\].rate=2 bogus\): "
        r'workloads\[0\].rate: unknown unit "bogus"',
    ):
        make_points(_tiny_base(), [parse_vary("workloads[0].rate=2 pages/s,2 bogus")])


def test_same_field_twice_is_refused():
    with pytest.raises(ConfigError, match="varied twice"):
        make_points(_tiny_base(), [parse_vary("seed=1,2"), parse_vary("seed=3,4")])


def test_trace_paths_become_absolute(tmp_path):
    base = {"workloads": [{"kind": "trace", "path": "t.csv", "name": "t"}], "events": []}
    out = resolve_paths(base, tmp_path)
    assert out["workloads"][0]["path"] == str((tmp_path / "t.csv").resolve())
    assert base["workloads"][0]["path"] == "t.csv"


# -- worker sizing ------------------------------------------------------------------------------


def _sized(monkeypatch, have: int, cores: int):
    points = make_points(_tiny_base(), [parse_vary("seed=1,2,3,4")])
    need = cluster.point_bytes(points)
    monkeypatch.setattr(cluster, "available_bytes", lambda: have(need) if callable(have) else have)
    monkeypatch.setattr(cluster, "usable_cores", lambda: cores)
    return points, need


def test_workers_default_to_cores_when_memory_fits(monkeypatch):
    points, need = _sized(monkeypatch, lambda need: 4 * need, 2)
    assert cluster.plan_local(points, None).workers == 2


def test_workers_shrink_to_what_memory_fits(monkeypatch):
    # room for exactly 2 points, one byte short of 3
    points, need = _sized(monkeypatch, lambda need: 3 * need - 1, 4)
    plan = cluster.plan_local(points, None)
    assert plan.workers == 2
    assert "memory fits 2" in plan.note
    assert cluster.plan_local(points, 2).workers == 2
    with pytest.raises(ConfigError, match=r"this machine can run 2 \(--workers 2\)"):
        cluster.plan_local(points, 3)


def test_a_point_larger_than_memory_is_refused(monkeypatch):
    points, need = _sized(monkeypatch, lambda need: need - 1, 2)
    with pytest.raises(ConfigError, match="one point of this sweep needs about"):
        cluster.plan_local(points, None)


def test_workers_never_exceed_the_points(monkeypatch):
    points, _ = _sized(monkeypatch, 1 << 50, 64)
    assert cluster.plan_local(points, None).workers == 4


def test_local_workers_keep_the_engines_allocator_and_run_no_profiler(monkeypatch):
    """Dask exports MALLOC_TRIM_THRESHOLD_ to its workers; any MALLOC_* variable makes the
    engine keep glibc's defaults (engine.util.allocator), so the local cluster must not."""
    import dask
    from distributed.nanny import _get_env_variables

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    assert "MALLOC_TRIM_THRESHOLD_" in _get_env_variables("distributed.nanny.pre-spawn-environ")
    with dask.config.set(cluster.LOCAL_CONFIG):
        env = _get_env_variables("distributed.nanny.pre-spawn-environ")
        assert not [k for k in env if k.startswith("MALLOC_")]
        assert env["OMP_NUM_THREADS"] == "1"  # Dask's other settings stay
        assert dask.config.get("distributed.worker.profile.enabled") is False
        assert dask.config.get("distributed.worker.memory.monitor-interval") == "100ms"


@pytest.mark.slow
def test_local_worker_process_environment():
    with cluster.local_client(1) as client:
        env = client.run(lambda: sorted(k for k in __import__("os").environ if "MALLOC" in k))
    assert list(env.values()) == [[]]


# -- rows ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("ext", ["csv", "json"])
def test_rows_round_trip(tmp_path, ext):
    axes = [Axis("migration.auto_converge", (False, True)), Axis("tracking.mode", ("ring",))]
    rows = [
        {
            "point": 2,
            "migration.auto_converge": True,
            "tracking.mode": "ring",
            "outcome": "completed",
            "reason": "1,000 bytes fit",
            "rounds": 3,
            "downtime_ms": 29.5,
            "session_sha256": "b",
        },
        {
            "point": 1,
            "migration.auto_converge": False,
            "tracking.mode": "ring",
            "outcome": "error",
            "reason": "x",
            "rounds": "",
            "downtime_ms": "",
            "session_sha256": "a",
        },
    ]
    path = tmp_path / f"rows.{ext}"
    write_rows(path, rows, axes, "s.json")
    back = read_rows(path)
    assert [r["point"] for r in back] == [1, 2]
    assert back[1]["migration.auto_converge"] is True
    assert back[1]["reason"] == "1,000 bytes fit"
    assert back[1]["downtime_ms"] == 29.5
    assert back[0]["rounds"] == ""


def test_rows_of_another_kind_are_refused(tmp_path):
    (tmp_path / "x.json").write_text('{"format": "dirtylog-session"}')
    with pytest.raises(ConfigError, match="is not a sweep's rows"):
        read_rows(tmp_path / "x.json")


# -- the CLI against dirtylog run ---------------------------------------------------------------


def _digest(result: dict) -> str:
    """sha256 of the run result without measured times, as sorted compact JSON."""
    text = json.dumps(without_measured(result), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "wall_s_measured"} for r in rows]


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The grid run once by `dirtylog sweep` on a local cluster of 2 worker processes."""
    d = tmp_path_factory.mktemp("sweep")
    session = d / "tiny.json"
    session.write_text(json.dumps(TINY))
    argv = [
        "sweep",
        str(session),
        "--out",
        str(d / "rows.csv"),
        "--sessions",
        str(d / "pts"),
        "--workers",
        "2",
        "--quiet",
    ]
    for v in VARY:
        argv += ["--vary", v]
    assert main(argv) == 0
    return d, session, argv


def test_every_row_equals_dirtylog_run_of_its_written_session(local_sweep, tmp_path):
    d, _, _ = local_sweep
    rows = _csv_rows(d / "rows.csv")
    assert [r["point"] for r in rows] == [str(i) for i in range(1, 5)]
    files = sorted((d / "pts").glob("point-*.json"))
    assert [f.name for f in files] == [f"point-{i:04d}.json" for i in range(1, 5)]
    outcomes = set()
    for row, f in zip(rows, files, strict=True):
        out = tmp_path / f"{f.stem}.json"
        assert main(["run", str(f), "--json", str(out), "--quiet"]) == 0
        result = json.loads(out.read_text())
        for col, keys in RESULT_KEYS.items():
            want = result
            for k in keys:
                want = want[k]
            assert row[col] == str(want), (f.name, col)
        assert row["result_sha256"] == _digest(result), f.name
        assert float(row["wall_s_measured"]) > 0
        session = json.loads(f.read_text())
        assert session["migration"]["bandwidth"] == row["migration.bandwidth"]
        assert session["tracking"]["mode"] == row["tracking.mode"]
        outcomes.add(row["outcome"])
    assert outcomes == {"completed", "not-converged"}  # the grid crosses the boundary


def test_a_real_scheduler_and_worker_give_the_same_rows(local_sweep, tmp_path):
    d, session, argv = local_sweep
    sched_file = tmp_path / "scheduler.json"
    cmd = [sys.executable, "-m", "dask"]
    common = dict(
        cwd=Path(__file__).resolve().parents[1],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    with contextlib.ExitStack() as stack:
        sched = subprocess.Popen(
            cmd
            + [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--dashboard-address",  # its plain HTTP routes: loopback, any free port
                "127.0.0.1:0",
                "--scheduler-file",
                str(sched_file),
            ],
            **common,
        )
        stack.callback(_stop, sched)
        # the worker starts alongside and finds the scheduler through its file
        worker = subprocess.Popen(
            cmd
            + [
                "worker",
                "--scheduler-file",
                str(sched_file),
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--nworkers",
                "1",
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
            ],
            **common,
        )
        stack.callback(_stop, worker)
        address = _wait_for_address(sched_file, sched)
        assert address.startswith("tcp://127.0.0.1:")
        out = tmp_path / "remote.csv"
        remote = [a for a in argv if a not in ("--workers", "2")]
        remote[remote.index("--out") + 1] = str(out)
        remote += ["--scheduler", address]
        assert main(remote) == 0
    assert _without_wall(_csv_rows(out)) == _without_wall(_csv_rows(d / "rows.csv"))


def _wait_for_address(path: Path, proc: subprocess.Popen, timeout: float = 30) -> str:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, "dask scheduler exited"
        if path.exists():
            with contextlib.suppress(ValueError):
                return json.loads(path.read_text())["address"]
        time.sleep(0.1)
    raise AssertionError("dask scheduler did not write its address")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- interruption and resume (an in-process cluster: what matters is the CLI's handling) ---------


@pytest.fixture
def thread_cluster(monkeypatch, thread_client_factory):
    """local_client replaced by a one-thread in-process cluster (fast to start)."""
    monkeypatch.setattr("engine.cli.sweep.local_client", thread_client_factory)


def test_ctrl_c_keeps_finished_rows_and_resume_runs_only_the_rest(
    tmp_path, monkeypatch, thread_cluster, capsys
):
    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    out = tmp_path / "rows.json"
    argv = [
        "sweep",
        str(session),
        "--vary",
        "seed=1,2,3",
        "--vary",
        "migration.bandwidth=1Gbit/s",
        "--out",
        str(out),
    ]
    from engine.cli import sweep as sweep_cli

    real_add = sweep_cli._RowWriter.add

    def interrupted_after_first(self, row):
        real_add(self, row)
        raise KeyboardInterrupt  # Ctrl-C lands while the first row is handled

    monkeypatch.setattr(sweep_cli._RowWriter, "add", interrupted_after_first)
    assert main(argv) == 130
    first = read_rows(out)
    assert len(first) == 1
    assert "interrupted: the rest runs with --resume" in capsys.readouterr().err

    monkeypatch.setattr(sweep_cli._RowWriter, "add", real_add)
    ran = []
    real_run = SweepRun.run

    def counting(self):
        ran.extend(p.index for p in self.points)
        return real_run(self)

    monkeypatch.setattr(SweepRun, "run", counting)
    assert main([*argv, "--resume", str(out)]) == 0
    assert sorted(ran) == sorted({1, 2, 3} - {first[0]["point"]})
    rows = read_rows(out)
    assert [r["point"] for r in rows] == [1, 2, 3]
    assert [r["seed"] for r in rows] == [1, 2, 3]
    assert rows[first[0]["point"] - 1] == first[0]


def test_cli_refusals_exit_2_with_one_sentence(tmp_path, capsys):
    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    cases = [
        (
            ["--vary", "migration.bandwith=1,2", "--out", "x.csv"],
            "migration.bandwith: is not a field of this session",
        ),
        (["--vary", "seed=1,2", "--out", "x.txt"], "the extension must be .csv or .json"),
        (["--vary", "seed=1,2"], "--out: is required"),
        (
            ["--vary", "tracking.mode=bitmap,rings", "--out", "x.csv"],
            "point 2 of 2 (tracking.mode=rings): tracking.mode: must be",
        ),
        (
            ["--vary", "seed=1", "--out", "x.csv", "--scheduler", "localhost:1"],
            "--scheduler: expected an address such as tcp://HOST:8786",
        ),
    ]
    for extra, sentence in cases:
        assert main(["sweep", str(session), *extra]) == 2
        err = capsys.readouterr().err
        assert sentence in err and err.count("\n") == 1, err


# -- sweep files ----------------------------------------------------------------------------------


ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_sweep_file_and_its_rows_agree():

    start = load_start(ROOT / "resources/sweeps/webserver-convergence.json")
    assert start.session_path == (ROOT / "resources/sessions/webserver.json").resolve()
    axes = [parse_vary(v) for v in start.vary]
    assert [len(a.values) for a in axes] == [2, 7, 5, 1]  # 70 points
    points = make_points(start.base, axes)
    rows = read_rows(ROOT / "resources/sweeps/webserver-convergence.csv")
    assert [r["point"] for r in rows] == list(range(1, 71))
    for r, p in zip(rows, points, strict=True):
        assert {f: r[f] for f, _ in p.values} == dict(p.values)


@pytest.mark.parametrize(
    "doc, sentence",
    [
        ({"version": 1, "session": "s.json", "vary": [], "extra": 1}, "extra: is not a field"),
        ({"version": 2, "session": "s.json"}, "version: must be 1"),
        ({"version": 1}, "session: must be the path of a session file"),
        ({"version": 1, "session": "s.json", "vary": "seed=1"}, "vary: must be a list"),
        ({"version": 1, "session": "s.json", "seeds": True}, "seeds: must be a whole number"),
    ],
)
def test_a_bad_sweep_file_is_refused_naming_the_field(tmp_path, doc, sentence):

    (tmp_path / "s.json").write_text(json.dumps(TINY))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "dirtylog-sweep", **doc}))
    with pytest.raises(ConfigError, match=sentence):
        load_start(path)


def test_a_sweep_file_names_its_session_relative_to_itself(tmp_path):

    (tmp_path / "sessions").mkdir()
    (tmp_path / "sessions" / "s.json").write_text(json.dumps(TINY))
    path = tmp_path / "sweep.json"
    path.write_text(
        json.dumps(
            {
                "format": "dirtylog-sweep",
                "version": 1,
                "session": "sessions/s.json",
                "vary": ["seed=1,2"],
                "seeds": 2,
            }
        )
    )
    start = load_start(path)
    assert start.vary == ("seed=1,2",) and start.seeds == 2
    assert start.base["name"] == "tiny"


@pytest.mark.parametrize(
    "address", ["tcp://:", "tcp://127.0.0.1:99999", "tcp://h:0", "tcp://h", "tcp://[::1"]
)
def test_a_scheduler_address_without_host_or_valid_port_is_refused(address):
    with pytest.raises(ConfigError, match=r"^--scheduler: expected an address .*port 1\.\.65535"):
        cluster.check_address(address)
    cluster.check_address("tcp://[::1]:8786")  # the same rule accepts a full address


def test_a_server_that_is_not_a_dask_scheduler_is_named_not_called_out_of_memory():
    """An HTTP server's reply reads as a Dask frame of exabytes (a MemoryError in
    distributed); the refusal says the address did not answer as a scheduler."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer() -> None:
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n" * 4)
                conn.recv(1024)

    threading.Thread(target=answer, daemon=True).start()
    address = f"tcp://127.0.0.1:{port}"
    try:
        with (
            pytest.raises(ConfigError, match="did not answer as a Dask scheduler"),
            cluster.remote_client(address, []),
        ):
            pass
    finally:
        server.close()


def test_an_unwritable_out_is_refused_before_any_point_runs(tmp_path, capsys, monkeypatch):
    from engine.cli import sweep as sweep_cli

    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    ran: list[int] = []
    monkeypatch.setattr(sweep_cli, "_run", lambda *a, **k: ran.append(1) or True)
    out = tmp_path / "no-such-dir" / "rows.csv"
    assert main(["sweep", str(session), "--vary", "seed=1,2", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "rows.csv: cannot be written" in err and err.count("\n") == 1, err
    assert ran == []


def test_a_resume_file_of_another_kind_names_resume(tmp_path, capsys):
    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    argv = ["sweep", str(session), "--vary", "seed=1,2", "--resume", str(tmp_path / "a.txt")]
    assert main(argv) == 2
    assert "dirtylog sweep: --resume: " in capsys.readouterr().err


# -- each input read, parsed and hashed once; bad --scheduler / --resume refused -----------------


def test_each_point_is_parsed_once_and_its_digest_hashed_once(monkeypatch):
    """make_points validates each session (one parse) and keeps its memory estimate; sizing
    the workers parses nothing more; a point's digest is hashed on first use only."""
    import engine.sweep.grid as grid

    parses: list[int] = []
    real_parse = grid.parse_session
    monkeypatch.setattr(grid, "parse_session", lambda d: parses.append(1) or real_parse(d))
    monkeypatch.setattr(  # (before: cluster parsed every point again to estimate it)
        cluster,
        "parse_session",
        lambda d: parses.append(1) or real_parse(d),
        raising=False,
    )
    points = make_points(_tiny_base(), [parse_vary("seed=1,2,3")])
    need = cluster.point_bytes(points)
    assert len(parses) == 3
    assert need == max(p.bytes_needed for p in points) > 16 << 20  # the 16 MiB guest and more

    hashes: list[int] = []
    real_digest = grid.canonical_digest
    monkeypatch.setattr(grid, "canonical_digest", lambda d: hashes.append(1) or real_digest(d))
    first = [p.digest for p in points]
    assert [p.digest for p in points] == first
    assert len(hashes) == 3
    assert first[0] == real_digest(points[0].session)


def test_a_session_file_is_read_once_to_start_a_sweep(tmp_path, monkeypatch):
    import engine.files.session as session_mod

    reads: list[str] = []
    real = session_mod.read_text_capped
    monkeypatch.setattr(
        session_mod, "read_text_capped", lambda p, *a: reads.append(Path(p).name) or real(p, *a)
    )
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    assert load_start(path).base["name"] == "tiny"
    assert reads == ["tiny.json"]


def test_the_sessions_folder_is_scanned_once_not_once_per_point(tmp_path, monkeypatch):
    """--sessions DIR: one scan of DIR for stale temporary files (it was one per point: N² for
    N points); a dead save's temporary file of a written point is still removed."""
    import os

    from engine.cli.sweep import write_sessions

    folder = tmp_path / "points"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    stale = folder / f".point-0002.json.{dead}.tmp"
    stale.write_text("half a session")
    other = folder / f".notes.json.{dead}.tmp"  # not a file this save writes: left alone
    other.write_text("")
    scans: list[str] = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": scans.append(str(p)) or real_scandir(p))
    points = make_points(_tiny_base(), [parse_vary("seed=1,2,3,4,5")])
    write_sessions(folder, points)
    assert scans == [str(folder)]
    assert sorted(p.name for p in folder.iterdir()) == [
        f".notes.json.{dead}.tmp",
        *(f"point-{i:04d}.json" for i in range(1, 6)),
    ]
    assert not stale.exists() and other.exists()
    assert json.loads((folder / "point-0004.json").read_text())["seed"] == 4


def test_a_rows_file_that_is_a_fifo_is_refused_without_reading_it(tmp_path):
    """read_rows reads a regular file only, at most its cap (as every other reader): a FIFO
    as --resume used to block the sweep until something wrote to it."""
    import os
    import threading

    fifo = tmp_path / "rows.csv"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR)  # (a writer that never writes: a read would block)
    closed: list[int] = []

    def close_writer() -> None:  # ends a blocked read after 2 s if the refusal is missing
        os.close(writer)
        closed.append(1)

    unblock = threading.Timer(2.0, close_writer)
    unblock.start()
    try:
        with pytest.raises(ConfigError, match=r"rows\.csv: is a FIFO \(named pipe\), not a"):
            read_rows(fifo)
    finally:
        unblock.cancel()
        unblock.join()
        if not closed:
            os.close(writer)


def test_an_empty_scheduler_is_refused_not_run_locally(tmp_path, capsys, monkeypatch):
    from engine.cli import sweep as sweep_cli

    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    ran: list[int] = []
    monkeypatch.setattr(sweep_cli, "_run", lambda *a, **k: ran.append(1) or True)
    argv = ["sweep", str(session), "--vary", "seed=1,2", "--out", str(tmp_path / "r.csv")]
    assert main([*argv, "--scheduler", ""]) == 2
    err = capsys.readouterr().err
    assert err == (
        "dirtylog sweep: --scheduler: expected an address such as tcp://HOST:8786 (a host and a "
        "port 1..65535), got ''\n"
    )
    assert ran == [] and not (tmp_path / "r.csv").exists()


def test_resume_with_the_rows_of_another_sweep_is_refused_and_keeps_them(
    tmp_path, capsys, monkeypatch
):
    from engine.cli import sweep as sweep_cli

    session = tmp_path / "tiny.json"
    session.write_text(json.dumps(TINY))
    out = tmp_path / "rows.csv"
    other = make_points(_tiny_base(), [parse_vary("seed=7,8")])
    rows = [
        {"point": p.index, **dict(p.values), "outcome": "completed", "session_sha256": p.digest}
        for p in other
    ]
    write_rows(out, rows, [Axis("seed", (7, 8))], str(session))
    before = out.read_bytes()
    ran: list[int] = []
    monkeypatch.setattr(sweep_cli, "_run", lambda *a, **k: ran.append(1) or True)
    argv = ["sweep", str(session), "--vary", "seed=1,2", "--resume", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err == (
        f"dirtylog sweep: --resume: {out}: 2 of its 2 rows are not points of this sweep "
        "(another session or other --vary values), and resuming would drop them from the "
        "file; resume with the sweep that wrote it, or give a new --out\n"
    )
    assert ran == [] and out.read_bytes() == before
    # the sweep that wrote them resumes: nothing left to run, the rows stay
    assert main(["sweep", str(session), "--vary", "seed=7,8", "--resume", str(out)]) == 0
    assert ran == [] and [r["seed"] for r in read_rows(out)] == [7, 8]

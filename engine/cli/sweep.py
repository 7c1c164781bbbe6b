"""``dirtylog sweep``: a grid of migrations over session fields, run on Dask distributed.

``engine.sweep`` (the session schema, the simulation, Dask) is imported when a sweep runs, not
when the ``dirtylog`` parser is built: ``dirtylog --help`` and every other subcommand start
without it.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.util.errors import ConfigError

if TYPE_CHECKING:
    from engine.sweep.grid import Axis, Point
    from engine.sweep.runner import Row

WRITE_EVERY_S = 2.0  # rows on disk at least this often while running (and at the end)
EXIT_INTERRUPTED = 130


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.sweep.cluster import check_address
    from engine.sweep.grid import make_points, parse_vary, seed_axis
    from engine.sweep.rows import output_kind
    from engine.sweep.spec import load_start

    out = args.out or args.resume
    if out is None:
        raise ConfigError("--out", "is required: the CSV or JSON file for the rows")
    if args.resume:
        output_kind(args.resume, "--resume")
    output_kind(out)
    if args.scheduler is not None:  # (an empty address is refused, not read as "local")
        check_address(args.scheduler)
    start = load_start(args.session)
    axes = [parse_vary(v) for v in (*start.vary, *(args.vary or []))]
    seeds = args.seeds if args.seeds is not None else start.seeds
    if seeds is not None:
        axes.append(seed_axis(int(start.base.get("seed", 0)), seeds))
    points = make_points(start.base, axes)
    done = _resumed_rows(args.resume, points) if args.resume else {}
    rows: list[Row] = list(done.values())
    writer = _RowWriter(Path(out), axes, str(start.session_path), rows)
    writer.flush()  # an unwritable --out is refused now, not after the points' files or runs
    if args.sessions:
        write_sessions(Path(args.sessions), points)
    pending = [p for p in points if p.digest not in done]
    say = (lambda *_: None) if args.quiet else _stderr
    if done:
        say(f"resuming: {len(done)} of {len(points)} points already in {args.resume}")
    finished = True
    if pending:
        finished = _run(args, pending, writer, say, len(points))
    writer.flush()
    counts = Counter(str(r.get("outcome")) for r in rows)
    tally = "".join(f", {n} {k}" for k, n in sorted(counts.items()))
    say(f"{len(rows)} of {len(points)} points{tally}; rows in {out}")
    if not finished:
        say(f"interrupted: the rest runs with --resume {out}")
        return EXIT_INTERRUPTED
    return 1 if any(_int(r.get("mismatches")) for r in rows) else 0


def local_client(workers: int) -> contextlib.AbstractContextManager[Any]:
    """``engine.sweep.cluster.local_client``, imported when called (tests replace this name)."""
    from engine.sweep import cluster

    return cluster.local_client(workers)


def _run(args, pending: list[Point], writer: _RowWriter, say, total: int) -> bool:
    """Run ``pending`` on the chosen cluster with a progress bar; False when interrupted."""
    from engine.sweep.cluster import plan_local, remote_client
    from engine.sweep.runner import SweepRun

    if args.scheduler is not None:
        client_cm = remote_client(args.scheduler, pending)
        say(f"{len(pending)} points on the cluster at {args.scheduler}")
    else:
        plan = plan_local(pending, args.workers)
        client_cm = local_client(plan.workers)
        say(
            f"{len(pending)} points on {plan.note}; about "
            f"{plan.point_bytes / 2**30:.2f} GiB per point (estimate); starting the cluster"
        )
    try:
        with client_cm as client, _progress(args, total, total - len(pending)) as bar:

            def on_row(row: Row) -> None:
                writer.add(row)
                bar.update(1)

            return SweepRun(client, pending, on_row).run()
    except KeyboardInterrupt:  # SweepRun cancelled what was left; the cluster is closed
        return False


@contextlib.contextmanager
def _progress(args, total: int, done: int):
    """tqdm on stderr (a terminal only): points done, points per second, time left."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        initial=done,
        unit="point",
        desc="sweep",
        file=sys.stderr,
        disable=True if args.quiet else None,
        smoothing=0.1,
    )
    try:
        yield bar
    finally:
        bar.close()


def write_sessions(directory: Path, points: list[Point]) -> None:
    """``point-NNNN.json`` per point, trace paths relative to ``directory``: each replays
    with ``dirtylog run``."""
    from engine.files.session import save_session_files
    from engine.sweep.grid import relative_paths

    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError("--sessions", f"{directory}: cannot create ({exc.strerror})") from None
    width = max(4, len(str(len(points))))
    save_session_files(
        [directory / f"point-{p.index:0{width}d}.json" for p in points],
        (relative_paths(p.session, directory) for p in points),
    )


def _resumed_rows(path: str, points: list[Point]) -> dict[str, Row]:
    """The rows of ``path`` by session digest, renumbered to this grid; a missing file resumes
    nothing.  ConfigError when a row is not a point of this grid: the file is rewritten with
    this grid's rows, so resuming would drop it."""
    from engine.sweep.rows import read_rows

    if not Path(path).exists():
        return {}
    index = {p.digest: p.index for p in points}
    rows = read_rows(path)
    digests = [str(r["session_sha256"]) for r in rows]
    foreign = sum(d not in index for d in digests)
    if foreign:
        raise ConfigError(
            "--resume",
            f"{path}: {foreign} of its {len(rows)} rows are not points of this "
            "sweep (another session or other --vary values), and resuming would drop them "
            "from the file; resume with the sweep that wrote it, or give a new --out",
        )
    return {d: {**r, "point": index[d]} for d, r in zip(digests, rows, strict=True)}


class _RowWriter:
    """Collects rows and rewrites the output file at most every WRITE_EVERY_S, and on flush."""

    def __init__(self, path: Path, axes: list[Axis], session: str, rows: list[Row]) -> None:
        self.path, self.axes, self.session, self.rows = path, axes, session, rows
        self.last = time.monotonic()

    def add(self, row: Row) -> None:
        self.rows.append(row)
        if time.monotonic() - self.last >= WRITE_EVERY_S:
            self.flush()

    def flush(self) -> None:
        from engine.sweep.rows import write_rows

        write_rows(self.path, self.rows, self.axes, self.session)
        self.last = time.monotonic()


def _int(v: Any) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _stderr(text: str) -> None:
    print(text, file=sys.stderr)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="what-if grid: run a session over values of its fields on Dask, one row per point",
        description="Run the cartesian product of varied session fields, each point exactly "
        "as `dirtylog run` would run its session, on Dask distributed (a local cluster of "
        "worker processes, or an existing cluster). Every point is validated before anything "
        "runs. Rows: the varied values, outcome, reason, rounds, downtime_ms, total_time_ms, "
        "transferred_bytes, throttle_pct (modelled), mismatches, wall_s_measured (measured). "
        "Ctrl-C cancels and keeps the rows finished so far. Exit status: 0 when every point "
        "verified, 1 when one had mismatches, 2 on invalid input, 130 when interrupted.",
    )
    p.add_argument("session", help="session file, or a sweep file (resources/sweeps/*.json)")
    p.add_argument(
        "--vary",
        action="append",
        metavar="FIELD=VALUES",
        help="a session field path and its values: V1,V2,... (e.g. tracking.mode=bitmap,ring; "
        "migration.auto_converge=false,true) or a range A..B[UNIT]:N, log:A..B[UNIT]:N "
        "(e.g. migration.bandwidth=log:1..25Gbit/s:9, workloads[0].rate=1000..50000 pages/s:5); "
        "repeat for more axes",
    )
    p.add_argument("--seeds", type=int, metavar="K", help="also vary seed over K seeds")
    p.add_argument("--out", metavar="FILE", help="rows as .csv or .json")
    p.add_argument(
        "--sessions", metavar="DIR", help="also write each point's session as DIR/point-NNNN.json"
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler", metavar="tcp://HOST:PORT", help="run on this existing Dask cluster"
    )
    where.add_argument(
        "--workers", type=int, metavar="N", help="local worker processes (default: cores that fit)"
    )
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="skip the points whose rows are already in FILE (a previous --out of the same sweep; "
        "the default --out); a FILE with rows of another sweep is refused",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=cmd_sweep)

"""``dirtylog run`` and ``dirtylog perftest``: the engine's headless runs."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path
from typing import Any

from engine.cli.options import output_dir, output_file
from engine.migration.budget import MAX_BATCH_TICKS
from engine.util.errors import DirtylogError, clip
from engine.util.memory import check_fits
from engine.util.units import format_bytes

ROUND_COLUMNS = (
    "round",
    "dirty_sync_count",
    "t_start_ns",
    "t_end_ns",
    "transferred_bytes",
    "pages_sent",
    "remaining_bytes",
    "duplicate",
    "normal",
    "dirty_pages",
    "new_dirty_pages",
    "dirty_pages_rate",
    "reported_pages_rate",
    "mbps",
    "threshold_bytes",
    "expected_downtime_ms",
    "throttle_pct",
    "faults",
    "ring_full_exits",
    "guest_slowdown",
    "harvest_model_ns",
)


# -- run ---------------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from engine.migration.simulation import Simulation

    output_file(args.json, "--json")
    output_file(args.csv, "--csv")
    output_dir(args.export_bitmaps, "--export-bitmaps")
    output_dir(args.export_dest, "--export-dest")
    # (the round each page was last sent is a layer for the app's heat map, not a CLI output)
    sim = Simulation.from_file(args.session, track_last_sent=False)
    sim.keep_harvests = bool(args.export_bitmaps)
    if sim.keep_harvests:  # a copy of every harvest's bitmaps is kept until the end
        rounds = sim.cfg.migration.max_rounds + 1
        words = sum(st.nwords for st in sim.vm.slots.values())
        check_fits(rounds * words * 8, "--export-bitmaps", f"keeping up to {rounds} harvests")
    out_dirs = [Path(d) for d in (args.export_bitmaps, args.export_dest) if d]
    for d in out_dirs:
        _make_dir(d)
    printer = _RoundPrinter(sim, quiet=args.quiet)
    result = sim.run(progress=printer.progress, max_batch_ticks=args.max_batch_ticks)
    printer.finish(result)
    for ev in result.get("refused_events", []):  # even with --quiet: the run differs from the file
        print(
            f"dirtylog run: warning: {clip(ev['reason'], 300)} (events[{ev['index']}], "
            f"{ev['action']} at {ev['t_ms']:g} ms, was refused when it fell due)",
            file=sys.stderr,
        )
    if args.json:
        _write_text(args.json, json.dumps(result, indent=2, default=_jsonable) + "\n")
    if args.csv:
        write_rounds_csv(args.csv, result["rounds"])
    if args.export_bitmaps:
        export_harvests(sim, Path(args.export_bitmaps))
    if args.export_dest:
        export_dest(sim, Path(args.export_dest))
    return 0 if result.get("verification", {}).get("mismatches", 0) == 0 else 1


def _jsonable(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DirtylogError(f"{path}: cannot create the directory ({exc.strerror})") from None


def _write_text(path: str | Path, text: str) -> None:
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise DirtylogError(f"{path}: cannot write ({exc.strerror})") from None


def write_rounds_csv(path: str | Path, rounds: list[dict[str, Any]]) -> None:
    """One row per round: QEMU-named columns, then per-strategy walk costs."""
    strategies = sorted({s for r in rounds for s in r.get("walk_model_ns", {})})
    header = list(ROUND_COLUMNS) + [f"walk_model_ns.{s}" for s in strategies]
    header += [f"walk_wall_us.{s}" for s in strategies]
    header += [f"walk_cpu_us.{s}" for s in strategies]
    try:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            for r in rounds:
                row = [r.get(c, "") for c in ROUND_COLUMNS]
                row += [r.get("walk_model_ns", {}).get(s, "") for s in strategies]
                row += [r.get("walk_wall_us", {}).get(s, "") for s in strategies]
                row += [r.get("walk_cpu_us", {}).get(s, "") for s in strategies]
                w.writerow(row)
    except OSError as exc:
        raise DirtylogError(f"{path}: cannot write ({exc.strerror})") from None


def export_harvests(sim, out: Path) -> None:
    """round-NNNN-slot-S.bin (KVM layout, little-endian u64 words) and rounds.json."""
    import numpy as np

    index = []
    for h in sim.harvests:
        slots = {}
        for sid, words in h["slots"].items():
            name = f"round-{h['round']:04d}-slot-{sid}.bin"
            (out / name).write_bytes(np.ascontiguousarray(words, dtype="<u8").tobytes())
            slot = sim.vm.slots[sid].slot if sid in sim.vm.slots else None
            slots[str(sid)] = {
                "file": name,
                "base_gfn": slot.base_gfn if slot else None,
                "npages": slot.npages if slot else int(words.size * 64),
            }
        index.append({"round": h["round"], "t_ns": h["t_ns"], "slots": slots})
    _write_text(out / "rounds.json", json.dumps(index, indent=2) + "\n")
    if sim.migration is not None and sim.vm.tracking.manual:
        _write_text(out / "clears.json", json.dumps(sim.migration.clears, indent=1) + "\n")


def export_dest(sim, out: Path) -> None:
    """dest-versions-slot-S.npy and source-versions-slot-S.npy (uint32 per page)."""
    import numpy as np

    m = sim.migration
    if m is None:
        raise DirtylogError("--export-dest: this session has no migration (policy none)")
    for sid, sm in m.slots.items():
        np.save(out / f"dest-versions-slot-{sid}.npy", sm.dest.astype(np.uint32))
        np.save(
            out / f"source-versions-slot-{sid}.npy", sim.vm.slots[sid].version.astype(np.uint32)
        )


class _RoundPrinter:
    """Progress on stderr and the per-round table on stdout, like a selftest's output."""

    def __init__(self, sim, quiet: bool) -> None:
        self.sim = sim
        self.quiet = quiet
        self.printed = 0
        self.tty = sys.stderr.isatty()
        if not quiet:
            print(
                f"{'sync#':>5} {'t_end ms':>10} {'sent':>10} {'dirty pages':>11} "
                f"{'remaining':>10} {'exp.downtime':>12} {'thr%':>4} {'faults':>8} "
                f"{'harvest (modelled)':>18}"
            )

    def progress(self, sim) -> None:
        m = sim.migration
        if self.quiet or m is None:
            return
        for r in m.rounds[self.printed :]:
            self._row(r)
        self.printed = len(m.rounds)
        if self.tty:
            print(
                f"\r  t={sim.t_ns / 1e9:8.2f} s  round {m.round}  remaining "
                f"{format_bytes(m.remaining_bytes()):>10}",
                end="",
                file=sys.stderr,
                flush=True,
            )

    def _row(self, r: dict[str, Any]) -> None:
        if self.tty:
            print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
        print(
            f"{r['round']:>5} {r['t_end_ns'] / 1e6:>10.1f} "
            f"{format_bytes(r['transferred_bytes']):>10} "
            f"{r['dirty_pages']:>11,} {format_bytes(r['remaining_bytes']):>10} "
            f"{r['expected_downtime_ms']:>9.1f} ms {r['throttle_pct']:>4} {r['faults']:>8,} "
            f"{r['harvest_model_ns'] / 1e3:>15.1f} µs"
        )

    def finish(self, result: dict[str, Any]) -> None:
        self.progress(self.sim)
        if self.quiet:
            return
        for line in result.get("messages", []):
            if "refused" in line or "cannot be tracked" in line:
                print(f"note: {line}")
        print("\n".join(outcome_lines(result, self.sim.cfg.migration.downtime_limit_ms)))


def outcome_lines(result: dict[str, Any], downtime_limit_ms: float | None = None) -> list[str]:
    """The outcome of a run as ``dirtylog run`` prints it (the app's outcome card shows the
    same lines): outcome and reason; total time, downtime against the limit, setup, bytes
    sent and rounds; the verification.  Times are simulated (modelled)."""
    ver = result.get("verification", {})
    downtime = result.get("downtime_ms", 0)
    limit = ""
    if downtime_limit_ms is not None:
        verdict = "within" if downtime <= downtime_limit_ms else "over"
        limit = f" ({verdict} the {downtime_limit_ms:g} ms limit)"
    shown = f"{downtime:,.1f} ms{limit}"
    if result.get("outcome") != "completed":
        shown = "none (no switchover: the guest was never stopped)"
    return [
        f"outcome: {result.get('outcome')} ({result.get('reason', '')})",
        f"total time: {result.get('total_time_ms', 0):,.1f} ms (simulated), downtime: "
        f"{shown} (expected "
        f"{result.get('expected_downtime_ms', 0):,.1f} ms), "
        f"setup: {result.get('setup_time_ms', 0):,.3f} ms, "
        f"sent: {format_bytes(result.get('transferred_bytes', 0))} in "
        f"{result.get('rounds_count', 0)} rounds (dirty-sync-count "
        f"{result.get('dirty_sync_count', 0)}; duplicate {result.get('duplicate', 0):,}, "
        f"normal {result.get('normal', 0):,} pages)",
        f"verification: {ver.get('pages_checked', 0):,} pages checked, "
        f"{ver.get('mismatches', 0)} mismatches",
    ]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run a session headless: per-round table, outcome, verification",
        description="Run a session to the end (switchover, or not-converged) and print one "
        "line per round with QEMU's statistics, then the outcome, downtime, total time and "
        "the verification of the destination. Exit status: 0 when verified, 1 on mismatches, "
        "2 on invalid input.",
    )
    p.add_argument("session", help="session file (JSON)")
    p.add_argument("--json", metavar="OUT", help="write the full result (rounds[] etc.) as JSON")
    p.add_argument("--csv", metavar="OUT", help="write the per-round statistics as CSV")
    p.add_argument(
        "--export-bitmaps",
        metavar="DIR",
        help="write what each harvest reported: round-NNNN-slot-S.bin (KVM layout) + "
        "rounds.json, and in manual-clear mode clears.json (every KVM_CLEAR_DIRTY_LOG made)",
    )
    p.add_argument(
        "--export-dest",
        metavar="DIR",
        help="write dest-versions-slot-S.npy and source-versions-slot-S.npy (uint32 per page)",
    )
    p.add_argument("--quiet", action="store_true", help="print nothing but errors")
    p.add_argument(
        "--max-batch-ticks",
        type=_positive_int,
        default=MAX_BATCH_TICKS,
        metavar="N",
        help="merge at most N ticks into one step of the engine (1 = tick by tick, as the "
        f"app's Step tick; default {MAX_BATCH_TICKS}). The output is the same for any N, "
        "except the measured walk times: batching is only ever an optimisation",
    )
    p.set_defaults(func=cmd_run)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {value}")
    return value

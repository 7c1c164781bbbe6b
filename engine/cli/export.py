"""``dirtylog export`` and ``dirtylog diff``: dirty-bitmap snapshots from the command line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from engine.cli.options import bounded_int, output_dir
from engine.util.errors import ConfigError, DirtylogError


def cmd_export(args: argparse.Namespace) -> int:
    from engine.files.export import BitmapSnapshot, write_snapshot
    from engine.migration.simulation import Simulation

    if args.round is not None:
        bounded_int(args.round, "--round", 1, 100_000, "a sync (dirty-sync-count, from 1)")
    output_dir(args.out, "--out")
    sim = Simulation.from_file(args.session)
    sim.keep_harvests = True
    # the same timeline as ``dirtylog run``: a harvest always ends a batch, so stopping after
    # the batch that made round N's harvest stops exactly there
    while not sim.finished:
        if args.round is not None and any(h["round"] == args.round for h in sim.harvests):
            break
        sim.advance()
    if not sim.harvests:
        raise DirtylogError("the run made no harvest (did the migration start?)")
    wanted = args.round if args.round is not None else sim.harvests[-1]["round"]
    found = [h for h in sim.harvests if h["round"] == wanted]
    if not found:
        raise ConfigError(
            "--round",
            f"the run made {sim.harvests[-1]['round']} syncs (dirty-sync-count "
            f"{sim.harvests[-1]['round']}); there is no sync {wanted}",
        )
    h = found[0]
    out = Path(args.out)
    written = []
    for sid, words in sorted(h["slots"].items()):
        s = sim.vm.slots[sid].slot
        snap = BitmapSnapshot(sid, s.base_gfn, s.npages, sim.vm.page_size, wanted, h["t_ns"], words)
        try:
            written += write_snapshot(snap, out, f"round-{wanted:04d}-slot-{sid}", args.format)
        except OSError as exc:
            raise DirtylogError(f"{out}: cannot write ({exc.strerror})") from None
    for p in written:
        print(p)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from engine.files.export import diff, read_snapshot

    a, b = read_snapshot(args.a), read_snapshot(args.b)
    if (a.base_gfn, a.npages) != (b.base_gfn, b.npages):
        print(f"note: the snapshots cover different ranges (slot {a.slot} vs slot {b.slot})")
    d = diff(a, b)
    if args.json:
        print(json.dumps({k: v.tolist() for k, v in d.items()}))
        return 0
    for key, label in (
        ("only_a", f"only in A ({args.a})"),
        ("only_b", f"only in B ({args.b})"),
        ("both", "in both"),
    ):
        gfns = d[key]
        sample = ", ".join(f"{g:#x}" for g in gfns[:8].tolist())
        more = " …" if gfns.size > 8 else ""
        print(f"{label}: {gfns.size} pages{': gfn ' + sample + more if gfns.size else ''}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="run a session and export one round's dirty-bitmap snapshot",
        description="Run SESSION until sync N (QEMU's dirty-sync-count: sync 1 is the setup "
        "sync at the migration's start, sync N + 1 the harvest at the end of the row labelled N "
        "in `dirtylog run`) and write, per memslot, what that harvest reported: KVM's raw "
        "layout (.bin, little-endian 64-bit words), .npy (the same words) or a PNG picture "
        "(one pixel per page, 512 per row), each with a JSON "
        "sidecar (slot, base gfn, npages, page size, round, simulated time).",
    )
    p.add_argument("session")
    p.add_argument(
        "--round",
        type=int,
        metavar="N",
        help="the sync to export, as dirty-sync-count numbers it (default: the last harvest)",
    )
    p.add_argument("--format", default="bin", choices=("bin", "npy", "png"))
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_export)
    q = sub.add_parser(
        "diff",
        help="compare two bitmap snapshots",
        description="Pages only in A, only in B and in both. A and B are snapshot sidecars "
        "(.json) or their .bin/.npy files with the sidecar beside them.",
    )
    q.add_argument("a")
    q.add_argument("b")
    q.add_argument("--json", action="store_true", help="print the three gfn lists as JSON")
    q.set_defaults(func=cmd_diff)

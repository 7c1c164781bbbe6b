"""``dirtylog bench``: the performance figures, each a ratio against a baseline run alongside.

These machines are shared and noisy, so every figure is a ratio against a baseline measured in
the same run (a numpy streaming copy of the same descriptor array), or a per-operation time,
or a real-time factor; each is the best of a few repetitions.  Figures 7, 8, 10 and 11 come
from the app (``dirtylog-inspector --bench``) and are merged in when PySide6 can start.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable

from engine.cli.bench_figure import Figure
from engine.cli.bench_migration import fig_terabyte, realtime_figures
from engine.cli.bench_sweep import fig_sweep
from engine.cli.options import output_file


def _machine() -> dict[str, object]:
    import numpy as np

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }


def slot_pages(quick: bool) -> int:
    """The slot of figures 1 and 2 (and their real-KVM context lines), in 4 KiB pages."""
    return 1 << 18 if quick else 1 << 24


def run_bench(quick: bool, report: Callable[[Figure], None] = lambda f: None) -> list[Figure]:
    """Every figure, in order; ``report`` sees each one as soon as it is measured."""
    from engine.cli.bench_engine import fig_enable, fig_get, fig_reference, fig_write_path

    scale = slot_pages(quick)
    steps: list[Callable[[], list[Figure]]] = [
        lambda: [fig_enable(scale)],
        lambda: [fig_get(scale)],
        lambda: [fig_reference(1 << 14 if quick else 1 << 18)],
        lambda: [fig_write_path(1 << 16 if quick else 1 << 20)],
        lambda: migration_figures(quick),
        lambda: app_figures(quick),
        lambda: [fig_sweep(quick)],
    ]
    figures: list[Figure] = []
    for step in steps:
        for f in step():
            report(f)
            figures.append(f)
    return figures


def migration_figures(quick: bool) -> list[Figure]:
    return [*realtime_figures(quick), fig_terabyte(quick)]


def app_figures(quick: bool) -> list[Figure]:
    """Figures 7, 8, 10 and 11 from ``python -m app.launch --bench`` in a child process."""
    cmd = [sys.executable, "-m", "app.launch", "--bench"] + (["--quick"] if quick else [])
    env = dict(os.environ)
    env.setdefault("QT_QPA_PLATFORM", "offscreen")
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, check=False)
        data = json.loads(out.stdout.strip().splitlines()[-1])
        return [Figure(**f) for f in data["figures"]]
    except Exception as exc:  # the app could not start: report the figures as not measured
        why = f"app bench did not run: {exc}"
        return [
            Figure(
                7,
                "heat-map frames per second at 16 M pages (offscreen)",
                None,
                "fps",
                ">= 30",
                None,
                {"error": why},
            ),
            Figure(
                8,
                "worst event-loop stall while a 16 M-page guest migrates (quiet machine)",
                None,
                "ms",
                "<= 50",
                None,
                {"error": why},
            ),
            Figure(
                10,
                "99th-percentile event-loop stall while a 16 M-page guest migrates (one core busy)",
                None,
                "ms",
                "<= 20",
                None,
                {"error": why},
            ),
            Figure(
                11,
                "heat-map frames per second while a 268,435,456-page guest migrates in the app",
                None,
                "fps",
                ">= 10",
                None,
                {"error": why},
            ),
        ]


def cmd_bench(args: argparse.Namespace) -> int:
    def report(f: Figure) -> None:
        mark = {True: "met", False: "MISSED", None: "n/a"}[f.met]
        value = "—" if f.value is None else f"{f.value:g}"
        print(f"{f.id}. {f.name}: {value} {f.unit} (goal {f.goal}) {mark}", flush=True)

    output_file(args.json, "--json")  # before a minute of measuring, not after
    print("measuring (about a minute; figures 5-8 take the longest) …", file=sys.stderr)
    figures = run_bench(args.quick, report)
    # figures 1 and 2 on this host's real KVM, for context (a quick run measures 16 K pages)
    from engine.host.bench_real import real_kvm_lines  # (the host's uapi: only when measuring)

    context = real_kvm_lines(slot_pages(args.quick), 1 << 14 if args.quick else None)
    for line in context:
        print(line.text(), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "machine": _machine(),
                    "figures": [f.as_dict() for f in figures],
                    "context": [c.as_dict() for c in context],
                },
                fh,
                indent=2,
            )
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure the performance figures (ratios against baselines in the same run)",
        description="Measure every performance figure of the product, each next to its goal: "
        "enable logging and GET_DIRTY_LOG against a streaming copy of the same descriptors, "
        "vectorised strategies against plain references, the write path, the simulation's "
        "real-time factor, a 1 TiB guest's memory, the app's frame rate and event-loop "
        "stalls, and a sweep's points per minute on 2 local Dask workers ÷ 1; then, for "
        "context (not goals), the same enable and GET on this host's real KVM, labelled "
        "'real KVM on this host' (skipped, with the reason, where /dev/kvm is not usable). "
        "--quick runs small versions (for the test suite).",
    )
    p.add_argument("--json", metavar="OUT", help="write the machine and every figure as JSON")
    p.add_argument("--quick", action="store_true", help="small sizes: checks it runs, not goals")
    p.set_defaults(func=cmd_bench)

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
import time
from collections.abc import Callable

import numpy as np

from engine.cli.bench_figure import Figure
from engine.cli.bench_migration import fig_terabyte, realtime_figures
from engine.cli.bench_sweep import fig_sweep
from engine.cli.options import output_file
from engine.kvm import dirtylog as DL
from engine.kvm.reference import REFERENCES
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.kvm.wrprotect import STRATEGIES, run_strategy
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import PageTable

BASE = 0x40000000


def _best(fn: Callable[[], object], reps: int = 3) -> float:
    """Best wall time of ``reps`` runs, in seconds."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _best_on_copies(pgt: PageTable, fn: Callable[[PageTable], object], reps: int) -> float:
    """Best wall time of ``fn`` on fresh copies of ``pgt`` made outside the timing."""
    best = float("inf")
    for copy in [pgt.copy() for _ in range(reps)]:
        t0 = time.perf_counter()
        fn(copy)
        best = min(best, time.perf_counter() - t0)
    return best


def _copy_baseline(pool: np.ndarray, reps: int = 5) -> float:
    """A numpy streaming copy of the descriptor array: the memory-bandwidth yardstick."""
    out = np.empty_like(pool)
    return _best(lambda: np.copyto(out, pool), reps)


def _logged_vm(npages: int, strategy: str = "range", rmap: bool = False) -> VM:
    vm = VM(Geometry(4096, 40), Tracking("bitmap", strategy))
    vm.set_memslot(0, BASE, npages * 4096, 0, 4096, populate=True)
    return vm


def fig_enable(npages: int) -> Figure:
    """Figure 1: write-protect every leaf of the slot ÷ copying the descriptors."""
    times = []
    vm = _logged_vm(npages)
    copy_s = _copy_baseline(vm.pgt.pool)
    for _ in range(3):
        vm = _logged_vm(npages)
        s = vm.slots[0].slot
        t0 = time.perf_counter()
        vm.set_memslot(0, s.base, s.size, slot_flags(log_dirty=True), 4096)
        times.append(time.perf_counter() - t0)
    ratio = min(times) / copy_s
    return Figure(
        1,
        f"enable logging on a {npages:,}-page slot ÷ streaming copy",
        round(ratio, 2),
        "ratio",
        "<= 2.0",
        ratio <= 2.0,
        {"enable_s": min(times), "copy_s": copy_s},
    )


def _dirty_words(npages: int, fraction: float, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pages = rng.choice(npages, int(npages * fraction), replace=False)
    words = np.zeros((npages + 63) // 64, np.uint64)
    np.bitwise_or.at(words, pages >> 6, np.uint64(1) << (pages & 63).astype(np.uint64))
    return pages, words


def fig_get(npages: int) -> Figure:
    """Figure 2: GET_DIRTY_LOG with 5 % random pages dirty, per strategy ÷ the copy."""
    pages, words = _dirty_words(npages, 0.05)
    detail: dict[str, object] = {}
    best_ratio = float("inf")
    copy_s = None
    for strategy in STRATEGIES:
        vm = _logged_vm(npages, strategy, rmap=strategy == "rmap")
        s = vm.slots[0].slot
        vm.set_memslot(0, s.base, s.size, slot_flags(log_dirty=True), 4096)
        copy_s = copy_s or _copy_baseline(vm.pgt.pool)
        gfn = np.sort(pages) + (BASE >> 12)
        times = []
        for _ in range(3):
            vm.access(gfn, np.zeros(gfn.size, np.int64), np.ones(gfn.size, bool))
            t0 = time.perf_counter()
            DL.get_dirty_log(vm, 0)
            times.append(time.perf_counter() - t0)
        ratio = min(times) / copy_s
        detail[strategy] = {"get_s": min(times), "ratio": round(ratio, 2)}
        best_ratio = min(best_ratio, ratio)
    detail["copy_s"] = copy_s
    return Figure(
        2,
        f"GET_DIRTY_LOG, {npages:,} pages, 5 % dirty, best strategy ÷ streaming copy",
        round(best_ratio, 2),
        "ratio",
        "<= 2.0",
        best_ratio <= 2.0,
        detail,
    )


def fig_reference(npages: int) -> Figure:
    """Figure 3: each vectorised strategy against its plain per-entry reference."""
    g = Geometry(4096, 40)
    _, words = _dirty_words(npages, 0.05, seed=2)
    nz = np.flatnonzero(words)
    offsets, masks = nz * 64, words[nz]
    pgt = PageTable(g, rmap=True)
    pgt.map_range(BASE, npages * 4096, 4096)
    detail: dict[str, object] = {}
    worst = float("inf")
    for strategy in STRATEGIES:
        fast_s = _best_on_copies(
            pgt, lambda t, s=strategy: run_strategy(s, t, BASE >> 12, offsets, masks), 5
        )
        ref_s = _best_on_copies(
            pgt, lambda t, s=strategy: REFERENCES[s](t, BASE >> 12, offsets, masks), 2
        )
        speedup = ref_s / fast_s
        detail[strategy] = {
            "vectorised_s": fast_s,
            "reference_s": ref_s,
            "speedup": round(speedup, 1),
        }
        worst = min(worst, speedup)
    return Figure(
        3,
        f"vectorised strategy vs plain reference on {npages:,} pages (slowest ratio)",
        round(worst, 1),
        "× faster",
        ">= 150",
        worst >= 150,
        detail,
    )


def fig_write_path(nwrites: int) -> Figure:
    """Figure 4: 1 M random writes to a logged slot, ns per write."""
    npages = 1 << 22
    vm = _logged_vm(npages)
    s = vm.slots[0].slot
    vm.set_memslot(0, s.base, s.size, slot_flags(log_dirty=True), 4096)
    rng = np.random.default_rng(3)
    times = []
    for _ in range(3):
        gfn = rng.integers(0, npages, nwrites) + (BASE >> 12)
        vcpu = rng.integers(0, 1, nwrites)
        w = np.ones(nwrites, bool)
        t0 = time.perf_counter()
        vm.access(gfn, vcpu, w)
        times.append(time.perf_counter() - t0)
        DL.get_dirty_log(vm, 0)
    ns = min(times) / nwrites * 1e9
    return Figure(
        4,
        f"guest write path: {nwrites:,} random writes to a logged slot",
        round(ns, 1),
        "ns/write",
        "<= 70",
        ns <= 70,
    )


def _machine() -> dict[str, object]:
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

"""Benchmark figure 9: sweep throughput, 2 local Dask workers ÷ 1, on a grid of small guests."""

from __future__ import annotations

import os
import time

from engine.cli.bench_figure import Figure


def small_guest(
    size: str = "64MiB",
    rate: str = "8000 pages/s",
    bandwidth: str = "1Gbit/s",
    timeout_s: float = 5,
    name: str = "bench-sweep",
    seed: int = 1,
) -> dict:
    """A one-vCPU guest of ``size`` with a hot set (10 % of the pages take 90 % of ``rate``)
    migrating over ``bandwidth`` with a 30 ms downtime limit (the sweep tests use it smaller)."""
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": name,
        "seed": seed,
        "vcpus": 1,
        "memslots": [
            {
                "id": 0,
                "name": "ram",
                "base": "0x40000000",
                "size": size,
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],
        "workloads": [
            {
                "name": "w",
                "kind": "hotcold",
                "vcpu": 0,
                "slot": 0,
                "rate": rate,
                "hot_fraction": 0.1,
                "hot_share": 0.9,
            }
        ],
        "migration": {
            "policy": "qemu",
            "bandwidth": bandwidth,
            "downtime_limit_ms": 30,
            "timeout_s": timeout_s,
        },
    }


def _points_per_minute(points: list, workers: int) -> tuple[float, float]:
    """Points per minute on a fresh local cluster of ``workers`` processes, measured from the
    first submit to the last row (the cluster's start and the workers' imports excluded), and
    the concurrency reached: the points' own wall times summed ÷ that time (``workers`` when
    every worker is always busy; the CPU each one gets is up to the machine)."""
    from engine.sweep.cluster import local_client
    from engine.sweep.runner import SweepRun

    rows: list[dict] = []
    with local_client(workers) as client:
        client.run(__import__, "engine.sweep.point")
        t0 = time.perf_counter()
        SweepRun(client, points, rows.append).run()
        wall = time.perf_counter() - t0
    return len(rows) / wall * 60, sum(r["wall_s_measured"] for r in rows) / wall


def fig_sweep(quick: bool) -> Figure:
    """Figure 9: points per minute with 2 local workers ÷ with 1 (goal ≥ 1.7 on 2 cores)."""
    from engine.files.session import parse_session
    from engine.sweep.grid import make_points, parse_vary, seed_axis

    # 24 points of about 0.3 s each in the full run: Dask's per-task costs are noise
    guest = (
        small_guest()
        if quick
        else small_guest(size="1GiB", rate="30000 pages/s", bandwidth="4Gbit/s")
    )
    base = parse_session(guest).model_dump(mode="json")
    bandwidths = "log:0.5..4Gbit/s:4" if quick else "log:2..8Gbit/s:4"
    axes = [parse_vary(f"migration.bandwidth={bandwidths}"), seed_axis(1, 1 if quick else 6)]
    points = make_points(base, axes)
    load_before = os.getloadavg()[0]
    one, _ = _points_per_minute(points, 1)
    two, concurrency = _points_per_minute(points, 2)
    ratio = two / one
    return Figure(
        9,
        "sweep points per minute, 2 local workers ÷ 1 (small guests)",
        round(ratio, 2),
        "×",
        ">= 1.7",
        ratio >= 1.7,
        {
            "points": len(points),
            "points_per_min_1_worker": round(one, 1),
            "points_per_min_2_workers": round(two, 1),
            "concurrency_2_workers": round(concurrency, 2),
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
        },
    )

"""Benchmark figure 9: sweep throughput, 2 local Dask workers ÷ 1, on a grid of small guests."""

from __future__ import annotations

import os
import time

from engine.cli.bench_figure import Figure


def small_guest() -> dict:
    """A 64 MiB guest with a hot set, migrating over a link near its dirty rate."""
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "bench-sweep",
        "seed": 1,
        "vcpus": 1,
        "memslots": [
            {
                "id": 0,
                "base": "0x40000000",
                "size": "64MiB",
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
                "rate": "8000 pages/s",
                "hot_fraction": 0.1,
                "hot_share": 0.9,
            }
        ],
        "migration": {
            "policy": "qemu",
            "bandwidth": "1Gbit/s",
            "downtime_limit_ms": 30,
            "timeout_s": 5,
        },
    }


def _points_per_minute(points: list, workers: int) -> float:
    """Points per minute on a fresh local cluster of ``workers`` processes, measured from the
    first submit to the last row (the cluster's start and the workers' imports excluded)."""
    from engine.sweep.cluster import local_client
    from engine.sweep.runner import SweepRun

    rows: list[dict] = []
    with local_client(workers) as client:
        client.run(__import__, "engine.sweep.point")
        t0 = time.perf_counter()
        SweepRun(client, points, rows.append).run()
        wall = time.perf_counter() - t0
    return len(rows) / wall * 60


def fig_sweep(quick: bool) -> Figure:
    """Figure 9: points per minute with 2 local workers ÷ with 1 (goal ≥ 1.7 on 2 cores)."""
    from engine.files.session import parse_session
    from engine.sweep.grid import make_points, parse_vary, seed_axis

    base = parse_session(small_guest()).model_dump(mode="json")
    axes = [parse_vary("migration.bandwidth=log:0.5..4Gbit/s:4"), seed_axis(1, 1 if quick else 4)]
    points = make_points(base, axes)
    load_before = os.getloadavg()[0]
    one = _points_per_minute(points, 1)
    two = _points_per_minute(points, 2)
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
            "load_average_1min_before": round(load_before, 2),
            "load_average_1min_after": round(os.getloadavg()[0], 2),
            "cores": os.cpu_count(),
        },
    )

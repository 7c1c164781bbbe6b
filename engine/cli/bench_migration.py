"""Benchmark figures 5a–5e and 6: the simulation's real-time factor in every tracking mode and a
1 TiB guest's memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from engine.cli.bench_figure import Figure

MODES: dict[str, dict[str, object]] = {
    "5a": {"mode": "bitmap"},
    "5b": {"mode": "manual-clear"},
    "5c": {"mode": "manual-clear", "initially_set": True},
    "5d": {"mode": "ring"},
    "5e": {"mode": "dbm"},
}
"""Figure 5's variants: the same guest in each tracking mode (QEMU's default is manual-clear)."""


def realtime_session(npages: int, tracking: dict[str, object] | None = None) -> dict:
    """A guest of ``npages`` 4K pages migrating at 10 Gbit/s while dirtying 512 MiB/s.

    ``tracking`` overrides the tracking section (default: bitmap mode, range walk), so every
    mode is timed on the same guest and workload.
    """
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "bench-realtime",
        "seed": 1,
        "geometry": {"granule": "4KiB", "ipa_bits": 44 if npages >= 1 << 28 else 40},
        "tracking": {"mode": "bitmap", "strategy": "range", **(tracking or {})},
        "vcpus": 4,
        "memslots": [
            {
                "id": 0,
                "base": "0x40000000",
                "size": npages * 4096,
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],
        "workloads": [
            {
                "name": f"w{v}",
                "kind": "uniform",
                "vcpu": v,
                "range": f"{0x40000000 + v * npages // 4 * 4096:#x}:{npages // 4 * 4096}",
                "rate": "128MiB/s",
            }
            for v in range(4)
        ],
        "migration": {
            "policy": "qemu",
            "bandwidth": "10Gbit/s",
            "downtime_limit_ms": 300,
            "timeout_s": 300,  # it converges at about 84 s
        },
    }


def realtime_figures(quick: bool) -> list[Figure]:
    """Figures 5a–5e: simulated migration time ÷ wall time for a 64 GiB guest, one per mode."""
    return [fig_realtime(quick, fid) for fid in MODES]


def fig_realtime(quick: bool, fid: str, npages: int | None = None) -> Figure:
    """One real-time figure (``fid`` names the mode in ``MODES``): the guest (``npages`` pages;
    by default 2^18 quick, 2^24 otherwise) migrated to the end; the factor is the simulated
    seconds ÷ the wall seconds of ``Simulation.run`` on this host."""
    from engine.migration.simulation import Simulation

    if npages is None:
        npages = (1 << 18) if quick else (1 << 24)
    tracking = MODES[fid]
    sim = Simulation.from_dict(realtime_session(npages, tracking), track_last_sent=False)
    t0 = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - t0
    simulated = result["total_time_ms"] / 1000
    factor = simulated / wall
    label = str(tracking["mode"]) + (" + initially-set" if tracking.get("initially_set") else "")
    return Figure(
        fid,
        f"real-time factor, {label}: {npages * 4096 >> 30} GiB guest at 10 Gbit/s, "
        "512 MiB/s dirtying",
        round(factor, 2),
        "simulated s / wall s",
        ">= 10",
        factor >= 10,
        {
            "simulated_s": simulated,
            "wall_s": wall,
            "rounds": result["rounds_count"],
            "outcome": result["outcome"],
            "mismatches": result["verification"]["mismatches"],
        },
    )


def terabyte_session(npages: int) -> dict:
    """Figure 6's guest (resources/sessions/bench-1tib.json at 2^28 pages)."""
    data = realtime_session(npages)
    data["name"] = "bench-1tib"
    data["workloads"] = [{"name": "w0", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "64MiB/s"}]
    data["migration"]["bandwidth"] = "100Gbit/s"
    data["migration"]["link_speed"] = "100Gbit/s"  # the link as fast as the rate limit
    data["migration"]["timeout_s"] = 3600  # the first pass alone takes 88 s
    return data


def terabyte_child(npages: int) -> None:
    """Run in a child process: migrate the guest, print the result and peak RSS as JSON."""
    import resource

    from engine.migration.simulation import Simulation

    sim = Simulation.from_dict(terabyte_session(npages), track_last_sent=False)
    t0 = time.perf_counter()
    result = sim.run()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(
        json.dumps(
            {
                "outcome": result["outcome"],
                "rss": rss,
                "wall_s": time.perf_counter() - t0,
                "mismatches": result["verification"]["mismatches"],
                "pages_checked": result["verification"]["pages_checked"],
            }
        )
    )


def fig_terabyte(quick: bool) -> Figure:
    """Figure 6: a 1 TiB guest migrates to completion; peak RSS ÷ guest pages."""
    npages = (1 << 20) if quick else (1 << 28)
    cmd = [
        sys.executable,
        "-c",
        f"from engine.cli.bench_migration import terabyte_child; terabyte_child({npages})",
    ]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=3000, check=False, env=dict(os.environ)
        )
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except Exception as exc:
        return Figure(
            6,
            "1 TiB guest: peak RSS per guest page",
            None,
            "bytes/page",
            "<= 24",
            False,
            {"error": str(exc)[:500]},
        )
    per_page = data["rss"] / npages
    ok = data["outcome"] == "completed" and data["mismatches"] == 0 and per_page <= 24
    return Figure(
        6,
        f"{npages * 4096 >> 30} GiB guest ({npages:,} pages) migrates; peak RSS per page",
        round(per_page, 2),
        "bytes/page",
        "completes; <= 24",
        ok,
        data,
    )

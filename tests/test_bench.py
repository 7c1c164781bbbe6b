"""``dirtylog bench --quick`` runs and reports every figure (the goals are checked by the
full benchmark, not here: these machines are shared and noisy)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_quick_bench_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli.main", "bench", "--quick", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    whole_run_s = time.monotonic() - started  # every figure's wall time is a part of it
    data = json.loads(out.read_text())
    assert {"python", "numpy", "cpus"} <= set(data["machine"])
    figures = {f["id"]: f for f in data["figures"]}
    ids = [1, 2, 3, 4, "5a", "5b", "5c", "5d", "5e", 6, 7, 8, 9, 10, 11]
    assert sorted(figures, key=str) == sorted(ids, key=str)
    for f in figures.values():
        assert isinstance(f["value"], (int, float)), f
        assert f["goal"] and f["unit"] and isinstance(f["met"], bool)
    for i in ids:
        assert f"{i}. " in proc.stdout
    # the stall figures: 8 is the worst beat on a quiet machine, 10 the 99th percentile with a
    # busy core; each carries the other statistic, and a percentile never exceeds the maximum
    quiet, busy = figures[8], figures[10]
    assert quiet["detail"]["p99"] <= quiet["value"]
    assert busy["value"] <= busy["detail"]["worst"]
    assert quiet["detail"]["beats"] > 0 and busy["detail"]["beats"] > 0
    assert "quiet machine" in quiet["name"] and "one core busy" in busy["name"]
    for fid in (7, 8, 10, 11):  # the app's figures say how busy the shared machine was
        detail = figures[fid]["detail"]
        assert detail["load_average_1min_before"] >= 0 and detail["load_average_1min_after"] >= 0
    # figure 5 in every tracking mode: each run completes and verifies
    modes = {fid: figures[fid]["name"].split(",")[1].split(":")[0].strip() for fid in ids[4:9]}
    assert modes == {
        "5a": "bitmap",
        "5b": "manual-clear",
        "5c": "manual-clear + initially-set",
        "5d": "ring",
        "5e": "dbm",
    }
    # the modelled values of figure 5 (the same 1 GiB guest in each mode): every run completes
    # and verifies, in a simulated time between the first pass alone (2^18 pages x (4096 + 8)
    # bytes at 10 Gbit/s = 0.8607 s) and that pass with every later pass at most 512 MiB/s ÷
    # 1.25 GB/s = 0.4295 of the one before (0.8607 / (1 - 0.4295) = 1.509 s), in at least
    # three rounds (the first pass, one pass over what it left dirty, the stop-and-copy)
    first_pass = (1 << 18) * 4104 / 1.25e9
    for fid in modes:
        d = figures[fid]["detail"]
        assert d["mismatches"] == 0 and d["outcome"] == "completed", figures[fid]
        assert first_pass <= d["simulated_s"] <= first_pass / (1 - (512 << 20) / 1.25e9), d
        assert d["rounds"] >= 3, d
    # each value is its detail's arithmetic (tests/test_figures_arithmetic.py works these by
    # hand on a fake clock): figure 5 simulated s / wall s, where a run's wall seconds are
    # part of the whole benchmark's; 1 enable / copy; 2 and 3 the best and worst strategy;
    # 6 peak RSS bytes / 2^20 pages
    for fid in modes:
        d = figures[fid]["detail"]
        assert 0 < d["wall_s"] < whole_run_s, (d, whole_run_s)
        assert figures[fid]["value"] == round(d["simulated_s"] / d["wall_s"], 2)
    d = figures[1]["detail"]
    assert figures[1]["value"] == round(d["enable_s"] / d["copy_s"], 2)
    assert figures[2]["value"] == min(v["ratio"] for v in figures[2]["detail"].values())
    assert figures[3]["value"] == min(v["speedup"] for v in figures[3]["detail"].values())
    d = figures[6]["detail"]
    assert figures[6]["value"] == round(d["rss"] / (1 << 20), 2)
    assert 0 < d["wall_s"] < whole_run_s and d["pages_checked"] > 0
    # figure 4: the best of five measured batches, after a first batch that is shown apart
    write = figures[4]
    assert len(write["detail"]["batches_ns_per_write"]) == 5
    assert write["value"] == min(write["detail"]["batches_ns_per_write"])
    assert write["detail"]["first_batch_ns_per_write"] > 0
    # figure 9: the median of three interleaved pairs' ratios, from the passes it lists
    sweep = figures[9]["detail"]
    assert len(sweep["points_per_min_1_worker"]) == 4 and len(sweep["ratios"]) == 3
    assert figures[9]["value"] == round(sorted(sweep["ratios"])[1], 2)
    # figure 11 drew frames of a migrating guest from a pyramid kept at 64 pages a cell and up
    assert figures[11]["detail"]["frames"] > 0 and figures[11]["detail"]["pyramid_mib"] > 0
    # the real kernel's enable and GET, for context: measured, or skipped with the reason
    context = data["context"]
    assert context and all(c["source"] == "real KVM on this host" for c in context)
    for c in context:
        assert c["unit"] == "ms"
        assert (c["value"] is None) == ("skipped" in c.get("detail", {}))
        assert "context, real KVM on this host: " + c["name"] in proc.stdout
    if context[0]["value"] is not None:  # /dev/kvm is usable: the GET saw every dirty page
        get = context[1]["detail"]
        assert get["reported"] == get["dirty_pages"] > 0
        assert get["slot_pages"] == 1 << 18 and get["measured_pages"] == 1 << 14


def test_an_unwritable_json_path_is_refused_before_measuring(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli.main",
            "bench",
            "--json",
            str(tmp_path / "no" / "b.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"dirtylog bench: --json: cannot write {tmp_path / 'no' / 'b.json'}: "
        f"{tmp_path / 'no'} is not a writable folder"
    ]
    assert proc.stdout == ""  # (nothing was measured)


def test_paired_ratios_use_the_fast_runs_on_either_side_of_each_slow_run():
    """Figures 2 and 3 pair each slow run with the fast series just before and after it; the
    figure is the median of those ratios (hand-computed from fake timings)."""
    from engine.cli.bench_engine import _paired

    slow = iter([100.0, 300.0, 90.0]).__next__
    # series of 2 runs: best 2, 1, 3, 3 -> pairs 100/min(2,1), 300/min(1,3), 90/min(3,3)
    fast = iter([2.0, 4.0, 1.0, 5.0, 3.0, 6.0, 3.0, 3.0]).__next__
    slow_s, fast_best, ratio = _paired(slow, fast, pairs=3, reps=2)
    assert slow_s == [100.0, 300.0, 90.0]
    assert fast_best == [2.0, 1.0, 3.0, 3.0]
    assert ratio == 100.0  # median of 100, 300, 30


def test_each_two_worker_pass_is_compared_with_the_one_worker_passes_around_it():
    """Figure 9's passes run 1, 2, 1, 2, 1, 2, 1 workers; each 2-worker pass is divided by the
    mean of its two neighbours (hand-computed)."""
    from engine.cli.bench_sweep import neighbour_ratios

    assert neighbour_ratios([400.0, 500.0, 300.0], [900.0, 800.0]) == [2.0, 2.0]
    assert neighbour_ratios([100.0, 300.0], [300.0]) == [1.5]
    with pytest.raises(ValueError, match="one more 1-worker pass"):
        neighbour_ratios([100.0, 300.0], [300.0, 200.0])

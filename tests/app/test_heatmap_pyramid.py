"""The heat map's max-pyramid draws the same pixels as folding every page, while a run goes on.

A small guest (a 100-page slot, so the next slot starts off a 64-page cell boundary, and a
2 MiB-backed slot whose blocks split) migrates in each tracking mode; after every step the
live pyramid of each layer, refreshed only from the cells the simulation noted, must give
exactly ``fold_max`` of the layer built from every page at every level, and the rendered
overview and zoomed-in images must be identical byte for byte.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.heatmap_data import fold_max, render, render_detail
from app.heatmap_pyramid import (
    ArrayPyramid,
    MaxPyramid,
    SimLayerPyramid,
    kept_levels,
    overview_factor,
)
from engine.migration.simulation import Simulation
from engine.migration.snapshot import LAYERS

MODES = (
    {"mode": "bitmap", "strategy": "range"},
    {"mode": "manual-clear", "strategy": "range", "initially_set": True},
    {"mode": "ring", "strategy": "range", "ring_entries": 512},
    {"mode": "dbm", "strategy": "range"},
)


def _session(tracking: dict) -> dict:
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "pyramid",
        "seed": 7,
        "geometry": {"granule": "4KiB", "ipa_bits": 40},
        "tracking": tracking,
        "vcpus": 2,
        "memslots": [
            {"id": 0, "base": "0x40000000", "size": "400KiB", "flags": ["log_dirty"]},
            {
                "id": 1,
                "base": "0x80000000",
                "size": "8MiB",
                "flags": ["log_dirty"],
                "backing": "2MiB",
            },
        ],
        "workloads": [
            {"name": "a", "kind": "uniform", "vcpu": 0, "slot": 1, "rate": "40000 pages/s"},
            {"name": "b", "kind": "uniform", "vcpu": 1, "slot": 0, "rate": "5000 pages/s"},
        ],
        "migration": {
            "policy": "qemu",
            "bandwidth": "1Gbit/s",
            "downtime_limit_ms": 1,
            "start_ms": 5,
            "timeout_s": 60,
        },
    }


def _plain(sim: Simulation, name: str) -> np.ndarray:
    """The layer from every page, as the view folded it before the pyramid."""
    return sim.heat_state()[0].copy() if name == "heat" else sim.layer(name)


def _same_pixels(pyr, layer: np.ndarray, mode: str, max_cells: int, gain: float) -> None:
    factor = overview_factor(layer.size, max_cells)
    a = render(pyr, mode, 16, max_cells, factor, gain)
    b = render(layer, mode, 16, max_cells, factor, gain)
    assert a.pages_per_cell == b.pages_per_cell == factor
    assert a.scale == b.scale and np.array_equal(a.codes, b.codes)
    for first, last, cells in ((0, 1, max_cells), (1, 3, max_cells * 4), (2, 9, max_cells * 64)):
        if True:
            da = render_detail(pyr, mode, a, first, last, cells, gain)
            db = render_detail(layer, mode, b, first, last, cells, gain)
            assert (da is None) == (db is None)
            if da is not None:
                assert da.pages_per_cell == db.pages_per_cell
                assert np.array_equal(da.codes, db.codes)


def _cases() -> list:
    """Every layer in bitmap mode; in the other modes the layers their harvest paths change
    (the rest, heat and versions, follow guest writes alone: with --slow)."""
    return [
        pytest.param(
            tracking,
            name,
            marks=[pytest.mark.slow] if slow else [],
            id=f"{name}-{tracking['mode']}",
        )
        for tracking in MODES
        for name in LAYERS
        for slow in [tracking is not MODES[0] and name in ("heat", "version")]
    ]


@pytest.mark.parametrize("tracking,name", _cases())
def test_live_pyramid_draws_the_pixels_of_the_full_fold(tracking, name):
    # refresh the touched cells even when most are (the path a huge guest takes)
    rebuilds = _run_and_compare(tracking, name, dense=2.0)
    if name not in ("prot", "heat"):  # only logging on, the switchover, a split: rebuild
        assert len(rebuilds) <= 3, rebuilds


@pytest.mark.parametrize("name", ["heat", "last_sent"])
def test_dense_updates_rebuild_to_the_same_pixels(name):
    """When most cells changed the pyramid reads every page instead: same image."""
    rebuilds = _run_and_compare(MODES[0], name, dense=MaxPyramid.dense)
    assert len(rebuilds) > 3


def _run_and_compare(tracking: dict, name: str, dense: float) -> list[int]:
    """Run the small guest, comparing after each step; the ticks at which it rebuilt."""
    sim = Simulation.from_dict(_session(tracking))
    max_cells = 16  # 2148 pages → 256 pages a cell: levels 6..8 kept, finer zooms read pages
    pyr = SimLayerPyramid(sim, name, *kept_levels(overview_factor(2148, max_cells)))
    pyr.dense = dense
    rebuilds = []
    rebuild = pyr.rebuild
    pyr.rebuild = lambda total: (rebuilds.append(sim.tick), rebuild(total))
    steps = 0
    while not sim.finished and steps < 16:
        sim.advance((1, 9, 3, 30)[steps % 4])
        steps += 1
        pyr.refresh()
        layer = _plain(sim, name)
        for k in range(0, 13):
            assert np.array_equal(pyr.fold(1 << k), fold_max(layer, 1 << k)), (sim.tick, k)
        gain = sim.heat_state()[1] if name == "heat" else 1.0
        _same_pixels(pyr, layer, name, max_cells, gain)
    assert sim.migration.round >= 2, "the run must reach past round 1"
    return rebuilds


def test_array_pyramid_levels_are_the_folds():
    rng = np.random.default_rng(1)
    for size in (1, 63, 64, 65, 1000, 4097):
        layer = rng.integers(0, 4, size).astype(np.uint8)
        for base, top in ((0, 0), (0, 5), (3, 3), (6, 9)):
            pyr = ArrayPyramid(layer, base, top)
            for k in range(0, 14):
                assert np.array_equal(pyr.fold(1 << k), fold_max(layer, 1 << k)), (size, k)


def test_pyramid_memory_at_one_tebibyte():
    """268 M pages drawn in 1 M cells: 256 pages a cell, levels 6 to 8 kept (4 M + 2 M + 1 M
    values: 28 MiB of float32 heat)."""
    pages = 1 << 28
    factor = overview_factor(pages, 1 << 20)
    assert factor == 256 and kept_levels(factor) == (6, 8)
    assert kept_levels(1) == (0, 0) and kept_levels(32) == (5, 5) and kept_levels(64) == (6, 6)


@pytest.mark.parametrize(
    "total,cells,expected", [(1000, 1000, 1), (1001, 1000, 2), (5000, 1000, 8)]
)
def test_overview_factor_is_the_next_power_of_two(total, cells, expected):
    assert overview_factor(total, cells) == expected

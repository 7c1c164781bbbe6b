"""The heat map's codes (``app.heatmap_data``, no Qt), each worked out by hand.

Code 0 is "no page"; each mode maps its values to 1..255 (the colour bar's lookup tables in
``app/heatmap_colours.py`` are checked against rendered pixels in ``test_colours.py``):
heat 1 + 254·ln(1 + v)/ln(1 + top); dirty 1 or 255; prot and diff 1 + state; last_sent 1 for
never, else 2 + 253·round // top (integer division); version 1 + 254·log2(v + 1)/log2(top + 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from app.heatmap_data import (
    CODE_CHUNK,
    FOLD_CHUNK,
    detail_factor,
    diff_layer,
    fold_max,
    heat_top,
    render,
    render_detail,
    to_codes,
)


def _codes(layer, mode, scale=None):
    codes, top = to_codes(np.asarray(layer), mode, scale)
    assert codes.dtype == np.uint8
    return codes.tolist(), top


def test_heat_is_logarithmic_up_to_the_top():
    # ln(1 + 31) / ln(1 + 1023) = 5/10: half the scale, code 1 + 127
    assert _codes([0.0, 31.0, 1023.0, 2047.0], "heat", 1023.0) == ([1, 128, 255, 255], 1023.0)
    # 511: ln 512 / ln 1024 = 0.9 of 254 steps: 1 + 228.6; a trace of heat stays code 1
    assert _codes([511.0, 0.001], "heat", 1023.0) == ([229, 1], 1023.0)
    # no top given: the 99th percentile of the written pages, 31 + 0.99 × (1023 - 31)
    codes, top = _codes([0.0, 31.0, 1023.0], "heat")
    assert top == pytest.approx(1013.08) and codes == [1, 128, 255]


def test_dirty_is_two_codes():
    assert _codes([0, 1, 5, 0], "dirty") == ([1, 255, 255, 1], 1.0)


@pytest.mark.parametrize("mode", ["prot", "diff"])
def test_categories_are_shifted_by_one(mode):
    assert _codes(np.arange(6, dtype=np.uint8), mode) == ([1, 2, 3, 4, 5, 6], 5.0)


def test_last_sent_rounds_over_the_top_round():
    # top = the highest round, 4: round r -> 2 + 253 r // 4
    assert _codes([-1, 0, 1, 2, 4], "last_sent") == ([1, 2, 65, 128, 255], 4.0)
    # a fixed top of 2: round 4 saturates, round 1 is 2 + 253 // 2
    assert _codes([-1, 1, 4], "last_sent", 2) == ([1, 128, 255], 2.0)
    assert _codes([-1, -1], "last_sent") == ([1, 1], 1.0)  # never sent: top at least 1
    assert _codes(np.zeros(0, np.int16), "last_sent") == ([], 1.0)


def test_version_is_log2_of_the_count():
    # log2(v + 1) = 0, 1, 2, 3 over a top of 3: 254 / 3 per step
    assert _codes([0, 1, 3, 7], "version") == ([1, 85, 170, 255], 7.0)
    # a fixed top of 15 versions: log2(16) = 4
    assert _codes([0, 1, 3, 7, 31], "version", 15) == ([1, 64, 128, 191, 255], 15.0)
    assert _codes(np.zeros(0, np.uint32), "version") == ([], 1.0)
    assert _codes([0, 0], "version") == ([1, 1], 1.0)  # top at least log2(2) = 1


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown heat-map mode 'x'"):
        to_codes(np.zeros(1), "x")


def test_heat_top_is_the_99th_percentile_of_written_cells():
    assert heat_top(np.zeros(10, np.float32)) == 1.0  # nothing written
    assert heat_top(np.array([0, 0, 5.0])) == 5.0  # zeros are not cells that were written
    assert heat_top(np.array([1e-6])) == 1e-3  # at least 1e-3
    # 1..100: index 0.99 × 99 = 98.01 between 99 and 100
    assert heat_top(np.arange(1, 101, dtype=np.float64)) == pytest.approx(99.01, abs=1e-9)
    # 131 072 cells: every second one is sampled (65 536 samples at most): 2, 4, ... 131 070
    assert heat_top(np.arange(131_072, dtype=np.float64)) == pytest.approx(
        2 + 2 * 0.99 * 65_534, rel=1e-12
    )


def test_fold_max():
    v = np.array([1, 5, 2, 7, 3])
    assert fold_max(v, 2).tolist() == [5, 7, 3]  # the last group is short
    assert fold_max(v, 5).tolist() == [7]
    assert fold_max(v, 1) is v and fold_max(v[:0], 3).size == 0
    f = fold_max(np.array([0.5, 2.5, 1.0], np.float32), 2)
    assert f.dtype == np.float32 and f.tolist() == [2.5, 1.0]


def test_render_lays_pages_out_row_by_row():
    img = render(np.array([0, 1, 0, 0, 1, 1, 0, 0, 0, 1]), "dirty", 4, 100)
    assert img.codes.tolist() == [[1, 255, 1, 1], [255, 255, 1, 1], [1, 255, 0, 0]]
    assert (img.pages_per_cell, img.pages_per_row, img.total_pages) == (1, 4, 10)
    assert img.mode == "dirty" and img.codes.dtype == np.uint8
    # one page: one cell in one row; no page: one empty cell (code 0)
    assert render(np.array([1]), "dirty", 4, 100).codes.tolist() == [[255]]
    assert render(np.zeros(0, np.uint8), "dirty", 4, 100).codes.tolist() == [[0]]
    # 10 pages in at most 4 cells: 3 pages a cell (ceil), max over each
    img = render(np.array([0, 1, 0, 0, 0, 0, 0, 0, 0, 1]), "dirty", 4, 4)
    assert img.codes.tolist() == [[255, 1, 1, 255]] and img.pages_per_cell == 3
    # no gain: the values as they are (31 is half of a 1023 top on the log scale)
    img = render(np.array([0.0, 31.0], np.float32), "heat", 2, 10, top=1023.0)
    assert img.codes.tolist() == [[1, 128]]
    # the gain scales the values before the coding: 511.5 × 2 = the top
    img = render(np.array([0.0, 511.5], np.float32), "heat", 2, 10, gain=2.0, top=1023.0)
    assert img.codes.tolist() == [[1, 255]] and img.scale == 1023.0


@pytest.mark.parametrize(
    "overview, pages, cells, factor",
    [
        (8, 1536, 1024, 2),
        (6, 1000, 250, 6),
        (8, 100, 1000, 1),
        (3, 10_000, 10, 3),
        (8, 4096, 1024, 4),
        (2, 10, 100, 1),
    ],
)
def test_detail_factor_divides_the_overview_fold(overview, pages, cells, factor):
    assert detail_factor(overview, pages, cells) == factor


def test_render_detail_refines_whole_overview_rows():
    layer = np.zeros(64, np.uint8)
    layer[[17, 40]] = 1
    overview = render(layer, "dirty", 4, 16)  # 4 pages a cell, 4 cells (16 pages) a row
    assert overview.pages_per_cell == 4 and overview.codes.shape == (4, 4)
    detail = render_detail(layer, "dirty", overview, 1, 3, 32)  # rows 1-2: pages 16..47
    assert (detail.first_page, detail.total_pages, detail.pages_per_cell) == (16, 32, 1)
    assert detail.pages_per_row == 16 and detail.codes.shape == (2, 16)
    assert np.flatnonzero(detail.codes.ravel() == 255).tolist() == [1, 24]
    assert detail.scale == overview.scale
    # one row at least, even when last_row <= first_row
    assert render_detail(layer, "dirty", overview, 2, 2, 32).codes.shape == (1, 16)
    # not finer: the overview is one page a cell, or the cells would not get narrower
    assert render_detail(layer, "dirty", render(layer, "dirty", 4, 64), 0, 2, 32) is None
    assert render_detail(layer, "dirty", overview, 0, 4, 16) is None


def test_diff_layer_places_each_class_at_the_slot_offset():
    out = diff_layer(10, 2, only_a=[0, 1], only_b=[3], both=[7, 8])
    assert out.dtype == np.uint8
    assert out.tolist() == [0, 0, 1, 1, 0, 2, 0, 0, 0, 3]  # page 8 + 2 is past the end
    assert diff_layer(4, -1, only_a=[0, 1], only_b=[], both=[]).tolist() == [1, 0, 0, 0]


def test_render_detail_keeps_the_overviews_scale_mode_and_rows():
    """The detail uses the overview's top (its colours match the overview's), starts at row 0
    when asked, and is refined from an overview of two pages a cell too."""
    layer = np.zeros(64, np.float32)
    layer[17] = 31.0  # half of a 1023 top on the log scale: code 128
    overview = render(layer, "heat", 4, 16, top=1023.0)
    detail = render_detail(layer, "heat", overview, 1, 2, 16)
    assert detail.mode == "heat" and detail.codes.dtype == np.uint8
    assert detail.codes.tolist() == [[1] + [128] + [1] * 14]  # no gain: the values as they are
    assert detail.scale == 1023.0
    first = render_detail(layer, "heat", overview, 0, 2, 32)
    assert first.first_page == 0 and first.codes.ravel()[17] == 128
    # rows past the end give no detail
    assert render_detail(layer, "heat", overview, 4, 6, 32) is None
    # two pages a cell: a detail of one page a cell
    two = render(layer, "dirty", 4, 32)
    assert two.pages_per_cell == 2 and two.codes.shape == (8, 4)
    d2 = render_detail(layer, "dirty", two, 0, 2, 32)
    assert d2.pages_per_cell == 1 and d2.codes.shape == (2, 8)
    assert np.flatnonzero(d2.codes.ravel() == 255).tolist() == []  # page 17 is in row 2
    d3 = render_detail(layer, "dirty", two, 2, 3, 32)
    assert np.flatnonzero(d3.codes.ravel() == 255).tolist() == [1]


@pytest.mark.parametrize("size", [1, CODE_CHUNK - 1, CODE_CHUNK, CODE_CHUNK + 3])
@pytest.mark.parametrize("written", [0.2, 1.0])  # the sparse path (gather) and the dense one
def test_heat_codes_worked_in_chunks_equal_the_whole_array_formula(size, written):
    """Chunk boundaries change nothing: each code is the formula on the whole array at once."""
    rng = np.random.default_rng(size)
    layer = (rng.random(size, dtype=np.float32) * 300).astype(np.float32)
    layer[rng.random(size) >= written] = 0
    scale = 37.5
    want = (1 + np.clip(np.log1p(layer) / np.log1p(scale) * 254, 0, 254)).astype(np.uint8)
    got, top = to_codes(layer, "heat", scale)
    assert top == scale
    assert got.dtype == np.uint8 and np.array_equal(got, want)


@pytest.mark.parametrize("scale", [1e-3, 0.5, 37.5, 1023.0, 3e4, 1e30])
def test_fast_heat_codes_equal_the_formula_at_every_step_boundary(scale):
    """The float32 estimate hands a value to the formula whenever it lies near a step: the
    values 0..40 float32 steps either side of every code boundary (where the estimate and
    the formula could disagree), random values, 0, the smallest float and infinity all get
    the formula's code."""
    den = np.log1p(scale)
    edges = np.expm1(np.arange(1, 256) / 254 * den).astype(np.float32)
    near = [np.nextafter(edges, np.float32(np.inf * s)) for s in (1, -1)]
    values = [edges]
    for side in near:
        v = edges
        for _ in range(40):
            v = np.nextafter(v, side)
            values.append(v)
    rng = np.random.default_rng(7)
    values += [
        (rng.random(50_000) * scale * 3).astype(np.float32),
        np.array([0.0, 1e-45, 1e-8, np.inf, scale], np.float32),
    ]
    layer = np.abs(np.concatenate(values))
    want = (1 + np.clip(np.log1p(layer) / np.log1p(scale) * 254, 0, 254)).astype(np.uint8)
    got, _ = to_codes(layer, "heat", scale)
    assert np.array_equal(got, want)
    assert len(set(want.tolist())) > 190  # the boundaries were reached: most codes occur


@pytest.mark.parametrize("k", [1, 4, 6, 17])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_power_of_two_folds_cross_chunks_like_a_plain_max(k, dtype):
    """Folds by 2**k, pair by pair and a chunk at a time, equal the max of each group of
    2**k consecutive values taken whole (the last group short), across chunk boundaries."""
    size = 2 * FOLD_CHUNK + (1 << k) + 3
    rng = np.random.default_rng(k)
    values = (rng.random(size) * 250).astype(dtype)
    values[::3] = 0
    group = 1 << k
    padded = np.zeros(-(-size // group) * group, dtype)  # values are >= 0: zeros change no max
    padded[:size] = values
    want = padded.reshape(-1, group).max(axis=1)
    got = fold_max(values, group)
    assert got.dtype == values.dtype and np.array_equal(got, want)

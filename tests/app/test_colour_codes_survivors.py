"""The heat map's coding where the colours mutation group's survivors showed it unpinned.

What is pinned, and where each expected value comes from (never from the code under test):

* the shared colour tables and their RGB32 words are read-only (``lut``'s docstring and the
  comment over ``_TABLES``: built once, then shared by every image item and frame);
* every code 1..255 of the dirty table is one of its two categories (``colour_table``'s
  docstring: codes 1..255 are the mode's scale or its categories), in the colours the colour
  bar promises (written down by hand, as in ``test_colours.py``);
* ``_code_margin`` is the bound the comment over it derives: (2**-23 + 16 ULP of float32 at
  2·den) in natural-log units, times 254/den code steps per unit, plus 1e-4; the ULPs are
  worked out by hand (the binade 2·den lies in), not with ``np.spacing``;
* the routes the docstrings and comments document: float32 heat values go to the float32
  estimate (``_fast_log_codes``) and only those near a code step (about 2 × margin of them) to
  the formula; other dtypes to the formula whole; only the written cells are coded unless
  most are (then the whole layer in one pass); a power-of-two fold goes pair by pair
  (``_fold_pow2``), a float32 one as int32, other folds not;
* heat codes worked out by hand from the documented formula
  ``uint8(1 + clip(254 · ln(1 + v) / ln(1 + top), 0, 254))``: at top 1023, ln(1 + v)/ln 1024
  is 0.1 for v = 1 (25.4 steps: code 26), 0.5 for 31 (code 128), 0.9 for 511 (code 229);
  values in (-1, 0) have a negative log, clipped to step 0 (code 1); infinity saturates
  (code 255) with no floating-point error raised (the estimate's inf - inf is expected);
  a 2-D layer keeps its shape.

Qt-free (``app.heatmap_data`` and the tables need no widget) and fast.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from app import heatmap_colours, heatmap_data
from app.heatmap_colours import colour_table, lut, rgb32
from app.heatmap_data import fold_max, to_codes

CLEAN, DIRTY = (235, 235, 235), (220, 40, 40)  # the colour bar's "clean" and "dirty"
COLOUR_MODES = ("heat", "version", "last_sent", "dirty", "diff", "prot")
TOP = 1023.0  # ln(1 + TOP) = 10 ln 2: the hand-worked codes below are round fractions of it


def _spy(monkeypatch, name: str) -> list[np.ndarray]:
    """Record the first argument of every call to ``heatmap_data.<name>`` (calls still go
    through)."""
    calls: list[np.ndarray] = []
    real = getattr(heatmap_data, name)

    def recording(values, *args):
        calls.append(values)
        return real(values, *args)

    monkeypatch.setattr(heatmap_data, name, recording)
    return calls


@pytest.mark.parametrize("mode", COLOUR_MODES)
def test_shared_tables_and_their_words_are_read_only(mode):
    table = lut(mode)
    assert not table.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        table[0] = (1, 2, 3)
    words = heatmap_colours._tables(mode)[1]
    assert not words.flags.writeable
    # rgb32 hands out read-only words for any table (each is shared once built)
    fresh = rgb32(np.zeros((256, 3), np.uint8))
    assert not fresh.flags.writeable
    assert fresh[0] == 0xFF000000


def test_every_code_of_the_dirty_table_is_clean_or_dirty():
    table = [tuple(int(c) for c in row) for row in colour_table("dirty")]
    assert table[1:128] == [CLEAN] * 127  # the lower codes: clean (code 1 is to_codes' clean)
    assert table[129:] == [DIRTY] * 127  # the upper codes: dirty (code 255 is to_codes' dirty)
    assert table[128] in (CLEAN, DIRTY)  # the middle code too: no code left uncoloured


@pytest.mark.parametrize(
    "den, ulp",
    [
        (10 * math.log(2), 2.0**-20),  # top 1023: 2·den = 13.86 in [8, 16), spacing 2**-20
        (math.log(2), 2.0**-23),  # top 1: 2·den = 1.386 in [1, 2), spacing 2**-23
        (math.log1p(1e30), 2.0**-16),  # top 1e30: 2·den = 138.2 in [128, 256), spacing 2**-16
    ],
)
def test_code_margin_is_the_documented_bound(den, ulp):
    want = (2.0**-23 + 16 * ulp) * 254 / den + 1e-4
    assert heatmap_data._code_margin(np.float64(den)) == pytest.approx(want, rel=1e-9)


def _formula(values: np.ndarray, top: float) -> np.ndarray:
    """The documented heat formula, in plain numpy (log1p in the values' type)."""
    return (1 + np.clip(np.log1p(values) / np.log1p(top) * 254, 0, 254)).astype(np.uint8)


def test_float32_heat_codes_come_from_the_estimate_and_only_near_steps_from_the_formula(
    monkeypatch,
):
    rng = np.random.default_rng(19)
    layer = (rng.random(100_000) * 3 * TOP).astype(np.float32) + np.float32(0.5)  # all written
    fast, exact = _spy(monkeypatch, "_fast_log_codes"), _spy(monkeypatch, "_exact_log_codes")
    codes, _ = to_codes(layer, "heat", TOP)
    assert np.array_equal(codes, _formula(layer, TOP))
    assert sum(c.size for c in fast) == layer.size  # every value estimated
    # the margin at top 1023 is 6.6e-4 steps (test above): about 2 × that share is unsure;
    # 1 % is 7 times as many
    assert 0 < sum(c.size for c in exact) < layer.size // 100


@pytest.mark.parametrize("dtype", [np.float64, np.int64])
def test_other_heat_dtypes_take_the_formula_whole(monkeypatch, dtype):
    layer = np.array([1, 31, 511, 1023, 5000] * 4, dtype)
    fast, exact = _spy(monkeypatch, "_fast_log_codes"), _spy(monkeypatch, "_exact_log_codes")
    codes, _ = to_codes(layer, "heat", TOP)
    assert codes.tolist() == [26, 128, 229, 255, 255] * 4
    assert fast == [] and sum(c.size for c in exact) == layer.size


def test_only_the_written_cells_are_coded_unless_most_are(monkeypatch):
    coded = _spy(monkeypatch, "_log_codes")
    sparse = np.array([0, 31, 0, 0, 511, 0, 1, 0, 0, 1023], np.float32)  # 4 of 10 written
    assert to_codes(sparse, "heat", TOP)[0].tolist() == [1, 128, 1, 1, 229, 1, 26, 1, 1, 255]
    assert [c.tolist() for c in coded] == [[31, 511, 1, 1023]]
    coded.clear()
    dense = np.array([0, 31, 1, 0, 511, 1, 1, 0, 1023, 0], np.float32)  # 6 of 10: one pass
    assert to_codes(dense, "heat", TOP)[0].tolist() == [1, 128, 26, 1, 229, 26, 26, 1, 255, 1]
    assert [c.size for c in coded] == [10]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heat_value_one_is_written_even_where_most_cells_hold_it(dtype):
    layer = np.array([1.0, 1.0, 1.0, 0.0], dtype)  # 1 = 0.1 of the log scale: code 26
    assert to_codes(layer, "heat", TOP)[0].tolist() == [26, 26, 26, 1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_2d_heat_layer_keeps_its_shape(dtype):
    layer = np.array([[31, 1023, 0], [511, 1, 2047]], dtype)  # 5 of 6 written: one pass
    codes, _ = to_codes(layer, "heat", TOP)
    assert codes.shape == (2, 3) and codes.tolist() == [[128, 255, 1], [229, 26, 255]]
    assert heatmap_data._log_codes(layer, TOP).tolist() == [[128, 255, 1], [229, 26, 255]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_heat_values_between_minus_one_and_zero_are_code_1(dtype):
    """log1p of -1 < v < 0 is negative: the formula's clip at 0 makes it step 0, code 1, in
    the float32 estimate (``_fast_log_codes``) as in the formula itself."""
    layer = np.array([-0.5, -0.9, -1e-3, 31.0], dtype)
    assert to_codes(layer, "heat", TOP)[0].tolist() == [1, 1, 1, 128]


def test_infinite_heat_saturates_without_a_floating_point_error():
    layer = np.array([np.inf, 1.0, 31.0], np.float32)
    with np.errstate(invalid="raise"):
        assert to_codes(layer, "heat", TOP)[0].tolist() == [255, 26, 128]


def test_the_code_helpers_return_uint8_codes():
    values = np.array([0.0, 1.0, 31.0, 511.0, 1023.0, 4000.0], np.float32)
    want = [1, 26, 128, 229, 255, 255]
    den = np.log1p(TOP)
    exact = heatmap_data._exact_log_codes(values, den)
    assert exact.dtype == np.uint8 and exact.tolist() == want
    fast = heatmap_data._fast_log_codes(values, den, heatmap_data._code_margin(den))
    assert fast.dtype == np.uint8 and fast.tolist() == want


@pytest.mark.parametrize("factor, k", [(2, 1), (4, 2), (8, 3), (1024, 10)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_power_of_two_folds_go_pair_by_pair_and_float32_as_int32(monkeypatch, factor, k, dtype):
    calls: list[tuple[np.dtype, int]] = []
    real = heatmap_data._fold_pow2

    def recording(values, kk):
        calls.append((values.dtype, kk))
        return real(values, kk)

    monkeypatch.setattr(heatmap_data, "_fold_pow2", recording)
    values = np.zeros(3 * factor + 1, dtype)
    values[[1, factor, 3 * factor]] = (5, 7, 9)
    assert fold_max(values, factor).tolist() == [5, 7, 0, 9]
    folded_as = np.int32 if dtype == np.float32 else dtype
    assert calls == [(np.dtype(folded_as), k)]


@pytest.mark.parametrize("factor", [3, 5, 6, 12])
def test_other_folds_do_not_go_pair_by_pair(monkeypatch, factor):
    calls = _spy(monkeypatch, "_fold_pow2")
    values = np.arange(2 * factor + 1, dtype=np.uint8)
    assert fold_max(values, factor).tolist() == [factor - 1, 2 * factor - 1, 2 * factor]
    assert calls == []

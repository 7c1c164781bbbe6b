"""Per-page layers turned into the heat map's 8-bit image (no Qt: runs in the worker).

The image is one cell per page, ``pages_per_row`` pages a row.  When the guest has more pages
than the view has cells, consecutive pages are folded into one cell by ``max`` (a single hot or
dirty page stays visible).  Values are mapped to 0..255 codes with fixed levels per mode, so
colours never flicker between frames; the lookup tables live in ``app/heatmap_colours.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MODES = ("heat", "dirty", "prot", "last_sent", "version", "diff")
MODE_LABELS = {
    "heat": "write heat (decayed writes per page)",
    "dirty": "dirty now (KVM log or still to send)",
    "prot": "protection",
    "last_sent": "round last sent",
    "version": "version (writes so far)",
    "diff": "snapshot diff (File → Diff bitmap snapshots)",
}
DIFF_NAMES = ("in neither", "only in A", "only in B", "in both")
EMPTY = 0  # code for cells past the last page


@dataclass(frozen=True)
class HeatImage:
    """What the GUI draws: codes, the geometry, and what one cell stands for."""

    codes: np.ndarray  # uint8, rows × pages_per_row (row-major)
    mode: str
    pages_per_cell: int
    pages_per_row: int  # cells per row
    total_pages: int
    scale: float  # value represented by code 255 (heat, version) or max round
    first_page: int = 0  # a detail image covers pages from here (zoomed-in refinement)
    # the codes in the mode's colours (uint32 0xffRRGGBB, same shape), filled in by the
    # worker (``app.heatmap.coloured``) so that the GUI thread only wraps them in a QImage
    rgb: np.ndarray | None = None


def fold_max(values: np.ndarray, factor: int) -> np.ndarray:
    """Max over consecutive groups of ``factor`` values (the last group may be short).

    Float layers (write heat) are never negative, and non-negative IEEE floats order like
    their bit patterns read as integers, so they are folded as int32: numpy's float max
    checks every element for NaN and runs at half the speed.  A power-of-two ``factor`` is
    folded pair by pair (``_fold_pow2``); others by ``reduceat``.
    """
    if factor <= 1 or values.size == 0:
        return values
    flat = values.view(np.int32) if values.dtype == np.float32 else values
    k = factor.bit_length() - 1
    if factor == 1 << k:
        out = _fold_pow2(flat, k)
    else:  # reduceat is about twice as fast as reshape(-1, k).max(axis=1) for small k
        out = np.maximum.reduceat(flat, np.arange(0, flat.size, factor))
    return out.view(values.dtype)


FOLD_CHUNK = 1 << 16  # values folded at a time by _fold_pow2 (its halves stay in the cache)


def _fold_pow2(values: np.ndarray, k: int) -> np.ndarray:
    """``fold_max(values, 2**k)`` (1-D): ``k`` halvings, each the max of neighbouring pairs,
    ``FOLD_CHUNK`` values at a time through two reused buffers, so only the first halving
    reads memory (about 40 % less CPU than ``reduceat`` at 16 M values, which loops
    over each group of ``2**k``); the last short group is one ``max``."""
    full = values.size >> k << k
    chunk = max(FOLD_CHUNK, 1 << k)
    out = np.empty(-(-values.size >> k), values.dtype)
    bufs = (np.empty(chunk >> 1, values.dtype), np.empty(chunk >> 2, values.dtype))
    for lo in range(0, full, chunk):
        src = values[lo : min(lo + chunk, full)]
        for j in range(k):
            half = src.size >> 1
            dst = out[(lo >> k) : (lo >> k) + half] if j == k - 1 else bufs[j % 2][:half]
            np.maximum(src[0::2], src[1::2], out=dst)
            src = dst
    if full < values.size:
        out[-1] = values[full:].max()
    return out


def _fold_span(layer, start: int, stop: int, factor: int) -> np.ndarray:
    """``fold_max(layer[start:stop], factor)``; ``layer`` is the per-page array, or a
    ``heatmap_pyramid.MaxPyramid`` of it (for a power-of-two ``factor``, without reading
    every page)."""
    if isinstance(layer, np.ndarray):
        return fold_max(layer[start:stop], factor)
    return layer.fold_span(start, stop, factor)


def _scaled(values: np.ndarray, gain: float) -> np.ndarray:
    return values if gain == 1.0 else values * values.dtype.type(gain)


HEAT_PERCENTILE = 99.0  # the automatic heat scale's top: hotter cells saturate
PERCENTILE_SAMPLES = 65_536  # cells sampled for it (pyqtgraph's levelSamples)


def heat_top(values: np.ndarray) -> float:
    """The automatic top of the heat scale: the 99th percentile of the written cells (a
    sample of at most 65,536), so a single hot page (a Zipf head) cannot blacken the rest."""
    step = max(1, values.size // PERCENTILE_SAMPLES)
    written = values[::step]
    written = written[written > 0]
    if written.size == 0:
        return 1.0
    return max(float(np.percentile(written, HEAT_PERCENTILE)), 1e-3)


CODE_CHUNK = 1 << 14  # values coded at a time (the temporaries stay in the cache)


def _log_codes(values: np.ndarray, scale: float) -> np.ndarray:
    """``uint8(1 + clip(log1p(values) / log1p(scale) * 254, 0, 254))``, same shape: write
    heat's codes, worked ``CODE_CHUNK`` values at a time.  float32 values take
    ``_fast_log_codes`` (the same codes); others the formula itself (``_exact_log_codes``)."""
    flat = values.reshape(-1)
    den = np.log1p(scale)
    out = np.empty(flat.size, np.uint8)
    margin = _code_margin(den) if flat.dtype == np.float32 else 1.0
    for lo in range(0, flat.size, CODE_CHUNK):
        part = flat[lo : lo + CODE_CHUNK]
        if margin < 0.25:
            out[lo : lo + part.size] = _fast_log_codes(part, den, margin)
        else:
            out[lo : lo + part.size] = _exact_log_codes(part, den)
    return out.reshape(values.shape)


def _exact_log_codes(values: np.ndarray, den: np.floating) -> np.ndarray:
    """The formula of ``_log_codes`` as written, on a 1-D array (log1p in the values' type,
    the rest in float64, truncated as astype(np.uint8))."""
    y = np.divide(np.log1p(values), den)
    np.multiply(y, 254, out=y)
    np.clip(y, 0, 254, out=y)
    np.add(1, y, out=y)
    return y.astype(np.uint8)


# Bounds behind _code_margin (absolute, in natural-log units): float32 1 + v is rounded by at
# most 2**-24 relative, which moves its log by at most 2**-24; numpy's SIMD float32 log and
# glibc's log1pf are each within a few ULP (measured on this host over 4 M values from 1e-4
# to 1e34: 0.53 and 0.79 ULP beyond that rounding); 16 ULP of the largest unsaturated log
# covers both eight times over.
LOG_ROUNDING = 2.0**-23
LOG_ULPS = 16


def _code_margin(den: np.floating) -> float:
    """How far, in code steps, ``254 * ln(1 + v) / den`` computed in float32 can be from the
    formula's value: values whose fast estimate lies nearer than this to a step are coded by
    the formula itself.  Codes saturate at 254 steps, so only logs up to ``2 * den`` count."""
    ulp = float(np.spacing(np.float32(2 * float(den))))
    return (LOG_ROUNDING + LOG_ULPS * ulp) * 254 / float(den) + 1e-4


def _fast_log_codes(values: np.ndarray, den: np.floating, margin: float) -> np.ndarray:
    """``_exact_log_codes`` of float32 ``values`` for about a third of the CPU: glibc's
    log1pf is scalar (19 ms for 1 M values here), numpy's float32 log of ``1 + v`` is SIMD
    (5 ms).  Its estimate of the code step, ``w``, is within ``margin`` steps of the
    formula's, so a value whose ``w`` is further than that from every whole step has the
    estimate's code; the others (about 2 × margin of them, and NaN) take the formula."""
    w = np.log(np.add(values, np.float32(1)))
    np.multiply(w, np.float32(254 / float(den)), out=w)
    step = np.floor(w)
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, unsure
        frac = np.subtract(w, step)
    unsure = ~((frac >= margin) & (frac <= 1 - margin))
    np.clip(step, 0, 254, out=step)
    np.add(step, 1, out=step)
    codes = step.astype(np.uint8)
    if unsure.any():
        idx = np.flatnonzero(unsure)
        codes[idx] = _exact_log_codes(values[idx], den)
    return codes


def to_codes(layer: np.ndarray, mode: str, scale: float | None = None) -> tuple[np.ndarray, float]:
    """Map a layer's values to 1..255 (0 is reserved for 'no page'); ``scale`` fixes the top
    (heat: log scale up to ``scale``, by default ``heat_top``; hotter cells saturate)."""
    if mode == "heat":
        scale = scale or heat_top(layer)
        # only written cells are coded: a cold cell (0) is code 1, as the formula gives, and
        # most of a huge guest's cells are cold (the logarithm is most of a frame's cost).
        # Selected by a mask, not flatnonzero: that held the GIL for up to 35 ms a frame in
        # the worker (measured, 16 M pages on a busy host), and the GUI thread waited
        hot = layer != 0
        if np.count_nonzero(hot) * 2 > layer.size:  # mostly written: one pass is cheaper
            return _log_codes(layer, scale), scale
        codes = np.ones(layer.shape, dtype=np.uint8)
        codes[hot] = _log_codes(layer[hot], scale)
        return codes, scale
    if mode == "dirty":
        return (1 + (layer > 0) * 254).astype(np.uint8), 1.0
    if mode in ("prot", "diff"):
        return (1 + layer.astype(np.int64)).astype(np.uint8), 5.0
    if mode == "last_sent":
        top = int(scale) if scale else max(int(layer.max()) if layer.size else 0, 1)
        codes = np.where(layer < 0, 1, 2 + np.clip(layer, 0, top) * 253 // top)
        return codes.astype(np.uint8), float(top)
    if mode == "version":
        logv = np.log2(layer.astype(np.float64) + 1)
        top = np.log2(scale + 1) if scale else max(float(logv.max()) if layer.size else 0.0, 1.0)
        return (1 + np.clip(logv / top * 254, 0, 254)).astype(np.uint8), float(2**top - 1)
    raise ValueError(f"unknown heat-map mode {mode!r}")


def render(
    layer,
    mode: str,
    pages_per_row: int,
    max_cells: int,
    factor: int | None = None,
    gain: float = 1.0,
    top: float | None = None,
) -> HeatImage:
    """The image for ``layer`` × ``gain`` (one value per page) at no more than ``max_cells``
    cells.  ``gain`` (> 0) lets write heat be drawn from the simulation's own array and its
    decay factor, without a scaled copy of every page; ``top`` is a user-set top of the
    scale (None: automatic).  ``layer`` may be a ``heatmap_pyramid.MaxPyramid`` of the
    layer instead (with a power-of-two ``factor``): the same image, read from its levels."""
    total = int(layer.size)
    factor = factor or max(1, -(-total // max_cells))
    # fold first (every mode's coding is monotonic, so max commutes with it, and with a
    # positive gain): the coding then runs on the cells, not on millions of pages
    folded, scale = to_codes(_scaled(_fold_span(layer, 0, total, factor), gain), mode, top)
    per_row = max(1, min(pages_per_row, folded.size or 1))
    rows = max(1, -(-folded.size // per_row))
    image = np.full(rows * per_row, EMPTY, dtype=np.uint8)
    image[: folded.size] = folded
    return HeatImage(image.reshape(rows, per_row), mode, factor, per_row, total, scale)


def detail_factor(overview_factor: int, pages: int, max_cells: int) -> int:
    """The finest fold that shows ``pages`` in ``max_cells`` and nests in the overview's cells
    (a divisor of its fold, so detail rows line up with overview rows)."""
    need = max(1, -(-pages // max_cells))
    for f in range(need, overview_factor + 1):
        if overview_factor % f == 0:
            return f
    return overview_factor


def render_detail(
    layer,
    mode: str,
    overview: HeatImage,
    first_row: int,
    last_row: int,
    max_cells: int,
    gain: float = 1.0,
) -> HeatImage | None:
    """A finer image of overview rows [first_row, last_row), or None when it would not be finer.

    Each detail row covers exactly one overview row (it just has more, narrower cells), and it
    uses the overview's scale, so the two line up and their colours match.  ``layer``: as
    for ``render``.
    """
    per_row_pages = overview.pages_per_row * overview.pages_per_cell
    p0 = max(0, first_row) * per_row_pages
    p1 = min(layer.size, max(first_row + 1, last_row) * per_row_pages)
    if overview.pages_per_cell <= 1 or p1 <= p0:
        return None
    factor = detail_factor(overview.pages_per_cell, p1 - p0, max_cells)
    if factor >= overview.pages_per_cell:
        return None
    cells_per_row = overview.pages_per_row * (overview.pages_per_cell // factor)
    codes, _ = to_codes(_scaled(_fold_span(layer, p0, p1, factor), gain), mode, overview.scale)
    rows = -(-codes.size // cells_per_row)
    image = np.full(rows * cells_per_row, EMPTY, dtype=np.uint8)
    image[: codes.size] = codes
    return HeatImage(
        image.reshape(rows, cells_per_row),
        mode,
        factor,
        cells_per_row,
        int(p1 - p0),
        overview.scale,
        int(p0),
    )


def diff_layer(total_pages: int, slot_offset: int, only_a, only_b, both) -> np.ndarray:
    """Per-page codes of a snapshot diff (see DIFF_NAMES), laid out like the other layers."""
    out = np.zeros(total_pages, dtype=np.uint8)
    for code, pages in ((1, only_a), (2, only_b), (3, both)):
        idx = np.asarray(pages, dtype=np.int64) + slot_offset
        out[idx[(idx >= 0) & (idx < total_pages)]] = code
    return out

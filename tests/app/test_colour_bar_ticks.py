"""The colour bar's ticks (``bar_ticks``), worked out by hand from the codes.

The bar draws code c (1..255) as the band [c - 1, c].  last_sent: "never" is code 1 (its band's
middle, 0.5), round r is code 2 + 253 r / top, so its tick sits at the bottom of its band,
1 + 253 r / top; a tick every ceil(top / 6) rounds, and round 1 always.  heat: 0 at the
bottom, then 0.1, 1, 10, ... below 90 % of the top at 254 ln(1 + v) / ln(1 + top), and the
top ("≥ top").  version: the same with log2(v + 1) / log2(top + 1) and the top as a count.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from app.heatmap_colours import bar_ticks, lut


def _ticks(mode, scale):
    return bar_ticks(SimpleNamespace(mode=mode, scale=scale))


@pytest.mark.parametrize(
    "top, rounds",
    [
        (1, [1]),
        (4, [1, 2, 3, 4]),  # ceil(4 / 6) = 1: every round
        (6, [1, 2, 3, 4, 5, 6]),
        (7, [1, 2, 4, 6]),  # ceil(7 / 6) = 2
        (12, [1, 2, 4, 6, 8, 10, 12]),
        (13, [1, 3, 6, 9, 12]),  # ceil(13 / 6) = 3
    ],
)
def test_last_sent_ticks(top, rounds):
    assert _ticks("last_sent", float(top)) == [(0.5, "never")] + [
        (1 + r * 253 / top, str(r)) for r in rounds
    ]


def test_last_sent_top_round_sits_at_254():
    assert _ticks("last_sent", 1.0)[-1] == (254.0, "1")
    assert _ticks("last_sent", 4.0)[-1] == (254.0, "4")


def test_heat_ticks():
    top = 1023.0  # 0.9 × top = 920.7: 0.1, 1, 10 and 100 are shown, 1000 is not
    want = [(0.0, "0")]
    want += [(math.log1p(v) / math.log(1024) * 254, f) for v, f in ((0.1, "0.1"), (1, "1"))]
    want += [(math.log1p(v) / math.log(1024) * 254, f) for v, f in ((10, "10"), (100, "100"))]
    want.append((254.0, "≥ 1.02e+03"))
    got = _ticks("heat", top)
    assert [t[1] for t in got] == [t[1] for t in want]
    assert [t[0] for t in got] == pytest.approx([t[0] for t in want], abs=1e-9)


@pytest.mark.parametrize("top, shown", [(11.0, ["0.1", "1"]), (12.0, ["0.1", "1", "10"])])
def test_heat_values_below_nine_tenths_of_the_top(top, shown):
    """10 is shown only when it is below 0.9 × top: not at 11 (9.9), at 12 (10.8)."""
    assert [t[1] for t in _ticks("heat", top)] == ["0", *shown, f"≥ {top:.3g}"]


def test_version_ticks():
    # log2(1 + 1) / log2(7 + 1) = 1/3 of 254; 10 is not below 0.9 × 7
    got = _ticks("version", 7.0)
    assert [t[1] for t in got] == ["0", "1", "7"]
    assert [t[0] for t in got] == pytest.approx([0.0, 254 / 3, 254.0], abs=1e-9)
    got = _ticks("version", 1000.0)
    assert [t[1] for t in got] == ["0", "1", "10", "100", "1,000"]
    want = [0.0] + [math.log2(v + 1) / math.log2(1001) * 254 for v in (1, 10, 100)] + [254.0]
    assert [t[0] for t in got] == pytest.approx(want, abs=1e-9)


def test_every_decade_up_to_a_million():
    """A top of 10^7: every value of the list is below 0.9 × top, so every decade shows."""
    heat = _ticks("heat", 1e7)
    assert [t[1] for t in heat] == [
        "0", "0.1", "1", "10", "100", "1000", "10000", "100000", "1e+06", "≥ 1e+07"
    ]  # fmt: skip
    decades = (0.1, 1, 10, 100, 1e3, 1e4, 1e5, 1e6)
    want = [0.0] + [math.log1p(v) / math.log1p(1e7) * 254 for v in decades] + [254.0]
    assert [t[0] for t in heat] == pytest.approx(want, abs=1e-9)
    version = _ticks("version", 1e7)
    assert [t[1] for t in version] == [
        "0", "1", "10", "100", "1000", "10000", "100000", "1e+06", "10,000,000"
    ]  # fmt: skip
    want = [0.0] + [math.log2(v + 1) / math.log2(1e7 + 1) * 254 for v in decades[1:]] + [254.0]
    assert [t[0] for t in version] == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("mode", ["heat", "dirty", "prot", "last_sent", "version", "diff"])
def test_lookup_tables_are_256_rgb_bytes(mode):
    """pyqtgraph's fast path takes a uint8 (256, 3) table for a uint8 image."""
    table = lut(mode)
    assert table.dtype == np.uint8 and table.shape == (256, 3)


@pytest.mark.parametrize("mode", ["heat", "version"])
def test_a_value_at_nine_tenths_of_the_top_is_not_shown(mode):
    """Strictly below 0.9 × top: at a top of 10 / 0.9 (0.9 × top is exactly 10.0 in doubles)
    10 is left out, so its label does not crowd the top's."""
    labels = [t[1] for t in _ticks(mode, 10 / 0.9)]
    assert "10" not in labels and "1" in labels

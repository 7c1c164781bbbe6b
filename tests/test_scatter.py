"""The GIL-friendly scatter helpers against plain loops, on dense and spread-out indices."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.util import scatter


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5000), min_size=0, max_size=400),
    st.sampled_from([1, 3, 1 << 15]),
    st.sampled_from([1, 0.25]),
)
def test_add_counts_and_add_at_match_a_loop(idx, slice_size, weight):
    idx = np.array(idx, dtype=np.int64)
    old = scatter.SLICE
    scatter.SLICE = slice_size  # (tiny slices: every boundary case of the slicing)
    weights = (1 + (np.arange(idx.size) * 7907) % 977 / 3).astype(np.float32)
    try:
        counts = np.zeros(5001, np.float32)
        scatter.add_counts(counts, idx, weight)
        sums = np.zeros(5001, np.float32)
        scatter.add_at(sums, idx, weights)
    finally:
        scatter.SLICE = old
    want_counts = np.zeros(5001, np.float32)
    want_sums = np.zeros(5001, np.float32)
    for k, i in enumerate(idx.tolist()):
        want_counts[i] += np.float32(weight)
        want_sums[i] += weights[k]  # in order, in float32: the same bits
    assert np.allclose(counts, want_counts)
    assert sums.tobytes() == want_sums.tobytes()


def test_dense_indices_are_counted_over_their_range_only():
    target = np.zeros(100, np.uint32)
    scatter.add_counts(target, np.array([40, 41, 41, 43]))
    assert target.nonzero()[0].tolist() == [40, 41, 43] and target[41] == 2


def test_integer_counts_wrap_as_the_dtype_does():
    """Integer targets are added to in place (no cast copy); a uint32 version wraps mod 2**32
    exactly as ``+=`` on uint32 would (by hand: 2**32 - 1 + 2 = 1, + 1 = 0)."""
    target = np.full(8, 2**32 - 1, np.uint32)
    scatter.add_counts(target, np.array([5, 5, 6]))
    assert target.tolist() == [2**32 - 1] * 5 + [1, 0, 2**32 - 1]

"""Array helpers every layer uses: run detection, cheap deduplication, run expansion, bit
counting.

Plain numpy on int64 arrays of positions, gfns and keys; no knowledge of tables or KVM.
"""

from __future__ import annotations

import numpy as np


def popcount(words: np.ndarray) -> int:
    """Set bits in an array of 64-bit words (any shape; converted to uint64)."""
    return int(np.bitwise_count(np.asarray(words, dtype=np.uint64)).sum(dtype=np.int64))


def first_of_runs(sorted_keys: np.ndarray) -> np.ndarray:
    """Mask of the first element of each run of equal values in a sorted array."""
    mask = np.empty(sorted_keys.shape, dtype=bool)
    if sorted_keys.size:
        mask[0] = True
        np.not_equal(sorted_keys[1:], sorted_keys[:-1], out=mask[1:])
    return mask


def unique_fast(a: np.ndarray) -> np.ndarray:
    """Sorted distinct values; free when ``a`` is already strictly increasing (walk order).

    numpy's own ``unique`` hashes first, which is several times slower on the int64 arrays
    of positions and gfns this engine deduplicates.
    """
    a = np.asarray(a)
    if a.size < 2 or bool(np.all(a[1:] > a[:-1])):
        return a
    a = np.sort(a)
    return a[first_of_runs(a)]


def expand_runs(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(s, s + c)`` for each (s, c), vectorised."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    offsets = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(np.asarray(starts, dtype=np.int64), counts) + offsets

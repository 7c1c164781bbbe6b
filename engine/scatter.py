"""Scatter-updates that let the GUI thread run: ``ufunc.at`` in slices, counts by ``bincount``.

numpy's ``ufunc.at`` (``np.minimum.at``, ``np.add.at``) holds the GIL for its whole run:
measured, 4 M updates kept every other Python thread waiting for 40-60 ms, which in the app is
a frozen window while the worker simulates.  These helpers give the same results in slices
short enough (~1 ms) for the interpreter to switch threads between them, and count with
``bincount`` (which releases the GIL) where the indices cover their range densely.
"""

from __future__ import annotations

import numpy as np

SLICE = 1 << 15  # updates per ufunc.at call
DENSE_SPAN = 16  # count over the index range when it is at most this × the number of indices


def minimum_at(target: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """``np.minimum.at(target, idx, values)`` (the minimum does not depend on the order)."""
    for lo in range(0, idx.size, SLICE):
        np.minimum.at(target, idx[lo : lo + SLICE], values[lo : lo + SLICE])


def add_counts(target: np.ndarray, idx: np.ndarray, weight=1) -> None:
    """Add ``weight`` to ``target[i]`` once per occurrence of ``i`` in ``idx``."""
    if not idx.size:
        return
    lo = int(idx.min())
    span = int(idx.max()) - lo + 1
    if span <= DENSE_SPAN * idx.size:
        counts = np.bincount(idx - lo, minlength=span)
        if weight == 1:
            target[lo : lo + span] += counts.astype(target.dtype)
        else:
            target[lo : lo + span] += counts.astype(target.dtype) * target.dtype.type(weight)
        return
    w = target.dtype.type(weight)
    for start in range(0, idx.size, SLICE):
        np.add.at(target, idx[start : start + SLICE], w)

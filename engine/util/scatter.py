"""Scatter-updates that let the GUI thread run: ``ufunc.at`` in slices, counts without it.

numpy's ``ufunc.at`` (``np.minimum.at``, ``np.add.at``) holds the GIL for its whole run:
measured, 4 M updates kept every other Python thread waiting for 40-60 ms, which in the app is
a frozen window while the worker simulates.  Worse, when its target is freshly allocated
memory, each first touch of a transparent huge page is a fault taken with the GIL held: 1000
scattered adds into a new 64 MiB array took 90 ms.  So ``add_at`` runs in slices short
enough (~1 ms) for the interpreter to switch threads between them, on targets its caller has
just filled (the heat layer's weighted adds, whose float sums depend on their order, and
``subtract_ones``); ``add_counts`` counts with ``bincount`` over a dense range or with a sort over a
sparse one, then adds with plain array operations, all of which release the GIL.
"""

from __future__ import annotations

import numpy as np

from engine.util.arrays import first_of_runs

SLICE = 1 << 15  # updates per ufunc.at call
DENSE_SPAN = 16  # count over the index range when it is at most this × the number of indices


def add_at(target: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    """``np.add.at(target, idx, values)`` in slices, in order (each element's adds happen in
    the order of ``idx``, so a float sum is the same however ``idx`` is split into calls);
    ``target`` should be memory already written (faults under the GIL are the slow part)."""
    for lo in range(0, idx.size, SLICE):
        np.add.at(target, idx[lo : lo + SLICE], values[lo : lo + SLICE])


def subtract_ones(target: np.ndarray, idx: np.ndarray) -> None:
    """``np.subtract.at(target, idx, 1)`` in slices: one less per occurrence of each index
    (``ufunc.at`` holds the GIL for its whole run)."""
    for lo in range(0, idx.size, SLICE):
        np.subtract.at(target, idx[lo : lo + SLICE], 1)


def add_counts(target: np.ndarray, idx: np.ndarray, weight=1) -> None:
    """Add ``weight`` to ``target[i]`` once per occurrence of ``i`` in ``idx``."""
    if not idx.size:
        return
    lo = int(idx.min())
    span = int(idx.max()) - lo + 1
    if span <= DENSE_SPAN * idx.size:  # count over the range, add in one pass
        where, counts = slice(lo, lo + span), np.bincount(idx - lo, minlength=span)
        if weight == 1 and target.dtype.kind in "iu":  # in place, no cast copy of the counts
            view = target[where]
            np.add(view, counts, out=view, casting="unsafe")  # wraps as += on the dtype
            return
    else:  # sort, count the runs, add at the distinct indices
        s = np.sort(idx)
        run = np.flatnonzero(first_of_runs(s))
        where, counts = s[run], np.diff(run, append=s.size)
    counts = counts.astype(target.dtype)
    if weight != 1:
        counts *= target.dtype.type(weight)
    target[where] += counts

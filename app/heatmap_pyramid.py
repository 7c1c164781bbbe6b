"""A max-pyramid of one per-page layer: the heat map of a huge guest without a fold per frame.

Level ``k`` holds the maximum of each aligned group of ``2**k`` pages (the last group may be
short), exactly what ``heatmap_data.fold_max(layer, 2**k)`` gives, so an image drawn from a
level has the same colours as one folded from every page.  Only the levels from ``base``
(≤ 6: a level-6 cell is one 64-page bitmap word) up to ``top`` (the overview's fold) are
kept; a finer zoom reads just the pages it shows.  The live pyramid (``SimLayerPyramid``)
follows a running simulation: each frame it refreshes only the 64-page cells the simulation
noted as touched (``engine.migration.changes``) and their ancestors, and rebuilds from every
page only when the simulation's ``view_key`` says the whole layer changed (logging switched
on, an edit, a switchover, a block split for ``prot``).

Memory: under 2 × pages / 2**base values of the layer's dtype.  For a 1 TiB guest of 4 KiB
pages (268 M pages, 1 M cells on screen: levels 6 to 8) that is 7.3 M values: 28 MiB for
write heat (float32), versions (uint32) or the round last sent (int32), 7 MiB for
dirty or protection (uint8), plus the simulation's change marks (one byte per 64 pages:
4 MiB).  Qt-free: it runs in the worker thread.
"""

from __future__ import annotations

import numpy as np

from app.heatmap_data import fold_max
from engine.migration.changes import CELL, CELL_SHIFT
from engine.migration.simulation import Simulation
from engine.util.arrays import first_of_runs

REBUILD_CHUNK = 1 << 22  # pages read at a time when rebuilding (bounded temporaries)


def overview_factor(total_pages: int, max_cells: int) -> int:
    """Pages per cell of the overview: the smallest power of two that shows ``total_pages``
    in at most ``max_cells`` cells (a pyramid level)."""
    need = max(1, -(-total_pages // max(1, max_cells)))
    return 1 << (need - 1).bit_length()


def kept_levels(factor: int) -> tuple[int, int]:
    """The levels kept for an overview folded by ``factor`` (a power of two): from 64 pages
    a cell (or the overview's own, if finer) up to the overview's."""
    top = factor.bit_length() - 1
    return min(CELL_SHIFT, top), top


def _pair_max(a: np.ndarray) -> np.ndarray:
    """The next level: the max of each pair (a last odd value stands alone)."""
    half = a.size // 2
    out = np.empty(-(-a.size // 2), dtype=a.dtype)
    np.maximum(a[0 : 2 * half : 2], a[1 : 2 * half : 2], out=out[:half])
    if a.size % 2:
        out[half] = a[-1]
    return out


class MaxPyramid:
    """Levels ``base`` … ``top`` of a layer's max-pyramid (coarser folds are folded from
    ``top``, finer ones from the pages).

    Reads like the layer for single pages (``size``, ``p[i]``), so the hover text can take
    it where it took the layer.  Subclasses say how pages are read: ``_span(start, stop)``
    and ``_at(idx)``.
    """

    dense = 1 / 8  # an update touching more than this share of the cells rebuilds instead

    def __init__(self, base: int, top: int) -> None:
        if not 0 <= base <= min(top, CELL_SHIFT):
            raise ValueError(f"pyramid levels {base}..{top}: base must be 0..min(top, 6)")
        self.base, self.top = base, top
        self.size = 0
        self.levels: list[np.ndarray] = []

    def _span(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def _at(self, idx: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, page: int):
        return self._at(np.array([page], dtype=np.int64))[0]

    @property
    def kept(self) -> tuple[int, int]:
        return self.base, self.top

    def rebuild(self, total: int) -> None:
        """Every level from every page, ``REBUILD_CHUNK`` pages at a time."""
        self.size = int(total)
        group = 1 << self.base
        parts = [
            fold_max(self._span(lo, min(lo + REBUILD_CHUNK, self.size)), group)
            for lo in range(0, self.size, REBUILD_CHUNK)
        ]
        level = np.concatenate(parts) if parts else self._span(0, 0)
        self.levels = [level]
        for _ in range(self.base, self.top):
            level = _pair_max(level)
            self.levels.append(level)

    def update(self, cells: np.ndarray) -> None:
        """Refresh the 64-page cells ``cells`` (sorted int64) and their ancestors; when they
        are over ``dense`` of all cells, reading every page in order is cheaper."""
        if not cells.size or not self.levels:
            return
        if cells.size > self.dense * -(-self.size // CELL):
            self.rebuild(self.size)
            return
        pages = np.minimum((cells[:, None] << CELL_SHIFT) + np.arange(CELL), self.size - 1)
        values = self._at(pages.reshape(-1))  # pages past the end repeat the last one
        per = CELL >> self.base  # base entries per cell
        values = fold_max(values, 1 << self.base)  # pair by pair: no 64-value inner loops
        idx = ((cells[:, None] * per) + np.arange(per)).reshape(-1)
        keep = idx < self.levels[0].size
        idx = idx[keep]
        self.levels[0][idx] = values[keep]
        for lower, upper in zip(self.levels, self.levels[1:], strict=False):
            idx = idx >> 1
            idx = idx[first_of_runs(idx)]  # sorted: distinct parents
            left = lower[idx << 1]
            right = lower[np.minimum((idx << 1) + 1, lower.size - 1)]
            upper[idx] = np.maximum(left, right)

    def fold(self, factor: int) -> np.ndarray:
        """``fold_max(layer, factor)`` for a power-of-two ``factor``."""
        return self.fold_span(0, self.size, factor)

    def fold_span(self, start: int, stop: int, factor: int) -> np.ndarray:
        """``fold_max(layer[start:stop], factor)``, ``start`` a multiple of ``factor`` (a
        power of two): from a kept level, from the pages when finer than ``base``, or from
        ``top`` when coarser."""
        k = factor.bit_length() - 1
        if factor != 1 << k or start % factor:
            raise ValueError(f"fold {factor} from {start}: needs a power of two dividing start")
        if k < self.base:
            return fold_max(self._span(start, stop), factor)
        j = min(k, self.top)
        level = self.levels[j - self.base][start >> j : -(-stop // (1 << j))]
        return fold_max(level, 1 << (k - j))


class ArrayPyramid(MaxPyramid):
    """The pyramid of a fixed array (a snapshot diff): built once."""

    def __init__(self, layer: np.ndarray, base: int, top: int) -> None:
        super().__init__(base, top)
        self.layer = layer
        self.rebuild(layer.size)

    def _span(self, start: int, stop: int) -> np.ndarray:
        return self.layer[start:stop]

    def _at(self, idx: np.ndarray) -> np.ndarray:
        return self.layer[idx]


class SimLayerPyramid(MaxPyramid):
    """The pyramid of layer ``name`` of a running simulation (heat as kept: draw it with
    ``heat_state``'s factor as the gain).  Call ``refresh`` before each frame, from the
    thread that advances the simulation."""

    def __init__(self, sim: Simulation, name: str, base: int, top: int) -> None:
        super().__init__(base, top)
        self.sim, self.name = sim, name
        self.key: tuple | None = None

    def refresh(self) -> None:
        """Bring every level up to the simulation's present."""
        key = self.sim.view_key(self.name)
        if key != self.key:
            self.key = key
            changes = self.sim.track_changes()
            self.rebuild(changes.total_pages)
        else:
            assert self.sim.changes is not None
            self.update(self.sim.changes.take())

    def _span(self, start: int, stop: int) -> np.ndarray:
        return self.sim.layer_span(self.name, start, stop)

    def _at(self, idx: np.ndarray) -> np.ndarray:
        return self.sim.layer_at(self.name, idx)

"""Which 64-page cells of the per-page layers may have changed since a view last looked.

A view of a large guest (the app's heat map at 1 TiB: 268 M pages) cannot rebuild its picture
from every page each frame.  Instead the simulation notes, as it runs, the cells (64 pages:
one dirty-bitmap word, in the layers' order of slots back to back — see ``snapshot``) that a
guest access, a send, a harvest, a CLEAR or a ring reset touched, and the view refreshes
only those.  Whatever changes a whole layer at once (logging switched on, a memslot edit, a
switchover, a block split) is not noted here: the simulation's ``view_key`` changes instead.

Memory: one byte per cell, 1/64 byte per page (4 MiB for a 1 TiB guest of 4 KiB pages).
Only one reader: the view that asked for it takes and clears the marks each frame.
"""

from __future__ import annotations

import numpy as np

CELL_SHIFT = 6  # a cell is one bitmap word: 64 pages
CELL = 1 << CELL_SHIFT


class PageChanges:
    """Marks of the cells touched since the last ``take`` (layer indices >> CELL_SHIFT)."""

    def __init__(self, total_pages: int) -> None:
        self.total_pages = int(total_pages)
        self.marks = np.zeros(-(-self.total_pages // CELL), dtype=bool)

    def mark(self, pages: np.ndarray) -> None:
        """Mark the cells of ``pages`` (int64 layer indices; outside the layers: ignored)."""
        if pages.size:
            cells = pages >> CELL_SHIFT
            self.marks[cells[(cells >= 0) & (cells < self.marks.size)]] = True

    def mark_words(self, offset: int, words: np.ndarray) -> None:
        """Mark the cells of a slot's bitmap words ``words`` (int64 word indices of the slot
        whose first page is layer index ``offset``); a word straddles two cells unless the
        slot starts on a cell boundary."""
        first = offset + (words << CELL_SHIFT)
        self.mark(first)
        if offset % CELL:
            self.mark(first + CELL - 1)

    def take(self) -> np.ndarray:
        """The marked cells (sorted int64), and clear the marks."""
        cells = np.flatnonzero(self.marks)
        self.marks[cells] = False
        return cells

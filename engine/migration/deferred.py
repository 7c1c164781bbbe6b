"""Sends counted now and written later: what a batch of ticks sends, kept as counts per tick.

Inside a batch (see "Batching" in ``engine.migration.simulation``) every page costs the same
(``Migration.uniform_cost``) and the migration bitmap changes only by the sends themselves, so
what one call of the sender sends is fixed by a count: the next n dirty pages in send order
from the cursor (address order, wrapping once, as ``Migration._collect`` gives them).  The
sender therefore only counts (``link_count``, ``window_count``: the exact comparisons that
QEMU's byte budget makes, page by page); the pages' bits, destination versions and the cursor
are written at a flush, from one scan of the bitmap, each page getting the version it had at
the end of its own tick (``later_writes``: the writes of later ticks, already applied, are
taken off).  With manual clear, the ranks at which a clear-bitmap chunk holding bits of the
last GET begins (``clear_ranks``) mark the ticks whose sends must CLEAR first.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field

import numpy as np

from engine.kvm import dirtylog as DL
from engine.util.arrays import expand_runs, first_of_runs

U64 = np.uint64

Pages = list[tuple[int, np.ndarray]]  # (slot id, page offsets) in send order


@dataclass
class Deferred:
    """The sends since the last flush: ``counts[j]`` pages went in batch tick ``ticks[j]``,
    the first of them the first dirty page at or after ``cursor`` (slot id, page offset)."""

    cursor: tuple[int, int]
    ticks: list[int] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)
    sent: int = 0
    ahead: Pages | None = None  # manual clear: pages in send order from ``cursor``
    ahead_limit: int = 0  # how many pages ``ahead`` was asked for (fewer: it holds them all)
    clear_at: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def add(self, tick: int, n: int) -> None:
        """``n`` more pages sent in batch tick ``tick``."""
        if self.ticks and self.ticks[-1] == tick:
            self.counts[-1] += n
        else:
            self.ticks.append(tick)
            self.counts.append(n)
        self.sent += n

    def send_ticks(self) -> np.ndarray:
        """The batch tick of every page sent, in send order (int64, ``sent`` values)."""
        return np.repeat(np.asarray(self.ticks, np.int64), self.counts)

    def clears_between(self, lo: int, hi: int) -> bool:
        """Whether a chunk with bits of the last GET begins at a send rank in [lo, hi)."""
        i = int(np.searchsorted(self.clear_at, lo))
        return i < self.clear_at.size and int(self.clear_at[i]) < hi


def link_count(budget: float, cost: int) -> int:
    """Pages of ``cost`` bytes whose running total stays within ``budget``: the largest n >= 0
    with n × cost <= budget (compared exactly, as ``np.searchsorted`` compares the totals)."""
    if budget < cost:
        return 0
    n = int(budget // cost)
    while (n + 1) * cost <= budget:
        n += 1
    while n > 0 and n * cost > budget:
        n -= 1
    return n


def window_count(budget: float, cost: int) -> int:
    """Pages of ``cost`` bytes that start while at most ``budget`` bytes are used: the number
    of i >= 0 with i × cost <= budget (the rate limit is checked before each page and is
    exceeded only when more than its share is used: ``migration_rate_exceeded``); no limit
    for an infinite budget."""
    if budget < 0:
        return 0
    if math.isinf(budget):  # no rate limit (Xen's sender)
        return sys.maxsize
    n = int(budget // cost) + 1
    while n > 0 and (n - 1) * cost > budget:
        n -= 1
    while n * cost <= budget:
        n += 1
    return n


def split(pages: Pages, lo: int, hi: int) -> Pages:
    """The pieces of send ranks [lo, hi) of ``pages``, per slot, in send order."""
    out: Pages = []
    start = 0
    for sid, p in pages:
        a, b = max(lo - start, 0), min(hi - start, p.size)
        if a < b:
            out.append((sid, p[a:b]))
        start += p.size
    return out


def clear_ranks(pages: Pages, snapshots: dict[int, np.ndarray | None], chunk: int) -> np.ndarray:
    """Send ranks at which a clear-bitmap chunk (``chunk`` pages, a multiple of 64) first
    appears among ``pages`` while its words of ``snapshots`` (the last GET's bits not yet
    cleared, per slot) hold a bit: where a sender CLEARs before sending (sorted int64)."""
    out: list[np.ndarray] = []
    seen: set[tuple[int, int]] = set()
    start = 0
    for sid, p in pages:
        snap = snapshots.get(sid)
        if snap is not None and p.size:
            c = p // chunk
            first = np.flatnonzero(first_of_runs(c))
            for i in first[_chunks_with_bits(snap, c[first], chunk)].tolist():
                key = (sid, int(c[i]))
                if key not in seen:
                    seen.add(key)
                    out.append(np.array([start + i], np.int64))
        start += p.size
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def _chunks_with_bits(snap: np.ndarray, chunks: np.ndarray, chunk: int) -> np.ndarray:
    """Whether each of ``chunks`` (chunk indices) has a set bit in ``snap``: only the words of
    those chunks are read (a batch's sends touch a few; the slot may have thousands)."""
    if not chunks.size:
        return np.zeros(0, bool)
    words = chunk // 64
    w0 = chunks * words  # (a chunk holding a page of the slot has at least one word)
    nw = np.minimum(w0 + words, snap.size) - w0
    return np.logical_or.reduceat(snap[expand_runs(w0, nw)] != 0, np.cumsum(nw) - nw)


def clear_sent(bitmap: np.ndarray, pages: np.ndarray) -> None:
    """Clear the bits of ``pages`` (sorted page offsets whose bits are set: the flush's sends,
    collected from ``bitmap``) in ``bitmap`` (uint64 words, KVM layout).  Pages that are every
    set bit from the first to the last (``Migration._collect``) have their words in between
    zeroed as a range, keeping only the first and last words' bits outside it; otherwise they
    are cleared bit by bit (``DL.clear_bits``).  A page whose bit is clear breaks the count
    that tells the two apart."""
    if not pages.size:
        return
    a, b = int(pages[0]), int(pages[-1]) + 1
    wa, wb = a >> 6, (b + 63) >> 6
    seg = bitmap[wa:wb]
    keep_lo = U64((1 << (a & 63)) - 1)  # bits of the first word below a
    keep_hi = U64(~((1 << (b - (wb - 1) * 64)) - 1) & (2**64 - 1))  # of the last, from b on
    first, last = seg[0] & keep_lo, seg[-1] & keep_hi
    inside = DL.popcount(seg) - DL.popcount(first) - DL.popcount(last)
    if inside != pages.size:
        DL.clear_bits(bitmap, pages)
        return
    seg[:] = 0
    seg[0] |= first
    seg[-1] |= last


def later_writes(pages: np.ndarray, ticks: np.ndarray, rel: np.ndarray, wt: np.ndarray):
    """Writes (page offset ``rel``, batch tick ``wt``) to one of ``pages`` (increasing offsets,
    each sent in batch tick ``ticks``) after the tick it was sent in: their page offsets, one
    per write (int64), to be taken off the versions the pages were given."""
    if not pages.size or not rel.size:
        return np.zeros(0, np.int64)
    near = np.flatnonzero((rel >= pages[0]) & (rel <= pages[-1]) & (wt > ticks[0]))
    rel, wt = rel[near], wt[near]  # (only these can be late: one pass before the search)
    pos = np.minimum(np.searchsorted(pages, rel), pages.size - 1)
    late = (pages[pos] == rel) & (wt > ticks[pos])
    return rel[late]

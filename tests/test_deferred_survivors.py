"""``engine.migration.deferred``'s small helpers pinned by hand and against plain references:
clearing sent pages' bits (``clear_sent``, against clearing them one bit at a time), cutting a
batch's send order into per-slot pieces (``split``), the per-tick counts (``Deferred.add``,
``send_ticks``) and the half-open rank range of a CLEAR before a send (``clears_between``).

The bitmap layout is KVM's (``KVM_GET_DIRTY_LOG``: bit ``i % 64`` of word ``i // 64`` is page
``i``); the rest is this module's own bookkeeping, so the expected values are worked out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.migration.deferred import Deferred, clear_sent, split

U64 = np.uint64
WORDS = 4  # a 256-page bitmap: first, inner and last words, and a word past the pages


def _bitmap(bits) -> np.ndarray:
    words = np.zeros(WORDS, U64)
    for b in bits:
        words[b >> 6] |= U64(1 << (b & 63))
    return words


def _bits(words: np.ndarray) -> set[int]:
    return {w * 64 + i for w in range(words.size) for i in range(64) if int(words[w]) >> i & 1}


def _cleared_one_by_one(words: np.ndarray, pages) -> set[int]:
    return _bits(words) - set(pages)


# (first page, last page + 1) of the sent run: word edges on both sides of each boundary
RUNS = [
    (a, b)
    for a in (0, 1, 63, 64, 65, 127, 128, 130)
    for b in (a + 1, a + 2, 64, 65, 127, 128, 129, 192, 255, 256)
    if b > a
]


@pytest.mark.parametrize(("a", "b"), RUNS)
def test_clearing_a_collected_run_keeps_every_other_bit(a, b):
    """The sender collects every set bit from its cursor on (``Migration._collect``), so the
    pages are a whole run of set bits [a, b); the bits around it, in the run's first and last
    words and beyond, stay set."""
    outside = [p for p in (0, a - 1, a - 2, b, b + 1, 63, 64, 191, 192, 255) if 0 <= p < 256]
    outside = [p for p in outside if not a <= p < b]
    pages = np.arange(a, b, dtype=np.int64)
    words = _bitmap([*outside, *range(a, b)])
    want = _cleared_one_by_one(words, pages)
    clear_sent(words, pages)
    assert _bits(words) == want


@pytest.mark.parametrize(("a", "b"), RUNS)
def test_clearing_pages_that_skip_a_set_bit_keeps_it(a, b):
    """Pages that are not every set bit of their span (a bit in the middle was not sent, or
    was set again after the collection) are cleared bit by bit: the unsent bit stays."""
    if b - a < 3:
        pytest.skip("needs a page in the middle")
    mid = (a + b) // 2
    pages = np.array([p for p in range(a, b) if p != mid], np.int64)
    words = _bitmap(range(a, b))
    clear_sent(words, pages)
    assert _bits(words) == {mid}


def test_random_sends_against_clearing_bit_by_bit():
    """Random bitmaps and random sets of their set bits: every set bit of a span (the sender's
    collection) or some of them (clear_sent's precondition: each page's bit is set)."""
    rng = np.random.default_rng(19)
    for _ in range(2000):
        words = rng.integers(0, 2**63, WORDS, dtype=np.int64).astype(U64)
        words ^= rng.integers(0, 2**63, WORDS, dtype=np.int64).astype(U64) << U64(1)
        a = int(rng.integers(0, 256))
        b = int(rng.integers(a + 1, 257))
        kind = int(rng.integers(0, 2))
        pages = np.array(sorted(p for p in _bits(words) if a <= p < b), np.int64)
        if kind == 1:  # some of them
            pages = pages[rng.random(pages.size) < 0.7]
        want = _cleared_one_by_one(words, pages)
        clear_sent(words, pages)
        assert _bits(words) == want, (a, b, kind)


def test_clearing_no_pages_changes_nothing():
    words = _bitmap([0, 5, 200])
    clear_sent(words, np.zeros(0, np.int64))
    assert _bits(words) == {0, 5, 200}


def _pages(*sizes):
    """Slots 0, 1, 2, ... with ``sizes`` pages each (offsets 0..size-1)."""
    return [(sid, np.arange(n, dtype=np.int64)) for sid, n in enumerate(sizes)]


def _shown(pieces):
    return [(sid, p.tolist()) for sid, p in pieces]


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [
        (0, 12, [(0, [0, 1, 2, 3, 4]), (1, [0, 1, 2]), (2, [0, 1, 2, 3])]),
        (0, 5, [(0, [0, 1, 2, 3, 4])]),  # ends at slot 0's end: no empty piece of slot 1
        (5, 7, [(1, [0, 1])]),  # begins at slot 1's start: no empty piece of slot 0
        (6, 10, [(1, [1, 2]), (2, [0, 1])]),  # ranks 6.. are slot 1's offset 1..
        (9, 11, [(2, [1, 2])]),  # slot 2 starts at rank 5 + 3 = 8
        (4, 9, [(0, [4]), (1, [0, 1, 2]), (2, [0])]),
        (12, 12, []),
        (7, 7, []),
    ],
)
def test_split_cuts_send_ranks_into_per_slot_pieces(lo, hi, want):
    """Slots of 5, 3 and 4 pages in send order hold ranks [0, 5), [5, 8) and [8, 12)."""
    assert _shown(split(_pages(5, 3, 4), lo, hi)) == want


def test_sends_in_one_tick_add_up():
    d = Deferred(cursor=(0, 0))
    d.add(3, 2)
    d.add(3, 5)
    d.add(4, 1)
    d.add(6, 0)
    d.add(6, 2)
    assert (d.ticks, d.counts, d.sent) == ([3, 4, 6], [7, 1, 2], 10)
    got = d.send_ticks()
    assert got.tolist() == [3] * 7 + [4] + [6] * 2 and got.dtype == np.int64


def test_no_sends_give_an_empty_int64_array():
    got = Deferred(cursor=(0, 0)).send_ticks()
    assert got.size == 0 and got.dtype == np.int64


@pytest.mark.parametrize(
    ("lo", "hi", "want"),
    [(0, 5, False), (0, 6, True), (5, 6, True), (6, 20, False), (19, 20, False), (6, 21, True)],
)
def test_a_clear_between_send_ranks_is_half_open(lo, hi, want):
    """A CLEAR due at rank r falls in [lo, hi) when lo <= r < hi (chunks beginning at 5, 20)."""
    d = Deferred(cursor=(0, 0), clear_at=np.array([5, 20], np.int64))
    assert d.clears_between(lo, hi) is want

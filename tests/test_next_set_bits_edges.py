"""``dirtylog.next_set_bits`` at the edges its chunked scan has: a start far into a dense
bitmap (the first chunk is cut to the bits wanted), non-zero words two words apart (not one
run), and a range ending at a word's first bits.  Expected values by hand, and from a plain
reference: every bit unpacked, the offsets in [lo, hi), the first ``limit``."""

from __future__ import annotations

import numpy as np
import pytest

from engine.kvm import dirtylog as DL


def plain(words: np.ndarray, lo: int, hi: int, limit: int) -> list[int]:
    bits = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")
    offsets = np.flatnonzero(bits)
    return offsets[(offsets >= lo) & (offsets < hi)][:limit].tolist()


DENSE = np.full(2000, 2**64 - 1, np.uint64)
HI = 64 * 1500


@pytest.mark.parametrize("limit", [1, 10, 100, 64 * 300])
@pytest.mark.parametrize("lo", [64 * 1000, 64 * 1000 + 5, 64 * 1300 + 63])
def test_a_start_deep_in_a_dense_bitmap_gives_the_offsets_from_there(lo, limit):
    """Every bit set: the first ``limit`` offsets from lo, up to hi."""
    want = list(range(lo, min(lo + limit, HI)))
    assert DL.next_set_bits(DENSE, lo, HI, limit).tolist() == want == plain(DENSE, lo, HI, limit)


@pytest.mark.parametrize(
    ("words", "want"),
    [
        ([1, 0, 0, 1], [0, 192]),  # two zero words between: word 3's bit is offset 192
        ([1, 0, 1], [0, 128]),
        ([0, 2, 0, 0, 4], [65, 258]),
        ([1, 1, 1], [0, 64, 128]),  # one run
    ],
)
def test_words_with_gaps_between_them_keep_their_own_offsets(words, want):
    """A limit of 1000 bits: the first chunk (1000 // 64 + 2 = 17 words) holds them all."""
    w = np.array(words, np.uint64)
    got = DL.next_set_bits(w, 0, 64 * len(words), 1000)
    assert got.tolist() == want == plain(w, 0, 320, 1000)


@pytest.mark.parametrize(("hi", "want"), [(65, [0]), (66, [0, 65]), (64, [0])])
def test_a_range_ending_at_a_word_s_bit_leaves_it_out(hi, want):
    """Word 0 has offset 0, word 1 has offset 65: [0, 65) holds only 0, [0, 66) both."""
    w = np.array([1, 2], np.uint64)
    assert DL.next_set_bits(w, 0, hi, 10).tolist() == want == plain(w, 0, hi, 10)

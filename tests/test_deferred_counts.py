"""The counted sender's page counts (``engine.migration.deferred``), against exact arithmetic.

QEMU 10.1 checks the rate limit before each page (migration/ram.c:ram_save_iterate loops
``while ((ret = migration_rate_exceeded(f)) == 0 || ...)``; migration/migration-stats.c:
migration_rate_exceeded is ``rate_limit_used > rate_limit_max``), so with ``budget`` bytes of
the window left, page i (0-based, every page ``cost`` bytes) starts while ``i * cost <=
budget``: ``window_count`` is the number of such i, floor(budget / cost) + 1, and none for a
negative budget (already exceeded).  The link's time instead bounds the bytes: ``link_count``
is the largest n with ``n * cost <= budget``, floor(budget / cost).  The expected values come
from ``fractions.Fraction`` (exact), never from float division.  Both promise the exact
comparison for any budget: above 2**53 bytes (beyond a valid session's windows, whose
max-bandwidth is at most 1e13 B/s) ``budget // cost`` in floats is off by one or more, which
their correcting loops undo; those budgets pin the loops.
"""

from __future__ import annotations

import math
import sys
from fractions import Fraction

import pytest

from engine.migration.deferred import link_count, window_count

COST = 4096 + 8  # a page and its header (migration/ram.c: save_page_header, 8 bytes)

# (budget, cost): exact boundaries, then floats whose float floor division is off
CASES = [
    (0.0, COST),
    (0.5, COST),
    (COST - 1.0, COST),
    (float(COST), COST),
    (COST + 1.0, COST),
    (3.0 * COST - 0.5, COST),
    (3.0 * COST, COST),
    (3.0 * COST + 0.5, COST),
    (1e6, 1),
    (9.616460537288186e16, 5),  # float // is one too high
    (1.9132054395516128e17, 17),  # one too high
    (4.755447486436321e17, 3),  # ten too low
    (1.8278211037414907e18, 41),  # four too high
    (3.4573845826970737e18, 31),  # five too low
]


def _exact(budget: float, cost: int) -> int:
    return math.floor(Fraction(budget) / cost)


@pytest.mark.parametrize(("budget", "cost"), CASES)
def test_window_count_is_the_pages_starting_within_the_budget(budget, cost):
    assert window_count(budget, cost) == _exact(budget, cost) + 1


@pytest.mark.parametrize(("budget", "cost"), CASES)
def test_link_count_is_the_pages_fitting_in_the_budget(budget, cost):
    assert link_count(budget, cost) == _exact(budget, cost)


@pytest.mark.parametrize("budget", [-1e-9, -0.5, -1.0, -float(COST)])
def test_an_exceeded_window_starts_no_page(budget):
    assert window_count(budget, COST) == 0
    assert link_count(budget, COST) == 0


def test_no_rate_limit_starts_every_page():
    assert window_count(math.inf, COST) == sys.maxsize

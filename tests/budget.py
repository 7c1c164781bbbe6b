"""The suite's time budget (5 minutes on 2 cores): how much the costly tests do by default and
with ``pytest --slow`` (tests/conftest.py sets DIRTYLOG_SLOW_TESTS before test modules load)."""

from __future__ import annotations

import os

SLOW = bool(os.environ.get("DIRTYLOG_SLOW_TESTS"))


def examples(fast: int, slow: int) -> int:
    """A costly hypothesis test's example count: ``fast`` by default, ``slow`` with --slow."""
    return slow if SLOW else fast

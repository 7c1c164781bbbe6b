"""One point of a sweep: run its session exactly as ``dirtylog run`` does and make its row.

``run_point`` is what a Dask worker executes.  It builds the simulation the way
``dirtylog run`` does (``track_last_sent=False``, no harvest records) and runs it to the end,
so the row's outcome, rounds, downtime, total time, bytes, throttle and verification are the
ones ``dirtylog run`` prints for the point's session file.  ``result_sha256`` is the digest of
the whole result without its measured times (``without_measured``): equal digests mean equal
runs, round by round.  The engine's wall time is measured on the worker and labelled so.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from engine.migration.precopy import without_measured
from engine.migration.simulation import Simulation
from engine.sweep.grid import canonical_digest
from engine.util.errors import DirtylogError

RESULT_COLUMNS = (
    "outcome",
    "reason",
    "rounds",
    "downtime_ms",
    "total_time_ms",
    "transferred_bytes",
    "throttle_pct",
    "mismatches",
    "wall_s_measured",
    "result_sha256",
)
"""What a row says after the point's varied values (units and kinds: rows.COLUMN_NOTES)."""


def run_point(session: dict[str, Any]) -> dict[str, Any]:
    """Run one point's session (a dict whose trace paths are absolute) and return its result
    columns.  Input the engine refuses at start or while running gives outcome ``error`` with
    the engine's sentence as the reason; a bug raises."""
    t0 = time.perf_counter()
    try:
        sim = Simulation.from_dict(session, None, track_last_sent=False)
        result = sim.run()
    except (DirtylogError, MemoryError) as exc:
        reason = str(exc) if isinstance(exc, DirtylogError) else "not enough memory for this run"
        row = dict.fromkeys(RESULT_COLUMNS, "")
        row.update(outcome="error", reason=reason)
        row["wall_s_measured"] = round(time.perf_counter() - t0, 6)
        return row
    row = result_columns(result)
    row["wall_s_measured"] = round(time.perf_counter() - t0, 6)
    return row


def result_columns(result: dict[str, Any]) -> dict[str, Any]:
    """The row columns of a ``Simulation.run()`` result (the dict ``dirtylog run --json``
    writes); ``wall_s_measured`` is left empty (the caller measures it)."""
    ver = result.get("verification") or {}
    return {
        "outcome": result.get("outcome", "no-migration"),
        "reason": result.get("reason") or "",
        "rounds": result.get("rounds_count", 0),
        "downtime_ms": result.get("downtime_ms", 0.0),
        "total_time_ms": result.get("total_time_ms", 0.0),
        "transferred_bytes": result.get("transferred_bytes", 0),
        "throttle_pct": result.get("throttle_pct", 0),
        "mismatches": ver.get("mismatches", 0),
        "wall_s_measured": "",
        "result_sha256": canonical_digest(_plain(without_measured(_with_rounds(result)))),
    }


def _with_rounds(result: dict[str, Any]) -> dict[str, Any]:
    return result if "rounds" in result else {**result, "rounds": []}


def _plain(o: Any) -> Any:
    """numpy scalars and arrays as Python values, tuples as lists (what JSON round-trips)."""
    if isinstance(o, dict):
        return {str(k): _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return _plain(o.tolist())
    return o

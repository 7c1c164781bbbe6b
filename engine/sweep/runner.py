"""Run a sweep's points on a Dask client and hand back each row as it finishes.

Dask does the scheduling, the placement on workers and the rescheduling of a point whose worker
died; this module only submits one task per point (``client.map`` over ``run_point``), turns
each finished task into its row (``as_completed``) and cancels what is left when asked
(``cancel``, from any thread) or interrupted (Ctrl-C in the caller's thread).  Rows finished
before a cancel are kept: the caller has already received them.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

from engine.sweep.grid import Point
from engine.sweep.point import RESULT_COLUMNS, run_point

Row = dict[str, Any]


def point_row(point: Point, result: dict[str, Any]) -> Row:
    """A row: the point's index and values, its result columns, its session digest."""
    return {"point": point.index, **dict(point.values), **result, "session_sha256": point.digest}


def _died_row(exc: BaseException) -> dict[str, Any]:
    row = dict.fromkeys(RESULT_COLUMNS, "")
    row.update(outcome="error", reason=f"the worker running this point died ({exc})")
    return row


class SweepRun:
    """One pass over ``points`` on ``client``; ``on_row(row)`` is called in the calling
    thread of ``run`` for every finished point, in the order they finish."""

    def __init__(self, client: Any, points: list[Point], on_row: Callable[[Row], None]) -> None:
        self.client = client
        self.points = points
        self.on_row = on_row
        self._cancel = threading.Event()
        self._futures: list[Any] = []
        self._lock = threading.Lock()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Stop: the points not finished are cancelled on the cluster; ``run`` returns."""
        self._cancel.set()
        with self._lock:
            futures = list(self._futures)
        if futures:
            self.client.cancel(futures)

    def run(self) -> bool:
        """Submit every point and wait for them; True when all finished, False when cancelled.
        An exception a point raised (an engine bug) is re-raised here after cancelling the
        rest; so is KeyboardInterrupt."""
        from distributed import as_completed
        from distributed.scheduler import KilledWorker

        tag = uuid.uuid4().hex[:8]
        keys = [f"dirtylog-point-{p.index}-{tag}" for p in self.points]
        by_key = dict(zip(keys, self.points, strict=True))
        with self._lock:
            if self._cancel.is_set():
                return False
            self._futures = self.client.map(
                run_point, [p.session for p in self.points], key=keys, pure=False
            )
        try:
            for fut in as_completed(self._futures):
                if self._cancel.is_set():
                    return False
                if fut.cancelled():
                    continue
                try:
                    result = fut.result()
                except KilledWorker as exc:
                    result = _died_row(exc)
                self.on_row(point_row(by_key[fut.key], result))
            return not self._cancel.is_set()
        finally:
            pending = [f for f in self._futures if not f.done()]
            if pending:
                self.client.cancel(pending)

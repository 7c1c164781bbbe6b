"""The worker that runs the engine off the GUI thread.

A parentless QObject moved to its own QThread (pyqtgraph's and napari's pattern). While running
it advances the simulation towards ``speed × wall time elapsed`` (so "1×" is one simulated
second per wall second), in slices of about 20 ms of work, and hands the GUI an immutable
``Frame`` (snapshot + heat-map image + what the last harvest touched + the hovered page + the
speed achieved) at most 30 times a second. The image is read from a max-pyramid of the shown
layer that follows the pages the run touched, so a frame costs what the screen shows, not what
the guest holds (a 1 TiB guest has 268 M pages). Its timer runs only while running, so a paused
worker costs nothing. A step to the next harvest (Step round, scripted rounds) runs as fast as
possible in the same slices, sending frames as it goes, and Pause cancels it. It renders no
frame the GUI has not caught up with (taken the previous one). The GUI only ever sends
requests through queued signals; it never calls into the simulation or waits for it. Edits are
applied between slices. An engine exception pauses the run and is reported, never raised.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PySide6.QtCore import (
    QMetaObject,
    QObject,
    Qt,
    QThread,
    QTimer,
    Signal,
    Slot,
)

from app.effective import effective_settings
from app.heatmap_colours import coloured
from app.heatmap_data import HeatImage, render, render_detail
from app.heatmap_pyramid import (
    ArrayPyramid,
    MaxPyramid,
    SimLayerPyramid,
    kept_levels,
    overview_factor,
)
from app.page_info import describe_page
from engine.kvm.dirtylog import next_set_bits
from engine.migration.simulation import Simulation
from engine.migration.snapshot import Snapshot
from engine.util.errors import DirtylogError, clip

FRAME_INTERVAL_S = 1 / 30
UNSHOWN_WAIT_S = 0.5  # a frame not yet shown holds back the next one at most this long
SLICE_BUDGET_S = 0.02
MAX_BATCH = 256  # ticks per Simulation.advance at most
MAX_TOUCHED = 50_000  # leaves highlighted in the tree after a harvest
MAX_LAG_S = 0.25  # behind the wall clock by more than this: stop catching up (show the speed)
ACHIEVED_WINDOW_S = 2.0  # the achieved speed is measured over this much wall time


@dataclass(frozen=True)
class Frame:
    snapshot: Snapshot
    image: HeatImage | None
    detail: HeatImage | None = None  # a finer image of the rows the user zoomed into
    touched: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted
    running: bool = False
    finished: bool = False
    stepping: bool = False  # running to a goal (next harvest, N rounds): Pause cancels it
    achieved: float | None = None  # simulated seconds per wall second, over the last 2 s
    hover: str = ""  # the hovered page, described as of this frame
    result: dict | None = None  # the run's result (as ``dirtylog run`` has it) once finished
    settings: dict | None = None  # the settings in effect (after events and edits)
    seq: int = 0  # numbers the worker's frames: the GUI acknowledges the one it has shown


class SimWorker(QObject):
    frame = Signal(object)  # Frame
    error = Signal(str)
    edit_done = Signal(dict, str)  # event, "" on success or the engine's sentence
    running_changed = Signal(bool)

    def __init__(self, sim: Simulation) -> None:
        super().__init__()
        self.sim = sim
        self.running = False
        self.speed = 1.0  # simulated seconds per wall second
        self.mode = "heat"
        self.pages_per_row = 1024
        self.max_cells = 1 << 20
        self._timer: QTimer | None = None
        self._last_frame = 0.0
        self._last_round = -1
        self._touched = np.zeros(0, dtype=np.int64)
        self._run_until_round: int | None = None
        self._anchor = (0.0, 0)  # (wall time, simulated ns) the speed is measured from
        self._samples: deque[tuple[float, int]] = deque()
        self.hover_gfn = -1
        self.heat_top = 0.0  # user-set top of the heat scale (0: the 99th percentile)
        self._result: dict | None = None
        self.detail_rows: tuple[int, int] | None = None
        self.diff: np.ndarray | None = None  # per-page snapshot diff codes (the "diff" mode)
        self._blank_diff = np.zeros(0, np.uint8)  # the diff layer with no snapshots loaded
        self._layers: MaxPyramid | None = None  # the shown layer's max-pyramid
        self._batch_ticks = MAX_BATCH  # ticks per advance (see _advance)
        self._sent = 0  # the last frame's seq
        self.shown = 0  # the seq of the last frame the GUI has shown (Runner.acknowledge)

    # -- lifecycle (in the worker thread) -----------------------------------------------------

    @Slot()
    def setup(self) -> None:
        self._timer = QTimer(self)
        self._timer.setInterval(5)
        self._timer.timeout.connect(self._tick)
        self._emit(force=True)

    def _set_running(self, on: bool) -> None:
        """Start or stop the loop (its timer runs only while running)."""
        self.running = on
        self._samples.clear()
        self._reanchor()
        if self._timer is not None:
            if on:
                self._timer.start()
            else:
                self._timer.stop()
        self.running_changed.emit(on)

    def _reanchor(self) -> None:
        self._anchor = (time.perf_counter(), self.sim.t_ns)

    @Slot()
    def stop(self) -> None:
        """In the worker thread: stop the loop and hand this object back to the GUI thread,
        so nothing of it is left behind in a thread that is about to end."""
        self.running = False
        if self._timer is not None:
            self._timer.stop()
            self._timer.deleteLater()
            self._timer = None
        # (the worker object stays in its finished thread; it is deleted with the Runner)

    # -- requests from the GUI ----------------------------------------------------------------

    @Slot(bool)
    def set_running(self, on: bool) -> None:
        """Start or pause; pausing also cancels a step that is still running."""
        if on and self.sim.finished:
            on = False
        self._run_until_round = None
        self._set_running(on)
        self._emit(force=True)

    @Slot(int)
    def run_rounds(self, n: int) -> None:
        """Run as fast as possible until ``n`` more rounds are closed (a round closes at a
        harvest; without a migration: ``n`` simulated seconds), then pause."""
        if self.sim.finished:
            self._emit(force=True)
            return
        m = self.sim.migration
        done = len(m.rounds) if m else self.sim.t_ns // 1_000_000_000
        self._run_until_round = done + n
        self._set_running(True)

    @Slot()
    def step_tick(self) -> None:
        self._guarded(self.sim.step_tick)
        self._reanchor()
        self._emit(force=True)

    @Slot()
    def step_round(self) -> None:
        """To the next harvest (or the end): run_rounds(1), with frames and cancellable."""
        self.run_rounds(1)

    @Slot(float)
    def set_speed(self, speed: float) -> None:
        self.speed = max(1e-3, float(speed))
        self._samples.clear()
        self._reanchor()

    @Slot(float)
    def set_heat_top(self, top: float) -> None:
        self.heat_top = max(0.0, float(top))
        self._emit(force=True)

    @Slot(int)
    def set_hover(self, gfn: int) -> None:
        """The page under the mouse (-1: none); each frame describes it as of that frame."""
        self.hover_gfn = int(gfn)
        if not self.running:
            self._emit(force=True)

    @Slot(str, int)
    def set_view(self, mode: str, pages_per_row: int) -> None:
        self.mode = mode
        self.pages_per_row = max(16, int(pages_per_row))
        self._emit(force=True)

    @Slot(object)
    def set_diff(self, layer: np.ndarray | None) -> None:
        self.diff = layer
        self._emit(force=True)

    @Slot(int, int)
    def set_detail(self, first_row: int, last_row: int) -> None:
        """Refine rows [first_row, last_row) of the overview (-1: no refinement)."""
        self.detail_rows = None if first_row < 0 else (first_row, last_row)
        self._emit(force=True)

    @Slot(dict)
    def apply_edit(self, event: dict[str, Any]) -> None:
        try:
            self.sim.apply_edit(event)
        except DirtylogError as exc:
            self.edit_done.emit(event, str(exc))
        except Exception as exc:  # an engine bug: report it, keep the app alive
            self.edit_done.emit(event, f"internal error: {clip(str(exc), 200)}")
            self.error.emit(_error_text())
        else:
            self.edit_done.emit(event, "")
        self._emit(force=True)

    # -- the loop -----------------------------------------------------------------------------

    def _tick(self) -> None:
        if not self.running:
            return
        now = time.perf_counter()
        budget_end = now + SLICE_BUDGET_S
        target = self._target(now)
        while self.running and self.sim.t_ns < target and time.perf_counter() < budget_end:
            if not self._guarded(lambda: self._advance(target)):
                break
            if self._reached_round_goal():
                break
        self._sample()
        if self.sim.finished or self._reached_round_goal():
            self._run_until_round = None
            self._set_running(False)
        # a run that stopped here (finished, goal reached, engine error) sends its last frame
        # now: no paused tick sends another
        self._emit(force=not self.running)

    def _target(self, now: float) -> float:
        """Where simulated time should be now: speed × wall time since the anchor.  A goal
        (next harvest, N rounds) runs as fast as possible.  When the engine falls more than
        MAX_LAG_S of wall time behind, the anchor moves up: it does not try to catch up in a
        burst, and the achieved speed shows it is slower.  Without a migration the goal is
        a simulated time, so the batches stop on it (not up to MAX_BATCH ticks past it, as
        far as the last batch's wall-time sizing let them run)."""
        if self._run_until_round is not None:
            if self.sim.migration is None:
                return float(self._run_until_round * 1_000_000_000)
            return float("inf")
        wall0, sim0 = self._anchor
        target = sim0 + self.speed * (now - wall0) * 1e9
        if target - self.sim.t_ns > self.speed * MAX_LAG_S * 1e9:
            self._anchor = (now - MAX_LAG_S, self.sim.t_ns)
            target = self.sim.t_ns + self.speed * MAX_LAG_S * 1e9
        return target

    def _sample(self) -> None:
        now = time.perf_counter()
        self._samples.append((now, self.sim.t_ns))
        while len(self._samples) > 2 and now - self._samples[1][0] > ACHIEVED_WINDOW_S:
            self._samples.popleft()

    def achieved(self) -> float | None:
        """Simulated seconds per wall second over the last ACHIEVED_WINDOW_S (None: too soon)."""
        if len(self._samples) < 2:
            return None
        (w0, t0), (w1, t1) = self._samples[0], self._samples[-1]
        return (t1 - t0) / 1e9 / (w1 - w0) if w1 - w0 >= 0.2 else None

    def _advance(self, target: float) -> None:
        """One batch of ticks, sized to about SLICE_BUDGET_S by the last batch's cost per
        tick: a huge guest (a 1 TiB session can take 50 ms a tick) still hands over a frame
        every few ticks instead of vanishing into a 256-tick batch.  Any batch size gives
        the same timeline (Simulation.advance)."""
        t0 = time.perf_counter()
        ticks = self.sim.advance(self._max_ticks(target))
        per_tick = (time.perf_counter() - t0) / max(1, ticks)
        self._batch_ticks = int(max(1, min(MAX_BATCH, SLICE_BUDGET_S / max(per_tick, 1e-9))))

    def _max_ticks(self, target: float) -> int:
        want = (target - self.sim.t_ns) // self.sim.tick_ns
        return int(max(1, min(MAX_BATCH, self._batch_ticks, want)))

    def _reached_round_goal(self) -> bool:
        """Rounds closed (or, in a session without a migration, simulated seconds)."""
        if self._run_until_round is None:
            return False
        m = self.sim.migration
        if m is None:
            return self.sim.t_ns >= self._run_until_round * 1_000_000_000 or self.sim.finished
        return len(m.rounds) >= self._run_until_round or self.sim.finished

    def _guarded(self, fn) -> bool:
        try:
            fn()
            return True
        except Exception:
            self._run_until_round = None
            self._set_running(False)
            self.error.emit(_error_text())
            return False

    def _emit(self, force: bool = False) -> None:
        """Send a frame, at most one per FRAME_INTERVAL_S unless ``force``, and none while the
        GUI has not shown the previous one (for up to UNSHOWN_WAIT_S): a frame the GUI would
        drop costs the worker its rendering and the GUI the GIL the worker holds meanwhile."""
        now = time.perf_counter()
        waiting = self._sent > self.shown and now - self._last_frame < UNSHOWN_WAIT_S
        if not force and (waiting or now - self._last_frame < FRAME_INTERVAL_S):
            return
        self._last_frame = now
        self._sent += 1
        try:
            # the frame carries no layer: the GUI draws the image rendered here, so the
            # worker keeps refilling one buffer instead of handing over a fresh array
            snap = self.sim.snapshot()
            factor = overview_factor(snap.total_pages, self.max_cells)
            layer = self._pyramid(snap.total_pages, kept_levels(factor))
            # heat is drawn from the simulation's array and its decay factor
            gain = self.sim.heat_state()[1] if self.mode == "heat" else 1.0
            top = self.heat_top if self.mode == "heat" and self.heat_top > 0 else None
            image = render(layer, self.mode, self.pages_per_row, self.max_cells, factor, gain, top)
            detail = None
            if self.detail_rows is not None:
                first, last = self.detail_rows
                detail = coloured(
                    render_detail(layer, self.mode, image, first, last, self.max_cells, gain)
                )
            image = coloured(image)  # (the GUI thread only wraps the colours in a QImage)
            self._update_touched()
            if self.sim.finished and self._result is None:
                self._result = self.sim.result()
            hover = ""
            if self.hover_gfn >= 0:
                hover = describe_page(self.sim, self.hover_gfn, self.mode, layer, gain)
            frame = Frame(
                snap,
                image,
                detail,
                self._touched,
                self.running,
                self.sim.finished,
                self._run_until_round is not None,
                self.achieved() if self.running else None,
                hover,
                self._result,
                effective_settings(self.sim),
                self._sent,
            )
            self.frame.emit(frame)
        except Exception:
            self._run_until_round = None
            self._set_running(False)
            self.error.emit(_error_text())

    def _pyramid(self, total: int, levels: tuple[int, int]) -> MaxPyramid:
        """The shown layer's max-pyramid, brought up to date: a frame reads the cells it
        draws from it instead of folding every page (see app/heatmap_pyramid.py)."""
        p = self._layers
        if self.mode == "diff":
            diff = self.diff if self.diff is not None else self._no_diff(total)
            if not isinstance(p, ArrayPyramid) or p.layer is not diff or p.kept != levels:
                self.sim.changes = None  # nothing follows the simulation's changes now
                p = self._layers = ArrayPyramid(diff, *levels)
            return p
        if not isinstance(p, SimLayerPyramid) or p.name != self.mode or p.kept != levels:
            p = self._layers = SimLayerPyramid(self.sim, self.mode, *levels)
        p.refresh()
        return p

    def _no_diff(self, total: int) -> np.ndarray:
        """The diff layer before two snapshots are loaded: all zero, one array per guest
        size, so that the pyramid built over it is reused from frame to frame."""
        if self._blank_diff.size != total:
            self._blank_diff = np.zeros(total, np.uint8)
        return self._blank_diff

    def _update_touched(self) -> None:
        """Leaf positions of the pages the last harvest reported (for the tree's highlight)."""
        m = self.sim.migration
        if m is None or m.round == self._last_round:
            return
        self._last_round = m.round
        gfns = []
        for sid, words in m.last_harvest.items():
            st = self.sim.vm.slots.get(sid)
            if st is None:
                continue
            pages = next_set_bits(words, 0, st.slot.npages, MAX_TOUCHED)
            gfns.append(pages + st.slot.base_gfn)
        if not gfns:
            self._touched = np.zeros(0, dtype=np.int64)
            return
        g = np.concatenate(gfns)[:MAX_TOUCHED]
        _, pos, _ = self.sim.pgt.lookup(g << self.sim.vm.page_shift)
        self._touched = np.sort(pos)  # a sorted array: no Python set of thousands of ints


class Runner(QObject):
    """GUI-side handle: owns the thread, forwards requests as queued signals."""

    req_running = Signal(bool)
    req_step_tick = Signal()
    req_step_round = Signal()
    req_speed = Signal(float)
    req_view = Signal(str, int)
    req_edit = Signal(dict)
    req_rounds = Signal(int)
    req_detail = Signal(int, int)
    req_diff = Signal(object)
    req_hover = Signal(int)
    req_heat_top = Signal(float)

    def __init__(self, sim: Simulation, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.sim = sim
        self.thread = QThread()
        self.worker = SimWorker(sim)
        self.worker.moveToThread(self.thread)
        self.thread.started.connect(self.worker.setup)
        self.req_running.connect(self.worker.set_running)
        self.req_step_tick.connect(self.worker.step_tick)
        self.req_step_round.connect(self.worker.step_round)
        self.req_speed.connect(self.worker.set_speed)
        self.req_view.connect(self.worker.set_view)
        self.req_edit.connect(self.worker.apply_edit)
        self.req_rounds.connect(self.worker.run_rounds)
        self.req_detail.connect(self.worker.set_detail)
        self.req_diff.connect(self.worker.set_diff)
        self.req_hover.connect(self.worker.set_hover)
        self.req_heat_top.connect(self.worker.set_heat_top)
        self.thread.start()

    def acknowledge(self, frame: Frame) -> None:
        """The GUI has taken ``frame`` (its paint is queued): the worker may render the next,
        so building a frame overlaps painting the last, and no frame waits for the GUI
        behind another (an int written under the GIL; the worker only reads it)."""
        self.worker.shown = max(self.worker.shown, frame.seq)

    def shutdown(self) -> None:
        """Stop the loop and join the thread (called on close and before a reset)."""
        if not self.thread.isRunning():
            return
        QMetaObject.invokeMethod(self.worker, "stop", Qt.ConnectionType.BlockingQueuedConnection)
        self.thread.quit()
        self.thread.wait(5000)


def _error_text() -> str:
    """The exception being handled as the user sees it: a refusal's own sentence, or one line
    naming an engine bug; the traceback goes to stderr (for a report), never to the window."""
    exc = sys.exc_info()[1]
    if isinstance(exc, DirtylogError):
        return str(exc)
    traceback.print_exc(file=sys.stderr)
    return f"internal error ({type(exc).__name__}: {clip(str(exc), 200)}); details on stderr"

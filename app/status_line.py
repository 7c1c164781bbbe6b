"""The status bar: simulated time, the speed chosen and achieved, the round (as the Rounds
table numbers it), what is left, the dirty rate, the throttle, the tracking mode and active
strategy, and a busy bar while a step or a load runs (Pause cancels a step)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar

from app.runner import Frame
from engine.util.units import format_bytes

WIDTHS = {  # px, each the longest usual text plus a margin
    "time": 215,  # t = 28.330 s (simulated, the end)
    "speed": 245,  # speed 1× (real time) · achieving 0.99×
    "round": 245,  # round 19 (stop) · done · not-converged
    "remaining": 140,  # remaining 1023.9 MiB
    "rate": 185,  # dirty rate — (no harvest yet)
    "throttle": 95,
    "tracking": 190,
}


def round_text(snap) -> str:
    """The round as the Rounds table shows it: the last row's number, "(stop)" for the
    stop-and-copy, and the round being sent while iterating."""
    rounds = snap.rounds
    if snap.phase == "done" and rounds:
        last = rounds[-1]
        stop = " (stop)" if last.get("stop_and_copy") else ""
        return f"round {last['round']}{stop} · done · {snap.outcome}"
    if snap.phase in ("idle", "setup") or snap.round == 0:
        return f"no round yet · {snap.phase}"
    return f"round {snap.round} · {snap.phase}"


def time_text(snap) -> str:
    """Simulated time; once the migration is over, its end (the guest stopped at the
    switchover and the stop-and-copy took the downtime after it), as the Rounds table's last
    row and the outcome card say."""
    if snap.phase == "done" and snap.rounds:
        return f"t = {snap.rounds[-1]['t_end_ns'] / 1e9:,.3f} s (simulated, the end)"
    return f"t = {snap.t_ns / 1e9:,.3f} s (simulated)"


class StatusLine:
    def __init__(self, bar: QStatusBar) -> None:
        self.labels = {k: QLabel() for k in WIDTHS}
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)  # indeterminate: a step's end is a harvest, not a time
        self.busy.setFixedWidth(110)
        self.busy.setToolTip("Running to the next harvest; Pause (Space) cancels")
        self.busy.hide()
        bar.addWidget(self.busy)
        for key, label in self.labels.items():
            label.setFixedWidth(WIDTHS[key])  # fixed: a new text must not re-lay out the window
            bar.addPermanentWidget(label)
        self.labels["speed"].setToolTip(
            "The chosen speed (simulated seconds per wall second) and the speed achieved over "
            "the last 2 s; when the engine cannot keep up, the achieved one is lower"
        )

    def clear(self) -> None:
        for label in self.labels.values():
            label.setText("")
        self.busy.hide()

    def show(self, frame: Frame, speed_label: str, tracking: str) -> None:
        snap = frame.snapshot
        achieved = "" if frame.achieved is None else f" · achieving {frame.achieved:.2g}×"
        if frame.stepping:
            achieved = " · stepping to the next harvest"
        rate = (
            f"dirty rate {snap.dirty_pages_rate:,.0f} pages/s"
            if snap.rounds
            else "dirty rate — (no harvest yet)"
        )
        texts = {
            "time": time_text(snap),
            "speed": f"speed {speed_label}{achieved}"
            if frame.running
            else ("finished" if frame.finished else "paused"),
            "round": round_text(snap),
            "remaining": "remaining —"
            if snap.phase in ("idle", "setup")
            else f"remaining {format_bytes(snap.remaining_bytes)}",
            "rate": rate,
            "throttle": f"throttle {snap.throttle_pct} %",
            "tracking": tracking,
        }
        for key, text in texts.items():
            if self.labels[key].text() != text:
                self.labels[key].setText(text)
        self.busy.setVisible(frame.stepping)

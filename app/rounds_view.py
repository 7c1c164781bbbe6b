"""The Rounds dock (one row per round, QEMU's names) and the Messages dock."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from PySide6.QtWidgets import QHeaderView, QPlainTextEdit, QTableWidget, QTableWidgetItem

from app.runner import Frame
from engine.util.units import format_bytes

ROUND_COLUMNS = [
    "round (dirty-sync-count)",
    "end (ms)",
    "sent",
    "dirty pages",
    "remaining",
    "exp. downtime (ms)",
    "throttle %",
    "faults",
    "harvest (modelled µs)",
]


class RoundsTable(QTableWidget):
    def __init__(self, parent=None) -> None:
        super().__init__(0, len(ROUND_COLUMNS), parent)
        self.setHorizontalHeaderLabels(ROUND_COLUMNS)
        self.verticalHeader().hide()
        # columns share the dock's width, so headers such as "harvest (modelled µs)" fit
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.extra: tuple[str, Mapping[int, str]] | None = None
        self._rounds: Sequence[Mapping] = ()

    def set_extra_column(self, title: str, by_round: Mapping[int, str]) -> None:
        """One more column, a text per round (e.g. the real-KVM check), kept until reset."""
        self.extra = (title, dict(by_round))
        self.setColumnCount(len(ROUND_COLUMNS) + 1)
        self.setHorizontalHeaderLabels([*ROUND_COLUMNS, title])
        self.fill(self._rounds)

    def fill(self, rounds: Sequence[Mapping]) -> None:
        self._rounds = rounds
        self.setRowCount(len(rounds))
        for i, r in enumerate(rounds):
            vals = [
                str(r["round"]) + (" (stop)" if r.get("stop_and_copy") else ""),
                f"{r['t_end_ns'] / 1e6:,.1f}",
                format_bytes(r["transferred_bytes"]),
                f"{r['dirty_pages']:,}",
                format_bytes(r["remaining_bytes"]),
                f"{r['expected_downtime_ms']:,.1f}",
                str(r["throttle_pct"]),
                f"{r['faults']:,}",
                f"{r['harvest_model_ns'] / 1e3:,.1f}",
            ]
            if self.extra is not None:
                vals.append(self.extra[1].get(r["round"], ""))
            for c, v in enumerate(vals):
                self.setItem(i, c, QTableWidgetItem(v))
        self.scrollToBottom()


class MessagesView(QPlainTextEdit):
    """What the engine and the app report; engine lines arrive with each frame."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self._seen = 0

    def restart(self) -> None:
        self._seen = 0
        self.clear()

    def report(self, text: str) -> None:
        self.appendPlainText(f"[{time.strftime('%H:%M:%S')}] {text}")

    def take_frame(self, frame: Frame) -> None:
        snap = frame.snapshot
        new = snap.messages_total - self._seen
        if new > 0:
            for line in snap.messages[-min(new, len(snap.messages)) :]:
                self.appendPlainText(line)
            self._seen = snap.messages_total

"""The Rounds dock (one row per round, QEMU's names) and the Messages dock."""

from __future__ import annotations

from collections.abc import Mapping

from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QHeaderView,
    QMessageBox,
    QPlainTextEdit,
    QTableWidget,
    QTableWidgetItem,
)

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

EXPECTED_COLUMN = ROUND_COLUMNS.index("exp. downtime (ms)")
EXPECTED_TIP = (
    "QEMU's expected-downtime (query-migrate), modelled: the bytes left dirty by the last sync "
    "÷ the bandwidth measured over the last 100 ms window (the downtime limit until the "
    "dirty-pages-rate is known); the round being sent shows its value now. The actual "
    "downtime (link speed) is on the outcome card."
)


def round_row(r: Mapping) -> list[str]:
    return [
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


class RoundsTable(QTableWidget):
    """Closed rounds, and while a migration iterates, the round being sent (in grey) under
    the same number the status bar shows."""

    def __init__(self, parent=None) -> None:
        super().__init__(0, len(ROUND_COLUMNS), parent)
        self.setHorizontalHeaderLabels(ROUND_COLUMNS)
        self.verticalHeader().hide()
        # columns share the dock's width, so headers such as "harvest (modelled µs)" fit
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        # (the round's header, "round (dirty-sync-count)", is never cut)
        self.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.horizontalHeaderItem(EXPECTED_COLUMN).setToolTip(EXPECTED_TIP)
        self.extra: tuple[str, Mapping[int, str]] | None = None
        self._snap = None

    def set_extra_column(self, title: str, by_round: Mapping[int, str]) -> None:
        """One more column, a text per round (e.g. the real-KVM check), kept until reset."""
        self.extra = (title, dict(by_round))
        self.setColumnCount(len(ROUND_COLUMNS) + 1)
        self.setHorizontalHeaderLabels([*ROUND_COLUMNS, title])
        self.horizontalHeaderItem(EXPECTED_COLUMN).setToolTip(EXPECTED_TIP)
        if self._snap is not None:
            self.fill(self._snap)

    def fill(self, snap) -> None:
        """A snapshot's rounds (and the round being sent), or just a list of rounds."""
        self._snap = snap
        rounds = getattr(snap, "rounds", snap)
        phase = getattr(snap, "phase", "done")
        sending = phase in ("iterating", "stop-and-copy") and snap.round > 0
        self.setRowCount(len(rounds) + sending)
        for i, r in enumerate(rounds):
            vals = round_row(r)
            if self.extra is not None:
                vals.append(self.extra[1].get(r["round"], ""))
            for c, v in enumerate(vals):
                self.setItem(i, c, QTableWidgetItem(v))
        if sending:
            label = "stop-and-copy" if snap.phase == "stop-and-copy" else "sending…"
            vals = [f"{snap.round} ({label})", "—", "", "", format_bytes(snap.remaining_bytes)]
            vals.append(f"{snap.expected_downtime_ms:,.1f}")  # EXPECTED_COLUMN, as of now
            for c in range(len(ROUND_COLUMNS)):
                item = QTableWidgetItem(vals[c] if c < len(vals) else "")
                item.setForeground(QColor(140, 140, 140))
                self.setItem(len(rounds), c, item)
        self.scrollToBottom()


class MessagesView(QPlainTextEdit):
    """What the engine and the app report, every line stamped with the simulated time."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setReadOnly(True)
        self._seen = 0
        self.t_ns = 0
        self.last_error = ""

    def restart(self) -> None:
        self._seen = 0
        self.t_ns = 0
        self.clear()

    def report(self, text: str) -> None:
        self.appendPlainText(f"[{self.t_ns / 1e6:,.1f} ms] {text}")

    def report_error(self, summary: str, details: str) -> None:
        """One line (the exception's last line); the traceback behind Help → Last engine
        error (a "Show Details" toggle)."""
        self.last_error = details
        last = (details.strip().splitlines() or [""])[-1]
        self.report(f"{summary}: {last} (details: Help → Last engine error)")

    def show_last_error(self) -> None:
        box = QMessageBox(self)
        box.setWindowTitle("Last engine error")
        box.setText("The last engine error" if self.last_error else "No engine error so far.")
        if self.last_error:
            box.setDetailedText(self.last_error)
        box.exec()

    def take_frame(self, frame: Frame) -> None:
        snap = frame.snapshot
        self.t_ns = snap.t_ns
        new = snap.messages_total - self._seen
        if new > 0:
            for line in snap.messages[-min(new, len(snap.messages)) :]:
                self.appendPlainText(line)
            self._seen = snap.messages_total

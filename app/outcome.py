"""The outcome card: when a migration ends, what ``dirtylog run`` prints, on screen.

Downtime against the limit, total time, bytes sent, rounds (and QEMU's dirty-sync-count) and
the verification of the destination; the lines come from ``engine.cli.run.outcome_lines``,
so the app and the command line never disagree on a number or its wording.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtWidgets import QFrame, QLabel, QVBoxLayout

from engine.cli.run import outcome_lines

GOOD = "background: #1f3d2b; color: #e8f5e9; border: 1px solid #4caf50; border-radius: 4px;"
BAD = "background: #4a1f1f; color: #ffebee; border: 1px solid #e57373; border-radius: 4px;"


class OutcomeCard(QFrame):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.title = QLabel()
        self.body = QLabel()
        self.body.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 4, 8, 4)
        layout.setSpacing(2)
        layout.addWidget(self.title)
        layout.addWidget(self.body)
        self.result: dict[str, Any] | None = None
        self.hide()

    def clear(self) -> None:
        self.result = None
        self.hide()

    def show_result(self, result: dict[str, Any], downtime_limit_ms: float) -> None:
        """Show a finished run's result (once: the same result is not redrawn)."""
        if result is self.result:
            return
        self.result = result
        lines = outcome_lines(result, downtime_limit_ms)
        ver = result.get("verification", {})
        ok = (
            result.get("outcome") == "completed"
            and ver.get("mismatches", 0) == 0
            and result.get("downtime_ms", 0) <= downtime_limit_ms
        )
        self.setStyleSheet(f"QFrame {{ {GOOD if ok else BAD} }} QLabel {{ border: none; }}")
        self.title.setText(f"<b>Migration finished — {result.get('outcome')}</b> (simulated)")
        self.body.setText("<br>".join(lines[1:] + [lines[0]]))
        self.show()

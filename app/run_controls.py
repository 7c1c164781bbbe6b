"""The Run controls toolbar: start/pause, step, reset, the speed and what the heat map shows."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QWidget,
)

from app.heatmap_data import MODE_LABELS, MODES

# simulated seconds per wall second
SPEEDS = [
    ("0.1×", 0.1),
    ("0.5×", 0.5),
    ("1× (real time)", 1.0),
    ("2×", 2.0),
    ("5×", 5.0),
    ("20×", 20.0),
    ("as fast as possible", 1e6),
]
DEFAULT_SPEED = 2  # 1× (real time)
TICK_TIP = "Advance one tick (N)"
ROUND_TIP = "Run to the next harvest (R): the end of the current round; Pause cancels it"


class RunControls(QWidget):
    """Buttons and selectors in one row; the main window connects them to the runner."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip("Start or pause (Space); Pause also cancels a step")
        self.tick_btn = QPushButton("Step tick")
        self.tick_btn.setToolTip(TICK_TIP)
        self.round_btn = QPushButton("Step round")
        self.round_btn.setToolTip(ROUND_TIP)
        self.reset_btn = QPushButton("Reset")
        self.reset_btn.setToolTip("Restart the session from its beginning (Ctrl+R)")
        self.speed = QComboBox()
        for label, _ in SPEEDS:
            self.speed.addItem(label)
        self.speed.setCurrentIndex(DEFAULT_SPEED)
        self.speed.setToolTip(
            "Simulated time per wall-clock second (the status bar shows the speed achieved)"
        )
        self.mode = QComboBox()
        for m in MODES:
            self.mode.addItem(MODE_LABELS[m], m)
        self.mode.setToolTip("What the heat map shows")
        self.per_row = QSpinBox()
        self.per_row.setRange(16, 8192)
        self.per_row.setValue(1024)
        self.per_row.setSingleStep(64)
        self.per_row.setToolTip("Cells per heat-map row")
        self.heat_top = QDoubleSpinBox()
        self.heat_top.setRange(0, 1e9)
        self.heat_top.setDecimals(1)
        self.heat_top.setSpecialValueText("auto (99th pct)")
        self.heat_top.setToolTip(
            "Top of the write-heat scale in decayed writes per page; hotter pages saturate. "
            "auto: the 99th percentile of the written pages, so one hot page cannot blacken "
            "the rest"
        )
        row = QHBoxLayout(self)
        row.setContentsMargins(4, 2, 4, 2)
        for b in (self.start_btn, self.tick_btn, self.round_btn, self.reset_btn):
            row.addWidget(b)
        row.addSpacing(12)
        for label, w in (
            ("speed", self.speed),
            ("show", self.mode),
            ("cells/row", self.per_row),
            ("heat top", self.heat_top),
        ):
            row.addWidget(QLabel(label))
            row.addWidget(w)
        row.addStretch(1)

    def show_finished(self, finished: bool) -> None:
        """A finished run cannot be stepped: the step buttons are off and say why."""
        for b, tip in ((self.tick_btn, TICK_TIP), (self.round_btn, ROUND_TIP)):
            b.setEnabled(not finished)
            b.setToolTip(f"{tip}\n(the run has ended: Reset runs it again)" if finished else tip)

    def speed_value(self) -> float:
        return SPEEDS[self.speed.currentIndex()][1]

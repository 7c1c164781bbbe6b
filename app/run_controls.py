"""The Run controls dock: start/pause, step, reset, the speed and what the heat map shows."""

from __future__ import annotations

from PySide6.QtWidgets import (
    QComboBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
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


class RunControls(QWidget):
    """Buttons and selectors; the main window connects them to the runner."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.start_btn = QPushButton("Start")
        self.start_btn.setToolTip("Start or pause the simulation (Space)")
        self.tick_btn = QPushButton("Step tick")
        self.tick_btn.setToolTip("Advance one tick (N)")
        self.round_btn = QPushButton("Step round")
        self.round_btn.setToolTip("Run to the next harvest (R)")
        self.reset_btn = QPushButton("Reset")
        self.reset_btn.setToolTip("Restart the session from its beginning (Ctrl+R)")
        self.speed = QComboBox()
        for label, _ in SPEEDS:
            self.speed.addItem(label)
        self.speed.setCurrentIndex(4)
        self.speed.setToolTip("Simulated time per wall-clock second")
        self.mode = QComboBox()
        for m in MODES:
            self.mode.addItem(MODE_LABELS[m], m)
        self.mode.setToolTip("What the heat map shows")
        self.per_row = QSpinBox()
        self.per_row.setRange(16, 8192)
        self.per_row.setValue(1024)
        self.per_row.setSingleStep(64)
        self.per_row.setToolTip("Cells per heat-map row")
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (self.start_btn, self.tick_btn, self.round_btn, self.reset_btn):
            row1.addWidget(b)
        row2.addWidget(QLabel("speed"))
        row2.addWidget(self.speed)
        row2.addWidget(QLabel("show"))
        row2.addWidget(self.mode, 1)
        row2.addWidget(QLabel("cells/row"))
        row2.addWidget(self.per_row)
        layout = QVBoxLayout(self)
        layout.addLayout(row1)
        layout.addLayout(row2)

    def speed_value(self) -> float:
        return SPEEDS[self.speed.currentIndex()][1]

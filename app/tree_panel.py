"""The Page-table tree dock: the lazy tree and a "go to IPA" field."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QLineEdit, QTreeView, QVBoxLayout, QWidget

from app.tree_model import PageTableModel


class TreePanel(QWidget):
    message = Signal(str)  # a sentence for the Messages dock

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.tree = QTreeView()
        self.tree.setUniformRowHeights(True)
        self.tree.setAlternatingRowColors(True)
        self.goto = QLineEdit()
        self.goto.setPlaceholderText("go to IPA, e.g. 0x40042000")
        self.goto.returnPressed.connect(self.goto_entered)
        self.result = QLabel("")  # where "go to IPA" ended, or why it could not go
        self.result.setWordWrap(True)
        self.model: PageTableModel | None = None
        self.ipa_limit = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.goto)
        layout.addWidget(self.result)
        layout.addWidget(self.tree)

    def set_model(self, model: PageTableModel, ipa_limit: int) -> None:
        self.model, self.ipa_limit = model, ipa_limit
        self.tree.setModel(model)
        self.result.setText("")
        digits = self.fontMetrics().horizontalAdvance("0x0000_0000_0000_0000") + 24
        header = self.fontMetrics().horizontalAdvance("S2AP / AF / DBM / XN") + 24
        for column, width in enumerate((150, 230, 60, digits, header, digits, 40, 40)):
            self.tree.setColumnWidth(column, width)

    def refresh(self, touched) -> None:
        if self.model is not None and self.tree.isVisible():
            self.model.refresh(touched)
            self.tree.viewport().update()

    def select_ipa(self, ipa: int) -> None:
        if self.model is None:
            return
        idx = self.model.index_for_ipa(ipa)
        parent = idx.parent()
        chain = []
        while parent.isValid():
            chain.append(parent)
            parent = parent.parent()
        for p in reversed(chain):
            self.tree.expand(p)
        self.tree.setCurrentIndex(idx)
        self.tree.scrollTo(idx)
        kind = self.model.data(self.model.index(idx.row(), 2, idx.parent()))
        where = self.model.data(self.model.index(idx.row(), 1, idx.parent()))
        self.result.setText(
            f"{ipa:#x}: the walk stops at an invalid entry ({where}): not mapped"
            if kind == "invalid"
            else f"{ipa:#x}: {kind} {where}"
        )

    def goto_entered(self) -> None:
        text = self.goto.text().strip().replace("_", "")
        try:
            ipa = int(text, 0)
        except ValueError:
            self._refuse(f"go to IPA: {text!r} is not an address (use hex like 0x40042000)")
            return
        if self.model is None or not 0 <= ipa < self.ipa_limit:
            self._refuse(f"go to IPA: {ipa:#x} is outside the IPA space")
            return
        self.select_ipa(ipa)

    def _refuse(self, text: str) -> None:
        self.result.setText(f"<span style='color:#e57373'>{text}</span>")
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.message.emit(text)

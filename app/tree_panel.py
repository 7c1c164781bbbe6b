"""The Page-table tree dock: the lazy tree and a "go to IPA" field."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QLineEdit, QTreeView, QVBoxLayout, QWidget

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
        self.model: PageTableModel | None = None
        self.ipa_limit = 0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.goto)
        layout.addWidget(self.tree)

    def set_model(self, model: PageTableModel, ipa_limit: int) -> None:
        self.model, self.ipa_limit = model, ipa_limit
        self.tree.setModel(model)
        self.tree.setColumnWidth(0, 150)
        self.tree.setColumnWidth(1, 230)

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

    def goto_entered(self) -> None:
        text = self.goto.text().strip().replace("_", "")
        try:
            ipa = int(text, 0)
        except ValueError:
            self.message.emit(f"go to IPA: {text!r} is not an address (use hex like 0x40042000)")
            return
        if self.model is None or not 0 <= ipa < self.ipa_limit:
            self.message.emit(f"go to IPA: {ipa:#x} is outside the IPA space")
            return
        self.select_ipa(ipa)

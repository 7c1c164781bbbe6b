"""The Page-table tree dock: the lazy tree, "valid entries only" and a "go to IPA" field."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QTreeView,
    QVBoxLayout,
    QWidget,
)

from app.tree_model import PageTableModel
from engine.util.errors import clip

# columns as shown (the model's numbers): index, kind, descriptor, S2AP / AF / DBM / XN, then
# IPA range, output address, slot, dirty, so a narrow dock shows the descriptor unscrolled
SHOWN_ORDER = (0, 2, 3, 4, 1, 5, 6, 7)


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
        self.valid_only = QCheckBox("valid entries only")
        self.valid_only.setChecked(True)
        self.valid_only.setToolTip(
            "Hide invalid (unmapped) entries: a table lists only the entries the walk can "
            "follow, and its kind says how many of its entries are valid"
        )
        self.valid_only.toggled.connect(self._valid_only_toggled)
        self.result = QLabel("")  # where "go to IPA" ended, or why it could not go
        self.result.setWordWrap(True)
        self.model: PageTableModel | None = None
        self.ipa_limit = 0
        self.last_ipa: int | None = None  # the address last selected
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.goto, 1)
        row.addWidget(self.valid_only)
        layout.addLayout(row)
        layout.addWidget(self.result)
        layout.addWidget(self.tree)

    def set_model(self, model: PageTableModel, ipa_limit: int) -> None:
        self.model, self.ipa_limit = model, ipa_limit
        model.set_valid_only(self.valid_only.isChecked())
        self.tree.setModel(model)
        self.result.setText("")
        self.last_ipa = None
        digits = self.fontMetrics().horizontalAdvance("0x0000_0000_0000_0000") + 24
        header = self.fontMetrics().horizontalAdvance("S2AP / AF / DBM / XN") + 24
        kind = self.fontMetrics().horizontalAdvance("table · 512/512 valid") + 16
        for column, width in enumerate((150, 230, kind, digits, header, digits, 40, 40)):
            self.tree.setColumnWidth(column, width)
        heads = self.tree.header()
        for visual, column in enumerate(SHOWN_ORDER):  # the descriptor first, in view
            heads.moveSection(heads.visualIndex(column), visual)

    def refresh(self, touched) -> None:
        if self.model is not None and self.tree.isVisible():
            self.model.refresh(touched)
            self.tree.viewport().update()

    def _valid_only_toggled(self, on: bool) -> None:
        if self.model is not None:
            self.model.set_valid_only(on)
            if self.last_ipa is not None:
                self.select_ipa(self.last_ipa)  # (back to where the user was)

    def select_ipa(self, ipa: int) -> None:
        """Expand to and select where the walk of ``ipa`` stops, and say what is there (with
        valid entries only and an invalid entry, its table is selected and the line names
        the entry)."""
        if self.model is None:
            return
        self.last_ipa = ipa
        idx, pos = self.model.locate_ipa(ipa)
        parent = idx.parent()
        chain = []
        while parent.isValid():
            chain.append(parent)
            parent = parent.parent()
        for p in reversed(chain):
            self.tree.expand(p)
        self.tree.setCurrentIndex(idx)
        self.tree.scrollTo(idx)
        entry, where = self.model.entry_text(pos, 0), self.model.entry_text(pos, 1)
        kind = self.model.entry_text(pos, 2)
        self.result.setTextFormat(Qt.TextFormat.PlainText)
        self.result.setText(
            f"{ipa:#x}: the walk stops at an invalid entry, {entry} ({where}): not mapped"
            if kind == "invalid"
            else f"{ipa:#x}: {kind} {entry} ({where})"
        )

    def goto_entered(self) -> None:
        """The field's address, hex with or without 0x (40042000 is 0x40042000, as the
        placeholder and the tree's columns write addresses), ``_`` separators allowed."""
        text = self.goto.text().strip().replace("_", "")
        digits = text[2:] if text[:2].lower() == "0x" else text
        try:
            ipa = int(digits, 16) if digits.isascii() and digits.isalnum() else -1
        except ValueError:
            ipa = -1
        if ipa < 0:
            self._refuse(
                f"go to IPA: {clip(text, 40)!r} is not an address (use hex like 0x40042000)"
            )
            return
        if self.model is None or not ipa < self.ipa_limit:
            self._refuse(
                f"go to IPA: {clip(hex(ipa), 40)} is outside the IPA space (below "
                f"{self.ipa_limit:#x})"
            )
            return
        self.select_ipa(ipa)

    def _refuse(self, text: str) -> None:
        self.result.setText(f"<span style='color:#e57373'>{html.escape(text)}</span>")
        self.result.setTextFormat(Qt.TextFormat.RichText)
        self.message.emit(text)

"""Editors for memslots and workloads (the tracking / migration form is ``settings_editor``).

Every change is checked first with the engine's own parsers (the same sentence the engine
would give, shown on the editor and in Messages, and nothing is sent), then sent to the worker
as a live edit (applied between ticks and recorded in the session); the engine's refusal
comes back as one sentence shown on the editor and in the messages dock, and the bad change
is not applied.  The tables show what is in effect now (after events and edits).
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QGridLayout,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY
from engine.migration.snapshot import Snapshot
from engine.util.errors import DirtylogError
from engine.util.units import format_bytes, parse_rate, parse_size

ERROR_STYLE = "color: #e57373;"


def table(headers: list[str], fit: tuple[int, ...] = ()) -> QTableWidget:
    """A read-only table whose columns share the width, except the ``fit`` columns, which
    are as wide as their contents (e.g. an address, never elided)."""
    t = QTableWidget(0, len(headers))
    t.setHorizontalHeaderLabels(headers)
    t.verticalHeader().hide()
    t.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
    t.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
    t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
    for column in fit:
        t.horizontalHeader().setSectionResizeMode(column, QHeaderView.ResizeMode.ResizeToContents)
    t.setMinimumHeight(90)  # a header and two rows; the editor's scroll area does the rest
    return t


class Editor(QWidget):
    """A table, a form, a row of buttons and a status line for the engine's answer."""

    edit = Signal(dict)
    refused = Signal(str)  # a refusal found before sending (for the Messages dock)

    def _lay_out(self, tbl: QTableWidget | None, form, buttons: list[QPushButton]) -> None:
        row = QHBoxLayout()
        for b in buttons:
            row.addWidget(b)
        row.addStretch(1)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        if tbl is not None:
            layout.addWidget(tbl, 1)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.status)

    def clear_status(self) -> None:
        self.status.setStyleSheet("")
        self.status.setText("")

    def show_result(self, event: dict, error: str) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(error or f"applied: {event.get('action', '')}")

    def refuse(self, text: str) -> None:
        self.show_result({}, text)
        self.refused.emit(f"edit refused: {text}")


class MemslotEditor(Editor):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = table(["id", "name", "base", "size", "flags", "backing"], fit=(0, 2, 4))
        self.f_id, self.f_name = QLineEdit("3"), QLineEdit("extra")
        self.f_base, self.f_size = QLineEdit("0x200000000"), QLineEdit("256MiB")
        self.f_flags = QCheckBox("log_dirty")
        self.f_flags.setChecked(True)
        self.f_readonly = QCheckBox("readonly")
        self.f_backing = QComboBox()
        self.f_backing.addItems(["4KiB", "2MiB", "1GiB"])
        add = QPushButton("Add")
        add.setToolTip(
            "KVM_SET_USER_MEMORY_REGION: create a memslot (during a migration it joins all dirty)"
        )
        add.clicked.connect(self._add)
        delete = QPushButton("Delete selected")
        delete.clicked.connect(self._delete)
        move = QPushButton("Move selected to base")
        move.clicked.connect(self._move)
        self.table.currentCellChanged.connect(self._selected_to_form)
        form = QGridLayout()
        cells = (("id", self.f_id), ("name", self.f_name), ("base", self.f_base))
        cells += (("size", self.f_size), ("backing", self.f_backing))
        for i, (label, w) in enumerate(cells):
            form.addWidget(QLabel(label), i // 3, 2 * (i % 3))
            form.addWidget(w, i // 3, 2 * (i % 3) + 1)
        form.addWidget(self.f_flags, 1, 4)
        form.addWidget(self.f_readonly, 1, 5)
        self._lay_out(self.table, form, [add, move, delete])
        self._ids: set[int] = set()

    def show_slots(self, snap: Snapshot, session_flags: dict[int, int] | None = None) -> None:
        """The slots in effect.  Flags are the session's: logging is switched on when the
        migration starts (QEMU's setup), so before that log_dirty says "(at setup)"."""
        session_flags = session_flags or {}
        key = tuple((s.id, s.base_gfn, s.npages, s.flags) for s in snap.slots)
        if key == getattr(self, "_shown", None):
            return
        self._shown = key
        self._ids = {s.id for s in snap.slots}
        self.table.setRowCount(len(snap.slots))
        for row, s in enumerate(snap.slots):
            wanted = session_flags.get(s.id, s.flags)
            flags = []
            if wanted & KVM_MEM_LOG_DIRTY_PAGES:
                on = s.flags & KVM_MEM_LOG_DIRTY_PAGES
                flags.append("log_dirty" if on else "log_dirty (at setup)")
            if wanted & KVM_MEM_READONLY:
                flags.append("readonly")
            values = [
                str(s.id),
                s.name,
                f"{s.base_gfn * snap.page_size:#x}",
                format_bytes(s.npages * snap.page_size),
                ", ".join(flags) or "none",
                format_bytes(s.backing),
            ]
            for col, v in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(v))
            self.table.item(row, 4).setToolTip(
                "log_dirty (at setup): dirty logging is switched on when the migration starts "
                "(QEMU's ram_save_setup), not before"
            )

    def _selected_id(self) -> int | None:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return int(item.text()) if item else None

    def _selected_to_form(self, row: int, *_) -> None:
        items = [self.table.item(row, c) for c in range(4)] if row >= 0 else []
        if all(items) and items:
            self.f_id.setText(items[0].text())
            self.f_name.setText(items[1].text())
            self.f_base.setText(items[2].text())

    def _send(self, event: dict[str, Any]) -> None:
        self.status.setStyleSheet("")
        self.status.setText("applying…")
        self.edit.emit(event)

    def _add(self) -> None:
        try:
            slot_id = int(self.f_id.text(), 0)
        except ValueError:
            self.refuse(f"memslot.id: {self.f_id.text()!r} is not a whole number")
            return
        if slot_id in self._ids:
            self.refuse(f"memslot.id: slot {slot_id} exists; use Move to change its base")
            return
        try:
            size = parse_size(self.f_size.text(), "memslot.size")
            parse_size(self.f_base.text(), "memslot.base")
        except DirtylogError as exc:
            self.refuse(str(exc))
            return
        if size <= 0:
            self.refuse("memslot.size: must be > 0 (a size of 0 deletes a slot in KVM)")
            return
        flags = ["log_dirty"] if self.f_flags.isChecked() else []
        flags += ["readonly"] if self.f_readonly.isChecked() else []
        self._send(
            {
                "action": "add_memslot",
                "id": slot_id,
                "name": self.f_name.text(),
                "base": self.f_base.text(),
                "size": self.f_size.text(),
                "backing": self.f_backing.currentText(),
                "flags": flags,
            }
        )

    def _delete(self) -> None:
        sid = self._selected_id()
        if sid is not None:
            self._send({"action": "delete_memslot", "id": sid})

    def _move(self) -> None:
        sid = self._selected_id()
        if sid is not None:
            self._send({"action": "move_memslot", "id": sid, "base": self.f_base.text()})

    def show_result(self, event: dict, error: str) -> None:
        super().show_result(event, error)
        if error and event.get("action") in ("delete_memslot", "move_memslot"):
            for col in range(self.table.columnCount()):  # mark the row the edit was for
                item = self.table.item(self.table.currentRow(), col)
                if item is not None:
                    item.setBackground(QColor(255, 220, 220))
                    item.setToolTip(error)


class WorkloadEditor(Editor):
    KINDS = ("uniform", "sequential", "once", "hotcold", "zipf", "memstress", "phases", "trace")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = table(["name", "kind", "vCPU", "target", "rate", "parameters"])
        self.name, self.kind = QLineEdit("w1"), QComboBox()
        self.kind.addItems(self.KINDS)
        self.vcpu, self.slot = QLineEdit("0"), QLineEdit("0")
        self.rate = QLineEdit("20000 pages/s")
        self.rate.setToolTip("pages/s or a bandwidth such as 512MiB/s, of guest time")
        self.params = QLineEdit("")
        self.params.setPlaceholderText(
            'parameters as JSON, e.g. {"hot_fraction": 0.05}; trace: {"path": "w.csv"}'
        )
        self.page_size = 4096
        add = QPushButton("Add workload")
        add.setToolTip("add_workload: starts now, on the vCPU and memslot given")
        add.clicked.connect(self._add)
        apply = QPushButton("Set rate/parameters")
        apply.setToolTip("set_workload: the selected workload gets the rate and parameters")
        apply.clicked.connect(self._set)
        delete = QPushButton("Delete")
        delete.clicked.connect(self._delete)
        pause = QPushButton("Pause its vCPU")
        pause.clicked.connect(lambda: self._vcpu("pause_vcpu"))
        resume = QPushButton("Resume its vCPU")
        resume.clicked.connect(lambda: self._vcpu("resume_vcpu"))
        self.table.currentCellChanged.connect(self._selected_to_form)
        form = QGridLayout()
        cells = (("name", self.name), ("kind", self.kind), ("vCPU", self.vcpu))
        cells += (("slot", self.slot), ("rate", self.rate))
        for i, (label, w) in enumerate(cells):
            form.addWidget(QLabel(label), i // 3, 2 * (i % 3))
            form.addWidget(w, i // 3, 2 * (i % 3) + 1)
        form.addWidget(QLabel("parameters"), 2, 0)
        form.addWidget(self.params, 2, 1, 1, 5)
        self._lay_out(self.table, form, [add, apply, delete, pause, resume])
        self.specs: list[dict[str, Any]] = []
        self._key = None

    def show_workloads(self, specs: list[dict[str, Any]], paused: tuple[int, ...] = ()) -> None:
        key = (json.dumps(specs, sort_keys=True, default=str), tuple(paused))
        if key == self._key:
            return
        self._key = key
        self.specs = specs
        self.table.setRowCount(len(specs))
        for r, w in enumerate(specs):
            target = f"slot {w['slot']}" if "slot" in w else w.get("range", w.get("path", ""))
            vcpu = w.get("vcpu", 0)
            params = w.get("params") or {
                k: v for k, v in w.items() if k not in ("name", "kind", "vcpu", "slot", "range")
            }
            params = {k: v for k, v in params.items() if k != "rate"}
            vals = [
                w.get("name", ""),
                w.get("kind", ""),
                f"{vcpu} (paused)" if vcpu in paused else str(vcpu),
                str(target),
                str(w.get("rate", "—")),
                ", ".join(f"{k}={v}" for k, v in params.items()),
            ]
            for c, v in enumerate(vals):
                self.table.setItem(r, c, QTableWidgetItem(v))

    def show_effective(self, settings: dict[str, Any]) -> None:
        self.show_workloads(settings["workloads"], tuple(settings["paused_vcpus"]))

    def _selected_to_form(self, row: int, *_) -> None:
        """Selecting a workload loads it into the form (rate and parameters in effect)."""
        if not 0 <= row < len(self.specs):
            return
        w = self.specs[row]
        self.name.setText(str(w.get("name", "")))
        self.kind.setCurrentText(str(w.get("kind", "")))
        self.vcpu.setText(str(w.get("vcpu", 0)))
        if "slot" in w:
            self.slot.setText(str(w["slot"]))
        self.rate.setText(str(w.get("rate", "")))
        self.params.setText(json.dumps(w.get("params", {})) if w.get("params") else "")

    def _selected(self) -> dict[str, str] | None:
        row = self.table.currentRow()
        if row < 0 or row >= len(self.specs):
            return None
        return {"name": self.specs[row]["name"], "vcpu": self.specs[row].get("vcpu", 0)}

    def _params(self) -> dict[str, Any] | None:
        text = self.params.text().strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.refuse(f"workload parameters: not valid JSON ({exc.msg})")
            return None
        if not isinstance(value, dict):
            self.refuse("workload parameters: must be a JSON object")
            return None
        return value

    def _rate_ok(self) -> bool:
        try:
            parse_rate(self.rate.text(), self.page_size, "workload.rate")
        except DirtylogError as exc:
            self.refuse(str(exc))
            return False
        return True

    def _add(self) -> None:
        params = self._params()
        if params is None or not self._rate_ok():
            return
        try:
            vcpu, slot = int(self.vcpu.text()), int(self.slot.text())
        except ValueError:
            self.refuse("workload.vcpu and workload.slot: must be whole numbers")
            return
        self.edit.emit(
            {
                "action": "add_workload",
                "name": self.name.text(),
                "kind": self.kind.currentText(),
                "vcpu": vcpu,
                "slot": slot,
                "rate": self.rate.text(),
                **params,
            }
        )

    def _set(self) -> None:
        sel, params = self._selected(), self._params()
        if sel is None:
            self.refuse("set_workload: select a workload in the table first")
            return
        if params is None or not self._rate_ok():
            return
        self.edit.emit(
            {"action": "set_workload", "workload": sel["name"], "rate": self.rate.text(), **params}
        )

    def _delete(self) -> None:
        sel = self._selected()
        if sel:
            self.edit.emit({"action": "delete_workload", "workload": sel["name"]})

    def _vcpu(self, action: str) -> None:
        sel = self._selected()
        if sel:
            self.edit.emit({"action": action, "vcpu": int(sel["vcpu"])})

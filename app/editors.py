"""Editors for memslots, workloads and the tracking / migration settings.

Every change is sent to the worker as a live edit (applied between ticks and recorded in the
session); the engine's refusal comes back as one sentence shown on the editor and in the
messages dock, and the bad change is not applied.
"""

from __future__ import annotations

import json
from typing import Any

from PySide6.QtCore import Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
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
from engine.util.units import format_bytes

ERROR_STYLE = "color: #c0392b;"


class _Editor(QWidget):
    """A table, a form, a row of buttons and a status line for the engine's answer."""

    edit = Signal(dict)

    def _lay_out(self, table: QTableWidget | None, form, buttons: list[QPushButton]) -> None:
        row = QHBoxLayout()
        for b in buttons:
            row.addWidget(b)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout = QVBoxLayout(self)
        if table is not None:
            layout.addWidget(table)
        layout.addLayout(form)
        layout.addLayout(row)
        layout.addWidget(self.status)

    def show_result(self, event: dict, error: str) -> None:
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(error or f"applied: {event.get('action', '')}")


class MemslotEditor(_Editor):
    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 6)
        self.table.setHorizontalHeaderLabels(["id", "name", "base", "size", "flags", "backing"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.f_id, self.f_base, self.f_size = (
            QLineEdit("3"),
            QLineEdit("0x200000000"),
            QLineEdit("256MiB"),
        )
        self.f_flags = QCheckBox("log_dirty")
        self.f_flags.setChecked(True)
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
        form = QHBoxLayout()
        for label, w in (("id", self.f_id), ("base", self.f_base), ("size", self.f_size)):
            form.addWidget(QLabel(label))
            form.addWidget(w)
        form.addWidget(self.f_flags)
        form.addWidget(self.f_backing)
        self._lay_out(self.table, form, [add, move, delete])

    def show_slots(self, snap: Snapshot) -> None:
        key = tuple((s.id, s.base_gfn, s.npages, s.flags) for s in snap.slots)
        if key == getattr(self, "_shown", None):
            return
        self._shown = key
        self.table.setRowCount(len(snap.slots))
        for row, s in enumerate(snap.slots):
            flags = ", ".join(
                n
                for bit, n in (
                    (KVM_MEM_LOG_DIRTY_PAGES, "log_dirty"),
                    (KVM_MEM_READONLY, "readonly"),
                )
                if s.flags & bit
            )
            values = [
                str(s.id),
                s.name,
                f"{s.base_gfn * snap.page_size:#x}",
                format_bytes(s.npages * snap.page_size),
                flags or "—",
                format_bytes(s.backing),
            ]
            for col, v in enumerate(values):
                self.table.setItem(row, col, QTableWidgetItem(v))

    def _selected_id(self) -> int | None:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return int(item.text()) if item else None

    def _send(self, event: dict[str, Any]) -> None:
        self.status.setStyleSheet("")
        self.status.setText("applying…")
        self.edit.emit(event)

    def _add(self) -> None:
        try:
            slot_id = int(self.f_id.text(), 0)
        except ValueError:
            self.show_result({}, f"id: {self.f_id.text()!r} is not a whole number")
            return
        self._send(
            {
                "action": "add_memslot",
                "id": slot_id,
                "base": self.f_base.text(),
                "size": self.f_size.text(),
                "backing": self.f_backing.currentText(),
                "flags": ["log_dirty"] if self.f_flags.isChecked() else [],
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


class WorkloadEditor(_Editor):
    KINDS = ("uniform", "sequential", "once", "hotcold", "zipf", "memstress")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.table = QTableWidget(0, 5)
        self.table.setHorizontalHeaderLabels(["name", "kind", "vCPU", "target", "rate"])
        self.table.verticalHeader().hide()
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.name, self.kind = QLineEdit("w1"), QComboBox()
        self.kind.addItems(self.KINDS)
        self.vcpu, self.slot = QLineEdit("0"), QLineEdit("0")
        self.rate = QLineEdit("20000 pages/s")
        self.rate.setToolTip("pages/s or a bandwidth such as 512MiB/s, of guest time")
        self.params = QLineEdit("")
        self.params.setPlaceholderText('parameters as JSON, e.g. {"hot_fraction": 0.05}')
        add = QPushButton("Add workload")
        add.setToolTip("add_workload: starts now, on the vCPU and memslot given")
        add.clicked.connect(self._add)
        apply = QPushButton("Set rate/parameters of selected")
        apply.clicked.connect(self._set)
        delete = QPushButton("Delete selected")
        delete.clicked.connect(self._delete)
        pause = QPushButton("Pause its vCPU")
        pause.clicked.connect(lambda: self._vcpu("pause_vcpu"))
        resume = QPushButton("Resume its vCPU")
        resume.clicked.connect(lambda: self._vcpu("resume_vcpu"))
        form = QFormLayout()
        row = QHBoxLayout()
        for label, w in (
            ("name", self.name),
            ("kind", self.kind),
            ("vCPU", self.vcpu),
            ("slot", self.slot),
        ):
            row.addWidget(QLabel(label))
            row.addWidget(w)
        form.addRow(row)
        form.addRow("rate", self.rate)
        form.addRow("parameters", self.params)
        self._lay_out(self.table, form, [add, apply, delete, pause, resume])

    def show_workloads(self, specs: list[dict[str, Any]]) -> None:
        self.table.setRowCount(len(specs))
        for r, w in enumerate(specs):
            target = f"slot {w['slot']}" if "slot" in w else w.get("range", w.get("path", ""))
            vals = [
                w.get("name", ""),
                w.get("kind", ""),
                str(w.get("vcpu", 0)),
                str(target),
                str(w.get("rate", "—")),
            ]
            for c, v in enumerate(vals):
                self.table.setItem(r, c, QTableWidgetItem(v))

    def _selected(self) -> dict[str, str] | None:
        row = self.table.currentRow()
        if row < 0 or self.table.item(row, 0) is None:
            return None
        return {"name": self.table.item(row, 0).text(), "vcpu": self.table.item(row, 2).text()}

    def _params(self) -> dict[str, Any] | None:
        text = self.params.text().strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            self.show_result({}, f"parameters: not valid JSON ({exc.msg})")
            return None
        if not isinstance(value, dict):
            self.show_result({}, "parameters: must be a JSON object")
            return None
        return value

    def _add(self) -> None:
        params = self._params()
        if params is None:
            return
        try:
            vcpu, slot = int(self.vcpu.text()), int(self.slot.text())
        except ValueError:
            self.show_result({}, "vCPU and slot must be whole numbers")
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
        if sel and params is not None:
            self.edit.emit(
                {
                    "action": "set_workload",
                    "workload": sel["name"],
                    "rate": self.rate.text(),
                    **params,
                }
            )

    def _delete(self) -> None:
        sel = self._selected()
        if sel:
            self.edit.emit({"action": "delete_workload", "workload": sel["name"]})

    def _vcpu(self, action: str) -> None:
        sel = self._selected()
        if sel:
            self.edit.emit({"action": action, "vcpu": int(sel["vcpu"])})


class SettingsEditor(_Editor):
    """Tracking strategy and migration parameters, applied live; mode and eager split restart."""

    restart = Signal(dict)  # new tracking settings that need a fresh run (mode, eager split)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems(["bitmap", "manual-clear", "ring", "dbm"])
        self.mode.setToolTip("Changing the tracking mode or eager split restarts the run")
        self.strategy = QComboBox()
        self.strategy.addItems(["range", "masked-skip", "visitor", "rmap"])
        self.compare = QCheckBox("compare every strategy on each harvest")
        self.eager = QLineEdit()
        self.eager.setToolTip(
            "KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: 0 (off) or a block size of the granule "
            "(4K: 4KiB, 2MiB, 1GiB; 16K: 16KiB, 32MiB; 64K: 64KiB, 512MiB); others: EINVAL"
        )
        self.policy = QComboBox()
        self.policy.addItems(["qemu", "xen", "xen-4.5"])
        self.bandwidth = QLineEdit()
        self.downtime = QLineEdit()
        self.autoconv = QCheckBox("auto-converge")
        apply = QPushButton("Apply")
        apply.setToolTip("Sent as set_tracking / set_migration edits between ticks")
        apply.clicked.connect(self._apply)
        form = QFormLayout(self)
        form.addRow("tracking mode", self.mode)
        form.addRow("write-protect strategy", self.strategy)
        form.addRow("", self.compare)
        form.addRow("eager split", self.eager)
        form.addRow("policy", self.policy)
        form.addRow("bandwidth", self.bandwidth)
        form.addRow("downtime limit (ms)", self.downtime)
        form.addRow("", self.autoconv)
        form.addRow(apply)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.status)

    def load(self, session: dict[str, Any]) -> None:
        t, m = session.get("tracking", {}), session.get("migration", {})
        self.loaded = {"mode": t.get("mode", "bitmap"), "eager_split": t.get("eager_split", 0)}
        self.mode.setCurrentText(self.loaded["mode"])
        self.strategy.setCurrentText(t.get("strategy", "range"))
        self.compare.setChecked(bool(t.get("compare", False)))
        self.eager.setText(str(t.get("eager_split", 0)))
        self.policy.setCurrentText(m.get("policy", "qemu"))
        self.bandwidth.setText(f"{m.get('bandwidth', 128 << 20) * 8 / 1e6:g}Mbit/s")
        self.downtime.setText(f"{m.get('downtime_limit_ms', 300):g}")
        self.autoconv.setChecked(bool(m.get("auto_converge", False)))

    def _apply(self) -> None:
        from engine.util.units import parse_size

        try:
            eager = parse_size(self.eager.text() or "0", "eager split")
        except DirtylogError as exc:
            self.show_result({}, str(exc))
            return
        if self.mode.currentText() != self.loaded["mode"] or eager != self.loaded["eager_split"]:
            self.restart.emit(
                {
                    "mode": self.mode.currentText(),
                    "eager_split": eager,
                    "strategy": self.strategy.currentText(),
                    "compare": self.compare.isChecked(),
                }
            )
            return
        self.edit.emit(
            {
                "action": "set_tracking",
                "strategy": self.strategy.currentText(),
                "compare": self.compare.isChecked(),
            }
        )
        try:
            downtime = float(self.downtime.text())
        except ValueError:
            self.show_result({}, f"downtime limit: {self.downtime.text()!r} is not a number")
            return
        self.edit.emit(
            {
                "action": "set_migration",
                "policy": self.policy.currentText(),
                "bandwidth": self.bandwidth.text(),
                "downtime_limit_ms": downtime,
                "auto_converge": self.autoconv.isChecked(),
            }
        )

"""The Tracking and migration form: strategy, compare and the migration's parameters live;
tracking mode, eager split, ring size, clear chunk and initially-set restart the run.

The form is validated whole with the engine's own parsers and schema before anything is
sent, and applied all or nothing: a refusal stays on the form (and goes to Messages) and no
edit is sent; fields that did not change send nothing (no event is recorded).  While the user
is not typing in it, the form shows the values in effect (after events and edits).
"""

from __future__ import annotations

from typing import Any, get_args

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QPushButton

from app.editors import ERROR_STYLE, Editor
from engine.files.session import MigrationCfg
from engine.util.errors import DirtylogError
from engine.util.units import parse_bandwidth, parse_size

RESTART_FIELDS = ("mode", "eager_split", "ring_entries", "clear_chunk", "initially_set")
LIVE_TRACKING = ("strategy", "compare")
LIVE_MIGRATION = (
    "policy",
    "bandwidth",
    "downtime_limit_ms",
    "auto_converge",
    "max_rounds",
    "timeout_s",
)


class SettingsEditor(Editor):
    restart = Signal(dict)  # tracking (+ migration) settings that need a fresh run

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.mode = QComboBox()
        self.mode.addItems(["bitmap", "manual-clear", "ring", "dbm"])
        self.mode.setToolTip("Changing the tracking mode (or the fields below it) restarts the run")
        self.strategy = QComboBox()
        self.strategy.addItems(["range", "masked-skip", "visitor", "rmap"])
        self.compare = QCheckBox("compare every strategy on each harvest")
        self.eager = QLineEdit()
        self.eager.setToolTip(
            "KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: 0 (off) or a block size of the granule "
            "(4K: 4KiB, 2MiB, 1GiB; 16K: 16KiB, 32MiB; 64K: 64KiB, 512MiB); others: EINVAL "
            "(restarts the run)"
        )
        self.ring_entries = QLineEdit()
        self.ring_entries.setToolTip("dirty ring entries per vCPU (ring mode; restarts)")
        self.clear_chunk = QLineEdit()
        self.clear_chunk.setToolTip(
            "QEMU's clear-bitmap chunk (manual-clear; restarts); empty: the session's default"
        )
        self.initially_set = QCheckBox("KVM_DIRTY_LOG_INITIALLY_SET (manual-clear; restarts)")
        self.policy = QComboBox()
        self.policy.addItems(list(get_args(MigrationCfg.model_fields["policy"].annotation)))
        self.bandwidth = QLineEdit()
        self.downtime = QLineEdit()
        self.max_rounds = QLineEdit()
        self.timeout = QLineEdit()
        self.autoconv = QCheckBox("auto-converge")
        apply = QPushButton("Apply")
        apply.setToolTip("Checked whole, then sent as set_tracking / set_migration between ticks")
        apply.clicked.connect(self._apply)
        form = QFormLayout(self)
        for label, w in (
            ("tracking mode", self.mode),
            ("write-protect strategy", self.strategy),
            ("", self.compare),
            ("eager split", self.eager),
            ("ring entries", self.ring_entries),
            ("clear chunk", self.clear_chunk),
            ("", self.initially_set),
            ("policy", self.policy),
            ("bandwidth", self.bandwidth),
            ("downtime limit (ms)", self.downtime),
            ("max rounds", self.max_rounds),
            ("timeout (s)", self.timeout),
            ("", self.autoconv),
        ):
            form.addRow(label, w)
        form.addRow(apply)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        form.addRow(self.status)
        self.effective: dict[str, Any] = {}
        self.rmap_available = True
        self._typing = False
        self._shown: tuple[dict, dict] | None = None  # what the form shows (None: user's input)
        for w in (self.eager, self.ring_entries, self.clear_chunk, self.bandwidth):
            w.textEdited.connect(self._user_edit)
        for w in (self.downtime, self.max_rounds, self.timeout):
            w.textEdited.connect(self._user_edit)
        for w in (self.mode, self.strategy, self.policy):
            w.activated.connect(self._user_edit)
        for w in (self.compare, self.initially_set, self.autoconv):
            w.clicked.connect(self._user_edit)

    def _user_edit(self, *_) -> None:
        self._typing = True  # the form holds the user's values until Apply
        self._shown = None

    def load(self, session: dict[str, Any]) -> None:
        """A new run: the session's values (frames then keep them up to date)."""
        t, m = session.get("tracking", {}), session.get("migration", {})
        self._typing = False
        self.show_values(t, m)

    def show_effective(self, settings: dict[str, Any]) -> None:
        self.effective = settings
        shown = (settings["tracking"], settings["migration"])
        if not self._typing and shown != self._shown:  # (every frame: rewrite only on change)
            self.show_values(*shown)

    def show_values(self, t: dict[str, Any], m: dict[str, Any]) -> None:
        self._shown = (t, m)
        self.loaded = {k: t.get(k) for k in RESTART_FIELDS}
        self.mode.setCurrentText(t.get("mode", "bitmap"))
        self.strategy.setCurrentText(t.get("strategy", "range"))
        self.compare.setChecked(bool(t.get("compare", False)))
        self.eager.setText(str(t.get("eager_split", 0)))
        self.ring_entries.setText(str(t.get("ring_entries", 4096)))
        chunk = t.get("clear_chunk")
        self.clear_chunk.setText("" if chunk is None else str(chunk))  # empty: the default
        self.initially_set.setChecked(bool(t.get("initially_set", False)))
        self.policy.setCurrentText(m.get("policy", "qemu"))
        self.bandwidth.setText(f"{m.get('bandwidth', 128 << 20) * 8 / 1e6:g}Mbit/s")
        self.downtime.setText(f"{m.get('downtime_limit_ms', 300):g}")
        self.max_rounds.setText(str(m.get("max_rounds", 100)))
        self.timeout.setText(f"{m.get('timeout_s', 3600):g}")
        self.autoconv.setChecked(bool(m.get("auto_converge", False)))

    def _number(self, widget: QLineEdit, field: str, kind=float) -> Any:
        try:
            return kind(widget.text().strip().replace("_", ""))
        except ValueError:
            raise DirtylogError(f"{field}: {widget.text()!r} is not a number") from None

    def read_form(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The form's values, parsed and checked by the engine's parsers and schema; raises
        DirtylogError with the first refusal (field and rule)."""
        tracking = {
            "mode": self.mode.currentText(),
            "strategy": self.strategy.currentText(),
            "compare": self.compare.isChecked(),
            "eager_split": parse_size(self.eager.text() or "0", "tracking.eager_split"),
            "ring_entries": self._number(self.ring_entries, "tracking.ring_entries", int),
            "clear_chunk": (
                parse_size(self.clear_chunk.text(), "tracking.clear_chunk")
                if self.clear_chunk.text().strip()
                else None
            ),
            "initially_set": self.initially_set.isChecked(),
        }
        migration = {
            "policy": self.policy.currentText(),
            "bandwidth": parse_bandwidth(self.bandwidth.text(), "migration.bandwidth"),
            "downtime_limit_ms": self._number(self.downtime, "migration.downtime_limit_ms"),
            "auto_converge": self.autoconv.isChecked(),
            "max_rounds": self._number(self.max_rounds, "migration.max_rounds", int),
            "timeout_s": self._number(self.timeout, "migration.timeout_s"),
        }
        if migration["bandwidth"] <= 0:
            raise DirtylogError("migration.bandwidth: must be above 0 (nothing could be sent)")
        base = dict(self.effective.get("migration", {}))
        try:
            MigrationCfg.model_validate({**base, **migration})
        except Exception as exc:  # pydantic's ValidationError: the engine's rule
            err = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
            where = ".".join(str(x) for x in err["loc"])
            raise DirtylogError(f"migration.{where}: {err['msg']}") from None
        if tracking["strategy"] == "rmap" and not self.rmap_available:
            raise DirtylogError(
                "tracking.strategy: rmap needs the reverse map from the start of the run "
                "(choose it and change the mode, or save and reopen, to restart with it)"
            )
        return tracking, migration

    def _apply(self) -> None:
        try:
            tracking, migration = self.read_form()
        except DirtylogError as exc:
            self.refuse(str(exc))  # kept on the form: nothing is sent, so nothing overwrites it
            return
        t_now = self.effective.get("tracking", self.loaded)
        m_now = self.effective.get("migration", {})
        restart = {k: v for k, v in tracking.items() if k in RESTART_FIELDS and v != t_now.get(k)}
        live_t = {k: tracking[k] for k in LIVE_TRACKING if tracking[k] != t_now.get(k)}
        live_m = {k: migration[k] for k in LIVE_MIGRATION if migration[k] != m_now.get(k)}
        self._typing = False
        if restart:
            self.restart.emit({**tracking, "migration": migration})
            return
        if not live_t and not live_m:
            self.status.setStyleSheet("")
            self.status.setText("nothing changed: no edit recorded")
            return
        if live_t.get("compare") and t_now.get("mode") == "dbm":
            self.refused.emit(
                "note: compare does not apply in dbm mode (the harvest scans every leaf; "
                "there is no write-protect walk to compare)"
            )
        if live_t:
            self.edit.emit({"action": "set_tracking", **live_t})
        if live_m:
            self.edit.emit({"action": "set_migration", **live_m})

    def show_result(self, event: dict, error: str) -> None:
        if error:
            self._typing = True  # keep the user's values on the form with the error
        self.status.setStyleSheet(ERROR_STYLE if error else "")
        self.status.setText(error or f"applied: {event.get('action', '')}")

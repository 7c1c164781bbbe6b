"""File → Export (rounds, graphs, bitmaps, a screenshot) and the snapshot diff.

A mixin of the main window; the bitmap format lives in ``engine/files/export.py``.  Every
export adds the default extension when the name has none, checks that the file was really
written and says so in Messages (or why not); figures ask for their size and DPI.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
)

from engine.util.errors import DirtylogError

SUFFIX = {
    "rounds-csv": ".csv",
    "rounds-json": ".json",
    "graphs-png": ".png",
    "graphs-svg": ".svg",
    "graphs-csv": ".csv",
    "screenshot": ".png",
}


def with_suffix(path: str | Path, what: str) -> Path:
    """``path`` with the export's default extension when it has none (a path without a name,
    such as ``/``, is kept: writing it fails, and says so)."""
    path = Path(path)
    return path if path.suffix or not path.name else path.with_name(path.name + SUFFIX[what])


class FigureSizeDialog(QDialog):
    """Width, height (px) and DPI of an exported figure."""

    def __init__(self, parent, svg: bool) -> None:
        super().__init__(parent)
        self.setWindowTitle("Figure size")
        self.width_px, self.height_px, self.dpi = QSpinBox(), QSpinBox(), QSpinBox()
        for box, lo, hi, value in (
            (self.width_px, 320, 8000, 1600),
            (self.height_px, 240, 8000, 1000),
            (self.dpi, 72, 1200, 144),
        ):
            box.setRange(lo, hi)
            box.setValue(value)
        form = QFormLayout(self)
        form.addRow("width (px)", self.width_px)
        form.addRow("height (px)", self.height_px)
        if not svg:
            form.addRow("DPI (stored in the PNG)", self.dpi)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)


class DiffDialog(QDialog):
    """Two explicit pickers: snapshot A and snapshot B (their .json sidecars)."""

    def __init__(self, parent, start: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Diff bitmap snapshots")
        self.start = start
        self.a, self.b = QLineEdit(), QLineEdit()
        form = QFormLayout(self)
        form.addRow(QLabel("Pages only in A, only in B and in both are shown in the heat map."))
        for label, field in (("snapshot A", self.a), ("snapshot B", self.b)):
            pick = QPushButton("Choose…")
            pick.clicked.connect(lambda _=False, f=field, t=label: self._pick(f, t))
            form.addRow(label, field)
            form.addRow("", pick)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _pick(self, field: QLineEdit, title: str) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, f"Choose {title} (its .json sidecar)", self.start, "Snapshots (*.json)"
        )
        if path:
            field.setText(path)
            self.start = str(Path(path).parent)


class ExportsMixin:
    """Export actions of ``MainWindow`` (uses its last frame, sim, graphs and report)."""

    def export(self, what: str) -> None:
        """File → Export: ask where (and a figure's size), then ``export_to``."""
        if what == "bitmap":
            out = QFileDialog.getExistingDirectory(self, "Export bitmaps to")
            if out:
                self.export_bitmaps(Path(out))
            return
        start = (self.path.parent if self.path else Path.cwd()) / f"export{SUFFIX[what]}"
        path, _ = QFileDialog.getSaveFileName(self, "Export", str(start))
        if not path:
            return
        size = {}
        if what in ("graphs-png", "graphs-svg"):
            dialog = FigureSizeDialog(self, what == "graphs-svg")
            if not dialog.exec():
                return
            size = {"width": dialog.width_px.value(), "height": dialog.height_px.value()}
            if what == "graphs-png":
                size["dpi"] = dialog.dpi.value()
        self.export_to(what, path, **size)

    def export_to(self, what: str, path: str | Path, **size: int) -> Path | None:
        """Write one export; the path written (with its default extension), or None when
        nothing was written (the reason is in Messages)."""
        from engine.cli.run import write_rounds_csv

        path = with_suffix(path, what)
        snap = self.last_frame.snapshot if self.last_frame else None
        rounds = [dict(r) for r in snap.rounds] if snap else []
        name = self.sim.cfg.name if self.sim else ""
        try:
            if what == "rounds-csv":
                write_rounds_csv(path, rounds)
            elif what == "rounds-json":
                path.write_text(json.dumps(rounds, indent=2), encoding="utf-8")
            elif what == "graphs-png":
                ok = self.graphs.export_png(str(path), name, **size)
            elif what == "graphs-svg":
                ok = self.graphs.export_svg(str(path), name, **size)
            elif what == "graphs-csv":
                self.graphs.export_csv(str(path))
            elif what == "screenshot":
                ok = self.grab().save(str(path))
            if what in ("graphs-png", "graphs-svg", "screenshot") and not ok:
                raise OSError(f"{path}: Qt could not write the file")
        except (OSError, DirtylogError) as exc:
            self.report(f"export failed, nothing written: {exc}")
            return None
        if not path.is_file() or path.stat().st_size == 0:
            self.report(f"export failed, nothing written: {path}")
            return None
        self.report(f"exported {path}")
        return path

    def export_bitmaps(self, out: Path) -> list[Path]:
        """The last harvest's bitmaps, with the harvest's own round and time in the sidecar."""
        from engine.files.export import BitmapSnapshot, write_snapshot

        sim = self.sim
        if sim is None or sim.migration is None or not sim.migration.last_harvest:
            self.report("export: no harvest yet")
            return []
        m = sim.migration
        t_ns = m.last_harvest_t_ns
        number = m.syncs  # the harvest's number, as dirtylog export names it
        written = []
        try:
            out.mkdir(parents=True, exist_ok=True)
            for sid, words in m.last_harvest.items():
                s = sim.vm.slots[sid].slot
                snap = BitmapSnapshot(
                    sid, s.base_gfn, s.npages, sim.vm.page_size, number, t_ns, words.copy()
                )
                written += write_snapshot(snap, out, f"round-{number:04d}-slot-{sid}", "bin")
        except (OSError, DirtylogError) as exc:
            self.report(f"export failed: {exc}")
            return written
        self.report(f"exported {len(written) // 2} bitmap(s) to {out}")
        return written

    def diff_dialog(self) -> None:
        dialog = DiffDialog(self, str(self.path.parent) if self.path else "")
        if dialog.exec() and dialog.a.text() and dialog.b.text():
            self.show_diff(dialog.a.text(), dialog.b.text())

    def show_diff(self, a_path: str, b_path: str) -> dict[str, int] | None:
        """Import two snapshots, diff them, and show the diff in the heat map."""
        from app.heatmap_data import diff_layer
        from engine.files.export import diff, read_snapshot

        try:
            a, b = read_snapshot(a_path), read_snapshot(b_path)
        except DirtylogError as exc:
            self.report(f"diff: {exc}")
            return None
        snap = self.last_frame.snapshot if self.last_frame else None
        slot = next((s for s in (snap.slots if snap else ()) if s.base_gfn == a.base_gfn), None)
        if snap is None or slot is None:
            self.report(f"diff: no memslot of this session starts at gfn {a.base_gfn:#x}")
            return None
        d = diff(a, b)
        layer = diff_layer(
            snap.total_pages,
            slot.offset,
            *(d[k] - a.base_gfn for k in ("only_a", "only_b", "both")),
        )
        self.heatmap.diff_names = (
            f"{Path(a_path).name} (round {a.round})",
            f"{Path(b_path).name} (round {b.round})",
        )
        self.runner.req_diff.emit(layer)
        self.mode.setCurrentIndex(self.mode.findData("diff"))
        counts = {k: int(v.size) for k, v in d.items()}
        self.report(
            f"diff of A = {a_path} and B = {b_path}: {counts['only_a']} pages only in A, "
            f"{counts['only_b']} only in B, {counts['both']} in both"
        )
        return counts

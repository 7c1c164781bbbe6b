"""File → Export (rounds, graphs, bitmaps, a screenshot) and the snapshot diff.

A mixin of the main window; the bitmap format lives in ``engine/files/export.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from engine.util.errors import DirtylogError


class ExportsMixin:
    """Export actions of ``MainWindow`` (uses its last frame, sim, graphs and report)."""

    def export(self, what: str) -> None:
        from engine.cli.run import write_rounds_csv

        snap = self.last_frame.snapshot if self.last_frame else None
        suffix = {
            "rounds-csv": ".csv",
            "rounds-json": ".json",
            "graphs-png": ".png",
            "graphs-csv": ".csv",
            "screenshot": ".png",
        }.get(what, "")
        if what == "bitmap":
            out = QFileDialog.getExistingDirectory(self, "Export bitmaps to")
            if out:
                self.export_bitmaps(Path(out))
            return
        path, _ = QFileDialog.getSaveFileName(self, "Export", f"export{suffix}")
        if not path:
            return
        rounds = [dict(r) for r in snap.rounds] if snap else []
        try:
            if what == "rounds-csv":
                write_rounds_csv(path, rounds)
            elif what == "rounds-json":
                Path(path).write_text(json.dumps(rounds, indent=2))
            elif what == "graphs-png":
                self.graphs.export_png(path)
            elif what == "graphs-csv":
                self.graphs.export_csv(path)
            elif what == "graphs-svg":
                self.graphs.export_svg(path)
            elif what == "screenshot":
                self.grab().save(path)
            self.report(f"exported {path}")
        except (OSError, DirtylogError) as exc:
            self.report(f"export failed: {exc}")

    def export_bitmaps(self, out: Path) -> list[Path]:
        from engine.files.export import BitmapSnapshot, write_snapshot

        sim = self.sim
        if sim is None or sim.migration is None or not sim.migration.last_harvest:
            self.report("export: no harvest yet")
            return []
        m = sim.migration
        written = []
        for sid, words in m.last_harvest.items():
            s = sim.vm.slots[sid].slot
            snap = BitmapSnapshot(
                sid, s.base_gfn, s.npages, sim.vm.page_size, m.round - 1, sim.t_ns, words.copy()
            )
            written += write_snapshot(snap, out, f"round-{m.round - 1:04d}-slot-{sid}", "bin")
        self.report(f"exported {len(written) // 2} bitmap(s) to {out}")
        return written

    def diff_dialog(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(
            self, "Choose snapshot A, then B (their .json sidecars)", "", "Snapshots (*.json)"
        )
        if len(paths) == 1:
            paths = paths * 2
        if len(paths) >= 2:
            self.show_diff(paths[0], paths[1])

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
        self.runner.req_diff.emit(layer)
        self.mode.setCurrentIndex(self.mode.findData("diff"))
        counts = {k: int(v.size) for k, v in d.items()}
        self.report(
            f"diff of {a_path} and {b_path}: {counts['only_a']} pages only in A, "
            f"{counts['only_b']} only in B, {counts['both']} in both"
        )
        return counts

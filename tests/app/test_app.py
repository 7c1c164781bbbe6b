"""The inspector, offscreen: rounds and graphs, heat-map pixels, the lazy tree, editors,
run controls, errors, threads, scripted screenshots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtGui import QImage  # noqa: E402

from app.heatmap_data import fold_max, render  # noqa: E402
from app.tree_model import PageTableModel  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402
from engine.stage2.geometry import Geometry  # noqa: E402
from engine.stage2.pgtable import PageTable  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def small_session(**over):
    s = {
        "format": "dirtylog-session",
        "version": 2,
        "name": "app-test",
        "seed": 3,
        "geometry": {"granule": "4KiB", "ipa_bits": 40},
        "vcpus": 2,
        "memslots": [
            {
                "id": 0,
                "name": "ram",
                "base": "0x40000000",
                "size": "32MiB",
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],
        "workloads": [
            {
                "name": "hot",
                "kind": "hotcold",
                "vcpu": 0,
                "slot": 0,
                "rate": "20000 pages/s",
                "hot_fraction": 0.01,
                "hot_share": 1.0,
            }
        ],
        "migration": {"policy": "qemu", "bandwidth": "256Mbit/s", "timeout_s": 60},
    }
    s.update(over)
    return s


def load(window, data):
    window.load_simulation(Simulation.from_dict(data), None)
    window.speed.setCurrentIndex(window.speed.count() - 1)


def wait_rounds(qtbot, window, n, timeout=60_000):
    window.runner.req_rounds.emit(n)
    qtbot.waitUntil(
        lambda: (
            window.last_frame is not None
            and not window.last_frame.running
            and len(window.last_frame.snapshot.rounds) >= n
        ),
        timeout=timeout,
    )


def test_rounds_table_and_graphs_have_one_point_per_round(qtbot, window):
    load(window, small_session())
    wait_rounds(qtbot, window, 3)
    n = len(window.last_frame.snapshot.rounds)
    assert n >= 3
    assert window.rounds.rowCount() == n
    assert window.rounds.item(0, 0).text() == "1"
    for key in ("pages:dirty harvested", "downtime:expected downtime", "faults:faults"):
        assert window.graphs.series[key].size == n
    # the plots catch up one per event-loop pass
    key = ("pages", "dirty harvested")
    curves = window.graphs.curves

    def caught_up() -> bool:  # (a curve exists before its first data: getData() is None)
        xs = curves[key].getData()[0] if key in curves else None
        return xs is not None and len(xs) == n

    qtbot.waitUntil(caught_up, timeout=2000)
    # series other than strategies take the palette in order: distinct, the same every run
    from app.graphs import PALETTE

    pens = [
        curves[("pages", s)].opts["pen"].color().getRgb()[:3]
        for s in ("dirty harvested", "sent", "remaining")
    ]
    assert pens == list(PALETTE[:3])
    # modelled and measured walks are separate plots with their units on the axis
    assert "modelled" in window.graphs.plots["walk_model"].getAxis("left").labelText
    assert "measured" in window.graphs.plots["walk_cpu"].getAxis("left").labelText


def test_heat_map_pixels_hot_and_cold(qtbot, window):
    load(window, small_session(migration={"policy": "qemu", "start_ms": 10_000}))
    window.runner.req_speed.emit(1e6)
    window.runner.req_running.emit(True)
    qtbot.waitUntil(
        lambda: window.last_frame is not None and window.last_frame.snapshot.t_ns > 400e6,
        timeout=30_000,
    )
    window.runner.req_running.emit(False)
    qtbot.waitUntil(lambda: not window.last_frame.running, timeout=10_000)
    img = window.heatmap.image
    assert img.mode == "heat" and img.pages_per_cell == 1
    # render now: ImageItem keeps the qimage of its last paint until it paints again, which
    # may be an earlier frame's (a paused run sends no more frames to repaint it)
    window.heatmap.image_item.render()
    qimage = window.heatmap.image_item.qimage
    # hot set: the first 1 % of the slot (81 pages); cold: the rest, never written
    hot = qimage.pixelColor(5, 0)
    cold = qimage.pixelColor(300, 10)
    assert hot.red() > 150 and hot.red() > cold.red() + 100
    assert cold.red() < 20 and cold.green() < 20 and cold.blue() < 40


def test_fold_max_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    heat = rng.random(1003, dtype=np.float32) * 30
    heat[::5] = 0  # (cold pages: the int32 fold must keep exact zeros and tiny values)
    heat[1::7] = np.float32(1e-30)
    for values in (rng.integers(0, 255, 1003).astype(np.uint8), heat):
        for k in (1, 2, 7, 64):
            expected = [max(values[i : i + k]) for i in range(0, values.size, k)]
            folded = fold_max(values, k)
            assert folded.dtype == values.dtype and folded.tolist() == expected
    img = render(np.arange(5000, dtype=np.float32), "heat", 64, 1000)
    assert img.pages_per_cell == 5 and img.codes.shape == (16, 64)


def test_tree_model_is_valid_and_lazy(qtmodeltester):
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(0x40000000, 8 << 20, 4096)
    pgt.map_range(0x80000000, 4 << 20, 2 << 20)
    model = PageTableModel(pgt)
    qtmodeltester.check(model)


def test_tree_valid_entries_only(qtmodeltester):
    """Review defect 21: all 512 entries of each table were listed.  Valid entries only, by
    hand for a 40-bit IPA with 4 KiB pages (two concatenated L1 tables of 1 GiB entries):
    4 MiB of pages at 1 GiB is L1[1] → L2[0..1] (2 MiB each) → 512 pages each; 4 MiB of
    2 MiB blocks at 2 GiB is L1[2] → L2[0..1]."""
    from PySide6.QtCore import QPersistentModelIndex

    from engine.stage2.walk import unmap_range

    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(0x40000000, 4 << 20, 4096)
    pgt.map_range(0x80000000, 4 << 20, 2 << 20)
    qtmodeltester.check(PageTableModel(pgt, valid_only=True))
    model = PageTableModel(pgt, valid_only=True)

    def rows(parent):
        model.fetch_until(parent, 511)
        return [model.data(model.index(r, 0, parent)) for r in range(model.rowCount(parent))]

    root0, root1 = model.index(0, 0), model.index(1, 0)
    assert rows(root0) == ["L1[1]", "L1[2]"] and rows(root1) == []
    l1_1, l1_2 = model.index(0, 0, root0), model.index(1, 0, root0)
    assert model.data(model.index(0, 2, root0)) == "table · 2/512 valid"
    assert rows(l1_1) == ["L2[0]", "L2[1]"]
    assert rows(l1_2) == ["L2[0]", "L2[1]"]
    assert model.data(model.index(0, 2, l1_2)) == "block"
    l2_0 = model.index(0, 0, l1_1)
    assert len(rows(l2_0)) == 512
    # the guest loses page 5: its row goes, the rows after it move up, a selection follows
    seventh = QPersistentModelIndex(model.index(7, 0, l2_0))
    unmap_range(pgt, 0x40000000 + 5 * 4096, 4096)
    model.refresh(np.zeros(0, np.int64))
    assert model.rowCount(l2_0) == 511 and seventh.row() == 6
    assert model.data(seventh) == "L3[7]"
    assert model.data(model.index(0, 2, l1_1)) == "table · 511/512 valid"
    pgt.map_range(0xC0000000, 2 << 20, 2 << 20)  # a new table at L1[3] appears
    model.refresh(np.zeros(0, np.int64))
    assert rows(root0) == ["L1[1]", "L1[2]", "L1[3]"]
    model.set_valid_only(False)
    assert len(rows(model.index(0, 0))) == 512


def test_go_to_an_unmapped_ipa_names_the_invalid_entry(qtbot, window):
    """With valid entries only, the walk of 0x50000000 stops at the invalid L2 entry
    (0x50000000 − 0x40000000) / 2 MiB = 128 of the 32 MiB slot's L2 table: its table entry
    L1[1] is selected and the line names the entry."""
    load(window, small_session())
    panel = window.tree_panel
    assert panel.valid_only.isChecked()
    heads = window.tree.header()  # the descriptor is the third column shown (a narrow dock)
    shown = [
        window.model.headerData(heads.logicalIndex(v), Qt.Orientation.Horizontal) for v in range(4)
    ]
    assert shown == ["index", "kind", "descriptor", "S2AP / AF / DBM / XN"]
    window.goto.setText("0x5000_0000")
    window._goto_entered()
    assert panel.result.text() == (
        "0x50000000: the walk stops at an invalid entry, L2[128] "
        "(0x50000000 – 0x501fffff): not mapped"
    )
    idx = window.tree.currentIndex()
    assert window.model.data(window.model.index(idx.row(), 0, idx.parent())) == "L1[1]"
    assert window.model.data(window.model.index(idx.row(), 2, idx.parent())) == (
        "table · 16/512 valid"
    )
    panel.valid_only.setChecked(False)  # all entries: the invalid one itself is selected
    idx = window.tree.currentIndex()
    assert window.model.data(window.model.index(idx.row(), 0, idx.parent())) == "L2[128]"
    assert idx.row() == 128


def test_tree_stays_lazy_with_16m_leaves():
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(0x40000000, 64 << 30, 4096)
    model = PageTableModel(pgt)
    idx = model.index_for_ipa(0x40000000 + (1 << 35) + 0x5000)
    assert model.data(model.index(idx.row(), 2, idx.parent())) == "page"
    # only batches along one path were made visible
    assert sum(model._fetched.values()) <= 3 * 512


def test_go_to_ipa_selects_the_leaf(qtbot, window):
    load(window, small_session())
    ipa = 0x40000000 + 77 * 4096
    window.goto.setText(hex(ipa))
    window._goto_entered()
    idx = window.tree.currentIndex()
    _, pos, _ = window.sim.pgt.lookup(np.array([ipa]))
    assert (int(idx.internalId()) >> 1) - 1 == int(pos[0])
    assert window.model.data(window.model.index(idx.row(), 1, idx.parent())).startswith(hex(ipa))


def test_go_to_ipa_reads_hex_without_0x_and_refuses_bad_text_as_plain_text(qtbot, window):
    """The field is hex (placeholder 0x40042000): "4004d000" is 0x4004d000, not a refusal
    nor a decimal; hostile text is shown escaped and clipped, never as markup."""
    load(window, small_session())
    panel = window.tree_panel
    window.goto.setText("4004d000")
    window._goto_entered()
    assert panel.last_ipa == 0x4004D000
    assert panel.result.text().startswith("0x4004d000: page L3[77]")
    window.goto.setText("<b>40</b>")
    window._goto_entered()
    assert panel.last_ipa == 0x4004D000  # nothing selected
    assert "<b>" not in panel.result.text() and "&lt;b&gt;40&lt;/b&gt;" in panel.result.text()
    window.goto.setText("0x" + "f" * 5000)
    window._goto_entered()
    assert "outside the IPA space (below 0x10000000000)" in panel.result.text()
    assert len(panel.result.text()) < 200


def test_overlapping_memslot_shows_eexist_and_the_run_goes_on(qtbot, window):
    load(window, small_session(migration={"policy": "qemu", "start_ms": 1e6, "timeout_s": 60}))
    window.runner.req_speed.emit(1.0)
    window.runner.req_running.emit(True)
    ed = window.memslots
    ed.f_id.setText("7")
    ed.f_base.setText("0x40100000")
    ed.f_size.setText("1MiB")
    ed._add()
    qtbot.waitUntil(lambda: "EEXIST" in ed.status.text(), timeout=10_000)
    assert "overlaps slot 0" in ed.status.text()
    assert 7 not in window.sim.vm.slots
    qtbot.waitUntil(lambda: window.last_frame is not None, timeout=5_000)
    t = window.last_frame.snapshot.t_ns
    qtbot.waitUntil(lambda: window.last_frame.snapshot.t_ns > t, timeout=10_000)
    assert "EEXIST" in window.messages.toPlainText()


def test_pause_and_resume(qtbot, window):
    load(window, small_session())
    window.runner.req_speed.emit(0.5)
    qtbot.waitUntil(lambda: window.last_frame is not None, timeout=5_000)
    window.toggle_run()
    qtbot.waitUntil(lambda: window.last_frame.running, timeout=5_000)
    qtbot.waitUntil(lambda: window.last_frame.snapshot.t_ns > 0, timeout=5_000)
    window.toggle_run()
    qtbot.waitUntil(lambda: not window.last_frame.running, timeout=5_000)
    t = window.sim.t_ns
    qtbot.wait(300)
    assert window.sim.t_ns == t
    window.toggle_run()
    qtbot.waitUntil(lambda: window.sim.t_ns > t, timeout=5_000)


def test_engine_exception_is_shown_not_raised(qtbot, window):
    load(window, small_session())

    def broken(*a, **k):
        raise RuntimeError("simulated engine failure")

    window.sim.advance = broken
    window.runner.req_running.emit(True)
    qtbot.waitUntil(
        lambda: "simulated engine failure" in window.messages.toPlainText(), timeout=5_000
    )
    qtbot.waitUntil(lambda: window.start_btn.text() == "Start", timeout=5_000)
    assert window.runner.thread.isRunning()  # the worker survives, paused


def test_save_records_live_edits_and_reopens(qtbot, window, tmp_path):
    load(window, small_session())
    window.send_edit({"action": "set_workload", "workload": "hot", "rate": "1000 pages/s"})
    qtbot.waitUntil(lambda: "applied" in window.workloads.status.text(), timeout=5_000)
    path = tmp_path / "s.json"
    window._save_to(path)
    data = json.loads(path.read_text())
    assert data["events"][0]["action"] == "set_workload"
    assert data["view"]["mode"] == "heat"
    assert window.open_path(path)


def test_bad_session_is_refused_and_the_app_keeps_running(qtbot, window, tmp_path, monkeypatch):
    from PySide6.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: None)
    load(window, small_session())
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "dirtylog-session", "version": 1, "vcpus": 0}')
    assert not window.open_path(bad)
    assert "vcpus" in window.messages.toPlainText()
    assert window.runner.thread.isRunning()


def launch(tmp_path, *args, timeout=240):
    """Run the app's launcher in a subprocess, offscreen, with throwaway settings."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    cmd = [sys.executable, "-m", "app.launch", *args, "--settings-dir", str(tmp_path)]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_scripted_screenshot(tmp_path):
    shot = tmp_path / "shot.png"
    session = tmp_path / "s.json"
    session.write_text(json.dumps(small_session()))
    out = launch(tmp_path, str(session), "--run-rounds", "2", "--screenshot", str(shot), "--quit")
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # what the picture shows, not only that it is one: the window at the scripted default
    # size (1600x1000), the run's end in the outcome card's "good" colour (#1f3d2b: this
    # 32 MiB guest at 256 Mbit/s completes and verifies after 0.8 s), and the
    # write-heat map with both ends of matplotlib's inferno scale: never-written pages
    # (0, 0, 4) and the 1 % hot set, written ~200 times each, saturated at (252, 255, 164)
    size, pixels = _png_colours(shot)
    assert size == (1600, 1000)
    assert pixels[(0x1F, 0x3D, 0x2B)] > 10_000 and pixels[(0x4A, 0x1F, 0x1F)] == 0
    assert pixels[(0, 0, 4)] > 100_000 and pixels[(252, 255, 164)] > 0


def _png_colours(path) -> tuple[tuple[int, int], Counter]:
    """A PNG's (width, height) and its pixel count per RGB colour."""
    img = QImage(str(path)).convertToFormat(QImage.Format.Format_RGB888)
    w, h = img.width(), img.height()
    rows = np.frombuffer(img.constBits(), np.uint8).reshape(h, img.bytesPerLine())
    rgb = rows[:, : 3 * w].reshape(-1, 3)
    colours, counts = np.unique(rgb, axis=0, return_counts=True)
    return (w, h), Counter(
        {tuple(map(int, c)): int(n) for c, n in zip(colours, counts, strict=True)}
    )


def test_scripted_mode_refuses_a_bad_session(tmp_path):
    session = tmp_path / "s.json"
    session.write_text("{not json")
    out = launch(tmp_path, str(session), "--run-rounds", "1", "--quit", timeout=120)
    assert out.returncode == 2
    assert "not valid JSON" in out.stderr and "Traceback" not in out.stderr


def test_graph_exports(qtbot, window, tmp_path):
    load(window, small_session())
    wait_rounds(qtbot, window, 2)
    window.graphs.export_csv(str(tmp_path / "g.csv"))
    rows = (tmp_path / "g.csv").read_text().splitlines()
    assert rows[0].startswith("round,") and len(rows) == 1 + len(window.last_frame.snapshot.rounds)
    window.graphs.export_svg(str(tmp_path / "g.svg"))
    assert "<svg" in (tmp_path / "g.svg").read_text()[:500]
    window.graphs.export_png(str(tmp_path / "g.png"))
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"
    written = window.export_bitmaps(tmp_path / "bm")
    assert any(p.suffix == ".bin" for p in written)


def test_heat_map_refines_when_zoomed_in(qtbot, window):
    load(window, small_session())
    window.runner.worker.max_cells = 1024  # 8192 pages fold 8 to a cell in the overview
    window.per_row.setValue(64)  # 16 overview rows of 64 cells
    qtbot.waitUntil(
        lambda: (
            window.heatmap.image is not None
            and window.heatmap.image.pages_per_cell == 8
            and window.heatmap.image.codes.shape == (16, 64)
        ),
        timeout=5_000,
    )
    window.heatmap.plot.getViewBox().setRange(xRange=(0, 64), yRange=(0, 2), padding=0)
    # the view range reaches the worker with a later frame: wait for the frame drawn for it
    qtbot.waitUntil(
        lambda: (
            window.last_frame is not None
            and window.last_frame.detail is not None
            and window.last_frame.detail.pages_per_cell == 2
        ),
        timeout=10_000,
    )
    detail = window.last_frame.detail
    # rows 0-2 hold 1536 pages: the finest fold that fits 1024 cells and divides 8 is 2
    assert detail.pages_per_cell == 2 and detail.first_page == 0
    assert detail.codes.shape[1] == 64 * 4
    # hovering names the page of the finer cell: x = 10.5 is detail column 42, page 84
    assert window.heatmap.cell_to_gfn(10.5, 0.5) == 0x40000 + 84
    window.heatmap.plot.getViewBox().setRange(xRange=(0, 64), yRange=(0, 16), padding=0)
    qtbot.waitUntil(lambda: window.last_frame.detail is None, timeout=5_000)


def test_workload_editor_adds_and_refuses(qtbot, window):
    load(window, small_session(migration={"policy": "qemu", "start_ms": 1e6}))
    ed = window.workloads
    ed.name.setText("z")
    ed.kind.setCurrentText("zipf")
    ed.params.setText('{"s": 1.3}')
    ed._add()
    qtbot.waitUntil(lambda: "applied" in ed.status.text(), timeout=5_000)
    assert [w.name for w in window.sim.workloads] == ["hot", "z"]
    qtbot.waitUntil(lambda: ed.table.rowCount() == 2, timeout=5_000)  # filled from the next frame
    ed.table.setCurrentCell(1, 0)  # selecting a workload loads it into the form
    assert json.loads(ed.params.text()) == {"s": 1.3} and ed.name.text() == "z"
    ed.params.setText('{"s": -1}')
    ed._set()
    qtbot.waitUntil(lambda: "must be > 0" in ed.status.text(), timeout=5_000)
    assert window.sim.workloads[1].s == 1.3


def test_snapshot_diff_shown_in_the_heat_map(qtbot, window, tmp_path):
    from engine.files.export import BitmapSnapshot, write_snapshot

    load(window, small_session())
    qtbot.waitUntil(lambda: window.last_frame is not None, timeout=5_000)
    words_a = np.zeros(128, np.uint64)
    words_b = np.zeros(128, np.uint64)
    words_a[0] = 0b0111  # pages 0, 1, 2
    words_b[0] = 0b1100  # pages 2, 3
    for name, w in (("a", words_a), ("b", words_b)):
        write_snapshot(BitmapSnapshot(0, 0x40000, 8192, 4096, 1, 0, w), tmp_path, name, "bin")
    counts = window.show_diff(str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert counts == {"only_a": 2, "only_b": 1, "both": 1}
    qtbot.waitUntil(
        lambda: window.heatmap.image is not None and window.heatmap.image.mode == "diff",
        timeout=5_000,
    )
    assert window.heatmap.image.codes[0, :5].tolist() == [2, 2, 4, 3, 1]
    legend = window.heatmap.legend.text()  # the map names both files
    assert "A = a.json (round 1)" in legend and "B = b.json (round 1)" in legend


def test_changing_the_tracking_mode_restarts_the_run(qtbot, window):
    load(window, small_session())
    ed = window.settings_editor
    ed.mode.setCurrentText("ring")
    ed.eager.setText("2MiB")
    ed._apply()
    assert window.sim.vm.tracking.mode == "ring" and window.sim.vm.tracking.eager_split == 2 << 20
    assert window.sim.t_ns == 0
    ed.eager.setText("lots")
    ed._apply()
    assert "tracking.eager_split" in ed.status.text()  # (the field as the session spells it)


def test_autosave_is_written_and_removed_on_a_clean_exit(qtbot, window, tmp_path):
    load(window, small_session())
    window.write_autosave()
    auto = window.autosave_path()  # (one per running instance: autosave-PID.json)
    assert auto == tmp_path / "autosave" / f"autosave-{os.getpid()}.json"
    assert json.loads(auto.read_text())["name"] == "app-test"
    window.close()
    assert not auto.exists()


def test_scripted_mode_without_a_migration_runs_simulated_seconds(tmp_path):
    shot = tmp_path / "shot.png"
    session = tmp_path / "s.json"
    session.write_text(json.dumps(small_session(migration={"policy": "none"})))
    out = launch(
        tmp_path,
        str(session),
        "--run-rounds",
        "1",
        "--screenshot",
        str(shot),
        "--quit",
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert shot.exists()


def test_a_paused_run_sends_no_frames_until_something_changes(qtbot, window):
    """Paused, the worker renders nothing (it used to redraw the same frame 30 times a second);
    a step or a view change still shows at once."""
    load(window, small_session())
    qtbot.waitUntil(lambda: window.last_frame is not None, timeout=5000)
    frames = []
    window.frame_shown.connect(frames.append)
    qtbot.wait(400)
    assert frames == []
    window.runner.req_step_tick.emit()
    qtbot.waitUntil(lambda: len(frames) == 1, timeout=5000)
    assert frames[0].snapshot.tick == 1 and not frames[0].running


def test_heat_drawn_with_a_gain_is_the_scaled_layer():
    """The live view draws heat from the simulation's own array and its decay factor; the
    image (overview and detail) is the one of the decayed layer itself."""
    from app.heatmap_data import render_detail

    rng = np.random.default_rng(5)
    raw = (rng.random(20_000, dtype=np.float32) * 40) ** 2
    raw[::3] = 0
    gain = 0.3125  # (exact in float32: the two ways round the same)
    scaled = raw * np.float32(gain)
    a = render(raw, "heat", 64, 1000, gain=gain)
    b = render(scaled, "heat", 64, 1000)
    assert np.array_equal(a.codes, b.codes) and a.scale == b.scale
    da = render_detail(raw, "heat", a, 3, 9, 1000, gain)
    db = render_detail(scaled, "heat", b, 3, 9, 1000)
    assert np.array_equal(da.codes, db.codes) and da.first_page == db.first_page


def test_the_worker_renders_no_frame_the_gui_has_not_caught_up_with():
    """A frame not yet shown holds back the next (for up to UNSHOWN_WAIT_S); a shown one
    lets it go; a forced frame (a request's answer) always goes.  The worker is driven here in
    the test's thread, its signal connected directly."""
    import time

    from app.runner import FRAME_INTERVAL_S, UNSHOWN_WAIT_S, SimWorker

    worker = SimWorker(Simulation.from_dict(small_session()))
    sent = []
    worker.frame.connect(sent.append)

    def emit_after(seconds, force=False):
        worker._last_frame = time.perf_counter() - seconds  # the last frame went then
        worker._emit(force)

    worker._emit(force=True)
    assert [f.seq for f in sent] == [1]
    emit_after(2 * FRAME_INTERVAL_S)
    assert len(sent) == 1  # frame 1 not shown yet
    worker.shown = 1
    emit_after(FRAME_INTERVAL_S / 2)
    assert len(sent) == 1  # shown, but too soon after it
    emit_after(FRAME_INTERVAL_S)
    assert [f.seq for f in sent] == [1, 2]
    worker._emit(force=True)  # forced: neither the interval nor the unshown frame 2 matter
    assert [f.seq for f in sent] == [1, 2, 3]
    emit_after(UNSHOWN_WAIT_S * 0.9)
    assert len(sent) == 3
    emit_after(UNSHOWN_WAIT_S * 1.1)  # frame 3 lost: after UNSHOWN_WAIT_S the next goes
    assert [f.seq for f in sent] == [1, 2, 3, 4]
    worker.deleteLater()


def test_a_legend_keeps_its_size_whatever_its_text(qapp):
    """New legend text never re-lays out a plot's cell: a legend's height is fixed at
    creation (one or two lines) and it asks for no width."""
    from app.graphs import LegendLine

    one, two = LegendLine(1), LegendLine(2)
    heights = (one.minimumHeight(), two.minimumHeight())
    assert 0 < heights[0] < heights[1] < 2.5 * heights[0]
    for text in ("a", "a<br><i>a tracking mode's note</i>", "━● series " * 40, ""):
        for leg, h in zip((one, two), heights, strict=True):
            leg.setText(text)
            assert leg.text == text
            assert (leg.minimumHeight(), leg.maximumHeight(), leg.minimumWidth()) == (h, h, 0)


def test_a_frame_in_flight_when_the_window_is_deleted_is_dropped(qtbot, tmp_path):
    """A frame queued for the next event-loop turn must not be drawn on a deleted window (CI
    at 8e57c18: ``ImageItem already deleted`` at a test's teardown). pytest-qt fails the test
    on any exception raised in the Qt event loop."""
    import shiboken6
    from PySide6.QtCore import QSettings

    from app.main_window import MainWindow

    w = MainWindow(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat), tmp_path / "a")
    load(w, small_session())
    qtbot.waitUntil(lambda: w.last_frame is not None, timeout=10_000)
    w.modified = False
    w.close()
    w.queue_frame(w.last_frame)
    shiboken6.delete(w)
    qtbot.wait(50)

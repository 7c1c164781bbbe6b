"""A run's counters are listed in name order, so `dirtylog run --json` is byte-identical at any
batch size (the one-timeline rule holds for the bytes, not only the values).

``vm.stats`` and ``pgt.tlbi`` are Counters, which keep the order their keys first appeared in;
that order followed the order events happened within a batch (e.g. ``dbm_dirty`` before or
after ``translation_faults`` depending on whether a read and a write of a page shared a batch).
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_vm_stats_and_tlbi_keys_are_in_name_order(tmp_path):
    out = tmp_path / "r.json"
    session = ROOT / "resources" / "sessions" / "mode-dbm.json"
    assert main(["run", str(session), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    # mode-dbm's counters first appear as mmio_exits, user_exits, dbm_dirty
    assert list(result["vm_stats"]) == ["dbm_dirty", "mmio_exits", "user_exits"]
    assert list(result["tlbi"]) == sorted(result["tlbi"]) and len(result["tlbi"]) >= 2

"""``dirtylog kvm calibrate`` on the real KVM: the arithmetic between what it measured and what
it reports (never the values' size): each figure's median/min/max of its repeats, the printed
table the same numbers, and the profile the documented mapping of the medians (CostModel
fields; ``desc_read``/``desc_write`` half each of GET's per-dirty-page cost)."""

import json
import statistics

import pytest
from kvm_available import needs_kvm

from engine.cli.main import main

pytestmark = needs_kvm()


def test_profile_and_table_follow_from_the_repeats(tmp_path, capsys):
    out = tmp_path / "costs.json"
    assert main(["kvm", "calibrate", "--pages", "512", "--repeats", "3", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    doc = json.loads(out.read_text())
    figs = doc["figures"]
    for name, f in figs.items():
        values = f["values_ns"]
        assert len(values) == 3
        # the median of the three repeats (each rounded to 0.1 ns apart from the median itself)
        assert f["median_ns"] == pytest.approx(statistics.median(values), abs=0.051), name
        assert f["min_ns"] == pytest.approx(min(values), abs=0.051)
        assert f["max_ns"] == pytest.approx(max(values), abs=0.051)
        row = f"{name:22s} {f['median_ns']:>9,.1f} ns {f['min_ns']:>9,.1f} ns "
        assert row + f"{f['max_ns']:>9,.1f} ns  {f['per']}" in text
    med = {name: max(0.0, f["median_ns"]) for name, f in figs.items()}
    costs = doc["costs"]
    tol = 0.051  # the JSON's medians are rounded to 0.1 ns
    assert costs["fault_exit"] == pytest.approx(med["fault_exit"], abs=tol)
    assert costs["bitmap_word"] == pytest.approx(med["get_per_word"], abs=tol)
    assert costs["desc_read"] == costs["desc_write"]
    assert costs["desc_read"] == pytest.approx(med["get_per_dirty_page"] / 2, abs=tol)
    assert costs["ring_push"] == pytest.approx(med["ring_push"], abs=tol)
    assert costs["ring_reset_entry"] == pytest.approx(med["ring_reset_entry"], abs=tol)
    for k, v in costs.items():
        assert f"  {k:18s} {v:>10,.1f} ns" in text

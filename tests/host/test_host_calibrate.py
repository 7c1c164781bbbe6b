"""``dirtylog kvm calibrate``: figures measured on the real KVM and a profile a session takes."""

import json

from kvm_available import needs_kvm

from engine.cli.main import main
from engine.migration.simulation import Simulation

pytestmark = needs_kvm()


def test_calibrate_writes_a_profile_a_session_uses(tmp_path, capsys):
    out = tmp_path / "costs.json"
    assert main(["kvm", "calibrate", "--pages", "512", "--repeats", "2", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("measured on this host's real KVM")
    doc = json.loads(out.read_text())
    figs = doc["figures"]
    for name in ("fault_exit", "get_per_word", "get_per_dirty_page", "clear_per_dirty_page",
                 "enable_per_page", "ring_push", "ring_reset_entry", "python_ioctl"):  # fmt: skip
        f = figs[name]
        assert len(f["values_ns"]) == 2 and f["min_ns"] <= f["median_ns"] <= f["max_ns"]
    # a write-protection fault is a real exit: it costs more than Python's own ioctl
    assert figs["fault_exit"]["median_ns"] > figs["python_ioctl"]["median_ns"] / 4
    session = {
        "format": "dirtylog-session",
        "version": 2,
        "costs": doc["costs"],
        "memslots": [{"id": 0, "base": "0x40000000", "size": "1MiB", "flags": ["log_dirty"]}],
        "migration": {"policy": "none", "timeout_s": 0.001},
    }
    sim = Simulation.from_dict(session)
    assert sim.vm.costs.fault_exit == doc["costs"]["fault_exit"]


def test_calibrate_refuses_bad_options(capsys):
    assert main(["kvm", "calibrate", "--pages", "100"]) == 2
    assert "--pages" in capsys.readouterr().err
    assert main(["kvm", "calibrate", "--repeats", "0"]) == 2

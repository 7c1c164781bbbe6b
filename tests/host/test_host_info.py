"""``dirtylog kvm info`` and the refusals of the device layer."""

import json

from kvm_available import needs_kvm

import engine.host.device as device
from engine.cli.main import main


@needs_kvm()
def test_info_reports_caps_mmu_and_native(capsys):
    assert main(["kvm", "info"]) == 0
    out = capsys.readouterr().out
    keys = ["API version", "MANUAL_DIRTY_LOG_PROTECT2", "DIRTY_LOG_RING ", "MMU", "guest writer"]
    keys += ["DIRTY_LOG_RING_WITH_BITMAP", "ARM_EAGER_SPLIT_CHUNK_SIZE"]
    for key in keys:
        assert key in out
    assert main(["kvm", "info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["api_version"] == 12
    assert data["dirty_ring_max_bytes"] == 0 or data["dirty_ring_max_bytes"] >= 4096
    n = data["native"]
    assert n["pages"] == 256 and n["native"] == (n["pf_fixed"] >= 256 > n["insn_emulation"])


def test_other_architectures_are_refused_in_one_sentence(monkeypatch, capsys):
    monkeypatch.setattr(device, "arch", lambda: "aarch64")
    reason = device.unavailable_reason()
    assert reason.startswith("this host is aarch64") and "x86-64 hosts only" in reason
    assert main(["kvm", "info"]) == 3
    assert "x86-64 hosts only" in capsys.readouterr().err


def test_missing_device(tmp_path):
    assert "does not exist" in device.unavailable_reason(str(tmp_path / "kvm"))

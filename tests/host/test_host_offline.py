"""Parts of the real-KVM backend that need no /dev/kvm: refusals, address placement, the
emulation warning."""

import numpy as np
import pytest

from engine.host.replay import ReplaySetup, check_replayable, emulation_note, gpa_shift
from engine.kvm import oplog as OL
from engine.util.errors import ConfigError

GIB = 1 << 30


def _setup(**kw):
    base = dict(mode="bitmap", initially_set=False, ring_entries=4096, vcpus=1,
                page_size=4096, strategy="rmap")  # fmt: skip
    return ReplaySetup(**{**base, **kw})


def _slot(slot, base, size, flags=1):
    return OL.SetMemslot(slot, base // 4096, size // 4096, flags, 4096, False)


def test_refusals_name_the_field():
    with pytest.raises(ConfigError, match="geometry.granule"):
        check_replayable(_setup(page_size=65536), [])
    with pytest.raises(ConfigError, match="tracking.mode"):
        check_replayable(_setup(mode="dbm"), [])
    access = OL.Access(np.zeros(1, np.int64), np.ones(1, bool), np.full(1, -1), 0)
    with pytest.raises(ConfigError, match="vcpu -1"):
        check_replayable(_setup(mode="ring"), [access])
    check_replayable(_setup(mode="bitmap"), [access])  # a bitmap takes it


def test_guest_size_limit_at_the_boundary():
    check_replayable(_setup(), [_slot(0, GIB, 4 * GIB)])  # exactly 4 GiB
    with pytest.raises(ConfigError, match="at most 4 GiB"):
        check_replayable(_setup(), [_slot(0, GIB, 4 * GIB), _slot(1, 8 * GIB, 4096)])
    # a deleted slot no longer counts
    check_replayable(_setup(), [_slot(0, GIB, 4 * GIB), _slot(0, GIB, 0), _slot(1, GIB, GIB)])


def test_slots_are_placed_inside_the_guest_map():
    lo, hi = 4 << 20, 64 * GIB
    assert gpa_shift([_slot(0, GIB, GIB)], lo, hi) == 0  # already inside: kept
    high = 1 << 39
    shift = gpa_shift([_slot(0, high, GIB), _slot(1, high + 2 * GIB, GIB)], lo, hi)
    assert high + shift == GIB  # moved down as a whole, gaps kept
    with pytest.raises(ConfigError, match="memslots"):
        gpa_shift([_slot(0, GIB, GIB), _slot(1, 1 << 39, GIB)], lo, hi)


def test_emulation_is_detected_from_the_stats():
    native = {"insn_emulation": 40, "exits": 5000}
    assert emulation_note({}, native) == []
    emulated = {"insn_emulation": 2_000_000, "exits": 40}
    assert "instruction emulator" in emulation_note({}, emulated)[0]


def test_replay_refuses_an_unwritable_json_before_running(tmp_path, capsys):
    """``kvm replay --json DIR`` is refused naming --json before the engine run and the
    replay (it ran both, then failed to write), and before KVM's availability (exit 3)."""
    import json

    from engine.cli.main import main

    session = tmp_path / "s.json"
    session.write_text(json.dumps({"format": "dirtylog-session", "version": 2}))
    assert main(["kvm", "replay", "--json", str(tmp_path), str(session)]) == 2
    assert capsys.readouterr().err == (
        f"dirtylog kvm: --json: {tmp_path} is a directory; give a file name\n"
    )


def test_calibrate_refuses_bad_options_before_kvm_and_writes_nothing_early(
    tmp_path, capsys, monkeypatch
):
    """Bad --pages/--repeats/--json are exit 2 even where KVM cannot be used (they were
    checked after it: exit 3); --json is checked without being written (an empty file was
    left behind when the measuring stopped)."""
    from types import SimpleNamespace

    from engine.cli.main import main
    from engine.host import calibrate, device

    monkeypatch.setattr(device, "unavailable_reason", lambda: "no KVM here (test)")
    cases = [
        (["--pages", "255"], "--pages: pages in the measured slot (4 KiB each) must be "
         "256..262144, got 255"),
        (["--pages", "262145"], "--pages: pages in the measured slot (4 KiB each) must be "
         "256..262144, got 262145"),
        (["--repeats", "0"], "--repeats: fresh VMs per figure must be 1..100, got 0"),
        (["--json", str(tmp_path)], f"--json: {tmp_path} is a directory; give a file name"),
    ]  # fmt: skip
    for extra, sentence in cases:
        assert main(["kvm", "calibrate", *extra]) == 2
        assert capsys.readouterr().err == f"dirtylog kvm: {sentence}\n"
    for command, shown in ((["kvm", "info"], "kvm info"), (["kvm", "calibrate"], "kvm calibrate")):
        assert main([*command]) == 3  # both ends of the ranges pass the checks: KVM's turn
        assert capsys.readouterr().err == f"dirtylog {shown}: no KVM here (test)\n"
    assert main(["kvm", "calibrate", "--pages", "256", "--repeats", "100"]) == 3
    assert main(["kvm", "calibrate", "--pages", "262144", "--repeats", "1"]) == 3
    capsys.readouterr()

    def interrupted(pages, repeats):
        raise KeyboardInterrupt

    monkeypatch.setattr(device, "unavailable_reason", lambda: None)
    monkeypatch.setattr(device, "probe", lambda: SimpleNamespace(arch="x86_64", mmu="test"))
    monkeypatch.setattr(calibrate, "calibrate", interrupted)
    out = tmp_path / "costs.json"
    assert main(["kvm", "calibrate", "--json", str(out)]) == 130
    assert not out.exists()

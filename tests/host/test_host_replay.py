"""The engine against the host's real KVM on the same operations: every harvest identical.

A hypothesis property test draws random write traces and tracking modes; the engine runs
the session, its operation log is replayed on a real VM, and every harvest (and every GET
bitmap, and each page's final write count) must be the same.  With the rmap strategy the
fault counts must agree too (x86 protects exactly the set bits)."""

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from kvm_available import needs_kvm

from engine.cli.main import main
from engine.host.replay import record_run, replay, setup_of
from engine.migration.simulation import Simulation

pytestmark = needs_kvm()
BASE = 0x4000_0000
NPAGES = 256


def _session(tmp_path, rows, mode, strategy="rmap", ring=256, initially_set=False, vcpus=1):
    trace = tmp_path / "trace.csv"
    trace.write_text(
        "t_ns,ipa,vcpu\n" + "".join(f"{t},{BASE + p * 4096},{v}\n" for t, p, v in rows)
    )
    tracking = {"mode": mode, "strategy": strategy, "ring_entries": ring}
    if initially_set:
        tracking["initially_set"] = True
    return {
        "format": "dirtylog-session",
        "version": 2,
        "seed": 1,
        "tick_ms": 1,
        "tracking": tracking,
        "vcpus": vcpus,
        "memslots": [{"id": 0, "base": BASE, "size": NPAGES * 4096, "flags": ["log_dirty"]}],
        "workloads": [{"name": "t", "kind": "trace", "path": str(trace)}],
        "migration": {
            "policy": "qemu",
            "bandwidth": "100MiB/s",
            "downtime_limit_ms": 1,
            "timeout_s": 1,
        },
    }


def _replay(tmp_path, data):
    sim = Simulation.from_dict(data, tmp_path)
    setup = setup_of(sim)
    return replay(setup, record_run(sim))


traces = st.lists(
    st.tuples(st.integers(0, 39_999_999), st.integers(0, NPAGES - 1), st.integers(0, 1)),
    min_size=1,
    max_size=600,
).map(sorted)


@settings(max_examples=10, deadline=None)
@given(
    rows=traces,
    mode=st.sampled_from(["bitmap", "manual-clear", "manual-clear+init", "ring"]),
    vcpus=st.sampled_from([1, 2]),
)
def test_random_traces_give_identical_harvests(tmp_path_factory, rows, mode, vcpus):
    """Page sets always; with one vCPU (the real vCPUs of a batch run one after another)
    also every count: faults, ring-full exits (the retried store included), ring entries."""
    tmp_path = tmp_path_factory.mktemp("trace")
    init = mode == "manual-clear+init"
    rows = [(t, p, v % vcpus) for t, p, v in rows]
    data = _session(tmp_path, rows, mode.split("+")[0], initially_set=init, vcpus=vcpus)
    report = _replay(tmp_path, data)
    assert report.rounds, "the run harvested at least once"
    for r in report.rounds:
        assert r.identical, r.as_dict()
        assert r.gets_different == 0
        if vcpus == 1:
            assert r.faults_real == r.faults_model
            assert r.ring_full_real == r.ring_full_model
            assert r.ring_entries_real == r.ring_entries_model
    assert report.content_mismatches == 0


def test_ring_full_exits_and_retries_match_the_engine(tmp_path):
    """A 256-entry ring and 1 000 distinct first writes in one tick: 5 real exits at 192
    entries each, each retried store faulting again; the engine counts the same."""
    rows = [(1_000_000 + i, i, 0) for i in range(1000)]
    data = _session(tmp_path, rows, "ring")
    data["memslots"][0]["size"] = 4096 * 1000
    report = _replay(tmp_path, data)
    total = {k: sum(getattr(r, k) for r in report.rounds) for k in
             ("ring_full_real", "ring_full_model", "faults_real", "faults_model",
              "ring_entries_real", "ring_entries_model")}  # fmt: skip
    assert total["ring_full_real"] == total["ring_full_model"] == 5
    assert total["faults_real"] == total["faults_model"] == 1005
    assert total["ring_entries_real"] == total["ring_entries_model"] == 1005
    assert all(r.identical for r in report.rounds)


def test_reported_pages_equal_the_trace(tmp_path):
    """Independent of the engine: bitmap mode's first harvest after QEMU's setup sync (at
    the migration's start, before any write: it reports nothing) reports exactly the pages
    the trace wrote before it (the whole slot counts as dirty in the migration, not in KVM)."""
    rows = [(1_000_000 * i, (7 * i) % NPAGES, 0) for i in range(30)]
    report = _replay(tmp_path, _session(tmp_path, rows, "bitmap"))
    assert report.rounds[0].slots[0].real_pages == 0  # ram_init_bitmaps' sync at t = 0
    first = report.rounds[1]
    want = {p for t, p, _ in rows if t <= first.t_ns}
    assert first.slots[0].real_pages == len(want)
    assert first.identical


def test_cli_replay_exit_codes_and_json(tmp_path, capsys, monkeypatch):
    rows = [(500_000 * i, (13 * i) % NPAGES, 0) for i in range(60)]
    session = tmp_path / "s.json"
    session.write_text(json.dumps(_session(tmp_path, rows, "ring")))
    out = tmp_path / "r.json"
    assert main(["kvm", "replay", str(session), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "every one identical" in text and "measured on this host" in text
    assert "arm64 re-protects each word's [ffs, fls] span" in text
    data = json.loads(out.read_text())
    assert data["identical"] and data["harvests"] == len(data["rounds"]) > 0
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**_session(tmp_path, rows, "dbm")}))
    assert main(["kvm", "replay", str(bad)]) == 2
    assert "tracking.mode" in capsys.readouterr().err
    big = _session(tmp_path, rows, "bitmap")
    big["geometry"] = {"granule": "64KiB", "ipa_bits": 40}
    bad.write_text(json.dumps(big))
    assert main(["kvm", "replay", str(bad)]) == 2
    assert "geometry.granule" in capsys.readouterr().err


def test_cli_without_kvm_exits_3(tmp_path, capsys, monkeypatch):
    import engine.host.device as device

    monkeypatch.setattr(device, "DEV", str(tmp_path / "no-kvm"))
    assert main(["kvm", "info"]) == 3
    assert "does not exist" in capsys.readouterr().err
    assert main(["kvm", "replay", str(tmp_path / "x.json")]) == 3


def test_sizes_beyond_the_limit_are_refused(tmp_path, capsys):
    data = _session(tmp_path, [(0, 0, 0)], "bitmap")
    data["memslots"][0]["size"] = "5GiB"
    data["memslots"][0]["populate"] = False
    s = tmp_path / "big.json"
    s.write_text(json.dumps(data))
    assert main(["kvm", "replay", str(s)]) == 2
    assert "at most 4 GiB" in capsys.readouterr().err


def test_a_difference_is_reported_with_exit_1(tmp_path, capsys, monkeypatch):
    """Tamper with the engine's log (drop one page from a harvest): exit 1, the page named."""
    import engine.host.replay as replay_mod
    from engine.kvm import oplog as OL

    real_record = replay_mod.record_run

    def tampered(sim, progress=None):
        ops = real_record(sim, progress)
        i = next(  # the first harvest that reports page 0 (QEMU's setup sync reports none)
            i
            for i, op in enumerate(ops)
            if isinstance(op, OL.Harvest) and int(op.reported[0][0]) & 1
        )
        words = ops[i].reported[0].copy()
        words[0] &= ~np.uint64(1)  # page 0 (written below) no longer reported
        ops[i] = OL.Harvest(ops[i].round, ops[i].t_ns, {0: words})
        return ops

    monkeypatch.setattr(replay_mod, "record_run", tampered)
    rows = [(0, 0, 0), (1000, 1, 0)]
    s = tmp_path / "s.json"
    s.write_text(json.dumps(_session(tmp_path, rows, "bitmap")))
    assert main(["kvm", "replay", str(s)]) == 1
    out = capsys.readouterr().out
    assert "DIFFERENT" in out and "only in the real KVM [0]" in out


def test_memslot_changes_replay_identically(tmp_path):
    """Move, add, delete and logging switched off live, with policy fixed and GET + CLEAR:
    every harvest and every page's write count the same on the real KVM."""
    data = {
        "format": "dirtylog-session",
        "version": 2,
        "seed": 3,
        "tracking": {"mode": "manual-clear", "strategy": "rmap"},
        "memslots": [
            {"id": 0, "base": "0x40000000", "size": "4MiB", "flags": ["log_dirty"]},
            {"id": 2, "base": "0x50000000", "size": "2MiB", "flags": ["log_dirty"]},
        ],
        "workloads": [
            {"name": "h", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "50000 pages/s"},
            {"name": "g", "kind": "uniform", "vcpu": 0, "slot": 2, "rate": "20000 pages/s"},
        ],
        "migration": {"policy": "fixed", "harvest_every_ms": 10, "timeout_s": 0.1},
        "events": [
            {"t_ms": 25, "action": "move_memslot", "id": 2, "base": "0x60000000"},
            {
                "t_ms": 40,
                "action": "add_memslot",
                "id": 5,
                "base": "0x70000000",
                "size": "2MiB",
                "flags": ["log_dirty"],
            },  # fmt: skip
            {
                "t_ms": 41,
                "action": "add_workload",
                "name": "n",
                "kind": "uniform",
                "vcpu": 0,
                "slot": 5,
                "rate": "10000 pages/s",
            },  # fmt: skip
            {"t_ms": 60, "action": "delete_memslot", "id": 2},
            {"t_ms": 75, "action": "set_memslot_flags", "id": 0, "flags": []},
        ],
    }
    report = _replay(tmp_path, data)
    assert len(report.rounds) == 10
    assert all(r.identical for r in report.rounds)
    assert set(report.rounds[-1].slots) == {5}  # slot 0 stopped logging, slot 2 is gone
    assert report.content_mismatches == 0

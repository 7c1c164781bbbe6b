"""Workloads: exact rates with carry, each kind's shape, seeded independence, traces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cli.main import main as cli_main
from engine.migration.traces import load_trace, save_trace_csv
from engine.migration.workloads import Accesses, Region, make_workload
from engine.util.errors import ConfigError

REGION = Region(0x40000, 4096)
MS = 1_000_000


def wl(**spec):
    spec.setdefault("name", "w")
    spec.setdefault("kind", "uniform")
    spec.setdefault("rate", 1000)
    w = make_workload(spec, seed=7, page_size=4096, field="workloads[0]")
    if spec["kind"] != "trace":
        w.bind(REGION)
    return w


@given(st.floats(1, 50_000), st.lists(st.integers(1, 3 * MS), min_size=1, max_size=40))
def test_rate_times_active_time_with_exact_carry(rate, actives):
    w = wl(rate=rate)
    total, t = 0, 0
    for a in actives:
        acc = w.accesses(t, t + 3 * MS, a)
        assert ((acc.t_ns > t) & (acc.t_ns <= t + 3 * MS)).all()
        total += len(acc)
        t += 3 * MS
    expected = rate * sum(actives) / 1e9
    assert abs(total - expected) < 1.0 + 1e-6


def test_one_second_at_1000_pages_per_second_is_exactly_1000():
    w = wl(rate=1000)
    assert sum(len(w.accesses(i * MS, (i + 1) * MS, MS)) for i in range(1000)) == 1000


def test_same_seed_same_writes_and_workloads_are_independent():
    a1 = wl(name="a").accesses(0, 10 * MS, 10 * MS)
    a2 = wl(name="a").accesses(0, 10 * MS, 10 * MS)
    b = wl(name="b").accesses(0, 10 * MS, 10 * MS)
    assert np.array_equal(a1.gfn, a2.gfn) and not np.array_equal(a1.gfn, b.gfn)


def test_sequential_once_hotcold_zipf():
    seq = wl(kind="sequential", rate=1_000_000).accesses(0, 5 * MS, 5 * MS)
    assert (np.diff(seq.gfn) == 1).all() or (np.diff(seq.gfn) % 4096 == 1).all()
    once = wl(kind="once", rate=1_000_000)
    pages = np.concatenate([once.accesses(i * MS, (i + 1) * MS, MS).gfn for i in range(5)])
    assert np.array_equal(np.sort(pages), REGION.base_gfn + np.arange(4096)) and once.finished
    hc = wl(kind="hotcold", rate=1_000_000, hot_fraction=0.1, hot_share=0.9).accesses(
        0, 100 * MS, 100 * MS
    )
    hot = np.mean(hc.gfn - REGION.base_gfn < 409)
    assert abs(hot - (0.9 + 0.1 * 0.1)) < 0.01  # hot share plus the cold writes that land there
    z = wl(kind="zipf", rate=1_000_000, s=1.2).accesses(0, 100 * MS, 100 * MS)
    counts = np.bincount(z.gfn - REGION.base_gfn, minlength=4096)
    ranked = np.sort(counts)[::-1]
    assert ranked[0] > 5 * ranked[10] > 0


def test_memstress_passes_and_write_percent():
    m = wl(kind="memstress", rate=1_000_000, write_percent=30, random_access=True)
    acc = Accesses.concat([m.accesses(i * MS, (i + 1) * MS, MS) for i in range(10)])
    first = acc.gfn[:4096]
    assert np.array_equal(np.sort(first), REGION.base_gfn + np.arange(4096))  # one pass
    assert m.passes_completed == 2
    assert abs(acc.write.mean() - 0.3) < 0.02


def test_phases_switch_on_time():
    p = wl(
        kind="phases",
        phases=[
            {"kind": "uniform", "rate": 1000, "duration_ms": 10},
            {"kind": "uniform", "rate": 100_000, "duration_ms": 10},
        ],
    )
    slow = sum(len(p.accesses(i * MS, (i + 1) * MS, MS)) for i in range(10))
    fast = sum(len(p.accesses(i * MS, (i + 1) * MS, MS)) for i in range(10, 20))
    again = sum(len(p.accesses(i * MS, (i + 1) * MS, MS)) for i in range(20, 30))
    assert (slow, fast) == (10, 1000) and again == 10


@pytest.mark.parametrize(
    "spec, field, words",
    [
        ({"kind": "uniform", "rate": -5}, "workloads[0].rate", "0 to 1e9 pages/s"),
        (
            {"kind": "memstress", "rate": 1, "write_percent": 101},
            "workloads[0].write_percent",
            "0..100",
        ),
        ({"kind": "zipf", "rate": 1, "s": 0}, "workloads[0].s", "> 0"),
        ({"kind": "phases", "phases": []}, "workloads[0].phases", "1 to 64"),
        ({"kind": "trace"}, "workloads[0].path", "path"),
    ],
)
def test_workload_refusals(spec, field, words):
    with pytest.raises(ConfigError) as e:
        wl(**spec)
    assert e.value.field == field and words in e.value.rule


def test_trace_csv_and_npz(tmp_path):
    t = np.array([1, 5, 5, 9]) * MS
    ipa = np.array([0x40000000, 0x40001000, 0x40002000, 0x40001000])
    save_trace_csv(tmp_path / "t.csv", t, ipa, np.array([0, 1, 0, 1]))
    tr = load_trace(tmp_path / "t.csv")
    assert tr.t_ns.tolist() == t.tolist() and tr.ipa.tolist() == ipa.tolist()
    np.savez(tmp_path / "t.npz", t_ns=t, ipa=ipa)
    assert load_trace(tmp_path / "t.npz").vcpu is None
    w = make_workload({"name": "t", "kind": "trace", "path": "t.csv"}, 1, 4096, "w", tmp_path)
    acc = w.accesses(0, 5 * MS, 0)  # a trace ignores guest time: (0, 5 ms]
    assert acc.gfn.tolist() == [0x40000, 0x40001, 0x40002] and acc.vcpu.tolist() == [0, 1, 0]
    assert len(w.accesses(5 * MS, 10 * MS, 0)) == 1 and w.finished


@pytest.mark.parametrize(
    "text, words",
    [
        ("t,ipa\n1,2\n", "line 1"),
        ("t_ns,ipa\n1,0x1000\n2\n", "line 3 of t.csv has 1 columns"),
        ("t_ns,ipa\n1,0x1000\nfoo,0x2000\n", 'line 3 of t.csv: "foo" is not an integer'),
        ("t_ns,ipa\n5,0x1000\n4,0x2000\n", "line 3 of t.csv: t_ns 4 is before"),
        ("t_ns,ipa\n", "no rows"),
        ("t_ns,ipa\n1,-4096\n", "line 2 of t.csv: ipa -4096 must be 0 to 2"),
    ],
)
def test_malformed_traces_name_the_line(tmp_path, text, words):
    (tmp_path / "t.csv").write_text(text)
    with pytest.raises(ConfigError, match=words):
        load_trace(tmp_path / "t.csv")


def test_perftest_prints_the_selftest_lines(capsys):
    assert cli_main(["perftest", "-b", "64M", "-v", "2", "-i", "3", "-w", "50"]) == 0
    out = capsys.readouterr().out
    assert "modelled" in out.splitlines()[0]
    for line in (
        "Populate memory time: ",
        "Enabling dirty logging time: ",
        "Iteration 1 dirty memory time: ",
        "Iteration 3 get dirty log time: ",
        "Iteration 2 clear dirty log time: ",
        "Disabling dirty logging time: ",
        "Get dirty log over 3 iterations took ",
        "Clear dirty log over 3 iterations took ",
    ):
        assert line in out
    import re

    assert re.search(r"Iteration 1 dirty memory time: \d+\.\d{9}s", out)
    # the values (tests/test_figures_arithmetic.py has more): 64 MiB = 16384 pages a vCPU, each
    # store 25 ns; populate faults on each page (fault_exit 2500 ns); INITIALLY_SET, so
    # iteration 1 takes no exit; GET copies the 512-word bitmap (2 ns a word) and disabling
    # frees it; the totals add the printed lines and the average is their third
    ns = {
        head: [int(a + b) for a, b in re.findall(r"(\d+)\.(\d{9})s", line)]
        for line in out.splitlines()
        for head in [re.split(r": | took ", line)[0]]
    }
    assert ns["Populate memory time"] == [16384 * 2525] == [41_369_600]
    assert ns["Iteration 1 dirty memory time"] == [16384 * 25]
    for it in (2, 3):  # the slowest vCPU's stores, and an exit for each page it wrote (~half)
        faults, rest = divmod(ns[f"Iteration {it} dirty memory time"][0] - 16384 * 25, 2500)
        assert rest == 0 and 7800 < faults < 8600
    for it in (1, 2, 3):
        assert ns[f"Iteration {it} get dirty log time"] == [512 * 2]
    assert ns["Disabling dirty logging time"] == [512 * 2]
    assert ns["Get dirty log over 3 iterations"] == [3 * 1024, 1024]
    clears = [ns[f"Iteration {it} clear dirty log time"][0] for it in (1, 2, 3)]
    assert ns["Clear dirty log over 3 iterations"] == [sum(clears), sum(clears) // 3]
    assert cli_main(["perftest", "-i", "1"]) == 2


def test_a_trace_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a regular file"):
        load_trace(tmp_path)


def test_a_trace_write_at_time_zero_lands_in_the_first_tick(tmp_path):
    save_trace_csv(tmp_path / "t.csv", [0, 0, MS], [0x40000000, 0x40001000, 0x40002000])
    w = make_workload({"name": "t", "kind": "trace", "path": "t.csv"}, 1, 4096, "w", tmp_path)
    assert w.accesses(0, MS, MS).gfn.tolist() == [0x40000, 0x40001, 0x40002]

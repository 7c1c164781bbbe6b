"""The arithmetic behind the numbers ``dirtylog bench``, ``dirtylog perftest`` and ``dirtylog kvm
calibrate`` report, on deterministic inputs: a fake clock that advances by known amounts, hand-made
measurements, or the cost model's unit costs, with every expected value worked by hand.  No test
here measures anything or asserts a speed goal."""

from __future__ import annotations

import json
import re
import types

import pytest

from engine.cli import bench_engine as BE
from engine.cli import bench_migration as BM
from engine.cli.main import main as cli_main
from engine.cli.perftest import GUEST_WRITE_NS
from engine.host import calibrate as CAL
from engine.kvm.costs import CostModel
from engine.kvm.wrprotect import STRATEGIES


class PairClock:
    """A fake timer for code that reads it in start/stop pairs: each stop is ``durations[i]``
    seconds after its start (a start is always 0.0, so every elapsed time is exactly the
    duration given)."""

    def __init__(self, durations):
        self.durations = list(durations)
        self.started = False

    def __call__(self) -> float:
        if not self.started:
            self.started = True
            return 0.0
        self.started = False
        return self.durations.pop(0)

    def done(self) -> bool:
        return not self.durations and not self.started


def fake_time(monkeypatch, module, **clocks):
    """Replace ``module.time`` (only that module's name for it) by the given clocks."""
    monkeypatch.setattr(module, "time", types.SimpleNamespace(**clocks))


# -- dirtylog bench, figures 1-4 (engine/cli/bench_engine.py) -----------------------------------


def test_figure_1_is_the_best_enable_over_the_best_copy(monkeypatch):
    # five copies (best 2 ms), then three enables (best 3 ms): 3 / 2 = 1.5
    clock = PairClock([0.004, 0.002, 0.003, 0.005, 0.006] + [0.005, 0.003, 0.004])
    fake_time(monkeypatch, BE, perf_counter=clock)
    f = BE.fig_enable(1024)
    assert clock.done()
    assert (f.id, f.value, f.unit, f.goal, f.met) == (1, 1.5, "ratio", "<= 2.0", True)
    assert f.detail == {"enable_s": pytest.approx(0.003), "copy_s": pytest.approx(0.002)}
    assert f.name == "enable logging on a 1,024-page slot ÷ streaming copy"
    # the goal's edge: exactly 2.0 is met, just over it is not
    fake_time(monkeypatch, BE, perf_counter=PairClock([0.002] * 5 + [0.004] * 3))
    assert BE.fig_enable(1024).met is True
    fake_time(monkeypatch, BE, perf_counter=PairClock([0.002] * 5 + [0.00401] * 3))
    assert BE.fig_enable(1024).met is False


def test_figure_2_is_the_best_strategy_median_of_get_over_its_neighbouring_copies(monkeypatch):
    # per strategy: copy, then five times (GET, copy); copies 1 ms, except 0.5 ms after GET 3.
    # GETs k x (1.5, 2, 1.2, 3, 1.8) ms: ratios k x (1.5, 2, 2.4, 6, 1.8) -> median k x 2
    factors = dict(zip(STRATEGIES, (2.0, 0.75, 3.0, 4.0), strict=True))
    durations = []
    for k in factors.values():
        copies = [0.001, 0.001, 0.001, 0.0005, 0.001, 0.001]
        gets = [k * g for g in (0.0015, 0.002, 0.0012, 0.003, 0.0018)]
        durations.append(copies[0])
        for g, c in zip(gets, copies[1:], strict=True):
            durations += [g, c]
    clock = PairClock(durations)
    fake_time(monkeypatch, BE, thread_time=clock)
    f = BE.fig_get(4096)
    assert clock.done()
    assert (f.id, f.value, f.unit, f.goal, f.met) == (2, 1.5, "ratio", "<= 2.0", True)
    for strategy, k in factors.items():
        d = f.detail[strategy]
        assert d["ratio"] == round(2 * k, 2)
        assert d["get_cpu_s"] == pytest.approx(0.0012 * k)
        assert d["copy_cpu_s"] == pytest.approx(0.0005)


def test_figure_3_is_the_slowest_strategy_median_speedup_of_reference_over_vectorised(
    monkeypatch,
):
    # per strategy: 5 vectorised runs, then three times (reference, 5 vectorised); the
    # vectorised series' bests are 1, 2, 1, 1 ms; references k x (0.2, 0.6, 0.15) s:
    # ratios k x (200, 600, 150) ms/ms -> median k x 200
    factors = dict(zip(STRATEGIES, (1.0, 0.9, 2.0, 1.5), strict=True))
    durations = []
    for k in factors.values():
        series = [[0.003, 0.001, 0.002, 0.004, 0.005], [0.002] * 5, [0.001] * 5, [0.001] * 5]
        refs = [k * r for r in (0.2, 0.6, 0.15)]
        durations += series[0]
        for r, s in zip(refs, series[1:], strict=True):
            durations += [r, *s]
    clock = PairClock(durations)
    fake_time(monkeypatch, BE, thread_time=clock)
    f = BE.fig_reference(4096)
    assert clock.done()
    assert (f.id, f.value, f.unit, f.goal, f.met) == (3, 180.0, "× faster", ">= 150", True)
    for strategy, k in factors.items():
        d = f.detail[strategy]
        assert d["speedup"] == round(200 * k, 1)
        assert d["vectorised_cpu_s"] == pytest.approx(0.001)
        assert d["reference_cpu_s"] == pytest.approx(0.15 * k)
        assert d["reference_runs_cpu_s"] == [round(r * k, 4) for r in (0.2, 0.6, 0.15)]


@pytest.mark.parametrize(("ratio", "met"), [(2.0, True), (2.0 + 2**-20, False)])
def test_figure_2_goal_edge(monkeypatch, ratio, met):
    unit = 2.0**-10  # exact binary fractions: the ratio is exactly the one given
    one = [unit] + [ratio * unit, unit] * 5
    fake_time(monkeypatch, BE, thread_time=PairClock(one * len(STRATEGIES)))
    f = BE.fig_get(1024)
    assert (f.value, f.met) == (round(ratio, 2), met)


@pytest.mark.parametrize(("speedup", "met"), [(150.0, True), (150.0 - 2**-20, False)])
def test_figure_3_goal_edge(monkeypatch, speedup, met):
    unit = 2.0**-10
    one = [unit] * 5 + ([speedup * unit] + [unit] * 5) * 3
    fake_time(monkeypatch, BE, thread_time=PairClock(one * len(STRATEGIES)))
    f = BE.fig_reference(1024)
    assert (f.value, f.met) == (round(speedup, 1), met)


def test_figure_4_is_wall_seconds_times_1e9_over_the_writes(monkeypatch):
    # 1000 writes a batch: 40 µs (the first, not counted), then 60, 50, 70, 80, 90 µs,
    # i.e. elapsed_s x 1e9 / 1000 = 40, 60, 50, 70, 80, 90 ns per write
    nwrites = 1000
    per_write = [40.0, 60.0, 50.0, 70.0, 80.0, 90.0]
    clock = PairClock([ns * nwrites / 1e9 for ns in per_write])
    fake_time(monkeypatch, BE, perf_counter=clock)
    f = BE.fig_write_path(nwrites, npages=1 << 12)
    assert clock.done()
    assert (f.id, f.value, f.unit, f.goal, f.met) == (4, 50.0, "ns/write", "<= 70", True)
    assert f.detail["first_batch_ns_per_write"] == 40.0
    assert f.detail["batches_ns_per_write"] == [60.0, 50.0, 70.0, 80.0, 90.0]
    assert f.name == "guest write path: 1,000 random writes to a logged slot"
    # the goal's side: a best of 69.9 ns is met, 70.2 is not
    fake_time(
        monkeypatch, BE, perf_counter=PairClock([x * 1e-6 for x in [90, 80, 69.9] + [75] * 3])
    )
    assert BE.fig_write_path(nwrites, npages=1 << 12).met is True
    fake_time(monkeypatch, BE, perf_counter=PairClock([x * 1e-6 for x in [90] + [70.2] * 5]))
    assert BE.fig_write_path(nwrites, npages=1 << 12).met is False


# -- dirtylog bench, figures 5 and 6 (engine/cli/bench_migration.py) ---------------------------


def _fake_run(monkeypatch, result):
    from engine.migration.simulation import Simulation

    monkeypatch.setattr(Simulation, "run", lambda self: result)


RESULT = {
    "total_time_ms": 84_000.0,
    "rounds_count": 7,
    "outcome": "completed",
    "verification": {"mismatches": 0, "pages_checked": 4096},
}


@pytest.mark.parametrize("fid", list(BM.MODES))
def test_figure_5_is_simulated_seconds_over_wall_seconds(monkeypatch, fid):
    # 84 000 simulated ms = 84 s, run in 0.5 wall s: 168 simulated s per wall s
    _fake_run(monkeypatch, RESULT)
    clock = PairClock([0.5])
    fake_time(monkeypatch, BM, perf_counter=clock)
    f = BM.fig_realtime(True, fid, npages=1 << 12)
    assert clock.done()
    assert (f.id, f.value, f.unit, f.goal, f.met) == (
        fid,
        168.0,
        "simulated s / wall s",
        ">= 10",
        True,
    )
    assert f.detail == {
        "simulated_s": 84.0,
        "wall_s": 0.5,
        "rounds": 7,
        "outcome": "completed",
        "mismatches": 0,
    }
    # the goal's edge: 84 s in 8.5 s is 9.88; 80 s in 8 s is exactly 10
    _fake_run(monkeypatch, RESULT | {"total_time_ms": 80_000.0})
    fake_time(monkeypatch, BM, perf_counter=PairClock([8.0]))
    assert BM.fig_realtime(True, fid, npages=1 << 12).met is True
    _fake_run(monkeypatch, RESULT)
    fake_time(monkeypatch, BM, perf_counter=PairClock([8.5]))
    g = BM.fig_realtime(True, fid, npages=1 << 12)
    assert (g.value, g.met) == (9.88, False)


def test_figure_5_guest_sizes():
    """Quick: 2^18 pages (1 GiB); full: 2^24 pages (64 GiB), four vCPUs of 128 MiB/s each."""
    s = BM.realtime_session(1 << 18)
    assert s["memslots"][0]["size"] == 1 << 30
    assert [w["range"] for w in s["workloads"]] == [
        f"{0x40000000 + v * (1 << 28):#x}:{1 << 28}" for v in range(4)
    ]
    assert BM.realtime_session(1 << 24)["memslots"][0]["size"] == 64 << 30


def test_figure_6_child_reports_bytes_and_seconds(monkeypatch, capsys):
    import resource

    _fake_run(monkeypatch, RESULT)
    # ru_maxrss is in KiB on Linux: 1000 KiB = 1 024 000 bytes
    monkeypatch.setattr(resource, "getrusage", lambda who: types.SimpleNamespace(ru_maxrss=1000))
    fake_time(monkeypatch, BM, perf_counter=PairClock([2.5]))
    BM.terabyte_child(1 << 12)
    assert json.loads(capsys.readouterr().out) == {
        "outcome": "completed",
        "rss": 1_024_000,
        "wall_s": 2.5,
        "mismatches": 0,
        "pages_checked": 4096,
    }


@pytest.mark.parametrize(
    ("rss_per_page", "outcome", "mismatches", "value", "met"),
    [
        (24, "completed", 0, 24.0, True),  # the goal's edge
        (24.5, "completed", 0, 24.5, False),
        (12, "timed out", 0, 12.0, False),
        (12, "completed", 3, 12.0, False),
    ],
)
def test_figure_6_is_peak_rss_bytes_over_guest_pages(
    monkeypatch, rss_per_page, outcome, mismatches, value, met
):
    npages = 1 << 20  # quick
    data = {"outcome": outcome, "rss": int(rss_per_page * npages), "mismatches": mismatches}
    stdout = "noise\n" + json.dumps(data) + "\n"
    monkeypatch.setattr(BM.subprocess, "run", lambda *a, **k: types.SimpleNamespace(stdout=stdout))
    f = BM.fig_terabyte(True)
    assert (f.id, f.value, f.unit, f.met, f.detail) == (6, value, "bytes/page", met, data)
    assert f.name == "4 GiB guest (1,048,576 pages) migrates; peak RSS per page"


# -- dirtylog perftest (engine/cli/perftest.py) -------------------------------------------------
#
# tools/testing/selftests/kvm/dirty_log_perf_test.c (v6.17), run_test(): "Populate memory time"
# and "Iteration N dirty memory time" run from the iteration's start until every vCPU has
# completed it (the slowest vCPU); "get"/"clear dirty log time" time one GET/CLEAR of every
# slot; the totals add those timespecs (timespec_add) and the average is the total divided by
# the iterations (timespec_div: whole ns, truncated).  Here each time is counts x unit costs.

C = CostModel()
NS = re.compile(r"(\d+)\.(\d{9})s")


def _perftest(capsys, *argv) -> dict[str, list[int]]:
    """The report's times in ns by line label (a "took" line gives [total, average])."""
    assert cli_main(["perftest", *argv]) == 0
    out = {}
    for line in capsys.readouterr().out.splitlines():
        label = re.split(r": | took ", line)[0]
        ns = [int(a) * 1_000_000_000 + int(b) for a, b in NS.findall(line)]
        if ns:
            out[label] = ns
    return out


def test_perftest_4k_pages_manual_protect(capsys):
    # 256 KiB per vCPU = 64 pages each, 2 vCPUs: 128 pages, 2 bitmap words
    t = _perftest(capsys, "-b", "256K", "-v", "2", "-i", "3")
    first_touch = 64 * (GUEST_WRITE_NS + C.fault_exit)  # each page a translation fault
    assert t["Populate memory time"] == [first_touch] == [161_600]
    # INITIALLY_SET: nothing write-protected at enable, iteration 1's stores take no exit;
    # its CLEAR protects every page, so every later iteration faults on each page again
    assert t["Enabling dirty logging time"] == [0]
    assert t["Iteration 1 dirty memory time"] == [64 * GUEST_WRITE_NS] == [1600]
    assert t["Iteration 2 dirty memory time"] == t["Iteration 3 dirty memory time"] == [161_600]
    # GET with manual protect copies the bitmap: 2 words x bitmap_word
    for it in (1, 2, 3):
        assert t[f"Iteration {it} get dirty log time"] == [2 * C.bitmap_word] == [4]
    # disabling frees the bitmap: its words (not its pages) x bitmap_word
    assert t["Disabling dirty logging time"] == [2 * C.bitmap_word]
    assert t["Get dirty log over 3 iterations"] == [12, 4]
    clears = [t[f"Iteration {it} clear dirty log time"][0] for it in (1, 2, 3)]
    # each CLEAR: one range TLBI + the 2 words + descriptor accesses (reads and writes, 4 ns)
    for c in clears:
        assert c > C.tlbi_range + 2 * C.bitmap_word and (c - 4004) % 4 == 0
    assert t["Clear dirty log over 3 iterations"] == [sum(clears), sum(clears) // 3]


def test_perftest_4k_pages_without_manual_protect(capsys):
    # -g: enable write-protects, GET clears and re-protects; 128 pages in 2 slots of 64
    t = _perftest(capsys, "-b", "256K", "-v", "2", "-i", "2", "-g", "-x", "2")
    for label in ("Populate memory time", "Iteration 1 dirty memory time"):
        assert t[label] == [64 * (GUEST_WRITE_NS + C.fault_exit)]
    assert t["Iteration 2 dirty memory time"] == [161_600]
    assert "Clear dirty log over 2 iterations" not in t
    # two slots of 64 pages: one word each
    assert t["Disabling dirty logging time"] == [2 * 1 * C.bitmap_word]
    gets = [t[f"Iteration {it} get dirty log time"][0] for it in (1, 2)]
    assert t["Get dirty log over 2 iterations"] == [sum(gets), sum(gets) // 2]


def test_perftest_block_splits_are_shared_between_the_vcpus(capsys):
    # THP: 4 MiB per vCPU = 1024 pages in two 2 MiB blocks; 2 vCPUs, 4 blocks, 32 words
    t = _perftest(capsys, "-b", "4M", "-v", "2", "-i", "2", "-s", "anonymous_thp")
    stores = 1024 * GUEST_WRITE_NS
    # populate: each vCPU's two blocks are mapped by one translation fault each
    assert t["Populate memory time"] == [stores + 2 * C.fault_exit] == [30_600]
    assert t["Iteration 1 dirty memory time"] == [stores]
    # after CLEAR protected the blocks, each vCPU's first write to each page exits and the 4
    # blocks split at fault time, each vCPU bearing 4 / 2 of them (split + broadcast TLBI)
    split = C.split_block + C.tlbi_ipa_is
    assert t["Iteration 2 dirty memory time"] == [stores + 1024 * C.fault_exit + 4 / 2 * split]
    assert t["Iteration 2 dirty memory time"] == [2_594_600]
    assert t["Disabling dirty logging time"] == [32 * C.bitmap_word]
    # three vCPUs, 6 blocks: a share of 2 each; -g: the splits come in iteration 1
    t = _perftest(capsys, "-b", "4M", "-v", "3", "-i", "2", "-s", "anonymous_thp", "-g")
    assert t["Iteration 1 dirty memory time"] == [stores + 1024 * C.fault_exit + 6 / 3 * split]
    assert t["Iteration 2 dirty memory time"] == [stores + 1024 * C.fault_exit]
    # one vCPU: it bears all of its 2 splits
    t = _perftest(capsys, "-b", "4M", "-v", "1", "-i", "2", "-s", "anonymous_thp", "-g")
    assert t["Iteration 1 dirty memory time"] == [stores + 1024 * C.fault_exit + 2 * split]


def test_perftest_average_truncates_as_timespec_div(capsys):
    # 3 iterations of -g with half the pages written: GETs of different cost; the total is
    # the sum of the printed lines and the average its third, truncated (this seed's total
    # leaves 2 ns over, where rounding would give one more ns)
    t = _perftest(capsys, "-b", "256K", "-v", "2", "-i", "3", "-g", "-w", "50")
    gets = [t[f"Iteration {it} get dirty log time"][0] for it in (1, 2, 3)]
    assert sum(gets) % 3 == 2
    assert t["Get dirty log over 3 iterations"] == [sum(gets), sum(gets) // 3]


# -- dirtylog kvm calibrate (engine/host/calibrate.py) -----------------------------------------


def _raw(**over):
    """Hand-made samples (ns) of one repeat on a 640-page slot (10 bitmap words)."""
    raw = {
        "python_ioctl": 2000.0,
        "run_empty": 9000.0,
        "enable": 2000.0 + 640 * 50,
        "get_one_word": 3000.0,  # 1000 ns fixed after the ioctl's 2000
        "get_clean_slot": 3000.0 + 9 * 30,  # 9 more words at 30 ns
        "faulting_run": 100_000.0 + 640 * 1500,
        "writable_run": 100_000.0,
        "get_dirty_slot": 2000.0 + 1000 + 10 * 30 + 640 * 80,  # 80 ns a dirty page
        "disable": 2000.0 + 640 * 20,
        "clear_64_clean": 2600.0,
        "clear_dirty_slot": 2000.0 + 640 * 40,
        "ring_faulting_run": 100_000.0 + 640 * (1500 + 70),  # 70 ns a push
        "ring_writable_run": 100_000.0,
        "ring_reset": 2000.0 + 500 * 12,
        "ring_entries": 500,
    }
    return raw | over


def test_calibrate_unit_costs_from_hand_made_samples():
    assert CAL.unit_costs(_raw(), 640) == {
        "python_ioctl": 2000.0,
        "run_round_trip": 7000.0,
        "enable_per_page": 50.0,
        "get_per_word": 30.0,  # (3270 - 3000) / (10 - 1) words
        "get_fixed": 1000.0,
        "fault_exit": 1500.0,
        "get_per_dirty_page": 80.0,
        "disable_per_page": 20.0,
        "clear_per_ioctl": 600.0,
        "clear_per_dirty_page": 40.0,
        "ring_push": 70.0,
        "ring_reset_entry": 12.0,
    }
    assert set(CAL.unit_costs(_raw(), 640)) == set(CAL.FIGURES)


def test_calibrate_unit_costs_edges():
    # a GET of the slot no slower than the one-word one: no per-word cost, never negative
    c = CAL.unit_costs(_raw(get_clean_slot=2900.0, get_dirty_slot=1000.0), 640)
    assert c["get_per_word"] == 0.0 and c["get_per_dirty_page"] == 0.0
    # a one-word slot: the word difference is taken as 1; no ring entries: divided by 1
    c = CAL.unit_costs(_raw(get_clean_slot=3030.0, ring_entries=0), 64)
    assert c["get_per_word"] == 30.0 and c["ring_reset_entry"] == 6000.0
    # 100 pages are 2 words (the last one partly used): 1 word beyond the one-word slot
    raw = _raw(
        enable=2000.0 + 100 * 50,
        get_clean_slot=3030.0,
        get_dirty_slot=2000.0 + 1000 + 2 * 30 + 100 * 80,
        faulting_run=100_000.0 + 100 * 1500,
    )
    c = CAL.unit_costs(raw, 100)
    assert (c["enable_per_page"], c["get_per_word"], c["fault_exit"]) == (50.0, 30.0, 1500.0)
    assert c["get_per_dirty_page"] == 80.0


def _fig(name, *values):
    return CAL.Figure(name, CAL.FIGURES[name], values)


def test_calibrate_figures_are_medians_of_the_repeats(monkeypatch):
    reps = iter([_raw(), _raw(enable=2000.0 + 640 * 70), _raw(enable=2000.0 + 640 * 10)])
    monkeypatch.setattr(CAL, "_measure", lambda pages, rng: next(reps))
    seen = []
    figs = {f.name: f for f in CAL.calibrate(640, 3, progress=lambda i, n: seen.append((i, n)))}
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert list(figs) == list(CAL.FIGURES)
    assert figs["enable_per_page"].as_dict() == {
        "per": CAL.FIGURES["enable_per_page"],
        "median_ns": 50.0,
        "min_ns": 10.0,
        "max_ns": 70.0,
        "values_ns": [50.0, 70.0, 10.0],
    }
    assert figs["fault_exit"].median == 1500.0


def test_calibrate_profile_maps_medians_onto_cost_model_fields():
    figs = [
        _fig("fault_exit", 1400.04, 1500.04, 9000.0),
        _fig("get_per_word", 1.234, 1.5, 1.0),
        _fig("get_per_dirty_page", 80.0, 90.0, 70.0),
        _fig("ring_push", 66.66, 70.0, 71.0),
        _fig("ring_reset_entry", 12.34, 12.0, 13.0),
    ]
    assert CAL.costs_profile(figs) == {
        "fault_exit": 1500.0,
        "bitmap_word": 1.23,
        "desc_read": 40.0,  # half of GET's 80 ns per dirty page: one read ...
        "desc_write": 40.0,  # ... and one write
        "ring_push": 70.0,
        "ring_reset_entry": 12.3,
    }
    # a negative median (noise larger than the cost) is clamped to 0
    figs = [_fig(f.name, -5.0) for f in figs]
    assert set(CAL.costs_profile(figs).values()) == {0.0}
    assert set(CAL.costs_profile(figs)) <= set(C.as_dict())


def test_calibrate_command_prints_and_writes_the_hand_made_figures(monkeypatch, capsys, tmp_path):
    """``dirtylog kvm calibrate`` end to end with the measuring replaced by three hand-made
    repeats (no KVM needed): the table's medians/min/max and the profile, printed and in JSON."""
    import engine.cli.kvm as K
    import engine.host.device as D

    reps = iter([_raw(), _raw(enable=2000.0 + 640 * 70), _raw(enable=2000.0 + 640 * 10)])
    monkeypatch.setattr(CAL, "_measure", lambda pages, rng: next(reps))
    monkeypatch.setattr(K, "_unusable", lambda command: False)
    monkeypatch.setattr(D, "probe", lambda: types.SimpleNamespace(arch="x86_64", mmu="fake"))
    out = tmp_path / "costs.json"
    assert (
        cli_main(["kvm", "calibrate", "--pages", "640", "--repeats", "3", "--json", str(out)]) == 0
    )
    text = capsys.readouterr().out
    per = CAL.FIGURES["enable_per_page"]
    assert f"enable_per_page             50.0 ns      10.0 ns      70.0 ns  {per}" in text
    word = CAL.FIGURES["get_per_word"]
    assert f"get_per_word                30.0 ns      30.0 ns      30.0 ns  {word}" in text
    assert "  desc_read                40.0 ns   (default 4.0 ns)" in text
    assert "  fault_exit            1,500.0 ns   (default 2,500.0 ns)" in text
    doc = json.loads(out.read_text())
    assert (doc["pages"], doc["repeats"]) == (640, 3)
    assert doc["figures"]["enable_per_page"]["values_ns"] == [50.0, 70.0, 10.0]
    assert doc["figures"]["get_per_dirty_page"]["median_ns"] == 80.0
    assert doc["costs"] == {
        "fault_exit": 1500.0,
        "bitmap_word": 30.0,
        "desc_read": 40.0,
        "desc_write": 40.0,
        "ring_push": 70.0,
        "ring_reset_entry": 12.0,
    }

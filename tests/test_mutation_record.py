"""mutation/run.py's committed record of verdicts: a verdict is reused only while its
function's source hash is unchanged and the group's tests still include those it was reached
with; the record is written one verdict a line, in name order."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("mutation_run", ROOT / "mutation" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RECORDS", tmp_path / "verdicts")
    return module


def _meta(work: Path, src: str, codes: dict, hashes: dict) -> None:
    meta = work / "mutants" / (src + ".meta")
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"exit_code_by_key": codes, "hash_by_function_name": hashes}))


def test_a_recorded_verdict_holds_while_the_function_and_tests_are_unchanged(run, tmp_path):
    work = tmp_path / "g"
    group = {"mutate": ["m.py"], "tests": ["tests/a.py", "tests/b.py"]}
    a, b = "m.xǁCǁf__mutmut_1", "m.g__mutmut_2"
    _meta(work, "m.py", {a: 1, b: 0}, {"xǁCǁf": "h1", "g": "h2"})
    run.record(work, group)
    # a new checkout: mutmut has no verdicts yet, the functions are unchanged
    _meta(work, "m.py", {a: None, b: None}, {"xǁCǁf": "h1", "g": "h2"})
    assert run.results(work, group) == {a: 1, b: 0}
    # g's source changed: its verdict no longer counts
    _meta(work, "m.py", {a: None, b: None}, {"xǁCǁf": "h1", "g": "h3"})
    assert run.results(work, group) == {a: 1, b: None}
    # the group lost a test the verdicts were reached with: none counts
    assert run.results(work, {**group, "tests": ["tests/a.py"]}) == {a: None, b: None}
    # ... and gained one: they still count
    more = {**group, "tests": ["tests/a.py", "tests/b.py", "tests/c.py"]}
    assert run.results(work, more) == {a: 1, b: None}


def test_the_record_is_one_verdict_a_line_in_name_order(run, tmp_path):
    work = tmp_path / "g"
    group = {"mutate": ["m.py"], "tests": ["tests/a.py"]}
    _meta(
        work,
        "m.py",
        {"m.z__mutmut_1": 1, "m.a__mutmut_1": 0, "m.a__mutmut_2": None},
        {"z": "hz", "a": "ha"},
    )
    run.record(work, group)
    lines = run.record_path(work).read_text().splitlines()
    assert run.record_path(work) == tmp_path / "verdicts" / "g.json"
    assert [line.split(":")[0] for line in lines[2:-1]] == ['"m.a__mutmut_1"', '"m.z__mutmut_1"']
    rec = json.loads(run.record_path(work).read_text())
    key = next(iter(rec["tests"]))
    assert rec["verdicts"] == {"m.a__mutmut_1": [0, "ha", key], "m.z__mutmut_1": [1, "hz", key]}


def test_a_report_over_many_patterns_names_their_count_not_each(run, capsys):
    codes = {"m.a__mutmut_1": 1, "m.b__mutmut_1": 1}
    group = {"mutate": ["m.py"], "tests": [], "rules": True}
    only = ["*a__*", "*b__*", "*c__*", "*d__*"]
    assert run.report("g", group, codes, {}, only) == (1.0, True)
    assert "== g (only 4 patterns) (rules): 2/2 killed = 100.0 %" in capsys.readouterr().out
    run.report("g", group, codes, {}, only[:3])
    assert "== g (only *a__* *b__* *c__*) (rules): 2/2 killed" in capsys.readouterr().out


def test_a_kept_run_asks_mutmut_only_for_what_has_no_verdict(run):
    """``--keep`` runs the mutants without a verdict; ``--only`` the matching ones not killed
    (a survivor again: a test may have been added); listed equivalents never run."""
    codes = {"m.a__mutmut_1": 1, "m.a__mutmut_2": 0, "m.a__mutmut_3": None, "m.b__mutmut_1": None}
    codes["m.b__mutmut_2"] = 36  # a timeout counts as killed
    equivalent = {"m.b__mutmut_1": "why"}
    assert run.todo(codes, [], equivalent) == ["m.a__mutmut_3"]
    assert run.todo(codes, ["m.a__*"], equivalent) == ["m.a__mutmut_2", "m.a__mutmut_3"]
    assert run.todo(codes, ["m.b__*"], equivalent) == []
    assert run.todo(codes, ["m.b__*"], {}) == ["m.b__mutmut_1"]


def test_the_timeout_multiplier_reaches_mutmuts_configuration(run, tmp_path, monkeypatch):
    """`--timeout-multiplier` goes into the group's generated pyproject.toml; a report (None)
    keeps the work directory's last one, and a new work directory starts at 60."""
    monkeypatch.setattr(run, "WORK", tmp_path / "work")
    monkeypatch.setattr(run, "LINKED", ())
    group = {"mutate": ["engine/util/units.py"], "tests": ["tests/test_units.py"]}

    def written(multiplier):
        return (run.prepare("units", group, multiplier) / "pyproject.toml").read_text()

    assert "timeout_multiplier = 60.0\n" in written(None)
    assert "timeout_multiplier = 8.0\n" in written(8.0)
    assert "timeout_multiplier = 8.0\n" in written(None)
    assert "timeout_multiplier = 60.0\n" in written(60.0)


@pytest.mark.parametrize(
    ("load", "cpus", "want"), [(0.0, 2, 8.0), (1.99, 2, 8.0), (2.0, 2, 60.0), (11.5, 2, 60.0)]
)
def test_the_default_multiplier_is_8_only_below_one_busy_process_a_cpu(run, load, cpus, want):
    """Quiet (load average below the CPU count): 8; at or above it: 60."""
    assert run.default_timeout_multiplier(load, cpus) == want

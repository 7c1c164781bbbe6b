"""`make mutants`: mutation testing of the engine's rule modules, the heat map's colours and
the save path, one group at a time with that group's targeted tests (mutmut 3.x).

Each group of ``mutation/modules.toml`` gets a work directory ``build/mutation/<group>`` that
links to the project's sources and holds a generated ``pyproject.toml`` naming the files to
mutate and the tests to run; mutmut copies the sources into ``mutants/`` there, runs the tests
once to learn which test calls which function, then runs each mutant against the tests that
reach it.  Each run starts afresh (mutmut keeps its verdicts per function and would not retry
a survivor after a new test); ``--keep`` reuses the previous verdicts.

Each group runs in two passes.  mutmut sets ``MUTANT_UNDER_TEST`` in the processes it runs
tests in, and ``tests/conftest.py`` then caps every property test at a few derandomized
examples: most mutants fail a cheap test, and a failure is a real kill.  The survivors of that
pass (but the listed equivalents) are run again with ``DIRTYLOG_MUTATION_FULL=1``, which keeps
each test's own example count, so a mutant survives only what the whole targeted suite lets
through.  The report gives the mean seconds mutmut measured a mutant.

The score counts a mutant killed when a test failed (or timed out) with it applied; mutants
listed in ``mutation/equivalent.txt`` (one line each: name, colon, why no test can tell it from
the original) are left out of the denominator.  Survivors are printed with their diffs.

mutmut itself drops every verdict of a group when the group's test list changes (a new test
file, a new node id) and then runs only the mutants it is asked for, so a rerun of a part (or
of the survivors) used to leave the rest without a verdict: ``--no-run`` then said "run
incomplete".  Each group therefore keeps its own record, ``mutation/verdicts/<group>.json``
(committed, so a new checkout or machine starts from it): every verdict mutmut reaches, with
the hash of the mutated function's source and the test list it was reached with.  A mutant
mutmut has no verdict for takes the recorded one while its function is unchanged and the
group's tests still include the recorded ones.  Where mutmut has not generated the group's
mutants yet (a new checkout), ``--no-run`` generates the list of mutants and their function
hashes in-process, without running a test, and reports from the record alone.

A large group can be run a part at a time: ``--only PATTERN`` (repeatable; shell-style
wildcards over mutant names, e.g. ``'*x__check_clear__*'``) runs only the matching mutants
that are not killed already (``--keep`` alone: those without a verdict),
keeps the other verdicts of the previous run, and scores only the matching mutants (the
report says so: a sample, not the group's score).

Usage: ``python mutation/run.py [GROUP ...] [--max-children N] [--keep] [--no-run]
[--only PATTERN ...]`` (``make mutants GROUPS="dirtyring memslots"``, options through
``MUTANTS_ARGS``).  Exit status 0 when every rule group reached the goal, 1 otherwise.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "mutation"
WORK = ROOT / "build" / "mutation"
LINKED = ("engine", "app", "tests", "resources")
GOAL = 0.90
TIMEOUT_MULTIPLIER = 60.0  # mutmut's default 15 (see prepare): a loaded machine
QUIET_TIMEOUT_MULTIPLIER = 8.0  # a quiet one (see default_timeout_multiplier)
RECORDS = HERE / "verdicts"  # each group's committed record of verdicts (module docstring)
KILLED = {1, 3, 36, 24, -24, 152, 255, -9, -11}  # mutmut's codes: failed, error, timeout, crash


def load_groups() -> dict[str, dict]:
    """The groups of modules.toml, in file order."""
    return tomllib.loads((HERE / "modules.toml").read_text())["groups"]


def load_equivalent() -> dict[str, str]:
    """mutant name -> reason, from equivalent.txt (``#`` starts a comment line)."""
    out = {}
    for line in (HERE / "equivalent.txt").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, reason = line.partition(":")
            out[name.strip()] = reason.strip()
    return out


def default_timeout_multiplier(load: float | None = None, cpus: int | None = None) -> float:
    """The multiplier for this machine: 8 when its 1-minute load average is below its CPU
    count (tests run at full speed, so a mutant that loops ends in minutes), else 60 (a loaded
    machine runs tests many times slower by the wall clock; 15 once counted passing tests as
    timeouts, i.e. as kills).  ``load``/``cpus``: this machine's unless given."""
    load = os.getloadavg()[0] if load is None else load
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    return QUIET_TIMEOUT_MULTIPLIER if load < cpus else TIMEOUT_MULTIPLIER


def prepare(name: str, group: dict, timeout_multiplier: float | None = None) -> Path:
    """Create or refresh the group's work directory; return it.  ``timeout_multiplier``:
    mutmut's, see below (``default_timeout_multiplier``); None keeps the work directory's
    last one (a changed one makes mutmut drop its timeout verdicts), else 60."""
    work = WORK / name
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "pyproject.toml"
    if timeout_multiplier is None:
        last = [
            float(line.split("=")[1])
            for line in (cfg.read_text().splitlines() if cfg.exists() else [])
            if line.startswith("timeout_multiplier = ")
        ]
        timeout_multiplier = last[0] if last else TIMEOUT_MULTIPLIER
    tests = [t for t in group["tests"] if (ROOT / t.split("::")[0]).exists()]
    for sub in LINKED:
        link = work / sub
        if not link.is_symlink():
            link.symlink_to(ROOT / sub)
    pytest_cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    lines = [
        "[tool.mutmut]",
        'source_paths = ["engine", "app"]',
        f"only_mutate = {json.dumps(group['mutate'])}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "-x"]',
        'also_copy = ["resources"]',
        # mutmut ends a mutant's tests after (estimate + 1) x multiplier x 2 CPU seconds, or
        # half that in wall time; its default 15 let a loaded, niced run (20x slower by the
        # wall clock) record tests that were still passing as timeouts, i.e. as kills
        f"timeout_multiplier = {timeout_multiplier}",
        "",
        "[tool.pytest.ini_options]",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in pytest_cfg["ini_options"].items()]
    text = "\n".join(lines) + "\n"
    if not cfg.exists() or cfg.read_text() != text:
        cfg.write_text(text)
    return work


def mutmut_run(work: Path, max_children: int, names: list[str], full: bool) -> int:
    """``mutmut run`` in the work directory (its output goes to the terminal), for ``names``
    (mutant names or wildcard patterns; none: every mutant without a verdict); its exit
    status.  ``full`` keeps each property test's own example count (tests/conftest.py caps it
    otherwise)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONDONTWRITEBYTECODE="1")
    env.pop("DIRTYLOG_MUTATION_FULL", None)
    if full:
        env["DIRTYLOG_MUTATION_FULL"] = "1"
    mutmut = Path(sys.executable).with_name("mutmut")
    done = subprocess.run(
        [str(mutmut), "run", "--max-children", str(max_children), *names],
        cwd=work,
        env=env,
        check=False,
    )
    return done.returncode


def run_group(
    work: Path, group: dict, max_children: int, keep: bool, only: list[str], equivalent: dict
) -> None:
    """Run the group's mutants in two passes: first with every property test capped at a few
    derandomized examples (a failure there is a real kill, and cheap), then its survivors
    (but the listed equivalents) again with the tests' own example counts, so the verdicts
    are the whole targeted suite's.  Unless ``keep`` (or ``only``), drop the previous run's
    mutants, verdicts and test map first and run every mutant; with ``keep``, run just the
    mutants without a verdict (``todo``); with ``only``, just those matching one of its
    patterns that are not killed already."""
    names: list[str] = []
    if not keep and not only:
        shutil.rmtree(work / "mutants", ignore_errors=True)
        record_path(work).unlink(missing_ok=True)
    else:
        names = todo(results(work, group), only, equivalent)
        if not names:
            print("== nothing to run: every mutant asked for has its verdict")
            return
    status = mutmut_run(work, max_children, names, full=False)
    record(work, group)
    if status != 0:
        return  # (mutmut said why: e.g. a test failing without any mutant)
    survivors = [
        m
        for m, c in results(work, group).items()
        if c == 0 and m not in equivalent and (not only or matches(m, only))
    ]
    if survivors:
        print(f"== rerunning the {len(survivors)} survivors with the full example counts")
        mutmut_run(work, max_children, survivors, full=True)
        record(work, group)


def todo(codes: dict[str, int | None], only: list[str], equivalent: dict) -> list[str]:
    """The mutants a ``--keep`` or ``--only`` run has left to run: with ``only``, those matching
    it but not killed already (a survivor runs again: a test may have been added since);
    otherwise those without a verdict.  Listed equivalents never run.  (mutmut itself knows
    only the verdicts in its work directory: asked for everything, it reran the recorded
    verdicts of a new checkout, and a pattern reran mutants already killed.)"""
    return [
        m
        for m, c in codes.items()
        if m not in equivalent and c not in KILLED and (matches(m, only) if only else c is None)
    ]


def matches(mutant: str, patterns: list[str]) -> bool:
    """Whether the mutant's name matches one of the wildcard patterns."""
    return any(fnmatch.fnmatch(mutant, p) for p in patterns)


def mean_seconds(work: Path, group: dict, names: list[str]) -> float | None:
    """Mean wall time mutmut recorded for running one of ``names`` (its last run)."""
    seconds = []
    for src in group["mutate"]:
        meta = work / "mutants" / (src + ".meta")
        if meta.exists():
            durations = json.loads(meta.read_text()).get("durations_by_key", {})
            seconds += [durations[m] for m in names if durations.get(m)]
    return sum(seconds) / len(seconds) if seconds else None


def _metas(work: Path, group: dict) -> list[dict]:
    """mutmut's ``.meta`` data of the group's files; for a file mutmut has not mutated yet
    (a new checkout), its mutant names and function hashes generated without a verdict."""
    metas = [work / "mutants" / (src + ".meta") for src in group["mutate"]]
    out = [json.loads(m.read_text()) for m in metas if m.exists()]
    missing = [src for src, m in zip(group["mutate"], metas, strict=True) if not m.exists()]
    return out + (_generate(work, missing) if missing else [])


_GENERATE = """
import json, sys
from pathlib import Path
from mutmut.mutation.file_mutation import mutate_file_contents
from mutmut.utils.format_utils import get_mutant_name
out = []
for src in sys.argv[1:]:
    made = mutate_file_contents(src, Path(src).read_text())
    names = [get_mutant_name(Path(src), n) for n in made.mutant_names]
    out.append({"exit_code_by_key": dict.fromkeys(names),
                "hash_by_function_name": dict(made.hash_by_function_name)})
print(json.dumps(out))
"""


def _generate(work: Path, sources: list[str]) -> list[dict]:
    """The mutants mutmut would make of ``sources`` and their functions' hashes, in the shape
    of its ``.meta`` data with no verdicts (mutmut's own generator, run in the work directory
    for its configuration; no test runs)."""
    done = subprocess.run(
        [sys.executable, "-c", _GENERATE, *sources],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


def record_path(work: Path) -> Path:
    """The group's committed record of verdicts (the work directory is named after it)."""
    return RECORDS / f"{work.name}.json"


def _load_record(work: Path) -> dict:
    path = record_path(work)
    return json.loads(path.read_text()) if path.exists() else {"tests": {}, "verdicts": {}}


def _save_record(work: Path, rec: dict) -> None:
    """One verdict a line, in name order, so a commit's diff shows which verdicts changed."""
    lines = [f"{json.dumps(m)}: {json.dumps(v)}" for m, v in sorted(rec["verdicts"].items())]
    text = (
        '{"tests": '
        + json.dumps(rec["tests"], sort_keys=True)
        + ',\n"verdicts": {\n'
        + ",\n".join(lines)
        + "\n}}\n"
    )
    RECORDS.mkdir(exist_ok=True)
    record_path(work).write_text(text)


def _function(mutant: str) -> str:
    """The mutated function's key in mutmut's ``hash_by_function_name``:
    ``engine.kvm.vm.xǁVMǁ_apply__mutmut_3`` -> ``xǁVMǁ_apply``."""
    return mutant.rpartition("__mutmut_")[0].rpartition(".")[2]


def record(work: Path, group: dict) -> None:
    """Add mutmut's present verdicts to the group's record (``record_path``): each with its
    function's source hash and the test list it was reached with."""
    rec = _load_record(work)
    tests = sorted(group["tests"])
    key = hashlib.sha256(json.dumps(tests).encode()).hexdigest()[:12]
    rec["tests"][key] = tests
    for data in _metas(work, group):
        hashes = data.get("hash_by_function_name", {})
        for mutant, code in data["exit_code_by_key"].items():
            if code is not None:
                rec["verdicts"][mutant] = [code, hashes.get(_function(mutant)), key]
    _save_record(work, rec)


def results(work: Path, group: dict) -> dict[str, int | None]:
    """mutant name -> exit code, for the group's files: mutmut's verdict, or else the
    recorded one if the function's source is unchanged and the group's tests include the
    tests it was reached with (None: no valid verdict)."""
    rec = _load_record(work)
    tests = set(group["tests"])
    out: dict[str, int | None] = {}
    for data in _metas(work, group):
        hashes = data.get("hash_by_function_name", {})
        for mutant, code in data["exit_code_by_key"].items():
            old = rec["verdicts"].get(mutant)
            if code is None and old and old[1] is not None:
                same = old[1] == hashes.get(_function(mutant))
                if same and set(rec["tests"][old[2]]) <= tests:
                    code = old[0]
            out[mutant] = code
    return out


def diff(work: Path, mutant: str) -> str:
    """mutmut's diff of one mutant against the original."""
    mutmut = Path(sys.executable).with_name("mutmut")
    done = subprocess.run(
        [str(mutmut), "show", mutant], cwd=work, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def report(
    name: str, group: dict, codes: dict[str, int | None], equivalent: dict, only: list[str]
) -> tuple[float, bool]:
    """Print the group's score and its survivors; return the score (killed / non-equivalent)
    and whether every mutant has a verdict (if not, the score is over those that have one).
    With ``only``, just the mutants matching its patterns count (a sample)."""
    if only:
        codes = {m: c for m, c in codes.items() if matches(m, only)}
        shown = " ".join(only) if len(only) <= 3 else f"{len(only)} patterns"
        name = f"{name} (only {shown})"
    eq = [m for m in codes if m in equivalent]
    live = {m: c for m, c in codes.items() if m not in equivalent}
    unchecked = [m for m, c in live.items() if c is None]
    if unchecked:
        print(f"== {name}: {len(unchecked)} of {len(live)} mutants not checked (run incomplete)")
        live = {m: c for m, c in live.items() if c is not None}
        if not live:
            return 0.0, False
        name += f" (the {len(live)} checked only)"
    killed = [m for m, c in live.items() if c in KILLED]
    survivors = sorted(m for m in live if m not in killed)
    score = len(killed) / len(live) if live else 1.0
    tag = "rules" if group.get("rules") else "other"
    work = WORK / name.split(" ")[0]
    mean = mean_seconds(work, group, list(codes))
    print(
        f"== {name} ({tag}): {len(killed)}/{len(live)} killed = {100 * score:.1f} %"
        f" ({len(eq)} equivalent, {len(survivors)} surviving"
        + (f"; {mean:.2f} s a mutant" if mean else "")
        + ")"
    )
    for m in survivors:
        print(f"-- survived ({codes[m]}): {m}")
        print(diff(work, m))
    return score, not unchecked


def main(argv: list[str] | None = None) -> int:
    groups = load_groups()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("groups", nargs="*", choices=[[], *groups], help="default: all groups")
    ap.add_argument("--max-children", type=int, default=2)
    ap.add_argument("--keep", action="store_true", help="reuse the previous run's verdicts")
    ap.add_argument(
        "--timeout-multiplier",
        type=float,
        default=None,
        help="mutmut's: a mutant's tests end after (their recorded seconds + 1) x this x 2 CPU"
        f" seconds, counted a kill (default {QUIET_TIMEOUT_MULTIPLIER:g} while the load average"
        f" is below the CPU count, else {TIMEOUT_MULTIPLIER:g}: a loaded machine is slow by the"
        " wall clock)",
    )
    ap.add_argument(
        "--no-run",
        action="store_true",
        help="only report the results (recording the verdicts of a run that was stopped)",
    )
    ap.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="PATTERN",
        help="run and score only the mutants matching this wildcard pattern (repeatable)",
    )
    args = ap.parse_args(argv)
    if args.timeout_multiplier is None and not args.no_run:  # (a report keeps the last one)
        args.timeout_multiplier = default_timeout_multiplier()
        print(
            f"== mutmut's timeout multiplier: {args.timeout_multiplier:g} (load average"
            f" {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; --timeout-multiplier sets it)"
        )
    equivalent = load_equivalent()
    scores = {}
    for name in args.groups or list(groups):
        work = prepare(name, groups[name], args.timeout_multiplier)
        if not args.no_run:
            run_group(work, groups[name], args.max_children, args.keep, args.only, equivalent)
        elif (work / "mutants").is_dir():
            record(work, groups[name])  # (the verdicts of a run stopped before it recorded)
        codes = results(work, groups[name])
        scores[name] = report(name, groups[name], codes, equivalent, args.only)
    print(
        "== summary: "
        + ", ".join(
            f"{n} {100 * s:.1f} %" + ("" if done else " (incomplete)")
            for n, (s, done) in scores.items()
        )
    )
    short = [
        n for n, (s, done) in scores.items() if groups[n].get("rules") and (s < GOAL or not done)
    ]
    return 1 if short else 0


if __name__ == "__main__":
    sys.exit(main())

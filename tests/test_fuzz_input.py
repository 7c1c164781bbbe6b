"""Fuzzing the session loader and the run with mutated bundled sessions.

Each example takes a bundled session, applies one hostile mutation at a random place in its
JSON (a type swap, a sign flip, zero, a huge or over-long integer, NaN or an infinity, a long
string, deep nesting, a duplicate key, an unknown key, a missing key) and writes it as text.
The outcome must be one of two things: a refusal — exit 2 and one bounded sentence that starts
with a field path (``memslots[0].size: …``) and carries no library advice — or an accepted
session that runs within a time and memory limit.

The quick profile (part of ``make test``) loads every mutant in-process and, if accepted, runs
a few steps of it.  The long profile (``pytest --fuzz-long tests/test_fuzz_input.py`` or
``DIRTYLOG_FUZZ_LONG=1``) runs each mutant to its end with ``dirtylog run`` in a subprocess
held to a wall-time limit, and checks its peak memory against the engine's own estimate.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.cli.main import MAX_MESSAGE
from engine.files.session import load_session
from engine.migration.budget import estimate_bytes
from engine.migration.preflight import preflight
from engine.migration.simulation import Simulation
from engine.util.errors import DirtylogError, clip

SESSIONS = Path(__file__).resolve().parent.parent / "resources" / "sessions"
BASES = sorted(p.name for p in SESSIONS.glob("*.json") if not p.name.startswith("bench-"))
LONG = bool(os.environ.get("DIRTYLOG_FUZZ_LONG"))
EXAMPLES = int(os.environ.get("DIRTYLOG_FUZZ_EXAMPLES", 150 if LONG else 25))
# a refusal: "field: rule", the field a path (memslots[0].size), a file or an option
REFUSAL = re.compile(r"^dirtylog run: (E[A-Z]+: )?[\w\-./\[\]…]+(\.[\w\-…]+|\[\d+\])*: \S")
STEP_SECONDS = 20.0  # the quick profile's limit on a few steps of an accepted mutant


class Raw:
    """A JSON fragment written as is (an integer of thousands of digits, a duplicate key)."""

    def __init__(self, text: str) -> None:
        self.text = text


class Dup(dict):
    """An object written with its ``key`` twice."""

    key: str = ""


def dumps(value: Any) -> str:
    """JSON text for a mutated tree (NaN and Infinity as Python's json writes them)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = [f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items()]
        if isinstance(value, Dup):
            items.append(f"{json.dumps(value.key)}: {dumps(value.get(value.key, 0))}")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def paths(tree: Any, here: tuple = ()) -> list[tuple]:
    """Every place in the tree (a key of an object or an index of a list)."""
    out = [here]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += paths(v, (*here, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += paths(v, (*here, i))
    return out


def replaced(tree: Any, path: tuple, fn) -> Any:
    if not path:
        return fn(tree)
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        out = Dup(tree) if isinstance(tree, Dup) else dict(tree)
        out[head] = replaced(tree[head], rest, fn)
        return out
    out_list = list(tree)
    out_list[head] = replaced(tree[head], rest, fn)
    return out_list


def _negate(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return v
    return -v if v else -1


def _duplicate(v: Any) -> Any:
    if isinstance(v, dict) and v:
        out = Dup(v)
        out.key = next(iter(v))
        return out
    return Dup({"x": v, "y": 1}) if not isinstance(v, dict) else v


MUTATIONS = {
    "string": lambda v: "1e999 pages/s",
    "list": lambda v: [v],
    "object": lambda v: {"value": v},
    "bool": lambda v: True,
    "null": lambda v: None,
    "negative": _negate,
    "zero": lambda v: 0,
    "zero-string": lambda v: "0 MiB/s",
    "huge": lambda v: 10**30,
    "two-pow-64": lambda v: 1 << 64,
    "digits-400": lambda v: Raw("1" + "0" * 400),
    "digits-5000": lambda v: Raw("9" * 5000),
    "nan": lambda v: math.nan,
    "inf": lambda v: math.inf,
    "-inf": lambda v: -math.inf,
    "tiny": lambda v: 1e-300,
    "float-huge": lambda v: 1e308,
    "long-string": lambda v: "x" * 10_000,
    "nesting": lambda v: Raw("[" * 200 + "1" + "]" * 200),
    "duplicate": _duplicate,
    "unknown-key": lambda v: {**v, "k" * 5000: 1} if isinstance(v, dict) else v,
    "missing-key": lambda v: dict(list(v.items())[1:]) if isinstance(v, dict) else v,
    "size-text": lambda v: "0x" + "f" * 40,
}


@st.composite
def mutants(draw) -> tuple[str, str, str]:
    base = draw(st.sampled_from(BASES))
    tree = json.loads((SESSIONS / base).read_text())
    where = draw(st.sampled_from(paths(tree)[1:]))
    kind = draw(st.sampled_from(sorted(MUTATIONS)))
    return base, kind, dumps(replaced(tree, where, MUTATIONS[kind]))


def check_refusal(err: str) -> None:
    """One sentence, bounded, naming a field; no library's advice."""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert len(err) <= MAX_MESSAGE + 40, err
    assert "internal error" not in err and "Traceback" not in err, err
    assert "For further information" not in err and "errors.pydantic" not in err, err
    assert REFUSAL.match(err), err


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(mutants())
def test_a_mutated_session_is_refused_with_its_field_or_runs(tmp_path, capsys, mutant):
    base, kind, text = mutant
    path = tmp_path / base
    path.write_text(text)
    if LONG:
        _run_to_the_end(path)
        return
    sim, err = _load(path)
    if sim is None:
        check_refusal(err)
        return
    t0 = time.monotonic()
    for _ in range(5):
        sim.advance()
    assert time.monotonic() - t0 < STEP_SECONDS


def _load(path: Path) -> tuple[Simulation | None, str]:
    """What ``dirtylog run`` does before its first step: the simulation, or the refusal as
    the command prints it (main.py: ``dirtylog run: `` + the clipped sentence)."""
    try:
        cfg, _ = load_session(path)
        return Simulation(cfg, path.parent, track_last_sent=False), ""
    except DirtylogError as exc:
        return None, f"dirtylog run: {clip(str(exc), MAX_MESSAGE)}\n"


def _run_to_the_end(path: Path) -> None:
    """``dirtylog run`` in a subprocess: exit 0/1 (ran) or 2 (refused), within 120 s and,
    when it ran, within the engine's memory estimate."""
    code = (
        "import resource, sys;"
        "from engine.cli.main import main;"
        "rc = main(sys.argv[1:]);"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, file=sys.stdout);"
        "sys.exit(rc)"
    )
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", code, "run", str(path), "--quiet"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert time.monotonic() - t0 < 120
    if proc.returncode == 2:
        check_refusal(proc.stderr)
        return
    assert proc.returncode in (0, 1), proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if ln]
    assert all("warning:" in ln and "events[" in ln for ln in warnings), proc.stderr
    cfg, _ = load_session(path)
    need = estimate_bytes(cfg, preflight(cfg, path.parent), track_last_sent=False)
    assert int(proc.stdout.split()[-1]) <= need, (proc.stdout, need)


@pytest.mark.parametrize("kind", sorted(MUTATIONS))
@pytest.mark.parametrize(
    "where",
    [("memslots", 0, "size"), ("migration", "bandwidth"), ("workloads", 0), ("tick_ms",)],
    ids=str,
)
def test_each_mutation_kind_is_refused_with_its_field(tmp_path, kind, where):
    """Every mutation at a few fixed places of the demo: a changed value is refused, and the
    sentence names the place (or, for a change inside it, a field below it)."""
    tree = json.loads((SESSIONS / "demo.json").read_text())
    mutated = replaced(tree, where, MUTATIONS[kind])
    text = dumps(mutated)
    if text == dumps(tree) or kind in ("missing-key",) and where == ("workloads", 0):
        return  # the mutation does not apply here (or leaves a valid workload)
    (tmp_path / "s.json").write_text(text)
    sim, err = _load(tmp_path / "s.json")
    assert sim is None, f"{kind} at {where} was accepted"
    check_refusal(err)
    field = ".".join(str(p) for p in where).replace(".0", "[0]")
    assert field.split("[")[0] in err or "s.json" in err, err

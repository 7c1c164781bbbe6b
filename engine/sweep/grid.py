"""The grid of a sweep: which session fields vary, over which values, and its points.

A field is a path into the session as it is written: ``migration.bandwidth``,
``tracking.mode``, ``workloads[0].rate``, ``seed``.  Its values are either a comma list
(``1Gbit/s,4Gbit/s``, ``true,false``, ``bitmap,ring``: JSON numbers and booleans are read as
such, anything else stays text for the session's own parser) or a range ``A..B[UNIT]:N`` of N
evenly spaced values, ``log:A..B[UNIT]:N`` for evenly spaced on a log scale
(``1..10Gbit/s:5`` gives ``1Gbit/s, 3.25Gbit/s, 5.5Gbit/s, 7.75Gbit/s, 10Gbit/s``).  Range
values are rounded to 6 significant digits; the rounded value is the one run and written.

The points are the cartesian product of the axes, the first axis slowest (itertools.product).
Every point's session is validated before anything runs: the session schema, then each
workload's own fields, then its memory estimate (each session is parsed once); a refusal is one
sentence naming the point and the field.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from engine.files.session import parse_session
from engine.migration.budget import estimate_bytes
from engine.migration.preflight import preflight
from engine.migration.workloads import make_workload
from engine.util.errors import ConfigError, DirtylogError, clip

MAX_POINTS = 100_000  # a grid is a plan for runs, not a data set
MAX_RANGE_COUNT = 10_000

_PATH = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*|\[\d+\])*")
_PATH_PART = re.compile(r"([A-Za-z_]\w*)|\[(\d+)\]")
_RANGE = re.compile(
    r"^(?P<log>log:)?\s*(?P<a>[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*(?P<ua>[^.:0-9][^.:]*)?"
    r"\.\.\s*(?P<b>[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?)\s*(?P<ub>[^.:0-9][^:]*)?"
    r":\s*(?P<n>[0-9]+)\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Axis:
    """One varied field and its values, in the order given."""

    field: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Point:
    """One cell of the grid: its 1-based index, the value of each axis, its session (not to
    be changed: its digest is computed once) and the memory its run needs, in bytes
    (``engine.migration.budget.estimate_bytes`` as ``dirtylog run`` builds it), estimated
    when the point was validated."""

    index: int
    values: tuple[tuple[str, Any], ...]
    session: dict[str, Any]
    bytes_needed: int

    @property
    def label(self) -> str:
        """``migration.bandwidth=1Gbit/s, tracking.mode=ring``."""
        return values_label(self.values)

    @cached_property
    def digest(self) -> str:
        """sha256 of the session as run (canonical JSON): the point's identity for --resume."""
        return canonical_digest(self.session)


def values_label(values: tuple[tuple[str, Any], ...]) -> str:
    """``migration.bandwidth=1Gbit/s, tracking.mode=ring`` for a point's values."""
    return ", ".join(f"{f}={format_value(v)}" for f, v in values)


def canonical_digest(data: Any) -> str:
    """sha256 hex of ``data`` as sorted, compact JSON."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def format_value(v: Any) -> str:
    """A value as the user would type it after ``FIELD=``: JSON for booleans, text as is."""
    return v if isinstance(v, str) else json.dumps(v)


# -- field paths --------------------------------------------------------------------------------


def parse_path(path: str) -> list[str | int]:
    """``workloads[0].rate`` -> ``["workloads", 0, "rate"]``; ConfigError when malformed."""
    text = path.strip()
    if not _PATH.fullmatch(text):
        raise ConfigError(
            path or "--vary",
            "is not a field path such as migration.bandwidth or workloads[0].rate",
        )
    return [name if name else int(index) for name, index in _PATH_PART.findall(text)]


OPEN_SECTIONS = ("workloads", "events", "costs", "view")
"""Sections whose objects may gain a field (a workload's ``s``, a cost); elsewhere every field
is in the session as loaded (defaults included), so a new one is a typo."""


def set_field(data: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``data`` in place.  Every container on the way must exist (a list
    index must be in range); the last key may be new only inside OPEN_SECTIONS (the workload
    or cost check then judges it)."""
    parts = parse_path(path)
    node: Any = data
    walked = ""
    for part in parts[:-1]:
        node, walked = _child(node, part, walked, path)
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or not 0 <= last < len(node):
            raise ConfigError(path, f"{walked or 'the session'} has no element [{last}]")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise ConfigError(path, f"{walked} is not an object with fields")
        if last not in node and parts[0] not in OPEN_SECTIONS:
            raise ConfigError(path, "is not a field of this session")
        node[last] = value


def _child(node: Any, part: str | int, walked: str, path: str) -> tuple[Any, str]:
    if isinstance(part, int):
        here = f"{walked}[{part}]"
        if not isinstance(node, list):
            raise ConfigError(path, f"{walked} is not a list")
        if not 0 <= part < len(node):
            raise ConfigError(path, f"{walked} has {len(node)} elements, so no [{part}]")
        return node[part], here
    here = f"{walked}.{part}" if walked else part
    if not isinstance(node, dict) or part not in node:
        raise ConfigError(path, f"{here} is not a field of this session")
    return node[part], here


# -- values -------------------------------------------------------------------------------------


def parse_vary(text: str) -> Axis:
    """``FIELD=V1,V2,...`` or ``FIELD=[log:]A..B[UNIT]:N`` -> Axis; ConfigError if malformed."""
    field, sep, spec = text.partition("=")
    field = field.strip()
    if not sep or not field or not spec.strip():
        raise ConfigError("--vary", f"expected FIELD=V1,V2,... or FIELD=A..B:N, got {text!r}")
    parse_path(field)
    values = expand_values(spec.strip(), field)
    if len(set(map(format_value, values))) != len(values):
        raise ConfigError(field, f"the values {spec.strip()!r} name the same value twice")
    return Axis(field, values)


def expand_values(spec: str, field: str) -> tuple[Any, ...]:
    """The values of one axis (see the module docstring for the forms)."""
    m = _RANGE.match(spec)
    if m is not None:
        return _range_values(m, field)
    tokens = [t.strip() for t in spec.split(",")]
    if any(not t for t in tokens):
        raise ConfigError(field, f"{spec!r} has an empty value between commas")
    return tuple(parse_token(t) for t in tokens)


def parse_token(token: str) -> Any:
    """JSON numbers, booleans and null as such; any other text stays text."""
    try:
        v = json.loads(token)
    except ValueError:
        return token
    return v if v is None or isinstance(v, (bool, int, float)) else token


def _range_values(m: re.Match[str], field: str) -> tuple[Any, ...]:
    a, b = float(m["a"]), float(m["b"])
    n = int(m["n"]) if len(m["n"]) <= 9 else MAX_RANGE_COUNT + 1  # (int() stops at 4300 digits)
    if not (math.isfinite(a) and math.isfinite(b)):
        ends = f"{clip(m['a'], 40)!r} and {clip(m['b'], 40)!r}"
        raise ConfigError(field, f"a range's ends must be finite numbers, got {ends}")
    ua, ub = (m["ua"] or "").strip(), (m["ub"] or "").strip()
    if ua and ub and ua != ub:
        raise ConfigError(field, f"a range has one unit: {ua!r} and {ub!r} differ")
    unit = ub or ua
    if not 2 <= n <= MAX_RANGE_COUNT:
        raise ConfigError(
            field, f"a range needs 2..{MAX_RANGE_COUNT} values after ':', got {clip(m['n'], 40)}"
        )
    if m["log"]:
        if a <= 0 or b <= 0:
            raise ConfigError(field, "a log: range needs both ends above zero")
        raw = [a * (b / a) ** (i / (n - 1)) for i in range(n)]
    else:
        raw = [a + (b - a) * i / (n - 1) for i in range(n)]
    whole = "." not in m["a"] + m["b"] and "e" not in (m["a"] + m["b"]).lower()
    out: list[Any] = []
    for v in raw:
        r = float(f"{v:.6g}")
        if unit:
            out.append(f"{r:g}{unit}" if abs(r) < 1e16 else f"{r:.6g}{unit}")
        else:
            out.append(int(r) if whole and r.is_integer() else r)
    if len({format_value(v) for v in out}) != n:
        raise ConfigError(field, f"{n} values between {a:g} and {b:g} repeat after rounding")
    return tuple(out)


def seed_axis(base_seed: int, count: int) -> Axis:
    """``--seeds K``: the session's seed and the K - 1 after it."""
    if not 1 <= count <= MAX_RANGE_COUNT:
        raise ConfigError("--seeds", f"must be 1..{MAX_RANGE_COUNT}, got {count}")
    return Axis("seed", tuple(base_seed + i for i in range(count)))


# -- points -------------------------------------------------------------------------------------


def _trace_specs(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The workload specs of a session (initial and added by events) that name a trace file."""
    specs = list(data.get("workloads", []))
    specs += [e for e in data.get("events", []) if e.get("action") == "add_workload"]
    return [
        s
        for s in specs
        if isinstance(s, dict) and s.get("kind") == "trace" and isinstance(s.get("path"), str)
    ]


def resolve_paths(base: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """A copy of ``base`` whose trace paths are absolute, so a point runs the same wherever its
    session goes (a worker, the --sessions directory)."""
    out = copy.deepcopy(base)
    for spec in _trace_specs(out):
        spec["path"] = str((base_dir / spec["path"]).resolve())
    return out


def relative_paths(session: dict[str, Any], directory: Path) -> dict[str, Any]:
    """A copy of a point's session whose trace paths are relative to ``directory`` (where its
    file is written), so the directory can move together with the traces."""
    out = copy.deepcopy(session)
    for spec in _trace_specs(out):
        spec["path"] = os.path.relpath(spec["path"], directory.resolve())
    return out


def make_points(base: dict[str, Any], axes: list[Axis]) -> list[Point]:
    """The validated points of the grid over ``base`` (a session dict whose paths are
    absolute, see resolve_paths).  Raises ConfigError naming the axis, or the point and field."""
    fields = [a.field for a in axes]
    dup = next((f for f in fields if fields.count(f) > 1), None)
    if dup is not None:
        raise ConfigError(dup, "is varied twice; give all its values in one --vary")
    if not axes:
        raise ConfigError("--vary", "a sweep needs at least one --vary FIELD=... or --seeds K")
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_POINTS:
        raise ConfigError("--vary", f"the grid has {count:,} points; the limit is {MAX_POINTS:,}")
    for a in axes:  # a wrong path is the axis's fault, not the first point's
        set_field(copy.deepcopy(base), a.field, a.values[0])
    checked: set[str] = set()
    points = []
    for i, combo in enumerate(itertools.product(*(a.values for a in axes)), start=1):
        values = tuple(zip(fields, combo, strict=True))
        session = copy.deepcopy(base)
        for f, v in values:
            set_field(session, f, v)
        label = values_label(values)
        session["name"] = f"{base.get('name', 'session')} [{label}]"
        try:
            need = _validate(session, checked)
        except DirtylogError as exc:
            raise ConfigError(f"point {i} of {count} ({label})", str(exc)) from None
        points.append(Point(i, values, session, need))
    return points


def _validate(session: dict[str, Any], checked: set[str]) -> int:
    """The schema and each workload's fields (traces read once per distinct spec), parsed
    once; the bytes the point's run needs."""
    cfg = parse_session(copy.deepcopy(session))
    for i, spec in enumerate(cfg.workloads):
        key = canonical_digest([spec, cfg.geometry.granule])
        if key not in checked:
            make_workload(dict(spec), cfg.seed, cfg.geometry.granule, f"workloads[{i}]")
            checked.add(key)
    return estimate_bytes(cfg, preflight(cfg), track_last_sent=False)

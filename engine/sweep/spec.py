"""What a sweep starts from: a session file, or a sweep file that names a session and its axes.

A sweep file (``resources/sweeps/*.json``) is
``{"format": "dirtylog-sweep", "version": 1, "session": "../sessions/webserver.json",
"vary": ["migration.bandwidth=log:1..25Gbit/s:9", ...], "seeds": 1, "question": "..."}``;
its session path is relative to the sweep file.  ``--vary`` on the command line adds axes
after the file's (a field given in both is refused as varied twice).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.files.session import parse_session, read_session_file
from engine.sweep.grid import resolve_paths
from engine.util.errors import ConfigError

SWEEP_FORMAT = "dirtylog-sweep"
SWEEP_VERSION = 1


@dataclass(frozen=True)
class SweepStart:
    """The base session (trace paths absolute), its file, and the axes a sweep file adds."""

    session_path: Path
    base: dict[str, Any]
    vary: tuple[str, ...]
    seeds: int | None


def load_start(path: str | Path) -> SweepStart:
    """Read a session or a sweep file; ConfigError naming the file or field when bad."""
    path = Path(path)
    data = read_session_file(path)
    vary: tuple[str, ...] = ()
    seeds = None
    if isinstance(data, dict) and data.get("format") == SWEEP_FORMAT:
        vary, seeds, session_file = _sweep_fields(data, path)
        path = (path.parent / session_file).resolve()
        data = read_session_file(path)
    raw = parse_session(data).model_dump(mode="json")  # (a session file is read once)
    return SweepStart(path, resolve_paths(raw, path.resolve().parent), vary, seeds)


def _sweep_fields(data: dict[str, Any], path: Path) -> tuple[tuple[str, ...], int | None, str]:
    known = {"format", "version", "session", "vary", "seeds", "question", "name"}
    extra = sorted(set(data) - known)
    if extra:
        raise ConfigError(f"{path.name}: {extra[0]}", "is not a field of a sweep file")
    if data.get("version") != SWEEP_VERSION:
        raise ConfigError(f"{path.name}: version", f"must be {SWEEP_VERSION}")
    session = data.get("session")
    if not isinstance(session, str) or not session:
        raise ConfigError(f"{path.name}: session", "must be the path of a session file")
    vary = data.get("vary", [])
    if not isinstance(vary, list) or not all(isinstance(v, str) for v in vary):
        raise ConfigError(
            f"{path.name}: vary", 'must be a list such as ["tracking.mode=bitmap,ring"]'
        )
    seeds = data.get("seeds")
    if seeds is not None and (not isinstance(seeds, int) or isinstance(seeds, bool)):
        raise ConfigError(f"{path.name}: seeds", f"must be a whole number, got {seeds!r}")
    return tuple(vary), seeds, session

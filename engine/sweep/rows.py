"""A sweep's rows on disk: CSV or JSON by the file's extension, and reading them back to resume.

One row per point: ``point`` (its 1-based index in the grid), one column per varied field
(named by its path, the value as given), the result columns of ``engine.sweep.point`` and
``session_sha256`` (the point's session as run; ``--resume`` skips a point whose digest is
already in the file).  JSON adds the axes and what each column means (``columns``).  Files are
written atomically and durably (``engine.util.safeio.replace_atomically``: a temporary file
flushed and fsynced, renamed over the old one, then the folder fsynced), so an interrupted sweep
or a power cut leaves the rows finished so far.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from engine.sweep.grid import Axis, parse_token
from engine.sweep.point import RESULT_COLUMNS
from engine.util.errors import ConfigError
from engine.util.safeio import fsync_dir, read_text_capped, replace_atomically

FORMAT = "dirtylog-sweep-rows"
VERSION = 1
MAX_ROWS_BYTES = 256 << 20

COLUMN_NOTES = {
    "point": "index of the point in the grid (1-based, first axis slowest)",
    "outcome": "completed, not-converged or error (simulated)",
    "reason": "why the migration stopped (or the engine's sentence for error)",
    "rounds": "rounds including the stop-and-copy (simulated; rounds_count of dirtylog run)",
    "downtime_ms": "ms the guest was paused at switchover (modelled)",
    "total_time_ms": "ms from migration start to the end (modelled)",
    "transferred_bytes": "bytes sent to the destination (modelled)",
    "throttle_pct": "auto-converge throttle at the end, % (modelled)",
    "mismatches": "destination pages not holding the source version at switchover",
    "wall_s_measured": "s of engine wall time on the worker for this point (measured)",
    "result_sha256": "sha256 of the whole run result without measured times",
    "session_sha256": "sha256 of the point's session as run",
}


def columns(axes: list[Axis]) -> list[str]:
    """The header: point, the varied fields, the results, the session digest."""
    return ["point", *(a.field for a in axes), *RESULT_COLUMNS, "session_sha256"]


def output_kind(path: str | Path, option: str = "--out") -> str:
    """``csv`` or ``json`` from the extension; ConfigError naming ``option`` for anything else."""
    ext = Path(path).suffix.lower()
    if ext not in (".csv", ".json"):
        raise ConfigError(option, f"{path}: the extension must be .csv or .json")
    return ext[1:]


def write_rows(
    path: str | Path, rows: list[dict[str, Any]], axes: list[Axis], session: str
) -> None:
    """Write ``rows`` sorted by point, atomically, as CSV or JSON by extension."""
    ordered = sorted(rows, key=lambda r: int(r["point"]))
    header = columns(axes)
    if output_kind(path) == "csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, header, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in ordered:
            w.writerow({k: _cell(r.get(k, "")) for k in header})
        text = buf.getvalue()
    else:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "session": session,
            "axes": [{"field": a.field, "values": list(a.values)} for a in axes],
            "columns": {c: COLUMN_NOTES.get(c, "varied session field") for c in header},
            "rows": [{k: r.get(k, "") for k in header} for r in ordered],
        }
        text = json.dumps(doc, indent=1) + "\n"
    path = Path(path)
    replace_atomically(path, text, verb="written")
    fsync_dir(path.parent)


def _cell(v: Any) -> Any:
    return json.dumps(v) if isinstance(v, bool) or v is None else v


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a CSV or JSON file this module wrote (CSV cells typed as JSON numbers and
    booleans where they parse as such).  ConfigError naming the file when it is not one."""
    path = Path(path)
    kind = output_kind(path)
    text = read_text_capped(path, MAX_ROWS_BYTES, str(path), "a sweep's rows file")
    if kind == "csv":
        rows = [
            {k: parse_token(v) for k, v in r.items()} for r in csv.DictReader(io.StringIO(text))
        ]
    else:
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise ConfigError(str(path), f"is not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ConfigError(str(path), f'is not a sweep\'s rows (format "{FORMAT}")')
        rows = doc.get("rows")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"{path}: rows", "must be a list of objects")
    if rows and not all("session_sha256" in r and "point" in r for r in rows):
        raise ConfigError(str(path), "is not a sweep's rows (no point/session_sha256 columns)")
    return rows

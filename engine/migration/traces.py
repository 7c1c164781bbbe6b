"""Trace files of timed guest writes: CSV (``t_ns,ipa[,vcpu]``) or ``.npz``.

Times must not decrease.  A bad row is refused with the file name and its line number; the
fast path parses with numpy and only re-reads line by line to find what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.util.errors import ConfigError

MAX_TRACE_BYTES = 2 << 30
MAX_ROWS = 100_000_000


@dataclass(frozen=True)
class Trace:
    t_ns: np.ndarray  # int64, non-decreasing
    ipa: np.ndarray  # int64
    vcpu: np.ndarray | None  # int32


def load_trace(path: str | Path) -> Trace:
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the trace ({exc.strerror or exc})") from None
    if size > MAX_TRACE_BYTES:
        raise ConfigError(path.name, f"is {size} bytes; traces are limited to 2 GiB")
    if not path.is_file():
        raise ConfigError(str(path), "is not a regular file (a trace is a .csv or .npz file)")
    if path.suffix == ".npz":
        return _load_npz(path)
    return _load_csv(path)


def _load_npz(path: Path) -> Trace:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as exc:  # zip or npy format errors
        raise ConfigError(path.name, f"is not a readable .npz trace ({exc})") from None
    for key in ("t_ns", "ipa"):
        if key not in arrays:
            raise ConfigError(
                path.name, f"has no array {key!r} (needs t_ns and ipa, optional vcpu)"
            )
    t, ipa = arrays["t_ns"], arrays["ipa"]
    vcpu = arrays.get("vcpu")
    for key, a in (("t_ns", t), ("ipa", ipa), ("vcpu", vcpu)):
        if a is None:
            continue
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ConfigError(f"{path.name}: {key}", "must be a 1-D integer array")
        if a.size != t.size:
            raise ConfigError(f"{path.name}: {key}", f"has {a.size} rows, t_ns has {t.size}")
    return _validated(path.name, t.astype(np.int64), ipa.astype(np.int64), vcpu, row_offset=0)


def _load_csv(path: Path) -> Trace:
    if not path.is_file():
        raise ConfigError(str(path), "is not a regular file (a trace is a .csv or .npz file)")
    try:
        with open(path, encoding="utf-8") as fh:
            header = fh.readline().strip().replace(" ", "")
            if header not in ("t_ns,ipa", "t_ns,ipa,vcpu"):
                raise ConfigError(
                    f"{path.name}: line 1",
                    f'the header must be "t_ns,ipa" or "t_ns,ipa,vcpu", got {header!r}',
                )
            ncols = header.count(",") + 1
            text = fh.read()
    except UnicodeDecodeError:
        raise ConfigError(path.name, "is not UTF-8 text") from None
    lines = text.splitlines()
    if not any(line.strip() for line in lines):
        raise ConfigError(path.name, "has a header but no rows")
    if len(lines) > MAX_ROWS:
        raise ConfigError(path.name, f"has more than {MAX_ROWS:,} rows")
    cols = _parse_rows(path.name, lines, ncols)
    vcpu = cols[2].astype(np.int32) if ncols == 3 else None
    return _validated(path.name, cols[0], cols[1], vcpu, row_offset=2)


def _parse_rows(name: str, lines: list[str], ncols: int) -> list[np.ndarray]:
    """Parse integer columns (decimal or 0x hex); report the first bad line by number."""
    rows = [line for line in lines if line.strip()]
    if len(rows) == len(lines):
        try:
            table = np.array([line.split(",") for line in rows])
            if table.ndim == 2 and table.shape[1] == ncols:
                return [
                    np.array([int(x, 0) for x in table[:, c]], dtype=np.int64) for c in range(ncols)
                ]
        except ValueError:
            pass
    out: list[list[int]] = [[] for _ in range(ncols)]
    for i, line in enumerate(lines, start=2):
        if not line.strip():
            raise ConfigError(f"{name}: line {i}", "is empty; every row needs t_ns,ipa")
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != ncols:
            raise ConfigError(f"{name}: line {i}", f"has {len(parts)} columns, expected {ncols}")
        for c, p in enumerate(parts):
            try:
                out[c].append(int(p, 0))
            except ValueError:
                raise ConfigError(f"{name}: line {i}", f"{p!r} is not an integer") from None
    return [np.array(col, dtype=np.int64) for col in out]


def _validated(name: str, t: np.ndarray, ipa: np.ndarray, vcpu, row_offset: int) -> Trace:
    def where(i: int) -> str:
        return f"{name}: line {i + row_offset}" if row_offset else f"{name}: row {i}"

    # vcpu -1 is a write with no running vCPU (a device, like vgic/ITS state being saved):
    # in ring mode it goes to the backup bitmap
    for label, a, low in (("t_ns", t, 0), ("ipa", ipa, 0), ("vcpu", vcpu, -1)):
        if a is not None and a.size and int(a.min()) < low:
            i = int(np.argmax(a < low))
            what = "is negative" if low == 0 else "is below -1 (-1 means no running vCPU)"
            raise ConfigError(where(i), f"{label} {int(a[i])} {what}")
    if t.size > 1:
        dec = np.flatnonzero(t[1:] < t[:-1])
        if dec.size:
            i = int(dec[0]) + 1
            raise ConfigError(
                where(i),
                f"t_ns {int(t[i])} is before the previous row's {int(t[i - 1])}; "
                "times must not decrease",
            )
    return Trace(t, ipa, None if vcpu is None else np.asarray(vcpu, dtype=np.int32))


def save_trace_csv(path: str | Path, t_ns, ipa, vcpu=None) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("t_ns,ipa,vcpu\n" if vcpu is not None else "t_ns,ipa\n")
        if vcpu is None:
            fh.writelines(f"{int(t)},{int(a):#x}\n" for t, a in zip(t_ns, ipa, strict=True))
        else:
            fh.writelines(
                f"{int(t)},{int(a):#x},{int(v)}\n" for t, a, v in zip(t_ns, ipa, vcpu, strict=True)
            )

"""Trace files of timed guest writes: CSV (``t_ns,ipa[,vcpu]``) or ``.npz``.

Times must not decrease.  A bad row is refused with the session field that names the file
(``workloads[0].path``), the file and its line number.  Reads are bounded: only regular files,
at most ``MAX_TRACE_BYTES``; a CSV is read twice in blocks (count the rows, then parse them
``CHUNK_BYTES`` at a time, digit position by digit position as arrays, into arrays allocated
once), so the memory a load needs beyond the trace itself (``BYTES_PER_ROW``) does not grow
with the row count, and no line may be longer than ``MAX_LINE_CHARS``.  An ``.npz`` is opened
as the zip it is: only the ``t_ns``, ``ipa`` and ``vcpu`` members are read, each checked by
its declared size and its ``.npy`` header (dtype, shape) before a byte is decompressed, never
with pickles.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.util.errors import ConfigError, shown
from engine.util.memory import check_fits
from engine.util.safeio import file_size, open_regular

MAX_TRACE_BYTES = 2 << 30
MAX_ROWS = 100_000_000
MAX_LINE_CHARS = 256  # "t_ns,ipa,vcpu" in hex or decimal needs under 60
CHUNK_BYTES = 2 << 20
CHUNK_TEMP = 48  # bytes of parsing temporaries per byte of a chunk (field offsets, digits)
BYTES_PER_ROW = 28  # t_ns, ipa, vcpu as int64 while parsing, then vcpu as int32
MAX_VCPU = 1023  # a session has at most 1024 vCPUs (the schema's vcpus); -1 is none
_LIMITS = {"t_ns": (0, (1 << 63) - 1), "ipa": (0, (1 << 63) - 1), "vcpu": (-1, MAX_VCPU)}
_RULES = {
    "t_ns": "must be 0 to 2^63 - 1 ns",
    "ipa": "must be 0 to 2^63 - 1",
    "vcpu": f"must be -1 (no running vCPU) to {MAX_VCPU}",
}


@dataclass(frozen=True)
class Trace:
    t_ns: np.ndarray  # int64, non-decreasing
    ipa: np.ndarray  # int64
    vcpu: np.ndarray | None  # int32


def load_trace(path: str | Path, field: str = "") -> Trace:
    """Load a trace; ConfigError(``field`` or the file name) with the line of a bad row."""
    path = Path(path)
    field = field or path.name
    with open_regular(path, field, "a trace is a .csv or .npz file") as fh:
        size = file_size(fh)
        if size > MAX_TRACE_BYTES:
            raise ConfigError(field, f"{path.name} is {size:,} bytes; traces are limited to 2 GiB")
        if path.suffix == ".npz":
            return _load_npz(fh, path.name, field)
        return _load_csv(fh, path.name, field)


# -- .npz ---------------------------------------------------------------------------------------


def _load_npz(fh: BinaryIO, name: str, field: str) -> Trace:
    try:
        with zipfile.ZipFile(fh) as z:
            members = {n.removesuffix(".npy"): z.getinfo(n) for n in z.namelist()}
            for key in ("t_ns", "ipa"):
                if key not in members:
                    raise ConfigError(
                        field, f"{name} has no array {key!r} (needs t_ns and ipa, optional vcpu)"
                    )
            shapes = {
                k: _npy_header(z, members[k], name, field, k)
                for k in ("t_ns", "ipa", "vcpu")
                if k in members
            }
            rows = shapes["t_ns"]
            for key, n in shapes.items():
                if n != rows:
                    raise ConfigError(field, f"{name}: {key} has {n} rows, t_ns has {rows}")
            check_fits(rows * BYTES_PER_ROW * 2, field, f"the trace {name} ({rows:,} rows)")
            arrays = {k: _npy_read(z, members[k], name, field) for k in shapes}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(field, f"{name} is not a readable .npz trace ({exc})") from None
    cols = {k: _checked(a, k, name, field) for k, a in arrays.items()}
    vcpu = cols.get("vcpu")
    return _ordered(name, field, cols["t_ns"], cols["ipa"], vcpu, first_line=0)


def _npy_header(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, field: str, key: str) -> int:
    """Rows of one member, from its header; refuses what would decompress beyond its size."""
    if info.file_size > MAX_TRACE_BYTES:
        raise ConfigError(
            field, f"{name}: {key} declares {info.file_size:,} bytes; the limit is 2 GiB"
        )
    with z.open(info) as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        else:  # pragma: no cover - read_magic refuses other versions
            raise ValueError(f"unknown .npy version {version}")
    if dtype.hasobject or dtype.kind not in "iu" or len(shape) != 1:
        raise ConfigError(field, f"{name}: {key} must be a 1-D integer array, got {dtype} {shape}")
    if shape[0] > MAX_ROWS or shape[0] * dtype.itemsize > info.file_size:
        raise ConfigError(
            field, f"{name}: {key} declares {shape[0]:,} rows, more than its data or 100 M rows"
        )
    return int(shape[0])


def _npy_read(z: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, field: str) -> np.ndarray:
    with z.open(info) as member:
        return np.lib.format.read_array(member, allow_pickle=False)


def _checked(a: np.ndarray, key: str, name: str, field: str) -> np.ndarray:
    """``a`` as int64 after checking its range in its own dtype (no wrap to negative)."""
    lo, hi = _LIMITS[key]
    if a.dtype == np.uint64:
        over = np.flatnonzero(a > np.uint64(hi))
        if over.size:
            i = int(over[0])
            raise ConfigError(field, f"row {i} of {name}: {key} {int(a[i])} {_RULES[key]}")
    out = a.astype(np.int64)
    _check_range(out, key, lambda i: f"row {i} of {name}", field)
    return out


def _check_range(a: np.ndarray, key: str, where, field: str) -> None:
    lo, hi = _LIMITS[key]
    if a.size and (int(a.min()) < lo or int(a.max()) > hi):
        i = int(np.flatnonzero((a < lo) | (a > hi))[0])
        raise ConfigError(field, f"{where(i)}: {key} {int(a[i])} {_RULES[key]}")


# -- CSV ----------------------------------------------------------------------------------------


def _load_csv(fh: BinaryIO, name: str, field: str) -> Trace:
    header = fh.readline(MAX_LINE_CHARS + 1).decode("utf-8", "replace").strip().replace(" ", "")
    if header not in ("t_ns,ipa", "t_ns,ipa,vcpu"):
        raise ConfigError(
            field,
            f'line 1 of {name}: the header must be "t_ns,ipa" or "t_ns,ipa,vcpu", got '
            f"{shown(header)}",
        )
    ncols = header.count(",") + 1
    start = fh.tell()
    rows = _count_rows(fh)
    if rows == 0:
        raise ConfigError(field, f"{name} has a header but no rows")
    if rows > MAX_ROWS:
        raise ConfigError(field, f"{name} has more than {MAX_ROWS:,} rows")
    check_fits(
        rows * BYTES_PER_ROW + CHUNK_TEMP * CHUNK_BYTES, field, f"the trace {name} ({rows:,} rows)"
    )
    cols = np.zeros((ncols, rows), dtype=np.int64)
    fh.seek(start)
    done = 0
    for data, first in _line_blocks(fh, name, field):
        block = _parse_fast(data, ncols)
        if block is None:  # something unusual: parse line by line to name the bad one
            block = _parse_block(_split_lines(data, name, field), ncols, name, field, first)
        if done + block.shape[1] > rows:
            raise ConfigError(field, f"{name} changed while it was read")
        cols[:, done : done + block.shape[1]] = block
        for c, key in enumerate(("t_ns", "ipa", "vcpu")[:ncols]):
            _check_range(cols[c, done : done + block.shape[1]], key, _at_line(first, name), field)
        done += block.shape[1]
    if done != rows:
        raise ConfigError(field, f"{name} changed while it was read")
    vcpu = cols[2] if ncols == 3 else None
    return _ordered(name, field, cols[0], cols[1], vcpu, first_line=2)


def _at_line(first: int, name: str):
    return lambda i: f"line {first + i} of {name}"


def _count_rows(fh: BinaryIO) -> int:
    """Lines after the header (a last line without a newline counts)."""
    rows, last = 0, b"\n"
    while block := fh.read(CHUNK_BYTES):
        rows += block.count(b"\n")
        last = block[-1:]
    return rows + (last != b"\n")


def _line_blocks(fh: BinaryIO, name: str, field: str):
    """(whole lines as bytes, each ending in a newline; the first one's line number), about
    CHUNK_BYTES at a time; refuses a line longer than MAX_LINE_CHARS."""
    carry, line_no = b"", 2
    while True:
        block = fh.read(CHUNK_BYTES)
        data = carry + block
        cut = data.rfind(b"\n") + 1 if block else len(data)
        carry, data = data[cut:], data[:cut]
        if len(carry) > MAX_LINE_CHARS:
            at = line_no + data.count(b"\n")
            raise ConfigError(
                field, f"line {at} of {name} is longer than {MAX_LINE_CHARS} characters"
            )
        if data:
            if not data.endswith(b"\n"):
                data += b"\n"
            a = np.frombuffer(data, dtype=np.uint8)
            ends = np.flatnonzero(a == 10)
            lengths = np.diff(ends, prepend=-1) - 1
            if lengths.max() > MAX_LINE_CHARS:
                at = line_no + int(np.argmax(lengths > MAX_LINE_CHARS))
                raise ConfigError(
                    field, f"line {at} of {name} is longer than {MAX_LINE_CHARS} characters"
                )
            yield data, line_no
            line_no += ends.size
        if not block:
            return


def _split_lines(data: bytes, name: str, field: str) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(field, f"{name} is not UTF-8 text") from None
    return text.split("\n")[:-1]  # data ends with a newline


_DIGITS = np.full(256, 99, dtype=np.int64)
_DIGITS[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_DIGITS[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)
_DIGITS[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16)


def _parse_fast(data: bytes, ncols: int) -> np.ndarray | None:
    """Columns of plain decimal or 0x-hex integers (optionally negative), parsed as arrays:
    one pass per digit position over every field.  None when anything else appears (spaces,
    other bases, empty fields, numbers that might not fit 63 bits), so the caller falls back
    to the line-by-line parser, which names the line."""
    a = np.frombuffer(data, dtype=np.uint8)
    ends = np.flatnonzero((a == 44) | (a == 10))
    if ends.size % ncols or not (a[ends[ncols - 1 :: ncols]] == 10).all():
        return None
    if (a[ends] == 10).sum() != ends.size // ncols:
        return None
    starts = np.empty_like(ends)
    starts[0], starts[1:] = 0, ends[:-1] + 1
    neg = a[starts] == 45  # "-"
    s = starts + neg
    after = np.minimum(s + 1, a.size - 1)
    hexa = (ends - s > 2) & (a[s] == 48) & ((a[after] | 32) == 120)  # "0x", "0X"
    s = s + 2 * hexa
    length = ends - s
    if length.min() <= 0 or np.where(hexa, length > 15, length > 18).any():
        return None
    base = np.where(hexa, 16, 10)
    value = np.zeros(ends.size, dtype=np.int64)
    for k in range(int(length.max())):
        live = np.flatnonzero(length > k)
        digit = _DIGITS[a[s[live] + k]]
        if (digit >= base[live]).any():
            return None
        value[live] = value[live] * base[live] + digit
    value = np.where(neg, -value, value)
    return value.reshape(-1, ncols).T


def _parse_block(lines: list[str], ncols: int, name: str, field: str, first: int) -> np.ndarray:
    """Integer columns (decimal or 0x hex) of some lines; the first bad one by its number."""
    rows = [line.split(",") for line in lines]
    for i, parts in enumerate(rows):
        if len(parts) != ncols:
            what = (
                "is empty; every row needs t_ns,ipa"
                if not lines[i].strip()
                else f"has {len(parts)} columns, expected {ncols}"
            )
            raise ConfigError(field, f"line {first + i} of {name} {what}")
    out = np.empty((ncols, len(rows)), dtype=np.int64)
    for c, key in enumerate(("t_ns", "ipa", "vcpu")[:ncols]):
        try:
            values = [int(parts[c], 0) for parts in rows]
        except ValueError:
            i = next(i for i, parts in enumerate(rows) if not _is_int(parts[c]))
            raise ConfigError(
                field, f"line {first + i} of {name}: {shown(rows[i][c].strip())} is not an integer"
            ) from None
        try:
            out[c] = values
        except OverflowError:
            lo, hi = _LIMITS[key]
            i = next(i for i, v in enumerate(values) if not lo <= v <= hi)
            raise ConfigError(
                field, f"line {first + i} of {name}: {key} {shown(values[i])} {_RULES[key]}"
            ) from None
    return out


def _is_int(text: str) -> bool:
    try:
        int(text, 0)
    except ValueError:
        return False
    return True


def _ordered(name: str, field: str, t, ipa, vcpu, first_line: int) -> Trace:
    """Refuse a time before the previous row's; the trace with vcpu as int32."""
    if t.size > 1:
        dec = np.flatnonzero(t[1:] < t[:-1])
        if dec.size:
            i = int(dec[0]) + 1
            where = f"line {i + first_line} of {name}" if first_line else f"row {i} of {name}"
            raise ConfigError(
                field,
                f"{where}: t_ns {int(t[i])} is before the previous row's {int(t[i - 1])}; "
                "times must not decrease",
            )
    return Trace(t, ipa, None if vcpu is None else vcpu.astype(np.int32))


def save_trace_csv(path: str | Path, t_ns, ipa, vcpu=None) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("t_ns,ipa,vcpu\n" if vcpu is not None else "t_ns,ipa\n")
        if vcpu is None:
            fh.writelines(f"{int(t)},{int(a):#x}\n" for t, a in zip(t_ns, ipa, strict=True))
        else:
            fh.writelines(
                f"{int(t)},{int(a):#x},{int(v)}\n" for t, a, v in zip(t_ns, ipa, vcpu, strict=True)
            )

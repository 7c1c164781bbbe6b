"""The atomic save's order of operations, recorded call by call.

A save that survives a crash or power cut at any point needs, in this order (rename(2) and
fsync(2) man pages; the ext4/XFS "replace via rename" idiom): write the new content to a
temporary file beside the target, flush Python's buffer, fsync the temporary file, rename it
over the target, then fsync the directory so the rename itself is on disk.  Renaming before
the fsync can leave an empty or partial file under the target's name after a power cut.
A sweep's rows file (``engine.sweep.rows.write_rows``) is written by the same helper
(``engine.util.safeio.replace_atomically`` then ``fsync_dir``) and is held to the same order.
"""

from __future__ import annotations

import copy
import json
import os

import pytest

from engine.files.session import parse_session, save_session_file
from engine.sweep.grid import Axis
from engine.sweep.rows import read_rows, write_rows
from engine.util import safeio
from tests.test_session_schema import V1


class _RecordingFile:
    """Wraps a real file and logs write/flush (with the file's descriptor) into ``calls``."""

    def __init__(self, fh, calls):
        self._fh, self._calls = fh, calls

    def write(self, text):
        self._calls.append(("write", self._fh.fileno()))
        return self._fh.write(text)

    def flush(self):
        self._calls.append(("flush", self._fh.fileno()))
        return self._fh.flush()

    def fileno(self):
        return self._fh.fileno()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._calls.append(("close", self._fh.fileno()))
        return self._fh.__exit__(*exc)


def _record(monkeypatch, action) -> list[tuple]:
    """Run ``action()`` recording every file-system call of the durable-write helpers
    (``engine.util.safeio``: the session save and a sweep's rows both go through it)."""
    calls: list[tuple] = []
    fds: dict[int, str] = {}
    real_open, real_os_open = open, os.open
    real_fsync, real_replace, real_close = os.fsync, os.replace, os.close

    def rec_open(file, mode="r", *a, **k):
        fh = real_open(file, mode, *a, **k)
        fds[fh.fileno()] = str(file)
        calls.append(("open", str(file), mode))
        return _RecordingFile(fh, calls)

    def rec_os_open(file, flags, *a, **k):
        fd = real_os_open(file, flags, *a, **k)
        fds[fd] = str(file)
        calls.append(("os.open", str(file)))
        return fd

    def rec_fsync(fd):
        calls.append(("fsync", fds.get(fd, fd)))
        return real_fsync(fd)

    def rec_replace(src, dst):
        calls.append(("rename", str(src), str(dst)))
        return real_replace(src, dst)

    def rec_close(fd):
        calls.append(("os.close", fds.get(fd, fd)))
        return real_close(fd)

    monkeypatch.setattr(safeio, "open", rec_open, raising=False)
    monkeypatch.setattr(os, "open", rec_os_open)
    monkeypatch.setattr(os, "fsync", rec_fsync)
    monkeypatch.setattr(os, "replace", rec_replace)
    monkeypatch.setattr(os, "close", rec_close)
    try:
        action()
    finally:
        monkeypatch.undo()
    return calls


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """Save a changed session over an existing one, recording every file-system call."""
    path = tmp_path / "s.json"
    save_session_file(path, parse_session(copy.deepcopy(V1)))
    data = copy.deepcopy(V1)
    data["name"] = "new"
    calls = _record(monkeypatch, lambda: save_session_file(path, parse_session(data)))
    return path, calls


def test_save_writes_flushes_fsyncs_renames_then_fsyncs_the_directory(recorded):
    path, calls = recorded
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    kinds = [c[0] for c in calls]
    # the temporary file: opened for writing beside the target, written, flushed, fsynced
    assert calls[0] == ("open", tmp, "w")
    fd = [c[1] for c in calls if c[0] == "write"]
    assert fd and len(set(fd)) == 1
    first_write = kinds.index("write")
    flush = kinds.index("flush")
    fsync_file = calls.index(("fsync", tmp))
    rename = calls.index(("rename", tmp, str(path)))
    dir_open = calls.index(("os.open", str(path.parent)))
    fsync_dir = calls.index(("fsync", str(path.parent)))
    assert first_write < flush < fsync_file < rename < dir_open < fsync_dir
    # nothing is written after the flush, and the file is fsynced before it is renamed
    assert max(i for i, k in enumerate(kinds) if k == "write") < flush
    assert calls[-1] == ("os.close", str(path.parent))
    assert json.loads(path.read_text())["name"] == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["s.json"]


def test_each_step_happens_exactly_once(recorded):
    _, calls = recorded
    kinds = [c[0] for c in calls]
    assert kinds.count("rename") == 1
    assert kinds.count("fsync") == 2  # the file, then the directory
    assert kinds.count("flush") == 1


_ROW = {
    "point": 1,
    "migration.auto_converge": False,
    "outcome": "completed",
    "session_sha256": "ab",
}


@pytest.fixture(params=["csv", "json"])
def recorded_rows(request, monkeypatch, tmp_path):
    """Rewrite an existing sweep rows file (CSV or JSON) with one more row, recorded."""
    path = tmp_path / f"rows.{request.param}"
    axes = [Axis("migration.auto_converge", (False, True))]
    write_rows(path, [_ROW], axes, "s.json")
    rows = [_ROW, {**_ROW, "point": 2, "migration.auto_converge": True, "session_sha256": "cd"}]
    calls = _record(monkeypatch, lambda: write_rows(path, rows, axes, "s.json"))
    return path, calls


def test_sweep_rows_write_flush_fsync_rename_then_fsync_the_directory(recorded_rows):
    """The rows file follows the session save's order exactly (the module docstring's
    sources): a power cut during a long sweep leaves the previous rows or the new ones,
    never an empty file under the rows' name (it was: write_text then rename, no fsync)."""
    path, calls = recorded_rows
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.tmp"))
    kinds = [c[0] for c in calls]
    assert calls[0] == ("open", tmp, "w")
    fd = [c[1] for c in calls if c[0] == "write"]
    assert fd and len(set(fd)) == 1
    flush = kinds.index("flush")
    fsync_file = calls.index(("fsync", tmp))
    rename = calls.index(("rename", tmp, str(path)))
    dir_open = calls.index(("os.open", str(path.parent)))
    fsync_dir = calls.index(("fsync", str(path.parent)))
    assert kinds.index("write") < flush < fsync_file < rename < dir_open < fsync_dir
    assert max(i for i, k in enumerate(kinds) if k == "write") < flush
    assert calls[-1] == ("os.close", str(path.parent))
    assert kinds.count("rename") == 1
    assert kinds.count("fsync") == 2  # the file, then the directory
    assert kinds.count("flush") == 1
    assert [r["point"] for r in read_rows(path)] == [1, 2]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]

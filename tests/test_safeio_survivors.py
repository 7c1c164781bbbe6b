"""engine/util/safeio.py and the save's stale-temp scan (issue 19, session group survivors).

Each expected value comes from POSIX/Linux semantics or the module's documented sentences,
not from reading the result back: a missing file is ENOENT, whose strerror is glibc's
"No such file or directory"; a session leader without a controlling terminal that opens a
terminal without O_NOCTTY acquires it (open(2), credentials(7)); the file handed back reads
blocking (fcntl F_GETFL has no O_NONBLOCK); a file is read for at most cap + 1 bytes; the
saved text is UTF-8 whatever the process's LC_CTYPE says.
"""

from __future__ import annotations

import locale
import os

import pytest

import engine.files.session as session_mod
from engine.files.session import save_session_file
from engine.util import safeio
from engine.util.errors import ConfigError
from engine.util.safeio import open_regular, read_capped, replace_atomically


def test_a_missing_file_names_the_field_and_the_strerror(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ConfigError) as info:
        open_regular(missing, "session", "a session file")
    assert info.value.field == "session"
    assert info.value.rule == "cannot be opened (No such file or directory)"
    assert str(info.value) == "session: cannot be opened (No such file or directory)"


def test_the_returned_file_is_blocking(tmp_path):
    path = tmp_path / "t.bin"
    path.write_bytes(b"abc")
    with open_regular(path, "trace", "a trace") as fh:
        assert os.get_blocking(fh.fileno()) is True
        assert fh.read() == b"abc"


def test_a_terminal_opened_by_a_session_leader_does_not_become_its_controlling_tty(tmp_path):
    """O_NOCTTY: without it, a session leader with no controlling terminal that opens a
    terminal acquires it (open(2)); then /dev/tty opens.  Checked in a forked child that
    calls setsid(), so the test process's own session is untouched.  (The parent opens a
    regular file too, so mutmut, which maps tests to functions in the test's own process,
    runs this test for open_regular's mutants.)"""
    plain = tmp_path / "plain.bin"
    plain.write_bytes(b"x")
    with open_regular(plain, "trace", "a trace") as fh:
        assert fh.read() == b"x"
    master, slave = os.openpty()
    name = os.ttyname(slave)
    os.close(slave)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 9
            try:
                os.setsid()
                try:
                    open_regular(name, "trace", "a trace")
                    code = 3  # a terminal was accepted as a regular file
                except ConfigError as exc:
                    if exc.rule != "is a character device, not a regular file (a trace)":
                        code = 4
                    else:
                        try:
                            fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
                        except OSError:
                            code = 0  # still no controlling terminal
                        else:
                            os.close(fd)
                            code = 1  # the pty became the controlling terminal
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_file_that_grows_after_its_size_check_is_read_for_cap_plus_one_bytes(
    tmp_path, monkeypatch
):
    cap = 10
    path = tmp_path / "grow.bin"
    path.write_bytes(b"a" * cap)  # within the cap when its size is checked ...
    real_size = safeio.file_size
    real_open = safeio.open_regular
    got: list[int] = []

    def size_then_grow(fh):
        size = real_size(fh)
        with open(path, "ab") as more:  # ... then 20 more bytes arrive
            more.write(b"b" * 20)
        return size

    class Recorder:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def read(self, *args):
            data = self.fh.read(*args)
            got.append(len(data))
            return data

    monkeypatch.setattr(safeio, "file_size", size_then_grow)
    monkeypatch.setattr(safeio, "open_regular", lambda *a: Recorder(real_open(*a)))
    with pytest.raises(ConfigError) as info:
        read_capped(path, cap, "trace", "a trace")
    assert info.value.rule == "is more than 10 bytes; a trace is limited to 10"
    assert got == [cap + 1]  # 30 bytes on disk, 11 read


@pytest.fixture
def ascii_locale():
    """LC_CTYPE = C: the locale's encoding is ASCII (nl_langinfo(CODESET) ANSI_X3.4-1968)."""
    old = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    try:
        yield
    finally:
        locale.setlocale(locale.LC_CTYPE, old)


def test_a_save_is_utf8_whatever_the_locale(tmp_path, ascii_locale):
    path = tmp_path / "s.json"
    replace_atomically(path, "caf\u00e9 \u2192\n", verb="saved")
    assert path.read_bytes() == b"caf\xc3\xa9 \xe2\x86\x92\n"


def test_a_hard_linked_file_is_rewritten_as_utf8_whatever_the_locale(tmp_path, ascii_locale):
    path = tmp_path / "s.json"
    path.write_bytes(b"old content, longer than the new\n")
    os.link(path, tmp_path / "other.json")
    replace_atomically(path, "\u00e9\n", verb="saved")
    assert path.read_bytes() == b"\xc3\xa9\n"
    assert (tmp_path / "other.json").read_bytes() == b"\xc3\xa9\n"


def test_the_stale_temp_scan_goes_past_entries_that_are_not_temps(tmp_path, monkeypatch):
    """Every entry is looked at: an unrelated file listed before a stale temp does not end
    the scan.  The listing is put in that order (readdir's own order is unspecified)."""
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".other.json.999999999.tmp").write_text("half")  # another name's temp
    stale = tmp_path / ".s.json.999999999.tmp"  # pid beyond pid_max: no such process
    stale.write_text("half")
    real_scandir = os.scandir

    def temps_last(folder):
        return sorted(real_scandir(folder), key=lambda e: (e.name.endswith(".tmp"), e.name))

    monkeypatch.setattr(session_mod.os, "scandir", temps_last)
    save_session_file(tmp_path / "s.json", {"x": 1})
    monkeypatch.undo()
    assert not stale.exists()
    assert (tmp_path / ".other.json.999999999.tmp").exists()
    assert (tmp_path / "notes.txt").exists()

"""Bounded reads of user-named files (only regular files, never more than a cap) and durable
writes of the files the engine saves (sessions, a sweep's rows).

A session, trace or snapshot path may name a FIFO (a read would wait forever), a device
(``/dev/zero`` never ends), a directory or a file far larger than anything the format needs.
``open_regular`` refuses all but regular files before reading a byte (the open itself does not
block: ``O_NONBLOCK``), and ``read_capped`` reads at most ``cap + 1`` bytes, so a file that grew
after its size was checked is still refused rather than read to its end.

``replace_atomically`` and ``fsync_dir`` write a file so that a crash or power cut at any
point leaves either the old content or the new (rename(2), fsync(2); the ext4/XFS "replace via
rename" idiom): the text goes to a temporary file beside the target, which is flushed and
fsynced, then renamed over the target; the caller then fsyncs the directory, once for all the
files it wrote there, so the rename itself is on disk.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from engine.util.errors import ConfigError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(path: str | Path, field: str, what: str) -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file; else ConfigError(field).

    ``what`` names the expected content in the sentence ("a session file", "a trace").
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except IsADirectoryError:
        raise ConfigError(field, f"is a directory, not a regular file ({what})") from None
    except OSError as exc:
        raise ConfigError(field, f"cannot be opened ({exc.strerror or exc})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise ConfigError(field, f"is {kind}, not a regular file ({what})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def file_size(fh: BinaryIO) -> int:
    """Size in bytes of an open regular file."""
    return os.fstat(fh.fileno()).st_size


def read_capped(path: str | Path, cap: int, field: str, what: str) -> bytes:
    """The whole of a regular file of at most ``cap`` bytes; larger files are refused by
    their size and, should one grow while read, after ``cap + 1`` bytes at most."""
    with open_regular(path, field, what) as fh:
        size = file_size(fh)
        if size > cap:
            raise ConfigError(field, f"is {size:,} bytes; {what} is limited to {cap:,}")
        data = fh.read(cap + 1)
    if len(data) > cap:
        raise ConfigError(field, f"is more than {cap:,} bytes; {what} is limited to {cap:,}")
    return data


def read_text_capped(path: str | Path, cap: int, field: str, what: str) -> str:
    """``read_capped`` decoded as UTF-8; ConfigError(field) naming the first byte that is not."""
    raw = read_capped(path, cap, field, what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            field, f"is not UTF-8 text (byte {exc.start} cannot be decoded)"
        ) from None


# -- durable writes ---------------------------------------------------------------------------


def replace_atomically(path: Path, text: str, *, verb: str) -> None:
    """Replace ``path``'s content with ``text``: write a temporary file beside it, flush and
    fsync it, then rename it over ``path`` (call ``fsync_dir`` on the folder afterwards).

    The file's permission bits are kept; a file with more than one hard link is rewritten in
    place once the temporary copy is complete and fsynced, so every name sees the new
    content.  Raises ConfigError naming ``path``: "cannot be <verb> (<reason>)"."""
    try:
        old = os.stat(path)
    except OSError:
        old = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        if old is not None:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        if old is not None and old.st_nlink > 1:
            _rewrite_in_place(path, text)
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(str(path), f"cannot be {verb} ({exc.strerror or exc})") from None


def fsync_dir(folder: Path) -> None:
    """fsync a directory, so the renames done in it are on disk (best effort: a folder that
    cannot be opened is left alone)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _rewrite_in_place(path: Path, text: str) -> None:
    """Overwrite a hard-linked file's contents (one inode, every name) and fsync it."""
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text)
        fh.truncate()
        fh.flush()
        os.fsync(fh.fileno())

"""Bounded reads of user-named files: only regular files, never more than a cap.

A session, trace or snapshot path may name a FIFO (a read would wait forever), a device
(``/dev/zero`` never ends), a directory or a file far larger than anything the format needs.
``open_regular`` refuses all but regular files before reading a byte (the open itself does not
block: ``O_NONBLOCK``), and ``read_capped`` reads at most ``cap + 1`` bytes, so a file that grew
after its size was checked is still refused rather than read to its end.
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

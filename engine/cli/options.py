"""Command-line values checked before any work starts: output paths, bounded integers.

Every subcommand checks where it will write before it measures or simulates anything (a
minute of ``bench`` must not end in "is a directory"), and every refusal is a ConfigError
naming the option, so ``dirtylog`` prints one sentence and exits 2.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from engine.util.errors import ConfigError, clip

MAX_PATH_SHOWN = 160  # characters of a path echoed in a message


def _p(path: object) -> str:
    return clip(str(path), MAX_PATH_SHOWN)


def output_file(path: str | None, option: str) -> None:
    """Refuse an output file that cannot be written: empty, a directory, or in a folder that
    does not exist or is not writable.  ``None`` (option not given) passes."""
    if path is None:
        return
    if not path.strip():
        raise ConfigError(option, "needs a file name, got an empty one")
    p = Path(path)
    if p.is_dir():
        raise ConfigError(option, f"{_p(path)} is a directory; give a file name")
    if p.exists():
        if not os.access(p, os.W_OK):
            raise ConfigError(option, f"{_p(path)} exists and cannot be written")
        return
    parent = p.resolve().parent
    if not parent.is_dir() or not _can_create_in(parent):
        raise ConfigError(option, f"cannot write {_p(path)}: {_p(parent)} is not a writable folder")


def output_dir(path: str | None, option: str) -> None:
    """Refuse an output folder that is a file, empty, or cannot be created or written."""
    if path is None:
        return
    if not path.strip():
        raise ConfigError(option, "needs a folder name, got an empty one")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ConfigError(option, f"{_p(path)} exists and is not a folder")
    existing = p.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not _can_create_in(existing):
        raise ConfigError(
            option, f"cannot create or write {_p(path)}: {_p(existing)} is not writable"
        )


def _can_create_in(folder: Path) -> bool:
    """Whether a file can be created in ``folder``, by creating (and removing) one: as root,
    ``os.access`` says yes to /proc or /sys, where creating anything fails."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".dirtylog-probe-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


def bounded_int(value: int, option: str, lo: int, hi: int, what: str) -> int:
    """``value`` if lo <= value <= hi, else a sentence naming the option and the range."""
    if not lo <= value <= hi:
        raise ConfigError(option, f"{what} must be {lo}..{hi}, got {clip(str(value), 40)}")
    return value

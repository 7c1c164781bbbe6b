"""JSON as the user wrote it, bounded: decode without surprises, then check the whole tree.

``loads`` decodes text with three guards the standard decoder lacks: an integer of more than
``MAX_INT_DIGITS`` digits is kept as a ``BigInt`` marker instead of being converted (Python
refuses 4,300 digits with an internal ``ValueError``; 400 digits overflow ``float()`` later),
an object with a key written twice keeps a record of it, and nesting beyond the interpreter's
recursion is refused.  ``check_tree`` then walks any decoded value (from a file or built by
the app) and refuses, with the path as a session spells it (``memslots[1].size``), a
duplicate key, an integer outside ±2^64, NaN or an infinity, a string or key longer than the
limits below, a list or object with too many entries, or nesting deeper than ``MAX_DEPTH``.
Every field, present or added later, gets these checks without asking for them.
"""

from __future__ import annotations

import json
import math
from typing import Any

from engine.util.errors import ConfigError, clip, shown

MAX_DEPTH = 16  # a session nests at most 6 deep (workloads[0].phases[1].rate)
MAX_INT_DIGITS = 40
MAX_INT = 1 << 64  # no field takes an integer beyond ±2^64
MAX_STRING_CHARS = 4096  # names, paths, sizes: a path is at most 4096 bytes on Linux
MAX_KEY_CHARS = 64
MAX_ENTRIES = 200_000  # list items or object keys (events: at most session.MAX_EVENTS)


class BigInt(str):
    """An integer literal too long to convert; refused by ``check_tree`` with its path."""


class _Pairs(dict):
    """A decoded object that had a key twice; ``duplicate`` is the first such key."""

    duplicate: str = ""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) == len(pairs):
        return out
    seen: set[str] = set()
    dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
    marked = _Pairs(out)
    marked.duplicate = dup
    return marked


def _int(text: str) -> int | BigInt:
    digits = len(text.lstrip("-"))
    return BigInt(text) if digits > MAX_INT_DIGITS else int(text)


def loads(text: str, name: str) -> Any:
    """Decode JSON text; ConfigError(name) with the line and column of a syntax error."""
    try:
        return json.loads(text, object_pairs_hook=_object, parse_int=_int)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            name, f"is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise ConfigError(name, f"is nested more than {MAX_DEPTH} levels deep") from None


def join(path: str, key: str | int) -> str:
    """``memslots`` + 1 -> ``memslots[1]``; ``memslots[1]`` + ``size`` -> ``memslots[1].size``."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    key = clip(key, MAX_KEY_CHARS)
    return f"{path}.{key}" if path else key


def check_tree(value: Any, path: str = "", depth: int = 0) -> None:
    """Refuse anything in ``value`` no session field can hold (see the module docstring)."""
    where = path or "session"
    if depth > MAX_DEPTH:
        raise ConfigError(where, f"is nested more than {MAX_DEPTH} levels deep")
    if isinstance(value, BigInt):
        digits = len(value.lstrip("-"))
        raise ConfigError(
            where, f"{clip(value, 24)} ({digits} digits) is beyond any field's range (±2^64)"
        )
    if isinstance(value, bool) or value is None:
        return
    if isinstance(value, int):
        if not -MAX_INT < value < MAX_INT:
            raise ConfigError(where, f"{shown(value)} is beyond any field's range (±2^64)")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(where, f"must be a finite number, got {shown(value)}")
    elif isinstance(value, str):
        if len(value) > MAX_STRING_CHARS:
            raise ConfigError(
                where, f"is a string of {len(value):,} characters; the limit is {MAX_STRING_CHARS}"
            )
    elif isinstance(value, (list, tuple)):
        _check_entries(value, where)
        for i, item in enumerate(value):
            check_tree(item, join(path, i), depth + 1)
    elif isinstance(value, dict):
        _check_entries(value, where)
        if isinstance(value, _Pairs):
            raise ConfigError(
                join(path, value.duplicate), "is given twice in the same object; keep one"
            )
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(where, f"has a key {shown(key)} that is not a string")
            if len(key) > MAX_KEY_CHARS:
                raise ConfigError(
                    join(path, key),
                    f"is not a known field (a key of {len(key):,} characters; "
                    f"keys are at most {MAX_KEY_CHARS})",
                )
            check_tree(item, join(path, key), depth + 1)
    else:
        raise ConfigError(where, f"holds a {type(value).__name__}, which JSON cannot express")


def _check_entries(value: list[Any] | tuple[Any, ...] | dict[str, Any], where: str) -> None:
    if len(value) > MAX_ENTRIES:
        raise ConfigError(where, f"has {len(value):,} entries; the limit is {MAX_ENTRIES:,}")

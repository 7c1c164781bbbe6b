"""Error types the engine raises for bad input.

Every refusal is one sentence that names the field and the rule, so a CLI can print it and
exit 2 and the app can show it next to the edited row without a traceback.
"""

from __future__ import annotations

import errno as _errno
import json


class DirtylogError(Exception):
    """Base class: an input was refused; the message is meant for the user as it is."""


class ConfigError(DirtylogError, ValueError):
    """A configuration value breaks a rule; ``field`` is its path (``memslots[0].size``)."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = clip(field, MAX_FIELD_CHARS)
        self.rule = clip(rule, MAX_RULE_CHARS)
        super().__init__(f"{self.field}: {self.rule}" if field else self.rule)


class KvmError(DirtylogError):
    """An ioctl-level refusal carrying KVM's errno name (``EINVAL``, ``EEXIST`` ...)."""

    def __init__(self, errno_name: str, field: str, rule: str) -> None:
        self.errno_name = errno_name
        self.errno = getattr(_errno, errno_name)
        self.field = clip(field, MAX_FIELD_CHARS)
        self.rule = clip(rule, MAX_RULE_CHARS)
        super().__init__(f"{errno_name}: {self.field}: {self.rule}")


MAX_FIELD_CHARS = 120  # a field path as shown (a 10,000-character key is cut)
MAX_RULE_CHARS = 400  # the rule and the values it echoes
MAX_VALUE_CHARS = 40  # one echoed value


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in "…" when something was cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def shown(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as the user gave it, for a message: strings quoted, numbers as written, lists
    and objects by their JSON-like repr; never longer than ``limit`` characters ("…" marks the
    cut) and never a conversion that could itself fail (an integer of thousands of digits)."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, int):
        if value.bit_length() > 3 * limit:  # str() of a huge int is slow, and capped at 4300
            return f"an integer of {value.bit_length()} bits"
        return clip(str(value), limit)
    if isinstance(value, float):
        return {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(repr(value), repr(value))
    if isinstance(value, str):  # JSON's escapes make control characters visible
        return json.dumps(clip(value, limit - 2), ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return clip("[" + ", ".join(shown(v, limit) for v in list(value)[:4]) + "]", limit)
    if isinstance(value, dict):
        return clip("{" + ", ".join(shown(k, limit) for k in list(value)[:4]) + ": …}", limit)
    return clip(type(value).__name__, limit)

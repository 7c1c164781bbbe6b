"""Error types the engine raises for bad input.

Every refusal is one sentence that names the field and the rule, so a CLI can print it and
exit 2 and the app can show it next to the edited row without a traceback.
"""

from __future__ import annotations

import errno as _errno


class DirtylogError(Exception):
    """Base class: an input was refused; the message is meant for the user as it is."""


class ConfigError(DirtylogError, ValueError):
    """A configuration value breaks a rule; ``field`` is its path (``memslots[0].size``)."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}" if field else rule)


class KvmError(DirtylogError):
    """An ioctl-level refusal carrying KVM's errno name (``EINVAL``, ``EEXIST`` ...)."""

    def __init__(self, errno_name: str, field: str, rule: str) -> None:
        self.errno_name = errno_name
        self.errno = getattr(_errno, errno_name)
        self.field = field
        self.rule = rule
        super().__init__(f"{errno_name}: {field}: {rule}")

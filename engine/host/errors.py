"""Why the host's KVM cannot be used, as one sentence (the CLI exits 3 on it)."""

from __future__ import annotations

from engine.util.errors import DirtylogError


class KvmUnavailable(DirtylogError):
    """``/dev/kvm`` is missing, not permitted, too old, or this architecture is unsupported."""


class HostKvmError(DirtylogError):
    """An ioctl of the real KVM failed; ``errno`` is the kernel's (e.g. ``errno.EINVAL``)."""

    def __init__(self, ioctl: str, err: OSError) -> None:
        self.ioctl = ioctl
        self.errno = err.errno
        import errno as _errno

        self.errno_name = _errno.errorcode.get(err.errno or 0, str(err.errno))
        super().__init__(f"{ioctl}: {self.errno_name} ({err.strerror})")

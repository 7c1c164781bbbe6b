"""Anonymous guest memory from libc ``mmap`` (so that nothing in Python pins it at unmap time).

A mapping is owned by one object and unmapped exactly once; the numpy views it hands out
are only used while it is alive (the machine copies what it returns).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

import numpy as np

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MAP_FAILED = ctypes.c_void_p(-1).value


class Mapping:
    """One ``mmap`` region: anonymous memory, or a file descriptor's pages (the vCPU's)."""

    def __init__(self, size: int, fd: int = -1, offset: int = 0, hugepage: bool = False):
        flags = mmap.MAP_SHARED if fd >= 0 else (mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        addr = _libc.mmap(None, size, mmap.PROT_READ | mmap.PROT_WRITE, flags, fd, offset)
        if addr in (None, MAP_FAILED):
            err = ctypes.get_errno()
            raise OSError(err, f"mmap of {size} bytes failed: {os.strerror(err)}")
        self.addr: int = addr
        self.size = size
        if fd < 0:
            advice = mmap.MADV_HUGEPAGE if hugepage else mmap.MADV_NOHUGEPAGE
            _libc.madvise(addr, size, advice)

    def array(self, dtype=np.uint8, offset: int = 0, count: int | None = None) -> np.ndarray:
        """A numpy view of the mapping (valid until ``close``)."""
        if self.addr is None:
            raise ValueError("the mapping was unmapped")
        itemsize = np.dtype(dtype).itemsize
        count = (self.size - offset) // itemsize if count is None else count
        buf = (ctypes.c_char * (count * itemsize)).from_address(self.addr + offset)
        return np.frombuffer(buf, dtype=dtype, count=count)

    def close(self) -> None:
        """Unmap the region (once; later calls do nothing).  Raises OSError if munmap fails,
        so a region left mapped is never taken for a released one."""
        if self.addr is not None:
            if _libc.munmap(self.addr, self.size) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"munmap of {self.size} bytes failed: {os.strerror(err)}")
            self.addr = None

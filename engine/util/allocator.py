"""Keep freed array memory in the process instead of handing it back to the kernel.

The engine's numpy passes make and drop temporaries of one to tens of megabytes many times a
second.  With glibc's defaults such a buffer is a fresh ``mmap`` (or the heap top is trimmed
after it is freed), so every use faults its pages in again: measured, that was a fifth of a
GET_DIRTY_LOG and a third of the guest write path.  Raising the mmap and trim thresholds lets
the allocator reuse the pages it already has.  Arrays over 32 MiB (the pool, the bitmaps of a
large guest) are still mapped and unmapped on their own, so the retained heap stays small.

Only glibc has ``mallopt``; elsewhere, or when the user has set glibc's own ``MALLOC_*``
tunables, nothing is changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest dynamic threshold on 64-bit
TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once; True when they were set."""
    if any(k.startswith("MALLOC_") for k in os.environ) or "GLIBC_TUNABLES" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )

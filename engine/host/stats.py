"""KVM's binary statistics (KVM_GET_STATS_FD, ``Documentation/virt/kvm/api.rst`` 4.133).

The file holds a header, the descriptors (``kvm_stats_desc`` + name) and the data (u64
values at ``data_offset + desc.offset``).  Names are read once; values with ``pread``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os

from engine.host import uapi as U


class Stats:
    """A VM's or vCPU's statistics file: ``read()`` gives {name: value} of the scalars."""

    def __init__(self, owner_fd: int) -> None:
        self.fd = fcntl.ioctl(owner_fd, U.KVM_GET_STATS_FD)
        head = U.kvm_stats_header.from_buffer_copy(
            os.pread(self.fd, ctypes.sizeof(U.kvm_stats_header), 0)
        )
        dsize = ctypes.sizeof(U.kvm_stats_desc) + head.name_size
        raw = os.pread(self.fd, dsize * head.num_desc, head.desc_offset)
        self.data_offset = head.data_offset
        self.offsets: dict[str, int] = {}
        for i in range(head.num_desc):
            d = U.kvm_stats_desc.from_buffer_copy(raw, i * dsize)
            name = raw[i * dsize + ctypes.sizeof(U.kvm_stats_desc) : (i + 1) * dsize]
            if d.size == 1:
                self.offsets[name.split(b"\0", 1)[0].decode()] = d.offset
        self.span = max(self.offsets.values(), default=0) + 8

    def read(self) -> dict[str, int]:
        """Every single-valued statistic now."""
        data = os.pread(self.fd, self.span, self.data_offset)
        return {n: int.from_bytes(data[o : o + 8], "little") for n, o in self.offsets.items()}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

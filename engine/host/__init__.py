"""The host's own ``/dev/kvm``: the real-KVM backend (replay, compare, measure, calibrate).

Everything goes through KVM's uapi from plain Python (``fcntl.ioctl``, ``ctypes``, ``mmap``
from libc, numpy views): no compiled extension.  x86-64 hosts are supported; the guest code
lives in ``guest`` so that another architecture's writer can be added beside it.
"""

"""What QEMU and Xen do on top of KVM: workloads and traces that drive the guest, the pre-copy
policies (QEMU ``migration/ram.c`` and ``migration.c``, Xen ``xg_sr_save.c``), the simulation
clock with its live edits, and the immutable snapshots the app draws.

Imports ``engine.kvm``, ``engine.stage2``, ``engine.files`` (session formats) and ``engine.util``.
Never imports ``engine.host`` or ``engine.cli``.
"""

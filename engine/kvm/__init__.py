"""What KVM does: memslots and their rules and errnos, the guest write path and faults (the VM),
KVM_GET_DIRTY_LOG / KVM_CLEAR_DIRTY_LOG, the dirty ring, the write-protect strategies with their
plain references, and the cost model (``virt/kvm/kvm_main.c``, ``virt/kvm/dirty_ring.c``,
``arch/arm64/kvm/mmu.c``).

Imports ``engine.stage2`` and ``engine.util``. Knows nothing of migration, QEMU, files or the CLI.
"""

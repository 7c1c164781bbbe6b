"""The ARMv8 stage-2 translation regime: geometry (granule, IPA size, levels, concatenation),
descriptors, the page-table pool and the one walker (``arch/arm64/kvm/hyp/pgtable.c``,
``arch/arm64/include/asm/stage2_pgtable.h``).

Imports only ``engine.util``. Knows nothing of memslots, dirty logging or migration.
"""

"""The DirtyLog Inspector engine: stage-2 tables, dirty tracking and pre-copy migration.

Pure Python and numpy; it never imports Qt, so it runs headless, from the CLI and from pytest.
Layers, each a subpackage that imports only those below it (checked by import-linter, see
``pyproject.toml``)::

    cli                 the dirtylog command, the benchmark            (top)
    sweep    host       what-if sweeps on Dask; the host's real /dev/kvm (siblings)
    migration           QEMU/Xen pre-copy, workloads, the clock
    kvm                 memslots, write path, GET/CLEAR, rings, strategies
    stage2              ARMv8 translation regime, descriptors, tables, the walker
    files               session schema and snapshot formats (imported by migration, cli)
    util                errors, units, array helpers                   (bottom)

``sweep`` (parameter grids run on Dask distributed) and ``host`` (replay and measure on the host's
own KVM) are the places for those parts.
"""

from engine.util.allocator import keep_freed_memory

keep_freed_memory()

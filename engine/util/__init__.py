"""Small helpers every layer shares: errors (with KVM's errnos), units, array helpers, scatter
updates and the allocator set-up.

Kept in one leaf package rather than at the root so the import contracts can say "everything may
import ``engine.util``; ``engine.util`` imports no other part of the engine". It knows nothing of
page tables, KVM, migration or files.
"""

"""Immutable views of a running simulation, handed from the worker to the GUI.

The GUI never reads engine state that the worker is changing: it renders these.  Per-page
layers are copies laid out slot after slot in gfn order (the heat map's row-by-row memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

# Protection codes of the 'prot' layer.
PROT_UNMAPPED = 0
PROT_PAGE_RO = 1  # write-protected page: the next write faults
PROT_PAGE_RW = 2
PROT_BLOCK_RO = 3
PROT_BLOCK_RW = 4
PROT_CLEAN_DBM = 5  # writable-clean (DBM set, S2AP W clear): a write marks it dirty, no fault
PROT_NAMES = (
    "unmapped",
    "write-protected page",
    "writable page",
    "write-protected block",
    "writable block",
    "writable-clean (DBM)",
)

LAYERS = ("heat", "dirty", "prot", "last_sent", "version")


@dataclass(frozen=True)
class SlotView:
    id: int
    name: str
    base_gfn: int
    npages: int
    flags: int
    backing: int
    offset: int  # index of the slot's first page in the layers


@dataclass(frozen=True)
class Snapshot:
    t_ns: int
    tick: int
    round: int
    phase: str  # idle, setup, iterating, stop-and-copy, done
    outcome: str | None
    remaining_bytes: int
    transferred_bytes: int
    dirty_pages_rate: float
    throttle_pct: int
    expected_downtime_ms: float
    page_size: int
    slots: tuple[SlotView, ...]
    rounds: tuple[Mapping[str, object], ...]
    layers: Mapping[str, np.ndarray] = field(default_factory=lambda: MappingProxyType({}))
    messages: tuple[str, ...] = ()  # the most recent messages
    messages_total: int = 0  # messages since the start (to append only the new ones)

    @property
    def total_pages(self) -> int:
        return sum(s.npages for s in self.slots)

"""The stage-2 translation regime KVM picks for a granule and an IPA size.

KVM always concatenates up to 16 tables at the entry level, so it needs one level fewer than a
stage-1 walk of the same size would (``stage2_pgtable_levels(ipa) =
ARM64_HW_PGTABLE_LEVELS(ipa - 4)``, at least 2).  Everything else here (T0SZ, SL0, per-level
shifts, the number of entry-level tables) follows from that choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from engine.util.errors import ConfigError, shown

GRANULES = {4096: 12, 16384: 14, 65536: 16}
MIN_IPA_BITS, MAX_IPA_BITS = 32, 48
# Levels that may hold block leaves (KVM_PGTABLE_MIN_BLOCK_LEVEL is 1 for 4K, 2 otherwise;
# the 4T level-1 block of 64K and the 64G one of 16K are not used).
_BLOCK_LEVELS = {12: (1, 2), 14: (2,), 16: (2,)}
# VTCR_EL2.SL0 encodes the start level against a per-granule base (TGRAN_SL0_BASE).
_SL0_BASE = {12: 2, 14: 3, 16: 3}


def granule_name(size: int) -> str:
    return f"{size >> 10}K"


@dataclass(frozen=True)
class Geometry:
    """A translation regime: granule size and IPA bits, with KVM's derived layout."""

    granule: int
    ipa_bits: int

    def __post_init__(self) -> None:
        if self.granule not in GRANULES:
            raise ConfigError(
                "granule",
                f"{self.granule} bytes is not a stage-2 granule; supported: 4K, 16K and 64K",
            )
        if not MIN_IPA_BITS <= self.ipa_bits <= MAX_IPA_BITS:
            raise ConfigError(
                "ipa_bits",
                f"{self.ipa_bits} is not supported; IPA sizes from {MIN_IPA_BITS} to "
                f"{MAX_IPA_BITS} bits are (52-bit LPA2 is not modelled)",
            )

    @property
    def page_shift(self) -> int:
        return GRANULES[self.granule]

    @property
    def bits_per_level(self) -> int:
        return self.page_shift - 3

    @property
    def entries_per_table(self) -> int:
        return 1 << self.bits_per_level

    @cached_property
    def levels(self) -> int:
        return max(2, (self.ipa_bits - 8) // self.bits_per_level)

    @property
    def start_level(self) -> int:
        return 4 - self.levels

    @property
    def level_range(self) -> range:
        return range(self.start_level, 4)

    def level_shift(self, level: int) -> int:
        """ARM64_HW_PGTABLE_LEVEL_SHIFT: log2 of the bytes one entry at ``level`` maps."""
        return self.bits_per_level * (4 - level) + 3

    @cached_property
    def level_shift_array(self) -> np.ndarray:
        """level_shift indexed by level (0..3), for vectorised lookups."""

        return np.array([self.level_shift(lv) for lv in range(4)], dtype=np.int64)

    def level_size(self, level: int) -> int:
        return 1 << self.level_shift(level)

    @cached_property
    def entry_tables(self) -> int:
        """Concatenated tables at the start level (kvm_pgd_pages)."""
        return ((1 << self.ipa_bits) - 1 >> self.level_shift(self.start_level - 1)) + 1

    @property
    def entry_entries(self) -> int:
        """Entries of the concatenated entry-level tables that the IPA space uses."""
        return 1 << (self.ipa_bits - self.level_shift(self.start_level))

    @property
    def t0sz(self) -> int:
        return 64 - self.ipa_bits

    @property
    def sl0(self) -> int:
        return _SL0_BASE[self.page_shift] - self.start_level

    @property
    def block_levels(self) -> tuple[int, ...]:
        return _BLOCK_LEVELS[self.page_shift]

    @property
    def ipa_limit(self) -> int:
        return 1 << self.ipa_bits

    def block_sizes(self) -> dict[int, int]:
        """Level -> bytes for every level that may hold a block."""
        return {level: self.level_size(level) for level in self.block_levels}

    def leaf_level_for(self, size: int) -> int:
        """The level whose entries map ``size`` bytes (page or an allowed block size)."""
        for level in (3, *self.block_levels):
            if self.level_size(level) == size:
                return level
        allowed = ", ".join(_fmt(self.level_size(lv)) for lv in (3, *self.block_levels))
        raise ConfigError(
            "backing",
            f"{_fmt(size)} is not a leaf size of the {granule_name(self.granule)} granule; "
            f"use {allowed}",
        )

    def describe(self) -> dict[str, object]:
        return {
            "granule": granule_name(self.granule),
            "ipa_bits": self.ipa_bits,
            "levels": self.levels,
            "start_level": self.start_level,
            "entry_tables": self.entry_tables,
            "t0sz": self.t0sz,
            "sl0": self.sl0,
            "entries_per_table": self.entries_per_table,
            "level_shift": {f"L{lv}": self.level_shift(lv) for lv in self.level_range},
            "block_levels": {f"L{lv}": _fmt(self.level_size(lv)) for lv in self.block_levels},
        }


def _fmt(size: int) -> str:
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


def parse_granule(value: object, field: str = "granule") -> int:
    """Accept 4K/16K/64K spelled as KiB strings or bytes."""
    from engine.util.units import parse_size

    size = parse_size(value, field)
    if size not in GRANULES:
        raise ConfigError(
            field, f"{shown(value)} is not a stage-2 granule; use 4KiB, 16KiB or 64KiB"
        )
    return size

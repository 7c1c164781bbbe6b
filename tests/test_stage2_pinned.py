"""Stage-2 geometry and descriptor bits pinned by hand (mutation survivors of issue 19).

Sources (Linux v6.17, torvalds/linux):
- arch/arm64/include/asm/stage2_pgtable.h / kvm_pgtable.h: ``stage2_pgtable_levels(ipa) =
  ARM64_HW_PGTABLE_LEVELS(ipa - 4)`` = ``(ipa - 4 - 4) / (PAGE_SHIFT - 3)``, at least 2
  (KVM concatenates up to 16 entry-level tables); ``kvm_pgd_pages`` = entry tables;
  ``ARM64_HW_PGTABLE_LEVEL_SHIFT(n) = (PAGE_SHIFT - 3) * (4 - n) + 3``.
- VTCR_EL2.SL0 (Arm ARM D8.2): 4K: 0 = start at L2, 1 = L1, 2 = L0; 16K and 64K: 0 = L3,
  1 = L2, 2 = L1.
- arch/arm64/kvm/hyp/pgtable.c: a descriptor is valid [0], type [1], MemAttr [5:2], S2AP
  [7:6], SH [9:8], AF [10], OA [47:PAGE_SHIFT], DBM [51], Contiguous [52], XN [54:53], SW
  [58:55]; a leaf KVM maps on a data fault is Normal WB (MemAttr 0b1111), inner shareable
  (SH 0b11), AF set and XN[1] set (bit 54).
Every expected integer below is worked out from those bit positions, not from the engine.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry, parse_granule
from engine.util.errors import ConfigError

# -- levels at each granule's boundaries: one IPA size below, at and above a level change --------


@pytest.mark.parametrize(
    "granule, ipa, levels, start, tables, sl0",
    [
        # 4K: (ipa - 8) // 9; 34 bits = 2 levels with 2^34 / 2^30 = 16 concatenated tables
        (4096, 33, 2, 2, 8, 0),
        (4096, 34, 2, 2, 16, 0),
        (4096, 35, 3, 1, 1, 1),
        (4096, 43, 3, 1, 16, 1),
        (4096, 44, 4, 0, 1, 2),
        (4096, 45, 4, 0, 1, 2),
        # 16K: (ipa - 8) // 11; 40 bits = 2 levels, 2^40 / 2^36 = 16 tables
        (16384, 39, 2, 2, 8, 1),
        (16384, 40, 2, 2, 16, 1),
        (16384, 41, 3, 1, 1, 2),
        # 64K: (ipa - 8) // 13; 46 bits = 2 levels, 2^46 / 2^42 = 16 tables
        (65536, 45, 2, 2, 8, 1),
        (65536, 46, 2, 2, 16, 1),
        (65536, 47, 3, 1, 1, 2),
    ],
)
def test_level_count_boundaries(granule, ipa, levels, start, tables, sl0):
    g = Geometry(granule, ipa)
    assert (g.levels, g.start_level, g.entry_tables, g.sl0, g.t0sz) == (
        levels,
        start,
        tables,
        sl0,
        64 - ipa,
    )
    assert list(g.level_range) == list(range(start, 4))
    assert g.entry_entries == 1 << (ipa - g.level_shift(start))
    assert g.ipa_limit == 1 << ipa


@pytest.mark.parametrize(
    "granule, shifts, entries",
    [
        (4096, [39, 30, 21, 12], 512),
        (16384, [47, 36, 25, 14], 2048),
        (65536, [55, 42, 29, 16], 8192),
    ],
)
def test_level_shifts_and_table_entries(granule, shifts, entries):
    g = Geometry(granule, 48)
    assert [g.level_shift(lv) for lv in range(4)] == shifts
    assert g.level_shift_array.tolist() == shifts and g.level_shift_array.dtype == np.int64
    assert [g.level_size(lv) for lv in range(4)] == [1 << s for s in shifts]
    assert g.entries_per_table == entries and g.bits_per_level == entries.bit_length() - 1


def test_describe_a_4k_40_bit_regime():
    assert Geometry(4096, 40).describe() == {
        "granule": "4K",
        "ipa_bits": 40,
        "levels": 3,
        "start_level": 1,
        "entry_tables": 2,
        "t0sz": 24,
        "sl0": 1,
        "entries_per_table": 512,
        "level_shift": {"L1": 30, "L2": 21, "L3": 12},
        "block_levels": {"L1": "1G", "L2": "2M"},
    }
    assert Geometry(65536, 42).describe()["block_levels"] == {"L2": "512M"}


@pytest.mark.parametrize(
    "granule, size, level",
    [
        (4096, 4096, 3),
        (4096, 2 << 20, 2),
        (4096, 1 << 30, 1),
        (16384, 16384, 3),
        (16384, 32 << 20, 2),
        (65536, 65536, 3),
        (65536, 512 << 20, 2),
    ],
)
def test_leaf_level_for_each_backing(granule, size, level):
    assert Geometry(granule, 48).leaf_level_for(size) == level


@pytest.mark.parametrize(
    "granule, size, rule",
    [
        (4096, 8192, "8K is not a leaf size of the 4K granule; use 4K, 1G, 2M"),
        (16384, 1 << 30, "1G is not a leaf size of the 16K granule; use 16K, 32M"),
        (65536, 3000, "3000 is not a leaf size of the 64K granule; use 64K, 512M"),
        (4096, 1536 << 10, "1536K is not a leaf size of the 4K granule; use 4K, 1G, 2M"),
        (4096, 1 << 40, "1T is not a leaf size of the 4K granule; use 4K, 1G, 2M"),
        (4096, 3 << 40, "3T is not a leaf size of the 4K granule; use 4K, 1G, 2M"),
        (4096, 0, "0 is not a leaf size of the 4K granule; use 4K, 1G, 2M"),
    ],
)
def test_other_backings_are_refused_naming_the_sizes(granule, size, rule):
    with pytest.raises(ConfigError) as err:
        Geometry(granule, 48).leaf_level_for(size)
    assert (err.value.field, err.value.rule) == ("backing", rule)


def test_granule_refusals():
    with pytest.raises(ConfigError) as err:
        Geometry(8192, 40)
    assert (err.value.field, err.value.rule) == (
        "granule",
        "8192 bytes is not a stage-2 granule; supported: 4K, 16K and 64K",
    )
    with pytest.raises(ConfigError) as err:
        Geometry(4096, 49)
    assert (err.value.field, err.value.rule) == (
        "ipa_bits",
        "49 is not supported; IPA sizes from 32 to 48 bits are (52-bit LPA2 is not modelled)",
    )
    assert [parse_granule(v) for v in ("4KiB", "16K", 65536)] == [4096, 16384, 65536]
    with pytest.raises(ConfigError) as err:
        parse_granule("8K")
    assert (err.value.field, err.value.rule) == (
        "granule",
        '"8K" is not a stage-2 granule; use 4KiB, 16KiB or 64KiB',
    )
    with pytest.raises(ConfigError) as err:
        parse_granule("big", "geometry.granule")  # not even a size: the field is still named
    assert err.value.field == "geometry.granule"


# -- descriptors: exact integers ----------------------------------------------------------------

# 1 valid | 2 type | 0x3c MemAttr 0b1111 | 0x40 S2AP read | 0x80 S2AP write | 0x300 SH inner |
# 0x400 AF | bit 54 XN[1]
PAGE_RW = 0x0040_0000_8004_27FF  # at OA 0x8004_2000
PAGE_RO = 0x0040_0000_8004_277F
BLOCK_RW = 0x0040_0000_4000_07FD  # L2 2M block at 0x4000_0000: type clear
BLOCK_RO_DBM = 0x0048_0000_4000_077D  # + DBM (bit 51), no S2AP write


def test_leaf_and_table_encodings():
    assert D.make_leaf(0x8004_2000, 3, 12) == PAGE_RW
    assert D.make_leaf(0x8004_2000, 3, 12, writable=False) == PAGE_RO
    assert D.make_leaf(0x4000_0000, 2, 12) == BLOCK_RW
    assert D.make_leaf(0x4000_0000, 2, 12, writable=False, extra=D.DBM) == BLOCK_RO_DBM
    assert D.make_leaf(0x1_2345_0000, 3, 16) == 0x0040_0001_2345_07FF  # 64K page
    # bits outside OA [47:PAGE_SHIFT] are dropped from the address
    assert D.make_leaf((1 << 48) | 0x8004_2FFF, 3, 12) == PAGE_RW
    assert D.make_table(0x8004_2FFF, 12) == 0x8004_2003
    assert D.make_table(0x1_2345_FFFF, 16) == 0x1_2345_0003
    arr = D.make_leaf(np.array([0x8004_2000, 0x8004_3000], np.int64), 3, 12)
    assert arr.dtype == np.uint64 and arr.tolist() == [PAGE_RW, PAGE_RW + 0x1000]
    tables = D.make_table(np.array([0x8004_2FFF], np.int64), 12)
    assert tables.dtype == np.uint64 and tables.tolist() == [0x8004_2003]


@pytest.mark.parametrize(
    "shift, mask", [(12, 0xFFFF_FFFF_F000), (14, 0xFFFF_FFFF_C000), (16, 0xFFFF_FFFF_0000)]
)
def test_output_address_mask(shift, mask):
    assert D.oa_mask(shift) == mask
    d = np.array([PAGE_RW | (0xF << 55) | D.CONT], np.uint64)
    assert D.output_address(d, shift).tolist() == [0x8004_2000 & mask]


@pytest.mark.parametrize(
    "low_bits, level, valid, table, leaf, kind",
    [
        (0b11, 0, True, True, False, "table"),
        (0b11, 2, True, True, False, "table"),
        (0b11, 3, True, False, True, "page"),
        (0b01, 1, True, False, True, "block"),
        (0b01, 2, True, False, True, "block"),
        (0b01, 3, True, False, False, "reserved"),
        (0b10, 2, False, False, False, "invalid"),
        (0b10, 3, False, False, False, "invalid"),
        (0b00, 3, False, False, False, "invalid"),
    ],
)
def test_descriptor_types_by_level(low_bits, level, valid, table, leaf, kind):
    d = np.array([0x8004_2000 | low_bits], np.uint64)
    assert D.is_valid(d).tolist() == [valid]
    assert D.is_table(d, level).tolist() == [table] and D.is_table(d, level).dtype == bool
    assert D.is_leaf(d, level).tolist() == [leaf]
    assert D.leaf_kind(int(d[0]), level) == kind


def test_writable_is_s2ap_bit_7():
    d = np.array([PAGE_RW, PAGE_RO, 0x80, 0x40], np.uint64)
    assert D.is_writable(d).tolist() == [True, False, True, False]


def test_update_attrs_touches_valid_entries_only():
    """stage2_attr_walker: ``(pte & ~clr) | set`` on valid leaves; invalid ones are skipped."""
    d = np.array([PAGE_RW, PAGE_RW & ~1, BLOCK_RO_DBM], np.uint64)
    out = D.update_attrs(d, D.DBM, D.S2AP_W)
    assert out.tolist() == [PAGE_RW - 0x80 + (1 << 51), PAGE_RW & ~1, BLOCK_RO_DBM]


@pytest.mark.parametrize(
    "value, text",
    [
        (0, "0x0"),
        (1, "0x1"),
        (0xFFFF, "0xffff"),
        (0x1_0000, "0x1_0000"),
        (0x1_2345, "0x1_2345"),
        (0x8004_2000, "0x8004_2000"),
        (0xFF_FFFF_F000, "0xff_ffff_f000"),
    ],
)
def test_hex_grouped(value, text):
    assert D.hex_grouped(value) == text


@pytest.mark.parametrize(
    "d, level, text",
    [
        (PAGE_RW, 3, "L3 page OA=0x8004_2000 S2AP=RW AF SH=IS XN=2 DBM=0"),
        (PAGE_RO, 3, "L3 page OA=0x8004_2000 S2AP=RO AF SH=IS XN=2 DBM=0"),
        (0x8004_2000 | 0b11 | 0x80, 3, "L3 page OA=0x8004_2000 S2AP=WO SH=NS XN=0 DBM=0"),
        (0x8004_2000 | 0b11 | 0x100, 3, "L3 page OA=0x8004_2000 S2AP=NONE SH=RES XN=0 DBM=0"),
        (
            0x8004_2000 | 0b11 | 0x200 | (1 << 53),
            3,
            "L3 page OA=0x8004_2000 S2AP=NONE SH=OS XN=1 DBM=0",
        ),
        (BLOCK_RO_DBM, 2, "L2 block OA=0x4000_0000 S2AP=RO AF SH=IS XN=2 DBM=1"),
        (
            PAGE_RW | D.CONT | (0xA << 55),
            3,
            "L3 page OA=0x8004_2000 S2AP=RW AF SH=IS XN=2 DBM=0 CONT SW=0xa",
        ),
        (0x8004_2003, 1, "L1 table PA=0x8004_2000"),
        (0x8004_2001, 3, "L3 reserved OA=0x8004_2000 S2AP=NONE SH=NS XN=0 DBM=0"),
        (0x8004_2002, 2, "L2 invalid"),
    ],
)
def test_decode(d, level, text):
    assert D.decode(d, level, 12) == text


def test_fields():
    assert D.fields(BLOCK_RO_DBM | D.CONT | (0x5 << 55), 2, 12) == {
        "kind": "block",
        "oa": 0x4000_0000,
        "memattr": 0xF,
        "s2ap": "RO",
        "sh": "IS",
        "af": True,
        "dbm": True,
        "cont": True,
        "xn": 2,
        "sw": 5,
    }
    assert D.fields(0x8004_2003, 3, 12) == {
        "kind": "page",
        "oa": 0x8004_2000,
        "memattr": 0,
        "s2ap": "NONE",
        "sh": "NS",
        "af": False,
        "dbm": False,
        "cont": False,
        "xn": 0,
        "sw": 0,
    }

"""Stage-2 descriptors: bit positions, vectorised encode/decode and a human decoding.

Bits follow the Arm ARM and ``arch/arm64/kvm/hyp/pgtable.c``: valid [0], type [1] (table at
L0-L2, page at L3; 0 = block), MemAttr [5:2], S2AP [7:6] (bit 6 read, bit 7 write), SH [9:8],
AF [10], output address [47:granule shift], DBM [51], Contiguous [52], XN [54:53] and software
bits [58:55].  Attribute changes are set/clear masks, as ``stage2_update_leaf_attrs`` does.
"""

from __future__ import annotations

import numpy as np

U64 = np.uint64

VALID = 1 << 0
TYPE = 1 << 1  # table (L0-L2) or page (L3); clear = block
MEMATTR_SHIFT, MEMATTR_MASK = 2, 0xF << 2
S2AP_R = 1 << 6
S2AP_W = 1 << 7
SH_SHIFT, SH_MASK = 8, 3 << 8
SH_IS = 3 << 8
AF = 1 << 10
DBM = 1 << 51
CONT = 1 << 52
XN_SHIFT, XN_MASK = 53, 3 << 53
SW_SHIFT, SW_MASK = 55, 0xF << 55
OA_TOP = 48  # KVM_PTE_ADDR_MASK = GENMASK(47, PAGE_SHIFT)

S2_XN = 1 << 54  # KVM_PTE_LEAF_ATTR_HI_S2_XN: XN[1:0] = 0b10, no execution at EL1 or EL0

MT_S2_NORMAL = 0xF << MEMATTR_SHIFT  # Normal, inner/outer write-back cacheable (no S2FWB)
LEAF_RW = S2AP_R | S2AP_W
# What KVM puts in a leaf it maps on a data fault besides the address and S2AP
# (arch/arm64/kvm/hyp/pgtable.c stage2_set_prot_attr, v6.17): Normal memory, inner
# shareable, AF set, and XN because user_mem_abort adds KVM_PGTABLE_PROT_X only on an
# instruction fault (or with CTR_EL0.DIC, which the model does not assume).
LEAF_DEFAULT = MT_S2_NORMAL | SH_IS | AF | S2_XN


def oa_mask(page_shift: int) -> int:
    return ((1 << OA_TOP) - 1) & ~((1 << page_shift) - 1)


def make_table(pa: int | np.ndarray, page_shift: int) -> int | np.ndarray:
    """Table descriptor pointing at the table page at ``pa``."""
    return _or(_and(pa, oa_mask(page_shift)), VALID | TYPE)


def make_leaf(
    oa: int | np.ndarray,
    level: int,
    page_shift: int,
    writable: bool = True,
    extra: int = 0,
) -> int | np.ndarray:
    """Page (L3) or block (L1/L2) descriptor with KVM's default attributes."""
    bits = VALID | LEAF_DEFAULT | S2AP_R | (S2AP_W if writable else 0) | extra
    if level == 3:
        bits |= TYPE
    return _or(_and(oa, oa_mask(page_shift)), bits)


def _and(a: int | np.ndarray, mask: int) -> int | np.ndarray:
    if isinstance(a, np.ndarray):
        return a.astype(U64, copy=False) & U64(mask)
    return int(a) & mask


def _or(a: int | np.ndarray, bits: int) -> int | np.ndarray:
    if isinstance(a, np.ndarray):
        return a | U64(bits)
    return a | bits


# Vectorised predicates over uint64 arrays (and plain ints).


def is_valid(d: np.ndarray) -> np.ndarray:
    return (d & U64(VALID)) != 0


def is_table(d: np.ndarray, level: int) -> np.ndarray:
    """Valid with the type bit set, at a level above the last: points to a next-level table."""
    if level >= 3:
        return np.zeros(np.shape(d), dtype=bool)
    return (d & U64(VALID | TYPE)) == U64(VALID | TYPE)


def is_leaf(d: np.ndarray, level: int) -> np.ndarray:
    """Valid page (L3) or valid block (type clear, above L3)."""
    if level == 3:
        return (d & U64(VALID | TYPE)) == U64(VALID | TYPE)
    return (d & U64(VALID | TYPE)) == U64(VALID)


def is_writable(d: np.ndarray) -> np.ndarray:
    return (d & U64(S2AP_W)) != 0


def output_address(d: np.ndarray, page_shift: int) -> np.ndarray:
    return d & U64(oa_mask(page_shift))


def update_attrs(d: np.ndarray, set_bits: int, clr_bits: int) -> np.ndarray:
    """``(d & ~clr) | set`` on valid entries only, like stage2_attr_walker."""
    new = (d & ~U64(clr_bits)) | U64(set_bits)
    return np.where(is_valid(d), new, d)


def leaf_kind(d: int, level: int) -> str:
    """``table``, ``block``, ``page`` or ``invalid`` for one descriptor at ``level``."""
    if not d & VALID:
        return "invalid"
    if level == 3:
        return "page" if d & TYPE else "reserved"
    return "table" if d & TYPE else "block"


def hex_grouped(value: int) -> str:
    """``0x8004_2000``: hex in groups of four digits, as the kernel's docs print addresses."""
    digits = f"{value:x}"
    pad = (-len(digits)) % 4
    digits = "0" * pad + digits
    groups = [digits[i : i + 4] for i in range(0, len(digits), 4)]
    text = "_".join(groups).lstrip("0_") or "0"
    return "0x" + text


_S2AP = {0: "NONE", 1: "RO", 2: "WO", 3: "RW"}
_SH = {0: "NS", 1: "RES", 2: "OS", 3: "IS"}


def decode(d: int, level: int, page_shift: int) -> str:
    """One line, e.g. ``L3 page OA=0x8004_2000 S2AP=RW AF SH=IS XN=2 DBM=0``.

    XN is the two-bit field [54:53]: KVM sets only bit 54 (value 2, execute-never)."""
    d = int(d)
    kind = leaf_kind(d, level)
    if kind == "invalid":
        return f"L{level} invalid"
    oa = hex_grouped(d & oa_mask(page_shift))
    if kind == "table":
        return f"L{level} table PA={oa}"
    parts = [f"L{level} {kind} OA={oa}", f"S2AP={_S2AP[(d >> 6) & 3]}"]
    if d & AF:
        parts.append("AF")
    parts.append(f"SH={_SH[(d >> SH_SHIFT) & 3]}")
    parts.append(f"XN={(d >> XN_SHIFT) & 3}")
    parts.append(f"DBM={(d >> 51) & 1}")
    if d & CONT:
        parts.append("CONT")
    if d & SW_MASK:
        parts.append(f"SW={(d >> SW_SHIFT) & 0xF:#x}")
    return " ".join(parts)


def fields(d: int, level: int, page_shift: int) -> dict[str, object]:
    """The decoded fields as a dict (for JSON and the tree view's columns)."""
    d = int(d)
    return {
        "kind": leaf_kind(d, level),
        "oa": d & oa_mask(page_shift),
        "memattr": (d & MEMATTR_MASK) >> MEMATTR_SHIFT,
        "s2ap": _S2AP[(d >> 6) & 3],
        "sh": _SH[(d >> SH_SHIFT) & 3],
        "af": bool(d & AF),
        "dbm": bool(d & DBM),
        "cont": bool(d & CONT),
        "xn": (d >> XN_SHIFT) & 3,
        "sw": (d >> SW_SHIFT) & 0xF,
    }

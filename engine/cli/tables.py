"""``dirtylog tables``: KVM's translation regime for a granule and IPA size, and a table census."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from engine.util.errors import ConfigError, shown
from engine.util.memory import check_fits

if TYPE_CHECKING:
    from engine.stage2.geometry import Geometry


def _map_arg(text: str) -> tuple[int, int]:
    from engine.util.units import parse_size

    base, sep, size = text.partition(":")
    if not sep:
        raise ConfigError("--map", f"expected BASE:SIZE, e.g. 0x40000000:1GiB, got {shown(text)}")
    return parse_size(base, "--map base"), parse_size(size, "--map size")


def cmd_tables(args: argparse.Namespace) -> int:
    """Build the tables for some mapped ranges and print the geometry and a summary."""
    from engine.stage2.geometry import Geometry, parse_granule
    from engine.stage2.pgtable import PageTable
    from engine.util.units import parse_size

    try:
        geom = Geometry(parse_granule(args.granule, "--granule"), args.ipa_bits)
    except ConfigError as exc:
        raise ConfigError(
            exc.field if exc.field == "--granule" else "--ipa-bits", exc.rule
        ) from None
    backing = parse_size(args.backing, "--backing") if args.backing else geom.granule
    try:
        geom.leaf_level_for(backing)
    except ConfigError as exc:
        raise ConfigError("--backing", exc.rule) from None
    maps = [(text, *_map_arg(text)) for text in args.map or []]
    for text, base, size in maps:
        _check_map(geom, base, size, text)
    need = sum(table_bytes(geom, size, backing) for _, _, size in maps)
    check_fits(TABLES_BASE_BYTES + need, "--map", "mapping these ranges")
    pgt = PageTable(geom)
    for _, base, size in maps:
        pgt.map_range(base, size, backing)
    info = geom.describe()
    info.update(pgt.summary())
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(
        f"granule {info['granule']}, IPA {geom.ipa_bits} bits: {geom.levels} levels from "
        f"L{geom.start_level}, {geom.entry_tables} concatenated entry table(s), "
        f"T0SZ={geom.t0sz} SL0={geom.sl0}, {geom.entries_per_table} entries per table"
    )
    for level in geom.level_range:
        tables = info["tables_per_level"].get(f"L{level}", 0)  # type: ignore[union-attr]
        kind = "page" if level == 3 else "block"
        leaves = info["leaves"].get(f"L{level}_{kind}", 0)  # type: ignore[union-attr]
        print(f"  L{level}: {tables:>9,} tables  {leaves:>12,} {kind} leaves")
    return 0


TABLES_BASE_BYTES = 128 << 20  # the interpreter and numpy


def table_bytes(geom: Geometry, size: int, backing: int) -> int:
    """Upper bound on the bytes of tables that map ``size`` bytes with ``backing`` leaves:
    at each level, one table per ``E`` entries of the level below (plus one for each end),
    each ``E`` 8-byte descriptors and its recorded IPA, twice (the pool grows by doubling)."""
    E = geom.entries_per_table
    entries, total = -(-size // backing), 0
    for _ in geom.level_range:
        tables = -(-entries // E) + 1
        total += tables * (E * 8 + 16)
        entries = tables
    return 2 * total


def _check_map(geom: Geometry, base: int, size: int, text: str) -> None:
    given = shown(text)
    if base % geom.granule or size % geom.granule:
        raise ConfigError(
            "--map", f"{given}: base and size must be multiples of the {geom.granule}-byte page"
        )
    if size == 0:
        raise ConfigError("--map", f"{given}: the size must not be zero")
    if base + size > geom.ipa_limit:
        raise ConfigError(
            "--map", f"{given}: ends at {base + size:#x}, beyond the {geom.ipa_bits}-bit IPA space"
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tables",
        help="build stage-2 tables for mapped ranges and summarise them",
        description="Compute KVM's translation regime for a granule and IPA size (levels, start "
        "level, concatenated entry tables, VTCR_EL2 T0SZ/SL0), map ranges with blocks where "
        "the backing allows, and count tables per level and leaves by kind.",
    )
    p.add_argument("--granule", default="4K", help="4K, 16K or 64K (default 4K)")
    p.add_argument("--ipa-bits", type=int, default=40, help="IPA size, 32..48 (default 40)")
    p.add_argument(
        "--map",
        action="append",
        metavar="BASE:SIZE",
        help="map a range, e.g. 0x40000000:1GiB (sizes: decimal, hex, KiB/MiB/GiB/TiB); repeatable",
    )
    p.add_argument(
        "--backing",
        default=None,
        help="backing page size: the page size, or a block size (2M/1G with 4K, 32M with 16K, "
        "512M with 64K); blocks are used where the range is aligned "
        "(default: the granule's page size)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_tables)

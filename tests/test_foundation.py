"""Geometry, descriptors, the table pool, the walker and ``dirtylog tables``."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.cli.main import main as cli_main
from engine.stage2 import descriptor as D
from engine.stage2.geometry import Geometry
from engine.stage2.pgtable import HOST_PA_OFFSET, POOL_PA_BASE, PageTable
from engine.stage2.walk import (
    Visit,
    WalkCounters,
    set_clear_visitor,
    unmap_range,
    walk,
    walk_bulk,
)
from engine.util.errors import ConfigError
from engine.util.units import parse_bandwidth, parse_rate, parse_size

ROOT = Path(__file__).resolve().parent.parent

REGIMES = [
    # granule, ipa bits, levels, start level, entry tables, T0SZ, SL0
    (4096, 40, 3, 1, 2, 24, 1),
    (4096, 48, 4, 0, 1, 16, 2),
    (4096, 32, 2, 2, 4, 32, 0),
    (16384, 40, 2, 2, 16, 24, 1),
    (16384, 48, 3, 1, 2, 16, 2),
    (65536, 40, 2, 2, 1, 24, 1),
    (65536, 48, 3, 1, 1, 16, 2),
]


@pytest.mark.parametrize("granule, ipa, levels, start, tables, t0sz, sl0", REGIMES)
def test_kvm_regimes(granule, ipa, levels, start, tables, t0sz, sl0):
    g = Geometry(granule, ipa)
    assert (g.levels, g.start_level, g.entry_tables, g.t0sz, g.sl0) == (
        levels,
        start,
        tables,
        t0sz,
        sl0,
    )
    # the concatenated entry tables cover exactly the IPA space
    assert g.entry_entries <= tables * g.entries_per_table
    assert g.entry_entries * g.level_size(start) == 1 << ipa


def test_block_levels_and_sizes():
    assert Geometry(4096, 40).block_sizes() == {1: 1 << 30, 2: 2 << 20}
    assert Geometry(16384, 40).block_sizes() == {2: 32 << 20}
    assert Geometry(65536, 48).block_sizes() == {2: 512 << 20}


@pytest.mark.parametrize(
    "granule, ipa, words",
    [(4096, 52, "52-bit LPA2"), (4096, 31, "32 to 48"), (8192, 40, "4K, 16K and 64K")],
)
def test_unsupported_regimes_are_refused(granule, ipa, words):
    with pytest.raises(ConfigError, match=words):
        Geometry(granule, ipa)


# -- descriptors -----------------------------------------------------------------------------


def test_bit_positions():
    assert (D.VALID, D.TYPE, D.S2AP_R, D.S2AP_W, D.AF) == (1, 2, 1 << 6, 1 << 7, 1 << 10)
    assert (D.DBM, D.CONT, D.XN_MASK, D.SW_MASK) == (1 << 51, 1 << 52, 3 << 53, 0xF << 55)
    assert D.SH_MASK == 3 << 8 and D.MEMATTR_MASK == 0xF << 2


def test_human_decoding():
    d = D.make_leaf(0x80042000, 3, 12)
    assert D.decode(d, 3, 12) == "L3 page OA=0x8004_2000 S2AP=RW AF SH=IS XN=2 DBM=0"
    ro_block = D.make_leaf(0x40000000, 2, 12, writable=False, extra=D.DBM)
    assert D.decode(ro_block, 2, 12) == "L2 block OA=0x4000_0000 S2AP=RO AF SH=IS XN=2 DBM=1"
    assert D.decode(0, 1, 12) == "L1 invalid"


@given(
    st.integers(0, (1 << 36) - 1),
    st.sampled_from([12, 14, 16]),
    st.sampled_from([1, 2, 3]),
    st.booleans(),
)
def test_leaf_round_trip(frame, shift, level, writable):
    oa = (frame << shift) & D.oa_mask(shift)
    d = np.array([D.make_leaf(oa, level, shift, writable)], dtype=np.uint64)
    assert D.is_valid(d)[0] and D.is_leaf(d, level)[0]
    assert not D.is_table(d, level)[0]
    assert int(D.output_address(d, shift)[0]) == oa
    assert bool(D.is_writable(d)[0]) == writable
    f = D.fields(int(d[0]), level, shift)
    assert (
        f["oa"] == oa and f["af"] and f["sh"] == "IS" and f["s2ap"] == ("RW" if writable else "RO")
    )


@given(
    st.lists(st.integers(0, (1 << 64) - 1), max_size=50), st.integers(0, 255), st.integers(0, 255)
)
def test_set_clear_masks_touch_only_valid_entries(values, set_bits, clr_bits):
    d = np.array(values, dtype=np.uint64)
    out = D.update_attrs(d, set_bits << 2, clr_bits << 2)
    for old, new in zip(values, out.tolist(), strict=True):
        expected = ((old & ~(clr_bits << 2)) | (set_bits << 2)) if old & 1 else old
        assert new == expected


# -- the table pool against a per-page reference ------------------------------------------------

G = Geometry(4096, 40)
BASE = 0x40000000


def reference_lookup(ref: dict[int, tuple[int, bool]], gfn: int):
    return ref.get(gfn)


ops = st.lists(
    st.tuples(
        st.sampled_from(["map", "unmap", "split"]),
        st.integers(0, 15),  # 2 MiB chunk index within a 32 MiB window
        st.integers(1, 3),  # chunks
        st.sampled_from([4096, 2 << 20]),
        st.integers(0, 511),  # page offset for unaligned maps/unmaps
    ),
    max_size=12,
)


@given(ops)
def test_map_unmap_split_against_a_reference(operations):
    pgt = PageTable(G)
    ref: dict[int, tuple[int, bool]] = {}  # gfn -> (leaf level, writable)
    for op, chunk, n, backing, off in operations:
        start = BASE + chunk * (2 << 20) + (off * 4096 if backing == 4096 else 0)
        size = n * (2 << 20) - (off * 4096 if backing == 4096 else 0)
        first, pages = start >> 12, size >> 12
        if op == "map":
            writable = bool(chunk % 2)
            pgt.map_range(start, size, backing, writable=writable)
            new = {}
            for g in range(first, first + pages):
                r = g >> 9 << 9
                blockable = backing > 4096 and r >= first and r + 512 <= first + pages
                new[g] = (2 if blockable else 3, writable)
            for r in {g >> 9 for g, (lv, _) in new.items() if lv == 3}:
                # an old block under a partial new mapping is split; its other pages stay
                for g in range(r << 9, (r << 9) + 512):
                    if g in ref and ref[g][0] == 2:
                        ref[g] = (3, ref[g][1])
            ref.update(new)
        elif op == "unmap":
            unmap_range(pgt, start, size)
            for r in {first >> 9, (first + pages - 1) >> 9}:  # edge blocks are split first
                for g in range(r << 9, (r << 9) + 512):
                    if g in ref and ref[g][0] == 2:
                        ref[g] = (3, ref[g][1])
            for g in range(first, first + pages):
                ref.pop(g, None)
        else:  # split every block in the window
            level, pos, desc = pgt.lookup(np.arange(first, first + pages) << 12)
            blocks = np.unique(pos[(level == 2) & D.is_valid(desc)])
            pgt.split_blocks(blocks, 2)
            for r in {g >> 9 for g in range(first, first + pages) if ref.get(g, (0,))[0] == 2}:
                for g in range(r << 9, (r << 9) + 512):  # the whole block becomes pages
                    ref[g] = (3, ref[g][1])
    gfns = np.arange(BASE >> 12, (BASE >> 12) + 24 * 512)
    level, _, desc = pgt.lookup(gfns << 12)
    for g, lv, d in zip(gfns.tolist(), level.tolist(), desc.tolist(), strict=True):
        want = ref.get(g)
        if want is None:
            assert d == 0, hex(g)  # an invalid entry is written as 0 (wrprotect relies on it)
        else:
            assert (lv, bool(d & D.S2AP_W)) == want, hex(g)
            size = G.level_size(lv)
            assert d & D.oa_mask(12) == ((g << 12) // size * size + HOST_PA_OFFSET)
    # a last-level table holds pages and zeros only: S2AP W set means a valid writable page
    last = pgt.pool[pgt.live_tables(3)]
    page = D.VALID | D.TYPE
    assert np.all((last == 0) | ((last & np.uint64(page)) == np.uint64(page)))
    # tables exist only where something is mapped
    l3 = {g >> 9 for g, (lv, _) in ref.items() if lv == 3}
    assert pgt.summary()["tables_per_level"].get("L3", 0) == len(l3)
    l2 = {g >> 18 for g in ref}
    assert pgt.summary()["tables_per_level"].get("L2", 0) == len(l2)


def test_split_keeps_permissions_and_counts_a_broadcast_tlbi():
    pgt = PageTable(G)
    pgt.map_range(BASE, 2 << 20, 2 << 20, writable=False)
    level, pos, desc = pgt.lookup(np.array([BASE]))
    assert level[0] == 2
    pgt.split_blocks(pos, 2)
    level, pos, desc = pgt.lookup(BASE + np.arange(512) * 4096)
    assert (level == 3).all() and not D.is_writable(desc).any()
    assert (D.output_address(desc, 12) == BASE + HOST_PA_OFFSET + np.arange(512) * 4096).all()
    assert pgt.tlbi["ipa_is"] == 1


# -- the walker ----------------------------------------------------------------------------------


def small_tree():
    pgt = PageTable(G)
    pgt.map_range(BASE, 3 * 4096, 4096)  # 3 pages in an L3 table
    pgt.map_range(BASE + (2 << 20), 2 << 20, 2 << 20)  # one 2 MiB block
    return pgt


def test_visit_order_with_table_pre_and_post():
    pgt = small_tree()
    seen = []

    def visitor(ctx):
        seen.append((ctx.visit.name, ctx.level, ctx.addr))
        return None

    # start inside the L3 table, end inside the block
    c = walk(
        pgt,
        BASE + 4096,
        BASE + (2 << 20) + 8192,
        visitor,
        Visit.LEAF | Visit.TABLE_PRE | Visit.TABLE_POST,
    )
    assert seen[:3] == [
        ("TABLE_PRE", 1, BASE + 4096),
        ("TABLE_PRE", 2, BASE + 4096),
        ("LEAF", 3, BASE + 4096),
    ]
    leaves3 = [s for s in seen if s[1] == 3]
    assert len(leaves3) == 511  # entries 1..511 of the L3 table (invalid ones are leaves too)
    assert ("TABLE_POST", 2, BASE + (2 << 20)) in seen
    assert ("LEAF", 2, BASE + (2 << 20)) in seen
    assert seen[-1] == ("TABLE_POST", 1, BASE + (4 << 20))
    assert dict(c.reads) == {1: 1, 2: 2, 3: 511}
    assert c.tables_visited == 3


def test_counters_and_bulk_form_agree():
    a, b = small_tree(), small_tree()
    per_entry, bulk = set_clear_visitor(0, D.S2AP_W)
    ca = walk(a, BASE, BASE + (4 << 20), per_entry)
    cb = walk_bulk(b, BASE, BASE + (4 << 20), bulk)
    assert np.array_equal(a.pool, b.pool)
    assert ca.as_dict() == cb.as_dict()
    assert dict(ca.writes) == {3: 3, 2: 1}


def test_set_and_clear_over_whole_tables_changes_every_leaf_once():
    """The whole-table path of the bulk walker (enabling DBM logging on a slot: set DBM,
    clear S2AP W, as stage2_attr_walker does entry by entry): 4 MiB of 4 KiB pages fill two
    L3 tables (1024 leaves), then a 2 MiB block.  Every leaf gets DBM and loses W, the table
    descriptors are untouched, the pages outside the range keep W; each leaf is written
    once (writes L3 1024, L2 1).  Walking again changes nothing (no write counted)."""
    pgt = PageTable(G)
    pgt.map_range(BASE, 4 << 20, 4096)
    pgt.map_range(BASE + (4 << 20), 2 << 20, 2 << 20)
    pgt.map_range(BASE + (6 << 20), 4096, 4096)  # outside the walk
    tables_before = pgt.lookup(np.array([BASE]))[1].copy()
    _, bulk = set_clear_visitor(D.DBM, D.S2AP_W)
    end = BASE + (6 << 20)
    c = walk_bulk(pgt, BASE, end, bulk)
    assert {k: v for k, v in c.writes.items() if v} == {3: 1024, 2: 1}
    gpa = BASE + np.arange(1536 + 1) * 4096
    level, _, desc = pgt.lookup(gpa)
    assert level.tolist() == [3] * 1024 + [2] * 512 + [3]
    bits = desc & np.uint64(D.DBM | D.S2AP_W | D.VALID)
    assert set(bits[:1536].tolist()) == {D.DBM | D.VALID}
    assert int(bits[1536]) == D.S2AP_W | D.VALID
    assert np.array_equal(pgt.lookup(np.array([BASE]))[1], tables_before)
    again = walk_bulk(pgt, BASE, end, bulk)
    assert not any(again.writes.values())


def test_clearing_valid_over_whole_tables_leaves_table_descriptors():
    """``apply`` changes valid leaves only, even on whole rows: a 1 GiB walk over one full
    L2 table (entry 0 a table of 512 pages, 511 blocks) clearing VALID invalidates the 512
    pages and the 511 blocks but never the L2 table descriptor (nor the L1 one above it),
    so the pages are still reached through it (a lookup stops at level 3)."""
    pgt = PageTable(G)
    pgt.map_range(BASE, 1 << 30, 2 << 20)
    pgt.map_range(BASE, 2 << 20, 4096)  # entry 0 of the L2 table becomes a table
    _, bulk = set_clear_visitor(0, D.VALID)
    c = walk_bulk(pgt, BASE, BASE + (1 << 30), bulk)
    assert {k: v for k, v in c.writes.items() if v} == {3: 512, 2: 511}
    level, _, desc = pgt.lookup(BASE + np.arange(512) * 4096)
    assert (level == 3).all() and not (desc & np.uint64(D.VALID)).any()


def test_walk_counters_add_up():
    """OpStats merge the counters of several walks: reads and writes per level add, and so
    do the tables visited."""
    a = WalkCounters(Counter({1: 1, 3: 5}), Counter({3: 2}), 2)
    a.add(WalkCounters(Counter({3: 7, 2: 1}), Counter({3: 1, 2: 4}), 3))
    assert dict(a.reads) == {1: 1, 2: 1, 3: 12}
    assert dict(a.writes) == {2: 4, 3: 3}
    assert a.tables_visited == 5
    assert a.total_reads() == 14 and a.total_writes() == 7


def test_a_block_split_during_a_leaf_visit_is_descended():
    pgt = small_tree()
    visited = []

    def splitter(ctx):
        visited.append((ctx.level, ctx.addr))
        if ctx.level == 2 and ctx.old & 3 == 1:  # a block: split it now
            pgt.split_blocks(np.array([ctx.pos]), 2)
        return None

    walk(pgt, BASE + (2 << 20), BASE + (2 << 20) + 3 * 4096, splitter)
    assert visited == [(2, BASE + (2 << 20))] + [(3, BASE + (2 << 20) + i * 4096) for i in range(3)]


@given(
    st.lists(st.tuples(st.integers(0, 31), st.sampled_from([4096, 2 << 20])), max_size=6),
    st.integers(0, 8191),
    st.integers(1, 8192),
)
def test_walk_and_walk_bulk_agree_on_random_trees(maps, lo, n):
    a = PageTable(G)
    for chunk, backing in maps:
        a.map_range(BASE + chunk * (2 << 20), 2 << 20, backing)
    b = a.copy()
    per_entry, bulk = set_clear_visitor(D.DBM, D.S2AP_W)
    start = BASE + lo * 4096
    end = start + n * 4096
    ca, cb = walk(a, start, end, per_entry), walk_bulk(b, start, end, bulk)
    assert np.array_equal(a.pool, b.pool)
    assert ca.as_dict() == cb.as_dict()


def test_walk_refuses_ranges_outside_the_ipa_space():
    with pytest.raises(ValueError, match="40-bit IPA space"):
        walk(small_tree(), 0, 1 << 41, lambda ctx: None)


# -- dirtylog tables -------------------------------------------------------------------------------


@pytest.mark.parametrize("granule, ipa, levels, start, tables, t0sz, sl0", REGIMES)
def test_tables_json_for_each_regime(capsys, granule, ipa, levels, start, tables, t0sz, sl0):
    assert (
        cli_main(
            [
                "tables",
                "--granule",
                f"{granule >> 10}K",
                "--ipa-bits",
                str(ipa),
                "--json",
                "--map",
                "0x40000000:64MiB",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert (out["levels"], out["start_level"], out["entry_tables"], out["t0sz"], out["sl0"]) == (
        levels,
        start,
        tables,
        t0sz,
        sl0,
    )
    assert out["entries_per_table"] == granule // 8
    page_leaves = out["leaves"]["L3_page"]
    assert page_leaves == (64 << 20) // granule


def test_tables_16gib_of_pages_and_of_1g_blocks(capsys):
    assert cli_main(["tables", "--map", "0x40000000:16GiB", "--backing", "4K", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["leaves"] == {"L3_page": 4_194_304}
    assert out["tables_per_level"]["L3"] == 8192 and out["tables_per_level"]["L2"] == 16
    assert cli_main(["tables", "--map", "0x40000000:16GiB", "--backing", "1G", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["leaves"] == {"L1_block": 16}
    assert "L2" not in out["tables_per_level"] and "L3" not in out["tables_per_level"]


@pytest.mark.parametrize(
    "args, words",
    [
        (["--map", "0x40000000:1.5 pages"], "expected a size"),
        (["--ipa-bits", "52"], "52-bit LPA2"),
        (["--map", "0x40000800:1GiB"], "multiples of the 4096-byte page"),
        (["--granule", "8K"], "granule"),
        (["--map", "0xffffffff000:1GiB"], "beyond the 40-bit IPA space"),
        (["--backing", "3M"], "not a leaf size"),
    ],
)
def test_tables_bad_input_exits_2_with_one_line(capsys, args, words):
    assert cli_main(["tables", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1 and "Traceback" not in err


# -- units -----------------------------------------------------------------------------------------


def test_units():
    assert parse_size("4KiB") == parse_size("4K") == parse_size("4KB") == 4096
    assert parse_size("0x40000000") == parse_size("1GiB") == 1 << 30
    assert parse_size("1TiB") == 1 << 40 and parse_size(123) == 123
    assert parse_bandwidth("1Gbit/s") == 125e6 and parse_bandwidth("128MiB/s") == 128 << 20
    assert parse_bandwidth("100Mbps") == 12.5e6
    assert parse_rate("20000 pages/s", 4096) == 20000 and parse_rate("512MiB/s", 4096) == 131072
    for bad in ("-1", "1.5 bytes", "lots", True):
        with pytest.raises(ConfigError):
            parse_size(bad)


# -- the engine knows nothing of Qt ---------------------------------------------------------------


def test_engine_imports_no_qt():
    modules = sorted(p.stem for p in (ROOT / "engine").glob("*.py"))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module('engine.' + m if m != '__init__' else 'engine')\n"
        "qt = ('PySide6', 'shiboken6', 'pyqtgraph', 'app')\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in qt]\n"
        "print(bad)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@settings(max_examples=40, deadline=None)
@given(ops)
def test_last_level_tables_agree_with_the_walk(operations):
    """Both ways of finding the last-level table of a region (match the recorded IPAs of every
    live table, or walk) give the walk's answer, including regions that have none."""
    pgt = PageTable(G)
    for op, chunk, n, backing, _ in operations:
        start, size = BASE + chunk * (2 << 20), n * (2 << 20)
        if op == "unmap":
            unmap_range(pgt, start, size)
        else:
            pgt.map_range(start, size, backing)
    regions = BASE + np.arange(24, dtype=np.int64) * (2 << 20)
    level, pos, _ = pgt.lookup(regions)
    want = np.where(level == 3, pos // pgt.E, -1)
    assert np.array_equal(pgt.last_level_tables(regions), want)  # many regions: matched
    mixed = np.random.default_rng(len(operations)).permutation(24)  # queries in any order
    assert np.array_equal(pgt.last_level_tables(regions[mixed]), want[mixed])
    assert np.array_equal(pgt.last_level_tables(regions[::-1]), want[::-1])
    for r, w in zip(regions, want, strict=True):  # one at a time: walked once > 8 tables
        assert pgt.last_level_tables(np.array([r])).tolist() == [w]


def walk_one(pgt: PageTable, ipa: int) -> tuple[int, int, int]:
    """A plain walk of one IPA, entry by entry: (level where it stopped, flat position, desc)."""
    lv = G.start_level
    pos = ipa >> G.level_shift(lv)
    desc = int(pgt.flat[pos])
    while lv < 3 and desc & (D.VALID | D.TYPE) == D.VALID | D.TYPE:
        table = ((desc & D.oa_mask(12)) - POOL_PA_BASE) >> 12
        lv += 1
        pos = table * pgt.E + ((ipa >> G.level_shift(lv)) & (pgt.E - 1))
        desc = int(pgt.flat[pos])
    return lv, pos, desc


@settings(max_examples=5, deadline=None)
@example([], False, 1)  # every region has a last-level table: the fast path
@example([(3, 0, 512)], True, 2)  # an emptied region and a block: the general path
@given(
    st.lists(st.tuples(st.integers(0, 7), st.integers(0, 63), st.integers(1, 600)), max_size=6),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_sorted_lookup_against_a_per_ipa_walk(holes, block, seed):
    """Sorted batches of more than 4096 IPAs (the grouped lookup, and its fast path when every
    region has a last-level table) give what a walk of each IPA alone gives.  The window is
    8 regions of pages, the IPAs in the first 64 pages of each region (and of the block's); holes
    unmap pages (a region emptied loses its table) and ``block`` maps a 2 MiB block as the
    9th region (a region without a last-level table); without either, the fast path runs."""
    pgt = PageTable(G)
    pgt.map_range(BASE, 8 << 21, 4096)
    for region, first, n in holes:
        start = BASE + (region << 21) + (first << 12)
        unmap_range(pgt, start, min(n, 512 * 8 - region * 512 - first) << 12)
    if block:
        pgt.map_range(BASE + (8 << 21), 2 << 20, 2 << 20)
    rng = np.random.default_rng(seed)
    page = rng.integers(0, 9 if block else 8, 4200) * 512 + rng.integers(0, 64, 4200)
    ipa = np.sort(BASE + (page << 12) + rng.integers(0, 4096, 4200))
    level, pos, desc = pgt.lookup(ipa)
    walks: dict[int, tuple[int, int, int]] = {}  # (one walk per page: the offset is not read)
    want = [walks.setdefault(a >> 12, walk_one(pgt, a)) for a in ipa.tolist()]
    assert list(zip(level.tolist(), pos.tolist(), desc.tolist(), strict=True)) == want
    assert level.dtype == np.int8 and pos.dtype == np.int64 and desc.dtype == np.uint64


@pytest.mark.parametrize(
    ("clr", "writes"),
    [(D.TYPE, {3: 512}), (D.VALID, {3: 512, 2: 511}), (D.S2AP_W, {3: 512, 2: 511})],
)
def test_clearing_one_bit_changes_leaves_only_as_the_per_entry_walker_does(clr, writes):
    """The bulk walker's one-bit fast path must pick the same entries as stage2_attr_walker's
    per-entry rule (valid leaves only): clearing TYPE, VALID or S2AP W over a 1 GiB L2 table
    whose entry 0 is a table (512 pages) and the rest 2 MiB blocks.  Clearing TYPE must not
    take the L2 table descriptor (VALID | TYPE) for a leaf; the two walks leave the same
    tables and count the same reads and writes (a block's TYPE is already clear: only the
    512 pages change)."""
    a = PageTable(G)
    a.map_range(BASE, 1 << 30, 2 << 20)
    a.map_range(BASE, 2 << 20, 4096)
    b = a.copy()
    per_entry, bulk = set_clear_visitor(0, clr)
    ca = walk(a, BASE, BASE + (1 << 30), per_entry)
    cb = walk_bulk(b, BASE, BASE + (1 << 30), bulk)
    assert np.array_equal(a.pool, b.pool)
    assert ca.as_dict() == cb.as_dict()
    assert {k: v for k, v in cb.writes.items() if v} == writes

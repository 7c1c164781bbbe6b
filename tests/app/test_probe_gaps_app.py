"""Probe gaps in the app's page info strip and tree model: tests that pin behaviour the
existing app tests left open (each one fails on a hand mutation of the app code)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("PySide6")

from app.page_info import describe_page  # noqa: E402
from app.tree_model import PageTableModel  # noqa: E402
from engine.migration.simulation import Simulation  # noqa: E402
from engine.stage2.geometry import Geometry  # noqa: E402
from engine.stage2.pgtable import PageTable  # noqa: E402

BASE = 0x40000000  # slot 0 starts at gfn 0x40000, so gfn != offset in the slot


def _session() -> dict:
    return {
        "format": "dirtylog-session",
        "version": 2,
        "name": "probe-gaps",
        "seed": 3,
        "geometry": {"granule": "4KiB", "ipa_bits": 40},
        "vcpus": 1,
        "memslots": [
            {
                "id": 0,
                "name": "ram",
                "base": hex(BASE),
                "size": "1MiB",
                "flags": ["log_dirty"],
                "backing": "4KiB",
            }
        ],
        "workloads": [],
        "migration": {"policy": "qemu", "bandwidth": "256Mbit/s", "timeout_s": 60},
    }


def test_to_send_reads_the_bit_at_the_offset_in_the_slot_not_the_gfn():
    """The info strip's "to send" bit is the migration bitmap bit at the page's offset in its
    slot (gfn - base_gfn), not at the gfn: with base_gfn != 0 the two differ.  The bitmap is
    set by hand (page 3 to send, page 5 not) so the expected text holds by construction."""
    sim = Simulation.from_dict(_session())
    sim.migration.start(0)
    st = sim.vm.slot_of_ipa(BASE)
    base_gfn = st.slot.base_gfn
    assert base_gfn == BASE >> 12 and base_gfn != 0
    bitmap = sim.migration.slots[st.slot.id].bitmap
    bitmap[:] = 0
    bitmap[0] = np.uint64(1 << 3)  # only page 3 of the slot is to send
    assert describe_page(sim, base_gfn + 3).endswith("to send 1")
    assert describe_page(sim, base_gfn + 5).endswith("to send 0")
    bitmap[0] = ~np.uint64(1 << 5)  # every page but page 5 of the first word
    assert describe_page(sim, base_gfn + 3).endswith("to send 1")
    assert describe_page(sim, base_gfn + 5).endswith("to send 0")


def test_toggling_valid_only_forgets_the_rows_cached_before():
    """set_valid_only rebuilds the tree, so rows cached under valid_only before the toggle
    must go: pages mapped since (with no refresh) show once valid_only is back on."""
    pgt = PageTable(Geometry(4096, 40))
    pgt.map_range(BASE, 4 * 4096, 4096)  # 4 pages in the L3 table under 1 GiB
    model = PageTableModel(pgt, valid_only=True)

    def leaf_table_index():
        root0 = model.index(0, 0)
        model.fetch_until(root0, 511)
        l1 = model.index(0, 0, root0)  # L1[1]
        model.fetch_until(l1, 511)
        l2 = model.index(0, 0, l1)  # L2[0]
        model.fetch_until(l2, 511)
        return l2

    assert model.rowCount(leaf_table_index()) == 4  # cached: 4 valid entries
    pgt.map_range(BASE + 4 * 4096, 6 * 4096, 4096)  # 6 more pages, same table, no refresh
    model.set_valid_only(False)
    model.set_valid_only(True)
    l2 = leaf_table_index()
    table = model._child_table(l2)
    valid = int(np.count_nonzero(pgt.pool[table] & np.uint64(1)))  # counted from the pool
    assert valid == 10
    assert model.rowCount(l2) == valid

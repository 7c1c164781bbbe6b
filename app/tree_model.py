"""The stage-2 tables as a lazy Qt tree: entry-level tables → entries → … → leaves.

Nothing is built ahead: an index's internal id is the entry's flat position in the pool
(plus a tag bit for the entry-level table nodes), rows are entry indexes, and a table's
children are fetched in batches as the view scrolls (``canFetchMore``/``fetchMore``), so a
guest with 16 M leaves costs only the rows on screen.  Cells read the live descriptor when
painted; ``refresh`` repaints after each frame.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PySide6.QtCore import QAbstractItemModel, QModelIndex, QPersistentModelIndex, Qt
from PySide6.QtGui import QBrush, QColor

from engine.stage2 import descriptor as D
from engine.stage2.pgtable import PageTable

COLUMNS = (
    "index",
    "IPA range",
    "kind",
    "descriptor",
    "S2AP / AF / DBM / XN",
    "output address",
    "slot",
    "dirty",
)
BATCH = 128
_ROOT_TAG = 1
HIGHLIGHT = QBrush(QColor(255, 214, 102))

Index = QModelIndex | QPersistentModelIndex


class PageTableModel(QAbstractItemModel):
    """A QAbstractItemModel over a PageTable (and optional slot / dirty lookups)."""

    def __init__(self, pgt: PageTable, slot_of=None, dirty_of=None, parent=None) -> None:
        super().__init__(parent)
        self.pgt = pgt
        self.slot_of = slot_of or (lambda ipa: "")
        self.dirty_of = dirty_of or (lambda ipa: "")
        self.touched = np.zeros(0, dtype=np.int64)  # sorted flat positions
        self._fetched: dict[int, int] = {}  # node key -> rows made visible so far

    # -- ids ----------------------------------------------------------------------------------

    @staticmethod
    def _entry_id(pos: int) -> int:
        return (pos + 1) << 1

    @staticmethod
    def _root_id(table: int) -> int:
        return (table << 1) | _ROOT_TAG

    def _decode(self, index: Index) -> tuple[str, int]:
        iid = int(index.internalId())
        if iid & _ROOT_TAG:
            return "root", iid >> 1
        return "entry", (iid >> 1) - 1

    def _child_table(self, index: Index) -> int | None:
        """The table page whose entries are this node's children, if any."""
        if not index.isValid():
            return None
        kind, value = self._decode(index)
        if kind == "root":
            return value
        table, _ = divmod(value, self.pgt.E)
        level = int(self.pgt.table_level[table])
        d = int(self.pgt.flat[value])
        if level < 3 and d & 3 == 3:
            return int(self.pgt.table_of(np.array([d], dtype=np.uint64))[0])
        return None

    def _key(self, parent: Index) -> int:
        return -1 if not parent.isValid() else int(parent.internalId())

    # -- structure ----------------------------------------------------------------------------

    def index(self, row: int, column: int, parent: Index = QModelIndex()) -> QModelIndex:
        if row < 0 or column < 0 or column >= len(COLUMNS):
            return QModelIndex()
        if not parent.isValid():
            if row >= self.pgt.n_root:
                return QModelIndex()
            return self.createIndex(row, column, self._root_id(row))
        table = self._child_table(parent)
        if table is None or row >= self.pgt.E:
            return QModelIndex()
        return self.createIndex(row, column, self._entry_id(table * self.pgt.E + row))

    def parent(self, index: Index = QModelIndex()) -> QModelIndex:  # type: ignore[override]
        if not index.isValid():
            return QModelIndex()
        kind, value = self._decode(index)
        if kind == "root":
            return QModelIndex()
        table = value // self.pgt.E
        if table < self.pgt.n_root:
            return self.createIndex(table, 0, self._root_id(table))
        ppos = int(self.pgt.parent[table])
        if ppos < 0:
            return QModelIndex()
        return self.createIndex(ppos % self.pgt.E, 0, self._entry_id(ppos))

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        if parent.isValid() and parent.column() > 0:
            return 0
        if not parent.isValid():
            return self.pgt.n_root
        if self._child_table(parent) is None:
            return 0
        return self._fetched.get(self._key(parent), 0)

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: Index = QModelIndex()) -> bool:
        if not parent.isValid():
            return True
        if parent.column() > 0:
            return False
        return self._child_table(parent) is not None

    def canFetchMore(self, parent: Index) -> bool:
        if not parent.isValid() or self._child_table(parent) is None:
            return False
        return self._fetched.get(self._key(parent), 0) < self.pgt.E

    def fetchMore(self, parent: Index) -> None:
        if not self.canFetchMore(parent):
            return
        key = self._key(parent)
        have = self._fetched.get(key, 0)
        more = min(BATCH, self.pgt.E - have)
        self.beginInsertRows(parent, have, have + more - 1)
        self._fetched[key] = have + more
        self.endInsertRows()

    def fetch_until(self, parent: QModelIndex, row: int) -> None:
        while self._fetched.get(self._key(parent), 0) <= row and self.canFetchMore(parent):
            self.fetchMore(parent)

    # -- cells --------------------------------------------------------------------------------

    def headerData(self, section: int, orientation, role: int = Qt.ItemDataRole.DisplayRole):
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return COLUMNS[section]
        return None

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        kind, value = self._decode(index)
        if kind == "root":
            if role == Qt.ItemDataRole.DisplayRole:
                return self._root_text(value, index.column())
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self._entry_text(value, index.column())
        if role == Qt.ItemDataRole.BackgroundRole and self._touched(value):
            return HIGHLIGHT
        if role == Qt.ItemDataRole.ToolTipRole:
            level = int(self.pgt.table_level[value // self.pgt.E])
            return D.decode(int(self.pgt.flat[value]), level, self.pgt.page_shift)
        return None

    def _root_text(self, table: int, column: int) -> str:
        g = self.pgt.geom
        span = self.pgt.E * g.level_size(g.start_level)
        if column == 0:
            return f"entry table {table} (L{g.start_level})"
        if column == 1:
            return f"{table * span:#x} – {(table + 1) * span - 1:#x}"
        if column == 2:
            return "table"
        return ""

    def _entry_text(self, pos: int, column: int) -> str:
        pgt = self.pgt
        table, idx = divmod(pos, pgt.E)
        level = int(pgt.table_level[table])
        if level < 0:
            return "(freed)" if column == 0 else ""
        d = int(pgt.flat[pos])
        ipa = int(pgt.entry_ipa(pos))
        size = pgt.geom.level_size(level)
        kind = D.leaf_kind(d, level)
        if column == 0:
            return f"L{level}[{idx}]"
        if column == 1:
            return f"{ipa:#x} – {ipa + size - 1:#x}"
        if column == 2:
            return kind
        if column == 3:
            return f"{d:#018x}"
        if kind in ("invalid", "table"):
            return (
                ""
                if column != 5 or kind == "invalid"
                else D.hex_grouped(d & D.oa_mask(pgt.page_shift))
            )
        f = D.fields(d, level, pgt.page_shift)
        if column == 4:
            return f"{f['s2ap']}{' AF' if f['af'] else ''}{' DBM' if f['dbm'] else ''} XN={f['xn']}"
        if column == 5:
            return D.hex_grouped(f["oa"])
        if column == 6:
            return str(self.slot_of(ipa))
        if column == 7:
            return str(self.dirty_of(ipa)) if level == 3 else ""
        return ""

    # -- navigation ---------------------------------------------------------------------------

    def index_for_ipa(self, ipa: int) -> QModelIndex:
        """The index of the entry that maps ``ipa`` (leaf, or where the walk stops)."""
        level, pos, _ = self.pgt.lookup(np.array([ipa], dtype=np.int64))
        target = int(pos[0])
        chain = [target]
        table = target // self.pgt.E
        while table >= self.pgt.n_root:
            ppos = int(self.pgt.parent[table])
            chain.append(ppos)
            table = ppos // self.pgt.E
        parent = self.index(table, 0)
        for p in reversed(chain):
            row = p % self.pgt.E
            self.fetch_until(parent, row)
            parent = self.index(row, 0, parent)
        return parent

    def _touched(self, pos: int) -> bool:
        i = int(np.searchsorted(self.touched, pos))
        return i < self.touched.size and int(self.touched[i]) == pos

    def refresh(self, touched: np.ndarray) -> None:
        self.touched = touched

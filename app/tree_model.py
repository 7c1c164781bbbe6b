"""The stage-2 tables as a lazy Qt tree: entry-level tables → entries → … → leaves.

Nothing is built ahead: an index's internal id is the entry's flat position in the pool
(plus a tag bit for the entry-level table nodes), rows are entry indexes, and a table's
children are fetched in batches as the view scrolls (``canFetchMore``/``fetchMore``), so a
guest with 16 M leaves costs only the rows on screen.  Cells read the live descriptor when
painted; ``refresh`` repaints after each frame.

With ``valid_only`` a table's rows are its valid entries only (descriptor bit 0 set, found
with one numpy pass over the table's 512 entries): the 1,000-odd invalid entries around a
small guest's few tables disappear, and a table's "kind" cell says how many of its entries
are valid.  The rows of the tables in view are recomputed each frame (the worker maps,
splits and unmaps as the guest runs); when they change, the view's expanded and selected
entries follow their entries (a layout change), not their old row numbers.
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


def _decode_key(key: int) -> tuple[str, int]:
    """A node's internal id: ``("root", table page)`` or ``("entry", flat entry position)``."""
    if key & _ROOT_TAG:
        return "root", key >> 1
    return "entry", (key >> 1) - 1


class PageTableModel(QAbstractItemModel):
    """A QAbstractItemModel over a PageTable (and optional slot / dirty lookups)."""

    def __init__(
        self, pgt: PageTable, slot_of=None, dirty_of=None, parent=None, valid_only: bool = False
    ) -> None:
        super().__init__(parent)
        self.pgt = pgt
        self.slot_of = slot_of or (lambda ipa: "")
        self.dirty_of = dirty_of or (lambda ipa: "")
        self.touched = np.zeros(0, dtype=np.int64)  # sorted flat positions
        self._fetched: dict[int, int] = {}  # node key -> rows made visible so far
        self.valid_only = valid_only
        self._shown: dict[int, np.ndarray] = {}  # table -> entry indexes shown (valid_only)

    def set_valid_only(self, on: bool) -> None:
        """Show only valid entries (or all of them again); the tree starts collapsed."""
        self.beginResetModel()
        self.valid_only = on
        self._shown.clear()
        self._fetched.clear()
        self.endResetModel()

    # -- rows <-> entries ---------------------------------------------------------------------

    def _valid_entries(self, table: int) -> np.ndarray:
        return np.flatnonzero(self.pgt.pool[table] & np.uint64(1))

    def _entries(self, table: int) -> np.ndarray | None:
        """Entry indexes of ``table`` in row order; None: all of them (row = entry index)."""
        if not self.valid_only:
            return None
        rows = self._shown.get(table)
        if rows is None:
            rows = self._shown[table] = self._valid_entries(table)
        return rows

    def _row_count(self, table: int) -> int:
        rows = self._entries(table)
        return self.pgt.E if rows is None else int(rows.size)

    def _row_of(self, pos: int) -> int:
        """The row of the entry at flat position ``pos`` (-1: not shown)."""
        table, idx = divmod(pos, self.pgt.E)
        rows = self._entries(table)
        if rows is None:
            return idx
        i = int(np.searchsorted(rows, idx))
        return i if i < rows.size and int(rows[i]) == idx else -1

    # -- ids ----------------------------------------------------------------------------------

    @staticmethod
    def _entry_id(pos: int) -> int:
        return (pos + 1) << 1

    @staticmethod
    def _root_id(table: int) -> int:
        return (table << 1) | _ROOT_TAG

    def _decode(self, index: Index) -> tuple[str, int]:
        return _decode_key(int(index.internalId()))

    def _child_table(self, index: Index) -> int | None:
        """The table page whose entries are this node's children, if any."""
        return self._key_table(int(index.internalId())) if index.isValid() else None

    def _key_table(self, key: int) -> int | None:
        """The table under a node (by its internal id, the key ``_fetched`` counts by)."""
        if key < 0:
            return None
        kind, pos = _decode_key(key)
        if kind == "root":
            return pos
        table = pos // self.pgt.E
        d = int(self.pgt.flat[pos])
        if int(self.pgt.table_level[table]) < 3 and d & 3 == 3:
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
        if table is None or row >= self._row_count(table):
            return QModelIndex()
        rows = self._entries(table)
        entry = row if rows is None else int(rows[row])
        return self.createIndex(row, column, self._entry_id(table * self.pgt.E + entry))

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
        row = self._row_of(ppos) if ppos >= 0 else -1
        if row < 0:
            return QModelIndex()
        return self.createIndex(row, 0, self._entry_id(ppos))

    def rowCount(self, parent: Index = QModelIndex()) -> int:
        if parent.isValid() and parent.column() > 0:
            return 0
        if not parent.isValid():
            return self.pgt.n_root
        table = self._child_table(parent)
        if table is None:
            return 0
        return min(self._fetched.get(self._key(parent), 0), self._row_count(table))

    def columnCount(self, parent: Index = QModelIndex()) -> int:
        return len(COLUMNS)

    def hasChildren(self, parent: Index = QModelIndex()) -> bool:
        if not parent.isValid():
            return True
        if parent.column() > 0:
            return False
        return self._child_table(parent) is not None

    def canFetchMore(self, parent: Index) -> bool:
        table = self._child_table(parent)
        if not parent.isValid() or table is None:
            return False
        return self._fetched.get(self._key(parent), 0) < self._row_count(table)

    def fetchMore(self, parent: Index) -> None:
        if not self.canFetchMore(parent):
            return
        table = self._child_table(parent)
        assert table is not None
        key = self._key(parent)
        have = self._fetched.get(key, 0)
        more = min(BATCH, self._row_count(table) - have)
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
            return self._table_kind(table)
        return ""

    def _table_kind(self, table: int) -> str:
        """ "table", and with valid_only how many of its entries are valid (its rows, as
        counted once a frame by ``refresh``: not again at every paint)."""
        rows = self._entries(table)
        if rows is None:
            return "table"
        return f"table · {rows.size}/{self.pgt.E} valid"

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
            if kind == "table" and level < 3:
                return self._table_kind(int(pgt.table_of(np.array([d], dtype=np.uint64))[0]))
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

    def entry_text(self, pos: int, column: int) -> str:
        """A cell of the entry at flat position ``pos``, shown or not."""
        return self._entry_text(pos, column)

    def locate_ipa(self, ipa: int) -> tuple[QModelIndex, int]:
        """Where the walk of ``ipa`` stops: the flat position of that entry (the leaf, or
        the invalid entry that faults) and the index to select: the entry's own, or with
        valid_only and an invalid entry, the table that holds it."""
        _, pos, _ = self.pgt.lookup(np.array([ipa], dtype=np.int64))
        target = int(pos[0])
        chain = [target]
        table = target // self.pgt.E
        while table >= self.pgt.n_root:
            ppos = int(self.pgt.parent[table])
            chain.append(ppos)
            table = ppos // self.pgt.E
        parent = self.index(table, 0)
        for p in reversed(chain):
            row = self._row_of(p)
            if row < 0:
                break  # (an invalid entry, hidden: its table stays selected)
            self.fetch_until(parent, row)
            parent = self.index(row, 0, parent)
        return parent, target

    def index_for_ipa(self, ipa: int) -> QModelIndex:
        """The index of the entry that maps ``ipa`` (leaf, or where the walk stops)."""
        return self.locate_ipa(ipa)[0]

    def _touched(self, pos: int) -> bool:
        i = int(np.searchsorted(self.touched, pos))
        return i < self.touched.size and int(self.touched[i]) == pos

    def refresh(self, touched: np.ndarray) -> None:
        """After a frame: the highlight, and with valid_only the rows of the tables in view
        (entries mapped or unmapped since follow as a layout change)."""
        self.touched = touched
        if not self.valid_only or not self._shown:
            return
        fresh = {t: self._valid_entries(t) for t in self._shown}
        if all(np.array_equal(fresh[t], rows) for t, rows in self._shown.items()):
            return
        self.layoutAboutToBeChanged.emit()
        old = self.persistentIndexList()
        positions = [self._decode(i) for i in old]
        for key, have in list(self._fetched.items()):  # a table shown whole stays whole
            table = self._key_table(key)
            if table in fresh and have >= self._shown[table].size:
                self._fetched[key] = max(have, int(fresh[table].size))
        self._shown = fresh
        new = []
        for idx, (kind, value) in zip(old, positions, strict=True):
            if kind == "root":
                new.append(self.createIndex(idx.row(), idx.column(), idx.internalId()))
                continue
            row = self._row_of(value)
            new.append(
                QModelIndex() if row < 0 else self.createIndex(row, idx.column(), idx.internalId())
            )
        self.changePersistentIndexList(old, new)
        self.layoutChanged.emit()

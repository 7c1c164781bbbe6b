"""The app keeps its long-lived objects out of the GUI timer's collections (``app/gui_gc.py``)."""

from __future__ import annotations

import gc
import weakref

from app.gui_gc import freeze_startup_objects


class _Node:
    pass


def test_frozen_objects_leave_collections_and_new_cycles_are_still_collected():
    try:
        freeze_startup_objects()
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # the modules and classes imported so far
        assert len(gc.get_objects()) < frozen // 10  # what a full collection walks now
        node = _Node()
        node.me = node  # a cycle made after the freeze
        ref = weakref.ref(node)
        del node
        assert ref() is not None  # kept by its cycle until a collection
        gc.collect()
        assert ref() is None
    finally:
        gc.unfreeze()

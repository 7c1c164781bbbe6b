"""The DirtyLog Inspector engine: stage-2 tables, dirty tracking and pre-copy migration.

Pure Python and numpy; it never imports Qt, so it runs headless, from the CLI and from pytest.
"""

from engine.allocator import keep_freed_memory

keep_freed_memory()

"""The ``dirtylog`` command: ``main`` builds the parser from one module per subcommand (tables,
run, export, perftest, bench) and maps errors to exit codes.

The top layer: it may import every other part of the engine; nothing in the engine imports it.
Subcommand modules never import ``main``.
"""

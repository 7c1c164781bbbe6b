"""File formats only: the versioned session schema (load, validate, migrate, save atomically) and
the dirty-bitmap snapshot exports.

Imports ``engine.util`` and nothing else of the engine: formats describe data, they never run it.
``engine.migration`` and ``engine.cli`` use it.
"""

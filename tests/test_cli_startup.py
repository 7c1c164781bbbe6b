"""``dirtylog --help`` and the parser of every subcommand start without the heavy layers.

Building the parser imports each subcommand's module; numpy, the engine's KVM and stage-2
layers, the session schema (pydantic), the simulation and the sweep machinery (Dask) load only
when a command that needs them runs.  Start-up was 0.5 s of CPU, 0.9 s once ``dirtylog run``
imported the simulation for one constant and ``dirtylog sweep`` all of ``engine.sweep``.
"""

from __future__ import annotations

import subprocess
import sys

HEAVY = (
    "numpy",
    "engine.kvm",
    "engine.stage2",
    "engine.migration.simulation",
    "engine.files.session",
    "pydantic",
    "engine.sweep",
    "distributed",
)


def test_the_parser_loads_no_simulation_schema_or_sweep():
    code = (
        "import sys; from engine.cli.main import build_parser; build_parser(); "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    loaded = [m for m in out if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert loaded == []
    assert "engine.cli.sweep" in out and "engine.cli.run" in out  # (the parser was built)

"""The settings in effect now (after the session's events and live edits), for the editors.

Runs in the worker thread, once per frame: a few small dicts read from the simulation, so the
editors show what the engine uses, never the session file's initial values.
"""

from __future__ import annotations

from typing import Any

from engine.migration.simulation import Simulation


def effective_settings(sim: Simulation) -> dict[str, Any]:
    t = sim.vm.tracking
    m = sim.migration
    migration = (m.cfg if m is not None else sim.cfg.migration).model_dump()
    return {
        "tracking": {
            "mode": t.mode,
            "strategy": t.strategy,
            "compare": t.compare,
            "eager_split": t.eager_split,
            "ring_entries": t.ring_entries,
            "initially_set": t.initially_set,
            "clear_chunk": sim.cfg.tracking.clear_chunk,
        },
        "migration": migration,
        "workloads": [
            {
                "name": w.name,
                "kind": w.kind,
                "vcpu": w.vcpu,
                **sim.targets.get(w.name, {}),
                "rate": f"{w.rate:g} pages/s",
                "params": {p: getattr(w, p) for p in w.PARAMS if p != "rate"},
            }
            for w in sim.workloads
        ],
        "paused_vcpus": sorted(sim.paused_vcpus),
        "vcpus": sim.cfg.vcpus,
    }

"""Xen's stop rules: today's (xg_sr_save.c, Xen 4.20) and the classic ones (Xen <= 4.5).

Expected values come from the sources, not from the engine:
- tools/libs/guest/xg_sr_save.c simple_precopy_policy: stop when ``0 <= dirty_count < 50`` or
  ``iteration >= 5``; send_memory_live sends the batch the policy was asked about even when
  the answer is stop; suspend_and_send_dirty then sends what the final CLEAN found.
- tools/libxc/xc_domain_save.c (RELEASE-4.5.0): after iteration ``iter``, the last iteration
  starts when ``iter >= max_iters`` (29), ``sent_this_iter + skip_this_iter < 50`` or
  ``total_sent > p2m_size * max_factor`` (3).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_migration import ZERO_COSTS, run, session

from engine.migration import xen as X
from engine.migration.simulation import Simulation

CASES = Path(__file__).parent / "cases" / "fidelity"  # the handed-over cases, kept in the repo


@pytest.mark.parametrize(
    ("iteration", "dirty", "stop"),
    [
        (1, 49, True),
        (1, 50, False),
        (1, 51, False),
        (1, 0, True),
        (1, -1, False),
        (4, 1000, False),
        (5, 1000, True),
        (5, -1, True),
        (6, -1, True),
    ],
)
def test_simple_precopy_policy_boundaries(iteration, dirty, stop):
    """xg_sr_save.c simple_precopy_policy (Xen 4.20): ``stats.dirty_count >= 0 &&
    stats.dirty_count < SPP_TARGET_DIRTY_COUNT`` (50) or ``stats.iteration >=
    SPP_MAX_ITERATIONS`` (5): 49/50/51 dirty pages, iterations 4/5/6, and -1 (no CLEAN yet)."""
    assert X.spp_stop(iteration, dirty, X.SPP_MAX_ITERATIONS, X.SPP_TARGET_DIRTY_COUNT) is stop


@pytest.mark.parametrize(
    ("iteration", "sent", "total", "stops"),
    [
        (28, 1000, 100, False),
        (29, 1000, 100, True),
        (30, 1000, 100, True),
        (3, 49, 100, True),
        (3, 50, 100, False),
        (3, 51, 100, False),
        (3, 1000, 2999, False),
        (3, 1000, 3000, False),
        (3, 1000, 3001, True),
    ],
)
def test_classic_stop_boundaries(iteration, sent, total, stops):
    """xc_domain_save.c (RELEASE-4.5.0): the last iteration starts when ``iter >= max_iters``
    (DEF_MAX_ITERS 29: 28/29/30), ``sent_this_iter + skip_this_iter < 50`` (49/50/51) or
    ``total_sent > p2m_size * max_factor`` (1000 pages × 3: 2999/3000/3001)."""
    why = X.classic_stop(iteration, sent, total, 1000, X.DEF_MAX_ITERS, 50, X.DEF_MAX_FACTOR)
    assert (why is not None) is stops


def test_r12_the_batch_under_50_goes_live_then_suspend():
    """r12: 40 pages written at 300 ms in a 16 MiB guest at 32 MiB/s.  Pass 1 (4096 pages,
    0.5 s), CLEAN finds 40 < 50: simple_precopy_policy says stop, but send_memory_live still
    sends the 40 pages live; suspend_and_send_dirty's CLEAN then finds nothing.  So three
    rounds: 4096 pages, 40 pages live, an empty stop-and-copy; no data in the downtime."""
    sim = Simulation.from_file(CASES / "r12_xen_fewer_than_50.json")
    result = sim.run()
    rounds = result["rounds"]
    assert [r["pages_sent"] for r in rounds] == [4096, 40, 0]
    assert [r["dirty_pages"] for r in rounds[:2]] == [40, 0]
    assert rounds[-1]["stop_and_copy"] and not rounds[1].get("stop_and_copy")
    assert result["downtime_ms"] < 0.1  # the final CLEAN only: 40 pages would take 4.88 ms
    assert result["verification"]["mismatches"] == 0
    assert "fewer than 50" in result["reason"]


def _hot(policy, **mig):
    return session(
        costs=ZERO_COSTS,
        workloads=[
            {"name": "u", "kind": "sequential", "vcpu": 0, "slot": 0, "rate": "40000 pages/s"}
        ],
        migration={"policy": policy, "bandwidth": "1Gbit/s", **mig},
    )


def test_xen_today_stops_after_five_live_iterations():
    """A guest that dirties all 16384 pages every iteration: never under 50, so the policy
    stops when ``iteration >= 5``: pass 1 and four dirty batches live, then the last."""
    _, result = run(_hot("xen"))
    live = [r for r in result["rounds"] if not r.get("stop_and_copy")]
    assert len(live) == 5 and result["rounds"][-1]["stop_and_copy"]
    assert "5 live iterations" in result["reason"]
    assert result["dirty_sync_count"] == 5  # 4 CLEANs between the batches + the final one
    assert result["verification"]["mismatches"] == 0


def test_xen_today_iteration_limit_is_configurable():
    _, result = run(_hot("xen", xen_max_rounds=3))
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3, 4]
    assert result["rounds"][-1]["stop_and_copy"]


def test_xen_45_stops_when_total_sent_exceeds_three_times_memory():
    """Each iteration sends all 16384 pages.  After iteration 3, total_sent = 49152 = 3 ×
    p2m_size: not over (the test is ``>``), so iteration 4 runs; after it 65536 > 49152."""
    _, result = run(_hot("xen-4.5"))
    live = [r for r in result["rounds"] if not r.get("stop_and_copy")]
    assert [r["pages_sent"] for r in live] == [16384] * 4
    assert "over 3×" in result["reason"]
    assert result["verification"]["mismatches"] == 0


def test_xen_45_defaults_to_29_iterations():
    """A guest that dirties a little more than 50 pages per iteration never hits 3× memory:
    the classic loop runs DEF_MAX_ITERS = 29 live iterations, then the last (30 in all)."""
    data = session(
        costs=ZERO_COSTS,
        workloads=[
            {"name": "u", "kind": "sequential", "vcpu": 0, "slot": 0, "rate": "30000 pages/s"}
        ],
        migration={"policy": "xen-4.5", "bandwidth": "256Mbit/s", "xen_max_factor": 1000},
        memslots=[{"id": 0, "base": "0x40000000", "size": "1MiB", "flags": ["log_dirty"]}],
    )
    _, result = run(data)
    assert len(result["rounds"]) == 30 and result["rounds"][-1]["stop_and_copy"]
    assert "29 iterations" in result["reason"]

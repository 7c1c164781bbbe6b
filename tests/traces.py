"""Sessions the tests build around a CSV trace of guest writes (shared by test modules)."""

from __future__ import annotations

from pathlib import Path

SLOT0 = 0x4000_0000


def manual_clear_trace_session(
    tmp_path: Path, writes: list[tuple[int, int]], size: str, clear_chunk: str
) -> dict:
    """Manual clear with initially-set bits: one slot of ``size`` at ``SLOT0`` sent at
    64 Mbit/s (20 ms downtime limit, 2 s timeout, 1 ms ticks), one vCPU whose writes are
    ``writes`` — (t_ns, page) pairs, written to ``tmp_path/w.csv`` as a trace."""
    rows = [f"{t_ns},{SLOT0 + page * 4096},0" for t_ns, page in writes]
    (tmp_path / "w.csv").write_text("t_ns,ipa,vcpu\n" + "\n".join(rows) + "\n")
    return {
        "format": "dirtylog-session",
        "version": 2,
        "seed": 1,
        "vcpus": 1,
        "tracking": {"mode": "manual-clear", "initially_set": True, "clear_chunk": clear_chunk},
        "memslots": [{"id": 0, "base": hex(SLOT0), "size": size, "flags": ["log_dirty"]}],
        "workloads": [{"name": "w", "kind": "trace", "path": str(tmp_path / "w.csv")}],
        "migration": {
            "bandwidth": "64Mbit/s",
            "link_speed": "64Mbit/s",
            "downtime_limit_ms": 20,
            "timeout_s": 2,
        },
    }

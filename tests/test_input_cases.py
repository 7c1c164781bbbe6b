"""Every hostile-input case of issue 16 (tests/cases/input/<case>: the input, ``cmd`` and
``limits``) run through the ``dirtylog`` command: exit 2 with one bounded sentence that names
the field, never an internal error, within the case's time and memory limits; the one valid
case (a large trace) runs and its loader's memory does not grow with the row count.
"""

from __future__ import annotations

import json
import resource
import shlex
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import MAX_MESSAGE
from engine.cli.main import main as cli_main
from engine.migration import traces
from engine.migration.traces import load_trace

CASES = Path(__file__).resolve().parent / "cases" / "input"

# case -> (exit status, the field its sentence must name); derived from each case's input
EXPECTED = {
    "A01-event-missing-workload-exit0": (2, "events[0].workload:"),
    "A04-clear-chunk-odd": (2, "tracking.clear_chunk:"),
    "C01-tables-5000-digit-size": (2, "--map size:"),
    "C04-bench-json-is-a-directory": (2, "--json:"),
    "C05-run-session-dev-zero": (2, "/dev/zero: is a character device"),
    "D05-diff-npages-lies": (2, "a.json.npages:"),
    "E01-memslot-size-zero": (2, "memslots[0].size: a memslot must have a size"),
    "E04-unknown-key-10k": (2, "xxxxxxxx…: is not a known field"),
    "F01-costs-nan": (2, "costs.fault_exit: must be a finite number, got NaN"),
    "F02-rate-inf": (2, 'workloads[0].rate: must be a finite number, got "1e999 pages/s"'),
    "F03-bandwidth-string-zero": (2, "migration.bandwidth: a bandwidth must be 1 B/s"),
    "F04-timeout-inf": (2, "migration.timeout_s: must be a finite number, got Infinity"),
    "F05-tick-rounds-to-zero": (2, "tick_ms: must be at least 0.001"),
    "F06-phase-duration-inf": (2, "workloads[0].phases[0].duration_ms:"),
    "F07-hot-fraction-huge-int": (2, "workloads[0].hot_fraction:"),
    "F11-kind-is-a-list": (2, "workloads[0].kind: must be one of"),
    "F12-event-add-memslot-size-0": (2, "events[0].size: a memslot must have a size"),
    "H01-tick-zero-manual-clear": (2, "tick_ms:"),
    "H02-start-ms-1e12": (2, "migration.start_ms:"),
    "M01b-zipf-range-1TiB": (2, "workloads[1].range: [0x0, 0x10000000000) does not lie inside"),
    "T01-csv-t-2pow63": (2, "workloads[0].path: line 2 of trace.csv: t_ns 9223372036854775808"),
    "T02-csv-vcpu-2pow32-wraps-to-0": (
        2,
        "workloads[0].path: line 2 of trace.csv: vcpu 4294967296",
    ),
    "T08-csv-1e7-rows-memory": (0, None),
}
T08_ROWS = 20_000  # the case's 10^7 rows are regenerated smaller; test_csv_memory_... scales


def _command(case: Path) -> list[str]:
    """The case's ``dirtylog`` command line (the last one, after any set-up commands)."""
    text = (case / "cmd").read_text().strip()
    last = text.split(";")[-1].strip()
    args = shlex.split(last)
    assert args[0] == "dirtylog"
    return args[1:]


def _write_t08_trace(path: Path, rows: int) -> None:
    """make.sh's trace (t = row, 512 pages round robin, vCPU 0), ``rows`` rows."""
    j = np.arange(rows)
    ipa = 0x40000000 + (j % 512) * 4096
    traces.save_trace_csv(path, j, ipa, np.zeros(rows, dtype=np.int64))


def test_every_case_folder_has_an_expectation():
    assert sorted(p.name for p in CASES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case(name, tmp_path, monkeypatch, capsys):
    case = CASES / name
    work = tmp_path / name
    shutil.copytree(case, work)
    if name.startswith("C04"):
        (work / "outdir").mkdir()  # the case: --json names an existing folder
    if name.startswith("T08"):
        _write_t08_trace(work / "trace.csv", T08_ROWS)
    limits = json.loads((case / "limits").read_text())
    monkeypatch.chdir(work)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.monotonic()
    status = cli_main(_command(case))
    elapsed = time.monotonic() - t0
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    err = capsys.readouterr().err
    want_status, field = EXPECTED[name]
    assert status == want_status, err
    assert elapsed < limits["timeout"] and grown < limits["mem"]
    assert "internal error" not in err and "Traceback" not in err
    if field is not None:
        assert err.count("\n") == 1 and len(err) <= MAX_MESSAGE + 40, err
        assert field in err, err
        assert "For further information" not in err and "pydantic" not in err


def test_bench_json_directory_is_refused_before_measuring(tmp_path, capsys):
    t0 = time.monotonic()
    assert cli_main(["bench", "--quick", "--json", str(tmp_path)]) == 2
    assert time.monotonic() - t0 < 5  # refused up front, not after a minute of measuring
    assert "measuring" not in capsys.readouterr().err


def test_csv_memory_does_not_grow_with_the_row_count(tmp_path, monkeypatch):
    """A CSV is parsed a chunk at a time into arrays allocated once: beyond the trace itself
    (BYTES_PER_ROW a row) the load needs only a few chunks, whatever the row count."""
    monkeypatch.setattr(traces, "CHUNK_BYTES", 64 << 10)
    peaks = {}
    for rows in (40_000, 80_000):
        path = tmp_path / f"t{rows}.csv"
        _write_t08_trace(path, rows)
        tracemalloc.start()
        trace = load_trace(path)
        peaks[rows] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert trace.t_ns.size == rows and trace.vcpu.dtype == np.int32
    overhead = {rows: peak - rows * traces.BYTES_PER_ROW for rows, peak in peaks.items()}
    assert max(overhead.values()) < traces.CHUNK_TEMP * (64 << 10) + (1 << 20)  # not the rows
    assert abs(overhead[80_000] - overhead[40_000]) < 1 << 20


@pytest.mark.parametrize(
    "line, words",
    [
        ("1," + "1" * 300 + ",0", "line 2 of t.csv is longer than 256 characters"),
        ("18446744073709551616,0x40000000,0", "t_ns 18446744073709551616 must be 0 to 2^63 - 1"),
        ("0,0x40000000,-2", "vcpu -2 must be -1 (no running vCPU) to 1023"),
    ],
)
def test_csv_rows_beyond_their_range_are_refused_with_the_value_as_given(tmp_path, line, words):
    (tmp_path / "t.csv").write_text("t_ns,ipa,vcpu\n" + line + "\n")
    with pytest.raises(Exception) as e:
        load_trace(tmp_path / "t.csv", "workloads[0].path")
    assert str(e.value).startswith("workloads[0].path: ") and words in str(e.value)

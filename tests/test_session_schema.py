"""Session files: every schema rule names its field, versions migrate, bad files are refused."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.files.session import (
    CURRENT_VERSION,
    load_session,
    parse_session,
    read_session_file,
    save_session_file,
)
from engine.util.errors import ConfigError

SESSIONS = Path(__file__).resolve().parent.parent / "resources" / "sessions"

V1 = {
    "format": "dirtylog-session",
    "version": 1,
    "name": "demo",
    "seed": 42,
    "tick_ms": 1,
    "geometry": {"granule": "4KiB", "ipa_bits": 40},
    "costs": {},
    "tracking": {
        "mode": "bitmap",
        "strategy": "range",
        "ring_entries": 4096,
        "eager_split": "0",
        "initially_set": False,
        "clear_chunk": "256KiB",
    },
    "vcpus": 2,
    "memslots": [
        {"id": 0, "base": "0x40000000", "size": "1GiB", "flags": ["log_dirty"], "backing": "4KiB"}
    ],
    "workloads": [{"name": "w0", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": "20000 pages/s"}],
    "migration": {
        "policy": "qemu",
        "start_ms": 0,
        "bandwidth": "1Gbit/s",
        "downtime_limit_ms": 300,
        "max_rounds": 100,
        "timeout_s": 3600,
        "auto_converge": False,
    },
    "events": [{"t_ms": 1000, "action": "set_workload", "workload": "w0", "rate": "50000 pages/s"}],
}


def test_the_issue_example_loads_through_the_v1_migration():
    cfg = parse_session(copy.deepcopy(V1))
    assert cfg.version == CURRENT_VERSION == 2
    assert cfg.view == {}
    assert cfg.memslots[0].base == 0x40000000 and cfg.memslots[0].size == 1 << 30
    assert cfg.migration.bandwidth == 125_000_000
    assert cfg.tracking.clear_chunk == 256 << 10


@pytest.mark.parametrize(
    "path, value, field, words",
    [
        (("tracking", "mode"), "pml", "tracking.mode", "must be"),
        (("tracking", "strategy"), "fast", "tracking.strategy", "must be"),
        (("tracking", "ring_entries"), 1000, "tracking.ring_entries", "power of two"),
        (("geometry", "ipa_bits"), 52, "geometry.ipa_bits", "48"),
        (("geometry", "granule"), "8KiB", "geometry.granule", "4KiB, 16KiB or 64KiB"),
        (("memslots", 0, "size"), "1.5 pages", "memslots[0].size", "expected a size"),
        (("memslots", 0, "id"), 40000, "memslots[0].id", "32767"),
        (("memslots", 0, "flags"), ["dirty"], "memslots[0].flags[0]", "log_dirty"),
        (("migration", "bandwidth"), "fast", "migration.bandwidth", "rate"),
        (("migration", "policy"), "vmware", "migration.policy", "qemu"),
        (("migration", "downtime_limit_ms"), -1, "migration.downtime_limit_ms", "greater than 0"),
        (("vcpus",), 0, "vcpus", "at least 1, got 0"),
        (("tick_ms",), 0, "tick_ms", "at least 0.001, got 0"),
        (("seed",), -5, "seed", "at least 0, got -5"),
        (("events", 0, "action"), "explode", "events[0].action", "must be"),
    ],
)
def test_schema_rules_name_field_and_rule(path, value, field, words):
    data = copy.deepcopy(V1)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        parse_session(data)
    assert err.value.field == field
    assert words in err.value.rule


def test_unknown_field_is_refused():
    data = copy.deepcopy(V1)
    data["migration"]["speed"] = 1
    with pytest.raises(ConfigError, match=r"migration.speed: is not a known field"):
        parse_session(data)


def test_newer_version_is_refused_with_a_sentence():
    data = copy.deepcopy(V1)
    data["version"] = 99
    with pytest.raises(ConfigError, match="newer DirtyLog Inspector"):
        parse_session(data)


def test_wrong_format_tag():
    with pytest.raises(ConfigError, match="format"):
        parse_session({"format": "qemu", "version": 1})


@pytest.mark.parametrize("name", sorted(p.name for p in SESSIONS.glob("*.json")))
def test_bundled_sessions_round_trip(name, tmp_path):
    cfg, data = load_session(SESSIONS / name)
    out = tmp_path / name
    save_session_file(out, cfg)
    cfg2, data2 = load_session(out)
    assert cfg2 == cfg and data2 == data


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    save_session_file(path, parse_session(copy.deepcopy(V1)))
    before = path.read_bytes()

    def crash(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    data = copy.deepcopy(V1)
    data["name"] = "changed"
    with pytest.raises(ConfigError, match="cannot be saved"):
        save_session_file(path, parse_session(data))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_crash_mid_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    save_session_file(path, parse_session(copy.deepcopy(V1)))
    before = path.read_bytes()
    real_fsync = os.fsync

    def die(fd):
        raise KeyboardInterrupt  # the process is killed between write and rename

    monkeypatch.setattr(os, "fsync", die)
    data = copy.deepcopy(V1)
    data["name"] = "changed"  # new content, so the old file can be told from the new one
    with pytest.raises(KeyboardInterrupt):
        save_session_file(path, parse_session(data))
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert json.loads(path.read_bytes())["name"] == "demo"
    save_session_file(path, parse_session(data))  # and a save that completes replaces it
    assert json.loads(path.read_bytes())["name"] == "changed"


@pytest.mark.parametrize(
    "content, words",
    [
        (b"", "not valid JSON"),
        (b'{"format": "dirtylog-session", "version": 1, "memslots": [', "not valid JSON"),
        (b"\xff\xfe\x00", "UTF-8"),
        (b"[1, 2, 3]", "must be a JSON object"),
        (b'{"format": "dirtylog-session", "version": "one"}', "whole number"),
        (b"[" * 100000 + b"]" * 100000, "nested more than 16 levels deep"),
    ],
)
def test_malformed_files_give_one_sentence(tmp_path, content, words):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_session(path)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "big.json"
    with open(path, "wb") as fh:
        fh.truncate(65 << 20)
    with pytest.raises(ConfigError, match="limited to"):
        read_session_file(path)


@given(
    st.recursive(
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=False)
        | st.text(max_size=8),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=8), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_fuzzed_documents_never_raise_anything_but_config_error(doc):
    data = copy.deepcopy(V1)
    data["memslots"][0]["size"] = doc
    try:
        parse_session(data)
    except ConfigError as exc:
        assert str(exc)


@given(
    st.dictionaries(
        st.sampled_from(list(V1)), st.integers() | st.text(max_size=5) | st.none(), max_size=5
    )
)
def test_fuzzed_top_level_fields(patch):
    data = copy.deepcopy(V1)
    data.update(patch)
    try:
        parse_session(data)
    except ConfigError as exc:
        assert str(exc) and "\n" not in str(exc)


def test_memslot_ids_must_be_unique():
    data = copy.deepcopy(V1)
    data["memslots"].append(dict(data["memslots"][0], base="0x80000000"))
    with pytest.raises(ConfigError, match="memslot id 0 is used twice"):
        parse_session(data)


def test_the_bundled_bench_sessions_are_benchmark_figures_5_and_6():
    """`/usr/bin/time dirtylog run resources/sessions/bench-*.json` measures, from outside,
    the guests that `dirtylog bench` measures for figures 5 and 6."""
    from engine.cli.bench_migration import realtime_session, terabyte_session

    cfg, _ = load_session(SESSIONS / "bench-64gib.json")
    assert cfg == parse_session(realtime_session(1 << 24))
    cfg, _ = load_session(SESSIONS / "bench-1tib.json")
    assert cfg == parse_session(terabyte_session(1 << 28))


@pytest.mark.parametrize(
    "policy, xen_max_rounds, live",
    [
        ("xen", None, 5),  # SPP_MAX_ITERATIONS
        ("xen-4.5", None, 29),  # DEF_MAX_ITERS
        ("qemu", None, 5),  # (not a Xen policy: the limit is never read)
        ("xen", 7, 7),
        ("xen-4.5", 1, 1),
    ],
)
def test_xen_live_iterations_default_by_release_unless_set(policy, xen_max_rounds, live):
    """Xen's limit on live iterations: 5 in today's save code (``SPP_MAX_ITERATIONS``,
    tools/libs/guest/xg_sr_save.c, 4.20) and 29 in 4.5's (``DEF_MAX_ITERS``,
    tools/libxc/xc_domain_save.c, RELEASE-4.5.0); ``xen_max_rounds`` replaces either."""
    migration = {"policy": policy}
    if xen_max_rounds is not None:
        migration["xen_max_rounds"] = xen_max_rounds
    cfg = parse_session({**copy.deepcopy(V1), "migration": migration})
    assert cfg.migration.live_iterations() == live

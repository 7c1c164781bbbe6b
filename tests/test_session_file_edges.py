"""The session file's edges that a save or a message meets rarely: the text's exact layout,
which event a message names, the sentence of a failed save, and the liveness probe that
decides whether a temporary file is a killed save's leftover."""

from __future__ import annotations

import os
import subprocess

import pytest
from test_session_save import SESSION  # the smallest valid session

from engine.files import session as S
from engine.files.session import (
    dump_session,
    event_context,
    parse_session,
    read_session_file,
    save_session_file,
    save_session_files,
    validate_event,
)
from engine.util.errors import ConfigError


def test_a_saved_session_is_json_indented_by_two_spaces_with_a_final_newline():
    """The layout a user diffs and edits by hand (json.dumps with indent=2), written out."""
    assert dump_session({"a": [1, 2], "b": {"c": "d"}}) == (
        '{\n  "a": [\n    1,\n    2\n  ],\n  "b": {\n    "c": "d"\n  }\n}\n'
    )


@pytest.mark.parametrize(
    ("event", "text"),
    [
        ({"t_ms": 10, "action": "harvest"}, "the harvest event at 10 ms"),
        ({"t_ms": 2.5, "action": "cancel"}, "the cancel event at 2.5 ms"),
        ({"t_ms": True, "action": "cancel"}, "the cancel event at true ms"),  # not 1
        ({"t_ms": "soon", "action": "cancel"}, 'the cancel event at "soon" ms'),
        ({"t_ms": None, "action": 5}, "the 5 event at null ms"),
        ({"action": None}, "the null event at null ms"),
        ({"t_ms": 1, "action": "a" * 40}, f"the {'a' * 40} event at 1 ms"),  # 40: kept
        ({"t_ms": 1, "action": "a" * 41}, f"the {'a' * 39}… event at 1 ms"),  # 41: cut
    ],
)
def test_a_message_names_the_event_as_the_session_wrote_it(event, text):
    """Times as numbers (a JSON true is not the number 1), anything else as written; an
    action of more than 40 characters cut to 39 and an ellipsis."""
    assert event_context(event) == text


def test_a_failed_save_names_the_file_and_the_system_s_reason_only(tmp_path):
    """One sentence: the file, then the OS's reason (strerror), not Python's exception text
    with its errno and the temporary file's name."""
    path = tmp_path / "missing" / "s.json"
    with pytest.raises(ConfigError) as err:
        save_session_file(path, SESSION)
    assert str(err.value) == f"{path}: cannot be saved (No such file or directory)"


def test_a_failed_save_through_a_linked_folder_names_the_path_the_user_gave(tmp_path):
    """Only a symlink to the file itself is followed; a path through a linked folder is
    written (and named) as given: here the folder's link points nowhere."""
    (tmp_path / "folder").symlink_to(tmp_path / "gone")
    path = tmp_path / "folder" / "s.json"
    with pytest.raises(ConfigError) as err:
        save_session_file(path, SESSION)
    assert str(err.value).startswith(f"{path}: cannot be saved")


def test_more_paths_than_sessions_is_refused(tmp_path):
    """``save_session_files`` pairs paths with sessions one to one; a missing session is a
    caller's mistake, refused rather than a file silently left unsaved."""
    with pytest.raises(ValueError, match="zip"):
        save_session_files([tmp_path / "a.json", tmp_path / "b.json"], [SESSION])


def test_a_stale_temp_file_already_gone_when_removed_is_not_an_error(tmp_path, monkeypatch):
    """Two saves of one folder may both find a dead process's temporary file; the second to
    remove it finds it gone, and its save goes on."""
    stale = tmp_path / ".s.json.999999999.tmp"
    stale.write_text("half")

    def probe_then_lose_the_race(pid):
        stale.unlink()  # the other save removed it first
        return False

    monkeypatch.setattr(S, "_running", probe_then_lose_the_race)
    save_session_file(tmp_path / "s.json", SESSION)
    assert (tmp_path / "s.json").exists() and not stale.exists()


def test_the_liveness_probe_sends_no_signal_and_keeps_the_process_running(tmp_path):
    """kill(pid, 0) only asks whether the process exists: the probed process keeps running."""
    with subprocess.Popen(["sleep", "30"]) as child:
        try:
            assert S._running(child.pid) is True
            assert child.poll() is None
        finally:
            child.kill()
    assert S._running(child.pid) is False  # reaped: no such process


def test_a_process_of_another_user_counts_as_running(monkeypatch):
    """kill(pid, 0) on another user's process fails with EPERM: it exists, so its temporary
    file is kept."""

    def eperm(pid, sig):
        assert sig == 0
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", eperm)
    assert S._running(12345) is True


def _with_tracking(**t):
    return dict(SESSION, tracking={"mode": "manual-clear", **t})


def test_a_clear_chunk_one_byte_past_a_power_of_two_pages_is_refused_with_the_range():
    """QEMU's clear-bitmap chunk is whole pages: 256 KiB + 1 byte is 64 pages and a byte,
    refused (tests/test_qemu_rules.py pins the powers of two and the shift range).  The
    sentence gives the range by hand: 4 KiB × 2^6 = 256 KiB to 4 KiB × 2^31 = 8 TiB."""
    assert _refusal(parse_session, _with_tracking(clear_chunk=(256 << 10) + 1)) == (
        "tracking.clear_chunk: must be the page size times a power of two from 2^6 to 2^31 "
        "(QEMU's x-clear-bitmap-shift 6...31): 256 KiB to 8 TiB with 4 KiB pages, "
        "got 262145 bytes"
    )


def test_a_clear_chunk_and_a_shift_that_disagree_are_refused_naming_both():
    """1 GiB of 4 KiB pages is 2^18 pages; a shift of 17 says otherwise."""
    cfg = _with_tracking(clear_chunk="1GiB", clear_bitmap_shift=17)
    assert _refusal(parse_session, cfg) == (
        "tracking.clear_chunk: is 2^18 pages but tracking.clear_bitmap_shift says 17; "
        "give one of them"
    )


@pytest.mark.parametrize(
    ("loc", "prefix", "path"),
    [
        (("memslots", 0, "size"), None, "memslots[0].size"),  # the default: no prefix
        (("size",), "events[3]", "events[3].size"),
        (("memslots", "function-after[_size()]", 0), None, "memslots[0]"),  # no validator tag
        (("a", "list[int]", 0), None, "a[0]"),  # a type tag with brackets
        (("a", "int", "b"), None, "a.b"),  # a bare type tag
        (("a", "function-plain", "b"), None, "a.b"),  # a validator tag without brackets
    ],
)
def test_a_field_path_is_spelled_as_the_session_spells_it(loc, prefix, path):
    assert (S.field_path(loc) if prefix is None else S.field_path(loc, prefix)) == path


def test_a_folder_given_as_the_session_file_is_named_in_one_sentence(tmp_path):
    assert _refusal(read_session_file, tmp_path) == (
        f"{tmp_path}: is a directory, not a regular file (a session file)"
    )


def test_an_event_s_bad_field_is_named_with_the_event():
    """The field's path, the rule, then which event (action and time)."""
    ev = {"t_ms": 10, "action": "pause_vcpu", "vcpu": -1}
    assert _refusal(validate_event, ev, "events[3]") == (
        "events[3].vcpu: must be at least 0, got -1 (the pause_vcpu event at 10 ms)"
    )


def test_an_event_s_fields_are_returned_as_given_without_the_defaults():
    """Only the fields the event sets: a default (compare: null) would undo what an earlier
    set_tracking event set."""
    ev = {"t_ms": 1, "action": "set_tracking", "strategy": "rmap"}
    assert validate_event(ev, "events[0]") == {"strategy": "rmap"}


def _refusal(fn, *args) -> str:
    with pytest.raises(ConfigError) as err:
        fn(*args)
    return str(err.value)


# -- refusals: one sentence per kind of rule, as the user reads it --------------------------------


def _refused(**over) -> str:
    data = {**SESSION, **over}
    return _refusal(parse_session, data)


@pytest.mark.parametrize(
    ("over", "sentence"),
    [
        (
            {"memslots": [{"id": 0, "base": "0x40000000"}]},
            "memslots[0].size: is required",
        ),
        (
            {"tracking": {"mode": "fast"}},
            "tracking.mode: must be 'bitmap', 'manual-clear', 'ring' or 'dbm', got \"fast\"",
        ),
        (  # a list over its length: the count, then the limit (not pydantic's sentence cut)
            {
                "events": [
                    {"t_ms": 1, "action": "set_memslot_flags", "id": 0, "flags": ["log_dirty"] * 3}
                ]
            },
            "events[0].flags: has 3 entries; at most 2 allowed "
            "(the set_memslot_flags event at 1 ms)",
        ),
        (  # a validator's own sentence, without pydantic's "Value error, "
            {
                "memslots": [
                    SESSION["memslots"][0],
                    {**SESSION["memslots"][0], "base": "0x80000000"},
                ]
            },
            "memslots: memslot id 0 is used twice; ids must be unique",
        ),
        (  # a model validator naming its own field ("@migration.timeout_s: ...")
            {"migration": {"start_ms": 80_000_000, "timeout_s": 10_000}},
            "migration.timeout_s: start_ms/1000 + timeout_s is 90000 s; a run is limited to "
            "86400 simulated seconds (one day)",
        ),
        (  # two bad fields: the first, and how many there are
            {"vcpus": "x", "seed": "y"},
            'seed: must be a whole number, got "y" (2 problems in all; this is the first)',
        ),
        ({"version": -1}, "version: must be a whole number, got -1"),
        ({"version": True}, "version: must be a whole number, got true"),
        ({"version": 0}, "version: version 0 is not a known session version"),  # a number
    ],
)
def test_each_kind_of_refusal_is_one_sentence_naming_the_field(over, sentence):
    assert _refused(**over) == sentence


def test_a_name_over_200_characters_is_refused_with_the_limit():
    assert _refused(name="n" * 300).startswith(
        'name: must be at most 200 characters, got "nnnnnnnn'
    )


def test_a_model_validator_s_field_follows_the_prefix_it_is_checked_under():
    """config_error's prefix (an event's path) goes before a model validator's own field."""
    from pydantic import ValidationError

    from engine.files.session import SessionCfg, config_error

    data = {**SESSION, "migration": {"start_ms": 80_000_000, "timeout_s": 10_000}}
    with pytest.raises(ValidationError) as exc:
        SessionCfg.model_validate(data)
    err = config_error(exc.value, "events[2]")
    assert err.field == "events[2].migration.timeout_s"
    assert config_error(exc.value).field == "migration.timeout_s"


@pytest.mark.parametrize(
    ("document", "sentence"),
    [
        ([1, 2], "session: must be a JSON object, got [1, 2]"),
        (
            {"format": "x"},
            'format: must be "dirtylog-session" (is this a DirtyLog Inspector session?)',
        ),
        (
            {"format": "dirtylog-session", "version": 3},
            "version: this file is version 3, written by a newer DirtyLog Inspector; this one "
            "reads versions up to 2",
        ),
    ],
)
def test_a_document_that_is_not_a_session_is_refused_in_one_sentence(document, sentence):
    assert _refusal(parse_session, document) == sentence


def test_a_rule_of_the_migration_section_reads_as_its_own_sentence():
    """A check of the whole section (no pydantic type of its own): its sentence, lower-case
    first as every rule, then the section as given."""
    cfg = {"policy": "qemu", "qemu": "7.2", "avail_switchover_bandwidth": "1Gbit/s"}
    assert _refused(migration=cfg).startswith(
        "migration: avail_switchover_bandwidth needs QEMU 8.2 or later (qemu is 7.2), got {"
    )


def test_a_refusal_of_the_whole_document_names_the_session():
    """An error with no field of its own (the document is not an object) names "session"."""
    from pydantic import ValidationError

    from engine.files.session import SessionCfg, config_error

    with pytest.raises(ValidationError) as exc:
        SessionCfg.model_validate("x")
    assert str(config_error(exc.value)) == 'session: must be an object, got "x"'


def test_an_event_s_section_rule_keeps_the_event_s_path_though_its_value_shows_a_colon():
    """The value shown ends in ``": …``; only a rule starting with "@" names its own field."""
    event = {"t_ms": 1, "action": "set_migration", "qemu": "7.2"}
    event["avail_switchover_bandwidth"] = "1Gbit/s"
    got = _refusal(parse_session, {**SESSION, "events": [event]})
    assert got.startswith("events[0]: avail_switchover_bandwidth needs QEMU 8.2 or later")
    assert got.endswith("(the set_migration event at 1 ms)")

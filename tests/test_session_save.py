"""Saving a session as a user expects: atomic, through symlinks, onto hard links, keeping the
file's mode, refusing with one sentence, and cleaning up after a killed save."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest

from engine.files.session import save_session_file
from engine.util.errors import ConfigError

SESSION = {
    "format": "dirtylog-session",
    "version": 2,
    "name": "saved",
    "seed": 1,
    "vcpus": 1,
    "memslots": [{"id": 0, "base": "0x40000000", "size": "2MiB"}],
}


def saved_name(path) -> str:
    return json.loads(open(path, encoding="utf-8").read())["name"]


def test_through_a_symlink_the_target_is_written_and_the_link_stays(tmp_path):
    target = tmp_path / "real.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    save_session_file(link, SESSION)
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert saved_name(target) == "saved"


def test_a_hard_linked_file_is_rewritten_for_every_name(tmp_path):
    a = tmp_path / "a.json"
    a.write_text("x" * 10_000)  # longer than the session: the rest must be cut off
    b = tmp_path / "b.json"
    os.link(a, b)
    save_session_file(a, SESSION)
    assert os.stat(a).st_ino == os.stat(b).st_ino and os.stat(a).st_nlink == 2
    assert saved_name(b) == "saved"
    assert list(tmp_path.glob(".*.tmp")) == []


def test_the_files_mode_is_kept(tmp_path):
    path = tmp_path / "s.json"
    path.write_text("{}")
    path.chmod(0o640)
    save_session_file(path, SESSION)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_an_unwritable_place_is_refused_with_one_sentence(tmp_path):
    with pytest.raises(ConfigError, match=r"missing/s\.json.*cannot be saved"):
        save_session_file(tmp_path / "missing" / "s.json", SESSION)
    if os.geteuid() != 0:  # (root writes into read-only directories)
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        with pytest.raises(ConfigError, match="Permission denied"):
            save_session_file(ro / "s.json", SESSION)


def test_a_temp_file_left_by_a_killed_save_is_removed_by_the_next_save(tmp_path):
    path = tmp_path / "s.json"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f".s.json.{dead.stdout.strip()}.tmp"  # its process has exited
    stale.write_text("half a session")
    # A running process's save is kept: the process is this test's own child (not the
    # parent, which a mutated liveness probe sending a real signal would kill).
    with subprocess.Popen(["sleep", "30"]) as running:
        try:
            alive = tmp_path / f".s.json.{running.pid}.tmp"
            alive.write_text("in progress")
            other = tmp_path / f".t.json.{dead.stdout.strip()}.tmp"  # another file's: not ours
            other.write_text("")
            save_session_file(path, SESSION)
        finally:
            running.kill()
    assert not stale.exists() and alive.exists() and other.exists()
    assert saved_name(path) == "saved"

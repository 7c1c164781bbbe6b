"""Every limit of the bounded reader (engine/util/safeio.py read_capped), one table, each at
the limit, one past it and one inside it.

``read_capped(path, cap, …)`` returns a file of at most ``cap`` bytes (safeio's docstring: "the
whole of a regular file of at most cap bytes"); a larger one is refused by its size, and one
that grew after its size was read is refused once ``cap + 1`` bytes have been read.  The caps
the formats use are README's "files" row: sessions ≤ 64 MiB (67,108,864 bytes), sidecars
≤ 1 MiB (tests/test_limits_export.py); the session cap is checked here through
``read_session_file`` with files of exactly 64 MiB and one byte more.
"""

from __future__ import annotations

import pytest

from engine.files.session import read_session_file
from engine.util import safeio
from engine.util.errors import ConfigError
from engine.util.safeio import read_capped

OK = None
CAP = 100

TABLE = [
    # (bytes in the file, what fstat reports: None = the truth, 0 = a file that grew after)
    pytest.param(0, None, OK, id="empty"),
    pytest.param(CAP - 1, None, OK, id="cap-1"),
    pytest.param(CAP, None, OK, id="cap"),
    pytest.param(CAP + 1, None, "is 101 bytes; a test file is limited to 100", id="cap+1"),
    pytest.param(CAP - 1, 0, OK, id="grown:cap-1"),
    pytest.param(CAP, 0, OK, id="grown:cap"),
    pytest.param(
        CAP + 1, 0, "is more than 100 bytes; a test file is limited to 100", id="grown:cap+1"
    ),
    pytest.param(
        CAP + 5000, 0, "is more than 100 bytes; a test file is limited to 100", id="grown:far"
    ),
]


@pytest.mark.parametrize(("size", "reported", "refused"), TABLE)
def test_read_capped_limit(tmp_path, monkeypatch, size, reported, refused) -> None:
    """A file of exactly ``cap`` bytes is read whole, one byte more is refused by its size,
    and a file that grows past ``cap`` after its size was taken is refused after reading
    ``cap + 1`` bytes (sources in the module docstring)."""
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * (size // 256 + 1)
    path.write_bytes(data[:size])
    if reported is not None:
        monkeypatch.setattr(safeio, "file_size", lambda fh: reported)
    if refused is None:
        assert read_capped(path, CAP, "f", "a test file") == data[:size]
        return
    with pytest.raises(ConfigError) as err:
        read_capped(path, CAP, "f", "a test file")
    assert err.value.field == "f"
    assert err.value.rule == refused


@pytest.mark.parametrize(
    ("size", "refused"),
    [
        pytest.param(64 << 20, False, id="64MiB"),
        pytest.param((64 << 20) - 1, False, id="64MiB-1"),
        pytest.param((64 << 20) + 1, True, id="64MiB+1"),
    ],
)
def test_session_file_cap_is_64_mib(tmp_path, size, refused) -> None:
    """README "files": sessions ≤ 64 MiB; a session padded with spaces to exactly 67,108,864
    bytes is read, one byte more is refused naming the file."""
    path = tmp_path / "s.json"
    head = b'{"format": "dirtylog-session", "version": 2}'
    path.write_bytes(head + b" " * (size - len(head)))
    if not refused:
        assert read_session_file(path) == {"format": "dirtylog-session", "version": 2}
        return
    with pytest.raises(ConfigError) as err:
        read_session_file(path)
    assert err.value.field == str(path)
    assert err.value.rule == "is 67,108,865 bytes; a session file is limited to 67,108,864"

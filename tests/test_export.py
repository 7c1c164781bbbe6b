"""Bitmap snapshots: KVM's raw layout byte for byte, sidecars, import, diff, PNG."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.files.export import BitmapSnapshot, diff, read_snapshot, write_snapshot
from engine.util.errors import ConfigError


def _snap(pages, npages=200, base=0x40000, rnd=3):
    words = np.zeros((npages + 63) // 64, dtype=np.uint64)
    for p in pages:
        words[p // 64] |= np.uint64(1 << (p % 64))
    return BitmapSnapshot(1, base, npages, 4096, rnd, 123_000_000, words)


def _independent_kvm_read(raw: bytes, npages: int) -> set[int]:
    """Read a KVM dirty bitmap with plain Python: bit i of LE u64 word i//64."""
    out = set()
    for w in range(len(raw) // 8):
        (word,) = struct.unpack_from("<Q", raw, w * 8)
        for b in range(64):
            if word >> b & 1 and w * 64 + b < npages:
                out.add(w * 64 + b)
    return out


@given(st.sets(st.integers(0, 199), max_size=60))
def test_bin_is_kvm_layout_and_reimports(tmp_path_factory, pages):
    out = tmp_path_factory.mktemp("snap")
    snap = _snap(sorted(pages))
    files = write_snapshot(snap, out, "round-0003-slot-1", "bin")
    raw = files[0].read_bytes()
    assert raw == snap.words.astype("<u8").tobytes()
    assert len(raw) == 4 * 8
    assert _independent_kvm_read(raw, 200) == set(pages)
    back = read_snapshot(files[1])
    assert set(back.pages().tolist()) == set(pages)
    meta = json.loads(files[1].read_text())
    assert meta["base_gfn"] == 0x40000 and meta["npages"] == 200 and meta["round"] == 3
    assert meta["page_size"] == 4096 and meta["slot"] == 1 and meta["t_ns"] == 123_000_000


def test_npy_reimports(tmp_path):
    snap = _snap([0, 63, 64, 199])
    files = write_snapshot(snap, tmp_path, "s", "npy")
    assert read_snapshot(files[0]).pages().tolist() == [0, 63, 64, 199]


def test_png_pixels(tmp_path):
    snap = _snap([0, 5])
    files = write_snapshot(snap, tmp_path, "s", "png")
    data = files[0].read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (w, h) == (512, 1)
    idat = data.index(b"IDAT")
    (length,) = struct.unpack(">I", data[idat - 4 : idat])
    pixels = zlib.decompress(data[idat + 4 : idat + 4 + length])[1:]
    assert pixels[0] == 0 and pixels[5] == 0 and pixels[1] == 255 and pixels[300] == 200


def test_diff():
    a, b = _snap([1, 2, 3]), _snap([3, 4])
    d = diff(a, b)
    assert d["only_a"].tolist() == [0x40001, 0x40002]
    assert d["only_b"].tolist() == [0x40004]
    assert d["both"].tolist() == [0x40003]


def test_truncated_bin_is_refused(tmp_path):
    files = write_snapshot(_snap([1]), tmp_path, "s", "bin")
    files[0].write_bytes(files[0].read_bytes()[:-3])
    with pytest.raises(ConfigError, match="whole 64-bit words"):
        read_snapshot(files[1])


def test_bits_past_the_end_are_refused(tmp_path):
    files = write_snapshot(_snap([1]), tmp_path, "s", "bin")
    raw = bytearray(files[0].read_bytes())
    raw[-1] = 0xFF
    files[0].write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="past the slot's last page"):
        read_snapshot(files[1])


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "dirtylog-bitmap", "slot": -1}'])
def test_bad_sidecars(tmp_path, text):
    (tmp_path / "s.json").write_text(text)
    with pytest.raises(ConfigError):
        read_snapshot(tmp_path / "s.json")

"""Every limit of the snapshot reader (engine/files/export.py read_snapshot), one table, each
at the limit, one past it and one inside it.

Values written out from their sources, not from the module's constants:

- KVM's dirty-bitmap layout (virt/kvm/kvm_main.c kvm_get_dirty_log / kvm_dirty_bitmap_bytes:
  ``ALIGN(npages, BITS_PER_LONG) / 8`` bytes; bit i of little-endian u64 word i/64 is page i):
  a slot of npages pages has ceil(npages / 64) words — 64 pages 1 word, 65 pages 2, 127 and
  128 pages 2, 129 pages 3 — and bit ``npages % 64`` of the last word is the first bit past
  the slot (65 pages: word 1 bit 0 is page 64, the last; bit 1 is page 65, past the end).
- KVM slot ids: KVM_USER_MEM_SLOTS = 32767 (include/linux/kvm_host.h, SHRT_MAX), ids 0 … 32766;
  KVM_MEM_MAX_NR_PAGES = 2^31 − 1 pages (include/linux/kvm_host.h).
- README "Limits", snapshots: ``npages`` 1 … 2^31 − 1, ``base_gfn + npages`` inside a 52-bit
  IPA space (2^52 / page size pages: 2^40 with 4 KiB pages, 2^38 with 16 KiB, 2^36 with
  64 KiB), ``.bin`` size or ``.npy`` header (uint64, ceil(npages/64) words), ``words`` and
  ``dirty_pages`` agree; files: sidecars ≤ 1 MiB (1,048,576 bytes).
- The page sizes arm64 KVM supports: 4096, 16384, 65536 (README "granules 4K, 16K and 64K").
- The sidecar's own ranges (export.py docstring, not in README): ``round`` 0 … 2^31,
  ``t_ns`` 0 … 2^63 − 1, ``base_gfn`` 0 … 2^52 − 1, stated ``words``/``dirty_pages`` 0 … 2^31.

A refusal must be the ConfigError naming ``<sidecar>.<field>`` and the rule.  The memory
check (``check_fits``, which depends on the machine) is turned off so that the largest
``npages`` reaches the checks after it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine.files import export
from engine.files.export import read_snapshot
from engine.util.errors import ConfigError

OK = None
SIDE = "s.json"
_RANGE = "must be a whole number"
_PAGE = "must be 4096, 16384 or 65536"
_IPA = "is beyond the 52-bit IPA space"
_PAST = "has bits set past the slot's last page"


def _range(key: str, lo: int, hi: int, extra: dict[str, Any] | None = None) -> list:
    """lo-1 refused, lo, lo+1, hi-1, hi accepted, hi+1 refused, for one sidecar field."""
    extra = extra or {}
    rule = f"{_RANGE} {lo} to {hi}, got"
    return [
        pytest.param(
            {"meta": {**extra, key: lo - 1}}, (key, f"{rule} {lo - 1}"), id=f"{key}={lo - 1}"
        ),
        pytest.param({"meta": {**extra, key: lo}}, OK, id=f"{key}={lo}"),
        pytest.param({"meta": {**extra, key: lo + 1}}, OK, id=f"{key}={lo + 1}"),
        pytest.param({"meta": {**extra, key: hi - 1}}, OK, id=f"{key}={hi - 1}"),
        pytest.param({"meta": {**extra, key: hi}}, OK, id=f"{key}={hi}"),
        pytest.param(
            {"meta": {**extra, key: hi + 1}}, (key, f"{rule} {hi + 1}"), id=f"{key}={hi + 1}"
        ),
    ]


U64 = (1 << 64) - 1

TABLE = [
    *_range("slot", 0, 32766),
    *_range("round", 0, 1 << 31),
    *_range("t_ns", 0, (1 << 63) - 1),
    # base_gfn: 0 … 2^52 - 1 by range; its top is then refused by the IPA rule, not the range
    pytest.param(
        {"meta": {"base_gfn": -1}},
        ("base_gfn", f"{_RANGE} 0 to {(1 << 52) - 1}, got -1"),
        id="base_gfn=-1",
    ),
    pytest.param({"meta": {"base_gfn": 0}}, OK, id="base_gfn=0"),
    pytest.param({"meta": {"base_gfn": 1}}, OK, id="base_gfn=1"),
    pytest.param({"meta": {"base_gfn": (1 << 52) - 1}}, ("base_gfn", _IPA), id="base_gfn=2^52-1"),
    pytest.param(
        {"meta": {"base_gfn": 1 << 52}},
        ("base_gfn", f"{_RANGE} 0 to {(1 << 52) - 1}, got {1 << 52}"),
        id="base_gfn=2^52",
    ),
    # npages: 1 … 2^31 - 1; at the top the range passes and the .bin's size (2 words) is refused
    pytest.param(
        {"meta": {"npages": 0}, "words": []},
        ("npages", f"{_RANGE} 1 to {(1 << 31) - 1}, got 0"),
        id="npages=0",
    ),
    pytest.param({"meta": {"npages": 1}, "words": [1]}, OK, id="npages=1"),
    pytest.param({"meta": {"npages": 2}, "words": [3]}, OK, id="npages=2"),
    pytest.param(
        {"meta": {"npages": (1 << 31) - 2}},
        ("npages", "s.bin has 16 bytes; npages 2147483646 needs 268,435,456"),
        id="npages=2^31-2",
    ),
    pytest.param(
        {"meta": {"npages": (1 << 31) - 1}},
        ("npages", "s.bin has 16 bytes; npages 2147483647 needs 268,435,456"),
        id="npages=2^31-1",
    ),
    pytest.param(
        {"meta": {"npages": 1 << 31}},
        ("npages", f"{_RANGE} 1 to {(1 << 31) - 1}, got {1 << 31}"),
        id="npages=2^31",
    ),
    # page sizes: 4096, 16384, 65536 only
    pytest.param(
        {"meta": {"page_size": 4095}},
        ("page_size", f"{_RANGE} 4096 to 65536, got 4095"),
        id="page=4095",
    ),
    pytest.param({"meta": {"page_size": 4096}}, OK, id="page=4096"),
    pytest.param(
        {"meta": {"page_size": 4097}}, ("page_size", f"{_PAGE}, got 4097"), id="page=4097"
    ),
    pytest.param(
        {"meta": {"page_size": 8192}}, ("page_size", f"{_PAGE}, got 8192"), id="page=8192"
    ),
    pytest.param({"meta": {"page_size": 16384}}, OK, id="page=16384"),
    pytest.param(
        {"meta": {"page_size": 65535}}, ("page_size", f"{_PAGE}, got 65535"), id="page=65535"
    ),
    pytest.param({"meta": {"page_size": 65536}}, OK, id="page=65536"),
    pytest.param(
        {"meta": {"page_size": 65537}},
        ("page_size", f"{_RANGE} 4096 to 65536, got 65537"),
        id="page=65537",
    ),
    # the 52-bit IPA space: base_gfn + npages (65) ≤ 2^52 / page size
    pytest.param({"meta": {"base_gfn": (1 << 40) - 66}}, OK, id="ipa4k=end-1"),
    pytest.param({"meta": {"base_gfn": (1 << 40) - 65}}, OK, id="ipa4k=end"),
    pytest.param(
        {"meta": {"base_gfn": (1 << 40) - 64}},
        ("base_gfn", f"base_gfn + npages ({(1 << 40) + 1:,}) {_IPA}"),
        id="ipa4k=end+1",
    ),
    pytest.param({"meta": {"page_size": 16384, "base_gfn": (1 << 38) - 65}}, OK, id="ipa16k=end"),
    pytest.param(
        {"meta": {"page_size": 16384, "base_gfn": (1 << 38) - 64}},
        ("base_gfn", _IPA),
        id="ipa16k=end+1",
    ),
    pytest.param({"meta": {"page_size": 65536, "base_gfn": (1 << 36) - 66}}, OK, id="ipa64k=end-1"),
    pytest.param({"meta": {"page_size": 65536, "base_gfn": (1 << 36) - 65}}, OK, id="ipa64k=end"),
    pytest.param(
        {"meta": {"page_size": 65536, "base_gfn": (1 << 36) - 64}},
        ("base_gfn", _IPA),
        id="ipa64k=end+1",
    ),
    # words: ceil(npages / 64) of them, by the .bin's size
    pytest.param({"meta": {"npages": 64}, "words": [U64]}, OK, id="bin64=1word"),
    pytest.param(
        {"meta": {"npages": 64}, "words": [0, 0]},
        ("npages", "s.bin has 16 bytes; npages 64 needs 8"),
        id="bin64=2words",
    ),
    pytest.param(
        {"meta": {"npages": 65}, "words": [0]},
        ("npages", "s.bin has 8 bytes; npages 65 needs 16"),
        id="bin65=1word",
    ),
    pytest.param(
        {"meta": {"npages": 65}, "words": [0, 0, 0]},
        ("npages", "s.bin has 24 bytes; npages 65 needs 16"),
        id="bin65=3words",
    ),
    pytest.param(
        {"meta": {"npages": 65}, "raw": bytes(15)},
        ("npages", "s.bin has 15 bytes; npages 65 needs 16"),
        id="bin65=15bytes",
    ),
    pytest.param(
        {"meta": {"npages": 65}, "raw": bytes(17)},
        ("npages", "s.bin has 17 bytes; npages 65 needs 16"),
        id="bin65=17bytes",
    ),
    pytest.param({"meta": {"npages": 128}, "words": [0, 0]}, OK, id="bin128=2words"),
    pytest.param(
        {"meta": {"npages": 129}, "words": [0, 0]},
        ("npages", "s.bin has 16 bytes; npages 129 needs 24"),
        id="bin129=2words",
    ),
    pytest.param({"meta": {"npages": 129}, "words": [0, 0, 1]}, OK, id="bin129=3words"),
    # no bit past the slot's last page
    pytest.param({"meta": {"npages": 65}, "words": [U64, 1]}, OK, id="last=page64of65"),
    pytest.param({"meta": {"npages": 65}, "words": [0, 2]}, ("file", _PAST), id="past=page65of65"),
    pytest.param(
        {"meta": {"npages": 65}, "words": [0, 1 << 63]}, ("file", _PAST), id="past=page127of65"
    ),
    pytest.param({"meta": {"npages": 66}, "words": [0, 2]}, OK, id="last=page65of66"),
    pytest.param({"meta": {"npages": 127}, "words": [0, 1 << 62]}, OK, id="last=page126of127"),
    pytest.param(
        {"meta": {"npages": 127}, "words": [0, 1 << 63]}, ("file", _PAST), id="past=page127of127"
    ),
    pytest.param({"meta": {"npages": 128}, "words": [0, 1 << 63]}, OK, id="last=page127of128"),
    pytest.param({"meta": {"npages": 1}, "words": [2]}, ("file", _PAST), id="past=page1of1"),
    # stated words / dirty_pages: 0 … 2^31 and equal to the data (65 pages, 2 words, 3 dirty)
    pytest.param({"meta": {"words": 2}, "words": [5, 1]}, OK, id="words=2"),
    pytest.param({"meta": {"npages": 64, "words": 1}, "words": [U64]}, OK, id="words=1of64pages"),
    pytest.param(
        {"meta": {"npages": 128, "words": 2}, "words": [0, 0]}, OK, id="words=2of128pages"
    ),
    pytest.param(
        {"meta": {"npages": 129, "words": 3}, "words": [0, 0, 0]}, OK, id="words=3of129pages"
    ),
    pytest.param(
        {"meta": {"words": 1}, "words": [5, 1]}, ("words", "says 1 but s.bin holds 2"), id="words=1"
    ),
    pytest.param(
        {"meta": {"words": 3}, "words": [5, 1]}, ("words", "says 3 but s.bin holds 2"), id="words=3"
    ),
    pytest.param(
        {"meta": {"words": -1}}, ("words", f"{_RANGE} 0 to {1 << 31}, got -1"), id="words=-1"
    ),
    pytest.param(
        {"meta": {"words": 1 << 31}},
        ("words", f"says {1 << 31} but s.bin holds 2"),
        id="words=2^31",
    ),
    pytest.param(
        {"meta": {"words": (1 << 31) + 1}},
        ("words", f"{_RANGE} 0 to {1 << 31}, got {(1 << 31) + 1}"),
        id="words=2^31+1",
    ),
    pytest.param({"meta": {"dirty_pages": 3}, "words": [5, 1]}, OK, id="dirty=3"),
    pytest.param(
        {"meta": {"dirty_pages": 2}, "words": [5, 1]},
        ("dirty_pages", "says 2 but s.bin holds 3"),
        id="dirty=2",
    ),
    pytest.param(
        {"meta": {"dirty_pages": 4}, "words": [5, 1]},
        ("dirty_pages", "says 4 but s.bin holds 3"),
        id="dirty=4",
    ),
    pytest.param({"meta": {"dirty_pages": 0}}, OK, id="dirty=0"),
    pytest.param(
        {"meta": {"dirty_pages": -1}},
        ("dirty_pages", f"{_RANGE} 0 to {1 << 31}, got -1"),
        id="dirty=-1",
    ),
    pytest.param(
        {"meta": {"dirty_pages": (1 << 31) + 1}},
        ("dirty_pages", f"{_RANGE} 0 to {1 << 31}"),
        id="dirty=2^31+1",
    ),
    # .npy: a header of uint64/int64 (ceil(npages/64),)
    pytest.param({"npy": np.zeros(2, "<u8")}, OK, id="npy=u8(2,)"),
    pytest.param({"npy": np.zeros(2, "<i8")}, OK, id="npy=i8(2,)"),
    pytest.param(
        {"npy": np.zeros(1, "<u8")},
        ("npages", "s.npy holds uint64 (1,); the sidecar's npages needs uint64 (2,)"),
        id="npy=u8(1,)",
    ),
    pytest.param(
        {"npy": np.zeros(3, "<u8")}, ("npages", "s.npy holds uint64 (3,)"), id="npy=u8(3,)"
    ),
    pytest.param(
        {"npy": np.zeros(4, "<u4")}, ("npages", "s.npy holds uint32 (4,)"), id="npy=u4(4,)"
    ),
    pytest.param({"npy": np.array([0, 2], "<u8")}, ("file", _PAST), id="npy=past"),
    # the sidecar file itself: at most 1 MiB
    pytest.param({"sidecar_bytes": (1 << 20) - 1}, OK, id="sidecar=1MiB-1"),
    pytest.param({"sidecar_bytes": 1 << 20}, OK, id="sidecar=1MiB"),
    pytest.param(
        {"sidecar_bytes": (1 << 20) + 1},
        (None, "is 1,048,577 bytes; a snapshot sidecar is limited to 1,048,576"),
        id="sidecar=1MiB+1",
    ),
]


def _write(tmp: Path, spec: dict[str, Any]) -> Path:
    """A 65-page snapshot of slot 0 at gfn 0x40000 with 4 KiB pages, changed by ``spec``."""
    meta: dict[str, Any] = {
        "format": "dirtylog-bitmap",
        "version": 1,
        "file": "s.bin",
        "slot": 0,
        "base_gfn": 0x40000,
        "npages": 65,
        "page_size": 4096,
        "round": 1,
        "t_ns": 0,
    }
    meta.update(spec.get("meta", {}))
    if "npy" in spec:
        meta["file"] = "s.npy"
        np.save(tmp / "s.npy", spec["npy"])
    else:
        raw = spec.get("raw")
        if raw is None:
            raw = np.array(spec.get("words", [0, 0]), dtype="<u8").tobytes()
        (tmp / "s.bin").write_bytes(raw)
    text = json.dumps(meta)
    if "sidecar_bytes" in spec:
        text += " " * (spec["sidecar_bytes"] - len(text.encode()))
    side = tmp / SIDE
    side.write_text(text, encoding="utf-8")
    return side


@pytest.mark.parametrize(("spec", "refused"), TABLE)
def test_snapshot_limit(tmp_path, monkeypatch, spec, refused) -> None:
    """Each snapshot limit at the limit (accepted), one past (refused naming the sidecar's
    field and the rule) and one inside (accepted); sources in the module docstring."""
    monkeypatch.setattr(export, "check_fits", lambda *a, **k: None)
    side = _write(tmp_path, spec)
    if refused is None:
        snap = read_snapshot(side)
        words = spec.get("words", [0, 0]) if "npy" not in spec else list(spec["npy"])
        assert [int(w) for w in snap.words] == [int(w) for w in words]
        return
    key, rule = refused
    with pytest.raises(ConfigError) as err:
        read_snapshot(side)
    assert err.value.field == (SIDE if key is None else f"{SIDE}.{key}"), str(err.value)
    assert rule in err.value.rule, str(err.value)

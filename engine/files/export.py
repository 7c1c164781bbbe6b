"""Dirty-bitmap snapshots: KVM's raw layout with a JSON sidecar, ``.npy``, PNG; import and diff.

A ``.bin`` file is exactly what KVM_GET_DIRTY_LOG copies out: bit i of little-endian 64-bit
word i/64 is page ``base_gfn + i``, ``ceil(npages / 64)`` words.  The sidecar
``<name>.json`` says which slot and round it belongs to, so a snapshot can be imported,
compared with another (``dirtylog diff``) and shown in the heat map.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.util.errors import ConfigError

SIDECAR_FORMAT = "dirtylog-bitmap"
MAX_SNAPSHOT_BYTES = 1 << 30  # 2^33 pages of bitmap: more than any slot we model


@dataclass(frozen=True)
class BitmapSnapshot:
    slot: int
    base_gfn: int
    npages: int
    page_size: int
    round: int
    t_ns: int
    words: np.ndarray  # uint64, KVM layout

    def pages(self) -> np.ndarray:
        """Slot page offsets that are dirty."""
        bits = np.unpackbits(
            np.ascontiguousarray(self.words, "<u8").view(np.uint8), bitorder="little"
        )
        return np.flatnonzero(bits[: self.npages])

    def gfns(self) -> np.ndarray:
        return self.pages() + self.base_gfn

    def sidecar(self, file: str) -> dict[str, object]:
        return {
            "format": SIDECAR_FORMAT,
            "version": 1,
            "file": file,
            "slot": self.slot,
            "base_gfn": self.base_gfn,
            "npages": self.npages,
            "page_size": self.page_size,
            "round": self.round,
            "t_ns": self.t_ns,
            "words": int(self.words.size),
            "dirty_pages": int(self.pages().size),
            "layout": "KVM dirty bitmap: bit i of little-endian u64 word i//64 = gfn base_gfn+i",
        }


def write_snapshot(snap: BitmapSnapshot, out: Path, stem: str, fmt: str) -> list[Path]:
    """Write one snapshot as ``fmt`` (bin, npy or png) plus its JSON sidecar."""
    out.mkdir(parents=True, exist_ok=True)
    if fmt == "bin":
        data = out / f"{stem}.bin"
        data.write_bytes(np.ascontiguousarray(snap.words, dtype="<u8").tobytes())
    elif fmt == "npy":
        data = out / f"{stem}.npy"
        np.save(data, np.ascontiguousarray(snap.words, dtype="<u8"))
    elif fmt == "png":
        data = out / f"{stem}.png"
        data.write_bytes(bitmap_png(snap.pages(), snap.npages))
    else:
        raise ConfigError("--format", f"must be bin, npy or png, got {fmt!r}")
    side = out / f"{stem}.json"
    side.write_text(json.dumps(snap.sidecar(data.name), indent=2) + "\n", encoding="utf-8")
    return [data, side]


def read_snapshot(path: str | Path) -> BitmapSnapshot:
    """Import a snapshot from its sidecar (``.json``) or its ``.bin``/``.npy`` beside one."""
    path = Path(path)
    side = path if path.suffix == ".json" else path.with_suffix(".json")
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(side), "no sidecar JSON found next to the snapshot") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(str(side), f"is not a readable snapshot sidecar ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ConfigError(
            str(side), f'is not a snapshot sidecar (format must be "{SIDECAR_FORMAT}")'
        )
    fields = {}
    for key in ("slot", "base_gfn", "npages", "page_size", "round", "t_ns"):
        value = meta.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ConfigError(f"{side.name}: {key}", f"must be a whole number >= 0, got {value!r}")
        fields[key] = value
    data = side.parent / str(meta.get("file", ""))
    words = _read_words(data, fields["npages"])
    return BitmapSnapshot(words=words, **fields)


def _read_words(path: Path, npages: int) -> np.ndarray:
    nwords = (npages + 63) // 64
    if nwords * 8 > MAX_SNAPSHOT_BYTES:
        raise ConfigError(str(path), f"npages {npages} is too large for a snapshot")
    try:
        if path.suffix == ".npy":
            words = np.load(path, allow_pickle=False)
            if words.dtype.kind not in "ui" or words.ndim != 1:
                raise ConfigError(str(path), "must hold a 1-D array of 64-bit words")
            words = words.astype("<u8")
        elif path.suffix == ".bin":
            raw = path.read_bytes()
            if len(raw) != nwords * 8:
                raise ConfigError(
                    str(path),
                    f"has {len(raw)} bytes; {npages} pages need {nwords * 8} (whole 64-bit words)",
                )
            words = np.frombuffer(raw, dtype="<u8").copy()
        else:
            raise ConfigError(str(path), "only .bin and .npy snapshots can be imported")
    except FileNotFoundError:
        raise ConfigError(str(path), "the snapshot's data file is missing") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(str(path), f"cannot be read ({exc})") from None
    if words.size != nwords:
        raise ConfigError(str(path), f"has {words.size} words; {npages} pages need {nwords}")
    if npages % 64 and int(words[-1]) >> (npages % 64):
        raise ConfigError(str(path), "has bits set past the slot's last page")
    return words


def diff(a: BitmapSnapshot, b: BitmapSnapshot) -> dict[str, object]:
    """Pages only in A, only in B, and in both (as gfns), for two snapshots of one slot."""
    ga, gb = a.gfns(), b.gfns()
    return {
        "only_a": np.setdiff1d(ga, gb),
        "only_b": np.setdiff1d(gb, ga),
        "both": np.intersect1d(ga, gb),
    }


# -- PNG (no Qt in the engine): a page grid, dirty pages dark on white -------------------------


def bitmap_png(pages: np.ndarray, npages: int, width: int = 512) -> bytes:
    """One pixel per page, ``width`` pages per row, dirty = black."""
    rows = max(1, -(-npages // width))
    img = np.full(rows * width, 255, dtype=np.uint8)
    img[npages:] = 200  # past the slot's end: grey
    img[pages] = 0
    return png_gray(img.reshape(rows, width))


def png_gray(img: np.ndarray) -> bytes:
    """Encode an 8-bit greyscale image as PNG."""
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )

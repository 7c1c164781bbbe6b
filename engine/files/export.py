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

from engine.files import jsontree
from engine.util.errors import ConfigError, shown
from engine.util.memory import check_fits
from engine.util.safeio import file_size, open_regular, read_capped

SIDECAR_FORMAT = "dirtylog-bitmap"


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


MAX_SIDECAR_BYTES = 1 << 20
_SIDECAR_LIMITS = {  # field: (lowest, highest)
    "slot": (0, 32766),
    "base_gfn": (0, (1 << 52) - 1),
    "npages": (1, (1 << 31) - 1),  # KVM_MEM_MAX_NR_PAGES
    "page_size": (4096, 65536),
    "round": (0, 1 << 31),
    "t_ns": (0, (1 << 63) - 1),
}


def read_snapshot(path: str | Path) -> BitmapSnapshot:
    """Import a snapshot from its sidecar (``.json``) or its ``.bin``/``.npy`` beside one.

    The sidecar (a regular file of at most 1 MiB) must give ``slot``, ``base_gfn``, ``npages``,
    ``page_size``, ``round`` and ``t_ns`` in range, and the data file must agree with it: a
    ``.bin`` of exactly ceil(npages / 64) little-endian 64-bit words (checked by its size before
    it is read), an ``.npy`` whose header says 1-D 64-bit integers of that length, no bits past
    the last page, and ``words``/``dirty_pages`` when the sidecar states them.  Raises
    ConfigError naming the sidecar's field."""
    path = Path(path)
    side = path if path.suffix == ".json" else path.with_suffix(".json")
    if not side.exists():
        raise ConfigError(str(side), "no sidecar JSON found next to the snapshot")
    raw = read_capped(side, MAX_SIDECAR_BYTES, side.name, "a snapshot sidecar")
    try:
        meta = jsontree.loads(raw.decode("utf-8"), side.name)
    except UnicodeDecodeError:
        raise ConfigError(side.name, "is not UTF-8 text") from None
    jsontree.check_tree(meta, side.name)
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise ConfigError(
            side.name, f'is not a snapshot sidecar (format must be "{SIDECAR_FORMAT}")'
        )
    fields = {key: _sidecar_int(meta, key, side.name) for key in _SIDECAR_LIMITS}
    nwords = (fields["npages"] + 63) // 64
    # the words, one byte a page unpacked, and gfn lists (8 bytes a dirty page) for a diff
    check_fits(
        (64 << 20) + nwords * 8 + fields["npages"] * 40, f"{side.name}.npages", "this snapshot"
    )
    if fields["page_size"] not in (4096, 16384, 65536):
        raise ConfigError(
            f"{side.name}.page_size", f"must be 4096, 16384 or 65536, got {fields['page_size']}"
        )
    ipa_pages = (1 << 52) // fields["page_size"]
    if fields["base_gfn"] + fields["npages"] > ipa_pages:
        raise ConfigError(
            f"{side.name}.base_gfn",
            f"base_gfn + npages ({fields['base_gfn'] + fields['npages']:,}) is beyond the 52-bit "
            "IPA space",
        )
    name = meta.get("file")
    if not isinstance(name, str) or not name or Path(name).name != name:
        raise ConfigError(
            f"{side.name}.file", f"must be a file name beside the sidecar, got {shown(name)}"
        )
    words = _read_words(side.parent / name, fields["npages"], side.name)
    for key, expected in (("words", nwords), ("dirty_pages", None)):
        if key in meta:
            stated = _sidecar_int(meta, key, side.name, (0, 1 << 31))
            actual = (
                expected if expected is not None else int(np.unpackbits(words.view(np.uint8)).sum())
            )
            if stated != actual:
                raise ConfigError(f"{side.name}.{key}", f"says {stated} but {name} holds {actual}")
    return BitmapSnapshot(words=words, **fields)


def _sidecar_int(meta: dict, key: str, side: str, limits: tuple[int, int] | None = None) -> int:
    lo, hi = limits or _SIDECAR_LIMITS[key]
    value = meta.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(
            f"{side}.{key}", f"must be a whole number {lo} to {hi}, got {shown(value)}"
        )
    return value


def _read_words(path: Path, npages: int, side: str) -> np.ndarray:
    """The words of a .bin or .npy that must hold ``npages`` bits; ConfigError naming the
    sidecar's ``file`` (unreadable) or ``npages`` (the data disagrees with it)."""
    nwords = (npages + 63) // 64
    field, lie = f"{side}.file", f"{side}.npages"
    if path.suffix not in (".bin", ".npy"):
        raise ConfigError(field, "only .bin and .npy snapshots can be imported")
    with open_regular(path, field, "a .bin or .npy snapshot") as fh:
        if path.suffix == ".bin":
            size = file_size(fh)
            if size != nwords * 8:
                raise ConfigError(
                    lie,
                    f"{path.name} has {size:,} bytes; npages {npages} needs {nwords * 8:,} "
                    "(whole 64-bit words)",
                )
            words = np.frombuffer(fh.read(nwords * 8), dtype="<u8").copy()
        else:
            words = _read_npy_words(fh, path.name, nwords, lie)
    if words.size != nwords:
        raise ConfigError(
            field, f"{path.name} has {words.size} words; npages {npages} needs {nwords}"
        )
    if npages % 64 and int(words[-1]) >> (npages % 64):
        raise ConfigError(
            field, f"{path.name} has bits set past the slot's last page (npages {npages})"
        )
    return words


def _read_npy_words(fh, name: str, nwords: int, field: str) -> np.ndarray:
    """An .npy of ``nwords`` 64-bit integers, its header checked before its data is read."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    except (ValueError, OSError, EOFError) as exc:
        raise ConfigError(field, f"{name} is not a readable .npy file ({exc})") from None
    if dtype.hasobject or dtype.kind not in "ui" or dtype.itemsize != 8 or shape != (nwords,):
        raise ConfigError(
            field, f"{name} holds {dtype} {shape}; the sidecar's npages needs uint64 ({nwords},)"
        )
    fh.seek(0)
    try:
        words = np.lib.format.read_array(fh, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ConfigError(field, f"{name} is not a readable .npy file ({exc})") from None
    return np.ascontiguousarray(words).astype("<u8")


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

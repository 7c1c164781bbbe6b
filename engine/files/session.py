"""Session files: the JSON that says what to simulate, validated field by field.

A session is versioned (``"version"``); older versions are upgraded step by step by the
functions in ``MIGRATIONS`` (napari's migrator pattern) and a file from a newer version is
refused.  Validation errors name the field path (``memslots[1].size``) and the rule in one
sentence.  Sizes are integers or strings with units; trace paths are relative to the file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from engine.files import jsontree
from engine.util.errors import ConfigError, clip, shown
from engine.util.safeio import fsync_dir, read_text_capped, replace_atomically
from engine.util.units import parse_bandwidth, parse_size

FORMAT = "dirtylog-session"
CURRENT_VERSION = 2
MAX_FILE_BYTES = 64 << 20  # a session is configuration, not data
MAX_EVENTS = 20_000  # each is replayed at load against up to MAX_SLOTS memslots
MAX_SLOTS = 512  # memslots at once (KVM allows 32767; a placement check is linear in them)
MAX_HORIZON_S = 86_400  # one simulated day: start_ms + timeout_s and every event's t_ms
MAX_HORIZON_MS = MAX_HORIZON_S * 1000
MIN_TICK_MS = 0.001  # a tick is at least 1 µs, so it is never 0 ns
MAX_NAME_CHARS = 200


class _Model(BaseModel):
    """The strict base of every session section: unknown keys are refused, numbers must be
    finite, and nothing is coerced (``"5"`` is not 5, ``true`` is not 1, ``1.5`` is not an
    integer).  A field added to a subclass gets all of this, and the whole-tree limits of
    ``jsontree.check_tree``, without asking."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


Name = Annotated[str, Field(max_length=MAX_NAME_CHARS)]
Millis = Annotated[float, Field(ge=0, le=MAX_HORIZON_MS)]  # a simulated time in ms
Nanos = Annotated[float, Field(ge=0, le=1e9)]  # a unit cost: 0 ns to 1 s


def _size(v: Any) -> int:
    try:
        return parse_size(v, "")
    except ConfigError as exc:
        raise ValueError(exc.rule) from None


class GeometryCfg(_Model):
    granule: int = 4096
    ipa_bits: int = Field(40, ge=32, le=48)

    @field_validator("granule", mode="before")
    @classmethod
    def _granule(cls, v: Any) -> int:
        size = _size(v)
        if size not in (4096, 16384, 65536):
            raise ValueError("must be 4KiB, 16KiB or 64KiB")
        return size


# QEMU's clear bitmap (migration/migration.h, 10.x): one bit covers 2^shift pages
CLEAR_SHIFT_MIN = 6  # CLEAR_BITMAP_SHIFT_MIN: 64 pages, 256 KiB with 4 KiB pages
CLEAR_SHIFT_DEFAULT = 18  # CLEAR_BITMAP_SHIFT_DEFAULT: 1 GiB with 4 KiB pages
CLEAR_SHIFT_MAX = 31  # CLEAR_BITMAP_SHIFT_MAX: 8 TiB with 4 KiB pages


class TrackingCfg(_Model):
    mode: Literal["bitmap", "manual-clear", "ring", "dbm"] = "bitmap"
    strategy: Literal["range", "masked-skip", "visitor", "rmap"] = "range"
    ring_entries: int = Field(4096, ge=1)  # KVM's range depends on the granule (kvm.dirtyring)
    eager_split: int = 0
    initially_set: bool = False
    clear_chunk: int | None = None  # bytes; or clear_bitmap_shift (QEMU's x-clear-bitmap-shift)
    clear_bitmap_shift: int | None = Field(None, ge=CLEAR_SHIFT_MIN, le=CLEAR_SHIFT_MAX)
    compare: bool = False

    @field_validator("eager_split", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> int:
        size = _size(v)
        if size > 1 << 40:
            raise ValueError(f"must be 0 (off) or a block size, got {shown(v)}")
        return size

    @field_validator("clear_chunk", mode="before")
    @classmethod
    def _chunk(cls, v: Any) -> int | None:
        return None if v is None else _size(v)

    @field_validator("ring_entries")
    @classmethod
    def _pow2(cls, v: int) -> int:
        if v & (v - 1):
            raise ValueError(f"must be a power of two, got {v}")
        return v


class MemslotCfg(_Model):
    id: int = Field(ge=0, lt=32767)
    base: int
    size: int
    flags: list[Literal["log_dirty", "readonly"]] = Field([], max_length=2)
    backing: int | None = None
    name: Name = ""
    populate: bool = True

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v: Any) -> int:
        return _size(v)

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        size = _size(v)
        if size == 0:
            raise ValueError(
                "a memslot must have a size (in KVM, size 0 deletes a slot; a session lists "
                "the slots that exist), got 0"
            )
        return size

    @field_validator("backing", mode="before")
    @classmethod
    def _backing(cls, v: Any) -> int | None:
        return None if v is None else _size(v)


class KubevirtCfg(_Model):
    """KubeVirt's migration monitor (virt-launcher): abort when stuck or too slow; 0 = off."""

    progress_timeout_s: float = Field(150, ge=0)  # progressTimeout
    completion_timeout_per_gib: float = Field(150, ge=0)  # completionTimeoutPerGiB
    progress: Literal["previous-sample", "new-low"] = "previous-sample"


QEMU_RELEASES = ("7.2", "8.2", "9.2", "10.1")


class MigrationCfg(_Model):
    policy: Literal["qemu", "xen", "xen-4.5", "fixed", "none"] = "qemu"
    qemu: Literal["7.2", "8.2", "9.2", "10.1"] = "10.1"  # release whose rules the loop follows
    start_ms: float = Field(0, ge=0, le=MAX_HORIZON_MS)
    bandwidth: float = 128 << 20  # QEMU's max-bandwidth (the rate limit); Xen: the link
    link_speed: float = 10e9 / 8  # what the wire carries: the stop-and-copy is not rate-limited
    avail_switchover_bandwidth: float = Field(0, ge=0)  # QEMU >= 8.2; 0 = use the measured one
    zero_page_detection: Literal["legacy", "none"] = "legacy"
    downtime_limit_ms: float = Field(300, gt=0, le=2_000_000)
    max_rounds: int = Field(100, ge=1, le=100_000)
    timeout_s: float = Field(3600, gt=0, le=MAX_HORIZON_S)
    auto_converge: bool = False
    throttle_trigger_threshold: int = Field(50, ge=1, le=100)
    cpu_throttle_initial: int = Field(20, ge=1, le=99)
    cpu_throttle_increment: int = Field(10, ge=1, le=99)
    max_cpu_throttle: int = Field(99, ge=1, le=99)
    xen_max_rounds: int | None = Field(None, ge=1, le=100_000)  # live iterations: xen 5, 4.5 29
    xen_min_pages: int = Field(50, ge=0, le=1 << 40)
    xen_max_factor: float = Field(3.0, gt=0, le=1000)  # xen-4.5 only
    harvest_every_ms: float = Field(100, ge=MIN_TICK_MS, le=3_600_000)  # policy fixed: interval
    kubevirt: KubevirtCfg | None = None

    @field_validator("bandwidth", "link_speed", mode="before")
    @classmethod
    def _bw(cls, v: Any) -> float:
        try:
            return parse_bandwidth(v, "")
        except ConfigError as exc:
            raise ValueError(exc.rule) from None

    @field_validator("avail_switchover_bandwidth", mode="before")
    @classmethod
    def _avail(cls, v: Any) -> float:
        if v in (0, "0"):
            return 0.0
        try:
            return parse_bandwidth(v, "")
        except ConfigError as exc:
            raise ValueError(exc.rule) from None

    @model_validator(mode="after")
    def _release_features(self) -> MigrationCfg:
        if self.avail_switchover_bandwidth and self.qemu == "7.2":
            raise PydanticCustomError(
                "release", "avail_switchover_bandwidth needs QEMU 8.2 or later (qemu is 7.2)"
            )
        return self

    def live_iterations(self) -> int:
        """Xen's limit on live iterations: SPP_MAX_ITERATIONS 5 today, DEF_MAX_ITERS 29 in 4.5."""
        if self.xen_max_rounds is not None:
            return self.xen_max_rounds
        return 29 if self.policy == "xen-4.5" else 5


class EventCfg(BaseModel):
    """A timed live edit; the action's own fields are checked by ``validate_event`` (their
    types and ranges, at load) and against the state they meet by the simulation."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True, allow_inf_nan=False)
    t_ms: Millis
    action: Literal[
        "set_workload",
        "add_workload",
        "delete_workload",
        "add_memslot",
        "delete_memslot",
        "move_memslot",
        "set_memslot_flags",
        "pause_vcpu",
        "resume_vcpu",
        "set_tracking",
        "set_migration",
        "harvest",
        "cancel",
    ]


class SessionCfg(_Model):
    format: Literal["dirtylog-session"]
    version: int
    name: Name = "session"
    seed: int = Field(0, ge=0, lt=1 << 63)
    tick_ms: float = Field(1.0, ge=MIN_TICK_MS, le=1000)
    geometry: GeometryCfg = GeometryCfg()
    costs: dict[str, Nanos] = {}
    tracking: TrackingCfg = TrackingCfg()
    vcpus: int = Field(1, ge=1, le=1024)
    memslots: list[MemslotCfg] = Field([], max_length=MAX_SLOTS)
    workloads: list[dict[str, Any]] = []
    migration: MigrationCfg = MigrationCfg()
    events: list[EventCfg] = Field([], max_length=MAX_EVENTS)
    view: dict[str, Any] = {}

    @field_validator("memslots")
    @classmethod
    def _unique_ids(cls, v: list[MemslotCfg]) -> list[MemslotCfg]:
        seen: set[int] = set()
        for m in v:
            if m.id in seen:
                raise ValueError(f"memslot id {m.id} is used twice; ids must be unique")
            seen.add(m.id)
        return v

    @model_validator(mode="after")
    def _horizon(self) -> SessionCfg:
        m = self.migration
        horizon = m.start_ms / 1000 + m.timeout_s
        if horizon > MAX_HORIZON_S:
            raise ValueError(
                f"@migration.timeout_s: start_ms/1000 + timeout_s is {horizon:g} s; a run is "
                f"limited to {MAX_HORIZON_S} simulated seconds (one day)"
            )
        return self


# -- versions ---------------------------------------------------------------------------------

Migration = Callable[[dict[str, Any]], dict[str, Any]]


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v2 adds the app's view state (``view``); v1 files had none."""
    data.setdefault("view", {})
    data["version"] = 2
    return data


MIGRATIONS: dict[int, Migration] = {1: _v1_to_v2}  # from-version -> one step up


def migrate(data: dict[str, Any]) -> dict[str, Any]:
    """Upgrade ``data`` to CURRENT_VERSION one step at a time."""
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise ConfigError("version", f"must be a whole number, got {shown(version)}")
    if version > CURRENT_VERSION:
        raise ConfigError(
            "version",
            f"this file is version {version}, written by a newer DirtyLog Inspector; this one "
            f"reads versions up to {CURRENT_VERSION}",
        )
    while version < CURRENT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ConfigError("version", f"version {version} is not a known session version")
        data = step(dict(data))
        version = data["version"]
    return data


# -- loading ----------------------------------------------------------------------------------


_PYDANTIC_TAGS = {"int", "float", "str", "bool", "list", "dict", "none", "is-instance"}

_TYPE_RULES = {
    "int_type": "must be a whole number",
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "finite_number": "must be a finite number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "none_required": "must be null",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def field_path(loc: tuple[Any, ...], prefix: str = "") -> str:
    """``memslots[0].size`` from pydantic's location, without its validator tags."""
    out = prefix
    for part in loc:
        if isinstance(part, int):
            out = jsontree.join(out, part)
        elif "[" in str(part) or part in _PYDANTIC_TAGS or str(part).startswith("function-"):
            continue
        else:
            out = jsontree.join(out, str(part))
    return out


def _rule(err: dict[str, Any]) -> str:
    """One error of pydantic's as our rule: what is allowed, then the value as given."""
    kind, ctx, given = err["type"], err.get("ctx") or {}, shown(err.get("input"))
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind == "missing":
        return "is required"
    if kind in _TYPE_RULES:
        return f"{_TYPE_RULES[kind]}, got {given}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', 'one of the listed values')}, got {given}"
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        bound = ctx.get(key)
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)  # the limit as a reader writes it: 86400000, not 86400000.0
        return f"must be {words} {shown(bound)}, got {given}"
    if kind == "too_long":
        return f"has {ctx.get('actual_length')} entries; at most {ctx.get('max_length')} allowed"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters, got {given}"
    msg = str(err["msg"])
    if msg.startswith("Value error, "):
        return msg[len("Value error, ") :]
    return f"{msg[0].lower()}{msg[1:]}, got {given}"


def config_error(exc: ValidationError, prefix: str = "", context: str = "") -> ConfigError:
    """pydantic's first error as one sentence naming the field path (``prefix`` before it,
    ``context`` after the rule, e.g. which event); never a URL or a library's advice."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    field = field_path(tuple(err["loc"]), prefix) or prefix or "session"
    rule = _rule(err)
    if rule.startswith("@") and ": " in rule:  # a model validator naming its own field
        sub, rule = rule[1:].split(": ", 1)
        field = jsontree.join(prefix, sub) if prefix else sub
    if context:
        rule += f" ({context})"
    if len(errors) > 1:
        rule += f" ({len(errors)} problems in all; this is the first)"
    return ConfigError(field, rule)


# -- events: each action's own fields -----------------------------------------------------------


class _SetWorkload(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    workload: Name  # the kind's own parameters are checked against the workload it names


class _NamedWorkload(_Model):
    workload: Name


class _SlotId(_Model):
    id: int = Field(ge=0, lt=32767)


class _MoveMemslot(_SlotId):
    base: int

    @field_validator("base", mode="before")
    @classmethod
    def _base(cls, v: Any) -> int:
        return _size(v)


class _SlotFlags(_SlotId):
    flags: list[Literal["log_dirty", "readonly"]] = Field(max_length=2)


class _Vcpu(_Model):
    vcpu: int = Field(ge=0, lt=1024)


class _SetTracking(_Model):
    strategy: Literal["range", "masked-skip", "visitor", "rmap"] | None = None
    compare: bool | None = None


class _NoFields(_Model):
    """An action that takes no fields of its own (``harvest``)."""


class _AddWorkload(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True, allow_inf_nan=False)
    name: Name
    kind: str


EVENT_FIELDS: dict[str, type[BaseModel]] = {
    "set_workload": _SetWorkload,
    "add_workload": _AddWorkload,
    "delete_workload": _NamedWorkload,
    "add_memslot": MemslotCfg,
    "delete_memslot": _SlotId,
    "move_memslot": _MoveMemslot,
    "set_memslot_flags": _SlotFlags,
    "pause_vcpu": _Vcpu,
    "resume_vcpu": _Vcpu,
    "set_tracking": _SetTracking,
    "set_migration": MigrationCfg,
    "harvest": _NoFields,
    "cancel": _NoFields,
}
"""An action's own fields (everything but ``t_ms`` and ``action``); an action without an
entry is checked only by its handler."""


def event_context(ev: dict[str, Any]) -> str:
    """ "the add_memslot event at 10 ms": which event a sentence is about."""
    t = ev.get("t_ms")
    when = f"{t:g}" if isinstance(t, (int, float)) and not isinstance(t, bool) else shown(t)
    action = ev.get("action")
    name = clip(action, 40) if isinstance(action, str) else shown(action)
    return f"the {name} event at {when} ms"


def validate_event(ev: dict[str, Any], field: str) -> dict[str, Any]:
    """Check one event's own fields by type and range; ``field`` is its path (``events[3]``).

    Returns the fields converted (sizes as bytes); raises ConfigError naming the field
    (``events[3].size``) and the event (action and time)."""
    model = EVENT_FIELDS.get(str(ev.get("action")))
    own = {k: v for k, v in ev.items() if k not in ("t_ms", "action")}
    if model is None:
        return own
    try:
        checked = model.model_validate(own)
    except ValidationError as exc:
        raise config_error(exc, field, event_context(ev)) from None
    return {**own, **checked.model_dump(exclude_unset=True)}


def parse_session(data: Any) -> SessionCfg:
    """Validate a decoded JSON object; raises ConfigError naming the first bad field."""
    if not isinstance(data, dict):
        raise ConfigError("session", f"must be a JSON object, got {shown(data)}")
    jsontree.check_tree(data)
    if data.get("format") != FORMAT:
        raise ConfigError("format", f'must be "{FORMAT}" (is this a DirtyLog Inspector session?)')
    data = migrate(data)
    try:
        cfg = SessionCfg.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc) from None
    clear_chunk_pages(cfg.tracking, cfg.geometry.granule)
    for i, ev in enumerate(cfg.events):
        validate_event(ev.model_dump(), f"events[{i}]")
    return cfg


def clear_chunk_pages(t: TrackingCfg, page_size: int) -> int:
    """Pages one clear-bitmap bit covers: 2^x-clear-bitmap-shift (default 18: 1 GiB of 4 KiB
    pages), given as the shift or as a size (page size × 2^6 .. 2^31).

    Raises ConfigError naming ``tracking.clear_chunk`` when the size is not such a power of
    two or disagrees with ``tracking.clear_bitmap_shift``.
    Source: qemu migration/migration.h CLEAR_BITMAP_SHIFT_{MIN,DEFAULT,MAX} (QEMU 10.x).
    """
    shift = t.clear_bitmap_shift
    if t.clear_chunk is not None:
        pages, rest = divmod(t.clear_chunk, page_size)
        got = pages.bit_length() - 1
        if (
            rest
            or pages <= 0
            or pages & (pages - 1)
            or not CLEAR_SHIFT_MIN <= got <= CLEAR_SHIFT_MAX
        ):
            lo, hi = page_size << CLEAR_SHIFT_MIN, page_size << CLEAR_SHIFT_MAX
            raise ConfigError(
                "tracking.clear_chunk",
                f"must be the page size times a power of two from 2^{CLEAR_SHIFT_MIN} to "
                f"2^{CLEAR_SHIFT_MAX} (QEMU's x-clear-bitmap-shift {CLEAR_SHIFT_MIN}..."
                f"{CLEAR_SHIFT_MAX}): {lo >> 10} KiB to {hi >> 40} TiB with {page_size >> 10} KiB "
                f"pages, got {t.clear_chunk} bytes",
            )
        if shift is not None and shift != got:
            raise ConfigError(
                "tracking.clear_chunk",
                f"is 2^{got} pages but tracking.clear_bitmap_shift says {shift}; give one of them",
            )
        shift = got
    return 1 << (CLEAR_SHIFT_DEFAULT if shift is None else shift)


def read_session_file(path: str | Path) -> dict[str, Any]:
    """Read and decode a session file: a regular file of at most 64 MiB, JSON with no
    duplicate keys, no over-long numbers and bounded nesting; never executes anything."""
    path = Path(path)
    text = read_text_capped(path, MAX_FILE_BYTES, str(path), "a session file")
    return jsontree.loads(text, path.name)


def load_session(path: str | Path) -> tuple[SessionCfg, dict[str, Any]]:
    """The validated session and the (migrated) raw dict it came from."""
    data = read_session_file(path)
    cfg = parse_session(data)
    return cfg, cfg.model_dump(mode="json")


def dump_session(cfg: SessionCfg | dict[str, Any]) -> str:
    data = cfg.model_dump(mode="json") if isinstance(cfg, SessionCfg) else cfg
    return json.dumps(data, indent=2) + "\n"


def save_session_file(path: str | Path, data: SessionCfg | dict[str, Any]) -> None:
    """Write atomically: a temporary file beside the target, flushed and fsynced, renamed over
    it, then the directory fsynced.  An interrupted save leaves the previous file as it was.

    Saved as a user expects: through a symlink the link's target is written (the link stays);
    the file's permission bits are kept; a file with more than one hard link is rewritten in
    place (after the temporary copy is complete and fsynced), so every name sees the new
    session; temporary files left by a killed save (of a process no longer running) are
    removed.  Raises ConfigError naming the file when it cannot be written."""
    save_session_files([Path(path)], [data])


def save_session_files(
    paths: Sequence[Path], sessions: Iterable[SessionCfg | dict[str, Any]]
) -> None:
    """Sessions saved to ``paths`` (in order; ``sessions`` may be a generator, one in memory at
    a time) as ``save_session_file`` saves one: each folder is scanned once for stale
    temporary files and fsynced once, not once per file (a sweep's ``--sessions`` folder).
    Raises ConfigError naming the first file that cannot be written, ValueError when there
    are fewer sessions than paths or more."""
    targets = [_target(p) for p in paths]
    folders: dict[Path, set[str]] = {}
    for path in targets:
        folders.setdefault(path.parent, set()).add(path.name)
    for folder, names in folders.items():
        _remove_stale_temps(folder, names)
    for path, data in zip(targets, sessions, strict=True):
        replace_atomically(path, dump_session(data), verb="saved")
    for folder in folders:
        fsync_dir(folder)


def _target(path: Path) -> Path:
    """Where a save writes: through a symlink, the link's target."""
    return Path(os.path.realpath(path)) if os.path.islink(path) else path


_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp")


def _remove_stale_temps(folder: Path, names: set[str]) -> None:
    """Temporary files in ``folder`` of earlier saves of ``names`` whose process is gone
    (killed mid-save); one scan of the folder."""
    try:
        entries = [e.name for e in os.scandir(folder)]
    except OSError:
        return  # (the save names the folder's problem)
    for entry in entries:
        m = _TEMP.fullmatch(entry)
        if m is None or m["name"] not in names:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or not _running(pid):
            (folder / entry).unlink(missing_ok=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

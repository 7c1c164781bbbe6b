"""Dirtying workloads: what each vCPU writes, tick by tick.

A synthetic workload runs at a rate of pages per second *of guest execution time*: the
simulation passes how much time the vCPU actually ran in each tick (after throttling and the
exits it paid for), so tracking overhead lowers the write rate it achieves.  Fractions of a
write carry over exactly from tick to tick.  A trace is what happened: its writes land at their
own times whatever the overhead.  Every workload draws from its own seeded stream
(``[seed, crc32(name)]``), so adding a workload never changes another's writes.

One timeline: ``accesses_ticks`` gives several ticks' accesses at once, and they are exactly
the accesses that one call per tick would give.  The write count of each tick is computed tick
by tick (the same floating-point carry), and every random draw is one 64-bit value per number
(``Generator.random``), so drawing n + m numbers in one call gives the same numbers as n, then
m (``Generator.integers`` is not split-invariant: it buffers 32-bit halves within one call).
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from engine.migration.traces import MAX_VCPU, load_trace
from engine.util.errors import ConfigError, shown
from engine.util.units import parse_rate

NS = 1_000_000_000
MAX_PHASES = 64
MAX_PHASE_MS = 86_400_000  # one simulated day, the longest run


@dataclass(frozen=True)
class Region:
    """What a workload targets: a memslot or an IPA range, in pages."""

    base_gfn: int
    npages: int


@dataclass(frozen=True)
class Accesses:
    """Accesses of one or more ticks, sorted by time (int64 ns, gfn; int32 vCPU; bool write)."""

    t_ns: np.ndarray
    gfn: np.ndarray
    vcpu: np.ndarray
    write: np.ndarray

    @staticmethod
    def empty() -> Accesses:
        z = np.zeros(0, dtype=np.int64)
        return Accesses(z, z, np.zeros(0, np.int32), np.zeros(0, bool))

    @staticmethod
    def concat(parts: list[Accesses]) -> Accesses:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Accesses.empty()
        if len(parts) == 1:
            return parts[0]
        t = np.concatenate([p.t_ns for p in parts])
        order = np.argsort(t, kind="stable")
        return Accesses(
            t[order],
            np.concatenate([p.gfn for p in parts])[order],
            np.concatenate([p.vcpu for p in parts])[order],
            np.concatenate([p.write for p in parts])[order],
        )

    def __len__(self) -> int:
        return int(self.gfn.size)

    def part(self, lo: int, hi: int) -> Accesses:
        """Accesses lo..hi-1 (a view)."""
        return Accesses(self.t_ns[lo:hi], self.gfn[lo:hi], self.vcpu[lo:hi], self.write[lo:hi])


def _spread(edges: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``counts[i]`` times spread evenly over each tick (edges[i], edges[i + 1]], in order."""
    n = int(counts.sum())
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    tick = np.repeat(np.arange(counts.size), counts)
    rank = np.arange(1, n + 1, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
    t0, t1 = edges[:-1][tick], edges[1:][tick]
    return t0 + (rank * (t1 - t0)) // counts[tick]


def _floor_pages(u: np.ndarray, npages: int | np.ndarray) -> np.ndarray:
    """Uniform doubles in [0, 1) to page offsets in [0, npages) (``npages`` per double when an
    array)."""
    return np.minimum((u * npages).astype(np.int64), npages - 1)


class Workload(ABC):
    """One dirtying workload run by one vCPU."""

    kind: ClassVar[str] = ""
    PARAMS: ClassVar[tuple[str, ...]] = ("rate",)

    def __init__(self, name: str, vcpu: int, seed: int, page_size: int, field: str) -> None:
        self.name = name
        self.vcpu = vcpu
        self.page_size = page_size
        self.field = field
        self.seed_key = [seed, zlib.crc32(name.encode())]
        self.rng = np.random.default_rng(self.seed_key)
        self.region = Region(0, 0)
        self.rate = 0.0  # pages per second of guest time
        self._carry = 0.0

    def bind(self, region: Region) -> None:
        if region.npages <= 0:
            raise ConfigError(self.field, "targets an empty region")
        self.region = region

    @property
    def finished(self) -> bool:
        return False

    def set_params(self, **params: Any) -> None:
        """A live edit: rate and the kind's own parameters, validated."""
        for key, value in params.items():
            if key not in self.PARAMS:
                known = ", ".join(self.PARAMS)
                raise ConfigError(
                    f"{self.field}.{key}", f"is not a parameter of {self.kind}; known: {known}"
                )
            self._set(key, value)

    def _set(self, key: str, value: Any) -> None:
        if key == "rate":
            self.rate = parse_rate(value, self.page_size, f"{self.field}.rate")

    def _counts(self, active_ns: np.ndarray) -> np.ndarray:
        """Writes due in each tick for ``active_ns[i]`` of guest time, the fraction carried
        exactly from tick to tick (one float sequence, whatever the batch)."""
        carry, rate, out = self._carry, self.rate, []
        for a in active_ns.tolist():
            carry += rate * a / NS
            n = int(carry)
            carry -= n
            out.append(n)
        self._carry = carry
        return np.array(out, dtype=np.int64)

    def accesses(self, t0: int, t1: int, active_ns: int) -> Accesses:
        """The accesses of one tick (t0, t1] in which the vCPU ran ``active_ns``."""
        return self.accesses_ticks(np.array([t0, t1], dtype=np.int64), np.array([active_ns]))

    def accesses_ticks(self, edges: np.ndarray, active_ns: np.ndarray) -> Accesses:
        """The accesses of the ticks (edges[i], edges[i + 1]] (int64 ns) in which the vCPU ran
        ``active_ns[i]`` ns: the same accesses as one ``accesses`` call per tick."""
        counts = self._counts(np.asarray(active_ns))
        if counts.sum() <= 0 or self.region.npages <= 0:
            return Accesses.empty()
        pages, write = self._pages(int(counts.sum()))
        if pages.size < counts.sum():  # the workload ran out (once): the first ticks' writes
            counts = np.diff(np.minimum(np.cumsum(counts), pages.size), prepend=0)
        return Accesses(
            _spread(edges, counts),
            pages + self.region.base_gfn,
            np.full(pages.size, self.vcpu, dtype=np.int32),
            write,
        )

    @abstractmethod
    def _pages(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` page offsets within the region (and which are writes); ``_pages(n)`` then
        ``_pages(m)`` must give what ``_pages(n + m)`` gives (see the module docstring)."""


def _all_writes(pages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return pages, np.ones(pages.size, dtype=bool)


class Uniform(Workload):
    kind = "uniform"

    def _pages(self, n):
        return _all_writes(_floor_pages(self.rng.random(n), self.region.npages))


class Sequential(Workload):
    """mig_mon's sequential dirtying: page after page, wrapping."""

    kind = "sequential"

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.cursor = 0

    def _pages(self, n):
        pages = (self.cursor + np.arange(n)) % self.region.npages
        self.cursor = int((self.cursor + n) % self.region.npages)
        return _all_writes(pages)


class Once(Sequential):
    """Each page exactly once, in order, then nothing."""

    kind = "once"

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.done = 0

    @property
    def finished(self) -> bool:
        return self.region.npages > 0 and self.done >= self.region.npages

    def _pages(self, n):
        n = min(n, self.region.npages - self.done)
        pages = self.done + np.arange(n)
        self.done += n
        return _all_writes(pages)


class HotCold(Workload):
    """The first ``hot_fraction`` of the region gets ``hot_share`` of the writes."""

    kind = "hotcold"
    PARAMS = ("rate", "hot_fraction", "hot_share")

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.hot_fraction, self.hot_share = 0.1, 0.9

    def _set(self, key, value):
        if key in ("hot_fraction", "hot_share"):
            v = _number(value, f"{self.field}.{key}")
            if not 0 < v <= 1 if key == "hot_fraction" else not 0 <= v <= 1:
                span = "(0, 1]" if key == "hot_fraction" else "[0, 1]"
                raise ConfigError(f"{self.field}.{key}", f"must be in {span}, got {shown(value)}")
            setattr(self, key, v)
        else:
            super()._set(key, value)

    def _pages(self, n):
        hot_n = max(1, int(self.region.npages * self.hot_fraction))
        u = self.rng.random((n, 2))  # per write: hot or not, then where
        span = np.where(u[:, 0] < self.hot_share, hot_n, self.region.npages)
        return _all_writes(_floor_pages(u[:, 1], span))


class Zipf(Workload):
    """Zipf page popularity (exponent ``s``) over a seeded permutation of the region."""

    kind = "zipf"
    PARAMS = ("rate", "s")

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.s = 1.1
        self._cdf: np.ndarray | None = None
        self._perm: np.ndarray | None = None

    def _set(self, key, value):
        if key == "s":
            v = _number(value, f"{self.field}.s")
            if not 0 < v <= 100:
                raise ConfigError(
                    f"{self.field}.s", f"must be > 0 and at most 100, got {shown(value)}"
                )
            self.s, self._cdf = v, None
        else:
            super()._set(key, value)

    def bind(self, region):
        super().bind(region)
        self._cdf = None

    def _pages(self, n):
        if self._cdf is None:
            ranks = np.arange(1, self.region.npages + 1, dtype=np.float64)
            w = ranks**-self.s
            self._cdf = np.cumsum(w) / w.sum()
            self._perm = np.random.default_rng(zlib.crc32(self.name.encode())).permutation(
                self.region.npages
            )
        rank = np.minimum(np.searchsorted(self._cdf, self.rng.random(n)), self.region.npages - 1)
        return _all_writes(self._perm[rank])


class MemStress(Workload):
    """The dirty_log_perf_test guest: every page of the region per pass, write with -w %."""

    kind = "memstress"
    PARAMS = ("rate", "write_percent", "random_access")

    def __init__(self, *a, **k) -> None:
        super().__init__(*a, **k)
        self.write_percent = 100
        self.random_access = False
        self.passes_completed = 0
        # pass orders from a stream of their own, so a pass starting inside a batch of
        # ticks leaves the write/read draws in the same order as tick by tick
        self._order_rng = np.random.default_rng([*self.seed_key, 1])
        self._order: np.ndarray | None = None
        self._pos = 0

    def _set(self, key, value):
        if key == "write_percent":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 100:
                raise ConfigError(
                    f"{self.field}.write_percent", f"must be 0..100, got {shown(value)}"
                )
            self.write_percent = value
        elif key == "random_access":
            if not isinstance(value, bool):
                raise ConfigError(
                    f"{self.field}.random_access", f"must be true or false, got {shown(value)}"
                )
            self.random_access = value
        else:
            super()._set(key, value)

    def _new_pass(self) -> None:
        n = self.region.npages
        self._order = self._order_rng.permutation(n) if self.random_access else np.arange(n)
        self._pos = 0

    def _pages(self, n):
        out = []
        while n > 0:
            if self._order is None or self._pos >= self._order.size:
                if self._order is not None:
                    self.passes_completed += 1
                self._new_pass()
            take = min(n, self._order.size - self._pos)
            out.append(self._order[self._pos : self._pos + take])
            self._pos += take
            n -= take
        pages = np.concatenate(out)
        return pages, self.rng.random(pages.size) * 100 < self.write_percent


class Phases(Workload):
    """Child workloads one after another, each for ``duration_ms`` of simulated time, looping."""

    kind = "phases"
    PARAMS = ("rate",)

    def __init__(self, *a, children: list[tuple[Workload, int]] | None = None, **k) -> None:
        super().__init__(*a, **k)
        self.children = children or []
        self.cycle_ns = sum(d for _, d in self.children)

    def bind(self, region):
        super().bind(region)
        for child, _ in self.children:
            child.bind(region)

    def _child_at(self, t: int) -> Workload:
        t %= self.cycle_ns
        for child, dur in self.children:
            if t < dur:
                return child
            t -= dur
        return self.children[-1][0]

    def accesses_ticks(self, edges, active_ns):
        """Each tick runs the child whose phase holds the tick's start."""
        who = [self._child_at(int(t)) for t in edges[:-1]]
        parts, lo = [], 0
        for i in range(1, len(who) + 1):
            if i == len(who) or who[i] is not who[lo]:
                parts.append(who[lo].accesses_ticks(edges[lo : i + 1], active_ns[lo:i]))
                lo = i
        return Accesses.concat(parts)

    def _pages(self, n):  # pragma: no cover - phases delegate whole ticks to a child
        raise NotImplementedError


class Trace(Workload):
    """Replay a file of timed writes (see engine/traces.py)."""

    kind = "trace"
    PARAMS = ()

    def __init__(self, *a, trace=None, **k) -> None:
        super().__init__(*a, **k)
        self.trace = trace
        self._next = 0
        self.page_shift = self.page_size.bit_length() - 1

    @property
    def finished(self) -> bool:
        return self._next >= self.trace.t_ns.size

    def accesses_ticks(self, edges, active_ns):
        t0, t1 = int(edges[0]), int(edges[-1])
        tr = self.trace
        lo = self._next
        hi = int(np.searchsorted(tr.t_ns, t1, side="right"))
        # ticks are (t0, t1]; the first one also takes writes at t = 0
        lo = max(lo, int(np.searchsorted(tr.t_ns, t0, side="right")) if t0 > 0 else 0)
        self._next = max(self._next, hi)
        if hi <= lo:
            return Accesses.empty()
        vcpu = tr.vcpu[lo:hi] if tr.vcpu is not None else np.full(hi - lo, self.vcpu, np.int32)
        return Accesses(
            tr.t_ns[lo:hi],
            tr.ipa[lo:hi] >> self.page_shift,
            vcpu.astype(np.int32),
            np.ones(hi - lo, bool),
        )

    def _pages(self, n):  # pragma: no cover
        raise NotImplementedError


KINDS: dict[str, type[Workload]] = {
    c.kind: c for c in (Uniform, Sequential, Once, HotCold, Zipf, MemStress, Phases, Trace)
}
_COMMON = {"name", "kind", "vcpu", "slot", "range", "rate"}


def _number(value: Any, field: str) -> float:
    """A finite JSON number as a float (NaN, infinities and huge integers refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, f"must be a number, got {shown(value)}")
    if isinstance(value, int) and abs(value) > 1 << 64 or not np.isfinite(float(value)):
        raise ConfigError(field, f"must be a finite number, got {shown(value)}")
    return float(value)


def make_workload(
    spec: dict[str, Any],
    seed: int,
    page_size: int,
    field: str,
    base_dir: Path | None = None,
    load: bool = True,
) -> Workload:
    """Build and validate a workload from its session spec.

    ``load=False`` checks a trace's path (a regular file) without reading it, for validating
    a session before anything is allocated.  Raises ConfigError naming ``field`` + the key.
    """
    if not isinstance(spec, dict):
        raise ConfigError(field, f"must be an object, got {shown(spec)}")
    kind = spec.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        raise ConfigError(f"{field}.kind", f"must be one of {', '.join(KINDS)}, got {shown(kind)}")
    cls = KINDS[kind]
    name = spec.get("name")
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ConfigError(
            f"{field}.name",
            f"every workload needs a name of 1 to 200 characters, got {shown(name)}",
        )
    vcpu = spec.get("vcpu", 0)
    if not isinstance(vcpu, int) or isinstance(vcpu, bool) or not 0 <= vcpu <= MAX_VCPU:
        raise ConfigError(
            f"{field}.vcpu", f"must be a vCPU number 0..{MAX_VCPU}, got {shown(vcpu)}"
        )
    allowed = _COMMON | set(cls.PARAMS) | {"trace": {"path"}, "phases": {"phases"}}.get(kind, set())
    for key in spec:
        if key not in allowed:
            raise ConfigError(f"{field}.{key}", f"is not a field of a {kind} workload")
    extra: dict[str, Any] = {}
    if kind == "trace":
        full = trace_path(spec, field, base_dir)
        extra["trace"] = load_trace(full, f"{field}.path") if load else None
    if kind == "phases":
        extra["children"] = _phase_children(spec, seed, page_size, field, name, vcpu)
    w = cls(name, vcpu, seed, page_size, field, **extra)
    if kind not in ("trace", "phases") and "rate" not in spec:
        raise ConfigError(f"{field}.rate", 'is required, e.g. "20000 pages/s" or "512MiB/s"')
    w.set_params(**{k: v for k, v in spec.items() if k in cls.PARAMS})
    return w


def trace_path(spec: dict[str, Any], field: str, base_dir: Path | None) -> Path:
    """The trace file a trace workload names, relative to the session's folder."""
    path = spec.get("path")
    if not isinstance(path, str) or not path or len(path) > 4096 or "\0" in path:
        raise ConfigError(
            f"{field}.path", f"a trace workload needs the path of its file, got {shown(path)}"
        )
    return Path(path) if Path(path).is_absolute() or base_dir is None else base_dir / path


def _phase_children(spec, seed, page_size, field, name, vcpu) -> list[tuple[Workload, int]]:
    phases = spec.get("phases")
    if not isinstance(phases, list) or not 0 < len(phases) <= MAX_PHASES:
        raise ConfigError(
            f"{field}.phases",
            f"must be a list of 1 to {MAX_PHASES} workloads with duration_ms, got {shown(phases)}",
        )
    out = []
    for i, p in enumerate(phases):
        f = f"{field}.phases[{i}]"
        if not isinstance(p, dict):
            raise ConfigError(f, f"must be an object, got {shown(p)}")
        dur = p.get("duration_ms")
        if (
            isinstance(dur, bool)
            or not isinstance(dur, (int, float))
            or not 0.001 <= dur <= MAX_PHASE_MS
        ):
            raise ConfigError(
                f"{f}.duration_ms",
                f"must be 0.001 to {MAX_PHASE_MS} ms (one simulated day), got {shown(dur)}",
            )
        child = {k: v for k, v in p.items() if k != "duration_ms"}
        child.setdefault("name", f"{name}/{i}")
        child.setdefault("vcpu", vcpu)
        if not isinstance(child.get("kind"), str) or child["kind"] in ("phases", "trace"):
            raise ConfigError(f"{f}.kind", "a phase must be a synthetic workload")
        out.append((make_workload(child, seed, page_size, f), int(dur * 1_000_000)))
    return out

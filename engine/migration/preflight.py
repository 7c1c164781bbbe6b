"""A session checked against the state its parts will meet, before anything is allocated.

The schema (``engine.files.session``) checks each field alone.  Here the memslots are replayed
on KVM's own memslot rules (metadata only, no guest pages), every workload is built without
its memory (a trace's file is only opened) and its target must lie inside one memslot, and the
events are replayed in time order against that state: a workload or slot that will not exist
then, a memslot change KVM would refuse, a vCPU the VM lacks.  Every refusal names the field as
the session spells it (``memslots[1].base``, ``events[3].size``) and, for an event, its action
and time.  What passes is summarised in a ``Plan`` that the budget (memory and work) reads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.files.session import (
    MAX_HORIZON_S,
    MAX_SLOTS,
    SessionCfg,
    event_context,
    validate_event,
)
from engine.kvm.memslots import KVM_MEM_LOG_DIRTY_PAGES, KVM_MEM_READONLY, Memslot, Memslots
from engine.kvm.vm import slot_flags
from engine.migration.workloads import KINDS, Workload, make_workload, trace_path
from engine.stage2.geometry import Geometry
from engine.util.errors import ConfigError, DirtylogError, KvmError, shown
from engine.util.safeio import open_regular
from engine.util.units import parse_size

_KVM_FIELDS = {"guest_phys_addr": "base", "memory_size": "size", "slot": "id"}
"""KVM_SET_USER_MEMORY_REGION's names for what a session calls base, size and id."""


@dataclass
class WorkloadPlan:
    """What a workload will cost: its field path, peak rate (pages/s), target size in pages
    and kind, or the trace file it reads."""

    field: str
    kind: str
    rate: float = 0.0
    pages: int = 0
    random_access: bool = False
    trace: Path | None = None
    target: str = "slot"  # the key that names its target: slot, range or path


@dataclass
class Plan:
    """The largest state a run can reach: guest pages (slots ever present at once are
    bounded by all slots ever added), workloads, events."""

    pages_ever: int = 0
    slots_ever: int = 0
    start_ms: float = 0.0  # the latest migration.start_ms and timeout_s events may set
    timeout_s: float = 0.0
    workloads: list[WorkloadPlan] = field(default_factory=list)
    events: int = 0


def memslot_exists(sid: int) -> str:
    return (
        f"memslot {sid} exists; add_memslot creates a slot (move_memslot or set_memslot_flags "
        "change one)"
    )


class _Shadow:
    """Memslots and workloads as the run will have them, without guest memory."""

    def __init__(self, cfg: SessionCfg, base_dir: Path | None) -> None:
        self.cfg = cfg
        self.base_dir = base_dir
        self.geom = Geometry(cfg.geometry.granule, cfg.geometry.ipa_bits)
        self.page = self.geom.granule
        self.slots = Memslots(self.page.bit_length() - 1, cfg.geometry.ipa_bits)
        self.workloads: dict[str, tuple[Workload, WorkloadPlan, dict[str, Any]]] = {}
        self.plan = Plan()

    # -- memslots ---------------------------------------------------------------------------

    def set_slot(self, m: dict[str, Any], where: str, context: str = "") -> None:
        try:
            if m.get("backing") is not None:
                self.geom.leaf_level_for(m["backing"])
            old = self.find(m["id"])
            self.slots.set_user_memory_region(
                m["id"], m["base"], m["size"], _flags(m.get("flags", [])), m.get("backing")
            )
        except DirtylogError as exc:
            raise _renamed(exc, where, context) from None
        if old is None or old.npages != m["size"] // self.page:
            self.plan.pages_ever += m["size"] // self.page
        if len(self.slots) > MAX_SLOTS:
            raise ConfigError(
                f"{where}.id",
                f"would be memslot number {MAX_SLOTS + 1}; a session holds at most "
                f"{MAX_SLOTS} at once" + (f" ({context})" if context else ""),
            )
        self.plan.slots_ever = max(self.plan.slots_ever, len(self.slots))

    def find(self, sid: Any) -> Memslot | None:
        """The memslot with id ``sid`` (a whole number, not a bool), or None."""
        ok = isinstance(sid, int) and not isinstance(sid, bool) and sid in self.slots
        return self.slots.get(sid) if ok else None

    def slot(self, sid: Any, where: str, context: str, verb: str) -> Memslot:
        s = self.find(sid)
        if s is None:
            raise KvmError("EINVAL", where, f"there is no memslot {shown(sid)} to {verb}{context}")
        return s

    # -- workloads --------------------------------------------------------------------------

    def add_workload(self, spec: Any, where: str, context: str = "") -> None:
        try:
            w = make_workload(
                spec, self.cfg.seed, self.page, where, base_dir=self.base_dir, load=False
            )
        except ConfigError as exc:
            raise ConfigError(exc.field, exc.rule + context) from None
        if w.name in self.workloads:
            raise ConfigError(
                f"{where}.name", f"workload name {shown(w.name)} is used twice{context}"
            )
        if w.vcpu >= self.cfg.vcpus:
            raise ConfigError(
                f"{where}.vcpu", f"must be below vcpus ({self.cfg.vcpus}), got {w.vcpu}{context}"
            )
        plan = WorkloadPlan(where, w.kind, rate=_peak_rate(w))
        plan.random_access = bool(getattr(w, "random_access", False))
        plan.target = next((k for k in ("range", "slot", "path") if k in spec), "slot")
        if w.kind == "trace":
            plan.trace = trace_path(spec, where, self.base_dir)
            open_regular(plan.trace, f"{where}.path", "a trace is a .csv or .npz file").close()
        plan.pages = self._target_pages(spec, w, where, context)
        self.workloads[w.name] = (w, plan, spec)
        self.plan.workloads.append(plan)

    def _target_pages(self, spec: dict[str, Any], w: Workload, where: str, context: str) -> int:
        if "slot" in spec:
            s = self.find(spec["slot"])
            if s is None:
                raise ConfigError(
                    f"{where}.slot", f"there is no memslot {shown(spec['slot'])}{context}"
                )
            return s.npages
        if "range" in spec:
            return self._range_pages(spec["range"], f"{where}.range", context)
        if w.kind != "trace":
            raise ConfigError(
                where, 'needs a target: "slot" (a memslot id) or "range" (BASE:SIZE)' + context
            )
        return 0

    def _range_pages(self, text: Any, where: str, context: str) -> int:
        if not isinstance(text, str):
            raise ConfigError(where, f"expected BASE:SIZE, e.g. 0x40000000:1GiB, got {shown(text)}")
        base_text, sep, size_text = text.partition(":")
        if not sep:
            raise ConfigError(where, f"expected BASE:SIZE, e.g. 0x40000000:1GiB, got {shown(text)}")
        base, size = parse_size(base_text, where), parse_size(size_text, where)
        if base % self.page or size % self.page or size == 0:
            raise ConfigError(
                where, f"base and size must be whole, non-zero pages, got {shown(text)}"
            )
        inside = [s for s in self.slots.sorted() if s.base <= base and base + size <= s.end]
        if not inside:
            slots = ", ".join(f"[{s.base:#x}, {s.end:#x})" for s in self.slots.sorted()[:4])
            raise ConfigError(
                where,
                f"[{base:#x}, {base + size:#x}) does not lie inside one memslot"
                f" ({slots or 'there are none'}){context}",
            )
        return size // self.page

    def named(self, name: Any, where: str, context: str):
        entry = self.workloads.get(name) if isinstance(name, str) else None
        if entry is None:
            raise ConfigError(where, f"there is no workload named {shown(name)} then{context}")
        return entry


def _peak_rate(w: Workload) -> float:
    children = getattr(w, "children", None)
    if children:
        return max(c.rate for c, _ in children)
    return w.rate


def _renamed(exc: DirtylogError, where: str, context: str) -> DirtylogError:
    """A memslot refusal with the session's field path (KVM's names mapped to the session's)."""
    name = getattr(exc, "field", "")
    path = f"{where}.{_KVM_FIELDS.get(name, name)}" if name else where
    rule = getattr(exc, "rule", str(exc)) + (f" ({context})" if context else "")
    if isinstance(exc, KvmError):
        return KvmError(exc.errno_name, path, rule)
    return ConfigError(path, rule)


def preflight(cfg: SessionCfg, base_dir: Path | None = None) -> Plan:
    """Check the session's memslots, workloads and events against each other; the Plan."""
    sh = _Shadow(cfg, base_dir)
    for i, m in enumerate(cfg.memslots):
        sh.set_slot(m.model_dump(), f"memslots[{i}]")
    for i, spec in enumerate(cfg.workloads):
        sh.add_workload(spec, f"workloads[{i}]")
    order = sorted(range(len(cfg.events)), key=lambda i: cfg.events[i].t_ms)
    for i in order:
        ev = cfg.events[i].model_dump()
        _replay(sh, ev, f"events[{i}]")
    sh.plan.events = len(cfg.events)
    return sh.plan


def _replay(sh: _Shadow, ev: dict[str, Any], where: str) -> None:
    action, ctx = ev["action"], event_context(ev)
    own = validate_event(ev, where)
    note = f" ({ctx})"
    if action == "add_memslot":
        if own["id"] in sh.slots:
            raise ConfigError(f"{where}.id", memslot_exists(own["id"]) + note)
        sh.set_slot(own, where, ctx)
    elif action in ("delete_memslot", "move_memslot", "set_memslot_flags"):
        verb = {"delete_memslot": "delete", "move_memslot": "move"}.get(action, "change")
        s = sh.slot(own["id"], f"{where}.id", note, verb)
        if action == "delete_memslot":
            sh.slots.set_user_memory_region(s.id, s.base, 0)
            for name, (_, _, spec) in list(sh.workloads.items()):
                if spec.get("slot") == s.id:
                    del sh.workloads[name]
            return
        base = own.get("base", s.base)
        flags = own["flags"] if "flags" in own else _flag_names(s.flags)
        sh.set_slot(
            {"id": s.id, "base": base, "size": s.size, "flags": flags, "backing": s.backing},
            where,
            ctx,
        )
    elif action == "add_workload":
        sh.add_workload(own, where, note)
    elif action == "delete_workload":
        sh.named(own.get("workload"), f"{where}.workload", note)
        del sh.workloads[own["workload"]]
    elif action == "set_workload":
        w, plan, _ = sh.named(own.get("workload"), f"{where}.workload", note)
        params = {k: v for k, v in own.items() if k != "workload"}
        probe = KINDS[w.kind](w.name, 0, 0, sh.page, where)
        try:
            probe.set_params(**params)
        except ConfigError as exc:
            raise ConfigError(exc.field, exc.rule + note) from None
        plan.rate = max(plan.rate, probe.rate if "rate" in params else 0.0)
    elif action in ("pause_vcpu", "resume_vcpu"):
        if own["vcpu"] >= sh.cfg.vcpus:
            raise ConfigError(
                f"{where}.vcpu", f"must be below vcpus ({sh.cfg.vcpus}), got {own['vcpu']}{note}"
            )
    elif action == "cancel":
        if sh.cfg.migration.policy == "none":
            raise ConfigError(
                f"{where}.action", f"there is no migration to cancel (policy none){note}"
            )
    elif action == "harvest":
        m = sh.cfg.migration
        if m.policy == "none" or ev["t_ms"] <= m.start_ms:
            raise ConfigError(
                f"{where}.t_ms",
                "a harvest needs dirty logging on: a migration that has started "
                f"(migration.start_ms {m.start_ms:g}, policy {m.policy}){note}",
            )
    elif action == "set_migration":
        m = sh.cfg.migration
        if m.policy == "none":
            raise ConfigError(
                f"{where}.action", f"this session has no migration (policy none){note}"
            )
        plan = sh.plan
        plan.start_ms = max(plan.start_ms, m.start_ms, own.get("start_ms", 0.0))
        plan.timeout_s = max(plan.timeout_s, m.timeout_s, own.get("timeout_s", 0.0))
        if plan.start_ms / 1000 + plan.timeout_s > MAX_HORIZON_S:
            raise ConfigError(
                f"{where}.timeout_s",
                f"start_ms/1000 + timeout_s would reach {plan.start_ms / 1000 + plan.timeout_s:g} "
                f"s; a run is limited to {MAX_HORIZON_S} simulated seconds (one day){note}",
            )
    elif action == "set_tracking":
        t = sh.cfg.tracking
        if own.get("strategy") == "rmap" and not (t.strategy == "rmap" or t.compare):
            raise ConfigError(
                f"{where}.strategy",
                f"rmap needs the reverse map from the start of the run (tracking.strategy rmap "
                f"or tracking.compare){note}",
            )


def _flags(names: list[str]) -> int:
    return slot_flags("log_dirty" in names, "readonly" in names)


def _flag_names(flags: int) -> list[str]:
    bits = (("log_dirty", KVM_MEM_LOG_DIRTY_PAGES), ("readonly", KVM_MEM_READONLY))
    return [n for n, bit in bits if flags & bit]

"""``dirtylog perftest``: KVM's dirty_log_perf_test, run on the simulated VM.

The same options and the same report lines as tools/testing/selftests/kvm/dirty_log_perf_test.c
(memstress guest: every page of each vCPU's region per pass, write with probability -w %),
with one difference the output says plainly: the times are modelled (counts × the cost
model's unit costs), not measured on hardware.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from engine.kvm import dirtylog as DL
from engine.kvm.costs import CostModel
from engine.kvm.vm import VM, Tracking, slot_flags
from engine.stage2.geometry import Geometry
from engine.util.errors import ConfigError
from engine.util.units import parse_size

BACKINGS = {"anonymous": 4096, "anonymous_hugetlb_2mb": 2 << 20, "anonymous_hugetlb_1gb": 1 << 30}
GUEST_BASE = 1 << 32  # memstress places its region high in the IPA space
GUEST_WRITE_NS = 25.0  # a guest store to a page that is mapped writable (no exit)


@dataclass
class PerfOptions:
    bytes_per_vcpu: int = 1 << 30
    vcpus: int = 1
    iterations: int = 2
    write_percent: int = 100
    random_access: bool = False
    backing: str = "anonymous"
    slots: int = 1
    manual_protect: bool = True
    eager_split: int = 0
    seed: int = 1
    mode: str = "bitmap"
    strategy: str = "range"


def _fmt(ns: float) -> str:
    """The selftest's %ld.%.9lds."""
    ns = int(round(ns))
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}s"


class PerfTest:
    def __init__(self, o: PerfOptions) -> None:
        self.o = o
        self.costs = CostModel()
        mode = "manual-clear" if o.manual_protect and o.mode == "bitmap" else o.mode
        geom = Geometry(4096, 48)
        self.vm = VM(
            geom, Tracking(mode, o.strategy, eager_split=o.eager_split), self.costs, o.vcpus
        )
        self.page = geom.granule
        self.pages_per_vcpu = o.bytes_per_vcpu // self.page
        total = self.pages_per_vcpu * o.vcpus
        backing = BACKINGS[o.backing]
        per_slot = -(-total // o.slots)
        per_slot = -(-per_slot * self.page // backing) * backing // self.page  # whole backing pages
        self.slot_ids = []
        for i in range(o.slots):
            first = i * per_slot
            n = min(per_slot, total - first)
            if n <= 0:
                break
            self.vm.set_memslot(i + 1, GUEST_BASE + first * self.page, n * self.page, 0, backing)
            self.slot_ids.append(i + 1)
        self.rng = np.random.default_rng(o.seed)

    def _pass(self, write_percent: int) -> float:
        """One memstress pass of every vCPU; the slowest vCPU's modelled time."""
        n = self.pages_per_vcpu
        base = GUEST_BASE >> 12
        times = []
        gfns, vcpus, writes = [], [], []
        for v in range(self.o.vcpus):
            order = self.rng.permutation(n) if self.o.random_access else np.arange(n)
            gfns.append(base + v * n + order)
            vcpus.append(np.full(n, v))
            writes.append(self.rng.random(n) * 100 < write_percent)
        before = self.vm.pgt.splits
        res = self.vm.access(np.concatenate(gfns), np.concatenate(vcpus), np.concatenate(writes))
        splits = self.vm.pgt.splits - before
        for v in range(self.o.vcpus):
            t = n * GUEST_WRITE_NS + res.faults[v] * self.costs.fault_exit
            t += splits / self.o.vcpus * (self.costs.split_block + self.costs.tlbi_ipa_is)
            times.append(t)
        return max(times)

    def _ops_ns(self, start: int) -> float:
        return sum(op.model_ns(self.costs) for op in self.vm.op_log[start:])

    def run(self) -> list[str]:
        o = self.o
        lines = [
            "Times below are modelled (operation counts × the cost model's unit costs), "
            "not measured.",
            f"Testing guest mode: PA-bits:ANY, VA-bits:48, 4K pages; {o.vcpus} vCPU(s), "
            f"{o.bytes_per_vcpu >> 20} MiB each, backing {o.backing}, "
            f"{len(self.slot_ids)} memslot(s)",
            f"guest physical test memory: [{GUEST_BASE:#x}, "
            f"{GUEST_BASE + self.pages_per_vcpu * o.vcpus * self.page:#x})",
        ]
        lines.append(f"Populate memory time: {_fmt(self._pass(100))}")
        mark = len(self.vm.op_log)
        for sid in self.slot_ids:
            s = self.vm.slots[sid].slot
            self.vm.set_memslot(sid, s.base, s.size, slot_flags(log_dirty=True), s.backing)
        lines.append(f"Enabling dirty logging time: {_fmt(self._ops_ns(mark))}")
        lines.append("")
        get_total = clear_total = 0.0
        for it in range(1, o.iterations + 1):
            lines.append(f"Iteration {it} dirty memory time: {_fmt(self._pass(o.write_percent))}")
            mark = len(self.vm.op_log)
            logs = {sid: DL.get_dirty_log(self.vm, sid)[0] for sid in self.slot_ids}
            get_ns = self._ops_ns(mark)
            get_total += get_ns
            lines.append(f"Iteration {it} get dirty log time: {_fmt(get_ns)}")
            if self.vm.tracking.manual:
                mark = len(self.vm.op_log)
                for sid, words in logs.items():
                    DL.clear_dirty_log(self.vm, sid, 0, self.vm.slots[sid].slot.npages, words)
                clear_ns = self._ops_ns(mark)
                clear_total += clear_ns
                lines.append(f"Iteration {it} clear dirty log time: {_fmt(clear_ns)}")
        disable_ns = 0.0
        for sid in self.slot_ids:
            st = self.vm.slots[sid]
            disable_ns += st.nwords * self.costs.bitmap_word  # freeing the bitmap
            self.vm.set_memslot(sid, st.slot.base, st.slot.size, 0, st.slot.backing)
        lines.append(f"Disabling dirty logging time: {_fmt(disable_ns)}")
        n = o.iterations
        lines.append(
            f"Get dirty log over {n} iterations took {_fmt(get_total)}. "
            f"(Avg {_fmt(get_total / n)}/iteration)"
        )
        if self.vm.tracking.manual:
            lines.append(
                f"Clear dirty log over {n} iterations took {_fmt(clear_total)}. "
                f"(Avg {_fmt(clear_total / n)}/iteration)"
            )
        return lines


def cmd_perftest(args: argparse.Namespace) -> int:
    o = PerfOptions(
        bytes_per_vcpu=parse_size(args.b, "-b"),
        vcpus=args.v,
        iterations=args.i,
        write_percent=args.w,
        random_access=args.a,
        backing=args.s,
        slots=args.x,
        manual_protect=not args.g,
        eager_split=parse_size(args.e, "-e") if args.e else 0,
        seed=args.r,
        mode=args.mode,
        strategy=args.strategy,
    )
    _check(o)
    for line in PerfTest(o).run():
        print(line)
    return 0


def _check(o: PerfOptions) -> None:
    if o.vcpus < 1 or o.vcpus > 512:
        raise ConfigError("-v", f"vCPUs must be 1..512, got {o.vcpus}")
    if o.iterations < 2:
        raise ConfigError(
            "-i", f"iterations must be at least 2, as in the selftest; got {o.iterations}"
        )
    if not 0 <= o.write_percent <= 100:
        raise ConfigError("-w", f"write percentage must be 0..100, got {o.write_percent}")
    if o.bytes_per_vcpu < 4096 or o.bytes_per_vcpu % 4096:
        raise ConfigError(
            "-b", f"bytes per vCPU must be a positive multiple of 4KiB, got {o.bytes_per_vcpu}"
        )
    if o.bytes_per_vcpu * o.vcpus > 64 << 30:
        raise ConfigError(
            "-b", "more than 64 GiB of guest memory in all is not supported by perftest"
        )
    if o.slots < 1 or o.slots > 32766:
        raise ConfigError("-x", f"memslots must be 1..32766, got {o.slots}")
    if o.mode not in ("bitmap", "ring", "dbm"):
        raise ConfigError("--mode", "must be bitmap, ring or dbm")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perftest",
        help="dirty_log_perf_test on the model (modelled times)",
        description="KVM selftest dirty_log_perf_test's options and report, on the simulated "
        "VM: populate, enable logging, N iterations of dirtying + GET (+ CLEAR), disable. "
        "Times are modelled: operation counts × the cost model's unit costs.",
    )
    p.add_argument("-b", default="1G", help="bytes of guest memory per vCPU (default 1G)")
    p.add_argument("-v", type=int, default=1, help="number of vCPUs (default 1)")
    p.add_argument("-i", type=int, default=2, help="iterations, at least 2 (default 2)")
    p.add_argument("-w", type=int, default=100, help="write percentage 0..100 (default 100)")
    p.add_argument("-a", action="store_true", help="random access order instead of sequential")
    p.add_argument(
        "-s", default="anonymous", choices=sorted(BACKINGS), help="backing (default anonymous)"
    )
    p.add_argument("-x", type=int, default=1, help="number of memslots (default 1)")
    p.add_argument("-g", action="store_true", help="no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2")
    p.add_argument("-e", default="", help="eager split chunk size, e.g. 2M (default off)")
    p.add_argument("-r", type=int, default=1, help="random seed (default 1)")
    p.add_argument("--mode", default="bitmap", help="bitmap (default), ring or dbm")
    p.add_argument(
        "--strategy", default="range", choices=("range", "masked-skip", "visitor", "rmap")
    )
    p.set_defaults(func=cmd_perftest)

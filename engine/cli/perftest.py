"""``dirtylog perftest``: KVM's dirty_log_perf_test, run on the simulated VM.

The options and report lines of tools/testing/selftests/kvm/dirty_log_perf_test.c as of Linux
v6.17 (getopt string ``ab:c:eghi:m:nop:r:s:v:x:w:``) with the memstress guest of
lib/memstress.c: the test region sits at the top of the guest-physical space, each vCPU
walks its own part of it (or all of it with ``-o``), writing each page with probability
``-w`` %, after a first pass that writes every page.  KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 is
enabled with MANUAL_PROTECT_ENABLE | INITIALLY_SET unless ``-g``.  Every selftest option
either means the same here or is refused with a sentence naming it.  One difference the
output says plainly: the times are modelled (counts × the cost model's unit costs), not
measured on hardware.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from engine.cli.options import bounded_int
from engine.util.errors import ConfigError, shown
from engine.util.memory import check_fits
from engine.util.units import MiB, parse_size
from engine.util.units import selftest_seconds as _fmt

GUEST_WRITE_NS = 25.0  # a guest store to a page that is mapped writable (no exit)
MEMSTRESS_MEM_SLOT_INDEX = 1  # lib/memstress.c: the test slots are 1, 2, ...
DEFAULT_MODE = 6  # arm64's vm_mode_default with an IPA limit of 40 bits or more

# enum vm_guest_mode (tools/testing/selftests/kvm/include/kvm_util.h, v6.17):
# id -> (PA bits, VA bits, page size); the arm64 modes the model can run.
GUEST_MODES = {
    3: (48, 48, 4096),
    4: (48, 48, 16384),
    5: (48, 48, 65536),
    6: (40, 48, 4096),
    7: (40, 48, 16384),
    8: (40, 48, 65536),
    12: (36, 48, 4096),
    13: (36, 48, 16384),
    14: (36, 48, 65536),
}
REFUSED_MODES = {
    0: "PA-bits:52 (52-bit IPA needs LPA2, which the model does not have)",
    1: "PA-bits:52 (52-bit IPA needs LPA2, which the model does not have)",
    2: "PA-bits:52 (52-bit IPA needs LPA2, which the model does not have)",
    9: "PA-bits:ANY (an x86-64 mode)",
    10: "PA-bits:47, VA-bits:64 (an s390 mode)",
    11: "PA-bits:44, VA-bits:64 (an s390 mode)",
    15: "PA-bits:47, VA-bits:47 (a LoongArch mode)",
    16: "PA-bits:36, VA-bits:47 (a LoongArch mode)",
}
# -s backings (lib/test_util.c names) and the leaf size KVM maps them with, per granule:
# THP and hugetlb of the PMD size map level-2 blocks, 1 GiB hugetlb level-1 blocks (4K only).
BACKINGS = {
    "anonymous": {4096: 4096, 16384: 16384, 65536: 65536},
    "shmem": {4096: 4096, 16384: 16384, 65536: 65536},
    "anonymous_thp": {4096: 2 << 20, 16384: 32 << 20, 65536: 512 << 20},
    "anonymous_hugetlb_2mb": {4096: 2 << 20},
    "anonymous_hugetlb_32mb": {16384: 32 << 20},
    "anonymous_hugetlb_512mb": {65536: 512 << 20},
    "anonymous_hugetlb_1gb": {4096: 1 << 30},
}
REFUSED_OPTIONS = {
    "c": "-c (pin vCPU threads to physical CPUs) is refused: modelled times do not depend "
    "on where host threads run",
    "e": "-e (keep the vCPUs running while dirty logging is disabled) is refused: the model "
    "has no concurrency between the disabling ioctl and faulting vCPUs",
    "n": "-n (run the vCPUs nested, in L2) is refused: nested stage 2 is not modelled",
}


@dataclass
class PerfOptions:
    bytes_per_vcpu: int = 1 << 30
    vcpus: int = 1
    iterations: int = 2
    write_percent: int = 100
    random_access: bool = False
    backing: str = "anonymous"
    slots: int = 1
    manual_protect: bool = True  # MANUAL_PROTECT_ENABLE | INITIALLY_SET, as without -g
    overlap: bool = False
    modes: list[int] = field(default_factory=lambda: [DEFAULT_MODE])
    eager_split: int = 0
    seed: int = 1
    mode: str = "bitmap"
    strategy: str = "range"


def mode_string(mode_id: int) -> str:
    """vm_guest_mode_string: ``PA-bits:40,  VA-bits:48,  4K pages``."""
    pa, va, page = GUEST_MODES[mode_id]
    return f"PA-bits:{pa},  VA-bits:{va}, {page >> 10:2d}K pages"


class PerfTest:
    """One guest mode of the selftest on a fresh VM (numpy and the engine's KVM are imported
    when one is made, not when the ``dirtylog`` parser is built)."""

    def __init__(self, o: PerfOptions, mode_id: int = DEFAULT_MODE) -> None:
        import numpy as np

        from engine.kvm.costs import CostModel
        from engine.kvm.vm import VM, Tracking
        from engine.stage2.geometry import Geometry

        self.o = o
        self.mode_id = mode_id
        pa_bits, _, page = GUEST_MODES[mode_id]
        self.costs = CostModel()
        manual = o.manual_protect and o.mode == "bitmap"
        tracking = Tracking(
            "manual-clear" if manual else o.mode,
            o.strategy,
            eager_split=o.eager_split,
            initially_set=manual,
        )
        self.vm = VM(Geometry(page, pa_bits), tracking, self.costs, o.vcpus)
        self.page = page
        self.vcpu_pages = o.bytes_per_vcpu // page
        total = self.vcpu_pages * o.vcpus
        backing = BACKINGS[o.backing][page]
        # memstress_create_vm: the region at the top of guest-physical memory
        gpa = ((1 << pa_bits) // page - total - 1) * page
        self.gpa = gpa // backing * backing
        self.total = total
        per_slot = total // o.slots
        self.slot_ids = []
        for i in range(o.slots):
            sid = MEMSTRESS_MEM_SLOT_INDEX + i
            base = self.gpa + i * per_slot * page
            self.vm.set_memslot(sid, base, per_slot * page, 0, backing)
            self.slot_ids.append(sid)
        self.rng = np.random.default_rng(o.seed)

    def _pass(self, write_percent: int, random_access: bool) -> float:
        """One memstress pass of every vCPU; the slowest vCPU's modelled time in ns (the
        selftest times a pass until every vCPU has finished it): per vCPU, its stores ×
        ``GUEST_WRITE_NS`` + its fault exits × ``fault_exit`` + an equal share (1/vCPUs) of the
        pass's block splits × (``split_block`` + ``tlbi_ipa_is``, break-before-make)."""
        import numpy as np

        o = self.o
        n = self.total if o.overlap else self.vcpu_pages
        base = self.gpa // self.page
        gfns, vcpus, writes = [], [], []
        for v in range(o.vcpus):
            order = self.rng.permutation(n) if random_access else np.arange(n)
            start = base if o.overlap else base + v * n
            gfns.append(start + order)
            vcpus.append(np.full(n, v))
            writes.append(self.rng.random(n) * 100 < write_percent)
        before = self.vm.pgt.splits
        res = self.vm.access(np.concatenate(gfns), np.concatenate(vcpus), np.concatenate(writes))
        splits = self.vm.pgt.splits - before
        times = []
        for v in range(o.vcpus):
            t = n * GUEST_WRITE_NS + res.faults[v] * self.costs.fault_exit
            t += splits / o.vcpus * (self.costs.split_block + self.costs.tlbi_ipa_is)
            times.append(t)
        return max(times)

    def _ops_ns(self, start: int) -> float:
        """Modelled ns of the VM's operations since ``len(op_log) == start`` (counts × costs)."""
        return sum(op.model_ns(self.costs) for op in self.vm.op_log[start:])

    def run(self) -> list[str]:
        from engine.kvm import dirtylog as DL
        from engine.kvm.vm import slot_flags

        o = self.o
        size = self.total * self.page
        lines = [
            f"Testing guest mode: {mode_string(self.mode_id)}",
            f"guest physical test memory: [{self.gpa:#x}, {self.gpa + size:#x})",
            f"Populate memory time: {_fmt(self._pass(100, False))}",
        ]
        mark = len(self.vm.op_log)
        for sid in self.slot_ids:
            s = self.vm.slots[sid].slot
            self.vm.set_memslot(sid, s.base, s.size, slot_flags(log_dirty=True), s.backing)
        lines += [f"Enabling dirty logging time: {_fmt(self._ops_ns(mark))}", ""]
        # dirty_log_perf_test.c adds each iteration's printed timespec (whole ns) to a total
        # (timespec_add) and prints total / iterations truncated (timespec_div, lib/test_util.c)
        get_total = clear_total = 0
        for it in range(1, o.iterations + 1):
            dirty = self._pass(o.write_percent, o.random_access)
            lines.append(f"Iteration {it} dirty memory time: {_fmt(dirty)}")
            mark = len(self.vm.op_log)
            logs = {sid: DL.get_dirty_log(self.vm, sid)[0] for sid in self.slot_ids}
            get_ns = round(self._ops_ns(mark))
            get_total += get_ns
            lines.append(f"Iteration {it} get dirty log time: {_fmt(get_ns)}")
            if self.vm.tracking.manual:
                mark = len(self.vm.op_log)
                for sid, words in logs.items():
                    DL.clear_dirty_log(self.vm, sid, 0, self.vm.slots[sid].slot.npages, words)
                clear_ns = round(self._ops_ns(mark))
                clear_total += clear_ns
                lines.append(f"Iteration {it} clear dirty log time: {_fmt(clear_ns)}")
        disable_ns = 0.0
        for sid in self.slot_ids:
            st = self.vm.slots[sid]
            disable_ns += st.nwords * self.costs.bitmap_word  # freeing the bitmap, per word
            self.vm.set_memslot(sid, st.slot.base, st.slot.size, 0, st.slot.backing)
        lines.append(f"Disabling dirty logging time: {_fmt(disable_ns)}")
        n = o.iterations
        lines.append(
            f"Get dirty log over {n} iterations took {_fmt(get_total)}. "
            f"(Avg {_fmt(get_total // n)}/iteration)"
        )
        if self.vm.tracking.manual:
            lines.append(
                f"Clear dirty log over {n} iterations took {_fmt(clear_total)}. "
                f"(Avg {_fmt(clear_total // n)}/iteration)"
            )
        return lines


def cmd_perftest(args: argparse.Namespace) -> int:
    for opt, sentence in REFUSED_OPTIONS.items():
        if getattr(args, opt):
            raise ConfigError(f"-{opt}", sentence)
    o = PerfOptions(
        bytes_per_vcpu=parse_size(args.b, "-b"),
        vcpus=args.v,
        iterations=args.i,
        write_percent=args.w,
        random_access=args.a,
        backing=args.s,
        slots=args.x,
        manual_protect=not args.g,
        overlap=args.o,
        modes=args.m or [DEFAULT_MODE],
        eager_split=parse_size(args.eager_split, "--eager-split"),
        seed=args.r,
        mode=args.mode,
        strategy=args.strategy,
    )
    _check(o)
    if args.kvm:
        from engine.cli.kvm import perftest_on_kvm

        modelled = PerfTest(o, o.modes[0]).run() if args.compare else None
        return perftest_on_kvm(o, BACKINGS[o.backing].get(4096, 0), DEFAULT_MODE, modelled)
    print(
        "Times below are modelled (operation counts × the cost model's unit costs), not measured."
    )
    print(f"Test iterations: {o.iterations}")
    for mode_id in o.modes:
        for line in PerfTest(o, mode_id).run():
            print(line)
    return 0


PAGE_BYTES = 64  # per guest page: descriptor, versions, bitmaps and one pass's arrays
MAX_PAGE_PASSES = 2_000_000_000  # pages × (iterations + 1): a few minutes of work at most


def _check(o: PerfOptions) -> None:
    """The selftest's own checks (atoi_positive, TEST_ASSERT) and the model's limits."""
    if o.slots < 1 or o.slots > 32766:  # first: the guest modes' check divides by it
        raise ConfigError("-x", f"memslots must be 1..32766, got {o.slots}")
    for mode_id in o.modes:
        if mode_id in REFUSED_MODES:
            raise ConfigError("-m", f"guest mode {mode_id} is {REFUSED_MODES[mode_id]}")
        if mode_id not in GUEST_MODES:
            raise ConfigError("-m", f"guest mode ID {mode_id} is not 0..16")
        page = GUEST_MODES[mode_id][2]
        if page not in BACKINGS[o.backing]:
            raise ConfigError(
                "-s",
                f"{o.backing} has no stage-2 leaf size with {page >> 10}K pages (mode {mode_id})",
            )
        if o.bytes_per_vcpu % page:
            raise ConfigError(
                "-b", f"{o.bytes_per_vcpu} bytes is not a whole number of {page >> 10}K pages"
            )
        if (o.bytes_per_vcpu * o.vcpus // page) % o.slots:
            raise ConfigError("-x", f"guest memory cannot be evenly divided into {o.slots} slots")
    if o.vcpus < 1 or o.vcpus > 512:
        raise ConfigError(
            "-v", f"vCPUs must be 1..512 (KVM_CAP_MAX_VCPUS with GICv3), got {o.vcpus}"
        )
    if o.iterations < 2:
        raise ConfigError(
            "-i", f"iterations must be at least 2, as in the selftest; got {o.iterations}"
        )
    bounded_int(o.iterations, "-i", 2, 10_000, "iterations")
    if not 0 <= o.write_percent <= 100:
        raise ConfigError("-w", f"write percentage must be 0..100, got {o.write_percent}")
    if o.bytes_per_vcpu <= 0:
        raise ConfigError("-b", f"bytes per vCPU must be positive, got {o.bytes_per_vcpu}")
    if o.bytes_per_vcpu * o.vcpus > 64 << 30:
        raise ConfigError(
            "-b", "more than 64 GiB of guest memory in all is not supported by perftest"
        )
    if o.slots < 1 or o.slots > 32766:
        raise ConfigError("-x", f"memslots must be 1..32766, got {o.slots}")
    if o.seed < 1:
        raise ConfigError(
            "-r", f"the random seed must be positive, as in the selftest; got {o.seed}"
        )
    if o.mode not in ("bitmap", "ring", "dbm"):
        raise ConfigError("--mode", f"must be bitmap, ring or dbm, got {shown(o.mode)}")
    pages = o.bytes_per_vcpu * o.vcpus // 4096  # at most: 4K is the smallest page
    check_fits(256 * MiB + pages * PAGE_BYTES, "-b", f"this test ({pages:,} guest pages)")
    if pages * (o.iterations + 1) > MAX_PAGE_PASSES:
        raise ConfigError(
            "-i",
            f"{o.iterations} iterations over {pages:,} pages is {pages * (o.iterations + 1):,} "
            f"page accesses, more than the limit of {MAX_PAGE_PASSES:,}; lower -i or -b",
        )


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "perftest",
        help="dirty_log_perf_test on the model (modelled times)",
        description="KVM selftest dirty_log_perf_test (Linux v6.17) with its options and "
        "report, on the simulated VM: populate, enable logging, N iterations of dirtying + "
        "GET (+ CLEAR), disable. Times are modelled: operation counts × the cost model's "
        "unit costs. -c, -e and -n are refused (see each); without -m the selftest runs "
        "every mode the host supports, this runs mode 6 (arm64's default).",
    )
    p.add_argument("-a", action="store_true", help="access memory randomly rather than in order")
    p.add_argument(
        "-b", default="1G", help="bytes of memory dirtied by each vCPU, e.g. 10M or 3G (default 1G)"
    )
    p.add_argument("-c", default="", metavar="CPUS", help=REFUSED_OPTIONS["c"])
    p.add_argument("-e", action="store_true", help=REFUSED_OPTIONS["e"])
    p.add_argument(
        "-g",
        action="store_true",
        help="do not enable KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2: GET clears the log and writes "
        "are tracked from enable on (no INITIALLY_SET)",
    )
    p.add_argument("-i", type=int, default=2, help="iterations, at least 2 (default 2)")
    p.add_argument(
        "-m",
        type=int,
        action="append",
        metavar="MODE",
        help="guest mode ID, repeatable: 3-5 PA-bits:48, 6-8 PA-bits:40, 12-14 PA-bits:36, "
        "with 4K, 16K, 64K pages each (default 6)",
    )
    p.add_argument("-n", action="store_true", help=REFUSED_OPTIONS["n"])
    p.add_argument(
        "-o",
        action="store_true",
        help="overlap the vCPUs' accesses instead of partitioning the memory",
    )
    p.add_argument(
        "-p",
        default="0",
        metavar="OFFSET",
        help="guest physical test memory offset: accepted and ignored, as the v6.17 selftest "
        "parses it and never uses it",
    )
    p.add_argument("-r", type=int, default=1, help="random seed, positive (default 1)")
    p.add_argument(
        "-s",
        default="anonymous",
        choices=sorted(BACKINGS),
        help="backing memory (default anonymous); THP and PMD-size hugetlb map blocks",
    )
    p.add_argument("-v", type=int, default=1, help="number of vCPUs (default 1)")
    p.add_argument(
        "-x", type=int, default=1, help="split the memory into this many memslots (default 1)"
    )
    p.add_argument(
        "-w", type=int, default=100, help="percentage of pages written, 0..100 (default 100)"
    )
    p.add_argument(
        "--eager-split",
        default="0",
        metavar="SIZE",
        help="KVM_CAP_ARM_EAGER_SPLIT_CHUNK_SIZE: 0 (off) or a block size of the granule "
        "(not a selftest option; the selftest's -e is a different thing)",
    )
    p.add_argument(
        "--mode", default="bitmap", help="bitmap (default), ring or dbm (not selftest options)"
    )
    p.add_argument(
        "--strategy", default="range", choices=("range", "masked-skip", "visitor", "rmap")
    )
    p.add_argument(
        "--kvm",
        action="store_true",
        help="run the memstress guest on this host's real KVM: measured times (x86-64)",
    )
    p.add_argument(
        "--compare", action="store_true", help="with --kvm: each line's modelled time beside it"
    )
    p.set_defaults(func=cmd_perftest)

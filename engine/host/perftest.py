"""dirty_log_perf_test's memstress guest on the host's real KVM, with **measured** times.

The same phases as the selftest (tools/testing/selftests/kvm/dirty_log_perf_test.c): populate
memory, enable dirty logging, N iterations of (dirty memory, KVM_GET_DIRTY_LOG, with manual
protect KVM_CLEAR_DIRTY_LOG over the whole slot), disable logging.  Manual protect is
enabled with MANUAL_PROTECT_ENABLE | INITIALLY_SET unless ``-g``, as the selftest does.  Each
vCPU writes every page of its own region per pass (of the whole memory with ``-o``; in
order, or shuffled with random access; a page is read instead of written with probability
1 - write %).  The guest mode is the host's own (x86-64, 4 KiB pages).  The vCPUs run one
after the other from one thread, so a pass's time is the slowest vCPU's ``KVM_RUN`` wall
time (the selftest runs them in parallel and waits for all).  Ioctl times are wall times
from Python (each includes ~2-4 µs of Python).  In ring mode the "get dirty log" time is
collect + KVM_RESET_DIRTY_RINGS.
"""

from __future__ import annotations

import time

import numpy as np

from engine.host.machine import PAGE, READ_FLAG, Machine
from engine.host.replay import MAX_GUEST_BYTES
from engine.host.uapi import KVM_MEM_LOG_DIRTY_PAGES
from engine.util.errors import ConfigError
from engine.util.units import selftest_seconds as fmt

GUEST_BASE = 1 << 32  # memstress places its region high in guest-physical memory
HUGE = 2 << 20


class KvmPerfTest:
    """One run; ``o`` holds the selftest's options (``engine.cli.perftest.PerfOptions``)."""

    def __init__(self, o, backing_bytes: int, default_mode: int) -> None:
        total = o.bytes_per_vcpu * o.vcpus
        if total > MAX_GUEST_BYTES:
            raise ConfigError(
                "-b", f"--kvm maps at most {MAX_GUEST_BYTES >> 30} GiB of guest memory in all"
            )
        if o.mode not in ("bitmap", "ring"):
            raise ConfigError("--mode", f"{o.mode} has no x86 counterpart for --kvm")
        if list(o.modes) != [default_mode]:
            raise ConfigError("-m", "--kvm runs the host's own guest mode (x86-64, 4K pages)")
        if not backing_bytes:
            raise ConfigError("-s", f"{o.backing} cannot back 4K pages on this host")
        if o.bytes_per_vcpu % PAGE:
            raise ConfigError("-b", "bytes per vCPU must be a multiple of 4KiB")
        self.o = o
        self.manual = o.manual_protect and o.mode == "bitmap"
        self.ring = 65536 if o.mode == "ring" else 0
        self.hugepage = backing_bytes >= HUGE
        self.pages_per_vcpu = o.bytes_per_vcpu // PAGE
        self.rng = np.random.default_rng(o.seed)

    def _layout(self) -> list[tuple[int, int, int]]:
        """(slot, gpa, pages) of each memslot: the memory split evenly, as memstress does."""
        per = self.pages_per_vcpu * self.o.vcpus // self.o.slots
        return [(i + 1, GUEST_BASE + i * per * PAGE, per) for i in range(self.o.slots)]

    def _pass(self, m: Machine, write_percent: int) -> int:
        """One memstress pass; the slowest vCPU's KVM_RUN wall time (ns)."""
        o = self.o
        n = self.pages_per_vcpu * (o.vcpus if o.overlap else 1)
        worst = 0
        for v in range(o.vcpus):
            order = self.rng.permutation(n) if o.random_access else np.arange(n)
            start = 0 if o.overlap else v * n
            addr = GUEST_BASE + PAGE * (start + order).astype(np.uint64)
            reads = self.rng.random(n) * 100 >= write_percent
            addr[reads] |= np.uint64(READ_FLAG)
            worst = max(worst, m.run(v, addr).wall_ns)
        return worst

    def run(self) -> list[str]:
        o = self.o
        lines: list[str] = []
        slots = self._layout()
        with Machine(
            nr_vcpus=o.vcpus, manual=self.manual, initially_set=self.manual, ring_entries=self.ring
        ) as m:
            for sid, gpa, n in slots:
                m.add_slot(sid, gpa, n * PAGE, 0, hugepage=self.hugepage)
            lines.append(f"Populate memory time: {fmt(self._pass(m, 100))}")
            enable = 0
            for sid, _, _ in slots:
                m.set_flags(sid, KVM_MEM_LOG_DIRTY_PAGES)
                enable += m.last_ns
            lines.append(f"Enabling dirty logging time: {fmt(enable)}")
            lines.append("")
            get_total = clear_total = 0
            for it in range(1, o.iterations + 1):
                lines.append(
                    f"Iteration {it} dirty memory time: {fmt(self._pass(m, o.write_percent))}"
                )
                get_ns, logs = self._get(m, slots)
                get_total += get_ns
                lines.append(f"Iteration {it} get dirty log time: {fmt(get_ns)}")
                if self.manual:
                    clear_ns = 0
                    for (sid, _, n), words in zip(slots, logs, strict=True):
                        m.clear_dirty_log(sid, 0, n, words)
                        clear_ns += m.last_ns
                    clear_total += clear_ns
                    lines.append(f"Iteration {it} clear dirty log time: {fmt(clear_ns)}")
            disable = 0
            for sid, _, _ in slots:
                m.set_flags(sid, 0)
                disable += m.last_ns
            lines.append(f"Disabling dirty logging time: {fmt(disable)}")
        # the selftest's average truncates: timespec_div (tools/testing/selftests/kvm/lib/
        # test_util.c) divides the whole-ns total by the iterations, as the modelled command does
        n = o.iterations
        lines.append(
            f"Get dirty log over {n} iterations took {fmt(get_total)}. "
            f"(Avg {fmt(get_total // n)}/iteration)"
        )
        if self.manual:
            lines.append(
                f"Clear dirty log over {n} iterations took {fmt(clear_total)}. "
                f"(Avg {fmt(clear_total // n)}/iteration)"
            )
        return lines

    def _get(self, m: Machine, slots) -> tuple[int, list[np.ndarray]]:
        if self.ring:
            t0 = time.perf_counter_ns()
            m.collect_rings()
            m.reset_rings()
            return time.perf_counter_ns() - t0, []
        logs, total = [], 0
        for sid, _, _ in slots:
            logs.append(m.get_dirty_log(sid))
            total += m.last_ns
        return total, logs

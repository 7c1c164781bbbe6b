"""``dirtylog kvm``: the host's real KVM — ``info``, ``replay`` and ``calibrate``.

Exit status: 0 done (replay: every harvest identical), 1 replay found differences, 2 bad
input, 3 the host's KVM cannot be used (the reason in one sentence).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from engine.cli.options import bounded_int, output_file

EXIT_DIFFERENT = 1
EXIT_UNAVAILABLE = 3


def add_parser(sub) -> None:
    p = sub.add_parser(
        "kvm",
        help="the host's real /dev/kvm: info, replay a session, calibrate unit costs",
        description="Use this host's own KVM as ground truth (replay, compare) and measure its "
        "costs. Exit 0 ok/identical, 1 different, 2 bad input, 3 KVM unavailable.",
    )
    kvm_sub = p.add_subparsers(dest="kvm_command", required=True, parser_class=type(p))
    info = kvm_sub.add_parser("info", help="API version, dirty-logging capabilities, MMU kind")
    info.add_argument("--json", action="store_true", help="print the facts as JSON")
    info.set_defaults(func=cmd_info)
    rp = kvm_sub.add_parser(
        "replay",
        help="run a session in the engine and replay its KVM operations on the host's KVM",
        description="Runs SESSION in the engine, replays every KVM-visible operation in the "
        "same order on a real VM (memslots, logging on/off, each tick's accesses, GET, CLEAR "
        "with the engine's arguments, ring collect/reset) and compares every harvest. "
        "Exit 0 identical, 1 different, 2 bad input, 3 KVM unavailable.",
    )
    rp.add_argument("session", help="session file (JSON)")
    rp.add_argument("--json", metavar="OUT", help="write the comparison per round as JSON")
    rp.add_argument("-q", "--quiet", action="store_true", help="only the summary")
    rp.set_defaults(func=cmd_replay)
    cal = kvm_sub.add_parser(
        "calibrate",
        help="measure this host's unit costs of dirty logging and write a costs profile",
        description="Measures on the host's real KVM: fault exit and re-entry, GET per word "
        "and per dirty page, CLEAR, enable per mapped page, ring push and reset per entry "
        "(median and min-max over the repeats; Python's cost per ioctl is measured and "
        "subtracted). --json writes them with a `costs` object that a session's `costs` "
        "takes as it is.",
    )
    cal.add_argument("--json", metavar="FILE", help="write figures and the costs profile")
    cal.add_argument("--pages", type=int, default=None, help="pages in the measured slot")
    cal.add_argument("--repeats", type=int, default=5, help="fresh VMs per figure (default 5)")
    cal.set_defaults(func=cmd_calibrate)


def _unusable(command: str) -> bool:
    """True, with the reason on stderr as ``dirtylog COMMAND: reason``, when the host's KVM
    cannot be used (the caller exits EXIT_UNAVAILABLE)."""
    from engine.host.device import unavailable_reason

    reason = unavailable_reason()
    if reason:
        print(f"dirtylog {command}: {reason}", file=sys.stderr)
    return bool(reason)


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the host's KVM offers for dirty logging (all read from it, none modelled)."""
    if _unusable("kvm info"):
        return EXIT_UNAVAILABLE
    from engine.host.device import probe
    from engine.host.native import check_native

    info = probe()
    native = check_native()
    if args.json:
        print(json.dumps({**info.as_dict(), "native": native.as_dict()}, indent=2))
        return 0
    ring = info.dirty_ring_max_bytes
    print(f"host KVM (real, read from /dev/kvm on this {info.arch} host)")
    print(f"  API version                     {info.api_version}")
    print(f"  MMU                             {info.mmu}")
    print(f"  modules                         {', '.join(info.modules) or '(none visible)'}")
    manual = {0: "not supported", 1: "enable", 3: "enable + initially-set"}
    print(
        f"  MANUAL_DIRTY_LOG_PROTECT2       {info.manual_protect2} "
        f"({manual.get(info.manual_protect2, 'flags')})"
    )
    print(
        "  DIRTY_LOG_RING                  "
        + (
            f"up to {ring:,} bytes ({ring // 16:,} entries; at least 4,096 bytes, a power of two)"
            if ring
            else "0 (not supported)"
        )
    )
    print(f"  DIRTY_LOG_RING_ACQ_REL          {info.dirty_ring_acq_rel_max_bytes:,} bytes")
    print(
        f"  DIRTY_LOG_RING_WITH_BITMAP      {info.ring_with_bitmap}"
        + ("" if info.ring_with_bitmap else " (no backup bitmap: vcpu -1 writes cannot be logged)")
    )
    print(
        f"  ARM_EAGER_SPLIT_CHUNK_SIZE      {info.eager_split}"
        + ("" if info.eager_split else " (arm64 only)")
    )
    eps = info.parameters.get("kvm.eager_page_split")
    if eps is not None:
        print(
            f"  kvm.eager_page_split            {eps}"
            + (
                " (applies to the TDP MMU only)"
                if info.parameters.get("kvm.tdp_mmu") == "N"
                else ""
            )
        )
    print(f"  NR_MEMSLOTS                     {info.nr_memslots:,}")
    print(f"  guest writer                    {native.sentence()}")
    return 0


# -- replay -----------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    """Engine run, real replay, one line per harvest and a verdict."""
    output_file(args.json, "--json")  # before the run and the replay, not after
    if _unusable("kvm replay"):
        return EXIT_UNAVAILABLE
    from engine.host.replay import check_replayable, record_run, replay, setup_of
    from engine.migration.simulation import Simulation

    sim = Simulation.from_file(args.session, track_last_sent=False)
    setup = setup_of(sim)
    check_replayable(setup, [])  # granule and mode, before running the engine
    ops = record_run(sim)
    report = replay(setup, ops)
    if args.json:
        from engine.cli.run import _write_text

        _write_text(args.json, json.dumps(report.as_dict(), indent=2) + "\n")
    print_report(report, quiet=args.quiet)
    return 0 if report.identical else EXIT_DIFFERENT


def _ms(ns: float) -> str:
    return f"{ns / 1e6:.3f}"


def print_report(report, quiet: bool = False) -> None:
    s = report.setup
    print(
        f"replay on this host's real KVM ({report.host.get('arch')}, {report.host.get('mmu')}): "
        f"mode {s.mode}{' + initially-set' if s.initially_set else ''}"
        f"{f' ({s.ring_entries} entries)' if s.mode == 'ring' else ''}, {s.vcpus} vCPU(s), "
        f"engine strategy {s.strategy}"
    )
    if not quiet:
        print(
            "round   t (ms)  pages engine/real  verdict    faults real/model  "
            "ring-full real/model  ring entries real/model  GET ms real/model  "
            "CLEAR ms real/model (calls)  reset ms real/model"
        )
        for r in report.rounds:
            eng = sum(d.engine_pages for d in r.slots.values())
            real = sum(d.real_pages for d in r.slots.values())
            verdict = "identical" if r.identical else "DIFFERENT"
            print(
                f"{r.round:5d} {r.t_ns / 1e6:8.1f}  {eng:>8,}/{real:<8,}  {verdict:9s}  "
                f"{r.faults_real:>8,}/{r.faults_model:<8,}  "
                f"{r.ring_full_real:>9,}/{r.ring_full_model:<9,}  "
                f"{r.ring_entries_real:>11,}/{r.ring_entries_model:<11,}  "
                f"{_ms(r.get_real_ns):>8}/{_ms(r.get_model_ns):<8}  "
                f"{_ms(r.clear_real_ns):>8}/{_ms(r.clear_model_ns):<8} ({r.clear_calls})  "
                f"{_ms(r.reset_real_ns):>8}/{_ms(r.reset_model_ns):<8}"
            )
            for sid, d in r.slots.items():
                if not d.identical:
                    print(
                        f"        slot {sid}: {d.n_only_engine:,} page(s) only in the engine "
                        f"{d.only_engine}, {d.n_only_real:,} only in the real KVM {d.only_real}"
                    )
            if r.gets_different:
                print(f"        {r.gets_different} GET bitmap(s) differ")
    n = len(report.rounds)
    bad = sum(not r.identical for r in report.rounds)
    print(
        "times: real = measured on this host (wall time of each ioctl, including Python's "
        "~2-4 µs per call); model = the engine's modelled cost (arm64 unit costs)"
    )
    for note in report.notes:
        print(f"note: {note}")
    if report.content_mismatches:
        print(f"memory: {report.content_mismatches:,} page(s) hold a different write count")
    print(
        f"{n} harvest(s): "
        + ("every one identical" if not bad else f"{bad} different")
        + (", memory content identical" if not report.content_mismatches else "")
    )


# -- calibrate --------------------------------------------------------------------------------


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Measure, print the figures and the profile, optionally write them as JSON."""
    if args.pages is not None:  # bad input is exit 2 whether or not KVM is usable
        bounded_int(args.pages, "--pages", 256, 1 << 18, "pages in the measured slot (4 KiB each)")
    bounded_int(args.repeats, "--repeats", 1, 100, "fresh VMs per figure")
    output_file(args.json, "--json")  # before measuring, without writing anything yet
    if _unusable("kvm calibrate"):
        return EXIT_UNAVAILABLE
    from engine.host.calibrate import DEFAULT_PAGES, calibrate, costs_profile
    from engine.host.device import probe
    from engine.kvm.costs import CostModel

    pages = DEFAULT_PAGES if args.pages is None else args.pages
    info = probe()
    load = os.getloadavg()[0]
    print(
        f"measured on this host's real KVM ({info.arch}, {info.mmu}); {pages} pages, "
        f"{args.repeats} repeats, load average {load:.1f} on {os.cpu_count()} CPUs"
    )
    figures = calibrate(pages, args.repeats)
    print(f"{'figure':22s} {'median':>12s} {'min':>12s} {'max':>12s}  per")
    for f in figures:
        d = f.as_dict()
        print(
            f"{f.name:22s} {d['median_ns']:>9,.1f} ns {d['min_ns']:>9,.1f} ns "
            f"{d['max_ns']:>9,.1f} ns  {f.per}"
        )
    profile = costs_profile(figures)
    CostModel.from_dict(profile)  # the profile is a valid session `costs` object
    defaults = CostModel().as_dict()
    print("costs profile (measured here, x86) vs the engine's arm64 defaults (modelled):")
    for k, v in profile.items():
        print(f"  {k:18s} {v:>10,.1f} ns   (default {defaults[k]:,.1f} ns)")
    if args.json:
        from engine.cli.run import _write_text

        doc = {
            "format": "dirtylog-costs",
            "host": {"arch": info.arch, "mmu": info.mmu, "loadavg": load, "cpus": os.cpu_count()},
            "pages": pages,
            "repeats": args.repeats,
            "figures": {f.name: f.as_dict() for f in figures},
            "costs": profile,
            "note": "measured on this host's real KVM; `costs` is a session costs object",
        }
        _write_text(args.json, json.dumps(doc, indent=2) + "\n")
    return 0


# -- perftest --kvm -----------------------------------------------------------------------------


def perftest_on_kvm(o, backing_bytes: int, default_mode: int, modelled: list[str] | None) -> int:
    """``dirtylog perftest --kvm [--compare]``: the selftest's lines, measured on this host.

    ``o`` is perftest's PerfOptions; ``default_mode`` the guest mode it runs without -m."""
    if _unusable("perftest --kvm"):
        return EXIT_UNAVAILABLE
    from engine.host.device import probe
    from engine.host.perftest import KvmPerfTest

    test = KvmPerfTest(o, backing_bytes, default_mode)
    info = probe()
    print(
        f"Times below are measured on this host's real KVM ({info.arch}, {info.mmu}): wall "
        "time of each ioctl from Python; vCPUs run one after the other, a pass is the slowest"
        + ("; [modelled …] is the engine's figure for the same line" if modelled else "")
        + "."
    )
    model = {}
    for line in modelled or []:
        head, sep, value = line.partition(" took " if " took " in line else ": ")
        if sep:
            model[head] = value
    for line in test.run():
        head, sep, _ = line.partition(" took " if " took " in line else ": ")
        if sep and head in model:
            line += f"   [modelled {model[head].split('. (')[0].rstrip('.')}]"
        print(line)
    return 0

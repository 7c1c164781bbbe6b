"""``dirtylog kvm``: the host's real KVM — ``info``, ``replay`` and ``calibrate``.

Exit status: 0 done (replay: every harvest identical), 1 replay found differences, 2 bad
input, 3 the host's KVM cannot be used (the reason in one sentence).
"""

from __future__ import annotations

import argparse
import json
import sys

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


def _unavailable() -> str | None:
    from engine.host.device import unavailable_reason

    return unavailable_reason()


def cmd_info(args: argparse.Namespace) -> int:
    """Print what the host's KVM offers for dirty logging (all read from it, none modelled)."""
    reason = _unavailable()
    if reason:
        print(f"dirtylog kvm info: {reason}", file=sys.stderr)
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

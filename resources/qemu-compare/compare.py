"""A real QEMU migration side by side with the engine on the matching session.

Usage (as root on a host with /dev/kvm; installs qemu-system-x86 with apt-get if missing):

    .venv/bin/python resources/qemu-compare/compare.py --mem 64 --region 32 --rate 3500

The guest (``guest_dirty.S``, a multiboot kernel on QEMU's ``microvm`` machine) touches every
page of a region once, then writes one word per 4 KiB page of it, in order and wrapping, at
``--rate`` pages/s paced by the TSC.  QEMU migrates it to a second QEMU listening on
127.0.0.1 (``--to exec``: to ``exec:cat > /dev/null``) with ``max-bandwidth`` and
``downtime-limit`` set, and ``query-migrate`` is polled every 50 ms.
The engine runs the same guest: three slots (below the region never written: zero pages; the
region written; above it never written), a ``sequential`` workload at the same rate, the
same release (``--qemu``, the installed QEMU's), bandwidth and limit — once with
``max-bandwidth`` and once with the bandwidth real QEMU achieved (``mbps``), since on a busy
host the real sender may stay below the limit.  Prints one JSON object: real, then modelled.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REGION_BASE_MIB = 16


def ensure_qemu() -> str:
    """The QEMU binary, installed with apt-get when missing (an optional system tool)."""
    exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        subprocess.run(["apt-get", "update"], check=True)
        subprocess.run(
            ["apt-get", "install", "-y", "--no-install-recommends", "qemu-system-x86"], check=True
        )
        exe = shutil.which("qemu-system-x86_64")
    if exe is None:
        sys.exit("qemu-system-x86_64 is not available and could not be installed")
    return exe


def tsc_hz() -> float:
    """This host's TSC rate (``cpu MHz`` with constant_tsc), which a KVM guest's TSC runs at."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("cpu MHz"):
            return float(line.split(":")[1]) * 1e6
    sys.exit("no 'cpu MHz' in /proc/cpuinfo")


def build_guest(work: Path, rate: int, region_mib: int) -> Path:
    elf = work / "guest.elf"
    obj = work / "guest.o"
    syms = {
        "REGION_BASE": REGION_BASE_MIB << 20,
        "REGION_PAGES": region_mib * 256,
        "TSC_PER_PAGE": int(tsc_hz() / rate),
    }
    defs = [a for k, v in syms.items() for a in ("--defsym", f"{k}={v}")]
    subprocess.run(["as", "--32", *defs, str(HERE / "guest_dirty.S"), "-o", str(obj)], check=True)
    subprocess.run(
        ["ld", "-m", "elf_i386", "-Ttext", "0x100000", "-e", "_start", "-o", str(elf), str(obj)],
        check=True,
    )
    return elf


class Qmp:
    def __init__(self, path: Path) -> None:
        for _ in range(100):
            if path.exists():
                break
            time.sleep(0.1)
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.f = self.sock.makefile("rw")
        self.f.readline()  # the greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name: str, **args) -> dict:
        self.f.write(json.dumps({"execute": name, "arguments": args}) + "\n")
        self.f.flush()
        while True:
            reply = json.loads(self.f.readline())
            if "return" in reply or "error" in reply:
                return reply


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_migration(args, elf: Path, work: Path) -> dict:
    sock = work / "qmp.sock"
    accel = "kvm" if os.path.exists("/dev/kvm") else "tcg"
    machine = [ensure_qemu(), "-accel", accel, "-machine", "microvm", "-m", str(args.mem),
               "-smp", "1", "-kernel", str(elf), "-display", "none", "-nodefaults"]  # fmt: skip
    qemu = subprocess.Popen(
        [*machine, "-qmp", f"unix:{sock},server=on,wait=off"], stderr=subprocess.DEVNULL
    )
    dest = None
    uri = "exec:cat > /dev/null"
    if args.to == "qemu":  # a second QEMU on 127.0.0.1, as a real migration goes
        port = free_port()
        uri = f"tcp:127.0.0.1:{port}"
        dest = subprocess.Popen(
            [*machine, "-incoming", uri], stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
        )
        time.sleep(1.0)  # listening
    try:
        qmp = Qmp(sock)
        time.sleep(args.warmup)
        params = {"max-bandwidth": args.bandwidth, "downtime-limit": args.downtime}
        qmp.cmd("migrate-set-parameters", **params)
        t0 = time.monotonic()
        qmp.cmd("migrate", uri=uri)
        syncs = []
        while True:
            info = qmp.cmd("query-migrate")["return"]
            ram = info.get("ram", {})
            count = ram.get("dirty-sync-count")
            if count and (not syncs or syncs[-1][1] != count):
                syncs.append((round(time.monotonic() - t0, 3), count, ram.get("remaining")))
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            if time.monotonic() - t0 > args.timeout:
                qmp.cmd("migrate_cancel")
                break
            time.sleep(0.05)
        qmp.cmd("quit")
    finally:
        qemu.wait(timeout=30)
        if dest is not None:
            dest.terminate()
            dest.wait(timeout=30)
    return {"query_migrate": info, "syncs_seen": syncs, "accel": accel, "uri": uri}


def engine_run(args, bandwidth: float) -> dict:
    from engine.migration.simulation import Simulation

    above = args.mem - REGION_BASE_MIB - args.region
    slots = [
        {"id": 0, "base": "0x0", "size": f"{REGION_BASE_MIB}MiB", "populate": False},
        {"id": 1, "base": hex(REGION_BASE_MIB << 20), "size": f"{args.region}MiB"},
    ]
    if above > 0:
        base = (REGION_BASE_MIB + args.region) << 20
        slots.append({"id": 2, "base": hex(base), "size": f"{above}MiB", "populate": False})
    for s in slots:
        s["flags"] = ["log_dirty"]
    session = {
        "format": "dirtylog-session",
        "version": 2,
        "name": "qemu-compare",
        "tick_ms": 1,
        "vcpus": 1,
        "memslots": slots,
        "workloads": [
            {"name": "seq", "kind": "sequential", "vcpu": 0, "slot": 1, "rate": args.rate}
        ],
        "migration": {
            "qemu": args.qemu,
            "bandwidth": bandwidth,
            "downtime_limit_ms": args.downtime,
            "start_ms": args.warmup * 1000,
            "max_rounds": 100_000,
            "timeout_s": args.timeout,
        },
    }
    out = Simulation.from_dict(session).run()
    keys = ("outcome", "dirty_sync_count", "total_time_ms", "downtime_ms", "transferred_bytes")
    return {k: out[k] for k in (*keys, "normal", "duplicate", "expected_downtime_ms")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mem", type=int, default=64, help="guest MiB")
    p.add_argument("--region", type=int, default=32, help="MiB written, from 16 MiB up")
    p.add_argument("--rate", type=int, default=3500, help="pages written per second")
    p.add_argument("--bandwidth", type=int, default=16 << 20, help="max-bandwidth, bytes/s")
    p.add_argument("--downtime", type=int, default=300, help="downtime-limit, ms")
    p.add_argument("--qemu", default="7.2", help="the installed QEMU's release, for the engine")
    p.add_argument("--warmup", type=float, default=1.0, help="s the guest runs before migrate")
    p.add_argument("--timeout", type=float, default=120.0, help="s before giving up")
    p.add_argument(
        "--to",
        choices=["qemu", "exec"],
        default="qemu",
        help="a second QEMU on 127.0.0.1 (-incoming tcp:) or exec:cat > /dev/null",
    )
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        real = real_migration(args, build_guest(work, args.rate, args.region), work)
    qm = real["query_migrate"]
    ram = qm.get("ram", {})
    achieved = ram.get("mbps", 0) * 1e6 / 8
    result = {
        "real": {
            "status": qm.get("status"),
            "dirty_sync_count": ram.get("dirty-sync-count"),
            "total_time_ms": qm.get("total-time"),
            "downtime_ms": qm.get("downtime"),
            "setup_time_ms": qm.get("setup-time"),
            "transferred_bytes": ram.get("transferred"),
            "normal": ram.get("normal"),
            "duplicate": ram.get("duplicate"),
            "achieved_bytes_per_s": achieved,
            "syncs_seen": real["syncs_seen"],
            "accel": real["accel"],
            "uri": real["uri"],
        },
        "modelled_at_max_bandwidth": engine_run(args, args.bandwidth),
        "modelled_at_achieved_bandwidth": engine_run(args, achieved) if achieved else None,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

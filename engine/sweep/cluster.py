"""Where a sweep runs: a Dask ``LocalCluster`` of worker processes sized to this machine, or an
existing Dask cluster reached through its scheduler's address.

A local cluster gets one single-threaded worker process per usable core, fewer when the
largest point's memory estimate (``engine.migration.budget.estimate_bytes``) times the workers would
not fit in what the machine has available; ``--workers N`` asks for N and is refused, with the
number that fits, when N would not fit.  Against an existing cluster the estimate must fit each
worker's own memory limit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

from engine.sweep.grid import Point
from engine.util.errors import ConfigError
from engine.util.memory import available_bytes

CONNECT_TIMEOUT_S = 10

LOCAL_CONFIG = {
    # Dask exports MALLOC_TRIM_THRESHOLD_=65536 to its workers (and into this process's
    # environment); any MALLOC_* variable makes the engine keep glibc's defaults
    # (engine.util.allocator), so every temporary a point makes was mapped and faulted in
    # again: 10-20 % more CPU per point than ``dirtylog run``
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    # the statistical profiler (a stack sample of the running point every 10 ms), the
    # event-loop watchdog (every 20 ms) and the system monitor (every 500 ms) only feed the
    # dashboard, which a local sweep does not start; together they took ~50 ms of CPU a
    # second in each worker and ~90 in this process (scheduler and nannies), measured idle,
    # taken from the points on a machine with as many cores as workers
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
}
"""Dask settings of the local cluster's scheduler, nannies and workers (the nannies hand them
to the worker processes).  The memory monitor keeps its default: it is what stops a worker
that outgrows its memory limit."""


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def point_bytes(points: list[Point]) -> int:
    """The largest memory estimate of one point's run, in bytes (as ``dirtylog run`` builds it;
    each point's was made when it was validated)."""
    return max(p.bytes_needed for p in points)


@dataclass(frozen=True)
class WorkerPlan:
    """How many local worker processes, and why."""

    workers: int
    point_bytes: int
    available_bytes: int | None
    note: str


def plan_local(points: list[Point], requested: int | None) -> WorkerPlan:
    """Local worker count: ``requested`` if it fits, else the cores (and the points) that fit.
    ConfigError when one point alone does not fit or ``requested`` is more than fits."""
    need, have = point_bytes(points), available_bytes()
    cores = usable_cores()
    fit = cores * 64 if have is None else have // need
    gib = 2.0**30
    if fit < 1:
        raise ConfigError(
            "memslots",
            f"one point of this sweep needs about {need / gib:.1f} GiB but only "
            f"{(have or 0) / gib:.1f} GiB is available on this machine",
        )
    if requested is not None:
        if requested < 1:
            raise ConfigError("--workers", f"must be at least 1, got {requested}")
        if requested > fit:
            raise ConfigError(
                "--workers",
                f"{requested} workers × {need / gib:.2f} GiB per point need "
                f"{requested * need / gib:.1f} GiB but {(have or 0) / gib:.1f} GiB is "
                f"available; this machine can run {fit} (--workers {fit})",
            )
        return WorkerPlan(requested, need, have, f"{requested} local workers (--workers)")
    n = max(1, min(cores, fit, len(points)))
    why = f"{n} local workers ({cores} cores"
    if fit < cores:
        why += f"; memory fits {fit} at {need / gib:.2f} GiB per point"
    return WorkerPlan(n, need, have, why + ")")


@contextlib.contextmanager
def local_client(workers: int) -> Iterator[object]:
    """A Client on a new LocalCluster of ``workers`` single-threaded worker processes on
    127.0.0.1 (no dashboard), closed on exit.  The workers ignore SIGINT: Ctrl-C is the
    caller's to handle (it cancels the sweep), not a crash in every worker."""
    import dask
    from distributed import Client, LocalCluster

    with _sigint_ignored(), dask.config.set(LOCAL_CONFIG):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # no dashboard; its plain HTTP routes on a free loopback port, not on 8787
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            silence_logs=logging.ERROR,
        )
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextlib.contextmanager
def remote_client(address: str, points: list[Point]) -> Iterator[object]:
    """A Client on the existing cluster at ``address`` (``tcp://HOST:PORT``), after checking it
    has workers and that a point's estimate fits each one's memory limit."""
    from distributed import Client

    check_address(address)
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise ConfigError("--scheduler", f"cannot reach {address} ({exc})") from None
    except Exception as exc:  # something answered, but not Dask's handshake (e.g. an HTTP
        # server: its first bytes read as a frame length of exabytes, a MemoryError)
        raise ConfigError(
            "--scheduler",
            f"{address} did not answer as a Dask scheduler ({type(exc).__name__})",
        ) from None
    try:
        _check_remote(client, address, point_bytes(points))
        yield client
    finally:
        client.close()


def check_address(address: str) -> None:
    """ConfigError unless ``address`` looks like a scheduler address: ``tcp://HOST:PORT`` or
    ``tls://HOST:PORT`` with a host and a port 1..65535, or a ``ucx://`` / ``inproc://`` one."""
    if address.startswith(("ucx://", "inproc://")):
        return
    try:
        parts = urlsplit(address)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
    except ValueError:  # a port that is not a number or above 65535, a broken [IPv6]
        scheme, host, port = "", None, None
    if scheme not in ("tcp", "tls") or not host or not port:
        raise ConfigError(
            "--scheduler",
            f"expected an address such as tcp://HOST:8786 (a host and a port 1..65535), "
            f"got {address!r}",
        )


def _check_remote(client, address: str, need: int) -> None:
    workers = client.scheduler_info().get("workers", {})
    if not workers:
        try:
            client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
        except TimeoutError:
            raise ConfigError("--scheduler", f"the scheduler at {address} has no workers") from None
        workers = client.scheduler_info().get("workers", {})
    limits = [w.get("memory_limit") or 0 for w in workers.values()]
    small = [lim for lim in limits if 0 < lim < need]
    if small:
        raise ConfigError(
            "--scheduler",
            f"a point needs about {need / 2**30:.2f} GiB but {len(small)} of the "
            f"{len(limits)} workers at {address} have a memory limit of "
            f"{min(small) / 2**30:.2f} GiB",
        )


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored while worker processes are spawned (they inherit it), if we may."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)

"""QEMU's pre-copy rules, release by release, as small pure functions.

Each function names the QEMU source it follows (qemu/qemu, read for QEMU 7.2, 8.2, 9.2 and
10.1).  ``precopy.Migration`` calls them; the tests call them at each side of every boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

BUFFER_DELAY_NS = 100_000_000  # migration/migration-stats.h BUFFER_DELAY 100 (ms)
MAX_WAIT_MS = 50  # migration/ram.c MAX_WAIT 50 (ms): ram_save_iterate's longest call
# ram_save_iterate breaks when ``(now - t0) / 1000000 > MAX_WAIT``, in whole milliseconds: the
# first time it does is 51 ms after t0 (50.999 ms is still 50)
MAX_WAIT_BREAK_NS = (MAX_WAIT_MS + 1) * 1_000_000
PERIOD_NS = 1_000_000_000  # migration_bitmap_sync: rates every "more than 1 second"
THROTTLE_SYNC_NS = 5_000_000_000  # cpu-throttle.c CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS 5000
TARGET_PAGE = 4096  # QEMU's target page on arm64 and x86: headers are per 4 KiB page
PAGE_HEADER = 8  # save_page_header: the be64 offset|flags word
ZERO_PAGE_BYTES = PAGE_HEADER + 1  # save_zero_page: header + one zero byte
EXPECTED_DOWNTIME_MIN_BYTES = 10_000  # migration_update_counters: "transferred > 10000"


@dataclass(frozen=True)
class Release:
    """What differs between the QEMU releases users run (each difference from its source).

    - ``sync_le``: 8.0-8.2 sync when ``must_precopy <= threshold_size`` (migration.c
      migration_iteration_run, c8df4a7aef); 7.2 (ram.c ram_save_pending ``remaining_size <
      max_size``) and 9.0+ (``pending_size < s->threshold_size``) use ``<``.
    - ``complete_le``: 10.1+ completes when ``pending_size <= s->threshold_size`` ("trivial
      touch up on threshold_size comparison", 2025); earlier ``!pending_size || pending_size <
      s->threshold_size``.
    - ``throttle_sync``: 9.2+ cpu-throttle.c cpu_throttle_dirty_sync_timer_tick: with
      auto-converge, a dirty sync every 5 s when no sync happened since the last tick.
    - ``downtime_from_last_sync``: 8.x+ expected_downtime = dirty_bytes_last_sync / bandwidth;
      7.2 used what is remaining now.
    - ``switchover_bandwidth``: avail-switchover-bandwidth exists from 8.2.
    """

    name: str
    sync_le: bool
    complete_le: bool
    throttle_sync: bool
    downtime_from_last_sync: bool
    switchover_bandwidth: bool


RELEASES = {
    "7.2": Release("7.2", False, False, False, False, False),
    "8.2": Release("8.2", True, False, False, True, True),
    "9.2": Release("9.2", False, False, True, True, True),
    "10.1": Release("10.1", False, True, True, True, True),
}


def should_sync(release: Release, pending: float, threshold: float) -> bool:
    """The exact pending query (a bitmap sync) is due: estimate below (8.2: at most) the
    threshold.  migration.c migration_iteration_run / ram.c ram_save_pending (7.2)."""
    return pending <= threshold if release.sync_le else pending < threshold


def should_complete(release: Release, pending: float, threshold: float) -> bool:
    """Switch over: 10.1+ ``pending <= threshold``; before ``!pending || pending < threshold``.
    migration.c migration_iteration_run."""
    if release.complete_le:
        return pending <= threshold
    return pending == 0 or pending < threshold


def threshold_size(bandwidth_per_ms: float, downtime_limit_ms: float) -> float:
    """migration_update_counters: ``threshold_size = expected_bw_per_ms * downtime_limit``."""
    return bandwidth_per_ms * downtime_limit_ms


def expected_bw_per_ms(measured_per_ms: float, avail_switchover_bps: float) -> float:
    """migration_update_counters: avail-switchover-bandwidth (bytes/s) when set, else the
    bandwidth measured over the last window (bytes/ms)."""
    return avail_switchover_bps / 1000 if avail_switchover_bps else measured_per_ms


def rate_limit_per_window(max_bandwidth_bps: float) -> float:
    """Bytes the sender may send per BUFFER_DELAY window: ``max-bandwidth / XFER_LIMIT_RATIO``
    in whole bytes (XFER_LIMIT_RATIO = 1000 / BUFFER_DELAY = 10; max-bandwidth is a uint64 of
    bytes/s and the division is an integer one).  migration-stats.c migration_rate_set."""
    return float(int(max_bandwidth_bps) // (1000 * 1_000_000 // BUFFER_DELAY_NS))


def period_due(now_ns: int, period_start_ns: int) -> bool:
    """migration_bitmap_sync: rates and the throttle check run when ``end_time >
    rs->time_last_bitmap_sync + 1000`` (strictly more than a second)."""
    return now_ns > period_start_ns + PERIOD_NS


def dirty_pages_rate(new_pages: int, period_ns: int) -> float:
    """migration_update_rates: ``num_dirty_pages_period * 1000 / (end_time -
    time_last_bitmap_sync)`` pages per second (newly dirtied pages only)."""
    return new_pages * 1e9 / period_ns


def trigger_throttle(
    bytes_xfer_period: float, bytes_dirty_period: float, trigger_pct: int, high_count: int
) -> tuple[bool, int]:
    """migration_trigger_throttle: (step the throttle?, new dirty_rate_high_cnt).

    ``bytes_dirty_period > bytes_xfer_period * threshold / 100`` counts a high period; the
    second one steps the throttle and resets the count (``++cnt >= 2``).  Low periods leave
    the count as it is.
    """
    if bytes_dirty_period > bytes_xfer_period * trigger_pct / 100:
        high_count += 1
        if high_count >= 2:
            return True, 0
    return False, high_count


def throttle_step(current: int, initial: int, increment: int, maximum: int) -> int:
    """mig_throttle_guest_down (tailslow off): cpu-throttle-initial first, then +increment,
    capped at max-cpu-throttle."""
    if current == 0:
        return initial
    return min(maximum, current + increment)


def page_bytes(zero: bool, page_size: int) -> int:
    """Stream bytes for one guest page: per 4 KiB target page a header and either the data
    (ram_save_page / save_normal_page) or one zero byte (save_zero_page)."""
    n = max(1, page_size // TARGET_PAGE)
    return n * (ZERO_PAGE_BYTES if zero else PAGE_HEADER + TARGET_PAGE)

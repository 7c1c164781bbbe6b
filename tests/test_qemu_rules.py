"""QEMU's pre-copy rules, each pinned by a value derived from the source (qemu/qemu).

- migration/ram.c ram_init_bitmaps → migration_bitmap_sync_precopy: one sync in setup, so
  dirty-sync-count is 1 during pass 1; ram_save_complete syncs once more after the stop.
- migration/ram.c migration_clear_memory_region_dirty_bitmap: with manual protect, a
  clear-bitmap chunk is CLEARed in KVM just before its first page is sent.
- migration/migration.h CLEAR_BITMAP_SHIFT_MIN 6, _DEFAULT 18, _MAX 31.
- migration/migration.c migration_iteration_run (10.1: ``pending_size <= threshold_size``
  completes; 9.x: ``pending_size < threshold_size``; 8.2 syncs at ``must_precopy <=``),
  migration_update_counters (threshold = bytes sent in the window / window ms × downtime),
  migration_rate_limit (BUFFER_DELAY 100 ms windows of max-bandwidth / 10).
- migration/ram.c migration_bitmap_sync: rates when ``end_time > time_last_bitmap_sync +
  1000``; migration_trigger_throttle: ``bytes_dirty_period > bytes_xfer_period * 50 / 100``
  twice; num_dirty_pages_period counts pages newly set in the migration bitmap.
- migration/ram.c save_zero_page / save_page_header: 8 header bytes per 4 KiB page, + 1 byte
  for a zero page, + 4096 for a normal one.
- migration/cpu-throttle.c (9.2+): CPU_THROTTLE_DIRTY_SYNC_TIMESLICE_MS 5000.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_migration import ZERO_COSTS, run, session

from engine.cli.main import main as cli_main
from engine.files.session import CLEAR_SHIFT_DEFAULT, KubevirtCfg, clear_chunk_pages, parse_session
from engine.migration import qemu_rules as Q
from engine.migration.kubevirt import KubevirtMonitor
from engine.migration.simulation import Simulation
from engine.util.errors import ConfigError

CASES = Path(__file__).parent / "cases" / "fidelity"  # the handed-over cases, kept in the repo
NORMAL = 4096 + 8  # one normal page in the stream
ZERO = 8 + 1  # one zero page in the stream


# -- the clear-bitmap chunk ---------------------------------------------------------------------


def _tracking(**t):
    return parse_session(session(tracking={"mode": "manual-clear", **t}))


def test_clear_chunk_default_is_shift_18():
    cfg = _tracking()
    assert clear_chunk_pages(cfg.tracking, 4096) == 1 << 18 == 262144  # 1 GiB of 4 KiB pages
    assert CLEAR_SHIFT_DEFAULT == 18


@pytest.mark.parametrize(
    ("spec", "pages"),
    [
        ({"clear_bitmap_shift": 6}, 64),
        ({"clear_bitmap_shift": 31}, 1 << 31),
        ({"clear_chunk": "256KiB"}, 64),
        ({"clear_chunk": "1GiB"}, 1 << 18),
        ({"clear_chunk": "8TiB"}, 1 << 31),
        ({"clear_chunk": "1GiB", "clear_bitmap_shift": 18}, 1 << 18),
    ],
)
def test_clear_chunk_accepts_the_shift_or_a_size_within_6_to_31(spec, pages):
    assert clear_chunk_pages(_tracking(**spec).tracking, 4096) == pages


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"clear_bitmap_shift": 5}, "tracking.clear_bitmap_shift"),
        ({"clear_bitmap_shift": 32}, "tracking.clear_bitmap_shift"),
        ({"clear_chunk": "128KiB"}, "tracking.clear_chunk"),  # 2^5 pages
        ({"clear_chunk": "16TiB"}, "tracking.clear_chunk"),  # 2^32 pages
        ({"clear_chunk": "3MiB"}, "tracking.clear_chunk"),  # not a power of two
        ({"clear_chunk": "1GiB", "clear_bitmap_shift": 17}, "tracking.clear_chunk"),
    ],
)
def test_clear_chunk_out_of_range_is_refused_naming_the_field(spec, field):
    with pytest.raises(ConfigError) as err:
        _tracking(**spec)
    assert err.value.field == field


def test_clear_chunk_scales_with_the_granule():
    data = session(tracking={"clear_chunk": "1MiB"}, geometry={"granule": "16KiB", "ipa_bits": 40})
    data["memslots"][0]["backing"] = None
    cfg = parse_session(data)
    assert clear_chunk_pages(cfg.tracking, 16384) == 64
    data["tracking"]["clear_chunk"] = "512KiB"  # 32 pages of 16 KiB
    with pytest.raises(ConfigError):
        parse_session(data)


# -- switchover and sync comparisons, release by release -----------------------------------------


@pytest.mark.parametrize(
    ("release", "below", "at", "above"),
    [
        ("7.2", True, False, False),
        ("8.2", True, True, False),
        ("9.2", True, False, False),
        ("10.1", True, False, False),
    ],
)
def test_exact_sync_comparison(release, below, at, above):
    """migration.c migration_iteration_run: 9.0+ ``pending_size < s->threshold_size``; 8.0-8.2
    ``must_precopy <= s->threshold_size`` (c8df4a7aef); 7.2 ram.c ram_save_pending
    ``remaining_size < max_size``.  One below, at and one above a 1000-byte threshold."""
    rel = Q.RELEASES[release]
    assert Q.should_sync(rel, 999, 1000) is below
    assert Q.should_sync(rel, 1000, 1000) is at
    assert Q.should_sync(rel, 1001, 1000) is above


@pytest.mark.parametrize(
    ("release", "at"), [("7.2", False), ("8.2", False), ("9.2", False), ("10.1", True)]
)
def test_switchover_comparison(release, at):
    """migration.c migration_iteration_run: 10.1 ``pending_size <= s->threshold_size``
    ("trivial touch up on threshold_size comparison"); 7.2-9.2 ``!pending_size ||
    pending_size < s->threshold_size``.  One below, at and one above a 1000-byte threshold."""
    rel = Q.RELEASES[release]
    assert Q.should_complete(rel, 999, 1000)
    assert Q.should_complete(rel, 1000, 1000) is at
    assert not Q.should_complete(rel, 1001, 1000)
    assert Q.should_complete(rel, 0, 0)  # nothing pending completes even before a measurement


# -- auto-converge trigger and rates ------------------------------------------------------------


def test_throttle_trigger_needs_more_than_half_twice():
    # 1000 bytes sent in the period: the threshold is 500 dirty bytes, strictly more needed
    assert Q.trigger_throttle(1000, 500, 50, 0) == (False, 0)
    assert Q.trigger_throttle(1000, 501, 50, 0) == (False, 1)
    assert Q.trigger_throttle(1000, 501, 50, 1) == (True, 0)
    assert Q.trigger_throttle(1000, 100, 50, 1) == (False, 1)  # a low period keeps the count


def test_period_is_strictly_more_than_a_second():
    assert not Q.period_due(1_000_000_000, 0)
    assert Q.period_due(1_000_000_001, 0)


@pytest.mark.parametrize(("now", "step"), [(0, 20), (20, 30), (90, 99), (99, 99)])
def test_throttle_steps(now, step):
    assert Q.throttle_step(now, 20, 10, 99) == step


def test_page_costs():
    assert Q.page_bytes(False, 4096) == NORMAL
    assert Q.page_bytes(True, 4096) == ZERO
    assert Q.page_bytes(False, 65536) == 16 * NORMAL  # 16 target pages in a 64 KiB page
    assert Q.page_bytes(True, 16384) == 4 * ZERO
    # whole bytes: the stream counters (QEMU's uint64 transferred) never hold a fraction
    assert all(type(Q.page_bytes(z, p)) is int for z in (False, True) for p in (4096, 65536))


def test_rate_limit_window_is_a_tenth_of_max_bandwidth():
    """migration_rate_set: the limit per BUFFER_DELAY (100 ms) window is max-bandwidth /
    XFER_LIMIT_RATIO, XFER_LIMIT_RATIO = 1000 / BUFFER_DELAY = 10 (migration-stats.h)."""
    assert Q.rate_limit_per_window(32_000_000) == 3_200_000.0
    assert Q.rate_limit_per_window(4_104_000) == 410_400.0
    # ``limit / XFER_LIMIT_RATIO`` on uint64: whole bytes, rounded down
    assert Q.rate_limit_per_window(4_103_999) == Q.rate_limit_per_window(4_103_990) == 410_399.0


def test_dirty_pages_rate_is_pages_per_second():
    """migration_update_rates: num_dirty_pages_period * 1000 / (end_time - start) in ms, i.e.
    pages per second: 1500 new pages over 1.5 s are 1000 pages/s exactly."""
    assert Q.dirty_pages_rate(1500, 1_500_000_000) == 1000.0
    assert Q.dirty_pages_rate(3, 1_000_000_001) == 3e9 / 1_000_000_001


# -- the setup sync and initially-set ------------------------------------------------------------


def test_r04_idle_initially_set_guest_sends_each_page_once():
    """r04: 256 populated pages, nothing written.  The setup sync marks every chunk, pass 1
    CLEARs before sending, so the first iterative sync finds nothing: 256 normal pages, each
    sent once.  Syncs: setup (1), exact (2), ram_save_complete's (3)."""
    result = Simulation.from_file(CASES / "r04_min_initially_set.json").run()
    assert result["normal"] == 256 and result["duplicate"] == 0
    assert result["normal_bytes"] == 1 << 20
    assert result["transferred_bytes"] == 256 * NORMAL
    assert result["dirty_sync_count"] == 3
    assert [r["round"] for r in result["rounds"]] == [1, 2, 3]
    # expected-downtime starts at the downtime limit and changes only once dirty-pages-rate
    # is non-zero (migration_update_counters): nothing was ever dirtied here
    assert result["expected_downtime_ms"] == 10.0
    assert result["verification"]["mismatches"] == 0


def test_r15_initially_set_eager_split_faults_during_pass_1():
    """r15: 64 MiB at 64 MiB/s, 256 KiB chunks, writes at 700 ms to pages 0, 1, 511, 512 and
    16383.  A window carries ceil(6710886.4 / 4104) = 1636 pages, so by 700 ms pages
    0..13087 went, their chunks CLEARed (write-protected, blocks split): the first four writes
    fault, the last lands in a chunk not yet CLEARed (a writable block) and is sent later.
    At 1000 ms 24 pages remain (16384 - 10 × 1636) < threshold 1636 × 4104 / 100 ms × 100 ms:
    sync, 4 new pages, 28 pages ≤ threshold: switch over.  16388 pages sent in all."""
    sim = Simulation.from_file(CASES / "r15_initset_eager_split.json")
    sim.keep_harvests = True
    result = sim.run()
    assert sum(r["faults"] for r in result["rounds"]) == 4
    first = result["rounds"][0]
    assert first["dirty_pages"] == 4 and first["new_dirty_pages"] == 4
    assert result["transferred_bytes"] == 16388 * NORMAL
    assert first["threshold_bytes"] == 1636 * NORMAL  # bytes/ms × 100 ms downtime limit
    assert result["verification"]["mismatches"] == 0


# -- windows, measured bandwidth, link speed ------------------------------------------------------

# max-bandwidth whose window share (410,399 B) lets exactly 100 normal pages start: the 100th
# starts at 99 × 4104 = 406,296 B used, the 101st would start at 410,400 > 410,399 (exceeded)
SHARE_100_PAGES = (100 * NORMAL - 1) * 10


def _measured(**mig):
    data = session(
        costs=ZERO_COSTS,
        workloads=[],
        memslots=[{"id": 0, "base": "0x40000000", "size": "4MiB", "flags": ["log_dirty"]}],
        migration={"bandwidth": SHARE_100_PAGES, "downtime_limit_ms": 30, **mig},
    )
    return run(data)[1]


def test_window_share_and_measured_threshold():
    """max-bandwidth 4,103,990 B/s: a window's share is 410,399 bytes, 100 pages a window.
    1024 pages: after 10 windows (1.0 s) 24 are left, under the threshold measured over the
    last window: 100 × 4104 bytes / 100 ms × 30 ms = 123,120 bytes (not the configured
    4,103,990 B/s × 30 ms); the sync is at 1.0 s."""
    result = _measured()
    first = result["rounds"][0]
    assert first["threshold_bytes"] == pytest.approx(100 * NORMAL / 100 * 30)
    assert first["t_end_ns"] == 1_000_000_000


@pytest.mark.parametrize(
    ("share", "pages"), [(100 * NORMAL - 1, 100), (100 * NORMAL, 101), (100 * NORMAL + 1, 101)]
)
def test_the_rate_limit_is_exceeded_only_past_the_share(share, pages):
    """migration_rate_exceeded (migration-stats.c, 8.1-10.1): ``rate_limit_used >
    rate_limit_max``, checked before each page in ram_save_iterate.  A page therefore starts
    while at most the share is used: a share of exactly 100 pages (410,400 B) lets a 101st page
    start (410,400 used is not more than the share), one byte less stops at 100.  The
    threshold measured over the window shows the count: pages × 4104 B / 100 ms × 30 ms."""
    result = _measured(bandwidth=share * 10)
    assert result["rounds"][0]["threshold_bytes"] == pytest.approx(pages * NORMAL / 100 * 30)


def _link_limited(pages: int, costs: dict | None = None, untracked: int = 0) -> dict:
    """A ``pages``-page logging slot sent over a 1 Gbit/s link (125,000 B/ms: 30.46 normal
    pages a ms) with a max-bandwidth (100 Gbit/s) no window can exhaust, so only MAX_WAIT and
    the windows' measurement pace QEMU's loop; no guest writes; ``untracked`` pages of a slot
    without a dirty log are sent first (slot 0) and come back at every sync."""
    slots = [{"id": 1, "base": "0x40000000", "size": pages * 4096, "flags": ["log_dirty"]}]
    if untracked:
        slots.insert(0, {"id": 0, "base": "0x30000000", "size": untracked * 4096, "flags": []})
    return session(
        costs=costs or ZERO_COSTS,
        workloads=[],
        memslots=slots,
        migration={"bandwidth": "100Gbit/s", "link_speed": "1Gbit/s", "timeout_s": 2},
    )


def _pages_by(ms: int) -> int:
    """Normal pages a 1 Gbit/s link has carried after ``ms`` ms of sending (125,000 B/ms)."""
    return 125_000 * ms // NORMAL


def test_link_limited_loop_turns_every_51_ms_and_windows_measured_there():
    """When the link, not max-bandwidth, limits the sender, ram_save_iterate returns only
    after MAX_WAIT: ``(now - t0) / 1000000 > 50`` in whole ms, i.e. 51 ms after it began
    (migration/ram.c ram_save_iterate, 10.1), and the window is measured at the first loop
    turn 100 ms or more after it began, over its real length (migration.c migration_thread →
    migration_rate_limit → migration_update_counters).  Zero costs: turns at 51 and 102 ms; at
    102 the window (0, 102] held 3,106 pages, so threshold = 3106 × 4104 B / 102 ms × 300 ms
    = 37,491,247 B; 12,106 - 3,106 = 9,000 pages (36,864,000 B) are below it: sync, complete."""
    _, result = run(_link_limited(12_106))
    first = result["rounds"][0]
    assert _pages_by(102) == first["pages_sent"] == 3106
    assert first["t_end_ns"] == 102_000_000
    assert first["threshold_bytes"] == pytest.approx(3106 * NORMAL / 102 * 300)
    assert result["reason"].startswith("36,864,000 dirty bytes ≤ threshold 37,491,247 bytes")


def test_max_wait_counts_from_after_the_sync():
    """ram_save_iterate's t0 is taken when it begins, after migration_iteration_run's sync, so
    a sync's cost moves every later loop turn.  Each GET costs 200 bitmap words × 50 µs =
    10 ms (setup's too).  Turns: 10 + 51 = 61, 112 (window (0, 112]: 3,106 pages, threshold
    3106 × 4104 / 112 × 300 = 34,143,814 B = 8,336 pages; 13,694 pending), 163 (12,140
    pending), 214 (window (112, 214]: 3,107 pages, threshold 37,503,318 B = 9,156 pages;
    10,587 pending), 265: 9,034 pending < 9,156: sync; the 4,000 untracked pages come back
    (13,034 pending, no switchover) and the sync holds the sender to 275.  Then 326, 377,
    428 (not 316, 367, 418): the window (326, 428] held 3,106 pages again, and 8,374 pages
    are left after 4,660 more (153 ms of sending): sync."""
    costs = {**ZERO_COSTS, "bitmap_word": 50_000}
    _, result = run(_link_limited(12_800, costs, untracked=4000))
    first, second = result["rounds"][:2]
    # round 1 holds the setup sync's GET too (migration_bitmap_sync counts it as 1 before
    # its GET); the enable costs nothing here
    assert (first["harvest_model_ns"], second["harvest_model_ns"]) == (20_000_000, 10_000_000)
    assert result["setup_time_ms"] == 10.0
    assert first["t_end_ns"] == 265_000_000
    assert first["pages_sent"] == _pages_by(255) == 7766
    assert first["remaining_bytes"] == (16_800 - 7766 + 4000) * 4096
    assert first["threshold_bytes"] == pytest.approx(3107 * NORMAL / 102 * 300)
    assert second["t_end_ns"] == 428_000_000
    assert second["pages_sent"] == _pages_by(153) == 4660
    assert second["threshold_bytes"] == pytest.approx(3106 * NORMAL / 102 * 300)
    assert second["remaining_bytes"] == 8374 * 4096


def test_avail_switchover_bandwidth_sets_the_threshold():
    result = _measured(avail_switchover_bandwidth="1MiB/s")
    assert result["rounds"][0]["threshold_bytes"] == pytest.approx((1 << 20) / 1000 * 30)


def _untracked(pages: int, **mig):
    """1 MiB logging slot 0 (256 pages) and a slot 1 of ``pages`` pages without log_dirty,
    no guest writes; window share 100 pages (4,103,990 B/s: 410,399 B), limit 30 ms → the
    threshold is 100 × 4104 B / 100 ms × 30 ms = 123,120 B (30.06 pages of 4096)."""
    return session(
        costs=ZERO_COSTS,
        workloads=[],
        memslots=[
            {"id": 0, "base": "0x40000000", "size": "1MiB", "flags": ["log_dirty"]},
            {"id": 1, "base": "0x48000000", "size": pages * 4096, "flags": []},
        ],
        migration={
            "bandwidth": SHARE_100_PAGES,
            "downtime_limit_ms": 30,
            "link_speed": "1Gbit/s",
            "max_rounds": 1000,
            "timeout_s": 1.2,
            **mig,
        },
    )


def test_stop_and_copy_goes_at_the_link_speed_not_the_limit():
    """30 untracked pages go again at switchover: 30 × 4104 B at 1 Gbit/s (125,000 B/ms) =
    0.98496 ms, not 30 × 4104 / 4,103,990 B/s ≈ 30 ms; with zero costs that is the whole
    downtime."""
    _, result = run(_untracked(30))
    assert result["outcome"] == "completed"
    assert result["downtime_ms"] == pytest.approx(30 * NORMAL / 125_000)


@pytest.mark.parametrize(("pages", "converges"), [(29, True), (30, True), (31, False)])
def test_untracked_slot_is_pending_after_every_sync(pages, converges):
    """A slot no dirty log covers is all dirty at every sync (QEMU marks memory it cannot
    track dirty in full: vfio's dirty sync without tracking), so it is in pending_size and
    decides the switchover: 30 pages = 122,880 B ≤ 123,120 B completes (10.1: ≤), 31 pages =
    126,976 B never does.  Pass 1 (256 + n pages: 2 windows of 100, the rest at 1 Gbit/s)
    runs dry in tick 203; the sync there reports the n pages."""
    _, result = run(_untracked(pages))
    first = result["rounds"][0]
    assert first["t_end_ns"] == 203_000_000
    assert first["dirty_pages"] == first["new_dirty_pages"] == pages
    assert first["remaining_bytes"] == pages * 4096
    if converges:
        assert result["outcome"] == "completed"
        assert result["reason"].startswith(f"{pages * 4096:,} dirty bytes ≤ threshold 123,120")
        assert result["rounds"][-1]["pages_sent"] == pages  # the final sync marks it again
        assert result["verification"]["mismatches"] == 0
        return
    # never converges: every later sync leaves the 31 pages pending, the sender's 100-page
    # windows stay full, and once dirty-pages-rate is measured (a period over 1 s)
    # expected-downtime = 126,976 B ÷ 4,104 B/ms = 30.94 ms, over the 30 ms limit
    assert result["outcome"] == "not-converged"
    assert {r["remaining_bytes"] for r in result["rounds"]} == {31 * 4096}
    assert {r["dirty_pages"] for r in result["rounds"][:-1]} == {31}
    assert result["expected_downtime_ms"] == pytest.approx(31 * 4096 / 4104)


def test_run_prints_no_downtime_without_a_switchover(tmp_path, capsys):
    """A run that never switched over has no downtime to judge against the limit: the
    31-page untracked slot never converges, so `dirtylog run` says so (not "0.0 ms within
    the limit"); QEMU's expected-downtime is still shown."""
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_untracked(31)))
    assert cli_main(["run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "downtime: none (no switchover: the guest was never stopped) (expected 30.9 ms)" in out
    assert "within the" not in out


@pytest.mark.parametrize(
    ("release", "pages", "completes"),
    [("10.1", 512, True), ("10.1", 513, True), ("10.1", 514, False), ("9.2", 513, False)],
)
def test_switchover_at_the_threshold_exactly(release, pages, completes):
    """Limit 512 ms: threshold = 100 × 4104 B / 100 ms × 512 ms = 2,101,248 B = 513 pages of
    4096 exactly.  Pass 1 (256 + n pages) syncs at 300 ms (≤ 513 pages left); the untracked
    slot is then all pending: 513 pages equal the threshold, which 10.1 accepts (``<=``) and
    9.2 does not (``<``), so 9.2 never switches over; 514 never does."""
    _, result = run(_untracked(pages, downtime_limit_ms=512, qemu=release, timeout_s=0.5))
    first = result["rounds"][0]
    assert first["threshold_bytes"] == 2_101_248 == 513 * 4096
    assert first["t_end_ns"] == 300_000_000 and first["remaining_bytes"] == pages * 4096
    assert (result["outcome"] == "completed") is completes


@pytest.mark.parametrize(
    ("release", "pages", "syncs", "rounds"),
    [
        ("10.1", 356, 3, [(100, 512)]),
        ("10.1", 357, 2, [(100, 513)]),
        ("10.1", 358, 3, [(200, 414)]),
        ("8.2", 357, 4, [(100, 513), (200, 413)]),
    ],
)
def test_exact_sync_at_the_threshold_in_the_loop(release, pages, syncs, rounds):
    """dirty-sync-count one each side of the threshold, at the page (QEMU 10.1 migration.c
    migration_iteration_run: the exact sync only when the estimate is ``< threshold_size``,
    then ``complete_ready = pending_size <= threshold_size``; 8.2 syncs at ``<=`` and
    completes at ``<``).  Threshold 513 pages exactly (limit 512 ms, as above); pass 1 is
    256 + n pages, 100 a window, so after the first window (100 ms) 156 + n are left.
    n = 356 leaves 512: sync, then 512 ≤ 513 completes: setup + sync + final = 3 syncs.
    n = 357 leaves 513: 10.1 skips the sync (not below) but completes on the estimate
    (513 ≤ 513): 2 syncs; 8.2 syncs (≤) but does not complete (not below), so a second window
    leaves 413, synced at 200 ms: 4.  n = 358 leaves 514: no sync, no switchover; at 200 ms
    414 are left: 3.  The rows are (end of the round in ms, pages pending after it)."""
    _, result = run(_untracked(pages, downtime_limit_ms=512, qemu=release, timeout_s=0.5))
    assert result["rounds"][0]["threshold_bytes"] == 513 * 4096
    got = [
        (r["t_end_ns"] / 1e6, r["remaining_bytes"] // 4096)
        for r in result["rounds"]
        if r["pages_sent"] and not r.get("stop_and_copy")
    ]
    assert got == rounds
    assert result["outcome"] == "completed" and result["dirty_sync_count"] == syncs


def test_idle_fresh_guest_sends_zero_pages():
    """A 64 MiB guest never written (populate false): every page is a zero page, 9 bytes."""
    data = session(
        costs=ZERO_COSTS,
        workloads=[],
        memslots=[
            {
                "id": 0,
                "base": "0x40000000",
                "size": "64MiB",
                "flags": ["log_dirty"],
                "populate": False,
            }
        ],
    )
    _, result = run(data)
    assert result["duplicate"] == 16384 and result["normal"] == 0
    assert result["transferred_bytes"] == 16384 * ZERO
    assert result["outcome"] == "completed"


def test_dirty_pages_rate_counts_only_newly_dirtied_pages(tmp_path):
    """64 MiB at 32 MiB/s, 10 ms limit: windows of ceil(3355443.2 / 4104) = 818 pages, 24
    left after 20 windows (2.0 s) < threshold 818 × 4104 / 100 × 10 bytes: the sync at 2 s
    reports pages 0 and 16383 (written at 1.5 s); 16383 is still to send, so only one is
    new.  The period (setup sync at 0 → 2 s) is over a second: dirty-pages-rate = 1 / 2 s."""
    trace = tmp_path / "w.csv"
    trace.write_text("t_ns,ipa,vcpu\n1500000000,0x40000000,0\n1500000001,0x43fff000,0\n")
    data = session(
        costs=ZERO_COSTS,
        workloads=[{"name": "t", "kind": "trace", "path": str(trace)}],
        migration={"bandwidth": "32MiB/s", "downtime_limit_ms": 10},
    )
    _, result = run(data)
    first = result["rounds"][0]
    assert first["t_end_ns"] == 2_000_000_000
    assert (first["dirty_pages"], first["new_dirty_pages"]) == (2, 1)
    assert first["dirty_pages_rate"] == pytest.approx(0.5)
    assert first["reported_pages_rate"] == pytest.approx(1.0)


def test_throttle_sync_every_5_s_from_qemu_9_2():
    """Auto-converge on, an iteration longer than 5 s: the timer (started with the
    migration) ticks at 5, 10, 15 s; at 15 s no sync happened since the 10 s tick and
    dirty-sync-count > 1, so it syncs.  QEMU 8.2 has no such timer."""

    def syncs(release):
        data = session(
            costs=ZERO_COSTS,
            tick_ms=5,  # 15 s is tick 3,000's start: the timer's 15 s tick falls on a boundary
            workloads=[{"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": 4000}],
            memslots=[{"id": 0, "base": "0x40000000", "size": "32MiB", "flags": ["log_dirty"]}],
            migration={
                "bandwidth": "4MiB/s",
                "auto_converge": True,
                "qemu": release,
                "timeout_s": 16,
            },
        )
        _, result = run(data)
        return [r["t_end_ns"] for r in result["rounds"]]

    assert 15_000_000_000 in syncs("10.1")
    assert 15_000_000_000 not in syncs("8.2")


# -- management layers ---------------------------------------------------------------------------


def test_cancel_event_stops_migration_and_logging():
    data = session(events=[{"t_ms": 500, "action": "cancel"}])
    sim, result = run(data)
    assert result["outcome"] == "cancelled"
    assert not sim.vm.slots[0].logging
    assert not sim.migration.guest_paused


def test_kubevirt_completion_timeout_per_gb_rounds_the_size_up():
    """64 MiB → ceil(0.067 GB) = 1; completionTimeoutPerGiB 2 → 2 s; samples every 400 ms:
    the first with elapsed // 1 s > 2 is at 3.2 s (2.8 s gives 2)."""
    data = session(
        workloads=[{"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": 20000}],
        migration={"kubevirt": {"completion_timeout_per_gib": 2, "progress_timeout_s": 0}},
    )
    _, result = run(data)
    assert result["outcome"] == "cancelled"
    assert result["total_time_ms"] == pytest.approx(3200)
    assert "completionTimeoutPerGiB" in result["reason"]


def test_r18_kubevirt_aborts_the_stress_migration():
    """r18: 256 MiB, stress dirtying 50,000 pages/s over 200 MiB at 1 Gbit/s never
    converges.  KubeVirt's defaults (completionTimeoutPerGiB 150, data size ceil(268,435,456
    / 10^9) = 1 GB) allow 150 s: the first 400 ms sample with elapsed // 1 s > 150 is at
    151.2 s (150.8 s gives 150).  Run here with completionTimeoutPerGiB 1 (1 s allowed): the
    sample at 2.0 s (2 > 1) cancels it, logging goes off and the guest goes on."""
    data = json.loads((CASES / "r18_kubevirt_stress_timeout.json").read_text())
    cfg = parse_session({**data, "migration": {**data["migration"], "kubevirt": {}}})
    mon = KubevirtMonitor(cfg.migration.kubevirt, 0, 256 << 20)
    assert mon.acceptable_s == 150
    got = next(t for t in range(400, 200_000, 400) if mon.sample(t * 1_000_000, 1 << 30))
    assert got == 151_200
    data["migration"]["kubevirt"] = {"completion_timeout_per_gib": 1}
    sim, result = run(data)
    assert result["outcome"] == "cancelled" and result["total_time_ms"] == pytest.approx(2000)
    assert "completionTimeoutPerGiB" in result["reason"]
    assert not sim.vm.slots[0].logging


@pytest.mark.parametrize(("rule", "aborts_at"), [("new-low", 4.0), ("previous-sample", None)])
def test_kubevirt_progress_rules(rule, aborts_at):
    """Remaining bytes fall, then oscillate above their low: the old rule (a new low) sees
    no progress; today's (below the previous sample) does.  progressTimeout 2 s: stuck once
    (now - last) // 1 s > 2."""
    mon = KubevirtMonitor(
        KubevirtCfg(progress_timeout_s=2, completion_timeout_per_gib=0, progress=rule), 0, 1 << 30
    )
    samples = [100, 90, 95, 91, 95, 91, 95, 91, 95, 91, 95, 91]
    got = None
    for i, remaining in enumerate(samples, start=1):
        t = i * 400_000_000
        if mon.sample(t, remaining):
            got = t / 1e9
            break
    # new low at 0.8 s (90); stuck when (t - 0.8) // 1 > 2, i.e. t >= 3.8 → sample at 4.0 s
    assert got == aborts_at


def test_nova_session_follows_downtime_steps():
    """nova/virt/libvirt/migration.py downtime_steps: downtime 500 ms, 10 steps, delay 5 s ×
    data_gb 2 = 10 s: (0, 50), (10, 95), (20, 140) … (100, 500)."""
    from engine.files.session import load_session

    cfg, _ = load_session(
        Path(__file__).parent.parent / "resources/sessions/nova-downtime-steps.json"
    )
    steps = [(e.t_ms / 1000, e.model_extra["downtime_limit_ms"]) for e in cfg.events]
    assert steps == [(10.0 * i, int(50 + 45 * i)) for i in range(11)]
    assert cfg.migration.downtime_limit_ms == 50


def test_ring_reaper_collects_every_second():
    """accel/kvm/kvm-all.c kvm_dirty_ring_reaper_thread: sleep(1), then reap every ring, so
    with no sync or ring-full exit in between the rings are still reset each second."""
    data = session(
        tick_ms=10,
        tracking={"mode": "ring", "ring_entries": 4096},
        workloads=[{"name": "u", "kind": "uniform", "vcpu": 0, "slot": 0, "rate": 200}],
        migration={"bandwidth": "8MiB/s", "timeout_s": 3.5},
    )
    sim = Simulation.from_dict(data)
    reaps = []
    real = sim.reap_rings

    def spy():
        reaps.append(sim.t_ns)
        return real()

    sim.reap_rings = spy
    while not sim.finished:
        sim.advance(1)
    # the tick that ends at each whole second starts 10 ms before it
    assert {990_000_000, 1_990_000_000, 2_990_000_000} <= set(reaps)
    assert sim.migration.round == 1  # no sync happened: these were the reaper's


@pytest.mark.parametrize(("release", "sign"), [("9.2", "<"), ("10.1", "≤")])
def test_the_switchover_reason_names_the_release_comparison(release, sign):
    """The reason quotes migration_iteration_run's comparison of the release: 10.1 switches
    over at ``pending_size <= threshold_size``, 9.2 at ``pending_size < threshold_size``.
    512 pages left (2,097,152 B) under the 513-page threshold (2,101,248 B) complete on both."""
    _, result = run(_untracked(512, downtime_limit_ms=512, qemu=release, timeout_s=0.5))
    assert result["outcome"] == "completed"
    assert result["reason"].startswith(f"2,097,152 dirty bytes {sign} threshold 2,101,248 bytes")
    assert result["reason"].endswith(f"QEMU {release})")

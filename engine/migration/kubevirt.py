"""KubeVirt's migration monitor: when virt-launcher aborts a migration that is stuck or slow.

Read from kubevirt/kubevirt pkg/virt-launcher/virtwrap (migrationMonitor, current main): every
``monitorSleepPeriodMS`` = 400 ms it reads the job's remaining bytes.  processInflightMigration
counts progress when the remaining bytes fell below the previous sample (``remainingData <
progressWatermark``, the watermark being the previous sample); isMigrationProgressing fails
when ``(now - lastProgressUpdate) / 1 s > progressTimeout``; shouldTriggerTimeout when
``elapsed / 1 s > acceptableCompletionTime`` = completionTimeoutPerGiB ×
getVMIMigrationDataSize (memory in GB, ``ScaledValue(resource.Giga)``: rounded up).  The
stuck check comes first.  Older KubeVirt (liveMigrationMonitor in manager.go) only counted a
new low of the remaining bytes as progress: ``progress: "new-low"``.  Post-copy and
AllowWorkloadDisruption are not modelled: both checks abort (migration cancelled).
"""

from __future__ import annotations

import math

from engine.files.session import KubevirtCfg

SAMPLE_NS = 400_000_000  # monitorSleepPeriodMS
NS = 1_000_000_000


class KubevirtMonitor:
    """One migration's monitor; ``sample`` returns the abort reason or None."""

    def __init__(self, cfg: KubevirtCfg, t_start_ns: int, memory_bytes: int):
        self.cfg = cfg
        self.start = t_start_ns
        self.last_progress = t_start_ns
        self.watermark = 0
        self.next_ns = t_start_ns + SAMPLE_NS
        data_gb = math.ceil(memory_bytes / 1e9)  # resource.Quantity.ScaledValue(Giga)
        self.acceptable_s = cfg.completion_timeout_per_gib * data_gb

    def sample(self, now_ns: int, remaining: int) -> str | None:
        """One 400 ms look at the remaining bytes."""
        self.next_ns += SAMPLE_NS
        if self.watermark == 0 or remaining < self.watermark:
            self.last_progress = now_ns
            if self.cfg.progress == "new-low":
                self.watermark = remaining
        if self.cfg.progress == "previous-sample":
            self.watermark = remaining
        stuck = (now_ns - self.last_progress) // NS
        if self.cfg.progress_timeout_s and stuck > self.cfg.progress_timeout_s:
            return f"kubevirt: live migration stuck for {stuck} s (progressTimeout)"
        elapsed = (now_ns - self.start) // NS
        if self.acceptable_s and elapsed > self.acceptable_s:
            return (
                f"kubevirt: not completed after {self.acceptable_s:g} s "
                "(completionTimeoutPerGiB × data size in GB)"
            )
        return None

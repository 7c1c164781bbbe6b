"""The bench's real-KVM context lines: measured on this host's KVM, or skipped with a reason."""

from __future__ import annotations

import engine.host.bench_real as R
from tests.host.kvm_available import needs_kvm


def test_an_unusable_kvm_gives_one_line_with_the_reason(monkeypatch):
    reason = "/dev/kvm does not exist: KVM is not loaded here"
    monkeypatch.setattr(R, "unavailable_reason", lambda: reason)
    (line,) = R.real_kvm_lines(1 << 18)
    assert line.value_ms is None and line.detail == {"skipped": reason}
    assert line.text() == f"context, real KVM on this host: {line.name}: skipped ({reason})"
    assert line.as_dict()["value"] is None and line.as_dict()["source"] == "real KVM on this host"


@needs_kvm()
def test_real_enable_and_get_on_a_small_slot_scaled_to_the_asked_size():
    enable, get = R.real_kvm_lines(1 << 12, most=1 << 10)
    for line in (enable, get):
        assert line.value_ms is not None and line.value_ms > 0
        assert line.detail["slot_pages"] == 1 << 12 and line.detail["measured_pages"] == 1 << 10
        assert line.detail["note"].startswith("a quick run: measured on 1,024 pages")
        # scaled per page: 4 × what was measured; both are shown to 0.001 ms, so 4 × the shown
        # measurement is off by at most 4 × 0.0005 and the shown value by 0.0005 more
        assert abs(line.value_ms - 4 * line.detail["measured_ms"]) <= 0.0025 + 1e-9
        assert "(scaled from 1,024 pages)" in line.name
    assert get.detail["dirty_pages"] == 51 == get.detail["reported"]  # 5 % of 1,024
    full = R.real_kvm_lines(1 << 10)[1]
    assert "note" not in full.detail and full.detail["measured_pages"] == 1 << 10

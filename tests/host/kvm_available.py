"""Host tests drive this machine's real /dev/kvm; they are skipped, with the reason shown in
pytest's -ra summary, where it cannot be used (missing, not permitted, not x86-64)."""

import pytest

from engine.host.device import unavailable_reason

KVM_REASON = unavailable_reason()


def needs_kvm():
    """A mark that skips a test with the sentence saying why KVM is unusable here."""
    return pytest.mark.skipif(KVM_REASON is not None, reason=f"host KVM unusable: {KVM_REASON}")

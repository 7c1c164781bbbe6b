"""``dirtylog perftest --kvm``: the selftest's report lines with times measured on the host."""

import re

from kvm_available import needs_kvm

from engine.cli.main import main

pytestmark = needs_kvm()
TIME = r"\d+\.\d{9}s"


def test_report_lines_measured_and_compared(capsys):
    assert main(["perftest", "--kvm", "--compare", "-b", "4M", "-v", "2", "-i", "2", "-a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("Times below are measured on this host's real KVM")
    heads = [re.split(r": | took ", line)[0] for line in lines[1:] if line]
    assert heads == [
        "Populate memory time",
        "Enabling dirty logging time",
        "Iteration 1 dirty memory time",
        "Iteration 1 get dirty log time",
        "Iteration 1 clear dirty log time",
        "Iteration 2 dirty memory time",
        "Iteration 2 get dirty log time",
        "Iteration 2 clear dirty log time",
        "Disabling dirty logging time",
        "Get dirty log over 2 iterations",
        "Clear dirty log over 2 iterations",
    ]
    for line in lines[1:]:
        if line:
            assert re.search(rf": {TIME}   \[modelled {TIME}\]$", line) or re.search(
                rf"took {TIME}\. \(Avg {TIME}/iteration\)   \[modelled {TIME}\]$", line
            ), line


def test_ring_mode_and_limits(capsys):
    assert main(["perftest", "--kvm", "-b", "2M", "-i", "2", "-g", "--mode", "ring"]) == 0
    out = capsys.readouterr().out
    assert "clear dirty log" not in out and "Iteration 2 get dirty log time" in out
    assert main(["perftest", "--kvm", "-b", "5G"]) == 2
    assert "at most 4 GiB" in capsys.readouterr().err
    assert main(["perftest", "--kvm", "-b", "2M", "--mode", "dbm"]) == 2
    assert main(["perftest", "--kvm", "-b", "2M", "-m", "7"]) == 2
    assert "host's own guest mode" in capsys.readouterr().err

"""``dirtylog perftest --kvm --compare``: the arithmetic of its numbers (never their speed).

Each ``[modelled …]`` is the modelled command's figure for the same options, line by line, and
the measured totals add the measured iterations (dirty_log_perf_test.c: timespec_add of each
iteration's time, the average the total ÷ iterations)."""

import re

from kvm_available import needs_kvm

from engine.cli.main import main

pytestmark = needs_kvm()
TIME = re.compile(r"(\d+)\.(\d{9})s")


def _ns(text: str) -> list[int]:
    return [int(a) * 1_000_000_000 + int(b) for a, b in TIME.findall(text)]


def _by_label(out: str) -> dict[str, str]:
    return {
        re.split(r": | took ", line)[0]: line
        for line in out.splitlines()
        if TIME.search(line) and not line.startswith("Times below")
    }


def test_compare_brackets_are_the_modelled_figures_and_totals_add_up(capsys):
    # THP blocks, 2 vCPUs: iteration 2 splits blocks (each vCPU's share in the model)
    opts = ["-b", "4M", "-v", "2", "-i", "2", "-s", "anonymous_thp"]
    assert main(["perftest", *opts]) == 0
    modelled = _by_label(capsys.readouterr().out)
    assert main(["perftest", "--kvm", "--compare", *opts]) == 0
    measured = _by_label(capsys.readouterr().out)
    assert set(measured) == set(modelled)
    for label, line in measured.items():
        value, bracket = line.split("   [modelled ")
        # the bracket is the modelled line's first figure (a total, not its average)
        assert _ns(bracket) == _ns(modelled[label])[:1], label
        assert len(_ns(value)) == (2 if " took " in line else 1)
    # the modelled split share: 1024 stores x 25 ns + 1024 exits x 2500 ns + 4 / 2 splits x
    # (3000 + 1500) ns
    assert _ns(modelled["Iteration 2 dirty memory time"]) == [25_600 + 2_560_000 + 9_000]
    assert _ns(modelled["Disabling dirty logging time"]) == [32 * 2]  # 2048 pages: 32 words
    for kind in ("get", "clear"):
        per_it = [_ns(measured[f"Iteration {i} {kind} dirty log time"])[0] for i in (1, 2)]
        total, avg = _ns(measured[f"{kind.capitalize()} dirty log over 2 iterations"].split("[")[0])
        assert total == sum(per_it)
        assert avg == total // 2  # the selftest truncates (timespec_div)

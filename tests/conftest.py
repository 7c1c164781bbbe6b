"""Test configuration: Qt runs offscreen (CI has no display), hypothesis is bounded and
derandomized (the same examples on every run, so the suite's time is the same everywhere),
and ``--slow`` adds the long variants (random examples, more of them, larger runs)."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "default",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "slow", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("slow" if os.environ.get("DIRTYLOG_SLOW_TESTS") else "default")

# Mutation testing (mutation/run.py): mutmut sets MUTANT_UNDER_TEST in every process it runs
# tests in.  Its first pass caps every property test at MUTATION_EXAMPLES derandomized examples
# (a failure there is a real kill); run.py then reruns that pass's survivors with
# DIRTYLOG_MUTATION_FULL=1, which keeps each test's own example count, so a mutant survives
# only what the whole suite would let through.
MUTATION_EXAMPLES = 8
MUTATION_FAST = "MUTANT_UNDER_TEST" in os.environ and not os.environ.get("DIRTYLOG_MUTATION_FULL")
settings.register_profile(
    "mutation", parent=settings.get_profile("default"), max_examples=MUTATION_EXAMPLES
)
if MUTATION_FAST and not os.environ.get("DIRTYLOG_SLOW_TESTS"):
    settings.load_profile("mutation")


@pytest.fixture
def thread_client_factory():
    """``factory(workers)``: a Dask client on a one-thread in-process cluster bound to
    127.0.0.1 (fast to start), for tests of how a sweep is driven; tests/test_sweep.py covers
    worker processes and a real scheduler."""
    import contextlib

    @contextlib.contextmanager
    def factory(workers=1):
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=False,
                dashboard_address=None,
                scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                worker_dashboard_address="127.0.0.1:0",
            ) as cluster,
            Client(cluster) as c,
        ):
            yield c

    return factory


def pytest_addoption(parser):
    parser.addoption(
        "--slow",
        action="store_true",
        help="also run the tests marked slow, and run the property tests with random examples "
        "and their long example counts",
    )
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the long input-fuzzing profile (tests/test_fuzz_input.py): every mutant run "
        "to its end in a subprocess, with time and memory limits",
    )


SLOW_TIMEOUT_S = 1800


@pytest.hookimpl(tryfirst=True)  # before pytest-timeout reads its setting
def pytest_configure(config):
    if config.getoption("--slow", default=False):
        os.environ["DIRTYLOG_SLOW_TESTS"] = "1"
        settings.load_profile("slow")
        if config.getoption("timeout", default=None) is None:  # (an explicit --timeout wins)
            config.option.timeout = SLOW_TIMEOUT_S  # long variants run 200 examples
    if config.getoption("--fuzz-long", default=False):
        os.environ["DIRTYLOG_FUZZ_LONG"] = "1"


def _cap_examples(items):
    """The mutation pass's cap also over a test's own ``@settings(max_examples=...)``."""
    for item in items:
        test = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is not None and own.max_examples > MUTATION_EXAMPLES:
            test._hypothesis_internal_use_settings = settings(own, max_examples=MUTATION_EXAMPLES)


def pytest_collection_modifyitems(config, items):
    if config.getoption("--slow", default=False):
        return
    if MUTATION_FAST:
        _cap_examples(items)
    skip = pytest.mark.skip(reason="a long variant: run with --slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)

"""pytest plugin for tests/test_cannot_be_fooled.py: records, for every test, how many emulated
kernel launches it made and whether it passed, into the JSON file named by PYGAN_LAUNCH_AUDIT.

Loaded only in that test's subprocess (`-p _launch_audit`, with tests/ on sys.path), where
PYGAN_EMU_SKIP_LAUNCH=1 makes every emulated launch return without running its kernel. Hypothesis
runs without shrinking and without its example database there: the first failing example is
enough, and the deliberately broken kernels must leave nothing behind for the real runs.
"""

import json
import os

import pytest

_RESULTS = {}


def pytest_configure(config):
    try:
        from hypothesis import Phase, settings
    except ImportError:
        return
    settings.register_profile(
        "launch-audit", database=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], print_blob=False
    )
    settings.load_profile("launch-audit")


def _launches():
    from pygan import _emu

    return _emu._emulation_launches()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before = _launches()
    yield
    entry = _RESULTS.setdefault(item.nodeid, {"outcome": "passed"})
    entry["launches"] = _launches() - before


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    entry = _RESULTS.setdefault(item.nodeid, {"outcome": "passed"})
    if report.failed:
        entry["outcome"] = "failed"
    elif report.skipped and entry["outcome"] == "passed":
        entry["outcome"] = "skipped"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("PYGAN_LAUNCH_AUDIT")
    if path:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(_RESULTS, f, indent=1, sort_keys=True)

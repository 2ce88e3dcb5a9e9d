"""pytest plugin (entry point ``pytest11``): ``pytest --timm-sched-fix [end|begin]`` runs any suite with
``timm_sched_fix.patch()`` in effect, so a project's own tests (or timm's) show what the fix changes.

Without the option the plugin does nothing: it imports neither timm nor torch and patches nothing. It also
provides the ``lr_trace_golden`` fixture (see :mod:`timm_sched_fix.golden`), inert unless a test asks for it.
With the option, the tests of timm's own ``tests/test_scheduler.py`` that assert a behaviour the fix changes
on purpose are marked as expected deviations (strict xfail, with the reason) and listed in the summary.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from timm_sched_fix.options import CONVENTIONS, DEFAULT_CONVENTION

OPTION = "--timm-sched-fix"

#: Tests of timm's ``tests/test_scheduler.py`` (timm >= 1.0.24) whose assertion the fix changes on purpose:
#: regular expression for the node id after ``test_scheduler.py::`` -> why the fix changes the result.
EXPECTED_DEVIATIONS: dict[str, str] = {}

#: (node id, reason) of the tests marked as expected deviations in this session.
_DEVIATED = pytest.StashKey[list]()
#: Whether this plugin made the patch() in effect (else the suite's own is kept, and left to the suite).
_PATCHED_HERE = pytest.StashKey[bool]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("timm-sched-fix")
    group.addoption(
        OPTION, dest="timm_sched_fix", nargs="?", const=DEFAULT_CONVENTION, default=None, metavar="|".join(CONVENTIONS),
        help=f"run the tests with timm_sched_fix.patch(convention=...) in effect; the convention is {DEFAULT_CONVENTION} "
             "(timm's) when none is given, begin as in --timm-sched-fix begin or --timm-sched-fix=begin. "
             "timm's own scheduler tests that assert what the fix changes become expected deviations",
    )
    group.addoption(
        "--lr-trace-update", dest="lr_trace_update", action="store_true", default=False,
        help="lr_trace_golden: write the golden LR trace files instead of comparing with them",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """``--timm-sched-fix begin`` means ``--timm-sched-fix=begin``, and a bare ``--timm-sched-fix`` followed by
    anything else means ``=end``: rewritten here (``args`` includes ``addopts`` and ``PYTEST_ADDOPTS``) so the
    optional value never takes a test path, nor a path the value."""
    if OPTION not in args:
        return
    rewritten: list[str] = []
    given = iter(args)
    for arg in given:
        if arg != OPTION:
            rewritten.append(arg)
            continue
        value = next(given, None)
        if value in CONVENTIONS:
            rewritten.append(f"{OPTION}={value}")
        else:
            rewritten.append(f"{OPTION}={DEFAULT_CONVENTION}")
            if value is not None:
                rewritten.append(value)
    args[:] = rewritten
    early_config.known_args_namespace = parser.parse_known_args(args, namespace=copy.copy(early_config.option))


def _convention(config: pytest.Config) -> Any:
    return config.getoption("timm_sched_fix")


@pytest.hookimpl(trylast=True)  # after the suite's own pytest_configure, so a patch() it makes is seen
def pytest_configure(config: pytest.Config) -> None:
    convention = _convention(config)
    if convention is None:
        return
    if convention not in CONVENTIONS:
        raise pytest.UsageError(
            f"{OPTION} takes {' or '.join(map(repr, CONVENTIONS))} ({OPTION} begin or {OPTION}=begin), "
            f"got {convention!r}")
    from timm_sched_fix._patching import patch, patch_options

    config.stash[_DEVIATED] = []
    suite = patch_options()
    config.stash[_PATCHED_HERE] = suite is None
    if suite is None:
        patch(convention=convention)
    elif suite.convention != convention:
        raise pytest.UsageError(
            f"{OPTION}={convention} asks for patch(convention={convention!r}), but the suite already called "
            f"patch() with {suite}: the conventions conflict. Drop {OPTION} (the suite's patch() is in effect) "
            "or make them agree")
    # else: the suite's own patch() (its on_lag and auto included) stays in effect


def pytest_unconfigure(config: pytest.Config) -> None:
    if config.stash.get(_PATCHED_HERE, False):
        from timm_sched_fix._patching import unpatch

        unpatch()


def expected_deviation(nodeid: str) -> str | None:
    """The reason a test of timm's scheduler suite deviates under the fix, or None."""
    if "test_scheduler.py::" not in nodeid:
        return None
    test = nodeid.split("test_scheduler.py::", 1)[1]
    for pattern, reason in EXPECTED_DEVIATIONS.items():
        if re.fullmatch(pattern, test):
            return reason
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _convention(config) not in CONVENTIONS:
        return
    for item in items:
        reason = expected_deviation(item.nodeid)
        if reason is not None:
            item.add_marker(pytest.mark.xfail(reason=f"timm-sched-fix expected deviation: {reason}", strict=True))
            config.stash[_DEVIATED].append((item.nodeid, reason))


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    convention = _convention(config)
    if convention not in CONVENTIONS:
        return None
    from timm_sched_fix._patching import patch_options

    return [f"timm-sched-fix: patch() in effect with {patch_options()}"
            + ("" if config.stash.get(_PATCHED_HERE, True) else " (the suite's own)")]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if _convention(config) not in CONVENTIONS:
        return
    deviated = config.stash[_DEVIATED]
    terminalreporter.section(f"timm-sched-fix: {len(deviated)} expected deviation(s)")
    for nodeid, reason in deviated:
        terminalreporter.write_line(f"{nodeid}: {reason}")


@pytest.fixture
def lr_trace_golden(request: pytest.FixtureRequest) -> Any:
    """Compare a scheduler config's per-step LR trace with a golden JSON file next to the test
    (``<test dir>/golden/<name>.json``); ``--lr-trace-update`` (re)writes the files."""
    from timm_sched_fix.golden import GoldenTraces

    return GoldenTraces(request.path.parent / "golden", update=request.config.getoption("lr_trace_update"))

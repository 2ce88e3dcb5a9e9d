import pytest
import timm
from hypothesis import HealthCheck, settings

import timm_sched_fix

from defect_cases import table_lines

# Property tests (tests/test_properties.py): "ci" runs >= 500 examples per property and is the default, so
# `.ci/run` and a plain `pytest` check the same amount; "soak" is for long local runs:
# `pytest tests/test_properties.py --hypothesis-profile=soak`.
settings.register_profile("ci", max_examples=500, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("soak", parent=settings.get_profile("ci"), max_examples=50_000)
# The version matrix's older releases (nox passes it for every timm but the environment's own): the same
# properties, fewer examples, to keep the whole CI near 20 minutes; the newest timm gets "ci".
settings.register_profile("matrix", parent=settings.get_profile("ci"), max_examples=100)
settings.load_profile("ci")

# Tests marked `release_independent` check a surface the timm release does not change (CLI plumbing, files,
# console scripts, torch.distributed): each is costly (subprocesses that import torch), so the version matrix
# runs them once, against the environment's own (newest) timm, and nox passes --skip-release-independent
# for the older releases. Everything that depends on the release (timing, compat, state dicts, what
# `check` and `trace` compute) stays unmarked and runs on every release.
RELEASE_INDEPENDENT_HELP = ("skip tests marked release_independent (the version matrix's older timm releases: "
                            "they run against the environment's own timm)")


def pytest_addoption(parser):
    parser.addoption("--skip-release-independent", action="store_true", help=RELEASE_INDEPENDENT_HELP)


def pytest_configure(config):
    config.addinivalue_line("markers", "release_independent(why): checks something the timm release does not "
                                       "change; skipped under --skip-release-independent")
    config.addinivalue_line("markers", "engines: needs DeepSpeed (the engines extra); run by the nox session engines, "
                                       "left out of the version matrix")


def pytest_collection_modifyitems(config, items):
    skip = config.getoption("--skip-release-independent")
    for item in items:
        marker = item.get_closest_marker("release_independent")
        if marker is None:
            continue
        if len(marker.args) != 1:
            raise pytest.UsageError(f"{item.nodeid}: release_independent takes one argument, why the timm release "
                                    "does not matter")
        if skip:
            item.add_marker(pytest.mark.skip(reason=f"release-independent ({marker.args[0]}): runs against the "
                                                    f"environment's own timm, not timm {timm.__version__}"))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the first-step defect table as measured in this run (stock vs fixed vs the schedule), when
    the run included test_defects.py (read from the reports, so it also works under pytest-xdist)."""
    reports = [report for reports in terminalreporter.stats.values() for report in reports]
    if any("test_defects.py" in getattr(report, "nodeid", "") for report in reports):
        terminalreporter.section(f"first optimizer step: stock vs fixed (timm {timm.__version__})")
        for line in table_lines():
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def no_patch_leaks_between_tests():
    yield
    if timm_sched_fix.is_patched():
        timm_sched_fix.unpatch()
        pytest.fail("the test left timm patched")


@pytest.fixture(scope="session")
def installed_python(tmp_path_factory):
    """The python of a fresh venv with this project installed from its wheel (tests/helpers/installed.py): its Python
    processes run the start-up hook."""
    import installed

    directory = tmp_path_factory.mktemp("wheel-install")
    python = installed.venv(directory / "venv")
    installed.install(installed.build(directory), python)
    return python

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

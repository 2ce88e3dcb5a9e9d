import pytest
import timm

import timm_sched_fix

from defect_cases import table_lines


def pytest_collection_modifyitems(session, config, items):
    config._print_defect_table = any(item.path.name == "test_defects.py" for item in items)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the first-step defect table as measured in this run (stock vs fixed vs the schedule)."""
    if getattr(config, "_print_defect_table", False):
        terminalreporter.section(f"first optimizer step: stock vs fixed (timm {timm.__version__})")
        for line in table_lines():
            terminalreporter.write_line(line)


@pytest.fixture(autouse=True)
def no_patch_leaks_between_tests():
    yield
    if timm_sched_fix.is_patched():
        timm_sched_fix.unpatch()
        pytest.fail("the test left timm patched")

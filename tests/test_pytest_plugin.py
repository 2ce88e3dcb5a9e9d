"""The pytest plugin (entry point pytest11): inert without ``--timm-sched-fix``; with it, the run is patched
with the chosen convention, and listed expected deviations of timm's scheduler tests become strict xfails."""

import subprocess
import sys

import pytest

from timm_sched_fix import pytest_plugin

pytest_plugins = ["pytester"]

PATCHED_CHECK = """
import sys
import timm_sched_fix

def test_state():
    from timm.scheduler import TanhLRScheduler
    import torch
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = TanhLRScheduler(optimizer, t_initial=10)
    assert timm_sched_fix.is_patched()
    assert scheduler.last_t == 0
    print("CONVENTION", scheduler.state_dict()["timm_sched_fix"]["convention"])
"""


def test_loading_the_plugin_imports_neither_timm_nor_torch():
    code = "import sys, timm_sched_fix.pytest_plugin; assert 'timm' not in sys.modules and 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, check=False)
    assert result.returncode == 0, result.stderr


def test_without_the_option_nothing_is_patched(pytester):
    pytester.makepyfile(test_plain="""
        import timm_sched_fix

        def test_untouched():
            assert not timm_sched_fix.is_patched()
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize("before, after, convention", [
    (["--timm-sched-fix"], [], "end"),  # bare, with the path right after it
    ([], ["--timm-sched-fix"], "end"),  # bare, last
    (["--timm-sched-fix", "begin"], [], "begin"),  # the value as its own argument, then the path
    (["--timm-sched-fix", "end"], [], "end"),
    (["--timm-sched-fix=begin"], [], "begin"),
    (["--timm-sched-fix=end"], [], "end"),
])
def test_option_patches_the_run_with_the_convention(pytester, before, after, convention):
    path = pytester.makepyfile(test_patched=PATCHED_CHECK)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-s", *before, str(path), *after)
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([f"*CONVENTION {convention}", "*timm-sched-fix: 0 expected deviation(s)*"])


def test_option_in_addopts_takes_its_value_too(pytester):
    pytester.makeini("[pytest]\naddopts = --timm-sched-fix begin\n")
    path = pytester.makepyfile(test_patched=PATCHED_CHECK)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-s", str(path))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*CONVENTION begin"])


def test_unknown_convention_is_a_usage_error(pytester):
    pytester.makepyfile(test_patched=PATCHED_CHECK)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--timm-sched-fix=middle")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--timm-sched-fix takes 'end' or 'begin'*'middle'*"])


def test_listed_deviations_become_strict_xfails_and_are_named(pytester, monkeypatch):
    monkeypatch.setitem(pytest_plugin.EXPECTED_DEVIATIONS, r"TestLr::test_changed\[.*\]", "the fix moves this LR")
    pytester.makepyfile(test_scheduler="""
        import pytest

        class TestLr:
            @pytest.mark.parametrize("n", [1, 2])
            def test_changed(self, n):
                assert False

            def test_unchanged(self):
                pass
    """)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--timm-sched-fix")
    result.assert_outcomes(passed=1, xfailed=2)
    result.stdout.fnmatch_lines([
        "*timm-sched-fix: 2 expected deviation(s)*",
        "test_scheduler.py::TestLr::test_changed[[]1[]]: the fix moves this LR",
    ])
    without = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    without.assert_outcomes(passed=1, failed=2)  # nothing is marked without the option

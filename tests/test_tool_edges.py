"""The tools at their edges: ``trace`` refuses, before building anything, run lengths it cannot hold and noise timm
cannot draw; the pytest plugin keeps a suite's own ``patch()`` or stops naming the conflict;
``TorchScheduler.step(epoch=...)`` gets the adapter's explanation; malformed position records and state dicts get
``ValueError`` naming the key with nothing changed; ``--report`` gives a forked child its own block."""

import copy
import subprocess
import sys

import pytest

import timm_sched_fix
from timm_sched_fix import _noise as noise
from timm_sched_fix import cli
from timm_sched_fix.trace import compute as trace_steps
from timm_sched_fix.trace import settings as trace_settings

from support import group_lrs, make_optimizer

pytest_plugins = ["pytester"]


# -- trace ------------------------------------------------------------------------------------------------

@pytest.fixture
def nothing_built(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the trace was built before its settings were refused")

    monkeypatch.setattr(trace_steps, "compute_trace", refuse)


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "100000000", "--updates-per-epoch", "1000", "--per-update"],
     "= 100,000,000,000 optimizer steps; trace builds at most 10,000,000"),
    (["--epochs", "100000000"], "--updates-per-epoch 1 = 100,000,000 optimizer steps"),
    (["--sched-on-updates", "--epochs", "300", "--updates-per-epoch", "33334"], "= 10,000,200 optimizer steps"),
    (["--epochs", "3", "--warmup-epochs", "0", "--lr-noise", "0", "--lr-noise-pct", "0"],
     "--lr-noise-pct 0.0: timm redraws its LR noise until it falls within this limit"),
    (["--epochs", "3", "--warmup-epochs", "0", "--lr-noise", "0.5", "--lr-noise-pct", "1e-7"],
     "takes over 1,000,000 draws per value; give at least 1.26e-06"),
    (["--epochs", "3", "--warmup-epochs", "0", "--out", "missing/trace.csv"], "the folder 'missing' does not exist"),
])
def test_trace_refuses_before_building(capsys, nothing_built, args, message):
    assert cli.main(["trace", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_trace_length_limit_and_noise_check_are_exact():
    trace_settings.check_trace_length(trace_settings.MAX_TRACE_STEPS, 1)
    with pytest.raises(trace_settings.UsageError):
        trace_settings.check_trace_length(trace_settings.MAX_TRACE_STEPS + 1, 1)
    smallest = noise.smallest_drawable_pct()
    trace_settings.check_noise_drawable(smallest, "--lr-noise-pct")
    for undrawable in (0.0, -0.5, smallest * 0.99, float("nan")):
        with pytest.raises(trace_settings.UsageError, match="--lr-noise-pct"):
            trace_settings.check_noise_drawable(undrawable, "--lr-noise-pct")


def test_noise_limit_zero_without_noise_is_no_error(capsys):
    assert cli.main(["trace", "--epochs", "3", "--warmup-epochs", "0", "--lr-noise-pct", "0"]) == 0


# -- the pytest plugin and a suite's own patch() ----------------------------------------------------------

SUITE_CONFTEST = """
import timm_sched_fix

def pytest_configure(config):
    timm_sched_fix.patch(on_lag="fix")

def pytest_unconfigure(config):
    timm_sched_fix.unpatch()
"""
SUITE_TEST = """
from timm_sched_fix._patching import patch_options

def test_the_suites_options_hold():
    assert patch_options().on_lag == "fix"
"""


@pytest.mark.parametrize("option", ["--timm-sched-fix", "--timm-sched-fix=end"])
def test_plugin_keeps_the_suites_own_patch(pytester, option):
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE_TEST)
    try:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", option)
    finally:
        timm_sched_fix.unpatch()
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([("*patch() in effect with Options(convention='end', auto=False, on_lag='fix') "
                                 "(the suite's own)*")])


def test_plugin_stops_on_a_conflicting_convention(pytester):
    pytester.makeconftest(SUITE_CONFTEST)
    pytester.makepyfile(test_suite=SUITE_TEST)
    try:
        result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "--timm-sched-fix", "begin")
    finally:
        timm_sched_fix.unpatch()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([("*--timm-sched-fix=begin asks for patch(convention='begin'), but the suite already "
                                 "called patch() with Options(convention='end'*on_lag='fix'): the conventions "
                                 "conflict*")])


# -- TorchScheduler.step(epoch=...) ---------------------------------------------------------------------------

@pytest.mark.parametrize("plateau", [False, True])
def test_torch_scheduler_step_epoch_keyword_is_explained(plateau):
    optimizer = make_optimizer()
    timm_scheduler = (timm_sched_fix.PlateauLRScheduler(optimizer) if plateau
                      else timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10))
    scheduler = timm_sched_fix.TorchScheduler(timm_scheduler)
    optimizer.step()
    before = (group_lrs(optimizer), scheduler.last_epoch, scheduler.last_t)
    with pytest.raises(TypeError, match="epoch argument is deprecated") as by_keyword:
        scheduler.step(0.5, epoch=5) if plateau else scheduler.step(epoch=5)
    if not plateau:
        with pytest.raises(TypeError) as by_position:
            scheduler.step(5)
        assert str(by_keyword.value) == str(by_position.value)
    assert (group_lrs(optimizer), scheduler.last_epoch, scheduler.last_t) == before


# -- malformed position records and state dicts ---------------------------------------------------------------

def record_with(**values):
    def change(state):
        state["timm_sched_fix"].update(values)
    return change


def extra_keys(*keys):
    def change(state):
        state.update(dict.fromkeys(keys, 1))
    return change


@pytest.mark.parametrize(("change", "message"), [
    (record_with(next_count=10**500), (r"\['next_count'\] must be None or a finite, non-negative number, got an "
                                      r"integer of 501 digits")),
    (record_with(next_count=10**5000), r"\['next_count'\] .* got an integer of over 3,000 digits"),
    (record_with(last_t=-(10**400)), r"\['last_t'\] must be None or a finite"),
    (record_with(last_t=float("inf")), r"\['last_t'\] must be None or a finite"),
    (record_with(scheduler=["CosineLRScheduler"]), "saved by a ..CosineLRScheduler.., cannot load"),
    (extra_keys(3, "x"), r"it has \['x', 3\]"),
    (extra_keys((1, 2), None, 2.5, "y"), r"it has \['y', \(1, 2\), 2\.5, None\]"),
])
def test_malformed_records_and_keys_are_value_errors_changing_nothing(change, message):
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    optimizer.step()
    scheduler.step(1)
    state = scheduler.state_dict()
    bad = copy.deepcopy(state)
    change(bad)
    lrs = group_lrs(optimizer)
    with pytest.raises(ValueError, match=message):
        scheduler.load_state_dict(bad)
    assert group_lrs(optimizer) == lrs
    assert scheduler.state_dict() == state


def test_torch_scheduler_state_dict_with_mixed_keys_is_a_value_error():
    scheduler = timm_sched_fix.TorchScheduler(timm_sched_fix.CosineLRScheduler(make_optimizer(), t_initial=10))
    state = scheduler.state_dict()
    with pytest.raises(ValueError, match="not a TorchScheduler state dict"):
        scheduler.load_state_dict({**state, 3: 1, "x": 2})


# -- --report and a forked child ------------------------------------------------------------------------------

FORKING = """\
import os, torch
from timm.scheduler import CosineLRScheduler

def build(lr):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    CosineLRScheduler(optimizer, t_initial=4, warmup_t=2, warmup_lr_init=lr / 10)
    optimizer.step()

build(0.1)
child = os.fork()
if child == 0:
    build(0.2)
    raise SystemExit(0)  # through the runner, as a forked training script's child ends
print("child", child, flush=True)
os.waitpid(child, 0)
"""


@pytest.mark.release_independent("process handling of the report")
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="os.fork")
def test_report_gives_a_forked_child_its_own_block(tmp_path):
    (tmp_path / "forking.py").write_text(FORKING)
    result = subprocess.run([sys.executable, "-m", "timm_sched_fix", "run", "--report", "--no-children",
                             "forking.py"], cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr
    child = int(result.stdout.split()[1])
    blocks = [block for block in result.stderr.split("timm-sched-fix report, ")[1:]]
    assert len(blocks) == 2, result.stderr
    (child_block,) = [block for block in blocks if f"(pid {child})" in block]
    (parent_block,) = [block for block in blocks if block is not child_block]
    for block, lr in ((child_block, "0.02"), (parent_block, "0.01")):
        assert "patch() fixed 1 scheduler\n" in block
        assert f"first optimizer step ran with lr {lr}" in block

"""What differs between the supported torch releases (compat's torch quirks), checked on the installed torch, and the
error or warning below the supported range. The nox session ``torch`` runs this (and the whole suite) on the oldest,
a middle and the newest supported torch; the range itself is ``compat.OLDEST_TORCH``.

- ``lr_scheduler_counts_optimizer_steps`` (torch 2.0 - 2.3): torch's ``LRScheduler`` counts ``optimizer.step()``
  calls in ``optimizer._step_count``, which only its own ``_initial_step`` starts;
- ``sequential_lr_steps_with_epoch_0`` (torch 2.0 - 2.8): ``SequentialLR`` restarts a scheduler at its milestone
  with ``step(0)``; torch 2.9+ with ``_update_lr(0)``. Both forms are driven here on every torch.
"""

import json
import subprocess
import sys
import warnings

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix import cli
from timm_sched_fix._compat import torch_releases
from timm_sched_fix._timing import timing_of

from support import StepRecorder, assert_trace, group_lrs, make_optimizer, no_warnings_from_fix, stock_scheduler

UPDATES = 12
KWARGS = dict(t_initial=UPDATES, lr_min=1e-4, warmup_t=2, warmup_lr_init=1e-3, t_in_epochs=False)
NAMES = ["CosineLRScheduler", "TanhLRScheduler", "StepLRScheduler"]  # in every timm release


def stock_values(name, kwargs, periods):
    optimizer = make_optimizer()
    stock = stock_scheduler(name, optimizer, kwargs)
    values = []
    for t in range(periods + 1):
        stock.step_update(t)
        values.append(group_lrs(optimizer))
    return values


def kwargs_of(name):
    if name == "StepLRScheduler":
        return dict(decay_t=3, decay_rate=0.5, warmup_t=1, warmup_lr_init=1e-3, t_in_epochs=False)
    return dict(KWARGS)


# -- the step counter of torch 2.0 - 2.3 -------------------------------------------------------------------

def test_torch_schedulers_step_counter_counts_every_optimizer_step():
    """Where torch's LRScheduler wraps ``optimizer.step`` in its counter (torch 2.0 - 2.3), the adapter starts the
    count as torch's own schedulers do: no AttributeError, and the count torch's warnings read is the steps taken."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(optimizer, **KWARGS))
    with no_warnings_from_fix():
        for _ in range(5):
            optimizer.step()
            scheduler.step()
    if getattr(optimizer.step, "_with_counter", False):
        assert optimizer._step_count == 5
    assert scheduler.last_epoch == 5 and scheduler.last_t == 5


def test_another_torch_scheduler_on_the_same_optimizer_keeps_counting():
    """A torch scheduler built first wrapped ``optimizer.step`` already; the adapter's start of the count is the one
    torch's own second scheduler would make."""
    optimizer = make_optimizer()
    torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0)
    scheduler = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(optimizer, **KWARGS))
    with no_warnings_from_fix():
        for _ in range(3):
            optimizer.step()
            scheduler.step()
    assert scheduler.last_t == 3


# -- SequentialLR's two milestone forms, and ChainedScheduler ------------------------------------------------

@pytest.mark.parametrize("restart", ["step(0)", "_update_lr(0)"])
@pytest.mark.parametrize("name", NAMES)
def test_both_milestone_forms_restart_the_schedule_at_v0(name, restart):
    """``step(0)`` (SequentialLR of torch 2.0 - 2.8) and ``_update_lr(0)`` (torch 2.9+) after a few updates: the next
    optimizer step runs with v(0) and the schedule counts on from there, with nothing counted for the restart."""
    kwargs = kwargs_of(name)
    values = stock_values(name, kwargs, UPDATES)
    optimizer = make_optimizer()
    recorder = StepRecorder(optimizer)
    scheduler = timm_sched_fix.TorchScheduler(stock_scheduler(name, optimizer, kwargs))
    with no_warnings_from_fix():
        for _ in range(4):
            optimizer.step()
            scheduler.step()
        scheduler.step(0) if restart == "step(0)" else scheduler._update_lr(0)
        assert (scheduler.last_epoch, scheduler.last_t) == (0, 0)
        for _ in range(5):
            optimizer.step()
            scheduler.step()
    assert_trace(recorder.steps, values[:4] + values[:5])
    assert scheduler.get_last_lr() == values[5]


def test_step_0_of_a_plateau_schedule_is_its_metric():
    """PlateauLRScheduler's ``step(metric)``: 0 is a metric there, not the milestone form."""
    if not hasattr(timm.scheduler, "PlateauLRScheduler"):
        pytest.skip("this timm has no PlateauLRScheduler")
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(stock_scheduler("PlateauLRScheduler", optimizer,
                                                              dict(warmup_t=2, warmup_lr_init=1e-3, mode="min")))
    for _ in range(3):
        optimizer.step()
        scheduler.step(0)
    assert scheduler.last_epoch == 3 and scheduler.last_t == 3


@pytest.mark.parametrize("name", NAMES)
def test_chained_scheduler_runs_the_composition_written_by_hand(name):
    """ChainedScheduler steps every part each time: with an ExponentialLR after the adapter, every optimizer step
    runs with what the same chain built from a LambdaLR returning the schedule's own v(t) gives."""
    kwargs = kwargs_of(name)
    values = stock_values(name, kwargs, UPDATES)

    def run(first):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
        recorder = StepRecorder(optimizer)
        parts = [first(optimizer), torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9)]
        chained = torch.optim.lr_scheduler.ChainedScheduler(parts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # torch's own notices about chained calls
            for _ in range(UPDATES):
                optimizer.step()
                chained.step()
        return recorder.steps

    def by_hand(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: values[t][0] / 0.1)

    def adapted(optimizer):
        return timm_sched_fix.TorchScheduler(stock_scheduler(name, optimizer, kwargs))

    with no_warnings_from_fix():
        actual = run(adapted)
    assert_trace(actual, run(by_hand))


# -- below the supported range -------------------------------------------------------------------------------

@pytest.fixture
def torch_without_step_hooks(monkeypatch):
    """The installed torch as compat would see torch 1.13 (no optimizer step hooks): only the feature flag changes,
    so what follows is the package's own reaction to it."""
    monkeypatch.setattr(torch_releases, "OPTIMIZER_STEP_HOOKS", False)
    monkeypatch.setattr(torch_releases, "TORCH_VERSION", "1.13.1")


def assert_names_torch_and_what_is_missing(text):
    assert "torch >= 2.0" in text and "torch 1.13.1" in text and "register_step_pre_hook" in text


def test_unsupported_torch_is_none_on_this_torch():
    assert compat.OPTIMIZER_STEP_HOOKS and compat.unsupported_torch() is None
    assert compat.TORCH_RELEASE >= tuple(int(part) for part in compat.OLDEST_TORCH.split("."))


def test_below_the_range_wrap_dropins_factories_and_adapter_raise_and_change_nothing(torch_without_step_hooks):
    optimizer = make_optimizer()
    stock = timm.scheduler.TanhLRScheduler(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3)
    before = group_lrs(optimizer)
    calls = {
        "wrap": lambda: timm_sched_fix.wrap(stock),
        "drop-in": lambda: timm_sched_fix.TanhLRScheduler(optimizer, t_initial=10),
        "TorchScheduler": lambda: timm_sched_fix.TorchScheduler(stock),
        "create_scheduler": lambda: timm_sched_fix.create_scheduler(None, optimizer),  # refused before args are read
    }
    for name, call in calls.items():
        with pytest.raises(RuntimeError) as raised:
            call()
        assert_names_torch_and_what_is_missing(str(raised.value))
        assert group_lrs(optimizer) == before, name
    assert timing_of(stock) is None


def test_below_the_range_patch_warns_once_and_timm_stays_stock(torch_without_step_hooks):
    with pytest.warns(RuntimeWarning) as caught:
        timm_sched_fix.patch()
    assert len(caught) == 1
    assert_names_torch_and_what_is_missing(str(caught[0].message))
    assert "stock" in str(caught[0].message)
    assert not timm_sched_fix.is_patched()
    optimizer = make_optimizer()
    assert timing_of(timm.scheduler.CosineLRScheduler(optimizer, t_initial=10)) is None


@pytest.mark.parametrize("command", [["check"], ["trace", "--epochs", "3"]])
def test_below_the_range_the_commands_say_why_and_exit_2(torch_without_step_hooks, command, capsys):
    assert cli.main(command) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("timm-sched-fix needs torch >= 2.0")
    assert_names_torch_and_what_is_missing(captured.err)


# -- a compiled optimizer step before torch 2.13 ----------------------------------------------------------------

#: Run in a fresh interpreter: on torch 2.1 a compiled ``optimizer.step`` changes how later optimizers in the same
#: process run (measured on 2.1.2: in one process, the second compiled step's auto mode kept its first LR and the
#: suite's hook-based recorders saw no step afterwards), so each compilation gets a process of its own. Prints each update's LR, read off the parameter (SGD, gradient 1).
COMPILED_STEP = r"""
import json, sys
import torch
import timm_sched_fix
auto = sys.argv[1] == "auto"
try:
    import torch._dynamo
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.1)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=auto, t_initial=8, warmup_t=3, warmup_lr_init=1e-3,
                                                 t_in_epochs=False)
    step = torch.compile(optimizer.step, backend="eager")
    lrs = []
    for k in range(8):
        parameter.grad = torch.ones(1)
        before = parameter.item()
        step()
        lrs.append(before - parameter.item())
        if not auto:
            scheduler.step_update(k + 1)
except RuntimeError as error:
    if "not yet supported" not in str(error):  # torch 2.0 on Python 3.11: no torch.compile
        raise
    print(json.dumps({"skip": str(error)}))
else:
    print(json.dumps({"lrs": lrs}))
"""


@pytest.mark.skipif(compat.UNTRACED_IN_COMPILED_STEP, reason="torch 2.13+: tests/test_compiled_step.py checks more")
@pytest.mark.parametrize("auto", [False, True], ids=["explicit", "auto"])
def test_compiled_step_before_torch_2_13_runs_with_the_schedule_values(auto):
    """Before torch 2.13 dynamo traces the fix's step hook as it is (compat quirk ``compiled_step_traces_hooks``):
    documented as right LRs, with recompilations (dynamo's eager backend: no C++ compiler needed)."""
    kwargs = dict(t_initial=8, warmup_t=3, warmup_lr_init=1e-3, t_in_epochs=False)
    values = stock_values("CosineLRScheduler", kwargs, 8)
    result = subprocess.run([sys.executable, "-c", COMPILED_STEP, "auto" if auto else "explicit"], check=False,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    if "skip" in found:
        pytest.skip(f"torch.compile does not run here: {found['skip']}")
    assert found["lrs"] == pytest.approx([value[0] for value in values[:8]], rel=1e-6)

"""``TorchScheduler`` in a plain PyTorch loop: every scheduler class, both conventions, its unit's interval;
PyTorch's protocol (``get_last_lr``, ``last_epoch``, ``state_dict``) and the refusals of bad input."""

import warnings

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix._timing import timing_of

from support import (
    PLATEAU_REFERENCE_METRIC,
    StepRecorder,
    assert_trace,
    expected_trace,
    group_lrs,
    installed_classes,
    make_optimizer,
    no_warnings_from_fix,
    reference_values,
    stock_kwargs,
    stock_scheduler,
)

EPOCHS, BATCHES = 5, 3
METRIC = PLATEAU_REFERENCE_METRIC  # never improves; the reference's stock PlateauLRScheduler gets the same


def unit_cases():
    for name in installed_classes():
        for on_epochs in (True, False):
            if name == "PlateauLRScheduler" and not on_epochs:
                continue
            for groups in (1, 3):
                yield pytest.param(name, on_epochs, groups,
                                   id=f"{name}-{'epoch' if on_epochs else 'step'}-{groups}g")


def periods_of(on_epochs):
    return EPOCHS if on_epochs else EPOCHS * BATCHES


def build(name, optimizer, on_epochs):
    return stock_scheduler(name, optimizer, stock_kwargs(name, periods_of(on_epochs), on_epochs))


def reference(name, on_epochs, groups):
    """v(t) per group; PlateauLRScheduler's comes from stock step(t, METRIC), the metric the loop passes."""
    kwargs = stock_kwargs(name, periods_of(on_epochs), on_epochs)
    return reference_values(name, kwargs, groups, periods_of(on_epochs), on_epochs)


def torch_style_loop(scheduler, optimizer, *, on_epochs, convention):
    """PyTorch's habit: ``step()`` after ``optimizer.step()`` or after the epoch ("end"), or before ("begin")."""
    metric = METRIC if isinstance(scheduler.timm_scheduler, timm.scheduler.PlateauLRScheduler) else None
    call = (lambda: scheduler.step(metric)) if metric is not None else scheduler.step
    for _ in range(EPOCHS):
        if on_epochs and convention == "begin":
            call()
        for _ in range(BATCHES):
            if not on_epochs and convention == "begin":
                call()
            optimizer.step()
            if not on_epochs and convention == "end":
                call()
        if on_epochs and convention == "end":
            call()


@pytest.mark.parametrize("convention", ["end", "begin"])
@pytest.mark.parametrize("name, on_epochs, groups", list(unit_cases()))
def test_every_step_runs_with_the_schedule_value(name, on_epochs, groups, convention):
    optimizer = make_optimizer(groups)
    with no_warnings_from_fix():
        scheduler = timm_sched_fix.TorchScheduler(build(name, optimizer, on_epochs), convention=convention)
        recorder = StepRecorder(optimizer)
        torch_style_loop(scheduler, optimizer, on_epochs=on_epochs, convention=convention)
    values = reference(name, on_epochs, groups)
    assert_trace(recorder.steps, expected_trace(values, epochs=EPOCHS, batches=BATCHES, on_epochs=on_epochs))


def test_it_is_a_pytorch_lr_scheduler_with_pytorch_bookkeeping():
    optimizer = make_optimizer(groups=2)
    scheduler = timm_sched_fix.TorchScheduler(build("CosineLRScheduler", optimizer, on_epochs=False))
    assert isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
    assert scheduler.interval == "step" and scheduler.optimizer is optimizer
    assert (scheduler.last_epoch, scheduler.last_t, scheduler.get_last_lr()) == (0, 0, group_lrs(optimizer))
    for k in range(1, 4):
        optimizer.step()
        scheduler.step()
        assert (scheduler.last_epoch, scheduler.last_t, scheduler.get_last_lr()) == (k, k, group_lrs(optimizer))


@pytest.mark.parametrize("on_epochs", [True, False])
def test_state_dict_resumes_through_torch_save(tmp_path, on_epochs):
    name, groups, stop = "CosineLRScheduler", 3, 2
    optimizer = make_optimizer(groups)
    scheduler = timm_sched_fix.TorchScheduler(build(name, optimizer, on_epochs))
    for _ in range(stop if on_epochs else stop * BATCHES):
        optimizer.step()
        scheduler.step()
    torch.save(scheduler.state_dict(), tmp_path / "scheduler.pt")

    optimizer = make_optimizer(groups)
    resumed = timm_sched_fix.TorchScheduler(build(name, optimizer, on_epochs))
    resumed.load_state_dict(torch.load(tmp_path / "scheduler.pt"))  # weights_only: plain data only
    assert (resumed.last_epoch, resumed.get_last_lr()) == (scheduler.last_epoch, scheduler.get_last_lr())
    recorder = StepRecorder(optimizer)
    for _ in range(EPOCHS - stop):
        for _ in range(BATCHES):
            optimizer.step()
            if not on_epochs:
                resumed.step()
        if on_epochs:
            resumed.step()
    values = reference_values(name, stock_kwargs(name, periods_of(on_epochs), on_epochs), groups,
                              periods_of(on_epochs), on_epochs)
    assert_trace(recorder.steps, expected_trace(values, epochs=EPOCHS, batches=BATCHES,
                                                on_epochs=on_epochs)[stop * BATCHES:])


@pytest.mark.parametrize("fixed_by", ["wrap", "dropin", "patch"])
def test_takes_an_already_fixed_scheduler(fixed_by):
    optimizer = make_optimizer()
    kwargs = stock_kwargs("CosineLRScheduler", EPOCHS, True)
    if fixed_by == "patch":
        with timm_sched_fix.patched():
            inner = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
    elif fixed_by == "wrap":
        inner = timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(optimizer, **kwargs))
    else:
        inner = timm_sched_fix.CosineLRScheduler(optimizer, **kwargs)
    scheduler = timm_sched_fix.TorchScheduler(inner)
    recorder = StepRecorder(optimizer)
    torch_style_loop(scheduler, optimizer, on_epochs=True, convention="end")
    values = reference_values("CosineLRScheduler", kwargs, 1, EPOCHS, on_epochs=True)
    assert_trace(recorder.steps, expected_trace(values, epochs=EPOCHS, batches=BATCHES, on_epochs=True))


# -- bad input: a clear error or warning, and nothing changes ------------------------------------------

@pytest.mark.parametrize("interval, message", [("step", "t_in_epochs=False"), ("batch", "interval must be one of")])
def test_interval_of_the_other_unit_is_refused_before_anything_is_fixed(interval, message):
    optimizer = make_optimizer()
    stock = timm.scheduler.TanhLRScheduler(optimizer, t_initial=EPOCHS)  # stock leaves 0.1, v(0) is 0.0999999
    with pytest.raises(ValueError, match=message):
        timm_sched_fix.TorchScheduler(stock, interval=interval)
    assert timing_of(stock) is None and group_lrs(optimizer) == [0.1]


def test_not_a_timm_scheduler_is_refused():
    optimizer = make_optimizer()
    with pytest.raises(TypeError, match="TorchScheduler expects a timm scheduler"):
        timm_sched_fix.TorchScheduler(torch.optim.lr_scheduler.StepLR(optimizer, step_size=1))


def test_a_scheduler_fixed_with_another_convention_is_refused():
    optimizer = make_optimizer()
    inner = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=EPOCHS, convention="begin")
    with pytest.raises(ValueError, match="convention='begin'"):
        timm_sched_fix.TorchScheduler(inner)


def test_step_with_an_argument_on_a_non_plateau_schedule_is_refused():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(build("CosineLRScheduler", optimizer, on_epochs=True))
    optimizer.step()
    before = group_lrs(optimizer)
    with pytest.raises(TypeError, match="takes no argument"):
        scheduler.step(3)
    assert (group_lrs(optimizer), scheduler.last_epoch, scheduler.last_t) == (before, 0, 0)


def test_plateau_step_without_the_metric_is_refused():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(build("PlateauLRScheduler", optimizer, on_epochs=True))
    optimizer.step()
    before = group_lrs(optimizer)
    with pytest.raises(TypeError, match=r"step\(val_loss\)"):
        scheduler.step()
    assert (group_lrs(optimizer), scheduler.last_epoch, scheduler.last_t) == (before, 0, 0)


def test_first_step_before_optimizer_step_warns_like_pytorch():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(build("CosineLRScheduler", optimizer, on_epochs=True))
    with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="before optimizer.step"):
        scheduler.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()
        scheduler.step()


@pytest.mark.parametrize("bad, message", [
    ({"last_epoch": 3}, "not a TorchScheduler state dict"),
    ("state", "not a TorchScheduler state dict"),
    ("other interval", "interval='step'"),
    ("negative count", "non-negative int"),
    ("other class", "saved by a TanhLRScheduler"),
])
def test_bad_state_dict_is_refused_and_changes_nothing(bad, message):
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.TorchScheduler(build("CosineLRScheduler", optimizer, on_epochs=True))
    optimizer.step()
    scheduler.step()
    good = scheduler.state_dict()
    if bad == "other interval":
        bad = dict(good, interval="step")
    elif bad == "negative count":
        bad = dict(good, last_epoch=-1)
    elif bad == "other class":
        other = timm_sched_fix.TorchScheduler(build("TanhLRScheduler", make_optimizer(), on_epochs=True))
        bad = other.state_dict()
    optimizer.step()
    scheduler.step()
    before = (group_lrs(optimizer), scheduler.state_dict())
    with pytest.raises(ValueError, match=message):
        scheduler.load_state_dict(bad)
    assert (group_lrs(optimizer), scheduler.state_dict()) == before


def test_unknown_convention_is_refused_before_anything_is_fixed():
    optimizer = make_optimizer()
    inner = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=EPOCHS)
    with pytest.raises(ValueError, match="convention must be one of"):
        timm_sched_fix.TorchScheduler(inner, convention="middle")
    stock = timm.scheduler.TanhLRScheduler(optimizer, t_initial=EPOCHS)
    with pytest.raises(ValueError, match="convention must be one of"):
        timm_sched_fix.TorchScheduler(stock, convention="middle")
    assert timing_of(stock) is None and group_lrs(optimizer) == [0.1]


# -- composed by torch.optim.lr_scheduler.SequentialLR ----------------------------------------------------

COMPOSED_EPOCHS = 8


def sequential(optimizer, timm_part, position, milestone):
    """SequentialLR with ``timm_part`` at ``position`` (0: first, 1: after a LinearLR warmup, 2: between it and a
    decay); the torch parts are built in the same order around it."""
    lr_scheduler = torch.optim.lr_scheduler
    before = [lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=3)] if position else []
    middle = [timm_part(optimizer)]
    after = [lr_scheduler.ExponentialLR(optimizer, gamma=0.7)] if position != 1 else []
    schedulers = before + middle + after
    milestones = [milestone * (i + 1) for i in range(len(schedulers) - 1)]
    return lr_scheduler.SequentialLR(optimizer, schedulers, milestones=milestones)


def composed_run(make_timm_part, position, on_epochs):
    """The LR of every optimizer step of a loop that calls the composed scheduler's ``step()`` as PyTorch does."""
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1},
                                 {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.05}], lr=0.1)
    scheduler = sequential(optimizer, make_timm_part, position, milestone=3 if on_epochs else 3 * BATCHES)
    recorder = StepRecorder(optimizer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # PyTorch's own notices about SequentialLR and chained calls
        for _ in range(COMPOSED_EPOCHS):
            for _ in range(BATCHES):
                optimizer.step()
                if not on_epochs:
                    scheduler.step()
            if on_epochs:
                scheduler.step()
    return recorder.steps


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "last", "middle"])
@pytest.mark.parametrize("name, on_epochs", [(name, on_epochs) for name in installed_classes()
                                             for on_epochs in (True, False) if name != "PlateauLRScheduler"])
def test_sequential_lr_runs_the_composition_written_by_hand(name, on_epochs, position):
    """Every optimizer step runs with the value of the same SequentialLR built from a LambdaLR that returns the timm
    schedule's own v(t) (per param group): the timm part starts at v(0) wherever it comes, and PyTorch's initial
    step is no step of the schedule."""
    periods = COMPOSED_EPOCHS * (1 if on_epochs else BATCHES)
    kwargs = stock_kwargs(name, periods, on_epochs)
    values = [[lr / base for lr, base in zip(lrs, (0.1, 0.05))]
              for lrs in reference_values_for_groups(name, kwargs, periods, on_epochs)]

    def by_hand(optimizer):
        return torch.optim.lr_scheduler.LambdaLR(optimizer, [lambda t, g=g: values[t][g] for g in range(2)])

    def adapted(optimizer):
        return timm_sched_fix.TorchScheduler(stock_scheduler(name, optimizer, kwargs))

    with no_warnings_from_fix():
        actual = composed_run(adapted, position, on_epochs)
    assert_trace(actual, composed_run(by_hand, position, on_epochs))


def reference_values_for_groups(name, kwargs, periods, on_epochs):
    """v(0..periods) for the two groups of ``composed_run`` (LRs 0.1 and 0.05, no lr_scale)."""
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.1},
                                 {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.05}], lr=0.1)
    stock = stock_scheduler(name, optimizer, kwargs)
    values = []
    for t in range(periods + 1):
        stock.step(t) if on_epochs else stock.step_update(t)
        values.append(group_lrs(optimizer))
    return values


def test_the_sequential_lr_repro():
    """/work/shared/repro/sequentiallr.py: as the first scheduler the epochs ran with v(1..3) (SequentialLR's initial
    step was counted), as a later one the milestone raised NotImplementedError."""
    optimizer = make_optimizer()
    recorder = StepRecorder(optimizer)
    first = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(optimizer, t_initial=6))
    composed = torch.optim.lr_scheduler.SequentialLR(
        optimizer, [first, torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=3)],
        milestones=[3])
    for _ in range(3):
        optimizer.step()
        composed.step()
    reference = make_optimizer()
    stock = timm.scheduler.CosineLRScheduler(reference, t_initial=6)
    values = []
    for epoch in range(3):
        stock.step(epoch)
        values.append(group_lrs(reference)[0])
    assert recorder.first_group() == values

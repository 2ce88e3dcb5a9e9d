"""The "Bad input" table (docs/reference/bad-input.md), row by row: each bad input gets its error or warning, and no LR changes
(nor the scheduler's state). Every row runs through every adapter where the input applies to it."""

from __future__ import annotations

import math
import warnings

import pytest
import timm.scheduler
import torch

import timm_sched_fix

from support import ADAPTERS, fixed_scheduler, make_optimizer, stock_scheduler

COSINE = dict(t_initial=10, warmup_t=2, warmup_lr_init=1e-3)


def lrs(optimizer):
    return [float(group["lr"]) for group in optimizer.param_groups]


def started(adapter, on_epochs=True, name="CosineLRScheduler", kwargs=None, **options):
    """A fixed scheduler two periods in, one optimizer step run with v(2)."""
    optimizer = make_optimizer(2)
    kwargs = dict(COSINE, t_in_epochs=on_epochs) if kwargs is None else kwargs
    context = fixed_scheduler(adapter, name, optimizer, kwargs, **options)
    scheduler = context.__enter__()
    for t in (1, 2):
        scheduler.step(t, 1.0) if on_epochs else scheduler.step_update(t)
    optimizer.step()
    return optimizer, scheduler, context


def unchanged(optimizer, scheduler):
    return lrs(optimizer), repr(scheduler.state_dict())


def across_the_0_5_rename(state):
    """The installed Cosine's state dict as the other side of timm 0.5 saves it: 0.4.12's ``t_mul``/``decay_rate``
    under timm 0.5.4+, 0.5.4+'s ``cycle_mul``/``cycle_decay`` under 0.4.12 (quirk ``cycle_args_renamed_0_5``)."""
    renamed = {k: v for k, v in state.items() if k not in ("t_mul", "decay_rate", "cycle_mul", "cycle_decay")}
    if "cycle_mul" in state:
        return dict(renamed, t_mul=1.0, decay_rate=1.0)
    return dict(renamed, cycle_mul=1.0, cycle_decay=1.0)


# (row label, kind of input, on_epochs, scheduler class, action, expected exception or warning, message)
CALLS = [
    ("negative index", True, lambda s: s.step(-1), ValueError, "non-negative"),
    ("NaN index", True, lambda s: s.step(math.nan), ValueError, "finite"),
    ("infinite index", False, lambda s: s.step_update(math.inf), ValueError, "finite"),
    ("non-numeric index", False, lambda s: s.step_update("3"), TypeError, "non-negative number"),
    ("tensor index of two numbers", True, lambda s: s.step(torch.tensor([1, 2])), TypeError, "non-negative number"),
    ("complex index", True, lambda s: s.step(1j), TypeError, "non-negative number"),
    ("step() without an index on an update schedule", False, lambda s: s.step(), timm_sched_fix.ScheduleCallWarning,
     "changes nothing"),
    ("step_update() without an index on an epoch schedule", True, lambda s: s.step_update(),
     timm_sched_fix.ScheduleCallWarning, "changes nothing"),
    ("state dict that is not a mapping", True, lambda s: s.load_state_dict([("a", 1)]), TypeError, "mapping"),
    ("state dict of another class", True,
     lambda s: s.load_state_dict(timm.scheduler.StepLRScheduler(make_optimizer(2), decay_t=2).state_dict()),
     ValueError, "does not belong|saved by a StepLRScheduler"),
    ("truncated state dict", True,
     lambda s: s.load_state_dict({k: v for k, v in s.state_dict().items() if k != "t_initial"}), ValueError,
     "lacks"),
    ("corrupted state-dict value", True, lambda s: s.load_state_dict(dict(s.state_dict(), t_initial="x")),
     ValueError, "unchanged"),
    ("malformed position record", True,
     lambda s: s.load_state_dict(dict(s.state_dict(), timm_sched_fix={"last_t": -1})), ValueError, "position record"),
    ("Cosine state dict from the other side of timm 0.5 (t_mul/decay_rate vs cycle_mul/cycle_decay)", True,
     lambda s: s.load_state_dict(across_the_0_5_rename(s.state_dict())), ValueError, "timm 0.5"),
]


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("label, on_epochs, action, expected, message", CALLS, ids=[row[0] for row in CALLS])
def test_bad_call_is_refused_and_changes_nothing(label, on_epochs, action, expected, message, adapter):
    optimizer, scheduler, context = started(adapter, on_epochs, on_lag="raise")
    try:
        before = unchanged(optimizer, scheduler)
        if issubclass(expected, Warning):
            with pytest.warns(expected, match=message):
                action(scheduler)
        else:
            with pytest.raises(expected, match=message):
                action(scheduler)
        assert unchanged(optimizer, scheduler) == before
    finally:
        context.__exit__(None, None, None)


def plateau(adapter):
    return started(adapter, name="PlateauLRScheduler", kwargs=dict(warmup_t=1, patience_t=0, mode="min"))


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_non_numeric_plateau_metric_is_refused_and_changes_nothing(adapter):
    optimizer, scheduler, context = plateau(adapter)
    try:
        scheduler.step(3, 1.0)
        before = unchanged(optimizer, scheduler)
        with pytest.raises(TypeError, match="metric"):
            scheduler.step(4, "low")
        assert unchanged(optimizer, scheduler) == before
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("metric", [math.nan, math.inf, -math.inf])
def test_non_finite_plateau_metric_runs_as_stock_and_warns_once(adapter, metric):
    """Stock timm trains on: torch's ReduceLROnPlateau counts NaN/inf as no improvement and lowers the LR."""
    stock_optimizer = make_optimizer(2)
    stock = stock_scheduler("PlateauLRScheduler", stock_optimizer, dict(warmup_t=1, patience_t=0, mode="min"))
    for t in (1, 2):
        stock.step(t, 1.0)
    stock_optimizer.step()
    optimizer, scheduler, context = plateau(adapter)
    try:
        for epoch, value in ((3, 1.0),):
            stock.step(epoch, value)
            scheduler.step(epoch, value)
        with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="not finite"):
            scheduler.step(4, metric)
        stock.step(4, metric)
        assert lrs(optimizer) == lrs(stock_optimizer)
        with warnings.catch_warnings():
            warnings.simplefilter("error", timm_sched_fix.ScheduleCallWarning)
            scheduler.step(5, metric)  # once per scheduler
            stock.step(5, metric)
        assert lrs(optimizer) == lrs(stock_optimizer)
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_param_group_removed_after_building_is_refused(adapter):
    optimizer, scheduler, context = started(adapter)
    try:
        del optimizer.param_groups[1]
        before = lrs(optimizer)
        with pytest.raises(ValueError, match="cannot be removed"):
            scheduler.step(3)
        assert lrs(optimizer) == before
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("on_epochs", [True, False])
def test_a_lag_under_on_lag_raise_raises_and_changes_nothing(adapter, on_epochs):
    """The second period of a one-period lag (DeiT's step(epoch) after the epoch, step_update(k) after update k)."""
    optimizer = make_optimizer(2)
    with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, dict(COSINE, t_in_epochs=on_epochs),
                         on_lag="raise") as scheduler:
        call = scheduler.step if on_epochs else scheduler.step_update
        for index in (0, 1):
            for _ in range(2 if on_epochs else 1):
                optimizer.step()
            if index == 0:
                call(index)  # a first lagging call proves nothing: applied as stock timm does
        before = unchanged(optimizer, scheduler)
        with pytest.raises(timm_sched_fix.ScheduleLagError, match="late"):
            call(1)
        assert unchanged(optimizer, scheduler) == before


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bool_index_is_read_as_stock_timm_reads_it_and_warned(adapter):
    stock_optimizer = make_optimizer(2)
    stock = timm.scheduler.CosineLRScheduler(stock_optimizer, **COSINE)  # before patch() comes into force
    optimizer, scheduler, context = started(adapter)
    try:
        with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="bool"):
            scheduler.step(True)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            stock.step(True)
        assert lrs(optimizer) == lrs(stock_optimizer) and scheduler.last_t == 1
    finally:
        context.__exit__(None, None, None)


@pytest.mark.parametrize("adapter", ["patch", "dropin"])  # wrap() comes after the constructor (docs/reference/limits.md)
def test_call_without_index_while_position_unknown(adapter):
    optimizer = make_optimizer(2)
    optimizer.param_groups[0]["initial_lr"] = optimizer.param_groups[1]["initial_lr"] = 0.1
    with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, dict(COSINE, initialize=False)) as scheduler:
        before = lrs(optimizer)
        with pytest.raises(RuntimeError, match="needs a known position"):
            scheduler.step()
        assert lrs(optimizer) == before


class NoGroups:
    param_groups = None


@pytest.mark.parametrize("adapter", ["patch", "dropin"])
@pytest.mark.parametrize("optimizer", [NoGroups(), None, [torch.zeros(1)]], ids=["no groups", "None", "list"])
def test_wrong_optimizer_is_refused_before_construction(adapter, optimizer):
    with pytest.raises(TypeError, match="needs an optimizer with param_groups"), \
            fixed_scheduler(adapter, "CosineLRScheduler", optimizer, COSINE):
        pass


@pytest.mark.parametrize("adapter", ["patch", "dropin"])
def test_param_group_without_lr_is_refused_before_construction(adapter):
    optimizer = make_optimizer(2)
    del optimizer.param_groups[1]["lr"]
    before = [dict(group) for group in optimizer.param_groups]
    with pytest.raises(ValueError, match=r"param_groups\[1\] has no 'lr'"), \
            fixed_scheduler(adapter, "CosineLRScheduler", optimizer, COSINE):
        pass
    assert [dict(group) for group in optimizer.param_groups] == before


@pytest.mark.parametrize("options, expected", [
    (dict(convention="middle"), ValueError), (dict(on_lag="shout"), ValueError), (dict(auto="yes"), TypeError),
])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_bad_option_is_refused_before_anything_is_built(adapter, options, expected):
    optimizer = make_optimizer(2)
    stock = timm.scheduler.CosineLRScheduler(optimizer, **COSINE) if adapter == "wrap" else None
    before = lrs(optimizer)
    with pytest.raises(expected):
        if stock is not None:
            timm_sched_fix.wrap(stock, **options)
        else:
            with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, COSINE, **options):
                pass
    assert lrs(optimizer) == before
    assert not timm_sched_fix.is_patched()


@pytest.mark.parametrize("thing", [object(), torch.optim.lr_scheduler.StepLR(make_optimizer(), 2), None])
def test_wrap_of_something_else_is_refused(thing):
    with pytest.raises(TypeError, match="expects a timm scheduler"):
        timm_sched_fix.wrap(thing)


def test_update_call_on_epoch_schedule_without_step_update_ever_warns_once():
    """``step(e)`` on an update schedule that never got a ``step_update`` call: the LR never moved."""
    optimizer, scheduler, context = started("dropin", on_epochs=False)
    context.__exit__(None, None, None)
    optimizer = make_optimizer(2)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **COSINE, t_in_epochs=False)
    optimizer.step()
    before = lrs(optimizer)
    with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="changes nothing"):
        scheduler.step(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler.step(2)  # once per scheduler
    assert lrs(optimizer) == before

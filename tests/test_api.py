"""The public surface of a fixed scheduler: wrap/unwrap, last_t, get_last_lr, state dicts, auto mode,
tensor LRs, hooks, and bad input that changes nothing."""

import contextlib
import gc
import math
import warnings

import numpy as np
import pytest
import timm.scheduler
import torch

import timm_sched_fix

from support import StepRecorder, group_lrs, make_optimizer


def cosine(optimizer, **kwargs):
    return timm.scheduler.CosineLRScheduler(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3, **kwargs)


def hooks(optimizer):
    return len(optimizer._optimizer_step_pre_hooks)


# -- wrap / unwrap --------------------------------------------------------------------------------

def test_wrap_forwards_everything_and_twice_is_the_same_object():
    stock = cosine(make_optimizer())
    fixed = timm_sched_fix.wrap(stock)
    assert isinstance(fixed, timm.scheduler.CosineLRScheduler)
    assert fixed.t_initial == 10 and fixed.optimizer is stock.optimizer
    assert timm_sched_fix.wrap(fixed) is fixed
    assert timm_sched_fix.wrap(stock) is fixed
    assert timm_sched_fix.unwrap(fixed) is stock


def test_wrap_rejects_what_is_not_a_timm_scheduler():
    optimizer = make_optimizer()
    with pytest.raises(TypeError, match="expects a timm scheduler"):
        timm_sched_fix.wrap(torch.optim.lr_scheduler.StepLR(optimizer, 1))
    with pytest.raises(TypeError, match="what wrap\\(\\) returned"):
        timm_sched_fix.unwrap(cosine(optimizer))


def per_update(optimizer):
    return timm.scheduler.CosineLRScheduler(optimizer, t_initial=8, warmup_t=2, warmup_lr_init=1e-3, t_in_epochs=False)


def per_update_values(steps):
    reference = per_update(make_optimizer())
    values = []
    for k in range(steps):
        reference.step_update(k)
        values.append(reference.optimizer.param_groups[0]["lr"])
    return values


def test_wrap_with_other_options_reconfigures_a_patched_scheduler_in_place():
    """The most specific options win: wrap(scheduler, auto=True) on a scheduler fixed by patch() (as under
    `import timm_sched_fix.auto`) keeps its position and drives it from then on."""
    optimizer = make_optimizer()
    with timm_sched_fix.patched():
        scheduler = per_update(optimizer)
    recorder = StepRecorder(optimizer)
    for k in range(3):
        optimizer.step()
        scheduler.step_update(k + 1)
    fixed = timm_sched_fix.wrap(scheduler, auto=True)
    assert fixed.last_t == 3 and fixed.__wrapped__ is scheduler
    for _ in range(3, 8):
        optimizer.step()
    assert recorder.first_group() == pytest.approx(per_update_values(8), rel=1e-12, abs=0)
    assert timm_sched_fix.wrap(scheduler, auto=True) is fixed
    assert timm_sched_fix.wrap(fixed) is fixed  # options left out keep what the scheduler has
    assert fixed.state_dict()["timm_sched_fix"]["convention"] == "end"
    with pytest.raises(ValueError, match="convention"):
        timm_sched_fix.wrap(fixed, convention="middle")
    assert fixed.last_t == 7


def test_wrap_with_another_convention_right_after_construction_takes_its_first_index():
    optimizer = make_optimizer()
    fixed = timm_sched_fix.wrap(per_update(optimizer))  # "end": pre-advanced to v(0), next call v(1)
    assert timm_sched_fix.wrap(fixed, convention="begin") is fixed
    recorder = StepRecorder(optimizer)
    for _ in range(4):  # a "begin" loop: the call before each step
        fixed.step_update()
        optimizer.step()
    assert recorder.first_group() == pytest.approx(per_update_values(4), rel=1e-12, abs=0)


def test_unwrap_removes_the_hook_and_makes_the_scheduler_stock():
    optimizer = make_optimizer()
    fixed = timm_sched_fix.wrap(cosine(optimizer))
    assert hooks(optimizer) == 1
    stock = timm_sched_fix.unwrap(fixed)
    assert hooks(optimizer) == 0
    stock.step(1)  # a stock step: v(1), no counting, no error
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 + (0.1 - 1e-3) / 2)


def test_garbage_collected_scheduler_leaves_no_hook():
    optimizer = make_optimizer()
    timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, auto=True)
    gc.collect()
    assert hooks(optimizer) == 0


# -- last_t, get_last_lr, counting ----------------------------------------------------------------

def test_last_t_and_get_last_lr_follow_the_applied_index():
    optimizer = make_optimizer(groups=3)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    assert scheduler.last_t == 0
    scheduler.step(4)
    assert scheduler.last_t == 4
    reference = timm.scheduler.CosineLRScheduler(make_optimizer(groups=3), t_initial=10)
    reference.step(4)  # v(4), lr_scale included where the installed timm applies it (0.6.13 on)
    assert scheduler.get_last_lr() == group_lrs(optimizer) == group_lrs(reference.optimizer)


@pytest.mark.parametrize("convention, first", [("end", 1), ("begin", 0)])
def test_counting_calls_apply_the_conventions_index(convention, first):
    scheduler = timm_sched_fix.CosineLRScheduler(make_optimizer(), t_initial=10, convention=convention)
    scheduler.step()
    assert scheduler.last_t == first
    scheduler.step(5)  # an explicit index re-bases the count
    scheduler.step()
    assert scheduler.last_t == 6


def test_auto_mode_needs_no_calls_and_explicit_calls_rebase():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=20, t_in_epochs=False, auto=True)
    recorder = StepRecorder(optimizer)
    for _ in range(3):
        optimizer.step()
    scheduler.step_update(10)  # e.g. a resume at update 10
    for _ in range(2):
        optimizer.step()
    reference = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=20, t_in_epochs=False)
    expected = []
    for t in (0, 1, 2, 10, 11):
        reference.step_update(t)
        expected.append(reference.optimizer.param_groups[0]["lr"])
    assert recorder.first_group() == pytest.approx(expected, rel=1e-12)


# -- tensor LRs -----------------------------------------------------------------------------------

@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("adapter", ["patch", "wrap", "dropin"])
def test_tensor_lr_is_filled_in_place_and_runs_the_schedule(adapter, groups):
    """torch shares one lr tensor between groups and timm keeps it as initial_lr: writing in place must
    neither mix the groups' values nor move the schedule's base values."""
    kwargs = dict(t_initial=6, warmup_t=2, warmup_lr_init=1e-3, t_in_epochs=False)
    reference = timm.scheduler.CosineLRScheduler(make_optimizer(groups), **kwargs)
    expected = []
    for t in range(6):
        reference.step_update(t)
        expected.append(group_lrs(reference.optimizer))
    optimizer = make_optimizer(groups, tensor_lr=True)
    with timm_sched_fix.patched() if adapter == "patch" else contextlib.nullcontext():
        if adapter == "dropin":
            scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **kwargs)
        else:
            scheduler = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
            if adapter == "wrap":
                scheduler = timm_sched_fix.wrap(scheduler)
        tensors = [group["lr"] for group in optimizer.param_groups]
        assert all(isinstance(tensor, torch.Tensor) for tensor in tensors)
        recorder = StepRecorder(optimizer)
        for update in range(6):
            optimizer.step()
            scheduler.step_update(update + 1)
    assert all(group["lr"] is tensor for group, tensor in zip(optimizer.param_groups, tensors))
    flat = [lr for lrs in recorder.steps for lr in lrs]
    assert flat == pytest.approx([lr for lrs in expected for lr in lrs], rel=1e-6)  # float32 tensors


@pytest.mark.parametrize("auto", [False, True])
def test_each_group_keeps_one_tensor_of_its_own_through_warmup_and_past_the_cycle(auto):
    """What keeps a compiled optimizer step from recompiling: over many steps, through the warmup and past
    the end of the cycle (where stock timm writes the float lr_min), every group's ``lr`` stays one tensor
    object, not shared with another group or ``initial_lr``, holding v(k) x lr_scale at step k."""
    kwargs = dict(t_initial=40, warmup_t=5, warmup_lr_init=1e-3, lr_min=1e-4, t_in_epochs=False)
    steps = 50
    reference = timm.scheduler.CosineLRScheduler(make_optimizer(3), **kwargs)
    expected = [group_lrs(reference.optimizer)]
    for k in range(1, steps):
        reference.step_update(k)
        expected.append(group_lrs(reference.optimizer))
    optimizer = make_optimizer(3, tensor_lr=True)
    assert len({id(group["lr"]) for group in optimizer.param_groups}) == 1  # torch shares the one tensor
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=auto, **kwargs)
    tensors = [group["lr"] for group in optimizer.param_groups]
    assert all(isinstance(tensor, torch.Tensor) for tensor in tensors)
    initial = {id(group["initial_lr"]) for group in optimizer.param_groups}
    assert len({id(tensor) for tensor in tensors}) == 3 and not initial & {id(tensor) for tensor in tensors}
    recorder = StepRecorder(optimizer)
    for update in range(steps):
        optimizer.step()
        if not auto:
            scheduler.step_update(update + 1)
    assert all(group["lr"] is tensor for group, tensor in zip(optimizer.param_groups, tensors))
    assert recorder.steps == [pytest.approx(lrs, rel=1e-6) for lrs in expected]  # float32 tensors


def test_tensor_lrs_stay_tensors_after_the_optimizer_loads_a_state_dict():
    """optimizer.load_state_dict() puts new param-group dicts in a new list (a resume): their tensor LRs are
    found again and filled in place, instead of being replaced by floats as the old groups' tensors were."""
    kwargs = dict(t_initial=20, warmup_t=2, warmup_lr_init=1e-3, t_in_epochs=False)
    reference = timm.scheduler.CosineLRScheduler(make_optimizer(3), **kwargs)
    optimizer = make_optimizer(3, tensor_lr=True)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **kwargs)
    for update in range(1, 4):
        scheduler.step_update(update)
    optimizer.load_state_dict(optimizer.state_dict())
    tensors = [group["lr"] for group in optimizer.param_groups]
    assert all(isinstance(tensor, torch.Tensor) for tensor in tensors)
    for update in range(4, 8):
        scheduler.step_update(update)
        reference.step_update(update)
        assert all(group["lr"] is tensor for group, tensor in zip(optimizer.param_groups, tensors))
        assert group_lrs(optimizer) == pytest.approx(group_lrs(reference.optimizer), rel=1e-6)


# -- state dicts ----------------------------------------------------------------------------------

def test_state_dict_carries_the_position_and_a_resume_pre_advances_to_it():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3)
    for epoch in range(1, 6):
        scheduler.step(epoch)
    saved_scheduler, saved_optimizer = scheduler.state_dict(), optimizer.state_dict()
    assert saved_scheduler["timm_sched_fix"]["last_t"] == 5

    resumed_optimizer = make_optimizer()
    resumed_optimizer.load_state_dict(saved_optimizer)
    resumed = timm_sched_fix.CosineLRScheduler(resumed_optimizer, t_initial=10, warmup_t=2, warmup_lr_init=1e-3,
                                              initialize=False)
    assert resumed.last_t is None
    resumed.load_state_dict(saved_scheduler)
    assert resumed.last_t == 5
    assert group_lrs(resumed_optimizer) == group_lrs(optimizer)
    resumed.step()
    assert resumed.last_t == 6


def test_stock_state_dict_loads_and_leaves_the_lrs_alone():
    optimizer = make_optimizer()
    stock = cosine(make_optimizer())
    fixed = timm_sched_fix.wrap(cosine(optimizer))
    fixed.step(3)
    before = group_lrs(optimizer)
    fixed.load_state_dict(stock.state_dict())
    assert group_lrs(optimizer) == before and fixed.last_t is None
    with pytest.raises(RuntimeError, match="needs a known position"):
        fixed.step()
    fixed.step(4)
    assert fixed.last_t == 4


def test_fixed_state_dict_loads_into_stock_timm():
    fixed = timm_sched_fix.CosineLRScheduler(make_optimizer(), t_initial=10)
    stock = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=10)
    stock.load_state_dict(fixed.state_dict())
    stock.step(3)
    fixed.step(3)
    assert group_lrs(stock.optimizer) == group_lrs(fixed.optimizer)


# -- bad input changes nothing --------------------------------------------------------------------

BAD_INDICES = [(-1, ValueError), (math.nan, ValueError), (math.inf, ValueError), ("3", TypeError), ([3], TypeError),
               (torch.tensor([1.0, 2.0]), TypeError), (torch.tensor(-1), ValueError), (np.array([3]), TypeError)]


@pytest.mark.parametrize("index, error", BAD_INDICES)
@pytest.mark.parametrize("method", ["step", "step_update"])
def test_bad_index_raises_and_changes_nothing(index, error, method):
    optimizer = make_optimizer(groups=3)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=method == "step")
    scheduler.step(2) if method == "step" else scheduler.step_update(2)
    before = group_lrs(optimizer)
    with pytest.raises(error, match="index"):
        getattr(scheduler, method)(index)
    assert group_lrs(optimizer) == before and scheduler.last_t == 2


@pytest.mark.parametrize("options", [dict(convention="middle"), dict(on_lag="shout"), dict(auto="yes")])
def test_bad_options_are_refused_before_anything_happens(options):
    optimizer = make_optimizer()
    with pytest.raises((ValueError, TypeError)):
        timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, **options)
    assert hooks(optimizer) == 0 and "initial_lr" not in optimizer.param_groups[0]
    with pytest.raises((ValueError, TypeError)):
        timm_sched_fix.patch(**options)
    assert not timm_sched_fix.is_patched()
    with pytest.raises((ValueError, TypeError)):
        timm_sched_fix.wrap(cosine(optimizer), **options)
    assert hooks(optimizer) == 0


@pytest.mark.parametrize("index", [None, 3])
@pytest.mark.parametrize("on_epochs, call", [(True, "step_update"), (False, "step")])
def test_call_for_the_other_unit_warns_once_and_changes_nothing(on_epochs, call, index):
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=on_epochs)
    optimizer.step()
    before = group_lrs(optimizer)
    arguments = () if index is None else (index,)
    with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="changes nothing"):
        getattr(scheduler, call)(*arguments)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        getattr(scheduler, call)(*arguments)  # once per scheduler
    assert group_lrs(optimizer) == before and scheduler.last_t == 0


@pytest.mark.parametrize("on_epochs", [True, False])
def test_train_py_calls_to_both_methods_stay_silent(on_epochs):
    """train.py calls step_update(n, metric=loss) and step(epoch + 1, metric) on every schedule."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=on_epochs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for update in range(1, 4):
            optimizer.step()
            scheduler.step_update(num_updates=update, metric=1.0)
        scheduler.step(1, 0.5)


def test_state_dict_of_another_class_is_refused_and_changes_nothing():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    scheduler.step(3)
    before_lrs, before_state = group_lrs(optimizer), scheduler.state_dict()
    other = timm_sched_fix.StepLRScheduler(make_optimizer(), decay_t=2)
    for state in (other.state_dict(), timm.scheduler.StepLRScheduler(make_optimizer(), decay_t=2).state_dict()):
        with pytest.raises(ValueError, match="StepLRScheduler|does not belong"):
            scheduler.load_state_dict(state)
        assert group_lrs(optimizer) == before_lrs and scheduler.state_dict() == before_state

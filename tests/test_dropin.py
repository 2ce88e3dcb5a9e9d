"""Drop-in classes and factories mirror the installed timm's signatures, with the three options added."""

import argparse
import inspect

import pytest
import timm.scheduler

import timm_sched_fix

from support import StepRecorder, installed_classes, make_optimizer

OPTIONS = ["convention", "auto", "on_lag"]


@pytest.mark.parametrize("name", installed_classes())
def test_every_timm_class_has_a_drop_in_with_its_signature_plus_options(name):
    timm_class, dropin = getattr(timm.scheduler, name), getattr(timm_sched_fix, name)
    assert issubclass(dropin, timm_class)
    timm_parameters = list(inspect.signature(timm_class).parameters)
    dropin_parameters = list(inspect.signature(dropin).parameters)
    assert dropin_parameters == timm_parameters + OPTIONS


@pytest.mark.parametrize("factory", ["create_scheduler", "create_scheduler_v2"])
def test_factories_keep_timm_signature_and_return_shape(factory):
    if not hasattr(timm.scheduler, factory):
        pytest.skip(f"timm {timm.__version__} has no {factory}")
    stock = getattr(timm.scheduler, factory)
    assert list(inspect.signature(getattr(timm_sched_fix, factory)).parameters) == [
        *inspect.signature(stock).parameters, *OPTIONS]
    def build(create, optimizer):
        if factory == "create_scheduler":  # every release has tanh; timm's stock first step misses v(0)
            args = argparse.Namespace(sched="tanh", epochs=5, decay_rate=0.1, warmup_epochs=0, min_lr=0,
                                      warmup_lr=1e-5, cooldown_epochs=0)
            return create(args, optimizer)
        return create(optimizer, sched="tanh", num_epochs=5)

    stock_scheduler, stock_epochs = build(stock, make_optimizer())
    stock_scheduler.step(0)
    schedule_value = stock_scheduler.optimizer.param_groups[0]["lr"]
    optimizer = make_optimizer()
    scheduler, num_epochs = build(getattr(timm_sched_fix, factory), optimizer)
    assert isinstance(scheduler, timm.scheduler.TanhLRScheduler) and num_epochs == stock_epochs
    recorder = StepRecorder(optimizer)
    optimizer.step()
    assert schedule_value != 0.1  # the stock constructor's value: the defect the fix removes
    assert recorder.first_group() == [schedule_value]


def test_train_py_resume_with_initialize_false_and_step_start_epoch():
    """timm's train.py resumes with the optimizer restored and ``step(start_epoch)``: no lag, v(start)."""
    kwargs = dict(t_initial=10, warmup_t=3, warmup_lr_init=1e-4)
    trained = make_optimizer()
    first = timm_sched_fix.CosineLRScheduler(trained, **kwargs)
    for epoch in range(1, 6):
        trained.step()
        first.step(epoch)
    optimizer = make_optimizer()
    optimizer.load_state_dict(trained.state_dict())
    resumed = timm_sched_fix.CosineLRScheduler(optimizer, **kwargs, initialize=False, on_lag="raise")
    assert resumed.last_t is None and optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    resumed.step(5)
    optimizer.step()
    resumed.step(6)
    assert resumed.last_t == 6

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
    optimizer = make_optimizer()
    if factory == "create_scheduler":
        args = argparse.Namespace(sched="multistep", epochs=5, decay_milestones=[1, 3], decay_rate=0.5,
                                  warmup_epochs=0, min_lr=0, warmup_lr=1e-5, cooldown_epochs=0)
        result = timm_sched_fix.create_scheduler(args, optimizer)
    else:
        result = timm_sched_fix.create_scheduler_v2(optimizer, sched="multistep", num_epochs=5,
                                                    decay_milestones=[1, 3], decay_rate=0.5)
    scheduler, num_epochs = result
    assert isinstance(scheduler, timm.scheduler.MultiStepLRScheduler) and num_epochs == 5
    recorder = StepRecorder(optimizer)
    optimizer.step()
    assert recorder.first_group() == [0.05]  # v(0): the milestone at 1 applies from epoch 0 in timm


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

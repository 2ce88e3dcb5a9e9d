"""The one-period lag (Lightning's documented ``scheduler.step(epoch=self.current_epoch)``): stock runs
the schedule one epoch late; the fix warns once, raises, or corrects it, as ``on_lag`` says."""

import contextlib
import warnings

import pytest
import timm.scheduler

import timm_sched_fix

from support import StepRecorder, expected_trace, make_optimizer, reference_values

EPOCHS, BATCHES = 6, 3
KWARGS = dict(t_initial=6, warmup_t=2, warmup_lr_init=1e-3)


def lightning_style_run(scheduler_factory):
    """6 epochs of 3 batches; after each epoch ``step(epoch=current_epoch)`` as Lightning documents."""
    optimizer = make_optimizer()
    scheduler = scheduler_factory(optimizer)
    recorder = StepRecorder(optimizer)
    for epoch in range(EPOCHS):
        for _ in range(BATCHES):
            optimizer.step()
        scheduler.step(epoch=epoch)
    return recorder.first_group()


def wrong_steps(trace):
    values = reference_values("CosineLRScheduler", KWARGS, 1, EPOCHS, on_epochs=True)
    expected = [lrs[0] for lrs in expected_trace(values, epochs=EPOCHS, batches=BATCHES, on_epochs=True)]
    return sum(1 for got, want in zip(trace, expected) if got != pytest.approx(want, rel=1e-12))


def test_stock_runs_15_of_18_steps_late():
    assert wrong_steps(lightning_style_run(lambda o: timm.scheduler.CosineLRScheduler(o, **KWARGS))) == 15


@pytest.mark.parametrize("adapter", ["patch", "wrap", "dropin"])
def test_lag_is_warned_once_and_keeps_stock_values(adapter):
    builders = {
        "patch": lambda o: timm.scheduler.CosineLRScheduler(o, **KWARGS),
        "wrap": lambda o: timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(o, **KWARGS)),
        "dropin": lambda o: timm_sched_fix.CosineLRScheduler(o, **KWARGS),
    }
    patch = timm_sched_fix.patched() if adapter == "patch" else contextlib.nullcontext()
    with patch, pytest.warns(timm_sched_fix.ScheduleLagWarning, match=r"step\(1\)") as caught:
        trace = lightning_style_run(builders[adapter])
    assert len([w for w in caught if issubclass(w.category, timm_sched_fix.ScheduleLagWarning)]) == 1
    assert wrong_steps(trace) == 15  # "warn" applies exactly what was asked, like stock timm


def test_on_lag_fix_corrects_every_step():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = lightning_style_run(lambda o: timm_sched_fix.CosineLRScheduler(o, **KWARGS, on_lag="fix"))
    assert wrong_steps(trace) == 0


def test_on_lag_raise_changes_nothing():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **KWARGS, on_lag="raise")
    optimizer.step()
    before = optimizer.param_groups[0]["lr"]
    with pytest.raises(timm_sched_fix.ScheduleLagError, match="one epoch late"):
        scheduler.step(0)
    assert optimizer.param_groups[0]["lr"] == before and scheduler.last_t == 0


def test_on_lag_ignore_is_silent():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trace = lightning_style_run(lambda o: timm_sched_fix.CosineLRScheduler(o, **KWARGS, on_lag="ignore"))
    assert wrong_steps(trace) == 15


@pytest.mark.parametrize("convention", ["end", "begin"])
def test_update_schedule_lag_is_detected(convention):
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=False, on_lag="raise",
                                                 convention=convention)
    for update in range(3):
        optimizer.step()
        with pytest.raises(timm_sched_fix.ScheduleLagError, match="one update late"):
            scheduler.step_update(update)  # after n updates, step_update(n - 1)
        scheduler.step_update(update + 1)


def test_correct_calls_never_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer = make_optimizer()
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **KWARGS)
        scheduler.step(0)  # before any optimizer step: re-applying v(0) is no lag
        for epoch in range(EPOCHS):
            optimizer.step()
            scheduler.step(epoch + 1)

"""The fast trace (index mapping + one stock call per t) equals what real training loops run with.

``trace`` never runs optimizer steps; this test runs them. For every calling pattern, with stock timm
and with the fixed scheduler (same factory, same options as the trace), a real SGD optimizer records
the LR of every step (StepRecorder) and the trace must match it step for step.
"""

import argparse
import warnings

import pytest
import timm.scheduler

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix.trace import compute as trace_steps
from timm_sched_fix.trace import settings as tr

from support import TORCH_VERBOSE_DEPRECATION, StepRecorder, assert_trace, make_optimizer

EPOCHS, UPDATES = 6, 3

SETTINGS = {
    "cosine-warmup-noise": dict(sched="cosine", warmup_epochs=2, warmup_lr=1e-3, lr_noise=[0.0, 1.0]),
    "tanh-plain": dict(sched="tanh", warmup_epochs=0),
    "multistep-milestone-at-1": dict(sched="multistep", warmup_epochs=0, decay_milestones=[1, 3], decay_rate=0.5),
    "step-warmup-cooldown": dict(sched="step", warmup_epochs=1, decay_epochs=2, decay_rate=0.5, cooldown_epochs=2),
    "poly-warmup-prefix": dict(sched="poly", warmup_epochs=2, warmup_prefix=True, decay_rate=2.0),
    "plateau-plain": dict(sched="plateau", warmup_epochs=0),
    "plateau-warmup": dict(sched="plateau", warmup_epochs=2, warmup_lr=1e-3),
}
#: The timm class each --sched above builds (MultiStep and Poly arrived in timm 0.5).
SCHEDULER_CLASSES = {"cosine": "CosineLRScheduler", "tanh": "TanhLRScheduler", "multistep": "MultiStepLRScheduler",
                     "step": "StepLRScheduler", "poly": "PolyLRScheduler", "plateau": "PlateauLRScheduler"}


def _settings(overrides, on_updates):
    return argparse.Namespace(**dict(tr.TRAIN_DEFAULTS, lr=0.1, epochs=EPOCHS, sched_on_updates=on_updates,
                                     lr_derived=False, **overrides))


def real_run(settings, loop, fixed):
    """A real loop with the calls ``loop`` names; the LR every optimizer step ran with.

    Stock epoch steps go through ``compat.stock_epoch_step``, as the trace's do: stock PlateauLRScheduler of
    timm <= 1.0.15 raises TypeError on a step without a metric past warmup.
    """
    optimizer = make_optimizer(lr=settings.lr)
    options = tr.LOOPS[loop].fixed_options if fixed else {}
    scheduler, epochs = trace_steps._create(settings, optimizer, fixed=fixed, updates_per_epoch=UPDATES,
                                            options=options)
    on_epochs = compat.is_epoch_schedule(scheduler)
    step = scheduler.step if fixed else compat.stock_epoch_step(scheduler)
    recorder = StepRecorder(optimizer)
    num_updates = 0
    for epoch in range(epochs):
        for _ in range(UPDATES):
            optimizer.step()
            num_updates += 1
            if loop == "timm":
                scheduler.step_update(num_updates=num_updates, metric=0.0)  # train.py passes the loss
            elif loop == "enumerate":
                scheduler.step_update(num_updates - 1)
            elif not on_epochs:  # Lightning, interval="step"
                step(epoch=epoch)
        if loop == "timm":
            step(epoch + 1)
        elif loop == "enumerate" or on_epochs:
            step(epoch)
    return recorder.steps


def _runs_on_updates(label):
    """Per-update schedules need create_scheduler_v2 (timm >= 0.9); plateau is per epoch only."""
    return hasattr(timm.scheduler, "create_scheduler_v2") and not label.startswith("plateau")


def _skip_without_class(label):
    """A setting whose scheduler class the installed timm lacks is skipped, with the reason."""
    name = SCHEDULER_CLASSES[SETTINGS[label]["sched"]]
    return pytest.mark.skipif(not hasattr(timm.scheduler, name), reason=f"timm {compat.TIMM_VERSION} has no {name}")


CASES = [
    pytest.param(label, on_updates, loop, id=f"{label}-{'update' if on_updates else 'epoch'}-{loop}",
                 marks=_skip_without_class(label))
    for label in SETTINGS for on_updates in (False, True) for loop in tr.LOOPS
    if not on_updates or _runs_on_updates(label)
]


def _skip_if_factory_ignores_milestones(settings):
    """timm 0.5.4's create_scheduler gives MultiStepLRScheduler --decay-epochs, one number it cannot step with,
    as its milestones (--decay-milestones arrived in 0.6): such a timm has no multistep schedule to trace."""
    if settings.sched != "multistep":
        return
    built, _ = trace_steps._create(settings, make_optimizer(), fixed=False, updates_per_epoch=UPDATES, options={})
    if not isinstance(built.decay_t, (list, tuple)):
        pytest.skip(f"timm {compat.TIMM_VERSION}'s create_scheduler builds MultiStepLRScheduler from --decay-epochs "
                    f"({built.decay_t!r}), not --decay-milestones")


@pytest.mark.parametrize("label, on_updates, loop", CASES)
def test_fast_trace_equals_real_loops(label, on_updates, loop):
    settings = _settings(SETTINGS[label], on_updates)
    _skip_if_factory_ignores_milestones(settings)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("error", UserWarning)  # the fixed scheduler must not need to warn, except:
        warnings.filterwarnings("ignore", TORCH_VERBOSE_DEPRECATION, UserWarning)  # stock timm <= 1.0.15's
        if loop == "enumerate" and not on_updates:  # step_update(i) without a metric on an epoch schedule
            warnings.simplefilter("ignore", timm_sched_fix.ScheduleCallWarning)
        stock = real_run(settings, loop, fixed=False)
        fixed = real_run(settings, loop, fixed=True)
    trace = trace_steps.compute_trace(settings, loop, UPDATES)
    assert_trace([[lr] for lr in trace.stock_lr.tolist()], stock)
    assert_trace([[lr] for lr in trace.fixed_lr.tolist()], fixed)


def test_every_loop_of_a_noisy_warmup_differs_somewhere():
    """Guards the test above against comparing two constant traces: the loops do differ."""
    settings = _settings(SETTINGS["cosine-warmup-noise"], on_updates=False)
    counts = {loop: int(trace_steps.compute_trace(settings, loop, UPDATES).differs.sum()) for loop in tr.LOOPS}
    assert counts["timm"] == UPDATES  # noise from t=0: stock runs epoch 0 without it
    assert counts["lightning"] == counts["enumerate"] == EPOCHS * UPDATES

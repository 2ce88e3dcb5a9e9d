"""timm's train.py calling pattern (END convention, explicit indices, both step_update and step every
time) runs with exactly the stock LR trace when stock timm has no first-step defect to fix."""

import contextlib

import pytest
import timm.scheduler

import timm_sched_fix

from support import ADAPTERS, StepRecorder, make_optimizer, no_warnings_from_fix

EPOCHS, BATCHES = 5, 4


def _configs(on_epochs):
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    configs = {
        "cosine-warmup": ("CosineLRScheduler", dict(t_initial=periods, warmup_t=2, warmup_lr_init=1e-3)),
        "cosine-plain": ("CosineLRScheduler", dict(t_initial=periods, lr_min=1e-3)),
        "cosine-late-noise": ("CosineLRScheduler", dict(t_initial=periods, noise_range_t=(2, periods))),
        "tanh-warmup": ("TanhLRScheduler", dict(t_initial=periods, warmup_t=1, warmup_lr_init=1e-3)),
        "step-warmup": ("StepLRScheduler", dict(decay_t=2, decay_rate=0.5, warmup_t=1, warmup_lr_init=1e-3)),
        "multistep": ("MultiStepLRScheduler", dict(decay_t=[2, 3], decay_rate=0.5)),
        "poly-warmup": ("PolyLRScheduler", dict(t_initial=periods, warmup_t=2, warmup_lr_init=1e-3)),
        "wsd-warmup": ("WSDLRScheduler", dict(t_initial=periods, decay_t=2, warmup_t=1, warmup_lr_init=1e-3)),
    }
    for label, (name, kwargs) in configs.items():
        yield label, name, dict(kwargs, t_in_epochs=on_epochs)
    if on_epochs:
        yield "plateau-warmup", "PlateauLRScheduler", dict(warmup_t=1, warmup_lr_init=1e-3, patience_t=1, mode="min")


CASES = [pytest.param(name, kwargs, groups, id=f"{label}-{'epoch' if on_epochs else 'update'}-{groups}g")
         for on_epochs in (True, False) for label, name, kwargs in _configs(on_epochs) for groups in (1, 3)]


def train_py_loop(scheduler, optimizer):
    """The calling pattern of timm's train.py: step_update(num_updates) after every optimizer step and
    step(epoch + 1, eval_metric) after every epoch, whatever the schedule's unit."""
    num_updates = 0
    for epoch in range(EPOCHS):
        for _ in range(BATCHES):
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates, metric=1.0)
        scheduler.step(epoch + 1, 1.0)


def trace(adapter, name, kwargs, groups):
    optimizer = make_optimizer(groups)
    if adapter == "dropin":
        scheduler = getattr(timm_sched_fix, name)(optimizer, **kwargs)
    else:
        scheduler = getattr(timm.scheduler, name)(optimizer, **kwargs)
        if adapter == "wrap":
            scheduler = timm_sched_fix.wrap(scheduler)
    recorder = StepRecorder(optimizer)
    train_py_loop(scheduler, optimizer)
    return recorder.steps


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name, kwargs, groups", CASES)
def test_train_py_trace_is_unchanged(adapter, name, kwargs, groups):
    if not hasattr(timm.scheduler, name):
        pytest.skip(f"timm {timm.__version__} has no {name}")
    stock = trace("stock", name, kwargs, groups)
    with no_warnings_from_fix(), timm_sched_fix.patched() if adapter == "patch" else contextlib.nullcontext():
        fixed = trace(adapter, name, kwargs, groups)
    assert fixed == stock
    assert len(set(map(tuple, stock))) > 1, "the schedule must move, or this test could not fail"

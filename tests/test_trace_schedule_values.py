"""The update-schedule values behind ``trace`` equal a stock ``step_update(t)`` loop, bit for bit.

``trace_steps.schedule_values`` reads v(t) from the schedule's own function (``compat.update_schedule_values``)
for timm's classes, which keep timm's base ``step_update``, and calls ``step_update(t)`` otherwise. These
tests run both against a stock scheduler stepped once per t, a few thousand steps with noise, and check
which path ran: the fast one never writes the param group, the stock one does.
"""

from __future__ import annotations

import argparse

import pytest
import timm.scheduler

from timm_sched_fix.trace import compute as trace_steps
from timm_sched_fix.trace import settings as tr

from support import installed_classes, make_optimizer, scheduler_configs, stock_scheduler

STEPS = 3000
UPDATE_CLASSES = [name for name in installed_classes() if name != "PlateauLRScheduler"]
NOISE = {"normal": dict(noise_range_t=(200, 2600), noise_pct=0.5, noise_seed=7),
         "uniform": dict(noise_range_t=100, noise_pct=0.3, noise_seed=3)}


def _scheduler(name: str, noise_type: str, optimizer=None) -> timm.scheduler.scheduler.Scheduler:
    kwargs = {**scheduler_configs(STEPS)[name], "t_in_epochs": False, **NOISE[noise_type]}
    scheduler = stock_scheduler(name, make_optimizer() if optimizer is None else optimizer, kwargs)
    scheduler.noise_type = noise_type  # attributes of timm's base class, not constructor arguments everywhere
    scheduler.noise_std = 0.7  # scales the normal draws from timm 1.0.31 on, ignored before
    return scheduler


def _stock_loop(scheduler, steps: int = STEPS) -> list[float]:
    """What the issue measures against: the stock ``step_update(t)`` once per t, group 0's LR read back."""
    values = []
    for t in range(steps):
        scheduler.step_update(t)
        values.append(scheduler.optimizer.param_groups[0]["lr"])
    return values


@pytest.mark.parametrize("noise_type", NOISE)
@pytest.mark.parametrize("name", UPDATE_CLASSES)
def test_timm_classes_take_the_fast_path_with_stock_values(name, noise_type):
    traced, reference = _scheduler(name, noise_type), _scheduler(name, noise_type)
    constructor_lr = traced.optimizer.param_groups[0]["lr"]
    values = trace_steps.schedule_values(traced, traced.optimizer, STEPS - 1).tolist()
    expected = _stock_loop(reference)
    assert values == expected  # exact: bit-identical floats
    assert traced.optimizer.param_groups[0]["lr"] == constructor_lr != expected[-1], "the fast path writes no group"
    assert len(set(expected[200:2600])) > 1000, "noise must be on (StepLRScheduler decays to 0 early)"


def test_a_class_with_its_own_step_update_is_called_per_step():

    class HalvedOnOddSteps(timm.scheduler.CosineLRScheduler):
        def step_update(self, num_updates, metric=None):
            super().step_update(num_updates, metric)
            if num_updates % 2:
                self.update_groups([group["lr"] / 2 for group in self.optimizer.param_groups])

    def build():
        return HalvedOnOddSteps(make_optimizer(), **{**scheduler_configs(STEPS)["CosineLRScheduler"],
                                                     "t_in_epochs": False, **NOISE["normal"]})

    traced = build()
    values = trace_steps.schedule_values(traced, traced.optimizer, STEPS - 1).tolist()
    expected = _stock_loop(build())
    assert values == expected
    assert traced.optimizer.param_groups[0]["lr"] == expected[-1], "the stock path writes the group"


def test_a_group_with_lr_scale_gets_the_scaled_stock_values():
    optimizer = make_optimizer(2)
    optimizer.param_groups[0]["lr_scale"] = 0.5  # group 0 is the one the trace reads
    traced = _scheduler("CosineLRScheduler", "normal", optimizer)
    values = trace_steps.schedule_values(traced, optimizer, STEPS - 1).tolist()
    reference_optimizer = make_optimizer(2)
    reference_optimizer.param_groups[0]["lr_scale"] = 0.5
    assert values == _stock_loop(_scheduler("CosineLRScheduler", "normal", reference_optimizer))


@pytest.mark.skipif(not hasattr(timm.scheduler, "create_scheduler_v2"), reason="--sched-on-updates needs timm >= 0.9")
def test_a_noisy_factory_trace_equals_the_stock_loop():
    """The whole update trace as ``trace`` builds it (timm's factory, --lr-noise, --loop enumerate: step k runs
    with v(k - 1), the constructor's LR first) against the stock loop."""
    epochs, updates = 10, 300
    settings = argparse.Namespace(**dict(tr.TRAIN_DEFAULTS, lr=0.1, epochs=epochs, warmup_epochs=2,
                                         sched_on_updates=True, lr_noise=[0.1, 0.9], lr_noise_std=0.8,
                                         lr_derived=False))
    trace = trace_steps.compute_trace(settings, "enumerate", updates)
    stock, _ = trace_steps._create(settings, make_optimizer(), fixed=False, updates_per_epoch=updates, options={})
    constructor_lr = stock.optimizer.param_groups[0]["lr"]
    expected = _stock_loop(stock, epochs * updates)
    assert trace.stock_lr.tolist() == [constructor_lr, *expected[:-1]]
    assert trace.fixed_lr[1:].tolist() == expected[1:]

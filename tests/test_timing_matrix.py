"""Every scheduler class x {epoch, update} x {"end", "begin"} x {explicit, counting, auto} x {1, 3 groups},
through every adapter: each optimizer step runs with v(k) (updates) or v(e) (epochs)."""

import pytest

from support import (
    ADAPTERS,
    StepRecorder,
    assert_trace,
    expected_trace,
    fixed_scheduler,
    installed_classes,
    make_optimizer,
    no_warnings_from_fix,
    reference_values,
    run_loop,
    stock_kwargs,
)

EPOCHS, BATCHES = 4, 3


def _cases():
    for name in installed_classes():
        for on_epochs in (True, False):
            if name == "PlateauLRScheduler" and not on_epochs:
                continue
            for convention in ("end", "begin"):
                for drive in ("explicit", "counting", "auto"):
                    for groups in (1, 3):
                        unit = "epoch" if on_epochs else "update"
                        yield pytest.param(name, on_epochs, convention, drive, groups,
                                           id=f"{name}-{unit}-{convention}-{drive}-{groups}g")


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name, on_epochs, convention, drive, groups", list(_cases()))
def test_every_step_runs_with_its_scheduled_lr(adapter, name, on_epochs, convention, drive, groups):
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    kwargs = stock_kwargs(name, periods, on_epochs)
    values = reference_values(name, kwargs, groups, periods, on_epochs)
    optimizer = make_optimizer(groups)
    with no_warnings_from_fix(), fixed_scheduler(adapter, name, optimizer, kwargs,
                                                 convention=convention, auto=drive == "auto") as scheduler:
        recorder = StepRecorder(optimizer)
        run_loop(scheduler, optimizer, epochs=EPOCHS, batches=BATCHES, on_epochs=on_epochs,
                 convention=convention, drive=drive)
    assert_trace(recorder.steps, expected_trace(values, epochs=EPOCHS, batches=BATCHES, on_epochs=on_epochs))

"""``TorchScheduler`` through Hugging Face Accelerate's ``accelerator.prepare`` on CPU: optimizer step k runs
with v(k), with and without gradient accumulation (Accelerate skips the scheduler with the optimizer)."""

import warnings

import pytest
import timm.scheduler
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

import timm_sched_fix

from support import BASE_LR, StepRecorder, assert_trace, expected_trace, reference_values

BATCHES, EPOCHS = 6, 2
KWARGS = dict(t_initial=12, warmup_t=3, warmup_lr_init=1e-3, lr_min=1e-4, t_in_epochs=False)


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


@pytest.mark.parametrize("accumulation", [1, 2])
def test_per_step_trace_through_prepare(accumulation):
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR)
    scheduler = timm_sched_fix.TorchScheduler(timm.scheduler.CosineLRScheduler(optimizer, **KWARGS))
    recorder = StepRecorder(optimizer)
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(BATCHES * 2, 4, generator=generator),
                                          torch.randn(BATCHES * 2, 1, generator=generator))
    loader = torch.utils.data.DataLoader(data, batch_size=2)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    for _ in range(EPOCHS):
        for inputs, targets in loader:
            with accelerator.accumulate(model):
                accelerator.backward(torch.nn.functional.mse_loss(model(inputs), targets))
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()

    updates = EPOCHS * BATCHES // accumulation
    values = reference_values("CosineLRScheduler", KWARGS, 1, updates, on_epochs=False)
    assert_trace(recorder.steps, expected_trace(values, epochs=1, batches=updates, on_epochs=False))


@pytest.mark.parametrize("auto", [False, True])
def test_a_raw_update_schedule_stepped_by_the_engine_gets_advice_naming_torch_scheduler(auto):
    """Accelerate (like DeepSpeed's lr_scheduler= and the Hugging Face Trainer) calls ``scheduler.step()`` after every
    optimizer step. Stock timm's step() needs an epoch and raises TypeError; a fixed per-update schedule changes
    nothing and says which adapter makes the engine's calls right, or, in auto mode, needs no calls and is right."""
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=BASE_LR)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **KWARGS, auto=auto)
    recorder = StepRecorder(optimizer)
    inputs = torch.randn(2, 4)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(EPOCHS * BATCHES):
            accelerator.backward(model(inputs).pow(2).mean())
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
    ours = [str(w.message) for w in caught if issubclass(w.category, timm_sched_fix.ScheduleCallWarning)]
    values = reference_values("CosineLRScheduler", KWARGS, 1, EPOCHS * BATCHES, on_epochs=False)
    if auto:
        assert ours == []
        assert_trace(recorder.steps, expected_trace(values, epochs=1, batches=EPOCHS * BATCHES, on_epochs=False))
    else:
        [message] = ours
        assert 'timm_sched_fix.TorchScheduler(scheduler, interval="step")' in message and "DeepSpeed" in message
        assert recorder.steps == [values[0]] * (EPOCHS * BATCHES)  # unchanged, as the warning says

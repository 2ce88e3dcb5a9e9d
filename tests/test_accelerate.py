"""``TorchScheduler`` through Hugging Face Accelerate's ``accelerator.prepare`` on CPU: optimizer step k runs
with v(k), with and without gradient accumulation (Accelerate skips the scheduler with the optimizer)."""

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

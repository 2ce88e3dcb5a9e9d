"""Copies: ``copy.deepcopy``, ``pickle`` and ``torch.save``/``torch.load`` of fixed schedulers (patched,
wrapped, drop-in) keep their behaviour, after ``unpatch()`` too; a copy never leaves a hook on the original's
optimizer;
state dicts load with ``torch.load(weights_only=True)``.
The torch adapter (``TorchScheduler``, from issue 4) is covered too.
"""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix._timing import timing_of

from support import (
    ADAPTERS,
    StepRecorder,
    assert_trace,
    expected_trace,
    fixed_scheduler,
    installed_classes,
    make_optimizer,
    reference_values,
    stock_kwargs,
    stock_scheduler,
)

EPOCHS, BATCHES, COPY_AFTER = 4, 3, 5


def torch_round_trip(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)  # a whole scheduler object is not weights-only data


COPIERS = {"deepcopy": copy.deepcopy, "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
           "torch.save": torch_round_trip}


def cases():
    for name in installed_classes():
        for on_epochs in (True, False):
            if name != "PlateauLRScheduler" or on_epochs:
                yield name, on_epochs


def hooks(optimizer) -> int:
    return len(optimizer._optimizer_step_pre_hooks)


def train(scheduler, optimizer, updates, on_epochs):
    """"end" convention, explicit indices on epochs, auto mode on updates; continues from ``updates[0]``."""
    for update in updates:
        optimizer.step()
        if on_epochs and (update + 1) % BATCHES == 0:
            scheduler.step((update + 1) // BATCHES, 1.0)


@pytest.mark.parametrize("copier", COPIERS)
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name, on_epochs", list(cases()))
def test_copy_keeps_behaviour_and_leaves_the_original_alone(name, on_epochs, adapter, copier):
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    kwargs = stock_kwargs(name, periods, on_epochs)
    expected = expected_trace(reference_values(name, kwargs, 3, periods, on_epochs), epochs=EPOCHS, batches=BATCHES,
                              on_epochs=on_epochs)
    optimizer = make_optimizer(3)
    with fixed_scheduler(adapter, name, optimizer, kwargs, auto=not on_epochs) as scheduler:
        recorder = StepRecorder(optimizer)
        train(scheduler, optimizer, range(COPY_AFTER), on_epochs)
        hooks_before = hooks(optimizer)
        duplicate = COPIERS[copier](scheduler)
        assert hooks(optimizer) == hooks_before, "the copy put a hook on the original's optimizer"
        assert duplicate.optimizer is not optimizer
        assert isinstance(duplicate, getattr(timm.scheduler, name))
        copy_recorder = StepRecorder(duplicate.optimizer)
        train(duplicate, duplicate.optimizer, range(COPY_AFTER, EPOCHS * BATCHES), on_epochs)
        assert hooks(optimizer) == hooks_before
        train(scheduler, optimizer, range(COPY_AFTER, EPOCHS * BATCHES), on_epochs)  # the original goes on alone
    assert_trace(recorder.steps, expected)
    assert_trace(copy_recorder.steps, expected[COPY_AFTER:])


def auto_values(steps):
    return [lrs[0] for lrs in reference_values("CosineLRScheduler", dict(t_initial=10, t_in_epochs=False), 1,
                                                steps - 1, on_epochs=False)]


def test_copies_made_while_patched_stay_fixed_after_unpatch():
    """A scheduler built while patched stays fixed after unpatch(), and so do its copies, whenever they are made:
    each drives its own optimizer in auto mode, and only its own."""
    optimizer = make_optimizer()
    with timm_sched_fix.patched(auto=True):
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=False)
        duplicate = copy.deepcopy(scheduler)
        pickled = pickle.loads(pickle.dumps(scheduler))
    after_unpatch = pickle.loads(pickle.dumps(scheduler))
    for copied in (scheduler, duplicate, pickled, after_unpatch):
        assert isinstance(copied, timm.scheduler.CosineLRScheduler) and timing_of(copied) is not None
        assert hooks(copied.optimizer) == 1
        recorder = StepRecorder(copied.optimizer)
        for _ in range(4):
            copied.optimizer.step()
        assert recorder.first_group() == pytest.approx(auto_values(4), rel=1e-12, abs=0)
        assert copied.last_t == 3


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name, on_epochs", list(cases()))
def test_state_dict_loads_with_torch_load_weights_only(name, on_epochs, adapter):
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    kwargs = stock_kwargs(name, periods, on_epochs)
    with fixed_scheduler(adapter, name, make_optimizer(3), kwargs) as scheduler:
        for t in range(1, 3):
            scheduler.step(t, 1.0) if on_epochs else scheduler.step_update(t)
        buffer = io.BytesIO()
        torch.save(scheduler.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        optimizer = make_optimizer(3)
        with fixed_scheduler("dropin", name, optimizer, kwargs) as restored:
            restored.load_state_dict(state)
            assert restored.last_t == 2
            assert restored.get_last_lr() == scheduler.get_last_lr()


@pytest.mark.parametrize("copier", COPIERS)
@pytest.mark.parametrize("name, on_epochs", list(cases()))
def test_torch_adapter_copy_keeps_behaviour_and_leaves_the_original_alone(name, on_epochs, copier):
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    kwargs = stock_kwargs(name, periods, on_epochs)
    expected = expected_trace(reference_values(name, kwargs, 3, periods, on_epochs), epochs=EPOCHS, batches=BATCHES,
                              on_epochs=on_epochs)
    optimizer = make_optimizer(3)
    scheduler = timm_sched_fix.TorchScheduler(stock_scheduler(name, optimizer, kwargs))
    recorder = StepRecorder(optimizer)

    def torch_train(scheduler, optimizer, updates):
        """PyTorch's habit: ``step()`` after each optimizer step or epoch (Plateau: ``step(metric)``)."""
        for update in updates:
            optimizer.step()
            if not on_epochs:
                scheduler.step()
            elif (update + 1) % BATCHES == 0:
                scheduler.step(1.0) if name == "PlateauLRScheduler" else scheduler.step()

    torch_train(scheduler, optimizer, range(COPY_AFTER))
    hooks_before = hooks(optimizer)
    duplicate = COPIERS[copier](scheduler)
    copy_optimizer = duplicate.optimizer
    assert copy_optimizer is not optimizer and hooks(optimizer) == hooks_before
    copy_recorder = StepRecorder(copy_optimizer)
    torch_train(duplicate, copy_optimizer, range(COPY_AFTER, EPOCHS * BATCHES))
    torch_train(scheduler, optimizer, range(COPY_AFTER, EPOCHS * BATCHES))
    assert hooks(optimizer) == hooks_before
    assert_trace(recorder.steps, expected)
    assert_trace(copy_recorder.steps, expected[COPY_AFTER:])

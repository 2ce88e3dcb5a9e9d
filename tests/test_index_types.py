"""Every real-number index stock timm takes works under the fix (docs/reference/bad-input.md), and the fixed state dict
holds plain Python numbers only, so every fixed checkpoint loads with ``torch.load(weights_only=True)``."""

from __future__ import annotations

import fractions
import io
import warnings

import numpy as np
import pytest
import timm.scheduler
import torch

import timm_sched_fix

from support import ADAPTERS, fixed_scheduler, group_lrs, make_optimizer, stock_kwargs, stock_scheduler

#: (label, the index as a script passes it, the plain number it stands for)
INDICES = [
    ("int", 3, 3),
    ("float", 2.5, 2.5),
    ("numpy int64", np.int64(3), 3),
    ("numpy int32", np.int32(3), 3),
    ("numpy uint8", np.uint8(3), 3),
    ("numpy float64", np.float64(2.5), 2.5),
    ("numpy float32", np.float32(2.5), 2.5),
    ("0-d numpy array", np.array(3), 3),
    ("0-d int tensor", torch.tensor(3), 3),
    ("0-d float tensor", torch.tensor(2.5), 2.5),
    ("0-d float64 tensor", torch.tensor(2.5, dtype=torch.float64), 2.5),
    ("one-element tensor", torch.tensor([3]), 3),
    ("Fraction", fractions.Fraction(5, 2), 2.5),
]
IDS = [label for label, _, _ in INDICES]
PERIODS = 8


def plain(value) -> bool:
    """A value ``torch.load(weights_only=True)`` takes without any allow-listed class."""
    if isinstance(value, dict):
        return all(plain(key) and plain(item) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(plain(item) for item in value)
    return value is None or type(value) in (int, float, str, bool)


@pytest.mark.parametrize("on_epochs", [True, False], ids=["epochs", "updates"])
@pytest.mark.parametrize("label, index, number", INDICES, ids=IDS)
def test_stock_timm_takes_the_index(label, index, number, on_epochs):
    """The premise: stock timm runs with every one of these indices (it is not refused for that reason)."""
    optimizer = make_optimizer()
    stock = stock_scheduler("CosineLRScheduler", optimizer, stock_kwargs("CosineLRScheduler", PERIODS, on_epochs))
    stock.step(index) if on_epochs else stock.step_update(index)
    reference = make_optimizer()
    plain_stock = stock_scheduler("CosineLRScheduler", reference, stock_kwargs("CosineLRScheduler", PERIODS, on_epochs))
    plain_stock.step(number) if on_epochs else plain_stock.step_update(number)
    assert group_lrs(optimizer) == pytest.approx(group_lrs(reference), rel=1e-6)  # float32 indices round


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("on_epochs", [True, False], ids=["epochs", "updates"])
@pytest.mark.parametrize("label, index, number", INDICES, ids=IDS)
def test_the_index_applies_v_of_its_number_and_the_checkpoint_loads_with_weights_only(
        label, index, number, on_epochs, adapter):
    kwargs = stock_kwargs("CosineLRScheduler", PERIODS, on_epochs)
    optimizer = make_optimizer(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for any of them
        with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, kwargs) as scheduler:
            optimizer.step()
            scheduler.step(index) if on_epochs else scheduler.step_update(index)
            optimizer.step()
            scheduler.step(index + 1) if on_epochs else scheduler.step_update(index + 1)
            lrs, state, last_t = group_lrs(optimizer), scheduler.state_dict(), scheduler.last_t
    assert plain(state[timm_sched_fix._position.STATE_KEY])
    assert type(last_t) is type(number + 1) and last_t == number + 1

    reference = make_optimizer(2)
    plain_stock = stock_scheduler("CosineLRScheduler", reference, kwargs)
    plain_stock.step(number + 1) if on_epochs else plain_stock.step_update(number + 1)
    assert lrs == group_lrs(reference)

    buffer = io.BytesIO()
    torch.save({"scheduler": state, "optimizer": optimizer.state_dict()}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    resumed_optimizer = make_optimizer(2)
    resumed = timm_sched_fix.CosineLRScheduler(resumed_optimizer, **kwargs)
    resumed_optimizer.load_state_dict(loaded["optimizer"])
    resumed.load_state_dict(loaded["scheduler"])
    assert group_lrs(resumed_optimizer) == lrs and resumed.last_t == number + 1


def test_numpy_epoch_counter_repro():
    """/work/shared/repro/numpy_index_checkpoint.py: ``for epoch in np.arange(3): step(epoch + 1)``."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    for epoch in np.arange(3):
        optimizer.step()
        scheduler.step(epoch + 1)
    buffer = io.BytesIO()
    torch.save({"scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["scheduler"]["timm_sched_fix"]["last_t"] == 3


def test_a_fixed_state_dict_saved_with_numpy_numbers_still_loads():
    """A checkpoint written before this fix (numpy numbers in the position record, loadable with
    weights_only=False) loads, and the scheduler holds plain numbers again."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    scheduler.step(3)
    state = scheduler.state_dict()
    record = state["timm_sched_fix"]
    record.update(last_t=np.int64(3), next_count=np.int64(4))
    del record["lag"]  # as saved before the lag record existed
    resumed = timm_sched_fix.CosineLRScheduler(make_optimizer(), t_initial=10)
    resumed.load_state_dict(state)
    assert type(resumed.last_t) is int and resumed.last_t == 3
    assert plain(resumed.state_dict()["timm_sched_fix"])


@pytest.mark.parametrize("index", [True, np.bool_(True), torch.tensor(True)], ids=["bool", "numpy", "tensor"])
def test_a_bool_index_is_read_as_stock_timm_reads_it_with_a_warning(index):
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10)
    with pytest.warns(timm_sched_fix.ScheduleCallWarning, match="bool schedule index is read as 0 or 1"):
        scheduler.step(index)
    stock_optimizer = make_optimizer()
    timm.scheduler.CosineLRScheduler(stock_optimizer, t_initial=10).step(True)
    assert group_lrs(optimizer) == group_lrs(stock_optimizer) and scheduler.last_t == 1

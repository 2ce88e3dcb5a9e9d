"""State-dict compatibility: stock timm <-> fixed in both directions with the same resulting LRs; state
dicts of another class, truncated or corrupted ones get a ValueError and change nothing."""

from __future__ import annotations

import math

import pytest
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat

from support import (
    ADAPTERS,
    fixed_scheduler,
    group_lrs,
    installed_classes,
    make_optimizer,
    stock_kwargs,
    stock_scheduler,
)

PERIODS = 6


def unit_cases():
    for name in installed_classes():
        for on_epochs in (True, False):
            if name != "PlateauLRScheduler" or on_epochs:
                yield name, on_epochs


def drive(scheduler, on_epochs: bool, t: int) -> None:
    """timm's calls with an index, applying t (Plateau gets a metric that stops improving)."""
    if on_epochs:
        scheduler.step(t, 1.0 if t < 3 else 2.0)
    else:
        scheduler.step_update(t)


def stock_at(name: str, on_epochs: bool, t: int, groups: int = 2):
    optimizer = make_optimizer(groups)
    scheduler = stock_scheduler(name, optimizer, stock_kwargs(name, PERIODS, on_epochs))
    for i in range(1, t + 1):
        drive(scheduler, on_epochs, i)
    return optimizer, scheduler


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name, on_epochs", list(unit_cases()))
def test_stock_and_fixed_state_dicts_load_both_ways_with_the_same_lrs(adapter, name, on_epochs):
    """Resume at t: stock -> fixed and fixed -> stock, then the same calls give the same LRs as stock->stock."""
    kwargs = stock_kwargs(name, PERIODS, on_epochs)
    for t in (1, 3, PERIODS - 1):
        saved_optimizer, saved_stock = stock_at(name, on_epochs, t)
        expected = []
        optimizer = make_optimizer(2)
        optimizer.load_state_dict(saved_optimizer.state_dict())
        stock = stock_scheduler(name, optimizer, kwargs)
        stock.load_state_dict(saved_stock.state_dict())
        for i in (t, t + 1):
            drive(stock, on_epochs, i)
            expected.append(group_lrs(optimizer))

        # stock -> fixed
        optimizer = make_optimizer(2)
        optimizer.load_state_dict(saved_optimizer.state_dict())
        with fixed_scheduler(adapter, name, optimizer, kwargs) as fixed:
            fixed.load_state_dict(saved_stock.state_dict())
            assert fixed.last_t is None  # a stock state dict has no position
            got = []
            for i in (t, t + 1):
                drive(fixed, on_epochs, i)
                got.append(group_lrs(optimizer))
        assert got == expected, f"stock -> fixed at t={t}"

        # fixed -> stock: the fixed run went to t through the same calls
        optimizer = make_optimizer(2)
        with fixed_scheduler(adapter, name, optimizer, kwargs) as fixed:
            for i in range(1, t + 1):
                drive(fixed, on_epochs, i)
            fixed_state, optimizer_state = fixed.state_dict(), optimizer.state_dict()
        optimizer = make_optimizer(2)
        optimizer.load_state_dict(optimizer_state)
        stock = stock_scheduler(name, optimizer, kwargs)
        stock.load_state_dict(fixed_state)
        got = []
        for i in (t, t + 1):
            drive(stock, on_epochs, i)
            got.append(group_lrs(optimizer))
        assert got == expected, f"fixed -> stock at t={t}"


def snapshot(scheduler, optimizer):
    """What must not change: the scheduler's own state dict and every param group value."""
    return repr(scheduler.state_dict()), [{k: float(v) if isinstance(v, torch.Tensor) else v
                                          for k, v in group.items() if k != "params"}
                                         for group in optimizer.param_groups]


def assert_refused_and_unchanged(scheduler, optimizer, state_dict, match=None):
    before = snapshot(scheduler, optimizer)
    with pytest.raises((ValueError, TypeError), match=match):
        scheduler.load_state_dict(state_dict)
    assert snapshot(scheduler, optimizer) == before


def fixed_at(adapter, name, on_epochs, t=2, tensor_lr=False):
    optimizer = make_optimizer(2, tensor_lr=tensor_lr)
    if adapter == "dropin":
        scheduler = getattr(timm_sched_fix, name)(optimizer, **stock_kwargs(name, PERIODS, on_epochs))
    else:
        scheduler = timm_sched_fix.wrap(stock_scheduler(name, optimizer, stock_kwargs(name, PERIODS, on_epochs)))
    for i in range(1, t + 1):
        drive(scheduler, on_epochs, i)
    optimizer.step()
    return optimizer, scheduler


@pytest.mark.parametrize("adapter", ["wrap", "dropin"])
@pytest.mark.parametrize("target", installed_classes())
def test_state_dict_of_another_class_is_refused_and_changes_nothing(adapter, target):
    """Every other class's stock and fixed state dict, into a fixed scheduler of ``target``."""
    optimizer, scheduler = fixed_at(adapter, target, True)
    for source in installed_classes():
        if source == target:
            continue
        _, stock = stock_at(source, True, 2)
        _, fixed = fixed_at("wrap", source, True)
        assert_refused_and_unchanged(scheduler, optimizer, stock.state_dict(), match="does not belong|saved by|lacks")
        assert_refused_and_unchanged(scheduler, optimizer, fixed.state_dict(), match="does not belong|saved by|lacks")


def corruptions(scheduler):
    """(label, state dict) pairs: truncated (each key dropped), and corrupted values."""
    state = scheduler.state_dict()
    record = state["timm_sched_fix"]
    release_only = compat.BASE_STATE_KEYS | compat.VERSION_STATE_KEYS.get(
        compat.timm_class_name(scheduler), frozenset())
    for key in state:
        if key != "timm_sched_fix" and key not in release_only:  # those may be missing: another timm release
            yield f"without {key}", {k: v for k, v in state.items() if k != key}
    for key in ("scheduler", "last_t", "next_count", "lag_shift"):
        yield f"record without {key}", dict(state, timm_sched_fix={k: v for k, v in record.items() if k != key})
    bad_records = {
        "last_t": [-1, math.nan, math.inf, "3", True], "next_count": [-2, "x"], "lag_shift": [2, -1],
        "scheduler": ["StepLRScheduler" if record["scheduler"] != "StepLRScheduler" else "TanhLRScheduler"],
        "steps_since_apply": [-1, 1.5], "plateau": [{"lrs": [0.1]}],
    }
    for key, values in bad_records.items():
        for value in values:
            yield f"record {key}={value!r}", dict(state, timm_sched_fix=dict(record, **{key: value}))
    yield "record not a mapping", dict(state, timm_sched_fix=[1, 2])
    yield "not a mapping", list(state.items())
    if "base_values" in state:
        yield "base_values of another optimizer", dict(state, base_values=[0.1])
        yield "base_values not numbers", dict(state, base_values=["a", "b"])
    if "t_initial" in state:
        yield "t_initial not a number", dict(state, t_initial="x")
    if "decay_t" in state:
        yield "decay_t of the other step class", dict(state, decay_t=[2] if isinstance(state["decay_t"], int) else 2)


@pytest.mark.parametrize("tensor_lr", [False, True])
@pytest.mark.parametrize("adapter", ["wrap", "dropin"])
@pytest.mark.parametrize("name, on_epochs", list(unit_cases()))
def test_truncated_or_corrupted_state_dict_is_refused_and_changes_nothing(name, on_epochs, adapter, tensor_lr):
    optimizer, scheduler = fixed_at(adapter, name, on_epochs, tensor_lr=tensor_lr)
    tried = 0
    for label, state_dict in corruptions(scheduler):
        try:
            assert_refused_and_unchanged(scheduler, optimizer, state_dict)
        except BaseException as error:
            raise AssertionError(f"{label}: {error}") from error
        tried += 1
    assert tried >= 15

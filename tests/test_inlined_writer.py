"""The inlined ``step_update`` (compat.inlined_step_update) writes bit for bit what timm's own writes.

A fixed per-update scheduler whose class keeps timm's base ``step_update`` is written by the inlined
function, the fast path of every optimizer step; these tests drive it and a stock scheduler with the same
indices and compare every param group, the scheduler's attributes and its state dict exactly.
"""

from __future__ import annotations

import pytest
import timm.scheduler
from hypothesis import given
from hypothesis import strategies as st

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix._compat import inlined
from timm_sched_fix._overrides import stock_method

from support import installed_classes, make_optimizer, scheduler_configs, stock_scheduler

UPDATE_CLASSES = [name for name in installed_classes() if name != "PlateauLRScheduler"]


def _stock_and_inlined(name: str, groups: int, noise: dict, tensor_lr: bool = False):
    noise = dict(noise)
    noise_type = noise.pop("noise_type", "normal")  # an attribute of timm's base class, not a constructor argument
    noise_std = noise.pop("noise_std", 1.0)  # likewise; scales the normal draws from timm 1.0.31
    kwargs = {**scheduler_configs(20)[name], "t_in_epochs": False, "noise_range_t": None, **noise}
    stock = stock_scheduler(name, make_optimizer(groups, tensor_lr=tensor_lr), kwargs)
    twin = stock_scheduler(name, make_optimizer(groups, tensor_lr=tensor_lr), kwargs)
    stock.noise_type = twin.noise_type = noise_type
    stock.noise_std = twin.noise_std = noise_std
    inlined = compat.inlined_step_update(twin, stock_method(type(twin), "step_update"))
    assert inlined is not None, f"{name} keeps timm's step_update, so it must be inlined"
    return stock, twin, inlined


def _assert_same(stock, twin) -> None:
    for stock_group, twin_group in zip(stock.optimizer.param_groups, twin.optimizer.param_groups):
        assert type(stock_group["lr"]) is type(twin_group["lr"])
        assert float(stock_group["lr"]) == float(twin_group["lr"])  # exact: bit-identical floats
    stock_state, twin_state = stock.state_dict(), twin.state_dict()
    assert stock_state.keys() == twin_state.keys()
    assert repr(stock_state) == repr(twin_state)


NOISE = st.one_of(
    st.just({}),
    st.fixed_dictionaries({
        "noise_range_t": st.one_of(st.tuples(st.integers(0, 10), st.integers(5, 40)), st.integers(0, 30)),
        "noise_type": st.sampled_from(["normal", "uniform"]),
        "noise_pct": st.sampled_from([0.05, 0.67, 2.0]),
        "noise_std": st.sampled_from([1.0, 0.3, 2.5]),
        "noise_seed": st.integers(0, 2**31),
    }),
)


@given(name=st.sampled_from(UPDATE_CLASSES), groups=st.sampled_from([1, 3]), noise=NOISE,
       indices=st.lists(st.integers(0, 40), min_size=1, max_size=30), metric=st.sampled_from([None, 0.5]))
def test_inlined_step_update_is_bit_identical(name, groups, noise, indices, metric):
    stock, twin, inlined = _stock_and_inlined(name, groups, noise)
    for t in indices:  # any order, repeats and jumps included
        stock.step_update(t, metric)
        inlined(twin, t, metric)
        _assert_same(stock, twin)


def test_reused_generator_draws_what_a_new_one_draws():
    """The noise path draws from one generator per scheduler; seeding resets it (normal draws cache a sample)."""
    stock, twin, inlined = _stock_and_inlined("CosineLRScheduler", 1,
                                              {"noise_range_t": 0, "noise_type": "normal", "noise_pct": 0.05})
    for t in [3, 3, 7, 0, 5000, 7]:
        stock.step_update(t)
        inlined(twin, t, None)
        _assert_same(stock, twin)


def test_overridden_methods_keep_the_stock_path():
    """A class that overrides step_update or a method it calls is written through its own step_update."""

    class OwnGroups(timm.scheduler.CosineLRScheduler):
        def update_groups(self, values):
            super().update_groups([value / 2 for value in values])

    class OwnStepUpdate(timm.scheduler.CosineLRScheduler):
        def step_update(self, num_updates, metric=None):
            super().step_update(num_updates + 1, metric)

    for cls in (OwnGroups, OwnStepUpdate):
        scheduler = cls(make_optimizer(), t_initial=10, t_in_epochs=False)
        assert compat.inlined_step_update(scheduler, stock_method(cls, "step_update")) is None


@pytest.mark.parametrize("name", UPDATE_CLASSES)
def test_tensor_lrs_are_written_as_stock_writes_them(name):
    """With tensor LRs (tensor base values) the inlined writer writes what timm writes; the timing then fills
    each group's own tensor in place (tests/test_timing_matrix.py, tests/test_compiled_step.py)."""
    stock, twin, inlined = _stock_and_inlined(name, 3, {}, tensor_lr=True)
    for t in range(6):
        stock.step_update(t)
        inlined(twin, t, None)
        _assert_same(stock, twin)


@given(name=st.sampled_from(UPDATE_CLASSES), noise=NOISE, indices=st.lists(st.integers(0, 40), min_size=1, max_size=30))
def test_update_schedule_values_are_what_stock_step_update_writes(name, noise, indices):
    """The schedule function the trace uses (no param-group writes) gives what timm writes, bit for bit."""
    stock, twin, _ = _stock_and_inlined(name, 1, noise)
    values_at = compat.update_schedule_values(twin, stock_method(type(twin), "step_update"))
    for t in indices:
        stock.step_update(t)
        assert [float(value) for value in values_at(t)] == [float(group["lr"]) for group in stock.optimizer.param_groups]


def test_the_installed_release_is_inlined():
    """Every release of the version matrix has a checked fingerprint, so the fast path is what runs there; a new
    timm release whose base Scheduler code changed fails here (it keeps timm's own step_update meanwhile)."""
    assert compat.installed_base_step_update() is not None, (
        f"timm {timm.__version__} changed the base Scheduler's per-update code (fingerprint "
        f"{compat.base_step_update_fingerprint()}): run tests/test_inlined_writer.py against it, then add the "
        "fingerprint to compat.KNOWN_BASE_STEP_UPDATES")


def test_an_unchecked_release_keeps_timms_own_step_update(monkeypatch):
    """An unknown fingerprint (a timm release not checked yet) is not inlined; the fix is right all the same."""
    monkeypatch.setattr(inlined, "KNOWN_BASE_STEP_UPDATES", {})
    compat.installed_base_step_update.cache_clear()
    try:
        stock = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=10, warmup_t=2, t_in_epochs=False)
        assert compat.inlined_step_update(stock, stock_method(type(stock), "step_update")) is None
        fixed = timm_sched_fix.CosineLRScheduler(make_optimizer(), t_initial=10, warmup_t=2, t_in_epochs=False)
        for update in range(1, 12):
            stock.step_update(update)
            fixed.step_update(update)
            assert fixed.optimizer.param_groups[0]["lr"] == stock.optimizer.param_groups[0]["lr"]
    finally:
        compat.installed_base_step_update.cache_clear()


@pytest.mark.parametrize("name", UPDATE_CLASSES)
def test_one_group_with_lr_scale_is_written_as_stock_writes_it(name):
    """One param group with an lr_scale (timm 0.6+ multiplies by it, 0.4.12 - 0.5.4 does not)."""
    stock, twin, inlined = _stock_and_inlined(name, 1, {})
    for scheduler in (stock, twin):
        scheduler.optimizer.param_groups[0]["lr_scale"] = 0.3
    for t in range(8):
        stock.step_update(t)
        inlined(twin, t, None)
        _assert_same(stock, twin)

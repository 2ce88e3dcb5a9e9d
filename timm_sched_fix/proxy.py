"""``wrap()``: fix a timm scheduler that already exists, seen through a ``wrapt.ObjectProxy``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import wrapt

from .compat import Scheduler
from .options import Convention, LagPolicy, Options
from .timing import ScheduleTiming, attach, timing_of


class FixedScheduler(wrapt.ObjectProxy):
    """A timm scheduler with the fix: ``isinstance`` against its timm class holds, every attribute
    forwards, and the routed methods go to its timing. Made by ``wrap()`` and the drop-in factories.

    Bad calls (see the README's "Bad input") raise with the LRs unchanged: ``ValueError`` for a negative, NaN
    or infinite index, ``TypeError`` for a bool, string or tensor index, ``RuntimeError`` for a call without an
    index while the position is unknown (``initialize=False`` before ``load_state_dict``), and
    ``ScheduleLagError`` for a lagging index under ``on_lag="raise"``; calls the schedule ignores warn
    ``ScheduleCallWarning`` once."""

    def __init__(self, scheduler: Scheduler, timing: ScheduleTiming) -> None:
        super().__init__(scheduler)
        self._self_timing = timing

    def step(self, epoch: float | None = None, metric: Any = None) -> None:
        """timm's epoch call: applies v(epoch) (epochs) for the optimizer steps that follow; without an index,
        the next one the count gives under the convention. ``metric`` is PlateauLRScheduler's."""
        self._self_timing.step(epoch, metric)

    def step_update(self, num_updates: float | None = None, metric: Any = None) -> None:
        """timm's update call: applies v(num_updates) (optimizer steps) for the optimizer steps that follow;
        without an index, the next one the count gives under the convention."""
        self._self_timing.step_update(num_updates, metric)

    def state_dict(self) -> dict[str, Any]:
        """timm's state dict plus the position, under the key ``"timm_sched_fix"``; stock timm loads it too."""
        return self._self_timing.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a state dict of this class, saved by a fixed or a stock scheduler, and apply its position
        now. ``TypeError`` (not a mapping) or ``ValueError`` (another class, missing keys, corrupted values)
        leave the scheduler and the LRs unchanged."""
        self._self_timing.load_state_dict(state_dict)

    @property
    def last_t(self) -> float | None:
        """The schedule index most recently applied; None before any was (or while unknown)."""
        return self._self_timing.last_t

    def get_last_lr(self) -> list[float]:
        """The LR each param group holds now, one per group."""
        return self._self_timing.get_last_lr()

    def __copy__(self) -> FixedScheduler:
        return _proxy_for(copy.copy(self.__wrapped__))

    def __deepcopy__(self, memo: dict) -> FixedScheduler:
        return _proxy_for(copy.deepcopy(self.__wrapped__, memo))

    def __reduce_ex__(self, protocol: Any) -> tuple:
        return _proxy_for, (self.__wrapped__,)


def wrap(
    scheduler: Scheduler, *, convention: Convention = "end", auto: bool = False, on_lag: LagPolicy = "warn"
) -> FixedScheduler:
    """Fix an existing timm scheduler and pre-advance it now; wrapping twice returns the same object."""
    options = Options(convention=convention, auto=auto, on_lag=on_lag)
    if isinstance(scheduler, FixedScheduler):
        _check_same_options(scheduler._self_timing, options)
        return scheduler
    if not isinstance(scheduler, Scheduler):
        raise TypeError(
            "wrap() expects a timm scheduler (an instance of timm.scheduler.scheduler.Scheduler, such as "
            f"CosineLRScheduler), got {type(scheduler).__module__}.{type(scheduler).__qualname__}"
        )
    timing = timing_of(scheduler)
    if timing is None:
        timing = attach(scheduler, options, owner="wrap")
    else:
        _check_same_options(timing, options)
    return _proxy_for(scheduler)


def unwrap(fixed: FixedScheduler) -> Scheduler:
    """The original scheduler of ``wrap()``, stock again (its step hook removed)."""
    if not isinstance(fixed, FixedScheduler):
        raise TypeError(f"unwrap() expects what wrap() returned, got {type(fixed).__qualname__}")
    timing = fixed._self_timing
    if timing.owner == "wrap":
        timing.detach()
    return fixed.__wrapped__


def _proxy_for(scheduler: Scheduler) -> FixedScheduler:
    """The one proxy of a fixed scheduler, made on first request."""
    timing = timing_of(scheduler)
    if timing is None:
        raise TypeError(f"{type(scheduler).__qualname__} is not fixed")
    if timing.proxy is None:
        timing.proxy = FixedScheduler(scheduler, timing)
    return timing.proxy


def _check_same_options(timing: ScheduleTiming, options: Options) -> None:
    if timing.options != options:
        raise ValueError(f"this scheduler is already fixed with {timing.options}; cannot wrap it with {options}")

"""``wrap()``: fix a timm scheduler that already exists, seen through a ``wrapt.ObjectProxy``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import wrapt

from timm_sched_fix import _routing as routing
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._attach import attach
from timm_sched_fix._compat import Scheduler
from timm_sched_fix._timing import (
    ScheduleTiming,
    routed_load_state_dict,
    routed_state_dict,
    routed_step,
    routed_step_update,
    timing_of,
)
from timm_sched_fix.options import Convention, LagPolicy, Options


class FixedScheduler(wrapt.ObjectProxy):
    """A timm scheduler with the fix: ``isinstance`` against its timm class holds, every attribute
    forwards, and the routed methods go to its timing. Made by ``wrap()`` and the drop-in factories.

    Bad calls (docs/reference/bad-input.md) raise with the LRs unchanged: ``ValueError`` for a negative, NaN
    or infinite index, ``TypeError`` for a string or other non-real index (or a tensor or array of more than one
    number), ``RuntimeError`` for a call without an index while the position is unknown (``initialize=False``
    before ``load_state_dict``), and ``ScheduleLagError`` for a lagging index under ``on_lag="raise"``; a bool
    index is read as 0 or 1, as stock timm reads it, and it and calls the schedule ignores warn
    ``ScheduleCallWarning`` once."""

    def __init__(self, scheduler: Scheduler, timing: ScheduleTiming) -> None:
        super().__init__(scheduler)
        self._self_timing = timing

    def step(self, epoch: float | None = None, metric: Any = None) -> None:
        """timm's epoch call: applies v(epoch) (``epoch`` in epochs) for the optimizer steps that follow; without
        an index, the next one the count gives under the convention. ``metric`` is PlateauLRScheduler's.

        Raises ``ValueError`` for a negative, NaN or infinite index, ``TypeError`` for one that is no real number,
        ``RuntimeError`` for a call without an index while the position is unknown (``initialize=False``, a stock
        state dict loaded), and ``ScheduleLagError`` for a lag under ``on_lag="raise"``; nothing is changed then."""
        return routed_step(self.__wrapped__, epoch, metric)

    def step_update(self, num_updates: float | None = None, metric: Any = None) -> None:
        """timm's update call: applies v(num_updates) (``num_updates`` in optimizer updates) for the optimizer steps
        that follow; without an index, the next one the count gives under the convention. Raises as :meth:`step`
        does."""
        return routed_step_update(self.__wrapped__, num_updates, metric)

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """timm's state dict plus the position, under the key ``"timm_sched_fix"``; stock timm loads it too.
        Arguments beyond timm's go to a subclass's own ``state_dict``."""
        return routed_state_dict(self.__wrapped__, *args, **kwargs)

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        """Restore a state dict of this class, saved by a fixed or a stock scheduler, and apply its position
        now. ``TypeError`` (not a mapping) or ``ValueError`` (another class, missing keys, corrupted values)
        leave the scheduler and the LRs unchanged. Arguments beyond timm's go to a subclass's own method."""
        return routed_load_state_dict(self.__wrapped__, state_dict, *args, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        # wrapt stores a name the proxy's class has (step, state_dict, ...) on the proxy, any other on the scheduler
        super().__setattr__(name, value)
        if name in routing.ROUTED:  # the user's own step/step_update/state-dict method takes the calls from now on
            timing = timing_of(self.__wrapped__)
            if timing is not None:
                timing.step_aside(name, f"the wrap() proxy has its own {name}() (set on it)")
        elif name in routing.WATCHED:  # an instance's own _get_lr, noise method, ... (mock.patch.object)
            routing.attribute_changed(self.__wrapped__)

    def __delattr__(self, name: str) -> None:
        super().__delattr__(name)
        if name in routing.WATCHED and name not in routing.ROUTED:
            routing.attribute_changed(self.__wrapped__)

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
    scheduler: Scheduler,
    *,
    convention: Convention | None = None,
    auto: bool | None = None,
    on_lag: LagPolicy | None = None,
) -> FixedScheduler | Scheduler:
    """Fix an existing timm scheduler and pre-advance it now (options left out take their defaults:
    ``convention="end"``, ``auto=False``, ``on_lag="warn"``).

    A scheduler already fixed (by ``patch()``, ``timm_sched_fix.auto``, a drop-in class or an earlier ``wrap()``)
    keeps its position and history and takes the options given here, the ones left out staying as they are;
    with the same options the result is the object returned before (while it lives). Raises ``TypeError`` for
    anything but a timm scheduler, ``ValueError`` for ``auto=True`` on an optimizer whose parameter updates
    cannot be counted or LR noise that can never be drawn (nothing changes then). A scheduler with an own method the
    fix cannot know the meaning of (docs/reference/own-methods.md) is returned as it is, stock, with
    one ``ScheduleOverrideWarning`` saying why.
    """
    stock = scheduler.__wrapped__ if isinstance(scheduler, FixedScheduler) else scheduler
    if not isinstance(stock, Scheduler):
        raise TypeError(
            "wrap() expects a timm scheduler (an instance of timm.scheduler.scheduler.Scheduler, such as "
            f"CosineLRScheduler), got {type(scheduler).__module__}.{type(scheduler).__qualname__}"
        )
    timing = timing_of(stock)
    given = {name: value for name, value in (("convention", convention), ("auto", auto), ("on_lag", on_lag))
             if value is not None}
    if timing is None:
        if attach(stock, Options(**given), owner=Adapter.WRAP) is None:
            return stock  # an own method the fix cannot know the meaning of: as stock timm runs it (it warned)
    else:
        current = timing.options
        timing.reconfigure(Options(**{"convention": current.convention, "auto": current.auto,
                                      "on_lag": current.on_lag, **given}))
    return _proxy_for(stock)


def unwrap(fixed: FixedScheduler) -> Scheduler:
    """The original scheduler of ``wrap()``, stock again (its step hook removed). Raises ``TypeError`` for
    anything ``wrap()`` did not return."""
    if not isinstance(fixed, FixedScheduler):
        raise TypeError(f"unwrap() expects what wrap() returned, got {type(fixed).__qualname__}")
    timing = fixed._self_timing
    if timing.owner.undone_by_unwrap:
        timing.detach()
    return fixed.__wrapped__


def _proxy_for(scheduler: Scheduler) -> FixedScheduler:
    """The proxy of a fixed scheduler: the one made before while it lives (the timing holds it weakly), else a
    new one."""
    timing = timing_of(scheduler)
    if timing is None:
        raise TypeError(f"{type(scheduler).__qualname__} is not fixed")
    proxy = timing.proxy
    if proxy is None:
        proxy = timing.proxy = FixedScheduler(scheduler, timing)
    return proxy



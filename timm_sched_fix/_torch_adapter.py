"""``TorchScheduler``: a fixed timm schedule behind PyTorch's ``LRScheduler`` protocol.

Lightning, Accelerate and plain PyTorch loops call ``step()`` without arguments after each optimizer step
(or epoch) and read ``get_last_lr()``, ``last_epoch`` and ``state_dict()``. The adapter turns each
``step()`` into a counting call of the fixed timm scheduler (``step_update()`` or ``step()`` without an
index), so which v(t) applies when is decided by the timing core, as for every other adapter. PyTorch's own
entry points for composing schedulers (``_initial_step`` and ``_update_lr``, which ``SequentialLR`` calls)
re-apply the position in force and restart the schedule at its start.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, Literal

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _counting as counting
from timm_sched_fix._conventions import calls_after_the_period
from timm_sched_fix._proxy import FixedScheduler, wrap
from timm_sched_fix._timing import ScheduleTiming, timing_of
from timm_sched_fix.exceptions import ScheduleCallWarning
from timm_sched_fix.options import DEFAULT_CONVENTION, Convention, Options

compat.require_supported_torch()  # below torch 2.0 there is no LRScheduler to subclass (and no step hooks)

Interval = Literal["step", "epoch"]
INTERVALS: tuple[str, ...] = ("step", "epoch")
_STATE_KEYS = frozenset({"interval", "last_epoch", "_step_count", "timm_scheduler"})


class TorchScheduler(torch.optim.lr_scheduler.LRScheduler):
    """A timm scheduler as a ``torch.optim.lr_scheduler.LRScheduler``, fixed and pre-advanced.

    ``step()`` comes after ``optimizer.step()`` (``interval="step"``, a per-update schedule) or after the
    epoch (``interval="epoch"``, a per-epoch schedule), as PyTorch schedulers are called; under the
    default ``convention="end"`` the n-th call applies v(n), so optimizer step k runs with v(k) and epoch e
    with v(e). A PlateauLRScheduler takes its metric as ``step(metric)``, like ``ReduceLROnPlateau``.

    ``last_epoch`` is PyTorch's: the number of ``step()`` calls since construction (0 right after it),
    carried across ``state_dict()``/``load_state_dict()``; ``last_t`` is the schedule index in force.
    """

    def __init__(self, timm_scheduler: Any, interval: Interval | None = None,
                 convention: Convention = DEFAULT_CONVENTION) -> None:
        stock = timm_scheduler.__wrapped__ if isinstance(timm_scheduler, FixedScheduler) else timm_scheduler
        if not isinstance(stock, compat.Scheduler):
            raise TypeError("TorchScheduler expects a timm scheduler (such as timm.scheduler.CosineLRScheduler), got "
                            f"{type(stock).__module__}.{type(stock).__qualname__}")
        self.interval: Interval = _checked_interval(interval, stock)  # before anything is fixed
        self.timm_scheduler: FixedScheduler = _fixed(stock, convention)
        self._timing: ScheduleTiming = self.timm_scheduler._self_timing
        optimizer = self._timing.optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):  # a wrapper (DeepSpeed): torch's base needs the optimizer
            optimizer = counting.stepping_optimizer(optimizer) or optimizer
        super().__init__(optimizer)

    @property
    def last_t(self) -> float | None:
        """The schedule index in force (epochs or updates, as the timm scheduler counts)."""
        return self._timing.last_t

    def step(self, metric: Any = None, epoch: Any = None) -> None:  # type: ignore[override]
        """Advance the schedule by one step or epoch; a PlateauLRScheduler needs the metric. ``step(0)``, torch's
        deprecated epoch argument, restarts the schedule at v(0) as ``_update_lr(0)`` does: ``SequentialLR`` of
        torch 2.0 - 2.8 calls it at this scheduler's milestone (compat quirk ``sequential_lr_steps_with_epoch_0``).
        Any other index, and ``epoch`` (the keyword Lightning's documented override passes), is refused with
        ``TypeError``."""
        if epoch is not None:
            self._refuse_index(epoch)
        if type(metric) is int and metric == 0 and not compat.is_plateau(self.timm_scheduler):
            self._update_lr(0)
            return
        self._check_metric(metric)
        self._warn_if_before_optimizer_step()
        if self.interval == "epoch":
            self.timm_scheduler.step(metric=metric)
        else:
            self.timm_scheduler.step_update()
        self._step_count += 1
        self.last_epoch += 1
        self._last_lr = self._timing.get_last_lr()

    def _initial_step(self) -> None:
        """PyTorch's first step, from ``LRScheduler.__init__`` and from ``SequentialLR`` (which first resets every
        LR to ``initial_lr``): it starts the count (``last_epoch`` 0) and writes the position in force again,
        without advancing it."""
        self._step_count = 1
        self.last_epoch += 1
        compat.start_optimizer_step_count(self.optimizer)  # torch 2.0 - 2.3's counter, as its own _initial_step
        self._timing.reapply()
        self._last_lr = self._timing.get_last_lr()

    def _update_lr(self, epoch: int | None = None) -> None:
        """PyTorch's step body; ``SequentialLR`` calls ``_update_lr(0)`` at this scheduler's milestone: the timm
        schedule starts again at its first value, v(0), and ``step()`` counts on from there. Another ``epoch``
        moves it to that index, as PyTorch's deprecated ``step(epoch)`` does."""
        if epoch is None:
            self.step()
            return
        self._timing.move_to(epoch)
        self.last_epoch = epoch
        self._last_lr = self._timing.get_last_lr()

    def state_dict(self) -> dict[str, Any]:
        """The count and the fixed timm scheduler's state dict (which carries its position)."""
        return {
            "interval": self.interval,
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "timm_scheduler": self.timm_scheduler.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a ``state_dict()`` of a TorchScheduler; the saved position is applied at once."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != _STATE_KEYS:
            keys = sorted(state_dict, key=repr) if isinstance(state_dict, Mapping) else type(state_dict).__name__
            raise ValueError(f"not a TorchScheduler state dict (expected keys {sorted(_STATE_KEYS)}, got {keys})")
        if state_dict["interval"] != self.interval:
            raise ValueError(f"state dict was saved with interval={state_dict['interval']!r}, this scheduler "
                             f"has interval={self.interval!r}")
        for key in ("last_epoch", "_step_count"):
            if type(state_dict[key]) is not int or state_dict[key] < 0:
                raise ValueError(f"state_dict[{key!r}] must be a non-negative int, got {state_dict[key]!r}")
        self.timm_scheduler.load_state_dict(state_dict["timm_scheduler"])
        self.last_epoch = state_dict["last_epoch"]
        self._step_count = state_dict["_step_count"]
        self._last_lr = self._timing.get_last_lr()

    def _check_metric(self, metric: Any) -> None:
        name = type(self.timm_scheduler.__wrapped__).__name__
        if compat.is_plateau(self.timm_scheduler):
            if metric is None:
                raise TypeError(f"step() of a {name} needs the metric it watches: step(val_loss)")
        elif metric is not None:
            self._refuse_index(metric)

    def _refuse_index(self, index: Any) -> None:
        name = type(self.timm_scheduler.__wrapped__).__name__
        what = "takes no epoch" if compat.is_plateau(self.timm_scheduler) else "takes no argument"
        raise TypeError(f"step() of a {name} {what} (the adapter counts steps itself; PyTorch's epoch argument is "
                        f"deprecated), got {index!r}")

    def _warn_if_before_optimizer_step(self) -> None:
        """PyTorch's warning for the first ``step()`` coming before any ``optimizer.step()``."""
        timing = self._timing
        if (self._step_count == 1 and calls_after_the_period(timing.options.convention) and timing.counts_updates
                and not timing.steps_since_apply):
            warnings.warn(
                "TorchScheduler.step() was called before optimizer.step(): under convention='end' this skips the "
                "schedule's first value. Call step() after optimizer.step() (or after the epoch), or pass "
                "convention='begin' if it comes first",
                ScheduleCallWarning,
                stacklevel=3,
            )


def _fixed(stock: compat.Scheduler, convention: Convention) -> FixedScheduler:
    """The fixed form of a timm scheduler; an already fixed one must have this convention."""
    Options(convention=convention)  # refuse an unknown convention before anything is fixed
    timing = timing_of(stock)
    if timing is None:
        fixed = wrap(stock, convention=convention)
        if not isinstance(fixed, FixedScheduler):  # wrap() warned which own method and why
            raise ValueError(f"TorchScheduler cannot drive this {type(stock).__qualname__}: an own method of it is one "
                             "the fix cannot call for you (see the ScheduleOverrideWarning); nothing was changed")
        return fixed
    if timing.options.convention != convention:
        raise ValueError(f"this scheduler is already fixed with convention={timing.options.convention!r}; "
                         f"pass convention={timing.options.convention!r} to TorchScheduler")
    return wrap(stock, convention=convention, auto=timing.options.auto, on_lag=timing.options.on_lag)


def _checked_interval(interval: str | None, stock: compat.Scheduler) -> Interval:
    """The schedule's own unit, or ``interval`` if it names that unit; anything else is refused."""
    on_epochs = compat.is_epoch_schedule(stock)
    own: Interval = "epoch" if on_epochs else "step"
    if interval is None or interval == own:
        return own
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    fix = ("build it with t_in_epochs=False (and t_initial etc. in updates)" if interval == "step"
           else "build it with t_in_epochs=True (the default)")
    raise ValueError(f"interval={interval!r} does not match this {type(stock).__name__}, which counts "
                     f"{'epochs' if on_epochs else 'updates'}: {fix}, or pass interval={own!r}")

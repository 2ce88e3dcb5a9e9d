"""timm's PlateauLRScheduler: its quirks in every timm release, and those of timm 0.4.12 - 1.0.15 on the installed
torch (whose ``ReduceLROnPlateau`` it drives)."""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import threading
from collections.abc import Callable
from typing import Any

import torch
import torch.optim.lr_scheduler
import wrapt
from timm.scheduler.scheduler import Scheduler

from timm_sched_fix._compat.quirk import Quirk

#: timm's PlateauLRScheduler, None on a timm without it (deprecated in 1.0.31: "will be removed").
#: (From the module object: ``patch()`` may import this module while ``timm.scheduler`` is still being imported.)
PlateauLRScheduler: type[Scheduler] | None = getattr(importlib.import_module("timm.scheduler"), "PlateauLRScheduler",
                                                     None)


def has_plateau() -> bool:
    """Whether the installed timm has PlateauLRScheduler (``applies`` of its every-release quirks)."""
    return PlateauLRScheduler is not None


def is_plateau(scheduler: Scheduler) -> bool:
    return PlateauLRScheduler is not None and isinstance(scheduler, PlateauLRScheduler)



def check_metric(scheduler: Scheduler, metric: Any) -> bool:
    """Refuse a non-numeric metric for PlateauLRScheduler before anything changes (``TypeError``); True for a NaN or
    infinite one, which torch's ``ReduceLROnPlateau`` counts as "no improvement" (it lowers the LR after
    ``patience_t`` such epochs) in every timm release: the fix applies it as stock timm does, and says so."""
    if metric is None or not is_plateau(scheduler):
        return False
    try:
        value = float(metric)
    except (TypeError, ValueError):
        raise TypeError(f"PlateauLRScheduler metric must be a number, got {metric!r}") from None
    return not math.isfinite(value)


def stock_writer(scheduler: Scheduler, stock_method: Callable[..., Any]) -> Callable[[Scheduler, float, Any], None]:
    """A function ``(scheduler, t, metric)`` that writes v(t) through the scheduler's own ``step``/``step_update``
    (``stock_method``, unbound), so noise and subclass overrides apply; made for ``scheduler`` and called with it
    (a fixed scheduler keeps its writer, which must not hold it). See :func:`inlined_step_update` for the faster
    equivalent of an unmodified ``step_update``.

    Quirk ``plateau_step0_without_warmup`` (every timm release): ``PlateauLRScheduler.step(0)`` with
    ``warmup_t=0`` takes the warmup branch and writes ``warmup_lr_init`` (0 by default), although the
    schedule's value for epoch 0 is the base LR; timm's train.py never calls ``step(0)``, so the quirk
    only bites a pre-advance or a "begin"-convention loop. The base values are written instead.
    """
    if not is_plateau(scheduler):
        return stock_method

    def write_plateau(scheduler: Scheduler, t: float, metric: Any) -> None:
        if t == 0 and not scheduler.warmup_t:
            scheduler.update_groups(scheduler.base_values)
        elif PLATEAU_STEP_PASSES_NONE_METRIC:
            _torch_plateau_step_as_timm_1_0_24(scheduler.lr_scheduler)(functools.partial(stock_method, scheduler))(
                t, metric)
        else:
            stock_method(scheduler, t, metric)

    return write_plateau


def add_param_groups(scheduler: Scheduler, groups: list[dict]) -> None:
    """Make param groups added to the optimizer after construction part of the schedule, as timm's constructor
    makes the first ones: each group's base value is its ``initial_<field>`` if set, else its current value
    (which becomes its ``initial_<field>``); its ``lr_scale`` applies as to every group.

    Quirk ``plateau_groups_fixed_at_construction`` (every timm release): PlateauLRScheduler keeps one saved LR
    per group while noise is applied (``restore_lr``), and torch's ``ReduceLROnPlateau`` one minimum LR per group
    (``min_lrs``, from the scalar ``lr_min``); both get an entry for each new group."""
    initial_field = scheduler._initial_param_group_field
    for group in groups:
        group.setdefault(initial_field, group[scheduler.param_group_field])
        scheduler.base_values.append(group[initial_field])
    if is_plateau(scheduler):
        if scheduler.restore_lr is not None:
            scheduler.restore_lr.extend(float(group[scheduler.param_group_field]) for group in groups)
        min_lrs = scheduler.lr_scheduler.min_lrs
        min_lrs.extend(min_lrs[-1:] * len(groups))


def _parameters(function: Callable[..., Any]) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


#: Quirk ``plateau_verbose`` (timm 0.4.12 - 1.0.15, on a torch without the argument such as 2.14):
#: ``PlateauLRScheduler.__init__`` passes ``verbose=`` to ``torch.optim.lr_scheduler.ReduceLROnPlateau``,
#: which no longer accepts it, so the constructor raises ``TypeError`` after it already reset the LRs.
PLATEAU_PASSES_VERBOSE: bool = (
    PlateauLRScheduler is not None and "verbose" in _parameters(PlateauLRScheduler.__init__)
    and "verbose" not in _parameters(torch.optim.lr_scheduler.ReduceLROnPlateau.__init__)
)

#: Quirk ``plateau_step_without_metric`` (timm 0.4.12 - 1.0.15): past the warmup,
#: ``PlateauLRScheduler.step(epoch)`` calls ``ReduceLROnPlateau.step(metric, epoch)`` even when ``metric``
#: is None (``float(None)`` raises ``TypeError``), and passes the ``epoch`` argument torch deprecated
#: (a ``UserWarning`` on every step). timm 1.0.24 steps the torch scheduler only with a metric, and
#: without ``epoch``. Detected by the ``verbose`` parameter, which timm removed in the same change.
PLATEAU_STEP_PASSES_NONE_METRIC: bool = (PlateauLRScheduler is not None
                                         and "verbose" in _parameters(PlateauLRScheduler.__init__))


@wrapt.transient_function_wrapper(torch.optim.lr_scheduler, "ReduceLROnPlateau")
def _reduce_lr_on_plateau_without_verbose(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``ReduceLROnPlateau`` for the duration of one call, dropping the ``verbose`` torch removed."""
    kwargs.pop("verbose", None)
    return wrapped(*args, **kwargs)


#: Held while ``ReduceLROnPlateau`` is swapped in torch's module: two threads constructing at once would each
#: put back what they found, so one raised ``WrapperNotFoundError`` or left torch's class wrapped. Reentrant,
#: as a constructor may build another scheduler.
_REDUCE_LR_ON_PLATEAU_SWAP = threading.RLock()


@wrapt.decorator
def _one_swap_at_a_time(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    with _REDUCE_LR_ON_PLATEAU_SWAP:
        return wrapped(*args, **kwargs)


def for_installed_torch(call: Callable[..., Any]) -> Callable[..., Any]:
    """A timm scheduler constructor or factory, made to run on the installed torch.

    Applies quirk ``plateau_verbose`` where it exists: for the duration of the call only, and one thread at
    a time, ``ReduceLROnPlateau`` accepts and ignores ``verbose`` (torch removed those log messages).
    """
    return _one_swap_at_a_time(_reduce_lr_on_plateau_without_verbose(call)) if PLATEAU_PASSES_VERBOSE else call


def _torch_plateau_step_as_timm_1_0_24(torch_plateau: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Quirk ``plateau_step_without_metric``: during one timm ``step`` call, the torch scheduler steps
    only with a metric, and takes the epoch as its ``last_epoch`` instead of the deprecated argument."""

    @wrapt.transient_function_wrapper(torch_plateau, "step")
    def step_with_metric_only(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        metrics, epoch = _bind_plateau_step(*args, **kwargs)
        if metrics is None:
            return
        if epoch is not None:
            torch_plateau.last_epoch = epoch - 1  # torch's step() without epoch counts last_epoch + 1
        wrapped(metrics)

    return step_with_metric_only


def _bind_plateau_step(metrics: Any, epoch: float | None = None) -> tuple[Any, float | None]:
    return metrics, epoch


def stock_epoch_step(scheduler: Scheduler) -> Callable[[float, Any], None]:
    """A stock scheduler's own ``step(epoch, metric)``, made to run without a metric on every release.

    Applies quirk ``plateau_step_without_metric`` where it exists (PlateauLRScheduler of timm 0.4.12 - 1.0.15):
    without a metric the LR is kept, as timm 1.0.24 does. Everything else is the stock call, defects included;
    for tools that show stock timm's behaviour (``trace``), while the fix itself writes through :func:`stock_writer`.
    """

    def step(epoch: float, metric: Any = None) -> None:
        if PLATEAU_STEP_PASSES_NONE_METRIC and is_plateau(scheduler):
            _torch_plateau_step_as_timm_1_0_24(scheduler.lr_scheduler)(scheduler.step)(epoch, metric)
        else:
            scheduler.step(epoch, metric)

    return step


def plateau_state(scheduler: Scheduler) -> dict[str, Any] | None:
    """What a PlateauLRScheduler needs to resume past warmup, which its stock state dict lacks.

    Quirk ``plateau_state_outside_state_dict`` (every timm release): past warmup the LR lives in the
    optimizer (reduced by torch's ``ReduceLROnPlateau``, noise undone via ``restore_lr``) and the stock state
    dict keeps only ``best`` and ``last_epoch``, so re-applying v(t) after a resume or a re-wrap cannot
    recompute it. The un-noised LRs and the ``ReduceLROnPlateau`` counters are recorded instead.
    """
    if not is_plateau(scheduler):
        return None
    field = scheduler.param_group_field
    current = scheduler.restore_lr
    if current is None:
        current = [group[field] for group in scheduler.optimizer.param_groups]
    return {"lrs": [float(value) for value in current], "reduce_on_plateau": dict(scheduler.lr_scheduler.state_dict())}


def check_plateau_state(scheduler: Scheduler, state: Any) -> None:
    """Refuse a malformed plateau record before anything is loaded."""
    if state is None:
        return
    groups = len(scheduler.optimizer.param_groups)
    if (not isinstance(state, dict) or not isinstance(state.get("reduce_on_plateau"), dict)
            or not isinstance(state.get("lrs"), list) or len(state["lrs"]) != groups):
        raise ValueError(f"malformed PlateauLRScheduler record for {groups} param group(s): {state!r}")


def restore_plateau_state(scheduler: Scheduler, state: dict[str, Any] | None, t: float | None) -> None:
    """Put back what :func:`plateau_state` recorded; past warmup the next ``step(t)`` restores the LRs."""
    if state is None or not is_plateau(scheduler):
        return
    scheduler.lr_scheduler.load_state_dict(state["reduce_on_plateau"])
    if t is not None and t > scheduler.warmup_t:
        scheduler.restore_lr = list(state["lrs"])


#: Keys stock ``PlateauLRScheduler.load_state_dict`` reads without checking (every timm release).
PLATEAU_REQUIRED_KEYS = frozenset({"best"})


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "plateau_step0_without_warmup",
        "every timm release",
        "PlateauLRScheduler.step(0) with warmup_t=0 writes warmup_lr_init; the fix writes the base LRs",
        has_plateau,
    ),
    Quirk(
        "plateau_verbose",
        "timm 0.4.12 - 1.0.15 on torch without ReduceLROnPlateau(verbose=) (2.14)",
        "PlateauLRScheduler(...) raises TypeError for verbose; the fix drops verbose during construction",
        lambda: PLATEAU_PASSES_VERBOSE,
    ),
    Quirk(
        "plateau_step_without_metric",
        "timm 0.4.12 - 1.0.15",
        "PlateauLRScheduler.step(epoch) without a metric raises TypeError past warmup; the fix keeps the LR "
        "as timm 1.0.24 does",
        lambda: PLATEAU_STEP_PASSES_NONE_METRIC,
    ),
    Quirk(
        "plateau_state_outside_state_dict",
        "every timm release",
        "PlateauLRScheduler's state dict lacks its LR and ReduceLROnPlateau counters; the fix records them",
        has_plateau,
    ),
    Quirk(
        "plateau_groups_fixed_at_construction",
        "every timm release",
        "PlateauLRScheduler keeps per-group lists sized at construction (restore_lr, ReduceLROnPlateau.min_lrs); "
        "the fix extends them for param groups added later",
        has_plateau,
    ),
    Quirk(
        "plateau_nan_metric",
        "every timm release",
        "a NaN or infinite metric makes ReduceLROnPlateau lower the LR; the fix applies it as stock does and warns once",
        has_plateau,
    ),
)

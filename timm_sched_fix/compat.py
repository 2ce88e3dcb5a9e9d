"""Everything that differs between timm releases (and between timm and torch) lives here.

Each quirk is named with the timm versions it applies to. The rest of the package asks this
module instead of testing versions itself.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm.scheduler
import torch.optim.lr_scheduler
import wrapt
from timm.scheduler.plateau_lr import PlateauLRScheduler
from timm.scheduler.scheduler import Scheduler

TIMM_VERSION: str = getattr(timm, "__version__", "unknown")

def scheduler_classes() -> dict[str, type[Scheduler]]:
    """The scheduler classes the installed ``timm.scheduler`` exports, by name."""
    return {
        name: value
        for name, value in vars(timm.scheduler).items()
        if isinstance(value, type) and issubclass(value, Scheduler) and value is not Scheduler
    }


def is_plateau(scheduler: Scheduler) -> bool:
    return isinstance(scheduler, PlateauLRScheduler)


def is_epoch_schedule(scheduler: Scheduler) -> bool:
    """True when the schedule's index counts epochs (``step``), False for updates (``step_update``).

    PlateauLRScheduler is always per epoch; before timm 0.9 ``t_in_epochs`` was set by each subclass,
    from 0.9 by the base class, and user subclasses of older timm may not set it at all (then per epoch,
    as their ``step`` is what works).
    """
    return is_plateau(scheduler) or bool(getattr(scheduler, "t_in_epochs", True))


def stock_writer(scheduler: Scheduler, stock_method: Callable[..., Any]) -> Callable[[float, Any], None]:
    """A function ``(t, metric)`` that writes v(t) through the scheduler's own ``step``/``step_update``
    (``stock_method``, unbound), so noise and subclass overrides apply.

    Quirk ``plateau_step0_without_warmup`` (every timm release): ``PlateauLRScheduler.step(0)`` with
    ``warmup_t=0`` takes the warmup branch and writes ``warmup_lr_init`` (0 by default), although the
    schedule's value for epoch 0 is the base LR; timm's train.py never calls ``step(0)``, so the quirk
    only bites a pre-advance or a "begin"-convention loop. The base values are written instead.
    """
    write = functools.partial(stock_method, scheduler)
    if not is_plateau(scheduler):
        return write

    def write_plateau(t: float, metric: Any) -> None:
        if t == 0 and not scheduler.warmup_t:
            scheduler.update_groups(scheduler.base_values)
        elif PLATEAU_STEP_PASSES_NONE_METRIC:
            _torch_plateau_step_as_timm_1_0_24(scheduler.lr_scheduler)(write)(t, metric)
        else:
            write(t, metric)

    return write_plateau


@dataclass(frozen=True)
class Quirk:
    """One difference the fix works around: its name, the releases it concerns, and what the fix does."""

    name: str
    versions: str
    description: str
    applies: Callable[[], bool]


#: Every quirk handled in this module; ``active_quirks()`` reports the ones that apply to the installed versions.
QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "plateau_step0_without_warmup",
        "every timm release",
        "PlateauLRScheduler.step(0) with warmup_t=0 writes warmup_lr_init; the fix writes the base LRs",
        lambda: hasattr(timm.scheduler, "PlateauLRScheduler"),
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
)


def active_quirks() -> list[Quirk]:
    """The quirks of ``QUIRKS`` that apply to the installed timm and torch (what ``check`` lists)."""
    return [quirk for quirk in QUIRKS if quirk.applies()]


# -- timm versions vs the installed torch ------------------------------------------------------------


def _parameters(function: Callable[..., Any]) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


#: Quirk ``plateau_verbose`` (timm 0.4.12 - 1.0.15, on a torch without the argument such as 2.14):
#: ``PlateauLRScheduler.__init__`` passes ``verbose=`` to ``torch.optim.lr_scheduler.ReduceLROnPlateau``,
#: which no longer accepts it, so the constructor raises ``TypeError`` after it already reset the LRs.
PLATEAU_PASSES_VERBOSE: bool = (
    "verbose" in _parameters(PlateauLRScheduler.__init__)
    and "verbose" not in _parameters(torch.optim.lr_scheduler.ReduceLROnPlateau.__init__)
)

#: Quirk ``plateau_step_without_metric`` (timm 0.4.12 - 1.0.15): past the warmup,
#: ``PlateauLRScheduler.step(epoch)`` calls ``ReduceLROnPlateau.step(metric, epoch)`` even when ``metric``
#: is None (``float(None)`` raises ``TypeError``), and passes the ``epoch`` argument torch deprecated
#: (a ``UserWarning`` on every step). timm 1.0.24 steps the torch scheduler only with a metric, and
#: without ``epoch``. Detected by the ``verbose`` parameter, which timm removed in the same change.
PLATEAU_STEP_PASSES_NONE_METRIC: bool = "verbose" in _parameters(PlateauLRScheduler.__init__)


@wrapt.transient_function_wrapper(torch.optim.lr_scheduler, "ReduceLROnPlateau")
def _reduce_lr_on_plateau_without_verbose(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``ReduceLROnPlateau`` for the duration of one call, dropping the ``verbose`` torch removed."""
    kwargs.pop("verbose", None)
    return wrapped(*args, **kwargs)


def for_installed_torch(call: Callable[..., Any]) -> Callable[..., Any]:
    """A timm scheduler constructor or factory, made to run on the installed torch.

    Applies quirk ``plateau_verbose`` where it exists: for the duration of the call only,
    ``ReduceLROnPlateau`` accepts and ignores ``verbose`` (torch removed those log messages).
    """
    return _reduce_lr_on_plateau_without_verbose(call) if PLATEAU_PASSES_VERBOSE else call


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


#: Attributes the base ``Scheduler.__init__`` sets in some timm release (``noise_type`` and ``t_in_epochs``
#: moved into the base class in 0.9); they do not tell scheduler classes apart.
BASE_STATE_KEYS = frozenset({
    "param_group_field", "_initial_param_group_field", "base_values", "metric", "t_in_epochs",
    "noise_range_t", "noise_pct", "noise_type", "noise_std", "noise_seed",
})
#: Keys stock ``PlateauLRScheduler.load_state_dict`` reads without checking (every timm release).
PLATEAU_REQUIRED_KEYS = frozenset({"best"})


def check_state_dict(scheduler: Scheduler, given: dict, own: dict) -> None:
    """Refuse a stock state dict of another scheduler class before anything is loaded.

    A state dict that both lacks keys of this class and brings keys this class does not have comes
    from another class; one that only adds or only lacks keys may come from another timm release.
    """
    if is_plateau(scheduler):
        missing_required = PLATEAU_REQUIRED_KEYS - set(given)
        if missing_required:
            raise ValueError(f"state dict for {type(scheduler).__name__} lacks {sorted(missing_required)}")
    unexpected = set(given) - set(own) - BASE_STATE_KEYS
    missing = set(own) - set(given) - BASE_STATE_KEYS
    if unexpected and missing:
        raise ValueError(
            f"state dict does not belong to a {type(scheduler).__name__}: it has {sorted(unexpected)} "
            f"and lacks {sorted(missing)}"
        )


def construction_args(init: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any | None, bool]:
    """The optimizer and the ``initialize`` flag of a scheduler constructor call.

    Read from the constructor's own signature, so user subclasses with their own parameters work;
    the optimizer falls back to the first positional argument.
    """
    try:
        arguments = inspect.signature(init).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return (args[0] if args else kwargs.get("optimizer")), True
    extra = {}
    for name, parameter in inspect.signature(init).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = arguments.get(name, {})
    optimizer = arguments.get("optimizer", args[0] if args else extra.get("optimizer"))
    initialize = arguments.get("initialize", extra.get("initialize", True))
    return optimizer, bool(initialize)

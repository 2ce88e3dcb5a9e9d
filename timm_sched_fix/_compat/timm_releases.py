"""timm releases: the scheduler classes the installed timm has, what tells schedules and classes apart, and the
state-dict keys that differ between releases."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import timm
import timm.scheduler
import torch
from timm.scheduler.scheduler import Scheduler

from timm_sched_fix._compat.plateau import PLATEAU_REQUIRED_KEYS, is_plateau
from timm_sched_fix._compat.quirk import Quirk, always

TIMM_VERSION: str = getattr(timm, "__version__", "unknown")


def scheduler_classes() -> dict[str, type[Scheduler]]:
    """The scheduler classes the installed ``timm.scheduler`` exports, by name."""
    return {
        name: value
        for name, value in vars(timm.scheduler).items()
        if isinstance(value, type) and issubclass(value, Scheduler) and value is not Scheduler
    }

def is_epoch_schedule(scheduler: Scheduler) -> bool:
    """True when the schedule's index counts epochs (``step``), False for updates (``step_update``).

    PlateauLRScheduler is always per epoch; before timm 0.9 ``t_in_epochs`` was set by each subclass,
    from 0.9 by the base class, and user subclasses of older timm may not set it at all (then per epoch,
    as their ``step`` is what works).
    """
    return is_plateau(scheduler) or bool(getattr(scheduler, "t_in_epochs", True))

#: Attributes the base ``Scheduler.__init__`` sets in some timm release (``noise_type`` and ``t_in_epochs``
#: moved into the base class in 0.9); they do not tell scheduler classes apart.
BASE_STATE_KEYS = frozenset({
    "param_group_field", "_initial_param_group_field", "metric", "t_in_epochs",
    "noise_range_t", "noise_pct", "noise_type", "noise_std", "noise_seed",
})
#: State-dict keys a class has in some timm releases only (measured on 0.4.12 ... 1.0.31): ``k_decay``
#: arrived in Cosine with 0.5.4, ``warmup_prefix`` in Step/MultiStep with 0.9.
VERSION_STATE_KEYS = {
    "CosineLRScheduler": frozenset({"k_decay"}),
    "StepLRScheduler": frozenset({"warmup_prefix"}),
    "MultiStepLRScheduler": frozenset({"warmup_prefix"}),
    "PlateauLRScheduler": frozenset({"last_epoch"}),
}
#: Quirk ``cycle_args_renamed_0_5`` (timm 0.4.12 -> 0.5.4): Cosine/Tanh ``t_mul``/``decay_rate`` became
#: ``cycle_mul``/``cycle_decay`` and ``cycle_limit=0`` changed from "unlimited" to "no cycle", so such a state
#: dict cannot be translated by renaming; it is refused with this explanation.
RENAMED_IN_0_5 = {"t_mul": "cycle_mul", "decay_rate": "cycle_decay"}

def timm_class_name(scheduler: Scheduler) -> str:
    """The name of the timm class a scheduler is (drop-in classes and user subclasses map to their timm base)."""
    return next(cls.__name__ for cls in scheduler.__class__.__mro__ if cls.__module__.startswith("timm.scheduler"))


def check_state_dict(scheduler: Scheduler, given: dict, own: dict) -> None:
    """Refuse, before anything is loaded, a stock state dict of another scheduler class, a truncated one,
    or one whose base values do not fit the optimizer.

    Keys that only some timm releases have (:data:`BASE_STATE_KEYS`, :data:`VERSION_STATE_KEYS`) may be
    missing or extra, so state dicts move between releases where the class exists.
    """
    name = timm_class_name(scheduler)
    if is_plateau(scheduler):
        missing_required = PLATEAU_REQUIRED_KEYS - set(given)
        if missing_required:
            raise ValueError(f"state dict for {name} lacks {sorted(missing_required)}")
    renamed = sorted(old for old, new in RENAMED_IN_0_5.items() if old in given and new in own)
    renamed += sorted(new for old, new in RENAMED_IN_0_5.items() if new in given and old in own)
    if {"t_mul", "cycle_mul"} & set(renamed) and name in ("CosineLRScheduler", "TanhLRScheduler"):
        raise ValueError(
            f"state dict of a {name} from another side of timm 0.5 (it has {renamed}): t_mul/decay_rate were "
            "renamed cycle_mul/cycle_decay in 0.5.4 and cycle_limit=0 changed meaning, so it cannot be loaded; "
            f"build the {name} with the equivalent arguments and resume with step(epoch) instead"
        )
    tolerated = BASE_STATE_KEYS | VERSION_STATE_KEYS.get(name, frozenset())
    unexpected = sorted(set(given) - set(own) - tolerated, key=repr)  # keys of any type: a str, an int, ...
    missing = sorted(set(own) - set(given) - tolerated, key=repr)
    if unexpected or missing:
        differences = ([f"it has {unexpected}"] if unexpected else []) + ([f"it lacks {missing}"] if missing else [])
        raise ValueError(
            f"state dict does not belong to a {name}: {' and '.join(differences)} "
            "(another scheduler class, or a truncated state dict)"
        )
    step_like = name in ("MultiStepLRScheduler", "StepLRScheduler")
    if step_like and isinstance(given.get("decay_t"), (list, tuple)) != (name == "MultiStepLRScheduler"):
        raise ValueError(f"state dict does not belong to a {name}: decay_t={given.get('decay_t')!r}")
    groups = len(scheduler.optimizer.param_groups)
    base_values = given.get("base_values", own.get("base_values"))
    if base_values is not None and (
        not isinstance(base_values, (list, tuple)) or len(base_values) != groups
        or not all(isinstance(value, (int, float, torch.Tensor)) and not isinstance(value, bool)
                   for value in base_values)):
        raise ValueError(f"state dict base_values {base_values!r} do not fit an optimizer with {groups} param group(s)")


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



QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "cycle_args_renamed_0_5",
        "0.4.12 vs 0.5.4+",
        "Cosine/Tanh t_mul/decay_rate became cycle_mul/cycle_decay with a new cycle_limit=0; such state dicts "
        "are refused with the reason",
        always,
    ),
)

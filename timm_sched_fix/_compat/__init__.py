"""The release quirk registry: everything that differs between timm releases, between torch releases, and between
timm and the installed torch, DeepSpeed and timm's Lookahead, by origin, one module each:

- :mod:`.torch_releases`: the supported torch range and the ``LRScheduler`` protocol (``TorchScheduler``);
- :mod:`.compiled_step`: the step hook in a ``torch.compile``d optimizer step;
- :mod:`.plateau`: PlateauLRScheduler, in every timm release and on the installed torch;
- :mod:`.timm_releases`: the scheduler classes, schedule kinds and state-dict keys of each timm release;
- :mod:`.inlined`: the base ``Scheduler.step_update`` as the fix repeats it (by fingerprint), and timm's noise draw;
- :mod:`.lookahead`, :mod:`.deepspeed`: the optimizer wrappers the update counting looks through.

Each quirk is a :class:`Quirk` named with the releases it was read off, in the ``QUIRKS`` of its module;
:data:`QUIRKS` here holds them all and :func:`active_quirks` those that apply (what ``timm-sched-fix check``
lists). The rest of the package asks this package (the names below) instead of testing versions itself. timm's
scheduler classes and factories are looked up as optional (timm deprecates and removes them: PlateauLRScheduler is
deprecated in 1.0.31); only the base ``Scheduler`` is required.
"""

from __future__ import annotations

# isort: off
# torch first: patch()'s hook on timm.scheduler asks for the supported torch range while timm is being imported
from timm_sched_fix._compat import torch_releases
from timm_sched_fix._compat.torch_releases import (
    OLDEST_TORCH,
    OPTIMIZER_STEP_HOOKS,
    SEQUENTIAL_LR_CALLS_UPDATE_LR,
    TORCH_RELEASE,
    TORCH_VERSION,
    require_supported_torch,
    start_optimizer_step_count,
    unsupported_torch,
)
import timm
from timm.scheduler.scheduler import Scheduler
# isort: on

from timm_sched_fix._compat import compiled_step, deepspeed, inlined, lookahead, plateau, timm_releases
from timm_sched_fix._compat.compiled_step import (
    UNTRACED_IN_COMPILED_STEP,
    dynamo_around,
    dynamo_tracing,
    untraced_call,
    without_dynamo,
)
from timm_sched_fix._compat.inlined import (
    KNOWN_BASE_STEP_UPDATES,
    MAX_NOISE_DRAWS,
    BaseStepUpdate,
    base_step_update_fingerprint,
    check_noise,
    inlined_step_update,
    installed_base_step_update,
    update_schedule_values,
)
from timm_sched_fix._compat.plateau import (
    PLATEAU_PASSES_VERBOSE,
    PLATEAU_REQUIRED_KEYS,
    PLATEAU_STEP_PASSES_NONE_METRIC,
    PlateauLRScheduler,
    add_param_groups,
    check_metric,
    check_plateau_state,
    for_installed_torch,
    is_plateau,
    plateau_state,
    restore_plateau_state,
    stock_epoch_step,
    stock_writer,
)
from timm_sched_fix._compat.quirk import Quirk
from timm_sched_fix._compat.timm_releases import (
    BASE_STATE_KEYS,
    RENAMED_IN_0_5,
    TIMM_VERSION,
    VERSION_STATE_KEYS,
    check_state_dict,
    construction_args,
    is_epoch_schedule,
    scheduler_classes,
    timm_class_name,
)

#: Every quirk the fix handles, by origin; ``active_quirks()`` gives the ones that apply to the installed versions.
QUIRKS: tuple[Quirk, ...] = (*plateau.QUIRKS, *timm_releases.QUIRKS, *torch_releases.QUIRKS, *compiled_step.QUIRKS,
                             *lookahead.QUIRKS, *deepspeed.QUIRKS)


def active_quirks() -> list[Quirk]:
    """The quirks of ``QUIRKS`` that apply to the installed timm, torch and DeepSpeed (what ``check`` lists)."""
    return [quirk for quirk in QUIRKS if quirk.applies()]


__all__ = [
    "BASE_STATE_KEYS", "KNOWN_BASE_STEP_UPDATES", "MAX_NOISE_DRAWS", "OLDEST_TORCH", "OPTIMIZER_STEP_HOOKS",
    "PLATEAU_PASSES_VERBOSE", "PLATEAU_REQUIRED_KEYS", "PLATEAU_STEP_PASSES_NONE_METRIC", "QUIRKS", "RENAMED_IN_0_5",
    "SEQUENTIAL_LR_CALLS_UPDATE_LR", "TIMM_VERSION", "TORCH_RELEASE", "TORCH_VERSION", "UNTRACED_IN_COMPILED_STEP",
    "VERSION_STATE_KEYS", "BaseStepUpdate", "PlateauLRScheduler", "Quirk", "Scheduler", "active_quirks",
    "add_param_groups", "base_step_update_fingerprint", "check_metric", "check_noise", "check_plateau_state",
    "check_state_dict", "compiled_step", "construction_args", "deepspeed", "dynamo_around", "dynamo_tracing",
    "for_installed_torch", "inlined", "inlined_step_update", "installed_base_step_update", "is_epoch_schedule",
    "is_plateau", "lookahead", "plateau", "plateau_state", "require_supported_torch", "restore_plateau_state",
    "scheduler_classes", "start_optimizer_step_count", "stock_epoch_step", "stock_writer", "timm", "timm_class_name",
    "timm_releases", "torch_releases", "unsupported_torch", "untraced_call", "update_schedule_values", "without_dynamo",
]

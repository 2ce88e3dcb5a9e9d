"""torch releases: the supported range, and the ``LRScheduler`` protocol's differences (``TorchScheduler``).

Imports no timm: ``patch()``'s hook on ``timm.scheduler`` asks for the supported range while timm is being imported.
"""

from __future__ import annotations

import re
from typing import Any

import torch
import torch.optim.lr_scheduler

from timm_sched_fix._compat.quirk import Quirk

TORCH_VERSION: str = torch.__version__
#: (major, minor) of the installed torch, for quirks that are named with releases and cannot be seen otherwise.
TORCH_RELEASE: tuple[int, ...] = tuple(int(part) for part in re.findall(r"\d+", TORCH_VERSION)[:2])
#: The oldest torch release the package runs on (pyproject.toml's ``torch>=`` and docs/reference/versions.md say the same).
OLDEST_TORCH = "2.0"
#: torch 2.0+: ``Optimizer.register_step_pre_hook``/``register_step_post_hook``, which run around every parameter
#: update and by which the fix counts updates (lag detection, auto mode, ``check``, ``trace``, ``audit``).
#: torch 1.13 and older have no optimizer step hooks: the package does not run there (:func:`unsupported_torch`).
OPTIMIZER_STEP_HOOKS: bool = (hasattr(torch.optim.Optimizer, "register_step_pre_hook")
                              and hasattr(torch.optim.Optimizer, "register_step_post_hook"))


def unsupported_torch() -> str | None:
    """Why the installed torch cannot run the fix (the message of every entry point's error or warning), or None
    on a supported torch."""
    if OPTIMIZER_STEP_HOOKS:
        return None
    return (f"timm-sched-fix needs torch >= {OLDEST_TORCH}, and this is torch {TORCH_VERSION}: it counts parameter "
            "updates with the optimizer step hooks torch added in 2.0 (Optimizer.register_step_pre_hook and "
            "register_step_post_hook), which this torch does not have. Upgrade torch (pip install 'torch>="
            f"{OLDEST_TORCH}'), or run without timm-sched-fix")


def require_supported_torch() -> None:
    """Raise ``RuntimeError`` (:func:`unsupported_torch`'s message) below the supported torch range."""
    message = unsupported_torch()
    if message is not None:
        raise RuntimeError(message)

# -- torch releases: the LRScheduler protocol ---------------------------------------------------------------

#: Quirk ``sequential_lr_steps_with_epoch_0`` (torch 2.0 - 2.8): at a milestone ``SequentialLR.step()`` restarts
#: the next scheduler with ``scheduler.step(0)``, torch's deprecated epoch argument; torch 2.9 calls
#: ``scheduler._update_lr(0)``, which ``LRScheduler`` has from then on. ``TorchScheduler`` takes both.
SEQUENTIAL_LR_CALLS_UPDATE_LR: bool = hasattr(getattr(torch.optim.lr_scheduler, "LRScheduler", object), "_update_lr")


def start_optimizer_step_count(optimizer: Any) -> None:
    """Quirk ``lr_scheduler_counts_optimizer_steps`` (torch 2.0 - 2.3): ``LRScheduler.__init__`` replaces the
    optimizer's ``step`` with a counter of ``optimizer._step_count`` (marked ``_with_counter``), which only
    torch's own ``_initial_step`` creates; a scheduler with its own ``_initial_step`` (``TorchScheduler``) starts
    it as torch's does, or the first ``optimizer.step()`` raises ``AttributeError``. torch 2.4 replaced the counter
    with a flag the wrapper sets itself."""
    if getattr(optimizer.step, "_with_counter", False):
        optimizer._step_count = 0


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "lr_scheduler_counts_optimizer_steps",
        "torch 2.0 - 2.3",
        "LRScheduler counts optimizer steps in optimizer._step_count, which only its own _initial_step starts; "
        "TorchScheduler starts it too",
        lambda: OPTIMIZER_STEP_HOOKS and TORCH_RELEASE < (2, 4),
    ),
    Quirk(
        "sequential_lr_steps_with_epoch_0",
        "torch 2.0 - 2.8",
        "SequentialLR restarts a scheduler at its milestone with step(0) (2.9+: _update_lr(0)); TorchScheduler "
        "takes both and restarts the timm schedule at v(0)",
        lambda: OPTIMIZER_STEP_HOOKS and not SEQUENTIAL_LR_CALLS_UPDATE_LR,
    ),
)

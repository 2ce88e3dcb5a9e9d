"""Every optimizer step runs with the learning rate its timm schedule defines.

``patch()`` fixes every timm scheduler constructed afterwards, ``wrap()`` fixes one that exists, and the
drop-in classes (``timm_sched_fix.CosineLRScheduler``, ...) are fixed from construction; ``TorchScheduler``
gives any of them PyTorch's ``LRScheduler`` protocol (Lightning, Accelerate). Importing this
package imports neither timm nor torch, nor wrapt: the names that need them load on first use (the start-up hook,
timm_sched_fix/runner/startup.py, imports this package while ``site`` may not have put wrapt on ``sys.path`` yet).
"""

from __future__ import annotations

import importlib
from typing import Any

from timm_sched_fix.exceptions import (
    GoldenTraceMismatch,
    ScheduleCallWarning,
    ScheduleCountWarning,
    ScheduleLagError,
    ScheduleLagWarning,
    ScheduleOverrideWarning,
)
from timm_sched_fix.options import Options

__version__ = "0.1.0"

#: Public name -> the private module defining it, imported on first use.
_LAZY = {
    "patch": "_patching",
    "unpatch": "_patching",
    "patched": "_patching",
    "is_patched": "_patching",
    "wrap": "_proxy",
    "unwrap": "_proxy",
    "FixedScheduler": "_proxy",
    "TorchScheduler": "_torch_adapter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # found directly from now on
        return value
    if name.endswith("LRScheduler") or name in ("create_scheduler", "create_scheduler_v2"):
        dropin = importlib.import_module("._dropin", __name__)
        if name in dropin.SCHEDULER_CLASSES or name in dropin.FACTORIES:
            return getattr(dropin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


#: The public API. The drop-in classes and factories (``CosineLRScheduler``, ``create_scheduler_v2``, ...) are public
#: too but mirror the installed timm (``timm_sched_fix._dropin``), so they are found by name rather than listed here.
__all__ = [
    "FixedScheduler",
    "GoldenTraceMismatch",
    "Options",
    "ScheduleCallWarning",
    "ScheduleCountWarning",
    "ScheduleLagError",
    "ScheduleLagWarning",
    "ScheduleOverrideWarning",
    "TorchScheduler",
    "is_patched",
    "patch",
    "patched",
    "unpatch",
    "unwrap",
    "wrap",
]

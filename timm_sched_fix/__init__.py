"""Every optimizer step runs with the learning rate its timm schedule defines.

``patch()`` fixes every timm scheduler constructed afterwards, ``wrap()`` fixes one that exists, and the
drop-in classes (``timm_sched_fix.CosineLRScheduler``, ...) are fixed from construction; ``TorchScheduler``
gives any of them PyTorch's ``LRScheduler`` protocol (Lightning, Accelerate). Importing this
package imports neither timm nor torch, nor wrapt: the names that need them load on first use (the start-up hook,
timm_sched_fix/startup.py, imports this package while ``site`` may not have put wrapt on ``sys.path`` yet).
"""

from __future__ import annotations

import importlib
from typing import Any

from .options import Options

__version__ = "0.1.0"

_LAZY = {
    "patch": "patching",
    "unpatch": "patching",
    "patched": "patching",
    "is_patched": "patching",
    "wrap": "proxy",
    "unwrap": "proxy",
    "FixedScheduler": "proxy",
    "ScheduleLagWarning": "lag",
    "ScheduleCallWarning": "lag",
    "ScheduleLagError": "lag",
    "ScheduleCountWarning": "timing",
    "ScheduleOverrideWarning": "overrides",
    "TorchScheduler": "torch_adapter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(f".{module}", __name__), name)
        globals()[name] = value  # found directly from now on
        return value
    if name.endswith("LRScheduler") or name in ("create_scheduler", "create_scheduler_v2"):
        dropin = importlib.import_module(".dropin", __name__)
        if name in dropin.SCHEDULER_CLASSES or name in dropin.FACTORIES:
            return getattr(dropin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["FixedScheduler", "Options", "TorchScheduler", "is_patched", "patch", "patched", "unpatch", "unwrap", "wrap"]

"""Deprecated: 0.1.0 documented the drop-in classes and factories as ``timm_sched_fix.dropin.<name>``; import them
from ``timm_sched_fix`` itself (``timm_sched_fix.CosineLRScheduler``, ``timm_sched_fix.create_scheduler_v2``).
Removed in 0.3."""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    from timm_sched_fix import _dropin

    if name == "DropInScheduler" or name in _dropin.SCHEDULER_CLASSES or name in _dropin.FACTORIES:
        instead = (f"use timm_sched_fix.{name}" if name != "DropInScheduler" else
                   "it stays the drop-in classes' private base")
        warnings.warn(f"timm_sched_fix.dropin.{name} is deprecated and goes in 0.3; {instead}", DeprecationWarning,
                      stacklevel=2)
        return getattr(_dropin, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Deprecated: 0.1.0 documented ``timm_sched_fix.compat.active_quirks()``; it is
:func:`timm_sched_fix.check.active_quirks` now (the release quirks themselves are private, ``timm_sched_fix._compat``).
Removed in 0.3."""

from __future__ import annotations

import warnings
from typing import Any


def active_quirks() -> list[Any]:
    """Deprecated alias of :func:`timm_sched_fix.check.active_quirks`."""
    warnings.warn("timm_sched_fix.compat.active_quirks() is deprecated and goes in 0.3: use "
                  "timm_sched_fix.check.active_quirks()", DeprecationWarning, stacklevel=2)
    from timm_sched_fix.check import active_quirks as current

    return current()

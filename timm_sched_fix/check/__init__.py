"""``timm-sched-fix check``: which first optimizer steps stock timm gets wrong on the installed timm, and which
release quirks apply. ``cli`` is the command; ``first_step`` builds every scheduler class and reads its step-0 LR.

:func:`active_quirks` is the same list for code (a CI job that records which quirks its timm and torch need).
Importing this package imports neither timm nor torch: the command line builds its parser from it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["active_quirks"]


def active_quirks() -> list[Any]:
    """The release quirks of timm, torch and the engines that apply to the installed releases, as
    ``timm-sched-fix check`` lists them: named tuples ``(name, versions, description, applies)``. Imports timm
    and torch."""
    from timm_sched_fix import _compat

    return _compat.active_quirks()

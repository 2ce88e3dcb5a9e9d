"""Every warning and error the fix raises for users to filter or catch.

The warnings are ``UserWarning`` subclasses, so ``-W error::UserWarning`` style filters see them; a filter naming
one of these categories raises it after the call that warned was applied (``_notices.py``).
"""

from __future__ import annotations

__all__ = ["GoldenTraceMismatch", "ScheduleCallWarning", "ScheduleCountWarning", "ScheduleLagError", "ScheduleLagWarning", "ScheduleOverrideWarning"]


class ScheduleLagWarning(UserWarning):
    """An index that trails the optimizer steps by one whole period (one epoch or update late), or a call pattern
    whose indices run some optimizer steps late."""


class ScheduleCallWarning(UserWarning):
    """A call that stock timm ignores silently, or one whose index will make some optimizer steps run late."""


class ScheduleLagError(RuntimeError):
    """Raised for a lag when ``on_lag="raise"``; nothing was changed by the call that raised it."""


class ScheduleCountWarning(UserWarning):
    """The optimizer's parameter updates cannot be counted: lag detection is off for this scheduler."""


class ScheduleOverrideWarning(UserWarning):
    """A scheduler's own method is one the fix cannot call for the user: that scheduler runs as stock timm runs it."""


class GoldenTraceMismatch(AssertionError):
    """The recorded LR trace differs from the golden file (the message names the first differing step)."""

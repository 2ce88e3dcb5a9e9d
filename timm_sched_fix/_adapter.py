"""Which of the package's entry points fixed a scheduler (``ScheduleTiming.owner``): behaviour that differs by
entry point asks the properties here instead of comparing names. Kept free of torch and timm imports."""

from __future__ import annotations

import enum


class Adapter(enum.Enum):
    """The entry point that fixed a scheduler."""

    PATCH = "patch"  # patch(): timm's own classes route, in a script that did not ask for anything else
    WRAP = "wrap"  # wrap(): an existing scheduler, used through the FixedScheduler proxy
    DROPIN = "dropin"  # a drop-in class (timm_sched_fix.CosineLRScheduler, ...): its class routes
    FACTORY = "factory"  # a drop-in factory (timm_sched_fix.create_scheduler_v2, ...): timm's scheduler, wrapped

    @property
    def must_not_raise(self) -> bool:
        """Whether a setting that cannot work is dropped (and said so once) instead of raising: ``patch()`` fixes
        schedulers of scripts that run with stock timm, which must not break."""
        return self is Adapter.PATCH

    @property
    def routed_by_patch(self) -> bool:
        """Whether timm's classes route the scheduler while patched (so a copy of it routes as it does)."""
        return self is Adapter.PATCH

    @property
    def undone_by_unwrap(self) -> bool:
        """Whether ``unwrap()`` makes the scheduler stock again (its step hook removed): the proxy is the only fixed
        way to it, unlike a drop-in instance or a patched timm class, which stay fixed by themselves."""
        return self in (Adapter.WRAP, Adapter.FACTORY)

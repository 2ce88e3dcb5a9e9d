"""What a release quirk is, as the registry (:mod:`timm_sched_fix._compat`) lists it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple


class Quirk(NamedTuple):
    """One difference the fix works around: its name, the releases it concerns (those it was read off), what the fix
    does, and whether it applies to the installed versions.

    A NamedTuple, not a dataclass: this module is imported when timm is, and a dataclass costs ~0.6 ms to create.
    """

    name: str
    versions: str
    description: str
    applies: Callable[[], bool]


def always() -> bool:
    """``applies`` of a quirk the fix handles on every installed release (it reads state dicts or objects of
    every release)."""
    return True

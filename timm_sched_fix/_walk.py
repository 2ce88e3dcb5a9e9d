"""Walking the call stack and the class tree: the one frame walker (the user's frame for a warning, where a script
built a scheduler, whether DeepSpeed is setting up) and the one subclass walker (patch() and the audit instrument
every timm scheduler class). Kept free of torch and timm imports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType

#: The module-name prefixes of each ``packages`` tuple :func:`find_frame` was asked with.
_PREFIXES: dict[tuple[str, ...], tuple[str, ...]] = {}


def find_frame(packages: tuple[str, ...] = (), *, inside: bool = True, test: Callable[[FrameType], bool] | None = None,
               depth: int = 1) -> tuple[int, FrameType] | None:
    """The innermost frame outward from ``depth`` frames above the caller (1: the caller's caller) that runs code of
    one of ``packages`` (a package or any module in it; ``inside=False``: of none of them) and passes ``test``, with
    its depth (``warnings.warn``'s ``stacklevel`` from the caller); None if no frame does. The module test is inline:
    the user's frame for a warning is looked for on calls the fix handles."""
    prefixes = _PREFIXES.get(packages)
    if prefixes is None:
        prefixes = _PREFIXES[packages] = tuple(f"{package}." for package in packages)
    try:
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:  # the stack is not that deep
        return None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if (module in packages or module.startswith(prefixes)) is inside and (test is None or test(frame)):
            return depth, frame
        frame, depth = frame.f_back, depth + 1
    return None


def with_subclasses(cls: type) -> list[type]:
    """``cls`` and every subclass, each once (a class with two bases among them included), parents first."""
    found: dict[type, None] = {cls: None}
    for subclass in cls.__subclasses__():
        found.update(dict.fromkeys(with_subclasses(subclass)))
    return list(found)

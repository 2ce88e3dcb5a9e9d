"""Walking the call stack and the class tree: the one frame walker (the user's frame for a warning, where a script
built a scheduler, whether DeepSpeed is setting up) and the one subclass walker (patch() and the audit instrument
every timm scheduler class). Kept free of torch and timm imports."""

from __future__ import annotations

import sys
from collections.abc import Callable
from types import FrameType


def frame_finder(packages: tuple[str, ...] = (), *, inside: bool = True,
                 test: Callable[[FrameType], bool] | None = None) -> Callable[[int], tuple[int, FrameType] | None]:
    """The stack walker: a function ``find(depth)`` giving the innermost frame outward from ``depth`` frames above
    its caller (1: the caller's caller) that runs code of one of ``packages`` (a package or any module in it;
    ``inside=False``: of none of them) and passes ``test``, with its depth (``warnings.warn``'s ``stacklevel`` from
    the caller); None if no frame does. Made once per use: the user's frame for a warning is looked for on calls
    the fix handles, so the module test is inline and its names are prepared here."""
    names, prefixes = frozenset(packages), tuple(f"{package}." for package in packages)

    def find(depth: int = 1) -> tuple[int, FrameType] | None:
        try:
            frame: FrameType | None = sys._getframe(depth + 1)
        except ValueError:  # the stack is not that deep
            return None
        while frame is not None:
            module = frame.f_globals.get("__name__", "")
            if (module in names or module.startswith(prefixes)) is inside and (test is None or test(frame)):
                return depth, frame
            frame, depth = frame.f_back, depth + 1
        return None

    return find


def with_subclasses(cls: type) -> list[type]:
    """``cls`` and every subclass, each once (a class with two bases among them included), parents first."""
    found: dict[type, None] = {cls: None}
    for subclass in cls.__subclasses__():
        found.update(dict.fromkeys(with_subclasses(subclass)))
    return list(found)

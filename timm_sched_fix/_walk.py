"""Walking the call stack and the class tree: the one frame walker (the user's frame for a warning, where a script
built a scheduler, whether DeepSpeed is setting up) and the one subclass walker (patch() and the audit instrument
every timm scheduler class). Kept free of torch and timm imports."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import FrameType


def find_frame(test: Callable[[FrameType], bool], depth: int = 1) -> tuple[int, FrameType] | None:
    """The innermost frame outward from ``depth`` frames above the caller (1: the caller's caller) that passes
    ``test``, with its depth (``warnings.warn``'s ``stacklevel`` from the caller); None if no frame does."""
    try:
        frame: FrameType | None = sys._getframe(depth + 1)
    except ValueError:  # the stack is not that deep
        return None
    while frame is not None:
        if test(frame):
            return depth, frame
        frame, depth = frame.f_back, depth + 1
    return None


def in_packages(frame: FrameType, packages: Sequence[str]) -> bool:
    """Whether the frame runs code of one of ``packages`` (a package or any module in it)."""
    module = frame.f_globals.get("__name__", "")
    return module in packages or module.startswith(tuple(f"{package}." for package in packages))


def with_subclasses(cls: type) -> list[type]:
    """``cls`` and every subclass, each once (a class with two bases among them included), parents first."""
    found: dict[type, None] = {cls: None}
    for subclass in cls.__subclasses__():
        found.update(dict.fromkeys(with_subclasses(subclass)))
    return list(found)

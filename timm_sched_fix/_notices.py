"""How the fix's warnings reach the user: after the call that causes them is applied, and as warnings, never as
exceptions, unless the user's warning filters name one of the fix's own categories.

Stock timm raises nothing under ``python -W error`` or pytest's ``filterwarnings = error``; a fixed scheduler under
such a blanket filter shows its advice as a warning (``warnings.showwarning``, which pytest records) instead of
raising it, so a script that runs with stock timm keeps running. A filter for a fix category
(``warnings.filterwarnings("error", category=ScheduleLagWarning)``, pytest's
``filterwarnings = error::timm_sched_fix.ScheduleLagWarning``)
raises it as asked. A call whose handling warns is applied first, then warned: a caught warning never leaves a call
half done. Kept free of torch and timm imports.
"""

from __future__ import annotations

import sys
import threading
import warnings

from timm_sched_fix.exceptions import (
    ScheduleCallWarning,
    ScheduleCountWarning,
    ScheduleLagWarning,
    ScheduleOverrideWarning,
)

_FIX_CATEGORIES = (ScheduleLagWarning, ScheduleCallWarning, ScheduleOverrideWarning, ScheduleCountWarning)
_local = threading.local()  # .queue: the warnings of the call being applied (None outside one)


def _action(message: str, category: type[Warning], module: str, lineno: int) -> tuple[str, type[Warning]]:
    """The action of the first of ``warnings.filters`` that matches, as ``warnings.warn_explicit`` decides it."""
    for action, text, filter_category, filter_module, filter_lineno in warnings.filters:
        if ((text is None or text.match(message)) and issubclass(category, filter_category)
                and (filter_module is None or filter_module.match(module)) and filter_lineno in (0, lineno)):
            return action, filter_category
    return warnings.defaultaction, Warning


def emit(message: str, category: type[Warning], stacklevel: int) -> None:
    """Warn ``message`` at ``stacklevel`` (as ``warnings.warn`` counts it, from the caller), or queue it while a call
    is being applied (:func:`start`). Under a filter that turns every warning into an error it is shown instead."""
    queue = getattr(_local, "queue", None)
    if queue is not None:
        queue.append((message, category))
        return
    try:
        frame = sys._getframe(stacklevel)  # the frame warnings.warn(..., stacklevel) would name, from our caller
    except ValueError:
        frame, stacklevel = sys._getframe(1), 1
    module, lineno = frame.f_globals.get("__name__", "<string>"), frame.f_lineno
    action, matched = _action(message, category, module, lineno)
    if action == "error" and not issubclass(matched, _FIX_CATEGORIES):
        warnings.showwarning(category(message), category, frame.f_code.co_filename, lineno)
        return
    warnings.warn(message, category, stacklevel=stacklevel + 1)


def start() -> list | None:
    """Queue the warnings from now on; returns what :func:`finish` needs."""
    previous = getattr(_local, "queue", None)
    _local.queue = []
    return previous


def finish(previous: list | None, stacklevel: int, applied: bool = True) -> None:
    """Stop queueing and, when the call was applied, warn what was queued (at ``stacklevel`` from the caller)."""
    queue, _local.queue = _local.queue, previous
    if applied:
        for message, category in queue:
            emit(message, category, stacklevel + 1)

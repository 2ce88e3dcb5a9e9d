"""What ``timm-sched-fix audit`` keeps about each scheduler a script builds (:class:`SchedulerRecord`, its calls as
:class:`Call`), and the copy of a scheduler on which v(t) is computed (:func:`shadow_of`)."""

from __future__ import annotations

import copy
import functools
import math
import operator
import os
import types
from array import array
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import wrapt

from timm_sched_fix import _compat as compat
from timm_sched_fix._timing import TIMING_KEY
from timm_sched_fix._walk import frame_finder

#: Frames from these packages are skipped when naming where a scheduler was built.
_LIBRARY_DIRS = tuple(os.path.dirname(module.__file__) + os.sep for module in (compat.timm, torch, wrapt)
                      if getattr(module, "__file__", None)) + (os.path.dirname(os.path.dirname(__file__)) + os.sep,)


class Call(NamedTuple):
    """One call of a scheduler: ``update`` is the number of its optimizer's updates before it."""

    update: int
    method: str  # step, step_update or load_state_dict
    index: float | None  # the index passed (step/step_update), or the position a load restored (None: unknown)
    metric: float | None


@dataclass(eq=False)
class SchedulerRecord:
    """Everything recorded about one scheduler the script constructed."""

    number: int  # 1-based, in the order of construction
    class_name: str
    timm_class: str
    on_epochs: bool
    field: str
    where: str
    optimizer: Any
    initialize: bool
    shadow: Any  # a copy on a throwaway optimizer, for v(t); None when it could not be made
    shadow_error: str | None
    init_lrs: list[float]
    tolerance: float  # relative; float32 tensor LRs cannot hold v(t) exactly
    steps: int = 0  # optimizer steps recorded
    values: array = field(default_factory=lambda: array("d"))  # the LR of every group at every step, flat (no GC load)
    stopped: str | None = None  # why recording stopped early (the optimizer's param groups changed)
    calls: list[Call] = field(default_factory=list)
    loader_events: list[tuple[str, int, int]] = field(default_factory=list)  # (start|end, pass, updates)
    released_at: int | None = None
    steps_after_release: int = 0
    settled: bool = False  # init_lrs final: read again at the first call or update, after every constructor wrapper
    depth: int = 0  # calls of this scheduler in progress (a nested one is not recorded again)

    @property
    def unit(self) -> str:
        return "epoch" if self.on_epochs else "update"

    @functools.cached_property
    def lrs(self) -> list[list[float]]:
        """The LRs every optimizer step ran with, one list per step (read once recording is over)."""
        groups = len(self.init_lrs)
        return [self.values[k * groups:(k + 1) * groups].tolist() for k in range(self.steps)]

    def group_lrs(self) -> list[float]:
        return [float(group[self.field]) for group in self.optimizer.param_groups]


def settle(record: SchedulerRecord) -> None:
    """The LRs the construction left, read at the first call or update: every constructor wrapper has run by then
    (a ``patch()`` installed by the script itself wraps the constructor around the recorder's)."""
    if not record.settled and not record.steps and not record.calls:
        record.init_lrs = record.group_lrs()
    record.settled = True


def number(value: Any) -> float | None:
    """An index or metric as a plain number (an int where it is one, as timm's noise seeding needs), or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        pass
    try:
        number = float(value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number if math.isfinite(number) else None


def shadow_of(scheduler: Any) -> tuple[Any, str | None]:
    """A copy of the scheduler on a throwaway optimizer holding copies of its param groups' values, so that v(t) can
    be written there by the schedule's own code without touching the script's optimizer; the fix's timing is left
    out (the copy is stock). ``(None, reason)`` when it cannot be copied."""
    optimizer = scheduler.optimizer
    field = scheduler.param_group_field
    keep = {"lr", field, f"initial_{field}", "lr_scale"}
    groups = [{key: copy.deepcopy(value) for key, value in group.items() if key in keep}
              for group in optimizer.param_groups]
    memo: dict[int, Any] = {id(optimizer): types.SimpleNamespace(param_groups=groups)}
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is not None:
        memo[id(timing)] = None
    try:
        return copy.deepcopy(scheduler, memo), None
    except Exception as error:  # noqa: BLE001 (reported as undecided, never a crash of the script)
        return None, f"the scheduler could not be copied to compute its schedule ({type(error).__name__}: {error})"


_NOT_THE_SCRIPTS = (*_LIBRARY_DIRS, "<frozen")
_scripts_frame = frame_finder(inside=False, test=lambda frame: not frame.f_code.co_filename.startswith(_NOT_THE_SCRIPTS))


def where() -> str:
    """``file:line`` of the innermost frame outside timm, torch, wrapt and this package: where the script built it."""
    found = _scripts_frame(1)
    if found is None:
        return "?"
    filename = found[1].f_code.co_filename
    relative = os.path.relpath(filename) if os.path.isabs(filename) else filename
    return f"{filename if relative.startswith('..') else relative}:{found[1].f_lineno}"

"""How v(t) lands in the param groups: the LR-writing part of a fixed scheduler's timing.

The schedule math is never touched: v(t) is written by the scheduler's own ``step(t)``/``step_update(t)``
(:func:`timm_sched_fix._compat.stock_writer`) or, for a class that keeps timm's base ``step_update``, by its
bit-identical inlined equivalent (:func:`timm_sched_fix._compat.inlined_step_update`), chosen by
:func:`make_writer`. :class:`LRWriter` owns what the writes need besides: tensor LRs kept as the same objects and
filled in place, param groups added since the last write joining the schedule, and (with
:mod:`timm_sched_fix._ownership`) the record of what the scheduler itself last left in the param groups, so that the
fix only writes over LRs it wrote. The module functions are the construction-time side: the param groups as they
were before a constructor ran, and whether the constructor's LRs may be written over.

:class:`LRWriter` is a base class of :class:`timm_sched_fix._timing.ScheduleTiming`, not an object the timing
holds: the per-update hot path (``routed_step_update``) reads ``_write``, ``_groups_seen`` and ``_group_count`` as
attributes of the timing, with no lookup of a further object per update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _overrides as overrides
from timm_sched_fix import _ownership as ownership
from timm_sched_fix import _routing as routing
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._routing import TIMING_KEY

#: What writes v(t): ``write(scheduler, t, metric)``.
Write = Callable[[Any, float, Any], None]


def group_values(optimizer: Any) -> list[dict] | None:
    """Each param group's values but its params (copies of the dicts, the same values): what a constructor found."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return None
    return [{key: value for key, value in group.items() if key != "params"} for group in groups]


def restore_groups(optimizer: Any, groups_before: list[dict] | None) -> None:
    """Put the param groups' values back to ``groups_before`` (:func:`group_values`), keeping their params."""
    if groups_before is not None:
        for group, before in zip(optimizer.param_groups, groups_before):
            params = group["params"]
            group.clear()
            group.update(before, params=params)


def left_by_scheduler(scheduler: Any, groups: list[dict], groups_before: list[dict] | None, field: str) -> bool:
    """Whether the param groups hold what the scheduler's constructor left there, so that the pre-advance may write
    over them: with ``groups_before`` (the constructor ran under the fix), when the constructor wrote an LR or the
    LRs are the optimizer's own (each the group's base value); else (``wrap()``) when they are what timm's
    constructor leaves (:func:`timm_sched_fix._ownership.left_by_constructor`). Not so for LRs an optimizer load
    restored, or that the user's code set, before."""
    lrs = ownership.group_lrs(groups, field)
    if groups_before is None:
        return ownership.left_by_constructor(scheduler, lrs)
    before = [float(group[field]) for group in groups_before]
    return lrs != before or before == [float(value) for value in scheduler.base_values[:len(before)]]



def separate_tensor_lrs(scheduler: Any, field: str) -> None:
    """Give each param group an LR tensor of its own, distinct from ``initial_lr`` and the base values,
    so that writing one group's LR in place cannot change another group's LR or the schedule itself
    (torch optimizers share one ``lr`` tensor between groups by default; timm keeps it as ``initial_lr``)."""
    groups = scheduler.optimizer.param_groups
    live: set[int] = set()
    for group in groups:
        value = group.get(field)
        if isinstance(value, torch.Tensor):
            if id(value) in live:
                group[field] = value = value.clone()
            live.add(id(value))
    initial_field = f"initial_{field}"
    for i, group in enumerate(groups):
        initial = group.get(initial_field)
        if isinstance(initial, torch.Tensor) and id(initial) in live:
            group[initial_field] = initial.clone()
            if i < len(scheduler.base_values) and scheduler.base_values[i] is initial:
                scheduler.base_values[i] = group[initial_field]



def _write_into_tensor(group: dict, field: str, tensor: torch.Tensor) -> None:
    """Keep a tensor LR the same object: copy the value stock timm wrote into it."""
    value = group[field]
    if value is not tensor:
        with torch.no_grad():
            tensor.fill_(value)
        group[field] = tensor



def make_writer(scheduler: Any, on_epochs: bool) -> Write:
    """What writes v(t), called as ``write(scheduler, t, metric)``: timm's own method, or for an unmodified
    ``step_update`` its inlined equivalent. Neither holds the scheduler or the timing."""
    stock = stock_method(type(scheduler), "step" if on_epochs else "step_update")
    if not on_epochs and not any(overrides.instance_override(scheduler, name) is not None
                                 for name in routing.OVERRIDABLE):
        # the inlined step_update checks for an instance's own methods per call, unless the class tells the
        # timing when one is set (ScheduleTiming.rewrite())
        inlined = compat.inlined_step_update(scheduler, stock,
                                             check_instance=not routing.watches_attributes(type(scheduler)))
        if inlined is not None:
            return inlined
    write = compat.stock_writer(scheduler, overrides.writer_for(stock))

    def write_through_stock(scheduler: Any, t: float, metric: Any) -> None:
        timing = getattr(scheduler, TIMING_KEY)
        timing.in_stock_call = True  # the stock method may call routed methods (super().step_update(...))
        try:
            write(scheduler, t, metric)
        finally:
            timing.in_stock_call = False

    return write_through_stock


class LRWriter:
    """The LR writing of one fixed scheduler (a base class of ``ScheduleTiming``).

    Owns ``field`` (the param-group key written), ``_write_values`` (:func:`make_writer`), ``_write`` (that plus the
    refill of tensor LRs once some are found), ``_tensor_lrs``, ``_groups_seen``/``_group_count`` (the param_groups
    list last checked, and its length: the hot path writes through ``_write`` while they still match) and ``_left``
    (what the scheduler itself last left in the param groups). Reads from the timing: ``scheduler``, ``optimizer``,
    ``on_epochs``, ``last_t`` and ``_applied_at``.
    """

    scheduler: Any
    optimizer: Any
    on_epochs: bool
    last_t: float | None
    _applied_at: int

    def _init_writer(self, scheduler: Any) -> None:
        self.field: str = scheduler.param_group_field
        self._write_values = make_writer(scheduler, self.on_epochs)
        self._tensor_lrs: list[tuple[dict, torch.Tensor]] = []
        self._write = self._write_values  # plus tensor refills once tensor LRs are found (_find_tensor_lrs)
        self._groups_seen: list[dict] | None = None  # the param_groups list last checked, and its length
        self._group_count = -1
        # what the scheduler itself last left in the param groups: (last_t, _applied_at, LRs), recorded where the fix
        # writes at a moment stock timm does not (pre-advance, load), so that a later such write can see whether the
        # LRs are still its own (_ownership.py); the per-call paths do not record
        self._left: tuple[float | None, int, list[float]] | None = None

    def _choose_writer(self, scheduler: Any) -> None:
        """Decide the writer (again: an instance's own method was set or deleted, or a copy was made); the groups
        are looked at anew at the next write."""
        self._write = self._write_values = make_writer(scheduler, self.on_epochs)
        self._groups_seen = None

    def _writer_state(self, state: dict[str, Any]) -> None:
        """A copy's state (``__getstate__``): without the functions bound to this scheduler; the copy's groups are
        other objects, so it looks at them again."""
        del state["_write"], state["_write_values"]
        state["_groups_seen"] = None
        state["_tensor_lrs"] = []

    def lr_tensors(self) -> list[torch.Tensor]:
        """The LR tensors this scheduler fills in place, one per param group whose LR is a tensor."""
        return [tensor for _, tensor in self._tensor_lrs]

    def get_last_lr(self) -> list[float]:
        """The value each param group's LR field holds now, one per group."""
        return [float(group[self.field]) for group in self.optimizer.param_groups]

    def _apply_to_new_groups(self, groups: list[dict], t: float, metric: Any) -> None:
        """The first write, or one after the optimizer's groups changed (``load_state_dict``, ``add_param_group``):
        groups added since join the schedule (:func:`timm_sched_fix._compat.add_param_groups`)."""
        scheduler = self.scheduler
        known = len(scheduler.base_values)
        if len(groups) < known:
            raise ValueError(
                f"the optimizer has {len(groups)} param groups but the scheduler was built for {known}: param groups "
                "cannot be removed from a schedule; no LR was changed"
            )
        if len(groups) > known:
            for i, group in enumerate(groups[known:], start=known):
                if self.field not in group:
                    raise ValueError(f"optimizer.param_groups[{i}] (added after the scheduler was built) has no "
                                     f"{self.field!r}; no LR was changed")
            compat.add_param_groups(scheduler, groups[known:])
        self._find_tensor_lrs(groups)
        self._write(scheduler, t, metric)
        self._find_tensor_lrs(groups)  # adopt tensors the stock write itself produced (tensor base values)

    def _find_tensor_lrs(self, groups: list[dict]) -> None:
        """Remember the groups whose LR is a tensor (checked again only when the groups change)."""
        separate_tensor_lrs(self.scheduler, self.field)
        field = self.field
        tensor_lrs = [(group, group[field]) for group in groups if isinstance(group[field], torch.Tensor)]
        self._tensor_lrs = tensor_lrs
        self._groups_seen, self._group_count = groups, len(groups)
        write_values = self._write_values
        if not tensor_lrs:
            self._write = write_values
            return

        def write_keeping_tensors(scheduler: Any, t: float, metric: Any) -> None:
            """Write v(t), then put each tensor LR back as the same object holding the new value."""
            write_values(scheduler, t, metric)
            for group, tensor in tensor_lrs:
                _write_into_tensor(group, field, tensor)

        self._write = write_keeping_tensors

    # -- LRs the scheduler did not write (_ownership.py) ----------------------------------------

    def _remember_left(self) -> None:
        """Record what this scheduler just left in the param groups (after a write stock timm does not make)."""
        self._left = (self.last_t, self._applied_at, ownership.group_lrs(self.optimizer.param_groups, self.field))

    def _holds_own(self) -> bool:
        """Whether the param groups hold exactly what this scheduler itself last left there: what
        :meth:`_remember_left` recorded, if nothing was written since (a pre-advance, or a load's write), else what
        its own write of ``last_t`` leaves."""
        left, lrs = self._left, ownership.group_lrs(self.optimizer.param_groups, self.field)
        if left is not None and left[0] == self.last_t and left[1] == self._applied_at:
            return lrs == left[2]
        if self.last_t is None:
            return False
        # written by a call since (the per-call paths do not record): what the scheduler's own write of last_t leaves
        stock = stock_method(type(self.scheduler), "step" if self.on_epochs else "step_update")
        return lrs == ownership.written_at(self.scheduler, self, compat.stock_writer(self.scheduler, stock), self.last_t)

    def _put_back(self, lrs: list[float]) -> None:
        """Put the param groups' LRs back to ``lrs`` after a write (tensor LRs filled in place)."""
        field = self.field
        for group, value in zip(self.optimizer.param_groups, lrs):
            current = group[field]
            if isinstance(current, torch.Tensor):
                with torch.no_grad():
                    current.fill_(value)
            else:
                group[field] = value

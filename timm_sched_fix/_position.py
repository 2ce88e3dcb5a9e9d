"""The position record of a fixed scheduler's state dict: build it, validate it, restore from it.

A fixed scheduler's ``state_dict()`` is timm's plus one entry, :data:`STATE_KEY`: the position (the index last
applied, the next count, the optimizer steps run with it), the lag rule's evidence
(:meth:`timm_sched_fix._lag.LagRule.record`), PlateauLRScheduler's state and a stamp of the moment it was saved
(:func:`timm_sched_fix._ownership.stamp`). ``load_state_dict`` checks everything before anything changes, loads a
stock state dict (no position) or a stale record (:func:`timm_sched_fix._ownership.stale_reason`) as stock timm's,
and otherwise writes the restored position, only over LRs the scheduler itself left; a load that fails leaves the
scheduler, its timing and the optimizer's param groups as they were.

:class:`PositionRecord` is a base class of :class:`timm_sched_fix._timing.ScheduleTiming` (which routes a fixed
scheduler's ``state_dict``/``load_state_dict`` here); it owns ``_own_state_methods`` and ``_loaded_stamp`` and
writes the decision's position fields (``last_t``, ``next_count``, ``steps_since_apply``, ``lag``) on a load.
"""

from __future__ import annotations

import functools
import numbers
from collections.abc import Mapping
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _overrides as overrides
from timm_sched_fix import _ownership as ownership
from timm_sched_fix._index import read_index, shown
from timm_sched_fix._lag import LagRule, check_record
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._routing import TIMING_KEY
from timm_sched_fix.exceptions import ScheduleCallWarning
from timm_sched_fix.options import Options

#: The entry a fixed scheduler adds to its ``state_dict()``.
STATE_KEY = "timm_sched_fix"


def _state_or_attribute(state: Mapping[str, Any], scheduler: Any, name: str, default: Any = None) -> Any:
    """A state dict's value, else the scheduler's attribute: what the scheduler holds once the state dict is loaded."""
    return state[name] if name in state else getattr(scheduler, name, default)



class PositionRecord:
    """The state-dict round trip of one fixed scheduler (a base class of ``ScheduleTiming``).

    Owns ``_own_state_methods`` (whether the scheduler's class has its own state-dict methods, which then decide
    what they take) and ``_loaded_stamp`` (a load's stamp of the optimizer's LRs, when the load wrote the position:
    the optimizer's state may come next; ``(last_t, _applied_at, LRs)``, good while nothing was written since).
    Reads and, on a load, writes the decision's fields; writes LRs through the timing's ``_apply`` and the
    :class:`~timm_sched_fix._writer.LRWriter` methods.
    """

    scheduler: Any
    optimizer: Any
    options: Options
    field: str
    lag: LagRule
    in_stock_call: bool
    last_t: float | None
    next_count: float | None
    steps_since_apply: int
    _applied_at: int

    def _init_position(self, scheduler: Any) -> None:
        self._own_state_methods = overrides.defines_own(type(scheduler), ("state_dict", "load_state_dict"))
        self._loaded_stamp: tuple[float | None, int, list[float]] | None = None

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The stock state dict plus the position, so a resume pre-advances to the right index."""
        state = dict(self._stock_call("state_dict", *args, **kwargs))
        state.pop(TIMING_KEY, None)
        state[STATE_KEY] = {
            "scheduler": type(self.scheduler).__name__,
            "last_t": self.last_t,
            "next_count": self.next_count,
            "lag_shift": self.lag.shift,
            "lag": self.lag.record(),
            "convention": self.options.convention,
            "steps_since_apply": self.steps_since_apply,
            "plateau": compat.plateau_state(self.scheduler),
            **ownership.stamp(self.optimizer.param_groups, self.field, getattr(self.scheduler, "metric", None)),
        }
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any], *args: Any, **kwargs: Any) -> None:
        """Load a fixed or a stock state dict, then pre-advance to the restored position.

        A stock state dict carries no position: the LRs are left as they are until a call gives one. So is a stale
        record (:func:`timm_sched_fix._ownership.stale_reason`), with a warning. The position is written only while the
        param groups hold what this scheduler itself last left there; LRs restored by ``optimizer.load_state_dict``
        or set by the user's code are kept. Everything is checked before anything changes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        ours = state_dict.get(STATE_KEY)
        stock_state = {key: value for key, value in state_dict.items() if key != STATE_KEY}
        position = self._check_own_state(ours) if ours is not None else None
        if ours is not None:
            ownership.check_stamp(ours, len(self.optimizer.param_groups), f"state_dict[{STATE_KEY!r}]")
        if not self._own_state_methods:  # a subclass's own state dict methods decide what they take
            own = {key: value for key, value in self._stock_call("state_dict").items() if key != TIMING_KEY}
            compat.check_state_dict(self.scheduler, stock_state, own)
        if not overrides.owns_noise(self.scheduler):
            compat.check_noise(functools.partial(_state_or_attribute, stock_state, self.scheduler),
                               type(self.scheduler).__name__)
        held_own = self._holds_own()
        stale = None if ours is None else ownership.stale_reason(
            ours, stock_state, None if held_own else ownership.group_lrs(self.optimizer.param_groups, self.field))
        snapshot = self._snapshot()
        try:
            self._load_checked(stock_state, None if stale else ours, position, held_own, args, kwargs)
        except Exception as error:
            self._restore(snapshot)
            raise ValueError(
                f"state dict could not be loaded into a {type(self.scheduler).__name__} ({error!r}); the scheduler "
                "and the optimizer's param groups are unchanged"
            ) from error
        if stale:
            self._warn_stale(stale)

    def _load_checked(self, stock_state: dict, ours: Mapping[str, Any] | None, position: float | None,
                      write: bool, args: tuple = (), kwargs: Mapping[str, Any] | None = None) -> None:
        self._stock_call("load_state_dict", stock_state, *args, **(kwargs or {}))
        self._loaded_stamp = None
        if ours is None:
            self.last_t = self.next_count = None
            self.lag.lost_position()
            return
        compat.restore_plateau_state(self.scheduler, ours.get("plateau"), position)
        steps = ours.get("steps_since_apply", 0)
        if position is None:
            self.last_t = self.next_count = None
        else:
            kept = None if write else ownership.group_lrs(self.optimizer.param_groups, self.field)
            self._apply(position, None)  # also where a corrupted value shows (the caller restores everything)
            if kept is not None:  # the LRs the optimizer's state (or the user's code) put there stay, as in stock timm
                self._put_back(kept)
            self.next_count = None if ours["next_count"] is None else read_index(ours["next_count"], "load_state_dict")
            # optimizer steps that already ran with last_t: auto mode advances before the next one
            self.steps_since_apply = steps
            if write:
                self._remember_left()
                stamped = ours.get(ownership.STAMP_LRS)
                self._loaded_stamp = None if stamped is None else (self.last_t, self._applied_at, stamped)
        self.lag.load(ours["lag_shift"], ours.get("lag"), steps)


    def _adopt_groups(self, groups: list[dict]) -> bool:
        """The optimizer's param groups were replaced (``optimizer.load_state_dict`` after the scheduler's): keep the
        LRs they hold. Their LRs tell whether the position a load wrote just before was current; if not, the state
        dict goes as stock timm's (the position is unknown until a call with an index) and this returns False."""
        loaded, self._loaded_stamp = self._loaded_stamp, None
        stamp = loaded[2] if loaded is not None and loaded[:2] == (self.last_t, self._applied_at) else None
        if len(groups) != len(self.scheduler.base_values):
            return True  # groups were added too: they join the schedule at the next write (_apply_to_new_groups)
        lrs = ownership.group_lrs(groups, self.field)
        if stamp is not None and lrs != stamp:
            self.last_t = self.next_count = None
            self.lag.lost_position()
            self._warn_stale(f"the optimizer state loaded after it holds other LRs ({lrs}) than the record's "
                             f"({stamp})")
            return False
        self._find_tensor_lrs(groups)
        return True

    def _warn_stale(self, why: str) -> None:
        self._warn_once("stale", (
            f"the position record of this {type(self.scheduler).__name__}'s state dict is not current: {why}. It was "
            "carried through a run without timm_sched_fix (which saves it again unchanged), or the optimizer's and the "
            "scheduler's state come from different moments. The state dict is loaded as stock timm's: the LRs stay as "
            "they are until the next call with an index (step(t) / step_update(t))"), ScheduleCallWarning)


    def _stock_call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """The scheduler's own method ``name`` (a subclass's override included, once: a drop-in subclass's override
        above the routing is the caller, not called again), called as stock with the caller's arguments."""
        scheduler = self.scheduler
        self.in_stock_call = True
        try:
            return stock_method(type(scheduler), name)(scheduler, *args, **kwargs)
        finally:
            self.in_stock_call = False

    def _check_own_state(self, ours: Any) -> float | None:
        if not isinstance(ours, Mapping) or not {"scheduler", "last_t", "next_count", "lag_shift"} <= set(ours):
            raise ValueError(f"state_dict[{STATE_KEY!r}] is not a timm_sched_fix position record: {ours!r}")
        expected = type(self.scheduler).__name__
        if not isinstance(ours["scheduler"], str) or ours["scheduler"] != expected:
            raise ValueError(f"state dict was saved by a {ours['scheduler']}, cannot load into a {expected}")
        for key in ("last_t", "next_count"):
            value = ours[key]
            if value is None:
                continue
            try:
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError
                read_index(value, f"load_state_dict: {key}")
            except (TypeError, ValueError):
                raise ValueError(f"state_dict[{STATE_KEY!r}][{key!r}] must be None or a finite, non-negative "
                                 f"number, got {shown(value)}") from None
        steps = ours.get("steps_since_apply", 0)
        if type(steps) is not int or steps < 0:
            raise ValueError(
                f"state_dict[{STATE_KEY!r}]['steps_since_apply'] must be a non-negative int, got {steps!r}"
            )
        compat.check_plateau_state(self.scheduler, ours.get("plateau"))
        if type(ours["lag_shift"]) is not int or ours["lag_shift"] not in (0, 1):
            raise ValueError(f"state_dict[{STATE_KEY!r}]['lag_shift'] must be 0 or 1, got {ours['lag_shift']!r}")
        if "lag" in ours:
            check_record(ours["lag"], ours["lag_shift"], f"state_dict[{STATE_KEY!r}]['lag']")
        return None if ours["last_t"] is None else read_index(ours["last_t"], "load_state_dict: last_t")

    def _snapshot(self) -> tuple:
        """Everything a load may change: scheduler, timing, param groups (tensor values too), Plateau's state."""
        groups = [(group, dict(group), {key: value.clone() for key, value in group.items()
                                        if key != "params" and isinstance(value, torch.Tensor)})
                  for group in self.optimizer.param_groups]
        plateau = getattr(self.scheduler, "lr_scheduler", None)
        timing_state = dict(vars(self), lag_state=self.lag.state())
        return dict(vars(self.scheduler)), timing_state, groups, plateau, dict(vars(plateau)) if plateau else None

    def _restore(self, snapshot: tuple) -> None:
        scheduler_state, timing_state, groups, plateau, plateau_state = snapshot
        vars(self.scheduler).clear()
        vars(self.scheduler).update(scheduler_state)
        timing_state = dict(timing_state)
        lag_state = timing_state.pop("lag_state")
        vars(self).update(timing_state)
        self.lag.restore(lag_state)
        for group, values, tensors in groups:
            group.clear()
            group.update(values)
            with torch.no_grad():
                for key, value in tensors.items():
                    group[key].copy_(value)
        if plateau is not None:
            vars(plateau).clear()
            vars(plateau).update(plateau_state)

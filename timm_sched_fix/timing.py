"""The timing core: which schedule index t is applied, when, and from which call.

Every adapter (``patch()``, ``wrap()``, the drop-in classes) routes a fixed scheduler's ``step``,
``step_update``, ``state_dict`` and ``load_state_dict`` to the :class:`ScheduleTiming` stored on the
scheduler. The schedule math is never touched: v(t) is written by the scheduler's own ``step(t)``/
``step_update(t)`` (:func:`timm_sched_fix.compat.stock_writer`) or, for a class that keeps timm's base
``step_update``, by its bit-identical inlined equivalent (:func:`timm_sched_fix.compat.inlined_step_update`).

This module runs on every optimizer step, so the per-call path avoids repeated lookups: what can be
resolved once per scheduler is resolved in ``ScheduleTiming.__init__``. Whether an index lags the optimizer
steps is decided by :class:`timm_sched_fix.lag.LagRule`, asked from one place (``_on_call``) for every call
with an index of the schedule's unit; the per-update hot path applies a new index without asking while the
rule says it needs to see no call.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from . import compat
from .lag import LagRule, ScheduleCallWarning, caller_stacklevel, check_record
from .options import Options

#: The scheduler attribute holding a fixed scheduler's timing, so copies keep it. Set and read as an attribute,
#: never through ``vars()``: on CPython 3.11 a materialized instance ``__dict__`` makes every attribute lookup of
#: timm's own step code slower (about 20% per call, measured in benchmarks/overhead.py).
TIMING_KEY = "_timm_sched_fix"
#: A scheduler attribute present while its outermost constructor runs.
CONSTRUCTING_KEY = "_timm_sched_fix_constructing"
#: The entry a fixed scheduler adds to its ``state_dict()``.
STATE_KEY = "timm_sched_fix"


class RoutedMethod:
    """A drop-in class's routed method (a descriptor): looked up on a fixed scheduler it is its timing's method of
    the same name, so the call has no frame of its own on the way to the timing; otherwise (during construction,
    and for the timing's own calls into the stock method) it is the method of the next class, timm's."""

    __timm_sched_fix_route__ = True  # stock_method looks past it

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner, self.name = owner, name

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return getattr(super(self.owner, owner), self.name)
        timing = getattr(instance, TIMING_KEY, None)
        if timing is not None and not timing.in_stock_call:
            return getattr(timing, self.name)
        return getattr(super(self.owner, instance), self.name)


def stock_method(cls: type, name: str) -> Callable[..., Any]:
    """The scheduler class's own ``name`` method, past the adapters' routing methods and wrappers."""
    for klass in cls.__mro__:
        function = vars(klass).get(name)
        if function is None or getattr(function, "__timm_sched_fix_route__", False):
            continue
        if getattr(type(function), "__timm_sched_fix_patched_method__", False):
            return function.__wrapped__  # a patch() descriptor
        return function
    raise AttributeError(f"{cls.__qualname__} has no {name}()")


def timing_of(scheduler: Any) -> ScheduleTiming | None:
    """The timing of a fixed scheduler, or None for a stock one."""
    timing = getattr(scheduler, TIMING_KEY, None)
    return None if timing is None or timing.orphaned else timing


def construct(scheduler: Any, init: Callable[..., Any], args: tuple, kwargs: dict, options: Options, owner: str) -> None:
    """Run a scheduler constructor, then fix the scheduler and pre-advance it.

    Nested constructors (``super().__init__``) run as they are; only the outermost one fixes.
    """
    if hasattr(scheduler, CONSTRUCTING_KEY):
        init(*args, **kwargs)
        return
    optimizer, initialize = compat.construction_args(init, args, kwargs)
    check_optimizer(optimizer)
    groups_before = group_values(optimizer)
    setattr(scheduler, CONSTRUCTING_KEY, True)
    try:
        compat.for_installed_torch(init)(*args, **kwargs)
    finally:
        delattr(scheduler, CONSTRUCTING_KEY)
    attach(scheduler, options, owner, groups_before=groups_before, initialize=initialize)


def attach(
    scheduler: Any,
    options: Options,
    owner: str,
    *,
    groups_before: list[dict] | None = None,
    initialize: bool = True,
) -> ScheduleTiming:
    """Fix a constructed scheduler (idempotent) and pre-advance it.

    ``groups_before`` are the param-group values from before construction: tensor LRs among them keep
    their identity, and with ``initialize=False`` (resume, position unknown) the LRs are put back as
    they were instead of pre-advancing.
    """
    timing = timing_of(scheduler)
    if timing is not None:
        return timing
    timing = ScheduleTiming(scheduler, options, owner)
    setattr(scheduler, TIMING_KEY, timing)
    field = timing.field
    groups = scheduler.optimizer.param_groups
    if groups_before is not None:
        for group, before in zip(groups, groups_before):
            if not initialize or isinstance(before.get(field), torch.Tensor):
                group[field] = before[field]  # resume: the LRs as they were; tensors: the same objects
    _separate_tensor_lrs(scheduler, field)
    if initialize:
        timing.move_to(0)
    return timing


def check_optimizer(optimizer: Any) -> None:
    """Refuse, before anything runs, an optimizer a fixed scheduler cannot work with: it counts optimizer steps
    with ``register_step_pre_hook`` and writes each param group's ``lr``."""
    if not hasattr(optimizer, "param_groups") or not callable(getattr(optimizer, "register_step_pre_hook", None)):
        raise TypeError(
            "a fixed timm scheduler needs a torch.optim.Optimizer (param_groups and register_step_pre_hook), got "
            f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
        )
    for i, group in enumerate(optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(f"optimizer.param_groups[{i}] has no 'lr': every param group needs one")


def _separate_tensor_lrs(scheduler: Any, field: str) -> None:
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


def group_values(optimizer: Any) -> list[dict] | None:
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        return None
    return [{key: value for key, value in group.items() if key != "params"} for group in groups]


def _write_into_tensor(group: dict, field: str, tensor: torch.Tensor) -> None:
    """Keep a tensor LR the same object: copy the value stock timm wrote into it."""
    value = group[field]
    if value is not tensor:
        with torch.no_grad():
            tensor.fill_(value)
        group[field] = tensor


def read_index(index: Any, name: str, on_bool: Callable[[], None] | None = None) -> int | float:
    """A schedule index as a plain Python number: every real number stock timm takes (Python and numpy integers and
    floats, 0-d numpy arrays, one-element tensors, ``Fraction``). Integers and integral floats become ``int`` (timm's
    noise cannot seed a float index), and a bool is 0 or 1 as in stock timm (``on_bool`` is called for one).
    ``TypeError`` for anything else, ``ValueError`` for a negative, NaN or infinite index (stock timm would compute a
    negative or NaN LR from it)."""
    if type(index) is int:
        value: int | float = index
    elif isinstance(index, bool):
        if on_bool is not None:
            on_bool()
        value = int(index)
    elif isinstance(index, numbers.Integral):
        value = int(index)
    elif isinstance(index, numbers.Real):
        value = float(index)
        if value.is_integer():  # timm seeds its LR noise with the index, which must then be an int
            value = int(value)
    elif _is_one_number(index):
        return read_index(index.item(), name, on_bool)
    else:
        raise TypeError(f"{name}() index must be a non-negative number, got {index!r} ({type(index).__name__})")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}() index must be a finite, non-negative number, got {index!r}")
    return value


def _is_one_number(index: Any) -> bool:
    """A one-element tensor or a 0-d numpy array of real numbers (bools included: stock timm takes them as 0/1)."""
    if isinstance(index, torch.Tensor):
        return index.numel() == 1 and not index.is_complex()
    return getattr(index, "ndim", None) == 0 and callable(getattr(index, "item", None)) and \
        getattr(getattr(index, "dtype", None), "kind", "") in ("b", "i", "u", "f")


class _OptimizerSteps:
    """The optimizer steps run since the last apply: shared by a timing and its step hook, so that counting,
    the hook's only work outside auto mode, needs no timing (which the hook must not keep alive)."""

    __slots__ = ("since_apply",)

    def __init__(self) -> None:
        self.since_apply = 0


def _before_optimizer_step_hook(timing: ScheduleTiming) -> Callable[..., None]:
    """The optimizer step pre-hook; it runs on every optimizer step. It holds the timing weakly (auto mode) or not
    at all: a scheduler that is dropped while its optimizer lives stops acting, and its hook is removed."""
    if timing._auto_updates:
        timing_ref = weakref.ref(timing)

        def before_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            live = timing_ref()
            if live is not None:
                live.before_optimizer_step()
    else:
        steps = timing._optimizer_steps

        def before_optimizer_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            steps.since_apply += 1

    return before_optimizer_step


class ScheduleTiming:
    """Position and call bookkeeping of one fixed scheduler.

    ``last_t`` is the index most recently applied (None while unknown), ``next_count`` the index the
    next call without an index applies, ``steps_since_apply`` the optimizer steps run with ``last_t``; ``lag``
    decides whether an index trails the optimizer steps (:class:`timm_sched_fix.lag.LagRule`).
    """

    def __init__(self, scheduler: Any, options: Options, owner: str) -> None:
        check_optimizer(scheduler.optimizer)
        self.scheduler = scheduler
        self.optimizer = scheduler.optimizer
        self.options = options
        self.owner = owner
        self.field: str = scheduler.param_group_field
        self.on_epochs = compat.is_epoch_schedule(scheduler)
        self.last_t: float | None = None
        self.next_count: float | None = None
        self._optimizer_steps = _OptimizerSteps()
        self.lag = LagRule(self.on_epochs, options.on_lag, options.convention)
        self.in_stock_call = False
        self.proxy: Any = None  # the FixedScheduler of wrap(), made on request
        self._auto_updates = options.auto and not self.on_epochs
        self._checks_metric = compat.is_plateau(scheduler)
        self._write_values = self._writer()
        self._tensor_lrs: list[tuple[dict, torch.Tensor]] = []
        self._write = self._write_values  # plus tensor refills once tensor LRs are found (_find_tensor_lrs)
        self._groups_seen: list[dict] | None = None  # the param_groups list last checked, and its length
        self._group_count = -1
        self._saw_matching_call = False
        self._warned: set[str] = set()
        self.orphaned = False  # a patch() copy unpickled after unpatch(): stock, like its original
        self._register_hook()

    def _writer(self) -> Callable[[float, Any], None]:
        """What writes v(t): timm's own method, or for an unmodified ``step_update`` its inlined equivalent."""
        stock = stock_method(type(self.scheduler), "step" if self.on_epochs else "step_update")
        if not self.on_epochs:
            inlined = compat.inlined_step_update(self.scheduler, stock)
            if inlined is not None:
                return inlined
        write = compat.stock_writer(self.scheduler, stock)

        def write_through_stock(t: float, metric: Any) -> None:
            self.in_stock_call = True  # the stock method may call routed methods (super().step_update(...))
            try:
                write(t, metric)
            finally:
                self.in_stock_call = False

        return write_through_stock

    # -- optimizer step hook ------------------------------------------------------------------

    def _register_hook(self) -> None:
        handle = self.optimizer.register_step_pre_hook(_before_optimizer_step_hook(self))
        self._hook_finalizer = weakref.finalize(self, handle.remove)

    @property
    def steps_since_apply(self) -> int:
        """The optimizer steps that ran with ``last_t``."""
        return self._optimizer_steps.since_apply

    @steps_since_apply.setter
    def steps_since_apply(self, steps: int) -> None:
        self._optimizer_steps.since_apply = steps

    def before_optimizer_step(self) -> None:
        """Runs right before every optimizer step in auto mode: applies v(k) and counts the step."""
        auto_updates = self._auto_updates and self.last_t is not None
        if auto_updates and self._optimizer_steps.since_apply:
            self._apply(self.last_t + 1, None)
        self._optimizer_steps.since_apply += 1
        if auto_updates:  # the count follows the optimizer steps, so skipping a call without an index is fine
            self.next_count = self.last_t + 1

    def detach(self) -> None:
        """Stop fixing: remove the hook and the timing from the scheduler."""
        self._hook_finalizer()
        with contextlib.suppress(AttributeError):  # a drop-in class has a class-level default
            delattr(self.scheduler, TIMING_KEY)

    # -- routed methods -----------------------------------------------------------------------

    def step(self, epoch: float | None = None, metric: Any = None) -> None:
        self._on_call("step", epoch, metric, epoch_call=True)

    def step_update(self, num_updates: float | None = None, metric: Any = None) -> None:
        if not self.on_epochs:  # the hot path, on every optimizer step: a new index needs no more decisions
            if num_updates is None:
                t = self.next_count
            elif type(num_updates) is int and num_updates >= 0:
                shift = self.lag.fast_shift  # None while the lag rule must see the call
                t = None if shift is None else num_updates + shift
            else:
                t = None
            groups = self.optimizer.param_groups
            if t is not None and t != self.last_t and groups is self._groups_seen and len(groups) == self._group_count:
                # as _on_call and _apply decide it: a new index the lag rule need not see, the same groups
                self._saw_matching_call = True
                self._write(t, metric)
                self.last_t, self.next_count, self._optimizer_steps.since_apply = t, t + 1, 0
                return
        self._on_call("step_update", num_updates, metric, epoch_call=False)

    def state_dict(self) -> dict[str, Any]:
        """The stock state dict plus the position, so a resume pre-advances to the right index."""
        state = dict(self._stock_call("state_dict"))
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
        }
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a fixed or a stock state dict, then pre-advance to the restored position.

        A stock state dict carries no position: the LRs are left as they are until a call gives one.
        Everything is checked before anything changes.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        ours = state_dict.get(STATE_KEY)
        stock_state = {key: value for key, value in state_dict.items() if key != STATE_KEY}
        position = self._check_own_state(ours) if ours is not None else None
        own = {key: value for key, value in self._stock_call("state_dict").items() if key != TIMING_KEY}
        compat.check_state_dict(self.scheduler, stock_state, own)
        snapshot = self._snapshot()
        try:
            self._load_checked(stock_state, ours, position)
        except Exception as error:
            self._restore(snapshot)
            raise ValueError(
                f"state dict could not be loaded into a {type(self.scheduler).__name__} ({error!r}); the scheduler "
                "and the optimizer's param groups are unchanged"
            ) from error

    def _load_checked(self, stock_state: dict, ours: Mapping[str, Any] | None, position: float | None) -> None:
        self._stock_call("load_state_dict", stock_state)
        if ours is None:
            self.last_t = self.next_count = None
            self.lag.lost_position()
            return
        compat.restore_plateau_state(self.scheduler, ours.get("plateau"), position)
        steps = ours.get("steps_since_apply", 0)
        if position is None:
            self.last_t = self.next_count = None
        else:
            self._apply(position, None)
            self.next_count = None if ours["next_count"] is None else read_index(ours["next_count"], "load_state_dict")
            # optimizer steps that already ran with last_t: auto mode advances before the next one
            self.steps_since_apply = steps
        self.lag.load(ours["lag_shift"], ours.get("lag"), steps)

    def get_last_lr(self) -> list[float]:
        """The value each param group's LR field holds now, one per group."""
        return [float(group[self.field]) for group in self.optimizer.param_groups]

    # -- the decision -------------------------------------------------------------------------

    def move_to(self, t: float) -> None:
        """Pre-advance: apply v(t) as the position to train at next, without counting it as a call."""
        self._apply(t, None)
        self.next_count = t + 1 if self.options.convention == "end" else t

    def reapply(self) -> None:
        """Write v(last_t) again after something else wrote the LRs (``SequentialLR`` resets them); the position,
        the next count and the optimizer steps run with it stay as they are. Nothing while the position is unknown."""
        if self.last_t is not None:
            next_count, steps = self.next_count, self.steps_since_apply
            self._apply(self.last_t, None)
            self.next_count, self.steps_since_apply = next_count, steps

    def _on_call(self, name: str, index: Any, metric: Any, epoch_call: bool) -> None:
        """Decide which t a ``step``/``step_update`` call applies (it runs on every optimizer step: the
        common case, a non-negative int index for the schedule's own unit, is checked first)."""
        if index is not None and (type(index) is not int or index < 0):
            index = read_index(index, name, self._on_bool_index)
        if epoch_call is not self.on_epochs:
            self._on_mismatched_call(name, index, metric)
            return
        if self._checks_metric:
            compat.check_metric(self.scheduler, metric)
        if index is None:
            if self.next_count is None:
                raise RuntimeError(
                    f"{name}() without an index needs a known position: this scheduler was built with "
                    f"initialize=False or loaded a stock state dict; call {name}(t) once with the index "
                    "to train at, or load a state dict saved by a fixed scheduler"
                )
            indices: tuple[float, ...] = (self.next_count,)
        else:
            indices = self.lag.indices_to_apply(name, index, self.last_t, self.steps_since_apply)
        self._saw_matching_call = True
        for t in indices:
            self._apply(t, metric)

    def _on_bool_index(self) -> None:
        self._warn_once("bool", "a bool schedule index is read as 0 or 1, as stock timm does; pass the epoch or "
                        "update number", ScheduleCallWarning)

    def _on_mismatched_call(self, name: str, index: Any, metric: Any) -> None:
        """A call for the other unit changes nothing, as in stock timm, but says so when it is a mistake.

        timm's own train.py calls ``step_update(num_updates, metric=loss)`` and ``step(epoch + 1, metric)``
        on every schedule; those calls stay silent: a mismatched call with a metric, or once the right
        method has been called too.
        """
        kind = "per-epoch (t_in_epochs=True)" if self.on_epochs else "per-update (t_in_epochs=False)"
        if index is None:  # a PyTorch-style step(): in auto mode an update schedule needs no calls at all
            mistake = self.on_epochs or not self._auto_updates
        elif self.on_epochs:
            mistake = metric is None and not self._saw_matching_call
        else:  # step(e) on an update schedule: by the end of an epoch, step_update() should have come
            mistake = not self._saw_matching_call and self.steps_since_apply > 0 and not self._auto_updates
        if not mistake:
            return
        call = f"{name}({'' if index is None else repr(index)})"
        if self.on_epochs:
            advice = "call step(epoch + 1) after each epoch"
        elif index is None:
            advice = ("timm's step() is the per-epoch call. An engine that calls scheduler.step() after every optimizer "
                      "step (DeepSpeed's lr_scheduler=, the Hugging Face Trainer, Accelerate) needs the schedule behind "
                      "PyTorch's protocol: timm_sched_fix.TorchScheduler(scheduler, interval=\"step\"); in your own "
                      "loop call step_update(num_updates) after each optimizer step, or pass auto=True")
        else:
            advice = "call step_update(num_updates) after each optimizer step, or pass auto=True"
        self._warn_once("mismatch", f"{call} on a {kind} schedule changes nothing; {advice}", ScheduleCallWarning)

    def _apply(self, t: float, metric: Any) -> None:
        """Write v(t) (see ``_writer``) and record it as the position; tensor LRs are filled in place, not replaced."""
        groups = self.optimizer.param_groups
        if groups is not self._groups_seen or len(groups) != self._group_count:
            self._apply_to_new_groups(groups, t, metric)
        else:
            self._write(t, metric)
        self.last_t = t
        self.next_count = t + 1
        self._optimizer_steps.since_apply = 0

    def _apply_to_new_groups(self, groups: list[dict], t: float, metric: Any) -> None:
        """The first write, or one after the optimizer's groups changed (``load_state_dict``, ``add_param_group``)."""
        if len(groups) != len(self.scheduler.base_values):
            # stock timm zips the two and silently leaves the extra groups at whatever LR they have
            raise ValueError(
                f"the optimizer has {len(groups)} param groups but the scheduler was built for "
                f"{len(self.scheduler.base_values)}: build the scheduler after the last add_param_group(); "
                "no LR was changed"
            )
        self._find_tensor_lrs(groups)
        self._write(t, metric)
        self._find_tensor_lrs(groups)  # adopt tensors the stock write itself produced (tensor base values)

    def _find_tensor_lrs(self, groups: list[dict]) -> None:
        """Remember the groups whose LR is a tensor (checked again only when the groups change)."""
        _separate_tensor_lrs(self.scheduler, self.field)
        self._tensor_lrs = [(group, group[self.field]) for group in groups if isinstance(group[self.field], torch.Tensor)]
        self._groups_seen, self._group_count = groups, len(groups)
        self._write = self._write_keeping_tensors if self._tensor_lrs else self._write_values

    def _write_keeping_tensors(self, t: float, metric: Any) -> None:
        """Write v(t), then put each tensor LR back as the same object holding the new value."""
        self._write_values(t, metric)
        for group, tensor in self._tensor_lrs:
            _write_into_tensor(group, self.field, tensor)

    # -- helpers ------------------------------------------------------------------------------

    def _stock_call(self, name: str, *args: Any) -> Any:
        """The scheduler's own method ``name``, looked up and called as stock (patch() routes at lookup)."""
        self.in_stock_call = True
        try:
            return getattr(self.scheduler, name)(*args)
        finally:
            self.in_stock_call = False

    def _check_own_state(self, ours: Any) -> float | None:
        if not isinstance(ours, Mapping) or not {"scheduler", "last_t", "next_count", "lag_shift"} <= set(ours):
            raise ValueError(f"state_dict[{STATE_KEY!r}] is not a timm_sched_fix position record: {ours!r}")
        expected = type(self.scheduler).__name__
        if ours["scheduler"] != expected:
            raise ValueError(f"state dict was saved by a {ours['scheduler']}, cannot load into a {expected}")
        for key in ("last_t", "next_count"):
            value = ours[key]
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise ValueError(f"state_dict[{STATE_KEY!r}][{key!r}] must be None or a number, got {value!r}")
            if value is not None:
                read_index(value, f"load_state_dict: {key}")
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
        timing_state = dict(vars(self), steps_since_apply=self.steps_since_apply, lag_state=self.lag.state())
        return dict(vars(self.scheduler)), timing_state, groups, plateau, dict(vars(plateau)) if plateau else None

    def _restore(self, snapshot: tuple) -> None:
        scheduler_state, timing_state, groups, plateau, plateau_state = snapshot
        vars(self.scheduler).clear()
        vars(self.scheduler).update(scheduler_state)
        steps_since_apply = timing_state.pop("steps_since_apply")
        lag_state = timing_state.pop("lag_state")
        vars(self).update(timing_state)
        self.steps_since_apply = steps_since_apply
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

    def _warn_once(self, kind: str, message: str, category: type[Warning]) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, category, stacklevel=caller_stacklevel())

    # -- copies -------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        del state["_hook_finalizer"]
        state["proxy"] = None
        state["_groups_seen"] = None  # the copy's groups are other objects: look again
        state["_tensor_lrs"] = []
        del state["_write"], state["_write_values"]  # bound to this scheduler (and not picklable): the copy binds its own
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._write = self._write_values = self._writer()
        if self.owner == "patch":
            from .patching import adopt

            # a copy of a patched scheduler is patched too: unpatch() must make it stock like the original
            self.orphaned = not adopt(self)
            if self.orphaned:
                self._hook_finalizer = lambda: None
                return
        self._register_hook()


class FixedAttributes:
    """What a fixed scheduler has beyond stock timm; drop-in classes inherit it, ``patch()`` adds it."""

    @property
    def last_t(self) -> float | None:
        """The schedule index most recently applied; None before any was (or while unknown)."""
        return _require_timing(self).last_t

    def get_last_lr(self) -> list[float]:
        """The LR each param group holds now, one per group (as PyTorch schedulers have it)."""
        return _require_timing(self).get_last_lr()


def _require_timing(scheduler: Any) -> ScheduleTiming:
    timing = timing_of(scheduler)
    if timing is None:
        raise AttributeError(
            f"this {type(scheduler).__name__} is not fixed by timm_sched_fix (built before patch() or after unpatch())"
        )
    return timing

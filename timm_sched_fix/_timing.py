"""The timing core: which schedule index t is applied, when, and from which call.

Every adapter (``patch()``, ``wrap()``, the drop-in classes) routes a fixed scheduler's ``step``,
``step_update``, ``state_dict`` and ``load_state_dict`` to the :class:`ScheduleTiming` stored on the
scheduler. The schedule math is never touched: v(t) is written by the scheduler's own ``step(t)``/
``step_update(t)`` (:func:`timm_sched_fix._compat.stock_writer`) or, for a class that keeps timm's base
``step_update``, by its bit-identical inlined equivalent (:func:`timm_sched_fix._compat.inlined_step_update`).

This module runs on every optimizer step, so the per-call path avoids repeated lookups: what can be
resolved once per scheduler is resolved in ``ScheduleTiming.__init__``. Parameter updates are counted by
:mod:`timm_sched_fix._counting`; a timing holds its scheduler weakly, and nothing the optimizer holds keeps
either alive, so a scheduler that is no longer referenced stops acting at once. Whether an index lags the
optimizer steps is decided by :class:`timm_sched_fix._lag.LagRule`, asked from one place (``_on_call``) for every
call with an index of the schedule's unit; the per-update hot path applies a new index without asking while the
rule says it needs to see no call.

Past 400 lines as one piece: the decision (``_on_call``, ``_apply``), the state it reads and the state-dict
round trip that restores it share one set of fields, and splitting them would spread that state over modules.
"""

from __future__ import annotations

import contextlib
import functools
import math
import numbers
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _counting as counting
from timm_sched_fix import _notices as notices
from timm_sched_fix import _overrides as overrides
from timm_sched_fix import _ownership as ownership
from timm_sched_fix import _routing as routing
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._lag import LagRule, caller_stacklevel, check_record
from timm_sched_fix._routing import TIMING_KEY
from timm_sched_fix.exceptions import ScheduleCallWarning, ScheduleCountWarning
from timm_sched_fix.options import Options

assert TIMING_KEY == "_timm_sched_fix"  # routed_step_update reads it as an attribute
#: A scheduler attribute present while its outermost constructor runs.
CONSTRUCTING_KEY = "_timm_sched_fix_constructing"
#: The entry a fixed scheduler adds to its ``state_dict()``.
STATE_KEY = "timm_sched_fix"



def stock_method(cls: type, name: str) -> Callable[..., Any]:
    """The scheduler class's own ``name`` method, past the adapters' routing methods and wrappers (a subclass's
    override included: see :func:`timm_sched_fix._overrides.class_method`)."""
    return overrides.class_method(cls, name)[1]


def timing_of(scheduler: Any) -> ScheduleTiming | None:
    """The timing of a fixed scheduler, or None for a stock one."""
    return getattr(scheduler, TIMING_KEY, None)


def construct(
    scheduler: Any,
    init: Callable[..., Any],
    args: tuple,
    kwargs: dict,
    options: Options,
    owner: Adapter,
    observer: Callable[[Any, Options], None] | None = None,
) -> None:
    """Run a scheduler constructor, then fix the scheduler and pre-advance it.

    Nested constructors (``super().__init__``) run as they are; only the outermost one fixes. ``observer(scheduler,
    options)`` runs between the two, when the param groups hold what stock timm's constructor left in them. Raises,
    before the constructor runs, what :func:`check_optimizer` and :func:`counted_options` raise, and ``RuntimeError``
    below the supported torch range (:func:`timm_sched_fix._compat.unsupported_torch`).
    """
    if hasattr(scheduler, CONSTRUCTING_KEY):
        init(*args, **kwargs)
        return
    compat.require_supported_torch()
    optimizer, initialize = compat.construction_args(init, args, kwargs)
    check_optimizer(optimizer)
    counted_options(optimizer, options, owner)  # refuses auto=True before the constructor runs (attach() decides)
    groups_before = group_values(optimizer)
    setattr(scheduler, CONSTRUCTING_KEY, True)
    try:
        compat.for_installed_torch(init)(*args, **kwargs)
    finally:
        delattr(scheduler, CONSTRUCTING_KEY)
    if observer is not None:
        observer(scheduler, options)
    try:
        attach(scheduler, options, owner, groups_before=groups_before, initialize=initialize)
    except Exception:
        _restore_groups(optimizer, groups_before)  # the constructor raises: the optimizer as it was before it
        raise


def _restore_groups(optimizer: Any, groups_before: list[dict] | None) -> None:
    if groups_before is not None:
        for group, before in zip(optimizer.param_groups, groups_before):
            params = group["params"]
            group.clear()
            group.update(before, params=params)


def attach(
    scheduler: Any,
    options: Options,
    owner: Adapter,
    *,
    groups_before: list[dict] | None = None,
    initialize: bool = True,
) -> ScheduleTiming | None:
    """Fix a constructed scheduler (idempotent) and pre-advance it.

    ``groups_before`` are the param-group values from before construction: tensor LRs among them keep
    their identity, and with ``initialize=False`` (resume, position unknown) the LRs are put back as
    they were instead of pre-advancing. The pre-advance writes only over what the constructor left
    (:func:`_left_by_scheduler`); other LRs are kept and the position is unknown until a call with an index or a
    load. Raises what :func:`counted_options` raises, and ``ValueError`` for LR noise that can never be drawn
    (:func:`timm_sched_fix._compat.check_noise`) and ``RuntimeError`` below the supported torch range, before
    anything changes.

    None, with nothing changed and one :class:`~timm_sched_fix._overrides.ScheduleOverrideWarning`, for a scheduler
    with an own method whose meaning the fix cannot know (:func:`timm_sched_fix._overrides.unknown_override`): it
    runs as stock timm runs it.
    """
    timing = timing_of(scheduler)
    if timing is not None:
        return timing
    compat.require_supported_torch()
    if overrides.runs_above_the_fix(type(scheduler)):
        routing.route(scheduler)  # the fix calls the user's step/step_update, not the other way round
    unknown = overrides.unknown_override(scheduler, compat.is_epoch_schedule(scheduler))
    if unknown is not None:
        overrides.warn_unknown(scheduler, *unknown, stacklevel=caller_stacklevel())
        return None
    if not overrides.owns_noise(scheduler):
        compat.check_noise(functools.partial(getattr, scheduler), type(scheduler).__name__)
    requested = options
    options = counted_options(scheduler.optimizer, options, owner)
    timing = ScheduleTiming(scheduler, options, owner, auto_refused=requested.auto and not options.auto)
    setattr(scheduler, TIMING_KEY, timing)
    field = timing.field
    groups = scheduler.optimizer.param_groups
    own = _left_by_scheduler(scheduler, groups, groups_before, field)
    if groups_before is not None:
        for group, before in zip(groups, groups_before):
            if not initialize or isinstance(before.get(field), torch.Tensor):
                group[field] = before[field]  # resume: the LRs as they were; tensors: the same objects
    _separate_tensor_lrs(scheduler, field)
    if initialize and own:
        timing.move_to(0)
    return timing


def _left_by_scheduler(scheduler: Any, groups: list[dict], groups_before: list[dict] | None, field: str) -> bool:
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


def check_optimizer(optimizer: Any) -> None:
    """Refuse, before anything runs, an optimizer a fixed scheduler cannot work with: it writes each param
    group's ``lr`` (``TypeError`` without ``param_groups``, ``ValueError`` for a group without ``lr``)."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(group, Mapping) for group in groups):
        raise TypeError(
            "a fixed timm scheduler needs an optimizer with param_groups (a list of dicts, as torch.optim.Optimizer "
            f"has), got {type(optimizer).__module__}.{type(optimizer).__qualname__}"
        )
    for i, group in enumerate(groups):
        if "lr" not in group:
            raise ValueError(f"optimizer.param_groups[{i}] has no 'lr': every param group needs one")


def counted_options(optimizer: Any, options: Options, owner: Adapter) -> Options:
    """The options a scheduler on ``optimizer`` is fixed with. Auto mode advances on the optimizer's parameter
    updates: where none can be counted (see :func:`timm_sched_fix._counting.uncountable_reason`) it would freeze
    the LR, so ``auto=True`` raises ``ValueError`` saying so, except under ``patch()`` (``owner.must_not_raise``), which
    must not break a script: that scheduler takes explicit calls instead, and says so once when fixed."""
    if not options.auto or counting.counter_for(optimizer) is not None:
        return options
    if owner.must_not_raise:
        return Options(convention=options.convention, auto=False, on_lag=options.on_lag)
    raise ValueError(
        f"auto=True cannot work on this optimizer: {counting.uncountable_reason(optimizer)}, so its parameter "
        "updates cannot be counted and the LR would never change. Call step_update() after each optimizer step "
        "(without auto=True), or build the scheduler on the torch optimizer that performs the updates"
    )


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
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range: no schedule computes a value there
        finite = False
    if not finite or value < 0:
        raise ValueError(f"{name}() index must be a finite, non-negative number, got {_shown(index)}")
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` for a message, an int too long to print in full by its size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'over 3,000'} digits"
    return repr(value)


def _is_one_number(index: Any) -> bool:
    """A one-element tensor or a 0-d numpy array of real numbers (bools included: stock timm takes them as 0/1)."""
    if isinstance(index, torch.Tensor):
        return index.numel() == 1 and not index.is_complex()
    return getattr(index, "ndim", None) == 0 and callable(getattr(index, "item", None)) and \
        getattr(getattr(index, "dtype", None), "kind", "") in ("b", "i", "u", "f")


def _state_or_attribute(state: Mapping[str, Any], scheduler: Any, name: str, default: Any = None) -> Any:
    """A state dict's value, else the scheduler's attribute: what the scheduler holds once the state dict is loaded."""
    return state[name] if name in state else getattr(scheduler, name, default)


class _Uncounted:
    """Stands in for the update counter of an optimizer whose updates cannot be counted: no update ever runs."""

    count = 0


UNCOUNTED = _Uncounted()


def _nothing() -> None:
    return None


class ScheduleTiming:
    """Position and call bookkeeping of one fixed scheduler.

    ``last_t`` is the index most recently applied (None while unknown), ``next_count`` the index the
    next call without an index applies, ``steps_since_apply`` the parameter updates run with ``last_t``; ``lag``
    decides whether an index trails the optimizer steps (:class:`timm_sched_fix._lag.LagRule`).
    """

    def __init__(self, scheduler: Any, options: Options, owner: Adapter, *, auto_refused: bool = False) -> None:
        check_optimizer(scheduler.optimizer)
        self._scheduler_ref = weakref.ref(scheduler)  # the scheduler holds its timing
        self.optimizer = scheduler.optimizer
        self.options = options
        self.owner = owner
        self.field: str = scheduler.param_group_field
        self.on_epochs = compat.is_epoch_schedule(scheduler)
        self.last_t: float | None = None
        self.next_count: float | None = None
        self.lag = LagRule(self.on_epochs, options.on_lag, options.convention)
        self.in_stock_call = False
        self._proxy_ref: Any = None  # a weak reference to the FixedScheduler of wrap(), made on request
        self._auto_updates = options.auto and not self.on_epochs
        self._checks_metric = compat.is_plateau(scheduler)
        self._own_state_methods = overrides.defines_own(type(scheduler), ("state_dict", "load_state_dict"))
        self._write_values = self._writer(scheduler)
        self._tensor_lrs: list[tuple[dict, torch.Tensor]] = []
        self._write = self._write_values  # plus tensor refills once tensor LRs are found (_find_tensor_lrs)
        self._groups_seen: list[dict] | None = None  # the param_groups list last checked, and its length
        self._group_count = -1
        self._saw_matching_call = False
        self._moved_to: float | None = None  # the position of the last pre-advance
        # what the scheduler itself last left in the param groups: (last_t, _applied_at, LRs), recorded where the fix
        # writes at a moment stock timm does not (pre-advance, load), so that a later such write can see whether the
        # LRs are still its own (ownership.py); the per-call paths do not record
        self._left: tuple[float | None, int, list[float]] | None = None
        # a load's stamp of the optimizer's LRs, when the load wrote the position (the optimizer's state may come
        # next): (last_t, _applied_at, LRs), good while nothing was written since
        self._loaded_stamp: tuple[float | None, int, list[float]] | None = None
        self._warned: set[str] = set()
        self._counter: Any = counting.counter_for(self.optimizer) or UNCOUNTED
        self._applied_at = self._counter.count  # the counter's count at the last apply
        self._detach_counter: Callable[[], Any] = _nothing
        if self._counter is UNCOUNTED:  # counted_options() refused auto=True already
            self._warn_uncounted(auto_refused)
        self._subscribe()

    @property
    def scheduler(self) -> Any:
        """The fixed scheduler (held weakly: it holds its timing)."""
        return self._scheduler_ref()

    def _writer(self, scheduler: Any) -> Callable[[Any, float, Any], None]:
        """What writes v(t), called as ``write(scheduler, t, metric)``: timm's own method, or for an unmodified
        ``step_update`` its inlined equivalent. Neither holds the scheduler or the timing."""
        stock = stock_method(type(scheduler), "step" if self.on_epochs else "step_update")
        if not self.on_epochs and not any(overrides.instance_override(scheduler, name) is not None
                                          for name in routing.OVERRIDABLE):
            # the inlined step_update checks for an instance's own methods per call, unless the class tells the
            # timing when one is set (rewrite())
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

    def rewrite(self) -> None:
        """An instance's own method was set or deleted: decide the writer again (the groups are looked at anew). An
        instance's own ``step``/``step_update``/state-dict method takes the user's calls from now on: the fix steps
        aside (stops counting and auto mode; the LRs stay as they are) and says so once."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        if any(overrides.instance_override(scheduler, name) is not None for name in routing.ROUTED):
            self.step_aside(*(overrides.unknown_override(scheduler, self.on_epochs) or ("step", "")))
            return
        self._write = self._write_values = self._writer(scheduler)
        self._groups_seen = None

    def step_aside(self, method: str, reason: str) -> None:
        """The user's own ``method`` takes the calls from now on: stop fixing (counting, auto mode; the LRs stay as
        they are) and say so once."""
        scheduler = self.scheduler
        if scheduler is not None:
            overrides.warn_unknown(scheduler, method, reason, stacklevel=caller_stacklevel())
        self.detach()

    # -- counting parameter updates -----------------------------------------------------------

    def _subscribe(self) -> None:
        """Count this scheduler's optimizer's updates for as long as the scheduler lives; in auto mode, run
        ``before_optimizer_step`` before each."""
        previous = self._detach_counter
        if self._counter is UNCOUNTED:
            self._detach_counter = _nothing
        else:
            before_update, written = (self.before_optimizer_step, self.lr_tensors) if self._auto_updates else (None, None)
            self._detach_counter = self._counter.attach(self.scheduler, before_update, writes_lr=True, written=written)
        previous()  # after attaching: the hooks stay where they are, ahead of hooks registered since

    def _warn_uncounted(self, auto_refused: bool) -> None:
        message = (
            f"timm_sched_fix cannot count this scheduler's parameter updates ({counting.uncountable_reason(self.optimizer)}): "
            "lag detection is off for it; the LRs follow its calls as usual"
        )
        if auto_refused:
            message += (". patch(auto=True) cannot drive it (the LR would never change): call step_update() after "
                        "each optimizer step")
        self._warn_once("uncounted", message, ScheduleCountWarning)

    @property
    def counts_updates(self) -> bool:
        """Whether this scheduler's optimizer's parameter updates are counted (lag detection and auto mode)."""
        return self._counter is not UNCOUNTED

    @property
    def steps_since_apply(self) -> int:
        """The parameter updates that ran with ``last_t`` (always 0 where they cannot be counted)."""
        return self._counter.count - self._applied_at

    @steps_since_apply.setter
    def steps_since_apply(self, steps: int) -> None:
        self._applied_at = self._counter.count - steps

    def lr_tensors(self) -> list[torch.Tensor]:
        """The LR tensors this scheduler fills in place, one per param group whose LR is a tensor."""
        return [tensor for _, tensor in self._tensor_lrs]

    def before_optimizer_step(self) -> None:
        """Runs right before every parameter update in auto mode: applies v(k); a param group added since the
        last apply gets v(t) before its first update."""
        last_t = self.last_t
        if last_t is None:
            self._warn_unknown_position()
            return
        groups = self.optimizer.param_groups
        if groups is not self._groups_seen and len(groups) == self._group_count and not self._adopt_groups(groups):
            return  # the optimizer's groups were replaced (optimizer.load_state_dict): their LRs are kept
        if self._counter.count != self._applied_at:
            self._apply(last_t + 1, None)
        elif groups is not self._groups_seen or len(groups) != self._group_count:
            self._apply(last_t, None)
        self.next_count = self.last_t + 1  # the count follows the updates, so skipping a call without an index is fine

    def reconfigure(self, options: Options) -> None:
        """Fix with other options from now on, keeping the position and history (``wrap()`` with other options).

        A scheduler still at its pre-advanced position takes the new convention's next index. Raises
        ``ValueError`` for ``auto=True`` on an optimizer whose updates cannot be counted; nothing changes then."""
        if options == self.options:
            return
        if options.auto and self._counter is UNCOUNTED:
            counted_options(self.optimizer, options, Adapter.WRAP)  # raises, saying why
        untouched = (self.last_t is not None and self.last_t == self._moved_to and not self._saw_matching_call
                     and not self.steps_since_apply)  # pre-advanced, and neither called nor stepped since
        self.options = options
        self._auto_updates = options.auto and not self.on_epochs
        self.lag.reconfigure(options.on_lag, options.convention)
        if untouched:
            self.next_count = self.last_t + 1 if options.convention == "end" else self.last_t
        self._subscribe()

    @property
    def called(self) -> bool:
        """Whether a ``step``/``step_update`` call for the schedule's own unit has come."""
        return self._saw_matching_call

    def detach(self) -> None:
        """Stop fixing: stop counting and remove the timing from the scheduler."""
        self._detach_counter()
        self._detach_counter = _nothing
        with contextlib.suppress(AttributeError):  # a drop-in class has a class-level default
            delattr(self.scheduler, TIMING_KEY)

    @property
    def proxy(self) -> Any:
        """The FixedScheduler ``wrap()`` returned for this scheduler, while it lives (else None)."""
        return None if self._proxy_ref is None else self._proxy_ref()

    @proxy.setter
    def proxy(self, proxy: Any) -> None:
        self._proxy_ref = weakref.ref(proxy)

    # -- routed methods (see routed_step_update() and the functions next to it) ------------------------

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

    # -- LRs the scheduler did not write (ownership.py) -----------------------------------------

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

    def _warn_unknown_position(self) -> None:
        self._warn_once("unknown position", (
            f"auto mode cannot advance this {type(self.scheduler).__name__}: its position is unknown (built with "
            "initialize=False or over LRs it did not write, or a stock or stale state dict was loaded), so the LRs "
            "stay as they are; call step_update(t) once with the index to train at, or load a fixed scheduler's "
            "state dict"), ScheduleCallWarning)

    def get_last_lr(self) -> list[float]:
        """The value each param group's LR field holds now, one per group."""
        return [float(group[self.field]) for group in self.optimizer.param_groups]

    # -- the decision -------------------------------------------------------------------------

    def move_to(self, t: float) -> None:
        """Pre-advance: apply v(t) as the position to train at next, without counting it as a call."""
        self._apply(t, None)
        self.next_count = t + 1 if self.options.convention == "end" else t
        self._moved_to = t
        self._remember_left()

    def reapply(self) -> None:
        """Write v(last_t) again after something else wrote the LRs (``SequentialLR`` resets them); the position,
        the next count and the optimizer steps run with it stay as they are. Nothing while the position is unknown."""
        if self.last_t is not None:
            next_count, steps = self.next_count, self.steps_since_apply
            self._apply(self.last_t, None)
            self.next_count, self.steps_since_apply = next_count, steps

    def _on_call(self, name: str, index: Any, metric: Any, epoch_call: bool) -> None:
        """Decide which t a ``step``/``step_update`` call applies (it runs on every optimizer step: the
        common case, a non-negative int index for the schedule's own unit, is checked first). What it warns is
        warned once the call is applied (:mod:`timm_sched_fix._notices`)."""
        previous = notices.start()
        applied = False
        try:
            self._decide_and_apply(name, index, metric, epoch_call)
            applied = True
        finally:
            notices.finish(previous, caller_stacklevel(), applied)

    def _decide_and_apply(self, name: str, index: Any, metric: Any, epoch_call: bool) -> None:
        if index is not None and (type(index) is not int or index < 0):
            index = read_index(index, name, self._on_bool_index)
        if self._loaded_stamp is not None:  # the first call since a load that wrote the position
            if self.optimizer.param_groups is not self._groups_seen:
                self._adopt_groups(self.optimizer.param_groups)
            self._loaded_stamp = None
        if epoch_call is not self.on_epochs:
            self._on_mismatched_call(name, index, metric)
            return
        if self._checks_metric and compat.check_metric(self.scheduler, metric):
            self._warn_once("metric", f"PlateauLRScheduler metric {metric!r} is not finite: torch's ReduceLROnPlateau "
                            "counts it as no improvement and lowers the LR after patience_t such epochs, as in stock "
                            "timm; check the metric you pass (a diverged loss?)", ScheduleCallWarning)
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
            self._write(self._scheduler_ref(), t, metric)
        self.last_t = t
        self.next_count = t + 1
        self._applied_at = self._counter.count

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
        _separate_tensor_lrs(self.scheduler, self.field)
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

    # -- helpers ------------------------------------------------------------------------------

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
                                 f"number, got {_shown(value)}") from None
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

    def _warn_once(self, kind: str, message: str, category: type[Warning]) -> None:
        """Warn once per scheduler and kind, pointing at the user's code (the line of the script that made the call),
        however deep the adapters between."""
        if kind not in self._warned:
            self._warned.add(kind)
            notices.emit(message, category, caller_stacklevel())

    # -- copies -------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_scheduler_ref", "_proxy_ref", "_counter", "_detach_counter", "_write", "_write_values"):
            del state[key]  # weak references, this optimizer's counter, functions bound to this scheduler
        state["scheduler"] = self.scheduler
        state["steps_since_apply"] = self.steps_since_apply
        state["_groups_seen"] = None  # the copy's groups are other objects: look again
        state["_tensor_lrs"] = []
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        scheduler = state.pop("scheduler")
        steps_since_apply = state.pop("steps_since_apply")
        self.__dict__.update(state)
        self._scheduler_ref = weakref.ref(scheduler)
        self._proxy_ref = None
        if self.owner.routed_by_patch:
            routing.route(scheduler)  # a patched scheduler's copy routes as the original does
        self._write = self._write_values = self._writer(scheduler)
        self._counter = counting.counter_for(self.optimizer) or UNCOUNTED
        self.steps_since_apply = steps_since_apply
        self._detach_counter = _nothing
        self._subscribe()


# -- the routed methods: what a fixed scheduler's step, step_update, state_dict and load_state_dict are -----
# Functions of the scheduler, which routing.RoutedMethod and proxy.FixedScheduler bind to it: its timing holds it
# weakly, so the bound call keeps it alive (``CosineLRScheduler(...).state_dict()``).


def as_stock(scheduler: Any, name: str, *args: Any, **kwargs: Any) -> Any:
    """A routed call on a scheduler that is not fixed (any more: the fix stepped aside, or a bound method of it was
    kept from before): its class's own method runs, as under stock timm."""
    return stock_method(type(scheduler), name)(scheduler, *args, **kwargs)


def routed_step_update(scheduler: Any, num_updates: float | None = None, metric: Any = None) -> Any:
    """A fixed scheduler's ``step_update``: the hot path, on every optimizer step (a new index needs no more
    decisions), else ``ScheduleTiming._on_call``."""
    try:
        timing = scheduler._timm_sched_fix  # TIMING_KEY (an attribute read is faster than getattr())
        on_epochs = timing.on_epochs
    except AttributeError:  # not fixed: no timing, or a drop-in class's default None
        return as_stock(scheduler, "step_update", num_updates, metric)
    if not on_epochs:
        if num_updates is None:
            t = timing.next_count
        elif type(num_updates) is int and num_updates >= 0:
            shift = timing.lag.fast_shift  # None while the lag rule must see the call
            t = None if shift is None else num_updates + shift
        else:
            t = None
        groups = timing.optimizer.param_groups
        if (t is not None and t != timing.last_t and groups is timing._groups_seen
                and len(groups) == timing._group_count):
            # as _on_call and _apply decide it: neither a lag nor an unknown position, the same groups
            timing._saw_matching_call = True
            timing._write(scheduler, t, metric)
            timing.last_t, timing.next_count, timing._applied_at = t, t + 1, timing._counter.count
            return None
    timing._on_call("step_update", num_updates, metric, epoch_call=False)
    return None


def routed_step(scheduler: Any, epoch: float | None = None, metric: Any = None) -> Any:
    """A fixed scheduler's ``step``."""
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is None:
        return as_stock(scheduler, "step", epoch, metric)
    timing._on_call("step", epoch, metric, epoch_call=True)
    return None


def routed_state_dict(scheduler: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """A fixed scheduler's ``state_dict``: see ``ScheduleTiming.state_dict`` (arguments beyond timm's go to a
    subclass's override)."""
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is None:
        return as_stock(scheduler, "state_dict", *args, **kwargs)
    return timing.state_dict(*args, **kwargs)


def routed_load_state_dict(scheduler: Any, state: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
    """A fixed scheduler's ``load_state_dict``: see ``ScheduleTiming.load_state_dict`` (arguments beyond timm's
    go to a subclass's override)."""
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is None:
        return as_stock(scheduler, "load_state_dict", state, *args, **kwargs)
    timing.load_state_dict(state, *args, **kwargs)
    return None


routing.ROUTES.update(step=routed_step, step_update=routed_step_update, state_dict=routed_state_dict,
                      load_state_dict=routed_load_state_dict)

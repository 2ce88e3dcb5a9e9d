"""The timing decision: which schedule index t is applied, when, and from which call; and the per-update hot path.

Every adapter (``patch()``, ``wrap()``, the drop-in classes) routes a fixed scheduler's ``step``,
``step_update``, ``state_dict`` and ``load_state_dict`` to the :class:`ScheduleTiming` stored on the
scheduler (the ``routed_*`` functions at the end, registered in :data:`timm_sched_fix._routing.ROUTES`). A
timing is made by :mod:`timm_sched_fix._attach`; how v(t) lands in the param groups is
:mod:`timm_sched_fix._writer`'s, the state-dict position record :mod:`timm_sched_fix._position`'s (both base classes
of :class:`ScheduleTiming`, so the hot path reads their fields as the timing's own), what each calling convention
means :mod:`timm_sched_fix._conventions`'.

This module runs on every optimizer step, so the per-call path avoids repeated lookups: what can be
resolved once per scheduler is resolved in ``ScheduleTiming.__init__``. Parameter updates are counted by
:mod:`timm_sched_fix._counting`; a timing holds its scheduler weakly, and nothing the optimizer holds keeps
either alive, so a scheduler that is no longer referenced stops acting at once. Whether an index lags the
optimizer steps is decided by :class:`timm_sched_fix._lag.LagRule`, asked from one place (``_on_call``) for every
call with an index of the schedule's unit; the per-update hot path applies a new index without asking while the
rule says it needs to see no call.

Past 400 lines as one piece: ``routed_step_update`` repeats, inline, what ``_on_call`` and ``_apply`` decide for the
common call (measured: each call or attribute lookup there costs per optimizer step), so the two are read and
changed together.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from timm_sched_fix import _compat as compat
from timm_sched_fix import _counting as counting
from timm_sched_fix import _notices as notices
from timm_sched_fix import _overrides as overrides
from timm_sched_fix import _routing as routing
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._conventions import next_index_after_move
from timm_sched_fix._index import read_index
from timm_sched_fix._lag import LagRule, caller_stacklevel
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._position import PositionRecord
from timm_sched_fix._routing import TIMING_KEY
from timm_sched_fix._writer import LRWriter
from timm_sched_fix.exceptions import ScheduleCallWarning, ScheduleCountWarning
from timm_sched_fix.options import Options

assert TIMING_KEY == "_timm_sched_fix"  # routed_step_update reads it as an attribute


def timing_of(scheduler: Any) -> ScheduleTiming | None:
    """The timing of a fixed scheduler, or None for a stock one."""
    return getattr(scheduler, TIMING_KEY, None)


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


class _Uncounted:
    """Stands in for the update counter of an optimizer whose updates cannot be counted: no update ever runs."""

    count = 0


UNCOUNTED = _Uncounted()


def _nothing() -> None:
    return None


class ScheduleTiming(LRWriter, PositionRecord):
    """Position and call bookkeeping of one fixed scheduler.

    ``last_t`` is the index most recently applied (None while unknown), ``next_count`` the index the
    next call without an index applies, ``steps_since_apply`` the parameter updates run with ``last_t``; ``lag``
    decides whether an index trails the optimizer steps (:class:`timm_sched_fix._lag.LagRule`). How v(t) is
    written is :class:`~timm_sched_fix._writer.LRWriter`'s, the state-dict round trip
    :class:`~timm_sched_fix._position.PositionRecord`'s.
    """

    def __init__(self, scheduler: Any, options: Options, owner: Adapter, *, auto_refused: bool = False) -> None:
        check_optimizer(scheduler.optimizer)
        self._scheduler_ref = weakref.ref(scheduler)  # the scheduler holds its timing
        self.optimizer = scheduler.optimizer
        self.options = options
        self.owner = owner
        self.on_epochs = compat.is_epoch_schedule(scheduler)
        self.last_t: float | None = None
        self.next_count: float | None = None
        self.lag = LagRule(self.on_epochs, options.on_lag, options.convention)
        self.in_stock_call = False
        self._proxy_ref: Any = None  # a weak reference to the FixedScheduler of wrap(), made on request
        self._auto_updates = options.auto and not self.on_epochs
        self._checks_metric = compat.is_plateau(scheduler)
        self._init_position(scheduler)
        self._init_writer(scheduler)
        self._saw_matching_call = False
        self._moved_to: float | None = None  # the position of the last pre-advance
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
        self._choose_writer(scheduler)

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
            self.next_count = next_index_after_move(options.convention, self.last_t)
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

    def _warn_unknown_position(self) -> None:
        self._warn_once("unknown position", (
            f"auto mode cannot advance this {type(self.scheduler).__name__}: its position is unknown (built with "
            "initialize=False or over LRs it did not write, or a stock or stale state dict was loaded), so the LRs "
            "stay as they are; call step_update(t) once with the index to train at, or load a fixed scheduler's "
            "state dict"), ScheduleCallWarning)

    # -- the decision -------------------------------------------------------------------------

    def move_to(self, t: float) -> None:
        """Pre-advance: apply v(t) as the position to train at next, without counting it as a call."""
        self._apply(t, None)
        self.next_count = next_index_after_move(self.options.convention, t)
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

    # -- helpers ------------------------------------------------------------------------------

    def _warn_once(self, kind: str, message: str, category: type[Warning]) -> None:
        """Warn once per scheduler and kind, pointing at the user's code (the line of the script that made the call),
        however deep the adapters between."""
        if kind not in self._warned:
            self._warned.add(kind)
            notices.emit(message, category, caller_stacklevel())

    # -- copies -------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("_scheduler_ref", "_proxy_ref", "_counter", "_detach_counter"):
            del state[key]  # weak references, this optimizer's counter, a function bound to this scheduler
        state["scheduler"] = self.scheduler
        state["steps_since_apply"] = self.steps_since_apply
        self._writer_state(state)
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
        self._choose_writer(scheduler)
        self._counter = counting.counter_for(self.optimizer) or UNCOUNTED
        self.steps_since_apply = steps_since_apply
        self._detach_counter = _nothing
        self._subscribe()


# -- the routed methods: what a fixed scheduler's step, step_update, state_dict and load_state_dict are -----
# Functions of the scheduler, which _routing.RoutedMethod and _proxy.FixedScheduler bind to it: its timing holds it
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

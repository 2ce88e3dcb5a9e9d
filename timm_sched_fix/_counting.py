"""Counting parameter updates: the one place that knows how an update shows up on a torch optimizer.

A fixed scheduler counts the parameter updates its optimizer performs (auto mode advances on them, lag
detection reads them). What the user hands a scheduler is often not the optimizer that updates the
parameters: Accelerate's ``AcceleratedOptimizer``, timm's ``Lookahead``, DeepSpeed's ZeRO and bf16 wrappers
and LARS-style wrappers keep the real one under a known attribute and share its ``param_groups``. The
counting is done there (:func:`stepping_optimizer`), with torch's public step hooks
(``register_step_pre_hook``/``register_step_post_hook``), by one :class:`UpdateCounter` per stepping optimizer
that every fixed scheduler on it shares (:func:`counter_for`).

One parameter update is counted once:

- a nested ``step()`` (a subclass's ``step`` calling ``super().step()``, whose class torch hooks as well) runs the
  hooks twice; the inner call is recognised (an outer step of the same optimizer is still running: a post-hook
  tracks the depth, for optimizer classes where steps can nest) and not counted;
- quirk ``deepspeed_partial_steps`` (DeepSpeed ZeRO, 0.19.8; these quirks are registered in
  :mod:`timm_sched_fix._compat.deepspeed`): ZeRO-1/2 steps the inner optimizer once per param group, each
  time through a one-group list of its own; ZeRO-3 once per sub-group, each time with only that sub-group's flat
  partition (a tensor with ``ds_id``) among the params. The steps of one update are counted
  once, at the first; while a one-group list is in place the listeners see the optimizer's own list;
- quirk ``deepspeed_setup_step`` (DeepSpeed bf16/fp16 without ZeRO, 0.19.8): ``deepspeed.initialize`` makes one
  zero-gradient ``optimizer.step()`` to create the optimizer state. A step taken while DeepSpeed constructs its
  engine or optimizer is not a training update and is not counted.

In a ``torch.compile``d ``optimizer.step()``, dynamo traces the step hooks: traced, the count and the callbacks
(auto mode's schedule) would become guards of the compiled code, a recompilation for each new value. There the
pre-hook puts one operator into the graph instead, which runs its work as eager Python on every update
(:func:`timm_sched_fix._compat.untraced_call`, quirk ``compiled_step_traces_hooks``); where dynamo runs torch's
step wrapper uncompiled (another pre-hook it cannot trace), the pre-hook runs its callbacks with dynamo off, so
that they are not compiled function by function.

To follow the updates of an optimizer (what a fixed scheduler does)::

    counter = counter_for(optimizer)  # None: nothing can be counted (uncountable_reason(optimizer) says why)
    detach = counter.attach(owner, before_update)  # before_update() right before each update, while owner lives
    counter.count  # the updates counted so far
"""

from __future__ import annotations

import sys
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix._compat import deepspeed, lookahead  # by name: patch() may import this while _compat imports timm

#: Attributes under which wrappers keep the optimizer they drive: Accelerate's ``AcceleratedOptimizer`` and
#: DeepSpeed's wrappers ``optimizer``; timm's ``Lookahead`` its own (``_compat.lookahead``); apex's ``LARC`` and
#: LARS-style wrappers ``optim``. Trusted only where the param groups are shared.
INNER_OPTIMIZER_ATTRIBUTES = ("optimizer", *lookahead.BASE_OPTIMIZER_ATTRIBUTES, "optim")


def stepping_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer that performs the parameter updates behind ``optimizer`` (itself, or the optimizer
    a wrapper drives with the same param groups), or None when there is none whose step hooks run."""
    seen: set[int] = set()
    while id(optimizer) not in seen:
        seen.add(id(optimizer))
        inner = _inner_optimizer(optimizer)
        if inner is None:
            break
        optimizer = inner
    return optimizer if _step_hooks_run(optimizer) else None


def uncountable_reason(optimizer: Any) -> str:
    """Why no parameter update of ``optimizer`` can be counted (for messages)."""
    name = f"{type(optimizer).__module__}.{type(optimizer).__qualname__}"
    inner = optimizer
    while (deeper := _inner_optimizer(inner)) is not None and deeper is not inner:
        inner = deeper
    if inner is not optimizer:
        name += f" (driving {type(inner).__module__}.{type(inner).__qualname__})"
    if not isinstance(inner, torch.optim.Optimizer):
        return f"{name} is not a torch.optim.Optimizer and wraps none under a known attribute"
    return f"the step hooks of {name} do not run (its class's step() is not instrumented by torch)"


def _inner_optimizer(wrapper: Any) -> Any | None:
    groups = getattr(wrapper, "param_groups", None)
    if groups is None:
        return None
    for name in INNER_OPTIMIZER_ATTRIBUTES:
        try:
            inner = getattr(wrapper, name, None)
        except Exception:  # noqa: BLE001 - a failing property of someone else's wrapper: not the optimizer sought
            inner = None
        if inner is not None and inner is not wrapper and _same_groups(getattr(inner, "param_groups", None), groups):
            return inner
    return None


def _same_groups(groups: Any, others: Any) -> bool:
    if groups is others:
        return True
    if not isinstance(groups, list) or not isinstance(others, list) or len(groups) != len(others):
        return False
    return all(group is other for group, other in zip(groups, others))


def _step_hooks_run(optimizer: Any) -> bool:
    """Whether torch calls the optimizer's step hooks: its class's ``step`` is torch's instrumented wrapper
    (``Optimizer.__init__`` installs it; a class that skips that, such as timm's Lookahead, has it only once
    ``zero_grad()`` ran) and the instance has the hook registries."""
    return (
        isinstance(optimizer, torch.optim.Optimizer)
        and bool(getattr(type(optimizer).step, "hooked", False))
        and hasattr(optimizer, "_optimizer_step_pre_hooks")
        and hasattr(optimizer, "_optimizer_step_post_hooks")
    )


_counters: weakref.WeakValueDictionary[int, UpdateCounter] = weakref.WeakValueDictionary()
_counters_lock = threading.Lock()


def counter_for(optimizer: Any) -> UpdateCounter | None:
    """The counter of the parameter updates behind ``optimizer`` (shared by everything counting on the same
    stepping optimizer), or None when they cannot be counted (see :func:`uncountable_reason`).

    The counter's hooks stay on the optimizer while something is attached (:meth:`UpdateCounter.attach`)."""
    stepping = stepping_optimizer(optimizer)
    if stepping is None:
        return None
    with _counters_lock:
        counter = _counters.get(id(stepping))
        if counter is None or counter.optimizer is not stepping:
            counter = UpdateCounter(stepping)
            _counters[id(stepping)] = counter
        return counter


class UpdateCounter:
    """The parameter updates of one torch optimizer: ``count`` so far, and callbacks run right before each.

    Callbacks run before the update is counted, so during one ``count`` is the number of updates before it.
    Those attached with ``writes_lr=True`` (auto-mode schedulers) run before the others, so an observer sees
    the LRs the update will run with."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.count = 0
        self._optimizer_ref = weakref.ref(optimizer)
        self._home: list = optimizer.param_groups  # the optimizer's own list (DeepSpeed swaps in others)
        self._params: Any = None  # the first group's params list at the last counted update: a whole update has it
        self._parts: set[int] = set()  # ids of the first tensors of the current update's steps (DeepSpeed)
        self._depth = 0  # steps of this optimizer running (nested: a subclass calling super().step())
        self._writers: list[Callable[[], None]] = []  # callbacks that write LRs (auto mode): they run first
        self._written: list[Callable[[], list[torch.Tensor]]] = []  # the tensors the writers write, each
        self._observers: list[Callable[[], None]] = []
        self._callbacks: tuple[Callable[[], None], ...] = ()  # writers, then observers
        self._attached = 0
        self._lock = threading.Lock()
        self._handles: tuple[Any, ...] | None = None  # the hooks' handles while installed
        self._before_step: Callable[[Any, Any, Any], None] | None = None  # the pre-hook's own work, once installed
        self._in_graph: Callable[[list[torch.Tensor]], None] | None = None  # it, for a compiled step (compat)
        self._before_step_without_dynamo: Callable[[Any, Any, Any], None] | None = None  # see _without_dynamo

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The optimizer counted (None once it is gone)."""
        return self._optimizer_ref()

    def attach(self, owner: object, before_update: Callable[[], None] | None = None, *,
               writes_lr: bool = False, written: Callable[[], list[torch.Tensor]] | None = None) -> Callable[[], Any]:
        """Count for as long as ``owner`` lives and call ``before_update()`` right before each update (callbacks
        that write LRs, ``writes_lr=True``, before the others). ``written()`` returns the tensors such a callback
        writes in place (its LR tensors): in a compiled step, what reads them runs after it.

        Returns a function that detaches early. The counter holds ``before_update`` and ``written`` (and what they
        are bound to) until ``owner`` is collected or that function is called, never ``owner`` itself."""
        with self._lock:
            if before_update is not None:
                (self._writers if writes_lr else self._observers).append(before_update)
                self._callbacks = (*self._writers, *self._observers)
            if written is not None:
                self._written.append(written)
            self._attached += 1
            if self._handles is None:
                self._install()
        detach = weakref.finalize(owner, self._detach, before_update, written)
        detach.atexit = False  # nothing to tidy up when the interpreter exits
        return detach

    def _detach(self, before_update: Callable[[], None] | None,
                written: Callable[[], list[torch.Tensor]] | None = None) -> None:
        with self._lock:
            if before_update is not None:
                self._writers = [c for c in self._writers if c is not before_update]
                self._observers = [c for c in self._observers if c is not before_update]
                self._callbacks = (*self._writers, *self._observers)
            if written is not None:
                self._written = [w for w in self._written if w is not written]
            self._attached -= 1
            if not self._attached and self._handles is not None:
                for handle in self._handles:
                    handle.remove()
                self._handles = None

    # -- the hooks --------------------------------------------------------------------------------

    def _install(self) -> None:
        optimizer = self._optimizer_ref()
        if optimizer is None:
            return
        counter = self
        tracing, dynamo_around = compat.dynamo_tracing, compat.dynamo_around
        if self._in_graph is None:
            self._in_graph = compat.untraced_call(self._before_step_untraced)
        in_graph = self._in_graph

        def before_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            # runs before every step of the optimizer, so the common case (a whole update: the same param groups
            # list and first group's params list as at the last counted update) is decided in the first lines
            if tracing():  # in a compiled optimizer.step(): the same work, as one operator of the graph (compat)
                in_graph([tensor for written in counter._written for tensor in written()])
                return
            groups = optimizer.param_groups
            if groups is counter._home:
                try:
                    params = groups[0]["params"]
                except (IndexError, KeyError):
                    params = None
                if params is counter._params:
                    callbacks = counter._callbacks
                    if callbacks:
                        if dynamo_around():
                            counter._without_dynamo(optimizer, args, kwargs)
                            return
                        for callback in callbacks:
                            callback()
                    counter.count += 1
                    return
            if dynamo_around():
                counter._without_dynamo(optimizer, args, kwargs)
                return
            counter._classify(optimizer, groups)

        self._before_step, self._before_step_without_dynamo = before_step, None
        if not _steps_can_nest(type(optimizer)):
            self._handles = (optimizer.register_step_pre_hook(before_step),)
            return

        def before_step_or_nested(optimizer: Any, args: Any, kwargs: Any) -> None:
            if counter._depth and counter._inside_own_step(optimizer):
                counter._depth += 1  # a subclass's step() calling super().step(): the same update
                return
            counter._depth = 1
            before_step(optimizer, args, kwargs)

        def after_step(optimizer: Any, args: Any, kwargs: Any) -> None:
            if counter._depth:
                counter._depth -= 1

        self._handles = (optimizer.register_step_pre_hook(before_step_or_nested),
                         optimizer.register_step_post_hook(after_step))

    def _without_dynamo(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        """The pre-hook's work with dynamo off, where dynamo runs a compiled step's frame uncompiled (it gives up on
        torch's step wrapper when another pre-hook does what it cannot trace) and would compile each function the
        callbacks call, one by one, recompiling on their values; and for the rare steps that ``_classify``."""
        if self._before_step_without_dynamo is None:
            self._before_step_without_dynamo = compat.without_dynamo(self._before_step)
        self._before_step_without_dynamo(optimizer, args, kwargs)

    def _before_step_untraced(self) -> None:
        """The pre-hook's work where a compiled step's operator runs it (``compat.untraced_call``)."""
        optimizer = self._optimizer_ref()
        if optimizer is not None and self._before_step is not None:
            self._before_step(optimizer, (), {})

    def _update(self, optimizer: Any, groups: list) -> None:
        """One parameter update starts: run the callbacks, then count it."""
        if self._callbacks:
            if groups is self._home:
                for callback in self._callbacks:
                    callback()
            else:  # quirk deepspeed_partial_steps: the callbacks see (and write) the optimizer's own list
                optimizer.param_groups = self._home
                try:
                    for callback in self._callbacks:
                        callback()
                finally:
                    optimizer.param_groups = groups
        self.count += 1

    def _classify(self, optimizer: Any, groups: list) -> None:
        """A step that is not plainly a whole update like the last one: a new update, the next part of the current
        one (quirk ``deepspeed_partial_steps``), or DeepSpeed's set-up step (``deepspeed_setup_step``)."""
        home = self._home
        if groups is not home and not deepspeed.part_of(groups, home):
            self._home = home = groups  # a new list (load_state_dict): it is the optimizer's own now
        first, key = _first_tensor(groups, home)
        if (key is not None and id(key) not in self._parts and self._parts
                and deepspeed.later_part(groups, home, first, key)):
            self._parts.add(id(key))
            self._params = None  # an update in parts: each step comes here, where the parts are tracked
            return
        if key is not None and id(key) not in self._parts and deepspeed.setup_step():
            return
        self._params = home[0].get("params") if home and key is not None else None
        self._parts = {id(key)} if key is not None else set()
        self._update(optimizer, groups)

    def _inside_own_step(self, optimizer: Any) -> bool:
        """Whether this hook runs inside a step of the same optimizer (a nested ``step()``); False when the depth
        is left over from a step that raised. Walks the stack: only nested or failed steps come here."""
        code = getattr(type(optimizer).step, "__code__", None)
        running = 0
        frame = sys._getframe(1)
        while frame is not None:
            if frame.f_code is code and frame.f_locals.get("self") is optimizer:
                running += 1
                if running == 2:
                    return True
            frame = frame.f_back
        self._depth = 0
        return False


def _steps_can_nest(cls: type) -> bool:
    """Whether a ``step()`` of ``cls`` may run another ``step()`` of the same optimizer: more than one class of
    its MRO defines one (a subclass's ``step`` calling ``super().step()``, each instrumented by torch once an
    instance of that class exists). Only such optimizers pay for the post-hook that tracks the nesting."""
    steps = set()
    for klass in cls.__mro__:
        step = vars(klass).get("step")
        if step is None or klass is torch.optim.Optimizer:
            continue
        while getattr(step, "hooked", False):  # torch's instrumented wrapper of the class's step
            step = step.__wrapped__
        steps.add(step)
    return len(steps) > 1


def _first_tensor(groups: list, home: list) -> tuple[int, Any]:
    """The index in ``home`` of the first group with params in ``groups``, and its first param."""
    for index, group in enumerate(groups):
        params = group.get("params")
        if params:
            if groups is not home:
                index = next((i for i, own in enumerate(home) if own is group), index)
            return index, params[0]
    return 0, None


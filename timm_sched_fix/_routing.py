"""How a fixed scheduler's own methods reach its timing: a class whose ``step``, ``step_update``, ``state_dict``
and ``load_state_dict`` are :class:`RoutedMethod` descriptors.

The drop-in classes are such classes. A scheduler fixed by ``patch()`` is given one too as its construction
ends (:func:`route`): a subclass of its own class, made once per class, with timm's name, so ``isinstance`` and
the class name are unchanged. Its routing thus lives on the scheduler, not on timm's classes: ``unpatch()``
restores timm's attributes and every patched scheduler stays fixed. Kept free of torch and timm imports, as
``patch()`` must be cheap before timm is imported.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import MethodType
from typing import Any

#: The scheduler attribute holding a fixed scheduler's timing, so copies keep it. Set and read as an attribute,
#: never through ``vars()``: on CPython 3.11 a materialized instance ``__dict__`` makes every attribute lookup of
#: timm's own step code slower (about 20% per call, measured in benchmarks/overhead.py).
TIMING_KEY = "_timm_sched_fix"
#: The methods a fixed scheduler routes to its timing (_timing.py has a routed_* function for each name).
ROUTED = ("step", "step_update", "state_dict", "load_state_dict")


#: The scheduler methods a subclass or an instance may override (base ``Scheduler`` methods of some timm release).
OVERRIDABLE = ("step", "step_update", "_get_lr", "_get_values", "get_epoch_values", "get_update_values",
               "_add_noise", "_calculate_noise", "_is_apply_noise", "update_groups", "state_dict", "load_state_dict")
#: Instance attributes that change what writes v(t): setting or deleting one on a fixed scheduler whose class watches
#: its attributes (:func:`watching_setattr`) makes its timing decide its writer again (``ScheduleTiming.rewrite``).
WATCHED = frozenset(OVERRIDABLE)

#: What each routed method is on a fixed scheduler: a function of the scheduler, bound to it, so that
#: ``CosineLRScheduler(...).state_dict()`` keeps the scheduler alive for the call (its timing holds it weakly).
#: ``timm_sched_fix._timing`` registers them: it is imported before any routing class is made.
ROUTES: dict[str, Any] = {}


class RoutedMethod:
    """A routed method (a descriptor): looked up on a fixed scheduler it calls its timing's method of the same
    name; otherwise (during construction, and for the timing's own calls into the stock method) it is the method
    of the next class, timm's."""

    __timm_sched_fix_route__ = True  # _overrides.stock_method looks past it

    def __set_name__(self, owner: type, name: str) -> None:
        self.owner, self.name, self.route = owner, name, ROUTES[name]

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return getattr(super(self.owner, owner), self.name)
        timing = instance._timm_sched_fix  # TIMING_KEY: the drop-in and routing classes have a default (None)
        if timing is not None and not timing.in_stock_call:
            return MethodType(self.route, instance)
        return getattr(super(self.owner, instance), self.name)


def attribute_changed(scheduler: Any) -> None:
    """An instance attribute named in :data:`WATCHED` was set or deleted on ``scheduler``."""
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is not None:
        timing.rewrite()


def watching_setattr(owner: Callable[[], type]) -> tuple[Callable[..., None], Callable[..., None]]:
    """``__setattr__`` and ``__delattr__`` for a class the fix owns (``owner()`` gives it, once made): they store as
    the next class in the MRO does, then tell the timing when a :data:`WATCHED` name changed. So an instance's own
    method is noticed when it is set (``mock.patch.object``), and the per-update hot path checks nothing per call."""

    def __setattr__(self: Any, name: str, value: Any) -> None:
        super(owner(), self).__setattr__(name, value)
        if name in WATCHED:
            attribute_changed(self)

    def __delattr__(self: Any, name: str) -> None:
        super(owner(), self).__delattr__(name)
        if name in WATCHED:
            attribute_changed(self)

    __setattr__.__timm_sched_fix_watches__ = True  # type: ignore[attr-defined]
    return __setattr__, __delattr__


def watches_attributes(cls: type) -> bool:
    """Whether instances of ``cls`` tell their timing about their own methods (see :func:`watching_setattr`)."""
    return getattr(getattr(cls, "__setattr__", None), "__timm_sched_fix_watches__", False)


class FixedAttributes:
    """What a fixed scheduler has beyond stock timm."""

    @property
    def last_t(self) -> float | None:
        """The schedule index most recently applied; None before any was (or while unknown)."""
        return _require_timing(self).last_t

    def get_last_lr(self) -> list[float]:
        """The LR each param group holds now, one per group (as PyTorch schedulers have it)."""
        return _require_timing(self).get_last_lr()


def _require_timing(scheduler: Any) -> Any:
    timing = getattr(scheduler, TIMING_KEY, None)
    if timing is None:
        raise AttributeError(f"this {type(scheduler).__name__} is not fixed by timm_sched_fix")
    return timing


def routing_namespace(owner: Callable[[], type] | None = None) -> dict[str, Any]:
    """The attributes of a routing class: a fresh descriptor per routed method, and :class:`FixedAttributes`'; with
    ``owner`` (which gives the class once made) also the hooks that watch instance attributes."""
    namespace: dict[str, Any] = {name: RoutedMethod() for name in ROUTED}
    if owner is not None:
        namespace["__setattr__"], namespace["__delattr__"] = watching_setattr(owner)
    namespace[TIMING_KEY] = None  # the timing, set on each fixed instance
    namespace.update(last_t=vars(FixedAttributes)["last_t"], get_last_lr=vars(FixedAttributes)["get_last_lr"])
    return namespace


_routed: dict[type, type] = {}
_routed_lock = threading.Lock()


def routed_class(cls: type) -> type:
    """The routing subclass of ``cls`` for patched schedulers (made once): timm's name, module and qualname,
    and pickled as ``cls`` (its timing puts the routing back on the copy)."""
    if getattr(cls, "__timm_sched_fix_routes__", None) is not None:
        return cls
    with _routed_lock:
        routed = _routed.get(cls)
        if routed is None:
            made: list[type] = []
            namespace = routing_namespace(lambda: made[0])
            namespace.update({
                "__module__": cls.__module__,
                "__qualname__": cls.__qualname__,
                "__doc__": cls.__doc__,
                "__timm_sched_fix_routes__": cls,
                "__timm_sched_fix_dropin__": True,  # patch() leaves it alone, as it does the drop-in classes
                "__reduce_ex__": _reduce_as_routed_class,
            })
            # a single base: CPython allows __class__ assignment only between classes of the same layout chain
            routed = _routed[cls] = type(cls.__name__, (cls,), namespace)
            made.append(routed)
        return routed


def route(scheduler: Any) -> None:
    """Give a patched scheduler its routing class (idempotent). A scheduler allocated as one is faster: on
    CPython 3.11 an object whose class is changed later reads its attributes ~2x slower."""
    cls = type(scheduler)
    routed = routed_class(cls)
    if routed is not cls:
        scheduler.__class__ = routed


def _reduce_as_routed_class(self: Any, protocol: Any) -> Any:
    """Pickle a routed scheduler by timm's class (the routing class is made at run time and cannot be found by
    name); the copy is allocated as that class's routing class."""
    cls = type(self)
    reduced = super(cls, self).__reduce_ex__(protocol)  # (reconstructor, args, state, ...)
    return (new_routed, (cls.__timm_sched_fix_routes__,), *reduced[2:])


def new_routed(cls: type) -> Any:
    """An empty instance of ``cls``'s routing class, for unpickling (as ``copyreg.__newobj__`` makes one)."""
    routed = routed_class(cls)
    return routed.__new__(routed)

"""``patch()``: fix every timm scheduler constructed afterwards, by wrapping timm's classes with wrapt.

Before timm is imported, ``patch()`` only registers a wrapt post-import hook on ``timm.scheduler``
(it imports neither timm nor torch). Once the module is there, the ``Scheduler`` base class and all its
subclasses get a wrapt function wrapper on ``__init__`` and a routing descriptor (a wrapt proxy of the
original) on ``step``, ``step_update``, ``state_dict`` and ``load_state_dict`` (where a class defines them),
and ``Scheduler.__init_subclass__`` instruments classes defined later, user subclasses included.

``unpatch()`` stops fixing schedulers constructed afterwards. The schedulers built while patched stay fixed,
auto mode included: each is given its class's routing class first (:func:`timm_sched_fix._routing.route`, a
subclass with timm's name that routes by itself); then every wrapper is removed with ``wrapt.unwrap_object``,
so timm's attributes are the originals again (identity). (Routing classes are given only then: on CPython 3.11
an object whose class changes reads its attributes ~2x slower, as after timm's own ``state_dict()``.)
"""

from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator
from types import MethodType
from typing import Any

import wrapt

from timm_sched_fix import _routing as routing
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._walk import with_subclasses
from timm_sched_fix.options import DEFAULT_AUTO, DEFAULT_CONVENTION, DEFAULT_ON_LAG, Convention, LagPolicy, Options

_TARGET_MODULE = "timm.scheduler"

_lock = threading.RLock()
_options: Options | None = None  # None while not patched
_wrappers: list[tuple[Any, str, Any]] = []  # (owner, attribute, wrapt handle), in installation order
_fixed: weakref.WeakSet[Any] = weakref.WeakSet()  # schedulers fixed by the patch, routed by timm's classes
_hook_registered = False
_observer: Callable[[Any, Options], None] | None = None  # see observe_constructions


def patch(*, convention: Convention = DEFAULT_CONVENTION, auto: bool = DEFAULT_AUTO,
          on_lag: LagPolicy = DEFAULT_ON_LAG) -> None:
    """Fix every timm scheduler constructed from now on (idempotent).

    Calling it again with other options changes the options for schedulers constructed afterwards. With
    ``auto=True``, a scheduler on an optimizer whose parameter updates cannot be counted takes explicit calls
    instead (a ``ScheduleCountWarning`` says so once).

    Raises ``ValueError`` for an unknown ``convention`` or ``on_lag`` and ``TypeError`` for a non-bool ``auto``,
    before anything is patched. Below the supported torch range it warns (``RuntimeWarning``) and patches nothing.
    """
    global _options, _hook_registered
    options = Options(convention=convention, auto=auto, on_lag=on_lag)
    with _lock:
        _options = options
        if not _hook_registered:
            _hook_registered = True
            wrapt.register_post_import_hook(_on_timm_scheduler_imported, _TARGET_MODULE)
        elif not _wrappers:
            import sys

            module = sys.modules.get(_TARGET_MODULE)
            if module is not None:
                _instrument(module)


def unpatch() -> None:
    """Undo ``patch()``: timm's attributes are the originals again and schedulers constructed from now on are
    stock; the schedulers built while patched stay fixed."""
    global _options
    with _lock:
        _options = None
        for scheduler in list(_fixed):
            routing.route(scheduler)
        _fixed.clear()
        while _wrappers:
            owner, attribute, handle = _wrappers.pop()
            wrapt.unwrap_object(owner, attribute, handle, missing_ok=True)


def is_patched() -> bool:
    """Whether ``patch()`` is in effect."""
    return _options is not None


def patch_options() -> Options | None:
    """The options of the ``patch()`` in effect, or None."""
    return _options


@contextlib.contextmanager
def patched(*, convention: Convention = DEFAULT_CONVENTION, auto: bool = DEFAULT_AUTO,
            on_lag: LagPolicy = DEFAULT_ON_LAG) -> Iterator[None]:
    """``patch()`` for the duration of a ``with`` block; the previous patch state is restored after. Schedulers
    built inside stay fixed after the block. Raises what ``patch()`` raises, before the block runs."""
    with _lock:
        previous = _options
    patch(convention=convention, auto=auto, on_lag=on_lag)
    try:
        yield
    finally:
        if previous is None:
            unpatch()
        else:
            patch(convention=previous.convention, auto=previous.auto, on_lag=previous.on_lag)


def observe_constructions(
    observer: Callable[[Any, Options], None] | None,
) -> Callable[[Any, Options], None] | None:
    """Call ``observer(scheduler, options)`` for every scheduler ``patch()`` fixes from now on (None: stop), right
    after timm's constructor and before the fix pre-advances it (``--report`` reads what stock timm left).
    Returns the observer it replaces."""
    global _observer
    with _lock:
        previous, _observer = _observer, observer
    return previous


def _on_timm_scheduler_imported(module: Any) -> None:
    with _lock:
        if _options is not None and not _wrappers:
            _instrument(module)


def _instrument(module: Any) -> None:
    from timm.scheduler.scheduler import Scheduler  # not compat.Scheduler: compat may be importing timm right now

    from timm_sched_fix import _compat as compat
    from timm_sched_fix import _timing  # noqa: F401 - _timing registers _routing.ROUTES (timm, so torch, is imported)

    if _refuse_unsupported_torch(compat.unsupported_torch()):
        return

    for name, routed in _ROUTED_METHODS.items():
        routed.route = staticmethod(routing.ROUTES[name])
    _wrap(Scheduler, "__init_subclass__", _instrument_new_subclass)
    for cls in with_subclasses(Scheduler):
        _instrument_class(cls)
    for attribute in ("last_t", "get_last_lr"):
        added = _add_attribute(Scheduler, attribute, vars(routing.FixedAttributes)[attribute])
        _wrappers.append((Scheduler, attribute, added))
    # a fixed scheduler's timing hears of an instance's own methods when they are set (routing.watching_setattr)
    for attribute, hook in zip(("__setattr__", "__delattr__"), routing.watching_setattr(lambda: Scheduler)):
        if attribute not in vars(Scheduler):
            _wrappers.append((Scheduler, attribute, _add_attribute(Scheduler, attribute, hook)))


def _refuse_unsupported_torch(message: str | None) -> bool:
    """Below the supported torch range: warn (``RuntimeWarning``) and stay unpatched, so timm runs stock. A warning,
    not an error: ``patch()`` is what the environment switch, the runner and ``timm_sched_fix.auto`` call, and it
    may only find out at ``import timm``, where raising would stop a script that runs with stock timm."""
    global _options
    if message is None:
        return False
    _options = None
    warnings.warn(f"{message}. patch() does nothing: timm's schedulers stay stock", RuntimeWarning, stacklevel=4)
    return True


def _instrument_class(cls: type) -> None:
    if getattr(cls, "__timm_sched_fix_dropin__", False):
        return  # drop-in and routing classes route by themselves
    if "__init__" in vars(cls):
        _wrap(cls, "__init__", _constructor(cls))
    for name in routing.ROUTED:
        if name in vars(cls):
            routed = _ROUTED_METHODS[name](vars(cls)[name])
            wrapt.apply_patch(cls, name, routed)
            _wrappers.append((cls, name, routed))


def _wrap(owner: Any, attribute: str, wrapper: Any) -> None:
    _wrappers.append((owner, attribute, wrapt.wrap_function_wrapper(owner, attribute, wrapper)))


def _add_attribute(owner: type, attribute: str, value: Any) -> _AddedAttribute:
    """Add an attribute timm does not have; ``unwrap_object`` removes it again (it wraps ``MISSING``)."""
    added = _AddedAttribute(wrapt.MISSING)
    added._self_value = value
    wrapt.apply_patch(owner, attribute, added)
    return added


class _AddedAttribute(wrapt.BaseObjectProxy):
    """A descriptor standing where ``Scheduler`` had no attribute, serving ``_self_value``."""

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        return self._self_value.__get__(instance, owner)


# -- the wrappers: thin, everything is decided in _timing.py (made fixed by _attach.py) ----------------


def _constructor(cls: type) -> Any:
    def construct_fixed(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        from timm_sched_fix._attach import CONSTRUCTING_KEY, construct
        from timm_sched_fix._timing import timing_of

        options = _options
        if options is None or (not hasattr(instance, CONSTRUCTING_KEY) and _defines_init(type(instance)) is not cls):
            # unpatched while this constructor was waiting, or the outermost constructor (a subclass's)
            # began before patch(): the scheduler is not half-fixed before its own __init__ has finished
            wrapped(*args, **kwargs)
            return
        construct(instance, wrapped, args, kwargs, options, owner=Adapter.PATCH, observer=_observer)
        timing = timing_of(instance)
        if timing is not None and timing.owner is Adapter.PATCH:
            with _lock:
                if _options is None:  # unpatch() ran while this constructor did: it routes by itself, as the rest
                    routing.route(instance)
                else:
                    _fixed.add(instance)

    return construct_fixed


def _defines_init(cls: type) -> type | None:
    """The class whose ``__init__`` constructs instances of ``cls``."""
    return next((klass for klass in cls.__mro__ if "__init__" in vars(klass)), None)


class _RoutedMethod(wrapt.BaseObjectProxy):
    """A routed method of a timm class under ``patch()``: on a fixed scheduler it is the routed function of the
    same name (:data:`timm_sched_fix._routing.ROUTES`) bound to it, on any other instance (and for the timing's own
    calls into the stock method) the original.

    A descriptor rather than a ``wrapt.FunctionWrapper``, whose bound wrapper per attribute access costs more
    than a whole stock ``step_update`` at one param group. One subclass per method name: its settings are read
    from the class, as attributes of a wrapt proxy itself cost ~0.1 µs each to read."""

    __timm_sched_fix_patched_method__ = True  # _overrides.stock_method looks past it to the original
    name: str  # the routed method
    route: Any  # routing.ROUTES[name], set when timm's classes are instrumented

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is not None:
            try:
                timing = instance._timm_sched_fix  # routing.TIMING_KEY (an attribute read is faster than getattr())
            except AttributeError:
                timing = None
            if timing is not None and not timing.in_stock_call:
                return MethodType(type(self).route, instance)
        return self.__wrapped__.__get__(instance, owner)


_ROUTED_METHODS = {name: type(f"_Routed_{name}", (_RoutedMethod,), {"name": name}) for name in routing.ROUTED}


def _instrument_new_subclass(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
    wrapped(*args, **kwargs)
    with _lock:
        if _options is not None:
            _instrument_class(wrapped.__self__)

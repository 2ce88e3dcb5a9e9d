"""Drop-in replacements for the installed timm's scheduler classes and factories, fixed from construction.

``from timm_sched_fix import CosineLRScheduler`` gives a subclass of timm's ``CosineLRScheduler`` with the
same constructor plus the keyword options ``convention``, ``auto`` and ``on_lag``. One class is made for
every scheduler class the installed timm exports, so WSD appears only where timm has it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import timm.scheduler

from timm_sched_fix import _compat as compat
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._attach import attach, construct
from timm_sched_fix._proxy import wrap
from timm_sched_fix._routing import FixedAttributes, RoutedMethod, watching_setattr
from timm_sched_fix._timing import ScheduleTiming, counted_options
from timm_sched_fix._writer import group_values
from timm_sched_fix.options import DEFAULT_AUTO, DEFAULT_CONVENTION, DEFAULT_ON_LAG, Options

_OPTION_PARAMETERS = [
    inspect.Parameter("convention", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_CONVENTION),
    inspect.Parameter("auto", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_AUTO),
    inspect.Parameter("on_lag", inspect.Parameter.KEYWORD_ONLY, default=DEFAULT_ON_LAG),
]


class DropInScheduler(FixedAttributes):
    """Base of the drop-in classes: construction fixes and pre-advances, routed methods go to the timing."""

    __timm_sched_fix_dropin__ = True  # patch() leaves these classes alone
    _timm_sched_fix: ScheduleTiming | None = None  # the timing (timing.TIMING_KEY), set by construct()

    def __init__(self, *args: Any, convention: str = DEFAULT_CONVENTION, auto: bool = DEFAULT_AUTO,
                 on_lag: str = DEFAULT_ON_LAG, **kwargs: Any):
        options = Options(convention=convention, auto=auto, on_lag=on_lag)  # type: ignore[arg-type]
        construct(self, super().__init__, args, kwargs, options, owner=Adapter.DROPIN)

    step = RoutedMethod()
    step_update = RoutedMethod()
    state_dict = RoutedMethod()
    load_state_dict = RoutedMethod()
    __setattr__, __delattr__ = watching_setattr(lambda: DropInScheduler)  # an instance's own methods, when set


def _with_options(signature: inspect.Signature) -> inspect.Signature:
    parameters = list(signature.parameters.values())
    tail = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    head = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    return signature.replace(parameters=head + _OPTION_PARAMETERS + tail)


def _drop_in_class(name: str, timm_class: type) -> type:
    cls = type(name, (DropInScheduler, timm_class), {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"timm's {name}, fixed: every optimizer step runs with the LR the schedule defines.",
    })
    cls.__signature__ = _with_options(inspect.signature(timm_class))  # type: ignore[attr-defined]
    return cls


def _fixed_factory(stock: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(stock)
    def factory(*args: Any, convention: str = DEFAULT_CONVENTION, auto: bool = DEFAULT_AUTO,
                on_lag: str = DEFAULT_ON_LAG, **kwargs: Any) -> Any:
        options = Options(convention=convention, auto=auto, on_lag=on_lag)  # type: ignore[arg-type]
        compat.require_supported_torch()
        optimizer, _ = compat.construction_args(stock, args, kwargs)
        counted_options(optimizer, options, owner=Adapter.FACTORY)  # refuse auto=True before anything is built
        groups_before = group_values(optimizer)
        result = compat.for_installed_torch(stock)(*args, **kwargs)
        scheduler = result[0] if isinstance(result, tuple) else result
        if scheduler is None:  # sched='none'
            return result
        attach(scheduler, options, owner=Adapter.FACTORY, groups_before=groups_before)
        fixed = wrap(scheduler, convention=options.convention, auto=options.auto, on_lag=options.on_lag)
        return (fixed, *result[1:]) if isinstance(result, tuple) else fixed

    factory.__signature__ = _with_options(inspect.signature(stock))  # type: ignore[attr-defined]
    factory.__module__ = __name__
    factory.__doc__ = (f"timm's ``{stock.__name__}``, same arguments and return value, with the scheduler fixed "
                       "(a :class:`~timm_sched_fix.FixedScheduler`; ``None`` for ``sched='none'``, as in timm), "
                       "plus the keyword options ``convention``, ``auto`` and ``on_lag``. Raises what timm's raises, "
                       "and ``ValueError``/``TypeError`` for an unknown option before anything is built.")
    return factory


SCHEDULER_CLASSES: dict[str, type] = {name: _drop_in_class(name, cls) for name, cls in compat.scheduler_classes().items()}
globals().update(SCHEDULER_CLASSES)

FACTORIES: dict[str, Callable[..., Any]] = {
    name: _fixed_factory(getattr(timm.scheduler, name))
    for name in ("create_scheduler", "create_scheduler_v2")
    if hasattr(timm.scheduler, name)
}
globals().update(FACTORIES)

"""The user's own methods of a scheduler: a subclass's overrides and an instance's attributes, and whether the fix
knows what they mean.

The fix changes *when* and *with which index* a scheduler's own methods run, never *which* run. It writes v(t)
through the scheduler's own ``step``/``step_update`` (a subclass's override included, called with only the
arguments its signature takes), and timm's code calls the other methods (``_get_lr``, the noise methods, ...)
through the instance as usual. Where it cannot know what an override means, :func:`unknown_override` says why,
and that scheduler runs exactly as stock timm runs it (the adapters do not fix it; one warning says so).

Decided once per scheduler, from the source of the override (``ast``): an override of the schedule's own call
(``step`` per epoch, ``step_update`` per update) is understood when it passes its index, unchanged, to the same
method of a base class (``super().step(epoch, metric)``), whatever it does besides; a method of the other unit, an
index it changes or counts by itself, a call of the other unit, or a signature that cannot take an index is not.
Kept free of torch and timm imports.
"""

from __future__ import annotations

import ast
import gc
import inspect
import textwrap
from collections.abc import Callable
from typing import Any

from timm_sched_fix import _notices as notices
from timm_sched_fix._routing import OVERRIDABLE, ROUTES
from timm_sched_fix.exceptions import ScheduleOverrideWarning

_INDEX_NAMES = {"step": "epoch", "step_update": "num_updates"}



def _is_route(attribute: Any) -> bool:
    """A routing descriptor of a drop-in or routing class (``routing.RoutedMethod``)."""
    return getattr(attribute, "__timm_sched_fix_route__", False)


def _unwrapped(attribute: Any) -> Any:
    """Past every descriptor this package puts on a class method: patch()'s routing, audit's observer."""
    while getattr(type(attribute), "__timm_sched_fix_patched_method__", False):
        attribute = attribute.__wrapped__
    return attribute


def class_method(cls: type, name: str) -> tuple[type, Any]:
    """The class and function that a fixed scheduler of class ``cls`` runs as its own ``name``: past patch()'s
    routing (which stands in for the function it wraps) and, where a drop-in or routing class routes ``name``, the
    first definition below it (a subclass's method above it runs as the caller of the routed one, not inside it).
    ``AttributeError`` when no class defines it."""
    mro = cls.__mro__
    for i, klass in enumerate(mro):
        if _is_route(vars(klass).get(name)):
            mro = mro[i + 1:]
            break
    for klass in mro:
        attribute = vars(klass).get(name)
        if attribute is not None and not _is_route(attribute):
            return klass, _unwrapped(attribute)
    raise AttributeError(f"{cls.__qualname__} has no {name}()")


def stock_method(cls: type, name: str) -> Callable[..., Any]:
    """The scheduler class's own ``name`` method, past the adapters' routing methods and wrappers (a subclass's
    override included: see :func:`class_method`)."""
    return class_method(cls, name)[1]


def is_users(klass: type) -> bool:
    """A class defined outside timm and this package (a routing class stands for the class it routes)."""
    klass = getattr(klass, "__timm_sched_fix_routes__", None) or klass
    return (klass.__module__ or "").split(".")[0] not in ("timm", "timm_sched_fix")


#: The methods through which timm draws LR noise.
NOISE_METHODS = ("_add_noise", "_calculate_noise", "_is_apply_noise")


def owns_noise(scheduler: Any) -> bool:
    """Whether the user's code decides the LR noise (a subclass's or the instance's own noise method, of those the
    installed timm draws its noise through: timm 0.4.12 has only ``_add_noise``): timm's redraw loop, which
    undrawable settings would spin in, may then never run, so those settings are the user's business."""
    cls = type(scheduler)
    timms = tuple(name for name in NOISE_METHODS
                  if any(name in vars(klass) and not is_users(klass) for klass in cls.__mro__))
    return defines_own(cls, timms) or any(instance_override(scheduler, name) is not None for name in timms)


def defines_own(cls: type, names: tuple[str, ...]) -> bool:
    """Whether a user's class in ``cls``'s MRO defines one of ``names`` (above the fix's routing or below it)."""
    return any(name in vars(klass) and is_users(klass) for klass in cls.__mro__ for name in names)


def instance_override(scheduler: Any, name: str) -> Any | None:
    """The instance's own ``name`` (an instance attribute, or a ``mock.patch.object``), else None.

    Whatever a class-level descriptor returns (a bound method, patch()'s route, the audit's recording call) is a new
    object each lookup; an instance attribute is the object the instance holds, which ``gc.get_referents`` lists
    (its own values, or its ``__dict__``). Not read through ``vars()``: a materialized instance dict slows timm's own
    attribute reads on CPython 3.11."""
    try:
        value = getattr(scheduler, name)
    except AttributeError:
        return None
    for referent in gc.get_referents(scheduler):
        if referent is value or (type(referent) is dict and referent.get(name, _MISSING) is value):
            return value
    return None


_MISSING = object()


def unknown_override(scheduler: Any, on_epochs: bool) -> tuple[str, str] | None:
    """``(method, reason)`` for the first of the scheduler's own methods whose meaning the fix cannot know, else None.
    Such a scheduler must run as stock timm runs it."""
    unit, other = ("step", "step_update") if on_epochs else ("step_update", "step")
    cls = type(scheduler)
    for name in OVERRIDABLE:
        if instance_override(scheduler, name) is not None and name in ROUTES:
            return name, "the instance has its own " + name
    for name in OVERRIDABLE:
        try:
            klass, function = class_method(cls, name)
        except AttributeError:
            continue
        if not is_users(klass):
            continue
        if name == other:
            return name, (f"a {'per-epoch' if on_epochs else 'per-update'} schedule runs {unit}(); the fix cannot tell "
                          f"what {klass.__qualname__}.{other}() does instead")
        reason = _calls_a_step(function) if name != unit else _passes_index_through(function, unit)
        if reason is not None:
            return name, reason
    return None


def runs_above_the_fix(cls: type) -> bool:
    """Whether a user's ``step``/``step_update`` comes before the fix's routing in ``cls``'s MRO: a subclass of a
    drop-in class, or a mixin's method that ``patch()`` did not instrument. Such a scheduler is given a routing class
    on top (``routing.route``), so that the fix calls the override rather than the override calling the fix."""
    for name in ("step", "step_update"):
        for klass in cls.__mro__:
            attribute = vars(klass).get(name)
            if attribute is None:
                continue
            if _is_route(attribute) or getattr(type(attribute), "__timm_sched_fix_patched_method__", False) \
                    or not is_users(klass):
                break
            if any(_is_route(vars(below).get(name))
                   or getattr(type(vars(below).get(name)), "__timm_sched_fix_patched_method__", False)
                   for below in cls.__mro__):
                return True
            break
    return False


def warn_unknown(scheduler: Any, method: str, reason: str, stacklevel: int) -> None:
    """The one warning for a scheduler the fix leaves as stock timm runs it (see :func:`unknown_override`)."""
    name = type(scheduler).__qualname__
    unit = "step" if method in ("step", "get_epoch_values") else "step_update"
    notices.emit(
        f"timm_sched_fix leaves this {name} as stock timm runs it (not fixed): {name}.{method}() is the "
        f"user's own and {reason}. To get the fix, let {method}() pass its index unchanged to the base class "
        f"(super().{unit}(index, metric)) and do its own work around that call, or move a change of the schedule's "
        "values into _get_lr(); then call the scheduler as timm expects (or wrap a scheduler without this override "
        "in timm_sched_fix.TorchScheduler, which counts the calls itself)",
        ScheduleOverrideWarning, stacklevel + 1)


def _function_node(function: Any) -> ast.FunctionDef | ast.AsyncFunctionDef | str:
    """The function's definition in its source, or why it cannot be read."""
    function = inspect.unwrap(getattr(function, "__func__", function))
    try:
        source = textwrap.dedent(inspect.getsource(function))
        node = ast.parse(source).body[0]
    except (OSError, TypeError, SyntaxError, IndexError):
        return "its source cannot be read"
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return "it is no plain function"
    return node


def _calls_a_step(function: Any) -> str | None:
    node = _function_node(function)
    if isinstance(node, str):
        return None  # a method timm's code calls itself (a _get_lr, a noise method): its meaning is its result
    for call in ast.walk(node):
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr in ("step",
                                                                                                      "step_update"):
            return f"it calls {call.func.attr}() itself"
    return None


def _is_super_call(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "super"


def _passes_index_through(function: Any, name: str) -> str | None:
    """None when the override of the schedule's own call ``name`` passes its index unchanged to the same method of
    a base class; else why the fix cannot call it for the user."""
    reason = _signature_problem(function)
    if reason is not None:
        return reason
    node = _function_node(function)
    if isinstance(node, str):
        return node
    positional = node.args.posonlyargs + node.args.args
    if len(positional) >= 2:
        index, starred = positional[1].arg, False
    else:
        index, starred = node.args.vararg.arg, True  # type: ignore[union-attr]
    other = "step_update" if name == "step" else "step"
    passes = False
    for child in ast.walk(node):
        if isinstance(child, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.NamedExpr)):
            targets = child.targets if isinstance(child, ast.Assign) else [child.target]
            if any(isinstance(target, ast.Name) and target.id == index for target in targets):
                return f"it changes its index ({index}) before use"
        if not (isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute)):
            continue
        if child.func.attr == other:
            return f"it calls {other}() itself"
        if child.func.attr != name:
            continue
        owner, args = child.func.value, list(child.args)
        if not _is_super_call(owner):
            if not (isinstance(owner, ast.Name) and args and isinstance(args[0], ast.Name) and args[0].id == "self"):
                return f"it calls {name}() on something other than its base class"
            args = args[1:]
        first: ast.AST | None = args[0] if args else next(
            (keyword.value for keyword in child.keywords if keyword.arg == _INDEX_NAMES[name]), None)
        if starred and isinstance(first, ast.Starred):
            first = first.value
        if not (isinstance(first, ast.Name) and first.id == index):
            return f"it passes {name}() another index than its own ({index}): it counts or shifts by itself"
        passes = True
    if not passes:
        return f"it does not pass its index to the base class's {name}()"
    return None


def _signature_problem(function: Any) -> str | None:
    try:
        parameters = list(inspect.signature(function).parameters.values())[1:]  # past self
    except (TypeError, ValueError):
        return "its signature cannot be read"
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if not positional and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return "it takes no index: it counts by itself"
    required = [p for p in parameters[1:] if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        return f"it needs {', '.join(p.name for p in required)} besides the index"
    return None


def writer_for(function: Callable[..., Any]) -> Callable[[Any, float, Any], None]:
    """``(scheduler, t, metric)`` calling the user's override of the schedule's own call with only the arguments its
    signature takes (the metric positionally where it takes a second argument, by keyword where it has ``metric``
    or ``**kwargs``, else not at all). Checked by :func:`unknown_override` first."""
    parameters = list(inspect.signature(function).parameters.values())[1:]
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return function
    if any(p.name == "metric" or p.kind is p.VAR_KEYWORD for p in parameters):
        return lambda scheduler, t, metric: function(scheduler, t, metric=metric)
    return lambda scheduler, t, metric: function(scheduler, t)

"""timm releases: the base ``Scheduler.step_update`` as the fix repeats it (checked by fingerprint per release) and
timm's LR noise draw, which changed in 1.0.31 (``noise_std``)."""

from __future__ import annotations

import ast
import functools
import hashlib
import inspect
import operator
import textwrap
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from timm.scheduler.scheduler import Scheduler

from timm_sched_fix import _noise as noise


class BaseStepUpdate(NamedTuple):
    """How a timm release's base ``Scheduler.step_update`` writes v(t), as far as :func:`inlined_step_update`
    repeats it. Only releases whose base code was checked against it (by fingerprint) are inlined."""

    releases: str
    values_from_get_values: bool  # 0.9+: _get_values(t, on_epoch=False) -> _get_lr(t); before: get_update_values(t)
    applies_lr_scale: bool  # update_groups multiplies by a group's lr_scale (0.6+)
    noise_scaled_by_std: bool  # _calculate_noise multiplies a normal draw by noise_std (1.0.31+)


#: The base ``Scheduler`` methods a per-update ``step_update`` runs besides the schedule math.
_BASE_UPDATE_METHODS = ("step_update", "_get_values", "update_groups", "_add_noise", "_is_apply_noise",
                        "_calculate_noise")

#: :func:`base_step_update_fingerprint` of the timm releases the inlined ``step_update`` was checked against
#: (tests/test_inlined_writer.py, on every release of the version matrix). Every release from 0.4.12 to 1.0.31
#: has one of these four (read off each release's wheel); a release whose base code differs keeps timm's own
#: ``step_update`` until it is checked and added here.
KNOWN_BASE_STEP_UPDATES: dict[str, BaseStepUpdate] = {
    "b49100957f13128e": BaseStepUpdate("0.4.12 - 0.5.4", False, False, False),
    "5850e4f96f29dfbe": BaseStepUpdate("0.6.5 - 0.6.13", False, True, False),
    "2a609bf454ec9e8c": BaseStepUpdate("0.9.0 - 1.0.30", True, True, False),
    "23bb09b0d46b9a94": BaseStepUpdate("1.0.31", True, True, True),
}


def base_step_update_fingerprint() -> str | None:
    """A hash of the bodies of the installed base ``Scheduler``'s per-update methods (their AST, so comments,
    formatting and type hints do not count); None where the source cannot be read."""
    parts = []
    for name in _BASE_UPDATE_METHODS:
        function = _unwrapped(vars(Scheduler).get(name))
        if function is None:
            parts.append(f"{name}:")
            continue
        try:
            source = textwrap.dedent(inspect.getsource(function))
        except (OSError, TypeError):
            return None
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        parts.append(f"{name}:{ast.dump(ast.Module(body=body, type_ignores=[]))}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


@functools.cache
def installed_base_step_update() -> BaseStepUpdate | None:
    """The installed timm's entry of :data:`KNOWN_BASE_STEP_UPDATES`, or None (then nothing is inlined)."""
    fingerprint = base_step_update_fingerprint()
    return None if fingerprint is None else KNOWN_BASE_STEP_UPDATES.get(fingerprint)


#: Base methods whose work :func:`inlined_step_update` does itself; a class that overrides any of them keeps
#: its own ``step_update`` (through :func:`stock_writer`).
_INLINED_METHODS = ("update_groups", "_add_noise", "_is_apply_noise", "_calculate_noise")


def _unwrapped(function: Any) -> Any:
    """Past every wrapper (patch()'s routing, audit's observer): timm's own function."""
    while hasattr(function, "__wrapped__"):
        function = function.__wrapped__
    return function


def inlined_step_update(scheduler: Scheduler, stock_method: Callable[..., Any],
                        check_instance: bool = True) -> Callable[[Scheduler, float, Any], None] | None:
    """The base ``Scheduler.step_update(t, metric)`` of the installed timm as one function, bit-identical to it:
    the same values from the schedule's own methods, the same noise, the same param-group writes.

    It saves the per-call method dispatch, and draws the noise from one reused ``torch.Generator`` instead of a
    new one per call (``manual_seed`` resets it fully, so the draws are the same). None when the scheduler's class
    overrides ``step_update`` (``stock_method``, the class's own) or a method it calls besides the schedule math.
    The function ``(scheduler, t, metric)`` is made for ``scheduler`` and called with it (a fixed scheduler keeps
    its writer, which must not hold it). With ``check_instance`` it checks on every call whether the instance has its
    own of the methods timm's ``step_update`` runs (then it calls timm's ``step_update``, which calls them): for a
    scheduler whose class does not tell its timing when one is set (:func:`timm_sched_fix._routing.watching_setattr`).
    """
    values_of = _update_values_function(scheduler, stock_method)
    if values_of is None:
        return None
    generator = torch.Generator()
    base = installed_base_step_update()
    applies_lr_scale, scaled_by_std = base.applies_lr_scale, base.noise_scaled_by_std  # type: ignore[union-attr]
    cls = type(scheduler)
    # with check_instance, the values come through the instance (a call costs no more than the function's): an
    # instance's own _get_lr or get_update_values is called as timm's code calls it; the other methods are checked
    through = "_get_lr" if values_of is getattr(cls, "_get_lr", None) and base.values_from_get_values else (
        "get_update_values" if values_of is getattr(cls, "get_update_values", None) else None)
    own_methods, class_methods = _instance_method_check(cls, through)
    stock_step_update = _unwrapped(stock_method)
    calculate_noise = getattr(cls, "_calculate_noise", None)
    set_attribute = object.__setattr__ if getattr(cls.__setattr__, "__timm_sched_fix_watches__", False) else setattr

    def step_update(scheduler: Scheduler, t: float, metric: Any) -> None:
        if check_instance:
            try:  # an instance's own method (mock.patch.object, an attribute set at any time): timm's code calls it
                instance_overrides = own_methods(scheduler) != class_methods
            except AttributeError:  # an attribute without __func__: a plain function or a mock
                instance_overrides = True
            if instance_overrides:
                stock_step_update(scheduler, t, metric)
                return
        if scheduler.metric is not metric:
            set_attribute(scheduler, "metric", metric)  # past the watching hook: "metric" is no method
        if not check_instance or through is None:
            values = values_of(scheduler, t)
        elif through == "_get_lr":
            values = scheduler._get_lr(t)
        else:
            values = scheduler.get_update_values(t)
        if values is None:
            return
        noise_range = scheduler.noise_range_t
        if noise_range is not None and _noise_applies(noise_range, t):
            if check_instance and calculate_noise is not None and \
                    getattr(scheduler._calculate_noise, "__func__", None) is not calculate_noise:
                noise = scheduler._calculate_noise(t)  # the instance's own
            else:
                noise = _noise(scheduler, generator, t, scaled_by_std)
            values = [value + value * noise for value in values]
        groups = scheduler.optimizer.param_groups
        if type(values) is not list and not isinstance(values, (list, tuple)):  # the type test is the fast part
            values = [values] * len(groups)
        field = scheduler.param_group_field
        if len(groups) == 1 and values:  # the common case without zip's iterator (~0.1 µs, 6% of a stock call)
            group, value = groups[0], values[0]
            group[field] = value * group["lr_scale"] if applies_lr_scale and "lr_scale" in group else value
            return
        for group, value in zip(groups, values):
            group[field] = value * group["lr_scale"] if applies_lr_scale and "lr_scale" in group else value

    return step_update


def _instance_method_check(cls: type, through: str | None) -> tuple[Callable[[Any], tuple], tuple]:
    """``(get, expected)``: ``get(scheduler)`` gives the functions behind the base methods the inlined ``step_update``
    does not call through the instance (one C call, ``operator.attrgetter``), ``expected`` the class's; they differ
    when the instance has its own. ``_calculate_noise`` is checked where noise is drawn."""
    names = [name for name in ("_add_noise", "_is_apply_noise", "update_groups") if hasattr(cls, name)]
    if through is None:
        names += [name for name in ("_get_lr", "get_update_values") if hasattr(cls, name)]
    if hasattr(cls, "_get_values"):
        names.append("_get_values")
    return operator.attrgetter(*(f"{name}.__func__" for name in names)), tuple(getattr(cls, name) for name in names)


def update_schedule_values(scheduler: Scheduler, stock_method: Callable[..., Any]) -> Callable[[float], Any] | None:
    """``t -> [v(t) per base value]`` of a per-update schedule, noise included, without writing param groups:
    what the stock ``step_update(t)`` computes before ``update_groups`` (so before ``lr_scale``), bit for bit.
    None under the same conditions as :func:`inlined_step_update`."""
    values_of = _update_values_function(scheduler, stock_method)
    if values_of is None:
        return None
    generator = torch.Generator()
    scaled_by_std = installed_base_step_update().noise_scaled_by_std  # type: ignore[union-attr]

    def values_at(t: float) -> list[float] | None:
        values = values_of(scheduler, t)
        noise_range = scheduler.noise_range_t
        if values is not None and noise_range is not None and _noise_applies(noise_range, t):
            noise = _noise(scheduler, generator, t, scaled_by_std)
            values = [value + value * noise for value in values]
        return values

    return values_at


def _update_values_function(scheduler: Scheduler, stock_method: Callable[..., Any]) -> Callable[[Any, float], Any] | None:
    """The schedule's own ``(scheduler, t) -> values`` for a per-update schedule (unbound, so that what holds it
    does not hold the scheduler), or None when the class overrides ``step_update`` (``stock_method``, the
    class's own) or a base method it calls besides the schedule math."""
    cls = type(scheduler)
    base = installed_base_step_update()
    if base is None or _unwrapped(stock_method) is not _unwrapped(vars(Scheduler)["step_update"]):
        return None
    if any(getattr(cls, name, None) is not getattr(Scheduler, name, None) for name in _INLINED_METHODS):
        return None
    if not base.values_from_get_values:
        return cls.get_update_values
    if cls._get_values is Scheduler._get_values:
        return cls._get_lr  # _get_values(t, on_epoch=False) of a per-update schedule
    get_values = cls._get_values
    return lambda scheduler, t: get_values(scheduler, t, on_epoch=False)


def _noise_applies(noise_range: Any, t: float) -> bool:
    """timm's ``_is_apply_noise`` for a ``noise_range_t`` that is not None."""
    if isinstance(noise_range, (list, tuple)):
        return noise_range[0] <= t < noise_range[1]
    return t >= noise_range


def _noise(scheduler: Scheduler, generator: torch.Generator, t: float, scaled_by_std: bool) -> float:
    """timm's ``_calculate_noise`` (0.6+; inline in ``_add_noise`` before), drawing from ``generator``; its
    resampling loop bounded (``ValueError`` past :data:`MAX_NOISE_DRAWS`, where timm's spins)."""
    generator.manual_seed(scheduler.noise_seed + t)
    if scheduler.noise_type == "normal":
        scale = scheduler.noise_std if scaled_by_std else 1.0
        for _ in range(MAX_NOISE_DRAWS):  # timm resamples until the noise is within noise_pct
            noise = torch.randn(1, generator=generator).item() * scale
            if abs(noise) < scheduler.noise_pct:
                return noise
        check_noise(functools.partial(getattr, scheduler), type(scheduler).__name__)
        raise ValueError(f"no LR noise within noise_pct={scheduler.noise_pct!r} in {MAX_NOISE_DRAWS} draws; "
                         "no LR was changed")
    return 2 * (torch.rand(1, generator=generator).item() - 0.5) * scheduler.noise_pct


#: Where the fix's own noise draw gives up (a chance of ``exp(-20)`` at the smallest chance it builds for).
MAX_NOISE_DRAWS = 20 * round(1 / noise.MIN_NOISE_ACCEPTANCE)


def _noise_scaled_by_std() -> bool:
    base = installed_base_step_update()
    if base is not None:
        return base.noise_scaled_by_std
    try:
        return "noise_std" in inspect.getsource(_unwrapped(getattr(Scheduler, "_calculate_noise", None)))
    except (OSError, TypeError):
        return True


def check_noise(get: Callable[..., Any], owner: str) -> None:
    """``ValueError`` saying why, for LR noise that can never be drawn: timm's normal noise is redrawn until
    ``|noise| < noise_pct`` (``noise_std`` scales the draw from timm 1.0.31 on), which ``noise_pct <= 0`` never
    meets and a ``noise_std`` far above ``noise_pct`` practically never (below :data:`timm_sched_fix._noise.MIN_NOISE_ACCEPTANCE` per
    draw). ``get(name, default)`` reads the scheduler's attribute or a state dict's value. Nothing for noise that is
    off (``noise_range_t=None``) or uniform, or for values that are no numbers (timm's own error then)."""
    if get("noise_range_t", None) is None or get("noise_type", "normal") != "normal":
        return
    pct, std = get("noise_pct", 0.67), get("noise_std", 1.0)
    try:
        scale = abs(float(std)) if _noise_scaled_by_std() else 1.0
        limit = float(pct)
    except (TypeError, ValueError):
        return
    acceptance = noise.acceptance(limit, scale)
    if not acceptance >= noise.MIN_NOISE_ACCEPTANCE:
        raise ValueError(
            f"{owner}: LR noise that can never be drawn (noise_pct={pct!r}, noise_std={std!r}): timm redraws a normal "
            f"noise until |noise| < noise_pct, which a draw meets with probability {acceptance:.3g}, so every step "
            "with noise would spin. Use noise_pct > 0 (timm's default 0.67) and a noise_std of its order (default "
            "1.0), or noise_range_t=None for no noise; nothing was changed"
        )


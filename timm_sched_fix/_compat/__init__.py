"""Everything that differs between timm releases, between torch releases, and between timm and torch lives here.

Each quirk is named with the timm or torch versions it applies to. The rest of the package asks this
module instead of testing versions itself. timm's scheduler classes and factories are looked up as optional
(timm deprecates and removes them: PlateauLRScheduler is deprecated in 1.0.31); only the base ``Scheduler`` is
required.

Past 400 lines as one piece on purpose: it is the one place a new timm or torch release is checked against,
so every release difference (state-dict keys, Plateau's torch quirks, the fingerprinted base ``step_update``
and its inlined equivalent, the operator that keeps the step hook out of a compiled optimizer step's tracing)
stays side by side here.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import inspect
import itertools
import math
import operator
import re
import textwrap
import threading
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.optim.lr_scheduler

# -- torch releases: the supported range ---------------------------------------------------------------------
# (before timm is imported below: patch()'s hook on timm.scheduler asks it while this module imports timm)

TORCH_VERSION: str = torch.__version__
#: (major, minor) of the installed torch, for quirks that are named with releases and cannot be seen otherwise.
TORCH_RELEASE: tuple[int, ...] = tuple(int(part) for part in re.findall(r"\d+", TORCH_VERSION)[:2])
#: The oldest torch release the package runs on (pyproject.toml's ``torch>=`` and the README's table say the same).
OLDEST_TORCH = "2.0"
#: torch 2.0+: ``Optimizer.register_step_pre_hook``/``register_step_post_hook``, which run around every parameter
#: update and by which the fix counts updates (lag detection, auto mode, ``check``, ``trace``, ``audit``).
#: torch 1.13 and older have no optimizer step hooks: the package does not run there (:func:`unsupported_torch`).
OPTIMIZER_STEP_HOOKS: bool = (hasattr(torch.optim.Optimizer, "register_step_pre_hook")
                              and hasattr(torch.optim.Optimizer, "register_step_post_hook"))


def unsupported_torch() -> str | None:
    """Why the installed torch cannot run the fix (the message of every entry point's error or warning), or None
    on a supported torch."""
    if OPTIMIZER_STEP_HOOKS:
        return None
    return (f"timm-sched-fix needs torch >= {OLDEST_TORCH}, and this is torch {TORCH_VERSION}: it counts parameter "
            "updates with the optimizer step hooks torch added in 2.0 (Optimizer.register_step_pre_hook and "
            "register_step_post_hook), which this torch does not have. Upgrade torch (pip install 'torch>="
            f"{OLDEST_TORCH}'), or run without timm-sched-fix")


def require_supported_torch() -> None:
    """Raise ``RuntimeError`` (:func:`unsupported_torch`'s message) below the supported torch range."""
    message = unsupported_torch()
    if message is not None:
        raise RuntimeError(message)


import timm.scheduler
import wrapt
from timm.scheduler.scheduler import Scheduler

from timm_sched_fix import _noise as noise

TIMM_VERSION: str = getattr(timm, "__version__", "unknown")
#: timm's PlateauLRScheduler, None on a timm without it (deprecated in 1.0.31: "will be removed").
#: (From the module object: ``patch()`` may import this module while ``timm.scheduler`` is still being imported.)
PlateauLRScheduler: type[Scheduler] | None = getattr(importlib.import_module("timm.scheduler"), "PlateauLRScheduler",
                                                     None)


def scheduler_classes() -> dict[str, type[Scheduler]]:
    """The scheduler classes the installed ``timm.scheduler`` exports, by name."""
    return {
        name: value
        for name, value in vars(timm.scheduler).items()
        if isinstance(value, type) and issubclass(value, Scheduler) and value is not Scheduler
    }


def is_plateau(scheduler: Scheduler) -> bool:
    return PlateauLRScheduler is not None and isinstance(scheduler, PlateauLRScheduler)


def is_epoch_schedule(scheduler: Scheduler) -> bool:
    """True when the schedule's index counts epochs (``step``), False for updates (``step_update``).

    PlateauLRScheduler is always per epoch; before timm 0.9 ``t_in_epochs`` was set by each subclass,
    from 0.9 by the base class, and user subclasses of older timm may not set it at all (then per epoch,
    as their ``step`` is what works).
    """
    return is_plateau(scheduler) or bool(getattr(scheduler, "t_in_epochs", True))


def check_metric(scheduler: Scheduler, metric: Any) -> bool:
    """Refuse a non-numeric metric for PlateauLRScheduler before anything changes (``TypeError``); True for a NaN or
    infinite one, which torch's ``ReduceLROnPlateau`` counts as "no improvement" (it lowers the LR after
    ``patience_t`` such epochs) in every timm release: the fix applies it as stock timm does, and says so."""
    if metric is None or not is_plateau(scheduler):
        return False
    try:
        value = float(metric)
    except (TypeError, ValueError):
        raise TypeError(f"PlateauLRScheduler metric must be a number, got {metric!r}") from None
    return not math.isfinite(value)


def stock_writer(scheduler: Scheduler, stock_method: Callable[..., Any]) -> Callable[[Scheduler, float, Any], None]:
    """A function ``(scheduler, t, metric)`` that writes v(t) through the scheduler's own ``step``/``step_update``
    (``stock_method``, unbound), so noise and subclass overrides apply; made for ``scheduler`` and called with it
    (a fixed scheduler keeps its writer, which must not hold it). See :func:`inlined_step_update` for the faster
    equivalent of an unmodified ``step_update``.

    Quirk ``plateau_step0_without_warmup`` (every timm release): ``PlateauLRScheduler.step(0)`` with
    ``warmup_t=0`` takes the warmup branch and writes ``warmup_lr_init`` (0 by default), although the
    schedule's value for epoch 0 is the base LR; timm's train.py never calls ``step(0)``, so the quirk
    only bites a pre-advance or a "begin"-convention loop. The base values are written instead.
    """
    if not is_plateau(scheduler):
        return stock_method

    def write_plateau(scheduler: Scheduler, t: float, metric: Any) -> None:
        if t == 0 and not scheduler.warmup_t:
            scheduler.update_groups(scheduler.base_values)
        elif PLATEAU_STEP_PASSES_NONE_METRIC:
            _torch_plateau_step_as_timm_1_0_24(scheduler.lr_scheduler)(functools.partial(stock_method, scheduler))(
                t, metric)
        else:
            stock_method(scheduler, t, metric)

    return write_plateau


def add_param_groups(scheduler: Scheduler, groups: list[dict]) -> None:
    """Make param groups added to the optimizer after construction part of the schedule, as timm's constructor
    makes the first ones: each group's base value is its ``initial_<field>`` if set, else its current value
    (which becomes its ``initial_<field>``); its ``lr_scale`` applies as to every group.

    Quirk ``plateau_groups_fixed_at_construction`` (every timm release): PlateauLRScheduler keeps one saved LR
    per group while noise is applied (``restore_lr``), and torch's ``ReduceLROnPlateau`` one minimum LR per group
    (``min_lrs``, from the scalar ``lr_min``); both get an entry for each new group."""
    initial_field = scheduler._initial_param_group_field
    for group in groups:
        group.setdefault(initial_field, group[scheduler.param_group_field])
        scheduler.base_values.append(group[initial_field])
    if is_plateau(scheduler):
        if scheduler.restore_lr is not None:
            scheduler.restore_lr.extend(float(group[scheduler.param_group_field]) for group in groups)
        min_lrs = scheduler.lr_scheduler.min_lrs
        min_lrs.extend(min_lrs[-1:] * len(groups))


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


class Quirk(NamedTuple):
    """One difference the fix works around: its name, the releases it concerns, and what the fix does.

    A NamedTuple, not a dataclass: this module is imported when timm is, and a dataclass costs ~0.6 ms to create.
    """

    name: str
    versions: str
    description: str
    applies: Callable[[], bool]


#: Every quirk handled in this module; ``active_quirks()`` reports the ones that apply to the installed versions.
QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "plateau_step0_without_warmup",
        "every timm release",
        "PlateauLRScheduler.step(0) with warmup_t=0 writes warmup_lr_init; the fix writes the base LRs",
        lambda: hasattr(timm.scheduler, "PlateauLRScheduler"),
    ),
    Quirk(
        "plateau_verbose",
        "timm 0.4.12 - 1.0.15 on torch without ReduceLROnPlateau(verbose=) (2.14)",
        "PlateauLRScheduler(...) raises TypeError for verbose; the fix drops verbose during construction",
        lambda: PLATEAU_PASSES_VERBOSE,
    ),
    Quirk(
        "plateau_step_without_metric",
        "timm 0.4.12 - 1.0.15",
        "PlateauLRScheduler.step(epoch) without a metric raises TypeError past warmup; the fix keeps the LR "
        "as timm 1.0.24 does",
        lambda: PLATEAU_STEP_PASSES_NONE_METRIC,
    ),
    Quirk(
        "plateau_state_outside_state_dict",
        "every timm release",
        "PlateauLRScheduler's state dict lacks its LR and ReduceLROnPlateau counters; the fix records them",
        lambda: hasattr(timm.scheduler, "PlateauLRScheduler"),
    ),
    Quirk(
        "plateau_groups_fixed_at_construction",
        "every timm release",
        "PlateauLRScheduler keeps per-group lists sized at construction (restore_lr, ReduceLROnPlateau.min_lrs); "
        "the fix extends them for param groups added later",
        lambda: hasattr(timm.scheduler, "PlateauLRScheduler"),
    ),
    Quirk(
        "plateau_nan_metric",
        "every timm release",
        "a NaN or infinite metric makes ReduceLROnPlateau lower the LR; the fix applies it as stock does and warns once",
        lambda: hasattr(timm.scheduler, "PlateauLRScheduler"),
    ),
    Quirk(
        "cycle_args_renamed_0_5",
        "0.4.12 vs 0.5.4+",
        "Cosine/Tanh t_mul/decay_rate became cycle_mul/cycle_decay with a new cycle_limit=0; such state dicts "
        "are refused with the reason",
        lambda: True,
    ),
    Quirk(
        "lr_scheduler_counts_optimizer_steps",
        "torch 2.0 - 2.3",
        "LRScheduler counts optimizer steps in optimizer._step_count, which only its own _initial_step starts; "
        "TorchScheduler starts it too",
        lambda: OPTIMIZER_STEP_HOOKS and TORCH_RELEASE < (2, 4),
    ),
    Quirk(
        "sequential_lr_steps_with_epoch_0",
        "torch 2.0 - 2.8",
        "SequentialLR restarts a scheduler at its milestone with step(0) (2.9+: _update_lr(0)); TorchScheduler "
        "takes both and restarts the timm schedule at v(0)",
        lambda: OPTIMIZER_STEP_HOOKS and not SEQUENTIAL_LR_CALLS_UPDATE_LR,
    ),
    Quirk(
        "compiled_step_traces_hooks",
        "torch with torch.compile (measured on 2.13 and 2.14)",
        "torch.compile traces optimizer step pre-hooks, so the update count and auto mode's schedule values would be "
        "guards (a recompilation each); from torch 2.13 the fix runs its hook as one operator in the graph, "
        "compiled once",
        lambda: hasattr(torch, "compile"),
    ),
)


def active_quirks() -> list[Quirk]:
    """The quirks of ``QUIRKS`` that apply to the installed timm and torch (what ``check`` lists)."""
    return [quirk for quirk in QUIRKS if quirk.applies()]


# -- timm versions vs the installed torch ------------------------------------------------------------


def _parameters(function: Callable[..., Any]) -> frozenset:
    return frozenset(inspect.signature(function).parameters)


#: Quirk ``plateau_verbose`` (timm 0.4.12 - 1.0.15, on a torch without the argument such as 2.14):
#: ``PlateauLRScheduler.__init__`` passes ``verbose=`` to ``torch.optim.lr_scheduler.ReduceLROnPlateau``,
#: which no longer accepts it, so the constructor raises ``TypeError`` after it already reset the LRs.
PLATEAU_PASSES_VERBOSE: bool = (
    PlateauLRScheduler is not None and "verbose" in _parameters(PlateauLRScheduler.__init__)
    and "verbose" not in _parameters(torch.optim.lr_scheduler.ReduceLROnPlateau.__init__)
)

#: Quirk ``plateau_step_without_metric`` (timm 0.4.12 - 1.0.15): past the warmup,
#: ``PlateauLRScheduler.step(epoch)`` calls ``ReduceLROnPlateau.step(metric, epoch)`` even when ``metric``
#: is None (``float(None)`` raises ``TypeError``), and passes the ``epoch`` argument torch deprecated
#: (a ``UserWarning`` on every step). timm 1.0.24 steps the torch scheduler only with a metric, and
#: without ``epoch``. Detected by the ``verbose`` parameter, which timm removed in the same change.
PLATEAU_STEP_PASSES_NONE_METRIC: bool = (PlateauLRScheduler is not None
                                         and "verbose" in _parameters(PlateauLRScheduler.__init__))


@wrapt.transient_function_wrapper(torch.optim.lr_scheduler, "ReduceLROnPlateau")
def _reduce_lr_on_plateau_without_verbose(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    """``ReduceLROnPlateau`` for the duration of one call, dropping the ``verbose`` torch removed."""
    kwargs.pop("verbose", None)
    return wrapped(*args, **kwargs)


#: Held while ``ReduceLROnPlateau`` is swapped in torch's module: two threads constructing at once would each
#: put back what they found, so one raised ``WrapperNotFoundError`` or left torch's class wrapped. Reentrant,
#: as a constructor may build another scheduler.
_REDUCE_LR_ON_PLATEAU_SWAP = threading.RLock()


@wrapt.decorator
def _one_swap_at_a_time(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
    with _REDUCE_LR_ON_PLATEAU_SWAP:
        return wrapped(*args, **kwargs)


def for_installed_torch(call: Callable[..., Any]) -> Callable[..., Any]:
    """A timm scheduler constructor or factory, made to run on the installed torch.

    Applies quirk ``plateau_verbose`` where it exists: for the duration of the call only, and one thread at
    a time, ``ReduceLROnPlateau`` accepts and ignores ``verbose`` (torch removed those log messages).
    """
    return _one_swap_at_a_time(_reduce_lr_on_plateau_without_verbose(call)) if PLATEAU_PASSES_VERBOSE else call


def _torch_plateau_step_as_timm_1_0_24(torch_plateau: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Quirk ``plateau_step_without_metric``: during one timm ``step`` call, the torch scheduler steps
    only with a metric, and takes the epoch as its ``last_epoch`` instead of the deprecated argument."""

    @wrapt.transient_function_wrapper(torch_plateau, "step")
    def step_with_metric_only(wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        metrics, epoch = _bind_plateau_step(*args, **kwargs)
        if metrics is None:
            return
        if epoch is not None:
            torch_plateau.last_epoch = epoch - 1  # torch's step() without epoch counts last_epoch + 1
        wrapped(metrics)

    return step_with_metric_only


def _bind_plateau_step(metrics: Any, epoch: float | None = None) -> tuple[Any, float | None]:
    return metrics, epoch


def stock_epoch_step(scheduler: Scheduler) -> Callable[[float, Any], None]:
    """A stock scheduler's own ``step(epoch, metric)``, made to run without a metric on every release.

    Applies quirk ``plateau_step_without_metric`` where it exists (PlateauLRScheduler of timm 0.4.12 - 1.0.15):
    without a metric the LR is kept, as timm 1.0.24 does. Everything else is the stock call, defects included;
    for tools that show stock timm's behaviour (``trace``), while the fix itself writes through :func:`stock_writer`.
    """

    def step(epoch: float, metric: Any = None) -> None:
        if PLATEAU_STEP_PASSES_NONE_METRIC and is_plateau(scheduler):
            _torch_plateau_step_as_timm_1_0_24(scheduler.lr_scheduler)(scheduler.step)(epoch, metric)
        else:
            scheduler.step(epoch, metric)

    return step


def plateau_state(scheduler: Scheduler) -> dict[str, Any] | None:
    """What a PlateauLRScheduler needs to resume past warmup, which its stock state dict lacks.

    Quirk ``plateau_state_outside_state_dict`` (every timm release): past warmup the LR lives in the
    optimizer (reduced by torch's ``ReduceLROnPlateau``, noise undone via ``restore_lr``) and the stock state
    dict keeps only ``best`` and ``last_epoch``, so re-applying v(t) after a resume or a re-wrap cannot
    recompute it. The un-noised LRs and the ``ReduceLROnPlateau`` counters are recorded instead.
    """
    if not is_plateau(scheduler):
        return None
    field = scheduler.param_group_field
    current = scheduler.restore_lr
    if current is None:
        current = [group[field] for group in scheduler.optimizer.param_groups]
    return {"lrs": [float(value) for value in current], "reduce_on_plateau": dict(scheduler.lr_scheduler.state_dict())}


def check_plateau_state(scheduler: Scheduler, state: Any) -> None:
    """Refuse a malformed plateau record before anything is loaded."""
    if state is None:
        return
    groups = len(scheduler.optimizer.param_groups)
    if (not isinstance(state, dict) or not isinstance(state.get("reduce_on_plateau"), dict)
            or not isinstance(state.get("lrs"), list) or len(state["lrs"]) != groups):
        raise ValueError(f"malformed PlateauLRScheduler record for {groups} param group(s): {state!r}")


def restore_plateau_state(scheduler: Scheduler, state: dict[str, Any] | None, t: float | None) -> None:
    """Put back what :func:`plateau_state` recorded; past warmup the next ``step(t)`` restores the LRs."""
    if state is None or not is_plateau(scheduler):
        return
    scheduler.lr_scheduler.load_state_dict(state["reduce_on_plateau"])
    if t is not None and t > scheduler.warmup_t:
        scheduler.restore_lr = list(state["lrs"])


#: Attributes the base ``Scheduler.__init__`` sets in some timm release (``noise_type`` and ``t_in_epochs``
#: moved into the base class in 0.9); they do not tell scheduler classes apart.
BASE_STATE_KEYS = frozenset({
    "param_group_field", "_initial_param_group_field", "metric", "t_in_epochs",
    "noise_range_t", "noise_pct", "noise_type", "noise_std", "noise_seed",
})
#: State-dict keys a class has in some timm releases only (measured on 0.4.12 ... 1.0.31): ``k_decay``
#: arrived in Cosine with 0.5.4, ``warmup_prefix`` in Step/MultiStep with 0.9.
VERSION_STATE_KEYS = {
    "CosineLRScheduler": frozenset({"k_decay"}),
    "StepLRScheduler": frozenset({"warmup_prefix"}),
    "MultiStepLRScheduler": frozenset({"warmup_prefix"}),
    "PlateauLRScheduler": frozenset({"last_epoch"}),
}
#: Quirk ``cycle_args_renamed_0_5`` (timm 0.4.12 -> 0.5.4): Cosine/Tanh ``t_mul``/``decay_rate`` became
#: ``cycle_mul``/``cycle_decay`` and ``cycle_limit=0`` changed from "unlimited" to "no cycle", so such a state
#: dict cannot be translated by renaming; it is refused with this explanation.
RENAMED_IN_0_5 = {"t_mul": "cycle_mul", "decay_rate": "cycle_decay"}
#: Keys stock ``PlateauLRScheduler.load_state_dict`` reads without checking (every timm release).
PLATEAU_REQUIRED_KEYS = frozenset({"best"})


def timm_class_name(scheduler: Scheduler) -> str:
    """The name of the timm class a scheduler is (drop-in classes and user subclasses map to their timm base)."""
    return next(cls.__name__ for cls in scheduler.__class__.__mro__ if cls.__module__.startswith("timm.scheduler"))


def check_state_dict(scheduler: Scheduler, given: dict, own: dict) -> None:
    """Refuse, before anything is loaded, a stock state dict of another scheduler class, a truncated one,
    or one whose base values do not fit the optimizer.

    Keys that only some timm releases have (:data:`BASE_STATE_KEYS`, :data:`VERSION_STATE_KEYS`) may be
    missing or extra, so state dicts move between releases where the class exists.
    """
    name = timm_class_name(scheduler)
    if is_plateau(scheduler):
        missing_required = PLATEAU_REQUIRED_KEYS - set(given)
        if missing_required:
            raise ValueError(f"state dict for {name} lacks {sorted(missing_required)}")
    renamed = sorted(old for old, new in RENAMED_IN_0_5.items() if old in given and new in own)
    renamed += sorted(new for old, new in RENAMED_IN_0_5.items() if new in given and old in own)
    if {"t_mul", "cycle_mul"} & set(renamed) and name in ("CosineLRScheduler", "TanhLRScheduler"):
        raise ValueError(
            f"state dict of a {name} from another side of timm 0.5 (it has {renamed}): t_mul/decay_rate were "
            "renamed cycle_mul/cycle_decay in 0.5.4 and cycle_limit=0 changed meaning, so it cannot be loaded; "
            f"build the {name} with the equivalent arguments and resume with step(epoch) instead"
        )
    tolerated = BASE_STATE_KEYS | VERSION_STATE_KEYS.get(name, frozenset())
    unexpected = sorted(set(given) - set(own) - tolerated, key=repr)  # keys of any type: a str, an int, ...
    missing = sorted(set(own) - set(given) - tolerated, key=repr)
    if unexpected or missing:
        differences = ([f"it has {unexpected}"] if unexpected else []) + ([f"it lacks {missing}"] if missing else [])
        raise ValueError(
            f"state dict does not belong to a {name}: {' and '.join(differences)} "
            "(another scheduler class, or a truncated state dict)"
        )
    step_like = name in ("MultiStepLRScheduler", "StepLRScheduler")
    if step_like and isinstance(given.get("decay_t"), (list, tuple)) != (name == "MultiStepLRScheduler"):
        raise ValueError(f"state dict does not belong to a {name}: decay_t={given.get('decay_t')!r}")
    groups = len(scheduler.optimizer.param_groups)
    base_values = given.get("base_values", own.get("base_values"))
    if base_values is not None and (
        not isinstance(base_values, (list, tuple)) or len(base_values) != groups
        or not all(isinstance(value, (int, float, torch.Tensor)) and not isinstance(value, bool)
                   for value in base_values)):
        raise ValueError(f"state dict base_values {base_values!r} do not fit an optimizer with {groups} param group(s)")


def construction_args(init: Callable[..., Any], args: tuple, kwargs: dict) -> tuple[Any | None, bool]:
    """The optimizer and the ``initialize`` flag of a scheduler constructor call.

    Read from the constructor's own signature, so user subclasses with their own parameters work;
    the optimizer falls back to the first positional argument.
    """
    try:
        arguments = inspect.signature(init).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return (args[0] if args else kwargs.get("optimizer")), True
    extra = {}
    for name, parameter in inspect.signature(init).parameters.items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            extra = arguments.get(name, {})
    optimizer = arguments.get("optimizer", args[0] if args else extra.get("optimizer"))
    initialize = arguments.get("initialize", extra.get("initialize", True))
    return optimizer, bool(initialize)


# -- torch releases: the LRScheduler protocol ---------------------------------------------------------------

#: Quirk ``sequential_lr_steps_with_epoch_0`` (torch 2.0 - 2.8): at a milestone ``SequentialLR.step()`` restarts
#: the next scheduler with ``scheduler.step(0)``, torch's deprecated epoch argument; torch 2.9 calls
#: ``scheduler._update_lr(0)``, which ``LRScheduler`` has from then on. ``TorchScheduler`` takes both.
SEQUENTIAL_LR_CALLS_UPDATE_LR: bool = hasattr(getattr(torch.optim.lr_scheduler, "LRScheduler", object), "_update_lr")


def start_optimizer_step_count(optimizer: Any) -> None:
    """Quirk ``lr_scheduler_counts_optimizer_steps`` (torch 2.0 - 2.3): ``LRScheduler.__init__`` replaces the
    optimizer's ``step`` with a counter of ``optimizer._step_count`` (marked ``_with_counter``), which only
    torch's own ``_initial_step`` creates; a scheduler with its own ``_initial_step`` (``TorchScheduler``) starts
    it as torch's does, or the first ``optimizer.step()`` raises ``AttributeError``. torch 2.4 replaced the counter
    with a flag the wrapper sets itself."""
    if getattr(optimizer.step, "_with_counter", False):
        optimizer._step_count = 0


# -- torch releases: auto mode in a compiled optimizer step --------------------------------------------------

#: Quirk ``compiled_step_traces_hooks`` (torch with ``torch.compile``; measured on 2.13 and 2.14):
#: ``torch.compile`` traces the optimizer step pre-hooks of a compiled ``optimizer.step()`` (torch's step wrapper
#: runs them before its own first graph break). Traced, the fix's hook (``counting``: the update count, and in
#: auto mode the schedule, its position, warmup branch and noise draw) would make Python values guards of the
#: compiled code: a recompilation for each new value. On torch 2.13 and later the hook puts one operator into the
#: graph instead, ``timm_sched_fix::run_untraced``, whose kernel runs the hook's own Python on every step: the
#: graph compiles once, with no graph break of its own. Older torch, where this was not checked, traces the hook
#: as it is (the LRs are right; it recompiles), rather than risk a compile error in a script that runs without it.
UNTRACED_IN_COMPILED_STEP: bool = (
    TORCH_RELEASE >= (2, 13)
    and hasattr(torch.library, "register_fake") and hasattr(torch.compiler, "is_dynamo_compiling"))


def _never() -> bool:
    return False


#: True while dynamo traces the calling code, False when it runs (``torch.compiler.is_dynamo_compiling``: dynamo
#: replaces the call with the constant True); always False where ``UNTRACED_IN_COMPILED_STEP`` is not.
dynamo_tracing: Callable[[], bool] = torch.compiler.is_dynamo_compiling if UNTRACED_IN_COMPILED_STEP else _never

#: Truthy while dynamo is on for the calling code but does not trace it: a frame of a compiled function that dynamo
#: runs uncompiled (it gives up on torch's step wrapper when a pre-hook does something it cannot trace), whose
#: calls it compiles one by one (``torch._C._dynamo.eval_frame.get_eval_frame_callback``, torch 2.13 - 2.14);
#: always falsy where ``UNTRACED_IN_COMPILED_STEP`` is not.
dynamo_around: Callable[[], Any] = getattr(getattr(getattr(torch._C, "_dynamo", None), "eval_frame", None),
                                           "get_eval_frame_callback", _never) if UNTRACED_IN_COMPILED_STEP else _never


def without_dynamo(function: Callable[..., None]) -> Callable[..., None]:
    """``function``, run with dynamo off (``torch.compiler.disable``): nothing it calls is compiled. Imports
    ``torch._dynamo`` (seconds), so it is made where ``dynamo_around()`` said it is loaded."""
    return torch.compiler.disable(function)


#: What the operator runs, by key: a weak reference to the object and its method's function.
_UNTRACED: dict[int, tuple[weakref.ref, Callable[[Any], None]]] = {}
_UNTRACED_KEYS = itertools.count()
#: The operator, its Library (dropping a Library unregisters its operators), and a tensor it is told to write when
#: the optimizer has no tensor LR: AOT autograd drops a call that writes nothing, so the graph would lose it.
_UNTRACED_OPERATOR: list[Any] = []
_UNTRACED_DEFINITION = threading.Lock()


def _run_untraced(key: int, written: list[torch.Tensor]) -> None:
    """The operator's kernel: run the method registered under ``key``, unless its object is gone."""
    entry = _UNTRACED.get(key)
    if entry is not None:
        owner = entry[0]()
        if owner is not None:
            entry[1](owner)


def _trace_untraced(key: int, written: list[torch.Tensor]) -> None:
    """The operator's kernel for tracing: nothing (its real kernel writes in place and returns nothing)."""


def _untraced_operator() -> list[Any]:
    """Define ``timm_sched_fix::run_untraced`` once per process, on first use (``register_fake`` costs ~8 ms).

    It may write the tensors it is given (``Tensor(a!)[]``), so the compiled graph keeps it and orders it before
    anything that reads them; its fake kernel does nothing, so tracing never runs the method; it is marked
    ``cudagraph_unsafe`` where torch has the tag, so CUDA graphs never record one run of it for replay.
    """
    with _UNTRACED_DEFINITION:
        if not _UNTRACED_OPERATOR:
            library = torch.library.Library("timm_sched_fix", "FRAGMENT")
            cudagraph_unsafe = getattr(torch.Tag, "cudagraph_unsafe", None)
            library.define("run_untraced(int key, Tensor(a!)[] written) -> ()",
                           tags=() if cudagraph_unsafe is None else (cudagraph_unsafe,))
            library.impl("run_untraced", _run_untraced, "CompositeExplicitAutograd")
            library.impl("run_untraced", _trace_untraced, "Meta")  # what tracing runs (fake tensors are meta)
            _UNTRACED_OPERATOR[:] = [torch.ops.timm_sched_fix.run_untraced.default, library, torch.zeros(())]
        return _UNTRACED_OPERATOR


def untraced_call(method: Callable[[], None]) -> Callable[[list[torch.Tensor]], None]:
    """What an optimizer step pre-hook calls instead of ``method`` while dynamo traces it (``dynamo_tracing()``),
    with the tensors ``method`` writes (an LR tensor per param group that has one; values are not read, so no
    guard depends on them).

    ``method``, a bound method held weakly, then runs as eager Python when the compiled step runs, where the hook
    would have run, on every step: one operator call in the graph. Where ``UNTRACED_IN_COMPILED_STEP`` is False the
    call runs ``method`` directly, traced as it is. Neither keeps ``method``'s object alive.
    """
    key = next(_UNTRACED_KEYS)
    # not a WeakMethod: its callback fails when the object goes at interpreter exit; the dict is bound in
    # so that this one still finds it then
    _UNTRACED[key] = (weakref.ref(method.__self__, lambda _, untraced=_UNTRACED: untraced.pop(key, None)),
                      method.__func__)
    if not UNTRACED_IN_COMPILED_STEP:
        return lambda written: _run_untraced(key, written)
    operator, _, no_tensor_lr = _untraced_operator()

    def in_graph(written: list[torch.Tensor]) -> None:
        operator(key, written or [no_tensor_lr])

    return in_graph

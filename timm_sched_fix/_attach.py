"""How a scheduler becomes fixed: :func:`construct` (a constructor run under ``patch()`` or a drop-in class) and
:func:`attach` (a constructed scheduler, as ``wrap()`` finds it) give it a
:class:`~timm_sched_fix._timing.ScheduleTiming` and pre-advance it to v(0), writing only over the LRs its
constructor left; a scheduler whose own methods the fix cannot read runs as stock (:mod:`timm_sched_fix._overrides`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _overrides as overrides
from timm_sched_fix import _routing as routing
from timm_sched_fix._adapter import Adapter
from timm_sched_fix._lag import caller_stacklevel
from timm_sched_fix._routing import TIMING_KEY
from timm_sched_fix._timing import ScheduleTiming, check_optimizer, counted_options, timing_of
from timm_sched_fix._writer import group_values, left_by_scheduler, restore_groups, separate_tensor_lrs
from timm_sched_fix.options import Options

#: A scheduler attribute present while its outermost constructor runs.
CONSTRUCTING_KEY = "_timm_sched_fix_constructing"


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
    before the constructor runs, what :func:`~timm_sched_fix._timing.check_optimizer` and
    :func:`~timm_sched_fix._timing.counted_options` raise, and ``RuntimeError``
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
        restore_groups(optimizer, groups_before)  # the constructor raises: the optimizer as it was before it
        raise


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
    (:func:`timm_sched_fix._writer.left_by_scheduler`); other LRs are kept and the position is unknown until a call with an index or a
    load. Raises what :func:`~timm_sched_fix._timing.counted_options` raises, and ``ValueError`` for LR noise that can never be drawn
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
    own = left_by_scheduler(scheduler, groups, groups_before, field)
    if groups_before is not None:
        for group, before in zip(groups, groups_before):
            if not initialize or isinstance(before.get(field), torch.Tensor):
                group[field] = before[field]  # resume: the LRs as they were; tensors: the same objects
    separate_tensor_lrs(scheduler, field)
    if initialize and own:
        timing.move_to(0)
    return timing

"""Whose LRs the param groups hold, and whether a position record is still current.

A fixed scheduler writes an LR at a moment stock timm does not (the pre-advance at construction and at ``wrap()``,
``load_state_dict()``, auto mode's write for param groups an optimizer load replaced) only while each param group
holds exactly what the scheduler itself last left there. LRs that ``optimizer.load_state_dict`` restored, or that
the user's code changed after the scheduler (per-group factors such as layer-wise LR decay, manual edits, another
scheduler), are kept: stock timm keeps them too, until its next call.

A fixed scheduler's position record (``state_dict()["timm_sched_fix"]``) carries a stamp of the moment it was saved:
the LR each param group held and the metric of the last call. A run without the fix loads it as a plain attribute
and saves it again unchanged while its own state moves on (the LRs, the metric). Loaded with the fix, a record whose
stamp no longer matches the optimizer's LRs or the scheduler's metric is stale: the state dict is then loaded as
stock timm's (the LRs as they are, the position unknown until a call with an index). Records without a stamp (saved
by earlier releases of this package) are trusted as before.
"""

from __future__ import annotations

import copy
import numbers
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The stamp's keys in a position record.
STAMP_LRS, STAMP_METRIC = "group_lrs", "metric"


def group_lrs(groups: Sequence[Mapping[str, Any]], field: str) -> list[float]:
    """The LR field of each param group as a plain float (tensor LRs read by value)."""
    return [float(group[field]) for group in groups]


def stamp(groups: Sequence[Mapping[str, Any]], field: str, metric: Any) -> dict[str, Any]:
    """What a position record carries to be recognised as current: each group's LR now, and the metric of the last
    call when it is a plain number or None (another metric is left out, and not compared)."""
    stamped: dict[str, Any] = {STAMP_LRS: group_lrs(groups, field)}
    if metric is None or (isinstance(metric, numbers.Real) and not isinstance(metric, bool)):
        stamped[STAMP_METRIC] = None if metric is None else float(metric)
    return stamped


def written_at(scheduler: Any, timing: Any, write: Callable[[Any, float, Any], None], t: float) -> list[float] | None:
    """The LRs ``write(scheduler, t, None)`` (the scheduler's own writer) leaves in the param groups, computed on a copy
    of the scheduler over copies of the groups' values, so nothing of the scheduler's or the optimizer's changes;
    None when the copy or the write fails (the caller then cannot tell whose the LRs are)."""
    optimizer = scheduler.optimizer
    groups = [{key: copy.deepcopy(value) for key, value in group.items() if key != "params"}
              for group in optimizer.param_groups]
    memo: dict[int, Any] = {id(optimizer): types.SimpleNamespace(param_groups=groups), id(timing): None}
    try:
        shadow = copy.deepcopy(scheduler, memo)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write(shadow, t, None)
        return group_lrs(groups, scheduler.param_group_field)
    except Exception:  # noqa: BLE001 (a scheduler that cannot be copied: its LRs are not known to be its own)
        return None


def left_by_constructor(scheduler: Any, lrs: Sequence[float]) -> bool:
    """Whether every param group holds what timm's constructor leaves there: ``warmup_lr_init`` for a schedule with
    a warmup, else the group's base value, each with or without the group's ``lr_scale`` (timm releases differ in
    whether the constructor writes through ``update_groups``). For ``wrap()``, which sees the scheduler only after."""
    groups = scheduler.optimizer.param_groups
    base_values = scheduler.base_values
    if len(lrs) != len(groups) or len(base_values) != len(groups):
        return False
    warmup = getattr(scheduler, "warmup_t", 0) and getattr(scheduler, "warmup_lr_init", None) is not None
    for group, base, lr in zip(groups, base_values, lrs):
        value = float(scheduler.warmup_lr_init if warmup else base)
        if lr != value and lr != value * group.get("lr_scale", 1.0):
            return False
    return True


def stale_reason(record: Mapping[str, Any], stock_state: Mapping[str, Any], lrs: Sequence[float] | None) -> str | None:
    """Why a position record is not current, or None when it is (or cannot be told: no stamp, an older record).

    ``lrs`` are the optimizer's param-group LRs at the load, None when they say nothing about the checkpoint (they
    still hold what the scheduler itself wrote since it was built: the optimizer's state was not loaded before it).
    """
    if STAMP_METRIC in record and STAMP_METRIC in stock_state:
        saved, now = record[STAMP_METRIC], stock_state[STAMP_METRIC]
        if _plain(now) and saved != (None if now is None else float(now)):
            return f"the scheduler's metric moved on since the record was saved ({saved!r}, now {now!r})"
    saved_lrs = record.get(STAMP_LRS)
    if lrs is not None and saved_lrs is not None and list(lrs) != list(saved_lrs):
        return f"the optimizer's LRs moved on since the record was saved ({_few(saved_lrs)}, now {_few(lrs)})"
    return None


def check_stamp(record: Mapping[str, Any], groups: int, where: str) -> None:
    """Refuse a malformed stamp (``ValueError`` naming the key); a record without one is fine."""
    if STAMP_LRS in record:
        saved = record[STAMP_LRS]
        if not isinstance(saved, list) or len(saved) != groups or not all(_number(value) for value in saved):
            raise ValueError(f"{where}[{STAMP_LRS!r}] must be a list of {groups} number(s), one per param group, "
                             f"got {saved!r}")
    if STAMP_METRIC in record and not _plain(record[STAMP_METRIC]):
        raise ValueError(f"{where}[{STAMP_METRIC!r}] must be None or a number, got {record[STAMP_METRIC]!r}")


def _number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _plain(value: Any) -> bool:
    return value is None or _number(value)


def _few(values: Sequence[float]) -> str:
    shown = ", ".join(f"{value:.8g}" for value in list(values)[:4])
    return f"[{shown}{', ...' if len(values) > 4 else ''}]"

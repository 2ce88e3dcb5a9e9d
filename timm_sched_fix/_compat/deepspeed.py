"""DeepSpeed's optimizer wrappers (ZeRO stages 1-3, bf16/fp16), as the update counting
(:mod:`timm_sched_fix._counting`) meets them: how their steps of one parameter update look. Read off DeepSpeed
0.19.8 on CPU (``DS_ACCELERATOR=cpu``, tests/test_engines.py). Imports no DeepSpeed: the tests look at param
groups, tensors and the call stack."""

from __future__ import annotations

import importlib.util
from typing import Any

from timm_sched_fix._compat.quirk import Quirk
from timm_sched_fix._walk import frame_finder


def _installed() -> bool:
    """Whether DeepSpeed is installed (``applies`` of its quirks), without importing it."""
    return importlib.util.find_spec("deepspeed") is not None


def part_of(groups: list, home: list) -> bool:
    """Whether ``groups`` is a list of some of ``home``'s groups (quirk ``deepspeed_partial_steps``: ZeRO-1/2's
    one-group list)."""
    return len(groups) <= len(home) and all(any(group is own for own in home) for group in groups)


def later_part(groups: list, home: list, first: int, key: Any) -> bool:
    """Quirk ``deepspeed_partial_steps``: a step that continues an update already counted, never seen before:
    ZeRO-1/2's one-group list of a group past the first, or a ZeRO-3 sub-group partition (a tensor with ``ds_id``).
    ``first`` is the index in ``home`` of the first group with params in ``groups``, ``key`` its first param."""
    if groups is not home:
        return first > 0
    return hasattr(key, "ds_id")


_setting_up = frame_finder(("deepspeed",), test=lambda frame: frame.f_code.co_name in (
    "initialize", "__init__", "initialize_optimizer_states"))


def setup_step() -> bool:
    """Quirk ``deepspeed_setup_step``: whether the step its caller's caller hooks runs while DeepSpeed builds its
    engine or optimizer (``deepspeed.initialize``, a constructor, ``initialize_optimizer_states``), not during
    training."""
    return _setting_up(2) is not None


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "deepspeed_partial_steps",
        "DeepSpeed 0.19.8, ZeRO-1/2/3",
        "ZeRO steps the inner optimizer once per param group (1/2) or sub-group partition (3) for one update; the fix "
        "counts the update once, and its callbacks see the optimizer's own param groups",
        _installed,
    ),
    Quirk(
        "deepspeed_setup_step",
        "DeepSpeed 0.19.8, bf16/fp16 without ZeRO",
        "deepspeed.initialize takes one zero-gradient optimizer.step() to create the optimizer state; the fix does "
        "not count it as a training update",
        _installed,
    ),
)

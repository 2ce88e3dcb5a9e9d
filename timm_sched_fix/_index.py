"""What a schedule index is: :func:`read_index` turns what a ``step``/``step_update`` call (or a position record)
passes into a plain Python number, or refuses it, as stock timm's arithmetic would take it.

Used by the timing decision (:mod:`timm_sched_fix._timing`) and the position record
(:mod:`timm_sched_fix._position`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch


def read_index(index: Any, name: str, on_bool: Callable[[], None] | None = None) -> int | float:
    """A schedule index as a plain Python number: every real number stock timm takes (Python and numpy integers and
    floats, 0-d numpy arrays, one-element tensors, ``Fraction``). Integers and integral floats become ``int`` (timm's
    noise cannot seed a float index), and a bool is 0 or 1 as in stock timm (``on_bool`` is called for one).
    ``TypeError`` for anything else, ``ValueError`` for a negative, NaN or infinite index (stock timm would compute a
    negative or NaN LR from it)."""
    if type(index) is int:
        value: int | float = index
    elif isinstance(index, bool):
        if on_bool is not None:
            on_bool()
        value = int(index)
    elif isinstance(index, numbers.Integral):
        value = int(index)
    elif isinstance(index, numbers.Real):
        value = float(index)
        if value.is_integer():  # timm seeds its LR noise with the index, which must then be an int
            value = int(value)
    elif _is_one_number(index):
        return read_index(index.item(), name, on_bool)
    else:
        raise TypeError(f"{name}() index must be a non-negative number, got {index!r} ({type(index).__name__})")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int beyond float range: no schedule computes a value there
        finite = False
    if not finite or value < 0:
        raise ValueError(f"{name}() index must be a finite, non-negative number, got {shown(index)}")
    return value


def shown(value: Any) -> str:
    """``repr(value)`` for a message, an int too long to print in full by its size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {len(str(abs(value))) if value.bit_length() < 10_000 else 'over 3,000'} digits"
    return repr(value)


def _is_one_number(index: Any) -> bool:
    """A one-element tensor or a 0-d numpy array of real numbers (bools included: stock timm takes them as 0/1)."""
    if isinstance(index, torch.Tensor):
        return index.numel() == 1 and not index.is_complex()
    return getattr(index, "ndim", None) == 0 and callable(getattr(index, "item", None)) and \
        getattr(getattr(index, "dtype", None), "kind", "") in ("b", "i", "u", "f")


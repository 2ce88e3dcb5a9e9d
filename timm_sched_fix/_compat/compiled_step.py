"""torch releases: auto mode in a ``torch.compile``d optimizer step (quirk ``compiled_step_traces_hooks``)."""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch

from timm_sched_fix._compat.quirk import Quirk
from timm_sched_fix._compat.torch_releases import TORCH_RELEASE

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


QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "compiled_step_traces_hooks",
        "torch with torch.compile (measured on 2.13 and 2.14)",
        "torch.compile traces optimizer step pre-hooks, so the update count and auto mode's schedule values would be "
        "guards (a recompilation each); from torch 2.13 the fix runs its hook as one operator in the graph, "
        "compiled once",
        lambda: hasattr(torch, "compile"),
    ),
)

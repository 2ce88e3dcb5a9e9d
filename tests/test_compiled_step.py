"""A ``torch.compile``d optimizer step compiles once: no graph after the first step's and no recompilation,
in auto mode and with explicit ``step_update()`` calls, LR noise on, while every step runs with v(k).

Graphs and recompilations are counted by dynamo itself (``torch._dynamo.utils.counters`` and torch's
compilation records), never timed. The LR a step ran with is read off the parameters: SGD with a gradient
of 1 from a parameter of 0 leaves ``-lr``, exactly, in float64. The module compiles a small SGD step four times
(20-60 s on a 2-core CPU), so it runs once, against the environment's own timm.
"""

from __future__ import annotations

import shutil

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat

from support import StepRecorder

pytestmark = [
    pytest.mark.skipif(not compat.UNTRACED_IN_COMPILED_STEP,
                       reason=f"torch {torch.__version__} traces auto mode's hook (compat: before torch 2.13)"),
    pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None,
                       reason="torch.compile's CPU backend needs a C++ compiler"),
    pytest.mark.release_independent("the compiled region holds torch's optimizer and the fix's step hook; timm's "
                                    "schedule runs outside it (explicit calls) or in the hook's eager operator"),
]

STEPS = 60
LR_SCALES = (1.0, 0.5)
SCHEDULE = dict(t_initial=STEPS, warmup_t=6, warmup_lr_init=1e-4, noise_range_t=0, noise_pct=0.2, t_in_epochs=False)


def scheduled(steps: int) -> list[list[float]]:
    """v(k) x lr_scale per group for k < steps, from stock timm's own ``step_update(k)`` with float LRs."""
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": scale}
                                 for scale in LR_SCALES], lr=0.1)
    scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    values = []
    for k in range(steps):
        scheduler.step_update(k)
        values.append([group["lr"] for group in optimizer.param_groups])
    return values


def run_compiled(auto: bool, lr: float | torch.Tensor, steps: int, recorder: bool = False,
                 ) -> tuple[list[list[float]], int, int, list[str], int]:
    """The LR each compiled step ran with (per group), the graphs dynamo compiled by the end of the first step
    and of the last, the recompile reasons and the graph breaks. With ``recorder``, a StepRecorder (a pre-hook
    that reads each LR with ``float()``, which dynamo cannot trace) is registered after the scheduler, and what it
    recorded must be what the steps ran with."""
    import torch._dynamo  # here, not at collection: importing it takes seconds
    from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

    params = [torch.nn.Parameter(torch.zeros(3, dtype=torch.float64)) for _ in LR_SCALES]
    optimizer = torch.optim.SGD([{"params": [param], "lr_scale": scale} for param, scale in zip(params, LR_SCALES)],
                                lr=lr)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=auto, **SCHEDULE)
    recorded = StepRecorder(optimizer) if recorder else None
    torch._dynamo.reset()
    counters.clear()
    clear_compilation_metrics()

    @torch.compile
    def compiled_step() -> None:
        optimizer.step()

    used = []
    first_step_graphs = None
    for k in range(steps):
        with torch.no_grad():
            for param in params:
                param.zero_()
                param.grad = torch.ones_like(param)
        compiled_step()
        used.append([-param[0].item() for param in params])
        if first_step_graphs is None:
            first_step_graphs = counters["stats"]["unique_graphs"]
        if not auto:
            scheduler.step_update(k + 1)
    reasons = [metrics.recompile_reason for metrics in get_compilation_metrics() if metrics.recompile_reason]
    if recorded is not None:
        assert recorded.steps == used
    return used, first_step_graphs, counters["stats"]["unique_graphs"], reasons, sum(counters["graph_break"].values())


@pytest.mark.parametrize("auto", [False, True], ids=["explicit", "auto"])
def test_a_compiled_step_with_a_tensor_lr_compiles_once_and_runs_every_step_with_v_k(auto):
    """The fix's tensor LRs stay the same objects and auto mode's hook runs as one operator in the graph (no
    graph break of its own): after the first step nothing compiles again, through the warmup and with a new
    noisy value every step (traced, auto mode's hook recompiled until dynamo's recompile limit)."""
    used, first_step_graphs, graphs, reasons, breaks = run_compiled(auto, torch.tensor(0.1, dtype=torch.float64),
                                                                    STEPS)
    assert used == scheduled(STEPS)
    assert graphs - first_step_graphs == 0, reasons
    assert reasons == []
    assert breaks == 2  # torch's own, around every Optimizer.step


def test_auto_mode_with_float_lrs_still_applies_the_schedule_in_a_compiled_step():
    """Without a tensor LR the operator has no LR tensor to write: it is given one of its own to write, or the
    compiled graph would drop the call and every step would run with v(0). The float LRs are constants of the
    compiled step (torch recompiles SGD for each new value, with explicit calls as well)."""
    used, *_ = run_compiled(True, 0.1, 4)
    assert used == scheduled(4)


def test_auto_mode_keeps_dynamo_out_of_the_schedule_where_dynamo_runs_torchs_step_wrapper_uncompiled():
    """A pre-hook dynamo cannot trace (a StepRecorder's ``float(lr)``) makes it run torch's step wrapper, hooks
    included, uncompiled while it compiles each function they call: the fix's hook then runs the schedule with
    dynamo off, so no function of the schedule is compiled (compiled, they recompiled on every new value)."""
    used, first_step_graphs, graphs, reasons, _ = run_compiled(True, torch.tensor(0.1, dtype=torch.float64), 20,
                                                               recorder=True)
    assert used == scheduled(20)
    assert graphs - first_step_graphs == 0, reasons
    assert reasons == []

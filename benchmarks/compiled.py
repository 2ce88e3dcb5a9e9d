"""Recompilations of a ``torch.compile``d optimizer step while a timm schedule changes the LR every step.

The same warmup + cosine update schedule drives a compiled Adam step with two param groups (the
second with ``lr_scale``), once per configuration, each from a fresh dynamo state. Recompilations are
counted from torch's own records, not by timing: a compilation of code dynamo had already compiled
(torch's compilation metrics carry its recompile reason); graphs and graph breaks come from
``torch._dynamo.utils.counters``. Wall time is that of the whole run, first compile included, the
median over shuffled rounds after an untimed warm-up run.

What the configurations put into ``param_groups[i]["lr"]``:

- stock timm, float LR: a new Python float each step;
- stock timm, tensor LR: the constructor writes ``warmup_lr_init`` as a float (step 0 runs with it),
  then every ``step_update`` writes new tensors computed from the base tensor;
- fixed, tensor LR: each group's own tensor, the same object every step, filled in place;
- fixed, float LR: a new float each step, as stock;
- fixed, tensor LR, auto mode: as "fixed, tensor LR", written by the optimizer step pre-hook, which
  runs inside the compiled ``optimizer.step()``.

Every run checks that each optimizer step ran with the schedule's value (from an eager stock timm
run, times ``lr_scale``), and the fixed tensor runs that each group kept one tensor object of its own.

    python benchmarks/compiled.py            # 200 steps, 5 rounds (2-3 minutes on a 2-core CPU)
    python benchmarks/compiled.py --smoke    # 8 steps, 1 round: checks it runs; asserts no timings
"""

from __future__ import annotations

import os

# Every configuration compiles from scratch, so no run profits from another's cached kernels.
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import argparse
import math
import platform
import random
import statistics
import time
from dataclasses import dataclass

import timm
import timm.scheduler
import torch
import torch._dynamo
from torch._dynamo.utils import clear_compilation_metrics, counters, get_compilation_metrics

import timm_sched_fix

LR_SCALES = (1.0, 0.5)


@dataclass(frozen=True)
class Configuration:
    label: str
    fixed: bool
    tensor_lr: bool
    auto: bool = False


CONFIGURATIONS = (
    Configuration("stock timm, float LR", fixed=False, tensor_lr=False),
    Configuration("stock timm, tensor LR", fixed=False, tensor_lr=True),
    Configuration("fixed, tensor LR", fixed=True, tensor_lr=True),
    Configuration("fixed, float LR", fixed=True, tensor_lr=False),
    Configuration("fixed, tensor LR, auto mode", fixed=True, tensor_lr=True, auto=True),
)
REFERENCE = "fixed, tensor LR"


@dataclass
class Result:
    graphs: int
    recompilations: int
    graph_breaks: int
    seconds: float
    step_ms: float  # median over the steps: a compiled step's cost, the few compiling steps aside
    first_reason: str


def schedule_of(steps: int) -> dict:
    return dict(t_initial=steps, warmup_t=max(2, steps // 10), warmup_lr_init=1e-4, t_in_epochs=False)


def scheduled_lrs(steps: int) -> list[float]:
    """v(k) for k = 0 .. steps - 1 from an eager stock timm run with a float LR."""
    scheduler = timm.scheduler.CosineLRScheduler(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), **schedule_of(steps))
    values = [scheduler.optimizer.param_groups[0]["lr"]]
    for k in range(1, steps):
        scheduler.step_update(k)
        values.append(scheduler.optimizer.param_groups[0]["lr"])
    return values


def run(configuration: Configuration, steps: int, expected: list[float]) -> Result:
    torch._dynamo.reset()
    counters.clear()
    clear_compilation_metrics()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    optimizer = torch.optim.Adam([{"params": [model.weight], "lr_scale": LR_SCALES[0]},
                                  {"params": [model.bias], "lr_scale": LR_SCALES[1]}],
                                 lr=torch.tensor(0.1) if configuration.tensor_lr else 0.1)
    if configuration.fixed:
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=configuration.auto, **schedule_of(steps))
    else:
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **schedule_of(steps))

    @torch.compile
    def optimizer_step() -> None:
        optimizer.step()

    inputs = torch.randn(8, 16)
    lr_objects = [group["lr"] for group in optimizer.param_groups]
    used = []
    step_seconds = []
    start = last = time.perf_counter()
    for update in range(steps):
        model(inputs).square().mean().backward()
        optimizer_step()
        used.append([float(group["lr"]) for group in optimizer.param_groups])  # what this step ran with
        optimizer.zero_grad()
        if not configuration.auto:
            scheduler.step_update(update + 1)
        now = time.perf_counter()
        step_seconds.append(now - last)
        last = now
    seconds = last - start

    wanted = [[value * scale for scale in LR_SCALES] for value in expected]
    wrong = [k for k, (got, want) in enumerate(zip(used, wanted))  # tensor LRs are float32
             if not all(math.isclose(g, w, rel_tol=1e-6) for g, w in zip(got, want))]
    if wrong:
        raise AssertionError(f"{configuration.label}: steps {wrong[:5]} ran with {used[wrong[0]]}, "
                             f"the schedule says {wanted[wrong[0]]}")
    if configuration.fixed and configuration.tensor_lr:
        same = all(group["lr"] is tensor for group, tensor in zip(optimizer.param_groups, lr_objects))
        if not same or lr_objects[0] is lr_objects[1]:
            raise AssertionError(f"{configuration.label}: the groups did not keep one LR tensor each")
    recompiles = [metrics.recompile_reason for metrics in get_compilation_metrics()
                  if metrics.recompile_reason is not None]
    return Result(graphs=counters["stats"]["unique_graphs"], recompilations=len(recompiles),
                  graph_breaks=sum(counters["graph_break"].values()), seconds=seconds,
                  step_ms=statistics.median(step_seconds) * 1e3,
                  first_reason=" ".join(recompiles[0].splitlines()[0].split()) if recompiles else "")


def cell(values: list) -> str:
    """One value when every round agreed, else all of them."""
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="8 steps, 1 round: checks it runs")
    args = parser.parse_args()
    steps, rounds = (8, 1) if args.smoke else (200, 5)
    torch._dynamo.config.recompile_limit = steps + 8  # count every recompilation; never fall back to eager
    torch._dynamo.utils.set_compilation_metrics_limit(1000)
    print(f"timm {timm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads: {steps} steps of a warmup + cosine "
          f"update schedule, compiled Adam step, 2 param groups, median of {rounds} round(s)"
          + (" (SMOKE)" if args.smoke else ""))
    expected = scheduled_lrs(steps)
    # untimed: process-wide one-time costs (inductor's imports, toolchain checks) fall on no row
    run(Configuration("warm-up", fixed=True, tensor_lr=True), steps, expected)
    results: dict[str, list[Result]] = {configuration.label: [] for configuration in CONFIGURATIONS}
    order = list(CONFIGURATIONS)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for configuration in order:
            results[configuration.label].append(run(configuration, steps, expected))

    reference_seconds = statistics.median(result.seconds for result in results[REFERENCE])
    header = (f"| {'configuration':<27} | {'graphs':>6} | {'recompilations':>14} | {'graph breaks':>12} "
              f"| {'seconds':>7} | {'range, s':>11} | {'× fixed, tensor LR':>18} | {'ms/step':>7} |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for label, runs in results.items():
        seconds = statistics.median(result.seconds for result in runs)
        spread = f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}"
        step_ms = statistics.median(result.step_ms for result in runs)
        print(f"| {label:<27} | {cell([r.graphs for r in runs]):>6} | {cell([r.recompilations for r in runs]):>14} "
              f"| {cell([r.graph_breaks for r in runs]):>12} | {seconds:>7.2f} | {spread:>11} "
              f"| {seconds / reference_seconds:>18.2f} | {step_ms:>7.2f} |")
    print("recompilations: compilations of code dynamo had compiled before (torch's compilation metrics);"
          " graphs, graph breaks: torch._dynamo.utils.counters; seconds: the whole run, compiling included"
          " (median and range over the rounds); ms/step: median step (forward, backward, compiled step, scheduler)")
    for label, runs in results.items():
        if runs[0].first_reason:
            print(f"  {label}, first recompile reason: {runs[0].first_reason}")
    print(f"every run's optimizer steps used the schedule's LR (x lr_scale) at each of the {steps} steps")


if __name__ == "__main__":
    main()

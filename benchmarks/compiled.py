"""Graphs and recompilations of a ``torch.compile``d optimizer step while a timm schedule changes the LR every step.

The same warmup + cosine update schedule drives a compiled Adam step with two param groups (the
second with ``lr_scale``), once per configuration, each from a fresh dynamo state. Graphs come from
dynamo's own counters (``torch._dynamo.utils.counters["stats"]["unique_graphs"]``): all of them, and the
extra ones, compiled after the first optimizer step. Recompilations come from torch's compilation
records (a compilation of code dynamo had already compiled carries its recompile reason), graph breaks
from ``counters["graph_break"]``. Nothing is timed to count them. Wall time is that of the whole run,
first compile included, the median over shuffled rounds after an untimed warm-up run; the per-step
cost is the benchmark thread's CPU time (less disturbed by other jobs than wall time) of the compiled
``optimizer.step()`` plus, for explicit calls, the ``step_update`` call (the part that differs between
the configurations), the median over the steps and then over the rounds.

What the configurations put into ``param_groups[i]["lr"]``:

- stock timm, float LR: a new Python float each step;
- stock timm, tensor LR: the constructor writes ``warmup_lr_init`` as a float (step 0 runs with it),
  then every ``step_update`` writes new tensors computed from the base tensor;
- fixed, tensor LR, explicit calls: each group's own tensor, the same object every step, filled in
  place by the ``step_update`` calls;
- fixed, float LR: a new float each step, as stock;
- fixed, tensor LR, auto mode: as with explicit calls, written by the optimizer step pre-hook, which
  runs inside the compiled ``optimizer.step()`` as one operator (the schedule itself is not traced);
- "..., noise": the same with LR noise on every step (``noise_range_t=0``), drawn from a
  ``torch.Generator`` in Python.

Every run checks that each optimizer step ran with the schedule's value (from an eager stock timm
run, times ``lr_scale``), and the fixed tensor runs that each group kept one tensor object of its own.
Ratios compare each configuration with the explicit calls of the same noise setting.

    python benchmarks/compiled.py            # 200 steps, 5 rounds (3-5 minutes on a 2-core CPU)
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
    noise: bool = False

    @property
    def reference(self) -> str:
        """The explicit-call configuration this one is compared with: the same noise setting."""
        return "fixed, tensor LR, explicit calls, noise" if self.noise else "fixed, tensor LR, explicit calls"


CONFIGURATIONS = (
    Configuration("stock timm, float LR", fixed=False, tensor_lr=False),
    Configuration("stock timm, tensor LR", fixed=False, tensor_lr=True),
    Configuration("fixed, tensor LR, explicit calls", fixed=True, tensor_lr=True),
    Configuration("fixed, float LR", fixed=True, tensor_lr=False),
    Configuration("fixed, tensor LR, auto mode", fixed=True, tensor_lr=True, auto=True),
    Configuration("fixed, tensor LR, explicit calls, noise", fixed=True, tensor_lr=True, noise=True),
    Configuration("fixed, tensor LR, auto mode, noise", fixed=True, tensor_lr=True, auto=True, noise=True),
)


@dataclass
class Result:
    graphs: int
    extra_graphs: int  # compiled after the first optimizer step
    recompilations: int
    graph_breaks: int
    seconds: float
    step_us: float  # median over the steps, thread CPU time: compiled optimizer.step() plus the scheduler call
    first_reason: str


def schedule_of(steps: int, noise: bool) -> dict:
    schedule = dict(t_initial=steps, warmup_t=max(2, steps // 10), warmup_lr_init=1e-4, t_in_epochs=False)
    return dict(schedule, noise_range_t=0, noise_pct=0.2) if noise else schedule


def scheduled_lrs(steps: int, noise: bool) -> list[float]:
    """v(k) for k = 0 .. steps - 1 from an eager stock timm run with a float LR: ``step_update(k)``."""
    scheduler = timm.scheduler.CosineLRScheduler(
        torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1), **schedule_of(steps, noise))
    values = []
    for k in range(steps):
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
    schedule = schedule_of(steps, configuration.noise)
    if configuration.fixed:
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=configuration.auto, **schedule)
    else:
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **schedule)

    @torch.compile
    def optimizer_step() -> None:
        optimizer.step()

    inputs = torch.randn(8, 16)
    lr_objects = [group["lr"] for group in optimizer.param_groups]
    used = []
    step_seconds = []
    first_step_graphs = None
    start = time.perf_counter()
    for update in range(steps):
        model(inputs).square().mean().backward()
        before = time.thread_time()
        optimizer_step()
        between = time.thread_time()
        if first_step_graphs is None:
            first_step_graphs = counters["stats"]["unique_graphs"]
        used.append([float(group["lr"]) for group in optimizer.param_groups])  # what this step ran with
        optimizer.zero_grad()
        if configuration.auto:
            step_seconds.append(between - before)
        else:
            before_call = time.thread_time()
            scheduler.step_update(update + 1)
            step_seconds.append(between - before + time.thread_time() - before_call)
    seconds = time.perf_counter() - start

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
    graphs = counters["stats"]["unique_graphs"]
    return Result(graphs=graphs, extra_graphs=graphs - first_step_graphs, recompilations=len(recompiles),
                  graph_breaks=sum(counters["graph_break"].values()), seconds=seconds,
                  step_us=statistics.median(step_seconds) * 1e6,
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
    expected = {noise: scheduled_lrs(steps, noise) for noise in (False, True)}
    # untimed: process-wide one-time costs (inductor's imports, toolchain checks) fall on no row
    run(Configuration("warm-up", fixed=True, tensor_lr=True), steps, expected[False])
    results: dict[Configuration, list[Result]] = {configuration: [] for configuration in CONFIGURATIONS}
    order = list(CONFIGURATIONS)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for configuration in order:
            results[configuration].append(run(configuration, steps, expected[configuration.noise]))

    by_label = {configuration.label: runs for configuration, runs in results.items()}
    width = max(len(configuration.label) for configuration in CONFIGURATIONS)
    header = (f"| {'configuration':<{width}} | graphs | extra graphs | recompilations | graph breaks | seconds "
              f"| {'range, s':>11} | × explicit calls | µs/step | µs/step × explicit calls |")
    print(header)
    print("|" + "|".join("-" * len(part) for part in header.split("|")[1:-1]) + "|")
    for configuration, runs in results.items():
        reference = by_label[configuration.reference]
        seconds = statistics.median(result.seconds for result in runs)
        spread = f"{min(r.seconds for r in runs):.2f}-{max(r.seconds for r in runs):.2f}"
        step_us = statistics.median(result.step_us for result in runs)
        ratio = seconds / statistics.median(result.seconds for result in reference)
        step_ratio = step_us / statistics.median(result.step_us for result in reference)
        print(f"| {configuration.label:<{width}} | {cell([r.graphs for r in runs]):>6} "
              f"| {cell([r.extra_graphs for r in runs]):>12} | {cell([r.recompilations for r in runs]):>14} "
              f"| {cell([r.graph_breaks for r in runs]):>12} | {seconds:>7.2f} | {spread:>11} | {ratio:>16.2f} "
              f"| {step_us:>7.0f} | {step_ratio:>24.2f} |")
    print("graphs: FX graphs dynamo compiled (torch._dynamo.utils.counters), extra graphs: those compiled after the "
          "first optimizer step; recompilations: compilations of code dynamo had compiled before (torch's "
          "compilation metrics); graph breaks: counters['graph_break']; seconds: the whole run, compiling included "
          "(median and range over the rounds); µs/step: CPU time of the compiled optimizer.step() plus the "
          "step_update() call of explicit calls, median over the steps and the rounds; × explicit calls: against "
          "the explicit calls of the same noise setting")
    for configuration, runs in results.items():
        if runs[0].first_reason:
            print(f"  {configuration.label}, first recompile reason: {runs[0].first_reason}")
    print(f"every run's optimizer steps used the schedule's LR (x lr_scale) at each of the {steps} steps")


if __name__ == "__main__":
    main()

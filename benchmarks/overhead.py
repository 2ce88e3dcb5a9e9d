"""Per-optimizer-step cost of driving a timm schedule: stock timm, the fixed scheduler, torch's LambdaLR.

Every contender is timed in the same process, round-robin in a shuffled order each round, so machine
noise hits all of them alike; the table shows the median per-step cost and the ratio to stock timm.
A fixed scheduler's cost includes its optimizer step pre-hook (run here exactly as torch runs it),
because that hook runs on every optimizer step in every mode.

    python benchmarks/overhead.py            # full run (about a minute)
    python benchmarks/overhead.py --smoke    # CI: runs every contender briefly, prints, asserts nothing
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import statistics
import time
from collections.abc import Callable

import timm
import timm.scheduler
import torch

import timm_sched_fix

SCHEDULE = dict(t_initial=10**7, warmup_t=1000, warmup_lr_init=1e-4, lr_min=1e-5, t_in_epochs=False)


def make_optimizer(groups: int) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.9 ** i}
                            for i in range(groups)], lr=0.1)


def run_step_pre_hooks(optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """What ``optimizer.step()`` adds before the update: call each step pre-hook."""
    hooks = list(optimizer._optimizer_step_pre_hooks.values())

    def run() -> None:
        for hook in hooks:
            hook(optimizer, (), {})

    return run


def contenders(groups: int, noise: bool) -> dict[str, Callable[[int], None]]:
    """name -> function(k) doing what one optimizer step k costs in LR scheduling."""
    schedule = dict(SCHEDULE, noise_range_t=(0, 10**7) if noise else None)
    stock = timm.scheduler.CosineLRScheduler(make_optimizer(groups), **schedule)
    explicit = timm_sched_fix.CosineLRScheduler(make_optimizer(groups), **schedule)
    counting = timm_sched_fix.CosineLRScheduler(make_optimizer(groups), **schedule)
    auto = timm_sched_fix.CosineLRScheduler(make_optimizer(groups), **schedule, auto=True)
    wrapped = timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(make_optimizer(groups), **schedule))
    lambda_optimizer = make_optimizer(groups)
    lambda_lr = torch.optim.lr_scheduler.LambdaLR(
        lambda_optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / 10**7)))
    hooks = {name: run_step_pre_hooks(s.optimizer) for name, s in
             (("explicit", explicit), ("counting", counting), ("auto", auto), ("wrap", wrapped))}

    def fixed_explicit(k: int) -> None:
        hooks["explicit"]()
        explicit.step_update(k + 1)

    def fixed_counting(k: int) -> None:
        hooks["counting"]()
        counting.step_update()

    def fixed_wrap(k: int) -> None:
        hooks["wrap"]()
        wrapped.step_update(k + 1)

    return {
        "stock timm step_update(k)": lambda k: stock.step_update(k + 1),
        "fixed, explicit index": fixed_explicit,
        "fixed, counting": fixed_counting,
        "fixed, auto (hook only)": lambda k: hooks["auto"](),
        "wrap(), explicit index": fixed_wrap,
        "torch LambdaLR.step()": lambda k: lambda_lr.step(),
    }


def measure(groups: int, noise: bool, rounds: int, calls: int) -> dict[str, float]:
    """Median microseconds per step over ``rounds`` interleaved rounds of ``calls`` steps each."""
    functions = contenders(groups, noise)
    samples: dict[str, list[float]] = {name: [] for name in functions}
    counters = dict.fromkeys(functions, 0)
    order = list(functions)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            function, start_k = functions[name], counters[name]
            start = time.thread_time()
            for k in range(start_k, start_k + calls):
                function(k)
            samples[name].append((time.thread_time() - start) / calls * 1e6)
            counters[name] = start_k + calls
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few calls each: checks it runs, measures nothing")
    args = parser.parse_args()
    rounds, base_calls = (2, 20) if args.smoke else (15, 2000)
    print(f"timm {timm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads"
          + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    header = f"| {'per optimizer step':<28} | {'groups':>6} | {'noise':>5} | {'µs':>8} | {'× stock':>7} | {'× LambdaLR':>10} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for groups in (1, 256):
        for noise in (False, True):
            calls = max(1, base_calls // groups * 4) if groups > 1 else base_calls
            result = measure(groups, noise, rounds, calls)
            stock, peer = result["stock timm step_update(k)"], result["torch LambdaLR.step()"]
            for name, micros in result.items():
                print(f"| {name:<28} | {groups:>6} | {noise!s:>5} | {micros:>8.2f} | {micros / stock:>7.2f} "
                      f"| {micros / peer:>10.2f} |")


if __name__ == "__main__":
    main()

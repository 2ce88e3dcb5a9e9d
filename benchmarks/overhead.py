"""Per-optimizer-step cost of driving a timm schedule: stock timm, the fixed scheduler, torch's LambdaLR.

Every contender is timed in the same process, round-robin in a shuffled order each round, so machine
noise hits all of them alike; the table shows the median per-step cost and the median of the per-round
ratios to stock timm and to LambdaLR (each round runs every contender once, side by side).
A fixed scheduler's cost includes its optimizer step pre-hook (called here as torch calls it), because
that hook runs on every optimizer step in every mode.

    python benchmarks/overhead.py            # full run (about a minute)
    python benchmarks/overhead.py --smoke    # CI: runs every contender briefly, prints, asserts nothing
    python benchmarks/compare_checkouts.py --against ../before   # this checkout and another, side by side
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import re
import statistics
import time
import warnings
from collections.abc import Callable

import timm
import timm.scheduler
import torch

import timm_sched_fix

STOCK, PEER = "stock timm step_update(k)", "torch LambdaLR.step()"
SCHEDULE = dict(t_initial=10**7, warmup_t=1000, warmup_lr_init=1e-4, lr_min=1e-5, t_in_epochs=False)


def make_optimizer(groups: int) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": 0.9 ** i}
                            for i in range(groups)], lr=0.1)


def step_pre_hook(optimizer: torch.optim.Optimizer) -> Callable[..., None]:
    """The fix's one optimizer step hook, which ``optimizer.step()`` calls as ``hook(optimizer, args, kwargs)`` in
    its loop over the pre-hooks: what the hook adds to a step is that call. (SGD's steps cannot nest, so the fix
    adds no post-hook to it.)"""
    (hook,) = optimizer._optimizer_step_pre_hooks.values()
    assert not optimizer._optimizer_step_post_hooks
    return hook


def contenders(groups: int, noise: bool) -> dict[str, Callable[[int], Callable[[int], None]]]:
    """name -> a function that builds the contender at schedule position ``k0`` and returns ``step(k)``: what
    optimizer step k costs in LR scheduling. Built afresh for every round, so ``patch()`` (which instruments
    timm's classes for the whole process) is in effect only during its own rounds and every other contender
    runs on stock timm."""
    schedule = dict(SCHEDULE, noise_range_t=(0, 10**7) if noise else None)

    def stock(k0: int) -> Callable[[int], None]:
        scheduler = timm.scheduler.CosineLRScheduler(make_optimizer(groups), **schedule)
        scheduler.step_update(k0)

        def step(k: int) -> None:
            scheduler.step_update(k + 1)

        return step

    def fixed(build: Callable[[], object], call: str) -> Callable[[int], Callable[[int], None]]:
        def make(k0: int) -> Callable[[int], None]:
            scheduler = build()
            scheduler.step_update(k0)  # the position the first timed step continues from
            optimizer = scheduler.optimizer
            hook, args, kwargs = step_pre_hook(optimizer), (optimizer,), {}

            def explicit(k: int) -> None:
                hook(optimizer, args, kwargs)
                scheduler.step_update(k + 1)

            def counting(k: int) -> None:
                hook(optimizer, args, kwargs)
                scheduler.step_update()

            def auto(k: int) -> None:
                hook(optimizer, args, kwargs)

            step = {"explicit": explicit, "counting": counting, "auto": auto}[call]
            step.scheduler = scheduler  # type: ignore[attr-defined]  # a scheduler no longer referenced stops acting
            return step

        return make

    def dropin(**options: object) -> Callable[[], object]:
        return lambda: timm_sched_fix.CosineLRScheduler(make_optimizer(groups), **schedule, **options)

    def wrapped() -> object:
        return timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(make_optimizer(groups), **schedule))

    def patched() -> object:
        timm_sched_fix.patch()  # undone by measure() after the round
        return timm.scheduler.CosineLRScheduler(make_optimizer(groups), **schedule)

    def lambda_lr(k0: int) -> Callable[[int], None]:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            make_optimizer(groups), lambda k: 0.5 * (1 + math.cos(math.pi * k / 10**7)))

        def step(k: int) -> None:
            scheduler.step()

        return step

    return {
        STOCK: stock,
        "fixed, explicit index": fixed(dropin(), "explicit"),
        "fixed, counting": fixed(dropin(), "counting"),
        "fixed, auto (hook only)": fixed(dropin(auto=True), "auto"),
        "wrap(), explicit index": fixed(wrapped, "explicit"),
        "patch(), explicit index": fixed(patched, "explicit"),
        PEER: lambda_lr,
    }


def measure(groups: int, noise: bool, rounds: int, calls: int) -> dict[str, tuple[float, float, float]]:
    """name -> (median CPU µs per step, median ratio to stock, median ratio to LambdaLR) over ``rounds``
    interleaved rounds of ``calls`` steps each; the ratios are taken within each round, side by side.

    CPU time of this thread (``time.thread_time``), not wall time: on a shared machine the time other
    processes run while this one waits would otherwise land on whichever contender was running."""
    makers = contenders(groups, noise)
    samples: dict[str, list[float]] = {name: [] for name in makers}
    order = list(makers)
    for round_ in range(rounds):
        random.shuffle(order)
        for name in order:
            start_k = 10_000 + round_ * calls  # past the warmup, as most of a run is
            step = makers[name](start_k)
            try:
                start = time.thread_time()
                for k in range(start_k, start_k + calls):
                    step(k)
                samples[name].append((time.thread_time() - start) / calls * 1e6)
            finally:
                timm_sched_fix.unpatch()
    return {name: (statistics.median(values),
                   statistics.median(v / s for v, s in zip(values, samples[STOCK])),
                   statistics.median(v / p for v, p in zip(values, samples[PEER])))
            for name, values in samples.items()}


def measure_all(rounds: int, base_calls: int) -> list[tuple[int, bool, str, tuple[float, float, float]]]:
    """Every setting of the table: ``(groups, noise, contender, (µs, × stock, × LambdaLR))`` rows."""
    rows = []
    for groups in (1, 256):
        for noise in (False, True):
            calls = max(1, base_calls // groups * 4) if groups > 1 else base_calls
            for name, figures in measure(groups, noise, rounds, calls).items():
                rows.append((groups, noise, name, figures))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a few calls each: checks it runs, measures nothing")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds per setting (default 31)")
    parser.add_argument("--json", action="store_true",
                        help="print the rows as JSON (for benchmarks/compare_checkouts.py) instead of the table")
    args = parser.parse_args()
    rounds, base_calls = (2, 20) if args.smoke else (31, 2000)
    rounds = args.rounds or rounds
    # LambdaLR stepped without optimizer steps: torch's reminder about the call order, irrelevant here
    warnings.filterwarnings("ignore", re.escape("Detected call of `lr_scheduler.step()` before"), UserWarning)
    if args.json:
        print(json.dumps({"package": timm_sched_fix.__file__, "rows": measure_all(rounds, base_calls)}))
        return
    print(f"timm {timm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {torch.get_num_threads()} torch threads"
          + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    header = f"| {'per optimizer step':<28} | {'groups':>6} | {'noise':>5} | {'µs':>8} | {'× stock':>7} | {'× LambdaLR':>10} |"
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    for groups, noise, name, (micros, to_stock, to_peer) in measure_all(rounds, base_calls):
        print(f"| {name:<28} | {groups:>6} | {noise!s:>5} | {micros:>8.2f} | {to_stock:>7.2f} | {to_peer:>10.2f} |")


if __name__ == "__main__":
    main()

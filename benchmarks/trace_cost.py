"""Cost of ``timm-sched-fix trace`` on a long per-update schedule, against calling stock timm once per step.

The trace of 300 epochs x 5,000 updates (1.5 million optimizer steps) of train.py's cosine schedule with
warmup, built by timm's own factory as ``trace --sched-on-updates`` builds it, without and with LR noise
over the whole run. In one process, interleaved in shuffled rounds so machine noise hits both alike:

- trace: what the command computes after its imports (``compute_trace``: stock and fixed LR of every
  step, then the summary line and the table);
- stock loop: the yardstick of issue #6, a plain loop calling the stock scheduler's ``step_update(t)``
  once per t for the same schedule (nothing else: no read-back, no storage).

Then the whole command, once per schedule, as a subprocess (wall time, torch and timm imports included),
and a bare ``import timm_sched_fix.trace.compute`` (torch and timm) for the share of imports.

    python benchmarks/trace_cost.py            # full run (a few minutes on 2 cores)
    python benchmarks/trace_cost.py --smoke    # CI: a 10 x 30 trace, prints, measures nothing
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import timm
import torch

from timm_sched_fix.trace import cli as tr
from timm_sched_fix.trace import compute as trace_steps
from timm_sched_fix.trace import settings as trace_settings

SCHEDULES = {"cosine, warmup": [], "cosine, warmup, noise": ["--lr-noise", "0", "1"]}
LOOP = "timm"


def trace_arguments(epochs: int, updates: int, noise_flags: list[str]) -> list[str]:
    return ["trace", "--epochs", str(epochs), "--sched-on-updates", "--updates-per-epoch", str(updates),
            "--lr", "0.1", "--loop", LOOP, *noise_flags]


def settings_of(arguments: list[str]) -> argparse.Namespace:
    """The settings ``trace`` resolves from these arguments (train.py's defaults otherwise: 5 warmup epochs)."""
    parser = argparse.ArgumentParser()
    tr.add_parser(parser.add_subparsers())
    return trace_settings.resolve_settings(parser.parse_args(arguments))


def contenders(settings: argparse.Namespace, updates: int) -> dict[str, Callable[[], object]]:
    def trace() -> None:
        computed = trace_steps.compute_trace(settings, LOOP, updates)
        trace_steps.summary_line(computed)
        trace_steps.table_lines(computed, per_update=False)

    def stock_loop() -> None:
        scheduler, epochs = trace_steps._create(settings, trace_steps._optimizer(settings.lr), fixed=False,
                                                updates_per_epoch=updates, options={})
        step_update = scheduler.step_update
        for t in range(epochs * updates):
            step_update(t)

    return {"trace (compute_trace + summary + table)": trace, "stock step_update(t) once per t": stock_loop}


def measure(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Wall seconds of each function per round, in a shuffled order each round."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    order = list(functions)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            functions[name]()
            samples[name].append(time.perf_counter() - start)
    return samples


def wall_seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def load() -> str:
    return "load average " + " ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="a 10 x 30 trace, one round: checks it runs")
    args = parser.parse_args()
    epochs, updates, rounds = (10, 30, 1) if args.smoke else (300, 5000, 5)
    print(f"timm {timm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPUs, {load()}"
          + (" (SMOKE: numbers mean nothing)" if args.smoke else ""))
    print(f"{epochs} epochs x {updates:,} updates = {epochs * updates:,} optimizer steps, --loop {LOOP}; "
          f"seconds per run, median and range of {rounds} interleaved rounds")
    header = f"| {'schedule':<22} | {'contender':<40} | {'median s':>8} | {'range s':>13} | {'× stock loop':>12} |"
    print(header)
    print("|" + "|".join("-" * len(cell) for cell in header.split("|")[1:-1]) + "|")
    for schedule, noise_flags in SCHEDULES.items():
        samples = measure(contenders(settings_of(trace_arguments(epochs, updates, noise_flags)), updates), rounds)
        stock = statistics.median(samples["stock step_update(t) once per t"])
        for name, seconds in samples.items():
            median = statistics.median(seconds)
            print(f"| {schedule:<22} | {name:<40} | {median:>8.2f} | {min(seconds):>6.2f}-{max(seconds):<6.2f} "
                  f"| {median / stock:>12.2f} |")
    print()
    imports = wall_seconds([sys.executable, "-c", "import timm_sched_fix.trace.compute"])
    print(f"python -c 'import timm_sched_fix.trace.compute' (torch, timm): {imports:.2f} s wall")
    for schedule, noise_flags in SCHEDULES.items():
        arguments = trace_arguments(epochs, updates, noise_flags)
        seconds = wall_seconds([sys.executable, "-m", "timm_sched_fix", *arguments])
        print(f"timm-sched-fix {' '.join(arguments)}: {seconds:.2f} s wall ({schedule})")
    print(load())


if __name__ == "__main__":
    main()

"""Added cost per optimizer step while ``timm-sched-fix audit`` records a script, measured side by side.

One training step of a small loop: the next batch from a ``DataLoader`` (batch size 1, in-process), a real
``optimizer.step()`` of SGD on one tiny parameter (so the fixed cost of a step is small and the audit's share
shows), then ``scheduler.step_update(k)``: stock timm and fixed (``patch()``), each without and with the audit's
recorder installed (its wrappers on ``DataLoader`` and the scheduler's methods, torch's global optimizer step
hooks, and the per-step record of every param group's LR). Every variant runs in the same process,
round-robin in a shuffled order each round, timed in CPU time of this process (a shared machine's other
processes do not count); the table shows the median cost per step and the median of the per-round
differences (audited minus not audited).

Not included: what the audit does once the script has ended (v(t) for every step, about one stock
``step_update`` each, and the report).

    python benchmarks/audit_cost.py            # full run (about a minute)
    python benchmarks/audit_cost.py --smoke    # CI: runs every variant briefly, prints, asserts nothing
"""

from __future__ import annotations

import argparse
import platform
import random
import statistics
import time

import timm
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix.audit.record import Recorder

VARIANTS = ("stock", "stock, audited", "fixed (patch)", "fixed (patch), audited")


def one_round(variant: str, steps: int) -> float:
    """Seconds per optimizer step of ``steps`` steps of the loop under ``variant``."""
    recorder = Recorder() if variant.endswith("audited") else None
    patch = timm_sched_fix.patched() if variant.startswith("fixed") else None
    if patch is not None:
        patch.__enter__()
    if recorder is not None:
        recorder.install()
    try:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=10**6, warmup_t=100, warmup_lr_init=1e-4,
                                                     t_in_epochs=False)
        loader = torch.utils.data.DataLoader(torch.zeros(steps, 1), batch_size=1)
        parameter = optimizer.param_groups[0]["params"][0]
        parameter.grad = torch.ones_like(parameter)
        start = time.process_time()  # CPU time: what other processes on a shared machine take is not counted
        for k, _batch in enumerate(loader):
            optimizer.step()
            scheduler.step_update(k + 1)
        elapsed = time.process_time() - start
    finally:
        if recorder is not None:
            recorder.uninstall()
        if patch is not None:
            patch.__exit__(None, None, None)
    if recorder is not None:
        assert len(recorder.records[0].lrs) == steps, "the recorder must have seen every step"
    return elapsed / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="a few short rounds, for CI")
    args = parser.parse_args()
    rounds, steps = (3, 200) if args.smoke else (31, 5000)
    times: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    order = list(VARIANTS)
    for _ in range(rounds):
        random.shuffle(order)
        for variant in order:
            times[variant].append(one_round(variant, steps))
    print(f"timm {timm.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}; {rounds} rounds of {steps:,} steps")
    print(f"{'variant':<24} {'us/step (median)':>17} {'added by the audit (median per round)':>40}")
    for variant in VARIANTS:
        median = statistics.median(times[variant]) * 1e6
        added = ""
        if variant.endswith("audited"):
            base = variant.removesuffix(", audited")
            deltas = [(a - b) * 1e6 for a, b in zip(times[variant], times[base])]
            added = f"{statistics.median(deltas):+.2f} us ({statistics.median(deltas) / (median - statistics.median(deltas)) * 100:+.0f}%)"
        print(f"{variant:<24} {median:>17.2f} {added:>40}")


if __name__ == "__main__":
    main()

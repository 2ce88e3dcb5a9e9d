"""Recompilations of a ``torch.compile``d optimizer step while a timm schedule changes the LR every step.

Three runs of the same warmup + cosine update schedule, each in a fresh dynamo state, counted with
torch's own counters (``torch._dynamo.utils.counters``), not by timing:

- stock timm, float LRs: the LR is a Python constant baked into the graph, so it recompiles;
- stock timm, tensor LRs: timm replaces the tensor by a new one each step;
- fixed, tensor LRs: the fix fills the same tensor in place.

    python benchmarks/compiled.py            # 200 steps each (several minutes on a 2-core CPU)
    python benchmarks/compiled.py --smoke    # 8 steps each: checks it runs
"""

from __future__ import annotations

import os

# Every configuration compiles from scratch, so no run profits from another's cached kernels.
os.environ.setdefault("TORCHINDUCTOR_FX_GRAPH_CACHE", "0")
os.environ.setdefault("TORCHINDUCTOR_AUTOGRAD_CACHE", "0")

import argparse
import time
import warnings

import timm
import timm.scheduler
import torch
import torch._dynamo
from torch._dynamo.utils import counters

import timm_sched_fix


def run(label: str, steps: int) -> tuple[int, int, float]:
    """(frames compiled, graphs compiled, wall seconds) for one configuration; the fixed run compiles
    one graph, so every further frame or graph is a recompilation."""
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Linear(16, 16)
    lr = 0.1 if label == "stock timm, float LR" else torch.tensor(0.1)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = dict(t_initial=steps, warmup_t=steps // 10, warmup_lr_init=1e-4, t_in_epochs=False)
    if label.startswith("fixed"):
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **schedule)
    else:
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **schedule)

    @torch.compile
    def optimizer_step() -> None:
        optimizer.step()

    inputs = torch.randn(8, 16)
    start = time.perf_counter()
    for update in range(steps):
        model(inputs).square().mean().backward()
        optimizer_step()
        optimizer.zero_grad()
        scheduler.step_update(update + 1)
    seconds = time.perf_counter() - start
    return counters["frames"]["total"], counters["stats"]["unique_graphs"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="8 steps each: checks it runs")
    args = parser.parse_args()
    steps = 8 if args.smoke else 200
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, steps + 8)
    warnings.filterwarnings("ignore", category=UserWarning)
    print(f"timm {timm.__version__}, torch {torch.__version__}: {steps} steps of a warmup + cosine update schedule, "
          "compiled Adam step" + (" (SMOKE)" if args.smoke else ""))
    results = {label: run(label, steps) for label in
               ("stock timm, float LR", "stock timm, tensor LR", "fixed, tensor LR")}
    fixed_frames, fixed_graphs, fixed_seconds = results["fixed, tensor LR"]
    print(f"| {'configuration':<22} | {'frames':>6} | {'graphs':>6} | {'recompiles vs fixed':>19} | {'seconds':>8} "
          f"| {'× fixed':>7} |")
    print(f"|{'-' * 24}|{'-' * 8}|{'-' * 8}|{'-' * 21}|{'-' * 10}|{'-' * 9}|")
    for label, (frames, graphs, seconds) in results.items():
        print(f"| {label:<22} | {frames:>6} | {graphs:>6} | {frames - fixed_frames:>19} | {seconds:>8.2f} "
              f"| {seconds / fixed_seconds:>7.2f} |")
    print(f"fixed: {fixed_graphs} graph compiled, {fixed_frames} frames; nothing recompiled after the first compile"
          if fixed_graphs == 1 else f"fixed: {fixed_graphs} graphs compiled: RECOMPILED")


if __name__ == "__main__":
    main()

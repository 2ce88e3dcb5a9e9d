"""One rank of tests/test_distributed.py (run as a script): trains a tiny model under torch.distributed (gloo,
127.0.0.1) with every fixed scheduler class and adapter, averaging gradients across ranks, and writes the
per-step LR trace as exact hex floats. Arguments: RANK WORLD_SIZE PORT OUT."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import timm.scheduler
import torch
import torch.distributed as dist

import timm_sched_fix

from support import ADAPTERS, check_worker_imports, installed_classes, stock_scheduler

EPOCHS, BATCHES = 4, 3


def kwargs_for(name: str, on_epochs: bool) -> dict:
    """Noise on every class that has it (a fixed noise seed: stock Plateau's default None would draw one
    per process, which no fix can make agree)."""
    periods = EPOCHS if on_epochs else EPOCHS * BATCHES
    noise = dict(noise_range_t=(1, periods), noise_pct=0.5, noise_seed=7)
    if name == "PlateauLRScheduler":
        return dict(warmup_t=1, warmup_lr_init=1e-3, mode="min", patience_t=0, **noise)
    per_class = {
        "StepLRScheduler": dict(decay_t=2, decay_rate=0.5),
        "MultiStepLRScheduler": dict(decay_t=[1, 3], decay_rate=0.5),
        "WSDLRScheduler": dict(t_initial=periods, decay_t=max(1, periods // 2)),
    }
    return dict(per_class.get(name, dict(t_initial=periods)), warmup_t=1, warmup_lr_init=1e-3, t_in_epochs=on_epochs,
                **noise)


def run_case(name: str, on_epochs: bool, adapter: str) -> list[list[str]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    auto = not on_epochs
    if adapter == "dropin":
        scheduler = getattr(timm_sched_fix, name)(optimizer, **kwargs_for(name, on_epochs), auto=auto)
    elif adapter == "wrap":
        scheduler = timm_sched_fix.wrap(stock_scheduler(name, optimizer, kwargs_for(name, on_epochs)), auto=auto)
    else:
        with timm_sched_fix.patched(auto=auto):
            return run_loop(getattr(timm.scheduler, name)(optimizer, **kwargs_for(name, on_epochs)), model,
                            optimizer, on_epochs)
    return run_loop(scheduler, model, optimizer, on_epochs)


def run_loop(scheduler, model, optimizer, on_epochs: bool) -> list[list[str]]:
    trace: list[list[str]] = []
    optimizer.register_step_pre_hook(lambda opt, a, k: trace.append([float(g["lr"]).hex() for g in opt.param_groups]))
    rank = dist.get_rank()
    for epoch in range(EPOCHS):
        for _ in range(BATCHES):
            optimizer.zero_grad()
            model(torch.full((2, 4), float(rank + 1))).sum().backward()
            for parameter in model.parameters():
                dist.all_reduce(parameter.grad)
                parameter.grad /= dist.get_world_size()
            optimizer.step()
        if on_epochs:
            loss = torch.tensor([float(rank + epoch % 2)])
            dist.all_reduce(loss)  # Plateau's metric: the same on every rank
            scheduler.step(epoch + 1, loss.item())
    return trace


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    check_worker_imports()
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=120))
    try:
        traces = {}
        for name in installed_classes():
            for on_epochs in (True, False):
                if name == "PlateauLRScheduler" and not on_epochs:
                    continue
                for adapter in ADAPTERS:
                    traces[f"{name}-{'epoch' if on_epochs else 'update'}-{adapter}"] = run_case(name, on_epochs,
                                                                                                 adapter)
    finally:
        dist.destroy_process_group()
    with open(out, "w") as file:
        json.dump(traces, file)


if __name__ == "__main__":
    main()

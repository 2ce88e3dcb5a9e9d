"""The training script of tests/test_launch.py, as a user's: stock timm and torch code only, it never imports the
fix. Each rank trains a tiny model on gloo (127.0.0.1), averaging gradients across ranks, with a
``TanhLRScheduler(t_initial=10)`` stepped as timm's train.py does, and writes the LR every optimizer step ran with
(hex floats) to OUT/rank<R>.json. Started as:

    launch_worker.py torchrun OUT              one rank of a launcher (RANK, WORLD_SIZE, MASTER_* from it)
    launch_worker.py spawn OUT PORT            starts both ranks with torch.multiprocessing.spawn
    launch_worker.py subprocess OUT PORT       starts both ranks as `python launch_worker.py rank ...` subprocesses
    launch_worker.py rank OUT PORT RANK        one such subprocess
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
from timm.scheduler import TanhLRScheduler

WORLD_SIZE = 2
EPOCHS, BATCHES = 2, 2


def train(rank: int, out: str, init_method: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE,
                            timeout=timedelta(seconds=120))
    try:
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        scheduler = TanhLRScheduler(optimizer, t_initial=10)
        lrs: list[str] = []
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(float(opt.param_groups[0]["lr"]).hex()))
        for epoch in range(EPOCHS):
            for _ in range(BATCHES):
                optimizer.zero_grad()
                model(torch.full((2, 2), float(rank + 1))).sum().backward()
                for parameter in model.parameters():
                    dist.all_reduce(parameter.grad)
                    parameter.grad /= WORLD_SIZE
                optimizer.step()
            scheduler.step(epoch + 1)
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out, f"rank{rank}.json"), "w") as file:
        json.dump({"rank": rank, "pid": os.getpid(), "lrs": lrs}, file)


def main() -> None:
    how, out = sys.argv[1], sys.argv[2]
    if how == "torchrun":
        assert int(os.environ["WORLD_SIZE"]) == WORLD_SIZE
        train(int(os.environ["RANK"]), out, "env://")
    elif how == "spawn":
        import torch.multiprocessing

        torch.multiprocessing.spawn(train, args=(out, f"tcp://127.0.0.1:{sys.argv[3]}"), nprocs=WORLD_SIZE)
    elif how == "subprocess":
        ranks = [subprocess.Popen([sys.executable, __file__, "rank", out, sys.argv[3], str(rank)])
                 for rank in range(WORLD_SIZE)]
        codes = [rank.wait(timeout=300) for rank in ranks]
        sys.exit(max(codes))
    elif how == "rank":
        train(int(sys.argv[4]), out, f"tcp://127.0.0.1:{sys.argv[3]}")
    else:
        sys.exit(f"unknown launch {how!r}")


if __name__ == "__main__":
    main()

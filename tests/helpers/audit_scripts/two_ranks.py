"""One rank of a torch.distributed (gloo) run started by torchrun: DDP over a tiny model, a per-epoch timm
``CosineLRScheduler`` stepped as timm's train.py does (``step(epoch + 1)``). With ``--rank-1-lr X`` rank 1 builds its
optimizer with base LR X instead of 0.1, so its LRs differ from rank 0's."""

import argparse
import os

import torch
import torch.distributed as dist
from timm.scheduler import CosineLRScheduler
from torch.nn.parallel import DistributedDataParallel


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rank-1-lr", type=float)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = DistributedDataParallel(torch.nn.Linear(8, 1))
    lr = args.rank_1_lr if rank == 1 and args.rank_1_lr else 0.1
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    scheduler = CosineLRScheduler(optimizer, t_initial=4, warmup_t=1, warmup_lr_init=1e-3)
    for epoch in range(4):
        for _ in range(3):
            loss = model(torch.randn(4, 8)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step(epoch + 1)
    dist.barrier()
    dist.destroy_process_group()
    print(f"rank {rank} of {os.environ['WORLD_SIZE']} done")


if __name__ == "__main__":
    main()

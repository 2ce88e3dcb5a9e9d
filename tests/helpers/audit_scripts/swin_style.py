"""A Swin-style training loop (microsoft/Swin-Transformer main.py): a per-update ``CosineLRScheduler``
(``t_in_epochs=False``, lengths in updates) and ``lr_scheduler.step_update(epoch * num_steps + idx)`` after optimizer
step ``idx`` of each epoch, the index of the update just done."""

import argparse

import torch
from timm.scheduler import CosineLRScheduler
from torch.utils.data import DataLoader


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(torch.randn(12, 8), batch_size=4)  # 3 batches per epoch
    num_steps = len(loader)
    lr_scheduler = CosineLRScheduler(optimizer, t_initial=args.epochs * num_steps, lr_min=1e-4, warmup_lr_init=1e-3,
                                     warmup_t=num_steps, cycle_limit=1, t_in_epochs=False)
    for epoch in range(args.epochs):
        for idx, inputs in enumerate(loader):
            loss = model(inputs).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            lr_scheduler.step_update(epoch * num_steps + idx)


if __name__ == "__main__":
    main()

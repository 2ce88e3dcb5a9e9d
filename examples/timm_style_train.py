"""A training script that drives its scheduler exactly like timm's train.py, and knows nothing of the fix.

It stands for the scripts people run but cannot edit: ``create_scheduler_v2`` with warmup and LR noise,
per-update schedule (``step_on_epochs=False``, ``updates_per_epoch``), ``step_update(num_updates)`` after
every optimizer step and ``step(epoch + 1, metric)`` after every epoch. Stock timm runs its first batch
without the noise the schedule defines for it; ``timm-sched-fix run`` this script and it does not.
timm before 0.9 has no ``create_scheduler_v2``: there the script builds the same cosine schedule the way
train.py then did, ``create_scheduler(args, optimizer)``, which counts epochs, so stock runs the whole
first epoch without the noise.
``--trace FILE`` writes the LR every optimizer step ran with, as JSON; ``--lr-noise-std`` is train.py's flag of the
same name (timm 1.0.31 scales the normal noise by it, earlier releases ignore it).
"""

import argparse
import json

import timm.scheduler
import torch


def create_lr_scheduler(optimizer, epochs, updates_per_epoch, noise_std=1.0):
    """``(scheduler, num_epochs)`` as the installed timm's train.py builds them: per update from timm 0.9."""
    if hasattr(timm.scheduler, "create_scheduler_v2"):
        return timm.scheduler.create_scheduler_v2(
            optimizer, sched="cosine", num_epochs=epochs, warmup_epochs=1, warmup_lr=1e-3, min_lr=1e-4,
            noise=(0.0, 0.5), noise_std=noise_std, step_on_epochs=False, updates_per_epoch=updates_per_epoch)
    args = argparse.Namespace(sched="cosine", epochs=epochs, warmup_epochs=1, warmup_lr=1e-3, min_lr=1e-4,
                              lr_noise=(0.0, 0.5), lr_noise_std=noise_std, decay_rate=0.1, cooldown_epochs=0)
    return timm.scheduler.create_scheduler(args, optimizer)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--updates-per-epoch", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--lr-noise-std", type=float, default=1.0)
    parser.add_argument("--trace", help="write the LR of every optimizer step to this JSON file")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
    lr_scheduler, num_epochs = create_lr_scheduler(optimizer, args.epochs, args.updates_per_epoch,
                                                     args.lr_noise_std)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, hook_args, hook_kwargs: lrs.append(opt.param_groups[0]["lr"]))

    num_updates = 0
    for epoch in range(num_epochs):
        for _ in range(args.updates_per_epoch):
            inputs = torch.randn(4, 8)
            loss = model(inputs).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            num_updates += 1
            lr_scheduler.step_update(num_updates=num_updates, metric=loss.item())
        lr_scheduler.step(epoch + 1, loss.item())

    print(f"trained {num_epochs} epochs, {num_updates} updates, last LR {optimizer.param_groups[0]['lr']:.6g}")
    if args.trace:
        with open(args.trace, "w") as trace_file:
            json.dump(lrs, trace_file)


if __name__ == "__main__":
    main()

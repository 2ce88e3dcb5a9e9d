"""A DeiT-style training loop (facebookresearch/deit main.py): timm's ``create_scheduler(args, optimizer)``, which
counts epochs, and ``lr_scheduler.step(epoch)`` after each epoch, the index of the epoch just done. On a resume it
loads the checkpoint's optimizer and scheduler state and calls ``lr_scheduler.step(start_epoch)`` before the loop,
as DeiT does (``--no-resume-step`` leaves that call out, as Swin's resume does).

``--save FILE --stop-after E`` writes a checkpoint after epoch E and stops; ``--resume FILE`` continues from it.
"""

import argparse

import torch
from timm.scheduler import create_scheduler
from torch.utils.data import DataLoader


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--save")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--resume")
    parser.add_argument("--no-resume-step", action="store_true")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = torch.nn.Linear(8, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = argparse.Namespace(sched="cosine", epochs=args.epochs, warmup_epochs=2, warmup_lr=1e-3, min_lr=1e-4,
                                  lr_noise=None, decay_rate=0.1, cooldown_epochs=0)
    lr_scheduler, _ = create_scheduler(schedule, optimizer)
    loader = DataLoader(torch.randn(12, 8), batch_size=4)  # 3 batches per epoch

    start_epoch = 0
    if args.resume:
        checkpoint = torch.load(args.resume, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
        start_epoch = checkpoint["epoch"] + 1
        if not args.no_resume_step:
            lr_scheduler.step(start_epoch)

    for epoch in range(start_epoch, args.epochs):
        for inputs in loader:
            loss = model(inputs).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        lr_scheduler.step(epoch)
        if args.save and epoch == args.stop_after:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "lr_scheduler": lr_scheduler.state_dict(), "epoch": epoch}, args.save)
            return


if __name__ == "__main__":
    main()

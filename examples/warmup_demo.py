"""Per-step LR of a warmup + cosine schedule, stock timm vs fixed, called the way Lightning documents.

6 epochs of 3 batches, ``scheduler.step(epoch=current_epoch)`` after each epoch. Stock timm runs the
schedule one epoch late; the fixed scheduler (``on_lag="fix"``) runs every step with v(epoch).
"""

import timm.scheduler
import torch

import timm_sched_fix

EPOCHS, BATCHES = 6, 3
SCHEDULE = dict(t_initial=EPOCHS, warmup_t=2, warmup_lr_init=1e-3)


def run(make_scheduler):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    for epoch in range(EPOCHS):
        for _ in range(BATCHES):
            optimizer.step()
        scheduler.step(epoch=epoch)  # Lightning's documented lr_scheduler_step override
    return lrs


def schedule_values():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    values = []
    for epoch in range(EPOCHS):
        reference.step(epoch)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def main():
    stock = run(lambda optimizer: timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE))
    fixed = run(lambda optimizer: timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, on_lag="fix"))
    wanted = [value for value in schedule_values() for _ in range(BATCHES)]
    settings = ", ".join(f"{key}={value}" for key, value in SCHEDULE.items())
    print(f"timm {timm.__version__}, torch {torch.__version__}: CosineLRScheduler({settings}),")
    print(f"{EPOCHS} epochs x {BATCHES} batches, scheduler.step(epoch=current_epoch) after each epoch")
    print(f"{'step':>4} {'epoch':>5} {'stock':>10} {'fixed':>10} {'schedule':>10}")
    for k, (s, f, w) in enumerate(zip(stock, fixed, wanted)):
        mark = "  <- stock wrong" if abs(s - w) > 1e-12 else ""
        print(f"{k:>4} {k // BATCHES:>5} {s:>10.6f} {f:>10.6f} {w:>10.6f}{mark}")
    wrong = lambda trace: sum(abs(a - b) > 1e-12 for a, b in zip(trace, wanted))
    print(f"steps with the wrong LR: stock {wrong(stock)}/{len(wanted)}, fixed {wrong(fixed)}/{len(wanted)}")


if __name__ == "__main__":
    main()

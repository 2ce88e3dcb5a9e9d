"""Per-step LR of a warmup + cosine schedule, stock timm vs fixed, in two training loops.

6 epochs of 3 optimizer steps, CosineLRScheduler(t_initial=6, warmup_t=2, warmup_lr_init=1e-3). The table
shows the loop of PyTorch Lightning's documented ``lr_scheduler_step`` override,
``scheduler.step(epoch=self.current_epoch)`` after each epoch: stock timm runs the schedule one epoch late
there; the fixed scheduler (``on_lag="fix"``) runs every step with v(epoch). The last lines count the wrong
steps of that loop and of timm's own train.py loop, ``scheduler.step(epoch + 1)`` after each epoch.
"""

import timm.scheduler
import torch

import timm_sched_fix

EPOCHS, BATCHES = 6, 3
SCHEDULE = dict(t_initial=EPOCHS, warmup_t=2, warmup_lr_init=1e-3)

#: How each loop calls the scheduler after epoch ``epoch`` (0-based).
LOOPS = {
    "Lightning's documented override, scheduler.step(epoch=self.current_epoch)":
        lambda scheduler, epoch: scheduler.step(epoch=epoch),
    "timm's train.py, scheduler.step(epoch + 1)": lambda scheduler, epoch: scheduler.step(epoch + 1),
}
LIGHTNING, TRAIN_PY = LOOPS


def run(make_scheduler, loop):
    """The LR every optimizer step ran with (read by a step pre-hook registered after the scheduler's)."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = make_scheduler(optimizer)
    lrs = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    for epoch in range(EPOCHS):
        for _ in range(BATCHES):
            optimizer.step()
        LOOPS[loop](scheduler, epoch)
    return lrs


def schedule_values():
    """v(epoch): what stock timm's own step(epoch) writes, for every epoch."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    reference = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    values = []
    for epoch in range(EPOCHS):
        reference.step(epoch)
        values.append(optimizer.param_groups[0]["lr"])
    return values


def stock(optimizer):
    return timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)


def fixed(optimizer):
    return timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, on_lag="fix")


def main():
    wanted = [value for value in schedule_values() for _ in range(BATCHES)]
    settings = ", ".join(f"{key}={value}" for key, value in SCHEDULE.items())
    print(f"timm {timm.__version__}, torch {torch.__version__}: CosineLRScheduler({settings}),")
    print(f"{EPOCHS} epochs x {BATCHES} optimizer steps.")
    print(f"The loop shown: {LIGHTNING}")
    print("after each epoch (timm's own train.py calls step(epoch + 1) instead: see the last line).")
    print("Columns: step = optimizer step (0-based); epoch = its epoch; stock = the LR the step ran with under")
    print("stock timm; fixed = the same under timm_sched_fix (on_lag='fix'); schedule = the LR the schedule")
    print("defines for that epoch, v(epoch), which every step of the epoch should run with.")
    print()
    fixed_lrs = run(fixed, LIGHTNING)  # first: below torch 2.0 the fix says why it cannot run
    stock_lrs = run(stock, LIGHTNING)
    print(f"{'step':>4} {'epoch':>5} {'stock':>10} {'fixed':>10} {'schedule':>10}")
    for k, (s, f, w) in enumerate(zip(stock_lrs, fixed_lrs, wanted)):
        mark = "  <- stock wrong" if abs(s - w) > 1e-12 else ""
        print(f"{k:>4} {k // BATCHES:>5} {s:>10.6f} {f:>10.6f} {w:>10.6f}{mark}")
    print()

    def wrong(trace):
        return sum(abs(a - b) > 1e-12 for a, b in zip(trace, wanted))

    print("optimizer steps with the wrong LR:")
    for loop in LOOPS:
        print(f"  {loop}: stock {wrong(run(stock, loop))}/{len(wanted)}, fixed {wrong(run(fixed, loop))}/{len(wanted)}")


if __name__ == "__main__":
    main()

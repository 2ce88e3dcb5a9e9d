"""Layer-wise LR decay done by a wrapper: after every scheduler call it multiplies each param group's LR by the group's
own factor. Per update; ``--lag`` calls ``step_update(k)`` after update k (Swin's pattern, one update late);
``--resume`` checkpoints after half the run and goes on in a new optimizer and scheduler loaded from it (the
optimizer's state first). ``--fail`` raises the script's own error after the first update; ``--bad-index`` passes
-1 once (stock timm computes an LR from it, the fix refuses it)."""
import sys

import torch
from timm.scheduler import CosineLRScheduler

UPDATES, FACTORS = 12, (0.25, 0.5, 1.0)
lag, resume = "--lag" in sys.argv, "--resume" in sys.argv


class LayerDecay:
    def __init__(self, scheduler, optimizer):
        self.scheduler, self.optimizer = scheduler, optimizer

    def step_update(self, num_updates):
        self.scheduler.step_update(num_updates)
        for group in self.optimizer.param_groups:
            group["lr"] *= group["factor"]


def build():
    parameters = [torch.nn.Parameter(torch.zeros(1)) for _ in FACTORS]
    optimizer = torch.optim.SGD([{"params": [p], "factor": f} for p, f in zip(parameters, FACTORS)], lr=0.1)
    scheduler = CosineLRScheduler(optimizer, t_initial=UPDATES, warmup_t=3, warmup_lr_init=0.01, t_in_epochs=False)
    return parameters, optimizer, scheduler


def train(parameters, optimizer, wrapper, start, stop):
    for k in range(start, stop):
        for parameter in parameters:
            parameter.grad = torch.ones(1)
        optimizer.step()
        if "--fail" in sys.argv:
            raise RuntimeError("the script's own error")
        wrapper.step_update(-1 if "--bad-index" in sys.argv and k == 0 else k if lag else k + 1)


parameters, optimizer, scheduler = build()
train(parameters, optimizer, LayerDecay(scheduler, optimizer), 0, UPDATES // 2 if resume else UPDATES)
if resume:
    saved = optimizer.state_dict(), scheduler.state_dict()
    parameters, optimizer, scheduler = build()
    optimizer.load_state_dict(saved[0])
    scheduler.load_state_dict(saved[1])
    train(parameters, optimizer, LayerDecay(scheduler, optimizer), UPDATES // 2, UPDATES)

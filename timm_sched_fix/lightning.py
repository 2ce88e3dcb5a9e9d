"""The correct ``lr_scheduler_step`` for a LightningModule that keeps a raw timm scheduler.

Lightning only steps ``torch.optim.lr_scheduler.LRScheduler`` objects by itself; for a timm scheduler it
asks for an ``lr_scheduler_step`` override, and the one it documents, ``scheduler.step(epoch=self.current_epoch)``,
passes the index of the epoch that just ended, so the schedule runs one epoch late. Here the index is the
one timm expects (the next epoch, or the number of optimizer steps taken), taken from the Trainer's own
counters, so it is right after a resume too. Works with stock and fixed schedulers; nothing here imports
Lightning (``pytorch_lightning`` and ``lightning.pytorch`` both work). Returning a ``TorchScheduler`` from
``configure_optimizers`` needs no override at all.
"""

from __future__ import annotations

from typing import Any

from timm_sched_fix import _compat as compat


def lr_scheduler_step(module: Any, scheduler: Any, metric: Any = None) -> None:
    """Step ``scheduler`` as timm's train.py would at this point of the Trainer's run.

    A per-epoch timm schedule gets ``step(current_epoch + 1, metric)`` at the end of each epoch, a
    per-update one ``step_update(global_step, metric)`` after each optimizer step; other schedulers get
    Lightning's default call. The scheduler's ``"interval"`` must match the schedule's unit.
    """
    if not isinstance(scheduler, compat.Scheduler):
        scheduler.step() if metric is None else scheduler.step(metric)
        return
    on_epochs = compat.is_epoch_schedule(scheduler)
    _check_interval(module, scheduler, on_epochs)
    if on_epochs:
        scheduler.step(module.current_epoch + 1, metric)
    else:
        scheduler.step_update(module.global_step, metric)


class TimmLRSchedulerStep:
    """Mixin giving a LightningModule the correct ``lr_scheduler_step`` for timm schedulers.

    ``class Model(TimmLRSchedulerStep, pl.LightningModule)``: it must come before LightningModule.
    """

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        lr_scheduler_step(self, scheduler, metric)


def _check_interval(module: Any, scheduler: Any, on_epochs: bool) -> None:
    expected = "epoch" if on_epochs else "step"
    for config in module.trainer.lr_scheduler_configs:
        if config.scheduler is scheduler and config.interval != expected:
            raise ValueError(
                f"this {type(scheduler).__name__} counts {'epochs' if on_epochs else 'updates'} "
                f"(t_in_epochs={on_epochs}) but configure_optimizers gave it \"interval\": {config.interval!r}; "
                f"use \"interval\": {expected!r}"
            )

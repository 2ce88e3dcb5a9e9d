"""The first-step defects of stock timm, as cases that tests check and conftest prints as a table.

Each case builds a scheduler on an optimizer the way a training script does, through one adapter
("stock" = plain timm), and says which LR the schedule defines for the first optimizer step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import timm.scheduler
from timm.scheduler.scheduler import Scheduler

import timm_sched_fix

from support import StepRecorder, make_optimizer

MODES = ("stock", "patch", "wrap", "dropin")


class LinearWarmupFromZero(Scheduler):
    """A user subclass that only implements ``_get_lr``: linear warmup over 10 epochs from t=0."""

    def __init__(self, optimizer: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, param_group_field="lr", **kwargs)

    def _get_lr(self, t: int) -> list[float]:
        return [base * min(1.0, (t + 1) / 10) for base in self.base_values]

    def get_epoch_values(self, epoch: int) -> list[float]:  # timm < 0.9 asks this instead of _get_lr
        return self._get_lr(epoch)

    def get_update_values(self, num_updates: int) -> None:  # timm < 0.9: a per-epoch schedule
        return None


@dataclass
class DefectCase:
    label: str
    build: Callable[[Any, dict], Any]  # (optimizer, extra kwargs) -> scheduler, for the stock class
    dropin: str | None  # name of the drop-in class, None for a user subclass
    kwargs: dict
    t: int = 0  # the schedule index the first step should run with
    resume: bool = False


def _timm(name: str) -> Callable[[Any, dict], Any]:
    return lambda optimizer, kwargs: getattr(timm.scheduler, name)(optimizer, **kwargs)


CASES = [
    DefectCase("CosineLRScheduler(t_initial=10, noise_range_t=(0, 10))", _timm("CosineLRScheduler"),
               "CosineLRScheduler", dict(t_initial=10, noise_range_t=(0, 10))),
    DefectCase("TanhLRScheduler(t_initial=10)", _timm("TanhLRScheduler"), "TanhLRScheduler", dict(t_initial=10)),
    DefectCase("MultiStepLRScheduler(decay_t=[1, 3], decay_rate=0.5)", _timm("MultiStepLRScheduler"),
               "MultiStepLRScheduler", dict(decay_t=[1, 3], decay_rate=0.5)),
    DefectCase("user subclass, only _get_lr (linear warmup from t=0)",
               lambda optimizer, kwargs: LinearWarmupFromZero(optimizer, **kwargs), None, {}),
    DefectCase("resume: CosineLRScheduler(warmup_t=3, initialize=False) at epoch 5", _timm("CosineLRScheduler"),
               "CosineLRScheduler", dict(t_initial=10, warmup_t=3, warmup_lr_init=1e-4), t=5, resume=True),
]


def applicable(case: DefectCase, mode: str) -> bool:
    """The drop-in classes exist for timm's classes only; wrap() comes after the constructor has already
    reset a resumed optimizer (use load_state_dict or step(start_epoch) with wrap)."""
    if case.dropin is not None and not hasattr(timm.scheduler, case.dropin):
        return False  # a class this timm does not have (MultiStep arrived in 0.5)
    if mode == "dropin":
        return case.dropin is not None
    if mode == "wrap":
        return not case.resume
    return True


def schedule_value(case: DefectCase) -> float:
    """v(t): what the stock scheduler's own step(t) writes, on an optimizer of its own."""
    optimizer = make_optimizer()
    case.build(optimizer, dict(case.kwargs)).step(case.t)
    return optimizer.param_groups[0]["lr"]


def _optimizer_for(case: DefectCase) -> Any:
    optimizer = make_optimizer()
    if case.resume:  # an optimizer restored at epoch t, as a checkpoint resume does
        trained = make_optimizer()
        scheduler = case.build(trained, dict(case.kwargs))
        for epoch in range(1, case.t + 1):
            scheduler.step(epoch)
        optimizer.load_state_dict(trained.state_dict())
    return optimizer


def first_step_lr(case: DefectCase, mode: str) -> float:
    """The LR the first optimizer step after construction runs with."""
    optimizer = _optimizer_for(case)
    kwargs = dict(case.kwargs, **({"initialize": False} if case.resume else {}))
    if mode == "stock":
        scheduler = case.build(optimizer, kwargs)
    elif mode == "patch":
        with timm_sched_fix.patched():
            scheduler = case.build(optimizer, kwargs)
    elif mode == "wrap":
        scheduler = timm_sched_fix.wrap(case.build(optimizer, kwargs))
    else:
        scheduler = getattr(timm_sched_fix, case.dropin)(optimizer, **kwargs)
    recorder = StepRecorder(optimizer)
    optimizer.step()
    del scheduler
    return recorder.steps[0][0]


def table_lines() -> list[str]:
    header = ["case", *MODES, "schedule says"]
    rows = []
    for case in CASES:
        if not applicable(case, "stock"):
            continue
        cells = [f"{first_step_lr(case, mode):.6g}" if applicable(case, mode) else "n/a" for mode in MODES]
        rows.append([case.label, *cells, f"{schedule_value(case):.6g}"])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths)) + " |" for row in [header, *rows]]
    lines.insert(1, "|" + "|".join("-" * (width + 2) for width in widths) + "|")
    return lines

"""The rows of ``timm-sched-fix check``: the LR the first optimizer step runs with, stock vs fixed vs v(t).

Every row builds the installed timm's scheduler class on a real SGD optimizer and records, with an
optimizer step pre-hook, the LR the first ``optimizer.step()`` runs with: once with stock timm, once
with the drop-in class of this package. The schedule's own value v(t) comes from
:func:`timm_sched_fix._compat.stock_writer` on a third, fresh stock scheduler.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from timm_sched_fix import _compat as compat
from timm_sched_fix import _usage
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._tolerance import close

BASE_LR = 0.1
LR_SCALES = (1.0, 0.5, 0.25)
RESUME_EPOCH = 5
WARMUP = dict(warmup_t=3, warmup_lr_init=1e-4)

#: Constructor kwargs per class that make the schedule move within the first epochs.
BASE_KWARGS: dict[str, dict[str, Any]] = {
    "CosineLRScheduler": dict(t_initial=10),
    "TanhLRScheduler": dict(t_initial=10),
    "StepLRScheduler": dict(decay_t=3, decay_rate=0.5),
    "MultiStepLRScheduler": dict(decay_t=[3, 6], decay_rate=0.5),
    "PolyLRScheduler": dict(t_initial=10, power=2.0),
    "PlateauLRScheduler": dict(),
    "WSDLRScheduler": dict(t_initial=10, decay_t=3),
}


@dataclass
class Config:
    """A representative way to build a scheduler: extra kwargs, param groups, and the index to train at."""

    label: str
    kwargs: dict = field(default_factory=dict)
    groups: int = 1
    resume: bool = False
    only: str | None = None  # a config that only makes sense for one class

    @property
    def t(self) -> int:
        return RESUME_EPOCH if self.resume else 0


CONFIGS = (
    Config("plain"),
    Config("warmup", dict(WARMUP)),
    Config("noise from t=0", dict(noise_range_t=(0, 10))),
    Config("lr_scale groups", groups=len(LR_SCALES)),
    Config("multistep milestone at 1", dict(decay_t=[1, 3], decay_rate=0.5), only="MultiStepLRScheduler"),
    Config(f"resume: initialize=False at {RESUME_EPOCH}", dict(WARMUP), resume=True),
)


@dataclass
class Row:
    scheduler: str
    config: str
    t: int
    stock: list[float] | None
    fixed: list[float] | None
    schedule: list[float] | None
    verdict: str
    error: str | None = None

    @property
    def fixed_right(self) -> bool:
        """The fixed column equals v(t); a stock column that fails does not count against the fix."""
        return self.verdict not in ("ERROR", "FIXED WRONG")


def _optimizer(groups: int) -> torch.optim.Optimizer:
    param_groups: list[dict[str, Any]] = []
    for i in range(groups):
        group: dict[str, Any] = {"params": [torch.nn.Parameter(torch.zeros(1))]}
        if groups > 1:
            group["lr_scale"] = LR_SCALES[i]
        param_groups.append(group)
    return torch.optim.SGD(param_groups, lr=BASE_LR)


def _stock_run(cls: type, kwargs: dict, groups: int, t: int) -> torch.optim.Optimizer:
    """An optimizer after a stock scheduler wrote v(0..t) in order through ``compat.stock_writer``
    (PlateauLRScheduler keeps its post-warmup LR in the optimizer, so order matters). The stock constructor
    runs under ``compat.for_installed_torch``: timm 0.4.12 - 1.0.15 cannot build PlateauLRScheduler on torch 2.14."""
    optimizer = _optimizer(groups)
    scheduler = compat.for_installed_torch(cls)(optimizer, **kwargs)
    name = "step" if compat.is_epoch_schedule(scheduler) else "step_update"
    write = compat.stock_writer(scheduler, stock_method(cls, name))
    for index in range(t + 1):
        write(scheduler, index, None)
    return optimizer


def _resumed_optimizer(cls: type, kwargs: dict, groups: int) -> torch.optim.Optimizer:
    """An optimizer restored from a checkpoint taken at epoch ``RESUME_EPOCH`` of a stock run."""
    trained = _stock_run(cls, kwargs, groups, RESUME_EPOCH)
    optimizer = _optimizer(groups)
    optimizer.load_state_dict(trained.state_dict())
    return optimizer


def first_step_lrs(build: Callable[[torch.optim.Optimizer], Any], optimizer: torch.optim.Optimizer) -> list[float]:
    """The LR of every param group at the moment the first ``optimizer.step()`` after construction runs."""
    scheduler = build(optimizer)
    seen: list[list[float]] = []
    handle = optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: seen.append([float(group["lr"]) for group in opt.param_groups])
    )
    try:
        optimizer.step()
    finally:
        handle.remove()
    del scheduler
    return seen[0]


def schedule_value(cls: type, kwargs: dict, groups: int, t: int) -> list[float]:
    """v(t) as the fix defines it: what ``compat.stock_writer`` writes on a fresh stock scheduler driven
    through 0..t in order."""
    return [float(group["lr"]) for group in _stock_run(cls, kwargs, groups, t).param_groups]


def check_row(name: str, config: Config) -> Row:
    from timm_sched_fix import _dropin as dropin

    cls = compat.scheduler_classes()[name]
    fixed_cls = dropin.SCHEDULER_CLASSES[name]
    kwargs = dict(BASE_KWARGS.get(name, {}), **config.kwargs)
    run_kwargs = dict(kwargs, initialize=False) if config.resume else kwargs

    def optimizer() -> torch.optim.Optimizer:
        return _resumed_optimizer(cls, kwargs, config.groups) if config.resume else _optimizer(config.groups)

    results: dict[str, list[float] | None] = {}
    errors: dict[str, list[str]] = {}  # message -> the columns that failed with it
    for column, compute in (
        ("stock", lambda: first_step_lrs(lambda o: cls(o, **run_kwargs), optimizer())),
        ("fixed", lambda: first_step_lrs(lambda o: fixed_cls(o, **run_kwargs), optimizer())),
        ("v(t)", lambda: schedule_value(cls, kwargs, config.groups, config.t)),
    ):
        try:
            results[column] = compute()
        except Exception as error:  # noqa: BLE001 (a class this timm/torch cannot build: reported in the row, not a crash)
            results[column] = None
            errors.setdefault(f"{type(error).__name__}: {error}", []).append(column)
    stock, fixed, schedule = results["stock"], results["fixed"], results["v(t)"]
    if fixed is None or schedule is None:
        verdict = "ERROR"
    elif not close(fixed, schedule):
        verdict = "FIXED WRONG"
    elif stock is None:  # e.g. stock PlateauLRScheduler of timm <= 1.0.15 on torch 2.14 (quirk plateau_verbose)
        verdict = "stock fails, fixed ok"
    elif close(stock, schedule):
        verdict = "ok"
    else:
        verdict = "stock wrong, fixed ok"
    message = "; ".join(f"{', '.join(columns)}: {text}" for text, columns in errors.items())
    return Row(name, config.label, config.t, stock, fixed, schedule, verdict, message or None)


def check_rows() -> list[Row]:
    """One row per installed scheduler class and representative config."""
    rows = []
    for name in sorted(compat.scheduler_classes()):
        for config in CONFIGS:
            if config.only is not None and config.only != name:
                continue
            rows.append(check_row(name, config))
    return rows


def _cell(values: list[float] | None) -> str:
    if values is None:
        return "-"
    return " / ".join(f"{value:.6g}" for value in values)


def format_table(rows: list[Row]) -> list[str]:
    header = ["scheduler", "config", "t", "stock", "fixed", "v(t)", "verdict"]
    cells = [[r.scheduler, r.config, str(r.t), _cell(r.stock), _cell(r.fixed), _cell(r.schedule), r.verdict]
             for r in rows]
    return _usage.format_table(header, cells, left=True, rule=True)

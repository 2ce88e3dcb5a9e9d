"""The DeepSpeed cases of tests/test_engines.py, in one process (run as a script; DeepSpeed needs its distributed
environment, which the test sets: one CPU rank, gloo). Argument: OUT, the JSON file to write.

For every engine configuration (ZeRO stage 0-3, fp32 and bf16) and placement of the scheduler (on the optimizer
``deepspeed.initialize`` returns, on the torch optimizer before ``initialize``, or as ``lr_scheduler=`` through
``TorchScheduler``), under each adapter and mode, it trains a two-group model for ``UPDATES`` engine steps and
records, for every update, the LR each param group's parameter update ran with (a step pre-hook on the torch
optimizer that performs them: ZeRO steps it once per group or sub-group, each step's groups are recorded), and how
many updates the scheduler's counter counted.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _counting as counting

from support import check_worker_imports

UPDATES = 6
SCHEDULE = dict(t_initial=UPDATES, warmup_t=2, warmup_lr_init=1e-3, lr_min=1e-4, t_in_epochs=False)
LR_SCALE = 0.5
CONFIGS = [(stage, bf16) for bf16 in (False, True) for stage in (0, 1, 2, 3)]
CASES = ([(placement, adapter, mode) for placement in ("returned", "inner") for adapter in ("patch", "wrap", "dropin")
          for mode in ("explicit", "auto")]
         + [("lr_scheduler", adapter, "explicit") for adapter in ("patch", "wrap", "dropin")])


def case_id(stage: int, bf16: bool, placement: str, adapter: str, mode: str) -> str:
    return f"zero{stage}-{'bf16' if bf16 else 'fp32'}-{placement}-{adapter}-{mode}"


def expected_values() -> list[list[float]]:
    """v(k) per group, from stock timm on a plain SGD with the same groups."""
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": LR_SCALE}], lr=0.1)
    stock = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    values = []
    for k in range(UPDATES):
        stock.step_update(k)
        values.append([float(group["lr"]) for group in optimizer.param_groups])
    return values


class UpdateRecorder:
    """For each update (an engine step), the LRs each param group was stepped with."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.home = optimizer.param_groups
        self.updates: list[dict[int, list[float]]] = []
        optimizer.register_step_pre_hook(self._record)

    def begin(self) -> None:
        self.updates.append({})

    def _record(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if not self.updates:
            return  # DeepSpeed's set-up step, before training
        for group in optimizer.param_groups:
            if group["params"]:
                index = next(i for i, own in enumerate(self.home) if own is group)
                self.updates[-1].setdefault(index, []).append(float(group["lr"]))

    def ran(self) -> list[list[Any]]:
        """Per update, each group's LR (or every LR it was stepped with, if they differ)."""
        return [[lrs[0] if len(set(lrs)) == 1 else lrs for _, lrs in sorted(update.items())]
                for update in self.updates]


def build(placement: str, adapter: str, mode: str, optimizer: Any) -> Any:
    auto = mode == "auto"
    if placement == "lr_scheduler":
        if adapter == "patch":
            with timm_sched_fix.patched():
                timm_scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
        elif adapter == "dropin":
            timm_scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE)
        else:
            timm_scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)  # TorchScheduler wraps it
        return timm_sched_fix.TorchScheduler(timm_scheduler)
    if adapter == "patch":
        with timm_sched_fix.patched(auto=auto):
            return timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    if adapter == "dropin":
        return timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, auto=auto)
    return timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE), auto=auto)


def run_case(stage: int, bf16: bool, placement: str, adapter: str, mode: str) -> dict[str, Any]:
    import deepspeed  # here, so that collecting test_engines.py (which reads CASES) does not import it

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    optimizer = torch.optim.SGD([{"params": list(model[0].parameters())},
                                 {"params": list(model[1].parameters()), "lr_scale": LR_SCALE}], lr=0.1)
    config: dict[str, Any] = {"train_micro_batch_size_per_gpu": 2, "zero_allow_untested_optimizer": True,
                              "zero_optimization": {"stage": stage}, "bf16": {"enabled": bf16}}
    if stage == 3:
        config["zero_optimization"]["sub_group_size"] = 4  # several sub-groups per param group
    scheduler = build(placement, adapter, mode, optimizer) if placement != "returned" else None
    engine, returned, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config,
                                                  lr_scheduler=scheduler if placement == "lr_scheduler" else None)
    try:
        if placement == "returned":
            scheduler = build(placement, adapter, mode, returned)
        recorder = UpdateRecorder(optimizer)
        for k in range(UPDATES):
            inputs = torch.randn(2, 4)
            loss = engine(inputs.bfloat16() if bf16 else inputs).float().pow(2).mean()
            engine.backward(loss)
            recorder.begin()
            engine.step()
            if mode == "explicit" and placement != "lr_scheduler":
                scheduler.step_update(k + 1)
        counter = counting.counter_for(optimizer)
        return {"ran": recorder.ran(), "counted": counter.count, "performed": UPDATES,
                "wrapper": type(returned).__name__, "error": None}
    finally:
        engine.destroy()


def main() -> None:
    check_worker_imports()
    results = {"expected": expected_values(), "cases": {}}
    for stage, bf16 in CONFIGS:
        for placement, adapter, mode in CASES:
            try:
                result = run_case(stage, bf16, placement, adapter, mode)
            except Exception:  # noqa: BLE001 - reported per case by the test
                result = {"error": traceback.format_exc()}
            results["cases"][case_id(stage, bf16, placement, adapter, mode)] = result
    with open(sys.argv[1], "w") as out:
        json.dump(results, out)


if __name__ == "__main__":
    main()

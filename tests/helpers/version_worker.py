"""Save and load scheduler state dicts under one timm release (run by tests/test_cross_version.py with that
release first on PYTHONPATH; never collected by pytest).

``save OUT``: for every class of this timm, at t=3 of an epoch and an update schedule, a fixed (drop-in)
  and a stock scheduler's state dict and the optimizer's, written with torch.save to OUT.
``load REPORT IN...``: every entry of each IN whose class this timm has is loaded fixed -> fixed, stock -> fixed and
  fixed -> stock; the LRs after the next calls must be this release's own v(t), v(t + 1). REPORT (JSON)
  lists the pairs loaded, the state dicts refused (with their error) and any LR mismatch.
"""

from __future__ import annotations

import json
import sys

import timm
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat

from support import stock_kwargs

T, PERIODS = 3, 8


def optimizer_with_groups() -> torch.optim.SGD:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(2))], "lr_scale": 0.5},
                            {"params": [torch.nn.Parameter(torch.zeros(2))]}], lr=0.1)


def kwargs_for(name: str, on_epochs: bool) -> dict:
    return stock_kwargs(name, PERIODS, on_epochs)


def advance(scheduler, on_epochs: bool, t: int) -> None:
    if on_epochs:
        scheduler.step(t, 1.0)
    else:
        scheduler.step_update(t)


def lrs(optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


def cases():
    for name in sorted(compat.scheduler_classes()):
        for on_epochs in (True, False):
            if name != "PlateauLRScheduler" or on_epochs:
                yield name, on_epochs


def save(out: str) -> None:
    entries = {}
    for name, on_epochs in cases():
        try:
            fixed_optimizer, stock_optimizer = optimizer_with_groups(), optimizer_with_groups()
            fixed = getattr(timm_sched_fix, name)(fixed_optimizer, **kwargs_for(name, on_epochs))
            stock = getattr(timm.scheduler, name)(stock_optimizer, **kwargs_for(name, on_epochs))
        except TypeError as error:  # e.g. Plateau before timm 1.0.24 passes `verbose`, which torch 2.14 lacks
            print(f"timm {timm.__version__}: {name} cannot be built here: {error}", file=sys.stderr)
            continue
        for t in range(1, T + 1):
            fixed_optimizer.step()
            advance(fixed, on_epochs, t)
            advance(stock, on_epochs, t)
        entries[f"{name}-{on_epochs}"] = {"name": name, "on_epochs": on_epochs, "fixed": fixed.state_dict(),
                                          "stock": stock.state_dict(), "optimizer": fixed_optimizer.state_dict()}
    torch.save({"version": timm.__version__, "entries": entries}, out)


def reference(name: str, on_epochs: bool) -> list[list[float]]:
    """This release's v(T) and v(T + 1) after an uninterrupted run."""
    optimizer = optimizer_with_groups()
    stock = getattr(timm.scheduler, name)(optimizer, **kwargs_for(name, on_epochs))
    values = []
    for t in range(1, T + 2):
        advance(stock, on_epochs, t)
        if t >= T:
            values.append(lrs(optimizer))
    return values


def load(report_path: str, *paths: str) -> None:
    reports = [load_one(path) for path in paths]
    with open(report_path, "w") as file:
        json.dump(reports, file)


def load_one(path: str) -> dict:
    saved = torch.load(path, weights_only=True)
    report = {"from": saved["version"], "to": timm.__version__, "loaded": [], "refused": [], "mismatches": []}
    for key, entry in saved["entries"].items():
        name, on_epochs = entry["name"], entry["on_epochs"]
        if name not in compat.scheduler_classes():
            continue
        try:
            expected = reference(name, on_epochs)
        except TypeError:
            continue
        for direction in ("fixed->fixed", "stock->fixed", "fixed->stock"):
            source = entry["stock" if direction.startswith("stock") else "fixed"]
            optimizer = optimizer_with_groups()
            optimizer.load_state_dict(entry["optimizer"])
            if direction.endswith("fixed"):
                scheduler = getattr(timm_sched_fix, name)(optimizer, **kwargs_for(name, on_epochs))
            else:
                scheduler = getattr(timm.scheduler, name)(optimizer, **kwargs_for(name, on_epochs))
            before = lrs(optimizer)
            try:
                scheduler.load_state_dict(source)
            except ValueError as error:
                unchanged = lrs(optimizer) == before
                report["refused"].append(f"{key} {direction}: {error} (LRs unchanged: {unchanged})")
                continue
            got = []
            if direction == "fixed->fixed":
                got.append(lrs(optimizer))  # a fixed state dict carries the position: v(T) at once
            else:
                advance(scheduler, on_epochs, T)  # a stock one does not: the train.py resume call
                got.append(lrs(optimizer))
            advance(scheduler, on_epochs, T + 1)
            got.append(lrs(optimizer))
            report["loaded"].append(f"{key} {direction}")
            if got != expected:
                report["mismatches"].append(f"{key} {direction}: got {got}, this release's run gives {expected}")
    return report


if __name__ == "__main__":
    {"save": save, "load": load}[sys.argv[1]](*sys.argv[2:])

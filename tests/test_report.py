"""``--report`` / ``TIMM_SCHED_FIX_REPORT=1``: what a patched process says about the schedulers it fixed, against
the LR the first optimizer step really ran with and the one stock timm's constructor left."""

from __future__ import annotations

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import cli
from timm_sched_fix.runner import report

from support import StepRecorder


def optimizer_of(groups: int) -> torch.optim.Optimizer:
    return torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.1 / (i + 1)}
                            for i in range(groups)], lr=0.1)


def build_and_train(name: str, kwargs: dict, groups: int, calls_first: bool, steps: int):
    """Build a scheduler under patch() with a report observing; the LRs stock timm's first step runs with (a stock
    twin, given the same calls), those the fixed first step ran with (StepRecorder), and the report's lines."""
    stock_optimizer = optimizer_of(groups)
    stock_scheduler = getattr(timm.scheduler, name)(stock_optimizer, **kwargs)
    if calls_first:
        stock_scheduler.step(0)
    stock = [group["lr"] for group in stock_optimizer.param_groups]
    with report.reporting() as observed, timm_sched_fix.patched():
        optimizer = optimizer_of(groups)
        scheduler = getattr(timm.scheduler, name)(optimizer, **kwargs)
        recorder = StepRecorder(optimizer)
        if calls_first:
            scheduler.step(0)
        for _ in range(steps):
            optimizer.step()
        lines = observed.lines()
    return stock, recorder, lines


@pytest.mark.parametrize(("name", "kwargs", "groups", "calls_first", "steps", "ending"), [
    ("TanhLRScheduler", dict(t_initial=10), 1, False, 2, "; stock timm: {stock} (differs in group 0)"),
    ("TanhLRScheduler", dict(t_initial=10), 2, False, 1, "; stock timm: {stock} (differs in groups 0, 1)"),
    ("CosineLRScheduler", dict(t_initial=10, warmup_t=2, warmup_lr_init=0.01), 1, False, 1,
     ", the same as stock timm"),
    ("TanhLRScheduler", dict(t_initial=10), 1, True, 1,
     ", applied by a scheduler call before it (stock timm applies the same index)"),
    ("TanhLRScheduler", dict(t_initial=10), 1, False, 0, None),
])
def test_report_says_what_the_first_step_ran_with_and_where_stock_differs(name, kwargs, groups, calls_first, steps,
                                                                          ending):
    stock, recorder, lines = build_and_train(name, kwargs, groups, calls_first, steps)
    header, line = lines
    assert header.startswith("timm-sched-fix report, main process (pid ") and header.endswith("fixed 1 scheduler")
    what = f"  {name} (per epoch, convention='end', auto=False, on_lag='warn') on SGD"
    if ending is None:
        assert line == f"{what}: no optimizer step ran"
        return
    first = recorder.steps[0]  # what the step really ran with, one value per group
    shown = repr(first[0]) if groups == 1 else repr(first)
    assert line == f"{what}: first optimizer step ran with lr {shown}" + ending.format(
        stock=repr(stock[0]) if groups == 1 else repr(stock))
    assert ("differs" in ending) == (first != stock)


def test_nothing_fixed_nothing_said():
    with report.reporting() as observed, timm_sched_fix.patched():
        timm_sched_fix.TanhLRScheduler(optimizer_of(1), t_initial=10)  # a drop-in: fixed by the script's own code
    assert observed.lines() == []


def test_runner_report_is_printed_when_the_script_ends(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "train.py").write_text(
        "import torch\nfrom timm.scheduler import TanhLRScheduler\n"
        "optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)\n"
        "TanhLRScheduler(optimizer, t_initial=10)\noptimizer.step()\n")
    assert cli.main(["run", "--report", "--no-children", "train.py"]) == 0  # children: tests/test_launch.py
    header, line = capsys.readouterr().err.splitlines()
    assert header.startswith("timm-sched-fix report, main process") and "(differs in group 0)" in line
    assert cli.main(["run", "--no-children", "train.py"]) == 0
    assert capsys.readouterr().err == ""

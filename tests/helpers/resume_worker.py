"""Training processes for tests/test_crash_resume.py (run as a script, never collected by pytest).

``crash CASES OUT``: every case runs uninterrupted in this process, its per-step LR trace in
  ``OUT/<id>.reference.json``, then trains again in a forked child that saves a checkpoint (model, optimizer,
  scheduler state) with ``torch.save`` every few steps and is killed with SIGKILL (its own) at the case's
  ``kill_step``.
``resume CASES OUT``: in this fresh interpreter, every case resumes from its last checkpoint and writes the
  per-step LR trace from the resume point on to ``OUT/<id>.resumed.json``.

A case is a JSON object: id, name (class), on_epochs, convention, drive, adapter, sched_first (build the
scheduler before ``optimizer.load_state_dict``), initialize, every (checkpoint period), kill_step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

import timm.scheduler
import torch

import timm_sched_fix

from support import check_worker_imports, stock_kwargs, stock_scheduler

EPOCHS, BATCHES = 4, 3
TOTAL_STEPS = EPOCHS * BATCHES
METRICS = [1.0, 0.5, 0.5, 0.5, 0.4, 0.4]  # Plateau: the metric passed with epoch index t (reductions happen)


def build(case: dict, optimizer: torch.optim.Optimizer, initialize: bool = True) -> Any:
    periods = EPOCHS if case["on_epochs"] else TOTAL_STEPS
    kwargs = dict(stock_kwargs(case["name"], periods, case["on_epochs"]), initialize=initialize)
    options = dict(convention=case["convention"], auto=case["drive"] == "auto")
    if case["adapter"] == "stock":  # the control: stock timm must differ somewhere, or the test cannot fail
        return stock_scheduler(case["name"], optimizer, kwargs)
    if case["adapter"] == "dropin":
        return getattr(timm_sched_fix, case["name"])(optimizer, **kwargs, **options)
    if case["adapter"] == "patch":  # built under patch() (patched_if), which handles the installed torch itself
        return getattr(timm.scheduler, case["name"])(optimizer, **kwargs)
    return timm_sched_fix.wrap(stock_scheduler(case["name"], optimizer, kwargs), **options)


def fresh_model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD([{"params": [model.weight], "lr_scale": 0.5}, {"params": [model.bias]}],
                                lr=0.1, momentum=0.9)
    return model, optimizer


class Trainer:
    """The loop of a training script: calls per the case's convention and drive, checkpoints after the calls."""

    def __init__(self, case: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                 checkpoint: Path | None) -> None:
        self.case, self.model, self.optimizer, self.scheduler = case, model, optimizer, scheduler
        self.checkpoint = checkpoint
        self.trace: list[list[float]] = []
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.trace.append([float(group["lr"]) for group in opt.param_groups]))

    def call(self, method: str, t: int) -> None:
        metric = {"metric": METRICS[t]} if self.case["on_epochs"] else {}
        if self.case["drive"] == "counting":
            getattr(self.scheduler, method)(**metric)
        else:  # explicit, and the epoch calls of auto mode (train() makes no update calls in auto mode)
            getattr(self.scheduler, method)(t, **metric)

    def train(self, start_update: int, after_step: Any = None) -> None:
        case, inputs = self.case, torch.ones(1, 4)
        begin, on_epochs = case["convention"] == "begin", case["on_epochs"]
        for update in range(start_update, TOTAL_STEPS):
            epoch, batch = divmod(update, BATCHES)
            if on_epochs and begin and batch == 0:
                self.call("step", epoch)
            if not on_epochs and begin and case["drive"] != "auto":
                self.call("step_update", update)
            self.optimizer.zero_grad()
            self.model(inputs).square().sum().backward()
            self.optimizer.step()
            if not on_epochs and not begin and case["drive"] != "auto":
                self.call("step_update", update + 1)
            if on_epochs and not begin and batch == BATCHES - 1:
                self.call("step", epoch + 1)
            if self.checkpoint is not None and (update + 1) % case["every"] == 0:
                self.save(update + 1)
            if after_step is not None:
                after_step(update + 1)

    def save(self, updates_done: int) -> None:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "updates_done": updates_done}
        partial = self.checkpoint.with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.checkpoint)  # a kill never leaves a torn checkpoint


def patched_if(case: dict) -> Any:
    if case["adapter"] == "patch":
        return timm_sched_fix.patched(convention=case["convention"], auto=case["drive"] == "auto")
    return _Nothing()


class _Nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def reference(case: dict, out: Path) -> None:
    with patched_if(case):
        model, optimizer = fresh_model_and_optimizer()
        trainer = Trainer(case, model, optimizer, build(case, optimizer), None)
        trainer.train(0)
    (out / f"{case['id']}.reference.json").write_text(json.dumps(trainer.trace))


def crash(case: dict, out: Path) -> None:
    """Train in a forked child that SIGKILLs itself right after step ``kill_step``: no cleanup, no flush, as
    an outside kill at that point (signalling itself saves the two process switches per step a watcher needs)."""
    pid = os.fork()
    if pid == 0:  # the training process
        def die_at_kill_step(updates_done: int) -> None:
            if updates_done == case["kill_step"]:
                os.kill(os.getpid(), signal.SIGKILL)

        try:
            with patched_if(case):
                model, optimizer = fresh_model_and_optimizer()
                Trainer(case, model, optimizer, build(case, optimizer), out / f"{case['id']}.pt").train(
                    0, die_at_kill_step)
        except BaseException:  # noqa: BLE001 (the forked child must never return into the loop over cases)
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(1)  # not killed: an error (printed above), or the run ended before kill_step
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{case['id']}: status {status}"


def resume(case: dict, out: Path) -> None:
    checkpoint = torch.load(out / f"{case['id']}.pt", weights_only=True)
    with patched_if(case):
        model, optimizer = fresh_model_and_optimizer()
        model.load_state_dict(checkpoint["model"])
        if case["sched_first"]:
            scheduler = build(case, optimizer)
            optimizer.load_state_dict(checkpoint["optimizer"])
        else:
            optimizer.load_state_dict(checkpoint["optimizer"])
            scheduler = build(case, optimizer, initialize=case["initialize"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        trainer = Trainer(case, model, optimizer, scheduler, None)
        trainer.train(checkpoint["updates_done"])
    result = {"resumed_at": checkpoint["updates_done"], "trace": trainer.trace}
    (out / f"{case['id']}.resumed.json").write_text(json.dumps(result))


def main() -> None:
    mode, cases_path, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    check_worker_imports()
    torch.set_num_threads(1)
    steps = {"crash": (reference, crash), "resume": (resume,)}[mode]
    for case in json.loads(cases_path.read_text()):
        for step in steps:
            step(case, out)


if __name__ == "__main__":
    main()

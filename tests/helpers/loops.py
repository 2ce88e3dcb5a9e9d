"""Training loops described by a few choices, run on a stock timm scheduler or a fixed one.

A :class:`Loop` says when the scheduler is called (before or after each epoch, each optimizer update or each
batch, or never), with which index (the epoch, the update count, one more or one less, a fractional epoch, none; from some
epoch on, another of them) of which type (Python, numpy, 0-d tensor), with gradient accumulation, and whether the run is checkpointed and
resumed after some batch (continuing with the next batch, or restarting the interrupted epoch from its first
batch, as a crash-restart does). :func:`run` drives it and records, through :class:`support.StepRecorder`, the
LR every optimizer step ran with, next to the index it should have run with: the epoch (epoch schedules) or the
update count (update schedules) of that step, in the loop's own numbering. :func:`wrong_steps` compares the two
with v(t) from a stock scheduler driven in order.

:func:`is_correct` and :func:`is_fixable` are the "Terms" of docs/reference/terms.md: loops whose calls follow timm's contract
(or the chosen convention), and the true one-period lags ``on_lag="fix"`` corrects from the first step.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pytest
import timm.scheduler
import torch

import timm_sched_fix

from support import StepRecorder, stock_scheduler

CADENCES = ("epoch", "update", "batch", "none")
PLACEMENTS = ("after", "before")
INDICES = ("epoch", "epoch-1", "epoch+1", "update", "update-1", "update+1", "fraction", "none")
INDEX_TYPES = ("python", "numpy", "tensor")
RESUMES = ("none", "continue", "restart")
POLICIES = ("warn", "fix", "raise", "ignore")


@dataclass(frozen=True)
class Loop:
    name: str
    on_epochs: bool
    kwargs: dict = field(hash=False)
    batches: tuple[int, ...]  # batches per epoch
    accumulation: int = 1  # an optimizer update every this many batches (and after an epoch's last batch)
    cadence: str = "epoch"
    placement: str = "after"
    index: str = "epoch+1"
    index_type: str = "python"
    resume: str = "none"
    resume_after: int = 0  # the run is checkpointed after this many batches (counted over the run)
    convention: str = "end"
    on_lag: str = "warn"
    auto: bool = False
    adapter: str = "dropin"
    # (epoch, index): from that epoch on the calls pass that kind of index instead (a loop changed mid-run, or
    # resumed with a warning's advice followed)
    index_from: tuple[int, str] | None = None
    # after the resume, one call with the index the next optimizer step runs with, before it (timm train.py's
    # ``lr_scheduler.step(start_epoch)`` after loading a checkpoint)
    reapply: bool = False

    def updates(self, epoch: int) -> int:
        """Optimizer updates in an epoch."""
        return -(-self.batches[epoch] // self.accumulation)

    @property
    def total_updates(self) -> int:
        return sum(self.updates(epoch) for epoch in range(len(self.batches)))


@dataclass
class Outcome:
    lrs: list[float]  # param group 0's LR for every optimizer step, as the step ran
    correct: list[int]  # the schedule index every optimizer step should have run with
    error: BaseException | None
    caught: list[warnings.WarningMessage]
    calls: list[tuple[int, float | None, int]]  # per scheduler call: (batches run, index, the next step's index)
    calls_before_resume: int | None  # the calls made before the checkpoint the run resumed from
    rerun: set[int]  # the optimizer steps a restarted epoch ran again before its first call (see wrong_steps)
    fresh_at_first_call: int | None = None  # optimizer steps between the load and the first call after it

    def warned(self, category: type[Warning]) -> list[str]:
        return [str(w.message) for w in self.caught if issubclass(w.category, category)]


def _options(loop: Loop) -> dict[str, Any]:
    return dict(convention=loop.convention, auto=loop.auto, on_lag=loop.on_lag)


def build(loop: Loop, optimizer: torch.optim.Optimizer, fixed: bool) -> Any:
    if not fixed:
        return stock_scheduler(loop.name, optimizer, loop.kwargs)
    if loop.adapter == "dropin":
        return getattr(timm_sched_fix, loop.name)(optimizer, **loop.kwargs, **_options(loop))
    if loop.adapter == "wrap":
        return timm_sched_fix.wrap(stock_scheduler(loop.name, optimizer, loop.kwargs), **_options(loop))
    assert timm_sched_fix.is_patched()
    return getattr(timm.scheduler, loop.name)(optimizer, **loop.kwargs)


def _optimizer() -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)


def _typed(loop: Loop, value: float) -> Any:
    if loop.index_type == "numpy":
        return np.int64(value) if float(value).is_integer() and loop.index != "fraction" else np.float64(value)
    if loop.index_type == "tensor":
        return torch.tensor(value)
    return value


class _Run:
    def __init__(self, loop: Loop, fixed: bool) -> None:
        self.loop, self.fixed = loop, fixed
        self.optimizer = _optimizer()
        self.scheduler = build(loop, self.optimizer, fixed)
        self.recorder = StepRecorder(self.optimizer)
        self.lrs: list[float] = []
        self.correct: list[int] = []
        self.calls: list[tuple[int, float | None, int]] = []
        self.calls_before_resume: int | None = None
        self.rerun: set[int] = set()
        self.rerunning = False
        self.seen = 0  # batches run

    def call(self, epoch: int, batch: int, updates: int, epoch_done: bool = False) -> None:
        """``batch``: the batch of this epoch running or just run; ``epoch_done``: the epoch's last update ran."""
        loop = self.loop
        method = getattr(self.scheduler, "step" if loop.on_epochs else "step_update")
        metric = {"metric": 1.0} if loop.name == "PlateauLRScheduler" else {}
        next_index = (epoch + epoch_done) if loop.on_epochs else updates
        self.rerunning = False
        kind = loop.index if loop.index_from is None or epoch < loop.index_from[0] else loop.index_from[1]
        if kind == "none":
            self._first_after_resume()
            self.calls.append((self.seen, None, next_index))
            method(**metric)
            return
        value = max(0, {"epoch": epoch, "epoch-1": epoch - 1, "epoch+1": epoch + 1, "update": updates,
                        "update-1": updates - 1, "update+1": updates + 1,
                        "fraction": epoch + batch / loop.batches[epoch]}[kind])
        self._first_after_resume()
        self.calls.append((self.seen, value, next_index))
        method(_typed(loop, value), **metric)

    def update(self, epoch: int, updates: int) -> None:
        for group in self.optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = torch.ones_like(parameter)
        self.optimizer.step()
        if self.rerunning:
            self.rerun.add(len(self.correct))
        self.correct.append(epoch if self.loop.on_epochs else updates)

    def resume(self) -> None:
        """A new process: a new optimizer and scheduler from the checkpoint (``torch.load(weights_only=True)`` for
        the fixed run, whose state dicts hold plain Python numbers only). The scheduler is built before the
        optimizer's state is loaded, so stock timm continues with the LR the optimizer saved (built afterwards, its
        constructor would reset it to the schedule's start, which is wrong for a correct loop, and right by chance
        for some wrong ones until their next call)."""
        self.calls_before_resume = len(self.calls)
        self.steps_at_resume = len(self.correct)
        buffer = io.BytesIO()
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}, buffer)
        buffer.seek(0)
        saved = torch.load(buffer, weights_only=self.fixed)
        self.lrs += self.recorder.first_group()
        self.recorder._handle.remove()
        self.optimizer = _optimizer()
        self.scheduler = build(self.loop, self.optimizer, self.fixed)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.recorder = StepRecorder(self.optimizer)

    def _first_after_resume(self) -> None:
        if self.calls_before_resume is not None and len(self.calls) == self.calls_before_resume:
            self.fresh_at_first_call = len(self.correct) - self.steps_at_resume

    def reapply(self, epoch: int, updates: int) -> None:
        """train.py's call after a resume: the index the next optimizer step runs with, before it."""
        loop = self.loop
        method = getattr(self.scheduler, "step" if loop.on_epochs else "step_update")
        metric = {"metric": 1.0} if loop.name == "PlateauLRScheduler" else {}
        index = epoch if loop.on_epochs else updates
        self._first_after_resume()
        self.calls.append((self.seen, index, index))
        self.rerunning = False
        method(_typed(loop, index), **metric)

    def run(self) -> None:
        loop = self.loop
        cadence, before = loop.cadence, loop.placement == "before"
        updates, resumed, epoch = 0, loop.resume == "none", 0
        while epoch < len(loop.batches):
            epoch_start = updates
            if cadence == "epoch" and before:
                self.call(epoch, 0, updates)
            restart = False
            for batch in range(loop.batches[epoch]):
                steps = (batch + 1) % loop.accumulation == 0 or batch == loop.batches[epoch] - 1
                if cadence == "batch" and before or cadence == "update" and before and steps:
                    self.call(epoch, batch, updates)
                if steps:
                    self.update(epoch, updates)
                    updates += 1
                self.seen += 1
                if cadence == "batch" and not before or cadence == "update" and not before and steps:
                    self.call(epoch, batch, updates, batch == loop.batches[epoch] - 1)
                if not resumed and self.seen == loop.resume_after:
                    resumed = True
                    self.resume()
                    if loop.reapply:
                        last = batch == loop.batches[epoch] - 1
                        self.reapply(epoch + (last and loop.resume == "continue"),
                                     epoch_start if loop.resume == "restart" else updates)
                    if loop.resume == "restart":
                        restart, self.rerunning = True, True
                        break
            if restart:
                updates = epoch_start
                continue
            if cadence == "epoch" and not before:
                self.call(epoch, loop.batches[epoch], updates, True)
            epoch += 1
        self.lrs += self.recorder.first_group()


def run(loop: Loop, fixed: bool) -> Outcome:
    """Run the loop to its end, or to the first exception (recorded, as a training script would stop there)."""
    state = _Run.__new__(_Run)
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)  # timm <= 1.0.15 on this torch
        warnings.filterwarnings("ignore", category=FutureWarning)  # PlateauLRScheduler's deprecation
        with timm_sched_fix.patched(**_options(loop)) if fixed and loop.adapter == "patch" else _nothing():
            try:
                state.__init__(loop, fixed)
                state.run()
            except Exception as exception:  # noqa: BLE001 - the outcome records it
                error = exception
                if hasattr(state, "recorder"):
                    state.lrs += state.recorder.first_group()
    return Outcome(getattr(state, "lrs", []), getattr(state, "correct", []), error, list(caught),
                   getattr(state, "calls", []), getattr(state, "calls_before_resume", None),
                   getattr(state, "rerun", set()), getattr(state, "fresh_at_first_call", None))


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def values(loop: Loop) -> list[float]:
    """v(0..) of param group 0, far enough for every step of the loop. A PlateauLRScheduler without warmup
    starts at its base LR (stock ``step(0)`` writes ``warmup_lr_init`` there: quirk plateau_step0_without_warmup)."""
    periods = len(loop.batches) if loop.on_epochs else loop.total_updates
    optimizer = _optimizer()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # PlateauLRScheduler's deprecation
        stock = stock_scheduler(loop.name, optimizer, loop.kwargs)
    schedule = []
    for t in range(periods + 1):
        if loop.name == "PlateauLRScheduler" and t == 0 and not loop.kwargs.get("warmup_t"):
            stock.update_groups(stock.base_values)
        elif loop.on_epochs:
            with warnings.catch_warnings():  # timm <= 1.0.15 passes the epoch torch deprecated
                warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)
                stock.step(t, 1.0)
        else:
            stock.step_update(t)
        schedule.append(float(optimizer.param_groups[0]["lr"]))
    return schedule


def wrong_steps(outcome: Outcome, schedule: list[float]) -> int:
    """Optimizer steps that ran with another LR than v(the index they should run with).

    Not counted: the steps a restarted epoch runs again before its first call. Any scheduler runs them with the
    checkpoint's position, which is past them (stock timm with the LR its optimizer saved, the fix with its saved
    position), until a call with an index says where the loop is; when the loop's calls lag by one update, stock's
    saved LR is one behind and right by chance for a restart one update back, the fix's corrected one is not.
    """
    return sum(1 for k, (lr, t) in enumerate(zip(outcome.lrs, outcome.correct))
               if k not in outcome.rerun and lr != pytest.approx(schedule[t], rel=1e-12, abs=0))


# -- what the docs call correct and fixable ---------------------------------------------------------

def is_correct(loop: Loop) -> bool:
    """Calls as timm documents them (or as ``convention`` says, for calls without an index), or auto mode on a
    per-update schedule; a restarted epoch is correct where its calls pass an index that re-applies the position
    (before each period, or an epoch schedule called after each epoch)."""
    if loop.index_from is not None or loop.reapply:
        return False  # judged by the never-worse property alone
    if loop.resume == "restart" and (loop.index == "none" or not (
            loop.placement == "before" or loop.on_epochs and loop.cadence == "epoch")):
        return False  # calls without an index count on through the re-run batches; so does auto mode
    if loop.auto and not loop.on_epochs and (loop.cadence == "none" or _correct_calls(loop)):
        return True
    return _correct_calls(loop)


def _correct_calls(loop: Loop) -> bool:
    if loop.cadence == "none":
        return False
    before = loop.placement == "before"
    if loop.index == "none":  # counting calls: one per period, on the convention's side of it
        one_per_period = loop.cadence == "epoch" if loop.on_epochs else \
            loop.cadence == "update" or loop.cadence == "batch" and loop.accumulation == 1
        return one_per_period and before == (loop.convention == "begin")
    if loop.on_epochs:
        return loop.index == "epoch" and before or loop.index == "epoch+1" and not before and loop.cadence == "epoch"
    return loop.index == "update" and loop.cadence in ("update", "batch")


def lagging(outcome: Outcome, call: int) -> bool:
    """Call number ``call`` of a run passed one less than the index the optimizer step after it should run with."""
    _, index, next_index = outcome.calls[call]
    return index == next_index - 1


def is_lag(loop: Loop) -> bool:
    """A true one-period lag: every call passes the index one period behind what timm expects."""
    if loop.index_from is not None or loop.reapply:
        return False
    if loop.on_epochs:
        return loop.cadence == "epoch" and loop.index == ("epoch-1" if loop.placement == "before" else "epoch")
    return loop.cadence in ("update", "batch") and loop.index == "update-1"


def is_fixable(loop: Loop, outcome: Outcome) -> bool:
    """A lag ``on_lag="fix"`` corrects from the first step (``outcome`` a run of the loop): for an epoch schedule
    over a first epoch of two or more optimizer updates (a lag of one-update epochs cannot be told from update counts
    passed to an epoch schedule); resumed after it first showed (the first call after a load is never taken for a
    lag), and for a restarted epoch after it showed twice (a restart passes an index again, as calls that do not
    lag do)."""
    if not is_lag(loop) or loop.on_lag != "fix":
        return False
    if loop.on_epochs and loop.updates(0) < 2 and len(loop.batches) > 1:
        return False
    if outcome.calls_before_resume is None:
        return True
    first = first_lagging_call(outcome.calls)
    if first is None:
        return False
    confirmed = any(outcome.calls[number][1] == outcome.calls[first][1] + 1
                    for number in range(first + 1, outcome.calls_before_resume))
    if not confirmed and _first_call_before_a_step(outcome):
        return False  # seen, not confirmed, then the first call after the load comes before any optimizer step
    if loop.resume == "restart":
        first = next((number for number in range(first + 1, len(outcome.calls))
                      if outcome.calls[number][1] == outcome.calls[first][1] + 1), None)
    return first is not None and first < outcome.calls_before_resume


def _first_call_before_a_step(outcome: Outcome) -> bool:
    """The first call after the load comes before any optimizer update since (a lagging call whose period ran before
    the checkpoint, a re-application, a restarted period or a repeat: the rule cannot tell them apart and applies
    it as stock timm does)."""
    return outcome.fresh_at_first_call == 0


def first_lagging_call(calls: list[tuple[int, float | None, int]]) -> int | None:
    """The number of the first call that passes the index in force after optimizer updates ran with it."""
    in_force, next_then = 0, 0
    for number, (_, index, next_index) in enumerate(calls):
        if index == in_force and next_index > next_then:
            return number
        in_force, next_then = index, next_index
    return None


def with_policy(loop: Loop, on_lag: str) -> Loop:
    return replace(loop, on_lag=on_lag)

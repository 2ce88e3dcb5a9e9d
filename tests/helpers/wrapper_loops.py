"""Training loops through a user's scheduler wrapper and through checkpoints, run stock or fixed, segment by segment.

A :class:`Case` says how the training code drives the scheduler: through a wrapper that multiplies each param
group's LR by the group's own factor after every call of the schedule's unit (layer-wise LR decay done by hand),
that also calls the other unit (timm's train.py calls ``step_update`` and ``step`` on every schedule), that calls
twice; with which index (the next period's, as timm documents, or the one in force: a one-period lag), before or
after each period. And how the run is checkpointed: its segments (``"fixed"`` or ``"stock"``), each a new process
that builds a new optimizer and scheduler and loads the last segment's optimizer and scheduler state dicts (the
scheduler built before or after the optimizer's state is loaded), then goes on with the loop where it stopped.

:func:`run` drives it and records the LR every parameter update ran with (a step pre-hook registered after the
scheduler's, :class:`support.StepRecorder`); :func:`wrong_steps` compares each group's LR with v(t) of a stock
scheduler, times the group's factor where the wrapper scales. A stock run runs every segment stock (timm's own
classes, no patch in effect); a fixed run runs its ``"fixed"`` segments through the case's adapter and options.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

import timm_sched_fix

import loops
from support import StepRecorder, make_optimizer, stock_scheduler

FACTORS = (1.0, 0.3, 0.65)  # the wrapper's factor of param group 0, 1, 2 (layer-wise decay: deeper, smaller)
PATHS = {
    "none": ("fixed",),
    "fixed->fixed": ("fixed", "fixed"),
    "fixed->stock->fixed": ("fixed", "stock", "fixed"),
    "stock->fixed": ("stock", "fixed"),
    "fixed->stock": ("fixed", "stock"),
}
PLATEAU_METRIC = 1.0  # constant: the reference values hold


@dataclass(frozen=True)
class Case:
    name: str
    on_epochs: bool
    kwargs: dict = field(hash=False)
    epochs: int = 3
    batches: int = 2  # optimizer updates per epoch
    groups: int = 2
    scaled: bool = True  # the wrapper multiplies each group's LR by its factor after each call of the schedule's unit
    both_units: bool = False  # the loop also calls the other unit's method (train.py's pattern)
    twice: bool = False  # the wrapper calls the scheduler twice per call
    index: str = "next"  # "next": the index timm documents; "lag": the one in force (one period late)
    placement: str = "after"  # calls after each period (timm's train.py) or before it
    path: str = "none"
    cuts: tuple[int, ...] = ()  # the run is checkpointed after these many updates (one cut per segment boundary)
    sched_first: bool = True  # on resume, the scheduler is built before the optimizer's state is loaded
    adapter: str = "dropin"
    convention: str = "end"
    auto: bool = False
    on_lag: str = "warn"

    @property
    def periods(self) -> int:
        return self.epochs if self.on_epochs else self.epochs * self.batches

    @property
    def segments(self) -> tuple[str, ...]:
        return PATHS[self.path]

    def factor(self, group: int) -> float:
        return FACTORS[group % len(FACTORS)] if self.scaled else 1.0


@dataclass
class Outcome:
    lrs: list[list[float]]  # every param group's LR at every parameter update
    correct: list[int]  # the index each update should have run with
    error: BaseException | None
    caught: list[warnings.WarningMessage]


class Wrapper:
    """The user's wrapper: calls the scheduler, then scales each group of the schedule's unit by its factor."""

    def __init__(self, case: Case, scheduler: Any, optimizer: torch.optim.Optimizer) -> None:
        self.case, self.scheduler, self.optimizer = case, scheduler, optimizer

    def call(self, unit_is_epoch: bool, index: int) -> None:
        case = self.case
        method = getattr(self.scheduler, "step" if unit_is_epoch else "step_update")
        metric = {"metric": PLATEAU_METRIC} if case.name == "PlateauLRScheduler" else {}
        for _ in range(2 if case.twice else 1):
            method(index, **metric)
        if unit_is_epoch == case.on_epochs and case.scaled:
            for i, group in enumerate(self.optimizer.param_groups):
                group["lr"] = group["lr"] * case.factor(i)

    def state_dict(self) -> dict[str, Any]:
        return self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state)


def _build(case: Case, optimizer: torch.optim.Optimizer, fixed: bool) -> Any:
    """loops.build (a Case has the fields it reads), under patch() for the patch adapter."""
    if fixed and case.adapter == "patch":
        with timm_sched_fix.patched(convention=case.convention, auto=case.auto, on_lag=case.on_lag):
            return loops.build(case, optimizer, fixed)
    return loops.build(case, optimizer, fixed)


class _Run:
    def __init__(self, case: Case, fixed_run: bool, meddle: Any = None) -> None:
        self.case, self.fixed_run, self.meddle = case, fixed_run, meddle
        self.lrs: list[list[float]] = []
        self.correct: list[int] = []
        self.optimizer: torch.optim.Optimizer | None = None
        self.recorder: StepRecorder | None = None

    def _segment(self, number: int, saved: dict | None) -> None:
        """A new process: a new optimizer and scheduler, from the last segment's checkpoint if there is one."""
        case = self.case
        fixed = self.fixed_run and case.segments[number] == "fixed"
        optimizer = make_optimizer(case.groups)
        if saved is not None and not case.sched_first:
            optimizer.load_state_dict(saved["optimizer"])
        scheduler = _build(case, optimizer, fixed)
        if saved is not None:
            if case.sched_first:
                optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if self.meddle is not None and fixed:
                self.meddle(scheduler, optimizer)
        self.optimizer, self.wrapper = optimizer, Wrapper(case, scheduler, optimizer)
        self.recorder = StepRecorder(optimizer)  # after the scheduler's hooks: what the update runs with

    def _checkpoint(self, weights_only: bool) -> dict:
        self.lrs += self.recorder.steps
        self.recorder._handle.remove()
        buffer = io.BytesIO()
        torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.wrapper.state_dict()}, buffer)
        buffer.seek(0)
        return torch.load(buffer, weights_only=weights_only)

    def _call(self, on_epochs: bool, next_index: int) -> None:
        index = next_index - 1 if self.case.index == "lag" else next_index
        self.wrapper.call(on_epochs, max(index, 0))

    def run(self) -> None:
        case = self.case
        segment, cuts = 0, list(case.cuts)
        self._segment(0, None)
        update = 0
        before = case.placement == "before"
        for epoch in range(case.epochs):
            if before and (case.on_epochs or case.both_units):
                self._call(True, epoch)
            for _ in range(case.batches):
                if before and (not case.on_epochs or case.both_units):
                    self._call(False, update)
                for group in self.optimizer.param_groups:
                    for parameter in group["params"]:
                        parameter.grad = torch.ones_like(parameter)
                self.optimizer.step()
                self.correct.append(epoch if case.on_epochs else update)
                update += 1
                if not before and (not case.on_epochs or case.both_units):
                    self._call(False, update)
                last = update == (epoch + 1) * case.batches
                if last and not before and (case.on_epochs or case.both_units):
                    self._call(True, epoch + 1)
                if cuts and update == cuts[0]:
                    cuts.pop(0)
                    saved = self._checkpoint(weights_only=self.fixed_run and case.segments[segment] == "fixed")
                    segment += 1
                    self._segment(segment, saved)
        self.lrs += self.recorder.steps


def run(case: Case, fixed: bool, meddle: Any = None) -> Outcome:
    """Run the case to its end, or to its first exception (recorded, as a training script stops there).
    ``meddle(scheduler, optimizer)``: called after each load of a fixed segment (to show the property can fail)."""
    state = _Run(case, fixed, meddle)
    error = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)  # timm <= 1.0.15 on this torch
        warnings.filterwarnings("ignore", category=FutureWarning)  # PlateauLRScheduler's deprecation
        try:
            state.run()
        except Exception as exception:  # noqa: BLE001 - the outcome records it
            error = exception
            if state.recorder is not None:
                state.lrs += state.recorder.steps
    return Outcome(state.lrs, state.correct[:len(state.lrs)], error, list(caught))


def values(case: Case) -> list[list[float]]:
    """v(0..periods) per param group (lr_scale included), from a stock scheduler driven in order. A
    PlateauLRScheduler without warmup starts at its base LR (stock ``step(0)`` writes ``warmup_lr_init`` there:
    quirk plateau_step0_without_warmup), and keeps it under a constant metric."""
    optimizer = make_optimizer(case.groups)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)  # PlateauLRScheduler's deprecation
        warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)  # timm <= 1.0.15 on this torch
        stock = stock_scheduler(case.name, optimizer, case.kwargs)
        schedule = []
        for t in range(case.periods + 1):
            if case.name == "PlateauLRScheduler" and t == 0 and not case.kwargs.get("warmup_t"):
                stock.update_groups(stock.base_values)
            elif case.on_epochs:
                stock.step(t, PLATEAU_METRIC)
            else:
                stock.step_update(t)
            schedule.append([float(group["lr"]) for group in optimizer.param_groups])
    return schedule


def wrong_steps(case: Case, outcome: Outcome, schedule: list[list[float]]) -> int:
    """Parameter updates where some group ran with another LR than v(t) times the group's factor."""
    wrong = 0
    for lrs, t in zip(outcome.lrs, outcome.correct):
        expected = [value * case.factor(i) for i, value in enumerate(schedule[t])]
        wrong += lrs != pytest.approx(expected, rel=1e-12, abs=0)
    return wrong

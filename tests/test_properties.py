"""Property tests: random scheduler classes and settings, random param groups (``lr_scale``, float and
tensor LRs) and random interleavings of optimizer steps, scheduler calls (explicit and counting, both
conventions, auto mode), state-dict round trips, resumes into a fresh optimizer, copies and re-wrapping.

Invariant (docs/reference/terms.md): optimizer step k of an update schedule runs with v(k), every optimizer step of
epoch e of an epoch schedule with v(e); v comes from a stock scheduler driven with ``step(t)`` in order.
Shrunk failures are kept below as ``@example``s. Profiles: see conftest.py (``--hypothesis-profile=soak``).
"""

from __future__ import annotations

import copy
import inspect
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Any

import pytest
import timm.scheduler
import torch
from hypothesis import event, given
from hypothesis import strategies as st

import timm_sched_fix
from timm_sched_fix._adapter import Adapter

from support import (
    ADAPTERS,
    StepRecorder,
    assert_trace,
    group_lrs,
    installed_classes,
    no_warnings_from_fix,
    stock_scheduler,
)

#: What may happen at a checkpoint point (after an optimizer step and its calls, or after an epoch's call).
OPERATIONS = ("none", "round_trip", "resume", "deepcopy", "pickle", "rewrap")


@dataclass
class Scenario:
    name: str
    on_epochs: bool
    kwargs: dict[str, Any]
    groups: list[tuple[float, float | None, bool]]  # (lr, lr_scale or None, tensor LR)
    adapter: str
    convention: str
    auto: bool
    batches: list[int]  # optimizer steps per epoch
    metrics: list[float]  # Plateau: the metric passed with index t is metrics[t]
    calls: list[str] = field(default_factory=list)  # per call: "explicit", "counting" or "skip" (auto only)
    # per checkpoint point: (operation, adapter of a resumed scheduler, initialize, scheduler built first)
    operations: list[tuple[str, str, bool, bool]] = field(default_factory=list)


def _accepts(name: str, parameter: str) -> bool:
    return parameter in inspect.signature(getattr(timm.scheduler, name)).parameters


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    name = draw(st.sampled_from(installed_classes()))
    on_epochs = name == "PlateauLRScheduler" or draw(st.booleans())
    batches = draw(st.lists(st.integers(1, 4), min_size=1, max_size=5))
    periods = len(batches) if on_epochs else sum(batches)
    kwargs: dict[str, Any] = {
        "warmup_t": draw(st.integers(0, 3)),
        "warmup_lr_init": draw(st.sampled_from([0.0, 1e-3, 0.02])),
    }
    if name in ("CosineLRScheduler", "TanhLRScheduler", "PolyLRScheduler", "WSDLRScheduler"):
        kwargs["t_initial"] = draw(st.integers(2, periods + 2))
        kwargs["lr_min"] = draw(st.sampled_from([0.0, 1e-4]))
    if name in ("CosineLRScheduler", "TanhLRScheduler", "PolyLRScheduler") and _accepts(name, "cycle_decay"):
        kwargs["cycle_limit"] = draw(st.integers(1, 3))
        kwargs["cycle_decay"] = draw(st.sampled_from([1.0, 0.5]))
    elif name in ("CosineLRScheduler", "TanhLRScheduler") and _accepts(name, "cycle_limit"):
        # timm 0.4.12 (quirk cycle_args_renamed_0_5): decay_rate per cycle, and cycle_limit=0 means unlimited
        kwargs["cycle_limit"] = draw(st.integers(0, 3))
        kwargs["decay_rate"] = draw(st.sampled_from([1.0, 0.5]))
    if name == "StepLRScheduler":
        kwargs.update(decay_t=draw(st.integers(1, 4)), decay_rate=draw(st.sampled_from([0.5, 0.1])))
    if name == "MultiStepLRScheduler":
        kwargs.update(decay_t=sorted(draw(st.sets(st.integers(1, periods + 1), min_size=1, max_size=3))),
                      decay_rate=draw(st.sampled_from([0.5, 0.1])))
    if name == "WSDLRScheduler":
        kwargs["decay_t"] = draw(st.integers(1, kwargs["t_initial"]))
    if name == "PlateauLRScheduler":
        kwargs.update(mode="min", patience_t=draw(st.integers(0, 2)), decay_rate=0.5)
    if _accepts(name, "warmup_prefix") and name not in ("StepLRScheduler", "MultiStepLRScheduler"):
        kwargs["warmup_prefix"] = draw(st.booleans())
    if draw(st.booleans()):
        start = draw(st.integers(0, periods))
        kwargs.update(noise_range_t=(start, draw(st.integers(start + 1, periods + 2))),
                      noise_pct=draw(st.sampled_from([0.1, 0.67])), noise_seed=draw(st.integers(0, 2**16)))
    if name != "PlateauLRScheduler":
        kwargs["t_in_epochs"] = on_epochs
    group_count = draw(st.integers(1, 3))
    groups = [(draw(st.sampled_from([0.1, 0.05, 1.0])),
               draw(st.none() | st.sampled_from([1.0, 0.5, 0.3])) if group_count > 1 or draw(st.booleans()) else None,
               draw(st.booleans())) for _ in range(group_count)]
    auto = draw(st.booleans())
    scenario = Scenario(
        name=name, on_epochs=on_epochs, kwargs=kwargs, groups=groups, adapter=draw(st.sampled_from(ADAPTERS)),
        convention=draw(st.sampled_from(["end", "begin"])), auto=auto, batches=batches,
        metrics=draw(st.lists(st.sampled_from([1.0, 0.5, 0.25, 0.1]), min_size=len(batches) + 2,
                              max_size=len(batches) + 2)),
    )
    call_kinds = ["explicit", "counting"] + (["skip"] if auto and not on_epochs else [])
    points = sum(batches) + len(batches)  # enough for every call and every checkpoint point
    scenario.calls = draw(st.lists(st.sampled_from(call_kinds), min_size=points, max_size=points))
    operation = st.tuples(st.sampled_from(OPERATIONS), st.sampled_from(ADAPTERS), st.booleans(), st.booleans())
    # mostly "none", so that state carried across several operations matters too
    scenario.operations = draw(st.lists(st.one_of(st.just(("none", "", True, True)), operation),
                                        min_size=points, max_size=points))
    return scenario


# -- building ------------------------------------------------------------------------------------


def make_groups(scenario: Scenario, parameters: list[torch.nn.Parameter] | None = None) -> torch.optim.SGD:
    groups = []
    for i, (lr, lr_scale, tensor) in enumerate(scenario.groups):
        group: dict[str, Any] = {
            "params": [parameters[i] if parameters else torch.nn.Parameter(torch.zeros(2))],
            "lr": torch.tensor(lr, dtype=torch.float64) if tensor else lr,
        }
        if lr_scale is not None:
            group["lr_scale"] = lr_scale
        groups.append(group)
    return torch.optim.SGD(groups, lr=0.1)


def build(scenario: Scenario, optimizer: torch.optim.Optimizer, adapter: str, initialize: bool = True) -> Any:
    options = dict(convention=scenario.convention, auto=scenario.auto)
    kwargs = dict(scenario.kwargs, initialize=initialize)
    if adapter == "dropin":
        return getattr(timm_sched_fix, scenario.name)(optimizer, **kwargs, **options)
    if adapter == "patch":
        assert timm_sched_fix.is_patched()
        return getattr(timm.scheduler, scenario.name)(optimizer, **kwargs)
    return timm_sched_fix.wrap(stock_scheduler(scenario.name, optimizer, kwargs), **options)


def reference(scenario: Scenario, periods: int) -> list[list[float]]:
    """v(0..periods) per group from a stock scheduler on float LRs, driven in order."""
    stock_scenario = copy.copy(scenario)
    stock_scenario.groups = [(lr, lr_scale, False) for lr, lr_scale, _ in scenario.groups]
    optimizer = make_groups(stock_scenario)
    stock = stock_scheduler(scenario.name, optimizer, scenario.kwargs)
    values = []
    for t in range(periods + 1):
        if scenario.name == "PlateauLRScheduler" and t == 0 and not scenario.kwargs["warmup_t"]:
            stock.update_groups(stock.base_values)  # compat quirk plateau_step0_without_warmup
        elif scenario.on_epochs:
            stock.step(t, scenario.metrics[t])
        else:
            stock.step_update(t)
        values.append(group_lrs(optimizer))
    return values


# -- the run -------------------------------------------------------------------------------------


class Run:
    """Drives one scenario; the recorder always sits on the optimizer in use, after the scheduler's hook."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.optimizer = make_groups(scenario)
        self.scheduler = build(scenario, self.optimizer, scenario.adapter)
        self.steps: list[list[float]] = []
        self.recorder = StepRecorder(self.optimizer)
        self.calls = iter(scenario.calls)
        self.operations = iter(scenario.operations)

    def switch_to(self, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
        self.steps += self.recorder.steps
        self.recorder._handle.remove()
        self.optimizer, self.scheduler = optimizer, scheduler
        self.recorder = StepRecorder(optimizer)

    def call(self, method: str, t: int) -> None:
        kind = next(self.calls)
        metric = {"metric": self.scenario.metrics[t]} if self.scenario.on_epochs else {}
        if kind == "explicit":
            getattr(self.scheduler, method)(t, **metric)
        elif kind == "counting":
            getattr(self.scheduler, method)(**metric)

    def checkpoint_point(self) -> None:
        operation, adapter, initialize, scheduler_first = next(self.operations)
        scenario = self.scenario
        if operation == "round_trip":
            self.scheduler.load_state_dict(self.scheduler.state_dict())
        elif operation == "resume" and scenario.name != "PlateauLRScheduler":
            saved = pickle.loads(pickle.dumps((self.optimizer.state_dict(), self.scheduler.state_dict())))
            parameters = [group["params"][0] for group in self.optimizer.param_groups]
            optimizer = make_groups(scenario, parameters)
            if scheduler_first:  # initialize=False needs the optimizer's initial_lr: only after loading it
                scheduler = build(scenario, optimizer, adapter)
                optimizer.load_state_dict(saved[0])
            else:
                optimizer.load_state_dict(saved[0])
                scheduler = build(scenario, optimizer, adapter, initialize)
            scheduler.load_state_dict(saved[1])
            self.switch_to(optimizer, scheduler)
        elif operation in ("deepcopy", "pickle"):
            copier = copy.deepcopy if operation == "deepcopy" else lambda obj: pickle.loads(pickle.dumps(obj))
            scheduler = copier(self.scheduler)
            self.switch_to(scheduler.optimizer, scheduler)
        elif operation == "rewrap" and isinstance(self.scheduler, timm_sched_fix.FixedScheduler):
            assert timm_sched_fix.wrap(self.scheduler, convention=scenario.convention, auto=scenario.auto) \
                is self.scheduler
            if self.scheduler._self_timing.owner is Adapter.WRAP:
                saved = self.scheduler.state_dict()
                options = dict(convention=scenario.convention, auto=scenario.auto)
                scheduler = timm_sched_fix.wrap(timm_sched_fix.unwrap(self.scheduler), **options)
                scheduler.load_state_dict(saved)
                self.switch_to(self.optimizer, scheduler)  # the recorder goes after the new auto-mode hook

    def run(self) -> list[list[float]]:
        scenario = self.scenario
        update = 0
        for epoch, batches in enumerate(scenario.batches):
            if scenario.on_epochs and scenario.convention == "begin":
                self.call("step", epoch)
            for _ in range(batches):
                if not scenario.on_epochs and scenario.convention == "begin":
                    self.call("step_update", update)
                self.optimizer.step()
                update += 1
                if not scenario.on_epochs and scenario.convention == "end":
                    self.call("step_update", update)
                self.checkpoint_point()
            if scenario.on_epochs and scenario.convention == "end":
                self.call("step", epoch + 1)
            self.checkpoint_point()
        self.steps += self.recorder.steps
        return self.steps


def expected(scenario: Scenario) -> list[list[float]]:
    periods = len(scenario.batches) if scenario.on_epochs else sum(scenario.batches)
    values = reference(scenario, periods)
    trace, update = [], 0
    for epoch, batches in enumerate(scenario.batches):
        for _ in range(batches):
            trace.append(values[epoch if scenario.on_epochs else update])
            update += 1
    return trace


@given(scenarios())
def test_every_optimizer_step_runs_with_its_scheduled_lr(scenario: Scenario) -> None:
    with no_warnings_from_fix(), patch_for(scenario):
        actual = Run(scenario).run()
    assert_trace(actual, expected(scenario))


def patch_for(scenario: Scenario) -> Any:
    """Patched for the whole run when the scenario builds a scheduler through ``patch()`` at any point."""
    if scenario.adapter == "patch" or any(op[1] == "patch" for op in scenario.operations):
        return timm_sched_fix.patched(convention=scenario.convention, auto=scenario.auto)
    return _nothing()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def test_the_invariant_catches_stock_timm():
    """The property could not fail if ``expected`` were what any scheduler does: stock timm's Tanh runs its
    first step with the base LR 0.1 instead of v(0)."""
    scenario = Scenario(name="TanhLRScheduler", on_epochs=True, kwargs=dict(t_initial=4, t_in_epochs=True),
                        groups=[(0.1, None, True)], adapter="wrap", convention="end", auto=False, batches=[2, 2],
                        metrics=[1.0] * 4)
    optimizer = make_groups(scenario)
    stock = timm.scheduler.TanhLRScheduler(optimizer, t_initial=4, t_in_epochs=True)
    recorder = StepRecorder(optimizer)
    for epoch, batches in enumerate(scenario.batches):
        for _ in range(batches):
            optimizer.step()
        stock.step(epoch + 1)
    with pytest.raises(AssertionError, match="optimizer step 0"):
        assert_trace(recorder.steps, expected(scenario))


JUNK = st.one_of(st.none(), st.integers(-3, 3), st.floats(allow_nan=True), st.text(max_size=3),
                 st.lists(st.floats(0, 1), max_size=3), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@given(scenarios(), st.data())
def test_a_state_dict_either_loads_or_changes_nothing(scenario: Scenario, data: st.DataObject) -> None:
    """Random truncation and corruption of a fixed or a stock state dict: a load that raises leaves the
    scheduler, its position and every param group (tensor LRs included, same objects) exactly as they were."""
    with no_warnings_from_fix(), patch_for(scenario):
        # a corrupted metric (or LRs of another run) makes the position record stale: said, then loaded as stock's
        warnings.filterwarnings("ignore", "the position record .* is not current", timm_sched_fix.ScheduleCallWarning)
        run = Run(scenario)
        run.run()
        source = stock_scheduler(scenario.name, make_groups(scenario), scenario.kwargs) \
            if data.draw(st.booleans(), label="stock source") else run.scheduler
        state = dict(source.state_dict())
        for key in data.draw(st.lists(st.sampled_from(sorted(state)), max_size=2), label="dropped"):
            state.pop(key, None)
        for key in data.draw(st.lists(st.sampled_from(sorted(state) or ["x"]), max_size=2), label="corrupted"):
            state[key] = data.draw(JUNK, label=f"value of {key}")
        scheduler, optimizer = run.scheduler, run.optimizer
        before = (repr(scheduler.state_dict()),
                  [{k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in group.items() if k != "params"}
                   for group in optimizer.param_groups],
                  [id(group["lr"]) for group in optimizer.param_groups])
        try:
            scheduler.load_state_dict(state)
            event("loaded")
        except (ValueError, TypeError):
            event("refused")
            after = (repr(scheduler.state_dict()),
                     [{k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in group.items() if k != "params"}
                      for group in optimizer.param_groups],
                     [id(group["lr"]) for group in optimizer.param_groups])
            assert after == before

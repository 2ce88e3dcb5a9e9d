"""Every real parameter update is counted once, behind any optimizer stack, for exactly the scheduler's lifetime.

Stacks: Accelerate's prepared optimizer, timm's Lookahead (``create_optimizer_v2(..., "lookahead_sgd")`` and
``"lookahead_adamw"``), an SGD subclass whose ``step()`` calls ``super().step()`` (with a plain SGD created too),
a LARS-style wrapper (apex LARC's shape), and an optimizer no torch optimizer stands behind. Each runs under patch(), wrap() and the drop-in classes, in
explicit and auto mode; the truth is the LR each parameter update ran with (a step pre-hook on the optimizer
that performs the update, registered after the scheduler, or the parameter's own change under SGD with
gradient 1). DeepSpeed's stacks are in test_engines.py. Also: a scheduler no longer referenced stops acting at
once (no garbage collection), param groups added mid-run join the schedule.
"""

from __future__ import annotations

import gc
import warnings

import pytest
import timm
import timm.scheduler
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState

import timm_sched_fix
from timm_sched_fix import _counting as counting
from timm_sched_fix._timing import timing_of
from timm_sched_fix.exceptions import ScheduleCountWarning, ScheduleLagWarning

from support import ADAPTERS, LR_SCALES, fixed_scheduler, make_optimizer

UPDATES = 8
SCHEDULE = dict(t_initial=UPDATES, warmup_t=2, warmup_lr_init=1e-3, lr_min=1e-4, t_in_epochs=False)
STACKS = ("accelerate", "lookahead_sgd", "lookahead_adamw", "subclass", "lars_style")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


class ClippedSGD(torch.optim.SGD):
    """A user optimizer: clip, then the parent's step (torch instruments both steps once instances exist)."""

    def step(self, closure=None):
        torch.nn.utils.clip_grad_norm_(self.param_groups[0]["params"], 1.0)
        return super().step(closure)


class LarsStyle:
    """A wrapper shaped like apex's LARC: no torch optimizer itself, the one it drives under ``optim``, whose
    param groups it shares; its step adapts the gradients, then steps the inner optimizer."""

    def __init__(self, optim: torch.optim.Optimizer) -> None:
        self.optim = optim

    @property
    def param_groups(self) -> list[dict]:
        return self.optim.param_groups

    def step(self) -> None:
        with torch.no_grad():
            for group in self.optim.param_groups:
                for parameter in group["params"]:
                    parameter.grad.mul_(0.5)
        self.optim.step()


def model_with_groups() -> tuple[torch.nn.Module, list[dict]]:
    """A model whose parameters every stack gets as two param groups, the second with an lr_scale."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    first, second = list(model[0].parameters()), list(model[1].parameters())
    return model, [{"params": first}, {"params": second, "lr_scale": LR_SCALES[1]}]


class Stack:
    """An optimizer stack: what the scheduler is given, the torch optimizer that performs the updates, and
    ``update()``, one training step that performs exactly one parameter update."""

    def __init__(self, name: str, accumulation: int = 1) -> None:
        self.name = name
        model, groups = model_with_groups()
        self.model = model
        self.micro_batches = 1
        if name == "accelerate":
            accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
            self.model, self.optimizer = accelerator.prepare(model, torch.optim.SGD(groups, lr=0.1))
            self.stepping = self.optimizer.optimizer
            self.accelerator, self.micro_batches = accelerator, accumulation
        elif name.startswith("lookahead"):
            from timm.optim import create_optimizer_v2

            # train.py --opt lookahead_sgd: with weight decay, timm makes two groups (no decay, decay) in every release
            self.optimizer = create_optimizer_v2(model, name, 0.1, 1e-4)  # lr, weight_decay: named otherwise in 0.4
            assert len(self.optimizer.param_groups) == 2
            self.optimizer.param_groups[1]["lr_scale"] = LR_SCALES[1]  # as layer decay would give it
            self.stepping = getattr(self.optimizer, "_base_optimizer", None) or self.optimizer.base_optimizer
        elif name == "subclass":
            torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # instruments SGD.step too
            self.optimizer = self.stepping = ClippedSGD(groups, lr=0.1)
        elif name == "lars_style":
            self.stepping = torch.optim.SGD(groups, lr=0.1, momentum=0.9)
            self.optimizer = LarsStyle(self.stepping)
        else:
            raise ValueError(name)

    def update(self) -> None:
        for _ in range(self.micro_batches):
            inputs = torch.randn(2, 4)
            if self.name == "accelerate":
                with self.accelerator.accumulate(self.model):
                    self.accelerator.backward(self.model(inputs).pow(2).mean())
                    self.optimizer.step()
                    self.optimizer.zero_grad()
            else:
                self.model(inputs).pow(2).mean().backward()
                self.optimizer.step()
                self.model.zero_grad()  # not opt.zero_grad(): Lookahead's step hooks stay uninstalled


class UpdateRecorder:
    """The LR of each param group at every parameter update: a pre-hook on the optimizer that performs them,
    registered after the scheduler's. For a subclass whose steps nest, only the outermost step is an update."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.updates: list[list[float]] = []
        self.depth = 0
        optimizer.register_step_pre_hook(self._before)
        optimizer.register_step_post_hook(self._after)

    def _before(self, optimizer, args, kwargs) -> None:
        if not self.depth:
            self.updates.append([float(group["lr"]) for group in optimizer.param_groups])
        self.depth += 1

    def _after(self, optimizer, args, kwargs) -> None:
        self.depth -= 1


def schedule_values(updates: int, groups: int = 2) -> list[list[float]]:
    """v(0..updates-1) per group, from a stock scheduler on plain SGD with the same base LR and lr_scales."""
    optimizer = make_optimizer(groups)
    stock = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    values = []
    for k in range(updates):
        stock.step_update(k)
        values.append([float(group["lr"]) for group in optimizer.param_groups])
    return values


def assert_ran_with(recorded: list[list[float]], expected: list[list[float]]) -> None:
    assert len(recorded) == len(expected), f"{len(recorded)} updates recorded, {len(expected)} expected"
    for k, (ran, want) in enumerate(zip(recorded, expected)):
        assert ran == pytest.approx(want, rel=1e-12, abs=0), f"update {k} ran with {ran}, v({k}) is {want}"


def train(stack: Stack, scheduler, mode: str, updates: int = UPDATES) -> None:
    for k in range(updates):
        stack.update()
        if mode == "explicit":
            scheduler.step_update(k + 1)


@pytest.mark.parametrize("mode", ["explicit", "auto"])
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("name", STACKS)
def test_every_update_runs_with_its_value_behind_the_stack(name, adapter, mode):
    stack = Stack(name)
    with fixed_scheduler(adapter, "CosineLRScheduler", stack.optimizer, SCHEDULE, auto=mode == "auto") as scheduler:
        recorder = UpdateRecorder(stack.stepping)
        train(stack, scheduler, mode)
    assert_ran_with(recorder.updates, schedule_values(UPDATES))
    timing = timing_of(scheduler)
    assert timing.counts_updates and timing._counter.count == UPDATES, "one count per parameter update"
    assert scheduler.last_t == (UPDATES - 1 if mode == "auto" else UPDATES)


@pytest.mark.parametrize("zero_grad", ["optimizer", "model"])
def test_lookahead_auto_mode_whichever_zero_grad(zero_grad):
    """timm's Lookahead installs its own step hooks only in its first zero_grad(): counting there ran late with
    opt.zero_grad() and never with model.zero_grad(); its base optimizer counts every update from the first."""
    stack = Stack("lookahead_sgd")
    if zero_grad == "optimizer" and not hasattr(stack.optimizer, "_optimizer_step_pre_hooks"):
        pytest.skip(f"stock timm {timm.__version__}'s Lookahead fails in step() after its zero_grad() on torch "
                    f"{torch.__version__} (no hook registries of its own)")
    scheduler = timm_sched_fix.CosineLRScheduler(stack.optimizer, **SCHEDULE, auto=True)
    recorder = UpdateRecorder(stack.stepping)
    for _ in range(UPDATES):
        stack.model(torch.randn(2, 4)).pow(2).mean().backward()
        stack.optimizer.step()
        (stack.optimizer if zero_grad == "optimizer" else stack.model).zero_grad()
    assert_ran_with(recorder.updates, schedule_values(UPDATES))
    assert scheduler.last_t == UPDATES - 1


@pytest.mark.parametrize("name", STACKS)
def test_lag_is_detected_behind_the_stack(name):
    """Explicit mode counts the updates too: Swin's step_update(k) after update k (the index in force after one
    update ran with it, then the next one after the next update) is a lag, seen only if each update is counted."""
    stack = Stack(name)
    scheduler = timm_sched_fix.CosineLRScheduler(stack.optimizer, **SCHEDULE)
    stack.update()
    assert timing_of(scheduler).steps_since_apply == 1
    scheduler.step_update(0)  # one lagging call is not yet a lag (lag.py): the next one decides
    stack.update()
    assert timing_of(scheduler).steps_since_apply == 1
    with pytest.warns(ScheduleLagWarning):
        scheduler.step_update(1)


def test_accelerate_accumulation_counts_the_updates_only():
    """With gradient accumulation Accelerate steps the optimizer every second micro-batch: auto mode follows the
    updates, not the calls of AcceleratedOptimizer.step()."""
    stack = Stack("accelerate", accumulation=2)
    scheduler = timm_sched_fix.CosineLRScheduler(stack.optimizer, **SCHEDULE, auto=True)
    recorder = UpdateRecorder(stack.stepping)
    train(stack, scheduler, "auto")
    assert_ran_with(recorder.updates, schedule_values(UPDATES))


def test_subclass_step_counts_once_per_update_measured_on_the_parameter():
    """The repro's truth: with gradient 1, an SGD parameter moves by the LR it was updated with."""
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    parameter = torch.nn.Parameter(torch.zeros(1))
    parameter.grad = torch.ones(1)
    optimizer = ClippedSGD([parameter], lr=0.1)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, auto=True)
    moved = []
    for _ in range(UPDATES):
        before = parameter.item()
        optimizer.step()
        moved.append(before - parameter.item())
    expected = [values[0] for values in schedule_values(UPDATES, groups=1)]
    assert moved == pytest.approx(expected, rel=1e-5)  # float32 parameter
    assert scheduler.last_t == UPDATES - 1


def test_a_step_that_raised_does_not_stop_the_counting():
    """A nested step that raised skipped torch's post-hooks: the next step is still counted."""

    class FailingOnce(ClippedSGD):
        failed = False

        def step(self, closure=None):
            if not self.failed:
                self.failed = True
                raise RuntimeError("out of memory")
            return super().step(closure)

    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    optimizer = FailingOnce([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, auto=True)
    with pytest.raises(RuntimeError, match="out of memory"):
        optimizer.step()
    for _ in range(3):
        optimizer.step()
    assert timing_of(scheduler)._counter.count == 4  # the failed step, its pre-hook ran, and three updates
    assert scheduler.last_t == 3


# -- no torch optimizer reachable ------------------------------------------------------------------

class GroupsOnly:
    """An optimizer-like object with param groups and no torch optimizer behind it."""

    def __init__(self) -> None:
        self.param_groups = [{"params": [], "lr": 0.1}, {"params": [], "lr": 0.1, "lr_scale": LR_SCALES[1]}]

    def step(self) -> None:
        pass


def uncountable_stacks():
    class HooksNeverInstalled(torch.optim.Optimizer):  # skips Optimizer.__init__, as timm's Lookahead does
        def __init__(self) -> None:
            self.param_groups = [{"params": [], "lr": 0.1}, {"params": [], "lr": 0.1, "lr_scale": LR_SCALES[1]}]
            self.defaults, self.state = {}, {}

        def step(self, closure=None):
            return None

    return {"GroupsOnly": GroupsOnly, "HooksNeverInstalled": HooksNeverInstalled}


@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("kind", ["GroupsOnly", "HooksNeverInstalled"])
def test_uncountable_optimizer_degrades_and_says_so_once(kind, adapter):
    optimizer = uncountable_stacks()[kind]()
    assert counting.stepping_optimizer(optimizer) is None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, SCHEDULE) as scheduler:
            values = schedule_values(4)
            assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(values[0], rel=1e-12)  # v(0)
            for k in range(1, 4):
                optimizer.step()
                scheduler.step_update(k)
                assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(values[k], rel=1e-12)
            scheduler.step_update(3)  # a lag nobody can see: no warning, as stock
            scheduler.step_update()  # counts calls
            assert scheduler.last_t == 4
    counted = [w for w in caught if issubclass(w.category, ScheduleCountWarning)]
    assert len(counted) == 1 and kind in str(counted[0].message) and "lag detection is off" in str(counted[0].message)
    assert not [w for w in caught if issubclass(w.category, ScheduleLagWarning)]
    assert counted[0].filename == __file__ or adapter == "wrap" or counted[0].filename.endswith("support.py")


@pytest.mark.parametrize("adapter", ["wrap", "dropin"])
def test_auto_mode_on_an_uncountable_optimizer_is_refused_before_anything_changes(adapter):
    optimizer = GroupsOnly()
    stock = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE) if adapter == "wrap" else None
    before = [dict(group) for group in optimizer.param_groups]
    with pytest.raises(ValueError, match="auto=True cannot work on this optimizer: .*GroupsOnly.* never change"):
        if stock is not None:
            timm_sched_fix.wrap(stock, auto=True)
        else:
            timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE, auto=True)
    assert [dict(group) for group in optimizer.param_groups] == before
    if stock is not None:
        assert timing_of(stock) is None


def test_patch_auto_on_an_uncountable_optimizer_takes_explicit_calls_with_one_warning():
    optimizer = GroupsOnly()
    with pytest.warns(ScheduleCountWarning, match="patch\\(auto=True\\) cannot drive it") as caught, \
            timm_sched_fix.patched(auto=True):
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
    assert len([w for w in caught if issubclass(w.category, ScheduleCountWarning)]) == 1
    assert timing_of(scheduler).options.auto is False
    scheduler.step_update(2)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx(schedule_values(3)[2], rel=1e-12)


# -- lifetime ----------------------------------------------------------------------------------------

@pytest.fixture()
def no_gc():
    gc.collect()
    gc.disable()
    yield
    gc.enable()


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_a_dropped_auto_scheduler_stops_acting_at_once(adapter):
    """Stage 2 of a run replaces the schedule: every stage-2 step runs with the new scheduler's LR, without the
    garbage collector, and the old scheduler leaves no hook behind."""
    optimizer = make_optimizer()
    with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, SCHEDULE, auto=True) as scheduler:
        for _ in range(4):
            optimizer.step()
    assert scheduler.last_t == 3
    del scheduler
    assert not optimizer._optimizer_step_pre_hooks and not optimizer._optimizer_step_post_hooks
    stage2 = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda n: 0.5)
    recorder = UpdateRecorder(optimizer)
    for _ in range(3):
        optimizer.step()
        stage2.step()
    assert recorder.updates == [[0.05]] * 3


@pytest.mark.usefixtures("no_gc")
def test_a_dropped_scheduler_leaves_the_other_schedulers_counting():
    optimizer = make_optimizer()
    first = timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE)
    second = timm_sched_fix.CosineLRScheduler(optimizer, **SCHEDULE)
    optimizer.step()
    del first
    optimizer.step()
    assert timing_of(second).steps_since_apply == 2
    assert len(optimizer._optimizer_step_pre_hooks) == 1


@pytest.mark.usefixtures("no_gc")
@pytest.mark.parametrize("adapter", ["patch", "dropin"])
def test_a_temporary_scheduler_lives_through_its_call(adapter):
    optimizer = make_optimizer()
    with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, SCHEDULE):
        cls = timm.scheduler.CosineLRScheduler if adapter == "patch" else timm_sched_fix.CosineLRScheduler
        state = cls(make_optimizer(), **SCHEDULE).state_dict()
        cls(optimizer, **SCHEDULE).step_update(3)
    assert state["timm_sched_fix"]["last_t"] == 0
    assert optimizer.param_groups[0]["lr"] == pytest.approx(schedule_values(4, groups=1)[3][0], rel=1e-12)
    assert timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(make_optimizer(), **SCHEDULE)).state_dict()


# -- param groups added mid-run ----------------------------------------------------------------------

ADDED_AT = 3


@pytest.mark.parametrize("initial_lr", [None, 0.2], ids=["lr", "initial_lr"])
@pytest.mark.parametrize("mode", ["explicit", "auto"])
@pytest.mark.parametrize("adapter", ADAPTERS)
def test_param_group_added_mid_run_joins_the_schedule(adapter, mode, initial_lr):
    """Progressive unfreezing: a group added at update 3 runs with v(t) from its own base value (its initial_lr
    if set, else its lr) times its lr_scale, from its first update in auto mode, from the next call otherwise."""
    optimizer = make_optimizer(2)
    with fixed_scheduler(adapter, "CosineLRScheduler", optimizer, SCHEDULE, auto=mode == "auto") as scheduler:
        recorder = UpdateRecorder(optimizer)
        for k in range(UPDATES):
            if k == ADDED_AT:
                group = {"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.3, "lr_scale": LR_SCALES[2]}
                if initial_lr is not None:
                    group["initial_lr"] = initial_lr
                optimizer.add_param_group(group)
            optimizer.step()
            if mode == "explicit":
                scheduler.step_update(k + 1)
    base = 0.3 if initial_lr is None else initial_lr
    reference = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": scale}
                                 for scale in LR_SCALES], lr=0.1)
    reference.param_groups[2]["lr"] = base
    stock = timm.scheduler.CosineLRScheduler(reference, **SCHEDULE)
    expected = []
    for k in range(UPDATES):
        stock.step_update(k)
        expected.append([float(group["lr"]) for group in reference.param_groups][:2 if k < ADDED_AT else 3])
    if mode == "explicit":
        expected[ADDED_AT][2] = 0.3  # its first update runs with its own LR, until the next call
    assert_ran_with(recorder.updates, expected)
    assert len(scheduler.base_values) == 3 and optimizer.param_groups[2]["initial_lr"] == base


@pytest.mark.parametrize("adapter", ADAPTERS)
def test_param_group_added_to_a_noisy_plateau_schedule(adapter):
    """Quirk plateau_groups_fixed_at_construction: Plateau's per-group lists grow with the groups."""
    optimizer = make_optimizer(2)
    kwargs = dict(warmup_t=1, warmup_lr_init=1e-3, mode="min", patience_t=0, noise_range_t=(0, 10), noise_seed=1)
    with fixed_scheduler(adapter, "PlateauLRScheduler", optimizer, kwargs) as scheduler:
        for epoch in range(1, 5):
            if epoch == 3:
                optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 0.4})
            optimizer.step()
            scheduler.step(epoch, 1.0 if epoch < 3 else 2.0)  # the metric worsens: Plateau reduces the LRs
    assert len(scheduler.base_values) == 3
    assert 0 < optimizer.param_groups[2]["lr"] < 0.4

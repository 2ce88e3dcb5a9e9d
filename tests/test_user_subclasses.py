"""The fix defers to the user's own scheduler methods (issue 19, items 1, 4 and the subclass half of 5).

The differential property: generated scheduler subclasses (each overridable method, with and without ``super()``,
own counters, signatures with fewer or more parameters, counting and shifting calls) and instance patches, on
per-epoch and per-update schedules, run stock and fixed through every adapter and option; the LR every optimizer
step ran with (a step pre-hook registered after the scheduler's) is compared with v(t) as the subclass's own methods
define it. The fixed run has no more wrong steps than stock, raises nothing stock does not (``ScheduleLagError``
under ``on_lag="raise"`` aside), and where the fix cannot know an override's meaning it runs exactly as stock, with
one ``ScheduleOverrideWarning``. ``pytest -s`` prints the counts (``TSF_SUBCLASS_COUNTS=path`` writes them).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from unittest import mock

import pytest
import timm
import timm.scheduler
from hypothesis import assume, example, given
from hypothesis import strategies as st
from timm.scheduler.scheduler import Scheduler

import timm_sched_fix
from timm_sched_fix import ScheduleOverrideWarning
from timm_sched_fix._compat import inlined
from timm_sched_fix.exceptions import ScheduleLagError

import user_subclasses as us

COUNTS: Counter = Counter()

SCHEDULES = {
    "CosineLRScheduler": dict(t_initial=6, warmup_t=2, warmup_lr_init=0.01, lr_min=1e-3),
    "StepLRScheduler": dict(decay_t=2, decay_rate=0.5),
    "TanhLRScheduler": dict(t_initial=6, lr_min=1e-3),
}
NOISE = [None, dict(noise_range_t=(0, 100), noise_pct=0.5, noise_seed=7), dict(noise_range_t=1)]


@pytest.fixture(scope="module", autouse=True)
def report_counts():
    yield
    line = (f"test_user_subclasses (timm {timm.__version__}): {COUNTS['examples']} examples, "
            f"{COUNTS['compared']} compared with v(t), fixed worse than stock in {COUNTS['worse']}, better in "
            f"{COUNTS['better']}, equal in {COUNTS['equal']}; {COUNTS['as stock']} left as stock (identical LRs); "
            f"{COUNTS['stock failed']} loops stock itself could not run")
    print("\n" + line)
    path = os.environ.get("TSF_SUBCLASS_COUNTS")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps(dict(COUNTS, timm=timm.__version__)) + "\n")


@st.composite
def cases(draw):
    on_epochs = draw(st.booleans())
    unit_shapes = [name for name, shape in us.UNIT_SHAPES.items() if us.available(shape)]
    other_shapes = [name for name, shape in us.OTHER_SHAPES.items() if us.available(shape)]
    shapes = tuple(draw(st.lists(st.sampled_from(unit_shapes), max_size=1))
                   + draw(st.lists(st.sampled_from(other_shapes), max_size=2, unique=True)))
    patches = tuple(draw(st.lists(st.sampled_from([name for name in us.INSTANCE_PATCHES if us.patch_available(name)]),
                                  max_size=2, unique=True)))
    calls = {(us.UNIT_SHAPES.get(name) or us.OTHER_SHAPES[name]).call for name in shapes} - {"index"}
    loop = us.Loop(on_epochs=on_epochs, epochs=draw(st.integers(2, 4)), batches=draw(st.integers(1, 3)),
                   style=draw(st.sampled_from(["next", "lag", "before"])), call=calls.pop() if calls else "index",
                   save_load_at=draw(st.none() | st.integers(0, 1)))
    schedule = draw(st.sampled_from(sorted(SCHEDULES)))
    kwargs = dict(SCHEDULES[schedule], t_in_epochs=on_epochs, **(draw(st.sampled_from(NOISE)) or {}))
    adapter = draw(st.sampled_from(["patch", "wrap", "dropin"]))
    options = dict(convention=draw(st.sampled_from(["end", "begin"])),
                   auto=draw(st.booleans()) if not on_epochs else False,
                   on_lag=draw(st.sampled_from(["warn", "fix", "ignore", "raise"])))
    return schedule, kwargs, shapes, patches, loop, adapter, options


def build(schedule, kwargs, shapes, on_epochs, dropin):
    base = getattr(timm_sched_fix if dropin else timm.scheduler, schedule)
    expression = f"{'timm_sched_fix' if dropin else 'timm.scheduler'}.{schedule}"
    return us.subclass(base, expression, on_epochs, shapes)


def run_stock(schedule, kwargs, shapes, patches, loop):
    cls = build(schedule, kwargs, shapes, loop.on_epochs, dropin=False)
    optimizer = us.make_optimizer()
    scheduler = cls(optimizer, **kwargs)
    us.apply_patches(scheduler, patches)
    return loop.run(scheduler, optimizer)


def run_fixed(schedule, kwargs, shapes, patches, loop, adapter, options):
    optimizer = us.make_optimizer()
    if adapter == "patch":
        cls = build(schedule, kwargs, shapes, loop.on_epochs, dropin=False)
        with timm_sched_fix.patched(**options):
            scheduler = cls(optimizer, **kwargs)
            us.apply_patches(scheduler, patches)
            return loop.run(scheduler, optimizer)
    if adapter == "wrap":
        cls = build(schedule, kwargs, shapes, loop.on_epochs, dropin=False)
        scheduler = timm_sched_fix.wrap(cls(optimizer, **kwargs), **options)
    else:
        cls = build(schedule, kwargs, shapes, loop.on_epochs, dropin=True)
        scheduler = cls(optimizer, **kwargs, **options)
    us.apply_patches(scheduler, patches)
    return loop.run(scheduler, optimizer)


def check_case(schedule, kwargs, shapes, patches, loop, adapter, options):
    COUNTS["examples"] += 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            stock = run_stock(schedule, kwargs, shapes, patches, loop)
        except Exception:  # noqa: BLE001 - whatever stock timm itself cannot run is no loop to compare
            COUNTS["stock failed"] += 1
            assume(False)
        values = us.oracle(lambda optimizer: build(schedule, kwargs, shapes, loop.on_epochs, False)(optimizer, **kwargs),
                           patches, shapes, loop.on_epochs, loop.epochs * loop.batches + 1,
                           getattr(timm.scheduler, schedule))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fixed = run_fixed(schedule, kwargs, shapes, patches, loop, adapter, options)
        except ScheduleLagError:
            assert options["on_lag"] == "raise"
            return
    overrides_warned = [w for w in caught if issubclass(w.category, ScheduleOverrideWarning)]
    if us.stock_by(shapes):
        COUNTS["as stock"] += 1
        assert fixed == stock, "a scheduler the fix cannot know the meaning of must run exactly as stock"
        assert len(overrides_warned) == 1, [str(w.message) for w in caught]
        return
    assert not overrides_warned, str(overrides_warned[0].message)
    stock_wrong, fixed_wrong = us.wrong(stock, values, loop), us.wrong(fixed, values, loop)
    COUNTS["compared"] += 1
    COUNTS["worse" if fixed_wrong > stock_wrong else "better" if fixed_wrong < stock_wrong else "equal"] += 1
    assert fixed_wrong <= stock_wrong, (f"fixed {fixed_wrong} wrong, stock {stock_wrong}: fixed {fixed}, stock "
                                        f"{stock}, v(t) {values}")


@given(cases())
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=False), ("other_count",), (),
          us.Loop(False, 3, 2, "next", "other"), "patch", dict(convention="end", auto=False, on_lag="warn")))
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=True), ("count_default",), (),
          us.Loop(True, 3, 2, "next", "count"), "patch", dict(convention="end", auto=False, on_lag="warn")))
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=False), (), ("values_scale",),
          us.Loop(False, 3, 2, "next", "index"), "patch", dict(convention="end", auto=False, on_lag="warn")))
# shrunk failures found while building the fix: a drop-in subclass's own state_dict key refused at load, and its
# post-scaling step() lost when a load re-applied the position past it
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=True), ("state_dict",), (),
          us.Loop(True, 2, 1, "next", "index", save_load_at=0), "dropin",
          dict(convention="end", auto=False, on_lag="warn")))
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=True), ("post_scale",), (),
          us.Loop(True, 2, 1, "next", "index", save_load_at=0), "dropin",
          dict(convention="end", auto=False, on_lag="warn")))
@example(("CosineLRScheduler", dict(SCHEDULES["CosineLRScheduler"], t_in_epochs=False), (), ("values_scale",),
          us.Loop(False, 2, 2, "next", "index"), "wrap", dict(convention="end", auto=False, on_lag="warn")))
def test_fixed_never_worse_than_stock_for_user_subclasses(case):
    check_case(*case)


# -- the rows, as examples -----------------------------------------------------------------------------------


class CountingStep(timm.scheduler.CosineLRScheduler):
    """The PyTorch habit: ``step()`` takes no index and counts; the engine calls it after every optimizer step."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n = 0
        self.step()

    def step(self, epoch=None):
        self.n = self.n + 1 if epoch is None else epoch
        (super().step(self.n - 1) if self.t_in_epochs else super().step_update(self.n - 1))


@pytest.mark.parametrize("on_epochs", [False, True])
@pytest.mark.parametrize("adapter", ["patch", "wrap"])
def test_counting_step_runs_as_stock_and_says_so_once(adapter, on_epochs):
    runs = []
    for fixed in (False, True):
        optimizer = us.make_optimizer()
        ran = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            context = timm_sched_fix.patched() if fixed and adapter == "patch" else mock.MagicMock()
            with context:
                scheduler = CountingStep(optimizer, t_initial=6, warmup_t=2, warmup_lr_init=0.01,
                                         t_in_epochs=on_epochs)
            if fixed and adapter == "wrap":
                scheduler = timm_sched_fix.wrap(scheduler)
            optimizer.register_step_pre_hook(lambda opt, *_, ran=ran: ran.append(opt.param_groups[0]["lr"]))
            for _ in range(16):
                optimizer.step()
                scheduler.step()
        runs.append((ran, [w for w in caught if issubclass(w.category, ScheduleOverrideWarning)]))
    (stock, _), (fixed, warned) = runs
    assert fixed == stock
    assert len(warned) == 1
    message = str(warned[0].message)
    assert "CountingStep.step()" in message and "super()" in message


def test_instance_override_on_the_per_update_fast_path():
    """``mock.patch.object(s, "_get_lr")`` after construction, as a test double would: honoured on every call."""
    for make in (lambda o: timm_sched_fix.CosineLRScheduler(o, t_initial=10, t_in_epochs=False),
                 lambda o: timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(o, t_initial=10, t_in_epochs=False))):
        optimizer = us.make_optimizer()
        scheduler = make(optimizer)
        with mock.patch.object(scheduler, "_get_lr", lambda t: [0.02, 0.04]):
            for k in range(3):
                scheduler.step_update(k + 1)
                assert optimizer.param_groups[0]["lr"] == 0.02
        scheduler.step_update(4)  # the class's own again once the patch is gone
        assert optimizer.param_groups[0]["lr"] == pytest.approx(
            timm.scheduler.CosineLRScheduler(us.make_optimizer(), t_initial=10, t_in_epochs=False)._get_lr(4)[0])


@pytest.mark.skipif(not hasattr(Scheduler, "_calculate_noise"), reason="timm < 0.6 has no _calculate_noise")
def test_instance_noise_methods_on_the_per_update_fast_path():
    optimizer = us.make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=False)
    scheduler._is_apply_noise = lambda t: True
    scheduler._calculate_noise = lambda t: 0.5
    scheduler.step_update(3)
    base = timm.scheduler.CosineLRScheduler(us.make_optimizer(), t_initial=10, t_in_epochs=False)._get_lr(3)[0]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(base * 1.5)


@pytest.mark.parametrize("adapter", ["patch", "dropin"])
def test_an_instance_step_update_set_later_takes_over_and_the_fix_steps_aside(adapter):
    optimizer = us.make_optimizer()
    kwargs = dict(t_initial=10, t_in_epochs=False)
    if adapter == "patch":
        with timm_sched_fix.patched(auto=True):
            scheduler = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
    else:
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=True, **kwargs)
    calls = []
    with pytest.warns(ScheduleOverrideWarning, match="step_update"):
        scheduler.step_update = calls.append
    optimizer.step()
    before = [group["lr"] for group in optimizer.param_groups]
    optimizer.step()  # auto mode no longer writes: the instance's own step_update is the user's
    scheduler.step_update(2)
    assert calls == [2] and [group["lr"] for group in optimizer.param_groups] == before


def test_override_gets_only_the_arguments_its_signature_takes():
    """A per-epoch override without a metric parameter: stock calls it; the fix calls it once per user call."""
    cls = us.subclass(timm.scheduler.CosineLRScheduler, "timm.scheduler.CosineLRScheduler", True, ("fewer",))
    optimizer = us.make_optimizer()
    with timm_sched_fix.patched():
        scheduler = cls(optimizer, t_initial=6)
    after_build = scheduler.own_calls  # the pre-advance writes v(0) through the override
    for epoch in range(1, 4):
        scheduler.step(epoch)
    assert scheduler.own_calls - after_build == 3
    assert scheduler.last_t == 3


def test_subclass_state_dict_methods_with_more_parameters():
    cls = us.subclass(timm.scheduler.CosineLRScheduler, "timm.scheduler.CosineLRScheduler", True,
                      ("state_dict", "load_state_dict"))
    scheduler = timm_sched_fix.wrap(cls(us.make_optimizer(), t_initial=6))
    scheduler.step(2)
    state = scheduler.state_dict()
    assert state["user_note"] == 1 and state["timm_sched_fix"]["last_t"] == 2
    other = timm_sched_fix.wrap(cls(us.make_optimizer(), t_initial=6))
    other.load_state_dict(state, strict=False)
    assert other.last_t == 2


# -- item 4: a NaN metric, warnings-as-errors, undrawable noise --------------------------------------------------------


@pytest.mark.parametrize("adapter", ["patch", "wrap", "dropin"])
def test_deit_lag_warning_never_raised_by_a_blanket_error_filter_and_call_applied(adapter):
    """``python -W error``: stock raises nothing; the fix applies the call, then shows its warning (not raised)."""
    runs = []
    for fixed in (False, True):
        optimizer = us.make_optimizer()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("error")
            if not fixed:
                scheduler = timm.scheduler.TanhLRScheduler(optimizer, t_initial=6)
            elif adapter == "patch":
                with timm_sched_fix.patched():
                    scheduler = timm.scheduler.TanhLRScheduler(optimizer, t_initial=6)
            elif adapter == "wrap":
                scheduler = timm_sched_fix.wrap(timm.scheduler.TanhLRScheduler(optimizer, t_initial=6))
            else:
                scheduler = timm_sched_fix.TanhLRScheduler(optimizer, t_initial=6)
            ran = []
            optimizer.register_step_pre_hook(lambda opt, *_, ran=ran: ran.append(opt.param_groups[0]["lr"]))
            for epoch in range(4):
                optimizer.step()
                scheduler.step(epoch)
        runs.append((ran, caught))
    (stock, stock_caught), (fixed, fixed_caught) = runs
    assert not stock_caught
    assert [type(w.message).__name__ for w in fixed_caught] == ["ScheduleLagWarning"]
    assert fixed[1:] == stock[1:]  # every call applied as stock applies it (the first step: the pre-advance)


def test_a_filter_naming_a_fix_category_raises_it_after_the_call_is_applied():
    optimizer = us.make_optimizer()
    scheduler = timm_sched_fix.TanhLRScheduler(optimizer, t_initial=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error", timm_sched_fix.ScheduleLagWarning)
        for epoch in range(2):
            optimizer.step()
            optimizer.step()
            if epoch == 0:
                scheduler.step(epoch)
        with pytest.raises(timm_sched_fix.ScheduleLagWarning):
            scheduler.step(1)  # DeiT's step(epoch): the lag is confirmed here, and warned once step(1) is applied
    assert scheduler.last_t == 1
    assert optimizer.param_groups[0]["lr"] == timm.scheduler.TanhLRScheduler(us.make_optimizer(), t_initial=6)._get_lr(1)[0]


UNDRAWABLE = [dict(noise_pct=0.0), dict(noise_pct=-1.0), dict(noise_pct=math.nan)]
if inlined._noise_scaled_by_std():  # timm 1.0.31+: noise_std scales the draw
    UNDRAWABLE.append(dict(noise_std=1e12))


@pytest.mark.parametrize("noise", UNDRAWABLE, ids=repr)
@pytest.mark.parametrize("adapter", ["patch", "wrap", "dropin"])
def test_undrawable_noise_is_refused_before_anything_changes(adapter, noise):
    kwargs = dict(t_initial=10, noise_range_t=(0, 10), **noise)
    optimizer = us.make_optimizer()
    before = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    with pytest.raises(ValueError, match="never be drawn"):
        if adapter == "patch":
            with timm_sched_fix.patched():
                timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
        elif adapter == "dropin":
            timm_sched_fix.CosineLRScheduler(optimizer, **kwargs)
        else:
            stock = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
            before = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
            timm_sched_fix.wrap(stock)
    assert [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups] == before


def test_undrawable_noise_in_a_state_dict_is_refused_at_load():
    scheduler = timm_sched_fix.CosineLRScheduler(us.make_optimizer(), t_initial=10)
    scheduler.step(2)
    state = dict(scheduler.state_dict(), noise_range_t=(0, 10), noise_pct=0.0)
    before = repr(scheduler.state_dict())
    with pytest.raises(ValueError, match="never be drawn"):
        scheduler.load_state_dict(state)
    assert repr(scheduler.state_dict()) == before


def test_the_inlined_noise_draw_is_bounded():
    """Noise made undrawable after construction: the fix's own draw gives up with the reason, where timm spins."""
    optimizer = us.make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=10, t_in_epochs=False, noise_range_t=(0, 10))
    scheduler.noise_pct = 0.0
    with mock.patch("timm_sched_fix._compat.MAX_NOISE_DRAWS", 50), pytest.raises(ValueError, match="never be drawn"):
        scheduler.step_update(3)


def _lrs_with_kept_original(adapter, unit, scale):
    """An instance's own ``step``/``step_update`` set after construction that calls the method it replaced (kept as
    ``original = scheduler.step``, the usual logging/scaling shape), under ``adapter``: the LR every update ran with."""
    optimizer = us.make_optimizer()
    kwargs = dict(t_initial=6, warmup_t=2, warmup_lr_init=0.01, t_in_epochs=unit == "step")
    if adapter == "patch":
        with timm_sched_fix.patched(auto=unit == "step_update"):
            scheduler = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
    elif adapter == "wrap":
        scheduler = timm_sched_fix.wrap(timm.scheduler.CosineLRScheduler(optimizer, **kwargs),
                                        auto=unit == "step_update")
    elif adapter == "dropin":
        scheduler = timm_sched_fix.CosineLRScheduler(optimizer, auto=unit == "step_update", **kwargs)
    else:
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **kwargs)
    ran = []
    optimizer.register_step_pre_hook(lambda opt, args, kw: ran.append(opt.param_groups[0]["lr"]))
    original = getattr(scheduler, unit)

    def own(index, metric=None):
        original(index, metric)
        for group in optimizer.param_groups:
            group["lr"] *= scale

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScheduleOverrideWarning)
        setattr(scheduler, unit, own)
    for index in range(1, 6):
        optimizer.step()
        getattr(scheduler, unit)(index)
    state = scheduler.state_dict()  # through the instance's class, as stock's
    return ran, state


@pytest.mark.parametrize("unit", ["step", "step_update"])
@pytest.mark.parametrize("adapter", ["patch", "wrap", "dropin"])
def test_an_instance_method_calling_the_one_it_replaced_runs_as_stock(adapter, unit):
    """Found by trying it as a user: under patch() the kept original (a bound route) raised AttributeError once the
    fix stepped aside, and under wrap(auto=True) the instance's own step_update was never called while auto mode
    kept writing over the LRs it set. The fix steps aside: every update runs with stock's LR from the first one the
    instance's method wrote on (the fix's v(0) before it, which stock gets wrong only with warmup)."""
    stock, stock_state = _lrs_with_kept_original("stock", unit, 0.5)
    fixed, fixed_state = _lrs_with_kept_original(adapter, unit, 0.5)
    assert fixed[1:] == pytest.approx(stock[1:])
    # stock's state dict holds the instance's own method too (timm saves the instance dict); wrap() keeps it on the proxy
    assert "timm_sched_fix" not in fixed_state and set(fixed_state) - {unit} == set(stock_state) - {unit}


class _OwnNoise(timm.scheduler.CosineLRScheduler):
    """Noise the subclass draws itself: timm's redraw loop never runs, so noise_pct=0 is no undrawable setting."""

    def _calculate_noise(self, t):
        return 0.1 if t % 2 else -0.1


def _users_noise(optimizer, how):
    """A scheduler whose noise the user's code draws, with settings timm's own redraw loop could never meet."""
    if how == "subclass":
        return _OwnNoise(optimizer, t_initial=10, noise_range_t=0, noise_pct=0)
    scheduler = timm.scheduler.CosineLRScheduler(optimizer, t_initial=10)
    if how == "instance":
        scheduler._calculate_noise = lambda t: 0.1 if t % 2 else -0.1
    else:
        scheduler._is_apply_noise = lambda t: False
    scheduler.noise_range_t, scheduler.noise_pct = 0, 0
    return scheduler


@pytest.mark.parametrize(("adapter", "how"), [("patch", "subclass"), ("wrap", "subclass"), ("wrap", "instance"),
                                              ("wrap", "instance_is_apply")])
def test_noise_settings_are_the_users_business_when_the_user_draws_the_noise(adapter, how):
    """Found by trying it as a user: undrawable noise settings were refused where the user's own noise method (or an
    instance's _is_apply_noise that turns noise off) means timm's redraw loop never runs, and stock runs."""
    needed = "_is_apply_noise" if how == "instance_is_apply" else "_calculate_noise"
    if not hasattr(Scheduler, needed):
        pytest.skip(f"timm {timm.__version__} draws its noise without {needed}() (stock spins here too)")

    def run(fixed):
        optimizer = us.make_optimizer()
        if fixed and adapter == "patch":
            with timm_sched_fix.patched():
                scheduler = _users_noise(optimizer, how)
        else:
            scheduler = _users_noise(optimizer, how)
            scheduler = timm_sched_fix.wrap(scheduler) if fixed else scheduler
        ran = []
        optimizer.register_step_pre_hook(lambda opt, args, kw: ran.append(opt.param_groups[0]["lr"]))
        for epoch in range(1, 5):
            optimizer.step()
            scheduler.step(epoch)
        return ran

    assert run(True)[1:] == pytest.approx(run(False)[1:])

"""patch()/unpatch(): every scheduler built while patched is fixed, whether timm was imported before or
after, and stays fixed after unpatch(); unpatch() puts back timm's exact attributes (identity)."""

import os
import subprocess
import sys
import textwrap

import pytest
import timm.scheduler
from timm.scheduler.scheduler import Scheduler

import timm_sched_fix

from support import StepRecorder, make_optimizer, reference_values


def class_attributes():
    """Every attribute of Scheduler and its subclasses, by (class, name), as identity snapshots (the classes
    timm_sched_fix makes, drop-ins and patched schedulers' routing classes, aside)."""
    def walk(cls):
        if not vars(cls).get("__timm_sched_fix_dropin__", False):
            yield cls
        for subclass in cls.__subclasses__():
            yield from walk(subclass)
    return {(cls, name): value for cls in walk(Scheduler) for name, value in vars(cls).items()}


def test_unpatch_restores_every_attribute_exactly():
    before = class_attributes()
    timm_sched_fix.patch()
    timm_sched_fix.patch()  # idempotent
    assert timm_sched_fix.is_patched()
    patched_attributes = class_attributes()
    assert patched_attributes[(Scheduler, "step")] is not before[(Scheduler, "step")]
    assert patched_attributes[(timm.scheduler.CosineLRScheduler, "__init__")].__wrapped__ is before[
        (timm.scheduler.CosineLRScheduler, "__init__")]
    scheduler = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=5)
    assert type(scheduler) is timm.scheduler.CosineLRScheduler  # while patched, timm's own class
    timm_sched_fix.unpatch()
    timm_sched_fix.unpatch()  # idempotent too
    after = class_attributes()
    assert not timm_sched_fix.is_patched()
    assert after.keys() == before.keys()
    assert all(after[key] is before[key] for key in before)
    assert isinstance(scheduler, timm.scheduler.CosineLRScheduler) and scheduler.last_t == 0  # still fixed
    assert (type(scheduler).__name__, type(scheduler).__module__) == ("CosineLRScheduler", "timm.scheduler.cosine_lr")


def test_subclass_defined_while_patched_is_fixed_and_restored():
    with timm_sched_fix.patched():
        class Warmup(Scheduler):
            def __init__(self, optimizer, warmup=4):
                self.warmup = warmup
                super().__init__(optimizer, param_group_field="lr")

            def _get_lr(self, t):
                return [base * min(1.0, (t + 1) / self.warmup) for base in self.base_values]

            def get_epoch_values(self, epoch):  # timm < 0.9 asks this instead of _get_lr
                return self._get_lr(epoch)

        wrapped_init = vars(Warmup)["__init__"]
        optimizer = make_optimizer()
        scheduler = Warmup(optimizer)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(0.025)  # v(0), not the base LR
        assert scheduler.last_t == 0
    assert vars(Warmup)["__init__"] is wrapped_init.__wrapped__
    optimizer = make_optimizer()
    Warmup(optimizer)
    assert optimizer.param_groups[0]["lr"] == 0.1  # stock again


SCHEDULE = dict(t_initial=12, warmup_t=3, warmup_lr_init=1e-3, t_in_epochs=False)


def auto_reference(steps):
    return [lrs[0] for lrs in reference_values("CosineLRScheduler", SCHEDULE, groups=1, periods=steps - 1,
                                                on_epochs=False)]


@pytest.mark.parametrize("how", ["with patched()", "unpatch() mid-run"])
def test_schedulers_built_while_patched_stay_fixed_after_unpatch(how):
    """Auto mode included: every step after the unpatch still runs with v(k), and timm is stock again."""
    before = class_attributes()
    optimizer = make_optimizer()
    recorder_after = None
    if how == "with patched()":
        with timm_sched_fix.patched(auto=True):
            scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
        recorder = StepRecorder(optimizer)
    else:
        timm_sched_fix.patch(auto=True)
        scheduler = timm.scheduler.CosineLRScheduler(optimizer, **SCHEDULE)
        recorder = StepRecorder(optimizer)
        for _ in range(4):
            optimizer.step()
        timm_sched_fix.unpatch()
    after = class_attributes()
    assert after.keys() == before.keys() and all(after[key] is before[key] for key in before)
    while len(recorder.steps) < 12:
        optimizer.step()
    assert recorder.first_group() == pytest.approx(auto_reference(12), rel=1e-12, abs=0)
    assert scheduler.last_t == 11
    later = make_optimizer()
    recorder_after = StepRecorder(later)
    stock = timm.scheduler.CosineLRScheduler(later, **SCHEDULE)
    later.step()
    assert not hasattr(stock, "last_t") and recorder_after.first_group() == [1e-3], "built after unpatch(): stock"


def test_patched_restores_the_previous_patch():
    timm_sched_fix.patch(convention="begin")
    try:
        with timm_sched_fix.patched(convention="end"):
            end = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=5)
        begin = timm.scheduler.CosineLRScheduler(make_optimizer(), t_initial=5)
        assert timm_sched_fix.is_patched()
        assert end.state_dict()["timm_sched_fix"]["convention"] == "end"
        assert begin.state_dict()["timm_sched_fix"]["convention"] == "begin"
    finally:
        timm_sched_fix.unpatch()


def test_factories_build_fixed_schedulers_when_patched():
    if not hasattr(timm.scheduler, "create_scheduler_v2"):
        pytest.skip("create_scheduler_v2 arrived in timm 0.9")
    optimizer = make_optimizer()
    with timm_sched_fix.patched():
        scheduler, _ = timm.scheduler.create_scheduler_v2(optimizer, sched="multistep", decay_milestones=[1, 3],
                                                         decay_rate=0.5, num_epochs=5)
        recorder = StepRecorder(optimizer)
        optimizer.step()
    assert recorder.first_group() == [0.05]
    assert scheduler is not None


def run_python(code, **env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300, check=False)


def test_patch_before_timm_import_does_not_import_timm_or_torch():
    result = run_python("""
        import sys
        import timm_sched_fix
        timm_sched_fix.patch()
        assert "timm" not in sys.modules and "torch" not in sys.modules, sorted(sys.modules)
        import torch
        from timm.scheduler import TanhLRScheduler
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = TanhLRScheduler(optimizer, t_initial=10)
        print(repr(optimizer.param_groups[0]["lr"]), scheduler.last_t)
    """)
    assert result.returncode == 0, result.stderr
    v0 = reference_values("TanhLRScheduler", dict(t_initial=10), groups=1, periods=0, on_epochs=True)[0][0]
    assert v0 != 0.1  # stock leaves the base LR for the first step
    assert result.stdout.split() == [repr(v0), "0"]


@pytest.mark.release_independent("the import order of the package's own modules")
def test_patch_then_package_names_that_import_timm():
    """patch() first, then a name whose module imports timm: timm's classes are instrumented while the package's
    compat module is still importing timm, which once failed with a circular ImportError."""
    result = run_python("""
        import timm_sched_fix.auto
        from timm_sched_fix import TorchScheduler, wrap
        import torch
        from timm.scheduler import CosineLRScheduler, TanhLRScheduler
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        patched_scheduler = TanhLRScheduler(optimizer, t_initial=10)
        adapter = TorchScheduler(wrap(CosineLRScheduler(optimizer, t_initial=10)))
        print(patched_scheduler.last_t, adapter.last_t)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", "0"]


@pytest.mark.parametrize("env, expected", [
    ({}, "end False warn"),
    ({"TIMM_SCHED_FIX_CONVENTION": "begin", "TIMM_SCHED_FIX_AUTO": "1", "TIMM_SCHED_FIX_ON_LAG": "fix"},
     "begin True fix"),
    # the values the README and the command's help list: any case, blanks around them ignored
    ({"TIMM_SCHED_FIX_CONVENTION": " Begin ", "TIMM_SCHED_FIX_AUTO": "YES", "TIMM_SCHED_FIX_ON_LAG": "Raise"},
     "begin True raise"),
    ({"TIMM_SCHED_FIX_AUTO": "on"}, "end True warn"),
    ({"TIMM_SCHED_FIX_AUTO": "true"}, "end True warn"),
    ({"TIMM_SCHED_FIX_AUTO": "Off"}, "end False warn"),
    ({"TIMM_SCHED_FIX_AUTO": "no"}, "end False warn"),
    ({"TIMM_SCHED_FIX_AUTO": "false"}, "end False warn"),
    ({"TIMM_SCHED_FIX_AUTO": "0"}, "end False warn"),
])
def test_auto_module_patches_with_environment_options(env, expected):
    result = run_python("""
        import sys
        import timm_sched_fix.auto
        assert "timm" not in sys.modules and "torch" not in sys.modules
        import timm_sched_fix._patching as p
        print(p._options.convention, p._options.auto, p._options.on_lag)
    """, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected


@pytest.mark.parametrize("name, value", [
    ("TIMM_SCHED_FIX_CONVENTION", "middle"), ("TIMM_SCHED_FIX_AUTO", "maybe"), ("TIMM_SCHED_FIX_ON_LAG", "shout"),
])
def test_auto_module_rejects_bad_environment_values(name, value):
    result = run_python("import timm_sched_fix.auto", **{name: value})
    assert result.returncode != 0
    assert name in result.stderr and repr(value) in result.stderr


def test_patched_scheduler_routes_through_its_own_class_after_unpatch():
    """After unpatch(), a patched scheduler's class is a subclass of timm's with its name (made once per class);
    timm's class itself is the original."""
    from timm_sched_fix import _routing as routing

    with timm_sched_fix.patched():
        scheduler = timm.scheduler.StepLRScheduler(make_optimizer(), decay_t=2)
        other = timm.scheduler.StepLRScheduler(make_optimizer(), decay_t=2)
    cls = type(scheduler)
    assert cls is not timm.scheduler.StepLRScheduler and cls.__mro__[1] is timm.scheduler.StepLRScheduler
    assert (cls.__name__, cls.__qualname__, cls.__module__) == ("StepLRScheduler", "StepLRScheduler",
                                                                 "timm.scheduler.step_lr")
    assert type(other) is cls and routing.routed_class(timm.scheduler.StepLRScheduler) is cls
    assert isinstance(vars(cls)["step"], routing.RoutedMethod)
    assert "step" not in vars(timm.scheduler.StepLRScheduler) or not hasattr(
        vars(timm.scheduler.StepLRScheduler)["step"], "__timm_sched_fix_patched_method__")

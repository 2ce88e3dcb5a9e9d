"""Compatibility fixes for old timm on the installed torch: PlateauLRScheduler constructs and steps through
every adapter and factory, with the same LRs stock timm gives where stock timm works."""

import argparse
import contextlib
import importlib.util
import warnings

import pytest
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat

from support import TORCH_VERBOSE_DEPRECATION, StepRecorder, make_optimizer, stock_scheduler

PLATEAU_KWARGS = dict(patience_t=0, decay_rate=0.5, mode="min", warmup_t=1, warmup_lr_init=1e-3)
#: (epoch, metric) calls after each epoch; None is "no metric this epoch" (the LR must stay).
METRICS = [(1, None), (2, 2.0), (3, None), (4, 3.0), (5, None), (6, 4.0)]


def build_plateau(adapter, optimizer):
    if adapter == "patch":
        return timm.scheduler.PlateauLRScheduler(optimizer, **PLATEAU_KWARGS)
    if adapter == "dropin":
        return timm_sched_fix.PlateauLRScheduler(optimizer, **PLATEAU_KWARGS)
    if adapter == "factory":
        if not hasattr(timm.scheduler, "create_scheduler_v2"):
            pytest.skip(f"timm {timm.__version__} has no create_scheduler_v2 (arrived in 0.9)")
        scheduler, _ = timm_sched_fix.create_scheduler_v2(
            optimizer, sched="plateau", patience_epochs=0, decay_rate=0.5, plateau_mode="min", warmup_epochs=1,
            warmup_lr=1e-3, num_epochs=10)
        return scheduler
    raise ValueError(adapter)


def plateau_trace(scheduler, optimizer, calls):
    recorder = StepRecorder(optimizer)
    for epoch, metric in calls:
        optimizer.step()
        scheduler.step(epoch, metric)
    optimizer.step()
    return recorder.first_group()


@pytest.mark.parametrize("adapter", ["patch", "dropin", "factory"])
def test_plateau_constructs_and_steps_with_and_without_metrics(adapter):
    """Epochs without a metric keep the LR (timm >= 1.0.24 behaviour); metrics drive ReduceLROnPlateau
    exactly as the stock scheduler does when it only gets the calls that carry a metric."""
    optimizer = make_optimizer()
    with warnings.catch_warnings(), timm_sched_fix.patched() if adapter == "patch" else contextlib.nullcontext():
        warnings.simplefilter("error")  # neither TypeError nor torch's epoch deprecation warning
        warnings.filterwarnings("ignore", "PlateauLRScheduler is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", TORCH_VERBOSE_DEPRECATION, UserWarning)
        fixed = plateau_trace(build_plateau(adapter, optimizer), optimizer, METRICS)

    stock_optimizer = make_optimizer()
    stock = stock_scheduler("PlateauLRScheduler", stock_optimizer, PLATEAU_KWARGS)
    recorder = StepRecorder(stock_optimizer)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)
        stock_optimizer.step()
        for epoch, metric in METRICS:
            if metric is not None or epoch <= PLATEAU_KWARGS["warmup_t"]:  # warmup epochs use no metric
                stock.step(epoch, metric)
            stock_optimizer.step()
    assert fixed == recorder.first_group()
    assert fixed == pytest.approx([1e-3, 0.1, 0.1, 0.1, 0.05, 0.05, 0.025])  # the schedule moves both ways


def test_stock_plateau_fails_on_this_torch_exactly_where_the_fix_applies():
    original = torch.optim.lr_scheduler.ReduceLROnPlateau
    if compat.PLATEAU_PASSES_VERBOSE:
        with pytest.raises(TypeError, match="verbose"):
            timm.scheduler.PlateauLRScheduler(make_optimizer())
    else:
        timm.scheduler.PlateauLRScheduler(make_optimizer())
    timm_sched_fix.PlateauLRScheduler(make_optimizer())
    assert torch.optim.lr_scheduler.ReduceLROnPlateau is original  # the fix is scoped to the constructor call


def test_plateau_resumes_past_the_warmup_without_a_metric():
    """A resume pre-advances with step(t, None); timm <= 1.0.15 raised TypeError there (float(None))."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.PlateauLRScheduler(optimizer, **PLATEAU_KWARGS)
    for epoch, metric in METRICS:
        scheduler.step(epoch, metric)
    state = scheduler.state_dict()
    resumed_optimizer = make_optimizer()
    resumed_optimizer.load_state_dict(optimizer.state_dict())
    resumed = timm_sched_fix.PlateauLRScheduler(resumed_optimizer, **PLATEAU_KWARGS, initialize=False)
    resumed.load_state_dict(state)
    assert resumed.last_t == METRICS[-1][0]
    assert resumed_optimizer.param_groups[0]["lr"] == optimizer.param_groups[0]["lr"]


def v1_args(sched):
    """The argparse namespace timm's train.py hands to create_scheduler, with the attributes every
    release from 0.4.12 on reads."""
    return argparse.Namespace(
        sched=sched, epochs=6, min_lr=1e-5, decay_rate=0.5, warmup_lr=1e-3, warmup_epochs=1, cooldown_epochs=0,
        decay_epochs=2, decay_milestones=[2, 4], patience_epochs=0, eval_metric="loss", lr_noise=None, seed=42,
    )


@pytest.mark.parametrize("sched", ["cosine", "tanh", "step", "plateau"])
def test_create_scheduler_v1_returns_fixed_schedulers_on_every_timm(sched):
    optimizer = make_optimizer()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PlateauLRScheduler is deprecated", FutureWarning)
        scheduler, num_epochs = timm_sched_fix.create_scheduler(v1_args(sched), optimizer)
    assert isinstance(scheduler, timm_sched_fix.FixedScheduler)
    assert scheduler.last_t == 0
    assert num_epochs >= 6
    scheduler.step(1, 1.0)
    assert scheduler.last_t == 1


def test_the_registry_holds_every_quirk_once_named_with_its_releases():
    """Every module of _compat registers its quirks (DeepSpeed's and Lookahead's included), each under its own name
    and with the releases it was read off; the counting's wrappers apply wherever timm has Lookahead, so check lists
    them on every release."""
    names = [quirk.name for quirk in compat.QUIRKS]
    assert len(names) == len(set(names))
    assert all(quirk.versions and quirk.description for quirk in compat.QUIRKS)
    for module in (compat.plateau, compat.timm_releases, compat.torch_releases, compat.compiled_step,
                   compat.lookahead, compat.deepspeed):
        assert module.QUIRKS and set(module.QUIRKS) <= set(compat.QUIRKS), module.__name__
    active = {quirk.name for quirk in compat.active_quirks()}
    assert {"lookahead_skips_optimizer_init", "lookahead_base_optimizer_renamed_0_5"} <= active
    deepspeed_installed = importlib.util.find_spec("deepspeed") is not None
    assert ({"deepspeed_partial_steps", "deepspeed_setup_step"} <= active) == deepspeed_installed

"""The lag rule (docs/reference/terms.md: lag), loop by loop on real timm classes: the true one-period lags are warned,
raised or fixed as ``on_lag`` says, and ``on_lag="fix"`` runs them with 0 wrong steps; loops that repeat an index
without lagging (per-step calls of an epoch schedule, begin-style calls, fractional epochs, a restarted epoch
after a resume) run exactly as stock timm, with a warning whose advice makes them right where stock is wrong.
Every count is the LR each optimizer step ran with against v(t) (``tests/helpers/loops.py``)."""

from __future__ import annotations

import re
import warnings

import pytest

import timm_sched_fix
from timm_sched_fix import ScheduleCallWarning, ScheduleLagError, ScheduleLagWarning

from loops import POLICIES, Loop, lagging, run, values, wrong_steps
from support import StepRecorder, installed_classes, make_optimizer, stock_kwargs


def cosine(on_epochs: bool, periods: int) -> dict:
    return dict(t_initial=periods, warmup_t=2, warmup_lr_init=1e-3, t_in_epochs=on_epochs)


def epoch_loop(batches=(3,) * 6, **choices) -> Loop:
    return Loop("CosineLRScheduler", True, cosine(True, len(batches)), tuple(batches), **choices)


def update_loop(batches=(3,) * 4, accumulation=1, **choices) -> Loop:
    loop = Loop("CosineLRScheduler", False, {}, tuple(batches), accumulation)
    return Loop("CosineLRScheduler", False, cosine(False, loop.total_updates), tuple(batches), accumulation, **choices)


def counts(loop: Loop, on_lag: str) -> tuple[int, int, object]:
    """(stock wrong steps, fixed wrong steps, the fixed run's outcome) under ``on_lag``."""
    loop = Loop(**{**loop.__dict__, "on_lag": on_lag})
    schedule = values(loop)
    stock, fixed = run(loop, fixed=False), run(loop, fixed=True)
    assert stock.error is None
    return wrong_steps(stock, schedule), wrong_steps(fixed, schedule), fixed


# -- the true one-period lags ------------------------------------------------------------------------

TRUE_LAGS = {
    "DeiT: step(epoch) after each epoch": epoch_loop(cadence="epoch", placement="after", index="epoch"),
    "begin-style step(epoch - 1) before each epoch": epoch_loop(cadence="epoch", placement="before",
                                                                index="epoch-1", convention="begin"),
    "epochs of unequal length, the first of two updates": epoch_loop((2, 1, 4, 3), index="epoch"),
    "Swin: step_update(k) after update k": update_loop(cadence="update", index="update-1"),
    "Swin with gradient accumulation: after each update": update_loop((4, 4, 4), 2, cadence="update",
                                                                      index="update-1"),
    "gradient accumulation, step_update(num_updates - 1) after every batch": update_loop(
        (4, 4, 4), 2, cadence="batch", index="update-1"),
    "step_update(n - 1) before update n": update_loop(cadence="update", placement="before", index="update-1",
                                                      convention="begin"),
    "Swin-style with auto=True": update_loop(cadence="update", index="update-1", auto=True),
}


@pytest.mark.parametrize("loop", TRUE_LAGS.values(), ids=TRUE_LAGS.keys())
def test_on_lag_fix_runs_a_true_lag_with_no_wrong_step(loop):
    stock_wrong, fixed_wrong, outcome = counts(loop, "fix")
    assert stock_wrong > 0 and fixed_wrong == 0
    assert not outcome.warned(ScheduleLagWarning) and not outcome.warned(ScheduleCallWarning)


@pytest.mark.parametrize("loop", TRUE_LAGS.values(), ids=TRUE_LAGS.keys())
def test_on_lag_warn_says_once_what_it_saw_and_runs_as_stock(loop):
    stock_wrong, fixed_wrong, outcome = counts(loop, "warn")
    assert fixed_wrong == stock_wrong
    [message] = outcome.warned(ScheduleLagWarning)
    unit = "epoch" if loop.on_epochs else "update"
    assert f"one {unit} late" in message and "on_lag='fix'" in message
    assert not outcome.warned(ScheduleCallWarning)


@pytest.mark.parametrize("loop", TRUE_LAGS.values(), ids=TRUE_LAGS.keys())
def test_on_lag_raise_raises_at_the_second_lagging_call(loop):
    _, _, outcome = counts(loop, "raise")
    assert isinstance(outcome.error, ScheduleLagError)
    lagging_indices = {call[1] for number, call in enumerate(outcome.calls) if lagging(outcome, number)}
    assert lagging_indices == {0, 1} and outcome.calls[-1][1] == 1  # the first lag seen, then the second


def test_on_lag_raise_changes_nothing():
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, t_initial=6, warmup_t=2, warmup_lr_init=1e-3,
                                                 on_lag="raise")
    for _ in range(3):
        optimizer.step()
    scheduler.step(0)  # one epoch in: not decided yet, applied as given
    for _ in range(3):
        optimizer.step()
    before = (optimizer.param_groups[0]["lr"], repr(scheduler.state_dict()))
    with pytest.raises(ScheduleLagError, match=r"one epoch late.*step\(2\)"):
        scheduler.step(1)
    assert (optimizer.param_groups[0]["lr"], repr(scheduler.state_dict())) == before
    with pytest.raises(ScheduleLagError):  # it stays a lag
        scheduler.step(1)


@pytest.mark.parametrize("loop", TRUE_LAGS.values(), ids=TRUE_LAGS.keys())
def test_on_lag_ignore_is_silent_and_runs_as_stock(loop):
    stock_wrong, fixed_wrong, outcome = counts(loop, "ignore")
    assert fixed_wrong == stock_wrong and not outcome.caught


@pytest.mark.parametrize("name", installed_classes())
def test_a_lag_decided_late_is_fixed_from_then_on(name):
    """A first epoch of one optimizer step cannot tell a lag (it is applied as given); a later epoch of several
    decides it, and "fix" applies index + 1 from then on, through the index it passes over (a PlateauLRScheduler
    past warmup keeps the LR it finds)."""
    loop = Loop(name, True, dict(stock_kwargs(name, 5, True), warmup_t=2), (1, 1, 2, 2, 2), index="epoch",
                on_lag="fix")
    schedule = values(loop)
    stock, fixed = run(loop, fixed=False), run(loop, fixed=True)
    decided = 4  # the steps of the epochs before the call that decides (epochs 0-2), run as stock runs them
    assert fixed.lrs[:decided] == stock.lrs[:decided]
    assert fixed.lrs[decided:] == pytest.approx([schedule[t] for t in fixed.correct[decided:]], rel=1e-12)
    assert wrong_steps(fixed, schedule) <= wrong_steps(stock, schedule)


@pytest.mark.parametrize("name", installed_classes())
def test_every_class_lagging_one_epoch_is_fixed(name):
    loop = Loop(name, True, dict(stock_kwargs(name, 5, True), warmup_t=1), (2,) * 5, index="epoch")
    stock_wrong, fixed_wrong, _ = counts(loop, "fix")
    assert fixed_wrong == 0 and stock_wrong > 0


# -- advice that, followed, makes the loop right -------------------------------------------------------

def test_following_the_lag_advice_makes_the_loop_right():
    loop = TRUE_LAGS["DeiT: step(epoch) after each epoch"]
    _, _, outcome = counts(loop, "warn")
    [message] = outcome.warned(ScheduleLagWarning)
    assert "step(epoch + 1) after each epoch" in message and "self.current_epoch + 1" in message
    _, fixed_wrong, outcome = counts(Loop(**{**loop.__dict__, "index": "epoch+1"}), "warn")
    assert fixed_wrong == 0 and not outcome.caught


def test_following_the_update_lag_advice_makes_the_loop_right():
    loop = TRUE_LAGS["Swin: step_update(k) after update k"]
    [message] = counts(loop, "warn")[2].warned(ScheduleLagWarning)
    assert "step_update(num_updates) after each optimizer step" in message and "auto=True" in message
    for advised in (Loop(**{**loop.__dict__, "index": "update"}), Loop(**{**loop.__dict__, "cadence": "none",
                                                                          "auto": True})):
        _, fixed_wrong, outcome = counts(advised, "warn")
        assert fixed_wrong == 0 and not outcome.caught


# -- loops that repeat an index without lagging ---------------------------------------------------------

PER_STEP = epoch_loop((4,) * 5, cadence="update", placement="after", index="epoch")


@pytest.mark.parametrize("on_lag", POLICIES)
def test_per_step_calls_of_an_epoch_schedule_run_as_stock_with_the_right_advice(on_lag):
    """Lightning's "interval": "step" with scheduler.step(epoch=self.current_epoch): the first step of each epoch
    runs with the previous epoch's value, stock and fixed alike (the fix cannot see where an epoch ends)."""
    stock_wrong, fixed_wrong, outcome = counts(PER_STEP, on_lag)
    assert (stock_wrong, fixed_wrong) == (4, 4) and outcome.error is None
    assert not outcome.warned(ScheduleLagWarning)
    if on_lag == "ignore":
        assert not outcome.caught
    else:
        [message] = outcome.warned(ScheduleCallWarning)
        assert "after every optimizer step with the epoch in progress" in message
        assert re.search(r"step\(epoch \+ 1\) after the epoch.*\"interval\": \"epoch\".*current_epoch \+ 1"
                         r".*TorchScheduler", message)


def test_following_the_per_step_advice_makes_the_loop_right():
    for advised in (Loop(**{**PER_STEP.__dict__, "cadence": "epoch", "index": "epoch+1"}),):
        _, fixed_wrong, outcome = counts(advised, "warn")
        assert fixed_wrong == 0 and not outcome.caught


NOT_LAGS = {
    "begin-style step(epoch) before every batch": epoch_loop((4,) * 3, cadence="batch", placement="before",
                                                             index="epoch", convention="begin"),
    "fractional epochs after every batch": epoch_loop((4,) * 2, cadence="batch", index="fraction"),
    "fractional epochs, numpy": epoch_loop((4,) * 2, cadence="batch", index="fraction", index_type="numpy"),
    "begin-style loop restarting its epoch after a mid-epoch resume": epoch_loop(
        (4,) * 5, cadence="epoch", placement="before", index="epoch", resume="restart", resume_after=10,
        convention="begin"),
    "the global step after every optimizer step of an epoch schedule": epoch_loop(
        (3,) * 4, cadence="update", index="update-1"),
    "gradient accumulation, step_update(batch // 2) after every batch": update_loop(
        (4, 4, 4), 2, cadence="batch", placement="before", index="update"),
    "the epoch passed to step_update before every update": update_loop((2,) * 4, cadence="update",
                                                                       placement="before", index="epoch+1"),
}


@pytest.mark.parametrize("on_lag", POLICIES)
@pytest.mark.parametrize("loop", NOT_LAGS.values(), ids=NOT_LAGS.keys())
def test_a_repeated_index_that_is_no_lag_runs_as_stock(loop, on_lag):
    stock_wrong, fixed_wrong, outcome = counts(loop, on_lag)
    assert fixed_wrong == stock_wrong and outcome.error is None
    assert not outcome.warned(ScheduleLagWarning) or "cannot be told apart" in outcome.warned(ScheduleLagWarning)[0]


def test_correct_repeating_loops_are_not_warned():
    for label in ("begin-style step(epoch) before every batch", "fractional epochs after every batch",
                  "begin-style loop restarting its epoch after a mid-epoch resume",
                  "gradient accumulation, step_update(batch // 2) after every batch"):
        assert not counts(NOT_LAGS[label], "warn")[2].caught, label


def test_epochs_of_one_step_lag_or_count_updates_and_the_warning_names_both():
    """step(k) after optimizer step k of an epoch schedule: one-step epochs lagging by one, or update counts
    passed to an epoch schedule. The calls cannot tell, so the indices are applied as given, with both readings."""
    one_step_epochs = epoch_loop((1,) * 6, cadence="epoch", index="epoch")
    global_step = NOT_LAGS["the global step after every optimizer step of an epoch schedule"]
    for loop in (one_step_epochs, global_step):
        stock_wrong, fixed_wrong, outcome = counts(loop, "fix")
        assert fixed_wrong == stock_wrong > 0
        [message] = outcome.warned(ScheduleLagWarning)
        assert "if every epoch is one optimizer step" in message and "t_in_epochs=False" in message


def every_second_step(on_lag: str) -> tuple[list[float], list[float], list[warnings.WarningMessage]]:
    """step(current epoch) after every second optimizer step of four-step epochs: (LRs run, v(epoch) of each
    step, warnings)."""
    optimizer = make_optimizer()
    scheduler = timm_sched_fix.CosineLRScheduler(optimizer, **cosine(True, 4), on_lag=on_lag)
    recorder = StepRecorder(optimizer)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(4):
            for batch in range(4):
                optimizer.step()
                if batch % 2:
                    scheduler.step(epoch)
    schedule = values(epoch_loop((4,) * 4))
    return recorder.first_group(), [schedule[epoch] for epoch in range(4) for _ in range(4)], caught


def test_a_call_every_few_steps_with_the_epoch_in_progress_is_taken_back_under_fix():
    """The one loop where on_lag="fix" can be worse than stock: step(current epoch) every few optimizer steps
    (Lightning "interval": "step" with "frequency": 2). Its first call looks exactly like DeiT's step(epoch) after
    a two-step epoch, so "fix" applies the next epoch; the next call shows the epoch repeating, and "fix" takes it
    back for good, saying how many steps ran ahead."""
    wrong = {}
    for on_lag in POLICIES:
        lrs, should, caught = every_second_step(on_lag)
        wrong[on_lag] = sum(1 for lr, want in zip(lrs, should) if lr != pytest.approx(want, rel=1e-12))
        if on_lag == "fix":
            [message] = [str(w.message) for w in caught]
            assert "had taken step(0) for a lag and applied 1 to the 2 optimizer step(s) since" in message
    assert wrong == {"warn": 6, "raise": 6, "ignore": 6, "fix": 8}


# -- the first call after load_state_dict ------------------------------------------------------------

@pytest.mark.parametrize("on_lag", POLICIES)
def test_the_first_call_after_a_resume_is_no_lag(on_lag):
    """/work/shared/repro/begin_midepoch_resume.py: a begin-style loop resumed two steps into epoch 2 restarts the
    epoch with step(2): the old rule ran every resumed step one epoch ahead under "fix" and crashed under "raise"."""
    loop = epoch_loop((4,) * 5, cadence="epoch", placement="before", index="epoch", resume="restart",
                      resume_after=10, convention="begin")
    loop = Loop(**{**loop.__dict__, "kwargs": dict(t_initial=5, t_in_epochs=True)})
    stock_wrong, fixed_wrong, outcome = counts(loop, on_lag)
    assert (stock_wrong, fixed_wrong) == (0, 0) and outcome.error is None and not outcome.caught


def test_a_lag_seen_before_the_checkpoint_stays_fixed_after_the_resume():
    for resume in ("continue", "restart"):
        loop = Loop(**{**TRUE_LAGS["DeiT: step(epoch) after each epoch"].__dict__, "resume": resume,
                       "resume_after": 7})
        assert counts(loop, "fix")[1] == 0, resume


def test_with_warnings_as_errors_a_correct_loop_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for loop in (epoch_loop(index="epoch+1"), update_loop(cadence="update", index="update")):
            for on_lag in POLICIES:
                assert counts(loop, on_lag)[1] == 0

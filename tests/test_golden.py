"""Golden LR traces: recorded from the LR each optimizer step ran with, compared with a JSON file, and a
moved schedule fails naming the first differing step and both values."""

import json

import pytest
import timm.scheduler

from timm_sched_fix.exceptions import GoldenTraceMismatch
from timm_sched_fix.golden import GoldenTraces, record_lr_trace

from support import stock_scheduler

pytest_plugins = ["pytester"]

EPOCHS, UPDATES = 4, 3


def cosine(warmup_t):
    return lambda optimizer: stock_scheduler(
        "CosineLRScheduler", optimizer, dict(t_initial=EPOCHS * UPDATES, warmup_t=warmup_t, warmup_lr_init=1e-3,
                                             t_in_epochs=False))


def test_trace_is_what_each_optimizer_step_ran_with():
    trace = record_lr_trace(cosine(2), epochs=EPOCHS, updates_per_epoch=UPDATES)
    assert len(trace) == EPOCHS * UPDATES
    assert trace[0] == [1e-3]  # the warmup start
    assert trace[1][0] == pytest.approx((1e-3 + 0.1) / 2)  # halfway through the warmup
    assert len({lrs[0] for lrs in trace}) == len(trace)  # every step moves


def test_round_trip_and_a_moved_schedule_names_the_first_differing_step(tmp_path):
    GoldenTraces(tmp_path, update=True).check("cosine", cosine(2), epochs=EPOCHS, updates_per_epoch=UPDATES)
    stored = json.loads((tmp_path / "cosine.json").read_text())
    assert stored["timm"] == timm.__version__ and len(stored["lrs"]) == EPOCHS * UPDATES
    golden = GoldenTraces(tmp_path)
    golden.check("cosine", cosine(2), epochs=EPOCHS, updates_per_epoch=UPDATES)

    moved = record_lr_trace(cosine(3), epochs=EPOCHS, updates_per_epoch=UPDATES)
    step = next(k for k, (a, b) in enumerate(zip(stored["lrs"], moved)) if a != b)
    with pytest.raises(GoldenTraceMismatch) as caught:
        golden.check("cosine", cosine(3), epochs=EPOCHS, updates_per_epoch=UPDATES)
    message = str(caught.value)
    assert f"optimizer step {step} (epoch {step // UPDATES}, update {step % UPDATES})" in message
    assert f"golden LR {stored['lrs'][step][0]!r}, now {moved[step][0]!r}" in message
    assert "--lr-trace-update" in message


def test_missing_file_and_other_run_length_fail_clearly(tmp_path):
    with pytest.raises(GoldenTraceMismatch, match="no golden LR trace"):
        GoldenTraces(tmp_path).check("absent", cosine(2), epochs=EPOCHS, updates_per_epoch=UPDATES)
    GoldenTraces(tmp_path, update=True).check("cosine", cosine(2), epochs=EPOCHS, updates_per_epoch=UPDATES)
    with pytest.raises(GoldenTraceMismatch, match="recorded with epochs=4"):
        GoldenTraces(tmp_path).check("cosine", cosine(2), epochs=EPOCHS + 1, updates_per_epoch=UPDATES)


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden"])
def test_names_must_be_plain_file_names(tmp_path, name):
    with pytest.raises(ValueError, match="plain file name"):
        GoldenTraces(tmp_path).path(name)


def test_mapping_config_uses_create_scheduler_v2_where_timm_has_it():
    config = dict(sched="step", num_epochs=EPOCHS, decay_epochs=1, decay_rate=0.5)
    if not hasattr(timm.scheduler, "create_scheduler_v2"):
        with pytest.raises(TypeError, match="create_scheduler_v2"):
            record_lr_trace(config, epochs=EPOCHS)
        return
    assert [lrs[0] for lrs in record_lr_trace(config, epochs=EPOCHS)] == pytest.approx([0.1, 0.05, 0.025, 0.0125])


def test_fixture_fails_until_updated_then_passes(pytester):
    pytester.makepyfile(test_schedule="""
        from timm.scheduler import StepLRScheduler

        def test_schedule(lr_trace_golden):
            lr_trace_golden("step", lambda o: StepLRScheduler(o, decay_t=1, decay_rate=0.5), epochs=3)
    """)
    first = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(["*no golden LR trace*golden*step.json*--lr-trace-update*"])
    pytester.runpytest_inprocess("-p", "no:cacheprovider", "--lr-trace-update").assert_outcomes(passed=1)
    assert (pytester.path / "golden" / "step.json").exists()
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=1)

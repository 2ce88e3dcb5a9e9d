"""Each first-step defect of stock timm fails stock and passes with every adapter of the fix."""

import pytest

from defect_cases import CASES, MODES, applicable, first_step_lr, schedule_value


def _params():
    for case in CASES:
        for mode in MODES:
            marks = [pytest.mark.xfail(strict=True, reason="stock timm has this defect")] if mode == "stock" else []
            if not applicable(case, mode):
                continue
            yield pytest.param(case, mode, id=f"{mode}-{case.label}", marks=marks)


@pytest.mark.parametrize("case, mode", list(_params()))
def test_first_step_runs_with_the_schedule_value(case, mode):
    assert first_step_lr(case, mode) == pytest.approx(schedule_value(case), rel=1e-12)

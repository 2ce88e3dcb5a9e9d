"""Every accepted calling convention has its meaning in one place (timm_sched_fix/_conventions.py)."""

from __future__ import annotations

import pytest

from timm_sched_fix import _conventions as conventions
from timm_sched_fix.options import CONVENTIONS


def test_every_accepted_convention_has_a_meaning():
    assert set(conventions.CALLS_AFTER_THE_PERIOD) == set(CONVENTIONS)
    for convention in CONVENTIONS:
        for on_epochs in (True, False):
            assert "here step" in conventions.lag_advice(convention, on_epochs, 3)


@pytest.mark.parametrize("convention, first_call, before_any_step_skips", [("end", 1, True), ("begin", 0, False)])
def test_what_a_convention_means_for_the_index(convention, first_call, before_any_step_skips):
    # after the pre-advance to v(0): "end" calls close period 0 with index 1, "begin" calls open it with index 0
    assert conventions.next_index_after_move(convention, 0) == first_call
    assert conventions.next_index_after_move(convention, 7) == 7 + first_call
    assert conventions.calls_after_the_period(convention) is before_any_step_skips
    advice = conventions.lag_advice(convention, True, 4)
    assert "step(5)" in advice and ("convention='begin'" in advice) is (convention == "begin")

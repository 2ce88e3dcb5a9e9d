"""The names 0.1.0 documented and 0.2 moved keep working for a release, with a DeprecationWarning naming the new
spelling: ``timm_sched_fix.compat.active_quirks()`` and ``timm_sched_fix.dropin.<name>``."""

from __future__ import annotations

import importlib

import pytest

import timm_sched_fix
from timm_sched_fix import _dropin
from timm_sched_fix.check import active_quirks


def test_compat_active_quirks_warns_and_answers_as_check_does():
    compat = importlib.import_module("timm_sched_fix.compat")
    with pytest.warns(DeprecationWarning, match=r"timm_sched_fix\.check\.active_quirks\(\)"):
        quirks = compat.active_quirks()
    assert [quirk.name for quirk in quirks] == [quirk.name for quirk in active_quirks()]


@pytest.mark.parametrize("name", [*sorted(_dropin.SCHEDULER_CLASSES), *sorted(_dropin.FACTORIES)])
def test_dropin_names_warn_and_are_the_public_ones(name):
    dropin = importlib.import_module("timm_sched_fix.dropin")
    with pytest.warns(DeprecationWarning, match=rf"use timm_sched_fix\.{name}$"):
        value = getattr(dropin, name)
    assert value is getattr(timm_sched_fix, name)


def test_dropin_base_class_warns_and_unknown_names_raise():
    dropin = importlib.import_module("timm_sched_fix.dropin")
    with pytest.warns(DeprecationWarning, match="DropInScheduler is deprecated"):
        assert dropin.DropInScheduler is _dropin.DropInScheduler
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        dropin.nothing  # noqa: B018

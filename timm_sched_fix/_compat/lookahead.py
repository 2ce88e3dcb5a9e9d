"""timm's Lookahead (``timm.optim.Lookahead``), the optimizer wrapper timm's ``create_optimizer_v2(...,
"lookahead_*")`` builds: where the update counting (:mod:`timm_sched_fix._counting`) finds the optimizer it drives."""

from __future__ import annotations

from timm_sched_fix._compat.quirk import Quirk, always

#: Quirk ``lookahead_base_optimizer_renamed_0_5``: the attribute under which Lookahead keeps the optimizer it drives
#: (and shares the param groups of), ``_base_optimizer`` from timm 0.5.4, ``base_optimizer`` in 0.4.12.
BASE_OPTIMIZER_ATTRIBUTES = ("_base_optimizer", "base_optimizer")

QUIRKS: tuple[Quirk, ...] = (
    Quirk(
        "lookahead_skips_optimizer_init",
        "timm 0.4.12 - 1.0.31",
        "timm's Lookahead skips Optimizer.__init__, so torch runs its step hooks only after its own zero_grad() "
        "(never with model.zero_grad()); the fix counts the updates on the optimizer it drives",
        always,
    ),
    Quirk(
        "lookahead_base_optimizer_renamed_0_5",
        "0.4.12 vs 0.5.4+",
        "Lookahead keeps the optimizer it drives as base_optimizer, from 0.5.4 as _base_optimizer; the fix finds it "
        "under either name",
        always,
    ),
)

"""The judging half of ``timm-sched-fix audit``: from a :class:`~timm_sched_fix.audit.record.SchedulerRecord`, the
index t every optimizer step should have run with, v(t) from the schedule's own code, which steps differ and why.

For an update schedule t is the start position plus the updates since construction; for an epoch schedule the
start position plus the epochs begun since, with epoch boundaries from ``--updates-per-epoch``, the scheduler's
``step()`` calls or the DataLoader's passes (the report says which). The start position is 0 for a fresh schedule,
the index of a call made before the first optimizer step (a resume's ``step(start_epoch)``), or the position a
fixed scheduler's state dict carries; a resume without any of them has no known position, and is reported as
undecided rather than judged. v(t) is written by the scheduler's own method (``compat.stock_writer``, or its
inlined equivalent) on a copy of the scheduler over a throwaway optimizer, after the recorder is uninstalled:
noise, ``lr_scale`` and every param group included, bit for bit what stock timm writes for t.

Param groups whose LR the script multiplies by a factor of its own after the scheduler's calls (layer-wise LR decay
done by hand) run with a constant multiple of v(t), or of v(t - 1) when the calls lag: such a factor is found per
group (:func:`_group_factors`) and the steps are judged against factor x v(t). The analysis never raises: an error
of its own makes the scheduler undecided, with the error named.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from timm_sched_fix import _compat as compat
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._tolerance import close
from timm_sched_fix.audit import report
from timm_sched_fix.audit.data import SchedulerRecord
from timm_sched_fix.audit.report import EARLY, LAG, NEVER_MOVED, OTHER, PRE_ADVANCE, UNSCALED, index_text
from timm_sched_fix.options import Options

#: The optimizer steps a group's factor is looked for in (the first ones: a factor is constant).
FACTOR_STEPS = 2000


@dataclass
class SchedulerAudit:
    """The verdict on one scheduler; per-step lists are indexed by the optimizer step since its construction."""

    record: SchedulerRecord
    start: float | None
    start_how: str
    boundaries: list[int] | None  # steps where an epoch begins; None when undecided
    epochs_how: str
    undecided: str | None = None  # why no verdict is possible
    t: list[float] = field(default_factory=list)
    expected: list[list[float]] = field(default_factory=list)
    wrong: list[bool] = field(default_factory=list)
    cause: list[str] = field(default_factory=list)
    explanation: str = ""  # the first wrong step's cause in words
    factors: list[float] | None = None  # per param group, the script's own constant factor on v(t) (None: none)

    @property
    def steps(self) -> int:
        return len(self.record.lrs)

    @property
    def wrong_count(self) -> int:
        return sum(self.wrong)

    @property
    def first_wrong(self) -> int | None:
        return next((k for k, wrong in enumerate(self.wrong) if wrong), None)

    def causes(self) -> dict[str, int]:
        return dict(collections.Counter(cause for cause in self.cause if cause))

    def lrs_at(self, step: int) -> list[float]:
        return self.record.lrs[step]

    def epoch_of(self, step: int) -> int | None:
        if self.boundaries is None:
            return None
        return sum(1 for boundary in self.boundaries if boundary <= step)


def analyse(record: SchedulerRecord, updates_per_epoch: int | None, options: Options | None = None) -> SchedulerAudit:
    """Judge every optimizer step the record holds (call after the recorder is uninstalled); ``options``: the fix's,
    None for stock timm (the advice names only what is not active). Never raises: an error of the analysis itself
    makes the scheduler undecided, naming it."""
    try:
        return _analyse(record, updates_per_epoch, options)
    except Exception as error:  # noqa: BLE001 (the audit's own failure must not pass for the script's)
        audit = SchedulerAudit(record, None, "unknown", None, "unknown")
        audit.undecided = report.analysis_failed(error)
        return audit


def _analyse(record: SchedulerRecord, updates_per_epoch: int | None, options: Options | None) -> SchedulerAudit:
    start, start_how = _start(record)
    boundaries, epochs_how = _boundaries(record, updates_per_epoch)
    audit = SchedulerAudit(record, start, start_how, boundaries, epochs_how)
    if record.shadow is None:
        audit.undecided = record.shadow_error
    elif start is None:
        audit.undecided = start_how
    elif record.on_epochs and boundaries is None and audit.steps:
        audit.undecided = f"epoch boundaries unknown: {epochs_how}"
    if audit.undecided is not None:
        return audit
    values = _ScheduleValues(record, start, boundaries or [])
    audit.t = [start + (audit.epoch_of(k) if record.on_epochs else k) for k in range(audit.steps)]  # type: ignore
    audit.expected = [values.at(t) for t in audit.t]
    audit.wrong = [not close(ran, want, record.tolerance) for ran, want in zip(record.lrs, audit.expected)]
    if any(audit.wrong):
        factors = _group_factors(record, values, audit)
        if factors is not None:
            audit.factors = factors
            audit.expected = [_scaled(want, factors) for want in audit.expected]
            audit.wrong = [not close(ran, want, record.tolerance) for ran, want in zip(record.lrs, audit.expected)]
    for k, (ran, wrong, t) in enumerate(zip(record.lrs, audit.wrong, audit.t)):
        audit.cause.append(_cause(record, values, k, t, ran, audit) if wrong else "")
    first = audit.first_wrong
    if first is not None:
        audit.explanation = report.explain_step(audit, first, _call_before(audit, first), options)
        causes = audit.causes()
        most = max(causes, key=causes.__getitem__)
        if most != audit.cause[first]:  # the first wrong step is not the typical one: explain that one too
            k = audit.cause.index(most)
            audit.explanation += report.typical_cause(k, most, causes[most],
                                                      report.explain_step(audit, k, _call_before(audit, k), options))
    return audit


def _scaled(values: list[float] | None, factors: list[float] | None) -> list[float] | None:
    if values is None or factors is None:
        return values
    return [value * factor for value, factor in zip(values, factors)]


def _group_factors(record: SchedulerRecord, values: _ScheduleValues, audit: SchedulerAudit) -> list[float] | None:
    """Per param group, the constant factor the script multiplies the group's LR by after the scheduler's calls: the
    ratio of the LR that ran to v(t), or to v(t - 1) when the calls lag, that most of the first steps share. None when
    no group has a factor other than 1."""
    steps = min(audit.steps, FACTOR_STEPS)
    if steps < 2:
        return None
    factors = []
    for group in range(len(record.init_lrs)):
        best: tuple[int, float] = (0, 1.0)
        for shift in (0, 1):
            ratios: dict[str, tuple[int, float]] = {}
            for k in range(steps):
                want = audit.expected[k] if not shift else values.at(audit.t[k] - shift)
                if want is None or not want[group]:
                    continue
                ratio = record.lrs[k][group] / want[group]
                key = f"{ratio:.9g}"
                count, first = ratios.get(key, (0, ratio))
                ratios[key] = (count + 1, first)
            if ratios:
                best = max(best, max(ratios.values()))
        count, factor = best
        factors.append(factor if count >= max(2, steps // 2) else 1.0)
    return factors if any(factor != 1.0 for factor in factors) else None


# -- where the schedule starts and where epochs begin ---------------------------------------------------

def _start(record: SchedulerRecord) -> tuple[float | None, str]:
    """The index the first optimizer step should run with, and how it is known."""
    own = "step" if record.on_epochs else "step_update"
    start: float | None = 0
    how = "a fresh schedule: t starts at 0"
    resumed = "built with initialize=False" if not record.initialize else ""
    if resumed:
        start, how = None, resumed
    for call in (call for call in record.calls if call.update == 0):
        if call.method == own and call.index is not None:
            start = call.index
            how = f"{own}({index_text(call.index)}) before the first optimizer step" + (
                " (a resume)" if resumed else "")
        elif call.method == "load_state_dict":
            resumed = "a state dict was loaded"
            if call.index is not None:
                start, how = call.index, "the position saved in the loaded state dict"
            else:
                start, how = None, resumed
    if start is None:
        how = (f"unknown position after a resume: {how}, and no {own}(t) with an index came before the first "
               "optimizer step, so which t it trains at is unknown (timm's train.py calls "
               f"{'step(start_epoch)' if record.on_epochs else 'step_update(start_epoch * updates_per_epoch)'})")
    return start, how


def _boundaries(record: SchedulerRecord, updates_per_epoch: int | None) -> tuple[list[int] | None, str]:
    """The optimizer steps where an epoch begins (0 excluded), and how they were found; None when undecided."""
    steps = len(record.lrs)
    if not steps:
        return [], "no optimizer step ran with this scheduler"
    if updates_per_epoch:
        return list(range(updates_per_epoch, steps, updates_per_epoch)), f"--updates-per-epoch {updates_per_epoch}"
    step_calls = [call.update for call in record.calls if call.method == "step"]
    by_calls = sorted({update for update in step_calls if 0 < update < steps})
    passes = _training_passes(record, steps)
    by_loader = sorted({begin for begin, _ in passes if 0 < begin < steps})
    inside = sorted({update for update in step_calls for begin, end in passes if end is not None and
                     begin < update < end})
    if inside:
        return None, (f"step() was called at steps {_few(inside)}, inside a DataLoader pass: fractional or extra "
                      "epochs? pass --updates-per-epoch N")
    if by_calls and by_loader and by_calls != by_loader:
        return None, (f"the scheduler's step() calls put epoch boundaries at steps {_few(by_calls)} but the "
                      f"DataLoader's passes begin at steps {_few(by_loader)}; pass --updates-per-epoch N")
    if by_calls:
        return by_calls, "the scheduler's step() calls" + (
            ", where the DataLoader passes also begin" if by_loader else "")
    if by_loader:
        return by_loader, "the DataLoader's passes (the script made no step() call between optimizer steps)"
    if passes or any(update >= steps for update in step_calls):
        return [], "one epoch: " + ("one DataLoader pass" if passes else "a step() call after the last step")
    return None, "no step() call and no DataLoader pass seen between optimizer steps; pass --updates-per-epoch N"


def _training_passes(record: SchedulerRecord, steps: int) -> list[tuple[int, int | None]]:
    """(begin, end) of every DataLoader pass during which the optimizer stepped; end None when it never ended."""
    begins: dict[int, int] = {}
    ends: dict[int, int] = {}
    order: list[int] = []
    for kind, number, update in record.loader_events:
        if kind == "start":
            begins[number] = update
            order.append(number)
        elif number in begins:
            ends[number] = update
    passes = []
    for i, number in enumerate(order):
        begin, end = begins[number], ends.get(number)
        # a pass left unfinished (break, --max-steps) lasts until the next pass begins, or until the run ends
        last = end if end is not None else (begins[order[i + 1]] if i + 1 < len(order) else steps)
        if last > begin:
            passes.append((begin, end))
    return passes


def _few(values: list[int], limit: int = 6) -> str:
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


# -- v(t) ---------------------------------------------------------------------------------------------

class _ScheduleValues:
    """v(t) per param group, written by the schedule's own code on the record's copy of the scheduler.

    Every schedule but PlateauLRScheduler is a function of t (noise is seeded by t). A PlateauLRScheduler's
    reductions follow its metric: it is replayed epoch by epoch with the metric the script passed at each
    boundary, at the index timm's train.py would pass."""

    def __init__(self, record: SchedulerRecord, start: float, boundaries: list[int]) -> None:
        self.shadow = record.shadow
        self.groups = self.shadow.optimizer.param_groups
        self.field = record.field
        stock = stock_method(type(self.shadow), "step" if record.on_epochs else "step_update")
        inlined = None if record.on_epochs else compat.inlined_step_update(self.shadow, stock)
        self.write = inlined or compat.stock_writer(self.shadow, stock)
        self.cache: dict[float, list[float]] = {}
        self.replayed = compat.is_plateau(self.shadow)
        if self.replayed:
            metrics = {call.update: call.metric for call in record.calls if call.method == "step"}
            for epoch, boundary in enumerate([None, *boundaries]):
                self.cache[start + epoch] = self._written(start + epoch, metrics.get(boundary))

    def _written(self, t: float, metric: Any) -> list[float]:
        self.write(self.shadow, t, metric)
        return [float(group[self.field]) for group in self.groups]

    def at(self, t: float) -> list[float] | None:
        """v(t); for a replayed PlateauLRScheduler only the indices of the run (else None)."""
        if t not in self.cache:
            if self.replayed or t < 0:
                return None
            self.cache[t] = self._written(t, None)
        return self.cache[t]


def _cause(record: SchedulerRecord, values: _ScheduleValues, k: int, t: float, ran: list[float],
           audit: SchedulerAudit) -> str:
    tolerance = record.tolerance
    if audit.factors is not None and close(ran, values.at(t), tolerance):
        return UNSCALED
    if t == audit.t[0] and close(ran, record.init_lrs, tolerance):
        return PRE_ADVANCE
    for candidate, name in ((t - 1, LAG), (t + 1, EARLY)):
        value = _scaled(values.at(candidate), audit.factors)
        if value is not None and close(ran, value, tolerance):
            return name
    return NEVER_MOVED if close(ran, record.init_lrs, tolerance) else OTHER


def _call_before(audit: SchedulerAudit, k: int) -> Any:
    """The last call with an index of the schedule's own unit made before optimizer step ``k`` and after the one
    before it (update schedules) or at the beginning of its epoch (epoch schedules)."""
    record = audit.record
    own = "step" if record.on_epochs else "step_update"
    at = max([b for b in audit.boundaries or [] if b <= k], default=0) if record.on_epochs else k
    calls = [call for call in record.calls if call.method == own and call.index is not None and call.update == at]
    return calls[-1] if calls and at > 0 else None

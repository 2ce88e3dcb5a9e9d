"""Which calls are lags, and what each ``on_lag`` policy does with them.

A **lag** is an index that trails the optimizer steps by one whole period: a call passes the index already in
force after a period of optimizer steps ran with it (DeiT's ``step(epoch)`` after the epoch, Swin's
``step_update(k)`` after update k, Lightning's documented ``step(epoch=self.current_epoch)``), and the next
call, one more period later, passes the next index. One such call alone proves nothing: per-step calls of an
epoch schedule with the epoch in progress (Lightning ``"interval": "step"``), begin-style calls, fractional
epochs and the first call after ``load_state_dict`` (a restarted epoch) repeat an index too. So
:class:`LagRule` sees every call with an index and keeps, until a second call decides:

- **observation**: an integral index equal to the one in force after optimizer steps ran with it (for an update
  schedule exactly one step: one whole period), not the first call after a load. Applied as stock timm does,
  except under ``on_lag="fix"`` when the observation already spans a whole period that per-step calls cannot
  produce (one update of an update schedule; two or more optimizer steps for an epoch schedule): then index + 1
  is applied at once, so the true lag runs no step late.
- **confirmation**: the next call, after optimizer steps, passes the next index. A lag: ``"warn"`` warns,
  ``"raise"`` raises (nothing changed), ``"fix"`` applies index + 1 while the calls lag (a call passing an index past the
  one in force ends it: from there on indices are applied as given, as stock timm applies them). For an epoch schedule whose
  two periods were one optimizer step each, epoch indices one step late cannot be told from update counts
  passed to an epoch schedule; the indices are applied as given, with a warning naming both readings.
- **refutation**: anything else (the same index again, a fractional or another index, the next index before
  any optimizer step). Not a lag: the indices are applied as given for the rest of the run, and a repeated
  index after optimizer steps is warned with the change that makes the loop right. A shift ``"fix"`` applied
  on the observation is taken back (the steps in between ran one period ahead; the warning says so), and so
  is a decided one when a fractional index comes (shifted, it could reach timm's noise, which cannot seed it).
- **re-application**: the position in force passed again before any optimizer step ran with it, as timm's
  train.py does with ``step(start_epoch)`` right after loading a checkpoint. No evidence: a decided shift is not
  added to it, and in a loop that calls after its steps the evidence from before the checkpoint ends there (the
  indices are applied as given from then on, as stock timm applies them).

Nothing here imports torch; the state it keeps (:meth:`LagRule.record`) is plain Python, for state dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from timm_sched_fix import _notices as notices
from timm_sched_fix._conventions import lag_advice
from timm_sched_fix._walk import frame_finder
from timm_sched_fix.exceptions import ScheduleCallWarning, ScheduleLagError, ScheduleLagWarning

#: Settled decisions: after one of them, every index is applied as given plus ``shift``.
DECISIONS = ("lag", "not a lag", "ambiguous")
PLACEMENTS = ("before", "after")
_RECORD_KEYS = frozenset({"pending", "chain", "strong", "decision", "placement"})





class LagRule:
    """The lag decision of one fixed scheduler: sees every call with an index of the schedule's own unit.

    ``shift`` (0 or 1) is added to every index until a call passes the next index itself (the calls stopped
    lagging); ``fast_shift`` is 0 while no call needs the rule (the timing's per-update hot path may then apply
    ``index`` for an index other than the one in force without asking), None otherwise.

    Evidence is a chain of calls: an observation, then calls each passing the next index after one period of
    optimizer steps (exactly one for an update schedule, one or more for an epoch schedule). ``pending`` is the
    index of the chain's last call, ``chain`` its number of calls, ``strong`` whether it already spans a period
    per-step calls cannot produce (one update of an update schedule, two or more optimizer steps of an epoch
    schedule).
    """

    __slots__ = ("_replay", "_warned", "at_start", "chain", "convention", "decision", "fast_shift", "on_epochs",
                 "pending", "placement", "policy", "resumed", "shift", "steps_at_load", "strong")

    def __init__(self, on_epochs: bool, policy: str, convention: str) -> None:
        self.on_epochs = on_epochs
        self.policy = policy
        self.convention = convention
        self.shift = 0
        self.pending: float | None = None
        self.chain = 0
        self.strong = False
        self.decision: str | None = None
        self.placement: str | None = None  # whether the first indexed call came before or after optimizer steps
        self.resumed = False  # the next call is the first after a load_state_dict
        self.steps_at_load = 0  # the optimizer steps since the last apply that a load restored
        # the position in force is still the constructor's (its index 0 with no optimizer step before it): only
        # then is an index equal to it known to trail the optimizer steps, rather than to catch up with an index
        # passed ahead of them
        self.at_start = True
        self._replay: float | None = None  # an index to apply before the one decided (see _confirmed)
        self._warned: set[str] = set()
        self._refresh()

    def reconfigure(self, policy: str, convention: str) -> None:
        """Other ``on_lag`` and ``convention`` from now on (``wrap()`` with other options); the evidence stays."""
        self.policy, self.convention = policy, convention
        self._refresh()

    # -- the decision -----------------------------------------------------------------------------

    def indices_to_apply(self, name: str, index: float, last_t: float | None, steps: int) -> tuple[float, ...]:
        """The schedule indices a call ``name(index)`` applies, in order (the last one is the position), ``steps``
        real optimizer updates after the index ``last_t`` was applied. Raises :class:`ScheduleLagError` for a lag
        under ``on_lag="raise"`` before anything changes."""
        t = self._index_to_apply(name, index, last_t, steps)
        replay, self._replay = self._replay, None
        return (t,) if replay is None else (replay, t)

    def _index_to_apply(self, name: str, index: float, last_t: float | None, steps: int) -> float:
        if self.shift and self.decision == "lag":
            t = self._while_shifted(name, index, last_t, steps)
        elif self.decision is not None or self.policy == "ignore" or last_t is None:
            t = index + self.shift
        elif self.pending is not None:
            t = self._next_in_chain(name, index, steps)
        elif self.at_start and not self.resumed and self._is_observation(index, last_t, steps):
            t = self._observe(index, steps)
        else:
            t = index + self.shift
        if steps or t != last_t:
            self.at_start = False
        if self.placement is None:
            self.placement = "before" if steps == self.steps_at_load else "after"
        self.resumed = False
        self.steps_at_load = 0
        self._refresh()
        return t

    def _is_observation(self, index: float, last_t: float, steps: int) -> bool:
        """The index in force re-applied after a period of optimizer steps ran with it."""
        return index == last_t and index == int(index) and self._one_period(steps)

    def _one_period(self, steps: int) -> bool:
        return steps == 1 if not self.on_epochs else steps >= 1  # an update schedule's period is one step

    def _observe(self, index: float, steps: int) -> float:
        self.pending, self.chain, self.strong = index, 1, not self.on_epochs or steps >= 2
        if self.policy == "fix" and self.strong:
            self.shift = 1  # a whole period already: apply the next index now, take it back if refuted
        return index + self.shift

    def _next_in_chain(self, name: str, index: float, steps: int) -> float:
        pending = self.pending
        fresh = steps - self.steps_at_load if self.resumed else steps  # the optimizer steps since a load
        if self.resumed and not fresh and self.placement == "after":
            # the first call after a load, before any optimizer step, in a loop that calls after its steps: it
            # re-applies a position (train.py's step(start_epoch)); no period ran with its index, so it is no
            # evidence, and what came before the checkpoint cannot be checked any more: as stock from here on
            self.pending, self.chain, self.strong, self.shift = None, 0, False, 0
            return index
        if index == pending and not fresh:
            if self.resumed:  # the first call after a load: a restarted period, a repeat or a re-application
                self.pending, self.chain, self.strong, self.shift = None, 0, False, 0  # unknowable: as stock
                return index
            return index + self.shift  # the same index again before any optimizer step: no evidence either way
        if index != pending + 1 or not self._one_period(steps):
            return self._refuted(name, index, fresh)
        strong = self.strong or steps >= 2
        if strong:
            return self._confirmed(name, index, steps)
        if self.chain < 2:  # one more step-long period: per-step calls of two-step epochs look like this too
            self.pending, self.chain = index, self.chain + 1
            return index
        self._settle("ambiguous")
        self._warn("ambiguous", self._ambiguous_message(pending, index), ScheduleLagWarning)
        return index

    def _confirmed(self, name: str, index: float, steps: int) -> float:
        message = self._lag_message(name, self.pending, index, steps)
        if self.policy == "raise":
            raise ScheduleLagError(message)
        if self.policy == "fix":
            if not self.shift:
                # decided late: index + 1 now, after index itself, the value the schedule passes through (a
                # PlateauLRScheduler past its warmup keeps the LR it finds: skipped, its warmup's last value stays)
                self.shift, self._replay = 1, index
        else:
            self._warn("lag", message, ScheduleLagWarning)
        self._settle("lag")
        return index + self.shift

    def _refuted(self, name: str, index: float, fresh: int) -> float:
        pending, retracted = self.pending, self.shift
        self.shift = 0
        self._settle("not a lag")
        note = (f" (on_lag='fix' had taken {name}({pending!r}) for a lag and applied {pending + 1!r} to the {fresh} "
                "optimizer step(s) since; it applies every index as given from now on)") if retracted and fresh else ""
        if fresh and index == pending:
            if not self.on_epochs:
                self._warn("repeated", self._repeated_update_message(index) + note, ScheduleCallWarning)
            elif self.placement == "after" or note:
                self._warn("repeated", self._repeated_epoch_message(index) + note, ScheduleCallWarning)
        elif note:
            self._warn("retracted", f"{name}({index!r}) after {name}({pending!r}) is no one-period lag" + note,
                       ScheduleLagWarning)
        return index

    def _while_shifted(self, name: str, index: float, last_t: float | None, steps: int) -> float:
        """A decided lag under ``on_lag="fix"``: index + 1 while the calls lag."""
        if index != int(index):
            return self._fractional_after_lag(name, index)
        if last_t is not None and index > last_t:
            return self._no_longer_lagging(name, index, last_t)
        if index == last_t and not steps:
            # the position in force again, no optimizer step since it was applied, not even before the checkpoint
            # (train.py's step(start_epoch) after a load): a lagging call follows a period that ran with its index,
            # so this is none; the shift stays
            return index
        return index + self.shift

    def _fractional_after_lag(self, name: str, index: float) -> float:
        self.shift = 0
        self._settle("not a lag")
        self._warn("retracted", f"{name}({index!r}) is a fractional index after calls taken for a one-period lag: "
                   "on_lag='fix' had applied index + 1 since, and applies every index as given from now on",
                   ScheduleLagWarning)
        return index

    def _no_longer_lagging(self, name: str, index: float, last_t: float) -> float:
        # A lagging loop passes the index in force (or, restarting an epoch, an earlier one); one past it means the
        # calls changed (the warning's advice followed, mid-run or in a resumed run) or skipped ahead. Shifted, it
        # would skip an index: as given it is what stock timm applies, as is every index from here on.
        self.shift = 0
        self._settle("not a lag")
        self._warn("retracted", f"{name}({index!r}) passes an index past the one in force ({last_t!r}): the calls "
                   "no longer lag by one period, so on_lag='fix' stops adding one and applies every index as given "
                   "from now on", ScheduleLagWarning)
        return index

    def _settle(self, decision: str) -> None:
        self.decision, self.pending, self.chain, self.strong = decision, None, 0, False

    def _refresh(self) -> None:
        watching = self.pending is not None or self.resumed or self.placement is None or self.at_start
        # a shift is applied on the rule's path only: each call is checked for indices that stopped lagging
        self.fast_shift = None if self.shift or watching and self.policy != "ignore" else 0

    # -- messages: the pattern seen and the change that makes the loop right ----------------------

    def _lag_message(self, name: str, previous: float, index: float, steps: int) -> str:
        if self.on_epochs:
            seen = (f"{name}({previous!r}) and then {name}({index!r}) {steps} optimizer step(s) later each pass the "
                    "index of the epoch that just ran, so every epoch runs with the previous epoch's value: the "
                    "schedule runs one epoch late. ")
            unit = "epoch"
        else:
            seen = (f"{name}({previous!r}) and then {name}({index!r}) one optimizer step later each pass the index "
                    "of the update that just ran, so every optimizer step runs with the previous update's value: "
                    "the schedule runs one update late. ")
            unit = "update"
        return (seen + lag_advice(self.convention, self.on_epochs, index)
                + f"on_lag='fix' applies index + 1 while the calls lag (one {unit} late seen twice).")

    def _ambiguous_message(self, previous: float, index: float) -> str:
        return (f"step({previous!r}) and then step({index!r}) came one optimizer step apart, each with the index "
                "already in force: if every epoch is one optimizer step, the schedule runs one epoch late (pass "
                f"step({index + 1!r}), the next epoch); if the index counts optimizer updates, this schedule counts "
                "epochs (t_in_epochs=True): build it with t_in_epochs=False (lengths in updates) and call "
                "step_update(num_updates) after each optimizer step. The two cannot be told apart from the calls, "
                "so every index is applied as given, as stock timm does (on_lag='fix' included).")

    def _repeated_epoch_message(self, index: float) -> str:
        return (f"step({index!r}) came again after an optimizer step with the same epoch: this epoch schedule "
                "(t_in_epochs=True) is stepped after every optimizer step with the epoch in progress, so the first "
                "optimizer step of every epoch still runs with the previous epoch's value. Step it once per epoch "
                "instead: scheduler.step(epoch + 1) after the epoch; in Lightning, \"interval\": \"epoch\" with "
                "scheduler.step(epoch=self.current_epoch + 1) in lr_scheduler_step (or the TimmLRSchedulerStep "
                "mixin of timm_sched_fix.lightning), or return timm_sched_fix.TorchScheduler(scheduler) with "
                "\"interval\": \"epoch\"; or build a per-update schedule (t_in_epochs=False) and call "
                "step_update(num_updates) after each optimizer step.")

    def _repeated_update_message(self, index: float) -> str:
        return (f"step_update({index!r}) came again after an optimizer step with the same index: the index does "
                "not advance with the optimizer updates, so the LR only changes when it does. step_update() takes "
                "the number of optimizer updates done: step_update(num_updates) after each optimizer step (or "
                "auto=True and no calls); an epoch index belongs to a per-epoch schedule (t_in_epochs=True) and "
                "step(epoch + 1) after each epoch.")

    def _warn(self, kind: str, message: str, category: type[Warning]) -> None:
        if self.policy != "ignore" and kind not in self._warned:
            self._warned.add(kind)
            notices.emit(message, category, caller_stacklevel())

    # -- state dicts ------------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        """What a state dict carries besides ``shift`` (plain Python values)."""
        return {"pending": self.pending, "chain": self.chain, "strong": self.strong, "decision": self.decision,
                "placement": self.placement}

    def load(self, shift: int, record: Mapping[str, Any] | None, steps: int) -> None:
        """Restore a state checked by :func:`check_record`, with ``steps`` optimizer steps since the last apply;
        the next call is the first after a load (never an observation). A position record from before this
        rule (``record`` None) keeps its shift as a decided lag."""
        self.shift = shift
        if record is None:
            self.pending, self.chain, self.strong, self.placement = None, 0, False, None
            self.decision = "lag" if shift else None
        else:
            self.pending, self.chain, self.strong = record["pending"], record["chain"], record["strong"]
            self.decision, self.placement = record["decision"], record["placement"]
        self.resumed, self.steps_at_load, self.at_start = True, steps, False
        self._refresh()

    def lost_position(self) -> None:
        """A stock state dict was loaded (no position): the chain so far means nothing; the decision stays."""
        self.pending, self.chain, self.strong = None, 0, False
        if self.decision is None:
            self.shift = 0
        self.resumed, self.steps_at_load, self.at_start = True, 0, False
        self._refresh()

    def state(self) -> dict[str, Any]:
        """Everything this rule holds (a snapshot for :meth:`restore`, and its pickled form)."""
        return {slot: getattr(self, slot) for slot in self.__slots__}

    def restore(self, state: Mapping[str, Any]) -> None:
        for slot, value in state.items():
            setattr(self, slot, value)

    __getstate__ = state
    __setstate__ = restore


#: The first frame outside this package, timm and wrapt.
_users_frame = frame_finder(("timm_sched_fix", "timm", "wrapt"), inside=False)


def caller_stacklevel() -> int:
    """For a ``warnings.warn`` in the function calling this: the ``stacklevel`` of the first frame outside this
    package, timm and wrapt: the user's call, whichever adapter (or the audit's observer) it took."""
    found = _users_frame(1)
    return 1 if found is None else found[0]


def check_record(record: Any, shift: int, where: str) -> None:
    """Refuse a malformed lag record of a state dict (``ValueError`` naming the key)."""
    if not isinstance(record, Mapping) or set(record) != _RECORD_KEYS:
        raise ValueError(f"{where} must be a mapping with the keys {sorted(_RECORD_KEYS)}, got {record!r}")
    pending, chain = record["pending"], record["chain"]
    if pending is not None and (type(pending) not in (int, float) or not 0 <= pending < math.inf):
        raise ValueError(f"{where}['pending'] must be None or a finite, non-negative number, got {pending!r}")
    if type(chain) is not int or not 0 <= chain <= 2 or (chain > 0) != (pending is not None):
        raise ValueError(f"{where}['chain'] must be 1 or 2 with a pending index, else 0; got {chain!r}")
    if type(record["strong"]) is not bool:
        raise ValueError(f"{where}['strong'] must be a bool, got {record['strong']!r}")
    if record["decision"] not in (None, *DECISIONS) or (pending is not None and record["decision"] is not None):
        raise ValueError(f"{where}['decision'] must be None (while an index is pending) or one of {DECISIONS}, "
                         f"got {record['decision']!r}")
    if record["placement"] not in (None, *PLACEMENTS):
        raise ValueError(f"{where}['placement'] must be None or one of {PLACEMENTS}, got {record['placement']!r}")
    if shift and record["decision"] != "lag" and pending is None:
        raise ValueError(f"{where}: an index shift needs a decided lag or a pending observation, got {record!r}")

"""The recording half of ``timm-sched-fix audit``: while a script runs, every timm scheduler it constructs and,
for each, the LRs every parameter update of its optimizer ran with, the scheduler's calls and loads, and the
DataLoader passes (evidence for epoch boundaries).

Instrumented the way ``patch()`` instruments: wrapt on the ``__init__`` of timm's ``Scheduler`` and every
subclass (later ones, the fix's routing classes included, through ``__init_subclass__``), observing descriptors on
``step``, ``step_update`` and ``load_state_dict`` of those classes, of the drop-in base class and of ``wrap()``'s
proxy, so every adapter's calls are seen; the parameter updates through ``counting`` (once per update, behind
wrappers, right before it and after the fix's auto mode has written the LRs); wrapt on ``DataLoader.__iter__``
and its iterators' ``__next__``. Everything is read, nothing written: the script's LRs and schedulers behave as
without it. ``Recorder.uninstall()`` removes every piece again.
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading
import weakref
from typing import Any

import torch
import torch.utils.data.dataloader
import wrapt

from timm_sched_fix import _compat as compat
from timm_sched_fix import _counting as counting
from timm_sched_fix._position import STATE_KEY
from timm_sched_fix._proxy import FixedScheduler
from timm_sched_fix._tolerance import REL_TOL
from timm_sched_fix._walk import with_subclasses
from timm_sched_fix.audit import report
from timm_sched_fix.audit.data import Call, SchedulerRecord, number, settle, shadow_of, where

_new_call = functools.partial(tuple.__new__, Call)  # Call(...) without NamedTuple's Python-level __new__: per step
#: The name of the index parameter of each recorded method.
_INDEX_NAMES = {"step": "epoch", "step_update": "num_updates"}
#: The scheduler methods whose calls are recorded.
OBSERVED = ("step", "step_update", "load_state_dict")
_active: Recorder | None = None  # the installed recorder (one at a time)


class MaxStepsReached(SystemExit):
    """Raised inside the script at its (N+1)-th optimizer step under ``--max-steps N``: a ``SystemExit(0)``, so the
    script's own ``except Exception`` lets it through, and a child process audited through the environment ends
    there cleanly (exit status 0, exit handlers run)."""

    def __init__(self, message: str) -> None:
        super().__init__(0)
        self.message = message


class _ObservedMethod(wrapt.BaseObjectProxy):
    """``step``, ``step_update`` or ``load_state_dict`` of a class, seen by the active recorder: looked up on an
    audited scheduler it is a recording call of the method it wraps (the outermost call only), otherwise that
    method itself. Put on timm's classes, the fix's routing classes and drop-in base, and ``wrap()``'s proxy, so
    every adapter's calls are seen."""

    __timm_sched_fix_patched_method__ = True  # _overrides.stock_method and _compat look past it
    name: str

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        bound = self.__wrapped__.__get__(instance, owner)
        recorder = _active
        if instance is None or recorder is None:
            return bound
        scheduler = getattr(instance, "__wrapped__", instance) if isinstance(instance, wrapt.ObjectProxy) \
            else instance  # wrap()'s FixedScheduler: the scheduler behind it
        record = recorder._by_scheduler.get(id(scheduler))
        if record is None or record.depth:
            return bound
        return functools.partial(recorder.observe, record, scheduler, type(self).name, bound)


_OBSERVED = {name: type(f"_Observed_{name}", (_ObservedMethod,), {"name": name}) for name in OBSERVED}


class Recorder:
    """Records while installed; ``records`` holds one :class:`SchedulerRecord` per scheduler constructed.

    ``max_steps``: the (N+1)-th parameter update of an optimizer an audited scheduler drives raises
    :class:`MaxStepsReached` before it runs.
    """

    def __init__(self, max_steps: int | None = None) -> None:
        self.max_steps = max_steps
        self.records: list[SchedulerRecord] = []
        self.updates = 0  # parameter updates of the optimizers the audited schedulers drive
        self.stopped = False  # MaxStepsReached was raised
        self.notes: list[str] = []  # what could not be recorded, said in the report
        self.rank: tuple[int, int] | None = None  # (rank, world size) of torch.distributed, when a scheduler was built
        self.on_first_record: Any = None  # called when the first scheduler is recorded (audit_children's marker)
        self._by_scheduler: dict[int, SchedulerRecord] = {}
        self._live: list[SchedulerRecord] = []
        self._constructing: set[int] = set()
        self._passes = itertools.count(1)
        self._wrappers: list[tuple[Any, str, Any]] = []
        self._counted: dict[int, list[SchedulerRecord]] = {}  # id(counting.UpdateCounter) -> records on it
        self._detaches: list[Any] = []
        self._lock = threading.RLock()

    # -- installing -------------------------------------------------------------------------------

    def install(self) -> None:
        """Instrument timm's scheduler classes, the fix's timing, torch's optimizer steps and DataLoaders."""
        global _active
        if _active is not None:
            raise RuntimeError("another audit recorder is installed")
        _active = self
        try:
            self._instrument()
        except BaseException:
            self.uninstall()
            raise

    def _instrument(self) -> None:
        scheduler_base = compat.Scheduler
        self._wrap(scheduler_base, "__init_subclass__", self._instrument_new_subclass)
        for cls in [*with_subclasses(scheduler_base), FixedScheduler]:
            self._instrument_class(cls)
        # the drop-in classes' routed methods live on their base; importing dropin reads timm.scheduler's classes,
        # which is not possible yet when this runs as timm.scheduler is imported (a child process's start-up)
        dropin = sys.modules.get("timm_sched_fix._dropin")
        if dropin is not None:
            self._instrument_class(dropin.DropInScheduler)
        else:
            wrapt.register_post_import_hook(self._instrument_dropin, "timm_sched_fix._dropin")
        data = torch.utils.data.dataloader
        self._wrap(data.DataLoader, "__iter__", self._loader_pass)
        self._wrap(data._BaseDataLoaderIter, "__next__", self._loader_next)

    def uninstall(self) -> None:
        """Remove every wrapper and hook (innermost last); recording stops, the records stay."""
        global _active
        for detach in self._detaches:
            detach()
        self._detaches = []
        while self._wrappers:
            owner, attribute, handle = self._wrappers.pop()
            wrapt.unwrap_object(owner, attribute, handle, missing_ok=True)
        if _active is self:
            _active = None

    def _wrap(self, owner: Any, attribute: str, wrapper: Any) -> None:
        self._wrappers.append((owner, attribute, wrapt.wrap_function_wrapper(owner, attribute, wrapper)))

    def _apply(self, owner: Any, attribute: str, proxy: Any) -> None:
        wrapt.apply_patch(owner, attribute, proxy)
        self._wrappers.append((owner, attribute, proxy))

    def _instrument_class(self, cls: type) -> None:
        if "__init__" in vars(cls) and issubclass(cls, compat.Scheduler):
            self._wrap(cls, "__init__", self._construct)
        for name in OBSERVED:
            if name in vars(cls):
                self._apply(cls, name, _OBSERVED[name](vars(cls)[name]))

    def _instrument_dropin(self, module: Any) -> None:
        if _active is self:
            self._instrument_class(module.DropInScheduler)

    def _instrument_new_subclass(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        wrapped(*args, **kwargs)
        if _active is self:
            self._instrument_class(wrapped.__self__)

    # -- schedulers -------------------------------------------------------------------------------

    def _construct(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> None:
        key = id(instance)
        if key in self._constructing:  # super().__init__: only the outermost constructor registers
            wrapped(*args, **kwargs)
            return
        self._constructing.add(key)
        try:
            wrapped(*args, **kwargs)
        finally:
            self._constructing.discard(key)
        try:
            self._register(instance, wrapped, args, kwargs)
        except Exception as error:  # noqa: BLE001 (the audit never breaks the script: the report says it)
            self.notes.append(report.not_audited(type(instance).__name__, where(), error))

    def _register(self, scheduler: Any, init: Any, args: tuple, kwargs: dict) -> None:
        _, initialize = compat.construction_args(init, args, kwargs)
        distributed = torch.distributed
        if self.rank is None and distributed.is_available() and distributed.is_initialized():
            self.rank = (distributed.get_rank(), distributed.get_world_size())
        optimizer = scheduler.optimizer
        field = scheduler.param_group_field
        shadow, shadow_error = shadow_of(scheduler)
        dtypes = [group[field].dtype for group in optimizer.param_groups if isinstance(group[field], torch.Tensor)]
        tolerance = max([REL_TOL, *(4 * torch.finfo(dtype).eps for dtype in dtypes if dtype.is_floating_point)])
        with self._lock:
            record = SchedulerRecord(
                number=len(self.records) + 1, class_name=type(scheduler).__name__,
                timm_class=compat.timm_class_name(scheduler), on_epochs=compat.is_epoch_schedule(scheduler),
                field=field, where=where(), optimizer=optimizer, initialize=initialize, shadow=shadow,
                shadow_error=shadow_error, init_lrs=[], tolerance=tolerance)
            record.init_lrs = record.group_lrs()
            self.records.append(record)
            if len(self.records) == 1 and self.on_first_record is not None:
                self.on_first_record()
            self._live.append(record)
            self._by_scheduler[id(scheduler)] = record
            self._count(record)
        weakref.finalize(scheduler, self._released, id(scheduler), record)

    def _count(self, record: SchedulerRecord) -> None:
        """Record the LRs right before every parameter update of the record's optimizer (_counting.py: behind
        wrappers, once per update, after the fix's auto mode has written them)."""
        counter = counting.counter_for(record.optimizer)
        if counter is None:
            record.stopped = report.uncountable(counting.uncountable_reason(record.optimizer))
            return
        records = self._counted.get(id(counter))
        if records is None:
            records = self._counted[id(counter)] = []
            self._detaches.append(counter.attach(self, functools.partial(self._before_update, records)))
        records.append(record)

    def _released(self, key: int, record: SchedulerRecord) -> None:
        with self._lock:
            if self._by_scheduler.get(key) is record:
                del self._by_scheduler[key]
            if record in self._live:
                self._live.remove(record)
                record.released_at = record.steps

    def observe(self, record: SchedulerRecord, scheduler: Any, name: str, bound: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one call of an audited scheduler and record it (it runs on every optimizer step: kept lean). Only the
        call itself may raise into the script: the recording's own errors stop this scheduler's record, saying why."""
        if not record.settled:
            self._guarded(record, settle, record)
        record.depth += 1
        try:
            result = bound(*args, **kwargs)
        finally:
            record.depth -= 1
        if name == "load_state_dict":
            self._guarded(record, self._loaded, record, scheduler, args[0] if args else kwargs.get("state_dict"))
            return result
        index = args[0] if args else kwargs.get(_INDEX_NAMES[name])
        metric = args[1] if len(args) > 1 else kwargs.get("metric")
        if type(index) is not int:
            index = number(index)
        if metric is not None and type(metric) is not float:
            metric = number(metric)  # never keep a tensor (and its autograd graph) alive
        record.calls.append(_new_call((record.steps, name, index, metric)))
        return result

    @staticmethod
    def _guarded(record: SchedulerRecord, function: Any, *args: Any) -> None:
        """``function(*args)``; an error of the audit's own stops the record (the report says why) instead of
        reaching the script."""
        try:
            function(*args)
        except Exception as error:  # noqa: BLE001 (never the script's failure)
            record.stopped = record.stopped or report.recording_failed(record.steps, error)

    def _loaded(self, record: SchedulerRecord, scheduler: Any, state: Any) -> None:
        """A ``load_state_dict``: the position it restored (a fixed scheduler's record carries one); before the first
        optimizer step, a resume: the schedule is copied again as loaded."""
        ours = state.get(STATE_KEY) if isinstance(state, dict) else None
        position = number(ours.get("last_t")) if isinstance(ours, dict) else None
        record.calls.append(_new_call((record.steps, "load_state_dict", position, None)))
        if not record.steps:
            record.shadow, record.shadow_error = shadow_of(scheduler)

    # -- optimizer steps --------------------------------------------------------------------------

    def _before_update(self, records: list[SchedulerRecord]) -> None:
        """Right before a parameter update of the optimizer these records' schedulers drive: the LRs it runs with."""
        if self.max_steps is not None and self.updates >= self.max_steps:
            self.stopped = True
            raise MaxStepsReached(f"--max-steps {self.max_steps}: stopped before optimizer step {self.updates + 1}")
        self.updates += 1
        for record in records:
            if record.released_at is not None:
                record.steps_after_release += 1
                continue
            if not record.settled:
                self._guarded(record, settle, record)
            if record.stopped is not None:
                continue
            groups = record.optimizer.param_groups
            field = record.field
            try:
                if len(groups) == 1:
                    record.values.append(float(groups[0][field]))
                elif len(groups) == len(record.init_lrs):
                    record.values.extend([float(group[field]) for group in groups])
                else:
                    record.stopped = report.groups_changed(len(record.init_lrs), len(groups), record.steps)
                    continue
            except Exception as error:  # noqa: BLE001 (never the script's failure)
                del record.values[record.steps * len(record.init_lrs):]
                record.stopped = report.lrs_unreadable(record.steps, error)
                continue
            record.steps += 1

    # -- DataLoader passes ------------------------------------------------------------------------

    def _loader_pass(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        iterator = wrapped(*args, **kwargs)
        number = next(self._passes)
        try:
            iterator._timm_sched_fix_audit_pass = number
        except AttributeError:  # an iterator type without attributes: its end is not seen
            pass
        self._loader_event("start", number)
        return iterator

    def _loader_next(self, wrapped: Any, instance: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except StopIteration:
            number = getattr(instance, "_timm_sched_fix_audit_pass", None)
            if number is not None:
                self._loader_event("end", number)
            raise

    def _loader_event(self, kind: str, number: int) -> None:
        for record in self._live:
            record.loader_events.append((kind, number, record.steps))

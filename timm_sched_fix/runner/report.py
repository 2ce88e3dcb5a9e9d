"""``timm-sched-fix run --report`` and ``TIMM_SCHED_FIX_REPORT=1``: at exit, every process in which ``patch()``
fixed at least one scheduler says so on stderr, in one block named by the process's rank: each scheduler it
fixed, the LR its optimizer's first step ran with, and in which param groups stock timm's first step would have
run with another.

Stock timm's first step runs with what the scheduler's constructor left in the param groups, as nothing else of
timm writes them before a scheduler call; a call with an index before the first step applies the same value in
stock timm and under the fix. What the first step ran with is read by a one-shot optimizer step post-hook, so
after every pre-hook (auto mode's included). Schedulers fixed by ``wrap()`` or the drop-in classes are not
reported: they are fixed by the script's own code.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from timm_sched_fix import _patching as patching
from timm_sched_fix.options import Options

_lock = threading.Lock()
_at_exit: Report | None = None


class Report:
    """What ``patch()`` fixes while this report observes it (see ``patching.observe_constructions``)."""

    def __init__(self) -> None:
        self._records: list[_Record] = []
        self._errors: list[tuple[int, str]] = []  # (pid of the process that built the scheduler, line)

    def observe(self, scheduler: Any, options: Options) -> None:
        """patch()'s observer: runs right after timm's constructor, before the fix pre-advances the scheduler. A
        report must not break the script: what goes wrong here is said in the report instead."""
        try:
            record = _record(scheduler, options)
        except Exception as error:  # noqa: BLE001 - any error, said in the report
            with _lock:
                self._errors.append((os.getpid(),
                                     f"{type(scheduler).__qualname__}: not recorded ({type(error).__name__}: {error})"))
        else:
            with _lock:
                self._records.append(record)

    def lines(self) -> list[str]:
        """The report so far: empty while ``patch()`` has fixed no scheduler in this process (a forked child
        reports the schedulers it built itself, not its parent's)."""
        pid = os.getpid()
        with _lock:
            records = [record for record in self._records if record.pid == pid]
            errors = [error for owner, error in self._errors if owner == pid]
        if not records and not errors:
            return []
        process = next((record.process for record in records if record.process), None) or _process_label()
        count = len(records) + len(errors)
        header = (f"timm-sched-fix report, {process} (pid {os.getpid()}): patch() fixed {count} "
                  f"scheduler{'s' if count != 1 else ''}")
        return [header, *(f"  {record.line()}" for record in records), *(f"  {error}" for error in errors)]

    def print(self) -> None:
        """Write the report on stderr in one write (ranks sharing a pipe do not interleave), if there is one."""
        lines = self.lines()
        if lines:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()


def enable() -> None:
    """Report, at this process's exit, the schedulers ``patch()`` fixes in it from now on (idempotent)."""
    global _at_exit
    with _lock:
        if _at_exit is not None:
            return
        _at_exit = Report()
    patching.observe_constructions(_at_exit.observe)
    atexit.register(_at_exit.print)


@contextlib.contextmanager
def reporting() -> Iterator[Report]:
    """Report the schedulers ``patch()`` fixes during the block, at its end (``timm-sched-fix run --report``)."""
    report = Report()
    previous = patching.observe_constructions(report.observe)
    try:
        yield report
    finally:
        patching.observe_constructions(previous)
        report.print()


class _Record:
    """One fixed scheduler: what stock timm's constructor left in its param groups, what its first step ran with."""

    __slots__ = ("called_first", "first", "name", "optimizer", "options", "per_epoch", "pid", "process", "stock")

    def __init__(self, scheduler: Any, options: Options, stock: list[float]) -> None:
        from timm_sched_fix._compat import is_epoch_schedule

        self.name = type(scheduler).__qualname__
        self.per_epoch = is_epoch_schedule(scheduler)
        self.options = options
        self.optimizer = type(scheduler.optimizer).__qualname__
        self.stock = stock
        self.first: list[float] | None = None  # None until the first optimizer step
        self.called_first = False  # a scheduler call came before the first optimizer step
        self.process: str | None = None  # _process_label() at the first optimizer step
        self.pid = os.getpid()  # the process that built the scheduler, whose report it belongs to

    def line(self) -> str:
        options = self.options
        what = (f"{self.name} (per {'epoch' if self.per_epoch else 'update'}, convention={options.convention!r}, "
                f"auto={options.auto}, on_lag={options.on_lag!r}) on {self.optimizer}")
        if self.first is None:
            return f"{what}: no optimizer step ran"
        ran = f"{what}: first optimizer step ran with lr {_lrs(self.first)}"
        if self.called_first:
            return f"{ran}, applied by a scheduler call before it (stock timm applies the same index)"
        differing = [index for index, (fixed, stock) in enumerate(zip(self.first, self.stock)) if fixed != stock]
        if not differing:
            return f"{ran}, the same as stock timm"
        groups = "group" if len(differing) == 1 else "groups"
        return f"{ran}; stock timm: {_lrs(self.stock)} (differs in {groups} {', '.join(map(str, differing))})"


def _record(scheduler: Any, options: Options) -> _Record:
    field = scheduler.param_group_field
    groups = scheduler.optimizer.param_groups
    record = _Record(scheduler, options, [float(group[field]) for group in groups])
    scheduler_ref = weakref.ref(scheduler)

    def after_first_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        from timm_sched_fix._timing import timing_of

        handle.remove()
        record.first = [float(group[field]) for group in optimizer.param_groups]
        scheduler = scheduler_ref()
        timing = timing_of(scheduler) if scheduler is not None else None
        record.called_first = timing is not None and timing.called
        record.process = _process_label()

    handle = scheduler.optimizer.register_step_post_hook(after_first_step)
    return record


def _lrs(values: list[float]) -> str:
    return repr(values[0]) if len(values) == 1 else repr(values)


def _process_label() -> str:
    """The process's rank as the launcher or torch.distributed knows it, else its multiprocessing name."""
    for name, label in (("RANK", "rank"), ("LOCAL_RANK", "local rank")):
        if os.environ.get(name, "").strip():
            return f"{label} {os.environ[name].strip()}"
    distributed = sys.modules.get("torch.distributed")
    if distributed is not None and distributed.is_available() and distributed.is_initialized():
        return f"rank {distributed.get_rank()}"
    multiprocessing = sys.modules.get("multiprocessing")
    name = multiprocessing.current_process().name if multiprocessing is not None else "MainProcess"
    return "main process" if name == "MainProcess" else name

"""The computing half of ``timm-sched-fix trace``: the LR every optimizer step runs with, stock and fixed,
and its table, CSV and JSON forms (see ``trace`` for the method)."""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import math
import operator
import sys
import time
import warnings
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import timm.scheduler
import torch

import timm_sched_fix
from timm_sched_fix import _compat as compat
from timm_sched_fix._overrides import stock_method
from timm_sched_fix._tolerance import REL_TOL
from timm_sched_fix._usage import UsageError, format_table, rows_with_gaps
from timm_sched_fix.trace.settings import KNOWN_SCHEDULES, LOOPS, TRAIN_DEFAULTS

#: More table rows than this are summarised: first and last rows of each phase, and the first differing row.
MAX_ROWS = 60
EDGE_ROWS = 3


def _valid_schedules() -> list[str]:
    """The names of KNOWN_SCHEDULES the installed timm's factory builds a scheduler for."""
    valid = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in KNOWN_SCHEDULES:
            settings = argparse.Namespace(**dict(TRAIN_DEFAULTS, sched=name, lr=0.1, epochs=10, warmup_epochs=1,
                                                 decay_epochs=2, decay_milestones=[2, 4]))
            try:
                scheduler, _ = _create(settings, _optimizer(0.1), fixed=False, updates_per_epoch=1, options={})
            except (ValueError, AssertionError, TypeError, KeyError):
                continue
            if scheduler is not None:
                valid.append(name)
    return valid


def refuse_unknown_schedule(name: str) -> None:
    """Raise ``UsageError`` listing the installed timm's scheduler names unless ``name`` is one of them."""
    valid = _valid_schedules()
    if name not in valid:
        raise UsageError(f"--sched {name!r} is not a scheduler of timm {timm.__version__}; valid: {', '.join(valid)}")


# -- building the schedulers ----------------------------------------------------------------------

def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _create(settings: argparse.Namespace, optimizer: torch.optim.Optimizer, *, fixed: bool, updates_per_epoch: int,
            options: dict) -> tuple[Any, int]:
    """timm's own factory (``scheduler_kwargs`` + ``create_scheduler_v2`` where it exists), stock or fixed.

    The stock factory runs under ``compat.for_installed_torch`` (quirk ``plateau_verbose``), without which
    timm 0.4.12 - 1.0.15 cannot build a PlateauLRScheduler on torch 2.14; it changes no schedule value.
    """
    to_kwargs = getattr(getattr(timm.scheduler, "scheduler_factory", None), "scheduler_kwargs", None)
    if to_kwargs is not None and hasattr(timm.scheduler, "create_scheduler_v2"):
        create = timm_sched_fix.create_scheduler_v2 if fixed else compat.for_installed_torch(
            timm.scheduler.create_scheduler_v2)
        return create(optimizer, **to_kwargs(settings), updates_per_epoch=updates_per_epoch, **options)
    if settings.sched_on_updates:
        raise UsageError(f"--sched-on-updates needs timm >= 0.9 (create_scheduler_v2); installed: {timm.__version__}")
    if not hasattr(timm.scheduler, "create_scheduler"):
        raise UsageError(f"timm {timm.__version__} has neither create_scheduler_v2 nor create_scheduler")
    create = timm_sched_fix.create_scheduler if fixed else compat.for_installed_torch(timm.scheduler.create_scheduler)
    return create(settings, optimizer, **options)


def stock_compat_fixes(scheduler: Any) -> list[str]:
    """The compat quirks the stock column needs to run at all on the installed timm and torch (PlateauLRScheduler
    of timm 0.4.12 - 1.0.15): it cannot be built on torch 2.14, nor stepped without an eval metric past warmup."""
    if not compat.is_plateau(scheduler):
        return []
    return [name for name, applies in (("plateau_verbose", compat.PLATEAU_PASSES_VERBOSE),
                                       ("plateau_step_without_metric", compat.PLATEAU_STEP_PASSES_NONE_METRIC))
            if applies]


@dataclass
class Trace:
    """The LR every optimizer step runs with; ``*_t`` is the schedule index applied, -1 = the constructor's."""

    settings: argparse.Namespace
    loop: str
    on_epochs: bool
    epochs: int
    updates_per_epoch: int
    stock_t: torch.Tensor
    fixed_t: torch.Tensor
    stock_lr: torch.Tensor
    fixed_lr: torch.Tensor
    stock_compat_fixes: list[str]

    @property
    def timm_version(self) -> str:
        return timm.__version__

    @property
    def steps(self) -> int:
        return len(self.stock_lr)

    @functools.cached_property
    def differs(self) -> torch.Tensor:
        """Per step: stock and fixed LR differ (computed once: the summary, table and plot all read it)."""
        return ~torch.isclose(self.stock_lr, self.fixed_lr, rtol=REL_TOL, atol=0.0)

    def phase_of_epoch(self, epoch: int) -> str:
        if epoch < self.settings.warmup_epochs:
            return "warmup"
        if epoch >= self.epochs - self.settings.cooldown_epochs:
            return "cooldown"
        return "schedule"


def step_indices(loop: str, on_epochs: bool, epochs: int, updates_per_epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every optimizer step k: the index t it runs with under stock timm and under the fix (-1 = the
    value the stock constructor left). An epoch schedule's t is the epoch, an update schedule's the step."""
    steps = torch.arange(epochs * updates_per_epoch)
    current = steps // updates_per_epoch if on_epochs else steps
    if loop == "timm":  # the first call comes after the first period, with the index of the next one
        stock = torch.where(current == 0, torch.full_like(current, -1), current)
    elif loop == "enumerate" or (loop == "lightning" and on_epochs):  # the index of the period just done
        stock = current - 1
    elif loop == "lightning":  # step(epoch=...) on a per-update schedule: stock timm ignores it
        stock = torch.full_like(current, -1)
    else:
        raise ValueError(f"unknown loop {loop!r}")
    if loop != "timm" and on_epochs and updates_per_epoch < 2:
        return stock, stock.clamp(min=0)  # one-step epochs: a lag cannot be told from update counts, applied as given
    return stock, current


class Progress:
    """A one-line progress display on stderr, only on a terminal and only once the work takes over a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.started = time.monotonic()
        self.shown = False
        self.percent = -1
        self.enabled = sys.stderr.isatty()

    def update(self, done: int) -> None:
        """Looks at the clock on every call (call it per chunk of work), redraws per percent."""
        if not self.enabled:
            return
        percent = 100 * done // self.total
        if percent != self.percent and (self.shown or time.monotonic() - self.started > 1.0):
            self.shown, self.percent = True, percent
            sys.stderr.write(f"\r{self.label}: {percent:3d}% ({done:,} of {self.total:,})")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


#: Schedule values computed between two progress updates.
CHUNK = 1 << 16


def schedule_values(scheduler: Any, optimizer: torch.optim.Optimizer, last_t: int) -> torch.Tensor:
    """v(0..last_t) of an update schedule (float64): what the stock scheduler's own ``step_update(t)`` writes
    to param group 0.

    A class that keeps timm's base ``step_update`` gives the same values, noise included, from its own schedule
    function without the param-group writes (``compat.update_schedule_values``); any other class, or a group
    with an ``lr_scale``, gets one stock call per t.
    """
    group = optimizer.param_groups[0]
    values_at = compat.update_schedule_values(scheduler, stock_method(type(scheduler), "step_update"))
    if values_at is not None and "lr_scale" not in group:
        first = operator.itemgetter(0)

        def compute(ts: range) -> Iterator[float]:
            return map(first, map(values_at, ts))
    else:
        call = scheduler.step_update

        def stock_value(t: int) -> float:
            call(t)
            return group["lr"]

        def compute(ts: range) -> Iterator[float]:
            return map(stock_value, ts)
    values = array("d")
    progress = Progress(last_t + 1, "computing the schedule")
    for start in range(0, last_t + 1, CHUNK):
        values.extend(compute(range(start, min(start + CHUNK, last_t + 1))))
        progress.update(len(values))
    progress.close()
    return torch.frombuffer(values, dtype=torch.float64).clone()


def epoch_run(step: Callable[[int], None], optimizer: torch.optim.Optimizer, loop: str, epochs: int,
              updates_per_epoch: int) -> torch.Tensor:
    """The LR each epoch of an epoch schedule runs with: a real loop with up to two optimizer steps per epoch.

    Within an epoch an epoch schedule's LR does not change and ``step_update`` does nothing, so the epoch's
    first recorded step stands for it; a second step shows the fixed scheduler an epoch of several optimizer
    steps, as the real loop does (its lag rule tells a lag of one-step epochs from none only in a longer run).
    Run for real because PlateauLRScheduler keeps state between calls. ``step`` is the scheduler's ``step(epoch)``.
    """
    seen = array("d")
    handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(float(opt.param_groups[0]["lr"])))
    steps = min(updates_per_epoch, 2)
    try:
        for epoch in range(epochs):
            for _ in range(steps):
                optimizer.step()
            step(epoch + 1 if loop == "timm" else epoch)
    finally:
        handle.remove()
    return torch.tensor(seen[::steps], dtype=torch.float64)


@contextlib.contextmanager
def _stock_failure_is_a_usage_error() -> Iterator[None]:
    """Stock timm failing while it steps (timm 0.5.4's factory gives MultiStepLRScheduler the one number of
    --decay-epochs as its milestones) is one line naming the error: a training loop would stop there too."""
    try:
        yield
    except (ValueError, AssertionError, TypeError, KeyError) as error:
        raise UsageError(f"stock timm {timm.__version__} fails while stepping the scheduler built from these "
                         f"settings ({type(error).__name__}: {error}); a training loop would stop there too") from None


def compute_trace(settings: argparse.Namespace, loop: str, updates_per_epoch: int) -> Trace:
    """Stock and fixed LR for every optimizer step of the run ``settings`` describe."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PlateauLRScheduler's deprecation, once per build
        stock_optimizer, fixed_optimizer = _optimizer(settings.lr), _optimizer(settings.lr)
        try:
            stock, epochs = _create(settings, stock_optimizer, fixed=False, updates_per_epoch=updates_per_epoch,
                                    options={})
            fixed, _ = _create(settings, fixed_optimizer, fixed=True, updates_per_epoch=updates_per_epoch,
                               options=LOOPS[loop].fixed_options)
        except UsageError:
            raise
        except (ValueError, AssertionError, TypeError, KeyError) as error:
            if settings.sched not in KNOWN_SCHEDULES:
                refuse_unknown_schedule(settings.sched)
            raise UsageError(
                f"timm {timm.__version__} could not build the scheduler from these settings: {error}"
            ) from None
    if stock is None:
        refuse_unknown_schedule(settings.sched)
        raise UsageError(f"timm {timm.__version__} built no scheduler for --sched {settings.sched!r}")
    on_epochs = compat.is_epoch_schedule(stock)
    stock_t, fixed_t = step_indices(loop, on_epochs, epochs, updates_per_epoch)
    if on_epochs:
        with _stock_failure_is_a_usage_error():
            stock_lr = epoch_run(compat.stock_epoch_step(stock), stock_optimizer, loop, epochs,
                                 updates_per_epoch).repeat_interleave(updates_per_epoch)
        fixed_lr = epoch_run(fixed.step, fixed_optimizer, loop, epochs, updates_per_epoch).repeat_interleave(
            updates_per_epoch)
    else:
        # Update schedules are pure functions of t (noise is seeded by t): v(t) once per t, then the index
        # mapping. For t >= 1 the fix writes that same v(t); its v(0) is its own pre-advance, read from the
        # fixed scheduler.
        constructor_value = float(stock_optimizer.param_groups[0]["lr"])
        fixed_first = float(fixed_optimizer.param_groups[0]["lr"])
        with _stock_failure_is_a_usage_error():
            values = schedule_values(stock, stock_optimizer, epochs * updates_per_epoch - 1)
        stock_table = torch.cat([torch.tensor([constructor_value], dtype=torch.float64), values])
        fixed_table = torch.cat([torch.tensor([math.nan, fixed_first], dtype=torch.float64), values[1:]])
        stock_lr, fixed_lr = stock_table[stock_t + 1], fixed_table[fixed_t + 1]
    return Trace(settings, loop, on_epochs, epochs, updates_per_epoch, stock_t, fixed_t, stock_lr, fixed_lr,
                 stock_compat_fixes(stock))


# -- output -------------------------------------------------------------------------------------

def summary_line(trace: Trace) -> str:
    differs = trace.differs
    count = int(differs.sum())
    if not count:
        return f"0 of {trace.steps:,} optimizer steps differ"
    first = int(differs.nonzero()[0, 0])
    return (f"{count:,} of {trace.steps:,} optimizer steps differ, first at step {first} "
            f"(epoch {first // trace.updates_per_epoch})")


def _t_cell(t: int) -> str:
    return "init" if t < 0 else str(t)


def table_lines(trace: Trace, per_update: bool) -> list[str]:
    """Rows per epoch (or per step); long tables keep the first and last rows of each phase and the first
    differing one."""
    differs = trace.differs
    per_row = trace.updates_per_epoch if not per_update else 1
    rows_total = trace.steps // per_row
    row_differs = differs.view(rows_total, per_row).sum(dim=1)
    if rows_total <= MAX_ROWS:
        selected = list(range(rows_total))
    else:
        selected = []
        for start, stop in _phase_ranges(trace, per_row):
            selected += list(range(start, min(stop, start + EDGE_ROWS)))
            selected += list(range(max(start, stop - EDGE_ROWS), stop))
            hits = row_differs[start:stop].nonzero()
            if len(hits):
                selected.append(start + int(hits[0, 0]))
        selected = sorted(set(selected))
    if per_update:
        header = ["step", "epoch", "phase", "stock t", "stock LR", "fixed t", "fixed LR", "differs"]
    else:
        header = ["epoch", "steps", "phase", "stock t", "stock LR", "fixed t", "fixed LR", "differing steps"]

    def cells_of(row: int) -> list[str]:
        k = row * per_row
        epoch = k // trace.updates_per_epoch
        first = [str(k), str(epoch)] if per_update else [str(epoch), f"{k}-{k + per_row - 1}"]
        mark = ("*" if row_differs[row] else "") if per_update else (f"{int(row_differs[row]):,}" if row_differs[row]
                                                                      else "")
        return first + [trace.phase_of_epoch(epoch), _t_cell(int(trace.stock_t[k])), f"{float(trace.stock_lr[k]):.8g}",
                         _t_cell(int(trace.fixed_t[k])), f"{float(trace.fixed_lr[k]):.8g}", mark]

    return format_table(header, rows_with_gaps(selected, cells_of))


def _phase_ranges(trace: Trace, per_row: int) -> list[tuple[int, int]]:
    """Row ranges of consecutive epochs in the same phase."""
    ranges: list[tuple[int, int]] = []
    start_epoch = 0
    for epoch in range(1, trace.epochs + 1):
        if epoch == trace.epochs or trace.phase_of_epoch(epoch) != trace.phase_of_epoch(start_epoch):
            rows_per_epoch = trace.updates_per_epoch // per_row
            ranges.append((start_epoch * rows_per_epoch, epoch * rows_per_epoch))
            start_epoch = epoch
    return ranges


def write_out(trace: Trace, path: str) -> None:
    """The full trace, one record per optimizer step (CSV), or column lists (JSON)."""
    steps = torch.arange(trace.steps)
    columns = {
        "step": steps.tolist(),
        "epoch": (steps // trace.updates_per_epoch).tolist(),
        "stock_t": trace.stock_t.tolist(),
        "stock_lr": trace.stock_lr.tolist(),
        "fixed_t": trace.fixed_t.tolist(),
        "fixed_lr": trace.fixed_lr.tolist(),
        "differs": trace.differs.tolist(),
    }
    suffix = Path(path).suffix.lower()
    try:
        with open(path, "w", newline="") as stream:
            if suffix == ".csv":
                writer = csv.writer(stream)
                writer.writerow(columns)
                writer.writerows(zip(*columns.values()))
            else:
                json.dump({"timm": timm.__version__, "torch": torch.__version__, "loop": trace.loop,
                           "on_epochs": trace.on_epochs, "epochs": trace.epochs,
                           "updates_per_epoch": trace.updates_per_epoch, "summary": summary_line(trace),
                           "stock_compat_fixes": trace.stock_compat_fixes,
                           "settings": vars(trace.settings), "t_init_means": "-1 = the value the constructor left",
                           "steps": columns}, stream, default=str)
    except OSError as error:
        raise UsageError(f"--out {path}: cannot write it ({error.strerror})") from None

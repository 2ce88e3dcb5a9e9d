"""Shared test harness: real optimizers, real timm classes, and the LR each optimizer step ran with.

The single source of truth for timing is :class:`StepRecorder`, an ``optimizer.register_step_pre_hook``
registered *after* the scheduler (so after any auto-mode hook): it sees exactly what the step uses.
The reference v(t) comes from a separate stock timm scheduler driven with ``step(t)``/``step_update(t)``.
"""

from __future__ import annotations

import contextlib
import os
import site
import socket
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import timm.scheduler
import torch
from timm.scheduler.scheduler import Scheduler

import timm_sched_fix
from timm_sched_fix import _compat as compat

#: This folder: the tests' helper modules, and the workers and scripts the tests start by path.
HELPERS = Path(__file__).resolve().parent
BASE_LR = 0.1
LR_SCALES = (1.0, 0.5, 0.25)
ADAPTERS = ("patch", "wrap", "dropin")


def make_optimizer(groups: int = 1, lr: float = BASE_LR, tensor_lr: bool = False) -> torch.optim.Optimizer:
    """SGD over tiny parameters; with several groups, each has an ``lr_scale`` as in layer-wise decay."""
    param_groups = []
    for i in range(groups):
        group: dict[str, Any] = {"params": [torch.nn.Parameter(torch.zeros(2))]}
        if groups > 1:
            group["lr_scale"] = LR_SCALES[i % len(LR_SCALES)]
        param_groups.append(group)
    optimizer = torch.optim.SGD(param_groups, lr=torch.tensor(lr) if tensor_lr else lr)
    return optimizer


class StepRecorder:
    """Records, for every optimizer step, the LR of each param group at the moment the step runs."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps: list[list[float]] = []
        self._handle = optimizer.register_step_pre_hook(self._record)

    def _record(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.steps.append([float(group["lr"]) for group in optimizer.param_groups])

    def first_group(self) -> list[float]:
        return [lrs[0] for lrs in self.steps]


def group_lrs(optimizer: torch.optim.Optimizer) -> list[float]:
    return [float(group["lr"]) for group in optimizer.param_groups]


# -- scheduler configurations valid on every supported timm -------------------------------------

def scheduler_configs(periods: int) -> dict[str, dict[str, Any]]:
    """Constructor kwargs per class name, with warmup (and noise for one) so that timing matters."""
    return {
        "CosineLRScheduler": dict(t_initial=periods, lr_min=1e-4, warmup_t=2, warmup_lr_init=1e-3,
                                  noise_range_t=(periods // 2, periods)),
        "TanhLRScheduler": dict(t_initial=periods, lr_min=1e-4, warmup_t=2, warmup_lr_init=1e-3),
        "StepLRScheduler": dict(decay_t=2, decay_rate=0.5, warmup_t=1, warmup_lr_init=1e-3),
        "MultiStepLRScheduler": dict(decay_t=[1, 3], decay_rate=0.5),
        "PolyLRScheduler": dict(t_initial=periods, power=2.0, warmup_t=2, warmup_lr_init=1e-3),
        "WSDLRScheduler": dict(t_initial=periods, decay_t=max(1, periods // 2), warmup_t=2, warmup_lr_init=1e-3),
        "PlateauLRScheduler": dict(warmup_t=2, warmup_lr_init=1e-3, mode="min"),
    }


def installed_classes() -> list[str]:
    """Class names of the installed timm with a test configuration (all of them, or the suite fails)."""
    names = sorted(name for name, value in vars(timm.scheduler).items()
                   if isinstance(value, type) and issubclass(value, Scheduler) and value is not Scheduler)
    unknown = set(names) - set(scheduler_configs(4))
    assert not unknown, f"timm has scheduler classes without a test configuration: {unknown}"
    return names


def stock_kwargs(name: str, periods: int, on_epochs: bool) -> dict[str, Any]:
    kwargs = dict(scheduler_configs(periods)[name])
    if name != "PlateauLRScheduler":
        kwargs["t_in_epochs"] = on_epochs
    return kwargs


def stock_scheduler(name: str, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any]) -> Scheduler:
    """A stock timm scheduler. timm 0.4.12 - 1.0.15 cannot construct PlateauLRScheduler on this torch
    (quirk ``plateau_verbose``), so its constructor runs under that one compat fix, nothing else."""
    return compat.for_installed_torch(getattr(timm.scheduler, name))(optimizer, **kwargs)


#: torch's warning when PlateauLRScheduler of timm <= 1.0.15 passes ``verbose`` (torch deprecated it before removing it,
#: e.g. torch 2.4): stock timm's, not the fix's, so tests that allow no warning let this one through.
TORCH_VERBOSE_DEPRECATION = "The verbose parameter is deprecated"

#: The metric the stock PlateauLRScheduler gets in references: constant, so with the default patience the
#: LR never drops, exactly as in a run without metrics (timm <= 1.0.15 cannot step without one).
PLATEAU_REFERENCE_METRIC = 1.0


def reference_values(name: str, kwargs: dict[str, Any], groups: int, periods: int, on_epochs: bool) -> list[list[float]]:
    """v(0..periods) per group, from a stock scheduler driven with step(t) or step_update(t) in order.

    PlateauLRScheduler without warmup is the one case where v(0) is not what stock ``step(0)`` writes
    (see compat.stock_writer); every configuration here has warmup, so no exception is needed.
    """
    optimizer = make_optimizer(groups)
    stock = stock_scheduler(name, optimizer, kwargs)
    metric = PLATEAU_REFERENCE_METRIC if name == "PlateauLRScheduler" else None
    values = []
    for t in range(periods + 1):
        if on_epochs:
            with warnings.catch_warnings():  # timm <= 1.0.15 passes the epoch torch deprecated
                warnings.filterwarnings("ignore", "The epoch parameter", UserWarning)
                stock.step(t, metric)
        else:
            stock.step_update(t)
        values.append(group_lrs(optimizer))
    return values


@contextlib.contextmanager
def fixed_scheduler(adapter: str, name: str, optimizer: torch.optim.Optimizer, kwargs: dict[str, Any],
                    **options: Any) -> Iterator[Scheduler]:
    """A fixed scheduler made through one adapter; the patch is removed afterwards."""
    if adapter == "patch":
        with timm_sched_fix.patched(**options):
            yield getattr(timm.scheduler, name)(optimizer, **kwargs)
    elif adapter == "wrap":
        yield timm_sched_fix.wrap(stock_scheduler(name, optimizer, kwargs), **options)
    elif adapter == "dropin":
        yield getattr(timm_sched_fix, name)(optimizer, **kwargs, **options)
    else:
        raise ValueError(adapter)


def run_loop(scheduler: Scheduler, optimizer: torch.optim.Optimizer, *, epochs: int, batches: int,
             on_epochs: bool, convention: str, drive: str, metric: Callable[[int], Any] = lambda e: None) -> None:
    """A training loop that calls the scheduler the way ``convention`` and ``drive`` say.

    drive: "explicit" passes indices, "counting" passes none, "auto" makes no update calls at all
    (epoch schedules still get explicit epoch calls: auto mode only drives update schedules).
    """
    explicit = drive in ("explicit", "auto")
    update = 0
    for epoch in range(epochs):
        if on_epochs and convention == "begin":
            scheduler.step(epoch, metric(epoch)) if explicit else scheduler.step(metric=metric(epoch))
        for _ in range(batches):
            if not on_epochs and convention == "begin" and drive != "auto":
                scheduler.step_update(update) if explicit else scheduler.step_update()
            optimizer.step()
            update += 1
            if not on_epochs and convention == "end" and drive != "auto":
                scheduler.step_update(update) if explicit else scheduler.step_update()
        if on_epochs and convention == "end":
            scheduler.step(epoch + 1, metric(epoch)) if explicit else scheduler.step(metric=metric(epoch))


def expected_trace(values: list[list[float]], *, epochs: int, batches: int, on_epochs: bool) -> list[list[float]]:
    """Correct: update step k runs with v(k); every step of epoch e runs with v(e)."""
    return [values[epoch if on_epochs else epoch * batches + batch]
            for epoch in range(epochs) for batch in range(batches)]


def assert_trace(actual: list[list[float]], expected: list[list[float]]) -> None:
    """Exact comparison (the fix calls the same stock code), with the first differing step named."""
    assert len(actual) == len(expected), f"{len(actual)} optimizer steps recorded, expected {len(expected)}"
    for k, (got, want) in enumerate(zip(actual, expected)):
        assert got == pytest.approx(want, rel=1e-12, abs=0), f"optimizer step {k}: ran with {got}, schedule says {want}"


@contextlib.contextmanager
def no_warnings_from_fix() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", timm_sched_fix.ScheduleLagWarning)
        warnings.simplefilter("error", timm_sched_fix.ScheduleCallWarning)
        yield



# -- worker subprocesses (crash/resume, distributed) ----------------------------------------------

_WORKER_IMPORTS = "TIMM_SCHED_FIX_TEST_IMPORTS"


def _imported_files() -> str:
    return os.pathsep.join(str(Path(module.__file__).resolve()) for module in (timm, timm_sched_fix))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for a gloo rendezvous)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def site_package_dirs() -> set[Path]:
    """The environment's own package directories (a subprocess has them on sys.path anyway)."""
    return {Path(path).resolve() for path in [*site.getsitepackages(), site.getusersitepackages()]}


def worker_environment() -> dict[str, str]:
    """The environment for a worker subprocess: PYTHONPATH leads with tests/helpers/ and the directories this process
    imported timm and timm_sched_fix from (unless they are site-packages, which the worker has anyway), so the
    worker runs the same releases however they got onto this process's sys.path (a ``--target`` timm, a
    worktree's package found through the current directory)."""
    found = [Path(module.__file__).resolve().parent.parent for module in (timm_sched_fix, timm)]
    inherited = [Path(path).resolve() for path in os.environ.get("PYTHONPATH", "").split(os.pathsep) if path]
    paths = [HELPERS, *(path for path in found if path not in site_package_dirs()), *inherited]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, dict.fromkeys(paths))),
            _WORKER_IMPORTS: _imported_files()}


def check_worker_imports() -> None:
    """In a worker subprocess: refuse to run on another timm or timm_sched_fix than the test process's."""
    expected = os.environ.get(_WORKER_IMPORTS)
    if expected is None:
        raise RuntimeError(f"{_WORKER_IMPORTS} is not set: start workers with support.worker_environment()")
    if expected != _imported_files():
        raise RuntimeError(f"the worker imported {_imported_files()}, the test process {expected}")

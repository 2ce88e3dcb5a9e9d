"""Regression aid: record the LR every optimizer step runs with under a scheduler config, and compare it
with a golden JSON file, so a timm upgrade or a code change that moves the schedule fails a test.

``record_lr_trace`` drives the scheduler the way timm's train.py does (``step_update(num_updates)`` after
every optimizer step, ``step(epoch + 1, metric)`` after every epoch) on a throwaway SGD optimizer, and
records each step's LRs with ``optimizer.register_step_pre_hook``. In pytest use the ``lr_trace_golden``
fixture of the plugin; elsewhere ``GoldenTraces(directory).check(...)``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from timm_sched_fix._tolerance import GOLDEN_REL_TOL, close
from timm_sched_fix.exceptions import GoldenTraceMismatch

#: How a config is given: ``create_scheduler_v2`` keyword arguments, or a function building the
#: scheduler (or timm's ``(scheduler, num_epochs)`` tuple) for the optimizer it receives.
SchedulerConfig = Mapping[str, Any] | Callable[[Any], Any]

UPDATE_HINT = "rerun with --lr-trace-update (pytest) or GoldenTraces(..., update=True) to accept the new trace"


def record_lr_trace(
    config: SchedulerConfig,
    *,
    epochs: int,
    updates_per_epoch: int = 1,
    lr: float = 0.1,
    lr_scales: Sequence[float] = (1.0,),
    metric: Callable[[int], float] | None = None,
) -> list[list[float]]:
    """The LRs (one per param group) every optimizer step of a train.py-style run ran with.

    ``lr_scales`` gives one param group per entry, with that ``lr_scale`` (layer-wise decay);
    ``metric(epoch)`` is passed to ``step`` (PlateauLRScheduler needs one).
    """
    import torch

    if not (isinstance(epochs, int) and epochs > 0 and isinstance(updates_per_epoch, int) and updates_per_epoch > 0):
        raise ValueError(f"epochs and updates_per_epoch must be positive ints, got {epochs!r}, {updates_per_epoch!r}")
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_scale": scale} for scale in lr_scales]
    optimizer = torch.optim.SGD(groups, lr=lr)
    scheduler = _build(config, optimizer)
    trace: list[list[float]] = []
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: trace.append([float(group["lr"]) for group in opt.param_groups]))
    num_updates = 0
    for epoch in range(epochs):
        value = metric(epoch) if metric is not None else None
        for _ in range(updates_per_epoch):
            optimizer.step()
            num_updates += 1
            scheduler.step_update(num_updates=num_updates, metric=value)
        scheduler.step(epoch + 1, value)
    return trace


def _build(config: SchedulerConfig, optimizer: Any) -> Any:
    if isinstance(config, Mapping):
        import timm.scheduler

        factory = getattr(timm.scheduler, "create_scheduler_v2", None)
        if factory is None:
            raise TypeError("a mapping config needs timm.scheduler.create_scheduler_v2 (timm >= 0.9); "
                            "pass a function building the scheduler instead")
        built = factory(optimizer, **config)
    elif callable(config):
        built = config(optimizer)
    else:
        raise TypeError(f"config must be create_scheduler_v2 kwargs or a callable, got {type(config).__name__}")
    scheduler = built[0] if isinstance(built, tuple) else built
    if scheduler is None or not (hasattr(scheduler, "step") and hasattr(scheduler, "step_update")):
        raise TypeError(f"config built {scheduler!r}, not a timm scheduler")
    return scheduler


def first_difference(golden: list[list[float]], actual: list[list[float]], *, updates_per_epoch: int | None = 1,
                     rel_tol: float = GOLDEN_REL_TOL) -> str | None:
    """A readable description of where two traces first differ, or None when they match (``updates_per_epoch``
    None: epochs of unknown length, steps are named without them)."""
    def where(step: int) -> str:
        if updates_per_epoch is None:
            return f"optimizer step {step}"
        return f"optimizer step {step} (epoch {step // updates_per_epoch}, update {step % updates_per_epoch})"

    for step, (want, got) in enumerate(zip(golden, actual)):
        if len(want) != len(got):
            return f"{where(step)}: golden has {len(want)} param group(s), now {len(got)}"
        for group, (w, g) in enumerate(zip(want, got)):
            if not math.isclose(w, g, rel_tol=rel_tol, abs_tol=0.0):
                differing = sum(1 for a, b in zip(golden, actual) if not close(a, b, rel_tol))
                return (f"{where(step)}, param group {group}: golden LR {w!r}, now {g!r} "
                        f"({differing} of {min(len(golden), len(actual))} steps differ)")
    if len(golden) != len(actual):
        return f"golden trace has {len(golden)} optimizer steps, now {len(actual)}"
    return None


class GoldenTraces:
    """Golden LR traces stored as ``<directory>/<name>.json``; ``update=True`` writes instead of comparing."""

    def __init__(self, directory: str | Path, *, update: bool = False, rel_tol: float = GOLDEN_REL_TOL) -> None:
        self.directory = Path(directory)
        self.update = update
        self.rel_tol = rel_tol

    def path(self, name: str) -> Path:
        if not name or Path(name).name != name or name.startswith("."):
            raise ValueError(f"golden trace name must be a plain file name, got {name!r}")
        return self.directory / f"{name}.json"

    def check(self, name: str, config: SchedulerConfig, *, epochs: int, updates_per_epoch: int = 1,
              **record_options: Any) -> list[list[float]]:
        """Record the trace of ``config`` and compare it with the golden file ``name`` (or write it)."""
        trace = record_lr_trace(config, epochs=epochs, updates_per_epoch=updates_per_epoch, **record_options)
        path = self.path(name)
        if self.update:
            self.directory.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document(trace, epochs=epochs, updates_per_epoch=updates_per_epoch), indent=1)
                            + "\n")
            return trace
        if not path.exists():
            raise GoldenTraceMismatch(f"no golden LR trace {path}; {UPDATE_HINT}")
        stored = json.loads(path.read_text())
        if (stored.get("epochs"), stored.get("updates_per_epoch")) != (epochs, updates_per_epoch):
            raise GoldenTraceMismatch(
                f"{path} was recorded with epochs={stored.get('epochs')}, updates_per_epoch="
                f"{stored.get('updates_per_epoch')}; this check uses {epochs}, {updates_per_epoch}")
        difference = first_difference(stored["lrs"], trace, updates_per_epoch=updates_per_epoch, rel_tol=self.rel_tol)
        if difference is not None:
            raise GoldenTraceMismatch(
                f"LR trace {name!r} moved against {path} (recorded with timm {stored.get('timm')}, "
                f"running timm {_timm_version()}): {difference}; {UPDATE_HINT}")
        return trace

    __call__ = check


def _timm_version() -> str:
    import timm

    return str(getattr(timm, "__version__", "unknown"))


def document(trace: list[list[float]], *, epochs: int | None, updates_per_epoch: int | None,
             **extra: Any) -> dict[str, Any]:
    """A golden file's content: the installed timm release, the run's shape and the LRs (one list of param-group
    LRs per optimizer step); ``extra`` keys are stored alongside (``timm-sched-fix audit`` keeps every scheduler's
    trace there)."""
    return {"timm": _timm_version(), "epochs": epochs, "updates_per_epoch": updates_per_epoch, "lrs": trace, **extra}

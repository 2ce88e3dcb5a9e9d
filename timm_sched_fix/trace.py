"""``timm-sched-fix trace``: the LR every optimizer step of a run uses, stock timm vs the fix.

The schedule is built by the installed timm's own factory from train.py's flags (or its args.yaml).
Epoch schedules run the real loop with one optimizer step per epoch. For update schedules, which index
t optimizer step k runs with is an integer mapping per calling pattern (``step_indices``), and v(t)
comes from the stock scheduler's own ``step_update(t)``, once per t, so long runs take seconds. Tests
check both against real training loops step by step.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
import warnings
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import timm.scheduler
import torch

import timm_sched_fix

from . import compat

#: train.py's defaults for every flag that shapes the schedule (``--lr`` None = derived from ``--lr-base``).
TRAIN_DEFAULTS: dict[str, Any] = {
    "sched": "cosine", "epochs": 300, "lr": None, "lr_base": 0.1, "lr_base_size": 256, "lr_base_scale": "",
    "batch_size": 128, "grad_accum_steps": 1, "opt": "sgd", "min_lr": 0.0, "warmup_lr": 1e-5,
    "warmup_epochs": 5, "warmup_prefix": False, "cooldown_epochs": 0, "decay_epochs": 90,
    "decay_milestones": [90, 180, 270], "decay_rate": 0.1, "patience_epochs": 10, "lr_noise": None,
    "lr_noise_pct": 0.67, "lr_noise_std": 1.0, "lr_cycle_mul": 1.0, "lr_cycle_decay": 0.5, "lr_cycle_limit": 1,
    "lr_k_decay": 1.0, "seed": 42, "sched_on_updates": False, "eval_metric": "top1",
}
#: Keys every args.yaml written by train.py has (since timm 0.4.12).
ARGS_YAML_KEYS = ("sched", "epochs", "warmup_epochs", "min_lr", "decay_rate")
#: Scheduler names any timm release knows; the installed timm's factory decides which of them it accepts.
KNOWN_SCHEDULES = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "wsd", "rsqrt", "constant")
#: More table rows than this are summarised: first and last rows of each phase, and the first differing row.
MAX_ROWS = 60
EDGE_ROWS = 3


class UsageError(Exception):
    """A mistake in the settings; reported as one line naming the flag, never as a traceback."""


@dataclass(frozen=True)
class Loop:
    description: str
    fixed_options: dict


#: Calling patterns of stock timm; the fixed scheduler gets the same calls with ``fixed_options``.
LOOPS: dict[str, Loop] = {
    "timm": Loop("train.py: step_update(num_updates) after every optimizer step, step(epoch + 1) after every epoch",
                 {}),
    "lightning": Loop("Lightning's documented override scheduler.step(epoch=self.current_epoch), after every epoch "
                      "(after every optimizer step for per-update schedules, interval='step')",
                      {"on_lag": "fix", "auto": True}),
    "enumerate": Loop("step_update(i) after optimizer step i (0-based over the run), step(epoch) after every epoch",
                      {"on_lag": "fix"}),
}


# -- the command line -------------------------------------------------------------------------------

def _flag(parser: argparse.ArgumentParser, name: str, help: str, **kwargs: Any) -> None:
    """A train.py flag; absent from the namespace unless given, so args.yaml values can fill the rest."""
    dest = name.lstrip("-").replace("-", "_")
    default = TRAIN_DEFAULTS[dest]
    parser.add_argument(name, dest=dest, default=argparse.SUPPRESS, help=f"{help} (train.py default: {default})",
                        **kwargs)


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "trace", help="the LR each optimizer step of a run uses, stock timm vs fixed, from train.py's flags",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="ARGS_YAML", help="the args.yaml train.py wrote into its output folder; "
                        "flags given here override its values")
    parser.add_argument("--updates-per-epoch", type=int, default=None, metavar="N",
                        help="optimizer steps per epoch (len(loader) // grad_accum_steps); required with "
                        "--sched-on-updates, otherwise 1")
    parser.add_argument("--loop", choices=sorted(LOOPS), default="timm",
                        help="how the stock scheduler is called: " + "; ".join(f"{k} = {v.description}"
                                                                                for k, v in LOOPS.items()))
    parser.add_argument("--per-update", action="store_true", help="one table row per optimizer step, not per epoch")
    parser.add_argument("--out", metavar="FILE.csv|FILE.json", help="write the full trace, one record per step")
    parser.add_argument("--plot", metavar="FILE.png", help="draw stock vs fixed (needs the [plot] extra)")
    group = parser.add_argument_group("train.py scheduler flags")
    _flag(group, "--sched", "scheduler name")
    _flag(group, "--epochs", "epochs to train", type=int)
    _flag(group, "--lr", "learning rate; if not given, derived from --lr-base as train.py does on one process",
          type=float)
    _flag(group, "--lr-base", "base learning rate for --lr-base-size", type=float)
    _flag(group, "--lr-base-size", "batch size of --lr-base", type=int)
    _flag(group, "--lr-base-scale", "linear or sqrt; from --opt if empty")
    _flag(group, "--batch-size", "batch size per process", type=int)
    _flag(group, "--grad-accum-steps", "gradient accumulation steps", type=int)
    _flag(group, "--opt", "optimizer name (only to pick --lr-base-scale)")
    _flag(group, "--min-lr", "lower LR bound", type=float)
    _flag(group, "--warmup-lr", "LR at the start of warmup", type=float)
    _flag(group, "--warmup-epochs", "warmup epochs", type=int)
    _flag(group, "--warmup-prefix", "warmup comes before --epochs instead of within", action="store_true")
    _flag(group, "--cooldown-epochs", "epochs at --min-lr after the schedule", type=int)
    _flag(group, "--decay-epochs", "step: decay interval in epochs", type=float)
    _flag(group, "--decay-milestones", "multistep: epochs to decay at", type=int, nargs="+")
    _flag(group, "--decay-rate", "decay factor (poly: the power)", type=float)
    _flag(group, "--patience-epochs", "plateau: patience", type=int)
    _flag(group, "--lr-noise", "noise on/off points as fractions of the schedule", type=float, nargs="+")
    _flag(group, "--lr-noise-pct", "noise limit", type=float)
    _flag(group, "--lr-noise-std", "noise std-dev", type=float)
    _flag(group, "--lr-cycle-mul", "cycle length multiplier", type=float)
    _flag(group, "--lr-cycle-decay", "LR decay per cycle", type=float)
    _flag(group, "--lr-cycle-limit", "number of cycles", type=int)
    _flag(group, "--lr-k-decay", "k-decay (cosine, poly)", type=float)
    _flag(group, "--seed", "seed (also the noise seed)", type=int)
    _flag(group, "--sched-on-updates", "step the schedule per optimizer update", action="store_true")
    _flag(group, "--eval-metric", "metric name (plateau: 'loss' in it means mode min)")


# -- settings -----------------------------------------------------------------------------------

def load_args_yaml(path: str) -> dict[str, Any]:
    """The values of a train.py args.yaml; anything else is refused with the reason."""
    try:
        import yaml
    except ImportError:
        raise UsageError("--config needs PyYAML: pip install pyyaml") from None
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise UsageError(f"--config {path}: cannot read it ({error.strerror})") from None
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise UsageError(f"--config {path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: not an args.yaml written by timm's train.py (not a mapping of flags)")
    missing = [key for key in ARGS_YAML_KEYS if key not in values]
    if missing:
        raise UsageError(f"--config {path}: not an args.yaml written by timm's train.py, it lacks "
                         f"{', '.join(missing)} (train.py writes every flag there)")
    return values


def resolve_settings(args: argparse.Namespace) -> argparse.Namespace:
    """train.py defaults, then args.yaml, then the flags given; ``lr`` derived as train.py does if unset."""
    settings = dict(TRAIN_DEFAULTS)
    if args.config:
        settings.update(load_args_yaml(args.config))
    settings.update({key: getattr(args, key) for key in TRAIN_DEFAULTS if hasattr(args, key)})
    settings["lr_derived"] = settings["lr"] is None
    if settings["lr"] is None:
        _derive_lr(settings)
    _validate(settings)
    return argparse.Namespace(**settings)


def _derive_lr(settings: dict[str, Any]) -> None:
    """train.py: lr = lr_base * (global batch / lr_base_size), square-rooted for adaptive optimizers."""
    for key in ("lr_base", "lr_base_size", "batch_size", "grad_accum_steps"):
        _require_number(settings, key, positive=True)
    ratio = settings["batch_size"] * settings["grad_accum_steps"] / settings["lr_base_size"]
    scale = settings["lr_base_scale"] or ("sqrt" if any(o in str(settings["opt"]).lower() for o in ("ada", "lamb"))
                                          else "linear")
    settings["lr"] = settings["lr_base"] * (math.sqrt(ratio) if scale == "sqrt" else ratio)


def _flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def _require_number(settings: dict[str, Any], key: str, *, positive: bool = False, integer: bool = False) -> None:
    value = settings[key]
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        raise UsageError(f"{_flag_name(key)} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise UsageError(f"{_flag_name(key)} must be {'positive' if positive else 'zero or more'}, got {value!r}")


def _validate(settings: dict[str, Any]) -> None:
    """Impossible settings, each named by its flag and the reason."""
    _require_number(settings, "epochs", positive=True, integer=True)
    _require_number(settings, "lr", positive=True)
    for key in ("min_lr", "warmup_lr", "decay_rate", "lr_noise_pct", "lr_noise_std", "lr_cycle_mul",
                "lr_cycle_decay", "lr_k_decay"):
        _require_number(settings, key)
    for key in ("warmup_epochs", "cooldown_epochs", "lr_cycle_limit", "patience_epochs", "seed"):
        _require_number(settings, key, integer=True)
    _require_number(settings, "decay_epochs", positive=True)
    if not settings["warmup_prefix"] and settings["warmup_epochs"] >= settings["epochs"] > 0 \
            and settings["warmup_epochs"]:
        raise UsageError(f"--warmup-epochs {settings['warmup_epochs']} is not shorter than --epochs "
                         f"{settings['epochs']}: the run would end inside warmup (add --warmup-prefix to put "
                         "warmup before the schedule)")
    milestones = settings["decay_milestones"]
    if not isinstance(milestones, (list, tuple)) or not all(type(m) is int for m in milestones):
        raise UsageError(f"--decay-milestones must be a list of epochs, got {milestones!r}")
    if any(m < 0 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
        raise UsageError(f"--decay-milestones must be increasing epochs, zero or more, got {list(milestones)}")
    noise = settings["lr_noise"]
    if noise is not None:
        points = noise if isinstance(noise, (list, tuple)) else [noise]
        if not 1 <= len(points) <= 2 or not all(isinstance(p, (int, float)) and p >= 0 for p in points):
            raise UsageError(f"--lr-noise takes one or two fractions of the schedule (on, off), got {noise!r}")
        if len(points) == 2 and points[1] <= points[0]:
            raise UsageError(f"--lr-noise: the off point must come after the on point, got {list(points)}")


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


def _refuse_unknown_schedule(name: str) -> None:
    valid = _valid_schedules()
    if name not in valid:
        raise UsageError(f"--sched {name!r} is not a scheduler of timm {timm.__version__}; valid: {', '.join(valid)}")


# -- building the schedulers ----------------------------------------------------------------------

def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)


def _create(settings: argparse.Namespace, optimizer: torch.optim.Optimizer, *, fixed: bool, updates_per_epoch: int,
            options: dict) -> tuple[Any, int]:
    """timm's own factory (``scheduler_kwargs`` + ``create_scheduler_v2`` where it exists), stock or fixed."""
    factory_module = timm.scheduler.scheduler_factory
    to_kwargs = getattr(factory_module, "scheduler_kwargs", None)
    if to_kwargs is not None and hasattr(timm.scheduler, "create_scheduler_v2"):
        create = timm_sched_fix.create_scheduler_v2 if fixed else timm.scheduler.create_scheduler_v2
        return create(optimizer, **to_kwargs(settings), updates_per_epoch=updates_per_epoch, **options)
    if settings.sched_on_updates:
        raise UsageError(f"--sched-on-updates needs timm >= 0.9 (create_scheduler_v2); installed: {timm.__version__}")
    create = timm_sched_fix.create_scheduler if fixed else timm.scheduler.create_scheduler
    return create(settings, optimizer, **options)


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

    @property
    def steps(self) -> int:
        return len(self.stock_lr)

    @property
    def differs(self) -> torch.Tensor:
        return ~torch.isclose(self.stock_lr, self.fixed_lr, rtol=1e-12, atol=0.0)

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
    return stock, current


class Progress:
    """A one-line progress display on stderr, only on a terminal and only once the work takes over a second."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label = total, label
        self.started = time.monotonic()
        self.shown = False
        self.enabled = sys.stderr.isatty()

    def update(self, done: int) -> None:
        if self.enabled and done % 8192 == 0 and (self.shown or time.monotonic() - self.started > 1.0):
            self.shown = True
            sys.stderr.write(f"\r{self.label}: {100 * done // self.total:3d}% ({done:,} of {self.total:,})")
            sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 70 + "\r")
            sys.stderr.flush()


def schedule_values(scheduler: Any, optimizer: torch.optim.Optimizer, last_t: int) -> array:
    """v(0..last_t) of an update schedule: what the stock scheduler's own ``step_update(t)`` writes."""
    call = scheduler.step_update
    group = optimizer.param_groups[0]
    values = array("d")
    progress = Progress(last_t + 1, "computing the schedule")
    for t in range(last_t + 1):
        call(t)
        values.append(float(group["lr"]))
        progress.update(t + 1)
    progress.close()
    return values


def epoch_run(scheduler: Any, optimizer: torch.optim.Optimizer, loop: str, epochs: int) -> torch.Tensor:
    """The LR each epoch of an epoch schedule runs with: a real loop with one optimizer step per epoch.

    Within an epoch an epoch schedule's LR does not change and ``step_update`` does nothing, so one
    recorded step stands for the epoch. Run for real because PlateauLRScheduler keeps state between calls.
    """
    seen = array("d")
    handle = optimizer.register_step_pre_hook(lambda opt, args, kwargs: seen.append(float(opt.param_groups[0]["lr"])))
    try:
        for epoch in range(epochs):
            optimizer.step()
            scheduler.step(epoch + 1 if loop == "timm" else epoch)
    finally:
        handle.remove()
    return torch.tensor(seen, dtype=torch.float64)


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
            _refuse_unknown_schedule(settings.sched)
            raise UsageError(f"timm {timm.__version__} refused these settings: {error}") from None
    if stock is None:
        _refuse_unknown_schedule(settings.sched)
        raise UsageError(f"timm {timm.__version__} built no scheduler for --sched {settings.sched!r}")
    on_epochs = compat.is_epoch_schedule(stock)
    stock_t, fixed_t = step_indices(loop, on_epochs, epochs, updates_per_epoch)
    if on_epochs:
        stock_lr = epoch_run(stock, stock_optimizer, loop, epochs).repeat_interleave(updates_per_epoch)
        fixed_lr = epoch_run(fixed, fixed_optimizer, loop, epochs).repeat_interleave(updates_per_epoch)
    else:
        # Update schedules are pure functions of t (noise is seeded by t): one stock call per t, then the
        # index mapping. For t >= 1 the fix writes v(t) through that same stock call; its v(0) is its own
        # pre-advance, read from the fixed scheduler.
        constructor_value = float(stock_optimizer.param_groups[0]["lr"])
        fixed_first = float(fixed_optimizer.param_groups[0]["lr"])
        values = torch.tensor(schedule_values(stock, stock_optimizer, epochs * updates_per_epoch - 1),
                              dtype=torch.float64)
        stock_table = torch.cat([torch.tensor([constructor_value], dtype=torch.float64), values])
        fixed_table = torch.cat([torch.tensor([math.nan, fixed_first], dtype=torch.float64), values[1:]])
        stock_lr, fixed_lr = stock_table[stock_t + 1], fixed_table[fixed_t + 1]
    return Trace(settings, loop, on_epochs, epochs, updates_per_epoch, stock_t, fixed_t, stock_lr, fixed_lr)


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
    cells = []
    previous = -1
    for row in selected:
        if row - previous > 1:
            cells.append([f"... {row - previous - 1:,} rows"])
        previous = row
        k = row * per_row
        epoch = k // trace.updates_per_epoch
        first = [str(k), str(epoch)] if per_update else [str(epoch), f"{k}-{k + per_row - 1}"]
        mark = ("*" if row_differs[row] else "") if per_update else (f"{int(row_differs[row]):,}" if row_differs[row]
                                                                      else "")
        cells.append(first + [trace.phase_of_epoch(epoch), _t_cell(int(trace.stock_t[k])),
                              f"{float(trace.stock_lr[k]):.8g}", _t_cell(int(trace.fixed_t[k])),
                              f"{float(trace.fixed_lr[k]):.8g}", mark])
    full = [c for c in cells if len(c) == len(header)]
    widths = [max(len(line[i]) for line in [header, *full]) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(line, widths)) if len(line) == len(header) else line[0]
              for line in cells]
    return lines


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
                           "settings": vars(trace.settings), "t_init_means": "-1 = the value the constructor left",
                           "steps": columns}, stream)
    except OSError as error:
        raise UsageError(f"--out {path}: cannot write it ({error.strerror})") from None


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"timm-sched-fix trace: error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    for option, suffixes in (("out", (".csv", ".json")), ("plot", (".png",))):
        path = getattr(args, option)
        if path and Path(path).suffix.lower() not in suffixes:
            raise UsageError(f"--{option} {path}: the file name must end in {' or '.join(suffixes)}")
    if args.plot:
        from .plot import require_matplotlib
        require_matplotlib(UsageError)
    settings = resolve_settings(args)
    if not isinstance(settings.sched, str) or not settings.sched:
        raise UsageError(f"--sched must be a scheduler name, got {settings.sched!r}")
    if settings.sched == "none":
        raise UsageError("--sched none leaves the LR alone: there is no schedule to trace")
    updates_per_epoch = args.updates_per_epoch
    if updates_per_epoch is None:
        if settings.sched_on_updates:
            raise UsageError("--sched-on-updates needs --updates-per-epoch N (train.py: len(loader_train) // "
                             "grad_accum_steps)")
        updates_per_epoch = 1
    if updates_per_epoch <= 0:
        raise UsageError(f"--updates-per-epoch must be positive, got {updates_per_epoch}")
    trace = compute_trace(settings, args.loop, updates_per_epoch)
    unit = "update" if not trace.on_epochs else "epoch"
    print(f"timm {timm.__version__}: --sched {settings.sched}, per {unit}, {trace.epochs} epochs x "
          f"{updates_per_epoch:,} updates = {trace.steps:,} optimizer steps, lr {settings.lr:.6g}"
          + (" (derived from --lr-base as train.py does on one process)" if settings.lr_derived else ""))
    print(f"stock: --loop {args.loop}: {LOOPS[args.loop].description}")
    options = ", ".join(f"{k}={v!r}" for k, v in LOOPS[args.loop].fixed_options.items())
    print(f"fixed: the same calls on timm_sched_fix's scheduler{f' ({options})' if options else ''}")
    if settings.sched == "plateau":
        print("note: without an eval metric the trace shows plateau's warmup and noise, not its decays")
    print()
    for line in table_lines(trace, args.per_update):
        print(line)
    print()
    print(summary_line(trace))
    if args.out:
        write_out(trace, args.out)
        print(f"wrote {args.out}")
    if args.plot:
        from .plot import plot_trace
        plot_trace(trace, args.plot)
        print(f"wrote {args.plot}")
    return 0

"""``timm-sched-fix trace``: the LR every optimizer step of a run uses, stock timm vs the fix.

The schedule is built by the installed timm's own factory from train.py's flags (or its args.yaml).
Epoch schedules run the real loop with one optimizer step per epoch. For update schedules, which index
t optimizer step k runs with is an integer mapping per calling pattern (``step_indices``), and v(t)
is what the stock scheduler's own ``step_update(t)`` writes, computed once per t by the schedule's own
function (``trace_steps.schedule_values``), so long runs take seconds. Tests check both against real
training loops step by step.

This module is the command line and the settings (no torch or timm import, so mistakes are reported
at once); ``trace_steps`` computes and prints the trace.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
        raise UsageError("--config needs PyYAML: pip install 'timm-sched-fix[config]'") from None
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
    if any(m < 0 for m in milestones) or any(b <= a for a, b in itertools.pairwise(milestones)):
        raise UsageError(f"--decay-milestones must be increasing epochs, zero or more, got {list(milestones)}")
    noise = settings["lr_noise"]
    if noise is not None:
        points = noise if isinstance(noise, (list, tuple)) else [noise]
        if not 1 <= len(points) <= 2 or not all(isinstance(p, (int, float)) and p >= 0 for p in points):
            raise UsageError(f"--lr-noise takes one or two fractions of the schedule (on, off), got {noise!r}")
        if len(points) == 2 and points[1] <= points[0]:
            raise UsageError(f"--lr-noise: the off point must come after the on point, got {list(points)}")


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except UsageError as error:
        print(f"timm-sched-fix trace: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader (``| head``) has gone: stop quietly, as Unix tools do
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python flushes stdout at exit)
        return 0


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
    from .trace_steps import compute_trace, summary_line, table_lines, write_out

    trace = compute_trace(settings, args.loop, updates_per_epoch)
    unit = "update" if not trace.on_epochs else "epoch"
    print(f"timm {trace.timm_version}: --sched {settings.sched}, per {unit}, {trace.epochs} epochs x "
          f"{updates_per_epoch:,} updates = {trace.steps:,} optimizer steps, lr {settings.lr:.6g}"
          + (" (derived from --lr-base as train.py does on one process)" if settings.lr_derived else ""))
    print(f"stock: --loop {args.loop}: {LOOPS[args.loop].description}")
    options = ", ".join(f"{k}={v!r}" for k, v in LOOPS[args.loop].fixed_options.items())
    print(f"fixed: the same calls on timm_sched_fix's scheduler{f' ({options})' if options else ''}")
    if not trace.on_epochs and not args.per_update:
        print("per-epoch rows show each epoch's first step (--per-update for every step)")
    if settings.sched == "plateau":
        print("note: without an eval metric the trace shows plateau's warmup and noise, not its decays")
    if trace.stock_compat_fixes:
        print(f"note: the stock column runs with the compat fixes {', '.join(trace.stock_compat_fixes)}, without "
              f"which stock timm {trace.timm_version} cannot run this trace here; they change no schedule value")
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

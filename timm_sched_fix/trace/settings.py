"""The settings of ``timm-sched-fix trace``: train.py's scheduler flags and defaults, an args.yaml, and the
checks that refuse impossible settings with one line naming the flag (``UsageError``).

Shared by the command line (``trace``) and the computing half (``trace_steps``); imports neither torch nor
timm, so mistakes are reported at once.
"""

from __future__ import annotations

import argparse
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from timm_sched_fix import _noise as noise
from timm_sched_fix._usage import UsageError

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
#: The names of KNOWN_SCHEDULES every supported timm release (0.4.12 on) builds: next to a setting mistake, only
#: the other names are checked against the installed timm first (which imports it).
SCHEDULES_OF_EVERY_RELEASE = ("cosine", "tanh", "step", "plateau")


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


#: The longest run ``trace`` builds (three million steps are a 300-epoch ImageNet run at train.py's batch size on
#: one process): its tables hold about 50 bytes per optimizer step, some 0.5 GB at the limit (docs/performance.md).
MAX_TRACE_STEPS = 10_000_000


def check_noise_drawable(noise_pct: float, flag: str) -> None:
    """Refuse a normal-noise limit timm's redraw loop cannot (or can only after very many draws) satisfy: each draw
    is accepted with probability erf(noise_pct / sqrt(2)) (:mod:`timm_sched_fix._noise`). ``flag`` names the setting in the message."""
    if noise.acceptance(noise_pct) >= noise.MIN_NOISE_ACCEPTANCE:
        return
    spin = "never happens" if not noise_pct > 0 else f"takes over {1 / noise.MIN_NOISE_ACCEPTANCE:,.0f} draws per value"
    raise UsageError(f"{flag} {noise_pct!r}: timm redraws its LR noise until it falls within this limit (in standard "
                     f"deviations), which {spin}; give at least {noise.smallest_drawable_pct()} "
                     f"(train.py's default is {TRAIN_DEFAULTS['lr_noise_pct']})")


def check_trace_length(epochs: int, updates_per_epoch: int) -> None:
    """Refuse a run longer than :data:`MAX_TRACE_STEPS` optimizer steps, before anything is built."""
    steps = epochs * updates_per_epoch
    if steps > MAX_TRACE_STEPS:
        raise UsageError(f"--epochs {epochs:,} x --updates-per-epoch {updates_per_epoch:,} = {steps:,} optimizer steps; "
                         f"trace builds at most {MAX_TRACE_STEPS:,} (its tables hold every step): trace fewer epochs "
                         "or updates per epoch (the calling pattern, and so which steps differ, repeats every epoch)")


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


def merged_settings(args: argparse.Namespace) -> dict[str, Any]:
    """train.py defaults, then args.yaml, then the flags given (not checked yet)."""
    settings = dict(TRAIN_DEFAULTS)
    if args.config:
        settings.update(load_args_yaml(args.config))
    settings.update({key: getattr(args, key) for key in TRAIN_DEFAULTS if hasattr(args, key)})
    return settings


def checked_settings(merged: dict[str, Any]) -> argparse.Namespace:
    """``merged`` with ``lr`` derived as train.py does if unset, after the checks, in the order a user fixes the
    mistakes: the scheduler name first, then the numbers."""
    settings = dict(merged)
    check_schedule_name(settings["sched"])
    settings["lr_derived"] = settings["lr"] is None
    if settings["lr"] is None:
        _derive_lr(settings)
    _validate(settings)
    return argparse.Namespace(**settings)


def resolve_settings(args: argparse.Namespace) -> argparse.Namespace:
    """The checked settings of a parsed ``trace`` command line (see ``merged_settings``, ``checked_settings``)."""
    return checked_settings(merged_settings(args))


def check_schedule_name(name: Any) -> None:
    """Refuse what no timm release schedules with; the installed timm's own list is checked when it builds."""
    if not isinstance(name, str) or not name:
        raise UsageError(f"--sched must be a scheduler name, got {name!r}")
    if name == "none":
        raise UsageError("--sched none leaves the LR alone: there is no schedule to trace")
    if name not in KNOWN_SCHEDULES:
        raise UsageError(f"--sched {name!r} is not a timm scheduler name; timm's are {', '.join(KNOWN_SCHEDULES)}")


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
        check_noise_drawable(settings["lr_noise_pct"], "--lr-noise-pct")
        points = noise if isinstance(noise, (list, tuple)) else [noise]
        if not 1 <= len(points) <= 2 or not all(isinstance(p, (int, float)) and p >= 0 for p in points):
            raise UsageError(f"--lr-noise takes one or two fractions of the schedule (on, off), got {noise!r}")
        if len(points) == 2 and points[1] <= points[0]:
            raise UsageError(f"--lr-noise: the off point must come after the on point, got {list(points)}")
